//! The server's ban table on disk: an append-only journal in `state-dir`, one checksummed
//! text line per change, synced before a report is acknowledged. A torn or corrupt line is
//! reported with its line number and skipped; everything else is recovered.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::files;
use crate::server::table::{Entry, Reporter, Reporters, MAX_REPORTERS};
use crate::wire::cidr::{printable, Cidr};
use crate::wire::protocol::{number, parse_ban, Name};

/// The server's journal; the client keeps its own, `applied.journal`, in its state-dir.
pub const SERVER_JOURNAL: &str = "bans.journal";
pub const CLIENT_JOURNAL: &str = "applied.journal";

/// How far an acknowledged report is guaranteed to have reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// fdatasync before acknowledging: survives a power cut.
    Fsync,
    /// write(2) before acknowledging: survives `kill -9` and crashes of the server, not of
    /// the machine.
    Write,
}

#[derive(Debug)]
pub struct StoreError {
    pub path: PathBuf,
    pub error: io::Error,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.error)
    }
}

impl std::error::Error for StoreError {}

/// What loading found, for the log.
#[derive(Debug, Default)]
pub struct Recovery {
    pub entries: Vec<Entry>,
    /// Lines that could not be read back, with their line numbers.
    pub damaged: Vec<String>,
    pub lines: usize,
    /// Where the damaged journal was copied, for inspection.
    pub kept: Option<PathBuf>,
}

pub struct Store {
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
}

fn err(path: &Path) -> impl Fn(io::Error) -> StoreError + '_ {
    move |error| StoreError {
        path: path.to_owned(),
        error,
    }
}

