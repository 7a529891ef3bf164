//! A feed's last good copy on disk, `STATE_DIR/feeds/NAME`: what it banned, with the
//! validators and time of the fetch that brought it. Written to a new file and renamed over
//! the old, so that a crash leaves one or the other.
//!
//! ```text
//! banshare-feed 1
//! etag "5f3a"
//! last-modified Mon, 07 Dec 2026 05:17:00 GMT
//! fetched 1796620000
//! import spamhaus 1.10.16.0/20 -1
//! ```

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::fetch::Validators;
use crate::blocklist::MAX_LIST_BYTES;
use crate::config::feeds::FeedConfig;
use crate::wire::cidr::Cidr;
use crate::wire::protocol::Report;

const HEADER: &str = "banshare-feed 1";

#[derive(Debug, Default)]
pub struct Copy {
    pub validators: Validators,
    pub fetched: Option<u64>,
    pub entries: BTreeMap<Cidr, Report>,
}

fn path(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

impl Copy {
    /// The copy of `feed`, or an empty one if it has none yet.
    pub fn load(dir: &Path, feed: &FeedConfig) -> Result<Copy, String> {
        let path = path(dir, &feed.name);
        let bytes = match crate::files::read_regular(&path, 2 * MAX_LIST_BYTES) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Copy::default()),
            other => other.map_err(|e| format!("{}: {e}", path.display()))?,
        };
        let text =
            String::from_utf8(bytes).map_err(|_| format!("{}: not UTF-8", path.display()))?;
        let mut lines = text.lines();
        if lines.next() != Some(HEADER) {
            return Err(format!("{}: not a feed's copy", path.display()));
        }
        let mut copy = Copy::default();
        for (i, line) in lines.enumerate() {
            let bad = || format!("{}:{}: unreadable", path.display(), i + 2);
            let (key, value) = line.split_once(' ').ok_or_else(bad)?;
            match key {
                "etag" => copy.validators.etag = Some(value.to_owned()),
                "last-modified" => copy.validators.last_modified = Some(value.to_owned()),
                "fetched" => copy.fetched = Some(value.parse().map_err(|_| bad())?),
                _ => {
                    let fields: Vec<&str> = line.split(' ').collect();
                    let [prog, jail, ip, bantime] = fields[..] else {
                        return Err(bad());
                    };
                    let report = Report::parse(prog, jail, ip, bantime).map_err(|_| bad())?;
                    copy.entries.insert(report.ip, report);
                }
            }
        }
        Ok(copy)
    }

    pub fn save(&self, dir: &Path, feed: &FeedConfig) -> std::io::Result<()> {
        let path = path(dir, &feed.name);
        let tmp = dir.join(format!(".{}.new", feed.name));
        match fs::remove_file(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut out = std::io::BufWriter::new(crate::files::create_new(&tmp, 0o640)?);
        writeln!(out, "{HEADER}")?;
        if let Some(etag) = &self.validators.etag {
            writeln!(out, "etag {etag}")?;
        }
        if let Some(date) = &self.validators.last_modified {
            writeln!(out, "last-modified {date}")?;
        }
        if let Some(at) = self.fetched {
            writeln!(out, "fetched {at}")?;
        }
        for report in self.entries.values() {
            writeln!(out, "{}", report.fields().join(" "))?;
        }
        out.flush()?;
        out.get_ref().sync_all()?;
        fs::rename(&tmp, &path)?;
        fs::File::open(dir)?.sync_all()
    }

    /// The feeds that have a copy in `dir` and are not in `configs`.
    pub fn others(dir: &Path, configs: &[FeedConfig]) -> Vec<String> {
        let Ok(entries) = fs::read_dir(dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|name| !name.starts_with('.') && !configs.iter().any(|c| &c.name == name))
            .collect()
    }

    pub fn remove(dir: &Path, name: &str) {
        if let Err(e) = fs::remove_file(path(dir, name)) {
            log::warn!("cannot remove the copy of feed {name}: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_reads_back_as_written_and_a_stranger_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let feed: FeedConfig =
            toml::from_str("name = \"drop\"\nurl = \"https://example.org/d\"\n").unwrap();
        assert!(Copy::load(dir.path(), &feed).unwrap().entries.is_empty());
        let mut copy = Copy {
            validators: Validators {
                etag: Some("\"5f3a\"".into()),
                last_modified: Some("Mon, 07 Dec 2026 05:17:00 GMT".into()),
            },
            fetched: Some(1_796_620_000),
            entries: BTreeMap::new(),
        };
        for (ip, bantime) in [("1.10.16.0/20", "-1"), ("2a06:e480::/29", "600")] {
            let report = Report::parse("import", "drop", ip, bantime).unwrap();
            copy.entries.insert(report.ip, report);
        }
        copy.save(dir.path(), &feed).unwrap();
        let back = Copy::load(dir.path(), &feed).unwrap();
        assert_eq!(
            (back.validators, back.fetched),
            (copy.validators.clone(), copy.fetched)
        );
        assert_eq!(back.entries, copy.entries);
        assert_eq!(Copy::others(dir.path(), &[]), ["drop"]);
        assert!(Copy::others(dir.path(), std::slice::from_ref(&feed)).is_empty());
        fs::write(dir.path().join("drop"), "something else\n").unwrap();
        assert!(Copy::load(dir.path(), &feed)
            .unwrap_err()
            .ends_with("not a feed's copy"));
    }
}
