//! Logging to syslog (facility daemon, ident = program name) when /dev/log exists, otherwise
//! to stderr, which journald captures. Secrets are never passed to the logger.

use std::collections::{BTreeMap, HashMap};
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
/// Like `Quiet`, for lines that differ each time (a refusal names the address): at most
/// `LINES` lines a minute for each key, and the lines held back are counted and reported
/// with the next line let through.
#[derive(Default)]
pub struct LogLimit {
    keys: HashMap<String, Window>,
}

struct Window {
    start: Instant,
    shown: u32,
    held_back: u64,
}

impl LogLimit {
    const LINES: u32 = 20;
    const WINDOW: Duration = Duration::from_secs(60);

    /// Whether to write a line about `key` now, and if so, how many lines about it were held
    /// back since the last one written.
    pub fn admit(&mut self, key: &str, now: Instant) -> Option<u64> {
        let window = self.keys.entry(key.to_owned()).or_insert(Window {
            start: now,
            shown: 0,
            held_back: 0,
        });
        if now.saturating_duration_since(window.start) >= Self::WINDOW {
            window.start = now;
            window.shown = 0;
        }
        if window.shown >= Self::LINES {
            window.held_back += 1;
            return None;
        }
        window.shown += 1;
        Some(std::mem::take(&mut window.held_back))
    }
}

/// Refused handshakes, counted by reason and address, so that a flood from fresh random keys
/// writes a few lines a minute, not one per key: the first of each kind is logged as it
/// happens, up to `LINES` a minute, and the rest are summed up once a minute (and when the
/// server stops), as in "report: refused 17899 more handshakes from 127.0.0.1 in the last
/// 60 s (unknown key)".
#[derive(Default)]
pub struct Refusals {
    start: Option<Instant>,
    /// By (socket, reason, address): how many, and whether one was logged as it happened.
    counts: HashMap<(String, String, String), (u64, bool)>,
    lines: u32,
    /// Every refusal since the start, by reason, for the metrics.
    totals: BTreeMap<String, u64>,
}

impl Refusals {
    const LINES: u32 = 10;
    const WINDOW: Duration = Duration::from_secs(60);
    /// Addresses told apart in a summary; the others are counted together.
    const ADDRESSES: usize = 1000;

    /// Notes a refused handshake on socket `what`; `detail` (such as the key's fingerprint)
    /// is in its line, if it gets one of its own.
    pub fn note(&mut self, what: &str, reason: &str, address: &str, detail: &str) {
        self.flush(false);
        self.start.get_or_insert_with(Instant::now);
        let address = if self.counts.len() < Self::ADDRESSES {
            address
        } else {
            "other addresses"
        };
        *self.totals.entry(reason.to_owned()).or_default() += 1;
        let key = (what.to_owned(), reason.to_owned(), address.to_owned());
        let (count, logged) = self.counts.entry(key).or_default();
        *count += 1;
        if !*logged && self.lines < Self::LINES {
            *logged = true;
            self.lines += 1;
            log::warn!("{what}: refused {reason}{detail} from {address}");
        }
    }

    /// Adds every refusal since the start to `totals`, by reason.
    pub fn add_totals(&self, totals: &mut BTreeMap<String, u64>) {
        for (reason, n) in &self.totals {
            *totals.entry(reason.clone()).or_default() += n;
        }
    }

    /// Writes the summary now when `now`, otherwise when a minute has passed since the
    /// first refusal counted: one line for each socket, reason and address with refusals
    /// not yet logged, at most `LINES`, and one more for the rest. Then counts afresh.
    pub fn flush(&mut self, now: bool) {
        let Some(start) = self.start else {
            return;
        };
        if !now && start.elapsed() < Self::WINDOW {
            return;
        }
        self.start = None;
        let seconds = start.elapsed().as_secs();
        let mut unlogged: Vec<(&(String, String, String), u64)> = self
            .counts
            .iter()
            .map(|(key, (count, logged))| (key, count - u64::from(*logged)))
            .filter(|(_, count)| *count > 0)
            .collect();
        unlogged.sort_by_key(|(_, count)| std::cmp::Reverse(*count));
        for ((what, reason, address), count) in unlogged.iter().take(Self::LINES as usize) {
            log::warn!(
                "{what}: refused {count} more handshakes from {address} in the last {seconds} s \
                 ({reason})"
            );
        }
        let rest: u64 = unlogged
            .iter()
            .skip(Self::LINES as usize)
            .map(|(_, n)| n)
            .sum();
        if rest > 0 {
            log::warn!(
                "refused {rest} more handshakes from {} other sources in the last {seconds} s",
                unlogged.len() - Self::LINES as usize
            );
        }
        self.counts.clear();
        self.lines = 0;
    }
}

/// Escapes control characters and other unprintable ones so that an error message stays
/// on one line; quotes and apostrophes are left as they are.
pub fn printable(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars().take(200) {
        match c {
            '\'' | '"' => out.push(c),
            _ => out.extend(c.escape_debug()),
        }
    }
    if text.chars().count() > 200 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_keeps_one_line() {
        assert_eq!(printable("a\nb"), "a\\nb");
        assert_eq!(printable("host's \"x\" \\"), "host's \"x\" \\\\");
        assert!(printable(&"x".repeat(1000)).chars().count() <= 201);
    }

    #[test]
    fn log_lines_are_held_back_and_counted() {
        let mut log = LogLimit::default();
        let t0 = Instant::now();
        let written = (0..100).filter(|_| log.admit("web1", t0).is_some()).count();
        assert_eq!(written, LogLimit::LINES as usize);
        assert_eq!(log.admit("web2", t0), Some(0));
        assert_eq!(log.admit("web1", t0 + LogLimit::WINDOW), Some(80));
        assert_eq!(log.admit("web1", t0 + LogLimit::WINDOW), Some(0));
    }
}
