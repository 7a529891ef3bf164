//! Reports that wait before they ban (README "Policies"):
//! - **Confirmation.** With `min-reporters = K`, a network is banned only once K different
//!   keys reported it within `confirm-window`: one misconfigured or stolen key bans nothing
//!   alone. Until then its reports wait here, and are answered PENDING.
//! - **Held reports.** A report beyond its key's allowance is held here rather than refused
//!   and lost, at most MAX_HELD per key. It counts towards confirmation like any other, and
//!   is released at the key's own rate as its allowance refills (`Intake::release_held`):
//!   a botnet wave from one host is banned in full, only no faster than that host's
//!   allowance, so a flooding key still moves the fleet no more than before.
//!
//! A waiting report expires with `confirm-window`. The waiting reports are journaled in
//! `pending.journal` and survive a restart.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use crate::logging::printable;
use crate::store::Record;
use crate::wire::cidr::Cidr;
use crate::wire::protocol::{number, Bantime, Name, MAX_BANTIME};

/// The most reports one key may have held at once; beyond, they are refused as before.
pub const MAX_HELD: usize = 10_000;

/// One report waiting: who sent it, when, until when it counts, and what it asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    pub name: Name,
    pub at: u64,
    pub until: u64,
    pub prog: Name,
    pub jail: Name,
    /// Seconds, or None for permanent.
    pub bantime: Option<u64>,
    /// Sent beyond the key's allowance: released as it refills.
    pub held: bool,
    /// Forwarded by the peer server that took it (docs/ha.md): it counts here, but only
    /// that server releases it or forwards it further.
    pub forwarded: bool,
}

impl Waiting {
    pub fn bantime(&self) -> Bantime {
        self.bantime.map_or(Bantime::Permanent, Bantime::Seconds)
    }
}

/// The reports waiting for one network, one per key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingSet {
    pub ip: Cidr,
    pub reports: Vec<Waiting>,
}

impl PendingSet {
    /// The report that sets the ban's bantime once K keys confirmed it: the K-th longest,
    /// so that no single key decides how long the fleet bans.
    pub fn deciding(&self, k: usize) -> &Waiting {
        let mut reports: Vec<&Waiting> = self.reports.iter().collect();
        reports.sort_by_key(|w| std::cmp::Reverse(w.bantime.unwrap_or(u64::MAX)));
        reports[k.clamp(1, reports.len()) - 1]
    }

    /// The reports taken here, each as the line of `pending.journal` that forwards it to
    /// the peers.
    pub fn forward_lines(&self) -> Vec<String> {
        let own = self.reports.iter().filter(|w| !w.forwarded);
        own.map(|w| {
            let one = PendingSet {
                ip: self.ip,
                reports: vec![w.clone()],
            };
            one.encode()
        })
        .collect()
    }

    /// Whether K keys confirmed it. A held report alone never bans: it waits for its
    /// allowance, or for a second key.
    pub fn confirmed(&self, k: usize) -> bool {
        let keys = self.reports.len();
        keys >= k && (keys >= 2 || self.reports.iter().any(|w| !w.held))
    }
}

/// In `pending.journal`: `IP NAME/AT/UNTIL/PROG/JAIL/BANTIME/KIND,...`, with BANTIME `-1`
/// for permanent and KIND `waiting` or `held`, or `forwarded` or `forwarded-held` for a
/// report a peer took. A FORWARD request between servers carries one such line.
impl Record for PendingSet {
    fn network(&self) -> Cidr {
        self.ip
    }

    fn active_at(&self, now: u64) -> bool {
        self.reports.iter().any(|w| w.until > now)
    }

    fn reported(&self) -> u64 {
        self.reports.iter().map(|w| w.at).max().unwrap_or(0)
    }

    fn encode(&self) -> String {
        let reports: Vec<String> = self
            .reports
            .iter()
            .map(|w| {
                let bantime = w.bantime.map_or("-1".into(), |b| b.to_string());
                let kind = match (w.forwarded, w.held) {
                    (false, false) => "waiting",
                    (false, true) => "held",
                    (true, false) => "forwarded",
                    (true, true) => "forwarded-held",
                };
                let Waiting {
                    name,
                    at,
                    until,
                    prog,
                    jail,
                    ..
                } = w;
                format!("{name}/{at}/{until}/{prog}/{jail}/{bantime}/{kind}")
            })
            .collect();
        format!("{} {}", self.ip, reports.join(","))
    }

