//! Reports, and what becomes of them: decided by `intake`, logged, and added to the
//! changes; a report that now waits is forwarded to the peers. Also the reports a peer
//! forwards, the held ones that an allowance lets through, those a reload confirms, and a
//! blocklist's imported bans.

use crate::clock::unix_now;
use crate::server::changes::{Changes, Written};
use crate::server::core::{Core, Peer, Said};
use crate::server::intake::{Decision, Forwarded, Policy, Sender};
use crate::server::ledger;
use crate::server::policy::confirm::PendingSet;
use crate::store::Record;
use crate::wire::cidr::Cidr;
use crate::wire::control::ImportSummary;
use crate::wire::error::FieldError;
use crate::wire::protocol::{bantime_text, Name, Report, Verdict};
use crate::wire::topic::Group;

/// The refusals an import's answer names, beyond which it only counts them.
const EXAMPLES: usize = 10;

/// Why an import was refused whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Origin(FieldError),
    /// The import's bans must never pass for a host's word.
    #[error("{0} is the name of a host's key")]
    KeyName(Name),
}

impl Core {
    /// A report from `peer`: decided, logged, and what it changed added to `changes`.
    pub fn report(&mut self, report: &Report, peer: &Peer, changes: &mut Changes) -> Verdict {
        let (prog, jail) = (report.prog.as_str(), report.jail.as_str());
        let g = ledger::route(&self.ledgers, prog, jail, &peer.name);
        let auth = &self.auth;
        let ledger = ledger::counted(&mut self.ledgers, g);
        let from = Sender {
            name: &peer.name,
            key: Some(peer.key),
        };
        let decision = self.intake.decide(
            &ledger.config,
            &mut ledger.book,
            report,
            from,
            |ip| auth.fleet_host_in(ip),
            unix_now(),
        );
        let said = Said {
            what: format!("{} ({prog} {jail})", report.ip),
            key: peer.name.clone(),
            from: peer.to_string(),
        };
        self.forward_waiting(g, &decision, changes);
        self.settle(g, &said, decision, changes)
    }

    /// A report that now waits here is forwarded to the peers. Not one a peer forwarded:
    /// each server forwards its own, or two would forward to each other for ever.
    fn forward_waiting(&self, g: usize, decision: &Decision, changes: &mut Changes) {
        if let Decision::Pending(ip, ..) = decision {
            if let Some(set) = self.ledgers[g].book.pending.get(ip) {
                changes.forward(g, set.forward_lines());
            }
        }
    }

    /// A report a peer forwards (`via`: the peer's name, None when `peer` is not a peer),
    /// in `group` (or the default group): decided like a report, but never forwarded again.
    pub fn forwarded(
        &mut self,
        line: &str,
        group: Option<&Group>,
        (peer, via): (&Peer, Option<&str>),
        changes: &mut Changes,
    ) -> Verdict {
        let Some(via) = via else {
            let reason = format!(
                "{} is not a peer server; only peers forward reports",
                peer.name
            );
            let line = format!("refused a forwarded report from {peer}: {reason}");
            self.warn_limited(&peer.name, &line);
            return Verdict::Refused(reason);
        };
        let fields: Vec<&str> = line.split(' ').collect();
        let set = match PendingSet::decode(&fields) {
            Ok(set) => set,
            Err(reason) => return Verdict::Invalid(format!("bad forwarded report: {reason}")),
        };
        let g = match self.ledger_named(group) {
            Ok(g) => g,
            Err(refused) => {
                let line = format!("refused a forwarded report from {peer}: {refused}");
                self.warn_limited(&peer.name, &line);
                return Verdict::Refused(refused.to_string());
            }
        };
        let said = Said {
            what: format!("{} (forwarded)", set.ip),
            key: peer.name.clone(),
            from: format!("peer {}", peer.name),
        };
        let auth = &self.auth;
        let ledger = ledger::counted(&mut self.ledgers, g);
        let forwarded = Forwarded {
            set,
            via,
            name_for: &|key| auth.name_for(key),
            key_named: &|name| auth.key_named(name),
        };
        let decision = self.intake.take_forwarded(
            &ledger.config,
            &mut ledger.book,
            forwarded,
            |ip| auth.fleet_host_in(ip),
            unix_now(),
        );
        self.settle(g, &said, decision, changes)
    }

    /// Lets through the reports held beyond their keys' allowances, as these refill
    /// (`policy::confirm`), decided as reports are.
    pub fn release_held(&mut self, changes: &mut Changes) {
        for g in 0..self.ledgers.len() {
            let auth = &self.auth;
            let ledger = ledger::counted(&mut self.ledgers, g);
            if ledger.book.pending.is_empty() {
                continue;
            }
            let released = self.intake.release_held(
                &ledger.config,
                &mut ledger.book,
                |ip| auth.fleet_host_in(ip),
                unix_now(),
            );
            self.settle_all(
                g,
                released,
                ("held", "its key's refilled allowance"),
                changes,
            );
        }
    }

    /// After a reload: bans what waited and is confirmed now (a lower `min-reporters`).
    pub fn confirm_waiting(&mut self, changes: &mut Changes) {
        for g in 0..self.ledgers.len() {
            let ledger = ledger::counted(&mut self.ledgers, g);
            let confirmed =
                self.intake
                    .confirm_waiting(&ledger.config, &mut ledger.book, unix_now());
            let why = ("waiting", "the reports that waited for it");
            self.settle_all(g, confirmed, why, changes);
        }
    }

    /// Imports `reports` in the name of `origin`, which no host's key may have: the
    /// import's bans must never pass for a host's word. Returns the batch's summary.
    pub fn import(
        &mut self,
        origin: &str,
        reports: &[Report],
        changes: &mut Changes,
    ) -> Result<ImportSummary, ImportError> {
        self.import_in(origin, reports, None, changes)
    }

