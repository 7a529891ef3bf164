//! The packages on real systemd: three Debian 12 containers booted with systemd, each in a
//! network namespace of its own, install the .deb with Debian's fail2ban through apt, run
//! one server and three clients as services, share a ban that fail2ban found, revoke a host
//! on reload, stop cleanly and purge to nothing. Another installs the previous release from
//! the repository that `scripts/release` builds and upgrades it with apt under a stream of
//! reports. The .rpm is installed into a root directory with its scriptlets, as an upgrade
//! from the previous release's. Needs root and the packages that the test command builds
//! first (`scripts/package`, `scripts/previous-release`).

use crate::common;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::container::{
    assert_cut_off, image, one_fleet_at_a_time, package, Container, Overlay, BOOKWORM_JAIL_LOCAL,
};
use common::release::{previous_packages, publish};
use common::*;

const NAMES: [&str; 3] = ["srv", "web", "db"];

fn install(host: &Container, deb: &Path) {
    host.write("/etc/fail2ban/jail.local", BOOKWORM_JAIL_LOCAL);
    fs::copy(deb, host.path("/root/banshare.deb")).unwrap();
    // The image holds these .debs in apt's cache: the containers have no mirror.
    host.run(
        "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
         /root/banshare.deb fail2ban",
    );
    assert_eq!(host.run("systemctl is-active fail2ban").trim(), "active");
    // fail2ban loads its jails after it has started: under load that takes a while. A
    // timeout shows what fail2ban said, so that a failure in CI explains itself.
    let loaded = poll(Duration::from_secs(60), || {
        let status = host.sh("fail2ban-client status");
        String::from_utf8_lossy(&status.stdout)
            .contains("banshare")
            .then_some(())
    });
    if loaded.is_none() {
        let said = host.sh(
            "fail2ban-client status; systemctl status fail2ban --no-pager; \
             tail -n 40 /var/log/fail2ban.log",
        );
        panic!(
            "{}: fail2ban did not load the banshare jail in 60 s:\n{}{}",
            host.name,
            String::from_utf8_lossy(&said.stdout),
            String::from_utf8_lossy(&said.stderr)
        );
    }
    // Installed, not enabled: nothing runs before it is configured.
    assert_eq!(
        host.sh("systemctl is-enabled banshare-server banshare-client")
            .stdout,
        b"disabled\ndisabled\n"
    );
    assert_eq!(
        host.run(
            "stat -c '%a %U:%G' /etc/banshare/keys /etc/banshare/keys/host.key_secret \
             /var/lib/banshare-client"
        ),
        "750 root:banshare\n600 root:root\n750 root:root\n"
    );
}

/// Server key pair on the server, every host's public key authorized, and the server's
/// public key on every host: what an admin (or the Ansible role) does after installing.
fn configure(hosts: &[Container], server_address: &str) {
    let srv = &hosts[0];
    srv.run(
        "banshare keygen --dir /etc/banshare/keys --name server && \
         chgrp banshare /etc/banshare/keys/server.key_secret && \
         chmod 640 /etc/banshare/keys/server.key_secret",
    );
    srv.write(
        "/etc/banshare/server.toml",
        "report-port = 41234\npublish-port = 41235\nprotected = [\"198.51.100.0/24\"]\n",
    );
    let server_key = srv.read("/etc/banshare/keys/server.key");
    for host in hosts {
        let public = host.read("/etc/banshare/keys/host.key");
        srv.write(
            &format!("/etc/banshare/authorized-keys/{}.key", host.name),
            &public,
        );
        host.write("/etc/banshare/keys/server.key", &server_key);
        // db applies bans with the nftables backend, over netlink, as the hardened unit
        // allows; the others through fail2ban.
        let backend = if host.name == "db" {
            "nftables"
        } else {
            "fail2ban"
        };
        host.write(
            "/etc/banshare/client.toml",
            &format!(
                "server = \"{server_address}\"\nreport-port = 41234\npublish-port = 41235\n\
                 backend = \"{backend}\"\nprotected = [\"198.51.100.0/24\"]\n"
            ),
        );
    }
}

