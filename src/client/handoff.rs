//! The client's side of the report handoff (`wire::handoff`): a thread that takes reports
//! from banshare-report on this host over `report-socket`, and sends each on CURVE
//! connections to the servers that it keeps open, so that a report costs neither loading
//! libzmq nor a handshake. It tries the servers as banshare-report does (`report::direct`):
//! on the same schedule (`Schedule::each_once`), the first answer winning.
//!
//! Who may hand over a report: the socket is 0600 in the client's runtime directory, and a
//! peer whose credentials are not root's or the client's own user's is turned away, so only
//! those who could read the host's secret key report with it. The report goes under the
//! client's key only if the reporter's client.toml names that same key and the same
//! servers (`wire::handoff::Route`); otherwise the reporter is told to report directly.
//!
//! A thread of its own, so that the main loop's bans never wait on a reporter, and a
//! reporter never waits on a catch-up.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::time::{Duration, Instant};

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};

use crate::client::link::request_socket;
use crate::client::report::direct::spread;
use crate::config::ClientConfig;
use crate::daemon::worker::Worker;
use crate::exit::{Exit, Failure};
use crate::logging::Quiet;
use crate::schedule::{Schedule, Step};
use crate::sockets::poll::{Place, Poll};
use crate::sockets::request::{Asked, Requester};
use crate::sockets::upstream::Target;
use crate::wire::handoff::{self, Handed, Handoff, Route, MAX_LINE};
use crate::wire::keys::KeyPair;
use crate::wire::protocol::{decode_request, Request};

/// Reporters being served at once; beyond, a new one is turned away and reports directly.
const MAX_CALLERS: usize = 256;
/// Open connections kept per server, for as many reports in flight at once.
const MAX_IDLE: usize = 16;
/// How long a reporter may take to send its line.
const READ_WAIT: Duration = Duration::from_secs(2);
/// The most the thread sleeps when no report is on its way, so that it sees new keys
/// within a second of a reload: a long sleep, as a hundred clients on a host's cores
/// (the benchmark's P14) otherwise wake each other for nothing.
const TICK: Duration = Duration::from_secs(1);

/// The key and the servers reports go with; new ones come with a reload.
pub struct Reporting {
    targets: Vec<Target>,
    own: KeyPair,
    /// The same, as a reporter's must be for the client to take its report.
    route: Route,
    timeout: Duration,
}

impl Reporting {
    pub fn new(config: &ClientConfig, targets: &[Target], own: &KeyPair) -> Reporting {
        let servers = targets.iter().map(|t| (t.report_endpoint(), t.key));
        Reporting {
            targets: targets.to_vec(),
            own: own.clone(),
            route: Route::new(&own.public, servers),
            timeout: config.report_timeout.0,
        }
    }
}

/// The running handoff, held by the client's main loop.
pub struct Desk {
    worker: Worker,
    updates: Sender<Reporting>,
}

impl Desk {
    /// Binds `report-socket` and starts the thread; None when client.toml turns it off.
    pub fn start(
        ctx: &zmq::Context,
        config: &ClientConfig,
        who: Reporting,
    ) -> Result<Option<Desk>, Failure> {
        let path = config.report_socket.clone();
        if path.as_os_str().is_empty() {
            return Ok(None);
        }
        let listener = bind(&path)?;
        let (updates, received) = mpsc::channel();
        let counter = Counter::new(ctx.clone(), listener, who, received);
        let worker = Worker::spawn("report handoff", move || counter.serve())
            .map_err(|e| Exit::Software.with(format!("cannot start the handoff thread: {e}")))?;
        log::info!("taking reports from banshare-report at {}", path.display());
        Ok(Some(Desk { worker, updates }))
    }

    pub fn check(&self) -> Result<(), Failure> {
        self.worker.check()
    }

    /// Reports go with these keys and to these servers from now on.
    pub fn update(&self, who: Reporting) {
        // A send fails only when the thread has ended, which `check` reports.
        let _ = self.updates.send(who);
    }
}

/// The socket file, 0600 from the start, in a directory only root may write.
fn bind(path: &Path) -> Result<UnixListener, Failure> {
    crate::files::bind_socket("report socket", path, 0o600, || {
        let listener = UnixListener::bind(path).map_err(|e| e.to_string())?;
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        Ok(listener)
    })
}

/// A reporter whose line has not all come yet.
struct Caller {
    stream: UnixStream,
    line: Vec<u8>,
    since: Instant,
}

/// A report on its way to the servers, and the reporter waiting for the answer.
struct Flight {
    stream: UnixStream,
    request: Vec<Vec<u8>>,
    schedule: Schedule,
    /// When the schedule has something to do next.
    wake: Instant,
    asked: Asked,
    /// `Counter::generation` when the report came.
    generation: u64,
}

