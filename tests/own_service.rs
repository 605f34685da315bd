//! `examples/own_service.rs`, a product's own service binary built on
//! `pipesvc::ops`, run as the shipped binary's tests run `pipesvc`: its own
//! handler and config key next to pipesvc's settings, the errors naming the
//! file, line and key, systemd readiness (Linux) and the Windows service
//! commands through the real Service Control Manager (Windows, or Wine).

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;

use common::HANG_GUARD;
use pipesvc::testing::{output_within, stop_process};

/// The example's executable, which `cargo test` builds next to the tests.
fn example() -> PathBuf {
    let deps = std::env::current_exe().expect("the test's own path");
    let profile = deps
        .parent()
        .and_then(|dir| dir.parent())
        .expect("target/<profile>");
    let exe = profile
        .join("examples")
        .join(format!("own_service{}", std::env::consts::EXE_SUFFIX));
    assert!(
        exe.exists(),
        "{} is missing: `cargo test` builds it, `cargo test --test own_service` alone does not \
         (run `cargo build --example own_service` first)",
        exe.display()
    );
    exe
}

/// A unique endpoint address as `--name` takes it.
fn unique_name(test: &str) -> String {
    common::unique_endpoint(test)
        .address()
        .to_string_lossy()
        .into_owned()
}

/// `own_service ARGS` with quiet logs and none of the test's `GREETER_*`,
/// `LISTEN_*` or `NOTIFY_SOCKET` variables.
fn greeter(args: &[&str]) -> Command {
    let mut command = Command::new(example());
    command.args(args).env("RUST_LOG", "warn");
    for (name, _) in std::env::vars_os() {
        let text = name.to_string_lossy();
        if text.starts_with("GREETER_") || text.starts_with("LISTEN_") || text == "NOTIFY_SOCKET" {
            command.env_remove(name);
        }
    }
    command
}

/// Runs `f` on a thread of its own; `None` if it outlasts the hang guard.
fn within_guard<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (done, result) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(f());
    });
    result.recv_timeout(HANG_GUARD).ok()
}

/// Runs `command` to completion within the hang guard.
fn run(command: Command) -> Output {
    output_within(command, HANG_GUARD).expect("the example runs to its end")
}

/// Runs `command`, expected to fail; its stderr.
fn failure(command: Command) -> String {
    let out = run(command);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "the example succeeded: {err}");
    err
}

/// A file of the test's own, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(test: &str, text: &str) -> TempFile {
        let name = format!("pipesvc-own-{test}-{}.toml", std::process::id());
        let path = std::env::temp_dir().join(name);
        std::fs::write(&path, text).unwrap();
        TempFile(path)
    }

    fn arg(&self) -> &str {
        self.0.to_str().expect("a UTF-8 temp path")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A running `own_service serve`, stopped when dropped.
struct Serving(Child);

impl Serving {
    /// Starts `command` and waits for its `greeter listening on NAME` line.
    fn start(mut command: Command, name: &str) -> Serving {
        let mut child = command.stdout(Stdio::piped()).spawn().expect("start it");
        let stdout = child.stdout.take().unwrap();
        let line = within_guard(move || {
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line).map(|_| line)
        });
        let serving = Serving(child);
        let line = line.expect("a line within the hang guard").unwrap();
        assert_eq!(line.trim_end(), format!("greeter listening on {name}"));
        serving
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        // Gracefully (SIGTERM on Unix): no socket file is left behind.
        let _ = stop_process(&mut self.0, HANG_GUARD);
    }
}

/// Sends `message` to `name` and returns the answer and the server's name.
fn call(name: &str, message: &'static str) -> (String, String) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(common::guard(async {
        let client = pipesvc::Client::connect(&name.parse().unwrap())
            .await
            .expect("connect to the example");
        let answer = client.request(message).await.expect("an answer");
        let server_name = client.server_name();
        client.close().await;
        (String::from_utf8(answer.to_vec()).unwrap(), server_name)
    }))
}

