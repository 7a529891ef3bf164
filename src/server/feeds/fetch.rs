//! The feeds' thread: fetches each feed when it is due, with its ETag and Last-Modified
//! (a 304 costs nothing), reads the new version and judges it. The loop only ever hears of
//! a version worth applying; a failed, empty, truncated or shrunken one is a failure, and
//! the last good copy stays.
//!
//! Bounded as everything from outside: one thread for every feed, one request at a time,
//! each within the feed's interval or 60 s, whichever is shorter, and `MAX_LIST_BYTES`.

use std::collections::BTreeMap;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::Duration;

use ureq::tls::{RootCerts, TlsConfig};
use ureq::Agent;

use crate::blocklist::{self, EntryError, Options};
use crate::blocklist::{Format, MAX_LIST_BYTES};
use crate::clock::unix_now;
use crate::config::feeds::FeedConfig;
use crate::wire::cidr::Cidr;
use crate::wire::protocol::{Bantime, Name, Report};

/// The longest a request takes, when the feed's interval is longer.
const MAX_REQUEST: Duration = Duration::from_secs(60);

/// What a server sends back to say its copy is still current.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Validators {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

/// What the thread knows of a feed between fetches: where it stands, and how many entries
/// its last good version had, to judge the next by.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub validators: Validators,
    pub entries: usize,
    pub next: u64,
    /// A CrowdSec Local API's decisions as the stream has told them so far; None until it
    /// has sent them all (`startup=true`), which it does again after each start.
    pub stream: Option<BTreeMap<Cidr, Report>>,
}

/// A fetch's result, for feed number `feed`.
#[derive(Debug)]
pub struct Fetched {
    pub feed: usize,
    pub at: u64,
    pub outcome: Outcome,
}

#[derive(Debug)]
pub enum Outcome {
    /// 304: the last good copy is current.
    Unchanged,
    /// A version to apply: its entries, and what was left out of it.
    New {
        reports: Vec<Report>,
        validators: Validators,
        bad: usize,
        narrowed: usize,
    },
    Failed(String),
}

/// The running thread. Dropping it tells the thread to stop, without waiting: a request in
/// flight may take a minute, which neither a reload nor a shutdown should wait for; the
/// thread ends after it, its results going nowhere.
pub struct Worker {
    _stop: Sender<()>,
    pub results: Receiver<Fetched>,
}

impl Worker {
    pub fn spawn(feeds: Vec<FeedConfig>, schedules: Vec<Schedule>) -> Result<Worker, String> {
        let (stop, stopped) = mpsc::channel();
        let (send, results) = mpsc::channel();
        std::thread::Builder::new()
            .name("feeds".into())
            .spawn(move || run(&feeds, schedules, &stopped, &send))
            .map_err(|e| format!("cannot start the feeds' thread: {e}"))?;
        Ok(Worker {
            _stop: stop,
            results,
        })
    }
}

fn run(
    feeds: &[FeedConfig],
    mut schedules: Vec<Schedule>,
    stopped: &Receiver<()>,
    send: &Sender<Fetched>,
) {
    let agents: Vec<Result<Agent, String>> = feeds.iter().map(agent).collect();
    loop {
        let now = unix_now();
        let next = schedules.iter().map(|s| s.next).min().unwrap_or(u64::MAX);
        let wait = Duration::from_secs(next.saturating_sub(now)).min(Duration::from_secs(3600));
        match stopped.recv_timeout(wait) {
            Err(RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        for (i, feed) in feeds.iter().enumerate() {
            if schedules[i].next > unix_now() {
                continue;
            }
            let outcome = match &agents[i] {
                Ok(agent) if feed.format == Format::CrowdsecLapi => {
                    poll_lapi(agent, feed, &mut schedules[i])
                }
                Ok(agent) => fetch(agent, feed, &schedules[i]),
                Err(e) => Outcome::Failed(e.clone()),
            };
            let schedule = &mut schedules[i];
            if let Outcome::New {
                reports,
                validators,
                ..
            } = &outcome
            {
                schedule.validators = validators.clone();
                schedule.entries = reports.len();
            }
            schedule.next = unix_now() + feed.interval.0.as_secs();
            let fetched = Fetched {
                feed: i,
                at: unix_now(),
                outcome,
            };
            if send.send(fetched).is_err() {
                return;
            }
        }
    }
}

/// An agent for the feed: the system's CA store, or its own CA file.
fn agent(feed: &FeedConfig) -> Result<Agent, String> {
    let roots = match &feed.ca_file {
        None => RootCerts::PlatformVerifier,
        Some(path) => {
            let pem = crate::files::read_regular(path, 1 << 20)
                .map_err(|e| format!("ca-file {}: {e}", path.display()))?;
            let certs: Vec<_> = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(cert)) => Some(cert),
                    _ => None,
                })
                .collect();
            if certs.is_empty() {
                return Err(format!("ca-file {}: no certificate in it", path.display()));
            }
            RootCerts::new_with_certs(&certs)
        }
    };
    let timeout = feed.interval.0.min(MAX_REQUEST);
    let config = Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .max_redirects(3)
        .user_agent(concat!("banshare/", env!("CARGO_PKG_VERSION")))
        .tls_config(TlsConfig::builder().root_certs(roots).build())
        .build();
    Ok(config.into())
}