struct Counter {
    ctx: zmq::Context,
    listener: UnixListener,
    who: Reporting,
    updates: Receiver<Reporting>,
    /// Open connections with nothing in flight, per server.
    idle: Vec<Vec<Requester>>,
    /// The server the next report goes to first: in turn, from one picked at random at
    /// start, so that reports spread over the servers as banshare-report spreads them.
    next_first: usize,
    callers: Vec<Caller>,
    flights: Vec<Flight>,
    /// Counts the reloads that brought new keys or servers: a connection made before one
    /// is not kept for later reports.
    generation: u64,
    quiet: Quiet,
}

impl Counter {
    fn new(
        ctx: zmq::Context,
        listener: UnixListener,
        who: Reporting,
        updates: Receiver<Reporting>,
    ) -> Counter {
        let mut counter = Counter {
            ctx,
            listener,
            next_first: spread(),
            idle: Vec::new(),
            who,
            updates,
            callers: Vec::new(),
            flights: Vec::new(),
            generation: 0,
            quiet: Quiet::default(),
        };
        counter.forget_connections();
        counter
    }

    /// No connection is made before the first report needs one: one made while this
    /// host's key is not authorized yet would be refused, and libzmq never tries a refused
    /// connection again.
    fn forget_connections(&mut self) {
        self.idle = (0..self.who.targets.len()).map(|_| Vec::new()).collect();
    }

    fn serve(mut self) {
        loop {
            match self.updates.try_recv() {
                Ok(who) => {
                    self.who = who;
                    // New keys or servers: connections with the old ones go.
                    self.generation += 1;
                    self.forget_connections();
                }
                Err(TryRecvError::Disconnected) => return,
                Err(TryRecvError::Empty) => {}
            }
            let readable = self.wait();
            self.accept(readable.listener);
            self.read_callers(&readable.callers);
            self.read_verdicts(&readable.flights);
            self.advance(Instant::now());
            for requester in self.idle.iter_mut().flatten() {
                requester.drain();
            }
        }
    }

    /// Waits for a reporter, a line or an answer, or for the time to ask a report's next
    /// server.
    fn wait(&self) -> Readable {
        let now = Instant::now();
        let soonest = self
            .flights
            .iter()
            .map(|f| f.wake)
            .min()
            .map_or(TICK, |at| at.saturating_duration_since(now).min(TICK));
        let mut poll = Poll::default();
        let listener = poll.add([zmq::PollItem::from_fd(
            self.listener.as_raw_fd(),
            zmq::POLLIN,
        )]);
        let callers = poll.add(
            self.callers
                .iter()
                .map(|c| zmq::PollItem::from_fd(c.stream.as_raw_fd(), zmq::POLLIN)),
        );
        let flights: Vec<Place> = self
            .flights
            .iter()
            .map(|f| poll.add(f.asked.poll_items()))
            .collect();
        if poll.wait(soonest).is_err() {
            return Readable::default();
        }
        Readable {
            listener: poll.ready(&listener),
            callers: poll.each(&callers),
            flights: flights.iter().map(|place| poll.ready(place)).collect(),
        }
    }

