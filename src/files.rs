//! Local files that a less privileged local user might tamper with. The client runs as root,
//! so a symlink planted where it writes would make it overwrite a file of the planter's
//! choosing, and a config or key file that another user can change hands that user the
//! fleet. So:
//! - files in the daemons' own directories (journals, locks, spool) are opened without
//!   following symlinks and must be regular files, read with a size limit and without
//!   blocking (a FIFO in the spool must not stall the client, /dev/zero must not fill it);
//! - a directory a daemon writes to, and the configs and keys it trusts, must not be
//!   writable by any user but root and the daemon's own, or the daemon refuses to start and
//!   says which `chmod` or `chown` fixes it. Refusing rather than warning: whoever can
//!   write client.toml chooses the command the root client runs, and whoever can write the
//!   authorized-keys directory lets any key in.

use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use crate::exit::{Exit, Failure};

/// Opens a file for reading without following a symlink or blocking on a FIFO, and
/// refuses anything but a regular file.
pub fn open_regular(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK).bits())
        .open(path)?;
    regular(file)
}

/// Reads a whole file opened with `open_regular`, refusing one larger than `max` bytes.
pub fn read_regular(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    let mut data = Vec::new();
    open_regular(path)?.take(max + 1).read_to_end(&mut data)?;
    if data.len() as u64 > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {max} bytes"),
        ));
    }
    Ok(data)
}

/// Creates a file that must not exist yet, not even as a symlink, with `mode`.
pub fn create_new(path: &Path, mode: u32) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(OFlag::O_NOFOLLOW.bits())
        .open(path)
}

/// Opens a regular file for writing, creating it with `mode` if it is missing, without
/// following a symlink; `append` appends, otherwise writes start at the beginning.
pub fn open_writable(path: &Path, mode: u32, append: bool) -> io::Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .append(append)
        .create(true)
        .truncate(false)
        .mode(mode)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK).bits())
        .open(path)?;
    regular(file)
}

fn regular(file: File) -> io::Result<File> {
    if file.metadata()?.is_file() {
        Ok(file)
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ))
    }
}

/// Why a directory a daemon writes to, or a file it trusts, was refused; each but `Io`
/// says the `chmod` or `chown` that fixes it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileCheckError {
    /// It could not be made, found or looked at.
    #[error("{shown}: {error}", shown = path.display())]
    Io { path: PathBuf, error: IoFailure },
    #[error("{shown} is not a directory", shown = .0.display())]
    NotADirectory(PathBuf),
    /// It belongs to `owner`, neither root nor `user`, the one this process runs as.
    #[error(
        "{shown} belongs to user {owner}, who could change it; fix it with: chown {user} {shown}",
        shown = path.display()
    )]
    ForeignOwner {
        path: PathBuf,
        owner: String,
        user: String,
    },
    /// Its group (other than root's) or everyone may write it.
    #[error(
        "{shown} is writable by other users (mode {mode:04o}); fix it with: chmod go-w {shown}",
        shown = path.display()
    )]
    Writable { path: PathBuf, mode: u32 },
}

/// An I/O error as its kind and text, so that errors holding one stay `Clone` and `Eq`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text}")]
pub struct IoFailure {
    pub kind: io::ErrorKind,
    pub text: String,
}

impl From<io::Error> for IoFailure {
    fn from(e: io::Error) -> IoFailure {
        IoFailure {
            kind: e.kind(),
            text: e.to_string(),
        }
    }
}

impl FileCheckError {
    /// For `map_err`: an I/O error about `path`.
    fn io(path: &Path) -> impl FnOnce(io::Error) -> FileCheckError + '_ {
        move |e| FileCheckError::Io {
            path: path.to_owned(),
            error: e.into(),
        }
    }
}

/// Binds a local socket at `path` with `bind`, replacing a stale socket file from an
/// earlier run, in a directory only root (and the daemon's own user) may write: whoever
/// could write there could put a socket of their own in place of ours. The file is born
/// with `mode`, with no moment of looser permissions. `what` names the socket in errors.
pub fn bind_socket<T>(
    what: &str,
    path: &Path,
    mode: u32,
    bind: impl FnOnce() -> Result<T, String>,
) -> Result<T, Failure> {
    let fail = |e: String| Exit::Unavailable.with(format!("{what} {}: {e}", path.display()));
    if let Some(dir) = path.parent() {
        own_dir(dir, 0o750).map_err(|e| Exit::Config.with(e))?;
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(fail(e.to_string())),
        _ => {}
    }
    let umask = nix::sys::stat::umask(Mode::from_bits_truncate(!mode & 0o777));
    let bound = bind();
    nix::sys::stat::umask(umask);
    let socket = bound.map_err(fail)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| fail(e.to_string()))?;
    Ok(socket)
}

/// Creates a directory that a daemon writes to, if missing, with `mode`, and refuses it
/// when another user could put files there.
pub fn own_dir(dir: &Path, mode: u32) -> Result<(), FileCheckError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .map_err(FileCheckError::io(dir))?;
    check_own_dir(dir)
}