/// One request, and the judgement of what it brought.
fn fetch(agent: &Agent, feed: &FeedConfig, schedule: &Schedule) -> Outcome {
    match download(agent, feed, &schedule.validators) {
        Ok(None) => Outcome::Unchanged,
        Ok(Some((text, validators))) => judge(feed, &text, validators, schedule.entries),
        Err(e) => Outcome::Failed(e),
    }
}

/// The new version and its validators, or None for 304.
fn download(
    agent: &Agent,
    feed: &FeedConfig,
    known: &Validators,
) -> Result<Option<(String, Validators)>, String> {
    let mut headers = Vec::new();
    if let Some(etag) = &known.etag {
        headers.push(("If-None-Match", etag.as_str()));
    }
    if let Some(date) = &known.last_modified {
        headers.push(("If-Modified-Since", date.as_str()));
    }
    get(agent, &feed.url, &headers)
}

/// GET `url` with `headers`: the body (at most MAX_LIST_BYTES) and its validators, None
/// for 304, or why it failed.
fn get(
    agent: &Agent,
    url: &str,
    headers: &[(&str, &str)],
) -> Result<Option<(String, Validators)>, String> {
    let mut request = agent.get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let mut response = request.call().map_err(|e| e.to_string())?;
    match response.status().as_u16() {
        200 => {}
        304 => return Ok(None),
        status => return Err(format!("HTTP {status}")),
    }
    let header = |name: &str| {
        let value = response.headers().get(name)?.to_str().ok()?;
        // Sent back as they came: a line break in one would end the header.
        (!value.contains(['\r', '\n']) && value.len() <= 256).then(|| value.to_owned())
    };
    let validators = Validators {
        etag: header("etag"),
        last_modified: header("last-modified"),
    };
    let text = response
        .body_mut()
        .with_config()
        .limit(MAX_LIST_BYTES)
        .read_to_string()
        .map_err(|e| e.to_string())?;
    Ok(Some((text, validators)))
}

/// A CrowdSec Local API, polled as a bouncer polls it: every decision at the first poll
/// (`startup=true`), then what changed. Each poll's outcome is the whole set, which the loop
/// applies as any version; only the first is judged against the last good copy's size,
/// since later deletions are the API's own word, one by one.
fn poll_lapi(agent: &Agent, feed: &FeedConfig, schedule: &mut Schedule) -> Outcome {
    let startup = schedule.stream.is_none();
    let url = format!(
        "{}/v1/decisions/stream?startup={startup}",
        feed.url.trim_end_matches('/')
    );
    let key = match api_key(feed) {
        Ok(key) => key,
        Err(e) => return Outcome::Failed(e),
    };
    let text = match get(agent, &url, &[("X-Api-Key", key.as_str())]) {
        Ok(Some((text, _))) => text,
        Ok(None) => return Outcome::Failed("HTTP 304 from a decisions stream".into()),
        Err(e) => return Outcome::Failed(e),
    };
    let mut list = blocklist::List::new(&options(feed));
    let deleted = blocklist::crowdsec::stream(&text, &mut list);
    if let Some(bad) = list
        .bad
        .iter()
        .find(|b| matches!(b.reason, EntryError::Json(_)) && b.at == blocklist::Place::Line(1))
    {
        return Outcome::Failed(format!("not a decisions stream: {}", bad.reason));
    }
    let mut current = schedule.stream.clone().unwrap_or_default();
    for ip in deleted {
        current.remove(&ip);
    }
    current.extend(list.reports.into_iter().map(|r| (r.ip, r)));
    let before = if startup { schedule.entries } else { 0 };
    let reports: Vec<Report> = current.values().cloned().collect();
    let narrowed = reports
        .iter()
        .filter(|r| feed.min_prefix.check(&r.ip).is_err())
        .count();
    if startup && !reports.is_empty() && narrowed == reports.len() {
        return Outcome::Failed("every entry is wider than the feed's min-prefix".into());
    }
    if let Some(why) = shrunk(feed, before, reports.len() - narrowed) {
        return Outcome::Failed(why);
    }
    schedule.stream = Some(current);
    Outcome::New {
        reports: reports
            .into_iter()
            .filter(|r| feed.min_prefix.check(&r.ip).is_ok())
            .collect(),
        validators: Validators::default(),
        bad: list.bad.len(),
        narrowed,
    }
}

/// The bouncer key in `api-key-file`: a file others may not read, of one line.
fn api_key(feed: &FeedConfig) -> Result<String, String> {
    use std::os::unix::fs::MetadataExt;
    let path = feed.api_key_file.as_ref().ok_or("no api-key-file")?;
    let failed = |e: &dyn std::fmt::Display| format!("api-key-file {}: {e}", path.display());
    let mode = std::fs::metadata(path).map_err(|e| failed(&e))?.mode();
    if mode & 0o007 != 0 {
        return Err(failed(&format!(
            "others may read it (mode {:o}): chmod 600 it",
            mode & 0o777
        )));
    }
    let bytes = crate::files::read_regular(path, 4096).map_err(|e| failed(&e))?;
    let key = String::from_utf8(bytes)
        .map_err(|_| failed(&"not text"))?
        .trim()
        .to_owned();
    match key.is_empty() || key.contains(char::is_whitespace) {
        true => Err(failed(&"not one key on one line")),
        false => Ok(key),
    }
}

