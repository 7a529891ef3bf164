//! Fleet-wide escalation: fail2ban's `bantime.increment`, but across the fleet. A network
//! banned afresh within `recidive-window` of its earlier bans, whichever hosts reported
//! them, is banned `recidive-factor` times longer for each earlier ban, up to
//! `recidive-max`. Only a new ban counts and is escalated: a report while the network is
//! banned is the same ban (the merge rule), so a ban reported by the whole fleet at once
//! counts once.

use crate::config::duration::MaxBantime;
use crate::config::ServerConfig;
use crate::server::table::BanTable;
use crate::wire::cidr::Cidr;
use crate::wire::protocol::{bantime_text, Bantime, MAX_BANTIME};

/// The bantime of a new ban of `ip` that asked for `asked`, and what escalation did, for
/// the audit line.
pub fn escalate(
    config: &ServerConfig,
    table: &BanTable,
    ip: &Cidr,
    asked: Bantime,
    now: u64,
) -> (Bantime, Option<String>) {
    let Some(window) = config.recidive_window else {
        return (asked, None);
    };
    if table.active_ban(ip, now).is_some() {
        return (asked, None);
    }
    let from = now.saturating_sub(window.0.as_secs());
    let earlier = table.history(ip).map_or(0, |h| h.since(from));
    let Some(base) = asked
        .seconds(config.default_bantime.0)
        .filter(|_| earlier > 0)
    else {
        return (asked, None);
    };
    let factor = u64::from(config.recidive_factor);
    let grown = u32::try_from(earlier)
        .ok()
        .and_then(|n| factor.checked_pow(n))
        .and_then(|f| base.checked_mul(f));
    let formula = format!(
        "banned {earlier} times before within recidive-window: bantime {base}s × {factor}^{earlier}"
    );
    let bantime = match (grown, config.recidive_max) {
        (Some(grown), MaxBantime::Limit(max)) => {
            // Never shorter than asked: the cap limits growth, not the reporter's word.
            let max = max.0.as_secs().max(base);
            if grown > max {
                let note = format!("{formula}, capped at recidive-max {max}s");
                return (Bantime::Seconds(max), Some(note));
            }
            Bantime::Seconds(grown)
        }
        (None, MaxBantime::Limit(max)) => Bantime::Seconds(max.0.as_secs().max(base)),
        (Some(grown), MaxBantime::Permanent) if grown <= MAX_BANTIME => Bantime::Seconds(grown),
        (_, MaxBantime::Permanent) => Bantime::Permanent,
    };
    let result = bantime_text(bantime.seconds(config.default_bantime.0));
    (bantime, Some(format!("{formula} = {result}")))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::wire::protocol::{Name, Report};

    fn config(extra: &str) -> ServerConfig {
        toml::from_str(&format!("report-port = 1\npublish-port = 2\n{extra}")).unwrap()
    }

    /// Bans `ip` from `host` at `now` for `bantime`, escalated as `config` says.
    fn ban(config: &ServerConfig, t: &mut BanTable, host: &str, bantime: u64, now: u64) -> Bantime {
        let ip: Cidr = "203.0.113.7".parse().unwrap();
        let (bantime, _) = escalate(config, t, &ip, Bantime::Seconds(bantime), now);
        let report = Report {
            ip,
            prog: Name::parse("prog", "fail2ban").unwrap(),
            jail: Name::parse("jail", "sshd").unwrap(),
            bantime,
        };
        let origin = Name::parse("origin", host).unwrap();
        let minute = Duration::from_secs(60);
        t.record(&report, &origin, minute, minute, now);
        bantime
    }

    fn table(config: &ServerConfig) -> BanTable {
        let mut t = BanTable::default();
        t.set_recidive(config.recidive_window.map(|w| w.0.as_secs()));
        t
    }

    #[test]
    fn each_earlier_ban_from_any_host_multiplies_the_bantime_up_to_the_cap() {
        let config =
            config("recidive-window = \"1d\"\nrecidive-factor = 3\nrecidive-max = \"1000s\"");
        let mut t = table(&config);
        assert_eq!(
            ban(&config, &mut t, "web1", 100, 1000),
            Bantime::Seconds(100)
        );
        // Reported again while banned: the same ban, not escalated, not counted.
        assert_eq!(
            ban(&config, &mut t, "web2", 100, 1050),
            Bantime::Seconds(100)
        );
        assert_eq!(
            ban(&config, &mut t, "web2", 100, 2000),
            Bantime::Seconds(300)
        );
        assert_eq!(
            ban(&config, &mut t, "db1", 100, 3000),
            Bantime::Seconds(900)
        );
        assert_eq!(
            ban(&config, &mut t, "db1", 100, 4000),
            Bantime::Seconds(1000)
        );
        let hosts: Vec<&str> = t
            .history(&"203.0.113.7".parse().unwrap())
            .unwrap()
            .iter()
            .map(|e| e.name.as_str())
            .collect();
        assert_eq!(hosts, ["web1", "web2", "db1", "db1"]);
        // Outside the window, it starts again.
        let day = 86400;
        t.purge(4000 + 2000 + day);
        assert_eq!(
            ban(&config, &mut t, "web1", 100, 4000 + 2000 + day),
            Bantime::Seconds(100)
        );
    }

    #[test]
    fn the_cap_never_shortens_what_was_asked_and_permanent_allows_any_length() {
        let capped = config("recidive-window = \"1d\"\nrecidive-max = \"50s\"");
        let mut t = table(&capped);
        ban(&capped, &mut t, "web1", 100, 1000);
        assert_eq!(
            ban(&capped, &mut t, "web1", 100, 2000),
            Bantime::Seconds(100)
        );
        // Without a cap, a ban that would grow past the longest bantime is permanent.
        let open = config("recidive-window = \"366d\"\nrecidive-max = \"permanent\"");
        let mut t = table(&open);
        ban(&open, &mut t, "web1", 100, 1000);
        assert_eq!(
            ban(&open, &mut t, "web2", 1000, 2000),
            Bantime::Seconds(2000)
        );
        let long = MAX_BANTIME / 3;
        assert_eq!(ban(&open, &mut t, "web2", long, 9000), Bantime::Permanent);
    }

    #[test]
    fn off_by_default() {
        let config = config("");
        let mut t = table(&config);
        ban(&config, &mut t, "web1", 100, 1000);
        assert_eq!(
            ban(&config, &mut t, "web2", 100, 2000),
            Bantime::Seconds(100)
        );
        assert!(t
            .history(&"203.0.113.7".parse().unwrap())
            .unwrap()
            .is_empty());
    }
}
