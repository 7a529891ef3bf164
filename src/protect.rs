//! Addresses that must never be banned: the built-in special ranges, the configured
//! `protected` list and, on a client, this host's own addresses and the server's.

use std::net::{IpAddr, ToSocketAddrs};
use std::time::Duration;

use crate::wire::cidr::Cidr;

/// Loopback, unspecified, link-local, multicast and broadcast: banning any of these breaks
/// the host rather than stopping an attacker.
const BUILTIN: [(&str, &str); 9] = [
    ("127.0.0.0/8", "loopback"),
    ("::1", "loopback"),
    ("0.0.0.0/8", "unspecified"),
    ("::", "unspecified"),
    ("169.254.0.0/16", "link-local"),
    ("fe80::/10", "link-local"),
    ("224.0.0.0/4", "multicast"),
    ("ff00::/8", "multicast"),
    ("255.255.255.255", "broadcast"),
];

/// Private, shared and unique-local space: where a fleet's own hosts, offices and VPNs are.
/// Public blocklists name it (FireHOL level1 lists every bogon), and such a ban could lock
/// an admin out, so no list's ban may cover it; a host's report of one private address
/// still bans that address.
const PRIVATE: [(&str, &str); 5] = [
    ("10.0.0.0/8", "private"),
    ("172.16.0.0/12", "private"),
    ("192.168.0.0/16", "private"),
    ("100.64.0.0/10", "shared (carrier-grade NAT)"),
    ("fc00::/7", "unique local"),
];

/// `PRIVATE`, parsed once.
static PRIVATE_NETS: std::sync::LazyLock<Protected> = std::sync::LazyLock::new(|| Protected {
    nets: PRIVATE
        .iter()
        .map(|(net, why)| (net.parse().expect("valid built-in"), (*why).to_string()))
        .collect(),
});

/// How often a daemon reads its host's own addresses again, as interfaces come and go.
pub const LOCAL_REFRESH: Duration = Duration::from_secs(10);

/// Why a ban was refused as covering an address that must never be banned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtectedError {
    /// An IPv6 form whose IPv4 address cannot be checked, or a whole range of them; the
    /// reason is `Cidr::translation_problem`'s.
    #[error("{0}")]
    Untranslatable(String),
    /// `ban` covers `net`, protected as `why` ("loopback", "protected", "this host's"...);
    /// `seen` is the network that does: the ban itself, or the IPv4 network it carries.
    #[error("{ban} covers {why} address {net}{view}", view = ban.as_view(seen))]
    Covers {
        ban: Cidr,
        seen: Cidr,
        why: String,
        net: Cidr,
    },
}

#[derive(Debug, Clone)]
pub struct Protected {
    nets: Vec<(Cidr, String)>,
}

impl Protected {
    /// The built-in ranges plus the configured ones.
    pub fn new(configured: &[Cidr]) -> Protected {
        let builtin = BUILTIN
            .iter()
            .map(|(net, why)| (net.parse().expect("valid built-in"), (*why).to_string()));
        let configured = configured.iter().map(|net| (*net, "protected".to_string()));
        Protected {
            nets: builtin.chain(configured).collect(),
        }
    }

    /// The built-in and configured ranges, and every address of this host's interfaces.
    pub fn for_this_host(configured: &[Cidr]) -> Protected {
        let mut protected = Protected::new(configured);
        for addr in local_addresses() {
            protected.add(addr, "this host's");
        }
        protected
    }

    pub fn add(&mut self, addr: IpAddr, why: &str) {
        self.nets.push((Cidr::host(addr), why.to_string()));
    }

    /// Refuses what `check` refuses, and a blocklist's ban (prog `import`) of private space.
    pub fn check_list(&self, ban: &Cidr) -> Result<(), ProtectedError> {
        self.check(ban)?;
        PRIVATE_NETS.check(ban)
    }

    /// `check_list` for a ban of `prog` from a blocklist, else `check`.
    pub fn check_for(&self, prog: &str, ban: &Cidr) -> Result<(), ProtectedError> {
        if crate::blocklist::is_list(prog) {
            self.check_list(ban)
        } else {
            self.check(ban)
        }
    }

    /// Refuses a ban that covers any protected address, with the reason: also when written
    /// in an IPv6 form that carries an IPv4 address (NAT64, 6to4 and the like), and any ban
    /// that covers a whole such range.
    pub fn check(&self, ban: &Cidr) -> Result<(), ProtectedError> {
        if let Some(problem) = ban.translation_problem() {
            return Err(ProtectedError::Untranslatable(problem));
        }
        for view in ban.views() {
            if let Some((net, why)) = self.nets.iter().find(|(net, _)| net.overlaps(&view)) {
                return Err(ProtectedError::Covers {
                    ban: *ban,
                    seen: view,
                    why: why.clone(),
                    net: *net,
                });
            }
        }
        Ok(())
    }
}

