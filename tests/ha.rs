//! No single point of failure (docs/ha.md), with the real binaries in network namespaces:
//! three servers and three hosts on one LAN, each in a namespace of its own, every host
//! reporting 20 times a second to whichever server answers and following all three.

use crate::common;

use std::collections::HashMap;
use std::fs;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use common::servers::*;
use common::*;
use nix::sys::signal::Signal;

const FAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// The lab's namespaces: servers s1..s3 at 198.51.100.1-3, hosts h1..h3 at .4-.6.
const NAMES: [&str; 6] = ["s1", "s2", "s3", "h1", "h2", "h3"];

/// Three peered servers and their hosts, placed in the lab.
fn sites(lab: &Lab, server_extra: &str) -> Vec<Fleet> {
    let lan = |j: usize| lab.address(j).to_string();
    let mut fleets = peered(3, server_extra, lan);
    follow_every_server(&fleets, lan);
    for (i, fleet) in fleets.iter_mut().enumerate() {
        // Every address, so that a reporter in the server's own namespace still reaches it
        // on 127.0.0.1 while its link is down.
        edit(
            &fleet.server_config,
            "listen = \"127.0.0.1\"",
            "listen = \"0.0.0.0\"",
        );
        fleet.netns = Some(lab.ns(i).name.clone());
        fleet.hosts[0].netns = Some(lab.ns(3 + i).name.clone());
    }
    fleets
}

/// Reports from every host, 20 a second each, of addresses no one else reports.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Vec<String>>>,
}

impl Load {
    fn start(fleets: &[Fleet], round: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = fleets
            .iter()
            .enumerate()
            .map(|(i, fleet)| {
                let host = &fleet.hosts[0];
                let (ns, config) = (host.netns.clone(), host.config.clone());
                let stop = stop.clone();
                thread::spawn(move || {
                    // Each report in a process of its own, as fail2ban runs its actions: a
                    // report that waits for a dead server does not hold up the next.
                    let mut running = Vec::new();
                    let mut acknowledged = Vec::new();
                    let mut k = 0;
                    while !stop.load(Ordering::Relaxed) || !running.is_empty() {
                        if !stop.load(Ordering::Relaxed) {
                            let ip = format!("10.{}.{}.{}", 10 * round + i, k / 250, k % 250 + 1);
                            // In the host's namespace, when it has one.
                            let mut command = Command::new(match ns {
                                Some(_) => "ip",
                                None => REPORT,
                            });
                            if let Some(ns) = &ns {
                                command.args(["netns", "exec", ns, REPORT]);
                            }
                            let child = command
                                .arg("--config")
                                .arg(&config)
                                .args(["fail2ban", "sshd", &ip])
                                .stdin(Stdio::null())
                                .stderr(Stdio::null())
                                .spawn()
                                .unwrap();
                            running.push((ip, child));
                            k += 1;
                        }
                        thread::sleep(Duration::from_millis(50));
                        running.retain_mut(|(ip, child)| match child.try_wait().unwrap() {
                            Some(status) if status.success() => {
                                acknowledged.push(ip.clone());
                                false
                            }
                            Some(_) => false,
                            None => true,
                        });
                    }
                    acknowledged
                })
            })
            .collect();
        Load { stop, threads }
    }

    /// Stops reporting; every acknowledged address.
    fn stop(self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        self.threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect()
    }
}

/// How often each host ran a ban and an unban command for each address.
fn commands(fleet: &Fleet) -> HashMap<(String, String), usize> {
    let mut seen = HashMap::new();
    for line in fleet.applied(0) {
        let fields: Vec<&str> = line.split(' ').collect();
        *seen
            .entry((fields[0].to_string(), fields[3].to_string()))
            .or_default() += 1;
    }
    seen
}

/// Every acknowledged address reaches every host, banned exactly once there.
fn assert_everywhere_once(fleets: &[Fleet], acknowledged: &[String]) {
    for fleet in fleets {
        let name = &fleet.hosts[0].name;
        wait_for(
            &format!("{name} to apply {} bans", acknowledged.len()),
            Duration::from_secs(60),
            || {
                let seen = commands(fleet);
                acknowledged
                    .iter()
                    .all(|ip| seen.contains_key(&("ban".into(), ip.clone())))
                    .then_some(())
            },
        );
        thread::sleep(Duration::from_millis(500));
        let twice: Vec<_> = commands(fleet)
            .into_iter()
            .filter(|((verb, ip), n)| verb == "ban" && ip.starts_with("10.") && *n > 1)
            .collect();
        // What the host's log says of them, to tell why.
        let log = fleet.client_log(0);
        let said: Vec<&str> = log
            .lines()
            .filter(|l| {
                twice
                    .iter()
                    .any(|((_, ip), _)| l.contains(&format!("{ip} ")))
            })
            .collect();
        assert!(
            twice.is_empty(),
            "{name} applied these more than once: {twice:?}\n{}",
            said.join("\n")
        );
    }
}

