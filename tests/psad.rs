//! psad as a detector and as a ban command, with real psad in a network namespace of the
//! test's own. Needs root, as the test command runs.

use crate::common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use common::*;

/// A psad daemon with every path moved into `dir`, auto-blocking on, and the shipped
/// EXTERNAL_BLOCK_SCRIPT line pointing at this build's reporter and the host's config.
struct Psad {
    conf: PathBuf,
    messages: PathBuf,
    ns: String,
    daemon: Child,
}

impl Psad {
    fn start(ns: &NetNs, dir: &Path, client_config: &Path) -> Psad {
        for sub in ["log", "run", "fifo"] {
            fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let etc = dir.join("etc");
        assert!(Command::new("cp")
            .args(["-r", "/etc/psad"])
            .arg(&etc)
            .status()
            .unwrap()
            .success());
        let messages = dir.join("messages");
        fs::write(&messages, "").unwrap();
        let d = dir.display();
        let snippet = fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("psad/psad.conf.snippet"),
        )
        .unwrap();
        let script = snippet
            .lines()
            .find(|l| l.starts_with("EXTERNAL_BLOCK_SCRIPT"))
            .unwrap()
            .replace(
                "/usr/bin/banshare-report",
                &format!("{REPORT} --config {}", client_config.display()),
            );
        let settings = [
            format!("PSAD_DIR {d}/log;"),
            format!("PSAD_RUN_DIR {d}/run;"),
            format!("PSAD_FIFO_DIR {d}/fifo;"),
            format!("PSAD_CONF_DIR {d}/etc;"),
            format!("IPT_SYSLOG_FILE {};", messages.display()),
            "ENABLE_AUTO_IDS Y;".into(),
            "AUTO_IDS_DANGER_LEVEL 1;".into(),
            "ENABLE_FW_LOGGING_CHECK N;".into(),
            "ALERTING_METHODS noemail;".into(),
            "CHECK_INTERVAL 1;".into(),
            "ENABLE_EXT_BLOCK_SCRIPT_EXEC Y;".into(),
            // psad reads the journal instead of IPT_SYSLOG_FILE when it sees any
            // systemd-journald running as root, even a container's booted by another test.
            "AUTO_DETECT_JOURNALCTL N;".into(),
            "ENABLE_FW_MSG_READ_CMD N;".into(),
            script,
        ];
        let conf = etc.join("psad.conf");
        // Each setting replaces its line in place: psad expands $VARIABLES in file order.
        let mut lines: Vec<String> = fs::read_to_string(&conf)
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
        for setting in settings {
            let key = setting.split_whitespace().next().unwrap().to_string();
            match lines
                .iter_mut()
                .find(|l| l.split_whitespace().next() == Some(&key))
            {
                Some(line) => *line = setting,
                None => lines.push(setting),
            }
        }
        let text = lines.join("\n") + "\n";
        fs::write(&conf, text).unwrap();
        let daemon = Command::new("ip")
            .args(["netns", "exec", &ns.name, "psad", "-c"])
            .arg(&conf)
            .arg("--no-daemon")
            .stdout(fs::File::create(dir.join("psad.out")).unwrap())
            .stderr(fs::File::create(dir.join("psad.err")).unwrap())
            .spawn()
            .unwrap();
        // psad is ready once it has written its pid file.
        wait_for("psad", Duration::from_secs(10), || {
            dir.join("run/psad.pid").exists().then_some(())
        });
        Psad {
            conf,
            messages,
            ns: ns.name.clone(),
            daemon,
        }
    }

    /// Kernel log lines of a SYN scan from `ip`, as iptables LOG rules write them.
    fn scan_from(&self, ip: &str) {
        let mut log = fs::OpenOptions::new()
            .append(true)
            .open(&self.messages)
            .unwrap();
        let now = syslog_now();
        for port in 1000..1012 {
            writeln!(
                log,
                "{now} a kernel: [1.0] DROP IN=eth0 OUT= MAC=00:00:00:00:00:00:00:00:00:00:00:00:08:00 \
                 SRC={ip} DST=198.51.100.1 LEN=44 TOS=0x00 PREC=0x00 TTL=40 ID=1 PROTO=TCP \
                 SPT=40000 DPT={port} WINDOW=1024 RES=0x00 SYN URGP=0"
            )
            .unwrap();
        }
    }
}

