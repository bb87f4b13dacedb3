//! Each rule of the witness-order check, shown to catch what it names.

use bytes::Bytes;

use super::*;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn rec(v: &str, create: u64, modr: u64, version: u64) -> Record {
    Record { value: b(v), create_revision: create, mod_revision: modr, version }
}

fn put(k: &str, v: &str) -> Step {
    Step::Put(b(k), b(v))
}

/// `compare value(k) == expect` then put `k=new` and get `other`; else get `k`.
fn swap(k: &str, expect: &str, new: &str, other: &str) -> SerialCall {
    SerialCall::Txn {
        compare: vec![Compare { key: b(k), target: Target::Value(b(expect)), op: CmpOp::Equal }],
        success: vec![put(k, new), Step::Get(b(other))],
        failure: vec![Step::Get(b(k))],
    }
}

fn blind(puts: &[(&str, &str)]) -> SerialCall {
    SerialCall::Txn {
        compare: vec![],
        success: puts.iter().map(|(k, v)| put(k, v)).collect(),
        failure: vec![],
    }
}

fn done(client: u64, call: SerialCall, invoke: u64, complete: u64, outcome: SerialOutcome) -> SerialOp {
    SerialOp { client, call, invoke, complete: Some(complete), outcome }
}

fn txn_ok(revision: u64, succeeded: bool, results: Vec<StepResult>) -> SerialOutcome {
    SerialOutcome::Txn { revision, succeeded, results }
}

fn log_put(revision: u64, k: &str, r: Record) -> Committed {
    Committed { revision, key: b(k), record: Some(r) }
}

/// A history that holds: two blind writes, a swap, a read, an unknown
/// transaction that committed and one that did not.
fn good() -> (Vec<SerialOp>, Vec<Committed>) {
    let ops = vec![
        done(
            1,
            blind(&[("a", "1"), ("b", "1")]),
            0,
            10,
            txn_ok(5, true, vec![StepResult::Put(None), StepResult::Put(None)]),
        ),
        done(
            2,
            swap("a", "1", "2", "b"),
            20,
            30,
            txn_ok(
                7,
                true,
                vec![StepResult::Put(Some(rec("1", 5, 5, 1))), StepResult::Get(Some(rec("1", 5, 5, 1)))],
            ),
        ),
        done(
            3,
            SerialCall::Read(b("a")),
            40,
            50,
            SerialOutcome::Read { revision: 9, record: Some(rec("3", 5, 9, 3)) },
        ),
        SerialOp {
            client: 4,
            call: blind(&[("a", "3")]),
            invoke: 25,
            complete: None,
            outcome: SerialOutcome::Unknown,
        },
        SerialOp {
            client: 5,
            call: blind(&[("c", "9")]),
            invoke: 25,
            complete: None,
            outcome: SerialOutcome::Unknown,
        },
    ];
    let log = vec![
        log_put(5, "a", rec("1", 5, 5, 1)),
        log_put(5, "b", rec("1", 5, 5, 1)),
        log_put(7, "a", rec("2", 5, 7, 2)),
        log_put(9, "a", rec("3", 5, 9, 3)),
    ];
    (ops, log)
}

#[test]
fn a_valid_history_passes_and_finds_the_unknown_write_that_committed() {
    let (ops, log) = good();
    let report = check_serial(&ops, &log);
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.placed, 3);
    assert_eq!(report.unknown_committed, 1);
}

#[test]
fn an_acknowledged_write_missing_from_the_log_is_lost() {
    let (ops, mut log) = good();
    log.retain(|c| c.revision != 7);
    let report = check_serial(&ops, &log);
    assert!(report.problems.iter().any(|p| p.contains("acknowledged transaction writes")), "{report}");
}

#[test]
fn a_branch_the_compares_do_not_give_is_caught() {
    let (mut ops, log) = good();
    if let SerialOutcome::Txn { succeeded, .. } = &mut ops[1].outcome {
        *succeeded = false;
    }
    let report = check_serial(&ops, &log);
    assert!(report.problems.iter().any(|p| p.contains("its compares give true")), "{report}");
}

#[test]
fn a_result_the_state_does_not_give_is_caught() {
    let (mut ops, log) = good();
    ops[1].outcome = txn_ok(7, true, vec![StepResult::Put(Some(rec("1", 5, 5, 1))), StepResult::Get(None)]);
    let report = check_serial(&ops, &log);
    assert!(report.problems.iter().any(|p| p.contains("returned")), "{report}");
}

#[test]
fn a_stale_read_is_caught() {
    let (mut ops, log) = good();
    ops[2].outcome = SerialOutcome::Read { revision: 9, record: Some(rec("2", 5, 7, 2)) };
    let report = check_serial(&ops, &log);
    assert!(report.problems.iter().any(|p| p.contains("client 3 read")), "{report}");
}

#[test]
fn an_order_against_real_time_is_caught() {
    let (mut ops, log) = good();
    // The read completed (at 50) before the swap was invoked, yet the swap
    // claims an earlier revision than the read's.
    ops[1].invoke = 60;
    ops[1].complete = Some(70);
    let report = check_serial(&ops, &log);
    assert!(report.problems.iter().any(|p| p.contains("was invoked after")), "{report}");
}

#[test]
fn a_write_nobody_asked_for_is_caught() {
    let (ops, mut log) = good();
    log.push(log_put(11, "z", rec("phantom", 11, 11, 1)));
    let report = check_serial(&ops, &log);
    assert!(report.problems.iter().any(|p| p.contains("no operation explains")), "{report}");
}

#[test]
fn a_write_applied_twice_is_caught() {
    let (ops, mut log) = good();
    log.push(log_put(11, "a", rec("3", 5, 11, 4)));
    let report = check_serial(&ops, &log);
    assert!(report.problems.iter().any(|p| p.contains("a second time")), "{report}");
}

#[test]
fn a_record_whose_version_the_log_does_not_explain_is_caught() {
    let (ops, mut log) = good();
    log[2] = log_put(7, "a", rec("2", 5, 7, 7));
    let report = check_serial(&ops, &log);
    assert!(report.problems.iter().any(|p| p.contains("the writes before it make")), "{report}");
}

#[test]
fn a_delete_only_unknown_transaction_is_found_by_trying() {
    let (mut ops, mut log) = good();
    ops.push(SerialOp {
        client: 6,
        call: SerialCall::Txn { compare: vec![], success: vec![Step::Delete(b("b"))], failure: vec![] },
        invoke: 45,
        complete: None,
        outcome: SerialOutcome::Unknown,
    });
    log.push(Committed { revision: 12, key: b("b"), record: None });
    let report = check_serial(&ops, &log);
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.unknown_committed, 2);
    // Deleting an absent key writes nothing, so a second delete is unexplained.
    log.push(Committed { revision: 13, key: b("b"), record: None });
    let report = check_serial(&ops, &log);
    assert!(!report.is_ok());
}
