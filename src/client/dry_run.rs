//! A server's dry-run group (`dry-run = true` in its `[[groups]]`): this host logs what it
//! would do with each ban and unban of that group, after the checks a real ban would pass,
//! and changes nothing. Each ban is logged once per end, so that catch-ups do not repeat
//! the lines; what is remembered is bounded, as a hostile server could send without end.

use std::collections::HashMap;

use crate::client::apply::record::Action;
use crate::client::apply::Enforcer;
use crate::clock::unix_now;
use crate::config::ClientConfig;
use crate::wire::cidr::Cidr;
use crate::wire::protocol::{bantime_text, Ban};
use crate::wire::topic::Topic;

/// Networks remembered as "would be banned"; beyond that the oldest lines may repeat.
const MAX_REMEMBERED: usize = 100_000;

#[derive(Default)]
pub struct DryRun {
    /// Each network this host would have banned, with the end it was logged with.
    would_ban: HashMap<Cidr, u64>,
}

impl DryRun {
    /// Logs what this host would do with `ban` from the dry-run group of `topic`.
    pub fn would(
        &mut self,
        config: &ClientConfig,
        topic: &Topic,
        ban: &Ban,
        action: Action,
        enforcer: &mut Enforcer,
    ) {
        let what = match &topic.group {
            Some(group) => format!("group {group}"),
            None => "a server without groups".into(),
        };
        let ip = ban.ip;
        match action {
            Action::Unban => {
                if self.would_ban.remove(&ip).is_some() {
                    log::info!("dry run ({what}): would unban {ip}");
                }
            }
            Action::Ban => {
                if let Err(reason) = enforcer.check(config, ban) {
                    log::info!("dry run ({what}): would not ban {ip}: {reason}");
                    return;
                }
                if !ban.active_at(unix_now()) {
                    return;
                }
                let end = ban.ends();
                if self.would_ban.get(&ip) == Some(&end) {
                    return;
                }
                if self.would_ban.len() >= MAX_REMEMBERED {
                    self.would_ban.clear();
                }
                self.would_ban.insert(ip, end);
                log::info!(
                    "dry run ({what}): would ban {ip} for {} ({} {}, reported by {})",
                    bantime_text(ban.bantime),
                    ban.prog,
                    ban.jail,
                    ban.origin
                );
            }
        }
    }
}