/// The addresses of this host's interfaces.
pub fn local_addresses() -> Vec<IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        log::warn!("cannot list this host's addresses; only configured ones are protected");
        return Vec::new();
    };
    addrs
        .filter_map(|ifa| ifa.address)
        .filter_map(|addr| {
            if let Some(v4) = addr.as_sockaddr_in() {
                Some(IpAddr::V4(v4.ip()))
            } else {
                addr.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
            }
        })
        .collect()
}

/// Every address the server's name resolves to.
pub fn resolve(host: &str) -> Vec<IpAddr> {
    (host, 0)
        .to_socket_addrs()
        .map(|addrs| addrs.map(|a| a.ip()).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(t: &str) -> Cidr {
        t.parse().unwrap()
    }

    #[test]
    fn a_lists_ban_of_private_space_is_refused_and_a_hosts_report_of_it_is_not() {
        let p = Protected::new(&[]);
        for private in [
            "10.0.0.0/8",
            "10.9.8.0/24",
            "172.16.0.0/12",
            "192.168.1.1",
            "100.64.0.0/10",
            "fd00::/8",
            "64:ff9b::c0a8:101",
        ] {
            assert!(p.check_for("import", &c(private)).is_err(), "{private}");
        }
        assert!(p.check_for("fail2ban", &c("10.9.8.7")).is_ok());
        assert!(p.check_for("import", &c("45.128.0.0/10")).is_ok());
        assert_eq!(
            p.check_list(&c("10.0.0.0/7")).unwrap_err().to_string(),
            "10.0.0.0/7 covers private address 10.0.0.0/8"
        );
    }

    #[test]
    fn builtin_ranges_are_protected() {
        let p = Protected::new(&[]);
        for ip in [
            "127.0.0.1",
            "::1",
            "0.0.0.0",
            "169.254.1.1",
            "fe80::1",
            "224.0.0.1",
            "ff02::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(
                matches!(p.check(&c(ip)), Err(ProtectedError::Covers { .. })),
                "{ip}"
            );
        }
        assert!(p.check(&c("203.0.113.7")).is_ok());
        assert!(p.check(&c("2001:db8::7")).is_ok());
    }

    #[test]
    fn configured_and_added_addresses_are_protected() {
        let mut p = Protected::new(&[c("198.51.100.0/24")]);
        p.add("192.0.2.10".parse().unwrap(), "server");
        let err = p.check(&c("198.51.100.7")).unwrap_err();
        assert_eq!(
            err,
            ProtectedError::Covers {
                ban: c("198.51.100.7"),
                seen: c("198.51.100.7"),
                why: "protected".into(),
                net: c("198.51.100.0/24"),
            }
        );
        assert_eq!(
            err.to_string(),
            "198.51.100.7 covers protected address 198.51.100.0/24"
        );
        assert!(matches!(
            p.check(&c("192.0.2.0/24")),
            Err(ProtectedError::Covers { why, .. }) if why == "server"
        ));
        assert!(p.check(&c("192.0.2.11")).is_ok());
    }

    #[test]
    fn protected_addresses_in_ipv6_forms_are_protected() {
        let p = Protected::new(&[c("198.51.100.0/24")]);
        for ip in [
            "64:ff9b::7f00:1",
            "64:ff9b::/96",
            "64:ff9b::c633:6400/120",
            "::c633:6407",
            "::ffff:0:c633:6407",
            "2002:c633:6407::/48",
            "2002:7f00:1::/48",
            "::fffe:0:0/95",
            "64:ff9b:1::/64",
        ] {
            assert!(p.check(&c(ip)).is_err(), "{ip}");
        }
        assert!(matches!(
            p.check(&c("64:ff9b:1::/64")),
            Err(ProtectedError::Untranslatable(_))
        ));
        let err = p.check(&c("64:ff9b::c633:6407")).unwrap_err();
        assert!(
            matches!(err, ProtectedError::Covers { seen, .. } if seen == c("198.51.100.7")),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            "64:ff9b::c633:6407 covers protected address 198.51.100.0/24, as 198.51.100.7"
        );
        assert!(p.check(&c("64:ff9b::cb00:7107")).is_ok());
        assert!(p.check(&c("2002:cb00:7107::/48")).is_ok());
    }

    #[test]
    fn finds_loopback_among_local_addresses() {
        assert!(local_addresses().contains(&"127.0.0.1".parse().unwrap()));
    }
}
