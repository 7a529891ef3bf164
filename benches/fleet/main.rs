//! banshare's benchmark: the real release binaries, on one machine over loopback, with CURVE
//! on and the server's default durability (`fsync`). It prints a table and writes JSON.
//!
//!   scripts/bench                 every measure (a few minutes)
//!   scripts/bench --quick         the short version that the test command runs
//!   scripts/bench --json FILE     where the JSON goes (default target/bench/*.json)
//!   scripts/bench --only p3,p5    only these measures (P2 comes with P1, P6 with P5)
//!   scripts/bench --only p17 --subscribers 1000,20000   P17 with these numbers of subscribers
//!
//! As root it first moves into a network namespace of its own (`unshare --net`), so that the
//! nftables and fail2ban measures never touch the host's firewall; without root, they are
//! skipped. Timing never fails the run, because machines are noisy; a lost ban does.
//!
//! - P1 propagation: from starting `banshare-report` until each of N clients has run its ban
//!   command. The command is `logger`, which sends one datagram to the benchmark, so every
//!   sample includes a real fork and exec on the client.
//! - P2 reporter cost: `banshare-report` wall time from exec to exit, handed to the host's
//!   client, against reporting directly as before, and starting `fail2ban-client --version`.
//! - P3 throughput: accepted reports a second from 8 long-lived reporters (each keeps up to
//!   WINDOW reports in flight on one CURVE connection), with 10 subscribers attached, and
//!   how much of the stream the slowest of them received live.
//! - P4 burst: 10,000 bans until all are in one client's firewall, nftables and fail2ban.
//! - P5 memory: server RSS with 100,000 and 1,000,000 active bans; a connected idle client.
//! - P6 catch-up: a client that was stopped while 100,000 bans were made, from restart until
//!   all are in its nftables set.
//! - P7 propagation through two peered servers, against one, in the same run.
//! - P8 fan-out: report to the last of 1,000 lightweight subscribers, from one server, and
//!   from a core server through two regional ones.
//! - P9 a server that was down with 100,000 bans, until it has caught up with its peer.
//! - P10 from starting `banshare-report` to the address in a client's nftables set (seen
//!   by `nft monitor`): as before (batch delay, direct report) and now, in the same run.
//! - P11 `banshare import` of 1,000 bans, until all are in every client's nftables set.
//! - P12 where a report's time goes: context, handshake, round trip, the server's commit.
//! - P15 `banshare import` of a list of 100,000, as P11 (full run only).
//! - P16 a feed's version changing 10,000 entries, to 10 clients' sets (full run only).
//! - P13 1,000 separate reports, 8 at a time, until all are in the client's nftables set:
//!   handed to the client, and sent directly as before, in the same run.
//! - P14 P1 without the ban command: from starting `banshare-report` until each of 10 and
//!   100 clients has called its backend.
//! - P17 fan-out: a report to the last of 1,000, 5,000 and 10,000 lightweight subscribers,
//!   against a bare libzmq CURVE XPUB sending the same message to them (full run only).
//! - P18 a server with 100,000 bans and 3,500 lightweight hosts, stopped cleanly and
//!   started again: until every host is current, and peak memory; then, with a tenth of the
//!   hosts, stopped cleanly with reports meanwhile and killed, where every host reads the
//!   whole table again, and the reports' latency meanwhile (full run).

#[path = "../../tests/common/mod.rs"]
mod common;
mod crowd;
mod firewalls;
mod picture;
mod propagation;
mod results;
mod servers;
mod stampede;
mod throughput;

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use banshare::sockets::transport;
use banshare::wire::protocol::{Publish, Report, Verdict, VERSION};
use common::fail2ban::Fail2ban;
use common::*;
use serde_json::{json, Value};
use {
    crowd::*, firewalls::*, picture::*, propagation::*, results::*, servers::*, stampede::*,
    throughput::*,
};

