//! Fleet policy (README "Policies"), with the real binaries: IPv6 aggregation, escalation,
//! confirmation by several hosts, a wave of reports beyond a host's allowance, the dry run
//! of the log backend, and what a reload that protects a network does to what is already
//! banned.

use crate::common;

use std::time::Duration;

use common::servers::*;
use common::*;
use nix::sys::signal::Signal;

#[test]
fn protecting_a_network_on_reload_lifts_its_active_bans_on_every_host() {
    let fleet = Fleet::start(&["web1", "web2", "mail1"], "", "");
    for ip in ["203.0.113.7", "198.51.100.7", "192.0.2.7"] {
        let (code, stderr) = outcome(&fleet.report(0, &["fail2ban", "sshd", ip]));
        assert_eq!(code, 0, "{stderr}");
    }
    for host in 0..3 {
        fleet.wait_applied(host, "ban fail2ban sshd 192.0.2.7 86400");
    }

    // The server's protected list grows: the ban inside it is lifted everywhere.
    let protected = "protected = [\"203.0.113.0/24\"]\nstate-dir";
    reload_server(&fleet, "state-dir", protected);
    for host in 0..3 {
        assert_eq!(
            fleet.wait_applied(host, "unban fail2ban sshd 203.0.113.7 86400"),
            1
        );
    }
    let log = fleet.server_log();
    assert!(
        log.contains("lifted 203.0.113.7 (reported by web1): 203.0.113.7 covers protected address 203.0.113.0/24"),
        "{log}"
    );
    let bans = String::from_utf8_lossy(&fleet.admin(&["bans"]).stdout).into_owned();
    assert!(!bans.contains("203.0.113.7"), "{bans}");

    // One host's own protected list grows: that host alone lifts the ban inside it.
    fleet.add_client_config(2, "protected = [\"198.51.100.0/24\"]\n");
    fleet.signal_client(2, Signal::SIGHUP);
    assert_eq!(
        fleet.wait_applied(2, "unban fail2ban sshd 198.51.100.7 86400"),
        1
    );
    let log = fleet.client_log(2);
    assert!(
        log.contains("lifting 198.51.100.7 (reported by web1): 198.51.100.7 covers protected address 198.51.100.0/24"),
        "{log}"
    );
    // A sentinel: once it has arrived everywhere, an unban on the others would have too.
    fleet.report(1, &["fail2ban", "sshd", "192.0.2.8"]);
    for host in 0..3 {
        fleet.wait_applied(host, "ban fail2ban sshd 192.0.2.8 86400");
    }
    for host in 0..2 {
        let applied = fleet.applied(host);
        assert!(
            !applied
                .iter()
                .any(|l| l.starts_with("unban") && l.contains("198.51.100.7")),
            "{applied:?}"
        );
    }
    // The ban stays on the server, and the protecting host does not take it back when it
    // catches up after a restart.
    let bans = String::from_utf8_lossy(&fleet.admin(&["bans"]).stdout).into_owned();
    assert!(bans.contains("198.51.100.7"), "{bans}");
    let mut fleet = fleet;
    fleet.stop_client(2);
    fleet.start_client(2);
    fleet.wait_logged(2, "a catch-up", Duration::from_secs(10), || {
        (fleet.client_log(2).matches("resynchronised").count() >= 2).then_some(())
    });
    let lines = fleet.applied(2);
    let again = lines.iter().filter(|l| l.contains("198.51.100.7")).count();
    assert_eq!(again, 2, "{lines:?}");
    assert!(
        fleet
            .client_log(2)
            .contains("not applying ban of 198.51.100.7"),
        "{}",
        fleet.client_log(2)
    );
}

/// Reports `ip` from host `i` with `-v`, and returns what banshare-report said.
fn report_verbose(fleet: &Fleet, i: usize, ip: &str) -> String {
    let (code, stderr) = outcome(&fleet.report(i, &["-v", "fail2ban", "sshd", ip]));
    assert_eq!(code, 0, "{stderr}");
    stderr
}

