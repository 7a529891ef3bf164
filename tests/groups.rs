//! Groups (README "Policies"), with the real binaries: each group's bans reach only the
//! hosts that receive it, live and by catch-up, across several servers too, and a dry-run
//! group changes nothing.

use crate::common;

use std::time::Duration;

use common::servers::{admin_ok, converged, peered};
use common::*;
use nix::sys::signal::Signal;

/// web* hosts report into group web, mail* hosts into group mail, anyone else into default.
const GROUPS: &str = "[[groups]]\nname = \"web\"\nhosts = [\"web*\"]\n\
                      [[groups]]\nname = \"mail\"\nhosts = [\"mail*\"]\n";

/// Waits for a sentinel ban on host `i`: once it is there, anything published before it
/// would have arrived too.
fn sentinel(fleet: &Fleet, hosts: &[usize], line: &str) {
    for &i in hosts {
        fleet.wait_applied(i, line);
    }
}

fn has(fleet: &Fleet, i: usize, ip: &str) -> bool {
    let applied = fleet.applied(i);
    applied.iter().any(|l| l.split(' ').nth(3) == Some(ip))
}

#[test]
fn a_group_ban_reaches_only_the_hosts_that_receive_its_group_live_and_by_catch_up() {
    // web1 web2 mail1 mail2 ops1
    let mut fleet = Fleet::new(&["web1", "web2", "mail1", "mail2", "ops1"], GROUPS, "");
    for i in 0..2 {
        fleet.add_client_config(i, "groups = [\"web\", \"default\"]\n");
    }
    for i in 2..4 {
        fleet.add_client_config(i, "groups = [\"mail\", \"default\"]\n");
    }
    fleet.start_server();
    for i in 0..5 {
        fleet.start_client(i);
    }
    let (web, mail, all) = ([0, 1], [2, 3], [0, 1, 2, 3, 4]);

    // A web ban: the web hosts and ops1 (every group) apply it, the mail hosts never do.
    let (code, stderr) = outcome(&fleet.report(0, &["fail2ban", "nginx", "203.0.113.7"]));
    assert_eq!(code, 0, "{stderr}");
    sentinel(&fleet, &[0, 1, 4], "ban fail2ban nginx 203.0.113.7 86400");
    fleet.report(2, &["fail2ban", "postfix", "198.51.100.7"]);
    sentinel(
        &fleet,
        &[2, 3, 4],
        "ban fail2ban postfix 198.51.100.7 86400",
    );
    fleet.report(4, &["fail2ban", "sshd", "192.0.2.7"]);
    sentinel(&fleet, &all, "ban fail2ban sshd 192.0.2.7 86400");
    for i in mail {
        assert!(!has(&fleet, i, "203.0.113.7"), "{:?}", fleet.applied(i));
    }
    for i in web {
        assert!(!has(&fleet, i, "198.51.100.7"), "{:?}", fleet.applied(i));
    }

    // mail1 is away while web2 bans again; it catches up on its groups only.
    fleet.stop_client(2);
    fleet.report(1, &["fail2ban", "nginx", "203.0.113.8"]);
    fleet.report(3, &["fail2ban", "postfix", "198.51.100.8"]);
    sentinel(&fleet, &[0, 4], "ban fail2ban nginx 203.0.113.8 86400");
    fleet.start_client(2);
    fleet.wait_applied(2, "ban fail2ban postfix 198.51.100.8 86400");
    fleet.wait_logged(2, "both catch-ups", Duration::from_secs(10), || {
        let log = fleet.client_log(2);
        (log.matches("resynchronised").count() >= 4).then_some(())
    });
    for ip in ["203.0.113.7", "203.0.113.8"] {
        assert!(!has(&fleet, 2, ip), "{:?}", fleet.applied(2));
    }

    // The server shows each ban's group.
    let bans = String::from_utf8_lossy(&fleet.admin(&["bans", "--json"]).stdout).into_owned();
    assert!(bans.contains("\"group\":\"web\""), "{bans}");
    assert!(bans.contains("\"group\":\"mail\""), "{bans}");
    let table = String::from_utf8_lossy(&fleet.admin(&["bans"]).stdout).into_owned();
    let row = table
        .lines()
        .find(|l| l.contains("203.0.113.7"))
        .unwrap_or_default();
    assert!(row.starts_with("web "), "{table}");
    let status = String::from_utf8_lossy(&fleet.admin(&["status"]).stdout).into_owned();
    assert!(
        status.contains("group mail: seq 2, 2 active bans"),
        "{status}"
    );
    let log = fleet.server_log();
    assert!(
        log.contains("group web: accepted 203.0.113.7 (fail2ban nginx) from web1"),
        "{log}"
    );
}

#[test]
fn a_dry_run_group_changes_nothing_and_logs_what_it_would_do() {
    let groups = format!("{GROUPS}dry-run = true\n");
    let fleet = Fleet::start(&["web1", "mail1"], &groups, "");
    fleet.report(1, &["fail2ban", "postfix", "203.0.113.9"]);
    fleet.wait_logged(0, "the dry-run line", Duration::from_secs(5), || {
        fleet
            .client_log(0)
            .contains("dry run (group mail): would ban 203.0.113.9 for 86400s (fail2ban postfix, reported by mail1)")
            .then_some(())
    });
    // An enforced ban as a sentinel: the dry-run one would have been applied by now.
    fleet.report(0, &["fail2ban", "nginx", "198.51.100.9"]);
    sentinel(&fleet, &[0, 1], "ban fail2ban nginx 198.51.100.9 86400");
    for i in 0..2 {
        assert!(!has(&fleet, i, "203.0.113.9"), "{:?}", fleet.applied(i));
    }
    // Lifted, it says so too.
    let out = fleet.admin(&["unban", "203.0.113.9"]);
    assert!(out.status.success(), "{out:?}");
    fleet.wait_logged(0, "the dry-run unban", Duration::from_secs(5), || {
        let log = fleet.client_log(0);
        log.contains("dry run (group mail): would unban 203.0.113.9")
            .then_some(())
    });
}

