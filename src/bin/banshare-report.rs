fn main() -> std::process::ExitCode {
    banshare::report::main()
}
