//! SIGHUP: a new server.toml and authorized_keys, taken without a restart. The core takes
//! the limits, protected networks and policies, and lifts what they no longer allow; the
//! sockets, the key and the journals stay as they were started.

use crate::config::ServerConfig;
use crate::daemon::service;
use crate::exit::Failure;
use crate::server::changes::Changes;
use crate::server::feeds::Feeds;
use crate::server::Server;
use crate::wire::keys::{self, PublicKey};

impl Server {
    pub(super) fn reload(&mut self) -> Result<(), Failure> {
        service::reloading();
        log::info!("reloading {}", self.config_path.display());
        match ServerConfig::load(&self.config_path) {
            Ok(config) => {
                let feeds_before = self.config.feeds.clone();
                if self.adopt(config) {
                    let mut changes = Changes::default();
                    if self.config.feeds != feeds_before {
                        self.restart_feeds(&mut changes);
                    }
                    self.core.lift_never_banned(&mut changes);
                    self.core.confirm_waiting(&mut changes);
                    self.carry_out(changes)?;
                }
            }
            Err(e) => log::error!("reload failed, keeping the running configuration: {e}"),
        }
        service::ready(&self.describe());
        Ok(())
    }

    /// Stops the feeds' thread and starts it with the reloaded `[[feeds]]`: a removed feed's
    /// bans are lifted, and an added one fetched at once.
    fn restart_feeds(&mut self, changes: &mut Changes) {
        self.feeds = Feeds::empty();
        match Feeds::start(
            &self.config.feeds,
            &self.config.state_dir,
            &mut self.core,
            changes,
        ) {
            Ok(feeds) => self.feeds = feeds,
            Err(e) => log::error!("the feeds are stopped: {e}"),
        }
    }

    /// Takes a reloaded configuration: new authorized keys (revoked subscribers are cut
    /// off), limits, protected networks and each group's policy. False when it kept the
    /// running one.
    fn adopt(&mut self, config: ServerConfig) -> bool {
        let authorized = match keys::load_authorized(&config.authorized_keys) {
            Ok(a) => a,
            Err(e) => {
                log::error!("reload failed, keeping the running configuration: {e}");
                return false;
            }
        };
        for problem in &authorized.problems {
            log::warn!("authorized key skipped: {problem}");
        }
        // Sockets, the key and the journal stay as they were started.
        let kept = ServerConfig {
            listen: self.config.listen,
            report_port: self.config.report_port,
            publish_port: self.config.publish_port,
            key: self.config.key.clone(),
            state_dir: self.config.state_dir.clone(),
            durability: self.config.durability,
            control_socket: self.config.control_socket.clone(),
            peers: self.config.peers.clone(),
            ..config.clone()
        };
        if kept != config {
            log::warn!(
                "listen, report-port, publish-port, key, state-dir, durability, \
                 control-socket and peers change only on restart"
            );
        }
        log::set_max_level(config.log_level.filter());
        let auth = &self.core.auth;
        let old = auth.keys();
        let revoked: Vec<&PublicKey> = old
            .keys()
            .filter(|k| !authorized.by_key.contains_key(k))
            .collect();
        for key in &revoked {
            log::info!("revoked {} (key {})", old[key], key.fingerprint());
        }
        auth.replace(authorized.by_key);
        self.core.adopt(&config);
        let topics = self.core.ledgers.iter().map(|l| l.topic.clone());
        self.publisher.set_topics(topics.collect());
        self.publisher.set_interval(kept.heartbeat_interval.0);
        self.config = kept;
        if !revoked.is_empty() {
            self.rebind_publish();
        }
        log::info!("reloaded: {} authorized keys", self.core.auth.count());
        true
    }

    /// Subscriptions carry no per-message check, so a revoked subscriber is cut off by
    /// closing every publish connection; the others reconnect through the ZAP handler at
    /// once and catch up from the heartbeat.
    fn rebind_publish(&mut self) {
        match self.publisher.reopen(&self.ctx, &self.key) {
            Ok(()) => log::info!("publish socket reopened; revoked subscribers are disconnected"),
            Err(e) => log::error!("cannot reopen the publish socket: {e}"),
        }
    }
}