/// The networks a server lists in `group`, banned or (`--pending`) waiting.
fn listed_in(fleet: &Fleet, group: &str, pending: bool) -> Vec<String> {
    let mut args = vec!["bans", "--json"];
    if pending {
        args.push("--pending");
    }
    let bans: Vec<serde_json::Value> = serde_json::from_str(&admin_ok(fleet, &args)).unwrap();
    let in_group = bans.iter().filter(|b| b["group"] == group);
    in_group
        .map(|b| b["ip"].as_str().unwrap().to_string())
        .collect()
}

fn report_verbose(fleet: &Fleet, i: usize, jail: &str, ip: &str) -> String {
    let (code, stderr) = outcome(&fleet.report(i, &["-v", "fail2ban", jail, ip]));
    assert_eq!(code, 0, "{stderr}");
    stderr
}

#[test]
fn two_servers_keep_each_group_apart_and_confirm_a_group_ban_across_them() {
    let _serial = one_at_a_time();
    // The mail group needs two reporters.
    let groups = format!("{GROUPS}min-reporters = 2\nconfirm-window = \"1h\"\n");
    // web1 and mail1 report to bs1, web2 and mail2 to bs2; each host follows its server.
    let mut fleets = peered(2, &groups, |_| "127.0.0.1".into());
    for (i, fleet) in fleets.iter_mut().enumerate() {
        fleet.add_client_config(0, "groups = [\"web\"]\n");
        fleet.add_host(&format!("mail{}", i + 1), "groups = [\"mail\"]\n");
    }
    // Every host's key on every server (docs/ha.md): a report forwarded from a peer counts
    // only under a key authorized here.
    for (i, fleet) in fleets.iter().enumerate() {
        for host in &fleet.hosts {
            let key = fleet.keys_dir.join(format!("{}.key", host.name));
            let other = &fleets[1 - i];
            std::fs::copy(&key, other.auth_dir.join(format!("{}.key", host.name))).unwrap();
        }
    }
    for fleet in &mut fleets {
        fleet.start_server();
    }
    for fleet in &mut fleets {
        fleet.start_client(0);
        fleet.start_client(1);
    }
    let (web, mail) = (0, 1);

    // A web ban taken by bs1 reaches web2 through bs2, in group web there too.
    assert!(report_verbose(&fleets[0], web, "nginx", "203.0.113.7").contains("accepted"));
    fleets[1].wait_applied(web, "ban fail2ban nginx 203.0.113.7 86400");
    assert_eq!(listed_in(&fleets[1], "web", false), ["203.0.113.7"]);

    // mail1's report waits on bs1, is forwarded to bs2 in group mail, and mail2's report
    // there confirms it: both mail hosts ban it.
    let first = report_verbose(&fleets[0], mail, "postfix", "198.51.100.7");
    assert!(first.contains("pending: 1 of 2"), "{first}");
    wait_for("the forwarded report", Duration::from_secs(15), || {
        (listed_in(&fleets[1], "mail", true) == ["198.51.100.7"]).then_some(())
    });
    let second = report_verbose(&fleets[1], mail, "postfix", "198.51.100.7");
    assert!(second.contains("accepted"), "{second}");
    for fleet in &fleets {
        fleet.wait_applied(mail, "ban fail2ban postfix 198.51.100.7 86400");
    }

    // bs2 is away while bs1 takes a web ban and a mail report; back, it catches up on
    // each group by snapshot and is forwarded the waiting report.
    fleets[1].signal_server(Signal::SIGKILL);
    fleets[1].wait_server();
    report_verbose(&fleets[0], web, "nginx", "203.0.113.8");
    let waiting = report_verbose(&fleets[0], mail, "postfix", "198.51.100.8");
    assert!(waiting.contains("pending: 1 of 2"), "{waiting}");
    fleets[1].start_server();
    fleets[1].wait_applied(web, "ban fail2ban nginx 203.0.113.8 86400");
    wait_for("the forwarded report", Duration::from_secs(15), || {
        (listed_in(&fleets[1], "mail", true) == ["198.51.100.8"]).then_some(())
    });
    report_verbose(&fleets[1], mail, "postfix", "198.51.100.8");
    for fleet in &fleets {
        fleet.wait_applied(mail, "ban fail2ban postfix 198.51.100.8 86400");
    }

    // Both servers hold the same bans, each in its group; no host got another group's.
    assert_eq!(converged(&fleets).len(), 4);
    for fleet in &fleets {
        assert_eq!(listed_in(fleet, "web", false).len(), 2);
        assert_eq!(listed_in(fleet, "mail", false).len(), 2);
        for ip in ["203.0.113.7", "203.0.113.8"] {
            assert!(!has(fleet, mail, ip), "{:?}", fleet.applied(mail));
        }
        for ip in ["198.51.100.7", "198.51.100.8"] {
            assert!(!has(fleet, web, ip), "{:?}", fleet.applied(web));
        }
    }
    let log = fleets[1].server_log();
    assert!(log.contains("caught up with peer bs1 (group web)"), "{log}");
}
