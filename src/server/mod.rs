//! banshare-server: receives reports on a ROUTER socket, checks and de-duplicates them, and
//! publishes accepted bans on an XPUB socket.

pub mod limits;
pub mod listener;
pub mod table;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::cli::{self, ServerArgs};
use crate::config::ServerConfig;
use crate::daemon::memory;
use crate::daemon::service::{self, Signals, Watchdog};
use crate::daemon::worker::Worker;
use crate::exit::{Exit, Failure};
use crate::logging::LogLimit;
use crate::protect::{Protected, LOCAL_REFRESH};
use crate::server::limits::RateLimits;
use crate::server::listener::Listener;
use crate::server::table::{unix_now, BanTable, Recorded};
use crate::store::{Store, StoreError, SERVER_JOURNAL};
use crate::wire::cidr::{printable, Cidr};
use crate::wire::control::{self, Command};
use crate::wire::keys::{self, KeyPair, PublicKey};
use crate::wire::protocol::{
    decode_request, Ban, Name, Publish, Report, Request, SnapshotPage, Verdict, MAX_REQUEST_FRAMES,
    PAGE,
};
use crate::wire::transport::{self, endpoint, Authorizer, Received};

/// Requests handled before the loop looks at timers and signals again.
const BATCH: usize = 256;
/// The longest a subscriber waits, after bans were published, for the heartbeat that
/// tells it the latest sequence number.
const AFTER_PUBLISH: Duration = Duration::from_millis(100);
/// The longest the loop sleeps, which bounds how late a signal is noticed.
const TICK: Duration = Duration::from_millis(100);
/// How long a key that broke the protocol's shape is refused.
const CUT_OFF: Duration = Duration::from_secs(15 * 60);
/// Frames before a request on the report socket: the peer's routing id, and the empty
/// delimiter that REQ sockets add.
const ENVELOPE: usize = 2;
/// Invalid requests a key may send at once, and a minute after that; further ones are
/// dropped unanswered.
const INVALID_BURST: u32 = 60;
const INVALID_RATE: u32 = 60;
/// The subscriptions a subscriber may send: `BANSHARE1`, and its cancellation.
const SUBSCRIBE: &[u8] = b"\x01BANSHARE1";
const UNSUBSCRIBE: &[u8] = b"\x00BANSHARE1";

pub fn main() -> std::process::ExitCode {
    let args: ServerArgs = cli::parse();
    service::run_daemon(
        "banshare-server",
        args.log,
        || ServerConfig::load(&args.config).map_err(|e| (Exit::Config, e.to_string())),
        |config| config.log_level,
        |config, signals| {
            let mut server = Server::start(&args.config, config)?;
            service::ready(&server.describe());
            log::info!("{}", server.describe());
            server.serve(signals)
        },
    )
}

/// The store cannot make reports durable: stop without acknowledging anything more, and let
/// systemd restart us; reporters spool meanwhile, and the journal on disk stays the truth.
fn store_failure(e: StoreError) -> Failure {
    (Exit::IoErr, format!("cannot write the ban table: {e}"))
}

fn zmq_failure(what: &str) -> impl Fn(zmq::Error) -> Failure + '_ {
    move |e| (Exit::Software, format!("{what}: {e}"))
}

struct Server {
    config_path: std::path::PathBuf,
    config: ServerConfig,
    key: KeyPair,
    ctx: zmq::Context,
    auth: Authorizer,
    /// The ZAP handler's thread, without which the server must not go on.
    zap: Worker,
    report: Listener,
    publish: Listener,
    /// The built-in and configured networks and this host's own addresses, read again
    /// every LOCAL_REFRESH.
    protected: Protected,
    protected_at: Instant,
    table: BanTable,
    store: Store,
    control: zmq::Socket,
    counters: Counters,
    /// Per key: reports, snapshot pages, and invalid requests.
    limits: RateLimits,
    snapshot_limits: RateLimits,
    invalid_limits: RateLimits,
    log_limit: LogLimit,
    /// Set when a key was cut off: every connection is closed after the batch, which ends
    /// that key's connections too (see `listener`).
    close_all: bool,
    guard: memory::Guard,
    started: Instant,
    epoch: u64,
    seq: u64,
}

/// Who sent a request, as the log names it: key name, key fingerprint and address.
struct Peer {
    name: String,
    /// The fingerprint is worked out only when a line is written.
    key: PublicKey,
    address: String,
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (key {}) at {}",
            self.name,
            self.key.fingerprint(),
            self.address
        )
    }
}

