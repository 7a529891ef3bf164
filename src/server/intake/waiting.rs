//! Reports that wait before they ban (`policy::confirm`): added to the others of their
//! network, confirmed by K keys, let through as a key's allowance refills, or forwarded by
//! a peer server.

use std::net::IpAddr;
use std::time::Instant;

use crate::config::ServerConfig;
use crate::server::intake::{Book, Decision, Intake, Policy};
use crate::server::policy::confirm::{PendingSet, Waiting, MAX_FORWARDED};
use crate::server::table::Entry;
use crate::wire::cidr::Cidr;
use crate::wire::error::FieldError;
use crate::wire::keys::PublicKey;
use crate::wire::protocol::{Name, Report, MAX_AHEAD};

/// Whether, where K keys are needed to ban, a report at `at` asking for `bantime` would
/// make the ban of `entry` end later, which then needs K keys too: one key alone must not
/// turn a ban that K confirmed for a minute into a permanent one.
pub(super) fn stretches(
    config: &ServerConfig,
    entry: &Entry,
    at: u64,
    bantime: Option<u64>,
) -> bool {
    config.min_reporters > 1 && asked_end(at, bantime) > entry.ban.ends()
}

/// When a report at `at` asking for `bantime` would end its ban (u64::MAX: never).
fn asked_end(at: u64, bantime: Option<u64>) -> u64 {
    bantime.map_or(u64::MAX, |b| at.saturating_add(b))
}

/// A peer's forwarded report, as this server takes it.
pub struct Forwarded<'a> {
    pub set: PendingSet,
    /// The peer that forwarded it.
    pub via: &'a str,
    /// This server's name for an authorized key, and the key of a name: what the report
    /// names must exist here.
    pub name_for: &'a dyn Fn(&PublicKey) -> Option<String>,
    pub key_named: &'a dyn Fn(&str) -> Option<PublicKey>,
}

/// Why a forwarded report is refused: what a peer may not say.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForwardRefused {
    #[error("a forwarded report holds one report")]
    NotOne,
    #[error(transparent)]
    Peer(#[from] FieldError),
    #[error("peer {0} has {MAX_FORWARDED} forwarded reports waiting here already")]
    TooMany(Name),
    #[error("no key named {0} is authorized here")]
    NoKeyNamed(Name),
    /// The key's fingerprint.
    #[error("key {0} is not authorized here")]
    KeyUnknown(String),
    #[error("it is dated {0} s ahead of this server's clock")]
    Ahead(u64),
}

impl Intake {
    /// Adds a report to those waiting for `ip`, and bans it if that confirms it.
    pub(super) fn wait(
        &mut self,
        config: &ServerConfig,
        book: &mut Book,
        ip: Cidr,
        waiting: Waiting,
        notes: Vec<String>,
        now: u64,
    ) -> Decision {
        let held = waiting.held;
        let banned = book.table.active_ban(&ip, now).is_some();
        let set = book.pending.add(ip, waiting, now);
        if set.confirmed(config.min_reporters) {
            return self.confirm(config, book, ip, notes, now);
        }
        self.counters.pending += 1;
        let reason = if banned {
            format!(
                "{} of {} hosts asked within confirm-window for a later end than that of the \
                 ban in force; it is made longer once {} have",
                set.reports.len(),
                config.min_reporters,
                config.min_reporters
            )
        } else if held {
            format!(
                "held: {} is over its allowance of {} reports at once and {} a minute; it is \
                 banned as the allowance refills, or when another host reports it",
                set.reports.last().expect("just added").name,
                config.report_burst,
                config.report_rate
            )
        } else {
            format!(
                "{} of {} hosts reported it within confirm-window; it is banned once {} have",
                set.reports.len(),
                config.min_reporters,
                config.min_reporters
            )
        };
        Decision::Pending(ip, reason, Policy::noted(notes))
    }

