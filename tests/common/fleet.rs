//! A fleet on loopback, or in network namespaces: a server and one client per host, with
//! fresh keys, free ports and the real binaries. Each client's ban command appends a line
//! to its own file, so a test can count exactly what was applied where.

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use banshare::wire::keys::{self, KeyPair, PublicKey};

use super::*;

/// Which build of the four programs a server or a host runs: this one, or the previous
/// release (`release::previous`) in the tests of upgrades.
#[derive(Debug, Clone)]
pub struct Programs {
    pub server: PathBuf,
    pub client: PathBuf,
    pub report: PathBuf,
    pub admin: PathBuf,
}

impl Programs {
    pub fn current() -> Programs {
        Programs {
            server: SERVER.into(),
            client: CLIENT.into(),
            report: REPORT.into(),
            admin: ADMIN.into(),
        }
    }

    /// The programs in `dir`, as a release build leaves them.
    pub fn in_dir(dir: &std::path::Path) -> Programs {
        Programs {
            server: dir.join("banshare-server"),
            client: dir.join("banshare-client"),
            report: dir.join("banshare-report"),
            admin: dir.join("banshare"),
        }
    }
}

pub struct Host {
    pub name: String,
    /// What the host runs: its client and banshare-report.
    pub programs: Programs,
    pub config: PathBuf,
    pub applied: PathBuf,
    pub log: PathBuf,
    /// The host's own network namespace, when the test simulates separate hosts.
    pub netns: Option<String>,
    child: Option<Child>,
}

pub struct Fleet {
    pub dir: tempfile::TempDir,
    pub report_port: u16,
    pub publish_port: u16,
    pub server_config: PathBuf,
    pub server_log: PathBuf,
    pub auth_dir: PathBuf,
    pub keys_dir: PathBuf,
    pub hosts: Vec<Host>,
    server: Option<Child>,
    /// When set, every program runs inside this network namespace.
    pub netns: Option<String>,
    /// Environment for the server, such as libfaketime's for a server whose clock is off.
    pub server_env: Vec<(String, String)>,
    /// What the server runs, and the `banshare` that talks to it.
    pub programs: Programs,
}

