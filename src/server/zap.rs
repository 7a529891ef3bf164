//! The ZAP handler: it lets in only authorized keys, in a thread of its own that answers
//! libzmq's authentication requests for the server's CURVE sockets, and it remembers which
//! fleet host connected from where, so that no report can ban a member of the fleet.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::daemon::worker::{self, Worker};
use crate::logging::Refusals;
use crate::sockets::transport::peer_address;
use crate::wire::cidr::Cidr;
use crate::wire::keys::PublicKey;

/// The authorized keys, shared between the ZAP thread and the server loop.
#[derive(Clone, Default)]
pub struct Authorizer {
    keys: Arc<RwLock<HashMap<PublicKey, String>>>,
    /// Addresses that authorized hosts connected from, so that no report can ban a member
    /// of the fleet.
    peers: Arc<RwLock<HashMap<IpAddr, String>>>,
    /// When each host was last seen (unix time), for `banshare status`.
    seen: Arc<RwLock<BTreeMap<String, u64>>>,
    /// Keys cut off until a time, for breaking the protocol: the handshake refuses them,
    /// and their requests on connections already open are dropped.
    cut_off: Arc<RwLock<HashMap<PublicKey, Instant>>>,
    /// Refused handshakes, noted by the ZAP thread and written out by the server's loop.
    refusals: Arc<Mutex<Refusals>>,
    /// When each host last connected to each socket (`greet`).
    connected: Arc<Mutex<HashMap<(String, String), Instant>>>,
}

/// A host that has not connected to a socket for this long was away: its next connection
/// is logged again.
const AWAY: Duration = Duration::from_secs(10 * 60);

impl Authorizer {
    /// Binds the ZAP endpoint in `ctx` and answers authentication requests in a thread,
    /// which the daemon must check (see `worker`). Must run before any CURVE server socket
    /// binds.
    pub fn start(
        ctx: &zmq::Context,
        keys: HashMap<PublicKey, String>,
    ) -> zmq::Result<(Authorizer, Worker)> {
        let auth = Authorizer::default();
        auth.replace(keys);
        let socket = ctx.socket(zmq::REP)?;
        socket.set_linger(0)?;
        socket.bind("inproc://zeromq.zap.01")?;
        let shared = auth.clone();
        let worker =
            Worker::spawn("zap", move || shared.serve(socket)).map_err(|_| zmq::Error::EMFILE)?;
        Ok((auth, worker))
    }

    pub fn replace(&self, keys: HashMap<PublicKey, String>) {
        // After a reload, each host's first connection is logged again.
        self.connected.lock().expect("lock").clear();
        let names: HashSet<&String> = keys.values().collect();
        self.peers
            .write()
            .expect("lock")
            .retain(|_, name| names.contains(name));
        self.seen
            .write()
            .expect("lock")
            .retain(|name, _| names.contains(name));
        drop(names);
        *self.keys.write().expect("lock") = keys;
    }

    /// Whether host `name`'s connection to the socket `domain` deserves a log line: its
    /// first since the start or a reload, or the first after AWAY. Every report is a
    /// connection of its own, and a line for each would drown the audit lines.
    fn greet(&self, domain: &str, name: &str) -> bool {
        let now = Instant::now();
        let mut connected = self.connected.lock().expect("lock");
        let last = connected.insert((domain.to_owned(), name.to_owned()), now);
        last.is_none_or(|at| now.duration_since(at) >= AWAY)
    }

    /// Notes that host `name` was heard from.
    pub fn saw(&self, name: &str) {
        let now = crate::clock::unix_now();
        self.seen
            .write()
            .expect("lock")
            .insert(name.to_owned(), now);
    }

    /// Every authorized host that has connected, with when it was last heard from.
    pub fn hosts_seen(&self) -> Vec<(String, u64)> {
        let seen = self.seen.read().expect("lock");
        seen.iter().map(|(name, at)| (name.clone(), *at)).collect()
    }

