//! A journal on disk: an append-only file in `state-dir`, one checksummed text line per
//! change, synced before what it records is acknowledged. A torn or corrupt line is
//! reported with its line number and skipped; everything else is recovered. The server
//! keeps its ban table in one (`server::table::Entry` records), the client its record of
//! applied bans (`Ban` records, see `client::apply::record`).

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::config::Durability;
use crate::files;
use crate::logging::printable;
use crate::wire::cidr::{Cidr, CidrError};
use crate::wire::error::{FieldError, MessageError};
use crate::wire::protocol::Lift;

/// The server's journal; the client keeps its own, `applied.journal`, in its state-dir.
pub const SERVER_JOURNAL: &str = "bans.journal";
/// The server's reports waiting for confirmation or for their key's allowance.
pub const PENDING_JOURNAL: &str = "pending.journal";
pub const CLIENT_JOURNAL: &str = "applied.journal";
/// The client's record under the `log` backend, which applies nothing: switching to a real
/// backend must then apply every ban, not take the dry run's for done.
pub const DRY_RUN_JOURNAL: &str = "dry-run.journal";

/// The journal format this version writes, as the first line of every journal it writes
/// anew (`CRC format 2`). A journal without one is format 1, banshare 0.1.0's, whose lines
/// are otherwise the same. A journal of a later format is refused, and left as it is: its
/// lines may mean what this version cannot tell, and skipping them would lose bans.
pub const FORMAT: u32 = 2;

#[derive(Debug, thiserror::Error)]
#[error("{shown}: {error}", shown = path.display())]
pub struct StoreError {
    pub path: PathBuf,
    pub error: io::Error,
}

/// What a journal holds: one record per network, written as text on a `ban` line. A
/// later record for the same network replaces an earlier one.
pub trait Record: Sized {
    fn network(&self) -> Cidr;
    /// Whether the record still matters at `now`: expired ones are dropped at start.
    fn active_at(&self, now: u64) -> bool;
    /// When it was reported: a dated unban (an `unban` line) lifts it if at or after this.
    fn reported(&self) -> u64;
    /// The fields after `ban`, separated by single spaces.
    fn encode(&self) -> String;
    /// A record from those fields, by the same rules as the wire: a record the wire would
    /// refuse must not be loaded, or it would be sent on.
    fn decode(fields: &[&str]) -> Result<Self, RecordError>;
}

