//! Typed streams and subscriptions on [`Client`] (PROTOCOL.md revision
//! 2.2): a [`StreamMethod`]'s params encoded and its items and result
//! decoded, a [`Topic`]'s events decoded, on top of
//! [`Client::stream_raw`], [`Client::upload_raw`] and
//! [`Client::subscribe_raw`].

use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{codec, StreamMethod, Topic};
use crate::client::{CallOptions, Client, RawStream, RawUpload};
use crate::error::{Error, Result};
use crate::protocol::{Encoding, Entry, ErrorCode};

/// The items of a streaming method's answer, then its result: made by
/// [`Client::stream`] (and the receiving half of
/// [`Client::stream_both`]).
///
/// Credit goes back to the server as items are taken, so a consumer that
/// reads slowly makes the server wait. Dropping it before its end sends
/// CANCEL. It is also a [`futures_util::Stream`] of its items.
///
/// ```no_run
/// # async fn run(client: pipesvc::Client) -> pipesvc::Result<()> {
/// use pipesvc::rpc::StreamMethod;
///
/// const COUNT: StreamMethod<u64, (), u64, ()> = StreamMethod::server("count", "1 to n");
/// let mut numbers = client.stream(&COUNT, &3).await?;
/// while let Some(n) = numbers.next().await {
///     println!("{}", n?);
/// }
/// numbers.finish().await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct ItemStream<Out, Resp> {
    raw: RawStream,
    encoding: Encoding,
    method: &'static str,
    types: PhantomData<fn() -> (Out, Resp)>,
}

impl<Out: DeserializeOwned, Resp: DeserializeOwned> ItemStream<Out, Resp> {
    /// The next item; `None` after the last (then [`finish`](Self::finish)
    /// gives the result). An ERROR mid-stream, a lost connection or the
    /// deadline comes once as `Some(Err)`, then `None`.
    pub async fn next(&mut self) -> Option<Result<Out>> {
        std::future::poll_fn(|cx| self.poll_item(cx)).await
    }

    fn poll_item(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Out>>> {
        let (encoding, method) = (self.encoding, self.method);
        // `lagged` and `subscribed` belong to topics: not a method's.
        let decoded = std::task::ready!(self.raw.poll_item_with(cx, |value| {
            codec::decode(encoding, value, "item")
                .map_err(|e| Error::Protocol(format!("an item of {method} does not decode: {e}")))
        }));
        Poll::Ready(decoded.map(|item| item.and_then(|item| item)))
    }

    /// Reads to the end (discarding items not taken) and returns the
    /// method's result, or the error that ended the stream.
    pub async fn finish(self) -> Result<Resp> {
        let result = self.raw.finish().await?;
        codec::decode(self.encoding, &result, "result").map_err(|e| {
            Error::Protocol(format!(
                "the result of {} does not decode: {e}",
                self.method
            ))
        })
    }

    /// The stream's id on the connection.
    pub fn id(&self) -> u32 {
        self.raw.id()
    }
}

impl<Out: DeserializeOwned, Resp: DeserializeOwned> futures_util::Stream for ItemStream<Out, Resp> {
    type Item = Result<Out>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_item(cx)
    }
}

/// The sending half of a client or bidirectional stream: made by
/// [`Client::upload`] and [`Client::stream_both`].
#[derive(Debug)]
pub struct ItemSender<In> {
    raw: RawUpload,
    encoding: Encoding,
    method: &'static str,
    types: PhantomData<fn(In)>,
}

impl<In: Serialize> ItemSender<In> {
    /// Sends one item, waiting while the server's credit is used up. An
    /// item too large for one frame is [`Error::PayloadTooLarge`]; after
    /// the server's last answer (it failed, or needs no more),
    /// [`Error::Protocol`]: the answer itself comes on the receiving side.
    pub async fn send(&mut self, item: &In) -> Result<()> {
        let bytes = codec::encode_bytes(self.encoding, item).map_err(|e| {
            Error::Protocol(format!("cannot encode an item of {}: {e}", self.method))
        })?;
        self.raw.send(bytes).await
    }

