//! The report socket: requests are taken in batches, decided by `intake`, made durable with
//! one journal commit (group commit), and only then published and answered.

use std::time::Instant;

use crate::clock::unix_now;
use crate::exit::Failure;
use crate::server::intake::Decision;
use crate::server::merge::Change;
use crate::server::table::Page;
use crate::server::{store_failure, Peer, Server, CUT_OFF};
use crate::wire::cidr::Cidr;
use crate::wire::protocol::{
    decode_request, Report, Request, SnapshotPage, Verdict, MAX_REQUEST_FRAMES, PAGE,
};
use crate::wire::transport::{self, Received};

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
                Ok(received) => replies.extend(self.handle_report(received, &mut changes)?),
                Err(zmq::Error::EAGAIN) => break,
                Err(e) => {
                    log::error!("report socket: {e}");
                    break;
                }
            }
        }
        self.store.commit().map_err(store_failure)?;
        self.publish(changes);
        for reply in replies {
            if let Err(e) = self.report.socket.send_multipart(reply, zmq::DONTWAIT) {
                log::warn!("cannot answer a reporter: {e}");
            }
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
        changes: &mut Vec<Change>,
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
            Ok(Request::Snapshot { .. })
                if !self.intake.allow_snapshot(&peer.name, self.table.len()) =>
            {
                let reason = format!(
                    "{} asked for more snapshot pages than its allowance",
                    peer.name
                );
                let line = format!("refused a snapshot page to {peer}: {reason}");
                self.warn_limited(&peer, &line);
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
            Ok(Request::Snapshot { after }) => {
                let Page { bans, lifts, next } = self.table.page(after.as_ref(), PAGE, unix_now());
                log::debug!("snapshot page of {} bans for {}", bans.len(), peer.name);
                let (epoch, seq) = self.publisher.position();
                let page = SnapshotPage {
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
            Ok(Request::Legacy(report)) => (self.decide(&report, &peer, changes)?, true),
            Err(_) if !self.intake.answer_invalid(&peer.name) => return Ok(None),
            Err(invalid) => {
                let line = format!("invalid request from {peer}: {}", invalid.reason);
                self.warn_limited(&peer, &line);
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
        changes: &mut Vec<Change>,
    ) -> Result<Verdict, Failure> {
        let auth = &self.auth;
        let now = unix_now();
        let decision = self.intake.decide(
            &self.config,
            &mut self.table,
            report,
            &peer.name,
            |ip| auth.fleet_host_in(ip),
            now,
        );
        let (ip, prog, jail) = (&report.ip, &report.prog, &report.jail);
        match decision {
            Decision::Refused(reason) => {
                let line = format!("refused {ip} ({prog} {jail}) from {peer}: {reason}");
                self.warn_limited(peer, &line);
                Ok(Verdict::Refused(reason))
            }
            Decision::Duplicate(changed, policy) => {
                // A new reporter is part of the audit trail: journaled with the batch.
                if let Some(entry) = changed {
                    self.store.append(&entry).map_err(store_failure)?;
                }
                let note = policy.suffix();
                log::info!("duplicate {ip} ({prog} {jail}) from {}{note}", peer.name);
                Ok(Verdict::Duplicate)
            }
            Decision::Accepted(entry, policy) => {
                let ban = &entry.ban;
                let note = policy.suffix();
                // The audit trail: every accepted ban, once, with where it came from.
                log::info!(
                    "accepted {} ({} {}) from {peer}, bantime {}{note}",
                    ban.ip,
                    ban.prog,
                    ban.jail,
                    ban.bantime.map_or("permanent".into(), |b| format!("{b}s"))
                );
                self.store.append(&entry).map_err(store_failure)?;
                changes.push(Change::Ban(entry.ban.clone()));
                self.lift_absorbed(&entry.ban.ip, &policy.absorbed, now, changes)?;
                Ok(Verdict::Accepted)
            }
        }
    }

    /// Lifts the bans that a wider one just accepted replaces (`policy::aggregate`), after
    /// it in the journal and on the wire, so that no host is ever without either.
    fn lift_absorbed(
        &mut self,
        by: &Cidr,
        absorbed: &[Cidr],
        now: u64,
        changes: &mut Vec<Change>,
    ) -> Result<(), Failure> {
        for ip in absorbed {
            let Some(lift) = self.table.unban_now(ip, now) else {
                continue;
            };
            if let Some(change) = self.note_lift(lift, now)? {
                log::info!("lifted {ip}: the ban of {by} replaces it");
                changes.push(change);
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

    /// A warning about a peer, unless that peer has had its share of lines this minute: a
    /// flood of bad reports must not fill the disk with the log.
    fn warn_limited(&mut self, peer: &Peer, line: &str) {
        match self.log_limit.admit(&peer.name, Instant::now()) {
            Some(0) => log::warn!("{line}"),
            Some(held_back) => log::warn!(
                "{line} ({held_back} more lines about {} were held back)",
                peer.name
            ),
            None => {}
        }
    }
}
