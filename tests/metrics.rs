//! Prometheus metrics and the client's status, with the real things: Debian's promtool
//! checks both endpoints and the shipped alerting rules, and a real Prometheus scrapes a
//! small fleet and sees the ban counter move after a report.

use crate::common;

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;

/// The endpoint's metrics once `line` is among them.
fn metrics_with(port: u16, line: &str) -> String {
    wait_for(
        &format!("{line} on :{port}"),
        Duration::from_secs(10),
        || {
            let (code, body) = http_get(port, "/metrics")?;
            (code == 200 && body.lines().any(|l| l == line)).then_some(body)
        },
    )
}

/// `promtool check metrics` on `body`: its exit code and what it said.
fn promtool_check(body: &str) -> (i32, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package, which the test command installs)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&[out.stdout, out.stderr].concat()).into_owned();
    (out.status.code().unwrap_or(-1), said)
}

fn listen(port: u16) -> String {
    format!("metrics-listen = \"127.0.0.1:{port}\"\n")
}

/// A server and two clients, each serving metrics: the fleet, and the three ports.
fn fleet_with_metrics() -> (Fleet, u16, [u16; 2]) {
    let server_port = free_port();
    let client_ports = [free_port(), free_port()];
    let mut fleet = Fleet::new(&["web1", "web2"], &listen(server_port), "");
    for (i, port) in client_ports.iter().enumerate() {
        fleet.add_client_config(i, &listen(*port));
    }
    fleet.start_server();
    fleet.start_client(0);
    fleet.start_client(1);
    (fleet, server_port, client_ports)
}

#[test]
fn both_endpoints_pass_promtool_and_count_what_happened() {
    let (fleet, server_port, client_ports) = fleet_with_metrics();
    let (code, stderr) = outcome(&fleet.report(0, &["fail2ban", "sshd", "203.0.113.7"]));
    assert_eq!(code, 0, "{stderr}");
    outcome(&fleet.report(0, &["fail2ban", "sshd", "10.0.0.0/8"]));
    for i in 0..2 {
        fleet.wait_applied(i, "ban fail2ban sshd 203.0.113.7 86400");
    }

    let server = metrics_with(
        server_port,
        "banshare_server_reports_total{verdict=\"accepted\"} 1",
    );
    for line in [
        "banshare_server_refused_total{reason=\"min-prefix\"} 1",
        "banshare_server_active_bans{group=\"default\"} 1.0",
        "banshare_server_authorized_keys 2.0",
        "banshare_server_published_total 1",
    ] {
        assert!(server.lines().any(|l| l == line), "{line}:\n{server}");
    }
    assert!(
        server.contains("banshare_server_journal_commit_seconds_count 1"),
        "{server}"
    );
    assert!(
        server.contains("banshare_server_request_seconds_bucket"),
        "{server}"
    );
    let (code, said) = promtool_check(&server);
    assert_eq!(
        code, 0,
        "promtool on the server's metrics: {said}\n{server}"
    );

    let client = metrics_with(
        client_ports[1],
        "banshare_client_applied_total{backend=\"command\",action=\"ban\"} 1",
    );
    assert!(
        client.contains("banshare_client_command_seconds_count 1"),
        "{client}"
    );
    let connected = format!(
        "banshare_client_server_connected{{server=\"tcp://127.0.0.1:{}\"}} 1.0",
        fleet.publish_port
    );
    assert!(client.lines().any(|l| l == connected), "{client}");
    let (code, said) = promtool_check(&client);
    assert_eq!(
        code, 0,
        "promtool on the client's metrics: {said}\n{client}"
    );

    // Anything but GET /metrics is not served.
    assert_eq!(http_get(server_port, "/").map(|r| r.0), Some(404));

    // The client's own status, found through its config, says which side it is.
    let config = fleet.hosts[1].config.to_str().unwrap().to_owned();
    let out = fleet
        .command(ADMIN)
        .args(["status", "--config", &config])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{out:?}");
    assert!(text.starts_with("banshare-client "), "{text}");
    assert!(
        text.contains("applied: 1 bans, 0 unbans; failed: 0"),
        "{text}"
    );
    assert!(text.contains("connected since"), "{text}");
    let out = fleet
        .command(ADMIN)
        .args(["status", "--json", "--config", &config])
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["role"], "client", "{json}");
    assert_eq!(json["servers"][0]["lag"], 0, "{json}");
    // It answers nothing but status.
    let out = fleet
        .command(ADMIN)
        .args(["bans", "--config", &config])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("banshare-client's control socket"));
}

