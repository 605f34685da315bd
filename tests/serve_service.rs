//! `pipesvc serve` as a background service, run as the real binary: its
//! settings (config file, environment, flags), its log formats, and on
//! Linux the systemd protocols (readiness, socket activation, SIGTERM).

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use common::{unique_endpoint, HANG_GUARD};
use pipesvc::testing::{output_within, stop_process, STOP_TIMEOUT};

const BIN: &str = env!("CARGO_BIN_EXE_pipesvc");

/// A unique endpoint address as `--name` takes it.
fn unique_name(test: &str) -> String {
    unique_endpoint(test)
        .address()
        .to_string_lossy()
        .into_owned()
}

/// A running `pipesvc serve`, stopped when dropped.
struct Service {
    child: Child,
    /// Where it says it listens.
    endpoint: String,
}

impl Service {
    /// Starts `command` (a `pipesvc serve`) and waits, within the hang
    /// guard, for its `pipesvc listening on` line.
    fn start(mut command: Command) -> Service {
        let mut child = command
            .stdout(Stdio::piped())
            .spawn()
            .expect("start pipesvc serve");
        let stdout = child.stdout.take().unwrap();
        let line = within_guard(move || {
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line).map(|_| line)
        });
        let line = match line {
            Some(Ok(line)) => line,
            other => {
                let _ = stop_process(&mut child, STOP_TIMEOUT);
                panic!("pipesvc serve did not say it listens: {other:?}");
            }
        };
        let endpoint = line
            .trim_end()
            .strip_prefix("pipesvc listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        Service { child, endpoint }
    }

    /// `pipesvc call --name <endpoint> MESSAGE`'s output, expected to succeed.
    fn call(&self, message: &str) -> String {
        call(&self.endpoint, message)
    }

    /// Sends SIGTERM and returns whether the process then exited with 0.
    #[cfg(unix)]
    fn terminate(self) -> bool {
        self.stop_with(libc::SIGTERM).success()
    }

    /// Sends `signal` and returns how the process then exited.
    #[cfg(unix)]
    fn stop_with(mut self, signal: i32) -> std::process::ExitStatus {
        self.signal(signal);
        self.child.wait().expect("wait for pipesvc serve")
    }

    /// Sends `signal` to the service.
    #[cfg(unix)]
    fn signal(&self, signal: i32) {
        // SAFETY: plain kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.child.id() as i32, signal) };
        assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        // Gracefully (SIGTERM on Unix): no socket file is left behind.
        let _ = stop_process(&mut self.child, STOP_TIMEOUT);
    }
}

/// Runs `f` on a thread of its own and returns its result, or `None` if it
/// takes longer than the hang guard.
fn within_guard<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (done, result) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(f());
    });
    result.recv_timeout(HANG_GUARD).ok()
}

fn serve(args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command.arg("serve").args(args);
    without_stray_settings(&mut command);
    command
}

/// Quiet logs, and none of the test's own `PIPESVC_*` or systemd variables
/// leaking into the service.
fn without_stray_settings(command: &mut Command) {
    command.env("RUST_LOG", "warn");
    for (name, _) in std::env::vars_os() {
        let text = name.to_string_lossy();
        if text.starts_with("PIPESVC_") || text.starts_with("LISTEN_") || text == "NOTIFY_SOCKET" {
            command.env_remove(name);
        }
    }
}

fn call(endpoint: &str, message: &str) -> String {
    let output = Command::new(BIN)
        .args(["call", "--name", endpoint, message])
        .env("RUST_LOG", "warn")
        .output()
        .expect("run pipesvc call");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap()
}

/// Runs `command` (expected to fail at start) and returns its stderr.
fn failure(command: Command) -> String {
    let output = output_within(command, HANG_GUARD).expect("pipesvc runs to its end");
    let text = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "pipesvc succeeded: {text}");
    text
}

/// A directory of the test's own, removed when dropped.
struct TempDir(PathBuf);

/// Makes names unique within this test process.
static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn unique_suffix() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

