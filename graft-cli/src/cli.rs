//! The program's arguments: where the cluster is, how long to wait, how to
//! print, and an optional command (see [`crate::command`]).

use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::command::{check_addr, CommandArgs};

/// What `--help` says after the options.
const AFTER_HELP: &str = "\
Without a command: a REPL when standard input is a terminal; otherwise one
command per line from standard input, each answered as it is read.

Exit status:
  0  ok
  1  key not found (get, delete), or compare-and-swap did not swap;
     verify: not linearizable
  2  usage error (bad command or option, value too large, invalid request,
     refused membership change)
  3  cluster unavailable or timed out; for a write or a membership change
     the outcome is unknown
  4  any other failure (a member reported an internal error; verify: the
     checker gave up)
Reading standard input, the status is the highest of all the lines'.";

/// graft-cli: the client for a graft cluster. It finds the leader, retries,
/// and makes writes exactly-once.
#[derive(Parser, Debug)]
#[command(name = "graft-cli", version, after_help = AFTER_HELP)]
pub struct Cli {
    /// Members to contact, as host:port,... (default: the built-in cluster,
    /// 127.0.0.1:15000 to 127.0.0.1:15004)
    #[arg(long, global = true, env = "GRAFT_ENDPOINTS", value_delimiter = ',', value_name = "HOST:PORT,...")]
    pub endpoints: Vec<String>,

    /// How long one command may take, retries included (e.g. 5s, 500ms,
    /// 1m); for verify, how long each of its operations may take
    #[arg(long, global = true, default_value = "5s", value_parser = crate::command::parse_duration)]
    pub timeout: Duration,

    /// Output format
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Plain)]
    pub output: OutputFormat,

    /// The command (none: REPL or standard input)
    #[command(subcommand)]
    pub command: Option<CommandArgs>,
}

/// How answers are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// For people: the value alone, KEY<TAB>VALUE lines, a table.
    Plain,
    /// For scripts: one JSON object per command, on one line.
    Json,
}

/// Checks `--endpoints`; none given means the built-in default cluster.
pub fn endpoints(given: &[String]) -> Result<Vec<String>, String> {
    if given.is_empty() {
        return Ok(graft_kv::ClusterConfig::default().endpoints());
    }
    given
        .iter()
        .map(|e| check_addr(e).map_err(|_| format!("invalid endpoint {:?}: expected host:port", e.trim())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Command;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("graft-cli").chain(args.iter().copied()))
    }

    #[test]
    fn options_before_or_after_the_command() {
        let cli = parse(&["--endpoints", "a:1,b:2", "--timeout", "500ms", "get", "k", "--output", "json"])
            .expect("valid");
        assert_eq!(cli.endpoints, vec!["a:1", "b:2"]);
        assert_eq!(cli.timeout, Duration::from_millis(500));
        assert_eq!(cli.output, OutputFormat::Json);
        let cmd = cli.command.map(Command::try_from);
        assert_eq!(cmd, Some(Ok(Command::Get { key: "k".into(), stale: false, revision: 0 })));
    }

    #[test]
    fn defaults() {
        let cli = parse(&[]).expect("valid");
        assert_eq!(cli.timeout, Duration::from_secs(5));
        assert_eq!(cli.output, OutputFormat::Plain);
        assert!(cli.command.is_none());
        assert_eq!(endpoints(&[]).expect("default")[0], "127.0.0.1:15000");
        assert_eq!(endpoints(&[]).expect("default").len(), 5);
    }

    #[test]
    fn timeouts() {
        assert_eq!(crate::command::parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(crate::command::parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(crate::command::parse_duration("5").is_err());
        assert!(crate::command::parse_duration("soon").is_err());
        assert!(crate::command::parse_duration("0s").is_err());
        assert!(parse(&["--timeout", "x", "status"]).is_err());
    }

    #[test]
    fn endpoint_checks() {
        let ok = endpoints(&["127.0.0.1:1".into(), " h:65535".into(), "[::1]:7".into()]);
        assert_eq!(ok, Ok(vec!["127.0.0.1:1".into(), "h:65535".into(), "[::1]:7".into()]));
        assert!(endpoints(&["nohost".into()]).is_err());
        assert!(endpoints(&[":1".into()]).is_err());
        assert!(endpoints(&["h:99999".into()]).is_err());
        assert!(endpoints(&["".into()]).is_err());
    }

    #[test]
    fn cas_version_is_not_the_program_version() {
        let cli = parse(&["cas", "k", "v", "--version", "3"]).expect("valid");
        assert!(matches!(cli.command, Some(CommandArgs::Cas { version: Some(3), .. })));
        let e = parse(&["--version"]).expect_err("prints the version");
        assert_eq!(e.kind(), clap::error::ErrorKind::DisplayVersion);
    }

    #[test]
    fn help_lists_exit_codes() {
        let e = parse(&["--help"]).expect_err("prints help");
        let text = e.render().to_string();
        assert!(text.contains("Exit status") && text.contains("3  cluster unavailable"), "{text}");
        assert!(text.contains("GRAFT_ENDPOINTS"), "{text}");
    }
}