#[test]
fn the_shipped_alerting_rules_pass_promtool() {
    let rules = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/examples/banshare.rules.yml"
    );
    let out = Command::new("promtool")
        .args(["check", "rules", rules])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// A Prometheus scraping `targets` every second, with its data in `dir`.
fn prometheus(dir: &std::path::Path, port: u16, targets: &[u16]) -> Child {
    let targets: Vec<String> = targets.iter().map(|p| format!("'127.0.0.1:{p}'")).collect();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: banshare\n    \
             static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        ),
    )
    .unwrap();
    Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
        .spawn()
        .expect("prometheus (Debian's prometheus package)")
}

/// The value of a PromQL query that returns one number, once Prometheus has one.
fn query(port: u16, promql: &str) -> Option<f64> {
    let encoded: String = promql
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let (_, body) = http_get(port, &format!("/api/v1/query?query={encoded}"))?;
    let answer: serde_json::Value = serde_json::from_str(&body).ok()?;
    let value = answer["data"]["result"].get(0)?["value"][1].as_str()?;
    value.parse().ok()
}

#[test]
fn prometheus_scrapes_a_fleet_and_sees_the_ban_counter_move() {
    let (fleet, server_port, client_ports) = fleet_with_metrics();
    let dir = tempfile::tempdir().unwrap();
    let prometheus_port = free_port();
    let targets = [server_port, client_ports[0], client_ports[1]];
    let mut prometheus = prometheus(dir.path(), prometheus_port, &targets);
    let bans = "sum(banshare_client_applied_total{action=\"ban\"})";
    let scraped = "count(up{job=\"banshare\"} == 1)";
    // Scraped, and the clients' first state copied for the endpoint: no ban yet.
    let ready = poll(Duration::from_secs(60), || {
        let up = query(prometheus_port, scraped)? == 3.0;
        (up && query(prometheus_port, bans)? == 0.0).then_some(())
    });
    let log = std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default();
    assert!(
        ready.is_some(),
        "Prometheus never scraped all three targets:\n{log}"
    );

    let (code, stderr) = outcome(&fleet.report(0, &["fail2ban", "sshd", "203.0.113.8"]));
    assert_eq!(code, 0, "{stderr}");
    let moved = poll(Duration::from_secs(20), || {
        (query(prometheus_port, bans)? == 2.0).then_some(())
    });
    let accepted = "banshare_server_reports_total{verdict=\"accepted\"}";
    let server_saw = poll(Duration::from_secs(10), || {
        (query(prometheus_port, accepted)? == 1.0).then_some(())
    });
    prometheus.kill().unwrap();
    prometheus.wait().unwrap();
    assert!(
        moved.is_some(),
        "the ban counter did not reach 2 on the two clients"
    );
    assert!(
        server_saw.is_some(),
        "the server's accepted counter did not reach 1"
    );
}

// The endpoint under attack by a local user: it must stay bounded in memory, threads and
// descriptors whatever connects to it, and keep answering scrapes (docs/security.md).

/// A count from /proc/PID/status, such as "Threads"; 0 when the process is gone.
fn status_count(pid: i32, field: &str) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn threads(pid: i32) -> usize {
    status_count(pid, "Threads")
}

/// The descriptors process `pid` has open.
fn descriptors(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// A connection to the endpoint, or None when it is not accepted within 200 ms: a
/// listener whose backlog is full drops SYNs, and the kernel's retries take seconds.
fn connect(port: u16) -> Option<TcpStream> {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&address, Duration::from_millis(200)).ok()
}

/// A server serving metrics on the port returned, and answering a scrape.
fn server_with_metrics() -> (Fleet, u16) {
    let port = free_port();
    let mut fleet = Fleet::new(&["web1"], &listen(port), "");
    fleet.start_server();
    wait_for("a first scrape", Duration::from_secs(10), || {
        (http_get(port, "/metrics")?.0 == 200).then_some(())
    });
    (fleet, port)
}

