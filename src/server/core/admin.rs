//! What an admin asks with `banshare` on the server's host: `unban` lifts a ban fleet-wide,
//! `unban --origin` lifts what one host alone reported; a reload lifts what is now never
//! banned; `bans` and `pending` show the ledgers.

use crate::blocklist;
use crate::clock::unix_now;
use crate::server::changes::{Change, Changes};
use crate::server::core::Core;
use crate::server::ledger::Ledger;
use crate::server::table::Entry;
use crate::wire::cidr::Cidr;
use crate::wire::control::{BanView, EpisodeView, PendingView, ReporterView, WaitingView};

/// The answer to a command, and the line that logs it once its changes are published (the
/// shell adds how far the sequence went).
#[derive(Debug, PartialEq, Eq)]
pub struct Answer {
    pub reply: Result<String, String>,
    pub log: Option<String>,
}

impl Core {
    /// Lifts a ban fleet-wide, in every group that holds it: a dated unban, published as
    /// UNBAN to the clients and the peers alike. The reports waiting for it go too: a false
    /// positive caught while it waits.
    pub fn unban(&mut self, ip: &Cidr, changes: &mut Changes) -> Answer {
        let now = unix_now();
        let mut dropped = Vec::new();
        let (mut origins, mut changed) = (Vec::new(), false);
        let mut expired = false;
        for g in 0..self.ledgers.len() {
            let ledger = &mut self.ledgers[g];
            if let Some(set) = ledger.book.pending.take(ip) {
                changes.write(g, ledger.waiting_record(ip));
                dropped.extend(set.reports.iter().map(|w| w.name.to_string()));
            }
            expired |= ledger.book.table.contains(ip);
            let Some(lift) = ledger.book.table.unban_now(ip, now) else {
                continue;
            };
            let change = self.note_lift(g, lift, None, now, changes);
            changed |= change.is_some();
            if let Some(Change::Unban(ban, _)) = change {
                origins.push(ban.origin.to_string());
            }
        }
        if !dropped.is_empty() {
            let from = dropped.join(", ");
            log::info!("dropped the reports waiting for {ip}, from {from}");
        }
        if !changed {
            let reply = match (dropped.is_empty(), expired) {
                (false, _) => Ok(format!(
                    "{ip} was not banned; dropped the reports waiting for it here"
                )),
                (true, true) => Err(format!("{ip} is not banned (its ban expired)")),
                (true, false) => Err(format!("{ip} is not banned")),
            };
            return Answer { reply, log: None };
        }
        self.intake.counters.unbanned += 1;
        Answer {
            reply: Ok(format!(
                "unbanned {ip}; every client runs its unban command"
            )),
            log: Some(format!(
                "unbanned {ip} (reported by {})",
                origins.join(", ")
            )),
        }
    }

    /// Lifts, fleet-wide, every ban that host `name` alone reported, and drops its waiting
    /// reports: the clean-up after its key was revoked. A ban another host reported too
    /// stays, since one host's word must not shorten another's ban; the answer counts them.
    pub fn unban_origin(&mut self, name: &str, changes: &mut Changes) -> Answer {
        let mut dropped = 0;
        for g in 0..self.ledgers.len() {
            let ledger = &mut self.ledgers[g];
            for ip in ledger.book.pending.drop_reports_of(name) {
                changes.write(g, ledger.waiting_record(&ip));
                dropped += 1;
            }
        }
        let (lifted, kept) = self.lift_reported_only_by(name, |_| true, changes);
        let summary = format!(
            "unbanned {lifted} bans that only {name} reported; kept {kept} that other hosts \
             reported too; dropped {dropped} of its waiting reports"
        );
        Answer {
            log: Some(summary.clone()),
            reply: Ok(summary),
        }
    }

    /// Lifts, fleet-wide, the active bans of the networks `which` picks that `name` alone
    /// reported: those of a revoked host, or those a feed no longer lists. Returns how many
    /// were lifted, and how many `name` reported with others, which stay.
    pub fn lift_reported_only_by(
        &mut self,
        name: &str,
        which: impl Fn(&Cidr) -> bool,
        changes: &mut Changes,
    ) -> (u64, usize) {
        let now = unix_now();
        let (mut lifted, mut kept) = (0u64, 0);
        for g in 0..self.ledgers.len() {
            let mut theirs = Vec::new();
            for entry in self.ledgers[g].book.table.active(now) {
                if !which(&entry.ban.ip) {
                    continue;
                }
                match entry.reporters.only(name) {
                    true => theirs.push(entry.ban.ip),
                    false => kept += usize::from(entry.reporters.includes(name)),
                }
            }
            for ip in theirs {
                lifted += u64::from(self.unban_here(g, &ip, now, changes).is_some());
            }
        }
        self.intake.counters.unbanned += lifted;
        (lifted, kept)
    }

