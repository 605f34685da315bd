//! The `pipesvc` binary, run as a user would.

mod common;
#[path = "common/rogue.rs"]
mod rogue;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};

use common::unique_endpoint;
use pipesvc::testing::{output_within, stop_process, STOP_TIMEOUT};

const BIN: &str = env!("CARGO_BIN_EXE_pipesvc");

/// `pipesvc serve`, waited for until it says it is listening.
struct Service {
    child: Child,
    name: String,
}

impl Service {
    fn start(test: &str) -> Service {
        let name = unique_endpoint(test)
            .address()
            .to_string_lossy()
            .into_owned();
        let mut child = Command::new(BIN)
            .args(["serve", "--name", &name])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .expect("start pipesvc serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), format!("pipesvc listening on {name}"));
        Service { child, name }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .args(["--name", &self.name])
            .output()
            .expect("run pipesvc")
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        // Gracefully (SIGTERM on Unix): no socket file is left behind.
        let _ = stop_process(&mut self.child, STOP_TIMEOUT);
    }
}

/// Runs `pipesvc ARGS`, expects it to fail, and returns its stderr. A
/// command still running after the hang guard (a `serve` that was wrongly
/// allowed to start) is killed and the test fails instead of hanging.
fn failure(args: &[&str]) -> String {
    let output = output_within_guard(args);
    let text = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        !output.status.success(),
        "`pipesvc {}` succeeded: {text}",
        args.join(" ")
    );
    text
}

fn stdout(output: &Output) -> String {
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout.clone()).unwrap()
}

#[test]
fn call_prints_the_echoed_message() {
    let service = Service::start("cli-call");
    assert_eq!(stdout(&service.run(&["call", "hello"])), "hello\n");
    assert_eq!(
        stdout(&service.run(&["call", "héllo wörld"])),
        "héllo wörld\n"
    );
}

#[test]
fn status_reports_the_services_counters() {
    let service = Service::start("cli-status");
    assert_eq!(stdout(&service.run(&["call", "one"])), "one\n");
    assert_eq!(stdout(&service.run(&["call", "two"])), "two\n");
    let json = stdout(&service.run(&["status", "--json"]));
    assert_eq!(json.lines().count(), 1, "{json}");
    // Each `call` is one request; its connection reported it before closing
    // (the status connection, still open, is the one counted as open).
    assert_eq!(json_number(&json, "requests_served"), 2.0, "{json}");
    assert_eq!(json_number(&json, "connections_open"), 1.0, "{json}");
    assert_eq!(json_number(&json, "connections_total"), 3.0, "{json}");
    assert!(json_number(&json, "bytes_in") > 0.0, "{json}");
    assert!(json_number(&json, "bytes_out") > 0.0, "{json}");
    assert!(json_number(&json, "uptime_secs") >= 0.0, "{json}");
    assert!(json.contains("\"errors\":{}"), "{json}");

    let human = stdout(&service.run(&["status"]));
    assert!(human.contains("requests served   2\n"), "{human}");
    assert!(
        human.contains("connections       1 open, 4 since start"),
        "{human}"
    );
    assert!(human.contains("errors sent       none"), "{human}");
}

#[test]
fn clients_read_the_endpoint_from_pipesvc_name_like_serve() {
    let service = Service::start("cli-env-name");
    let call = |env: &str, args: &[&str]| {
        Command::new(BIN)
            .args(["call", "--connect-timeout", "0.2"])
            .args(args)
            .env("PIPESVC_NAME", env)
            .output()
            .expect("run pipesvc call")
    };
    assert_eq!(stdout(&call(&service.name, &["by env"])), "by env\n");
    // A flag beats the variable.
    let elsewhere = call(
        "no-such-service-here",
        &["--name", &service.name, "by flag"],
    );
    assert_eq!(stdout(&elsewhere), "by flag\n");
    // The variable is used, not ignored: a bad one is named in the error.
    let bad = call("a\\b", &["x"]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("PIPESVC_NAME"), "{err}");
}

#[test]
fn ping_prints_round_trip_times() {
    let service = Service::start("cli-ping");
    let out = stdout(&service.run(&["ping", "--count", "3"]));
    assert_eq!(out.matches("pong seq=").count(), 3, "{out}");
    assert!(out.contains("3 pings: min"), "{out}");
}

#[test]
fn call_without_a_service_fails_clearly() {
    let name = unique_endpoint("cli-none")
        .address()
        .to_string_lossy()
        .into_owned();
    let err = failure(&["call", "--name", &name, "--connect-timeout", "0.2", "hi"]);
    assert!(
        err.contains("could not connect to") && err.contains(&name),
        "{err}"
    );
}

