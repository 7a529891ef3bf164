//! banshare-server, a core that decides and a shell that does. The core (`core`) holds
//! every group's bans and waiting reports and decides on each event: a report, what a peer
//! sends, a tick, an admin's command; it returns what changed as a value (`changes`). The
//! shell, here, owns the sockets and the journals, and carries out every change in one
//! function (`carry_out`): journal and commit, then forward and publish. Each socket has its
//! room: `reports`, `subscriptions`, `commands`, `peering`; `reload` takes a new server.toml.

pub mod changes;
mod commands;
pub mod core;
pub mod feeds;
mod forward;
pub mod intake;
pub mod journals;
pub mod ledger;
pub mod limits;
pub mod listener;
pub mod metrics;
mod peering;
pub mod policy;
pub mod position;
pub mod publisher;
mod reload;
mod reports;
mod subscriptions;
pub mod table;
pub mod zap;

use std::path::Path;
use std::time::{Duration, Instant};

use crate::cli::{self, ServerArgs};
use crate::clock::unix_now;
use crate::config::{PeerConfig, ServerConfig};
use crate::daemon::memory;
use crate::daemon::service::{self, Signals, Watchdog};
use crate::daemon::worker::Worker;
use crate::exit::{Exit, Failure};
use crate::sockets::control;
use crate::sockets::poll::Poll;
use crate::sockets::transport::endpoint;
use crate::sockets::upstream::Upstream;
use crate::store::StoreError;
use crate::wire::keys::{self, KeyPair};
use changes::Changes;
use feeds::Feeds;
use forward::Forwarder;
use journals::Journals;
use listener::Listener;
use metrics::{ServerMetrics, ServerState};
use peering::Peers;
use publisher::Publisher;
use zap::Authorizer;

