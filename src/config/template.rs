//! Ban and unban command templates. A template is split into arguments once, shell-style, when
//! the config is read; tags are then replaced inside each argument and the program is run
//! directly. No shell ever sees a value that came from the network.

use std::fmt;

/// The tags a template may use, replaced by the ban's values.
pub const TAGS: [&str; 4] = ["<ip>", "<jail>", "<prog>", "<bantime>"];

/// The words the 2014 version replaced in its ban commands, and the tags that replace them:
/// passed through literally, they would make a migrated config ban nothing.
const WORDS_2014: [(&str, &str); 3] = [("SRCIP", "<ip>"), ("JAIL", "<jail>"), ("PROG", "<prog>")];

/// A command line split into program and arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    args: Vec<String>,
}

/// Why a command template was refused when the config was read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("command is empty")]
    Empty,
    #[error("unterminated single quote")]
    UnterminatedSingleQuote,
    #[error("unterminated double quote")]
    UnterminatedDoubleQuote,
    #[error("trailing backslash")]
    TrailingBackslash,
    /// `<IP>` or `<JAIL>`, as the 2014 README wrote them: `lower` is the tag meant.
    #[error("unknown tag {tag}: use {lower} (tags are lower case)")]
    UpperCaseTag { tag: String, lower: String },
    /// A `<name>` that is no tag of ours, almost always a typo.
    #[error("unknown tag {0} (known tags: {known})", known = TAGS.join(", "))]
    UnknownTag(String),
    /// SRCIP, JAIL or PROG, which the 2014 version replaced and banshare does not.
    #[error(
        "{old} is the 2014 version's word, which banshare passes through literally: \
         use {tag} instead of {old}"
    )]
    Word2014 {
        old: &'static str,
        tag: &'static str,
    },
    /// A program found through PATH could be another one than the admin meant.
    #[error("program {0:?} must be an absolute path, so that PATH cannot change what runs")]
    RelativeProgram(String),
    /// "/usr/sbin/<prog>" would let whoever reports choose what runs.
    #[error("program {program:?} may not contain {tag}: what runs must not depend on a report")]
    TagInProgram { program: String, tag: &'static str },
}

/// The values substituted into a template.
pub struct Values<'a> {
    pub ip: &'a str,
    pub jail: &'a str,
    pub prog: &'a str,
    pub bantime: &'a str,
}

impl Template {
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        let args = split(text)?;
        if args.is_empty() {
            return Err(TemplateError::Empty);
        }
        for arg in &args {
            check_tags(arg)?;
            check_2014_words(arg)?;
        }
        if !args[0].starts_with('/') {
            return Err(TemplateError::RelativeProgram(args[0].clone()));
        }
        if let Some(&tag) = TAGS.iter().find(|tag| args[0].contains(*tag)) {
            return Err(TemplateError::TagInProgram {
                program: args[0].clone(),
                tag,
            });
        }
        Ok(Template { args })
    }

    /// The program and its arguments with every tag replaced. One pass over each argument,
    /// so that a value which itself looks like a tag stays as it is.
    pub fn expand(&self, values: &Values) -> Vec<String> {
        self.args
            .iter()
            .map(|arg| expand_arg(arg, values))
            .collect()
    }

    /// Whether some argument holds `tag`.
    pub fn uses(&self, tag: &str) -> bool {
        self.args.iter().any(|arg| arg.contains(tag))
    }

    pub fn program(&self) -> &str {
        &self.args[0]
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.args.join(" "))
    }
}

