//! An authorized but malicious reporter attacks while a legitimate host keeps reporting:
//! a burst of 10,000 reports, protected ranges and whole address families, shell and
//! control characters in every field, oversized, truncated and garbage messages, and a
//! legacy message with 1,000 semicolons. The server and every client stay up, every
//! legitimate ban is applied within normal time, and nothing harmful is applied or run.

use crate::common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use banshare::sockets::transport;
use common::*;

/// The server's default per-key limits, which the common fleet raises for other tests.
const DEFAULT_LIMITS: &str = "report-burst = 200\nreport-rate = 60\n";
/// Far above what a legitimate ban takes here (milliseconds), far below a starved server.
const NORMAL: Duration = Duration::from_secs(5);
/// The hosts running a client: web1, web2, mal1 and mal2.
const CLIENTS: usize = 4;

/// Sends the messages as fast as the server takes them on one CURVE connection as `host`,
/// and counts the replies; it stops waiting when none has come for 3 s.
fn burst(fleet: &Fleet, host: &str, messages: &[Vec<Vec<u8>>]) -> usize {
    let ctx = zmq::Context::new();
    let socket = transport::client_socket(
        &ctx,
        zmq::DEALER,
        &fleet.server_key(),
        &fleet.host_key(host),
    )
    .unwrap();
    socket.set_sndhwm(0).unwrap();
    socket
        .connect(&format!("tcp://127.0.0.1:{}", fleet.report_port))
        .unwrap();
    // The empty frame stands in for the delimiter a REQ socket adds. At most 500 wait for
    // their reply: the server drops replies that a peer leaves unread beyond its queue.
    let delimiter = Vec::new();
    let mut replies = 0;
    for (sent, frames) in messages.iter().enumerate() {
        while sent - replies >= 500 && socket.poll(zmq::POLLIN, 3000).unwrap() > 0 {
            socket.recv_multipart(0).unwrap();
            replies += 1;
        }
        socket
            .send_multipart(std::iter::once(&delimiter).chain(frames), 0)
            .unwrap();
    }
    while socket.poll(zmq::POLLIN, 3000).unwrap() > 0 {
        socket.recv_multipart(0).unwrap();
        replies += 1;
    }
    replies
}

fn frames(parts: &[&[u8]]) -> Vec<Vec<u8>> {
    parts.iter().map(|p| p.to_vec()).collect()
}

/// Hostile content: each is refused or invalid, none is applied.
fn hostile_messages(canary: &str) -> Vec<Vec<Vec<u8>>> {
    let touch = format!(";touch {canary}");
    let subst = format!("$(touch {canary})");
    let mut messages = Vec::new();
    for ip in [
        "127.0.0.0/8",
        "0.0.0.0/0",
        "::/0",
        "169.254.0.0/16",
        "ff02::1",
    ] {
        messages.push(frames(&report_frames("fail2ban", "sshd", ip, "")));
    }
    for evil in [
        touch.as_str(),
        subst.as_str(),
        "`reboot`",
        "a|b",
        "a\nb",
        "\u{1b}[2J",
        "x\u{0}y",
    ] {
        for field in 0..4 {
            let mut report = ["fail2ban", "sshd", "203.0.113.66", ""];
            report[field] = evil;
            let [prog, jail, ip, bantime] = report;
            messages.push(frames(&report_frames(prog, jail, ip, bantime)));
        }
    }
    // Truncated and garbage shapes, and the legacy format at its worst.
    messages.push(frames(&[b"BANSHARE1", b"REPORT", b"fail2ban"]));
    messages.push(frames(&[b"BANSHARE1"]));
    messages.push(vec![vec![0xff; 300]; 5]);
    messages.push(vec![b";".repeat(1000)]);
    messages.push(vec![
        format!("fail2ban;sshd;203.0.113.67{touch};web1").into_bytes()
    ]);
    messages
}

/// A frame over the server's limit (4096 bytes): libzmq drops the connection unanswered.
fn oversized() -> Vec<Vec<Vec<u8>>> {
    let field = "9".repeat(70_000);
    vec![frames(&report_frames("fail2ban", "sshd", &field, ""))]
}

/// More frames than any request has: the key is cut off, unanswered.
fn too_many_frames() -> Vec<Vec<Vec<u8>>> {
    vec![vec![vec![0xff; 300]; 50]]
}

/// Reports `ip` from web1 and waits until every host has applied it; returns how long that
/// took.
fn legitimate_ban(fleet: &Fleet, ip: &str) -> Duration {
    let started = Instant::now();
    let (code, stderr) = outcome(&fleet.report(0, &["fail2ban", "sshd", ip]));
    assert_eq!(code, 0, "legitimate report {ip}: {stderr}");
    for host in 0..CLIENTS {
        fleet.wait_applied(host, &format!("ban fail2ban sshd {ip} 86400"));
    }
    started.elapsed()
}

