//! banshare's benchmark: the real release binaries, on one machine over loopback, with CURVE
//! on and the server's default durability (`fsync`). It prints a table and writes JSON.
//!
//!   scripts/bench                 every measure (a few minutes)
//!   scripts/bench --quick         the short version that the test command runs
//!   scripts/bench --json FILE     where the JSON goes (default target/bench/*.json)
//!   scripts/bench --only p3,p5    only these measures (P2 comes with P1, P6 with P5)
//!
//! As root it first moves into a network namespace of its own (`unshare --net`), so that the
//! nftables and fail2ban measures never touch the host's firewall; without root, they are
//! skipped. Timing never fails the run, because machines are noisy; a lost ban does.
//!
//! - P1 propagation: from starting `banshare-report` until each of N clients has run its ban
//!   command. The command is `logger`, which sends one datagram to the benchmark, so every
//!   sample includes a real fork and exec on the client.
//! - P2 reporter cost: `banshare-report` wall time from exec to exit, against starting
//!   `fail2ban-client --version`.
//! - P3 throughput: accepted reports a second from 8 long-lived reporters (each keeps up to
//!   WINDOW reports in flight on one CURVE connection), with 10 subscribers attached, and
//!   how much of the stream the slowest of them received live.
//! - P4 burst: 10,000 bans until all are in one client's firewall, nftables and fail2ban.
//! - P5 memory: server RSS with 100,000 and 1,000,000 active bans; a connected idle client.
//! - P6 catch-up: a client that was stopped while 100,000 bans were made, from restart until
//!   all are in its nftables set.

#![forbid(unsafe_code)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use banshare::wire::protocol::{Publish, Report, Verdict, VERSION};
use banshare::wire::transport;
use common::fail2ban::Fail2ban;
use common::*;
use serde_json::{json, Value};

/// Set in the re-executed benchmark, inside its own network namespace.
const IN_NETNS: &str = "BANSHARE_BENCH_NETNS";
/// Reports each long-lived reporter keeps in flight.
const WINDOW: usize = 256;
const REPORTERS: usize = 8;
const SUBSCRIBERS: usize = 10;
/// Longest wait for any single expected event before the ban counts as lost.
const LOST_AFTER: Duration = Duration::from_secs(30);

struct Sizes {
    p1_clients: &'static [usize],
    p1_reports: usize,
    p2_runs: usize,
    p3_reports: usize,
    p4_nftables: usize,
    p4_fail2ban: usize,
    p5_stages: &'static [usize],
    p6_bans: usize,
}

const FULL: Sizes = Sizes {
    p1_clients: &[1, 10, 100],
    p1_reports: 100,
    p2_runs: 500,
    p3_reports: 200_000,
    p4_nftables: 10_000,
    p4_fail2ban: 10_000,
    p5_stages: &[100_000, 1_000_000],
    p6_bans: 100_000,
};

const QUICK: Sizes = Sizes {
    p1_clients: &[1, 10],
    p1_reports: 30,
    p2_runs: 50,
    p3_reports: 16_000,
    p4_nftables: 10_000,
    p4_fail2ban: 300,
    p5_stages: &[20_000],
    p6_bans: 20_000,
};

fn main() {
    // `cargo bench` passes --bench; everything else is ours.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let quick = args.iter().any(|a| a == "--quick");
    let json_path = option(&args, "--json")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let name = if quick { "quick.json" } else { "full.json" };
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("target/bench")
                .join(name)
        });
    // /proc/self belongs to the effective user.
    let root = fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    if root && std::env::var_os(IN_NETNS).is_none() {
        std::process::exit(rerun_in_netns());
    }
    let firewall = std::env::var_os(IN_NETNS).is_some();
    if firewall {
        run(&["ip", "link", "set", "lo", "up"]);
    }
    let sizes = if quick { &QUICK } else { &FULL };
    // --only p1,p4: just those measures (P2 comes with P1, P6 with P5).
    let only = option(&args, "--only");
    let wanted = |measure: &str| {
        only.as_ref()
            .map_or(true, |o| o.split(',').any(|m| m == measure))
    };
    let mut results = Results::default();
    if wanted("p1") {
        propagation_and_reporter_cost(&mut results, sizes);
    }
    if wanted("p3") {
        throughput(&mut results, sizes);
    }
    if !firewall {
        results.skip("P4 and P6 need root, for a network namespace of their own");
    } else if wanted("p4") {
        burst_nftables(&mut results, sizes);
        burst_fail2ban(&mut results, sizes);
    }
    if wanted("p5") {
        memory_and_catch_up(&mut results, sizes, firewall);
    }
    results.finish(&json_path, quick);
}

