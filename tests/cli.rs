//! The `pipesvc` binary, run as a user would.

mod common;
#[path = "common/rogue.rs"]
mod rogue;
#[path = "common/serve.rs"]
mod serve;

use std::process::{Command, Output, Stdio};

use common::unique_endpoint;
use pipesvc::testing::output_within;

use serve::{Service, BIN};

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
    // Revision 2.2's counts.
    for key in [
        "streams_open",
        "items_sent",
        "subscribers",
        "events_sent",
        "events_dropped",
    ] {
        assert!(json_number(&json, key) >= 0.0, "{key}: {json}");
    }
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

#[test]
fn bench_connect_opens_a_connection_per_request() {
    let service = Service::start("cli-bench-connect");
    let out = stdout(&service.run(&[
        "bench",
        "--connect",
        "--clients",
        "3",
        "--requests",
        "60",
        "--json",
    ]));
    let json = out.lines().last().unwrap();
    assert_eq!(json_number(json, "requests"), 60.0, "{json}");
    assert_eq!(json_number(json, "errors"), 0.0, "{json}");
    assert!(json_number(json, "connections_per_sec") > 0.0, "{json}");
    // The 60 connections and bench's first (which learns the encoding),
    // and status's own.
    let status = stdout(&service.run(&["status", "--json"]));
    assert_eq!(json_number(&status, "connections_total"), 62.0, "{status}");
}

#[test]
fn bench_connect_refuses_more_than_one_in_flight() {
    let output = Command::new(BIN)
        .args(["bench", "--connect", "--inflight", "2", "--requests", "1"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        err.contains("--inflight: must be 1 with --connect"),
        "{err}"
    );
}

#[test]
fn bench_method_makes_typed_calls() {
    let service = Service::start("cli-bench-method");
    let out = stdout(&service.run(&[
        "bench",
        "--method",
        "echo",
        "--params",
        r#"{"text": "hello"}"#,
        "--requests",
        "100",
        "--json",
    ]));
    let json = out.lines().last().unwrap();
    assert_eq!(json_number(json, "requests"), 100.0, "{json}");
    assert_eq!(json_number(json, "errors"), 0.0, "{json}");
    assert!(json.contains(r#""method":"echo""#), "{json}");
    // A method the service does not have: every call is refused by name.
    let output = service.run(&["bench", "--method", "nope", "--requests", "5"]);
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        err.contains("every request failed (5 of 5)") && err.contains("no method \"nope\""),
        "{err}"
    );
}

#[test]
fn bench_fails_when_every_request_fails() {
    // 9,000,000 bytes is over the 8 MiB frame limit: the client refuses
    // each request before sending it.
    let output = Command::new(BIN)
        .args(["bench", "--size", "9000000", "--requests", "3", "--json"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&output.stdout);
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(json_number(out.lines().last().unwrap(), "errors"), 3.0);
    assert!(
        !output.status.success(),
        "exit status 0 with every request failed: {err}"
    );
    assert!(
        err.contains("every request failed (3 of 3); the first: "),
        "{err}"
    );
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
    // Revision 2.2: a streaming method says which way it streams, and the
    // topics follow the methods with their policy.
    let count = human.lines().find(|l| l.trim_start().starts_with("count"));
    assert!(
        count.is_some_and(|l| l.contains("[server stream]")),
        "{human}"
    );
    let topics = human.lines().skip_while(|l| *l != "topics:");
    let ticks = topics.clone().find(|l| l.trim_start().starts_with("ticks"));
    assert!(
        ticks.is_some_and(|l| l.contains("[drop_oldest, queue 256]")),
        "{human}"
    );
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
        "1",
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

/// How a command ended: its exit code, the first [`KEPT`] bytes of its
/// stdout and how many it wrote in all, its stderr, and how long it ran.
struct Ended {
    code: Option<i32>,
    stdout: Vec<u8>,
    stdout_len: u64,
    stderr: String,
    elapsed: std::time::Duration,
}

/// Stdout kept by [`run_capped`]: more than any bounded output, and little
/// enough that a command writing without end cannot exhaust the test.
const KEPT: usize = 64 << 20;

/// Runs `pipesvc ARGS` to its end, as [`output_within_guard`] does, but
/// keeps at most [`KEPT`] bytes of its stdout (counting the rest): a client
/// that prints without bound must fail the test, not fill its memory. The
/// command is killed at the hang guard.
fn run_capped(args: &[&str]) -> Ended {
    use std::io::Read;
    let start = std::time::Instant::now();
    let mut child = Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "off")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run pipesvc");
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let (sent, stdout) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (mut kept, mut total, mut buf) = (Vec::new(), 0u64, vec![0u8; 1 << 16]);
        while let Ok(n @ 1..) = out.read(&mut buf) {
            total += n as u64;
            let room = KEPT.saturating_sub(kept.len()).min(n);
            kept.extend_from_slice(&buf[..room]);
        }
        let _ = sent.send((kept, total));
    });
    let (sent_err, stderr) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = err.read_to_end(&mut text);
        let _ = sent_err.send(text);
    });
    let deadline = start + common::HANG_GUARD;
    let left = || deadline.saturating_duration_since(std::time::Instant::now());
    let collected = stdout
        .recv_timeout(left())
        .and_then(|out| Ok((out, stderr.recv_timeout(left())?)));
    let Ok(((stdout, stdout_len), stderr)) = collected else {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "`pipesvc {}` still running at the hang guard",
            args.join(" ")
        );
    };
    let status = child.wait().unwrap();
    Ended {
        code: status.code(),
        stdout,
        stdout_len,
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        elapsed: start.elapsed(),
    }
}

