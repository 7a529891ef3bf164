//! The feeds' thread: fetches each feed when it is due, with its ETag and Last-Modified
//! (a 304 costs nothing), reads the new version and judges it. The loop only ever hears of
//! a version worth applying; a failed, empty, truncated or shrunken one is a failure, and
//! the last good copy stays.
//!
//! Bounded as everything from outside: one thread for every feed, one request at a time,
//! each within the feed's interval or 60 s, whichever is shorter, and `MAX_FEED_BYTES`.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

use ureq::tls::{RootCerts, TlsConfig};
use ureq::Agent;

use crate::blocklist::{self, EntryError, Options};
use crate::clock::unix_now;
use crate::config::feeds::FeedConfig;
use crate::wire::protocol::{Bantime, Name, Report};

/// The largest version read, as for `banshare import`.
pub const MAX_FEED_BYTES: u64 = 64 << 20;
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

/// The running thread: dropping it stops it.
pub struct Worker {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
    pub results: Receiver<Fetched>,
}

impl Worker {
    pub fn spawn(feeds: Vec<FeedConfig>, schedules: Vec<Schedule>) -> Result<Worker, String> {
        let (stop, stopped) = mpsc::channel();
        let (send, results) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("feeds".into())
            .spawn(move || run(&feeds, schedules, &stopped, &send))
            .map_err(|e| format!("cannot start the feeds' thread: {e}"))?;
        Ok(Worker {
            stop: Some(stop),
            thread: Some(thread),
            results,
        })
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            // A request in flight ends within its timeout.
            let _ = thread.join();
        }
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
    let mut request = agent.get(&feed.url);
    if let Some(etag) = &known.etag {
        request = request.header("If-None-Match", etag);
    }
    if let Some(date) = &known.last_modified {
        request = request.header("If-Modified-Since", date);
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
        .limit(MAX_FEED_BYTES)
        .read_to_string()
        .map_err(|e| e.to_string())?;
    Ok(Some((text, validators)))
}

/// A downloaded version, read and judged against the last good one's `before` entries.
pub fn judge(feed: &FeedConfig, text: &str, validators: Validators, before: usize) -> Outcome {
    let options = Options {
        format: feed.format,
        bantime: feed
            .bantime
            .map_or(Bantime::Permanent, |b| Bantime::Seconds(b.0.as_secs())),
        min_count: feed.min_count,
        jail: Name::parse("jail", &feed.name).expect("checked with the config"),
    };
    let mut list = blocklist::parse(text, &options);
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
    let dropped = before.saturating_sub(after);
    if dropped * 100 > before * usize::from(feed.max_shrink) {
        return Outcome::Failed(format!(
            "shrank from {before} to {after} entries, more than max-shrink ({}%)",
            feed.max_shrink
        ));
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