/// The value after `--name` on the command line.
fn option(args: &[String], name: &str) -> Option<String> {
    let i = args.iter().position(|a| a == name)?;
    args.get(i + 1).cloned()
}

/// Runs this benchmark again in a new network namespace; returns its exit code.
fn rerun_in_netns() -> i32 {
    let status = Command::new("unshare")
        .arg("--net")
        .arg("--")
        .arg(std::env::current_exe().unwrap())
        .args(std::env::args().skip(1))
        .env(IN_NETNS, "1")
        .status()
        .expect("run unshare");
    status.code().unwrap_or(1)
}

/// Runs a command that must succeed and returns its standard output.
fn run(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Distinct addresses, `count` of them from `first` on: 10.0.0.1, 10.0.0.2, ...
fn addresses(first: usize, count: usize) -> Vec<String> {
    (first + 1..=first + count)
        .map(|i| format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Results

#[derive(Default)]
struct Results {
    /// measure, figure, target
    rows: Vec<(String, String, String)>,
    json: serde_json::Map<String, Value>,
    skipped: Vec<String>,
}

impl Results {
    fn add(&mut self, key: &str, measure: String, figure: String, target: &str, value: Value) {
        eprintln!("{measure}: {figure}");
        self.rows.push((measure, figure, target.to_string()));
        self.json.insert(key.to_string(), value);
    }

    /// p50, p99 and max of a set of durations, as a row.
    fn latency(&mut self, key: &str, measure: String, samples: &[Duration], target: &str) {
        let (p50, p99, max) = percentiles(samples);
        self.add(
            key,
            format!("{measure} ({} samples)", samples.len()),
            format!("p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms"),
            target,
            json!({"samples": samples.len(), "p50_ms": p50, "p99_ms": p99, "max_ms": max}),
        );
    }

    fn skip(&mut self, why: &str) {
        self.skipped.push(why.to_string());
    }

    fn finish(self, path: &Path, quick: bool) {
        let width = self.rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
        let fig = self.rows.iter().map(|r| r.1.len()).max().unwrap_or(0);
        println!("\n{:<width$}  {:<fig$}  target", "measure", "figure");
        for (measure, figure, target) in &self.rows {
            println!("{measure:<width$}  {figure:<fig$}  {target}");
        }
        for why in &self.skipped {
            println!("skipped: {why}");
        }
        let mut json = Value::Object(self.json);
        json["quick"] = json!(quick);
        json["machine"] = json!(machine());
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, serde_json::to_string_pretty(&json).unwrap()).unwrap();
        println!("no ban lost; figures in {}", path.display());
    }
}

fn percentiles(samples: &[Duration]) -> (f64, f64, f64) {
    let mut ms: Vec<f64> = samples.iter().map(|t| t.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() as f64 * q).ceil() as usize).clamp(1, ms.len()) - 1];
    (at(0.5), at(0.99), ms[ms.len() - 1])
}

fn machine() -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name\t: ").map(str::to_owned))
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores, {cpu}")
}

// ---------------------------------------------------------------------------------------
// P1 and P2

/// Each client's ban command sends `CLIENT IP` to this datagram socket; a thread stamps
/// each arrival.
struct Applied {
    socket: PathBuf,
    arrivals: mpsc::Receiver<(Instant, usize, String)>,
}

