//! banshare: the administration tool.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::blocklist;
use crate::cli::{self, AdminArgs, AdminCommand, BansFormat, ControlTarget, ImportArgs};
use crate::config::duration::DurationError;
use crate::config::{AnyConfig, ClientConfig, DEFAULT_CLIENT_SOCKET, DEFAULT_SOCKET};
use crate::exit::{Exit, Failure};
use crate::sockets::control;
use crate::wire::control::{BanView, ClientStatus, Command, ImportSummary, PendingView, Status};
use crate::wire::error::FieldError;
use crate::wire::keys;
use crate::wire::protocol::Bantime;
use crate::wire::protocol::Name;
use crate::{client, server};

pub fn main() -> std::process::ExitCode {
    let args: AdminArgs = cli::parse();
    if let AdminCommand::Report(report) = &args.command {
        return crate::client::report::direct::main(report);
    }
    let exit = match run(args.command) {
        Ok(message) => {
            println!("{message}");
            Exit::Ok
        }
        Err(Failure { exit, message }) => {
            eprintln!("banshare: {message}");
            exit
        }
    };
    exit.into()
}

fn run(command: AdminCommand) -> Result<String, Failure> {
    match command {
        AdminCommand::Report(_) => unreachable!("banshare report speaks as banshare-report"),
        AdminCommand::Keygen { dir, name, force } => {
            // A new directory is the daemons' group's to read, and no one else's.
            let created = !dir.exists();
            if created {
                crate::files::own_dir(&dir, 0o750).map_err(|e| Exit::IoErr.with(e))?;
            }
            let (public, secret) = keys::generate(&dir, &name, force).map_err(|e| {
                let exit = match e {
                    keys::KeyError::Exists(_) | keys::KeyError::BadName(_) => Exit::Usage,
                    keys::KeyError::NoCurve(_) => Exit::Software,
                    keys::KeyError::Unsafe(_) => Exit::Config,
                    _ => Exit::IoErr,
                };
                exit.with(e)
            })?;
            let key = keys::load_public(&public).map_err(|e| Exit::IoErr.with(e))?;
            let made = match created {
                true => format!("created {} (mode 0750); ", dir.display()),
                false => String::new(),
            };
            Ok(format!(
                "{made}wrote {} and {} (fingerprint {})",
                public.display(),
                secret.display(),
                key.fingerprint()
            ))
        }
        AdminCommand::CheckConfig { path } => check_config(&path),
        AdminCommand::Ping {
            config,
            server_key,
            port,
            timeout,
        } => {
            let mut config = ClientConfig::load(&config)?;
            config.server_key = server_key.unwrap_or(config.server_key);
            config.report_port = port.or(config.report_port);
            client::link::ping(&config, timeout)
        }
        AdminCommand::Unban {
            ip,
            origin,
            control,
        } => {
            let socket = control_socket(&control)?;
            let command = match (ip, origin) {
                (_, Some(name)) => {
                    let name = Name::parse("origin", &name).map_err(|e| Exit::DataErr.with(e))?;
                    Command::UnbanOrigin(name.to_string())
                }
                (Some(ip), None) => Command::Unban(ip.parse().map_err(|e| Exit::DataErr.with(e))?),
                (None, None) => return Err(Exit::Usage.with("give an address, or --origin NAME")),
            };
            control::request(&socket, &command)
        }
        AdminCommand::Bans {
            json,
            format,
            pending,
            control,
        } => {
            let socket = control_socket(&control)?;
            let command = if pending {
                Command::Pending
            } else {
                Command::Bans
            };
            let text = control::request(&socket, &command)?;
            let format = if json { BansFormat::Json } else { format };
            match (format, pending) {
                (BansFormat::Json, _) => Ok(text),
                (BansFormat::Plain, false) => {
                    plain(parse::<Vec<BanView>>(&text)?.iter().map(|b| &b.ip))
                }
                (BansFormat::Plain, true) => {
                    plain(parse::<Vec<PendingView>>(&text)?.iter().map(|p| &p.ip))
                }
                (BansFormat::Table, false) => bans_table(&text),
                (BansFormat::Table, true) => pending_table(&text),
                (BansFormat::Nft | BansFormat::Ipset | BansFormat::Csv, true) => Err(Exit::Usage
                    .with("--format nft, ipset and csv list bans, not the reports of --pending")),
                (export, false) => {
                    let bans: Vec<BanView> = parse(&text)?;
                    let now = crate::clock::unix_now();
                    let text = match export {
                        BansFormat::Nft => blocklist::export::nft(&bans, now),
                        BansFormat::Ipset => blocklist::export::ipset(&bans, now),
                        _ => blocklist::export::csv(&bans, now),
                    };
                    Ok(text.trim_end().to_string())
                }
            }
        }
        AdminCommand::Import(args) => import(&args, &control_socket(&args.control)?),
        AdminCommand::Status { json, control } => {
            let socket = control_socket(&control)?;
            let text = control::request(&socket, &Command::Status)?;
            match (json, role(&text)) {
                (true, _) => Ok(text),
                (false, Role::Client) => client_status_text(&text, &socket),
                (false, Role::Server) => status_text(&text),
            }
        }
    }
}

