//! The publish socket: bans and unbans in sequence, heartbeats that say where the sequence
//! stands, and what subscribers send up. `epoch` is new at every start and `seq` counts
//! what was published, so that a subscriber can tell a gap or a restarted server.

use std::time::{Duration, Instant};

use crate::exit::Failure;
use crate::server::listener::Listener;
use crate::wire::keys::KeyPair;
use crate::wire::protocol::{Ban, Publish};
use crate::wire::transport::{self, Received};

/// The longest a subscriber waits, after bans were published or it subscribed, for the
/// heartbeat that tells it the latest sequence number.
const SOON: Duration = Duration::from_millis(100);
/// The subscriptions a subscriber may send: `BANSHARE1`, and its cancellation.
const SUBSCRIBE: &[u8] = b"\x01BANSHARE1";
const UNSUBSCRIBE: &[u8] = b"\x00BANSHARE1";

pub struct Publisher {
    pub listener: Listener,
    epoch: u64,
    seq: u64,
    interval: Duration,
    next_heartbeat: Instant,
    /// Bans and unbans published since the start.
    published: u64,
}

/// What subscribers sent since the last look.
pub struct Subscriptions {
    /// Someone subscribed: it gets a heartbeat soon.
    pub joined: bool,
    /// Anything but the protocol's subscription, with who sent it.
    pub broken: Vec<Received>,
}

impl Publisher {
    pub fn open(
        ctx: &zmq::Context,
        key: &KeyPair,
        address: String,
        interval: Duration,
    ) -> Result<Publisher, Failure> {
        Ok(Publisher {
            listener: Listener::open(ctx, zmq::XPUB, key, "publish", address)?,
            epoch: random_epoch(),
            seq: 0,
            interval,
            next_heartbeat: Instant::now(),
            published: 0,
        })
    }

    /// (epoch, seq): where the sequence stands.
    pub fn position(&self) -> (u64, u64) {
        (self.epoch, self.seq)
    }

    pub fn published(&self) -> u64 {
        self.published
    }

    pub fn set_interval(&mut self, interval: Duration) {
        self.interval = interval;
    }

    /// Publishes a ban with the next sequence number, and returns that number.
    pub fn ban(&mut self, ban: Ban) -> u64 {
        let (epoch, seq) = self.next();
        self.send(&Publish::Ban { epoch, seq, ban });
        seq
    }

    /// Publishes an unban dated `lifted` with the next sequence number, and returns that
    /// number.
    pub fn unban(&mut self, ban: Ban, lifted: u64) -> u64 {
        let (epoch, seq) = self.next();
        self.send(&Publish::Unban {
            epoch,
            seq,
            ban,
            lifted: Some(lifted),
        });
        seq
    }

    /// The position of the next ban or unban.
    fn next(&mut self) -> (u64, u64) {
        self.seq += 1;
        self.position()
    }

    /// Sends a heartbeat when one is due.
    pub fn heartbeat_if_due(&mut self, now: Instant) {
        if now < self.next_heartbeat {
            return;
        }
        self.send(&Publish::Heartbeat {
            epoch: self.epoch,
            seq: self.seq,
            interval_ms: self.interval.as_millis() as u64,
        });
        self.next_heartbeat = now + self.interval;
    }

    /// A heartbeat soon, not at once: a subscriber that lost the end of a burst learns of
    /// the gap in 100 ms rather than at the next tick, and subscribing over and over cannot
    /// make the server heartbeat thousands of times a second.
    pub fn heartbeat_soon(&mut self) {
        self.next_heartbeat = self.next_heartbeat.min(Instant::now() + SOON);
    }

    pub fn until_heartbeat(&self, now: Instant) -> Duration {
        self.next_heartbeat.saturating_duration_since(now)
    }

    fn send(&mut self, message: &Publish) {
        if !matches!(message, Publish::Heartbeat { .. }) {
            self.published += 1;
        }
        if let Err(e) = self
            .listener
            .socket
            .send_multipart(message.encode(), zmq::DONTWAIT)
        {
            log::error!("publish failed: {e}");
        }
    }

    /// Reads what subscribers sent: XPUB passes every subscription up. Only `BANSHARE1`
    /// is part of the protocol; libzmq keeps every distinct subscription a peer sends for as
    /// long as its connection lasts (XPUB_MANUAL would not change that in libzmq 4.3), so
    /// the server cuts off a key that sends anything else.
    pub fn read_subscriptions(&mut self) -> Subscriptions {
        let mut seen = Subscriptions {
            joined: false,
            broken: Vec::new(),
        };
        while let Ok(received) = transport::recv_bounded(&self.listener.socket, zmq::DONTWAIT, 1) {
            match received.frames[0].as_slice() {
                _ if received.oversized() => seen.broken.push(received),
                SUBSCRIBE => seen.joined = true,
                UNSUBSCRIBE => {}
                _ => seen.broken.push(received),
            }
        }
        seen
    }

    /// Closes every subscriber's connection (see `listener`).
    pub fn reopen(&mut self, ctx: &zmq::Context, key: &KeyPair) -> Result<(), Failure> {
        self.listener.reopen(ctx, key)
    }
}

/// A new random epoch on every start, so clients can tell a restarted server from a gap.
fn random_epoch() -> u64 {
    use std::io::Read;
    let mut bytes = [0u8; 8];
    match std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)) {
        Ok(()) => u64::from_le_bytes(bytes) >> 1,
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
    }
}