    fn accept(&mut self, readable: bool) {
        if !readable {
            return;
        }
        loop {
            let stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => {
                    self.quiet.warn(format!("report socket: {e}"));
                    return;
                }
            };
            if let Err(why) = self.admit(&stream) {
                self.quiet
                    .warn(format!("turned away a report handoff: {why}"));
                continue;
            }
            self.callers.push(Caller {
                stream,
                line: Vec::new(),
                since: Instant::now(),
            });
        }
    }

    /// Only root and the client's own user may hand over a report: they are the ones who
    /// could read the key it goes with.
    fn admit(&self, stream: &UnixStream) -> Result<(), String> {
        if self.callers.len() + self.flights.len() >= MAX_CALLERS {
            return Err(format!("{MAX_CALLERS} reporters are being served already"));
        }
        let peer = getsockopt(stream, PeerCredentials).map_err(|e| e.to_string())?;
        let own = nix::unistd::geteuid().as_raw();
        if peer.uid() != 0 && peer.uid() != own {
            return Err(format!(
                "uid {} is neither root nor the client's",
                peer.uid()
            ));
        }
        stream.set_nonblocking(true).map_err(|e| e.to_string())
    }

    fn read_callers(&mut self, readable: &[bool]) {
        let callers = std::mem::take(&mut self.callers);
        for (k, mut caller) in callers.into_iter().enumerate() {
            match read_line(&mut caller, readable.get(k) == Some(&true)) {
                Ok(Some(line)) => self.take(caller.stream, &line),
                Ok(None) if caller.since.elapsed() < READ_WAIT => self.callers.push(caller),
                Ok(None) => self.quiet.warn("a reporter sent no report in time".into()),
                Err(why) => self.quiet.warn(format!("a report handoff failed: {why}")),
            }
        }
    }

    /// A whole line from a reporter: a report to send, or one to turn back.
    fn take(&mut self, mut stream: UnixStream, line: &[u8]) {
        let handoff = match handoff::decode::<Handoff>(line) {
            Ok(handoff) => handoff,
            Err(why) => return self.quiet.warn(format!("a report handoff failed: {why}")),
        };
        if handoff.route != self.who.route {
            let why = "its client.toml names another key or other servers than this client's";
            return answer(&mut stream, &Handed::Direct { why: why.into() });
        }
        // Checked as the server would: only a well-formed REPORT goes on, as it decodes.
        let Ok(Request::Report(report)) = decode_request(&handoff::frames(&handoff.report)) else {
            let why = "a report handoff held no valid report";
            return self.quiet.warn(why.into());
        };
        let total = Duration::from_millis(handoff.timeout_ms).min(self.who.timeout);
        let now = Instant::now();
        self.next_first = self.next_first.wrapping_add(1);
        let servers = self.who.targets.len();
        self.flights.push(Flight {
            stream,
            request: report.encode(),
            schedule: Schedule::each_once(servers, self.next_first, total, now),
            wake: now,
            asked: Asked::default(),
            generation: self.generation,
        });
    }

    /// The first answer to each report goes to its reporter; the connection it came on
    /// is kept for the next report, the others (asked too, still silent) are closed, so
    /// that a late answer is never read as another report's.
    fn read_verdicts(&mut self, readable: &[bool]) {
        let flights = std::mem::take(&mut self.flights);
        for (k, mut flight) in flights.into_iter().enumerate() {
            let answered = (readable.get(k) == Some(&true))
                .then(|| flight.asked.answer())
                .flatten();
            let Some(reply) = answered else {
                self.flights.push(flight);
                continue;
            };
            let frames = handoff::texts(&reply.frames);
            let server = self.who.targets[reply.server].report_endpoint();
            answer(&mut flight.stream, &Handed::Verdict { frames, server });
            let i = reply.server;
            if flight.generation == self.generation && self.idle[i].len() < MAX_IDLE {
                self.idle[i].push(reply.requester);
            }
        }
    }

    /// Asks the next server of each report whose wait for the last one is up, and answers
    /// those whose time is up altogether.
    fn advance(&mut self, now: Instant) {
        let flights = std::mem::take(&mut self.flights);
        for mut flight in flights {
            loop {
                match flight.schedule.step(now) {
                    Step::Ask { server, alone } => {
                        if !self.send_to(server, &flight.request, &mut flight.asked, alone) {
                            flight.schedule.unsent(now);
                        }
                    }
                    Step::WaitUntil(at) => {
                        flight.wake = at;
                        self.flights.push(flight);
                        break;
                    }
                    Step::GiveUp => {
                        let servers: Vec<String> = self
                            .who
                            .targets
                            .iter()
                            .map(Target::report_endpoint)
                            .collect();
                        let servers = servers.join(", ");
                        answer(&mut flight.stream, &Handed::NoAnswer { servers });
                        break;
                    }
                }
            }
        }
    }

    /// Sends a request to server `i` on an idle connection, or on a new one. An idle one
    /// that cannot send is dropped: libzmq gives up on a connection the server refused,
    /// as it does while this host's key is not authorized yet. False: not sent at all.
    fn send_to(&mut self, i: usize, request: &[Vec<u8>], asked: &mut Asked, alone: bool) -> bool {
        while let Some(requester) = self.idle[i].pop() {
            if asked.send(i, requester, request, alone) {
                return true;
            }
        }
        self.requester_to(i)
            .is_some_and(|requester| asked.send(i, requester, request, alone))
    }

    /// A new connection to server `i`; None (logged) when even the socket fails.
    fn requester_to(&mut self, i: usize) -> Option<Requester> {
        let target = &self.who.targets[i];
        match request_socket(&self.ctx, zmq::DEALER, target, &self.who.own) {
            Ok(socket) => Some(Requester::new(&self.ctx, socket)),
            Err(e) => {
                self.quiet.warn(format!("report handoff: {e}"));
                None
            }
        }
    }
}

#[derive(Default)]
struct Readable {
    listener: bool,
    callers: Vec<bool>,
    flights: Vec<bool>,
}

/// What has come of a reporter's line; None until the newline.
fn read_line(caller: &mut Caller, readable: bool) -> Result<Option<Vec<u8>>, String> {
    let mut buf = [0u8; 1024];
    while readable && caller.line.len() <= MAX_LINE {
        match caller.stream.read(&mut buf) {
            // A reporter may close its side once its line is written.
            Ok(0) if caller.line.contains(&b'\n') => break,
            Ok(0) => return Err("the reporter went away".into()),
            Ok(n) => caller.line.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => return Err(e.to_string()),
        }
    }
    if caller.line.len() > MAX_LINE {
        return Err(format!("a line of over {MAX_LINE} bytes"));
    }
    Ok(caller
        .line
        .iter()
        .position(|&b| b == b'\n')
        .map(|end| caller.line[..end].to_vec()))
}

/// The reporter gets its answer; one that has gone no longer needs it.
fn answer(stream: &mut UnixStream, handed: &Handed) {
    let _ = stream.write_all(&handoff::encode(handed));
}
