//! server.toml: what `banshare-server` reads, and its checks.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{
    check_host, check_metrics, check_min_prefix, check_ports, default_list_min_prefix,
    default_log_level, list_min_prefix, located, min_prefix_for, parse, read, ConfigError,
    LogLevel, MinPrefix,
};
use crate::config::duration::{HumanDuration, MaxBantime};
use crate::config::feeds::{self, FeedConfig};
use crate::config::groups::{self, GroupConfig};
use crate::wire::cidr::Cidr;
use crate::wire::protocol::MAX_BANTIME;

/// Where the server's control socket is, unless server.toml says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/banshare/control.sock";

/// How far an acknowledged report is guaranteed to have reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// fdatasync before acknowledging: survives a power cut.
    Fsync,
    /// write(2) before acknowledging: survives `kill -9` and crashes of the server, not of
    /// the machine.
    Write,
}

/// The furthest back `recidive-window` may reach: the server keeps the history of a
/// network's bans this long at most.
pub const MAX_RECIDIVE_WINDOW: u64 = 366 * 86400;

/// The most keys `min-reporters` may ask for: as many as a ban keeps by name.
pub const MAX_MIN_REPORTERS: usize = 16;

pub const DEFAULT_SERVER_CONFIG: &str = "/etc/banshare/server.toml";

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to bind both sockets to; "::" listens on IPv6 (and IPv4 where the system allows).
    #[serde(default = "default_listen")]
    pub listen: IpAddr,
    pub report_port: u16,
    pub publish_port: u16,
    /// The server's `.key_secret` file.
    #[serde(default = "default_server_key")]
    pub key: PathBuf,
    /// Directory of `NAME.key` public key files, one per host allowed in.
    #[serde(default = "default_authorized_keys")]
    pub authorized_keys: PathBuf,
    #[serde(default = "default_dedup_window")]
    pub dedup_window: HumanDuration,
    /// Bans for reports that give no bantime.
    #[serde(default = "default_bantime")]
    pub default_bantime: HumanDuration,
    #[serde(default = "default_heartbeat")]
    pub heartbeat_interval: HumanDuration,
    /// Where the ban table is kept.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// The local socket for `banshare unban`, `bans` and `status`.
    #[serde(default = "default_control_socket")]
    pub control_socket: PathBuf,
    /// How far a report must have reached before it is acknowledged.
    #[serde(default = "default_durability")]
    pub durability: Durability,
    /// Networks never banned, in addition to the built-in list.
    #[serde(default)]
    pub protected: Vec<Cidr>,
    #[serde(default)]
    pub min_prefix: MinPrefix,
    /// The same for bans from blocklists (prog `import`), wider by default.
    #[serde(
        default = "default_list_min_prefix",
        deserialize_with = "list_min_prefix"
    )]
    pub import_min_prefix: MinPrefix,
    /// Reports one key may make at once...
    #[serde(default = "default_report_burst")]
    pub report_burst: u32,
    /// ...and a minute after that; beyond, its reports are refused.
    #[serde(default = "default_report_rate")]
    pub report_rate: u32,
    /// The most active bans the server holds; reports of further bans are refused.
    #[serde(default = "default_max_bans")]
    pub max_bans: usize,
    /// IPv6 reports ban the network of this many bits that holds them (64: the /64).
    #[serde(default)]
    pub ipv6_ban_prefix: Option<u8>,
    /// When this many IPv6 bans lie in one network of `aggregate-prefix` bits, the next
    /// report in it bans that whole network.
    #[serde(default)]
    pub aggregate_after: Option<usize>,
    #[serde(default = "default_aggregate_prefix")]
    pub aggregate_prefix: u8,
    /// A network is banned only once this many keys reported it within `confirm-window`.
    #[serde(default = "default_min_reporters")]
    pub min_reporters: usize,
    /// How long a report waits for confirmation, or to be released from its key's
    /// allowance, before it is dropped.
    #[serde(default = "default_confirm_window")]
    pub confirm_window: HumanDuration,
    /// A network banned again within this long of its earlier bans, from any host, is
    /// banned `recidive-factor` times longer for each, up to `recidive-max`.
    #[serde(default)]
    pub recidive_window: Option<HumanDuration>,
    #[serde(default = "default_recidive_factor")]
    pub recidive_factor: u32,
    #[serde(default = "default_recidive_max")]
    pub recidive_max: MaxBantime,
    #[serde(default = "default_log_level")]
    pub log_level: LogLevel,
    /// The other servers of the fleet, whose publish sockets this one follows and merges.
    #[serde(default)]
    pub peers: Vec<PeerConfig>,
    /// Blocklists fetched on an interval and kept current (`[[feeds]]`).
    #[serde(default)]
    pub feeds: Vec<FeedConfig>,
    /// Which reports ban in which group (`groups`); none: one stream for every host.
    #[serde(default)]
    pub groups: Vec<GroupConfig>,
    /// Where Prometheus metrics are served (`daemon::metrics`); none: not at all.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// Lets `metrics-listen` be an address other hosts reach.
    #[serde(default)]
    pub metrics_allow_remote: bool,
}

