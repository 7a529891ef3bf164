//! The Ansible role and playbooks, for real over SSH: four Debian 12 containers booted with
//! systemd and sshd, two of them servers that peer with each other (docs/ha.md; one is a
//! client of the fleet as well, the other only a server), deployed from scratch with the
//! previous release's site.yml and package from a control node on their network, upgraded
//! to this release with upgrade.yml under 20 reports a second, none lost, after which
//! `--check` of this release's site.yml finds nothing to change; one run revokes a host and
//! moves a server to firewalld, and a second changes nothing; rotate-keys.yml then switches
//! every key and port, the servers one at a time,
//! under a steady stream of reports, which the other server answers meanwhile, and loses
//! none of them. A second, smaller fleet checks that `--check` works before anything was
//! deployed, and that `banshare_psad` wires psad both ways. Needs root, the .deb
//! (`scripts/package`) and Ansible in target/ansible-venv, all of which the test command
//! provides. Each playbook run prints how long it took.

use crate::common;

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::container::{
    assert_cut_off, image, one_fleet_at_a_time, package, Container, BOOKWORM_JAIL_LOCAL,
};
use common::release;
use common::*;

const NAMES: [&str; 5] = ["srv", "srv2", "web", "db", "out"];
/// The first hosts of `NAMES` are the servers.
const SERVERS: usize = 2;
/// The hosts of `NAMES` that run clients: every host but srv2, which is only a server.
const CLIENTS: [usize; 3] = [0, 2, 3];
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

    /// Pins each host's generated host key, and writes the inventory: the first `servers`
    /// hosts run servers, those in `clients` clients.
    fn inventory(
        &self,
        hosts: &[(&Container, &str)],
        (servers, clients): (usize, &[usize]),
        deb: &Path,
    ) {
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
            hosts[..servers].iter().map(line).collect::<String>(),
            clients.iter().map(|&i| line(&hosts[i])).collect::<String>(),
            deb.display()
        );
        fs::write(self.dir.path().join("inventory"), inventory).unwrap();
        // The rotation test streams 20 reports a second from one host for over a minute,
        // past the default per-key limit (200 at once, then 60 a minute). The servers have
        // a group, which none of the test's reports goes to, and web receives the default
        // group only: groups across peered servers, deployed by the role.
        let group_vars = self.dir.path().join("group_vars");
        fs::create_dir_all(&group_vars).unwrap();
        fs::write(
            group_vars.join("all.yml"),
            "banshare_server_settings:\n  report-burst: 100000\n\
             banshare_groups:\n  - name: mail\n    jails: [postfix]\n    min-reporters: 2\n",
        )
        .unwrap();
        self.host_vars("web", "banshare_client_settings:\n  groups: [default]\n");
    }

    /// Variables of one host, as an admin keeps them beside the inventory.
    fn host_vars(&self, host: &str, yaml: &str) {
        let dir = self.dir.path().join("host_vars");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(format!("{host}.yml")), yaml).unwrap();
    }

    fn playbook(&self, name: &str, extra: &[&str]) -> Output {
        self.playbook_of(repo(), name, extra)
    }

    /// A playbook of the tree at `root`: this one, or the previous release's.
    fn playbook_of(&self, root: &Path, name: &str, extra: &[&str]) -> Output {
        let started = Instant::now();
        let out = Command::new("ip")
            .args(["netns", "exec", &self.netns])
            .arg(ansible_bin("ansible-playbook"))
            .arg("-i")
            .arg(self.dir.path().join("inventory"))
            .arg(root.join("ansible/playbooks").join(name))
            .args(extra)
            .env("ANSIBLE_NOCOLOR", "1")
            .env("ANSIBLE_HOME", self.dir.path().join("ansible-home"))
            // SSH connections are shared per address: another test's fleet on the same
            // addresses must not lend us its connections.
            .env("ANSIBLE_SSH_CONTROL_PATH_DIR", self.dir.path().join("cp"))
            // One SSH command per task instead of three or four (no temporary files): what
            // an admin with a fleet turns on, and what makes each run take half as long.
            .env("ANSIBLE_PIPELINING", "1")
            .output()
            .unwrap();
        eprintln!("{name} {extra:?}: {:.1?}", started.elapsed());
        let log = self.dir.path().join(format!("{name}.log"));
        fs::write(&log, [&out.stdout[..], &out.stderr[..]].concat()).unwrap();
        out
    }

    /// Runs a playbook that must succeed, and returns each host's `changed=` count.
    fn run(&self, name: &str, extra: &[&str]) -> Vec<(String, u32)> {
        self.run_of(repo(), name, extra)
    }

    fn run_of(&self, root: &Path, name: &str, extra: &[&str]) -> Vec<(String, u32)> {
        let out = self.playbook_of(root, name, extra);
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
    assert_nothing_changed_on(recap, 4, what);
}

