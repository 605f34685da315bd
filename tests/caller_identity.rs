//! Who is calling (issue 22), on Unix: the identity a server reads of a
//! client started as another user (uid 65534) with supplementary groups,
//! read back exactly through `whoami`; rules per connection and per
//! method, given to `pipesvc serve --allow`, admitting and refusing that
//! client (the refusal names the rule and is logged with the caller); the
//! same-executable rule; a handler's own `not allowed` and `timed out`.
//!
//! Run as root (as CI does), the client is a real second user. Not as root,
//! the same checks run with this process's own user and groups (the rules
//! then name groups it is not in), since only root can start another
//! user's process.
#![cfg(unix)]

mod common;

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{guard, unique_endpoint, TestServer};
use pipesvc::protocol::ErrorCode;
use pipesvc::rpc::{Method, Service};
use pipesvc::server::{AccessPolicy, ConnectionContext, Rule, Server, ServiceError};
use pipesvc::{Client, Endpoint};

const BIN: &str = env!("CARGO_BIN_EXE_pipesvc");
/// How long a child process may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(60);

/// The unprivileged user the tests borrow (`nobody` on Debian), and the
/// supplementary groups it gets (groups no one else here is in).
const OTHER_UID: u32 = 65534;
const OTHER_GID: u32 = 65534;
const EXTRA_GROUPS: [u32; 2] = [4242, 4243];

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The user the client processes run as: uid, primary gid, supplementary
/// groups (sorted), account name.
struct ClientUser {
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
}

fn client_user() -> ClientUser {
    if is_root() {
        let mut groups = vec![OTHER_GID, EXTRA_GROUPS[0], EXTRA_GROUPS[1]];
        groups.sort_unstable();
        return ClientUser {
            uid: OTHER_UID,
            gid: OTHER_GID,
            groups,
        };
    }
    // SAFETY: plain getters; getgroups fills at most `n` entries.
    let (uid, gid, mut groups) = unsafe {
        let n = libc::getgroups(0, std::ptr::null_mut());
        let mut groups = vec![0; n.max(0) as usize];
        let n = libc::getgroups(n, groups.as_mut_ptr());
        groups.truncate(n.max(0) as usize);
        (libc::geteuid(), libc::getegid(), groups)
    };
    groups.sort_unstable();
    eprintln!("not root: the client runs as this user (uid {uid}), not as uid {OTHER_UID}");
    ClientUser { uid, gid, groups }
}

/// A group the client is not in.
fn foreign_group(user: &ClientUser) -> u32 {
    (5000..)
        .find(|g| *g != user.gid && !user.groups.contains(g))
        .unwrap()
}

