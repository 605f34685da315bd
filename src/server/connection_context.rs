//! [`ConnectionContext`]: what a handler knows about, and can do to, its connection.

use super::topics::Publisher;
use std::sync::{Arc, Mutex};

use tokio::time::Instant;

use bytes::Bytes;
use tokio::sync::{Semaphore, TryAcquireError};
use tokio_util::sync::CancellationToken;

use super::budget::MemoryBudget;
use super::push_queue::PushQueue;
use super::{lock, AccessPolicy, Refusal, Rule, ServiceError};
use crate::error::{Error, Result};
use crate::protocol::{Frame, MethodName};
use crate::transport::{Caller, PeerInfo};

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
    pub(crate) method: MethodName,
    /// When the server stops the request with ERROR `timed out`.
    pub(crate) deadline: Option<Instant>,
    pub(crate) metadata: Vec<(String, String)>,
    /// Fired when the request is stopped before it finished: the client
    /// cancelled it, its deadline passed, the connection is gone, or the
    /// server stopped it at shutdown.
    pub(crate) cancelled: Cancel,
}

/// A request's cancelled signal. Its [`CancellationToken`] is made only
/// when the handler asks for it: most requests finish without, and a
/// token per request cost an allocation and 150 instructions to drop
/// (its tree's lock).
#[derive(Debug, Default)]
pub(crate) struct Cancel(Mutex<CancelState>);

#[derive(Debug, Default)]
enum CancelState {
    /// Neither fired nor asked for.
    #[default]
    Idle,
    /// Fired before anyone asked for the token.
    Fired,
    Token(CancellationToken),
}

impl Cancel {
    /// Fires the signal: the token, now or when it is made, is cancelled.
    pub(crate) fn fire(&self) {
        let mut state = lock(&self.0);
        match &*state {
            CancelState::Token(token) => token.cancel(),
            _ => *state = CancelState::Fired,
        }
    }

    /// The signal as a token (cancelled already if it fired).
    pub(crate) fn token(&self) -> CancellationToken {
        let mut state = lock(&self.0);
        match &*state {
            CancelState::Token(token) => token.clone(),
            fired => {
                let token = CancellationToken::new();
                if matches!(fired, CancelState::Fired) {
                    token.cancel();
                }
                *state = CancelState::Token(token.clone());
                token
            }
        }
    }
}

#[derive(Debug)]
struct Inner {
    id: u64,
    caller: Caller,
    output: Arc<OutputLimit>,
    max_payload: usize,
    /// The server's policy, for [`ConnectionContext::authorize`].
    access: Arc<AccessPolicy>,
    /// The server's budget for what clients make it hold (typed calls
    /// charge their decoded params to it).
    budget: Arc<MemoryBudget>,
    /// Cancelled once the connection has ended ([`ConnectionContext::closed`]).
    closed: CancellationToken,
    /// The service's topics, if it has a [`Publisher`].
    publisher: Option<Publisher>,
}

/// The bytes of NOTIFYs a connection may hold unwritten, and their queue:
/// a frame takes permits (one per byte, at most `limit`) before it is
/// queued, and the connection gives them back once the frame is written.
#[derive(Debug)]
pub(crate) struct OutputLimit {
    pub(crate) room: Semaphore,
    pub(crate) limit: usize,
    /// Cancelled when a broadcast found no room: the connection cuts the
    /// client off as too slow.
    pub(crate) too_slow: CancellationToken,
    /// The frames that took their room, on their way to the connection.
    pub(crate) queue: PushQueue,
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
            queue: PushQueue::default(),
        }
    }

    /// The permits `frame` takes: its bytes, but no more than the limit, so
    /// that a frame larger than the limit goes out alone.
    pub(crate) fn charge(&self, frame: &Frame) -> u32 {
        frame.wire_len().min(self.limit) as u32
    }
}

