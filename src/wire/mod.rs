//! What travels between the sides, without a socket: the protocol's messages and their
//! text, network addresses as the protocol writes them, groups' topics, CURVE keys and their
//! files, what the control socket and the report handoff carry, the state of following a
//! server (which says when to catch up), and why what arrived cannot be read. The sockets
//! that carry it are in `sockets`.

pub mod cidr;
pub mod control;
pub mod error;
pub mod follow;
pub mod handoff;
pub mod keys;
pub mod limits;
pub mod protocol;
pub mod topic;
