//! The nftables backend with real nftables, inside a network namespace of the test's own so
//! that the host's firewall is never touched. Needs root, as the test command runs.

use crate::common;

use std::time::{Duration, Instant};

use common::*;

fn fleet_in(ns: &NetNs, server_extra: &str, extra: &str) -> Fleet {
    let client = format!("backend = \"nftables\"\n{extra}");
    let mut fleet = Fleet::new(&["web1"], server_extra, &client);
    fleet.netns = Some(ns.name.clone());
    fleet
}

/// A fleet of one host in `ns`, with its server and client running.
fn running_in(ns: &NetNs, server_extra: &str, extra: &str) -> Fleet {
    let mut fleet = fleet_in(ns, server_extra, extra);
    fleet.start_server();
    fleet.start_client(0);
    fleet
}

/// The elements of one of the backend's sets, as nft lists them.
fn elements(ns: &NetNs, set: &str) -> String {
    ns.run(&["nft", "list", "set", "inet", "banshare", set])
}

/// Whether the backend's set addr4 exists and holds `ip`.
fn addr4_holds(ns: &NetNs, ip: &str) -> bool {
    let out = std::process::Command::new("ip")
        .args([
            "netns", "exec", &ns.name, "nft", "list", "set", "inet", "banshare",
        ])
        .arg("addr4")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).contains(ip)
}

#[test]
fn bans_become_set_elements_with_their_remaining_time() {
    let ns = NetNs::new("nft1");
    let mut fleet = running_in(&ns, "", "");
    let rules = ns.run(&["nft", "list", "chain", "inet", "banshare", "input"]);
    assert!(
        rules.contains("hook input")
            && rules.contains("ip saddr @addr4 drop")
            && rules.contains("ip saddr @net4 drop"),
        "{rules}"
    );
    for args in [
        &["--bantime", "600", "fail2ban", "sshd", "203.0.113.7"][..],
        &["--bantime", "-1", "fail2ban", "sshd", "198.51.100.0/24"],
        &["fail2ban", "sshd", "2001:db8:1::/64"],
    ] {
        let (code, stderr) = outcome(&fleet.report(0, args));
        assert_eq!(code, 0, "{stderr}");
    }
    fleet.wait_logged(0, "the elements", Duration::from_secs(10), || {
        let v4 = elements(&ns, "addr4");
        let n4 = elements(&ns, "net4");
        let n6 = elements(&ns, "net6");
        (v4.contains("203.0.113.7 timeout")
            && n4.contains("198.51.100.0/24")
            // A day, or a second less when the second turned between the server's clock
            // and the client's.
            && (n6.contains("2001:db8:1::/64 timeout 1d")
                || n6.contains("2001:db8:1::/64 timeout 23h59m")))
        .then_some(())
    });
    let n4 = elements(&ns, "net4");
    assert!(!n4.contains("198.51.100.0/24 timeout"), "permanent: {n4}");
    let v4 = elements(&ns, "addr4");
    assert!(
        v4.contains("203.0.113.7 timeout 10m") || v4.contains("203.0.113.7 timeout 9m"),
        "{v4}"
    );

    // A network inside a network already banned is covered: nft refuses it as an overlap,
    // and the client counts it as applied rather than failing the batch.
    let (code, stderr) = outcome(&fleet.report(0, &["fail2ban", "sshd", "198.51.100.128/25"]));
    assert_eq!(code, 0, "{stderr}");
    fleet.wait_logged(
        0,
        "the overlap to be judged",
        Duration::from_secs(5),
        || {
            fleet
                .client_log(0)
                .contains("nft: 198.51.100.128/25 is inside a network already banned")
                .then_some(())
        },
    );

    // An unban removes the element; unbanning an expired element does not fail the batch.
    let out = fleet.admin(&["unban", "203.0.113.7"]);
    assert_eq!(outcome(&out).0, 0, "{:?}", outcome(&out));
    fleet.wait_logged(0, "the unban", Duration::from_secs(5), || {
        (!elements(&ns, "addr4").contains("203.0.113.7")).then_some(())
    });

    // A restart keeps the elements and does not duplicate the rules.
    fleet.stop_client(0);
    fleet.start_client(0);
    let rules = ns.run(&["nft", "list", "chain", "inet", "banshare", "input"]);
    assert_eq!(rules.matches("drop").count(), 4, "{rules}");
    assert!(elements(&ns, "net4").contains("198.51.100.0/24"));
}

#[test]
fn a_dry_run_group_touches_no_set_and_logs_what_it_would_have_done() {
    let ns = NetNs::new("nft4");
    let groups = "[[groups]]\nname = \"mail\"\njails = [\"postfix\"]\ndry-run = true\n";
    let fleet = running_in(&ns, groups, "");
    fleet.report(0, &["fail2ban", "postfix", "203.0.113.9"]);
    fleet.wait_logged(0, "the dry-run line", Duration::from_secs(5), || {
        let log = fleet.client_log(0);
        log.contains("dry run (group mail): would ban 203.0.113.9 for 86400s (fail2ban postfix, reported by web1)")
            .then_some(())
    });
    // An enforced ban after it, as a sentinel: it reaches the set, the dry run never did.
    fleet.report(0, &["fail2ban", "sshd", "198.51.100.9"]);
    fleet.wait_logged(0, "the enforced ban", Duration::from_secs(5), || {
        elements(&ns, "addr4")
            .contains("198.51.100.9")
            .then_some(())
    });
    let sets: String = ["addr4", "net4", "addr6", "net6"]
        .map(|set| elements(&ns, set))
        .concat();
    assert!(!sets.contains("203.0.113.9"), "{sets}");
}

