//! Groups on the wire (docs/protocol.md section 4, *Groups*). A server with groups sends
//! each group's messages, and its snapshot pages, under the topic `BANSHARE1/NAME/` in
//! frame 0, so that ZeroMQ's prefix filtering keeps a group's bans from the hosts that did
//! not subscribe to it; a server without groups sends `BANSHARE1` alone, as before groups.
//! The `/` after the name keeps `web` from matching `webmail`; a dry-run group's topic
//! ends in `dry-run`, which the same subscription matches.

use std::fmt;
use std::sync::Arc;

use crate::logging::printable;
use crate::wire::error::{FieldError, MessageError};

pub use crate::wire::limits::{MAX_GROUP, VERSION};
/// The group of whatever no `[[groups]]` rule matches.
pub const DEFAULT_GROUP: &str = "default";
const DRY_RUN: &str = "dry-run";

/// A group's name: 1 to 32 characters from `[A-Za-z0-9_-]`, starting with a letter or a
/// digit. No `/`, so that a topic reads back one way only.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Group(Arc<str>);

impl Group {
    pub fn parse(text: &str) -> Result<Group, FieldError> {
        let ok = text.len() <= MAX_GROUP
            && text.starts_with(|c: char| c.is_ascii_alphanumeric())
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-".contains(&b));
        if ok {
            Ok(Group(Arc::from(text)))
        } else {
            Err(FieldError::BadGroup {
                text: printable(text),
            })
        }
    }

    pub fn default_group() -> Group {
        Group(Arc::from(DEFAULT_GROUP))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// What a subscriber sends to receive this group, dry run or not: `BANSHARE1/NAME/`.
    pub fn subscription(&self) -> String {
        format!("{VERSION}/{self}/")
    }
}

impl fmt::Display for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Group {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Group, D::Error> {
        let text = String::deserialize(d)?;
        Group::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Frame 0 of a published message or a snapshot page: which group it belongs to, if the
/// server has groups, and whether that group is a dry run.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Topic {
    pub group: Option<Group>,
    pub dry_run: bool,
}

impl Topic {
    /// A server without groups: `BANSHARE1`.
    pub fn ungrouped() -> Topic {
        Topic::default()
    }

    pub fn of(group: Group, dry_run: bool) -> Topic {
        Topic {
            group: Some(group),
            dry_run,
        }
    }

    pub fn parse(frame: &[u8]) -> Result<Topic, MessageError> {
        let text = std::str::from_utf8(frame).map_err(|_| MessageError::TopicNotText)?;
        if text == VERSION {
            return Ok(Topic::ungrouped());
        }
        let unknown = || MessageError::UnknownTopic {
            topic: printable(text),
        };
        let rest = text
            .strip_prefix(VERSION)
            .and_then(|r| r.strip_prefix('/'))
            .ok_or_else(unknown)?;
        let (name, suffix) = rest.split_once('/').ok_or_else(unknown)?;
        let dry_run = match suffix {
            "" => false,
            DRY_RUN => true,
            _ => return Err(unknown()),
        };
        let group = Group::parse(name).map_err(|_| unknown())?;
        Ok(Topic::of(group, dry_run))
    }

    /// The group's name for the log: "group web", or "" for a server without groups.
    pub fn describe(&self) -> String {
        match (&self.group, self.dry_run) {
            (None, _) => String::new(),
            (Some(g), false) => format!("group {g}"),
            (Some(g), true) => format!("group {g}, a dry run"),
        }
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.group {
            None => f.write_str(VERSION),
            Some(group) => {
                let suffix = if self.dry_run { DRY_RUN } else { "" };
                write!(f, "{}{suffix}", group.subscription())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_read_back_as_written() {
        let web = Group::parse("web").unwrap();
        for topic in [
            Topic::ungrouped(),
            Topic::of(web.clone(), false),
            Topic::of(web, true),
        ] {
            assert_eq!(Topic::parse(topic.to_string().as_bytes()), Ok(topic));
        }
        assert_eq!(
            Topic::of(Group::parse("mail").unwrap(), true).to_string(),
            "BANSHARE1/mail/dry-run"
        );
    }

    #[test]
    fn a_group_subscription_matches_only_its_own_topics() {
        let web = Group::parse("web").unwrap().subscription();
        let webmail = Topic::of(Group::parse("webmail").unwrap(), false).to_string();
        assert!(!webmail.starts_with(&web));
        let dry = Topic::of(Group::parse("web").unwrap(), true).to_string();
        assert!(dry.starts_with(&web));
    }

    #[test]
    fn malformed_topics_and_names_are_refused() {
        for bad in [
            "BANSHARE2",
            "BANSHARE1/",
            "BANSHARE1//",
            "BANSHARE1/web",
            "BANSHARE1/web/x",
            "BANSHARE1/-web/",
            "BANSHARE1/w.b/",
            "BANSHARE1/web/dry-run/",
        ] {
            let topic = bad.into();
            assert_eq!(
                Topic::parse(bad.as_bytes()),
                Err(MessageError::UnknownTopic { topic }),
            );
        }
        assert_eq!(Topic::parse(b"\xff"), Err(MessageError::TopicNotText));
        assert_eq!(
            Topic::parse(b"BANSHARE2").unwrap_err().to_string(),
            r#"unknown topic "BANSHARE2""#
        );
        for bad in ["", "-web", "_web", "web/x", "a.b", &"x".repeat(33)] {
            let text = bad.into();
            assert_eq!(Group::parse(bad), Err(FieldError::BadGroup { text }));
        }
        assert!(Group::parse(&"x".repeat(32)).is_ok());
        assert_eq!(
            Group::parse("w/x").unwrap_err().to_string(),
            "group \"w/x\" must be 1 to 32 characters from A-Z a-z 0-9 _ - and start with a \
             letter or a digit"
        );
    }
}
