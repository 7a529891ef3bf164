//! server.toml and client.toml: kebab-case keys, unknown keys rejected, and every error
//! reported as one line with file, line number and reason.

pub mod duration;
pub mod groups;
pub mod template;

use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config::duration::{HumanDuration, MaxBantime};
use crate::config::groups::GroupConfig;
use crate::config::template::Template;
use crate::exit::{Exit, Failure};
use crate::wire::cidr::Cidr;
use crate::wire::protocol::MAX_BANTIME;
use crate::wire::topic::Group;

/// Where the server's control socket is, unless server.toml says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/banshare/control.sock";
/// banshare-client's control socket, for `banshare status` on a host.
pub const DEFAULT_CLIENT_SOCKET: &str = "/run/banshare-client/control.sock";
/// Where banshare-client takes reports from banshare-report on its host.
pub const DEFAULT_REPORT_SOCKET: &str = "/run/banshare-client/report.sock";

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

/// How the client applies bans.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// `ban-command` and `unban-command`, once per ban.
    Command,
    /// `fail2ban-client set <fail2ban-jail> banip IP IP ...`, in batches.
    Fail2ban,
    /// Elements in the sets of the client's own nftables table, in batches.
    Nftables,
    /// Nothing but a log line for each ban and unban: a dry run of the fleet's policy.
    Log,
}

/// The furthest back `recidive-window` may reach: the server keeps the history of a
/// network's bans this long at most.
pub const MAX_RECIDIVE_WINDOW: u64 = 366 * 86400;

/// The most keys `min-reporters` may ask for: as many as a ban keeps by name.
pub const MAX_MIN_REPORTERS: usize = 16;

pub const DEFAULT_SERVER_CONFIG: &str = "/etc/banshare/server.toml";
pub const DEFAULT_CLIENT_CONFIG: &str = "/etc/banshare/client.toml";

/// A configuration problem, located as precisely as we can: "FILE:LINE: reason".
#[derive(Debug, thiserror::Error)]
#[error("{shown}{at}: {reason}", shown = path.display(), at = line.map_or(String::new(), |l| format!(":{l}")))]
pub struct ConfigError {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warning,
    Info,
    Debug,
}

impl LogLevel {
    pub fn filter(self) -> log::LevelFilter {
        match self {
            LogLevel::Error => log::LevelFilter::Error,
            LogLevel::Warning => log::LevelFilter::Warn,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Debug => log::LevelFilter::Debug,
        }
    }
}

/// The smallest networks a single report may ban: a report for 0.0.0.0/0 must not take down
/// the fleet's whole view of the internet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct MinPrefix {
    #[serde(default = "default_min_v4")]
    pub ipv4: u8,
    #[serde(default = "default_min_v6")]
    pub ipv6: u8,
}

impl Default for MinPrefix {
    fn default() -> Self {
        MinPrefix {
            ipv4: default_min_v4(),
            ipv6: default_min_v6(),
        }
    }
}

impl MinPrefix {
    /// Refuses a network wider than the minimum, also as the IPv4 network it carries when
    /// it is written in an IPv6 form such as NAT64 (`64:ff9b::/104` is a /8).
    pub fn check(&self, net: &Cidr) -> Result<(), String> {
        for view in net.views() {
            let min = if view.is_ipv4() { self.ipv4 } else { self.ipv6 };
            if view.prefix() < min {
                let view = net.as_view(&view);
                return Err(format!(
                    "{net} is wider than the smallest allowed prefix /{min}{view}"
                ));
            }
        }
        Ok(())
    }
}

