//! A server that lies: it holds the fleet's server key, but publishes and pages whatever it
//! likes. The real banshare-client must apply only what its own checks allow, skip one bad
//! ban without losing the rest, and stay within its memory. And a peer server that lies:
//! the real banshare-server holds it to the same rules, and to what a peer may forward.

use crate::common;

use std::fs;
use std::time::Duration;

use banshare::clock::unix_now;
use banshare::sockets::transport;
use banshare::wire::keys::{self, KeyPair};
use common::servers::{admin_ok, table};
use common::*;

const EPOCH: &str = "1";

/// The rogue server: an XPUB and a ROUTER on the fleet's ports, with the server's key.
struct Rogue {
    _ctx: zmq::Context,
    publish: zmq::Socket,
    report: zmq::Socket,
    seq: u64,
}

impl Rogue {
    /// One host, web1, whose client (with `client_extra` in its config) has subscribed to
    /// the rogue server and heard where it stands.
    fn with_client(client_extra: &str) -> (Fleet, Rogue) {
        let mut fleet = Fleet::new(&["web1"], "", client_extra);
        let rogue = Rogue::start(&fleet);
        fleet.spawn_client(0);
        rogue.welcome();
        (fleet, rogue)
    }

    fn start(fleet: &Fleet) -> Rogue {
        let key = keys::load_secret(&fleet.keys_dir.join("server.key_secret")).unwrap();
        Rogue::bind(&key, fleet.publish_port, fleet.report_port)
    }

    /// The publish and report sockets of a server holding `key`, on these ports.
    fn bind(key: &KeyPair, publish_port: u16, report_port: u16) -> Rogue {
        let ctx = zmq::Context::new();
        let socket = |kind, port: u16| {
            let socket = ctx.socket(kind).unwrap();
            socket.set_curve_server(true).unwrap();
            socket.set_curve_secretkey(key.secret_bytes()).unwrap();
            socket.set_linger(0).unwrap();
            socket.set_sndhwm(0).unwrap();
            socket.bind(&format!("tcp://127.0.0.1:{port}")).unwrap();
            socket
        };
        let publish = socket(zmq::XPUB, publish_port);
        let report = socket(zmq::ROUTER, report_port);
        Rogue {
            _ctx: ctx,
            publish,
            report,
            seq: 0,
        }
    }

    /// Waits for the client's subscription, then tells it where the server stands.
    fn welcome(&self) {
        assert!(
            self.publish.poll(zmq::POLLIN, 10_000).unwrap() > 0,
            "no subscription"
        );
        self.publish.recv_bytes(0).unwrap();
        self.heartbeat();
    }

    fn heartbeat(&self) {
        let seq = self.seq.to_string();
        self.send(&["HEARTBEAT", EPOCH, &seq, "1000"]);
    }

    fn send(&self, fields: &[&str]) {
        let frames = std::iter::once("BANSHARE1").chain(fields.iter().copied());
        self.publish.send_multipart(frames, 0).unwrap();
    }

    /// Publishes a BAN with the next seq: `ban` is "ip prog jail origin bantime expires".
    fn ban(&mut self, ban: &str) {
        self.seq += 1;
        let seq = self.seq.to_string();
        let fields: Vec<&str> = ["BAN", EPOCH, &seq]
            .into_iter()
            .chain(ban.split(' '))
            .collect();
        self.send(&fields);
    }

    /// Publishes an UNBAN with the next seq: `ban` is its seven fields, `lifted` when.
    fn unban(&mut self, ban: &str, lifted: u64) {
        self.seq += 1;
        let (seq, lifted) = (self.seq.to_string(), lifted.to_string());
        let fields: Vec<&str> = ["UNBAN", EPOCH, &seq]
            .into_iter()
            .chain(ban.split(' '))
            .chain([lifted.as_str()])
            .collect();
        self.send(&fields);
    }

    /// Publishes one message of `frames` frames of 4,000 bytes, behind the tag that
    /// subscribers take: more frames than any banshare message has.
    fn flood(&self, frames: usize) {
        let frame = vec![b'x'; 4000];
        self.publish.send("BANSHARE1", zmq::SNDMORE).unwrap();
        for i in 0..frames {
            let more = if i + 1 < frames { zmq::SNDMORE } else { 0 };
            self.publish.send(&frame[..], more).unwrap();
        }
    }

