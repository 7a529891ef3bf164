//! Reports that wait before they ban (README "Policies"):
//! - **Confirmation.** With `min-reporters = K`, a network is banned only once K different
//!   keys reported it within `confirm-window`: one misconfigured or stolen key bans nothing
//!   alone. Until then its reports wait here, and are answered PENDING. Keys count, not
//!   their names: one key filed under two names (on two servers) counts once. So does a
//!   longer end for a network already banned: it waits for K keys too.
//! - **Held reports.** A report beyond its key's allowance is held here rather than refused
//!   and lost, at most MAX_HELD per key. It counts towards confirmation like any other, and
//!   is released at the key's own rate as its allowance refills (`Intake::release_held`):
//!   a botnet wave from one host is banned in full, only no faster than that host's
//!   allowance, so a flooding key still moves the fleet no more than before.
//!
//! A waiting report expires with `confirm-window`. The waiting reports are journaled in
//! `pending.journal` and survive a restart.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use crate::store::{Record, RecordError};
use crate::wire::cidr::Cidr;
use crate::wire::keys::PublicKey;
use crate::wire::protocol::{number, Bantime, Name, MAX_BANTIME};

/// The most reports one key may have held at once; beyond, they are refused as before.
pub const MAX_HELD: usize = 10_000;

/// The most reports one peer server may have forwarded here that wait at once: as many as
/// it keeps for us when we are away (`server::forward`). Beyond, its FORWARDs are refused.
pub const MAX_FORWARDED: usize = 100_000;

/// One report waiting: who sent it, when, until when it counts, and what it asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    /// The reporting key's name here.
    pub name: Name,
    /// The reporting key, which confirmation counts; None only as read from a journal or a
    /// FORWARD of a version before keys were kept, until it is looked up by name.
    pub key: Option<PublicKey>,
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
    /// The peer server that forwarded it: it waits only as long as that server is a peer,
    /// and counts against that peer's share (MAX_FORWARDED).
    pub via: Option<Name>,
}

impl Waiting {
    pub fn bantime(&self) -> Bantime {
        self.bantime.map_or(Bantime::Permanent, Bantime::Seconds)
    }

