//! The server's listening sockets: their options, the watch on their connections, a pause
//! when the process runs out of file descriptors, and reopening, which closes every
//! connection at once. libzmq offers no way to close one peer's connection: `unbind` stops
//! listening but keeps the connections accepted so far, and only closing the socket ends
//! them (and frees whatever they were in the middle of sending).

use std::time::{Duration, Instant};

use crate::daemon::memory;
use crate::exit::{Exit, Failure};
use crate::logging::Quiet;
use crate::sockets::monitor::ListenerWatch;
use crate::sockets::transport;
use crate::wire::keys::KeyPair;

/// How long a listener stops accepting when the process is out of file descriptors: libzmq
/// would otherwise try to accept again at once, for ever, burning a core, while idle
/// connections time out (`transport::HANDSHAKE_LIMIT`) and free descriptors.
const PAUSE: Duration = Duration::from_secs(1);

pub struct Listener {
    pub socket: zmq::Socket,
    pub watch: ListenerWatch,
    kind: zmq::SocketType,
    name: &'static str,
    address: String,
    /// While paused for want of file descriptors: when to listen again.
    paused_until: Option<Instant>,
    quiet: Quiet,
}

impl Listener {
    /// A CURVE server socket of `kind` listening on `address`; `name` is also its ZAP domain.
    pub fn open(
        ctx: &zmq::Context,
        kind: zmq::SocketType,
        key: &KeyPair,
        name: &'static str,
        address: String,
    ) -> Result<Listener, Failure> {
        let (socket, watch) = socket(ctx, kind, key, name)?;
        socket
            .bind(&address)
            .map_err(|e| cannot_listen(&address, name, e))?;
        Ok(Listener {
            socket,
            watch,
            kind,
            name,
            address,
            paused_until: None,
            quiet: Quiet::default(),
        })
    }

    /// Closes every connection by replacing the socket with a new one on the same address.
    /// Peers reconnect by themselves; requests they had sent are lost, and they ask again.
    pub fn reopen(&mut self, ctx: &zmq::Context, key: &KeyPair) -> Result<(), Failure> {
        let (socket, watch) = socket(ctx, self.kind, key, self.name)?;
        let _ = self.socket.unbind(&self.address);
        // The old listening socket closes on libzmq's I/O thread, soon.
        let mut tries = 0;
        while let Err(e) = socket.bind(&self.address) {
            tries += 1;
            if tries == 100 {
                return Err(cannot_listen(&self.address, self.name, e));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.watch.drain();
        self.watch.flush_refusals(true);
        // No `monitor::stop` needed: libzmq ends a closed socket's connections without an
        // event, unlike a follower that goes on retrying. With one here, a legitimate report
        // was lost to the close in 1 of 6 loaded runs of tests/attack.rs, 0 of 12 without.
        self.socket = socket;
        self.watch = watch;
        self.paused_until = None;
        Ok(())
    }

    /// Reads the watch's events; stops accepting for a while when out of file descriptors.
    pub fn drain_events(&mut self) {
        self.watch.drain();
        if self.watch.take_out_of_descriptors() && self.paused_until.is_none() {
            let _ = self.socket.unbind(&self.address);
            self.paused_until = Some(Instant::now() + PAUSE);
            let limit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
                .map_or("?".into(), |(soft, _)| soft.to_string());
            self.quiet.warn(format!(
                "{}: out of file descriptors (limit {limit}): not accepting connections for \
                 {} s; connections that do not finish their handshake within {} s are closed",
                self.name,
                PAUSE.as_secs(),
                transport::HANDSHAKE_LIMIT / 1000
            ));
        }
    }

    /// Listens again after a pause; called on every turn of the server's loop.
    pub fn resume_if_due(&mut self) {
        if self
            .paused_until
            .is_some_and(|until| Instant::now() >= until)
        {
            match self.socket.bind(&self.address) {
                Ok(()) => self.paused_until = None,
                Err(e) => {
                    self.paused_until = Some(Instant::now() + PAUSE);
                    self.quiet
                        .warn(format!("{}: cannot listen again yet: {e}", self.name));
                }
            }
        }
    }
}

fn cannot_listen(address: &str, name: &str, e: zmq::Error) -> Failure {
    Exit::Unavailable.with(format!("cannot listen on {address} ({name}): {e}"))
}

/// A socket with the options of its kind, and the watch on it, not yet bound.
fn socket(
    ctx: &zmq::Context,
    kind: zmq::SocketType,
    key: &KeyPair,
    name: &str,
) -> Result<(zmq::Socket, ListenerWatch), Failure> {
    let fail = |e: zmq::Error| Exit::Software.with(format!("{name}: {e}"));
    let socket = transport::server_socket(ctx, kind, key, name).map_err(fail)?;
    if kind == zmq::XPUB {
        // Every subscription is passed up, not just the first, so that the server sees
        // each one: a new subscriber gets a heartbeat soon, and a subscription other than
        // the documented one is a protocol violation.
        socket.set_xpub_verbose(true).map_err(fail)?;
        // Room for a burst of bans per subscriber; one that falls further behind notices
        // the gap in sequence numbers and reads a snapshot. A queued ban takes about 700
        // bytes: 10,000 make 7 MB per slow subscriber, where 100,000 grew the server to
        // 718 MB with 10 slow subscribers in the benchmark.
        socket.set_sndhwm(10_000).map_err(fail)?;
        // A subscriber sends one subscription; libzmq keeps every distinct one it is sent
        // (about a hundred bytes each at most, since frames are small) until the server has
        // read them and cut the sender off.
        socket.set_rcvhwm(16).map_err(fail)?;
    } else {
        // Replies a peer leaves unread: at most 1,000 wait in the server per connection
        // (libzmq's default, set here because the bound is part of the design; further
        // replies to it are dropped). Most are a few dozen bytes; the large ones, snapshot
        // pages of up to 1,000 bans, are limited per key by its allowance of pages. Less
        // would drop replies to a reporter that keeps a batch of 256 reports in flight.
        socket.set_sndhwm(1000).map_err(fail)?;
    }
    let watch = ListenerWatch::attach(ctx, &socket, name, freed).map_err(fail)?;
    Ok((socket, watch))
}

/// Once libzmq has destroyed a closed listener, which frees what its connections held, a
/// moment after the close (seconds on a busy machine, for the trie of a thousand distinct
/// subscriptions of a cut-off key): gives those pages back to the system, which glibc
/// would otherwise keep, and says so.
fn freed(name: &str) {
    memory::release_free_pages();
    log::info!(
        "{name} socket closed: what its connections held is freed, {} in use",
        memory::megabytes(memory::resident())
    );
}
