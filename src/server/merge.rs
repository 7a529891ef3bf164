//! Changes that do not come from a report: bans and dated unbans heard from peer servers,
//! and `banshare unban` here. Each is merged into the table (`BanTable::merge`, `lift`),
//! journaled and committed, and only then published, and only when it changed the table:
//! so each change crosses each link between servers once, and nothing loops.

use crate::clock::unix_now;
use crate::exit::Failure;
use crate::server::ledger;
use crate::server::table::{Lifted, MAX_AHEAD};
use crate::server::{store_failure, Server};
use crate::wire::protocol::{Ban, Lift};

/// What the table's subscribers must hear of a change.
pub(super) enum Change {
    Ban(Ban),
    Unban(Ban, u64),
}

/// Changes, each with the index of the group (`ledger`) it is published in.
pub(super) type Changes = Vec<(usize, Change)>;

impl Server {
    /// Merges what the peer `peer` published or paged in group `g`: its unbans first, so
    /// that a ban they lift is not published only to be lifted. Returns how many changed
    /// the table here.
    pub(super) fn merge_from_peer(
        &mut self,
        peer: &str,
        g: usize,
        bans: &[Ban],
        lifts: &[Lift],
    ) -> Result<usize, Failure> {
        let now = unix_now();
        let mut changes: Changes = Vec::new();
        let ahead = |at: u64| at > now.saturating_add(MAX_AHEAD);
        for lift in lifts {
            if ahead(lift.at) {
                log::warn!("ignored the unban of {} from peer {peer}: dated {} s ahead of this server's clock", lift.ip, lift.at - now);
            }
            changes.extend(self.note_lift(g, *lift, now)?.map(|c| (g, c)));
        }
        for ban in bans {
            let auth = &self.auth;
            let ledger = ledger::counted(&mut self.ledgers, g);
            let checked =
                self.intake
                    .network_refusal(&ledger.config, &ledger.book, &ban.ip, |ip| {
                        auth.fleet_host_in(ip)
                    });
            if let Err((_, reason)) = checked {
                // A peer is held to the same rules as a host: its word bans nothing here
                // that this server would refuse.
                log::warn!(
                    "{}refused {} from peer {peer}: {reason}",
                    ledger.prefix(),
                    ban.ip
                );
                continue;
            }
            if ahead(ban.reported) {
                log::warn!("ignored the ban of {} from peer {peer}: dated {} s ahead of this server's clock", ban.ip, ban.reported - now);
            }
            let ledger = &mut self.ledgers[g];
            if let Some(mut entry) = ledger.book.table.merge(ban, now) {
                // Reports waiting here for it: a peer's ban confirmed it.
                if self.intake.absorb_waiting(&mut ledger.book, &ban.ip) {
                    ledger.journal_waiting(&ban.ip).map_err(store_failure)?;
                    let table = &ledger.book.table;
                    entry = table.active_ban(&ban.ip, now).cloned().unwrap_or(entry);
                }
                ledger.store.append(&entry).map_err(store_failure)?;
                changes.push((g, Change::Ban(entry.ban)));
            }
        }
        self.commit()?;
        let changed = changes.len();
        self.publish(changes);
        Ok(changed)
    }

    /// Takes a dated unban into group `g`'s table and journal (not yet committed), and
    /// says what subscribers must hear of it.
    pub(super) fn note_lift(
        &mut self,
        g: usize,
        lift: Lift,
        now: u64,
    ) -> Result<Option<Change>, Failure> {
        let ledger = &mut self.ledgers[g];
        let (change, new) = match ledger.book.table.lift(lift, now) {
            Lifted::Unchanged => return Ok(None),
            Lifted::Removed(entry) => (Some(Change::Unban(entry.ban, lift.at)), true),
            Lifted::Outlived { entry, new } => (Some(Change::Ban(entry.ban)), new),
            Lifted::Noted => (None, true),
        };
        if new {
            ledger.store.lift(&lift).map_err(store_failure)?;
        }
        Ok(change)
    }

    /// Publishes committed changes, each in its group, soon followed by a heartbeat;
    /// returns the last seq.
    pub(super) fn publish(&mut self, changes: Changes) -> Option<u64> {
        if !changes.is_empty() {
            self.publisher.heartbeat_soon();
        }
        changes
            .into_iter()
            .map(|(g, change)| match change {
                Change::Ban(ban) => self.publisher.ban(g, ban),
                Change::Unban(ban, at) => self.publisher.unban(g, ban, at),
            })
            .last()
    }
}
