//! Every group's journals: its bans and dated unbans (`bans.journal`), and its waiting
//! reports (`pending.journal`), apart so that a flood of reports that never ban does not
//! grow the ban table's. The shell (`super`) hands them the records of a batch (`changes`)
//! and publishes nothing until `write` has committed them all.

use crate::clock::unix_now;
use crate::config::groups::GroupConfig;
use crate::config::ServerConfig;
use crate::exit::{Exit, Failure};
use crate::server::changes::Written;
use crate::server::ledger::{self, Ledger};
use crate::server::policy::confirm::PendingSet;
use crate::server::table::Entry;
use crate::store::{Record, Recovery, Store, StoreError, PENDING_JOURNAL, SERVER_JOURNAL};

/// Every group's ledger, the default group first, and their journals, from which they
/// were read.
pub fn open_all(config: &ServerConfig) -> Result<(Vec<Ledger>, Journals), Failure> {
    let (all, grouped) = ledger::groups_of(config);
    let mut journals = Journals::default();
    let mut ledgers = Vec::new();
    for group in all {
        let (bans, waiting) = journals.open(config, &group, grouped)?;
        ledgers.push(Ledger::new(config, group, grouped, bans, waiting));
    }
    Ok((ledgers, journals))
}

/// The file names of every group's ban journal, in the server's order of groups.
pub fn ban_journal_names(config: &ServerConfig) -> Vec<String> {
    let (all, _) = ledger::groups_of(config);
    all.iter().map(|group| journal_names(group).0).collect()
}

/// Each group's journals, in the server's order of groups.
#[derive(Default)]
pub struct Journals(Vec<GroupJournals>);

struct GroupJournals {
    bans: Store<Entry>,
    waiting: Store<PendingSet>,
}

impl Journals {
    /// Opens the journals of `group` (`grouped`: the server has groups), and returns what
    /// they held: its bans and unbans, and its waiting reports.
    pub fn open(
        &mut self,
        config: &ServerConfig,
        group: &GroupConfig,
        grouped: bool,
    ) -> Result<(Recovery<Entry>, Recovery<PendingSet>), Failure> {
        let (bans, waiting) = journal_names(group);
        let label = |what| ledger::label(group, grouped, what);
        let (bans, held) = open_journal(config, &bans, (&label("ban table"), "active bans"))?;
        let waits = label("waiting reports");
        let (waiting, waits_held) = open_journal(config, &waiting, (&waits, "networks"))?;
        self.0.push(GroupJournals { bans, waiting });
        Ok((held, waits_held))
    }

    /// Appends every record to its group's journals, then commits them all: one write, and
    /// one fsync per journal that took anything (group commit).
    pub fn write(&mut self, records: Vec<(usize, Written)>) -> Result<(), StoreError> {
        for (g, record) in records {
            let journals = &mut self.0[g];
            match record {
                Written::Ban(entry) => journals.bans.append(&entry)?,
                Written::Lift(lift) => journals.bans.lift(&lift)?,
                Written::Waiting(_, Some(set)) => journals.waiting.append(&set)?,
                Written::Waiting(ip, None) => journals.waiting.remove(&ip)?,
            }
        }
        for journals in &mut self.0 {
            journals.bans.commit()?;
            journals.waiting.commit()?;
        }
        Ok(())
    }

    /// fdatasync every journal, whatever the durability: before a clean stop.
    pub fn sync(&mut self) -> Result<(), StoreError> {
        for journals in &mut self.0 {
            journals.bans.sync()?;
            journals.waiting.sync()?;
        }
        Ok(())
    }

    /// Rewrites the journals that have grown to over twice what their groups hold, so that
    /// expired and replaced records do not pile up.
    pub fn compact(&mut self, ledgers: &[Ledger]) -> Result<(), StoreError> {
        for (journals, ledger) in self.0.iter_mut().zip(ledgers) {
            let table = &ledger.book.table;
            let live: Vec<Entry> = table.entries().cloned().collect();
            let lifts: Vec<_> = table.lifts().copied().collect();
            if journals.bans.compact_if_large(&live, &lifts)? {
                let prefix = ledger.prefix();
                log::info!("{prefix}compacted the ban table to {} bans", live.len());
            }
            let sets: Vec<PendingSet> = ledger.book.pending.sets().cloned().collect();
            journals.waiting.compact_if_large(&sets, &[])?;
        }
        Ok(())
    }
}

/// `bans.journal` and `pending.journal` for the default group, `bans.NAME.journal` and
/// `pending.NAME.journal` for the others: turning groups on keeps the bans already made,
/// in the default group.
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