    fn decode(fields: &[&str]) -> Result<PendingSet, String> {
        let [ip, reports] = fields else {
            return Err("unknown record".into());
        };
        let reports = reports
            .split(',')
            .map(parse_waiting)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(PendingSet {
            ip: ip.parse()?,
            reports,
        })
    }
}

fn parse_waiting(text: &str) -> Result<Waiting, String> {
    let [name, at, until, prog, jail, bantime, kind] = text.split('/').collect::<Vec<_>>()[..]
    else {
        return Err(format!("bad waiting report {:?}", printable(text)));
    };
    let bantime = match bantime {
        "-1" => None,
        b => match number("bantime", b)? {
            n @ 1..=MAX_BANTIME => Some(n),
            n => return Err(format!("bantime {n} out of range")),
        },
    };
    let (forwarded, held) = match kind {
        "waiting" => (false, false),
        "held" => (false, true),
        "forwarded" => (true, false),
        "forwarded-held" => (true, true),
        other => return Err(format!("bad kind {:?}", printable(other))),
    };
    Ok(Waiting {
        name: Name::parse("reporter", name)?,
        at: number("at", at)?,
        until: number("until", until)?,
        prog: Name::parse("prog", prog)?,
        jail: Name::parse("jail", jail)?,
        bantime,
        held,
        forwarded,
    })
}

/// Every waiting report, by network, and what each key has held.
#[derive(Debug, Default)]
pub struct Pending {
    sets: BTreeMap<Cidr, PendingSet>,
    held: HashMap<Name, Held>,
}

/// The reports one key has held: how many, and their networks oldest first, to release
/// without a search of every set. The queue may name networks whose report was taken since;
/// those are skipped, and cleared out when they outnumber the rest.
#[derive(Debug, Default)]
struct Held {
    count: usize,
    order: VecDeque<Cidr>,
}

impl Pending {
    pub fn from_sets(sets: Vec<PendingSet>) -> Pending {
        let mut pending = Pending::default();
        let mut held: Vec<(u64, Cidr, Name)> = sets
            .iter()
            .flat_map(|set| set.reports.iter().map(move |w| (set.ip, w)))
            .filter(|(_, w)| counts_as_held(w))
            .map(|(ip, w)| (w.at, ip, w.name.clone()))
            .collect();
        held.sort_by_key(|(at, ip, _)| (*at, *ip));
        pending.sets = sets.into_iter().map(|set| (set.ip, set)).collect();
        for (_, ip, name) in held {
            pending.hold(&name, ip);
        }
        pending
    }

    /// Adds a report, taken at `now`, which replaces one from the same key: a key counts
    /// once. A report within the allowance is not held, nor is a later one from a key whose
    /// earlier one was not; a forwarded report replaces only a forwarded one. Reports of
    /// the network past their window no longer count.
    pub fn add(&mut self, ip: Cidr, mut waiting: Waiting, now: u64) -> &PendingSet {
        let set = self.sets.entry(ip).or_insert_with(|| PendingSet {
            ip,
            reports: Vec::new(),
        });
        let (gone, kept) = set.reports.drain(..).partition(|w| w.until <= now);
        set.reports = kept;
        let mut removed: Vec<Waiting> = gone;
        if let Some(i) = set.reports.iter().position(|w| w.name == waiting.name) {
            let old = &set.reports[i];
            if waiting.forwarded && !old.forwarded {
                return &self.sets[&ip];
            }
            if !waiting.forwarded {
                waiting.held &= old.held || old.forwarded;
            }
            removed.push(set.reports.remove(i));
        }
        let holds = counts_as_held(&waiting).then(|| waiting.name.clone());
        set.reports.push(waiting);
        self.unhold(&removed);
        if let Some(name) = holds {
            self.hold(&name, ip);
        }
        &self.sets[&ip]
    }

    pub fn get(&self, ip: &Cidr) -> Option<&PendingSet> {
        self.sets.get(ip)
    }

    /// Removes the reports waiting for `ip`, which a ban now covers.
    pub fn take(&mut self, ip: &Cidr) -> Option<PendingSet> {
        let set = self.sets.remove(ip)?;
        self.unhold(&set.reports);
        Some(set)
    }

