//! Where the publish sequence stood when the server last stopped cleanly
//! (`STATE_DIR/position`), so that the next start goes on with the same epoch and seq: its
//! subscribers, having missed nothing, need not page through the whole table again, as
//! 10,000 hosts would all at once after every `systemctl restart` or upgrade. It is taken
//! only while every ban journal is exactly as the server left it (size, time of change,
//! inode); a server that was killed, or whose journals changed while it was down (a backup
//! put back, another version run meanwhile), starts a new epoch, and its subscribers catch
//! up as before. The file is removed at every start, before anything is written, so that
//! it can never outlive the state it describes.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

const FILE: &str = "position";
/// Far more than any server's file: a stream per group, a journal per group.
const MAX_SIZE: u64 = 1 << 20;

/// The epoch, and each stream's group (None without groups) and last seq, in the server's
/// order of groups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub epoch: u64,
    pub streams: Vec<(Option<String>, u64)>,
}

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Saved {
    position: Position,
    journals: Vec<Identity>,
}

/// What tells a journal file changed: a rewrite (compaction, a copy put back) gets a new
/// inode, an append a new size and time.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Identity {
    name: String,
    size: u64,
    changed_ns: i128,
    inode: u64,
}

fn identities(dir: &Path, journals: &[String]) -> std::io::Result<Vec<Identity>> {
    journals
        .iter()
        .map(|name| {
            let meta = std::fs::symlink_metadata(dir.join(name))?;
            Ok(Identity {
                name: name.clone(),
                size: meta.size(),
                changed_ns: i128::from(meta.mtime()) * 1_000_000_000
                    + i128::from(meta.mtime_nsec()),
                inode: meta.ino(),
            })
        })
        .collect()
}

/// At a clean stop, after the journals' last commit and sync.
pub fn save(dir: &Path, position: Position, journals: &[String]) -> std::io::Result<()> {
    let saved = Saved {
        position,
        journals: identities(dir, journals)?,
    };
    let text = serde_json::to_string(&saved).map_err(std::io::Error::other)?;
    let partial = dir.join(format!("{FILE}.partial"));
    let _ = std::fs::remove_file(&partial);
    let mut file = crate::files::create_new(&partial, 0o600)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&partial, dir.join(FILE))
}

/// At start, before the journals are opened: the position to go on from, if the last stop
/// was clean and the journals are as it left them. The file is gone afterwards.
pub fn take(dir: &Path, journals: &[String]) -> Option<Position> {
    let path = dir.join(FILE);
    let data = crate::files::read_regular(&path, MAX_SIZE);
    if let Err(e) = std::fs::remove_file(&path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            log::warn!(
                "cannot remove {}: {e}; starting a new epoch",
                path.display()
            );
            return None;
        }
    }
    let saved: Saved = serde_json::from_slice(&data.ok()?).ok()?;
    let now = identities(dir, journals).ok()?;
    if now != saved.journals {
        log::info!("the ban journals changed since the last clean stop: starting a new epoch");
        return None;
    }
    Some(saved.position)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn position() -> Position {
        Position {
            epoch: 7,
            streams: vec![(None, 12)],
        }
    }

    #[test]
    fn a_clean_stop_is_gone_on_from_once_and_only_while_the_journals_are_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let journals = vec!["bans.journal".to_owned()];
        std::fs::write(dir.path().join("bans.journal"), "format 2\n").unwrap();
        save(dir.path(), position(), &journals).unwrap();
        let mode = std::fs::metadata(dir.path().join(FILE)).unwrap().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(take(dir.path(), &journals), Some(position()));
        assert_eq!(take(dir.path(), &journals), None, "taken once");
        // A journal that grew, or was put back from a copy, while the server was down.
        save(dir.path(), position(), &journals).unwrap();
        let mut journal = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join("bans.journal"))
            .unwrap();
        journal.write_all(b"more\n").unwrap();
        assert_eq!(take(dir.path(), &journals), None);
        save(dir.path(), position(), &journals).unwrap();
        let copy = dir.path().join("copy");
        std::fs::copy(dir.path().join("bans.journal"), &copy).unwrap();
        std::fs::rename(&copy, dir.path().join("bans.journal")).unwrap();
        assert_eq!(take(dir.path(), &journals), None);
        // Nothing saved, or something else there: a new epoch.
        assert_eq!(take(dir.path(), &journals), None);
        std::fs::write(dir.path().join(FILE), "not json").unwrap();
        assert_eq!(take(dir.path(), &journals), None);
        assert!(!dir.path().join(FILE).exists());
    }
}