    /// Ends this side (END): no more items.
    pub async fn end(&mut self) -> Result<()> {
        self.raw.end().await
    }
}

/// An upload (a client streaming method): items sent with
/// [`send`](Upload::send), then [`finish`](Upload::finish) sends END and
/// returns the method's result. Made by [`Client::upload`].
///
/// ```no_run
/// # async fn run(client: pipesvc::Client) -> pipesvc::Result<()> {
/// use pipesvc::rpc::StreamMethod;
///
/// const LINES: StreamMethod<(), String, (), u64> = StreamMethod::client("lines", "Counts lines");
/// let mut upload = client.upload(&LINES, &()).await?;
/// upload.send(&"a".to_owned()).await?;
/// upload.send(&"b".to_owned()).await?;
/// assert_eq!(upload.finish().await?, 2);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Upload<In, Resp> {
    sender: ItemSender<In>,
    /// Taken when a send finds the stream over, to say why.
    answer: Option<ItemStream<(), Resp>>,
}

impl<In: Serialize, Resp: DeserializeOwned> Upload<In, Resp> {
    /// Sends one item (see [`ItemSender::send`]). If the server has
    /// answered already (it failed early), that answer's error.
    pub async fn send(&mut self, item: &In) -> Result<()> {
        match self.sender.send(item).await {
            Err(Error::Protocol(_)) if self.sender.raw.is_over() => Err(self.answer_error().await),
            other => other,
        }
    }

    /// Ends the upload (END) and returns the method's result.
    pub async fn finish(mut self) -> Result<Resp> {
        // An END refused because the stream is over: the answer says why.
        let _ = self.sender.end().await;
        match self.answer.take() {
            Some(answer) => answer.finish().await,
            None => Err(self.ended_early()),
        }
    }

    /// The server's answer, which came before the upload ended.
    async fn answer_error(&mut self) -> Error {
        let Some(answer) = self.answer.take() else {
            return self.ended_early();
        };
        match answer.finish().await {
            Err(e) => e,
            Ok(_) => self.ended_early(),
        }
    }

    fn ended_early(&self) -> Error {
        Error::Protocol(format!(
            "{} answered before the upload ended",
            self.sender.method
        ))
    }
}

/// One item of a [`Subscription`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TopicEvent<E> {
    /// An event, in the order published.
    Event(E),
    /// The subscriber fell behind: so many events were dropped here.
    Lagged(u64),
    /// The connection was lost and the client subscribed again (after a
    /// service restart, say): events published in between were missed,
    /// so resync whatever state the events keep up to date.
    Resubscribed,
}

/// A subscription to a [`Topic`]: made by [`Client::subscribe`].
///
/// With the client's `reconnect` option, a lost connection (or a server
/// shutting down) does not end it: it subscribes again on the next
/// connection and yields [`TopicEvent::Resubscribed`]. It ends (`None`)
/// when the service closes the topic; dropping it unsubscribes.
///
/// ```no_run
/// # async fn run(client: pipesvc::Client) -> pipesvc::Result<()> {
/// use pipesvc::rpc::{Topic, TopicEvent};
///
/// const TICKS: Topic<u64> = Topic::new("ticks", "Uptime in ms, once a second");
/// let mut ticks = client.subscribe(&TICKS).await?;
/// while let Some(event) = ticks.next().await {
///     match event? {
///         TopicEvent::Event(ms) => println!("up {ms} ms"),
///         TopicEvent::Lagged(lost) => eprintln!("{lost} ticks lost"),
///         TopicEvent::Resubscribed => eprintln!("the service restarted"),
///         _ => {}
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Subscription<E> {
    client: Client,
    topic: String,
    encoding: Encoding,
    /// `None` between a lost subscription and the next.
    raw: Option<RawStream>,
    /// The next `subscribed` mark is one of a subscription made again.
    again: bool,
    done: bool,
    types: PhantomData<fn() -> E>,
}