    /// The fleet host, and its address, that a ban of `net` would cut off.
    pub fn fleet_host_in(&self, net: &Cidr) -> Option<(IpAddr, String)> {
        let peers = self.peers.read().expect("lock");
        net.views().find_map(|view| {
            peers
                .iter()
                .find(|(addr, _)| view.contains(**addr))
                .map(|(addr, name)| (*addr, name.clone()))
        })
    }

    pub fn keys(&self) -> HashMap<PublicKey, String> {
        self.keys.read().expect("lock").clone()
    }

    /// The key file name of an authorized key.
    pub fn name_for(&self, key: &PublicKey) -> Option<String> {
        self.keys.read().expect("lock").get(key).cloned()
    }

    /// The authorized key whose file is `NAME.key`.
    pub fn key_named(&self, name: &str) -> Option<PublicKey> {
        let keys = self.keys.read().expect("lock");
        keys.iter().find(|(_, n)| *n == name).map(|(key, _)| *key)
    }

    pub fn count(&self) -> usize {
        self.keys.read().expect("lock").len()
    }

    /// The key file name for a User-Id, if that key is still authorized. Checked on every
    /// message so that a revoked key stops working on connections that are already open.
    pub fn name_of(&self, user_id: &str) -> Option<String> {
        self.lookup(user_id).map(|(name, _)| name)
    }

    /// The key file name and the key for a User-Id, if that key is still authorized and
    /// not cut off.
    pub fn lookup(&self, user_id: &str) -> Option<(String, PublicKey)> {
        let key = PublicKey::from_z85(user_id)?;
        if self.is_cut_off(&key) {
            return None;
        }
        let name = self.keys.read().expect("lock").get(&key).cloned()?;
        Some((name, key))
    }

    /// Adds the handshakes refused since the start to `totals`, by reason.
    pub fn add_refusals(&self, totals: &mut BTreeMap<String, u64>) {
        self.refusals.lock().expect("lock").add_totals(totals);
    }

    /// Writes the summary of refused handshakes when it is due, or now when `now`.
    pub fn flush_refusals(&self, now: bool) {
        self.refusals.lock().expect("lock").flush(now);
    }

    /// Refuses `key` until `until`, in the handshake and on connections already open.
    pub fn cut_off(&self, key: PublicKey, until: Instant) {
        self.cut_off.write().expect("lock").insert(key, until);
    }

    fn is_cut_off(&self, key: &PublicKey) -> bool {
        let now = Instant::now();
        let until = self.cut_off.read().expect("lock").get(key).copied();
        match until {
            Some(until) if until > now => true,
            Some(_) => {
                self.cut_off
                    .write()
                    .expect("lock")
                    .retain(|_, until| *until > now);
                false
            }
            None => false,
        }
    }

    /// Answers until the context ends. Any other end aborts the process at once: with no
    /// ZAP handler, libzmq would let every CURVE client in.
    fn serve(&self, socket: zmq::Socket) {
        let stopped = loop {
            let request = match socket.recv_multipart(0) {
                Ok(request) => request,
                Err(e) => break e,
            };
            let reply = self.answer(&request, &mut self.refusals.lock().expect("lock"));
            if worker::fault("zap-panics") {
                panic!("fault injected into the ZAP handler");
            }
            if worker::fault("zap-exits") {
                break zmq::Error::EFAULT;
            }
            if let Err(e) = socket.send_multipart(reply, 0) {
                break e;
            }
        };
        if stopped != zmq::Error::ETERM {
            log::error!(
                "the ZAP handler stopped ({stopped}); aborting, so that no peer is let in unchecked"
            );
            std::process::abort();
        }
    }