/// Set in the re-executed benchmark, inside its own network namespace.
const IN_NETNS: &str = "BANSHARE_BENCH_NETNS";
/// Reports each long-lived reporter keeps in flight.
const WINDOW: usize = 256;
const REPORTERS: usize = 8;
const SUBSCRIBERS: usize = 10;
/// Longest wait for any single expected event before the ban counts as lost.
const LOST_AFTER: Duration = Duration::from_secs(30);

struct Sizes {
    p1_clients: &'static [usize],
    p1_reports: usize,
    p2_runs: usize,
    p3_reports: usize,
    p4_nftables: usize,
    p4_fail2ban: usize,
    p5_stages: &'static [usize],
    p6_bans: usize,
    p7_reports: usize,
    p8_subscribers: usize,
    p8_reports: usize,
    p9_bans: usize,
    p10_reports: usize,
    p11_bans: usize,
    p11_clients: usize,
    /// P15, a large list; 0 skips it.
    p15_bans: usize,
    p13_reports: usize,
    p14_clients: &'static [usize],
    p17_subscribers: &'static [usize],
    p17_rounds: usize,
    p18_hosts: usize,
}

const FULL: Sizes = Sizes {
    p10_reports: 50,
    p11_bans: 1000,
    p11_clients: 10,
    p15_bans: 100_000,
    p13_reports: 1000,
    p14_clients: &[10, 100],
    p1_clients: &[1, 10, 100],
    p1_reports: 100,
    p2_runs: 500,
    p3_reports: 200_000,
    p4_nftables: 10_000,
    p4_fail2ban: 10_000,
    p5_stages: &[100_000, 1_000_000],
    p6_bans: 100_000,
    p7_reports: 100,
    p8_subscribers: 1000,
    p8_reports: 100,
    p9_bans: 100_000,
    p17_subscribers: &[1000, 5000, 10_000],
    p17_rounds: 50,
    // Each host holds four descriptors in this process, which may hold 20,000.
    p18_hosts: 3500,
};

const QUICK: Sizes = Sizes {
    p10_reports: 20,
    p11_bans: 1000,
    p11_clients: 3,
    p15_bans: 0,
    p13_reports: 200,
    p14_clients: &[10],
    p1_clients: &[1, 10],
    p1_reports: 30,
    p2_runs: 50,
    p3_reports: 16_000,
    p4_nftables: 10_000,
    p4_fail2ban: 300,
    p5_stages: &[20_000],
    p6_bans: 20_000,
    p7_reports: 20,
    p8_subscribers: 200,
    p8_reports: 20,
    p9_bans: 20_000,
    p17_subscribers: &[],
    p17_rounds: 0,
    p18_hosts: 0,
};