impl Fleet {
    /// Keys and configs for a server and one client per name; nothing is started yet.
    /// `server_extra` and `client_extra` are appended to the TOML files.
    pub fn new(names: &[&str], server_extra: &str, client_extra: &str) -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        let keys_dir = dir.path().join("keys");
        let auth_dir = dir.path().join("authorized-keys");
        fs::create_dir_all(&keys_dir).unwrap();
        fs::create_dir_all(&auth_dir).unwrap();
        keys::generate(&keys_dir, "server", false).unwrap();
        let (report_port, publish_port) = (free_port(), free_port());
        let server_config = dir.path().join("server.toml");
        // Tests and the benchmark send thousands of reports from one key; the per-key limit
        // has tests of its own, which set it.
        let limit = if server_extra.contains("report-burst") {
            ""
        } else {
            "report-burst = 1000000\n"
        };
        fs::write(
            &server_config,
            format!(
                "listen = \"127.0.0.1\"\nreport-port = {report_port}\npublish-port = {publish_port}\n\
                 key = \"{}\"\nauthorized-keys = \"{}\"\nstate-dir = \"{}\"\n\
                 control-socket = \"{}\"\n{limit}{server_extra}\n",
                keys_dir.join("server.key_secret").display(),
                auth_dir.display(),
                dir.path().join("server-state").display(),
                dir.path().join("control.sock").display()
            ),
        )
        .unwrap();
        let mut fleet = Fleet {
            server_log: dir.path().join("server.log"),
            dir,
            report_port,
            publish_port,
            server_config,
            auth_dir,
            keys_dir,
            hosts: Vec::new(),
            server: None,
            server_env: Vec::new(),
            netns: None,
            programs: Programs::current(),
        };
        for name in names {
            fleet.add_host(name, client_extra);
        }
        fleet
    }

    /// A host with its own key pair, authorized on the server, and a client config.
    pub fn add_host(&mut self, name: &str, client_extra: &str) {
        let (public, _) = keys::generate(&self.keys_dir, name, false).unwrap();
        fs::copy(&public, self.auth_dir.join(format!("{name}.key"))).unwrap();
        let config = self.dir.path().join(format!("{name}.toml"));
        let applied = self.dir.path().join(format!("{name}.applied"));
        let line = |verb: &str| {
            format!(
                "'''/bin/sh -c 'printf \"{verb} %s %s %s %s\\n\" \"$1\" \"$2\" \"$3\" \"$4\" >> {}' sh <prog> <jail> <ip> <bantime>'''",
                applied.display()
            )
        };
        fs::write(
            &config,
            format!(
                "server = \"127.0.0.1\"\nreport-port = {}\npublish-port = {}\n\
                 server-key = \"{}\"\nkey = \"{}\"\nban-command = {}\nunban-command = {}\n\
                 report-timeout = \"2s\"\nstate-dir = \"{}\"\nspool-dir = \"{}\"\n\
                 control-socket = \"{}\"\nreport-socket = \"{}\"\n{client_extra}\n",
                self.report_port,
                self.publish_port,
                self.keys_dir.join("server.key").display(),
                self.keys_dir.join(format!("{name}.key_secret")).display(),
                line("ban"),
                line("unban"),
                self.dir.path().join(format!("{name}-state")).display(),
                self.spool_dir(name).display(),
                self.client_socket(name).display(),
                self.report_socket(name).display(),
            ),
        )
        .unwrap();
        self.hosts.push(Host {
            name: name.to_string(),
            programs: Programs::current(),
            log: self.dir.path().join(format!("{name}.log")),
            config,
            applied,
            netns: None,
            child: None,
        });
    }

    /// Writes `n` bans straight into the server's journal, as a server that had them would.
    pub fn preload(&self, n: usize) -> Vec<String> {
        use banshare::config::Durability;
        use banshare::server::table::{Entry, Reporter, Reporters};
        use banshare::store::{Store, SERVER_JOURNAL};
        use banshare::wire::protocol::{Ban, Name};
        let dir = self.dir.path().join("server-state");
        let (mut store, _) = Store::open(&dir, SERVER_JOURNAL, Durability::Write, 0).unwrap();
        let name = |n: &str| Name::parse("name", n).unwrap();
        let ips: Vec<String> = (0..n)
            .map(|i| format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255))
            .collect();
        for ip in &ips {
            let ban = Ban {
                ip: ip.parse().unwrap(),
                prog: name("fail2ban"),
                jail: name("sshd"),
                origin: name("web9"),
                bantime: None,
                expires: None,
                reported: 1,
            };
            let reporter = Reporter {
                name: name("web9"),
                first: 1,
                last: 1,
            };
            let entry = Entry {
                ban,
                reporters: Reporters::new([reporter], 0),
                history: Default::default(),
            };
            store.append(&entry).unwrap();
        }
        store.commit().unwrap();
        ips
    }

    /// A command for `program`, inside the fleet's network namespace if it has one.
    pub fn command(&self, program: &str) -> Command {
        command_in(self.netns.as_deref(), program)
    }

    /// A command for `program` on host `i`: in the host's namespace, else the fleet's.
    pub fn host_command(&self, i: usize, program: &str) -> Command {
        command_in(
            self.hosts[i].netns.as_deref().or(self.netns.as_deref()),
            program,
        )
    }

    /// Puts the server on the lab's first host, listening on its LAN address, and fleet host
    /// i on lab host i, talking to the server there.
    pub fn place_on(&mut self, lab: &Lab) {
        let server = lab.address(0).to_string();
        self.netns = Some(lab.ns(0).name.clone());
        edit(
            &self.server_config,
            "listen = \"127.0.0.1\"",
            &format!("listen = \"{server}\""),
        );
        for (i, host) in self.hosts.iter_mut().enumerate() {
            host.netns = Some(lab.ns(i).name.clone());
            edit(
                &host.config,
                "server = \"127.0.0.1\"",
                &format!("server = \"{server}\""),
            );
        }
    }

    /// Adds lines to host `i`'s client.toml.
    pub fn add_client_config(&self, i: usize, lines: &str) {
        let config = &self.hosts[i].config;
        let text = fs::read_to_string(config).unwrap();
        fs::write(config, text + lines).unwrap();
    }

    /// `admin`, which must succeed: its standard output.
    pub fn admin_ok(&self, args: &[&str]) -> String {
        let out = self.admin(args);
        let (code, stderr) = outcome(&out);
        assert_eq!(code, 0, "banshare {args:?}: {stderr}");
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs `banshare ARGS --socket <this fleet's control socket>`.
    pub fn admin(&self, args: &[&str]) -> Output {
        self.command(&self.programs.admin.to_string_lossy())
            .args(args)
            .arg("--socket")
            .arg(self.dir.path().join("control.sock"))
            .output()
            .unwrap()
    }

    /// Host `name`'s client control socket.
    pub fn client_socket(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}-run/client.sock"))
    }

    /// Where the host's client takes reports from banshare-report.
    pub fn report_socket(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}-run/report.sock"))
    }

    pub fn spool_dir(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}-spool"))
    }

    /// Reports waiting in host `i`'s spool.
    pub fn spooled(&self, i: usize) -> usize {
        fs::read_dir(self.spool_dir(&self.hosts[i].name)).map_or(0, std::iter::Iterator::count)
    }

    pub fn start_server(&mut self) {
        let started_before = self.server_log().matches("listening on").count();
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.server_log)
            .unwrap();
        let child = self
            .command(&self.programs.server.to_string_lossy())
            .envs(self.server_env.iter().cloned())
            .args(["--log", "stderr", "--config"])
            .arg(&self.server_config)
            .stderr(log)
            .spawn()
            .unwrap();
        self.server = Some(child);
        wait_for("server to listen", Duration::from_secs(30), || {
            (self.server_log().matches("listening on").count() > started_before).then_some(())
        });
    }

    /// Waits for the server process to end, after a signal.
    pub fn wait_server(&mut self) {
        if let Some(mut child) = self.server.take() {
            child.wait().unwrap();
        }
    }

    pub fn server_pid(&self) -> i32 {
        self.server.as_ref().unwrap().id() as i32
    }

    /// Whether the server and every started client are still running.
    pub fn running(&mut self) -> bool {
        self.server
            .iter_mut()
            .chain(self.hosts.iter_mut().filter_map(|h| h.child.as_mut()))
            .all(|child| matches!(child.try_wait(), Ok(None)))
    }

    pub fn client_pid(&self, i: usize) -> i32 {
        self.hosts[i].child.as_ref().unwrap().id() as i32
    }

    /// Starts host `i`'s client without waiting for it to connect.
    pub fn spawn_client(&mut self, i: usize) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.hosts[i].log)
            .unwrap();
        let child = self
            .host_command(i, &self.hosts[i].programs.client.to_string_lossy())
            .args(["--log", "stderr", "--config"])
            .arg(&self.hosts[i].config)
            .stderr(log)
            .spawn()
            .unwrap();
        self.hosts[i].child = Some(child);
    }

    pub fn start_client(&mut self, i: usize) {
        let connected_before = self.client_log(i).matches("connected to").count();
        self.spawn_client(i);
        wait_for("client to connect", Duration::from_secs(10), || {
            (self.client_log(i).matches("connected to").count() > connected_before).then_some(())
        });
    }

    /// Stops host `i`'s client with SIGTERM and waits for it to exit.
    pub fn stop_client(&mut self, i: usize) {
        if let Some(mut child) = self.hosts[i].child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
            child.wait().unwrap();
        }
    }

    /// Reports each address from host `i` and returns those the server acknowledged.
    pub fn report_all(&self, i: usize, ips: &[String]) -> Vec<String> {
        ips.iter()
            .filter(|ip| self.report(i, &["fail2ban", "sshd", ip]).status.success())
            .cloned()
            .collect()
    }

    /// Waits until host `i` has applied a ban of every address in `ips`, then checks that it
    /// applied each exactly once and nothing else.
    pub fn assert_applied_once(&self, i: usize, ips: &[String]) {
        let name = &self.hosts[i].name;
        wait_for(
            &format!("{name} to apply {} bans", ips.len()),
            Duration::from_secs(20),
            || {
                let applied = self.applied(i);
                ips.iter()
                    .all(|ip| {
                        applied
                            .iter()
                            .any(|l| l.starts_with("ban ") && l.split(' ').nth(3) == Some(ip))
                    })
                    .then_some(())
            },
        );
        // Anything applied twice would have been queued by now.
        std::thread::sleep(Duration::from_millis(300));
        let mut applied: Vec<String> = self
            .applied(i)
            .iter()
            .map(|l| l.split(' ').nth(3).unwrap_or_default().to_string())
            .collect();
        applied.sort();
        let mut expected = ips.to_vec();
        expected.sort();
        assert_eq!(
            applied, expected,
            "{name} must apply each acknowledged ban exactly once"
        );
    }

    /// Starts the server and every client.
    pub fn start(names: &[&str], server_extra: &str, client_extra: &str) -> Fleet {
        let mut fleet = Fleet::new(names, server_extra, client_extra);
        fleet.start_server();
        for i in 0..names.len() {
            fleet.start_client(i);
        }
        fleet
    }

    /// Runs banshare-report as host `i`.
    pub fn report(&self, i: usize, args: &[&str]) -> Output {
        self.report_command(i, args).output().unwrap()
    }

    /// banshare-report as host `i`, to run or spawn.
    pub fn report_command(&self, i: usize, args: &[&str]) -> Command {
        let mut command = self.host_command(i, &self.hosts[i].programs.report.to_string_lossy());
        command
            .arg("--config")
            .arg(&self.hosts[i].config)
            .args(args)
            .stdin(Stdio::null());
        command
    }

    /// Lines written by host `i`'s ban and unban commands.
    pub fn applied(&self, i: usize) -> Vec<String> {
        read(&self.hosts[i].applied)
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Waits until host `i` has applied `line`, and returns how often it did.
    pub fn wait_applied(&self, i: usize, line: &str) -> usize {
        self.wait_logged(
            i,
            &format!("{} to apply {line:?}", self.hosts[i].name),
            Duration::from_secs(30),
            || {
                let n = self.applied(i).iter().filter(|l| *l == line).count();
                (n > 0).then_some(n)
            },
        )
    }

    /// `wait_for`, but a timeout shows the server's log and host `i`'s, so that a failure
    /// in CI can be understood from its output alone.
    pub fn wait_logged<T>(
        &self,
        i: usize,
        what: &str,
        timeout: Duration,
        check: impl FnMut() -> Option<T>,
    ) -> T {
        poll(timeout, check).unwrap_or_else(|| {
            panic!(
                "timed out after {timeout:?} waiting for {what}\n--- server log:\n{}\n--- {}'s log:\n{}",
                self.server_log(),
                self.hosts[i].name,
                self.client_log(i)
            )
        })
    }

    pub fn server_log(&self) -> String {
        read(&self.server_log)
    }

    /// Waits up to 60 s, as long as a busy machine may take, for the server to log `text`.
    pub fn wait_server_logged(&self, what: &str, text: &str) {
        wait_for(what, Duration::from_secs(60), || {
            self.server_log().contains(text).then_some(())
        });
    }

    pub fn client_log(&self, i: usize) -> String {
        read(&self.hosts[i].log)
    }

    pub fn host_key(&self, name: &str) -> KeyPair {
        keys::load_secret(&self.keys_dir.join(format!("{name}.key_secret"))).unwrap()
    }

    pub fn server_key(&self) -> PublicKey {
        keys::load_public(&self.keys_dir.join("server.key")).unwrap()
    }

    pub fn signal_server(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.server_pid()), signal).unwrap();
    }

    pub fn signal_client(&self, i: usize, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.client_pid(i)), signal).unwrap();
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let children = self
            .server
            .iter_mut()
            .chain(self.hosts.iter_mut().filter_map(|h| h.child.as_mut()));
        for child in children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `program`, run inside network namespace `ns` when there is one.
pub fn command_in(ns: Option<&str>, program: &str) -> Command {
    match ns {
        Some(ns) => {
            let mut command = Command::new("ip");
            command.args(["netns", "exec", ns, program]);
            command
        }
        None => Command::new(program),
    }
}

/// Exit code and the stderr text of a finished command.
pub fn outcome(output: &Output) -> (i32, String) {
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
