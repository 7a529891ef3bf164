//! Watches a socket's connection through a ZeroMQ socket monitor and logs what an admin
//! needs to know. CURVE failures are silent on the wire, so without this a client whose key
//! was refused would just wait forever without saying why.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use zmq::SocketEvent as E;

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
    reported: Option<Condition>,
    up: bool,
    /// Whether TCP connected, and whether the handshake failed, in the current attempt.
    attempt_connected: bool,
    attempt_failed: bool,
    /// When the server last refused our key. libzmq never retries after that, so the owner
    /// must open a new socket (see `refused_for`).
    refused_at: Option<Instant>,
}

static NEXT_ID: AtomicUsize = AtomicUsize::new(0);

impl ConnectionWatch {
    pub fn attach(
        ctx: &zmq::Context,
        watched: &zmq::Socket,
        endpoint: &str,
    ) -> zmq::Result<ConnectionWatch> {
        let address = format!(
            "inproc://banshare-monitor-{}",
            NEXT_ID.fetch_add(1, Ordering::Relaxed)
        );
        let events = [
            E::CONNECTED,
            E::CONNECT_RETRIED,
            E::DISCONNECTED,
            E::HANDSHAKE_SUCCEEDED,
            E::HANDSHAKE_FAILED_AUTH,
            E::HANDSHAKE_FAILED_PROTOCOL,
            E::HANDSHAKE_FAILED_NO_DETAIL,
        ];
        let mask = events.iter().fold(0, |mask, e| mask | e.to_raw() as i32);
        watched.monitor(&address, mask)?;
        let monitor = ctx.socket(zmq::PAIR)?;
        monitor.set_linger(0)?;
        monitor.connect(&address)?;
        Ok(ConnectionWatch {
            monitor,
            endpoint: endpoint.to_owned(),
            reported: None,
            up: false,
            attempt_connected: false,
            attempt_failed: false,
            refused_at: None,
        })
    }

    /// The monitor socket, to include in a poll.
    pub fn socket(&self) -> &zmq::Socket {
        &self.monitor
    }

    pub fn is_up(&self) -> bool {
        self.up
    }

    /// How long ago the server refused our key, if it did: libzmq gives up on the endpoint
    /// then, so the owner should open a new socket after a pause. A key authorized later
    /// (and a server reload) then gets the host in without a restart.
    pub fn refused_for(&self) -> Option<Duration> {
        self.refused_at.map(|at| at.elapsed())
    }

    /// Carries what was already logged over to the watch of a new socket, so that retries
    /// do not repeat the same message.
    pub fn continue_from(&mut self, previous: &ConnectionWatch) {
        self.reported = previous.reported;
    }

    /// Reads pending events and logs each change of state once.
    pub fn drain(&mut self) {
        while let Ok(frames) = self.monitor.recv_multipart(zmq::DONTWAIT) {
            if let Some(event) = frames.first().filter(|f| f.len() >= 6) {
                let raw = u16::from_ne_bytes([event[0], event[1]]);
                self.on(E::from_raw(raw));
            }
        }
    }

    fn on(&mut self, event: E) {
        log::debug!("{}: {event:?}", self.endpoint);
        match event {
            E::CONNECTED => self.attempt_connected = true,
            E::HANDSHAKE_SUCCEEDED => {
                self.up = true;
                self.report(Condition::Up);
            }
            E::HANDSHAKE_FAILED_AUTH => {
                self.attempt_failed = true;
                self.refused_at = Some(Instant::now());
                self.report(Condition::KeyRefused);
            }
            E::HANDSHAKE_FAILED_PROTOCOL | E::HANDSHAKE_FAILED_NO_DETAIL => {
                self.attempt_failed = true;
                self.report(Condition::HandshakeFailed);
            }
            E::DISCONNECTED if self.up => {
                self.up = false;
                self.report(Condition::Lost);
            }
            E::DISCONNECTED if self.attempt_connected && !self.attempt_failed => {
                self.report(Condition::HandshakeFailed)
            }
            // Every new attempt starts with CONNECT_RETRIED; one that never got TCP up
            // means the server is down or unreachable.
            E::CONNECT_RETRIED => {
                if !self.attempt_connected {
                    self.report(Condition::Unreachable);
                }
                self.attempt_connected = false;
                self.attempt_failed = false;
            }
            _ => {}
        }
    }

    fn report(&mut self, condition: Condition) {
        if self.reported != Some(condition) {
            self.log(condition);
            self.reported = Some(condition);
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