fn load_keys(config: &ServerConfig) -> Result<(KeyPair, keys::AuthorizedKeys), Failure> {
    let key = keys::load_secret(&config.key).map_err(|e| (Exit::Config, e.to_string()))?;
    let authorized = keys::load_authorized(&config.authorized_keys)
        .map_err(|e| (Exit::Config, e.to_string()))?;
    for problem in &authorized.problems {
        log::warn!("authorized key skipped: {problem}");
    }
    Ok((key, authorized))
}

impl Server {
    fn start(config_path: &Path, config: ServerConfig) -> Result<Server, Failure> {
        let (key, authorized) = load_keys(&config)?;
        crate::files::own_dir(&config.state_dir, 0o750).map_err(|e| (Exit::Config, e))?;
        let (store, table) = open_store(&config)?;
        let ctx = zmq::Context::new();
        let (auth, zap) =
            Authorizer::start(&ctx, authorized.by_key).map_err(zmq_failure("ZAP handler"))?;
        let address = |port| endpoint(&config.listen.to_string(), port);
        let report = Listener::open(
            &ctx,
            zmq::ROUTER,
            &key,
            "report",
            address(config.report_port),
        )?;
        let publish = Listener::open(
            &ctx,
            zmq::XPUB,
            &key,
            "publish",
            address(config.publish_port),
        )?;
        // A million bans take about 330 MB.
        let guard = memory::Guard::new((256 << 20) + 512 * config.max_bans as u64);
        let control = control::bind(&ctx, &config.control_socket)?;
        Ok(Server {
            config_path: config_path.to_owned(),
            protected: Protected::for_this_host(&config.protected),
            protected_at: Instant::now(),
            config,
            key,
            ctx,
            auth,
            zap,
            report,
            publish,
            table,
            store,
            control,
            counters: Counters::default(),
            limits: RateLimits::default(),
            snapshot_limits: RateLimits::default(),
            invalid_limits: RateLimits::default(),
            log_limit: LogLimit::default(),
            close_all: false,
            guard,
            started: Instant::now(),
            epoch: random_epoch(),
            seq: 0,
        })
    }

    fn describe(&self) -> String {
        format!(
            "listening on {} (reports) and {} (publish) with {} authorized keys",
            endpoint(&self.config.listen.to_string(), self.config.report_port),
            endpoint(&self.config.listen.to_string(), self.config.publish_port),
            self.auth.count()
        )
    }

    fn serve(&mut self, signals: &Signals) -> Result<(), Failure> {
        let mut watchdog = Watchdog::from_env();
        let mut next_heartbeat = Instant::now();
        let mut next_purge = Instant::now() + Duration::from_secs(60);
        while !signals.should_stop() {
            if signals.take_reload() {
                self.reload();
            }
            self.zap.check()?;
            watchdog.tick();
            let now = Instant::now();
            if now >= next_heartbeat {
                self.heartbeat();
                next_heartbeat = now + self.config.heartbeat_interval.0;
            }
            if now >= next_purge {
                self.purge()?;
                next_purge = now + Duration::from_secs(60);
            }
            let wait = next_heartbeat.saturating_duration_since(now).min(TICK);
            let mut items = [
                self.report.socket.as_poll_item(zmq::POLLIN),
                self.publish.socket.as_poll_item(zmq::POLLIN),
                self.report.watch.socket().as_poll_item(zmq::POLLIN),
                self.publish.watch.socket().as_poll_item(zmq::POLLIN),
                self.control.as_poll_item(zmq::POLLIN),
            ];
            // EINTR from a signal just goes round the loop again.
            if zmq::poll(&mut items, wait.as_millis() as i64).is_err() {
                continue;
            }
            let [reports, subscriptions, report_events, publish_events, commands] =
                items.map(|item| item.is_readable());
            if report_events {
                self.report.drain_events();
            }
            if publish_events {
                self.publish.drain_events();
            }
            for listener in [&mut self.report, &mut self.publish] {
                listener.resume_if_due();
                listener.watch.flush_refusals(false);
            }
            self.auth.flush_refusals(false);
            self.guard_memory()?;
            if reports {
                let seq = self.seq;
                self.handle_reports()?;
                // A heartbeat soon after bans were published: a subscriber that lost the
                // end of a burst learns of the gap in 100 ms rather than at the next tick.
                if self.seq != seq {
                    next_heartbeat = next_heartbeat.min(Instant::now() + AFTER_PUBLISH);
                }
            }
            // A heartbeat soon for a new subscriber: not at once, so that subscribing
            // over and over cannot make the server heartbeat thousands of times a second.
            if subscriptions && self.handle_subscriptions()? {
                next_heartbeat = next_heartbeat.min(Instant::now() + AFTER_PUBLISH);
            }
            if commands {
                self.handle_command()?;
            }
        }
        // What was refused since the last summary, so that the log tells it all.
        self.auth.flush_refusals(true);
        self.report.watch.flush_refusals(true);
        self.publish.watch.flush_refusals(true);
        Ok(())
    }

