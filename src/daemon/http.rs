//! The HTTP server of the metrics endpoint (`daemon::metrics`), bounded by construction:
//! one thread, a fixed number of connections, a cap on each request head and a deadline on
//! each connection, whatever connects to it.
//!
//! The endpoint is open to every local user (and, with `metrics-allow-remote`, to the
//! network), so nothing a peer does may cost the daemon more than these bounds: tiny_http,
//! which served it before, started a thread per connection and read a header line without
//! end, and a local user could take the daemon's memory, threads or descriptors. No
//! maintained synchronous HTTP server crate bounds connections, head size, time and threads
//! together, and hyper, which could, needs an async runtime the daemons do not have. Serving
//! one GET takes little, so the loop is written here, small, and the head is parsed by
//! httparse, hyper's parser: parsing HTTP by hand is where servers go wrong.
//!
//! The bounds:
//! - `SLOTS` connections at once. When all are taken and another comes, it is accepted and
//!   the oldest is closed, so that a flood of idle connections can delay a scraper but not
//!   lock it out. A scraper sends its request with its connection, and a new connection is
//!   read at once, so a scraper is usually answered in the pass that accepts it.
//! - `HEAD_MAX` bytes of request head; beyond, a 431 and the connection is closed.
//! - `DEADLINE` from the accept for the head to come and the answer to be written (without
//!   blocking, the rest kept for when the socket can take it); then the connection is closed.
//! - Accept errors never end the loop: out of descriptors or memory, it stops accepting for
//!   `PAUSE` (the next accept would fail the same way) and carries on.
//!
//! poll(2) drives the non-blocking sockets: with at most `SLOTS` + 1 of them, it is as fast
//! as epoll and needs no state of its own in the kernel.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{listen, Backlog};

use crate::logging::Quiet;

/// Connections served at once.
pub const SLOTS: usize = 16;
/// The longest request head read: a scraper's is a few hundred bytes.
pub const HEAD_MAX: usize = 8 << 10;
/// How long a connection may take, from its accept, to send its head and read the answer.
pub const DEADLINE: Duration = Duration::from_secs(5);
/// Connections the kernel keeps waiting for their accept.
const BACKLOG: i32 = 1024;
/// How long accepting stops after an error such as "Too many open files".
const PAUSE: Duration = Duration::from_millis(250);
/// The most headers a head may have: a scraper sends about five.
const MAX_HEADERS: usize = 32;

/// A request head, as the answering function sees it.
pub struct Request<'a> {
    pub method: &'a str,
    /// The request target, with its query if any.
    pub target: &'a str,
    headers: &'a [httparse::Header<'a>],
}

impl Request<'_> {
    /// The target before any `?`.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }

    /// The values of each header called `name`, whatever its case.
    pub fn headers<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s [u8]> + 's {
        self.headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }
}

/// An answer; every one closes its connection.
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Response {
    /// A short plain-text answer, such as a 404.
    pub fn text(status: u16, body: &str) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.as_bytes().to_vec(),
        }
    }

    fn encode(&self) -> Vec<u8> {
        let head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len()
        );
        [head.as_bytes(), &self.body].concat()
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        _ => "",
    }
}

/// The endpoint's server: its listener and the connections it serves, oldest first.
pub struct Server<A> {
    listener: TcpListener,
    connections: VecDeque<Connection>,
    answer: A,
    /// Until when accepting stops, after an error.
    paused_until: Option<Instant>,
    quiet: Quiet,
}

impl<A: FnMut(&Request) -> Response> Server<A> {
    /// Serves `listener`, answering each complete head with `answer`.
    pub fn new(listener: TcpListener, answer: A) -> std::io::Result<Server<A>> {
        listener.set_nonblocking(true)?;
        // Linux takes a new backlog on a listening socket: BACKLOG connections wait for
        // their accept rather than the standard library's 128, beyond which the kernel
        // drops a scraper's SYN and it tries again only a second later.
        listen(&listener, Backlog::new(BACKLOG)?)?;
        Ok(Server {
            listener,
            connections: VecDeque::with_capacity(SLOTS + 1),
            answer,
            paused_until: None,
            quiet: Quiet::default(),
        })
    }

    /// Serves until the process ends: no error ends the loop.
    pub fn run(mut self) -> ! {
        loop {
            self.turn();
        }
    }

