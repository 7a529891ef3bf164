//! CrowdSec's decisions, so that a CrowdSec user can move a whole table over in one command:
//! - `cscli decisions list -o json`: an array of alerts, each with its `decisions`;
//! - `cscli decisions import`'s JSON: an array of decisions;
//! - `cscli decisions import`'s CSV: a header naming some of duration, origin, reason,
//!   scope, type and value, then one decision per line.
//!
//! A decision bans `value` for `duration` when its type is `ban` and its scope `Ip` or
//! `Range`; others (captcha, a country, a user name) are skipped and counted. Its scenario,
//! or reason, is the jail when it makes a valid name.

use super::{address, lines, Entry, EntryError, List, Place};
use crate::wire::cidr::Cidr;
use crate::wire::protocol::{Bantime, Name, MAX_BANTIME};
use serde::Deserialize;

/// The columns of cscli's CSV, and of its list output.
const COLUMNS: [&str; 8] = [
    "duration", "origin", "reason", "scenario", "scope", "type", "until", "value",
];

#[derive(Debug, Deserialize)]
struct Decision {
    value: Option<String>,
    scope: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    duration: Option<String>,
    scenario: Option<String>,
    reason: Option<String>,
}

/// Whether `line` is a header of cscli's CSV: columns it knows, `value` among them.
pub(super) fn is_header(line: &str) -> bool {
    let columns: Vec<String> = line
        .split(',')
        .map(|c| c.trim().to_ascii_lowercase())
        .collect();
    columns.iter().any(|c| c == "value") && columns.iter().all(|c| COLUMNS.contains(&c.as_str()))
}

pub(super) fn parse(text: &str, list: &mut List) {
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') || trimmed.starts_with('{') || trimmed == "null" {
        json(text, list);
    } else {
        csv(text, list);
    }
}

/// The JSON array (or `null`, which cscli prints for no decisions). An element with
/// `decisions` is an alert of the list output; another is a decision of the import format.
/// `entry N` is the Nth decision of the file, across alerts.
fn json(text: &str, list: &mut List) {
    let elements: Vec<serde_json::Value> = match serde_json::from_str::<Option<Vec<_>>>(text) {
        Ok(elements) => elements.unwrap_or_default(),
        Err(e) => return list.add(Place::Line(e.line()), Err(EntryError::Json(e.to_string()))),
    };
    let decisions =
        elements
            .into_iter()
            .flat_map(|mut element| match element.get_mut("decisions") {
                Some(decisions) => match decisions.take() {
                    serde_json::Value::Array(decisions) => decisions,
                    serde_json::Value::Null => Vec::new(),
                    other => vec![other],
                },
                None => vec![element],
            });
    for (i, decision) in decisions.enumerate() {
        let entry = serde_json::from_value::<Decision>(decision)
            .map_err(|e| EntryError::Json(e.to_string()))
            .and_then(|d| entry(&d));
        list.add(Place::Entry(i + 1), entry);
    }
}

/// A Local API's `GET /v1/decisions/stream` answer, `{"new": [...], "deleted": [...]}`
/// (either may be null): the new decisions into `list`, and the networks of the deleted
/// ones returned. An answer that is not that object is one bad entry. A decision's own
/// duration is not its bantime: the feed bans it until the stream deletes it (or for the
/// feed's bantime, renewed), as a bouncer does.
pub fn stream(text: &str, list: &mut List) -> Vec<Cidr> {
    #[derive(Deserialize)]
    struct Stream {
        new: Option<Vec<serde_json::Value>>,
        deleted: Option<Vec<serde_json::Value>>,
    }
    let stream: Stream = match serde_json::from_str(text) {
        Ok(stream) => stream,
        Err(e) => {
            list.add(Place::Line(e.line()), Err(EntryError::Json(e.to_string())));
            return Vec::new();
        }
    };
    for (i, decision) in stream.new.unwrap_or_default().into_iter().enumerate() {
        let entry = serde_json::from_value::<Decision>(decision)
            .map_err(|e| EntryError::Json(e.to_string()))
            .and_then(|d| {
                entry(&Decision {
                    duration: None,
                    ..d
                })
            });
        list.add(Place::Entry(i + 1), entry);
    }
    let deleted = stream.deleted.unwrap_or_default().into_iter();
    deleted
        .filter_map(|d| {
            serde_json::from_value::<Decision>(d)
                .ok()?
                .value?
                .parse()
                .ok()
        })
        .collect()
}

