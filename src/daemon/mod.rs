//! What both daemons run on: systemd's notifications, signals and watchdog, worker threads
//! that must not die unnoticed, the guard on their memory, and the metrics endpoint.

pub mod http;
pub mod memory;
pub mod metrics;
pub mod service;
pub mod worker;
