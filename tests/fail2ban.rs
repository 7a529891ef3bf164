//! The fail2ban integration with real fail2ban: the shipped action reports a ban, the
//! shipped jail receives the fleet's bans through the client's batched fail2ban backend,
//! and nothing loops. Each fail2ban-server runs in a network namespace of the test's own, so
//! its nftables actions never touch the host. Needs root, as the test command runs.

use crate::common;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::fail2ban::Fail2ban;
use common::*;

/// One host in a namespace of its own: server, fail2ban, and a client whose backend is that
/// fail2ban.
fn one_host_with_fail2ban(tag: &str, client_extra: &str) -> (NetNs, Fleet, Fail2ban) {
    let ns = NetNs::new(tag);
    let mut fleet = Fleet::new(&["web1"], "", client_extra);
    fleet.netns = Some(ns.name.clone());
    let f2b_dir = fleet.dir.path().join("fail2ban");
    let config = fleet.hosts[0].config.clone();
    fleet.add_client_config(
        0,
        &format!(
            "backend = \"fail2ban\"\nfail2ban-socket = \"{}/fail2ban.sock\"\n",
            f2b_dir.display()
        ),
    );
    fleet.start_server();
    let f2b = Fail2ban::start(&ns, &f2b_dir, &config);
    fleet.start_client(0);
    (ns, fleet, f2b)
}

#[test]
fn a_fail2ban_ban_is_reported_and_lands_in_the_banshare_jail_without_looping() {
    let (ns, fleet, f2b) = one_host_with_fail2ban("f2b", "");

    f2b.failed_logins("203.0.113.50", 4);
    wait_for("the sshd ban", Duration::from_secs(15), || {
        f2b.banned("sshd").contains("203.0.113.50").then_some(())
    });
    wait_for(
        "the shared ban in the banshare jail",
        Duration::from_secs(10),
        || {
            f2b.banned("banshare")
                .contains("203.0.113.50")
                .then_some(())
        },
    );
    // The banshare jail's own ban action put it into nftables in this namespace.
    let ruleset = ns.run(&["nft", "list", "ruleset"]);
    assert!(ruleset.contains("203.0.113.50"), "{ruleset}");

    // No loop: the address was reported and published exactly once.
    std::thread::sleep(Duration::from_secs(2));
    let status: serde_json::Value =
        serde_json::from_slice(&fleet.admin(&["status", "--json"]).stdout).unwrap();
    assert_eq!(status["counters"]["accepted"], 1, "{status}");
    assert_eq!(status["counters"]["published"], 1, "{status}");
    assert_eq!(
        fleet
            .server_log()
            .matches("accepted 203.0.113.50 (fail2ban sshd) from web1")
            .count(),
        1
    );
    assert!(fleet
        .client_log(0)
        .contains("fail2ban banip of 1 addresses in jail banshare"));
}

#[test]
fn bans_that_arrive_while_fail2ban_is_down_are_applied_once_it_is_back() {
    let (_ns, fleet, f2b) = one_host_with_fail2ban("f2bdown", "retry-interval = \"1s\"");
    assert!(f2b.client(&["stop"]).status.success());
    let (code, stderr) = outcome(&fleet.report(0, &["fail2ban", "sshd", "203.0.113.90"]));
    assert_eq!(code, 0, "{stderr}");
    wait_for("the failed batch", Duration::from_secs(10), || {
        fleet
            .client_log(0)
            .contains("fail2ban banip of 1 addresses: /usr/bin/fail2ban-client failed")
            .then_some(())
    });
    f2b.serve();
    wait_for("the retried ban", Duration::from_secs(15), || {
        f2b.banned("banshare")
            .contains("'203.0.113.90'")
            .then_some(())
    });
}

#[test]
fn the_shipped_action_and_jail_pass_fail2ban_client_t() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("fail2ban");
    assert!(Command::new("cp")
        .args(["-r", "/etc/fail2ban"])
        .arg(&conf)
        .status()
        .unwrap()
        .success());
    let _ = fs::remove_file(conf.join("jail.d/defaults-debian.conf"));
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("fail2ban");
    fs::copy(
        repo.join("action.d/banshare.conf"),
        conf.join("action.d/banshare.conf"),
    )
    .unwrap();
    fs::copy(
        repo.join("jail.d/banshare.conf"),
        conf.join("jail.d/banshare.conf"),
    )
    .unwrap();
    // The package creates the banshare jail's empty log; here it lives in the test's directory.
    let log = dir.path().join("jail.log");
    fs::write(&log, "").unwrap();
    let auth = dir.path().join("auth.log");
    fs::write(&auth, "").unwrap();
    fs::write(
        conf.join("jail.d/zz-test.local"),
        format!(
            "[banshare]\nlogpath = {}\n\n[sshd]\nenabled = true\nbackend = polling\nlogpath = {}\n\
             action = %(action_)s\n         banshare\n",
            log.display(),
            auth.display()
        ),
    )
    .unwrap();
    let out = Command::new("fail2ban-client")
        .arg("-c")
        .arg(&conf)
        .arg("-t")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains("OK: configuration test is successful"),
        "{text}"
    );
    // The reporting action is what the jail will run on a ban.
    let dump = Command::new("fail2ban-client")
        .arg("-c")
        .arg(&conf)
        .arg("-d")
        .output()
        .unwrap();
    let dump = String::from_utf8_lossy(&dump.stdout);
    assert!(dump.contains("/usr/bin/banshare-report --config /etc/banshare/client.toml fail2ban sshd <ip> --bantime <bantime>"), "{dump}");
    assert!(dump.contains("['norestored', True]"), "{dump}");
}

