//! Several servers that share one ban table (docs/ha.md): each server has its own key,
//! journal and hosts, and follows the others' publish sockets. Real binaries on loopback.

use crate::common;

use std::time::Duration;

use common::servers::*;
use common::*;
use nix::sys::signal::Signal;

fn local(_: usize) -> String {
    "127.0.0.1".into()
}

fn peered_here(servers: usize, server_extra: &str) -> Vec<Fleet> {
    peered(servers, server_extra, local)
}

#[test]
fn a_ban_reported_to_one_server_reaches_the_hosts_of_every_server() {
    let _serial = one_at_a_time();
    let mut fleets = peered_here(3, "");
    start_all(&mut fleets);
    let ips: Vec<String> = (1..=20).map(|i| format!("203.0.113.{i}")).collect();
    assert_eq!(fleets[0].report_all(0, &ips).len(), ips.len());
    for fleet in &fleets {
        fleet.assert_applied_once(0, &ips);
    }
    assert_eq!(converged(&fleets).len(), ips.len());
    // Each ban crossed each link once: no server published more than the 20 bans. A
    // server that started before its peers reads their tables once it reaches them,
    // reconnecting every 1 to 2 s.
    for fleet in &fleets {
        wait_synced(fleet);
        let status: serde_json::Value =
            serde_json::from_str(&admin_ok(fleet, &["status", "--json"])).unwrap();
        assert_eq!(status["counters"]["published"], 20, "{status}");
        let peers = status["peers"].as_array().unwrap();
        assert_eq!(peers.len(), 2, "{status}");
        assert!(
            peers
                .iter()
                .all(|p| p["connected"] == true && p["synced"] == true),
            "{status}"
        );
    }
    let text = admin_ok(&fleets[0], &["status"]);
    assert!(
        text.contains("peers:\n  bs2 ") && text.contains("connected, seq 20"),
        "{text}"
    );
    // An unban on another server lifts it on every host, once.
    admin_ok(&fleets[1], &["unban", "203.0.113.5"]);
    for fleet in &fleets {
        fleet.wait_applied(0, "unban fail2ban sshd 203.0.113.5 86400");
    }
    assert!(!converged(&fleets).contains_key("203.0.113.5"));
    // A report after the unban bans again, everywhere.
    let (code, stderr) = outcome(&fleets[2].report(0, &["-v", "fail2ban", "sshd", "203.0.113.5"]));
    assert!(code == 0 && stderr.contains("accepted"), "{stderr}");
    assert!(converged(&fleets).contains_key("203.0.113.5"));
    for fleet in &fleets {
        wait_for("the ban again", Duration::from_secs(10), || {
            let bans = fleet
                .applied(0)
                .iter()
                .filter(|l| l.contains(" 203.0.113.5 "))
                .count();
            (bans == 3).then_some(())
        });
    }
}

#[test]
fn a_server_killed_and_restarted_catches_up_and_lifts_what_was_unbanned_meanwhile() {
    let _serial = one_at_a_time();
    let mut fleets = peered_here(3, "durability = \"write\"");
    start_all(&mut fleets);
    let before: Vec<String> = (1..=10).map(|i| format!("198.51.100.{i}")).collect();
    assert_eq!(fleets[0].report_all(0, &before).len(), before.len());
    converged(&fleets);
    fleets[2].signal_server(Signal::SIGKILL);
    fleets[2].wait_server();
    // While it is down: new bans, and an unban of one it holds in its journal.
    let during: Vec<String> = (1..=10)
        .map(|i| format!("198.51.100.{}", 100 + i))
        .collect();
    assert_eq!(fleets[1].report_all(0, &during).len(), during.len());
    admin_ok(&fleets[0], &["unban", "198.51.100.3"]);
    fleets[2].start_server();
    let table = converged(&fleets);
    assert_eq!(table.len(), 19, "{table:?}");
    assert!(!table.contains_key("198.51.100.3"));
    // Its host got what it missed, once, and the unban; nothing was applied twice.
    fleets[2].wait_applied(0, "unban fail2ban sshd 198.51.100.3 86400");
    for ip in before.iter().chain(&during) {
        wait_for(
            &format!("web3 to ban {ip}"),
            Duration::from_secs(20),
            || {
                let line = format!("ban fail2ban sshd {ip} 86400");
                fleets[2].applied(0).contains(&line).then_some(())
            },
        );
    }
    std::thread::sleep(Duration::from_millis(500));
    let applied = fleets[2].applied(0);
    assert_eq!(
        applied.len(),
        21,
        "each ban once, and the unban: {applied:?}"
    );
    assert!(
        fleets[2].server_log().contains("caught up with peer bs1"),
        "{}",
        fleets[2].server_log()
    );
}