/// `banshare bans --json`, or `bans --pending --json`: one object per network.
fn bans_json(fleet: &Fleet, pending: bool) -> Vec<serde_json::Value> {
    let args: &[&str] = if pending {
        &["bans", "--pending", "--json"]
    } else {
        &["bans", "--json"]
    };
    serde_json::from_str(&admin_ok(fleet, args)).unwrap()
}

/// The networks of `bans_json`.
fn listed(fleet: &Fleet, pending: bool) -> Vec<String> {
    let bans = bans_json(fleet, pending);
    bans.iter()
        .map(|b| b["ip"].as_str().unwrap().to_owned())
        .collect()
}

/// The names in a list of a ban's, such as `reporters` or `history`.
fn names(ban: &serde_json::Value, list: &str) -> Vec<String> {
    let items = ban[list].as_array().unwrap().iter();
    items
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect()
}

/// Replaces `old` with `new` in the server's config, and reloads it.
fn reload_server(fleet: &Fleet, old: &str, new: &str) {
    edit(&fleet.server_config, old, new);
    fleet.signal_server(Signal::SIGHUP);
}

/// What host `i` ran for networks starting with `prefix`.
fn applied_in(fleet: &Fleet, i: usize, prefix: &str) -> Vec<String> {
    let lines = fleet.applied(i).into_iter();
    lines.filter(|l| l.contains(prefix)).collect()
}

#[test]
fn ipv6_ban_prefix_bans_the_64_and_a_later_address_in_it_is_a_duplicate() {
    let fleet = Fleet::start(&["web1", "web2", "mail1"], "ipv6-ban-prefix = 64", "");
    assert!(report_verbose(&fleet, 0, "2001:db8:1::7").contains("accepted"));
    let line = "ban fail2ban sshd 2001:db8:1::/64 86400";
    for host in 0..3 {
        fleet.wait_applied(host, line);
    }
    assert!(report_verbose(&fleet, 1, "2001:db8:1::8").contains("duplicate"));
    // A sentinel: once it has arrived, anything published for ::8 would have too.
    report_verbose(&fleet, 2, "2001:db8:9::1");
    for host in 0..3 {
        fleet.wait_applied(host, "ban fail2ban sshd 2001:db8:9::/64 86400");
        assert_eq!(applied_in(&fleet, host, "2001:db8:1:"), [line]);
    }
    assert_eq!(
        listed(&fleet, false),
        ["2001:db8:1::/64", "2001:db8:9::/64"]
    );
    let log = fleet.server_log();
    assert!(
        log.contains("accepted 2001:db8:1::/64 (fail2ban sshd) from web1")
            && log.contains("2001:db8:1::7 widened to 2001:db8:1::/64 by ipv6-ban-prefix")
            && log.contains("duplicate 2001:db8:1::8 (fail2ban sshd) from web2; 2001:db8:1::8 widened to 2001:db8:1::/64 by ipv6-ban-prefix"),
        "{log}"
    );
}

#[test]
fn two_addresses_of_one_64_become_one_64_ban_and_a_later_address_is_a_duplicate() {
    let fleet = Fleet::start(&["web1", "web2", "mail1"], "aggregate-after = 2", "");
    report_verbose(&fleet, 0, "2001:db8:2::1");
    for host in 0..3 {
        fleet.wait_applied(host, "ban fail2ban sshd 2001:db8:2::1 86400");
    }
    assert!(report_verbose(&fleet, 1, "2001:db8:2::2").contains("accepted"));
    for host in 0..3 {
        fleet.wait_applied(host, "unban fail2ban sshd 2001:db8:2::1 86400");
    }
    assert!(report_verbose(&fleet, 2, "2001:db8:2::3").contains("duplicate"));
    report_verbose(&fleet, 2, "203.0.113.1");
    for host in 0..3 {
        fleet.wait_applied(host, "ban fail2ban sshd 203.0.113.1 86400");
        // Commands run side by side, so their order is not checked.
        let mut applied = applied_in(&fleet, host, "2001:db8:2:");
        applied.sort();
        assert_eq!(
            applied,
            [
                "ban fail2ban sshd 2001:db8:2::/64 86400",
                "ban fail2ban sshd 2001:db8:2::1 86400",
                "unban fail2ban sshd 2001:db8:2::1 86400",
            ]
        );
    }
    assert_eq!(listed(&fleet, false), ["203.0.113.1", "2001:db8:2::/64"]);
    let log = fleet.server_log();
    assert!(
        log.contains(
            "2 bans in 2001:db8:2::/64 reached aggregate-after = 2: banned 2001:db8:2::/64 instead"
        ) && log.contains("lifted 2001:db8:2::1: the ban of 2001:db8:2::/64 replaces it"),
        "{log}"
    );
}

