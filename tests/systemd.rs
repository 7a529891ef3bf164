//! The systemd units: they pass `systemd-analyze verify` without a single warning, and their
//! sandboxing scores within the limits (server ≤ 2.0, client ≤ 4.5, lower is safer).

use crate::common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::*;

fn unit(name: &str) -> String {
    fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("systemd")
            .join(name),
    )
    .unwrap()
}

#[test]
fn units_verify_without_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    for name in ["banshare-server.service", "banshare-client.service"] {
        // The binaries are not installed on the build machine: point the unit at the ones
        // just built. Everything else is checked as shipped.
        let text = unit(name)
            .replace("/usr/bin/banshare-server", SERVER)
            .replace("/usr/bin/banshare-client", CLIENT)
            .replace("/usr/bin/banshare ", &format!("{ADMIN} "));
        let path = dir.path().join(name);
        fs::write(&path, text).unwrap();
        paths.push(path);
    }
    // Documentation= names man pages: let man find the ones the package ships.
    let man = dir.path().join("man");
    let pages = Path::new(env!("CARGO_MANIFEST_DIR")).join("man");
    for page in fs::read_dir(pages).unwrap().flatten() {
        let name = page.file_name().to_string_lossy().into_owned();
        let section = man.join(format!("man{}", name.rsplit('.').next().unwrap()));
        fs::create_dir_all(&section).unwrap();
        fs::copy(page.path(), section.join(&name)).unwrap();
    }
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=yes"])
        .args(&paths)
        .env("MANPATH", &man)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "{stderr}");
}

fn exposure(name: &str) -> f64 {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("systemd")
        .join(name);
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no score in {text}"));
    let score = line
        .split(':')
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    eprintln!("{name}: exposure {score}");
    score.parse().unwrap()
}

#[test]
fn sandboxing_scores_within_limits() {
    assert!(exposure("banshare-server.service") <= 2.0);
    assert!(exposure("banshare-client.service") <= 4.5);
}