/// Another banshare-server: where it listens, and its public key, whose file name without
/// `.key` names the peer in logs and in `banshare status`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct PeerConfig {
    pub address: String,
    pub report_port: u16,
    pub publish_port: u16,
    pub key: PathBuf,
}

impl PeerConfig {
    pub fn name(&self) -> String {
        let stem = self.key.file_stem().unwrap_or(self.key.as_os_str());
        stem.to_string_lossy().into_owned()
    }
}

fn default_listen() -> IpAddr {
    IpAddr::from([0, 0, 0, 0])
}

fn default_server_key() -> PathBuf {
    "/etc/banshare/keys/server.key_secret".into()
}

fn default_authorized_keys() -> PathBuf {
    "/etc/banshare/authorized-keys".into()
}

fn default_control_socket() -> PathBuf {
    DEFAULT_SOCKET.into()
}

fn default_state_dir() -> PathBuf {
    "/var/lib/banshare".into()
}

fn default_durability() -> Durability {
    Durability::Fsync
}

fn default_dedup_window() -> HumanDuration {
    HumanDuration::secs(300)
}

fn default_bantime() -> HumanDuration {
    HumanDuration::secs(86400)
}

fn default_report_burst() -> u32 {
    200
}

fn default_report_rate() -> u32 {
    60
}

fn default_max_bans() -> usize {
    1_000_000
}

fn default_aggregate_prefix() -> u8 {
    64
}

fn default_min_reporters() -> usize {
    1
}

fn default_confirm_window() -> HumanDuration {
    HumanDuration::secs(3600)
}

fn default_recidive_factor() -> u32 {
    2
}

fn default_recidive_max() -> MaxBantime {
    MaxBantime::Limit(HumanDuration::secs(7 * 86400))
}

fn default_heartbeat() -> HumanDuration {
    HumanDuration::secs(1)
}

impl ServerConfig {
    /// The bound for a ban of `prog` (`import-min-prefix` for a blocklist's).
    pub fn min_prefix_for(&self, prog: &str) -> &MinPrefix {
        min_prefix_for(prog, &self.min_prefix, &self.import_min_prefix)
    }

    pub fn load(path: &Path) -> Result<ServerConfig, ConfigError> {
        ServerConfig::from_text(path, &read(path)?)
    }

