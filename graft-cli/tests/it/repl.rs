//! The REPL driven as a person would, through a pseudo-terminal (rexpect):
//! typed commands and their answers, the prompt naming the leader, tab
//! completion, Ctrl+C, Ctrl+D, and history kept across runs.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rexpect::process::WaitStatus;
use rexpect::session::PtySession;

use crate::util::{cli_bin, start_cluster, Cluster};

/// Starts the REPL in a pseudo-terminal with `data_home` as XDG_DATA_HOME.
fn spawn_repl(cluster: &Cluster, data_home: &Path) -> PtySession {
    let mut cmd = Command::new(cli_bin());
    cmd.args(["--endpoints", &cluster.endpoints_arg(), "--timeout", "15s"])
        .env("XDG_DATA_HOME", data_home)
        .env("TERM", "xterm")
        .env_remove("GRAFT_ENDPOINTS");
    rexpect::session::spawn_command(cmd, Some(20_000)).expect("spawn graft-cli in a pty")
}

/// Sends Ctrl+D on an empty line and checks the REPL exits 0.
fn leave(p: &mut PtySession) {
    p.send_control('d').expect("send Ctrl+D");
    p.exp_eof().expect("the REPL ends");
    match p.process().wait() {
        Ok(WaitStatus::Exited(_, code)) => assert_eq!(code, 0, "Ctrl+D exits 0"),
        other => panic!("unexpected end: {other:?}"),
    }
}

#[test]
fn a_person_at_the_repl() {
    let cluster = start_cluster(3);
    let leader = cluster.wait_leader_blocking(Duration::from_secs(20));
    let leader_prompt = format!("graft({})> ", cluster.addr(leader));
    let data_home = tempfile::tempdir().expect("temp dir");
    let history = data_home.path().join("graft").join("history");

    // First run.
    let mut p = spawn_repl(&cluster, data_home.path());
    p.exp_string("type `help`").expect("greeting");
    p.exp_string("graft(?)> ").expect("before any command the leader is unknown");
    p.send_line("put greeting \"hello world\"").expect("type");
    p.exp_regex(r"\r\n\d+\r\n").expect("put prints the revision");
    p.exp_string(&leader_prompt).expect("the prompt names the leader once known");
    p.send_line("get greeting").expect("type");
    p.exp_string("\r\nhello world\r\n").expect("get prints the value");
    p.exp_string(&leader_prompt).expect("prompt");

    // Ctrl+C drops the line being typed; the REPL goes on.
    p.send("put cancelled yes").expect("type");
    p.flush().expect("flush");
    p.send_control('c').expect("Ctrl+C");
    p.exp_string(&leader_prompt).expect("a fresh prompt after Ctrl+C");
    p.send_line("get cancelled").expect("type");
    p.exp_string("key not found: cancelled").expect("the cancelled put never ran");
    p.exp_string(&leader_prompt).expect("prompt");

    // Tab completes command names.
    p.send("sta\t").expect("type");
    p.flush().expect("flush");
    p.exp_string("status").expect("completed to status");
    p.send_line("").expect("enter");
    p.exp_string("REACHABLE").expect("status table");
    p.exp_string(&format!("leader: member {leader} at {}", cluster.addr(leader)))
        .expect("status leader line");
    p.exp_string(&leader_prompt).expect("prompt");

    // Errors are one line and the REPL goes on; help lists the commands.
    p.send_line("put onlykey").expect("type");
    p.exp_string(
        "error: the following required arguments were not provided: <VALUE>; usage: put <KEY> <VALUE>",
    )
    .expect("usage error");
    p.exp_string(&leader_prompt).expect("prompt");
    p.send_line("help").expect("type");
    p.exp_string("Commands:").expect("help");
    p.exp_string("leader").expect("help lists leader");
    p.exp_string("member").expect("help lists member");
    p.exp_string(&leader_prompt).expect("prompt");

    // Tab completes `member` and its subcommands; `help member` describes them.
    p.send("mem\t").expect("type");
    p.flush().expect("flush");
    p.exp_string("member").expect("completed to member");
    p.send(" li\t").expect("type");
    p.flush().expect("flush");
    p.exp_string("list").expect("completed to list");
    p.send_line("").expect("enter");
    p.exp_string("KIND").expect("member table");
    p.exp_string(&format!("leader: member {leader} at {}", cluster.addr(leader)))
        .expect("member list leader line");
    p.exp_string(&leader_prompt).expect("prompt");
    p.send_line("help member").expect("type");
    p.exp_string("promote").expect("help member lists its subcommands");
    p.exp_string(&leader_prompt).expect("prompt");

    // After a leadership transfer the prompt names the new leader.
    let to = if leader == 1 { 2 } else { 1 };
    let leader_prompt = format!("graft({})> ", cluster.addr(to));
    p.send_line(&format!("leader transfer {to}")).expect("type");
    p.exp_string(&format!("leader is now member {to}")).expect("transferred");
    p.exp_string(&leader_prompt).expect("the prompt follows the leader");

    p.send_line("get greeting").expect("type");
    p.exp_string("\r\nhello world\r\n").expect("value");
    p.exp_string(&leader_prompt).expect("prompt");
    leave(&mut p);

    let saved = std::fs::read_to_string(&history).expect("history file in XDG_DATA_HOME/graft/history");
    assert!(saved.contains("put greeting \"hello world\""), "{saved}");
    assert!(saved.contains("get greeting") && saved.contains("status"), "{saved}");
    assert!(!saved.contains("put cancelled"), "a cancelled line is not history: {saved}");

    // Second run with the same data directory: up-arrow recalls the last
    // command of the first run, Enter runs it.
    let mut p = spawn_repl(&cluster, data_home.path());
    p.exp_string("graft(?)> ").expect("prompt");
    p.send("\x1b[A").expect("up arrow");
    p.flush().expect("flush");
    p.exp_string("get greeting").expect("the previous run's last command is recalled");
    p.send_line("").expect("enter");
    p.exp_string("\r\nhello world\r\n").expect("the recalled command ran");
    p.exp_string(&leader_prompt).expect("prompt");
    p.send_line("exit").expect("type");
    p.exp_eof().expect("exit ends the REPL");
    assert!(matches!(p.process().wait(), Ok(WaitStatus::Exited(_, 0))));
}

