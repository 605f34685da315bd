//! Typed calls on [`Client`]: a [`Method`]'s request encoded, its response
//! decoded, on top of [`Client::call_raw`].

use std::future::Future;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{codec, Description, Method};
use crate::client::{CallOptions, Client};
use crate::error::{Error, Result};
use crate::protocol::{Encoding, ErrorCode};

impl Client {
    /// Calls `method` with `request` and returns its decoded response
    /// (protocol 2), with the default [`CallOptions`]: the client's
    /// `request_timeout` as the deadline, its
    /// [`encoding`](crate::ClientOptions::encoding).
    ///
    /// A service error is [`Error::Remote`] (its own code) or
    /// [`Error::Server`] (`unknown method`, `bad request`, `timed out`,
    /// `handler failed`...; [`Error::code`] tells which); a response that
    /// does not decode into `Resp` is [`Error::Protocol`] naming the method
    /// and the field. The request is encoded before this returns, so the
    /// future borrows neither it nor `method`; dropping the future sends
    /// CANCEL.
    ///
    /// ```no_run
    /// # async fn run(client: pipesvc::Client) -> pipesvc::Result<()> {
    /// use pipesvc::rpc::Method;
    ///
    /// const SHOUT: Method<String, String> = Method::new("shout", "The text in capitals");
    /// let loud = client.call(&SHOUT, &"hi".to_owned()).await?;
    /// # let _ = loud; Ok(()) }
    /// ```
    #[inline]
    pub fn call<Req, Resp>(
        &self,
        method: &Method<Req, Resp>,
        request: &Req,
    ) -> impl Future<Output = Result<Resp>> + Send + '_
    where
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        self.call_with(method, request, CallOptions::new())
    }

    /// [`call`](Self::call) with `options`: its deadline (sent with the
    /// call and enforced by the server, which answers ERROR `timed out`),
    /// metadata the handler reads
    /// ([`ConnectionContext::metadata`](crate::server::ConnectionContext::metadata)),
    /// and its encoding.
    ///
    /// Made before the HELLO reply is read, on a client that
    /// [sent first](crate::ClientOptions::send_first), without an encoding
    /// in `options`: the params are also encoded in the other encoding,
    /// and the call is made again in it if the server answers `bad
    /// request` for one it does not take (it ran nothing).
    pub fn call_with<Req, Resp>(
        &self,
        method: &Method<Req, Resp>,
        request: &Req,
        options: CallOptions,
    ) -> impl Future<Output = Result<Resp>> + Send + '_
    where
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        let name = method.name();
        let (encoding, known) = match options.encoding {
            Some(encoding) => (encoding, true),
            None => self.call_encoding(),
        };
        let cannot = |e| Error::Protocol(format!("cannot encode the params of {name}: {e}"));
        // The params are encoded straight into the CALL's payload.
        let call = codec::with_encoded(encoding, request, |params| {
            self.call_frame(name, encoding, params, &options)
        })
        .map_err(cannot)
        .and_then(|call| call);
        // Before the HELLO reply of a connection that sent first, the
        // server's encodings are not known: the params are also encoded in
        // the other encoding, to call again in it if the server turns out
        // not to take this one (PROTOCOL.md, "Sending first": `bad
        // request`, not run). Boxed, as is that second call: the common
        // call's future stays as small as it was, and is built in place.
        let fallback = (!known)
            .then(|| {
                let other = match encoding {
                    Encoding::Json => Encoding::MessagePack,
                    Encoding::MessagePack => Encoding::Json,
                };
                let params = codec::encode(other, request).ok()?;
                Some(Box::new((other, params)))
            })
            .flatten();
        async move {
            let mut used = encoding;
            let mut result = call?.send().await;
            if let Some(fallback) = fallback {
                (used, result) =
                    Box::pin(self.again_if_refused(name, encoding, result, *fallback, &options))
                        .await;
            }
            decode_result(name, used, &result?)
        }
    }

    /// A typed call's `result` in `encoding`, made before the server's
    /// encodings were known; if the server answered `bad request` and does
    /// not take `encoding` but takes the other one, the call made again
    /// in it. Returns the encoding of the result.
    async fn again_if_refused(
        &self,
        name: &str,
        encoding: Encoding,
        result: Result<Bytes>,
        (other, params): (Encoding, Vec<u8>),
        options: &CallOptions,
    ) -> (Encoding, Result<Bytes>) {
        if let Err(Error::Server { code, .. }) = &result {
            let offered = self.encodings();
            let refused = *code == ErrorCode::BAD_REQUEST && !offered.contains(&encoding);
            if refused && offered.contains(&other) {
                return (other, self.call_raw(name, other, &params, options).await);
            }
        }
        (encoding, result)
    }

    /// Asks the server what it offers (DESCRIBE, protocol 2): its name,
    /// version, encodings and methods with their schemas.
    pub async fn describe(&self) -> Result<Description> {
        let json = self.describe_raw().await?;
        serde_json::from_slice(&json)
            .map_err(|e| Error::Protocol(format!("the description does not decode: {e}")))
    }
}

/// Decodes a typed call's result.
fn decode_result<Resp: DeserializeOwned>(
    name: &str,
    encoding: Encoding,
    result: &[u8],
) -> Result<Resp> {
    codec::decode(encoding, result, "result")
        .map_err(|e| Error::Protocol(format!("the result of {name} does not decode: {e}")))
}
