//! The client's sockets to the server: the subscription to its publish socket, DEALERs on
//! its report socket for snapshot pages and spooled reports, and the keys they use. The
//! daemon, the reporter and `banshare ping` share them.

use std::time::Duration;

use crate::config::ClientConfig;
use crate::exit::{Exit, Failure};
use crate::wire::keys::{self, KeyPair, PublicKey};
use crate::wire::monitor::ConnectionWatch;
use crate::wire::protocol::{encode_snapshot_request, SnapshotPage, VERSION};
use crate::wire::transport::{self, endpoint};
use crate::wire::upstream::reply_body;

/// The keys a client needs, from the files client.toml names.
pub fn load_keys(config: &ClientConfig) -> Result<(PublicKey, KeyPair), Failure> {
    let server = keys::load_public(&config.server_key)?;
    let own = keys::load_secret(&config.key)?;
    Ok((server, own))
}

/// Sends a request on a DEALER socket, behind the empty delimiter that a REQ socket would
/// add, so the server handles both alike.
pub fn send_request(socket: &zmq::Socket, request: Vec<Vec<u8>>) -> zmq::Result<()> {
    let frames = std::iter::once(Vec::new()).chain(request);
    socket.send_multipart(frames, zmq::DONTWAIT)
}

/// Asks the server for the first snapshot page, as a client does when it resynchronises,
/// to show whether this host reaches the server and is let in.
pub fn ping(config: &ClientConfig, timeout: Duration) -> Result<String, Failure> {
    let ctx = zmq::Context::new();
    let socket = request_socket(&ctx, config)?;
    let address = endpoint(&config.server, config.report_port);
    let fail = |e: zmq::Error| Exit::Software.with(format!("{address}: {e}"));
    send_request(&socket, encode_snapshot_request(None)).map_err(fail)?;
    let timeout_ms = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
    if socket.poll(zmq::POLLIN, timeout_ms).map_err(fail)? == 0 {
        return Err(Exit::Unavailable.with(format!(
            "no answer from {address} within {timeout:?}: the server is down or unreachable, \
                 this host's key is not authorized, or {} is not the server's key",
            config.server_key.display()
        )));
    }
    let frames = socket.recv_multipart(0).map_err(fail)?;
    let page = reply_body(&frames).and_then(SnapshotPage::decode);
    let page = page.map_err(|e| Exit::Software.with(format!("{address}: {e}")))?;
    Ok(format!(
        "{address} answered: {} bans on the first page of the ban list",
        page.bans.len()
    ))
}

/// Frames in a verdict behind its delimiter, the largest the courier receives.
pub const VERDICT_FRAMES: usize = 1 + 3;

/// A DEALER socket on the server's report port, for snapshot requests and spooled reports.
pub fn request_socket(ctx: &zmq::Context, config: &ClientConfig) -> Result<zmq::Socket, Failure> {
    let (server_key, key) = load_keys(config)?;
    let fail = |e: zmq::Error| Exit::Software.with(format!("request socket: {e}"));
    let socket = transport::client_socket(ctx, zmq::DEALER, &server_key, &key).map_err(fail)?;
    let address = endpoint(&config.server, config.report_port);
    socket
        .connect(&address)
        .map_err(|e| Exit::Config.with(format!("cannot connect to {address}: {e}")))?;
    Ok(socket)
}

/// The subscriber socket and the watch on its connection.
pub struct Subscription {
    pub socket: zmq::Socket,
    pub watch: ConnectionWatch,
    pub key: PublicKey,
    pub server_key: PublicKey,
}

pub fn subscribe(ctx: &zmq::Context, config: &ClientConfig) -> Result<Subscription, Failure> {
    let (server_key, key) = load_keys(config)?;
    let fail = |e: zmq::Error| Exit::Software.with(format!("subscriber socket: {e}"));
    let socket = transport::client_socket(ctx, zmq::SUB, &server_key, &key).map_err(fail)?;
    socket.set_subscribe(VERSION.as_bytes()).map_err(fail)?;
    // Room for a burst as large as the server's queue for us, so that a client busy with
    // its firewall still takes a burst of 10,000 bans live instead of re-reading them.
    socket.set_rcvhwm(10_000).map_err(fail)?;
    let address = endpoint(&config.server, config.publish_port);
    // Attached before connecting, so that not even the first failure goes unexplained.
    let watch = ConnectionWatch::attach(ctx, &socket, &address).map_err(fail)?;
    socket
        .connect(&address)
        .map_err(|e| Exit::Config.with(format!("cannot connect to {address}: {e}")))?;
    log::debug!("subscriber socket connecting to {address}");
    Ok(Subscription {
        socket,
        watch,
        key: key.public,
        server_key,
    })
}
