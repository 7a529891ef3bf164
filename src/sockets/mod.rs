//! The ZeroMQ sockets that carry `wire`: CURVE on every socket and bounded receiving
//! (`transport`), the watch on their connections (`monitor`), a server followed from
//! elsewhere (`upstream`), and the control socket between `banshare` and a daemon
//! (`control`).

pub mod control;
pub mod monitor;
pub mod transport;
pub mod upstream;
