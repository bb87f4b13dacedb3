//! Exactly-once writes through graft-cli while leaders crash right before
//! answering a write they applied (graft-kv's fault knob
//! `GRAFT_FAULT_CRASH_BEFORE_REPLY=n`: abort() instead of answering the n-th
//! write applied as leader). The write is committed, the client never hears,
//! and retries elsewhere with the same (client id, seq); the new leader must
//! answer from the session instead of applying the write again.
//!
//! Why a counter incremented by compare-and-swap shows it: without
//! sessions, the retried `cas counter N N+1` would be applied a second time,
//! find N+1, and answer "not swapped". The caller would count an increment
//! that took effect as failed (the counter ends above the acknowledged
//! count), or, retrying it, increment twice. With sessions, the retry gets
//! the first answer, "swapped", and the counter equals the number of
//! acknowledged increments. The second test shows the drift for real, with
//! a session-less request.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use graft_kv::protocol::{Expect, Request, Response};
use graft_kv::{Client, ClientOptions};
use serde_json::{json, Value};

use crate::util::{cli_bin, start_cluster, start_cluster_with, CliCluster, Cluster};

const FAULT: &str = "GRAFT_FAULT_CRASH_BEFORE_REPLY";
const SIGABRT: i32 = 6;

/// How many members aborted on the fault knob, per their logs.
fn fault_aborts(cluster: &Cluster) -> usize {
    cluster
        .members
        .iter()
        .map(|m| {
            let log = std::fs::read_to_string(&m.log_file).unwrap_or_default();
            log.matches("GRAFT_FAULT_CRASH_BEFORE_REPLY: aborting before answering write").count()
        })
        .sum()
}

