//! The report handoff (docs/protocol.md "The report handoff"): with banshare-client
//! running, banshare-report hands it the report over a local socket, and keeps every exit
//! code, the spool, and the key the server sees; only root and the client's user may use
//! the socket; and nothing a local peer sends stalls the reports of others.

use crate::common;

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::Duration;

use banshare::wire::handoff::{self, Handoff, Route};
use common::*;
use nix::sys::signal::Signal;

/// banshare-report -v as host `i` (or with another config): exit code and stderr.
fn report(fleet: &Fleet, i: usize, ip: &str) -> (i32, String) {
    outcome(&fleet.report(i, &["-v", "fail2ban", "sshd", ip]))
}

fn reporters_of(fleet: &Fleet, ip: &str) -> String {
    let bans = String::from_utf8(fleet.admin(&["bans", "--json"]).stdout).unwrap();
    let bans: serde_json::Value = serde_json::from_str(&bans).unwrap();
    let ban = bans
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["ip"] == ip)
        .unwrap_or_else(|| panic!("{ip} is not banned: {bans}"));
    ban["reporters"].to_string()
}

#[test]
fn a_report_goes_through_the_running_client_with_the_same_exit_codes_spool_and_key() {
    let mut fleet = Fleet::new(&["web1", "web2"], "protected = [\"198.51.100.0/24\"]", "");
    fleet.start_server();
    fleet.start_client(0);
    let socket = fleet.report_socket("web1");
    let mode = fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{}", socket.display());

    // Accepted (0), and applied, through the client.
    let (code, stderr) = report(&fleet, 0, "203.0.113.10");
    assert!(
        code == 0 && stderr.contains("through banshare-client"),
        "{stderr}"
    );
    fleet.wait_applied(0, "ban fail2ban sshd 203.0.113.10 86400");
    assert!(reporters_of(&fleet, "203.0.113.10").contains("web1"));
    // Refused (77) and invalid (65) keep their codes.
    let (code, stderr) = report(&fleet, 0, "198.51.100.7");
    assert_eq!(code, 77, "{stderr}");
    let (code, stderr) = report(&fleet, 0, "203.0.113.300");
    assert_eq!(code, 65, "{stderr}");

    // A client.toml with another key, pointed at web1's socket: web1's client sends it
    // back, and the report goes directly, under web2's key.
    let other = fleet.dir.path().join("web2-at-web1.toml");
    let text = fs::read_to_string(&fleet.hosts[1].config).unwrap();
    let text = text.replace(
        &fleet.report_socket("web2").display().to_string(),
        &socket.display().to_string(),
    );
    fs::write(&other, text).unwrap();
    let out = fleet
        .command(REPORT)
        .arg("--config")
        .arg(&other)
        .args(["-v", "fail2ban", "sshd", "203.0.113.11"])
        .output()
        .unwrap();
    let (code, stderr) = outcome(&out);
    assert!(code == 0 && !stderr.contains("through"), "{stderr}");
    let reporters = reporters_of(&fleet, "203.0.113.11");
    assert!(
        reporters.contains("web2") && !reporters.contains("web1"),
        "{reporters}"
    );

    // The server down: the client tries until the report's time is up, and the reporter
    // spools it (75); the client delivers it when the server is back.
    fleet.signal_server(Signal::SIGTERM);
    fleet.wait_server();
    let (code, stderr) = report(&fleet, 0, "203.0.113.12");
    assert!(code == 75 && stderr.contains("spooled"), "{stderr}");
    assert_eq!(fleet.spooled(0), 1);
    fleet.start_server();
    fleet.wait_applied(0, "ban fail2ban sshd 203.0.113.12 86400");

    // The client stopped: the report goes directly, as before.
    fleet.stop_client(0);
    let (code, stderr) = report(&fleet, 0, "203.0.113.13");
    assert!(code == 0 && !stderr.contains("through"), "{stderr}");
    assert!(reporters_of(&fleet, "203.0.113.13").contains("web1"));
}

/// The handoff saves most of a report's time only because the reporter never loads libzmq
/// (docs/performance.md, P2): a call into it from banshare-report's code would link it.
#[test]
fn banshare_report_is_not_linked_with_libzmq() {
    let out = Command::new("objdump")
        .args(["-p", REPORT])
        .output()
        .unwrap();
    let needed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && needed.contains("NEEDED"),
        "{needed}"
    );
    assert!(!needed.contains("libzmq"), "{needed}");
    let out = Command::new("objdump")
        .args(["-p", ADMIN])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("libzmq"));
}

/// The client's own route, as a reporter of host 0 with its client.toml would send it.
fn own_route(fleet: &Fleet) -> Route {
    let server = format!("tcp://127.0.0.1:{}", fleet.report_port);
    Route::new(
        &fleet.host_key("web1").public,
        [(server, fleet.server_key())],
    )
}

