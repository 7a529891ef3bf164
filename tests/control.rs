//! Fleet unban, and what the server says about itself: `banshare unban`, `bans`, `status`.

use crate::common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::*;

#[test]
fn an_unban_reaches_every_client_including_one_that_was_away() {
    let mut fleet = Fleet::start(&["web1", "web2", "web3"], "", "");
    let ips = vec!["203.0.113.80".to_string(), "2001:db8::80".to_string()];
    assert_eq!(fleet.report_all(0, &ips).len(), 2);
    for i in 0..3 {
        fleet.assert_applied_once(i, &ips);
    }
    fleet.stop_client(2);
    let said = fleet.admin_ok(&["unban", "203.0.113.80"]);
    assert!(said.contains("unbanned 203.0.113.80"), "{said}");
    for i in 0..2 {
        fleet.wait_applied(i, "unban fail2ban sshd 203.0.113.80 86400");
    }
    // web3 was down: it lifts the ban when it catches up, from the dated unban that the
    // snapshot pages carry.
    fleet.start_client(2);
    fleet.wait_applied(2, "unban fail2ban sshd 203.0.113.80 86400");
    // Unbanning again is an error; the server no longer lists it; a new report is news.
    let out = fleet.admin(&["unban", "203.0.113.80"]);
    assert_eq!(outcome(&out).0, 65, "{:?}", outcome(&out));
    assert!(outcome(&out).1.contains("not banned"));
    let bans = fleet.admin_ok(&["bans", "--json"]);
    assert!(
        !bans.contains("203.0.113.80") && bans.contains("2001:db8::80"),
        "{bans}"
    );
    let (code, stderr) = outcome(&fleet.report(1, &["-v", "fail2ban", "sshd", "203.0.113.80"]));
    assert!(code == 0 && stderr.contains("accepted"), "{stderr}");
    for i in 0..3 {
        let unbans = fleet
            .applied(i)
            .iter()
            .filter(|l| l.starts_with("unban"))
            .count();
        assert_eq!(unbans, 1, "host {i} unbans once: {:?}", fleet.applied(i));
    }
}

#[test]
fn bans_show_origin_and_expiry() {
    let fleet = Fleet::start(&["web1", "web2"], "", "");
    fleet.report(0, &["--bantime", "600", "fail2ban", "sshd", "203.0.113.81"]);
    fleet.report(1, &["--bantime", "-1", "psad", "psad", "198.51.100.0/24"]);
    let json: serde_json::Value =
        serde_json::from_str(&fleet.admin_ok(&["bans", "--json"])).unwrap();
    let bans = json.as_array().unwrap();
    assert_eq!(bans.len(), 2, "{json}");
    let find = |ip: &str| bans.iter().find(|b| b["ip"] == ip).unwrap().clone();
    let timed = find("203.0.113.81");
    assert_eq!(
        (timed["origin"].as_str(), timed["bantime"].as_u64()),
        (Some("web1"), Some(600))
    );
    let expires = timed["expires"].as_u64().unwrap();
    assert_eq!(expires - timed["first_report"].as_u64().unwrap(), 600);
    let permanent = find("198.51.100.0/24");
    assert_eq!(permanent["origin"], "web2");
    assert!(permanent["expires"].is_null());
    let table = fleet.admin_ok(&["bans"]);
    assert!(
        table.lines().next().unwrap().starts_with("ADDRESS"),
        "{table}"
    );
    assert!(
        table.contains("198.51.100.0/24") && table.contains("never"),
        "{table}"
    );
    // One network per line, as a blocklist.
    let plain = fleet.admin_ok(&["bans", "--format", "plain"]);
    let mut lines: Vec<&str> = plain.lines().collect();
    lines.sort();
    assert_eq!(lines, ["198.51.100.0/24", "203.0.113.81"], "{plain}");
}

#[test]
fn unban_origin_lifts_what_only_that_host_reported_everywhere() {
    // Group mail waits for two reporters.
    let groups = "[[groups]]\nname = \"mail\"\njails = [\"postfix\"]\nmin-reporters = 2\n";
    let fleet = Fleet::start(&["web1", "web2", "mal1"], groups, "");
    let report = |i: usize, jail: &str, ip: &str| {
        let (code, stderr) = outcome(&fleet.report(i, &["fail2ban", jail, ip]));
        assert_eq!(code, 0, "{stderr}");
    };
    // mal1 alone bans .1; mal1 and web1 ban .2; mal1 and web2 wait on .3 and .4 apart.
    report(2, "sshd", "203.0.113.1");
    report(2, "sshd", "203.0.113.2");
    report(0, "sshd", "203.0.113.2");
    report(2, "postfix", "203.0.113.3");
    report(1, "postfix", "203.0.113.4");
    for i in 0..3 {
        fleet.wait_applied(i, "ban fail2ban sshd 203.0.113.2 86400");
    }
    let said = fleet.admin_ok(&["unban", "--origin", "mal1"]);
    assert!(
        said.contains("unbanned 1 bans that only mal1 reported; kept 1 that other hosts reported too; dropped 1 of its waiting reports"),
        "{said}"
    );
    for i in 0..3 {
        fleet.wait_applied(i, "unban fail2ban sshd 203.0.113.1 86400");
    }
    let banned = fleet.admin_ok(&["bans", "--format", "plain"]);
    assert_eq!(banned.trim(), "203.0.113.2", "{banned}");
    let pending = fleet.admin_ok(&["bans", "--pending", "--format", "plain"]);
    assert_eq!(pending.trim(), "203.0.113.4", "{pending}");
    let (code, stderr) = outcome(&fleet.admin(&["unban", "--origin", "../x"]));
    assert_eq!(code, 65, "{stderr}");
}