fn default_min_v4() -> u8 {
    24
}
fn default_min_v6() -> u8 {
    64
}

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

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ClientConfig {
    /// Host name or address of the server, when there is one; or else `servers`.
    #[serde(default)]
    pub server: Option<String>,
    /// The fleet's servers, when there are several (docs/ha.md).
    #[serde(default)]
    pub servers: Vec<ServerEntry>,
    /// The server's ports, and those of each of `servers` that gives none: with `servers`
    /// whose every entry has its own, they may be left out.
    #[serde(default)]
    pub report_port: Option<u16>,
    #[serde(default)]
    pub publish_port: Option<u16>,
    /// The public `.key` file of `server`.
    #[serde(default = "default_server_public_key")]
    pub server_key: PathBuf,
    /// This host's `.key_secret` file.
    #[serde(default = "default_host_key")]
    pub key: PathBuf,
    /// Whether this host's backend bans IPv6 ("psad --fw-block-ip" does not); when false,
    /// IPv6 bans are skipped with a warning.
    #[serde(default = "default_true")]
    pub ipv6: bool,
    /// How bans reach the firewall: "command", "fail2ban" or "nftables".
    #[serde(default = "default_backend")]
    pub backend: BackendKind,
    /// For the fail2ban backend: the jail that receives the fleet's bans.
    #[serde(default = "default_fail2ban_jail")]
    pub fail2ban_jail: String,
    /// For the fail2ban backend: fail2ban's socket.
    #[serde(default = "default_fail2ban_socket")]
    pub fail2ban_socket: PathBuf,
    /// For the nftables backend: the client's own table (family inet).
    #[serde(default = "default_nft_table")]
    pub nft_table: String,
    /// For batched backends: the most bans a batch holds...
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// ...and how long it may wait for more after its first: 0, the default, waits not at
    /// all (`apply::backend::Batcher`).
    #[serde(default = "default_batch_delay")]
    pub batch_delay: HumanDuration,
    #[serde(default = "default_ban_command")]
    pub ban_command: Template,
    #[serde(default = "default_unban_command")]
    pub unban_command: Template,
    /// Networks this host never bans, in addition to its own addresses, the server's
    /// addresses and the built-in list.
    #[serde(default)]
    pub protected: Vec<Cidr>,
    #[serde(default)]
    pub min_prefix: MinPrefix,
    #[serde(default = "default_command_timeout")]
    pub command_timeout: HumanDuration,
    #[serde(default = "default_max_commands")]
    pub max_concurrent_commands: usize,
    /// After a ban or unban failed (fail2ban down, say), resynchronise, and so try it
    /// again, this much later.
    #[serde(default = "default_retry_interval")]
    pub retry_interval: HumanDuration,
    /// Where banshare-report leaves reports the server did not answer, for the client.
    #[serde(default = "default_spool_dir")]
    pub spool_dir: PathBuf,
    /// The most reports the spool holds; beyond that, reports are lost (loudly).
    #[serde(default = "default_spool_max")]
    pub spool_max: usize,
    /// Where the record of bans applied on this host is kept: a directory of the client's
    /// own, which only root may write, as the client runs as root.
    #[serde(default = "default_client_state_dir")]
    pub state_dir: PathBuf,
    /// How long `banshare-report` may take in total before giving up.
    #[serde(default = "default_report_timeout")]
    pub report_timeout: HumanDuration,
    #[serde(default = "default_log_level")]
    pub log_level: LogLevel,
    /// The servers' groups this host receives; every group when not given.
    #[serde(default)]
    pub groups: Option<Vec<Group>>,
    /// The local socket for `banshare status` on this host.
    #[serde(default = "default_client_socket")]
    pub control_socket: PathBuf,
    /// Where banshare-report hands its reports to the client (`client::handoff`); empty:
    /// it never does, and always reports directly.
    #[serde(default = "default_report_socket")]
    pub report_socket: PathBuf,
    /// Where Prometheus metrics are served (`daemon::metrics`); none: not at all.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// Lets `metrics-listen` be an address other hosts reach.
    #[serde(default)]
    pub metrics_allow_remote: bool,
}

/// One of several servers in client.toml: its address, its public key file, and its ports
/// when they are not the file's `report-port` and `publish-port`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ServerEntry {
    pub address: String,
    pub key: PathBuf,
    pub report_port: Option<u16>,
    pub publish_port: Option<u16>,
}

/// A server as the client reaches it: what `server` or each of `servers` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSpec {
    pub address: String,
    pub report_port: u16,
    pub publish_port: u16,
    pub key: PathBuf,
}

