//! Real Debian 12 hosts for system tests: systemd-nspawn containers booted with systemd, each
//! in a network namespace of its own (a `Lab` host), on an overlay of a cached root filesystem.
//!
//! The image is two directories under the cache (`/var/cache/banshare-tests`, or
//! `BANSHARE_TEST_CACHE`): a debootstrap of bookworm with systemd, and a layer on top holding
//! Python, nftables and openssh-server, plus the .debs of fail2ban and libzmq5 in apt's cache,
//! so that `apt install` works inside containers that cannot reach a mirror.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{wait_for, NetNs};

/// Bump when the base's or the layer's contents change, so that the cache is rebuilt.
const BASE_VERSION: u32 = 2;
const LAYER_VERSION: u32 = 5;
const SUITE: &str = "bookworm";
/// Installed in the layer, as on any Debian server: iproute2 is how Ansible finds a host's
/// addresses, python3-apt what its apt module needs.
const LAYER_PACKAGES: &str = "iproute2 python3 python3-apt python3-systemd nftables openssh-server";
/// Only downloaded into apt's cache, with what they recommend: the tests install them, as
/// an admin would.
const CACHED_PACKAGES: &str = "fail2ban firewalld libzmq5 adduser psad";

fn cache_dir() -> PathBuf {
    let dir = std::env::var_os("BANSHARE_TEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/banshare-tests"));
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// Tests that boot containers take turns: two fleets of booted containers at once on two
/// cores would time each other out. (`one_at_a_time` is for the floods, which may run beside
/// a fleet.)
pub fn one_fleet_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TURN.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The overlay `lowerdir=` value of the image, built first if it is not cached. Tests that
/// run at once wait for one build, under a lock.
pub fn image() -> String {
    let cache = cache_dir();
    let lock = fs::File::create(cache.join(".lock")).unwrap();
    let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .unwrap();
    let base = cache.join(format!("{SUITE}-base-{BASE_VERSION}"));
    let layer = cache.join(format!("{SUITE}-layer-{LAYER_VERSION}"));
    if !base.exists() {
        build_base(&base);
    }
    if !layer.exists() {
        build_layer(&base, &layer);
    }
    format!("{}:{}", layer.display(), base.display())
}

/// The Debian mirror this machine's apt uses, which the network reaches.
fn mirror() -> String {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = fs::read_dir("/etc/apt/sources.list.d") {
        files.extend(dir.flatten().map(|e| e.path()));
    }
    for file in files {
        let text = fs::read_to_string(file).unwrap_or_default();
        for line in text.lines().map(str::trim) {
            let url = line
                .strip_prefix("URIs:")
                .or_else(|| line.strip_prefix("deb "))
                .and_then(|rest| rest.split_whitespace().find(|w| w.starts_with("http")));
            // The main archive, not the security one nor a third party's repository.
            let url = url.map(|u| u.trim_end_matches('/'));
            if let Some(url) = url.filter(|u| u.ends_with("/debian")) {
                return url.to_string();
            }
        }
    }
    "http://deb.debian.org/debian".to_string()
}

