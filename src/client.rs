//! banshare-client: subscribes to the server's publish socket and applies each ban on this
//! host with the configured command, unless it would cover a protected address.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::bans::unix_now;
use crate::cli::{self, ClientArgs};
use crate::config::ClientConfig;
use crate::connection::ConnectionWatch;
use crate::exit::{Exit, Failure};
use crate::keys::{self, KeyPair, PublicKey};
use crate::protect::{self, Protected};
use crate::protocol::{Ban, Publish, VERSION};
use crate::runner::Runner;
use crate::service::{self, Signals, Watchdog};
use crate::template::Values;
use crate::transport::{self, endpoint};

/// READY=1 is sent at the first message from the server, or after this long without one,
/// so that a host still boots while the server is down; the client keeps retrying.
const READY_WAIT: Duration = Duration::from_secs(10);
/// How often this host's own addresses are read again, as interfaces come and go.
const LOCAL_REFRESH: Duration = Duration::from_secs(10);
const TICK: Duration = Duration::from_millis(100);
/// After the server refused our key, try again this often with a new socket.
const RETRY_REFUSED: Duration = Duration::from_secs(2);

pub fn main() -> std::process::ExitCode {
    let args: ClientArgs = cli::parse();
    service::run_daemon(
        "banshare-client",
        args.log,
        || ClientConfig::load(&args.config).map_err(|e| (Exit::Config, e.to_string())),
        |config| config.log_level,
        |config, signals| {
            Client::start(&args.config, config)?.serve(signals);
            Ok(())
        },
    )
}

/// The keys a client needs, from the files client.toml names.
pub fn load_keys(config: &ClientConfig) -> Result<(PublicKey, KeyPair), Failure> {
    let failure = |e: keys::KeyError| (Exit::Config, e.to_string());
    let server = keys::load_public(&config.server_key).map_err(failure)?;
    let own = keys::load_secret(&config.key).map_err(failure)?;
    Ok((server, own))
}

struct Client {
    config_path: PathBuf,
    config: ClientConfig,
    ctx: zmq::Context,
    subscription: Subscription,
    runner: Runner,
    protected: Protected,
    protected_at: Instant,
    /// The last (epoch, seq) seen, to notice missed messages.
    position: Option<(u64, u64)>,
    ready: bool,
}

impl Client {
    fn start(config_path: &Path, config: ClientConfig) -> Result<Client, Failure> {
        let ctx = zmq::Context::new();
        let subscription = subscribe(&ctx, &config)?;
        log::info!(
            "subscribing to {} as key {} (server key {})",
            endpoint(&config.server, config.publish_port),
            subscription.key.fingerprint(),
            subscription.server_key.fingerprint()
        );
        Ok(Client {
            config_path: config_path.to_owned(),
            runner: Runner::new(config.max_concurrent_commands, config.command_timeout.0),
            protected: protection(&config),
            protected_at: Instant::now(),
            config,
            ctx,
            subscription,
            position: None,
            ready: false,
        })
    }

    fn server_endpoint(&self) -> String {
        endpoint(&self.config.server, self.config.publish_port)
    }

