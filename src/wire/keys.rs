//! CURVE key files in the zcert format that czmq's `zcert_save` and pyzmq's
//! `zmq.auth.create_certificates` write: `NAME.key` holds the public key, `NAME.key_secret`
//! holds both. Keys live in files under /etc/banshare, never in the binaries.

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::exit::{Exit, Failure};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {1}", path = .0.display())]
    Io(PathBuf, io::Error),
    #[error("{path}: {1}", path = .0.display())]
    Format(PathBuf, String),
    /// A secret key file that other users can read.
    #[error(
        "{path}: secret key file is readable by other users (mode {1:04o}); fix it with: \
         chmod 600 {path} (or chmod 640 and chgrp banshare)",
        path = .0.display()
    )]
    Exposed(PathBuf, u32),
    #[error("{path} already exists; use --force to replace it", path = .0.display())]
    Exists(PathBuf),
    #[error(
        "invalid key name {0:?}: use letters, digits, '.', '_' and '-' only, not starting \
         with '.' or '-'"
    )]
    BadName(String),
    /// libzmq was built without CURVE, so it cannot make keys.
    #[error("cannot generate a CURVE key pair: {0}")]
    NoCurve(String),
    /// A key file or directory that another user could change (see `files::check_trusted`).
    #[error("{0}")]
    Unsafe(String),
}

/// A key file that is wrong is EX_CONFIG wherever it is found.
impl From<KeyError> for Failure {
    fn from(e: KeyError) -> Failure {
        Exit::Config.with(e)
    }
}

/// A CURVE public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    pub fn z85(&self) -> String {
        zmq::z85_encode(&self.0).expect("32 bytes always encode")
    }

    /// The whole key in hex, where Z85 would need libzmq (`wire::handoff`).
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// A short, non-secret identifier for logs: the first 8 bytes of the key in hex.
    pub fn fingerprint(&self) -> String {
        self.0[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn from_z85(text: &str) -> Option<PublicKey> {
        decode_key(text).map(PublicKey)
    }

    /// A key from its 64 hex digits (`hex`), upper or lower case.
    pub fn from_hex(text: &str) -> Option<PublicKey> {
        // Digits only: from_str_radix would take a sign too.
        if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let mut key = [0u8; 32];
        for (byte, pair) in key.iter_mut().zip(text.as_bytes().chunks(2)) {
            let pair = std::str::from_utf8(pair).ok()?;
            *byte = u8::from_str_radix(pair, 16).ok()?;
        }
        Some(PublicKey(key))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.fingerprint())
    }
}

/// A key pair read from a `.key_secret` file. Its Debug output never shows the secret.
#[derive(Clone)]
pub struct KeyPair {
    pub public: PublicKey,
    secret: [u8; 32],
}

impl KeyPair {
    pub fn generate() -> Result<KeyPair, KeyError> {
        let pair = zmq::CurveKeyPair::new().map_err(|e| KeyError::NoCurve(e.to_string()))?;
        Ok(KeyPair {
            public: PublicKey(pair.public_key),
            secret: pair.secret_key,
        })
    }

    pub fn secret_bytes(&self) -> &[u8; 32] {
        &self.secret
    }
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyPair({}, secret hidden)", self.public.fingerprint())
    }
}

const Z85_ALPHABET: &[u8] =
    b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";

/// Decodes a 40-character Z85 key. Our own decoder: libzmq's accepts characters outside the
/// alphabet and wraps groups that overflow, and the zmq crate's `z85_decode` leaks its input
/// on every call (found by fuzzing), which the server would do for every message it checks.
fn decode_key(text: &str) -> Option<[u8; 32]> {
    if text.len() != 40 {
        return None;
    }
    let mut key = [0u8; 32];
    for (group, out) in text.as_bytes().chunks(5).zip(key.chunks_mut(4)) {
        let mut value: u64 = 0;
        for &c in group {
            let digit = Z85_ALPHABET.iter().position(|&a| a == c)?;
            value = value * 85 + digit as u64;
        }
        let value = u32::try_from(value).ok()?;
        out.copy_from_slice(&value.to_be_bytes());
    }
    Some(key)
}

