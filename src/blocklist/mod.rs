//! Blocklist files for `banshare import`: one address or network per line, or CSV lines of
//! `address,bantime,jail` (bantime and jail optional). Blank lines and `#` comments are
//! skipped, and so is a CSV header line naming the columns. Each line becomes a report, which
//! the server then checks like any other.

use crate::wire::cidr::{Cidr, CidrError};
use crate::wire::error::FieldError;
use crate::wire::protocol::{Bantime, Name, Report};

/// The prog of every imported ban, which `banshare bans` shows.
pub const PROG: &str = "import";
/// The jail of a line that names none.
pub const JAIL: &str = "blocklist";

/// A line that is not a blocklist entry: its number (from 1) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    pub line: usize,
    pub reason: EntryError,
}

/// Why a line is not a blocklist entry. A bad field carries the reason its parser gives a
/// report (`Cidr`, `Bantime::parse`, `Name::parse`), so that an import and banshare-report
/// word the same mistake alike.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error("{0} fields, where a line has at most 3")]
    TooManyFields(usize),
    /// The first field is no address or network.
    #[error(transparent)]
    Address(CidrError),
    /// The second field is neither empty, -1, nor a number of seconds in range.
    #[error(transparent)]
    Bantime(FieldError),
    /// The third field is no valid jail name.
    #[error(transparent)]
    Jail(FieldError),
}

/// Every entry of `text`, with `bantime` for lines that give none, or every bad line.
pub fn parse(text: &str, bantime: Bantime) -> Result<Vec<Report>, Vec<BadLine>> {
    let mut reports = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() || (i == 0 && is_header(line)) {
            continue;
        }
        match entry(line, bantime) {
            Ok(report) => reports.push(report),
            Err(reason) => bad.push(BadLine {
                line: i + 1,
                reason,
            }),
        }
    }
    if bad.is_empty() {
        Ok(reports)
    } else {
        Err(bad)
    }
}

/// `address`, or `address,bantime[,jail]`; an empty bantime is `bantime`.
fn entry(line: &str, bantime: Bantime) -> Result<Report, EntryError> {
    let fields: Vec<&str> = line.split(',').map(str::trim).collect();
    let (ip, time, jail) = match fields[..] {
        [ip] => (ip, "", JAIL),
        [ip, time] => (ip, time, JAIL),
        [ip, time, jail] => (ip, time, if jail.is_empty() { JAIL } else { jail }),
        _ => return Err(EntryError::TooManyFields(fields.len())),
    };
    Ok(Report {
        prog: Name::parse("prog", PROG).expect("a valid name"),
        jail: Name::parse("jail", jail).map_err(EntryError::Jail)?,
        ip: ip.parse::<Cidr>().map_err(EntryError::Address)?,
        bantime: match time {
            "" => bantime,
            time => Bantime::parse(time).map_err(EntryError::Bantime)?,
        },
    })
}

/// `address,bantime,jail` and the like, as spreadsheets write them.
fn is_header(line: &str) -> bool {
    let first = line.split(',').next().unwrap_or_default().trim();
    ["address", "ip", "network"].contains(&first.to_ascii_lowercase().as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_and_csv_lines_with_their_defaults() {
        let text = "address,bantime,jail\n203.0.113.7\n# a comment\n\n198.51.100.0/24,600\n\
                    2001:db8::1,-1,web # why\n192.0.2.1,,\n";
        let reports = parse(text, Bantime::Seconds(3600)).unwrap();
        let fields: Vec<[String; 4]> = reports.iter().map(Report::fields).collect();
        assert_eq!(
            fields,
            [
                ["import", "blocklist", "203.0.113.7", "3600"],
                ["import", "blocklist", "198.51.100.0/24", "600"],
                ["import", "web", "2001:db8::1", "-1"],
                ["import", "blocklist", "192.0.2.1", "3600"],
            ]
            .map(|f| f.map(String::from))
        );
    }

    #[test]
    fn every_bad_line_is_named() {
        let bad = parse(
            "203.0.113.7\nnot-an-ip\n1.2.3.4,x\n1.2.3.4,1,j,k\n",
            Bantime::Default,
        )
        .unwrap_err();
        let lines: Vec<usize> = bad.iter().map(|b| b.line).collect();
        assert_eq!(lines, [2, 3, 4]);
        assert!(matches!(bad[0].reason, EntryError::Address(_)), "{bad:?}");
        assert!(matches!(bad[1].reason, EntryError::Bantime(_)), "{bad:?}");
        assert_eq!(bad[2].reason, EntryError::TooManyFields(4));
        assert_eq!(
            bad[2].reason.to_string(),
            "4 fields, where a line has at most 3"
        );
        let bad = parse("1.2.3.4,1,-j\n", Bantime::Default).unwrap_err();
        assert!(matches!(bad[0].reason, EntryError::Jail(_)), "{bad:?}");
    }
}
