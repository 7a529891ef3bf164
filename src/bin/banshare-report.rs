#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    banshare::client::report::main()
}