/// The value of `NAME = "VALUE"` in the `curve` section, as pyzmq and czmq write it.
fn field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines().find_map(|line| {
        let (key, value) = line.trim().split_once('=')?;
        (key.trim() == name).then(|| value.trim().trim_matches(|c| c == '"' || c == '\''))
    })
}

/// Reads a key file that no other user may change: whoever could would choose which key
/// this host trusts or uses.
fn read(path: &Path) -> Result<String, KeyError> {
    crate::files::check_trusted(path).map_err(|e| KeyError::Unsafe(e.to_string()))?;
    fs::read_to_string(path).map_err(|e| KeyError::Io(path.to_owned(), e))
}

fn key_field(path: &Path, text: &str, name: &str) -> Result<[u8; 32], KeyError> {
    let value = field(text, name)
        .ok_or_else(|| KeyError::Format(path.to_owned(), format!("no {name} found")))?;
    decode_key(value).ok_or_else(|| {
        KeyError::Format(
            path.to_owned(),
            format!("{name} is not a 40-character Z85 CURVE key"),
        )
    })
}

/// Reads the public key from a `.key` or `.key_secret` file.
pub fn load_public(path: &Path) -> Result<PublicKey, KeyError> {
    parse_public(path, &read(path)?)
}

/// The public key in a key file's `text`, read from `path` (which errors name).
pub fn parse_public(path: &Path, text: &str) -> Result<PublicKey, KeyError> {
    key_field(path, text, "public-key").map(PublicKey)
}

/// Reads a key pair from a `.key_secret` file, refusing one that other users can read.
pub fn load_secret(path: &Path) -> Result<KeyPair, KeyError> {
    let meta = fs::metadata(path).map_err(|e| KeyError::Io(path.to_owned(), e))?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o004 != 0 {
        return Err(KeyError::Exposed(path.to_owned(), mode));
    }
    parse_secret(path, &read(path)?)
}

/// The key pair in a `.key_secret` file's `text`, read from `path` (which errors name).
pub fn parse_secret(path: &Path, text: &str) -> Result<KeyPair, KeyError> {
    Ok(KeyPair {
        public: parse_public(path, text)?,
        secret: key_field(path, text, "secret-key")?,
    })
}

/// Public keys allowed to talk to the server, by key, with the file name they came from.
#[derive(Debug, Default, Clone)]
pub struct AuthorizedKeys {
    pub by_key: HashMap<PublicKey, String>,
    /// Files that could not be read; they authorize nothing.
    pub problems: Vec<String>,
}

/// Reads every `NAME.key` file in `dir`, in name order. A broken file is reported but does
/// not stop the others from loading, so one bad file cannot lock out the whole fleet. When
/// two files hold the same key, the first by name is the one loaded, so that the origin of
/// a ban does not depend on the order the file system lists them in.
pub fn load_authorized(dir: &Path) -> Result<AuthorizedKeys, KeyError> {
    // Whoever could add a file here could let any key in.
    crate::files::check_trusted(dir).map_err(|e| KeyError::Unsafe(e.to_string()))?;
    let mut paths = fs::read_dir(dir)
        .and_then(|entries| {
            entries
                .map(|e| e.map(|e| e.path()))
                .collect::<io::Result<Vec<_>>>()
        })
        .map_err(|e| KeyError::Io(dir.to_owned(), e))?;
    paths.sort();
    let mut keys = AuthorizedKeys::default();
    for path in paths {
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".key"))
        else {
            continue;
        };
        let loaded = check_name(name).and_then(|()| load_public(&path));
        match loaded {
            Ok(key) => match keys.by_key.get(&key) {
                Some(first) => keys.problems.push(format!(
                    "{}: same key as {first}.key, which is the one loaded; one name per key",
                    path.display()
                )),
                None => {
                    keys.by_key.insert(key, name.to_owned());
                }
            },
            Err(err @ KeyError::BadName(_)) => {
                keys.problems.push(format!("{}: {err}", path.display()));
            }
            Err(err) => keys.problems.push(err.to_string()),
        }
    }
    Ok(keys)
}