#[test]
fn servers_killed_in_turn_lose_no_acknowledged_ban_and_end_identical() {
    let _serial = one_at_a_time();
    let lab = Lab::new("ha", &NAMES);
    let mut fleets = sites(&lab, "durability = \"write\"");
    start_all(&mut fleets);
    let load = Load::start(&fleets, 1);
    for i in [0, 1] {
        thread::sleep(Duration::from_secs(5));
        kill_and_restart(&mut fleets[i], Duration::from_secs(30));
    }
    // 20 a second from each of three hosts, for over 70 s.
    stop_and_find_everything(load, &fleets, 3000, "while two servers were killed in turn");
}

/// Kills a server, and starts it again after `down`, until it has read its peers' tables.
fn kill_and_restart(fleet: &mut Fleet, down: Duration) {
    fleet.signal_server(Signal::SIGKILL);
    fleet.wait_server();
    thread::sleep(down);
    fleet.start_server();
    wait_synced(fleet);
}

/// Stops the load, 3 s later; at least `least` reports were acknowledged, and every one
/// is on every server and applied once on every host.
fn stop_and_find_everything(load: Load, fleets: &[Fleet], least: usize, what: &str) {
    thread::sleep(Duration::from_secs(3));
    let acknowledged = load.stop();
    eprintln!("{} reports acknowledged {what}", acknowledged.len());
    assert!(acknowledged.len() > least, "{}", acknowledged.len());
    let table = converged(fleets);
    for ip in &acknowledged {
        assert!(
            table.contains_key(ip),
            "{ip} acknowledged, but not on the servers"
        );
    }
    assert_everywhere_once(fleets, &acknowledged);
}

/// Servers in a graph, not a full mesh (docs/ha.md, *The shape of the graph*): two core
/// servers that peer with each other, and four regional servers that each peer with both
/// core servers only, each with a host that follows it alone. The hosts of the regional
/// servers report 20 times a second; a core server is killed, and comes back.
#[test]
fn a_tree_of_servers_loses_nothing_when_a_core_server_is_killed() {
    let links = [
        (0, 1),
        (2, 0),
        (2, 1),
        (3, 0),
        (3, 1),
        (4, 0),
        (4, 1),
        (5, 0),
        (5, 1),
    ];
    let local = |_| "127.0.0.1".to_string();
    let mut fleets = peered_in(6, &links, "durability = \"write\"", local);
    start_all(&mut fleets);
    let load = Load::start(&fleets[2..], 3);
    thread::sleep(Duration::from_secs(5));
    kill_and_restart(&mut fleets[0], Duration::from_secs(10));
    // 20 a second from each of four hosts, for over 18 s.
    let what = "by the regional servers while a core server was killed";
    stop_and_find_everything(load, &fleets, 1000, what);
}

