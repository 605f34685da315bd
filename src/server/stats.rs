//! The server's counters, reported by STATUS and [`ServerHandle::status`].
//!
//! Connections count in a [`Tally`] of their own and add it to the shared
//! counters when they have nothing else to do (and when they close), so
//! that the hot path touches no shared cache line per frame.
//!
//! [`ServerHandle::status`]: super::ServerHandle::status

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use super::lock;
use crate::protocol::{ErrorCode, ErrorPayload, Frame, Kind, Status};

#[derive(Debug)]
pub(super) struct Stats {
    started: Instant,
    requests: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    errors: Mutex<BTreeMap<u16, u64>>,
    /// Requests answered ERROR `cancelled` / `timed out` (not connections).
    cancelled: AtomicU64,
    timed_out: AtomicU64,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            started: Instant::now(),
            requests: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            errors: Mutex::default(),
            cancelled: AtomicU64::new(0),
            timed_out: AtomicU64::new(0),
        }
    }
}

/// One connection's counts since it last added them to [`Stats`].
#[derive(Debug, Default)]
pub(super) struct Tally {
    pub(super) requests: u64,
    pub(super) bytes_in: u64,
    pub(super) bytes_out: u64,
}

impl Tally {
    /// Counts a frame about to be sent (and, for an ERROR, its code).
    pub(super) fn sent(&mut self, frame: &Frame, stats: &Stats) {
        self.bytes_out += frame.wire_len() as u64;
        if frame.kind == Kind::Error {
            if let Some(error) = ErrorPayload::decode(&frame.payload) {
                stats.error(error.code);
                // An ERROR with an id answers a request; id 0 is about the
                // connection (a handshake that timed out is not a request).
                if frame.id != 0 {
                    stats.request_ended(error.code);
                }
            }
        }
    }
}

impl Stats {
    /// Adds `tally` to the shared counters and empties it.
    pub(super) fn publish(&self, tally: &mut Tally) {
        for (counter, n) in [
            (&self.requests, tally.requests),
            (&self.bytes_in, tally.bytes_in),
            (&self.bytes_out, tally.bytes_out),
        ] {
            if n > 0 {
                counter.fetch_add(n, Ordering::Relaxed);
            }
        }
        *tally = Tally::default();
    }

    /// Counts one ERROR frame sent with `code`.
    pub(super) fn error(&self, code: ErrorCode) {
        let mut errors = lock(&self.errors);
        *errors.entry(code.0).or_default() += 1;
    }

    /// Counts a request answered with ERROR `code`, if it was cancelled or
    /// stopped at a deadline.
    fn request_ended(&self, code: ErrorCode) {
        let counter = match code {
            ErrorCode::CANCELLED => &self.cancelled,
            ErrorCode::TIMED_OUT => &self.timed_out,
            _ => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now, with the connection figures the caller knows.
    pub(super) fn status(&self, connections_open: u64, connections_total: u64) -> Status {
        let errors = lock(&self.errors);
        Status {
            uptime: self.started.elapsed(),
            connections_open,
            connections_total,
            requests_served: self.requests.load(Ordering::Relaxed),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
            errors: errors.iter().map(|(&c, &n)| (ErrorCode(c), n)).collect(),
            requests_cancelled: self.cancelled.load(Ordering::Relaxed),
            requests_timed_out: self.timed_out.load(Ordering::Relaxed),
        }
    }
}
