//! Two releases in one fleet (docs/protocol.md, section 9): this build and the previous
//! release, built from its tag by `scripts/previous-release`. Mixed fleets in every
//! combination, two peered servers of different releases, and a fleet upgraded servers
//! first and clients first, all under a stream of reports: every acknowledged ban reaches
//! every host, none is applied twice, and none is lifted on the way. The journals the new
//! programs read are those the previous release's own programs wrote.

use crate::common;

use std::process::{Child, Stdio};
use std::time::Duration;

use common::servers::{converged, peered, start_all, table};
use common::*;
use nix::sys::signal::Signal;

/// Reports from each of `hosts` at about 20 a second, `each` from every host, each from a
/// new address (`next` counts them), as fail2ban runs banshare-report: not waited for.
fn burst(fleet: &Fleet, hosts: &[usize], each: usize, next: &mut u32) -> Vec<(String, Child)> {
    let mut sent = Vec::new();
    for _ in 0..each {
        for &i in hosts {
            *next += 1;
            let ip = format!("198.18.{}.{}", *next / 250, *next % 250 + 1);
            let child = fleet
                .report_command(i, &["fail2ban", "sshd", &ip])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            sent.push((ip, child));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    sent
}

/// Waits for every report: each must be acknowledged (0) or spooled for the client to
/// deliver (75), which the output says. Returns their addresses.
fn settle(sent: Vec<(String, Child)>) -> Vec<String> {
    let mut spooled = 0;
    let ips: Vec<String> = sent
        .into_iter()
        .map(|(ip, child)| {
            let out = child.wait_with_output().unwrap();
            let code = out.status.code();
            let said = String::from_utf8_lossy(&out.stderr);
            assert!(matches!(code, Some(0 | 75)), "{ip}: exit {code:?}: {said}");
            spooled += usize::from(code == Some(75));
            ip
        })
        .collect();
    eprintln!("{} reports, {spooled} of them spooled", ips.len());
    ips
}

/// Every host applied every one of `ips` exactly once, and lifted none.
fn assert_every_host_applied(fleet: &Fleet, ips: &[String]) {
    for i in 0..fleet.hosts.len() {
        fleet.assert_applied_once(i, ips);
    }
}

fn upgrade_server(fleet: &mut Fleet, to: &Programs) {
    fleet.signal_server(Signal::SIGTERM);
    fleet.wait_server();
    fleet.programs = to.clone();
    fleet.start_server();
}

fn upgrade_host(fleet: &mut Fleet, i: usize, to: &Programs) {
    fleet.stop_client(i);
    fleet.hosts[i].programs = to.clone();
    fleet.start_client(i);
}

#[test]
fn hello_tells_this_server_from_the_previous_release() {
    let (old, new) = (Programs::previous(), Programs::current());
    let version = |programs: &Programs| {
        let out = std::process::Command::new(&programs.server)
            .arg("--version")
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(version(&old), "banshare-server 0.1.0\n");
    assert!(
        version(&new).contains("protocol BANSHARE1 revision 2"),
        "{}",
        version(&new)
    );
    for (programs, answer) in [
        (
            old,
            [
                "BANSHARE1",
                "INVALID",
                r#"unknown request "HELLO" with 2 frames"#,
            ],
        ),
        (new, ["BANSHARE1", "HELLO", "2"]),
    ] {
        let mut fleet = Fleet::new(&["web1"], "", "");
        fleet.programs = programs;
        fleet.start_server();
        let key = fleet.host_key("web1");
        let raw = Raw::connect(fleet.report_port, Some((&fleet.server_key(), &key)));
        let reply = raw.request(&[b"BANSHARE1", b"HELLO"], Duration::from_secs(10));
        assert_eq!(texts(&reply.expect("an answer")), answer);
    }
}

#[test]
fn mixed_fleets_apply_every_ban_once_whichever_side_is_older() {
    let (old, new) = (Programs::previous(), Programs::current());
    for (server, hosts) in [(&new, [&old, &new]), (&old, [&new, &old])] {
        let mut fleet = Fleet::new(&["web1", "web2", "web3"], "", "");
        fleet.programs = server.clone();
        fleet.hosts[0].programs = hosts[0].clone();
        fleet.hosts[1].programs = hosts[1].clone();
        fleet.hosts[2].programs = hosts[0].clone();
        fleet.start_server();
        fleet.start_client(0);
        fleet.start_client(1);
        let mut next = 0;
        let ips = settle(burst(&fleet, &[0, 1], 10, &mut next));
        // web3 starts late: it catches up from a snapshot of the other release.
        fleet.start_client(2);
        assert_every_host_applied(&fleet, &ips);
        assert!(fleet.running());
    }
}

#[test]
fn peered_servers_of_two_releases_share_one_table() {
    let (old, new) = (Programs::previous(), Programs::current());
    let mut fleets = peered(2, "", |_| "127.0.0.1".into());
    fleets[0].programs = old.clone();
    fleets[0].hosts[0].programs = old;
    fleets[1].programs = new.clone();
    fleets[1].hosts[0].programs = new;
    start_all(&mut fleets);
    let mut next = 0;
    let mut ips = settle(burst(&fleets[0], &[0], 10, &mut next));
    ips.extend(settle(burst(&fleets[1], &[0], 10, &mut next)));
    let table = converged(&fleets);
    assert_eq!(table.len(), ips.len(), "{table:?}");
    for fleet in &fleets {
        assert_every_host_applied(fleet, &ips);
    }
}

/// A fleet of the previous release under a stream of reports, upgraded one program at a
/// time, the server first or the hosts first, each host's client and banshare-report
/// together as a package upgrade replaces them. The new server starts from the journal the
/// old one wrote, and each new client from the record of applied bans of the old one.
fn upgrade_under_a_stream(servers_first: bool) {
    let (old, new) = (Programs::previous(), Programs::current());
    let mut fleet = Fleet::new(&["web1", "web2", "web3"], "", "");
    fleet.programs = old.clone();
    for host in &mut fleet.hosts {
        host.programs = old.clone();
    }
    fleet.start_server();
    for i in 0..3 {
        fleet.start_client(i);
    }
    let all = [0, 1, 2];
    let mut next = 0;
    let mut sent = burst(&fleet, &all, 10, &mut next);
    let mut ips = Vec::new();
    let steps: Vec<Option<usize>> = match servers_first {
        true => vec![None, Some(0), Some(1), Some(2)],
        false => vec![Some(0), Some(1), Some(2), None],
    };
    // Each step restarts a program with the last reports still in flight.
    for step in steps {
        match step {
            None => {
                let acknowledged = settle(std::mem::take(&mut sent));
                sent = burst(&fleet, &all, 2, &mut next);
                upgrade_server(&mut fleet, &new);
                // What the old server had journaled, the new one has.
                let table = table(&fleet);
                let lost: Vec<_> = acknowledged
                    .iter()
                    .filter(|ip| !table.contains_key(*ip))
                    .collect();
                assert!(lost.is_empty(), "lost in the upgrade: {lost:?}");
                ips.extend(acknowledged);
            }
            Some(i) => upgrade_host(&mut fleet, i, &new),
        }
        sent.extend(burst(&fleet, &all, 5, &mut next));
    }
    ips.extend(settle(sent));
    assert_every_host_applied(&fleet, &ips);
    let log = fleet.server_log();
    assert!(!log.contains("damaged"), "{log}");
    assert!(fleet.running());
}

#[test]
fn a_fleet_upgraded_servers_first_loses_no_ban_and_applies_none_twice() {
    upgrade_under_a_stream(true);
}

#[test]
fn a_fleet_upgraded_clients_first_loses_no_ban_and_applies_none_twice() {
    upgrade_under_a_stream(false);
}

#[test]
fn going_back_to_the_previous_release_keeps_every_ban() {
    let (old, new) = (Programs::previous(), Programs::current());
    let mut fleet = Fleet::new(&["web1"], "", "");
    fleet.start_server();
    let mut next = 0;
    let ips = settle(burst(&fleet, &[0], 5, &mut next));
    upgrade_server(&mut fleet, &old);
    // 0.1.0 does not know the format line: it says so, keeps a copy, and reads the rest.
    let log = fleet.server_log();
    assert!(log.contains("line 1: unknown record"), "{log}");
    let table = table(&fleet);
    assert!(ips.iter().all(|ip| table.contains_key(ip)), "{table:?}");
    // And forward again: the journal 0.1.0 rewrote is read whole.
    upgrade_server(&mut fleet, &new);
    assert_eq!(table.len(), common::servers::table(&fleet).len());
}