    /// Whether `ip` has no active ban that lasts until `at`, in any group: a feed renews it.
    pub fn ends_before(&self, ip: &Cidr, at: u64) -> bool {
        let now = unix_now();
        !self.ledgers.iter().any(|l| {
            l.book
                .table
                .active_ban(ip, now)
                .is_some_and(|e| e.ban.expires.is_none_or(|end| end >= at))
        })
    }

    /// After a reload: lifts, fleet-wide, every ban that the server would now refuse,
    /// because a network was added to `protected` or `min-prefix` (`import-min-prefix` for a
    /// blocklist's) was narrowed, with a line
    /// for each. Otherwise such bans would stay in force until they expire.
    pub fn lift_never_banned(&mut self, changes: &mut Changes) {
        let now = unix_now();
        for g in 0..self.ledgers.len() {
            let auth = &self.auth;
            let ledger = &self.ledgers[g];
            let refused: Vec<(Cidr, String)> = ledger
                .book
                .table
                .active(now)
                .filter_map(|e| {
                    let ip = e.ban.ip;
                    let list = blocklist::is_list(e.ban.prog.as_str());
                    let refusal = self
                        .intake
                        .never_banned(&ledger.config, list, &ip, |ip| auth.fleet_host_in(ip));
                    refusal.err().map(|(_, why)| (ip, why))
                })
                .collect();
            for (ip, why) in refused {
                if let Some(Change::Unban(ban, _)) = self.unban_here(g, &ip, now, changes) {
                    let prefix = self.ledgers[g].prefix();
                    log::info!("{prefix}lifted {ip} (reported by {}): {why}", ban.origin);
                    self.intake.counters.unbanned += 1;
                }
            }
        }
    }

    /// Lifts `ip` in group `g` now, by this server's word; what subscribers must hear of
    /// it, if anything.
    fn unban_here(
        &mut self,
        g: usize,
        ip: &Cidr,
        now: u64,
        changes: &mut Changes,
    ) -> Option<Change> {
        let lift = self.ledgers[g].book.table.unban_now(ip, now)?;
        self.note_lift(g, lift, None, now, changes)
    }

    /// Every active ban, in every group, with every host that reported it.
    pub fn bans(&self, now: u64) -> Vec<BanView> {
        let views = self.ledgers.iter().flat_map(|ledger| {
            let group = group_name(ledger);
            let table = &ledger.book.table;
            table.active(now).map(move |e| BanView {
                group: group.clone(),
                ..view(e)
            })
        });
        views.collect()
    }

    /// Every network with reports waiting, in every group, with each report.
    pub fn pending(&self) -> Vec<PendingView> {
        let views = self.ledgers.iter().flat_map(|ledger| {
            let needed = ledger.config.min_reporters;
            let group = group_name(ledger);
            ledger.book.pending.sets().map(move |set| PendingView {
                group: group.clone(),
                ip: set.ip.to_string(),
                needed,
                reports: set
                    .reports
                    .iter()
                    .map(|w| WaitingView {
                        at: w.at,
                        bantime: w.bantime,
                        held: w.held,
                        jail: w.jail.to_string(),
                        name: w.name.to_string(),
                        prog: w.prog.to_string(),
                        until: w.until,
                    })
                    .collect(),
            })
        });
        views.collect()
    }
}

/// The group's name for `banshare bans` and `status`: none without groups.
pub fn group_name(ledger: &Ledger) -> Option<String> {
    ledger.topic.group.as_ref().map(ToString::to_string)
}

fn view(entry: &Entry) -> BanView {
    let ban = &entry.ban;
    BanView {
        group: None,
        bantime: ban.bantime,
        expires: ban.expires,
        first_report: entry.first_report(),
        ip: ban.ip.to_string(),
        jail: ban.jail.to_string(),
        last_report: entry.last_report(),
        more_reporters: entry.reporters.more,
        origin: ban.origin.to_string(),
        prog: ban.prog.to_string(),
        reporters: entry
            .reporters
            .iter()
            .map(|r| ReporterView {
                first_report: r.first,
                last_report: r.last,
                name: r.name.to_string(),
            })
            .collect(),
        history: entry
            .history
            .iter()
            .map(|e| EpisodeView {
                at: e.at,
                name: e.name.to_string(),
            })
            .collect(),
    }
}