impl Ended {
    fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// What it did, for a failing assertion.
    fn show(&self) -> String {
        let out = self.stdout_text();
        let cut = |s: &str| s.chars().take(2000).collect::<String>();
        format!(
            "exit {:?} after {:?}; stdout ({} bytes): {:?}; stderr: {:?}",
            self.code,
            self.elapsed,
            self.stdout_len,
            cut(&out),
            cut(&self.stderr)
        )
    }
}

/// Characters that must never reach a terminal raw from a server: controls
/// (C0 but the line feed ending each line, DEL, C1), bidirectional
/// controls, and invisible formatting characters.
fn hidden(c: char) -> bool {
    (c.is_control() && c != '\n')
        || matches!(c,
            '\u{ad}' | '\u{61c}' | '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}'
            | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206f}' | '\u{feff}')
}

fn assert_nothing_hidden(what: &str, shown: &str) {
    let raw: Vec<char> = shown.chars().filter(|&c| hidden(c)).collect();
    assert!(raw.is_empty(), "{what}: {raw:?} printed raw");
}

/// Server text with every kind of character a terminal must not get raw:
/// an escape sequence, C1 controls, DEL, bidi overrides and isolates,
/// zero-width and invisible formatting characters, a line separator.
const HOSTILE: &str =
    "a\u{1b}[2J\u{85}\u{9b}\u{7f}\u{202e}\u{2066}\u{200b}\u{feff}\u{ad}\u{2028}\rz";

/// The escapes [`HOSTILE`] is shown with.
const HOSTILE_SHOWN: &str =
    "a\\u{1b}[2J\\u{85}\\u{9b}\\u{7f}\\u{202e}\\u{2066}\\u{200b}\\u{feff}\\u{ad}\\u{2028}\\rz";

/// A DESCRIBE answer: a service with `methods`, as JSON bytes.
fn description(service: &str, methods: Vec<serde_json::Value>) -> bytes::Bytes {
    let description = serde_json::json!({
        "service": service,
        "version": "1.0",
        "protocol": 2,
        "encodings": ["json"],
        "methods": methods,
    });
    serde_json::to_vec(&description).unwrap().into()
}

fn method(name: &str, doc: &str) -> serde_json::Value {
    serde_json::json!({ "name": name, "doc": doc })
}

