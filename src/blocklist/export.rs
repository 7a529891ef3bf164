//! `banshare bans --format nft|ipset|csv`: the active bans for other tools, each with the
//! time it has left.
//!
//! - `nft`: a file `nft -f` loads, table `inet banshare_export` with the client's four sets
//!   (addresses in hash sets, networks in interval sets) and no chain: a ruleset refers to
//!   the sets as it likes. nft refuses overlapping intervals, so a network inside another
//!   is left out, and the wider one keeps the later of their ends: an export bans no less
//!   than the table, for no shorter.
//! - `ipset`: `ipset restore` input, sets `banshare_export4` and `banshare_export6` of type
//!   hash:net, which take overlapping networks. ipset's longest timeout is 2,147,483 s
//!   (24.8 days): a longer ban gets that, so an export is refreshed sooner than that.
//! - `csv`: `address,bantime,jail` as `banshare import` reads it, the bantime being the
//!   time left (-1 for permanent): the table moves to another server, or comes back.

use crate::wire::cidr::Cidr;
use crate::wire::control::BanView;

/// The kernel's bound on an ipset timeout, in seconds.
const IPSET_MAX_TIMEOUT: u64 = 2_147_483;

/// A ban to export: its network, and the seconds it has left (None: permanent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Left {
    ip: Cidr,
    seconds: Option<u64>,
}

/// The bans still in force at `now`, in the table's order.
fn left(bans: &[BanView], now: u64) -> Vec<(Left, &BanView)> {
    bans.iter()
        .filter_map(|ban| {
            let ip = ban.ip.parse::<Cidr>().ok()?;
            let seconds = match ban.expires {
                None => None,
                Some(expires) if expires > now => Some(expires - now),
                Some(_) => return None,
            };
            Some((Left { ip, seconds }, ban))
        })
        .collect()
}

pub fn csv(bans: &[BanView], now: u64) -> String {
    let mut out = String::from("address,bantime,jail\n");
    for (ban, view) in left(bans, now) {
        let bantime = ban.seconds.map_or("-1".to_string(), |s| s.to_string());
        out.push_str(&format!("{},{bantime},{}\n", ban.ip, view.jail));
    }
    out
}

pub fn ipset(bans: &[BanView], now: u64) -> String {
    let mut out = String::from(
        "create banshare_export4 hash:net family inet timeout 0 maxelem 1048576 -exist\n\
         create banshare_export6 hash:net family inet6 timeout 0 maxelem 1048576 -exist\n",
    );
    for (ban, _) in left(bans, now) {
        let set = if ban.ip.is_ipv4() {
            "banshare_export4"
        } else {
            "banshare_export6"
        };
        // 0 is for ever in ipset.
        let timeout = ban.seconds.map_or(0, |s| s.min(IPSET_MAX_TIMEOUT));
        out.push_str(&format!("add {set} {} timeout {timeout} -exist\n", ban.ip));
    }
    out
}

pub fn nft(bans: &[BanView], now: u64) -> String {
    let all: Vec<Left> = left(bans, now).into_iter().map(|(ban, _)| ban).collect();
    let (hosts, networks): (Vec<Left>, Vec<Left>) = all.into_iter().partition(|b| b.ip.is_host());
    let networks = outermost(networks);
    let mut out = String::from("table inet banshare_export {\n");
    for (name, ipv4, kind, flags, bans) in [
        ("addr4", true, "ipv4_addr", "timeout", &hosts),
        ("addr6", false, "ipv6_addr", "timeout", &hosts),
        ("net4", true, "ipv4_addr", "interval, timeout", &networks),
        ("net6", false, "ipv6_addr", "interval, timeout", &networks),
    ] {
        let elements: Vec<String> = bans
            .iter()
            .filter(|b| b.ip.is_ipv4() == ipv4)
            .map(|b| match b.seconds {
                Some(s) => format!("{} timeout {s}s", b.ip),
                None => b.ip.to_string(),
            })
            .collect();
        out.push_str(&format!(
            "\tset {name} {{\n\t\ttype {kind}\n\t\tflags {flags}\n"
        ));
        if !elements.is_empty() {
            out.push_str(&format!(
                "\t\telements = {{ {} }}\n",
                elements.join(",\n\t\t\t     ")
            ));
        }
        out.push_str("\t}\n");
    }
    out.push_str("}\n");
    out
}

/// The networks that no other one covers, each with the latest end of those it covers.
fn outermost(mut networks: Vec<Left>) -> Vec<Left> {
    // Widest first, so that each network meets its covers before itself.
    networks.sort_by_key(|b| (!b.ip.is_ipv4(), b.ip.prefix()));
    let mut kept: Vec<Left> = Vec::new();
    for ban in networks {
        // Sorted widest first, a kept network that overlaps this one contains it.
        match kept.iter_mut().find(|k| k.ip.overlaps(&ban.ip)) {
            Some(cover) => {
                cover.seconds = match (cover.seconds, ban.seconds) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    _ => None,
                }
            }
            None => kept.push(ban),
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(ip: &str, expires: Option<u64>) -> BanView {
        BanView {
            group: None,
            bantime: expires.map(|_| 600),
            expires,
            first_report: 0,
            ip: ip.into(),
            jail: "sshd".into(),
            last_report: 0,
            more_reporters: 0,
            origin: "web1".into(),
            prog: "fail2ban".into(),
            reporters: Vec::new(),
            history: Vec::new(),
        }
    }

    #[test]
    fn each_ban_with_the_time_it_has_left_and_expired_ones_left_out() {
        let bans = [
            view("203.0.113.7", Some(1_600)),
            view("198.51.100.0/24", None),
            view("2001:db8::/64", Some(1_060)),
            view("192.0.2.1", Some(900)),
        ];
        assert_eq!(
            csv(&bans, 1_000),
            "address,bantime,jail\n203.0.113.7,600,sshd\n198.51.100.0/24,-1,sshd\n2001:db8::/64,60,sshd\n"
        );
        let ipset = ipset(&bans, 1_000);
        assert!(
            ipset.contains("add banshare_export4 203.0.113.7 timeout 600 -exist\n"),
            "{ipset}"
        );
        assert!(
            ipset.contains("add banshare_export4 198.51.100.0/24 timeout 0 -exist\n"),
            "{ipset}"
        );
        assert!(
            ipset.contains("add banshare_export6 2001:db8::/64 timeout 60 -exist\n"),
            "{ipset}"
        );
        assert!(!ipset.contains("192.0.2.1"));
    }

    #[test]
    fn a_network_inside_another_is_left_out_and_the_wider_keeps_the_later_end() {
        let networks = [
            ("10.1.0.0/16", Some(100)),
            ("10.1.2.0/24", Some(500)),
            ("10.9.0.0/24", None),
            ("10.9.0.0/25", Some(5)),
        ]
        .map(|(ip, seconds)| Left {
            ip: ip.parse().unwrap(),
            seconds,
        });
        assert_eq!(
            outermost(networks.to_vec()),
            [("10.1.0.0/16", Some(500)), ("10.9.0.0/24", None)].map(|(ip, seconds)| Left {
                ip: ip.parse().unwrap(),
                seconds
            })
        );
    }
}
