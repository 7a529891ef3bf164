//! Why what arrived cannot be read, one kind per problem, so that callers and tests can
//! tell them apart. Each prints the one line that peers and users have always been sent:
//! reasons travel in INVALID verdicts, and docs/protocol.md quotes some of them. Texts
//! kept from the sender are made printable first (`logging::printable`).

use crate::wire::cidr::CidrError;
use crate::wire::limits::{MAX_BANTIME, MAX_GROUP, MAX_NAME, VERSION};

/// A field that breaks the rules of docs/protocol.md section 2.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    #[error("a field is not UTF-8 text")]
    NotText,
    /// Not a strict decimal: digits only, no sign, no spaces.
    #[error("{field} {text:?} is not a number")]
    NotANumber { field: String, text: String },
    /// A prog, jail or host name outside `[A-Za-z0-9._@:-]{1,64}`, or one that starts with
    /// `-` and could pass for an option.
    #[error(
        "{field} {text:?} must be 1 to {MAX_NAME} characters from A-Z a-z 0-9 . _ @ : - \
         and must not start with -"
    )]
    BadName { field: String, text: String },
    #[error("bantime {text:?} must be -1 or a number of seconds from 1 to {MAX_BANTIME}")]
    BadBantime { text: String },
    #[error(
        "group {text:?} must be 1 to {MAX_GROUP} characters from A-Z a-z 0-9 _ - and start \
         with a letter or a digit"
    )]
    BadGroup { text: String },
    #[error(transparent)]
    Network(#[from] CidrError),
}

/// A message, or a line of one, whose shape is wrong: too few or too many frames or fields,
/// a verb or status this side does not know; or one of its fields (`Field`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error(transparent)]
    Field(#[from] FieldError),
    /// A request with a first frame other than `BANSHARE1`, such as a newer reporter's.
    #[error("unsupported protocol {version:?}; this server speaks {VERSION}")]
    UnsupportedProtocol { version: String },
    #[error("unknown request {verb:?} with {frames} frames")]
    UnknownRequest { verb: String, frames: usize },
    #[error("empty request")]
    EmptyRequest,
    #[error("legacy report must be prog;jail;ip;sender, got {fields} fields")]
    LegacyFields { fields: usize },
    #[error("reply has {frames} frames, fewer than 3")]
    ReplyFrames { frames: usize },
    #[error("reply is not in the BANSHARE1 format")]
    ReplyVersion,
    #[error("reply has an unknown status")]
    UnknownStatus,
    #[error("an unban has 4 fields")]
    UnbanFields,
    #[error("a ban has 7 fields, not {fields}")]
    BanFields { fields: usize },
    /// A ban's bantime is empty: only a report may leave it to the server's default.
    #[error("published ban has no bantime")]
    NoBantime,
    #[error("not a snapshot page")]
    NotSnapshotPage,
    #[error("an empty message")]
    EmptyMessage,
    /// An UNBAN is 12 frames, or 10 from a server before dated unbans.
    #[error("an UNBAN has 12 frames, not {frames}")]
    UnbanFrames { frames: usize },
    #[error("unknown message with {frames} frames")]
    UnknownMessage { frames: usize },
    /// More frames than any banshare message has: only the first were kept (see
    /// `sockets::transport::recv_bounded`).
    #[error("a message of {frames} frames")]
    Oversized { frames: usize },
    /// A reply on a DEALER socket must come behind the empty delimiter the server echoes.
    #[error("reply without delimiter")]
    NoDelimiter,
    #[error("frame 0 is not text")]
    TopicNotText,
    #[error("unknown topic {topic:?}")]
    UnknownTopic { topic: String },
}

