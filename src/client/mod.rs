//! banshare-client: subscribes to the publish socket of its server, or of each of several
//! (docs/ha.md), and applies each ban on this host with the configured command, once,
//! unless it would cover a protected address. At start, after a gap in sequence numbers, a
//! new server epoch or missed heartbeats, it reads that server's active bans page by page
//! and catches up (`wire::follow` decides, `sockets::upstream` asks, `catchup` applies). It
//! also delivers the reporter's spool (`courier`), and sends on the reports banshare-report
//! hands it (`handoff`). Bans are carried out by `apply`.

pub mod apply;
mod catchup;
pub mod courier;
mod dry_run;
mod handoff;
pub mod link;
mod metrics;
pub mod report;
pub mod spool;
mod status;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cli::{self, ClientArgs};
use crate::config::ClientConfig;
use crate::daemon::memory;
use crate::daemon::metrics::Endpoint;
use crate::daemon::service::{self, Signals, Watchdog};
use crate::exit::{Exit, Failure};
use crate::logging::LogLimit;
use crate::sockets::control as control_socket;
use crate::sockets::poll::Poll;
use crate::sockets::request::Requester;
use crate::sockets::upstream::{Heard, Target, Upstream};
use crate::wire::control::ClientStatus;
use crate::wire::keys::KeyPair;
use crate::wire::protocol::{Ban, Publish};
use crate::wire::topic::Topic;
use apply::record::Action;
use apply::Enforcer;
use courier::Courier;
use dry_run::DryRun;
use handoff::{Desk, Reporting};
use link::{own_key, request_socket, targets};
use spool::Spool;
use status::Links;

/// READY=1 is sent at the first message from a server, or after this long without one,
/// so that a host still boots while the servers are down; the client keeps retrying.
const READY_WAIT: Duration = Duration::from_secs(10);
const TICK: Duration = Duration::from_millis(100);
/// How often the record of applied bans is checked for compaction.
const COMPACT_EVERY: Duration = Duration::from_secs(600);
/// How often systemd's status line (`systemctl status banshare-client`) is brought up to
/// date with each server's state.
const STATUS_EVERY: Duration = Duration::from_secs(5);

pub fn main() -> std::process::ExitCode {
    let args: ClientArgs = cli::parse();
    service::run_daemon(
        "banshare-client",
        args.log,
        || ClientConfig::load(&args.config).map_err(Failure::from),
        |config| config.log_level,
        |config, signals| Client::start(&args.config, config)?.serve(signals),
    )
}

struct Client {
    config_path: PathBuf,
    config: ClientConfig,
    ctx: zmq::Context,
    own: KeyPair,
    /// Each server followed, in client.toml's order, each with its own position.
    servers: Vec<Upstream>,
    enforcer: Enforcer,
    /// What this host would do with the bans of the servers' dry-run groups.
    dry_run: DryRun,
    courier: Courier,
    ready: bool,
    /// Lines about what the servers sent.
    log_limit: LogLimit,
    guard: memory::Guard,
    /// `banshare status` on this host.
    control: zmq::Socket,
    links: Links,
    /// Catch-ups completed, for the status.
    resyncs: u64,
    started: Instant,
    /// The Prometheus endpoint, when client.toml asks for one.
    metrics: Option<Endpoint<ClientStatus>>,
    /// Reports from banshare-report on this host, unless client.toml turns it off.
    desk: Option<Desk>,
}

impl Client {
    fn start(config_path: &Path, config: ClientConfig) -> Result<Client, Failure> {
        // Before anything is opened or logged: a bad key or directory is one clear line.
        let own = own_key(&config)?;
        let targets = targets(&config)?;
        check_dirs(&config)?;
        let enforcer = Enforcer::start(&config)?;
        let ctx = zmq::Context::new();
        let desk = Desk::start(&ctx, &config, Reporting::new(&config, &targets, &own))?;
        let servers = open_all(&ctx, targets, &own, &config)?;
        let control = control_socket::bind(&ctx, &config.control_socket)?;
        let metrics = metrics::start(&config, &enforcer)?;
        Ok(Client {
            control,
            links: Links::default(),
            resyncs: 0,
            started: Instant::now(),
            metrics,
            desk,
            dry_run: DryRun::default(),
            config_path: config_path.to_owned(),
            courier: Courier::new(Spool::new(&config.spool_dir, config.spool_max)),
            config,
            ctx,
            own,
            servers,
            enforcer,
            ready: false,
            log_limit: LogLimit::default(),
            // Beyond what a million applied bans take; 3/4 of MemoryMax under systemd.
            guard: memory::Guard::new(512 << 20),
        })
    }

