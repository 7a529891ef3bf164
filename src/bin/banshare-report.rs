fn main() -> std::process::ExitCode {
    banshare::client::report::main()
}
