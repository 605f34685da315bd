//! The client's reader task: routes each frame from the server.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::AsyncRead;
use tokio_util::codec::FramedRead;

use super::notifications::Queue;
use super::pending::{Pending, StreamRoute};
use super::writer::Writer;
use crate::error::{CloseReason, Error};
use crate::protocol::{
    check_item, decode_credit, CodecError, ErrorPayload, Frame, KeepingCodec, Kind,
};

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
pub(super) async fn read_frames<R>(mut reader: FramedRead<R, KeepingCodec>, routes: Routes)
where
    R: AsyncRead + Unpin,
{
    let reason = loop {
        // The timed wait only while a large frame's allocation is kept:
        // boxed, so that it costs the usual wait nothing.
        let next = match reader.decoder().kept.holds() {
            false => reader.next().await,
            true => Box::pin(next_or_let_go(&mut reader)).await,
        };
        let frame = match next {
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

/// How long the reader keeps the allocation of a large frame for the next
/// one ([`KeptBuffer`](crate::protocol::KeptBuffer)) while no frame comes.
const KEEP_UNUSED: Duration = Duration::from_secs(1);

/// The next frame, letting go of a large frame's kept allocation if none
/// comes within [`KEEP_UNUSED`]: a client that had one large answer does
/// not hold its size while it is idle. Reading frames resumes where the
/// timed-out wait stopped (`FramedRead::next` keeps its state).
async fn next_or_let_go<R>(
    reader: &mut FramedRead<R, KeepingCodec>,
) -> Option<Result<Frame, CodecError>>
where
    R: AsyncRead + Unpin,
{
    match tokio::time::timeout(KEEP_UNUSED, reader.next()).await {
        Ok(next) => next,
        Err(_) => {
            reader.decoder_mut().kept.clear();
            reader.next().await
        }
    }
}

impl Routes {
    /// Handles one frame; `Err` with a reason ends the connection.
    async fn route(&self, frame: Frame) -> Result<(), CloseReason> {
        match spoken(frame.kind) {
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
            Kind::Item => self.item(frame)?,
            Kind::Credit => self.credit(frame)?,
            Kind::Hello
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

    /// An ITEM: checked against the credit this client gave, decoded, and
    /// queued for the stream's reader without waiting (the credit bounds
    /// what can queue).
    fn item(&self, frame: Frame) -> Result<(), CloseReason> {
        let flow = match self.stream_route(frame.id, "ITEM")? {
            StreamRoute::Open(flow) => flow,
            StreamRoute::Gone => return Ok(()),
            // A streaming method called as a plain call (`Client::call`):
            // that caller fails, and the stream is cancelled.
            StreamRoute::NotAStream => {
                if self.pending.refuse_stream(frame.id) {
                    let cancel = Frame::new(Kind::Cancel, frame.id, Bytes::new());
                    self.writer.queue_control(cancel);
                }
                return Ok(());
            }
        };
        let len = frame.payload.len();
        flow.server_sent(frame.id, len)?;
        // Checked whole now; its entries are read as they are taken.
        check_item(&frame.payload, false)
            .map_err(|e| CloseReason::Protocol(format!("stream {}: {e}", frame.id)))?;
        self.pending.deliver_item(frame.id, frame.payload);
        Ok(())
    }

    /// A CREDIT: more room for this client's items on an upload. Credit
    /// for a stream that ended, or for a call whose ITEMs were refused,
    /// grants nothing: ignored.
    fn credit(&self, frame: Frame) -> Result<(), CloseReason> {
        let bytes = decode_credit(&frame.payload)
            .ok_or_else(|| CloseReason::Protocol("a CREDIT shorter than 4 bytes".into()))?;
        match self.stream_route(frame.id, "CREDIT")? {
            StreamRoute::Open(flow) => flow.server_granted(frame.id, bytes),
            StreamRoute::Gone | StreamRoute::NotAStream => Ok(()),
        }
    }

    /// Where an ITEM or CREDIT with `id` goes; id 0 is a protocol error.
    fn stream_route(&self, id: u32, what: &str) -> Result<StreamRoute, CloseReason> {
        if id == 0 {
            let why = format!("the server sent {what} with id 0");
            return Err(CloseReason::Protocol(why));
        }
        Ok(self.pending.stream_route(id))
    }
}

/// The kind as this client speaks it: revision 2.2's kinds that the codec
/// reads as unknown while the crate's [`SPOKEN_REVISION`] is below 2 (the
/// server side serves no streams yet) are still streams' kinds to a
/// client, which listed them in its HELLO: a server sends them only to a
/// client that did.
///
/// [`SPOKEN_REVISION`]: crate::protocol::SPOKEN_REVISION
fn spoken(kind: Kind) -> Kind {
    match kind {
        Kind::Unknown(byte) => match Kind::from_u8(byte) {
            Some(known) if known.rules().revision == 2 => known,
            _ => kind,
        },
        kind => kind,
    }
}
