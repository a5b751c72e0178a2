//! Runs of the `enac-cd` binary as a command-line tool (`policy`, `deploy`).

use std::process::Output;

/// What one run of the binary did.
pub struct BinaryRun {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl BinaryRun {
    pub fn of(output: Output) -> BinaryRun {
        BinaryRun {
            code: output.status.code(),
            stdout: String::from_utf8(output.stdout).expect("stdout is text"),
            stderr: String::from_utf8(output.stderr).expect("stderr is text"),
        }
    }
}

impl std::fmt::Display for BinaryRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}
