//! banshare-client: subscribes to the server's publish socket and applies each ban on this
//! host with the configured command, unless it would cover a protected address. At start,
//! after a gap in sequence numbers, a new server epoch or missed heartbeats, it reads the
//! server's active bans page by page and catches up.

pub mod apply;
pub mod report;
pub mod spool;

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use crate::cli::{self, ClientArgs};
use crate::client::apply::backend::{BackendKind, Batcher, Done, Fail2ban, Nftables, Op};
use crate::client::apply::record::{Action, Applied, Stale};
use crate::client::apply::runner::Runner;
use crate::config::template::Values;
use crate::config::ClientConfig;
use crate::daemon::memory;
use crate::daemon::service::{self, Signals, Watchdog};
use crate::exit::{Exit, Failure};
use crate::logging::{LogLimit, Quiet};
use crate::protect::{self, Protected, LOCAL_REFRESH};
use crate::server::table::unix_now;
use crate::store::StoreError;
use crate::wire::cidr::Cidr;
use crate::wire::keys::{self, KeyPair, PublicKey};
use crate::wire::monitor::ConnectionWatch;
use crate::wire::protocol::{
    encode_snapshot_request, Ban, Publish, SnapshotPage, Verdict, PAGE, VERSION,
};
use crate::wire::transport::{self, endpoint, Received};
use spool::Spool;

/// READY=1 is sent at the first message from the server, or after this long without one,
/// so that a host still boots while the server is down; the client keeps retrying.
const READY_WAIT: Duration = Duration::from_secs(10);
const TICK: Duration = Duration::from_millis(100);
/// After the server refused our key, try again this often with a new socket.
const RETRY_REFUSED: Duration = Duration::from_secs(2);
/// How long a snapshot page may take before it is asked for again.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the record of applied bans is checked for compaction.
const COMPACT_EVERY: Duration = Duration::from_secs(600);
/// How long a stopping client waits for commands still running.
const STOP_WAIT: Duration = Duration::from_secs(5);
/// How often the spool is looked at when it was empty.
const SPOOL_CHECK: Duration = Duration::from_secs(1);