/// The longest the loop sleeps, which bounds how late a signal is noticed.
const TICK: Duration = Duration::from_millis(100);

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
    /// What decides (`core`).
    core: core::Core,
    journals: Journals,
    /// The ZAP handler's thread, without which the server must not go on.
    zap: Worker,
    report: Listener,
    publisher: Publisher,
    peers: Peers,
    control: zmq::Socket,
    /// Set when a key was cut off: every connection is closed after the batch, which ends
    /// that key's connections too (see `listener`).
    close_all: bool,
    guard: memory::Guard,
    started: Instant,
    /// The Prometheus endpoint's state, when server.toml asks for one.
    metrics: Option<ServerMetrics>,
    /// The `[[feeds]]`, fetched by a thread of their own.
    feeds: Feeds,
    /// Snapshot pages asked for, sent within a budget per turn of the loop.
    pages: reports::PageQueue,
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
        let journal_names = journals::ban_journal_names(&config);
        let clean_stop = position::take(&config.state_dir, &journal_names);
        let (ledgers, journals) = journals::open_all(&config)?;
        let ctx = zmq::Context::new();
        ctx.set_io_threads(crate::sockets::transport::io_threads())
            .map_err(|e| Exit::Software.with(format!("libzmq's I/O threads: {e}")))?;
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
        let mut publisher = Publisher::open(
            &ctx,
            &key,
            address(config.publish_port),
            config.heartbeat_interval.0,
            ledgers.iter().map(|l| l.topic.clone()).collect(),
        )?;
        if let Some(saved) = clean_stop {
            let (epoch, streams) = (saved.epoch, saved.streams.len());
            if publisher.go_on_from(saved) {
                log::info!(
                    "going on from epoch {epoch} ({streams} streams), as the last stop left \
                     them: subscribers that missed nothing need not catch up"
                );
            }
        }
        // A million bans take about 330 MB.
        let guard = memory::Guard::new((256 << 20) + 512 * config.max_bans as u64);
        let control = control::bind(&ctx, &config.control_socket)?;
        let peers = Peers::open(&ctx, &config, &key, ledger::groups(&ledgers))?;
        let metrics = ServerMetrics::start(&config)?;
        let mut core = core::Core::new(ledgers, &config, auth);
        let mut changes = Changes::default();
        let feeds = Feeds::start(&config.feeds, &config.state_dir, &mut core, &mut changes)
            .map_err(|e| Exit::Config.with(e))?;
        let mut server = Server {
            metrics,
            peers,
            core,
            feeds,
            journals,
            config_path: config_path.to_owned(),
            config,
            key,
            ctx,
            zap,
            report,
            publisher,
            control,
            close_all: false,
            pages: reports::PageQueue::default(),
            guard,
            started: Instant::now(),
        };
        let peer_names: Vec<String> = server.config.peers.iter().map(PeerConfig::name).collect();
        server.core.start(&peer_names, &mut changes);
        server.carry_out(changes)?;
        Ok(server)
    }

    fn describe(&self) -> String {
        format!(
            "listening on {} (reports) and {} (publish) with {} authorized keys",
            endpoint(&self.config.listen.to_string(), self.config.report_port),
            endpoint(&self.config.listen.to_string(), self.config.publish_port),
            self.core.auth.count()
        )
    }

    /// Carries out what the core decided, in the one order that keeps the promise of the
    /// docs: journal and commit every record, and only then forward the waiting reports to
    /// the peers and publish the bans and unbans, which `Committed` alone allows. Returns
    /// the last seq published.
    fn carry_out(&mut self, mut changes: Changes) -> Result<Option<u64>, Failure> {
        self.core.settle_expired(&mut changes);
        let started = Instant::now();
        let mut wrote = false;
        let journals = &mut self.journals;
        let committed = changes
            .commit(|records| {
                wrote = !records.is_empty();
                journals.write(records)
            })
            .map_err(store_failure)?;
        if wrote {
            let histogram = self.metrics.as_ref().map(|m| &m.commit);
            ServerMetrics::observe(histogram, started.elapsed());
        }
        for (g, lines) in committed.forwarded() {
            let group = self.core.ledgers[*g].topic.group.as_ref();
            self.peers.forward(lines, group);
        }
        Ok(self.publisher.publish(committed))
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
                let mut changes = Changes::default();
                self.core.release_held(&mut changes);
                self.carry_out(changes)?;
                next_release = now + Duration::from_secs(1);
            }
            // What the feeds' thread fetched, within a tick of its arrival.
            let mut changes = Changes::default();
            if self.feeds.apply(&mut self.core, &mut changes) {
                self.carry_out(changes)?;
            }
            // Straight back while snapshot pages wait (`serve_pages`).
            let wait = match self.pages.is_empty() {
                true => self.publisher.until_heartbeat(now).min(TICK),
                false => Duration::ZERO,
            };
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
            self.core.auth.flush_refusals(false);
            self.guard_memory()?;
            if reports {
                self.handle_reports()?;
            }
            self.serve_pages();
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
        self.core.auth.flush_refusals(true);
        self.report.watch.flush_refusals(true);
        self.publisher.listener.watch.flush_refusals(true);
        self.save_position();
        Ok(())
    }

    /// A clean stop: the next start goes on from this epoch and seq (`position`).
    fn save_position(&mut self) {
        let names = journals::ban_journal_names(&self.config);
        let saved = self
            .journals
            .sync()
            .map_err(|e| e.to_string())
            .and_then(|()| {
                let position = self.publisher.saved_position();
                position::save(&self.config.state_dir, position, &names).map_err(|e| e.to_string())
            });
        if let Err(e) = saved {
            log::warn!("cannot save the publish position, the next start takes a new epoch: {e}");
        }
    }

    /// Copies the state for the metrics endpoint, once a second when it is on.
    fn refresh_metrics(&mut self, now: Instant) {
        if !self.metrics.as_mut().is_some_and(|m| m.endpoint.due(now)) {
            return;
        }
        let mut refused_handshakes = std::collections::BTreeMap::new();
        self.core.auth.add_refusals(&mut refused_handshakes);
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

    /// Forgets expired bans and waiting reports, and compacts the journals when they have
    /// grown.
    fn purge(&mut self) -> Result<(), Failure> {
        let mut changes = Changes::default();
        self.core.purge(unix_now(), &mut changes);
        self.carry_out(changes)?;
        self.journals
            .compact(&self.core.ledgers)
            .map_err(store_failure)
    }

    /// Past the memory guard's limit, closes every connection, which frees whatever peers
    /// were in the middle of sending (see `memory`).
    fn guard_memory(&mut self) -> Result<(), Failure> {
        let Some(resident) = self.guard.tripped() else {
            return Ok(());
        };
        self.close_all_connections()?;
        self.core.intake.counters.closed_all += 1;
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
