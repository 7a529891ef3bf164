//! Several servers (docs/ha.md): P7 propagation through two peered servers against one,
//! P8 fan-out to 1,000 lightweight subscribers from one server and from a core server with
//! two regional ones, P9 the catch-up of a server that was down, with 100,000 bans.

use banshare::wire::keys::{self, KeyPair, PublicKey};
use common::servers::*;

use super::*;

fn local(_: usize) -> String {
    "127.0.0.1".into()
}

/// Two peered servers and `clients` clients that follow both, their ban command `logger`
/// to the benchmark's socket.
fn two_server_fleet(clients: usize, applied: &Applied) -> Vec<Fleet> {
    let mut fleets = peered(2, "", local);
    for i in 1..clients {
        fleets[0].add_host(&format!("h{i}"), "");
    }
    follow_every_server(&fleets, local);
    for (i, host) in fleets[0].hosts.iter().enumerate() {
        let command = format!(
            "'/usr/bin/logger -u {} -d -- {i} <ip>'",
            applied.socket.display()
        );
        set_line(&host.config, "ban-command", &command);
    }
    for fleet in &mut fleets {
        fleet.start_server();
    }
    for i in 0..clients {
        fleets[0].start_client(i);
    }
    fleets
}

/// P7: report to every client's ban command, through one server and through two peered
/// servers that every client follows, in alternation in the same run.
pub fn propagation_two_servers(results: &mut Results, sizes: &Sizes) {
    let clients = 10;
    let (one, applied_one) = command_fleet(clients);
    let dir = tempfile::tempdir().unwrap();
    let applied_two = Applied::listen(dir.path());
    let two = two_server_fleet(clients, &applied_two);
    let mut ips = addresses(700_000, 2 * sizes.p7_reports + 2).into_iter();
    let mut samples = [Vec::new(), Vec::new()];
    for round in 0..=sizes.p7_reports {
        for (k, (fleet, applied)) in [(&one, &applied_one), (&two[0], &applied_two)]
            .into_iter()
            .enumerate()
        {
            let ip = ips.next().unwrap();
            let started = Instant::now();
            report(fleet, &ip);
            let times = applied.wait(&ip, clients, started);
            // The first round only warms every connection up.
            if round > 0 {
                samples[k].extend(times);
            }
        }
    }
    let [one_server, two_servers] = samples;
    let (p50_one, ..) = percentiles(&one_server);
    let (p50_two, ..) = percentiles(&two_servers);
    results.latency(
        "p7_propagation_one_server",
        format!("P7 propagation, {clients} clients, one server"),
        &one_server,
        "",
    );
    results.latency(
        "p7_propagation_two_servers",
        format!("P7 propagation, {clients} clients following two peered servers"),
        &two_servers,
        "median within 1.2x of one server",
    );
    results.add(
        "p7_ratio",
        "P7 median, two servers / one".into(),
        format!("{:.2}x", p50_two / p50_one),
        "≤ 1.2x",
        json!(p50_two / p50_one),
    );
}

/// In-process subscribers, each with a key of its own: a poll over their sockets, which
/// stamps when each one got the BAN of an address.
struct Subscribers {
    _ctx: zmq::Context,
    sockets: Vec<zmq::Socket>,
}

/// `count` key pairs, authorized on `fleet`'s server before it starts.
pub fn authorize(fleet: &Fleet, count: usize, tag: &str) -> Vec<KeyPair> {
    let dir = tempfile::tempdir().unwrap();
    let secrets = authorize_files(fleet, count, tag, dir.path());
    secrets
        .iter()
        .map(|secret| keys::load_secret(secret).unwrap())
        .collect()
}

/// `count` key pairs in `dir`, authorized on `fleet`'s server before it starts: their
/// secret key files.
pub fn authorize_files(fleet: &Fleet, count: usize, tag: &str, dir: &Path) -> Vec<PathBuf> {
    (0..count)
        .map(|i| {
            let name = format!("{tag}{i}");
            let (public, secret) = keys::generate(dir, &name, false).unwrap();
            fs::copy(&public, fleet.auth_dir.join(format!("{name}.key"))).unwrap();
            secret
        })
        .collect()
}

impl Subscribers {
    /// A subscriber to `fleet`'s server for each key.
    fn connect(fleet: &Fleet, keys: &[KeyPair]) -> Subscribers {
        let ctx = zmq::Context::new();
        ctx.set_io_threads(4).unwrap();
        let server: PublicKey = fleet.server_key();
        let sockets = keys
            .iter()
            .map(|own| {
                let socket = transport::client_socket(&ctx, zmq::SUB, &server, own).unwrap();
                socket.set_subscribe(VERSION.as_bytes()).unwrap();
                socket
                    .connect(&format!("tcp://127.0.0.1:{}", fleet.publish_port))
                    .unwrap();
                socket
            })
            .collect();
        Subscribers { _ctx: ctx, sockets }
    }

