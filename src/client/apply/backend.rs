//! How a client puts bans into the local firewall. `command` runs the configured command
//! once per ban; `fail2ban` and `nftables` gather bans into batches and apply each batch
//! with one command, because one exec per ban does not keep up with a burst (fail2ban-client
//! takes about 11 ms per address; nft adds 10,000 elements in one transaction).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::metrics::histogram::Histogram;

use crate::client::apply::netlink::{self, Change, Element};
use crate::client::apply::record::Action;
use crate::client::apply::runner::{self, Applied, Outcome};
use crate::clock::unix_now;
use crate::daemon::worker::Worker;
use crate::exit::Failure;
use crate::wire::cidr::Cidr;
use crate::wire::protocol::{bantime_text, Ban};

const NFT: &str = "/usr/sbin/nft";
const FAIL2BAN_CLIENT: &str = "/usr/bin/fail2ban-client";

/// One ban or unban for a batched backend.
#[derive(Debug, Clone)]
pub struct Op {
    pub action: Action,
    pub ban: Ban,
}

/// The result of one op, as the client's record of applied bans wants it.
pub type Done = ((Cidr, Action), Applied);

/// A backend that takes bans in batches (fail2ban, nftables): carries out a batch and
/// says what became of each op.
pub trait Firewall: Send + 'static {
    fn carry_out(&mut self, ops: &[Op]) -> Vec<Applied>;

    /// Whether what the backend keeps outside this process had gone, and has been set up
    /// again (the nftables table, after `nft flush ruleset`): the bans applied before are
    /// then missing from the firewall. Called when idle, and after a batch that failed.
    fn set_up_again(&mut self) -> bool {
        false
    }
}

/// How often an idle batcher checks that its backend's firewall state is still there. A
/// reload of nftables.service flushes the whole ruleset, and fail2ban restores its own
/// bans after such a flush: so do we, this long after it at most.
const CHECK_EVERY: Duration = Duration::from_secs(2);

/// Gathers ops on a worker thread and hands them to the backend in batches, as the server's
/// journal commits its batches (group commit): an idle backend takes the first op at once,
/// with whatever else is queued behind it, up to `size`; what arrives while a batch runs
/// makes the next one, which also takes what follows closely (`gather`). `delay`, when not
/// zero, lets a batch wait that long after its first op for more (the behaviour before:
/// 20 ms).
pub struct Batcher {
    queue: Sender<Op>,
    worker: Worker,
    /// Set by the worker when the backend was set up again (`Firewall::set_up_again`).
    set_up_again: Arc<AtomicBool>,
}