impl Applied {
    fn listen(dir: &Path) -> Applied {
        let socket = dir.join("applied.sock");
        let receiver = UnixDatagram::bind(&socket).unwrap();
        let (tx, arrivals) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok(n) = receiver.recv(&mut buf) {
                let at = Instant::now();
                // logger sends "<13>Nov 26 01:29:03 root: CLIENT IP".
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                let mut words = text.split_whitespace().rev();
                let (Some(ip), Some(client)) = (words.next(), words.next()) else {
                    continue;
                };
                if let Ok(client) = client.parse() {
                    if tx.send((at, client, ip.to_string())).is_err() {
                        break;
                    }
                }
            }
        });
        Applied { socket, arrivals }
    }

    /// Waits until `clients` clients have applied `ip`; returns each one's time since
    /// `started`.
    fn wait(&self, ip: &str, clients: usize, started: Instant) -> Vec<Duration> {
        let mut seen = HashMap::new();
        while seen.len() < clients {
            let (at, client, applied) =
                self.arrivals.recv_timeout(LOST_AFTER).unwrap_or_else(|_| {
                    panic!("lost: {ip} reached {} of {clients} clients", seen.len())
                });
            if applied == ip {
                seen.insert(client, at - started);
            }
        }
        seen.into_values().collect()
    }
}