    /// Answers the client's next snapshot request with one page holding `lines`.
    fn page(&self, lines: &[String]) {
        assert!(
            self.report.poll(zmq::POLLIN, 10_000).unwrap() > 0,
            "no snapshot request"
        );
        self.answer(lines);
    }

    /// Answers every snapshot request with one page holding `lines` until host 0 has
    /// applied `line`. A client that asked twice (its heartbeat timed out, then it
    /// reconnected) waits for the answer to its latest request only.
    fn serve_until_applied(&self, fleet: &Fleet, line: &str, lines: &[String]) {
        fleet.wait_logged(
            0,
            &format!("web1 to apply {line:?}"),
            Duration::from_secs(10),
            || {
                if self.report.poll(zmq::POLLIN, 50).unwrap() > 0 {
                    self.answer(lines);
                }
                fleet.applied(0).iter().any(|l| l == line).then_some(())
            },
        );
    }

    fn answer(&self, lines: &[String]) {
        let request = self.report.recv_multipart(0).unwrap();
        assert_eq!(texts(&request[2..]), ["BANSHARE1", "SNAPSHOT", ""]);
        let seq = self.seq.to_string();
        let head = [
            request[0].clone(),
            Vec::new(),
            b"BANSHARE1".to_vec(),
            b"SNAPSHOT".to_vec(),
            EPOCH.into(),
            seq.into_bytes(),
            Vec::new(),
        ];
        let page = head
            .into_iter()
            .chain(lines.iter().map(|l| l.clone().into_bytes()));
        self.report.send_multipart(page, 0).unwrap();
    }
}

/// A ban of `ip` that ends in an hour, as six fields.
fn fields(ip: &str, prog: &str, jail: &str) -> String {
    let expires = banshare::clock::unix_now() + 3600;
    format!("{ip} {prog} {jail} rogue 3600 {expires}")
}

/// The first non-loopback, non-link-local IPv4 address of this machine.
fn own_address() -> String {
    banshare::protect::local_addresses()
        .into_iter()
        .map(banshare::wire::cidr::Cidr::host)
        .find(|a| a.is_ipv4() && !a.addr().is_loopback() && !a.to_string().starts_with("169.254."))
        .expect("this test needs a machine with a non-loopback IPv4 address")
        .to_string()
}

#[test]
fn a_lying_server_gets_only_what_the_client_allows_applied() {
    let _turn = one_at_a_time();
    let (mut fleet, mut rogue) = Rogue::with_client("protected = [\"192.0.2.128/25\"]\n");
    let own = own_address();
    let expires = banshare::clock::unix_now() + 3600;
    // A page with one good ban among bad ones: each bad one is skipped, the page is used.
    let too_long = format!("203.0.113.2 f2b sshd rogue 316224001 {expires}");
    rogue.page(&[
        fields("203.0.113.1", "f2b", "sshd"),
        too_long,
        fields("203.0.113.3", "-rf", "sshd"),
        "garbage".into(),
        fields("203.0.113.4", "f2b", "--help"),
    ]);
    fleet.wait_applied(0, "ban f2b sshd 203.0.113.1 3600");
    // Published bans that no client may apply, then a good one after them all.
    for ip in [
        own.as_str(),
        "192.0.2.200",
        "192.0.2.0/24",
        "127.0.0.1",
        "64:ff9b::7f00:1",
        "64:ff9b::c000:2c8",
        "::ffff:0:c000:2c8",
        "2002:c000:2c8::/48",
        "::fffe:0:0/95",
        "64:ff9b::/104",
    ] {
        rogue.ban(&fields(ip, "f2b", "sshd"));
    }
    rogue.ban(&fields("203.0.113.5", "-rf", "sshd"));
    rogue.ban(&fields("203.0.113.6", "f2b", "sshd"));
    fleet.wait_applied(0, "ban f2b sshd 203.0.113.6 3600");
    std::thread::sleep(Duration::from_millis(200));
    let applied = fleet.applied(0);
    assert_eq!(
        applied,
        [
            "ban f2b sshd 203.0.113.1 3600",
            "ban f2b sshd 203.0.113.6 3600"
        ],
        "{}",
        fleet.client_log(0)
    );
    let log = fleet.client_log(0);
    let skipped = log.matches("skipped a ban in a snapshot page").count();
    assert_eq!(skipped, 4, "{log}");
    assert!(log.contains("not applying ban of 64:ff9b::7f00:1"), "{log}");
    assert!(
        log.contains(&format!(
            "not applying ban of {own} from rogue: {own} covers this host's"
        )),
        "{log}"
    );
    assert!(fleet.running(), "the client is still running");
}

