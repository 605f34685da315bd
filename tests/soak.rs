//! Soak: a `pipesvc serve` process under 1000 concurrent library clients
//! (`reconnect` on, with a request timeout) for `PIPESVC_SOAK_SECS` seconds
//! (default 30), with misbehaving peers alongside (raw clients that hang up
//! in the middle of a frame, `pipesvc ping` processes killed with SIGKILL)
//! and the server itself killed with SIGKILL half-way through and started
//! again on the same name. The server runs with an access policy of
//! several rules ([`POLICY`]): each connection is checked against them,
//! the first reading the client's executable through a pidfd, so that the
//! descriptor count at the end also proves no pidfd is left behind.
//!
//! What must hold at the end (asserted):
//! - every response that arrived is the echo of its own request (each
//!   payload encodes its client and sequence number), and no sequence
//!   number of a client was answered twice;
//! - every request has exactly one outcome (successes + failures ==
//!   requests), and the only failures are those the server's death
//!   explains: `ConnectionClosed` for at most one request in flight per
//!   request loop; none refused unsent by a dead connection (`NEVER_SENT`)
//!   or reset by the dying server while reconnecting
//!   (`reset_while_connecting`): the client retries both; no timeout, no
//!   remote error, no other failed reconnect;
//! - every client reconnected exactly once and was answered by the second
//!   server;
//! - the second server still answers a fresh `pipesvc call`, logged no
//!   error, stops cleanly on SIGTERM, and once every client is gone its
//!   open file descriptors are again exactly those it started with.
//!
//! Timing is used only for pacing (when to restart, when to stop) and for
//! one bounded poll of `/proc`; outcomes never depend on it.
//! `PIPESVC_SOAK_SECS=300 cargo test --test soak -- --nocapture` runs a
//! longer one and shows the figures.

#![cfg(unix)]

mod common;

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{payload, unique_endpoint, RawClient};
use pipesvc::client::ClientOptions;
use pipesvc::protocol::{ClientHello, Frame, Kind};
use pipesvc::{Client, Endpoint, Error};
use tokio::sync::{oneshot, RwLock};
use tokio_util::sync::CancellationToken;

const BIN: &str = env!("CARGO_BIN_EXE_pipesvc");

/// The server's `--allow` rules: `pipesvc ping` processes (the server's
/// own executable) pass the first, the library clients (this test's
/// executable, root or this user) fail it and the group rule before
/// `same-user` admits them; per-method rules on top.
const POLICY: [&str; 10] = [
    "--allow",
    "same-executable",
    "--allow",
    "group:4242",
    "--allow",
    "same-user",
    "--allow",
    "sleep=user:65534",
    "--allow",
    "admin.*=admin",
];

/// Library clients, each with its own connection.
const CLIENTS: u32 = 1000;
/// Request loops per client, sharing its connection (so requests are
/// pipelined on it and ids are multiplexed).
const LOOPS: u32 = 2;
/// Tasks that keep opening raw connections and hanging up mid-frame.
const RAW_PEERS: u32 = 2;
/// Tasks that keep running `pipesvc ping` processes and killing them.
const PING_PEERS: u32 = 2;

/// Client settings: generous, so that on a loaded 2-core machine nothing
/// but a real fault makes a request fail. The server restart takes well
/// under a second; reconnects retry for up to `connect.timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

// Bounds on waits that only a bug would exhaust; never a result.
use pipesvc::testing::HANG_GUARD;

