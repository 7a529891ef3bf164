//! What travels between the sides: the protocol's messages and their text, network
//! addresses as the protocol writes them, CURVE keys and their files, the sockets, the
//! watch on their connections, and the control socket between `banshare` and a daemon.

pub mod cidr;
pub mod control;
pub mod follow;
pub mod handoff;
pub mod keys;
pub mod monitor;
pub mod protocol;
pub mod topic;
pub mod transport;
pub mod upstream;
