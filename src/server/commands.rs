//! The control socket's commands, from `banshare` on the server's host: `unban`, which
//! lifts a ban fleet-wide, `bans` and `status`.

use crate::clock::unix_now;
use crate::exit::Failure;
use crate::server::ledger::Ledger;
use crate::server::merge::{Change, Changes};
use crate::server::store_failure;
use crate::server::table::Entry;
use crate::server::Server;
use crate::wire::cidr::Cidr;
use crate::wire::control::{
    self, BanView, Command, Counters, EpisodeView, GroupView, HostSeen, PendingView, ReporterView,
    Status, WaitingView,
};

impl Server {
    /// One request from `banshare` on the control socket.
    pub(super) fn handle_command(&mut self) -> Result<(), Failure> {
        let Ok(frames) = self.control.recv_multipart(zmq::DONTWAIT) else {
            return Ok(());
        };
        let reply = match Command::decode(&frames) {
            Ok(Command::Unban(ip)) => self.unban(&ip)?,
            Ok(Command::UnbanOrigin(name)) => Ok(self.unban_origin(&name)?),
            Ok(Command::Import { origin, reports }) => self
                .import(&origin, &reports)?
                .map(|summary| to_json(&summary)),
            Ok(Command::Bans) => Ok(to_json(&self.bans(unix_now()))),
            Ok(Command::Pending) => Ok(to_json(&self.pending())),
            Ok(Command::Status) => Ok(to_json(&self.status())),
            Err(e) => Err(e),
        };
        if let Err(e) = self
            .control
            .send_multipart(control::encode_reply(&reply), 0)
        {
            log::warn!("cannot answer on the control socket: {e}");
        }
        Ok(())
    }

    /// Lifts a ban fleet-wide, in every group that holds it: a dated unban, journaled,
    /// then published as UNBAN to the clients and the peers alike. The reports waiting for
    /// it go too: a false positive caught while it waits.
    fn unban(&mut self, ip: &Cidr) -> Result<Result<String, String>, Failure> {
        let now = unix_now();
        let mut dropped = Vec::new();
        let mut changes: Changes = Vec::new();
        let mut expired = false;
        for g in 0..self.ledgers.len() {
            let ledger = &mut self.ledgers[g];
            if let Some(set) = ledger.book.pending.take(ip) {
                ledger.journal_waiting(ip).map_err(store_failure)?;
                dropped.extend(set.reports.iter().map(|w| w.name.to_string()));
            }
            expired |= ledger.book.table.contains(ip);
            let Some(lift) = self.ledgers[g].book.table.unban_now(ip, now) else {
                continue;
            };
            changes.extend(self.note_lift(g, lift, None, now)?.map(|c| (g, c)));
        }
        self.commit()?;
        if !dropped.is_empty() {
            log::info!(
                "dropped the reports waiting for {ip}, from {}",
                dropped.join(", ")
            );
        }
        if changes.is_empty() {
            return Ok(match (dropped.is_empty(), expired) {
                (false, _) => Ok(format!(
                    "{ip} was not banned; dropped the reports waiting for it here"
                )),
                (true, true) => Err(format!("{ip} is not banned (its ban expired)")),
                (true, false) => Err(format!("{ip} is not banned")),
            });
        }
        self.intake.counters.unbanned += 1;
        let origins: Vec<String> = changes
            .iter()
            .filter_map(|(_, change)| match change {
                Change::Unban(ban, _) => Some(ban.origin.to_string()),
                Change::Ban(_) => None,
            })
            .collect();
        let seq = self.publish(changes).unwrap_or_default();
        log::info!(
            "unbanned {ip} (reported by {}); published as seq {seq}",
            origins.join(", ")
        );
        Ok(Ok(format!(
            "unbanned {ip}; every client runs its unban command"
        )))
    }

