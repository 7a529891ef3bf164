//! The man pages and shell completions of the four programs are generated from their clap
//! definitions and kept in `man/` and `completions/`. This test fails when they are
//! out of date; regenerate them with `BANSHARE_UPDATE_MAN=1 cargo test --test integration manpages::`.
//! And the other metadata that nothing else would check: `rust-version`.

use std::path::Path;

use banshare::cli::{AdminArgs, ClientArgs, ReportArgs, ServerArgs};
use clap::CommandFactory;
use clap_complete::Shell;

fn render(command: clap::Command, section: &str) -> Vec<u8> {
    let mut page = Vec::new();
    clap_mangen::Man::new(command)
        .section(section)
        .manual("banshare")
        .source(format!("banshare {}", env!("CARGO_PKG_VERSION")))
        .render(&mut page)
        .unwrap();
    page
}

/// Writes `page` to `path` when asked to, then checks that the shipped file matches.
fn check(path: &Path, page: &[u8]) {
    if std::env::var_os("BANSHARE_UPDATE_MAN").is_some() {
        std::fs::write(path, page).unwrap();
    }
    let shipped = std::fs::read(path).unwrap_or_default();
    assert!(
        shipped == page,
        "{} is out of date: run BANSHARE_UPDATE_MAN=1 cargo test --test integration manpages::",
        path.display()
    );
}

fn commands() -> [clap::Command; 4] {
    [
        ServerArgs::command(),
        ClientArgs::command(),
        ReportArgs::command(),
        AdminArgs::command(),
    ]
}

#[test]
fn completions_match_the_command_line() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("completions");
    for mut command in commands() {
        let name = command.get_name().to_string();
        for (shell, file) in [
            (Shell::Bash, name.clone()),
            (Shell::Zsh, format!("_{name}")),
            (Shell::Fish, format!("{name}.fish")),
        ] {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut command, &name, &mut script);
            check(&dir.join(file), &script);
        }
    }
}

#[test]
fn man_pages_match_the_command_line() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("man");
    let pages = [
        ("banshare-server.8", render(ServerArgs::command(), "8")),
        ("banshare-client.8", render(ClientArgs::command(), "8")),
        ("banshare-report.1", render(ReportArgs::command(), "1")),
        ("banshare.8", render(AdminArgs::command(), "8")),
    ];
    for (name, page) in pages {
        check(&dir.join(name), &page);
    }
}

/// A Rust version as numbers: "1.88" is 1.88.0.
fn version(text: &str) -> Vec<u64> {
    let mut parts: Vec<u64> = text.split('.').map(|p| p.parse().unwrap()).collect();
    parts.resize(3, 0);
    parts
}

/// Cargo.toml's `rust-version` is the oldest Rust that builds banshare: that of the
/// dependency that needs the newest (clippy's `incompatible_msrv` holds banshare's own code
/// to it). No older toolchain can be fetched here to try.
#[test]
fn rust_version_is_what_the_dependencies_need() {
    let out = std::process::Command::new(env!("CARGO"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["metadata", "--format-version", "1", "--locked", "--offline"])
        .args(["--filter-platform", "x86_64-unknown-linux-gnu"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let used: Vec<&str> = metadata["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    let needed = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| used.contains(&p["id"].as_str().unwrap()) && p["name"] != "banshare")
        .filter_map(|p| Some((version(p["rust_version"].as_str()?), p["name"].to_string())))
        .max()
        .unwrap();
    assert_eq!(
        version(env!("CARGO_PKG_RUST_VERSION")),
        needed.0,
        "rust-version in Cargo.toml must be what {} needs",
        needed.1
    );
}

/// ARCHITECTURE.md is true: every path it names (in backquotes, from the top of the
/// repository) exists, and every folder of `src/` is named in it.
#[test]
fn the_architecture_names_what_is_there_and_every_folder() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    let tops = ["src/", "tests/", "benches/", "fuzz/", "docs/", "scripts/"];
    let named: Vec<&str> = text
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|quoted| tops.iter().any(|top| quoted.starts_with(top)))
        .collect();
    assert!(named.len() > 20, "{named:?}");
    let missing: Vec<&&str> = named.iter().filter(|p| !root.join(p).exists()).collect();
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md names what is not there: {missing:?}"
    );
    let mut folders = vec![root.join("src")];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).unwrap().flatten() {
            if entry.path().is_dir() {
                let path = entry.path();
                let relative = path.strip_prefix(root).unwrap().display().to_string();
                assert!(
                    text.contains(&format!("`{relative}/")),
                    "ARCHITECTURE.md does not name {relative}/"
                );
                folders.push(path);
            }
        }
    }
}

/// debian/changelog is kept from CHANGELOG.md: the same releases, newest first, the first
/// being this version, and no release in one that the other lacks.
#[test]
fn the_changelogs_list_the_same_releases_and_this_version_first() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let ours = std::fs::read_to_string(root.join("CHANGELOG.md")).unwrap();
    let debian = std::fs::read_to_string(root.join("debian/changelog")).unwrap();
    // "## 0.2.0 (not yet released)" and "banshare (0.2.0-1) unstable; urgency=medium".
    let releases: Vec<&str> = ours
        .lines()
        .filter_map(|l| l.strip_prefix("## ")?.split(' ').next())
        .collect();
    let packaged: Vec<&str> = debian
        .lines()
        .filter_map(|l| l.strip_prefix("banshare (")?.split('-').next())
        .collect();
    assert_eq!(
        releases, packaged,
        "CHANGELOG.md and debian/changelog differ"
    );
    assert_eq!(releases.first(), Some(&env!("CARGO_PKG_VERSION")));
}
