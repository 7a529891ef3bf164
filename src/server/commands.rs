//! The control socket's commands, from `banshare` on the server's host: the core decides
//! `unban`, `unban --origin` and `import`, and shows `bans` and `pending`; the shell
//! carries out what they changed before it answers. `status` is the whole server's.

use crate::clock::unix_now;
use crate::exit::Failure;
use crate::server::changes::Changes;
use crate::server::core::{group_name, Answer};
use crate::server::ledger::Ledger;
use crate::server::Server;
use crate::wire::control::{self, Command, Counters, GroupView, HostSeen, ImportSummary, Status};

impl Server {
    /// One request from `banshare` on the control socket.
    pub(super) fn handle_command(&mut self) -> Result<(), Failure> {
        let Ok(frames) = self.control.recv_multipart(zmq::DONTWAIT) else {
            return Ok(());
        };
        let mut changes = Changes::default();
        let core = &mut self.core;
        let answer = match Command::decode(&frames) {
            Ok(Command::Unban(ip)) => core.unban(&ip, &mut changes),
            Ok(Command::UnbanOrigin(name)) => core.unban_origin(&name, &mut changes),
            Ok(Command::Import { origin, reports }) => {
                match core.import(&origin, &reports, &mut changes) {
                    Ok(summary) => Answer {
                        reply: Ok(to_json(&summary)),
                        log: Some(imported(&origin, &summary)),
                    },
                    Err(refused) => quiet(Err(refused.to_string())),
                }
            }
            Ok(Command::Bans) => quiet(Ok(to_json(&core.bans(unix_now())))),
            Ok(Command::Pending) => quiet(Ok(to_json(&core.pending()))),
            Ok(Command::Status) => quiet(Ok(to_json(&self.status()))),
            Err(e) => quiet(Err(e.to_string())),
        };
        let seq = self.carry_out(changes)?;
        if let Some(line) = answer.log {
            let published = seq.map_or(String::new(), |seq| format!("; published up to seq {seq}"));
            log::info!("{line}{published}");
        }
        let reply = control::encode_reply(&answer.reply);
        if let Err(e) = self.control.send_multipart(reply, 0) {
            log::warn!("cannot answer on the control socket: {e}");
        }
        Ok(())
    }

    pub(super) fn status(&self) -> Status {
        let now = unix_now();
        let (epoch, seq) = self.publisher.position(0);
        let core = &self.core;
        let active = |l: &Ledger| l.book.table.active(now).count();
        let groups = core.ledgers.iter().enumerate().filter_map(|(g, ledger)| {
            Some(GroupView {
                active_bans: active(ledger),
                dry_run: ledger.topic.dry_run,
                name: group_name(ledger)?,
                pending: ledger.book.pending.len(),
                seq: self.publisher.position(g).1,
            })
        });
        Status {
            active_bans: core.ledgers.iter().map(active).sum(),
            authorized_keys: core.auth.count(),
            counters: Counters {
                published: self.publisher.published(),
                ..core.intake.counters.clone()
            },
            epoch,
            groups: groups.collect(),
            feeds: self.feeds.views(),
            pending: core.ledgers.iter().map(|l| l.book.pending.len()).sum(),
            peers: self.peers.views(),
            hosts: core
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

/// An answer that changed nothing worth a line.
fn quiet(reply: Result<String, String>) -> Answer {
    Answer { reply, log: None }
}

/// The import's line in the log.
fn imported(origin: &str, summary: &ImportSummary) -> String {
    let refused: u64 = summary.refused.values().sum();
    format!(
        "import as {origin}: {} accepted, {} duplicates, {refused} refused",
        summary.accepted, summary.duplicate
    )
}

/// These structs have only string keys, so writing them cannot fail.
fn to_json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).expect("JSON of plain structs")
}
