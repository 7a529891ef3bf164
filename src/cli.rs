//! Command-line definitions for the four programs, kept together so that man pages and shell
//! completions can be generated from them.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::{DEFAULT_CLIENT_CONFIG, DEFAULT_SERVER_CONFIG};
use crate::exit::Exit;
use crate::logging::LogTarget;

/// What `--version` prints: the release, and what it speaks and writes (docs/protocol.md,
/// section 9). A test keeps the numbers equal to `REVISION` and `store::FORMAT`.
pub const VERSION_TEXT: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (protocol BANSHARE1 revision 2, and revision 1 of banshare 0.1.0; journal format 2)"
);

/// Receives ban reports from the fleet, checks and de-duplicates them, and publishes them;
/// with peers, shares one ban table with the fleet's other servers.
#[derive(Debug, Parser)]
#[command(name = "banshare-server", version = VERSION_TEXT)]
pub struct ServerArgs {
    /// Configuration file.
    #[arg(short, long, default_value = DEFAULT_SERVER_CONFIG)]
    pub config: PathBuf,
    /// Where log lines go.
    #[arg(long, value_enum, default_value = "auto")]
    pub log: LogTarget,
}

/// Receives bans from the server, or from each of several, and applies them on this host.
#[derive(Debug, Parser)]
#[command(name = "banshare-client", version = VERSION_TEXT)]
pub struct ClientArgs {
    /// Configuration file.
    #[arg(short, long, default_value = DEFAULT_CLIENT_CONFIG)]
    pub config: PathBuf,
    /// Where log lines go.
    #[arg(long, value_enum, default_value = "auto")]
    pub log: LogTarget,
}

/// Reports a ban to the banshare server, or to the first of several that answers; run by
/// fail2ban's actionban or psad.
///
/// When banshare-client runs on the host, the report is handed to it over its
/// report-socket, and it sends the report on the connections it keeps open, with the same
/// key and to the same servers; otherwise, or when the client.toml names another key or
/// other servers, the report goes directly, as `banshare report` sends it.
///
/// Exit status: 0 accepted, duplicate or pending, 64 usage, 65 invalid input, 69 server unreachable
/// and the report lost (spool full), 70 no CURVE support, 75 server unreachable and the
/// report spooled for banshare-client to deliver, 77 refused by the server, 78 configuration
/// error.
#[derive(Debug, Parser)]
#[command(name = "banshare-report", version = VERSION_TEXT)]
pub struct ReportArgs {
    /// Configuration file (the client's).
    #[arg(short, long, default_value = DEFAULT_CLIENT_CONFIG)]
    pub config: PathBuf,
    /// Ban length in seconds, or -1 for permanent (fail2ban's <bantime>).
    #[arg(long, allow_negative_numbers = true)]
    pub bantime: Option<String>,
    /// Say what happened, also on success.
    #[arg(short, long, short_alias = 'd')]
    pub verbose: bool,
    /// The reporting program, such as fail2ban or psad.
    pub prog: String,
    /// The jail or rule that banned the address.
    pub jail: String,
    /// IPv4 or IPv6 address, or CIDR network.
    pub ip: String,
}

/// banshare administration: keys, configuration checks, and the running server.
#[derive(Debug, Parser)]
#[command(name = "banshare", version = VERSION_TEXT)]
pub struct AdminArgs {
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Generate a CURVE key pair: DIR/NAME.key (public) and DIR/NAME.key_secret (mode 0600).
    Keygen {
        /// Directory for the two files, created (mode 0750) when missing; one that a user
        /// other than root and this one could write is refused (exit 78) before anything
        /// is written.
        #[arg(long, default_value = "/etc/banshare/keys")]
        dir: PathBuf,
        /// Key name; the server logs hosts by this name.
        #[arg(long)]
        name: String,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
    },
    /// Report a ban straight to the servers over CURVE, as banshare-report does when no
    /// banshare-client on this host takes it; same arguments and exit codes as
    /// banshare-report(1).
    Report(ReportArgs),
    /// Validate a server.toml or client.toml and the key files it names.
    CheckConfig {
        /// The file to check.
        path: PathBuf,
    },
    /// Lift a ban on every host: the server forgets it, so do its peers, and every client
    /// runs its unban-command.
    Unban {
        /// The address or network, as it was banned.
        #[arg(required_unless_present = "origin", conflicts_with = "origin")]
        ip: Option<String>,
        /// Instead: lift every ban that only this host (its key's name) reported, and drop
        /// its waiting reports, as after revoking a compromised key.
        #[arg(long, value_name = "NAME")]
        origin: Option<String>,
        #[command(flatten)]
        control: ControlTarget,
    },
    /// Import a blocklist: Spamhaus DROP (text or JSON), FireHOL netsets and ipsets,
    /// ipsum, CrowdSec's decisions, plain lists, or CSV lines of address,bantime,jail.
    /// Each entry is checked like a report, against import-min-prefix rather than
    /// min-prefix (protected networks and what covers them, fleet hosts, max-bans),
    /// journaled and published in batches; a summary says how many were accepted,
    /// duplicates, skipped or refused, and why. A file with a bad entry imports nothing
    /// (exit 65), unless --skip-invalid.
    Import(ImportArgs),
    /// List the active bans with their expiry and every host that reported them.
    Bans {
        /// Print JSON instead of a table (the same as --format json).
        #[arg(long, conflicts_with = "format")]
        json: bool,
        /// table, json, plain (one network per line), or for other tools with the time each
        /// ban has left: nft (a file nft -f loads), ipset (ipset restore input), csv
        /// (address,bantime,jail, which banshare import reads).
        #[arg(long, value_enum, default_value_t = BansFormat::Table)]
        format: BansFormat,
        /// List the reports waiting instead: for confirmation by more hosts
        /// (min-reporters), or held beyond their key's allowance.
        #[arg(long)]
        pending: bool,
        #[command(flatten)]
        control: ControlTarget,
    },
    /// Check that this host reaches the server, or each of several, and is let in, as
    /// banshare-client would be: ask for the first page of the ban list and wait for the
    /// answer. Exits 0 when every server answered, 69 when one did not.
    Ping {
        /// The client configuration to take the server, port and keys from.
        #[arg(short, long, default_value = DEFAULT_CLIENT_CONFIG)]
        config: PathBuf,
        /// Use this server public key file instead of the configured one.
        #[arg(long)]
        server_key: Option<PathBuf>,
        /// Use this report port instead of the configured one.
        #[arg(long)]
        port: Option<u16>,
        /// How long to wait for the answer, such as 500ms or 3s.
        #[arg(long, default_value = "3s", value_parser = crate::config::duration::parse)]
        timeout: std::time::Duration,
    },
    /// Show the server's version, uptime, position, counters, the hosts it has seen, and
    /// its peers; or, on a client's socket, the servers it follows, their seq, lag and last
    /// heartbeat, the backend and its last error, bans applied and failed, and the spool.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        control: ControlTarget,
    },
}