/// The CSV: the header's columns, in any order, then the decisions.
fn csv(text: &str, list: &mut List) {
    let mut columns: Option<Vec<String>> = None;
    lines(text, list, |line| {
        let fields: Vec<&str> = line
            .split(',')
            .map(|f| f.trim().trim_matches('"'))
            .collect();
        let Some(names) = &columns else {
            let names: Vec<String> = fields.iter().map(|f| f.to_ascii_lowercase()).collect();
            if let Some(bad) = names.iter().find(|n| !COLUMNS.contains(&n.as_str())) {
                return Err(EntryError::Column(bad.clone()));
            }
            columns = Some(names);
            return Ok(Entry::Nothing);
        };
        if fields.len() > names.len() {
            return Err(EntryError::TooManyFields(fields.len(), names.len()));
        }
        let field = |name: &str| {
            let i = names.iter().position(|n| n == name)?;
            fields
                .get(i)
                .filter(|f| !f.is_empty())
                .map(ToString::to_string)
        };
        entry(&Decision {
            value: field("value"),
            scope: field("scope"),
            kind: field("type"),
            duration: field("duration"),
            scenario: field("scenario"),
            reason: field("reason"),
        })
    });
}

/// One decision as an entry. `scope` is `ip` and `type` is `ban` unless it says otherwise,
/// as for cscli.
fn entry(decision: &Decision) -> Result<Entry, EntryError> {
    let value = decision
        .value
        .as_deref()
        .ok_or(EntryError::Missing("value"))?;
    let kind = decision.kind.as_deref().unwrap_or("ban");
    if !kind.eq_ignore_ascii_case("ban") {
        return Ok(Entry::Skip(format!(
            "not a ban: {}",
            kind.to_ascii_lowercase()
        )));
    }
    let scope = decision.scope.as_deref().unwrap_or("ip");
    if !["ip", "range"].contains(&scope.to_ascii_lowercase().as_str()) {
        return Ok(Entry::Skip(format!(
            "scope {}, not an address",
            scope.to_ascii_lowercase()
        )));
    }
    let ip = address(value)?;
    let bantime = match decision.duration.as_deref() {
        None => None,
        Some(text) => match duration(text).ok_or_else(|| EntryError::Duration(text.into()))? {
            0 => return Ok(Entry::Skip("expired".into())),
            seconds => Some(Bantime::Seconds(seconds.min(MAX_BANTIME))),
        },
    };
    let scenario = decision.scenario.as_deref().or(decision.reason.as_deref());
    Ok(Entry::Ban {
        ip,
        bantime,
        jail: scenario.and_then(|s| Name::parse("jail", &s.replace('/', ".")).ok()),
    })
}

/// A Go duration (`4h`, `3h59m58.123456789s`, `-2m` once expired) in whole seconds, rounded
/// up; 0 for one that is over.
fn duration(text: &str) -> Option<u64> {
    if text == "0" {
        return Some(0);
    }
    if text.is_empty() {
        return None;
    }
    if let Some(past) = text.strip_prefix('-') {
        return past.chars().next().filter(char::is_ascii_digit).map(|_| 0);
    }
    let mut nanos: f64 = 0.0;
    let mut rest = text;
    while !rest.is_empty() {
        let number_end = rest.find(|c: char| !c.is_ascii_digit() && c != '.')?;
        let number: f64 = rest[..number_end].parse().ok()?;
        rest = &rest[number_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "h" => 3.6e12,
            "m" => 6e10,
            "s" => 1e9,
            "ms" => 1e6,
            "us" | "µs" => 1e3,
            "ns" => 1.0,
            _ => return None,
        };
        nanos += number * scale;
        rest = &rest[unit_end..];
    }
    // Less a nanosecond, so that 4h is not 14,401 s by a rounding error.
    Some((nanos / 1e9 - 1e-9).ceil().max(0.0) as u64)
}

#[cfg(test)]
mod tests {
    use super::duration;

    #[test]
    fn go_durations_in_whole_seconds() {
        assert_eq!(duration("4h"), Some(14_400));
        assert_eq!(duration("3h59m58.2s"), Some(14_399));
        assert_eq!(duration("1m30s"), Some(90));
        assert_eq!(duration("500ms"), Some(1));
        assert_eq!(duration("-2m5s"), Some(0));
        assert_eq!(duration("0"), Some(0));
        for bad in ["", "4", "4d", "h", "1.2.3s", "-", "4h-1m"] {
            assert_eq!(duration(bad), None, "{bad}");
        }
    }
}
