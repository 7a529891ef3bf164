//! Abuse limits and the audit trail: one key that floods is refused with a reason while
//! the others carry on, the table has a ceiling, refusals cannot flood the log, and every
//! accepted ban is logged once with where it came from.

use crate::common;

use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(3);

#[test]
fn a_key_over_its_rate_is_held_with_a_reason_and_others_carry_on() {
    let fleet = Fleet::start(&["web1", "web2"], "report-burst = 5\nreport-rate = 1\n", "");
    let codes: Vec<(i32, String)> = (0..8)
        .map(|i| {
            let ip = format!("203.0.113.{i}");
            outcome(&fleet.report(0, &["-v", "fail2ban", "sshd", &ip]))
        })
        .collect();
    assert!(
        codes[..5].iter().all(|(_, e)| e.contains("accepted")),
        "{codes:?}"
    );
    for (code, stderr) in &codes[5..] {
        assert_eq!(*code, 0, "{stderr}");
        assert!(
            stderr.contains("pending: held: web1 is over its allowance of 5 reports at once"),
            "{stderr}"
        );
    }
    // Another key has its own allowance.
    let (code, stderr) = outcome(&fleet.report(1, &["fail2ban", "sshd", "203.0.113.50"]));
    assert_eq!(code, 0, "{stderr}");
    let status = fleet.admin(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["counters"]["pending"], 3, "{status}");
    assert_eq!(status["pending"], 3, "{status}");
    assert_eq!(status["active_bans"], 6, "{status}");
    // Logged with the key's name, fingerprint and address.
    let fingerprint = fleet.host_key("web1").public.fingerprint();
    let log = fleet.server_log();
    assert!(
        log.contains(&format!(
            "pending 203.0.113.5 (fail2ban sshd) from web1 (key {fingerprint}) at 127.0.0.1: \
             held: web1 is over its allowance"
        )),
        "{log}"
    );
}

#[test]
fn refusals_and_held_reports_cannot_flood_the_log() {
    let fleet = Fleet::start(&["web1"], "report-burst = 1\nreport-rate = 1\n", "");
    let raw = Raw::connect(
        fleet.report_port,
        Some((&fleet.server_key(), &fleet.host_key("web1"))),
    );
    for i in 0..300 {
        let ip = format!("198.18.{}.{}", i / 250, i % 250 + 1);
        let reply = raw.request(&report_frames("fail2ban", "sshd", &ip, ""), WAIT);
        let reply = texts(&reply.expect("every report is answered"));
        let expected = if i == 0 { "ACCEPTED" } else { "PENDING" };
        assert_eq!(reply[1], expected, "{reply:?}");
    }
    for i in 0..300 {
        let ip = format!("127.0.{}.{}", i / 250, i % 250 + 1);
        let reply = raw.request(&report_frames("fail2ban", "sshd", &ip, ""), WAIT);
        let reply = texts(&reply.expect("every report is answered"));
        assert_eq!(reply[1], "REFUSED", "{reply:?}");
    }
    let log = fleet.server_log();
    let (held, refused) = (
        log.matches("pending 198.18.").count(),
        log.matches("refused 127.0.").count(),
    );
    assert!(
        held + refused <= 20,
        "{held} and {refused} lines for 299 held and 300 refused"
    );
}

#[test]
fn the_table_has_a_ceiling_that_duplicates_do_not_hit() {
    // The ceiling counts the bans of every group.
    let groups = "max-bans = 3\n[[groups]]\nname = \"web\"\njails = [\"nginx\"]\n";
    let fleet = Fleet::start(&["web1"], groups, "");
    for (jail, ip) in [
        ("sshd", "203.0.113.1"),
        ("nginx", "203.0.113.2"),
        ("sshd", "203.0.113.3"),
    ] {
        let (code, stderr) = outcome(&fleet.report(0, &["fail2ban", jail, ip]));
        assert_eq!(code, 0, "{stderr}");
    }
    let (code, stderr) = outcome(&fleet.report(0, &["fail2ban", "nginx", "203.0.113.4"]));
    assert_eq!(code, 77, "{stderr}");
    assert!(
        stderr.contains("the server holds 3 active bans, its max-bans"),
        "{stderr}"
    );
    // Already in the table: a duplicate, not a new ban.
    let out = fleet.report(0, &["-v", "fail2ban", "nginx", "203.0.113.2"]);
    let (code, stderr) = outcome(&out);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("duplicate"), "{stderr}");
}

