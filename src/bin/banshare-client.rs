fn main() -> std::process::ExitCode {
    banshare::client::main()
}
