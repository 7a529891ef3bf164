//! One group's bans (server.toml's `[[groups]]`; without groups, the one group of the whole
//! fleet): its table and waiting reports (`intake::Book`), their journals, the topic it is
//! published under (`wire::topic`) and its policy. Groups are apart in everything but the
//! keys' allowances: a network banned in one is not banned in another.

use crate::clock::unix_now;
use crate::config::groups::{self, GroupConfig};
use crate::config::ServerConfig;
use crate::exit::{Exit, Failure};
use crate::server::intake::Book;
use crate::server::policy::confirm::{Pending, PendingSet, Waiting};
use crate::server::table::{BanTable, Entry};
use crate::store::{Record, Recovery, Store, StoreError, PENDING_JOURNAL, SERVER_JOURNAL};
use crate::wire::cidr::Cidr;
use crate::wire::keys::PublicKey;
use crate::wire::topic::{Group, Topic};

pub struct Ledger {
    pub group: GroupConfig,
    pub topic: Topic,
    /// The server's configuration, with this group's `min-reporters` and `confirm-window`.
    pub config: ServerConfig,
    pub book: Book,
    pub store: Store<Entry>,
    /// The reports waiting (`policy::confirm`), journaled apart from the bans.
    pub pending_store: Store<PendingSet>,
}

/// Every group's ledger, the default group first. Its journals keep the names they had
/// before groups, so that turning groups on keeps the bans already made, in the default
/// group.
pub fn open_all(config: &ServerConfig) -> Result<Vec<Ledger>, Failure> {
    let resolved = groups::resolve(&config.groups);
    if resolved.is_empty() {
        return Ok(vec![Ledger::open(
            config,
            GroupConfig::default_group(),
            false,
        )?]);
    }
    resolved
        .into_iter()
        .map(|group| Ledger::open(config, group, true))
        .collect()
}

/// The groups of a server that has them.
pub fn groups(ledgers: &[Ledger]) -> Option<Vec<Group>> {
    ledgers.iter().map(|l| l.topic.group.clone()).collect()
}

/// The ledger a report of `prog` and `jail` from the key `host` goes to: the first group
/// whose rules match it, or the default group.
pub fn route(ledgers: &[Ledger], prog: &str, jail: &str, host: &str) -> usize {
    ledgers
        .iter()
        .skip(1)
        .position(|l| l.group.matches(prog, jail, host))
        .map_or(0, |i| i + 1)
}

/// Group `g`'s ledger, told how many bans the other groups hold, which its `max-bans`
/// counts too.
pub fn counted(ledgers: &mut [Ledger], g: usize) -> &mut Ledger {
    let total: usize = ledgers.iter().map(|l| l.book.table.len()).sum();
    let ledger = &mut ledgers[g];
    ledger.book.elsewhere = total - ledger.book.table.len();
    ledger
}

impl Ledger {
    fn open(config: &ServerConfig, group: GroupConfig, grouped: bool) -> Result<Ledger, Failure> {
        let (bans, pending) = journal_names(&group);
        let label = |what: &str| match grouped {
            true => format!("{what} of group {}", group.name),
            false => what.to_string(),
        };
        let (store, recovery) = open_journal(config, &bans, (&label("ban table"), "active bans"))?;
        let recidive = config.recidive_window.map(|w| w.0.as_secs());
        let mut table = BanTable::from_entries(recovery.entries, recovery.lifts, recidive);
        // What the journal kept for a longer recidive-window than this one.
        let now = unix_now();
        table.purge(now);
        log::info!(
            "{}: {} active bans",
            label("ban table"),
            table.active(now).count()
        );
        let waiting = label("waiting reports");
        let (pending_store, recovery) = open_journal(config, &pending, (&waiting, "networks"))?;
        if !recovery.entries.is_empty() {
            log::info!("{waiting}: {} networks", recovery.entries.len());
        }
        let topic = match grouped {
            true => Topic::of(group.name.clone(), group.dry_run),
            false => Topic::ungrouped(),
        };
        Ok(Ledger {
            config: policy(config, &group),
            topic,
            group,
            book: Book {
                table,
                pending: Pending::from_sets(recovery.entries),
                elsewhere: 0,
            },
            store,
            pending_store,
        })
    }

    /// Takes a reloaded configuration and this group's part of it.
    pub fn adopt(&mut self, config: &ServerConfig, group: GroupConfig) {
        self.config = policy(config, &group);
        if self.topic.group.is_some() {
            self.topic.dry_run = group.dry_run;
        }
        self.group = group;
        self.book
            .table
            .set_recidive(config.recidive_window.map(|w| w.0.as_secs()));
    }