fn main() {
    // `cargo bench` passes --bench; everything else is ours.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    match &args[..] {
        [floor, secret, io_threads] if floor == "--floor" => {
            return floor_main(Path::new(secret), io_threads.parse().unwrap());
        }
        [crowd, endpoint, server, list] if crowd == "--crowd" => {
            return crowd_main(endpoint, server, Path::new(list));
        }
        _ => {}
    }
    let quick = args.iter().any(|a| a == "--quick");
    let json_path = option(&args, "--json")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let name = if quick { "quick.json" } else { "full.json" };
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("target/bench")
                .join(name)
        });
    // /proc/self belongs to the effective user.
    let root = fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    if root && std::env::var_os(IN_NETNS).is_none() {
        std::process::exit(rerun_in_netns());
    }
    let firewall = std::env::var_os(IN_NETNS).is_some();
    if firewall {
        run(&["ip", "link", "set", "lo", "up"]);
    }
    let sizes = if quick { &QUICK } else { &FULL };
    // --only p1,p4: just those measures (P2 comes with P1, P6 with P5).
    let only = option(&args, "--only");
    let wanted = |measure: &str| {
        only.as_ref()
            .is_none_or(|o| o.split(',').any(|m| m == measure))
    };
    let mut results = Results::default();
    if wanted("p1") {
        propagation_and_reporter_cost(&mut results, sizes);
    }
    if wanted("p12") {
        reporter_phases(&mut results, sizes);
    }
    if wanted("p3") {
        throughput(&mut results, sizes);
    }
    if !firewall {
        results.skip("P4 and P6 need root, for a network namespace of their own");
    } else if wanted("p4") {
        burst_nftables(&mut results, sizes);
        burst_fail2ban(&mut results, sizes);
    }
    if firewall && wanted("p10") {
        nftables_latency(&mut results, sizes);
    }
    if firewall && wanted("p11") {
        import_to_every_firewall(&mut results, "p11", sizes.p11_bans, sizes.p11_clients);
    }
    if firewall && wanted("p15") && sizes.p15_bans > 0 {
        import_to_every_firewall(&mut results, "p15", sizes.p15_bans, sizes.p11_clients);
    }
    if firewall && wanted("p16") && sizes.p15_bans > 0 {
        feed_refresh_to_every_firewall(&mut results, 10_000, sizes.p11_clients);
    }
    if firewall && wanted("p13") {
        burst_of_reports(&mut results, sizes);
    }
    if wanted("p14") {
        fan_out_without_exec(&mut results, sizes);
    }
    if wanted("p5") {
        memory_and_catch_up(&mut results, sizes, firewall);
    }
    if wanted("p7") {
        propagation_two_servers(&mut results, sizes);
    }
    if wanted("p8") {
        fan_out(&mut results, sizes);
    }
    if wanted("p9") {
        catch_up_with_a_peer(&mut results, sizes);
    }
    if wanted("p17") {
        // --subscribers 1000,20000: other sizes for P17.
        let counts: Option<Vec<usize>> = option(&args, "--subscribers")
            .map(|list| list.split(',').map(|n| n.parse().unwrap()).collect());
        let counts = counts.as_deref().unwrap_or(sizes.p17_subscribers);
        fan_out_to_crowds(&mut results, counts, sizes.p17_rounds.max(10));
    }
    if wanted("p18") {
        // --hosts 10000 --bans 100000: other sizes for P18.
        let number = |name, default| option(&args, name).map_or(default, |n| n.parse().unwrap());
        let (hosts, bans) = (
            number("--hosts", sizes.p18_hosts),
            number("--bans", 100_000),
        );
        use nix::sys::signal::Signal;
        restart_with_crowd(&mut results, hosts, bans, &[(Signal::SIGTERM, false)]);
        // With reports meanwhile, or killed, every host reads the whole table again (the
        // reports published before it is back leave a gap): a tenth of the hosts.
        let again = [(Signal::SIGTERM, true), (Signal::SIGKILL, true)];
        restart_with_crowd(&mut results, hosts / 10, bans, &again);
    }
    results.finish(&json_path, quick);
}

/// The value after `--name` on the command line.
fn option(args: &[String], name: &str) -> Option<String> {
    let i = args.iter().position(|a| a == name)?;
    args.get(i + 1).cloned()
}

/// Runs this benchmark again in a new network namespace; returns its exit code.
fn rerun_in_netns() -> i32 {
    let status = Command::new("unshare")
        .arg("--net")
        .arg("--")
        .arg(std::env::current_exe().unwrap())
        .args(std::env::args().skip(1))
        .env(IN_NETNS, "1")
        .status()
        .expect("run unshare");
    status.code().unwrap_or(1)
}

/// Runs a command that must succeed and returns its standard output.
fn run(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Distinct addresses, `count` of them from `first` on: 10.0.0.1, 10.0.0.2, ...
fn addresses(first: usize, count: usize) -> Vec<String> {
    addresses_in(10, first, count)
}

/// `count` addresses in `octet`.0.0.0/8: a list's must be public, since a list may not ban
/// private space (src/protect.rs).
fn addresses_in(octet: u8, first: usize, count: usize) -> Vec<String> {
    (first + 1..=first + count)
        .map(|i| format!("{octet}.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255))
        .collect()
}