    /// Forgets expired bans, and compacts the journal when it has grown.
    fn purge(&mut self) -> Result<(), Failure> {
        let purged = self.table.purge(unix_now());
        log::debug!("purged {purged} expired bans; {} active", self.table.len());
        let live: Vec<_> = self.table.entries().cloned().collect();
        if self.store.compact_if_large(&live).map_err(store_failure)? {
            log::info!("compacted the ban table to {} bans", live.len());
        }
        Ok(())
    }

    /// Handles up to BATCH waiting reports, then makes the accepted ones durable with one
    /// commit before anything is published or acknowledged (group commit).
    fn handle_reports(&mut self) -> Result<(), Failure> {
        let mut replies = Vec::new();
        let mut accepted = Vec::new();
        for _ in 0..BATCH {
            let keep = ENVELOPE + MAX_REQUEST_FRAMES;
            match transport::recv_bounded(&self.report.socket, zmq::DONTWAIT, keep) {
                Ok(received) => replies.extend(self.handle_report(received, &mut accepted)?),
                Err(zmq::Error::EAGAIN) => break,
                Err(e) => {
                    log::error!("report socket: {e}");
                    break;
                }
            }
        }
        self.store.commit().map_err(store_failure)?;
        for ban in accepted {
            self.seq += 1;
            let (epoch, seq) = (self.epoch, self.seq);
            self.send(&Publish::Ban { epoch, seq, ban });
        }
        for reply in replies {
            if let Err(e) = self.report.socket.send_multipart(reply, zmq::DONTWAIT) {
                log::warn!("cannot answer a reporter: {e}");
            }
        }
        if std::mem::take(&mut self.close_all) {
            self.close_all_connections()?;
        }
        Ok(())
    }

    /// Decides one request. Frames are the ROUTER envelope (peer id, and the empty
    /// delimiter that REQ sockets add) followed by the request. Returns the reply, if any;
    /// accepted bans are appended to the store and to `accepted`.
    fn handle_report(
        &mut self,
        received: Received,
        accepted: &mut Vec<Ban>,
    ) -> Result<Option<Vec<Vec<u8>>>, Failure> {
        let Received {
            frames,
            count,
            sender,
        } = received;
        let split = match frames.get(1) {
            Some(delimiter) if delimiter.is_empty() => 2,
            _ => 1,
        };
        let (envelope, request) = frames.split_at(split.min(frames.len()));
        let user = sender.user.unwrap_or_default();
        let Some((name, key)) = self.auth.lookup(&user) else {
            // The key was revoked, or cut off, after this connection was made: answer
            // nothing, as the handshake would.
            self.counters.unanswered += 1;
            return Ok(None);
        };
        self.auth.saw(&name);
        let peer = Peer {
            name,
            key,
            address: sender
                .address
                .unwrap_or_else(|| "an unknown address".into()),
        };
        if count - split > MAX_REQUEST_FRAMES {
            let why = format!(
                "it sent a request of {} frames, where requests have at most {MAX_REQUEST_FRAMES}",
                count - split
            );
            self.cut_off(&peer, &why);
            self.close_all = true;
            return Ok(None);
        }
        let (verdict, legacy) = match decode_request(request) {
            Ok(Request::Snapshot { .. }) if !self.allow_snapshot(&peer.name) => {
                *self.counters.refused.entry("snapshot-limit").or_default() += 1;
                let reason = format!(
                    "{} asked for more snapshot pages than its allowance",
                    peer.name
                );
                self.warn_limited(
                    &peer,
                    &format!("refused a snapshot page to {peer}: {reason}"),
                );
                (Verdict::Refused(reason), false)
            }
            Ok(Request::Snapshot { after }) => {
                let (bans, next) = self.table.page(after.as_ref(), PAGE, unix_now());
                log::debug!("snapshot page of {} bans for {}", bans.len(), peer.name);
                let page = SnapshotPage {
                    epoch: self.epoch,
                    seq: self.seq,
                    next,
                    bans,
                    unreadable: Vec::new(),
                };
                return Ok(Some(
                    envelope.iter().cloned().chain(page.encode()).collect(),
                ));
            }
            Ok(Request::Report(report)) => (self.decide(&report, &peer, accepted)?, false),
            Ok(Request::Legacy(report)) => (self.decide(&report, &peer, accepted)?, true),
            Err(_)
                if !self.invalid_limits.allow(
                    &peer.name,
                    INVALID_RATE,
                    INVALID_BURST,
                    Instant::now(),
                ) =>
            {
                self.counters.unanswered += 1;
                return Ok(None);
            }
            Err(invalid) => {
                self.counters.invalid += 1;
                self.warn_limited(
                    &peer,
                    &format!("invalid request from {peer}: {}", invalid.reason),
                );
                (Verdict::Invalid(invalid.reason), invalid.legacy)
            }
        };
        let reply = if legacy {
            verdict.encode_legacy()
        } else {
            verdict.encode()
        };
        Ok(Some(envelope.iter().cloned().chain(reply).collect()))
    }

