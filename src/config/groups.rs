//! server.toml's `[[groups]]`: which reports ban in which group, and each group's policy
//! (docs/protocol.md section 4, *Groups*; banshare.toml(5)).

use serde::Deserialize;

use crate::config::duration::HumanDuration;
use crate::wire::error::FieldError;
use crate::wire::protocol::Name;
use crate::wire::topic::{Group, DEFAULT_GROUP};

/// The most groups a server holds, the default one included: each costs a heartbeat a
/// second and a snapshot per client catch-up.
pub const MAX_GROUPS: usize = 16;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct GroupConfig {
    pub name: Group,
    /// A report is in this group when its jail, its prog and its reporting host's key name
    /// match every list given here; the first such group in the file takes it.
    #[serde(default)]
    pub jails: Vec<Pattern>,
    #[serde(default)]
    pub progs: Vec<Pattern>,
    #[serde(default)]
    pub hosts: Vec<Pattern>,
    /// Published as a dry run: hosts log what they would do and change nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// The group's own `min-reporters` and `confirm-window`; the top-level ones otherwise.
    #[serde(default)]
    pub min_reporters: Option<usize>,
    #[serde(default)]
    pub confirm_window: Option<HumanDuration>,
}

/// Why server.toml's `[[groups]]` were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupsError {
    /// A pattern whose name part is no valid name; the reason is `Name::parse`'s.
    #[error("{0}, with an optional * at the end")]
    BadPattern(FieldError),
    #[error("at most {max} groups, the default one included", max = MAX_GROUPS)]
    TooMany,
    #[error("group {0} is named twice")]
    NamedTwice(Group),
    /// Rules on the default group would be ignored: it takes what the others leave.
    #[error(
        "group {default} takes what no other group matches, and has no jails, progs or hosts",
        default = DEFAULT_GROUP
    )]
    DefaultHasRules,
    /// A group without rules would match every report, leaving none for the others.
    #[error("group {0} needs jails, progs or hosts to match reports")]
    NoRules(Group),
    #[error("group {group}: min-reporters must be between 1 and {max}")]
    MinReporters { group: Group, max: usize },
}

/// A name, or the start of one followed by `*`: `sshd`, `nginx-*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    prefix: bool,
}

impl Pattern {
    pub fn parse(text: &str) -> Result<Pattern, GroupsError> {
        let (stem, prefix) = match text.strip_suffix('*') {
            Some(stem) => (stem, true),
            None => (text, false),
        };
        // "*" alone matches every name: the default group does that already.
        Name::parse("pattern", stem).map_err(GroupsError::BadPattern)?;
        Ok(Pattern {
            text: stem.to_owned(),
            prefix,
        })
    }

