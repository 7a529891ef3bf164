//! The client's record of what it has applied, kept in its state-dir so that a restart
//! re-applies nothing twice, yet applies everything it missed. A ban counts as applied once
//! its command succeeded; while the command runs it is pending, so a ban arriving both from
//! a snapshot and from the publish socket still runs once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::client::apply::runner::Applied;
use crate::config::Durability;
use crate::store::{Record, RecordError, Recovery, Store, StoreError};
use crate::wire::cidr::Cidr;
use crate::wire::protocol::{ban_fields, parse_ban, Ban, Lift, MAX_LIFTS_WITHOUT_BAN};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Ban,
    Unban,
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Action::Ban => "ban",
            Action::Unban => "unban",
        })
    }
}

/// How much later a ban must end than the applied one to be applied again. A server
/// renews a ban at most once per `dedup-window` (5 minutes by default); two servers that
/// each took the same report, when the reporter asked the second before the first had
/// answered, differ by no more than `report-timeout` (3 s by default).
const RENEWAL: u64 = 10;

pub struct AppliedBans {
    store: Store<Ban>,
    bans: BTreeMap<Cidr, Ban>,
    pending: HashMap<Cidr, (Action, Ban)>,
    /// The latest dated unban heard of each network, for as long as the lifted ban could be
    /// in force: a server that was away and still offers a ban reported before it must not
    /// get it applied here again. Journaled once the unban ran.
    lifts: HashMap<Cidr, Lift>,
    /// Bans the backend refused for good, with the end each had: that ban is not tried
    /// again, a different one of the network is.
    refused: HashMap<Cidr, u64>,
    /// Written since the last fdatasync, and when that was.
    unsynced: bool,
    synced_at: Instant,
}

/// The most refused bans remembered; beyond, they are forgotten, and may be tried once more.
const MAX_REFUSED: usize = 100_000;

/// How long what the record wrote waits, at most, for its fdatasync.
const SYNC_EVERY: Duration = Duration::from_secs(1);

/// What to do with an applied ban that the server no longer has.
pub enum Stale {
    /// It expired: the firewall lets it go by itself; just forget it.
    Expired(Cidr),
    /// It was lifted while we were away: run the unban command.
    Lifted(Ban),
}

impl AppliedBans {
    /// Opens the journal `name` in `dir`.
    pub fn open(
        dir: &Path,
        name: &str,
        now: u64,
    ) -> Result<(AppliedBans, Recovery<Ban>), StoreError> {
        let (store, recovery) = Store::open(dir, name, Durability::Write, now)?;
        let bans = recovery
            .entries
            .iter()
            .map(|ban: &Ban| (ban.ip, ban.clone()))
            .collect();
        // Not an unban that no server could have sent (written by a version that took any).
        let plausible = |l: &&Lift| l.implausible(now).is_none();
        let lifts = recovery.lifts.iter().filter(plausible);
        let lifts = lifts.map(|l| (l.ip, *l)).collect();
        let applied = AppliedBans {
            store,
            bans,
            pending: HashMap::new(),
            lifts,
            refused: HashMap::new(),
            unsynced: false,
            synced_at: Instant::now(),
        };
        Ok((applied, recovery))
    }

    pub fn len(&self) -> usize {
        self.bans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bans.is_empty()
    }

    /// Applied bans that have not expired.
    pub fn active(&self, now: u64) -> Vec<Ban> {
        self.bans
            .values()
            .filter(|b| b.active_at(now))
            .cloned()
            .collect()
    }

    /// Commands started and not yet finished.
    pub fn running(&self) -> usize {
        self.pending.len()
    }

    /// Whether this ban or unban still needs its command run here. A ban is needed again
    /// when it ends later than the one applied (a longer or renewed ban), since the applied
    /// one may already have expired in the firewall; but not when it ends only seconds
    /// later, as when two servers took the same report a moment apart (docs/ha.md), unless
    /// the applied one has ended by `now`: a short ban banned again must be applied.
    pub fn needs(&self, action: Action, ban: &Ban, now: u64) -> bool {
        let renews = |b: &Ban| !b.active_at(now) || ban.ends() > b.ends().saturating_add(RENEWAL);
        match (action, self.pending.get(&ban.ip)) {
            (_, Some((pending, _))) => *pending != action,
            (Action::Ban, None) if self.refused.get(&ban.ip) == Some(&ban.ends()) => false,
            (Action::Ban, None) => self.bans.get(&ban.ip).is_none_or(renews),
            (Action::Unban, None) => self.bans.contains_key(&ban.ip),
        }
    }