#[test]
fn the_log_backend_only_logs_and_a_real_backend_later_applies_everything() {
    let mut fleet = Fleet::new(&["web1", "mail1"], "", "");
    fleet.add_client_config(1, "backend = \"log\"\n");
    fleet.start_server();
    fleet.start_client(0);
    fleet.start_client(1);
    report_verbose(&fleet, 0, "203.0.113.5");
    fleet.wait_applied(0, "ban fail2ban sshd 203.0.113.5 86400");
    let line = "dry run: would ban 203.0.113.5 (fail2ban sshd from web1, bantime 86400s)";
    fleet.wait_logged(1, "the dry run's line", Duration::from_secs(5), || {
        fleet.client_log(1).contains(line).then_some(())
    });
    assert_eq!(fleet.applied(1), Vec::<String>::new());
    // Enforcing: the dry run's record does not count as applied.
    fleet.stop_client(1);
    edit(&fleet.hosts[1].config, "backend = \"log\"\n", "");
    fleet.start_client(1);
    assert_eq!(
        fleet.wait_applied(1, "ban fail2ban sshd 203.0.113.5 86400"),
        1
    );
}

#[test]
fn three_bans_of_one_address_from_different_hosts_grow_by_the_factor_squared_capped() {
    let server = "recidive-window = \"1h\"\nrecidive-factor = 4\nrecidive-max = \"10s\"";
    let mut fleet = Fleet::start(&["web1", "web2", "mail1"], server, "");
    let ban = |fleet: &Fleet, host: usize| {
        let args = ["--bantime", "1", "fail2ban", "sshd", "203.0.113.7"];
        assert_eq!(outcome(&fleet.report(host, &args)).0, 0);
    };
    // The first two bans are over in 1 s and 4 s, sooner than a busy machine may deliver
    // them: the server's decisions are what this test reads, and the hosts apply the third.
    let decided = |fleet: &Fleet, what: &str| {
        fleet.wait_logged(0, what, Duration::from_secs(30), || {
            fleet.server_log().contains(what).then_some(())
        });
    };
    ban(&fleet, 0);
    std::thread::sleep(Duration::from_millis(2100));
    ban(&fleet, 1);
    decided(&fleet, "bantime 1s × 4^1");
    // The history is in the journal: a restart forgets none of it.
    fleet.signal_server(Signal::SIGTERM);
    fleet.wait_server();
    fleet.start_server();
    std::thread::sleep(Duration::from_millis(4100));
    ban(&fleet, 2);
    // 1 s × 4² = 16 s, capped at 10 s.
    for host in 0..3 {
        fleet.wait_applied(host, "ban fail2ban sshd 203.0.113.7 10");
    }
    let history = names(&bans_json(&fleet, false)[0], "history");
    assert_eq!(history, ["web1", "web2", "mail1"]);
    let text = String::from_utf8_lossy(&fleet.admin(&["bans"]).stdout).into_owned();
    assert!(
        text.contains("banned 3 times, by web1, web2, mail1"),
        "{text}"
    );
    let log = fleet.server_log();
    assert!(
        log.contains("banned 2 times before within recidive-window: bantime 1s × 4^2, capped at recidive-max 10s"),
        "{log}"
    );
}

