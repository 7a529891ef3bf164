//! The daemons as systemd sees them: notifications on NOTIFY_SOCKET, SIGHUP, SIGTERM.

use crate::common;

use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// A datagram socket at a file path, standing in for systemd's notify socket.
struct Notify {
    socket: UnixDatagram,
    path: std::path::PathBuf,
}

impl Notify {
    fn new(fleet: &Fleet, name: &str) -> Notify {
        let path = fleet.dir.path().join(name);
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Notify { socket, path }
    }

    /// Reads notifications until one contains `line`; returns everything read.
    fn expect(&self, line: &str) -> String {
        let mut seen = String::new();
        let mut buf = [0u8; 4096];
        while !seen.lines().any(|l| l == line) {
            let n = self
                .socket
                .recv(&mut buf)
                .unwrap_or_else(|e| panic!("no {line} after {seen:?}: {e}"));
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            seen.push('\n');
        }
        seen
    }
}

fn spawn(program: &str, config: &std::path::Path, notify: &Notify, log: &std::path::Path) -> Child {
    Command::new(program)
        .args(["--log", "stderr", "--config"])
        .arg(config)
        .env("NOTIFY_SOCKET", &notify.path)
        .stderr(std::fs::File::create(log).unwrap())
        .stdin(Stdio::null())
        .spawn()
        .unwrap()
}

fn signal(child: &Child, sig: Signal) {
    kill(Pid::from_raw(child.id() as i32), sig).unwrap();
}

fn stops_cleanly(mut child: Child, notify: &Notify) {
    signal(&child, Signal::SIGTERM);
    notify.expect("STOPPING=1");
    let status = wait_for("exit", Duration::from_secs(5), || child.try_wait().unwrap());
    assert_eq!(status.code(), Some(0), "{status:?}");
}

#[test]
fn server_notifies_ready_reloading_and_stopping() {
    let fleet = Fleet::new(&["web1"], "", "");
    let notify = Notify::new(&fleet, "server.notify");
    let server = spawn(SERVER, &fleet.server_config, &notify, &fleet.server_log);
    let ready = notify.expect("READY=1");
    assert!(
        ready.contains("STATUS=listening on tcp://127.0.0.1:"),
        "{ready}"
    );
    signal(&server, Signal::SIGHUP);
    notify.expect("RELOADING=1");
    notify.expect("READY=1");
    stops_cleanly(server, &notify);
    assert!(fleet.server_log().contains("stopping"));
}

#[test]
fn client_notifies_ready_once_connected_and_stops_on_sigint_too() {
    let mut fleet = Fleet::new(&["web1"], "", "");
    fleet.start_server();
    let notify = Notify::new(&fleet, "client.notify");
    let client = spawn(CLIENT, &fleet.hosts[0].config, &notify, &fleet.hosts[0].log);
    let ready = notify.expect("READY=1");
    assert!(
        ready.contains("STATUS=connected: tcp://127.0.0.1:"),
        "{ready}"
    );
    assert!(fleet.client_log(0).contains("connected to"));
    signal(&client, Signal::SIGHUP);
    notify.expect("RELOADING=1");
    notify.expect("READY=1");
    let mut client = client;
    signal(&client, Signal::SIGINT);
    notify.expect("STOPPING=1");
    let status = wait_for("exit", Duration::from_secs(5), || {
        client.try_wait().unwrap()
    });
    assert_eq!(status.code(), Some(0));
}