#[test]
fn ctrl_c_abandons_a_running_command_and_the_repl_goes_on() {
    // Nothing listens there: the put retries until its 30 s timeout.
    let port = crate::util::free_ports(1)[0];
    let data_home = tempfile::tempdir().expect("temp dir");
    let mut cmd = Command::new(cli_bin());
    cmd.args(["--endpoints", &format!("127.0.0.1:{port}"), "--timeout", "30s"])
        .env("XDG_DATA_HOME", data_home.path())
        .env("TERM", "xterm");
    let mut p = rexpect::session::spawn_command(cmd, Some(10_000)).expect("spawn graft-cli in a pty");
    p.exp_string("graft(?)> ").expect("prompt");
    p.send_line("put k v").expect("type");
    std::thread::sleep(Duration::from_millis(500));
    let started = std::time::Instant::now();
    p.send_control('c').expect("Ctrl+C");
    p.exp_string("cancelled; the write's outcome is unknown").expect("the put is abandoned");
    p.exp_string("graft(?)> ").expect("and the REPL goes on");
    assert!(started.elapsed() < Duration::from_secs(5), "long before the 30 s timeout");
    p.send_line("quit").expect("type");
    p.exp_eof().expect("quit ends the REPL");
    assert!(matches!(p.process().wait(), Ok(WaitStatus::Exited(_, 0))));
}

#[test]
fn ctrl_c_abandons_verify_its_clients_stop_and_its_keys_are_deleted() {
    let cluster = start_cluster(3);
    cluster.wait_leader_blocking(Duration::from_secs(20));
    let data_home = tempfile::tempdir().expect("temp dir");
    let mut p = spawn_repl(&cluster, data_home.path());
    p.exp_string("graft(?)> ").expect("prompt");
    p.send_line("verify --duration 1m --seed 11").expect("type");
    // On a terminal, the progress bar; wait until the clients have run a while.
    p.exp_string("verify, seed 11").expect("a progress bar");
    p.exp_string("1s / 60s").expect("the clients run");
    let started = std::time::Instant::now();
    p.send_control('c').expect("Ctrl+C");
    p.exp_string("cancelled; its keys are being deleted in the background").expect("verify is abandoned");
    p.exp_string("graft(?)> ").expect("and the REPL goes on");
    assert!(started.elapsed() < Duration::from_secs(5), "long before the minute is up");

    // Its keys go, and stay gone: no client of the abandoned run still writes.
    let prompt = regex_prompt();
    let scan = |p: &mut PtySession| {
        p.send_line("scan graft-verify/").expect("type");
        let (before, _) = p.exp_regex(&prompt).expect("prompt after scan");
        before.contains("graft-verify/000000000000000b/")
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while scan(&mut p) {
        assert!(std::time::Instant::now() < deadline, "the keys of the abandoned run are still there");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(1));
    assert!(!scan(&mut p), "a key came back: a client of the abandoned run still writes");
    leave(&mut p);
}

/// Any prompt.
fn regex_prompt() -> String {
    r"graft\([^)]*\)> ".to_owned()
}
