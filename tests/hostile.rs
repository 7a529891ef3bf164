//! Injection attempts and malformed messages: rejected with a reason, nothing executed,
//! nothing published, and the server keeps serving.

use crate::common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(3);

/// A file that an injected command would create; unique per test run.
fn canary(fleet: &Fleet) -> PathBuf {
    fleet.dir.path().join("pwned")
}

/// After a sentinel ban has arrived everywhere, no earlier hostile report can still be on
/// its way: the sentinel was published after all of them.
fn assert_nothing_else_applied(fleet: &Fleet, sentinel: &str) {
    fleet.report(0, &["fail2ban", "sshd", sentinel]);
    for host in 0..fleet.hosts.len() {
        fleet.wait_applied(host, &format!("ban fail2ban sshd {sentinel} 86400"));
        assert_eq!(fleet.applied(host).len(), 1, "{:?}", fleet.applied(host));
    }
    assert!(!canary(fleet).exists(), "an injected command ran");
}

#[test]
fn reporter_rejects_injection_with_exit_65() {
    let fleet = Fleet::start(&["web1", "web2"], "", "");
    let touch = format!("x;touch {}", canary(&fleet).display());
    let and_touch = format!("1.2.3.4 && touch {}", canary(&fleet).display());
    let cases: [[&str; 3]; 6] = [
        ["fail2ban", &touch, "203.0.113.40"],
        ["fail2ban", "sshd", "1.2.3.4 && reboot"],
        ["fail2ban", "sshd", &and_touch],
        ["fail2ban", "sshd", "203.0.113.41\n"],
        ["fail2ban", "sshd", "203.0.113.41\nreboot"],
        ["$(touch /tmp/x)", "sshd", "203.0.113.41"],
    ];
    for args in cases {
        let (code, stderr) = outcome(&fleet.report(0, &args));
        assert_eq!(code, 65, "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr:?}");
    }
    let (code, stderr) =
        outcome(&fleet.report(0, &["--bantime", "1;reboot", "f", "j", "203.0.113.42"]));
    assert_eq!(code, 65, "{stderr}");
    // A name that would read as an option where it becomes a command's argument.
    for args in [
        ["--", "-rf", "sshd", "203.0.113.42"],
        ["--", "fail2ban", "--help", "203.0.113.42"],
    ] {
        let (code, stderr) = outcome(&fleet.report(0, &args));
        assert_eq!(code, 65, "{args:?}: {stderr}");
        assert!(stderr.contains("must not start with -"), "{stderr}");
    }
    assert_nothing_else_applied(&fleet, "203.0.113.43");
}

#[test]
fn raw_socket_injection_gets_invalid_replies() {
    let fleet = Fleet::start(&["web1", "web2"], "", "");
    let raw = Raw::connect(
        fleet.report_port,
        Some((&fleet.server_key(), &fleet.host_key("web1"))),
    );
    let touch = format!("x;touch {}", canary(&fleet).display());
    let cases: [[&str; 4]; 8] = [
        ["fail2ban", &touch, "203.0.113.44", ""],
        ["-rf", "sshd", "203.0.113.44", ""],
        ["fail2ban", "--help", "203.0.113.44", ""],
        ["fail2ban", "sshd", "1.2.3.4 && reboot", ""],
        ["fail2ban", "sshd", "203.0.113.44\n", ""],
        ["fail2ban", "sshd", "203.0.113.44", "60; reboot"],
        ["fail\u{0}ban", "sshd", "203.0.113.44", ""],
        ["fail2ban", "ss\u{1b}[2Jhd", "203.0.113.44", ""],
    ];
    for [prog, jail, ip, bantime] in cases {
        let reply = raw
            .request(&report_frames(prog, jail, ip, bantime), WAIT)
            .expect("a reply");
        let reply = texts(&reply);
        assert_eq!(
            reply[..2],
            ["BANSHARE1", "INVALID"],
            "{prog:?} {jail:?} {ip:?}"
        );
        assert!(
            !reply[2].contains('\n'),
            "reason stays on one line: {reply:?}"
        );
    }
    // Wrong shapes are answered too, and the server goes on.
    for frames in [
        vec![b"BANSHARE1".as_slice(), b"REPORT"],
        vec![b"BANSHARE1".as_slice(), b"DROP TABLE", b"x"],
        vec![
            b"BANSHARE7".as_slice(),
            b"REPORT",
            b"a",
            b"b",
            b"203.0.113.45",
            b"",
        ],
        vec![b"garbage".as_slice(), b"\xff\xfe", b"", b"", b""],
    ] {
        let reply = texts(&raw.request(&frames, WAIT).expect("a reply"));
        assert_eq!(reply[1], "INVALID", "{reply:?}");
    }
    assert_nothing_else_applied(&fleet, "203.0.113.46");
}

