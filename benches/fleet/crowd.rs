//! P17: a ban's fan-out to 1,000, 5,000 and 10,000 lightweight subscribers, beside libzmq's
//! own floor in the same run: a bare CURVE XPUB in a process of its own (this benchmark,
//! run again with `--floor`), with no server behind it, sending the same message to the
//! same subscribers. The subscribers are CURVE SUB sockets, one key each, read through
//! epoll, so that what is measured is the publisher and not the reading of 10,000 sockets
//! in turn; up to 4,000 in each process (this benchmark, run again with `--crowd`), since
//! a process here may hold 20,000 descriptors and a subscriber takes two.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::BorrowedFd;
use std::process::{Child, ChildStdin, ChildStdout, Stdio};

use banshare::wire::keys::{KeyPair, PublicKey};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

use super::*;

/// Many subscribers in one process.
pub struct Crowd {
    // Before the sockets: dropped first, while their descriptors are still open.
    epoll: Epoll,
    sockets: Vec<zmq::Socket>,
    _contexts: Vec<zmq::Context>,
}

/// Sockets per context: libzmq's default limit is 1,023, and the zmq crate cannot raise it.
const PER_CONTEXT: usize = 1000;

/// When each subscriber got a message, or how many had when the wait ended.
pub type Arrivals = Result<Vec<Instant>, usize>;

impl Crowd {
    /// A subscriber to `endpoint` for each key, all subscribed to `BANSHARE1`.
    pub fn connect(endpoint: &str, server: &PublicKey, keys: &[KeyPair]) -> Crowd {
        let contexts: Vec<zmq::Context> = (0..keys.len().div_ceil(PER_CONTEXT))
            .map(|_| zmq::Context::new())
            .collect();
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).unwrap();
        let sockets: Vec<zmq::Socket> = keys
            .iter()
            .enumerate()
            .map(|(i, own)| {
                let ctx = &contexts[i / PER_CONTEXT];
                let socket = transport::client_socket(ctx, zmq::SUB, server, own).unwrap();
                socket.set_subscribe(VERSION.as_bytes()).unwrap();
                socket.connect(endpoint).unwrap();
                socket
            })
            .collect();
        for (i, socket) in sockets.iter().enumerate() {
            let fd = socket.get_fd().unwrap();
            // SAFETY: the descriptor belongs to the socket, which outlives its registration
            // (`epoll` is dropped before `sockets`).
            #[allow(unsafe_code)]
            let fd = unsafe { BorrowedFd::borrow_raw(fd) };
            epoll
                .add(fd, EpollEvent::new(EpollFlags::EPOLLIN, i as u64))
                .unwrap();
        }
        Crowd {
            epoll,
            sockets,
            _contexts: contexts,
        }
    }

    /// Waits until every subscriber has had a message that `wanted` accepts, until
    /// `deadline`. `everyone` looks at every socket first, as the first wait must: libzmq's
    /// descriptor only signals what changes after it was last looked at.
    pub fn until_each(
        &self,
        wanted: impl Fn(&[Vec<u8>]) -> bool,
        deadline: Instant,
        everyone: bool,
    ) -> Arrivals {
        let mut got: Vec<Option<Instant>> = vec![None; self.sockets.len()];
        let mut left = self.sockets.len();
        let mut ready: Vec<usize> = if everyone {
            (0..self.sockets.len()).collect()
        } else {
            Vec::new()
        };
        let mut events = vec![EpollEvent::empty(); 1024];
        loop {
            for i in ready.drain(..) {
                left -= self.drain(i, &mut got[i], &wanted);
            }
            if left == 0 {
                return Ok(got.into_iter().flatten().collect());
            }
            if Instant::now() >= deadline {
                return Err(self.sockets.len() - left);
            }
            let n = self
                .epoll
                .wait(&mut events, EpollTimeout::from(100u16))
                .unwrap_or(0);
            ready.extend(events[..n].iter().map(|e| e.data() as usize));
        }
    }

    /// Reads everything socket `i` holds; 1 if this was the first wanted message it got.
    fn drain(
        &self,
        i: usize,
        got: &mut Option<Instant>,
        wanted: &impl Fn(&[Vec<u8>]) -> bool,
    ) -> usize {
        let socket = &self.sockets[i];
        let was = got.is_some();
        while socket.get_events().is_ok_and(|e| e.contains(zmq::POLLIN)) {
            while let Ok(frames) = socket.recv_multipart(zmq::DONTWAIT) {
                if got.is_none() && wanted(&frames) {
                    *got = Some(Instant::now());
                }
            }
        }
        usize::from(!was && got.is_some())
    }
}