/// Why a journal line cannot be read back: the line is skipped, said in the log, and the
/// journal kept in a copy for the admin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("not text")]
    NotText,
    #[error("no checksum")]
    NoChecksum,
    #[error("checksum mismatch")]
    ChecksumMismatch,
    #[error("unknown record")]
    Unknown,
    /// One part of a field is not what it must be: which part, and its text, made
    /// printable.
    #[error("bad {what} {text:?}")]
    BadPart { what: &'static str, text: String },
    #[error("more than {0} named reporters")]
    TooManyReporters(usize),
    #[error("too many reporters")]
    UncountedReporters,
    #[error("bantime {0} out of range")]
    BantimeRange(u64),
    /// A field the wire would refuse too, with the wire's reason.
    #[error(transparent)]
    Field(#[from] FieldError),
    #[error(transparent)]
    Message(#[from] MessageError),
    #[error(transparent)]
    Network(#[from] CidrError),
}

impl RecordError {
    /// A bad `what`, whose text is written as it can be logged.
    pub fn bad(what: &'static str, text: &str) -> RecordError {
        RecordError::BadPart {
            what,
            text: printable(text),
        }
    }
}

/// What loading found, for the log.
#[derive(Debug)]
pub struct Recovery<R> {
    pub entries: Vec<R>,
    /// Dated unbans still in force (the server's journal only).
    pub lifts: Vec<Lift>,
    /// Lines that could not be read back, with their line numbers.
    pub damaged: Vec<String>,
    pub lines: usize,
    /// Where the damaged journal was copied, for inspection.
    pub kept: Option<PathBuf>,
}

impl<R> Default for Recovery<R> {
    fn default() -> Self {
        Recovery {
            entries: Vec::new(),
            lifts: Vec::new(),
            damaged: Vec::new(),
            lines: 0,
            kept: None,
        }
    }
}

pub struct Store<R> {
    /// Held for the store's lifetime: a second daemon on the same state-dir must not
    /// rewrite the journal under the first.
    _lock: Flock<File>,
    path: PathBuf,
    journal: BufWriter<File>,
    durability: Durability,
    /// Records in the journal, to decide when to compact it.
    records: usize,
    /// Whether anything was appended since the last commit.
    pending: bool,
    record: std::marker::PhantomData<R>,
}

fn err(path: &Path) -> impl Fn(io::Error) -> StoreError + '_ {
    move |error| StoreError {
        path: path.to_owned(),
        error,
    }
}

impl<R: Record> Store<R> {
    /// Opens (creating if needed) the journal in `dir` and reads back every ban in it. The
    /// journal is then rewritten with only the live bans, after keeping a copy of a damaged
    /// one for inspection.
    pub fn open(
        dir: &Path,
        name: &str,
        durability: Durability,
        now: u64,
    ) -> Result<(Store<R>, Recovery<R>), StoreError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(dir)
            .map_err(err(dir))?;
        let lock = lock(&dir.join(format!("{name}.lock")))?;
        let path = dir.join(name);
        let mut recovery = match files::open_regular(&path) {
            Ok(file) => read::<R>(file).map_err(err(&path))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Recovery::default(),
            Err(e) => return Err(err(&path)(e)),
        };
        recovery.entries.retain(|record| record.active_at(now));
        recovery.lifts.retain(|lift| lift.active_at(now));
        if !recovery.damaged.is_empty() {
            let copy = dir.join(format!("{name}.damaged-{now}"));
            keep_copy(&path, &copy).map_err(err(&copy))?;
            recovery.kept = Some(copy);
        }
        let journal = rewrite(&path, &recovery.entries, &recovery.lifts)?;
        let store = Store {
            _lock: lock,
            journal,
            records: recovery.entries.len() + recovery.lifts.len(),
            pending: false,
            path,
            durability,
            record: std::marker::PhantomData,
        };
        Ok((store, recovery))
    }

    /// Buffers a new or changed ban; `commit` makes it durable.
    pub fn append(&mut self, record: &R) -> Result<(), StoreError> {
        self.records += 1;
        self.pending = true;
        self.journal
            .write_all(line(record).as_bytes())
            .map_err(err(&self.path))
    }

    /// Buffers the removal of a ban (a fleet unban); `commit` makes it durable.
    pub fn remove(&mut self, ip: &Cidr) -> Result<(), StoreError> {
        self.records += 1;
        self.pending = true;
        self.journal
            .write_all(checksummed(format!("del {ip}")).as_bytes())
            .map_err(err(&self.path))
    }

    /// Buffers a dated unban, which also lifts the ban it covers; `commit` makes it durable.
    pub fn lift(&mut self, lift: &Lift) -> Result<(), StoreError> {
        self.records += 1;
        self.pending = true;
        self.journal
            .write_all(checksummed(lift.line()).as_bytes())
            .map_err(err(&self.path))
    }

    /// Makes everything appended so far durable, per the configured durability. Called once
    /// per batch of reports, so that one fsync covers many of them; does nothing when
    /// nothing was appended.
    /// Whether appended records wait for `commit`.
    pub fn has_pending(&self) -> bool {
        self.pending
    }

    pub fn commit(&mut self) -> Result<(), StoreError> {
        if !std::mem::take(&mut self.pending) {
            return Ok(());
        }
        self.journal.flush().map_err(err(&self.path))?;
        if self.durability == Durability::Fsync {
            self.journal
                .get_ref()
                .sync_data()
                .map_err(err(&self.path))?;
        }
        Ok(())
    }

    /// fdatasync now, whatever the durability: for a journal that commits with write(2)
    /// and syncs on a timer of its own (the client's record of applied bans).
    pub fn sync(&mut self) -> Result<(), StoreError> {
        self.journal.flush().map_err(err(&self.path))?;
        self.journal.get_ref().sync_data().map_err(err(&self.path))
    }

    /// Rewrites the journal with only `live` and `lifts` when it has grown to over twice
    /// their number, so that expired and replaced records do not pile up.
    pub fn compact_if_large(&mut self, live: &[R], lifts: &[Lift]) -> Result<bool, StoreError> {
        let kept = live.len() + lifts.len();
        if self.records <= 2 * kept + 1000 {
            return Ok(false);
        }
        self.commit()?;
        self.journal = rewrite(&self.path, live, lifts)?;
        self.records = kept;
        Ok(true)
    }
}

/// A copy of the journal as found, for the admin to inspect.
fn keep_copy(path: &Path, copy: &Path) -> io::Result<()> {
    let mut from = files::open_regular(path)?;
    let mut to = files::create_new(copy, 0o640)?;
    io::copy(&mut from, &mut to)?;
    to.sync_all()
}

fn lock(path: &Path) -> Result<Flock<File>, StoreError> {
    let file = files::open_writable(path, 0o640, false).map_err(err(path))?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| StoreError {
        path: path.to_owned(),
        error: io::Error::new(
            io::ErrorKind::WouldBlock,
            format!("{errno}: another banshare daemon is using this state directory"),
        ),
    })
}