pub fn check_name(name: &str) -> Result<(), KeyError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(KeyError::BadName(name.to_owned()))
    }
}

const HEADER: &str = "#   ****  Generated by banshare keygen  ****\n";

fn public_text(pair: &KeyPair) -> String {
    format!(
        "{HEADER}#   ZeroMQ CURVE Public Certificate\n\
         #   Exchange securely, or use a secure mechanism to verify the contents\n\
         #   of this file after exchange.\n\n\
         metadata\ncurve\n    public-key = \"{}\"\n",
        pair.public.z85()
    )
}

fn secret_text(pair: &KeyPair) -> String {
    format!(
        "{HEADER}#   ZeroMQ CURVE **Secret** Certificate\n\
         #   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions.\n\n\
         metadata\ncurve\n    public-key = \"{}\"\n    secret-key = \"{}\"\n",
        pair.public.z85(),
        zmq::z85_encode(&pair.secret).expect("32 bytes always encode")
    )
}

/// Writes `DIR/NAME.key` (mode 0644) and `DIR/NAME.key_secret` (mode 0600 from the moment
/// it exists). Returns the two paths.
pub fn generate(dir: &Path, name: &str, force: bool) -> Result<(PathBuf, PathBuf), KeyError> {
    check_name(name)?;
    // Before anything is written: another user who can write there could swap the files,
    // and the daemons would refuse to load them anyway.
    crate::files::check_own_dir(dir).map_err(|e| KeyError::Unsafe(e.to_string()))?;
    let public_path = dir.join(format!("{name}.key"));
    let secret_path = dir.join(format!("{name}.key_secret"));
    if !force {
        for path in [&public_path, &secret_path] {
            if path.exists() {
                return Err(KeyError::Exists(path.clone()));
            }
        }
    }
    let pair = KeyPair::generate()?;
    write_atomic(&secret_path, &secret_text(&pair), 0o600)?;
    write_atomic(&public_path, &public_text(&pair), 0o644)?;
    Ok((public_path, secret_path))
}

