//! The publish socket: bans and unbans in sequence, heartbeats that say where the sequence
//! stands, and what subscribers send up. `epoch` is new at every start and `seq` counts
//! what was published, so that a subscriber can tell a gap or a restarted server. Each
//! group is a stream of its own under its topic (`wire::topic`), with its own `seq` and
//! heartbeats.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::exit::Failure;
use crate::server::changes::{Change, Committed};
use crate::server::listener::Listener;
use crate::server::position::Position;
use crate::sockets::transport::{self, Received};
use crate::wire::keys::KeyPair;
use crate::wire::protocol::{Publish, VERSION};
use crate::wire::topic::{Group, Topic};

/// The longest a subscriber waits, after bans were published or it subscribed, for the
/// heartbeat that tells it the latest sequence number.
const SOON: Duration = Duration::from_millis(100);
/// Groups this server does not have that one key may subscribe to, as a host configured
/// for a group before its servers were: each costs libzmq a subscription to keep.
pub const MAX_UNKNOWN_GROUPS: usize = 16;

pub struct Publisher {
    pub listener: Listener,
    epoch: u64,
    /// Each group's topic and seq, in the server's order of groups.
    streams: Vec<(Topic, u64)>,
    /// The groups not on this server that each key subscribed to (`MAX_UNKNOWN_GROUPS`).
    unknown: HashMap<String, HashSet<Group>>,
    interval: Duration,
    next_heartbeat: Instant,
    /// When a heartbeat was last brought forward (`heartbeat_soon`).
    early_at: Option<Instant>,
    /// Bans and unbans published since the start.
    published: u64,
}

/// What subscribers sent since the last look.
pub struct Subscriptions {
    /// Someone subscribed: it gets a heartbeat soon.
    pub joined: bool,
    /// Anything but the protocol's subscriptions, with who sent it.
    pub broken: Vec<Received>,
    /// Subscriptions to a group this server does not have, with who sent them.
    pub unknown: Vec<(Received, Group)>,
}

/// What one frame from a subscriber is.
enum Sent {
    Subscribe(Option<Group>),
    Cancel,
    Other,
}

impl Publisher {
    pub fn open(
        ctx: &zmq::Context,
        key: &KeyPair,
        address: String,
        interval: Duration,
        topics: Vec<Topic>,
    ) -> Result<Publisher, Failure> {
        Ok(Publisher {
            listener: Listener::open(ctx, zmq::XPUB, key, "publish", address)?,
            epoch: random_epoch(),
            streams: topics.into_iter().map(|t| (t, 0)).collect(),
            unknown: HashMap::new(),
            interval,
            next_heartbeat: Instant::now(),
            early_at: None,
            published: 0,
        })
    }

    /// Where every stream stands, to go on from after a clean stop (`position`).
    pub fn saved_position(&self) -> Position {
        let streams = self.streams.iter();
        Position {
            epoch: self.epoch,
            streams: streams
                .map(|(topic, seq)| (topic.group.as_ref().map(ToString::to_string), *seq))
                .collect(),
        }
    }

    /// Goes on from where a clean stop left the streams, if this server has the same
    /// groups; whether it did.
    pub fn go_on_from(&mut self, saved: Position) -> bool {
        let groups = self.streams.iter().map(|(topic, _)| topic.group.as_ref());
        let same = groups
            .map(|g| g.map(ToString::to_string))
            .eq(saved.streams.iter().map(|(g, _)| g.clone()));
        if same {
            self.epoch = saved.epoch;
            for ((_, seq), (_, saved)) in self.streams.iter_mut().zip(saved.streams) {
                *seq = saved;
            }
        }
        same
    }

    /// (epoch, seq): where group `g`'s sequence stands.
    pub fn position(&self, g: usize) -> (u64, u64) {
        (self.epoch, self.streams[g].1)
    }

    /// The groups' topics after a reload: a dry run may have begun or ended.
    pub fn set_topics(&mut self, topics: Vec<Topic>) {
        for ((topic, _), new) in self.streams.iter_mut().zip(topics) {
            *topic = new;
        }
    }

    pub fn published(&self) -> u64 {
        self.published
    }

    pub fn set_interval(&mut self, interval: Duration) {
        self.interval = interval;
    }

    /// Publishes what was committed, each in its group with its next sequence number;
    /// returns the last number. Only a `Committed` can be published: nothing reaches a host
    /// before it is durable here.
    pub fn publish(&mut self, committed: Committed) -> Option<u64> {
        let announced = committed.into_announced();
        let mut last = None;
        for (g, change) in announced {
            let (epoch, seq) = self.next(g);
            let message = match change {
                Change::Ban(ban) => Publish::Ban { epoch, seq, ban },
                Change::Unban(ban, lifted) => Publish::Unban {
                    epoch,
                    seq,
                    ban,
                    lifted: Some(lifted),
                },
            };
            self.send(g, &message);
            last = Some(seq);
        }
        last
    }

