//! Typed calls on [`Client`]: a [`Method`]'s request encoded, its response
//! decoded, on top of [`Client::call_raw`].

use std::future::Future;

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
        let encoding = options.encoding.unwrap_or_else(|| self.encoding());
        let encode = |encoding| {
            codec::encode(encoding, request)
                .map_err(|e| Error::Protocol(format!("cannot encode the params of {name}: {e}")))
        };
        let params = encode(encoding);
        // Before the HELLO reply of a connection that sent first, the
        // server's encodings are not known: the params are also encoded in
        // the other encoding, to call again in it if the server turns out
        // not to take this one (PROTOCOL.md, "Sending first": `bad
        // request`, not run).
        let other = match encoding {
            Encoding::Json => Encoding::MessagePack,
            Encoding::MessagePack => Encoding::Json,
        };
        let fallback = (options.encoding.is_none() && self.encodings().is_empty())
            .then(|| encode(other).ok())
            .flatten();
        async move {
            let mut used = encoding;
            let mut result = self.call_raw(name, encoding, &params?, &options).await;
            if let (Err(Error::Server { code, .. }), Some(params)) = (&result, fallback) {
                let offered = self.encodings();
                let refused = *code == ErrorCode::BAD_REQUEST && !offered.contains(&encoding);
                if refused && offered.contains(&other) {
                    used = other;
                    result = self.call_raw(name, other, &params, &options).await;
                }
            }
            codec::decode(used, &result?, "result")
                .map_err(|e| Error::Protocol(format!("the result of {name} does not decode: {e}")))
        }
    }

    /// Asks the server what it offers (DESCRIBE, protocol 2): its name,
    /// version, encodings and methods with their schemas.
    pub async fn describe(&self) -> Result<Description> {
        let json = self.describe_raw().await?;
        serde_json::from_slice(&json)
            .map_err(|e| Error::Protocol(format!("the description does not decode: {e}")))
    }
}
