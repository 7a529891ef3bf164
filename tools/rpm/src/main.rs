//! Builds `target/rpm/banshare-VERSION-RELEASE.ARCH.rpm` from `[package.metadata.rpm]` in the
//! top Cargo.toml, the scriptlets in rpm/ and the entries of debian/changelog, with the `rpm`
//! crate: no rpmbuild, no spec file. Usage: `banshare-rpm [SOURCE_TREE]`.
//!
//! Why not cargo-generate-rpm, which is built on the same crate and made the .rpm until 0.2.0:
//! it cannot write a %changelog, a Packager or a Group (0.21.1, the newest), and
//! `rpm -q --changelog` is where an EL admin reads what an upgrade changes. What it did for
//! banshare fits in this file.

use serde::Deserialize;
use std::error::Error;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use time::format_description::well_known::Rfc2822;
use time::OffsetDateTime;

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// rpm's own script, which names the libraries and symbol versions an ELF file needs, as
/// rpmbuild's automatic dependencies do. Debian's and Fedora's rpm packages both ship it.
const FIND_REQUIRES: &str = "/usr/lib/rpm/find-requires";

#[derive(Deserialize)]
struct Manifest {
    package: Package,
}

#[derive(Deserialize)]
struct Package {
    name: String,
    version: String,
    license: String,
    description: String,
    metadata: Metadata,
}

#[derive(Deserialize)]
struct Metadata {
    rpm: RpmMetadata,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RpmMetadata {
    summary: String,
    release: String,
    packager: String,
    group: String,
    pre_install_script: PathBuf,
    post_install_script: PathBuf,
    pre_uninstall_script: PathBuf,
    post_uninstall_script: PathBuf,
    /// Packages named by hand; those of the ELF files' libraries are found by [`FIND_REQUIRES`].
    requires: Vec<String>,
    assets: Vec<Asset>,
}

/// A file of the package. `source` may end in `DIR/PREFIX*SUFFIX`; `dest` is then the folder.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Asset {
    source: String,
    dest: String,
    mode: String,
    /// %config(noreplace): an edited file survives an upgrade, the package's beside it as .rpmnew.
    #[serde(default)]
    config: bool,
    #[serde(default)]
    doc: bool,
}

/// One entry of the changelog, as rpm keeps it.
#[derive(Debug, PartialEq)]
struct ChangelogEntry {
    /// `NAME <EMAIL> - VERSION`, what rpmbuild's `* DATE NAME <EMAIL> - VERSION` line holds.
    name: String,
    text: String,
    time: u32,
}

fn main() -> ExitCode {
    let root = std::env::args_os()
        .nth(1)
        .map_or_else(|| PathBuf::from("."), PathBuf::from);
    match build(&root) {
        Ok(path) => {
            println!("{}", path.display());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("banshare-rpm: {error}");
            ExitCode::FAILURE
        }
    }
}

fn build(root: &Path) -> Result<PathBuf> {
    let manifest: Manifest = toml::from_str(&read(&root.join("Cargo.toml"))?)?;
    let package = manifest.package;
    let meta = package.metadata.rpm;
    let changelog = parse_changelog(&read(&root.join("debian/changelog"))?)?;
    // The newest entry's date is the build's, as dpkg does for SOURCE_DATE_EPOCH: the same
    // tree gives the same package.
    let date = changelog
        .first()
        .ok_or("debian/changelog has no entry")?
        .time;
    let config = rpm::BuildConfig::default()
        .compression(rpm::CompressionType::Gzip)
        .source_date(date);
    let arch = std::env::consts::ARCH;
    let mut builder = rpm::PackageBuilder::new(
        &package.name,
        &package.version,
        &package.license,
        arch,
        &meta.summary,
    );
    builder
        .using_config(config)
        .release(&meta.release)
        .description(&package.description)
        .packager(&meta.packager)
        .group(&meta.group)
        .build_host(read(Path::new("/proc/sys/kernel/hostname"))?.trim());
    builder
        .pre_install_script(read(&root.join(&meta.pre_install_script))?)
        .post_install_script(read(&root.join(&meta.post_install_script))?)
        .pre_uninstall_script(read(&root.join(&meta.pre_uninstall_script))?)
        .post_uninstall_script(read(&root.join(&meta.post_uninstall_script))?);
    let mut sources = Vec::new();
    for asset in &meta.assets {
        for (source, dest) in expand(root, asset)? {
            builder.with_file(&source, file_options(asset, dest)?)?;
            sources.push(source);
        }
    }
    for name in meta
        .requires
        .iter()
        .cloned()
        .chain(find_requires(&sources)?)
    {
        builder.requires(rpm::Dependency::any(name));
    }
    for entry in &changelog {
        builder.add_changelog_entry(&entry.name, &entry.text, entry.time);
    }
    let out = root.join("target/rpm");
    fs::create_dir_all(&out)?;
    Ok(builder.build()?.write_to(&out)?)
}

fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()).into())
}

fn file_options(asset: &Asset, dest: String) -> Result<rpm::FileOptions> {
    let mode = u16::from_str_radix(&asset.mode, 8)
        .map_err(|_| format!("{}: mode {:?} is not octal", asset.source, asset.mode))?;
    let mut options = rpm::FileOptions::new(dest)
        .permissions(mode)
        .user("root")
        .group("root");
    if asset.config {
        options = options.config().noreplace();
    }
    if asset.doc {
        options = options.doc();
    }
    Ok(options.into())
}