impl<E: DeserializeOwned> Subscription<E> {
    /// The next event, lag or resubscription; `None` once the service
    /// closed the topic. An error that ends the subscription (ERROR `too
    /// slow` under the `disconnect` policy, a lost connection without
    /// `reconnect`) comes once as `Some(Err)`, then `None`.
    pub async fn next(&mut self) -> Option<Result<TopicEvent<E>>> {
        loop {
            if self.done {
                return None;
            }
            let raw = match self.raw.as_mut() {
                Some(raw) => raw,
                None => match self.client.subscribe_raw(&self.topic, self.encoding).await {
                    Ok(raw) => self.raw.insert(raw),
                    Err(e) => return self.end_with(e),
                },
            };
            match raw.next().await {
                Some(Ok(Entry::Item(bytes))) => {
                    let event = codec::decode(self.encoding, &bytes, "event").map_err(|e| {
                        let topic = &self.topic;
                        Error::Protocol(format!("an event of {topic} does not decode: {e}"))
                    });
                    return Some(event.map(TopicEvent::Event));
                }
                Some(Ok(Entry::Lagged(lost))) => return Some(Ok(TopicEvent::Lagged(lost))),
                Some(Ok(Entry::Subscribed)) if std::mem::take(&mut self.again) => {
                    return Some(Ok(TopicEvent::Resubscribed))
                }
                Some(Ok(_)) => {}
                Some(Err(e)) if self.resubscribes_after(&e) => {
                    tracing::debug!(topic = %self.topic, error = %e, "subscribing again");
                    self.raw = None;
                    self.again = true;
                }
                Some(Err(e)) => return self.end_with(e),
                None => {
                    self.done = true;
                    return None;
                }
            }
        }
    }

    fn end_with(&mut self, e: Error) -> Option<Result<TopicEvent<E>>> {
        self.done = true;
        self.raw = None;
        Some(Err(e))
    }

    /// Whether the subscription ended because the connection did (or the
    /// server is going), and the client will connect again.
    fn resubscribes_after(&self, e: &Error) -> bool {
        let lost = match e {
            Error::ConnectionClosed(_) => true,
            Error::Server { code, .. } => *code == ErrorCode::SHUTTING_DOWN,
            _ => false,
        };
        lost && self.client.reconnects_by_itself()
    }

    /// The topic's name.
    pub fn topic(&self) -> &str {
        &self.topic
    }
}

impl Client {
    /// Calls server streaming method `method` with `params` and returns
    /// its items as they come (revision 2.2), with the default
    /// [`CallOptions`] (no deadline: a stream may rightly last long; the
    /// client's [`encoding`](crate::ClientOptions::encoding)). An error
    /// of the call itself (`unknown method`, `bad request`) is the first
    /// item; a server without streams is [`Error::ServerTooOld`] at once.
    pub async fn stream<Req, In, Out, Resp>(
        &self,
        method: &StreamMethod<Req, In, Out, Resp>,
        params: &Req,
    ) -> Result<ItemStream<Out, Resp>>
    where
        Req: Serialize,
    {
        self.stream_with(method, params, CallOptions::new()).await
    }

    /// [`stream`](Self::stream) with `options`: a deadline for the whole
    /// stream, metadata, the encoding (of params, items and result).
    pub async fn stream_with<Req, In, Out, Resp>(
        &self,
        method: &StreamMethod<Req, In, Out, Resp>,
        params: &Req,
        options: CallOptions,
    ) -> Result<ItemStream<Out, Resp>>
    where
        Req: Serialize,
    {
        let (encoding, params) = self.encode_params(method.name(), params, &options).await?;
        let raw = self
            .stream_raw(method.name(), encoding, &params, &options)
            .await?;
        Ok(ItemStream {
            raw,
            encoding,
            method: method.name(),
            types: PhantomData,
        })
    }

