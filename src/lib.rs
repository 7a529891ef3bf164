//! banshare shares fail2ban and psad bans across a fleet: `banshare-report` sends a ban to
//! `banshare-server`, which checks, de-duplicates and publishes it, and `banshare-client` on
//! every host applies it. Everything travels over ZeroMQ with CURVE.
//!
//! The binaries in src/bin are thin: each calls one `main` here.

// The two sides, and what travels between them.
pub mod client;
pub mod server;
pub mod sockets;
pub mod wire;

// Shared by every program: configuration, command line, daemon plumbing, local files.
pub mod admin;
pub mod blocklist;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod exit;
pub mod files;
pub mod fuzz;
pub mod logging;
pub mod protect;
pub mod schedule;
pub mod store;
