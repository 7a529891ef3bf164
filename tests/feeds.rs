//! `[[feeds]]`: a blocklist fetched over HTTPS from a server on loopback with a CA made for
//! the test (tests/common/feedserver.py), applied by difference, and never lifted by a
//! download that failed, was cut short or shrank, across a restart too.

use crate::common;

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

/// A process of the test's, killed with it.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The feed's server: what it serves and how it behaves are files in `dir`.
struct FeedServer {
    dir: tempfile::TempDir,
    _server: Running,
    port: u16,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl FeedServer {
    /// A CA and a certificate for 127.0.0.1 made now, and the server started with them.
    fn start() -> FeedServer {
        let dir = tempfile::tempdir().unwrap();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        openssl(
            dir.path(),
            &[
                &["req", "-x509"][..],
                &ec,
                &[
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.pem",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=banshare test CA",
                ],
            ]
            .concat(),
        );
        openssl(
            dir.path(),
            &[
                &["req"][..],
                &ec,
                &[
                    "-keyout",
                    "server.key",
                    "-out",
                    "server.csr",
                    "-subj",
                    "/CN=127.0.0.1",
                ],
            ]
            .concat(),
        );
        fs::write(dir.path().join("san"), "subjectAltName = IP:127.0.0.1\n").unwrap();
        openssl(
            dir.path(),
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "san",
                "-out",
                "server.pem",
            ],
        );
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/common/feedserver.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(dir.path())
            .arg(dir.path().join("server.pem"))
            .arg(dir.path().join("server.key"))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().unwrap();
        FeedServer {
            dir,
            _server: Running(child),
            port,
        }
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn serve(&self, entries: &[String]) {
        fs::write(
            self.dir.path().join("list"),
            format!("# a test feed\n{}\n", entries.join("\n")),
        )
        .unwrap();
    }

    fn mode(&self, mode: &str) {
        fs::write(self.dir.path().join("mode"), mode).unwrap();
    }

    fn hits(&self) -> Vec<String> {
        let text = fs::read_to_string(self.dir.path().join("hits")).unwrap_or_default();
        text.lines().map(String::from).collect()
    }
}

fn networks(range: std::ops::Range<u8>) -> Vec<String> {
    range.map(|i| format!("45.{i}.0.0/16")).collect()
}

/// The feed's view in `banshare status --json`.
fn feed_status(fleet: &Fleet) -> serde_json::Value {
    let status: serde_json::Value =
        serde_json::from_str(&fleet.admin_ok(&["status", "--json"])).unwrap();
    status["feeds"][0].clone()
}

/// Waits until the feed has failed `n` times in all, and says why the last time.
fn wait_failures(fleet: &Fleet, n: u64) -> String {
    wait_for("the feed to fail", Duration::from_secs(60), || {
        let feed = feed_status(fleet);
        (feed["failures"].as_u64() >= Some(n))
            .then(|| feed["last_error"].as_str().unwrap_or_default().to_string())
    })
}

/// How many bans the server holds.
fn listed(fleet: &Fleet) -> usize {
    fleet
        .admin_ok(&["bans", "--format", "plain"])
        .lines()
        .count()
}

#[test]
fn a_feed_is_applied_by_difference_and_no_bad_download_lifts_it() {
    let feed = FeedServer::start();
    feed.serve(&networks(0..10));
    let metrics = free_port();
    let config = format!(
        "metrics-listen = \"127.0.0.1:{metrics}\"\n[[feeds]]\nname = \"drop\"\nurl = \"https://127.0.0.1:{}/drop.txt\"\ninterval = \"2s\"\nca-file = \"{}\"\n",
        feed.port,
        feed.ca().display()
    );
    let mut fleet = Fleet::start(&["web1"], &config, "");
    for ip in networks(0..10) {
        fleet.wait_applied(0, &format!("ban import drop {ip} -1"));
    }
    // Fetched again with its ETag, and answered 304.
    wait_for("a fetch with the ETag", Duration::from_secs(30), || {
        feed.hits().iter().any(|h| h.starts_with('"')).then_some(())
    });

    // 10% fewer: the one that left is lifted. Then one more: it is banned.
    feed.serve(&networks(1..10));
    fleet.wait_applied(0, "unban import drop 45.0.0.0/16 -1");
    let mut list = networks(1..10);
    list.push("46.0.0.0/16".into());
    feed.serve(&list);
    fleet.wait_applied(0, "ban import drop 46.0.0.0/16 -1");
    assert_eq!(listed(&fleet), 10);

    // Nothing that goes wrong lifts anything: an error, a download cut short, a list that
    // lost 90% of its entries, a server that does not answer within the interval, a list
    // longer than 64 MiB.
    let mut failures = 0;
    for (mode, why) in [
        ("500", "HTTP 500"),
        ("truncate", ""),
        (
            "ok",
            "shrank from 10 to 1 entries, more than max-shrink (50%)",
        ),
        ("slow", ""),
        ("huge", "limit"),
    ] {
        if mode == "ok" {
            feed.serve(&networks(1..2));
        }
        feed.mode(mode);
        failures += 1;
        let error = wait_failures(&fleet, failures);
        assert!(error.contains(why), "{mode}: {error}");
        assert_eq!(listed(&fleet), 10, "{mode}");
    }
    assert!(fleet
        .server_log()
        .contains("its last good copy (10 entries) stays"));
    // The metrics say it too, once the endpoint's copy of the state is a second old at most.
    wait_for("the feed's metrics", Duration::from_secs(10), || {
        let (_, body) = http_get(metrics, "/metrics")?;
        let failures = format!("banshare_server_feed_failures_total{{feed=\"drop\"}} {failures}");
        (body.contains("banshare_server_feed_entries{feed=\"drop\"} 10.0")
            && body.contains(&failures))
        .then_some(())
    });

    // The copy outlives a restart: the server starts with it, though the feed now fails.
    feed.mode("500");
    fleet.signal_server(nix::sys::signal::Signal::SIGTERM);
    fleet.wait_server();
    fleet.start_server();
    let status = feed_status(&fleet);
    assert_eq!(status["entries"], 10, "{status}");
    assert!(status["last_success"].as_u64().is_some(), "{status}");
    wait_failures(&fleet, 1);
    assert_eq!(listed(&fleet), 10);
    let applied = fleet.applied(0);
    assert_eq!(
        applied.iter().filter(|l| l.starts_with("unban")).count(),
        1,
        "{applied:?}"
    );

    // Once the feed serves again, a version that drops a share within max-shrink applies.
    feed.serve(&networks(1..8));
    feed.mode("ok");
    fleet.wait_applied(0, "unban import drop 46.0.0.0/16 -1");
    assert_eq!(listed(&fleet), 7);
    let status = feed_status(&fleet);
    assert!(status["last_error"].is_null(), "{status}");
}

/// Both servers fetch the feed and apply it: a lift is dated, so neither bans again what the
/// other lifted, and each host gets each ban once.
#[test]
fn two_peered_servers_with_the_same_feed_converge() {
    let _serial = one_at_a_time();
    let feed = FeedServer::start();
    feed.serve(&networks(0..6));
    let config = format!(
        "[[feeds]]\nname = \"drop\"\nurl = \"https://127.0.0.1:{}/drop.txt\"\ninterval = \"1s\"\nca-file = \"{}\"\n",
        feed.port,
        feed.ca().display()
    );
    let mut fleets = servers::peered(2, &config, |_| "127.0.0.1".into());
    servers::start_all(&mut fleets);
    for fleet in &fleets {
        for ip in networks(0..6) {
            fleet.wait_applied(0, &format!("ban import drop {ip} -1"));
        }
    }
    feed.serve(&networks(1..6));
    for fleet in &fleets {
        fleet.wait_applied(0, "unban import drop 45.0.0.0/16 -1");
    }
    // Five more fetches by each: what is lifted stays lifted, on both.
    let hits = feed.hits().len();
    wait_for("ten more fetches", Duration::from_secs(60), || {
        (feed.hits().len() >= hits + 10).then_some(())
    });
    let bans = servers::converged(&fleets);
    assert_eq!(
        bans.keys().cloned().collect::<Vec<_>>(),
        networks(1..6),
        "{bans:?}"
    );
    for fleet in &fleets {
        let applied = fleet.applied(0);
        let lines: Vec<&String> = applied
            .iter()
            .filter(|l| l.contains(" 45.0.0.0/16 "))
            .collect();
        assert_eq!(
            lines,
            [
                "ban import drop 45.0.0.0/16 -1",
                "unban import drop 45.0.0.0/16 -1"
            ]
        );
        assert_eq!(applied.len(), 7, "each ban once: {applied:?}");
    }
}

/// A CrowdSec Local API of the real crowdsec package, alone (no agent, no central API),
/// with its own configuration and database in a temporary directory.
struct Lapi {
    dir: tempfile::TempDir,
    _api: Running,
    port: u16,
}

/// `cscli` with the configuration in `dir`.
fn cscli(dir: &Path, args: &[&str]) {
    let out = Command::new("cscli")
        .arg("-c")
        .arg(dir.join("config.yaml"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cscli {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Lapi {
    fn start() -> Lapi {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let d = dir.path().display();
        let config = fs::read_to_string("/etc/crowdsec/config.yaml")
            .unwrap()
            .replace("log_dir: /var/log/", &format!("log_dir: {d}/"))
            .replace(
                "/var/lib/crowdsec/data/crowdsec.db",
                &format!("{d}/crowdsec.db"),
            )
            .replace(
                "/etc/crowdsec/local_api_credentials.yaml",
                &format!("{d}/local_api_credentials.yaml"),
            )
            .replace(
                "listen_uri: 127.0.0.1:8080",
                &format!("listen_uri: 127.0.0.1:{port}"),
            );
        fs::write(dir.path().join("config.yaml"), config).unwrap();
        fs::write(dir.path().join("local_api_credentials.yaml"), "").unwrap();
        let credentials = dir.path().join("local_api_credentials.yaml");
        cscli(
            dir.path(),
            &[
                "machines",
                "add",
                "banshare-test",
                "--auto",
                "--force",
                "-f",
                credentials.to_str().unwrap(),
            ],
        );
        cscli(
            dir.path(),
            &[
                "bouncers",
                "add",
                "banshare",
                "-k",
                "b4n5h4r3b0unc3rk3yf0r7h3735751",
            ],
        );
        let child = Command::new("crowdsec")
            .arg("-c")
            .arg(dir.path().join("config.yaml"))
            .args(["-no-cs", "-no-capi"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_for("the Local API", Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        Lapi {
            dir,
            _api: Running(child),
            port,
        }
    }

    fn cscli(&self, args: &[&str]) {
        cscli(self.dir.path(), args);
    }
}

/// CrowdSec's detections reach every banshare host: the server polls the Local API's
/// decisions stream as a bouncer does, and a deleted decision is lifted.
#[test]
fn a_crowdsec_local_api_is_a_feed() {
    let lapi = Lapi::start();
    lapi.cscli(&[
        "decisions",
        "add",
        "--ip",
        "203.0.113.9",
        "--duration",
        "4h",
    ]);
    lapi.cscli(&[
        "decisions",
        "add",
        "--range",
        "198.51.100.0/24",
        "--duration",
        "23h",
    ]);
    lapi.cscli(&[
        "decisions",
        "add",
        "--ip",
        "192.0.2.77",
        "--type",
        "captcha",
    ]);
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("crowdsec.key");
    fs::write(&key, "b4n5h4r3b0unc3rk3yf0r7h3735751\n").unwrap();
    fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let config = format!(
        "[[feeds]]\nname = \"crowdsec\"\nurl = \"http://127.0.0.1:{}\"\nformat = \"crowdsec-lapi\"\n\
         interval = \"1s\"\napi-key-file = \"{}\"\n",
        lapi.port,
        key.display()
    );
    let fleet = Fleet::start(&["web1"], &config, "");
    fleet.wait_applied(0, "ban import crowdsec 203.0.113.9 -1");
    fleet.wait_applied(0, "ban import crowdsec 198.51.100.0/24 -1");
    lapi.cscli(&["decisions", "delete", "--ip", "203.0.113.9"]);
    fleet.wait_applied(0, "unban import crowdsec 203.0.113.9 -1");
    lapi.cscli(&[
        "decisions",
        "add",
        "--ip",
        "203.0.113.10",
        "--duration",
        "1h",
    ]);
    fleet.wait_applied(0, "ban import crowdsec 203.0.113.10 -1");
    assert_eq!(listed(&fleet), 2, "the captcha is no ban");
    assert_eq!(feed_status(&fleet)["entries"], 2);
}
