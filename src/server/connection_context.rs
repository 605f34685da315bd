//! [`ConnectionContext`]: what a handler knows about, and can do to, its connection.

use std::sync::Arc;

use tokio::time::Instant;

use bytes::Bytes;
use tokio::sync::{mpsc, Semaphore, TryAcquireError};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::protocol::Frame;
use crate::transport::PeerInfo;

/// One client connection, as seen by a handler, and (in a handler's
/// `call`) the request being answered: its method, deadline, metadata and
/// cancellation (protocol 2). Cheap to clone.
///
/// A context kept past its call (in the handler's state, or moved into a
/// task it spawns) still reaches that connection: [`notify`](Self::notify)
/// sends to that client for as long as the connection is open, and fails
/// with [`Error::ConnectionClosed`] once it is gone. Keeping it does not
/// keep the connection open. Its request part describes the call it was
/// given for: [`cancelled`](Self::cancelled) resolves only if that call
/// was stopped before it finished.
#[derive(Clone, Debug)]
pub struct ConnectionContext {
    inner: Arc<Inner>,
    /// The CALL being answered; `None` in `on_connect`, `on_notify`, for
    /// a REQUEST, and on a version 1 connection.
    request: Option<Arc<RequestScope>>,
}

/// What a handler knows about the request it answers (protocol 2).
#[derive(Debug)]
pub(crate) struct RequestScope {
    /// The CALL's method; empty for a REQUEST or the byte handler.
    pub(crate) method: String,
    /// When the server stops the request with ERROR `timed out`.
    pub(crate) deadline: Option<Instant>,
    pub(crate) metadata: Vec<(String, String)>,
    /// Cancelled when the request is stopped before it finished: the
    /// client cancelled it, its deadline passed, the connection is gone,
    /// or the server stopped it at shutdown.
    pub(crate) cancelled: CancellationToken,
}

#[derive(Debug)]
struct Inner {
    id: u64,
    peer: PeerInfo,
    outbound: mpsc::UnboundedSender<Frame>,
    output: Arc<OutputLimit>,
    max_payload: usize,
}

/// The bytes of NOTIFYs a connection may hold unwritten: a frame takes
/// permits (one per byte, at most `limit`) before it is queued, and the
/// connection gives them back once the frame is written.
#[derive(Debug)]
pub(crate) struct OutputLimit {
    pub(crate) room: Semaphore,
    pub(crate) limit: usize,
    /// Cancelled when a broadcast found no room: the connection cuts the
    /// client off as too slow.
    pub(crate) too_slow: CancellationToken,
}

impl OutputLimit {
    /// `limit` is from 1 to [`MAX_OUTPUT_BYTES`](super::MAX_OUTPUT_BYTES)
    /// (checked at bind): what the semaphore can hold, and what
    /// `acquire_many` (a `u32`) can take.
    pub(crate) fn new(limit: usize) -> OutputLimit {
        debug_assert!((1..=super::MAX_OUTPUT_BYTES).contains(&limit));
        OutputLimit {
            room: Semaphore::new(limit),
            limit,
            too_slow: CancellationToken::new(),
        }
    }

    /// The permits `frame` takes: its bytes, but no more than the limit, so
    /// that a frame larger than the limit goes out alone.
    pub(crate) fn charge(&self, frame: &Frame) -> u32 {
        frame.wire_len().min(self.limit) as u32
    }
}

impl ConnectionContext {
    pub(crate) fn new(
        id: u64,
        peer: PeerInfo,
        outbound: mpsc::UnboundedSender<Frame>,
        output: Arc<OutputLimit>,
        max_payload: usize,
    ) -> ConnectionContext {
        ConnectionContext {
            inner: Arc::new(Inner {
                id,
                peer,
                outbound,
                output,
                max_payload,
            }),
            request: None,
        }
    }

    /// The same connection, answering the request `scope` describes.
    pub(crate) fn for_request(&self, scope: Arc<RequestScope>) -> ConnectionContext {
        ConnectionContext {
            inner: self.inner.clone(),
            request: Some(scope),
        }
    }

    /// The request being answered, if the connection gives requests a
    /// scope (protocol 2).
    pub(crate) fn request_scope(&self) -> Option<&Arc<RequestScope>> {
        self.request.as_ref()
    }

    /// The method of the CALL being answered: `None` outside a CALL (a
    /// REQUEST included), `Some("")` for a CALL of the byte handler.
    pub fn method(&self) -> Option<&str> {
        self.request.as_ref().map(|r| r.method.as_str())
    }

    /// When the server will stop the request being answered with ERROR
    /// `timed out`: the deadline its CALL carried (the client's timeout
    /// for it). `None`: no deadline, or not in a request.
    pub fn deadline(&self) -> Option<Instant> {
        self.request.as_ref()?.deadline
    }

