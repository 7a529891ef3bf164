//! Watches connections through ZeroMQ socket monitors and logs what an admin needs to know.
//! CURVE failures are silent on the wire: without this, a client whose key was refused would
//! wait forever without saying why, and the server would not mention peers that fail the
//! handshake before its ZAP handler sees them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use zmq::SocketEvent as E;

use crate::logging::Refusals;
use crate::sockets::transport::peer_address;

/// What the admin is told; each is logged when it differs from the last one logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Condition {
    Up,
    Lost,
    Unreachable,
    KeyRefused,
    /// The server dropped us during the handshake: the signature of a wrong server key,
    /// since the server cannot decrypt our hello.
    HandshakeFailed,
}

pub struct ConnectionWatch {
    monitor: zmq::Socket,
    endpoint: String,
    state: Attempts,
}

/// What the events of one connection's attempts have shown, apart from any socket.
#[derive(Debug, Default)]
struct Attempts {
    reported: Option<Condition>,
    up: bool,
    /// Whether TCP connected, and whether the handshake failed, in the current attempt.
    connected: bool,
    failed: bool,
    /// When the server last refused our key. libzmq never retries after that, so the owner
    /// must open a new socket (see `refused_for`).
    refused_at: Option<Instant>,
}

static NEXT_ID: AtomicUsize = AtomicUsize::new(0);

/// An endpoint for a new monitor, which libzmq binds.
fn new_address() -> String {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    format!("inproc://banshare-monitor-{id}")
}

/// Connects a PAIR socket to a new monitor of `watched` for `events`.
fn monitor(ctx: &zmq::Context, watched: &zmq::Socket, events: &[E]) -> zmq::Result<zmq::Socket> {
    let address = new_address();
    let mask = events.iter().fold(0, |mask, e| mask | e.to_raw() as i32);
    watched.monitor(&address, mask)?;
    let monitor = ctx.socket(zmq::PAIR)?;
    monitor.set_linger(0)?;
    monitor.connect(&address)?;
    Ok(monitor)
}

/// Stops the monitor of `watched`; to be called before its watch is dropped. libzmq sends
/// each event to the monitor with a blocking send, from its I/O thread: an event for a
/// monitor whose reader has gone, as a dropped socket may still send while libzmq's
/// reaper closes it, would block that thread for ever, and every connection of the
/// context with it. A client that reloaded while a server was down so got no answer from
/// any server, until "Too many open files" (tests/ansible.rs). libzmq stops a monitor on a
/// NULL endpoint, which the zmq crate cannot pass; a new monitor of no events replaces it
/// as well, and is closed with the socket.
pub fn stop(watched: &zmq::Socket) {
    if let Err(e) = watched.monitor(&new_address(), 0) {
        log::warn!("cannot stop a socket monitor: {e}");
    }
}

/// Pending monitor events: the event and its value (a file descriptor or an error code).
fn events(monitor: &zmq::Socket) -> impl Iterator<Item = (E, u32)> + '_ {
    relayed(monitor).map(|(event, value, _)| (event, value))
}

/// Pending events as `relay` hands them on: the event, its value, and the second frame (the
/// peer's address, from a relay; the socket's endpoint, straight from libzmq).
fn relayed(monitor: &zmq::Socket) -> impl Iterator<Item = (E, u32, String)> + '_ {
    std::iter::from_fn(move || monitor.recv_multipart(zmq::DONTWAIT).ok())
        .filter_map(|frames| decode_event(&frames))
}

/// A monitor event's frames: the event and its value in the first, text in the second.
fn decode_event(frames: &[Vec<u8>]) -> Option<(E, u32, String)> {
    let head = frames.first().filter(|f| f.len() >= 6)?;
    let event = E::from_raw(u16::from_ne_bytes([head[0], head[1]]));
    let value = u32::from_ne_bytes([head[2], head[3], head[4], head[5]]);
    let text = frames
        .get(1)
        .map(|f| String::from_utf8_lossy(f).into_owned());
    Some((event, value, text.unwrap_or_default()))
}

