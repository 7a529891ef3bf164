//! `banshare report`: the report sent over CURVE by this process itself, to the first of
//! the servers that answers. banshare-report runs it when no banshare-client takes the
//! report (`super`).

use std::time::{Duration, Instant};

use crate::cli::ReportArgs;
use crate::client::link::{own_key, request_socket, targets};
use crate::config::ClientConfig;
use crate::exit::{Exit, Failure};
use crate::sockets::transport;
use crate::sockets::upstream::Target;
use crate::wire::keys::KeyPair;
use crate::wire::protocol::{Report, Verdict};

pub fn main(args: &ReportArgs) -> std::process::ExitCode {
    super::finish(args, run(args))
}

fn run(args: &ReportArgs) -> Result<String, Failure> {
    let started = Instant::now();
    let report = super::parse(args)?;
    let config = ClientConfig::load(&args.config)?;
    transport::require_curve().map_err(|e| Exit::Software.with(e))?;
    let key = own_key(&config)?;
    let servers = in_turn(targets(&config)?, spread());
    let timeout = config.report_timeout.0;
    let Some((verdict, address)) = exchange(&servers, &report, &key, started + timeout)? else {
        let addresses: Vec<String> = servers.iter().map(Target::report_endpoint).collect();
        let why = super::no_answer(&addresses.join(", "), timeout);
        return Err(super::spool(&config, &report, &why));
    };
    super::outcome(&report, verdict, &address, started)
}

/// The servers in the order to try them: from the `start`th on, round, so that the fleet's
/// reporters spread over the servers rather than all wait on the first.
fn in_turn(mut servers: Vec<Target>, start: usize) -> Vec<Target> {
    let n = servers.len().max(1);
    servers.rotate_left(start % n);
    servers
}

/// A number that differs from one run to the next, to pick the first server: the process
/// id alone steps by the same few numbers when a script reports in a loop.
pub fn spread() -> usize {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    (nanos / 1000) as usize ^ std::process::id() as usize
}

/// The most a report waits for one server's answer before it is sent to the next too.
/// A server answers a report in milliseconds, and in a second or so at its busiest (a
/// rotation on a loaded host, tests/ansible.rs): with an even share of a 3 s timeout, a
/// server that was down left the one that answers only 1.5 s, and every report that
/// asked the dead one first cost fail2ban 1.5 s.
const ASK_NEXT_AFTER: Duration = Duration::from_millis(500);

/// How long to wait for a server's answer before asking the next: an even share of the
/// time, and at most `ASK_NEXT_AFTER`.
pub fn ask_next_after(total: Duration, servers: usize) -> Duration {
    (total / servers.max(1) as u32).min(ASK_NEXT_AFTER)
}

/// The first verdict any server gives within the deadline, and whose it is; None when no
/// answer came. A server that refuses our key answers nothing at all, so "no answer" is
/// all we can say. The request goes to the first server, then, while no answer has come,
/// to the next after `ask_next_after`, the earlier ones still being heard: a dead server
/// costs at most half a second, and a slow one still has until the deadline.
fn exchange(
    servers: &[Target],
    report: &Report,
    key: &KeyPair,
    deadline: Instant,
) -> Result<Option<(Verdict, String)>, Failure> {
    let fail = |e: zmq::Error| Exit::Software.with(format!("ZeroMQ: {e}"));
    let ctx = zmq::Context::new();
    let ask_next = ask_next_after(
        deadline.saturating_duration_since(Instant::now()),
        servers.len(),
    );
    let mut asked: Vec<(zmq::Socket, String)> = Vec::new();
    let (mut tried, mut next_at) = (0, Instant::now());
    while Instant::now() < deadline {
        if let Some(server) = servers.get(tried).filter(|_| Instant::now() >= next_at) {
            asked.extend(ask(&ctx, server, report, key)?);
            (tried, next_at) = (tried + 1, Instant::now() + ask_next);
            continue;
        }
        let until = if tried < servers.len() {
            next_at.min(deadline)
        } else {
            deadline
        };
        let wait = until.saturating_duration_since(Instant::now());
        let mut items: Vec<zmq::PollItem> = asked
            .iter()
            .map(|(s, _)| s.as_poll_item(zmq::POLLIN))
            .collect();
        zmq::poll(&mut items, wait.as_millis() as i64).map_err(fail)?;
        let Some(i) = items.iter().position(zmq::PollItem::is_readable) else {
            continue;
        };
        let (socket, address) = &asked[i];
        let frames = socket.recv_multipart(0).map_err(fail)?;
        let verdict = Verdict::decode(&frames)
            .map_err(|e| Exit::Unavailable.with(format!("bad reply from {address}: {e}")))?;
        return Ok(Some((verdict, address.clone())));
    }
    Ok(None)
}

/// A REQ socket to `server` with the report sent on it; None when it cannot even be sent
/// (once a server has refused our key, libzmq drops the connection and never retries,
/// leaving the message nowhere to go).
fn ask(
    ctx: &zmq::Context,
    server: &Target,
    report: &Report,
    key: &KeyPair,
) -> Result<Option<(zmq::Socket, String)>, Failure> {
    let fail = |e: zmq::Error| Exit::Software.with(format!("ZeroMQ: {e}"));
    let socket = request_socket(ctx, zmq::REQ, server, key)?;
    let address = server.report_endpoint();
    match socket.send_multipart(report.encode(), zmq::DONTWAIT) {
        Ok(()) => Ok(Some((socket, address))),
        Err(zmq::Error::EAGAIN) => Ok(None),
        Err(e) => Err(fail(e)),
    }
}
