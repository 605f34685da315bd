//! One client cannot take the service from the others: a user's
//! connections are limited, a flood of frames that get no answer is
//! throttled, and a decode bomb is refused off the connection's task, so
//! that a bystander is served as before.
//!
//! Latency is only compared side by side: a bystander's PING times alone,
//! then beside the attack, in the same test. The server runs on two worker
//! threads; the attacker and the bystander each on a thread of their own.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use common::{guard, on_thread, unique_endpoint, RawClient, TestServer};
use pipesvc::protocol::{CallHeader, Encoding, ErrorCode, ErrorPayload, Frame, Kind};
use pipesvc::rpc::{Method, Service};
use pipesvc::server::{AccessPolicy, ConnectionContext, Server, ServiceError};
use pipesvc::transport::{memory, PeerInfo};
use pipesvc::{Client, Endpoint};

#[path = "common/heap.rs"]
mod heap;

#[global_allocator]
static ALLOCATOR: heap::Counting = heap::Counting;

const MIB: usize = 1 << 20;

/// `echo`: any JSON value, returned as it came (`pipesvc serve`'s).
const ECHO: Method<serde_json::Value, serde_json::Value> =
    Method::new("echo", "Returns its params");

fn echo_service() -> Service {
    Service::new("test", "1", ()).method(&ECHO, |_, value, _| async move { Ok(value) })
}

async fn bytes_echo(request: Bytes, _ctx: ConnectionContext) -> Result<Bytes, ServiceError> {
    Ok(request)
}

/// PINGs one after another from a client of its own, at least `count` and
/// until `enough` says so: their times, sorted.
fn ping_times(
    endpoint: &Endpoint,
    count: usize,
    enough: impl Fn() -> bool + Send + 'static,
) -> Vec<Duration> {
    let endpoint = endpoint.clone();
    on_thread(move || async move {
        let client = Client::connect(&endpoint)
            .await
            .expect("bystander connects");
        let mut times = Vec::with_capacity(count);
        while times.len() < count || !enough() {
            times.push(guard(client.ping()).await.expect("PONG"));
        }
        client.close().await;
        times.sort_unstable();
        times
    })
    .join()
    .unwrap()
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// A running attack: it stops when dropped.
struct Attack {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// What the attackers have sent (frames or calls), to wait until they
    /// run.
    sent: Arc<AtomicU64>,
}

impl Attack {
    /// Starts `attackers` attackers, each on a thread of its own as a
    /// separate client would be: `attacker(n, stop, sent)` for the `n`th.
    fn start<F: std::future::Future<Output = ()>>(
        attackers: usize,
        attacker: impl Fn(usize, Arc<AtomicBool>, Arc<AtomicU64>) -> F + Send + Clone + 'static,
    ) -> Attack {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let threads = (0..attackers)
            .map(|n| {
                let (stop, sent, attacker) = (stop.clone(), sent.clone(), attacker.clone());
                on_thread(move || attacker(n, stop, sent))
            })
            .collect();
        Attack {
            stop,
            threads,
            sent,
        }
    }

    /// Waits (yielding the CPU, never sleeping) until the attacker has sent
    /// at least `n`.
    fn running(&self, n: u64) {
        let start = std::time::Instant::now();
        while self.sent.load(Ordering::Relaxed) < n {
            assert!(
                start.elapsed() < common::HANG_GUARD,
                "the attack did not start"
            );
            std::thread::yield_now();
        }
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            thread.join().unwrap();
        }
        self.sent.load(Ordering::Relaxed)
    }
}