/// Reads a listener's monitor on a thread of its own, and hands each event on to the
/// returned socket with, for an accepted connection, the peer's address in place of the
/// listener's endpoint. libzmq names an accepted connection by its file descriptor only,
/// and a peer that fails the handshake (plaintext, a wrong server key) is gone, its
/// descriptor closed, within a millisecond: too soon for the server's loop, which read
/// the address afterwards and logged `from ?`. The relay reads it at once. It ends when
/// the listener has been destroyed (libzmq then sends MONITOR_STOPPED), after calling
/// `destroyed` with the listener's name, or when the context ends.
fn relay(
    ctx: &zmq::Context,
    source: zmq::Socket,
    name: &str,
    destroyed: fn(&str),
) -> zmq::Result<zmq::Socket> {
    let address = new_address();
    let near = ctx.socket(zmq::PAIR)?;
    near.set_linger(0)?;
    // Bounded: events beyond it, while the loop is busy, are dropped rather than kept.
    near.set_rcvhwm(RELAYED)?;
    near.bind(&address)?;
    let far = ctx.socket(zmq::PAIR)?;
    far.set_linger(0)?;
    far.set_sndhwm(RELAYED)?;
    far.connect(&address)?;
    let listener = name.to_owned();
    std::thread::Builder::new()
        .name(format!("{name}-watch"))
        .spawn(move || hand_on(&source, &far, || destroyed(&listener)))
        .map_err(|_| zmq::Error::EAGAIN)?;
    Ok(near)
}

/// Events a relay holds for the server's loop at most.
const RELAYED: i32 = 100_000;

fn hand_on(source: &zmq::Socket, sink: &zmq::Socket, destroyed: impl FnOnce()) {
    while let Ok(frames) = source.recv_multipart(0) {
        let Some((event, value, _)) = decode_event(&frames) else {
            continue;
        };
        if event == E::MONITOR_STOPPED {
            destroyed();
            return;
        }
        let address = match event {
            E::ACCEPTED => peer_of(value),
            _ => String::new(),
        };
        let _ = sink.send_multipart([frames[0].clone(), address.into_bytes()], zmq::DONTWAIT);
    }
}

impl ConnectionWatch {
    pub fn attach(
        ctx: &zmq::Context,
        watched: &zmq::Socket,
        endpoint: &str,
    ) -> zmq::Result<ConnectionWatch> {
        let events = [
            E::CONNECTED,
            E::CONNECT_RETRIED,
            E::DISCONNECTED,
            E::HANDSHAKE_SUCCEEDED,
            E::HANDSHAKE_FAILED_AUTH,
            E::HANDSHAKE_FAILED_PROTOCOL,
            E::HANDSHAKE_FAILED_NO_DETAIL,
        ];
        let monitor = monitor(ctx, watched, &events)?;
        Ok(ConnectionWatch {
            monitor,
            endpoint: endpoint.to_owned(),
            state: Attempts::default(),
        })
    }

    /// The monitor socket, to include in a poll.
    pub fn socket(&self) -> &zmq::Socket {
        &self.monitor
    }

    /// How long ago the server refused our key, if it did: libzmq gives up on the endpoint
    /// then, so the owner should open a new socket after a pause. A key authorized later
    /// (and a server reload) then gets the host in without a restart.
    pub fn refused_for(&self) -> Option<Duration> {
        self.state.refused_at.map(|at| at.elapsed())
    }

    /// Restarts the wait before the next retry, after a retry could not even start.
    pub fn postpone_retry(&mut self) {
        self.state.refused_at = Some(Instant::now());
    }

    /// Carries what was already logged over to the watch of a new socket, so that retries
    /// do not repeat the same message.
    pub fn continue_from(&mut self, previous: &ConnectionWatch) {
        self.state.reported = previous.state.reported;
    }

    /// Reads pending events and logs each change of state once.
    pub fn drain(&mut self) {
        let pending: Vec<_> = events(&self.monitor).collect();
        for (event, _) in pending {
            log::debug!("{}: {event:?}", self.endpoint);
            if let Some(condition) = self.state.on(event) {
                self.log(condition);
            }
        }
    }

