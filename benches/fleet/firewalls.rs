//! P4 bursts into nftables and fail2ban, P5 memory, P6 catch-up.

use super::*;

/// Addresses in an nftables set, counted from `nft list set`; 0 while there is no set.
pub fn nft_count(table: &str, set: &str) -> usize {
    let Ok(out) = Command::new("nft")
        .args(["list", "set", "inet", table, set])
        .output()
    else {
        return 0;
    };
    String::from_utf8_lossy(&out.stdout)
        .split(|c: char| c.is_whitespace() || c == ',' || c == '{' || c == '}')
        .filter(|w| w.parse::<std::net::IpAddr>().is_ok())
        .count()
}

/// Bans the client has put into nftables so far, from its log of batches.
pub fn nft_batched(fleet: &Fleet, client: usize, skip_lines: usize) -> usize {
    fleet
        .client_log(client)
        .lines()
        .skip(skip_lines)
        .filter_map(|l| l.split("nftables: applied a batch of ").nth(1))
        .filter_map(|rest| rest.split(' ').next()?.parse::<usize>().ok())
        .sum()
}

/// Polls `count` until it reaches `expected`; returns the time since `started`.
pub fn until_count(
    what: &str,
    expected: usize,
    started: Instant,
    mut count: impl FnMut() -> usize,
) -> Duration {
    let mut last = (0, Instant::now());
    loop {
        let n = count();
        if n >= expected {
            return started.elapsed();
        }
        if n != last.0 {
            last = (n, Instant::now());
        }
        assert!(
            last.1.elapsed() < LOST_AFTER,
            "lost: {what} stuck at {n} of {expected}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Reporters 0..REPORTERS and one client on host REPORTERS with `client_extra`.
pub fn firewall_fleet(server_extra: &str, client_extra: &str) -> Fleet {
    let names: Vec<String> = (0..=REPORTERS).map(|i| format!("h{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut fleet = Fleet::new(&names, server_extra, "");
    fleet.add_client_config(REPORTERS, client_extra);
    fleet.start_server();
    fleet
}

pub fn burst_nftables(results: &mut Results, sizes: &Sizes) {
    let mut fleet = firewall_fleet("", "backend = \"nftables\"\n");
    fleet.start_client(REPORTERS);
    let ips = addresses(0, sizes.p4_nftables);
    let started = Instant::now();
    inject_parallel(&fleet, &ips);
    let took = until_count("nftables batches", ips.len(), started, || {
        nft_batched(&fleet, REPORTERS, 0)
    });
    assert_eq!(
        nft_count("banshare", "addr4"),
        ips.len(),
        "lost from nftables"
    );
    results.add(
        "p4_nftables",
        format!(
            "P4 {} bans into nftables, first report to last applied",
            ips.len()
        ),
        format!("{:.3} s", took.as_secs_f64()),
        "≤ 1 s",
        json!({"bans": ips.len(), "seconds": took.as_secs_f64()}),
    );
}

pub fn burst_fail2ban(results: &mut Results, sizes: &Sizes) {
    let mut fleet = firewall_fleet("", "backend = \"fail2ban\"\n");
    let f2b_dir = fleet.dir.path().join("fail2ban");
    fleet.add_client_config(
        REPORTERS,
        &format!(
            "fail2ban-socket = \"{}\"\n",
            f2b_dir.join("fail2ban.sock").display()
        ),
    );
    let f2b = Fail2ban::start_with(
        None,
        &f2b_dir,
        &fleet.hosts[REPORTERS].config,
        "nftables-allports",
    );
    fleet.start_client(REPORTERS);
    let ips = addresses(0, sizes.p4_fail2ban);
    let started = Instant::now();
    inject_parallel(&fleet, &ips);
    let took = until_fail2ban_has(ips.len(), started);
    // The same number of bans handed to fail2ban directly, 500 a call as the backend does:
    // what fail2ban itself takes, without banshare.
    let started = Instant::now();
    for chunk in addresses(ips.len(), ips.len()).chunks(500) {
        let args: Vec<&str> = ["set", "banshare", "banip"]
            .into_iter()
            .chain(chunk.iter().map(String::as_str))
            .collect();
        assert!(f2b.client(&args).status.success());
    }
    let direct = until_fail2ban_has(2 * ips.len(), started);
    let per_ban = |t: Duration| t.as_secs_f64() * 1000.0 / ips.len() as f64;
    results.add(
        "p4_fail2ban",
        format!(
            "P4 {} bans into fail2ban (banaction nftables-allports), first report to last in nftables",
            ips.len()
        ),
        format!(
            "{:.1} s ({:.2} ms a ban); fail2ban-client banip alone: {:.1} s ({:.2} ms a ban)",
            took.as_secs_f64(),
            per_ban(took),
            direct.as_secs_f64(),
            per_ban(direct)
        ),
        "≤ 30 s for 10,000",
        json!({"bans": ips.len(), "seconds": took.as_secs_f64(),
               "fail2ban_alone_seconds": direct.as_secs_f64()}),
    );
}

/// Waits until fail2ban's nftables set holds `expected` addresses.
pub fn until_fail2ban_has(expected: usize, started: Instant) -> Duration {
    let mut last_poll = Instant::now() - Duration::from_secs(1);
    let mut count = 0;
    // Listing the set costs fail2ban CPU too: look four times a second.
    until_count("fail2ban's set", expected, started, || {
        if last_poll.elapsed() >= Duration::from_millis(250) {
            last_poll = Instant::now();
            count = nft_count("f2b-table", "addr-set-banshare");
        }
        count
    })
}

/// Fills a server in stages and reads its memory at each; a client stopped before the fill
/// then catches up (P6, with nftables, when there is a namespace).
pub fn memory_and_catch_up(results: &mut Results, sizes: &Sizes, firewall: bool) {
    let mut fleet = firewall_fleet("", "backend = \"nftables\"\n");
    if firewall {
        fleet.start_client(REPORTERS);
        fleet.stop_client(REPORTERS);
    }
    let mut filled = 0;
    for &stage in sizes.p5_stages {
        let ips = addresses(filled, stage - filled);
        let took = inject_parallel(&fleet, &ips);
        filled = stage;
        let rss = rss_mb(fleet.server_pid());
        let status = fleet.admin(&["status", "--json"]);
        let active =
            serde_json::from_slice::<Value>(&status.stdout).unwrap()["active_bans"].clone();
        assert_eq!(active, json!(stage), "the server holds every ban");
        results.add(
            &format!("p5_server_rss_mb_{stage}"),
            format!("P5 server RSS with {stage} active bans"),
            format!(
                "{rss:.1} MB (filled at {:.0} reports/s)",
                ips.len() as f64 / took.as_secs_f64()
            ),
            match stage {
                100_000 => "≤ 64 MB",
                1_000_000 => "≤ 400 MB",
                _ => "",
            },
            json!(rss),
        );
        if firewall && stage == sizes.p6_bans {
            catch_up(results, &mut fleet, stage);
        }
    }
}

pub fn catch_up(results: &mut Results, fleet: &mut Fleet, bans: usize) {
    let lines_before = fleet.client_log(REPORTERS).lines().count();
    let started = Instant::now();
    fleet.spawn_client(REPORTERS);
    let took = until_count("the catch-up", bans, started, || {
        nft_batched(fleet, REPORTERS, lines_before)
    });
    assert_eq!(nft_count("banshare", "addr4"), bans, "lost in the catch-up");
    fleet.stop_client(REPORTERS);
    results.add(
        "p6_catch_up",
        format!("P6 restarted client catches up on {bans} bans (nftables)"),
        format!("{:.2} s", took.as_secs_f64()),
        "≤ 2 s",
        json!({"bans": bans, "seconds": took.as_secs_f64()}),
    );
}

/// When each address appeared in an nftables set, from `nft monitor`: the time a ban takes
/// to reach the firewall, without listing the set again and again.
pub struct ElementWatch {
    monitor: std::process::Child,
    /// Each address added, with its table, and when.
    seen: mpsc::Receiver<(String, String, Instant)>,
}

impl ElementWatch {
    pub fn start() -> ElementWatch {
        use std::io::BufRead;
        // Line-buffered, or nft holds its events back while its output is a pipe.
        let mut monitor = Command::new("stdbuf")
            .args(["-oL", "nft", "monitor", "new", "elements"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("nft monitor");
        let out = std::io::BufReader::new(monitor.stdout.take().unwrap());
        let (tell, seen) = mpsc::channel();
        std::thread::spawn(move || {
            // "add element inet TABLE SET { ADDRESS timeout 1d, ADDRESS ... }"
            for line in out.lines().map_while(Result::ok) {
                let at = Instant::now();
                let table = line
                    .split_whitespace()
                    .nth(3)
                    .unwrap_or_default()
                    .to_string();
                let words = line.split(|c: char| c.is_whitespace() || c == ',' || c == '{');
                for ip in words.filter(|w| w.parse::<std::net::IpAddr>().is_ok()) {
                    let _ = tell.send((ip.to_string(), table.clone(), at));
                }
            }
        });
        // nft needs a moment before it reports what happens.
        std::thread::sleep(Duration::from_millis(200));
        ElementWatch { monitor, seen }
    }

    /// When `ip` was added; a ban that never comes is lost.
    pub fn wait(&self, ip: &str) -> Instant {
        loop {
            match self.seen.recv_timeout(LOST_AFTER) {
                Ok((seen, _, at)) if seen == ip => return at,
                Ok(_) => {}
                Err(_) => panic!("lost: {ip} never reached the nftables set"),
            }
        }
    }

    /// When each of `tables` had `count` addresses added.
    pub fn wait_count(&self, tables: usize, count: usize) -> Instant {
        let mut added: HashMap<String, usize> = HashMap::new();
        let mut full = 0;
        loop {
            let (_, table, at) = self
                .seen
                .recv_timeout(LOST_AFTER)
                .unwrap_or_else(|_| panic!("lost: {full} of {tables} tables have {count}"));
            let n = added.entry(table).or_default();
            *n += 1;
            if *n == count {
                full += 1;
                if full == tables {
                    return at;
                }
            }
        }
    }
}

impl Drop for ElementWatch {
    fn drop(&mut self) {
        let _ = self.monitor.kill();
        let _ = self.monitor.wait();
    }
}

/// P10: from starting banshare-report to the address in the client's nftables set, one
/// ban at a time, on the client's own host: as before (a batch delay of 20 ms, and the
/// report sent directly), without the delay, and with the report handed to the client too,
/// in the same run.
pub fn nftables_latency(results: &mut Results, sizes: &Sizes) {
    for (k, (delay, via, label, target)) in [
        (
            "20ms",
            Via::Directly,
            "batch-delay 20 ms, reported directly: as before",
            "",
        ),
        (
            "0ms",
            Via::Directly,
            "no batch delay, reported directly",
            "",
        ),
        (
            "0ms",
            Via::Client,
            "no batch delay, handed to the client: now",
            "median ≤ 10 ms",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        // A table of its own: what it leaves behind must not count in another measure.
        let client = format!(
            "backend = \"nftables\"\nnft-table = \"latency{k}\"\nbatch-delay = \"{delay}\"\n"
        );
        let mut fleet = firewall_fleet("", &client);
        fleet.start_client(REPORTERS);
        let watch = ElementWatch::start();
        let ips = addresses(500_000 + 10_000 * k, sizes.p10_reports + 1);
        // The first, to warm the client up.
        report_via(&fleet, REPORTERS, &ips[0], via);
        watch.wait(&ips[0]);
        let samples: Vec<Duration> = ips[1..]
            .iter()
            .map(|ip| {
                let started = Instant::now();
                report_via(&fleet, REPORTERS, ip, via);
                watch.wait(ip) - started
            })
            .collect();
        results.latency(
            &format!("p10_nftables_{k}"),
            format!("P10 report start to element in nftables, {label}"),
            &samples,
            target,
        );
    }
}

/// P13: a burst of separate reports, REPORTERS at a time, from the client's host, until all
/// are in its nftables set: sent directly, as before, and handed to the client, in the
/// same run.
pub fn burst_of_reports(results: &mut Results, sizes: &Sizes) {
    let n = sizes.p13_reports;
    let mut took = Vec::new();
    for (k, via) in [Via::Directly, Via::Client].into_iter().enumerate() {
        let client = format!("backend = \"nftables\"\nnft-table = \"reports{k}\"\n");
        let mut fleet = Fleet::new(&["h0"], "", &client);
        fleet.start_server();
        fleet.start_client(0);
        let ips = addresses(900_000 + 10_000 * k, n);
        let watch = ElementWatch::start();
        let started = Instant::now();
        std::thread::scope(|scope| {
            for r in 0..REPORTERS {
                let (fleet, ips) = (&fleet, &ips);
                scope.spawn(move || {
                    for ip in ips.iter().skip(r).step_by(REPORTERS) {
                        report_via(fleet, 0, ip, via);
                    }
                });
            }
        });
        took.push((watch.wait_count(1, n) - started).as_secs_f64());
    }
    results.add(
        "p13_report_burst",
        format!("P13 {n} separate reports, {REPORTERS} at a time, until all are in nftables"),
        format!(
            "handed to the client {:.3} s; directly, as before, {:.3} s ({:.1}x)",
            took[1],
            took[0],
            took[0] / took[1]
        ),
        "half of before",
        json!({"reports": n, "handed_seconds": took[1], "direct_seconds": took[0]}),
    );
}

/// A server with `server_extra` and `clients` started clients, client i with its nftables
/// table `import{i}`.
fn nftables_clients(clients: usize, server_extra: &str) -> Fleet {
    let names: Vec<String> = (0..clients).map(|i| format!("c{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut fleet = Fleet::new(&names, server_extra, "backend = \"nftables\"\n");
    for i in 0..clients {
        fleet.add_client_config(i, &format!("nft-table = \"import{i}\"\n"));
    }
    fleet.start_server();
    for i in 0..clients {
        fleet.start_client(i);
    }
    fleet
}

/// How many bans and unbans client i has put into nftables since `skip` lines of its log, for
/// every client, until they reach `each`: the time since `started`.
fn until_every_client(
    fleet: &Fleet,
    what: &str,
    each: usize,
    skip: &[usize],
    started: Instant,
) -> Duration {
    let clients = skip.len();
    until_count(what, clients * each, started, || {
        (0..clients)
            .map(|i| nft_batched(fleet, i, skip[i]).min(each))
            .sum()
    })
}

/// Each client's log lines so far.
fn log_lines(fleet: &Fleet, clients: usize) -> Vec<usize> {
    (0..clients)
        .map(|i| fleet.client_log(i).lines().count())
        .collect()
}

/// P16: a feed's new version that changes `changed` entries (half lifted, half new) of a
/// list as long, served over http on loopback and fetched every second, from the moment the
/// file changes until every client has applied the change: the fetch interval included.
pub fn feed_refresh_to_every_firewall(results: &mut Results, changed: usize, clients: usize) {
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("list.txt");
    fs::write(&list, addresses_in(45, 0, changed).join("\n")).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut http = Command::new("python3")
        .args(["-m", "http.server", "--bind", "127.0.0.1", "--directory"])
        .arg(dir.path())
        .arg(port.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let feed = format!(
        "[[feeds]]\nname = \"bench\"\nurl = \"http://127.0.0.1:{port}/list.txt\"\ninterval = \"1s\"\n"
    );
    let fleet = nftables_clients(clients, &feed);
    let skip = log_lines(&fleet, clients);
    until_every_client(
        &fleet,
        "the feed's first version in every client's set",
        changed,
        &skip,
        Instant::now(),
    );
    // Half of the entries gone, as many new: `changed` changes, the list as long.
    let kept = addresses_in(45, changed / 2, changed - changed / 2);
    let new = addresses_in(46, 0, changed / 2);
    let skip = log_lines(&fleet, clients);
    let started = Instant::now();
    // Renamed into place, so that the feed's server never serves half of it.
    let next = dir.path().join("next.txt");
    fs::write(&next, [kept, new].concat().join("\n")).unwrap();
    fs::rename(&next, &list).unwrap();
    let took = until_every_client(
        &fleet,
        "the feed's change in every client's set",
        changed,
        &skip,
        started,
    );
    let _ = http.kill();
    let _ = http.wait();
    for i in 0..clients {
        assert_eq!(nft_count(&format!("import{i}"), "addr4"), changed);
    }
    results.add(
        "p16_feed_refresh",
        format!("P16 a feed's version changing {changed} entries, file changed to all in {clients} clients' nftables sets (fetched every 1 s)"),
        format!("{:.3} s", took.as_secs_f64()),
        "≤ 2 s",
        json!({"changed": changed, "clients": clients, "seconds": took.as_secs_f64()}),
    );
}

/// P11 and P15: `banshare import` of `bans` addresses, until all are in each of `clients`
/// clients' nftables sets.
pub fn import_to_every_firewall(results: &mut Results, key: &str, bans: usize, clients: usize) {
    let fleet = nftables_clients(clients, "");
    let file = fleet.dir.path().join("blocklist.txt");
    fs::write(&file, addresses_in(45, 700_000, bans).join("\n")).unwrap();
    // Counted from each client's "applied a batch" lines, written once nft has returned,
    // then checked in every set: `nft monitor`, printing 10,000 elements, would compete
    // with the ten clients for the two cores.
    let skip = log_lines(&fleet, clients);
    let started = Instant::now();
    let out = fleet.admin(&["import", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let took = until_every_client(
        &fleet,
        "the import in every client's set",
        bans,
        &skip,
        started,
    );
    for i in 0..clients {
        assert_eq!(nft_count(&format!("import{i}"), "addr4"), bans);
    }
    // How fast this machine starts a program, to compare runs on machines of other speeds.
    let exec = median_run(&["/bin/true"], 50);
    let target = if bans > 10_000 {
        "≤ 2 s"
    } else {
        "≤ 0.3 s"
    };
    results.add(
        &format!("{key}_import"),
        format!(
            "{} banshare import of {bans} bans, start of the command to all in {clients} clients' nftables sets",
            key.to_uppercase()
        ),
        format!("{:.3} s (/bin/true here: {exec:.2} ms)", took.as_secs_f64()),
        target,
        json!({"bans": bans, "clients": clients, "seconds": took.as_secs_f64(),
               "true_ms": exec}),
    );
}
