//! The man pages of the four programs are generated from their clap definitions and kept
//! in debian/man. This test fails when they are out of date; regenerate them with
//! `BANSHARE_UPDATE_MAN=1 cargo test --test manpages`.

use std::path::Path;

use banshare::cli::{AdminArgs, ClientArgs, ReportArgs, ServerArgs};
use clap::CommandFactory;

fn render(command: clap::Command, section: &str) -> Vec<u8> {
    let mut page = Vec::new();
    clap_mangen::Man::new(command)
        .section(section)
        .manual("banshare")
        .source(format!("banshare {}", env!("CARGO_PKG_VERSION")))
        .render(&mut page)
        .unwrap();
    page
}

#[test]
fn man_pages_match_the_command_line() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("debian/man");
    let pages = [
        ("banshare-server.8", render(ServerArgs::command(), "8")),
        ("banshare-client.8", render(ClientArgs::command(), "8")),
        ("banshare-report.1", render(ReportArgs::command(), "1")),
        ("banshare.8", render(AdminArgs::command(), "8")),
    ];
    let update = std::env::var_os("BANSHARE_UPDATE_MAN").is_some();
    for (name, page) in pages {
        let path = dir.join(name);
        if update {
            std::fs::write(&path, &page).unwrap();
        }
        let shipped = std::fs::read(&path).unwrap_or_default();
        assert!(
            shipped == page,
            "{} is out of date: run BANSHARE_UPDATE_MAN=1 cargo test --test manpages",
            path.display()
        );
    }
}