#[test]
fn increments_whose_replies_were_lost_are_applied_exactly_once() {
    // Member n aborts before answering its (n+2)-th write as leader: 3, 4, 5.
    let cluster = start_cluster_with(3, |id| vec![(FAULT.to_owned(), (id + 2).to_string())]);
    cluster.wait_leader_blocking(Duration::from_secs(20));
    let endpoints = cluster.endpoints_arg();
    let cluster = Arc::new(Mutex::new(cluster));

    // Restart crashed members at once (without the fault), as an operator would.
    let crashes: Arc<Mutex<Vec<(u64, ExitStatus)>>> = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    let monitor = {
        let (cluster, crashes, done) = (cluster.clone(), crashes.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                if let Ok(mut c) = cluster.lock() {
                    for (id, status) in c.reap() {
                        c.start_member_with(id, &[]);
                        crashes.lock().unwrap_or_else(|p| p.into_inner()).push((id, status));
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let crash_count = || crashes.lock().unwrap_or_else(|p| p.into_inner()).len();

    // One graft-cli process, so one client and one session, driven line by line.
    let mut cli = Command::new(cli_bin())
        .args(["--endpoints", &endpoints, "--timeout", "20s", "--output", "json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn graft-cli");
    let mut stdin = cli.stdin.take().expect("stdin");
    let mut stdout = BufReader::new(cli.stdout.take().expect("stdout"));
    let mut ask = |line: &str| -> Value {
        writeln!(stdin, "{line}").expect("write a command");
        stdin.flush().expect("flush");
        let mut answer = String::new();
        stdout.read_line(&mut answer).expect("read an answer");
        serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{line:?} -> {answer:?}: {e}"))
    };

    assert_eq!(ask("put counter 0")["exit"], json!(0));
    let (mut acknowledged, mut not_swapped, mut increments) = (0u64, 0u64, 0u64);
    while increments < 30 && !(increments >= 10 && crash_count() >= 2) {
        let got = ask("get counter");
        let n: u64 =
            got["value"].as_str().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("get: {got}"));
        let cas = format!("cas counter {n} {}", n + 1);
        let answer = ask(&cas);
        increments += 1;
        match (answer["exit"].as_u64(), answer["swapped"].as_bool()) {
            (Some(0), Some(true)) => acknowledged += 1,
            (Some(1), Some(false)) => not_swapped += 1,
            _ => panic!("{cas:?} failed: {answer}"),
        }
    }
    let final_value = ask("get counter");
    drop(stdin);
    let status = cli.wait().expect("wait for graft-cli");
    done.store(true, Ordering::Relaxed);
    monitor.join().expect("monitor thread");
    let cluster = cluster.lock().unwrap_or_else(|p| p.into_inner());
    let crashes = crashes.lock().unwrap_or_else(|p| p.into_inner()).clone();

    eprintln!("{increments} increments, {acknowledged} acknowledged, crashes: {crashes:?}");
    // A leader really crashed with a committed write unanswered...
    assert!(!crashes.is_empty(), "no member crashed in {increments} increments\n{}", cluster.logs());
    for (id, st) in &crashes {
        assert_eq!(st.signal(), Some(SIGABRT), "member {id} died of the fault knob (abort), not {st}");
    }
    assert_eq!(fault_aborts(&cluster), crashes.len(), "each crash was the knob's\n{}", cluster.logs());
    // ...and every increment still swapped exactly once.
    assert_eq!(not_swapped, 0, "one writer: every cas should swap");
    assert_eq!(acknowledged, increments);
    assert_eq!(
        final_value["value"],
        json!(acknowledged.to_string()),
        "the counter equals the acknowledged increments ({} crashes)",
        crashes.len()
    );
    assert_eq!(status.code(), Some(0), "every line succeeded");
}

#[test]
fn without_a_session_the_retry_of_a_lost_reply_is_applied_twice_and_with_one_it_is_not() {
    let mut cluster = start_cluster(3);
    let first = cluster.wait_leader_blocking(Duration::from_secs(20));
    assert_eq!(cluster.cli(&["put", "counter", "0"]).code, 0);

    // Restarts `id` armed to abort before answering its first write as
    // leader, and makes it the leader.
    let arm = |cluster: &mut Cluster, id: u64| {
        cluster.kill(id);
        cluster.start_member_with(id, &[(FAULT.to_owned(), "1".to_owned())]);
        cluster.wait_leader_blocking(Duration::from_secs(20));
        let t = cluster.cli(&["leader", "transfer", &id.to_string()]);
        assert_eq!(t.code, 0, "{t:?}");
        assert_eq!(cluster.wait_leader_blocking(Duration::from_secs(20)), id);
    };

    // Negative control: the same compare-and-swap with no session, through
    // graft_kv::Client::call, which retries it like any request.
    arm(&mut cluster, first);
    let client = Client::new(ClientOptions {
        endpoints: cluster.endpoints_arg().split(',').map(String::from).collect(),
        timeout: Duration::from_secs(20),
    });
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let request = Request::Cas {
        key: Bytes::from("counter"),
        expect: Expect::Value(Some(Bytes::from("0"))),
        value: Bytes::from("1"),
        session: None,
    };
    let answer = rt.block_on(client.call(request)).expect("an answer after the retry");
    let Response::Cas { swapped, current, .. } = answer else { panic!("not a cas answer: {answer:?}") };
    // The first attempt took effect (counter = 1) but the caller is told it
    // did not swap: the retry was applied as a second write.
    assert!(!swapped, "without a session the retry is re-applied and reports a mismatch");
    assert_eq!(current.map(|v| v.value), Some(Bytes::from("1")));
    let crashed = cluster.reap();
    assert_eq!(crashed.len(), 1, "the armed leader aborted: {crashed:?}");
    assert_eq!(crashed[0].1.signal(), Some(SIGABRT));
    cluster.start_member_with(first, &[]);

    // The same situation through graft-cli, whose writes carry a session:
    // the retry is answered from the session, "swapped", applied once.
    let target = (1..=3).find(|i| *i != first).expect("another member");
    arm(&mut cluster, target);
    let r = cluster.cli(&["cas", "counter", "1", "2"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.starts_with("swapped (revision "), "{r:?}");
    let crashed = cluster.reap();
    assert_eq!(crashed.len(), 1, "the armed leader aborted: {crashed:?}\n{}", cluster.logs());
    assert_eq!(cluster.cli(&["get", "counter"]).stdout, "2\n");
    assert_eq!(fault_aborts(&cluster), 2);
}
