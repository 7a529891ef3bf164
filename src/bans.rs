//! The server's table of active bans, which also answers "was this published recently?"
//! for de-duplication.

use std::collections::{BTreeMap, HashSet};
use std::ops::Bound;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::cidr::Cidr;
use crate::protocol::{Ban, Bantime, Name, Report};

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub ban: Ban,
    pub first_report: u64,
    pub last_report: u64,
    /// When this ban was last published; de-duplication counts from here.
    pub last_published: u64,
}

#[derive(Debug, Default)]
pub struct BanTable {
    /// Ordered by network, so that snapshot pages have a stable order.
    entries: BTreeMap<Cidr, Entry>,
    /// One copy of each prog, jail and origin name, which every entry shares: a million
    /// bans from a handful of jails and hosts then hold a handful of strings, not three
    /// million (about 100 bytes a ban).
    names: HashSet<Name>,
}

/// What recording a report did.
pub enum Recorded {
    /// Store and publish this ban.
    New(Entry),
    /// Published less than the de-duplication window ago.
    Duplicate,
}

impl BanTable {
    /// Records a report at time `now`. A report is a duplicate when the same network is still
    /// banned and was published less than `window` ago; duplicates do not extend the window,
    /// so an address reported every few minutes is still re-published once per window.
    pub fn record(
        &mut self,
        report: &Report,
        origin: &Name,
        default_bantime: Duration,
        window: Duration,
        now: u64,
    ) -> Recorded {
        let bantime = match report.bantime {
            Bantime::Default => Some(default_bantime.as_secs().max(1)),
            Bantime::Permanent => None,
            Bantime::Seconds(s) => Some(s),
        };
        if let Some(entry) = self.entries.get_mut(&report.ip) {
            let active = entry.ban.expires.map_or(true, |e| e > now);
            let recent = now < entry.last_published.saturating_add(window.as_secs());
            // fail2ban's bantime.increment makes repeat offenders' bans longer: that longer
            // ban is news for the fleet even inside the window.
            let longer = bantime.unwrap_or(u64::MAX) > entry.ban.bantime.unwrap_or(u64::MAX);
            if active && recent && !longer {
                entry.last_report = now;
                return Recorded::Duplicate;
            }
        }
        let ban = Ban {
            ip: report.ip,
            prog: self.intern(&report.prog),
            jail: self.intern(&report.jail),
            origin: self.intern(origin),
            bantime,
            expires: bantime.map(|b| now.saturating_add(b)),
        };
        let first_report = self.entries.get(&report.ip).map_or(now, |e| e.first_report);
        let entry = Entry {
            ban,
            first_report,
            last_report: now,
            last_published: now,
        };
        self.entries.insert(report.ip, entry.clone());
        Recorded::New(entry)
    }

    pub fn remove(&mut self, ip: &Cidr) -> Option<Entry> {
        self.entries.remove(ip)
    }

    /// A table holding bans read back from disk.
    pub fn from_entries(entries: Vec<Entry>) -> BanTable {
        let mut table = BanTable::default();
        for mut entry in entries {
            entry.ban.prog = table.intern(&entry.ban.prog);
            entry.ban.jail = table.intern(&entry.ban.jail);
            entry.ban.origin = table.intern(&entry.ban.origin);
            table.entries.insert(entry.ban.ip, entry);
        }
        table
    }

    /// The table's shared copy of `name`.
    fn intern(&mut self, name: &Name) -> Name {
        if let Some(shared) = self.names.get(name) {
            return shared.clone();
        }
        self.names.insert(name.clone());
        name.clone()
    }

    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    /// Up to `limit` active bans after `after` in network order, and where the next page
    /// starts (None when this is the last page).
    pub fn page(&self, after: Option<&Cidr>, limit: usize, now: u64) -> (Vec<Ban>, Option<Cidr>) {
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut range = self.entries.range((start, Bound::Unbounded));
        let bans: Vec<Ban> = range
            .by_ref()
            .map(|(_, e)| &e.ban)
            .filter(|b| b.expires.map_or(true, |x| x > now))
            .take(limit)
            .cloned()
            .collect();
        let next = match (bans.last(), range.next()) {
            (Some(last), Some(_)) => Some(last.ip),
            _ => None,
        };
        (bans, next)
    }

