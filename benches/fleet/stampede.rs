//! P18: a server with 100,000 bans and 10,000 hosts restarts. The hosts are lightweight: in
//! this process, each a subscriber and a snapshot socket with its own key, run by the
//! client's own `wire::follow::Follower`, which decides when a host catches up and from
//! which page, as banshare-client does. Measured: the time from the server's start until
//! every host is current again, the server's peak memory, and the latency of reports made
//! meanwhile.

use std::os::fd::BorrowedFd;

use banshare::wire::follow::{Due, Follower, Next};
use banshare::wire::keys::KeyPair;
use banshare::wire::protocol::{encode_snapshot_request, SnapshotPage};
use banshare::wire::topic::Topic;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::signal::Signal;

use common::servers::status;

use super::*;

/// Sockets per context: libzmq's default limit is 1,023, and the zmq crate cannot raise it.
const PER_CONTEXT: usize = 500;

/// Many hosts in one process, each following the server as banshare-client does.
struct Hosts {
    // Before the sockets: dropped first, while their descriptors are still open.
    epoll: Epoll,
    subscribers: Vec<zmq::Socket>,
    requesters: Vec<zmq::Socket>,
    followers: Vec<Follower>,
    /// Whether each host heard the server since `forget_heard`.
    heard: Vec<bool>,
    pages: usize,
    _contexts: Vec<zmq::Context>,
}