    /// One pass: waits for a socket or a deadline, then reads, writes and accepts what it can.
    fn turn(&mut self) {
        let now = Instant::now();
        self.connections.retain(|c| c.deadline > now);
        let accepting = self.paused_until.is_none_or(|until| now >= until);
        if accepting {
            self.paused_until = None;
        }
        let Some((incoming, ready)) = self.wait(accepting, now) else {
            return;
        };
        // Before accepting, which may close the oldest connection and shift the rest.
        let mut k = 0;
        self.connections.retain_mut(|connection| {
            let open = !ready[k] || connection.advance(&mut self.answer) == Progress::Open;
            k += 1;
            open
        });
        if incoming {
            self.accept();
        }
    }

    /// Polls the listener (when `accepting`) and every connection until one is ready or the
    /// soonest deadline: whether the listener is ready, and each connection.
    fn wait(&mut self, accepting: bool, now: Instant) -> Option<(bool, Vec<bool>)> {
        let mut fds: Vec<PollFd> = Vec::with_capacity(SLOTS + 1);
        if accepting {
            fds.push(PollFd::new(self.listener.as_fd(), PollFlags::POLLIN));
        }
        for connection in &self.connections {
            fds.push(PollFd::new(
                connection.stream.as_fd(),
                connection.interest(),
            ));
        }
        let soonest = self.connections.iter().map(|c| c.deadline);
        let timeout = match soonest.chain(self.paused_until).min() {
            // A millisecond more, so that the deadline has passed when poll returns.
            Some(at) => {
                PollTimeout::try_from(at.saturating_duration_since(now) + Duration::from_millis(1))
                    .unwrap_or(PollTimeout::MAX)
            }
            None => PollTimeout::NONE,
        };
        match nix::poll::poll(&mut fds, timeout) {
            Ok(_) => {}
            Err(Errno::EINTR) => return None,
            // ENOMEM: the kernel's table of descriptors to poll. Try again later.
            Err(e) => {
                self.quiet.warn(format!("metrics endpoint: poll: {e}"));
                std::thread::sleep(PAUSE);
                return None;
            }
        }
        let mut ready = fds.iter().map(|fd| fd.any().unwrap_or(false));
        let listener = accepting && ready.next().unwrap_or(false);
        Some((listener, ready.collect()))
    }

    /// Accepts what waits, at most `SLOTS` connections a pass: so the loop cannot be held
    /// in accept, and a connection is always read once more after the pass that accepted
    /// it before `SLOTS` newer ones can push it out.
    fn accept(&mut self) {
        for _ in 0..SLOTS {
            match self.listener.accept() {
                Ok((stream, _)) => self.admit(stream),
                Err(e) => match Errno::from_raw(e.raw_os_error().unwrap_or(0)) {
                    Errno::EAGAIN => return,
                    // The peer gave up, or a signal came: the next one may be fine.
                    Errno::ECONNABORTED | Errno::EINTR => {}
                    // EMFILE, ENFILE, ENOBUFS, ENOMEM, or anything else: the next accept
                    // would fail too, and the listener stays readable. Stop for a while.
                    _ => {
                        self.quiet.warn(format!(
                            "metrics endpoint: cannot accept a connection ({e}); trying again \
                             in {} ms",
                            PAUSE.as_millis()
                        ));
                        self.paused_until = Some(Instant::now() + PAUSE);
                        return;
                    }
                },
            }
        }
    }

    /// A new connection: read at once, as a scraper's request comes with it; kept if not
    /// answered yet, in place of the oldest when every slot is taken.
    fn admit(&mut self, stream: TcpStream) {
        if stream.set_nonblocking(true).is_err() {
            return;
        }
        let mut connection = Connection {
            stream,
            deadline: Instant::now() + DEADLINE,
            state: State::Reading(Vec::new()),
        };
        if connection.advance(&mut self.answer) == Progress::Done {
            return;
        }
        if self.connections.len() >= SLOTS {
            self.connections.pop_front();
        }
        self.connections.push_back(connection);
    }
}

struct Connection {
    stream: TcpStream,
    deadline: Instant,
    state: State,
}

enum State {
    /// The head so far.
    Reading(Vec<u8>),
    /// The answer, and how much of it is written.
    Writing(Vec<u8>, usize),
}

#[derive(PartialEq, Debug)]
enum Progress {
    Open,
    /// Answered, closed by the peer, or broken: to be closed.
    Done,
}

impl Connection {
    fn interest(&self) -> PollFlags {
        match self.state {
            State::Reading(_) => PollFlags::POLLIN,
            State::Writing(..) => PollFlags::POLLOUT,
        }
    }

