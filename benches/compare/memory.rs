//! Memory per idle connection: the server runs in a child process (this
//! same binary, told so by `CHILD_ENV`), so that its resident set holds the
//! server's side of each connection only. The parent opens the connections,
//! uses each once (a request and its answer, so that each is fully set up
//! on both sides), and asks the child for its resident set size before and
//! at 1000, 2500, 5000 and 10,000 connections (on Windows, its working
//! set): the cost per connection at 1000 and 10,000, and the slope of the
//! line through the four (bytes per extra connection).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use crate::contender::{start_server, used_once, Contender};

/// Set in the child's environment: `CONTENDER|ADDRESS`.
pub const CHILD_ENV: &str = "PIPESVC_COMPARE_SERVER";

/// Connections opened (and used once) before the first reading, so that
/// one-time costs (buffers, thread caches) are not counted per connection.
const WARM_UP: usize = 16;

/// The child's side: serves until stdin closes; answers each `rss` line
/// with its resident set size in KiB.
pub fn serve_child(spec: &str) {
    let (name, address) = spec.split_once('|').expect("CONTENDER|ADDRESS");
    let contender = Contender::from_name(name).expect("a contender's name");
    raise_fd_limit();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _server = runtime.block_on(start_server(contender, address));
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready").unwrap();
    out.flush().unwrap();
    for line in std::io::stdin().lock().lines() {
        if line.unwrap() == "rss" {
            writeln!(out, "{}", rss_kib()).unwrap();
            out.flush().unwrap();
        }
    }
}

/// The numbers of idle connections at which the server's memory is read,
/// in one run: the rows at 1000 and 10,000, and the points of the slope.
pub const STEPS: [usize; 4] = [1000, 2500, 5000, 10_000];

/// What idle connections cost a contender's server.
pub struct Idle {
    /// Bytes of the server's resident set per idle connection, with each
    /// of [`STEPS`] connections open: the growth since the warm-up, over
    /// the connections.
    pub per_connection: [f64; STEPS.len()],
    /// Bytes per extra connection: the slope of the least-squares line
    /// through the resident set at each of [`STEPS`].
    pub slope: f64,
}

/// Opens connections (each used once) up to each of [`STEPS`] and reads
/// the server's resident set at each, in one server process.
pub fn idle_connections(runtime: &tokio::runtime::Runtime, c: Contender, address: &str) -> Idle {
    raise_fd_limit();
    let mut child = Server::start(c, address);
    runtime.block_on(async {
        let mut warm = Vec::new();
        for _ in 0..WARM_UP {
            warm.push(used_once(c, address).await);
        }
        let before = child.rss_kib() as f64 * 1024.0;
        let mut idle = Vec::with_capacity(STEPS[STEPS.len() - 1]);
        let mut rss = [0.0; STEPS.len()];
        for (i, &n) in STEPS.iter().enumerate() {
            while idle.len() < n {
                idle.push(used_once(c, address).await);
            }
            rss[i] = child.rss_kib() as f64 * 1024.0;
        }
        let per_connection = std::array::from_fn(|i| (rss[i] - before).max(0.0) / STEPS[i] as f64);
        let x = STEPS.map(|n| n as f64);
        Idle {
            per_connection,
            slope: slope(&x, &rss),
        }
    })
}

/// The slope of the least-squares line through the points `(x, y)`.
fn slope(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let covariance: f64 = x.iter().zip(y).map(|(x, y)| (x - mx) * (y - my)).sum();
    let variance: f64 = x.iter().map(|x| (x - mx) * (x - mx)).sum();
    covariance / variance
}

/// The server child process; killed when dropped.
struct Server {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Server {
    fn start(c: Contender, address: &str) -> Server {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env(CHILD_ENV, format!("{}|{address}", c.name()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the server child");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "the server child did not start");
        Server {
            child,
            stdin,
            stdout,
        }
    }

    fn rss_kib(&mut self) -> u64 {
        writeln!(self.stdin, "rss").unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line.trim().parse().expect("the child's RSS in KiB")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// This process's resident set size, in KiB.
#[cfg(unix)]
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

/// This process's working set, in KiB.
#[cfg(windows)]
fn rss_kib() -> u64 {
    use windows_sys::Win32::System::ProcessStatus::{
        K32GetProcessMemoryInfo, PROCESS_MEMORY_COUNTERS,
    };
    use windows_sys::Win32::System::Threading::GetCurrentProcess;
    // SAFETY: `counters` is a valid, correctly sized out-parameter.
    unsafe {
        let mut counters: PROCESS_MEMORY_COUNTERS = std::mem::zeroed();
        let size = std::mem::size_of::<PROCESS_MEMORY_COUNTERS>() as u32;
        assert!(K32GetProcessMemoryInfo(GetCurrentProcess(), &mut counters, size) != 0);
        counters.WorkingSetSize as u64 / 1024
    }
}

/// Each connection is a file descriptor on both sides; the common soft
/// limit of 1024 is too low for a thousand of them.
#[cfg(unix)]
pub fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write `limit`.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// Windows has no per-process handle limit to raise.
#[cfg(windows)]
pub fn raise_fd_limit() {}