#[test]
fn a_malicious_reporter_harms_nobody_while_a_legitimate_host_keeps_reporting() {
    // mal3 runs no client: it is cut off, subscription and all.
    let mut fleet = Fleet::new(
        &["web1", "web2", "mal1", "mal2", "mal3"],
        DEFAULT_LIMITS,
        "",
    );
    // The promise is a ban on every host within NORMAL; web1's reporter waiting only the
    // common 2 s for its answer is a different matter.
    edit(
        &fleet.hosts[0].config,
        "report-timeout = \"2s\"",
        "report-timeout = \"5s\"",
    );
    fleet.start_server();
    for host in 0..CLIENTS {
        fleet.start_client(host);
    }
    let canary = fleet.dir.path().join("pwned");
    let hostile = hostile_messages(&canary.display().to_string());
    let flood: Vec<Vec<Vec<u8>>> = (0..10_000)
        .map(|i| {
            let ip = format!("198.18.{}.{}", i / 250, i % 250 + 1);
            frames(&report_frames("fail2ban", "sshd", &ip, ""))
        })
        .collect();
    // The time a legitimate ban takes to reach every host, before the attack.
    let mut baseline: Vec<Duration> = (0..10)
        .map(|i| legitimate_ban(&fleet, &format!("100.65.0.{}", i + 1)))
        .collect();
    baseline.sort();
    let attacking = AtomicBool::new(true);
    let (mut latencies, answered) = std::thread::scope(|scope| {
        let attack = scope.spawn(|| {
            let answered = (
                burst(&fleet, "mal2", &hostile),
                burst(&fleet, "mal1", &flood),
                burst(&fleet, "mal2", &oversized()) + burst(&fleet, "mal3", &too_many_frames()),
            );
            attacking.store(false, Ordering::Relaxed);
            answered
        });
        // web1 reports about ten times a second until the attack is over.
        let mut latencies = Vec::new();
        while attacking.load(Ordering::Relaxed) || latencies.len() < 20 {
            let i = latencies.len();
            let ip = format!("100.64.{}.{}", i / 250, i % 250 + 1);
            latencies.push(legitimate_ban(&fleet, &ip));
            std::thread::sleep(Duration::from_millis(100));
        }
        (latencies, attack.join().unwrap())
    });
    latencies.sort();
    let worst = *latencies.last().unwrap();
    eprintln!(
        "before the attack: median {:?}, worst {:?}; under attack: {} legitimate bans, \
         median {:?}, worst {worst:?} from report to applied on all 4 hosts; {} of {} hostile \
         messages and {} of 10000 flood reports answered",
        baseline[baseline.len() / 2],
        baseline[baseline.len() - 1],
        latencies.len(),
        latencies[latencies.len() / 2],
        answered.0,
        hostile.len(),
        answered.1
    );
    assert!(
        worst < NORMAL,
        "a legitimate ban took {worst:?} under attack"
    );

    // Everything was answered, so the server kept up, except the oversized message; the
    // flood was held past the key's allowance, to be let through at its rate.
    assert_eq!(
        answered.0,
        hostile.len(),
        "every hostile message is answered"
    );
    assert_eq!(answered.1, 10_000, "every flood report is answered");
    assert_eq!(answered.2, 0, "the oversized messages are not answered");
    let status = fleet.admin(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    // The allowance is 200 at once and one more a second while the flood lasts (well
    // under a minute): everything else is held.
    let held = status["counters"]["pending"].as_u64().unwrap();
    assert!(held >= 10_000 - 200 - 60, "{status}");
    let flood_banned = fleet
        .applied(0)
        .iter()
        .filter(|l| l.contains(" 198.18."))
        .count();
    // One a second, as the allowance refills, while the fleet ran.
    let uptime = status["uptime_seconds"].as_u64().unwrap() as usize;
    assert!(
        flood_banned <= 200 + uptime + 2,
        "{flood_banned} flood bans applied"
    );
    let refused = &status["counters"]["refused"];
    assert_eq!(refused.get("rate-limit"), None, "{status}");
    // 127.0.0.0/8, 0.0.0.0/0, ::/0 and 169.254.0.0/16 are too wide; ff02::1 is multicast.
    assert_eq!(refused["min-prefix"], 4, "{status}");
    assert_eq!(refused["protected"], 1, "{status}");
    // The message of 50 frames cut mal3 off.
    assert_eq!(status["counters"]["cut_off"], 1, "{status}");

    // Up, and nothing harmful applied or run anywhere.
    assert!(
        fleet.running(),
        "the server and every client are still running"
    );
    assert!(!canary.exists(), "an injected command ran");
    for host in 0..CLIENTS {
        for line in fleet.applied(host) {
            let ip = line.split(' ').nth(3).unwrap_or_default();
            let legitimate = ip.starts_with("100.64.") || ip.starts_with("100.65.");
            let flood_allowance = ip.starts_with("198.18.");
            assert!(
                legitimate || flood_allowance,
                "applied on host {host}: {line}"
            );
        }
    }
}
