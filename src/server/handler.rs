//! What a service implements: the [`Handler`] trait and its error type.

use std::future::Future;

use bytes::Bytes;

use super::ConnectionContext;
use crate::protocol::{ErrorCode, ServiceCode};

/// A service: answers requests, and may react to connections and
/// client notifications.
///
/// Any `Fn(Bytes, ConnectionContext) -> impl Future<Output = Result<Bytes, ServiceError>>`
/// closure is a handler; implement the trait on a type to use the hooks.
///
/// ```
/// use bytes::Bytes;
/// use pipesvc::server::{ConnectionContext, Handler, ServiceError};
///
/// struct Upper;
///
/// impl Handler for Upper {
///     async fn call(&self, request: Bytes, _ctx: ConnectionContext) -> Result<Bytes, ServiceError> {
///         Ok(request.to_ascii_uppercase().into())
///     }
///
///     async fn on_connect(&self, ctx: ConnectionContext) {
///         let _ = ctx.notify("welcome").await;
///     }
/// }
/// ```
pub trait Handler: Send + Sync + 'static {
    /// Answers one REQUEST. Requests on one connection run concurrently, so
    /// this may be called again before an earlier call has finished. A
    /// panic is reported to the client as `handler failed` and the
    /// connection carries on.
    fn call(
        &self,
        request: Bytes,
        ctx: ConnectionContext,
    ) -> impl Future<Output = Result<Bytes, ServiceError>> + Send;

    /// Runs once per connection after the handshake, before any request is
    /// read; frames it sends reach the client before any response.
    fn on_connect(&self, ctx: ConnectionContext) -> impl Future<Output = ()> + Send {
        let _ = ctx;
        async {}
    }

    /// Receives each NOTIFY the client sends. The connection reads no
    /// further frames until it returns.
    fn on_notify(&self, payload: Bytes, ctx: ConnectionContext) -> impl Future<Output = ()> + Send {
        let _ = (payload, ctx);
        async {}
    }

    /// Runs once per connection that got past the handshake, when it has
    /// ended, whatever ended it (the client left or was cut off, a
    /// protocol error, shutdown): its requests are answered or dropped,
    /// its stream is closed, and [`ConnectionContext::closed`] has
    /// resolved. For a service that keeps state per client (subscribers,
    /// locks it holds for it). The connection still counts against the
    /// server's limits until this returns, so keep it short; at shutdown
    /// it is stopped with the connection after the shutdown timeout.
    fn on_disconnect(&self, ctx: ConnectionContext) -> impl Future<Output = ()> + Send {
        let _ = ctx;
        async {}
    }
}

impl<F, Fut> Handler for F
where
    F: Fn(Bytes, ConnectionContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Bytes, ServiceError>> + Send,
{
    fn call(
        &self,
        request: Bytes,
        ctx: ConnectionContext,
    ) -> impl Future<Output = Result<Bytes, ServiceError>> + Send {
        self(request, ctx)
    }
}

/// No byte handler: a server of typed methods only
/// ([`ServerBuilder::calls`](super::ServerBuilder::calls)) answers every
/// REQUEST, and every CALL of the empty method, with ERROR `unknown method`.
impl Handler for () {
    async fn call(&self, _request: Bytes, _ctx: ConnectionContext) -> Result<Bytes, ServiceError> {
        Err(ServiceError::unknown_method(""))
    }
}

/// A failure a handler reports; the client receives it as an ERROR frame
/// with the request's id.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ServiceError {
    code: ErrorCode,
    message: String,
}

impl ServiceError {
    /// An error with code `handler failed` (5).
    pub fn new(message: impl Into<String>) -> ServiceError {
        ServiceError {
            code: ErrorCode::HANDLER_FAILED,
            message: message.into(),
        }
    }

    /// An error with a service-defined code (1000 and up, which
    /// [`ServiceCode`] guarantees: it cannot hold a protocol code).
    ///
    /// ```
    /// use pipesvc::protocol::ServiceCode;
    /// use pipesvc::server::ServiceError;
    ///
    /// const NOT_FOUND: ServiceCode = ServiceCode::new(1404).unwrap();
    /// let err = ServiceError::with_code(NOT_FOUND, "no such key");
    /// assert_eq!(err.code().0, 1404);
    /// ```
    pub fn with_code(code: ServiceCode, message: impl Into<String>) -> ServiceError {
        ServiceError {
            code: code.into(),
            message: message.into(),
        }
    }

    /// ERROR `bad request` (13): the request cannot be acted on, such as
    /// params that do not decode; `message` says which field.
    pub fn bad_request(message: impl Into<String>) -> ServiceError {
        ServiceError {
            code: ErrorCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    /// ERROR `not allowed` (11): this client may not do what it asked
    /// (such as cancel a job it does not own). `message` says what would
    /// be needed; [`ConnectionContext::require`](super::ConnectionContext::require)
    /// and [`authorize`](super::ConnectionContext::authorize) make one
    /// naming the rule.
    pub fn not_allowed(message: impl Into<String>) -> ServiceError {
        ServiceError {
            code: ErrorCode::NOT_ALLOWED,
            message: message.into(),
        }
    }

    /// ERROR `timed out` (8): the handler gave up waiting for something
    /// (a lock, a device, another service) within its own time limit. The
    /// server answers `timed out` by itself when a CALL's deadline passes.
    pub fn timed_out(message: impl Into<String>) -> ServiceError {
        ServiceError {
            code: ErrorCode::TIMED_OUT,
            message: message.into(),
        }
    }

    /// ERROR `overloaded` (6): the service is at a limit (such as its
    /// memory for requests) and cannot take this request now; the client
    /// may try again later.
    pub fn overloaded(message: impl Into<String>) -> ServiceError {
        ServiceError {
            code: ErrorCode::OVERLOADED,
            message: message.into(),
        }
    }

    /// ERROR `cancelled` (14): what a streaming method's
    /// [`ItemSink::send`](crate::rpc::ItemSink::send) fails with once the
    /// client cancelled the stream or left (revision 2.2).
    pub fn cancelled(message: impl Into<String>) -> ServiceError {
        ServiceError {
            code: ErrorCode::CANCELLED,
            message: message.into(),
        }
    }

    /// ERROR `unknown method` (12) for `method` (empty: the byte handler).
    pub fn unknown_method(method: &str) -> ServiceError {
        let message = match method {
            "" => "this service has no byte handler: call one of its methods".to_owned(),
            _ => format!("no method {method:?}"),
        };
        ServiceError {
            code: ErrorCode::UNKNOWN_METHOD,
            message,
        }
    }

    /// An error with a protocol code the server itself answers with (such
    /// as `too slow` for a subscription).
    pub(crate) fn protocol(code: ErrorCode, message: impl Into<String>) -> ServiceError {
        ServiceError {
            code,
            message: message.into(),
        }
    }

    /// The code sent to the client.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The message sent to the client.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl From<String> for ServiceError {
    fn from(message: String) -> Self {
        ServiceError::new(message)
    }
}

impl From<&str> for ServiceError {
    fn from(message: &str) -> Self {
        ServiceError::new(message)
    }
}