/// A rogue server whose client applied one ban from it, 203.0.113.20.
fn rogue_with_a_ban_applied() -> (Fleet, Rogue) {
    let (fleet, mut rogue) = Rogue::with_client("");
    rogue.page(&[]);
    rogue.ban(&fields("203.0.113.20", "f2b", "sshd"));
    fleet.wait_applied(0, "ban f2b sshd 203.0.113.20 3600");
    (fleet, rogue)
}

/// Sends one whole message of 50,000 frames of 4,000 bytes (200 MB, below the memory
/// guard's limit, so that only how the daemon `pid` reads it decides what stays), waits
/// until `log` says it was read and ignored, and returns the daemon's resident memory
/// before, once it is back within 16 MB of that, and at its peak.
fn flood_below_the_guard(rogue: &Rogue, pid: i32, log: impl Fn() -> String) -> [f64; 3] {
    let before = rss_mb(pid);
    rogue.flood(50_000);
    wait_for("the message read", Duration::from_secs(30), || {
        log()
            .contains("ignored a message: a message of 50001 frames")
            .then_some(())
    });
    let peak = peak_mb(pid);
    let after = wait_for("the memory back", Duration::from_secs(5), || {
        let rss = rss_mb(pid);
        (rss < before + 16.0).then_some(rss)
    });
    [before, after, peak]
}

#[test]
fn a_lying_server_cannot_exhaust_a_clients_memory() {
    let _turn = one_at_a_time();
    let (mut fleet, rogue) = rogue_with_a_ban_applied();
    let pid = fleet.client_pid(0);
    let before = rss_mb(pid);
    // One message of 150,000 frames of 4,000 bytes: 600 MB, past the client's guard
    // (512 MiB without a cgroup limit), which closes its connections before it is whole.
    rogue.flood(150_000);
    wait_for("the client's memory guard", Duration::from_secs(30), || {
        fleet.client_log(0).contains("memory guard").then_some(())
    });
    // It reconnects and catches up.
    rogue.serve_until_applied(
        &fleet,
        "ban f2b sshd 203.0.113.21 3600",
        &[fields("203.0.113.21", "f2b", "sshd")],
    );
    wait_for("the memory back", Duration::from_secs(15), || {
        fleet
            .client_log(0)
            .contains("after freed memory was given back")
            .then_some(())
    });
    let (after, peak) = (rss_mb(pid), peak_mb(pid));
    eprintln!("client RSS: {before:.0} MB before, {after:.0} MB after, {peak:.0} MB at the peak");
    assert!(after < before + 32.0, "{before:.0} MB, then {after:.0} MB");
    assert!(peak < 512.0 + 300.0, "peak {peak:.0} MB");
    assert!(fleet.running(), "the client is still running");
}

/// A ban of `ip` as its seven fields: `bantime` seconds (or "-1"), ending at `expires` (0:
/// never), reported at `reported`.
fn ban7(ip: &str, bantime: &str, expires: u64, reported: u64) -> String {
    format!("{ip} f2b sshd rogue {bantime} {expires} {reported}")
}

