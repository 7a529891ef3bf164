//! Fleet policy: the rules of server.toml that decide what a report bans beyond the network
//! it names, and for how long. Every rule is off by default, so that a server.toml without them behaves as
//! before; what a rule did is said in the audit line (README "Policies").

pub mod aggregate;
pub mod confirm;
pub mod recidive;