    fn decide(
        &mut self,
        report: &Report,
        peer: &Peer,
        accepted: &mut Vec<Ban>,
    ) -> Result<Verdict, Failure> {
        if let Err((kind, reason)) = self.refusal(report, &peer.name) {
            *self.counters.refused.entry(kind).or_default() += 1;
            self.warn_limited(
                peer,
                &format!(
                    "refused {} ({} {}) from {peer}: {reason}",
                    report.ip, report.prog, report.jail
                ),
            );
            return Ok(Verdict::Refused(reason));
        }
        let origin = Name::parse("origin", &peer.name)
            .unwrap_or_else(|_| Name::parse("origin", "unnamed").expect("valid name"));
        let recorded = self.table.record(
            report,
            &origin,
            self.config.default_bantime.0,
            self.config.dedup_window.0,
            unix_now(),
        );
        match recorded {
            Recorded::Duplicate(changed) => {
                self.counters.duplicate += 1;
                // A new reporter is part of the audit trail: journaled with the batch.
                if let Some(entry) = changed {
                    self.store.append(&entry).map_err(store_failure)?;
                }
                log::info!(
                    "duplicate {} ({} {}) from {}",
                    report.ip,
                    report.prog,
                    report.jail,
                    peer.name
                );
                Ok(Verdict::Duplicate)
            }
            Recorded::New(entry) => {
                self.counters.accepted += 1;
                let ban = &entry.ban;
                // The audit trail: every accepted ban, once, with where it came from.
                log::info!(
                    "accepted {} ({} {}) from {peer}, bantime {}",
                    ban.ip,
                    ban.prog,
                    ban.jail,
                    ban.bantime.map_or("permanent".into(), |b| format!("{b}s"))
                );
                self.store.append(&entry).map_err(store_failure)?;
                accepted.push(entry.ban);
                Ok(Verdict::Accepted)
            }
        }
    }

    /// Whether `name` may have another snapshot page: enough for two whole snapshots at
    /// once and two a minute after that, so that one key cannot keep the server paging,
    /// nor pile up pages it leaves unread.
    fn allow_snapshot(&mut self, name: &str) -> bool {
        let pages = u32::try_from(self.table.len() / PAGE + 1).unwrap_or(u32::MAX);
        let allowance = pages.saturating_mul(2).saturating_add(10);
        self.snapshot_limits
            .allow(name, allowance, allowance, Instant::now())
    }

    /// Refuses a key for CUT_OFF, in the handshake and on connections already open, and
    /// says so once; the caller then closes every connection, which ends the key's own.
    fn cut_off(&mut self, peer: &Peer, why: &str) {
        self.auth.cut_off(peer.key, Instant::now() + CUT_OFF);
        self.counters.cut_off += 1;
        log::warn!(
            "cut off {peer} for {} minutes: {why}; its connections are closed",
            CUT_OFF.as_secs() / 60
        );
    }

