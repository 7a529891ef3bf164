//! Fleet policy (README "Policies"), with the real binaries: IPv6 aggregation, and what a
//! reload that protects a network does to what is already banned.

mod common;

use std::time::Duration;

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
    edit(
        &fleet.server_config,
        "state-dir",
        "protected = [\"203.0.113.0/24\"]\nstate-dir",
    );
    fleet.signal_server(Signal::SIGHUP);
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

fn bans(fleet: &Fleet) -> Vec<String> {
    let out = fleet.admin(&["bans", "--json"]);
    let bans: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ips = bans.as_array().unwrap().iter();
    ips.map(|b| b["ip"].as_str().unwrap().to_owned()).collect()
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
    assert_eq!(bans(&fleet), ["2001:db8:1::/64", "2001:db8:9::/64"]);
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
    assert_eq!(bans(&fleet), ["203.0.113.1", "2001:db8:2::/64"]);
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
    ban(&fleet, 0);
    for host in 0..3 {
        fleet.wait_applied(host, "ban fail2ban sshd 203.0.113.7 1");
    }
    std::thread::sleep(Duration::from_millis(2100));
    ban(&fleet, 1);
    for host in 0..3 {
        fleet.wait_applied(host, "ban fail2ban sshd 203.0.113.7 4");
    }
    // The history is in the journal: a restart forgets none of it.
    fleet.signal_server(Signal::SIGTERM);
    fleet.wait_server();
    fleet.start_server();
    std::thread::sleep(Duration::from_millis(4100));
    ban(&fleet, 2);
    // 1 s × 4² = 16 s, capped at 10 s.
    for host in 0..3 {
        fleet.wait_applied(host, "ban fail2ban sshd 203.0.113.7 10");
        assert_eq!(applied_in(&fleet, host, "203.0.113.7").len(), 3);
    }
    let out = fleet.admin(&["bans", "--json"]);
    let bans: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let history: Vec<&str> = bans[0]["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
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
