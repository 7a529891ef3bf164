//! `banshare import` with the lists operators download, held to `import-min-prefix` and
//! kept off protected and private space; `banshare bans --format` for other tools: files
//! the real nft and ipset load, and CSV that `banshare import` takes back (README
//! "Blocklists").

use crate::common;

use std::fs;
use std::process::Command;

use common::*;

/// Writes `text` as `name` in the fleet's directory, and imports it with `args`.
fn import(fleet: &Fleet, name: &str, text: &str, args: &[&str]) -> (i32, String, String) {
    let file = fleet.dir.path().join(name);
    fs::write(&file, text).unwrap();
    let out = fleet.admin(&[&["import", file.to_str().unwrap()][..], args].concat());
    let (code, stderr) = outcome(&out);
    (code, String::from_utf8(out.stdout).unwrap(), stderr)
}

#[test]
fn lists_in_every_format_ban_their_networks_fleet_wide_within_import_min_prefix() {
    let mut fleet = Fleet::start(&["web1"], "", "");
    let drop = "; Spamhaus DROP List 2026/12/07 - (c) 2026 The Spamhaus Project SLU\r\n\
                ; Last-Modified: Mon, 07 Dec 2026 05:17:00 GMT\r\n\
                45.128.0.0/10 ; SBL637001\r\n1.19.0.0/16 ; SBL434604\r\n";
    let (code, said, stderr) = import(
        &fleet,
        "drop.txt",
        drop,
        &["--origin", "spamhaus", "--bantime", "1d"],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        said.contains("2 accepted, 0 duplicates, 0 refused"),
        "{said}"
    );

    // FireHOL level1 names the bogons: each is refused by its reason, the rest imported.
    let level1 = "#\n# firehol_level1\n#\n# ipv4 hash:net ipset\n#\n0.0.0.0/8\n5.188.10.0/23\n\
                  10.0.0.0/8\n127.0.0.0/8\n192.168.0.0/16\n224.0.0.0/3\n";
    let (code, said, stderr) = import(
        &fleet,
        "firehol_level1.netset",
        level1,
        &["--origin", "firehol"],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        said.contains("1 accepted, 0 duplicates, 5 refused (min-prefix 1, protected 4)"),
        "{said}"
    );
    for why in [
        "224.0.0.0/3: 224.0.0.0/3 is wider than the smallest allowed prefix /8",
        "0.0.0.0/8: 0.0.0.0/8 covers unspecified address 0.0.0.0/8",
        "10.0.0.0/8: 10.0.0.0/8 covers private address 10.0.0.0/8",
        "127.0.0.0/8: 127.0.0.0/8 covers loopback address 127.0.0.0/8",
    ] {
        assert!(said.contains(&format!("refused {why}")), "{why}: {said}");
    }

    let ipsum = "# IPsum Threat Intelligence Feed\n#\n# IP\tnumber of (black)lists\n#\n\
                 185.224.128.17\t10\n80.94.95.115\t1\n";
    let (code, said, stderr) = import(
        &fleet,
        "ipsum.txt",
        ipsum,
        &["--origin", "ipsum", "--min-count", "3"],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        said.contains(
            "1 accepted, 0 duplicates, 0 refused, 1 skipped (named by fewer than 3 lists: 1)"
        ),
        "{said}"
    );

    let json = "{\"cidr\":\"103.35.188.0/22\",\"sblid\":\"SBL599999\",\"rir\":\"apnic\"}\n\
                {\"type\":\"metadata\",\"timestamp\":1796620000,\"size\":72,\"records\":1}\n";
    let (code, said, stderr) = import(&fleet, "drop_v4.json", json, &["--origin", "spamhaus"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(said.contains("1 accepted"), "{said}");

    let crowdsec = r#"[{"id": 1, "decisions": [
        {"duration": "3h59m58.2s", "origin": "crowdsec", "scenario": "crowdsecurity/ssh-bf", "scope": "Ip", "type": "ban", "value": "198.51.100.23"},
        {"duration": "4h", "origin": "crowdsec", "scenario": "crowdsecurity/http-probing", "scope": "Ip", "type": "captcha", "value": "198.51.100.24"}]}]"#;
    let (code, said, stderr) = import(
        &fleet,
        "decisions.json",
        crowdsec,
        &["--origin", "crowdsec"],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        said.contains("1 accepted, 0 duplicates, 0 refused, 1 skipped (not a ban: captcha: 1)"),
        "{said}"
    );

    // The client holds bans of prog import to its own import-min-prefix: the /10 is applied.
    for line in [
        "ban import blocklist 45.128.0.0/10 86400",
        "ban import blocklist 5.188.10.0/23 86400",
        "ban import blocklist 185.224.128.17 86400",
        "ban import blocklist 103.35.188.0/22 86400",
        "ban import crowdsecurity.ssh-bf 198.51.100.23 14399",
    ] {
        fleet.wait_applied(0, line);
    }
    // A host is held to min-prefix whatever prog it names: it cannot pass for a list.
    let (code, stderr) = outcome(&fleet.report(0, &["import", "blocklist", "45.0.0.0/16"]));
    assert_eq!(code, 77, "{stderr}");
    assert!(
        stderr.contains("wider than the smallest allowed prefix /24"),
        "{stderr}"
    );

    // Which a client narrows for itself: after a reload, it lifts the /10 it now refuses.
    fleet.add_client_config(0, "import-min-prefix = { ipv4 = 12 }\n");
    fleet.signal_client(0, nix::sys::signal::Signal::SIGHUP);
    fleet.wait_applied(0, "unban import blocklist 45.128.0.0/10 86400");
    fleet.stop_client(0);
}

