//! Runs ban and unban commands: directly (never through a shell), with a clean environment,
//! a timeout, and at most N at a time. A failing command is logged and never stops the daemon.

use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use prometheus_client::metrics::histogram::Histogram;

use crate::daemon::worker::{self, Worker};
use crate::exit::Failure;

/// At most this much of a failing command's stderr is logged.
const STDERR_LIMIT: usize = 1024;

struct Job<T> {
    argv: Vec<String>,
    /// What the command is for, in log lines: "ban 203.0.113.7 (sshd from web1)".
    label: String,
    /// Handed back with the result, to say which command finished.
    token: T,
}

/// What became of a ban or unban: a command, or one op of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Done,
    /// Not done this time: the next catch-up tries it again.
    Failed,
    /// Refused for good: the kernel says this op can never be done. Logged and counted
    /// once, and not tried again, rather than every `retry-interval` for ever.
    Refused,
}

/// Each finished command's token, and what became of it.
pub type Results<T> = mpsc::Receiver<(T, Applied)>;

/// A fixed pool of workers that run queued commands and report each result.
pub struct Runner<T> {
    queue: mpsc::Sender<Job<T>>,
    workers: Vec<Worker>,
}

impl<T: Send + 'static> Runner<T> {
    /// The runner, and the channel on which each command's token comes back with what
    /// became of it. `latency` gets the time each command takes. An error when a worker
    /// thread cannot be started (the process is at its limit of tasks).
    pub fn new(
        workers: usize,
        timeout: Duration,
        latency: Histogram,
    ) -> std::io::Result<(Runner<T>, Results<T>)> {
        let (queue, jobs) = mpsc::channel::<Job<T>>();
        let (done, results) = mpsc::channel();
        let jobs = Arc::new(Mutex::new(jobs));
        let workers = (0..workers)
            .map(|i| {
                let jobs = Arc::clone(&jobs);
                let done = done.clone();
                let latency = latency.clone();
                Worker::spawn(&format!("runner-{i}"), move || loop {
                    let job = jobs.lock().expect("lock").recv();
                    match job {
                        Ok(job) => {
                            let started = Instant::now();
                            let applied = match run_logged(&job.argv, &job.label, timeout) {
                                true => Applied::Done,
                                false => Applied::Failed,
                            };
                            latency.observe(started.elapsed().as_secs_f64());
                            let _ = done.send((job.token, applied));
                            if worker::fault("runner-exits") {
                                return;
                            }
                        }
                        Err(_) => return,
                    }
                })
            })
            .collect::<std::io::Result<_>>()?;
        Ok((Runner { queue, workers }, results))
    }

    /// An error if a worker has stopped (see `worker`).
    pub fn check(&self) -> Result<(), Failure> {
        self.workers.iter().try_for_each(Worker::check)
    }

    pub fn submit(&self, argv: Vec<String>, label: String, token: T) {
        let _ = self.queue.send(Job { argv, label, token });
    }
}

/// Runs one command and logs how it went; true when it exited 0.
fn run_logged(argv: &[String], label: &str, timeout: Duration) -> bool {
    let started = Instant::now();
    match run(argv, timeout) {
        Ok(Outcome::Exited(status, _)) if status.success() => {
            log::info!(
                "{label}: {} succeeded in {} ms",
                argv[0],
                started.elapsed().as_millis()
            );
            return true;
        }
        Ok(Outcome::Exited(status, stderr)) => log::error!(
            "{label}: {} failed ({}){}",
            argv[0],
            describe(status),
            if stderr.is_empty() {
                String::new()
            } else {
                format!(": {stderr}")
            }
        ),
        Ok(Outcome::TimedOut) => log::error!(
            "{label}: {} did not finish within {} s and was killed",
            argv[0],
            timeout.as_secs()
        ),
        Err(e) => log::error!("{label}: cannot run {}: {e}", argv[0]),
    }
    false
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => status.to_string(),
    }
}

pub enum Outcome {
    /// The exit status and the start of stderr, on one line.
    Exited(ExitStatus, String),
    TimedOut,
}

/// Runs `argv` and waits at most `timeout`. The command gets its own process group so that
/// a timeout kills whatever it started too.
pub fn run(argv: &[String], timeout: Duration) -> std::io::Result<Outcome> {
    run_with_input(argv, None, timeout)
}

