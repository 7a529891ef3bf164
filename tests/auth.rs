//! Only hosts whose keys the server knows can report or listen; everyone else gets nothing.

use crate::common;

use std::fs;
use std::time::{Duration, Instant};

use banshare::wire::keys;
use common::*;
use nix::sys::signal::Signal;

const SHORT: Duration = Duration::from_millis(1500);

#[test]
fn plaintext_peer_gets_nothing() {
    let fleet = Fleet::start(&["web1"], "", "");
    let raw = Raw::connect(fleet.report_port, None);
    assert_eq!(
        raw.request(
            &report_frames("fail2ban", "sshd", "203.0.113.20", ""),
            SHORT
        ),
        None
    );
    let legacy = Raw::connect(fleet.report_port, None);
    assert_eq!(
        legacy.request(&[b"fail2ban;sshd;203.0.113.20;x"], SHORT),
        None
    );
    fleet.report(0, &["fail2ban", "sshd", "203.0.113.21"]);
    fleet.wait_applied(0, "ban fail2ban sshd 203.0.113.21 86400");
    assert!(!fs::read_to_string(&fleet.hosts[0].applied)
        .unwrap()
        .contains("203.0.113.20"));
    let log = fleet.server_log();
    assert!(
        // libzmq usually reports the mechanism mismatch, but not always in the same way.
        log.contains("report: refused a peer without CURVE (plaintext) from 127.0.0.1")
            || log.contains("report: refused a peer that did not complete the handshake"),
        "{log}"
    );
}