#[test]
fn a_lying_server_can_neither_date_an_unban_next_year_nor_give_a_ban_an_end_without_end() {
    let _turn = one_at_a_time();
    let (mut fleet, mut rogue) = Rogue::with_client("");
    rogue.page(&[]);
    let now = unix_now();
    let next_year = now + 366 * 86400;
    // An unban dated next year: taken, it would keep the host from banning 203.0.113.40
    // until then, after restarts too.
    rogue.unban(&ban7("203.0.113.40", "600", now + 600, now), next_year);
    // A ban dated next year, which no honest unban could lift; and ends that their
    // bantime does not explain, the first of which nftables refuses for ever.
    rogue.ban(&ban7("203.0.113.41", "600", next_year + 600, next_year));
    rogue.ban(&ban7("203.0.113.42", "600", u64::MAX, now));
    rogue.ban(&ban7("203.0.113.43", "600", now + 100 * 366 * 86400, now));
    rogue.ban(&ban7("203.0.113.44", "-1", now + 600, now));
    rogue.ban(&ban7("203.0.113.40", "600", now + 600, now));
    fleet.wait_applied(0, "ban f2b sshd 203.0.113.40 600");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(fleet.applied(0), ["ban f2b sshd 203.0.113.40 600"]);
    let log = fleet.client_log(0);
    for line in [
        "not lifting 203.0.113.40 from rogue: it is dated",
        "not applying ban of 203.0.113.41 from rogue: it is dated",
        "not applying ban of 203.0.113.42 from rogue: it ends at 18446744073709551615",
        "not applying ban of 203.0.113.43 from rogue: it ends at",
        "not applying ban of 203.0.113.44 from rogue: a permanent ban cannot end",
    ] {
        assert!(log.contains(line), "{line:?} not in {log}");
    }
    assert!(fleet.running(), "the client is still running");
}

#[test]
fn a_lying_servers_message_of_50000_frames_leaves_no_memory_behind() {
    let _turn = one_at_a_time();
    let (mut fleet, mut rogue) = rogue_with_a_ban_applied();
    let [before, after, peak] =
        flood_below_the_guard(&rogue, fleet.client_pid(0), || fleet.client_log(0));
    eprintln!("client RSS: {before:.0} MB before, {after:.0} MB after, {peak:.0} MB at the peak");
    assert!(!fleet
        .client_log(0)
        .contains("memory guard: the client held"));
    rogue.ban(&fields("203.0.113.31", "f2b", "sshd"));
    fleet.wait_applied(0, "ban f2b sshd 203.0.113.31 3600");
    assert!(fleet.running(), "the client is still running");
}

/// A peer server that lies: `bs9`, in server.toml's `peers` and its key authorized, whose
/// sockets the test holds. Returns the fleet with its server running and caught up with
/// the rogue, the rogue, and the rogue's key pair.
fn with_rogue_peer(names: &[&str], server_extra: &str) -> (Fleet, Rogue, KeyPair) {
    let mut fleet = Fleet::new(names, server_extra, "");
    let (public, secret) = keys::generate(&fleet.keys_dir, "bs9", false).unwrap();
    fs::copy(&public, fleet.auth_dir.join("bs9.key")).unwrap();
    let (report_port, publish_port) = (free_port(), free_port());
    let peer = format!(
        "\n[[peers]]\naddress = \"127.0.0.1\"\nreport-port = {report_port}\n\
         publish-port = {publish_port}\nkey = \"{}\"\n",
        public.display()
    );
    let config = read(&fleet.server_config) + &peer;
    fs::write(&fleet.server_config, config).unwrap();
    let key = keys::load_secret(&secret).unwrap();
    let rogue = Rogue::bind(&key, publish_port, report_port);
    fleet.start_server();
    rogue.welcome();
    rogue.page(&[]);
    (fleet, rogue, key)
}

/// Sends `line` to the server as a FORWARD from the rogue peer's key: the verdict.
fn forward(fleet: &Fleet, key: &KeyPair, line: &str) -> Vec<String> {
    let ctx = zmq::Context::new();
    let socket = transport::client_socket(&ctx, zmq::DEALER, &fleet.server_key(), key).unwrap();
    socket
        .connect(&format!("tcp://127.0.0.1:{}", fleet.report_port))
        .unwrap();
    let request: [&[u8]; 4] = [b"", b"BANSHARE1", b"FORWARD", line.as_bytes()];
    socket.send_multipart(request, 0).unwrap();
    assert!(socket.poll(zmq::POLLIN, 5000).unwrap() > 0, "no verdict");
    texts(&socket.recv_multipart(0).unwrap()[1..])
}

