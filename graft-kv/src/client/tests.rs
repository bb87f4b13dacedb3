//! The client's unit tests.

use super::*;
use std::sync::atomic::AtomicUsize;

/// A fake member that welcomes every connection, counts them, and never
/// answers a request.
async fn silent_member() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut conn = protocol::framed(stream);
                let _: Option<Hello> = protocol::recv(&mut conn).await.ok().flatten();
                let welcome = HelloReply::Welcome { member: 1, cluster: "c".into() };
                let _ = protocol::send(&mut conn, &welcome).await;
                // Hold the connection open, answering nothing.
                while let Some(Ok(_)) = conn.next().await {}
            });
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn concurrent_requests_share_one_connection_attempt() {
    let (addr, accepted) = silent_member().await;
    let client = Client::new(ClientOptions { endpoints: vec![addr], timeout: Duration::from_millis(300) });
    let requests: Vec<_> = (0..64)
        .map(|i| {
            let c = client.clone();
            tokio::spawn(async move { c.get(format!("k{i}")).await })
        })
        .collect();
    for r in requests {
        assert!(r.await.unwrap().is_err(), "the fake member never answers");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "64 concurrent requests, one connection");
}

#[tokio::test]
async fn requests_waiting_on_a_failed_connect_fail_with_it() {
    // A port with nothing listening: every connect is refused at once.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let client =
        Client::new(ClientOptions { endpoints: vec![addr.clone()], timeout: Duration::from_millis(200) });
    let requests: Vec<_> = (0..16)
        .map(|i| {
            let c = client.clone();
            tokio::spawn(async move { c.get(format!("k{i}")).await })
        })
        .collect();
    for r in requests {
        match r.await.unwrap() {
            Err(ClientError::Unavailable { tried, .. }) => assert_eq!(tried, vec![addr.clone()]),
            other => panic!("expected unavailable, got {other:?}"),
        }
    }
}