fn soak_duration() -> Duration {
    let secs = match std::env::var("PIPESVC_SOAK_SECS") {
        Ok(text) => text
            .trim()
            .parse::<u64>()
            .unwrap_or_else(|_| panic!("PIPESVC_SOAK_SECS={text:?} is not a whole number")),
        Err(_) => 30,
    };
    Duration::from_secs(secs.max(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_1000_clients_misbehaving_peers_and_a_server_restart() {
    let soak = soak_duration();
    let limit = raise_fd_limit();
    let began = Instant::now();
    // Bounded: the soak plus generous room for start-up and the end checks.
    tokio::time::timeout(soak + Duration::from_secs(180), run(soak, limit))
        .await
        .expect("soak hung: its overall guard expired");
    eprintln!(
        "soak: test wall time {:.1} s",
        began.elapsed().as_secs_f64()
    );
}

async fn run(soak: Duration, fd_limit: u64) {
    let endpoint = unique_endpoint("soak");
    let name = endpoint.address().to_string_lossy().into_owned();
    let socket = endpoint.address().to_owned();

    let mut server1 = ServerProcess::start(&name).await;
    let options = ClientOptions::new()
        .request_timeout(Some(REQUEST_TIMEOUT))
        .reconnect(true)
        .handshake_timeout(CONNECT_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT);

    // Every client connected before the load starts.
    let connects = (0..CLIENTS).map(|_| Client::connect_with(&endpoint, options.clone()));
    let clients: Vec<Client> = within(futures_util::future::join_all(connects), "connecting")
        .await
        .into_iter()
        .map(|c| c.expect("initial connect"))
        .collect();

    let stats = Arc::new(Stats::default());
    let stop = CancellationToken::new();
    // Should this test fail, the request loops and peers stop too.
    let _stop_on_exit = stop.clone().drop_guard();
    // 1 while the first server runs, 2 once the second one listens.
    let epoch = Arc::new(AtomicU32::new(1));
    // The misbehaving peers hold this for reading during each round; the
    // restart takes it for writing, so no peer round straddles the restart
    // and every peer round has a definite expected outcome. The library
    // clients are not gated: the restart hits them wherever they are.
    let gate = Arc::new(RwLock::new(()));
    let load_started = Instant::now();

    let mut loops = Vec::new();
    for (n, client) in clients.iter().enumerate() {
        let answered = Arc::new(Mutex::new(HashSet::new()));
        for l in 0..LOOPS {
            let job = RequestLoop {
                client: client.clone(),
                client_no: n as u32,
                loop_no: l,
                answered: answered.clone(),
                stats: stats.clone(),
                epoch: epoch.clone(),
                stop: stop.clone(),
            };
            loops.push(tokio::spawn(job.run()));
        }
    }
    let raw_peers: Vec<_> = (0..RAW_PEERS)
        .map(|t| {
            let (endpoint, gate, stop) = (endpoint.clone(), gate.clone(), stop.clone());
            tokio::spawn(raw_peer(endpoint, t, gate, stop))
        })
        .collect();
    let ping_peers: Vec<_> = (0..PING_PEERS)
        .map(|t| {
            let (name, gate, stop) = (name.clone(), gate.clone(), stop.clone());
            tokio::spawn(ping_peer(name, t, gate, stop))
        })
        .collect();

    // Pacing, not synchronisation: the restart comes half-way through.
    tokio::time::sleep_until((load_started + soak / 2).into()).await;
    let restart = {
        let closed = within(gate.write(), "waiting for the peers' rounds").await;
        let fds_before_kill = server1.fds();
        let hwm1 = server1.vm_hwm_kib();
        let began = Instant::now();
        server1.kill().await;
        // SIGKILL leaves the socket file behind: the new server must
        // notice nobody answers on it and replace it (it would fail to
        // start, "in use", if it could not).
        assert!(
            is_socket_file(&socket),
            "the killed server's socket file should still be there"
        );
        let server2 = ServerProcess::start(&name).await;
        epoch.store(2, Ordering::SeqCst);
        drop(closed);
        Restart {
            server2,
            fds_before_kill,
            hwm1,
            took: began.elapsed(),
        }
    };
    let mut server2 = restart.server2;
    // The second server's descriptors from start-up. The clients retry
    // while it starts, so by the time we first look it has already
    // accepted some of them: its start-up descriptors are the first
    // server's (same binary, arguments and environment, and no client
    // could reach the first before we looked); anything else then open
    // must be an accepted connection: its socket, and the pidfd the server
    // takes at accept when its policy reads executables (the soak's does).
    let fds_baseline = server1.fds_at_start.clone();
    let early: Vec<(&u32, &String)> = server2
        .fds_at_start
        .iter()
        .filter(|(fd, kind)| fds_baseline.get(fd) != Some(kind))
        .collect();
    assert!(
        fds_baseline
            .iter()
            .all(|(fd, kind)| server2.fds_at_start.get(fd) == Some(kind))
            && early
                .iter()
                .all(|(_, kind)| *kind == "socket" || *kind == "anon_inode:[pidfd]"),
        "the two servers start with different descriptors: {fds_baseline:?} and {:?}",
        server2.fds_at_start
    );
    let early_accepts = early.iter().filter(|(_, kind)| *kind == "socket").count();

    // Pacing: the load runs for the soak duration, then winds down.
    tokio::time::sleep_until((load_started + soak).into()).await;
    let fds_loaded = server2.fds();
    stop.cancel();

    let mut reports = Vec::new();
    for job in loops {
        reports.push(
            within(job, "a request loop to stop")
                .await
                .expect("request loop"),
        );
    }
    let load_time = load_started.elapsed();
    let mut raw_rounds = 0;
    for peer in raw_peers {
        raw_rounds += within(peer, "a raw peer to stop").await.expect("raw peer");
    }
    let mut pings_killed = 0;
    let mut pongs = 0;
    for peer in ping_peers {
        let (killed, seen) = within(peer, "a ping peer to stop")
            .await
            .expect("ping peer");
        pings_killed += killed;
        pongs += seen;
    }
    let reconnects: Vec<u64> = clients.iter().map(Client::reconnects).collect();
    let dropped_notifications: u64 = clients.iter().map(Client::dropped_notifications).sum();
    let closes = clients.iter().map(|c| c.close());
    within(
        futures_util::future::join_all(closes),
        "closing the clients",
    )
    .await;
    drop(clients);

    // The server still answers.
    let call = finish(
        Command::new(BIN)
            .args(["call", "--name", &name, "still there?"])
            .env("RUST_LOG", "off")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run pipesvc call"),
        "pipesvc call",
    )
    .await;
    assert!(call.status.success(), "final call failed: {call:?}");
    assert_eq!(String::from_utf8_lossy(&call.stdout), "still there?\n");

    // Every client, peer and process of ours is gone. The server closes a
    // connection's socket only once its connection task has seen the peer
    // go and wound down, in another process and on its own schedule; no
    // event tells this test when that is done, so poll /proc (bounded).
    let clients_gone = Instant::now();
    let deadline = clients_gone + HANG_GUARD;
    let fds_end = loop {
        let fds = server2.fd_table();
        if fds == fds_baseline || Instant::now() > deadline {
            break fds;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let fds_settled = clients_gone.elapsed();
    let hwm2 = server2.vm_hwm_kib();
    let server2_log = server2.stop_gracefully(&socket).await;

    // The figures.
    let s = &stats;
    let requests = s.requests.load(Ordering::SeqCst);
    let successes = s.successes.load(Ordering::SeqCst);
    let closed = s.closed.load(Ordering::SeqCst);
    let timeouts = s.timeouts.load(Ordering::SeqCst);
    let remote: BTreeMap<u16, u64> = s.remote.lock().unwrap().clone();
    let remote_total: u64 = remote.values().sum();
    let connect_failures = s.connect_failures.load(Ordering::SeqCst);
    let connect_resets = s.connect_resets.load(Ordering::SeqCst);
    let unsent = s.unsent.load(Ordering::SeqCst);
    let other: Vec<String> = s.other.lock().unwrap().clone();
    let failures = closed
        + unsent
        + timeouts
        + remote_total
        + connect_failures
        + connect_resets
        + other.len() as u64;
    let server1_log = server1.warnings();
    let secs = load_time.as_secs_f64();
    eprintln!(
        "soak figures ({} s of load, {CLIENTS} clients x {LOOPS} request loops, debug={}):\n\
         \x20 requests {requests} ({:.0}/s), successes {successes}, failures {failures}: \
         connection closed in flight {closed}, refused unsent on the dead connection {unsent}, \
         timeout {timeouts}, remote {remote:?}, \
         connect failure {connect_failures}, \
         reconnect reset by the dying server {connect_resets}, other {}\n\
         \x20 slowest request {:.1} ms (a reconnect included); reconnects {} (every client: min {}, max {}); \
         notifications dropped unread {dropped_notifications}\n\
         \x20 misbehaving peers: {raw_rounds} raw connections hung up mid-frame, \
         {pings_killed} ping processes SIGKILLed mid-run ({pongs} pongs)\n\
         \x20 restart: server 1 killed with {} fds open, VmHWM {} KiB; server 2 listening {:.0} ms after the kill\n\
         \x20 server 2: fds at start {} (+{early_accepts} clients accepted before we looked), \
         under load {fds_loaded}, after the clients left {} (within {} ms); \
         VmHWM {hwm2} KiB; fd soft limit {fd_limit}\n\
         \x20 server warnings/errors logged: first server {}, second server {}",
        secs.round(),
        cfg!(debug_assertions),
        requests as f64 / secs,
        other.len(),
        s.slowest_us.load(Ordering::SeqCst) as f64 / 1000.0,
        reconnects.iter().sum::<u64>(),
        reconnects.iter().min().unwrap(),
        reconnects.iter().max().unwrap(),
        restart.fds_before_kill,
        restart.hwm1,
        restart.took.as_secs_f64() * 1000.0,
        fds_baseline.len(),
        fds_end.len(),
        fds_settled.as_millis(),
        server1_log.len(),
        server2_log.len(),
    );
    for line in server1_log.iter().chain(&server2_log).take(20) {
        eprintln!("  server log: {line}");
    }

    // The invariants.
    assert_eq!(
        successes + failures,
        requests,
        "every request has exactly one outcome"
    );
    assert_eq!(timeouts, 0, "a request was never answered");
    assert_eq!(remote_total, 0, "the echo service never fails a request");
    // The two ways a reconnect could fail that the client must absorb: a
    // call refused unsent by a connection whose writer had died, and a
    // connect or handshake reset by the dying server.
    assert_eq!(unsent, 0, "calls refused unsent by a dead connection");
    assert_eq!(connect_resets, 0, "reconnects reset by the dying server");
    assert_eq!(connect_failures, 0, "every reconnect succeeded");
    assert!(other.is_empty(), "unexpected failures: {other:?}");
    for report in &reports {
        assert!(
            report.closed <= 1,
            "client {} loop {}: {} requests failed with a closed connection; \
             only the one in flight when the server died may: {:?}",
            report.client_no,
            report.loop_no,
            report.closed,
            report.closed_why
        );
    }
    for (n, r) in reconnects.iter().enumerate() {
        // One server death, so exactly one (successful) reconnect each.
        assert_eq!(*r, 1, "client {n} reconnected {r} times");
        let on_second: u64 = reports
            .iter()
            .filter(|rep| rep.client_no == n as u32)
            .map(|rep| rep.answered_by_second_server)
            .sum();
        assert!(
            on_second > 0,
            "client {n} got no answer from the second server"
        );
    }
    assert!(raw_rounds >= RAW_PEERS as u64 && pings_killed >= PING_PEERS as u64);
    assert_eq!(
        fds_end, fds_baseline,
        "the server's open file descriptors did not return to those at its start \
         within {HANG_GUARD:?}"
    );
    let errors: Vec<&String> = server1_log
        .iter()
        .chain(&server2_log)
        .filter(|l| l.contains(" ERROR "))
        .collect();
    assert!(errors.is_empty(), "the server logged errors: {errors:#?}");
}

struct Restart {
    server2: ServerProcess,
    fds_before_kill: usize,
    hwm1: u64,
    took: Duration,
}

/// What every request loop adds to.
#[derive(Default)]
struct Stats {
    requests: AtomicU64,
    successes: AtomicU64,
    closed: AtomicU64,
    timeouts: AtomicU64,
    remote: Mutex<BTreeMap<u16, u64>>,
    connect_failures: AtomicU64,
    connect_resets: AtomicU64,
    unsent: AtomicU64,
    other: Mutex<Vec<String>>,
    slowest_us: AtomicU64,
}

struct RequestLoop {
    client: Client,
    client_no: u32,
    loop_no: u32,
    /// The sequence numbers of this client that have been answered.
    answered: Arc<Mutex<HashSet<u32>>>,
    stats: Arc<Stats>,
    epoch: Arc<AtomicU32>,
    stop: CancellationToken,
}

struct LoopReport {
    client_no: u32,
    loop_no: u32,
    closed: u32,
    closed_why: Vec<String>,
    answered_by_second_server: u64,
}

/// Request `seq`'s payload size: mostly small and all different, now and
/// then 64 KiB; never under the 8 bytes that carry (client, seq).
fn size(seq: u32) -> usize {
    if seq.is_multiple_of(97) {
        64 * 1024
    } else {
        8 + (seq.wrapping_mul(7919) % 2048) as usize
    }
}

/// The (client, sequence) a payload made by [`payload`] carries.
fn tag(bytes: &[u8]) -> (u32, u32) {
    let word = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().unwrap());
    (word(0), word(4))
}

impl RequestLoop {
    async fn run(self) -> LoopReport {
        let mut report = LoopReport {
            client_no: self.client_no,
            loop_no: self.loop_no,
            closed: 0,
            closed_why: Vec::new(),
            answered_by_second_server: 0,
        };
        let s = &self.stats;
        // Loop `l` of a client uses the sequence numbers l, l + LOOPS, ...
        let mut seq = self.loop_no;
        while !self.stop.is_cancelled() {
            let sent = payload(self.client_no, seq, size(seq));
            // Read before sending: a request sent in epoch 2 can only have
            // reached the second server (the first was dead by then).
            let epoch = self.epoch.load(Ordering::SeqCst);
            s.requests.fetch_add(1, Ordering::SeqCst);
            let started = Instant::now();
            let outcome = self.client.request(sent.clone()).await;
            let took = started.elapsed().as_micros() as u64;
            s.slowest_us.fetch_max(took, Ordering::SeqCst);
            let outcome_ok = outcome.is_ok();
            match outcome {
                Ok(answer) => {
                    assert_eq!(
                        tag(&answer),
                        (self.client_no, seq),
                        "client {} got the answer to another request",
                        self.client_no
                    );
                    assert!(
                        answer == sent,
                        "client {} seq {seq}: the payload differs",
                        self.client_no
                    );
                    assert!(
                        self.answered.lock().unwrap().insert(seq),
                        "client {} seq {seq} answered twice",
                        self.client_no
                    );
                    s.successes.fetch_add(1, Ordering::SeqCst);
                    if epoch == 2 {
                        report.answered_by_second_server += 1;
                    }
                }
                Err(e) if reset_while_connecting(&e) => {
                    s.connect_resets.fetch_add(1, Ordering::SeqCst);
                }
                Err(Error::ConnectionClosed(why)) if why.to_string() == NEVER_SENT => {
                    s.unsent.fetch_add(1, Ordering::SeqCst);
                }
                Err(Error::ConnectionClosed(why)) => {
                    s.closed.fetch_add(1, Ordering::SeqCst);
                    report.closed += 1;
                    report
                        .closed_why
                        .push(format!("seq {seq} epoch {epoch} after {took} us: {why}"));
                }
                // The library's own wording tells the request timeout from
                // a reconnect's handshake timeout.
                Err(Error::Timeout(_, what)) if what.contains("answer") => {
                    s.timeouts.fetch_add(1, Ordering::SeqCst);
                }
                Err(Error::Remote { code, .. } | Error::Server { code, .. }) => {
                    *s.remote.lock().unwrap().entry(code.0).or_default() += 1;
                }
                Err(e @ (Error::Connect { .. } | Error::Timeout(..))) => {
                    s.connect_failures.fetch_add(1, Ordering::SeqCst);
                    eprintln!("client {}: reconnect failed: {e}", self.client_no);
                }
                Err(e) => s
                    .other
                    .lock()
                    .unwrap()
                    .push(format!("client {} seq {seq}: {e}", self.client_no)),
            }
            seq += LOOPS;
            if !outcome_ok {
                // A failure can come back without waiting on anything (a
                // reconnect refused at once): yield so that this loop can
                // never hog a runtime thread.
                tokio::task::yield_now().await;
            }
        }
        report
    }
}

/// The reason a request fails with when its frame could not even be queued:
/// the connection's writer has stopped (the server is gone) but its reader
/// has not yet seen the end, so the client still takes the connection for
/// usable and does not reconnect. Such a request was never sent; pipesvc
/// does not yet retry it on a new connection (RELIABILITY.md, "Known
/// gaps"); the next call reconnects once the reader has caught up.
const NEVER_SENT: &str = "the connection is closed";

/// Whether a reconnect failed because the connection it was making was
/// reset: the killed server's listening socket is released after its
/// connections (Linux releases an exiting process's files in no particular
/// order), so a client that saw its connection end and reconnected at once
/// can land in the dying listener's queue, and that connection is reset
/// (ECONNRESET from connect, or from or EOF at the handshake). pipesvc does
/// not yet retry this (RELIABILITY.md, "Known gaps"); the call fails and
/// the next one reconnects.
fn reset_while_connecting(e: &Error) -> bool {
    let reset = |e: &std::io::Error| e.kind() == std::io::ErrorKind::ConnectionReset;
    match e {
        Error::Connect { source, .. } => reset(source),
        // Only the handshake of a reconnect yields these two.
        Error::Io(source) => reset(source),
        Error::ConnectionClosed(why) => why.to_string().contains("during the handshake"),
        _ => false,
    }
}

/// Keeps opening raw connections that go away in the middle of a frame,
/// until `stop`; returns how many it opened (at least one).
async fn raw_peer(
    endpoint: Endpoint,
    task: u32,
    gate: Arc<RwLock<()>>,
    stop: CancellationToken,
) -> u64 {
    let mut round = 0u32;
    loop {
        {
            let _server_up = gate.read().await;
            within(
                hang_up_mid_frame(&endpoint, task, round),
                "a raw peer round",
            )
            .await;
        }
        round += 1;
        if stop.is_cancelled() {
            return round.into();
        }
    }
}

/// A frame's bytes as PROTOCOL.md lays them out.
fn frame_bytes(kind: Kind, id: u32, payload: &[u8]) -> Vec<u8> {
    let mut bytes = ((6 + payload.len()) as u32).to_le_bytes().to_vec();
    bytes.extend([kind.to_u8(), 0]);
    bytes.extend(id.to_le_bytes());
    bytes.extend(payload);
    bytes
}

/// One raw connection that misbehaves in one of five ways (by `round`),
/// then drops the connection.
async fn hang_up_mid_frame(endpoint: &Endpoint, task: u32, round: u32) {
    let peer_no = CLIENTS + task;
    match round % 5 {
        // Connect and go at once: the server's HELLO goes nowhere.
        0 => drop(RawClient::connect(endpoint).await),
        // Half of the client's HELLO.
        1 => {
            let mut raw = RawClient::connect(endpoint).await;
            let hello = raw.recv().await.expect("the server's HELLO");
            assert_eq!(hello.kind, Kind::Hello, "{hello:?}");
            let bytes = frame_bytes(Kind::Hello, 0, &ClientHello::with_version(1).encode());
            raw.send_raw(&bytes[..bytes.len() / 2]).await;
        }
        // A request answered correctly, then half of the next one.
        2 => {
            let (mut raw, _) = RawClient::handshake(endpoint).await;
            let body = payload(peer_no, round, 100);
            raw.send(Frame::request(1, body.clone())).await;
            let answer = raw.recv_skipping_notify().await.expect("an answer");
            assert_eq!((answer.kind, answer.id), (Kind::Response, 1), "{answer:?}");
            assert_eq!(answer.payload, body);
            let next = frame_bytes(Kind::Request, 2, &payload(peer_no, round + 1, 1000));
            raw.send_raw(&next[..next.len() / 2]).await;
        }
        // Two bytes of a length prefix.
        3 => {
            let (mut raw, _) = RawClient::handshake(endpoint).await;
            raw.send_raw(&[0x10, 0x00]).await;
        }
        // The header of a 1 MiB request and 64 KiB of its payload: the
        // server has reserved the frame's buffer and must free it.
        _ => {
            let (mut raw, _) = RawClient::handshake(endpoint).await;
            let mut bytes = frame_bytes(Kind::Request, 1, &[]);
            bytes[..4].copy_from_slice(&(6u32 + (1 << 20)).to_le_bytes());
            bytes.extend(std::iter::repeat_n(0xA5u8, 64 * 1024));
            raw.send_raw(&bytes).await;
        }
    }
}

/// Keeps starting `pipesvc ping --count 1000000` processes and killing
/// them with SIGKILL once they have had some pongs (so: mid-run), until
/// `stop`. Returns the processes killed (at least one) and the pongs seen.
async fn ping_peer(
    name: String,
    task: u32,
    gate: Arc<RwLock<()>>,
    stop: CancellationToken,
) -> (u64, u64) {
    let (mut killed, mut pongs) = (0u64, 0u64);
    loop {
        {
            let _server_up = gate.read().await;
            let want = 10 + (killed as u32 * 37 + task * 101) % 300;
            pongs += within(ping_then_kill(&name, want), "a ping process").await;
            killed += 1;
        }
        if stop.is_cancelled() {
            return (killed, pongs);
        }
    }
}

/// Runs `pipesvc ping`, waits for its `want`th pong line, SIGKILLs it.
async fn ping_then_kill(name: &str, want: u32) -> u64 {
    let mut child = Command::new(BIN)
        .args(["ping", "--name", name, "--count", "1000000"])
        .args(["--connect-timeout", "30"])
        .env("RUST_LOG", "off")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start pipesvc ping");
    let child_guard = KillOnDrop(Some(child.id()));
    let stdout = child.stdout.take().unwrap();
    let (seen_tx, seen_rx) = oneshot::channel();
    // A thread reads the lines; it keeps draining after the `want`th so
    // that the process never meets a closed pipe before it is killed.
    std::thread::spawn(move || {
        let mut seen_tx = Some(seen_tx);
        let mut seen = 0;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.starts_with("pong seq=") {
                seen += 1;
                if seen == want {
                    let _ = seen_tx.take().map(|tx| tx.send(seen));
                }
            }
        }
        let _ = seen_tx.map(|tx| tx.send(seen));
    });
    let seen = seen_rx.await.expect("the reader thread reports");
    assert_eq!(
        seen, want,
        "`pipesvc ping` ended after {seen} pongs before it was killed"
    );
    let status = reap(child, child_guard).await;
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    u64::from(seen)
}

/// SIGKILLs the child (if it still runs) and waits for it.
async fn reap(mut child: Child, mut guard: KillOnDrop) -> ExitStatus {
    guard.kill();
    guard.0 = None;
    // After SIGKILL the wait is short; it blocks, so not on a runtime thread.
    tokio::task::spawn_blocking(move || child.wait().expect("wait for the child"))
        .await
        .unwrap()
}

/// SIGKILLs a child process when dropped (a failing test leaves none).
struct KillOnDrop(Option<u32>);

impl KillOnDrop {
    fn kill(&self) {
        if let Some(pid) = self.0 {
            // SAFETY: kill(2) on our own child, which is not yet reaped (so
            // its pid cannot have been reused).
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Open descriptors: number -> kind.
type FdTable = BTreeMap<u32, String>;

/// A `pipesvc serve` process.
struct ServerProcess {
    child: Option<Child>,
    guard: KillOnDrop,
    pid: u32,
    /// Its descriptors when we first looked, right after it said it listens.
    fds_at_start: FdTable,
    /// Everything it logged (to stderr).
    log: Arc<Mutex<Vec<String>>>,
}

impl ServerProcess {
    /// Starts `pipesvc serve --name NAME` with [`POLICY`] and waits for
    /// its `pipesvc listening on NAME` line.
    async fn start(name: &str) -> ServerProcess {
        let mut child = Command::new(BIN)
            .args(["serve", "--name", name])
            .args(POLICY)
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start pipesvc serve");
        let pid = child.id();
        let guard = KillOnDrop(Some(pid));
        let stdout = child.stdout.take().unwrap();
        let (line_tx, line_rx) = oneshot::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = line_tx.send(lines.next());
            for _ in lines {} // nothing more is expected; keep the pipe open
        });
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let line = within(line_rx, "pipesvc serve to start").await.unwrap();
        let line = line.and_then(Result::ok).unwrap_or_default();
        assert_eq!(line, format!("pipesvc listening on {name}"));
        let mut server = ServerProcess {
            child: Some(child),
            guard,
            pid,
            fds_at_start: FdTable::new(),
            log,
        };
        server.fds_at_start = server.fd_table();
        server
    }

    /// How many descriptors it has open now.
    fn fds(&self) -> usize {
        self.fd_table().len()
    }

    /// Its open descriptors now: number -> what it is (`/proc/<pid>/fd`
    /// link text, without the inode of sockets and pipes).
    fn fd_table(&self) -> FdTable {
        let dir = format!("/proc/{}/fd", self.pid);
        let entries = std::fs::read_dir(&dir).expect("the server's /proc/<pid>/fd");
        entries
            .filter_map(|entry| {
                let entry = entry.ok()?;
                let fd = entry.file_name().to_str()?.parse().ok()?;
                // It may close between the listing and this look.
                let target = std::fs::read_link(entry.path()).ok()?;
                let target = target.to_string_lossy();
                let kind = match target.split_once(":[") {
                    Some((kind @ ("socket" | "pipe"), _)) => kind.to_owned(),
                    _ => target.into_owned(),
                };
                Some((fd, kind))
            })
            .collect()
    }

    /// Its peak resident memory so far (VmHWM), in KiB.
    fn vm_hwm_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/<pid>/status")
    }

    /// SIGKILL, then reap.
    async fn kill(&mut self) {
        let child = self.child.take().expect("running");
        let status = reap(child, KillOnDrop(self.guard.0.take())).await;
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    }

    /// SIGTERM: the server stops gracefully, exits 0 and removes its
    /// socket. Returns its WARN and ERROR lines.
    async fn stop_gracefully(&mut self, socket: &Path) -> Vec<String> {
        // SAFETY: kill(2) on our own child, not yet reaped.
        assert_eq!(
            unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGTERM) },
            0
        );
        let mut child = self.child.take().expect("running");
        let waited = tokio::task::spawn_blocking(move || child.wait());
        let status = within(waited, "the server to stop").await.unwrap().unwrap();
        self.guard.0 = None;
        assert!(status.success(), "pipesvc serve after SIGTERM: {status:?}");
        assert!(!is_socket_file(socket), "the socket file is removed");
        self.warnings()
    }

    /// Its WARN and ERROR log lines so far.
    fn warnings(&self) -> Vec<String> {
        let log = self.log.lock().unwrap();
        let worth = |l: &&String| l.contains(" WARN ") || l.contains(" ERROR ");
        log.iter().filter(worth).cloned().collect()
    }
}

/// Whether a socket file exists at `path`.
fn is_socket_file(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|meta| meta.file_type().is_socket())
}

