//! `pipesvc serve` as a child process, for the tests that run the binary as
//! a user would (`tests/cli.rs`, `tests/cli_streams.rs`).

#![allow(dead_code)] // each test binary uses a different subset

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output};
use std::sync::mpsc;
use std::time::Duration;

use pipesvc::testing::{output_within, stop_process, unique_endpoint, STOP_TIMEOUT};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_pipesvc");

/// Far more than any command of these tests needs; a hang fails the test.
pub const BOUND: Duration = Duration::from_secs(30);

/// `pipesvc serve`, waited for until it says it is listening; stopped
/// gracefully when dropped (no socket file is left behind).
pub struct Service {
    /// The `pipesvc serve` process.
    pub child: Child,
    /// The name it serves on (`--name`).
    pub name: String,
}

impl Service {
    /// Starts `pipesvc serve` on an endpoint of its own for `test`.
    pub fn start(test: &str) -> Service {
        let name = unique_endpoint(test)
            .address()
            .to_string_lossy()
            .into_owned();
        let mut child = Command::new(BIN)
            .args(["serve", "--name", &name])
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start pipesvc serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), format!("pipesvc listening on {name}"));
        Service { child, name }
    }

    /// `pipesvc ARGS --name NAME`, not started.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(BIN);
        command.args(args).args(["--name", &self.name]);
        command
    }

    /// Runs `pipesvc ARGS --name NAME` to its end, within [`BOUND`].
    pub fn run(&self, args: &[&str]) -> Output {
        output_within(self.command(args), BOUND).expect("pipesvc ends")
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        // Gracefully (SIGTERM on Unix): no socket file is left behind.
        let _ = stop_process(&mut self.child, STOP_TIMEOUT);
    }
}

/// Waits for `child` (whose pipes the test has taken what it wants from)
/// to end within [`BOUND`]; its output. `why` says what should have ended
/// it.
pub fn ends_within_bound(child: Child, why: &str) -> Output {
    let (done, ended) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    ended.recv_timeout(BOUND).expect(why).unwrap()
}
