//! The command-line contract: exit codes, one-line errors, key files, config checks.

use crate::common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn run(program: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(program).args(args).output().unwrap();
    let (code, stderr) = outcome(&out);
    (
        code,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr,
    )
}

#[test]
fn keygen_writes_0600_secret_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let (code, stdout, _) = run(ADMIN, &["keygen", "--dir", d, "--name", "web1"]);
    assert_eq!(code, 0);
    let secret = dir.path().join("web1.key_secret");
    assert_eq!(
        fs::metadata(&secret).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let secret_text = fs::read_to_string(&secret).unwrap();
    let secret_z85 = secret_text
        .lines()
        .find(|l| l.contains("secret-key"))
        .unwrap();
    let secret_z85 = secret_z85.split('"').nth(1).unwrap();
    assert!(
        !stdout.contains(secret_z85),
        "keygen must not print the secret"
    );

    let (code, _, stderr) = run(ADMIN, &["keygen", "--dir", d, "--name", "web1"]);
    assert_eq!(code, 64, "{stderr}");
    assert!(stderr.contains("--force"), "{stderr}");
    assert_eq!(fs::read_to_string(&secret).unwrap(), secret_text);
    let (code, _, _) = run(ADMIN, &["keygen", "--dir", d, "--name", "web1", "--force"]);
    assert_eq!(code, 0);
    assert_ne!(fs::read_to_string(&secret).unwrap(), secret_text);
    let (code, _, _) = run(ADMIN, &["keygen", "--dir", d, "--name", "../escape"]);
    assert_eq!(code, 64);

    // A directory others could write is refused before anything is written.
    let open = dir.path().join("open");
    fs::create_dir(&open).unwrap();
    fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
    let o = open.to_str().unwrap();
    let (code, _, stderr) = run(ADMIN, &["keygen", "--dir", o, "--name", "web2"]);
    assert_eq!(code, 78, "{stderr}");
    assert!(stderr.contains("chmod go-w"), "{stderr}");
    assert_eq!(fs::read_dir(&open).unwrap().count(), 0);

    // A missing directory is created, for the owner and its group only.
    let new = dir.path().join("etc/banshare/keys");
    let n = new.to_str().unwrap();
    let (code, stdout, stderr) = run(ADMIN, &["keygen", "--dir", n, "--name", "server"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("created") && stdout.contains("mode 0750"),
        "{stdout}"
    );
    assert_eq!(
        fs::metadata(&new).unwrap().permissions().mode() & 0o777,
        0o750
    );
    assert!(new.join("server.key_secret").exists());
}

#[test]
fn check_config_accepts_the_shipped_examples() {
    let fleet = Fleet::new(&["host"], "", "");
    let root = env!("CARGO_MANIFEST_DIR");
    let key = |name: &str| fleet.keys_dir.join(name).display().to_string();
    let examples = [
        (
            "server.toml",
            "server",
            format!(
                "key = \"{}\"\nauthorized-keys = \"{}\"\n",
                key("server.key_secret"),
                fleet.auth_dir.display()
            ),
        ),
        (
            "client.toml",
            "client",
            format!(
                "server-key = \"{}\"\nkey = \"{}\"\n",
                key("server.key"),
                key("host.key_secret")
            ),
        ),
    ];
    for (name, kind, key_lines) in examples {
        // The examples leave the key paths at their /etc defaults; point them at test keys.
        let text = fs::read_to_string(format!("{root}/docs/examples/{name}")).unwrap() + &key_lines;
        let path = fleet.dir.path().join(format!("example-{name}"));
        fs::write(&path, text).unwrap();
        let (code, stdout, stderr) = run(ADMIN, &["check-config", path.to_str().unwrap()]);
        assert_eq!(code, 0, "{name}: {stderr}");
        assert!(
            stdout.contains(&format!("OK ({kind} configuration")),
            "{stdout}"
        );
    }
}

#[test]
fn check_config_reports_file_line_and_reason_with_exit_78() {
    let fleet = Fleet::new(&["web1"], "", "");
    let bad = fleet.dir.path().join("bad.toml");
    fs::write(
        &bad,
        "server = \"s\"\nreport-port = 1\npublish-port = 2\nban-command = \"/bin/echo <IP>\"\n",
    )
    .unwrap();
    let (code, _, stderr) = run(ADMIN, &["check-config", bad.to_str().unwrap()]);
    assert_eq!(code, 78);
    assert!(
        stderr.contains("bad.toml:4:") && stderr.contains("unknown tag <IP>"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1);
    let (code, _, stderr) = run(ADMIN, &["check-config", "/nonexistent/banshare.toml"]);
    assert_eq!(code, 78, "{stderr}");
    let (code, stdout, _) = run(
        ADMIN,
        &["check-config", fleet.server_config.to_str().unwrap()],
    );
    assert_eq!(code, 0);
    assert!(stdout.contains("1 authorized keys"), "{stdout}");
}

#[test]
fn world_readable_secret_key_is_refused_with_a_fix() {
    let fleet = Fleet::new(&["web1"], "", "");
    let secret = fleet.keys_dir.join("web1.key_secret");
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o644)).unwrap();
    let (code, stderr) = outcome(&fleet.report(0, &["fail2ban", "sshd", "203.0.113.60"]));
    assert_eq!(code, 78, "{stderr}");
    assert!(
        stderr.contains("readable by other users") && stderr.contains("chmod 600"),
        "{stderr}"
    );
    let (code, _, stderr) = run(
        ADMIN,
        &["check-config", fleet.hosts[0].config.to_str().unwrap()],
    );
    assert_eq!(code, 78, "{stderr}");
}

#[test]
fn reporter_exit_codes() {
    let fleet = Fleet::new(&["web1"], "", "");
    // Usage: missing arguments, unknown flag.
    for args in [&["fail2ban", "sshd"][..], &["--nope", "a", "b", "1.2.3.4"]] {
        let (code, _, stderr) = run(REPORT, args);
        assert_eq!(code, 64, "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
    // Configuration missing.
    let (code, _, stderr) = run(
        REPORT,
        &["--config", "/nonexistent.toml", "f", "j", "203.0.113.61"],
    );
    assert_eq!(code, 78, "{stderr}");
    // Server down: exit 75 within the configured time limit (2 s in the test fleet), with
    // the report spooled.
    let started = Instant::now();
    let (code, stderr) = outcome(&fleet.report(0, &["fail2ban", "sshd", "203.0.113.62"]));
    assert_eq!(code, 75, "{stderr}");
    assert!(stderr.contains("spooled as"), "{stderr}");
    assert_eq!(fleet.spooled(0), 1);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    // -d is the 2014 alias of -v.
    let mut fleet = fleet;
    fleet.start_server();
    let (code, stderr) = outcome(&fleet.report(0, &["-d", "fail2ban", "sshd", "203.0.113.63"]));
    assert_eq!(code, 0);
    assert!(stderr.contains("accepted"), "{stderr}");
}
