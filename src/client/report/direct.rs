//! `banshare report`: the report sent over CURVE by this process itself, to the first of
//! the servers that answers. banshare-report runs it when no banshare-client takes the
//! report (`super`).

use std::time::Instant;

use crate::cli::ReportArgs;
use crate::client::link::{own_key, request_socket, targets};
use crate::config::ClientConfig;
use crate::exit::{Exit, Failure};
use crate::schedule::{Schedule, Step};
use crate::sockets::request::{Asked, Requester};
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
    let servers = targets(&config)?;
    let timeout = config.report_timeout.0;
    let schedule = Schedule::each_once(servers.len(), spread(), timeout, started);
    let Some((verdict, address)) = exchange(&servers, &report, &key, schedule)? else {
        let addresses: Vec<String> = servers.iter().map(Target::report_endpoint).collect();
        let why = super::no_answer(&addresses.join(", "), timeout);
        return Err(super::spool(&config, &report, &why));
    };
    super::outcome(&report, verdict, &address, started)
}

/// A number that differs from one run to the next, to pick the first server, so that the
/// fleet's reporters spread over the servers rather than all wait on the first: the process
/// id alone steps by the same few numbers when a script reports in a loop.
pub fn spread() -> usize {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    (nanos / 1000) as usize ^ std::process::id() as usize
}

/// The first verdict any server gives before `schedule` gives up, and whose it is; None
/// when no answer came. A server that refuses our key answers nothing at all, so "no
/// answer" is all we can say.
fn exchange(
    servers: &[Target],
    report: &Report,
    key: &KeyPair,
    mut schedule: Schedule,
) -> Result<Option<(Verdict, String)>, Failure> {
    let fail = |e: zmq::Error| Exit::Software.with(format!("ZeroMQ: {e}"));
    let ctx = zmq::Context::new();
    let request = report.encode();
    let mut asked = Asked::default();
    loop {
        let now = Instant::now();
        let until = match schedule.step(now) {
            Step::GiveUp => return Ok(None),
            Step::Ask { server, alone } => {
                let socket = request_socket(&ctx, zmq::DEALER, &servers[server], key)?;
                if !asked.send(server, Requester::new(&ctx, socket), &request, alone) {
                    schedule.unsent(now);
                }
                continue;
            }
            Step::WaitUntil(until) => until,
        };
        let wait = until.saturating_duration_since(now);
        let mut items: Vec<zmq::PollItem> = asked.poll_items().collect();
        zmq::poll(&mut items, wait.as_millis() as i64).map_err(fail)?;
        if let Some(answer) = asked.answer() {
            let address = servers[answer.server].report_endpoint();
            let verdict = Verdict::decode(&answer.frames)
                .map_err(|e| Exit::Unavailable.with(format!("bad reply from {address}: {e}")))?;
            return Ok(Some((verdict, address)));
        }
    }
}
