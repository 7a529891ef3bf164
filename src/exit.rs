//! Exit codes from sysexits.h, so scripts and fail2ban can tell failures apart.

/// A process exit status with the meaning the documentation gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    /// EX_USAGE: wrong arguments.
    Usage = 64,
    /// EX_DATAERR: invalid input, such as a malformed IP address.
    DataErr = 65,
    /// EX_UNAVAILABLE: the server could not be reached.
    Unavailable = 69,
    /// EX_SOFTWARE: an internal error, such as a ZeroMQ failure.
    Software = 70,
    /// EX_IOERR: a file could not be read or written.
    IoErr = 74,
    /// EX_TEMPFAIL: try again later.
    TempFail = 75,
    /// EX_NOPERM: the server refused the report.
    NoPerm = 77,
    /// EX_CONFIG: the configuration or a key file is wrong.
    Config = 78,
}

/// A failure on its way to the program's edge: the exit code, and one line for the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    pub exit: Exit,
    pub message: String,
}

impl Exit {
    pub fn code(self) -> i32 {
        self as i32
    }

    /// A failure with this exit code: `Exit::Config.with(e)`.
    pub fn with(self, message: impl std::fmt::Display) -> Failure {
        Failure {
            exit: self,
            message: message.to_string(),
        }
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(exit: Exit) -> Self {
        std::process::ExitCode::from(exit as u8)
    }
}

/// Makes a panic in any thread end the whole process with SIGABRT, after the usual message.
/// Every program calls this first: a daemon must fail closed (see src/daemon/worker.rs), and
/// systemd restarts it. A hook rather than `panic = "abort"` in Cargo.toml, because cargo
/// builds tests and benchmarks with unwinding whatever the profile says: with the profile
/// setting, every dependency was compiled twice in each build, once for the programs and once
/// for the test harness. The hook runs before any unwinding, so nothing can catch the panic.
pub fn abort_on_panic() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        std::process::abort();
    }));
}
