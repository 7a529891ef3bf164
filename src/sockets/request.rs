//! The sockets of one request that a server answers with a verdict, run by a `Schedule`
//! (`crate::schedule`): one DEALER for each server asked, each behind the empty delimiter a
//! REQ socket would add, and the first answer that comes on any of them.

use crate::sockets::transport;
use crate::sockets::upstream::{reply_body, send_request, within_bounds, VERDICT_FRAMES};
use crate::wire::error::MessageError;

/// The sockets a request went out on, each with the index of its server.
#[derive(Default)]
pub struct Asked {
    sockets: Vec<(usize, zmq::Socket)>,
    /// Whether a reply had more frames than a verdict has, since `take_oversized`.
    oversized: bool,
}

/// The first answer to a request: from which server, on which socket (which may serve a
/// later request), and the reply's frames without the delimiter.
pub struct Answer {
    pub server: usize,
    pub socket: zmq::Socket,
    pub frames: Vec<Vec<u8>>,
}

impl Asked {
    /// Sends `request` to server `server` on `socket`; with `alone`, the sockets asked
    /// before are closed first, so that a late answer on them is never read. False when it
    /// could not be sent (libzmq gives up on a server that refused this host's key, and
    /// leaves the message nowhere to go).
    pub fn send(
        &mut self,
        server: usize,
        socket: zmq::Socket,
        request: &[Vec<u8>],
        alone: bool,
    ) -> bool {
        if alone {
            self.sockets.clear();
        }
        let sent = send_request(&socket, request.to_vec()).is_ok();
        if sent {
            self.sockets.push((server, socket));
        }
        sent
    }

    /// The sockets to poll for an answer.
    pub fn poll_items(&self) -> impl Iterator<Item = zmq::PollItem<'_>> {
        self.sockets
            .iter()
            .map(|(_, s)| s.as_poll_item(zmq::POLLIN))
    }

    pub fn len(&self) -> usize {
        self.sockets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }

    /// The first answer that has come, if any; the other sockets are closed, and with them
    /// whatever they might still bring. A socket whose reply is not a verdict's shape (more
    /// frames than a verdict has, or no delimiter) is closed, and the others still count.
    pub fn answer(&mut self) -> Option<Answer> {
        while let Some(position) = self.readable() {
            let (server, socket) = self.sockets.swap_remove(position);
            match reply(&socket, &mut self.oversized) {
                Ok(frames) => {
                    self.sockets.clear();
                    return Some(Answer {
                        server,
                        socket,
                        frames,
                    });
                }
                Err(why) => log::debug!("ignored a reply: {why}"),
            }
        }
        None
    }

    /// Where the first socket with something to read is.
    fn readable(&self) -> Option<usize> {
        let ready = |s: &zmq::Socket| s.get_events().is_ok_and(|e| e.contains(zmq::POLLIN));
        self.sockets.iter().position(|(_, socket)| ready(socket))
    }

    /// Whether a reply had more frames than a verdict has since the last call: its frames
    /// were freed as they were read, and the owner should give the memory back
    /// (`sockets::upstream::Upstream::take_oversized`).
    pub fn take_oversized(&mut self) -> bool {
        std::mem::take(&mut self.oversized)
    }

    /// Closes every socket of the request.
    pub fn clear(&mut self) {
        self.sockets.clear();
    }
}

/// The reply waiting on `socket`, without its delimiter; notes in `oversized` a reply of
/// more frames than a verdict has.
fn reply(socket: &zmq::Socket, oversized: &mut bool) -> Result<Vec<Vec<u8>>, ReplyError> {
    let received = transport::recv_bounded(socket, zmq::DONTWAIT, VERDICT_FRAMES)?;
    *oversized |= received.oversized();
    let body = within_bounds(&received).and_then(reply_body)?;
    Ok(body.to_vec())
}

/// Why a reply is ignored: it could not be read, or it is not a verdict's shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum ReplyError {
    #[error(transparent)]
    Socket(#[from] zmq::Error),
    #[error(transparent)]
    Shape(#[from] MessageError),
}
