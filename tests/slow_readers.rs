//! Memory with clients that never read: each is dropped after the write
//! timeout, and the process's memory stays flat round after round (Linux:
//! it reads VmRSS from /proc). Prints the figures for RELIABILITY.md.
#![cfg(target_os = "linux")]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{guard, unique_endpoint, RawClient, Serving};
use pipesvc::protocol::Frame;
use pipesvc::server::{Context, Server, ServiceError};

const ROUNDS: usize = 10;
const CLIENTS: usize = 20;
const PAYLOAD: usize = 64 * 1024;

/// Resident memory of this process, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Sends requests and never reads, until the server drops the connection.
async fn never_read(endpoint: pipesvc::Endpoint, payload: Bytes) -> u32 {
    let (mut raw, _) = RawClient::handshake(&endpoint).await;
    let mut sent = 0u32;
    while raw
        .try_send(Frame::request(sent + 1, payload.clone()))
        .await
        .is_ok()
    {
        sent += 1;
    }
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_flat_with_clients_that_never_read() {
    let endpoint = unique_endpoint("slow-readers");
    let serving = Serving::start(
        Server::builder(endpoint.clone())
            .write_timeout(Duration::from_millis(100))
            .handler(|r: Bytes, _: Context| async move { Ok::<_, ServiceError>(r) })
            .bind()
            .unwrap(),
    );
    let payload = Bytes::from(vec![7u8; PAYLOAD]);

    let mut rss = Vec::new();
    let mut sent = 0;
    for _ in 0..ROUNDS {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|_| tokio::spawn(never_read(endpoint.clone(), payload.clone())))
            .collect();
        for client in clients {
            sent += guard(client).await.unwrap();
        }
        rss.push(rss_kib());
    }
    eprintln!(
        "pipesvc-report: {ROUNDS} rounds of {CLIENTS} clients that never read \
         ({} requests of {} KiB sent, each client dropped by the write timeout); \
         VmRSS after each round (KiB): {rss:?}",
        sent,
        PAYLOAD / 1024
    );
    // The first rounds set the high-water mark; later ones must reuse that
    // memory, not add to it. 32 MiB is far below one round's working set
    // (about 20 clients x 192 frames of 64 KiB = 240 MiB), so leaking even
    // a fraction of each round would show over seven more rounds.
    let settled = rss[1..3].iter().copied().max().unwrap();
    let last = *rss.last().unwrap();
    assert!(
        last <= settled + 32 * 1024,
        "memory grew from {settled} KiB to {last} KiB: {rss:?}"
    );
    serving.stop().await;
}
