//! What makes the daemons conventional systemd services: sd_notify messages, the watchdog,
//! and signals (SIGHUP reloads, SIGTERM and SIGINT stop).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sd_notify::NotifyState;

use crate::config::LogLevel;
use crate::exit::{Exit, Failure};
use crate::logging::{self, LogTarget};
use crate::sockets::transport;

/// What the server and the client share around their own work: logging, the config, the
/// CURVE check and signals; then `serve`, and STOPPING=1 on the way out. A failure becomes
/// one log line and its exit code.
pub fn run_daemon<C>(
    program: &str,
    target: LogTarget,
    load: impl FnOnce() -> Result<C, Failure>,
    log_level: impl Fn(&C) -> LogLevel,
    serve: impl FnOnce(C, &Signals) -> Result<(), Failure>,
) -> std::process::ExitCode {
    // Log at info until the config says how verbose to be.
    if let Some(warning) = logging::init(program, target, log::LevelFilter::Info) {
        log::warn!("{warning}");
    }
    raise_file_limit();
    let result = load().and_then(|config| {
        log::set_max_level(log_level(&config).filter());
        transport::require_curve().map_err(|e| Exit::Software.with(e))?;
        let signals =
            Signals::install().map_err(|e| Exit::Software.with(format!("signals: {e}")))?;
        serve(config, &signals)?;
        stopping();
        log::info!("stopping");
        Ok(())
    });
    match result {
        Ok(()) => Exit::Ok.into(),
        Err(Failure { exit, message }) => {
            log::error!("{message}");
            exit.into()
        }
    }
}

/// Raises the soft limit on open files to the hard one (the units set both to 65536). The
/// usual soft limit, 1024, is where a flood of idle connections would first run the server
/// out of descriptors.
fn raise_file_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

/// Sends a state to systemd when NOTIFY_SOCKET is set; otherwise does nothing.
fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(false, states) {
        log::debug!("sd_notify failed: {e}");
    }
}

pub fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub fn status(status: &str) {
    notify(&[NotifyState::Status(status)]);
}

pub fn reloading() {
    notify(&[
        NotifyState::Reloading,
        NotifyState::Status("reloading configuration"),
    ]);
}

pub fn stopping() {
    notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// Flags set from signal handlers and read by the main loop.
pub struct Signals {
    reload: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Signals {
    pub fn install() -> std::io::Result<Signals> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let signals = Signals {
            reload: Arc::new(AtomicBool::new(false)),
            stop: Arc::new(AtomicBool::new(false)),
        };
        signal_hook::flag::register(SIGHUP, Arc::clone(&signals.reload))?;
        signal_hook::flag::register(SIGTERM, Arc::clone(&signals.stop))?;
        signal_hook::flag::register(SIGINT, Arc::clone(&signals.stop))?;
        Ok(signals)
    }

    /// True once after each SIGHUP.
    pub fn take_reload(&self) -> bool {
        self.reload.swap(false, Ordering::Relaxed)
    }

    pub fn should_stop(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// Pets the systemd watchdog at half the interval systemd asked for, if it asked.
pub struct Watchdog {
    every: Option<Duration>,
    last: Instant,
}

impl Watchdog {
    pub fn from_env() -> Watchdog {
        let mut usec = 0;
        let every =
            sd_notify::watchdog_enabled(false, &mut usec).then(|| Duration::from_micros(usec / 2));
        Watchdog {
            every,
            last: Instant::now(),
        }
    }

    /// Call from the main loop: a hung loop stops the pings and systemd restarts us.
    pub fn tick(&mut self) {
        if let Some(every) = self.every {
            if self.last.elapsed() >= every {
                notify(&[NotifyState::Watchdog]);
                self.last = Instant::now();
            }
        }
    }
}
