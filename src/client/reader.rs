//! The client's reader task: routes each frame from the server.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::AsyncRead;
use tokio::sync::mpsc;
use tokio_util::codec::FramedRead;

use super::pending::Pending;
use super::writer::Writer;
use crate::error::Error;
use crate::protocol::{ErrorPayload, Frame, FrameCodec, Kind};

/// What the reader task shares with the client handles.
#[derive(Debug)]
pub(super) struct Routes {
    pub(super) pending: Arc<Pending>,
    pub(super) notifications: mpsc::Sender<Bytes>,
    pub(super) dropped_notifications: Arc<AtomicU64>,
    pub(super) writer: Arc<Writer>,
}

/// Reads until the connection ends, then fails whatever is still waiting.
pub(super) async fn read_frames<R>(mut reader: FramedRead<R, FrameCodec>, routes: Routes)
where
    R: AsyncRead + Unpin,
{
    let reason = loop {
        let frame = match reader.next().await {
            None => break "the server closed the connection".to_owned(),
            Some(Err(e)) => break format!("cannot read from the server: {e}"),
            Some(Ok(frame)) => frame,
        };
        if let Err(reason) = routes.route(frame) {
            break reason;
        }
    };
    tracing::debug!(reason, "connection ended");
    routes.pending.fail_all(reason);
}

impl Routes {
    /// Handles one frame; `Err` with a reason ends the connection.
    fn route(&self, frame: Frame) -> Result<(), String> {
        match frame.kind {
            Kind::Response | Kind::Pong => {
                self.pending.complete(frame.id, Ok(frame.payload));
            }
            Kind::Error => {
                let error = ErrorPayload::decode(&frame.payload)
                    .ok_or_else(|| "the server sent an ERROR frame without a code".to_owned())?;
                if frame.id == 0 {
                    return Err(format!("server error {}: {}", error.code, error.message));
                }
                let remote = Error::Remote {
                    code: error.code,
                    message: error.message,
                };
                self.pending.complete(frame.id, Err(remote));
            }
            Kind::Notify => self.deliver_notification(frame.payload),
            Kind::Goodbye => {
                let reason = String::from_utf8_lossy(&frame.payload);
                tracing::debug!(%reason, "server said goodbye");
                self.pending
                    .refuse_new(format!("the server said goodbye: {reason}"));
            }
            Kind::Ping => {
                // Answer without waiting: a full queue means the PONG would
                // be late anyway, and the reader must keep reading.
                self.writer
                    .queue(Frame::new(Kind::Pong, frame.id, frame.payload));
            }
            Kind::Hello | Kind::Request | Kind::Status => {
                return Err(format!(
                    "protocol error: the server sent {:?} after the handshake",
                    frame.kind
                ))
            }
        }
        Ok(())
    }

    /// Queues a notification; when the queue is full it is dropped and
    /// counted, so that an unread notification stream never stalls responses.
    fn deliver_notification(&self, payload: Bytes) {
        match self.notifications.try_send(payload) {
            Ok(()) => {}
            // Nobody listens: nothing is lost that anyone asked for.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                let dropped = self.dropped_notifications.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::warn!(dropped, "notification queue full; dropping a notification");
            }
        }
    }
}
