//! Applying bans on this host: each ban or unban is checked against what must never be
//! banned here, skipped when the record says it is applied already, and handed to the
//! backend (one command per ban through the runner, or batches for fail2ban and nftables),
//! whose results go into the record.

pub mod backend;
mod netlink;
pub mod record;
pub mod runner;

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use prometheus_client::metrics::histogram::Histogram;

use crate::clock::unix_now;
use crate::config::template::Values;
use crate::config::{BackendKind, ClientConfig};
use crate::exit::{Exit, Failure};
use crate::protect::{self, Protected, LOCAL_REFRESH};
use crate::store::{StoreError, CLIENT_JOURNAL, DRY_RUN_JOURNAL};
use crate::wire::cidr::Cidr;
use crate::wire::protocol::{Ban, Lift};
use backend::{Batcher, Done, Fail2ban, LogOnly, Nftables, Op};
use record::{Action, AppliedBans, Stale};
use runner::{Applied, Runner};

/// How long a stopping client waits for commands still running.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// What the backend did since the start, for `banshare status` and the metrics.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub bans: u64,
    pub unbans: u64,
    pub failed: u64,
    /// Refused by the firewall for good, and not tried again.
    pub refused: u64,
    /// The last failure, when (unix time) and what failed; the log says why.
    pub last_error: Option<(u64, String)>,
}

/// Carries out bans and unbans on this host, and remembers what it did.
pub struct Enforcer {
    pub tally: Tally,
    /// Each ban command (or batch), from its start to its end: shared with the threads
    /// that run them.
    pub latency: Histogram,
    backend: Backend,
    results: Receiver<Done>,
    record: AppliedBans,
    /// The built-in and configured networks, this host's addresses and the server's, read
    /// again every LOCAL_REFRESH.
    protected: Protected,
    protected_at: Instant,
    /// When to catch up again because a ban command failed.
    retry_failed_at: Option<Instant>,
}

impl Enforcer {
    /// Opens the record of applied bans and starts the backend, and puts what was applied
    /// back into nftables (`restore`).
    pub fn start(config: &ClientConfig) -> Result<Enforcer, Failure> {
        let record = open_record(config)?;
        let latency = crate::daemon::metrics::seconds_histogram();
        let (backend, results) = Backend::start(config, &latency)?;
        if let Backend::Batched(batcher) = &backend {
            if config.backend == BackendKind::Nftables {
                restore(&record, batcher);
            }
        }
        Ok(Enforcer {
            tally: Tally::default(),
            latency,
            backend,
            results,
            record,
            protected: protection(config),
            protected_at: Instant::now(),
            retry_failed_at: None,
        })
    }

    /// Runs the ban or unban unless this host must not, or already did. The error is the
    /// reason a ban from the server was not applied, for a log line.
    pub fn enforce(
        &mut self,
        config: &ClientConfig,
        ban: &Ban,
        action: Action,
    ) -> Result<(), String> {
        // Unbans are not checked: one only ever runs for what was applied here, and undoing
        // that is always safe, even once its network has become protected.
        if action == Action::Ban {
            if let Err(reason) = self.check(config, ban) {
                return Err(format!(
                    "not applying ban of {} from {}: {reason}",
                    ban.ip, ban.origin
                ));
            }
            if !ban.active_at(unix_now()) {
                log::info!("not applying ban of {}: it has already expired", ban.ip);
                return Ok(());
            }
            if self.record.lifted(ban) {
                // From a server that has not heard of the unban yet.
                log::info!("not applying ban of {}: it was lifted since", ban.ip);
                return Ok(());
            }
        }
        if !self.record.needs(action, ban, unix_now()) {
            log::debug!("{action} of {} is already applied here", ban.ip);
            if action == Action::Ban {
                if let Err(e) = self.record.note_report(ban) {
                    log::error!("cannot update the record of applied bans: {e}");
                }
            }
            return Ok(());
        }
        self.record.start(action, ban);
        match &self.backend {
            Backend::Commands(runner) => {
                let (argv, label) = command_for(config, ban, action);
                runner.submit(argv, label, (ban.ip, action));
            }
            Backend::Batched(batcher) => batcher.submit(Op {
                action,
                ban: ban.clone(),
            }),
        }
        Ok(())
    }