/// Writes to a temporary file created with `mode`, then renames it into place, so the file
/// never exists with looser permissions or half-written.
fn write_atomic(path: &Path, text: &str, mode: u32) -> Result<(), KeyError> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let io_err = |e| KeyError::Io(path.to_owned(), e);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_err)?;
    let written = file
        .write_all(text.as_bytes())
        .and_then(|_| file.sync_all())
        .and_then(|_| fs::rename(&tmp, path));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written.map_err(io_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_load_back_with_safe_modes() {
        let dir = tempfile::tempdir().unwrap();
        let (public, secret) = generate(dir.path(), "web1", false).unwrap();
        let pair = load_secret(&secret).unwrap();
        assert_eq!(load_public(&public).unwrap(), pair.public);
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&secret), 0o600);
        assert_eq!(mode(&public), 0o644);
        assert!(!format!("{pair:?}").contains(&zmq::z85_encode(pair.secret_bytes()).unwrap()));
    }

    #[test]
    fn refuses_to_overwrite_without_force() {
        let dir = tempfile::tempdir().unwrap();
        let (public, _) = generate(dir.path(), "a", false).unwrap();
        let before = load_public(&public).unwrap();
        assert!(matches!(
            generate(dir.path(), "a", false),
            Err(KeyError::Exists(_))
        ));
        generate(dir.path(), "a", true).unwrap();
        assert_ne!(load_public(&public).unwrap(), before);
    }

    #[test]
    fn refuses_world_readable_secret() {
        let dir = tempfile::tempdir().unwrap();
        let (_, secret) = generate(dir.path(), "a", false).unwrap();
        fs::set_permissions(&secret, fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_secret(&secret).unwrap_err();
        assert!(matches!(err, KeyError::Exposed(_, 0o644)));
        assert!(err.to_string().contains("chmod 600"));
        fs::set_permissions(&secret, fs::Permissions::from_mode(0o640)).unwrap();
        load_secret(&secret).unwrap();
    }

    #[test]
    fn reads_czmq_style_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.key");
        let key = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7";
        fs::write(
            &path,
            format!("#   comment\nmetadata\n    name = \"x\"\ncurve\n    public-key = \"{key}\"\n"),
        )
        .unwrap();
        assert_eq!(load_public(&path).unwrap().z85(), key);
    }

    #[test]
    fn z85_decodes_what_libzmq_encodes_and_nothing_else() {
        for _ in 0..100 {
            let pair = KeyPair::generate().unwrap();
            assert_eq!(decode_key(&pair.public.z85()), Some(pair.public.0));
        }
        // The example key from the Z85 specification (ZMQ RFC 32).
        let hello = decode_key(&"HelloWorld".repeat(4)).unwrap();
        assert_eq!(
            &hello[..8],
            [0x86, 0x4F, 0xD2, 0x6F, 0xB5, 0x59, 0xF7, 0x5B]
        );
        // Overflowing groups, characters outside the alphabet, wrong lengths.
        assert_eq!(decode_key(&"#".repeat(40)), None);
        assert_eq!(decode_key(&format!("{}~", "0".repeat(39))), None);
        assert_eq!(decode_key(&"0".repeat(35)), None);
    }

    #[test]
    fn rejects_malformed_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.key");
        for text in [
            "",
            "curve\n    public-key = \"short\"\n",
            "public-key = \"rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf~\"\n",
        ] {
            fs::write(&path, text).unwrap();
            assert!(
                matches!(load_public(&path), Err(KeyError::Format(..))),
                "{text:?}"
            );
        }
    }

    #[test]
    fn authorized_dir_skips_bad_files_and_secrets() {
        let dir = tempfile::tempdir().unwrap();
        generate(dir.path(), "good", false).unwrap();
        fs::write(dir.path().join("broken.key"), "nothing").unwrap();
        fs::copy(dir.path().join("good.key"), dir.path().join("bad name.key")).unwrap();
        let keys = load_authorized(dir.path()).unwrap();
        assert_eq!(keys.by_key.values().collect::<Vec<_>>(), ["good"]);
        assert_eq!(keys.problems.len(), 2, "{:?}", keys.problems);
    }

    #[test]
    fn the_first_of_two_files_with_the_same_key_is_loaded() {
        let dir = tempfile::tempdir().unwrap();
        // Many pairs, so that the file system's listing order cannot pass by chance.
        let names: Vec<String> = (0..20).map(|i| format!("host{i:02}")).collect();
        for name in &names {
            let (public, _) = generate(dir.path(), name, false).unwrap();
            fs::copy(&public, dir.path().join(format!("z-{name}.key"))).unwrap();
        }
        let keys = load_authorized(dir.path()).unwrap();
        let mut loaded: Vec<&String> = keys.by_key.values().collect();
        loaded.sort();
        assert_eq!(loaded, names.iter().collect::<Vec<_>>());
        assert_eq!(keys.problems.len(), 20);
        assert!(
            keys.problems[0]
                .contains("z-host00.key: same key as host00.key, which is the one loaded"),
            "{:?}",
            keys.problems
        );
    }

    #[test]
    fn key_names_are_checked() {
        for bad in ["", "../x", ".hidden", "a b", "a/b", "-rf", "--help"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        check_name("web-1.example_com").unwrap();
    }
}