    pub fn get(&self, ip: &Cidr) -> Option<&Ban> {
        self.bans.get(ip)
    }

    /// Remembers a dated unban heard from a server, the latest per network: for as long
    /// as the lifted ban could last when it is applied here, otherwise for a day at most
    /// (`LIFT_WITHOUT_BAN`), and only so many of those.
    pub fn note_lift(&mut self, lift: Lift, now: u64) {
        let known = self.lifts.get(&lift.ip);
        if known.is_some_and(|k| lift.at <= k.at) {
            return;
        }
        let lift = match self.bans.contains_key(&lift.ip) || self.pending.contains_key(&lift.ip) {
            true => lift,
            false if known.is_none() && self.lifts.len() >= MAX_LIFTS_WITHOUT_BAN => return,
            false => lift.without_ban(now),
        };
        self.lifts.insert(lift.ip, lift);
    }

    /// Whether a dated unban already heard lifts this ban: it was reported before it.
    pub fn lifted(&self, ban: &Ban) -> bool {
        self.lifts.get(&ban.ip).is_some_and(|lift| lift.covers(ban))
    }

    /// Whether an unban dated `at` lifts what is applied, or being applied, here: only a ban
    /// reported at or before it. A ban re-reported after the unban, which another server
    /// may have sent first, stays.
    pub fn lifted_by(&self, ip: &Cidr, at: u64) -> bool {
        let banning = self
            .pending
            .get(ip)
            .filter(|(action, _)| *action == Action::Ban);
        let current = banning.map(|(_, ban)| ban).or_else(|| self.bans.get(ip));
        current.is_none_or(|ban| ban.reported <= at)
    }

    /// A ban that needs no command, as it ends no later than the applied one, but was
    /// reported later: the record keeps the later report time, so that an unban dated
    /// between the two leaves the ban in force here, as it does on the servers.
    pub fn note_report(&mut self, ban: &Ban) -> Result<(), StoreError> {
        let Some(applied) = self.bans.get_mut(&ban.ip) else {
            return Ok(());
        };
        if ban.reported <= applied.reported {
            return Ok(());
        }
        applied.reported = ban.reported;
        self.store.append(applied)?;
        self.commit()
    }

    pub fn start(&mut self, action: Action, ban: &Ban) {
        self.pending.insert(ban.ip, (action, ban.clone()));
    }

    /// Records a finished command, buffered until `commit`. A failed ban stays unapplied,
    /// so the next resynchronisation tries it again; a refused one is not tried again, and
    /// a refused unban leaves nothing to undo.
    pub fn finish(&mut self, ip: Cidr, action: Action, applied: Applied) -> Result<(), StoreError> {
        let Some((pending, ban)) = self.pending.remove(&ip) else {
            return Ok(());
        };
        if applied == Applied::Failed || pending != action {
            return Ok(());
        }
        match action {
            Action::Ban if applied == Applied::Refused => {
                if self.refused.len() >= MAX_REFUSED {
                    self.refused.clear();
                }
                self.refused.insert(ip, ban.ends());
            }
            Action::Ban => {
                self.store.append(&ban)?;
                self.bans.insert(ip, ban);
            }
            Action::Unban => {
                // Dated, when it is known, so that the record keeps it after a restart.
                match self.lifts.get(&ip) {
                    Some(lift) => self.store.lift(lift)?,
                    None => self.store.remove(&ip)?,
                }
                self.bans.remove(&ip);
            }
        }
        Ok(())
    }

    /// Writes the finished commands recorded so far, and makes them durable at most
    /// SYNC_EVERY later. One fdatasync per ban made a catch-up of 100,000 bans take tens
    /// of seconds, and one per batch still cost each client most of its time per ban
    /// (docs/performance.md, P14), with its loop blocked on the disk meanwhile. A power cut
    /// loses at most that second of the record, and nothing else: the first catch-up after
    /// the reboot finds those bans missing from it and applies them again (a renewal for
    /// nftables and fail2ban; the command backend runs the command once more).
    pub fn commit(&mut self) -> Result<(), StoreError> {
        self.store.commit()?;
        self.unsynced = true;
        self.sync_if_due()
    }

    /// The fdatasync of what was written, once SYNC_EVERY has passed since the last one.
    pub fn sync_if_due(&mut self) -> Result<(), StoreError> {
        if self.unsynced && self.synced_at.elapsed() >= SYNC_EVERY {
            self.sync()?;
        }
        Ok(())
    }

    /// The fdatasync of what was written, now (on the way out).
    pub fn sync(&mut self) -> Result<(), StoreError> {
        if std::mem::take(&mut self.unsynced) {
            self.store.sync()?;
            self.synced_at = Instant::now();
        }
        Ok(())
    }