fn assert_nothing_changed_on(recap: &[(String, u32)], hosts: usize, what: &str) {
    assert_eq!(recap.len(), hosts, "{recap:?}");
    assert!(recap.iter().all(|(_, c)| *c == 0), "{what}: {recap:?}");
}

/// The report port and publish port the server listens on, from what the role remembers.
fn ports(srv: &Container) -> (u16, u16) {
    let fact: serde_json::Value =
        serde_json::from_str(&srv.read("/etc/ansible/facts.d/banshare.fact")).unwrap();
    let port = |key: &str| fact[key].as_u64().unwrap() as u16;
    (port("report_port"), port("publish_port"))
}

/// The server's `banshare status --json`, once it follows every other server and has read
/// each one's table.
fn peered_status(srv: &Container) -> serde_json::Value {
    wait_for(
        &format!("{} to follow its peers", srv.name),
        Duration::from_secs(30),
        || {
            let out = srv.sh("banshare status --json");
            let status: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            let peers = status["peers"].as_array()?;
            let ready = peers.len() == SERVERS - 1
                && peers
                    .iter()
                    .all(|p| p["connected"] == true && p["synced"] == true);
            ready.then_some(status)
        },
    )
}

/// What banshare's daemons logged on each host, for a failure to show.
fn journals(hosts: &[Container]) -> String {
    let logs = hosts.iter().map(|host| {
        let log =
            host.sh("journalctl -o short-precise -u banshare-server -u banshare-client --no-pager");
        format!("== {}\n{}", host.name, String::from_utf8_lossy(&log.stdout))
    });
    logs.collect::<Vec<_>>().join("\n")
}

/// The addresses a server holds bans for.
fn server_bans(srv: &Container) -> HashSet<String> {
    let bans: Vec<serde_json::Value> =
        serde_json::from_str(&srv.run("banshare bans --json")).unwrap();
    bans.iter()
        .map(|b| b["ip"].as_str().unwrap().to_string())
        .collect()
}

/// Exit status of `banshare ping` on `host` against one server only, at `address` and
/// `ports` with the public key `key`: a configuration of its own, since with several
/// servers banshare ping asks every server that client.toml lists.
fn ping_one(host: &Container, address: &str, ports: (u16, u16), key: &str) -> Option<i32> {
    host.write("/root/one-server.key", key);
    host.write(
        "/root/one-server.toml",
        &format!(
            "server = \"{address}\"\nreport-port = {}\npublish-port = {}\n\
             server-key = \"/root/one-server.key\"\n",
            ports.0, ports.1
        ),
    );
    let out = host.sh("banshare ping --timeout 2s --config /root/one-server.toml");
    out.status.code()
}

/// Reports from `host`, `per_second` of them, each from a new address in `net`.0.0/16,
/// until `stop`; each report runs as its own process and is not waited for, as fail2ban
/// runs them. With each, the time it started, from the stream's start.
fn report_stream(
    host: &Container,
    (per_second, net): (u64, &str),
    stop: &AtomicBool,
) -> Vec<(String, Duration, Child)> {
    let mut reports = Vec::new();
    let started = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let i = reports.len();
        let ip = format!("{net}.{}.{}", i / 250, i % 250 + 1);
        let child = Command::new("nsenter")
            .args([
                "-t",
                &host.pid.to_string(),
                "-a",
                "banshare-report",
                "--verbose",
            ])
            .args(["stream", "sshd", &ip])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        reports.push((ip, started.elapsed(), child));
        let next = started + Duration::from_millis(1000 / per_second * reports.len() as u64);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    reports
}

