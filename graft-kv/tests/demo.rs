//! `graft-kv demo-timestamps` with no arguments: the original project's
//! behaviour on the built-in default cluster (127.0.0.1:15000-15004).

mod util;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use util::{graft_kv_bin, signal};

/// Parses "[N] ... N, Leader term: T, size=K" into (N, role, T, K).
fn parse(line: &str) -> Option<(u64, String, u64, u64)> {
    let rest = line.strip_prefix('[')?;
    let (id, rest) = rest.split_once("] ")?;
    let id: u64 = id.parse().ok()?;
    let at = rest.find(&format!("{id}, "))?;
    let rest = &rest[at + format!("{id}, ").len()..];
    let (role, rest) = rest.split_once(" term: ")?;
    let (term, rest) = rest.split_once(", size=")?;
    let size: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    Some((id, role.to_owned(), term.parse().ok()?, size.parse().ok()?))
}

#[test]
fn demo_timestamps_runs_five_members_that_replicate_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let mut parent = Command::new(graft_kv_bin())
        .arg("demo-timestamps")
        .current_dir(dir.path())
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the demo");
    let (tx, rx) = mpsc::channel();
    let stdout = parent.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let mut pids = std::collections::BTreeMap::new();
    // Phase 1: every member reports a growing log, and one leader leads.
    let mut sizes = [0u64; 6];
    let mut leader = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    while sizes[1..].iter().any(|&s| s < 5) {
        let line = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).unwrap_or_else(|_| {
            let _ = parent.kill();
            panic!("members did not all reach 5 entries; sizes {sizes:?}\n{}", seen.join("\n"))
        });
        if let Some(rest) = line.strip_prefix("member ") {
            if let Some((id, pid)) = rest.split_once(": pid ") {
                pids.insert(id.parse::<u64>().unwrap(), pid.parse::<u32>().unwrap());
            }
        }
        if let Some((id, role, _term, size)) = parse(&line) {
            sizes[id as usize] = sizes[id as usize].max(size);
            if role == "Leader" {
                leader = Some(id);
            }
        }
        seen.push(line);
    }
    assert_eq!(pids.len(), 5, "the demo prints each member's pid:\n{}", seen.join("\n"));
    let old = leader.expect("a leader reported itself");
    // Phase 2: kill -9 the leader; another takes over and the log keeps growing.
    signal(pids[&old], libc::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut new_leader = None;
    let mut grown = 0;
    while new_leader.is_none() || grown < 5 {
        let line = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).unwrap_or_else(|_| {
            let _ = parent.kill();
            panic!("no new leader after killing {old}\n{}", seen.join("\n"))
        });
        if let Some((id, role, _term, size)) = parse(&line) {
            if role == "Leader" && id != old {
                new_leader = Some(id);
            }
            if new_leader.is_some() && size > sizes[id as usize] {
                grown += 1;
            }
        }
        seen.push(line);
    }
    // Ctrl+C stops every member.
    signal(parent.id(), libc::SIGINT);
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(st) = parent.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "the demo did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    // Everything the demo printed, up to its end.
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(5)) {
        seen.push(line);
    }
    let stopped =
        seen.iter().filter(|l| l.starts_with("member ") && l.contains(" stopped (exit status: 0)")).count();
    assert!(stopped >= 4, "the live members were stopped:\n{}", seen.join("\n"));
    for id in 1..=5 {
        assert!(dir.path().join(format!("graft-data/member-{id}/graft.redb")).exists());
    }
    for port in 15000..15005 {
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "port {port} still served");
    }
}