/// Sends `GET /metrics HTTP/1.1\r\nX: ` and then `A` without end, as fast as it can, on a
/// new connection whenever the daemon closes one, until `stop`: the bytes written, and on
/// how many connections.
fn endless_header(port: u16, stop: &AtomicBool) -> (usize, usize) {
    let chunk = vec![b'A'; 64 << 10];
    let (mut sent, mut connections) = (0, 0);
    while !stop.load(Ordering::Relaxed) {
        let Some(mut stream) = connect(port) else {
            continue;
        };
        connections += 1;
        let _ = stream.set_write_timeout(Some(Duration::from_millis(200)));
        if stream.write_all(b"GET /metrics HTTP/1.1\r\nX: ").is_err() {
            continue;
        }
        while !stop.load(Ordering::Relaxed) {
            match stream.write(&chunk) {
                Ok(n) => sent += n,
                Err(_) => break,
            }
        }
    }
    (sent, connections)
}

#[test]
fn an_endless_header_cannot_grow_a_daemons_memory() {
    let _turn = one_at_a_time();
    let (mut fleet, port) = server_with_metrics();
    let pid = fleet.server_pid();
    let base = rss_mb(pid);
    let stop = AtomicBool::new(false);
    let ((sent, connections), most) = std::thread::scope(|scope| {
        let flood = scope.spawn(|| endless_header(port, &stop));
        let until = Instant::now() + Duration::from_secs(3);
        let mut most = base;
        while Instant::now() < until {
            most = most.max(rss_mb(pid));
            std::thread::sleep(Duration::from_millis(20));
        }
        stop.store(true, Ordering::Relaxed);
        (flood.join().unwrap(), most)
    });
    eprintln!(
        "endless headers, {} MB written on {connections} connections in 3 s: the server \
         went from {base:.1} MB to at most {most:.1} MB, and is at {:.1} MB",
        sent >> 20,
        rss_mb(pid)
    );
    assert!(fleet.running(), "the server died:\n{}", fleet.server_log());
    assert!(
        most - base < 16.0,
        "the server grew from {base:.1} MB to {most:.1} MB"
    );
    assert_eq!(http_get(port, "/metrics").map(|r| r.0), Some(200));
}

#[test]
fn idle_connections_take_no_thread_and_few_descriptors_from_a_client() {
    let _turn = one_at_a_time();
    raise_descriptor_limit();
    let port = free_port();
    let mut fleet = Fleet::new(&["web1"], "", "");
    fleet.add_client_config(0, &listen(port));
    fleet.start_server();
    fleet.start_client(0);
    let pid = fleet.client_pid(0);
    wait_for("a first scrape", Duration::from_secs(10), || {
        (http_get(port, "/metrics")?.0 == 200).then_some(())
    });
    let (base_threads, base_descriptors) = (threads(pid), descriptors(pid));
    let (opened, holding) = (AtomicUsize::new(0), AtomicBool::new(true));
    // A ban command has a thread of its own while it runs (its stderr's reader): threads
    // are not counted then.
    let banning = AtomicBool::new(false);
    let (most_threads, most_descriptors) = std::thread::scope(|scope| {
        let flood = scope.spawn(|| {
            let mut streams: VecDeque<TcpStream> = (0..5_000)
                .filter_map(|_| {
                    let stream = connect(port);
                    opened.fetch_add(1, Ordering::Relaxed);
                    stream
                })
                .collect();
            let connected = streams.len();
            // Then new ones as fast as they come, each in place of the test's oldest, so
            // that the endpoint accepts all along.
            let mut more = 0;
            while holding.load(Ordering::Relaxed) {
                if let Some(stream) = connect(port) {
                    streams.pop_front();
                    streams.push_back(stream);
                    more += 1;
                }
            }
            (connected, more)
        });
        let sampler = scope.spawn(|| {
            let mut most = (0, 0);
            while holding.load(Ordering::Relaxed) {
                if !banning.load(Ordering::Relaxed) {
                    most.0 = most.0.max(threads(pid));
                }
                most.1 = most.1.max(descriptors(pid));
                std::thread::sleep(Duration::from_millis(5));
            }
            most
        });
        // While the connections come, a ban goes through and a scrape is answered.
        wait_for("1,000 connections", Duration::from_secs(30), || {
            (opened.load(Ordering::Relaxed) >= 1_000).then_some(())
        });
        let started = Instant::now();
        banning.store(true, Ordering::Relaxed);
        let (code, stderr) = outcome(&fleet.report(0, &["fail2ban", "sshd", "203.0.113.9"]));
        assert_eq!(code, 0, "{stderr}");
        fleet.wait_applied(0, "ban fail2ban sshd 203.0.113.9 86400");
        wait_for(
            "the ban command's thread to end",
            Duration::from_secs(5),
            || (threads(pid) == base_threads).then_some(()),
        );
        banning.store(false, Ordering::Relaxed);
        let applied = "banshare_client_applied_total{backend=\"command\",action=\"ban\"} 1";
        metrics_with(port, applied);
        let took = started.elapsed();
        wait_for("5,000 connections", Duration::from_secs(30), || {
            (opened.load(Ordering::Relaxed) == 5_000).then_some(())
        });
        let scrape = Instant::now();
        metrics_with(port, applied);
        let scrape = scrape.elapsed();
        holding.store(false, Ordering::Relaxed);
        let most = sampler.join().unwrap();
        let (connected, more) = flood.join().unwrap();
        eprintln!(
            "{connected} of 5,000 connections made, then {more} more: a ban reported, \
             applied and scraped in {took:?}, a scrape in {scrape:?}"
        );
        most
    });
    eprintln!(
        "5,000 idle connections: the client had {base_threads} threads and \
         {base_descriptors} descriptors, at most {most_threads} and {most_descriptors}"
    );
    assert!(fleet.running(), "the client died:\n{}", fleet.client_log(0));
    assert_eq!(most_threads, base_threads, "threads");
    // The endpoint's 16 connections and the one being accepted, and what the report and
    // the ban command take for a while (the handoff's sockets, the command's pipes: 3 when
    // there is no flood).
    assert!(
        most_descriptors <= base_descriptors + 16 + 12,
        "{base_descriptors} descriptors before, {most_descriptors} at most"
    );
}

