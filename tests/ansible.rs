//! The Ansible role and playbooks, for real over SSH: three Debian 12 containers booted with
//! systemd and sshd, deployed from scratch with site.yml from a control node on their
//! network; a second run changes nothing; rotate-keys.yml runs under a steady stream of
//! reports and loses none of them; a revoked host can no longer report or receive. Needs
//! root, the .deb (`scripts/package`) and Ansible in target/ansible-venv, all of which the
//! test command provides.

mod common;

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::container::{assert_cut_off, image, package, Container, BOOKWORM_JAIL_LOCAL};
use common::*;

const NAMES: [&str; 4] = ["srv", "web", "db", "out"];
/// The control node's address on the fleet's network (the bridge namespace).
const CONTROL: &str = "198.51.100.254";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn ansible_bin(name: &str) -> PathBuf {
    let path = repo().join("target/ansible-venv/bin").join(name);
    assert!(
        path.exists(),
        "{} missing: run scripts/test",
        path.display()
    );
    path
}

/// The control node: an SSH key, pinned host keys and an inventory, with ansible-playbook
/// run inside the lab's bridge namespace.
struct Control {
    dir: tempfile::TempDir,
    netns: String,
}

impl Control {
    fn new(lab: &Lab) -> Control {
        let dir = tempfile::tempdir().unwrap();
        lab.bridge
            .run(&["ip", "addr", "add", &format!("{CONTROL}/24"), "dev", "br0"]);
        let key = dir.path().join("id_ed25519");
        let made = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key)
            .status()
            .unwrap();
        assert!(made.success());
        Control {
            dir,
            netns: lab.bridge.name.clone(),
        }
    }

    fn public_key(&self) -> String {
        fs::read_to_string(self.dir.path().join("id_ed25519.pub")).unwrap()
    }

    /// Pins each host's generated host key, and writes the inventory.
    fn inventory(&self, hosts: &[(&Container, &str)], deb: &Path) {
        let mut known = String::new();
        for (host, address) in hosts {
            let key = host.read("/etc/ssh/ssh_host_ed25519_key.pub");
            let key: Vec<&str> = key.split_whitespace().take(2).collect();
            known.push_str(&format!("{address} {}\n", key.join(" ")));
        }
        fs::write(self.dir.path().join("known_hosts"), known).unwrap();
        let line = |(host, address): &(&Container, &str)| {
            format!("{} ansible_host={address}\n", host.name)
        };
        let d = self.dir.path().display();
        let inventory = format!(
            "[banshare_server]\n{}\n[banshare_clients]\n{}\n[all:vars]\nansible_user=root\n\
             ansible_python_interpreter=/usr/bin/python3\n\
             ansible_ssh_private_key_file={d}/id_ed25519\n\
             ansible_ssh_common_args='-o UserKnownHostsFile={d}/known_hosts -o StrictHostKeyChecking=yes'\n\
             banshare_package_file={}\nbanshare_firewall=nftables\n",
            line(&hosts[0]),
            hosts.iter().map(line).collect::<String>(),
            deb.display()
        );
        fs::write(self.dir.path().join("inventory"), inventory).unwrap();
        // The rotation test streams 20 reports a second from one host for over a minute,
        // past the default per-key limit (200 at once, then 60 a minute).
        let group_vars = self.dir.path().join("group_vars");
        fs::create_dir_all(&group_vars).unwrap();
        fs::write(
            group_vars.join("all.yml"),
            "banshare_server_settings:\n  report-burst: 100000\n",
        )
        .unwrap();
    }

    fn playbook(&self, name: &str, extra: &[&str]) -> Output {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.netns])
            .arg(ansible_bin("ansible-playbook"))
            .arg("-i")
            .arg(self.dir.path().join("inventory"))
            .arg(repo().join("ansible/playbooks").join(name))
            .args(extra)
            .env("ANSIBLE_NOCOLOR", "1")
            .env("ANSIBLE_HOME", self.dir.path().join("ansible-home"))
            // SSH connections are shared per address: another test's fleet on the same
            // addresses must not lend us its connections.
            .env("ANSIBLE_SSH_CONTROL_PATH_DIR", self.dir.path().join("cp"))
            .output()
            .unwrap();
        let log = self.dir.path().join(format!("{name}.log"));
        fs::write(&log, [&out.stdout[..], &out.stderr[..]].concat()).unwrap();
        out
    }

    /// Runs a playbook that must succeed, and returns each host's `changed=` count.
    fn run(&self, name: &str, extra: &[&str]) -> Vec<(String, u32)> {
        let out = self.playbook(name, extra);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{name} {extra:?} failed:\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        recap(&text)
    }
}