    fn log(&self, condition: Condition) {
        let at = &self.endpoint;
        match condition {
            Condition::Up => log::info!("CURVE handshake with {at} succeeded"),
            Condition::Lost => log::warn!("lost the connection to {at}; reconnecting"),
            Condition::Unreachable => log::warn!("cannot reach {at}; retrying"),
            Condition::KeyRefused => log::error!(
                "the server at {at} refused this host's key: its public key must be in the \
                 server's authorized-keys directory (then reload the server); retrying"
            ),
            Condition::HandshakeFailed => log::error!(
                "CURVE handshake with {at} failed: check that server-key is this server's \
                 public key; retrying"
            ),
        }
    }
}

impl Attempts {
    /// Takes one event; returns the condition to log when it differs from the last one
    /// logged.
    fn on(&mut self, event: E) -> Option<Condition> {
        let condition = match event {
            E::CONNECTED => {
                self.connected = true;
                return None;
            }
            E::HANDSHAKE_SUCCEEDED => {
                self.up = true;
                Condition::Up
            }
            E::HANDSHAKE_FAILED_AUTH => {
                self.failed = true;
                self.refused_at = Some(Instant::now());
                Condition::KeyRefused
            }
            E::HANDSHAKE_FAILED_PROTOCOL | E::HANDSHAKE_FAILED_NO_DETAIL => {
                self.failed = true;
                Condition::HandshakeFailed
            }
            E::DISCONNECTED if self.up => {
                self.up = false;
                Condition::Lost
            }
            E::DISCONNECTED if self.connected && !self.failed => Condition::HandshakeFailed,
            // Every new attempt starts with CONNECT_RETRIED; one that never got TCP up
            // means the server is down or unreachable.
            E::CONNECT_RETRIED => {
                let unreachable = !self.connected;
                self.connected = false;
                self.failed = false;
                if !unreachable {
                    return None;
                }
                Condition::Unreachable
            }
            _ => return None,
        };
        if self.reported == Some(condition) {
            return None;
        }
        self.reported = Some(condition);
        Some(condition)
    }
}

/// Tells when a request socket is connected again after its connection dropped. libzmq
/// reconnects a DEALER by itself, but what it had written to the old connection, and what
/// the server had not read yet, is gone: a server closes every connection when it cuts a
/// key off (docs/protocol.md, section 1), and its peers' requests in flight with them. The
/// owner sends the request again once connected, which the server's de-duplication makes
/// harmless, rather than wait out its timeout.
pub struct Reconnects {
    monitor: zmq::Socket,
    /// Whether the connection dropped, and has not come back yet.
    lost: bool,
}

impl Reconnects {
    /// Watches `watched`. Its owner must `stop` the watch before closing it, and read it
    /// now and then: libzmq's I/O thread blocks on a monitor whose queue is full.
    pub fn attach(ctx: &zmq::Context, watched: &zmq::Socket) -> zmq::Result<Reconnects> {
        let events = [E::DISCONNECTED, E::HANDSHAKE_SUCCEEDED];
        Ok(Reconnects {
            monitor: monitor(ctx, watched, &events)?,
            lost: false,
        })
    }

    /// The monitor socket, to include in a poll.
    pub fn socket(&self) -> &zmq::Socket {
        &self.monitor
    }

    /// Whether the connection came back after a loss since the last call.
    pub fn back_after_loss(&mut self) -> bool {
        let mut back = false;
        for (event, _) in events(&self.monitor) {
            match event {
                E::DISCONNECTED => self.lost = true,
                E::HANDSHAKE_SUCCEEDED if self.lost => {
                    self.lost = false;
                    back = true;
                }
                _ => {}
            }
        }
        back
    }
}

/// libzmq's codes for why a handshake failed (zmq.h, ZMQ_PROTOCOL_ERROR_ZMTP_*).
const CRYPTOGRAPHIC: u32 = 0x1100_0001;
const MECHANISM_MISMATCH: u32 = 0x1100_0002;

/// Logs peers that fail the handshake on a listening socket, with their address (peers with
/// an unknown key are logged by the ZAP handler; these never get that far), and notices
/// when the process has run out of file descriptors to accept connections with.
pub struct ListenerWatch {
    monitor: zmq::Socket,
    name: String,
    /// Peer address by connection file descriptor, from ACCEPTED to DISCONNECTED.
    peers: HashMap<u32, String>,
    /// Whether the monitor's events come through a relay (`relay`), with addresses.
    relayed: bool,
    /// The reason of a failed handshake, waiting for the DISCONNECTED event that names the
    /// connection (libzmq reports them in this order on its I/O thread).
    failed: Option<String>,
    refusals: Refusals,
    /// Set when accepting failed for want of file descriptors.
    out_of_descriptors: bool,
}

