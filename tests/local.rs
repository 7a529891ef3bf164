//! Local files are safe from a less-privileged local user: the root client does not follow
//! links planted where it writes, a FIFO, a device or an endless file in the spool stalls
//! nothing, and the daemons refuse directories, configs and keys that another user could
//! change, saying which chmod fixes it.

use crate::common;

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Runs a daemon that should refuse to start, and returns its exit code and log; one that
/// is still running after 5 s is stopped and fails the test.
fn refused(program: &str, config: &Path) -> (i32, String) {
    let mut child = Command::new(program)
        .args(["--log", "stderr", "--config"])
        .arg(config)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{program} --config {} started", config.display());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    outcome(&child.wait_with_output().unwrap())
}

#[test]
fn a_fifo_a_device_or_an_endless_file_in_the_spool_stalls_nothing() {
    let mut fleet = Fleet::new(&["web1"], "", "");
    let spooled = ["203.0.113.70", "203.0.113.71"];
    for ip in spooled {
        let (code, stderr) = outcome(&fleet.report(0, &["fail2ban", "sshd", ip]));
        assert_eq!(code, 75, "{stderr}");
    }
    // Planted where they sort first, so the client meets them before the real reports.
    let spool = fleet.spool_dir("web1");
    nix::unistd::mkfifo(
        &spool.join("00-fifo.report"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    symlink("/dev/zero", spool.join("01-zero.report")).unwrap();
    symlink("/etc/passwd", spool.join("02-passwd.report")).unwrap();
    fs::write(spool.join("03-endless.report"), "x".repeat(1 << 20)).unwrap();
    fleet.start_server();
    fleet.start_client(0);
    fleet.assert_applied_once(0, &spooled.map(String::from));
    wait_for(
        "the planted files set aside",
        Duration::from_secs(10),
        || {
            let names: Vec<String> = fs::read_dir(&spool)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.iter().all(|n| n.ends_with(".bad")).then_some(names)
        },
    );
    assert!(fleet.running(), "the client is still running");
    let rss = rss_mb(fleet.client_pid(0));
    eprintln!("client RSS after the planted spool files: {rss:.0} MB");
    assert!(rss < 64.0, "{rss:.0} MB");
}

#[test]
fn the_root_client_follows_no_link_planted_in_its_state_directory() {
    let mut fleet = Fleet::new(&["web1"], "", "");
    let state = fleet.dir.path().join("web1-state");
    fs::create_dir(&state).unwrap();
    chmod(&state, 0o750);
    let victim = fleet.dir.path().join("victim");
    fs::write(&victim, "precious\n").unwrap();
    // Where a rewrite of the record of applied bans would write first.
    symlink(&victim, state.join("applied.journal.new")).unwrap();
    fleet.start_server();
    fleet.start_client(0);
    fleet.report(0, &["fail2ban", "sshd", "203.0.113.72"]);
    fleet.wait_applied(0, "ban fail2ban sshd 203.0.113.72 86400");
    fleet.stop_client(0);
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");
    // The lock file and the record itself as links: the client refuses to start.
    for name in ["applied.journal.lock", "applied.journal"] {
        let path = state.join(name);
        fs::rename(&path, state.join("moved")).unwrap();
        symlink(&victim, &path).unwrap();
        let (code, stderr) = refused(CLIENT, &fleet.hosts[0].config);
        assert_eq!(code, 74, "{name}: {stderr}");
        assert!(stderr.contains(name), "{stderr}");
        fs::remove_file(&path).unwrap();
        fs::rename(state.join("moved"), &path).unwrap();
    }
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");
}

#[test]
fn daemons_refuse_what_another_user_could_change_and_say_how_to_fix_it() {
    let fleet = Fleet::new(&["web1", "web2"], "", "");
    let state = fleet.dir.path().join("web1-state");
    let spool = fleet.spool_dir("web1");
    let server_state = fleet.dir.path().join("server-state");
    for dir in [&state, &spool, &server_state] {
        fs::create_dir(dir).unwrap();
    }
    let client = |config: &Path| refused(CLIENT, config);
    let server = || refused(SERVER, &fleet.server_config);
    let check = |path: &Path, mode: u32, run: &dyn Fn() -> (i32, String)| {
        let before = fs::metadata(path).unwrap().permissions().mode();
        chmod(path, mode);
        let (code, stderr) = run();
        assert_eq!(code, 78, "{}: {stderr}", path.display());
        assert!(
            stderr.contains(&format!("fix it with: chmod go-w {}", path.display())),
            "{stderr}"
        );
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        chmod(path, before);
    };
    let web1 = &fleet.hosts[0].config;
    check(&state, 0o777, &|| client(web1));
    check(&spool, 0o777, &|| client(web1));
    check(&server_state, 0o757, &server);
    check(&fleet.auth_dir, 0o777, &server);
    check(&fleet.server_config, 0o666, &server);
    check(web1, 0o646, &|| client(web1));
    check(&fleet.keys_dir.join("web1.key_secret"), 0o602, &|| {
        client(web1)
    });
    check(&fleet.keys_dir.join("server.key"), 0o666, &|| client(web1));
    check(&fleet.server_config, 0o666, &|| {
        let out = Command::new(ADMIN)
            .arg("check-config")
            .arg(&fleet.server_config)
            .output()
            .unwrap();
        outcome(&out)
    });
    // The reporter does not spool into a directory another user could write to.
    chmod(&spool, 0o777);
    let (code, stderr) = outcome(&fleet.report(0, &["fail2ban", "sshd", "203.0.113.73"]));
    assert_eq!(code, 69, "{stderr}");
    assert!(stderr.contains("chmod go-w"), "{stderr}");
    chmod(&spool, 0o750);
    // One authorized key that others could change authorizes nothing; the others load.
    chmod(&fleet.auth_dir.join("web2.key"), 0o666);
    let mut fleet = fleet;
    fleet.start_server();
    assert!(
        fleet
            .server_log()
            .contains("web2.key is writable by other users"),
        "{}",
        fleet.server_log()
    );
    assert!(fleet.server_log().contains("with 1 authorized keys"));
}
