//! One group's bans (server.toml's `[[groups]]`; without groups, the one group of the whole
//! fleet): its table and waiting reports (`intake::Book`), the topic it is published under
//! (`wire::topic`) and its policy. Its journals are apart (`journals`, which opens both): a
//! ledger is what the core decides on, and knows no disk. Groups are apart in everything but the keys'
//! allowances: a network banned in one is not banned in another.

use crate::clock::unix_now;
use crate::config::groups::{self, GroupConfig};
use crate::config::ServerConfig;
use crate::server::intake::Book;
use crate::server::policy::confirm::{Pending, PendingSet, Waiting};
use crate::server::table::{BanTable, Entry};
use crate::store::Recovery;
use crate::wire::cidr::Cidr;
use crate::wire::keys::PublicKey;
use crate::wire::topic::{Group, Topic};

pub struct Ledger {
    pub group: GroupConfig,
    pub topic: Topic,
    /// The server's configuration, with this group's `min-reporters` and `confirm-window`.
    pub config: ServerConfig,
    pub book: Book,
}

/// The groups server.toml asks for, and whether it asks for any: without, the one group of
/// the whole fleet.
pub fn groups_of(config: &ServerConfig) -> (Vec<GroupConfig>, bool) {
    let resolved = groups::resolve(&config.groups);
    match resolved.is_empty() {
        true => (vec![GroupConfig::default_group()], false),
        false => (resolved, true),
    }
}

/// The groups of a server that has them.
pub fn groups(ledgers: &[Ledger]) -> Option<Vec<Group>> {
    ledgers.iter().map(|l| l.topic.group.clone()).collect()
}

/// The ledger a report of `prog` and `jail` from the key `host` goes to: the first group
/// whose rules match it, or the default group.
pub fn route(ledgers: &[Ledger], prog: &str, jail: &str, host: &str) -> usize {
    ledgers
        .iter()
        .skip(1)
        .position(|l| l.group.matches(prog, jail, host))
        .map_or(0, |i| i + 1)
}

/// Group `g`'s ledger, told how many bans the other groups hold, which its `max-bans`
/// counts too.
pub fn counted(ledgers: &mut [Ledger], g: usize) -> &mut Ledger {
    let total: usize = ledgers.iter().map(|l| l.book.table.len()).sum();
    let ledger = &mut ledgers[g];
    ledger.book.elsewhere = total - ledger.book.table.len();
    ledger
}

impl Ledger {
    /// Group `group`'s ledger (`grouped`: the server has groups), with the bans and
    /// waiting reports its journals held.
    pub fn new(
        config: &ServerConfig,
        group: GroupConfig,
        grouped: bool,
        bans: Recovery<Entry>,
        waiting: Recovery<PendingSet>,
    ) -> Ledger {
        let label = |what| label(&group, grouped, what);
        let recidive = config.recidive_window.map(|w| w.0.as_secs());
        let mut table = BanTable::from_entries(bans.entries, bans.lifts, recidive);
        // What the journal kept for a longer recidive-window than this one.
        let now = unix_now();
        table.purge(now);
        let active = table.active(now).count();
        log::info!("{}: {active} active bans", label("ban table"));
        if !waiting.entries.is_empty() {
            let networks = waiting.entries.len();
            log::info!("{}: {networks} networks", label("waiting reports"));
        }
        let topic = match grouped {
            true => Topic::of(group.name.clone(), group.dry_run),
            false => Topic::ungrouped(),
        };
        Ledger {
            config: policy(config, &group),
            topic,
            group,
            book: Book {
                table,
                pending: Pending::from_sets(waiting.entries),
                elsewhere: 0,
            },
        }
    }

    /// Takes a reloaded configuration and this group's part of it.
    pub fn adopt(&mut self, config: &ServerConfig, group: GroupConfig) {
        self.config = policy(config, &group);
        if self.topic.group.is_some() {
            self.topic.dry_run = group.dry_run;
        }
        self.group = group;
        self.book
            .table
            .set_recidive(config.recidive_window.map(|w| w.0.as_secs()));
    }

    /// "group web: " for the log, or "" without groups.
    pub fn prefix(&self) -> String {
        match self.topic.group {
            Some(_) => format!("{}: ", self.topic.describe()),
            None => String::new(),
        }
    }

    /// At start: drops the waiting reports that may no longer wait, those of a key no
    /// longer authorized, and those forwarded by a server no longer among `peers` (or by
    /// a version that did not say which). Returns the networks that touched.
    pub fn drop_stale_waiting(
        &mut self,
        key_named: impl Fn(&str) -> Option<PublicKey>,
        peers: &[String],
    ) -> Vec<Cidr> {
        self.book.pending.fill_keys(key_named);
        let stale = |w: &Waiting| {
            let gone_peer = w
                .via
                .as_ref()
                .map_or(w.forwarded, |via| !peers.iter().any(|p| p == via.as_str()));
            w.key.is_none() || gone_peer
        };
        self.book.pending.drop_where(stale)
    }
}

/// What the log calls a group's table or journal: "ban table", or "ban table of group web".
pub fn label(group: &GroupConfig, grouped: bool, what: &str) -> String {
    match grouped {
        true => format!("{what} of group {}", group.name),
        false => what.to_string(),
    }
}

/// The server's configuration as one group applies it.
fn policy(config: &ServerConfig, group: &GroupConfig) -> ServerConfig {
    ServerConfig {
        min_reporters: group.min_reporters.unwrap_or(config.min_reporters),
        confirm_window: group.confirm_window.unwrap_or(config.confirm_window),
        ..config.clone()
    }
}
