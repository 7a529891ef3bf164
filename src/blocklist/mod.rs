//! Blocklists for `banshare import`, in the formats operators download. Each entry becomes
//! a report, which the server then checks like any other (protected networks, fleet hosts,
//! `import-min-prefix`, `max-bans`).
//!
//! | format | what it reads |
//! |---|---|
//! | `plain` (also `netset`, `ipset`, `spamhaus`, `csv`) | one address or network per line: FireHOL `.netset` and `.ipset`, Spamhaus DROP, EDROP and DROPv6 (`NETWORK ; SBLnnn`); or CSV lines `address,bantime,jail`, bantime and jail optional |
//! | `spamhaus-json` | Spamhaus's JSON lists: one object per line with `cidr`, ending in a metadata line |
//! | `ipsum` | `ADDRESS COUNT`, the count being how many lists name the address (`--min-count`) |
//! | `crowdsec` | `cscli decisions list -o json`, and the JSON or CSV `cscli decisions import` takes |
//!
//! Everywhere, `#` and `;` start a comment, and blank lines and CRLF line ends are fine.
//! `auto` (the default) tells the formats apart by their first entry.

pub mod crowdsec;
pub mod export;

use crate::wire::cidr::{Cidr, CidrError};
use crate::wire::error::FieldError;
use crate::wire::protocol::{Bantime, Name, Report};
use std::fmt;

/// The largest list read, by `banshare import` and by a feed: some million entries, many
/// times the largest public lists (ipsum's, the longest common one, takes a few MB).
pub const MAX_LIST_BYTES: u64 = 64 << 20;

/// The prog of every imported ban, which `banshare bans` shows, and which subscribers hold
/// to `import-min-prefix` rather than `min-prefix`.
pub const PROG: &str = "import";
/// Whether a ban of `prog` is a blocklist's: held to `import-min-prefix` rather than
/// `min-prefix`, and kept off private space, by servers, peers and clients alike.
pub fn is_list(prog: &str) -> bool {
    prog == PROG
}

/// The jail of an entry that names none.
pub const JAIL: &str = "blocklist";

/// A blocklist's format (`banshare import --format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// Told apart by the first entry.
    Auto,
    /// One address or network per line, or CSV lines address,bantime,jail.
    #[value(alias = "netset", alias = "ipset", alias = "spamhaus", alias = "csv")]
    #[serde(alias = "netset", alias = "ipset", alias = "spamhaus", alias = "csv")]
    Plain,
    SpamhausJson,
    Ipsum,
    Crowdsec,
    /// A CrowdSec Local API's decisions stream, which only a feed reads (`[[feeds]]`).
    #[value(skip)]
    CrowdsecLapi,
}

/// What `parse` needs besides the text.
#[derive(Debug, Clone)]
pub struct Options {
    pub format: Format,
    /// For entries that give none.
    pub bantime: Bantime,
    /// ipsum: entries named by fewer lists are skipped.
    pub min_count: u64,
    /// For entries that name none: `JAIL` for an import, the feed's name for a feed.
    pub jail: Name,
}

impl Options {
    /// `banshare import`'s: entries without a jail are in `JAIL`.
    pub fn import(format: Format, bantime: Bantime, min_count: u64) -> Options {
        Options {
            format,
            bantime,
            min_count,
            jail: Name::parse("jail", JAIL).expect("a valid name"),
        }
    }
}

/// A blocklist read: its entries as reports, its bad lines, and what it skipped on purpose.
#[derive(Debug)]
pub struct List {
    pub reports: Vec<Report>,
    pub bad: Vec<BadLine>,
    /// Entries skipped by rule, by why: `named by fewer than 3 lists`, `not a ban: captcha`.
    pub skipped: std::collections::BTreeMap<String, usize>,
    /// For entries that give none.
    bantime: Bantime,
    jail: Name,
}

/// An entry that could not be read: where, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    pub at: Place,
    pub reason: EntryError,
}

/// Where an entry is: a line of a line-based list, or an element of a JSON array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    Line(usize),
    Entry(usize),
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Place::Line(n) => write!(f, "line {n}"),
            Place::Entry(n) => write!(f, "entry {n}"),
        }
    }
}

