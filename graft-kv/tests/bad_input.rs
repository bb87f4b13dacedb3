//! Bad input gets a clear one-line error and touches no data.

mod util;

use std::io::{Read, Write};
use std::process::{Command, Output};
use std::time::Duration;

use graft_kv::protocol::{self, ApiError, ConnKind, Hello, HelloReply};
use graft_kv::ClientError;
use util::{file_digest, graft_kv_bin, Cluster};

fn serve(args: &[&str]) -> Output {
    Command::new(graft_kv_bin())
        .arg("serve")
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run graft-kv")
}

/// The process failed, and its stderr says `want` on one `graft-kv: error:` line.
fn assert_refused(out: &Output, want: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "should fail: {stderr}");
    let line =
        stderr.lines().find(|l| l.starts_with("graft-kv: error:")).unwrap_or_else(|| panic!("{stderr}"));
    assert!(line.contains(want), "{line:?} should mention {want:?}");
}

#[test]
fn an_unknown_member_id_is_refused_before_any_data_is_created() {
    let c = Cluster::configure(3, "c");
    let dir = c.dir.path().join("nine");
    let out =
        serve(&["--id", "9", "--config", c.config.to_str().unwrap(), "--data-dir", dir.to_str().unwrap()]);
    assert_refused(&out, "member 9 is not in the cluster (members: 1, 2, 3)");
    assert!(!dir.exists(), "no data directory for a refused member");
}

#[test]
fn bad_config_files_are_refused_with_the_reason() {
    let c = Cluster::configure(1, "c");
    let missing = c.dir.path().join("missing.toml");
    let out = serve(&["--id", "1", "--config", missing.to_str().unwrap()]);
    assert_refused(&out, "cannot read config file");
    for (text, want) in [
        ("this is not toml", "invalid config file"),
        (
            "[[members]]\nid = 1\naddr = \"127.0.0.1:1\"\n[[members]]\nid = 1\naddr = \"127.0.0.1:2\"\n",
            "appears twice",
        ),
    ] {
        let f = c.dir.path().join("bad.toml");
        std::fs::write(&f, text).unwrap();
        let out = serve(&["--id", "1", "--config", f.to_str().unwrap()]);
        assert_refused(&out, want);
    }
}

