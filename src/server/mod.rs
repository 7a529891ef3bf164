//! banshare-server: receives reports on a ROUTER socket (`reports`), decides on them
//! (`intake`), journals what it accepts (`crate::store`) and publishes it on an XPUB socket
//! (`publisher`). The ZAP handler (`zap`) lets in only authorized keys; `commands` answers
//! the control socket.

mod commands;
mod forward;
mod import;
pub mod intake;
pub mod ledger;
pub mod limits;
pub mod listener;
mod merge;
pub mod metrics;
mod peering;
pub mod policy;
pub mod publisher;
mod reports;
pub mod table;
pub mod zap;

use std::path::Path;
use std::time::{Duration, Instant};

use crate::cli::{self, ServerArgs};
use crate::clock::unix_now;
use crate::config::groups::{self, GroupConfig};
use crate::config::{PeerConfig, ServerConfig};
use crate::daemon::memory;
use crate::daemon::service::{self, Signals, Watchdog};
use crate::daemon::worker::Worker;
use crate::exit::{Exit, Failure};
use crate::logging::{printable, LogLimit};
use crate::sockets::control;
use crate::sockets::poll::Poll;
use crate::sockets::transport::endpoint;
use crate::sockets::upstream::Upstream;
use crate::store::StoreError;
use crate::wire::keys::{self, KeyPair, PublicKey};
use forward::Forwarder;
use intake::Intake;
use ledger::Ledger;
use listener::Listener;
use metrics::{ServerMetrics, ServerState};
use peering::Peers;
use policy::confirm::PendingSet;
use publisher::Publisher;
use zap::Authorizer;

/// The longest the loop sleeps, which bounds how late a signal is noticed.
const TICK: Duration = Duration::from_millis(100);
/// How long a key that broke the protocol's shape is refused.
const CUT_OFF: Duration = Duration::from_secs(15 * 60);

