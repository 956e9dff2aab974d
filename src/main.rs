//! The `strongroom` binary: everything lives in the library.

fn main() -> std::process::ExitCode {
    strongroom::cli::main()
}
