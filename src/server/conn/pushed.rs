//! What handlers and broadcasts push to the connection (NOTIFYs from
//! `ConnectionContext::notify` and `ServerHandle::broadcast`) and its room
//! in bytes (`max_output_bytes`): a frame takes permits of the
//! connection's [`OutputLimit`] before it is queued, and they are given
//! back once it is written.

use std::collections::VecDeque;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use tokio::sync::mpsc;

use super::super::connection_context::OutputLimit;
use super::wire::Wire;
use crate::frame_io::COALESCE_LIMIT;
use crate::protocol::Frame;
use crate::transport::ServerIo;

/// The queue of pushed frames, and those of them in the outbox that still
/// hold their room.
pub(super) struct Pushed {
    queue: mpsc::UnboundedReceiver<Frame>,
    /// Room for NOTIFYs: what queued frames took is given back once they
    /// are written.
    pub(super) output: Arc<OutputLimit>,
    /// NOTIFYs in the outbox that hold permits: where each ends in the
    /// stream, its permits and its length.
    charged: VecDeque<(u64, u32, usize)>,
    /// Bytes of those NOTIFYs (whole frames, the one being written too).
    charged_bytes: usize,
    /// Their permits.
    charged_permits: usize,
}

impl Pushed {
    pub(super) fn new(queue: mpsc::UnboundedReceiver<Frame>, output: Arc<OutputLimit>) -> Pushed {
        Pushed {
            queue,
            output,
            charged: VecDeque::new(),
            charged_bytes: 0,
            charged_permits: 0,
        }
    }

    /// Bytes of pushed frames in the outbox, unwritten.
    pub(super) fn charged_bytes(&self) -> usize {
        self.charged_bytes
    }

    /// Moves the frames handlers and broadcasts queued into the outbox
    /// (they hold their room already) while the NOTIFYs there are under
    /// [`COALESCE_LIMIT`], so that a PONG or an answer is never behind more
    /// than that; registers for more. Whether the queue is empty.
    pub(super) fn poll_into<S: ServerIo>(
        &mut self,
        wire: &mut Wire<S>,
        cx: &mut TaskContext<'_>,
    ) -> bool {
        use tokio::sync::mpsc::error::TryRecvError;
        while self.charged_bytes < COALESCE_LIMIT {
            // `try_recv` first: unlike `poll_recv` it is not held back by
            // tokio's budget, and a frame a handler queued before its
            // answer must not be left behind it.
            match self.queue.try_recv() {
                Ok(frame) => self.push_charged(wire, frame),
                Err(TryRecvError::Disconnected) => return true,
                Err(TryRecvError::Empty) => match self.queue.poll_recv(cx) {
                    Poll::Ready(Some(frame)) => self.push_charged(wire, frame),
                    Poll::Ready(None) | Poll::Pending => return true,
                },
            }
        }
        false
    }

    /// Bytes (permits) of NOTIFYs sent to this connection and not yet in
    /// its outbox: the write deadline covers them too.
    pub(super) fn unmoved_bytes(&self) -> usize {
        let taken = self.output.limit - self.output.room.available_permits();
        taken.saturating_sub(self.charged_permits)
    }

    /// Like [`Pushed::poll_into`], without waiting for more.
    pub(super) fn take_into<S: ServerIo>(&mut self, wire: &mut Wire<S>) {
        while let Ok(frame) = self.queue.try_recv() {
            self.push_charged(wire, frame);
        }
    }

    fn push_charged<S: ServerIo>(&mut self, wire: &mut Wire<S>, frame: Frame) {
        let (permits, len) = (self.output.charge(&frame), frame.wire_len());
        wire.push(frame);
        let end = wire.outbox.written() + wire.outbox.len() as u64;
        self.charged.push_back((end, permits, len));
        self.charged_bytes += len;
        self.charged_permits += permits as usize;
    }

    /// Gives back the room of the NOTIFYs written up to stream position
    /// `written`.
    pub(super) fn release(&mut self, written: u64) {
        let mut released = 0;
        while let Some(&(end, permits, len)) = self.charged.front() {
            if end > written {
                break;
            }
            self.charged.pop_front();
            released += permits as usize;
            self.charged_bytes -= len;
        }
        self.charged_permits -= released;
        if released > 0 {
            self.output.room.add_permits(released);
        }
    }

    /// No more frames are taken: what is queued stays to be moved once
    /// more ([`Pushed::take_into`]).
    pub(super) fn close(&mut self) {
        self.queue.close();
    }

    /// No more frames are taken, and those queued and not yet in the
    /// outbox are dropped (a client cut off for being too slow: its
    /// backlog); their room is not given back, the connection is ending.
    /// What the outbox holds still goes out.
    pub(super) fn drop_backlog(&mut self) {
        self.queue.close();
        let mut dropped = 0usize;
        while let Ok(frame) = self.queue.try_recv() {
            dropped += frame.wire_len();
        }
        tracing::debug!(
            dropped,
            "dropped the NOTIFYs a client too slow had not taken"
        );
    }
}
