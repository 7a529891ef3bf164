//! banshare-client: subscribes to the server's publish socket and applies each ban on this
//! host with the configured command, unless it would cover a protected address. At start,
//! after a gap in sequence numbers, a new server epoch or missed heartbeats, it reads the
//! server's active bans page by page and catches up (`wire::follow` decides, `catchup` asks
//! and applies). It also delivers the reporter's spool (`courier`). Bans are carried out by
//! `apply`.

pub mod apply;
mod catchup;
pub mod courier;
pub mod link;
pub mod report;
pub mod spool;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cli::{self, ClientArgs};
use crate::config::ClientConfig;
use crate::daemon::memory;
use crate::daemon::service::{self, Signals, Watchdog};
use crate::exit::{Exit, Failure};
use crate::logging::LogLimit;
use crate::wire::follow::Follower;
use crate::wire::protocol::{Ban, Publish};
use crate::wire::transport::{self, endpoint};
use crate::wire::upstream::{within_bounds, PUBLISHED_FRAMES};
use apply::record::Action;
use apply::Enforcer;
use courier::Courier;
use link::{load_keys, request_socket, subscribe, Subscription};
use spool::Spool;

/// READY=1 is sent at the first message from the server, or after this long without one,
/// so that a host still boots while the server is down; the client keeps retrying.
const READY_WAIT: Duration = Duration::from_secs(10);
const TICK: Duration = Duration::from_millis(100);
/// After the server refused our key, try again this often with a new socket.
const RETRY_REFUSED: Duration = Duration::from_secs(2);
/// How often the record of applied bans is checked for compaction.
const COMPACT_EVERY: Duration = Duration::from_secs(600);

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
    subscription: Subscription,
    /// A DEALER on the report socket, for snapshot pages.
    requester: zmq::Socket,
    follower: Follower,
    enforcer: Enforcer,
    courier: Courier,
    ready: bool,
    /// Lines about what the server sent.
    log_limit: LogLimit,
    guard: memory::Guard,
}

impl Client {
    fn start(config_path: &Path, config: ClientConfig) -> Result<Client, Failure> {
        // Before anything is opened or logged: a bad key or directory is one clear line.
        load_keys(&config)?;
        check_dirs(&config)?;
        let enforcer = Enforcer::start(&config)?;
        let ctx = zmq::Context::new();
        let subscription = subscribe(&ctx, &config)?;
        let requester = request_socket(&ctx, &config)?;
        let courier = request_socket(&ctx, &config)?;
        log::info!(
            "subscribing to {} as key {} (server key {})",
            endpoint(&config.server, config.publish_port),
            subscription.key.fingerprint(),
            subscription.server_key.fingerprint()
        );
        Ok(Client {
            config_path: config_path.to_owned(),
            courier: Courier::new(courier, Spool::new(&config.spool_dir, config.spool_max)),
            config,
            ctx,
            subscription,
            requester,
            follower: Follower::new(Instant::now()),
            enforcer,
            ready: false,
            log_limit: LogLimit::default(),
            // Beyond what a million applied bans take; 3/4 of MemoryMax under systemd.
            guard: memory::Guard::new(512 << 20),
        })
    }

    fn server_endpoint(&self) -> String {
        endpoint(&self.config.server, self.config.publish_port)
    }

    fn serve(&mut self, signals: &Signals) -> Result<(), Failure> {
        let started = Instant::now();
        let mut watchdog = Watchdog::from_env();
        let mut next_compaction = Instant::now() + COMPACT_EVERY;
        service::status(&format!("connecting to {}", self.server_endpoint()));
        while !signals.should_stop() {
            if signals.take_reload() {
                self.reload();
            }
            watchdog.tick();
            self.retry_if_refused();
            if !self.ready && started.elapsed() >= READY_WAIT {
                log::warn!(
                    "no message from {} yet; still trying",
                    self.server_endpoint()
                );
                self.mark_ready("waiting for the server");
            }
            self.check_heartbeats();
            self.drive_resync();
            let (ctx, config) = (&self.ctx, &self.config);
            self.courier.deliver(|| request_socket(ctx, config));
            if Instant::now() >= next_compaction {
                self.enforcer.compact()?;
                next_compaction = Instant::now() + COMPACT_EVERY;
            }
            let mut items = [
                self.subscription.socket.as_poll_item(zmq::POLLIN),
                self.subscription.watch.socket().as_poll_item(zmq::POLLIN),
                self.requester.as_poll_item(zmq::POLLIN),
                self.courier.socket().as_poll_item(zmq::POLLIN),
            ];
            // EINTR from a signal just goes round the loop again.
            if zmq::poll(&mut items, TICK.as_millis() as i64).is_err() {
                continue;
            }
            let [messages, events, pages, verdicts] = items.map(|item| item.is_readable());
            if events {
                self.subscription.watch.drain();
            }
            if messages {
                self.drain();
            }
            if pages {
                self.read_pages();
            }
            if verdicts {
                self.courier.read_verdicts();
            }
            self.enforcer.collect(self.config.retry_interval.0)?;
            self.guard_memory();
            // After the results, so that what a stopped thread finished is recorded; before
            // the next watchdog ping.
            self.enforcer.check_threads()?;
        }
        self.enforcer.finish_running(self.config.retry_interval.0)
    }