impl Batcher {
    /// Batches of up to `size` ops, `delay` apart at most; `latency` gets the time each
    /// batch's command takes. An error when its thread cannot be started.
    pub fn start(
        mut backend: impl Firewall,
        (size, delay): (usize, Duration),
        latency: Histogram,
    ) -> std::io::Result<(Batcher, Receiver<Done>)> {
        let (queue, ops) = mpsc::channel::<Op>();
        let (done, results) = mpsc::channel();
        let set_up_again = Arc::new(AtomicBool::new(false));
        let again = Arc::clone(&set_up_again);
        let mut rest_until = Instant::now();
        let worker = Worker::spawn("batcher", move || loop {
            let first = match ops.recv_timeout(CHECK_EVERY) {
                Ok(first) => first,
                Err(RecvTimeoutError::Timeout) => {
                    if backend.set_up_again() {
                        again.store(true, Ordering::Relaxed);
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            std::thread::sleep(rest_until.saturating_duration_since(Instant::now()));
            let batch = gather(&ops, first, size, delay);
            let started = Instant::now();
            let mut outcome = backend.carry_out(&batch);
            if outcome.contains(&Applied::Failed) && backend.set_up_again() {
                again.store(true, Ordering::Relaxed);
                outcome = backend.carry_out(&batch);
            }
            let took = started.elapsed();
            latency.observe(took.as_secs_f64());
            rest_until = Instant::now() + rest_after(batch.len(), size, took);
            for (op, applied) in batch.iter().zip(outcome) {
                let _ = done.send(((op.ban.ip, op.action), applied));
            }
        })?;
        let batcher = Batcher {
            queue,
            worker,
            set_up_again,
        };
        Ok((batcher, results))
    }

    /// An error if the batcher's thread has stopped (see `worker`).
    pub fn check(&self) -> Result<(), Failure> {
        self.worker.check()
    }

    pub fn submit(&self, op: Op) {
        let _ = self.queue.send(op);
    }

    /// Whether the backend was set up again since the last call: the bans applied before
    /// must be applied again.
    pub fn take_set_up_again(&self) -> bool {
        self.set_up_again.swap(false, Ordering::Relaxed)
    }
}

/// How long a batch of a burst waits for one more ban. The bans of a burst (an import, a
/// catch-up, ten hosts reporting at once) reach the batcher tens of microseconds apart,
/// while each batch costs an `nft` or `fail2ban-client` run of milliseconds: taking only
/// what was queued made ten clients run `nft` some 20 times each for an import of 1,000
/// bans (docs/performance.md, P11). A lone ban never waits for this.
const BURST_GAP: Duration = Duration::from_millis(5);

/// The batch that starts with `first`: with whatever is queued behind it and, when that is
/// anything (a burst), with what follows within BURST_GAP of the last, up to `size`.
/// `delay`, when set, is how long any batch waits for more after its first ban.
fn gather(ops: &Receiver<Op>, first: Op, size: usize, delay: Duration) -> Vec<Op> {
    let deadline = Instant::now() + delay;
    let mut batch = vec![first];
    while batch.len() < size {
        let next = match deadline.checked_duration_since(Instant::now()) {
            Some(left) if !left.is_zero() => ops.recv_timeout(left),
            _ if batch.len() > 1 => ops.recv_timeout(BURST_GAP),
            _ => ops.try_recv().map_err(|_| RecvTimeoutError::Timeout),
        };
        match next {
            Ok(op) => batch.push(op),
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
        }
    }
    batch
}

/// How long the next batch waits after one of `len` ops that took `took`. A command costs
/// far more than the bans in it (each `fail2ban-client` starts a Python interpreter: about
/// 0.2 s of CPU), so in a steady stream of bans each batch held one or two and the client
/// kept fail2ban-client running without a break, on every host (most of a core in
/// tests/ansible.rs, at 10 bans a second). After a batch that was not full the next waits
/// as long as the last took, which holds the command to half a core at most; a backlog
/// (full batches: a catch-up, an import) goes on at once, and a lone ban after a quiet
/// moment never waits.
fn rest_after(len: usize, size: usize, took: Duration) -> Duration {
    match len < size {
        true => took,
        false => Duration::ZERO,
    }
}

/// Runs a command; on failure logs why and returns false.
fn run_logged(what: &str, argv: &[String], input: Option<&[u8]>, timeout: Duration) -> bool {
    match runner::run_with_input(argv, input, timeout) {
        Ok(Outcome::Exited(status, _)) if status.success() => true,
        Ok(Outcome::Exited(status, stderr)) => {
            log::error!("{what}: {} failed ({status}): {stderr}", argv[0]);
            false
        }
        Ok(Outcome::TimedOut) => {
            log::error!("{what}: {} timed out", argv[0]);
            false
        }
        Err(e) => {
            log::error!("{what}: cannot run {}: {e}", argv[0]);
            false
        }
    }
}

/// The client's own nftables table: sets with per-element timeouts, so the kernel expires
/// bans by itself, and an input chain that drops their traffic. Single addresses go into
/// hash sets (addr4, addr6) and networks into interval sets (net4, net6): nft reads a whole
/// interval set before each change to check for overlaps, so with every ban in one interval
/// set each batch got slower as the set grew (67 ms for 500 bans at 20,000), where a hash set
/// stays at about 25 ms for 5,000. Addresses go to the kernel over netlink (`netlink`);
/// `nft` sets the table up and takes the networks.
pub struct Nftables {
    table: String,
    timeout: Duration,
    /// When to look for the table next: not before a while after setting it up failed.
    next_check: Instant,
}

/// How long after a failed setup the table is looked for again, so that a broken nft
/// does not log an error every CHECK_EVERY.
const SETUP_BACKOFF: Duration = Duration::from_secs(60);

impl Nftables {
    /// Creates the table, sets and chain, or brings them back to this shape: elements
    /// already there are kept, the chain's rules are replaced, so a restart adds nothing
    /// twice.
    pub fn setup(table: &str, timeout: Duration) -> Result<Nftables, String> {
        let nft = Nftables {
            table: table.to_owned(),
            timeout,
            next_check: Instant::now(),
        };
        if nft.set_up() {
            Ok(nft)
        } else {
            Err(format!(
                "cannot set up nftables table inet {table}; see the error above"
            ))
        }
    }

    fn set_up(&self) -> bool {
        let t = &self.table;
        let script = format!(
            "add table inet {t}\n\
             add set inet {t} addr4 {{ type ipv4_addr; flags timeout; }}\n\
             add set inet {t} addr6 {{ type ipv6_addr; flags timeout; }}\n\
             add set inet {t} net4 {{ type ipv4_addr; flags interval, timeout; }}\n\
             add set inet {t} net6 {{ type ipv6_addr; flags interval, timeout; }}\n\
             add chain inet {t} input {{ type filter hook input priority -10; policy accept; }}\n\
             flush chain inet {t} input\n\
             add rule inet {t} input ip saddr @addr4 drop\n\
             add rule inet {t} input ip saddr @net4 drop\n\
             add rule inet {t} input ip6 saddr @addr6 drop\n\
             add rule inet {t} input ip6 saddr @net6 drop\n"
        );
        self.run("nftables setup", &script)
    }

    fn run(&self, what: &str, script: &str) -> bool {
        let argv = [NFT.to_string(), "-f".into(), "-".into()];
        run_logged(what, &argv, Some(script.as_bytes()), self.timeout)
    }

    /// The changes for one op, None for a ban that has already expired. An unban adds the
    /// element first, so that deleting it cannot fail when it has already expired.
    fn changes(op: &Op, now: u64) -> Option<Vec<(Change, Cidr)>> {
        let ip = op.ban.ip;
        match op.action {
            Action::Ban => match op.ban.expires {
                None => Some(vec![(Change::Add(None), ip)]),
                Some(expires) if expires > now => {
                    Some(vec![(Change::Add(Some(expires - now)), ip)])
                }
                Some(_) => None,
            },
            Action::Unban => Some(vec![(Change::Add(Some(1)), ip), (Change::Delete, ip)]),
        }
    }

    /// Applies `changes` in their order: the addresses over netlink, in one transaction,
    /// and the networks with one `nft` run. Refused when the kernel refused the addresses
    /// for good (`netlink::NetlinkError::is_final`); `nft` does not say why it failed, so
    /// the networks are only ever done or failed.
    fn apply(&self, what: &str, changes: &[(Change, Cidr)]) -> Applied {
        let (hosts, networks): (Vec<(Change, Cidr)>, Vec<_>) =
            changes.iter().copied().partition(|(_, ip)| ip.is_host());
        let elements: Vec<Element> = hosts
            .iter()
            .map(|&(change, ip)| Element {
                change,
                set: set_for(&ip),
                addr: ip.addr(),
            })
            .collect();
        let hosts = match elements.is_empty() {
            true => Applied::Done,
            false => match netlink::commit(&self.table, &elements, self.timeout) {
                Ok(()) => Applied::Done,
                Err(e) => {
                    log::error!("{what}: {e}");
                    match e.is_final() {
                        true => Applied::Refused,
                        false => Applied::Failed,
                    }
                }
            },
        };
        let networks = networks.is_empty() || self.run(what, &self.script(&networks));
        match (hosts, networks) {
            (_, false) => Applied::Failed,
            (hosts, true) => hosts,
        }
    }

    /// The nft script for `changes`, in their order, with each run of changes of one verb
    /// on one set as a single command: nft takes 500 elements in one command in about two
    /// thirds of the time it takes them as 500 commands.
    fn script(&self, changes: &[(Change, Cidr)]) -> String {
        let verb = |change: &Change| match change {
            Change::Add(_) => "add",
            Change::Delete => "delete",
        };
        let mut script = String::new();
        let mut rest = changes;
        while let Some((first, ip)) = rest.first() {
            let key = (verb(first), set_for(ip));
            let n = rest
                .iter()
                .take_while(|(change, ip)| (verb(change), set_for(ip)) == key)
                .count();
            let elements: Vec<String> = rest[..n]
                .iter()
                .map(|(change, ip)| match change {
                    Change::Add(Some(seconds)) => format!("{ip} timeout {seconds}s"),
                    _ => ip.to_string(),
                })
                .collect();
            let ((verb, set), t) = (key, &self.table);
            script += &format!(
                "{verb} element inet {t} {set} {{ {} }}\n",
                elements.join(", ")
            );
            rest = &rest[n..];
        }
        script
    }
}

impl Firewall for Nftables {
    /// Sets the table up again when it has gone, as `nft flush ruleset` and a reload of
    /// nftables.service make it go.
    fn set_up_again(&mut self) -> bool {
        if Instant::now() < self.next_check {
            return false;
        }
        match netlink::table_exists(&self.table, self.timeout) {
            Ok(true) => false,
            Ok(false) => {
                log::warn!(
                    "nftables: table inet {} has gone (a flush of the ruleset?); setting it up again",
                    self.table
                );
                let done = self.set_up();
                if !done {
                    self.next_check = Instant::now() + SETUP_BACKOFF;
                }
                done
            }
            Err(e) => {
                log::warn!("nftables: cannot look for table inet {}: {e}", self.table);
                self.next_check = Instant::now() + SETUP_BACKOFF;
                false
            }
        }
    }

    /// One transaction for the whole batch. If it fails, the ops are applied one by one, so
    /// that one bad element (such as an address inside a network already banned, which nft
    /// refuses as an overlap) does not hold back the others.
    fn carry_out(&mut self, ops: &[Op]) -> Vec<Applied> {
        let now = unix_now();
        let each: Vec<Option<Vec<(Change, Cidr)>>> =
            ops.iter().map(|op| Self::changes(op, now)).collect();
        let all = coalesced(&each);
        let what = format!("nftables batch of {}", ops.len());
        if all.is_empty() || self.apply(&what, &all) == Applied::Done {
            log::info!("nftables: applied a batch of {} bans and unbans", ops.len());
            return vec![Applied::Done; ops.len()];
        }
        ops.iter()
            .zip(each)
            .map(|(op, changes)| match changes {
                None => Applied::Done,
                Some(changes) => {
                    let what = format!("nftables {} {}", op.action, op.ban.ip);
                    match self.apply(&what, &changes) {
                        Applied::Failed if op.action == Action::Ban && self.covered(&op.ban.ip) => {
                            Applied::Done
                        }
                        applied => applied,
                    }
                }
            })
            .collect()
    }
}

/// A batch's changes, one network's the last op's only, and every addition before every
/// deletion: runs of one kind make one netlink message each. An unban, as an addition
/// then a deletion, one after the other, made one message for each, and the kernel's
/// acknowledgements of a batch of 500 unbans overflowed the socket (ENOBUFS).
fn coalesced(each: &[Option<Vec<(Change, Cidr)>>]) -> Vec<(Change, Cidr)> {
    let mut last: Vec<(Cidr, &[(Change, Cidr)])> = Vec::new();
    let mut place: std::collections::HashMap<Cidr, usize> = std::collections::HashMap::new();
    for changes in each.iter().flatten() {
        let Some(&(_, ip)) = changes.first() else {
            continue;
        };
        match place.get(&ip) {
            Some(&i) => last[i].1 = changes,
            None => {
                place.insert(ip, last.len());
                last.push((ip, changes));
            }
        }
    }
    let all = last.iter().flat_map(|(_, changes)| changes.iter().copied());
    let (adds, deletes): (Vec<_>, Vec<_>) =
        all.partition(|(change, _)| matches!(change, Change::Add(_)));
    [adds, deletes].concat()
}

impl Nftables {
    /// Whether a network set already holds a network covering the network `ip`: nft
    /// refuses such a network as an overlap, but it is banned all the same.
    fn covered(&self, ip: &Cidr) -> bool {
        if ip.is_host() {
            return false;
        }
        let set = set_for(ip);
        let argv: Vec<String> = [NFT, "get", "element", "inet", &self.table, set]
            .iter()
            .map(|s| (*s).to_string())
            .chain([format!("{{ {ip} }}")])
            .collect();
        let covered = matches!(
            runner::run(&argv, self.timeout),
            Ok(Outcome::Exited(status, _)) if status.success()
        );
        if covered {
            log::info!("nft: {ip} is inside a network already banned");
        }
        covered
    }
}

/// The nftables set that holds `ip`.
fn set_for(ip: &Cidr) -> &'static str {
    match (ip.is_host(), ip.is_ipv4()) {
        (true, true) => "addr4",
        (true, false) => "addr6",
        (false, true) => "net4",
        (false, false) => "net6",
    }
}

/// The `log` backend: a dry run, which says what each op would do and touches nothing.
pub struct LogOnly;

impl Firewall for LogOnly {
    fn carry_out(&mut self, ops: &[Op]) -> Vec<Applied> {
        for Op { action, ban } in ops {
            log::info!(
                "dry run: would {action} {} ({} {} from {}, bantime {})",
                ban.ip,
                ban.prog,
                ban.jail,
                ban.origin,
                bantime_text(ban.bantime)
            );
        }
        vec![Applied::Done; ops.len()]
    }
}

/// Bans through a fail2ban jail (by default `banshare`), many addresses per call.
pub struct Fail2ban {
    pub jail: String,
    pub socket: std::path::PathBuf,
    pub timeout: Duration,
}

impl Firewall for Fail2ban {
    /// `set JAIL banip IP ...` for the bans and `set JAIL unbanip IP ...` for the unbans. A
    /// failure (fail2ban down) fails the ops, which the client keeps and tries again.
    fn carry_out(&mut self, ops: &[Op]) -> Vec<Applied> {
        let mut outcome = vec![Applied::Failed; ops.len()];
        for (action, word) in [(Action::Ban, "banip"), (Action::Unban, "unbanip")] {
            let chosen: Vec<usize> = (0..ops.len())
                .filter(|&i| ops[i].action == action)
                .collect();
            if chosen.is_empty() {
                continue;
            }
            let mut argv = vec![
                FAIL2BAN_CLIENT.to_string(),
                "-s".into(),
                self.socket.display().to_string(),
                "set".into(),
                self.jail.clone(),
                word.into(),
            ];
            argv.extend(chosen.iter().map(|&i| ops[i].ban.ip.to_string()));
            let what = format!("fail2ban {word} of {} addresses", chosen.len());
            let ok = run_logged(&what, &argv, None, self.timeout);
            if ok {
                log::info!("{what} in jail {}", self.jail);
            }
            if ok {
                for i in chosen {
                    outcome[i] = Applied::Done;
                }
            }
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(action: Action, ip: &str, expires: Option<u64>) -> Op {
        Op {
            action,
            ban: Ban::sample(ip, expires.map(|_| 60), expires),
        }
    }

    #[test]
    fn a_batch_keeps_each_networks_last_op_and_adds_before_it_deletes() {
        let (x, y, z): (Cidr, Cidr, Cidr) = (
            "203.0.113.1".parse().unwrap(),
            "203.0.113.2".parse().unwrap(),
            "203.0.113.3".parse().unwrap(),
        );
        let ban = |ip, t| Some(vec![(Change::Add(Some(t)), ip)]);
        let unban = |ip| Some(vec![(Change::Add(Some(1)), ip), (Change::Delete, ip)]);
        let each = [ban(x, 60), unban(y), unban(x), ban(y, 90), None, unban(z)];
        assert_eq!(
            coalesced(&each),
            [
                (Change::Add(Some(1)), x),
                (Change::Add(Some(90)), y),
                (Change::Add(Some(1)), z),
                (Change::Delete, x),
                (Change::Delete, z)
            ]
        );
    }

    #[test]
    fn nft_scripts_carry_the_remaining_time_and_merge_runs_of_one_set() {
        let nft = Nftables {
            table: "banshare".into(),
            timeout: Duration::from_secs(1),
            next_check: Instant::now(),
        };
        let script = |ops: &[Op]| {
            let all: Vec<(Change, Cidr)> = ops
                .iter()
                .filter_map(|op| Nftables::changes(op, 1000))
                .flatten()
                .collect();
            nft.script(&all)
        };
        assert_eq!(
            script(&[
                op(Action::Ban, "203.0.113.7", Some(1600)),
                op(Action::Ban, "203.0.113.8", None),
                op(Action::Ban, "203.0.113.9", Some(900)),
                op(Action::Ban, "2001:db8::/64", None),
                op(Action::Unban, "203.0.113.7", None),
                op(Action::Ban, "203.0.113.10", Some(1010)),
            ]),
            "add element inet banshare addr4 { 203.0.113.7 timeout 600s, 203.0.113.8 }\n\
             add element inet banshare net6 { 2001:db8::/64 }\n\
             add element inet banshare addr4 { 203.0.113.7 timeout 1s }\n\
             delete element inet banshare addr4 { 203.0.113.7 }\n\
             add element inet banshare addr4 { 203.0.113.10 timeout 10s }\n"
        );
    }

    struct Recorder(Sender<usize>);

    impl Firewall for Recorder {
        fn carry_out(&mut self, ops: &[Op]) -> Vec<Applied> {
            self.0.send(ops.len()).unwrap();
            vec![Applied::Done; ops.len()]
        }
    }

    #[test]
    fn batches_close_on_size_or_delay() {
        let (sizes, seen) = mpsc::channel();
        let latency = crate::daemon::metrics::seconds_histogram();
        let limits = (3, Duration::from_millis(50));
        let (batcher, done) = Batcher::start(Recorder(sizes), limits, latency).unwrap();
        for i in 0..7 {
            batcher.submit(op(Action::Ban, &format!("203.0.113.{i}"), None));
        }
        let got: Vec<usize> = (0..3)
            .map(|_| seen.recv_timeout(Duration::from_secs(2)).unwrap())
            .collect();
        assert_eq!(got, [3, 3, 1]);
        let applied = done.iter().take(7).filter(|(_, a)| *a == Applied::Done);
        assert_eq!(applied.count(), 7);
    }

    /// A backend whose command takes 200 ms, and says when each batch started.
    struct Slow(Sender<(usize, Instant)>);

    impl Firewall for Slow {
        fn carry_out(&mut self, ops: &[Op]) -> Vec<Applied> {
            self.0.send((ops.len(), Instant::now())).unwrap();
            std::thread::sleep(Duration::from_millis(200));
            vec![Applied::Done; ops.len()]
        }
    }

    #[test]
    fn in_a_stream_the_next_batch_rests_as_long_as_the_last_took_and_a_backlog_does_not() {
        let latency = crate::daemon::metrics::seconds_histogram();
        let (starts, seen) = mpsc::channel();
        let (batcher, _done) =
            Batcher::start(Slow(starts), (500, Duration::ZERO), latency).unwrap();
        // A ban while the first batch runs waits for it, then as long again.
        batcher.submit(op(Action::Ban, "203.0.113.1", None));
        let (_, first) = seen.recv_timeout(Duration::from_secs(5)).unwrap();
        batcher.submit(op(Action::Ban, "203.0.113.2", None));
        let (_, second) = seen.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(
            second - first >= Duration::from_millis(400),
            "{:?}",
            second - first
        );
        // In rest_after's terms: full batches go on at once.
        assert_eq!(rest_after(500, 500, Duration::from_secs(1)), Duration::ZERO);
        assert_eq!(
            rest_after(2, 500, Duration::from_secs(1)),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn without_a_delay_a_lone_ban_goes_at_once_and_what_waits_goes_together() {
        let (tx, rx) = mpsc::channel();
        let first = op(Action::Ban, "203.0.113.1", None);
        // Nothing queued: the first op alone, without waiting.
        let started = Instant::now();
        assert_eq!(gather(&rx, first.clone(), 500, Duration::ZERO).len(), 1);
        assert!(started.elapsed() < Duration::from_millis(5));
        // Queued behind it: taken in the same batch, up to the size.
        for i in 2..=6 {
            tx.send(op(Action::Ban, &format!("203.0.113.{i}"), None))
                .unwrap();
        }
        assert_eq!(gather(&rx, first.clone(), 4, Duration::ZERO).len(), 4);
        assert_eq!(gather(&rx, first, 500, Duration::ZERO).len(), 3);
    }
}