impl Store {
    /// Opens (creating if needed) the journal in `dir` and reads back every ban in it. The
    /// journal is then rewritten with only the live bans, after keeping a copy of a damaged
    /// one for inspection.
    pub fn open(
        dir: &Path,
        name: &str,
        durability: Durability,
        now: u64,
    ) -> Result<(Store, Recovery), StoreError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(dir)
            .map_err(err(dir))?;
        let lock = lock(&dir.join(format!("{name}.lock")))?;
        let path = dir.join(name);
        let mut recovery = match files::open_regular(&path) {
            Ok(file) => read(file).map_err(err(&path))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Recovery::default(),
            Err(e) => return Err(err(&path)(e)),
        };
        recovery
            .entries
            .retain(|e| e.ban.expires.map_or(true, |x| x > now));
        if !recovery.damaged.is_empty() {
            let copy = dir.join(format!("{name}.damaged-{now}"));
            keep_copy(&path, &copy).map_err(err(&copy))?;
            recovery.kept = Some(copy);
        }
        let journal = rewrite(&path, &recovery.entries)?;
        let store = Store {
            _lock: lock,
            journal,
            records: recovery.entries.len(),
            pending: false,
            path,
            durability,
        };
        Ok((store, recovery))
    }

    /// Buffers a new or changed ban; `commit` makes it durable.
    pub fn append(&mut self, entry: &Entry) -> Result<(), StoreError> {
        self.records += 1;
        self.pending = true;
        self.journal
            .write_all(line(entry).as_bytes())
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

    /// Makes everything appended so far durable, per the configured durability. Called once
    /// per batch of reports, so that one fsync covers many of them; does nothing when
    /// nothing was appended.
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

    /// Rewrites the journal with only `live` when it has grown to over twice their number,
    /// so that expired and replaced records do not pile up.
    pub fn compact_if_large(&mut self, live: &[Entry]) -> Result<bool, StoreError> {
        if self.records <= 2 * live.len() + 1000 {
            return Ok(false);
        }
        self.commit()?;
        self.journal = rewrite(&self.path, live)?;
        self.records = live.len();
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
fn rewrite(path: &Path, entries: &[Entry]) -> Result<BufWriter<File>, StoreError> {
    let tmp = path.with_extension("journal.new");
    // Left over from a crash in the middle of a rewrite: unlinking never follows a symlink.
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(err(&tmp)(e)),
        _ => {}
    }
    let file = files::create_new(&tmp, 0o640).map_err(err(&tmp))?;
    let mut out = BufWriter::new(file);
    for entry in entries {
        out.write_all(line(entry).as_bytes()).map_err(err(&tmp))?;
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

/// `CRC ban IP PROG JAIL ORIGIN BANTIME EXPIRES PUBLISHED REPORTERS`, where CRC is the
/// CRC-32 of everything after it, the six fields from IP to EXPIRES are those of a published
/// ban (BANTIME -1 for permanent, EXPIRES 0 for never), and REPORTERS is
/// `NAME/FIRST/LAST,...` with `+N` at the end for reporters beyond the named ones, or `-`;
/// or `CRC del IP` for a ban lifted before its time.
fn line(entry: &Entry) -> String {
    let ban = &entry.ban;
    let body = format!(
        "ban {} {} {} {} {} {} {} {}",
        ban.ip,
        ban.prog,
        ban.jail,
        ban.origin,
        ban.bantime.map_or("-1".into(), |b| b.to_string()),
        ban.expires.unwrap_or(0),
        entry.last_published,
        reporters_field(&entry.reporters)
    );
    checksummed(body)
}

fn reporters_field(reporters: &Reporters) -> String {
    let mut parts: Vec<String> = reporters
        .iter()
        .map(|r| format!("{}/{}/{}", r.name, r.first, r.last))
        .collect();
    if reporters.more > 0 {
        parts.push(format!("+{}", reporters.more));
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(",")
    }
}

fn parse_reporters(field: &str) -> Result<Reporters, String> {
    if field == "-" {
        return Ok(Reporters::default());
    }
    let mut named = Vec::new();
    let mut more = 0;
    for part in field.split(',') {
        if let Some(count) = part.strip_prefix('+') {
            more = number("reporters", count)?
                .try_into()
                .map_err(|_| "too many reporters")?;
            continue;
        }
        let [name, first, last] = part.split('/').collect::<Vec<_>>()[..] else {
            return Err(format!("bad reporter {:?}", printable(part)));
        };
        named.push(Reporter {
            name: Name::parse("reporter", name)?,
            first: number("first report", first)?,
            last: number("last report", last)?,
        });
    }
    if named.len() > MAX_REPORTERS {
        return Err(format!("more than {MAX_REPORTERS} named reporters"));
    }
    Ok(Reporters::new(named, more))
}

fn checksummed(body: String) -> String {
    format!("{:08x} {body}\n", crc32(body.as_bytes()))
}

/// A line read back: a ban (new or changed) or the removal of one.
enum Record {
    Ban(Entry),
    Del(Cidr),
}

/// One journal line, checked by the same rules as a ban on the wire: a record the wire
/// would refuse must not be loaded, or it would be sent in every snapshot page.
fn parse(text: &str) -> Result<Record, String> {
    let (crc, body) = text.split_once(' ').ok_or("no checksum")?;
    if u32::from_str_radix(crc, 16).ok() != Some(crc32(body.as_bytes())) {
        return Err("checksum mismatch".into());
    }
    let fields: Vec<&str> = body.split(' ').collect();
    match fields[..] {
        ["del", ip] => Ok(Record::Del(ip.parse()?)),
        ["ban", ref ban @ .., published, reporters] if ban.len() == 6 => Ok(Record::Ban(Entry {
            ban: parse_ban(ban)?,
            reporters: parse_reporters(reporters)?,
            last_published: number("published", published)?,
        })),
        // Written before the journal kept every reporter: the origin was the only one.
        ["ban", ref ban @ .., first, last, published] if ban.len() == 6 => {
            let ban = parse_ban(ban)?;
            let reporter = Reporter {
                name: ban.origin.clone(),
                first: number("first report", first)?,
                last: number("last report", last)?,
            };
            Ok(Record::Ban(Entry {
                ban,
                reporters: Reporters::new([reporter], 0),
                last_published: number("published", published)?,
            }))
        }
        _ => Err("unknown record".into()),
    }
}

/// Reads every record; a later record for the same network replaces an earlier one.
fn read(file: File) -> io::Result<Recovery> {
    let mut recovery = Recovery::default();
    let mut by_ip = std::collections::HashMap::new();
    for (i, line) in BufReader::new(file).split(b'\n').enumerate() {
        let line = line?;
        recovery.lines += 1;
        let parsed = std::str::from_utf8(&line)
            .map_err(|_| "not text".to_string())
            .and_then(parse);
        match parsed {
            Ok(Record::Ban(entry)) => {
                by_ip.insert(entry.ban.ip, entry);
            }
            Ok(Record::Del(ip)) => {
                by_ip.remove(&ip);
            }
            Err(why) => recovery.damaged.push(format!(
                "line {}: {why}: {}",
                i + 1,
                printable(&String::from_utf8_lossy(&line))
            )),
        }
    }
    recovery.entries = by_ip.into_values().collect();
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

    use crate::wire::protocol::{Ban, MAX_BANTIME};

    fn entry(ip: &str, bantime: Option<u64>, expires: Option<u64>) -> Entry {
        let reporter = |name: &str, first, last| Reporter {
            name: Name::parse("name", name).unwrap(),
            first,
            last,
        };
        Entry {
            ban: Ban::sample(ip, bantime, expires),
            reporters: Reporters::new([reporter("web1", 10, 20), reporter("db1", 15, 15)], 3),
            last_published: 30,
        }
    }

    /// A journal line with a correct checksum around `body`.
    fn journal_with(dir: &Path, bodies: &[&str]) {
        let text: String = bodies.iter().map(|b| checksummed(b.to_string())).collect();
        fs::write(dir.join(SERVER_JOURNAL), text).unwrap();
    }

    #[test]
    fn records_the_wire_would_refuse_are_not_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let too_long = format!("ban 203.0.113.1 f s web1 {} 0 0 -", MAX_BANTIME + 1);
        journal_with(
            dir.path(),
            &[
                &too_long,
                "ban 203.0.113.2 -rf s web1 60 100 0 -",
                "ban 203.0.113.3 f s web1 +60 100 0 -",
                "ban 203.0.113.4/24 f s web1 60 100 0 -",
                "ban 203.0.113.5 f s web1 60 100 0 web1/1/+2",
                "ban 203.0.113.6 f s web1 60 100 0 web1/1/2",
            ],
        );
        let (_, recovery) = Store::open(dir.path(), SERVER_JOURNAL, Durability::Write, 0).unwrap();
        assert_eq!(recovery.damaged.len(), 5, "{:?}", recovery.damaged);
        assert!(
            recovery.damaged[0].contains("bantime"),
            "{:?}",
            recovery.damaged
        );
        let ips: Vec<String> = recovery
            .entries
            .iter()
            .map(|e| e.ban.ip.to_string())
            .collect();
        assert_eq!(ips, ["203.0.113.6"]);
    }

    #[test]
    fn journals_from_before_the_reporter_list_are_read() {
        let dir = tempfile::tempdir().unwrap();
        journal_with(
            dir.path(),
            &["ban 203.0.113.7 fail2ban sshd web1 600 700 100 200 100"],
        );
        let (_, recovery) = Store::open(dir.path(), SERVER_JOURNAL, Durability::Write, 0).unwrap();
        assert!(recovery.damaged.is_empty(), "{:?}", recovery.damaged);
        let entry = &recovery.entries[0];
        assert_eq!((entry.first_report(), entry.last_report()), (100, 200));
        assert_eq!(entry.reporters.iter().next().unwrap().name.as_str(), "web1");
        // The rewritten journal reads back the same.
        let (_, again) = Store::open(dir.path(), SERVER_JOURNAL, Durability::Write, 0).unwrap();
        assert_eq!(sorted(again.entries), sorted(recovery.entries));
    }

    fn sorted(mut entries: Vec<Entry>) -> Vec<String> {
        let mut lines: Vec<String> = entries.drain(..).map(|e| line(&e)).collect();
        lines.sort();
        lines
    }

    #[test]
    fn crc32_matches_the_standard() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn entries_survive_a_reopen_and_expired_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, recovery) =
            Store::open(dir.path(), SERVER_JOURNAL, Durability::Fsync, 100).unwrap();
        assert!(recovery.entries.is_empty());
        let live = [
            entry("203.0.113.7", Some(600), Some(700)),
            entry("2001:db8::/64", None, None),
        ];
        for e in &live {
            store.append(e).unwrap();
        }
        store
            .append(&entry("203.0.113.8", Some(10), Some(110)))
            .unwrap();
        // A later record for the same network replaces the earlier one.
        let replaced = entry("203.0.113.7", Some(6000), Some(6100));
        store.append(&replaced).unwrap();
        store.append(&entry("203.0.113.9", None, None)).unwrap();
        store.remove(&"203.0.113.9".parse().unwrap()).unwrap();
        store.commit().unwrap();
        drop(store);
        let (_, recovery) =
            Store::open(dir.path(), SERVER_JOURNAL, Durability::Fsync, 200).unwrap();
        assert!(recovery.damaged.is_empty());
        assert_eq!(
            sorted(recovery.entries),
            sorted(vec![replaced, live[1].clone()])
        );
    }

    #[test]
    fn a_torn_tail_and_a_corrupt_line_are_reported_and_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = Store::open(dir.path(), SERVER_JOURNAL, Durability::Write, 0).unwrap();
        for ip in ["203.0.113.1", "203.0.113.2", "203.0.113.3"] {
            store.append(&entry(ip, None, None)).unwrap();
        }
        store.commit().unwrap();
        drop(store);
        let path = dir.path().join(SERVER_JOURNAL);
        let text = fs::read_to_string(&path).unwrap();
        let damaged = text.replacen("203.0.113.2", "203.0.113.9", 1);
        fs::write(&path, &damaged[..damaged.len() - 7]).unwrap();
        let (_, recovery) = Store::open(dir.path(), SERVER_JOURNAL, Durability::Write, 0).unwrap();
        assert_eq!(recovery.entries.len(), 1);
        assert_eq!(recovery.damaged.len(), 2, "{:?}", recovery.damaged);
        assert!(recovery.damaged[0].starts_with("line 2: checksum mismatch"));
        assert!(recovery.damaged[1].starts_with("line 3: "));
        // The damaged journal is kept for inspection; the new one holds what was recovered.
        let kept = recovery.kept.expect("a copy of the damaged journal");
        assert_eq!(
            fs::read_to_string(kept).unwrap(),
            damaged[..damaged.len() - 7]
        );
        let (_, again) = Store::open(dir.path(), SERVER_JOURNAL, Durability::Write, 0).unwrap();
        assert!(again.damaged.is_empty());
        assert_eq!(again.entries.len(), 1);
    }

    #[test]
    fn a_second_store_on_the_same_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (mut first, _) = Store::open(dir.path(), SERVER_JOURNAL, Durability::Write, 0).unwrap();
        first.append(&entry("203.0.113.7", None, None)).unwrap();
        first.commit().unwrap();
        let err = Store::open(dir.path(), SERVER_JOURNAL, Durability::Write, 0)
            .err()
            .unwrap();
        assert!(err.to_string().contains("another banshare daemon"), "{err}");
        drop(first);
        let (_, recovery) = Store::open(dir.path(), SERVER_JOURNAL, Durability::Write, 0).unwrap();
        assert_eq!(recovery.entries.len(), 1);
    }

    #[test]
    fn compaction_keeps_only_live_entries() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = Store::open(dir.path(), SERVER_JOURNAL, Durability::Write, 0).unwrap();
        let e = entry("203.0.113.7", None, None);
        for _ in 0..1500 {
            store.append(&e).unwrap();
        }
        assert!(store.compact_if_large(std::slice::from_ref(&e)).unwrap());
        store.append(&entry("203.0.113.8", None, None)).unwrap();
        store.commit().unwrap();
        let lines = fs::read_to_string(dir.path().join(SERVER_JOURNAL))
            .unwrap()
            .lines()
            .count();
        assert_eq!(lines, 2);
    }
}
