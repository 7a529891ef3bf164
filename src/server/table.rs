//! The server's table of active bans, which also answers "was this published recently?"
//! for de-duplication. Reports only ever make a ban end later: the later end wins.

use std::collections::{BTreeMap, HashSet};
use std::iter::Peekable;
use std::ops::Bound;
use std::time::Duration;

use smallvec::SmallVec;

use crate::config::MAX_RECIDIVE_WINDOW;
use crate::store::{Record, RecordError};
use crate::wire::cidr::Cidr;
use crate::wire::protocol::{
    ban_fields, number, parse_ban, Ban, Lift, Name, Report, MAX_LIFTS_WITHOUT_BAN,
};

#[derive(Debug, Clone)]
pub struct Entry {
    /// The ban as published. Its end is the latest that any report asked for; prog, jail,
    /// origin, bantime and the report time come from the report that set that end, which
    /// is also when it was last published: de-duplication counts from `ban.reported`.
    pub ban: Ban,
    /// Every host that reported it to this server while it was in force, first reporter
    /// first; a ban heard from a peer starts with its origin.
    pub reporters: Reporters,
    /// The network's bans, this one last, while `recidive-window` is set: the entry is
    /// kept after the ban ends for as long as the window may count them.
    pub history: History,
}

impl Entry {
    pub fn first_report(&self) -> u64 {
        self.reporters.iter().map(|r| r.first).min().unwrap_or(0)
    }

    pub fn last_report(&self) -> u64 {
        self.reporters.iter().map(|r| r.last).max().unwrap_or(0)
    }
}

/// In the server's journal: `IP PROG JAIL ORIGIN BANTIME EXPIRES PUBLISHED REPORTERS`, the
/// first six fields of a published ban, when it was last published (its report time), and
/// REPORTERS as `NAME/FIRST/LAST,...` with `+N` at the end for reporters beyond the named
/// ones, or `-`.
impl Record for Entry {
    fn network(&self) -> Cidr {
        self.ban.ip
    }

    /// A ban in force, or the history of one that `recidive-window` may still count: the
    /// table forgets it sooner when the window is shorter (`BanTable::purge`).
    fn active_at(&self, now: u64) -> bool {
        let counted = |at: u64| at.saturating_add(MAX_RECIDIVE_WINDOW) > now;
        self.ban.active_at(now) || self.history.last().is_some_and(counted)
    }

    fn reported(&self) -> u64 {
        self.ban.reported
    }

    fn encode(&self) -> String {
        let ban = ban_fields(&self.ban)[..6].join(" ");
        let reporters = reporters_field(&self.reporters);
        let mut line = format!("{ban} {} {reporters}", self.ban.reported);
        if !self.history.is_empty() {
            line.push(' ');
            line.push_str(&self.history.field());
        }
        line
    }

    fn decode(fields: &[&str]) -> Result<Entry, RecordError> {
        let mut history = History::default();
        let (ban, published, reporters) = match fields {
            [ban @ .., published, reporters] if ban.len() == 6 => {
                (ban, published, parse_reporters(reporters)?)
            }
            [ban @ .., published, reporters, bans]
                if ban.len() == 6 && number("", reporters).is_err() =>
            {
                history = History::parse(bans)?;
                (ban, published, parse_reporters(reporters)?)
            }
            // Written before the journal kept every reporter: the origin was the only one.
            [ban @ .., first, last, published] if ban.len() == 6 => {
                let reporter = Reporter {
                    name: Name::parse("origin", ban[3])?,
                    first: number("first report", first)?,
                    last: number("last report", last)?,
                };
                (ban, published, Reporters::new([reporter], 0))
            }
            _ => return Err(RecordError::Unknown),
        };
        let ban = Ban {
            reported: number("published", published)?,
            ..parse_ban(ban)?
        };
        Ok(Entry {
            ban,
            reporters,
            history,
        })
    }
}

/// The most bans of one network that its history keeps, the latest ones.
pub const MAX_HISTORY: usize = 16;

/// One ban of a network: the host whose report started it, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Episode {
    pub name: Name,
    pub at: u64,
}

/// A network's bans, oldest first: what `recidive-window` counts (`policy::recidive`).
/// Written in the journal as `NAME/AT,NAME/AT`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History(SmallVec<[Episode; 1]>);

impl History {
    pub fn iter(&self) -> impl Iterator<Item = &Episode> {
        self.0.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many of the bans started at or after `from`.
    pub fn since(&self, from: u64) -> usize {
        self.0.iter().filter(|e| e.at >= from).count()
    }

    fn last(&self) -> Option<u64> {
        self.0.last().map(|e| e.at)
    }

    fn add(&mut self, name: &Name, at: u64) {
        if self.0.len() == MAX_HISTORY {
            self.0.remove(0);
        }
        let name = name.clone();
        self.0.push(Episode { name, at });
    }

    fn field(&self) -> String {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|e| format!("{}/{}", e.name, e.at))
            .collect();
        parts.join(",")
    }

    fn parse(field: &str) -> Result<History, RecordError> {
        let mut history = History::default();
        for part in field.split(',') {
            let Some((name, at)) = part.split_once('/') else {
                return Err(RecordError::bad("ban in history", part));
            };
            history.add(&Name::parse("history", name)?, number("history", at)?);
        }
        Ok(history)
    }
}

fn reporters_field(reporters: &Reporters) -> String {
    let mut parts: Vec<String> = reporters
        .iter()
        .map(|r| format!("{}/{}/{}", r.name, r.first, r.last))
        .collect();
    if reporters.more > 0 {
        parts.push(format!("+{}", reporters.more));
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(",")
    }
}

fn parse_reporters(field: &str) -> Result<Reporters, RecordError> {
    if field == "-" {
        return Ok(Reporters::default());
    }
    let mut named = Vec::new();
    let mut more = 0;
    for part in field.split(',') {
        if let Some(count) = part.strip_prefix('+') {
            more = number("reporters", count)?
                .try_into()
                .map_err(|_| RecordError::UncountedReporters)?;
            continue;
        }
        let [name, first, last] = part.split('/').collect::<Vec<_>>()[..] else {
            return Err(RecordError::bad("reporter", part));
        };
        named.push(Reporter {
            name: Name::parse("reporter", name)?,
            first: number("first report", first)?,
            last: number("last report", last)?,
        });
    }
    if named.len() > MAX_REPORTERS {
        return Err(RecordError::TooManyReporters(MAX_REPORTERS));
    }
    Ok(Reporters::new(named, more))
}

/// A host that reported a ban, and when it first and last did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reporter {
    pub name: Name,
    pub first: u64,
    pub last: u64,
}

