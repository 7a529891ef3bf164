//! Logging to syslog (facility daemon, ident = program name) when /dev/log exists, otherwise
//! to stderr, which journald captures. Secrets are never passed to the logger.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use log::{Level, LevelFilter, Log, Metadata, Record};

/// Where log lines go, chosen with `--log`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogTarget {
    /// syslog when /dev/log exists, otherwise stderr.
    Auto,
    Stderr,
    Syslog,
}

/// The syslog socket; BANSHARE_SYSLOG_SOCKET overrides it for chroots and tests.
fn syslog_socket() -> PathBuf {
    std::env::var_os("BANSHARE_SYSLOG_SOCKET")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/dev/log"))
}

/// Starts logging. Returns a warning to log if syslog was asked for but is unavailable.
pub fn init(program: &str, target: LogTarget, level: LevelFilter) -> Option<String> {
    let socket = syslog_socket();
    let use_syslog = match target {
        LogTarget::Stderr => false,
        LogTarget::Syslog => true,
        LogTarget::Auto => socket.exists(),
    };
    let mut warning = None;
    let logger: Box<dyn Log> = if use_syslog {
        let formatter = syslog::Formatter3164 {
            facility: syslog::Facility::LOG_DAEMON,
            hostname: None,
            process: program.to_owned(),
            pid: std::process::id(),
        };
        // Only the local socket: syslog::init would silently fall back to the network.
        match syslog::unix_custom(formatter, &socket) {
            Ok(writer) => Box::new(syslog::BasicLogger::new(writer)),
            Err(e) => {
                warning = Some(format!(
                    "syslog unavailable at {} ({e}); logging to stderr",
                    socket.display()
                ));
                Box::new(Stderr::new(program))
            }
        }
    } else {
        Box::new(Stderr::new(program))
    };
    // A second init (as in tests that run several daemons in one process) keeps the first.
    let _ = log::set_boxed_logger(logger);
    log::set_max_level(level);
    warning
}

/// Lines on stderr. Under systemd (JOURNAL_STREAM set) each line starts with the `<N>`
/// priority prefix that journald understands, so `journalctl -p warning` works.
struct Stderr {
    program: String,
    journald: bool,
}

impl Stderr {
    fn new(program: &str) -> Stderr {
        Stderr {
            program: program.to_owned(),
            journald: std::env::var_os("JOURNAL_STREAM").is_some(),
        }
    }
}

impl Log for Stderr {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let (priority, word) = match record.level() {
            Level::Error => (3, "error"),
            Level::Warn => (4, "warning"),
            Level::Info => (6, "info"),
            Level::Debug | Level::Trace => (7, "debug"),
        };
        let line = if self.journald {
            format!("<{priority}>{}\n", record.args())
        } else {
            format!("{}: {word}: {}\n", self.program, record.args())
        };
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

/// Warnings that a peer can trigger over and over (a refused client retries every 100 ms):
/// each distinct line is logged at most once a minute, so a flood cannot fill the disk.
#[derive(Default)]
pub struct Quiet {
    last: HashMap<String, Instant>,
}

impl Quiet {
    const EVERY: Duration = Duration::from_secs(60);

    pub fn warn(&mut self, line: String) {
        let now = Instant::now();
        if self.last.len() > 10_000 {
            self.last
                .retain(|_, at| now.duration_since(*at) < Self::EVERY);
        }
        match self.last.get(&line) {
            Some(at) if now.duration_since(*at) < Self::EVERY => {}
            _ => {
                log::warn!("{line} (repeats are logged once a minute)");
                self.last.insert(line, now);
            }
        }
    }
}