impl ConnectionContext {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        id: u64,
        caller: Caller,
        output: Arc<OutputLimit>,
        max_payload: usize,
        access: Arc<AccessPolicy>,
        budget: Arc<MemoryBudget>,
        publisher: Option<Publisher>,
    ) -> ConnectionContext {
        ConnectionContext {
            inner: Arc::new(Inner {
                id,
                caller,
                output,
                max_payload,
                access,
                budget,
                closed: CancellationToken::new(),
                publisher,
            }),
            request: None,
        }
    }

    /// What the service publishes its topics' events through (revision
    /// 2.2): `publisher.publish(&TOPIC, &event)` from any handler. `None`
    /// for a server whose typed methods have no publisher (an
    /// [`rpc::Service`](crate::rpc::Service) always has one).
    pub fn publisher(&self) -> Option<&Publisher> {
        self.inner.publisher.as_ref()
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
            Some(request) => request.cancelled.token().cancelled_owned().await,
            None => std::future::pending().await,
        }
    }

    /// The request's cancellation signal as a token, for work the handler
    /// spawns that must stop (or clean up) when the request is stopped.
    /// `None` outside a CALL (see [`cancelled`](Self::cancelled)).
    pub fn cancellation(&self) -> Option<CancellationToken> {
        Some(self.request.as_ref()?.cancelled.token())
    }

    /// A number unique to this connection for the server's lifetime:
    /// what [`ServerHandle::send_to`](super::ServerHandle::send_to) takes.
    pub fn connection_id(&self) -> u64 {
        self.inner.id
    }

    /// Resolves once the connection has ended: the client left or was cut
    /// off, it broke the protocol, or the server closed it. A service that
    /// keeps a context (a subscriber it pushes to, say) waits on this to
    /// notice at once that the client is gone, rather than when a send to
    /// it fails. Resolves at once if it has ended already.
    pub async fn closed(&self) {
        self.inner.closed.cancelled().await
    }

    /// Whether the connection has ended (see [`closed`](Self::closed)).
    pub fn is_closed(&self) -> bool {
        self.inner.closed.is_cancelled()
    }

    /// The connection has ended: [`closed`](Self::closed) resolves.
    pub(crate) fn mark_closed(&self) {
        self.inner.closed.cancel();
    }

    /// What the operating system says about the client process: its pid,
    /// and on Unix its uid and gid. The whole identity is
    /// [`caller`](Self::caller).
    pub fn peer(&self) -> &PeerInfo {
        self.inner.caller.peer()
    }

    /// Who the client is: its user, groups, logon and process, read once
    /// when it connected (see [`Caller`]).
    pub fn caller(&self) -> &Caller {
        &self.inner.caller
    }

    /// `Ok` if `rule` admits the caller; otherwise ERROR `not allowed`
    /// naming the rule (logged with the caller's identity), for a handler
    /// to return: `ctx.require(&Rule::admin())?`. Names in `rule` are
    /// resolved here, each time: keep rules that name users or groups in
    /// the server's [`AccessPolicy`] and use [`authorize`](Self::authorize).
    pub fn require(&self, rule: &Rule) -> std::result::Result<(), ServiceError> {
        let admitted = match rule.resolve() {
            Ok(rule) => rule.admits(&self.inner.caller),
            Err(why) => {
                crate::log_limit::limited!(
                    error,
                    rule = rule.name(),
                    why,
                    "a rule that cannot be evaluated refuses"
                );
                false
            }
        };
        if admitted {
            return Ok(());
        }
        self.refused(Refusal::by(rule, self.method(), &self.inner.caller))
    }

    /// `Ok` if the server's access policy lets the caller perform
    /// `operation` (the rules [`AccessPolicy::method`] gave that name, or
    /// `Ok` if none): for operations other than the method being called,
    /// such as a topic to subscribe to. A refusal is ERROR `not allowed`
    /// naming the rule, logged with the caller's identity.
    pub fn authorize(&self, operation: &str) -> std::result::Result<(), ServiceError> {
        match self
            .inner
            .access
            .check_operation(operation, &self.inner.caller)
        {
            Ok(()) => Ok(()),
            Err(refusal) => self.refused(refusal),
        }
    }

    fn refused(&self, refusal: Refusal) -> std::result::Result<(), ServiceError> {
        super::conn::log_refusal(&refusal, &self.inner.caller);
        Err(ServiceError::not_allowed(refusal.to_string()))
    }

    /// Runs `work` on a blocking thread while impersonating the client
    /// (Windows), and returns what it returns: files it opens, processes it
    /// starts and the rest are checked against the client's rights, not
    /// the service's, like .NET's `RunAsClient`. The impersonation is
    /// undone before the thread does anything else, even if `work` panics;
    /// no Tokio worker ever runs as the client.
    ///
    /// The client must have allowed it
    /// ([`ClientOptions::allow_impersonation`](crate::ClientOptions::allow_impersonation)):
    /// pipesvc clients connect at the identification level by default, and
    /// then this fails with [`Error::Impersonation`] saying so, without
    /// running `work`: never silently as the service. It fails the same way
    /// if Windows refuses the impersonation (the service lacks
    /// `SeImpersonatePrivilege`), and always on Unix, which has no such
    /// thing. A panic in `work` is resumed here.
    pub async fn run_as_client<T, F>(&self, work: F) -> Result<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        crate::transport::run_as(&self.inner.caller, work).await
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

    /// The server's budget for what its clients make it hold.
    #[cfg_attr(not(feature = "rpc"), allow(dead_code))]
    pub(crate) fn memory_budget(&self) -> &Arc<MemoryBudget> {
        &self.inner.budget
    }

    pub(crate) async fn send(&self, frame: Frame) -> Result<()> {
        self.check_len(&frame)?;
        let output = &self.inner.output;
        let permits = output.room.acquire_many(output.charge(&frame)).await;
        permits.map_err(|_| closed())?.forget();
        output.queue.push(frame).map_err(|_| closed())
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
        output.queue.push(frame).is_ok()
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
        let output = Arc::new(OutputLimit::new(1 << 20));
        output.queue.close();
        let access = Arc::new(AccessPolicy::default());
        let budget = Arc::new(MemoryBudget::new(1 << 30));
        let ctx =
            ConnectionContext::new(1, Caller::current(), output, 1 << 20, access, budget, None);
        ctx.for_request(Arc::new(RequestScope {
            method: method.into(),
            deadline: None,
            metadata,
            cancelled: Cancel::default(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::Cancel;

    #[test]
    fn the_token_is_cancelled_whether_asked_for_before_or_after_the_signal_fires() {
        let idle = Cancel::default();
        assert!(!idle.token().is_cancelled(), "not fired");

        let early = Cancel::default();
        early.fire();
        assert!(early.token().is_cancelled(), "asked for after it fired");

        let late = Cancel::default();
        let token = late.token();
        assert!(!token.is_cancelled());
        late.fire();
        assert!(token.is_cancelled(), "asked for before it fired");
        assert!(late.token().is_cancelled(), "the same token");
    }
}
