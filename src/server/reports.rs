//! The report socket: requests are taken in batches, decided by `intake`, made durable with
//! one journal commit (group commit), and only then published and answered.

use std::time::Instant;

use crate::clock::unix_now;
use crate::exit::Failure;
use crate::server::intake::{Decision, Forwarded, Policy, Sender};
use crate::server::ledger::{self, Ledger};
use crate::server::merge::{Change, Changes};
use crate::server::metrics::ServerMetrics;
use crate::server::policy::confirm::PendingSet;
use crate::server::table::Page;
use crate::server::{store_failure, Peer, Server, CUT_OFF};
use crate::sockets::transport::{self, Received};
use crate::store::Record;
use crate::wire::cidr::Cidr;
use crate::wire::protocol::{
    bantime_text, decode_request, Report, Request, SnapshotPage, Verdict, MAX_REQUEST_FRAMES, PAGE,
};
use crate::wire::topic::Group;

/// Who said what, for the log: the report, the key's name, and the key with its address.
pub(super) struct Said {
    pub what: String,
    pub key: String,
    pub from: String,
}

/// Requests handled before the loop looks at timers and signals again.
const BATCH: usize = 256;
/// Frames before a request on the report socket: the peer's routing id, and the empty
/// delimiter that REQ sockets add.
const ENVELOPE: usize = 2;

impl Server {
    /// Handles up to BATCH waiting reports, then makes the accepted ones durable with one
    /// commit before anything is published or acknowledged (group commit).
    pub(super) fn handle_reports(&mut self) -> Result<(), Failure> {
        let mut replies = Vec::new();
        let mut changes = Vec::new();
        for _ in 0..BATCH {
            let keep = ENVELOPE + MAX_REQUEST_FRAMES;
            match transport::recv_bounded(&self.report.socket, zmq::DONTWAIT, keep) {
                Ok(received) => {
                    let at = Instant::now();
                    let reply = self.handle_report(received, &mut changes)?;
                    replies.extend(reply.map(|r| (at, r)));
                }
                Err(zmq::Error::EAGAIN) => break,
                Err(e) => {
                    log::error!("report socket: {e}");
                    break;
                }
            }
        }
        self.commit()?;
        self.publish(changes);
        let histogram = self.metrics.as_ref().map(|m| &m.request);
        for (at, reply) in replies {
            if let Err(e) = self.report.socket.send_multipart(reply, zmq::DONTWAIT) {
                log::warn!("cannot answer a reporter: {e}");
            }
            ServerMetrics::observe(histogram, at.elapsed());
        }
        if std::mem::take(&mut self.close_all) {
            self.close_all_connections()?;
        }
        Ok(())
    }

    /// Answers one request. Frames are the ROUTER envelope (peer id, and the empty
    /// delimiter that REQ sockets add) followed by the request. Returns the reply, if any;
    /// what it changed is appended to the store and to `changes`.
    fn handle_report(
        &mut self,
        received: Received,
        changes: &mut Changes,
    ) -> Result<Option<Vec<Vec<u8>>>, Failure> {
        let split = match received.frames.get(1) {
            Some(delimiter) if delimiter.is_empty() => 2,
            _ => 1,
        };
        let Some(peer) = self.peer(&received, "an unknown address") else {
            // The key was revoked, or cut off, after this connection was made: answer
            // nothing, as the handshake would.
            self.intake.counters.unanswered += 1;
            return Ok(None);
        };
        self.auth.saw(&peer.name);
        let Received { frames, count, .. } = received;
        if count - split > MAX_REQUEST_FRAMES {
            let why = format!(
                "it sent a request of {} frames, where requests have at most {MAX_REQUEST_FRAMES}",
                count - split
            );
            self.cut_off(&peer, &why);
            self.close_all = true;
            return Ok(None);
        }
        let (envelope, request) = frames.split_at(split.min(frames.len()));
        let (verdict, legacy) = match decode_request(request) {
            Ok(Request::Snapshot { group, .. }) if self.ledger_named(group.as_ref()).is_err() => {
                let reason = self.ledger_named(group.as_ref()).unwrap_err();
                (Verdict::Refused(reason), false)
            }
            Ok(Request::Snapshot { group, .. })
                if !self.allow_snapshot(&peer.name, group.as_ref()) =>
            {
                let reason = format!(
                    "{} asked for more snapshot pages than its allowance",
                    peer.name
                );
                let line = format!("refused a snapshot page to {peer}: {reason}");
                self.warn_limited(&peer.name, &line);
                (Verdict::Refused(reason), false)
            }
            Ok(Request::Snapshot { .. })
                if !self.peers.settled() && !self.peers.is_peer(&peer.key) =>
            {
                // Peers are answered at once, or two servers starting together would each
                // wait for the other.
                let reason = "catching up with its peers; ask again in a few seconds";
                (Verdict::Refused(reason.into()), false)
            }
            Ok(Request::Snapshot { after, group }) => {
                let g = self.ledger_named(group.as_ref()).expect("checked above");
                let ledger = &self.ledgers[g];
                let page = ledger.book.table.page(after.as_ref(), PAGE, unix_now());
                let Page { bans, lifts, next } = page;
                log::debug!("snapshot page of {} bans for {}", bans.len(), peer.name);
                let (epoch, seq) = self.publisher.position(g);
                let page = SnapshotPage {
                    topic: ledger.topic.clone(),
                    epoch,
                    seq,
                    next,
                    bans,
                    lifts,
                    unreadable: Vec::new(),
                };
                return Ok(Some(
                    envelope.iter().cloned().chain(page.encode()).collect(),
                ));
            }
            Ok(Request::Report(report)) => (self.decide(&report, &peer, changes)?, false),
            Ok(Request::Forward { line, group }) => {
                let verdict = self.take_forwarded(&line, group.as_ref(), &peer, changes)?;
                (verdict, false)
            }
            Ok(Request::Legacy(report)) => (self.decide(&report, &peer, changes)?, true),
            Err(_) if !self.intake.answer_invalid(&peer.name) => return Ok(None),
            Err(invalid) => {
                let line = format!("invalid request from {peer}: {}", invalid.reason);
                self.warn_limited(&peer.name, &line);
                (Verdict::Invalid(invalid.reason), invalid.legacy)
            }
        };
        let reply = if legacy {
            verdict.encode_legacy()
        } else {
            verdict.encode()
        };
        Ok(Some(envelope.iter().cloned().chain(reply).collect()))
    }

