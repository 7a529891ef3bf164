//! Deciding on each request, with no sockets and no disk: the allowances per key, the
//! networks that are never banned, the ceiling on active bans, de-duplication in the ban
//! table, the fleet policy (`policy`), and the counters that `banshare status` shows. The
//! loop journals, publishes and logs what this decides. Reports that wait before they ban
//! are decided in `waiting`.

mod waiting;

use waiting::stretches;
pub use waiting::Forwarded;

use std::net::IpAddr;
use std::time::Instant;

use crate::config::ServerConfig;
use crate::protect::{Protected, LOCAL_REFRESH};
use crate::server::limits::RateLimits;
use crate::server::policy::confirm::{Pending, Waiting, MAX_HELD};
use crate::server::policy::{aggregate, recidive};
use crate::server::table::{BanTable, Entry, Recorded};
use crate::wire::cidr::Cidr;
use crate::wire::control::Counters;
use crate::wire::keys::PublicKey;
use crate::wire::protocol::{Name, Report, PAGE};

/// Invalid requests a key may send at once, and a minute after that; further ones are
/// dropped unanswered.
const INVALID_BURST: u32 = 60;
const INVALID_RATE: u32 = 60;

pub struct Intake {
    /// Per key: reports, snapshot pages, and invalid requests.
    reports: RateLimits,
    snapshots: RateLimits,
    invalid: RateLimits,
    /// The built-in and configured networks and this host's own addresses, read again
    /// every LOCAL_REFRESH.
    protected: Protected,
    protected_at: Instant,
    pub counters: Counters,
}

/// One group's bans, and the reports waiting to become bans in it: what a decision reads
/// and changes.
#[derive(Default)]
pub struct Book {
    pub table: BanTable,
    /// Reports waiting for confirmation or for their key's allowance.
    pub pending: Pending,
    /// The active bans of the other groups, which `max-bans` counts too: it bounds the
    /// server's memory, whatever the groups.
    pub elsewhere: usize,
}

/// Who sent a report: its key's name here, and the key, which confirmation counts (None in
/// the unit tests, where names stand for keys).
#[derive(Debug, Clone, Copy)]
pub struct Sender<'a> {
    pub name: &'a str,
    pub key: Option<PublicKey>,
}

impl<'a> From<&'a str> for Sender<'a> {
    fn from(name: &'a str) -> Sender<'a> {
        Sender { name, key: None }
    }
}

/// What became of a report.
#[derive(Debug)]
pub enum Decision {
    /// Not banned: the reason, for the reporter.
    Refused(String),
    /// Nothing to publish. Holds the entry when the report came from a host not yet among
    /// its reporters: the audit trail is journaled with the batch.
    Duplicate(Option<Entry>, Policy),
    /// Journal and publish this ban.
    Accepted(Entry, Policy),
    /// Waiting, with the others for its network, whose reports are journaled; and why.
    Pending(Cidr, String, Policy),
}

impl Decision {
    /// Whether settling it journals what waits for `ip` (`Core::settle`).
    pub fn journals_waiting(&self, ip: &Cidr) -> bool {
        match self {
            Decision::Refused(_) => false,
            Decision::Duplicate(_, policy) | Decision::Accepted(_, policy) => {
                policy.waited.as_ref() == Some(ip)
            }
            Decision::Pending(network, ..) => network == ip,
        }
    }
}

/// What the fleet policy (`policy`) made of a report that was not refused.
#[derive(Debug, Default)]
pub struct Policy {
    /// Bans that the accepted one replaces: lift them once it is published.
    pub absorbed: Vec<Cidr>,
    /// What the policy did, for the audit line.
    pub notes: Vec<String>,
    /// The network whose waiting reports were taken into the ban: journal that they no
    /// longer wait.
    pub waited: Option<Cidr>,
}

impl Policy {
    fn noted(notes: Vec<String>) -> Policy {
        Policy {
            notes,
            ..Policy::default()
        }
    }

    /// The notes as the end of the audit line: "; NOTE; NOTE".
    pub fn suffix(&self) -> String {
        self.notes.iter().map(|n| format!("; {n}")).collect()
    }
}

