//! A server that lies: it holds the fleet's server key, but publishes and pages whatever it
//! likes. The real banshare-client must apply only what its own checks allow, skip one bad
//! ban without losing the rest, and stay within its memory.

mod common;

use std::time::Duration;

use banshare::wire::keys;
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
        let ctx = zmq::Context::new();
        let key = keys::load_secret(&fleet.keys_dir.join("server.key_secret")).unwrap();
        let socket = |kind, port: u16| {
            let socket = ctx.socket(kind).unwrap();
            socket.set_curve_server(true).unwrap();
            socket.set_curve_secretkey(key.secret_bytes()).unwrap();
            socket.set_linger(0).unwrap();
            socket.set_sndhwm(0).unwrap();
            socket.bind(&format!("tcp://127.0.0.1:{port}")).unwrap();
            socket
        };
        let publish = socket(zmq::XPUB, fleet.publish_port);
        let report = socket(zmq::ROUTER, fleet.report_port);
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

#[test]
fn a_lying_server_cannot_exhaust_a_clients_memory() {
    let _turn = one_at_a_time();
    let (mut fleet, mut rogue) = Rogue::with_client("");
    rogue.page(&[]);
    rogue.ban(&fields("203.0.113.20", "f2b", "sshd"));
    fleet.wait_applied(0, "ban f2b sshd 203.0.113.20 3600");
    let pid = fleet.client_pid(0);
    let before = rss_mb(pid);
    // One message of 150,000 frames of 4,000 bytes: 600 MB, past the client's guard
    // (512 MiB without a cgroup limit), which closes its connections before it is whole.
    let frame = vec![b'x'; 4000];
    // Behind the tag that the client subscribes to.
    rogue.publish.send("BANSHARE1", zmq::SNDMORE).unwrap();
    for i in 0..150_000 {
        let more = if i + 1 < 150_000 { zmq::SNDMORE } else { 0 };
        rogue.publish.send(&frame[..], more).unwrap();
    }
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
            .contains("after the memory of closed connections was given back")
            .then_some(())
    });
    let (after, peak) = (rss_mb(pid), peak_mb(pid));
    eprintln!("client RSS: {before:.0} MB before, {after:.0} MB after, {peak:.0} MB at the peak");
    assert!(after < before + 32.0, "{before:.0} MB, then {after:.0} MB");
    assert!(peak < 512.0 + 300.0, "peak {peak:.0} MB");
    assert!(fleet.running(), "the client is still running");
}
