//! P3: long-lived reporters and subscribers.

use super::*;

/// What the server answered.
#[derive(Default, Debug, Clone, Copy)]
pub struct Tally {
    accepted: usize,
    other: usize,
}

/// Sends each address as a report from `host` over one CURVE connection, keeping up to
/// WINDOW in flight, and counts the verdicts.
pub fn inject(fleet: &Fleet, host: usize, ips: &[String]) -> Tally {
    let ctx = zmq::Context::new();
    let key = fleet.host_key(&fleet.hosts[host].name);
    let socket = transport::client_socket(&ctx, zmq::DEALER, &fleet.server_key(), &key).unwrap();
    socket
        .connect(&format!("tcp://127.0.0.1:{}", fleet.report_port))
        .unwrap();
    let mut tally = Tally::default();
    let mut sent = 0;
    while tally.accepted + tally.other < ips.len() {
        while sent < ips.len() && sent - (tally.accepted + tally.other) < WINDOW {
            let report = Report::parse("bench", "bench", &ips[sent], "").unwrap();
            // The empty frame stands in for the delimiter a REQ socket would add.
            let frames = std::iter::once(Vec::new()).chain(report.encode());
            socket.send_multipart(frames, 0).unwrap();
            sent += 1;
        }
        if socket
            .poll(zmq::POLLIN, LOST_AFTER.as_millis() as i64)
            .unwrap()
            == 0
        {
            panic!(
                "lost: no answer to {} reports",
                sent - tally.accepted - tally.other
            );
        }
        while let Ok(frames) = socket.recv_multipart(zmq::DONTWAIT) {
            match Verdict::decode(&frames[1..]) {
                Ok(Verdict::Accepted) => tally.accepted += 1,
                _ => tally.other += 1,
            }
        }
    }
    tally
}

/// Reports `ips` from hosts 0..REPORTERS at once; returns the time it took.
pub fn inject_parallel(fleet: &Fleet, ips: &[String]) -> Duration {
    let started = Instant::now();
    let chunk = ips.len().div_ceil(REPORTERS);
    let tallies: Vec<Tally> = std::thread::scope(|scope| {
        let workers: Vec<_> = ips
            .chunks(chunk)
            .enumerate()
            .map(|(host, part)| scope.spawn(move || inject(fleet, host, part)))
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let took = started.elapsed();
    let accepted: usize = tallies.iter().map(|t| t.accepted).sum();
    assert_eq!(
        accepted,
        ips.len(),
        "every distinct report is accepted: {tallies:?}"
    );
    took
}

/// A subscriber on host `host`'s key that counts published bans until it has `expected`,
/// or until none has come for a while after `done` is set.
pub fn subscribe<'a>(
    fleet: &Fleet,
    host: usize,
    expected: usize,
    ready: mpsc::Sender<()>,
    done: &'a AtomicBool,
) -> impl FnOnce() -> usize + 'a {
    let ctx = zmq::Context::new();
    let key = fleet.host_key(&fleet.hosts[host].name);
    let socket = transport::client_socket(&ctx, zmq::SUB, &fleet.server_key(), &key).unwrap();
    socket.set_subscribe(VERSION.as_bytes()).unwrap();
    socket
        .connect(&format!("tcp://127.0.0.1:{}", fleet.publish_port))
        .unwrap();
    move || {
        let _ctx = ctx;
        let (mut bans, mut last_ban) = (0, Instant::now());
        let mut announced = false;
        while bans < expected
            && !(done.load(Ordering::Relaxed) && last_ban.elapsed() > Duration::from_secs(2))
        {
            if socket.poll(zmq::POLLIN, 100).unwrap() == 0 {
                continue;
            }
            let frames = socket.recv_multipart(0).unwrap();
            match Publish::decode(&frames) {
                Ok((_, Publish::Ban { .. })) => (bans, last_ban) = (bans + 1, Instant::now()),
                // The server greets each new subscriber with a heartbeat.
                Ok((_, Publish::Heartbeat { .. })) if !announced => {
                    announced = true;
                    let _ = ready.send(());
                }
                _ => {}
            }
        }
        bans
    }
}

/// Active bans on the fleet's server, from `banshare status`.
pub fn active_bans(fleet: &Fleet) -> Value {
    let status = fleet.admin(&["status", "--json"]);
    serde_json::from_slice::<Value>(&status.stdout).unwrap()["active_bans"].clone()
}

pub fn throughput(results: &mut Results, sizes: &Sizes) {
    let names: Vec<String> = (0..REPORTERS + SUBSCRIBERS)
        .map(|i| format!("h{i}"))
        .collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut fleet = Fleet::new(&names, "", "");
    fleet.start_server();
    let ips = addresses(0, sizes.p3_reports);
    let done = AtomicBool::new(false);
    let (took, received) = std::thread::scope(|scope| {
        let (ready, subscribed) = mpsc::channel();
        let subscribers: Vec<_> = (REPORTERS..REPORTERS + SUBSCRIBERS)
            .map(|host| scope.spawn(subscribe(&fleet, host, ips.len(), ready.clone(), &done)))
            .collect();
        for _ in 0..SUBSCRIBERS {
            subscribed
                .recv_timeout(LOST_AFTER)
                .expect("subscribers join");
        }
        let took = inject_parallel(&fleet, &ips);
        done.store(true, Ordering::Relaxed);
        let received: Vec<usize> = subscribers.into_iter().map(|s| s.join().unwrap()).collect();
        (took, received)
    });
    // Acknowledged means recorded: a subscriber that fell behind reads the rest from a
    // snapshot of these.
    assert_eq!(active_bans(&fleet), json!(ips.len()), "lost by the server");
    let rate = ips.len() as f64 / took.as_secs_f64();
    let least = received.iter().min().copied().unwrap_or(0);
    results.add(
        "p3_throughput",
        format!(
            "P3 accepted reports/s, {REPORTERS} reporters, {SUBSCRIBERS} subscribers ({} reports)",
            ips.len()
        ),
        format!(
            "{rate:.0}/s; the slowest subscriber got {:.0}% live",
            100.0 * least as f64 / ips.len() as f64
        ),
        "≥ 20,000/s",
        json!({"reports": ips.len(), "seconds": took.as_secs_f64(), "per_second": rate,
               "received_live_by_each_subscriber": received}),
    );
}