impl ListenerWatch {
    /// Watches `watched`; `destroyed` is called with `name` on the watch's own thread once
    /// libzmq has destroyed the socket, which is when what its connections held is freed.
    pub fn attach(
        ctx: &zmq::Context,
        watched: &zmq::Socket,
        name: &str,
        destroyed: fn(&str),
    ) -> zmq::Result<ListenerWatch> {
        let events = [
            E::ACCEPTED,
            E::ACCEPT_FAILED,
            E::DISCONNECTED,
            E::HANDSHAKE_FAILED_PROTOCOL,
            E::HANDSHAKE_FAILED_NO_DETAIL,
            E::MONITOR_STOPPED,
        ];
        let source = monitor(ctx, watched, &events)?;
        // Without a thread for the relay (at a limit of tasks), the loop reads the monitor
        // itself, and may miss the address of a peer that is gone at once.
        let (monitor, relayed) = match relay(ctx, source, name, destroyed) {
            Ok(relayed) => (relayed, true),
            Err(_) => {
                log::warn!("{name}: no thread to watch connections with; refused peers may be logged without their address");
                (monitor(ctx, watched, &events)?, false)
            }
        };
        Ok(ListenerWatch {
            monitor,
            relayed,
            name: name.to_owned(),
            peers: HashMap::new(),
            failed: None,
            refusals: Refusals::default(),
            out_of_descriptors: false,
        })
    }

    /// True once after accepting failed for want of file descriptors. libzmq then tries to
    /// accept again at once, for ever, burning a core: the owner should stop listening for
    /// a while.
    pub fn take_out_of_descriptors(&mut self) -> bool {
        std::mem::take(&mut self.out_of_descriptors)
    }

    /// Writes the summary of refused handshakes when it is due, or now when `now`.
    pub fn flush_refusals(&mut self, now: bool) {
        self.refusals.flush(now);
    }

    /// Adds the handshakes refused since the start to `totals`, by reason.
    pub fn add_refusals(&self, totals: &mut std::collections::BTreeMap<String, u64>) {
        self.refusals.add_totals(totals);
    }

    /// Connections open now, handshakes under way included.
    pub fn connections(&self) -> usize {
        self.peers.len()
    }

    pub fn socket(&self) -> &zmq::Socket {
        &self.monitor
    }

    pub fn drain(&mut self) {
        let pending: Vec<_> = relayed(&self.monitor).collect();
        for (event, value, address) in pending {
            match event {
                E::ACCEPTED => {
                    let address = match self.relayed {
                        true if !address.is_empty() => address,
                        _ => peer_of(value),
                    };
                    self.peers.insert(value, address);
                }
                E::ACCEPT_FAILED => {
                    let errno = nix::errno::Errno::from_raw(value as i32);
                    self.out_of_descriptors |= matches!(
                        errno,
                        nix::errno::Errno::EMFILE
                            | nix::errno::Errno::ENFILE
                            | nix::errno::Errno::ENOBUFS
                            | nix::errno::Errno::ENOMEM
                    );
                }
                E::HANDSHAKE_FAILED_PROTOCOL => {
                    self.failed = Some(match value {
                        MECHANISM_MISMATCH => "a peer without CURVE (plaintext)".into(),
                        CRYPTOGRAPHIC => "a peer using a wrong server key".into(),
                        code => format!("a peer that failed the handshake (libzmq code {code:#x})"),
                    });
                }
                // Silent peers end here once the handshake time is up, and peers that
                // hang up halfway.
                E::HANDSHAKE_FAILED_NO_DETAIL => {
                    self.failed = Some("a peer that did not complete the handshake".into());
                }
                E::DISCONNECTED => {
                    let address = self.peers.remove(&value).unwrap_or_else(gone);
                    if let Some(reason) = self.failed.take() {
                        self.refusals.note(&self.name, &reason, &address, "");
                    }
                }
                _ => {}
            }
        }
    }
}

