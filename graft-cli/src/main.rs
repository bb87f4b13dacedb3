//! `graft-cli`: the command-line client of a graft cluster.
//!
//! # Layout
//! - [`cli`]: the program's options (`--endpoints`, `--timeout`, `--output`).
//! - [`command`]: the pure parser from words or a line to a `Command`.
//! - [`exec`]: runs a command through `graft_kv::Client`; exit codes.
//! - [`output`]: plain and JSON answers.
//! - [`runner`]: runs parsed lines and prints, for every mode.
//! - [`repl`]: the interactive mode; [`batch`]: commands from standard input.
//! - [`verify`]: the `verify` command's run, check and report.

mod batch;
mod cli;
mod code;
mod command;
mod exec;
mod lease;
mod output;
mod recipes;
mod repl;
mod runner;
mod txn;
mod verify;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

use crate::code::Code;
use crate::command::{Command, Parsed, UsageError};
use crate::runner::{Runner, Step};

fn main() -> ExitCode {
    match run() {
        Ok(code) => ExitCode::from(code.as_u8()),
        Err(e) => {
            eprintln!("graft-cli: error: {e:#}");
            ExitCode::from(Code::of_error(&e).as_u8())
        }
    }
}

fn run() -> anyhow::Result<Code> {
    let args = match cli::Cli::try_parse() {
        Ok(args) => args,
        Err(e) if command::is_help(&e) => {
            e.print()?;
            return Ok(Code::Ok);
        }
        Err(e) => return Err(UsageError(command::one_line(&e)).into()),
    };
    let endpoints = cli::endpoints(&args.endpoints).map_err(UsageError)?;
    let runner = Runner::new(endpoints, args.timeout, args.output)?;
    match args.command {
        Some(cmd) => {
            let parsed = Command::try_from(cmd).and_then(txn_from_stdin).map(Parsed::Run);
            match runner.handle(parsed, "graft-cli: ", false) {
                Step::Continue(code) | Step::Stop(code) => Ok(code),
            }
        }
        None if std::io::stdin().is_terminal() => repl::run(&runner),
        None => batch::run(&runner, std::io::stdin().lock()),
    }
}

/// A one-shot `txn` without --compare/--success/--failure reads its
/// transaction from standard input.
fn txn_from_stdin(cmd: Command) -> Result<Command, UsageError> {
    match cmd {
        Command::Txn(t) if t == graft_kv::protocol::Txn::default() => {
            if std::io::stdin().is_terminal() {
                eprintln!(
                    "graft-cli: reading the transaction: compares, a blank line, success operations, \
                     a blank line, failure operations; end with Ctrl+D"
                );
            }
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                .map_err(|e| UsageError(format!("txn: reading standard input: {e}")))?;
            let txn = txn::parse_text(&text).map_err(|e| UsageError(format!("txn: {e}")))?;
            txn.validate().map_err(|e| UsageError(format!("txn: {e}")))?;
            Ok(Command::Txn(txn))
        }
        other => Ok(other),
    }
}