#[test]
fn with_two_reporters_needed_one_key_bans_nothing_and_a_second_key_bans_everywhere() {
    let server = "min-reporters = 2\nconfirm-window = \"4s\"";
    let mut fleet = Fleet::start(&["web1", "web2", "mail1", "mail2"], server, "");
    let first = report_verbose(&fleet, 0, "203.0.113.7");
    assert!(
        first.contains("pending: 1 of 2 hosts reported it"),
        "{first}"
    );
    assert!(report_verbose(&fleet, 0, "203.0.113.7").contains("pending: 1 of 2"));
    // Waiting reports survive a restart.
    fleet.signal_server(Signal::SIGTERM);
    fleet.wait_server();
    fleet.start_server();
    assert_eq!(listed(&fleet, true), ["203.0.113.7"]);
    assert!(listed(&fleet, false).is_empty());
    for host in 0..4 {
        assert!(applied_in(&fleet, host, "203.0.113.7").is_empty());
    }
    let text = String::from_utf8_lossy(&fleet.admin(&["bans", "--pending"]).stdout).into_owned();
    assert!(
        text.contains("1 of 2") && text.contains("web1 (fail2ban sshd"),
        "{text}"
    );
    assert!(report_verbose(&fleet, 1, "203.0.113.7").contains("accepted"));
    for host in 0..4 {
        fleet.wait_applied(host, "ban fail2ban sshd 203.0.113.7 86400");
    }
    assert!(listed(&fleet, true).is_empty());
    let log = fleet.server_log();
    assert!(log.contains("confirmed by web1, web2"), "{log}");

    // Outside the window, counting starts again; web1's report is dropped with its line
    // when the network is reported again, not a minute later at the sweep.
    report_verbose(&fleet, 0, "198.51.100.9");
    std::thread::sleep(Duration::from_millis(4500));
    assert!(report_verbose(&fleet, 2, "198.51.100.9").contains("pending: 1 of 2"));
    let dropped = "dropped the unconfirmed report of 198.51.100.9 (fail2ban sshd) from web1: \
                   confirm-window passed";
    assert!(
        fleet.server_log().contains(dropped),
        "{}",
        fleet.server_log()
    );
    assert!(report_verbose(&fleet, 3, "198.51.100.9").contains("accepted"));
    for host in 0..4 {
        fleet.wait_applied(host, "ban fail2ban sshd 198.51.100.9 86400");
        assert_eq!(applied_in(&fleet, host, "198.51.100.9").len(), 1);
    }
    let reporters = names(&bans_json(&fleet, false)[0], "reporters");
    assert_eq!(reporters, ["mail2", "mail1"]);

    // An unban drops the reports waiting for a network that is not banned yet.
    report_verbose(&fleet, 0, "192.0.2.66");
    let out = fleet.admin(&["unban", "192.0.2.66"]);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        said.contains("dropped the reports waiting for it"),
        "{said}"
    );
    assert!(listed(&fleet, true).is_empty());

    // Lowering min-reporters on reload bans what it confirms now.
    assert!(report_verbose(&fleet, 0, "192.0.2.77").contains("pending: 1 of 2"));
    reload_server(&fleet, "min-reporters = 2", "min-reporters = 1");
    for host in 0..4 {
        fleet.wait_applied(host, "ban fail2ban sshd 192.0.2.77 86400");
    }
    assert!(listed(&fleet, true).is_empty());
}