    /// Past the memory guard's limit, closes every connection, which frees whatever peers
    /// were in the middle of sending (see `memory`).
    fn guard_memory(&mut self) -> Result<(), Failure> {
        let Some(resident) = self.guard.tripped() else {
            return Ok(());
        };
        self.close_all_connections()?;
        self.counters.closed_all += 1;
        log::error!(
            "memory guard: the server held {}, over its limit of {}; closed every connection, \
             which frees what peers were in the middle of sending",
            memory::megabytes(resident),
            memory::megabytes(self.guard.limit()),
        );
        Ok(())
    }

    /// Closes every connection on both sockets, and gives back the memory they held. Peers
    /// reconnect by themselves, through the ZAP handler, and catch up.
    fn close_all_connections(&mut self) -> Result<(), Failure> {
        self.report.reopen(&self.ctx, &self.key)?;
        self.publish.reopen(&self.ctx, &self.key)?;
        self.guard.release();
        Ok(())
    }

    /// A warning about a peer, unless that peer has had its share of lines this minute: a
    /// flood of bad reports must not fill the disk with the log.
    fn warn_limited(&mut self, peer: &Peer, line: &str) {
        match self.log_limit.admit(&peer.name, Instant::now()) {
            Some(0) => log::warn!("{line}"),
            Some(held_back) => log::warn!(
                "{line} ({held_back} more lines about {} were held back)",
                peer.name
            ),
            None => {}
        }
    }

    /// Why the server will not ban this network, if it will not: a short kind for the
    /// counters, and the reason for the reporter.
    fn refusal(&mut self, report: &Report, origin: &str) -> Result<(), (&'static str, String)> {
        let ip = &report.ip;
        // First, so that every report counts against the key, refused or not.
        let (rate, burst) = (self.config.report_rate, self.config.report_burst);
        if !self.limits.allow(origin, rate, burst, Instant::now()) {
            return Err((
                "rate-limit",
                format!("{origin} sent more than {burst} reports at once or {rate} a minute"),
            ));
        }
        self.config
            .min_prefix
            .check(ip)
            .map_err(|r| ("min-prefix", r))?;
        if self.protected_at.elapsed() >= LOCAL_REFRESH {
            self.protected = Protected::for_this_host(&self.config.protected);
            self.protected_at = Instant::now();
        }
        self.protected.check(ip).map_err(|r| ("protected", r))?;
        if let Some((addr, name)) = self.auth.fleet_host_in(ip) {
            return Err((
                "fleet-host",
                format!("{ip} covers fleet host {name}'s address {addr}"),
            ));
        }
        let max = self.config.max_bans;
        if self.table.len() >= max && !self.table.contains(ip) {
            return Err((
                "max-bans",
                format!("the server holds {max} active bans, its max-bans"),
            ));
        }
        Ok(())
    }

    fn send(&mut self, message: &Publish) {
        if !matches!(message, Publish::Heartbeat { .. }) {
            self.counters.published += 1;
        }
        if let Err(e) = self
            .publish
            .socket
            .send_multipart(message.encode(), zmq::DONTWAIT)
        {
            log::error!("publish failed: {e}");
        }
    }

    fn heartbeat(&mut self) {
        self.send(&Publish::Heartbeat {
            epoch: self.epoch,
            seq: self.seq,
            interval_ms: self.config.heartbeat_interval.0.as_millis() as u64,
        });
    }

    /// Reads what subscribers sent: XPUB passes every subscription up. Only `BANSHARE1`
    /// is part of the protocol; libzmq keeps every distinct subscription a peer sends for as
    /// long as its connection lasts (XPUB_MANUAL would not change that in libzmq 4.3), so a
    /// key that sends anything else is cut off and every connection closed, which ends its
    /// own. Returns whether someone subscribed.
    fn handle_subscriptions(&mut self) -> Result<bool, Failure> {
        let mut joined = false;
        let mut broken = Vec::new();
        while let Ok(received) = transport::recv_bounded(&self.publish.socket, zmq::DONTWAIT, 1) {
            match received.frames[0].as_slice() {
                _ if received.oversized() => broken.push(received),
                SUBSCRIBE => joined = true,
                UNSUBSCRIBE => {}
                _ => broken.push(received),
            }
        }
        if broken.is_empty() {
            return Ok(joined);
        }
        for received in broken {
            let user = received.sender.user.unwrap_or_default();
            let Some((name, key)) = self.auth.lookup(&user) else {
                continue;
            };
            let peer = Peer {
                name,
                key,
                address: received.sender.address.unwrap_or_else(|| "?".into()),
            };
            let sent = printable(&String::from_utf8_lossy(&received.frames[0]));
            let why = format!(
                "it sent \"{sent}\" to the publish socket, where only the subscription \
                 BANSHARE1 belongs"
            );
            self.cut_off(&peer, &why);
        }
        // Whoever it was, its connection is closed with the others.
        self.close_all_connections()?;
        Ok(joined)
    }

