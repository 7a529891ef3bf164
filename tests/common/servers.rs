//! Fleets whose servers peer with each other (docs/ha.md): one `Fleet` per server, each
//! with its own hosts, keys and journal, wired together as server.toml and client.toml
//! would be.

use std::collections::BTreeMap;
use std::fs;
use std::time::Duration;

use super::*;

/// `servers` fleets of one host each (web1 on server 0, web2 on server 1, ...), whose
/// servers peer with each other, server j being reached at `address(j)`; nothing is
/// started.
pub fn peered(servers: usize, server_extra: &str, address: impl Fn(usize) -> String) -> Vec<Fleet> {
    let mesh: Vec<(usize, usize)> = (0..servers)
        .flat_map(|i| (i + 1..servers).map(move |j| (i, j)))
        .collect();
    peered_in(servers, &mesh, server_extra, address)
}

/// As `peered`, but each server peers only with those `links` join it to: a graph of
/// servers, such as regional servers that peer with core servers only (docs/ha.md).
pub fn peered_in(
    servers: usize,
    links: &[(usize, usize)],
    server_extra: &str,
    address: impl Fn(usize) -> String,
) -> Vec<Fleet> {
    let fleets: Vec<Fleet> = (0..servers)
        .map(|i| Fleet::new(&[&format!("web{}", i + 1)], server_extra, ""))
        .collect();
    let linked = |i: usize, j: usize| links.contains(&(i, j)) || links.contains(&(j, i));
    for (i, fleet) in fleets.iter().enumerate() {
        let mut peers = String::new();
        for (j, other) in fleets.iter().enumerate().filter(|(j, _)| *j != i) {
            // Every host's key on every server, as docs/ha.md says: a peer's forwarded
            // report counts only under a key authorized here.
            let host = &other.hosts[0].name;
            let host_key = other.keys_dir.join(format!("{host}.key"));
            fs::copy(host_key, fleet.auth_dir.join(format!("{host}.key"))).unwrap();
            if !linked(i, j) {
                continue;
            }
            // Servers authorize each other like hosts; the key file's name names the peer.
            let key = fleet.dir.path().join(format!("bs{}.key", j + 1));
            fs::copy(other.keys_dir.join("server.key"), &key).unwrap();
            fs::copy(&key, fleet.auth_dir.join(format!("bs{}.key", j + 1))).unwrap();
            peers.push_str(&format!(
                "\n[[peers]]\naddress = \"{}\"\nreport-port = {}\npublish-port = {}\nkey = \"{}\"\n",
                address(j),
                other.report_port,
                other.publish_port,
                key.display()
            ));
        }
        let text = read(&fleet.server_config) + &peers;
        fs::write(&fleet.server_config, text).unwrap();
    }
    fleets
}

/// The `servers = [...]` line that lists `servers`, each reached at `address(j)`.
pub fn servers_line(fleets: &[Fleet], address: impl Fn(usize) -> String) -> String {
    let entries: Vec<String> = fleets
        .iter()
        .enumerate()
        .map(|(j, f)| {
            format!(
                "{{ address = \"{}\", report-port = {}, publish-port = {}, key = \"{}\" }}",
                address(j),
                f.report_port,
                f.publish_port,
                f.keys_dir.join("server.key").display()
            )
        })
        .collect();
    format!("servers = [{}]\n", entries.join(", "))
}

/// Makes every host of `fleets` report to and follow every server.
pub fn follow_every_server(fleets: &[Fleet], address: impl Fn(usize) -> String) {
    let servers = servers_line(fleets, address);
    for fleet in fleets {
        for host in &fleet.hosts {
            let text: String = read(&host.config)
                .lines()
                .filter(|l| !l.starts_with("server = ") && !l.starts_with("server-key = "))
                .map(|l| format!("{l}\n"))
                .collect();
            fs::write(&host.config, servers.clone() + &text).unwrap();
            // Every server lets every host in.
            let key = fleet.keys_dir.join(format!("{}.key", host.name));
            for other in fleets {
                fs::copy(&key, other.auth_dir.join(format!("{}.key", host.name))).unwrap();
            }
        }
    }
}

/// Starts every server, then every host's client.
pub fn start_all(fleets: &mut [Fleet]) {
    for fleet in fleets.iter_mut() {
        fleet.start_server();
    }
    for fleet in fleets.iter_mut() {
        fleet.start_client(0);
    }
}

pub fn admin_ok(fleet: &Fleet, args: &[&str]) -> String {
    let out = fleet.admin(args);
    assert_eq!(outcome(&out).0, 0, "banshare {args:?}: {:?}", outcome(&out));
    String::from_utf8(out.stdout).unwrap()
}

pub fn status(fleet: &Fleet) -> serde_json::Value {
    serde_json::from_str(&admin_ok(fleet, &["status", "--json"])).unwrap()
}

/// The active bans a server lists, as (ip, what was published about it).
pub fn table(fleet: &Fleet) -> BTreeMap<String, String> {
    let bans: Vec<serde_json::Value> =
        serde_json::from_str(&admin_ok(fleet, &["bans", "--json"])).unwrap();
    bans.iter()
        .map(|b| {
            let published = ["prog", "jail", "origin", "bantime", "expires"]
                .map(|k| b[k].to_string())
                .join(" ");
            (b["ip"].as_str().unwrap().to_string(), published)
        })
        .collect()
}

/// Waits until every server lists the same bans, and returns them.
pub fn converged(fleets: &[Fleet]) -> BTreeMap<String, String> {
    wait_for("the servers to converge", Duration::from_secs(30), || {
        let first = table(&fleets[0]);
        fleets[1..]
            .iter()
            .all(|f| table(f) == first)
            .then_some(first)
    })
}

/// Waits until the server has read every peer's table since it started.
pub fn wait_synced(fleet: &Fleet) {
    wait_for(
        "the server to catch up with its peers",
        Duration::from_secs(30),
        || {
            let status = status(fleet);
            let peers = status["peers"].as_array().cloned().unwrap_or_default();
            peers.iter().all(|p| p["synced"] == true).then_some(())
        },
    );
}