    /// Drops every report of the key `name`; returns the networks it waited for.
    pub fn drop_reports_of(&mut self, name: &str) -> Vec<Cidr> {
        let mut dropped = Vec::new();
        let mut gone = Vec::new();
        for set in self.sets.values_mut() {
            let (theirs, kept) = set.reports.drain(..).partition(|w| w.name.as_str() == name);
            set.reports = kept;
            if !theirs.is_empty() {
                dropped.push(set.ip);
            }
            gone.extend::<Vec<Waiting>>(theirs);
        }
        self.sets.retain(|_, set| !set.reports.is_empty());
        self.unhold(&gone);
        dropped
    }

    pub fn held_by(&self, name: &Name) -> usize {
        self.held.get(name).map_or(0, |h| h.count)
    }

    /// The keys that have reports held.
    pub fn holders(&self) -> Vec<Name> {
        let holding = self.held.iter().filter(|(_, h)| h.count > 0);
        holding.map(|(name, _)| name.clone()).collect()
    }

    /// The oldest report `name` has held, which its refilled allowance now lets through:
    /// no longer held.
    pub fn release_oldest(&mut self, name: &Name) -> Option<&PendingSet> {
        let Pending { sets, held } = self;
        let held = held.get_mut(name)?;
        while let Some(ip) = held.order.pop_front() {
            let Some(set) = sets.get_mut(&ip) else {
                continue;
            };
            let mine = |w: &&mut Waiting| counts_as_held(w) && &w.name == name;
            let Some(waiting) = set.reports.iter_mut().find(mine) else {
                continue;
            };
            waiting.held = false;
            held.count -= 1;
            return Some(&sets[&ip]);
        }
        None
    }

    /// Forgets reports past `confirm-window`; returns those it dropped, by network.
    pub fn purge(&mut self, now: u64) -> Vec<(Cidr, Waiting)> {
        let mut expired = Vec::new();
        for set in self.sets.values_mut() {
            let (gone, kept) = set.reports.drain(..).partition(|w| w.until <= now);
            set.reports = kept;
            expired.extend(gone.into_iter().map(|w: Waiting| (set.ip, w)));
        }
        self.sets.retain(|_, set| !set.reports.is_empty());
        let gone: Vec<Waiting> = expired.iter().map(|(_, w)| w.clone()).collect();
        self.unhold(&gone);
        expired
    }

    pub fn sets(&self) -> impl Iterator<Item = &PendingSet> {
        self.sets.values()
    }

    pub fn len(&self) -> usize {
        self.sets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }

    fn hold(&mut self, name: &Name, ip: Cidr) {
        let held = self.held.entry(name.clone()).or_default();
        held.count += 1;
        held.order.push_back(ip);
        if held.order.len() > 2 * held.count + 64 {
            let sets = &self.sets;
            let mut seen = HashSet::new();
            held.order.retain(|ip| {
                let holds = |s: &PendingSet| {
                    s.reports
                        .iter()
                        .any(|w| counts_as_held(w) && &w.name == name)
                };
                sets.get(ip).is_some_and(holds) && seen.insert(*ip)
            });
        }
    }

    /// Reports that are no longer held: they count no more against their keys.
    fn unhold(&mut self, reports: &[Waiting]) {
        for w in reports.iter().filter(|w| counts_as_held(w)) {
            if let Some(held) = self.held.get_mut(&w.name) {
                held.count = held.count.saturating_sub(1);
            }
        }
    }
}

