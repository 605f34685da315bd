//! `pipesvc serve`'s memory under attack, run as the real binary: under an
//! address-space limit it refuses what does not fit instead of aborting,
//! and its resident memory goes back near where it started once an
//! attack's clients have left.
#![cfg(target_os = "linux")]

mod common;

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{guard, unique_endpoint, RawClient};
use futures_util::{SinkExt, StreamExt};
use pipesvc::protocol::{CallHeader, Encoding, ErrorCode, ErrorPayload, Frame, Kind};
use pipesvc::testing::ServiceProcess;
use pipesvc::{Client, Endpoint};
use tokio::sync::Notify;

const BIN: &str = env!("CARGO_BIN_EXE_pipesvc");
const MIB: u64 = 1 << 20;

/// `pipesvc serve` on `endpoint` with `args`, limited by `limit` (bytes
/// of address space) if given.
async fn serve(endpoint: &Endpoint, args: &[&str], limit: Option<u64>) -> ServiceProcess {
    let mut command = Command::new(BIN);
    command
        .args(["serve", "--name"])
        .arg(endpoint.address())
        .args(args)
        // The trims after a burst, with what was held then: what a failed
        // check of resident memory is read with.
        .env("RUST_LOG", "warn,pipesvc::ops::memory=debug");
    if let Some(limit) = limit {
        // SAFETY: setrlimit is async-signal-safe; the struct is valid.
        unsafe {
            command.pre_exec(move || {
                let rlimit = libc::rlimit {
                    rlim_cur: limit as libc::rlim_t,
                    rlim_max: limit as libc::rlim_t,
                };
                match libc::setrlimit(libc::RLIMIT_AS, &rlimit) {
                    0 => Ok(()),
                    _ => Err(std::io::Error::last_os_error()),
                }
            });
        }
    }
    ServiceProcess::start(command, endpoint, common::HANG_GUARD)
        .await
        .expect("pipesvc serve starts")
}

/// Stops `service` as systemd would (SIGTERM), so that it removes its
/// socket file, and waits for it.
fn stop(mut service: ServiceProcess) {
    let child = service.child();
    // SAFETY: a signal to our own child, whose pid is still ours to use
    // (it is reaped only below).
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let _ = child.wait();
}

/// A field of `/proc/<pid>/status` in bytes (`VmSize`, `VmRSS`, `VmHWM`).
fn proc_status(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(kib)
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"));
    kib * 1024
}

/// The figure of a `/proc` field's value such as `  1234 kB`.
fn kib(value: &str) -> Option<u64> {
    value.trim().trim_end_matches("kB").trim().parse().ok()
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB as f64
}

/// What the hoarding clients sent so far, and a signal at each frame.
#[derive(Default)]
struct Progress {
    bytes: AtomicU64,
    sent: Notify,
}

impl Progress {
    async fn reached(&self, bytes: u64) {
        loop {
            let notified = self.sent.notified();
            if self.bytes.load(Ordering::Relaxed) >= bytes {
                return;
            }
            notified.await;
        }
    }
}

/// A hoard: `connections` connections each send `calls` CALLs of `sleep`
/// (10 minutes, no deadline) with `entries` metadata entries of 64 KiB.
/// Returns the connections' tasks (each yields the ERROR codes it got)
/// and their progress.
async fn hoard(
    endpoint: &Endpoint,
    connections: usize,
    calls: u32,
    entries: usize,
) -> (Vec<tokio::task::JoinHandle<Vec<ErrorCode>>>, Arc<Progress>) {
    let metadata: Vec<(String, String)> = (0..entries)
        .map(|n| (format!("k{n}"), "m".repeat(65_535)))
        .collect();
    let header = CallHeader::new("sleep", Encoding::Json).with_metadata(metadata);
    let payload = header.encode_with(br#"{"ms":600000}"#).unwrap();
    let progress = Arc::new(Progress::default());
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let client = RawClient::connect_v2(endpoint).await;
        let (mut reader, mut writer) = (client.reader, client.writer);
        let (payload, progress) = (payload.clone(), progress.clone());
        tasks.push(tokio::spawn(async move {
            let writing = async {
                for id in 1..=calls {
                    let frame = Frame::new(Kind::Call, id, payload.clone());
                    let len = frame.wire_len() as u64;
                    if writer.send(frame).await.is_err() {
                        break;
                    }
                    progress.bytes.fetch_add(len, Ordering::Relaxed);
                    progress.sent.notify_waiters();
                }
                std::future::pending::<()>().await
            };
            let reading = async {
                let mut codes = Vec::new();
                while let Some(Ok(frame)) = reader.next().await {
                    if frame.kind == Kind::Error {
                        codes.push(ErrorPayload::decode(&frame.payload).unwrap().code);
                    }
                }
                codes
            };
            tokio::select! {
                () = writing => unreachable!(),
                codes = reading => codes,
            }
        }));
    }
    (tasks, progress)
}