/// Which daemon's control socket `banshare` talks to.
#[derive(Debug, Clone, clap::Args)]
pub struct ControlTarget {
    /// The control socket. Without it or --config: the server's (/run/banshare/control.sock)
    /// when this host runs one, else the client's (/run/banshare-client/control.sock).
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Take the control socket from this server.toml or client.toml.
    #[arg(short, long, conflicts_with = "socket")]
    pub config: Option<PathBuf>,
}

/// How `banshare bans` prints the bans.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BansFormat {
    Table,
    Json,
    Plain,
    Nft,
    Ipset,
    Csv,
}

/// Parses arguments; usage errors exit 64 with one line on stderr.
pub fn parse<T: Parser>() -> T {
    match T::try_parse() {
        Ok(args) => args,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            std::process::exit(0);
        }
        Err(e) => {
            // clap's message runs over several lines; its first paragraph says what is wrong.
            let text = e.render().to_string();
            let problem: Vec<&str> = text
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            let problem = problem.join(" ");
            let name = T::command().get_name().to_owned();
            eprintln!(
                "{name}: {} (see {name} --help)",
                problem.trim_start_matches("error: ")
            );
            std::process::exit(Exit::Usage.code());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_says_what_this_release_speaks_and_writes() {
        let revision = format!("revision {}", crate::wire::protocol::REVISION);
        let format = format!("journal format {}", crate::store::FORMAT);
        assert!(VERSION_TEXT.contains(&revision), "{VERSION_TEXT}");
        assert!(VERSION_TEXT.contains(&format), "{VERSION_TEXT}");
    }
}

/// `banshare import`'s arguments.
#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    /// The blocklist file, or - for standard input.
    pub file: PathBuf,
    /// The list's format: auto tells them apart by the first entry.
    #[arg(long, value_enum, default_value_t = crate::blocklist::Format::Auto)]
    pub format: crate::blocklist::Format,
    /// Bantime of entries that give none, such as 600, 1d or -1 (permanent); without it,
    /// the server's default-bantime.
    #[arg(long, allow_hyphen_values = true)]
    pub bantime: Option<String>,
    /// The name the bans are imported under, as `banshare bans` and `unban --origin` know
    /// them; not a host's key name.
    #[arg(long, default_value = "import")]
    pub origin: String,
    /// ipsum: import the addresses that at least N lists name.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub min_count: u64,
    /// Refuse entries wider than this, such as 16 or 16,48 (IPv4, IPv6), within the
    /// server's import-min-prefix.
    #[arg(long, value_name = "IPV4[,IPV6]", value_parser = min_prefix)]
    pub min_prefix: Option<crate::config::MinPrefix>,
    /// Import the good entries of a list with bad ones, and show the bad ones.
    #[arg(long)]
    pub skip_invalid: bool,
    #[command(flatten)]
    pub control: ControlTarget,
}

/// `--min-prefix IPV4[,IPV6]`; without IPV6, IPv6 entries are bounded by the server alone.
fn min_prefix(text: &str) -> Result<crate::config::MinPrefix, String> {
    let (ipv4, ipv6) = text.split_once(',').unwrap_or((text, "0"));
    let bad = || format!("{text:?} is not IPV4[,IPV6], such as 16 or 16,48");
    let ipv4: u8 = ipv4.trim().parse().map_err(|_| bad())?;
    let ipv6: u8 = ipv6.trim().parse().map_err(|_| bad())?;
    if ipv4 > 32 || ipv6 > 128 {
        return Err("the IPv4 prefix is at most 32, the IPv6 one at most 128".into());
    }
    Ok(crate::config::MinPrefix { ipv4, ipv6 })
}
