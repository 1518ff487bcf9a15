//! The `jobkeeper` binary: everything lives in the library.

fn main() -> std::process::ExitCode {
    jobkeeper::cli::main()
}
