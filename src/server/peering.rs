//! The other servers of the fleet. This server follows each peer as a client follows a
//! server (`sockets::upstream`): its publish socket live, its snapshot pages at start, after a
//! gap, a new epoch or a silence. What it hears is merged by the core (`core::merge`), and
//! only what changed the table is published here, so nothing loops between peers. docs/ha.md
//! says why the merge converges.

use std::time::{Duration, Instant};

use crate::clock::unix_now;
use crate::config::ServerConfig;
use crate::exit::{Exit, Failure};
use crate::server::changes::Changes;
use crate::server::forward::Forwarder;
use crate::server::Server;
use crate::sockets::upstream::{Heard, Target, Upstream};
use crate::wire::control::PeerView;
use crate::wire::follow::Next;
use crate::wire::keys::{self, KeyPair, PublicKey};
use crate::wire::protocol::{Lift, Publish};
use crate::wire::topic::Group;

/// How long after its start a server answers snapshot requests from hosts even though it
/// has not caught up with every peer: a peer may be down, and the fleet needs a server.
pub const SETTLE: Duration = Duration::from_secs(10);

/// The peers' links, in the order server.toml lists them, and what is forwarded to each.
pub struct Peers {
    pub links: Vec<Upstream>,
    pub forwarders: Vec<Forwarder>,
    started: Instant,
}

impl Peers {
    /// Follows every peer in `groups`, this server's own (None: it has none, and follows
    /// each peer's one stream).
    pub fn open(
        ctx: &zmq::Context,
        config: &ServerConfig,
        own: &KeyPair,
        groups: Option<Vec<Group>>,
    ) -> Result<Peers, Failure> {
        let (mut links, mut forwarders) = (Vec::new(), Vec::new());
        for peer in &config.peers {
            let target = Target {
                name: peer.name(),
                host: peer.address.clone(),
                report_port: peer.report_port,
                publish_port: peer.publish_port,
                key: keys::load_public(&peer.key)?,
            };
            let address = target.publish_endpoint();
            let fail = |e| Exit::Config.with(format!("cannot connect to peer {address}: {e}"));
            forwarders.push(Forwarder::new(target.clone()));
            links.push(Upstream::open(ctx, target, own, groups.clone()).map_err(fail)?);
        }
        Ok(Peers {
            links,
            forwarders,
            started: Instant::now(),
        })
    }

    /// Sends every line, each a report waiting in `group`, to every peer (`forward`).
    pub fn forward(&mut self, lines: &[String], group: Option<&Group>) {
        for forwarder in &mut self.forwarders {
            for line in lines {
                forwarder.push(line.clone(), group.cloned());
            }
        }
    }

    /// Whether this server has read every peer's table since it started, or waited long
    /// enough: until then, a server whose journal is old would hand hosts bans that were
    /// lifted while it was away.
    pub fn settled(&self) -> bool {
        self.started.elapsed() >= SETTLE || self.links.iter().all(Upstream::synced)
    }

    pub fn is_peer(&self, key: &PublicKey) -> bool {
        self.peer_named(key).is_some()
    }

    /// The name of the peer server whose key is `key`, as server.toml lists it.
    pub fn peer_named(&self, key: &PublicKey) -> Option<&str> {
        let link = self.links.iter().find(|l| &l.target.key == key)?;
        Some(&link.target.name)
    }

    pub fn views(&self) -> Vec<PeerView> {
        let now = unix_now();
        self.links
            .iter()
            .map(|link| {
                // That of the default group, the first.
                let position = link.streams.first().and_then(|s| s.follower.position());
                PeerView {
                    address: link.target.publish_endpoint(),
                    connected: link.is_live(Instant::now()),
                    epoch: position.map(|(e, _)| e),
                    last_heard: link.heard_at,
                    name: link.target.name.clone(),
                    seconds_ago: link.heard_at.map(|at| now.saturating_sub(at)),
                    seq: position.map(|(_, s)| s),
                    synced: link.synced(),
                }
            })
            .collect()
    }
}

impl Server {
    /// Reads what every peer sent, merges it, carries out what changed, and asks for the
    /// snapshot pages due.
    pub(super) fn handle_peers(&mut self) -> Result<(), Failure> {
        let mut changes = Changes::default();
        for i in 0..self.peers.links.len() {
            let heard = self.peers.links[i].read();
            if self.peers.links[i].take_oversized() {
                self.guard.release();
            }
            for item in heard {
                self.take_from_peer(i, item, &mut changes);
            }
            let link = &mut self.peers.links[i];
            if let Some(silent) = link.silence(Instant::now()) {
                log::warn!(
                    "no heartbeat from peer {} for {} s; will catch up",
                    link.target.name,
                    silent.as_secs()
                );
            }
            link.retry_if_refused(&self.ctx, &self.key);
            link.drive(&self.ctx, &self.key);
        }
        self.carry_out(changes)?;
        for forwarder in &mut self.peers.forwarders {
            if forwarder.read() {
                self.guard.release();
            }
            forwarder.drive(&self.ctx, &self.key);
        }
        Ok(())
    }

    fn take_from_peer(&mut self, i: usize, heard: Heard, changes: &mut Changes) {
        let name = self.peers.links[i].target.name.clone();
        let topic = match &heard {
            Heard::Message(topic, _) => Some(topic),
            Heard::Page(page) => Some(&page.topic),
            Heard::Bad(_) => None,
        };
        let g = match topic.map(|t| self.core.ledger_of(t)) {
            Some(Ok(g)) => g,
            Some(Err(why)) => {
                return self
                    .core
                    .warn_limited(&name, &format!("peer {name}: {why}"));
            }
            None => 0,
        };
        let core = &mut self.core;
        match heard {
            Heard::Message(_, Publish::Heartbeat { .. }) => {}
            Heard::Message(_, Publish::Ban { ban, .. }) => {
                core.merge_from_peer(&name, g, (&[ban], &[]), changes);
            }
            Heard::Message(_, Publish::Unban { ban, lifted, .. }) => {
                // From a server before dated unbans: it lifted exactly that ban.
                let lift = Lift {
                    ip: ban.ip,
                    at: lifted.unwrap_or(ban.reported),
                    until: ban.expires,
                };
                core.merge_from_peer(&name, g, (&[], &[lift]), changes);
            }
            Heard::Page(page) => {
                let link = &mut self.peers.links[i];
                let Some(s) = link.stream_for(&page.topic) else {
                    return;
                };
                let Some(next) = link.streams[s].follower.take_page(&page) else {
                    return;
                };
                let changed = core.merge_from_peer(&name, g, (&page.bans, &page.lifts), changes);
                match next {
                    Next::Page(after) => link.request_page(s, Some(&after)),
                    Next::Done(resync) => {
                        link.streams[s].synced = true;
                        log::info!(
                            "caught up with peer {}: {} bans in {} pages ({} ms)",
                            link.streams[s].follower.name(),
                            resync.active.len(),
                            resync.pages,
                            resync.started.elapsed().as_millis()
                        );
                    }
                }
                if changed > 0 {
                    log::debug!("{changed} changes from peer {name}'s snapshot page");
                }
            }
            Heard::Bad(line) => core.warn_limited(&name, &format!("peer {name}: {line}")),
        }
    }
}
