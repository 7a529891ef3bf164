//! The client's Prometheus metrics (`daemon::metrics`): what `banshare status` shows on a
//! host, under `banshare_client_`, and the ban command's latency as a histogram.

use crate::client::apply::Enforcer;
use crate::config::ClientConfig;
use crate::daemon::metrics::{Describe, Endpoint, Out};
use crate::exit::Failure;
use crate::wire::control::ClientStatus;

/// Starts the endpoint when client.toml asks for one.
pub fn start(
    config: &ClientConfig,
    enforcer: &Enforcer,
) -> Result<Option<Endpoint<ClientStatus>>, Failure> {
    let Some(address) = config.metrics_listen else {
        return Ok(None);
    };
    let latency = enforcer.latency.clone();
    let endpoint = Endpoint::start("banshare_client", address, |registry| {
        registry.register(
            "command_seconds",
            "Ban and unban commands (or batches), from start to end",
            latency,
        );
    })?;
    Ok(Some(endpoint))
}

impl Describe for ClientStatus {
    fn describe(&self, out: &mut Out<'_>) -> std::fmt::Result {
        let backend = self.backend.as_str();
        out.labelled_counters(
            ("applied", "Bans and unbans the backend carried out"),
            [
                (
                    vec![("backend", backend), ("action", "ban")],
                    self.applied_bans,
                ),
                (
                    vec![("backend", backend), ("action", "unban")],
                    self.applied_unbans,
                ),
            ],
        )?;
        out.labelled_counters(
            ("failed", "Bans and unbans that failed"),
            [(vec![("backend", backend)], self.failed)],
        )?;
        out.labelled_counters(
            (
                "refused",
                "Bans and unbans the firewall refused for good, not tried again",
            ),
            [(vec![("backend", backend)], self.refused)],
        )?;
        out.counter("resyncs", "Catch-ups completed", self.resyncs)?;
        out.gauge(
            "spool_reports",
            "Reports waiting in the spool",
            self.spool as f64,
        )?;
        out.counter(
            "spool_delivered",
            "Reports delivered from the spool",
            self.spool_delivered,
        )?;
        let servers = &self.servers;
        out.gauges(
            (
                "server_connected",
                "1 when the server was heard within three heartbeats",
                "server",
            ),
            servers
                .iter()
                .map(|s| (s.name.as_str(), f64::from(u8::from(s.connected)))),
        )?;
        out.gauges(
            (
                "seconds_since_heartbeat",
                "Seconds since the server was last heard",
                "server",
            ),
            servers
                .iter()
                .map(|s| (s.name.as_str(), s.seconds_since_heartbeat)),
        )?;
        out.gauges(
            (
                "sequence_lag",
                "Messages of the server not taken in yet",
                "server",
            ),
            servers.iter().map(|s| (s.name.as_str(), s.lag as f64)),
        )?;
        out.gauge(
            "uptime_seconds",
            "Seconds since the client started",
            self.uptime_seconds as f64,
        )
    }
}