    /// The servers' publish sockets, for the log and systemd's status line.
    fn endpoints(&self) -> String {
        let names: Vec<&str> = self
            .servers
            .iter()
            .map(|s| s.target.name.as_str())
            .collect();
        names.join(", ")
    }

    fn serve(&mut self, signals: &Signals) -> Result<(), Failure> {
        let started = Instant::now();
        let mut watchdog = Watchdog::from_env();
        let mut next_compaction = Instant::now() + COMPACT_EVERY;
        let mut next_status = Instant::now() + STATUS_EVERY;
        service::status(&format!("connecting to {}", self.endpoints()));
        while !signals.should_stop() {
            if signals.take_reload() {
                self.reload();
            }
            watchdog.tick();
            if !self.ready && started.elapsed() >= READY_WAIT {
                log::warn!("no message from {} yet; still trying", self.endpoints());
                self.mark_ready("waiting for the server");
            }
            self.check_heartbeats();
            self.refresh(Instant::now());
            for server in &mut self.servers {
                server.retry_if_refused(&self.ctx, &self.own);
                server.drive(&self.ctx, &self.own);
            }
            self.deliver_spool();
            if Instant::now() >= next_compaction {
                self.enforcer.compact()?;
                next_compaction = Instant::now() + COMPACT_EVERY;
            }
            if self.ready && Instant::now() >= next_status {
                service::status(&self.status_line());
                next_status = Instant::now() + STATUS_EVERY;
            }
            let mut poll = Poll::default();
            poll.add(self.servers.iter().flat_map(Upstream::poll_items));
            let verdicts = poll.add(self.courier.poll_items());
            let commands = poll.add([self.control.as_poll_item(zmq::POLLIN)]);
            if poll.wait(TICK).is_err() {
                continue;
            }
            let (verdicts, commands) = (poll.ready(&verdicts), poll.ready(&commands));
            self.read_servers();
            if verdicts {
                self.courier.read_verdicts();
            }
            if commands {
                self.handle_command();
            }
            self.enforcer.collect(self.config.retry_interval.0)?;
            self.guard_memory();
            // After the results, so that what a stopped thread finished is recorded; before
            // the next watchdog ping.
            self.enforcer.check_threads()?;
            if let Some(desk) = &self.desk {
                desk.check()?;
            }
            if let Some(metrics) = &self.metrics {
                metrics.check()?;
            }
        }
        self.enforcer.finish_running(self.config.retry_interval.0)
    }

    /// Sends the spool on its way; a server that does not answer in time is left for the
    /// next one.
    fn deliver_spool(&mut self) {
        let (ctx, own, servers) = (&self.ctx, &self.own, &self.servers);
        self.courier.deliver(servers.len(), |i| {
            let socket = request_socket(ctx, zmq::DEALER, &servers[i].target, own)?;
            Ok(Requester::new(ctx, socket))
        });
    }

    /// Each server followed and how it stands, for systemd's status line: "following
    /// tcp://bs1:41235 (seq 12), tcp://bs2:41235 (silent for 40 s)".
    fn status_line(&self) -> String {
        let now = crate::clock::unix_now();
        let servers: Vec<String> = self
            .servers
            .iter()
            .map(|server| {
                let state = match (server.is_live(Instant::now()), server.heard_at) {
                    (true, _) => positions(server),
                    (false, Some(at)) => format!("silent for {} s", now.saturating_sub(at)),
                    (false, None) => "not reached yet".into(),
                };
                format!("{} ({state})", server.target.name)
            })
            .collect();
        format!("following {}", servers.join(", "))
    }