#[test]
fn every_accepted_ban_is_logged_once_with_its_origin() {
    let fleet = Fleet::start(&["web1"], "", "");
    fleet.report(0, &["fail2ban", "sshd", "203.0.113.9"]);
    fleet.report(0, &["fail2ban", "sshd", "203.0.113.9"]);
    fleet.wait_applied(0, "ban fail2ban sshd 203.0.113.9 86400");
    let fingerprint = fleet.host_key("web1").public.fingerprint();
    let line = format!(
        "accepted 203.0.113.9 (fail2ban sshd) from web1 (key {fingerprint}) at 127.0.0.1, \
         bantime 86400s"
    );
    assert_eq!(
        fleet.server_log().matches(&line).count(),
        1,
        "{}",
        fleet.server_log()
    );
    // Each report is a connection, but only the host's first one is logged.
    assert_eq!(
        fleet.server_log().matches("report: accepted web1").count(),
        1,
        "{}",
        fleet.server_log()
    );
    let bans = fleet.admin(&["bans"]);
    let bans = String::from_utf8_lossy(&bans.stdout);
    let row = bans.lines().find(|l| l.contains("203.0.113.9")).unwrap();
    assert!(row.contains("web1") && row.contains("sshd"), "{bans}");
}

#[test]
fn no_report_shortens_a_ban_and_every_reporter_is_on_record() {
    let mut fleet = Fleet::start(&["web1", "mal1", "web2"], "dedup-window = \"1s\"\n", "");
    let (code, stderr) =
        outcome(&fleet.report(0, &["--bantime", "-1", "fail2ban", "sshd", "203.0.113.60"]));
    assert_eq!(code, 0, "{stderr}");
    for host in 0..3 {
        fleet.wait_applied(host, "ban fail2ban sshd 203.0.113.60 -1");
    }
    // Past the de-duplication window, another host asks for one second, and an honest one
    // for ten minutes: neither may end the permanent ban.
    std::thread::sleep(Duration::from_millis(1100));
    for (host, bantime) in [(1, "1"), (2, "600")] {
        let out = fleet.report(
            host,
            &[
                "-v",
                "--bantime",
                bantime,
                "fail2ban",
                "sshd",
                "203.0.113.60",
            ],
        );
        let (code, stderr) = outcome(&out);
        assert_eq!(code, 0, "{stderr}");
        assert!(stderr.contains("duplicate"), "{stderr}");
    }
    // A client that catches up after the one second has passed keeps the ban.
    std::thread::sleep(Duration::from_millis(1100));
    fleet.stop_client(0);
    fleet.start_client(0);
    wait_for("web1 to resynchronise", WAIT, || {
        fleet
            .client_log(0)
            .matches("resynchronised")
            .nth(1)
            .map(|_| ())
    });
    assert!(
        !fleet.applied(0).iter().any(|l| l.starts_with("unban")),
        "{:?}",
        fleet.applied(0)
    );
    let bans = fleet.admin(&["bans", "--json"]);
    let bans: serde_json::Value = serde_json::from_slice(&bans.stdout).unwrap();
    let ban = &bans[0];
    assert_eq!(
        (&ban["ip"], &ban["expires"]),
        (&"203.0.113.60".into(), &serde_json::Value::Null),
        "{bans}"
    );
    let reporters: Vec<&str> = ban["reporters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(reporters, ["web1", "mal1", "web2"], "{bans}");
    let table = String::from_utf8(fleet.admin(&["bans"]).stdout).unwrap();
    assert!(table.contains("web1, mal1, web2"), "{table}");
    // The list survives a restart of the server.
    fleet.signal_server(nix::sys::signal::Signal::SIGTERM);
    fleet.wait_server();
    fleet.start_server();
    let bans = fleet.admin(&["bans", "--json"]);
    let bans: serde_json::Value = serde_json::from_slice(&bans.stdout).unwrap();
    assert_eq!(
        bans[0]["reporters"].as_array().map(Vec::len),
        Some(3),
        "{bans}"
    );
}
