//! What each fuzz target does with its bytes, in one place for both of its runners:
//! - `fuzz/`, libFuzzer under nightly, coverage-guided, on demand (`scripts/fuzz`);
//! - `tests/fuzz.rs`, on every test run with stable Rust: each seed of `fuzz/corpus/` and
//!   thousands of mutations of them.
//!
//! No target may panic, whatever the bytes. Where a parser makes a promise beyond that (a
//! template's values never change the program), its target asserts it.

use crate::blocklist::{self, Format, Options};
use crate::config::template::{Template, Values};
use crate::config::{ClientConfig, ServerConfig};
use crate::daemon::http::{status_after, HEAD_MAX};
use crate::server::policy::confirm::PendingSet;
use crate::store::Record;
use crate::wire::keys::{parse_public, parse_secret};
use crate::wire::protocol::{decode_request, Bantime, Publish, Request, SnapshotPage, Verdict};
use std::path::Path;

/// A target: what it does with one input.
pub type Target = fn(&[u8]);

/// Every target by name, the name of its folder in `fuzz/corpus/` and of its binary in `fuzz/`.
pub const TARGETS: [(&str, Target); 8] = [
    ("report", report),
    ("legacy", legacy),
    ("publish", publish),
    ("config", config),
    ("keyfile", keyfile),
    ("template", template),
    ("http_head", http_head),
    ("blocklist", blocklist),
];

/// The input cut at each 0x00 byte, so that a fuzzer reaches every count of frames or reads.
fn pieces(data: &[u8]) -> Vec<Vec<u8>> {
    data.split(|b| *b == 0).map(<[u8]>::to_vec).collect()
}

/// The server's decoder of requests on the report socket, and of the report line that a
/// FORWARD request from a peer carries.
pub fn report(data: &[u8]) {
    if let Ok(Request::Forward { line, .. }) = decode_request(&pieces(data)) {
        let fields: Vec<&str> = line.split(' ').collect();
        let _ = PendingSet::decode(&fields);
    }
}

/// The 2014 program's one-frame report.
pub fn legacy(data: &[u8]) {
    let _ = decode_request(&[data.to_vec()]);
}

/// What a client decodes from a server: published messages, snapshot pages, verdicts.
pub fn publish(data: &[u8]) {
    let frames = pieces(data);
    let _ = Publish::decode(&frames);
    let _ = SnapshotPage::decode(&frames);
    let _ = Verdict::decode(&frames);
}

/// server.toml and client.toml.
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let path = Path::new("fuzz.toml");
        let _ = ServerConfig::from_text(path, text);
        let _ = ClientConfig::from_text(path, text);
    }
}

/// zcert key files, public and secret.
pub fn keyfile(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let path = Path::new("fuzz.key");
        let _ = parse_public(path, text);
        let _ = parse_secret(path, text);
    }
}

/// A ban-command template on the first line, the values of its tags on the next four.
pub fn template(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let Ok(template) = Template::parse(lines.next().unwrap_or_default()) else {
        return;
    };
    let mut value = || lines.next().unwrap_or_default();
    let values = Values {
        ip: value(),
        jail: value(),
        prog: value(),
        bantime: value(),
    };
    let argv = template.expand(&values);
    assert!(!argv.is_empty(), "a template always names a program");
    assert_eq!(
        argv[0],
        template.program(),
        "values never change the program"
    );
}

/// The metrics endpoint's request heads, arriving in reads cut at each 0x00 byte: every head
/// is answered 200, 400 or 431, or still waits, and then it is shorter than the limit.
pub fn http_head(data: &[u8]) {
    let reads: Vec<&[u8]> = data.split(|b| *b == 0).collect();
    match status_after(&reads) {
        Some(status) => assert!([200, 400, 431].contains(&status), "{status}"),
        None => {
            let kept: usize = reads.iter().map(|r| r.len()).sum();
            assert!(kept < HEAD_MAX, "a head of {kept} bytes still waits");
        }
    }
}

/// `banshare import`'s lists, in every format and as `auto` reads them: every entry is a
/// report, a bad entry or a skipped one, and nothing else.
pub fn blocklist(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for format in [
        Format::Auto,
        Format::Plain,
        Format::SpamhausJson,
        Format::Ipsum,
        Format::Crowdsec,
    ] {
        let options = Options::import(format, Bantime::Default, 2);
        let list = blocklist::parse(text, &options);
        let entries = list.reports.len() + list.bad.len() + list.skipped.values().sum::<usize>();
        assert!(
            entries <= text.len(),
            "{entries} entries from {} bytes",
            text.len()
        );
    }
}
