//! IPv6 aggregation. An attacker with a /64 rotates addresses faster than bans of single
//! addresses can follow, so, when server.toml asks for it:
//! - `ipv6-ban-prefix` bans the network that holds the reported address (the /64);
//! - `aggregate-after` bans the whole `aggregate-prefix` network once that many bans lie in
//!   it, and lifts the bans it then holds, which it outlasts;
//! - and a report inside an active ban counts as a report of that ban: a duplicate, unless
//!   it asks for a later end.
//!
//! A wider network that must not be banned (it holds a protected or a fleet host's address)
//! is not taken: the report bans what it named.

use crate::config::ServerConfig;
use crate::server::table::{BanTable, Entry};
use crate::wire::cidr::Cidr;
use crate::wire::protocol::Bantime;

/// What a report bans once the policy has looked at it.
#[derive(Debug)]
pub struct Target {
    /// The network to ban.
    pub ip: Cidr,
    /// Active bans inside it that its ban replaces: they are lifted once it is published.
    pub absorbed: Vec<Entry>,
    /// What the policy did, for the audit line.
    pub note: Option<String>,
}

/// The network a report of `ip` bans. `allowed` says why a network must never be banned.
pub fn target(
    config: &ServerConfig,
    table: &BanTable,
    ip: Cidr,
    now: u64,
    allowed: impl Fn(&Cidr) -> Result<(), String>,
) -> Target {
    let mut target = Target {
        ip,
        absorbed: Vec::new(),
        note: None,
    };
    let enabled = config.ipv6_ban_prefix.is_some() || config.aggregate_after.is_some();
    if ip.is_ipv4() || !enabled {
        return target;
    }
    if let Some(prefix) = config.ipv6_ban_prefix {
        let wide = ip.widened(prefix);
        if wide != ip {
            target.note = Some(match allowed(&wide) {
                Ok(()) => {
                    target.ip = wide;
                    format!("{ip} widened to {wide} by ipv6-ban-prefix")
                }
                Err(why) => format!("not widened to {wide}: {why}"),
            });
        }
    }
    if let Some(cover) = table.covering(&target.ip, config.min_prefix.ipv6, now) {
        target.note = Some(format!("{ip} lies inside the ban of {}", cover.ban.ip));
        target.ip = cover.ban.ip;
        return target;
    }
    if let Some(after) = config.aggregate_after {
        aggregate(
            &mut target,
            table,
            after,
            config.aggregate_prefix,
            now,
            allowed,
        );
    }
    target
}

/// With `after` bans in the target's `prefix` network, counting its own, bans that network.
fn aggregate(
    target: &mut Target,
    table: &BanTable,
    after: usize,
    prefix: u8,
    now: u64,
    allowed: impl Fn(&Cidr) -> Result<(), String>,
) {
    let net = target.ip.widened(prefix);
    if net == target.ip {
        return;
    }
    let inside: Vec<Entry> = table
        .inside(&net, now)
        .filter(|e| e.ban.ip != target.ip)
        .cloned()
        .collect();
    if inside.len() + 1 < after {
        return;
    }
    target.note = Some(match allowed(&net) {
        Ok(()) => {
            let note = format!(
                "{} bans in {net} reached aggregate-after = {after}: banned {net} instead",
                inside.len() + 1
            );
            target.ip = net;
            target.absorbed = inside;
            note
        }
        Err(why) => format!("not aggregated into {net}: {why}"),
    });
}

