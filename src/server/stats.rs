//! The server's counters, reported by STATUS and [`ServerHandle::status`].
//!
//! Connections count in a [`Tally`] of their own (ERRORs by code
//! included) and add it to the shared counters once per turn of their
//! event loop, before what they counted is written (and when they close),
//! so that the hot path touches no shared cache line, and takes no lock,
//! per frame.
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
    /// ERROR frames sent, by code: a short list (a connection sends few
    /// distinct codes), kept (emptied, not freed) from one publish to the
    /// next.
    errors: Vec<(u16, u64)>,
    /// Requests answered ERROR `cancelled` / `timed out`.
    cancelled: u64,
    timed_out: u64,
}

impl Tally {
    /// Counts a frame about to be sent (and, for an ERROR, its code).
    pub(super) fn sent(&mut self, frame: &Frame) {
        self.bytes_out += frame.wire_len() as u64;
        if frame.kind != Kind::Error {
            return;
        }
        let Some(error) = ErrorPayload::decode(&frame.payload) else {
            return;
        };
        match self
            .errors
            .iter_mut()
            .find(|(code, _)| *code == error.code.0)
        {
            Some((_, n)) => *n += 1,
            None => self.errors.push((error.code.0, 1)),
        }
        // An ERROR with an id answers a request; id 0 is about the
        // connection (a handshake that timed out is not a request).
        if frame.id != 0 {
            match error.code {
                ErrorCode::CANCELLED => self.cancelled += 1,
                ErrorCode::TIMED_OUT => self.timed_out += 1,
                _ => {}
            }
        }
    }
}

impl Stats {
    /// Adds `tally` to the shared counters and empties it. Errors take the
    /// lock only when there are some.
    pub(super) fn publish(&self, tally: &mut Tally) {
        for (counter, n) in [
            (&self.requests, &mut tally.requests),
            (&self.bytes_in, &mut tally.bytes_in),
            (&self.bytes_out, &mut tally.bytes_out),
            (&self.cancelled, &mut tally.cancelled),
            (&self.timed_out, &mut tally.timed_out),
        ] {
            if *n > 0 {
                counter.fetch_add(std::mem::take(n), Ordering::Relaxed);
            }
        }
        if !tally.errors.is_empty() {
            let mut errors = lock(&self.errors);
            for (code, n) in tally.errors.drain(..) {
                *errors.entry(code).or_default() += n;
            }
        }
    }

    /// Counts one ERROR frame sent with `code` outside a connection's
    /// tally (a refused client's).
    pub(super) fn error(&self, code: ErrorCode) {
        let mut errors = lock(&self.errors);
        *errors.entry(code.0).or_default() += 1;
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
            ..Status::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_counted_per_connection_and_published_together() {
        let stats = Stats::default();
        let mut tally = Tally::default();
        for (id, code) in [
            (1, ErrorCode::CANCELLED),
            (2, ErrorCode::CANCELLED),
            (3, ErrorCode::TIMED_OUT),
            (0, ErrorCode::TIMED_OUT),
        ] {
            tally.sent(&Frame::error(id, code, "x"));
        }
        // Sending touched nothing shared: no lock, no atomic.
        assert!(stats.status(0, 0).errors.is_empty());
        stats.publish(&mut tally);
        let status = stats.status(0, 0);
        let errors: Vec<_> = status.errors.iter().map(|(c, n)| (c.0, *n)).collect();
        assert_eq!(errors, [(8, 2), (14, 2)]);
        assert_eq!(status.requests_cancelled, 2);
        // The ERROR for the connection (id 0) answers no request.
        assert_eq!(status.requests_timed_out, 1);
        assert!(tally.errors.is_empty() && tally.errors.capacity() > 0);
        stats.publish(&mut tally);
        assert_eq!(stats.status(0, 0).requests_cancelled, 2, "published once");
    }
}