/// A MessagePack array of `n` nils, ending in a byte that is no value if
/// `bad_end`.
fn nils(n: u32, bad_end: bool) -> Bytes {
    let mut bytes = Vec::with_capacity(n as usize + 5);
    bytes.push(0xdd);
    bytes.extend_from_slice(&n.to_be_bytes());
    bytes.resize(n as usize + 5, 0xc0);
    if bad_end {
        *bytes.last_mut().unwrap() = 0xc1;
    }
    Bytes::from(bytes)
}

/// Sends `echo` a MessagePack array of nils as large as a frame takes
/// (whole, then failing at its end) on each of two connections at once;
/// the answers.
async fn nil_bombs(endpoint: &Endpoint) -> Vec<Option<ErrorCode>> {
    let mut tasks = Vec::new();
    for bad_end in [false, true] {
        let mut client = RawClient::connect_v2(endpoint).await;
        tasks.push(tokio::spawn(async move {
            let params = nils(8 * MIB as u32 - 64, bad_end);
            let header = CallHeader::new("echo", Encoding::MessagePack);
            let payload = header.encode_with(&params).unwrap();
            // A server that refuses the frame while it arrives (no room in
            // its budget) closes the connection: the send may fail then,
            // and the ERROR is still there to read.
            let _ = client.try_send(Frame::new(Kind::Call, 1, payload)).await;
            let answer = loop {
                match client.reader.next().await {
                    Some(Ok(frame)) if frame.kind == Kind::Notify => {}
                    Some(Ok(frame)) => break frame,
                    _ => return None,
                }
            };
            match answer.kind {
                Kind::Error => Some(ErrorPayload::decode(&answer.payload).unwrap().code),
                _ => Some(ErrorCode(0)),
            }
        }));
    }
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(guard(task).await.unwrap());
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_an_address_space_limit_serve_refuses_instead_of_aborting() {
    const HEADROOM: u64 = 512 * MIB;
    // The address space `serve` takes once it listens, measured on a first
    // run, plus the headroom.
    let endpoint = unique_endpoint("as-probe");
    let mut probe = serve(&endpoint, &[], None).await;
    let start = proc_status(probe.child().id(), "VmSize");
    stop(probe);
    let endpoint = unique_endpoint("as-limit");
    let mut service = serve(&endpoint, &[], Some(start + HEADROOM)).await;

    // The decode bombs alone, then the issue's hoard (8 connections of 64
    // CALLs with 7.5 MiB of metadata), then the bombs again.
    let mut nils = nil_bombs(&endpoint).await;
    let (hoarders, progress) = hoard(&endpoint, 8, 64, 120).await;
    let reached = tokio::time::timeout(common::HANG_GUARD, progress.reached(240 * MIB)).await;
    let nils = match reached {
        Ok(()) => {
            nils.extend(nil_bombs(&endpoint).await);
            Some(nils)
        }
        Err(_) => None,
    };
    let status = service.child().try_wait().unwrap();
    let pid = service.child().id();
    let peak = std::fs::metadata(format!("/proc/{pid}/status"))
        .is_ok()
        .then(|| proc_status(pid, "VmHWM"));
    eprintln!(
        "pipesvc-report: serve under RLIMIT_AS (start {:.0} MiB + {:.0} MiB): hoard sent \
         {:.0} MiB; nil arrays answered {nils:?} (before the hoard, then beside it); \
         child {status:?}, peak RSS {:?} MiB; stderr: {}",
        mib(start),
        mib(HEADROOM),
        mib(progress.bytes.load(Ordering::Relaxed)),
        peak.map(mib),
        service.stderr().trim_end()
    );
    assert_eq!(status, None, "the server process died");
    let nils = nils.expect("the hoard reached 240 MiB");
    // Alone, each is a bad request (too large decoded); beside the hoard,
    // each is a bad request or refused for lack of room (`overloaded`).
    assert_eq!(nils[..2], [Some(ErrorCode::BAD_REQUEST); 2]);
    for answer in &nils[2..] {
        assert!(
            matches!(
                answer,
                Some(ErrorCode::BAD_REQUEST) | Some(ErrorCode::OVERLOADED)
            ),
            "{answer:?}"
        );
    }
    // The hoard's CALLs that did not fit were refused `overloaded` too.
    let stats = guard(Client::connect(&endpoint)).await.unwrap();
    let overloaded = guard(stats.status())
        .await
        .unwrap()
        .errors
        .iter()
        .find(|(code, _)| *code == ErrorCode::OVERLOADED)
        .map_or(0, |&(_, n)| n);
    assert!(
        overloaded > 0,
        "nothing was refused: the limit was not reached"
    );
    stats.close().await;
    assert!(endpoint.address().exists(), "the socket file is gone");
    let client = guard(Client::connect(&endpoint)).await.unwrap();
    assert_eq!(guard(client.request("alive")).await.unwrap(), "alive");
    client.close().await;
    for hoarder in &hoarders {
        hoarder.abort();
    }
    stop(service);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resident_memory_returns_near_its_start_after_an_attacks_clients_leave() {
    const CONNECTIONS: usize = 32;
    const CALLS: u32 = 32;
    let endpoint = unique_endpoint("rss-return");
    // Room for the whole hoard: 32 connections of 32 CALLs of 1 MiB.
    let mut service = serve(&endpoint, &["--input-budget", "2147483648"], None).await;
    let pid = service.child().id();
    let client = guard(Client::connect(&endpoint)).await.unwrap();
    for _ in 0..100 {
        guard(client.request(vec![7u8; 64 * 1024])).await.unwrap();
    }
    let baseline = proc_status(pid, "VmRSS");

    let (hoarders, progress) = hoard(&endpoint, CONNECTIONS, CALLS, 16).await;
    guard(progress.reached(900 * MIB)).await;
    let during = proc_status(pid, "VmRSS");
    for hoarder in hoarders {
        hoarder.abort();
        let _ = hoarder.await;
    }
    // The server notices the clients left: only this client is counted.
    guard(async {
        while guard(client.status()).await.unwrap().connections_open > 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let left = tokio::time::Instant::now();
    // Then its memory goes back, within a few seconds.
    let mut after = proc_status(pid, "VmRSS");
    while after > baseline + 32 * MIB && left.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        after = proc_status(pid, "VmRSS");
    }
    eprintln!(
        "pipesvc-report: serve RSS: {:.1} MiB at the start, {:.1} MiB holding a hoard of \
         {:.0} MiB from {CONNECTIONS} clients, {:.1} MiB {:.2?} after they left",
        mib(baseline),
        mib(during),
        mib(progress.bytes.load(Ordering::Relaxed)),
        mib(after),
        left.elapsed()
    );
    if after > baseline + 32 * MIB {
        let allocator = malloc_info(pid);
        let trimmed = gdb_calls(pid, &["call (int) malloc_trim(0)"]);
        let after_trim = proc_status(pid, "VmRSS");
        let smaps = resident_mappings(pid);
        panic!(
            "RSS stayed at {:.1} MiB (start {:.1} MiB); {:.1} MiB after one more malloc_trim \
             ({trimmed})\n{smaps}\nglibc's arenas:\n{allocator}\nserve's stderr:\n{}",
            mib(after),
            mib(baseline),
            mib(after_trim),
            service.stderr().trim_end()
        );
    }
    client.close().await;
    stop(service);
}

/// glibc's count of each arena's memory in process `pid`: `malloc_info`,
/// called from gdb into a file that is read and removed, cut to each
/// heap's totals (free blocks in fastbins and elsewhere, memory taken from
/// the system); or why not. It tells memory freed but kept by the
/// allocator from memory still in use.
fn malloc_info(pid: u32) -> String {
    let path = std::env::temp_dir().join(format!("pipesvc-malloc-info-{pid}.xml"));
    let open = format!("call (void *) fopen(\"{}\", \"w\")", path.display());
    let called = gdb_calls(
        pid,
        &[
            &open,
            "call (int) malloc_info(0, $1)",
            "call (int) fclose($1)",
        ],
    );
    let info = std::fs::read_to_string(&path);
    let _ = std::fs::remove_file(&path);
    match info {
        Ok(info) => info
            .lines()
            .filter(|line| {
                line.starts_with("<heap") || line.contains("<total") || line.contains("<system")
            })
            .collect::<Vec<_>>()
            .join("\n"),
        Err(e) => format!("no malloc_info ({e}; gdb: {called})"),
    }
}

/// Has gdb make `calls` in process `pid`, in turn; the last thing gdb
/// said, or why it could not.
fn gdb_calls(pid: u32, calls: &[&str]) -> String {
    let mut gdb = Command::new("gdb");
    gdb.args(["-p", &pid.to_string(), "-batch"]);
    for call in calls {
        gdb.args(["-ex", call]);
    }
    match gdb.output() {
        Ok(output) if output.status.success() => {
            let said = String::from_utf8_lossy(&output.stdout);
            said.lines().last().unwrap_or_default().to_string()
        }
        Ok(output) => format!("gdb failed: {}", String::from_utf8_lossy(&output.stderr)),
        Err(e) => format!("no gdb ({e})"),
    }
}

/// The mappings of process `pid` that hold 1 MiB or more resident: where
/// memory that stayed is (an arena's heap, a stack, a mapped block).
fn resident_mappings(pid: u32) -> String {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut found = Vec::new();
    let mut mapping = "";
    for line in smaps.lines() {
        if let Some(kb) = line.strip_prefix("Rss:") {
            let kb = kib(kb).unwrap_or(0);
            if kb >= 1024 {
                found.push(format!("{kb} kB resident in {mapping}"));
            }
        } else if line
            .split_whitespace()
            .next()
            .is_some_and(|first| first.contains('-') && !first.ends_with(':'))
        {
            mapping = line;
        }
    }
    found.join("\n")
}