#[test]
fn status_reports_counters_and_hosts() {
    let fleet = Fleet::start(&["web1", "web2"], "protected = [\"198.51.100.0/24\"]", "");
    fleet.report(0, &["fail2ban", "sshd", "203.0.113.82"]);
    fleet.report(0, &["fail2ban", "sshd", "203.0.113.83"]);
    fleet.report(1, &["fail2ban", "sshd", "203.0.113.82"]);
    fleet.report(1, &["fail2ban", "sshd", "198.51.100.9"]);
    fleet.report(1, &["fail2ban", "sshd", "10.0.0.0/8"]);
    let raw = Raw::connect(
        fleet.report_port,
        Some((&fleet.server_key(), &fleet.host_key("web1"))),
    );
    raw.request(
        &report_frames("fail2ban", "x;y", "203.0.113.84", ""),
        Duration::from_secs(2),
    )
    .expect("an answer");
    let status: serde_json::Value =
        serde_json::from_str(&fleet.admin_ok(&["status", "--json"])).unwrap();
    let counters = &status["counters"];
    assert_eq!(counters["accepted"], 2, "{status}");
    assert_eq!(counters["duplicate"], 1, "{status}");
    assert_eq!(counters["invalid"], 1, "{status}");
    assert_eq!(counters["refused"]["protected"], 1, "{status}");
    assert_eq!(counters["refused"]["min-prefix"], 1, "{status}");
    assert_eq!(counters["published"], 2, "{status}");
    assert_eq!(status["active_bans"], 2);
    assert_eq!(status["seq"], 2);
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    let hosts: Vec<&str> = status["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap())
        .collect();
    assert_eq!(hosts, ["web1", "web2"]);
    let text = fleet.admin_ok(&["status"]);
    assert!(
        text.contains("active bans: 2") && text.contains("web2"),
        "{text}"
    );
}

#[test]
fn the_control_socket_is_for_root_and_the_banshare_group_only() {
    let fleet = Fleet::start(&["web1"], "", "");
    let socket = fleet.dir.path().join("control.sock");
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    let missing = std::process::Command::new(ADMIN)
        .args(["status", "--socket", "/nonexistent/control.sock"])
        .output()
        .unwrap();
    let (code, stderr) = outcome(&missing);
    assert_eq!(code, 69, "{stderr}");
    assert!(
        stderr.contains("is banshare-server (or banshare-client) running?"),
        "{stderr}"
    );
}

#[test]
fn import_checks_every_line_like_a_report_and_bans_in_batches_everywhere() {
    let fleet = Fleet::start(&["web1", "web2"], "protected = [\"192.0.2.0/24\"]\n", "");
    let mut lines: Vec<String> = (0..1000)
        .map(|i| format!("198.18.{}.{}", i / 250, i % 250 + 1))
        .collect();
    lines.extend(
        [
            "# a comment, then a duplicate, a protected address, a network too wide for a list, CSV",
            "198.18.0.1",
            "192.0.2.5",
            "198.0.0.0/7",
            "203.0.113.9,600,web",
        ]
        .map(String::from),
    );
    let file = fleet.dir.path().join("blocklist.txt");
    fs::write(&file, lines.join("\n")).unwrap();
    let path = file.to_str().unwrap();
    let said = fleet.admin_ok(&["import", path, "--origin", "blocklist", "--bantime", "1d"]);
    assert!(
        said.contains("1001 accepted, 1 duplicates, 2 refused (min-prefix 1, protected 1)"),
        "{said}"
    );
    for i in 0..2 {
        // A thousand commands, several at once, so the last published is not always the
        // last done; generous, for a busy machine.
        fleet.wait_logged(i, "1001 bans applied", Duration::from_secs(60), || {
            (fleet.applied(i).len() >= 1001).then_some(())
        });
        let applied = fleet.applied(i);
        assert_eq!(applied.len(), 1001, "each once: {:?}", &applied[..5]);
        assert!(applied.contains(&"ban import blocklist 198.18.3.250 86400".to_string()));
        assert!(applied.contains(&"ban import web 203.0.113.9 600".to_string()));
    }
    let banned = fleet.admin_ok(&["bans", "--format", "plain"]);
    assert_eq!(banned.lines().count(), 1001);
    // The import's bans are lifted together, by the name they were imported under.
    let lifted = fleet.admin_ok(&["unban", "--origin", "blocklist"]);
    assert!(
        lifted.contains("unbanned 1001 bans that only blocklist reported"),
        "{lifted}"
    );
    fleet.wait_applied(0, "unban import web 203.0.113.9 600");

    // A bad line imports nothing; a host's name is not an import's.
    fs::write(&file, "203.0.113.10\nnot-an-address\n").unwrap();
    let (code, stderr) = outcome(&fleet.admin(&["import", path]));
    assert_eq!(code, 65, "{stderr}");
    assert!(
        stderr.contains("blocklist.txt:2:") && stderr.contains("nothing imported"),
        "{stderr}"
    );
    fs::write(&file, "203.0.113.10\n").unwrap();
    let (code, stderr) = outcome(&fleet.admin(&["import", path, "--origin", "web1"]));
    assert_eq!(code, 65, "{stderr}");
    assert!(
        stderr.contains("web1 is the name of a host's key"),
        "{stderr}"
    );
    assert!(fleet
        .admin_ok(&["bans", "--format", "plain"])
        .trim()
        .is_empty());
}