/// The hosts that reported a ban: up to `MAX_REPORTERS` by name, and a count of the others,
/// so that a ban reported by the whole fleet still costs a bounded amount of memory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reporters {
    named: SmallVec<[Reporter; 1]>,
    /// Reports from further hosts, beyond the named ones.
    pub more: u32,
}

/// The most reporters a ban keeps by name: 16 take about 600 bytes, so even a million bans
/// each reported by the whole fleet stay within a few hundred megabytes more.
pub const MAX_REPORTERS: usize = 16;

impl Reporters {
    pub fn new(named: impl IntoIterator<Item = Reporter>, more: u32) -> Reporters {
        Reporters {
            named: named.into_iter().take(MAX_REPORTERS).collect(),
            more,
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Reporter> {
        self.named.iter()
    }

    /// When the `k`-th latest of the named hosts last reported the ban, if `k` did.
    fn kth_latest(&self, k: usize) -> Option<&Reporter> {
        let mut latest: Vec<&Reporter> = self.named.iter().collect();
        latest.sort_by_key(|r| std::cmp::Reverse(r.last));
        latest.get(k.max(1) - 1).copied()
    }

    /// Whether host `name` is the one host that reported the ban.
    pub fn only(&self, name: &str) -> bool {
        self.more == 0
            && !self.named.is_empty()
            && self.named.iter().all(|r| r.name.as_str() == name)
    }

    pub fn includes(&self, name: &str) -> bool {
        self.named.iter().any(|r| r.name.as_str() == name)
    }

    pub fn is_empty(&self) -> bool {
        self.named.is_empty()
    }

    /// Notes a report from `name` at `at`; true when that changed what is known, a host
    /// not yet named here or a later report from one, which the journal should then
    /// record: a report made after an unban that this server has not heard of yet keeps
    /// the ban in force when the unban comes (`BanTable::lift`), after a restart too.
    fn note(&mut self, name: &Name, at: u64) -> bool {
        if let Some(known) = self.named.iter_mut().find(|r| &r.name == name) {
            let later = at > known.last;
            known.last = known.last.max(at);
            return later;
        }
        if self.named.len() < MAX_REPORTERS {
            self.named.push(Reporter {
                name: name.clone(),
                first: at,
                last: at,
            });
        } else {
            self.more = self.more.saturating_add(1);
        }
        true
    }
}

#[derive(Debug, Default)]
pub struct BanTable {
    /// `recidive-window` in seconds: while set, each entry keeps its network's history of
    /// bans, and is kept that long after its ban ends.
    recidive: Option<u64>,
    /// Ordered by network, so that snapshot pages have a stable order.
    entries: BTreeMap<Cidr, Entry>,
    /// The latest dated unban of each network, for as long as a ban it lifted could still be
    /// in force somewhere (see `Lift`).
    lifts: BTreeMap<Cidr, Lift>,
    /// One copy of each prog, jail and origin name, which every entry shares: a million
    /// bans from a handful of jails and hosts then hold a handful of strings, not three
    /// million (about 100 bytes a ban).
    names: HashSet<Name>,
}

/// What recording a report did.
pub enum Recorded {
    /// Store and publish this ban.
    New(Entry),
    /// Nothing to publish: the ban already ends as late, or was published less than the
    /// de-duplication window ago. Holds the entry when the report changed its reporters,
    /// for the journal.
    Duplicate(Option<Entry>),
}

/// What a peer's ban did to the table.
#[derive(Debug)]
pub enum Merged {
    /// It won over what was here: journal and publish it.
    Changed(Entry),
    /// An unban kept here lifts it: a copy from a server that has not heard of the unban.
    /// Publish the unban (with this ban, and the kept unban's date), so that the sender,
    /// which may have no other path to that unban in a graph of servers that is not a full
    /// mesh, lifts it too; journal what is kept, whose end it may have moved.
    Stale(Lift),
    /// Nothing: it is expired, implausible, or loses to the ban here.
    Unchanged,
}

impl Merged {
    /// The entry to journal and publish, if the ban won.
    pub fn changed(self) -> Option<Entry> {
        match self {
            Merged::Changed(entry) => Some(entry),
            _ => None,
        }
    }
}

/// What a dated unban did to the table; every case but `Unchanged` is journaled.
#[derive(Debug)]
pub enum Lifted {
    /// Nothing: this unban, or a later one, was already known, or it is dated too far
    /// ahead to be taken.
    Unchanged,
    /// It lifted this ban: publish the unban.
    Removed(Entry),
    /// The ban here was reported before the unban, but reported again here after it, by
    /// hosts that had not heard of it: that report is news, and the ban stays, dated by it.
    /// Journal the entry and publish it, so that the servers that lifted it ban it again.
    Renewed(Entry),
    /// The ban here was reported after the unban, so it stays: publish it again, so that
    /// a server that lifted it, or dropped it for a ban that the unban lifted, bans it
    /// again too. `new` says whether the unban was news here, to journal.
    Outlived { entry: Entry, new: bool },
    /// There was no ban here to lift.
    Noted,
}

impl BanTable {
    /// Records a report from `origin` at time `now`. The later end wins: a report never makes
    /// a ban end sooner, whoever sends it, and a permanent ban stays permanent. A report that
    /// ends later is published, unless the ban was published less than `window` ago and the
    /// report asks for no longer a bantime than the published one: then it is a duplicate,
    /// and duplicates do not extend the window, so an address reported every few minutes is
    /// still re-published once per window. fail2ban's bantime.increment makes repeat
    /// offenders' bans longer, and that is news for the fleet even inside the window.
    pub fn record(
        &mut self,
        report: &Report,
        origin: &Name,
        default_bantime: Duration,
        window: Duration,
        now: u64,
    ) -> Recorded {
        let bantime = report.bantime.seconds(default_bantime);
        // A report this server takes after an unban it knows of comes after it, even in the
        // same second, or by a clock that is behind the one that dated the unban.
        let reported = match self.lifts.get(&report.ip) {
            Some(lift) if lift.at >= now => lift.at + 1,
            _ => now,
        };
        let ban = Ban {
            ip: report.ip,
            prog: self.intern(&report.prog),
            jail: self.intern(&report.jail),
            origin: self.intern(origin),
            bantime,
            // From the report time, so that `expires = reported + bantime` holds, as the
            // protocol says and every receiver checks (`Ban::implausible`).
            expires: bantime.map(|b| reported.saturating_add(b)),
            reported,
        };
        let active = |e: &&mut Entry| e.ban.active_at(now);
        let Some(entry) = self.entries.get_mut(&report.ip).filter(active) else {
            let reporters = Reporters::new([reporter(&ban.origin, now)], 0);
            return Recorded::New(self.start_ban(ban, reporters));
        };
        let noted = entry.reporters.note(&ban.origin, now);
        // A permanent ban reported again after the window is news too: its report time
        // decides which unbans lift it.
        let later = ban.rank() > entry.ban.rank();
        let recent = now < entry.ban.reported.saturating_add(window.as_secs());
        let longer = bantime.unwrap_or(u64::MAX) > entry.ban.bantime.unwrap_or(u64::MAX);
        if !later || (recent && !longer) {
            return Recorded::Duplicate(noted.then(|| entry.clone()));
        }
        entry.ban = ban;
        Recorded::New(entry.clone())
    }

    /// Takes a ban that a peer published: the same merge as for reports, later end wins
    /// (`Ban::rank`), without de-duplication, which its own server did. A ban lifted here
    /// by a later unban is stale: it changes nothing, and its sender must hear the unban.
    pub fn merge(&mut self, ban: &Ban, now: u64) -> Merged {
        if !ban.active_at(now) || ban.implausible(now).is_some() {
            return Merged::Unchanged;
        }
        if let Some(lift) = self.lifts.get_mut(&ban.ip) {
            if lift.covers(ban) {
                // A stale ban that ends later than what the unban lifted here: keep the
                // unban as long, or it would come back once the unban is forgotten.
                lift.until = later_end(lift.until, ban.expires);
                return Merged::Stale(*lift);
            }
        }
        let active = |e: &&mut Entry| e.ban.active_at(now);
        let current = self.entries.get(&ban.ip).filter(|e| e.ban.active_at(now));
        if current.is_some_and(|e| e.ban.rank() >= ban.rank()) {
            return Merged::Unchanged;
        }
        let ban = Ban {
            prog: self.intern(&ban.prog),
            jail: self.intern(&ban.jail),
            origin: self.intern(&ban.origin),
            ..ban.clone()
        };
        let entry = match self.entries.get_mut(&ban.ip).filter(active) {
            Some(entry) => {
                entry.reporters.note(&ban.origin, ban.reported);
                entry.ban = ban;
                entry.clone()
            }
            None => {
                let reporters = Reporters::new([reporter(&ban.origin, ban.reported)], 0);
                self.start_ban(ban, reporters)
            }
        };
        Merged::Changed(entry)
    }

    /// A network banned afresh: a new entry, which carries on the network's history of
    /// bans while `recidive-window` is set.
    fn start_ban(&mut self, ban: Ban, reporters: Reporters) -> Entry {
        let mut history = match self.entries.remove(&ban.ip) {
            Some(past) if self.recidive.is_some() => past.history,
            _ => History::default(),
        };
        if self.recidive.is_some() {
            history.add(&ban.origin, ban.reported);
        }
        let entry = Entry {
            ban,
            reporters,
            history,
        };
        self.entries.insert(entry.ban.ip, entry.clone());
        entry
    }

    /// Notes a report from `name` at `at` of the active ban of `ip`, which changes nothing
    /// else. Returns the entry when that changed its reporters, to journal.
    pub fn note_reporter(&mut self, ip: &Cidr, name: &Name, at: u64) -> Option<Entry> {
        let name = self.intern(name);
        let entry = self.entries.get_mut(ip)?;
        entry.reporters.note(&name, at).then(|| entry.clone())
    }

    /// The ban of `ip`, if it is in force.
    pub fn active_ban(&self, ip: &Cidr, now: u64) -> Option<&Entry> {
        self.entries.get(ip).filter(|e| e.ban.active_at(now))
    }

    /// The history of the bans of `ip`, in force or past.
    pub fn history(&self, ip: &Cidr) -> Option<&History> {
        self.entries.get(ip).map(|e| &e.history)
    }

    /// Sets `recidive-window`, in seconds: None forgets every history at the next purge.
    pub fn set_recidive(&mut self, window: Option<u64>) {
        self.recidive = window;
    }

    /// Takes a dated unban, from `banshare unban` here or from a peer: it lifts the ban of
    /// its network if that was reported at or before it, unless, for a peer's unban,
    /// `renewal` hosts (the group's `min-reporters`) reported it again here after it. It
    /// is kept to lift stale copies, for as long as a ban it lifts could last, or
    /// LIFT_WITHOUT_BAN when there is none here. An unban that cannot be true
    /// (`Lift::implausible`) changes nothing.
    pub fn lift(&mut self, lift: Lift, renewal: Option<usize>, now: u64) -> Lifted {
        if lift.implausible(now).is_some() {
            return Lifted::Unchanged;
        }
        let entry = self.entries.get(&lift.ip).filter(|e| e.ban.active_at(now));
        let kept = match entry {
            Some(e) if lift.covers(&e.ban) => Lift {
                until: later_end(lift.until, e.ban.expires),
                ..lift
            },
            Some(_) => lift,
            None if self.lifts.len() >= MAX_LIFTS_WITHOUT_BAN => return Lifted::Unchanged,
            None => lift.without_ban(now),
        };
        let new = match self.lifts.get(&lift.ip) {
            Some(known) if known.at >= lift.at => false,
            Some(known) => {
                let until = later_end(known.until, kept.until);
                self.lifts.insert(lift.ip, Lift { until, ..kept });
                true
            }
            None => {
                self.lifts.insert(lift.ip, kept);
                true
            }
        };
        let lift = self.lifts[&lift.ip];
        let Some(entry) = self
            .entries
            .get_mut(&lift.ip)
            .filter(|e| e.ban.active_at(now))
        else {
            return if new {
                Lifted::Noted
            } else {
                Lifted::Unchanged
            };
        };
        if !lift.covers(&entry.ban) {
            // Even when the unban is old news: its sender may lack this ban (docs/ha.md).
            let entry = entry.clone();
            return Lifted::Outlived { entry, new };
        }
        match renewal.and_then(|k| renewed(entry, &lift, k)) {
            Some(renewed) => {
                *entry = renewed.clone();
                Lifted::Renewed(renewed)
            }
            None => Lifted::Removed(self.entries.remove(&lift.ip).expect("just seen")),
        }
    }

    /// The unban that `banshare unban` on this server makes of the active ban of `ip`: dated
    /// now, or at the ban's report time if a peer's clock put that in our future, so that
    /// it always lifts the ban the admin sees.
    pub fn unban_now(&self, ip: &Cidr, now: u64) -> Option<Lift> {
        let entry = self.entries.get(ip).filter(|e| e.ban.active_at(now))?;
        Some(Lift {
            ip: *ip,
            at: now.max(entry.ban.reported),
            until: entry.ban.expires,
        })
    }

    /// A table holding bans and unbans read back from disk, with `recidive-window` set to
    /// `recidive` seconds.
    pub fn from_entries(entries: Vec<Entry>, lifts: Vec<Lift>, recidive: Option<u64>) -> BanTable {
        let mut table = BanTable {
            recidive,
            ..BanTable::default()
        };
        for mut entry in entries {
            entry.ban.prog = table.intern(&entry.ban.prog);
            entry.ban.jail = table.intern(&entry.ban.jail);
            entry.ban.origin = table.intern(&entry.ban.origin);
            for reporter in &mut entry.reporters.named {
                reporter.name = table.intern(&reporter.name);
            }
            for episode in &mut entry.history.0 {
                episode.name = table.intern(&episode.name);
            }
            table.entries.insert(entry.ban.ip, entry);
        }
        table.lifts = lifts.into_iter().map(|l| (l.ip, l)).collect();
        table
    }

    /// The table's shared copy of `name`.
    fn intern(&mut self, name: &Name) -> Name {
        if let Some(shared) = self.names.get(name) {
            return shared.clone();
        }
        self.names.insert(name.clone());
        name.clone()
    }

    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    /// The dated unban kept of `ip`, if any.
    pub fn lift_of(&self, ip: &Cidr) -> Option<Lift> {
        self.lifts.get(ip).copied()
    }

    pub fn lifts(&self) -> impl Iterator<Item = &Lift> {
        self.lifts.values()
    }

    /// The bans still in force at `now`: expired ones stay until the next purge.
    pub fn active(&self, now: u64) -> impl Iterator<Item = &Entry> {
        self.entries.values().filter(move |e| e.ban.active_at(now))
    }

    /// Up to `limit` active bans and unbans after `after` in network order, and where the
    /// next page starts (None when this is the last page). A ban and an unban of the same
    /// network go on the same page.
    pub fn page(&self, after: Option<&Cidr>, limit: usize, now: u64) -> Page {
        let start = || after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut bans = self
            .entries
            .range((start(), Bound::Unbounded))
            .filter(|(_, e)| e.ban.active_at(now))
            .peekable();
        let mut lifts = self
            .lifts
            .range((start(), Bound::Unbounded))
            .filter(|(_, l)| l.active_at(now))
            .peekable();
        let mut page = Page::default();
        let mut lines = 0;
        while lines < limit {
            let Some(ip) = first_key(&mut bans, &mut lifts) else {
                break;
            };
            if let Some((_, e)) = bans.next_if(|(k, _)| **k == ip) {
                page.bans.push(e.ban.clone());
                lines += 1;
            }
            if let Some((_, l)) = lifts.next_if(|(k, _)| **k == ip) {
                page.lifts.push(*l);
                lines += 1;
            }
            page.next = Some(ip);
        }
        if first_key(&mut bans, &mut lifts).is_none() {
            page.next = None;
        }
        page
    }

    /// Forgets bans that have expired, but for the history that `recidive-window` still
    /// counts, and unbans that no longer matter.
    pub fn purge(&mut self, now: u64) -> usize {
        let before = self.entries.len();
        let from = self.recidive.map(|window| now.saturating_sub(window));
        self.entries.retain(|_, e| {
            if let Some(from) = from {
                e.history.0.retain(|episode| episode.at >= from);
            }
            e.ban.active_at(now) || (from.is_some() && !e.history.is_empty())
        });
        self.lifts.retain(|_, l| l.active_at(now));
        // Names that no ban uses any more.
        self.names.retain(Name::is_shared);
        before - self.entries.len()
    }

    /// The widest active ban of a network that strictly holds `ip`, looking no wider than
    /// `floor` bits, the widest a ban can be.
    pub fn covering(&self, ip: &Cidr, floor: u8, now: u64) -> Option<&Entry> {
        (floor..ip.prefix())
            .map(|prefix| ip.widened(prefix))
            .find_map(|net| self.entries.get(&net).filter(|e| e.ban.active_at(now)))
    }

    /// The active bans of networks strictly inside `net`.
    pub fn inside(&self, net: &Cidr, now: u64) -> impl Iterator<Item = &Entry> {
        let (first, last) = net.inside_bounds();
        self.entries
            .range((Bound::Excluded(first), Bound::Included(last)))
            .map(|(_, e)| e)
            .filter(move |e| e.ban.active_at(now))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn contains(&self, ip: &Cidr) -> bool {
        self.entries.contains_key(ip)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// One snapshot page: bans and unbans, and where the next page starts.
#[derive(Debug, Default)]
pub struct Page {
    pub bans: Vec<Ban>,
    pub lifts: Vec<Lift>,
    pub next: Option<Cidr>,
}

/// The lower of the two networks next in line.
fn first_key<'a, A, B>(
    a: &mut Peekable<impl Iterator<Item = (&'a Cidr, A)>>,
    b: &mut Peekable<impl Iterator<Item = (&'a Cidr, B)>>,
) -> Option<Cidr> {
    match (a.peek().map(|(k, _)| **k), b.peek().map(|(k, _)| **k)) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    }
}

/// The ban of `entry` as `confirmations` hosts' reports after `lift` renew it, if that many
/// reported it again here after the unban (docs/ha.md: "a report made after the unban bans
/// again, on any server"): dated by the latest of them (the k-th latest, with `k` needed to
/// ban), its reporters those that reported after the unban, and ending when it ended,
/// which is all their reports were promised (they were duplicates of it).
fn renewed(entry: &Entry, lift: &Lift, confirmations: usize) -> Option<Entry> {
    let deciding = entry.reporters.kth_latest(confirmations)?;
    if deciding.last <= lift.at {
        return None;
    }
    let reported = deciding.last;
    let ban = Ban {
        origin: deciding.name.clone(),
        reported,
        bantime: entry.ban.expires.map(|e| e.saturating_sub(reported).max(1)),
        ..entry.ban.clone()
    };
    let after = entry.reporters.iter().filter(|r| r.last > lift.at).cloned();
    Some(Entry {
        ban,
        reporters: Reporters::new(after, 0),
        history: entry.history.clone(),
    })
}

/// The later of two ends, None (never) being the latest.
fn later_end(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    a.zip(b).map(|(a, b)| a.max(b))
}

fn reporter(name: &Name, at: u64) -> Reporter {
    Reporter {
        name: name.clone(),
        first: at,
        last: at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Durability;
    use crate::store::{checksummed, Store, SERVER_JOURNAL};
    use crate::wire::protocol::{LIFT_WITHOUT_BAN, MAX_AHEAD, MAX_BANTIME};

    fn entry(ip: &str, bantime: Option<u64>, expires: Option<u64>) -> Entry {
        let reporter = |name: &str, first, last| Reporter {
            name: Name::parse("name", name).unwrap(),
            first,
            last,
        };
        Entry {
            ban: Ban::sample(ip, bantime, expires),
            reporters: Reporters::new([reporter("web1", 10, 20), reporter("db1", 15, 15)], 3),
            history: History::default(),
        }
    }

    /// A journal of lines with correct checksums around `bodies`, opened.
    fn journal_with(bodies: &[&str]) -> crate::store::Recovery<Entry> {
        let dir = tempfile::tempdir().unwrap();
        let text: String = bodies
            .iter()
            .map(|b| checksummed((*b).to_string()))
            .collect();
        std::fs::write(dir.path().join(SERVER_JOURNAL), text).unwrap();
        let (_, recovery) =
            Store::<Entry>::open(dir.path(), SERVER_JOURNAL, Durability::Write, 0).unwrap();
        recovery
    }

    #[test]
    fn journal_records_the_wire_would_refuse_are_not_loaded() {
        let too_long = format!("ban 203.0.113.1 f s web1 {} 0 0 -", MAX_BANTIME + 1);
        let recovery = journal_with(&[
            &too_long,
            "ban 203.0.113.2 -rf s web1 60 100 0 -",
            "ban 203.0.113.3 f s web1 +60 100 0 -",
            "ban 203.0.113.4/24 f s web1 60 100 0 -",
            "ban 203.0.113.5 f s web1 60 100 0 web1/1/+2",
            "ban 203.0.113.6 f s web1 60 100 0 web1/1/2",
        ]);
        assert_eq!(recovery.damaged.len(), 5, "{:?}", recovery.damaged);
        assert!(
            recovery.damaged[0].contains("bantime"),
            "{:?}",
            recovery.damaged
        );
        let ips: Vec<String> = recovery
            .entries
            .iter()
            .map(|e| e.ban.ip.to_string())
            .collect();
        assert_eq!(ips, ["203.0.113.6"]);
    }

    #[test]
    fn journal_records_from_before_the_reporter_list_are_read() {
        let recovery = journal_with(&["ban 203.0.113.7 fail2ban sshd web1 600 700 100 200 100"]);
        assert!(recovery.damaged.is_empty(), "{:?}", recovery.damaged);
        let entry = &recovery.entries[0];
        assert_eq!((entry.first_report(), entry.last_report()), (100, 200));
        assert_eq!(entry.reporters.iter().next().unwrap().name.as_str(), "web1");
    }

    #[test]
    fn journal_records_round_trip_with_every_reporter() {
        for e in [
            entry("203.0.113.7", Some(600), Some(700)),
            entry("2001:db8::/64", None, None),
        ] {
            let line = e.encode();
            let fields: Vec<&str> = line.split(' ').collect();
            let back = Entry::decode(&fields).unwrap();
            assert_eq!(back.encode(), line);
            assert_eq!(back.reporters, e.reporters);
            assert_eq!(back.reporters.more, 3);
        }
    }

    #[test]
    fn journal_records_keep_the_history_of_bans() {
        let mut e = entry("203.0.113.7", Some(600), Some(700));
        for (name, at) in [("web1", 100), ("db1", 300)] {
            e.history.add(&Name::parse("name", name).unwrap(), at);
        }
        let line = e.encode();
        assert!(line.ends_with(" web1/100,db1/300"), "{line}");
        let fields: Vec<&str> = line.split(' ').collect();
        assert_eq!(Entry::decode(&fields).unwrap().history, e.history);
        // The ban ended, but its history is kept in the journal; not so without one.
        let dir = tempfile::tempdir().unwrap();
        let plain = entry("203.0.113.8", Some(600), Some(700)).encode();
        let text = checksummed(format!("ban {line}")) + &checksummed(format!("ban {plain}"));
        std::fs::write(dir.path().join(SERVER_JOURNAL), text).unwrap();
        let (_, recovery) =
            Store::<Entry>::open(dir.path(), SERVER_JOURNAL, Durability::Write, 1000).unwrap();
        let kept: Vec<String> = recovery
            .entries
            .iter()
            .map(|e| e.ban.ip.to_string())
            .collect();
        assert_eq!(kept, ["203.0.113.7"]);
    }

    const WINDOW: Duration = Duration::from_secs(300);
    const DAY: Duration = Duration::from_secs(86400);

    fn report(ip: &str, bantime: &str) -> Report {
        Report::parse("fail2ban", "sshd", ip, bantime).unwrap()
    }

    fn origin() -> Name {
        host("web1")
    }

    fn host(name: &str) -> Name {
        Name::parse("origin", name).unwrap()
    }

    fn is_new(r: Recorded) -> bool {
        matches!(r, Recorded::New(_))
    }

    fn ban_of(t: &BanTable, ip: &str) -> Ban {
        let ip: Cidr = ip.parse().unwrap();
        t.entries().find(|e| e.ban.ip == ip).unwrap().ban.clone()
    }

    /// Records a report of `ip` from `from` at `now`, with the test's default bantime and window.
    fn record(t: &mut BanTable, ip: &str, bantime: &str, from: &str, now: u64) -> Recorded {
        t.record(&report(ip, bantime), &host(from), DAY, WINDOW, now)
    }

    #[test]
    fn no_report_makes_a_ban_shorter() {
        let mut t = BanTable::default();
        assert!(is_new(record(&mut t, "203.0.113.7", "-1", "db1", 1000)));
        // Long after the window, another host asks for one second: nothing changes.
        assert!(!is_new(record(&mut t, "203.0.113.7", "1", "mal1", 9000)));
        assert_eq!(ban_of(&t, "203.0.113.7").expires, None);
        assert_eq!(ban_of(&t, "203.0.113.7").origin, host("db1"));

        assert!(is_new(record(&mut t, "203.0.113.8", "", "db1", 1000)));
        assert!(!is_new(record(&mut t, "203.0.113.8", "600", "web2", 2000)));
        assert_eq!(ban_of(&t, "203.0.113.8").expires, Some(1000 + 86400));
        // A later end wins, and says who asked for it.
        assert!(is_new(record(&mut t, "203.0.113.8", "", "web2", 2000)));
        let ban = ban_of(&t, "203.0.113.8");
        assert_eq!(
            (ban.expires, ban.origin),
            (Some(2000 + 86400), host("web2"))
        );
    }

    #[test]
    fn every_reporter_is_kept_up_to_a_bound() {
        let mut t = BanTable::default();
        let r = report("203.0.113.7", "");
        assert!(is_new(t.record(&r, &host("web1"), DAY, WINDOW, 1000)));
        // A new reporter is news for the journal, and so is a later report of a known one
        // (it may keep the ban in force after an unban); the same report again is not.
        assert!(matches!(
            t.record(&r, &host("web2"), DAY, WINDOW, 1010),
            Recorded::Duplicate(Some(_))
        ));
        assert!(matches!(
            t.record(&r, &host("web1"), DAY, WINDOW, 1020),
            Recorded::Duplicate(Some(_))
        ));
        assert!(matches!(
            t.record(&r, &host("web1"), DAY, WINDOW, 1020),
            Recorded::Duplicate(None)
        ));
        let entry = t.entries().next().unwrap();
        let seen: Vec<(&str, u64, u64)> = entry
            .reporters
            .iter()
            .map(|r| (r.name.as_str(), r.first, r.last))
            .collect();
        assert_eq!(seen, [("web1", 1000, 1020), ("web2", 1010, 1010)]);
        assert_eq!((entry.first_report(), entry.last_report()), (1000, 1020));
        for i in 3..=20 {
            t.record(&r, &host(&format!("web{i}")), DAY, WINDOW, 1030);
        }
        let entry = t.entries().next().unwrap();
        assert_eq!(
            (entry.reporters.iter().count(), entry.reporters.more),
            (MAX_REPORTERS, 4)
        );
        // A ban that ended starts a new list.
        assert!(is_new(t.record(
            &r,
            &host("web9"),
            DAY,
            WINDOW,
            1000 + 86400
        )));
        let names: Vec<&str> = t
            .entries()
            .next()
            .unwrap()
            .reporters
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(names, ["web9"]);
    }

    #[test]
    fn window_counts_from_last_publish_not_last_report() {
        let mut t = BanTable::default();
        let r = report("203.0.113.7", "");
        assert!(is_new(t.record(&r, &origin(), DAY, WINDOW, 1000)));
        // Reported every 4 minutes: the 2014 server never published it again.
        assert!(!is_new(t.record(&r, &origin(), DAY, WINDOW, 1240)));
        assert!(!is_new(t.record(&r, &origin(), DAY, WINDOW, 1299)));
        assert!(is_new(t.record(&r, &origin(), DAY, WINDOW, 1300)));
        assert!(!is_new(t.record(&r, &origin(), DAY, WINDOW, 1540)));
    }

    #[test]
    fn a_longer_bantime_is_published_inside_the_window() {
        let mut t = BanTable::default();
        assert!(is_new(t.record(
            &report("203.0.113.7", "600"),
            &origin(),
            DAY,
            WINDOW,
            1000
        )));
        assert!(!is_new(t.record(
            &report("203.0.113.7", "300"),
            &origin(),
            DAY,
            WINDOW,
            1010
        )));
        assert!(is_new(t.record(
            &report("203.0.113.7", "1200"),
            &origin(),
            DAY,
            WINDOW,
            1020
        )));
        assert!(is_new(t.record(
            &report("203.0.113.7", "-1"),
            &origin(),
            DAY,
            WINDOW,
            1030
        )));
        assert!(!is_new(t.record(
            &report("203.0.113.7", "-1"),
            &origin(),
            DAY,
            WINDOW,
            1040
        )));
    }

    #[test]
    fn pages_cover_every_active_ban_once() {
        let mut t = BanTable::default();
        for i in 0..25 {
            t.record(
                &report(&format!("203.0.113.{i}"), "100"),
                &origin(),
                DAY,
                WINDOW,
                1000,
            );
        }
        t.record(&report("2001:db8::1", "10"), &origin(), DAY, WINDOW, 1000);
        let (mut seen, mut after) = (Vec::new(), None);
        loop {
            let page = t.page(after.as_ref(), 10, 1050);
            seen.extend(page.bans.into_iter().map(|b| b.ip.to_string()));
            match page.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        let mut expected: Vec<String> = (0..25).map(|i| format!("203.0.113.{i}")).collect();
        expected.sort();
        seen.sort();
        assert_eq!(seen, expected, "the expired IPv6 ban is left out");
    }

    #[test]
    fn expired_bans_are_published_again_and_purged() {
        let mut t = BanTable::default();
        let r = report("203.0.113.7", "60");
        let Recorded::New(Entry { ban, .. }) = t.record(&r, &origin(), DAY, WINDOW, 1000) else {
            panic!()
        };
        assert_eq!((ban.bantime, ban.expires), (Some(60), Some(1060)));
        assert!(is_new(t.record(&r, &origin(), DAY, WINDOW, 1061)));
        assert_eq!(t.purge(1200), 1);
        assert!(t.is_empty());
    }

    #[test]
    fn bantime_defaults_and_permanent() {
        let mut t = BanTable::default();
        let Recorded::New(Entry { ban, .. }) =
            t.record(&report("203.0.113.7", ""), &origin(), DAY, WINDOW, 5)
        else {
            panic!()
        };
        assert_eq!(ban.expires, Some(5 + 86400));
        let Recorded::New(Entry { ban, .. }) =
            t.record(&report("203.0.113.8", "-1"), &origin(), DAY, WINDOW, 5)
        else {
            panic!()
        };
        assert_eq!((ban.bantime, ban.expires), (None, None));
        assert_eq!(t.purge(u64::MAX), 1);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn bans_share_their_names_until_none_uses_them() {
        let mut t = BanTable::default();
        for ip in ["203.0.113.7", "203.0.113.8"] {
            t.record(&report(ip, "60"), &origin(), DAY, WINDOW, 1000);
        }
        let jails: Vec<*const u8> = t.entries().map(|e| e.ban.jail.as_str().as_ptr()).collect();
        assert_eq!(jails[0], jails[1], "one copy of \"sshd\"");
        assert_eq!(t.names.len(), 3);
        t.purge(2000);
        assert!(t.names.is_empty());
    }

    #[test]
    fn a_peer_cannot_date_a_ban_or_an_unban_far_ahead() {
        let mut t = BanTable::default();
        let now = 1000;
        let ahead = |reported| Ban {
            reported,
            ..Ban::sample("203.0.113.1", None, None)
        };
        assert!(t
            .merge(&ahead(now + MAX_AHEAD + 1), now)
            .changed()
            .is_none());
        assert!(
            t.merge(&ahead(now + 2), now).changed().is_some(),
            "a fast clock is fine"
        );
        let lift = |at| Lift {
            ip: "203.0.113.1".parse().unwrap(),
            at,
            until: None,
        };
        assert!(matches!(
            t.lift(lift(now + 86400), Some(1), now),
            Lifted::Unchanged
        ));
        assert_eq!(t.len(), 1, "the far-future unban lifted nothing");
        assert!(matches!(
            t.lift(lift(now + 5), Some(1), now),
            Lifted::Removed(_)
        ));
    }

    #[test]
    fn a_report_made_here_after_an_unban_heard_later_keeps_the_ban() {
        let mut t = BanTable::default();
        let ip = "203.0.113.7";
        assert!(is_new(record(&mut t, ip, "600", "web1", 1000)));
        // web2 reports it at 1100, unaware of a peer's unban dated 1050: a duplicate here.
        assert!(matches!(
            record(&mut t, ip, "600", "web2", 1100),
            Recorded::Duplicate(Some(_))
        ));
        let lift = Lift {
            ip: ip.parse().unwrap(),
            at: 1050,
            until: Some(1600),
        };
        // Two hosts needed: web2 alone does not keep it.
        let mut needs_two = BanTable::from_entries(t.entries().cloned().collect(), vec![], None);
        assert!(matches!(
            needs_two.lift(lift, Some(2), 1200),
            Lifted::Removed(_)
        ));
        let Lifted::Renewed(entry) = t.lift(lift, Some(1), 1200) else {
            panic!("web2's report was made after the unban");
        };
        let ban = &entry.ban;
        assert_eq!((ban.origin.as_str(), ban.reported), ("web2", 1100));
        // It ends when it ended, and says so: expires = reported + bantime.
        assert_eq!((ban.expires, ban.bantime), (Some(1600), Some(500)));
        assert!(ban.implausible(1200).is_none());
        let names: Vec<&str> = entry.reporters.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["web2"]);
        // This server's own unban lifts what it names.
        let own = t.unban_now(&ip.parse().unwrap(), 1200).unwrap();
        assert!(matches!(t.lift(own, None, 1200), Lifted::Removed(_)));
    }

    #[test]
    fn a_ban_again_in_the_second_of_its_unban_ends_its_bantime_after_its_report() {
        let mut t = BanTable::default();
        let ip = "203.0.113.7";
        record(&mut t, ip, "600", "web1", 1000);
        let own = t.unban_now(&ip.parse().unwrap(), 1000).unwrap();
        t.lift(own, None, 1000);
        let Recorded::New(entry) = record(&mut t, ip, "600", "web1", 1000) else {
            panic!("banned again");
        };
        assert_eq!((entry.ban.reported, entry.ban.expires), (1001, Some(1601)));
    }

    #[test]
    fn unbans_of_networks_never_banned_here_are_kept_a_day_at_most() {
        let mut t = BanTable::default();
        let lift = |ip: &str, until| Lift {
            ip: ip.parse().unwrap(),
            at: 1000,
            until,
        };
        assert!(matches!(
            t.lift(lift("203.0.113.1", None), Some(1), 1000),
            Lifted::Noted
        ));
        assert_eq!(
            t.lift_of(&"203.0.113.1".parse().unwrap()).unwrap().until,
            Some(1000 + LIFT_WITHOUT_BAN)
        );
        // Kept as long as the ban it lifted here could have lasted.
        record(&mut t, "203.0.113.2", "-1", "web1", 900);
        assert!(matches!(
            t.lift(lift("203.0.113.2", Some(1500)), Some(1), 1000),
            Lifted::Removed(_)
        ));
        assert_eq!(
            t.lift_of(&"203.0.113.2".parse().unwrap()).unwrap().until,
            None
        );
        // An unban kept longer than any ban could last is not taken.
        let far = Some(1000 + MAX_BANTIME + 1);
        assert!(matches!(
            t.lift(lift("203.0.113.3", far), Some(1), 1000),
            Lifted::Unchanged
        ));
        assert_eq!(t.purge(1000 + LIFT_WITHOUT_BAN), 0);
        assert_eq!(t.lifts().count(), 1, "the day is over for 203.0.113.1");
    }

    #[test]
    fn a_peer_cannot_give_a_ban_an_end_its_bantime_does_not_explain() {
        let mut t = BanTable::default();
        let now = 1000;
        for (bantime, expires) in [
            (Some(600), Some(u64::MAX)),
            (Some(600), None),
            (None, Some(2000)),
        ] {
            let ban = Ban {
                reported: now,
                ..Ban::sample("203.0.113.1", bantime, expires)
            };
            assert!(t.merge(&ban, now).changed().is_none(), "{ban:?}");
        }
        let honest = Ban {
            reported: now,
            ..Ban::sample("203.0.113.1", Some(600), Some(now + 600))
        };
        assert!(t.merge(&honest, now).changed().is_some());
    }

    /// What one server tells the others when its table changed, as `server::core::merge` does.
    #[derive(Clone)]
    enum Said {
        Ban(Ban),
        Lift(Lift),
    }

    /// The table's state, to compare servers: each ban as published, and each unban.
    /// How long each server keeps an unban is its own (`BanTable::lift`): not compared.
    fn state(t: &BanTable, now: u64) -> Vec<String> {
        let bans = t.active(now).map(|e| ban_fields(&e.ban).join(" "));
        let lifts = t.lifts().map(|l| format!("unban {} {}", l.ip, l.at));
        bans.chain(lifts).collect()
    }

    /// A number below `n`, at random: xorshift, enough to shuffle, and the same every run.
    fn xorshift(mut seed: u64) -> impl FnMut(usize) -> usize {
        move |n| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        }
    }

    /// Servers that hear bans and unbans in any order, and tell each other what changed
    /// their tables, in any order, end with the same table: a little simulation of
    /// peering, over many random fleets.
    #[test]
    fn servers_converge_whatever_the_order() {
        let mut random = xorshift(0x2545_f491_4f6c_dd1d);
        let now = 1000;
        for _ in 0..2000 {
            let servers = 2 + random(2);
            let mut tables: Vec<BanTable> = (0..servers).map(|_| BanTable::default()).collect();
            // (to, what, first): first what reporters and admins said, to random servers.
            let mut queue: Vec<(usize, Said, bool)> = Vec::new();
            for _ in 0..1 + random(6) {
                let ip = ["203.0.113.1", "203.0.113.2"][random(2)];
                let at = now + random(20) as u64;
                let said = if random(3) == 0 {
                    Said::Lift(Lift {
                        ip: ip.parse().unwrap(),
                        at,
                        until: None,
                    })
                } else {
                    let bantime = [None, Some(100), Some(500)][random(3)];
                    let ban = Ban::sample(ip, bantime, bantime.map(|b| at + b));
                    Said::Ban(Ban {
                        reported: at,
                        origin: host(["web1", "web2"][random(2)]),
                        ..ban
                    })
                };
                queue.push((random(servers), said, true));
            }
            while !queue.is_empty() {
                let (to, said, first) = queue.swap_remove(random(queue.len()));
                let told = match said {
                    Said::Ban(ban) => tables[to]
                        .merge(&ban, now)
                        .changed()
                        .map(|e| Said::Ban(e.ban)),
                    // `banshare unban` publishes the unban it made; a peer's may renew.
                    Said::Lift(lift) => match tables[to].lift(lift, (!first).then_some(1), now) {
                        Lifted::Removed(_) => Some(Said::Lift(lift)),
                        Lifted::Outlived { .. } | Lifted::Renewed(_) if first => {
                            Some(Said::Lift(lift))
                        }
                        Lifted::Outlived { entry, .. } | Lifted::Renewed(entry) => {
                            Some(Said::Ban(entry.ban))
                        }
                        Lifted::Unchanged | Lifted::Noted => first.then_some(Said::Lift(lift)),
                    },
                };
                if let Some(told) = told {
                    for other in (0..servers).filter(|&o| o != to) {
                        let copy = match &told {
                            Said::Ban(b) => Said::Ban(b.clone()),
                            Said::Lift(l) => Said::Lift(*l),
                        };
                        queue.push((other, copy, false));
                    }
                }
            }
            let first = state(&tables[0], now);
            for table in &tables[1..] {
                assert_eq!(state(table, now), first);
            }
        }
    }

    /// What a server publishes after a peer told it `said`, by the rules of
    /// `server::core::merge`; None when its table did not change.
    fn hear(table: &mut BanTable, said: &Said, now: u64) -> Option<Said> {
        match said {
            Said::Ban(ban) => match table.merge(ban, now) {
                Merged::Changed(entry) => Some(Said::Ban(entry.ban)),
                Merged::Stale(lift) => Some(Said::Lift(lift)),
                Merged::Unchanged => None,
            },
            Said::Lift(lift) => match table.lift(*lift, Some(1), now) {
                Lifted::Removed(_) => Some(Said::Lift(*lift)),
                Lifted::Outlived { entry, .. } | Lifted::Renewed(entry) => {
                    Some(Said::Ban(entry.ban))
                }
                Lifted::Noted | Lifted::Unchanged => None,
            },
        }
    }

    /// Everything a server's snapshot pages hold, as a peer that catches up reads it.
    fn pages(table: &BanTable, now: u64) -> Vec<Said> {
        let lifts = table.lifts().map(|l| Said::Lift(*l));
        let bans = table.active(now).map(|e| Said::Ban(e.ban.clone()));
        lifts.chain(bans).collect()
    }

    /// A random connected graph of `n` servers: a random tree, and some links more.
    fn random_graph(n: usize, random: &mut impl FnMut(usize) -> usize) -> Vec<(usize, usize)> {
        let mut links: Vec<(usize, usize)> = (1..n).map(|i| (random(i), i)).collect();
        for _ in 0..random(n) {
            let (a, b) = (random(n), random(n));
            if a != b && !links.contains(&(a, b)) && !links.contains(&(b, a)) {
                links.push((a, b));
            }
        }
        links
    }

    /// Servers in any connected graph, not only a full mesh, end with the same bans, while
    /// links fail and servers restart: each server tells only its neighbours what changed
    /// its table, a link that fails loses what was on it, and a link that comes back, or
    /// a server that restarts, makes both ends read each other's snapshot (docs/ha.md).
    #[test]
    fn servers_converge_in_any_connected_graph() {
        let mut random = xorshift(0x9e37_79b9_7f4a_7c15);
        let now = 1000;
        let ips = ["203.0.113.1", "203.0.113.2", "203.0.113.3"];
        for _ in 0..3000 {
            let n = 2 + random(11);
            let links = random_graph(n, &mut random);
            let mut up = vec![true; links.len()];
            let mut tables: Vec<BanTable> = (0..n).map(|_| BanTable::default()).collect();
            // In flight: (link, to, what).
            let mut queue: Vec<(usize, usize, Said)> = Vec::new();
            let tell =
                |queue: &mut Vec<(usize, usize, Said)>, up: &[bool], from: usize, said: &Said| {
                    for (l, &(a, b)) in links.iter().enumerate() {
                        let to = if a == from {
                            b
                        } else if b == from {
                            a
                        } else {
                            continue;
                        };
                        if up[l] {
                            queue.push((l, to, said.clone()));
                        }
                    }
                };
            let catch_up =
                |queue: &mut Vec<(usize, usize, Said)>, tables: &[BanTable], l: usize| {
                    let (a, b) = links[l];
                    for (from, to) in [(a, b), (b, a)] {
                        for said in pages(&tables[from], now) {
                            queue.push((l, to, said));
                        }
                    }
                };
            let mut events = 2 + random(10);
            while events > 0 || !queue.is_empty() {
                match random(10) {
                    // A host reports to a random server, or an admin lifts a ban there.
                    0 | 1 if events > 0 => {
                        events -= 1;
                        let to = random(n);
                        let ip: Cidr = ips[random(ips.len())].parse().unwrap();
                        let at = now + random(20) as u64;
                        let said = match tables[to].unban_now(&ip, at) {
                            Some(lift) if random(3) == 0 => {
                                let _ = tables[to].lift(lift, None, now);
                                Some(Said::Lift(lift))
                            }
                            _ => {
                                let bantime = [None, Some(100), Some(500)][random(3)];
                                let ban = Ban::sample(ips[0], bantime, bantime.map(|b| at + b));
                                let ban = Ban {
                                    ip,
                                    reported: at,
                                    origin: host(["web1", "web2"][random(2)]),
                                    ..ban
                                };
                                let entry = tables[to].merge(&ban, now).changed();
                                entry.map(|e| Said::Ban(e.ban))
                            }
                        };
                        if let Some(said) = said {
                            tell(&mut queue, &up, to, &said);
                        }
                    }
                    // A link fails, and what was on it is lost.
                    2 if events > 0 => {
                        let l = random(links.len());
                        up[l] = false;
                        queue.retain(|(on, ..)| *on != l);
                    }
                    // A server restarts: what was on its way to it is lost; it and its
                    // neighbours read each other's table.
                    3 if events > 0 => {
                        let s = random(n);
                        queue.retain(|(_, to, _)| *to != s);
                        for (l, &(a, b)) in links.iter().enumerate() {
                            if up[l] && (a == s || b == s) {
                                catch_up(&mut queue, &tables, l);
                            }
                        }
                    }
                    // A failed link comes back: both ends read each other's table.
                    4 => {
                        if let Some(l) = (0..links.len()).find(|&l| !up[l]) {
                            up[l] = true;
                            catch_up(&mut queue, &tables, l);
                        }
                    }
                    _ if !queue.is_empty() => {
                        let (_, to, said) = queue.swap_remove(random(queue.len()));
                        if let Some(told) = hear(&mut tables[to], &said, now) {
                            tell(&mut queue, &up, to, &told);
                        }
                    }
                    _ => {}
                }
                // At the end every link is back.
                if events == 0 && queue.is_empty() {
                    if let Some(l) = (0..links.len()).find(|&l| !up[l]) {
                        up[l] = true;
                        catch_up(&mut queue, &tables, l);
                    }
                }
            }
            let bans = |t: &BanTable| -> Vec<String> {
                t.active(now)
                    .map(|e| ban_fields(&e.ban).join(" "))
                    .collect()
            };
            for (s, table) in tables.iter().enumerate().skip(1) {
                assert_eq!(
                    bans(table),
                    bans(&tables[0]),
                    "server {s} of {n}, links {links:?}: {:?} {:?}",
                    state(table, now),
                    state(&tables[0], now)
                );
            }
        }
    }
}