    /// A dated unban, from an UNBAN (`at` None from servers before dated unbans) or a
    /// snapshot page: run unless what is applied here was reported after it. One that no
    /// honest server sends (`Lift::implausible`) is refused: dated next year, it would
    /// keep this host from ever banning the network again.
    pub fn lift(
        &mut self,
        config: &ClientConfig,
        ban: &Ban,
        at: Option<u64>,
    ) -> Result<(), String> {
        if let Some(at) = at {
            let lift = Lift {
                ip: ban.ip,
                at,
                until: ban.expires,
            };
            if let Some(why) = lift.implausible(unix_now()) {
                return Err(format!("not lifting {} from {}: {why}", ban.ip, ban.origin));
            }
            self.record.note_lift(lift, unix_now());
        }
        match at {
            Some(at) if !self.record.lifted_by(&ban.ip, at) => {
                log::info!(
                    "not lifting {}: it was reported again after the unban",
                    ban.ip
                );
                Ok(())
            }
            _ => self.enforce(config, ban, Action::Unban),
        }
    }

    /// An unban line in a snapshot page: lifts the applied ban it covers, if any, and keeps
    /// a stale server from getting it applied again.
    pub fn lift_applied(&mut self, config: &ClientConfig, lift: &Lift) -> Result<(), String> {
        if let Some(why) = lift.implausible(unix_now()) {
            return Err(format!("not lifting {}: {why}", lift.ip));
        }
        self.record.note_lift(*lift, unix_now());
        match self.record.get(&lift.ip).cloned() {
            Some(ban) => self.lift(config, &ban, Some(lift.at)),
            None => Ok(()),
        }
    }

    /// A malicious or mistaken server must not make this host ban itself, its server, a
    /// protected network or a huge range, nor take a ban that no honest server sends
    /// (`Ban::implausible`).
    pub fn check(&mut self, config: &ClientConfig, ban: &Ban) -> Result<(), String> {
        if let Some(why) = ban.implausible(unix_now()) {
            return Err(why);
        }
        if !config.ipv6 && !ban.ip.is_ipv4() {
            return Err("this host's ban command handles IPv4 only (ipv6 = false)".into());
        }
        config
            .min_prefix_for(ban.prog.as_str())
            .check(&ban.ip)
            .map_err(|e| e.to_string())?;
        if self.protected_at.elapsed() >= LOCAL_REFRESH {
            self.protected = protection(config);
            self.protected_at = Instant::now();
        }
        let prog = ban.prog.as_str();
        self.protected
            .check_for(prog, &ban.ip)
            .map_err(|e| e.to_string())
    }

    /// Records finished commands. A failed one is tried again at a catch-up
    /// `retry-interval` later.
    pub fn collect(&mut self, retry_interval: Duration) -> Result<(), Failure> {
        let mut finished = false;
        while let Ok(((ip, action), applied)) = self.results.try_recv() {
            self.record
                .finish(ip, action, applied)
                .map_err(record_failure)?;
            finished = true;
            self.tally.count(ip, action, applied);
            if applied == Applied::Failed && self.retry_failed_at.is_none() {
                self.retry_failed_at = Some(Instant::now() + retry_interval);
            }
        }
        if finished {
            self.record.commit().map_err(record_failure)?;
        }
        if let Backend::Batched(batcher) = &self.backend {
            if batcher.take_set_up_again() {
                // A table set up afresh may take what the one before refused (a set of
                // the wrong type, say): every refusal is tried once more.
                self.record.forget_refused();
                restore(&self.record, batcher);
                // And what failed while the firewall was gone, at once.
                self.retry_failed_at = Some(Instant::now());
            }
        }
        self.record.sync_if_due().map_err(record_failure)
    }

    /// Whether a failed command is due to be tried again.
    pub fn retry_due(&mut self) -> bool {
        let due = self.retry_failed_at.is_some_and(|at| Instant::now() >= at);
        if due {
            self.retry_failed_at = None;
        }
        due
    }

    /// An error if a thread that applies bans has stopped (see `daemon::worker`).
    pub fn check_threads(&self) -> Result<(), Failure> {
        match &self.backend {
            Backend::Commands(runner) => runner.check(),
            Backend::Batched(batcher) => batcher.check(),
        }
    }