/// upgrade.yml over a fleet of the previous release while `reporter` reports 20 addresses a
/// second: every host runs this release after it, and every server has every report.
fn upgrade_under_a_stream(control: &Control, hosts: &[Container], reporter: &Container) {
    let version = |host: &Container| host.run("dpkg-query -W -f '${Version}' banshare");
    assert_eq!(version(&hosts[0]), "0.1.0-1");
    let stop = AtomicBool::new(false);
    let (reports, upgraded) = std::thread::scope(|scope| {
        let stream = scope.spawn(|| report_stream(reporter, (20, "198.19"), &stop));
        std::thread::sleep(Duration::from_secs(2));
        let upgraded = control.playbook("upgrade.yml", &[]);
        std::thread::sleep(Duration::from_secs(2));
        stop.store(true, Ordering::Relaxed);
        (stream.join().unwrap(), upgraded)
    });
    assert!(
        upgraded.status.success(),
        "upgrade.yml failed:\n{}\n{}",
        String::from_utf8_lossy(&upgraded.stdout),
        journals(hosts)
    );
    for host in hosts {
        assert_eq!(version(host), "0.2.0-1", "{}", host.name);
    }
    let (mut sent, mut spooled) = (Vec::new(), 0);
    for (ip, _, child) in reports {
        let out = child.wait_with_output().unwrap();
        match out.status.code() {
            Some(0) => {}
            Some(75) => spooled += 1,
            code => panic!(
                "report of {ip} exited {code:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
        }
        sent.push(ip);
    }
    for server in &hosts[..SERVERS] {
        wait_for(
            "every report at the server",
            Duration::from_secs(60),
            || {
                let bans = server_bans(server);
                sent.iter().all(|ip| bans.contains(ip)).then_some(())
            },
        );
    }
    eprintln!(
        "upgrade.yml under {} reports ({spooled} spooled): none lost",
        sent.len()
    );
}

#[test]
fn site_deploys_a_fleet_rotation_loses_no_ban_and_revocation_cuts_a_host_off() {
    // The previous release first: waiting for its build must not hold the other container
    // tests' turn.
    let [old_deb, _] = release::previous_packages();
    let _turn = one_fleet_at_a_time();
    let deb = package("debian", "_amd64.deb");
    let image = image();
    let lab = Lab::new("an", &NAMES);
    let control = Control::new(&lab);
    let hosts: Vec<Container> = NAMES[..4]
        .iter()
        .enumerate()
        .map(|(i, name)| Container::boot_with_ssh(name, lab.ns(i), &image, &control.public_key()))
        .collect();
    let servers = &hosts[..SERVERS];
    let clients: Vec<&Container> = CLIENTS.iter().map(|&i| &hosts[i]).collect();
    let (srv, srv2, web, db) = (&hosts[0], &hosts[1], &hosts[2], &hosts[3]);
    let outsider = lab.ns(4);
    for host in &hosts {
        host.write("/etc/fail2ban/jail.local", BOOKWORM_JAIL_LOCAL);
    }
    // db's sshd jail has an action of its own, which banshare's must join, not replace.
    db.write(
        "/etc/fail2ban/jail.local",
        &format!("{BOOKWORM_JAIL_LOCAL}action = dummy\n"),
    );
    let addressed: Vec<(&Container, &str)> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| (h, lab.address(i)))
        .collect();
    control.inventory(&addressed, (SERVERS, &CLIENTS), &deb);

    // From scratch, by the previous release's role and package; then upgrade.yml brings the
    // fleet to this release, the servers one at a time and then the hosts, while web reports
    // 20 addresses a second: none is lost. Each server lets every client in and follows the
    // other.
    let old = format!("banshare_package_file={}", old_deb.display());
    // This deploy is the test's setup, by the previous release's own role. Once in a dozen
    // runs from nothing, on a machine busy with builds, its handler's restart of 0.1.0's
    // server on srv failed; a deploy is idempotent, so a second run completes it, and the
    // journal of the first says why, for whoever reads the log.
    let first = control.playbook_of(release::previous(), "site.yml", &["-e", &old]);
    if !first.status.success() {
        eprintln!(
            "the previous release's deploy failed; once more. srv's journal:\n{}",
            srv.sh("journalctl -u banshare-server --no-pager -n 40")
                .stdout
                .escape_ascii()
        );
        control.run_of(release::previous(), "site.yml", &["-e", &old]);
    }
    upgrade_under_a_stream(&control, &hosts, web);
    for server in servers {
        let status = peered_status(server);
        let seen: Vec<&str> = status["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["name"].as_str().unwrap())
            .collect();
        for client in &clients {
            assert!(
                seen.contains(&client.name.as_str()),
                "{}: {status}",
                server.name
            );
        }
        let text = server.run("banshare status");
        assert!(
            text.contains("peers:") && text.contains("group mail: "),
            "{text}"
        );
    }
    let actions = |host: &Container| host.run("fail2ban-client get sshd actions");
    let (db_actions, web_actions) = (actions(db), actions(web));
    assert!(
        db_actions.contains("dummy") && db_actions.contains("banshare"),
        "{db_actions}"
    );
    assert!(
        web_actions.contains("nftables-multiport") && web_actions.contains("banshare"),
        "{web_actions}"
    );
    web.run("banshare-report lab sshd 203.0.113.80");
    for host in &clients {
        wait_for("the ban on every host", Duration::from_secs(15), || {
            host.banned("203.0.113.80").then_some(())
        });
    }
    wait_for("the ban on every server", Duration::from_secs(15), || {
        server_bans(srv2).contains("203.0.113.80").then_some(())
    });
    // The ports of each server are open to the fleet only, over IPv4 and IPv6 alike, and
    // the fleet's IPv6 addresses are protected as its IPv4 ones are.
    let old_ports: Vec<(u16, u16)> = servers.iter().map(ports).collect();
    for (i, (report_port, publish_port)) in old_ports.iter().enumerate() {
        assert!(!connects(outsider, lab.address(i), *report_port));
        assert!(!connects(outsider, lab.address(i), *publish_port));
        assert!(connects(lab.ns(2), &lab.address6(i), *report_port));
        assert!(!connects(outsider, &lab.address6(i), *report_port));
        assert!(!connects(outsider, &lab.address6(i), *publish_port));
    }
    let config = srv.read("/etc/banshare/server.toml");
    assert!(
        config.contains(&lab.address6(2)) && config.contains("listen = \"::\""),
        "{config}"
    );
    // Every server answers.
    let pinged = web.run("banshare ping");
    assert_eq!(pinged.lines().count(), SERVERS, "{pinged}");

    // Idempotent: --check finds nothing to change (a real second run is made under
    // firewalld below).
    assert_nothing_changed(&control.run("site.yml", &["--check"]), "check mode");

    // In one run: db is revoked through the inventory, and the admin of srv has moved it
    // to firewalld.
    srv.run(
        "nft delete table inet banshare_ports && \
         DEBIAN_FRONTEND=noninteractive apt-get install -y -q firewalld >/dev/null",
    );
    control.host_vars("srv", "banshare_firewall: firewalld\n");
    let revoked = r#"{"banshare_revoked_hosts": ["db"]}"#;
    control.run("site.yml", &["-e", revoked]);
    // site.yml keeps the ports the servers have.
    assert_eq!(servers.iter().map(ports).collect::<Vec<_>>(), old_ports);
    // db can neither report nor receive.
    assert_eq!(db.sh("banshare ping --timeout 2s").status.code(), Some(69));
    assert_cut_off(db, srv, web, ["203.0.113.90", "203.0.113.91"]);
    // The other server too has web's report, and not db's.
    wait_for("web's ban on srv2", Duration::from_secs(15), || {
        server_bans(srv2).contains("203.0.113.91").then_some(())
    });
    assert!(!server_bans(srv2).contains("203.0.113.90"));
    // Under firewalld the fleet still gets in, nobody else does, and the other server keeps
    // its nftables rules.
    let (report, publish) = old_ports[0];
    assert!(connects(lab.ns(2), lab.address(0), report));
    assert!(!connects(outsider, lab.address(0), report));
    assert!(!connects(outsider, lab.address(0), publish));
    assert!(connects(lab.ns(2), &lab.address6(0), report));
    assert!(!connects(outsider, &lab.address6(0), report));
    assert!(!connects(outsider, lab.address(1), old_ports[1].0));
    assert_nothing_changed(
        &control.run("site.yml", &["-e", revoked]),
        "firewalld, second run",
    );

    // Rotation of every key and port under a steady stream of reports from web: the
    // servers switch one at a time, and the other answers meanwhile. srv's firewalld rules
    // and srv2's nftables rules move to the new ports, and db, revoked, is left without the
    // new keys and ports.
    let db_config = db.read("/etc/banshare/client.toml");
    let old_keys: Vec<String> = servers
        .iter()
        .map(|s| s.read("/etc/banshare/keys/server.key"))
        .collect();
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    let reports = std::thread::scope(|scope| {
        let stream = scope.spawn(|| report_stream(web, (10, "198.18"), &stop));
        std::thread::sleep(Duration::from_secs(2));
        let rotated = control.playbook(
            "rotate-keys.yml",
            &["-e", revoked, "-e", "banshare_rotate_host_keys=true"],
        );
        std::thread::sleep(Duration::from_secs(2));
        stop.store(true, Ordering::Relaxed);
        let reports = stream.join().unwrap();
        assert!(
            rotated.status.success(),
            "rotate-keys.yml failed:\n{}\n{}",
            String::from_utf8_lossy(&rotated.stdout),
            journals(&hosts)
        );
        reports
    });
    let streamed = started.elapsed();
    let mut reported = HashSet::new();
    let (mut spooled, mut sent) = (Vec::new(), 0);
    let mut slowest = (0.0, String::new());
    for (ip, at, child) in reports {
        let out = child.wait_with_output().unwrap();
        match out.status.code() {
            Some(0) => {
                sent += 1;
                // "banshare-report: IP accepted by SERVER in 2.3 ms"
                let said = String::from_utf8_lossy(&out.stderr);
                let ms = said
                    .rsplit(" in ")
                    .next()
                    .and_then(|t| t.trim().strip_suffix(" ms"));
                let ms: f64 = ms.and_then(|m| m.parse().ok()).unwrap_or(0.0);
                if ms > slowest.0 {
                    slowest = (ms, format!("at {at:.1?}: {}", said.trim()));
                }
            }
            Some(75) => spooled.push(format!(
                "at {at:.1?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            code => panic!(
                "report of {ip} exited {code:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
        }
        reported.insert(ip);
    }
    eprintln!(
        "rotation under load: {} reports, {sent} answered, {} spooled, in {streamed:?}; \
         the slowest answered {}",
        reported.len(),
        spooled.len(),
        slowest.1
    );
    assert!(reported.len() >= 100, "the stream must span the switches");
    // One server or the other answered every report, all through both switches.
    // The first and the last of them say when and why, if any.
    let (first, last) = (spooled.first(), spooled.last());
    assert!(
        spooled.is_empty(),
        "{} reports found no server to answer them, from {first:?} to {last:?}\n{}",
        spooled.len(),
        journals(&hosts)
    );
    for host in [srv, web] {
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
    // Both servers hold every report, whichever took it.
    for server in servers {
        wait_for(
            "every report on every server",
            Duration::from_secs(30),
            || reported.is_subset(&server_bans(server)).then_some(()),
        );
    }
    // New ports and key on each server: its old ones get nothing, from a host of the fleet.
    let new_ports: Vec<(u16, u16)> = servers.iter().map(ports).collect();
    for (i, server) in servers.iter().enumerate() {
        let ((report_port, publish_port), (new_report, new_publish)) = (old_ports[i], new_ports[i]);
        assert!(![report_port, publish_port].contains(&new_report));
        assert!(![report_port, publish_port].contains(&new_publish));
        let new_key = server.read("/etc/banshare/keys/server.key");
        assert_ne!(new_key, old_keys[i]);
        let address = lab.address(i);
        assert_eq!(ping_one(web, address, new_ports[i], &new_key), Some(0));
        assert_eq!(ping_one(web, address, new_ports[i], &old_keys[i]), Some(69));
        assert_eq!(ping_one(web, address, old_ports[i], &new_key), Some(69));
        assert!(!connects(lab.ns(2), address, publish_port));
        for port in [new_report, new_publish] {
            assert!(connects(lab.ns(2), address, port));
            assert!(!connects(outsider, address, port));
        }
        peered_status(server);
    }
    let rules = srv.run("firewall-cmd --list-rich-rules");
    assert_eq!(rules.lines().count(), 4, "two ports, two families: {rules}");
    for port in [new_ports[0].0, new_ports[0].1] {
        assert!(rules.contains(&format!("port=\"{port}\"")), "{rules}");
    }
    web.run("banshare ping");
    assert_eq!(db.read("/etc/banshare/client.toml"), db_config);
}

#[test]
fn check_mode_works_before_the_first_deploy_a_fleet_of_the_previous_release_upgrades_and_psad_is_wired(
) {
    let _turn = one_fleet_at_a_time();
    let deb = package("debian", "_amd64.deb");
    let image = image();
    // Container names of its own: machine names are the host's, whichever test runs.
    let names = ["pserver", "ids"];
    let lab = Lab::new("ap", &names);
    let control = Control::new(&lab);
    let hosts: Vec<Container> = names
        .iter()
        .enumerate()
        .map(|(i, name)| Container::boot_with_ssh(name, lab.ns(i), &image, &control.public_key()))
        .collect();
    let (srv, ids) = (&hosts[0], &hosts[1]);
    for host in &hosts {
        host.write("/etc/fail2ban/jail.local", BOOKWORM_JAIL_LOCAL);
    }
    ids.run("DEBIAN_FRONTEND=noninteractive apt-get install -y -q psad >/dev/null");
    let addressed: Vec<(&Container, &str)> = vec![(srv, lab.address(0)), (ids, lab.address(1))];
    control.inventory(&addressed, (1, &[0, 1]), &deb);
    control.host_vars("ids", "banshare_psad: true\n");

    // A fleet that was never deployed: --check changes nothing and fails nowhere.
    control.run("site.yml", &["--check"]);
    assert!(!srv
        .sh("test -e /etc/banshare/keys/server.key")
        .status
        .success());

    control.run("site.yml", &[]);
    let psad_conf = ids.read("/etc/psad/psad.conf");
    assert!(
        psad_conf.contains(
            "\nEXTERNAL_BLOCK_SCRIPT             /usr/bin/banshare-report psad psad SRCIP;"
        ) && psad_conf.contains("\nENABLE_EXT_BLOCK_SCRIPT_EXEC      Y;"),
        "{psad_conf}"
    );
    let client = ids.read("/etc/banshare/client.toml");
    assert!(
        client.contains("ban-command = \"/usr/sbin/psad --fw-block-ip <ip>\""),
        "{client}"
    );
    // psad blocks an address: its block script reports it, and the server has it.
    ids.run("psad --fw-block-ip 203.0.113.44 >/dev/null");
    wait_for(
        "psad's block at the server",
        Duration::from_secs(30),
        || server_bans(srv).contains("203.0.113.44").then_some(()),
    );
    // A ban from elsewhere is blocked by psad here.
    srv.run("banshare-report lab sshd 203.0.113.45");
    wait_for("the fleet's ban in psad", Duration::from_secs(30), || {
        let log = ids.run("journalctl -u banshare-client --no-pager");
        log.contains("ban 203.0.113.45").then_some(log)
    });
    let log = ids.run("journalctl -u banshare-client --no-pager");
    assert!(log.contains("/usr/sbin/psad succeeded"), "{log}");
    assert_nothing_changed_on(&control.run("site.yml", &[]), 2, "second run");
}