#[test]
fn daemons_refuse_a_bad_config_with_exit_78_and_one_line() {
    let fleet = Fleet::new(&["web1"], "dedup-window = \"soon\"", "");
    let out = Command::new(SERVER)
        .args(["--log", "stderr", "--config"])
        .arg(&fleet.server_config)
        .output()
        .unwrap();
    let (code, stderr) = outcome(&out);
    assert_eq!(code, 78, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let line = 1 + common::read(&fleet.server_config)
        .lines()
        .position(|l| l.starts_with("dedup-window"))
        .unwrap();
    let expected = format!("server.toml:{line}: invalid duration \"soon\"");
    assert!(stderr.contains(&expected), "{stderr}");

    std::fs::remove_file(fleet.keys_dir.join("web1.key_secret")).unwrap();
    let out = Command::new(CLIENT)
        .args(["--log", "stderr", "--config"])
        .arg(&fleet.hosts[0].config)
        .output()
        .unwrap();
    let (code, stderr) = outcome(&out);
    assert_eq!(code, 78, "{stderr}");
    assert!(stderr.contains("web1.key_secret"), "{stderr}");
}

#[test]
fn logs_to_syslog_facility_daemon_when_the_socket_exists() {
    let fleet = Fleet::new(&["web1"], "", "");
    let path = fleet.dir.path().join("log.sock");
    let syslog = UnixDatagram::bind(&path).unwrap();
    syslog
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut server = Command::new(SERVER)
        .args(["--log", "auto", "--config"])
        .arg(&fleet.server_config)
        .env("BANSHARE_SYSLOG_SOCKET", &path)
        .stderr(std::fs::File::create(&fleet.server_log).unwrap())
        .spawn()
        .unwrap();
    let ident = format!("banshare-server[{}]: ", server.id());
    let mut buf = [0u8; 4096];
    let line = loop {
        let n = syslog.recv(&mut buf).expect("a syslog message");
        let line = String::from_utf8_lossy(&buf[..n]).into_owned();
        if line.contains("listening on") {
            break line;
        }
    };
    // <30> is facility daemon (3) * 8 + severity info (6).
    assert!(line.starts_with("<30>"), "{line}");
    assert!(line.contains(&ident), "{line}");
    signal(&server, Signal::SIGTERM);
    assert_eq!(server.wait().unwrap().code(), Some(0));
    assert_eq!(fleet.server_log(), "", "nothing on stderr");
}

#[test]
fn pets_the_watchdog_when_systemd_asks() {
    let fleet = Fleet::new(&["web1"], "", "");
    let notify = Notify::new(&fleet, "watchdog.notify");
    // systemd sets WATCHDOG_PID to the service's pid; exec keeps the shell's pid.
    let mut server = Command::new("/bin/sh")
        .arg("-c")
        .arg("WATCHDOG_PID=$$ exec \"$0\" --log stderr --config \"$1\"")
        .arg(SERVER)
        .arg(&fleet.server_config)
        .env("NOTIFY_SOCKET", &notify.path)
        .env("WATCHDOG_USEC", "200000")
        .stderr(std::fs::File::create(&fleet.server_log).unwrap())
        .spawn()
        .unwrap();
    notify.expect("READY=1");
    notify.expect("WATCHDOG=1");
    notify.expect("WATCHDOG=1");
    signal(&server, Signal::SIGTERM);
    assert_eq!(server.wait().unwrap().code(), Some(0));
}

/// Starts `program` with a fault injected (debug builds only, see src/daemon/worker.rs).
fn with_fault(
    program: &str,
    config: &std::path::Path,
    fault: &str,
    log: &std::path::Path,
) -> Child {
    Command::new(program)
        .args(["--log", "stderr", "--config"])
        .arg(config)
        .env("BANSHARE_FAULT", fault)
        .stderr(std::fs::File::create(log).unwrap())
        .stdin(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn a_server_whose_zap_handler_dies_lets_nobody_in_and_ends() {
    use std::os::unix::process::ExitStatusExt;
    for (fault, says) in [
        ("zap-panics", "panicked"),
        ("zap-exits", "the ZAP handler stopped"),
    ] {
        let fleet = Fleet::new(&["web1"], "", "");
        let log = fleet.dir.path().join("faulty-server.log");
        let mut server = with_fault(SERVER, &fleet.server_config, fault, &log);
        wait_for("the server to listen", Duration::from_secs(10), || {
            read(&log).contains("listening on").then_some(())
        });
        // The first handshake reaches the ZAP handler, which dies answering it.
        let ping = |fleet: &Fleet| {
            let out = Command::new(ADMIN)
                .args(["ping", "--timeout", "1s", "--config"])
                .arg(&fleet.hosts[0].config)
                .output()
                .unwrap();
            outcome(&out).0
        };
        assert_eq!(
            ping(&fleet),
            69,
            "{fault}: the handshake is not let through"
        );
        let status = wait_for("the server to end", Duration::from_secs(5), || {
            server.try_wait().unwrap()
        });
        assert_eq!(
            status.signal(),
            Some(Signal::SIGABRT as i32),
            "{fault}: {status:?}"
        );
        assert!(read(&log).contains(says), "{}", read(&log));
        assert_eq!(ping(&fleet), 69, "{fault}: nothing answers any more");
    }
}

#[test]
fn a_client_whose_ban_command_thread_dies_ends_with_exit_70() {
    let mut fleet = Fleet::new(&["web1"], "", "");
    fleet.start_server();
    let log = fleet.hosts[0].log.clone();
    let mut client = with_fault(CLIENT, &fleet.hosts[0].config, "runner-exits", &log);
    wait_for("the client to connect", Duration::from_secs(10), || {
        read(&log).contains("connected to").then_some(())
    });
    fleet.report(0, &["fail2ban", "sshd", "203.0.113.80"]);
    let status = wait_for("the client to end", Duration::from_secs(5), || {
        client.try_wait().unwrap()
    });
    assert_eq!(status.code(), Some(70), "{}", read(&log));
    assert!(read(&log).contains("thread has stopped"), "{}", read(&log));
    // The ban ran before the thread stopped, and a restart does not run it again.
    fleet.start_client(0);
    fleet.report(0, &["fail2ban", "sshd", "203.0.113.81"]);
    fleet.assert_applied_once(0, &["203.0.113.80".to_string(), "203.0.113.81".to_string()]);
}