/// A fleet of `clients` clients whose ban command is `logger` to the benchmark's socket.
fn command_fleet(clients: usize) -> (Fleet, Applied) {
    let names: Vec<String> = (0..clients).map(|i| format!("h{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut fleet = Fleet::new(&names, "", "");
    let applied = Applied::listen(fleet.dir.path());
    for i in 0..clients {
        let command = format!(
            "'/usr/bin/logger -u {} -d -- {i} <ip>'",
            applied.socket.display()
        );
        set_line(&fleet.hosts[i].config, "ban-command", &command);
    }
    fleet.start_server();
    for i in 0..clients {
        fleet.start_client(i);
    }
    (fleet, applied)
}

/// Replaces `key = ...` in a TOML file.
fn set_line(path: &Path, key: &str, value: &str) {
    let text = fs::read_to_string(path).unwrap();
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with(&format!("{key} =")))
        .collect();
    fs::write(path, format!("{}\n{key} = {value}\n", kept.join("\n"))).unwrap();
}

/// Runs banshare-report from host 0; returns its wall time.
fn report(fleet: &Fleet, ip: &str) -> Duration {
    let started = Instant::now();
    let out = fleet.report(0, &["bench", "bench", ip]);
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "report of {ip}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

fn propagation_and_reporter_cost(results: &mut Results, sizes: &Sizes) {
    let mut next = 0;
    for &clients in sizes.p1_clients {
        let (fleet, applied) = command_fleet(clients);
        // A first ban that every client applies: all are connected and warm.
        let mut ips = addresses(next, sizes.p1_reports + sizes.p2_runs + 1).into_iter();
        next += 100_000;
        let first = ips.next().unwrap();
        let started = Instant::now();
        report(&fleet, &first);
        applied.wait(&first, clients, started);
        let mut samples = Vec::new();
        for ip in ips.by_ref().take(sizes.p1_reports) {
            let started = Instant::now();
            report(&fleet, &ip);
            samples.extend(applied.wait(&ip, clients, started));
        }
        let target = match clients {
            10 => "p99 ≤ 5 ms",
            100 => "p99 ≤ 20 ms",
            _ => "",
        };
        results.latency(
            &format!("p1_propagation_{clients}"),
            format!("P1 propagation, {clients} clients"),
            &samples,
            target,
        );
        if clients > 1 {
            let floor: Vec<Duration> = (0..sizes.p1_reports)
                .flat_map(|k| exec_floor(&applied, clients, k))
                .collect();
            results.latency(
                &format!("p1_exec_floor_{clients}"),
                format!("P1 floor: {clients} ban commands started at once, no banshare"),
                &floor,
                "",
            );
        }
        if clients == 1 {
            reporter_cost(results, &fleet, ips.take(sizes.p2_runs).collect());
            let idle = rss_mb(fleet.client_pid(0));
            results.add(
                "p5_client_idle_rss_mb",
                "P5 client RSS, connected and idle".into(),
                format!("{idle:.1} MB"),
                "",
                json!(idle),
            );
        }
    }
}

/// What `clients` ban commands started at the same moment cost on this machine by
/// themselves: the least that propagation to as many clients can take here.
fn exec_floor(applied: &Applied, clients: usize, round: usize) -> Vec<Duration> {
    let token = format!("floor-{round}");
    let started = Instant::now();
    let children: Vec<_> = (0..clients)
        .map(|i| {
            Command::new("/usr/bin/logger")
                .arg("-u")
                .arg(&applied.socket)
                .args(["-d", "--", &i.to_string(), &token])
                .spawn()
                .unwrap()
        })
        .collect();
    let times = applied.wait(&token, clients, started);
    for mut child in children {
        child.wait().unwrap();
    }
    times
}

/// Median wall time of `runs` runs of a command that must succeed.
fn median_run(args: &[&str], runs: usize) -> f64 {
    let times: Vec<Duration> = (0..runs)
        .map(|_| {
            let started = Instant::now();
            run(args);
            started.elapsed()
        })
        .collect();
    percentiles(&times).0
}

fn reporter_cost(results: &mut Results, fleet: &Fleet, ips: Vec<String>) {
    let samples: Vec<Duration> = ips.iter().map(|ip| report(fleet, ip)).collect();
    let (p50, p99, max) = percentiles(&samples);
    let fail2ban = median_run(&["fail2ban-client", "--version"], 20);
    // What starting a program that links libzmq costs here, before any work.
    let start = median_run(&[REPORT, "--version"], 50);
    let exec = median_run(&["/bin/true"], 50);
    results.add(
        "p2_reporter",
        format!("P2 banshare-report wall time ({} runs)", samples.len()),
        format!(
            "median {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms; fail2ban-client --version \
             {fail2ban:.1} ms ({:.0}x); banshare-report --version {start:.2} ms, /bin/true \
             {exec:.2} ms",
            fail2ban / p50
        ),
        "median ≤ 5 ms",
        json!({"runs": samples.len(), "p50_ms": p50, "p99_ms": p99, "max_ms": max,
               "fail2ban_client_version_ms": fail2ban, "ratio": fail2ban / p50,
               "report_version_ms": start, "true_ms": exec}),
    );
}

// ---------------------------------------------------------------------------------------
// P3: long-lived reporters and subscribers

/// What the server answered.
#[derive(Default, Debug, Clone, Copy)]
struct Tally {
    accepted: usize,
    other: usize,
}

/// Sends each address as a report from `host` over one CURVE connection, keeping up to
/// WINDOW in flight, and counts the verdicts.
fn inject(fleet: &Fleet, host: usize, ips: &[String]) -> Tally {
    let ctx = zmq::Context::new();
    let key = fleet.host_key(&fleet.hosts[host].name);
    let socket = transport::client_socket(&ctx, zmq::DEALER, &fleet.server_key(), &key).unwrap();
    socket
        .connect(&format!("tcp://127.0.0.1:{}", fleet.report_port))
        .unwrap();
    let mut tally = Tally::default();
    let mut sent = 0;
    while tally.accepted + tally.other < ips.len() {
        while sent < ips.len() && sent - (tally.accepted + tally.other) < WINDOW {
            let report = Report::parse("bench", "bench", &ips[sent], "").unwrap();
            // The empty frame stands in for the delimiter a REQ socket would add.
            let frames = std::iter::once(Vec::new()).chain(report.encode());
            socket.send_multipart(frames, 0).unwrap();
            sent += 1;
        }
        if socket
            .poll(zmq::POLLIN, LOST_AFTER.as_millis() as i64)
            .unwrap()
            == 0
        {
            panic!(
                "lost: no answer to {} reports",
                sent - tally.accepted - tally.other
            );
        }
        while let Ok(frames) = socket.recv_multipart(zmq::DONTWAIT) {
            match Verdict::decode(&frames[1..]) {
                Ok(Verdict::Accepted) => tally.accepted += 1,
                _ => tally.other += 1,
            }
        }
    }
    tally
}

/// Reports `ips` from hosts 0..REPORTERS at once; returns the time it took.
fn inject_parallel(fleet: &Fleet, ips: &[String]) -> Duration {
    let started = Instant::now();
    let chunk = ips.len().div_ceil(REPORTERS);
    let tallies: Vec<Tally> = std::thread::scope(|scope| {
        let workers: Vec<_> = ips
            .chunks(chunk)
            .enumerate()
            .map(|(host, part)| scope.spawn(move || inject(fleet, host, part)))
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let took = started.elapsed();
    let accepted: usize = tallies.iter().map(|t| t.accepted).sum();
    assert_eq!(
        accepted,
        ips.len(),
        "every distinct report is accepted: {tallies:?}"
    );
    took
}

/// A subscriber on host `host`'s key that counts published bans until it has `expected`,
/// or until none has come for a while after `done` is set.
fn subscribe<'a>(
    fleet: &Fleet,
    host: usize,
    expected: usize,
    ready: mpsc::Sender<()>,
    done: &'a AtomicBool,
) -> impl FnOnce() -> usize + 'a {
    let ctx = zmq::Context::new();
    let key = fleet.host_key(&fleet.hosts[host].name);
    let socket = transport::client_socket(&ctx, zmq::SUB, &fleet.server_key(), &key).unwrap();
    socket.set_subscribe(VERSION.as_bytes()).unwrap();
    socket
        .connect(&format!("tcp://127.0.0.1:{}", fleet.publish_port))
        .unwrap();
    move || {
        let _ctx = ctx;
        let (mut bans, mut last_ban) = (0, Instant::now());
        let mut announced = false;
        while bans < expected
            && !(done.load(Ordering::Relaxed) && last_ban.elapsed() > Duration::from_secs(2))
        {
            if socket.poll(zmq::POLLIN, 100).unwrap() == 0 {
                continue;
            }
            let frames = socket.recv_multipart(0).unwrap();
            match Publish::decode(&frames) {
                Ok(Publish::Ban { .. }) => (bans, last_ban) = (bans + 1, Instant::now()),
                // The server greets each new subscriber with a heartbeat.
                Ok(Publish::Heartbeat { .. }) if !announced => {
                    announced = true;
                    let _ = ready.send(());
                }
                _ => {}
            }
        }
        bans
    }
}

/// Active bans on the fleet's server, from `banshare status`.
fn active_bans(fleet: &Fleet) -> Value {
    let status = fleet.admin(&["status", "--json"]);
    serde_json::from_slice::<Value>(&status.stdout).unwrap()["active_bans"].clone()
}

fn throughput(results: &mut Results, sizes: &Sizes) {
    let names: Vec<String> = (0..REPORTERS + SUBSCRIBERS)
        .map(|i| format!("h{i}"))
        .collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut fleet = Fleet::new(&names, "", "");
    fleet.start_server();
    let ips = addresses(0, sizes.p3_reports);
    let done = AtomicBool::new(false);
    let (took, received) = std::thread::scope(|scope| {
        let (ready, subscribed) = mpsc::channel();
        let subscribers: Vec<_> = (REPORTERS..REPORTERS + SUBSCRIBERS)
            .map(|host| scope.spawn(subscribe(&fleet, host, ips.len(), ready.clone(), &done)))
            .collect();
        for _ in 0..SUBSCRIBERS {
            subscribed
                .recv_timeout(LOST_AFTER)
                .expect("subscribers join");
        }
        let took = inject_parallel(&fleet, &ips);
        done.store(true, Ordering::Relaxed);
        let received: Vec<usize> = subscribers.into_iter().map(|s| s.join().unwrap()).collect();
        (took, received)
    });
    // Acknowledged means recorded: a subscriber that fell behind reads the rest from a
    // snapshot of these.
    assert_eq!(active_bans(&fleet), json!(ips.len()), "lost by the server");
    let rate = ips.len() as f64 / took.as_secs_f64();
    let least = received.iter().min().copied().unwrap_or(0);
    results.add(
        "p3_throughput",
        format!(
            "P3 accepted reports/s, {REPORTERS} reporters, {SUBSCRIBERS} subscribers ({} reports)",
            ips.len()
        ),
        format!(
            "{rate:.0}/s; the slowest subscriber got {:.0}% live",
            100.0 * least as f64 / ips.len() as f64
        ),
        "≥ 20,000/s",
        json!({"reports": ips.len(), "seconds": took.as_secs_f64(), "per_second": rate,
               "received_live_by_each_subscriber": received}),
    );
}

// ---------------------------------------------------------------------------------------
// P4, P5, P6: firewalls and memory

/// Addresses in an nftables set, counted from `nft list set`; 0 while there is no set.
fn nft_count(table: &str, set: &str) -> usize {
    let Ok(out) = Command::new("nft")
        .args(["list", "set", "inet", table, set])
        .output()
    else {
        return 0;
    };
    String::from_utf8_lossy(&out.stdout)
        .split(|c: char| c.is_whitespace() || c == ',' || c == '{' || c == '}')
        .filter(|w| w.parse::<std::net::IpAddr>().is_ok())
        .count()
}

/// Bans the client has put into nftables so far, from its log of batches.
fn nft_batched(fleet: &Fleet, client: usize, skip_lines: usize) -> usize {
    fleet
        .client_log(client)
        .lines()
        .skip(skip_lines)
        .filter_map(|l| l.split("nftables: applied a batch of ").nth(1))
        .filter_map(|rest| rest.split(' ').next()?.parse::<usize>().ok())
        .sum()
}

/// Polls `count` until it reaches `expected`; returns the time since `started`.
fn until_count(
    what: &str,
    expected: usize,
    started: Instant,
    mut count: impl FnMut() -> usize,
) -> Duration {
    let mut last = (0, Instant::now());
    loop {
        let n = count();
        if n >= expected {
            return started.elapsed();
        }
        if n != last.0 {
            last = (n, Instant::now());
        }
        assert!(
            last.1.elapsed() < LOST_AFTER,
            "lost: {what} stuck at {n} of {expected}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Reporters 0..REPORTERS and one client on host REPORTERS with `client_extra`.
fn firewall_fleet(server_extra: &str, client_extra: &str) -> Fleet {
    let names: Vec<String> = (0..=REPORTERS).map(|i| format!("h{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut fleet = Fleet::new(&names, server_extra, "");
    fleet.add_client_config(REPORTERS, client_extra);
    fleet.start_server();
    fleet
}

fn burst_nftables(results: &mut Results, sizes: &Sizes) {
    let mut fleet = firewall_fleet("", "backend = \"nftables\"\n");
    fleet.start_client(REPORTERS);
    let ips = addresses(0, sizes.p4_nftables);
    let started = Instant::now();
    inject_parallel(&fleet, &ips);
    let took = until_count("nftables batches", ips.len(), started, || {
        nft_batched(&fleet, REPORTERS, 0)
    });
    assert_eq!(
        nft_count("banshare", "addr4"),
        ips.len(),
        "lost from nftables"
    );
    results.add(
        "p4_nftables",
        format!(
            "P4 {} bans into nftables, first report to last applied",
            ips.len()
        ),
        format!("{:.3} s", took.as_secs_f64()),
        "≤ 1 s",
        json!({"bans": ips.len(), "seconds": took.as_secs_f64()}),
    );
}

fn burst_fail2ban(results: &mut Results, sizes: &Sizes) {
    let mut fleet = firewall_fleet("", "backend = \"fail2ban\"\n");
    let f2b_dir = fleet.dir.path().join("fail2ban");
    fleet.add_client_config(
        REPORTERS,
        &format!(
            "fail2ban-socket = \"{}\"\n",
            f2b_dir.join("fail2ban.sock").display()
        ),
    );
    let f2b = Fail2ban::start_with(
        None,
        &f2b_dir,
        &fleet.hosts[REPORTERS].config,
        "nftables-allports",
    );
    fleet.start_client(REPORTERS);
    let ips = addresses(0, sizes.p4_fail2ban);
    let started = Instant::now();
    inject_parallel(&fleet, &ips);
    let took = until_fail2ban_has(ips.len(), started);
    // The same number of bans handed to fail2ban directly, 500 a call as the backend does:
    // what fail2ban itself takes, without banshare.
    let started = Instant::now();
    for chunk in addresses(ips.len(), ips.len()).chunks(500) {
        let args: Vec<&str> = ["set", "banshare", "banip"]
            .into_iter()
            .chain(chunk.iter().map(String::as_str))
            .collect();
        assert!(f2b.client(&args).status.success());
    }
    let direct = until_fail2ban_has(2 * ips.len(), started);
    let per_ban = |t: Duration| t.as_secs_f64() * 1000.0 / ips.len() as f64;
    results.add(
        "p4_fail2ban",
        format!(
            "P4 {} bans into fail2ban (banaction nftables-allports), first report to last in nftables",
            ips.len()
        ),
        format!(
            "{:.1} s ({:.2} ms a ban); fail2ban-client banip alone: {:.1} s ({:.2} ms a ban)",
            took.as_secs_f64(),
            per_ban(took),
            direct.as_secs_f64(),
            per_ban(direct)
        ),
        "≤ 30 s for 10,000",
        json!({"bans": ips.len(), "seconds": took.as_secs_f64(),
               "fail2ban_alone_seconds": direct.as_secs_f64()}),
    );
}

/// Waits until fail2ban's nftables set holds `expected` addresses.
fn until_fail2ban_has(expected: usize, started: Instant) -> Duration {
    let mut last_poll = Instant::now() - Duration::from_secs(1);
    let mut count = 0;
    // Listing the set costs fail2ban CPU too: look four times a second.
    until_count("fail2ban's set", expected, started, || {
        if last_poll.elapsed() >= Duration::from_millis(250) {
            last_poll = Instant::now();
            count = nft_count("f2b-table", "addr-set-banshare");
        }
        count
    })
}

/// Fills a server in stages and reads its memory at each; a client stopped before the fill
/// then catches up (P6, with nftables, when there is a namespace).
fn memory_and_catch_up(results: &mut Results, sizes: &Sizes, firewall: bool) {
    let mut fleet = firewall_fleet("", "backend = \"nftables\"\n");
    if firewall {
        fleet.start_client(REPORTERS);
        fleet.stop_client(REPORTERS);
    }
    let mut filled = 0;
    for &stage in sizes.p5_stages {
        let ips = addresses(filled, stage - filled);
        let took = inject_parallel(&fleet, &ips);
        filled = stage;
        let rss = rss_mb(fleet.server_pid());
        let status = fleet.admin(&["status", "--json"]);
        let active =
            serde_json::from_slice::<Value>(&status.stdout).unwrap()["active_bans"].clone();
        assert_eq!(active, json!(stage), "the server holds every ban");
        results.add(
            &format!("p5_server_rss_mb_{stage}"),
            format!("P5 server RSS with {stage} active bans"),
            format!(
                "{rss:.1} MB (filled at {:.0} reports/s)",
                ips.len() as f64 / took.as_secs_f64()
            ),
            match stage {
                100_000 => "≤ 64 MB",
                1_000_000 => "≤ 400 MB",
                _ => "",
            },
            json!(rss),
        );
        if firewall && stage == sizes.p6_bans {
            catch_up(results, &mut fleet, stage);
        }
    }
}

fn catch_up(results: &mut Results, fleet: &mut Fleet, bans: usize) {
    let lines_before = fleet.client_log(REPORTERS).lines().count();
    let started = Instant::now();
    fleet.spawn_client(REPORTERS);
    let took = until_count("the catch-up", bans, started, || {
        nft_batched(fleet, REPORTERS, lines_before)
    });
    assert_eq!(nft_count("banshare", "addr4"), bans, "lost in the catch-up");
    fleet.stop_client(REPORTERS);
    results.add(
        "p6_catch_up",
        format!("P6 restarted client catches up on {bans} bans (nftables)"),
        format!("{:.2} s", took.as_secs_f64()),
        "≤ 2 s",
        json!({"bans": bans, "seconds": took.as_secs_f64()}),
    );
}