#[test]
fn a_bad_entry_refuses_the_list_unless_skip_invalid_and_min_prefix_narrows_one_import() {
    let fleet = Fleet::start(&["web1"], "", "");
    let list = "203.0.113.10\nnot-an-address\n45.128.0.0/10\n203.0.113.11 7\n";
    let (code, _, stderr) = import(&fleet, "list.txt", list, &[]);
    assert_eq!(code, 65, "{stderr}");
    assert!(
        stderr.contains("list.txt:2: ") && stderr.contains("2 bad entries; nothing imported"),
        "{stderr}"
    );
    assert!(fleet
        .admin_ok(&["bans", "--format", "plain"])
        .trim()
        .is_empty());

    let (code, said, stderr) = import(
        &fleet,
        "list.txt",
        list,
        &["--skip-invalid", "--min-prefix", "16"],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        said.contains("1 accepted, 0 duplicates, 1 refused (min-prefix 1), 2 bad entries skipped"),
        "{said}"
    );
    assert!(said.contains("refused 45.128.0.0/10: 45.128.0.0/10 is wider than the smallest allowed prefix /16 (--min-prefix)"), "{said}");
    assert!(
        said.contains("bad ") && said.contains("list.txt:4: 2 fields, where a line has at most 1"),
        "{said}"
    );
    assert_eq!(
        fleet.admin_ok(&["bans", "--format", "plain"]).trim(),
        "203.0.113.10"
    );

    // A list is text, and at most 64 MiB.
    let binary = fleet.dir.path().join("binary.txt");
    fs::write(&binary, b"203.0.113.12\n\xff\xfe").unwrap();
    let (code, stderr) = outcome(&fleet.admin(&["import", binary.to_str().unwrap()]));
    assert_eq!(code, 65, "{stderr}");
    assert!(stderr.contains("not UTF-8 text (byte 13)"), "{stderr}");
    let big = fleet.dir.path().join("big.txt");
    fs::File::create(&big)
        .unwrap()
        .set_len((64 << 20) + 1)
        .unwrap();
    let (code, stderr) = outcome(&fleet.admin(&["import", big.to_str().unwrap()]));
    assert_eq!(code, 65, "{stderr}");
    assert!(stderr.contains("longer than 64 MiB"), "{stderr}");
}

/// `banshare bans --format FORMAT`, loaded by `script` (with the file as $0) in a network
/// namespace of its own: what it lists.
fn load(fleet: &Fleet, format: &str, script: &str) -> String {
    let export = fleet.admin_ok(&["bans", "--format", format]);
    let file = fleet.dir.path().join(format!("bans.{format}"));
    fs::write(&file, &export).unwrap();
    let out = Command::new("unshare")
        .args(["-n", "sh", "-c", script])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{export}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn bans_export_to_nft_ipset_and_csv_which_import_takes_back() {
    let fleet = Fleet::start(&["web1"], "", "");
    let list = "address,bantime,jail\n203.0.113.7,600,sshd\n198.51.100.0/24,-1,web\n\
                198.51.100.128/25,7200,web\n2001:db8:1::/48,,\n2001:db8:2::5,3600,sshd\n";
    let (code, said, stderr) = import(&fleet, "bans.csv", list, &["--origin", "old-server"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(said.contains("5 accepted"), "{said}");

    // The real nft loads the file, in a network namespace of its own.
    let listed = load(
        &fleet,
        "nft",
        "nft -f \"$0\" && nft list table inet banshare_export",
    );
    for element in [
        "203.0.113.7 timeout",
        "2001:db8:2::5 timeout",
        "198.51.100.0/24",
        "2001:db8:1::/48 timeout",
    ] {
        assert!(listed.contains(element), "{element}: {listed}");
    }
    // The /25 inside the permanent /24 is left out: nft refuses overlapping intervals.
    assert!(!listed.contains("198.51.100.128"), "{listed}");

    // The real ipset restores its own, overlapping networks and all.
    let listed = load(&fleet, "ipset", "ipset restore < \"$0\" && ipset list");
    for element in [
        "203.0.113.7 timeout",
        "198.51.100.0/24 timeout 0",
        "198.51.100.128/25 timeout",
        "2001:db8:2::5 timeout",
    ] {
        assert!(listed.contains(element), "{element}: {listed}");
    }

    // CSV round-trips: lifted, imported again, the same bans.
    let csv = fleet.admin_ok(&["bans", "--format", "csv"]);
    let before = fleet.admin_ok(&["bans", "--format", "plain"]);
    fleet.admin_ok(&["unban", "--origin", "old-server"]);
    assert!(fleet
        .admin_ok(&["bans", "--format", "plain"])
        .trim()
        .is_empty());
    let (code, said, stderr) = import(&fleet, "export.csv", &csv, &["--origin", "old-server"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(said.contains("5 accepted"), "{said}");
    assert_eq!(fleet.admin_ok(&["bans", "--format", "plain"]), before);
}
