//! IPv4 and IPv6 addresses and CIDR networks, parsed with the standard library's strict parsers
//! rather than matched with patterns, so "1.2.3.4 && reboot" can never pass as an address.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use crate::logging::printable;

/// An address or network: `addr` has no bits set beyond `prefix`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// A single address: /32 or /128.
    pub fn host(addr: IpAddr) -> Cidr {
        let addr = unmap(addr);
        Cidr {
            addr,
            prefix: max_prefix(addr),
        }
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    pub fn is_host(&self) -> bool {
        self.prefix == max_prefix(self.addr)
    }

    /// True when `addr` is inside this network.
    pub fn contains(&self, addr: IpAddr) -> bool {
        self.contains_as_written(unmap(addr))
    }

    /// `contains`, taking an IPv4-mapped address as the IPv6 address it is written as.
    fn contains_as_written(&self, addr: IpAddr) -> bool {
        match (self.addr, addr) {
            (IpAddr::V4(net), IpAddr::V4(a)) => {
                mask(u32::from(a).into(), 32, self.prefix) == u32::from(net) as u128
            }
            (IpAddr::V6(net), IpAddr::V6(a)) => mask(a.into(), 128, self.prefix) == u128::from(net),
            _ => false,
        }
    }

    /// True when the two networks share at least one address.
    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.contains(other.addr) || other.contains(self.addr)
    }

    /// The network of `prefix` bits that holds this one; itself when it is as wide already.
    pub fn widened(&self, prefix: u8) -> Cidr {
        if prefix >= self.prefix {
            return *self;
        }
        Cidr {
            addr: self.addr,
            prefix,
        }
        .masked()
    }

    /// In the order of `Ord`, every network inside this one sorts from this network itself
    /// to the last address it holds: the bounds of a range query for them.
    pub fn inside_bounds(&self) -> (Cidr, Cidr) {
        let last = match self.addr {
            IpAddr::V4(a) => {
                let hosts = u32::MAX.checked_shr(self.prefix.into()).unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(a) | hosts))
            }
            IpAddr::V6(a) => {
                let hosts = u128::MAX.checked_shr(self.prefix.into()).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(a) | hosts))
            }
        };
        (*self, Cidr::host(last))
    }
}

/// IPv6 ranges whose addresses carry an IPv4 address right after the range's prefix:
/// traffic from `64:ff9b::a.b.c.d` through a NAT64 gateway is traffic from `a.b.c.d`, and
/// `2002:AABB:CCDD::/48` is the 6to4 site of `AA.BB.CC.DD`. A ban inside one of them is
/// also checked as the IPv4 network it carries, so that a protected address cannot be
/// banned by writing it in one of these forms; and a ban that covers a whole one is refused,
/// since it would ban every IPv4 address in that form.
const CARRIERS: [(Cidr, &str); 5] = [
    (
        v6_range(Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0), 96),
        "IPv4-mapped",
    ),
    (v6_range(Ipv6Addr::UNSPECIFIED, 96), "IPv4-compatible"),
    (
        v6_range(Ipv6Addr::new(0, 0, 0, 0, 0xffff, 0, 0, 0), 96),
        "IPv4-translated (SIIT)",
    ),
    (
        v6_range(Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96),
        "NAT64",
    ),
    (
        v6_range(Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0), 16),
        "6to4",
    ),
];

/// The local-use NAT64 prefix (RFC 8215): each network chooses where in it the IPv4 address
/// sits, so a ban inside it cannot be checked, and is refused.
const LOCAL_NAT64: Cidr = v6_range(Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0), 48);

/// An IPv6 range as written, without the unmapping that parsing does.
const fn v6_range(addr: Ipv6Addr, prefix: u8) -> Cidr {
    Cidr {
        addr: IpAddr::V6(addr),
        prefix,
    }
}

impl Cidr {
    /// The IPv4 network that this IPv6 network carries, and the form it is in: for
    /// `64:ff9b::7f00:1` that is `127.0.0.1`, "NAT64".
    pub fn embedded_ipv4(&self) -> Option<(Cidr, &'static str)> {
        let IpAddr::V6(v6) = self.addr else {
            return None;
        };
        let (range, form) = CARRIERS.iter().find(|(range, _)| {
            range.prefix <= self.prefix && range.contains_as_written(self.addr)
        })?;
        let offset = u32::from(range.prefix);
        let v4 = Cidr {
            addr: IpAddr::V4(Ipv4Addr::from((u128::from(v6) << offset >> 96) as u32)),
            prefix: (self.prefix - range.prefix).min(32),
        };
        Some((v4.masked(), form))
    }