/// The files an asset names, with where each goes: one, or those a `*` in the file name
/// matches, sorted so that the package does not depend on the order of the folder.
fn expand(root: &Path, asset: &Asset) -> Result<Vec<(PathBuf, String)>> {
    let Some((prefix, suffix)) = asset.source.split_once('*') else {
        return Ok(vec![(root.join(&asset.source), asset.dest.clone())]);
    };
    let (folder, prefix) = prefix
        .rsplit_once('/')
        .ok_or("a pattern must name its folder")?;
    let mut found = Vec::new();
    for entry in fs::read_dir(root.join(folder)).map_err(|e| format!("{folder}: {e}"))? {
        let name = entry?
            .file_name()
            .into_string()
            .map_err(|n| format!("{n:?}: not UTF-8"))?;
        if name.len() >= prefix.len() + suffix.len()
            && name.starts_with(prefix)
            && name.ends_with(suffix)
        {
            found.push((
                root.join(folder).join(&name),
                format!("{}{name}", asset.dest),
            ));
        }
    }
    if found.is_empty() {
        return Err(format!("{}: no file matches", asset.source).into());
    }
    found.sort();
    Ok(found)
}

/// What the ELF files among `sources` need (libc and its symbol versions, libzmq), from
/// rpm's find-requires, which reads the file names on its input.
fn find_requires(sources: &[PathBuf]) -> Result<Vec<String>> {
    let mut names = String::new();
    for source in sources {
        names.push_str(source.to_str().ok_or("a file name is not UTF-8")?);
        names.push('\n');
    }
    let mut child = Command::new(FIND_REQUIRES)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{FIND_REQUIRES}: {e} (install rpm)"))?;
    // Written from a thread: the script may answer before it has read everything.
    let mut stdin = child.stdin.take().ok_or("find-requires has no input")?;
    let writer =
        std::thread::spawn(move || std::io::Write::write_all(&mut stdin, names.as_bytes()));
    let output = child.wait_with_output()?;
    writer
        .join()
        .map_err(|_| "writing to find-requires failed")??;
    if !output.status.success() {
        return Err(format!("{FIND_REQUIRES} failed: {}", output.status).into());
    }
    let text = String::from_utf8(output.stdout)?;
    Ok(text
        .lines()
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect())
}

/// debian/changelog's entries, newest first, as rpm's %changelog has them: the trailer's
/// maintainer and date, the version, and the items as `- ` lines, continued indented.
fn parse_changelog(text: &str) -> Result<Vec<ChangelogEntry>> {
    let mut entries = Vec::new();
    let mut version = None;
    let mut items: Vec<String> = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let fail = |what: &str| format!("debian/changelog, line {}: {what}", number + 1);
        if let Some(trailer) = line.strip_prefix(" -- ") {
            let (who, date) = trailer
                .split_once("  ")
                .ok_or_else(|| fail("no date in the trailer"))?;
            let date =
                OffsetDateTime::parse(date.trim(), &Rfc2822).map_err(|e| fail(&e.to_string()))?;
            let version: String = version
                .take()
                .ok_or_else(|| fail("a trailer without its heading"))?;
            entries.push(ChangelogEntry {
                name: format!("{who} - {version}"),
                text: std::mem::take(&mut items).join("\n"),
                time: u32::try_from(date.unix_timestamp())
                    .map_err(|_| fail("a date before 1970"))?,
            });
        } else if let Some(item) = line.strip_prefix("  * ") {
            items.push(format!("- {item}"));
        } else if let Some(more) = line.strip_prefix("    ") {
            let last = items
                .last_mut()
                .ok_or_else(|| fail("a continued line outside an item"))?;
            last.push_str("\n  ");
            last.push_str(more.trim());
        } else if !line.trim().is_empty() {
            let (_, rest) = line.split_once(" (").ok_or_else(|| fail("not a heading"))?;
            let (found, _) = rest.split_once(')').ok_or_else(|| fail("not a heading"))?;
            version = Some(found.to_owned());
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_debian_changelog_becomes_rpm_entries_newest_first() {
        let text = "banshare (0.2.0-1) unstable; urgency=medium\n\n  * First item,\n    \
                    continued.\n  * Second.\n\n -- Dev <dev@example.org>  Mon, 07 Dec 2026 18:00:00 +0000\n\n\
                    banshare (0.1.0-1) unstable; urgency=medium\n\n  * Only.\n\n \
                    -- Dev <dev@example.org>  Wed, 25 Nov 2026 18:00:00 +0000\n";
        let entries = parse_changelog(text).unwrap();
        assert_eq!(
            entries,
            [
                ChangelogEntry {
                    name: "Dev <dev@example.org> - 0.2.0-1".into(),
                    text: "- First item,\n  continued.\n- Second.".into(),
                    time: 1_796_666_400,
                },
                ChangelogEntry {
                    name: "Dev <dev@example.org> - 0.1.0-1".into(),
                    text: "- Only.".into(),
                    time: 1_795_629_600
                },
            ]
        );
    }

    #[test]
    fn a_broken_changelog_is_refused_with_its_line() {
        let error = parse_changelog("banshare (0.2.0-1) unstable\n\n -- Dev <d@e>  not a date\n")
            .unwrap_err();
        assert!(
            error.to_string().starts_with("debian/changelog, line 3:"),
            "{error}"
        );
        let error = parse_changelog("    continued\n").unwrap_err();
        assert!(
            error.to_string().contains("line 1: a continued line"),
            "{error}"
        );
    }
}