/// The most servers a client follows.
pub const MAX_SERVERS: usize = 16;

fn default_listen() -> IpAddr {
    IpAddr::from([0, 0, 0, 0])
}
fn default_server_key() -> PathBuf {
    "/etc/banshare/keys/server.key_secret".into()
}
fn default_authorized_keys() -> PathBuf {
    "/etc/banshare/authorized-keys".into()
}
fn default_server_public_key() -> PathBuf {
    "/etc/banshare/keys/server.key".into()
}
fn default_host_key() -> PathBuf {
    "/etc/banshare/keys/host.key_secret".into()
}
fn default_true() -> bool {
    true
}
fn default_backend() -> BackendKind {
    BackendKind::Command
}
fn default_fail2ban_jail() -> String {
    "banshare".into()
}
fn default_fail2ban_socket() -> PathBuf {
    "/var/run/fail2ban/fail2ban.sock".into()
}
fn default_nft_table() -> String {
    "banshare".into()
}
fn default_batch_size() -> usize {
    500
}
fn default_batch_delay() -> HumanDuration {
    HumanDuration(std::time::Duration::ZERO)
}
fn default_control_socket() -> PathBuf {
    DEFAULT_SOCKET.into()
}
fn default_client_socket() -> PathBuf {
    DEFAULT_CLIENT_SOCKET.into()
}
fn default_report_socket() -> PathBuf {
    DEFAULT_REPORT_SOCKET.into()
}
fn default_spool_dir() -> PathBuf {
    "/var/spool/banshare".into()
}
fn default_spool_max() -> usize {
    10_000
}
fn default_state_dir() -> PathBuf {
    "/var/lib/banshare".into()
}
fn default_client_state_dir() -> PathBuf {
    "/var/lib/banshare-client".into()
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
fn default_command_timeout() -> HumanDuration {
    HumanDuration::secs(30)
}
fn default_retry_interval() -> HumanDuration {
    HumanDuration::secs(60)
}
fn default_report_timeout() -> HumanDuration {
    HumanDuration::secs(3)
}
fn default_max_commands() -> usize {
    4
}
fn default_log_level() -> LogLevel {
    LogLevel::Info
}
fn default_ban_command() -> Template {
    Template::parse("/usr/bin/fail2ban-client set banshare banip <ip>").expect("valid default")
}
fn default_unban_command() -> Template {
    Template::parse("/usr/bin/fail2ban-client set banshare unbanip <ip>").expect("valid default")
}

/// Which of the two config files a path holds.
#[derive(Debug)]
pub enum AnyConfig {
    Server(ServerConfig),
    Client(ClientConfig),
}

/// A configuration that is wrong is EX_CONFIG wherever it is found.
impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Failure {
        Exit::Config.with(e)
    }
}

impl ServerConfig {
    pub fn load(path: &Path) -> Result<ServerConfig, ConfigError> {
        ServerConfig::from_text(path, &read(path)?)
    }

