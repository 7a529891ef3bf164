//! Following one server: noticing what was missed (a gap in sequence numbers, a new epoch,
//! a silence longer than three heartbeats), and the catch-up that reads the server's active
//! bans page by page. No sockets here: the daemon sends the requests this asks for and
//! applies the bans, so every decision can be tested on its own.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::wire::cidr::Cidr;
use crate::wire::protocol::SnapshotPage;

/// How long a snapshot page may take before it is asked for again.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a catch-up that a silence started waits for the server to be heard again,
/// which shows whether anything was missed, before it asks for pages anyway (a publish
/// socket that stays silent while requests are answered).
pub const SILENT_HOLD: Duration = Duration::from_secs(60);

/// Where one server stands, as far as this client has heard.
pub struct Follower {
    /// The last (epoch, seq) seen, to notice missed messages.
    position: Option<(u64, u64)>,
    /// The seq up to which everything was taken in: by a catch-up, then one message after
    /// another. Behind `position` while missed messages wait for a catch-up.
    taken: Option<u64>,
    resync: Option<Resync>,
    wanted: bool,
    /// When the server was last heard from, and how often it says it sends heartbeats.
    heard_at: Instant,
    /// When a silence last started a catch-up: the next one starts three heartbeats later
    /// at the earliest, while `heard_at` still says when the server was last heard.
    silence_noted_at: Instant,
    heartbeat: Duration,
    /// The catch-up wanted or under way was started by a silence alone: dropped if the
    /// server is heard again with nothing missed, before its first page (a restart that
    /// kept the epoch, or a network blip), so that 10,000 hosts do not all page through
    /// the table after one.
    by_silence: bool,
    /// Who is followed, for the log: "the server", or a peer's name.
    name: String,
}

/// A catch-up under way: paging through the server's active bans.
pub struct Resync {
    /// The last network of the previous page: the next page starts after it.
    after: Option<Cidr>,
    /// Networks in the snapshot so far.
    pub active: HashSet<Cidr>,
    /// Networks published while the snapshot was being read.
    pub fresh: HashSet<Cidr>,
    pub pages: usize,
    pub started: Instant,
    sent_at: Instant,
}

/// A snapshot page the daemon should ask for now.
#[derive(Debug, PartialEq, Eq)]
pub enum Due {
    /// The first page of a new catch-up.
    Start,
    /// The page after `after` again, since the server has not answered in time.
    Again(Option<Cidr>),
}

/// What follows a page that was read.
pub enum Next {
    /// Ask for the page after this network.
    Page(Cidr),
    /// That was the last page.
    Done(Resync),
}

impl Follower {
    /// A follower that catches up at once, on whatever happened while the client was not
    /// running.
    pub fn new(now: Instant) -> Follower {
        Follower::named("the server", now)
    }

    pub fn named(name: &str, now: Instant) -> Follower {
        Follower {
            position: None,
            taken: None,
            resync: None,
            wanted: true,
            heard_at: now,
            silence_noted_at: now,
            heartbeat: Duration::from_secs(1),
            by_silence: false,
            name: name.to_owned(),
        }
    }

    /// Who is followed, for the log.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The last (epoch, seq) heard.
    pub fn position(&self) -> Option<(u64, u64)> {
        self.position
    }

    /// How many of the server's messages this follower has not taken in yet: those a
    /// catch-up is fetching, or, before the first catch-up, all of them.
    pub fn lag(&self) -> u64 {
        match self.position {
            Some((_, seq)) => seq.saturating_sub(self.taken.unwrap_or(0)),
            None => 0,
        }
    }

