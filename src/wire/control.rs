//! What the daemons' local control sockets carry (`sockets::control`): the server's carries
//! `banshare unban`, `bans`, `status` and `import`; the client's only `banshare status`.
//!
//! Requests are `[BANSHARE1, UNBAN, ip]`, `[BANSHARE1, BANS]` and `[BANSHARE1, STATUS]`;
//! replies are `[BANSHARE1, OK or ERROR, text or JSON]`. The JSON is one of the structs
//! below, written by the server and read by `banshare`; fields are in alphabetical order,
//! as `banshare bans --json` and `banshare status --json` have always printed them.

use std::collections::BTreeMap;

use crate::logging::printable;
use crate::wire::cidr::Cidr;
use crate::wire::error::FieldError;
use crate::wire::protocol::{Report, VERSION};

/// One active ban, for `banshare bans`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BanView {
    /// The group it is banned in (`[[groups]]`); absent on a server without groups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Seconds, or null for a permanent ban.
    pub bantime: Option<u64>,
    /// Unix time, or null for never.
    pub expires: Option<u64>,
    pub first_report: u64,
    pub ip: String,
    pub jail: String,
    pub last_report: u64,
    /// Reporters beyond those named in `reporters`.
    pub more_reporters: u32,
    pub origin: String,
    pub prog: String,
    /// Every host that reported the ban, as far as the server keeps them by name.
    pub reporters: Vec<ReporterView>,
    /// The network's bans within `recidive-window`, this one last: which host started each,
    /// and when. Empty without `recidive-window`.
    #[serde(default)]
    pub history: Vec<EpisodeView>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EpisodeView {
    pub at: u64,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReporterView {
    pub first_report: u64,
    pub last_report: u64,
    pub name: String,
}

/// The server's state, for `banshare status`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Status {
    pub active_bans: usize,
    pub authorized_keys: usize,
    pub counters: Counters,
    pub epoch: u64,
    /// Every authorized host that has connected since the server started.
    pub hosts: Vec<HostSeen>,
    /// Networks with reports waiting (`banshare bans --pending`).
    #[serde(default)]
    pub pending: usize,
    /// Each group (`[[groups]]`), the default one first; empty without groups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<GroupView>,
    /// The `[[feeds]]`, when there are any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub feeds: Vec<FeedView>,
    /// The other servers this one follows, as server.toml lists them.
    #[serde(default)]
    pub peers: Vec<PeerView>,
    /// "server", so that `banshare status` knows which side answered.
    #[serde(default)]
    pub role: String,
    /// The default group's seq.
    pub seq: u64,
    pub uptime_seconds: u64,
    pub version: String,
}

/// A group's stream, for `banshare status`.
/// A feed, in `banshare status`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FeedView {
    pub name: String,
    pub url: String,
    /// In its last good copy.
    pub entries: usize,
    /// Unix time of the last fetch that brought a version or found it current.
    pub last_success: Option<u64>,
    /// Why the fetches since then failed, if they did.
    pub last_error: Option<String>,
    /// Failed fetches since the server started.
    pub failures: u64,
    /// Unix time.
    pub next_fetch: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GroupView {
    pub active_bans: usize,
    pub dry_run: bool,
    pub name: String,
    pub pending: usize,
    pub seq: u64,
}

/// A peer server, as this one follows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PeerView {
    /// Its publish socket.
    pub address: String,
    /// Whether it was heard within three of its heartbeats.
    pub connected: bool,
    /// Its position as last heard, null before anything was.
    pub epoch: Option<u64>,
    /// Unix time of the last message from it, null before any.
    pub last_heard: Option<u64>,
    pub name: String,
    /// Seconds since `last_heard`: how far behind this server may be.
    pub seconds_ago: Option<u64>,
    pub seq: Option<u64>,
    /// Whether its whole table was read since this server started.
    pub synced: bool,
}

