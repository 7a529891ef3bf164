//! The ZeroMQ sockets that carry `wire`: CURVE on every socket and bounded receiving
//! (`transport`), the watch on their connections (`monitor`), a server followed from
//! elsewhere (`upstream`), the sockets of a request that servers answer with a verdict
//! (`request`, run by `crate::schedule`), the control socket between `banshare` and a
//! daemon (`control`), and polling them all by name (`poll`).

pub mod control;
pub mod monitor;
pub mod poll;
pub mod request;
pub mod transport;
pub mod upstream;
