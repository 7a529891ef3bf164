//! client.toml: what `banshare-client` and `banshare-report` read, and its checks.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{
    check_host, check_metrics, check_min_prefix, check_ports, default_list_min_prefix,
    default_log_level, list_min_prefix, located, min_prefix_for, parse, read, ConfigError,
    LogLevel, MinPrefix,
};
use crate::config::duration::HumanDuration;
use crate::config::groups;
use crate::config::template::Template;
use crate::wire::cidr::Cidr;
use crate::wire::topic::Group;

/// banshare-client's control socket, for `banshare status` on a host.
pub const DEFAULT_CLIENT_SOCKET: &str = "/run/banshare-client/control.sock";

/// Where banshare-client takes reports from banshare-report on its host.
pub const DEFAULT_REPORT_SOCKET: &str = "/run/banshare-client/report.sock";

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

pub const DEFAULT_CLIENT_CONFIG: &str = "/etc/banshare/client.toml";

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
    /// The same for bans from blocklists (prog `import`), wider by default.
    #[serde(
        default = "default_list_min_prefix",
        deserialize_with = "list_min_prefix"
    )]
    pub import_min_prefix: MinPrefix,
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

fn default_client_state_dir() -> PathBuf {
    "/var/lib/banshare-client".into()
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

fn default_ban_command() -> Template {
    Template::parse("/usr/bin/fail2ban-client set banshare banip <ip>").expect("valid default")
}

fn default_unban_command() -> Template {
    Template::parse("/usr/bin/fail2ban-client set banshare unbanip <ip>").expect("valid default")
}

impl ClientConfig {
    /// The bound for a ban of `prog` (`import-min-prefix` for a blocklist's).
    pub fn min_prefix_for(&self, prog: &str) -> &MinPrefix {
        min_prefix_for(prog, &self.min_prefix, &self.import_min_prefix)
    }

    pub fn load(path: &Path) -> Result<ClientConfig, ConfigError> {
        ClientConfig::from_text(path, &read(path)?)
    }

    /// The configuration in `text`, read from `path` (which error messages name).
    pub fn from_text(path: &Path, text: &str) -> Result<ClientConfig, ConfigError> {
        let config: ClientConfig = parse(path, text)?;
        let err = |key: &str, reason: String| located(path, text, key, reason);
        check_min_prefix(&config.min_prefix).map_err(|r| err("min-prefix", r.to_string()))?;
        check_min_prefix(&config.import_min_prefix)
            .map_err(|r| err("import-min-prefix", r.to_string()))?;
        match (&config.server, config.servers.len()) {
            (Some(server), 0) => check_host(server).map_err(|r| err("server", r.to_string()))?,
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
            crate::wire::protocol::Name::parse(key, name).map_err(|r| err(key, r.to_string()))?;
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
            check_client_groups(groups).map_err(|r| err("groups", r.to_string()))?;
        }
        check_metrics(config.metrics_listen, config.metrics_allow_remote)
            .map_err(|r| err("metrics-listen", r.to_string()))?;
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

/// Why client.toml's `groups` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientGroupsError {
    /// An empty list would receive nothing, surely not what was meant.
    #[error("lists no group; leave it out to receive every group")]
    Empty,
    #[error("at most {max} groups", max = groups::MAX_GROUPS)]
    TooMany,
    #[error("names group {0} twice")]
    Twice(Group),
}

/// client.toml's `groups`: some, none twice.
fn check_client_groups(groups: &[Group]) -> Result<(), ClientGroupsError> {
    if groups.is_empty() {
        return Err(ClientGroupsError::Empty);
    }
    if groups.len() > groups::MAX_GROUPS {
        return Err(ClientGroupsError::TooMany);
    }
    match groups
        .iter()
        .enumerate()
        .find(|(i, g)| groups[..*i].contains(g))
    {
        Some((_, twice)) => Err(ClientGroupsError::Twice(twice.clone())),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_groups_are_some_and_none_twice() {
        let group = |name: &str| Group::parse(name).unwrap();
        assert_eq!(check_client_groups(&[]), Err(ClientGroupsError::Empty));
        let many: Vec<Group> = (0..=groups::MAX_GROUPS)
            .map(|i| group(&format!("g{i}")))
            .collect();
        assert_eq!(check_client_groups(&many), Err(ClientGroupsError::TooMany));
        let twice = [group("web"), group("mail"), group("web")];
        let err = check_client_groups(&twice).unwrap_err();
        assert_eq!(err, ClientGroupsError::Twice(group("web")));
        assert_eq!(err.to_string(), "names group web twice");
        assert_eq!(check_client_groups(&twice[..2]), Ok(()));
    }
}
