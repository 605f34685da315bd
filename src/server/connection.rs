//! One client connection: handshake, request loop, orderly close.

use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::io::ReadHalf;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{lock, Config, Context, Handler, ServiceError, Shared};
use crate::frame_io::{write_frames, OUTBOUND_QUEUE};
use crate::protocol::{
    ClientHello, DecodeError, ErrorCode, Frame, FrameCodec, Kind, ServerHello, PROTOCOL_VERSION,
};
use crate::transport::{close_within, disconnect, PeerInfo, ServerStream};

type Reader = FramedRead<ReadHalf<ServerStream>, FrameCodec>;

/// Longest wait for the last frames to reach a client that is being closed.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

/// Why the request loop ended.
#[derive(Debug)]
enum End {
    /// The server is shutting down.
    Shutdown,
    /// The client closed its end.
    PeerClosed,
    /// Reading or writing failed; the client is gone.
    PeerGone,
    /// The client broke the protocol: report it, then close.
    Protocol(ErrorCode, String),
}

pub(super) struct Connection<H> {
    pub(super) id: u64,
    pub(super) peer: PeerInfo,
    pub(super) config: Arc<Config>,
    pub(super) handler: Arc<H>,
    pub(super) shared: Arc<Shared>,
}

impl<H: Handler> Connection<H> {
    pub(super) async fn run(self, stream: ServerStream) {
        tracing::info!("connected");
        let codec = FrameCodec::new(self.config.max_frame_len);
        let (read, write) = tokio::io::split(stream);
        let (outbound, queue) = mpsc::channel(OUTBOUND_QUEUE);
        let close = CancellationToken::new();
        let writer = tokio::spawn(
            write_frames(
                FramedWrite::new(write, codec),
                queue,
                close.clone(),
                Some(self.config.write_timeout),
            )
            .in_current_span(),
        );
        let mut reader = FramedRead::new(read, codec);
        let ctx = Context::new(self.id, self.peer, outbound, self.config.max_payload());

        let end = self.session(&mut reader, &ctx).await;
        lock(&self.shared.connections).remove(&self.id);
        match &end {
            End::Protocol(code, message) => {
                tracing::warn!(%code, message, "closing connection: protocol error")
            }
            other => tracing::debug!(end = ?other, "closing connection"),
        }

        // The writer drains what is queued (each batch bounded by the write
        // timeout), then shuts its half down and hands it back.
        close.cancel();
        drop(ctx);
        match writer.await {
            Ok((write, written)) => {
                let stream = reader.into_inner().unsplit(write);
                match written {
                    Ok(()) => close_within(stream, FLUSH_TIMEOUT).await,
                    Err(e) => {
                        tracing::debug!(error = %e, "write failed; cutting the client off");
                        disconnect(&stream);
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "writer task failed"),
        }
        tracing::info!("disconnected");
    }

    async fn session(&self, reader: &mut Reader, ctx: &Context) -> End {
        let hello = ServerHello {
            version: PROTOCOL_VERSION,
            max_frame_len: self.config.max_frame_len,
            server_name: self.config.name.clone(),
        };
        if ctx
            .send(Frame::new(Kind::Hello, 0, hello.encode()))
            .await
            .is_err()
        {
            return End::PeerGone;
        }
        match self.handshake(reader).await {
            Ok(()) => {
                lock(&self.shared.connections).insert(self.id, ctx.clone());
                self.handler.on_connect(ctx.clone()).await;
                self.serve_requests(reader, ctx).await
            }
            Err(end) => {
                report(ctx, &end).await;
                end
            }
        }
    }

    /// Waits for the client's HELLO and checks it.
    async fn handshake(&self, reader: &mut Reader) -> Result<(), End> {
        let timeout = self.config.handshake_timeout;
        let first = tokio::select! {
            first = tokio::time::timeout(timeout, reader.next()) => first,
            _ = self.shared.shutdown.cancelled() => return Err(End::Shutdown),
        };
        let frame = match first {
            Err(_) => {
                return Err(End::Protocol(
                    ErrorCode::TIMED_OUT,
                    format!("no HELLO within {timeout:?}"),
                ))
            }
            Ok(None) => return Err(End::PeerClosed),
            Ok(Some(Err(e))) => return Err(decode_failed(e)),
            Ok(Some(Ok(frame))) => frame,
        };
        if frame.kind != Kind::Hello {
            return Err(End::Protocol(
                ErrorCode::UNEXPECTED_FRAME,
                format!("expected HELLO, got {:?}", frame.kind),
            ));
        }
        ClientHello::decode(&frame.payload)
            .map(drop)
            .map_err(|e| End::Protocol(e.code(), e.to_string()))
    }

    /// Reads frames and dispatches them until the client leaves, breaks the
    /// protocol, or the server shuts down; then settles in-flight requests.
    async fn serve_requests(&self, reader: &mut Reader, ctx: &Context) -> End {
        let shutdown = &self.shared.shutdown;
        let mut in_flight = InFlight::new(self.config.max_in_flight);
        let end = loop {
            // Backpressure: with the limit reached, read nothing more from
            // this client until a request finishes.
            let slot = tokio::select! {
                slot = in_flight.slot() => slot,
                _ = shutdown.cancelled() => break End::Shutdown,
            };
            let frame = tokio::select! {
                frame = reader.next() => frame,
                _ = shutdown.cancelled() => break End::Shutdown,
                // The writer gave up (write timeout, broken pipe).
                _ = ctx.closed() => break End::PeerGone,
                idle = in_flight.idle_for(self.config.idle_timeout) => break End::Protocol(
                    ErrorCode::TIMED_OUT,
                    format!("no frame for {idle:?} with no request in flight"),
                ),
            };
            let frame = match frame {
                None => break End::PeerClosed,
                Some(Err(e)) => break decode_failed(e),
                Some(Ok(frame)) => frame,
            };
            if frame.id == 0 && matches!(frame.kind, Kind::Request | Kind::Ping) {
                // Its answer would carry id 0, which means "the connection".
                break End::Protocol(
                    ErrorCode::MALFORMED_FRAME,
                    format!("a {:?} needs an id other than 0", frame.kind),
                );
            }
            match frame.kind {
                Kind::Request => {
                    if let Err(id) = in_flight.start(frame, slot, &self.handler, ctx) {
                        break End::Protocol(
                            ErrorCode::DUPLICATE_ID,
                            format!("request id {id} is already in flight"),
                        );
                    }
                }
                Kind::Ping => {
                    let pong = Frame::new(Kind::Pong, frame.id, frame.payload);
                    if ctx.send(pong).await.is_err() {
                        break End::PeerGone;
                    }
                }
                Kind::Notify => self.handler.on_notify(frame.payload, ctx.clone()).await,
                other => {
                    break End::Protocol(
                        ErrorCode::UNEXPECTED_FRAME,
                        format!("a client may not send {other:?} after the handshake"),
                    )
                }
            }
        };
        if matches!(end, End::Protocol(..) | End::PeerGone) {
            // The connection is unusable: the error report is the last frame.
            in_flight.abort();
            report(ctx, &end).await;
        } else {
            // GOODBYE (on shutdown) goes out before the last answers.
            report(ctx, &end).await;
            in_flight
                .settle(shutdown, self.config.shutdown_timeout)
                .await;
        }
        end
    }
}

/// Sends the frame that tells the client why the connection ends, if any.
async fn report(ctx: &Context, end: &End) {
    let frame = match end {
        End::Shutdown => Frame::goodbye("the server is shutting down"),
        End::Protocol(code, message) => Frame::error(0, *code, message),
        End::PeerClosed | End::PeerGone => return,
    };
    let _ = ctx.send(frame).await;
}

fn decode_failed(err: DecodeError) -> End {
    match err.code() {
        Some(code) => End::Protocol(code, err.to_string()),
        None => {
            tracing::debug!(error = %err, "read failed");
            End::PeerGone
        }
    }
}

/// The requests one connection is handling.
struct InFlight {
    tasks: JoinSet<()>,
    ids: Arc<Mutex<HashSet<u32>>>,
    slots: Arc<Semaphore>,
    /// Cancelled when the shutdown deadline passes.
    cancel: CancellationToken,
}

impl InFlight {
    fn new(limit: usize) -> InFlight {
        InFlight {
            tasks: JoinSet::new(),
            ids: Arc::default(),
            slots: Arc::new(Semaphore::new(limit)),
            cancel: CancellationToken::new(),
        }
    }

    async fn slot(&mut self) -> OwnedSemaphorePermit {
        while self.tasks.try_join_next().is_some() {}
        self.slots
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore is never closed")
    }

    /// Runs the handler for `frame` in its own task; refuses an id that is
    /// still in flight.
    fn start<H: Handler>(
        &mut self,
        frame: Frame,
        slot: OwnedSemaphorePermit,
        handler: &Arc<H>,
        ctx: &Context,
    ) -> Result<(), u32> {
        let id = frame.id;
        if !lock(&self.ids).insert(id) {
            return Err(id);
        }
        let (handler, ctx) = (handler.clone(), ctx.clone());
        let (ids, cancel) = (self.ids.clone(), self.cancel.clone());
        let max_payload = ctx.max_payload();
        let task = async move {
            let call = AssertUnwindSafe(handler.call(frame.payload, ctx.clone())).catch_unwind();
            let answer = tokio::select! {
                outcome = call => answer(id, outcome, max_payload),
                _ = cancel.cancelled() => Frame::error(
                    id,
                    ErrorCode::SHUTTING_DOWN,
                    "the server shut down before the request finished",
                ),
            };
            // Free the id before answering: the client may reuse it as soon
            // as it has the answer.
            lock(&ids).remove(&id);
            let _ = ctx.send(answer).await;
            drop(slot);
        };
        self.tasks.spawn(task.in_current_span());
        Ok(())
    }

    /// Waits for every request to be answered. Once `shutdown` fires, they
    /// get `timeout` more; then the rest are answered `shutting down`.
    async fn settle(&mut self, shutdown: &CancellationToken, timeout: Duration) {
        let deadline = async {
            shutdown.cancelled().await;
            tokio::time::sleep(timeout).await;
        };
        tokio::pin!(deadline);
        let mut expired = false;
        loop {
            tokio::select! {
                done = self.tasks.join_next() => match done {
                    None => return,
                    Some(Err(e)) if e.is_panic() => tracing::error!(error = %e, "request task panicked"),
                    Some(_) => {}
                },
                _ = &mut deadline, if !expired => {
                    expired = true;
                    tracing::warn!(left = self.tasks.len(), "shutdown deadline passed; cancelling requests");
                    self.cancel.cancel();
                }
            }
        }
    }

    fn abort(&mut self) {
        self.tasks.abort_all();
    }

    /// Completes once a whole `timeout` has passed with no request in
    /// flight (checked every `timeout`); never without a timeout.
    async fn idle_for(&self, timeout: Option<Duration>) -> Duration {
        let Some(timeout) = timeout else {
            return std::future::pending().await;
        };
        loop {
            tokio::time::sleep(timeout).await;
            if lock(&self.ids).is_empty() {
                return timeout;
            }
        }
    }
}

/// The frame that answers request `id`.
fn answer(
    id: u32,
    outcome: std::thread::Result<Result<bytes::Bytes, ServiceError>>,
    max_payload: usize,
) -> Frame {
    match outcome {
        Ok(Ok(body)) if body.len() > max_payload => {
            tracing::error!(id, len = body.len(), "response too large for one frame");
            Frame::error(
                id,
                ErrorCode::FRAME_TOO_LARGE,
                &format!(
                    "the response of {} bytes exceeds the maximum of {max_payload}",
                    body.len()
                ),
            )
        }
        Ok(Ok(body)) => Frame::response(id, body),
        Ok(Err(err)) => Frame::error(id, err.code(), err.message()),
        Err(panic) => {
            let what = panic_message(&panic);
            tracing::error!(id, panic = what, "handler panicked");
            Frame::error(id, ErrorCode::HANDLER_FAILED, "the handler panicked")
        }
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(non-string panic payload)")
}

/// Sends `refusal` (an ERROR with id 0) instead of HELLO, and closes.
pub(super) async fn refuse(stream: ServerStream, config: Arc<Config>, refusal: Frame) {
    let mut sink = FramedWrite::new(stream, FrameCodec::new(config.max_frame_len));
    let sent = tokio::time::timeout(FLUSH_TIMEOUT, sink.send(refusal)).await;
    let stream = sink.into_inner();
    match sent {
        Ok(Ok(())) => close_within(stream, FLUSH_TIMEOUT).await,
        _ => disconnect(&stream),
    }
}