#[test]
fn a_second_service_on_the_same_name_is_refused() {
    if let Some(version) = common::wine_version() {
        // Without the flag the second `serve` would share the name and run.
        common::skip(
            "a_second_service_on_the_same_name_is_refused",
            &format!("Wine {version} ignores FILE_FLAG_FIRST_PIPE_INSTANCE"),
        );
        return;
    }
    let service = Service::start("cli-twice");
    let err = failure(&["serve", "--name", &service.name]);
    assert!(
        err.contains("cannot listen on") && err.contains("in use"),
        "{err}"
    );
}

#[cfg(unix)]
#[test]
fn sigterm_stops_the_service_gracefully() {
    let mut service = Service::start("cli-term");
    let socket = std::path::PathBuf::from(&service.name);
    assert!(socket.exists());
    // SAFETY: plain kill(2) on our own child's pid.
    let rc = unsafe { libc::kill(service.child.id() as i32, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let status = service.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(!socket.exists(), "the socket file is removed on shutdown");
}

/// The value of `"key":` in bench's one-line JSON object.
fn json_number(json: &str, key: &str) -> f64 {
    let start = json
        .find(&format!("\"{key}\":"))
        .unwrap_or_else(|| panic!("no {key} in {json}"));
    let rest = &json[start + key.len() + 3..];
    let end = rest.find([',', '}']).unwrap();
    rest[..end].parse().unwrap()
}

#[test]
fn bench_with_its_own_server_prints_json_last() {
    let output = Command::new(BIN)
        .args(["bench", "--clients", "2", "--inflight", "3", "--size", "16"])
        .args(["--requests", "300", "--json"])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let out = stdout(&output);
    let json = out.lines().last().unwrap();
    for key in [
        "requests_per_sec",
        "mb_per_sec",
        "p50_us",
        "p99_us",
        "p999_us",
    ] {
        assert!(json_number(json, key) >= 0.0, "{key}");
    }
    assert_eq!(json_number(json, "requests"), 300.0, "{json}");
    assert_eq!(json_number(json, "errors"), 0.0, "{json}");
    assert!(json_number(json, "p50_us") <= json_number(json, "p999_us"));
}

#[test]
fn bench_loads_a_running_service() {
    let service = Service::start("cli-bench");
    let out = stdout(&service.run(&["bench", "--requests", "100", "--json"]));
    let json = out.lines().last().unwrap();
    assert_eq!(json_number(json, "requests"), 100.0, "{json}");
    assert_eq!(json_number(json, "errors"), 0.0, "{json}");
}

/// A rogue server (tests/common/rogue.rs) on a runtime of its own, and its
/// name for `--name`.
fn rogue(test: &str, name: &str, behaviour: rogue::Behaviour) -> (tokio::runtime::Runtime, String) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let endpoint = unique_endpoint(test);
    let address = endpoint.address().to_string_lossy().into_owned();
    let server = {
        let _context = runtime.enter();
        rogue::Rogue::start(endpoint, name, behaviour)
    };
    // It serves as long as the runtime runs.
    std::mem::forget(server);
    (runtime, address)
}

/// Runs `pipesvc ARGS` to completion within the hang guard.
fn output_within_guard(args: &[&str]) -> Output {
    let mut command = Command::new(BIN);
    command.args(args).env("RUST_LOG", "off");
    output_within(command, common::HANG_GUARD)
        .unwrap_or_else(|e| panic!("`pipesvc {}`: {e}", args.join(" ")))
}

#[test]
fn call_ping_and_status_give_up_on_a_silent_server_at_their_timeout() {
    for behaviour in [
        rogue::Behaviour::Silent,
        rogue::Behaviour::HalfFrame,
        rogue::Behaviour::UnknownIds,
        rogue::Behaviour::NotifyFlood((8 << 20) - 16),
    ] {
        let (_runtime, name) = rogue("cli-rogue", "rogue", behaviour.clone());
        for (command, what) in [
            (
                &["call", "secret"][..],
                "waiting for the answer to the request",
            ),
            (&["ping"][..], "waiting for the answer to a PING"),
            (&["status"][..], "waiting for the answer to STATUS"),
        ] {
            let mut args = command.to_vec();
            args.extend(["--name", &name, "--timeout", "0.5"]);
            let err = failure(&args);
            assert!(
                err.contains(&format!("timed out after 500ms {what}")),
                "{behaviour:?} {command:?}: {err}"
            );
        }
    }
}

#[test]
fn server_text_is_printed_escaped() {
    let (_runtime, name) = rogue("cli-escapes", rogue::ESCAPES, rogue::Behaviour::EscapeError);
    let output = output_within_guard(&["ping", "--name", &name, "--timeout", "0.5", "-c", "1"]);
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(out.contains("rogue\\u{1b}[2J"), "{out}");
    let err = output_within_guard(&["call", "--name", &name, "x"]);
    assert!(!err.status.success());
    let text = String::from_utf8_lossy(&err.stderr);
    assert!(
        text.contains("service error (1000): rogue\\u{1b}[2J"),
        "{text}"
    );
    for shown in [&*out, &*text] {
        let controls: Vec<char> = shown
            .chars()
            .filter(|c| c.is_control() && *c != '\n')
            .collect();
        assert!(controls.is_empty(), "{controls:?} in {shown:?}");
    }
}

#[test]
fn methods_lists_the_typed_methods_and_json_has_their_schemas() {
    let service = Service::start("cli-methods");
    let human = stdout(&service.run(&["methods"]));
    let first = human.lines().next().unwrap_or("");
    assert!(first.starts_with("pipesvc "), "{human}");
    assert!(first.contains("protocol 2"), "{human}");
    for method in ["echo", "sleep", "whoami"] {
        assert!(
            human.lines().any(|l| l.trim_start().starts_with(method)),
            "{method} missing: {human}"
        );
    }
    let json = stdout(&service.run(&["methods", "--json"]));
    // Not a terminal: one line.
    assert_eq!(json.lines().count(), 1, "{json}");
    let description: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(description["protocol"], 2);
    let methods = description["methods"].as_array().unwrap();
    let sleep = methods.iter().find(|m| m["name"] == "sleep").unwrap();
    assert!(sleep["doc"].as_str().unwrap().len() > 5, "{sleep}");
    assert!(
        sleep["request"]["properties"]["ms"].is_object(),
        "the params schema names the field ms: {sleep}"
    );
    assert!(sleep.get("response").is_some(), "{sleep}");
}

#[test]
fn call_method_prints_the_json_result_and_exits_by_outcome() {
    let service = Service::start("cli-typed-call");
    let echoed = stdout(&service.run(&["call", "--method", "echo", r#"{"a":[1,"zwölf"]}"#]));
    assert_eq!(echoed, "{\"a\":[1,\"zwölf\"]}\n");
    let slept = stdout(&service.run(&["call", "--method", "sleep", r#"{"ms":1}"#]));
    assert_eq!(slept, "null\n");
    let me = stdout(&service.run(&["call", "--method", "whoami"]));
    let me: serde_json::Value = serde_json::from_str(&me).unwrap();
    // The caller is the `pipesvc call` process: a pid, not this test's.
    assert!(me["pid"].as_u64().is_some_and(|pid| pid != 0), "{me}");
    #[cfg(unix)]
    assert_eq!(me["uid"], unsafe { libc::geteuid() }, "{me}");

    // The service answers with an error: exit 1, its code and message.
    let unknown = service.run(&["call", "--method", "nope", "{}"]);
    assert_eq!(unknown.status.code(), Some(1), "{unknown:?}");
    let err = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        err.contains("12") && err.contains("unknown method"),
        "{err}"
    );
    assert!(err.contains("nope"), "{err}");
    let bad = service.run(&["call", "--method", "sleep", r#"{"ms":"soon"}"#]);
    assert_eq!(bad.status.code(), Some(1), "{bad:?}");
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("bad request") && err.contains("ms"), "{err}");
    // The deadline travels with the call: the server stops the sleep.
    let late = service.run(&[
        "call",
        "--timeout",
        "0.2",
        "--method",
        "sleep",
        r#"{"ms":60000}"#,
    ]);
    assert_eq!(late.status.code(), Some(1), "{late:?}");
    let err = String::from_utf8_lossy(&late.stderr);
    assert!(err.contains("timed out"), "{err}");

    // The call cannot be made: exit 2.
    let not_json = service.run(&["call", "--method", "echo", "{oops"]);
    assert_eq!(not_json.status.code(), Some(2), "{not_json:?}");
    let nobody = Command::new(BIN)
        .args(["call", "--connect-timeout", "0.1", "--method", "echo"])
        .args(["--name", "cli-typed-call-nobody-here"])
        .output()
        .unwrap();
    assert_eq!(nobody.status.code(), Some(2), "{nobody:?}");

    let json = stdout(&service.run(&["status", "--json"]));
    assert_eq!(json_number(&json, "requests_timed_out"), 1.0, "{json}");
    assert_eq!(json_number(&json, "requests_cancelled"), 0.0, "{json}");
}