/// The control socket `target` names: `--socket`, the one `--config` gives, or else the
/// server's when this host runs one, and the client's otherwise.
fn control_socket(target: &ControlTarget) -> Result<PathBuf, Failure> {
    if let Some(socket) = &target.socket {
        return Ok(socket.clone());
    }
    if let Some(path) = &target.config {
        return Ok(match AnyConfig::load(path)? {
            AnyConfig::Server(c) => c.control_socket,
            AnyConfig::Client(c) => c.control_socket,
        });
    }
    let server = Path::new(DEFAULT_SOCKET);
    let client = Path::new(DEFAULT_CLIENT_SOCKET);
    Ok(if !server.exists() && client.exists() {
        client
    } else {
        server
    }
    .to_owned())
}

enum Role {
    Server,
    Client,
}

/// Which daemon answered a STATUS: the client says so; a server says so, or nothing.
fn role(text: &str) -> Role {
    #[derive(serde::Deserialize)]
    struct Said {
        #[serde(default)]
        role: String,
    }
    match serde_json::from_str::<Said>(text) {
        Ok(said) if said.role == "client" => Role::Client,
        _ => Role::Server,
    }
}

fn client_status_text(text: &str, socket: &Path) -> Result<String, Failure> {
    let status: ClientStatus = parse(text)?;
    let error = match (&status.last_error, status.last_error_at) {
        (Some(what), at) => format!("{what} at {} UTC", when(at)),
        _ => "none".into(),
    };
    let mut out = format!(
        "banshare-client {}, up {} s (control socket {})\nbackend: {}, last error: {error}\n\
         applied: {} bans, {} unbans; failed: {}; refused for good: {}\ncatch-ups: {}\n\
         spool: {} waiting, {} delivered\nservers:\n",
        status.version,
        status.uptime_seconds,
        socket.display(),
        status.backend,
        status.applied_bans,
        status.applied_unbans,
        status.failed,
        status.refused,
        status.resyncs,
        status.spool,
        status.spool_delivered,
    );
    for server in &status.servers {
        let state = if server.connected {
            "connected"
        } else {
            "NOT CONNECTED"
        };
        let position = match (server.epoch, server.seq) {
            (Some(epoch), Some(seq)) => format!("epoch {epoch}, seq {seq}"),
            _ => "nothing heard yet".into(),
        };
        // A single server is named by its address already.
        let address = match server.name == server.address {
            true => String::new(),
            false => format!(" ({})", server.address),
        };
        out.push_str(&format!(
            "  {:<24} {state} since {} UTC, {position}, lag {}, last heard {:.1} s ago{address}\n",
            server.name,
            when(Some(server.since)),
            server.lag,
            server.seconds_since_heartbeat,
        ));
    }
    Ok(out.trim_end().to_string())
}

/// Requests of `banshare import`: large enough to put a blocklist into every firewall in
/// one batch, small enough that each answer comes well within the control socket's 5 s.
const IMPORT_BATCH: usize = 1000;

/// Bad entries and refusals shown after the summary.
const EXAMPLES: usize = 10;

