//! Applying a catch-up: each snapshot page's bans and dated unbans, and after the last
//! page, what this host applied but the server no longer holds. `sockets::upstream` asks for
//! the pages that `wire::follow` wants.

use crate::client::apply::record::Action;
use crate::client::Client;
use crate::wire::follow::{Next, Resync};
use crate::wire::protocol::SnapshotPage;

impl Client {
    /// Applies a page from server `i`'s catch-up under way, then asks for the next or
    /// finishes.
    pub(super) fn take_page(&mut self, i: usize, page: SnapshotPage) {
        let Some(s) = self.servers[i].stream_for(&page.topic) else {
            let line = format!(
                "ignored a snapshot page of {} from {}, which this host does not follow",
                page.topic, self.servers[i].target.name
            );
            return self.warn_about_server(&line);
        };
        let Some(next) = self.servers[i].streams[s].follower.take_page(&page) else {
            return;
        };
        for bad in &page.unreadable {
            let line = format!(
                "skipped a ban in a snapshot page from {}: {}",
                self.servers[i].target.name, bad.reason
            );
            self.warn_about_server(&line);
        }
        for ban in &page.bans {
            self.act_on(&page.topic, ban, Action::Ban);
        }
        // A dry run lifts nothing: it applied nothing.
        let lifts = if page.topic.dry_run {
            &[][..]
        } else {
            &page.lifts[..]
        };
        for lift in lifts {
            if let Err(line) = self.enforcer.lift_applied(&self.config, lift) {
                self.warn_about_server(&line);
            }
        }
        self.next_page(i, s, next);
    }

    fn next_page(&mut self, i: usize, s: usize, next: Next) {
        match next {
            Next::Page(after) => self.servers[i].request_page(s, Some(&after)),
            Next::Done(resync) => {
                self.servers[i].streams[s].synced = true;
                self.resyncs += 1;
                if !self.servers[i].streams[s].topic.dry_run {
                    self.finish_resync(i, resync);
                }
            }
        }
    }

    /// After the last page. With one server, what it no longer holds was lifted or
    /// expired. With several, a network missing from one server's table may just not have
    /// reached it yet: unbans come dated, in UNBAN messages and in the pages, and only
    /// expired bans are forgotten here.
    fn finish_resync(&mut self, i: usize, resync: Resync) {
        let mut refused = Vec::new();
        // Several groups are several streams, like several servers.
        let enforcing: usize = self
            .servers
            .iter()
            .map(|s| s.streams.iter().filter(|s| !s.topic.dry_run).count())
            .sum();
        let lift_absent = enforcing == 1;
        let (expired, lifted) = self.enforcer.drop_stale(
            &self.config,
            &resync.active,
            &resync.fresh,
            lift_absent,
            |line| refused.push(line),
        );
        for line in refused {
            self.warn_about_server(&line);
        }
        log::info!(
            "resynchronised: {} active bans on the server in {} pages ({} ms); {expired} expired and {lifted} lifted here ({})",
            resync.active.len(),
            resync.pages,
            resync.started.elapsed().as_millis(),
            self.servers[i].target.name,
        );
    }
}