/// Why an entry is not a blocklist entry. A bad field carries the reason its parser gives a
/// report (`Cidr`, `Bantime::parse`, `Name::parse`), so that an import and banshare-report
/// word the same mistake alike.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error("{0} fields, where a line has at most {1}")]
    TooManyFields(usize, usize),
    /// The address field is no address or network.
    #[error(transparent)]
    Address(CidrError),
    /// The bantime is neither empty, -1, nor a number of seconds in range.
    #[error(transparent)]
    Bantime(FieldError),
    /// The jail is no valid name.
    #[error(transparent)]
    Jail(FieldError),
    /// ipsum's second field.
    #[error("count {0:?} is not a whole number")]
    Count(String),
    /// A line or element that is not the JSON the format has.
    #[error("not the expected JSON: {0}")]
    Json(String),
    #[error("no {0}")]
    Missing(&'static str),
    /// A CrowdSec duration such as 3h59m58.5s.
    #[error("duration {0:?} is not a Go duration such as 4h or 3h59m58s")]
    Duration(String),
    /// A CrowdSec CSV header naming a column it does not have.
    #[error("unknown column {0:?}; cscli's are duration, origin, reason, scenario, scope, type, until, value")]
    Column(String),
    /// A Spamhaus JSON list whose metadata line counts other than its entries: cut short.
    #[error("the metadata line counts {said} records, and the list has {found}: truncated?")]
    Truncated { said: u64, found: u64 },
}

/// What one entry of a list says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Entry {
    Ban {
        ip: Cidr,
        bantime: Option<Bantime>,
        jail: Option<Name>,
    },
    /// Skipped on purpose, with why (counted in `List::skipped`).
    Skip(String),
    /// A comment, a header or metadata: not an entry at all.
    Nothing,
}

/// Every entry of `text`, read as `options.format` says.
pub fn parse(text: &str, options: &Options) -> List {
    let format = match options.format {
        Format::Auto => detect(text),
        format => format,
    };
    let mut list = List::new(options);
    match format {
        Format::Crowdsec => crowdsec::parse(text, &mut list),
        Format::CrowdsecLapi => {
            crowdsec::stream(text, &mut list);
        }
        Format::SpamhausJson => spamhaus_json(text, &mut list),
        _ => {
            let mut first = true;
            lines(text, &mut list, |line| {
                let header_allowed = std::mem::replace(&mut first, false);
                match format {
                    Format::Ipsum => ipsum(line, options.min_count),
                    _ => plain(line, header_allowed),
                }
            });
        }
    }
    list
}

/// The format a list is in, from its first entry: a JSON array or object, a CSV header or
/// line, an address with a count, or else one address per line.
pub fn detect(text: &str) -> Format {
    if text.trim_start().starts_with('[') {
        return Format::Crowdsec;
    }
    let Some(first) = text.lines().map(uncommented).find(|l| !l.is_empty()) else {
        return Format::Plain;
    };
    if first.starts_with('{') {
        return if first.contains("\"value\"") {
            Format::Crowdsec
        } else {
            Format::SpamhausJson
        };
    }
    if crowdsec::is_header(first) {
        return Format::Crowdsec;
    }
    let fields: Vec<&str> = first.split_whitespace().collect();
    match fields[..] {
        [_, count] if count.parse::<u64>().is_ok() && !first.contains(',') => Format::Ipsum,
        _ => Format::Plain,
    }
}

impl List {
    /// An empty list, to read entries into as `options` says.
    pub fn new(options: &Options) -> List {
        List {
            reports: Vec::new(),
            bad: Vec::new(),
            skipped: Default::default(),
            bantime: options.bantime,
            jail: options.jail.clone(),
        }
    }

    fn add(&mut self, at: Place, entry: Result<Entry, EntryError>) {
        match entry {
            Ok(Entry::Ban { ip, bantime, jail }) => self.reports.push(Report {
                prog: Name::parse("prog", PROG).expect("a valid name"),
                jail: jail.unwrap_or_else(|| self.jail.clone()),
                ip,
                bantime: bantime.unwrap_or(self.bantime),
            }),
            Ok(Entry::Skip(why)) => *self.skipped.entry(why).or_default() += 1,
            Ok(Entry::Nothing) => {}
            Err(reason) => self.bad.push(BadLine { at, reason }),
        }
    }
}

/// A line without its comment (`#` or `;` to the end) and surrounding blanks.
fn uncommented(line: &str) -> &str {
    line.split(['#', ';']).next().unwrap_or_default().trim()
}