/// banshare-client's state, for `banshare status` on a host.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClientStatus {
    /// Bans and unbans the backend carried out since the client started.
    pub applied_bans: u64,
    pub applied_unbans: u64,
    /// "command", "fail2ban", "nftables" or "log".
    pub backend: String,
    /// Bans and unbans that failed since the start.
    pub failed: u64,
    /// Bans and unbans the firewall refused for good since the start, which are not tried
    /// again (absent from clients before it was added).
    #[serde(default)]
    pub refused: u64,
    /// The last failure, and when (Unix time); the log says why.
    pub last_error: Option<String>,
    pub last_error_at: Option<u64>,
    /// Catch-ups completed since the start, over every server and group.
    pub resyncs: u64,
    /// Always "client", so that `banshare status` knows which side answered.
    pub role: String,
    /// Each server followed, in client.toml's order.
    pub servers: Vec<FollowedView>,
    /// Reports waiting in the spool, and those delivered from it since the start.
    pub spool: usize,
    pub spool_delivered: u64,
    pub uptime_seconds: u64,
    pub version: String,
}

/// A server, as a client follows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FollowedView {
    /// Its publish socket.
    pub address: String,
    /// Whether it was heard within three of its heartbeats.
    pub connected: bool,
    /// Its epoch and seq as last heard (of its first group), null before anything was.
    pub epoch: Option<u64>,
    pub seq: Option<u64>,
    /// Messages not taken in yet, over all its groups (`wire::follow`).
    pub lag: u64,
    /// Unix time of the last message from it, null before any.
    pub last_heard: Option<u64>,
    pub name: String,
    /// Seconds since any of its groups was heard (a heartbeat at least every interval).
    pub seconds_since_heartbeat: f64,
    /// Unix time since which it has been connected, or not.
    pub since: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HostSeen {
    /// Unix time.
    pub last_seen: u64,
    pub name: String,
    pub seconds_ago: u64,
}

/// What the server did since it started.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counters {
    pub accepted: u64,
    /// Times the memory guard closed every connection.
    pub closed_all: u64,
    /// Keys cut off for breaking the protocol's shape.
    pub cut_off: u64,
    pub duplicate: u64,
    pub invalid: u64,
    /// Reports answered PENDING: waiting for confirmation, or held beyond an allowance.
    #[serde(default)]
    pub pending: u64,
    /// Bans and unbans published.
    pub published: u64,
    /// Refused reports and snapshot requests by reason: rate-limit, min-prefix, protected,
    /// fleet-host, max-bans, snapshot-limit.
    pub refused: BTreeMap<String, u64>,
    /// Requests left unanswered: from keys revoked or cut off, or invalid beyond the key's
    /// allowance.
    pub unanswered: u64,
    pub unbanned: u64,
}

/// Reports waiting for one network, for `banshare bans --pending`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PendingView {
    /// The group it would be banned in; absent on a server without groups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    pub ip: String,
    /// How many keys must report it within `confirm-window`.
    pub needed: usize,
    pub reports: Vec<WaitingView>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WaitingView {
    pub at: u64,
    /// Seconds, or null for permanent.
    pub bantime: Option<u64>,
    /// Held beyond the key's allowance, rather than waiting for confirmation.
    pub held: bool,
    pub jail: String,
    pub name: String,
    pub prog: String,
    /// Unix time when it stops counting.
    pub until: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Unban(Cidr),
    /// Lifts every ban that only this host reported, and drops its waiting reports.
    UnbanOrigin(String),
    /// Bans from a blocklist (`banshare import`), in the name of `origin`.
    Import {
        origin: String,
        reports: Vec<Report>,
    },
    Bans,
    Pending,
    Status,
}

impl Command {
    pub fn encode(&self) -> Vec<Vec<u8>> {
        let parts = match self {
            Command::Unban(ip) => vec![VERSION.to_string(), "UNBAN".into(), ip.to_string()],
            Command::UnbanOrigin(name) => {
                vec![VERSION.to_string(), "UNBAN-ORIGIN".into(), name.clone()]
            }
            Command::Import { origin, reports } => {
                let head = [VERSION.to_string(), "IMPORT".into(), origin.clone()];
                let lines = reports.iter().map(|r| r.fields().join(" "));
                head.into_iter().chain(lines).collect()
            }
            Command::Bans => vec![VERSION.to_string(), "BANS".into()],
            Command::Pending => vec![VERSION.to_string(), "PENDING".into()],
            Command::Status => vec![VERSION.to_string(), "STATUS".into()],
        };
        parts.into_iter().map(String::into_bytes).collect()
    }

