//! What the integration tests share: a fleet of the real binaries (`fleet`), hosts as
//! network namespaces (`netns`), raw ZeroMQ peers (`raw`), servers that peer (`servers`),
//! booted systemd containers (`container`) and fail2ban servers (`fail2ban`), and the
//! waits and figures below.

#![allow(dead_code)]

pub mod container;
pub mod fail2ban;
mod fleet;
mod netns;
mod raw;
pub mod release;
pub mod servers;

// Not every test uses every part.
#[allow(unused_imports)]
pub use {fleet::*, netns::*, raw::*};

use std::fs;
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

pub const SERVER: &str = env!("CARGO_BIN_EXE_banshare-server");
pub const CLIENT: &str = env!("CARGO_BIN_EXE_banshare-client");
pub const REPORT: &str = env!("CARGO_BIN_EXE_banshare-report");
pub const ADMIN: &str = env!("CARGO_BIN_EXE_banshare");

/// A figure of process `pid` from /proc/PID/status, in MB: "VmRSS" (resident now) or
/// "VmHWM" (the peak so far); 0 when the process is gone.
pub fn status_mb(pid: i32, field: &str) -> f64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

/// Resident memory of a process in MB.
pub fn rss_mb(pid: i32) -> f64 {
    status_mb(pid, "VmRSS")
}

/// The most resident memory a process has had, in MB.
pub fn peak_mb(pid: i32) -> f64 {
    status_mb(pid, "VmHWM")
}

/// For tests that measure time, CPU or memory while they flood: they take turns within
/// the test binary, since two floods at once on two cores would measure each other.
pub fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TURN.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Polls `check` until it returns Some, or panics after `timeout` (see `poll`).
pub fn wait_for<T>(what: &str, timeout: Duration, check: impl FnMut() -> Option<T>) -> T {
    poll(timeout, check).unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for {what}"))
}

/// Polls `check` until it returns Some, or gives None after `timeout`. The first polls are
/// 10 ms apart, and the gap grows by half each time up to 200 ms: a check may run
/// `fail2ban-client` or a command in a container, and polling those every 10 ms through a
/// long wait kept a core busy that the rest of the suite needed. What comes quickly is still
/// seen within 10 to 20 ms.
pub fn poll<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    let mut gap = Duration::from_millis(10);
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        std::thread::sleep(gap.min(deadline - now));
        gap = (gap * 3 / 2).min(Duration::from_millis(200));
    }
}

/// A port no listener holds, below the kernel's ephemeral range (32768-60999 here).
/// A port that bind(":0") gave out is itself ephemeral: any outgoing connection made
/// before the test binds it may take it as its source port, and the bind fails with
/// "Address already in use" (seen in CI). Ports below that range are never source ports.
/// Each process starts at its own place in the range and never hands a port out twice.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const COUNT: u32 = 12_768;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(1_009) % COUNT,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    (0..COUNT)
        .map(|_| (FIRST + NEXT.fetch_add(1, Ordering::Relaxed) % COUNT) as u16)
        .find(|&port| TcpListener::bind(("127.0.0.1", port)).is_ok())
        .expect("a free port below the ephemeral range")
}

pub fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_default()
}

/// The current time as syslog writes it ("Nov  5 18:01:02"), for log lines the tests feed
/// to fail2ban and psad.
pub fn syslog_now() -> String {
    let out = Command::new("date")
        .arg("+%b %e %H:%M:%S")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Replaces `old` with `new` in a file.
pub fn edit(path: &Path, old: &str, new: &str) {
    let text = fs::read_to_string(path).unwrap();
    assert!(text.contains(old), "{} has no {old:?}", path.display());
    fs::write(path, text.replace(old, new)).unwrap();
}

/// GET `path` on 127.0.0.1:`port`: the status code and the body.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}
