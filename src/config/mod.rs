//! server.toml and client.toml: kebab-case keys, unknown keys rejected, and every error
//! reported as one line with file, line number and reason. Each file has its own module,
//! `server` and `client`; what both share is here.

pub mod client;
pub mod duration;
pub mod feeds;
pub mod groups;
pub mod server;
pub mod template;

pub use client::*;
pub use server::*;

use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::exit::{Exit, Failure};
use crate::wire::cidr::Cidr;

/// A configuration problem, located as precisely as we can: "FILE:LINE: reason".
#[derive(Debug, thiserror::Error)]
#[error("{shown}{at}: {reason}", shown = path.display(), at = line.map_or(String::new(), |l| format!(":{l}")))]
pub struct ConfigError {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub reason: String,
}

/// Why a value that either config file may hold was refused; `ConfigError` adds the key,
/// the file and the line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    /// Metrics tell an attacker what the fleet bans and how it fares.
    #[error(
        "{0} is reachable from other hosts; use a loopback address such as \
         127.0.0.1:{port}, or set metrics-allow-remote = true",
        port = .0.port()
    )]
    RemoteMetrics(SocketAddr),
    /// A URL or "host:port" where a host belongs, a common mistake.
    #[error("{0:?} must be a host name or an IP address, without scheme or port")]
    BadHost(String),
    #[error("ipv4 must be at most 32 and ipv6 at most 128")]
    MinPrefixRange,
}

/// A ban wider than `min-prefix` allows. `seen` is the network that was too wide: the ban
/// itself, or the IPv4 network it carries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{ban} is wider than the smallest allowed prefix /{min}{view}", view = ban.as_view(seen))]
pub struct TooWide {
    pub ban: Cidr,
    pub seen: Cidr,
    pub min: u8,
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
    pub fn check(&self, net: &Cidr) -> Result<(), TooWide> {
        for view in net.views() {
            let min = if view.is_ipv4() { self.ipv4 } else { self.ipv6 };
            if view.prefix() < min {
                return Err(TooWide {
                    ban: *net,
                    seen: view,
                    min,
                });
            }
        }
        Ok(())
    }
}

impl MinPrefix {
    /// `import-min-prefix`'s defaults, for bans from blocklists (prog `import`): lists name
    /// networks, and the admin's list is the admin's word, but a typo must not ban a /1.
    /// /8 is the block IANA hands a registry, and the widest a list names (FireHOL level1's
    /// bogons; Spamhaus DROP's widest are /10s); /19 is the widest IPv6 allocation a
    /// registry makes to one holder (2003::/19).
    pub const LISTS: MinPrefix = MinPrefix { ipv4: 8, ipv6: 19 };
}

/// Reads `import-min-prefix`, whose keys default to `MinPrefix::LISTS`.
fn list_min_prefix<'de, D: serde::Deserializer<'de>>(d: D) -> Result<MinPrefix, D::Error> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Given {
        ipv4: Option<u8>,
        ipv6: Option<u8>,
    }
    let given = Given::deserialize(d)?;
    Ok(MinPrefix {
        ipv4: given.ipv4.unwrap_or(MinPrefix::LISTS.ipv4),
        ipv6: given.ipv6.unwrap_or(MinPrefix::LISTS.ipv6),
    })
}

fn default_list_min_prefix() -> MinPrefix {
    MinPrefix::LISTS
}

/// The bound for a ban of `prog`: `import-min-prefix` for a blocklist's, `min-prefix` for
/// any other.
fn min_prefix_for<'a>(prog: &str, reports: &'a MinPrefix, lists: &'a MinPrefix) -> &'a MinPrefix {
    if crate::blocklist::is_list(prog) {
        lists
    } else {
        reports
    }
}

fn default_min_v4() -> u8 {
    24
}

fn default_min_v6() -> u8 {
    64
}

fn default_log_level() -> LogLevel {
    LogLevel::Info
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
    crate::files::check_trusted(path).map_err(|e| error(e.to_string()))?;
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

/// Metrics tell an attacker what the fleet bans and how it fares: loopback only, unless the
/// operator says otherwise.
fn check_metrics(listen: Option<SocketAddr>, allow_remote: bool) -> Result<(), CheckError> {
    match listen {
        Some(address) if !address.ip().is_loopback() && !allow_remote => {
            Err(CheckError::RemoteMetrics(address))
        }
        _ => Ok(()),
    }
}

/// A host name or an IP address; a URL or "host:port" is a common mistake worth catching.
fn check_host(host: &str) -> Result<(), CheckError> {
    let name_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    if name_ok || host.parse::<IpAddr>().is_ok() {
        Ok(())
    } else {
        Err(CheckError::BadHost(host.to_owned()))
    }
}

fn check_min_prefix(min: &MinPrefix) -> Result<(), CheckError> {
    if min.ipv4 > 32 || min.ipv6 > 128 {
        Err(CheckError::MinPrefixRange)
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
        assert_eq!(c.import_min_prefix, MinPrefix { ipv4: 8, ipv6: 19 });
        assert_eq!(c.min_prefix_for("import"), &c.import_min_prefix);
        assert_eq!(c.min_prefix_for("fail2ban"), &c.min_prefix);
    }

    #[test]
    fn import_min_prefix_keeps_the_defaults_of_the_keys_it_leaves_out() {
        let base = "report-port = 5001\npublish-port = 5002\n";
        let (_d, path) = write(&format!("{base}import-min-prefix = {{ ipv4 = 12 }}\n"));
        let c = ServerConfig::load(&path).unwrap();
        assert_eq!(c.import_min_prefix, MinPrefix { ipv4: 12, ipv6: 19 });
        let (_d, path) = write(&format!("{base}import-min-prefix = {{ ipv4 = 33 }}\n"));
        let e = ServerConfig::load(&path).unwrap_err().to_string();
        assert!(
            e.contains("import-min-prefix") && e.contains("at most 32"),
            "{e}"
        );
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
    fn shared_values_are_checked() {
        assert_eq!(check_host("gw.example.net"), Ok(()));
        assert_eq!(check_host("2001:db8::1"), Ok(()));
        let err = check_host("tcp://gw:5").unwrap_err();
        assert_eq!(err, CheckError::BadHost("tcp://gw:5".into()));
        assert_eq!(
            err.to_string(),
            "\"tcp://gw:5\" must be a host name or an IP address, without scheme or port"
        );
        let remote: SocketAddr = "0.0.0.0:9100".parse().unwrap();
        let err = check_metrics(Some(remote), false).unwrap_err();
        assert_eq!(err, CheckError::RemoteMetrics(remote));
        assert_eq!(
            err.to_string(),
            "0.0.0.0:9100 is reachable from other hosts; use a loopback address such as \
             127.0.0.1:9100, or set metrics-allow-remote = true"
        );
        assert_eq!(check_metrics(Some(remote), true), Ok(()));
        let wide = MinPrefix { ipv4: 33, ipv6: 64 };
        assert_eq!(check_min_prefix(&wide), Err(CheckError::MinPrefixRange));
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
        assert_eq!(
            err,
            TooWide {
                ban: "64:ff9b::/104".parse().unwrap(),
                seen: "0.0.0.0/8".parse().unwrap(),
                min: 24,
            }
        );
        assert_eq!(
            err.to_string(),
            "64:ff9b::/104 is wider than the smallest allowed prefix /24, as 0.0.0.0/8"
        );
        assert!(min
            .check(&"64:ff9b::c633:6400/120".parse().unwrap())
            .is_ok());
    }
}
