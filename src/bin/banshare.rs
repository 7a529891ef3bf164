fn main() -> std::process::ExitCode {
    banshare::admin::main()
}
