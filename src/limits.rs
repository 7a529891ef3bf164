//! Abuse limits on the server. A token bucket per reporting key, so that one stolen or
//! broken key cannot bury the server or the fleet in bans; and a limit on the log lines that
//! refusals write, so that a flood cannot fill the disk either.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// One token bucket per key name. The sizes come from the configuration on every call, so
/// a reload changes them at once.
#[derive(Default)]
pub struct RateLimits {
    buckets: HashMap<String, Bucket>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimits {
    /// Takes a token from `key`'s bucket, which holds up to `burst` and refills at
    /// `per_minute`; false when it is empty.
    pub fn allow(&mut self, key: &str, per_minute: u32, burst: u32, now: Instant) -> bool {
        let burst = f64::from(burst);
        let bucket = self.buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let refill = now.saturating_duration_since(bucket.at).as_secs_f64() * f64::from(per_minute);
        bucket.tokens = (bucket.tokens + refill / 60.0).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// At most `LINES` log lines a minute for each key; the lines held back are counted and
/// reported with the next line let through.
#[derive(Default)]
pub struct LogLimit {
    keys: HashMap<String, Window>,
}

struct Window {
    start: Instant,
    shown: u32,
    held_back: u64,
}

const LINES: u32 = 20;
const WINDOW: Duration = Duration::from_secs(60);

impl LogLimit {
    /// Whether to write a line about `key` now, and if so, how many lines about it were held
    /// back since the last one written.
    pub fn admit(&mut self, key: &str, now: Instant) -> Option<u64> {
        let window = self.keys.entry(key.to_owned()).or_insert(Window {
            start: now,
            shown: 0,
            held_back: 0,
        });
        if now.saturating_duration_since(window.start) >= WINDOW {
            window.start = now;
            window.shown = 0;
        }
        if window.shown >= LINES {
            window.held_back += 1;
            return None;
        }
        window.shown += 1;
        Some(std::mem::take(&mut window.held_back))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let mut limits = RateLimits::default();
        let t0 = Instant::now();
        let allowed = (0..250)
            .filter(|_| limits.allow("web1", 60, 200, t0))
            .count();
        assert_eq!(allowed, 200);
        // Another key has a bucket of its own.
        assert!(limits.allow("web2", 60, 200, t0));
        // 60 a minute: one more a second.
        assert!(!limits.allow("web1", 60, 200, t0 + Duration::from_millis(500)));
        assert!(limits.allow("web1", 60, 200, t0 + Duration::from_millis(1500)));
        assert!(!limits.allow("web1", 60, 200, t0 + Duration::from_millis(1600)));
        // Refilling stops at the burst size.
        let later = t0 + Duration::from_secs(3600);
        let allowed = (0..250)
            .filter(|_| limits.allow("web1", 60, 200, later))
            .count();
        assert_eq!(allowed, 200);
    }

    #[test]
    fn log_lines_are_held_back_and_counted() {
        let mut log = LogLimit::default();
        let t0 = Instant::now();
        let written = (0..100).filter(|_| log.admit("web1", t0).is_some()).count();
        assert_eq!(written, LINES as usize);
        assert_eq!(log.admit("web2", t0), Some(0));
        assert_eq!(log.admit("web1", t0 + WINDOW), Some(80));
        assert_eq!(log.admit("web1", t0 + WINDOW), Some(0));
    }
}