/// Runs `entry` on each line that is not blank or only a comment.
fn lines(text: &str, list: &mut List, mut entry: impl FnMut(&str) -> Result<Entry, EntryError>) {
    for (i, line) in text.lines().enumerate() {
        let line = uncommented(line);
        if !line.is_empty() {
            list.add(Place::Line(i + 1), entry(line));
        }
    }
}

fn address(text: &str) -> Result<Cidr, EntryError> {
    text.parse::<Cidr>().map_err(EntryError::Address)
}

/// `address`: FireHOL netsets, Spamhaus DROP with its `; SBL` comments, any plain list;
/// or a CSV line.
fn plain(line: &str, header_allowed: bool) -> Result<Entry, EntryError> {
    if line.contains(',') {
        return csv(line, header_allowed);
    }
    let fields: Vec<&str> = line.split_whitespace().collect();
    match fields[..] {
        [ip] => Ok(Entry::Ban {
            ip: address(ip)?,
            bantime: None,
            jail: None,
        }),
        _ => Err(EntryError::TooManyFields(fields.len(), 1)),
    }
}

/// `address count`, tab or spaces between (ipsum).
fn ipsum(line: &str, min_count: u64) -> Result<Entry, EntryError> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let [ip, count] = fields[..] else {
        return Err(EntryError::TooManyFields(fields.len(), 2));
    };
    let ip = address(ip)?;
    let count: u64 = count.parse().map_err(|_| EntryError::Count(count.into()))?;
    if count < min_count {
        return Ok(Entry::Skip(format!(
            "named by fewer than {min_count} lists"
        )));
    }
    Ok(Entry::Ban {
        ip,
        bantime: None,
        jail: None,
    })
}

/// `address`, or `address,bantime[,jail]`; an empty bantime or jail is the default. A first
/// entry naming the columns (`address,bantime,jail`, as spreadsheets write) is a header.
fn csv(line: &str, header_allowed: bool) -> Result<Entry, EntryError> {
    let fields: Vec<&str> = line.split(',').map(str::trim).collect();
    let header = ["address", "ip", "network"].contains(&fields[0].to_ascii_lowercase().as_str());
    if header && header_allowed {
        return Ok(Entry::Nothing);
    }
    let (ip, time, jail) = match fields[..] {
        [ip] => (ip, "", ""),
        [ip, time] => (ip, time, ""),
        [ip, time, jail] => (ip, time, jail),
        _ => return Err(EntryError::TooManyFields(fields.len(), 3)),
    };
    Ok(Entry::Ban {
        ip: address(ip)?,
        bantime: match time {
            "" => None,
            time => Some(Bantime::parse(time).map_err(EntryError::Bantime)?),
        },
        jail: match jail {
            "" => None,
            jail => Some(Name::parse("jail", jail).map_err(EntryError::Jail)?),
        },
    })
}

/// Spamhaus's JSON lists (drop_v4.json, drop_v6.json): `{"cidr": …, "sblid": …, "rir": …}`
/// per line, and last `{"type": "metadata", …, "records": N}`. A list whose metadata counts
/// other than its entries was cut short, and is refused whole.
fn spamhaus_json(text: &str, list: &mut List) {
    #[derive(serde::Deserialize)]
    struct Line {
        cidr: Option<String>,
        #[serde(rename = "type")]
        kind: Option<String>,
        records: Option<u64>,
    }
    let mut counted = None;
    let mut found = 0u64;
    let mut last = 0;
    for (i, raw) in text.lines().enumerate() {
        let raw = raw.trim();
        if raw.is_empty() {
            continue;
        }
        last = i + 1;
        let entry = match serde_json::from_str::<Line>(raw) {
            Err(e) => Err(EntryError::Json(e.to_string())),
            Ok(Line {
                kind: Some(kind),
                records,
                ..
            }) if kind == "metadata" => {
                counted = records;
                Ok(Entry::Nothing)
            }
            Ok(Line { cidr: None, .. }) => Err(EntryError::Missing("cidr")),
            Ok(Line {
                cidr: Some(cidr), ..
            }) => {
                found += 1;
                address(&cidr).map(|ip| Entry::Ban {
                    ip,
                    bantime: None,
                    jail: None,
                })
            }
        };
        list.add(Place::Line(i + 1), entry);
    }
    if let Some(said) = counted.filter(|said| *said != found) {
        list.add(
            Place::Line(last),
            Err(EntryError::Truncated { said, found }),
        );
    }
}

#[cfg(test)]
mod tests;
