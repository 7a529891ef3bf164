//! Abuse limits on the server: a token bucket per reporting key, so that one stolen or
//! broken key cannot bury the server or the fleet in bans. The log lines that refusals write
//! are limited by `logging::LogLimit`.

use std::collections::HashMap;
use std::time::Instant;

/// One token bucket per key name. The sizes come from the configuration on every call, so
/// a reload changes them at once.
#[derive(Default)]
pub struct RateLimits {
    buckets: HashMap<String, Bucket>,
}

struct Bucket {
    tokens: f64,
    /// The size the bucket had at the last call.
    burst: f64,
    at: Instant,
}

impl RateLimits {
    /// Takes a token from `key`'s bucket, which holds up to `burst` and refills at
    /// `per_minute`; false when it is empty. A bucket that grows (a reload, or an allowance
    /// that follows the size of the ban table) gains the difference at once.
    pub fn allow(&mut self, key: &str, per_minute: u32, burst: u32, now: Instant) -> bool {
        let burst = f64::from(burst);
        let bucket = self.buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: burst,
            burst,
            at: now,
        });
        bucket.tokens += (burst - bucket.burst).max(0.0);
        bucket.burst = burst;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
        // A bucket that grows gains the difference at once.
        let rest = (0..300)
            .filter(|_| limits.allow("web2", 60, 200, t0))
            .count();
        assert_eq!(rest, 199);
        let grown = (0..20)
            .filter(|_| limits.allow("web2", 60, 210, t0))
            .count();
        assert_eq!(grown, 10);
        // Refilling stops at the burst size.
        let later = t0 + Duration::from_secs(3600);
        let allowed = (0..250)
            .filter(|_| limits.allow("web1", 60, 200, later))
            .count();
        assert_eq!(allowed, 200);
    }
}