/// A whole handoff line for a report of `ip` from web1.
fn handoff_line(fleet: &Fleet, ip: &str) -> Vec<u8> {
    let report = banshare::wire::protocol::Report::parse("fail2ban", "sshd", ip, "").unwrap();
    handoff::encode(&Handoff {
        report: handoff::texts(&report.encode()),
        route: own_route(fleet),
        timeout_ms: 2000,
    })
}

/// Sends `line` to the report socket as user `uid`; returns what came back.
fn hand_over_as(uid: u32, socket: &std::path::Path, line: &std::path::Path) -> String {
    // A peer turned away may be closed on while it still sends.
    let send = "import socket, sys\n\
                s = socket.socket(socket.AF_UNIX)\n\
                s.connect(sys.argv[1])\n\
                try:\n  s.sendall(open(sys.argv[2], 'rb').read())\n  print(s.recv(4096).decode())\n\
                except OSError as e: print(e)";
    let out = Command::new("setpriv")
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={uid}"))
        .args(["--clear-groups", "/usr/bin/python3", "-c", send])
        .arg(socket)
        .arg(line)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", outcome(&out).1);
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn only_root_and_the_clients_user_may_hand_over_a_report() {
    let mut fleet = Fleet::start(&["web1"], "", "");
    // Opened wide, so that only the client's own check of the peer stands in the way: the
    // route is made of public keys, which anyone may know.
    for path in [
        fleet.dir.path().to_owned(),
        fleet.dir.path().join("web1-run"),
    ] {
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let socket = fleet.report_socket("web1");
    fs::set_permissions(&socket, fs::Permissions::from_mode(0o666)).unwrap();
    let line = fleet.dir.path().join("handoff.line");
    for (uid, ip) in [(65534, "203.0.113.20"), (0, "203.0.113.21")] {
        fs::write(&line, handoff_line(&fleet, ip)).unwrap();
        fs::set_permissions(&line, fs::Permissions::from_mode(0o644)).unwrap();
        let answer = hand_over_as(uid, &socket, &line);
        // Root's line, the same but for the address, is sent: the uid alone decides.
        assert_eq!(
            answer.contains("ACCEPTED"),
            uid == 0,
            "uid {uid}: {answer:?}"
        );
    }
    fleet.wait_logged(0, "the handoff turned away", Duration::from_secs(5), || {
        let log = fleet.client_log(0);
        log.contains("turned away a report handoff: uid 65534 is neither root nor the client's")
            .then_some(())
    });
    fleet.wait_applied(0, "ban fail2ban sshd 203.0.113.21 86400");
    let bans = String::from_utf8(fleet.admin(&["bans", "--json"]).stdout).unwrap();
    assert!(!bans.contains("203.0.113.20"), "{bans}");

    // banshare-report as that user: not handed over, and cannot read the host's key.
    fs::set_permissions(&fleet.hosts[0].config, fs::Permissions::from_mode(0o644)).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", REPORT])
        .arg("--config")
        .arg(&fleet.hosts[0].config)
        .args(["fail2ban", "sshd", "203.0.113.22"])
        .output()
        .unwrap();
    let (code, stderr) = outcome(&out);
    assert_eq!(code, 78, "{stderr}");
    assert!(fleet.running());
}

#[test]
fn nothing_a_local_peer_sends_stalls_the_handoff() {
    let mut fleet = Fleet::start(&["web1"], "", "");
    let socket = fleet.report_socket("web1");
    // Silent, never-ending, garbage, and a valid line that is no report.
    let silent = UnixStream::connect(&socket).unwrap();
    let mut endless = UnixStream::connect(&socket).unwrap();
    endless.write_all(&[b'x'; 8192]).unwrap();
    // Well-formed, with the client's own route, but a SNAPSHOT request.
    let route = own_route(&fleet);
    let snapshot = ["BANSHARE1", "SNAPSHOT", ""].map(String::from).to_vec();
    let not_a_report = handoff::encode(&Handoff {
        report: snapshot,
        route,
        timeout_ms: 1000,
    });
    let mut answers = Vec::new();
    for line in [b"garbage\n".to_vec(), not_a_report] {
        let mut stream = UnixStream::connect(&socket).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream.write_all(&line).unwrap();
        let mut answer = String::new();
        // Closed without an answer: such a reporter would report directly.
        stream.read_to_string(&mut answer).unwrap();
        answers.push(answer);
    }
    assert_eq!(answers, ["", ""]);
    let (code, stderr) = report(&fleet, 0, "203.0.113.30");
    assert!(
        code == 0 && stderr.contains("through banshare-client"),
        "{stderr}"
    );
    fleet.wait_applied(0, "ban fail2ban sshd 203.0.113.30 86400");
    drop((silent, endless));
    assert!(fleet.running());
}
