//! The sockets of one request that a server answers with a verdict, run by a `Schedule`
//! (`crate::schedule`): one DEALER for each server asked, each behind the empty delimiter a
//! REQ socket would add, and the first answer that comes on any of them. A request whose
//! connection dropped before its answer is sent again once it is back
//! (`monitor::Reconnects`).

use crate::sockets::monitor::{self, Reconnects};
use crate::sockets::transport;
use crate::sockets::upstream::{reply_body, send_request, within_bounds, VERDICT_FRAMES};
use crate::wire::error::MessageError;

/// A socket that requests go out on, and the watch of its connection (none when libzmq
/// had no monitor to give). It may serve one request after another.
pub struct Requester {
    socket: zmq::Socket,
    reconnects: Option<Reconnects>,
}

impl Requester {
    /// Watches `socket`, a DEALER connected to a server's report socket.
    pub fn new(ctx: &zmq::Context, socket: zmq::Socket) -> Requester {
        let reconnects = Reconnects::attach(ctx, &socket)
            .inspect_err(|e| log::debug!("a request socket goes unwatched: {e}"))
            .ok();
        Requester { socket, reconnects }
    }

    /// Whether the connection came back after a loss since the last call.
    fn back_after_loss(&mut self) -> bool {
        self.reconnects
            .as_mut()
            .is_some_and(Reconnects::back_after_loss)
    }

    /// Reads the watch's events while no request is in flight, which concern none. An
    /// owner that keeps an idle requester calls it now and then: libzmq's I/O thread
    /// blocks on a monitor whose queue is full (see `monitor::stop`).
    pub fn drain(&mut self) {
        self.back_after_loss();
    }
}

impl Drop for Requester {
    /// The watch stops before the socket closes (see `monitor::stop`).
    fn drop(&mut self) {
        if self.reconnects.is_some() {
            monitor::stop(&self.socket);
        }
    }
}

/// The sockets a request went out on.
#[derive(Default)]
pub struct Asked {
    sockets: Vec<Sent>,
    /// Whether a reply had more frames than a verdict has, since `take_oversized`.
    oversized: bool,
}

/// The first answer to a request: from which server, on which socket (which may serve a
/// later request), and the reply's frames without the delimiter.
pub struct Answer {
    pub server: usize,
    pub requester: Requester,
    pub frames: Vec<Vec<u8>>,
}

/// A request on its way to one server: the index of the server, the socket, and the
/// request itself, to send again.
struct Sent {
    server: usize,
    requester: Requester,
    request: Vec<Vec<u8>>,
}

impl Asked {
    /// Sends `request` to server `server` on `requester`; with `alone`, the sockets asked
    /// before are closed first, so that a late answer on them is never read. False when it
    /// could not be sent (libzmq gives up on a server that refused this host's key, and
    /// leaves the message nowhere to go).
    pub fn send(
        &mut self,
        server: usize,
        mut requester: Requester,
        request: &[Vec<u8>],
        alone: bool,
    ) -> bool {
        if alone {
            self.clear();
        }
        requester.drain();
        if send_request(&requester.socket, request.to_vec()).is_err() {
            return false;
        }
        self.sockets.push(Sent {
            server,
            requester,
            request: request.to_vec(),
        });
        true
    }

    /// The sockets to poll for an answer, and their watches.
    pub fn poll_items(&self) -> impl Iterator<Item = zmq::PollItem<'_>> {
        self.sockets.iter().flat_map(|sent| {
            let Requester { socket, reconnects } = &sent.requester;
            let watch = reconnects.as_ref().map(Reconnects::socket);
            std::iter::once(socket)
                .chain(watch)
                .map(|s| s.as_poll_item(zmq::POLLIN))
        })
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
    /// Before that, the request goes again on each socket connected again since it was
    /// lost with its connection.
    pub fn answer(&mut self) -> Option<Answer> {
        self.send_again_where_lost();
        while let Some(position) = self.readable() {
            let Sent {
                server, requester, ..
            } = self.sockets.swap_remove(position);
            match reply(&requester.socket, &mut self.oversized) {
                Ok(frames) => {
                    self.clear();
                    return Some(Answer {
                        server,
                        requester,
                        frames,
                    });
                }
                Err(why) => log::debug!("ignored a reply: {why}"),
            }
        }
        None
    }

    fn send_again_where_lost(&mut self) {
        for sent in &mut self.sockets {
            let back = sent.requester.back_after_loss();
            if back && send_request(&sent.requester.socket, sent.request.clone()).is_ok() {
                log::debug!("sent a request again, lost with its connection");
            }
        }
    }

    /// Where the first socket with something to read is.
    fn readable(&self) -> Option<usize> {
        let ready = |s: &zmq::Socket| s.get_events().is_ok_and(|e| e.contains(zmq::POLLIN));
        self.sockets
            .iter()
            .position(|sent| ready(&sent.requester.socket))
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
