//! The server's Prometheus metrics (`daemon::metrics`): what `banshare status` shows, as
//! counters and gauges under `banshare_server_`, and two histograms that the loop
//! observes: the journal's commits and the requests it answers.

use std::collections::BTreeMap;
use std::time::Duration;

use prometheus_client::metrics::histogram::Histogram;

use crate::config::ServerConfig;
use crate::daemon::metrics::{self, Describe, Endpoint, Out};
use crate::exit::Failure;
use crate::wire::control::Status;

/// What the endpoint shows: the status, and what only the sockets know.
#[derive(Debug, Clone)]
pub struct ServerState {
    pub status: Status,
    /// Connections to the publish socket: subscribers, and peers that follow this server.
    pub subscribers: usize,
    /// Handshakes refused, by reason, on both sockets and by the ZAP handler.
    pub refused_handshakes: BTreeMap<String, u64>,
}

pub struct ServerMetrics {
    pub endpoint: Endpoint<ServerState>,
    /// Each journal commit that wrote something: its flush, and its fsync when
    /// `durability = "fsync"`.
    pub commit: Histogram,
    /// Each request on the report socket, from its receipt to its answer, after the
    /// batch's commit.
    pub request: Histogram,
}

impl ServerMetrics {
    /// Starts the endpoint when server.toml asks for one.
    pub fn start(config: &ServerConfig) -> Result<Option<ServerMetrics>, Failure> {
        let Some(address) = config.metrics_listen else {
            return Ok(None);
        };
        let (commit, request) = (metrics::seconds_histogram(), metrics::seconds_histogram());
        let endpoint = Endpoint::start("banshare_server", address, |registry| {
            registry.register(
                "journal_commit_seconds",
                "Journal commits that wrote something, flush and fsync",
                commit.clone(),
            );
            registry.register(
                "request_seconds",
                "Requests on the report socket, from receipt to answer",
                request.clone(),
            );
        })?;
        Ok(Some(ServerMetrics {
            endpoint,
            commit,
            request,
        }))
    }

    pub fn observe(histogram: Option<&Histogram>, took: Duration) {
        if let Some(histogram) = histogram {
            histogram.observe(took.as_secs_f64());
        }
    }
}

impl Describe for ServerState {
    fn describe(&self, out: &mut Out<'_>) -> std::fmt::Result {
        let status = &self.status;
        let c = &status.counters;
        let refused: u64 = c.refused.values().sum();
        out.counters(
            ("reports", "Requests answered, by verdict", "verdict"),
            [
                ("accepted", c.accepted),
                ("duplicate", c.duplicate),
                ("pending", c.pending),
                ("refused", refused),
                ("invalid", c.invalid),
            ],
        )?;
        let reasons = c.refused.iter().map(|(reason, n)| (reason.as_str(), *n));
        out.counters(
            (
                "refused",
                "Reports and snapshot requests refused, by reason",
                "reason",
            ),
            reasons,
        )?;
        out.counter("published", "Bans and unbans published", c.published)?;
        out.counter("unbans", "Unbans made on this server", c.unbanned)?;
        out.counter(
            "unanswered",
            "Requests left unanswered: revoked or cut-off keys, invalid beyond allowance",
            c.unanswered,
        )?;
        out.counter(
            "cut_off",
            "Keys cut off for breaking the protocol",
            c.cut_off,
        )?;
        out.counter(
            "memory_guard_trips",
            "Times the memory guard closed every connection",
            c.closed_all,
        )?;
        self.describe_tables(out)?;
        out.gauge(
            "authorized_keys",
            "Keys in authorized-keys",
            status.authorized_keys as f64,
        )?;
        out.gauge(
            "subscribers",
            "Connections to the publish socket",
            self.subscribers as f64,
        )?;
        let up = status
            .peers
            .iter()
            .map(|p| (p.name.as_str(), f64::from(u8::from(p.connected))));
        out.gauges(
            (
                "peer_connected",
                "1 when the peer was heard within three heartbeats",
                "peer",
            ),
            up,
        )?;
        let refusals = self
            .refused_handshakes
            .iter()
            .map(|(r, n)| (r.as_str(), *n));
        out.counters(
            (
                "refused_handshakes",
                "Handshakes refused, by reason",
                "reason",
            ),
            refusals,
        )?;
        self.describe_feeds(out)?;
        out.gauge(
            "uptime_seconds",
            "Seconds since the server started",
            status.uptime_seconds as f64,
        )
    }
}

impl ServerState {
    /// Active bans and waiting networks, per group when there are groups.
    fn describe_tables(&self, out: &mut Out<'_>) -> std::fmt::Result {
        let status = &self.status;
        let (active, pending) = (
            ("active_bans", "Active bans, by group", "group"),
            (
                "pending_networks",
                "Networks with reports waiting, by group",
                "group",
            ),
        );
        if status.groups.is_empty() {
            out.gauges(active, [("default", status.active_bans as f64)])?;
            return out.gauges(pending, [("default", status.pending as f64)]);
        }
        let groups = &status.groups;
        out.gauges(
            active,
            groups
                .iter()
                .map(|g| (g.name.as_str(), g.active_bans as f64)),
        )?;
        out.gauges(
            pending,
            groups.iter().map(|g| (g.name.as_str(), g.pending as f64)),
        )
    }
}

impl ServerState {
    /// Each feed: its entries, its last good fetch, and its failed ones.
    fn describe_feeds(&self, out: &mut Out<'_>) -> std::fmt::Result {
        let feeds = &self.status.feeds;
        if feeds.is_empty() {
            return Ok(());
        }
        out.gauges(
            (
                "feed_entries",
                "Entries of each feed's last good copy",
                "feed",
            ),
            feeds.iter().map(|f| (f.name.as_str(), f.entries as f64)),
        )?;
        out.gauges(
            (
                "feed_last_success_timestamp_seconds",
                "Unix time of each feed's last good fetch, 0 for never",
                "feed",
            ),
            feeds
                .iter()
                .map(|f| (f.name.as_str(), f.last_success.unwrap_or(0) as f64)),
        )?;
        out.counters(
            ("feed_failures", "Failed fetches of each feed", "feed"),
            feeds.iter().map(|f| (f.name.as_str(), f.failures)),
        )
    }
}