/// Refuses a directory that a daemon writes to when another user could put files there.
pub fn check_own_dir(dir: &Path) -> Result<(), FileCheckError> {
    let meta = std::fs::metadata(dir).map_err(FileCheckError::io(dir))?;
    if !meta.is_dir() {
        return Err(FileCheckError::NotADirectory(dir.to_owned()));
    }
    check_meta(dir, &meta, false)
}

/// Refuses a config file, key file or key directory that another user could change: the
/// path itself, and the directory holding it, where another user could replace it (unless
/// that directory is sticky, as /tmp is, so that only a file's owner may replace it).
/// Symlinks are followed: an admin may link a key into place.
pub fn check_trusted(path: &Path) -> Result<(), FileCheckError> {
    // I/O errors name the path as given, which the admin knows.
    let real = path.canonicalize().map_err(FileCheckError::io(path))?;
    let meta = real.metadata().map_err(FileCheckError::io(path))?;
    check_meta(&real, &meta, false)?;
    match real.parent() {
        Some(dir) => {
            let dir_meta = dir.metadata().map_err(FileCheckError::io(path))?;
            check_meta(dir, &dir_meta, true)
        }
        None => Ok(()),
    }
}

const STICKY: u32 = 0o1000;

/// Who may write `path` besides root and this process's user, with the fix.
fn check_meta(path: &Path, meta: &Metadata, sticky_ok: bool) -> Result<(), FileCheckError> {
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != 0 && meta.uid() != me {
        return Err(FileCheckError::ForeignOwner {
            path: path.to_owned(),
            owner: user_name(meta.uid()),
            user: user_name(me),
        });
    }
    let mode = meta.mode() & 0o7777;
    let group_writes = mode & 0o020 != 0 && meta.gid() != 0;
    let others_write = mode & 0o002 != 0;
    if (group_writes || others_write) && !(sticky_ok && mode & STICKY != 0) {
        return Err(FileCheckError::Writable {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

fn user_name(uid: u32) -> String {
    match nix::unistd::User::from_uid(uid.into()) {
        Ok(Some(user)) => user.name,
        _ => uid.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    fn chmod(path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn symlinks_fifos_and_devices_are_not_opened() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink("/etc/passwd", &link).unwrap();
        assert!(open_regular(&link).is_err());
        assert!(open_writable(&link, 0o600, true).is_err());
        assert!(create_new(&link, 0o600).is_err());
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        // Does not block, and is refused.
        assert!(open_regular(&fifo).is_err());
        assert!(open_regular(Path::new("/dev/zero")).is_err());
        let file = dir.path().join("file");
        fs::write(&file, "x".repeat(100)).unwrap();
        assert_eq!(read_regular(&file, 100).unwrap().len(), 100);
        assert!(read_regular(&file, 99).is_err());
    }

    #[test]
    fn directories_and_files_others_can_write_are_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        chmod(dir.path(), 0o750);
        check_own_dir(dir.path()).unwrap();
        chmod(dir.path(), 0o777);
        let err = check_own_dir(dir.path()).unwrap_err();
        let writable = |path: &Path, mode| FileCheckError::Writable {
            path: path.to_owned(),
            mode,
        };
        assert_eq!(err, writable(dir.path(), 0o777));
        let shown = dir.path().display();
        assert_eq!(
            err.to_string(),
            format!(
                "{shown} is writable by other users (mode 0777); fix it with: chmod go-w {shown}"
            )
        );
        // A sticky directory may hold trusted files, not a daemon's own ones.
        chmod(dir.path(), 0o1777);
        assert_eq!(check_own_dir(dir.path()), Err(writable(dir.path(), 0o1777)));
        let file = dir.path().join("client.toml");
        fs::write(&file, "").unwrap();
        chmod(&file, 0o644);
        check_trusted(&file).unwrap();
        chmod(&file, 0o666);
        let real = file.canonicalize().unwrap();
        assert_eq!(check_trusted(&file), Err(writable(&real, 0o666)));
        chmod(&file, 0o644);
        chmod(dir.path(), 0o777);
        let real_dir = dir.path().canonicalize().unwrap();
        assert_eq!(
            check_trusted(&file),
            Err(writable(&real_dir, 0o777)),
            "the directory could replace it"
        );
    }

    #[test]
    fn missing_paths_and_files_for_directories_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let err = check_trusted(&missing).unwrap_err();
        assert!(
            matches!(&err, FileCheckError::Io { path, error }
                if *path == missing && error.kind == io::ErrorKind::NotFound),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .starts_with(&format!("{}: ", missing.display())),
            "{err}"
        );
        let file = dir.path().join("file");
        fs::write(&file, "").unwrap();
        let err = check_own_dir(&file).unwrap_err();
        assert_eq!(err, FileCheckError::NotADirectory(file.clone()));
        assert_eq!(
            err.to_string(),
            format!("{} is not a directory", file.display())
        );
        assert!(matches!(
            own_dir(&file.join("sub"), 0o750),
            Err(FileCheckError::Io { .. })
        ));
    }
}