/// `pipesvc methods ARGS` against a rogue answering DESCRIBE with
/// `answer`.
fn methods_of(test: &str, answer: bytes::Bytes, args: &[&str]) -> Ended {
    let (_runtime, name) = rogue(test, "rogue", rogue::Behaviour::Answer(answer));
    let mut all = vec!["methods", "--name", &name, "--timeout", "20"];
    all.extend(args);
    run_capped(&all)
}

#[test]
fn methods_cuts_long_names_and_docs_with_a_marker() {
    // Over 65,535 bytes, the width of the name column panicked the
    // formatter.
    let long = "n".repeat(65_536);
    let ended = methods_of(
        "cli-long-name",
        description("rogue", vec![method(&long, "first"), method("b", "second")]),
        &[],
    );
    eprintln!("65,536-byte name: {}", ended.show());
    assert_eq!(ended.code, Some(0), "{}", ended.show());
    let out = ended.stdout_text();
    assert!(out.contains("more bytes)"), "{}", ended.show());
    assert!(out.lines().all(|l| l.len() < 1024), "{}", ended.show());
    assert!(out.contains("second"), "{}", ended.show());

    // At 65,535 bytes every line was padded to it: 1.6 GB for a
    // description of 200 KiB. A doc's first line is cut too.
    let mut methods = vec![method(&"n".repeat(65_535), &"d".repeat(1 << 20))];
    methods.extend((0..20_000).map(|i| method(&format!("m{i}"), "")));
    let ended = methods_of("cli-padded-names", description("rogue", methods), &[]);
    eprintln!("65,535-byte name and 20,000 methods: {}", ended.show());
    assert_eq!(ended.code, Some(0), "{}", ended.show());
    let out = ended.stdout_text();
    assert_eq!(out.lines().count(), 1 + 20_001, "{}", ended.show());
    assert!(out.lines().all(|l| l.len() < 1024), "{}", ended.show());
    assert!(out.contains("(1048376 more bytes)"), "{}", ended.show());
}

#[test]
fn methods_output_is_bounded_as_a_whole() {
    // An 8 MiB description of 2.7 million empty methods, padded to a long
    // name's column: past the output limit the listing is cut, with a
    // marker, and the command fails saying so.
    let long = method(&"n".repeat(100), "");
    let mut methods = vec![long];
    methods.extend(std::iter::repeat_n(serde_json::json!({}), 2_700_000));
    let answer = description("rogue", methods);
    assert!(answer.len() < (8 << 20) - 16, "{} bytes", answer.len());
    let ended = methods_of("cli-many-methods", answer, &[]);
    eprintln!("2.7 M methods: {}", ended.show());
    assert_ne!(ended.code, Some(0), "{}", ended.show());
    assert!(ended.stdout_len <= (16 << 20) + 1024, "{}", ended.show());
    assert!(
        ended.stderr.contains("output cut at 16 MiB"),
        "{}",
        ended.show()
    );

    // JSON cannot be cut: one that would not fit is not printed at all.
    // 7 MiB of DEL, each shown as \u007f: 42 MiB.
    let doc = "\u{7f}".repeat(7 << 20);
    let answer = description("rogue", vec![method("del", &doc)]);
    let ended = methods_of("cli-json-too-large", answer, &["--json"]);
    eprintln!("7 MiB of DEL as JSON: {}", ended.show());
    assert_ne!(ended.code, Some(0), "{}", ended.show());
    assert_eq!(ended.stdout_len, 0, "{}", ended.show());
    assert!(ended.stderr.contains("16 MiB"), "{}", ended.show());
}

