//! The interactive REPL (rustyline): history in the user's data directory,
//! completion of command names and options, a prompt naming the leader.
//! Ctrl+C clears the line (or abandons a running command), Ctrl+D leaves.

use std::path::PathBuf;

use anyhow::Context as _;
use rustyline::completion::Completer;
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::FileHistory;
use rustyline::validate::Validator;
use rustyline::{CompletionType, Config, Editor, Helper};

use crate::code::Code;
use crate::command::{parse_line, vocabulary};
use crate::runner::{Runner, Step};

/// Where the history lives: `graft/history` in the user's data directory
/// (`$XDG_DATA_HOME`, else `~/.local/share`, on Linux).
pub fn history_path() -> Option<PathBuf> {
    dirs::data_dir().map(|d| d.join("graft").join("history"))
}

/// The prompt: `graft(LEADER)> `, or `graft(?)> ` before a leader is known.
pub fn prompt(leader: Option<&str>) -> String {
    format!("graft({})> ", leader.unwrap_or("?"))
}

/// Runs the REPL until `exit`, `quit` or Ctrl+D. Exits 0 whatever the
/// commands' outcomes (each failure was shown as it happened).
pub fn run(runner: &Runner) -> anyhow::Result<Code> {
    let config = Config::builder()
        .auto_add_history(true)
        .history_ignore_dups(true)
        .context("configuring the line editor")?
        .max_history_size(10_000)
        .context("configuring the line editor")?
        .completion_type(CompletionType::List)
        .build();
    let mut editor: Editor<GraftHelper, FileHistory> =
        Editor::with_config(config).context("cannot use the terminal")?;
    editor.set_helper(Some(GraftHelper { vocabulary: vocabulary() }));
    let history = history_path().and_then(|path| match prepare_history(&path) {
        Ok(()) => Some(path),
        Err(e) => {
            eprintln!("graft-cli: warning: history will not be kept: {e:#}");
            None
        }
    });
    if let Some(path) = &history {
        if path.exists() {
            if let Err(e) = editor.load_history(path) {
                eprintln!("graft-cli: warning: cannot read history {}: {e}", path.display());
            }
        }
    }
    println!("graft-cli: type `help` for the commands, Ctrl+D to leave.");
    loop {
        let leader = runner.leader();
        match editor.readline(&prompt(leader.as_deref())) {
            Ok(line) => {
                if let Some(path) = &history {
                    if let Err(e) = editor.append_history(path) {
                        eprintln!("graft-cli: warning: cannot write history {}: {e}", path.display());
                    }
                }
                if let Step::Stop(_) = runner.handle(parse_line(&line), "", true) {
                    break;
                }
            }
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e).context("reading the terminal"),
        }
    }
    Ok(Code::Ok)
}

/// Creates the history file's directory.
fn prepare_history(path: &std::path::Path) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    Ok(())
}

/// Completion of command names, subcommands (`leader`, `member`) and options.
struct GraftHelper {
    /// Each command and subcommand (by its path, `member add`), with its
    /// subcommands' names and long options.
    vocabulary: Vec<(String, Vec<String>)>,
}

impl GraftHelper {
    /// Candidates for the word being typed, given the words before it.
    /// After `help`, the command path being typed is completed (names only).
    fn candidates(&self, before: &[&str], word: &str) -> Vec<String> {
        let (help, path) = match before.split_first() {
            Some((&"help", rest)) => (true, rest),
            _ => (false, before),
        };
        // The longest command path the words start with (`member add`).
        let mut found: Option<&(String, Vec<String>)> = None;
        let mut depth = 0;
        for (i, w) in path.iter().enumerate() {
            let name = match found {
                None => (*w).to_owned(),
                Some((n, _)) => format!("{n} {w}"),
            };
            match self.vocabulary.iter().find(|(n, _)| *n == name) {
                Some(entry) => {
                    found = Some(entry);
                    depth = i + 1;
                }
                None => break,
            }
        }
        let pool: Vec<String> = match found {
            None if path.is_empty() => {
                self.vocabulary.iter().filter(|(n, _)| !n.contains(' ')).map(|(n, _)| n.clone()).collect()
            }
            // An unknown command: nothing to offer.
            None => Vec::new(),
            Some((_, words)) => {
                let at_path_end = path.len() == depth;
                words
                    .iter()
                    .filter(|w| if w.starts_with('-') { !help } else { at_path_end })
                    .cloned()
                    .collect()
            }
        };
        let mut out: Vec<String> = pool.into_iter().filter(|c| c.starts_with(word)).collect();
        out.sort();
        out.dedup();
        out
    }
}