/// Writes `entries` to a new file and renames it over `path`, so that a crash leaves
/// either the old journal or the new one, never half of one. Returns the new journal,
/// open for appending.
fn rewrite<R: Record>(
    path: &Path,
    entries: &[R],
    lifts: &[Lift],
) -> Result<BufWriter<File>, StoreError> {
    let tmp = path.with_extension("journal.new");
    // Left over from a crash in the middle of a rewrite: unlinking never follows a symlink.
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(err(&tmp)(e)),
        _ => {}
    }
    let file = files::create_new(&tmp, 0o640).map_err(err(&tmp))?;
    let mut out = BufWriter::new(file);
    out.write_all(checksummed(format!("format {FORMAT}")).as_bytes())
        .map_err(err(&tmp))?;
    for entry in entries {
        out.write_all(line(entry).as_bytes()).map_err(err(&tmp))?;
    }
    for lift in lifts {
        out.write_all(checksummed(lift.line()).as_bytes())
            .map_err(err(&tmp))?;
    }
    out.flush().map_err(err(&tmp))?;
    out.get_ref().sync_all().map_err(err(&tmp))?;
    fs::rename(&tmp, path).map_err(err(path))?;
    if let Some(dir) = path.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(err(dir))?;
    }
    let file = files::open_writable(path, 0o640, true).map_err(err(path))?;
    Ok(BufWriter::with_capacity(64 * 1024, file))
}

/// `CRC ban FIELDS`, where CRC is the CRC-32 of everything after it; or `CRC del IP` for a
/// ban lifted before its time, or `CRC unban IP AT UNTIL` for a dated unban.
fn line<R: Record>(record: &R) -> String {
    checksummed(format!("ban {}", record.encode()))
}

/// A journal line: the CRC-32 of `body`, then `body`.
pub fn checksummed(body: String) -> String {
    format!("{:08x} {body}\n", crc32(body.as_bytes()))
}

/// A line read back: a record (new or changed) or the removal of one, or the journal's
/// format.
enum Line<R> {
    Ban(R),
    Del(Cidr),
    Lift(Lift),
    Format(u32),
}

fn parse<R: Record>(text: &str) -> Result<Line<R>, RecordError> {
    let (crc, body) = text.split_once(' ').ok_or(RecordError::NoChecksum)?;
    if u32::from_str_radix(crc, 16).ok() != Some(crc32(body.as_bytes())) {
        return Err(RecordError::ChecksumMismatch);
    }
    let fields: Vec<&str> = body.split(' ').collect();
    match fields[..] {
        ["del", ip] => Ok(Line::Del(ip.parse()?)),
        ["format", n] => n
            .parse()
            .map(Line::Format)
            .map_err(|_| RecordError::bad("format", n)),
        ["unban", ..] => Ok(Line::Lift(Lift::parse(&fields)?)),
        ["ban", ref record @ ..] => Ok(Line::Ban(R::decode(record)?)),
        _ => Err(RecordError::Unknown),
    }
}

