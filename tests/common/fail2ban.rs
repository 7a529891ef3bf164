//! A fail2ban-server of the test's own, for the tests and the benchmark.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use super::{command_in, syslog_now, wait_for, NetNs, REPORT};

/// A fail2ban-server of its own, configured from a copy of Debian's /etc/fail2ban plus the
/// files this project ships.
pub struct Fail2ban {
    dir: PathBuf,
    /// None when the caller is already in a network namespace of its own.
    ns: Option<String>,
}

impl Fail2ban {
    pub fn start(ns: &NetNs, dir: &Path, client_config: &Path) -> Fail2ban {
        Fail2ban::start_with(Some(ns), dir, client_config, "nftables-allports")
    }

    /// `banaction` is the banshare jail's ban action.
    pub fn start_with(
        ns: Option<&NetNs>,
        dir: &Path,
        client_config: &Path,
        banaction: &str,
    ) -> Fail2ban {
        let copied = Command::new("cp")
            .args(["-r", "/etc/fail2ban"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(copied.success());
        let _ = fs::remove_file(dir.join("jail.d/defaults-debian.conf"));
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("fail2ban");
        fs::copy(
            repo.join("action.d/banshare.conf"),
            dir.join("action.d/banshare.conf"),
        )
        .unwrap();
        fs::copy(
            repo.join("jail.d/banshare.conf"),
            dir.join("jail.d/banshare.conf"),
        )
        .unwrap();
        let d = dir.display();
        let write = |name: &str, text: String| fs::write(dir.join(name), text).unwrap();
        write(
            "fail2ban.local",
            format!(
                "[Definition]\nlogtarget = {d}/fail2ban.log\nsocket = {d}/fail2ban.sock\n\
                 pidfile = {d}/fail2ban.pid\ndbfile = {d}/fail2ban.sqlite3\n"
            ),
        );
        write(
            "jail.d/banshare.local",
            format!("[banshare]\nbanaction = {banaction}\n"),
        );
        write(
            "jail.d/sshd.local",
            format!(
                "[sshd]\nenabled = true\nbackend = polling\nlogpath = {d}/auth.log\nmaxretry = 3\n\
                 banaction = nftables-allports\n\
                 action = %(action_)s\n         banshare[banshare_report=\"{REPORT}\", config=\"{}\"]\n",
                client_config.display()
            ),
        );
        fs::write(dir.join("auth.log"), "").unwrap();
        let f2b = Fail2ban {
            dir: dir.to_owned(),
            ns: ns.map(|ns| ns.name.clone()),
        };
        f2b.serve();
        f2b
    }

    /// Starts fail2ban-server and waits until it answers.
    pub fn serve(&self) {
        let out = self.run("fail2ban-server", &["-b", "-x"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        wait_for("fail2ban to answer", Duration::from_secs(10), || {
            self.client(&["ping"]).status.success().then_some(())
        });
    }

    fn run(&self, program: &str, args: &[&str]) -> Output {
        command_in(self.ns.as_deref(), program)
            .arg("-c")
            .arg(&self.dir)
            .args(args)
            .output()
            .unwrap()
    }

    pub fn client(&self, args: &[&str]) -> Output {
        self.run("fail2ban-client", args)
    }

    pub fn banned(&self, jail: &str) -> String {
        String::from_utf8_lossy(&self.client(&["get", jail, "banned"]).stdout).into_owned()
    }

    /// sshd lines that Debian's sshd filter counts as failures from `ip`.
    pub fn failed_logins(&self, ip: &str, n: usize) {
        let mut log = fs::OpenOptions::new()
            .append(true)
            .open(self.dir.join("auth.log"))
            .unwrap();
        let now = syslog_now();
        for i in 0..n {
            writeln!(log, "{now} web1 sshd[{}]: Failed password for invalid user admin from {ip} port {} ssh2", 4000 + i, 50000 + i).unwrap();
        }
    }
}

impl Drop for Fail2ban {
    fn drop(&mut self) {
        let _ = self.client(&["stop"]);
    }
}