    /// The value of the request's first metadata entry called `key` (such
    /// as `traceparent`). Keys starting with `pipesvc-` are the protocol's
    /// ([`RESERVED_METADATA_PREFIX`](crate::protocol::RESERVED_METADATA_PREFIX)):
    /// the server drops them, and a handler never sees one.
    pub fn metadata(&self, key: &str) -> Option<&str> {
        let request = self.request.as_ref()?;
        request
            .metadata
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every metadata entry of the request, in the order sent.
    pub fn metadata_entries(&self) -> &[(String, String)] {
        self.request.as_ref().map_or(&[], |r| &r.metadata)
    }

    /// Resolves once the request being answered is stopped before it
    /// finished: the client cancelled it, its deadline passed, the
    /// connection is gone, or the server gave up on it at shutdown.
    ///
    /// The handler's own future is dropped at that moment, so awaiting
    /// this inside it only helps in a `select!` against work that must
    /// not be cut mid-way; for cleanup after the drop, pass
    /// [`cancellation`](Self::cancellation) to spawned work, or use a
    /// guard's `Drop`. Outside a CALL it never resolves: a REQUEST is
    /// cancelled by dropping its future only (so that byte requests cost
    /// no allocation); send a CALL of the empty method to get the signal.
    pub async fn cancelled(&self) {
        match &self.request {
            Some(request) => request.cancelled.cancelled().await,
            None => std::future::pending().await,
        }
    }

    /// The request's cancellation signal as a token, for work the handler
    /// spawns that must stop (or clean up) when the request is stopped.
    /// `None` outside a CALL (see [`cancelled`](Self::cancelled)).
    pub fn cancellation(&self) -> Option<CancellationToken> {
        Some(self.request.as_ref()?.cancelled.clone())
    }

    /// A number unique to this connection for the server's lifetime.
    pub fn connection_id(&self) -> u64 {
        self.inner.id
    }

    /// What the operating system says about the client process.
    pub fn peer(&self) -> &PeerInfo {
        &self.inner.peer
    }

    /// Sends a NOTIFY to this client, also after the call this context
    /// was given for has been answered (the NOTIFY then follows that
    /// answer). Waits while the connection holds its limit of unwritten
    /// NOTIFY bytes (`max_output_bytes`); fails with
    /// [`Error::ConnectionClosed`] once the connection is closed.
    pub async fn notify(&self, payload: impl Into<Bytes>) -> Result<()> {
        self.send(Frame::notify(payload)).await
    }

    /// The largest payload one frame can carry on this connection.
    pub fn max_payload(&self) -> usize {
        self.inner.max_payload
    }

    pub(crate) async fn send(&self, frame: Frame) -> Result<()> {
        self.check_len(&frame)?;
        let output = &self.inner.output;
        let permits = output.room.acquire_many(output.charge(&frame)).await;
        permits.map_err(|_| closed())?.forget();
        self.inner.outbound.send(frame).map_err(|_| closed())
    }

    /// Queues `frame` if the connection has room for it now; if it has
    /// not, the client is too slow and is cut off. Whether it was queued.
    pub(crate) fn offer(&self, frame: Frame) -> bool {
        if self.check_len(&frame).is_err() {
            return false;
        }
        let output = &self.inner.output;
        match output.room.try_acquire_many(output.charge(&frame)) {
            Ok(permits) => permits.forget(),
            Err(TryAcquireError::NoPermits) => {
                output.too_slow.cancel();
                return false;
            }
            // The connection is closing.
            Err(TryAcquireError::Closed) => return false,
        }
        self.inner.outbound.send(frame).is_ok()
    }

    fn check_len(&self, frame: &Frame) -> Result<()> {
        if frame.payload.len() > self.inner.max_payload {
            return Err(Error::PayloadTooLarge {
                len: frame.payload.len(),
                max: self.inner.max_payload,
            });
        }
        Ok(())
    }
}

fn closed() -> Error {
    Error::ConnectionClosed(crate::error::CloseReason::ClientDisconnected)
}

#[cfg(all(test, feature = "rpc"))]
impl ConnectionContext {
    /// For unit tests of code that takes a context (such as `rpc`): a
    /// connection to this process that nobody reads, answering a CALL of
    /// `method` with `metadata` and no deadline.
    pub(crate) fn for_tests(method: &str, metadata: Vec<(String, String)>) -> ConnectionContext {
        let (outbound, _) = mpsc::unbounded_channel();
        let output = Arc::new(OutputLimit::new(1 << 20));
        let ctx = ConnectionContext::new(1, PeerInfo::current(), outbound, output, 1 << 20);
        ctx.for_request(Arc::new(RequestScope {
            method: method.to_owned(),
            deadline: None,
            metadata,
            cancelled: CancellationToken::new(),
        }))
    }
}
