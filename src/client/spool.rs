//! Reports that could not reach the server wait here, one file each, until banshare-client
//! delivers them. Files are written under a temporary name and renamed, so the client never
//! reads half a report; names start with the time, so the oldest goes first. The directory
//! must be writable by root (and the daemon's user) only: nothing in it is trusted because
//! of a checksum, which whoever can write there could compute too, but because nobody else
//! can write there; files are read without following symlinks, and only regular files of
//! a few bytes are read at all.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::files;
use crate::wire::error::FieldError;
use crate::wire::protocol::{Report, VERSION};

const SUFFIX: &str = ".report";

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {dir} is full ({1} reports waiting); the report is lost", dir = .0.display())]
    Full(PathBuf, usize),
    #[error("{path}: {1}", path = .0.display())]
    Io(PathBuf, io::Error),
    /// The directory cannot be made, or another user could write to it.
    #[error("{0}; the report is lost")]
    Unsafe(String),
}

pub struct Spool {
    dir: PathBuf,
    max: usize,
}

impl Spool {
    pub fn new(dir: &Path, max: usize) -> Spool {
        Spool {
            dir: dir.to_owned(),
            max,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// How many reports it holds at most.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Writes one report atomically and returns its file.
    pub fn put(&self, report: &Report) -> Result<PathBuf, SpoolError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |e| SpoolError::Io(path, e)
        };
        files::own_dir(&self.dir, 0o750).map_err(|e| SpoolError::Unsafe(e.to_string()))?;
        let waiting = self.waiting().map_err(io(&self.dir))?.len();
        if waiting >= self.max {
            return Err(SpoolError::Full(self.dir.clone(), self.max));
        }
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let name = format!("{nanos:020}-{:010}", std::process::id());
        let path = self.dir.join(format!("{name}{SUFFIX}"));
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let mut file = files::create_new(&tmp, 0o640).map_err(io(&tmp))?;
        let written = file
            .write_all(encode(report).as_bytes())
            .and_then(|()| file.sync_all())
            .and_then(|()| fs::rename(&tmp, &path));
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written.map_err(io(&path))?;
        Ok(path)
    }

    /// Waiting reports, oldest first.
    pub fn waiting(&self) -> io::Result<Vec<PathBuf>> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.to_string_lossy().ends_with(SUFFIX))
            .collect();
        files.sort();
        Ok(files)
    }
}

/// One field per line: the protocol version, then the report's fields (see
/// `Report::fields`).
fn encode(report: &Report) -> String {
    let [prog, jail, ip, bantime] = report.fields();
    format!("{VERSION}\n{prog}\n{jail}\n{ip}\n{bantime}\n")
}

/// The largest spool file read: a real one is under 300 bytes.
const MAX_FILE: u64 = 4096;

/// Why a spool file was set aside rather than sent.
#[derive(Debug, thiserror::Error)]
pub enum SetAside {
    #[error(transparent)]
    Unreadable(#[from] io::Error),
    #[error("not text")]
    NotText,
    #[error("not a spooled banshare report")]
    NotAReport,
    /// A field the wire would refuse, with the wire's reason.
    #[error(transparent)]
    Field(#[from] FieldError),
}

/// Reads a spooled report back, checking every field again.
pub fn read(path: &Path) -> Result<Report, SetAside> {
    let data = files::read_regular(path, MAX_FILE)?;
    let text = String::from_utf8(data).map_err(|_| SetAside::NotText)?;
    let fields: Vec<&str> = text.split('\n').collect();
    match fields[..] {
        [VERSION, prog, jail, ip, bantime, ""] => Ok(Report::parse(prog, jail, ip, bantime)?),
        _ => Err(SetAside::NotAReport),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_round_trip_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::new(&dir.path().join("spool"), 10);
        let first = Report::parse("fail2ban", "sshd", "203.0.113.7", "").unwrap();
        let second = Report::parse("psad", "psad", "2001:db8::/64", "-1").unwrap();
        spool.put(&first).unwrap();
        spool.put(&second).unwrap();
        let waiting = spool.waiting().unwrap();
        assert_eq!(waiting.len(), 2);
        assert_eq!(read(&waiting[0]).unwrap(), first);
        assert_eq!(read(&waiting[1]).unwrap(), second);
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&waiting[0]).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
    }

    #[test]
    fn a_full_spool_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::new(dir.path(), 1);
        let report = Report::parse("fail2ban", "sshd", "203.0.113.7", "").unwrap();
        spool.put(&report).unwrap();
        assert!(matches!(spool.put(&report), Err(SpoolError::Full(_, 1))));
    }

    #[test]
    fn links_fifos_and_endless_files_are_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("1.report");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        assert!(read(&link).is_err());
        let fifo = dir.path().join("2.report");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert!(read(&fifo).is_err());
        let big = dir.path().join("3.report");
        fs::write(&big, "x".repeat(10_000)).unwrap();
        assert!(read(&big).is_err());
    }

    #[test]
    fn a_spool_others_can_write_to_is_not_used() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
        let report = Report::parse("fail2ban", "sshd", "203.0.113.7", "").unwrap();
        let err = Spool::new(dir.path(), 10).put(&report).unwrap_err();
        assert!(err.to_string().contains("chmod go-w"), "{err}");
    }

    #[test]
    fn tampered_files_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.report");
        fs::write(&path, "BANSHARE1\nfail2ban\nsshd;reboot\n203.0.113.7\n\n").unwrap();
        assert!(read(&path).is_err());
        fs::write(&path, "garbage").unwrap();
        assert!(read(&path).is_err());
    }
}
