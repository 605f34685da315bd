//! [`Calls`]: what answers the CALLs of protocol version 2.
//!
//! The server reads each CALL's header (method, encoding, deadline,
//! metadata), enforces the deadline and cancellation, and hands the rest
//! here. [`rpc::Service`](crate::rpc::Service) implements it from typed
//! method definitions; a product can implement it by hand too.

use bytes::Bytes;
use futures_util::future::BoxFuture;

use super::{ConnectionContext, Publisher, ServiceError, StreamItems};
use crate::protocol::Encoding;
use crate::protocol::StreamDirection;

/// The typed methods of a service, as the server sees them: bytes in the
/// CALL's encoding in, bytes in that encoding out.
pub trait Calls: Send + Sync + 'static {
    /// The encodings CALL params may come in, in order of preference (sent
    /// in the HELLO reply). A CALL in another one gets ERROR `bad request`
    /// without reaching [`Calls::call`].
    fn encodings(&self) -> &[Encoding];

    /// The DESCRIBE answer: a JSON object as PROTOCOL.md ("DESCRIBE")
    /// defines it, made once (the server answers every DESCRIBE with it).
    fn description(&self) -> Bytes;

    /// Runs `method` with `params` (in `encoding`). An unknown method is
    /// [`ServiceError::unknown_method`], params that do not decode
    /// [`ServiceError::bad_request`]. The deadline, the metadata and the
    /// cancellation signal are on `ctx` ([`ConnectionContext::deadline`]).
    /// The future is dropped when the call is cancelled or its deadline
    /// passes.
    fn call(
        &self,
        method: &str,
        encoding: Encoding,
        params: Bytes,
        ctx: ConnectionContext,
    ) -> BoxFuture<'static, Result<Bytes, ServiceError>>;

    /// Revision 2.2: the service's topics, which clients SUBSCRIBE to;
    /// `None` (the default) for a service without topics.
    fn publisher(&self) -> Option<&Publisher> {
        None
    }

    /// Revision 2.2: whether `method` streams, and which way; `None` for
    /// a method that does not (the default: a service without streaming
    /// methods). A CALL of a streaming method is started with
    /// [`Calls::call_stream`], outside the in-flight limit.
    fn stream_direction(&self, method: &str) -> Option<StreamDirection> {
        let _ = method;
        None
    }

    /// Runs the streaming `method` with `params` (in `encoding`): it sends
    /// and takes items through `items` (in the same encoding) and answers
    /// with its result, the stream's last answer. Called only for a
    /// method [`Calls::stream_direction`] names.
    fn call_stream(
        &self,
        method: &str,
        encoding: Encoding,
        params: Bytes,
        items: StreamItems,
        ctx: ConnectionContext,
    ) -> BoxFuture<'static, Result<Bytes, ServiceError>> {
        let _ = (encoding, params, items, ctx);
        Box::pin(std::future::ready(Err(ServiceError::unknown_method(
            method,
        ))))
    }
}
