//! `pipesvc call --method` on a streaming method and `pipesvc watch`,
//! against `pipesvc serve` (revision 2.2): one JSON line per item or
//! event, the exit status by outcome, and a closed stdout (`| head -3`)
//! ending the command at once.

mod common;
#[path = "common/serve.rs"]
mod serve;

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use serve::{ends_within_bound, Service};

#[test]
fn call_of_a_streaming_method_prints_one_json_line_per_item() {
    let service = Service::start("cli-stream-count");
    let output = service.run(&["call", "--method", "count", r#"{"n":3}"#]);
    assert!(output.status.success(), "{output:?}");
    // The result, null, is not printed after items.
    assert_eq!(String::from_utf8(output.stdout).unwrap(), "1\n2\n3\n");

    // A method that does not stream prints its result as before.
    let output = service.run(&["call", "--method", "echo", r#"{"a":1}"#]);
    assert_eq!(String::from_utf8(output.stdout).unwrap(), "{\"a\":1}\n");

    // Bad params: the service's error, exit status 1.
    let output = service.run(&["call", "--method", "count", r#"{"n":"x"}"#]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("bad request"), "{stderr}");
}

#[test]
fn a_closed_stdout_cancels_the_stream_and_ends_the_command_at_once() {
    let service = Service::start("cli-stream-head");
    // A million items, one every 10 ms: hours, unless stopped.
    let mut child = service
        .command(&[
            "call",
            "--method",
            "count",
            r#"{"n":1000000,"every_ms":10}"#,
            "--timeout",
            "3600",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run pipesvc call");
    // `head -3`: three lines read, then the pipe closed.
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    for _ in 0..3 {
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        lines.push(line);
    }
    assert_eq!(lines, ["1\n", "2\n", "3\n"]);
    drop(stdout);
    let output = ends_within_bound(child, "the command ends once its stdout is closed");
    assert!(output.status.success(), "{output:?}");
    assert!(output.stderr.is_empty(), "{output:?}");
}

/// Unix only: elsewhere the command notices at its next write.
#[cfg(unix)]
#[test]
fn a_closed_stdout_ends_the_command_without_waiting_for_the_next_item() {
    let service = Service::start("cli-stream-head-slow");
    // One item, then the next an hour later: closing stdout must end the
    // command now, not at that item's write.
    let mut child = service
        .command(&[
            "call",
            "--method",
            "count",
            r#"{"n":2,"every_ms":3600000}"#,
            "--timeout",
            "7200",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run pipesvc call");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "1\n");
    drop(stdout);
    let output = ends_within_bound(child, "the command ends once its stdout is closed");
    assert!(output.status.success(), "{output:?}");
    assert!(output.stderr.is_empty(), "{output:?}");
}

#[test]
fn watch_prints_events_one_json_line_each_and_stops_after_count() {
    let service = Service::start("cli-watch-ticks");
    // `ticks` comes once a second: two take about two seconds.
    let output = service.run(&["watch", "ticks", "--count", "2"]);
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout.clone()).unwrap();
    let ticks: Vec<u64> = stdout
        .lines()
        .map(|line| line.parse().expect("a number per line"))
        .collect();
    assert_eq!(ticks.len(), 2, "{stdout}");
    assert!(ticks[0] < ticks[1], "{ticks:?}");
    assert!(output.stderr.is_empty(), "{output:?}");

    // A topic the service lacks: its error, exit status 1.
    let output = service.run(&["watch", "nope"]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unknown method"), "{stderr}");
}

#[test]
fn watch_with_a_closed_stdout_unsubscribes_and_ends() {
    let service = Service::start("cli-watch-head");
    let mut child = service
        .command(&["watch", "ticks"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run pipesvc watch");
    // `head -1`: one line, then the pipe closed.
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(line.trim().parse::<u64>().is_ok(), "{line:?}");
    drop(stdout);
    // It notices at once (not at the next event's write) and ends.
    let output = ends_within_bound(child, "the command ends once its stdout is closed");
    assert!(output.status.success(), "{output:?}");
    assert!(output.stderr.is_empty(), "{output:?}");
}