impl Drop for Psad {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "exec", &self.ns, "psad", "-c"])
            .arg(&self.conf)
            .arg("--Kill")
            .status();
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

#[test]
fn psad_reports_its_blocks_and_applies_the_fleets_with_a_duplicate_re_report() {
    let ns = NetNs::new("psad");
    let mut fleet = Fleet::new(&["a", "b"], "", "");
    fleet.netns = Some(ns.name.clone());
    let psad_dir = fleet.dir.path().join("psad");
    // Host a's client bans with psad, as psad/client.toml sets it up.
    let config = fleet.hosts[0].config.clone();
    let text = fs::read_to_string(&config).unwrap();
    let text: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with("ban-command"))
        .collect();
    let psad_conf = psad_dir.join("etc/psad.conf");
    fs::write(
        &config,
        format!(
            "{}\nban-command = \"/usr/sbin/psad -c {} --fw-block-ip <ip>\"\nipv6 = false\n",
            text.join("\n"),
            psad_conf.display()
        ),
    )
    .unwrap();
    fleet.start_server();
    let psad = Psad::start(&ns, &psad_dir, &config);
    fleet.start_client(0);
    fleet.start_client(1);

    // psad as the detector: a scan seen on host a is reported and host b bans it.
    psad.scan_from("203.0.113.61");
    wait_for("host b to ban the scanner", Duration::from_secs(30), || {
        let line = "ban psad psad 203.0.113.61 86400";
        fleet.applied(1).iter().any(|l| l == line).then_some(())
    });
    assert!(fleet
        .server_log()
        .contains("accepted 203.0.113.61 (psad psad) from a"));

    // psad as the ban command: a ban from host b reaches psad on host a, whose
    // EXTERNAL_BLOCK_SCRIPT reports it again; the server answers "duplicate".
    let (code, stderr) = outcome(&fleet.report(1, &["fail2ban", "sshd", "203.0.113.62"]));
    assert_eq!(code, 0, "{stderr}");
    wait_for("the duplicate re-report", Duration::from_secs(15), || {
        fleet
            .server_log()
            .contains("duplicate 203.0.113.62 (psad psad) from a")
            .then_some(())
    });
    // psad records the block in its own list too, a moment after running the script.
    wait_for(
        "psad's list of blocked addresses",
        Duration::from_secs(10),
        || {
            let blocked = fs::read_to_string(psad_dir.join("log/auto_blocked_iptables"));
            blocked
                .unwrap_or_default()
                .contains("203.0.113.62")
                .then_some(())
        },
    );

    // IPv6 is skipped with a warning on the psad host, and applied on the other.
    fleet.report(1, &["fail2ban", "sshd", "2001:db8::62"]);
    fleet.wait_applied(1, "ban fail2ban sshd 2001:db8::62 86400");
    wait_for("the warning", Duration::from_secs(5), || {
        fleet.client_log(0).contains("not applying ban of 2001:db8::62 from b: this host's ban command handles IPv4 only").then_some(())
    });
    let status: serde_json::Value =
        serde_json::from_slice(&fleet.admin(&["status", "--json"]).stdout).unwrap();
    assert_eq!(status["counters"]["published"], 3, "no loop: {status}");
}

#[test]
fn a_scan_seen_by_psad_on_one_host_is_dropped_by_another() {
    let lab = Lab::new("ps", &["a", "b", "x"]);
    let attacker = lab.address(2).to_string();
    let mut fleet = Fleet::new(&["a", "b"], "", "");
    fleet.place_on(&lab);
    fleet.add_client_config(1, "backend = \"nftables\"\n");
    fleet.start_server();
    let psad = Psad::start(
        lab.ns(0),
        &fleet.dir.path().join("psad"),
        &fleet.hosts[0].config,
    );
    fleet.start_client(0);
    fleet.start_client(1);
    let _service = Service::start(lab.ns(1), 8022);
    wait_for("the service", Duration::from_secs(5), || {
        connects(lab.ns(2), lab.address(1), 8022).then_some(())
    });

    psad.scan_from(&attacker);
    wait_for(
        "the scanner to be dropped on b",
        Duration::from_secs(30),
        || (!connects(lab.ns(2), lab.address(1), 8022)).then_some(()),
    );
    assert!(fleet
        .server_log()
        .contains(&format!("accepted {attacker} (psad psad) from a")));
    assert!(lab.ns(1).nft_elements("addr4").contains(&attacker));
}
