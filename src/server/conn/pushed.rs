//! What handlers and broadcasts push to the connection (NOTIFYs from
//! `ConnectionContext::notify` and `ServerHandle::broadcast`) and its room
//! in bytes (`max_output_bytes`): a frame takes permits of the
//! connection's [`OutputLimit`] before it is queued, and they are given
//! back once it is written.

use std::collections::VecDeque;
use std::sync::Arc;
use std::task::Context as TaskContext;

use super::super::connection_context::OutputLimit;
use super::wire::Wire;
use crate::frame_io::COALESCE_LIMIT;
use crate::protocol::Frame;
use crate::transport::ServerIo;

/// The queue of pushed frames, and those of them in the outbox that still
/// hold their room.
pub(super) struct Pushed {
    /// Room for NOTIFYs and their queue: what queued frames took is given
    /// back once they are written.
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
    pub(super) fn new(output: Arc<OutputLimit>) -> Pushed {
        Pushed {
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
        registered: &mut bool,
    ) -> bool {
        while self.charged_bytes < COALESCE_LIMIT {
            let queue = &self.output.queue;
            let frame = match queue.pop() {
                Some(frame) => frame,
                // Registered earlier in this poll: a push since woke the
                // task (or found it woken already).
                None if *registered => return true,
                None => {
                    // Registered, then looked at once more: a push in
                    // between wakes the task.
                    queue.register(cx.waker());
                    *registered = true;
                    match queue.pop() {
                        Some(frame) => frame,
                        None => return true,
                    }
                }
            };
            self.push_charged(wire, frame);
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
        while let Some(frame) = self.output.queue.pop() {
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
        self.output.queue.close();
    }

    /// No more frames are taken, and those queued and not yet in the
    /// outbox are dropped (a client cut off for being too slow: its
    /// backlog); their room is not given back, the connection is ending.
    /// What the outbox holds still goes out.
    pub(super) fn drop_backlog(&mut self) {
        let dropped = self.output.queue.close_and_clear();
        tracing::debug!(
            dropped,
            "dropped the NOTIFYs a client too slow had not taken"
        );
    }
}

impl Drop for Pushed {
    /// The connection is gone: a handler's NOTIFY fails from now on, and
    /// what was queued is freed at once, not when the last context goes.
    fn drop(&mut self) {
        self.output.queue.close_and_clear();
    }
}
