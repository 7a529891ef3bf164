//! What subscribers send up the publish socket: a new subscriber gets a heartbeat soon; a
//! key that sends anything but the protocol's subscriptions is cut off, and every
//! connection closed, which ends its own.

use crate::exit::Failure;
use crate::logging::printable;
use crate::server::publisher;
use crate::server::reports::peer;
use crate::server::Server;

impl Server {
    pub(super) fn handle_subscriptions(&mut self) -> Result<(), Failure> {
        let seen = self.publisher.read_subscriptions();
        if seen.joined {
            self.publisher.heartbeat_soon();
        }
        for (received, group) in &seen.unknown {
            if let Some(peer) = peer(&self.core.auth, received, "?") {
                log::warn!(
                    "{peer} subscribed to group {group}, which this server does not have; \
                     it receives nothing of it"
                );
            }
        }
        if seen.broken.is_empty() {
            return Ok(());
        }
        for received in seen.broken {
            let Some(peer) = peer(&self.core.auth, &received, "?") else {
                continue;
            };
            let sent = printable(&String::from_utf8_lossy(&received.frames[0]));
            let why = format!(
                "it sent \"{sent}\" to the publish socket, where only the subscriptions \
                 BANSHARE1 and BANSHARE1/GROUP/ belong (at most {} groups this server does \
                 not have)",
                publisher::MAX_UNKNOWN_GROUPS
            );
            self.core.cut_off(&peer, &why);
        }
        // Whoever it was, its connection is closed with the others.
        self.close_all_connections()
    }
}
