fn main() -> std::process::ExitCode {
    banshare::server::main()
}