#[test]
fn ten_megabyte_frame_is_dropped_and_the_server_carries_on() {
    let fleet = Fleet::start(&["web1"], "", "");
    let raw = Raw::connect(
        fleet.report_port,
        Some((&fleet.server_key(), &fleet.host_key("web1"))),
    );
    let huge = vec![b'A'; 10 * 1024 * 1024];
    let frames = [
        b"BANSHARE1".as_slice(),
        b"REPORT",
        b"fail2ban",
        &huge,
        b"203.0.113.47",
        b"",
    ];
    assert_eq!(
        raw.request(&frames, WAIT),
        None,
        "oversized frame must not be answered"
    );
    let (code, stderr) = outcome(&fleet.report(0, &["fail2ban", "sshd", "203.0.113.48"]));
    assert_eq!(code, 0, "{stderr}");
    fleet.wait_applied(0, "ban fail2ban sshd 203.0.113.48 86400");
    assert_eq!(fleet.applied(0).len(), 1);
}

#[test]
fn a_request_of_more_frames_than_any_request_has_cuts_the_key_off() {
    let fleet = Fleet::start(&["web1", "web2"], "", "");
    let raw = Raw::connect(
        fleet.report_port,
        Some((&fleet.server_key(), &fleet.host_key("web1"))),
    );
    // Frames after a report's six are what a later revision may add, up to 16 in all
    // (docs/protocol.md, section 9): answered as the report they start with.
    let mut frames = report_frames("fail2ban", "sshd", "203.0.113.48", "");
    frames.extend([b"later".as_slice(); 10]);
    let reply = raw.request(&frames, WAIT).expect("a reply");
    assert_eq!(texts(&reply), ["BANSHARE1", "ACCEPTED", ""]);
    frames.push(b"one too many");
    assert_eq!(raw.request(&frames, WAIT), None, "not answered");
    // Refused from now on, in the handshake: the report is spooled, not answered.
    let (code, stderr) = outcome(&fleet.report(0, &["fail2ban", "sshd", "203.0.113.50"]));
    assert_eq!(code, 75, "{stderr}");
    let fingerprint = fleet.host_key("web1").public.fingerprint();
    let log = fleet.server_log();
    assert_eq!(
        log.matches(&format!(
            "cut off web1 (key {fingerprint}) at 127.0.0.1 for 15 minutes: it sent a request \
             of 17 frames, where requests have at most 16"
        ))
        .count(),
        1,
        "{log}"
    );
    // Others carry on.
    let (code, stderr) = outcome(&fleet.report(1, &["fail2ban", "sshd", "203.0.113.51"]));
    assert_eq!(code, 0, "{stderr}");
    fleet.wait_applied(1, "ban fail2ban sshd 203.0.113.51 86400");
    let status = fleet.admin(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["counters"]["cut_off"], 1, "{status}");
}

/// Cutting a key off closes every connection (docs/protocol.md, section 1), and with them
/// the requests other hosts had in flight: their reporters send them again once connected
/// again, rather than wait out their timeout and spool. The server is stopped
/// while the attack and the reports queue up, so that all of them are in flight at once.
#[test]
fn reports_in_flight_when_a_key_is_cut_off_are_sent_again() {
    use nix::sys::signal::Signal;
    use std::process::Stdio;
    // One attacker a round, since each is cut off for 15 minutes.
    let attackers = ["mal1", "mal2", "mal3", "mal4", "mal5"];
    let names: Vec<&str> = ["web1", "web2"].iter().chain(&attackers).copied().collect();
    let mut fleet = Fleet::new(&names, "", "");
    fleet.start_server();
    fleet.start_client(0);
    fleet.start_client(1);
    let mut worst = Duration::ZERO;
    for (round, attacker) in attackers.iter().enumerate() {
        // The clients' handoffs keep their connections open: the reports go straight in.
        for host in 0..2 {
            let ip = format!("203.0.113.{}", 61 + 2 * round + host);
            fleet.report(host, &["fail2ban", "sshd", &ip]);
        }
        fleet.signal_server(Signal::SIGSTOP);
        let mut attack = report_frames("fail2ban", "sshd", "203.0.113.99", "");
        attack.extend([b"too many".as_slice(); 11]);
        let mal = Raw::connect(
            fleet.report_port,
            Some((&fleet.server_key(), &fleet.host_key(attacker))),
        );
        mal.socket
            .send_multipart(attack.iter().copied(), 0)
            .unwrap();
        let started = std::time::Instant::now();
        let reports: Vec<_> = (0..4)
            .map(|i| {
                let ip = format!("198.51.100.{}", round * 10 + i + 1);
                fleet
                    .report_command(i % 2, &["fail2ban", "sshd", &ip])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        fleet.signal_server(Signal::SIGCONT);
        for child in reports {
            let (code, stderr) = outcome(&child.wait_with_output().unwrap());
            assert_eq!(code, 0, "round {round}: {stderr}");
        }
        worst = worst.max(started.elapsed());
        fleet.wait_server_logged("the cut-off", &format!("cut off {attacker} "));
        drop(mal);
    }
    eprintln!("the slowest round of reports took {worst:?}");
    for host in 0..2 {
        assert_eq!(fleet.spooled(host), 0);
    }
}
