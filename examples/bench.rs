//! A quick benchmark of the two figures the core is designed for, with the real release
//! binaries over loopback and CURVE on:
//!
//! - reporter cost: `banshare-report` wall time from exec to exit;
//! - propagation: from starting `banshare-report` until N clients have each run their ban
//!   command.
//!
//! Run: `cargo build --release --bins --examples && target/release/examples/bench [N ...]`
//! (`DURABILITY=write` in the environment runs the server with `durability = "write"`).
//!
//! Each client's ban command is this program again (`bench applied SOCKET CLIENT IP`), which
//! sends one datagram to the benchmark, so "applied" includes a real exec, as a firewall
//! command would.

use std::collections::HashMap;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const REPORTS: usize = 200;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("applied") {
        let socket = UnixDatagram::unbound().unwrap();
        let _ = socket.send_to(format!("{} {}", args[3], args[4]).as_bytes(), &args[2]);
        return;
    }
    let sizes: Vec<usize> = args[1..]
        .iter()
        .map(|a| a.parse().expect("client counts"))
        .collect();
    let sizes = if sizes.is_empty() { vec![1, 10] } else { sizes };
    println!(
        "{:<28} {:>8} {:>8} {:>8} {:>8}",
        "measure", "runs", "p50 ms", "p99 ms", "max ms"
    );
    for clients in sizes {
        let fleet = Fleet::start(clients);
        if clients == 1 {
            let times = reporter_cost(&fleet);
            row("P2 banshare-report wall time", &times);
        }
        let times = propagation(&fleet);
        row(&format!("P1 propagation, {clients} clients"), &times);
    }
}

fn row(name: &str, times: &[Duration]) {
    let mut ms: Vec<f64> = times.iter().map(|t| t.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() as f64 * q).ceil() as usize).clamp(1, ms.len()) - 1];
    println!(
        "{name:<28} {:>8} {:>8.2} {:>8.2} {:>8.2}",
        ms.len(),
        at(0.5),
        at(0.99),
        ms[ms.len() - 1]
    );
}

/// Addresses from 198.18.0.0/15, the range set aside for benchmarks.
fn address(i: usize) -> String {
    format!("198.18.{}.{}", (i / 250) % 250, i % 250 + 1)
}

struct Fleet {
    dir: PathBuf,
    bin: PathBuf,
    children: Vec<Child>,
    applied: mpsc::Receiver<(Instant, String)>,
    clients: usize,
    next: std::cell::Cell<usize>,
}

impl Fleet {
    fn start(clients: usize) -> Fleet {
        let me = std::env::current_exe().unwrap();
        let bin = me.parent().unwrap().parent().unwrap().to_owned();
        let dir =
            std::env::temp_dir().join(format!("banshare-bench-{}-{clients}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (keys, auth) = (dir.join("keys"), dir.join("auth"));
        std::fs::create_dir_all(&keys).unwrap();
        std::fs::create_dir_all(&auth).unwrap();
        banshare::keys::generate(&keys, "server", false).unwrap();
        let port = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        let (report, publish) = (port(), port());
        let durability = std::env::var("DURABILITY").unwrap_or_else(|_| "fsync".into());
        let socket_path = dir.join("applied.sock");
        let socket = UnixDatagram::bind(&socket_path).unwrap();
        let (tx, applied) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 256];
            while let Ok(n) = socket.recv(&mut buf) {
                let now = Instant::now();
                let _ = tx.send((now, String::from_utf8_lossy(&buf[..n]).into_owned()));
            }
        });
        write(
            &dir.join("server.toml"),
            &format!(
                "listen = \"127.0.0.1\"\nreport-port = {report}\npublish-port = {publish}\n\
                 key = \"{}/server.key_secret\"\nauthorized-keys = \"{}\"\nlog-level = \"warning\"\n\
                 state-dir = \"{d}/state\"\ndurability = \"{durability}\"\n\
                 control-socket = \"{d}/control.sock\"\n",
                keys.display(),
                auth.display(),
                d = dir.display()
            ),
        );
        let mut configs = Vec::new();
        for i in 0..clients {
            let name = format!("host{i}");
            let (public, _) = banshare::keys::generate(&keys, &name, false).unwrap();
            std::fs::copy(public, auth.join(format!("{name}.key"))).unwrap();
            let config = dir.join(format!("{name}.toml"));
            write(
                &config,
                &format!(
                    "server = \"127.0.0.1\"\nreport-port = {report}\npublish-port = {publish}\n\
                     server-key = \"{k}/server.key\"\nkey = \"{k}/{name}.key_secret\"\n\
                     ban-command = \"{} applied {} {i} <ip>\"\nlog-level = \"warning\"\n\
                     state-dir = \"{}/{name}-state\"\n",
                    me.display(),
                    socket_path.display(),
                    dir.display(),
                    k = keys.display()
                ),
            );
            configs.push(config);
        }
        // Every key is authorized before the server starts.
        let mut children = vec![spawn(
            &bin.join("banshare-server"),
            &dir.join("server.toml"),
        )];
        std::thread::sleep(Duration::from_millis(200));
        children.extend(
            configs
                .iter()
                .map(|c| spawn(&bin.join("banshare-client"), c)),
        );
        let fleet = Fleet {
            dir,
            bin,
            children,
            applied,
            clients,
            next: std::cell::Cell::new(0),
        };
        fleet.warm_up();
        fleet
    }

    /// Reports until every client has applied one ban, so all are connected.
    fn warm_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.report_and_wait(Duration::from_secs(2)).is_some() {
                return;
            }
        }
        panic!("clients did not connect");
    }

    fn report(&self) -> (String, Duration) {
        let ip = address(self.next.get());
        self.next.set(self.next.get() + 1);
        let started = Instant::now();
        let status = Command::new(self.bin.join("banshare-report"))
            .arg("--config")
            .arg(self.dir.join("host0.toml"))
            .args(["bench", "bench", &ip])
            .status()
            .unwrap();
        assert!(status.success(), "report of {ip} failed");
        (ip, started.elapsed())
    }

    /// One report; the time until each client applied it, or None on timeout.
    fn report_and_wait(&self, timeout: Duration) -> Option<Vec<Duration>> {
        while self.applied.try_recv().is_ok() {}
        let started = Instant::now();
        let (ip, _) = self.report();
        let mut seen: HashMap<String, Duration> = HashMap::new();
        while seen.len() < self.clients {
            let (at, text) = self.applied.recv_timeout(timeout).ok()?;
            if let Some((client, applied_ip)) = text.split_once(' ') {
                if applied_ip == ip {
                    seen.insert(client.to_owned(), at - started);
                }
            }
        }
        Some(seen.into_values().collect())
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        // Clients first, so that none logs the server going away.
        for child in self.children.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

fn spawn(program: &Path, config: &Path) -> Child {
    Command::new(program)
        .args(["--log", "stderr", "--config"])
        .arg(config)
        .stdin(Stdio::null())
        .spawn()
        .unwrap()
}

fn reporter_cost(fleet: &Fleet) -> Vec<Duration> {
    (0..REPORTS).map(|_| fleet.report().1).collect()
}

fn propagation(fleet: &Fleet) -> Vec<Duration> {
    (0..REPORTS / 2)
        .flat_map(|_| {
            fleet
                .report_and_wait(Duration::from_secs(5))
                .expect("every client applies")
        })
        .collect()
}
