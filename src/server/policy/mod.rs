//! Fleet policy: the rules of server.toml that decide what a report bans beyond the network
//! it names, and for how long. Every rule is off by default, so that a server.toml without them behaves as
//! before; what a rule did is said in the audit line (README "Policies").

pub mod aggregate;
pub mod confirm;
pub mod recidive;

use crate::config::ServerConfig;
use crate::wire::protocol::Bantime;

/// A report's bantime in seconds, the server's `default-bantime` when it gave none; None
/// for permanent.
pub fn seconds(bantime: Bantime, config: &ServerConfig) -> Option<u64> {
    match bantime {
        Bantime::Default => Some(config.default_bantime.0.as_secs().max(1)),
        Bantime::Permanent => None,
        Bantime::Seconds(s) => Some(s),
    }
}