/// Reads every record; a later record for the same network replaces an earlier one. A dated
/// unban lifts the record it covers, wherever it stands: which one covers which does not
/// depend on their order.
fn read<R: Record>(file: File) -> io::Result<Recovery<R>> {
    let mut recovery = Recovery::default();
    let mut by_ip = std::collections::HashMap::new();
    let mut lifts = std::collections::HashMap::<Cidr, Lift>::new();
    for (i, line) in BufReader::new(file).split(b'\n').enumerate() {
        let line = line?;
        recovery.lines += 1;
        let parsed = std::str::from_utf8(&line)
            .map_err(|_| RecordError::NotText)
            .and_then(parse::<R>);
        match parsed {
            Ok(Line::Ban(record)) => {
                by_ip.insert(record.network(), record);
            }
            Ok(Line::Del(ip)) => {
                by_ip.remove(&ip);
            }
            Ok(Line::Lift(lift)) => {
                let later = lifts.get(&lift.ip).is_none_or(|known| lift.at > known.at);
                if later {
                    lifts.insert(lift.ip, lift);
                }
            }
            Ok(Line::Format(format)) if format > FORMAT => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!(
                        "written by a newer banshare (journal format {format}; this one reads \
                         formats 1 to {FORMAT}), left as it is: upgrade banshare again"
                    ),
                ))
            }
            Ok(Line::Format(_)) => {}
            Err(why) => recovery.damaged.push(format!(
                "line {}: {why}: {}",
                i + 1,
                printable(&String::from_utf8_lossy(&line))
            )),
        }
    }
    by_ip.retain(|ip, record: &mut R| lifts.get(ip).is_none_or(|lift| record.reported() > lift.at));
    recovery.entries = by_ip.into_values().collect();
    recovery.lifts = lifts.into_values().collect();
    Ok(recovery)
}