impl Hosts {
    fn connect(fleet: &Fleet, keys: &[KeyPair]) -> Hosts {
        let contexts: Vec<zmq::Context> = (0..keys.len().div_ceil(PER_CONTEXT))
            .map(|_| zmq::Context::new())
            .collect();
        let server = fleet.server_key();
        let publish = format!("tcp://127.0.0.1:{}", fleet.publish_port);
        let report = format!("tcp://127.0.0.1:{}", fleet.report_port);
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).unwrap();
        let (mut subscribers, mut requesters) = (Vec::new(), Vec::new());
        for (i, own) in keys.iter().enumerate() {
            let ctx = &contexts[i / PER_CONTEXT];
            let sub = transport::client_socket(ctx, zmq::SUB, &server, own).unwrap();
            sub.set_subscribe(VERSION.as_bytes()).unwrap();
            transport::spread_reconnects(&sub).unwrap();
            sub.connect(&publish).unwrap();
            let dealer = transport::client_socket(ctx, zmq::DEALER, &server, own).unwrap();
            transport::spread_reconnects(&dealer).unwrap();
            dealer.connect(&report).unwrap();
            for (kind, socket) in [(0, &sub), (1, &dealer)] {
                // SAFETY: the descriptor belongs to the socket, which outlives its
                // registration (`epoll` is dropped before the sockets).
                #[allow(unsafe_code)]
                let fd = unsafe { BorrowedFd::borrow_raw(socket.get_fd().unwrap()) };
                let data = (2 * i + kind) as u64;
                epoll
                    .add(fd, EpollEvent::new(EpollFlags::EPOLLIN, data))
                    .unwrap();
            }
            subscribers.push(sub);
            requesters.push(dealer);
        }
        let now = Instant::now();
        Hosts {
            epoll,
            subscribers,
            requesters,
            followers: (0..keys.len()).map(|_| Follower::new(now)).collect(),
            heard: vec![false; keys.len()],
            pages: 0,
            _contexts: contexts,
        }
    }

    /// Runs every host until each is current at the server's position `(epoch, seq)`, or
    /// until `deadline`; how many are.
    fn run_until_current(&mut self, position: impl Fn() -> (u64, u64), deadline: Instant) -> usize {
        let mut events = vec![EpollEvent::empty(); 4096];
        let mut ready: Vec<usize> = (0..2 * self.followers.len()).collect();
        let mut next_tick = Instant::now();
        let mut next_check = Instant::now();
        loop {
            for data in ready.drain(..) {
                self.drain(data);
            }
            let now = Instant::now();
            if now >= next_tick {
                self.tick(now);
                next_tick = now + Duration::from_millis(100);
            }
            if now >= next_check {
                let (epoch, seq) = position();
                let current = self.count_current(epoch, seq);
                if current == self.followers.len() || now >= deadline {
                    return current;
                }
                next_check = now + Duration::from_millis(250);
            }
            let n = self
                .epoll
                .wait(&mut events, EpollTimeout::from(20u16))
                .unwrap_or(0);
            ready.extend(events[..n].iter().map(|e| e.data() as usize));
        }
    }

    /// Hosts that heard the server, and stand at `(epoch, seq)` or later with everything
    /// taken in.
    fn count_current(&self, epoch: u64, seq: u64) -> usize {
        let current = |(follower, heard): (&Follower, &bool)| {
            let here = follower
                .position()
                .is_some_and(|(e, s)| e == epoch && s >= seq);
            *heard && here && follower.lag() == 0
        };
        self.followers
            .iter()
            .zip(&self.heard)
            .filter(|&h| current(h))
            .count()
    }

    /// What the client's loop does on its timer: silences, and the pages due.
    fn tick(&mut self, now: Instant) {
        for (i, follower) in self.followers.iter_mut().enumerate() {
            let _ = follower.silence(now);
            let after = match follower.due(now) {
                Some(Due::Start) => None,
                Some(Due::Again(after)) => after,
                None => continue,
            };
            let request =
                std::iter::once(Vec::new()).chain(encode_snapshot_request(after.as_ref(), None));
            let _ = self.requesters[i].send_multipart(request, zmq::DONTWAIT);
            follower.asked(after, now);
        }
    }

    /// Reads what one socket holds: `data` is twice the host's index, plus 1 for its
    /// snapshot socket.
    fn drain(&mut self, data: usize) {
        let (i, requester) = (data / 2, data % 2 == 1);
        let socket = if requester {
            &self.requesters[i]
        } else {
            &self.subscribers[i]
        };
        while socket.get_events().is_ok_and(|e| e.contains(zmq::POLLIN)) {
            while let Ok(frames) = socket.recv_multipart(zmq::DONTWAIT) {
                let now = Instant::now();
                let follower = &mut self.followers[i];
                if !requester {
                    self.heard[i] = true;
                    match Publish::decode(&frames) {
                        Ok((
                            _,
                            Publish::Heartbeat {
                                epoch,
                                seq,
                                interval_ms,
                            },
                        )) => {
                            follower.heartbeat(epoch, seq, interval_ms, now);
                        }
                        Ok((
                            _,
                            Publish::Ban { epoch, seq, ban }
                            | Publish::Unban {
                                epoch, seq, ban, ..
                            },
                        )) => {
                            follower.published(epoch, seq, ban.ip, now);
                        }
                        Err(_) => {}
                    }
                    continue;
                }
                let Ok(page) = SnapshotPage::decode(&frames[1..]) else {
                    continue;
                };
                self.pages += 1;
                if let Some(Next::Page(after)) = follower.take_page(&page) {
                    let request = std::iter::once(Vec::new())
                        .chain(encode_snapshot_request(Some(&after), None));
                    let _ = socket.send_multipart(request, zmq::DONTWAIT);
                    follower.asked(Some(after), now);
                }
            }
        }
    }

    /// Makes every host current at `(epoch, seq)` without paging, as a host that caught up
    /// long ago: 10,000 hosts reading 100 pages each is what the restart must not cost.
    fn already_current(&mut self, epoch: u64, seq: u64) {
        let now = Instant::now();
        for follower in &mut self.followers {
            assert_eq!(follower.due(now), Some(Due::Start));
            follower.asked(None, now);
            let page = SnapshotPage {
                topic: Topic::ungrouped(),
                epoch,
                seq,
                next: None,
                bans: Vec::new(),
                lifts: Vec::new(),
                unreadable: Vec::new(),
            };
            assert!(matches!(follower.take_page(&page), Some(Next::Done(_))));
        }
    }
}

/// The server's (epoch, seq) from `banshare status`.
fn position_of(fleet: &Fleet) -> (u64, u64) {
    let status = status(fleet);
    (
        status["epoch"].as_u64().unwrap(),
        status["seq"].as_u64().unwrap(),
    )
}