impl Intake {
    pub fn new(config: &ServerConfig) -> Intake {
        Intake {
            reports: RateLimits::default(),
            snapshots: RateLimits::default(),
            invalid: RateLimits::default(),
            protected: Protected::for_this_host(&config.protected),
            protected_at: Instant::now(),
            counters: Counters::default(),
        }
    }

    /// Reads the protected networks again: those `config` names, and this host's own
    /// addresses, which change.
    pub fn protect(&mut self, config: &ServerConfig) {
        self.protected = Protected::for_this_host(&config.protected);
        self.protected_at = Instant::now();
    }

    /// Decides a well-formed report from the key `from` and records it in `table`, or
    /// among the reports waiting (`policy::confirm`). `fleet_host` says which fleet host,
    /// if any, a network would cut off.
    pub fn decide<'a>(
        &mut self,
        config: &ServerConfig,
        book: &mut Book,
        report: &Report,
        from: impl Into<Sender<'a>>,
        fleet_host: impl Fn(&Cidr) -> Option<(IpAddr, String)>,
        now: u64,
    ) -> Decision {
        let Sender { name: key, key: id } = from.into();
        let origin = Name::parse("origin", key)
            .unwrap_or_else(|_| Name::parse("origin", "unnamed").expect("valid name"));
        // First, so that every report counts against the key, refused or not.
        let (rate, burst) = (config.report_rate, config.report_burst);
        let within = self.reports.allow(key, rate, burst, Instant::now());
        if !within && book.pending.held_by(&origin) >= MAX_HELD {
            self.refused("rate-limit");
            return Decision::Refused(format!(
                "{key} sent more than {burst} reports at once or {rate} a minute, and has \
                 {MAX_HELD} held already"
            ));
        }
        if self.protected_at.elapsed() >= LOCAL_REFRESH {
            self.protect(config);
        }
        let target = aggregate::target(config, &book.table, report.ip, now, |net| {
            let refusal = self.never_banned(config, false, net, &fleet_host);
            refusal.map_err(|(_, why)| why)
        });
        if let Err((kind, reason)) =
            self.network_refusal(config, book, false, &target.ip, fleet_host)
        {
            self.refused(kind);
            return Decision::Refused(reason);
        }
        let notes: Vec<String> = target.note.into_iter().collect();
        let banned = book.table.active_ban(&target.ip, now);
        let bantime = report.bantime.seconds(config.default_bantime.0);
        if !within && banned.is_some() {
            // Beyond its allowance a key may still add its word to a ban, but not renew it.
            self.counters.duplicate += 1;
            let changed = book.table.note_reporter(&target.ip, &origin, now);
            return Decision::Duplicate(changed, Policy::noted(notes));
        }
        let waits = match banned {
            // Where K keys are needed to ban, a later end needs K keys too.
            Some(entry) => stretches(config, entry, now, bantime),
            None => !within || config.min_reporters > 1 || book.pending.get(&target.ip).is_some(),
        };
        if waits {
            let waiting = Waiting {
                name: origin,
                key: id,
                at: now,
                until: now.saturating_add(config.confirm_window.0.as_secs()),
                prog: report.prog.clone(),
                jail: report.jail.clone(),
                bantime,
                held: !within,
                forwarded: false,
                via: None,
            };
            return self.wait(config, book, target.ip, waiting, notes, now);
        }
        let bantime = aggregate::outlasting(report.bantime, config, &target.absorbed, now);
        let report = Report {
            ip: target.ip,
            bantime,
            ..report.clone()
        };
        let policy = Policy {
            absorbed: target.absorbed.iter().map(|e| e.ban.ip).collect(),
            notes,
            waited: None,
        };
        self.record(config, book, &report, &origin, policy, now)
    }

    /// A ban from `banshare import`, in the name of `origin`: the admin's word, so neither
    /// a key's allowance nor confirmation applies, but the network is checked as a
    /// report's is, and escalated like any ban. The error is the refusal's kind and reason.
    pub fn import(
        &mut self,
        config: &ServerConfig,
        book: &mut Book,
        report: &Report,
        origin: &Name,
        fleet_host: impl Fn(&Cidr) -> Option<(IpAddr, String)>,
        now: u64,
    ) -> Result<Decision, (&'static str, String)> {
        if let Err((kind, reason)) =
            self.network_refusal(config, book, true, &report.ip, fleet_host)
        {
            self.refused(kind);
            return Err((kind, reason));
        }
        Ok(self.record(config, book, report, origin, Policy::default(), now))
    }

    /// Records a report that may ban now: escalated, journaled and published if it is news.
    fn record(
        &mut self,
        config: &ServerConfig,
        book: &mut Book,
        report: &Report,
        origin: &Name,
        mut policy: Policy,
        now: u64,
    ) -> Decision {
        let (bantime, escalated) =
            recidive::escalate(config, &book.table, &report.ip, report.bantime, now);
        policy.notes.extend(escalated);
        let report = Report {
            bantime,
            ..report.clone()
        };
        let (default_bantime, window) = (config.default_bantime.0, config.dedup_window.0);
        let recorded = book
            .table
            .record(&report, origin, default_bantime, window, now);
        // The reports waiting for it are taken into the ban: those that confirmed it, or
        // that waited from before `min-reporters` was lowered; not, where K keys are
        // needed, those that ask for a later end still.
        let absorbed = self.absorb_waiting(config, book, &report.ip, now);
        if absorbed {
            policy.waited = Some(report.ip);
        }
        // The entry with the reporters it took in, to journal.
        let current = absorbed
            .then(|| book.table.active_ban(&report.ip, now).cloned())
            .flatten();
        match recorded {
            Recorded::Duplicate(changed) => {
                self.counters.duplicate += 1;
                Decision::Duplicate(current.or(changed), policy)
            }
            Recorded::New(entry) => {
                self.counters.accepted += 1;
                Decision::Accepted(current.unwrap_or(entry), policy)
            }
        }
    }

    /// Why the server will not ban `ip` whoever asks, a host or a peer: too wide, protected,
    /// a fleet host's, or one ban too many. `list` for a blocklist's ban (`blocklist::is_list`).
    pub fn network_refusal(
        &mut self,
        config: &ServerConfig,
        book: &Book,
        list: bool,
        ip: &Cidr,
        fleet_host: impl Fn(&Cidr) -> Option<(IpAddr, String)>,
    ) -> Result<(), (&'static str, String)> {
        if self.protected_at.elapsed() >= LOCAL_REFRESH {
            self.protect(config);
        }
        self.never_banned(config, list, ip, fleet_host)?;
        let max = config.max_bans;
        let table = &book.table;
        if table.len() + book.elsewhere >= max && !table.contains(ip) {
            return Err((
                "max-bans",
                format!("the server holds {max} active bans, its max-bans"),
            ));
        }
        Ok(())
    }

    /// Why `ip` must never be banned, however full the table: wider than `min-prefix` (for a
    /// blocklist's ban, `import-min-prefix`), protected (for a blocklist's, private space
    /// too), or a fleet host's. A reload that adds a protected network lifts the bans this
    /// now refuses.
    pub fn never_banned(
        &self,
        config: &ServerConfig,
        list: bool,
        ip: &Cidr,
        fleet_host: impl Fn(&Cidr) -> Option<(IpAddr, String)>,
    ) -> Result<(), (&'static str, String)> {
        let (min, protected) = if list {
            (&config.import_min_prefix, self.protected.check_list(ip))
        } else {
            (&config.min_prefix, self.protected.check(ip))
        };
        min.check(ip).map_err(|r| ("min-prefix", r.to_string()))?;
        protected.map_err(|r| ("protected", r.to_string()))?;
        match fleet_host(ip) {
            Some((addr, name)) => Err((
                "fleet-host",
                format!("{ip} covers fleet host {name}'s address {addr}"),
            )),
            None => Ok(()),
        }
    }

    fn refused(&mut self, kind: &str) {
        *self.counters.refused.entry(kind.to_owned()).or_default() += 1;
    }

    /// Whether `name` may have another snapshot page of a table of `bans`: enough for two
    /// whole snapshots at once and two a minute after that, so that one key cannot keep
    /// the server paging, nor pile up pages it leaves unread. Refusals are counted.
    pub fn allow_snapshot(&mut self, name: &str, bans: usize) -> bool {
        let pages = u32::try_from(bans / PAGE + 1).unwrap_or(u32::MAX);
        let allowance = pages.saturating_mul(2).saturating_add(10);
        let allowed = self
            .snapshots
            .allow(name, allowance, allowance, Instant::now());
        if !allowed {
            self.refused("snapshot-limit");
        }
        allowed
    }

    /// Whether an invalid request from `name` is answered (and counted as invalid), or
    /// dropped (and counted as unanswered), past the key's allowance.
    pub fn answer_invalid(&mut self, name: &str) -> bool {
        let answered = self
            .invalid
            .allow(name, INVALID_RATE, INVALID_BURST, Instant::now());
        if answered {
            self.counters.invalid += 1;
        } else {
            self.counters.unanswered += 1;
        }
        answered
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::protocol::Bantime;

    fn config(extra: &str) -> ServerConfig {
        toml::from_str(&format!("report-port = 1\npublish-port = 2\n{extra}")).unwrap()
    }

    fn report(ip: &str, bantime: Bantime) -> Report {
        Report {
            ip: ip.parse().unwrap(),
            prog: Name::parse("prog", "fail2ban").unwrap(),
            jail: Name::parse("jail", "sshd").unwrap(),
            bantime,
        }
    }

    fn nobody(_: &Cidr) -> Option<(IpAddr, String)> {
        None
    }

    #[test]
    fn a_new_ban_is_accepted_and_the_same_one_again_is_a_duplicate() {
        let config = config("");
        let (mut book, mut intake) = (Book::default(), Intake::new(&config));
        let r = report("203.0.113.7", Bantime::Seconds(600));
        let first = intake.decide(&config, &mut book, &r, "web1", nobody, 1000);
        assert!(matches!(first, Decision::Accepted(..)), "{first:?}");
        let again = intake.decide(&config, &mut book, &r, "web1", nobody, 1000);
        assert!(matches!(again, Decision::Duplicate(None, _)), "{again:?}");
        // Another host's word joins the audit trail.
        let other = intake.decide(&config, &mut book, &r, "web2", nobody, 1002);
        assert!(
            matches!(other, Decision::Duplicate(Some(_), _)),
            "{other:?}"
        );
        assert_eq!(
            (intake.counters.accepted, intake.counters.duplicate),
            (1, 2)
        );
    }

    #[test]
    fn each_refusal_has_its_kind_counted() {
        let config = config("max-bans = 1\nprotected = [\"198.51.100.0/24\"]");
        let (mut book, mut intake) = (Book::default(), Intake::new(&config));
        let mut decide = |ip: &str, fleet: Option<&str>| {
            let fleet_host = |_: &Cidr| fleet.map(|n| ("192.0.2.1".parse().unwrap(), n.into()));
            let r = report(ip, Bantime::Default);
            intake.decide(&config, &mut book, &r, "web1", fleet_host, 1000)
        };
        let refused = |d: Decision| match d {
            Decision::Refused(reason) => reason,
            other => panic!("{other:?}"),
        };
        assert!(refused(decide("10.0.0.0/8", None)).contains("wider than"));
        assert!(refused(decide("198.51.100.4", None)).contains("198.51.100.0/24"));
        assert!(refused(decide("192.0.2.1", Some("db1"))).contains("fleet host db1"));
        assert!(matches!(
            decide("203.0.113.1", None),
            Decision::Accepted(..)
        ));
        assert!(refused(decide("203.0.113.2", None)).contains("max-bans"));
        // A duplicate of a ban the server holds is not refused at the ceiling.
        assert!(matches!(
            decide("203.0.113.1", None),
            Decision::Duplicate(..)
        ));
        let counted: Vec<(&str, u64)> = intake
            .counters
            .refused
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect();
        assert_eq!(
            counted,
            [
                ("fleet-host", 1),
                ("max-bans", 1),
                ("min-prefix", 1),
                ("protected", 1)
            ]
        );
    }

    #[test]
    fn every_report_counts_against_the_key_and_beyond_it_reports_are_held() {
        let config = config("report-burst = 3\nreport-rate = 1");
        let (mut book, mut intake) = (Book::default(), Intake::new(&config));
        for ip in ["10.0.0.0/8", "203.0.113.1", "203.0.113.1"] {
            let r = report(ip, Bantime::Default);
            intake.decide(&config, &mut book, &r, "web1", nobody, 1000);
        }
        let r = report("203.0.113.2", Bantime::Default);
        let held = intake.decide(&config, &mut book, &r, "web1", nobody, 1000);
        assert!(
            matches!(&held, Decision::Pending(_, reason, _) if reason.contains("held")),
            "{held:?}"
        );
        // Beyond its allowance, a key adds its word to a ban, but does not renew it.
        let r1 = report("203.0.113.1", Bantime::Permanent);
        let noted = intake.decide(&config, &mut book, &r1, "web1", nobody, 1000);
        assert!(matches!(noted, Decision::Duplicate(..)), "{noted:?}");
        // Another key has an allowance of its own, and its report bans what was held.
        let other = intake.decide(&config, &mut book, &r, "web2", nobody, 1000);
        assert!(
            matches!(&other, Decision::Accepted(e, p) if p.waited.is_some() && e.reporters.iter().count() == 2),
            "{other:?}"
        );
        assert_eq!(book.pending.held_by(&Name::parse("n", "web1").unwrap()), 0);
        // A key holds at most MAX_HELD; beyond, its reports are refused.
        for i in 0..MAX_HELD {
            let ip = format!("2001:db8::{:x}", i + 1);
            let r = report(&ip, Bantime::Default);
            intake.decide(&config, &mut book, &r, "web1", nobody, 1000);
        }
        let r = report("203.0.113.3", Bantime::Default);
        let refused = intake.decide(&config, &mut book, &r, "web1", nobody, 1000);
        assert!(
            matches!(&refused, Decision::Refused(reason) if reason.contains("held already")),
            "{refused:?}"
        );
        assert_eq!(intake.counters.refused["rate-limit"], 1);
    }

    #[test]
    fn held_reports_are_released_as_the_allowance_refills_oldest_first() {
        let config = config("report-burst = 1\nreport-rate = 60");
        let (mut book, mut intake) = (Book::default(), Intake::new(&config));
        for ip in ["203.0.113.1", "203.0.113.2", "203.0.113.3"] {
            let r = report(ip, Bantime::Default);
            intake.decide(&config, &mut book, &r, "web1", nobody, 1000);
        }
        assert!(intake
            .release_held(&config, &mut book, nobody, 1000)
            .is_empty());
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let released = intake.release_held(&config, &mut book, nobody, 1001);
        let ips: Vec<String> = released.iter().map(|(ip, _)| ip.to_string()).collect();
        assert_eq!(ips, ["203.0.113.2"]);
        assert!(matches!(released[0].1, Decision::Accepted(..)));
    }

    #[test]
    fn a_peer_forwards_no_more_than_its_share() {
        use crate::server::policy::confirm::{PendingSet, Waiting, MAX_FORWARDED};
        let config = config("min-reporters = 2");
        let (mut book, mut intake) = (Book::default(), Intake::new(&config));
        let key = PublicKey([7; 32]);
        let forwarded = |i: u32| {
            let ip = std::net::Ipv6Addr::from((0x2001_0db8u128 << 96) | u128::from(i));
            let waiting = Waiting {
                name: Name::parse("n", "web1").unwrap(),
                key: Some(key),
                at: 1000,
                until: 4600,
                prog: Name::parse("p", "fail2ban").unwrap(),
                jail: Name::parse("j", "sshd").unwrap(),
                bantime: Some(600),
                held: false,
                forwarded: false,
                via: None,
            };
            Forwarded {
                set: PendingSet {
                    ip: ip.to_string().parse().unwrap(),
                    reports: vec![waiting],
                },
                via: "bs2",
                name_for: &|_| Some("web1".into()),
                key_named: &|_| None,
            }
        };
        for i in 0..MAX_FORWARDED as u32 {
            let taken = intake.take_forwarded(&config, &mut book, forwarded(i), nobody, 1000);
            assert!(matches!(taken, Decision::Pending(..)), "{taken:?}");
        }
        let over = intake.take_forwarded(&config, &mut book, forwarded(u32::MAX), nobody, 1000);
        assert!(
            matches!(&over, Decision::Refused(r) if r.contains("100000 forwarded reports")),
            "{over:?}"
        );
        assert_eq!(intake.counters.refused["forward"], 1);
    }

    #[test]
    fn with_min_reporters_two_keys_must_report_within_the_window() {
        let config = config("min-reporters = 2\nconfirm-window = \"100s\"");
        let (mut book, mut intake) = (Book::default(), Intake::new(&config));
        let r = report("203.0.113.7", Bantime::Seconds(600));
        let first = intake.decide(&config, &mut book, &r, "web1", nobody, 1000);
        assert!(
            matches!(&first, Decision::Pending(_, reason, _) if reason.contains("1 of 2")),
            "{first:?}"
        );
        let again = intake.decide(&config, &mut book, &r, "web1", nobody, 1010);
        assert!(matches!(again, Decision::Pending(..)), "{again:?}");
        // web1's report has expired when web2's comes: it starts counting again.
        let late = intake.decide(&config, &mut book, &r, "web2", nobody, 1111);
        assert!(matches!(late, Decision::Pending(..)), "{late:?}");
        let r = report("203.0.113.7", Bantime::Permanent);
        let second = intake.decide(&config, &mut book, &r, "db1", nobody, 1120);
        let Decision::Accepted(entry, policy) = second else {
            panic!("{second:?}");
        };
        // The second longest bantime asked for: no single key decides.
        assert_eq!(entry.ban.bantime, Some(600));
        assert!(policy.notes.iter().any(|n| n == "confirmed by web2, db1"));
        // db1 asked for longer: that waits for a second key, as a ban would.
        let waiting = book.pending.get(&r.ip).unwrap();
        assert_eq!(waiting.reports.len(), 1);
        assert_eq!(waiting.reports[0].name.as_str(), "db1");
        assert!(book
            .table
            .active_ban(&r.ip, 1120)
            .unwrap()
            .reporters
            .includes("web2"));
    }

    #[test]
    fn where_two_keys_ban_one_key_cannot_stretch_the_ban() {
        let config = config("min-reporters = 2");
        let (mut book, mut intake) = (Book::default(), Intake::new(&config));
        let minute = report("203.0.113.7", Bantime::Seconds(60));
        intake.decide(&config, &mut book, &minute, "web1", nobody, 1000);
        let banned = intake.decide(&config, &mut book, &minute, "web2", nobody, 1001);
        assert!(matches!(banned, Decision::Accepted(..)), "{banned:?}");
        // web1 alone asks for a permanent ban, and for a renewal after the window: both
        // wait, and the ban stays as two keys made it.
        let forever = report("203.0.113.7", Bantime::Permanent);
        for (r, at) in [(&minute, 1050), (&forever, 1052)] {
            let alone = intake.decide(&config, &mut book, r, "web1", nobody, at);
            assert!(
                matches!(&alone, Decision::Pending(_, reason, _) if reason.contains("later end")),
                "{alone:?}"
            );
        }
        assert_eq!(
            book.table.active_ban(&minute.ip, 1050).unwrap().ban.expires,
            Some(1061)
        );
        // A report that asks for no later end is a duplicate, and leaves the request waiting.
        let short = report("203.0.113.7", Bantime::Seconds(10));
        let dup = intake.decide(&config, &mut book, &short, "db1", nobody, 1040);
        assert!(matches!(dup, Decision::Duplicate(..)), "{dup:?}");
        assert!(book.pending.get(&minute.ip).is_some());
        // A second key asks for it too: now it is permanent.
        let second = intake.decide(&config, &mut book, &forever, "web2", nobody, 1055);
        let Decision::Accepted(entry, _) = second else {
            panic!("{second:?}");
        };
        assert_eq!((entry.ban.bantime, entry.ban.expires), (None, None));
        assert!(book.pending.is_empty());
    }

    #[test]
    fn snapshot_pages_and_invalid_requests_have_allowances_of_their_own() {
        let mut intake = Intake::new(&config(""));
        // An empty table is one page: 12 pages at once.
        assert_eq!(
            (0..20).filter(|_| intake.allow_snapshot("web1", 0)).count(),
            12
        );
        assert!(intake.allow_snapshot("web2", 0));
        assert_eq!(intake.counters.refused["snapshot-limit"], 8);
        let answered = (0..70).filter(|_| intake.answer_invalid("web1")).count();
        assert_eq!(answered, 60);
        assert_eq!(
            (intake.counters.invalid, intake.counters.unanswered),
            (60, 10)
        );
    }
}
