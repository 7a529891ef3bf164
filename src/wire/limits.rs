//! The protocol's tag and the limits of its fields: what the codecs check and what their
//! errors (`error`) name, apart from both so that neither needs the other for them.

/// First frame of every current message, and the start of every topic; a new incompatible
/// format gets a new tag.
pub const VERSION: &str = "BANSHARE1";

/// Longest prog, jail or key name.
pub const MAX_NAME: usize = 64;

/// Longest group name.
pub const MAX_GROUP: usize = 32;

/// Ten years: longer bantimes are surely a mistake, and bigger numbers risk overflow.
pub const MAX_BANTIME: u64 = 10 * 366 * 86400;
