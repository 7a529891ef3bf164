//! The control socket between `banshare` and a daemon (docs/protocol.md section 6): the
//! daemon binds it, `banshare` asks over it. What travels on it is `wire::control`.

use std::path::Path;
use std::time::Duration;

use crate::exit::{Exit, Failure};
use crate::wire::control::Command;
use crate::wire::protocol::VERSION;

/// Binds the control socket at `path`, replacing a stale socket file from an earlier run.
/// The socket file is 0660 (`files::bind_socket`).
pub fn bind(ctx: &zmq::Context, path: &Path) -> Result<zmq::Socket, Failure> {
    crate::files::bind_socket("control socket", path, 0o660, || {
        let socket = ctx.socket(zmq::REP).map_err(|e| e.to_string())?;
        socket.set_linger(0).map_err(|e| e.to_string())?;
        socket
            .bind(&format!("ipc://{}", path.display()))
            .map_err(|e| e.to_string())?;
        Ok(socket)
    })
}

/// Sends one command to the server and returns its answer (for the admin tool).
pub fn request(path: &Path, command: &Command) -> Result<String, Failure> {
    use nix::unistd::{access, AccessFlags};
    let shown = path.display();
    if !path.exists() {
        return Err(Exit::Unavailable.with(format!(
            "{shown} does not exist: is banshare-server (or banshare-client) running?"
        )));
    }
    if access(path, AccessFlags::W_OK).is_err() {
        return Err(Exit::NoPerm.with(format!(
            "{shown}: permission denied; run as root or as a member of the banshare group"
        )));
    }
    let fail = |e: zmq::Error| Exit::Software.with(format!("{shown}: {e}"));
    let ctx = zmq::Context::new();
    let socket = ctx.socket(zmq::REQ).map_err(fail)?;
    socket.set_linger(0).map_err(fail)?;
    socket.connect(&format!("ipc://{shown}")).map_err(fail)?;
    socket.send_multipart(command.encode(), 0).map_err(fail)?;
    let timeout = Duration::from_secs(5);
    if socket
        .poll(zmq::POLLIN, timeout.as_millis() as i64)
        .map_err(fail)?
        == 0
    {
        return Err(Exit::Unavailable.with(format!("no answer on {shown} within 5 s")));
    }
    let frames = socket.recv_multipart(0).map_err(fail)?;
    let text = |f: &[u8]| String::from_utf8_lossy(f).into_owned();
    match &frames[..] {
        [version, status, body] if version.as_slice() == VERSION.as_bytes() => {
            match status.as_slice() {
                b"OK" => Ok(text(body)),
                _ => Err(Exit::DataErr.with(text(body))),
            }
        }
        _ => Err(Exit::Software.with(format!("unexpected answer on {shown}"))),
    }
}
