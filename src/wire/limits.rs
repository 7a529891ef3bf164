//! The protocol's tag and the limits of its fields: what the codecs check and what their
//! errors (`error`) name, apart from both so that neither needs the other for them.

/// First frame of every current message, and the start of every topic; a new incompatible
/// format gets a new tag.
pub const VERSION: &str = "BANSHARE1";

/// The revision of `VERSION` this program speaks (docs/protocol.md, section 9): 1 was
/// banshare 0.1.0, whose readers took only the frames they knew; from 2 on, readers ignore
/// what a later revision adds at the end of a message, and a server answers HELLO with its
/// revision, so that a later requester knows what it may send.
pub const REVISION: u32 = 2;

/// Longest prog, jail or key name.
pub const MAX_NAME: usize = 64;

/// Longest group name.
pub const MAX_GROUP: usize = 32;

/// Ten years: longer bantimes are surely a mistake, and bigger numbers risk overflow.
pub const MAX_BANTIME: u64 = 10 * 366 * 86400;