/// The server's reports waiting for `ip`, as `banshare bans --pending` lists them.
fn waiting_for(fleet: &Fleet, ip: &str) -> Vec<serde_json::Value> {
    let pending: Vec<serde_json::Value> =
        serde_json::from_str(&admin_ok(fleet, &["bans", "--pending", "--json"])).unwrap();
    let set = pending.iter().find(|p| p["ip"] == ip);
    set.map_or_else(Vec::new, |p| p["reports"].as_array().unwrap().clone())
}

#[test]
fn a_lying_peer_can_date_nothing_far_ahead_nor_give_an_end_its_bantime_does_not_explain() {
    let _turn = one_at_a_time();
    let (mut fleet, mut rogue, _) = with_rogue_peer(&["web1"], "");
    fleet.start_client(0);
    let now = unix_now();
    let next_year = now + 366 * 86400;
    rogue.unban(&ban7("203.0.113.60", "600", now + 600, now), next_year);
    rogue.ban(&ban7("203.0.113.61", "600", next_year + 600, next_year));
    rogue.ban(&ban7("203.0.113.62", "600", u64::MAX, now));
    rogue.ban(&ban7("203.0.113.63", "-1", now + 600, now));
    rogue.ban(&ban7("203.0.113.64", "600", now + 600, now));
    fleet.wait_applied(0, "ban f2b sshd 203.0.113.64 600");
    let bans = table(&fleet);
    assert_eq!(
        bans.keys().collect::<Vec<_>>(),
        ["203.0.113.64"],
        "{bans:?}"
    );
    let log = fleet.server_log();
    for line in [
        "peer bs9: ignored the unban of 203.0.113.60: it is dated",
        "peer bs9: ignored the ban of 203.0.113.61: it is dated",
        "peer bs9: ignored the ban of 203.0.113.62: it ends at 18446744073709551615",
        "peer bs9: ignored the ban of 203.0.113.63: a permanent ban cannot end",
    ] {
        assert!(log.contains(line), "{line:?} not in {log}");
    }
    // The unban dated next year lifts nothing reported now.
    let (code, stderr) = outcome(&fleet.report(0, &["fail2ban", "sshd", "203.0.113.60"]));
    assert_eq!(code, 0, "{stderr}");
    fleet.wait_applied(0, "ban fail2ban sshd 203.0.113.60 86400");
    assert!(fleet.running());
}

