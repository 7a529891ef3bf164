fn main() -> std::process::ExitCode {
    banshare::exit::abort_on_panic();
    banshare::admin::main()
}