    /// Forgets bans that have expired.
    pub fn purge(&mut self, now: u64) -> usize {
        let before = self.entries.len();
        self.entries
            .retain(|_, e| e.ban.expires.map_or(true, |expires| expires > now));
        // Names that no ban uses any more.
        self.names.retain(Name::is_shared);
        before - self.entries.len()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn contains(&self, ip: &Cidr) -> bool {
        self.entries.contains_key(ip)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(300);
    const DAY: Duration = Duration::from_secs(86400);

    fn report(ip: &str, bantime: &str) -> Report {
        Report::parse("fail2ban", "sshd", ip, bantime).unwrap()
    }

    fn origin() -> Name {
        Name::parse("origin", "web1").unwrap()
    }

    fn is_new(r: Recorded) -> bool {
        matches!(r, Recorded::New(_))
    }

    #[test]
    fn window_counts_from_last_publish_not_last_report() {
        let mut t = BanTable::default();
        let r = report("203.0.113.7", "");
        assert!(is_new(t.record(&r, &origin(), DAY, WINDOW, 1000)));
        // Reported every 4 minutes: the 2014 server never published it again.
        assert!(!is_new(t.record(&r, &origin(), DAY, WINDOW, 1240)));
        assert!(!is_new(t.record(&r, &origin(), DAY, WINDOW, 1299)));
        assert!(is_new(t.record(&r, &origin(), DAY, WINDOW, 1300)));
        assert!(!is_new(t.record(&r, &origin(), DAY, WINDOW, 1540)));
    }

    #[test]
    fn a_longer_bantime_is_published_inside_the_window() {
        let mut t = BanTable::default();
        assert!(is_new(t.record(
            &report("203.0.113.7", "600"),
            &origin(),
            DAY,
            WINDOW,
            1000
        )));
        assert!(!is_new(t.record(
            &report("203.0.113.7", "300"),
            &origin(),
            DAY,
            WINDOW,
            1010
        )));
        assert!(is_new(t.record(
            &report("203.0.113.7", "1200"),
            &origin(),
            DAY,
            WINDOW,
            1020
        )));
        assert!(is_new(t.record(
            &report("203.0.113.7", "-1"),
            &origin(),
            DAY,
            WINDOW,
            1030
        )));
        assert!(!is_new(t.record(
            &report("203.0.113.7", "-1"),
            &origin(),
            DAY,
            WINDOW,
            1040
        )));
    }

    #[test]
    fn pages_cover_every_active_ban_once() {
        let mut t = BanTable::default();
        for i in 0..25 {
            t.record(
                &report(&format!("203.0.113.{i}"), "100"),
                &origin(),
                DAY,
                WINDOW,
                1000,
            );
        }
        t.record(&report("2001:db8::1", "10"), &origin(), DAY, WINDOW, 1000);
        let (mut seen, mut after) = (Vec::new(), None);
        loop {
            let (bans, next) = t.page(after.as_ref(), 10, 1050);
            seen.extend(bans.into_iter().map(|b| b.ip.to_string()));
            match next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        let mut expected: Vec<String> = (0..25).map(|i| format!("203.0.113.{i}")).collect();
        expected.sort();
        seen.sort();
        assert_eq!(seen, expected, "the expired IPv6 ban is left out");
    }

    #[test]
    fn expired_bans_are_published_again_and_purged() {
        let mut t = BanTable::default();
        let r = report("203.0.113.7", "60");
        let Recorded::New(Entry { ban, .. }) = t.record(&r, &origin(), DAY, WINDOW, 1000) else {
            panic!()
        };
        assert_eq!((ban.bantime, ban.expires), (Some(60), Some(1060)));
        assert!(is_new(t.record(&r, &origin(), DAY, WINDOW, 1061)));
        assert_eq!(t.purge(1200), 1);
        assert!(t.is_empty());
    }

    #[test]
    fn bantime_defaults_and_permanent() {
        let mut t = BanTable::default();
        let Recorded::New(Entry { ban, .. }) =
            t.record(&report("203.0.113.7", ""), &origin(), DAY, WINDOW, 5)
        else {
            panic!()
        };
        assert_eq!(ban.expires, Some(5 + 86400));
        let Recorded::New(Entry { ban, .. }) =
            t.record(&report("203.0.113.8", "-1"), &origin(), DAY, WINDOW, 5)
        else {
            panic!()
        };
        assert_eq!((ban.bantime, ban.expires), (None, None));
        assert_eq!(t.purge(u64::MAX), 1);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn bans_share_their_names_until_none_uses_them() {
        let mut t = BanTable::default();
        for ip in ["203.0.113.7", "203.0.113.8"] {
            t.record(&report(ip, "60"), &origin(), DAY, WINDOW, 1000);
        }
        let jails: Vec<*const u8> = t.entries().map(|e| e.ban.jail.as_str().as_ptr()).collect();
        assert_eq!(jails[0], jails[1], "one copy of \"sshd\"");
        assert_eq!(t.names.len(), 3);
        t.purge(2000);
        assert!(t.names.is_empty());
    }
}