pub fn main() -> std::process::ExitCode {
    let args: ServerArgs = cli::parse();
    service::run_daemon(
        "banshare-server",
        args.log,
        || ServerConfig::load(&args.config).map_err(Failure::from),
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
    Exit::IoErr.with(format!("cannot write the ban table: {e}"))
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
    publisher: Publisher,
    peers: Peers,
    intake: Intake,
    /// Each group's bans, the default group's first (`ledger`).
    ledgers: Vec<Ledger>,
    control: zmq::Socket,
    log_limit: LogLimit,
    /// Set when a key was cut off: every connection is closed after the batch, which ends
    /// that key's connections too (see `listener`).
    close_all: bool,
    guard: memory::Guard,
    started: Instant,
    /// The Prometheus endpoint's state, when server.toml asks for one.
    metrics: Option<ServerMetrics>,
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
    let key = keys::load_secret(&config.key)?;
    let authorized = keys::load_authorized(&config.authorized_keys)?;
    for problem in &authorized.problems {
        log::warn!("authorized key skipped: {problem}");
    }
    Ok((key, authorized))
}

impl Server {
    fn start(config_path: &Path, config: ServerConfig) -> Result<Server, Failure> {
        let (key, authorized) = load_keys(&config)?;
        crate::files::own_dir(&config.state_dir, 0o750).map_err(|e| Exit::Config.with(e))?;
        let mut ledgers = ledger::open_all(&config)?;
        let ctx = zmq::Context::new();
        // Before any CURVE socket binds, or libzmq would let its peers in unchecked.
        let (auth, zap) = Authorizer::start(&ctx, authorized.by_key)
            .map_err(|e| Exit::Software.with(format!("ZAP handler: {e}")))?;
        let address = |port| endpoint(&config.listen.to_string(), port);
        let report = Listener::open(
            &ctx,
            zmq::ROUTER,
            &key,
            "report",
            address(config.report_port),
        )?;
        let publisher = Publisher::open(
            &ctx,
            &key,
            address(config.publish_port),
            config.heartbeat_interval.0,
            ledgers.iter().map(|l| l.topic.clone()).collect(),
        )?;
        // A million bans take about 330 MB.
        let guard = memory::Guard::new((256 << 20) + 512 * config.max_bans as u64);
        let control = control::bind(&ctx, &config.control_socket)?;
        let mut peers = Peers::open(&ctx, &config, &key, ledger::groups(&ledgers))?;
        let peer_names: Vec<String> = config.peers.iter().map(PeerConfig::name).collect();
        for ledger in &mut ledgers {
            let dropped = ledger
                .drop_stale_waiting(|name| auth.key_named(name), &peer_names)
                .map_err(store_failure)?;
            if dropped > 0 {
                log::info!(
                    "{}dropped the reports waiting for {dropped} networks from keys no longer \
                     authorized or forwarded by servers no longer peers",
                    ledger.prefix()
                );
            }
        }
        // A peer may have missed what waits here: forwarding it twice is harmless.
        for ledger in &ledgers {
            let pending = &ledger.book.pending;
            let waiting: Vec<String> = pending.sets().flat_map(PendingSet::forward_lines).collect();
            peers.forward(&waiting, ledger.topic.group.as_ref());
        }
        let metrics = ServerMetrics::start(&config)?;
        Ok(Server {
            metrics,
            peers,
            intake: Intake::new(&config),
            ledgers,
            config_path: config_path.to_owned(),
            config,
            key,
            ctx,
            auth,
            zap,
            report,
            publisher,
            control,
            log_limit: LogLimit::default(),
            close_all: false,
            guard,
            started: Instant::now(),
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
        let mut next_purge = Instant::now() + Duration::from_secs(60);
        let mut next_release = Instant::now();
        while !signals.should_stop() {
            if signals.take_reload() {
                self.reload()?;
            }
            self.zap.check()?;
            if let Some(metrics) = &self.metrics {
                metrics.endpoint.check()?;
            }
            watchdog.tick();
            let now = Instant::now();
            self.publisher.heartbeat_if_due(now);
            self.refresh_metrics(now);
            if now >= next_purge {
                self.purge()?;
                next_purge = now + Duration::from_secs(60);
            }
            if now >= next_release {
                self.release_held()?;
                next_release = now + Duration::from_secs(1);
            }
            let wait = self.publisher.until_heartbeat(now).min(TICK);
            let publish = &self.publisher.listener;
            let mut poll = Poll::default();
            let reports = poll.add([self.report.socket.as_poll_item(zmq::POLLIN)]);
            let subscriptions = poll.add([publish.socket.as_poll_item(zmq::POLLIN)]);
            let report_events = poll.add([self.report.watch.socket().as_poll_item(zmq::POLLIN)]);
            let publish_events = poll.add([publish.watch.socket().as_poll_item(zmq::POLLIN)]);
            let commands = poll.add([self.control.as_poll_item(zmq::POLLIN)]);
            poll.add(self.peers.links.iter().flat_map(Upstream::poll_items));
            poll.add(self.peers.forwarders.iter().flat_map(Forwarder::poll_items));
            if poll.wait(wait).is_err() {
                continue;
            }
            let [reports, subscriptions, report_events, publish_events, commands] = [
                reports,
                subscriptions,
                report_events,
                publish_events,
                commands,
            ]
            .map(|place| poll.ready(&place));
            if report_events {
                self.report.drain_events();
            }
            if publish_events {
                self.publisher.listener.drain_events();
            }
            for listener in [&mut self.report, &mut self.publisher.listener] {
                listener.resume_if_due();
                listener.watch.flush_refusals(false);
            }
            self.auth.flush_refusals(false);
            self.guard_memory()?;
            if reports {
                self.handle_reports()?;
            }
            if subscriptions {
                self.handle_subscriptions()?;
            }
            if commands {
                self.handle_command()?;
            }
            // Every pass, not only when a peer's socket is readable: catch-ups and silences
            // are timed.
            self.handle_peers()?;
        }
        // What was refused since the last summary, so that the log tells it all.
        self.auth.flush_refusals(true);
        self.report.watch.flush_refusals(true);
        self.publisher.listener.watch.flush_refusals(true);
        Ok(())
    }

    /// Copies the state for the metrics endpoint, once a second when it is on.
    fn refresh_metrics(&mut self, now: Instant) {
        if !self.metrics.as_mut().is_some_and(|m| m.endpoint.due(now)) {
            return;
        }
        let mut refused_handshakes = std::collections::BTreeMap::new();
        self.auth.add_refusals(&mut refused_handshakes);
        self.report.watch.add_refusals(&mut refused_handshakes);
        let publish = &self.publisher.listener.watch;
        publish.add_refusals(&mut refused_handshakes);
        let state = ServerState {
            status: self.status(),
            subscribers: publish.connections(),
            refused_handshakes,
        };
        if let Some(metrics) = &self.metrics {
            metrics.endpoint.put(state);
        }
    }

    /// Forgets expired bans, and compacts the journals when they have grown.
    fn purge(&mut self) -> Result<(), Failure> {
        let now = unix_now();
        for ledger in &mut self.ledgers {
            let prefix = ledger.prefix();
            let table = &mut ledger.book.table;
            let purged = table.purge(now);
            log::debug!(
                "{prefix}purged {purged} expired bans; {} active",
                table.len()
            );
            let live: Vec<_> = table.entries().cloned().collect();
            let lifts: Vec<_> = table.lifts().copied().collect();
            if ledger
                .store
                .compact_if_large(&live, &lifts)
                .map_err(store_failure)?
            {
                log::info!("{prefix}compacted the ban table to {} bans", live.len());
            }
            purge_pending(ledger, now)?;
        }
        Ok(())
    }

    /// Past the memory guard's limit, closes every connection, which frees whatever peers
    /// were in the middle of sending (see `memory`).
    fn guard_memory(&mut self) -> Result<(), Failure> {
        let Some(resident) = self.guard.tripped() else {
            return Ok(());
        };
        self.close_all_connections()?;
        self.intake.counters.closed_all += 1;
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
        self.publisher.reopen(&self.ctx, &self.key)?;
        self.guard.release();
        Ok(())
    }

    /// Subscriptions: a new subscriber gets a heartbeat soon; a key that sends anything
    /// but the protocol's subscription is cut off, and every connection closed, which ends
    /// its own.
    fn handle_subscriptions(&mut self) -> Result<(), Failure> {
        let seen = self.publisher.read_subscriptions();
        if seen.joined {
            self.publisher.heartbeat_soon();
        }
        for (received, group) in &seen.unknown {
            if let Some(peer) = self.peer(received, "?") {
                log::warn!(
                    "{peer} subscribed to group {group}, which this server does not have; \
                     it receives nothing of it"
                );
            }
        }
        if seen.broken.is_empty() {
            return Ok(());
        }
        for received in seen.broken {
            let Some(peer) = self.peer(&received, "?") else {
                continue;
            };
            let sent = printable(&String::from_utf8_lossy(&received.frames[0]));
            let why = format!(
                "it sent \"{sent}\" to the publish socket, where only the subscriptions \
                 BANSHARE1 and BANSHARE1/GROUP/ belong (at most {} groups this server does \
                 not have)",
                publisher::MAX_UNKNOWN_GROUPS
            );
            self.cut_off(&peer, &why);
        }
        // Whoever it was, its connection is closed with the others.
        self.close_all_connections()
    }

    fn reload(&mut self) -> Result<(), Failure> {
        service::reloading();
        log::info!("reloading {}", self.config_path.display());
        match ServerConfig::load(&self.config_path) {
            Ok(config) => {
                if self.adopt(config) {
                    self.lift_never_banned()?;
                    self.confirm_waiting()?;
                }
            }
            Err(e) => log::error!("reload failed, keeping the running configuration: {e}"),
        }
        service::ready(&self.describe());
        Ok(())
    }

    /// Takes a reloaded configuration: new authorized keys (revoked subscribers are cut
    /// off), limits and protected networks. False when it kept the running one.
    fn adopt(&mut self, config: ServerConfig) -> bool {
        let authorized = match keys::load_authorized(&config.authorized_keys) {
            Ok(a) => a,
            Err(e) => {
                log::error!("reload failed, keeping the running configuration: {e}");
                return false;
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
            peers: self.config.peers.clone(),
            ..config.clone()
        };
        if kept != config {
            log::warn!(
                "listen, report-port, publish-port, key, state-dir, durability, \
                 control-socket and peers change only on restart"
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
        self.intake.protect(&config);
        self.adopt_groups(&config);
        self.publisher.set_interval(kept.heartbeat_interval.0);
        self.config = kept;
        if !revoked.is_empty() {
            self.rebind_publish();
        }
        log::info!("reloaded: {} authorized keys", self.auth.count());
        true
    }

    /// Each group takes its part of a reloaded configuration: rules, policy and dry run.
    /// The groups themselves change only on restart, as each has its journals.
    fn adopt_groups(&mut self, config: &ServerConfig) {
        let mut resolved = groups::resolve(&config.groups);
        if resolved.is_empty() {
            resolved.push(GroupConfig::default_group());
        }
        let names = |groups: &mut dyn Iterator<Item = &GroupConfig>| {
            groups.map(|g| g.name.clone()).collect::<Vec<_>>()
        };
        let running = names(&mut self.ledgers.iter().map(|l| &l.group));
        let grouped = self.ledgers[0].topic.group.is_some();
        if names(&mut resolved.iter()) != running || grouped == config.groups.is_empty() {
            log::warn!("the groups themselves change only on restart; their rules and policies were reloaded");
        }
        for ledger in &mut self.ledgers {
            let group = resolved.iter().find(|g| g.name == ledger.group.name);
            let group = group.cloned().unwrap_or_else(|| ledger.group.clone());
            ledger.adopt(config, group);
        }
        self.publisher
            .set_topics(self.ledgers.iter().map(|l| l.topic.clone()).collect());
    }

    /// Subscriptions carry no per-message check, so a revoked subscriber is cut off by
    /// closing every publish connection; the others reconnect through the ZAP handler at
    /// once and catch up from the heartbeat.
    fn rebind_publish(&mut self) {
        match self.publisher.reopen(&self.ctx, &self.key) {
            Ok(()) => log::info!("publish socket reopened; revoked subscribers are disconnected"),
            Err(e) => log::error!("cannot reopen the publish socket: {e}"),
        }
    }
}

/// Forgets the reports of `ledger` that waited longer than `confirm-window`, each with a
/// line (`Ledger::settle_expired`).
fn purge_pending(ledger: &mut Ledger, now: u64) -> Result<(), Failure> {
    ledger.book.pending.purge(now);
    ledger.settle_expired().map_err(store_failure)?;
    let sets: Vec<PendingSet> = ledger.book.pending.sets().cloned().collect();
    ledger
        .pending_store
        .compact_if_large(&sets, &[])
        .map_err(store_failure)?;
    ledger.pending_store.commit().map_err(store_failure)
}

/// For `banshare check-config`: the checks a start would make, without binding.
pub fn check(config: &ServerConfig) -> Result<String, String> {
    let (_, authorized) = load_keys(config).map_err(|e| e.message)?;
    let mut summary = format!("{} authorized keys", authorized.by_key.len());
    for peer in &config.peers {
        let key = keys::load_public(&peer.key).map_err(|e| e.to_string())?;
        summary.push_str(&format!(
            ", peer {} (key {})",
            peer.name(),
            key.fingerprint()
        ));
    }
    for problem in authorized.problems {
        summary.push_str(&format!("; skipped {problem}"));
    }
    Ok(summary)
}
