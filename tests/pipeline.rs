//! The main job end to end: a report from one host is applied by every client.

use crate::common;

use std::process::Command;
use std::time::Duration;

use common::servers::admin_ok;
use common::*;

#[test]
fn report_reaches_both_clients_once() {
    let fleet = Fleet::start(&["web1", "web2"], "", "");
    let (code, stderr) = outcome(&fleet.report(0, &["fail2ban", "sshd", "203.0.113.7"]));
    assert_eq!(code, 0, "{stderr}");
    let line = "ban fail2ban sshd 203.0.113.7 86400";
    assert_eq!(fleet.wait_applied(0, line), 1);
    assert_eq!(fleet.wait_applied(1, line), 1);
    assert!(fleet
        .server_log()
        .contains("accepted 203.0.113.7 (fail2ban sshd) from web1"));
}

#[test]
fn duplicates_within_the_window_are_not_published_again() {
    let fleet = Fleet::start(&["web1", "web2"], "", "");
    let first = fleet.report(
        0,
        &["-v", "--bantime", "600", "fail2ban", "sshd", "203.0.113.8"],
    );
    assert!(
        outcome(&first).1.contains("accepted"),
        "{:?}",
        outcome(&first)
    );
    // The same address from another host, then a sentinel: once the sentinel has arrived,
    // a republished duplicate would have arrived too.
    let again = fleet.report(
        1,
        &["-v", "--bantime", "600", "fail2ban", "sshd", "203.0.113.8"],
    );
    assert_eq!(outcome(&again).0, 0);
    assert!(
        outcome(&again).1.contains("duplicate"),
        "{:?}",
        outcome(&again)
    );
    fleet.report(0, &["fail2ban", "sshd", "203.0.113.9"]);
    for host in 0..2 {
        fleet.wait_applied(host, "ban fail2ban sshd 203.0.113.9 86400");
        let copies = fleet
            .applied(host)
            .iter()
            .filter(|l| l.contains("203.0.113.8"))
            .count();
        assert_eq!(copies, 1, "host {host}: {:?}", fleet.applied(host));
    }
}

#[test]
fn ipv6_server_and_ipv6_bans() {
    let mut fleet = Fleet::new(&["web1"], "", "");
    edit(
        &fleet.server_config,
        "listen = \"127.0.0.1\"",
        "listen = \"::1\"",
    );
    edit(
        &fleet.hosts[0].config,
        "server = \"127.0.0.1\"",
        "server = \"::1\"",
    );
    fleet.start_server();
    fleet.start_client(0);
    let (code, stderr) =
        outcome(&fleet.report(0, &["--bantime", "-1", "fail2ban", "sshd", "2001:db8::7"]));
    assert_eq!(code, 0, "{stderr}");
    fleet.wait_applied(0, "ban fail2ban sshd 2001:db8::7 -1");
    fleet.report(0, &["fail2ban", "sshd", "2001:db8:1::/64"]);
    fleet.wait_applied(0, "ban fail2ban sshd 2001:db8:1::/64 86400");
}

#[test]
fn server_refuses_protected_and_huge_ranges_with_exit_77() {
    let fleet = Fleet::start(&["web1"], "protected = [\"198.51.100.0/24\"]", "");
    for ip in [
        "127.0.0.1",
        "::1",
        "198.51.100.7",
        "10.0.0.0/8",
        "0.0.0.0/0",
        "::/0",
        "ff02::1",
        // Protected addresses written in IPv6 forms that carry an IPv4 address, and
        // networks that cover a whole such range.
        "64:ff9b::7f00:1",
        "64:ff9b::/96",
        "64:ff9b::c633:6407",
        "::c633:6407",
        "::ffff:0:c633:6407",
        "2002:c633:6407::/48",
        "::fffe:0:0/95",
        "64:ff9b:1::/64",
    ] {
        let (code, stderr) = outcome(&fleet.report(0, &["fail2ban", "sshd", ip]));
        assert_eq!(code, 77, "{ip}: {stderr}");
        assert!(
            stderr.starts_with("banshare-report: ") && stderr.contains("refused"),
            "{stderr}"
        );
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    }
    fleet.report(0, &["fail2ban", "sshd", "203.0.113.10"]);
    fleet.wait_applied(0, "ban fail2ban sshd 203.0.113.10 86400");
    assert_eq!(fleet.applied(0).len(), 1, "{:?}", fleet.applied(0));
}

#[test]
fn server_never_bans_its_own_addresses() {
    let lab = Lab::new("own", &["srv", "web1"]);
    // A second address on the server's host, which no client knows as the server's.
    lab.ns(0)
        .run(&["ip", "addr", "add", "192.0.2.99/32", "dev", "eth0"]);
    let mut fleet = Fleet::new(&["srv", "web1"], "", "");
    fleet.place_on(&lab);
    fleet.start_server();
    for ip in ["192.0.2.99", "198.51.100.1", "64:ff9b::c000:263"] {
        let (code, stderr) = outcome(&fleet.report(1, &["fail2ban", "sshd", ip]));
        assert_eq!(code, 77, "{ip}: {stderr}");
        assert!(stderr.contains("covers this host's address"), "{stderr}");
    }
    let (code, stderr) = outcome(&fleet.report(1, &["fail2ban", "sshd", "203.0.113.12"]));
    assert_eq!(code, 0, "{stderr}");
}

const PYTHON: &str = "/usr/bin/python3";

