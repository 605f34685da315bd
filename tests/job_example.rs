//! `examples/job_service.rs` and `examples/job_client.rs` run a job end to
//! end: submit, list, status, cancel, and an unknown job; only the job's
//! owner or an administrator may cancel it.

// Both examples include their shared `job_api`, as two programs would.
#![allow(clippy::duplicate_mod)]

mod common;

#[path = "../examples/job_client.rs"]
mod job_client;
#[path = "../examples/job_service.rs"]
mod job_service;

use common::{guard, unique_endpoint, TestServer};
use job_service::job_api::{State, CANCEL, LIST, STATUS, SUBMIT};
use pipesvc::protocol::ErrorCode;
use pipesvc::server::{AccessPolicy, Server};
use pipesvc::transport::{memory, PeerInfo};
use pipesvc::{Client, ClientOptions};

/// Runs the client's command line `words`.
async fn run(client: &Client, words: &str) -> pipesvc::Result<String> {
    let args: Vec<String> = words.split(' ').map(str::to_owned).collect();
    job_client::run(client, &args).await
}

#[tokio::test]
async fn the_job_client_drives_the_job_service() {
    let endpoint = unique_endpoint("jobs");
    let server = Server::builder(endpoint.clone())
        .calls(job_service::service())
        .bind();
    let server = TestServer::start(server.expect("bind the job service"));
    guard(async {
        let client = Client::connect(&endpoint).await.expect("connect");
        assert_eq!(run(&client, "submit short 2").await.unwrap(), "job 1");
        assert_eq!(run(&client, "submit long 100000").await.unwrap(), "job 2");
        let listed = run(&client, "list").await.unwrap();
        assert!(
            listed.contains("short") && listed.contains("long"),
            "{listed}"
        );
        // Following a job (no polling): its states, in order, to this
        // caller alone, until it ends.
        let followed = run(&client, "follow 1").await.unwrap();
        assert!(
            followed.ends_with("Finished\nended: Finished"),
            "{followed}"
        );
        assert_eq!(
            client.call(&STATUS, &1).await.unwrap().state,
            State::Finished
        );
        let cancelled = run(&client, "cancel 2").await.unwrap();
        assert!(cancelled.contains("Cancelled"), "{cancelled}");
        let jobs = client.call(&LIST, &()).await.unwrap();
        let states: Vec<_> = jobs.iter().map(|job| (job.id, job.state.clone())).collect();
        assert_eq!(states, [(1, State::Finished), (2, State::Cancelled)]);
        // A finished job stays finished when cancelled.
        assert_eq!(
            client.call(&CANCEL, &1).await.unwrap().state,
            State::Finished
        );
        let err = run(&client, "follow 9").await.unwrap_err();
        assert_eq!(err.code().map(|c| c.0), Some(1404), "{err}");
        let err = run(&client, "status 9").await.unwrap_err();
        assert_eq!(err.code().map(|c| c.0), Some(1404), "{err}");
        assert!(run(&client, "frobnicate").await.is_err());
        let submitted = client.call(
            &SUBMIT,
            &job_service::job_api::Submit {
                name: "x".into(),
                steps: 0,
            },
        );
        assert_eq!(submitted.await.unwrap(), 3);
    })
    .await;
    server.stop().await.expect("stop");
}

#[tokio::test]
async fn only_the_owner_or_an_administrator_cancels_a_job() {
    let server = Server::builder(unique_endpoint("job-owner"))
        .access(AccessPolicy::anyone())
        .calls(job_service::service())
        .build();
    let server = TestServer::start(server.expect("build the job service"));
    // Clients of three users, over in-memory streams the test vouches for.
    let as_user = |uid: u32| {
        let (stream, server_end) = memory::pair();
        let user = PeerInfo::new().with_pid(uid).with_uid(uid).with_gid(uid);
        server.handle().serve_connection(server_end, user).unwrap();
        Client::from_io(stream, Default::default())
    };
    guard(async {
        let (owner, other, root) = (as_user(4242).await, as_user(4343).await, as_user(0).await);
        let (owner, other, root) = (owner.unwrap(), other.unwrap(), root.unwrap());
        assert_eq!(run(&owner, "submit long 100000").await.unwrap(), "job 1");
        assert_eq!(run(&owner, "submit mine 100000").await.unwrap(), "job 2");
        let err = other.call(&CANCEL, &1).await.unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::NOT_ALLOWED), "{err}");
        assert!(err.to_string().contains("needs rule \"admin\""), "{err}");
        assert_eq!(
            root.call(&CANCEL, &1).await.unwrap().state,
            State::Cancelled
        );
        assert_eq!(
            owner.call(&CANCEL, &2).await.unwrap().state,
            State::Cancelled
        );
    })
    .await;
    server.stop().await.expect("stop");
}

#[tokio::test]
async fn the_job_client_watches_jobs_end_across_a_service_restart() {
    let endpoint = unique_endpoint("job-watch");
    let start = || {
        let server = Server::builder(endpoint.clone())
            .calls(job_service::service())
            .bind();
        TestServer::start(server.expect("bind the job service"))
    };
    let server = start();
    guard(async {
        let options = ClientOptions::new().reconnect(true);
        let client = Client::connect_with(&endpoint, options).await.unwrap();
        // Subscribed before anything is submitted: no announcement missed.
        let finished = client.subscribe(&job_client::job_api::FINISHED);
        let finished = finished.await.unwrap();
        let (lines, mut seen) = tokio::sync::mpsc::unbounded_channel();
        let watching = {
            let client = client.clone();
            tokio::spawn(async move {
                job_client::watch(&client, finished, |line| lines.send(line).is_ok()).await
            })
        };
        assert_eq!(run(&client, "submit quick 1").await.unwrap(), "job 1");
        assert_eq!(seen.recv().await.unwrap(), "ended: job 1 Finished");

        // The service restarts: the watcher subscribes again by itself
        // and resyncs (the new service knows no job yet).
        server.stop().await.expect("stop");
        let _server = start();
        assert_eq!(
            seen.recv().await.unwrap(),
            "the service restarted; it knows 0 jobs"
        );
        assert_eq!(run(&client, "submit again 1").await.unwrap(), "job 1");
        assert_eq!(seen.recv().await.unwrap(), "ended: job 1 Finished");
        let cancelled = run(&client, "submit long 100000").await.unwrap();
        assert_eq!(cancelled, "job 2");
        run(&client, "cancel 2").await.unwrap();
        assert_eq!(seen.recv().await.unwrap(), "ended: job 2 Cancelled");
        watching.abort();
    })
    .await;
}
