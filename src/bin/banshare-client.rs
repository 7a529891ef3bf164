fn main() -> std::process::ExitCode {
    banshare::exit::abort_on_panic();
    banshare::client::main()
}
