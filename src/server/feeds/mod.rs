//! `[[feeds]]`: blocklists the server fetches on an interval and keeps current. A thread of
//! its own fetches and judges them (`fetch`), so that no download slows the loop; the loop
//! applies what changed in the feed's name, `feed:NAME`: new entries are banned, and those
//! that left the list are lifted where the feed alone banned them. A failed, empty,
//! truncated or shrunken download changes nothing, and the last good copy stays, on disk
//! too (`saved`), so that a restart neither refetches it nor forgets what it banned.
//!
//! Every server with the feed in its server.toml fetches it. Two such servers converge: a
//! lift is dated, so the later of a ban and a lift wins on both, and each applies only what
//! changed since its own last good copy.

pub mod fetch;
mod saved;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::clock::unix_now;
use crate::config::feeds::FeedConfig;
use crate::server::changes::Changes;
use crate::server::core::Core;
use crate::wire::cidr::Cidr;
use crate::wire::control::FeedView;
use crate::wire::protocol::{Bantime, Report};
use fetch::{Fetched, Outcome, Schedule, Worker};

/// One feed: its configuration, its last good copy, and how its fetches went.
struct Feed {
    config: FeedConfig,
    copy: saved::Copy,
    last_error: Option<String>,
    failures: u64,
    next_fetch: u64,
}

pub struct Feeds {
    feeds: Vec<Feed>,
    dir: PathBuf,
    worker: Option<Worker>,
}

impl Feeds {
    /// No feeds, and no thread.
    pub fn empty() -> Feeds {
        Feeds {
            feeds: Vec::new(),
            dir: PathBuf::new(),
            worker: None,
        }
    }

    /// The feeds of `configs`, each with its last good copy from `state_dir`; the bans of
    /// feeds no longer configured are lifted, and their copies removed.
    pub fn start(
        configs: &[FeedConfig],
        state_dir: &Path,
        core: &mut Core,
        changes: &mut Changes,
    ) -> Result<Feeds, String> {
        let dir = state_dir.join("feeds");
        if !configs.is_empty() {
            crate::files::own_dir(&dir, 0o750).map_err(|e| e.to_string())?;
        }
        let now = unix_now();
        let feeds: Vec<Feed> = configs
            .iter()
            .map(|config| {
                let copy = saved::Copy::load(&dir, config).unwrap_or_else(|e| {
                    log::warn!(
                        "feed {}: its last copy cannot be read, so it is fetched at once: {e}",
                        config.name
                    );
                    saved::Copy::default()
                });
                let next_fetch = copy
                    .fetched
                    .map_or(now, |at| (at + config.interval.0.as_secs()).max(now));
                Feed {
                    config: config.clone(),
                    copy,
                    last_error: None,
                    failures: 0,
                    next_fetch,
                }
            })
            .collect();
        for name in saved::Copy::others(&dir, configs) {
            let origin = format!("feed:{name}");
            let lifted = core.lift_reported_only_by(&origin, |_| true, changes).0;
            log::info!(
                "feed {name} is no longer configured: lifted the {lifted} bans only it held"
            );
            saved::Copy::remove(&dir, &name);
        }
        let schedules = feeds
            .iter()
            .map(|f| Schedule {
                validators: f.copy.validators.clone(),
                entries: f.copy.entries.len(),
                next: f.next_fetch,
                stream: None,
            })
            .collect();
        let worker = match feeds.is_empty() {
            true => None,
            false => Some(Worker::spawn(configs.to_vec(), schedules)?),
        };
        Ok(Feeds { feeds, dir, worker })
    }

    /// Applies what the thread fetched since the last pass; false when it fetched nothing.
    pub fn apply(&mut self, core: &mut Core, changes: &mut Changes) -> bool {
        let Some(worker) = &self.worker else {
            return false;
        };
        let fetched: Vec<Fetched> = worker.results.try_iter().collect();
        let any = !fetched.is_empty();
        for Fetched { feed, at, outcome } in fetched {
            let feed = &mut self.feeds[feed];
            feed.next_fetch = at + feed.config.interval.0.as_secs();
            match outcome {
                Outcome::Unchanged => feed.succeeded(at),
                Outcome::New {
                    reports,
                    validators,
                    bad,
                    narrowed,
                } => {
                    feed.apply(core, reports, changes, (bad, narrowed));
                    feed.copy.validators = validators;
                    feed.succeeded(at);
                    if let Err(e) = feed.copy.save(&self.dir, &feed.config) {
                        log::error!("feed {}: cannot save its copy: {e}", feed.config.name);
                    }
                }
                Outcome::Failed(why) => {
                    log::warn!(
                        "feed {}: {why}; its last good copy ({} entries) stays",
                        feed.config.name,
                        feed.copy.entries.len()
                    );
                    feed.failures += 1;
                    feed.last_error = Some(why);
                }
            }
        }
        any
    }

    /// For `banshare status` and the metrics.
    pub fn views(&self) -> Vec<FeedView> {
        self.feeds
            .iter()
            .map(|f| FeedView {
                name: f.config.name.clone(),
                url: f.config.url.clone(),
                entries: f.copy.entries.len(),
                last_success: f.copy.fetched,
                last_error: f.last_error.clone(),
                failures: f.failures,
                next_fetch: f.next_fetch,
            })
            .collect()
    }
}

impl Feed {
    fn succeeded(&mut self, at: u64) {
        self.last_error = None;
        self.copy.fetched = Some(at);
    }

    /// Bans the new entries, lifts those that left, and renews, for a feed with a bantime,
    /// those whose ban ends within two intervals.
    fn apply(
        &mut self,
        core: &mut Core,
        reports: Vec<Report>,
        changes: &mut Changes,
        (bad, narrowed): (usize, usize),
    ) {
        let origin = self.config.origin();
        let now = unix_now();
        let renew_before = now + 2 * self.config.interval.0.as_secs();
        let listed: BTreeMap<Cidr, Report> = reports.into_iter().map(|r| (r.ip, r)).collect();
        let renews = |r: &Report| {
            matches!(r.bantime, Bantime::Seconds(_)) && core.ends_before(&r.ip, renew_before)
        };
        let added: Vec<Report> = listed
            .values()
            .filter(|r| !self.copy.entries.contains_key(&r.ip) || renews(r))
            .cloned()
            .collect();
        let summary = match core.import_in(&origin, &added, self.config.group.as_deref(), changes) {
            Ok(summary) => summary,
            Err(e) => return log::error!("feed {}: {e}", self.config.name),
        };
        let (lifted, kept) = core.lift_reported_only_by(
            &origin,
            |ip| self.copy.entries.contains_key(ip) && !listed.contains_key(ip),
            changes,
        );
        let refused: u64 = summary.refused.values().sum();
        log::info!(
            "feed {}: a new version of {} entries: {} banned, {} already, {refused} refused, {lifted} lifted \
             ({kept} kept, reported by hosts too); {bad} unreadable and {narrowed} wider than its min-prefix left out",
            self.config.name,
            listed.len(),
            summary.accepted,
            summary.duplicate,
        );
        self.copy.entries = listed;
    }
}