impl Drop for Attack {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The bystander's p99 beside an attack stays within three times its p99
/// alone, plus 10 ms. The factor is for the machine, not the server: the
/// Windows suite under Wine, on a 2-core machine that also ran two builds
/// (load average 15), saw 11.9 ms alone and 35.7 ms beside a CANCEL flood
/// (11.4 and 24.0 beside the MessagePack attack), where a bound of alone
/// plus 10 ms failed. What the bound still catches is a bystander made to
/// wait behind the attackers' backlog, which grows for as long as the
/// attack goes on.
fn assert_kept_up(p99_alone: Duration, p99_attacked: Duration) {
    assert!(
        p99_attacked <= p99_alone * 3 + Duration::from_millis(10),
        "the bystander's p99 went from {p99_alone:?} to {p99_attacked:?}"
    );
}

/// Compares a bystander's PING times alone and beside `attack`, which
/// returns the attack and how much it must have sent before the PINGs
/// start, and how much more while they go on; returns (p50, p99) of each,
/// after printing them, and what the attacker sent.
fn beside(
    endpoint: &Endpoint,
    what: &str,
    attack: impl FnOnce() -> (Attack, u64, u64),
) -> ((Duration, Duration), (Duration, Duration), u64) {
    const PINGS: usize = 500;
    let alone = ping_times(endpoint, PINGS, || true);
    let (attack, first, more) = attack();
    attack.running(first);
    let sent = attack.sent.clone();
    let until = first + more;
    let attacked = ping_times(endpoint, PINGS, move || {
        sent.load(Ordering::Relaxed) >= until
    });
    let sent = attack.finish();
    let p = |t: &[Duration]| (percentile(t, 0.5), percentile(t, 0.99));
    let (alone, attacked_p) = (p(&alone), p(&attacked));
    eprintln!(
        "pipesvc-report: {what}: bystander PING p50/p99 alone {:.2?}/{:.2?}, beside the \
         attack {:.2?}/{:.2?} ({} PINGs; {sent} sent by the attacker)",
        alone.0,
        alone.1,
        attacked_p.0,
        attacked_p.1,
        attacked.len()
    );
    (alone, attacked_p, sent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_flood_does_not_slow_a_bystander() {
    /// Connections flooding at once: more than the server's threads.
    const FLOODERS: usize = 4;
    let endpoint = unique_endpoint("cancel-flood");
    let server = Server::builder(endpoint.clone())
        .handler(bytes_echo)
        .bind()
        .unwrap();
    let serving = TestServer::start(server);
    let target = endpoint.clone();
    let ((_, p99_alone), (_, p99_attacked), _) = beside(&endpoint, "CANCEL flood", move || {
        // 64 KiB of CANCELs for ids that are not in flight.
        let mut flood = BytesMut::new();
        for id in 1..=6553u32 {
            flood.put_u32_le(6);
            flood.put_slice(&[Kind::Cancel.to_u8(), 0]);
            flood.put_u32_le(id);
        }
        let flood = flood.freeze();
        let attack = Attack::start(FLOODERS, move |_, stop, sent| {
            let (flood, target) = (flood.clone(), target.clone());
            async move {
                use tokio::io::AsyncWriteExt;
                let mut client = RawClient::connect_v2(&target).await;
                let stream = client.writer.get_mut();
                while !stop.load(Ordering::Relaxed) {
                    if stream.write_all(&flood).await.is_err() {
                        break;
                    }
                    sent.fetch_add(6553, Ordering::Relaxed);
                }
            }
        });
        (attack, 100_000, 0)
    });
    assert_kept_up(p99_alone, p99_attacked);
    guard(serving.stop()).await.expect("serve");
}

/// A MessagePack array of `n` nils (array32 header), optionally ending in
/// a byte that is no MessagePack value (so that decoding fails at the last
/// element).
fn nils(n: u32, bad_end: bool) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(n as usize + 5);
    bytes.push(0xdd);
    bytes.extend_from_slice(&n.to_be_bytes());
    bytes.resize(n as usize + 5, 0xc0);
    if bad_end {
        *bytes.last_mut().unwrap() = 0xc1;
    }
    bytes
}

fn msgpack_call(id: u32, method: &str, params: &[u8]) -> Frame {
    let header = CallHeader::new(method, Encoding::MessagePack);
    Frame::new(Kind::Call, id, header.encode_with(params).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_messagepack_array_of_nils_is_bounded_and_a_bystander_is_served() {
    // The largest that fits the default 8 MiB frame with its header.
    const NILS: u32 = 8 * MIB as u32 - 64;
    /// Connections sending it at once: more than the server's threads
    /// (under Wine, where moving 8 MiB through a pipe costs the machine
    /// far more, as many).
    const ATTACKERS: usize = if cfg!(windows) { 2 } else { 4 };
    let endpoint = unique_endpoint("nil-bomb");
    let server = Server::builder(endpoint.clone())
        .handler(bytes_echo)
        .calls(echo_service())
        .bind()
        .unwrap();
    let serving = TestServer::start(server);
    let target = endpoint.clone();
    let before = heap::reset_peak();
    let answers = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = answers.clone();
    let ((_, p99_alone), (_, p99_attacked), sent) =
        beside(&endpoint, "MessagePack array of nils", move || {
            let (good, bad) = (
                Bytes::from(nils(NILS, false)),
                Bytes::from(nils(NILS, true)),
            );
            // One sends the value whole, the next one that fails at its
            // last element.
            let attack = Attack::start(ATTACKERS, move |n, stop, sent| {
                let params = if n % 2 == 0 {
                    good.clone()
                } else {
                    bad.clone()
                };
                let (target, seen) = (target.clone(), seen.clone());
                async move {
                    let mut client = RawClient::connect_v2(&target).await;
                    let mut id = 0;
                    while !stop.load(Ordering::Relaxed) {
                        id += 1;
                        client.send(msgpack_call(id, "echo", &params)).await;
                        let answer = client.recv_skipping_notify().await.expect("an answer");
                        let code = (answer.kind == Kind::Error)
                            .then(|| ErrorPayload::decode(&answer.payload).unwrap().code);
                        seen.lock().unwrap().push((answer.kind, code));
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
            (attack, 1, 4)
        });
    let peak = heap::peak() - before;
    let answers = answers.lock().unwrap().clone();
    eprintln!(
        "pipesvc-report: {sent} CALLs of an 8 MiB MessagePack array of nils: peak heap \
         {:.1} MiB above the start (server and clients); answers {answers:?}",
        peak as f64 / MIB as f64
    );
    assert!(
        answers
            .iter()
            .all(|&(kind, code)| kind == Kind::Error && code == Some(ErrorCode::BAD_REQUEST)),
        "every one is refused as a bad request: {answers:?}"
    );
    assert_kept_up(p99_alone, p99_attacked);
    guard(serving.stop()).await.expect("serve");
}

/// The first frame a client gets on `stream`: HELLO if served; if refused,
/// the ERROR's code, or `None` when the server had so many refusals in
/// progress that it closed without one.
async fn admitted(stream: memory::MemoryStream) -> (RawClient, Result<(), Option<ErrorCode>>) {
    let mut client = RawClient::over(stream);
    let Some(first) = guard(client.recv()).await else {
        return (client, Err(None));
    };
    match first.kind {
        Kind::Hello => {
            let hello = pipesvc::protocol::ClientHello::with_version(1).encode();
            client.send(Frame::new(Kind::Hello, 0, hello)).await;
            (client, Ok(()))
        }
        Kind::Error => {
            let code = ErrorPayload::decode(&first.payload).unwrap().code;
            (client, Err(Some(code)))
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test(flavor = "current_thread")]
async fn one_user_with_a_thousand_idle_connections_leaves_room_for_another() {
    // Two users other than the server's own (uid on Unix, pid on Windows).
    let greedy = PeerInfo::new()
        .with_uid(65534)
        .with_gid(65534)
        .with_pid(4242);
    let other = PeerInfo::new()
        .with_uid(65533)
        .with_gid(65533)
        .with_pid(4343);
    let server = Server::builder(unique_endpoint("per-user"))
        .max_connections(1000)
        .access(AccessPolicy::anyone())
        .handler(bytes_echo)
        .build()
        .unwrap();
    let serving = TestServer::start(server);
    let connect = |peer: PeerInfo| {
        let (client_end, server_end) = memory::pair();
        serving.handle().serve_connection(server_end, peer).unwrap();
        admitted(client_end)
    };
    let mut idle = Vec::new();
    let (mut held, mut refused) = (0, 0);
    for _ in 0..1000 {
        let (client, outcome) = connect(greedy).await;
        match outcome {
            // Held, idle.
            Ok(()) => {
                held += 1;
                idle.push(client);
            }
            Err(code) => {
                assert!(code.is_none_or(|c| c == ErrorCode::OVERLOADED), "{code:?}");
                refused += 1;
            }
        }
    }
    let (mut client, outcome) = connect(other).await;
    eprintln!(
        "pipesvc-report: one user opened 1000 idle connections: {held} held, {refused} \
         refused; another user's client: {outcome:?}"
    );
    assert_eq!(outcome, Ok(()), "the other user is served");
    client.send(Frame::request(1, "mine")).await;
    assert_eq!(
        guard(client.recv_skipping_notify()).await,
        Some(Frame::response(1, "mine"))
    );
    assert!(refused > 0, "one user took every connection");
    drop(idle);
    guard(serving.stop()).await.expect("serve");
}
