//! Nothing lost: every acknowledged ban is applied exactly once on every host, across client
//! and server restarts, a frozen server, and bans that expired meanwhile.

use crate::common;

use std::time::Duration;

use common::*;
use nix::sys::signal::Signal;

fn addresses(prefix: &str, n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("{prefix}.{i}")).collect()
}

#[test]
fn a_stopped_client_applies_what_it_missed_once() {
    let mut fleet = Fleet::start(&["web1", "web2"], "", "");
    let before = fleet.report_all(0, &addresses("198.51.100", 5));
    fleet.assert_applied_once(1, &before);
    fleet.stop_client(1);
    let missed = fleet.report_all(0, &addresses("203.0.113", 100));
    assert_eq!(missed.len(), 100);
    fleet.start_client(1);
    let all = [before, missed].concat();
    fleet.assert_applied_once(1, &all);
    fleet.assert_applied_once(0, &all);
    let log = fleet.client_log(1);
    assert!(log.contains("5 bans applied here before"), "{log}");
    assert!(
        log.contains("resynchronised: 105 active bans on the server"),
        "{log}"
    );
}

#[test]
fn clients_resynchronise_after_the_server_is_killed_and_restarted() {
    let mut fleet = Fleet::start(&["web1", "web2"], "", "");
    let first = fleet.report_all(0, &addresses("203.0.113", 100));
    assert_eq!(first.len(), 100);
    fleet.signal_server(Signal::SIGKILL);
    fleet.wait_server();
    fleet.start_server();
    for i in 0..2 {
        wait_for("resynchronisation", Duration::from_secs(10), || {
            let log = fleet.client_log(i);
            (log.contains("new epoch") && log.contains("resynchronised: 100 active bans"))
                .then_some(())
        });
    }
    let second = fleet.report_all(1, &addresses("198.51.100", 10));
    let all = [first, second].concat();
    fleet.assert_applied_once(0, &all);
    fleet.assert_applied_once(1, &all);
}

/// A clean restart keeps the epoch: the clients, having missed nothing, page through
/// nothing, even after a silence long enough to have started a catch-up.
#[test]
fn clients_do_not_catch_up_after_a_clean_restart_of_the_server() {
    let mut fleet = Fleet::start(&["web1", "web2"], "", "");
    let first = fleet.report_all(0, &addresses("203.0.113", 20));
    fleet.assert_applied_once(1, &first);
    let resyncs = |fleet: &Fleet, i| fleet.client_log(i).matches("resynchronised").count();
    let before = [resyncs(&fleet, 0), resyncs(&fleet, 1)];
    fleet.signal_server(Signal::SIGTERM);
    fleet.wait_server();
    // Longer than three heartbeats: the clients start a catch-up, which waits.
    for i in 0..2 {
        wait_for("the silence noticed", Duration::from_secs(15), || {
            fleet.client_log(i).contains("no heartbeat").then_some(())
        });
    }
    fleet.start_server();
    assert!(fleet.server_log().contains("going on from epoch"));
    for i in 0..2 {
        wait_for("the server heard again", Duration::from_secs(15), || {
            let log = fleet.client_log(i);
            log.contains("nothing was missed: no catch-up needed")
                .then_some(())
        });
    }
    let second = fleet.report_all(1, &addresses("198.51.100", 5));
    let all = [first, second].concat();
    fleet.assert_applied_once(0, &all);
    fleet.assert_applied_once(1, &all);
    assert_eq!(
        [resyncs(&fleet, 0), resyncs(&fleet, 1)],
        before,
        "{}",
        fleet.client_log(0)
    );
    assert!(!fleet.client_log(0).contains("new epoch"));
}

/// Key rotation in place: the server restarts with a new key pair at the same path, and a
/// reload is enough for a client to take the new key and catch up.
#[test]
fn a_reloaded_client_takes_a_server_key_rewritten_in_place() {
    let mut fleet = Fleet::start(&["web1", "web2"], "", "");
    let first = fleet.report_all(0, &addresses("203.0.113", 5));
    fleet.assert_applied_once(1, &first);
    fleet.signal_server(Signal::SIGTERM);
    fleet.wait_server();
    banshare::wire::keys::generate(&fleet.keys_dir, "server", true).unwrap();
    fleet.start_server();
    let second = fleet.report_all(0, &addresses("198.51.100", 5));
    assert_eq!(
        second.len(),
        5,
        "the reporter reads the new key at each run"
    );
    // web2 still holds the old key: the new server does not let it in.
    std::thread::sleep(Duration::from_secs(1));
    assert!(!fleet.applied(1).iter().any(|l| l.contains("198.51.100.")));
    fleet.signal_client(1, Signal::SIGHUP);
    fleet.assert_applied_once(1, &[first, second].concat());
}

#[test]
fn clients_catch_up_after_the_server_was_frozen() {
    let fleet = Fleet::start(&["web1", "web2"], "", "");
    let before = fleet.report_all(0, &addresses("198.51.100", 5));
    fleet.signal_server(Signal::SIGSTOP);
    // Reports keep coming while the server is frozen: they time out and are spooled, and
    // web2's client delivers them once the server answers again.
    let during = addresses("100.64.0", 4);
    std::thread::scope(|s| {
        let reporter = s.spawn(|| {
            for ip in &during {
                let (code, stderr) = outcome(&fleet.report(1, &["fail2ban", "sshd", ip]));
                assert!(code == 0 || code == 75, "{stderr}");
            }
        });
        std::thread::sleep(Duration::from_secs(10));
        fleet.signal_server(Signal::SIGCONT);
        reporter.join().unwrap();
    });
    // They notice the silence; hearing the server again, they page through nothing if
    // nothing was missed, or catch up (a second time since their start) if a ban
    // published meanwhile was, as on a loaded machine.
    for i in 0..2 {
        wait_for("the clients to notice", Duration::from_secs(30), || {
            let log = fleet.client_log(i);
            let caught_up = log.matches("resynchronised").count() > 1;
            let back = log.contains("no catch-up needed") || caught_up;
            (log.contains("no heartbeat from") && back).then_some(())
        });
    }
    let after = fleet.report_all(0, &addresses("203.0.113", 5));
    let all = [before, during, after].concat();
    fleet.assert_applied_once(0, &all);
    fleet.assert_applied_once(1, &all);
}

