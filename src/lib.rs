//! banshare shares fail2ban and psad bans across a fleet: `banshare-report` sends a ban to
//! `banshare-server`, which checks, de-duplicates and publishes it, and `banshare-client` on
//! every host applies it. Everything travels over ZeroMQ with CURVE.
//!
//! The binaries in src/bin are thin: each calls one `main` here.

// One call needs unsafe: glibc's malloc_trim, in memory.rs, where it is allowed on its own.
#![deny(unsafe_code)]

pub mod admin;
pub mod applied;
pub mod backend;
pub mod bans;
pub mod cidr;
pub mod cli;
pub mod client;
pub mod config;
pub mod connection;
pub mod control;
pub mod duration;
pub mod exit;
pub mod files;
pub mod keys;
pub mod limits;
pub mod listener;
pub mod logging;
pub mod memory;
pub mod protect;
pub mod protocol;
pub mod report;
pub mod runner;
pub mod server;
pub mod service;
pub mod spool;
pub mod store;
pub mod template;
pub mod transport;
pub mod worker;