    /// Applied bans that are not among `active` (the server's snapshot) nor `fresh` (bans
    /// received while the snapshot was being read).
    pub fn stale(&self, active: &HashSet<Cidr>, fresh: &HashSet<Cidr>, now: u64) -> Vec<Stale> {
        self.bans
            .values()
            .filter(|b| !active.contains(&b.ip) && !fresh.contains(&b.ip))
            .filter(|b| !self.pending.contains_key(&b.ip))
            .map(|b| {
                if b.active_at(now) {
                    Stale::Lifted(b.clone())
                } else {
                    Stale::Expired(b.ip)
                }
            })
            .collect()
    }

    /// Forgets which bans the backend refused, so that each is tried once more.
    pub fn forget_refused(&mut self) {
        self.refused.clear();
    }

    pub fn forget(&mut self, ip: &Cidr) -> Result<(), StoreError> {
        if self.bans.remove(ip).is_some() {
            self.store.remove(ip)?;
            self.commit()?;
        }
        Ok(())
    }

    /// Keeps the journal small, and forgets unbans that no longer matter; called from time
    /// to time.
    pub fn compact(&mut self, now: u64) -> Result<(), StoreError> {
        self.lifts.retain(|_, lift| lift.active_at(now));
        self.refused.retain(|_, ends| *ends > now);
        let live: Vec<Ban> = self.bans.values().cloned().collect();
        let lifts: Vec<Lift> = self.lifts.values().copied().collect();
        self.store.compact_if_large(&live, &lifts).map(|_| ())
    }
}

/// In the client's journal, a ban applied here is its seven fields, its report time last,
/// which says what a dated unban lifts: who reported it is the server's business.
impl Record for Ban {
    fn network(&self) -> Cidr {
        self.ip
    }

    fn active_at(&self, now: u64) -> bool {
        Ban::active_at(self, now)
    }

    fn reported(&self) -> u64 {
        self.reported
    }

    fn encode(&self) -> String {
        ban_fields(self).join(" ")
    }

    fn decode(fields: &[&str]) -> Result<Ban, RecordError> {
        match fields {
            // Written by earlier versions, with the server's two further fields, empty; or
            // without the report time (six fields), which `parse_ban` works out.
            [ban @ .., "0", "-"] if ban.len() == 6 => Ok(parse_ban(ban)?),
            _ => Ok(parse_ban(fields)?),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::CLIENT_JOURNAL;

    fn ban(ip: &str, expires: Option<u64>) -> Ban {
        Ban::sample(ip, expires.map(|_| 100), expires)
    }

    #[test]
    fn the_record_keeps_a_ban_as_its_seven_fields_and_reads_earlier_lines() {
        let applied = Ban::sample("2001:db8::/64", None, None);
        assert_eq!(applied.encode(), "2001:db8::/64 fail2ban sshd web1 -1 0 0");
        let fields: Vec<&str> = "2001:db8::/64 fail2ban sshd web1 -1 0".split(' ').collect();
        assert_eq!(Ban::decode(&fields).unwrap(), applied);
        let dated = Ban {
            reported: 1767225000,
            ..applied.clone()
        };
        let line = dated.encode();
        let fields: Vec<&str> = line.split(' ').collect();
        assert_eq!(Ban::decode(&fields).unwrap(), dated);
        // Earlier versions wrote the server's two further fields, always empty here.
        let earlier: Vec<&str> = "2001:db8::/64 fail2ban sshd web1 -1 0 0 -"
            .split(' ')
            .collect();
        assert_eq!(Ban::decode(&earlier).unwrap(), applied);
        let wrong: Vec<&str> = "2001:db8::/64 fail2ban sshd web1 -1 0 7 x"
            .split(' ')
            .collect();
        assert!(Ban::decode(&wrong).is_err());
    }

    #[test]
    fn a_ban_runs_once_and_is_remembered_across_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (mut applied, _) = AppliedBans::open(dir.path(), CLIENT_JOURNAL, 0).unwrap();
        let b = ban("203.0.113.7", None);
        assert!(applied.needs(Action::Ban, &b, 0));
        applied.start(Action::Ban, &b);
        assert!(!applied.needs(Action::Ban, &b, 0), "pending");
        applied.finish(b.ip, Action::Ban, Applied::Done).unwrap();
        applied.commit().unwrap();
        assert!(!applied.needs(Action::Ban, &b, 0));
        drop(applied);
        let (applied, _) = AppliedBans::open(dir.path(), CLIENT_JOURNAL, 0).unwrap();
        assert!(!applied.needs(Action::Ban, &b, 0));
        assert!(applied.needs(Action::Unban, &b, 0));
    }

    #[test]
    fn a_ban_that_ends_later_is_applied_again() {
        let dir = tempfile::tempdir().unwrap();
        let (mut applied, _) = AppliedBans::open(dir.path(), CLIENT_JOURNAL, 0).unwrap();
        let first = ban("203.0.113.9", Some(100));
        applied.start(Action::Ban, &first);
        applied
            .finish(first.ip, Action::Ban, Applied::Done)
            .unwrap();
        assert!(!applied.needs(Action::Ban, &ban("203.0.113.9", Some(100)), 0));
        assert!(
            !applied.needs(Action::Ban, &ban("203.0.113.9", Some(105)), 0),
            "seconds later"
        );
        assert!(applied.needs(Action::Ban, &ban("203.0.113.9", Some(200)), 0));
        assert!(
            applied.needs(Action::Ban, &ban("203.0.113.9", Some(105)), 100),
            "the applied ban ended"
        );
        assert!(applied.needs(Action::Ban, &ban("203.0.113.9", None), 0));
    }

    #[test]
    fn a_failed_ban_stays_unapplied_and_unbans_are_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let (mut applied, _) = AppliedBans::open(dir.path(), CLIENT_JOURNAL, 0).unwrap();
        let b = ban("203.0.113.8", None);
        applied.start(Action::Ban, &b);
        applied.finish(b.ip, Action::Ban, Applied::Failed).unwrap();
        assert!(applied.needs(Action::Ban, &b, 0));
        applied.start(Action::Ban, &b);
        applied.finish(b.ip, Action::Ban, Applied::Done).unwrap();
        applied.start(Action::Unban, &b);
        applied.finish(b.ip, Action::Unban, Applied::Done).unwrap();
        drop(applied);
        let (applied, _) = AppliedBans::open(dir.path(), CLIENT_JOURNAL, 0).unwrap();
        assert!(applied.is_empty());
    }

