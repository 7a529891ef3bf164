//! The client's way to its servers: the keys client.toml names, each server as a
//! `sockets::upstream::Target`, DEALERs on a report socket for spooled reports, and `banshare
//! ping`. The daemon follows each server through a `sockets::upstream::Upstream`.

use std::time::Duration;

use crate::config::{ClientConfig, ServerSpec};
use crate::exit::{Exit, Failure};
use crate::sockets::transport::{self, endpoint};
use crate::sockets::upstream::{reply_body, send_request, Target};
use crate::wire::keys::{self, KeyPair};
use crate::wire::protocol::{encode_snapshot_request, SnapshotPage};

/// This host's key pair, from the file client.toml names.
pub fn own_key(config: &ClientConfig) -> Result<KeyPair, Failure> {
    Ok(keys::load_secret(&config.key)?)
}

/// Every server client.toml lists, with its public key read.
pub fn targets(config: &ClientConfig) -> Result<Vec<Target>, Failure> {
    config.targets().iter().map(target).collect()
}

fn target(spec: &ServerSpec) -> Result<Target, Failure> {
    Ok(Target {
        name: endpoint(&spec.address, spec.publish_port),
        host: spec.address.clone(),
        report_port: spec.report_port,
        publish_port: spec.publish_port,
        key: keys::load_public(&spec.key)?,
    })
}

/// Asks every server for the first snapshot page, as a client does when it
/// resynchronises, to show whether this host reaches it and is let in.
pub fn ping(config: &ClientConfig, timeout: Duration) -> Result<String, Failure> {
    let own = own_key(config)?;
    let mut answers = Vec::new();
    for (spec, target) in config.targets().iter().zip(targets(config)?) {
        answers.push(ping_one(spec, &target, &own, timeout)?);
    }
    Ok(answers.join("\n"))
}

fn ping_one(
    spec: &ServerSpec,
    target: &Target,
    own: &KeyPair,
    timeout: Duration,
) -> Result<String, Failure> {
    let ctx = zmq::Context::new();
    let socket = request_socket(&ctx, zmq::DEALER, target, own)?;
    let address = target.report_endpoint();
    let fail = |e: zmq::Error| Exit::Software.with(format!("{address}: {e}"));
    send_request(&socket, encode_snapshot_request(None, None)).map_err(fail)?;
    let timeout_ms = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
    if socket.poll(zmq::POLLIN, timeout_ms).map_err(fail)? == 0 {
        return Err(Exit::Unavailable.with(format!(
            "no answer from {address} within {timeout:?}: the server is down or unreachable, \
                 this host's key is not authorized, or {} is not the server's key",
            spec.key.display()
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

/// A socket of `kind` on a server's report port: a REQ for banshare-report, a DEALER for
/// spooled reports and `banshare ping`.
pub fn request_socket(
    ctx: &zmq::Context,
    kind: zmq::SocketType,
    target: &Target,
    own: &KeyPair,
) -> Result<zmq::Socket, Failure> {
    let fail = |e: zmq::Error| Exit::Software.with(format!("request socket: {e}"));
    let socket = transport::client_socket(ctx, kind, &target.key, own).map_err(fail)?;
    let address = target.report_endpoint();
    socket
        .connect(&address)
        .map_err(|e| Exit::Config.with(format!("cannot connect to {address}: {e}")))?;
    Ok(socket)
}
