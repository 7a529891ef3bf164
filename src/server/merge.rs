//! Changes that do not come from a report: bans and dated unbans heard from peer servers,
//! and `banshare unban` here. Each is merged into the table (`BanTable::merge`, `lift`),
//! journaled and committed, and only then published, and only when it changed the table:
//! so each change crosses each link between servers once, and nothing loops.

use crate::clock::unix_now;
use crate::exit::Failure;
use crate::server::ledger;
use crate::server::table::Lifted;
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
        for lift in lifts {
            // A peer is trusted to speak the protocol, not to say anything at all.
            if let Some(why) = lift.implausible(now) {
                let line = format!("peer {peer}: ignored the unban of {}: {why}", lift.ip);
                self.warn_limited(peer, &line);
                continue;
            }
            let renewal = Some(self.ledgers[g].config.min_reporters);
            changes.extend(self.note_lift(g, *lift, renewal, now)?.map(|c| (g, c)));
        }
        for ban in bans {
            if let Some(why) = ban.implausible(now) {
                let line = format!("peer {peer}: ignored the ban of {}: {why}", ban.ip);
                self.warn_limited(peer, &line);
                continue;
            }
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
            let ledger = &mut self.ledgers[g];
            if let Some(mut entry) = ledger.book.table.merge(ban, now) {
                // Reports waiting here for it: a peer's ban confirmed it.
                if self
                    .intake
                    .absorb_waiting(&ledger.config, &mut ledger.book, &ban.ip, now)
                {
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
    /// says what subscribers must hear of it. `renewal` for a peer's unban: that many
    /// hosts' reports here after it keep the ban (`BanTable::lift`); this server's own
    /// unbans lift what they name.
    pub(super) fn note_lift(
        &mut self,
        g: usize,
        lift: Lift,
        renewal: Option<usize>,
        now: u64,
    ) -> Result<Option<Change>, Failure> {
        let ledger = &mut self.ledgers[g];
        let (change, new) = match ledger.book.table.lift(lift, renewal, now) {
            Lifted::Unchanged => return Ok(None),
            Lifted::Removed(entry) => (Some(Change::Unban(entry.ban, lift.at)), true),
            Lifted::Renewed(entry) => {
                log::info!(
                    "{}kept {}: {} reported it here after the unban of {}",
                    ledger.prefix(),
                    lift.ip,
                    entry.ban.origin,
                    lift.at
                );
                ledger.store.append(&entry).map_err(store_failure)?;
                (Some(Change::Ban(entry.ban)), true)
            }
            Lifted::Outlived { entry, new } => (Some(Change::Ban(entry.ban)), new),
            Lifted::Noted => (None, true),
        };
        if new {
            // What the table keeps of it: bounded in time without a ban (`BanTable::lift`).
            let kept = ledger.book.table.lift_of(&lift.ip).unwrap_or(lift);
            ledger.store.lift(&kept).map_err(store_failure)?;
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
