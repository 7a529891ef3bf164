//! The socket side of a catch-up: asks for the snapshot pages that the follower wants
//! (`resync`), applies each page's bans, and after the last page drops what this host
//! applied but the server no longer holds.

use std::time::Instant;

use crate::client::apply::record::Action;
use crate::client::link::{request_socket, send_request};
use crate::client::Client;
use crate::wire::cidr::Cidr;
use crate::wire::follow::{Due, Next, Resync};
use crate::wire::protocol::{encode_snapshot_request, SnapshotPage, Verdict};
use crate::wire::transport;
use crate::wire::upstream::{reply_body, within_bounds, PAGE_FRAMES};

impl Client {
    /// Asks for the snapshot page the follower wants, if any.
    pub(super) fn drive_resync(&mut self) {
        match self.follower.due(Instant::now()) {
            None => {}
            Some(Due::Start) => {
                log::info!("resynchronising with {}", self.server_endpoint());
                self.request_page(None);
            }
            Some(Due::Again(after)) => {
                log::warn!("no snapshot page from the server yet; asking again");
                match request_socket(&self.ctx, &self.config) {
                    // A new socket, so that a late answer to the old request is never read.
                    Ok(socket) => self.requester = socket,
                    Err(e) => log::error!("{e}"),
                }
                self.request_page(after.as_ref());
            }
        }
    }

    fn request_page(&mut self, after: Option<&Cidr>) {
        if let Err(e) = send_request(&self.requester, encode_snapshot_request(after)) {
            log::warn!("cannot ask for a snapshot page: {e}");
        }
        self.follower.asked(after.copied(), Instant::now());
    }

    pub(super) fn read_pages(&mut self) {
        while let Ok(received) =
            transport::recv_bounded(&self.requester, zmq::DONTWAIT, PAGE_FRAMES)
        {
            let body = within_bounds(&received).and_then(reply_body);
            match body.clone().and_then(SnapshotPage::decode) {
                Ok(page) => self.take_page(page),
                Err(e) => match body.and_then(Verdict::decode) {
                    // Such as a key over its allowance of pages: asked again in 5 s.
                    Ok(verdict) => log::warn!("the server answered a snapshot request: {verdict}"),
                    Err(_) => self.warn_about_server(&format!("ignored a snapshot page: {e}")),
                },
            }
        }
    }

    /// Applies a page of the catch-up under way, then asks for the next or finishes.
    fn take_page(&mut self, page: SnapshotPage) {
        let Some(next) = self.follower.take_page(&page) else {
            return;
        };
        for bad in &page.unreadable {
            let line = format!(
                "skipped a ban in a snapshot page from the server: {}",
                bad.reason
            );
            self.warn_about_server(&line);
        }
        for ban in &page.bans {
            self.act_on(ban, Action::Ban);
        }
        for lift in &page.lifts {
            if let Err(line) = self.enforcer.lift_applied(&self.config, lift) {
                self.warn_about_server(&line);
            }
        }
        match next {
            Next::Page(after) => self.request_page(Some(&after)),
            Next::Done(resync) => self.finish_resync(resync),
        }
    }

    fn finish_resync(&mut self, resync: Resync) {
        let mut refused = Vec::new();
        let (expired, lifted) =
            self.enforcer
                .drop_stale(&self.config, &resync.active, &resync.fresh, |line| {
                    refused.push(line);
                });
        for line in refused {
            self.warn_about_server(&line);
        }
        log::info!(
            "resynchronised: {} active bans on the server in {} pages ({} ms); {expired} expired and {lifted} lifted here",
            resync.active.len(),
            resync.pages,
            resync.started.elapsed().as_millis()
        );
    }
}