impl TempDir {
    fn new(test: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("pipesvc-{test}-{}", unique_suffix()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A TOML string literal holding `text` (endpoint paths on Windows have
/// backslashes).
fn toml_string(text: &str) -> String {
    format!("'{text}'")
}

// ---------------------------------------------------------------------------
// Settings

#[test]
fn an_unknown_key_in_the_config_file_stops_the_start_naming_file_and_key() {
    let dir = TempDir::new("badkey");
    let config = dir.file("bad.toml", "max_connections = 8\nmax_conection = 8\n");
    let err = failure(serve(&["--config", config.to_str().unwrap()]));
    let expected = format!(
        "config file {}: line 2: unknown key `max_conection` (did you mean `max_connections`?)",
        config.display()
    );
    assert!(err.contains(&expected), "{err}");
}

#[test]
fn a_bad_environment_value_stops_the_start_naming_the_variable() {
    let mut command = serve(&["--name", &unique_name("badenv")]);
    command.env("PIPESVC_HANDSHAKE_TIMEOUT", "soon");
    let err = failure(command);
    assert!(
        err.contains(
            "environment variable PIPESVC_HANDSHAKE_TIMEOUT: expected a number of seconds"
        ),
        "{err}"
    );
}

#[test]
fn flags_override_environment_which_overrides_the_file() {
    let (in_file, in_env, in_flag) = (
        unique_name("prec-file"),
        unique_name("prec-env"),
        unique_name("prec-flag"),
    );
    let dir = TempDir::new("precedence");
    let config = dir.file(
        "pipesvc.toml",
        &format!("name = {}\n", toml_string(&in_file)),
    );
    let config = config.to_str().unwrap();

    let service = Service::start(serve(&["--config", config]));
    assert_eq!(service.endpoint, in_file, "the file over the default");
    assert_eq!(service.call("from the file"), "from the file\n");
    drop(service);

    let mut command = serve(&["--config", config]);
    command.env("PIPESVC_NAME", &in_env);
    let service = Service::start(command);
    assert_eq!(service.endpoint, in_env, "the environment over the file");
    drop(service);

    let mut command = serve(&["--config", config, "--name", &in_flag]);
    command.env("PIPESVC_NAME", &in_env);
    let service = Service::start(command);
    assert_eq!(service.endpoint, in_flag, "the flag over the environment");
    assert_eq!(service.call("from the flag"), "from the flag\n");
}

#[test]
fn settings_from_the_file_reach_the_server() {
    // A frame limit too small for the server's own HELLO (with its long
    // name) is refused at bind; the error shows that the file's values
    // got there.
    let dir = TempDir::new("reach");
    let text = format!(
        "max_frame_len = 100\nserver_name = \"{}\"\n",
        "n".repeat(100)
    );
    let config = dir.file("small.toml", &text);
    let err = failure(serve(&[
        "--config",
        config.to_str().unwrap(),
        "--name",
        &unique_name("reach"),
    ]));
    assert!(
        err.contains("max_frame_len: must be at least 116, not 100"),
        "{err}"
    );
}

/// One rule for the smallest frame limit, whichever way it is set: the
/// flag, the variable and the file are refused alike below it, and at it
/// `pipesvc serve` answers every client command (with 30, `call --method
/// whoami`, `status` and `methods` got no answer at all): with the answer,
/// or with ERROR `frame too large` when the answer itself is larger.
#[test]
fn the_smallest_frame_limit_is_one_rule_for_flag_variable_and_file() {
    let rule = "max_frame_len: must be at least 74, not 30";
    let name = unique_name("limit-rule");
    let err = failure(serve(&["--name", &name, "--max-frame-len", "30"]));
    assert!(err.contains(rule), "flag: {err}");
    let mut command = serve(&["--name", &name]);
    command.env("PIPESVC_MAX_FRAME_LEN", "30");
    let err = failure(command);
    assert!(err.contains(rule), "variable: {err}");
    let dir = TempDir::new("limit-rule");
    let config = dir.file("limit.toml", "max_frame_len = 30\n");
    let err = failure(serve(&[
        "--name",
        &name,
        "--config",
        config.to_str().unwrap(),
    ]));
    assert!(err.contains(rule), "file: {err}");

    let service = Service::start(serve(&["--name", &name, "--max-frame-len", "74"]));
    let run = |args: &[&str]| {
        let mut command = Command::new(BIN);
        command
            .args(args)
            .args(["--name", &service.endpoint, "--timeout", "20"])
            .env("RUST_LOG", "warn");
        output_within(command, HANG_GUARD).expect("the command runs to its end")
    };
    let echo = run(&["call", "--method", "echo", r#"{"pid":1}"#]);
    assert!(echo.status.success(), "{echo:?}");
    assert!(
        String::from_utf8_lossy(&echo.stdout).contains("pid"),
        "{echo:?}"
    );
    // The whole identity (uid, groups, executable...) is larger than a
    // frame of 74: the call's answer is ERROR `frame too large`, said.
    let whoami = run(&["call", "--method", "whoami"]);
    let text = String::from_utf8_lossy(&whoami.stderr);
    assert!(
        whoami.status.code() == Some(1) && text.contains("frame too large"),
        "{whoami:?}"
    );
    let status = run(&["status"]);
    assert!(status.status.success(), "{status:?}");
    // The description is larger than a frame of 74: the answer is ERROR
    // `frame too large`, and the command says so.
    let methods = run(&["methods"]);
    let text = String::from_utf8_lossy(&methods.stderr);
    assert!(
        !methods.status.success() && text.contains("frame too large"),
        "{methods:?}"
    );
}

/// The example config of the systemd unit, served as it is but on a test
/// endpoint.
#[cfg(unix)]
#[test]
fn the_example_config_serves() {
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/pipesvc.toml");
    let name = unique_name("example");
    let service = Service::start(serve(&[
        "--config",
        example.to_str().unwrap(),
        "--name",
        &name,
    ]));
    assert_eq!(service.endpoint, name);
    assert_eq!(service.call("hello"), "hello\n");
}

// ---------------------------------------------------------------------------
// Logs

/// Reads `stderr` line by line on a thread; the lines arrive on the
/// returned channel.
fn lines_of(stderr: ChildStderr) -> mpsc::Receiver<String> {
    let (send, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if send.send(line).is_err() {
                break;
            }
        }
    });
    lines
}

/// Runs `pipesvc call` against `endpoint` and returns the client's pid.
fn call_and_pid(endpoint: &str) -> u32 {
    let client = Command::new(BIN)
        .args(["call", "--name", endpoint, "who am i"])
        .env("RUST_LOG", "off")
        .stdout(Stdio::piped())
        .spawn()
        .expect("run pipesvc call");
    let pid = client.id();
    let output = client.wait_with_output().unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(output.stdout, b"who am i\n");
    pid
}

/// Waits for the first line that `pick` accepts; every line before it is
/// checked by `pick` too (it may panic).
fn wait_for_line<T>(lines: &mpsc::Receiver<String>, mut pick: impl FnMut(&str) -> Option<T>) -> T {
    loop {
        let line = lines
            .recv_timeout(HANG_GUARD)
            .expect("the awaited log line did not come");
        if let Some(found) = pick(&line) {
            return found;
        }
    }
}

#[cfg(unix)]
fn current_uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

#[test]
fn json_logs_are_one_object_per_line_with_the_peer_on_connection_lines() {
    let name = unique_name("json");
    let mut command = serve(&["--name", &name]);
    command
        .args(["--log-format", "json"])
        .env("RUST_LOG", "pipesvc=debug")
        .stderr(Stdio::piped());
    let mut service = Service::start(command);
    let lines = lines_of(service.child.stderr.take().unwrap());
    let client_pid = call_and_pid(&service.endpoint);

    let conn = wait_for_line(&lines, |line| {
        let event: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(event["level"].is_string(), "{line}");
        assert!(event["fields"]["message"].is_string(), "{line}");
        let span = &event["span"];
        (span["name"] == "conn" && span["pid"] == client_pid).then(|| event.clone())
    });
    let span = &conn["span"];
    assert!(span["id"].is_u64(), "{conn}");
    #[cfg(unix)]
    {
        assert_eq!(span["uid"], current_uid(), "{conn}");
        assert!(span["gid"].is_u64(), "{conn}");
    }
    let spans = conn["spans"].as_array().expect("the span list");
    assert!(spans.iter().any(|s| s["name"] == "conn"), "{conn}");
}

#[test]
fn text_logs_are_plain_lines_with_the_peer_on_connection_lines() {
    let name = unique_name("text");
    let mut command = serve(&["--name", &name]);
    command
        .env("RUST_LOG", "pipesvc=debug")
        .stderr(Stdio::piped());
    let mut service = Service::start(command);
    let lines = lines_of(service.child.stderr.take().unwrap());
    let client_pid = call_and_pid(&service.endpoint);
    let needle = format!("pid={client_pid}");
    let line = wait_for_line(&lines, |line| {
        assert!(!line.starts_with('{'), "not JSON by default: {line}");
        assert!(!line.contains('\x1b'), "no colours off a terminal: {line}");
        (line.contains("conn{") && line.contains(&needle)).then(|| line.to_owned())
    });
    assert!(line.contains(" conn{id="), "{line}");
    #[cfg(unix)]
    assert!(line.contains(&format!("uid={}", current_uid())), "{line}");
}

// ---------------------------------------------------------------------------
// systemd (Linux): readiness, stop, socket activation. systemd itself does
// not run here; the tests play its part of each protocol.

#[cfg(target_os = "linux")]
mod systemd {
    use std::os::fd::AsRawFd;
    use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
    use std::os::unix::process::CommandExt;

    use std::path::Path;

    use super::*;

    /// The notifications socket systemd would own.
    struct NotifySocket {
        socket: UnixDatagram,
    }

    impl NotifySocket {
        /// A datagram socket bound to `path`.
        fn at(path: &Path) -> NotifySocket {
            let socket = UnixDatagram::bind(path).expect("bind the notify socket");
            socket.set_read_timeout(Some(HANG_GUARD)).unwrap();
            NotifySocket { socket }
        }

        /// The next notification, as text.
        fn recv(&self) -> String {
            let mut buf = [0u8; 4096];
            let n = self
                .socket
                .recv(&mut buf)
                .expect("a notification within the hang guard");
            String::from_utf8(buf[..n].to_vec()).unwrap()
        }
    }

    fn has_assignment(message: &str, assignment: &str) -> bool {
        message.lines().any(|line| line == assignment)
    }

    #[test]
    fn ready_comes_once_the_socket_accepts_and_sigterm_stops_cleanly() {
        let dir = TempDir::new("ready");
        let notify = NotifySocket::at(&dir.0.join("notify"));
        let name = unique_name("sd-ready");
        let mut server = serve(&["--name", &name])
            .env("NOTIFY_SOCKET", dir.0.join("notify"))
            .stdout(Stdio::null())
            .spawn()
            .expect("start pipesvc serve");

        let ready = notify.recv();
        assert!(has_assignment(&ready, "READY=1"), "{ready:?}");
        assert!(
            has_assignment(&ready, &format!("STATUS=listening on {name}")),
            "{ready:?}"
        );
        // One plain connect, no retry: READY=1 means it accepts now.
        UnixStream::connect(&name).expect("the socket accepts once READY=1 is sent");
        assert_eq!(call(&name, "after ready"), "after ready\n");
        // The README's query step: the call above is counted.
        let status = Command::new(BIN)
            .args(["status", "--name", &name, "--json"])
            .env("RUST_LOG", "warn")
            .output()
            .expect("run pipesvc status");
        assert!(status.status.success(), "{status:?}");
        let json = String::from_utf8(status.stdout).unwrap();
        assert!(json.contains("\"requests_served\":1,"), "{json}");

        // SAFETY: plain kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(server.id() as i32, libc::SIGTERM) }, 0);
        let stopping = notify.recv();
        assert!(has_assignment(&stopping, "STOPPING=1"), "{stopping:?}");
        let status = server.wait().unwrap();
        assert!(status.success(), "exit status after SIGTERM: {status:?}");
        assert!(
            !Path::new(&name).exists(),
            "the socket file is removed at stop"
        );
    }

    #[test]
    fn ready_goes_to_an_abstract_notify_socket_too() {
        use std::os::linux::net::SocketAddrExt;
        let abstract_name = format!("pipesvc-test-notify-{}", unique_suffix());
        let address = std::os::unix::net::SocketAddr::from_abstract_name(&abstract_name).unwrap();
        let socket = UnixDatagram::bind_addr(&address).unwrap();
        socket.set_read_timeout(Some(HANG_GUARD)).unwrap();
        let notify = NotifySocket { socket };
        let name = unique_name("sd-abstract");
        let mut command = serve(&["--name", &name]);
        command.env("NOTIFY_SOCKET", format!("@{abstract_name}"));
        let service = Service::start(command);
        assert!(has_assignment(&notify.recv(), "READY=1"));
        assert_eq!(service.call("abstract"), "abstract\n");
    }

    #[test]
    fn without_notify_socket_nothing_is_sent_and_it_serves() {
        let name = unique_name("sd-none");
        let mut command = serve(&["--name", &name]);
        command.env_remove("NOTIFY_SOCKET");
        let service = Service::start(command);
        assert_eq!(service.call("plain"), "plain\n");
        assert!(service.terminate(), "exit 0 after SIGTERM");
    }

    #[test]
    fn an_unreachable_notify_socket_fails_the_start_clearly() {
        let dir = TempDir::new("unreachable");
        let missing = dir.0.join("nobody-listens");
        let mut command = serve(&["--name", &unique_name("sd-unreach")]);
        command.env("NOTIFY_SOCKET", &missing);
        let err = failure(command);
        assert!(
            err.contains("cannot notify the service manager")
                && err.contains(&missing.display().to_string()),
            "{err}"
        );
    }

    /// `pipesvc serve ARGS` started as systemd starts an activated service:
    /// `listener` at descriptor 3, `LISTEN_FDS=1`, and `LISTEN_PID` set to
    /// the service's own pid (by a shell that then `exec`s it, keeping its
    /// pid).
    fn activated(listener: &UnixListener, args: &[&str]) -> Command {
        let mut shell = Command::new("sh");
        shell
            .args([
                "-c",
                "LISTEN_PID=$$; export LISTEN_PID; exec \"$0\" serve \"$@\"",
                BIN,
            ])
            .args(args);
        without_stray_settings(&mut shell);
        shell.env("LISTEN_FDS", "1");
        let fd = listener.as_raw_fd();
        // SAFETY: between fork and exec only async-signal-safe calls: dup2
        // and fcntl on descriptors this process owns.
        unsafe {
            shell.pre_exec(move || {
                if fd == 3 {
                    // dup2 would do nothing: just let exec keep it.
                    if libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::dup2(fd, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        shell
    }

    #[test]
    fn socket_activation_serves_the_socket_passed_at_descriptor_3() {
        let path = unique_name("sd-activated");
        let listener = UnixListener::bind(&path).expect("bind the activation socket");
        let dir = TempDir::new("activation");
        let notify = NotifySocket::at(&dir.0.join("notify"));
        let mut command = activated(&listener, &[]);
        command.env("NOTIFY_SOCKET", dir.0.join("notify"));
        let service = Service::start(command);
        // systemd keeps its copy; ours is not needed any more.
        drop(listener);
        assert_eq!(
            service.endpoint, path,
            "the passed socket's path is the endpoint"
        );
        assert!(has_assignment(&notify.recv(), "READY=1"));
        assert_eq!(service.call("activated"), "activated\n");

        assert!(service.terminate(), "exit 0 after SIGTERM");
        assert!(
            Path::new(&path).exists(),
            "a passed socket belongs to the service manager: it is not removed"
        );
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn socket_activation_refuses_a_socket_at_another_path_than_the_name() {
        let path = unique_name("sd-mismatch");
        let other = unique_name("sd-other");
        let listener = UnixListener::bind(&path).unwrap();
        let err = failure(activated(&listener, &["--name", &other]));
        assert!(
            err.contains(&format!("bound to {path}, not to {other}")),
            "{err}"
        );
        drop(listener);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn listen_fds_for_another_process_are_ignored() {
        // LISTEN_PID names another process: descriptor 3 is not ours, so
        // the service binds its own socket by name.
        let name = unique_name("sd-notours");
        let mut command = serve(&["--name", &name]);
        command.env("LISTEN_PID", "1").env("LISTEN_FDS", "1");
        let service = Service::start(command);
        assert_eq!(service.endpoint, name);
        assert_eq!(service.call("not activated"), "not activated\n");
    }
}

// ---------------------------------------------------------------------------
// Operations (Unix): the open-file limit and the signals.

#[cfg(unix)]
mod ops {
    use std::os::unix::process::CommandExt;
    use std::time::Duration;

    use futures_util::{SinkExt, StreamExt};
    use pipesvc::protocol::{ClientHello, ErrorCode, ErrorPayload, Frame, FrameCodec, Kind};
    use pipesvc::transport::{self, ClientStream, ConnectOptions};
    use tokio_util::codec::Framed;

    use super::*;

    /// The open-file limit the service runs under in the fd test.
    const NOFILE: u64 = 64;

    /// What a client got first from the server.
    #[derive(Debug, PartialEq)]
    enum First {
        Hello,
        Overloaded,
        /// Anything else, including nothing before the hang guard.
        Other(String),
    }

    /// Connects, reads the server's first frame and, after a HELLO, answers
    /// it so that the connection stays open (and holds a descriptor).
    async fn first_frame(
        endpoint: &pipesvc::Endpoint,
    ) -> (First, Framed<ClientStream, FrameCodec>) {
        let stream = transport::connect(endpoint, &ConnectOptions::default())
            .await
            .expect("connect")
            .stream;
        let mut framed = Framed::new(stream, FrameCodec::new(u32::MAX));
        // Only a guard against a hang: today's failure was exactly that.
        let first = tokio::time::timeout(Duration::from_secs(20), framed.next()).await;
        let first = match first {
            Ok(Some(Ok(frame))) if frame.kind == Kind::Hello => {
                let hello = Frame::new(Kind::Hello, 0, ClientHello::with_version(1).encode());
                framed.send(hello).await.expect("send HELLO");
                First::Hello
            }
            Ok(Some(Ok(frame))) if frame.kind == Kind::Error => {
                let error = ErrorPayload::decode(&frame.payload).expect("ERROR payload");
                if error.code == ErrorCode::OVERLOADED {
                    First::Overloaded
                } else {
                    First::Other(format!("{error:?}"))
                }
            }
            other => First::Other(format!("{other:?}")),
        };
        (first, framed)
    }

    /// Under a hard open-file limit of 64 and the default max_connections
    /// (1024), the service says at start that the limit cannot be reached,
    /// answers every client past the descriptors ERROR `overloaded`, logs
    /// that a bounded number of times, and serves again once clients leave.
    /// Before the reserve descriptor, the clients past the limit got
    /// nothing at all.
    #[test]
    fn clients_past_the_open_file_limit_get_overloaded() {
        let name = unique_name("nofile");
        let mut command = serve(&["--name", &name]);
        command.stderr(Stdio::piped());
        // SAFETY: setrlimit is async-signal-safe; the closure touches
        // nothing else between fork and exec.
        unsafe {
            command.pre_exec(|| {
                let limit = libc::rlimit {
                    rlim_cur: NOFILE,
                    rlim_max: NOFILE,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut service = Service::start(command);
        let lines = lines_of(service.child.stderr.take().unwrap());
        let endpoint: pipesvc::Endpoint = service.endpoint.parse().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut held = Vec::new();
        let mut firsts = Vec::new();
        for _ in 0..2 * NOFILE {
            let (first, framed) = runtime.block_on(first_frame(&endpoint));
            let answered = !matches!(first, First::Other(_));
            firsts.push(first);
            held.push(framed);
            if !answered {
                break; // the assertion below reports it; no need to wait more
            }
        }
        let hellos = firsts.iter().filter(|f| **f == First::Hello).count();
        let overloaded = firsts.iter().filter(|f| **f == First::Overloaded).count();
        let others: Vec<_> = firsts
            .iter()
            .enumerate()
            .filter(|(_, f)| matches!(f, First::Other(_)))
            .collect();
        assert!(
            others.is_empty(),
            "clients answered neither HELLO nor overloaded: {others:?}"
        );
        assert!(hellos > 0, "{firsts:?}");
        assert!(
            overloaded >= NOFILE as usize,
            "{hellos} HELLO, {overloaded} overloaded"
        );
        let first_refused = firsts.iter().position(|f| *f == First::Overloaded).unwrap();
        assert!(
            firsts[first_refused..]
                .iter()
                .all(|f| *f == First::Overloaded),
            "nothing was freed, so nothing past the limit is served: {firsts:?}"
        );
        // Clients leave: the service serves again (the reserve is back).
        drop(held);
        let served_again =
            (0..1000).any(|_| runtime.block_on(first_frame(&endpoint)).0 == First::Hello);
        assert!(served_again, "no HELLO after the clients left");
        assert!(service.terminate(), "exit 0 after SIGTERM");
        let log: Vec<String> = lines.try_iter().collect();
        assert!(
            log.iter()
                .any(|l| l.contains("max_connections cannot be reached")),
            "no warning at start: {log:?}"
        );
        let refusal_lines = log
            .iter()
            .filter(|l| l.contains("out of file descriptors"))
            .count();
        // At most 10 lines per 10 s: far fewer lines than refusals.
        assert!(
            refusal_lines > 0 && refusal_lines < overloaded / 2,
            "{refusal_lines} refusal lines for {overloaded} refusals: {log:?}"
        );
        eprintln!("{hellos} HELLO, {overloaded} overloaded, {refusal_lines} refusal lines");
    }

    /// SIGHUP and SIGQUIT stop the service as SIGTERM does: gracefully,
    /// with exit status 0 and the socket file removed. (Before, either
    /// killed it on the spot and left the socket file behind.)
    #[test]
    fn sighup_and_sigquit_stop_gracefully() {
        for (signal, name) in [(libc::SIGHUP, "hup"), (libc::SIGQUIT, "quit")] {
            let name = unique_name(name);
            let service = Service::start(serve(&["--name", &name]));
            assert_eq!(service.call("before"), "before\n");
            let status = service.stop_with(signal);
            assert!(status.success(), "signal {signal}: exit status {status:?}");
            assert!(
                !std::path::Path::new(&name).exists(),
                "signal {signal}: the socket file is left behind"
            );
        }
    }

    /// SIGUSR1 logs the counters and the service keeps serving.
    #[test]
    fn sigusr1_logs_the_status_and_keeps_serving() {
        let name = unique_name("usr1");
        let mut command = serve(&["--name", &name]);
        command.env("RUST_LOG", "info").stderr(Stdio::piped());
        let mut service = Service::start(command);
        let lines = lines_of(service.child.stderr.take().unwrap());
        assert_eq!(service.call("counted"), "counted\n");
        service.signal(libc::SIGUSR1);
        let line = wait_for_line(&lines, |line| {
            line.contains("status (SIGUSR1)").then(|| line.to_owned())
        });
        assert!(line.contains("requests_served=1"), "{line}");
        assert_eq!(service.call("still here"), "still here\n");
        assert!(service.terminate(), "exit 0 after SIGTERM");
    }
}
