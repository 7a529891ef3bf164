//! The report socket: requests are taken in batches and decided by the core, which makes
//! the batch's changes durable with one journal commit (group commit, `carry_out`); only
//! then are they published and the requests answered.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::clock::unix_now;
use crate::exit::Failure;
use crate::server::changes::Changes;
use crate::server::core::{GroupError, Peer};
use crate::server::metrics::ServerMetrics;
use crate::server::table::Page;
use crate::server::zap::Authorizer;
use crate::server::Server;
use crate::sockets::transport::{self, Received};
use crate::wire::cidr::Cidr;
use crate::wire::protocol::{
    decode_request, encode_hello, Request, SnapshotPage, Verdict, MAX_REQUEST_FRAMES, PAGE,
};
use crate::wire::topic::Group;

/// Requests handled before the loop looks at timers and signals again.
const BATCH: usize = 256;
/// Frames before a request on the report socket: the peer's routing id, and the empty
/// delimiter that REQ sockets add.
const ENVELOPE: usize = 2;

/// How long one turn of the loop spends building snapshot pages, after the reports it read
/// were answered: a page of 1,000 bans takes about a millisecond, and 10,000 hosts catching
/// up at once must not hold reports back.
const PAGE_BUDGET: Duration = Duration::from_millis(10);
/// Snapshot requests that may wait for their page; beyond, one is refused and asked again
/// 5 s later. One per host and stream at a time is what clients send.
const MAX_ASKED: usize = 65_536;

/// Snapshot pages asked for and not built yet, oldest first.
#[derive(Default)]
pub struct PageQueue(VecDeque<Asked>);

struct Asked {
    envelope: Vec<Vec<u8>>,
    g: usize,
    after: Option<Cidr>,
    name: String,
}