    /// One request from `banshare` on the control socket.
    fn handle_command(&mut self) -> Result<(), Failure> {
        let Ok(frames) = self.control.recv_multipart(zmq::DONTWAIT) else {
            return Ok(());
        };
        let reply = match Command::decode(&frames) {
            Ok(Command::Unban(ip)) => self.unban(&ip)?,
            Ok(Command::Bans) => Ok(self.bans_json()),
            Ok(Command::Status) => Ok(self.status_json()),
            Err(e) => Err(e),
        };
        if let Err(e) = self
            .control
            .send_multipart(control::encode_reply(&reply), 0)
        {
            log::warn!("cannot answer on the control socket: {e}");
        }
        Ok(())
    }

    /// Lifts a ban fleet-wide: forget it durably, then publish UNBAN.
    fn unban(&mut self, ip: &Cidr) -> Result<Result<String, String>, Failure> {
        let now = unix_now();
        let Some(entry) = self.table.remove(ip) else {
            return Ok(Err(format!("{ip} is not banned")));
        };
        if entry.ban.expires.is_some_and(|e| e <= now) {
            return Ok(Err(format!("{ip} is not banned (its ban expired)")));
        }
        self.store.remove(ip).map_err(store_failure)?;
        self.store.commit().map_err(store_failure)?;
        self.counters.unbanned += 1;
        self.seq += 1;
        let (epoch, seq) = (self.epoch, self.seq);
        log::info!(
            "unbanned {ip} (reported by {}); published as seq {seq}",
            entry.ban.origin
        );
        self.send(&Publish::Unban {
            epoch,
            seq,
            ban: entry.ban,
        });
        Ok(Ok(format!(
            "unbanned {ip}; every client runs its unban command"
        )))
    }

    fn bans_json(&self) -> String {
        let now = unix_now();
        let bans: Vec<serde_json::Value> = self
            .table
            .entries()
            .filter(|e| e.ban.expires.map_or(true, |x| x > now))
            .map(|e| {
                let reporters: Vec<serde_json::Value> = e
                    .reporters
                    .iter()
                    .map(|r| {
                        serde_json::json!({
                            "name": r.name.as_str(),
                            "first_report": r.first,
                            "last_report": r.last,
                        })
                    })
                    .collect();
                serde_json::json!({
                    "ip": e.ban.ip.to_string(),
                    "prog": e.ban.prog.as_str(),
                    "jail": e.ban.jail.as_str(),
                    "origin": e.ban.origin.as_str(),
                    "bantime": e.ban.bantime,
                    "expires": e.ban.expires,
                    "first_report": e.first_report(),
                    "last_report": e.last_report(),
                    "reporters": reporters,
                    "more_reporters": e.reporters.more,
                })
            })
            .collect();
        serde_json::Value::from(bans).to_string()
    }

