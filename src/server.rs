//! banshare-server: receives reports on a ROUTER socket, checks and de-duplicates them, and
//! publishes accepted bans on an XPUB socket.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::bans::{unix_now, BanTable, Recorded};
use crate::cidr::Cidr;
use crate::cli::{self, ServerArgs};
use crate::config::ServerConfig;
use crate::connection::ListenerWatch;
use crate::control::{self, Command};
use crate::exit::{Exit, Failure};
use crate::keys::{self, KeyPair, PublicKey};
use crate::limits::RateLimits;
use crate::logging::LogLimit;
use crate::protect::{Protected, LOCAL_REFRESH};
use crate::protocol::{
    decode_request, Ban, Name, Publish, Report, Request, SnapshotPage, Verdict, PAGE,
};
use crate::service::{self, Signals, Watchdog};
use crate::store::{Store, StoreError, SERVER_JOURNAL};
use crate::transport::{self, endpoint, Authorizer, Sender};
use crate::worker::Worker;

/// Requests handled before the loop looks at timers and signals again.
const BATCH: usize = 256;
/// The longest a subscriber waits, after bans were published, for the heartbeat that
/// tells it the latest sequence number.
const AFTER_PUBLISH: Duration = Duration::from_millis(100);
/// The longest the loop sleeps, which bounds how late a signal is noticed.
const TICK: Duration = Duration::from_millis(100);

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
    limits: RateLimits,
    log_limit: LogLimit,
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
        let report = bind(
            &ctx,
            zmq::ROUTER,
            &key,
            "report",
            &config,
            config.report_port,
        )?;
        let publish = bind_publish(&ctx, &key, &config)?;
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
            log_limit: LogLimit::default(),
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
                self.report.watch.drain();
            }
            if publish_events {
                self.publish.watch.drain();
            }
            if reports {
                let seq = self.seq;
                self.handle_reports()?;
                // A heartbeat soon after bans were published: a subscriber that lost the
                // end of a burst learns of the gap in 100 ms rather than at the next tick.
                if self.seq != seq {
                    next_heartbeat = next_heartbeat.min(Instant::now() + AFTER_PUBLISH);
                }
            }
            if subscriptions {
                self.handle_subscriptions();
            }
            if commands {
                self.handle_command()?;
            }
        }
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
            match transport::recv_with_sender(&self.report.socket, zmq::DONTWAIT) {
                Ok((frames, sender)) => {
                    replies.extend(self.handle_report(frames, sender, &mut accepted)?)
                }
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
        Ok(())
    }

    /// Decides one request. Frames are the ROUTER envelope (peer id, and the empty
    /// delimiter that REQ sockets add) followed by the request. Returns the reply, if any;
    /// accepted bans are appended to the store and to `accepted`.
    fn handle_report(
        &mut self,
        frames: Vec<Vec<u8>>,
        sender: Sender,
        accepted: &mut Vec<Ban>,
    ) -> Result<Option<Vec<Vec<u8>>>, Failure> {
        let split = match frames.get(1) {
            Some(delimiter) if delimiter.is_empty() => 2,
            _ => 1,
        };
        let (envelope, request) = frames.split_at(split.min(frames.len()));
        let user = sender.user.unwrap_or_default();
        let Some((name, key)) = self.auth.lookup(&user) else {
            // The key was revoked after this connection was made: answer nothing, as the
            // handshake would.
            log::warn!("dropped a request from a key that is no longer authorized");
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
        let (verdict, legacy) = match decode_request(request) {
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

    /// XPUB passes each new subscription up; answering with a heartbeat at once tells the new
    /// subscriber the current position without waiting for the next tick.
    fn handle_subscriptions(&mut self) {
        let mut joined = false;
        while let Ok(frame) = self.publish.socket.recv_bytes(zmq::DONTWAIT) {
            joined |= frame.first() == Some(&1);
        }
        if joined {
            self.heartbeat();
        }
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
        let address = endpoint(&self.config.listen.to_string(), self.config.publish_port);
        let _ = self.publish.socket.unbind(&address);
        for attempt in 0..50 {
            match bind_publish(&self.ctx, &self.key, &self.config) {
                Ok(listener) => {
                    self.publish = listener;
                    log::info!("publish socket reopened; revoked subscribers are disconnected");
                    return;
                }
                Err((_, e)) if attempt == 49 => log::error!("cannot reopen publish socket: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
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
}

/// A bound socket and the watch that logs peers failing its handshake.
struct Listener {
    socket: zmq::Socket,
    watch: ListenerWatch,
}

fn bind(
    ctx: &zmq::Context,
    kind: zmq::SocketType,
    key: &KeyPair,
    name: &str,
    config: &ServerConfig,
    port: u16,
) -> Result<Listener, Failure> {
    let socket = transport::server_socket(ctx, kind, key, name).map_err(zmq_failure(name))?;
    if kind == zmq::XPUB {
        // Every subscription is passed up, not just the first, so each new subscriber gets
        // a heartbeat at once.
        socket.set_xpub_verbose(true).map_err(zmq_failure(name))?;
        // Room for a burst of bans per subscriber; one that falls further behind notices
        // the gap in sequence numbers and reads a snapshot. A queued ban takes about 700
        // bytes: 10,000 make 7 MB per slow subscriber, where 100,000 grew the server to
        // 718 MB with 10 slow subscribers in the benchmark.
        socket.set_sndhwm(10_000).map_err(zmq_failure(name))?;
    }
    let watch = ListenerWatch::attach(ctx, &socket, name).map_err(zmq_failure(name))?;
    let address = endpoint(&config.listen.to_string(), port);
    socket.bind(&address).map_err(|e| {
        (
            Exit::Unavailable,
            format!("cannot listen on {address} ({name}): {e}"),
        )
    })?;
    Ok(Listener { socket, watch })
}

fn bind_publish(
    ctx: &zmq::Context,
    key: &KeyPair,
    config: &ServerConfig,
) -> Result<Listener, Failure> {
    bind(ctx, zmq::XPUB, key, "publish", config, config.publish_port)
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
