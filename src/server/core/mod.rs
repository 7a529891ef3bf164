//! The server's core: every group's bans and waiting reports (`ledger`), the allowances and
//! checks of `intake`, and the decisions on what comes: a report, a report a peer forwards,
//! what a peer publishes, a tick, an admin's command. Each decision returns its answer and
//! adds what it changed to a `Changes`, which the shell (`super`) journals, commits and
//! only then publishes. No socket and no journal here: the core is tested by handing it
//! events and reading the changes.

mod admin;
mod decide;
mod merge;

use std::time::Instant;

use crate::config::groups::GroupConfig;
use crate::config::ServerConfig;
use crate::logging::LogLimit;
use crate::server::changes::{Changes, Written};
use crate::server::intake::Intake;
use crate::server::ledger::{self, Ledger};
use crate::server::policy::confirm::{PendingSet, Waiting};
use crate::server::zap::Authorizer;
use crate::wire::cidr::Cidr;
use crate::wire::keys::PublicKey;
use crate::wire::topic::{Group, Topic};

pub use admin::{group_name, Answer};

/// How long a key that broke the protocol's shape is refused.
pub const CUT_OFF: std::time::Duration = std::time::Duration::from_secs(15 * 60);

pub struct Core {
    /// Each group's bans, the default group's first.
    pub ledgers: Vec<Ledger>,
    pub intake: Intake,
    /// The authorized keys and the fleet's addresses, shared with the ZAP handler.
    pub auth: Authorizer,
    log_limit: LogLimit,
}

/// Why a request, or what a peer published, names no group of this server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    #[error("this server has no groups, and so no group {0}")]
    NoGroups(Group),
    #[error("this server has no group {0}")]
    NoSuchGroup(Group),
    #[error(
        "ignored what it published in group {0}, which this server does not have; give \
         every server the same [[groups]]"
    )]
    PublishedIn(Group),
    #[error(
        "ignored what it published without groups, while this server has groups; give \
         every server the same [[groups]]"
    )]
    PublishedUngrouped,
}

/// Who sent a request, as the log names it: key name, key fingerprint and address.
pub struct Peer {
    pub name: String,
    /// The fingerprint is worked out only when a line is written.
    pub key: PublicKey,
    pub address: String,
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (key {}) at {}",
            self.name,
            self.key.fingerprint(),
            self.address
        )
    }
}

/// Who said what, for the log: the report, the key's name, and the key with its address.
pub struct Said {
    pub what: String,
    pub key: String,
    pub from: String,
}

impl Core {
    pub fn new(ledgers: Vec<Ledger>, config: &ServerConfig, auth: Authorizer) -> Core {
        Core {
            ledgers,
            intake: Intake::new(config),
            auth,
            log_limit: LogLimit::default(),
        }
    }

    /// At start: drops the waiting reports that may no longer wait (of keys no longer
    /// authorized, or forwarded by servers no longer among `peers`), and forwards again
    /// what waits here, which a peer may have missed (forwarding twice is harmless).
    pub fn start(&mut self, peers: &[String], changes: &mut Changes) {
        for (g, ledger) in self.ledgers.iter_mut().enumerate() {
            let dropped = ledger.drop_stale_waiting(|name| self.auth.key_named(name), peers);
            for ip in &dropped {
                changes.write(g, ledger.waiting_record(ip));
            }
            if !dropped.is_empty() {
                log::info!(
                    "{}dropped the reports waiting for {} networks from keys no longer \
                     authorized or forwarded by servers no longer peers",
                    ledger.prefix(),
                    dropped.len()
                );
            }
            let lines = ledger
                .book
                .pending
                .sets()
                .flat_map(PendingSet::forward_lines);
            changes.forward(g, lines.collect());
        }
    }

    /// Takes a reloaded configuration: limits, protected networks, and each group's rules
    /// and policy. The groups themselves change only on restart, as each has its journals.
    pub fn adopt(&mut self, config: &ServerConfig) {
        self.intake.protect(config);
        let (resolved, _) = ledger::groups_of(config);
        let names = |groups: &mut dyn Iterator<Item = &GroupConfig>| {
            groups.map(|g| g.name.clone()).collect::<Vec<_>>()
        };
        let running = names(&mut self.ledgers.iter().map(|l| &l.group));
        let grouped = self.ledgers[0].topic.group.is_some();
        if names(&mut resolved.iter()) != running || grouped == config.groups.is_empty() {
            log::warn!("the groups themselves change only on restart; their rules and policies were reloaded");
        }
        for ledger in &mut self.ledgers {
            let group = resolved.iter().find(|g| g.name == ledger.group.name);
            let group = group.cloned().unwrap_or_else(|| ledger.group.clone());
            ledger.adopt(config, group);
        }
    }

