//! banshare-report: sends one ban to the server and exits with a sysexits code. Run by
//! fail2ban's actionban and psad's EXTERNAL_BLOCK_SCRIPT, so it must be quick and say
//! clearly, in one line, why it failed.

use std::time::{Duration, Instant};

use crate::cli::{self, ReportArgs};
use crate::client::link::load_keys;
use crate::client::spool::Spool;
use crate::config::ClientConfig;
use crate::exit::{Exit, Failure};
use crate::wire::keys::{KeyPair, PublicKey};
use crate::wire::protocol::{Report, Verdict};
use crate::wire::transport::{self, endpoint};

pub fn main() -> std::process::ExitCode {
    let args: ReportArgs = cli::parse();
    let exit = match run(&args) {
        Ok(message) => {
            if args.verbose {
                eprintln!("banshare-report: {message}");
            }
            Exit::Ok
        }
        Err(Failure { exit, message }) => {
            eprintln!("banshare-report: {message}");
            exit
        }
    };
    exit.into()
}

fn run(args: &ReportArgs) -> Result<String, Failure> {
    let started = Instant::now();
    let report = Report::parse(
        &args.prog,
        &args.jail,
        &args.ip,
        args.bantime.as_deref().unwrap_or(""),
    )
    .map_err(|e| Exit::DataErr.with(e))?;
    let config = ClientConfig::load(&args.config)?;
    transport::require_curve().map_err(|e| Exit::Software.with(e))?;
    let (server_key, key) = load_keys(&config)?;
    let address = endpoint(&config.server, config.report_port);
    let timeout = config.report_timeout.0;
    let verdict = match exchange(&address, &report, &server_key, &key, started + timeout) {
        Ok(verdict) => verdict,
        Err(Some(failure)) => return Err(failure),
        Err(None) => return Err(spool(&config, &report, &address, timeout)),
    };
    let elapsed = started.elapsed().as_secs_f64() * 1000.0;
    match verdict {
        Verdict::Accepted | Verdict::Duplicate => Ok(format!(
            "{} {verdict} by {address} in {elapsed:.1} ms",
            report.ip
        )),
        Verdict::Invalid(_) => Err(Exit::DataErr.with(format!("{} {verdict}", report.ip))),
        Verdict::Refused(_) => Err(Exit::NoPerm.with(format!("{} {verdict}", report.ip))),
    }
}

/// No answer in time: leave the report for banshare-client, which delivers it as soon as
/// the server answers again.
fn spool(config: &ClientConfig, report: &Report, address: &str, timeout: Duration) -> Failure {
    let why = format!(
        "no answer from {address} within {} s (server down, wrong server key, or this host's \
         key not authorized)",
        timeout.as_secs_f64()
    );
    match Spool::new(&config.spool_dir, config.spool_max).put(report) {
        Ok(path) => Exit::TempFail.with(format!(
            "{why}; spooled as {} for banshare-client to deliver",
            path.display()
        )),
        Err(e) => Exit::Unavailable.with(format!("{why}; {e}")),
    }
}

/// One request and its reply, within the deadline; `Err(None)` when no answer came. A
/// server that refuses our key answers nothing at all, so "no answer" is all we can say.
fn exchange(
    address: &str,
    report: &Report,
    server_key: &PublicKey,
    key: &KeyPair,
    deadline: Instant,
) -> Result<Verdict, Option<Failure>> {
    let fail = |e: zmq::Error| Some(Exit::Software.with(format!("ZeroMQ: {e}")));
    let ctx = zmq::Context::new();
    let socket = transport::client_socket(&ctx, zmq::REQ, server_key, key).map_err(fail)?;
    socket
        .connect(address)
        .map_err(|e| Some(Exit::Config.with(format!("cannot connect to {address}: {e}"))))?;
    // A send can block for good: once the server has refused our key, libzmq drops the
    // connection and never retries, leaving the message nowhere to go.
    let send_limit = deadline
        .saturating_duration_since(Instant::now())
        .as_millis();
    socket
        .set_sndtimeo(send_limit.max(1) as i32)
        .map_err(fail)?;
    match socket.send_multipart(report.encode(), 0) {
        Ok(()) => {}
        Err(zmq::Error::EAGAIN) => return Err(None),
        Err(e) => return Err(fail(e)),
    }
    let wait = deadline.saturating_duration_since(Instant::now());
    if socket
        .poll(zmq::POLLIN, wait.as_millis() as i64)
        .map_err(fail)?
        == 0
    {
        return Err(None);
    }
    let frames = socket.recv_multipart(0).map_err(fail)?;
    Verdict::decode(&frames)
        .map_err(|e| Some(Exit::Unavailable.with(format!("bad reply from {address}: {e}"))))
}