#[test]
fn an_attack_seen_by_fail2ban_on_one_host_is_dropped_by_the_others() {
    // Host b applies the fleet's bans through fail2ban, host c through nftables.
    let lab = Lab::new("sy", &["a", "b", "c", "x"]);
    let attacker = lab.address(3).to_string();
    let mut fleet = Fleet::new(&["a", "b", "c"], "", "");
    fleet.place_on(&lab);
    let mut fail2bans = Vec::new();
    fleet.start_server();
    for i in 0..3 {
        let config = fleet.hosts[i].config.clone();
        let f2b_dir = fleet.dir.path().join(format!("fail2ban-{i}"));
        let backend = match i {
            2 => "backend = \"nftables\"\n".to_string(),
            _ => format!(
                "backend = \"fail2ban\"\nfail2ban-socket = \"{}/fail2ban.sock\"\n",
                f2b_dir.display()
            ),
        };
        fleet.add_client_config(i, &backend);
        fail2bans.push(Fail2ban::start_with(
            Some(lab.ns(i)),
            &f2b_dir,
            &config,
            "nftables-allports[blocktype=drop]",
        ));
        fleet.start_client(i);
    }
    let _services: Vec<Service> = (1..3).map(|i| Service::start(lab.ns(i), 8022)).collect();
    for i in 1..3 {
        wait_for("the service", Duration::from_secs(5), || {
            connects(lab.ns(3), lab.address(i), 8022).then_some(())
        });
    }

    let attacked = std::time::Instant::now();
    fail2bans[0].failed_logins(&attacker, 4);
    for (i, f2b) in fail2bans.iter().enumerate().skip(1) {
        wait_for(
            "the attacker to be dropped",
            Duration::from_secs(20),
            || (!connects(lab.ns(3), lab.address(i), 8022)).then_some(()),
        );
        eprintln!(
            "log line on a to drop on {}: {:?}",
            fleet.hosts[i].name,
            attacked.elapsed()
        );
        match i {
            2 => assert!(lab
                .ns(2)
                .run(&["nft", "list", "set", "inet", "banshare", "addr4"])
                .contains(&attacker)),
            _ => assert!(f2b.banned("banshare").contains(&attacker)),
        }
    }
    assert!(fail2bans[0].banned("sshd").contains(&attacker));
    // The hosts still reach each other: nobody banned a member of the fleet.
    assert!(connects(lab.ns(1), lab.address(2), 8022));
    // No loop: reported and published once, although three jails banned the address.
    std::thread::sleep(Duration::from_secs(2));
    let status: serde_json::Value =
        serde_json::from_slice(&fleet.admin(&["status", "--json"]).stdout).unwrap();
    assert_eq!(status["counters"]["accepted"], 1, "{status}");
    assert_eq!(status["counters"]["published"], 1, "{status}");

    // A burst of 1,000 distinct addresses reported from host a ends up in both firewalls.
    let burst: Vec<String> = (0..1000)
        .map(|i| format!("100.64.{}.{}", i / 250, i % 250 + 1))
        .collect();
    for chunk in burst.chunks(20) {
        let reporters: Vec<_> = chunk
            .iter()
            .map(|ip| {
                fleet
                    .report_command(0, &["fail2ban", "sshd", ip])
                    .spawn()
                    .unwrap()
            })
            .collect();
        for mut reporter in reporters {
            assert!(reporter.wait().unwrap().success());
        }
    }
    let started = std::time::Instant::now();
    wait_for(
        "1,000 bans in b's fail2ban",
        Duration::from_secs(90),
        || {
            let banned = fail2bans[1].banned("banshare");
            burst
                .iter()
                .all(|ip| banned.contains(ip.as_str()))
                .then_some(())
        },
    );
    wait_for(
        "1,000 bans in c's nftables",
        Duration::from_secs(30),
        || {
            let set = lab
                .ns(2)
                .run(&["nft", "list", "set", "inet", "banshare", "addr4"]);
            burst
                .iter()
                .all(|ip| set.contains(ip.as_str()))
                .then_some(())
        },
    );
    eprintln!(
        "1000 reported bans in both firewalls {:?} after the last report",
        started.elapsed()
    );
}