    /// Lifts, fleet-wide, every ban that host `name` alone reported, and drops its waiting
    /// reports: the clean-up after its key was revoked. A ban another host reported too
    /// stays, since one host's word must not shorten another's ban; the answer counts them.
    fn unban_origin(&mut self, name: &str) -> Result<String, Failure> {
        let now = unix_now();
        let mut changes: Changes = Vec::new();
        let (mut lifted, mut kept, mut dropped) = (0u64, 0, 0);
        for g in 0..self.ledgers.len() {
            let ledger = &mut self.ledgers[g];
            for ip in ledger.book.pending.drop_reports_of(name) {
                ledger.journal_waiting(&ip).map_err(store_failure)?;
                dropped += 1;
            }
            let mut theirs = Vec::new();
            for entry in ledger.book.table.active(now) {
                match entry.reporters.only(name) {
                    true => theirs.push(entry.ban.ip),
                    false => kept += usize::from(entry.reporters.includes(name)),
                }
            }
            for ip in theirs {
                let Some(lift) = self.ledgers[g].book.table.unban_now(&ip, now) else {
                    continue;
                };
                if let Some(change) = self.note_lift(g, lift, None, now)? {
                    lifted += 1;
                    changes.push((g, change));
                }
            }
        }
        self.commit()?;
        self.intake.counters.unbanned += lifted;
        let seq = self.publish(changes);
        let summary = format!(
            "unbanned {lifted} bans that only {name} reported; kept {kept} that other hosts \
             reported too; dropped {dropped} of its waiting reports"
        );
        let published = seq.map_or(String::new(), |seq| format!("; published up to seq {seq}"));
        log::info!("{summary}{published}");
        Ok(summary)
    }

    /// After a reload: lifts, fleet-wide, every ban that the server would now refuse,
    /// because a network was added to `protected` or `min-prefix` was narrowed, with a line
    /// for each. Otherwise such bans would stay in force until they expire.
    pub(super) fn lift_never_banned(&mut self) -> Result<(), Failure> {
        let now = unix_now();
        let mut changes: Changes = Vec::new();
        for g in 0..self.ledgers.len() {
            let auth = &self.auth;
            let ledger = &self.ledgers[g];
            let refused: Vec<(Cidr, String)> = ledger
                .book
                .table
                .active(now)
                .filter_map(|e| {
                    let ip = e.ban.ip;
                    let refusal = self
                        .intake
                        .never_banned(&ledger.config, &ip, |ip| auth.fleet_host_in(ip));
                    refusal.err().map(|(_, why)| (ip, why))
                })
                .collect();
            for (ip, why) in refused {
                let Some(lift) = self.ledgers[g].book.table.unban_now(&ip, now) else {
                    continue;
                };
                if let Some(change) = self.note_lift(g, lift, None, now)? {
                    if let Change::Unban(ban, _) = &change {
                        let prefix = self.ledgers[g].prefix();
                        log::info!("{prefix}lifted {ip} (reported by {}): {why}", ban.origin);
                    }
                    changes.push((g, change));
                }
            }
        }
        self.commit()?;
        self.intake.counters.unbanned += changes.len() as u64;
        self.publish(changes);
        Ok(())
    }

    /// Every active ban, in every group, with every host that reported it.
    fn bans(&self, now: u64) -> Vec<BanView> {
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
    fn pending(&self) -> Vec<PendingView> {
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

    pub(super) fn status(&self) -> Status {
        let now = unix_now();
        let (epoch, seq) = self.publisher.position(0);
        let active = |l: &Ledger| l.book.table.active(now).count();
        let groups = self.ledgers.iter().enumerate().filter_map(|(g, ledger)| {
            Some(GroupView {
                active_bans: active(ledger),
                dry_run: ledger.topic.dry_run,
                name: group_name(ledger)?,
                pending: ledger.book.pending.len(),
                seq: self.publisher.position(g).1,
            })
        });
        Status {
            active_bans: self.ledgers.iter().map(active).sum(),
            authorized_keys: self.auth.count(),
            counters: Counters {
                published: self.publisher.published(),
                ..self.intake.counters.clone()
            },
            epoch,
            groups: groups.collect(),
            pending: self.ledgers.iter().map(|l| l.book.pending.len()).sum(),
            peers: self.peers.views(),
            hosts: self
                .auth
                .hosts_seen()
                .into_iter()
                .map(|(name, at)| HostSeen {
                    last_seen: at,
                    name,
                    seconds_ago: now.saturating_sub(at),
                })
                .collect(),
            role: "server".into(),
            seq,
            uptime_seconds: self.started.elapsed().as_secs(),
            version: env!("CARGO_PKG_VERSION").into(),
        }
    }
}

/// The group's name for `banshare bans` and `status`: none without groups.
fn group_name(ledger: &Ledger) -> Option<String> {
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

/// These structs have only string keys, so writing them cannot fail.
fn to_json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).expect("JSON of plain structs")
}
