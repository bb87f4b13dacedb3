//! Standard-input mode: commands line by line, answers line by line, errors
//! on stderr naming the line, and the worst exit code at the end.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::util::{cli_bin, start_cluster, CliCluster};

#[test]
fn a_script_on_stdin_gets_one_answer_per_line_and_the_worst_exit_code() {
    let cluster = start_cluster(3);
    cluster.wait_leader_blocking(Duration::from_secs(20));
    let script = "\
put a 1
# a comment, then a blank line

get a
put b \"two words\"
get b
get missing
frobnicate
cas a 1 2
scan \"\"
put 'unbalanced
get a
";
    let r = cluster.cli_input(&[], Some(script));
    assert_eq!(r.code, 2, "the worst line was a usage error: {r:?}");
    let out: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(out.len(), 8, "{r:?}");
    assert!(out[0].parse::<u64>().is_ok() && out[2].parse::<u64>().is_ok(), "put prints its revision: {r:?}");
    assert_eq!((out[1], out[3]), ("1", "two words"), "{r:?}");
    assert!(out[4].starts_with("swapped (revision "), "{r:?}");
    assert_eq!(out[5..], ["a\t2", "b\ttwo words", "2"][..], "{r:?}");
    let err: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(err.len(), 3, "{r:?}");
    assert_eq!(err[0], "graft-cli: line 7: key not found: missing");
    assert!(err[1].starts_with("graft-cli: line 8: error: unrecognized subcommand 'frobnicate'"), "{r:?}");
    assert!(err[2].starts_with("graft-cli: line 11: error: unbalanced quotes"), "{r:?}");

    // Only a missing key: exit 1. Nothing wrong: exit 0. exit stops early.
    assert_eq!(cluster.cli_input(&[], Some("get a\nget missing\nget a\n")).code, 1);
    let r = cluster.cli_input(&[], Some("get a\nexit\nput never 1\n"));
    assert_eq!((r.code, r.stdout.as_str()), (0, "2\n"), "{r:?}");
    assert_eq!(cluster.cli(&["get", "never"]).code, 1, "lines after exit do not run");
}

#[test]
fn a_program_can_drive_it_in_json_one_line_at_a_time() {
    let cluster = start_cluster(3);
    cluster.wait_leader_blocking(Duration::from_secs(20));
    let endpoints = cluster.endpoints_arg();
    let mut child = Command::new(cli_bin())
        .args(["--endpoints", &endpoints, "--timeout", "15s", "--output", "json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn graft-cli");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    // Each answer arrives before the next command is sent: the program
    // answers as it reads, and flushes.
    let mut ask = |line: &str| -> Value {
        writeln!(stdin, "{line}").expect("write a command");
        stdin.flush().expect("flush");
        let mut answer = String::new();
        stdout.read_line(&mut answer).expect("read an answer");
        serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{line:?} -> {answer:?}: {e}"))
    };
    let put = ask("put x 10");
    assert_eq!((put["command"].clone(), put["exit"].clone()), (json!("put"), json!(0)));
    assert_eq!(ask("get x")["value"], json!("10"));
    let missing = ask("get y");
    let read_at = missing["revision"].as_u64().expect("the revision read");
    assert_eq!(
        missing,
        json!({"command": "get", "ok": false, "exit": 1, "key": "y", "found": false, "revision": read_at})
    );
    let bad = ask("get");
    assert_eq!((bad["exit"].clone(), bad["ok"].clone()), (json!(2), json!(false)));
    assert!(bad["error"].as_str().is_some_and(|e| e.contains("<KEY>")), "{bad}");
    assert_eq!(ask("cas x 10 11")["swapped"], json!(true));
    assert_eq!(ask("help")["command"], json!("help"));
    drop(stdin);
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(2), "the worst line was a usage error");
}
