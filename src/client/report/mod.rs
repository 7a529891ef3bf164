//! banshare-report: sends one ban to the server, or to the first of several that answers,
//! and exits with a sysexits code. Run by fail2ban's actionban and psad's
//! EXTERNAL_BLOCK_SCRIPT, so it must be quick and say clearly, in one line, why it failed.
//!
//! When banshare-client runs on the host, the report is handed to it over its local
//! `report-socket`, and it sends the report on CURVE connections it already holds. This
//! program then never calls libzmq, so it is not even linked with it: loading libzmq and
//! what Debian's build of it pulls in (Kerberos, PGM, NORM, the C++ runtime) and a CURVE
//! handshake are most of a direct report's time (docs/performance.md, P2). When the client
//! is not there, or not for this key, `banshare report` (`direct`) reports as before.

pub mod direct;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

use crate::cli::{self, ReportArgs};
use crate::client::spool::Spool;
use crate::config::ClientConfig;
use crate::exit::{Exit, Failure};
use crate::sockets::transport::endpoint;
use crate::wire::handoff::{self, Handed, Handoff, Route, MAX_LINE};
use crate::wire::keys::{self, KeyError};
use crate::wire::protocol::{Report, Verdict};

/// How much longer than the client's own deadline the reporter waits for its answer.
const GRACE: Duration = Duration::from_millis(500);

pub fn main() -> std::process::ExitCode {
    let args: ReportArgs = cli::parse();
    finish(&args, run(&args))
}

/// Prints what happened, as a one-line error or, with --verbose, on success too.
pub fn finish(args: &ReportArgs, outcome: Result<String, Failure>) -> std::process::ExitCode {
    let exit = match outcome {
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
    let report = parse(args)?;
    let config = ClientConfig::load(&args.config)?;
    let timeout = config.report_timeout.0;
    match hand_over(&config, &report, started + timeout) {
        Some(Handed::Verdict { frames, server }) => {
            let verdict = Verdict::decode(&handoff::frames(&frames))
                .map_err(|e| Exit::Unavailable.with(format!("bad reply from {server}: {e}")))?;
            let by = format!("{server} through banshare-client");
            outcome(&report, verdict, &by, started)
        }
        Some(Handed::NoAnswer { servers }) => {
            Err(spool(&config, &report, &no_answer(&servers, timeout)))
        }
        Some(Handed::Direct { .. }) | None => Err(report_directly(args, &config, &report)),
    }
}

pub fn parse(args: &ReportArgs) -> Result<Report, Failure> {
    let bantime = args.bantime.as_deref().unwrap_or("");
    Report::parse(&args.prog, &args.jail, &args.ip, bantime).map_err(|e| Exit::DataErr.with(e))
}

/// The exit code and the line for a server's verdict.
pub fn outcome(
    report: &Report,
    verdict: Verdict,
    by: &str,
    started: Instant,
) -> Result<String, Failure> {
    let elapsed = started.elapsed().as_secs_f64() * 1000.0;
    match verdict {
        // Pending is no failure: the server holds the report (README "Policies").
        Verdict::Accepted | Verdict::Duplicate | Verdict::Pending(_) => Ok(format!(
            "{} {verdict} by {by} in {elapsed:.1} ms",
            report.ip
        )),
        Verdict::Invalid(_) => Err(Exit::DataErr.with(format!("{} {verdict}", report.ip))),
        Verdict::Refused(_) => Err(Exit::NoPerm.with(format!("{} {verdict}", report.ip))),
    }
}

/// The client's answer, or None when no client takes the report here: no socket, one we
/// may not use, or a client that closed it without an answer. A client that says nothing
/// until past its deadline counts as no answer from the servers: it may well have sent the
/// report, and reporting it again directly would take twice the time fail2ban allowed.
fn hand_over(config: &ClientConfig, report: &Report, deadline: Instant) -> Option<Handed> {
    if config.report_socket.as_os_str().is_empty() {
        return None;
    }
    let route = route(config).ok()?;
    let mut stream = UnixStream::connect(&config.report_socket).ok()?;
    let left = deadline.saturating_duration_since(Instant::now());
    let request = Handoff {
        report: handoff::texts(&report.encode()),
        route,
        timeout_ms: left.as_millis() as u64,
    };
    stream.set_write_timeout(Some(left + GRACE)).ok()?;
    stream.set_read_timeout(Some(left + GRACE)).ok()?;
    stream.write_all(&handoff::encode(&request)).ok()?;
    let mut line = Vec::new();
    let mut reader = BufReader::new(stream).take(MAX_LINE as u64 + 1);
    match reader.read_until(b'\n', &mut line) {
        Ok(_) => handoff::decode(&line).ok(),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Some(Handed::NoAnswer {
                servers: format!("banshare-client at {}", config.report_socket.display()),
            })
        }
        Err(_) => None,
    }
}

/// The keys client.toml names, as the handoff compares them: a key file that cannot be
/// read is for `banshare report` to explain.
fn route(config: &ClientConfig) -> Result<Route, KeyError> {
    let own = keys::load_public(&config.key)?;
    let servers = config.targets().into_iter().map(|spec| {
        let key = keys::load_public(&spec.key)?;
        Ok((endpoint(&spec.address, spec.report_port), key))
    });
    Ok(Route::new(
        &own,
        servers.collect::<Result<Vec<_>, KeyError>>()?,
    ))
}

/// Replaces this process with `banshare report`, which reports over CURVE itself. Only
/// arguments already checked by `Report::parse` are passed, after `--`.
fn report_directly(args: &ReportArgs, config: &ClientConfig, report: &Report) -> Failure {
    let program = match std::env::current_exe() {
        Ok(me) => me.with_file_name("banshare"),
        Err(e) => return spool(config, report, &format!("cannot find banshare: {e}")),
    };
    let mut command = std::process::Command::new(&program);
    command.arg("report").arg("--config").arg(&args.config);
    if args.verbose {
        command.arg("--verbose");
    }
    if let Some(bantime) = &args.bantime {
        command.arg(format!("--bantime={bantime}"));
    }
    command.arg("--").args([&args.prog, &args.jail, &args.ip]);
    let e = command.exec();
    spool(
        config,
        report,
        &format!("cannot run {}: {e}", program.display()),
    )
}

pub fn no_answer(address: &str, timeout: Duration) -> String {
    format!(
        "no answer from {address} within {} s (server down, wrong server key, or this host's \
         key not authorized)",
        timeout.as_secs_f64()
    )
}

/// Leaves the report for banshare-client, which delivers it as soon as a server answers
/// again.
pub fn spool(config: &ClientConfig, report: &Report, why: &str) -> Failure {
    match Spool::new(&config.spool_dir, config.spool_max).put(report) {
        Ok(path) => Exit::TempFail.with(format!(
            "{why}; spooled as {} for banshare-client to deliver",
            path.display()
        )),
        Err(e) => Exit::Unavailable.with(format!("{why}; {e}")),
    }
}