    /// Bans a network that its waiting reports confirm: with the K-th longest bantime they
    /// asked for, and every key that reported it among its reporters.
    fn confirm(
        &mut self,
        config: &ServerConfig,
        book: &mut Book,
        ip: Cidr,
        mut notes: Vec<String>,
        now: u64,
    ) -> Decision {
        let set = book.pending.get(&ip).expect("confirmed reports wait");
        let deciding = set.deciding(config.min_reporters).clone();
        let names: Vec<&str> = set.reports.iter().map(|w| w.name.as_str()).collect();
        notes.push(format!("confirmed by {}", names.join(", ")));
        let report = Report {
            ip,
            prog: deciding.prog.clone(),
            jail: deciding.jail.clone(),
            bantime: deciding.bantime(),
        };
        // Which takes the waiting reports into the ban.
        self.record(
            config,
            book,
            &report,
            &deciding.name,
            Policy::noted(notes),
            now,
        )
    }

    /// Takes the reports waiting for `ip` into its ban, now in force: every key that sent
    /// one among its reporters. Where K keys are needed to ban, a report asking for a
    /// later end than the ban's goes on waiting (`stretches`). False when none waited.
    pub fn absorb_waiting(
        &mut self,
        config: &ServerConfig,
        book: &mut Book,
        ip: &Cidr,
        now: u64,
    ) -> bool {
        let Some(mut set) = book.pending.take(ip) else {
            return false;
        };
        if let Some(entry) = book.table.active_ban(ip, now) {
            let (longer, taken) = set
                .reports
                .into_iter()
                .partition(|w| stretches(config, entry, w.at, w.bantime));
            set.reports = taken;
            for w in longer {
                book.pending.add(*ip, w, now);
            }
        }
        for w in &set.reports {
            book.table.note_reporter(ip, &w.name, w.at);
        }
        true
    }

    /// Lets through the reports that keys had held, as their allowances refill, oldest
    /// first: each is then decided like a report that arrives within the allowance.
    /// Returns what became of each, by network.
    pub fn release_held(
        &mut self,
        config: &ServerConfig,
        book: &mut Book,
        fleet_host: impl Fn(&Cidr) -> Option<(IpAddr, String)>,
        now: u64,
    ) -> Vec<(Cidr, Decision)> {
        let (rate, burst) = (config.report_rate, config.report_burst);
        let mut released = Vec::new();
        for name in book.pending.holders() {
            while book.pending.held_by(&name) > 0
                && self
                    .reports
                    .allow(name.as_str(), rate, burst, Instant::now())
            {
                let Some(set) = book.pending.release_oldest(&name) else {
                    break;
                };
                let ip = set.ip;
                released.push((ip, self.decide_released(config, book, ip, &fleet_host, now)));
            }
        }
        released
    }

    fn decide_released(
        &mut self,
        config: &ServerConfig,
        book: &mut Book,
        ip: Cidr,
        fleet_host: impl Fn(&Cidr) -> Option<(IpAddr, String)>,
        now: u64,
    ) -> Decision {
        if let Err((kind, reason)) = self.network_refusal(config, book, false, &ip, fleet_host) {
            self.refused(kind);
            book.pending.take(&ip);
            return Decision::Refused(reason);
        }
        if book.table.active_ban(&ip, now).is_some() {
            self.absorb_waiting(config, book, &ip, now);
            let policy = Policy {
                waited: Some(ip),
                ..Policy::default()
            };
            return Decision::Duplicate(book.table.active_ban(&ip, now).cloned(), policy);
        }
        let set = book.pending.get(&ip).expect("released");
        if set.confirmed(config.min_reporters) {
            return self.confirm(config, book, ip, Vec::new(), now);
        }
        let reason = "released from its allowance; waiting for confirmation".to_string();
        Decision::Pending(ip, reason, Policy::default())
    }