/// Starts a unit and checks that systemd saw it become ready through sd_notify.
fn start(host: &Container, unit: &str) {
    host.run(&format!("systemctl enable --now {unit}"));
    assert_eq!(
        host.run(&format!("systemctl is-active {unit}")).trim(),
        "active"
    );
    // Type=notify: "systemctl start" returned only after READY=1, and the status line
    // shown by systemctl comes from the daemon's STATUS= messages.
    let show = host.run(&format!(
        "systemctl show -p Type -p StatusText -p NRestarts {unit}"
    ));
    assert!(show.contains("Type=notify"), "{show}");
    assert!(show.contains("NRestarts=0"), "{show}");
    assert!(
        !show.contains("StatusText=\n"),
        "no STATUS= from {unit}: {show}"
    );
}

fn journal(host: &Container, unit: &str) -> String {
    host.run(&format!("journalctl -q --no-pager -o cat -u {unit}"))
}

/// sshd failures from `ip` in a log that a jail on `host` watches, whose actions include
/// the shipped banshare action: fail2ban finds the attack and banshare-report sends it.
fn attack(host: &Container, ip: &str) {
    host.write(
        "/etc/fail2ban/jail.d/lab.local",
        "[ssh-lab]\nenabled = true\nfilter = sshd\nbackend = polling\n\
         logpath = /var/log/ssh-lab.log\nmaxretry = 3\n\
         action = %(action_)s\n         banshare\n",
    );
    host.write("/var/log/ssh-lab.log", "");
    host.run("fail2ban-client reload");
    wait_for("the ssh-lab jail", Duration::from_secs(10), || {
        host.run("fail2ban-client status")
            .contains("ssh-lab")
            .then_some(())
    });
    let now = syslog_now();
    let lines: String = (0..3)
        .map(|i| {
            format!(
                "{now} {} sshd[{}]: Failed password for invalid user admin from {ip} port {} ssh2\n",
                host.name,
                4000 + i,
                50000 + i
            )
        })
        .collect();
    fs::write(host.path("/var/log/ssh-lab.log"), lines).unwrap();
}

#[test]
fn the_deb_installs_runs_under_systemd_shares_bans_revokes_and_purges() {
    let _turn = one_fleet_at_a_time();
    let deb = package("debian", "_amd64.deb");
    let image = image();
    let lab = Lab::new("sy", &NAMES);
    let hosts: Vec<Container> = NAMES
        .iter()
        .enumerate()
        .map(|(i, name)| Container::boot(name, lab.ns(i), &image))
        .collect();
    let (srv, web, db) = (&hosts[0], &hosts[1], &hosts[2]);
    for host in &hosts {
        install(host, &deb);
    }
    configure(&hosts, lab.address(0));

    start(srv, "banshare-server");
    assert!(journal(srv, "banshare-server").contains("listening on"));
    for host in &hosts {
        start(host, "banshare-client");
    }
    wait_for(
        "all three clients at the server",
        Duration::from_secs(20),
        || {
            let status = srv.run("banshare status");
            NAMES
                .iter()
                .all(|n| status.contains(&format!("  {n} ")))
                .then_some(())
        },
    );

    // fail2ban on web finds an attack; fail2ban on srv bans it, and nftables on db.
    attack(web, "203.0.113.50");
    wait_for("the shared ban", Duration::from_secs(15), || {
        srv.banned("203.0.113.50").then_some(())
    });
    wait_for(
        "the shared ban in db's set",
        Duration::from_secs(15),
        || {
            db.run("nft list set inet banshare addr4")
                .contains("203.0.113.50 timeout")
                .then_some(())
        },
    );

    // Revocation: remove web's key and reload.
    fs::remove_file(srv.path("/etc/banshare/authorized-keys/web.key")).unwrap();
    srv.run("systemctl reload banshare-server");
    wait_for("the revocation", Duration::from_secs(10), || {
        journal(srv, "banshare-server")
            .contains("revoked web")
            .then_some(())
    });
    assert_eq!(
        srv.run("systemctl is-active banshare-server").trim(),
        "active"
    );
    assert_cut_off(web, srv, db, ["203.0.113.70", "203.0.113.60"]);

    // A clean stop: no timeout, no kill, exit status 0.
    for host in &hosts {
        host.run("systemctl stop banshare-client");
    }
    srv.run("systemctl stop banshare-server");
    for (host, unit) in hosts
        .iter()
        .map(|h| (h, "banshare-client"))
        .chain([(srv, "banshare-server")])
    {
        let show = host.run(&format!(
            "systemctl show -p ActiveState -p Result -p ExecMainStatus {unit}"
        ));
        assert_eq!(
            show, "Result=success\nExecMainStatus=0\nActiveState=inactive\n",
            "{}: {unit}",
            host.name
        );
    }

    // Purge leaves nothing but the keys the admin made.
    for host in &hosts {
        host.run("DEBIAN_FRONTEND=noninteractive apt-get purge -y -q banshare");
        let left = host.run(
            "find / -xdev \\( -path /proc -o -path /sys -o -path /root -o -path /var/log \
             -o -path /var/cache/apt \\) -prune -o -name '*banshare*' -print; \
             ls -d /run/banshare* /etc/banshare/keys/* 2>/dev/null; \
             getent passwd banshare; getent group banshare; true",
        );
        let mut expected = vec!["/etc/banshare", "/etc/banshare/keys/server.key"];
        if host.name == "srv" {
            expected.push("/etc/banshare/keys/server.key_secret");
        }
        let mut left: Vec<&str> = left.lines().collect();
        left.sort();
        left.dedup();
        expected.sort();
        assert_eq!(left, expected, "{} after purge", host.name);
    }
}