    /// The ledger of the group a snapshot request names; none names the default group.
    /// The error is the reason to refuse it.
    fn ledger_named(&self, group: Option<&Group>) -> Result<usize, String> {
        let Some(group) = group else {
            return Ok(0);
        };
        if self.ledgers[0].topic.group.is_none() {
            return Err(format!(
                "this server has no groups, and so no group {group}"
            ));
        }
        let found = self.ledgers.iter().position(|l| &l.group.name == group);
        found.ok_or_else(|| format!("this server has no group {group}"))
    }

    /// Whether `name` may have another snapshot page of the group it asks for: each group
    /// has its allowance, as each is a catch-up of its own.
    fn allow_snapshot(&mut self, name: &str, group: Option<&Group>) -> bool {
        let g = self.ledger_named(group).unwrap_or(0);
        let bans = self.ledgers[g].book.table.len();
        match group {
            Some(group) => self.intake.allow_snapshot(&format!("{name}/{group}"), bans),
            None => self.intake.allow_snapshot(name, bans),
        }
    }

    /// Who sent a message, if its key is still authorized and not cut off; `unknown`
    /// stands for an address libzmq did not give.
    pub(super) fn peer(&self, received: &Received, unknown: &str) -> Option<Peer> {
        let user = received.sender.user.as_deref().unwrap_or_default();
        let (name, key) = self.auth.lookup(user)?;
        let address = received.sender.address.clone();
        Some(Peer {
            name,
            key,
            address: address.unwrap_or_else(|| unknown.into()),
        })
    }

    /// Decides a report, journals what it changed and logs it.
    fn decide(
        &mut self,
        report: &Report,
        peer: &Peer,
        changes: &mut Changes,
    ) -> Result<Verdict, Failure> {
        let (prog, jail) = (report.prog.as_str(), report.jail.as_str());
        let g = ledger::route(&self.ledgers, prog, jail, &peer.name);
        let auth = &self.auth;
        let ledger = ledger::counted(&mut self.ledgers, g);
        let from = Sender {
            name: &peer.name,
            key: Some(peer.key),
        };
        let decision = self.intake.decide(
            &ledger.config,
            &mut ledger.book,
            report,
            from,
            |ip| auth.fleet_host_in(ip),
            unix_now(),
        );
        let said = Said {
            what: format!("{} ({prog} {jail})", report.ip),
            key: peer.name.clone(),
            from: peer.to_string(),
        };
        self.forward_waiting(g, &decision);
        self.settle(g, &said, decision, changes)
    }

    /// A report that now waits here is forwarded to the peers (`forward`).
    fn forward_waiting(&mut self, g: usize, decision: &Decision) {
        if let Decision::Pending(ip, ..) = decision {
            let ledger = &self.ledgers[g];
            if let Some(set) = ledger.book.pending.get(ip) {
                let group = ledger.topic.group.as_ref();
                self.peers.forward(&set.forward_lines(), group);
            }
        }
    }

