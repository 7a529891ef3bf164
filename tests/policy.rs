//! Fleet policy (README "Policies"), with the real binaries: what a reload that protects a
//! network does to what is already banned.

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