#[test]
fn a_port_in_use_is_refused_before_any_data_is_created() {
    let c = Cluster::configure(1, "c");
    let addr = c.members[0].addr.clone();
    let _squatter = std::net::TcpListener::bind(&addr).expect("hold the port");
    let dir = c.dir.path().join("d");
    let out =
        serve(&["--id", "1", "--config", c.config.to_str().unwrap(), "--data-dir", dir.to_str().unwrap()]);
    assert_refused(&out, &format!("cannot listen on {addr}"));
    assert!(!dir.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_of_another_member_or_cluster_is_refused_untouched() {
    let mut c = Cluster::start(1);
    c.wait_leader(Duration::from_secs(20)).await;
    c.client().put("k", "v").await.expect("put");
    c.stop(1);
    let dir = c.members[0].data_dir.clone();
    let db = dir.join(graft_kv::storage::DB_FILE);
    let before = file_digest(&db);

    // Member 2 of a two-member cluster pointed at member 1's directory.
    let two = Cluster::configure(2, "test-cluster");
    let out =
        serve(&["--id", "2", "--config", two.config.to_str().unwrap(), "--data-dir", dir.to_str().unwrap()]);
    assert_refused(&out, "belongs to member 1 of cluster \"test-cluster\", not member 2");
    // Member 1 of another cluster.
    let other = Cluster::configure(1, "other-cluster");
    let out = serve(&[
        "--id",
        "1",
        "--config",
        other.config.to_str().unwrap(),
        "--data-dir",
        dir.to_str().unwrap(),
    ]);
    assert_refused(&out, "not member 1 of cluster \"other-cluster\"");
    assert_eq!(file_digest(&db), before, "the refused starts must not touch the database");

    // The rightful owner still starts and finds its data.
    c.start_member(1);
    c.wait_leader(Duration::from_secs(20)).await;
    assert_eq!(c.client().get("k").await.unwrap().map(|v| v.value), Some("v".into()));
}

#[test]
fn a_corrupt_database_is_refused_untouched() {
    let c = Cluster::configure(1, "c");
    let dir = c.dir.path().join("corrupt");
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join(graft_kv::storage::DB_FILE);
    std::fs::write(&db, vec![0x5a; 8192]).unwrap();
    let before = file_digest(&db);
    let out =
        serve(&["--id", "1", "--config", c.config.to_str().unwrap(), "--data-dir", dir.to_str().unwrap()]);
    assert_refused(&out, "database");
    assert_eq!(file_digest(&db), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_close_only_their_connection() {
    let c = Cluster::start(1);
    c.wait_leader(Duration::from_secs(20)).await;
    let client = c.client();
    client.put("before", "1").await.unwrap();
    let addr = c.members[0].addr.clone();

    // Garbage instead of a hello.
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"\x00\x00\x00\x05hello").unwrap();
    let mut buf = [0u8; 64];
    assert_eq!(s.read(&mut buf).unwrap_or(0), 0, "the member closes a connection that is not graft");

    // A frame over the size limit.
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&u32::MAX.to_be_bytes()).unwrap();
    assert_eq!(s.read(&mut buf).unwrap_or(0), 0, "an oversized frame closes the connection");

    // A wrong protocol version gets a reason, then the connection closes.
    let stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut conn = protocol::framed(stream);
    let mut hello = Hello::new(ConnKind::Client);
    hello.version = 99;
    protocol::send(&mut conn, &hello).await.unwrap();
    match protocol::recv::<_, HelloReply>(&mut conn).await.unwrap() {
        Some(HelloReply::Refused { reason }) => assert!(reason.contains("version 99"), "{reason}"),
        other => panic!("expected a refusal, got {other:?}"),
    }

    // A good hello followed by junk.
    let stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut conn = protocol::framed(stream);
    protocol::send(&mut conn, &Hello::new(ConnKind::Client)).await.unwrap();
    let _: Option<HelloReply> = protocol::recv(&mut conn).await.unwrap();
    futures::SinkExt::send(&mut conn, bytes::Bytes::from_static(b"\xff\xff\xff\xff\xff\xff")).await.unwrap();
    assert!(protocol::recv::<_, HelloReply>(&mut conn).await.unwrap_or(None).is_none());

    // The member still serves everyone else.
    client.put("after", "2").await.expect("still serving");
    assert_eq!(client.get("before").await.unwrap().map(|v| v.value), Some("1".into()));
    let log = std::fs::read_to_string(&c.members[0].log_file).unwrap();
    assert!(log.contains("malformed frame"), "the reason is logged:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_value_is_refused_and_nothing_is_written() {
    let c = Cluster::start(1);
    c.wait_leader(Duration::from_secs(20)).await;
    let client = c.client();
    let big = vec![b'x'; protocol::MAX_VALUE + 1];
    match client.put("big", big).await {
        Err(ClientError::Api(ApiError::ValueTooLarge { size, max })) => {
            assert_eq!((size, max), (protocol::MAX_VALUE + 1, protocol::MAX_VALUE));
        }
        other => panic!("expected ValueTooLarge, got {other:?}"),
    }
    assert_eq!(client.get("big").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_a_member_cleanly() {
    let mut c = Cluster::start(1);
    c.wait_leader(Duration::from_secs(20)).await;
    c.client().put("k", "v").await.unwrap();
    let status = c.stop(1).expect("running");
    assert!(status.success(), "exit status {status}");
    let log = std::fs::read_to_string(&c.members[0].log_file).unwrap();
    assert!(log.contains("SIGTERM: shutting down") && log.contains("1, stopped"), "{log}");
}