    /// A report a peer forwards, in `group` (or the default group): only peers may, and
    /// what they forward is decided like a report, but never forwarded again.
    fn take_forwarded(
        &mut self,
        line: &str,
        group: Option<&Group>,
        peer: &Peer,
        changes: &mut Changes,
    ) -> Result<Verdict, Failure> {
        let Some(via) = self.peers.peer_named(&peer.key).map(str::to_owned) else {
            let reason = format!(
                "{} is not a peer server; only peers forward reports",
                peer.name
            );
            self.warn_limited(
                &peer.name,
                &format!("refused a forwarded report from {peer}: {reason}"),
            );
            return Ok(Verdict::Refused(reason));
        };
        let fields: Vec<&str> = line.split(' ').collect();
        let set = match PendingSet::decode(&fields) {
            Ok(set) => set,
            Err(reason) => return Ok(Verdict::Invalid(format!("bad forwarded report: {reason}"))),
        };
        let g = match self.ledger_named(group) {
            Ok(g) => g,
            Err(reason) => {
                let line = format!("refused a forwarded report from {peer}: {reason}");
                self.warn_limited(&peer.name, &line);
                return Ok(Verdict::Refused(reason));
            }
        };
        let auth = &self.auth;
        let said = Said {
            what: format!("{} (forwarded)", set.ip),
            key: peer.name.clone(),
            from: format!("peer {}", peer.name),
        };
        let ledger = ledger::counted(&mut self.ledgers, g);
        let forwarded = Forwarded {
            set,
            via: &via,
            name_for: &|key| auth.name_for(key),
            key_named: &|name| auth.key_named(name),
        };
        let decision = self.intake.take_forwarded(
            &ledger.config,
            &mut ledger.book,
            forwarded,
            |ip| auth.fleet_host_in(ip),
            unix_now(),
        );
        self.settle(g, &said, decision, changes)
    }

    /// Lets through the reports held beyond their keys' allowances, as these refill
    /// (`policy::confirm`): journaled, committed and published like reports.
    pub(super) fn release_held(&mut self) -> Result<(), Failure> {
        for g in 0..self.ledgers.len() {
            let auth = &self.auth;
            let ledger = ledger::counted(&mut self.ledgers, g);
            if ledger.book.pending.is_empty() {
                continue;
            }
            let released = self.intake.release_held(
                &ledger.config,
                &mut ledger.book,
                |ip| auth.fleet_host_in(ip),
                unix_now(),
            );
            self.settle_all(g, released, "held", "its key's refilled allowance")?;
        }
        Ok(())
    }

    /// After a reload: bans what waited and is confirmed now (a lower `min-reporters`).
    pub(super) fn confirm_waiting(&mut self) -> Result<(), Failure> {
        for g in 0..self.ledgers.len() {
            let ledger = ledger::counted(&mut self.ledgers, g);
            let confirmed =
                self.intake
                    .confirm_waiting(&ledger.config, &mut ledger.book, unix_now());
            self.settle_all(g, confirmed, "waiting", "the reports that waited for it")?;
        }
        Ok(())
    }

    /// Settles what was decided for waiting reports, not for a request: `kind` names them
    /// in the log, `from` says what moved them. Committed and published as a batch.
    fn settle_all(
        &mut self,
        g: usize,
        decided: Vec<(Cidr, Decision)>,
        kind: &str,
        from: &str,
    ) -> Result<(), Failure> {
        if decided.is_empty() {
            return Ok(());
        }
        let mut changes = Vec::new();
        for (ip, decision) in decided {
            self.forward_waiting(g, &decision);
            let said = Said {
                what: format!("{ip} ({kind})"),
                key: kind.into(),
                from: from.into(),
            };
            self.settle(g, &said, decision, &mut changes)?;
            // Refused, or still waiting: the journal says what waits now.
            self.journal_waiting(g, &ip)?;
        }
        self.commit()?;
        self.publish(changes);
        Ok(())
    }

    /// Journals the reports waiting for `ip` in group `g` as they now stand, or that none
    /// does.
    pub(super) fn journal_waiting(&mut self, g: usize, ip: &Cidr) -> Result<(), Failure> {
        self.ledgers[g].journal_waiting(ip).map_err(store_failure)
    }

