//! server.toml's `[[groups]]`: which reports ban in which group, and each group's policy
//! (docs/protocol.md section 4, *Groups*; banshare.toml(5)).

use serde::Deserialize;

use crate::config::duration::HumanDuration;
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

/// A name, or the start of one followed by `*`: `sshd`, `nginx-*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    prefix: bool,
}

impl Pattern {
    pub fn parse(text: &str) -> Result<Pattern, String> {
        let (stem, prefix) = match text.strip_suffix('*') {
            Some(stem) => (stem, true),
            None => (text, false),
        };
        // "*" alone matches every name: the default group does that already.
        Name::parse("pattern", stem).map_err(|e| format!("{e}, with an optional * at the end"))?;
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
pub fn check(groups: &[GroupConfig], max_min_reporters: usize) -> Result<(), String> {
    if groups.len() > MAX_GROUPS {
        return Err(format!(
            "at most {MAX_GROUPS} groups, the default one included"
        ));
    }
    for (i, group) in groups.iter().enumerate() {
        let name = &group.name;
        if groups[..i].iter().any(|g| g.name == *name) {
            return Err(format!("group {name} is named twice"));
        }
        match (group.is_default(), group.has_rules()) {
            (true, true) => {
                return Err(format!(
                    "group {DEFAULT_GROUP} takes what no other group matches, and has no \
                     jails, progs or hosts"
                ))
            }
            (false, false) => {
                return Err(format!(
                    "group {name} needs jails, progs or hosts to match reports"
                ))
            }
            _ => {}
        }
        if let Some(k) = group.min_reporters {
            if !(1..=max_min_reporters).contains(&k) {
                return Err(format!(
                    "group {name}: min-reporters must be between 1 and {max_min_reporters}"
                ));
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
        let twice = groups("[[groups]]\nname='a'\njails=['x']\n[[groups]]\nname='a'\njails=['y']");
        assert!(check(&twice, 16).unwrap_err().contains("twice"));
        let bare = groups("[[groups]]\nname='a'");
        assert!(check(&bare, 16).unwrap_err().contains("needs"));
        let default = groups("[[groups]]\nname='default'\njails=['x']");
        assert!(check(&default, 16).unwrap_err().contains("default"));
        let k = groups("[[groups]]\nname='a'\njails=['x']\nmin-reporters=17");
        assert!(check(&k, 16).unwrap_err().contains("min-reporters"));
        for bad in ["*", "-x*", "a b", "x**"] {
            assert!(Pattern::parse(bad).is_err(), "{bad}");
        }
    }
}