    /// After a catch-up: what was applied here but is no longer active on the server
    /// (`active`), nor published during the catch-up (`fresh`), was either expired (forget
    /// it) or, when `lift_absent`, lifted while we were away (unban it). Returns how many
    /// of each. `refused` gets the line for an unban this host must not run.
    pub fn drop_stale(
        &mut self,
        config: &ClientConfig,
        active: &HashSet<Cidr>,
        fresh: &HashSet<Cidr>,
        lift_absent: bool,
        mut refused: impl FnMut(String),
    ) -> (usize, usize) {
        let (mut expired, mut lifted) = (0, 0);
        for stale in self.record.stale(active, fresh, unix_now()) {
            match stale {
                Stale::Expired(ip) => {
                    expired += 1;
                    if let Err(e) = self.record.forget(&ip) {
                        log::error!("cannot update the record of applied bans: {e}");
                    }
                }
                Stale::Lifted(_) if !lift_absent => {}
                Stale::Lifted(ban) => {
                    lifted += 1;
                    if let Err(line) = self.enforce(config, &ban, Action::Unban) {
                        refused(line);
                    }
                }
            }
        }
        (expired, lifted)
    }

    pub fn compact(&mut self) -> Result<(), Failure> {
        self.record.compact(unix_now()).map_err(record_failure)
    }

    /// On the way out, waits a little for commands already running, so that what they did
    /// is recorded and not run again at the next start.
    pub fn finish_running(&mut self, retry_interval: Duration) -> Result<(), Failure> {
        let deadline = Instant::now() + STOP_WAIT;
        while self.record.running() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
            self.collect(retry_interval)?;
        }
        if self.record.running() > 0 {
            log::warn!(
                "stopping with {} commands unfinished; they run again at the next start",
                self.record.running()
            );
        }
        self.record.sync().map_err(record_failure)
    }

    /// Takes a reloaded configuration. Returns whether a catch-up is needed: with a new
    /// backend, commands still queued on the old one finish there and their results are
    /// lost, so the next catch-up does them again.
    pub fn adopt(&mut self, old: &ClientConfig, new: &ClientConfig) -> bool {
        self.protected = protection(new);
        self.protected_at = Instant::now();
        let mut restarted = backend_settings(new) != backend_settings(old);
        let dry_run = |c: &ClientConfig| c.backend == BackendKind::Log;
        if restarted && dry_run(old) != dry_run(new) {
            // The dry run keeps a record of its own (`open_record`).
            log::warn!("switching to or from the log backend takes a restart");
            restarted = false;
        }
        if restarted {
            self.record.forget_refused();
            match Backend::start(new, &self.latency) {
                Ok((backend, results)) => {
                    self.backend = backend;
                    self.results = results;
                }
                Err(e) => {
                    log::error!("keeping the running backend: {e}");
                    return false;
                }
            }
        }
        self.lift_never_banned(new);
        restarted
    }

    /// After a reload: lifts what is applied here that this host would now refuse, because
    /// a network was added to `protected` (or `min-prefix` narrowed, or `ipv6` turned off),
    /// with a line for each. Otherwise such bans would stay until they expire.
    fn lift_never_banned(&mut self, config: &ClientConfig) {
        for ban in self.record.active(unix_now()) {
            let Err(why) = self.check(config, &ban) else {
                continue;
            };
            log::info!("lifting {} (reported by {}): {why}", ban.ip, ban.origin);
            if let Err(line) = self.enforce(config, &ban, Action::Unban) {
                log::warn!("{line}");
            }
        }
    }
}

/// Opens the record of applied bans, saying loudly what could not be recovered.
fn open_record(config: &ClientConfig) -> Result<AppliedBans, Failure> {
    let name = match config.backend {
        BackendKind::Log => DRY_RUN_JOURNAL,
        _ => CLIENT_JOURNAL,
    };
    let (record, recovery) = AppliedBans::open(&config.state_dir, name, unix_now())
        .map_err(|e| Exit::IoErr.with(format!("cannot open the record of applied bans: {e}")))?;
    for damage in &recovery.damaged {
        log::error!("record of applied bans: skipped {damage}");
    }
    if let Some(kept) = &recovery.kept {
        log::error!(
            "the damaged record of applied bans is kept as {}",
            kept.display()
        );
    }
    log::info!("{} bans applied here before", record.len());
    Ok(record)
}

