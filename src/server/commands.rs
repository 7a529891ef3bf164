//! The control socket's commands, from `banshare` on the server's host: `unban`, which
//! lifts a ban fleet-wide, `bans` and `status`.

use crate::clock::unix_now;
use crate::exit::Failure;
use crate::server::merge::Change;
use crate::server::table::{BanTable, Entry};
use crate::server::{store_failure, Server};
use crate::wire::cidr::Cidr;
use crate::wire::control::{
    self, BanView, Command, Counters, EpisodeView, HostSeen, PendingView, ReporterView, Status,
    WaitingView,
};

impl Server {
    /// One request from `banshare` on the control socket.
    pub(super) fn handle_command(&mut self) -> Result<(), Failure> {
        let Ok(frames) = self.control.recv_multipart(zmq::DONTWAIT) else {
            return Ok(());
        };
        let reply = match Command::decode(&frames) {
            Ok(Command::Unban(ip)) => self.unban(&ip)?,
            Ok(Command::Bans) => Ok(to_json(&bans(&self.table, unix_now()))),
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

    /// Lifts a ban fleet-wide: a dated unban, journaled, then published as UNBAN to the
    /// clients and the peers alike.
    fn unban(&mut self, ip: &Cidr) -> Result<Result<String, String>, Failure> {
        let now = unix_now();
        if let Some(set) = self.intake.take_pending(ip) {
            // A false positive caught while it waits: nothing to lift, its reports go.
            self.journal_waiting(ip)?;
            self.commit()?;
            let names: Vec<&str> = set.reports.iter().map(|w| w.name.as_str()).collect();
            log::info!(
                "dropped the reports waiting for {ip}, from {}",
                names.join(", ")
            );
            if self.table.unban_now(ip, now).is_none() {
                return Ok(Ok(format!(
                    "{ip} was not banned; dropped the reports waiting for it here"
                )));
            }
        }
        let Some(lift) = self.table.unban_now(ip, now) else {
            return Ok(Err(if self.table.contains(ip) {
                format!("{ip} is not banned (its ban expired)")
            } else {
                format!("{ip} is not banned")
            }));
        };
        let change = self.note_lift(lift, now)?;
        self.store.commit().map_err(store_failure)?;
        self.intake.counters.unbanned += 1;
        let origin = match &change {
            Some(Change::Unban(ban, _)) => ban.origin.to_string(),
            _ => "?".into(),
        };
        let seq = self
            .publish(change.into_iter().collect())
            .unwrap_or_default();
        log::info!("unbanned {ip} (reported by {origin}); published as seq {seq}");
        Ok(Ok(format!(
            "unbanned {ip}; every client runs its unban command"
        )))
    }

    /// After a reload: lifts, fleet-wide, every ban that the server would now refuse,
    /// because a network was added to `protected` or `min-prefix` was narrowed, with a line
    /// for each. Otherwise such bans would stay in force until they expire.
    pub(super) fn lift_never_banned(&mut self) -> Result<(), Failure> {
        let now = unix_now();
        let auth = &self.auth;
        let refused: Vec<(Cidr, String)> = self
            .table
            .active(now)
            .filter_map(|e| {
                let ip = e.ban.ip;
                let refusal = self
                    .intake
                    .never_banned(&self.config, &ip, |ip| auth.fleet_host_in(ip));
                refusal.err().map(|(_, why)| (ip, why))
            })
            .collect();
        let mut changes = Vec::new();
        for (ip, why) in refused {
            let Some(lift) = self.table.unban_now(&ip, now) else {
                continue;
            };
            if let Some(change) = self.note_lift(lift, now)? {
                if let Change::Unban(ban, _) = &change {
                    log::info!("lifted {ip} (reported by {}): {why}", ban.origin);
                }
                changes.push(change);
            }
        }
        self.store.commit().map_err(store_failure)?;
        self.intake.counters.unbanned += changes.len() as u64;
        self.publish(changes);
        Ok(())
    }

    /// Every network with reports waiting, with each report.
    fn pending(&self) -> Vec<PendingView> {
        let needed = self.config.min_reporters;
        let views = self.intake.pending().sets().map(|set| PendingView {
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
        });
        views.collect()
    }

    fn status(&self) -> Status {
        let now = unix_now();
        let (epoch, seq) = self.publisher.position();
        Status {
            active_bans: self.table.active(now).count(),
            authorized_keys: self.auth.count(),
            counters: Counters {
                published: self.publisher.published(),
                ..self.intake.counters.clone()
            },
            epoch,
            pending: self.intake.pending().len(),
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
            seq,
            uptime_seconds: self.started.elapsed().as_secs(),
            version: env!("CARGO_PKG_VERSION").into(),
        }
    }
}

/// Every active ban, with every host that reported it.
fn bans(table: &BanTable, now: u64) -> Vec<BanView> {
    table.active(now).map(view).collect()
}

fn view(entry: &Entry) -> BanView {
    let ban = &entry.ban;
    BanView {
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