/// Reads the blocklist, refusing it whole if an entry is bad (unless --skip-invalid), and
/// sends it in batches with a progress bar on a terminal; ends with the summary.
fn import(args: &ImportArgs, socket: &Path) -> Result<String, Failure> {
    let file = &args.file;
    let text = read_list(file)?;
    let bantime = match &args.bantime {
        None => Bantime::Default,
        Some(text) => {
            import_bantime(text).map_err(|e| Exit::Usage.with(format!("--bantime: {e}")))?
        }
    };
    let options = blocklist::Options::import(args.format, bantime, args.min_count);
    let mut list = blocklist::parse(&text, &options);
    if let (Some(first), false) = (list.bad.first(), args.skip_invalid) {
        return Err(Exit::DataErr.with(format!(
            "{}: {} ({} bad entries; nothing imported; --skip-invalid imports the rest)",
            place(file, first.at),
            first.reason,
            list.bad.len()
        )));
    }
    let mut total = ImportSummary::default();
    if let Some(min) = &args.min_prefix {
        list.reports.retain(|report| match min.check(&report.ip) {
            Ok(()) => true,
            Err(too_wide) => {
                refuse(
                    &mut total,
                    "min-prefix",
                    format!("{}: {too_wide} (--min-prefix)", report.ip),
                );
                false
            }
        });
    }
    let bar = indicatif::ProgressBar::new(list.reports.len() as u64);
    for batch in list.reports.chunks(IMPORT_BATCH) {
        let command = Command::Import {
            origin: args.origin.clone(),
            reports: batch.to_vec(),
        };
        let summary: ImportSummary = parse(&control::request(socket, &command)?)?;
        total.accepted += summary.accepted;
        total.duplicate += summary.duplicate;
        for (reason, n) in summary.refused {
            *total.refused.entry(reason).or_default() += n;
        }
        let room = EXAMPLES.saturating_sub(total.examples.len());
        total
            .examples
            .extend(summary.examples.into_iter().take(room));
        bar.inc(batch.len() as u64);
    }
    bar.finish_and_clear();
    Ok(import_text(file, &total, &list))
}

/// The list, at most `blocklist::MAX_LIST_BYTES` of UTF-8.
fn read_list(file: &Path) -> Result<String, Failure> {
    let failed = |e: &dyn std::fmt::Display| Exit::IoErr.with(format!("{}: {e}", file.display()));
    let reader: Box<dyn std::io::Read> = match file.to_str() {
        Some("-") => Box::new(std::io::stdin()),
        _ => Box::new(std::fs::File::open(file).map_err(|e| failed(&e))?),
    };
    let mut bytes = Vec::new();
    reader
        .take(blocklist::MAX_LIST_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| failed(&e))?;
    if bytes.len() as u64 > blocklist::MAX_LIST_BYTES {
        return Err(Exit::DataErr.with(format!(
            "{}: longer than {} MiB, the most banshare import reads",
            file.display(),
            blocklist::MAX_LIST_BYTES >> 20
        )));
    }
    String::from_utf8(bytes).map_err(|e| {
        Exit::DataErr.with(format!(
            "{}: not UTF-8 text (byte {})",
            file.display(),
            e.utf8_error().valid_up_to()
        ))
    })
}

/// `FILE:LINE` for a line, `FILE: entry N` for an element of a JSON array.
fn place(file: &Path, at: blocklist::Place) -> String {
    match at {
        blocklist::Place::Line(n) => format!("{}:{n}", file.display()),
        at => format!("{}: {at}", file.display()),
    }
}

fn refuse(summary: &mut ImportSummary, kind: &str, example: String) {
    *summary.refused.entry(kind.into()).or_default() += 1;
    if summary.examples.len() < EXAMPLES {
        summary.examples.push(example);
    }
}

/// Why `banshare import --bantime` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum ImportBantimeError {
    /// Neither a bantime nor a duration: the duration's reason, as more likely meant.
    #[error(transparent)]
    Duration(#[from] DurationError),
    /// A duration that no report may ask for, such as 0s or more than ten years; the
    /// reason is `Bantime::parse`'s.
    #[error(transparent)]
    OutOfRange(FieldError),
}

/// A bantime as banshare-report takes it, or a duration such as 1d.
fn import_bantime(text: &str) -> Result<Bantime, ImportBantimeError> {
    Bantime::parse(text).or_else(|_| {
        let duration = crate::config::duration::parse(text)?;
        Bantime::parse(&duration.as_secs().to_string()).map_err(ImportBantimeError::OutOfRange)
    })
}