/// Puts the bans applied here back into the firewall, which has lost them: the kernel's
/// nftables sets are empty after a reboot or a flush of the ruleset. An element still there
/// is not an error.
fn restore(record: &AppliedBans, batcher: &Batcher) {
    let active = record.active(unix_now());
    log::info!("restoring {} applied bans into nftables", active.len());
    for ban in active {
        batcher.submit(Op {
            action: Action::Ban,
            ban,
        });
    }
}

/// The backend's threads cannot be started: the process is at its limit of tasks.
fn thread_failure(e: std::io::Error) -> Failure {
    Exit::Unavailable.with(format!("cannot start the backend's threads: {e}"))
}

fn record_failure(e: StoreError) -> Failure {
    Exit::IoErr.with(format!("cannot update the record of applied bans: {e}"))
}

/// Where bans go: one command per ban, or batches for fail2ban and nftables.
enum Backend {
    Commands(Runner<(Cidr, Action)>),
    Batched(Batcher),
}

impl Tally {
    fn count(&mut self, ip: Cidr, action: Action, applied: Applied) {
        match (applied, action) {
            (Applied::Done, Action::Ban) => self.bans += 1,
            (Applied::Done, Action::Unban) => self.unbans += 1,
            (Applied::Failed, _) => {
                self.failed += 1;
                self.last_error = Some((unix_now(), format!("{action} of {ip} failed")));
            }
            (Applied::Refused, _) => {
                self.refused += 1;
                let what = format!("{action} of {ip} refused by the firewall for good");
                log::error!("{what}; it is not tried again");
                self.last_error = Some((unix_now(), what));
            }
        }
    }
}

impl Backend {
    fn start(
        config: &ClientConfig,
        latency: &Histogram,
    ) -> Result<(Backend, Receiver<Done>), Failure> {
        let (size, delay, timeout) = (
            config.batch_size,
            config.batch_delay.0,
            config.command_timeout.0,
        );
        let (batcher, results) = match config.backend {
            BackendKind::Command => {
                let workers = config.max_concurrent_commands;
                let (runner, results) =
                    Runner::new(workers, timeout, latency.clone()).map_err(thread_failure)?;
                return Ok((Backend::Commands(runner), results));
            }
            BackendKind::Nftables => {
                let nft = Nftables::setup(&config.nft_table, timeout)
                    .map_err(|e| Exit::Unavailable.with(e))?;
                Batcher::start(nft, (size, delay), latency.clone())
            }
            BackendKind::Fail2ban => {
                let fail2ban = Fail2ban {
                    jail: config.fail2ban_jail.clone(),
                    socket: config.fail2ban_socket.clone(),
                    timeout,
                };
                Batcher::start(fail2ban, (size, delay), latency.clone())
            }
            BackendKind::Log => Batcher::start(LogOnly, (size, delay), latency.clone()),
        }
        .map_err(thread_failure)?;
        let wait = match delay.is_zero() {
            true => "applied at once, with what arrives meanwhile".to_string(),
            false => format!("each waiting up to {} ms for more", delay.as_millis()),
        };
        log::info!(
            "backend {:?}: batches of up to {size} bans, {wait}",
            config.backend
        );
        Ok((Backend::Batched(batcher), results))
    }
}

/// The settings that make a new backend necessary when they change.
fn backend_settings(c: &ClientConfig) -> impl PartialEq {
    (
        c.backend,
        c.batch_size,
        c.batch_delay,
        c.nft_table.clone(),
        c.fail2ban_jail.clone(),
        c.fail2ban_socket.clone(),
        c.max_concurrent_commands,
        c.command_timeout,
    )
}

/// The ban or unban command for one ban, with its tags filled in, and what to call it in
/// the log.
fn command_for(config: &ClientConfig, ban: &Ban, action: Action) -> (Vec<String>, String) {
    let template = match action {
        Action::Ban => &config.ban_command,
        Action::Unban => &config.unban_command,
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
        "{action} {ip} ({} {} from {})",
        ban.prog, ban.jail, ban.origin
    );
    (argv, label)
}

/// The built-in and configured ranges, this host's addresses and every server's addresses.
fn protection(config: &ClientConfig) -> Protected {
    let mut protected = Protected::for_this_host(&config.protected);
    for spec in config.targets() {
        let addresses: Vec<IpAddr> = protect::resolve(&spec.address);
        if addresses.is_empty() {
            log::warn!(
                "cannot resolve server {}; its address is not protected",
                spec.address
            );
        }
        for addr in addresses {
            protected.add(addr, "the banshare server's");
        }
    }
    protected
}
