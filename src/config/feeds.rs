//! server.toml's `[[feeds]]`: blocklists the server fetches on an interval and keeps current
//! (src/server/feeds; banshare.toml(5)).

use std::path::PathBuf;

use serde::Deserialize;

use crate::blocklist::Format;
use crate::config::duration::HumanDuration;
use crate::config::{default_list_min_prefix, list_min_prefix, MinPrefix};
use crate::wire::protocol::{Name, MAX_BANTIME, MAX_NAME};

/// The most feeds a server fetches: each is a thread's turn and a file in the state dir.
pub const MAX_FEEDS: usize = 32;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct FeedConfig {
    /// Its bans are in the name of `feed:NAME`, and entries that name no jail have NAME.
    pub name: String,
    /// http:// or https://.
    pub url: String,
    #[serde(default = "default_format")]
    pub format: Format,
    #[serde(default = "default_interval")]
    pub interval: HumanDuration,
    /// How long a listed entry is banned, renewed while it stays listed; without it, until
    /// it leaves the list.
    pub bantime: Option<HumanDuration>,
    /// Narrows `import-min-prefix` for this feed.
    #[serde(
        default = "default_list_min_prefix",
        deserialize_with = "list_min_prefix"
    )]
    pub min_prefix: MinPrefix,
    /// A new version that drops more than this share of the entries (percent) is refused,
    /// and the last good one kept.
    #[serde(default = "default_max_shrink")]
    pub max_shrink: u8,
    /// ipsum: the addresses that at least this many lists name.
    #[serde(default = "default_min_count")]
    pub min_count: u64,
    /// The CA certificates (PEM) to verify an https server with, instead of the system's.
    pub ca_file: Option<PathBuf>,
    /// format = "crowdsec-lapi": the file (0600 or 0640) holding the bouncer API key that
    /// `cscli bouncers add` made, sent as X-Api-Key.
    pub api_key_file: Option<PathBuf>,
    /// The `[[groups]]` its bans are in; without it, the group the rules pick (which can
    /// match the feed's name as jail).
    pub group: Option<String>,
}

impl FeedConfig {
    /// The name its bans are in: never a host's, since key names have no colon.
    pub fn origin(&self) -> String {
        format!("feed:{}", self.name)
    }
}

fn default_format() -> Format {
    Format::Auto
}

fn default_interval() -> HumanDuration {
    HumanDuration::secs(3600)
}

fn default_max_shrink() -> u8 {
    50
}

fn default_min_count() -> u64 {
    1
}

/// What is wrong with a `[[feeds]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeedError {
    #[error("at most {MAX_FEEDS} feeds")]
    TooMany,
    #[error("feed name {0:?}: letters, digits, . _ @ - only, not first . or -, at most {max} characters", max = MAX_NAME - 5)]
    Name(String),
    #[error("two feeds are named {0}")]
    Twice(String),
    #[error("feed {0}: url must start with http:// or https:// and name a host")]
    Url(String),
    #[error("feed {0}: interval must be at least 1s")]
    Interval(String),
    #[error("feed {0}: bantime must be between 1s and {MAX_BANTIME}s (ten years)")]
    Bantime(String),
    #[error("feed {0}: max-shrink is a percentage, at most 100")]
    MaxShrink(String),
    #[error("feed {0}: min-prefix's ipv4 must be at most 32 and ipv6 at most 128")]
    MinPrefix(String),
    #[error("feed {0}: ca-file must be an absolute path")]
    CaFile(String),
    #[error("feed {0}: group {1} is not one of [[groups]]")]
    Group(String, String),
    #[error("feed {0}: format = \"crowdsec-lapi\" needs api-key-file, and only it takes one")]
    ApiKey(String),
}