    fn serve(&mut self, signals: &Signals) {
        let started = Instant::now();
        let mut watchdog = Watchdog::from_env();
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
            let mut items = [
                self.subscription.socket.as_poll_item(zmq::POLLIN),
                self.subscription.watch.socket().as_poll_item(zmq::POLLIN),
            ];
            // EINTR from a signal just goes round the loop again.
            if zmq::poll(&mut items, TICK.as_millis() as i64).is_err() {
                continue;
            }
            let (messages, events) = (items[0].is_readable(), items[1].is_readable());
            if events {
                self.subscription.watch.drain();
            }
            if messages {
                self.drain();
            }
        }
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
            Err((_, e)) => {
                log::error!("cannot open a new subscriber socket: {e}");
                self.subscription.watch.postpone_retry();
            }
        }
    }

    fn mark_ready(&mut self, state: &str) {
        self.ready = true;
        service::ready(&format!("{state}: {}", self.server_endpoint()));
    }

    fn drain(&mut self) {
        while let Ok(frames) = self.subscription.socket.recv_multipart(zmq::DONTWAIT) {
            match Publish::decode(&frames) {
                Ok(message) => self.handle(message),
                Err(e) => log::warn!("ignored a malformed message from the server: {e}"),
            }
        }
    }

    fn handle(&mut self, message: Publish) {
        if !self.ready {
            log::info!("connected to {}", self.server_endpoint());
            self.mark_ready("connected");
        }
        match message {
            Publish::Heartbeat { epoch, seq } => self.track(epoch, seq, true),
            Publish::Ban { epoch, seq, ban } => {
                self.track(epoch, seq, false);
                self.apply(&ban, false);
            }
            Publish::Unban { epoch, seq, ban } => {
                self.track(epoch, seq, false);
                self.apply(&ban, true);
            }
        }
    }

    /// Notes the server's position and says when messages were missed.
    fn track(&mut self, epoch: u64, seq: u64, heartbeat: bool) {
        // A heartbeat repeats the last seq; a ban or unban brings the next one.
        let newest_missed = if heartbeat {
            seq
        } else {
            seq.saturating_sub(1)
        };
        match self.position {
            Some((e, last)) if e == epoch && newest_missed > last => log::warn!(
                "missed {} messages from the server (seq {} to {newest_missed})",
                newest_missed - last,
                last + 1
            ),
            Some((e, _)) if e != epoch => log::info!("server restarted (new epoch {epoch})"),
            _ => {}
        }
        self.position = Some((epoch, seq));
    }

    fn apply(&mut self, ban: &Ban, unban: bool) {
        let verb = if unban { "unban" } else { "ban" };
        if let Err(reason) = self.check(ban) {
            log::warn!(
                "not applying {verb} of {} from {}: {reason}",
                ban.ip,
                ban.origin
            );
            return;
        }
        if !unban && ban.expires.is_some_and(|e| e <= unix_now()) {
            log::info!("not applying ban of {}: it has already expired", ban.ip);
            return;
        }
        let template = if unban {
            &self.config.unban_command
        } else {
            &self.config.ban_command
        };
        let ip = ban.ip.to_string();
        let bantime = ban.bantime.map_or("-1".to_string(), |b| b.to_string());
        let argv = template.expand(&Values {
            ip: &ip,
            jail: ban.jail.as_str(),
            prog: ban.prog.as_str(),
            bantime: &bantime,
        });
        let label = format!(
            "{verb} {ip} ({} {} from {})",
            ban.prog, ban.jail, ban.origin
        );
        self.runner.submit(argv, label);
    }

    /// A malicious or mistaken server must not make this host ban itself, its server, a
    /// protected network or a huge range.
    fn check(&mut self, ban: &Ban) -> Result<(), String> {
        self.config.min_prefix.check(&ban.ip)?;
        if self.protected_at.elapsed() >= LOCAL_REFRESH {
            self.protected = protection(&self.config);
            self.protected_at = Instant::now();
        }
        self.protected.check(&ban.ip)
    }

    fn reload(&mut self) {
        service::reloading();
        log::info!("reloading {}", self.config_path.display());
        match ClientConfig::load(&self.config_path) {
            Ok(config) => self.apply_config(config),
            Err(e) => log::error!("reload failed, keeping the running configuration: {e}"),
        }
        service::ready(&format!("connected: {}", self.server_endpoint()));
    }

    fn apply_config(&mut self, config: ClientConfig) {
        let reconnect = (
            &config.server,
            config.publish_port,
            &config.server_key,
            &config.key,
        ) != (
            &self.config.server,
            self.config.publish_port,
            &self.config.server_key,
            &self.config.key,
        );
        if reconnect {
            match subscribe(&self.ctx, &config) {
                Ok(subscription) => {
                    self.subscription = subscription;
                    self.position = None;
                }
                Err((_, e)) => {
                    log::error!("reload failed, keeping the running configuration: {e}");
                    return;
                }
            }
        }
        if (config.max_concurrent_commands, config.command_timeout)
            != (
                self.config.max_concurrent_commands,
                self.config.command_timeout,
            )
        {
            self.runner = Runner::new(config.max_concurrent_commands, config.command_timeout.0);
        }
        log::set_max_level(config.log_level.filter());
        self.protected = protection(&config);
        self.protected_at = Instant::now();
        self.config = config;
    }
}

/// The subscriber socket and the watch on its connection.
struct Subscription {
    socket: zmq::Socket,
    watch: ConnectionWatch,
    key: PublicKey,
    server_key: PublicKey,
}

fn subscribe(ctx: &zmq::Context, config: &ClientConfig) -> Result<Subscription, Failure> {
    let (server_key, key) = load_keys(config)?;
    let fail = |e: zmq::Error| (Exit::Software, format!("subscriber socket: {e}"));
    let socket = transport::client_socket(ctx, zmq::SUB, &server_key, &key).map_err(fail)?;
    socket.set_subscribe(VERSION.as_bytes()).map_err(fail)?;
    let address = endpoint(&config.server, config.publish_port);
    // Attached before connecting, so that not even the first failure goes unexplained.
    let watch = ConnectionWatch::attach(ctx, &socket, &address).map_err(fail)?;
    socket
        .connect(&address)
        .map_err(|e| (Exit::Config, format!("cannot connect to {address}: {e}")))?;
    log::debug!("subscriber socket connecting to {address}");
    Ok(Subscription {
        socket,
        watch,
        key: key.public,
        server_key,
    })
}

/// The built-in and configured ranges, this host's addresses and the server's addresses.
fn protection(config: &ClientConfig) -> Protected {
    let mut protected = Protected::new(&config.protected);
    for addr in protect::local_addresses() {
        protected.add(addr, "this host's");
    }
    let server: Vec<IpAddr> = protect::resolve(&config.server);
    if server.is_empty() {
        log::warn!(
            "cannot resolve server {}; its address is not protected",
            config.server
        );
    }
    for addr in server {
        protected.add(addr, "the banshare server's");
    }
    protected
}