    /// Calls client streaming method `method` with `params`: an upload of
    /// any size, in items that each fit in one frame.
    pub async fn upload<Req, In, Out, Resp>(
        &self,
        method: &StreamMethod<Req, In, Out, Resp>,
        params: &Req,
    ) -> Result<Upload<In, Resp>>
    where
        Req: Serialize,
    {
        let (sender, answer) = self
            .stream_both_with(method, params, CallOptions::new())
            .await?;
        let answer = ItemStream {
            raw: answer.raw,
            encoding: answer.encoding,
            method: answer.method,
            types: PhantomData,
        };
        Ok(Upload {
            sender,
            answer: Some(answer),
        })
    }

    /// Calls bidirectional streaming method `method` with `params`: the
    /// sending half and the receiving half (its items, then its result).
    /// The stream is cancelled once both are dropped before its end.
    pub async fn stream_both<Req, In, Out, Resp>(
        &self,
        method: &StreamMethod<Req, In, Out, Resp>,
        params: &Req,
    ) -> Result<(ItemSender<In>, ItemStream<Out, Resp>)>
    where
        Req: Serialize,
    {
        self.stream_both_with(method, params, CallOptions::new())
            .await
    }

    /// [`stream_both`](Self::stream_both) with `options`.
    pub async fn stream_both_with<Req, In, Out, Resp>(
        &self,
        method: &StreamMethod<Req, In, Out, Resp>,
        params: &Req,
        options: CallOptions,
    ) -> Result<(ItemSender<In>, ItemStream<Out, Resp>)>
    where
        Req: Serialize,
    {
        let (encoding, params) = self.encode_params(method.name(), params, &options).await?;
        let (upload, raw) = self
            .upload_raw(method.name(), encoding, &params, &options)
            .await?;
        let sender = ItemSender {
            raw: upload,
            encoding,
            method: method.name(),
            types: PhantomData,
        };
        let stream = ItemStream {
            raw,
            encoding,
            method: method.name(),
            types: PhantomData,
        };
        Ok((sender, stream))
    }

    /// Subscribes to `topic` (revision 2.2): its events as they are
    /// published, in the client's encoding. Subscribes again by itself
    /// after a reconnect (see [`Subscription`]).
    pub async fn subscribe<E: DeserializeOwned>(
        &self,
        topic: &Topic<E>,
    ) -> Result<Subscription<E>> {
        self.subscribe_to(topic.name()).await
    }

    /// [`subscribe`](Self::subscribe) to a topic named at run time (a
    /// tool such as `pipesvc watch`, with `E` = [`serde_json::Value`]).
    pub async fn subscribe_to<E: DeserializeOwned>(&self, topic: &str) -> Result<Subscription<E>> {
        // The client's encoding is known once the handshake is done.
        self.handshake_done().await?;
        let encoding = self.encoding();
        let raw = self.subscribe_raw(topic, encoding).await?;
        Ok(Subscription {
            client: self.clone(),
            topic: topic.to_owned(),
            encoding,
            raw: Some(raw),
            again: false,
            done: false,
            types: PhantomData,
        })
    }

    /// The params in the call's encoding: the client's, known once the
    /// handshake is done (a stream waits for the HELLO reply anyway, on a
    /// connection that [sent first](crate::ClientOptions::send_first)).
    async fn encode_params<Req: Serialize>(
        &self,
        name: &str,
        params: &Req,
        options: &CallOptions,
    ) -> Result<(Encoding, Vec<u8>)> {
        if options.encoding.is_none() {
            self.handshake_done().await?;
        }
        let encoding = options.encoding.unwrap_or_else(|| self.encoding());
        let params = codec::encode(encoding, params)
            .map_err(|e| Error::Protocol(format!("cannot encode the params of {name}: {e}")))?;
        Ok((encoding, params))
    }
}