impl Crowd {
    pub fn len(&self) -> usize {
        self.sockets.len()
    }
}

/// Whether `frames` are a BAN of `ip`.
pub fn ban_of(ip: &str) -> impl Fn(&[Vec<u8>]) -> bool + '_ {
    move |frames| frames.len() > 4 && frames[1] == b"BAN" && frames[4] == ip.as_bytes()
}

/// Up to this many subscribers in each process of `Crowds`.
const PER_PROCESS: usize = 4000;

/// Subscribers spread over processes of their own, each a `Crowd` run by `crowd_main`.
pub struct Crowds(Vec<Helper>);

/// A child process, told what to do on its standard input, answering a line on its output.
struct Helper {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
}

impl Helper {
    fn start(args: &[&str]) -> Helper {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let input = child.stdin.take().unwrap();
        let output = BufReader::new(child.stdout.take().unwrap());
        Helper {
            child,
            input,
            output,
        }
    }

    fn tell(&mut self, line: &str) {
        writeln!(self.input, "{line}").unwrap();
    }

    fn answer(&mut self) -> String {
        let mut line = String::new();
        self.output.read_line(&mut line).unwrap();
        line.trim().to_owned()
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Nanoseconds of the real-time clock, which every process here reads alike.
fn now_ns() -> u128 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.unwrap().as_nanos()
}

impl Crowds {
    /// A subscriber to `endpoint` for each secret key file, listed in files in `dir`.
    pub fn connect(endpoint: &str, server: &PublicKey, secrets: &[PathBuf], dir: &Path) -> Crowds {
        let helpers = secrets.chunks(PER_PROCESS).enumerate().map(|(c, chunk)| {
            let list = dir.join(format!("crowd{c}"));
            let paths: Vec<&str> = chunk.iter().map(|p| p.to_str().unwrap()).collect();
            fs::write(&list, paths.join("\n")).unwrap();
            let list = list.to_str().unwrap();
            Helper::start(&["--crowd", endpoint, &server.z85(), list])
        });
        Crowds(helpers.collect())
    }

    /// Waits until every subscriber has had a message.
    pub fn wait_connected(&mut self) {
        for helper in &mut self.0 {
            helper.tell("connected");
        }
        for helper in &mut self.0 {
            let answer = helper.answer();
            assert_eq!(answer, "ok", "connecting: {answer}");
        }
    }

    /// Each subscriber is to wait for the BAN of `ip`, which is about to be sent.
    fn expect(&mut self, ip: &str) {
        for helper in &mut self.0 {
            helper.tell(&format!("ban {ip}"));
        }
    }

