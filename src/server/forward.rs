//! Forwarding waiting reports to the peer servers (docs/ha.md, "Policies across
//! servers"): a report that waits here for confirmation, or is held beyond its key's
//! allowance, is sent to every peer as a FORWARD request, so that K hosts confirm a ban
//! whichever servers they reported to. Each peer has an outbox, delivered one request at a
//! time and sent again every REQUEST_TIMEOUT (5 s) until the peer answers: a peer that is
//! down gets everything once it is back. A peer stores what it is forwarded, and never
//! forwards it further, so nothing loops.

use std::collections::VecDeque;
use std::time::Instant;

use crate::schedule::{Schedule, Step};
use crate::sockets::request::{Asked, Requester};
use crate::sockets::upstream::{requester, Target};
use crate::wire::follow::REQUEST_TIMEOUT;
use crate::wire::keys::KeyPair;
use crate::wire::protocol::{encode_forward, Verdict};
use crate::wire::topic::Group;

/// The most requests an outbox keeps for a peer that is away; the oldest go first. Each
/// key holds at most 10,000 reports, so this is a wave from ten hosts at once.
const MAX_OUTBOX: usize = 100_000;

pub struct Forwarder {
    pub target: Target,
    /// Each waiting report as its journal line, with its group (none without groups).
    outbox: VecDeque<(String, Option<Group>)>,
    /// The schedule of the request in flight, the first of the outbox: sent again on a new
    /// socket every REQUEST_TIMEOUT until the peer answers.
    schedule: Option<Schedule>,
    /// The socket it went on.
    asked: Asked,
    /// Requests dropped from a full outbox since the last log line.
    dropped: usize,
}

impl Forwarder {
    pub fn new(target: Target) -> Forwarder {
        Forwarder {
            target,
            outbox: VecDeque::new(),
            schedule: None,
            asked: Asked::default(),
            dropped: 0,
        }
    }

    pub fn push(&mut self, line: String, group: Option<Group>) {
        if self.outbox.len() >= MAX_OUTBOX {
            // Not the one in flight.
            self.outbox.remove(1);
            self.dropped += 1;
        }
        self.outbox.push_back((line, group));
    }

    pub fn poll_items(&self) -> impl Iterator<Item = zmq::PollItem<'_>> {
        self.asked.poll_items()
    }

    /// Takes the answer that came, which delivers the request in flight. True when a reply
    /// had more frames than a verdict has (see `Upstream::take_oversized`).
    pub fn read(&mut self) -> bool {
        let answered = self.asked.answer();
        let oversized = self.asked.take_oversized();
        let Some(answer) = answered else {
            return oversized;
        };
        self.schedule = None;
        let (line, _) = self.outbox.pop_front().unwrap_or_default();
        match Verdict::decode(&answer.frames) {
            Ok(Verdict::Invalid(reason) | Verdict::Refused(reason)) => log::warn!(
                "peer {} did not take the forwarded report {line:?}: {reason}",
                self.target.name
            ),
            Ok(_) => {}
            Err(e) => log::warn!("bad answer from peer {}: {e}", self.target.name),
        }
        oversized
    }

    /// Sends the first request of the outbox when none is in flight, or again on a new
    /// socket when its answer is overdue, so that a late answer to the old one is never
    /// taken for the new one's.
    pub fn drive(&mut self, ctx: &zmq::Context, own: &KeyPair) {
        if self.dropped > 0 {
            log::warn!(
                "peer {} is away: dropped {} forwarded reports from its full outbox",
                self.target.name,
                self.dropped
            );
            self.dropped = 0;
        }
        let Some((line, group)) = self.outbox.front() else {
            return;
        };
        let now = Instant::now();
        let schedule = self
            .schedule
            .get_or_insert_with(|| Schedule::in_turn(1, 0, REQUEST_TIMEOUT, now));
        let Step::Ask { server, alone } = schedule.step(now) else {
            return;
        };
        match requester(ctx, &self.target, own) {
            Ok(socket) => {
                let request = encode_forward(line, group.as_ref());
                let requester = Requester::new(ctx, socket);
                self.asked.send(server, requester, &request, alone);
            }
            Err(e) => log::error!("{}: {e}", self.target.report_endpoint()),
        }
    }
}