    /// After a reload: bans what the waiting reports confirm now, as when `min-reporters`
    /// was lowered. Returns what became of each, by network.
    pub fn confirm_waiting(
        &mut self,
        config: &ServerConfig,
        book: &mut Book,
        now: u64,
    ) -> Vec<(Cidr, Decision)> {
        let confirmed: Vec<Cidr> = book
            .pending
            .sets()
            .filter(|set| set.confirmed(config.min_reporters))
            .map(|set| set.ip)
            .collect();
        let decide = |ip| (ip, self.confirm(config, book, ip, Vec::new(), now));
        confirmed.into_iter().map(decide).collect()
    }

    /// A report that a peer server took and forwards (docs/ha.md): it counts here towards
    /// confirmation as it does there, under the same rules as a report, and is held to
    /// what a peer may say: one report, of a key authorized here (named as this server
    /// names it), dated no more than MAX_AHEAD ahead, waiting no longer than this server's
    /// `confirm-window`, and no more than MAX_FORWARDED from one peer at once.
    pub fn take_forwarded(
        &mut self,
        config: &ServerConfig,
        book: &mut Book,
        forwarded: Forwarded<'_>,
        fleet_host: impl Fn(&Cidr) -> Option<(IpAddr, String)>,
        now: u64,
    ) -> Decision {
        let ip = forwarded.set.ip;
        let waiting = match self.check_forwarded(config, book, &forwarded, now) {
            Ok(Some(waiting)) => waiting,
            Ok(None) => return Decision::Duplicate(None, Policy::default()),
            Err(refused) => {
                self.refused("forward");
                return Decision::Refused(refused.to_string());
            }
        };
        if let Err((kind, reason)) = self.network_refusal(config, book, false, &ip, fleet_host) {
            self.refused(kind);
            return Decision::Refused(reason);
        }
        match book.table.active_ban(&ip, now) {
            Some(entry) if !stretches(config, entry, waiting.at, waiting.bantime) => {
                let changed = book.table.note_reporter(&ip, &waiting.name, waiting.at);
                Decision::Duplicate(changed, Policy::default())
            }
            _ => self.wait(config, book, ip, waiting, Vec::new(), now),
        }
    }

    /// The report a peer forwards, as it may wait here; None when it no longer counts (its
    /// window has passed); the error is why it is refused.
    fn check_forwarded(
        &self,
        config: &ServerConfig,
        book: &Book,
        forwarded: &Forwarded<'_>,
        now: u64,
    ) -> Result<Option<Waiting>, ForwardRefused> {
        let [waiting] = &forwarded.set.reports[..] else {
            return Err(ForwardRefused::NotOne);
        };
        let via = Name::parse("peer", forwarded.via)?;
        if book.pending.forwarded_by(&via) >= MAX_FORWARDED {
            return Err(ForwardRefused::TooMany(via));
        }
        // The key decides, and the name is this server's: a key filed under two names
        // on two servers must count once. A report of a version before keys were sent
        // names its key by name, which must then exist here.
        let key = match waiting.key {
            Some(key) => key,
            None => (forwarded.key_named)(waiting.name.as_str())
                .ok_or_else(|| ForwardRefused::NoKeyNamed(waiting.name.clone()))?,
        };
        let name = (forwarded.name_for)(&key)
            .ok_or_else(|| ForwardRefused::KeyUnknown(key.fingerprint()))?;
        if waiting.at > now.saturating_add(MAX_AHEAD) {
            return Err(ForwardRefused::Ahead(waiting.at - now));
        }
        // No longer than this server lets a report wait, from when it was made.
        let until = waiting
            .until
            .min(waiting.at.saturating_add(config.confirm_window.0.as_secs()));
        if until <= now {
            return Ok(None);
        }
        Ok(Some(Waiting {
            name: Name::parse("reporter", &name)?,
            key: Some(key),
            until,
            forwarded: true,
            via: Some(via),
            ..waiting.clone()
        }))
    }
}
