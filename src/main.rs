//! The `headcode` command line: parses, calls the library, prints. No logic of its own;
//! one file per subcommand under `cli/`.
use std::process::ExitCode;

use clap::Parser;

mod cli;

fn main() -> ExitCode {
    match cli::run(cli::Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        // Ctrl-C: one line saying what was kept, and the shell's code for SIGINT.
        Err(e)
            if matches!(
                e.downcast_ref::<headcode::Error>(),
                Some(headcode::Error::Interrupted { .. })
            ) =>
        {
            eprintln!("{e}");
            ExitCode::from(headcode::interrupt::EXIT_CODE)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