#[test]
fn its_handler_serves_its_own_key_and_pipesvcs_settings() {
    let config = TempFile::new("serve", "greeting = \"Hi\"\nmax_connections = 4\n");
    let name = unique_name("own-serve");
    let mut command = greeter(&["serve", "--config", config.arg(), "--name", &name]);
    command.env("GREETER_SERVER_NAME", "greeter-under-test");
    let service = Serving::start(command, &name);
    let (answer, server_name) = call(&name, "Ada");
    assert_eq!(
        answer, "Hi, Ada",
        "the product's own key reached its handler"
    );
    assert_eq!(
        server_name, "greeter-under-test",
        "GREETER_* variables are read"
    );
    #[cfg(unix)]
    {
        let mut service = service;
        // SAFETY: plain kill(2) on our own child's pid.
        assert_eq!(
            unsafe { libc::kill(service.0.id() as i32, libc::SIGTERM) },
            0
        );
        let status = service.0.wait().unwrap();
        assert!(status.success(), "graceful stop at SIGTERM: {status:?}");
    }
    #[cfg(windows)]
    drop(service);
}

#[test]
fn config_errors_name_the_file_line_and_nearest_key() {
    let config = TempFile::new("badkey", "max_connections = 4\ngreting = \"Hi\"\n");
    let err = failure(greeter(&["serve", "--config", config.arg()]));
    assert!(
        err.contains(&format!("config file {}", config.arg())),
        "{err}"
    );
    assert!(
        err.contains("line 2: unknown key `greting` (did you mean `greeting`?)"),
        "{err}"
    );
    let mut command = greeter(&["serve", "--name", &unique_name("own-env")]);
    command.env("GREETER_MAX_CONNECTIONS", "0");
    let err = failure(command);
    assert!(
        err.contains(
            "environment variable GREETER_MAX_CONNECTIONS: \
             expected a whole number from 1 to 1000000, got \"0\""
        ),
        "{err}"
    );
}