    /// "group web: " for the log, or "" without groups.
    pub fn prefix(&self) -> String {
        match self.topic.group {
            Some(_) => format!("{}: ", self.topic.describe()),
            None => String::new(),
        }
    }

    /// At start: drops the waiting reports that may no longer wait, those of a key no
    /// longer authorized, and those forwarded by a server no longer among `peers` (or by
    /// a version that did not say which), and journals what changed. Returns how many
    /// networks that touched.
    pub fn drop_stale_waiting(
        &mut self,
        key_named: impl Fn(&str) -> Option<PublicKey>,
        peers: &[String],
    ) -> Result<usize, StoreError> {
        self.book.pending.fill_keys(key_named);
        let stale = |w: &Waiting| {
            let gone_peer = w
                .via
                .as_ref()
                .map_or(w.forwarded, |via| !peers.iter().any(|p| p == via.as_str()));
            w.key.is_none() || gone_peer
        };
        let changed = self.book.pending.drop_where(stale);
        for ip in &changed {
            self.journal_waiting(ip)?;
        }
        self.pending_store.commit()?;
        Ok(changed.len())
    }

    /// Logs each report dropped as its window passed (`Pending::take_expired`), and
    /// journals what waits of its network now: the operator should know what the fleet
    /// never banned.
    pub fn settle_expired(&mut self) -> Result<(), StoreError> {
        for (ip, waiting) in self.book.pending.take_expired() {
            let kind = if waiting.held { "held" } else { "unconfirmed" };
            log::info!(
                "{}dropped the {kind} report of {ip} ({} {}) from {}: confirm-window passed",
                self.prefix(),
                waiting.prog,
                waiting.jail,
                waiting.name
            );
            self.journal_waiting(&ip)?;
        }
        Ok(())
    }

    /// Journals the reports waiting for `ip` as they now stand, or that none does.
    pub fn journal_waiting(&mut self, ip: &Cidr) -> Result<(), StoreError> {
        match self.book.pending.get(ip) {
            Some(set) => self.pending_store.append(set),
            None => self.pending_store.remove(ip),
        }
    }

    /// Whether the batch changed anything to make durable.
    pub fn has_pending(&self) -> bool {
        self.store.has_pending() || self.pending_store.has_pending()
    }

    /// Makes what a batch changed durable: the ban table, then the waiting reports.
    pub fn commit(&mut self) -> Result<(), StoreError> {
        self.store.commit()?;
        self.pending_store.commit()
    }
}

/// The server's configuration as one group applies it.
fn policy(config: &ServerConfig, group: &GroupConfig) -> ServerConfig {
    ServerConfig {
        min_reporters: group.min_reporters.unwrap_or(config.min_reporters),
        confirm_window: group.confirm_window.unwrap_or(config.confirm_window),
        ..config.clone()
    }
}

/// `bans.journal` and `pending.journal` for the default group, `bans.NAME.journal` and
/// `pending.NAME.journal` for the others.
fn journal_names(group: &GroupConfig) -> (String, String) {
    if group.is_default() {
        return (SERVER_JOURNAL.into(), PENDING_JOURNAL.into());
    }
    let named = |journal: &str| journal.replacen('.', &format!(".{}.", group.name), 1);
    (named(SERVER_JOURNAL), named(PENDING_JOURNAL))
}

/// Opens the journal `name` in state-dir, saying loudly what could not be recovered; `what`
/// names its contents for the log.
fn open_journal<R: Record>(
    config: &ServerConfig,
    name: &str,
    (what, records): (&str, &str),
) -> Result<(Store<R>, Recovery<R>), Failure> {
    let (store, recovery) = Store::open(&config.state_dir, name, config.durability, unix_now())
        .map_err(|e| Exit::IoErr.with(format!("cannot open the {what}: {e}")))?;
    for damage in &recovery.damaged {
        let dir = config.state_dir.display();
        log::error!("{what} in {dir}: skipped {damage}");
    }
    if let Some(kept) = &recovery.kept {
        log::error!(
            "{what} damaged: recovered {} {records} from {} lines, skipped {}; the damaged \
             journal is kept as {}",
            recovery.entries.len(),
            recovery.lines,
            recovery.damaged.len(),
            kept.display()
        );
    }
    Ok((store, recovery))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_group_has_journals_of_its_own() {
        let mut group = GroupConfig::default_group();
        assert_eq!(
            journal_names(&group),
            ("bans.journal".into(), "pending.journal".into())
        );
        group.name = crate::wire::topic::Group::parse("web").unwrap();
        assert_eq!(
            journal_names(&group),
            ("bans.web.journal".into(), "pending.web.journal".into())
        );
    }
}