#[test]
fn ten_thousand_bans_reach_the_firewall_in_batches() {
    let ns = NetNs::new("nft3");
    let mut fleet = fleet_in(&ns, "", "batch-size = 5000");
    let ips = fleet.preload(10_000);
    fleet.start_server();
    let started = Instant::now();
    fleet.start_client(0);
    fleet.wait_logged(0, "10,000 elements", Duration::from_secs(30), || {
        (ns.nft_elements("addr4").len() == ips.len()).then_some(())
    });
    let took = started.elapsed();
    eprintln!("nftables backend: 10000 bans applied in {took:?} (client start included)");
    let batches = fleet
        .client_log(0)
        .matches("nftables: applied a batch")
        .count();
    // A transaction takes about a millisecond over netlink, so a batch is what has
    // arrived by then, which varies: 43 to 115 transactions here, against 10,000 without
    // batches.
    assert!(batches <= 200, "10,000 bans in {batches} transactions");
}

#[test]
fn a_flushed_ruleset_is_set_up_again_with_its_bans_while_running_and_at_start() {
    let ns = NetNs::new("nft2");
    let mut fleet = running_in(&ns, "", "");
    fleet.report(0, &["fail2ban", "sshd", "203.0.113.8"]);
    fleet.wait_logged(0, "the element", Duration::from_secs(5), || {
        addr4_holds(&ns, "203.0.113.8").then_some(())
    });
    // What a reload of nftables.service does to every table but its own.
    ns.run(&["nft", "flush", "ruleset"]);
    let flushed = Instant::now();
    fleet.wait_logged(0, "the table and its ban", Duration::from_secs(10), || {
        addr4_holds(&ns, "203.0.113.8").then_some(())
    });
    assert!(flushed.elapsed() < Duration::from_secs(5));
    let rules = ns.run(&["nft", "list", "chain", "inet", "banshare", "input"]);
    assert_eq!(rules.matches("drop").count(), 4, "{rules}");
    assert!(fleet
        .client_log(0)
        .contains("table inet banshare has gone (a flush of the ruleset?)"));

    // As after a reboot: the kernel's table is gone, the client's record is not.
    fleet.stop_client(0);
    ns.run(&["nft", "flush", "ruleset"]);
    fleet.start_client(0);
    fleet.wait_logged(0, "the restore", Duration::from_secs(5), || {
        addr4_holds(&ns, "203.0.113.8").then_some(())
    });
}

#[test]
fn a_ban_the_kernel_refuses_is_logged_once_and_tried_again_only_in_a_new_table() {
    let ns = NetNs::new("nft6");
    let fleet = running_in(&ns, "", "retry-interval = \"1s\"\n");
    // A set of the wrong type in the client's table, in one transaction so that the
    // client never sees the table missing.
    let wrong = fleet.dir.path().join("wrong.nft");
    std::fs::write(
        &wrong,
        "delete table inet banshare\nadd table inet banshare\n\
         add set inet banshare addr4 { type ipv6_addr; flags timeout; }\n",
    )
    .unwrap();
    ns.run(&["nft", "-f", wrong.to_str().unwrap()]);
    let (code, stderr) = outcome(&fleet.report(0, &["fail2ban", "sshd", "203.0.113.9"]));
    assert_eq!(code, 0, "{stderr}");
    fleet.wait_logged(0, "the refusal", Duration::from_secs(5), || {
        fleet
            .client_log(0)
            .contains("ban of 203.0.113.9 refused by the firewall for good")
            .then_some(())
    });
    // Final: not tried again at each retry-interval (1 s), nor at a catch-up.
    let (code, _) = outcome(&fleet.report(0, &["fail2ban", "sshd", "203.0.113.10"]));
    assert_eq!(code, 0);
    std::thread::sleep(Duration::from_secs(3));
    let log = fleet.client_log(0);
    let tries = log
        .matches("nftables ban 203.0.113.9: nf_tables refused")
        .count();
    assert_eq!(tries, 1, "{log}");
    assert!(!addr4_holds(&ns, "203.0.113.9"));
    let status = fleet
        .command(ADMIN)
        .args(["status", "--json", "--socket"])
        .arg(fleet.client_socket("web1"))
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(status.contains("\"refused\":2"), "{status}");
    // The wrong table removed: the client sets its own up again, and the retry puts the
    // ban in.
    ns.run(&["nft", "delete", "table", "inet", "banshare"]);
    fleet.wait_logged(0, "the retry", Duration::from_secs(10), || {
        addr4_holds(&ns, "203.0.113.9").then_some(())
    });
}