    /// Why this network may not be banned whatever it covers: it holds a whole range of
    /// IPv4-carrying addresses, or lies where the IPv4 address it carries cannot be found.
    pub fn translation_problem(&self) -> Option<String> {
        if self.is_ipv4() {
            return None;
        }
        if LOCAL_NAT64.overlaps(self) {
            return Some(format!(
                "{self} overlaps the local-use NAT64 range {LOCAL_NAT64}, where the IPv4 \
                 address it carries cannot be checked"
            ));
        }
        CARRIERS.iter().find_map(|(range, form)| {
            (self.prefix < range.prefix && self.contains_as_written(range.addr)).then(|| {
                format!(
                    "{self} covers the whole {form} range {range}, which carries every IPv4 \
                     address"
                )
            })
        })
    }

    /// ", as 127.0.0.1" when a check refused `view`, the IPv4 network this one carries,
    /// rather than this network itself: the end of a refusal's reason.
    pub fn as_view(&self, view: &Cidr) -> String {
        if view == self {
            String::new()
        } else {
            format!(", as {view}")
        }
    }

    /// This network, and the IPv4 network it carries if it carries one: every protection
    /// check applies to each.
    pub fn views(&self) -> impl Iterator<Item = Cidr> {
        std::iter::once(*self).chain(self.embedded_ipv4().map(|(v4, _)| v4))
    }
}

/// Treats "::ffff:1.2.3.4" as "1.2.3.4" so that protection checks cannot be bypassed by
/// writing an IPv4 address in its IPv6-mapped form.
fn unmap(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

fn max_prefix(addr: IpAddr) -> u8 {
    if addr.is_ipv4() {
        32
    } else {
        128
    }
}

/// Keeps the top `prefix` bits of a `width`-bit value.
fn mask(value: u128, width: u32, prefix: u8) -> u128 {
    let host_bits = width - u32::from(prefix);
    if host_bits >= 128 {
        0
    } else {
        value >> host_bits << host_bits
    }
}

/// Why a text is not an address or network as the protocol writes it (docs/protocol.md
/// section 2, `ip`). The texts kept are printable: they go back to the sender.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("{text:?} is not an IPv4 or IPv6 address")]
    NotAnAddress { text: String },
    /// Digits, but more than the address has bits: `/33` on an IPv4 address.
    #[error("prefix length /{prefix} is out of range for {addr} (0 to {width})")]
    PrefixOutOfRange {
        prefix: String,
        addr: String,
        width: u8,
    },
    #[error("{text:?} is not a prefix length")]
    NotAPrefix { text: String },
    /// `198.51.100.7/24`: says which network was probably meant.
    #[error("{text} has host bits set; did you mean {network}?")]
    HostBitsSet { text: String, network: Cidr },
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(text: &str) -> Result<Cidr, CidrError> {
        let (addr_text, prefix_text) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr = IpAddr::from_str(addr_text).map_err(|_| CidrError::NotAnAddress {
            text: printable(text),
        })?;
        let width = max_prefix(addr);
        let prefix = match prefix_text {
            None => width,
            // Digits only, leading zeros allowed, at most 20, as every number (protocol.md
            // section 2): `/0064` is `/64`.
            Some(p) if !p.is_empty() && p.len() <= 20 && p.bytes().all(|b| b.is_ascii_digit()) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= width)
                .ok_or_else(|| CidrError::PrefixOutOfRange {
                    prefix: p.to_owned(),
                    addr: addr_text.to_owned(),
                    width,
                })?,
            Some(p) => return Err(CidrError::NotAPrefix { text: printable(p) }),
        };
        let network = Cidr::new(addr, prefix);
        if network != network.masked() {
            return Err(CidrError::HostBitsSet {
                text: text.to_owned(),
                network: network.masked(),
            });
        }
        Ok(network)
    }
}