    fn status_json(&self) -> String {
        let now = unix_now();
        let hosts: Vec<serde_json::Value> = self
            .auth
            .hosts_seen()
            .into_iter()
            .map(|(name, at)| serde_json::json!({"name": name, "last_seen": at, "seconds_ago": now.saturating_sub(at)}))
            .collect();
        serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_seconds": self.started.elapsed().as_secs(),
            "epoch": self.epoch,
            "seq": self.seq,
            "active_bans": self.table.entries().filter(|e| e.ban.expires.map_or(true, |x| x > now)).count(),
            "authorized_keys": self.auth.count(),
            "counters": self.counters,
            "hosts": hosts,
        })
        .to_string()
    }

    fn reload(&mut self) {
        service::reloading();
        log::info!("reloading {}", self.config_path.display());
        match ServerConfig::load(&self.config_path) {
            Ok(config) => self.apply(config),
            Err(e) => log::error!("reload failed, keeping the running configuration: {e}"),
        }
        service::ready(&self.describe());
    }

    fn apply(&mut self, config: ServerConfig) {
        let authorized = match keys::load_authorized(&config.authorized_keys) {
            Ok(a) => a,
            Err(e) => {
                log::error!("reload failed, keeping the running configuration: {e}");
                return;
            }
        };
        for problem in &authorized.problems {
            log::warn!("authorized key skipped: {problem}");
        }
        // Sockets, the key and the journal stay as they were started.
        let kept = ServerConfig {
            listen: self.config.listen,
            report_port: self.config.report_port,
            publish_port: self.config.publish_port,
            key: self.config.key.clone(),
            state_dir: self.config.state_dir.clone(),
            durability: self.config.durability,
            control_socket: self.config.control_socket.clone(),
            ..config.clone()
        };
        if kept != config {
            log::warn!(
                "listen, report-port, publish-port, key, state-dir, durability and \
                 control-socket change only on restart"
            );
        }
        log::set_max_level(config.log_level.filter());
        let old = self.auth.keys();
        let revoked: Vec<&PublicKey> = old
            .keys()
            .filter(|k| !authorized.by_key.contains_key(k))
            .collect();
        for key in &revoked {
            log::info!("revoked {} (key {})", old[key], key.fingerprint());
        }
        self.auth.replace(authorized.by_key);
        self.protected = Protected::for_this_host(&config.protected);
        self.protected_at = Instant::now();
        self.config = kept;
        if !revoked.is_empty() {
            self.rebind_publish();
        }
        log::info!("reloaded: {} authorized keys", self.auth.count());
    }

    /// Subscriptions carry no per-message check, so a revoked subscriber is cut off by
    /// closing every publish connection; the others reconnect through the ZAP handler at
    /// once and catch up from the heartbeat.
    fn rebind_publish(&mut self) {
        match self.publish.reopen(&self.ctx, &self.key) {
            Ok(()) => log::info!("publish socket reopened; revoked subscribers are disconnected"),
            Err((_, e)) => log::error!("cannot reopen the publish socket: {e}"),
        }
    }
}

/// Reads the ban table back, saying loudly what could not be recovered.
fn open_store(config: &ServerConfig) -> Result<(Store, BanTable), Failure> {
    let (store, recovery) = Store::open(
        &config.state_dir,
        SERVER_JOURNAL,
        config.durability,
        unix_now(),
    )
    .map_err(|e| (Exit::IoErr, format!("cannot open the ban table: {e}")))?;
    for damage in &recovery.damaged {
        log::error!(
            "ban table in {}: skipped {damage}",
            config.state_dir.display()
        );
    }
    if let Some(kept) = &recovery.kept {
        log::error!(
            "ban table damaged: recovered {} active bans from {} lines, skipped {}; the \
             damaged journal is kept as {}",
            recovery.entries.len(),
            recovery.lines,
            recovery.damaged.len(),
            kept.display()
        );
    } else {
        log::info!("ban table: {} active bans", recovery.entries.len());
    }
    Ok((store, BanTable::from_entries(recovery.entries)))
}

/// What the server did since it started, for `banshare status`.
#[derive(Debug, Default, serde::Serialize)]
struct Counters {
    accepted: u64,
    duplicate: u64,
    invalid: u64,
    /// Refused reports by reason: rate-limit, min-prefix, protected, fleet-host, max-bans.
    refused: BTreeMap<&'static str, u64>,
    /// Bans and unbans published.
    published: u64,
    unbanned: u64,
    /// Requests left unanswered: from keys revoked or cut off, or invalid beyond the key's
    /// allowance.
    unanswered: u64,
    /// Keys cut off for breaking the protocol's shape.
    cut_off: u64,
    /// Times the memory guard closed every connection.
    closed_all: u64,
}

/// A new random epoch on every start, so clients can tell a restarted server from a gap.
fn random_epoch() -> u64 {
    use std::io::Read;
    let mut bytes = [0u8; 8];
    match std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)) {
        Ok(()) => u64::from_le_bytes(bytes) >> 1,
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
    }
}

/// For `banshare check-config`: the checks a start would make, without binding.
pub fn check(config: &ServerConfig) -> Result<String, String> {
    let (_, authorized) = load_keys(config).map_err(|(_, e)| e)?;
    let mut summary = format!("{} authorized keys", authorized.by_key.len());
    for problem in authorized.problems {
        summary.push_str(&format!("; skipped {problem}"));
    }
    Ok(summary)
}