#[test]
fn wrong_server_key_gets_nothing() {
    let fleet = Fleet::start(&["web1"], "", "");
    let impostor = keys::KeyPair::generate().unwrap();
    let web1 = fleet.host_key("web1");
    let raw = Raw::connect(fleet.report_port, Some((&impostor.public, &web1)));
    assert_eq!(
        raw.request(
            &report_frames("fail2ban", "sshd", "203.0.113.22", ""),
            SHORT
        ),
        None
    );

    // The same through banshare-report: exit 75, spooled, one line saying why it may be.
    let (public, _) = keys::generate(&fleet.keys_dir, "impostor", false).unwrap();
    let config = common::read(&fleet.hosts[0].config).replace("server.key\"", "impostor.key\"");
    let bad_config = fleet.dir.path().join("wrong-server-key.toml");
    fs::write(&bad_config, config).unwrap();
    assert!(public.exists());
    let out = std::process::Command::new(REPORT)
        .arg("--config")
        .arg(&bad_config)
        .args(["fail2ban", "sshd", "203.0.113.22"])
        .output()
        .unwrap();
    let (code, stderr) = outcome(&out);
    assert_eq!(code, 75, "{stderr}");
    assert!(
        stderr.contains("no answer") && stderr.contains("wrong server key"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1);
    assert!(fleet.applied(0).is_empty());
    let log = fleet.server_log();
    assert!(
        log.contains("report: refused a peer using a wrong server key from 127.0.0.1"),
        "{log}"
    );
}

#[test]
fn unknown_key_gets_nothing_and_is_logged() {
    let mut fleet = Fleet::new(&["web1"], "", "");
    fleet.add_host("stranger", "");
    fs::remove_file(fleet.auth_dir.join("stranger.key")).unwrap();
    fleet.start_server();
    fleet.start_client(0);
    let (code, stderr) = outcome(&fleet.report(1, &["fail2ban", "sshd", "203.0.113.23"]));
    assert_eq!(code, 75, "{stderr}");
    let stranger = keys::load_public(&fleet.keys_dir.join("stranger.key")).unwrap();
    let log = fleet.server_log();
    assert!(
        log.contains(&format!(
            "report: refused unknown key {} from 127.0.0.1",
            stranger.fingerprint()
        )),
        "{log}"
    );
    assert!(log.contains("publish: accepted web1"), "{log}");
    assert!(fleet.applied(0).is_empty());
}

#[test]
fn key_revoked_by_sighup_can_neither_report_nor_receive_within_two_seconds() {
    let fleet = Fleet::start(&["web1", "web2"], "", "");
    // web2 holds a report connection open, as a long-lived reporter would.
    let web2 = fleet.host_key("web2");
    let raw = Raw::connect(fleet.report_port, Some((&fleet.server_key(), &web2)));
    let reply = raw.request(
        &report_frames("fail2ban", "sshd", "203.0.113.30", ""),
        SHORT,
    );
    assert_eq!(
        texts(&reply.expect("web2 may report")),
        ["BANSHARE1", "ACCEPTED", ""]
    );
    fleet.wait_applied(1, "ban fail2ban sshd 203.0.113.30 86400");
    let accepted_web1 = fleet.server_log().matches("publish: accepted web1").count();

    fs::remove_file(fleet.auth_dir.join("web2.key")).unwrap();
    let revoked_at = Instant::now();
    fleet.signal_server(Signal::SIGHUP);
    wait_for("revocation", Duration::from_secs(2), || {
        fleet.server_log().contains("revoked web2").then_some(())
    });
    // The open connection is refused at its next message.
    assert_eq!(
        raw.request(
            &report_frames("fail2ban", "sshd", "203.0.113.31", ""),
            SHORT
        ),
        None
    );
    // web1's subscriber reconnects; wait for that, so the next ban is not lost to it.
    wait_for("web1 to resubscribe", Duration::from_secs(2), || {
        (fleet.server_log().matches("publish: accepted web1").count() > accepted_web1).then_some(())
    });
    let elapsed = revoked_at.elapsed();
    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");

    let (code, stderr) = outcome(&fleet.report(1, &["fail2ban", "sshd", "203.0.113.32"]));
    assert_eq!(code, 75, "{stderr}");
    fleet.report(0, &["fail2ban", "sshd", "203.0.113.33"]);
    fleet.wait_applied(0, "ban fail2ban sshd 203.0.113.33 86400");
    // Give a wrongly subscribed web2 the same time to receive it, then check it did not.
    std::thread::sleep(Duration::from_millis(300));
    let web2_applied = fleet.applied(1);
    assert_eq!(
        web2_applied,
        ["ban fail2ban sshd 203.0.113.30 86400"],
        "{web2_applied:?}"
    );
    assert!(
        fleet.server_log().contains("publish: refused unknown key"),
        "{}",
        fleet.server_log()
    );
    wait_for("web2 to explain", Duration::from_secs(2), || {
        fleet
            .client_log(1)
            .contains("refused this host's key")
            .then_some(())
    });
}

/// CURVE failures are silent on the wire; the client's log must say what is wrong.
#[test]
fn client_explains_why_it_is_not_connected() {
    let mut fleet = Fleet::new(&["down", "wrongkey", "unknown"], "", "");
    keys::generate(&fleet.keys_dir, "impostor", false).unwrap();
    let config = common::read(&fleet.hosts[1].config).replace("server.key\"", "impostor.key\"");
    fs::write(&fleet.hosts[1].config, config).unwrap();
    fs::remove_file(fleet.auth_dir.join("unknown.key")).unwrap();
    fleet.spawn_client(0);
    wait_for("unreachable", Duration::from_secs(5), || {
        fleet
            .client_log(0)
            .contains("cannot reach tcp://127.0.0.1:")
            .then_some(())
    });
    fleet.start_server();
    fleet.spawn_client(1);
    fleet.spawn_client(2);
    wait_for("wrong key explained", Duration::from_secs(5), || {
        fleet
            .client_log(1)
            .contains("check that server-key is this server's public key")
            .then_some(())
    });
    wait_for("refusal explained", Duration::from_secs(5), || {
        fleet
            .client_log(2)
            .contains("refused this host's key")
            .then_some(())
    });
    // The client that waited for the server connects once it is up.
    wait_for("late connection", Duration::from_secs(5), || {
        fleet
            .client_log(0)
            .contains("CURVE handshake with tcp://127.0.0.1:")
            .then_some(())
    });
}

#[test]
fn reload_keeps_authorized_hosts_working_and_survives_a_bad_config() {
    let fleet = Fleet::start(&["web1"], "", "");
    let good = common::read(&fleet.server_config);
    fs::write(&fleet.server_config, format!("{good}\nnonsense = 1\n")).unwrap();
    fleet.signal_server(Signal::SIGHUP);
    wait_for("failed reload", Duration::from_secs(2), || {
        fleet
            .server_log()
            .contains("reload failed, keeping the running configuration")
            .then_some(())
    });
    assert!(
        fleet.server_log().contains("server.toml:"),
        "{}",
        fleet.server_log()
    );
    fs::write(&fleet.server_config, good).unwrap();
    fleet.signal_server(Signal::SIGHUP);
    wait_for("reload", Duration::from_secs(2), || {
        fleet
            .server_log()
            .contains("reloaded: 1 authorized keys")
            .then_some(())
    });
    let (code, stderr) = outcome(&fleet.report(0, &["fail2ban", "sshd", "203.0.113.34"]));
    assert_eq!(code, 0, "{stderr}");
    fleet.wait_applied(0, "ban fail2ban sshd 203.0.113.34 86400");
}

/// libzmq gives up on an endpoint whose server refused the key; the client must not.
#[test]
fn client_refused_at_first_gets_in_once_its_key_is_authorized() {
    let mut fleet = Fleet::new(&["late"], "", "");
    let key_file = fleet.auth_dir.join("late.key");
    let saved = fs::read(&key_file).unwrap();
    fs::remove_file(&key_file).unwrap();
    fleet.start_server();
    fleet.spawn_client(0);
    wait_for("refusal", Duration::from_secs(5), || {
        fleet
            .client_log(0)
            .contains("refused this host's key")
            .then_some(())
    });
    fs::write(&key_file, saved).unwrap();
    fleet.signal_server(Signal::SIGHUP);
    wait_for("connection", Duration::from_secs(5), || {
        fleet.client_log(0).contains("connected to").then_some(())
    });
    fleet.report(0, &["fail2ban", "sshd", "203.0.113.35"]);
    fleet.wait_applied(0, "ban fail2ban sshd 203.0.113.35 86400");
    let refusals = fleet
        .client_log(0)
        .matches("refused this host's key")
        .count();
    assert_eq!(refusals, 1, "retries must not repeat the message");
}

/// `banshare ping` tells an admin whether a host gets in, without reporting anything.
#[test]
fn ping_answers_only_with_the_right_key_port_and_authorization() {
    let fleet = Fleet::start(&["web1"], "", "");
    let config = fleet.hosts[0].config.to_str().unwrap().to_string();
    let ping = |extra: &[&str]| {
        let out = fleet
            .command(ADMIN)
            .args(["ping", "--timeout", "1s", "--config", &config])
            .args(extra)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (out.status.code().unwrap(), text + &outcome(&out).1)
    };
    let (code, text) = ping(&[]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("answered: 0 bans"), "{text}");

    let other = fleet.dir.path().join("other");
    fs::create_dir_all(&other).unwrap();
    keys::generate(&other, "server", false).unwrap();
    let wrong_key = other.join("server.key");
    let (code, text) = ping(&["--server-key", wrong_key.to_str().unwrap()]);
    assert_eq!(code, 69, "{text}");
    assert!(text.contains("no answer from"), "{text}");
    assert_eq!(text.lines().count(), 1, "{text}");
    let (code, _) = ping(&["--port", &free_port().to_string()]);
    assert_eq!(code, 69);

    fs::remove_file(fleet.auth_dir.join("web1.key")).unwrap();
    fleet.signal_server(Signal::SIGHUP);
    wait_for("revocation", Duration::from_secs(5), || {
        fleet.server_log().contains("revoked web1").then_some(())
    });
    assert_eq!(ping(&[]).0, 69);
    assert!(fleet.applied(0).is_empty(), "a ping must not ban anything");
}

#[test]
fn peers_refused_in_the_handshake_are_logged_with_their_address() {
    let _turn = one_at_a_time();
    let fleet = Fleet::start(&["web1"], "", "");
    let impostor = keys::KeyPair::generate().unwrap();
    let web1 = fleet.host_key("web1");
    let frames = report_frames("fail2ban", "sshd", "203.0.113.40", "");
    // Peers refused within a millisecond of connecting: a wrong server key, no CURVE.
    for curve in [Some((&impostor.public, &web1)), None] {
        for _ in 0..30 {
            let raw = Raw::connect(fleet.report_port, curve);
            assert_eq!(raw.request(&frames, Duration::from_millis(20)), None);
        }
    }
    // The refusals are summed up within a minute, and at once on the way out.
    fleet.signal_server(Signal::SIGTERM);
    wait_for("the summary", Duration::from_secs(5), || {
        fleet.server_log().contains("stopping").then_some(())
    });
    let log = fleet.server_log();
    let refusals: Vec<&str> = log.lines().filter(|l| l.contains(": refused")).collect();
    let gone = "from an address gone before it could be read";
    assert!(!refusals.is_empty(), "{log}");
    assert!(
        refusals
            .iter()
            .all(|l| l.contains("127.0.0.1") || l.contains(gone)),
        "{log}"
    );
    // The address is best effort (README): a busy machine may close a refused peer's
    // descriptor before the relay reads it, but most are named.
    let wrong_key = refusals.iter().filter(|l| l.contains("wrong server key"));
    let named = wrong_key
        .clone()
        .filter(|l| l.contains("127.0.0.1"))
        .count();
    assert!(named > 0 && named * 2 >= wrong_key.count(), "{log}");
}