/// Like `run`, with `input` written to the command's standard input (for `nft -f -`).
pub fn run_with_input(
    argv: &[String],
    input: Option<&[u8]>,
    timeout: Duration,
) -> std::io::Result<Outcome> {
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("LANG", "C.UTF-8")
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        use std::io::Write;
        // A command that exits early closes the pipe; its status says what went wrong.
        let _ = stdin.write_all(input);
    }
    // Read while waiting, not by a thread of its own: a thread per command would make a
    // burst of bans at a limit of tasks (systemd's TasksMax) fail, or worse, panic.
    let mut stderr = Stderr::new(child.stderr.take())?;
    let status = wait_with_timeout(&mut child, timeout, &mut stderr)?;
    stderr.drain();
    let text = one_line(&String::from_utf8_lossy(&stderr.text));
    Ok(match status {
        Some(status) => Outcome::Exited(status, text),
        None => Outcome::TimedOut,
    })
}

/// A command's standard error, read without blocking: the first STDERR_LIMIT bytes kept,
/// the rest drained, so that a chatty command never blocks on a full pipe.
struct Stderr {
    pipe: Option<std::process::ChildStderr>,
    text: Vec<u8>,
}

impl Stderr {
    fn new(pipe: Option<std::process::ChildStderr>) -> std::io::Result<Stderr> {
        if let Some(pipe) = &pipe {
            use nix::fcntl::{fcntl, FcntlArg, OFlag};
            use std::os::fd::AsRawFd;
            let fd = pipe.as_raw_fd();
            let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
            fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
        }
        Ok(Stderr {
            pipe,
            text: Vec::new(),
        })
    }

    /// Reads what the command wrote so far.
    fn drain(&mut self) {
        let Some(pipe) = &mut self.pipe else {
            return;
        };
        let mut buffer = [0u8; 4096];
        loop {
            match pipe.read(&mut buffer) {
                Ok(0) => {
                    self.pipe = None;
                    return;
                }
                Ok(n) => {
                    let room = STDERR_LIMIT.saturating_sub(self.text.len());
                    self.text.extend_from_slice(&buffer[..n.min(room)]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }
}

/// Polls with a short first sleep, since most ban commands finish in milliseconds.
fn wait_with_timeout(
    child: &mut Child,
    timeout: Duration,
    stderr: &mut Stderr,
) -> std::io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_micros(200);
    loop {
        stderr.drain();
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            let group = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
            child.wait()?;
            return Ok(None);
        }
        thread::sleep(pause.min(deadline.saturating_duration_since(Instant::now())));
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .escape_debug()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(parts: &[&str]) -> Vec<String> {
        parts.iter().map(|s| (*s).to_string()).collect()
    }

    #[test]
    fn reports_exit_status_and_stderr() {
        let out = run(
            &argv(&["/bin/sh", "-c", "echo oops >&2; echo more >&2; exit 3"]),
            Duration::from_secs(5),
        )
        .unwrap();
        let Outcome::Exited(status, stderr) = out else {
            panic!("timed out")
        };
        assert_eq!(status.code(), Some(3));
        assert_eq!(stderr, "oops more");
    }

    #[test]
    fn kills_on_timeout_including_children() {
        let started = Instant::now();
        let out = run(
            &argv(&["/bin/sh", "-c", "sleep 30 & sleep 30"]),
            Duration::from_millis(200),
        )
        .unwrap();
        assert!(matches!(out, Outcome::TimedOut));
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn environment_is_clean() {
        std::env::set_var("BANSHARE_SECRET_TEST", "x");
        let out = run(
            &argv(&[
                "/bin/sh",
                "-c",
                "test -z \"$BANSHARE_SECRET_TEST\" && test -z \"$NOTIFY_SOCKET\"",
            ]),
            Duration::from_secs(5),
        )
        .unwrap();
        assert!(matches!(out, Outcome::Exited(s, _) if s.success()));
    }

    #[test]
    fn missing_program_is_an_error() {
        assert!(run(
            &argv(&["/nonexistent/banshare-test"]),
            Duration::from_secs(1)
        )
        .is_err());
    }
}
