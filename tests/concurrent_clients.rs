//! Many clients at once, each with many pipelined requests of distinct
//! payloads from 0 bytes to 1 MiB; every response is checked.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use common::{guard, payload, unique_endpoint, RawClient, TestServer};
use pipesvc::protocol::{Frame, Kind};
use pipesvc::server::ServerHandle;
use pipesvc::server::{ConnectionContext, Server, ServiceError};
use pipesvc::transport::{memory, PeerInfo};
use pipesvc::{Client, Endpoint};
use tokio::sync::Barrier;

const CLIENTS: u32 = 200;
const REQUESTS: u32 = 100;
const MIB: usize = 1 << 20;

/// Request `index`'s size: 0 bytes first, 1 MiB last, sizes between spread
/// from a few bytes to 64 KiB, and all different within one client.
fn size(index: u32) -> usize {
    match index {
        0 => 0,
        i if i == REQUESTS - 1 => MIB,
        i => (1usize << (i % 17)) + i as usize,
    }
}

fn echo_server(endpoint: &Endpoint) -> Server<impl pipesvc::server::Handler> {
    Server::builder(endpoint.clone())
        .handler(
            |request: Bytes, _ctx: ConnectionContext| async move { Ok::<_, ServiceError>(request) },
        )
        .build()
        .expect("build")
}

/// One client through the library's `Client`: ids are its business, so a
/// mixed-up id shows as a wrong payload.
async fn library_client(server: ServerHandle, client_no: u32, start: Arc<Barrier>) {
    let client = Client::from_io(connect(&server), Default::default())
        .await
        .expect("connect");
    start.wait().await;
    let requests = (0..REQUESTS).map(|i| {
        let client = client.clone();
        async move {
            let sent = payload(client_no, i, size(i));
            let answer = client.request(sent.clone()).await.expect("response");
            assert!(
                answer == sent,
                "client {client_no} request {i}: wrong payload"
            );
        }
    });
    futures_util::future::join_all(requests).await;
    client.close().await;
}

/// One client speaking raw frames: checks each RESPONSE's id explicitly.
async fn raw_client(server: ServerHandle, client_no: u32, start: Arc<Barrier>) {
    let (client, _) = RawClient::handshake_over(connect(&server)).await;
    let RawClient {
        mut reader,
        mut writer,
    } = client;
    start.wait().await;
    // Ids deliberately not 1, 2, 3...: any u32 but 0 is valid.
    let id = |i: u32| i.wrapping_mul(2_654_435_761).wrapping_add(client_no) | 1;
    let expected: HashMap<u32, Bytes> = (0..REQUESTS)
        .map(|i| (id(i), payload(client_no, i, size(i))))
        .collect();
    assert_eq!(expected.len(), REQUESTS as usize, "ids are distinct");
    // Write and read at the same time: the server answers while we send.
    let send_all = async {
        use futures_util::SinkExt;
        for i in 0..REQUESTS {
            let frame = Frame::request(id(i), expected[&id(i)].clone());
            writer.send(frame).await.expect("send");
        }
    };
    let receive_all = async {
        use futures_util::StreamExt;
        let mut seen = HashMap::new();
        while seen.len() < REQUESTS as usize {
            let frame = reader.next().await.expect("open").expect("valid frame");
            assert_eq!(frame.kind, Kind::Response, "client {client_no}: {frame:?}");
            let want = expected
                .get(&frame.id)
                .expect("a response to a request we sent");
            assert!(
                frame.payload == *want,
                "client {client_no}: payload of id {}",
                frame.id
            );
            assert!(
                seen.insert(frame.id, ()).is_none(),
                "id {} answered twice",
                frame.id
            );
        }
    };
    tokio::join!(send_all, receive_all);
}

/// A client end of an in-memory connection to `server`.
fn connect(server: &ServerHandle) -> memory::MemoryStream {
    let (client_end, server_end) = memory::pair();
    server
        .serve_connection(server_end, PeerInfo::current())
        .expect("serve");
    client_end
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_clients_with_a_hundred_pipelined_requests_each() {
    let endpoint = unique_endpoint("many");
    let serving = TestServer::start(echo_server(&endpoint));

    let start = Arc::new(Barrier::new(CLIENTS as usize));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|n| {
            let (server, start) = (serving.handle().clone(), start.clone());
            if n % 2 == 0 {
                tokio::spawn(library_client(server, n, start))
            } else {
                tokio::spawn(raw_client(server, n, start))
            }
        })
        .collect();
    guard(async {
        for client in clients {
            client.await.expect("client task succeeded");
        }
    })
    .await;

    guard(serving.stop()).await.expect("serve");
}

/// A connection whose calls its caller writes itself (one in flight at a
/// time) never starts its flusher task: a client that asks once and goes
/// runs its reader and its supervisor only. Calls made at once (all but
/// the first are queued) start it. (Before issue 23's second stop every
/// connection spawned its flusher: 3 tasks for the lone call.)
#[tokio::test(flavor = "current_thread")]
async fn a_lone_call_starts_no_flusher_task() {
    let (ready, is_ready) = std::sync::mpsc::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    // The server on a runtime of its own: only the client's tasks count.
    let server = common::on_thread(move || async move {
        let (endpoint, serving) = common::echo("no-flusher");
        ready.send(endpoint).unwrap();
        let _ = stopped.await;
        guard(serving.stop()).await.expect("serve");
    });
    let endpoint = is_ready.recv().unwrap();
    let metrics = tokio::runtime::Handle::current().metrics();
    let before = metrics.num_alive_tasks();
    let client = guard(Client::connect(&endpoint)).await.unwrap();
    assert_eq!(guard(client.request("one")).await.unwrap(), "one");
    let lone = metrics.num_alive_tasks() - before;
    let calls = (0..16).map(|_| client.request("many"));
    guard(futures_util::future::try_join_all(calls))
        .await
        .unwrap();
    let busy = metrics.num_alive_tasks() - before;
    assert_eq!(
        (lone, busy),
        (2, 3),
        "the client's tasks after a lone call, and after calls at once"
    );
    guard(client.close()).await;
    stop.send(()).unwrap();
    server.join().unwrap();
}
