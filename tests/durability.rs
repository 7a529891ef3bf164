//! The server's ban table survives kill -9 and damage to its journal.

use crate::common;

use std::fs;

use common::*;
use nix::sys::signal::Signal;

fn verdict(fleet: &Fleet, ip: &str) -> (i32, String) {
    let (code, stderr) = outcome(&fleet.report(0, &["-v", "fail2ban", "sshd", ip]));
    let word = ["accepted", "duplicate"]
        .into_iter()
        .find(|w| stderr.contains(w))
        .unwrap_or("?");
    (code, word.to_string())
}

fn restart(fleet: &mut Fleet) {
    fleet.signal_server(Signal::SIGKILL);
    fleet.wait_server();
    fleet.start_server();
}

#[test]
fn every_acknowledged_report_survives_kill_9() {
    let mut fleet = Fleet::new(&["web1"], "", "");
    fleet.start_server();
    let ips: Vec<String> = (1..=100).map(|i| format!("198.51.100.{i}")).collect();
    for ip in &ips {
        assert_eq!(verdict(&fleet, ip), (0, "accepted".into()), "{ip}");
    }
    restart(&mut fleet);
    assert!(
        fleet.server_log().contains("ban table: 100 active bans"),
        "{}",
        fleet.server_log()
    );
    // The restarted server still knows every ban, so each report is a duplicate.
    for ip in &ips {
        assert_eq!(verdict(&fleet, ip), (0, "duplicate".into()), "{ip}");
    }
}

#[test]
fn a_truncated_journal_is_reported_and_the_rest_recovered() {
    let mut fleet = Fleet::new(&["web1"], "", "");
    fleet.start_server();
    for ip in ["198.51.100.1", "198.51.100.2", "198.51.100.3"] {
        assert_eq!(verdict(&fleet, ip).1, "accepted");
    }
    fleet.signal_server(Signal::SIGKILL);
    fleet.wait_server();
    let journal = fleet.dir.path().join("server-state/bans.journal");
    let text = fs::read(&journal).unwrap();
    fs::write(&journal, &text[..text.len() - 10]).unwrap();
    fleet.start_server();
    let log = fleet.server_log();
    // Line 1 is the journal's format.
    assert!(log.contains("skipped line 4: "), "{log}");
    assert!(
        log.contains("recovered 2 active bans from 4 lines, skipped 1"),
        "{log}"
    );
    assert_eq!(verdict(&fleet, "198.51.100.1").1, "duplicate");
    assert_eq!(verdict(&fleet, "198.51.100.2").1, "duplicate");
    assert_eq!(verdict(&fleet, "198.51.100.3").1, "accepted");
    // The log names the copy of the damaged journal, which holds what was on disk.
    let kept = log
        .split("the damaged journal is kept as ")
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .expect("the copy named in the log");
    assert_eq!(fs::read(kept).unwrap(), &text[..text.len() - 10]);
}

#[test]
fn a_record_the_wire_would_refuse_cannot_stall_the_fleet() {
    use banshare::config::Durability;
    use banshare::server::table::{Entry, Reporters};
    use banshare::store::{Store, SERVER_JOURNAL};
    use banshare::wire::protocol::{Ban, Name, MAX_BANTIME};
    let mut fleet = Fleet::new(&["web1"], "", "");
    let mut ips = fleet.preload(3);
    // A bantime over the wire's maximum, as an older or damaged server might have written.
    let (mut store, _) = Store::open(
        &fleet.dir.path().join("server-state"),
        SERVER_JOURNAL,
        Durability::Write,
        0,
    )
    .unwrap();
    let name = |n: &str| Name::parse("name", n).unwrap();
    let bad = Ban {
        ip: "10.9.9.9".parse().unwrap(),
        prog: name("fail2ban"),
        jail: name("sshd"),
        origin: name("web9"),
        bantime: Some(MAX_BANTIME + 1),
        expires: Some(u64::MAX / 2),
        reported: 1,
    };
    let entry = Entry {
        ban: bad,
        reporters: Reporters::default(),
        history: Default::default(),
    };
    store.append(&entry).unwrap();
    store.commit().unwrap();
    drop(store);
    fleet.start_server();
    assert!(
        fleet.server_log().contains("skipped line 5: bantime"),
        "{}",
        fleet.server_log()
    );
    // The client gets every good ban on the page, and no ban of the bad record.
    fleet.start_client(0);
    ips.sort();
    fleet.assert_applied_once(0, &ips);
}
