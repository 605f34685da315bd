//! Typed calls on [`Client`]: a [`Method`]'s request encoded, its response
//! decoded, on top of [`Client::call_raw`].

use std::future::Future;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{codec, Description, Method};
use crate::client::{CallOptions, Client};
use crate::error::{Error, Result};

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
        let params = codec::encode(encoding, request)
            .map_err(|e| Error::Protocol(format!("cannot encode the params of {name}: {e}")));
        async move {
            let result = self.call_raw(name, encoding, &params?, &options).await?;
            codec::decode(encoding, &result, "result")
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