/// `host : ok=12 changed=3 ...` lines of the play recap.
fn recap(text: &str) -> Vec<(String, u32)> {
    let recap = &text[text.rfind("PLAY RECAP").expect("no recap")..];
    recap
        .lines()
        .skip(1)
        .filter_map(|line| {
            let (host, counts) = line.split_once(" : ")?;
            let changed = counts
                .split_whitespace()
                .find_map(|c| c.strip_prefix("changed="))?;
            Some((host.trim().to_string(), changed.parse().unwrap()))
        })
        .collect()
}

fn assert_nothing_changed(recap: &[(String, u32)], what: &str) {
    assert_eq!(recap.len(), 3, "{recap:?}");
    assert!(recap.iter().all(|(_, c)| *c == 0), "{what}: {recap:?}");
}

/// The report port and publish port the server listens on, from what the role remembers.
fn ports(srv: &Container) -> (u16, u16) {
    let fact: serde_json::Value =
        serde_json::from_str(&srv.read("/etc/ansible/facts.d/banshare.fact")).unwrap();
    let port = |key: &str| fact[key].as_u64().unwrap() as u16;
    (port("report_port"), port("publish_port"))
}

/// Reports from `host` at about 20 a second, each from a new address, until `stop`; each
/// report runs as its own process and is not waited for, as fail2ban runs them.
fn report_stream(host: &Container, stop: &AtomicBool) -> Vec<(String, Child)> {
    let mut reports = Vec::new();
    let started = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let i = reports.len();
        let ip = format!("198.18.{}.{}", i / 250, i % 250 + 1);
        let child = Command::new("nsenter")
            .args(["-t", &host.pid.to_string(), "-a", "banshare-report"])
            .args(["stream", "sshd", &ip])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        reports.push((ip, child));
        let next = started + Duration::from_millis(50 * reports.len() as u64);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    reports
}