    /// Reads and writes what the socket takes now, without blocking.
    fn advance(&mut self, answer: &mut impl FnMut(&Request) -> Response) -> Progress {
        if let State::Reading(head) = &mut self.state {
            match read_head(&mut self.stream, head, answer) {
                Head::More => return Progress::Open,
                Head::Gone => return Progress::Done,
                Head::Answered(response) => self.state = State::Writing(response.encode(), 0),
            }
        }
        let State::Writing(out, written) = &mut self.state else {
            return Progress::Open;
        };
        while *written < out.len() {
            match self.stream.write(&out[*written..]) {
                Ok(n) => *written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Progress::Open,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Progress::Done,
            }
        }
        Progress::Done
    }
}

/// What reading a head came to.
enum Head {
    /// Nothing more to read now.
    More,
    /// The head is complete, or too long.
    Answered(Response),
    /// The peer has closed, or the socket failed.
    Gone,
}

/// Reads what `stream` has into `head`, and answers it once it is complete.
fn read_head(
    stream: &mut TcpStream,
    head: &mut Vec<u8>,
    answer: &mut impl FnMut(&Request) -> Response,
) -> Head {
    loop {
        let from = head.len();
        // Never more than HEAD_MAX in all: what is read is capped, not only what is kept.
        head.resize(HEAD_MAX, 0);
        let read = stream.read(&mut head[from..]);
        head.truncate(from + read.as_ref().map_or(0, |n| *n));
        match read {
            Ok(0) => return Head::Gone,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Head::More,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return Head::Gone,
        }
        if let Some(response) = respond(head, from, answer) {
            return Head::Answered(response);
        }
    }
}

/// The answer to `head`, of which bytes from `from` on are new: None while it is
/// incomplete and may still end within `HEAD_MAX`.
fn respond(
    head: &[u8],
    from: usize,
    answer: &mut impl FnMut(&Request) -> Response,
) -> Option<Response> {
    if ends_head(head, from) {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut headers);
        match parsed.parse(head) {
            Ok(httparse::Status::Complete(_)) => {
                let request = Request {
                    method: parsed.method.unwrap_or_default(),
                    target: parsed.path.unwrap_or_default(),
                    headers: parsed.headers,
                };
                return Some(answer(&request));
            }
            Ok(httparse::Status::Partial) => {}
            Err(httparse::Error::TooManyHeaders) => {
                return Some(Response::text(431, "too many headers\n"));
            }
            Err(e) => {
                log::debug!("metrics endpoint: a bad request: {e}");
                return Some(Response::text(400, "bad request\n"));
            }
        }
    }
    (head.len() >= HEAD_MAX).then(|| {
        log::debug!("metrics endpoint: a request head beyond {HEAD_MAX} bytes");
        Response::text(431, "request head too large\n")
    })
}

/// The status the endpoint answers a head with that arrives in `reads`, one read after
/// another, each kept only within HEAD_MAX in all as the loop keeps it; None while it waits
/// for more. For the fuzzer (fuzz/fuzz_targets/http_head.rs), which feeds it any bytes.
pub fn status_after(reads: &[&[u8]]) -> Option<u16> {
    let mut head = Vec::new();
    let mut ok = |_: &Request| Response::text(200, "");
    for read in reads {
        let from = head.len();
        let room = HEAD_MAX - from;
        head.extend_from_slice(&read[..read.len().min(room)]);
        if let Some(response) = respond(&head, from, &mut ok) {
            return Some(response.status);
        }
    }
    None
}