    /// The configuration in `text`, read from `path` (which error messages name).
    pub fn from_text(path: &Path, text: &str) -> Result<ServerConfig, ConfigError> {
        let config: ServerConfig = parse(path, text)?;
        let err = |key: &str, reason: String| located(path, text, key, reason);
        check_ports(config.report_port, config.publish_port).map_err(|(k, r)| err(k, r))?;
        check_min_prefix(&config.min_prefix).map_err(|r| err("min-prefix", r))?;
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
        groups::check(&config.groups, MAX_MIN_REPORTERS).map_err(|r| err("groups", r))?;
        check_metrics(config.metrics_listen, config.metrics_allow_remote)
            .map_err(|r| err("metrics-listen", r))?;
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

impl ClientConfig {
    pub fn load(path: &Path) -> Result<ClientConfig, ConfigError> {
        ClientConfig::from_text(path, &read(path)?)
    }

    /// The configuration in `text`, read from `path` (which error messages name).
    pub fn from_text(path: &Path, text: &str) -> Result<ClientConfig, ConfigError> {
        let config: ClientConfig = parse(path, text)?;
        let err = |key: &str, reason: String| located(path, text, key, reason);
        check_min_prefix(&config.min_prefix).map_err(|r| err("min-prefix", r))?;
        match (&config.server, config.servers.len()) {
            (Some(server), 0) => check_host(server).map_err(|r| err("server", r))?,
            (None, 1..=MAX_SERVERS) => {}
            (None, 0) => return Err(err("server", "server or servers is required".into())),
            (Some(_), _) => return Err(err("servers", "give server or servers, not both".into())),
            (None, _) => {
                return Err(err(
                    "servers",
                    format!(
                        "at most {MAX_SERVERS} servers, not {}",
                        config.servers.len()
                    ),
                ))
            }
        }
        config.check_ports().map_err(|(k, r)| err(k, r))?;
        for (key, name) in [
            ("fail2ban-jail", &config.fail2ban_jail),
            ("nft-table", &config.nft_table),
        ] {
            crate::wire::protocol::Name::parse(key, name).map_err(|r| err(key, r))?;
        }
        if config.batch_size == 0 {
            return Err(err("batch-size", "must be at least 1".into()));
        }
        // An unban command may ignore the address (psad lifts its own blocks); a ban
        // command that does bans nothing in particular.
        if !config.ban_command.uses("<ip>") {
            let why = "must contain <ip>, the address to ban".into();
            return Err(err("ban-command", why));
        }
        if let Some(groups) = &config.groups {
            check_client_groups(groups).map_err(|r| err("groups", r))?;
        }
        check_metrics(config.metrics_listen, config.metrics_allow_remote)
            .map_err(|r| err("metrics-listen", r))?;
        if config.spool_max == 0 {
            return Err(err("spool-max", "must be at least 1".into()));
        }
        if config.max_concurrent_commands == 0 {
            return Err(err("max-concurrent-commands", "must be at least 1".into()));
        }
        for (key, value) in [
            ("command-timeout", config.command_timeout),
            ("report-timeout", config.report_timeout),
            ("retry-interval", config.retry_interval),
        ] {
            if value.0.is_zero() {
                return Err(err(key, "must be more than 0s".into()));
            }
        }
        Ok(config)
    }
}

impl ClientConfig {
    /// Every server this client reports to and follows, in the order the file gives them.
    pub fn targets(&self) -> Vec<ServerSpec> {
        let one = self.server.iter().map(|address| ServerSpec {
            address: address.clone(),
            report_port: self.report_port.unwrap_or_default(),
            publish_port: self.publish_port.unwrap_or_default(),
            key: self.server_key.clone(),
        });
        let several = self.servers.iter().map(|entry| ServerSpec {
            address: entry.address.clone(),
            report_port: entry.report_port.or(self.report_port).unwrap_or_default(),
            publish_port: entry.publish_port.or(self.publish_port).unwrap_or_default(),
            key: entry.key.clone(),
        });
        one.chain(several).collect()
    }

    /// Each server's address and ports: `server` needs the file's ports, and each of
    /// `servers` its own or the file's.
    fn check_ports(&self) -> Result<(), (&'static str, String)> {
        let key = match self.server {
            Some(_) => "server",
            None => "servers",
        };
        let given = |port: Option<u16>, entry: Option<u16>| entry.or(port).is_some();
        for (i, spec) in self.targets().into_iter().enumerate() {
            check_host(&spec.address).map_err(|r| (key, format!("address {r}")))?;
            let entry = self.servers.get(i);
            for (name, top, own) in [
                (
                    "report-port",
                    self.report_port,
                    entry.and_then(|e| e.report_port),
                ),
                (
                    "publish-port",
                    self.publish_port,
                    entry.and_then(|e| e.publish_port),
                ),
            ] {
                if !given(top, own) {
                    let reason = match entry {
                        Some(_) => format!(
                            "server {} has no {name}: give it in its entry or at the top of \
                             the file",
                            spec.address
                        ),
                        None => "is required".to_string(),
                    };
                    return Err((if entry.is_some() { key } else { name }, reason));
                }
            }
            check_ports(spec.report_port, spec.publish_port)
                .map_err(|(k, r)| (key, format!("{k} {r}")))?;
        }
        Ok(())
    }
}

impl AnyConfig {
    /// Tells the two kinds apart by the `server` or `servers` key that only client.toml has.
    pub fn load(path: &Path) -> Result<AnyConfig, ConfigError> {
        let text = read(path)?;
        let table: toml::Table = parse(path, &text)?;
        if table.contains_key("server") || table.contains_key("servers") {
            ClientConfig::load(path).map(AnyConfig::Client)
        } else {
            ServerConfig::load(path).map(AnyConfig::Server)
        }
    }
}

/// The largest config file read: a real one is a few kilobytes.
const MAX_CONFIG: u64 = 1 << 20;

/// Reads a config file that no other user may change (see `files::check_trusted`).
fn read(path: &Path) -> Result<String, ConfigError> {
    let error = |reason: String| ConfigError {
        path: path.to_owned(),
        line: None,
        reason,
    };
    crate::files::check_trusted(path).map_err(error)?;
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_CONFIG).read_to_string(&mut text))
        .map_err(|e| error(e.to_string()))?;
    Ok(text)
}