    fn retry_if_refused(&mut self) {
        if self.subscription.watch.refused_for() < Some(RETRY_REFUSED) {
            return;
        }
        match subscribe(&self.ctx, &self.config) {
            Ok(mut subscription) => {
                subscription.watch.continue_from(&self.subscription.watch);
                self.subscription = subscription;
            }
            Err(e) => {
                log::error!("cannot open a new subscriber socket: {e}");
                self.subscription.watch.postpone_retry();
            }
        }
    }

    fn mark_ready(&mut self, state: &str) {
        self.ready = true;
        service::ready(&format!("{state}: {}", self.server_endpoint()));
    }

    /// A silent server, or a failed ban command due to be tried again, calls for a
    /// catch-up.
    fn check_heartbeats(&mut self) {
        if self.ready {
            if let Some(silent) = self.follower.silence(Instant::now()) {
                log::warn!(
                    "no heartbeat from {} for {} s; will resynchronise",
                    self.server_endpoint(),
                    silent.as_secs()
                );
            }
        }
        if self.enforcer.retry_due() {
            self.follower.want();
        }
    }

    fn drain(&mut self) {
        while let Ok(received) =
            transport::recv_bounded(&self.subscription.socket, zmq::DONTWAIT, PUBLISHED_FRAMES)
        {
            match within_bounds(&received).and_then(Publish::decode) {
                Ok(message) => self.handle(message),
                Err(e) => {
                    self.warn_about_server(&format!("ignored a message from the server: {e}"));
                }
            }
        }
    }

    /// A warning about what the server sent, at most 20 a minute: a broken or hostile
    /// server must not fill the disk with the log.
    fn warn_about_server(&mut self, line: &str) {
        match self.log_limit.admit("server", Instant::now()) {
            Some(0) => log::warn!("{line}"),
            Some(held_back) => log::warn!("{line} ({held_back} more such lines were held back)"),
            None => {}
        }
    }

    /// Past the memory guard's limit, closes every connection to the server, which frees
    /// whatever it was in the middle of sending (see `memory`), and catches up afresh.
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

    fn handle(&mut self, message: Publish) {
        if !self.ready {
            log::info!("connected to {}", self.server_endpoint());
            self.mark_ready("connected");
        }
        let now = Instant::now();
        match message {
            Publish::Heartbeat {
                epoch,
                seq,
                interval_ms,
            } => self.follower.heartbeat(epoch, seq, interval_ms, now),
            Publish::Ban { epoch, seq, ban } => {
                self.follower.published(epoch, seq, ban.ip, now);
                self.act_on(&ban, Action::Ban);
            }
            Publish::Unban {
                epoch,
                seq,
                ban,
                lifted,
            } => {
                self.follower.published(epoch, seq, ban.ip, now);
                if let Err(line) = self.enforcer.lift(&self.config, &ban, lifted) {
                    self.warn_about_server(&line);
                }
            }
        }
    }

    /// A ban or unban from the server, carried out unless this host must not.
    fn act_on(&mut self, ban: &Ban, action: Action) {
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
        service::ready(&format!("connected: {}", self.server_endpoint()));
    }

    /// New sockets to the server as `config` says, dropping the old ones (and whatever they
    /// held), then a catch-up.
    fn reconnect(&mut self, config: &ClientConfig) -> Result<(), Failure> {
        let subscription = subscribe(&self.ctx, config)?;
        let requester = request_socket(&self.ctx, config)?;
        let courier = request_socket(&self.ctx, config)?;
        self.subscription = subscription;
        self.requester = requester;
        self.courier.reconnect(courier);
        self.follower.restart();
        Ok(())
    }

    /// Takes a reloaded configuration.
    fn adopt(&mut self, config: ClientConfig) {
        let endpoints = |c: &ClientConfig| (c.server.clone(), c.publish_port, c.report_port);
        // The key files' contents count, not their names: a rotation rewrites them in place.
        let keys = load_keys(&config).map(|(server, own)| (server, own.public));
        let current = (self.subscription.server_key, self.subscription.key);
        let reconnect = endpoints(&config) != endpoints(&self.config) || keys.ok() != Some(current);
        if reconnect {
            if let Err(e) = self.reconnect(&config) {
                log::error!("reload failed, keeping the running configuration: {e}");
                return;
            }
        }
        if self.enforcer.adopt(&self.config, &config) {
            self.follower.want();
        }
        if config.state_dir != self.config.state_dir {
            log::warn!("state-dir changes only on restart");
        }
        log::set_max_level(config.log_level.filter());
        self.courier
            .set_spool(Spool::new(&config.spool_dir, config.spool_max));
        self.config = config;
    }
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
