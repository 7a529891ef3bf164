//! What the server's core decides (`core`), as a value: the records its journals must
//! take, what its subscribers and peers must hear, and the reports its peers must be
//! forwarded. Nothing of it is announced before it is durable, and by construction: what
//! may be published is a `Committed`, and the only way to one is `Changes::commit`, which
//! hands every record to the journals first and goes on only when they are committed.

use crate::server::policy::confirm::PendingSet;
use crate::server::table::Entry;
use crate::wire::cidr::Cidr;
use crate::wire::protocol::{Ban, Lift};

/// What the table's subscribers must hear of a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Ban(Ban),
    /// The ban lifted, and when the unban was dated.
    Unban(Ban, u64),
}

/// A record for a group's journals.
#[derive(Debug, Clone)]
pub enum Written {
    /// A new or changed ban, in the ban table's journal.
    Ban(Entry),
    /// A dated unban, in the ban table's journal.
    Lift(Lift),
    /// What waits for a network now (None: nothing), in the waiting reports' journal.
    Waiting(Cidr, Option<PendingSet>),
}

/// What the core decided, each item with the index of its group.
#[derive(Debug, Default)]
pub struct Changes {
    written: Vec<(usize, Written)>,
    announced: Vec<(usize, Change)>,
    forwarded: Vec<(usize, Vec<String>)>,
}

impl Changes {
    /// A record for group `g`'s journals, which nobody needs to hear of.
    pub fn write(&mut self, g: usize, record: Written) {
        self.written.push((g, record));
    }

    /// A ban, new or changed: journaled, then published.
    pub fn ban(&mut self, g: usize, entry: Entry) {
        self.announced.push((g, Change::Ban(entry.ban.clone())));
        self.written.push((g, Written::Ban(entry)));
    }

    /// Something subscribers must hear once the batch is durable: an unban, or a ban
    /// published once more.
    pub fn announce(&mut self, g: usize, change: Change) {
        self.announced.push((g, change));
    }

    /// Reports waiting in group `g`, each as its journal line, for every peer.
    pub fn forward(&mut self, g: usize, lines: Vec<String>) {
        if !lines.is_empty() {
            self.forwarded.push((g, lines));
        }
    }

    /// What is to be announced so far.
    pub fn announced(&self) -> impl Iterator<Item = &Change> {
        self.announced.iter().map(|(_, change)| change)
    }

    /// Hands every record to `journal`, which writes and commits them; then, and only then,
    /// what may be announced.
    pub fn commit<E>(
        self,
        journal: impl FnOnce(Vec<(usize, Written)>) -> Result<(), E>,
    ) -> Result<Committed, E> {
        journal(self.written)?;
        Ok(Committed {
            announced: self.announced,
            forwarded: self.forwarded,
        })
    }
}

/// Changes whose records are durable: what the publisher may send, and the peers be
/// forwarded.
#[derive(Debug)]
pub struct Committed {
    announced: Vec<(usize, Change)>,
    forwarded: Vec<(usize, Vec<String>)>,
}

impl Committed {
    /// What subscribers must hear, in order, each with its group.
    pub fn announced(&self) -> &[(usize, Change)] {
        &self.announced
    }

    /// What subscribers must hear, taken for publishing.
    pub fn into_announced(self) -> Vec<(usize, Change)> {
        self.announced
    }

    /// Reports to forward to every peer, by group.
    pub fn forwarded(&self) -> &[(usize, Vec<String>)] {
        &self.forwarded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_announced_unless_the_journal_committed_it() {
        let ban = Ban::sample("203.0.113.7", None, None);
        let mut changes = Changes::default();
        changes.announce(0, Change::Ban(ban.clone()));
        changes.forward(0, vec!["line".into()]);
        let failed: Result<Committed, &str> = changes.commit(|_| Err("disk full"));
        assert!(failed.is_err(), "a failed commit gives nothing to publish");
        let mut changes = Changes::default();
        changes.announce(0, Change::Ban(ban.clone()));
        let mut journaled = 0;
        let committed = changes
            .commit(|written| -> Result<(), ()> {
                journaled = written.len() + 1;
                Ok(())
            })
            .unwrap();
        assert_eq!(journaled, 1);
        assert_eq!(committed.announced(), [(0, Change::Ban(ban))]);
    }
}
