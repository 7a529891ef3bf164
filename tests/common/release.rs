//! The previous release, built by `scripts/previous-release` from its tag in a worktree of
//! its own: the tests of upgrades mix its programs and packages with this build's.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use super::Programs;

/// The previous release's worktree, built (once per run: the script does nothing when the
/// test command built it already, and makes concurrent callers take turns).
pub fn previous() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/previous-release");
        let out = Command::new(script).output().unwrap();
        assert!(
            out.status.success(),
            "scripts/previous-release failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
}

impl Programs {
    /// The previous release's programs.
    pub fn previous() -> Programs {
        Programs::in_dir(&previous().join("target/release"))
    }
}

/// Publishes `packages` into the repositories at `repo` with `scripts/release`.
pub fn publish(repo: &Path, packages: &[&Path]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/release");
    let out: Output = Command::new(script)
        .args(packages)
        .env("RELEASE_REPO", repo)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "scripts/release failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The previous release's .deb and .rpm.
pub fn previous_packages() -> [PathBuf; 2] {
    let target = previous().join("target");
    [
        target.join("debian/banshare_0.1.0-1_amd64.deb"),
        target.join("generate-rpm/banshare-0.1.0-1.x86_64.rpm"),
    ]
}