/// Runs `command`, which must succeed, and returns what it printed.
pub fn run_ok(what: &str, command: &mut Command) -> String {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Builds into a temporary directory and renames it, so an interrupted build leaves nothing
/// that looks finished.
fn build_base(base: &Path) {
    let tmp = base.with_extension("tmp");
    let _ = fs::remove_dir_all(&tmp);
    run_ok(
        "debootstrap",
        Command::new("debootstrap")
            .args(["--variant=minbase", "--include=systemd-sysv,dbus", SUITE])
            .arg(&tmp)
            .arg(mirror()),
    );
    fs::rename(&tmp, base).unwrap();
}

fn build_layer(base: &Path, layer: &Path) {
    let tmp = layer.with_extension("tmp");
    let _ = fs::remove_dir_all(&tmp);
    let upper = tmp.join("upper");
    let overlay = Overlay::mount(&base.display().to_string(), &tmp);
    // Nothing may start services in a root filesystem that is not booted.
    let policy = overlay.root.join("usr/sbin/policy-rc.d");
    fs::write(&policy, "#!/bin/sh\nexit 101\n").unwrap();
    set_mode(&policy, 0o755);
    let script = format!(
        "export DEBIAN_FRONTEND=noninteractive; apt-get -q update && \
         apt-get install -y -q --no-install-recommends {LAYER_PACKAGES} && \
         apt-get install -y -q --download-only {CACHED_PACKAGES}"
    );
    run_ok(
        "installing the image's packages",
        Command::new("systemd-nspawn")
            .args(["-q", "--register=no", "--keep-unit", "-D"])
            .arg(&overlay.root)
            .args(["sh", "-c", &script]),
    );
    fs::remove_file(&policy).unwrap();
    // The containers make their own host keys and machine id.
    for entry in fs::read_dir(overlay.root.join("etc/ssh"))
        .unwrap()
        .flatten()
    {
        if entry.file_name().to_string_lossy().starts_with("ssh_host_") {
            fs::remove_file(entry.path()).unwrap();
        }
    }
    drop(overlay);
    fs::rename(&upper, layer).unwrap();
    fs::remove_dir_all(&tmp).unwrap();
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// A writable overlay of the image in `dir` (`dir/root`), unmounted when dropped.
pub struct Overlay {
    pub root: PathBuf,
}

impl Overlay {
    pub fn mount(lower: &str, dir: &Path) -> Overlay {
        let (upper, work, root) = (dir.join("upper"), dir.join("work"), dir.join("root"));
        for d in [&upper, &work, &root] {
            fs::create_dir_all(d).unwrap();
        }
        let options = format!(
            "lowerdir={lower},upperdir={},workdir={}",
            upper.display(),
            work.display()
        );
        run_ok(
            "mounting the overlay",
            Command::new("mount")
                .args(["-t", "overlay", "overlay", "-o", &options])
                .arg(&root),
        );
        Overlay { root }
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.root).status();
    }
}

/// A booted container. Dropping it powers it off and removes its files.
pub struct Container {
    pub name: String,
    nspawn: Child,
    /// The container's PID 1 as the host sees it, for nsenter.
    pub pid: u32,
    overlay: Option<Overlay>,
    dir: tempfile::TempDir,
}

impl Container {
    /// Boots a container named `name` in `ns`, and waits until systemd has finished starting.
    pub fn boot(name: &str, ns: &NetNs, image: &str) -> Container {
        Container::boot_with(name, ns, image, |_| {})
    }

    /// A container that root can log in to over SSH with `authorized_key`. Its host keys
    /// are its own, made before it boots.
    pub fn boot_with_ssh(name: &str, ns: &NetNs, image: &str, authorized_key: &str) -> Container {
        Container::boot_with(name, ns, image, |root| {
            run_ok(
                "ssh-keygen -A",
                Command::new("ssh-keygen").arg("-A").arg("-f").arg(root),
            );
            let ssh = root.join("root/.ssh");
            fs::create_dir_all(&ssh).unwrap();
            set_mode(&ssh, 0o700);
            fs::write(ssh.join("authorized_keys"), authorized_key).unwrap();
        })
    }

    /// `prepare` gets the root directory before the container boots.
    pub fn boot_with(
        name: &str,
        ns: &NetNs,
        image: &str,
        prepare: impl FnOnce(&Path),
    ) -> Container {
        let dir = tempfile::Builder::new()
            .prefix("banshare-ct-")
            .tempdir_in("/var/tmp")
            .unwrap();
        let overlay = Overlay::mount(image, dir.path());
        let root = &overlay.root;
        let machine_id = format!("{:032x}", rand_u128());
        fs::write(root.join("etc/machine-id"), format!("{machine_id}\n")).unwrap();
        fs::write(root.join("etc/hostname"), format!("{name}\n")).unwrap();
        fs::write(
            root.join("etc/hosts"),
            format!("127.0.0.1 localhost\n127.0.1.1 {name}\n"),
        )
        .unwrap();
        fs::write(root.join("etc/resolv.conf"), "").unwrap();
        prepare(root);
        let nspawn = Command::new("systemd-nspawn")
            .args(["-q", "--register=no", "--keep-unit", "-b", "--console=pipe"])
            .arg(format!("--machine={name}"))
            .arg(format!("--network-namespace-path=/run/netns/{}", ns.name))
            .arg("--capability=CAP_NET_ADMIN")
            .arg("-D")
            .arg(root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let nspawn_pid = nspawn.id();
        let pid = wait_for("the container's systemd", Duration::from_secs(20), || {
            child_named(nspawn_pid, "systemd")
        });
        let container = Container {
            name: name.to_string(),
            nspawn,
            pid,
            overlay: Some(overlay),
            dir,
        };
        // Until systemd has its bus up, systemctl cannot even ask.
        let state = wait_for("the container to boot", Duration::from_secs(60), || {
            let out = container.sh("systemctl is-system-running --wait");
            let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
            ["running", "degraded"]
                .contains(&state.as_str())
                .then_some(state)
        });
        assert_eq!(
            state,
            "running",
            "{name}: failed units: {}",
            container.run("systemctl --failed --no-legend")
        );
        container
    }

    /// A path inside the container's file system, as the host sees it.
    pub fn path(&self, inside: &str) -> PathBuf {
        let root = &self.overlay.as_ref().unwrap().root;
        root.join(inside.trim_start_matches('/'))
    }

    /// Runs a shell script inside the container, in all its namespaces.
    pub fn sh(&self, script: &str) -> Output {
        Command::new("nsenter")
            .args(["-t", &self.pid.to_string(), "-a", "sh", "-c", script])
            .output()
            .unwrap()
    }

    /// Runs a script that must succeed, and returns its standard output.
    pub fn run(&self, script: &str) -> String {
        let out = self.sh(script);
        assert!(
            out.status.success(),
            "{}: `{script}` exited {:?}: {}{}",
            self.name,
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn write(&self, inside: &str, text: &str) {
        let path = self.path(inside);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    pub fn read(&self, inside: &str) -> String {
        fs::read_to_string(self.path(inside)).unwrap()
    }

    /// The addresses in fail2ban's jail `banshare`, where the fleet's bans land.
    pub fn jail_banned(&self) -> std::collections::HashSet<String> {
        self.run("fail2ban-client get banshare banned")
            .split(|c: char| !(c.is_ascii_hexdigit() || ".:/".contains(c)))
            .filter(|word| word.contains('.') || word.contains(':'))
            .map(str::to_string)
            .collect()
    }

    /// Whether `ip` is in the banshare jail and in the nftables set its ban action fills.
    pub fn banned(&self, ip: &str) -> bool {
        self.jail_banned().contains(ip) && self.run("nft list ruleset").contains(ip)
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        // SIGTERM asks nspawn for an orderly shutdown of the container.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.nspawn.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.nspawn.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.nspawn.kill();
        let _ = self.nspawn.wait();
        self.overlay.take();
        let _ = fs::remove_dir_all(self.dir.path());
    }
}

/// The first descendant of `ancestor` whose command name is `name`.
fn child_named(ancestor: u32, name: &str) -> Option<u32> {
    let mut queue = vec![ancestor];
    while let Some(pid) = queue.pop() {
        let tasks = fs::read_dir(format!("/proc/{pid}/task")).ok()?;
        for task in tasks.flatten() {
            let children = fs::read_to_string(task.path().join("children")).unwrap_or_default();
            for child in children.split_whitespace().filter_map(|c| c.parse().ok()) {
                let comm = fs::read_to_string(format!("/proc/{child}/comm")).unwrap_or_default();
                if comm.trim() == name {
                    return Some(child);
                }
                queue.push(child);
            }
        }
    }
    None
}

fn rand_u128() -> u128 {
    let mut bytes = [0u8; 16];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .unwrap();
    u128::from_ne_bytes(bytes)
}

/// The newest package in `dir` whose name ends with `suffix`.
pub fn package(dir: &str, suffix: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join(dir);
    fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .max_by_key(|p| fs::metadata(p).unwrap().modified().unwrap())
        .unwrap_or_else(|| panic!("no *{suffix} in {}: run scripts/package", dir.display()))
}

/// What an admin on Debian 12 sets anyway: nftables for bans (bookworm has no iptables),
/// and sshd failures read from the journal (bookworm has no /var/log/auth.log).
pub const BOOKWORM_JAIL_LOCAL: &str = "[DEFAULT]\nbanaction = nftables-multiport\n\
                          banaction_allports = nftables-allports\n\n[sshd]\nbackend = systemd\n";

/// A revoked host can neither report nor receive: its report waits in its spool (exit 75)
/// and never reaches `server`, and a ban that `other` reports reaches `server` but not it.
pub fn assert_cut_off(revoked: &Container, server: &Container, other: &Container, ips: [&str; 2]) {
    let refused = revoked.sh(&format!("banshare-report lab sshd {}", ips[0]));
    assert_eq!(refused.status.code(), Some(75), "{refused:?}");
    other.run(&format!("banshare-report lab sshd {}", ips[1]));
    wait_for("the other host's ban", Duration::from_secs(15), || {
        server.banned(ips[1]).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(!revoked.banned(ips[1]), "a revoked host received a ban");
    assert!(!server.banned(ips[0]), "a revoked host's report was taken");
}
