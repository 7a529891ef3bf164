//! The integration tests, one crate: the shared helpers (`common`) compile once, and every
//! test runs in one process, so that the long container tests run beside the short ones.
//! Run one file's tests with its name, as in `cargo test --test integration ansible::`.

mod common;

mod abuse;
mod ansible;
mod attack;
mod auth;
mod blocklist;
mod catchup;
mod cli;
mod control;
mod daemon;
mod durability;
mod fail2ban;
mod feeds;
mod flood;
mod fuzz;
mod groups;
mod ha;
mod handoff;
mod hostile;
mod local;
mod manpages;
mod metrics;
mod nftables;
mod peering;
mod pipeline;
mod policy;
mod psad;
mod release;
mod rogue;
mod system;
mod systemd;
mod upgrade;