    /// Waits until every subscriber in `groups` got the BAN of `ip`; the time the last one
    /// got it, since `started`.
    fn wait_all(groups: &[&Subscribers], ip: &str, started: Instant) -> Duration {
        let sockets: Vec<&zmq::Socket> = groups.iter().flat_map(|g| g.sockets.iter()).collect();
        let mut pending: Vec<bool> = vec![true; sockets.len()];
        let mut left = sockets.len();
        let deadline = Instant::now() + LOST_AFTER;
        while left > 0 {
            assert!(
                Instant::now() < deadline,
                "lost: {ip} reached {} of {}",
                sockets.len() - left,
                sockets.len()
            );
            let mut items: Vec<zmq::PollItem> = sockets
                .iter()
                .map(|s| s.as_poll_item(zmq::POLLIN))
                .collect();
            zmq::poll(&mut items, 100).unwrap();
            let ready: Vec<usize> = (0..items.len())
                .filter(|&i| items[i].is_readable())
                .collect();
            for i in ready {
                while let Ok(frames) = sockets[i].recv_multipart(zmq::DONTWAIT) {
                    let got = matches!(Publish::decode(&frames), Ok((_, Publish::Ban { ban, .. })) if ban.ip.to_string() == ip);
                    if got && pending[i] {
                        pending[i] = false;
                        left -= 1;
                    }
                }
            }
        }
        started.elapsed()
    }

    /// Waits until every one is connected: each gets a heartbeat.
    fn wait_connected(groups: &[&Subscribers]) {
        for group in groups {
            for socket in &group.sockets {
                assert!(
                    socket.poll(zmq::POLLIN, 30_000).unwrap() > 0,
                    "a subscriber never connected"
                );
                while socket.recv_multipart(zmq::DONTWAIT).is_ok() {}
            }
        }
    }
}

/// P8: report until the last of 1,000 subscribers has the BAN: all on one server, then
/// split over two regional servers that peer with a core server, which takes the reports.
pub fn fan_out(results: &mut Results, sizes: &Sizes) {
    let count = sizes.p8_subscribers;
    raise_file_limit(3 * count as u64 + 1024);
    let mut ips = addresses(800_000, 2 * sizes.p8_reports + 2).into_iter();
    // One server.
    let mut alone = Fleet::new(&["h0"], "", "");
    let keys = authorize(&alone, count, "s");
    alone.start_server();
    let subscribers = Subscribers::connect(&alone, &keys);
    Subscribers::wait_connected(&[&subscribers]);
    let samples = fan_out_rounds(&alone, &[&subscribers], &mut ips, sizes.p8_reports);
    results.latency(
        "p8_fan_out_one_server",
        format!("P8 report to the last of {count} subscribers, one server"),
        &samples,
        "p99 ≤ 100 ms",
    );
    drop(subscribers);
    drop(alone);
    // A core server, which takes the reports, and two regional ones with half each.
    let mut fleets = peered(3, "", local);
    let keys = [
        authorize(&fleets[1], count / 2, "r1s"),
        authorize(&fleets[2], count - count / 2, "r2s"),
    ];
    for fleet in &mut fleets {
        fleet.start_server();
    }
    let halves = [
        Subscribers::connect(&fleets[1], &keys[0]),
        Subscribers::connect(&fleets[2], &keys[1]),
    ];
    let groups: Vec<&Subscribers> = halves.iter().collect();
    Subscribers::wait_connected(&groups);
    let samples = fan_out_rounds(&fleets[0], &groups, &mut ips, sizes.p8_reports);
    results.latency(
        "p8_fan_out_regional",
        format!("P8 report to the last of {count} subscribers, core server and two regional"),
        &samples,
        "p99 ≤ 100 ms",
    );
}

fn fan_out_rounds(
    reported_to: &Fleet,
    groups: &[&Subscribers],
    ips: &mut impl Iterator<Item = String>,
    rounds: usize,
) -> Vec<Duration> {
    (0..=rounds)
        .filter_map(|round| {
            let ip = ips.next().unwrap();
            let started = Instant::now();
            report(reported_to, &ip);
            let took = Subscribers::wait_all(groups, &ip, started);
            // The first round only warms every connection up.
            (round > 0).then_some(took)
        })
        .collect()
}

/// 1,000 subscribers need more descriptors than the usual soft limit of 1024, here and in
/// the servers this starts: at least `needed`, past the hard limit if root may. Whether
/// there are that many.
pub fn raise_file_limit(needed: u64) -> bool {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    let wanted = hard.max(needed);
    if setrlimit(Resource::RLIMIT_NOFILE, wanted, wanted).is_ok() {
        return true;
    }
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    hard >= needed
}

/// P9: a server that was down comes back with 100,000 bans in its journal, its peer holding
/// those and 1,000 more: from its start until it has read its peer's whole table.
pub fn catch_up_with_a_peer(results: &mut Results, sizes: &Sizes) {
    let bans = sizes.p9_bans;
    let mut fleets = peered(2, "durability = \"write\"", local);
    fleets[0].preload(bans + 1000);
    fleets[1].preload(bans);
    fleets[0].start_server();
    let started = Instant::now();
    fleets[1].start_server();
    wait_synced(&fleets[1]);
    let took = started.elapsed();
    let active = status(&fleets[1])["active_bans"].as_u64().unwrap() as usize;
    assert_eq!(
        active,
        bans + 1000,
        "the server that was down holds every ban"
    );
    results.add(
        "p9_peer_catch_up_s",
        format!("P9 a server down with {bans} bans, from start to caught up with its peer"),
        format!("{:.2} s", took.as_secs_f64()),
        "≤ 3 s",
        json!(took.as_secs_f64()),
    );
}