/// The bantime a report asks for, made as long as the longest of the bans it absorbs, so
/// that lifting them shortens nothing.
pub fn outlasting(asked: Bantime, config: &ServerConfig, absorbed: &[Entry], now: u64) -> Bantime {
    let ends = absorbed.iter().map(|e| e.ban.expires);
    if ends.clone().any(|end| end.is_none()) {
        return Bantime::Permanent;
    }
    let Some(asked_end) = asked.seconds(config.default_bantime.0).map(|s| now + s) else {
        return Bantime::Permanent;
    };
    match ends.flatten().max() {
        Some(latest) if latest > asked_end => Bantime::Seconds(latest - now),
        _ => asked,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::wire::protocol::{Name, Report};

    fn config(extra: &str) -> ServerConfig {
        toml::from_str(&format!("report-port = 1\npublish-port = 2\n{extra}")).unwrap()
    }

    fn c(text: &str) -> Cidr {
        text.parse().unwrap()
    }

    fn ban(table: &mut BanTable, ip: &str, bantime: Bantime, now: u64) {
        let report = Report {
            ip: c(ip),
            prog: Name::parse("prog", "fail2ban").unwrap(),
            jail: Name::parse("jail", "sshd").unwrap(),
            bantime,
        };
        let origin = Name::parse("origin", "web1").unwrap();
        let day = Duration::from_secs(86400);
        table.record(&report, &origin, day, Duration::from_secs(300), now);
    }

    fn anything(_: &Cidr) -> Result<(), String> {
        Ok(())
    }

    #[test]
    fn off_by_default_and_for_ipv4() {
        let table = BanTable::default();
        let off = target(&config(""), &table, c("2001:db8::7"), 1000, anything);
        assert_eq!((off.ip, off.note), (c("2001:db8::7"), None));
        let on = config("ipv6-ban-prefix = 64\naggregate-after = 2");
        let v4 = target(&on, &table, c("203.0.113.7"), 1000, anything);
        assert_eq!((v4.ip, v4.note), (c("203.0.113.7"), None));
    }

    #[test]
    fn ipv6_ban_prefix_widens_unless_the_wider_network_is_never_banned() {
        let config = config("ipv6-ban-prefix = 64");
        let table = BanTable::default();
        let wide = target(&config, &table, c("2001:db8::7"), 1000, anything);
        assert_eq!(wide.ip, c("2001:db8::/64"));
        let refuse = |net: &Cidr| match net.prefix() {
            64 => Err("2001:db8::/64 covers fleet host db1's address 2001:db8::1".into()),
            _ => Ok(()),
        };
        let kept = target(&config, &table, c("2001:db8::7"), 1000, refuse);
        assert_eq!(kept.ip, c("2001:db8::7"));
        assert!(kept.note.unwrap().contains("not widened"));
    }

    #[test]
    fn the_nth_ban_in_a_network_bans_the_network_and_absorbs_the_others() {
        let config = config("aggregate-after = 3");
        let mut table = BanTable::default();
        ban(&mut table, "2001:db8::1", Bantime::Seconds(600), 1000);
        let second = target(&config, &table, c("2001:db8::2"), 1000, anything);
        assert_eq!((second.ip, second.absorbed.len()), (c("2001:db8::2"), 0));
        ban(&mut table, "2001:db8::2", Bantime::Permanent, 1000);
        // Another /64 does not count.
        ban(&mut table, "2001:db8:0:1::2", Bantime::Seconds(600), 1000);
        let third = target(&config, &table, c("2001:db8::3"), 1000, anything);
        assert_eq!(third.ip, c("2001:db8::/64"));
        let absorbed: Vec<Cidr> = third.absorbed.iter().map(|e| e.ban.ip).collect();
        assert_eq!(absorbed, [c("2001:db8::1"), c("2001:db8::2")]);
        // One of them was permanent: so is the ban that replaces it.
        let bantime = outlasting(Bantime::Default, &config, &third.absorbed, 1000);
        assert_eq!(bantime, Bantime::Permanent);
        // Once the network is banned, an address in it is a report of that ban.
        ban(&mut table, "2001:db8::/64", Bantime::Seconds(600), 1000);
        let later = target(&config, &table, c("2001:db8::9"), 1001, anything);
        assert_eq!((later.ip, later.absorbed.len()), (c("2001:db8::/64"), 0));
        assert!(later
            .note
            .unwrap()
            .contains("inside the ban of 2001:db8::/64"));
    }

    #[test]
    fn the_replacing_ban_lasts_as_long_as_the_longest_it_absorbs() {
        let mut table = BanTable::default();
        ban(&mut table, "2001:db8::1", Bantime::Seconds(5000), 1000);
        let absorbed: Vec<Entry> = table.entries().cloned().collect();
        let config = config("");
        assert_eq!(
            outlasting(Bantime::Seconds(600), &config, &absorbed, 2000),
            Bantime::Seconds(4000)
        );
        assert_eq!(
            outlasting(Bantime::Seconds(9000), &config, &absorbed, 2000),
            Bantime::Seconds(9000)
        );
    }
}