    pub fn matches(&self, name: &str) -> bool {
        if self.prefix {
            name.starts_with(&self.text)
        } else {
            name == self.text
        }
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Pattern, D::Error> {
        let text = String::deserialize(d)?;
        Pattern::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl GroupConfig {
    /// The default group, as configured by a `[[groups]]` entry named `default` or not.
    pub fn default_group() -> GroupConfig {
        GroupConfig {
            name: Group::default_group(),
            jails: Vec::new(),
            progs: Vec::new(),
            hosts: Vec::new(),
            dry_run: false,
            min_reporters: None,
            confirm_window: None,
        }
    }

    pub fn is_default(&self) -> bool {
        self.name.as_str() == DEFAULT_GROUP
    }

    /// Whether a report of `prog` and `jail` from the key named `host` belongs here.
    pub fn matches(&self, prog: &str, jail: &str, host: &str) -> bool {
        let any = |patterns: &[Pattern], name: &str| {
            patterns.is_empty() || patterns.iter().any(|p| p.matches(name))
        };
        any(&self.jails, jail) && any(&self.progs, prog) && any(&self.hosts, host)
    }

    fn has_rules(&self) -> bool {
        !(self.jails.is_empty() && self.progs.is_empty() && self.hosts.is_empty())
    }
}

/// The groups as the server runs them: the default group first, then the others in the
/// file's order. Empty when server.toml has no `[[groups]]`.
pub fn resolve(groups: &[GroupConfig]) -> Vec<GroupConfig> {
    if groups.is_empty() {
        return Vec::new();
    }
    let default = groups
        .iter()
        .find(|g| g.is_default())
        .cloned()
        .unwrap_or_else(GroupConfig::default_group);
    std::iter::once(default)
        .chain(groups.iter().filter(|g| !g.is_default()).cloned())
        .collect()
}

/// Unique names, rules on every group but the default one, and sane policies.
pub fn check(groups: &[GroupConfig], max_min_reporters: usize) -> Result<(), GroupsError> {
    if groups.len() > MAX_GROUPS {
        return Err(GroupsError::TooMany);
    }
    for (i, group) in groups.iter().enumerate() {
        let name = &group.name;
        if groups[..i].iter().any(|g| g.name == *name) {
            return Err(GroupsError::NamedTwice(name.clone()));
        }
        match (group.is_default(), group.has_rules()) {
            (true, true) => return Err(GroupsError::DefaultHasRules),
            (false, false) => return Err(GroupsError::NoRules(name.clone())),
            _ => {}
        }
        if let Some(k) = group.min_reporters {
            if !(1..=max_min_reporters).contains(&k) {
                return Err(GroupsError::MinReporters {
                    group: name.clone(),
                    max: max_min_reporters,
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups(text: &str) -> Vec<GroupConfig> {
        #[derive(Deserialize)]
        struct File {
            groups: Vec<GroupConfig>,
        }
        toml::from_str::<File>(text).unwrap().groups
    }

    #[test]
    fn reports_match_by_jail_prog_and_host() {
        let g = groups(
            r#"
            [[groups]]
            name = "web"
            jails = ["nginx-*", "apache"]
            [[groups]]
            name = "mail"
            hosts = ["mail1", "mx*"]
            progs = ["fail2ban"]
            "#,
        );
        assert!(g[0].matches("fail2ban", "nginx-botsearch", "db1"));
        assert!(g[0].matches("psad", "apache", "db1"));
        assert!(!g[0].matches("fail2ban", "apache2", "db1"));
        assert!(g[1].matches("fail2ban", "postfix", "mx2"));
        assert!(!g[1].matches("psad", "psad", "mx2"));
        assert!(!g[1].matches("fail2ban", "postfix", "web1"));
        let resolved = resolve(&g);
        assert_eq!(resolved[0].name.as_str(), "default");
        assert_eq!(resolved.len(), 3);
        assert!(check(&resolved, 16).is_ok());
    }

    #[test]
    fn bad_groups_are_refused() {
        let a = Group::parse("a").unwrap();
        let twice = groups("[[groups]]\nname='a'\njails=['x']\n[[groups]]\nname='a'\njails=['y']");
        assert_eq!(check(&twice, 16), Err(GroupsError::NamedTwice(a.clone())));
        let bare = groups("[[groups]]\nname='a'");
        assert_eq!(check(&bare, 16), Err(GroupsError::NoRules(a.clone())));
        let default = groups("[[groups]]\nname='default'\njails=['x']");
        assert_eq!(check(&default, 16), Err(GroupsError::DefaultHasRules));
        assert_eq!(
            GroupsError::DefaultHasRules.to_string(),
            "group default takes what no other group matches, and has no jails, progs or hosts"
        );
        let k = groups("[[groups]]\nname='a'\njails=['x']\nmin-reporters=17");
        let err = check(&k, 16).unwrap_err();
        assert_eq!(err, GroupsError::MinReporters { group: a, max: 16 });
        assert_eq!(
            err.to_string(),
            "group a: min-reporters must be between 1 and 16"
        );
        let many: String = (0..=MAX_GROUPS)
            .map(|i| format!("[[groups]]\nname='g{i}'\njails=['x']\n"))
            .collect();
        assert_eq!(check(&groups(&many), 16), Err(GroupsError::TooMany));
        let err = Pattern::parse("a b*").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("pattern \"a b\" must be 1 to 64 characters"),
            "{err}"
        );
        assert!(
            err.to_string().ends_with(", with an optional * at the end"),
            "{err}"
        );
        for bad in ["*", "-x*", "a b", "x**"] {
            assert!(
                matches!(Pattern::parse(bad), Err(GroupsError::BadPattern(_))),
                "{bad}"
            );
        }
    }
}