/// CRC-32 (IEEE 802.3, as in zlib and `cksum -a crc32b`).
fn crc32(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    !data.iter().fold(!0u32, |crc, &b| {
        TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record of a network that ends at a time (0 for never): just enough to test the
    /// journal itself. The server's and the client's records have tests of their own.
    #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
    struct Note {
        ip: Cidr,
        until: u64,
    }

    impl Record for Note {
        fn network(&self) -> Cidr {
            self.ip
        }
        fn active_at(&self, now: u64) -> bool {
            self.until == 0 || self.until > now
        }
        fn reported(&self) -> u64 {
            0
        }
        fn encode(&self) -> String {
            format!("{} {}", self.ip, self.until)
        }
        fn decode(fields: &[&str]) -> Result<Note, RecordError> {
            let [ip, until] = fields else {
                return Err(RecordError::Unknown);
            };
            Ok(Note {
                ip: ip.parse()?,
                until: crate::wire::protocol::number("until", until)?,
            })
        }
    }

    fn note(ip: &str, until: u64) -> Note {
        Note {
            ip: ip.parse().unwrap(),
            until,
        }
    }

    fn open(dir: &Path, now: u64) -> (Store<Note>, Recovery<Note>) {
        Store::open(dir, "notes.journal", Durability::Fsync, now).unwrap()
    }

    fn sorted(mut notes: Vec<Note>) -> Vec<Note> {
        notes.sort();
        notes
    }

    #[test]
    fn a_line_that_cannot_be_read_back_says_why_by_kind_and_in_the_same_words() {
        let no_crc = parse::<Note>("ban 203.0.113.7 0");
        assert_eq!(no_crc.err(), Some(RecordError::ChecksumMismatch));
        assert_eq!(parse::<Note>("x").err(), Some(RecordError::NoChecksum));
        let unknown = parse::<Note>(checksummed("nab 203.0.113.7".into()).trim_end());
        assert_eq!(unknown.err(), Some(RecordError::Unknown));
        let bad = RecordError::bad("reporter", "web1/10");
        assert_eq!(bad.to_string(), r#"bad reporter "web1/10""#);
        assert_eq!(
            RecordError::TooManyReporters(16).to_string(),
            "more than 16 named reporters"
        );
    }

    #[test]
    fn crc32_matches_the_standard() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn records_survive_a_reopen_and_expired_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, recovery) = open(dir.path(), 100);
        assert!(recovery.entries.is_empty());
        let live = [note("203.0.113.7", 700), note("2001:db8::/64", 0)];
        for n in &live {
            store.append(n).unwrap();
        }
        store.append(&note("203.0.113.8", 110)).unwrap();
        // A later record for the same network replaces the earlier one.
        let replaced = note("203.0.113.7", 6100);
        store.append(&replaced).unwrap();
        store.append(&note("203.0.113.9", 0)).unwrap();
        store.remove(&"203.0.113.9".parse().unwrap()).unwrap();
        store.commit().unwrap();
        drop(store);
        let (_, recovery) = open(dir.path(), 200);
        assert!(recovery.damaged.is_empty());
        assert_eq!(
            sorted(recovery.entries),
            sorted(vec![replaced, live[1].clone()])
        );
    }

    #[test]
    fn a_torn_tail_and_a_corrupt_line_are_reported_and_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = open(dir.path(), 0);
        for ip in ["203.0.113.1", "203.0.113.2", "203.0.113.3"] {
            store.append(&note(ip, 0)).unwrap();
        }
        store.commit().unwrap();
        drop(store);
        let path = dir.path().join("notes.journal");
        let text = fs::read_to_string(&path).unwrap();
        let damaged = text.replacen("203.0.113.2", "203.0.113.9", 1);
        fs::write(&path, &damaged[..damaged.len() - 3]).unwrap();
        let (_, recovery) = open(dir.path(), 0);
        assert_eq!(recovery.entries.len(), 1);
        assert_eq!(recovery.damaged.len(), 2, "{:?}", recovery.damaged);
        // Line 1 is the format.
        assert!(recovery.damaged[0].starts_with("line 3: checksum mismatch"));
        assert!(recovery.damaged[1].starts_with("line 4: "));
        // The damaged journal is kept for inspection; the new one holds what was recovered.
        let kept = recovery.kept.expect("a copy of the damaged journal");
        assert_eq!(
            fs::read_to_string(kept).unwrap(),
            damaged[..damaged.len() - 3]
        );
        let (_, again) = open(dir.path(), 0);
        assert!(again.damaged.is_empty());
        assert_eq!(again.entries.len(), 1);
    }

    #[test]
    fn a_journal_says_its_format_and_one_of_a_later_format_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notes.journal");
        // Format 1 had no format line: read as it is, and written anew with one.
        let old = checksummed("ban 203.0.113.7 0".into());
        fs::write(&path, &old).unwrap();
        let (store, recovery) = open(dir.path(), 0);
        assert_eq!(recovery.entries, [note("203.0.113.7", 0)]);
        assert!(recovery.damaged.is_empty());
        drop(store);
        let written = fs::read_to_string(&path).unwrap();
        assert_eq!(written, checksummed(format!("format {FORMAT}")) + &old);
        // A later format, even with lines this version could read, is left as it is.
        let newer = checksummed(format!("format {}", FORMAT + 1)) + &old;
        fs::write(&path, &newer).unwrap();
        let err = Store::<Note>::open(dir.path(), "notes.journal", Durability::Write, 0)
            .err()
            .unwrap();
        assert_eq!(
            err.to_string(),
            format!(
                "{}: written by a newer banshare (journal format 3; this one reads formats 1 \
                 to 2), left as it is: upgrade banshare again",
                path.display()
            )
        );
        assert_eq!(fs::read_to_string(&path).unwrap(), newer);
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            2,
            "a lock file only"
        );
    }

    #[test]
    fn a_second_store_on_the_same_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (mut first, _) = open(dir.path(), 0);
        first.append(&note("203.0.113.7", 0)).unwrap();
        first.commit().unwrap();
        let err = Store::<Note>::open(dir.path(), "notes.journal", Durability::Write, 0)
            .err()
            .unwrap();
        assert!(err.to_string().contains("another banshare daemon"), "{err}");
        drop(first);
        let (_, recovery) = open(dir.path(), 0);
        assert_eq!(recovery.entries.len(), 1);
    }

    #[test]
    fn compaction_keeps_only_live_records() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = open(dir.path(), 0);
        let n = note("203.0.113.7", 0);
        for _ in 0..1500 {
            store.append(&n).unwrap();
        }
        assert!(store
            .compact_if_large(std::slice::from_ref(&n), &[])
            .unwrap());
        store.append(&note("203.0.113.8", 0)).unwrap();
        store.commit().unwrap();
        let lines = fs::read_to_string(dir.path().join("notes.journal"))
            .unwrap()
            .lines()
            .count();
        // The format, the live record and the new one.
        assert_eq!(lines, 3);
    }
}