#[test]
fn a_ban_that_expired_meanwhile_is_not_applied() {
    let mut fleet = Fleet::start(&["web1", "web2"], "", "");
    fleet.stop_client(1);
    let (code, stderr) =
        outcome(&fleet.report(0, &["--bantime", "1", "fail2ban", "sshd", "203.0.113.70"]));
    assert_eq!(code, 0, "{stderr}");
    fleet.wait_applied(0, "ban fail2ban sshd 203.0.113.70 1");
    std::thread::sleep(Duration::from_millis(1500));
    let live = fleet.report_all(0, &["203.0.113.71".to_string()]);
    fleet.start_client(1);
    fleet.assert_applied_once(1, &live);
}

#[test]
fn reports_spooled_while_the_server_is_down_reach_every_host() {
    let mut fleet = Fleet::new(&["web1", "web2"], "", "spool-max = 3");
    fleet.spawn_client(0);
    fleet.spawn_client(1);
    let spooled = addresses("203.0.113", 3);
    for ip in &spooled {
        let (code, stderr) = outcome(&fleet.report(0, &["fail2ban", "sshd", ip]));
        assert_eq!(code, 75, "{stderr}");
    }
    assert_eq!(fleet.spooled(0), 3);
    // A full spool loses the report, and says so.
    let (code, stderr) = outcome(&fleet.report(0, &["fail2ban", "sshd", "203.0.113.99"]));
    assert_eq!(code, 69, "{stderr}");
    assert!(
        stderr.contains("is full") && stderr.contains("lost"),
        "{stderr}"
    );
    wait_for("the client to complain", Duration::from_secs(5), || {
        fleet.client_log(0).contains("is full").then_some(())
    });
    fleet.start_server();
    fleet.assert_applied_once(0, &spooled);
    fleet.assert_applied_once(1, &spooled);
    wait_for("an empty spool", Duration::from_secs(5), || {
        (fleet.spooled(0) == 0).then_some(())
    });
    assert_eq!(
        fleet
            .client_log(0)
            .matches("delivered spooled report")
            .count(),
        3
    );
}

#[test]
fn a_snapshot_of_100000_bans_comes_in_pages() {
    let mut fleet = Fleet::new(&["web1"], "", "");
    fleet.preload(100_000);
    fleet.start_server();
    assert!(fleet.server_log().contains("ban table: 100000 active bans"));
    let raw = Raw::connect(
        fleet.report_port,
        Some((&fleet.server_key(), &fleet.host_key("web1"))),
    );
    let started = std::time::Instant::now();
    let (mut after, mut pages, mut seen) = (String::new(), 0, std::collections::HashSet::new());
    loop {
        let reply = raw
            .request(
                &[b"BANSHARE1", b"SNAPSHOT", after.as_bytes()],
                Duration::from_secs(5),
            )
            .expect("a page");
        let page = banshare::wire::protocol::SnapshotPage::decode(&reply).unwrap();
        pages += 1;
        seen.extend(page.bans.iter().map(|b| b.ip));
        match page.next {
            Some(next) => after = next.to_string(),
            None => break,
        }
    }
    eprintln!("100000 bans in {pages} pages in {:?}", started.elapsed());
    assert_eq!((seen.len(), pages), (100_000, 100));
}

#[test]
fn a_new_client_applies_a_snapshot_of_several_pages_once() {
    let mut fleet = Fleet::new(&["web1"], "", "max-concurrent-commands = 8");
    let ips = fleet.preload(2_500);
    fleet.start_server();
    fleet.start_client(0);
    fleet.assert_applied_once(0, &ips);
    assert!(
        fleet
            .client_log(0)
            .contains("resynchronised: 2500 active bans on the server in 3 pages"),
        "{}",
        fleet.client_log(0)
    );
}

#[test]
fn a_spooled_report_lost_with_its_server_goes_again_as_soon_as_the_server_is_back() {
    let mut fleet = Fleet::start(&["web1"], "", "");
    // The server freezes: the report goes to the spool, and the client sends it to the
    // frozen server, where it is lost when the server is killed.
    fleet.signal_server(Signal::SIGSTOP);
    let (code, stderr) = outcome(&fleet.report(0, &["fail2ban", "sshd", "203.0.113.77"]));
    assert_eq!(code, 75, "{stderr}");
    std::thread::sleep(Duration::from_millis(1200));
    fleet.signal_server(Signal::SIGKILL);
    fleet.wait_server();
    let back = std::time::Instant::now();
    fleet.start_server();
    // Not 5 s after it was sent, when its answer is overdue: once the server is heard.
    fleet.wait_logged(0, "the spooled report", Duration::from_secs(10), || {
        let log = fleet.client_log(0);
        log.contains("delivered spooled report").then_some(())
    });
    let took = back.elapsed();
    assert!(
        took < Duration::from_millis(2500),
        "delivered {took:?} after the restart"
    );
    fleet.wait_applied(0, "ban fail2ban sshd 203.0.113.77 86400");
}