impl<'de> serde::Deserialize<'de> for Template {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        let text = String::deserialize(de)?;
        Template::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Rejects `<name>` tags we do not know, which are almost always typos such as `<IP>`.
fn expand_arg(arg: &str, values: &Values) -> String {
    let mut out = String::with_capacity(arg.len());
    let mut rest = arg;
    while let Some(start) = rest.find('<') {
        out.push_str(&rest[..start]);
        let tail = &rest[start..];
        let tag = TAGS.iter().find(|tag| tail.starts_with(*tag));
        let value = match tag {
            Some(&"<ip>") => values.ip,
            Some(&"<jail>") => values.jail,
            Some(&"<prog>") => values.prog,
            Some(_) => values.bantime,
            None => "<",
        };
        out.push_str(value);
        rest = &tail[tag.map_or(1, |t| t.len())..];
    }
    out.push_str(rest);
    out
}

fn check_tags(arg: &str) -> Result<(), TemplateError> {
    let mut rest = arg;
    while let Some(start) = rest.find('<') {
        let tail = &rest[start..];
        match tail.find('>') {
            Some(end) if !TAGS.contains(&&tail[..=end]) && is_tag_like(&tail[1..end]) => {
                let tag = tail[..=end].to_owned();
                // <IP> and <JAIL>, as the 2014 README wrote them.
                let lower = tag.to_ascii_lowercase();
                if TAGS.contains(&lower.as_str()) {
                    return Err(TemplateError::UpperCaseTag { tag, lower });
                }
                return Err(TemplateError::UnknownTag(tag));
            }
            Some(end) => rest = &tail[end + 1..],
            None => break,
        }
    }
    Ok(())
}

/// Refuses SRCIP, JAIL and PROG as words of an argument, with the tag to use instead.
fn check_2014_words(arg: &str) -> Result<(), TemplateError> {
    let mut words = arg.split(|c: char| !c.is_ascii_alphanumeric() && c != '_');
    match words.find_map(|word| WORDS_2014.iter().find(|(old, _)| *old == word)) {
        Some(&(old, tag)) => Err(TemplateError::Word2014 { old, tag }),
        None => Ok(()),
    }
}

fn is_tag_like(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Splits like a POSIX shell does for words: whitespace separates, single quotes keep
/// everything literal, double quotes allow \" and \\, a backslash escapes one character.
/// There is no expansion of any kind.
pub fn split(text: &str) -> Result<Vec<String>, TemplateError> {
    let mut args = Vec::new();
    let mut current: Option<String> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => args.extend(current.take()),
            '\'' => {
                let word = current.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err(TemplateError::UnterminatedSingleQuote),
                    }
                }
            }
            '"' => {
                let word = current.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err(TemplateError::UnterminatedDoubleQuote),
                        },
                        Some(c) => word.push(c),
                        None => return Err(TemplateError::UnterminatedDoubleQuote),
                    }
                }
            }
            '\\' => match chars.next() {
                Some(c) => current.get_or_insert_with(String::new).push(c),
                None => return Err(TemplateError::TrailingBackslash),
            },
            c => current.get_or_insert_with(String::new).push(c),
        }
    }
    args.extend(current);
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> Values<'static> {
        Values {
            ip: "203.0.113.7",
            jail: "sshd",
            prog: "fail2ban",
            bantime: "600",
        }
    }

    #[test]
    fn splits_like_a_shell() {
        assert_eq!(split("a  b\tc").unwrap(), ["a", "b", "c"]);
        assert_eq!(split("a 'b c' \"d e\"").unwrap(), ["a", "b c", "d e"]);
        assert_eq!(
            split(r#"a\ b "x\"y" 'it''s'"#).unwrap(),
            ["a b", "x\"y", "its"]
        );
        assert_eq!(split("'' x").unwrap(), ["", "x"]);
        assert_eq!(split("$HOME;ls").unwrap(), ["$HOME;ls"]);
        assert_eq!(split("'open"), Err(TemplateError::UnterminatedSingleQuote));
        assert_eq!(split("\"open"), Err(TemplateError::UnterminatedDoubleQuote));
        assert_eq!(split("\"a\\"), Err(TemplateError::UnterminatedDoubleQuote));
        assert_eq!(split("x\\"), Err(TemplateError::TrailingBackslash));
    }

    #[test]
    fn expands_tags_inside_arguments() {
        let t =
            Template::parse("/usr/bin/fail2ban-client set <jail> banip --ip=<ip> <bantime> <prog>")
                .unwrap();
        assert_eq!(
            t.expand(&values()),
            [
                "/usr/bin/fail2ban-client",
                "set",
                "sshd",
                "banip",
                "--ip=203.0.113.7",
                "600",
                "fail2ban"
            ]
        );
    }

    #[test]
    fn values_stay_one_argument_each() {
        let t = Template::parse("/bin/echo <jail> <ip>").unwrap();
        let evil = Values {
            jail: "x; touch /tmp/pwned",
            ..values()
        };
        assert_eq!(
            t.expand(&evil),
            ["/bin/echo", "x; touch /tmp/pwned", "203.0.113.7"]
        );
    }

    #[test]
    fn rejects_bad_templates() {
        assert_eq!(Template::parse(" "), Err(TemplateError::Empty));
        assert_eq!(
            Template::parse("fail2ban-client set x banip <ip>"),
            Err(TemplateError::RelativeProgram("fail2ban-client".into()))
        );
        let err = Template::parse("/bin/echo <IP>").unwrap_err();
        assert_eq!(
            err,
            TemplateError::UpperCaseTag {
                tag: "<IP>".into(),
                lower: "<ip>".into()
            }
        );
        assert_eq!(
            err.to_string(),
            "unknown tag <IP>: use <ip> (tags are lower case)"
        );
        let err = Template::parse("/bin/echo <ip> <host>").unwrap_err();
        assert_eq!(err, TemplateError::UnknownTag("<host>".into()));
        assert_eq!(
            err.to_string(),
            "unknown tag <host> (known tags: <ip>, <jail>, <prog>, <bantime>)"
        );
        assert!(Template::parse("/bin/echo --ip=<ip> JAILS")
            .unwrap()
            .uses("<ip>"));
        assert!(!Template::parse("/bin/true").unwrap().uses("<ip>"));
    }

    #[test]
    fn the_2014_words_are_refused_with_the_tag_to_use() {
        for (command, old, tag) in [
            (
                "/usr/bin/fail2ban-client set JAIL banip <ip>",
                "JAIL",
                "<jail>",
            ),
            ("/usr/sbin/psad --fw-block-ip SRCIP", "SRCIP", "<ip>"),
            ("/bin/echo <ip> --from=PROG", "PROG", "<prog>"),
        ] {
            let err = Template::parse(command).unwrap_err();
            assert_eq!(err, TemplateError::Word2014 { old, tag }, "{command}");
        }
        assert_eq!(
            Template::parse("/bin/echo JAIL").unwrap_err().to_string(),
            "JAIL is the 2014 version's word, which banshare passes through literally: \
             use <jail> instead of JAIL"
        );
        Template::parse("/bin/sh -c 'test 1 < 2' <ip>").unwrap();
        let err = Template::parse("/usr/sbin/<prog> <ip>").unwrap_err();
        assert_eq!(
            err,
            TemplateError::TagInProgram {
                program: "/usr/sbin/<prog>".into(),
                tag: "<prog>"
            }
        );
        assert_eq!(
            err.to_string(),
            "program \"/usr/sbin/<prog>\" may not contain <prog>: what runs must not depend \
             on a report"
        );
    }

    #[test]
    fn a_value_that_looks_like_a_tag_is_not_expanded_again() {
        let template = Template::parse("/bin/echo <ip>:<jail>").unwrap();
        let values = Values {
            ip: "<jail>",
            jail: "sshd",
            prog: "<ip>",
            bantime: "60",
        };
        assert_eq!(template.expand(&values), ["/bin/echo", "<jail>:sshd"]);
    }
}
