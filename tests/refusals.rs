//! Refusals (ERROR instead of HELLO) are bounded: a reconnect flood
//! cannot make a task per client.
#![cfg(unix)]

mod common;

use bytes::Bytes;
use common::{guard, unique_endpoint, RawClient, TestServer};
use pipesvc::server::{ConnectionContext, Server, ServiceError};

/// Refusals the server runs at once (`MAX_REFUSALS` in src/server/mod.rs).
const MAX_REFUSALS: usize = 32;

/// Tasks of the test's own besides refusals: the server's, the connection
/// holding the only slot, the sampler, with room to spare.
const OTHER_TASKS: usize = 8;

/// 300 clients wait in the listen queue of a server at its connection
/// limit. On a current-thread runtime the accept loop takes up to a whole
/// coop budget (128) of them in one turn; a sampler task, run between
/// batches of other tasks, records the most tasks alive at once. Before
/// the cap every refused client had a task of its own (the sampler saw
/// about 130 alive); now at most `MAX_REFUSALS` refusals are in progress
/// and the rest are closed without an answer.
#[tokio::test]
async fn a_flood_of_refused_clients_makes_a_bounded_number_of_tasks() {
    const FLOOD: usize = 300;
    let endpoint = unique_endpoint("refusal-flood");
    let server = Server::builder(endpoint.clone())
        .max_connections(1)
        .handler(|r: Bytes, _: ConnectionContext| async move { Ok::<_, ServiceError>(r) })
        .bind()
        .unwrap();
    let serving = TestServer::start(server);
    let (holder, _) = guard(RawClient::handshake(&endpoint)).await;
    guard(async {
        while serving.handle().connection_count() < 1 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    // Connected without yielding: all wait in the queue at once.
    let flood: Vec<_> = (0..FLOOD)
        .map(|_| std::os::unix::net::UnixStream::connect(endpoint.address()).unwrap())
        .collect();
    let metrics = tokio::runtime::Handle::current().metrics();
    let baseline = metrics.num_alive_tasks();
    let sampler = tokio::spawn(async move {
        let mut most = 0;
        // Until the flood has been refused: every client answered or closed.
        while serving.handle().status().connections_total < (FLOOD + 1) as u64 || most == 0 {
            most = most.max(
                tokio::runtime::Handle::current()
                    .metrics()
                    .num_alive_tasks(),
            );
            tokio::task::yield_now().await;
        }
        (most, serving)
    });
    let (most, serving) = guard(sampler).await.unwrap();
    eprintln!("baseline {baseline} tasks, at most {most} alive during the flood");
    assert!(
        most <= baseline + MAX_REFUSALS + OTHER_TASKS,
        "{most} tasks alive at once (baseline {baseline})"
    );
    drop(flood);
    drop(holder);
    // Still serving.
    guard(async {
        while serving.handle().connection_count() > 0 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    let (_client, _) = guard(RawClient::handshake(&endpoint)).await;
    guard(serving.stop()).await.expect("serve");
}
