//! Prometheus metrics and the client's status, with the real things: Debian's promtool
//! checks both endpoints and the shipped alerting rules, and a real Prometheus scrapes a
//! small fleet and sees the ban counter move after a report.

mod common;

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

/// The endpoint's metrics once `line` is among them.
fn metrics_with(port: u16, line: &str) -> String {
    wait_for(
        &format!("{line} on :{port}"),
        Duration::from_secs(10),
        || {
            let (code, body) = http_get(port, "/metrics")?;
            (code == 200 && body.lines().any(|l| l == line)).then_some(body)
        },
    )
}

/// `promtool check metrics` on `body`: its exit code and what it said.
fn promtool_check(body: &str) -> (i32, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package, which the test command installs)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&[out.stdout, out.stderr].concat()).into_owned();
    (out.status.code().unwrap_or(-1), said)
}

fn listen(port: u16) -> String {
    format!("metrics-listen = \"127.0.0.1:{port}\"\n")
}

/// A server and two clients, each serving metrics: the fleet, and the three ports.
fn fleet_with_metrics() -> (Fleet, u16, [u16; 2]) {
    let server_port = free_port();
    let client_ports = [free_port(), free_port()];
    let mut fleet = Fleet::new(&["web1", "web2"], &listen(server_port), "");
    for (i, port) in client_ports.iter().enumerate() {
        fleet.add_client_config(i, &listen(*port));
    }
    fleet.start_server();
    fleet.start_client(0);
    fleet.start_client(1);
    (fleet, server_port, client_ports)
}

#[test]
fn both_endpoints_pass_promtool_and_count_what_happened() {
    let (fleet, server_port, client_ports) = fleet_with_metrics();
    let (code, stderr) = outcome(&fleet.report(0, &["fail2ban", "sshd", "203.0.113.7"]));
    assert_eq!(code, 0, "{stderr}");
    outcome(&fleet.report(0, &["fail2ban", "sshd", "10.0.0.0/8"]));
    for i in 0..2 {
        fleet.wait_applied(i, "ban fail2ban sshd 203.0.113.7 86400");
    }

    let server = metrics_with(
        server_port,
        "banshare_server_reports_total{verdict=\"accepted\"} 1",
    );
    for line in [
        "banshare_server_refused_total{reason=\"min-prefix\"} 1",
        "banshare_server_active_bans{group=\"default\"} 1.0",
        "banshare_server_authorized_keys 2.0",
        "banshare_server_published_total 1",
    ] {
        assert!(server.lines().any(|l| l == line), "{line}:\n{server}");
    }
    assert!(
        server.contains("banshare_server_journal_commit_seconds_count 1"),
        "{server}"
    );
    assert!(
        server.contains("banshare_server_request_seconds_bucket"),
        "{server}"
    );
    let (code, said) = promtool_check(&server);
    assert_eq!(
        code, 0,
        "promtool on the server's metrics: {said}\n{server}"
    );

    let client = metrics_with(
        client_ports[1],
        "banshare_client_applied_total{backend=\"command\",action=\"ban\"} 1",
    );
    assert!(
        client.contains("banshare_client_command_seconds_count 1"),
        "{client}"
    );
    let connected = format!(
        "banshare_client_server_connected{{server=\"tcp://127.0.0.1:{}\"}} 1.0",
        fleet.publish_port
    );
    assert!(client.lines().any(|l| l == connected), "{client}");
    let (code, said) = promtool_check(&client);
    assert_eq!(
        code, 0,
        "promtool on the client's metrics: {said}\n{client}"
    );

    // Anything but GET /metrics is not served.
    assert_eq!(http_get(server_port, "/").map(|r| r.0), Some(404));

    // The client's own status, found through its config, says which side it is.
    let config = fleet.hosts[1].config.to_str().unwrap().to_owned();
    let out = fleet
        .command(ADMIN)
        .args(["status", "--config", &config])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{out:?}");
    assert!(text.starts_with("banshare-client "), "{text}");
    assert!(
        text.contains("applied: 1 bans, 0 unbans; failed: 0"),
        "{text}"
    );
    assert!(text.contains("connected since"), "{text}");
    let out = fleet
        .command(ADMIN)
        .args(["status", "--json", "--config", &config])
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["role"], "client", "{json}");
    assert_eq!(json["servers"][0]["lag"], 0, "{json}");
    // It answers nothing but status.
    let out = fleet
        .command(ADMIN)
        .args(["bans", "--config", &config])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("banshare-client's control socket"));
}

#[test]
fn the_shipped_alerting_rules_pass_promtool() {
    let rules = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/examples/banshare.rules.yml"
    );
    let out = Command::new("promtool")
        .args(["check", "rules", rules])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// A Prometheus scraping `targets` every second, with its data in `dir`.
fn prometheus(dir: &std::path::Path, port: u16, targets: &[u16]) -> Child {
    let targets: Vec<String> = targets.iter().map(|p| format!("'127.0.0.1:{p}'")).collect();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: banshare\n    \
             static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        ),
    )
    .unwrap();
    Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
        .spawn()
        .expect("prometheus (Debian's prometheus package)")
}

/// The value of a PromQL query that returns one number, once Prometheus has one.
fn query(port: u16, promql: &str) -> Option<f64> {
    let encoded: String = promql
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let (_, body) = http_get(port, &format!("/api/v1/query?query={encoded}"))?;
    let answer: serde_json::Value = serde_json::from_str(&body).ok()?;
    let value = answer["data"]["result"].get(0)?["value"][1].as_str()?;
    value.parse().ok()
}

#[test]
fn prometheus_scrapes_a_fleet_and_sees_the_ban_counter_move() {
    let (fleet, server_port, client_ports) = fleet_with_metrics();
    let dir = tempfile::tempdir().unwrap();
    let prometheus_port = free_port();
    let targets = [server_port, client_ports[0], client_ports[1]];
    let mut prometheus = prometheus(dir.path(), prometheus_port, &targets);
    let bans = "sum(banshare_client_applied_total{action=\"ban\"})";
    let scraped = "count(up{job=\"banshare\"} == 1)";
    // Scraped, and the clients' first state copied for the endpoint: no ban yet.
    let ready = poll(Duration::from_secs(60), || {
        let up = query(prometheus_port, scraped)? == 3.0;
        (up && query(prometheus_port, bans)? == 0.0).then_some(())
    });
    let log = std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default();
    assert!(
        ready.is_some(),
        "Prometheus never scraped all three targets:\n{log}"
    );

    let (code, stderr) = outcome(&fleet.report(0, &["fail2ban", "sshd", "203.0.113.8"]));
    assert_eq!(code, 0, "{stderr}");
    let moved = poll(Duration::from_secs(20), || {
        (query(prometheus_port, bans)? == 2.0).then_some(())
    });
    let accepted = "banshare_server_reports_total{verdict=\"accepted\"}";
    let server_saw = poll(Duration::from_secs(10), || {
        (query(prometheus_port, accepted)? == 1.0).then_some(())
    });
    prometheus.kill().unwrap();
    prometheus.wait().unwrap();
    assert!(
        moved.is_some(),
        "the ban counter did not reach 2 on the two clients"
    );
    assert!(
        server_saw.is_some(),
        "the server's accepted counter did not reach 1"
    );
}