    /// The position of group `g`'s next ban or unban.
    fn next(&mut self, g: usize) -> (u64, u64) {
        self.streams[g].1 += 1;
        self.position(g)
    }

    /// Sends every group's heartbeat when they are due.
    pub fn heartbeat_if_due(&mut self, now: Instant) {
        if now < self.next_heartbeat {
            return;
        }
        for g in 0..self.streams.len() {
            let heartbeat = Publish::Heartbeat {
                epoch: self.epoch,
                seq: self.streams[g].1,
                interval_ms: self.interval.as_millis() as u64,
            };
            self.send(g, &heartbeat);
        }
        self.next_heartbeat = now + self.interval;
    }

    /// A heartbeat soon, for a new subscriber to learn where the streams stand, but at most
    /// one such early heartbeat per heartbeat interval: each goes to every subscriber, and 10,000 hosts
    /// reconnecting over a second would otherwise make ten a second, 100,000 messages to
    /// encrypt, which starved the handshakes of the hosts still connecting. (A heartbeat
    /// after each ban, as before, cost 40% more work per ban with 5,000 subscribers.)
    pub fn heartbeat_soon(&mut self) {
        let now = Instant::now();
        let recent = self.early_at.is_some_and(|at| now < at + self.interval);
        if !recent && now + SOON < self.next_heartbeat {
            self.next_heartbeat = now + SOON;
            self.early_at = Some(now);
        }
    }

    pub fn until_heartbeat(&self, now: Instant) -> Duration {
        self.next_heartbeat.saturating_duration_since(now)
    }

    fn send(&mut self, g: usize, message: &Publish) {
        if !matches!(message, Publish::Heartbeat { .. }) {
            self.published += 1;
        }
        let frames = message.encode(&self.streams[g].0);
        if let Err(e) = self.listener.socket.send_multipart(frames, zmq::DONTWAIT) {
            log::error!("publish failed: {e}");
        }
    }

    /// Reads what subscribers sent: XPUB passes every subscription up. Only `BANSHARE1`
    /// and `BANSHARE1/NAME/` are part of the protocol; libzmq keeps every distinct
    /// subscription a peer sends for as long as its connection lasts (XPUB_MANUAL would
    /// not change that in libzmq 4.3), so the server cuts off a key that sends anything
    /// else, or subscribes to more than MAX_UNKNOWN_GROUPS groups it does not have.
    pub fn read_subscriptions(&mut self) -> Subscriptions {
        let mut seen = Subscriptions {
            joined: false,
            broken: Vec::new(),
            unknown: Vec::new(),
        };
        while let Ok(received) = transport::recv_bounded(&self.listener.socket, zmq::DONTWAIT, 1) {
            let sent = match received.oversized() {
                true => Sent::Other,
                false => sent(&received.frames[0]),
            };
            match sent {
                Sent::Subscribe(None) => seen.joined = true,
                Sent::Subscribe(Some(group)) if self.has(&group) => seen.joined = true,
                Sent::Subscribe(Some(group)) => {
                    let key = received.sender.user.clone().unwrap_or_default();
                    let groups = self.unknown.entry(key).or_default();
                    if groups.len() >= MAX_UNKNOWN_GROUPS && !groups.contains(&group) {
                        seen.broken.push(received);
                    } else if groups.insert(group.clone()) {
                        seen.unknown.push((received, group));
                    }
                }
                Sent::Cancel => {}
                Sent::Other => seen.broken.push(received),
            }
        }
        seen
    }

    fn has(&self, group: &Group) -> bool {
        self.streams
            .iter()
            .any(|(topic, _)| topic.group.as_ref() == Some(group))
    }

    /// Closes every subscriber's connection (see `listener`).
    pub fn reopen(&mut self, ctx: &zmq::Context, key: &KeyPair) -> Result<(), Failure> {
        self.listener.reopen(ctx, key)
    }
}

/// A frame from a subscriber: `\x01` and a subscription, or `\x00` and a cancellation.
fn sent(frame: &[u8]) -> Sent {
    let Some((&kind, topic)) = frame.split_first() else {
        return Sent::Other;
    };
    let group = match topic {
        t if t == VERSION.as_bytes() => None,
        t => match Topic::parse(t) {
            // A subscription is the topic's start: `BANSHARE1/web/`, never `…/dry-run`.
            Ok(Topic {
                group: Some(group),
                dry_run: false,
            }) => Some(group),
            _ => return Sent::Other,
        },
    };
    match kind {
        1 => Sent::Subscribe(group),
        0 => Sent::Cancel,
        _ => Sent::Other,
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
