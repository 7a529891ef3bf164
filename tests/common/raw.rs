//! Raw ZeroMQ peers, for what banshare-report refuses to send.

use std::time::Duration;

use banshare::wire::keys::{KeyPair, PublicKey};

/// A raw ZeroMQ REQ socket, for what banshare-report refuses to send. `curve` is
/// (server key, own key pair); None makes a plaintext peer.
pub struct Raw {
    _ctx: zmq::Context,
    pub socket: zmq::Socket,
}

impl Raw {
    pub fn connect(port: u16, curve: Option<(&PublicKey, &KeyPair)>) -> Raw {
        let ctx = zmq::Context::new();
        let socket = ctx.socket(zmq::REQ).unwrap();
        socket.set_linger(0).unwrap();
        if let Some((server, own)) = curve {
            socket.set_curve_serverkey(&server.0).unwrap();
            socket.set_curve_publickey(&own.public.0).unwrap();
            socket.set_curve_secretkey(own.secret_bytes()).unwrap();
        }
        socket.connect(&format!("tcp://127.0.0.1:{port}")).unwrap();
        Raw { _ctx: ctx, socket }
    }

    /// Sends the frames and returns the reply, or None when none came within `timeout`.
    pub fn request(&self, frames: &[&[u8]], timeout: Duration) -> Option<Vec<Vec<u8>>> {
        self.socket.send_multipart(frames.iter().copied(), 0).ok()?;
        let ready = self
            .socket
            .poll(zmq::POLLIN, timeout.as_millis() as i64)
            .unwrap();
        (ready > 0).then(|| self.socket.recv_multipart(0).unwrap())
    }
}

/// The frames of a current-format report.
pub fn report_frames<'a>(
    prog: &'a str,
    jail: &'a str,
    ip: &'a str,
    bantime: &'a str,
) -> Vec<&'a [u8]> {
    vec![
        b"BANSHARE1".as_slice(),
        b"REPORT",
        prog.as_bytes(),
        jail.as_bytes(),
        ip.as_bytes(),
        bantime.as_bytes(),
    ]
}

pub fn texts(frames: &[Vec<u8>]) -> Vec<String> {
    frames
        .iter()
        .map(|f| String::from_utf8_lossy(f).into_owned())
        .collect()
}