/// What the log says for a connection whose address could not be read: libzmq names an
/// accepted connection by its descriptor only, and closes the descriptor of a peer it
/// refuses at once (plaintext, a wrong server key) within microseconds, sometimes before
/// even the relay has read it. (libzmq's second version of the monitor, which gives the
/// address, is a draft API, not in Debian's build.)
fn gone() -> String {
    "an address gone before it could be read".into()
}

/// The remote address of a connection the monitor announced by its file descriptor.
fn peer_of(fd: u32) -> String {
    let addr = nix::sys::socket::getpeername::<nix::sys::socket::SockaddrStorage>(fd as i32);
    let ip = addr.ok().and_then(|a| {
        a.as_sockaddr_in()
            .map(|v4| v4.ip().to_string())
            .or_else(|| a.as_sockaddr_in6().map(|v6| v6.ip().to_string()))
    });
    ip.map_or_else(gone, |ip| peer_address(&ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether a request and its reply cross loopback in `ctx` within 2 s: whether its I/O
    /// thread still works.
    fn round_trip(ctx: &zmq::Context) -> bool {
        let rep = ctx.socket(zmq::REP).unwrap();
        rep.bind("tcp://127.0.0.1:*").unwrap();
        let endpoint = rep.get_last_endpoint().unwrap().unwrap();
        let req = ctx.socket(zmq::REQ).unwrap();
        req.connect(&endpoint).unwrap();
        req.send("ping", 0).unwrap();
        let answered = rep.poll(zmq::POLLIN, 2000).unwrap() > 0;
        for socket in [rep, req] {
            socket.set_linger(0).unwrap();
        }
        answered
    }

    #[test]
    fn a_watch_dropped_while_its_socket_retries_leaves_the_context_working() {
        let ctx = zmq::Context::new();
        let watched = ctx.socket(zmq::DEALER).unwrap();
        watched.set_linger(0).unwrap();
        // Nothing listens on port 1: a refused connection, retried every millisecond,
        // each retry an event for the watch.
        watched.set_reconnect_ivl(1).unwrap();
        let endpoint = "tcp://127.0.0.1:1";
        let watch = ConnectionWatch::attach(&ctx, &watched, endpoint).unwrap();
        watched.connect(endpoint).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        stop(&watched);
        drop(watch);
        std::thread::sleep(Duration::from_millis(100));
        let works = round_trip(&ctx);
        if !works {
            // A blocked I/O thread would hold the context's end, and the test, for ever.
            std::mem::forget((watched, ctx));
        }
        assert!(works, "the I/O thread is blocked");
    }

    fn conditions(events: &[E]) -> Vec<Condition> {
        let mut state = Attempts::default();
        events.iter().filter_map(|e| state.on(*e)).collect()
    }

    #[test]
    fn a_connection_that_comes_up_and_goes_is_told_once_each() {
        let seen = conditions(&[
            E::CONNECTED,
            E::HANDSHAKE_SUCCEEDED,
            E::DISCONNECTED,
            E::CONNECT_RETRIED,
            E::CONNECTED,
            E::HANDSHAKE_SUCCEEDED,
        ]);
        assert_eq!(seen, [Condition::Up, Condition::Lost, Condition::Up]);
    }

    #[test]
    fn a_server_that_is_down_is_unreachable_and_said_so_once() {
        let seen = conditions(&[E::CONNECT_RETRIED, E::CONNECT_RETRIED, E::CONNECT_RETRIED]);
        assert_eq!(seen, [Condition::Unreachable]);
    }

    #[test]
    fn a_refused_key_and_a_wrong_server_key_are_told_apart() {
        let mut state = Attempts::default();
        assert_eq!(state.on(E::CONNECTED), None);
        assert_eq!(
            state.on(E::HANDSHAKE_FAILED_AUTH),
            Some(Condition::KeyRefused)
        );
        assert!(
            state.refused_at.is_some(),
            "the owner retries with a new socket"
        );
        // The server drops a client whose hello it cannot decrypt: a wrong server key.
        let seen = conditions(&[E::CONNECTED, E::DISCONNECTED]);
        assert_eq!(seen, [Condition::HandshakeFailed]);
    }
}
