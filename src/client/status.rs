//! What banshare-client says about itself: `banshare status` on its control socket
//! (`control-socket`, in the client's runtime directory, root's only), and the same
//! state for its metrics endpoint (`client::metrics`).

use std::time::Instant;

use crate::client::Client;
use crate::clock::unix_now;
use crate::sockets::upstream::Upstream;
use crate::wire::control::{self, ClientStatus, Command, FollowedView};

/// Whether each server is connected, and since when (Unix time).
#[derive(Debug, Default)]
pub struct Links {
    states: Vec<(bool, u64)>,
}

impl Links {
    /// Notes each server's state now; a change of servers (a reload) starts afresh.
    pub fn track(&mut self, servers: &[Upstream], now: Instant) {
        let unix = unix_now();
        if self.states.len() != servers.len() {
            self.states = servers.iter().map(|s| (s.is_live(now), unix)).collect();
        }
        for (state, server) in self.states.iter_mut().zip(servers) {
            let live = server.is_live(now);
            if state.0 != live {
                *state = (live, unix);
            }
        }
    }

    fn since(&self, i: usize) -> u64 {
        self.states.get(i).map_or_else(unix_now, |s| s.1)
    }
}

impl Client {
    pub(super) fn status(&self) -> ClientStatus {
        let tally = &self.enforcer.tally;
        let now = Instant::now();
        let servers = self.servers.iter().enumerate();
        ClientStatus {
            applied_bans: tally.bans,
            applied_unbans: tally.unbans,
            backend: format!("{:?}", self.config.backend).to_lowercase(),
            failed: tally.failed,
            refused: tally.refused,
            last_error: tally.last_error.as_ref().map(|(_, what)| what.clone()),
            last_error_at: tally.last_error.as_ref().map(|(at, _)| *at),
            resyncs: self.resyncs,
            role: "client".into(),
            servers: servers.map(|(i, s)| self.followed(i, s, now)).collect(),
            spool: self.courier.depth(),
            spool_delivered: self.courier.delivered,
            uptime_seconds: self.started.elapsed().as_secs(),
            version: env!("CARGO_PKG_VERSION").into(),
        }
    }

    fn followed(&self, i: usize, server: &Upstream, now: Instant) -> FollowedView {
        let position = server.streams.first().and_then(|s| s.follower.position());
        let silent = server.streams.iter().map(|s| s.follower.silent_for(now));
        FollowedView {
            address: server.target.publish_endpoint(),
            connected: server.is_live(now),
            epoch: position.map(|(e, _)| e),
            seq: position.map(|(_, s)| s),
            lag: server.streams.iter().map(|s| s.follower.lag()).sum(),
            last_heard: server.heard_at,
            name: server.target.name.clone(),
            seconds_since_heartbeat: silent.min().unwrap_or_default().as_secs_f64(),
            since: self.links.since(i),
        }
    }

    /// One request on the control socket: STATUS. The server's commands are refused, with
    /// where to ask instead.
    pub(super) fn handle_command(&self) {
        let Ok(frames) = self.control.recv_multipart(zmq::DONTWAIT) else {
            return;
        };
        let reply = match Command::decode(&frames) {
            Ok(Command::Status) => serde_json::to_string(&self.status())
                .map_err(|e| format!("cannot write the status: {e}")),
            Ok(_) => Err("this is banshare-client's control socket: bans, unban and \
                          --pending are the server's (use --config /etc/banshare/server.toml \
                          on a server)"
                .into()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = self
            .control
            .send_multipart(control::encode_reply(&reply), 0)
        {
            log::warn!("cannot answer on the control socket: {e}");
        }
    }

    /// Keeps track of the links, and copies the state for the metrics endpoint once a
    /// second when it is on.
    pub(super) fn refresh(&mut self, now: Instant) {
        self.links.track(&self.servers, now);
        if self.metrics.as_mut().is_some_and(|m| m.due(now)) {
            let status = self.status();
            if let Some(metrics) = &self.metrics {
                metrics.put(status);
            }
        }
    }
}
