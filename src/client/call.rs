//! Calls of named methods (protocol 2), as bytes: what the typed layer
//! ([`rpc`](crate::rpc)) and the CLI build on.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;

use super::Client;
use crate::error::{Error, Result};
use crate::protocol::{CallParts, Encoding, Kind};

/// How long a client waits for a call's answer past the deadline it sent,
/// so that the server's ERROR `timed out` normally arrives before the
/// client gives up itself.
pub const DEADLINE_GRACE: Duration = Duration::from_millis(500);

/// Options of one call: its deadline, its metadata, its encoding.
///
/// ```
/// use std::time::Duration;
/// use pipesvc::client::CallOptions;
///
/// let options = CallOptions::new()
///     .timeout(Some(Duration::from_secs(2)))
///     .metadata("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
/// # let _ = options;
/// ```
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct CallOptions {
    pub(crate) timeout: Option<Option<Duration>>,
    pub(crate) metadata: Vec<(String, String)>,
    pub(crate) encoding: Option<Encoding>,
}

impl CallOptions {
    /// The defaults: the client's `request_timeout` as the deadline, no
    /// metadata, the client's encoding.
    pub fn new() -> CallOptions {
        CallOptions::default()
    }

    /// The call's deadline, sent with it: the server stops the call there
    /// with ERROR `timed out` (`None`: no deadline). Default: the client's
    /// [`request_timeout`](super::ClientOptions::request_timeout).
    pub fn timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Adds a metadata entry (such as a trace context) the handler reads
    /// with [`ConnectionContext::metadata`](crate::server::ConnectionContext::metadata).
    /// Keys starting with `pipesvc-` are the protocol's: a server drops
    /// them ([`RESERVED_METADATA_PREFIX`](crate::protocol::RESERVED_METADATA_PREFIX)).
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.push((key.into(), value.into()));
        self
    }

    /// The encoding of this call's params and result, instead of the
    /// client's choice (see [`Client::encoding`]).
    pub fn encoding(mut self, encoding: Encoding) -> Self {
        self.encoding = Some(encoding);
        self
    }

    /// The deadline this call sends, given the client's default.
    pub(crate) fn deadline(&self, default: Option<Duration>) -> Option<Duration> {
        self.timeout.unwrap_or(default)
    }
}

impl CallOptions {
    /// A CALL's payload for `method` with these options' metadata, the
    /// `deadline` it sends (a call's and a stream's differ in how they pick
    /// it) and `params` already encoded in `encoding`.
    pub(super) fn call_payload(
        &self,
        method: &str,
        encoding: Encoding,
        deadline: Option<Duration>,
        params: &[u8],
    ) -> Result<Bytes> {
        let header = CallParts {
            encoding: encoding.to_u8(),
            method,
            timeout: deadline,
            metadata: &self.metadata,
        };
        header
            .encode_with(params)
            .map_err(|e| Error::Protocol(e.to_string()))
    }
}

impl Client {
    /// Calls `method` with `params` already in `encoding`, and returns the
    /// result's bytes in that encoding (protocol 2): what
    /// [`rpc`](crate::rpc)'s typed calls and `pipesvc call --method` use.
    ///
    /// The deadline travels with the call; the client waits
    /// [`DEADLINE_GRACE`] longer for the server's answer. An ERROR answer
    /// is [`Error::Remote`] (a service code) or [`Error::Server`] (a
    /// protocol code such as `unknown method`, `bad request`, `timed out`).
    /// Dropping the returned future before it finishes sends CANCEL.
    pub async fn call_raw(
        &self,
        method: &str,
        encoding: Encoding,
        params: &[u8],
        options: &CallOptions,
    ) -> Result<Bytes> {
        self.call_frame(method, encoding, params, options)?
            .send()
            .await
    }

    /// [`Client::call_raw`]'s CALL, made up before it is sent: typed calls
    /// encode their params straight into its payload.
    pub(crate) fn call_frame(
        &self,
        method: &str,
        encoding: Encoding,
        params: &[u8],
        options: &CallOptions,
    ) -> Result<CallFrame<'_>> {
        let deadline = options.deadline(self.shared.options.request_timeout);
        Ok(CallFrame {
            client: self,
            payload: options.call_payload(method, encoding, deadline, params)?,
            wait: deadline.map(|d| d.saturating_add(DEADLINE_GRACE)),
        })
    }

    /// The encoding this client's typed calls use: its
    /// [`encoding`](super::ClientOptions::encoding) option if the server
    /// offers it, else the first the server offers that this client
    /// knows, else the option (the server will answer `bad request`,
    /// naming what it offers).
    pub fn encoding(&self) -> Encoding {
        self.call_encoding().0
    }

    /// [`Client::encoding`], and whether the server's encodings are known
    /// (false before the HELLO reply of a connection that sent first),
    /// from one look at the connection and without allocating: every
    /// typed call asks.
    pub(crate) fn call_encoding(&self) -> (Encoding, bool) {
        let wanted = self.shared.options.encoding;
        let current = self.current();
        let Some(greeting) = current.greeting() else {
            return (wanted, false);
        };
        let mut offered = greeting.reply.known_encodings_iter();
        let encoding = match offered.clone().any(|e| e == wanted) {
            true => wanted,
            false => offered.next().unwrap_or(wanted),
        };
        (encoding, true)
    }

    /// The encodings the server accepts for CALL params, in its order of
    /// preference (from its HELLO reply), those this client knows.
    /// Empty until the HELLO reply is read, on a connection that sent
    /// first ([`send_first`](super::ClientOptions::send_first)).
    pub fn encodings(&self) -> Vec<Encoding> {
        let current = self.current();
        current
            .greeting()
            .map_or_else(Vec::new, |greeting| greeting.reply.known_encodings())
    }

    /// The protocol version of the current connection (2; the version
    /// asked for, until the HELLO reply is read on a connection that sent
    /// first).
    pub fn protocol_version(&self) -> u16 {
        let current = self.current();
        current
            .greeting()
            .map_or(crate::protocol::PROTOCOL_VERSION, |greeting| {
                greeting.reply.version
            })
    }

    /// Asks the server for its description (DESCRIBE, protocol 2) and
    /// returns the JSON bytes; [`rpc`](crate::rpc) parses them.
    pub async fn describe_raw(&self) -> Result<Bytes> {
        let limit = self.shared.options.request_timeout;
        self.exchange(Kind::Describe, Bytes::new(), limit).await
    }
}

/// A CALL ready to send ([`Client::call_frame`]): its payload, and how
/// long its caller waits for the answer.
pub(crate) struct CallFrame<'a> {
    client: &'a Client,
    payload: Bytes,
    wait: Option<Duration>,
}

impl<'a> CallFrame<'a> {
    /// Sends the CALL and waits for its answer: the result's bytes.
    // `exchange`'s own future, not one more state machine around it, and
    // inlined, so that it is built where the typed call keeps it rather
    // than moved there.
    #[inline]
    pub(crate) fn send(self) -> impl Future<Output = Result<Bytes>> + Send + 'a {
        self.client.exchange(Kind::Call, self.payload, self.wait)
    }
}