fn python(script: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(PYTHON)
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Sends one 2014-format report with a pyzmq-made key pair and prints the reply.
const LEGACY_REPORTER: &str = r#"
import sys, zmq, zmq.auth
keys, port, message = sys.argv[1:]
server_public, _ = zmq.auth.load_certificate(keys + "/server.key")
own_public, own_secret = zmq.auth.load_certificate(keys + "/oldhost.key_secret")
s = zmq.Context().socket(zmq.REQ)
s.linger = 0
s.curve_serverkey, s.curve_publickey, s.curve_secretkey = server_public, own_public, own_secret
s.connect("tcp://127.0.0.1:" + port)
s.send(message.encode())
print(repr(s.recv_multipart()) if s.poll(5000) else "no reply")
"#;

#[test]
fn legacy_report_from_pyzmq_with_pyzmq_made_keys() {
    let fleet = Fleet::start(&["web1"], "", "");
    let keys_dir = fleet.keys_dir.to_str().unwrap();
    let (code, _, stderr) = python(
        "import sys, zmq.auth; zmq.auth.create_certificates(sys.argv[1], 'oldhost')",
        &[keys_dir],
    );
    assert_eq!(code, 0, "{stderr}");
    std::fs::copy(
        fleet.keys_dir.join("oldhost.key"),
        fleet.auth_dir.join("oldhost.key"),
    )
    .unwrap();
    fleet.signal_server(nix::sys::signal::Signal::SIGHUP);
    wait_for("reload", Duration::from_secs(5), || {
        fleet
            .server_log()
            .contains("reloaded: 2 authorized keys")
            .then_some(())
    });
    let port = fleet.report_port.to_string();
    let (code, stdout, stderr) = python(
        LEGACY_REPORTER,
        &[keys_dir, &port, "fail2ban;sshd;203.0.113.12;oldhost"],
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.trim(), "[b'OK']");
    fleet.wait_applied(0, "ban fail2ban sshd 203.0.113.12 86400");
    assert!(
        fleet.server_log().contains("(fail2ban sshd) from oldhost"),
        "{}",
        fleet.server_log()
    );
    // A malformed legacy report gets an error line, not OK.
    let (_, stdout, _) = python(LEGACY_REPORTER, &[keys_dir, &port, &";".repeat(1000)]);
    assert!(stdout.contains("ERR invalid"), "{stdout}");
}

#[test]
fn banshare_keys_load_in_pyzmq_and_pyzmq_keys_load_in_banshare() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let made = Command::new(ADMIN)
        .args(["keygen", "--dir", d, "--name", "ours"])
        .output()
        .unwrap();
    assert!(made.status.success());
    let (code, stdout, stderr) = python(
        r#"
import sys, zmq.auth
d = sys.argv[1]
pub, sec = zmq.auth.load_certificate(d + "/ours.key_secret")
pub2, none = zmq.auth.load_certificate(d + "/ours.key")
assert pub == pub2 and none is None and len(sec) == 40
zmq.auth.create_certificates(d, "theirs")
print(pub.decode())
"#,
        &[d],
    );
    assert_eq!(code, 0, "{stderr}");
    let ours = banshare::wire::keys::load_secret(&dir.path().join("ours.key_secret")).unwrap();
    assert_eq!(stdout.trim(), ours.public.z85());
    // pyzmq writes the secret file with its own mode; we tighten it as an admin would.
    let theirs_secret = dir.path().join("theirs.key_secret");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&theirs_secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let theirs = banshare::wire::keys::load_secret(&theirs_secret).unwrap();
    assert_eq!(
        banshare::wire::keys::load_public(&dir.path().join("theirs.key")).unwrap(),
        theirs.public
    );
}

/// The `python` blocks of docs/protocol.md section 8, as written.
fn protocol_examples() -> Vec<String> {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/protocol.md")).unwrap();
    let section = doc
        .split("## 8.")
        .nth(1)
        .unwrap()
        .split("## 9.")
        .next()
        .unwrap();
    let blocks = section.split("```python\n").skip(1);
    blocks
        .map(|b| b.split("```").next().unwrap().to_string())
        .collect()
}

#[test]
fn the_python_examples_of_the_protocol_run_as_written() {
    let fleet = Fleet::start(&["host"], "", "");
    let [reporter, snapshot] = &protocol_examples()[..] else {
        panic!("section 8 has a reporter and a snapshot example");
    };
    let keys = format!("{}/", fleet.keys_dir.display());
    let server = format!("127.0.0.1:{}", fleet.report_port);
    let here = |code: &str| {
        code.replace("/etc/banshare/keys/", &keys)
            .replace("banshare.example.net:41234", &server)
    };
    let (code, stdout, stderr) = python(&here(reporter), &[]);
    assert_eq!((code, stdout.trim()), (0, "ACCEPTED"), "{stderr}");
    fleet.wait_applied(0, "ban fail2ban sshd 203.0.113.7 600");
    // A page with a ban and a dated unban.
    admin_ok(&fleet, &["unban", "203.0.113.7"]);
    let (code, stderr) = outcome(&fleet.report(0, &["fail2ban", "sshd", "198.51.100.9"]));
    assert_eq!(code, 0, "{stderr}");
    // The reporter's set-up, up to its connect, then the snapshot function.
    let set_up: String = reporter
        .lines()
        .take_while(|l| !l.starts_with("prog,"))
        .map(|l| format!("{l}\n"))
        .collect();
    let check = "position, bans, unbans = snapshot(sock)\n\
                 assert all(len(b) == 7 for b in bans), bans\n\
                 assert all(len(u) == 3 for u in unbans), unbans\n\
                 print(len(bans), len(unbans))\n";
    let script = here(&format!("{set_up}{snapshot}{check}"));
    let (code, stdout, stderr) = python(&script, &[]);
    assert_eq!((code, stdout.trim()), (0, "1 1"), "{stderr}");
}
