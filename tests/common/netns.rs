//! Hosts as network namespaces: one namespace, or a LAN of them on a bridge, and TCP
//! services to connect to. Everything is deleted when dropped, also when the test fails.

use std::process::Command;

/// A network namespace of the test's own, with its loopback up; deleted when dropped, also
/// when the test fails.
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    pub fn new(tag: &str) -> NetNs {
        let name = format!("bs{}-{tag}", std::process::id());
        let ok = |args: &[&str]| {
            let status = Command::new("ip").args(args).status().unwrap();
            assert!(status.success(), "ip {args:?}");
        };
        ok(&["netns", "add", &name]);
        ok(&["netns", "exec", &name, "ip", "link", "set", "lo", "up"]);
        NetNs { name }
    }

    /// Runs a command in the namespace and returns its standard output.
    pub fn run(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// The addresses and networks in one of the nftables backend's sets.
    pub fn nft_elements(&self, set: &str) -> std::collections::HashSet<String> {
        let json = self.run(&["nft", "-j", "list", "set", "inet", "banshare", set]);
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        let mut found = std::collections::HashSet::new();
        for item in value["nftables"].as_array().into_iter().flatten() {
            for elem in item["set"]["elem"].as_array().into_iter().flatten() {
                // An element is an address, a prefix object, or either with a timeout.
                let inner = elem.get("elem").map_or(elem, |e| &e["val"]);
                let text = match (inner.as_str(), inner.get("prefix")) {
                    (Some(addr), _) => addr.to_string(),
                    (None, Some(p)) => format!("{}/{}", p["addr"].as_str().unwrap(), p["len"]),
                    _ => inner.to_string(),
                };
                found.insert(text);
            }
        }
        found
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Simulated hosts on one LAN: a bridge in a namespace of its own, and one namespace per
/// host joined to it by a veth pair, with addresses from 198.51.100.0/24. Everything is
/// deleted when the lab is dropped, also when the test fails.
pub struct Lab {
    pub bridge: NetNs,
    pub hosts: Vec<(NetNs, String)>,
}

impl Lab {
    /// One host per name; host i gets 198.51.100.(i+1) and fd00:198:51:100::(i+1).
    pub fn new(tag: &str, names: &[&str]) -> Lab {
        let bridge = NetNs::new(&format!("{tag}br"));
        bridge.run(&["ip", "link", "add", "br0", "type", "bridge"]);
        bridge.run(&["ip", "link", "set", "br0", "up"]);
        let mut hosts = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let ns = NetNs::new(&format!("{tag}{name}"));
            let address = format!("198.51.100.{}", i + 1);
            let outer = format!("v{tag}{i}");
            let ok = |args: &[&str]| {
                let status = Command::new("ip").args(args).status().unwrap();
                assert!(status.success(), "ip {args:?}");
            };
            ok(&[
                "link",
                "add",
                &outer,
                "netns",
                &bridge.name,
                "type",
                "veth",
                "peer",
                "eth0",
                "netns",
                &ns.name,
            ]);
            bridge.run(&["ip", "link", "set", &outer, "master", "br0", "up"]);
            ns.run(&["ip", "addr", "add", &format!("{address}/24"), "dev", "eth0"]);
            let address6 = format!("fd00:198:51:100::{}/64", i + 1);
            ns.run(&["ip", "-6", "addr", "add", &address6, "dev", "eth0", "nodad"]);
            ns.run(&["ip", "link", "set", "eth0", "up"]);
            hosts.push((ns, address));
        }
        Lab { bridge, hosts }
    }

    pub fn ns(&self, i: usize) -> &NetNs {
        &self.hosts[i].0
    }

    pub fn address(&self, i: usize) -> &str {
        &self.hosts[i].1
    }

    pub fn address6(&self, i: usize) -> String {
        format!("fd00:198:51:100::{}", i + 1)
    }
}

/// A TCP service on a host, so that the attacker has something to connect to.
pub struct Service(std::process::Child);

impl Service {
    pub fn start(ns: &NetNs, port: u16) -> Service {
        let script = format!(
            "import socket\ns = socket.socket()\ns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
             s.bind(('0.0.0.0', {port}))\ns.listen(64)\nwhile True:\n    s.accept()[0].close()\n"
        );
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "/usr/bin/python3", "-c", &script])
            .spawn()
            .unwrap();
        Service(child)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether a TCP connection from `from` to `address:port` succeeds within 300 ms.
pub fn connects(from: &NetNs, address: &str, port: u16) -> bool {
    let script =
        format!("import socket; socket.create_connection(('{address}', {port}), timeout=0.3)");
    Command::new("ip")
        .args([
            "netns",
            "exec",
            &from.name,
            "/usr/bin/python3",
            "-c",
            &script,
        ])
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success()
}