/// The test's soft limit of open files raised to its hard limit, for thousands of
/// connections (the daemons it starts inherit it).
fn raise_descriptor_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
}

/// A pids cgroup of its own for a running process, with room for `room` more tasks; the
/// process goes back to its parent cgroup when this is dropped.
struct PidsCgroup {
    dir: PathBuf,
    parent: PathBuf,
    pid: i32,
}

impl PidsCgroup {
    /// cgroup v1's pids hierarchy, or v2's unified one when it has the pids controller.
    fn enter(pid: i32, room: usize) -> Result<PidsCgroup, String> {
        let parent = Self::parent(pid)?;
        let dir = parent.join(format!("banshare-test-{pid}"));
        std::fs::create_dir(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let group = PidsCgroup { dir, parent, pid };
        group.write("pids.max", &(threads(pid) + room).to_string())?;
        group.write("cgroup.procs", &pid.to_string())?;
        Ok(group)
    }

    /// The process's pids cgroup now, where the new one goes.
    fn parent(pid: i32) -> Result<PathBuf, String> {
        let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        let v1 = Path::new("/sys/fs/cgroup/pids");
        let v2 = Path::new("/sys/fs/cgroup");
        if v1.join("cgroup.procs").exists() {
            let path = own
                .lines()
                .find_map(|l| l.split_once(":pids:").map(|(_, p)| p))
                .ok_or("no pids line in /proc/PID/cgroup")?;
            return Ok(v1.join(path.trim_start_matches('/')));
        }
        let controllers = read(&v2.join("cgroup.controllers"));
        if controllers.split_whitespace().any(|c| c == "pids") {
            let path = own
                .lines()
                .find_map(|l| l.strip_prefix("0::"))
                .ok_or("no cgroup v2 line in /proc/PID/cgroup")?;
            let parent = v2.join(path.trim_start_matches('/'));
            std::fs::write(parent.join("cgroup.subtree_control"), "+pids")
                .map_err(|e| format!("enabling pids under {}: {e}", parent.display()))?;
            return Ok(parent);
        }
        Err("neither /sys/fs/cgroup/pids (v1) nor a v2 hierarchy with pids".into())
    }

    fn write(&self, file: &str, value: &str) -> Result<(), String> {
        let path = self.dir.join(file);
        std::fs::write(&path, value).map_err(|e| format!("{value} > {}: {e}", path.display()))
    }
}

impl Drop for PidsCgroup {
    fn drop(&mut self) {
        let _ = std::fs::write(self.parent.join("cgroup.procs"), self.pid.to_string());
        let _ = poll(Duration::from_secs(5), || {
            std::fs::remove_dir(&self.dir).ok()
        });
    }
}

#[test]
fn a_daemon_with_room_for_two_more_tasks_survives_a_thousand_connections() {
    let _turn = one_at_a_time();
    let (mut fleet, port) = server_with_metrics();
    let pid = fleet.server_pid();
    let group = PidsCgroup::enter(pid, 2)
        .unwrap_or_else(|why| panic!("this test needs a pids cgroup it can write, as root: {why}"));
    let streams: Vec<TcpStream> = (0..1_000).filter_map(|_| connect(port)).collect();
    eprintln!(
        "{} connections held, the server in {} with pids.max {}",
        streams.len(),
        group.dir.display(),
        read(&group.dir.join("pids.max")).trim()
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(fleet.running(), "the server died:\n{}", fleet.server_log());
    assert_eq!(http_get(port, "/metrics").map(|r| r.0), Some(200));
    let (code, stderr) = outcome(&fleet.report(0, &["fail2ban", "sshd", "203.0.113.10"]));
    assert_eq!(code, 0, "{stderr}");
    assert!(fleet.running(), "the server died:\n{}", fleet.server_log());
    drop(streams);
    drop(group);
}

#[test]
fn the_endpoint_outlives_running_out_of_descriptors() {
    let _turn = one_at_a_time();
    let (mut fleet, port) = server_with_metrics();
    let pid = fleet.server_pid();
    // Room for 8 more descriptors: the endpoint's 9th connection finds none.
    let limit = descriptors(pid) + 8;
    let out = Command::new("prlimit")
        .args([
            "--pid",
            &pid.to_string(),
            &format!("--nofile={limit}:{limit}"),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let idle: Vec<TcpStream> = (0..12).filter_map(|_| connect(port)).collect();
    let refused = "metrics endpoint: cannot accept a connection";
    wait_for("the endpoint to run out", Duration::from_secs(5), || {
        fleet.server_log().contains(refused).then_some(())
    });
    let log = fleet.server_log();
    eprintln!("{}", log.lines().find(|l| l.contains(refused)).unwrap());
    // Once descriptors are free again, the endpoint answers.
    drop(idle);
    wait_for("a scrape", Duration::from_secs(5), || {
        (http_get(port, "/metrics")?.0 == 200).then_some(())
    });
    assert!(fleet.running(), "the server died:\n{}", fleet.server_log());
}

#[test]
fn a_head_sent_a_byte_at_a_time_is_closed_at_the_deadline() {
    let (_fleet, port) = server_with_metrics();
    let deadline = banshare::daemon::http::DEADLINE;
    let started = Instant::now();
    let mut stream = connect(port).expect("a connection");
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let head = b"GET /metrics HTTP/1.1\r\nX-Drip: "
        .iter()
        .chain(std::iter::repeat(&b'a'));
    let mut buf = [0u8; 512];
    for byte in head {
        assert!(
            started.elapsed() < deadline + Duration::from_secs(5),
            "the daemon never closed the connection"
        );
        if stream.write_all(&[*byte]).is_err() {
            break;
        }
        // One byte every 500 ms: the read waits that long for the close. An answer (a 408)
        // before the close counts as the close.
        match stream.read(&mut buf) {
            Ok(0) => break,
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {}
            Ok(_) | Err(_) => break,
        }
    }
    let closed = started.elapsed();
    eprintln!("dripped a head for {closed:?}; the deadline is {deadline:?}");
    assert!(
        closed >= deadline - Duration::from_millis(500),
        "closed after {closed:?}, before the deadline of {deadline:?}"
    );
    assert!(
        closed <= deadline + Duration::from_secs(2),
        "closed after {closed:?}, long after the deadline of {deadline:?}"
    );
}

#[test]
fn a_daemon_whose_metrics_thread_ends_exits_70() {
    let port = free_port();
    let fleet = Fleet::new(&["web1"], &listen(port), "");
    fleet.add_client_config(0, &listen(free_port()));
    for (program, config) in [
        (SERVER, &fleet.server_config),
        (CLIENT, &fleet.hosts[0].config),
    ] {
        let log = fleet.dir.path().join("faulty.log");
        // The thread ends as it starts (debug builds only, see src/daemon/worker.rs).
        let mut daemon = Command::new(program)
            .args(["--log", "stderr", "--config"])
            .arg(config)
            .env("BANSHARE_FAULT", "metrics-exits")
            .stderr(std::fs::File::create(&log).unwrap())
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let status = wait_for("the daemon to end", Duration::from_secs(10), || {
            daemon.try_wait().unwrap()
        });
        let said = read(&log);
        assert_eq!(status.code(), Some(70), "{program}: {said}");
        assert!(
            said.contains("the metrics thread has stopped"),
            "{program}: {said}"
        );
    }
}
