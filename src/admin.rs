//! banshare: the administration tool.

use crate::cli::{self, AdminArgs, AdminCommand};
use crate::config::{AnyConfig, ClientConfig};
use crate::exit::{Exit, Failure};
use crate::wire::control::{self, Command};
use crate::wire::keys;
use crate::{client, server};

pub fn main() -> std::process::ExitCode {
    let args: AdminArgs = cli::parse();
    let exit = match run(args.command) {
        Ok(message) => {
            println!("{message}");
            Exit::Ok
        }
        Err((exit, message)) => {
            eprintln!("banshare: {message}");
            exit
        }
    };
    exit.into()
}

fn run(command: AdminCommand) -> Result<String, Failure> {
    match command {
        AdminCommand::Keygen { dir, name, force } => {
            let (public, secret) = keys::generate(&dir, &name, force).map_err(|e| {
                let exit = match e {
                    keys::KeyError::Exists(_) | keys::KeyError::BadName(_) => Exit::Usage,
                    keys::KeyError::NoCurve(_) => Exit::Software,
                    _ => Exit::IoErr,
                };
                (exit, e.to_string())
            })?;
            let key = keys::load_public(&public).map_err(|e| (Exit::IoErr, e.to_string()))?;
            Ok(format!(
                "wrote {} and {} (fingerprint {})",
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
            let mut config =
                ClientConfig::load(&config).map_err(|e| (Exit::Config, e.to_string()))?;
            config.server_key = server_key.unwrap_or(config.server_key);
            config.report_port = port.unwrap_or(config.report_port);
            client::ping(&config, timeout)
        }
        AdminCommand::Unban { ip, socket } => {
            let ip = ip.parse().map_err(|e| (Exit::DataErr, e))?;
            control::request(&socket, &Command::Unban(ip))
        }
        AdminCommand::Bans { json, socket } => {
            let text = control::request(&socket, &Command::Bans)?;
            if json {
                Ok(text)
            } else {
                bans_table(&text)
            }
        }
        AdminCommand::Status { json, socket } => {
            let text = control::request(&socket, &Command::Status)?;
            if json {
                Ok(text)
            } else {
                status_text(&text)
            }
        }
    }
}

fn parse_json(text: &str) -> Result<serde_json::Value, Failure> {
    serde_json::from_str(text)
        .map_err(|e| (Exit::Software, format!("bad answer from the server: {e}")))
}

/// Unix time as UTC "YYYY-MM-DD HH:MM:SS", or "never".
fn when(value: &serde_json::Value) -> String {
    match value.as_u64() {
        Some(t) => {
            let (days, secs) = (t / 86400, t % 86400);
            let (y, m, d) = civil_from_days(days as i64);
            format!(
                "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
                secs / 3600,
                secs / 60 % 60,
                secs % 60
            )
        }
        None => "never".into(),
    }
}

/// Days since 1970-01-01 to a calendar date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn bans_table(text: &str) -> Result<String, Failure> {
    let bans = parse_json(text)?;
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
    for ban in bans.as_array().into_iter().flatten() {
        let field = |name: &str| ban[name].as_str().unwrap_or("?").to_string();
        let expires = when(&ban["expires"]);
        let (ip, prog, jail) = (field("ip"), field("prog"), field("jail"));
        rows.push(row([&ip, &expires, &prog, &jail, &reported_by(ban)]));
    }
    Ok(rows.join("\n"))
}

/// "web1, web2 and 3 more": every host that reported the ban, first reporter first.
fn reported_by(ban: &serde_json::Value) -> String {
    let names: Vec<&str> = ban["reporters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["name"].as_str())
        .collect();
    let mut text = names.join(", ");
    match ban["more_reporters"].as_u64() {
        Some(more) if more > 0 => text.push_str(&format!(" and {more} more")),
        _ => {}
    }
    text
}

fn status_text(text: &str) -> Result<String, Failure> {
    let status = parse_json(text)?;
    let mut out = format!(
        "banshare-server {}, up {} s\nepoch {}, seq {}\nactive bans: {}\nauthorized keys: {}\n",
        status["version"].as_str().unwrap_or("?"),
        status["uptime_seconds"],
        status["epoch"],
        status["seq"],
        status["active_bans"],
        status["authorized_keys"]
    );
    out.push_str(&format!("counters: {}\nhosts seen:\n", status["counters"]));
    for host in status["hosts"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  {:<24} {} ({} s ago)\n",
            host["name"].as_str().unwrap_or("?"),
            when(&host["last_seen"]),
            host["seconds_ago"]
        ));
    }
    Ok(out.trim_end().to_string())
}

/// Everything a daemon checks before it starts: the file itself and the keys it names.
fn check_config(path: &std::path::Path) -> Result<String, Failure> {
    let config = AnyConfig::load(path).map_err(|e| (Exit::Config, e.to_string()))?;
    let (kind, detail) = match config {
        AnyConfig::Server(c) => ("server", server::check(&c).map_err(|e| (Exit::Config, e))?),
        AnyConfig::Client(c) => {
            let (server_key, key) = client::load_keys(&c)?;
            (
                "client",
                format!(
                    "host key {}, server key {}",
                    key.public.fingerprint(),
                    server_key.fingerprint()
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
        assert_eq!(when(&serde_json::json!(0)), "1970-01-01 00:00:00");
        assert_eq!(
            when(&serde_json::json!(1_767_225_599)),
            "2025-12-31 23:59:59"
        );
        assert_eq!(when(&serde_json::json!(951_782_400)), "2000-02-29 00:00:00");
        assert_eq!(when(&serde_json::Value::Null), "never");
    }
}