/// Whether a blank line, which ends a head, is in `head` from byte `from` on (counting the
/// two bytes before, where it may have begun). The head is parsed only then: parsing it
/// after every read would cost a head sent a byte at a time HEAD_MAX² steps.
fn ends_head(head: &[u8], from: usize) -> bool {
    let new = &head[from.saturating_sub(2)..];
    new.windows(2).any(|w| w == b"\n\n") || new.windows(3).any(|w| w == b"\n\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Says what it was asked.
    fn answer(request: &Request) -> Response {
        let accept: Vec<_> = request
            .headers("accept")
            .map(String::from_utf8_lossy)
            .collect();
        let body = format!("{} {} {accept:?}", request.method, request.path());
        Response::text(200, &body)
    }

    fn respond_to(head: &[u8]) -> Option<(u16, String)> {
        let response = respond(head, 0, &mut answer)?;
        Some((response.status, String::from_utf8(response.body).unwrap()))
    }

    #[test]
    fn a_complete_head_is_answered_with_its_path_and_headers() {
        let head = b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nACCEPT: text/plain\r\n\r\n";
        assert_eq!(
            respond_to(head),
            Some((200, "GET /metrics [\"text/plain\"]".into()))
        );
        // Bare line feeds end a head too.
        assert_eq!(respond_to(b"GET / HTTP/1.0\n\n").unwrap().0, 200);
    }

    #[test]
    fn an_incomplete_head_waits_until_it_is_too_long() {
        assert_eq!(respond_to(b"GET /metrics HTTP/1.1\r\nHost: a\r\n"), None);
        let mut endless = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        endless.resize(HEAD_MAX, b'A');
        assert_eq!(respond_to(&endless).unwrap().0, 431);
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X{i}: y\r\n")).collect();
        let head = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(respond_to(head.as_bytes()).unwrap().0, 431);
        assert_eq!(respond_to(b"\x00\x01 nonsense\r\n\r\n").unwrap().0, 400);
    }

    #[test]
    fn the_end_of_a_head_is_found_across_reads() {
        let head = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        for from in 0..head.len() {
            assert!(ends_head(head, from), "{from}");
        }
        assert!(!ends_head(b"GET / HTTP/1.1\r\nHost: a\r\n\r", 0));
    }

    #[test]
    fn an_answer_says_its_length_and_closes() {
        let encoded = Response::text(404, "see /metrics\n").encode();
        assert_eq!(
            String::from_utf8(encoded).unwrap(),
            "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Length: 13\r\nConnection: close\r\n\r\nsee /metrics\n"
        );
    }

    /// A server that says what it was asked.
    type Echo = Server<fn(&Request) -> Response>;

    fn server() -> (Echo, u16) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        (Server::new(listener, answer as _).unwrap(), port)
    }

    /// Turns the server until `done`, for at most a second.
    fn turn_until<A: FnMut(&Request) -> Response>(
        server: &mut Server<A>,
        mut done: impl FnMut(&Server<A>) -> bool,
    ) {
        let until = Instant::now() + Duration::from_secs(1);
        while !done(server) {
            assert!(Instant::now() < until, "timed out");
            server.turn();
        }
    }

    fn read_all(stream: &mut TcpStream) -> String {
        stream
            .set_read_timeout(Some(Duration::from_secs(1)))
            .unwrap();
        let mut text = String::new();
        let _ = stream.read_to_string(&mut text);
        text
    }

    #[test]
    fn a_scraper_is_answered_in_the_pass_that_accepts_it() {
        let (mut server, port) = server();
        let mut scraper = TcpStream::connect(("127.0.0.1", port)).unwrap();
        scraper.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
        // Once the request is there, one pass accepts, reads and answers it.
        std::thread::sleep(Duration::from_millis(50));
        server.turn();
        assert!(server.connections.is_empty());
        let answer = read_all(&mut scraper);
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.ends_with("GET /metrics []"), "{answer}");
    }

    #[test]
    fn a_new_connection_closes_the_oldest_when_every_slot_is_taken() {
        let (mut server, port) = server();
        let mut idle: Vec<TcpStream> = (0..SLOTS)
            .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
            .collect();
        turn_until(&mut server, |s| s.connections.len() == SLOTS);
        let mut scraper = TcpStream::connect(("127.0.0.1", port)).unwrap();
        // The scraper takes the oldest's slot.
        let scraper_address = scraper.local_addr().unwrap();
        turn_until(&mut server, |s| {
            let newest = s.connections.back().map(|c| c.stream.peer_addr().unwrap());
            newest == Some(scraper_address)
        });
        assert_eq!(server.connections.len(), SLOTS);
        assert_eq!(read_all(&mut idle[0]), "", "the oldest is closed");
        scraper.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
        turn_until(&mut server, |s| s.connections.len() == SLOTS - 1);
        assert!(read_all(&mut scraper).starts_with("HTTP/1.1 200 OK\r\n"));
        // The others are still served.
        idle[1].write_all(b"GET /x HTTP/1.1\r\n\r\n").unwrap();
        turn_until(&mut server, |s| s.connections.len() == SLOTS - 2);
        assert!(read_all(&mut idle[1]).ends_with("GET /x []"));
    }

    #[test]
    fn an_endless_head_is_answered_431_after_head_max_bytes() {
        let (mut server, port) = server();
        let mut peer = TcpStream::connect(("127.0.0.1", port)).unwrap();
        peer.write_all(b"GET /metrics HTTP/1.1\r\nX: ").unwrap();
        peer.write_all(&[b'A'; HEAD_MAX]).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        server.turn();
        assert!(server.connections.is_empty());
        assert!(read_all(&mut peer).starts_with("HTTP/1.1 431 "));
    }
}
