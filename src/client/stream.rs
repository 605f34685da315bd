//! Streams (PROTOCOL.md revision 2.2) on the client's side: the
//! application's end of a stream's items ([`RawStream`]), the sending end of
//! an upload ([`RawUpload`]), and the credit both directions count.
//!
//! The reader task checks every ITEM against the credit the client gave
//! (an ITEM beyond it closes the connection: the server broke flow
//! control), and queues it for the application without waiting. The
//! credit is granted back only as the application *takes* the items, so
//! a stream never holds more than the window and one ITEM the
//! application has not taken: a slow consumer makes the server wait.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, Notify};
use tokio::time::{Instant, Sleep};

use super::pending::Registration;
use super::writer::Writer;
use super::{lock, CallOptions, Client, DEADLINE_GRACE};
use crate::error::{CloseReason, Error, Result};
use crate::protocol::{
    encode_credit, encode_item, entry_at, Consumed, Credit, Encoding, Entry, EntryRef, Frame, Kind,
    Subscribe, ENTRY_HEADER_LEN, HEADER_LEN,
};

/// What the reader hands a stream.
#[derive(Debug)]
pub(super) enum Delivery {
    /// One ITEM's payload, checked: its entries are read as the
    /// application takes them (no more memory than the payload's).
    Item(Bytes),
    /// The last answer: the stream's result, or why it failed.
    End(Result<Bytes>),
}

/// A stream's credit, both ways, as the client counts it.
#[derive(Debug)]
pub(super) struct Flow {
    /// What the server may still send: an ITEM while it is 0 or less
    /// breaks flow control.
    inbound: Mutex<Credit>,
    /// What this client may still send on an upload.
    outbound: Mutex<Credit>,
    /// Signalled when credit comes for `outbound`, or the stream ends.
    changed: Notify,
    /// The stream's last answer came (or the connection is gone).
    ended: AtomicBool,
}

impl Flow {
    pub(super) fn new(window: u32) -> Flow {
        Flow {
            inbound: Mutex::new(Credit::new(window)),
            outbound: Mutex::new(Credit::new(window)),
            changed: Notify::new(),
            ended: AtomicBool::new(false),
        }
    }

    /// The server sent an ITEM of `len` bytes: `Err` if it had no credit.
    pub(super) fn server_sent(&self, id: u32, len: usize) -> Result<(), CloseReason> {
        match lock(&self.inbound).take(len) {
            true => Ok(()),
            false => Err(CloseReason::Protocol(format!(
                "the server sent an ITEM on stream {id} without credit (flow control)"
            ))),
        }
    }

    /// The server granted `bytes` for this client's items.
    pub(super) fn server_granted(&self, id: u32, bytes: u32) -> Result<(), CloseReason> {
        lock(&self.outbound)
            .grant(bytes)
            .map_err(|e| CloseReason::Protocol(format!("stream {id}: {e} (flow control)")))?;
        self.changed.notify_waiters();
        Ok(())
    }