fn parse<T: serde::de::DeserializeOwned>(path: &Path, text: &str) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError {
        path: path.to_owned(),
        line: e.span().map(|span| line_at(text, span.start)),
        reason: e.message().trim().replace('\n', " "),
    })
}

fn line_at(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// An error about `key`, pointing at the line where the key is set when it is there.
fn located(path: &Path, text: &str, key: &str, reason: String) -> ConfigError {
    let line = text.lines().position(|l| {
        l.trim_start()
            .strip_prefix(key)
            .is_some_and(|rest| rest.trim_start().starts_with(['=', '.']))
            || l.trim() == format!("[{key}]")
    });
    ConfigError {
        path: path.to_owned(),
        line: line.map(|l| l + 1),
        reason: format!("{key}: {reason}"),
    }
}

fn check_ports(report: u16, publish: u16) -> Result<(), (&'static str, String)> {
    let range = "must be between 1 and 65535".to_string();
    if report == 0 {
        Err(("report-port", range))
    } else if publish == 0 {
        Err(("publish-port", range))
    } else if report == publish {
        Err((
            "publish-port",
            format!("is the same as report-port ({report}); they must differ"),
        ))
    } else {
        Ok(())
    }
}

/// A host name or an IP address; a URL or "host:port" is a common mistake worth catching.
/// Metrics tell an attacker what the fleet bans and how it fares: loopback only, unless the
/// operator says otherwise.
fn check_metrics(listen: Option<SocketAddr>, allow_remote: bool) -> Result<(), String> {
    match listen {
        Some(address) if !address.ip().is_loopback() && !allow_remote => Err(format!(
            "{address} is reachable from other hosts; use a loopback address such as \
             127.0.0.1:{}, or set metrics-allow-remote = true",
            address.port()
        )),
        _ => Ok(()),
    }
}

fn check_host(host: &str) -> Result<(), String> {
    let name_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    if name_ok || host.parse::<IpAddr>().is_ok() {
        Ok(())
    } else {
        Err(format!(
            "{host:?} must be a host name or an IP address, without scheme or port"
        ))
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

/// client.toml's `groups`: some, none twice.
fn check_client_groups(groups: &[Group]) -> Result<(), String> {
    if groups.is_empty() {
        return Err("lists no group; leave it out to receive every group".into());
    }
    if groups.len() > groups::MAX_GROUPS {
        return Err(format!("at most {} groups", groups::MAX_GROUPS));
    }
    match groups
        .iter()
        .enumerate()
        .find(|(i, g)| groups[..*i].contains(g))
    {
        Some((_, twice)) => Err(format!("names group {twice} twice")),
        None => Ok(()),
    }
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

fn check_min_prefix(min: &MinPrefix) -> Result<(), String> {
    if min.ipv4 > 32 || min.ipv6 > 128 {
        Err("ipv4 must be at most 32 and ipv6 at most 128".into())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn server_defaults() {
        let (_d, path) = write("report-port = 5001\npublish-port = 5002\n");
        let c = ServerConfig::load(&path).unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0");
        assert_eq!(c.dedup_window.0, Duration::from_secs(300));
        assert_eq!(c.default_bantime.0, Duration::from_secs(86400));
        assert_eq!(c.min_prefix, MinPrefix { ipv4: 24, ipv6: 64 });
    }

    #[test]
    fn client_full() {
        let (_d, path) = write(
            r#"
server = "banshare.example.net"
report-port = 5001
publish-port = 5002
ban-command = "/usr/sbin/nft add element inet t s { <ip> }"
protected = ["198.51.100.0/24", "2001:db8::/32"]
command-timeout = "10s"
min-prefix = { ipv4 = 16, ipv6 = 48 }
"#,
        );
        let c = ClientConfig::load(&path).unwrap();
        assert_eq!(c.protected.len(), 2);
        assert_eq!(c.command_timeout.0, Duration::from_secs(10));
        assert_eq!(c.min_prefix.ipv4, 16);
        assert_eq!(c.unban_command.program(), "/usr/bin/fail2ban-client");
        assert_eq!(c.state_dir, Path::new("/var/lib/banshare-client"));
    }

    fn error_of(text: &str, client: bool) -> String {
        let (_d, path) = write(text);
        let err = if client {
            ClientConfig::load(&path).unwrap_err()
        } else {
            ServerConfig::load(&path).unwrap_err()
        };
        let line = err.to_string();
        assert!(!line.contains('\n'), "one line: {line}");
        line.replace(&*path.to_string_lossy(), "F")
    }

    #[test]
    fn errors_name_file_line_and_reason() {
        let base = "report-port = 1\npublish-port = 2\n";
        let e = error_of(&format!("{base}colour = \"red\"\n"), false);
        assert!(e.starts_with("F:3: ") && e.contains("colour"), "{e}");
        let e = error_of(&format!("{base}dedup-window = \"5x\"\n"), false);
        assert!(e.starts_with("F:3: ") && e.contains("duration unit"), "{e}");
        let e = error_of(
            &format!("{base}protected = [\"1.2.3.4 && reboot\"]\n"),
            false,
        );
        assert!(e.starts_with("F:3: ") && e.contains("not an IPv4"), "{e}");
        let e = error_of("report-port = 7\npublish-port = 7\n", false);
        assert!(e.starts_with("F:2: ") && e.contains("must differ"), "{e}");
        let e = error_of("report-port = 0\npublish-port = 7\n", false);
        assert!(e.starts_with("F:1: report-port"), "{e}");
        let e = error_of(&format!("{base}default-bantime = \"1000w\"\n"), false);
        assert!(e.starts_with("F:3: default-bantime"), "{e}");
        let e = error_of(
            "server = \"tcp://gw:5\"\nreport-port = 1\npublish-port = 2\n",
            true,
        );
        assert!(e.starts_with("F:1: server"), "{e}");
        let e = error_of("report-port = 70000\n", false);
        assert!(e.starts_with("F:1: "), "{e}");
        let e = error_of(
            "server = \"s\"\nreport-port = 1\npublish-port = 2\nban-command = \"/bin/x <IP>\"\n",
            true,
        );
        assert!(e.starts_with("F:4: ") && e.contains("<IP>"), "{e}");
        let e = error_of(
            "server = \"s\"\nreport-port = 1\npublish-port = 2\nban-command = \"/bin/x JAIL\"\n",
            true,
        );
        assert!(e.contains("use <jail> instead of JAIL"), "{e}");
        let e = error_of(
            "server = \"s\"\nreport-port = 1\npublish-port = 2\nban-command = \"/bin/x <jail>\"\n",
            true,
        );
        assert!(
            e.starts_with("F:4: ban-command") && e.contains("must contain <ip>"),
            "{e}"
        );
        let e = error_of("report-port = 1\npublish-port = 2\n", true);
        assert!(e.contains("server or servers is required"), "{e}");
        let e = error_of("report-port = [", false);
        assert!(e.starts_with("F:1: "), "{e}");
    }

    #[test]
    fn several_servers_need_their_ports_only_once() {
        let entry = |ports: &str| format!("{{ address = \"bs1\", key = \"/k\"{ports} }}");
        let own = entry(", report-port = 1, publish-port = 2");
        let (_d, path) = write(&format!("servers = [{own}, {own}]\n"));
        let c = ClientConfig::load(&path).unwrap();
        assert_eq!(c.targets()[1].publish_port, 2);
        // An entry without a port of its own takes the file's; without either, it is said.
        let text = format!("servers = [{own}, {}]\npublish-port = 9\n", entry(""));
        let e = error_of(&text, true);
        assert!(e.contains("server bs1 has no report-port"), "{e}");
        let e = error_of("server = \"s\"\nreport-port = 1\n", true);
        assert!(e.contains("publish-port: is required"), "{e}");
    }

    #[test]
    fn metrics_stay_on_loopback_unless_allowed() {
        let base = "report-port = 1\npublish-port = 2\n";
        let e = error_of(&format!("{base}metrics-listen = \"0.0.0.0:9100\"\n"), false);
        assert!(
            e.contains("metrics-listen") && e.contains("metrics-allow-remote"),
            "{e}"
        );
        let client = format!("server = \"s\"\n{base}metrics-listen = \"[::]:9100\"\n");
        assert!(error_of(&client, true).contains("127.0.0.1:9100"));
        for ok in ["\"127.0.0.1:9100\"", "\"[::1]:9100\""] {
            let (_d, path) = write(&format!("{base}metrics-listen = {ok}\n"));
            assert!(ServerConfig::load(&path).is_ok(), "{ok}");
        }
        let (_d, path) = write(&format!(
            "{base}metrics-listen = \"0.0.0.0:9100\"\nmetrics-allow-remote = true\n"
        ));
        assert!(ServerConfig::load(&path).is_ok());
    }

    #[test]
    fn aggregation_prefixes_are_checked() {
        let base = "report-port = 1\npublish-port = 2\n";
        let e = error_of(&format!("{base}ipv6-ban-prefix = 32\n"), false);
        assert!(
            e.starts_with("F:3: ipv6-ban-prefix") && e.contains("(64)"),
            "{e}"
        );
        let e = error_of(&format!("{base}aggregate-after = 1\n"), false);
        assert!(e.starts_with("F:3: aggregate-after"), "{e}");
        let both = "ipv6-ban-prefix = 64\naggregate-after = 3\n";
        let e = error_of(&format!("{base}{both}"), false);
        assert!(e.contains("shorter than ipv6-ban-prefix"), "{e}");
        let wider = "ipv6-ban-prefix = 80\naggregate-after = 3\naggregate-prefix = 64\n";
        let (_d, path) = write(&format!("{base}{wider}"));
        assert!(ServerConfig::load(&path).is_ok());
    }

    #[test]
    fn any_config_detects_kind() {
        let (_d, path) = write("server = \"x\"\nreport-port = 1\npublish-port = 2\n");
        assert!(matches!(AnyConfig::load(&path), Ok(AnyConfig::Client(_))));
        let (_d, path) = write("report-port = 1\npublish-port = 2\n");
        assert!(matches!(AnyConfig::load(&path), Ok(AnyConfig::Server(_))));
    }

    #[test]
    fn min_prefix_check() {
        let min = MinPrefix::default();
        assert!(min.check(&"198.51.100.0/24".parse().unwrap()).is_ok());
        assert!(min.check(&"198.51.0.0/16".parse().unwrap()).is_err());
        assert!(min.check(&"0.0.0.0/0".parse().unwrap()).is_err());
        assert!(min.check(&"::/0".parse().unwrap()).is_err());
        assert!(min.check(&"2001:db8::/64".parse().unwrap()).is_ok());
        let err = min.check(&"64:ff9b::/104".parse().unwrap()).unwrap_err();
        assert!(err.ends_with("/24, as 0.0.0.0/8"), "{err}");
        assert!(min
            .check(&"64:ff9b::c633:6400/120".parse().unwrap())
            .is_ok());
    }
}
