//! Delivery of the reporter's spool: reports that `banshare-report` could not hand to the
//! server go to it from here, one at a time and oldest first, as soon as it answers again.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::client::spool::{self, Spool};
use crate::exit::Failure;
use crate::logging::Quiet;
use crate::schedule::{Schedule, Step};
use crate::sockets::request::{Asked, Requester};
use crate::wire::follow::REQUEST_TIMEOUT;
use crate::wire::protocol::Verdict;

/// How often the spool is looked at when it was empty.
const SPOOL_CHECK: Duration = Duration::from_secs(1);

pub struct Courier {
    spool: Spool,
    /// The report on its way, and the schedule it goes on: one server at a time, the next
    /// after REQUEST_TIMEOUT without an answer.
    delivering: Option<(PathBuf, Schedule)>,
    /// The socket it went on.
    asked: Asked,
    /// The server the next report goes to first: the last that answered.
    first: usize,
    next_check: Instant,
    quiet: Quiet,
    /// Reports delivered from the spool since the start.
    pub delivered: u64,
}

impl Courier {
    pub fn new(spool: Spool) -> Courier {
        Courier {
            spool,
            delivering: None,
            asked: Asked::default(),
            first: 0,
            next_check: Instant::now(),
            quiet: Quiet::default(),
            delivered: 0,
        }
    }

    /// Reports waiting in the spool.
    pub fn depth(&self) -> usize {
        self.spool.waiting().map_or(0, |w| w.len())
    }

    /// The socket the report on its way went on, to poll for the answer.
    pub fn poll_items(&self) -> impl Iterator<Item = zmq::PollItem<'_>> {
        self.asked.poll_items()
    }

    /// New servers or keys (a reload): the report on its way goes again, from the first.
    pub fn reconnect(&mut self) {
        self.asked.clear();
        self.delivering = None;
        self.first = 0;
    }

    /// A server was heard again after a silence: the report on its way, which may have
    /// gone to a server that was down or lost with a connection, goes again at once on a
    /// new socket, rather than when its answer is overdue; and the spool is looked at now.
    pub fn server_back(&mut self) {
        if let Some((_, schedule)) = &mut self.delivering {
            schedule.again_now(Instant::now());
        }
        self.next_check = Instant::now();
    }

    /// The spool moved (a reload).
    pub fn set_spool(&mut self, spool: Spool) {
        self.spool = spool;
    }

    /// Sends the oldest spooled report to one of `servers` servers, on a socket from
    /// `connect`, or sends it again to the next one when its answer is overdue.
    pub fn deliver(
        &mut self,
        servers: usize,
        connect: impl Fn(usize) -> Result<Requester, Failure>,
    ) {
        // Looked at every second, a report on its way or not, so that a full spool is
        // said while the server is away.
        if Instant::now() >= self.next_check {
            self.next_check = Instant::now() + SPOOL_CHECK;
            let oldest = self.oldest();
            if let (None, Some(path)) = (&self.delivering, oldest) {
                let schedule =
                    Schedule::in_turn(servers, self.first, REQUEST_TIMEOUT, Instant::now());
                self.delivering = Some((path, schedule));
            }
        }
        let Some((path, schedule)) = &mut self.delivering else {
            return;
        };
        let now = Instant::now();
        let Step::Ask { server, alone } = schedule.step(now) else {
            return;
        };
        let request = match spool::read(path) {
            Ok(report) => report.encode(),
            Err(e) => {
                set_aside(path, &e, &mut self.next_check);
                self.delivering = None;
                return;
            }
        };
        match connect(server) {
            Ok(requester) => {
                if !self.asked.send(server, requester, &request, alone) {
                    log::warn!("cannot deliver {} yet", path.display());
                }
            }
            Err(e) => log::error!("{e}"),
        }
    }

    /// The oldest spooled report, if the spool may be read and holds one.
    fn oldest(&mut self) -> Option<PathBuf> {
        if let Err(e) = crate::files::check_own_dir(self.spool.dir()) {
            if self.spool.dir().exists() {
                self.quiet
                    .warn(format!("not delivering spooled reports: {e}"));
            }
            return None;
        }
        let waiting = match self.spool.waiting() {
            Ok(waiting) => waiting,
            Err(e) => {
                log::error!("cannot read spool {}: {e}", self.spool.dir().display());
                return None;
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
        waiting.into_iter().next()
    }

    /// The server answered a spooled report: whatever it said, the report is done.
    pub fn read_verdicts(&mut self) {
        let Some(answer) = self.asked.answer() else {
            return;
        };
        let Some((path, _)) = self.delivering.take() else {
            return;
        };
        self.first = answer.server;
        match Verdict::decode(&answer.frames) {
            Ok(verdict) if verdict.taken() => {
                self.delivered += 1;
                log::info!("delivered spooled report {}: {verdict}", path.display());
            }
            Ok(verdict) => log::warn!("spooled report {}: {verdict}", path.display()),
            Err(e) => {
                // It stays in the spool, and goes again at the next look.
                log::warn!("bad answer to spooled report {}: {e}", path.display());
                return;
            }
        }
        if let Err(e) = std::fs::remove_file(&path) {
            log::error!("cannot remove delivered report {}: {e}", path.display());
        }
        // The next one goes at once.
        self.next_check = Instant::now();
    }
}

/// A spooled file that does not read back as a report: set aside, not deleted, as the
/// admin may still want what is in it.
fn set_aside(path: &std::path::Path, why: &spool::SetAside, next_check: &mut Instant) {
    let aside = path.with_extension("bad");
    log::error!(
        "cannot read spooled report {} ({why}); moving it to {}",
        path.display(),
        aside.display()
    );
    if let Err(e) = std::fs::rename(path, &aside) {
        log::error!("cannot move {}: {e}", path.display());
        *next_check = Instant::now() + Duration::from_secs(60);
    }
}