    fn mark_ready(&mut self, state: &str) {
        self.ready = true;
        service::ready(&format!("{state}: {}", self.endpoints()));
    }

    /// A silent server, or a failed ban command due to be tried again, calls for a
    /// catch-up.
    fn check_heartbeats(&mut self) {
        let retry = self.enforcer.retry_due();
        for server in &mut self.servers {
            if self.ready {
                if let Some(silent) = server.silence(Instant::now()) {
                    log::warn!(
                        "no heartbeat from {} for {} s; will resynchronise",
                        server.target.name,
                        silent.as_secs()
                    );
                }
            }
            if retry {
                server.want();
            }
        }
    }

    /// What every server sent: messages, snapshot pages, and what broke the protocol.
    fn read_servers(&mut self) {
        for i in 0..self.servers.len() {
            let first = self.servers[i].heard_at.is_none();
            let before = standing(&self.servers[i]);
            let heard = self.servers[i].read();
            // Heard again after a silence, or restarted: what the courier sent may be lost.
            let after = standing(&self.servers[i]);
            if after.0 && (!before.0 || before.1 != after.1) {
                self.courier.server_back();
            }
            if self.servers[i].take_oversized() {
                self.guard.release();
            }
            if first && !heard.is_empty() {
                log::info!("connected to {}", self.servers[i].target.name);
                if !self.ready {
                    self.mark_ready("connected");
                }
            }
            for item in heard {
                match item {
                    Heard::Message(topic, message) => self.handle(&topic, message),
                    Heard::Page(page) => self.take_page(i, page),
                    Heard::Bad(line) => {
                        let line = format!("{}: {line}", self.servers[i].target.name);
                        self.warn_about_server(&line);
                    }
                }
            }
        }
    }

    /// A warning about what a server sent, at most 20 a minute: a broken or hostile
    /// server must not fill the disk with the log.
    fn warn_about_server(&mut self, line: &str) {
        match self.log_limit.admit("server", Instant::now()) {
            Some(0) => log::warn!("{line}"),
            Some(held_back) => log::warn!("{line} ({held_back} more such lines were held back)"),
            None => {}
        }
    }

    /// Past the memory guard's limit, closes every connection to the servers, which frees
    /// whatever they were in the middle of sending (see `memory`), and catches up afresh.
    fn guard_memory(&mut self) {
        let Some(resident) = self.guard.tripped() else {
            return;
        };
        let reconnected = self.reconnect(&self.config.clone());
        self.guard.release();
        log::error!(
            "memory guard: the client held {}, over its limit of {}; closed its connections \
             to the server, which frees what it was in the middle of sending{}",
            memory::megabytes(resident),
            memory::megabytes(self.guard.limit()),
            reconnected.map_or_else(
                |e| format!(", but cannot connect again: {e}"),
                |()| String::new()
            ),
        );
    }

    /// A ban or unban from a server; its position was noted by `Upstream::read`.
    fn handle(&mut self, topic: &Topic, message: Publish) {
        match message {
            Publish::Heartbeat { .. } => {}
            Publish::Ban { ban, .. } => self.act_on(topic, &ban, Action::Ban),
            Publish::Unban { ban, .. } if topic.dry_run => {
                self.act_on(topic, &ban, Action::Unban);
            }
            Publish::Unban { ban, lifted, .. } => {
                if let Err(line) = self.enforcer.lift(&self.config, &ban, lifted) {
                    self.warn_about_server(&line);
                }
            }
        }
    }

    /// A ban or unban from a server, carried out unless this host must not; under a
    /// dry-run topic, only logged (`dry_run`).
    fn act_on(&mut self, topic: &Topic, ban: &Ban, action: Action) {
        if topic.dry_run {
            let (config, enforcer) = (&self.config, &mut self.enforcer);
            return self.dry_run.would(config, topic, ban, action, enforcer);
        }
        if let Err(line) = self.enforcer.enforce(&self.config, ban, action) {
            self.warn_about_server(&line);
        }
    }

