//! ZeroMQ sockets with CURVE, the options every banshare socket shares, and receiving a
//! message without keeping more frames than any banshare message has. The server's ZAP
//! handler is in `server::zap`.

use std::net::IpAddr;

use crate::wire::cidr::Cidr;
use crate::wire::keys::{KeyPair, PublicKey};
use crate::wire::protocol::MAX_FRAME;

/// A libzmq without CURVE: the reason a daemon or the reporter will not start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "this libzmq has no CURVE support; install a libzmq built with libsodium (Debian: libzmq5)"
)]
pub struct NoCurve;

pub fn require_curve() -> Result<(), NoCurve> {
    match zmq::has("curve") {
        Some(true) => Ok(()),
        _ => Err(NoCurve),
    }
}

/// `tcp://host:port`, with brackets around IPv6 addresses.
pub fn endpoint(host: &str, port: u16) -> String {
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => format!("tcp://[{v6}]:{port}"),
        _ => format!("tcp://{host}:{port}"),
    }
}

/// Options every banshare socket shares: a size limit, IPv6, no lingering on close, and
/// ZMTP heartbeats so a dead peer is noticed within seconds rather than never.
fn common(socket: &zmq::Socket) -> zmq::Result<()> {
    socket.set_maxmsgsize(MAX_FRAME)?;
    socket.set_ipv6(true)?;
    socket.set_linger(0)?;
    socket.set_heartbeat_ivl(1000)?;
    socket.set_heartbeat_timeout(3000)?;
    socket.set_heartbeat_ttl(3000)?;
    Ok(())
}

/// libzmq's I/O threads for a daemon's context: one per core, up to four. They do the
/// CURVE work, which for a server's publish socket is one encryption per subscriber and
/// message; libzmq's default of one thread leaves every other core idle.
pub fn io_threads() -> i32 {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(4)) as i32
}

/// How long a peer may take from connecting to finishing its CURVE handshake (libzmq's
/// default is 30 s): a connection that says nothing holds a file descriptor only this long.
/// A handshake takes two round trips and a ZAP answer, well under a second even across
/// the world.
pub const HANDSHAKE_LIMIT: i32 = 3000;

/// Connections the kernel keeps waiting for the server to accept (libzmq's default is 100).
/// While a flood of handshakes keeps libzmq's I/O thread busy, a short queue overflows and
/// the kernel drops new connections, whose senders then wait a second to try again; the
/// kernel caps it at `net.core.somaxconn` (4096 on current kernels).
const BACKLOG: i32 = 4096;

/// A CURVE server socket whose peers are checked by the ZAP handler under `domain`.
pub fn server_socket(
    ctx: &zmq::Context,
    kind: zmq::SocketType,
    key: &KeyPair,
    domain: &str,
) -> zmq::Result<zmq::Socket> {
    let socket = ctx.socket(kind)?;
    common(&socket)?;
    socket.set_curve_server(true)?;
    socket.set_curve_secretkey(key.secret_bytes())?;
    socket.set_zap_domain(domain)?;
    socket.set_handshake_ivl(HANDSHAKE_LIMIT)?;
    socket.set_backlog(BACKLOG)?;
    Ok(socket)
}

/// How long a socket that a host keeps open waits before it reconnects, plus a random part
/// of up to as much again that libzmq adds: when a server restarts, 10,000 hosts then
/// come back over a second, not within libzmq's default 100 ms, whose CURVE handshakes
/// would time out in the crowd and be tried again, and again.
pub const RECONNECT: i32 = 1000;

/// Spreads a long-lived socket's reconnections (`RECONNECT`).
pub fn spread_reconnects(socket: &zmq::Socket) -> zmq::Result<()> {
    socket.set_reconnect_ivl(RECONNECT)
}

/// A CURVE client socket that only talks to the server holding `server_key`.
pub fn client_socket(
    ctx: &zmq::Context,
    kind: zmq::SocketType,
    server_key: &PublicKey,
    key: &KeyPair,
) -> zmq::Result<zmq::Socket> {
    let socket = ctx.socket(kind)?;
    common(&socket)?;
    socket.set_curve_serverkey(&server_key.0)?;
    socket.set_curve_publickey(&key.public.0)?;
    socket.set_curve_secretkey(key.secret_bytes())?;
    Ok(socket)
}

/// Who sent a message: the User-Id that the ZAP handler gave the peer (its public key in
/// Z85) and the peer's address.
#[derive(Debug, Default)]
pub struct Sender {
    pub user: Option<String>,
    pub address: Option<String>,
}

/// One message as received: its first frames, how many it had, and who sent it.
#[derive(Debug, Default)]
pub struct Received {
    pub frames: Vec<Vec<u8>>,
    /// Every frame the message had, kept or not.
    pub count: usize,
    pub sender: Sender,
}

impl Received {
    /// Whether frames were left out: a message no banshare protocol has.
    pub fn oversized(&self) -> bool {
        self.count > self.frames.len()
    }
}

/// Receives one whole multipart message, and who sent it, keeping at most `keep` frames:
/// libzmq bounds each frame but not their number, and a message of 100,000 frames must
/// not be copied.
pub fn recv_bounded(socket: &zmq::Socket, flags: i32, keep: usize) -> zmq::Result<Received> {
    let mut received = Received::default();
    let mut msg = zmq::Message::new();
    loop {
        socket.recv(&mut msg, flags)?;
        // Not on the identity frame a ROUTER makes itself: the peer's next frame has them.
        if received.count < 2 && received.sender.user.is_none() {
            received.sender.user = msg.gets("User-Id").map(str::to_owned);
            received.sender.address = msg.gets("Peer-Address").map(peer_address);
        }
        received.count += 1;
        if received.frames.len() < keep {
            received.frames.push(msg.to_vec());
        }
        if !msg.get_more() {
            return Ok(received);
        }
    }
}

/// The peer's address as people write it: "127.0.0.1", not "::ffff:127.0.0.1".
pub fn peer_address(text: &str) -> String {
    match text.parse::<IpAddr>() {
        Ok(addr) => Cidr::host(addr).addr().to_string(),
        Err(_) => crate::logging::printable(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(endpoint("127.0.0.1", 5), "tcp://127.0.0.1:5");
        assert_eq!(endpoint("::1", 5), "tcp://[::1]:5");
        assert_eq!(
            endpoint("banshare.example.net", 5),
            "tcp://banshare.example.net:5"
        );
    }

    #[test]
    fn peer_addresses_are_unmapped() {
        assert_eq!(peer_address("::ffff:127.0.0.1"), "127.0.0.1");
        assert_eq!(peer_address("2001:db8::1"), "2001:db8::1");
    }

    #[test]
    fn curve_is_available() {
        require_curve().unwrap();
        assert_eq!(
            NoCurve.to_string(),
            "this libzmq has no CURVE support; install a libzmq built with libsodium \
             (Debian: libzmq5)"
        );
    }
}