#[test]
fn site_deploys_a_fleet_rotation_loses_no_ban_and_revocation_cuts_a_host_off() {
    let deb = package("debian", "_amd64.deb");
    let image = image();
    let lab = Lab::new("an", &NAMES);
    let control = Control::new(&lab);
    let hosts: Vec<Container> = NAMES[..3]
        .iter()
        .enumerate()
        .map(|(i, name)| Container::boot_with_ssh(name, lab.ns(i), &image, &control.public_key()))
        .collect();
    let (srv, web, db) = (&hosts[0], &hosts[1], &hosts[2]);
    let outsider = lab.ns(3);
    for host in &hosts {
        host.write("/etc/fail2ban/jail.local", BOOKWORM_JAIL_LOCAL);
    }
    let addressed: Vec<(&Container, &str)> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| (h, lab.address(i)))
        .collect();
    control.inventory(&addressed, &deb);

    // From scratch.
    control.run("site.yml", &[]);
    let status = srv.run("banshare status");
    for name in &NAMES[..3] {
        assert!(status.contains(&format!("  {name} ")), "{status}");
    }
    web.run("banshare-report lab sshd 203.0.113.80");
    for host in &hosts {
        wait_for("the ban on every host", Duration::from_secs(15), || {
            host.banned("203.0.113.80").then_some(())
        });
    }
    // The ports are open to the fleet only.
    let (report_port, publish_port) = ports(srv);
    assert!(!connects(outsider, lab.address(0), report_port));
    web.run("banshare ping");

    // Idempotent, and --check works.
    assert_nothing_changed(&control.run("site.yml", &[]), "second run");
    assert_nothing_changed(&control.run("site.yml", &["--check"]), "check mode");

    // Rotation under a steady stream of reports from web.
    let old_key = srv.read("/etc/banshare/keys/server.key");
    let stop = AtomicBool::new(false);
    let reports = std::thread::scope(|scope| {
        let stream = scope.spawn(|| report_stream(web, &stop));
        std::thread::sleep(Duration::from_secs(2));
        let rotated =
            control.playbook("rotate-keys.yml", &["-e", "banshare_rotate_host_keys=true"]);
        std::thread::sleep(Duration::from_secs(2));
        stop.store(true, Ordering::Relaxed);
        let reports = stream.join().unwrap();
        assert!(
            rotated.status.success(),
            "rotate-keys.yml failed:\n{}",
            String::from_utf8_lossy(&rotated.stdout)
        );
        reports
    });
    let mut reported = HashSet::new();
    let (mut spooled, mut sent) = (0, 0);
    for (ip, child) in reports {
        let out = child.wait_with_output().unwrap();
        match out.status.code() {
            Some(0) => sent += 1,
            Some(75) => spooled += 1,
            code => panic!(
                "report of {ip} exited {code:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
        }
        reported.insert(ip);
    }
    eprintln!(
        "rotation under load: {} reports, {sent} answered, {spooled} spooled",
        reported.len()
    );
    assert!(
        reported.len() >= 100 && spooled > 0,
        "the stream must span the switch"
    );
    for host in &hosts {
        let missing = wait_for(
            "every report on every host",
            Duration::from_secs(120),
            || {
                let missing: Vec<String> =
                    reported.difference(&host.jail_banned()).cloned().collect();
                missing.is_empty().then_some(missing)
            },
        );
        assert!(missing.is_empty());
    }
    // New ports and key: the old ones get nothing, from a host of the fleet.
    let (new_report, new_publish) = ports(srv);
    assert!(![report_port, publish_port].contains(&new_report));
    assert!(![report_port, publish_port].contains(&new_publish));
    assert_ne!(srv.read("/etc/banshare/keys/server.key"), old_key);
    web.write("/root/old-server.key", &old_key);
    for args in [
        "--server-key /root/old-server.key".to_string(),
        format!("--port {report_port}"),
    ] {
        let out = web.sh(&format!("banshare ping --timeout 2s {args}"));
        assert_eq!(out.status.code(), Some(69), "ping {args}: {out:?}");
    }
    assert!(!connects(lab.ns(1), lab.address(0), publish_port));
    web.run("banshare ping");

    // Revocation through the inventory: db can neither report nor receive.
    let revoked = r#"{"banshare_revoked_hosts": ["db"]}"#;
    control.run("site.yml", &["-e", revoked]);
    // site.yml keeps the ports the rotation chose.
    assert_eq!(ports(srv), (new_report, new_publish));
    assert_eq!(db.sh("banshare ping --timeout 2s").status.code(), Some(69));
    assert_cut_off(db, srv, web, ["203.0.113.90", "203.0.113.91"]);

    // The server's admin moves to firewalld: the fleet still gets in, nobody else does.
    srv.run(
        "nft delete table inet banshare_ports && \
         DEBIAN_FRONTEND=noninteractive apt-get install -y -q firewalld >/dev/null",
    );
    let firewalld = ["-e", "banshare_firewall=firewalld", "-e", revoked];
    control.run("site.yml", &firewalld);
    web.run("banshare ping");
    assert!(connects(lab.ns(1), lab.address(0), new_report));
    assert!(!connects(outsider, lab.address(0), new_report));
    assert!(!connects(outsider, lab.address(0), new_publish));
    assert_nothing_changed(
        &control.run("site.yml", &firewalld),
        "firewalld, second run",
    );

    // A rotation under firewalld moves the rules to the new ports, and leaves db, revoked,
    // without the new key and ports.
    let db_config = db.read("/etc/banshare/client.toml");
    control.run("rotate-keys.yml", &firewalld);
    let (report, publish) = ports(srv);
    let rules = srv.run("firewall-cmd --list-rich-rules");
    assert_eq!(rules.lines().count(), 2, "{rules}");
    for port in [report, publish] {
        assert!(rules.contains(&format!("port=\"{port}\"")), "{rules}");
        assert!(!connects(outsider, lab.address(0), port));
    }
    assert!(connects(lab.ns(1), lab.address(0), report));
    assert_eq!(db.read("/etc/banshare/client.toml"), db_config);
}