    /// When the last subscriber got the BAN expected, in `now_ns`.
    fn latest(&mut self) -> u128 {
        let answers = self.0.iter_mut().map(|helper| {
            let answer = helper.answer();
            let at = answer.strip_prefix("at ").map(str::parse::<u128>);
            at.unwrap_or_else(|| panic!("lost: {answer}")).unwrap()
        });
        answers.max().unwrap()
    }
}

/// A `Crowds` process: `--crowd ENDPOINT SERVER-KEY LIST`, where LIST names a secret key
/// file on each line.
pub fn crowd_main(endpoint: &str, server: &str, list: &Path) {
    let text = fs::read_to_string(list).unwrap();
    let load = |path: &str| banshare::wire::keys::load_secret(Path::new(path)).unwrap();
    let keys: Vec<KeyPair> = text.lines().map(load).collect();
    let server = PublicKey::from_z85(server).unwrap();
    let crowd = Crowd::connect(endpoint, &server, &keys);
    let mut out = std::io::stdout();
    let mut everyone = true;
    for line in std::io::stdin().lock().lines() {
        let line = line.unwrap();
        let arrivals = match line.split_once(' ') {
            None if line == "connected" => {
                let arrivals = crowd.until_each(|_| true, Instant::now() + CONNECT_WITHIN, true);
                everyone = false;
                arrivals
            }
            Some(("ban", ip)) => {
                crowd.until_each(ban_of(ip), Instant::now() + LOST_AFTER, everyone)
            }
            _ => return,
        };
        // The latest arrival, on the clock every process reads alike.
        let answer = match arrivals {
            Ok(_) if line == "connected" => "ok".to_owned(),
            Ok(at) => {
                let ago = at.iter().max().map_or(Duration::ZERO, Instant::elapsed);
                format!("at {}", now_ns() - ago.as_nanos())
            }
            Err(n) => format!("{n} of {}", crowd.len()),
        };
        writeln!(out, "{answer}").unwrap();
    }
}

/// libzmq's floor: the benchmark, run again as `--floor SECRET-KEY-FILE IO-THREADS`, binds
/// a CURVE XPUB on loopback with no ZAP handler and sends what it is told.
pub struct Floor {
    helper: Helper,
    pub port: u16,
}

impl Floor {
    pub fn start(secret: &Path, io_threads: i32) -> Floor {
        let secret = secret.to_str().unwrap();
        let mut helper = Helper::start(&["--floor", secret, &io_threads.to_string()]);
        let port = helper.answer().parse().unwrap();
        Floor { helper, port }
    }

    /// Waits until `count` subscribers have subscribed.
    pub fn wait_subscribed(&mut self, count: usize) {
        self.helper.tell(&format!("wait {count}"));
        assert_eq!(self.helper.answer(), "ready");
    }

    /// Sends one message, given as its frames.
    pub fn send(&mut self, frames: &[Vec<u8>]) {
        let hex: Vec<String> = frames.iter().map(|f| hex(f)).collect();
        self.helper.tell(&format!("send {}", hex.join(" ")));
    }