    pub fn decode(frames: &[Vec<u8>]) -> Result<Command, ControlError> {
        let texts: Vec<&str> = frames
            .iter()
            .map(|f| std::str::from_utf8(f).map_err(|_| ControlError::NotText))
            .collect::<Result<_, _>>()?;
        match texts[..] {
            [VERSION, "UNBAN", ip] => {
                let ip = ip.parse().map_err(FieldError::from)?;
                Ok(Command::Unban(ip))
            }
            [VERSION, "UNBAN-ORIGIN", name] => Ok(Command::UnbanOrigin(name.to_owned())),
            [VERSION, "IMPORT", origin, ref lines @ ..] => Ok(Command::Import {
                origin: origin.to_owned(),
                reports: lines
                    .iter()
                    .map(|l| decode_report(l))
                    .collect::<Result<_, _>>()?,
            }),
            [VERSION, "BANS"] => Ok(Command::Bans),
            [VERSION, "PENDING"] => Ok(Command::Pending),
            [VERSION, "STATUS"] => Ok(Command::Status),
            _ => Err(ControlError::Unknown),
        }
    }
}

/// Why a control request cannot be read; `banshare` shows the reason to the admin
/// (docs/protocol.md quotes `unknown control request`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("not text")]
    NotText,
    /// A verb this side does not take, or a known one with the wrong number of frames.
    #[error("unknown control request")]
    Unknown,
    /// An import line that is not four space-separated fields.
    #[error("bad import line {line:?}")]
    BadImportLine { line: String },
    #[error(transparent)]
    Field(#[from] FieldError),
}

/// A report as `Command::Import` carries it: prog, jail, ip and bantime, space-separated.
fn decode_report(line: &str) -> Result<Report, ControlError> {
    match line.split(' ').collect::<Vec<_>>()[..] {
        [prog, jail, ip, bantime] => Ok(Report::parse(prog, jail, ip, bantime)?),
        _ => Err(ControlError::BadImportLine {
            line: printable(line),
        }),
    }
}

/// What `banshare import` did with a batch.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ImportSummary {
    pub accepted: u64,
    pub duplicate: u64,
    /// Refused, by reason: protected, min-prefix, fleet-host, max-bans.
    pub refused: BTreeMap<String, u64>,
    /// The first refusals, each with its network, for the admin to read.
    pub examples: Vec<String>,
}

/// The answer: Ok with text or JSON, or Err with the reason.
pub fn encode_reply(reply: &Result<String, String>) -> Vec<Vec<u8>> {
    let (status, body) = match reply {
        Ok(body) => ("OK", body),
        Err(reason) => ("ERROR", reason),
    };
    vec![VERSION.into(), status.into(), body.clone().into_bytes()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip() {
        for command in [
            Command::Unban("2001:db8::/64".parse().unwrap()),
            Command::Bans,
            Command::Status,
        ] {
            assert_eq!(Command::decode(&command.encode()), Ok(command));
        }
        let bad: Vec<Vec<u8>> = vec![VERSION.into(), b"UNBAN".to_vec(), b"1.2.3.4;x".to_vec()];
        assert!(matches!(
            Command::decode(&bad),
            Err(ControlError::Field(FieldError::Network(_)))
        ));
    }

    #[test]
    fn bad_requests_are_told_apart() {
        let frames = |parts: &[&str]| -> Vec<Vec<u8>> {
            parts.iter().map(|p| p.as_bytes().to_vec()).collect()
        };
        assert_eq!(Command::decode(&[vec![0xff]]), Err(ControlError::NotText));
        let unknown = Command::decode(&frames(&[VERSION, "REBOOT"])).unwrap_err();
        assert_eq!(unknown, ControlError::Unknown);
        assert_eq!(unknown.to_string(), "unknown control request");
        let import = |line| Command::decode(&frames(&[VERSION, "IMPORT", "list", line]));
        assert_eq!(
            import("a b"),
            Err(ControlError::BadImportLine { line: "a b".into() })
        );
        assert_eq!(
            import("a\nb").unwrap_err().to_string(),
            r#"bad import line "a\\nb""#
        );
        assert!(matches!(
            import("f2b sshd 203.0.113.7 0"),
            Err(ControlError::Field(FieldError::BadBantime { .. }))
        ));
    }
}