/// A network is a field: lets `?` take a `CidrError` where a message is decoded.
impl From<CidrError> for MessageError {
    fn from(error: CidrError) -> MessageError {
        MessageError::Field(error.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::cidr::Cidr;

    /// Every reason reads as it always has: peers, users and external checkers compare
    /// them, and docs/protocol.md quotes some.
    #[test]
    fn reasons_read_as_they_always_have() {
        let text = |t: &str| t.to_string();
        let reasons: Vec<(MessageError, &str)> = vec![
            (FieldError::NotText.into(), "a field is not UTF-8 text"),
            (
                FieldError::NotANumber {
                    field: text("epoch"),
                    text: text("x"),
                }
                .into(),
                r#"epoch "x" is not a number"#,
            ),
            (
                FieldError::BadName {
                    field: text("jail"),
                    text: text("-rf"),
                }
                .into(),
                r#"jail "-rf" must be 1 to 64 characters from A-Z a-z 0-9 . _ @ : - and must not start with -"#,
            ),
            (
                FieldError::BadBantime { text: text("0") }.into(),
                r#"bantime "0" must be -1 or a number of seconds from 1 to 316224000"#,
            ),
            (
                FieldError::BadGroup { text: text("w/x") }.into(),
                r#"group "w/x" must be 1 to 32 characters from A-Z a-z 0-9 _ - and start with a letter or a digit"#,
            ),
            (
                FieldError::Network(CidrError::NotAnAddress { text: text("x") }).into(),
                r#""x" is not an IPv4 or IPv6 address"#,
            ),
            (
                FieldError::Network(CidrError::PrefixOutOfRange {
                    prefix: text("33"),
                    addr: text("1.2.3.4"),
                    width: 32,
                })
                .into(),
                "prefix length /33 is out of range for 1.2.3.4 (0 to 32)",
            ),
            (
                FieldError::Network(CidrError::NotAPrefix { text: text("-1") }).into(),
                r#""-1" is not a prefix length"#,
            ),
            (
                FieldError::Network(CidrError::HostBitsSet {
                    text: text("198.51.100.7/24"),
                    network: "198.51.100.0/24".parse::<Cidr>().unwrap(),
                })
                .into(),
                "198.51.100.7/24 has host bits set; did you mean 198.51.100.0/24?",
            ),
            (
                MessageError::UnsupportedProtocol {
                    version: text("BANSHARE2"),
                },
                r#"unsupported protocol "BANSHARE2"; this server speaks BANSHARE1"#,
            ),
            (
                MessageError::UnknownRequest {
                    verb: text("GOODBYE"),
                    frames: 3,
                },
                r#"unknown request "GOODBYE" with 3 frames"#,
            ),
            (MessageError::EmptyRequest, "empty request"),
            (
                MessageError::LegacyFields { fields: 3 },
                "legacy report must be prog;jail;ip;sender, got 3 fields",
            ),
            (
                MessageError::ReplyFrames { frames: 2 },
                "reply has 2 frames, fewer than 3",
            ),
            (
                MessageError::ReplyVersion,
                "reply is not in the BANSHARE1 format",
            ),
            (MessageError::UnknownStatus, "reply has an unknown status"),
            (MessageError::UnbanFields, "an unban has 4 fields"),
            (
                MessageError::BanFields { fields: 1 },
                "a ban has 7 fields, not 1",
            ),
            (MessageError::NoBantime, "published ban has no bantime"),
            (MessageError::NotSnapshotPage, "not a snapshot page"),
            (MessageError::EmptyMessage, "an empty message"),
            (
                MessageError::UnbanFrames { frames: 5 },
                "an UNBAN has 12 frames, not 5",
            ),
            (
                MessageError::UnknownMessage { frames: 4 },
                "unknown message with 4 frames",
            ),
            (
                MessageError::Oversized { frames: 50001 },
                "a message of 50001 frames",
            ),
            (MessageError::NoDelimiter, "reply without delimiter"),
            (MessageError::TopicNotText, "frame 0 is not text"),
            (
                MessageError::UnknownTopic {
                    topic: text("BANSHARE2"),
                },
                r#"unknown topic "BANSHARE2""#,
            ),
        ];
        for (error, reason) in reasons {
            assert_eq!(error.to_string(), reason, "{error:?}");
        }
    }
}
