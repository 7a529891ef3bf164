//! What both daemons run on: systemd's notifications, signals and watchdog, worker threads
//! that must not die unnoticed, and the guard on their memory.

pub mod memory;
pub mod metrics;
pub mod service;
pub mod worker;