    fn reload(&mut self) {
        service::reloading();
        log::info!("reloading {}", self.config_path.display());
        match ClientConfig::load(&self.config_path) {
            Ok(config) => self.adopt(config),
            Err(e) => log::error!("reload failed, keeping the running configuration: {e}"),
        }
        service::ready(&format!("connected: {}", self.endpoints()));
    }

    /// New sockets to the servers as `config` says, dropping the old ones (and whatever
    /// they held), then a catch-up with each.
    fn reconnect(&mut self, config: &ClientConfig) -> Result<(), Failure> {
        let own = own_key(config)?;
        let targets = targets(config)?;
        if let Some(desk) = &self.desk {
            desk.update(Reporting::new(config, &targets, &own));
        }
        let servers = open_all(&self.ctx, targets, &own, config)?;
        (self.own, self.servers) = (own, servers);
        self.courier.reconnect();
        Ok(())
    }

    /// Takes a reloaded configuration.
    fn adopt(&mut self, config: ClientConfig) {
        // The key files' contents count, not their names: a rotation rewrites them in place.
        let wanted = targets(&config).and_then(|t| Ok((t, own_key(&config)?.public)));
        let current: Vec<Target> = self.servers.iter().map(|s| s.target.clone()).collect();
        let regrouped = config.groups != self.config.groups;
        if regrouped || wanted.ok() != Some((current, self.own.public)) {
            if let Err(e) = self.reconnect(&config) {
                log::error!("reload failed, keeping the running configuration: {e}");
                return;
            }
        }
        if self.enforcer.adopt(&self.config, &config) {
            for server in &mut self.servers {
                server.want();
            }
        }
        if config.state_dir != self.config.state_dir {
            log::warn!("state-dir changes only on restart");
        }
        if config.report_socket != self.config.report_socket {
            log::warn!("report-socket changes only on restart");
        }
        log::set_max_level(config.log_level.filter());
        self.courier
            .set_spool(Spool::new(&config.spool_dir, config.spool_max));
        self.config = config;
    }
}

/// A follower for each server, with its sockets.
fn open_all(
    ctx: &zmq::Context,
    targets: Vec<Target>,
    own: &KeyPair,
    config: &ClientConfig,
) -> Result<Vec<Upstream>, Failure> {
    targets
        .into_iter()
        .map(|target| {
            let address = target.publish_endpoint();
            log::info!(
                "subscribing to {address} as key {} (server key {})",
                own.public.fingerprint(),
                target.key.fingerprint()
            );
            Upstream::open(ctx, target, own, config.groups.clone())
                .map_err(|e| Exit::Config.with(format!("cannot connect to {address}: {e}")))
        })
        .collect()
}

/// Whether the server is heard, and its epoch as its first stream last heard it.
fn standing(server: &Upstream) -> (bool, Option<u64>) {
    let position = server.streams.first().and_then(|s| s.follower.position());
    (
        server.is_live(Instant::now()),
        position.map(|(epoch, _)| epoch),
    )
}

/// Where each stream of a server stands: "seq 12", or "web seq 12, mail seq 3".
fn positions(server: &Upstream) -> String {
    let each: Vec<String> = server
        .streams
        .iter()
        .map(|s| {
            let seq = s
                .follower
                .position()
                .map_or("connected".into(), |(_, q)| format!("seq {q}"));
            match &s.topic.group {
                Some(group) => format!("{group} {seq}"),
                None => seq,
            }
        })
        .collect();
    each.join(", ")
}

/// The client runs as root: no other user may be able to put files where it writes.
fn check_dirs(config: &ClientConfig) -> Result<(), Failure> {
    crate::files::own_dir(&config.state_dir, 0o750).map_err(|e| Exit::Config.with(e))?;
    // banshare-report makes the spool when it first needs it.
    if config.spool_dir.exists() {
        crate::files::check_own_dir(&config.spool_dir).map_err(|e| Exit::Config.with(e))?;
    }
    Ok(())
}
