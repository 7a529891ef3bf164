//! Forwarding waiting reports to the peer servers (docs/ha.md, "Policies across
//! servers"): a report that waits here for confirmation, or is held beyond its key's
//! allowance, is sent to every peer as a FORWARD request, so that K hosts confirm a ban
//! whichever servers they reported to. Each peer has an outbox, delivered one request at a
//! time and sent again every REQUEST_TIMEOUT (5 s) until the peer answers: a peer that is
//! down gets everything once it is back. A peer stores what it is forwarded, and never
//! forwards it further, so nothing loops.

use std::collections::VecDeque;
use std::time::Instant;

use crate::sockets::transport;
use crate::sockets::upstream::{
    reply_body, requester, send_request, within_bounds, Target, VERDICT_FRAMES,
};
use crate::wire::follow::REQUEST_TIMEOUT;
use crate::wire::keys::KeyPair;
use crate::wire::protocol::{encode_forward, Verdict};
use crate::wire::topic::Group;

/// The most requests an outbox keeps for a peer that is away; the oldest go first. Each
/// key holds at most 10,000 reports, so this is a wave from ten hosts at once.
const MAX_OUTBOX: usize = 100_000;

pub struct Forwarder {
    pub target: Target,
    socket: zmq::Socket,
    /// Each waiting report as its journal line, with its group (none without groups).
    outbox: VecDeque<(String, Option<Group>)>,
    /// When the first request of the outbox was sent, while it waits for its answer.
    sent_at: Option<Instant>,
    /// Requests dropped from a full outbox since the last log line.
    dropped: usize,
}

impl Forwarder {
    pub fn open(ctx: &zmq::Context, target: Target, own: &KeyPair) -> zmq::Result<Forwarder> {
        Ok(Forwarder {
            socket: requester(ctx, &target, own)?,
            target,
            outbox: VecDeque::new(),
            sent_at: None,
            dropped: 0,
        })
    }

    pub fn push(&mut self, line: String, group: Option<Group>) {
        if self.outbox.len() >= MAX_OUTBOX {
            // Not the one in flight.
            self.outbox.remove(1);
            self.dropped += 1;
        }
        self.outbox.push_back((line, group));
    }

    pub fn poll_item(&self) -> zmq::PollItem<'_> {
        self.socket.as_poll_item(zmq::POLLIN)
    }

    /// Takes the answers that came: each one delivers the request in flight. True when
    /// one had more frames than a verdict has (see `Upstream::take_oversized`).
    pub fn read(&mut self) -> bool {
        let mut oversized = false;
        while let Ok(received) =
            transport::recv_bounded(&self.socket, zmq::DONTWAIT, VERDICT_FRAMES)
        {
            oversized |= received.oversized();
            let verdict = within_bounds(&received)
                .and_then(reply_body)
                .and_then(Verdict::decode);
            if self.sent_at.take().is_none() {
                continue;
            }
            let (line, _) = self.outbox.pop_front().unwrap_or_default();
            match verdict {
                Ok(Verdict::Invalid(reason) | Verdict::Refused(reason)) => log::warn!(
                    "peer {} did not take the forwarded report {line:?}: {reason}",
                    self.target.name
                ),
                Ok(_) => {}
                Err(e) => log::warn!("bad answer from peer {}: {e}", self.target.name),
            }
        }
        oversized
    }

    /// Sends the next request when none is in flight, or the one in flight again when its
    /// answer is overdue.
    pub fn drive(&mut self, ctx: &zmq::Context, own: &KeyPair) {
        if self.dropped > 0 {
            log::warn!(
                "peer {} is away: dropped {} forwarded reports from its full outbox",
                self.target.name,
                self.dropped
            );
            self.dropped = 0;
        }
        // Sent again on a new socket, so that a late answer to the old one is never taken
        // for the new one's.
        let overdue = self
            .sent_at
            .is_some_and(|at| at.elapsed() >= REQUEST_TIMEOUT);
        if overdue {
            match requester(ctx, &self.target, own) {
                Ok(socket) => self.socket = socket,
                Err(e) => log::error!("{}: {e}", self.target.report_endpoint()),
            }
        }
        if self.sent_at.is_some() && !overdue {
            return;
        }
        let Some((line, group)) = self.outbox.front() else {
            self.sent_at = None;
            return;
        };
        if send_request(&self.socket, encode_forward(line, group.as_ref())).is_ok() {
            self.sent_at = Some(Instant::now());
        }
    }
}