    /// The configuration in `text`, read from `path` (which error messages name).
    pub fn from_text(path: &Path, text: &str) -> Result<ServerConfig, ConfigError> {
        let config: ServerConfig = parse(path, text)?;
        let err = |key: &str, reason: String| located(path, text, key, reason);
        check_ports(config.report_port, config.publish_port).map_err(|(k, r)| err(k, r))?;
        check_min_prefix(&config.min_prefix).map_err(|r| err("min-prefix", r.to_string()))?;
        check_min_prefix(&config.import_min_prefix)
            .map_err(|r| err("import-min-prefix", r.to_string()))?;
        if config.heartbeat_interval.0.is_zero() {
            return Err(err("heartbeat-interval", "must be more than 0s".into()));
        }
        for (key, value) in [
            ("report-burst", config.report_burst as usize),
            ("report-rate", config.report_rate as usize),
            ("max-bans", config.max_bans),
        ] {
            if value == 0 {
                return Err(err(key, "must be at least 1".into()));
            }
        }
        let bantime = config.default_bantime.0.as_secs();
        if !(1..=MAX_BANTIME).contains(&bantime) {
            return Err(err(
                "default-bantime",
                format!("must be between 1s and {MAX_BANTIME}s (ten years)"),
            ));
        }
        check_aggregation(&config).map_err(|(k, r)| err(k, r))?;
        check_confirmation(&config).map_err(|(k, r)| err(k, r))?;
        check_recidive(&config).map_err(|(k, r)| err(k, r))?;
        groups::check(&config.groups, MAX_MIN_REPORTERS)
            .map_err(|r| err("groups", r.to_string()))?;
        let groups: Vec<&str> = config.groups.iter().map(|g| g.name.as_str()).collect();
        feeds::check(&config.feeds, &groups).map_err(|r| err("feeds", r.to_string()))?;
        check_metrics(config.metrics_listen, config.metrics_allow_remote)
            .map_err(|r| err("metrics-listen", r.to_string()))?;
        for group in &config.groups {
            if let Some(window) = group.confirm_window {
                check_window("confirm-window", window)
                    .map_err(|(k, r)| err("groups", format!("group {}: {k} {r}", group.name)))?;
            }
        }
        for peer in &config.peers {
            check_host(&peer.address).map_err(|r| err("peers", format!("address {r}")))?;
            check_ports(peer.report_port, peer.publish_port)
                .map_err(|(k, r)| err("peers", format!("{k} {r}")))?;
        }
        Ok(config)
    }
}

/// The IPv6 networks that reports are widened to lie between min-prefix and a single
/// address, and aggregation widens further than `ipv6-ban-prefix` does.
fn check_aggregation(config: &ServerConfig) -> Result<(), (&'static str, String)> {
    let floor = config.min_prefix.ipv6;
    let within = |key, prefix: u8| {
        if (floor..=127).contains(&prefix) {
            Ok(())
        } else {
            Err((
                key,
                format!("must be between min-prefix's ipv6 ({floor}) and 127"),
            ))
        }
    };
    if let Some(prefix) = config.ipv6_ban_prefix {
        within("ipv6-ban-prefix", prefix)?;
    }
    if let Some(after) = config.aggregate_after {
        if after < 2 {
            return Err(("aggregate-after", "must be at least 2".into()));
        }
        within("aggregate-prefix", config.aggregate_prefix)?;
        if config
            .ipv6_ban_prefix
            .is_some_and(|p| p <= config.aggregate_prefix)
        {
            return Err((
                "aggregate-prefix",
                "must be shorter than ipv6-ban-prefix, which already bans as wide".into(),
            ));
        }
    }
    Ok(())
}

/// How many keys confirm a ban, and how long their reports wait.
fn check_confirmation(config: &ServerConfig) -> Result<(), (&'static str, String)> {
    if !(1..=MAX_MIN_REPORTERS).contains(&config.min_reporters) {
        return Err((
            "min-reporters",
            format!("must be between 1 and {MAX_MIN_REPORTERS}"),
        ));
    }
    check_window("confirm-window", config.confirm_window)
}

/// A window of time the server keeps state for: at most MAX_RECIDIVE_WINDOW.
fn check_window(key: &'static str, window: HumanDuration) -> Result<(), (&'static str, String)> {
    if (1..=MAX_RECIDIVE_WINDOW).contains(&window.0.as_secs()) {
        Ok(())
    } else {
        let days = MAX_RECIDIVE_WINDOW / 86400;
        Err((key, format!("must be between 1s and {days}d")))
    }
}

/// How far back the history of bans reaches, and how steeply bans grow.
fn check_recidive(config: &ServerConfig) -> Result<(), (&'static str, String)> {
    if let Some(window) = config.recidive_window {
        check_window("recidive-window", window)?;
    }
    if config.recidive_factor < 2 {
        return Err(("recidive-factor", "must be at least 2".into()));
    }
    if let MaxBantime::Limit(max) = config.recidive_max {
        if !(1..=MAX_BANTIME).contains(&max.0.as_secs()) {
            return Err((
                "recidive-max",
                format!("must be between 1s and {MAX_BANTIME}s (ten years), or \"permanent\""),
            ));
        }
    }
    Ok(())
}
