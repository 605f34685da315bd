//! Frame I/O shared by the server and the client: the writer task.
//!
//! Each connection has one writer task that owns the write half. Everyone
//! else (handlers, notifiers, the reader answering PINGs) queues frames on a
//! bounded channel, so frames are never interleaved and a slow peer pushes
//! back on the producers instead of growing a buffer.

use std::io;
use std::time::Duration;

use futures_util::SinkExt;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::codec::FramedWrite;
use tokio_util::sync::CancellationToken;

use crate::protocol::{DecodeError, Frame, FrameCodec};

/// Frames that may wait in a connection's outbound queue.
pub(crate) const OUTBOUND_QUEUE: usize = 128;

/// Stop coalescing once this many bytes wait in the write buffer.
const COALESCE_LIMIT: usize = 256 * 1024;

/// Writes queued frames until `close` is cancelled (then drains what is
/// already queued) or every sender is gone, then shuts the writer down.
/// Returns the writer however that went, so that the caller can reunite it
/// with its read half and close the stream properly.
///
/// With a `write_timeout`, a batch of frames that the peer does not take
/// within it fails with `TimedOut`: a peer that stops reading cannot hold
/// the connection (and its queued frames) forever.
pub(crate) async fn write_frames<W>(
    mut sink: FramedWrite<W, FrameCodec>,
    queue: mpsc::Receiver<Frame>,
    close: CancellationToken,
    write_timeout: Option<Duration>,
) -> (W, io::Result<()>)
where
    W: AsyncWrite + Unpin,
{
    let written = pump(&mut sink, queue, close, write_timeout).await;
    let mut writer = sink.into_inner();
    let result = match written {
        Ok(()) => within(write_timeout, writer.shutdown()).await,
        Err(e) => Err(e),
    };
    (writer, result)
}

async fn pump<W: AsyncWrite + Unpin>(
    sink: &mut FramedWrite<W, FrameCodec>,
    mut queue: mpsc::Receiver<Frame>,
    close: CancellationToken,
    write_timeout: Option<Duration>,
) -> io::Result<()> {
    loop {
        let frame = tokio::select! {
            biased;
            frame = queue.recv() => frame,
            _ = close.cancelled() => {
                queue.close();
                queue.recv().await
            }
        };
        let Some(frame) = frame else { break };
        within(write_timeout, write_batch(sink, &mut queue, frame)).await?;
    }
    within(write_timeout, async { sink.flush().await.map_err(into_io) }).await
}

/// Writes `first` and, coalesced with it, whatever else is already queued.
async fn write_batch<W: AsyncWrite + Unpin>(
    sink: &mut FramedWrite<W, FrameCodec>,
    queue: &mut mpsc::Receiver<Frame>,
    first: Frame,
) -> io::Result<()> {
    sink.feed(first).await.map_err(into_io)?;
    while sink.write_buffer().len() < COALESCE_LIMIT {
        match queue.try_recv() {
            Ok(frame) => sink.feed(frame).await.map_err(into_io)?,
            Err(_) => break,
        }
    }
    sink.flush().await.map_err(into_io)
}

async fn within(
    limit: Option<Duration>,
    write: impl std::future::Future<Output = io::Result<()>>,
) -> io::Result<()> {
    let Some(limit) = limit else {
        return write.await;
    };
    tokio::time::timeout(limit, write)
        .await
        .unwrap_or_else(|_| {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the peer did not read for {limit:?}"),
            ))
        })
}

fn into_io(err: DecodeError) -> io::Error {
    match err {
        DecodeError::Io(e) => e,
        other => io::Error::new(io::ErrorKind::InvalidInput, other),
    }
}