#[test]
fn a_host_that_follows_every_server_gets_every_ban_once_while_one_is_down() {
    let _serial = one_at_a_time();
    let mut fleets = peered_here(3, "durability = \"write\"");
    follow_every_server(&fleets, local);
    // A long timeout, whose even share (4 s) a report would wait for a dead server.
    let timeout = ("report-timeout = \"2s\"", "report-timeout = \"12s\"");
    edit(&fleets[0].hosts[0].config, timeout.0, timeout.1);
    start_all(&mut fleets);
    let ip = |i: usize| format!("203.0.113.{}", 100 + i);
    let first: Vec<String> = (1..=10).map(ip).collect();
    assert_eq!(fleets[0].report_all(0, &first).len(), 10);
    for fleet in &fleets {
        fleet.assert_applied_once(0, &first);
    }
    // The reporter spreads its reports over the servers.
    let took = fleets
        .iter()
        .filter(|f| {
            let status = admin_ok(f, &["status", "--json"]);
            let status: serde_json::Value = serde_json::from_str(&status).unwrap();
            status["counters"]["accepted"].as_u64() > Some(0)
        })
        .count();
    assert!(took >= 2, "10 reports went to {took} server");
    // The first server is killed: reporters go to the others, and every host, web1 too,
    // still gets every ban, through the others.
    fleets[0].signal_server(Signal::SIGKILL);
    fleets[0].wait_server();
    let during: Vec<String> = (11..=20).map(ip).collect();
    let started = std::time::Instant::now();
    for ip in &during {
        let asked = std::time::Instant::now();
        let out = fleets[0].report(0, &["fail2ban", "sshd", ip]);
        assert!(out.status.success(), "web1 reports to another server");
        // Those that asked the dead server first ask the next half a second later.
        assert!(
            asked.elapsed() < Duration::from_secs(3),
            "{:?}",
            asked.elapsed()
        );
    }
    eprintln!(
        "10 reports with one of three servers down: {:?}",
        started.elapsed()
    );
    let mut all = first.clone();
    all.extend(during);
    for fleet in &fleets {
        fleet.assert_applied_once(0, &all);
    }
    // It comes back and catches up; nothing is applied twice anywhere.
    fleets[0].start_server();
    let after: Vec<String> = (21..=25).map(ip).collect();
    assert_eq!(fleets[1].report_all(0, &after).len(), 5);
    all.extend(after);
    assert_eq!(converged(&fleets).len(), 25);
    for fleet in &fleets {
        fleet.assert_applied_once(0, &all);
    }
    // An unban on one server: each host runs it once, though three servers publish it.
    admin_ok(&fleets[2], &["unban", "203.0.113.107"]);
    for fleet in &fleets {
        fleet.wait_applied(0, "unban fail2ban sshd 203.0.113.107 86400");
    }
    std::thread::sleep(Duration::from_millis(500));
    for fleet in &fleets {
        let unbans = fleet
            .applied(0)
            .iter()
            .filter(|l| l.starts_with("unban"))
            .count();
        assert_eq!(unbans, 1, "{:?}", fleet.applied(0));
    }
    assert!(!converged(&fleets).contains_key("203.0.113.107"));
}