/// The server's peak resident memory, in MB.
fn peak_mb(pid: u32) -> f64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok());
    kb.unwrap_or(0.0) / 1024.0
}

/// P18: a server with `bans` bans and `count` hosts, stopped by each signal of `restarts`
/// in turn and started again, with reports made meanwhile or not.
pub fn restart_with_crowd(
    results: &mut Results,
    count: usize,
    bans: usize,
    restarts: &[(Signal, bool)],
) {
    if !raise_file_limit(5 * count as u64 + 1024) {
        let why = format!("P18 with {count} hosts needs more file descriptors (run as root)");
        return results.skip(&why);
    }
    let mut fleet = Fleet::new(&["h0"], "durability = \"write\"", "");
    fleet.preload(bans);
    let keys = authorize(&fleet, count, "r");
    fleet.start_server();
    let mut hosts = Hosts::connect(&fleet, &keys);
    let (epoch, seq) = position_of(&fleet);
    hosts.already_current(epoch, seq);
    let deadline = Instant::now() + Duration::from_secs(300);
    let connected = hosts.run_until_current(|| (epoch, seq), deadline);
    assert_eq!(connected, count, "every host connected");
    for (round, &(signal, reports)) in restarts.iter().enumerate() {
        let how = match signal {
            Signal::SIGKILL => "killed",
            _ => "stopped cleanly",
        };
        let meanwhile = if reports {
            "reports meanwhile"
        } else {
            "no reports"
        };
        fleet.signal_server(signal);
        fleet.wait_server();
        let (took, latencies) = restart(&mut fleet, &mut hosts, reports, round);
        let pages = hosts.pages;
        let peak = peak_mb(fleet.server_pid() as u32);
        let measure = format!(
            "P18 a server with {bans} bans and {count} hosts, {how}, started again ({meanwhile})"
        );
        let mut figure = format!(
            "every host current in {:.1} s ({pages} snapshot pages); server's peak memory \
             {peak:.0} MB",
            took.as_secs_f64()
        );
        let mut value = json!({"current_s": took.as_secs_f64(), "pages": pages, "peak_mb": peak});
        if reports {
            let (p50, p99, max) = percentiles(&latencies);
            figure += &format!(
                "; {} reports meanwhile: p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms",
                latencies.len()
            );
            value["report_p99_ms"] = json!(p99);
            value["report_p50_ms"] = json!(p50);
        }
        let key = format!("p18_{}_{count}_{}", how.split(' ').next().unwrap(), reports);
        results.add(&key, measure, figure, "≤ 60 s; p99 ≤ 100 ms", value);
    }
}

/// Starts the stopped server again and runs the hosts until every one is current, while a
/// host reports every 20 ms if `reports`, in `45.(200 + round).0.0/16`: how long it took,
/// and each report's latency.
fn restart(
    fleet: &mut Fleet,
    hosts: &mut Hosts,
    reports: bool,
    round: usize,
) -> (Duration, Vec<Duration>) {
    hosts.pages = 0;
    hosts.heard.fill(false);
    let started = Instant::now();
    fleet.start_server();
    let fleet = &*fleet;
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let reporter = scope.spawn(|| {
            let reporter = Reporter::connect(fleet);
            let mut latencies = Vec::new();
            let mut n = 0usize;
            while reports && !done.load(Ordering::Relaxed) {
                n += 1;
                // Addresses of their own in each round: the same again would be duplicates.
                let ip = format!("45.{}.{}.{}", 200 + round, (n / 256) % 256, n % 256);
                let at = Instant::now();
                reporter.report(&ip);
                latencies.push(at.elapsed());
                std::thread::sleep(Duration::from_millis(20));
            }
            latencies
        });
        let deadline = started + Duration::from_secs(600);
        let current = hosts.run_until_current(|| position_of(fleet), deadline);
        done.store(true, Ordering::Relaxed);
        let latencies = reporter.join().unwrap();
        assert_eq!(current, hosts.followers.len(), "every host current again");
        (started.elapsed(), latencies)
    })
}
