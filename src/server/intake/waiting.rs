//! Reports that wait before they ban (`policy::confirm`): added to the others of their
//! network, confirmed by K keys, let through as a key's allowance refills, or forwarded by
//! a peer server.

use std::net::IpAddr;
use std::time::Instant;

use crate::config::ServerConfig;
use crate::server::intake::{Book, Decision, Intake, Policy};
use crate::server::policy::confirm::{PendingSet, Waiting};
use crate::wire::cidr::Cidr;
use crate::wire::protocol::Report;

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
        let set = book.pending.add(ip, waiting, now);
        if set.confirmed(config.min_reporters) {
            return self.confirm(config, book, ip, notes, now);
        }
        self.counters.pending += 1;
        let reason = if held {
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
    /// one among its reporters. False when none waited.
    pub fn absorb_waiting(&mut self, book: &mut Book, ip: &Cidr) -> bool {
        let Some(set) = book.pending.take(ip) else {
            return false;
        };
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
        if let Err((kind, reason)) = self.network_refusal(config, book, &ip, fleet_host) {
            self.refused(kind);
            book.pending.take(&ip);
            return Decision::Refused(reason);
        }
        if book.table.active_ban(&ip, now).is_some() {
            self.absorb_waiting(book, &ip);
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
    /// confirmation as it does there, under the same rules as a report.
    pub fn take_forwarded(
        &mut self,
        config: &ServerConfig,
        book: &mut Book,
        set: PendingSet,
        fleet_host: impl Fn(&Cidr) -> Option<(IpAddr, String)>,
        now: u64,
    ) -> Decision {
        let ip = set.ip;
        if let Err((kind, reason)) = self.network_refusal(config, book, &ip, fleet_host) {
            self.refused(kind);
            return Decision::Refused(reason);
        }
        let mut decision = Decision::Duplicate(None, Policy::default());
        for waiting in set.reports {
            if book.table.active_ban(&ip, now).is_some() {
                let changed = book.table.note_reporter(&ip, &waiting.name, waiting.at);
                decision = Decision::Duplicate(changed, Policy::default());
                continue;
            }
            let waiting = Waiting {
                forwarded: true,
                ..waiting
            };
            decision = self.wait(config, book, ip, waiting, Vec::new(), now);
        }
        decision
    }
}