#[test]
fn its_help_shows_its_own_names_prefix_and_defaults() {
    let help = |args: &[&str]| {
        let out = run(greeter(args));
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let serve = help(&["serve", "--help"]);
    let name = serve.split("--name").nth(1).unwrap_or_default();
    assert!(name.contains("[default: greeter]"), "{serve}");
    let server_name = serve.split("--server-name").nth(1).unwrap_or_default();
    assert!(server_name.contains("[default: greeter]"), "{serve}");
    assert!(serve.contains("GREETER_<KEY>"), "{serve}");
    let install = help(&["service", "install", "--help"]);
    let service_name = install.split("--service-name").nth(1).unwrap_or_default();
    assert!(service_name.contains("[default: greeter]"), "{install}");
    // pipesvc's names, prefix and docs are not the product's (`pipesvc`
    // as a log target, the library's, may be named).
    for text in [&serve, &install] {
        for leak in [
            "default: pipesvc",
            "such as pipesvc",
            "PIPESVC",
            "CONFIG.md",
            "pipesvc IPC",
            "\\pipesvc\\",
        ] {
            assert!(!text.contains(leak), "{leak:?} in a product's help: {text}");
        }
    }
}

#[test]
fn its_hello_names_the_product() {
    let name = unique_name("own-hello");
    let _service = Serving::start(greeter(&["serve", "--name", &name]), &name);
    let (answer, server_name) = call(&name, "Ada");
    assert_eq!(answer, "Hello, Ada");
    assert_eq!(server_name, "greeter");
}

#[test]
fn errors_in_its_own_keys_name_the_key_and_line() {
    let config = TempFile::new(
        "owntype",
        "max_connections = 4
greeting = 5
",
    );
    let err = failure(greeter(&["serve", "--config", config.arg()]));
    assert!(
        err.contains("line 2: `greeting`: invalid type: integer `5`, expected a string"),
        "{err}"
    );
    let config = TempFile::new(
        "owntable",
        "max_connections = 4\n\n[greeting]\nword = \"Hi\"\n",
    );
    let err = failure(greeter(&["serve", "--config", config.arg()]));
    assert!(
        err.contains("line 3: `greeting`: invalid type: map, expected a string"),
        "{err}"
    );
}

#[cfg(target_os = "linux")]
#[test]
fn it_tells_systemd_when_it_is_ready() {
    use std::os::unix::net::UnixDatagram;

    let socket_path =
        std::env::temp_dir().join(format!("pipesvc-own-notify-{}", std::process::id()));
    let _ = std::fs::remove_file(&socket_path);
    let notify = UnixDatagram::bind(&socket_path).expect("bind the notify socket");
    notify.set_read_timeout(Some(HANG_GUARD)).unwrap();
    let name = unique_name("own-sd");
    let mut command = greeter(&["serve", "--name", &name]);
    command.env("NOTIFY_SOCKET", &socket_path);
    let _service = Serving::start(command, &name);
    let mut buf = [0u8; 4096];
    let n = notify
        .recv(&mut buf)
        .expect("READY=1 within the hang guard");
    let _ = std::fs::remove_file(&socket_path);
    let message = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(message.lines().any(|line| line == "READY=1"), "{message:?}");
    let status = format!("STATUS=listening on {name}");
    assert!(message.lines().any(|line| line == status), "{message:?}");
    assert_eq!(call(&name, "systemd").0, "Hello, systemd");
}

#[cfg(not(windows))]
#[test]
fn its_service_commands_are_windows_only() {
    let err = failure(greeter(&["service", "status"]));
    assert!(err.contains("`greeter service` is Windows-only"), "{err}");
    assert!(err.contains("run `greeter serve` under systemd"), "{err}");
}

/// Install, start, call, stop and uninstall the example as a Windows
/// service, checked through the SCM.
#[cfg(windows)]
#[test]
fn it_runs_as_a_windows_service() {
    use windows_service::service::{ServiceAccess, ServiceState};
    use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};

    const TEST: &str = "own-winsvc";
    let scm = ServiceManager::local_computer(None::<&str>, ServiceManagerAccess::CONNECT)
        .expect("connect to the Service Control Manager");
    let service_name = format!("greeter-t{}", std::process::id());
    let name = unique_name(TEST);
    let config = TempFile::new(TEST, "greeting = \"Welcome\"\n");
    let (service, pipe, file) = (service_name.as_str(), name.as_str(), config.arg());
    let install = run(greeter(&[
        "service",
        "install",
        "--service-name",
        service,
        "--start-type",
        "demand",
        "--name",
        pipe,
        "--config",
        file,
    ]));
    let err = String::from_utf8_lossy(&install.stderr).into_owned();
    if !install.status.success()
        && err.contains("access denied")
        && common::wine_version().is_none()
    {
        common::skip(TEST, "installing a service needs an elevated prompt");
        return;
    }
    // Removed even if an assertion fails half-way.
    struct Remove<'a>(&'a ServiceManager, &'a str);
    impl Drop for Remove<'_> {
        fn drop(&mut self) {
            let access = ServiceAccess::STOP | ServiceAccess::DELETE;
            if let Ok(service) = self.0.open_service(self.1, access) {
                let _ = service.stop();
                let _ = service.delete();
            }
        }
    }
    let _remove = Remove(&scm, service);
    assert!(install.status.success(), "install failed: {err}");
    let config_of = scm
        .open_service(service, ServiceAccess::QUERY_CONFIG)
        .unwrap();
    let display_name = config_of.query_config().unwrap().display_name;
    assert_eq!(
        display_name.to_string_lossy(),
        format!("greeter IPC service ({service})")
    );

    let ok = |args: &[&str]| {
        let out = run(greeter(args));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{args:?}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };
    let started = ok(&["service", "start", "--service-name", service]);
    assert!(started.contains("is running (pid "), "{started}");
    assert_eq!(
        call(pipe, "Ada").0,
        "Welcome, Ada",
        "the service read its config file"
    );
    ok(&["service", "stop", "--service-name", service]);
    let status = scm
        .open_service(service, ServiceAccess::QUERY_STATUS)
        .unwrap();
    assert_eq!(
        status.query_status().unwrap().current_state,
        ServiceState::Stopped
    );
    ok(&["service", "uninstall", "--service-name", service]);
    let log = PathBuf::from(std::env::var_os("ProgramData").expect("ProgramData is set"))
        .join("greeter")
        .join(format!("{service}.log"));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    assert!(
        text.contains("service running"),
        "the log is the product's: {text}"
    );
}
