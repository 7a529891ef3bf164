//! Applying bans on this host: one command per ban through the runner, or batches for
//! fail2ban and nftables, and the record of what was applied.

pub mod backend;
pub mod record;
pub mod runner;
