//! P1 propagation (report to every client's ban command) and P2 the reporter's cost.

use super::*;

/// Each client's ban command sends `CLIENT IP` to this datagram socket, or each client's
/// log says it called its backend (P14); a thread stamps each arrival.
pub struct Applied {
    pub socket: PathBuf,
    arrivals: mpsc::Receiver<(Instant, usize, String)>,
}

impl Applied {
    pub fn listen(dir: &Path) -> Applied {
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
    pub fn wait(&self, ip: &str, clients: usize, started: Instant) -> Vec<Duration> {
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
pub fn command_fleet(clients: usize) -> (Fleet, Applied) {
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
pub fn set_line(path: &Path, key: &str, value: &str) {
    let text = fs::read_to_string(path).unwrap();
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with(&format!("{key} =")))
        .collect();
    fs::write(path, format!("{}\n{key} = {value}\n", kept.join("\n"))).unwrap();
}

/// How a report goes: handed to the host's client by banshare-report, or sent directly
/// over CURVE by `banshare report`, as banshare-report did before the handoff.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Client,
    Directly,
}

/// Runs banshare-report from host 0; returns its wall time.
pub fn report(fleet: &Fleet, ip: &str) -> Duration {
    report_via(fleet, 0, ip, Via::Client)
}

/// Reports `ip` from host `i`, as `via` says; returns the wall time.
pub fn report_via(fleet: &Fleet, i: usize, ip: &str, via: Via) -> Duration {
    let started = Instant::now();
    let out = match via {
        Via::Client => fleet.report(i, &["bench", "bench", ip]),
        Via::Directly => fleet
            .host_command(i, ADMIN)
            .args(["report", "--config"])
            .arg(&fleet.hosts[i].config)
            .args(["bench", "bench", ip])
            .output()
            .unwrap(),
    };
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "report of {ip}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

pub fn propagation_and_reporter_cost(results: &mut Results, sizes: &Sizes) {
    let mut next = 0;
    let mut pictured = Vec::new();
    for &clients in sizes.p1_clients {
        let (fleet, applied) = command_fleet(clients);
        // A first ban that every client applies: all are connected and warm.
        let mut ips = addresses(next, sizes.p1_reports + 2 * sizes.p2_runs + 1).into_iter();
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
        // The targets are P14's, which leaves out the ban command's exec, most of this.
        let target = if clients > 1 { "see P14" } else { "" };
        results.latency(
            &format!("p1_propagation_{clients}"),
            format!("P1 propagation, {clients} clients"),
            &samples,
            target,
        );
        let (p50, _, _) = percentiles(&samples);
        let noun = if clients == 1 { "client" } else { "clients" };
        pictured.push((
            format!("banshare, {clients} {noun}: median {p50:.1} ms"),
            samples,
        ));
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
            reporter_cost(results, &fleet, ips.take(2 * sizes.p2_runs).collect());
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
    latency_svg(Path::new("target/bench/p1-latency.svg"), &pictured);
}

/// What `clients` ban commands started at the same moment cost on this machine by
/// themselves: the least that propagation to as many clients can take here.
pub fn exec_floor(applied: &Applied, clients: usize, round: usize) -> Vec<Duration> {
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
pub fn median_run(args: &[&str], runs: usize) -> f64 {
    percentiles(&run_times(args, runs)).0
}

/// The wall time of each of `runs` runs of a command.
fn run_times(args: &[&str], runs: usize) -> Vec<Duration> {
    (0..runs)
        .map(|_| {
            let started = Instant::now();
            run(args);
            started.elapsed()
        })
        .collect()
}

/// P2: banshare-report with the host's client running (the handoff), against reporting
/// directly as before, in turns, with `fail2ban-client --version` and bare program starts
/// for scale.
pub fn reporter_cost(results: &mut Results, fleet: &Fleet, ips: Vec<String>) {
    let (mut handed, mut direct) = (Vec::new(), Vec::new());
    for pair in ips.chunks(2) {
        handed.push(report_via(fleet, 0, &pair[0], Via::Client));
        direct.push(report_via(fleet, 0, &pair[1], Via::Directly));
    }
    let (p50, p99, max) = percentiles(&handed);
    let (before, before_p99, _) = percentiles(&direct);
    let fail2ban = median_run(&["fail2ban-client", "--version"], 20);
    // What starting each program costs here, before any work: the direct one links libzmq.
    let start = median_run(&[REPORT, "--version"], 50);
    let direct_start = median_run(&[ADMIN, "--version"], 50);
    let exec = median_run(&["/bin/true"], 50);
    results.add(
        "p2_reporter",
        format!("P2 banshare-report wall time ({} runs)", handed.len()),
        format!(
            "through the client: median {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms; \
             directly, as before: median {before:.2} ms, p99 {before_p99:.2} ms \
             ({:.1}x); fail2ban-client --version {fail2ban:.1} ms; --version of \
             banshare-report {start:.2} ms, of banshare {direct_start:.2} ms; /bin/true \
             {exec:.2} ms",
            before / p50
        ),
        "median ≤ 5 ms; half of before",
        json!({"runs": handed.len(), "p50_ms": p50, "p99_ms": p99, "max_ms": max,
               "direct_p50_ms": before, "direct_p99_ms": before_p99,
               "fail2ban_client_version_ms": fail2ban, "ratio_to_direct": before / p50,
               "report_version_ms": start, "admin_version_ms": direct_start,
               "true_ms": exec}),
    );
}

/// P14: P1 without the ban command, which dominates it: from starting banshare-report until
/// each client has called its backend. The backend is `log`, and each client's log line
/// is stamped as the benchmark reads it from the client's stderr.
pub fn fan_out_without_exec(results: &mut Results, sizes: &Sizes) {
    for (k, &clients) in sizes.p14_clients.iter().enumerate() {
        let names: Vec<String> = (0..clients).map(|i| format!("h{i}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut fleet = Fleet::new(&names, "", "backend = \"log\"\n");
        fleet.start_server();
        let (applied, children) = Applied::from_logs(&fleet);
        let ips = addresses(600_000 + 10_000 * k, sizes.p1_reports + 1);
        let started = Instant::now();
        applied.wait("connected", clients, started);
        report(&fleet, &ips[0]);
        applied.wait(&ips[0], clients, started);
        let server = fleet.server_pid() as u32;
        let cpu_before = (children.cpu_seconds(), cpu_seconds(server));
        let mut samples = Vec::new();
        for ip in &ips[1..] {
            let started = Instant::now();
            report(&fleet, ip);
            samples.extend(applied.wait(ip, clients, started));
        }
        // What one ban costs, in CPU: where the time goes on two cores.
        let bans = (ips.len() - 1) as f64;
        let client_us = (children.cpu_seconds() - cpu_before.0) / bans / clients as f64 * 1e6;
        let server_us = (cpu_seconds(server) - cpu_before.1) / bans * 1e6;
        let (p50, p99, max) = percentiles(&samples);
        // Every sample starts a program: how fast this machine does that, now, with the
        // fleet up, to compare runs on a machine whose speed changes from hour to hour.
        let (true_p50, true_p99, _) = percentiles(&run_times(&["/bin/true"], 200));
        let target = if clients >= 100 {
            "p99 ≤ 20 ms"
        } else {
            "p99 ≤ 5 ms"
        };
        results.add(
            &format!("p14_backend_{clients}"),
            format!(
                "P14 report start to each client's backend called, {clients} clients ({} samples)",
                samples.len()
            ),
            format!(
                "p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms; CPU per ban: {client_us:.0} µs \
                 in each client, {server_us:.0} µs in the server; /bin/true here: p50 \
                 {true_p50:.2} ms, p99 {true_p99:.2} ms"
            ),
            target,
            json!({"samples": samples.len(), "p50_ms": p50, "p99_ms": p99, "max_ms": max,
                   "client_cpu_us_per_ban": client_us, "server_cpu_us_per_ban": server_us,
                   "true_p50_ms": true_p50, "true_p99_ms": true_p99}),
        );
    }
}

/// The CPU time a process's threads have used, in seconds, from the scheduler's own
/// account (`schedstat`, in nanoseconds): `stat`'s ticks of 10 ms round a short run to 0.
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    let nanos: u64 = tasks
        .flatten()
        .filter_map(|task| fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    nanos as f64 / 1e9
}

/// The clients of a whole fleet, started here with their logs read as they come.
pub struct LogFed(Vec<std::process::Child>);

impl LogFed {
    fn cpu_seconds(&self) -> f64 {
        self.0.iter().map(|c| cpu_seconds(c.id())).sum()
    }
}

impl Drop for LogFed {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Applied {
    /// Starts every client of `fleet`; an arrival is "connected" once a client has reached
    /// the server, then each address its `log` backend was called with. One thread reads
    /// every client's stderr, so that the measure wakes one thread, not one per client.
    pub fn from_logs(fleet: &Fleet) -> (Applied, LogFed) {
        let mut children = Vec::new();
        let mut pipes = Vec::new();
        for (i, host) in fleet.hosts.iter().enumerate() {
            let mut child = fleet
                .host_command(i, CLIENT)
                .args(["--log", "stderr", "--config"])
                .arg(&host.config)
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            pipes.push((child.stderr.take().unwrap(), Vec::new()));
            children.push(child);
        }
        let (tx, arrivals) = mpsc::channel();
        std::thread::spawn(move || read_logs(pipes, &tx));
        let socket = fleet.dir.path().join("unused");
        (Applied { socket, arrivals }, LogFed(children))
    }
}

/// Reads the clients' logs as they come, and stamps each line of interest. epoll, not
/// poll: a poll of a hundred pipes for each line the hundred clients write took a third of
/// the machine's CPU, away from the clients it measures.
fn read_logs(
    mut pipes: Vec<(std::process::ChildStderr, Vec<u8>)>,
    tx: &mpsc::Sender<(Instant, usize, String)>,
) {
    use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
    use std::io::Read;
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).unwrap();
    for (i, (pipe, _)) in pipes.iter().enumerate() {
        epoll
            .add(pipe, EpollEvent::new(EpollFlags::EPOLLIN, i as u64))
            .unwrap();
    }
    let mut events = vec![EpollEvent::empty(); pipes.len()];
    let mut buf = [0u8; 65536];
    loop {
        let Ok(ready) = epoll.wait(&mut events, EpollTimeout::NONE) else {
            continue;
        };
        let at = Instant::now();
        for event in &events[..ready] {
            let i = event.data() as usize;
            let (pipe, line) = &mut pipes[i];
            let Ok(n) = pipe.read(&mut buf) else { return };
            if n == 0 {
                return;
            }
            line.extend_from_slice(&buf[..n]);
            while let Some(end) = line.iter().position(|&b| b == b'\n') {
                let text = String::from_utf8_lossy(&line[..end]).into_owned();
                line.drain(..=end);
                let what = match text.split("dry run: would ban ").nth(1) {
                    Some(rest) => rest.split(' ').next().unwrap_or_default().to_string(),
                    None if text.contains("connected to") => "connected".into(),
                    None => continue,
                };
                if tx.send((at, i, what)).is_err() {
                    return;
                }
            }
        }
    }
}

/// P12: where a report's time goes, phase by phase, with the reporter's own calls made from
/// this process: a context and a CURVE socket; the first request, which connects, does the
/// CURVE handshake and the round trip; a second on the same connection, the round trip
/// alone (the server's commit included); and the server's commit by itself, from its
/// metrics. Exec and loading libzmq are P2's `/bin/true` and `banshare-report --version`.
pub fn reporter_phases(results: &mut Results, sizes: &Sizes) {
    let port = free_port();
    let mut fleet = Fleet::new(
        &["web1"],
        &format!("metrics-listen = \"127.0.0.1:{port}\"\n"),
        "",
    );
    fleet.start_server();
    let (server, key) = (fleet.server_key(), fleet.host_key("web1"));
    let endpoint = format!("tcp://127.0.0.1:{}", fleet.report_port);
    let ask = |socket: &zmq::Socket, ip: &str| {
        let report = Report::parse("bench", "bench", ip, "").unwrap();
        socket.send_multipart(report.encode(), 0).unwrap();
        let reply = socket.recv_multipart(0).unwrap();
        assert_eq!(Verdict::decode(&reply), Ok(Verdict::Accepted), "{ip}");
    };
    let (mut setup, mut first, mut again) = (Vec::new(), Vec::new(), Vec::new());
    let ips = addresses(800_000, 2 * sizes.p2_runs);
    for pair in ips.chunks(2) {
        let started = Instant::now();
        let ctx = zmq::Context::new();
        let socket = transport::client_socket(&ctx, zmq::REQ, &server, &key).unwrap();
        socket.connect(&endpoint).unwrap();
        let connected = Instant::now();
        ask(&socket, &pair[0]);
        let answered = Instant::now();
        ask(&socket, &pair[1]);
        setup.push(connected - started);
        first.push(answered - connected);
        again.push(answered.elapsed());
    }
    let commit = commit_mean_ms(port);
    let ms = |samples: &[Duration]| percentiles(samples).0;
    let (setup, first, again) = (ms(&setup), ms(&first), ms(&again));
    results.add(
        "p12_reporter_phases",
        format!("P12 a report's phases, medians of {} runs", ips.len() / 2),
        format!(
            "context and socket {setup:.2} ms; first request (connect, CURVE handshake, round \
             trip) {first:.2} ms; a second on the same connection {again:.2} ms; of which the \
             server's journal commit {commit:.2} ms (mean)"
        ),
        "",
        json!({"context_ms": setup, "first_request_ms": first, "second_request_ms": again,
               "commit_mean_ms": commit}),
    );
}

/// The mean of the server's journal commits so far, from its metrics endpoint.
fn commit_mean_ms(port: u16) -> f64 {
    let (_, body) = http_get(port, "/metrics").expect("the server's metrics");
    let value = |name: &str| -> f64 {
        let line = body.lines().find(|l| l.starts_with(name)).unwrap();
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    let sum = value("banshare_server_journal_commit_seconds_sum ");
    let count = value("banshare_server_journal_commit_seconds_count ");
    1000.0 * sum / count
}