/// How a feed's entries are read: its format, its bantime (none: until the entry leaves the
/// list), its min-count, and its name as the jail of entries without one.
fn options(feed: &FeedConfig) -> Options {
    Options {
        format: feed.format,
        bantime: feed
            .bantime
            .map_or(Bantime::Permanent, |b| Bantime::Seconds(b.0.as_secs())),
        min_count: feed.min_count,
        jail: Name::parse("jail", &feed.name).expect("checked with the config"),
    }
}

/// Why a version of `after` entries may not follow one of `before`: more than max-shrink
/// of them gone.
fn shrunk(feed: &FeedConfig, before: usize, after: usize) -> Option<String> {
    let dropped = before.saturating_sub(after);
    (dropped * 100 > before * usize::from(feed.max_shrink)).then(|| {
        format!(
            "shrank from {before} to {after} entries, more than max-shrink ({}%)",
            feed.max_shrink
        )
    })
}

/// A downloaded version, read and judged against the last good one's `before` entries.
pub fn judge(feed: &FeedConfig, text: &str, validators: Validators, before: usize) -> Outcome {
    let mut list = blocklist::parse(text, &options(feed));
    if let Some(cut) = list
        .bad
        .iter()
        .find(|b| matches!(b.reason, EntryError::Truncated { .. }))
    {
        return Outcome::Failed(format!("{}: {}", cut.at, cut.reason));
    }
    if list.reports.is_empty() {
        return Outcome::Failed(match list.bad.first() {
            Some(first) => format!("no entry could be read; {}: {}", first.at, first.reason),
            None => "an empty list".into(),
        });
    }
    let listed = list.reports.len();
    list.reports
        .retain(|r| feed.min_prefix.check(&r.ip).is_ok());
    let after = list.reports.len();
    if after == 0 {
        return Outcome::Failed("every entry is wider than the feed's min-prefix".into());
    }
    if let Some(why) = shrunk(feed, before, after) {
        return Outcome::Failed(why);
    }
    Outcome::New {
        reports: list.reports,
        validators,
        bad: list.bad.len(),
        narrowed: listed - after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(extra: &str) -> FeedConfig {
        let text = format!("name = \"drop\"\nurl = \"https://example.org/drop.txt\"\n{extra}");
        toml::from_str(&text).unwrap()
    }

    fn judged(extra: &str, text: &str, before: usize) -> Result<Vec<String>, String> {
        match judge(&feed(extra), text, Validators::default(), before) {
            Outcome::New { reports, .. } => {
                Ok(reports.iter().map(|r| r.fields().join(" ")).collect())
            }
            Outcome::Failed(why) => Err(why),
            Outcome::Unchanged => unreachable!(),
        }
    }

    #[test]
    fn a_version_is_read_with_the_feeds_name_as_jail_and_its_bantime() {
        assert_eq!(
            judged(
                "bantime = \"2d\"\n",
                "1.10.16.0/20 ; SBL1\n203.0.113.7,60,web\n",
                0
            ),
            Ok(vec![
                "import drop 1.10.16.0/20 172800".into(),
                "import web 203.0.113.7 60".into()
            ])
        );
        assert_eq!(
            judged("", "1.10.16.0/20\n", 0),
            Ok(vec!["import drop 1.10.16.0/20 -1".into()])
        );
    }

    #[test]
    fn an_empty_unreadable_truncated_or_shrunken_version_is_a_failure() {
        assert_eq!(judged("", "# nothing\n", 3), Err("an empty list".into()));
        assert!(judged("", "not-an-address\n", 3)
            .unwrap_err()
            .starts_with("no entry could be read; line 1: "));
        let cut = "{\"cidr\":\"1.10.16.0/20\"}\n{\"type\":\"metadata\",\"records\":2}\n";
        assert_eq!(
            judged("", cut, 0),
            Err(
                "line 2: the metadata line counts 2 records, and the list has 1: truncated?".into()
            )
        );
        let four = "1.0.0.0/16\n2.0.0.0/16\n3.0.0.0/16\n4.0.0.0/16\n";
        assert_eq!(
            judged("", four, 9),
            Err("shrank from 9 to 4 entries, more than max-shrink (50%)".into())
        );
        assert_eq!(judged("", four, 8).map(|r| r.len()), Ok(4));
        assert_eq!(
            judged("max-shrink = 90\n", four, 40).map(|r| r.len()),
            Ok(4)
        );
        // Entries wider than the feed's min-prefix are left out, and count as gone.
        let wide = judged("min-prefix = { ipv4 = 24 }\nmax-shrink = 100\n", four, 4);
        assert_eq!(
            wide,
            Err("every entry is wider than the feed's min-prefix".into())
        );
    }
}