#[test]
fn methods_escapes_server_text_and_its_json_stays_valid() {
    let methods = vec![
        method(HOSTILE, &format!("{HOSTILE}\nsecond line")),
        method("plain", "a doc"),
    ];
    let answer = description(HOSTILE, methods);
    let ended = methods_of("cli-methods-escapes", answer.clone(), &[]);
    assert_eq!(ended.code, Some(0), "{}", ended.show());
    let out = ended.stdout_text();
    assert_nothing_hidden("methods", &out);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with(HOSTILE_SHOWN), "{out}");
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        [HOSTILE_SHOWN, HOSTILE_SHOWN],
        "{out}"
    );

    let ended = methods_of("cli-methods-json-escapes", answer.clone(), &["--json"]);
    assert_eq!(ended.code, Some(0), "{}", ended.show());
    let out = ended.stdout_text();
    assert_nothing_hidden("methods --json", &out);
    let printed: serde_json::Value = serde_json::from_str(&out).expect("valid JSON");
    let sent: serde_json::Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(printed, sent, "escaped, nothing lost");
    assert!(out.contains("\\u202e") && out.contains("\\u0085"), "{out}");
}

#[test]
fn call_prints_server_text_escaped() {
    // A typed call's result: valid JSON, nothing lost, nothing raw.
    let result = serde_json::json!({ "text": HOSTILE, HOSTILE: [HOSTILE] });
    let answer = serde_json::to_vec(&result).unwrap();
    let (_runtime, name) = rogue(
        "cli-call-escapes",
        "rogue",
        rogue::Behaviour::Answer(answer.into()),
    );
    let ended = run_capped(&["call", "--name", &name, "--method", "m", "{}"]);
    assert_eq!(ended.code, Some(0), "{}", ended.show());
    let out = ended.stdout_text();
    assert_nothing_hidden("call --method", &out);
    let printed: serde_json::Value = serde_json::from_str(&out).expect("valid JSON");
    assert_eq!(printed, result);

    // A byte response: escaped but for line feeds and tabs, bytes that are
    // not UTF-8 shown as \xNN; --raw writes it unchanged.
    let response: &[u8] = b"ok\x1b[2J\xc2\x85\xe2\x80\xae\x7f\xff\nline 2\tz";
    let (_runtime, name) = rogue(
        "cli-bytes-escapes",
        "rogue",
        rogue::Behaviour::Answer(response.into()),
    );
    let ended = run_capped(&["call", "--name", &name, "x"]);
    assert_eq!(ended.code, Some(0), "{}", ended.show());
    assert_eq!(
        ended.stdout_text(),
        "ok\\u{1b}[2J\\u{85}\\u{202e}\\u{7f}\\xff\nline 2\tz\n",
        "{}",
        ended.show()
    );
    let ended = run_capped(&["call", "--raw", "--name", &name, "x"]);
    assert_eq!(ended.code, Some(0), "{}", ended.show());
    assert_eq!(ended.stdout, response, "{}", ended.show());
}

#[test]
fn ping_status_and_errors_show_server_text_escaped_and_cut() {
    // A 100 KB server name full of escapes, and a 1 MiB ERROR message.
    let name = format!("{HOSTILE}{}", "n".repeat(100_000));
    let status = pipesvc::protocol::Status::default().encode();
    let (_runtime, endpoint) = rogue(
        "cli-long-server-name",
        &name,
        rogue::Behaviour::Answer(status),
    );
    for command in [&["ping", "-c", "1"][..], &["status"]] {
        let mut args = command.to_vec();
        args.extend(["--name", &endpoint]);
        let ended = run_capped(&args);
        assert_eq!(ended.code, Some(0), "{command:?}: {}", ended.show());
        let out = ended.stdout_text();
        assert_nothing_hidden(command[0], &out);
        assert!(out.contains(HOSTILE_SHOWN), "{command:?}: {}", ended.show());
        assert!(out.contains("more bytes)"), "{command:?}: {}", ended.show());
        assert!(ended.stdout_len < 4096, "{command:?}: {}", ended.show());
    }

    let message = format!("{HOSTILE}{}", "m".repeat(1 << 20));
    let (_runtime, endpoint) = rogue(
        "cli-long-error",
        "rogue",
        rogue::Behaviour::ErrorMessage(message),
    );
    for command in [&["call", "x"][..], &["call", "--method", "m"]] {
        let mut args = command.to_vec();
        args.extend(["--name", &endpoint]);
        let ended = run_capped(&args);
        assert_eq!(ended.code, Some(1), "{command:?}: {}", ended.show());
        assert_nothing_hidden("stderr", ended.stderr.trim_end());
        assert!(
            ended.stderr.contains(HOSTILE_SHOWN),
            "{command:?}: {}",
            ended.show()
        );
        assert!(
            ended.stderr.contains("more bytes)"),
            "{command:?}: {}",
            ended.show()
        );
        assert!(ended.stderr.len() < 8192, "{command:?}: {}", ended.show());
    }
}