    /// The stream is over: an upload waiting for credit stops waiting.
    pub(super) fn end(&self) {
        self.ended.store(true, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    fn is_ended(&self) -> bool {
        self.ended.load(Ordering::SeqCst)
    }
}

/// The application's end of a stream's items, as bytes in the stream's
/// encoding: what [`rpc`](crate::rpc)'s typed streams, subscriptions and
/// `pipesvc call`/`watch` build on. Made by [`Client::stream_raw`] or
/// [`Client::subscribe_raw`].
///
/// Read it with [`next`](RawStream::next) until `None`, then take the
/// result with [`finish`](RawStream::finish). Dropping it before its end
/// sends CANCEL (unsubscribes, for a subscription).
#[derive(Debug)]
pub struct RawStream {
    /// Shared with the upload half of a bidirectional stream: the stream
    /// is cancelled once both are dropped before its end.
    registration: Arc<Registration>,
    deliveries: mpsc::UnboundedReceiver<Delivery>,
    flow: Arc<Flow>,
    writer: Arc<Writer>,
    /// The payload of the ITEM being taken, and where its next entry is.
    batch: Bytes,
    at: usize,
    consumed: Consumed,
    /// Where the client stops waiting: the deadline sent and the grace.
    deadline: Option<Pin<Box<Sleep>>>,
    limit: Option<Duration>,
    end: End,
}

/// How far a stream got.
#[derive(Debug)]
enum End {
    Open,
    /// The last answer came; `finish` returns it.
    Answered(Result<Bytes>),
    /// The error was handed out by `next`; `finish` repeats it.
    Failed(Error),
    /// `finish` took the answer.
    Taken,
}

impl RawStream {
    /// The stream's id on the connection.
    pub fn id(&self) -> u32 {
        self.registration.id
    }

    /// The next entry: an item (or a topic's event) as bytes, a `lagged`
    /// count or the `subscribed` mark of a subscription; `None` once the
    /// last answer came (see [`finish`](RawStream::finish)). An error (an
    /// ERROR ending the stream mid-way, a lost connection, the deadline)
    /// comes once as `Some(Err)`, then `None`.
    pub async fn next(&mut self) -> Option<Result<Entry>> {
        poll_fn(|cx| self.poll_entry(cx)).await
    }

    /// [`next`](RawStream::next) as a poll.
    pub fn poll_entry(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Entry>>> {
        self.poll_with(cx, |batch, entry| Some(entry.to_entry(batch)))
    }

    /// The next `item` entry's value read by `read` where it lies in the
    /// ITEM's payload (a typed stream decodes it there: no reference on
    /// the payload per item); other entries are skipped.
    #[cfg_attr(not(feature = "rpc"), allow(dead_code))]
    pub(crate) fn poll_item_with<R>(
        &mut self,
        cx: &mut Context<'_>,
        mut read: impl FnMut(&[u8]) -> R,
    ) -> Poll<Option<Result<R>>> {
        self.poll_with(cx, |_, entry| match entry {
            EntryRef::Item(value) => Some(read(value)),
            EntryRef::Lagged(_) | EntryRef::Subscribed => None,
        })
    }

    /// The next entry `take` keeps (it is lent the entry and the payload
    /// that holds it), taking the ITEMs delivered as they are needed.
    fn poll_with<R>(
        &mut self,
        cx: &mut Context<'_>,
        mut take: impl FnMut(&Bytes, EntryRef<'_>) -> Option<R>,
    ) -> Poll<Option<Result<R>>> {
        loop {
            if self.at < self.batch.len() {
                // The reader checked the payload: no error is left in it.
                let entry = entry_at(&self.batch, &mut self.at, false).ok().flatten();
                let taken = entry.and_then(|entry| take(&self.batch, entry));
                if self.at >= self.batch.len() {
                    self.took_batch();
                }
                match taken {
                    Some(taken) => return Poll::Ready(Some(Ok(taken))),
                    // Entries this caller does not take, or of types this
                    // client does not know.
                    None => continue,
                }
            }
            if !matches!(self.end, End::Open) {
                return Poll::Ready(None);
            }
            let delivery = match self.deliveries.poll_recv(cx) {
                Poll::Ready(delivery) => delivery,
                Poll::Pending => return self.poll_deadline(cx),
            };
            match delivery {
                Some(Delivery::Item(payload)) => {
                    self.batch = payload;
                    self.at = 0;
                }
                Some(Delivery::End(Ok(result))) => self.end = End::Answered(Ok(result)),
                Some(Delivery::End(Err(e))) => return Poll::Ready(Some(Err(self.fail(e)))),
                // The pending table went without a word: the connection.
                None => {
                    let lost = Error::ConnectionClosed(CloseReason::Lost);
                    return Poll::Ready(Some(Err(self.fail(lost))));
                }
            }
        }
    }

    /// Reads to the end, discarding the items left, and returns the
    /// stream's result in its encoding: the method's result, or the error
    /// that ended the stream.
    pub async fn finish(mut self) -> Result<Bytes> {
        while let Some(entry) = self.next().await {
            entry?;
        }
        match std::mem::replace(&mut self.end, End::Taken) {
            End::Answered(result) => result,
            End::Failed(e) => Err(duplicate(&e)),
            End::Open | End::Taken => Err(Error::ConnectionClosed(CloseReason::Lost)),
        }
    }

    /// Records the error that ended the stream, and returns it.
    fn fail(&mut self, e: Error) -> Error {
        self.end = End::Failed(duplicate(&e));
        self.batch = Bytes::new();
        self.at = 0;
        e
    }

    /// The application took every entry of an ITEM: its bytes count as
    /// consumed, and credit goes back once that is half the window.
    fn took_batch(&mut self) {
        let Some(grant) = self.consumed.took(self.batch.len()) else {
            return;
        };
        if self.flow.is_ended() {
            return;
        }
        // Counted before it is sent, so that an ITEM the grant allows is
        // never taken for one beyond the credit.
        if lock(&self.flow.inbound).grant(grant).is_err() {
            return;
        }
        let credit = Frame::new(Kind::Credit, self.id(), encode_credit(grant));
        self.writer.queue_control(credit);
    }

    fn poll_deadline<R>(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<R>>> {
        let Some(sleep) = self.deadline.as_mut() else {
            return Poll::Pending;
        };
        std::task::ready!(sleep.as_mut().poll(cx));
        self.deadline = None;
        let limit = self.limit.unwrap_or_default();
        let timeout = Error::Timeout(limit, "waiting for the stream's end");
        Poll::Ready(Some(Err(self.fail(timeout))))
    }
}

impl futures_util::Stream for RawStream {
    type Item = Result<Entry>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_entry(cx)
    }
}

/// An error like `e`, for the second time it is reported (errors are not
/// `Clone`: their causes may not be).
fn duplicate(e: &Error) -> Error {
    match e {
        Error::Remote { code, message } => Error::Remote {
            code: *code,
            message: message.clone(),
        },
        Error::Server { code, message } => Error::Server {
            code: *code,
            message: message.clone(),
        },
        Error::ConnectionClosed(reason) => Error::ConnectionClosed(reason.clone()),
        Error::Timeout(limit, what) => Error::Timeout(*limit, what),
        other => Error::Protocol(other.to_string()),
    }
}

/// The sending end of an upload (a client or bidirectional stream), as
/// bytes in the stream's encoding. Made by [`Client::upload_raw`].
#[derive(Debug)]
pub struct RawUpload {
    registration: Arc<Registration>,
    flow: Arc<Flow>,
    writer: Arc<Writer>,
    /// The largest ITEM payload the server takes.
    max_payload: usize,
    ended: bool,
}

impl RawUpload {
    /// Sends one item (a value in the stream's encoding), waiting while
    /// the server's credit is used up. An item that cannot fit in one
    /// frame is [`Error::PayloadTooLarge`]; once the server gave its last
    /// answer (it failed, or needs no more), [`Error::Protocol`] saying so:
    /// the answer is what the receiving half's
    /// [`finish`](RawStream::finish) returns.
    pub async fn send(&mut self, item: Bytes) -> Result<()> {
        let entry = Entry::Item(item);
        if entry.encoded_len() > self.max_payload {
            return Err(Error::PayloadTooLarge {
                len: entry.encoded_len() - ENTRY_HEADER_LEN,
                max: self.max_payload - ENTRY_HEADER_LEN,
            });
        }
        self.wait_for_credit().await?;
        let payload = encode_item(std::slice::from_ref(&entry));
        let len = payload.len();
        lock(&self.flow.outbound).take(len);
        let frame = Frame::new(Kind::Item, self.registration.id, payload);
        self.writer
            .send(frame)
            .await
            .map_err(Error::ConnectionClosed)
    }

    async fn wait_for_credit(&self) -> Result<()> {
        loop {
            let changed = self.flow.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.flow.is_ended() || self.ended {
                return Err(Error::Protocol(
                    "the stream has ended: the server gave its answer".into(),
                ));
            }
            if lock(&self.flow.outbound).may_send() {
                return Ok(());
            }
            changed.await;
        }
    }

    /// Whether the stream is over: the server gave its last answer (or
    /// the connection is gone).
    pub fn is_over(&self) -> bool {
        self.flow.is_ended()
    }

    /// Ends this side of the stream (END): the client sends no more items.
    pub async fn end(&mut self) -> Result<()> {
        if std::mem::replace(&mut self.ended, true) || self.flow.is_ended() {
            return Ok(());
        }
        let frame = Frame::new(Kind::End, self.registration.id, Bytes::new());
        self.writer
            .send(frame)
            .await
            .map_err(Error::ConnectionClosed)
    }
}

/// Both ends of a stream just opened.
pub(super) struct Opened {
    pub(super) stream: RawStream,
    pub(super) upload: RawUpload,
}

impl Client {
    /// The server's stream window (revision 2.2: the initial credit of
    /// each direction of every stream); `None` if the server does not
    /// speak revision 2.2, so that streams and topics are refused.
    pub fn stream_window(&self) -> Option<u32> {
        let current = self.current();
        let reply = &current.greeting()?.reply;
        reply.stream_window.filter(|_| reply.accepts(Kind::Item))
    }

    /// Opens a stream: calls streaming method `method` with `params`
    /// already in `encoding` (revision 2.2), and returns its items as
    /// they come. Any error of the call itself (`unknown method`, `bad
    /// request`...) is the stream's first [`next`](RawStream::next).
    ///
    /// The deadline of `options` covers the whole stream; without one the
    /// stream has none (not the client's `request_timeout`: a stream may
    /// rightly last long). A server that does not speak revision 2.2 is
    /// [`Error::ServerTooOld`], before anything is sent.
    pub async fn stream_raw(
        &self,
        method: &str,
        encoding: Encoding,
        params: &[u8],
        options: &CallOptions,
    ) -> Result<RawStream> {
        Ok(self
            .open_call(method, encoding, params, options)
            .await?
            .stream)
    }

    /// Opens an upload: calls client (or bidirectional) streaming method
    /// `method` with `params` in `encoding`, and returns the sending end
    /// and the receiving end (the items of a bidirectional stream, then
    /// the result). As for [`stream_raw`](Client::stream_raw), the
    /// deadline of `options` covers the whole stream.
    pub async fn upload_raw(
        &self,
        method: &str,
        encoding: Encoding,
        params: &[u8],
        options: &CallOptions,
    ) -> Result<(RawUpload, RawStream)> {
        let opened = self.open_call(method, encoding, params, options).await?;
        Ok((opened.upload, opened.stream))
    }

    /// Subscribes to `topic` with events in `encoding` (SUBSCRIBE,
    /// revision 2.2). The first entry is [`Entry::Subscribed`]; each
    /// event is an [`Entry::Item`], and [`Entry::Lagged`] counts events
    /// dropped because the subscriber fell behind. No deadline; dropping
    /// it unsubscribes. [`rpc`](crate::rpc)'s typed subscriptions also
    /// subscribe again after a reconnect.
    pub async fn subscribe_raw(&self, topic: &str, encoding: Encoding) -> Result<RawStream> {
        let subscribe = Subscribe::new(encoding, topic)
            .ok_or_else(|| Error::config("topic", "a topic's name is 1 to 255 bytes of UTF-8"))?;
        let opened = self
            .open_stream(Kind::Subscribe, subscribe.encode(), None)
            .await?;
        Ok(opened.stream)
    }

    async fn open_call(
        &self,
        method: &str,
        encoding: Encoding,
        params: &[u8],
        options: &CallOptions,
    ) -> Result<Opened> {
        let deadline = options.timeout.flatten();
        let payload = options.call_payload(method, encoding, deadline, params)?;
        self.open_stream(Kind::Call, payload, deadline).await
    }

    /// Sends the frame that opens a stream (a CALL or a SUBSCRIBE) on the
    /// live connection, with the stream registered first so that no
    /// answer can come before it.
    async fn open_stream(
        &self,
        kind: Kind,
        payload: Bytes,
        deadline: Option<Duration>,
    ) -> Result<Opened> {
        let connection = self.connection().await?;
        // A connection that sent first: the HELLO reply says whether the
        // server has streams, and their credit.
        let greeting = connection.greeted().await?;
        let reply = &greeting.reply;
        let window = match reply.stream_window {
            Some(window) if reply.accepts(Kind::Item) && reply.accepts(kind) => window,
            _ => {
                return Err(Error::ServerTooOld {
                    server: greeting.server.server_name.clone(),
                    message: "it does not speak protocol revision 2.2 \
                              (streams and topics): its HELLO reply lists no ITEM"
                        .into(),
                })
            }
        };
        let max_payload = greeting.server.max_frame_len as usize - HEADER_LEN;
        if payload.len() > max_payload {
            return Err(Error::PayloadTooLarge {
                len: payload.len(),
                max: max_payload,
            });
        }
        let (mut registration, deliveries, flow) = connection.pending.register_stream(window)?;
        let writer = connection.writer.clone();
        let frame = Frame::new(kind, registration.id, payload);
        writer
            .send(frame)
            .await
            .map_err(|why| connection.closed_error_or(why))?;
        registration.cancel_through(&writer);
        let registration = Arc::new(registration);
        let wait = deadline.map(|d| d.saturating_add(DEADLINE_GRACE));
        let stream = RawStream {
            registration: registration.clone(),
            deliveries,
            flow: flow.clone(),
            writer: writer.clone(),
            batch: Bytes::new(),
            at: 0,
            consumed: Consumed::new(window),
            deadline: wait.map(|wait| Box::pin(tokio::time::sleep_until(Instant::now() + wait))),
            limit: deadline,
            end: End::Open,
        };
        let upload = RawUpload {
            registration,
            flow,
            writer,
            max_payload,
            ended: false,
        };
        Ok(Opened { stream, upload })
    }
}
