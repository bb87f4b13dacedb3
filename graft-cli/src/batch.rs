//! Standard-input mode: one command per line, each answered before the next
//! line is read, so a script can drive the program through pipes.

use std::io::BufRead;

use anyhow::Context;

use crate::code::Code;
use crate::command::{parse_line, UsageError};
use crate::runner::{Runner, Step};

/// Runs every line of `input`; returns the highest exit code of them all.
/// A failed line is reported on standard error and the next line runs.
pub fn run(runner: &Runner, mut input: impl BufRead) -> anyhow::Result<Code> {
    let mut worst = Code::Ok;
    let mut buf = Vec::new();
    for number in 1.. {
        buf.clear();
        if input.read_until(b'\n', &mut buf).context("reading standard input")? == 0 {
            break;
        }
        let parsed = match std::str::from_utf8(&buf) {
            Ok(line) => parse_line(line.trim_end_matches(['\n', '\r'])),
            Err(_) => Err(UsageError("the line is not UTF-8".into())),
        };
        match runner.handle(parsed, &format!("graft-cli: line {number}: "), false) {
            Step::Continue(code) => worst = worst.max(code),
            Step::Stop(code) => {
                worst = worst.max(code);
                break;
            }
        }
    }
    Ok(worst)
}