    /// Forgets expired bans, and the waiting reports whose window has passed (each with a
    /// line, `settle_expired`).
    pub fn purge(&mut self, now: u64, changes: &mut Changes) {
        for ledger in &mut self.ledgers {
            let purged = ledger.book.table.purge(now);
            let table = &ledger.book.table;
            log::debug!(
                "{}purged {purged} expired bans; {} active",
                ledger.prefix(),
                table.len()
            );
            ledger.book.pending.purge(now);
        }
        self.settle_expired(changes);
    }

    /// Logs each report dropped as its window passed, and journals what waits of its
    /// network now: the operator should know what the fleet never banned.
    pub fn settle_expired(&mut self, changes: &mut Changes) {
        for (g, ledger) in self.ledgers.iter_mut().enumerate() {
            for (ip, waiting) in ledger.book.pending.take_expired() {
                log_expired(ledger, &ip, &waiting);
                changes.write(g, ledger.waiting_record(&ip));
            }
        }
    }

    /// The ledger of the group a request names; none names the default group.
    pub fn ledger_named(&self, group: Option<&Group>) -> Result<usize, GroupError> {
        let Some(group) = group else {
            return Ok(0);
        };
        if self.ledgers[0].topic.group.is_none() {
            return Err(GroupError::NoGroups(group.clone()));
        }
        let found = self.ledgers.iter().position(|l| &l.group.name == group);
        found.ok_or_else(|| GroupError::NoSuchGroup(group.clone()))
    }

    /// Whether `name` may have another snapshot page of the group it asks for: each group
    /// has its allowance, as each is a catch-up of its own.
    pub fn allow_snapshot(&mut self, name: &str, group: Option<&Group>) -> bool {
        let g = self.ledger_named(group).unwrap_or(0);
        let bans = self.ledgers[g].book.table.len();
        match group {
            Some(group) => self.intake.allow_snapshot(&format!("{name}/{group}"), bans),
            None => self.intake.allow_snapshot(name, bans),
        }
    }

    /// The ledger that takes what a peer published under `topic`: that of the same group.
    /// Every server of a fleet needs the same groups; a group this one lacks is refused,
    /// never merged into another, whose hosts were not meant to have it.
    pub fn ledger_of(&self, topic: &Topic) -> Result<usize, GroupError> {
        let found = self
            .ledgers
            .iter()
            .position(|l| l.topic.group == topic.group);
        found.ok_or_else(|| match &topic.group {
            Some(group) => GroupError::PublishedIn(group.clone()),
            None => GroupError::PublishedUngrouped,
        })
    }

    /// Refuses a key for CUT_OFF, in the handshake and on connections already open, and
    /// says so once; the shell then closes every connection, which ends the key's own.
    pub fn cut_off(&mut self, peer: &Peer, why: &str) {
        self.auth.cut_off(peer.key, Instant::now() + CUT_OFF);
        self.intake.counters.cut_off += 1;
        log::warn!(
            "cut off {peer} for {} minutes: {why}; its connections are closed",
            CUT_OFF.as_secs() / 60
        );
    }

    /// A warning about a key, unless that key has had its share of lines this minute: a
    /// flood of bad reports must not fill the disk with the log.
    pub fn warn_limited(&mut self, name: &str, line: &str) {
        self.log_limited(log::Level::Warn, name, line);
    }

    fn log_limited(&mut self, level: log::Level, name: &str, line: &str) {
        match self.log_limit.admit(name, Instant::now()) {
            Some(0) => log::log!(level, "{line}"),
            Some(held_back) => {
                log::log!(
                    level,
                    "{line} ({held_back} more lines about {name} were held back)"
                );
            }
            None => {}
        }
    }
}

fn log_expired(ledger: &Ledger, ip: &Cidr, waiting: &Waiting) {
    let kind = if waiting.held { "held" } else { "unconfirmed" };
    log::info!(
        "{}dropped the {kind} report of {ip} ({} {}) from {}: confirm-window passed",
        ledger.prefix(),
        waiting.prog,
        waiting.jail,
        waiting.name
    );
}

impl Ledger {
    /// The record that journals what waits for `ip` now, or that nothing does.
    pub fn waiting_record(&self, ip: &Cidr) -> Written {
        Written::Waiting(*ip, self.book.pending.get(ip).cloned())
    }
}

#[cfg(test)]
mod tests;