impl Completer for GraftHelper {
    type Candidate = String;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _: &rustyline::Context<'_>,
    ) -> rustyline::Result<(usize, Vec<String>)> {
        let before = line.get(..pos).unwrap_or(line);
        let start = before.rfind(char::is_whitespace).map_or(0, |i| i + 1);
        let words: Vec<&str> = before[..start].split_whitespace().collect();
        Ok((start, self.candidates(&words, &before[start..])))
    }
}

impl Hinter for GraftHelper {
    type Hint = String;
}

impl Highlighter for GraftHelper {}

impl Validator for GraftHelper {}

impl Helper for GraftHelper {}

#[cfg(test)]
mod tests {
    use super::*;

    fn helper() -> GraftHelper {
        GraftHelper { vocabulary: vocabulary() }
    }

    #[test]
    fn completes_command_names() {
        let h = helper();
        assert_eq!(h.candidates(&[], "s"), vec!["scan", "status"]);
        assert_eq!(h.candidates(&[], "le"), vec!["leader", "lease"]);
        assert_eq!(h.candidates(&["help"], "ca"), vec!["cas"]);
        assert!(h.candidates(&[], "").len() >= 9);
        assert!(h.candidates(&[], "zz").is_empty());
    }

    #[test]
    fn completes_subcommands_and_options() {
        let h = helper();
        assert_eq!(h.candidates(&["leader"], "t"), vec!["transfer"]);
        assert_eq!(h.candidates(&["scan", "p"], "--l"), vec!["--limit"]);
        assert_eq!(h.candidates(&["get"], "--"), vec!["--help", "--revision", "--stale"]);
        assert_eq!(h.candidates(&["cas", "k", "v"], "--a"), vec!["--absent"]);
        // Keys and values are not completed.
        assert!(h.candidates(&["get"], "k").is_empty());
        assert!(h.candidates(&["frobnicate"], "").is_empty());
    }

    #[test]
    fn completes_member_subcommands_and_their_options() {
        let h = helper();
        assert_eq!(h.candidates(&[], "me"), vec!["member"]);
        assert_eq!(h.candidates(&["member"], ""), vec!["--help", "add", "help", "list", "promote", "remove"]);
        assert_eq!(h.candidates(&["member"], "p"), vec!["promote"]);
        assert_eq!(h.candidates(&["member"], "re"), vec!["remove"]);
        assert_eq!(h.candidates(&["member", "add", "9", "h:1"], "--l"), vec!["--learner"]);
        assert_eq!(h.candidates(&["member", "add"], "--"), vec!["--help", "--learner"]);
        // The id and address are not completed, nor subcommands after them.
        assert!(h.candidates(&["member", "add"], "a").is_empty());
        assert!(h.candidates(&["member", "remove", "3"], "").contains(&"--help".to_owned()));
        assert!(!h.candidates(&["member", "remove", "3"], "").contains(&"list".to_owned()));
        assert!(h.candidates(&["member", "list"], "--l").is_empty());
    }

    #[test]
    fn completes_after_help() {
        let h = helper();
        assert_eq!(h.candidates(&["help"], "me"), vec!["member"]);
        assert_eq!(h.candidates(&["help", "member"], "a"), vec!["add"]);
        assert_eq!(h.candidates(&["help", "leader"], ""), vec!["help", "transfer"]);
        assert!(h.candidates(&["help", "member", "add"], "--").is_empty());
    }

    #[test]
    fn prompts() {
        assert_eq!(prompt(None), "graft(?)> ");
        assert_eq!(prompt(Some("127.0.0.1:15000")), "graft(127.0.0.1:15000)> ");
    }
}