impl PageQueue {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Why a snapshot page is refused.
#[derive(Debug, thiserror::Error)]
enum NoPage {
    #[error(transparent)]
    Group(#[from] GroupError),
    #[error("{0} asked for more snapshot pages than its allowance")]
    Allowance(String),
    #[error("catching up with its peers; ask again in a few seconds")]
    CatchingUp,
    #[error("{MAX_ASKED} snapshot pages are waiting; ask again in a few seconds")]
    Busy,
}

/// A reply's frames.
type Reply = Vec<Vec<u8>>;

impl Server {
    /// Handles up to BATCH waiting requests, then carries out what they changed before
    /// anything is published or acknowledged (group commit).
    pub(super) fn handle_reports(&mut self) -> Result<(), Failure> {
        let mut replies = Vec::new();
        let mut changes = Changes::default();
        for _ in 0..BATCH {
            let keep = ENVELOPE + MAX_REQUEST_FRAMES;
            match transport::recv_bounded(&self.report.socket, zmq::DONTWAIT, keep) {
                Ok(received) => {
                    let at = Instant::now();
                    let reply = self.handle_report(received, &mut changes);
                    replies.extend(reply.map(|r| (at, r)));
                }
                Err(zmq::Error::EAGAIN) => break,
                Err(e) => {
                    log::error!("report socket: {e}");
                    break;
                }
            }
        }
        self.carry_out(changes)?;
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
    /// what it changed is added to `changes`.
    fn handle_report(&mut self, received: Received, changes: &mut Changes) -> Option<Reply> {
        let split = match received.frames.get(1) {
            Some(delimiter) if delimiter.is_empty() => 2,
            _ => 1,
        };
        let Some(peer) = peer(&self.core.auth, &received, "an unknown address") else {
            // The key was revoked, or cut off, after this connection was made: answer
            // nothing, as the handshake would.
            self.core.intake.counters.unanswered += 1;
            return None;
        };
        self.core.auth.saw(&peer.name);
        let Received { frames, count, .. } = received;
        if count - split > MAX_REQUEST_FRAMES {
            let why = format!(
                "it sent a request of {} frames, where requests have at most {MAX_REQUEST_FRAMES}",
                count - split
            );
            self.core.cut_off(&peer, &why);
            self.close_all = true;
            return None;
        }
        let (envelope, request) = frames.split_at(split.min(frames.len()));
        let core = &mut self.core;
        let (verdict, legacy) = match decode_request(request) {
            Ok(Request::Snapshot { after, group }) => match self.snapshot(&peer, group.as_ref()) {
                Ok(g) => {
                    // Built once the batch's reports are answered (`serve_pages`).
                    self.pages.0.push_back(Asked {
                        envelope: envelope.to_vec(),
                        g,
                        after,
                        name: peer.name,
                    });
                    return None;
                }
                Err(refused) => (Verdict::Refused(refused.to_string()), false),
            },
            Ok(Request::Report(report)) => (core.report(&report, &peer, changes), false),
            Ok(Request::Forward { line, group }) => {
                let via = self.peers.peer_named(&peer.key);
                let from = (&peer, via);
                (core.forwarded(&line, group.as_ref(), from, changes), false)
            }
            Ok(Request::Legacy(report)) => (core.report(&report, &peer, changes), true),
            Ok(Request::Hello) => return Some(reply(envelope, encode_hello())),
            Err(_) if !core.intake.answer_invalid(&peer.name) => return None,
            Err(invalid) => {
                let line = format!("invalid request from {peer}: {}", invalid.reason);
                core.warn_limited(&peer.name, &line);
                (Verdict::Invalid(invalid.reason), invalid.legacy)
            }
        };
        let encoded = match legacy {
            true => verdict.encode_legacy(),
            false => verdict.encode(),
        };
        Some(reply(envelope, encoded))
    }

    /// Whether `peer` may have a snapshot page of `group` now, and of which ledger.
    fn snapshot(&mut self, peer: &Peer, group: Option<&Group>) -> Result<usize, NoPage> {
        let g = self.core.ledger_named(group)?;
        if !self.core.allow_snapshot(&peer.name, group) {
            let refused = NoPage::Allowance(peer.name.clone());
            let line = format!("refused a snapshot page to {peer}: {refused}");
            self.core.warn_limited(&peer.name, &line);
            return Err(refused);
        }
        if !self.peers.settled() && !self.peers.is_peer(&peer.key) {
            // Peers are answered at once, or two servers starting together would each
            // wait for the other.
            return Err(NoPage::CatchingUp);
        }
        if self.pages.0.len() >= MAX_ASKED {
            return Err(NoPage::Busy);
        }
        Ok(g)
    }

    /// Sends the snapshot pages waiting, oldest first, for PAGE_BUDGET at most; the loop
    /// comes back at once while some wait.
    pub(super) fn serve_pages(&mut self) {
        let started = Instant::now();
        while started.elapsed() < PAGE_BUDGET {
            let Some(asked) = self.pages.0.pop_front() else {
                return;
            };
            let page = self.page(asked.g, asked.after, &asked.name);
            if let Err(e) = self
                .report
                .socket
                .send_multipart(reply(&asked.envelope, page), zmq::DONTWAIT)
            {
                log::warn!("cannot send a snapshot page to {}: {e}", asked.name);
            }
        }
    }

    /// Group `g`'s snapshot page after `after`, at the sequence published so far: built
    /// when it is sent, so that its position matches what was published before it.
    fn page(&self, g: usize, after: Option<Cidr>, name: &str) -> Reply {
        let ledger = &self.core.ledgers[g];
        let page = ledger.book.table.page(after.as_ref(), PAGE, unix_now());
        let Page { bans, lifts, next } = page;
        log::debug!("snapshot page of {} bans for {name}", bans.len());
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
        page.encode()
    }
}

/// The envelope, then the answer.
fn reply(envelope: &[Vec<u8>], answer: Reply) -> Reply {
    envelope.iter().cloned().chain(answer).collect()
}

/// Who sent a message, if its key is still authorized and not cut off; `unknown` stands
/// for an address libzmq did not give.
pub(super) fn peer(auth: &Authorizer, received: &Received, unknown: &str) -> Option<Peer> {
    let user = received.sender.user.as_deref().unwrap_or_default();
    let (name, key) = auth.lookup(user)?;
    let address = received.sender.address.clone();
    Some(Peer {
        name,
        key,
        address: address.unwrap_or_else(|| unknown.into()),
    })
}