pub fn main() -> std::process::ExitCode {
    let args: ClientArgs = cli::parse();
    service::run_daemon(
        "banshare-client",
        args.log,
        || ClientConfig::load(&args.config).map_err(|e| (Exit::Config, e.to_string())),
        |config| config.log_level,
        |config, signals| Client::start(&args.config, config)?.serve(signals),
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
    /// A DEALER on the report socket, for snapshot pages.
    requester: zmq::Socket,
    applier: Applier,
    results: Receiver<Done>,
    applied: Applied,
    protected: Protected,
    protected_at: Instant,
    /// The last (epoch, seq) seen, to notice missed messages.
    position: Option<(u64, u64)>,
    ready: bool,
    resync: Option<Resync>,
    resync_wanted: bool,
    /// When the server was last heard from, and how often it says it sends heartbeats.
    heard_at: Instant,
    heartbeat: Duration,
    /// When to resynchronise again because a ban command failed.
    retry_failed_at: Option<Instant>,
    spool: Spool,
    /// A DEALER on the report socket that delivers spooled reports, one at a time.
    courier: zmq::Socket,
    delivering: Option<(PathBuf, Instant)>,
    next_spool_check: Instant,
    quiet: Quiet,
    /// Lines about what the server sent.
    log_limit: LogLimit,
    guard: memory::Guard,
}

impl Client {
    fn start(config_path: &Path, config: ClientConfig) -> Result<Client, Failure> {
        // Before anything is opened or logged: a bad key or directory is one clear line.
        load_keys(&config)?;
        check_dirs(&config)?;
        let ctx = zmq::Context::new();
        let (applied, recovery) = Applied::open(&config.state_dir, unix_now()).map_err(|e| {
            (
                Exit::IoErr,
                format!("cannot open the record of applied bans: {e}"),
            )
        })?;
        for damage in &recovery.damaged {
            log::error!("record of applied bans: skipped {damage}");
        }
        if let Some(kept) = &recovery.kept {
            log::error!(
                "the damaged record of applied bans is kept as {}",
                kept.display()
            );
        }
        log::info!("{} bans applied here before", applied.len());
        let subscription = subscribe(&ctx, &config)?;
        let requester = request_socket(&ctx, &config)?;
        let courier = request_socket(&ctx, &config)?;
        log::info!(
            "subscribing to {} as key {} (server key {})",
            endpoint(&config.server, config.publish_port),
            subscription.key.fingerprint(),
            subscription.server_key.fingerprint()
        );
        let (applier, results) = applier(&config)?;
        if let Applier::Batched(batcher) = &applier {
            if config.backend == BackendKind::Nftables {
                // After a reboot the kernel's sets are empty: put back what was applied.
                // Elements still there are simply renewed.
                let active = applied.active(unix_now());
                log::info!("restoring {} applied bans into nftables", active.len());
                for ban in active {
                    batcher.submit(Op {
                        action: Action::Ban,
                        ban,
                    });
                }
            }
        }
        Ok(Client {
            config_path: config_path.to_owned(),
            spool: Spool::new(&config.spool_dir, config.spool_max),
            applier,
            results,
            applied,
            protected: protection(&config),
            protected_at: Instant::now(),
            config,
            ctx,
            subscription,
            requester,
            position: None,
            ready: false,
            resync: None,
            // Whatever happened while this client was not running is caught up at once.
            resync_wanted: true,
            heard_at: Instant::now(),
            heartbeat: Duration::from_secs(1),
            retry_failed_at: None,
            courier,
            delivering: None,
            next_spool_check: Instant::now(),
            quiet: Quiet::default(),
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
            self.drive_spool();
            if Instant::now() >= next_compaction {
                self.applied.compact().map_err(state_failure)?;
                next_compaction = Instant::now() + COMPACT_EVERY;
            }
            let mut items = [
                self.subscription.socket.as_poll_item(zmq::POLLIN),
                self.subscription.watch.socket().as_poll_item(zmq::POLLIN),
                self.requester.as_poll_item(zmq::POLLIN),
                self.courier.as_poll_item(zmq::POLLIN),
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
                self.read_verdicts();
            }
            self.collect_results()?;
            self.guard_memory();
            // After the results, so that what a stopped thread finished is recorded; before
            // the next watchdog ping.
            self.applier.check()?;
        }
        self.finish_running()
    }

    /// On the way out, waits a little for commands already running, so that what they did
    /// is recorded and not run again at the next start.
    fn finish_running(&mut self) -> Result<(), Failure> {
        let deadline = Instant::now() + STOP_WAIT;
        while self.applied.running() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
            self.collect_results()?;
        }
        if self.applied.running() > 0 {
            log::warn!(
                "stopping with {} commands unfinished; they run again at the next start",
                self.applied.running()
            );
        }
        Ok(())
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

    /// Three missed heartbeats mean the server or the path to it is in trouble; whatever
    /// was published meanwhile is fetched as soon as it answers again.
    fn check_heartbeats(&mut self) {
        let silent = self.heard_at.elapsed();
        if self.ready && silent > 3 * self.heartbeat && !self.resync_wanted && self.resync.is_none()
        {
            log::warn!(
                "no heartbeat from {} for {} s; will resynchronise",
                self.server_endpoint(),
                silent.as_secs()
            );
            self.resync_wanted = true;
            self.heard_at = Instant::now();
        }
        if self.retry_failed_at.is_some_and(|at| Instant::now() >= at) {
            self.retry_failed_at = None;
            self.resync_wanted = true;
        }
    }

    fn drain(&mut self) {
        while let Ok(received) =
            transport::recv_bounded(&self.subscription.socket, zmq::DONTWAIT, PUBLISHED_FRAMES)
        {
            match within_bounds(&received).and_then(Publish::decode) {
                Ok(message) => self.handle(message),
                Err(e) => {
                    self.warn_about_server(&format!("ignored a message from the server: {e}"))
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
                |(_, e)| format!(", but cannot connect again: {e}"),
                |()| String::new()
            ),
        );
    }

    fn handle(&mut self, message: Publish) {
        if !self.ready {
            log::info!("connected to {}", self.server_endpoint());
            self.mark_ready("connected");
        }
        self.heard_at = Instant::now();
        match message {
            Publish::Heartbeat {
                epoch,
                seq,
                interval_ms,
            } => {
                self.heartbeat = Duration::from_millis(interval_ms.clamp(100, 3_600_000));
                self.track(epoch, seq, true);
            }
            Publish::Ban { epoch, seq, ban } => {
                self.track(epoch, seq, false);
                self.received(&ban, Action::Ban);
            }
            Publish::Unban { epoch, seq, ban } => {
                self.track(epoch, seq, false);
                self.received(&ban, Action::Unban);
            }
        }
    }

    /// A ban or unban from the publish socket. During a resynchronisation it also marks the
    /// network as current, so that the snapshot's end does not take it for a stale one.
    fn received(&mut self, ban: &Ban, action: Action) {
        if let Some(resync) = &mut self.resync {
            resync.fresh.insert(ban.ip);
        }
        self.apply(ban, action);
    }

    /// Notes the server's position; a gap or a new epoch means messages were missed, and a
    /// resynchronisation fetches them.
    fn track(&mut self, epoch: u64, seq: u64, heartbeat: bool) {
        // A heartbeat repeats the last seq; a ban or unban brings the next one.
        let newest_missed = if heartbeat {
            seq
        } else {
            seq.saturating_sub(1)
        };
        match self.position {
            Some((e, last)) if e == epoch && newest_missed > last => {
                log::warn!(
                    "missed {} messages from the server (seq {} to {newest_missed}); will resynchronise",
                    newest_missed - last,
                    last + 1
                );
                self.resync_wanted = true;
            }
            Some((e, last)) if e == epoch && seq <= last => return,
            Some((e, _)) if e != epoch => {
                log::info!("server restarted (new epoch {epoch}); will resynchronise");
                self.resync_wanted = true;
            }
            _ => {}
        }
        self.position = Some((epoch, seq));
    }

    /// Starts a resynchronisation when one is wanted, and asks again when the server has
    /// not answered a page in time.
    fn drive_resync(&mut self) {
        if let Some(resync) = &self.resync {
            if resync.sent_at.elapsed() >= REQUEST_TIMEOUT {
                log::warn!("no snapshot page from the server yet; asking again");
                let after = resync.after;
                match request_socket(&self.ctx, &self.config) {
                    // A new socket, so that a late answer to the old request is never read.
                    Ok(socket) => self.requester = socket,
                    Err((_, e)) => log::error!("{e}"),
                }
                self.request_page(after.as_ref());
            }
            return;
        }
        if self.resync_wanted {
            self.resync_wanted = false;
            self.resync = Some(Resync::default());
            log::info!("resynchronising with {}", self.server_endpoint());
            self.request_page(None);
        }
    }

    fn request_page(&mut self, after: Option<&Cidr>) {
        if let Err(e) = send_request(&self.requester, encode_snapshot_request(after)) {
            log::warn!("cannot ask for a snapshot page: {e}");
        }
        if let Some(resync) = &mut self.resync {
            resync.after = after.copied();
            resync.sent_at = Instant::now();
        }
    }

    fn read_pages(&mut self) {
        while let Ok(received) =
            transport::recv_bounded(&self.requester, zmq::DONTWAIT, PAGE_FRAMES)
        {
            let body = within_bounds(&received).and_then(reply_body);
            match body.clone().and_then(SnapshotPage::decode) {
                Ok(page) if self.resync.is_some() => self.apply_page(page),
                Ok(_) => {}
                Err(e) => match body.and_then(Verdict::decode) {
                    // Such as a key over its allowance of pages: asked again in 5 s.
                    Ok(verdict) => log::warn!("the server answered a snapshot request: {verdict}"),
                    Err(_) => self.warn_about_server(&format!("ignored a snapshot page: {e}")),
                },
            }
        }
    }

    fn apply_page(&mut self, page: SnapshotPage) {
        let Some(resync) = &mut self.resync else {
            return;
        };
        if resync.pages == 0 {
            // Everything published after this point arrives on the publish socket.
            match self.position {
                Some((e, s)) if e == page.epoch && s >= page.seq => {}
                _ => self.position = Some((page.epoch, page.seq)),
            }
        }
        resync.pages += 1;
        resync.active.extend(page.bans.iter().map(|b| b.ip));
        // Kept as it is here, neither applied nor lifted: the server holds something there.
        resync
            .active
            .extend(page.unreadable.iter().filter_map(|u| u.ip));
        for bad in &page.unreadable {
            let line = format!(
                "skipped a ban in a snapshot page from the server: {}",
                bad.reason
            );
            self.warn_about_server(&line);
        }
        for ban in &page.bans {
            self.apply(ban, Action::Ban);
        }
        match page.next {
            Some(next) => self.request_page(Some(&next)),
            None => self.finish_resync(),
        }
    }

    /// After the last page: what was applied here but is no longer active on the server was
    /// either expired (forget it) or lifted while we were away (unban it).
    fn finish_resync(&mut self) {
        let Some(resync) = self.resync.take() else {
            return;
        };
        let (mut expired, mut lifted) = (0, 0);
        for stale in self
            .applied
            .stale(&resync.active, &resync.fresh, unix_now())
        {
            match stale {
                Stale::Expired(ip) => {
                    expired += 1;
                    if let Err(e) = self.applied.forget(&ip) {
                        log::error!("cannot update the record of applied bans: {e}");
                    }
                }
                Stale::Lifted(ban) => {
                    lifted += 1;
                    self.apply(&ban, Action::Unban);
                }
            }
        }
        log::info!(
            "resynchronised: {} active bans on the server in {} pages ({} ms); {expired} expired and {lifted} lifted here",
            resync.active.len(),
            resync.pages,
            resync.started.elapsed().as_millis()
        );
    }

    /// Sends the oldest spooled report, or asks again when the server has not answered.
    fn drive_spool(&mut self) {
        match &self.delivering {
            Some((_, sent_at)) if sent_at.elapsed() < REQUEST_TIMEOUT => return,
            Some(_) => {
                // A new socket, so that a late answer to the old request is never read.
                match request_socket(&self.ctx, &self.config) {
                    Ok(socket) => self.courier = socket,
                    Err((_, e)) => log::error!("{e}"),
                }
                self.delivering = None;
            }
            None if Instant::now() < self.next_spool_check => return,
            None => {}
        }
        self.next_spool_check = Instant::now() + SPOOL_CHECK;
        if let Err(e) = crate::files::check_own_dir(self.spool.dir()) {
            if self.spool.dir().exists() {
                self.quiet
                    .warn(format!("not delivering spooled reports: {e}"));
            }
            return;
        }
        let waiting = match self.spool.waiting() {
            Ok(waiting) => waiting,
            Err(e) => {
                log::error!("cannot read spool {}: {e}", self.spool.dir().display());
                return;
            }
        };
        if waiting.len() >= self.config.spool_max {
            self.quiet.warn(format!(
                "spool {} is full ({} reports): new reports from this host are lost until \
                 the server answers again",
                self.spool.dir().display(),
                waiting.len()
            ));
        }
        let Some(path) = waiting.into_iter().next() else {
            return;
        };
        match spool::read(&path) {
            Ok(report) => {
                if let Err(e) = send_request(&self.courier, report.encode()) {
                    log::warn!("cannot deliver {}: {e}", path.display());
                    return;
                }
                self.delivering = Some((path, Instant::now()));
            }
            Err(e) => {
                // Set aside, not deleted: the admin may still want what is in it.
                let aside = path.with_extension("bad");
                log::error!(
                    "cannot read spooled report {} ({e}); moving it to {}",
                    path.display(),
                    aside.display()
                );
                if let Err(e) = std::fs::rename(&path, &aside) {
                    log::error!("cannot move {}: {e}", path.display());
                    self.next_spool_check = Instant::now() + Duration::from_secs(60);
                }
            }
        }
    }

    /// The server answered a spooled report: whatever it said, the report is done.
    fn read_verdicts(&mut self) {
        while let Ok(received) =
            transport::recv_bounded(&self.courier, zmq::DONTWAIT, VERDICT_FRAMES)
        {
            let verdict = within_bounds(&received)
                .and_then(reply_body)
                .and_then(Verdict::decode);
            let Some((path, _)) = self.delivering.take() else {
                continue;
            };
            match verdict {
                Ok(verdict @ (Verdict::Accepted | Verdict::Duplicate)) => {
                    log::info!("delivered spooled report {}: {verdict}", path.display())
                }
                Ok(verdict) => log::warn!("spooled report {}: {verdict}", path.display()),
                Err(e) => {
                    log::warn!("bad answer to spooled report {}: {e}", path.display());
                    continue;
                }
            }
            if let Err(e) = std::fs::remove_file(&path) {
                log::error!("cannot remove delivered report {}: {e}", path.display());
            }
            // The next one goes at once.
            self.next_spool_check = Instant::now();
        }
    }

    fn apply(&mut self, ban: &Ban, action: Action) {
        let verb = match action {
            Action::Ban => "ban",
            Action::Unban => "unban",
        };
        if let Err(reason) = self.check(ban) {
            let line = format!(
                "not applying {verb} of {} from {}: {reason}",
                ban.ip, ban.origin
            );
            self.warn_about_server(&line);
            return;
        }
        if action == Action::Ban && ban.expires.is_some_and(|e| e <= unix_now()) {
            log::info!("not applying ban of {}: it has already expired", ban.ip);
            return;
        }
        if !self.applied.needs(action, ban) {
            log::debug!("{verb} of {} is already applied here", ban.ip);
            return;
        }
        self.applied.start(action, ban);
        match &self.applier {
            Applier::Command(runner) => {
                let (argv, label) = command_for(&self.config, ban, action);
                runner.submit(argv, label, (ban.ip, action));
            }
            Applier::Batched(batcher) => batcher.submit(Op {
                action,
                ban: ban.clone(),
            }),
        }
    }

    /// Records finished commands. A failed one is tried again at a resynchronisation
    /// `retry-interval` later.
    fn collect_results(&mut self) -> Result<(), Failure> {
        let mut finished = false;
        while let Ok(((ip, action), ok)) = self.results.try_recv() {
            self.applied.finish(ip, action, ok).map_err(state_failure)?;
            finished = true;
            if !ok && self.retry_failed_at.is_none() {
                self.retry_failed_at = Some(Instant::now() + self.config.retry_interval.0);
            }
        }
        if finished {
            self.applied.commit().map_err(state_failure)?;
        }
        Ok(())
    }

    /// A malicious or mistaken server must not make this host ban itself, its server, a
    /// protected network or a huge range.
    fn check(&mut self, ban: &Ban) -> Result<(), String> {
        if !self.config.ipv6 && !ban.ip.is_ipv4() {
            return Err("this host's ban command handles IPv4 only (ipv6 = false)".into());
        }
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

    /// New sockets to the server as `config` says, dropping the old ones (and whatever they
    /// held), then a catch-up.
    fn reconnect(&mut self, config: &ClientConfig) -> Result<(), Failure> {
        let subscription = subscribe(&self.ctx, config)?;
        let requester = request_socket(&self.ctx, config)?;
        let courier = request_socket(&self.ctx, config)?;
        self.subscription = subscription;
        self.requester = requester;
        self.courier = courier;
        self.delivering = None;
        self.position = None;
        self.resync = None;
        self.resync_wanted = true;
        Ok(())
    }

    fn apply_config(&mut self, config: ClientConfig) {
        let endpoints = |c: &ClientConfig| (c.server.clone(), c.publish_port, c.report_port);
        // The key files' contents count, not their names: a rotation rewrites them in place.
        let keys = load_keys(&config).map(|(server, own)| (server, own.public));
        let current = (self.subscription.server_key, self.subscription.key);
        let reconnect = endpoints(&config) != endpoints(&self.config) || keys.ok() != Some(current);
        if reconnect {
            if let Err((_, e)) = self.reconnect(&config) {
                log::error!("reload failed, keeping the running configuration: {e}");
                return;
            }
        }
        if applier_settings(&config) != applier_settings(&self.config) {
            // Commands still queued on the old applier finish there; their results are
            // lost, so the next resynchronisation catches up on them.
            match applier(&config) {
                Ok((applier, results)) => {
                    self.applier = applier;
                    self.results = results;
                    self.resync_wanted = true;
                }
                Err((_, e)) => log::error!("keeping the running backend: {e}"),
            }
        }
        if config.state_dir != self.config.state_dir {
            log::warn!("state-dir changes only on restart");
        }
        log::set_max_level(config.log_level.filter());
        self.protected = protection(&config);
        self.protected_at = Instant::now();
        self.spool = Spool::new(&config.spool_dir, config.spool_max);
        self.config = config;
    }
}

/// The ban or unban command for one ban, with its tags filled in, and what to call it in
/// the log.
fn command_for(config: &ClientConfig, ban: &Ban, action: Action) -> (Vec<String>, String) {
    let (template, verb) = match action {
        Action::Ban => (&config.ban_command, "ban"),
        Action::Unban => (&config.unban_command, "unban"),
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
    (argv, label)
}

/// Where bans go: one command per ban, or batches for fail2ban and nftables.
enum Applier {
    Command(Runner<(Cidr, Action)>),
    Batched(Batcher),
}

impl Applier {
    /// An error if a thread that applies bans has stopped (see `worker`).
    fn check(&self) -> Result<(), Failure> {
        match self {
            Applier::Command(runner) => runner.check(),
            Applier::Batched(batcher) => batcher.check(),
        }
    }
}

fn applier(config: &ClientConfig) -> Result<(Applier, Receiver<Done>), Failure> {
    let (size, delay, timeout) = (
        config.batch_size,
        config.batch_delay.0,
        config.command_timeout.0,
    );
    let (batcher, results) = match config.backend {
        BackendKind::Command => {
            let (runner, results) = Runner::new(config.max_concurrent_commands, timeout);
            return Ok((Applier::Command(runner), results));
        }
        BackendKind::Nftables => {
            let nft =
                Nftables::setup(&config.nft_table, timeout).map_err(|e| (Exit::Unavailable, e))?;
            Batcher::start(nft, size, delay)
        }
        BackendKind::Fail2ban => {
            let fail2ban = Fail2ban {
                jail: config.fail2ban_jail.clone(),
                socket: config.fail2ban_socket.clone(),
                timeout,
            };
            Batcher::start(fail2ban, size, delay)
        }
    };
    log::info!(
        "backend {:?}: batches of up to {size} bans, {} ms apart at most",
        config.backend,
        delay.as_millis()
    );
    Ok((Applier::Batched(batcher), results))
}

/// The settings that make a new applier necessary when they change.
fn applier_settings(c: &ClientConfig) -> impl PartialEq {
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

/// Paging through the server's active bans.
struct Resync {
    /// The last network of the previous page: the next page starts after it.
    after: Option<Cidr>,
    /// Networks in the snapshot so far.
    active: HashSet<Cidr>,
    /// Networks published while the snapshot was being read.
    fresh: HashSet<Cidr>,
    pages: usize,
    started: Instant,
    sent_at: Instant,
}

impl Default for Resync {
    fn default() -> Self {
        Resync {
            after: None,
            active: HashSet::new(),
            fresh: HashSet::new(),
            pages: 0,
            started: Instant::now(),
            sent_at: Instant::now(),
        }
    }
}

/// The client runs as root: no other user may be able to put files where it writes.
fn check_dirs(config: &ClientConfig) -> Result<(), Failure> {
    crate::files::own_dir(&config.state_dir, 0o750).map_err(|e| (Exit::Config, e))?;
    // banshare-report makes the spool when it first needs it.
    if config.spool_dir.exists() {
        crate::files::check_own_dir(&config.spool_dir).map_err(|e| (Exit::Config, e))?;
    }
    Ok(())
}

fn state_failure(e: StoreError) -> Failure {
    (
        Exit::IoErr,
        format!("cannot update the record of applied bans: {e}"),
    )
}

/// Sends a request on a DEALER socket, behind the empty delimiter that a REQ socket would
/// add, so the server handles both alike.
fn send_request(socket: &zmq::Socket, request: Vec<Vec<u8>>) -> zmq::Result<()> {
    let frames = std::iter::once(Vec::new()).chain(request);
    socket.send_multipart(frames, zmq::DONTWAIT)
}

/// Asks the server for the first snapshot page, as a client does when it resynchronises,
/// to show whether this host reaches the server and is let in.
pub fn ping(config: &ClientConfig, timeout: Duration) -> Result<String, Failure> {
    let ctx = zmq::Context::new();
    let socket = request_socket(&ctx, config)?;
    let address = endpoint(&config.server, config.report_port);
    let fail = |e: zmq::Error| (Exit::Software, format!("{address}: {e}"));
    send_request(&socket, encode_snapshot_request(None)).map_err(fail)?;
    let timeout_ms = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
    if socket.poll(zmq::POLLIN, timeout_ms).map_err(fail)? == 0 {
        return Err((
            Exit::Unavailable,
            format!(
                "no answer from {address} within {timeout:?}: the server is down or unreachable, \
                 this host's key is not authorized, or {} is not the server's key",
                config.server_key.display()
            ),
        ));
    }
    let frames = socket.recv_multipart(0).map_err(fail)?;
    let page = reply_body(&frames).and_then(SnapshotPage::decode);
    let page = page.map_err(|e| (Exit::Software, format!("{address}: {e}")))?;
    Ok(format!(
        "{address} answered: {} bans on the first page of the ban list",
        page.bans.len()
    ))
}

/// Frames in the largest message of each kind the client receives: a BAN; a snapshot page
/// behind its delimiter; a verdict behind its delimiter.
const PUBLISHED_FRAMES: usize = 10;
const PAGE_FRAMES: usize = 1 + 5 + PAGE;
const VERDICT_FRAMES: usize = 1 + 3;

/// The frames of a message, unless it had more than any banshare message has (only the
/// first were kept, see `transport::recv_bounded`).
fn within_bounds(received: &Received) -> Result<&[Vec<u8>], String> {
    if received.oversized() {
        // What it held is freed; the memory guard gives it back to the system if it must.
        Err(format!("a message of {} frames", received.count))
    } else {
        Ok(&received.frames)
    }
}

/// A reply on a DEALER socket, without the empty delimiter the server echoes back.
fn reply_body(frames: &[Vec<u8>]) -> Result<&[Vec<u8>], String> {
    match frames.split_first() {
        Some((delimiter, body)) if delimiter.is_empty() => Ok(body),
        _ => Err("reply without delimiter".into()),
    }
}

/// A DEALER socket on the server's report port, for snapshot requests and spooled reports.
fn request_socket(ctx: &zmq::Context, config: &ClientConfig) -> Result<zmq::Socket, Failure> {
    let (server_key, key) = load_keys(config)?;
    let fail = |e: zmq::Error| (Exit::Software, format!("request socket: {e}"));
    let socket = transport::client_socket(ctx, zmq::DEALER, &server_key, &key).map_err(fail)?;
    let address = endpoint(&config.server, config.report_port);
    socket
        .connect(&address)
        .map_err(|e| (Exit::Config, format!("cannot connect to {address}: {e}")))?;
    Ok(socket)
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
    // Room for a burst as large as the server's queue for us, so that a client busy with
    // its firewall still takes a burst of 10,000 bans live instead of re-reading them.
    socket.set_rcvhwm(10_000).map_err(fail)?;
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
    let mut protected = Protected::for_this_host(&config.protected);
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
