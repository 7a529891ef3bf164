//! The daemons' own memory, and the guard that bounds it. libzmq keeps every frame of a
//! multipart message until its last frame arrives, and it bounds each frame
//! (ZMQ_MAXMSGSIZE) but not their number, so a peer that sends a message without end could
//! grow a daemon until the kernel kills it. Nothing in libzmq bounds that, so the daemons
//! watch their own resident set: past the guard's limit they close their connections,
//! which frees whatever was half received, and give the freed pages back to the system.

use std::path::Path;
use std::time::{Duration, Instant};

/// How often the resident set is read: reading it costs a few microseconds.
const EVERY: Duration = Duration::from_millis(100);

/// Bytes this process holds in memory (its resident set), from /proc/self/statm.
pub fn resident() -> u64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split(' ').nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .map_or(4096, |p| p as u64);
    pages * page
}

/// The memory limit of this process's cgroup (systemd's `MemoryMax=`), if one is set.
pub fn cgroup_limit() -> Option<u64> {
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    // cgroup v2: a single line "0::/system.slice/banshare-server.service".
    let path = cgroup.lines().find_map(|l| l.strip_prefix("0::"))?;
    let file = Path::new("/sys/fs/cgroup")
        .join(path.trim_start_matches('/'))
        .join("memory.max");
    std::fs::read_to_string(file).ok()?.trim().parse().ok()
}

/// Gives the pages that glibc's allocator holds free back to the system. glibc returns
/// freed memory only from the top of each heap, so after a large message was freed below
/// live allocations the process would otherwise stay as large as it grew (a message of
/// 400 MB left the server at 824 MB; after this call, at 7 MB).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn release_free_pages() {
    extern "C" {
        fn malloc_trim(pad: usize) -> i32;
    }
    // SAFETY: malloc_trim takes no pointers, has no preconditions, and glibc serialises it
    // with every other allocator call; it is banshare's only unsafe code.
    unsafe {
        malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release_free_pages() {}

/// Trips when the resident set grows past a limit.
pub struct Guard {
    limit: u64,
    checked: Instant,
    /// After connections were closed: when to give freed pages back once more, since
    /// libzmq frees what closed sockets held on its own threads, a little later.
    settle_at: Option<Instant>,
}

/// How long after closing connections their memory is surely freed.
const SETTLE: Duration = Duration::from_secs(1);

impl Guard {
    /// A guard at three quarters of the cgroup's limit (so that it acts before the kernel
    /// does), or at `fallback` bytes when the daemon runs without one.
    pub fn new(fallback: u64) -> Guard {
        let limit = cgroup_limit().map_or(fallback, |max| max / 4 * 3);
        Guard {
            limit,
            checked: Instant::now(),
            settle_at: None,
        }
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The resident set when it is over the limit; looks at most every 100 ms, and not
    /// while the memory of connections just closed is being freed.
    pub fn tripped(&mut self) -> Option<u64> {
        if self.checked.elapsed() < EVERY {
            return None;
        }
        self.checked = Instant::now();
        if let Some(at) = self.settle_at {
            if Instant::now() < at {
                return None;
            }
            self.settle_at = None;
            release_free_pages();
            log::info!(
                "memory guard: {} in use after freed memory was given back",
                megabytes(resident())
            );
            self.rearm();
        }
        let resident = resident();
        (resident > self.limit).then_some(resident)
    }

    /// Gives freed pages back now, and once more when the connections just closed have
    /// surely let go of theirs.
    pub fn release(&mut self) {
        release_free_pages();
        self.settle_at = Some(Instant::now() + SETTLE);
    }

    /// If the process is still near the limit once freed memory is back, what it holds is
    /// live (a table larger than the limit allows): the limit moves up rather than trip
    /// again and again.
    fn rearm(&mut self) {
        let resident = resident();
        if resident > self.limit / 10 * 9 {
            self.limit = resident + (self.limit / 4).max(64 << 20);
            log::warn!(
                "memory guard: {} is still in use, which must be live: limit raised to {}",
                megabytes(resident),
                megabytes(self.limit)
            );
        }
    }
}

/// Bytes as people read them: "412 MB".
pub fn megabytes(bytes: u64) -> String {
    format!("{} MB", bytes / 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freed_memory_goes_back_to_the_system() {
        let before = resident();
        assert!(before > 0);
        // Many small blocks, freed while a later one stays: glibc keeps the pages.
        let blocks: Vec<Vec<u8>> = (0..50_000).map(|i| vec![i as u8; 2000]).collect();
        let keep = vec![1u8; 2000];
        let grown = resident();
        drop(blocks);
        release_free_pages();
        let after = resident();
        assert!(grown > before + 80_000_000, "{grown} {before}");
        assert!(
            after < grown - 80_000_000,
            "{after} of {grown} after release"
        );
        drop(keep);
    }

    #[test]
    fn the_guard_trips_over_its_limit_and_then_moves_it_up_if_it_must() {
        let mut guard = Guard::new(1);
        if cgroup_limit().is_some() {
            return;
        }
        guard.checked -= EVERY;
        assert!(guard.tripped().is_some());
        guard.release();
        guard.settle_at = Some(Instant::now());
        guard.checked -= EVERY;
        // Still over the limit once settled: the limit moves above what is live.
        assert!(guard.tripped().is_none());
        assert!(guard.limit() > resident());
    }
}