impl Cidr {
    /// Writes an IPv4-mapped IPv6 network (::ffff:a.b.c.d/96 or longer) as plain IPv4.
    fn new(addr: IpAddr, prefix: u8) -> Cidr {
        match unmap(addr) {
            v4 @ IpAddr::V4(_) if prefix >= 96 || addr.is_ipv4() => Cidr {
                addr: v4,
                prefix: if addr.is_ipv4() { prefix } else { prefix - 96 },
            },
            _ => Cidr { addr, prefix },
        }
    }

    fn masked(self) -> Cidr {
        let addr = match self.addr {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(
                mask(u32::from(a).into(), 32, self.prefix) as u32
            )),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(mask(a.into(), 128, self.prefix))),
        };
        Cidr {
            addr,
            prefix: self.prefix,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_host() {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix)
        }
    }
}

impl<'de> serde::Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        let text = String::deserialize(de)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(text: &str) -> Cidr {
        text.parse().unwrap()
    }

    #[test]
    fn parses_addresses_and_networks() {
        assert_eq!(c("203.0.113.7").to_string(), "203.0.113.7");
        assert_eq!(c("203.0.113.0/24").to_string(), "203.0.113.0/24");
        assert_eq!(c("2001:db8::1").to_string(), "2001:db8::1");
        assert_eq!(c("2001:db8::/64").to_string(), "2001:db8::/64");
        assert_eq!(c("203.0.113.7/32"), c("203.0.113.7"));
        assert!(c("2001:db8::/64").prefix() == 64 && !c("2001:db8::/64").is_ipv4());
        // Leading zeros in a prefix length mean nothing, as in every number.
        assert_eq!(c("2001:db8::/0064"), c("2001:db8::/64"));
        assert_eq!(c("198.51.100.0/00000000000000000024"), c("198.51.100.0/24"));
    }

    #[test]
    fn widens_and_bounds_what_lies_inside() {
        assert_eq!(c("2001:db8::7").widened(64), c("2001:db8::/64"));
        assert_eq!(c("2001:db8::/48").widened(64), c("2001:db8::/48"));
        assert_eq!(c("203.0.113.7").widened(24), c("203.0.113.0/24"));
        let net = c("2001:db8::/64");
        let (first, last) = net.inside_bounds();
        assert_eq!((first, last), (net, c("2001:db8::ffff:ffff:ffff:ffff")));
        for inside in [
            "2001:db8::",
            "2001:db8::/80",
            "2001:db8::ffff:ffff:ffff:ffff",
        ] {
            assert!((first..=last).contains(&c(inside)), "{inside}");
        }
        for outside in [
            "2001:db8::/48",
            "2001:db8:0:1::",
            "2001:db7::1",
            "203.0.113.7",
        ] {
            assert!(!(first..=last).contains(&c(outside)), "{outside}");
        }
        assert_eq!(c("0.0.0.0/0").inside_bounds().1, c("255.255.255.255"));
    }

    #[test]
    fn unmaps_ipv4_mapped_ipv6() {
        assert_eq!(c("::ffff:127.0.0.1"), c("127.0.0.1"));
        assert_eq!(c("::ffff:10.0.0.0/120"), c("10.0.0.0/24"));
        assert!(c("127.0.0.0/8").contains("::ffff:127.0.0.5".parse().unwrap()));
    }

    #[test]
    fn rejects_everything_else() {
        for bad in [
            "",
            "1.2.3.4 && reboot",
            "1.2.3.4\n",
            "1.2.3.4\nreboot",
            "01.2.3.4",
            "1.2.3",
            "1.2.3.4/33",
            "1.2.3.4/0033",
            "1.2.3.4/000000000000000000032",
            "1.2.3.4/",
            "1.2.3.4/-1",
            "1.2.3.4/ 8",
            "2001:db8::/129",
            "fe80::1%eth0",
            "example.com",
            "1.2.3.4/24",
            "1.2.3.4;touch /tmp/x",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn host_bits_error_suggests_the_network() {
        let err = "198.51.100.7/24".parse::<Cidr>().unwrap_err();
        assert_eq!(
            err,
            CidrError::HostBitsSet {
                text: "198.51.100.7/24".into(),
                network: c("198.51.100.0/24"),
            }
        );
        assert_eq!(
            err.to_string(),
            "198.51.100.7/24 has host bits set; did you mean 198.51.100.0/24?"
        );
    }

    #[test]
    fn each_kind_of_bad_network_says_what_is_wrong() {
        let err = |text: &str| text.parse::<Cidr>().unwrap_err();
        assert_eq!(
            err("1.2.3.4 && reboot"),
            CidrError::NotAnAddress {
                text: "1.2.3.4 && reboot".into()
            }
        );
        assert!(matches!(err("1.2.3.4/-1"), CidrError::NotAPrefix { .. }));
        assert!(matches!(err("1.2.3.4/"), CidrError::NotAPrefix { .. }));
        assert!(matches!(
            err("2001:db8::/129"),
            CidrError::PrefixOutOfRange { width: 128, .. }
        ));
        assert_eq!(
            err("x\u{1b}y").to_string(),
            r#""x\\u{1b}y" is not an IPv4 or IPv6 address"#
        );
        assert_eq!(
            err("1.2.3.4/0033").to_string(),
            "prefix length /0033 is out of range for 1.2.3.4 (0 to 32)"
        );
        assert_eq!(
            err("1.2.3.4/ 8").to_string(),
            r#"" 8" is not a prefix length"#
        );
    }

    #[test]
    fn containment_and_overlap() {
        let net = c("198.51.100.0/24");
        assert!(net.contains("198.51.100.255".parse().unwrap()));
        assert!(!net.contains("198.51.101.0".parse().unwrap()));
        assert!(!net.contains("2001:db8::1".parse().unwrap()));
        assert!(c("0.0.0.0/0").contains("8.8.8.8".parse().unwrap()));
        assert!(c("::/0").contains("2001:db8::1".parse().unwrap()));
        assert!(net.overlaps(&c("198.51.0.0/16")));
        assert!(c("198.51.0.0/16").overlaps(&net));
        assert!(!net.overlaps(&c("198.51.101.0/24")));
    }

    #[test]
    fn finds_the_ipv4_network_inside_ipv6_forms() {
        let embedded = |t: &str| {
            c(t).embedded_ipv4()
                .map(|(v4, form)| (v4.to_string(), form))
        };
        assert_eq!(
            embedded("64:ff9b::7f00:1"),
            Some(("127.0.0.1".into(), "NAT64"))
        );
        assert_eq!(
            embedded("64:ff9b::c633:6400/120"),
            Some(("198.51.100.0/24".into(), "NAT64"))
        );
        assert_eq!(
            embedded("64:ff9b::/96"),
            Some(("0.0.0.0/0".into(), "NAT64"))
        );
        assert_eq!(
            embedded("::c633:6402"),
            Some(("198.51.100.2".into(), "IPv4-compatible"))
        );
        assert_eq!(
            embedded("::ffff:0:c633:6402"),
            Some(("198.51.100.2".into(), "IPv4-translated (SIIT)"))
        );
        assert_eq!(
            embedded("2002:c633:6402::/48"),
            Some(("198.51.100.2".into(), "6to4"))
        );
        assert_eq!(
            embedded("2002:c633:6402:1::/64"),
            Some(("198.51.100.2".into(), "6to4"))
        );
        assert_eq!(embedded("2001:db8::1"), None);
        assert_eq!(embedded("198.51.100.2"), None);
    }

    #[test]
    fn a_network_covering_a_whole_ipv4_carrying_range_is_a_problem() {
        for bad in [
            "::fffe:0:0/95",
            "::/95",
            "::/64",
            "64:ff9b::/95",
            "64:ff9b::/64",
            "2002::/15",
            "64:ff9b:1::/64",
            "64:ff9b:1:2::1",
            "64:ff9b::/32",
        ] {
            assert!(c(bad).translation_problem().is_some(), "{bad}");
        }
        for fine in [
            "64:ff9b::/96",
            "64:ff9b::7f00:1",
            "2002:c633:6402::/48",
            "2001:db8::/64",
            "203.0.113.0/24",
        ] {
            assert_eq!(c(fine).translation_problem(), None, "{fine}");
        }
        assert!(c("::fffe:0:0/95")
            .translation_problem()
            .unwrap()
            .contains("IPv4-mapped range ::ffff:0.0.0.0/96"));
    }
}