/// Runs a child process to its end, with its output; SIGKILLs it and fails
/// if it is still running after the hang guard.
async fn finish(child: Child, what: &str) -> Output {
    let guard = KillOnDrop(Some(child.id()));
    let (done_tx, done_rx) = oneshot::channel();
    std::thread::spawn(move || {
        let _ = done_tx.send(child.wait_with_output());
    });
    let output = within(done_rx, what)
        .await
        .unwrap()
        .expect("wait for the child");
    let mut guard = guard;
    guard.0 = None; // reaped: its pid may be reused
    output
}

/// Awaits `future`, failing the test if it takes longer than the hang guard.
async fn within<F: std::future::Future>(future: F, what: &str) -> F::Output {
    tokio::time::timeout(HANG_GUARD, future)
        .await
        .unwrap_or_else(|_| panic!("hung: {what} took longer than {HANG_GUARD:?}"))
}

/// Raises this process's soft limit on open files to the hard limit: the
/// clients need one descriptor each, and the `pipesvc serve` processes we
/// start inherit the limit (they need one per connection). Returns it.
#[allow(clippy::unnecessary_cast)] // `rlim_t` is not u64 everywhere
fn raise_fd_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to an rlimit.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
    let needed = u64::from(CLIENTS) + 200;
    assert!(
        limit.rlim_cur as u64 >= needed,
        "the soak needs {needed} open files; the hard limit is {}",
        limit.rlim_cur
    );
    limit.rlim_cur as u64
}