#[test]
fn a_partitioned_server_with_a_fast_clock_converges_and_its_unbans_hold() {
    let _serial = one_at_a_time();
    let lab = Lab::new("hp", &NAMES);
    let mut fleets = sites(&lab, "durability = \"write\"");
    // Its clock runs 2 s ahead of the others'.
    fleets[2].server_env = vec![
        ("LD_PRELOAD".into(), FAKETIME.into()),
        ("FAKETIME".into(), "+2s".into()),
        ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
    ];
    start_all(&mut fleets);
    let (x, y, z) = ("203.0.113.10", "203.0.113.11", "203.0.113.12");
    for ip in [x, y, z] {
        assert_eq!(
            outcome(&fleets[0].report(0, &["fail2ban", "sshd", ip])).0,
            0
        );
    }
    assert_eq!(converged(&fleets).len(), 3);
    let load = Load::start(&fleets, 2);
    thread::sleep(Duration::from_secs(2));
    // Site 3's server loses its link; a reporter in its own namespace still reaches it.
    let s3 = lab.ns(2);
    s3.run(&["ip", "link", "set", "eth0", "down"]);
    let local = fleets[2].dir.path().join("local.toml");
    let entry = format!(
        "servers = [{{ address = \"127.0.0.1\", report-port = {}, publish-port = {}, key = \"{}\" }}]\n",
        fleets[2].report_port,
        fleets[2].publish_port,
        fleets[2].keys_dir.join("server.key").display()
    );
    let text = read(&fleets[2].hosts[0].config);
    let rest = text.lines().skip(1).collect::<Vec<_>>().join("\n");
    fs::write(&local, entry + &rest + "\n").unwrap();
    thread::sleep(Duration::from_secs(4));
    // One unban on each side: x on site 1, y and z on site 3.
    admin_ok(&fleets[0], &["unban", x]);
    admin_ok(&fleets[2], &["unban", y]);
    admin_ok(&fleets[2], &["unban", z]);
    // y is reported again on site 1's side, longer than the skew after its unban, for
    // longer; z with the same bantime, which site 1 (that has not heard of the unban)
    // answers as a duplicate of the ban it holds: news all the same, made after the unban.
    thread::sleep(Duration::from_secs(4));
    let again = fleets[0].report(0, &["--bantime", "-1", "fail2ban", "sshd", y]);
    assert_eq!(outcome(&again).0, 0, "{:?}", outcome(&again));
    let again = fleets[0].report(0, &["-v", "fail2ban", "sshd", z]);
    assert_eq!(outcome(&again).0, 0, "{:?}", outcome(&again));
    assert!(
        outcome(&again).1.contains("duplicate"),
        "{:?}",
        outcome(&again)
    );
    // Reports taken by the partitioned server alone.
    let mut isolated = Vec::new();
    let before = unix_now();
    for k in 1..=20 {
        let ip = format!("10.99.0.{k}");
        let out = command_in(Some(&s3.name), REPORT)
            .arg("--config")
            .arg(&local)
            .args(["fail2ban", "sshd", &ip])
            .output()
            .unwrap();
        assert_eq!(outcome(&out).0, 0, "{:?}", outcome(&out));
        isolated.push(ip);
    }
    thread::sleep(Duration::from_secs(20));
    s3.run(&["ip", "link", "set", "eth0", "up"]);
    thread::sleep(Duration::from_secs(5));
    let mut acknowledged = load.stop();
    acknowledged.extend(isolated);
    let table = converged(&fleets);
    assert!(
        !table.contains_key(x),
        "the unban of {x} holds: {:?}",
        table.get(x)
    );
    assert_eq!(
        table.get(y).map(String::as_str),
        Some("\"fail2ban\" \"sshd\" \"web1\" null null"),
        "{y} was re-reported after its unban"
    );
    assert!(
        table.get(z).is_some_and(|ban| ban.contains("\"web1\"")),
        "{z} was reported again after its unban, by web1: {:?}",
        table.get(z)
    );
    assert_everywhere_once(&fleets, &acknowledged);
    for fleet in &fleets {
        let seen = commands(fleet);
        let name = &fleet.hosts[0].name;
        let count = |verb: &str, ip: &str| seen.get(&(verb.into(), ip.into())).copied();
        assert_eq!(count("unban", x), Some(1), "{name} lifts {x} once");
        assert_eq!(count("ban", x), Some(1), "{name} never applies {x} again");
        assert_eq!(
            count("unban", y),
            None,
            "{name} never lifts {y}: it was re-reported"
        );
        // Banned in the end: lifted at most once, if the unban came before the news.
        let (bans, unbans) = (count("ban", z).unwrap_or(0), count("unban", z).unwrap_or(0));
        assert_eq!(bans, unbans + 1, "{name} ends with {z} banned");
    }
    // The partitioned server's clock really ran ahead: it dated its reports 2 s late.
    let bans: Vec<serde_json::Value> =
        serde_json::from_str(&admin_ok(&fleets[0], &["bans", "--json"])).unwrap();
    let isolated = bans.iter().find(|b| b["ip"] == "10.99.0.1").unwrap();
    let reported = isolated["last_report"].as_u64().unwrap();
    assert!(
        reported > before,
        "reported at {reported}, by the test's clock {before}: {isolated}"
    );
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn a_host_cut_off_from_one_server_gets_everything_from_the_others_without_a_storm() {
    let _serial = one_at_a_time();
    let lab = Lab::new("hc", &NAMES);
    let mut fleets = sites(&lab, "durability = \"write\"");
    start_all(&mut fleets);
    wait_for(
        "host 1 to catch up with every server",
        Duration::from_secs(30),
        || (fleets[0].client_log(0).matches("resynchronised:").count() == 3).then_some(()),
    );
    // Host 1 can no longer reach server 2; the servers still reach each other.
    let h1 = lab.ns(3);
    h1.run(&["nft", "add", "table", "inet", "cut"]);
    h1.run(&[
        "nft",
        "add chain inet cut out { type filter hook output priority 0; }",
    ]);
    h1.run(&[
        "nft",
        "add",
        "rule",
        "inet",
        "cut",
        "out",
        "ip",
        "daddr",
        lab.address(1),
        "drop",
    ]);
    let log_before = fleets[0].client_log(0);
    let load = Load::start(&fleets, 3);
    thread::sleep(Duration::from_secs(20));
    let acknowledged = load.stop();
    assert_everywhere_once(&fleets, &acknowledged);
    let log = fleets[0].client_log(0);
    let during = &log[log_before.len()..];
    let server2 = format!("tcp://{}:{}", lab.address(1), fleets[1].publish_port);
    assert!(
        during.contains(&format!("no heartbeat from {server2}")),
        "the host noticed: {during}"
    );
    assert!(
        !during.contains("no heartbeat from tcp://198.51.100.1"),
        "{during}"
    );
    // One snapshot request to the unreachable server every 5 s at most, and no catch-up
    // with the others, which it hears all along.
    let asks = during.matches("asking again").count() + during.matches("catching up").count();
    assert!(asks <= 6, "{asks} snapshot requests in 20 s:\n{during}");
    assert_eq!(during.matches("resynchronised:").count(), 0, "{during}");
}