fn import_text(file: &Path, summary: &ImportSummary, list: &blocklist::List) -> String {
    let refused: u64 = summary.refused.values().sum();
    let skipped: usize = list.skipped.values().sum();
    let mut text = format!(
        "imported {}: {} accepted, {} duplicates, {refused} refused",
        file.display(),
        summary.accepted,
        summary.duplicate
    );
    if !summary.refused.is_empty() {
        let reasons: Vec<String> = summary
            .refused
            .iter()
            .map(|(r, n)| format!("{r} {n}"))
            .collect();
        text.push_str(&format!(" ({})", reasons.join(", ")));
    }
    if skipped > 0 {
        let why: Vec<String> = list
            .skipped
            .iter()
            .map(|(r, n)| format!("{r}: {n}"))
            .collect();
        text.push_str(&format!(", {skipped} skipped ({})", why.join(", ")));
    }
    if !list.bad.is_empty() {
        text.push_str(&format!(", {} bad entries skipped", list.bad.len()));
    }
    for example in &summary.examples {
        text.push_str(&format!("\n  refused {example}"));
    }
    for bad in list.bad.iter().take(EXAMPLES) {
        text.push_str(&format!("\n  bad {}: {}", place(file, bad.at), bad.reason));
    }
    text
}

/// The server's JSON answer as the struct both sides share.
fn parse<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, Failure> {
    serde_json::from_str(text)
        .map_err(|e| Exit::Software.with(format!("bad answer from the server: {e}")))
}

/// Unix time as UTC "YYYY-MM-DD HH:MM:SS", or "never".
fn when(unix: Option<u64>) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    unix.and_then(|t| time::OffsetDateTime::from_unix_timestamp(i64::try_from(t).ok()?).ok())
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| "never".into())
}

/// One network per line in the server's order, each once (a network banned in two groups
/// is one line).
fn plain<'a>(networks: impl Iterator<Item = &'a String>) -> Result<String, Failure> {
    let mut seen = std::collections::HashSet::new();
    let lines: Vec<&str> = networks
        .filter(|ip| seen.insert(*ip))
        .map(String::as_str)
        .collect();
    Ok(lines.join("\n"))
}

fn bans_table(text: &str) -> Result<String, Failure> {
    let bans: Vec<BanView> = parse(text)?;
    let row = |cells: [&str; 5]| {
        let line = format!(
            "{:<40} {:<20} {:<16} {:<16} {}",
            cells[0], cells[1], cells[2], cells[3], cells[4]
        );
        line.trim_end().to_string()
    };
    let mut rows = vec![row([
        "ADDRESS",
        "EXPIRES (UTC)",
        "PROG",
        "JAIL",
        "REPORTED BY",
    ])];
    for ban in &bans {
        let expires = when(ban.expires);
        rows.push(row([
            &ban.ip,
            &expires,
            &ban.prog,
            &ban.jail,
            &reported_by(ban),
        ]));
    }
    // A server with groups: each row starts with its ban's group.
    if bans.iter().any(|b| b.group.is_some()) {
        let groups =
            std::iter::once("GROUP").chain(bans.iter().map(|b| b.group.as_deref().unwrap_or("")));
        rows = groups
            .zip(rows)
            .map(|(g, r)| format!("{g:<16} {r}"))
            .collect();
    }
    Ok(rows.join("\n"))
}

/// The reports waiting, one line per network: who reported it, and what it waits for.
fn pending_table(text: &str) -> Result<String, Failure> {
    let sets: Vec<PendingView> = parse(text)?;
    let mut rows = vec![format!(
        "{:<40} {:<10} {}",
        "ADDRESS", "REPORTERS", "WAITING"
    )];
    for set in &sets {
        let reports: Vec<String> = set
            .reports
            .iter()
            .map(|w| {
                let held = if w.held { ", held" } else { "" };
                format!(
                    "{} ({} {}{held}, until {})",
                    w.name,
                    w.prog,
                    w.jail,
                    when(Some(w.until))
                )
            })
            .collect();
        let count = format!("{} of {}", set.reports.len(), set.needed);
        rows.push(format!(
            "{:<40} {:<10} {}",
            set.ip,
            count,
            reports.join("; ")
        ));
    }
    Ok(rows.join("\n"))
}

/// "web1, web2 and 3 more": every host that reported the ban, first reporter first.
fn reported_by(ban: &BanView) -> String {
    let names: Vec<&str> = ban.reporters.iter().map(|r| r.name.as_str()).collect();
    let mut text = names.join(", ");
    if ban.more_reporters > 0 {
        text.push_str(&format!(" and {} more", ban.more_reporters));
    }
    if ban.history.len() > 1 {
        let starters: Vec<&str> = ban.history.iter().map(|e| e.name.as_str()).collect();
        text.push_str(&format!(
            "; banned {} times, by {}",
            ban.history.len(),
            starters.join(", ")
        ));
    }
    text
}