    /// `import`, into the group named `group` (a feed's `group`) rather than the one the
    /// rules of `[[groups]]` pick.
    pub fn import_in(
        &mut self,
        origin: &str,
        reports: &[Report],
        group: Option<&str>,
        changes: &mut Changes,
    ) -> Result<ImportSummary, ImportError> {
        let named = group.and_then(|name| {
            self.ledgers
                .iter()
                .position(|l| l.topic.group.as_ref().is_some_and(|g| g.as_str() == name))
        });
        let origin = match Name::parse("origin", origin) {
            Ok(name) if self.auth.key_named(name.as_str()).is_none() => name,
            Ok(name) => return Err(ImportError::KeyName(name)),
            Err(bad) => return Err(ImportError::Origin(bad)),
        };
        let mut summary = ImportSummary::default();
        for report in reports {
            let (prog, jail) = (report.prog.as_str(), report.jail.as_str());
            let g =
                named.unwrap_or_else(|| ledger::route(&self.ledgers, prog, jail, origin.as_str()));
            let auth = &self.auth;
            let ledger = ledger::counted(&mut self.ledgers, g);
            let decided = self.intake.import(
                &ledger.config,
                &mut ledger.book,
                report,
                &origin,
                |ip| auth.fleet_host_in(ip),
                unix_now(),
            );
            let decision = decided.unwrap_or_else(|(kind, reason)| {
                *summary.refused.entry(kind.into()).or_default() += 1;
                if summary.examples.len() < EXAMPLES {
                    summary.examples.push(format!("{}: {reason}", report.ip));
                }
                Decision::Refused(reason)
            });
            let said = Said {
                what: format!("{} ({prog} {jail})", report.ip),
                key: origin.to_string(),
                from: format!("banshare import as {origin}"),
            };
            match self.settle(g, &said, decision, changes) {
                Verdict::Accepted => summary.accepted += 1,
                Verdict::Duplicate => summary.duplicate += 1,
                _ => {}
            }
        }
        Ok(summary)
    }

    /// Settles what was decided for waiting reports, not for a request: `kind` names them
    /// in the log, `from` says what moved them.
    fn settle_all(
        &mut self,
        g: usize,
        decided: Vec<(Cidr, Decision)>,
        (kind, from): (&str, &str),
        changes: &mut Changes,
    ) {
        for (ip, decision) in decided {
            self.forward_waiting(g, &decision, changes);
            let said = Said {
                what: format!("{ip} ({kind})"),
                key: kind.into(),
                from: from.into(),
            };
            // The journal says what waits now, once: settling says it for most decisions.
            let journaled = decision.journals_waiting(&ip);
            self.settle(g, &said, decision, changes);
            if !journaled {
                changes.write(g, self.ledgers[g].waiting_record(&ip));
            }
        }
    }

    /// Adds what a decision changed to `changes`, logs it, and says what to answer.
    pub(super) fn settle(
        &mut self,
        g: usize,
        said: &Said,
        decision: Decision,
        changes: &mut Changes,
    ) -> Verdict {
        let Said { what, key, from } = said;
        let group = self.ledgers[g].prefix();
        match decision {
            Decision::Refused(reason) => {
                let line = format!("{group}refused {what} from {from}: {reason}");
                self.warn_limited(key, &line);
                Verdict::Refused(reason)
            }
            Decision::Pending(ip, reason, policy) => {
                changes.write(g, self.ledgers[g].waiting_record(&ip));
                let line = format!(
                    "{group}pending {what} from {from}: {reason}{}",
                    policy.suffix()
                );
                // A wave beyond a key's allowance must not flood the log either.
                self.log_limited(log::Level::Info, key, &line);
                Verdict::Pending(reason)
            }
            Decision::Duplicate(changed, policy) => {
                // A new reporter is part of the audit trail: journaled with the batch.
                if let Some(entry) = changed {
                    changes.write(g, Written::Ban(entry));
                }
                self.forget_waiting(g, &policy, changes);
                let note = policy.suffix();
                log::info!("{group}duplicate {what} from {key}{note}");
                Verdict::Duplicate
            }
            Decision::Accepted(entry, policy) => {
                let ban = &entry.ban;
                let note = policy.suffix();
                // The audit trail: every accepted ban, once, with where it came from.
                log::info!(
                    "{group}accepted {} ({} {}) from {from}, bantime {}{note}",
                    ban.ip,
                    ban.prog,
                    ban.jail,
                    bantime_text(ban.bantime)
                );
                let ip = ban.ip;
                changes.ban(g, entry);
                self.forget_waiting(g, &policy, changes);
                self.lift_absorbed(g, &ip, &policy.absorbed, changes);
                Verdict::Accepted
            }
        }
    }

    /// Journals that the reports waiting for a network were taken into its ban.
    fn forget_waiting(&self, g: usize, policy: &Policy, changes: &mut Changes) {
        if let Some(ip) = &policy.waited {
            changes.write(g, self.ledgers[g].waiting_record(ip));
        }
    }

    /// Lifts the bans that a wider one just accepted replaces (`policy::aggregate`), after
    /// it in the journal and on the wire, so that no host is ever without either.
    fn lift_absorbed(&mut self, g: usize, by: &Cidr, absorbed: &[Cidr], changes: &mut Changes) {
        let now = unix_now();
        for ip in absorbed {
            let Some(lift) = self.ledgers[g].book.table.unban_now(ip, now) else {
                continue;
            };
            if self.note_lift(g, lift, None, now, changes).is_some() {
                log::info!(
                    "{}lifted {ip}: the ban of {by} replaces it",
                    self.ledgers[g].prefix()
                );
            }
        }
    }
}