/// Whether a report is held here, against its key's allowance on this server: one a peer
/// holds is that peer's to release.
fn counts_as_held(w: &Waiting) -> bool {
    w.held && !w.forwarded
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: &str) -> Name {
        Name::parse("name", n).unwrap()
    }

    fn waiting(who: &str, at: u64, bantime: Option<u64>, held: bool) -> Waiting {
        Waiting {
            name: name(who),
            at,
            until: at + 3600,
            prog: name("fail2ban"),
            jail: name("sshd"),
            bantime,
            held,
            forwarded: false,
        }
    }

    fn ip(text: &str) -> Cidr {
        text.parse().unwrap()
    }

    #[test]
    fn k_keys_confirm_and_the_kth_longest_bantime_decides() {
        let mut pending = Pending::default();
        let x = ip("203.0.113.7");
        assert!(!pending
            .add(x, waiting("web1", 10, None, false), 10)
            .confirmed(2));
        // The same key again counts once.
        assert!(!pending
            .add(x, waiting("web1", 20, None, false), 20)
            .confirmed(2));
        let set = pending.add(x, waiting("web2", 30, Some(600), false), 30);
        assert!(set.confirmed(2));
        assert_eq!(set.deciding(2).bantime, Some(600));
        assert_eq!(set.deciding(1).bantime, None);
    }

    #[test]
    fn a_held_report_alone_waits_for_its_allowance_or_a_second_key() {
        let mut pending = Pending::default();
        let x = ip("203.0.113.7");
        assert!(!pending
            .add(x, waiting("web1", 10, Some(60), true), 10)
            .confirmed(1));
        assert_eq!(pending.held_by(&name("web1")), 1);
        assert!(pending
            .add(x, waiting("web2", 11, Some(60), true), 11)
            .confirmed(1));
        let y = ip("203.0.113.8");
        pending.add(y, waiting("web1", 12, Some(60), true), 12);
        assert_eq!(pending.holders().len(), 2);
        // The oldest goes first, and is then an ordinary report.
        let released = pending.release_oldest(&name("web1")).unwrap();
        assert_eq!(released.ip, x);
        assert!(released.confirmed(1));
        assert_eq!(pending.held_by(&name("web1")), 1);
        pending.take(&y);
        assert_eq!(pending.held_by(&name("web1")), 0);
        pending.take(&x);
        assert_eq!(pending.held_by(&name("web2")), 0);
    }

    #[test]
    fn held_reports_go_oldest_first_after_a_restart_and_taken_ones_are_skipped() {
        let mut pending = Pending::default();
        for (i, at) in [30, 10, 20].iter().enumerate() {
            let ip = ip(&format!("203.0.113.{}", i + 1));
            pending.add(ip, waiting("web1", *at, Some(60), true), *at);
        }
        let mut pending = Pending::from_sets(pending.sets().cloned().collect());
        let first = pending.release_oldest(&name("web1")).unwrap().ip;
        assert_eq!(first, ip("203.0.113.2"));
        pending.take(&ip("203.0.113.3"));
        let next = pending.release_oldest(&name("web1")).unwrap().ip;
        assert_eq!(next, ip("203.0.113.1"));
        assert!(pending.release_oldest(&name("web1")).is_none());
        assert_eq!(pending.held_by(&name("web1")), 0);
    }

    #[test]
    fn a_forwarded_report_counts_but_is_neither_released_here_nor_forwarded_again() {
        let mut pending = Pending::default();
        let x = ip("203.0.113.7");
        let forwarded = Waiting {
            forwarded: true,
            ..waiting("web1", 10, Some(60), true)
        };
        let set = pending.add(x, forwarded.clone(), 10);
        assert!(!set.confirmed(1) && set.forward_lines().is_empty());
        assert_eq!(pending.held_by(&name("web1")), 0);
        assert!(pending.release_oldest(&name("web1")).is_none());
        // web1's own report here replaces it; a forwarded copy does not replace that.
        let own = pending.add(x, waiting("web1", 20, Some(60), false), 20);
        assert!(own.confirmed(1) && !own.reports[0].forwarded);
        assert_eq!(
            own.forward_lines(),
            ["203.0.113.7 web1/20/3620/fail2ban/sshd/60/waiting"]
        );
        let kept = pending.add(x, forwarded, 30);
        assert!(!kept.reports[0].forwarded);
    }

    #[test]
    fn waiting_reports_expire_and_round_trip_through_the_journal() {
        let mut pending = Pending::default();
        let x = ip("2001:db8::/64");
        pending.add(x, waiting("web1", 10, None, true), 10);
        pending.add(x, waiting("web2", 3000, Some(600), false), 3000);
        let line = pending.get(&x).unwrap().encode();
        assert_eq!(
            line,
            "2001:db8::/64 web1/10/3610/fail2ban/sshd/-1/held,web2/3000/6600/fail2ban/sshd/600/waiting"
        );
        let fields: Vec<&str> = line.split(' ').collect();
        let back = PendingSet::decode(&fields).unwrap();
        assert_eq!(&back, pending.get(&x).unwrap());
        let expired = pending.purge(4000);
        assert_eq!(expired.len(), 1);
        assert_eq!(pending.held_by(&name("web1")), 0);
        assert!(pending.purge(9000).len() == 1 && pending.is_empty());
        for bad in [
            "x web1/1/2/p/j/60/held",
            "203.0.113.7 web1/1/2/p/j/0/held",
            "203.0.113.7 -x/1/2/p/j/60/held",
        ] {
            let fields: Vec<&str> = bad.split(' ').collect();
            assert!(PendingSet::decode(&fields).is_err(), "{bad}");
        }
    }
}