    /// ZAP request frames: version, request id, domain, address, identity, mechanism,
    /// then the 32-byte client key for CURVE.
    fn answer(&self, request: &[Vec<u8>], refusals: &mut Refusals) -> Vec<Vec<u8>> {
        let field = |i: usize| {
            request
                .get(i)
                .map(|f| String::from_utf8_lossy(f).into_owned())
        };
        let request_id = request.get(1).cloned().unwrap_or_default();
        let domain = field(2).unwrap_or_default();
        let address = peer_address(&field(3).unwrap_or_default());
        let key = match (request.get(5).map(Vec::as_slice), request.get(6)) {
            (Some(b"CURVE"), Some(key)) => <[u8; 32]>::try_from(key.as_slice()).ok().map(PublicKey),
            _ => None,
        };
        let name = key.and_then(|k| self.keys.read().expect("lock").get(&k).cloned());
        let (status, text, user) = match (key, name) {
            (Some(key), Some(name)) if self.is_cut_off(&key) => {
                let detail = format!(" {name} (key {})", key.fingerprint());
                refusals.note(&domain, "cut-off key", &address, &detail);
                ("400", "cut off", String::new())
            }
            (Some(key), Some(name)) => {
                if let Ok(addr) = address.parse::<IpAddr>() {
                    self.peers.write().expect("lock").insert(addr, name.clone());
                }
                self.saw(&name);
                if self.greet(&domain, &name) {
                    log::info!(
                        "{domain}: accepted {name} (key {}) from {address}",
                        key.fingerprint()
                    );
                }
                ("200", "OK", key.z85())
            }
            (Some(key), None) => {
                let detail = format!(" {}", key.fingerprint());
                refusals.note(&domain, "unknown key", &address, &detail);
                ("400", "unknown key", String::new())
            }
            (None, _) => {
                refusals.note(&domain, "non-CURVE peer", &address, "");
                ("400", "CURVE required", String::new())
            }
        };
        vec![
            b"1.0".to_vec(),
            request_id,
            status.into(),
            text.into(),
            user.into_bytes(),
            Vec::new(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::keys::KeyPair;

    fn zap_request(address: &str, key: &PublicKey) -> Vec<Vec<u8>> {
        let parts: [&[u8]; 7] = [
            b"1.0",
            b"7",
            b"report",
            address.as_bytes(),
            b"",
            b"CURVE",
            &key.0,
        ];
        parts.iter().map(|p| p.to_vec()).collect()
    }

    #[test]
    fn zap_accepts_known_keys_and_remembers_fleet_addresses() {
        let web1 = KeyPair::generate().unwrap().public;
        let stranger = KeyPair::generate().unwrap().public;
        let auth = Authorizer::default();
        auth.replace(HashMap::from([(web1, "web1".to_string())]));
        let mut refusals = Refusals::default();
        let reply = auth.answer(&zap_request("::ffff:198.51.100.2", &web1), &mut refusals);
        assert_eq!(reply[1], b"7");
        assert_eq!(reply[2], b"200");
        assert_eq!(reply[4], web1.z85().into_bytes());
        assert_eq!(auth.name_of(&web1.z85()).as_deref(), Some("web1"));
        let reply = auth.answer(&zap_request("198.51.100.3", &stranger), &mut refusals);
        assert_eq!(reply[2], b"400");
        assert_eq!(auth.name_of(&stranger.z85()), None);

        let net: Cidr = "198.51.100.0/24".parse().unwrap();
        let found = auth.fleet_host_in(&net).unwrap();
        assert_eq!(
            (found.0.to_string(), found.1),
            ("198.51.100.2".into(), "web1".into())
        );
        assert!(auth
            .fleet_host_in(&"198.51.100.3".parse().unwrap())
            .is_none());
        // Written as NAT64, the host's address is still the host's.
        assert!(auth
            .fleet_host_in(&"64:ff9b::c633:6402".parse().unwrap())
            .is_some());
        // A key cut off is refused, and its requests are not taken, until the time is up.
        auth.cut_off(web1, Instant::now() + std::time::Duration::from_millis(50));
        let reply = auth.answer(&zap_request("198.51.100.2", &web1), &mut refusals);
        assert_eq!(
            (reply[2].as_slice(), reply[3].as_slice()),
            (&b"400"[..], &b"cut off"[..])
        );
        assert_eq!(auth.name_of(&web1.z85()), None);
        std::thread::sleep(std::time::Duration::from_millis(60));
        assert_eq!(auth.name_of(&web1.z85()).as_deref(), Some("web1"));
        // Revoking the key forgets its addresses.
        auth.replace(HashMap::new());
        assert!(auth.fleet_host_in(&net).is_none());
        assert_eq!(auth.name_of(&web1.z85()), None);
    }
}
