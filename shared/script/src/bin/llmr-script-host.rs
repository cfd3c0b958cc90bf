//! A script host process (see `llmr_script::host_main`); llmrouter starts these itself.

fn main() -> std::process::ExitCode {
    llmr_script::host_main()
}