#[test]
fn a_wave_of_2000_reports_from_one_host_is_banned_or_pending_and_none_is_lost() {
    let server = "report-burst = 200\nreport-rate = 60";
    let fleet = Fleet::start(&["web1", "web2", "mail1", "mail2"], server, "");
    let wave: Vec<String> = (0..2000)
        .map(|i| format!("198.18.{}.{}", i / 250, i % 250 + 1))
        .collect();
    let started = std::time::Instant::now();
    let verdicts: Vec<String> = std::thread::scope(|scope| {
        let workers: Vec<_> = wave
            .chunks(250)
            .map(|chunk| {
                let fleet = &fleet;
                scope.spawn(move || {
                    chunk
                        .iter()
                        .map(|ip| report_verbose(fleet, 0, ip))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    let elapsed = started.elapsed();
    let accepted = verdicts.iter().filter(|v| v.contains("accepted")).count();
    let held = verdicts
        .iter()
        .filter(|v| v.contains("pending: held"))
        .count();
    eprintln!("the wave: {accepted} accepted and {held} held of 2000 reports in {elapsed:?}");
    assert_eq!(accepted + held, 2000, "every report accepted or held");
    // The key moves the fleet no faster than its allowance.
    let allowance = 200 + (elapsed.as_secs_f64() + 2.0) as usize;
    assert!(accepted <= allowance, "{accepted} accepted in {elapsed:?}");
    let banned = listed(&fleet, false);
    let pending = listed(&fleet, true);
    let mut all: Vec<String> = banned.iter().chain(&pending).cloned().collect();
    all.sort();
    all.dedup();
    let mut expected = wave.clone();
    expected.sort();
    assert_eq!(all, expected, "each address banned or pending");
    // Another host's word bans a held address at once; the rest go as the allowance
    // refills, oldest first.
    let held_ip = &pending[pending.len() / 2];
    assert!(report_verbose(&fleet, 2, held_ip).contains("accepted"));
    let line = format!("ban fail2ban sshd {held_ip} 86400");
    fleet.wait_applied(3, &line);
    fleet.wait_logged(0, "held reports released", Duration::from_secs(10), || {
        let now = listed(&fleet, false).len();
        (now >= banned.len() + 3).then_some(())
    });
    let log = fleet.server_log();
    assert!(log.contains("from its key's refilled allowance"), "{log}");
}

fn local(_: usize) -> String {
    "127.0.0.1".into()
}

#[test]
fn reports_waiting_on_one_server_confirm_with_a_report_to_another_even_one_that_was_away() {
    let _serial = one_at_a_time();
    let server = "min-reporters = 2\nconfirm-window = \"1h\"";
    let mut fleets = peered(2, server, local);
    start_all(&mut fleets);
    fleets[1].signal_server(Signal::SIGTERM);
    fleets[1].wait_server();
    assert!(report_verbose(&fleets[0], 0, "203.0.113.7").contains("pending: 1 of 2"));
    // The server that was away is forwarded the report once it is back.
    fleets[1].start_server();
    wait_for("the forwarded report", Duration::from_secs(15), || {
        (listed(&fleets[1], true) == ["203.0.113.7"]).then_some(())
    });
    assert!(report_verbose(&fleets[1], 0, "203.0.113.7").contains("accepted"));
    for fleet in &fleets {
        fleet.wait_applied(0, "ban fail2ban sshd 203.0.113.7 86400");
    }
    assert_eq!(converged(&fleets).len(), 1);
    wait_for("no report left waiting", Duration::from_secs(10), || {
        fleets
            .iter()
            .all(|f| listed(f, true).is_empty())
            .then_some(())
    });
    let log = fleets[1].server_log();
    assert!(log.contains("confirmed by web1, web2"), "{log}");
}

#[test]
fn escalation_counts_bans_taken_by_every_server() {
    let _serial = one_at_a_time();
    let server = "recidive-window = \"1h\"\nrecidive-factor = 4\nrecidive-max = \"10s\"";
    let mut fleets = peered(2, server, local);
    start_all(&mut fleets);
    let ban = |fleet: &Fleet| {
        // Times are whole seconds: a 1-second ban reported late in a second expires at the
        // next one, which a loaded machine's peer may not beat. Reported as a second
        // begins, it has most of a second to reach every host.
        let into_second = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_millis();
        if into_second > 100 {
            std::thread::sleep(Duration::from_millis(u64::from(1000 - into_second)));
        }
        let args = ["--bantime", "1", "fail2ban", "sshd", "203.0.113.7"];
        assert_eq!(outcome(&fleet.report(0, &args)).0, 0);
    };
    for (reporter, bantime, wait) in [(0, 1, 2100), (1, 4, 4100), (0, 10, 0)] {
        ban(&fleets[reporter]);
        for fleet in &fleets {
            fleet.wait_applied(0, &format!("ban fail2ban sshd 203.0.113.7 {bantime}"));
        }
        std::thread::sleep(Duration::from_millis(wait));
    }
    let history = |fleet: &Fleet| bans_json(fleet, false)[0]["history"].clone();
    assert_eq!(history(&fleets[0]), history(&fleets[1]));
    let names = names(&bans_json(&fleets[0], false)[0], "history");
    assert_eq!(names.len(), 3, "{names:?}");
}