    /// How long since the server was last heard from.
    pub fn silent_for(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.heard_at)
    }

    /// Whether the server was heard from within three heartbeats.
    pub fn is_live(&self, now: Instant) -> bool {
        self.position.is_some()
            && now.saturating_duration_since(self.heard_at) <= 3 * self.heartbeat
    }

    /// Forgets where the server stood, as after new sockets to it, and catches up.
    pub fn restart(&mut self) {
        self.position = None;
        self.taken = None;
        self.resync = None;
        self.wanted = true;
        self.by_silence = false;
    }

    /// Asks for a catch-up, unless one is under way.
    pub fn want(&mut self) {
        self.wanted = true;
    }

    /// A HEARTBEAT: the server's position, and how often it sends them.
    pub fn heartbeat(&mut self, epoch: u64, seq: u64, interval_ms: u64, now: Instant) {
        self.heard_at = now;
        self.heartbeat = Duration::from_millis(interval_ms.clamp(100, 3_600_000));
        self.track(epoch, seq, true);
    }

    /// A BAN or UNBAN of `ip`. During a catch-up it also marks the network as current, so
    /// that the snapshot's end does not take it for a stale one.
    pub fn published(&mut self, epoch: u64, seq: u64, ip: Cidr, now: Instant) {
        self.heard_at = now;
        self.track(epoch, seq, false);
        if let Some(resync) = &mut self.resync {
            resync.fresh.insert(ip);
        }
    }

    /// Notes the server's position; a gap or a new epoch means messages were missed, and a
    /// catch-up fetches them.
    fn track(&mut self, epoch: u64, seq: u64, heartbeat: bool) {
        // A heartbeat repeats the last seq; a ban or unban brings the next one.
        let newest_missed = if heartbeat {
            seq
        } else {
            seq.saturating_sub(1)
        };
        let nothing_missed = matches!(self.position,
            Some((e, last)) if e == epoch && newest_missed <= last && self.taken == Some(last));
        if nothing_missed {
            self.drop_silent_catch_up();
        } else {
            self.by_silence = false;
        }
        match self.position {
            Some((e, last)) if e == epoch && newest_missed > last => {
                log::warn!(
                    "missed {} messages from {} (seq {} to {newest_missed}); will resynchronise",
                    newest_missed - last,
                    self.name,
                    last + 1
                );
                self.wanted = true;
            }
            Some((e, last)) if e == epoch && seq <= last => return,
            Some((e, _)) if e != epoch => {
                log::info!(
                    "{} restarted (new epoch {epoch}); will resynchronise",
                    self.name
                );
                self.wanted = true;
            }
            _ => {}
        }
        // In order after what was taken in: taken in too.
        let in_order = matches!(self.position,
            Some((e, last)) if e == epoch && newest_missed <= last && self.taken == Some(last));
        if in_order {
            self.taken = Some(seq);
        } else if self.position.is_some_and(|(e, _)| e != epoch) {
            self.taken = None;
        }
        self.position = Some((epoch, seq));
    }

    /// Three missed heartbeats mean the server or the path to it is in trouble: returns
    /// how long it has been silent when that starts a catch-up, which fetches whatever was
    /// published meanwhile as soon as it answers again.
    pub fn silence(&mut self, now: Instant) -> Option<Duration> {
        let silent = now.saturating_duration_since(self.heard_at);
        let since_noted = now.saturating_duration_since(self.silence_noted_at);
        let quiet = silent.min(since_noted) > 3 * self.heartbeat;
        if !quiet || self.wanted || self.resync.is_some() {
            return None;
        }
        self.wanted = true;
        self.by_silence = true;
        self.silence_noted_at = now;
        Some(silent)
    }

    /// Whether a catch-up that a silence started has waited long enough.
    fn hold_over(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.silence_noted_at) >= SILENT_HOLD
    }

    /// Drops a catch-up that only a silence started and that has no page yet.
    fn drop_silent_catch_up(&mut self) {
        let started = self.resync.as_ref().map(|r| r.pages);
        if !self.by_silence || started.is_some_and(|pages| pages > 0) {
            return;
        }
        self.by_silence = false;
        self.wanted = false;
        self.resync = None;
        log::info!(
            "{} is heard again and nothing was missed: no catch-up needed",
            self.name
        );
    }

    /// The page to ask for now, if any. The daemon then sends it and calls `asked`.
    pub fn due(&mut self, now: Instant) -> Option<Due> {
        match &self.resync {
            Some(resync) if now.saturating_duration_since(resync.sent_at) >= REQUEST_TIMEOUT => {
                Some(Due::Again(resync.after))
            }
            Some(_) => None,
            None if self.wanted && self.by_silence && !self.hold_over(now) => None,
            None if self.wanted => {
                self.wanted = false;
                self.resync = Some(Resync {
                    after: None,
                    active: HashSet::new(),
                    fresh: HashSet::new(),
                    pages: 0,
                    started: now,
                    sent_at: now,
                });
                Some(Due::Start)
            }
            None => None,
        }
    }

    /// The page after `after` was asked for.
    pub fn asked(&mut self, after: Option<Cidr>, now: Instant) {
        if let Some(resync) = &mut self.resync {
            resync.after = after;
            resync.sent_at = now;
        }
    }

    /// A snapshot page: None when no catch-up is under way (a late answer). The daemon
    /// applies the page's bans, then asks for the next page or finishes.
    pub fn take_page(&mut self, page: &SnapshotPage) -> Option<Next> {
        let resync = self.resync.as_ref()?;
        let current = matches!(self.position,
            Some((e, s)) if e == page.epoch && s == page.seq && self.taken == Some(s));
        if resync.pages == 0 && current {
            // Where this follower stands: nothing was missed.
            self.drop_silent_catch_up();
            self.resync.as_ref()?;
        }
        let resync = self.resync.as_mut().expect("a catch-up under way");
        if resync.pages == 0 {
            // Everything published after this point arrives on the publish socket.
            match self.position {
                Some((e, s)) if e == page.epoch && s >= page.seq => {}
                _ => self.position = Some((page.epoch, page.seq)),
            }
        }
        resync.pages += 1;
        resync.active.extend(page.bans.iter().map(|b| b.ip));
        // Kept as it is here, neither applied nor lifted: the server holds something there.
        resync
            .active
            .extend(page.unreadable.iter().filter_map(|u| u.ip));
        Some(match page.next {
            Some(next) => Next::Page(next),
            None => {
                self.taken = self.position.map(|(_, seq)| seq);
                self.by_silence = false;
                Next::Done(self.resync.take().expect("a catch-up under way"))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::protocol::Ban;

    fn page(epoch: u64, seq: u64, bans: &[&str], next: Option<&str>) -> SnapshotPage {
        SnapshotPage {
            topic: crate::wire::topic::Topic::ungrouped(),
            lifts: vec![],
            epoch,
            seq,
            next: next.map(|n| n.parse().unwrap()),
            bans: bans
                .iter()
                .map(|ip| Ban::sample(ip, Some(3600), None))
                .collect(),
            unreadable: Vec::new(),
        }
    }

    /// A follower that has caught up with a server at (epoch, seq).
    fn caught_up(epoch: u64, seq: u64, now: Instant) -> Follower {
        let mut follower = Follower::new(now);
        assert_eq!(follower.due(now), Some(Due::Start));
        assert!(matches!(
            follower.take_page(&page(epoch, seq, &[], None)),
            Some(Next::Done(_))
        ));
        assert_eq!(follower.due(now), None);
        follower
    }

    #[test]
    fn the_lag_counts_what_a_catch_up_must_fetch() {
        let now = Instant::now();
        let mut follower = caught_up(1, 5, now);
        assert_eq!(follower.lag(), 0);
        let ip: Cidr = "203.0.113.7".parse().unwrap();
        follower.published(1, 6, ip, now);
        follower.heartbeat(1, 6, 1000, now);
        assert_eq!(follower.lag(), 0);
        // Seq 7 to 9 were missed, and 10 waits with them until a catch-up is read.
        follower.published(1, 10, ip, now);
        assert_eq!(follower.lag(), 4);
        assert_eq!(follower.due(now), Some(Due::Start));
        follower.take_page(&page(1, 10, &[], None));
        assert_eq!(follower.lag(), 0);
    }

    #[test]
    fn a_new_follower_catches_up_at_once_and_only_once() {
        let now = Instant::now();
        let mut follower = Follower::new(now);
        assert_eq!(follower.due(now), Some(Due::Start));
        assert_eq!(follower.due(now), None, "one catch-up at a time");
    }

    #[test]
    fn a_gap_in_sequence_numbers_starts_a_catch_up_and_the_next_message_does_not() {
        let now = Instant::now();
        let ip: Cidr = "192.0.2.1".parse().unwrap();
        let mut follower = caught_up(7, 10, now);
        follower.published(7, 11, ip, now);
        assert_eq!(follower.due(now), None, "seq 11 follows 10");
        follower.published(7, 13, ip, now);
        assert_eq!(follower.due(now), Some(Due::Start), "seq 12 was missed");
    }

    #[test]
    fn a_heartbeat_ahead_of_us_is_a_gap_and_one_that_repeats_our_seq_is_not() {
        let now = Instant::now();
        let mut follower = caught_up(7, 10, now);
        follower.heartbeat(7, 10, 1000, now);
        assert_eq!(follower.due(now), None);
        follower.heartbeat(7, 11, 1000, now);
        assert_eq!(follower.due(now), Some(Due::Start));
    }

    #[test]
    fn a_new_epoch_is_a_restarted_server() {
        let now = Instant::now();
        let mut follower = caught_up(7, 10, now);
        follower.heartbeat(8, 0, 1000, now);
        assert_eq!(follower.due(now), Some(Due::Start));
    }

    #[test]
    fn silence_past_three_heartbeats_starts_one_catch_up() {
        let now = Instant::now();
        let mut follower = caught_up(7, 10, now);
        follower.heartbeat(7, 10, 1000, now);
        assert_eq!(follower.silence(now + Duration::from_secs(3)), None);
        let later = now + Duration::from_millis(3001);
        assert!(follower.silence(later).is_some());
        assert!(follower.silence(later).is_none(), "said once");
        // Noticing the silence does not make the server heard: not live, as status says.
        assert!(!follower.is_live(later));
        // It waits for the server to be heard again, which shows what was missed, or
        // for SILENT_HOLD.
        assert_eq!(follower.due(later), None);
        assert_eq!(follower.due(later + SILENT_HOLD), Some(Due::Start));
    }

    #[test]
    fn a_catch_up_that_a_silence_started_is_dropped_when_nothing_was_missed() {
        let now = Instant::now();
        let later = now + Duration::from_millis(3001);
        // Heard again at the same place, as after a restart that kept the epoch: dropped,
        // whether its first page was asked for or not.
        for asked in [false, true] {
            let mut follower = caught_up(7, 10, now);
            assert!(follower.silence(later).is_some());
            if asked {
                let much_later = later + SILENT_HOLD;
                assert_eq!(follower.due(much_later), Some(Due::Start));
                follower.asked(None, much_later);
            }
            follower.heartbeat(7, 10, 1000, later);
            assert_eq!(follower.due(later + SILENT_HOLD + REQUEST_TIMEOUT), None);
            assert!(follower.take_page(&page(7, 10, &[], None)).is_none());
            // The next BAN is taken in as usual.
            follower.published(7, 11, "192.0.2.1".parse().unwrap(), later);
            assert_eq!(follower.due(later), None);
        }
        // What was missed, or a new epoch, still needs the catch-up.
        for (epoch, seq) in [(7, 11), (8, 0)] {
            let mut follower = caught_up(7, 10, now);
            assert!(follower.silence(later).is_some());
            follower.heartbeat(epoch, seq, 1000, later);
            assert_eq!(follower.due(later), Some(Due::Start), "{epoch} {seq}");
        }
        // A first page that shows nothing missed, before any heartbeat: dropped too.
        let much_later = later + SILENT_HOLD;
        let mut follower = caught_up(7, 10, now);
        assert!(follower.silence(later).is_some());
        assert_eq!(follower.due(much_later), Some(Due::Start));
        follower.asked(None, much_later);
        let after = "192.0.2.9";
        assert!(follower
            .take_page(&page(7, 10, &[after], Some(after)))
            .is_none());
        assert_eq!(follower.due(much_later + REQUEST_TIMEOUT), None);
        // One that shows more: the catch-up goes on to the end.
        let mut follower = caught_up(7, 10, now);
        assert!(follower.silence(later).is_some());
        assert_eq!(follower.due(much_later), Some(Due::Start));
        follower.asked(None, much_later);
        assert!(follower
            .take_page(&page(7, 12, &[after], Some(after)))
            .is_some());
        assert!(matches!(
            follower.take_page(&page(7, 12, &[], None)),
            Some(Next::Done(_))
        ));
    }

    #[test]
    fn an_unanswered_page_is_asked_for_again_from_where_it_was() {
        let now = Instant::now();
        let mut follower = Follower::new(now);
        assert_eq!(follower.due(now), Some(Due::Start));
        follower.asked(None, now);
        let after: Cidr = "192.0.2.9".parse().unwrap();
        assert!(matches!(
            follower.take_page(&page(1, 5, &["192.0.2.9"], Some("192.0.2.9"))),
            Some(Next::Page(next)) if next == after
        ));
        follower.asked(Some(after), now);
        assert_eq!(follower.due(now + Duration::from_secs(4)), None);
        assert_eq!(
            follower.due(now + REQUEST_TIMEOUT),
            Some(Due::Again(Some(after)))
        );
    }

    #[test]
    fn pages_gather_the_active_bans_and_what_was_published_meanwhile() {
        let now = Instant::now();
        let mut follower = Follower::new(now);
        follower.due(now);
        follower.take_page(&page(1, 5, &["192.0.2.1"], Some("192.0.2.1")));
        let fresh: Cidr = "198.51.100.7".parse().unwrap();
        follower.published(1, 6, fresh, now);
        let Some(Next::Done(resync)) = follower.take_page(&page(1, 6, &["192.0.2.2"], None)) else {
            panic!("the last page ends the catch-up");
        };
        assert_eq!(resync.pages, 2);
        assert_eq!(resync.active.len(), 2);
        assert!(resync.fresh.contains(&fresh));
        assert!(
            follower.take_page(&page(1, 6, &[], None)).is_none(),
            "a late page"
        );
    }

    #[test]
    fn the_first_page_sets_the_position_unless_we_are_already_past_it() {
        let now = Instant::now();
        let mut follower = caught_up(1, 5, now);
        // Published while the next catch-up's first page was on its way: seq 6 is ours.
        follower.want();
        follower.due(now);
        follower.published(1, 6, "192.0.2.1".parse().unwrap(), now);
        follower.take_page(&page(1, 5, &[], None));
        follower.published(1, 7, "192.0.2.2".parse().unwrap(), now);
        assert_eq!(follower.due(now), None, "seq 7 follows 6");
    }
}