    /// Makes what a batch changed durable, in every group: the ban table, then the
    /// waiting reports.
    pub(super) fn commit(&mut self) -> Result<(), Failure> {
        for ledger in &mut self.ledgers {
            ledger.settle_expired().map_err(store_failure)?;
        }
        let writes = self.ledgers.iter().any(Ledger::has_pending);
        let started = Instant::now();
        for ledger in &mut self.ledgers {
            ledger.commit().map_err(store_failure)?;
        }
        if writes {
            let histogram = self.metrics.as_ref().map(|m| &m.commit);
            ServerMetrics::observe(histogram, started.elapsed());
        }
        Ok(())
    }

    /// Journals what a decision changed, logs it, and says what to answer.
    pub(super) fn settle(
        &mut self,
        g: usize,
        said: &Said,
        decision: Decision,
        changes: &mut Changes,
    ) -> Result<Verdict, Failure> {
        let Said { what, key, from } = said;
        let group = self.ledgers[g].prefix();
        match decision {
            Decision::Refused(reason) => {
                let line = format!("{group}refused {what} from {from}: {reason}");
                self.warn_limited(key, &line);
                Ok(Verdict::Refused(reason))
            }
            Decision::Pending(ip, reason, policy) => {
                self.journal_waiting(g, &ip)?;
                let line = format!(
                    "{group}pending {what} from {from}: {reason}{}",
                    policy.suffix()
                );
                // A wave beyond a key's allowance must not flood the log either.
                self.log_limited(log::Level::Info, key, &line);
                Ok(Verdict::Pending(reason))
            }
            Decision::Duplicate(changed, policy) => {
                // A new reporter is part of the audit trail: journaled with the batch.
                if let Some(entry) = &changed {
                    self.ledgers[g].store.append(entry).map_err(store_failure)?;
                }
                self.forget_waiting(g, &policy)?;
                let note = policy.suffix();
                log::info!("{group}duplicate {what} from {key}{note}");
                Ok(Verdict::Duplicate)
            }
            Decision::Accepted(entry, policy) => {
                let ban = &entry.ban;
                let note = policy.suffix();
                // The audit trail: every accepted ban, once, with where it came from.
                log::info!(
                    "{group}accepted {} ({} {}) from {from}, bantime {}{note}",
                    ban.ip,
                    ban.prog,
                    ban.jail,
                    bantime_text(ban.bantime)
                );
                self.ledgers[g]
                    .store
                    .append(&entry)
                    .map_err(store_failure)?;
                self.forget_waiting(g, &policy)?;
                changes.push((g, Change::Ban(entry.ban.clone())));
                self.lift_absorbed(g, &entry.ban.ip, &policy.absorbed, changes)?;
                Ok(Verdict::Accepted)
            }
        }
    }

    /// Journals that the reports waiting for a network were taken into its ban.
    fn forget_waiting(&mut self, g: usize, policy: &Policy) -> Result<(), Failure> {
        match &policy.waited {
            Some(ip) => self.journal_waiting(g, ip),
            None => Ok(()),
        }
    }

    /// Lifts the bans that a wider one just accepted replaces (`policy::aggregate`), after
    /// it in the journal and on the wire, so that no host is ever without either.
    fn lift_absorbed(
        &mut self,
        g: usize,
        by: &Cidr,
        absorbed: &[Cidr],
        changes: &mut Changes,
    ) -> Result<(), Failure> {
        let now = unix_now();
        for ip in absorbed {
            let Some(lift) = self.ledgers[g].book.table.unban_now(ip, now) else {
                continue;
            };
            if let Some(change) = self.note_lift(g, lift, None, now)? {
                log::info!(
                    "{}lifted {ip}: the ban of {by} replaces it",
                    self.ledgers[g].prefix()
                );
                changes.push((g, change));
            }
        }
        Ok(())
    }

    /// Refuses a key for CUT_OFF, in the handshake and on connections already open, and
    /// says so once; the caller then closes every connection, which ends the key's own.
    pub(super) fn cut_off(&mut self, peer: &Peer, why: &str) {
        self.auth.cut_off(peer.key, Instant::now() + CUT_OFF);
        self.intake.counters.cut_off += 1;
        log::warn!(
            "cut off {peer} for {} minutes: {why}; its connections are closed",
            CUT_OFF.as_secs() / 60
        );
    }

    /// A warning about a key, unless that key has had its share of lines this minute: a
    /// flood of bad reports must not fill the disk with the log.
    pub(super) fn warn_limited(&mut self, name: &str, line: &str) {
        self.log_limited(log::Level::Warn, name, line);
    }

    fn log_limited(&mut self, level: log::Level, name: &str, line: &str) {
        match self.log_limit.admit(name, Instant::now()) {
            Some(0) => log::log!(level, "{line}"),
            Some(held_back) => {
                log::log!(
                    level,
                    "{line} ({held_back} more lines about {name} were held back)"
                );
            }
            None => {}
        }
    }
}
