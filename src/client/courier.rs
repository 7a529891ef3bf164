//! Delivery of the reporter's spool: reports that `banshare-report` could not hand to the
//! server go to it from here, one at a time and oldest first, as soon as it answers again.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::client::spool::{self, Spool};
use crate::exit::Failure;
use crate::logging::Quiet;
use crate::sockets::transport;
use crate::sockets::upstream::{reply_body, send_request, within_bounds, VERDICT_FRAMES};
use crate::wire::follow::REQUEST_TIMEOUT;
use crate::wire::protocol::Verdict;

/// How often the spool is looked at when it was empty.
const SPOOL_CHECK: Duration = Duration::from_secs(1);

pub struct Courier {
    /// A DEALER on the server's report socket.
    socket: zmq::Socket,
    spool: Spool,
    /// The report on its way, and when it was sent.
    delivering: Option<(PathBuf, Instant)>,
    next_check: Instant,
    quiet: Quiet,
    /// Reports delivered from the spool since the start.
    pub delivered: u64,
}

impl Courier {
    pub fn new(socket: zmq::Socket, spool: Spool) -> Courier {
        Courier {
            socket,
            spool,
            delivering: None,
            next_check: Instant::now(),
            quiet: Quiet::default(),
            delivered: 0,
        }
    }

    /// Reports waiting in the spool.
    pub fn depth(&self) -> usize {
        self.spool.waiting().map_or(0, |w| w.len())
    }

    pub fn socket(&self) -> &zmq::Socket {
        &self.socket
    }

    /// A new socket to the server: the report on its way is sent again on it.
    pub fn reconnect(&mut self, socket: zmq::Socket) {
        self.socket = socket;
        self.delivering = None;
    }

    /// A server was heard again after a silence: the report on its way, which may have
    /// gone to a server that was down or lost with a connection, goes again at once on a
    /// new socket, rather than when its answer is overdue; and the spool is looked at now.
    pub fn server_back(&mut self) {
        if let Some((_, sent_at)) = &mut self.delivering {
            *sent_at = Instant::now()
                .checked_sub(REQUEST_TIMEOUT)
                .unwrap_or(*sent_at);
        }
        self.next_check = Instant::now();
    }

    /// The spool moved (a reload).
    pub fn set_spool(&mut self, spool: Spool) {
        self.spool = spool;
    }

    /// Sends the oldest spooled report, or sends it again on a socket from `new_socket`
    /// when the server has not answered in time.
    pub fn deliver(&mut self, new_socket: impl FnOnce() -> Result<zmq::Socket, Failure>) {
        match &self.delivering {
            Some((_, sent_at)) if sent_at.elapsed() < REQUEST_TIMEOUT => return,
            Some(_) => {
                // A new socket, so that a late answer to the old request is never read.
                match new_socket() {
                    Ok(socket) => self.socket = socket,
                    Err(e) => log::error!("{e}"),
                }
                self.delivering = None;
            }
            None if Instant::now() < self.next_check => return,
            None => {}
        }
        self.next_check = Instant::now() + SPOOL_CHECK;
        if let Err(e) = crate::files::check_own_dir(self.spool.dir()) {
            if self.spool.dir().exists() {
                self.quiet
                    .warn(format!("not delivering spooled reports: {e}"));
            }
            return;
        }
        let waiting = match self.spool.waiting() {
            Ok(waiting) => waiting,
            Err(e) => {
                log::error!("cannot read spool {}: {e}", self.spool.dir().display());
                return;
            }
        };
        if waiting.len() >= self.spool.max() {
            self.quiet.warn(format!(
                "spool {} is full ({} reports): new reports from this host are lost until \
                 the server answers again",
                self.spool.dir().display(),
                waiting.len()
            ));
        }
        let Some(path) = waiting.into_iter().next() else {
            return;
        };
        match spool::read(&path) {
            Ok(report) => {
                if let Err(e) = send_request(&self.socket, report.encode()) {
                    log::warn!("cannot deliver {}: {e}", path.display());
                    return;
                }
                self.delivering = Some((path, Instant::now()));
            }
            Err(e) => {
                // Set aside, not deleted: the admin may still want what is in it.
                let aside = path.with_extension("bad");
                log::error!(
                    "cannot read spooled report {} ({e}); moving it to {}",
                    path.display(),
                    aside.display()
                );
                if let Err(e) = std::fs::rename(&path, &aside) {
                    log::error!("cannot move {}: {e}", path.display());
                    self.next_check = Instant::now() + Duration::from_secs(60);
                }
            }
        }
    }

    /// The server answered a spooled report: whatever it said, the report is done.
    pub fn read_verdicts(&mut self) {
        while let Ok(received) =
            transport::recv_bounded(&self.socket, zmq::DONTWAIT, VERDICT_FRAMES)
        {
            let verdict = within_bounds(&received)
                .and_then(reply_body)
                .and_then(Verdict::decode);
            let Some((path, _)) = self.delivering.take() else {
                continue;
            };
            match verdict {
                Ok(verdict) if verdict.taken() => {
                    self.delivered += 1;
                    log::info!("delivered spooled report {}: {verdict}", path.display());
                }
                Ok(verdict) => log::warn!("spooled report {}: {verdict}", path.display()),
                Err(e) => {
                    log::warn!("bad answer to spooled report {}: {e}", path.display());
                    continue;
                }
            }
            if let Err(e) = std::fs::remove_file(&path) {
                log::error!("cannot remove delivered report {}: {e}", path.display());
            }
            // The next one goes at once.
            self.next_check = Instant::now();
        }
    }
}