/// The client commands, each as a user would type it (`call` twice: bytes
/// and typed).
const CLIENT_COMMANDS: [&[&str]; 5] = [
    &["call", "x"],
    &["call", "--method", "echo", "{}"],
    &["ping"],
    &["status"],
    &["methods"],
];

#[test]
fn timeout_bounds_a_withheld_or_dribbled_handshake() {
    for (behaviour, waiting_for) in [
        (
            rogue::Behaviour::WithholdHelloReply,
            "timed out after 1s waiting for the server's HELLO reply",
        ),
        // Each HELLO dribbled over 0.7 s, a byte at a time.
        (
            rogue::Behaviour::DribbleHandshake(std::time::Duration::from_millis(700)),
            "timed out after 1s waiting for the server's HELLO",
        ),
    ] {
        let (_runtime, name) = rogue("cli-slow-handshake", "rogue", behaviour.clone());
        for command in CLIENT_COMMANDS {
            let mut args = command.to_vec();
            args.extend(["--name", &name, "--connect-timeout", "2", "--timeout", "1"]);
            let ended = run_capped(&args);
            eprintln!("{behaviour:?} {command:?}: {}", ended.show());
            assert_ne!(ended.code, Some(0), "{command:?}: {}", ended.show());
            assert!(
                ended.stderr.contains(waiting_for),
                "{behaviour:?} {command:?}: {}",
                ended.show()
            );
        }
    }
}

#[test]
fn timeout_bounds_every_wait_on_a_server_that_does_not_read() {
    let (_runtime, name) = rogue("cli-no-reading", "rogue", rogue::Behaviour::NoReading);
    // Under Windows' 32,767-character command line.
    let message = "x".repeat(20_000);
    for (command, waiting_for) in [
        (
            &["call", &message][..],
            "waiting for the answer to the request",
        ),
        (
            &["call", "--method", "echo", "{}"],
            "waiting for the answer to the call",
        ),
        (&["ping"], "waiting for the answer to a PING"),
        (&["status"], "waiting for the answer to STATUS"),
        (&["methods"], "waiting for the answer to DESCRIBE"),
    ] {
        let mut args = command.to_vec();
        args.extend(["--name", &name, "--timeout", "1"]);
        let ended = run_capped(&args);
        eprintln!("{:?}: {}", &command[..1], ended.show());
        assert_ne!(ended.code, Some(0), "{}", ended.show());
        assert!(
            ended
                .stderr
                .contains(&format!("timed out after 1s {waiting_for}")),
            "{}",
            ended.show()
        );
    }
    // A 4 MB request cannot be written at all: the write waits, and the
    // deadline ends it, and the close after it.
    let ended = run_capped(&[
        "bench",
        "--name",
        &name,
        "--clients",
        "1",
        "--size",
        "4000000",
        "--requests",
        "1",
        "--timeout",
        "1",
        "--json",
    ]);
    eprintln!("bench: {}", ended.show());
    // Its one request failed, so every request did: exit 1, saying why,
    // with the figures still printed.
    assert_eq!(ended.code, Some(1), "{}", ended.show());
    assert!(
        ended
            .stderr
            .contains("timed out after 1s waiting for the answer to the request"),
        "{}",
        ended.show()
    );
    let out = ended.stdout_text();
    let json = out.lines().last().unwrap_or("");
    assert_eq!(json_number(json, "errors"), 1.0, "{}", ended.show());
}