/// A fresh directory (0755) with a copy of the binary that the client's
/// user can run; removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Scratch {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("pipesvc-caller-{}-{test}-{n}", std::process::id()));
        std::fs::DirBuilder::new().mode(0o755).create(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let bin = dir.join("pipesvc");
        common::copy_executable(Path::new(BIN), &bin);
        Scratch(dir)
    }

    fn bin(&self) -> PathBuf {
        self.0.join("pipesvc")
    }

    fn socket(&self) -> PathBuf {
        self.0.join("svc.sock")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Spawns `command`. The copies it runs are written by `cp`
/// (`common::copy_executable`), so none is ever busy.
fn spawn(command: &mut Command) -> Child {
    command.spawn().expect("start a pipesvc process")
}

/// A `pipesvc serve` process, killed when dropped; its stderr is kept.
struct Serve {
    child: Child,
    stderr: Arc<Mutex<Vec<u8>>>,
}

impl Serve {
    /// Starts `bin serve --name SOCKET --socket-mode 0666 ARGS` and waits
    /// for its readiness line (no client is needed for that: the policy
    /// may refuse this process).
    fn start(bin: &Path, socket: &Path, args: &[&str]) -> Serve {
        let mut command = Command::new(bin);
        command
            .args([
                "serve",
                "--name",
                socket.to_str().unwrap(),
                "--socket-mode",
                "0666",
            ])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = spawn(&mut command);
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut chunk = [0; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut chunk) {
                sink.lock().unwrap().extend_from_slice(&chunk[..n]);
            }
        });
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let mut serve = Serve { child, stderr };
        let line = rx.recv_timeout(PATIENCE).unwrap_or_default();
        assert!(
            line.contains("listening on"),
            "pipesvc serve did not start: {line:?}; stderr: {}",
            serve.stderr()
        );
        assert!(serve.child.try_wait().unwrap().is_none());
        serve
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `bin call --name SOCKET ARGS` as the client user (another user,
/// with its supplementary groups, when root); its pid and output.
fn call_as_client(bin: &Path, socket: &Path, args: &[&str]) -> (u32, Output) {
    let groups: Vec<u32> = std::iter::once(OTHER_GID).chain(EXTRA_GROUPS).collect();
    call_as_other(bin, socket, args, &groups)
}

/// The same, with `groups` as the supplementary groups when root.
fn call_as_other(bin: &Path, socket: &Path, args: &[&str], groups: &[u32]) -> (u32, Output) {
    let mut command = Command::new(bin);
    command
        .args([
            "call",
            "--name",
            socket.to_str().unwrap(),
            "--connect-timeout",
            "5",
        ])
        .args(args)
        .env("RUST_LOG", "off")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if is_root() {
        let groups: Vec<libc::gid_t> = groups.to_vec();
        // SAFETY: between fork and exec only system calls run, on memory
        // made before the fork.
        unsafe {
            command.pre_exec(move || {
                if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                    || libc::setgid(OTHER_GID) != 0
                    || libc::setuid(OTHER_UID) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let child = spawn(&mut command);
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(PATIENCE) {
        Ok(output) => (pid, output.expect("wait for pipesvc call")),
        Err(_) => {
            // SAFETY: kill has no memory preconditions.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            panic!("pipesvc call {args:?} did not finish within {PATIENCE:?}");
        }
    }
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn whoami_reads_back_a_client_of_another_user_with_its_supplementary_groups() {
    let user = client_user();
    let scratch = Scratch::new("whoami");
    let _serve = Serve::start(&scratch.bin(), &scratch.socket(), &["--allow", "anyone"]);
    let (pid, output) = call_as_client(&scratch.bin(), &scratch.socket(), &["--method", "whoami"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let identity: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(identity["uid"], user.uid, "{identity}");
    assert_eq!(identity["gid"], user.gid, "{identity}");
    let mut groups: Vec<u32> = serde_json::from_value(identity["groups"].clone()).unwrap();
    groups.sort_unstable();
    assert_eq!(groups, user.groups, "{identity}");
    assert_eq!(identity["pid"], pid, "{identity}");
    assert_eq!(
        identity["executable"].as_str(),
        scratch.bin().to_str(),
        "{identity}"
    );
    if is_root() {
        assert_eq!(identity["user"], "nobody", "{identity}");
    }
    // Nothing of Windows' on Unix.
    for absent in ["sid", "group_sids", "integrity", "elevated", "session_id"] {
        assert!(identity.get(absent).is_none(), "{absent} in {identity}");
    }
}

#[test]
fn more_groups_than_the_first_read_holds_are_read_back() {
    if !is_root() {
        eprintln!("not root: skipped for want of a second user with 40 groups");
        return;
    }
    // The server reads 32 groups at first, then asks again with room.
    let groups: Vec<u32> = (10_000..10_040).collect();
    let scratch = Scratch::new("many-groups");
    let _serve = Serve::start(
        &scratch.bin(),
        &scratch.socket(),
        &["--allow", "group:10039"],
    );
    let (_, output) = call_as_other(
        &scratch.bin(),
        &scratch.socket(),
        &["--method", "whoami"],
        &groups,
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let identity: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    let mut seen: Vec<u32> = serde_json::from_value(identity["groups"].clone()).unwrap();
    seen.sort_unstable();
    assert_eq!(seen, groups, "{identity}");
}

#[test]
fn rules_per_method_and_per_connection_admit_and_refuse_that_client() {
    let user = client_user();
    let theirs = user
        .groups
        .iter()
        .find(|g| **g != user.gid)
        .copied()
        .unwrap_or(user.gid);
    let foreign = foreign_group(&user);
    let scratch = Scratch::new("rules");
    // Connections: anyone in the client's supplementary group (or root);
    // `echo` for that group too, `sleep` only for a group it is not in.
    let serve = Serve::start(
        &scratch.bin(),
        &scratch.socket(),
        &[
            "--allow",
            &format!("group:{theirs}"),
            "--allow",
            "admin",
            "--allow",
            &format!("echo=group:{theirs}"),
            "--allow",
            &format!("sleep=group:{foreign}"),
        ],
    );
    let (_, echo) = call_as_client(
        &scratch.bin(),
        &scratch.socket(),
        &["--method", "echo", "42"],
    );
    assert!(echo.status.success(), "{}", stderr(&echo));
    assert_eq!(stdout(&echo).trim(), "42");

    let (pid, sleep) = call_as_client(
        &scratch.bin(),
        &scratch.socket(),
        &["--method", "sleep", r#"{"ms":1}"#],
    );
    assert!(!sleep.status.success(), "sleep was allowed");
    let refused = stderr(&sleep);
    assert!(
        refused.contains("not allowed")
            && refused.contains(&format!("\"sleep\" needs rule \"group:{foreign}\"")),
        "{refused}"
    );
    // Methods without a rule are open to every admitted caller.
    let (_, whoami) = call_as_client(&scratch.bin(), &scratch.socket(), &["--method", "whoami"]);
    assert!(whoami.status.success(), "{}", stderr(&whoami));
    // The refusal is logged with the caller's identity and the rule.
    let log = serve.stderr();
    let caller = format!("caller=uid {} (gid {}, pid {pid})", user.uid, user.gid);
    assert!(
        log.lines()
            .any(|line| line.contains("not allowed by the access policy")
                && line.contains(&format!("rule=\"group:{foreign}\""))
                && line.contains("method=\"sleep\"")
                && line.contains(&caller)),
        "no log line with {caller}: {log}"
    );
    drop(serve);

    // A connection rule on a group the client is not in refuses it
    // before HELLO, naming the rule.
    let _serve = Serve::start(
        &scratch.bin(),
        &scratch.socket(),
        &["--allow", &format!("group:{foreign}"), "--allow", "user:0"],
    );
    let (_, refused) = call_as_client(&scratch.bin(), &scratch.socket(), &["ping"]);
    assert!(!refused.status.success(), "a connection was allowed");
    let message = stderr(&refused);
    assert!(
        message.contains("not allowed")
            && message.contains(&format!(
                "(rule \"group:{foreign} or user:0\") does not admit this client (uid {}",
                user.uid
            )),
        "{message}"
    );
}

#[test]
fn the_same_executable_rule_admits_only_the_servers_own_file() {
    let scratch = Scratch::new("same-exe");
    let _serve = Serve::start(
        &scratch.bin(),
        &scratch.socket(),
        &["--allow", "same-executable"],
    );
    // The same file as the server: admitted (as root both run as root;
    // not as root, as this user). Reading its executable needs the same
    // user or root, so the client runs as the server's user here.
    let call = |bin: &Path| {
        let output = Command::new(bin)
            .args([
                "call",
                "--name",
                scratch.socket().to_str().unwrap(),
                "ping-me",
            ])
            .env("RUST_LOG", "off")
            .output()
            .unwrap();
        (output.status.success(), stdout(&output), stderr(&output))
    };
    let (ok, out, err) = call(&scratch.bin());
    assert!(ok, "the server's own executable was refused: {err}");
    assert_eq!(out, "ping-me\n");
    // The same bytes in another file: refused (a file, not its contents or
    // name, is what the rule compares).
    let copy = scratch.0.join("copy");
    std::fs::create_dir(&copy).unwrap();
    let other = copy.join("pipesvc");
    common::copy_executable(&scratch.bin(), &other);
    let (ok, _, err) = call(&other);
    assert!(!ok, "a copy of the executable was admitted");
    assert!(
        err.contains("(rule \"same-executable\") does not admit this client"),
        "{err}"
    );
    // And this test process, another program: refused.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let endpoint = Endpoint::new(scratch.socket().to_str().unwrap()).unwrap();
    let err = runtime
        .block_on(guard(Client::connect(&endpoint)))
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NOT_ALLOWED), "{err}");
}

/// `guarded`: only for callers in group 4242 (a handler's own rule);
/// `slow`: gives up with its own `timed out`; `topic`: asks the policy
/// about an operation that is not a method.
const GUARDED: Method<(), String> = Method::new("guarded", "for group 4242 only");
const SLOW: Method<(), ()> = Method::new("slow", "times out on its own");
const TOPIC: Method<(), ()> = Method::new("topic", "subscribes to topic:jobs");

fn handler_service() -> Service {
    Service::new("rules", "1", ())
        .method(&GUARDED, |_, (), ctx: ConnectionContext| async move {
            ctx.require(&Rule::gid(4242).named("staff"))?;
            Ok("welcome".to_owned())
        })
        .method(&SLOW, |_, (), _| async move {
            Err(ServiceError::timed_out(
                "the device did not answer within 1 ms",
            ))
        })
        .method(&TOPIC, |_, (), ctx: ConnectionContext| async move {
            ctx.authorize("topic:jobs")?;
            Ok(())
        })
}

#[tokio::test]
async fn a_handler_refuses_with_not_allowed_and_gives_up_with_timed_out() {
    let endpoint = unique_endpoint("handler-refusals");
    let policy = AccessPolicy::same_user().method("topic:*", Rule::gid(4243));
    let server = Server::builder(endpoint.clone())
        .access(policy)
        .handler(|request: Bytes, _| async move { Ok::<_, ServiceError>(request) })
        .calls(handler_service())
        .bind()
        .unwrap();
    let serving = TestServer::start(server);
    let client = guard(Client::connect(&endpoint)).await.unwrap();
    let me = pipesvc::transport::Caller::current();

    let guarded = guard(client.call(&GUARDED, &())).await;
    if me.in_group(4242) {
        assert_eq!(guarded.unwrap(), "welcome");
    } else {
        let err = guarded.unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::NOT_ALLOWED), "{err}");
        assert!(
            err.to_string().contains("\"guarded\" needs rule \"staff\""),
            "{err}"
        );
    }
    let err = guard(client.call(&SLOW, &())).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::TIMED_OUT), "{err}");
    assert!(
        err.to_string().contains("did not answer within 1 ms"),
        "{err}"
    );

    let topic = guard(client.call(&TOPIC, &())).await;
    if me.in_group(4243) {
        topic.unwrap();
    } else {
        let err = topic.unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::NOT_ALLOWED), "{err}");
        assert!(
            err.to_string()
                .contains("\"topic:jobs\" needs rule \"group:4243\""),
            "{err}"
        );
    }
    // The connection carries on after each refusal.
    assert_eq!(client.request("still here").await.unwrap(), "still here");
    client.close().await;
    guard(serving.stop()).await.unwrap();
}

#[tokio::test]
async fn a_rule_naming_an_unknown_user_or_a_windows_only_rule_fails_bind() {
    let bind = |policy: AccessPolicy| {
        Server::builder(unique_endpoint("bad-rule"))
            .access(policy)
            .handler(|request: Bytes, _| async move { Ok::<_, ServiceError>(request) })
            .bind()
            .map(drop)
            .unwrap_err()
            .to_string()
    };
    let err = bind(AccessPolicy::only(Rule::user("no-such-user-pipesvc")));
    assert!(
        err.contains("access: rule \"user:no-such-user-pipesvc\": no user named"),
        "{err}"
    );
    let err = bind(AccessPolicy::same_user().method("x", Rule::group("no-such-group-pipesvc")));
    assert!(
        err.contains("no group named \"no-such-group-pipesvc\""),
        "{err}"
    );
    let err = bind(AccessPolicy::only(Rule::interactive()));
    assert!(err.contains("rule \"interactive\""), "{err}");
    let err = bind(AccessPolicy::only(Rule::user("S-1-5-18")));
    assert!(err.contains("is a Windows SID"), "{err}");
    let err = bind(AccessPolicy::interactive_users());
    assert!(err.contains("preset is for Windows"), "{err}");
}

/// A copy of the binary runs at once, with no retry, while other threads
/// of this test process fork without pause: the copy is never open for
/// writing in this process (`common::copy_executable`), so no forked
/// child can hold it busy. CI failed once with ETXTBSY when the copy was
/// written here.
#[test]
fn a_copied_executable_runs_while_other_threads_fork() {
    let scratch = Scratch::new("busy");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let forkers: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let _ = Command::new("true").status();
                }
            })
        })
        .collect();
    // A small executable: what matters is the window between the copy
    // and its exec, not the bytes.
    let runs = (0..1000).map(|n| {
        let bin = scratch.0.join(format!("true-{n}"));
        common::copy_executable(Path::new("/bin/true"), &bin);
        Command::new(&bin).output()
    });
    let failures: Vec<String> = runs
        .filter_map(|run| match run {
            Ok(output) if output.status.success() => None,
            Ok(output) => Some(format!("{}", output.status)),
            Err(e) => Some(e.to_string()),
        })
        .collect();
    stop.store(true, Ordering::Relaxed);
    for forker in forkers {
        forker.join().unwrap();
    }
    assert!(
        failures.is_empty(),
        "{} of 1000 runs failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
}