/// A package's files, normalised to compare the .rpm with the .deb: Debian adds its
/// changelog and lintian overrides, keeps the licence with the docs, and puts zsh
/// completions elsewhere.
fn normalised(paths: &str) -> Vec<String> {
    let mut out: Vec<String> = paths
        .lines()
        .map(|p| p.trim_start_matches('.').trim_end_matches('/').to_string())
        .map(|p| p.replace("/usr/share/licenses/banshare/", "/usr/share/doc/banshare/"))
        .map(|p| p.replace("/zsh/site-functions/", "/zsh/vendor-completions/"))
        .filter(|p| !p.is_empty() && !p.ends_with("changelog.Debian.gz"))
        .filter(|p| !p.starts_with("/usr/share/lintian/"))
        .collect();
    out.sort();
    out
}

#[test]
fn the_rpm_has_the_debs_files_and_its_scriptlets_work() {
    let rpm = package("rpm", ".x86_64.rpm");
    let deb = package("debian", "_amd64.deb");
    let rpm_files = Command::new("rpm")
        .args(["-qlp"])
        .arg(&rpm)
        .output()
        .unwrap();
    let deb_files = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "dpkg-deb --fsys-tarfile {} | tar -t | grep -v '/$'",
            deb.display()
        ))
        .output()
        .unwrap();
    assert_eq!(
        normalised(&String::from_utf8_lossy(&rpm_files.stdout)),
        normalised(&String::from_utf8_lossy(&deb_files.stdout)),
        "the .rpm and the .deb install different files"
    );

    // A Debian root has a shell, useradd and libzmq5: enough for rpm to run the scriptlets
    // in it (chrooted). Its rpm database knows none of Debian's packages: --nodeps.
    let dir = tempfile::Builder::new()
        .prefix("banshare-rpm-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let overlay = Overlay::mount(&image(), dir.path());
    let root = overlay.root.display().to_string();
    let in_root = |script: &str| {
        let out = Command::new("chroot")
            .args([&root, "sh", "-c", script])
            .output()
            .unwrap();
        assert!(out.status.success(), "{script}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    in_root("apt-get install -y -q --no-install-recommends libzmq5 >/dev/null");
    let rpm_cmd = |args: &[&str]| {
        let out = Command::new("rpm")
            .args(["--root", &root])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "rpm {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // The previous release first, its server.toml edited by the admin, then this one as an
    // upgrade: the admin's file and the host's keys stay.
    let [_, previous] = previous_packages();
    rpm_cmd(&["-i", "--nodeps", previous.to_str().unwrap()]);
    in_root("echo '# edited' >> /etc/banshare/server.toml");
    let host_key = in_root("cat /etc/banshare/keys/host.key");
    rpm_cmd(&["-U", "--nodeps", rpm.to_str().unwrap()]);
    assert_eq!(rpm_cmd(&["-q", "--qf", "%{VERSION}", "banshare"]), "0.2.0");
    assert!(in_root("cat /etc/banshare/server.toml").ends_with("# edited\n"));
    // The package's changed version beside it, as %config(noreplace) does.
    in_root("test -f /etc/banshare/server.toml.rpmnew");
    assert_eq!(in_root("cat /etc/banshare/keys/host.key"), host_key);
    // Its %changelog is debian/changelog's, newest first, where an EL admin reads it.
    let debian =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("debian/changelog")).unwrap();
    let releases: Vec<&str> = debian
        .lines()
        .filter_map(|l| {
            l.strip_prefix("banshare (")?
                .split_once(')')
                .map(|(v, _)| v)
        })
        .collect();
    let changelog = rpm_cmd(&["-q", "--changelog", "banshare"]);
    let entries: Vec<&str> = changelog
        .lines()
        .filter(|l| l.starts_with("* "))
        .filter_map(|l| l.rsplit(' ').next())
        .collect();
    assert_eq!(entries, releases, "{changelog}");
    assert_eq!(releases[0], format!("{}-1", env!("CARGO_PKG_VERSION")));
    let first_item = debian.lines().find_map(|l| l.strip_prefix("  * ")).unwrap();
    assert!(
        changelog.contains(&format!("- {first_item}\n")),
        "{changelog}"
    );

    assert!(in_root("getent passwd banshare").contains(":/var/lib/banshare:"));
    assert_eq!(
        in_root(
            "stat -c '%n %a %U:%G' /etc/banshare/keys /etc/banshare/authorized-keys \
             /etc/banshare/keys/host.key_secret /var/lib/banshare /var/lib/banshare-client \
             /var/spool/banshare"
        ),
        "/etc/banshare/keys 750 root:banshare\n/etc/banshare/authorized-keys 750 root:banshare\n\
         /etc/banshare/keys/host.key_secret 600 root:root\n/var/lib/banshare 750 banshare:banshare\n\
         /var/lib/banshare-client 750 root:root\n/var/spool/banshare 750 root:root\n"
    );
    let configs = rpm_cmd(&["-qc", "banshare"]);
    for config in [
        "/etc/banshare/server.toml",
        "/etc/banshare/client.toml",
        "/etc/fail2ban/action.d/banshare.conf",
        "/etc/fail2ban/jail.d/banshare.conf",
    ] {
        assert!(configs.contains(config), "{config} is not a config file");
    }

    // Erase removes what the scriptlets made, and keeps a key the admin made, the file the
    // admin edited (as .rpmsave) and the package's version left beside it at the upgrade.
    in_root("banshare keygen --dir /etc/banshare/keys --name server >/dev/null");
    rpm_cmd(&["-e", "banshare"]);
    assert_eq!(
        in_root(
            "find /etc/banshare /var/lib/banshare /var/lib/banshare-client /var/spool/banshare \
             /usr/bin -name '*banshare*' \
             -o -path '/etc/banshare/*' 2>/dev/null | sort; getent passwd banshare; true"
        ),
        "/etc/banshare\n/etc/banshare/keys\n/etc/banshare/keys/server.key\n\
         /etc/banshare/keys/server.key_secret\n/etc/banshare/server.toml.rpmnew\n\
         /etc/banshare/server.toml.rpmsave\n"
    );
}

/// An operator's upgrade: 0.1.0 installed with apt from the repository that scripts/release
/// builds, a server and a client running as services under a stream of reports, then
/// 0.2.0 published and `apt-get upgrade` while the reports go on. The admin's edited
/// configuration is kept, both services restart into 0.2.0, and every report reaches the
/// host's fail2ban jail. Then `remove` keeps the configuration and `purge` does not.
#[test]
fn apt_upgrades_from_the_repository_under_a_stream_of_reports() {
    // Before the turn: waiting for the previous release's build must not hold it.
    let old = previous_packages();
    let _turn = one_fleet_at_a_time();
    let new = [
        package("debian", "_amd64.deb"),
        package("rpm", ".x86_64.rpm"),
    ];
    let repo = tempfile::tempdir().unwrap();
    publish(repo.path(), &[&old[0], &old[1]]);
    let image = image();
    let lab = Lab::new("up", &["up"]);
    let host = Container::boot("up", lab.ns(0), &image);
    // The repository as a host reaches it: a signed source, here a directory.
    let serve = |host: &Container| {
        let copied = Command::new("cp")
            .args(["-a", "--no-target-directory"])
            .arg(repo.path())
            .arg(host.path("/srv/banshare"))
            .status()
            .unwrap();
        assert!(copied.success());
        // Only this source: the image's mirror is out of the containers' reach, and its
        // lists, already there, stay.
        host.run(
            "apt-get -q update -o Dir::Etc::sourcelist=sources.list.d/banshare.sources \
             -o Dir::Etc::sourceparts=- -o APT::Get::List-Cleanup=0",
        );
    };
    fs::copy(
        repo.path().join("banshare.gpg"),
        host.path("/usr/share/keyrings/banshare.gpg"),
    )
    .unwrap();
    host.write(
        "/etc/apt/sources.list.d/banshare.sources",
        "Types: deb\nURIs: file:/srv/banshare/apt\nSuites: bookworm\nComponents: main\n\
         Signed-By: /usr/share/keyrings/banshare.gpg\n",
    );
    serve(&host);
    host.write("/etc/fail2ban/jail.local", BOOKWORM_JAIL_LOCAL);
    host.run(
        "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
         banshare fail2ban",
    );
    let version = |host: &Container| host.run("dpkg-query -W -f '${Version}' banshare");
    assert_eq!(version(&host), "0.1.0-1");
    configure(std::slice::from_ref(&host), lab.address(0));
    start(&host, "banshare-server");
    start(&host, "banshare-client");
    let pids = |host: &Container| {
        host.run("systemctl show -p MainPID --value banshare-server banshare-client")
    };
    let before = pids(&host);

    // Reports every 50 ms, each from a new address, their exit codes written down.
    host.run(
        "nohup sh -c 'for i in $(seq 1 300); do ip=198.18.$((i / 250)).$((i % 250 + 1)); \
         banshare-report lab sshd $ip; echo \"$ip $?\" >> /root/reports; sleep 0.05; done' \
         >/dev/null 2>&1 &",
    );
    let reported =
        |host: &Container| fs::read_to_string(host.path("/root/reports")).unwrap_or_default();
    wait_for("the first reports", Duration::from_secs(30), || {
        (reported(&host).lines().count() >= 20).then_some(())
    });
    publish(repo.path(), &[&new[0], &new[1]]);
    serve(&host);
    // dpkg asks about a configuration file that both the admin and the package changed
    // (client.toml's comments did): an unattended upgrade keeps the admin's.
    let started = std::time::Instant::now();
    let upgrade = host.run(
        "DEBIAN_FRONTEND=noninteractive apt-get upgrade -y -q \
         -o Dpkg::Options::=--force-confold 2>&1",
    );
    let took = started.elapsed();
    assert_eq!(version(&host), "0.2.0-1", "{upgrade}");
    assert!(host
        .read("/etc/banshare/server.toml")
        .contains("report-port = 41234"));
    assert!(host
        .read("/etc/banshare/client.toml")
        .contains("backend = \"fail2ban\""));
    // Both services run again, restarted into 0.2.0 by the package.
    let after = pids(&host);
    assert_ne!(before, after, "{upgrade}");
    for unit in ["banshare-server", "banshare-client"] {
        assert_eq!(
            host.run(&format!("systemctl is-active {unit}")).trim(),
            "active"
        );
    }
    let status = host.run("banshare status --json");
    assert!(status.contains(r#""version":"0.2.0""#), "{status}");

    wait_for("the stream to end", Duration::from_secs(120), || {
        (reported(&host).lines().count() == 300).then_some(())
    });
    let lines = reported(&host);
    let taken: Vec<&str> = lines
        .lines()
        .map(|l| l.split_once(' ').unwrap())
        .map(|(ip, code)| {
            assert!(code == "0" || code == "75", "{ip}: exit {code}");
            ip
        })
        .collect();
    wait_for("every report in the jail", Duration::from_secs(60), || {
        let banned = host.jail_banned();
        taken.iter().all(|ip| banned.contains(*ip)).then_some(())
    });
    let spooled = lines.lines().filter(|l| l.ends_with(" 75")).count();
    // Both files the admin edited are ones the package changed since 0.1.0.
    let kept = upgrade
        .matches("Using current old file as you requested")
        .count();
    eprintln!(
        "apt-get upgrade took {took:.1?} under {} reports ({spooled} spooled), all applied; \
         {kept} configuration files kept",
        taken.len()
    );
    assert_eq!(kept, 2, "{upgrade}");

    // Remove keeps the configuration, as Debian policy wants; purge takes it.
    host.run("DEBIAN_FRONTEND=noninteractive apt-get remove -y -q banshare");
    assert_eq!(
        host.run("dpkg-query -W -f '${Status}' banshare"),
        "deinstall ok config-files"
    );
    assert!(host.path("/etc/banshare/server.toml").exists());
    assert!(!host.path("/usr/bin/banshare-server").exists());
    host.run("DEBIAN_FRONTEND=noninteractive apt-get purge -y -q banshare");
    assert!(!host.path("/etc/banshare/server.toml").exists());
}