#[test]
fn a_peer_forwards_only_one_report_of_a_key_authorized_here_and_not_for_long() {
    let _turn = one_at_a_time();
    let server = "min-reporters = 2\nconfirm-window = \"1h\"\n";
    let (mut fleet, _rogue, key) = with_rogue_peer(&["web1", "web2"], server);
    let now = unix_now();
    let line = |ip: &str, who: &str, at: u64, until: u64, key: Option<&str>| {
        let key = key.map_or(String::new(), |k| format!("/{k}"));
        format!("{ip} {who}/{at}/{until}/fail2ban/sshd/600/waiting{key}")
    };
    let web1 = fleet.host_key("web1").public.hex();
    let web2 = fleet.host_key("web2").public.hex();
    let stranger = KeyPair::generate().unwrap().public.hex();
    let verdict = |text: &str| forward(&fleet, &key, text);
    // Names and keys that do not exist here.
    let refused = verdict(&line("203.0.113.70", "ghost", now, now + 60, None));
    assert_eq!(refused[1], "REFUSED", "{refused:?}");
    assert!(refused[2].contains("no key named ghost"), "{refused:?}");
    let refused = verdict(&line(
        "203.0.113.70",
        "web1",
        now,
        now + 60,
        Some(&stranger),
    ));
    assert!(refused[2].contains("is not authorized here"), "{refused:?}");
    // Dated next year, or two reports in one.
    let ahead = verdict(&line(
        "203.0.113.70",
        "web1",
        now + 366 * 86400,
        now + 60,
        Some(&web1),
    ));
    assert!(ahead[2].contains("ahead"), "{ahead:?}");
    let two = format!(
        "{},web2/{now}/{}/fail2ban/sshd/600/waiting",
        line("203.0.113.70", "web1", now, now + 60, Some(&web1)),
        now + 60
    );
    assert_eq!(verdict(&two)[1], "REFUSED");
    // web1's key, under the name "webone" on the peer, then web1 itself: one key, and
    // it waits as web1, until no later than this server's confirm-window.
    let alias = verdict(&line(
        "203.0.113.71",
        "webone",
        now,
        now + 10 * 366 * 86400,
        Some(&web1),
    ));
    assert_eq!(alias[1], "PENDING", "{alias:?}");
    let (code, stderr) = outcome(&fleet.report(0, &["fail2ban", "sshd", "203.0.113.71"]));
    assert_eq!(code, 0, "{stderr}");
    let reports = waiting_for(&fleet, "203.0.113.71");
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert_eq!(reports[0]["name"], "web1");
    let forwarded = verdict(&line(
        "203.0.113.72",
        "web2",
        now,
        now + 10 * 366 * 86400,
        Some(&web2),
    ));
    assert_eq!(forwarded[1], "PENDING", "{forwarded:?}");
    let until = waiting_for(&fleet, "203.0.113.72")[0]["until"]
        .as_u64()
        .unwrap();
    assert!(until <= now + 3600, "kept until {until}, now {now}");
    // The rogue is no longer a peer: what it forwarded no longer waits, web1's own does.
    fleet.signal_server(nix::sys::signal::Signal::SIGTERM);
    fleet.wait_server();
    let config = read(&fleet.server_config);
    let own = config.split("\n[[peers]]").next().unwrap().to_string();
    fs::write(&fleet.server_config, own).unwrap();
    fleet.start_server();
    assert!(waiting_for(&fleet, "203.0.113.72").is_empty());
    assert_eq!(waiting_for(&fleet, "203.0.113.71").len(), 1);
    assert!(fleet.running());
}

#[test]
fn a_peers_unbans_of_networks_never_banned_are_kept_a_day_at_most() {
    let _turn = one_at_a_time();
    let (mut fleet, mut rogue, _) = with_rogue_peer(&["web1"], "");
    let now = unix_now();
    // Permanent bans this server never had, lifted: kept for ever before.
    for i in 0..5_000u32 {
        let ip = format!("2001:db8:{:x}::/64", i + 1);
        rogue.unban(&ban7(&ip, "-1", 0, now), now);
    }
    let journal = fleet.dir.path().join("server-state/bans.journal");
    let unbans = || -> Vec<u64> {
        read(&journal)
            .lines()
            .filter_map(|l| l.split(' ').nth(1).filter(|v| *v == "unban").map(|_| l))
            .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
            .collect()
    };
    wait_for("5,000 unbans journaled", Duration::from_secs(60), || {
        (unbans().len() == 5_000).then_some(())
    });
    let day = now + 86_400;
    assert!(unbans()
        .iter()
        .all(|&until| until != 0 && until <= day + 60));
    // Read back as kept, after a restart.
    fleet.signal_server(nix::sys::signal::Signal::SIGTERM);
    fleet.wait_server();
    fleet.start_server();
    assert!(unbans()
        .iter()
        .all(|&until| until != 0 && until <= day + 60));
}

#[test]
fn a_lying_peers_message_of_50000_frames_leaves_no_memory_behind() {
    let _turn = one_at_a_time();
    let (mut fleet, mut rogue, _) = with_rogue_peer(&["web1"], "");
    let [before, after, peak] =
        flood_below_the_guard(&rogue, fleet.server_pid(), || fleet.server_log());
    eprintln!("server RSS: {before:.0} MB before, {after:.0} MB after, {peak:.0} MB at the peak");
    rogue.ban(&fields("203.0.113.80", "f2b", "sshd"));
    wait_for("the peer's ban", Duration::from_secs(5), || {
        table(&fleet).contains_key("203.0.113.80").then_some(())
    });
    assert!(fleet.running());
}
