//! The `gitcanary` binary: parse arguments, set up logging, run the command.

fn main() -> std::process::ExitCode {
    gitcanary::cli::main()
}