    #[test]
    fn a_dated_unban_lifts_only_older_reports_and_outlives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (mut applied, _) = AppliedBans::open(dir.path(), CLIENT_JOURNAL, 0).unwrap();
        let at = |reported| Ban {
            reported,
            ..ban("203.0.113.6", None)
        };
        applied.start(Action::Ban, &at(100));
        applied
            .finish(at(100).ip, Action::Ban, Applied::Done)
            .unwrap();
        // Re-reported after the unban, by a server that heard it first: it stays.
        applied.note_report(&at(300)).unwrap();
        assert!(!applied.lifted_by(&at(0).ip, 200));
        assert!(applied.lifted_by(&at(0).ip, 300));
        let lift = Lift {
            ip: at(0).ip,
            at: 300,
            until: None,
        };
        applied.note_lift(lift, 0);
        applied.start(Action::Unban, &at(300));
        applied
            .finish(lift.ip, Action::Unban, Applied::Done)
            .unwrap();
        drop(applied);
        // A stale server's copy, reported before the unban, is not applied again; a report
        // after it is.
        let (applied, _) = AppliedBans::open(dir.path(), CLIENT_JOURNAL, 0).unwrap();
        assert!(applied.is_empty());
        assert!(applied.lifted(&at(250)) && !applied.lifted(&at(301)));
    }

    #[test]
    fn stale_bans_are_expired_or_lifted() {
        let dir = tempfile::tempdir().unwrap();
        let (mut applied, _) = AppliedBans::open(dir.path(), CLIENT_JOURNAL, 0).unwrap();
        for b in [
            ban("203.0.113.1", Some(50)),
            ban("203.0.113.2", Some(500)),
            ban("203.0.113.3", None),
            ban("203.0.113.4", None),
        ] {
            applied.start(Action::Ban, &b);
            applied.finish(b.ip, Action::Ban, Applied::Done).unwrap();
        }
        let active: HashSet<Cidr> = ["203.0.113.3".parse().unwrap()].into();
        let fresh: HashSet<Cidr> = ["203.0.113.4".parse().unwrap()].into();
        let stale = applied.stale(&active, &fresh, 100);
        let expired: Vec<String> = stale
            .iter()
            .filter_map(|s| match s {
                Stale::Expired(ip) => Some(ip.to_string()),
                _ => None,
            })
            .collect();
        let lifted: Vec<String> = stale
            .iter()
            .filter_map(|s| match s {
                Stale::Lifted(b) => Some(b.ip.to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(expired, ["203.0.113.1"]);
        assert_eq!(lifted, ["203.0.113.2"]);
    }
}
