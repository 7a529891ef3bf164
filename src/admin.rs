//! banshare: the administration tool.

use crate::cli::{self, AdminArgs, AdminCommand};
use crate::config::AnyConfig;
use crate::exit::{Exit, Failure};
use crate::{client, keys, server};

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
    }
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