    pub fn pid(&self) -> u32 {
        self.helper.child.id()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// The floor's process: see `Floor`.
pub fn floor_main(secret: &Path, io_threads: i32) {
    let key = banshare::wire::keys::load_secret(secret).unwrap();
    let ctx = zmq::Context::new();
    ctx.set_io_threads(io_threads).unwrap();
    let socket = ctx.socket(zmq::XPUB).unwrap();
    socket.set_curve_server(true).unwrap();
    socket.set_curve_secretkey(key.secret_bytes()).unwrap();
    socket.set_sndhwm(10_000).unwrap();
    socket.set_backlog(4096).unwrap();
    // Every subscription comes up, not only the first of each topic, to count them.
    socket.set_xpub_verbose(true).unwrap();
    socket.bind("tcp://127.0.0.1:0").unwrap();
    let endpoint = socket.get_last_endpoint().unwrap().unwrap();
    let port = endpoint.rsplit(':').next().unwrap();
    let mut out = std::io::stdout();
    writeln!(out, "{port}").unwrap();
    let mut subscribed = 0;
    for line in std::io::stdin().lock().lines() {
        let line = line.unwrap();
        let mut words = line.split(' ');
        match words.next() {
            Some("wait") => {
                let count: usize = words.next().unwrap().parse().unwrap();
                while subscribed < count {
                    let frame = socket.recv_bytes(0).unwrap();
                    subscribed += usize::from(frame.first() == Some(&1));
                }
                writeln!(out, "ready").unwrap();
            }
            Some("send") => {
                let frames: Vec<Vec<u8>> = words.map(unhex).collect();
                socket.send_multipart(frames, 0).unwrap();
            }
            _ => return,
        }
    }
}

/// One CURVE connection that reports, as the handoff would, and waits for the verdict.
pub struct Reporter {
    socket: zmq::Socket,
    _ctx: zmq::Context,
}

impl Reporter {
    pub fn connect(fleet: &Fleet) -> Reporter {
        let ctx = zmq::Context::new();
        let key = fleet.host_key(&fleet.hosts[0].name);
        let socket =
            transport::client_socket(&ctx, zmq::DEALER, &fleet.server_key(), &key).unwrap();
        socket
            .connect(&format!("tcp://127.0.0.1:{}", fleet.report_port))
            .unwrap();
        Reporter { socket, _ctx: ctx }
    }

    pub fn report(&self, ip: &str) {
        let report = Report::parse("bench", "bench", ip, "").unwrap();
        let frames = std::iter::once(Vec::new()).chain(report.encode());
        self.socket.send_multipart(frames, 0).unwrap();
        assert!(
            self.socket
                .poll(zmq::POLLIN, LOST_AFTER.as_millis() as i64)
                .unwrap()
                > 0,
            "no verdict for {ip}"
        );
        let frames = self.socket.recv_multipart(0).unwrap();
        assert!(
            matches!(Verdict::decode(&frames[1..]), Ok(Verdict::Accepted)),
            "{ip} not accepted"
        );
    }
}

/// What one size measured, for one publisher.
struct Spread {
    /// From connecting until every subscriber had its first message.
    connected: Duration,
    /// From the report (or the send) to the last subscriber, per round.
    last: Vec<Duration>,
    /// The publisher's CPU per ban, divided by the subscribers, in µs.
    cpu_us: f64,
}

/// How long every subscriber may take to connect, and a ban to reach them all.
const CONNECT_WITHIN: Duration = Duration::from_secs(180);

pub fn fan_out_to_crowds(results: &mut Results, counts: &[usize], rounds: usize) {
    for &count in counts {
        // The server and the floor hold one per subscriber; each crowd process two per
        // subscriber of its share.
        let needed = count.max(2 * PER_PROCESS) as u64 + 2048;
        if !raise_file_limit(needed) {
            results.skip(&format!(
                "P17 with {count} subscribers needs more file descriptors (run as root)"
            ));
            continue;
        }
        let mut ips = addresses_in(45, 900_000 + 1000 * count, 2 * rounds + 2).into_iter();
        let mut fleet = Fleet::new(&["h0"], "", "");
        let dir = tempfile::tempdir().unwrap();
        let secrets = authorize_files(&fleet, count, "c", dir.path());
        fleet.start_server();
        let (banshare, template) = banshare_rounds(&fleet, &secrets, &mut ips, rounds);
        let secret = fleet.keys_dir.join("server.key_secret");
        let floor = floor_rounds(&secret, &secrets, &template, &mut ips, rounds);
        drop(fleet);
        record(results, count, &banshare, &floor);
    }
}

/// Connects `keys` to `fleet`'s server, then reports `rounds` bans (and one to warm up);
/// returns what it measured and the frames of the first BAN, the floor's template.
fn banshare_rounds(
    fleet: &Fleet,
    secrets: &[PathBuf],
    ips: &mut impl Iterator<Item = String>,
    rounds: usize,
) -> (Spread, Vec<Vec<u8>>) {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let endpoint = format!("tcp://127.0.0.1:{}", fleet.publish_port);
    let mut crowds = Crowds::connect(&endpoint, &fleet.server_key(), secrets, dir.path());
    crowds.wait_connected();
    let connected = started.elapsed();
    let reporter = Reporter::connect(fleet);
    // The first round only warms every connection up; one more subscriber keeps a BAN as
    // it was sent, for the floor.
    let own = banshare::wire::keys::load_secret(&secrets[0]).unwrap();
    let one = Crowd::connect(&endpoint, &fleet.server_key(), &[own]);
    assert!(one
        .until_each(|_| true, Instant::now() + LOST_AFTER, true)
        .is_ok());
    let first = ips.next().unwrap();
    let template = std::cell::RefCell::new(Vec::new());
    let keep = |frames: &[Vec<u8>]| {
        let wanted = ban_of(&first)(frames);
        if wanted {
            *template.borrow_mut() = frames.to_vec();
        }
        wanted
    };
    crowds.expect(&first);
    reporter.report(&first);
    crowds.latest();
    assert!(one
        .until_each(keep, Instant::now() + LOST_AFTER, false)
        .is_ok());
    drop(one);
    let server = fleet.server_pid() as u32;
    let spread = rounds_of(&mut crowds, secrets.len(), server, ips.take(rounds), |ip| {
        reporter.report(ip);
    });
    let spread = Spread {
        connected,
        ..spread
    };
    (spread, template.into_inner())
}

/// Each address once: `send` it, then wait until every subscriber has its BAN. What the
/// publisher `pid` spent meanwhile, per ban and subscriber.
fn rounds_of(
    crowds: &mut Crowds,
    subscribers: usize,
    pid: u32,
    ips: impl Iterator<Item = String>,
    mut send: impl FnMut(&str),
) -> Spread {
    let cpu_before = cpu_seconds(pid);
    let mut last = Vec::new();
    for ip in ips {
        crowds.expect(&ip);
        let started = now_ns();
        send(&ip);
        let latest = crowds.latest();
        last.push(Duration::from_nanos(
            (latest.saturating_sub(started)) as u64,
        ));
    }
    let bans = last.len() as f64;
    Spread {
        connected: Duration::ZERO,
        cpu_us: (cpu_seconds(pid) - cpu_before) / bans / subscribers as f64 * 1e6,
        last,
    }
}

/// The floor: the same subscribers, the same message with its address and seq changed.
fn floor_rounds(
    secret: &Path,
    secrets: &[PathBuf],
    template: &[Vec<u8>],
    ips: &mut impl Iterator<Item = String>,
    rounds: usize,
) -> Spread {
    let mut floor = Floor::start(secret, io_threads());
    let server = banshare::wire::keys::load_secret(secret).unwrap().public;
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let endpoint = format!("tcp://127.0.0.1:{}", floor.port);
    let mut crowds = Crowds::connect(&endpoint, &server, secrets, dir.path());
    floor.wait_subscribed(secrets.len());
    let connected = started.elapsed();
    let pid = floor.pid();
    let mut seq = 0u64;
    let count = secrets.len();
    let spread = rounds_of(&mut crowds, count, pid, ips.take(rounds + 1), |ip| {
        seq += 1;
        let mut frames = template.to_vec();
        frames[3] = seq.to_string().into_bytes();
        frames[4] = ip.as_bytes().to_vec();
        floor.send(&frames);
    });
    // Its first round warmed up, as banshare's did.
    Spread {
        connected,
        last: spread.last[1..].to_vec(),
        ..spread
    }
}

/// The floor's I/O threads: as many as banshare-server takes on this machine.
fn io_threads() -> i32 {
    banshare::sockets::transport::io_threads()
}

fn record(results: &mut Results, count: usize, banshare: &Spread, floor: &Spread) {
    results.latency(
        &format!("p17_banshare_{count}"),
        format!("P17 report to the last of {count} subscribers, banshare-server"),
        &banshare.last,
        if count == 10_000 {
            "p99 ≤ 1.5 × floor"
        } else {
            ""
        },
    );
    results.latency(
        &format!("p17_floor_{count}"),
        format!("P17 send to the last of {count} subscribers, bare libzmq CURVE XPUB"),
        &floor.last,
        "",
    );
    let (_, banshare_p99, _) = percentiles(&banshare.last);
    let (_, floor_p99, _) = percentiles(&floor.last);
    results.add(
        &format!("p17_ratio_{count}"),
        format!("P17 {count} subscribers: banshare against the floor"),
        format!(
            "p99 {:.2} times; connecting all: {:.1} s against {:.1} s; CPU per ban and \
             subscriber: {:.1} µs against {:.1} µs",
            banshare_p99 / floor_p99,
            banshare.connected.as_secs_f64(),
            floor.connected.as_secs_f64(),
            banshare.cpu_us,
            floor.cpu_us
        ),
        if count == 10_000 { "≤ 1.5" } else { "" },
        json!({"p99_ratio": banshare_p99 / floor_p99,
               "connect_s": banshare.connected.as_secs_f64(),
               "floor_connect_s": floor.connected.as_secs_f64(),
               "cpu_us": banshare.cpu_us, "floor_cpu_us": floor.cpu_us}),
    );
}
