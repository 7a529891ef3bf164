//! scripts/release: the repositories it builds are what apt and rpm accept. The previous
//! release is published first, then this one: apt verifies the signed suite and offers each
//! in turn, rpm verifies every package's signature with the published key, and gpgv the
//! yum metadata's. Installing from them and upgrading, in a booted container, is the next
//! step of issue 29.

use crate::common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::container::{package, run_ok};
use common::release::{previous_packages, publish};

/// The version of banshare that apt, with only `repo` as its source, would install.
fn apt_candidate(repo: &Path, state: &Path) -> String {
    for dir in [
        "lists/partial",
        "archives/partial",
        "parts",
        "conf.d",
        "preferences.d",
    ] {
        fs::create_dir_all(state.join(dir)).unwrap();
    }
    fs::write(state.join("status"), "").unwrap();
    fs::write(
        state.join("banshare.sources"),
        format!(
            "Types: deb\nURIs: file:{}/apt\nSuites: bookworm\nComponents: main\nSigned-By: {}\n",
            repo.display(),
            repo.join("banshare.gpg").display()
        ),
    )
    .unwrap();
    let options = |command: &mut Command| {
        for (option, dir) in [
            ("Dir::State::Lists", "lists"),
            ("Dir::State::status", "status"),
            ("Dir::Cache::Archives", "archives"),
            ("Dir::Cache", ""),
            ("Dir::Etc::SourceList", "banshare.sources"),
            ("Dir::Etc::SourceParts", "parts"),
            ("Dir::Etc::Parts", "conf.d"),
            ("Dir::Etc::PreferencesParts", "preferences.d"),
        ] {
            command
                .arg("-o")
                .arg(format!("{option}={}", state.join(dir).display()));
        }
        command.args(["-o", "APT::Sandbox::User=root", "-q"]);
    };
    let mut update = Command::new("apt-get");
    options(&mut update);
    // A suite that is not signed, or not by this key, fails here.
    run_ok(
        "apt-get update",
        update.args(["-o", "Acquire::AllowInsecureRepositories=false", "update"]),
    );
    let mut policy = Command::new("apt-cache");
    options(&mut policy);
    let said = run_ok("apt-cache policy", policy.args(["policy", "banshare"]));
    said.lines()
        .find_map(|l| l.trim().strip_prefix("Candidate: "))
        .unwrap_or_else(|| panic!("no candidate: {said}"))
        .to_string()
}

#[test]
fn the_repositories_are_signed_and_offer_the_newest_release() {
    let old = previous_packages();
    let new = [
        package("debian", "_amd64.deb"),
        package("rpm", ".x86_64.rpm"),
    ];
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    publish(&repo, &[&old[0], &old[1]]);
    assert_eq!(apt_candidate(&repo, &dir.path().join("apt")), "0.1.0-1");
    publish(&repo, &[&new[0], &new[1]]);
    assert_eq!(apt_candidate(&repo, &dir.path().join("apt")), "0.2.0-1");

    // yum keeps both, each signed with the published key, and its metadata signed too.
    let rpmdb = dir.path().join("rpmdb");
    fs::create_dir_all(&rpmdb).unwrap();
    let rpmkeys = || {
        let mut command = Command::new("rpmkeys");
        command.arg("--dbpath").arg(&rpmdb);
        command
    };
    run_ok(
        "rpmkeys --import",
        rpmkeys().arg("--import").arg(repo.join("banshare.asc")),
    );
    for rpm in ["banshare-0.1.0-1.x86_64.rpm", "banshare-0.2.0-1.x86_64.rpm"] {
        let said = run_ok(
            "rpmkeys --checksig",
            rpmkeys().arg("--checksig").arg(repo.join("yum").join(rpm)),
        );
        assert!(said.contains("signatures OK"), "{said}");
    }
    let metadata = repo.join("yum/repodata/repomd.xml");
    run_ok(
        "gpgv",
        Command::new("gpgv")
            .arg("--keyring")
            .arg(repo.join("banshare.gpg"))
            .arg(metadata.with_extension("xml.asc"))
            .arg(&metadata),
    );
    let listed = fs::read_to_string(repo.join("banshare.repo")).unwrap();
    assert!(listed.contains("gpgcheck=1") && listed.contains("repo_gpgcheck=1"));
}
