//! Command line: thin — parse arguments, call the library, render.
use std::process::ExitCode;

pub fn main() -> ExitCode {
    ExitCode::SUCCESS
}