fn status_text(text: &str) -> Result<String, Failure> {
    let status: Status = parse(text)?;
    let counters = serde_json::to_string(&status.counters).expect("JSON of plain structs");
    let mut out = format!(
        "banshare-server {}, up {} s\nepoch {}, seq {}\nactive bans: {}\nnetworks with reports \
         waiting: {}\nauthorized keys: {}\n",
        status.version,
        status.uptime_seconds,
        status.epoch,
        status.seq,
        status.active_bans,
        status.pending,
        status.authorized_keys
    );
    for group in &status.groups {
        let dry_run = if group.dry_run { ", a dry run" } else { "" };
        out.push_str(&format!(
            "group {}{dry_run}: seq {}, {} active bans, {} networks waiting\n",
            group.name, group.seq, group.active_bans, group.pending
        ));
    }
    for feed in &status.feeds {
        let last = feed
            .last_success
            .map_or("never".into(), |at| when(Some(at)));
        let error = feed
            .last_error
            .as_ref()
            .map_or(String::new(), |e| format!("; failing: {e}"));
        out.push_str(&format!(
            "feed {}: {} entries, last fetched {last}, next {}, {} failures{error}\n",
            feed.name,
            feed.entries,
            when(Some(feed.next_fetch)),
            feed.failures
        ));
    }
    out.push_str(&format!("counters: {counters}\nhosts seen:\n"));
    for host in &status.hosts {
        out.push_str(&format!(
            "  {:<24} {} ({} s ago)\n",
            host.name,
            when(Some(host.last_seen)),
            host.seconds_ago
        ));
    }
    if !status.peers.is_empty() {
        out.push_str(
            "peers:
",
        );
    }
    for peer in &status.peers {
        let state = if peer.connected {
            "connected"
        } else {
            "NOT CONNECTED"
        };
        let seq = peer.seq.map_or("-".into(), |s| s.to_string());
        let heard = peer
            .seconds_ago
            .map_or("never heard".into(), |s| format!("heard {s} s ago"));
        let synced = if peer.synced {
            ""
        } else {
            ", not caught up yet"
        };
        out.push_str(&format!(
            "  {:<24} {state}, seq {seq}, {heard}{synced} ({})\n",
            peer.name, peer.address
        ));
    }
    Ok(out.trim_end().to_string())
}

/// Everything a daemon checks before it starts: the file itself and the keys it names.
fn check_config(path: &std::path::Path) -> Result<String, Failure> {
    let config = AnyConfig::load(path)?;
    let (kind, detail) = match config {
        AnyConfig::Server(c) => (
            "server",
            server::check(&c).map_err(|e| Exit::Config.with(e))?,
        ),
        AnyConfig::Client(c) => {
            let key = client::link::own_key(&c)?;
            let servers: Vec<String> = client::link::targets(&c)?
                .iter()
                .map(|t| t.key.fingerprint())
                .collect();
            let noun = if servers.len() == 1 {
                "server key"
            } else {
                "server keys"
            };
            (
                "client",
                format!(
                    "host key {}, {noun} {}",
                    key.public.fingerprint(),
                    servers.join(", ")
                ),
            )
        }
    };
    Ok(format!(
        "{}: OK ({kind} configuration; {detail})",
        path.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(when(Some(0)), "1970-01-01 00:00:00");
        assert_eq!(when(Some(1_767_225_599)), "2025-12-31 23:59:59");
        assert_eq!(when(Some(951_782_400)), "2000-02-29 00:00:00");
        assert_eq!(when(None), "never");
    }

    #[test]
    fn import_bantimes_are_bantimes_or_durations() {
        assert_eq!(import_bantime("600"), Ok(Bantime::Seconds(600)));
        assert_eq!(import_bantime("-1"), Ok(Bantime::Permanent));
        assert_eq!(import_bantime("1d"), Ok(Bantime::Seconds(86400)));
        assert!(matches!(
            import_bantime("5x"),
            Err(ImportBantimeError::Duration(
                DurationError::UnknownUnit { .. }
            ))
        ));
        assert_eq!(
            import_bantime("5x").unwrap_err().to_string(),
            "invalid duration unit \"x\" in \"5x\": use ms, s, m, h, d or w"
        );
        assert!(matches!(
            import_bantime("0s"),
            Err(ImportBantimeError::OutOfRange(_))
        ));
    }
}
