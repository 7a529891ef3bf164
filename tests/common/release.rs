//! The previous release, built by `scripts/previous-release` from its tag in a worktree of
//! its own: the tests of upgrades mix its programs and packages with this build's.

use std::path::{Path, PathBuf};
use std::process::Command;
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
