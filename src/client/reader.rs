//! The client's reader task: routes each frame from the server.

use std::sync::Arc;

use futures_util::StreamExt;
use tokio::io::AsyncRead;
use tokio_util::codec::FramedRead;

use super::notifications::Queue;
use super::pending::Pending;
use super::writer::Writer;
use crate::error::{CloseReason, Error};
use crate::protocol::{CodecError, ErrorPayload, Frame, FrameCodec, Kind};

/// What the reader task shares with the client handles.
#[derive(Debug)]
pub(super) struct Routes {
    pub(super) pending: Arc<Pending>,
    pub(super) notifications: Arc<Queue>,
    pub(super) writer: Arc<Writer>,
}

/// Reads until the connection ends, then fails whatever is still waiting.
/// Frames over the codec's limit (this client's `max_frame_len`, or less
/// if the server announced less) are refused from their length field,
/// before their payload is read.
pub(super) async fn read_frames<R>(mut reader: FramedRead<R, FrameCodec>, routes: Routes)
where
    R: AsyncRead + Unpin,
{
    let reason = loop {
        let frame = match reader.next().await {
            None => break CloseReason::Eof,
            Some(Err(CodecError::Io(e))) => break CloseReason::io(e),
            Some(Err(e)) => break CloseReason::Protocol(e.to_string()),
            Some(Ok(frame)) => frame,
        };
        if let Err(reason) = routes.route(frame).await {
            break reason;
        }
    };
    tracing::debug!(%reason, "connection ended");
    routes.pending.fail_all(reason);
}

impl Routes {
    /// Handles one frame; `Err` with a reason ends the connection.
    async fn route(&self, frame: Frame) -> Result<(), CloseReason> {
        match frame.kind {
            Kind::Response | Kind::Pong => {
                self.pending.complete(frame.id, Ok(frame.payload));
            }
            Kind::Error => {
                let error = ErrorPayload::decode(&frame.payload)
                    .ok_or_else(|| CloseReason::Protocol("an ERROR frame without a code".into()))?;
                if frame.id == 0 {
                    return Err(CloseReason::ServerError {
                        code: error.code,
                        message: error.message,
                    });
                }
                let err = Error::from_error_frame(error.code, error.message);
                self.pending.complete(frame.id, Err(err));
            }
            // Waits while the app's buffer is full (the default policy):
            // the server then sees a client that does not read.
            Kind::Notify => self.notifications.deliver(frame.payload).await,
            Kind::Goodbye => {
                let reason = String::from_utf8_lossy(&frame.payload).into_owned();
                let reason = CloseReason::Goodbye(reason);
                tracing::debug!(%reason, "server said goodbye");
                self.pending.refuse_new(reason);
            }
            Kind::Ping => {
                // Answer without waiting: a full queue means the PONG would
                // be late anyway, and the reader must keep reading.
                self.writer
                    .queue(Frame::new(Kind::Pong, frame.id, frame.payload));
            }
            // Revision 2.2's ITEM and CREDIT: not spoken yet, so the codec
            // reads them as unknown kinds, and this client's HELLO does not
            // list them (a server sends them to no such client).
            Kind::Item
            | Kind::Credit
            | Kind::Hello
            | Kind::Request
            | Kind::Status
            | Kind::Call
            | Kind::Cancel
            | Kind::Describe
            | Kind::End
            | Kind::Subscribe
            | Kind::Unknown(_) => {
                return Err(CloseReason::Protocol(format!(
                    "the server sent {:?} after the handshake",
                    frame.kind
                )))
            }
        }
        Ok(())
    }
}
