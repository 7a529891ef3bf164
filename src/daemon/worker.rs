//! Threads a daemon cannot go on without. A daemon must fail closed: libzmq lets every CURVE
//! client in when no ZAP handler answers, and a client whose batcher died would queue bans
//! that never reach the firewall. So panics abort the process (every program calls
//! `exit::abort_on_panic` first), and the main loop checks its workers before every
//! watchdog ping and exits when one has ended, so that systemd restarts the daemon.

use std::thread::{self, JoinHandle};

use crate::exit::{Exit, Failure};

pub struct Worker {
    name: String,
    handle: JoinHandle<()>,
}

impl Worker {
    pub fn spawn(name: &str, work: impl FnOnce() + Send + 'static) -> std::io::Result<Worker> {
        let handle = thread::Builder::new().name(name.to_owned()).spawn(work)?;
        Ok(Worker {
            name: name.to_owned(),
            handle,
        })
    }

    /// An error naming the thread if it has ended.
    pub fn check(&self) -> Result<(), Failure> {
        if self.handle.is_finished() {
            Err(Exit::Software.with(format!(
                "the {} thread has stopped; exiting, so that the daemon starts afresh",
                self.name
            )))
        } else {
            Ok(())
        }
    }
}

/// Whether the tests asked this point to fail, through `BANSHARE_FAULT`; only in debug
/// builds, so the packaged programs never read the variable.
pub fn fault(point: &str) -> bool {
    cfg!(debug_assertions) && std::env::var("BANSHARE_FAULT").is_ok_and(|f| f == point)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finished_worker_is_noticed() {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let worker = Worker::spawn("test", move || {
            let _ = stopped.recv();
        })
        .unwrap();
        assert!(worker.check().is_ok());
        drop(stop);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while worker.check().is_ok() && std::time::Instant::now() < deadline {
            thread::sleep(std::time::Duration::from_millis(1));
        }
        let Failure { exit, message } = worker.check().unwrap_err();
        assert_eq!(exit, Exit::Software);
        assert!(message.contains("the test thread has stopped"), "{message}");
    }
}