    /// Whether both come from the same key: a key counts once, whatever it is called.
    fn same_key(&self, other: &Waiting) -> bool {
        match (self.key, other.key) {
            (Some(a), Some(b)) => a == b,
            _ => self.name == other.name,
        }
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

/// In `pending.journal`: `IP NAME/AT/UNTIL/PROG/JAIL/BANTIME/KIND/KEY[/VIA],...`, with
/// BANTIME `-1` for permanent, KIND `waiting` or `held`, or `forwarded` or `forwarded-held`
/// for a report a peer took, KEY the reporting key in hex, and VIA the peer that forwarded
/// it. Lines from before keys were kept end at KIND. A FORWARD request between servers
/// carries one such line, without VIA.
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
                let mut text = format!("{name}/{at}/{until}/{prog}/{jail}/{bantime}/{kind}");
                if let Some(key) = w.key {
                    text += &format!("/{}", key.hex());
                    if let Some(via) = &w.via {
                        text += &format!("/{via}");
                    }
                }
                text
            })
            .collect();
        format!("{} {}", self.ip, reports.join(","))
    }

    fn decode(fields: &[&str]) -> Result<PendingSet, RecordError> {
        let [ip, reports] = fields else {
            return Err(RecordError::Unknown);
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

fn parse_waiting(text: &str) -> Result<Waiting, RecordError> {
    let fields: Vec<&str> = text.split('/').collect();
    let (&[name, at, until, prog, jail, bantime, kind], rest) =
        fields.split_at(fields.len().min(7))
    else {
        return Err(RecordError::bad("waiting report", text));
    };
    let (key, via) = match rest {
        [] => (None, None),
        [key] => (Some(key), None),
        [key, via] => (Some(key), Some(Name::parse("via", via)?)),
        _ => return Err(RecordError::bad("waiting report", text)),
    };
    let key = key
        .map(|k| PublicKey::from_hex(k).ok_or_else(|| RecordError::bad("key", k)))
        .transpose()?;
    let bantime = match bantime {
        "-1" => None,
        b => match number("bantime", b)? {
            n @ 1..=MAX_BANTIME => Some(n),
            n => return Err(RecordError::BantimeRange(n)),
        },
    };
    let (forwarded, held) = match kind {
        "waiting" => (false, false),
        "held" => (false, true),
        "forwarded" => (true, false),
        "forwarded-held" => (true, true),
        other => return Err(RecordError::bad("kind", other)),
    };
    Ok(Waiting {
        name: Name::parse("reporter", name)?,
        key,
        at: number("at", at)?,
        until: number("until", until)?,
        prog: Name::parse("prog", prog)?,
        jail: Name::parse("jail", jail)?,
        bantime,
        held,
        forwarded,
        via,
    })
}

/// Every waiting report, by network, and what each key has held.
#[derive(Debug, Default)]
pub struct Pending {
    sets: BTreeMap<Cidr, PendingSet>,
    held: HashMap<Name, Held>,
    /// How many forwarded reports wait, by the peer that forwarded them.
    forwarded: HashMap<Name, usize>,
    /// Reports dropped as their window passed, for the log (`take_expired`).
    expired: Vec<(Cidr, Waiting)>,
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
        let vias = pending.sets.values().flat_map(|s| &s.reports);
        for via in vias.filter_map(|w| w.via.clone()).collect::<Vec<_>>() {
            *pending.forwarded.entry(via).or_default() += 1;
        }
        pending
    }

    /// Gives each report read without its key (from a journal of a version before keys
    /// were kept) the key that `key_named` says has its name.
    pub fn fill_keys(&mut self, key_named: impl Fn(&str) -> Option<PublicKey>) {
        let reports = self.sets.values_mut().flat_map(|s| s.reports.iter_mut());
        for w in reports.filter(|w| w.key.is_none()) {
            w.key = key_named(w.name.as_str());
        }
    }

    /// How many reports that `peer` forwarded wait here.
    pub fn forwarded_by(&self, peer: &Name) -> usize {
        self.forwarded.get(peer).copied().unwrap_or(0)
    }

    /// Drops every report waiting here that `keep` says no longer may: forwarded by a
    /// server that is no longer a peer, or from a key no longer authorized. Returns the
    /// networks whose reports changed.
    pub fn drop_where(&mut self, mut drop: impl FnMut(&Waiting) -> bool) -> Vec<Cidr> {
        let mut changed = Vec::new();
        let mut gone = Vec::new();
        for set in self.sets.values_mut() {
            let (dropped, kept): (Vec<Waiting>, _) = set.reports.drain(..).partition(&mut drop);
            set.reports = kept;
            if !dropped.is_empty() {
                changed.push(set.ip);
                gone.extend(dropped);
            }
        }
        self.sets.retain(|_, set| !set.reports.is_empty());
        self.unhold(&gone);
        changed
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
        let (gone, kept): (Vec<Waiting>, _) = set.reports.drain(..).partition(|w| w.until <= now);
        set.reports = kept;
        self.expired.extend(gone.iter().map(|w| (ip, w.clone())));
        let mut removed = gone;
        if let Some(i) = set.reports.iter().position(|w| w.same_key(&waiting)) {
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
        let via = waiting.via.clone();
        set.reports.push(waiting);
        self.unhold(&removed);
        if let Some(name) = holds {
            self.hold(&name, ip);
        }
        if let Some(via) = via {
            *self.forwarded.entry(via).or_default() += 1;
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
        self.drop_where(|w| w.name.as_str() == name)
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
        let Pending { sets, held, .. } = self;
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

    /// Forgets reports past `confirm-window`, which `take_expired` then gives.
    pub fn purge(&mut self, now: u64) {
        let mut gone = Vec::new();
        for set in self.sets.values_mut() {
            let (expired, kept): (Vec<Waiting>, _) =
                set.reports.drain(..).partition(|w| w.until <= now);
            set.reports = kept;
            self.expired
                .extend(expired.iter().map(|w| (set.ip, w.clone())));
            gone.extend(expired);
        }
        self.sets.retain(|_, set| !set.reports.is_empty());
        self.unhold(&gone);
    }

    /// The reports dropped since the last call because their window had passed: at the
    /// sweep (`purge`), or when their network was reported again (`add`). The server logs
    /// each, as the operator should know what the fleet never banned.
    pub fn take_expired(&mut self) -> Vec<(Cidr, Waiting)> {
        std::mem::take(&mut self.expired)
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

    /// Reports that no longer wait, or are no longer held: they count no more against their
    /// keys, nor against the peers that forwarded them.
    fn unhold(&mut self, reports: &[Waiting]) {
        for w in reports {
            if let (true, Some(held)) = (counts_as_held(w), self.held.get_mut(&w.name)) {
                held.count = held.count.saturating_sub(1);
            }
            if let Some(count) = w.via.as_ref().and_then(|v| self.forwarded.get_mut(v)) {
                *count = count.saturating_sub(1);
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

    /// A key for each test name: its bytes, then zeros.
    fn key(who: &str) -> PublicKey {
        let mut key = [0u8; 32];
        key[..who.len()].copy_from_slice(who.as_bytes());
        PublicKey(key)
    }

    fn waiting(who: &str, at: u64, bantime: Option<u64>, held: bool) -> Waiting {
        Waiting {
            name: name(who),
            key: Some(key(who)),
            at,
            until: at + 3600,
            prog: name("fail2ban"),
            jail: name("sshd"),
            bantime,
            held,
            forwarded: false,
            via: None,
        }
    }

    #[test]
    fn one_key_under_two_names_counts_once() {
        let mut pending = Pending::default();
        let x = ip("203.0.113.7");
        pending.add(x, waiting("web1", 10, None, false), 10);
        // The same key, filed as "webone" on a peer, which forwarded its report.
        let alias = Waiting {
            name: name("webone"),
            forwarded: true,
            via: Some(name("bs2")),
            ..waiting("web1", 20, None, false)
        };
        assert!(!pending.add(x, alias, 20).confirmed(2));
        assert!(pending
            .add(x, waiting("web2", 30, None, false), 30)
            .confirmed(2));
    }

    #[test]
    fn a_peer_has_a_share_of_what_waits_and_loses_it_when_it_goes() {
        let mut pending = Pending::default();
        let bs2 = name("bs2");
        for i in 1..=3 {
            let forwarded = Waiting {
                forwarded: true,
                via: Some(bs2.clone()),
                ..waiting(&format!("web{i}"), 10, None, false)
            };
            pending.add(ip(&format!("203.0.113.{i}")), forwarded, 10);
        }
        pending.add(ip("203.0.113.1"), waiting("db1", 10, None, false), 10);
        assert_eq!(pending.forwarded_by(&bs2), 3);
        let changed = pending.drop_where(|w| w.via.as_ref() == Some(&bs2));
        assert_eq!(changed.len(), 3);
        assert_eq!((pending.forwarded_by(&bs2), pending.len()), (0, 1));
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
            [format!(
                "203.0.113.7 web1/20/3620/fail2ban/sshd/60/waiting/{}",
                key("web1").hex()
            )]
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
        let (web1, web2) = (key("web1").hex(), key("web2").hex());
        assert_eq!(
            line,
            format!(
                "2001:db8::/64 web1/10/3610/fail2ban/sshd/-1/held/{web1},\
                 web2/3000/6600/fail2ban/sshd/600/waiting/{web2}"
            )
        );
        let fields: Vec<&str> = line.split(' ').collect();
        let back = PendingSet::decode(&fields).unwrap();
        assert_eq!(&back, pending.get(&x).unwrap());
        pending.purge(4000);
        assert_eq!(pending.take_expired().len(), 1);
        assert_eq!(pending.held_by(&name("web1")), 0);
        pending.purge(9000);
        assert!(pending.take_expired().len() == 1 && pending.is_empty());
        // One whose window passed goes when its network is reported again, said too.
        pending.add(x, waiting("web1", 10_000, None, false), 10_000);
        pending.add(x, waiting("web2", 20_000, None, false), 20_000);
        let said: Vec<String> = pending
            .take_expired()
            .into_iter()
            .map(|(_, w)| w.name.to_string())
            .collect();
        assert_eq!(said, ["web1"]);
        // Written before keys were kept: read, the key to be looked up by name.
        let old = PendingSet::decode(&["203.0.113.7", "web1/1/2/p/j/60/held"]).unwrap();
        assert_eq!(old.reports[0].key, None);
        for bad in [
            "x web1/1/2/p/j/60/held",
            "203.0.113.7 web1/1/2/p/j/0/held",
            "203.0.113.7 -x/1/2/p/j/60/held",
            "203.0.113.7 web1/1/2/p/j/60/held/+f00",
            "203.0.113.7 web1/1/2/p/j/60/held/00/bs2/x",
        ] {
            let fields: Vec<&str> = bad.split(' ').collect();
            assert!(PendingSet::decode(&fields).is_err(), "{bad}");
        }
    }
}