/// Checks `feeds`, whose `group`s must be among `groups`.
pub fn check(feeds: &[FeedConfig], groups: &[&str]) -> Result<(), FeedError> {
    if feeds.len() > MAX_FEEDS {
        return Err(FeedError::TooMany);
    }
    for (i, feed) in feeds.iter().enumerate() {
        let name = || feed.name.clone();
        // A file name in the state dir too: no colon, no leading dot (`..`).
        let named = Name::parse("jail", &feed.name).is_ok()
            && !feed.name.contains(':')
            && !feed.name.starts_with('.');
        if !named || Name::parse("origin", &feed.origin()).is_err() {
            return Err(FeedError::Name(feed.name.clone()));
        }
        if feeds[..i].iter().any(|f| f.name == feed.name) {
            return Err(FeedError::Twice(name()));
        }
        let rest = feed
            .url
            .strip_prefix("https://")
            .or_else(|| feed.url.strip_prefix("http://"));
        if !rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/')) {
            return Err(FeedError::Url(name()));
        }
        if feed.interval.0.as_secs() == 0 {
            return Err(FeedError::Interval(name()));
        }
        if feed
            .bantime
            .is_some_and(|b| !(1..=MAX_BANTIME).contains(&b.0.as_secs()))
        {
            return Err(FeedError::Bantime(name()));
        }
        if feed.max_shrink > 100 {
            return Err(FeedError::MaxShrink(name()));
        }
        if feed.min_prefix.ipv4 > 32 || feed.min_prefix.ipv6 > 128 {
            return Err(FeedError::MinPrefix(name()));
        }
        if feed.ca_file.as_ref().is_some_and(|p| !p.is_absolute()) {
            return Err(FeedError::CaFile(name()));
        }
        let lapi = feed.format == Format::CrowdsecLapi;
        let key_file = feed.api_key_file.as_ref();
        if lapi != key_file.is_some() || key_file.is_some_and(|p| !p.is_absolute()) {
            return Err(FeedError::ApiKey(name()));
        }
        if let Some(group) = feed
            .group
            .as_ref()
            .filter(|g| !groups.contains(&g.as_str()))
        {
            return Err(FeedError::Group(name(), group.clone()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feeds(text: &str) -> Vec<FeedConfig> {
        #[derive(Deserialize)]
        struct File {
            feeds: Vec<FeedConfig>,
        }
        toml::from_str::<File>(text).unwrap().feeds
    }

    #[test]
    fn defaults_and_each_mistake_named() {
        let good = feeds(
            "[[feeds]]\nname = \"drop\"\nurl = \"https://www.spamhaus.org/drop/drop_v4.json\"\n",
        );
        assert_eq!(check(&good, &[]), Ok(()));
        assert_eq!(
            (
                good[0].interval.0.as_secs(),
                good[0].max_shrink,
                good[0].bantime
            ),
            (3600, 50, None)
        );
        assert_eq!(good[0].min_prefix, MinPrefix::LISTS);
        assert_eq!(good[0].origin(), "feed:drop");
        let one = |extra: &str| {
            feeds(&format!(
                "[[feeds]]\nname = \"drop\"\nurl = \"https://x.org/d\"\n{extra}"
            ))
        };
        for (extra, error) in [
            ("max-shrink = 101\n", FeedError::MaxShrink("drop".into())),
            ("interval = \"0s\"\n", FeedError::Interval("drop".into())),
            ("ca-file = \"ca.pem\"\n", FeedError::CaFile("drop".into())),
            (
                "min-prefix = { ipv4 = 33 }\n",
                FeedError::MinPrefix("drop".into()),
            ),
        ] {
            assert_eq!(check(&one(extra), &["web"]), Err(error), "{extra}");
        }
        let bad_url = feeds("[[feeds]]\nname = \"d\"\nurl = \"ftp://x.org/d\"\n");
        assert_eq!(check(&bad_url, &[]), Err(FeedError::Url("d".into())));
        for name in ["a:b", "..", ".hidden", "-x", "a/b"] {
            let bad_name = feeds(&format!(
                "[[feeds]]\nname = \"{name}\"\nurl = \"https://x.org/d\"\n"
            ));
            assert_eq!(check(&bad_name, &[]), Err(FeedError::Name(name.into())));
        }
        let lapi = "format = \"crowdsec-lapi\"\n";
        assert_eq!(
            check(&one(lapi), &[]),
            Err(FeedError::ApiKey("drop".into()))
        );
        let key = "api-key-file = \"/etc/banshare/crowdsec.key\"\n";
        assert_eq!(check(&one(&format!("{lapi}{key}")), &[]), Ok(()));
        assert_eq!(check(&one(key), &[]), Err(FeedError::ApiKey("drop".into())));
        let twice = [good.clone(), good].concat();
        assert_eq!(check(&twice, &[]), Err(FeedError::Twice("drop".into())));
    }
}
