//! Changes that do not come from a report: bans and dated unbans heard from peer servers,
//! and the unbans this server makes. Each is merged into the table (`BanTable::merge`,
//! `lift`) and added to the changes only when it changed the table: so each change crosses
//! each link between servers once, and nothing loops. The one exception is a stale ban, one
//! that an unban kept here lifts: it is answered with that unban, once per copy, so that
//! servers in any connected graph converge (docs/ha.md).

use crate::blocklist;
use crate::clock::unix_now;
use crate::server::changes::{Change, Changes, Written};
use crate::server::core::Core;
use crate::server::ledger;
use crate::server::table::{Lifted, Merged};
use crate::wire::protocol::{Ban, Lift};

impl Core {
    /// Merges what the peer `peer` published or paged in group `g`: its unbans first, so
    /// that a ban they lift is not published only to be lifted. Returns how many changed
    /// the table here.
    pub fn merge_from_peer(
        &mut self,
        peer: &str,
        g: usize,
        (bans, lifts): (&[Ban], &[Lift]),
        changes: &mut Changes,
    ) -> usize {
        let now = unix_now();
        let before = changes.announced().count();
        for lift in lifts {
            // A peer is trusted to speak the protocol, not to say anything at all.
            if let Some(why) = lift.implausible(now) {
                let line = format!("peer {peer}: ignored the unban of {}: {why}", lift.ip);
                self.warn_limited(peer, &line);
                continue;
            }
            let renewal = Some(self.ledgers[g].config.min_reporters);
            self.note_lift(g, *lift, renewal, now, changes);
        }
        for ban in bans {
            self.merge_ban(peer, g, ban, now, changes);
        }
        changes.announced().count() - before
    }

    /// One ban a peer published or paged: held to the rules of a report, then merged.
    fn merge_ban(&mut self, peer: &str, g: usize, ban: &Ban, now: u64, changes: &mut Changes) {
        if let Some(why) = ban.implausible(now) {
            let line = format!("peer {peer}: ignored the ban of {}: {why}", ban.ip);
            return self.warn_limited(peer, &line);
        }
        let auth = &self.auth;
        let ledger = ledger::counted(&mut self.ledgers, g);
        let list = blocklist::is_list(ban.prog.as_str());
        let checked =
            self.intake
                .network_refusal(&ledger.config, &ledger.book, list, &ban.ip, |ip| {
                    auth.fleet_host_in(ip)
                });
        if let Err((_, reason)) = checked {
            // A peer is held to the same rules as a host: its word bans nothing here
            // that this server would refuse.
            let prefix = ledger.prefix();
            return log::warn!("{prefix}refused {} from peer {peer}: {reason}", ban.ip);
        }
        let ledger = &mut self.ledgers[g];
        let mut entry = match ledger.book.table.merge(ban, now) {
            Merged::Changed(entry) => entry,
            Merged::Stale(kept) => {
                // The peer has not heard of the unban, and where servers are not a full
                // mesh it may have no other way to: tell it, and everyone.
                changes.write(g, Written::Lift(kept));
                changes.announce(g, Change::Unban(ban.clone(), kept.at));
                return;
            }
            Merged::Unchanged => return,
        };
        // Reports waiting here for it: a peer's ban confirmed it.
        let config = ledger.config.clone();
        if self
            .intake
            .absorb_waiting(&config, &mut ledger.book, &ban.ip, now)
        {
            changes.write(g, ledger.waiting_record(&ban.ip));
            let table = &ledger.book.table;
            entry = table.active_ban(&ban.ip, now).cloned().unwrap_or(entry);
        }
        changes.ban(g, entry);
    }

    /// Takes a dated unban into group `g`'s table and the changes, and returns what
    /// subscribers must hear of it, if anything. `renewal` for a peer's unban: that many hosts' reports here after
    /// it keep the ban (`BanTable::lift`); this server's own unbans lift what they name.
    pub(super) fn note_lift(
        &mut self,
        g: usize,
        lift: Lift,
        renewal: Option<usize>,
        now: u64,
        changes: &mut Changes,
    ) -> Option<Change> {
        let ledger = &mut self.ledgers[g];
        let (change, new) = match ledger.book.table.lift(lift, renewal, now) {
            Lifted::Unchanged => return None,
            Lifted::Removed(entry) => (Some(Change::Unban(entry.ban, lift.at)), true),
            Lifted::Renewed(entry) => {
                log::info!(
                    "{}kept {}: {} reported it here after the unban of {}",
                    ledger.prefix(),
                    lift.ip,
                    entry.ban.origin,
                    lift.at
                );
                let ban = entry.ban.clone();
                changes.write(g, Written::Ban(entry));
                (Some(Change::Ban(ban)), true)
            }
            Lifted::Outlived { entry, new } => (Some(Change::Ban(entry.ban)), new),
            Lifted::Noted => (None, true),
        };
        if new {
            // What the table keeps of it: bounded in time without a ban (`BanTable::lift`).
            let kept = ledger.book.table.lift_of(&lift.ip).unwrap_or(lift);
            changes.write(g, Written::Lift(kept));
        }
        if let Some(change) = &change {
            changes.announce(g, change.clone());
        }
        change
    }
}
