//! One server stream's items on their way to the client (PROTOCOL.md,
//! "Streams" and "Flow control", revision 2.2): the producer (a streaming
//! method) queues encoded items, and the connection takes them as ITEM
//! frames while the client's credit allows, through the stream's in-flight
//! slot ([`Parts`]).
//!
//! - **Flow control.** An ITEM goes out only while the credit is above 0,
//!   and takes its payload's length from it; CREDIT frames add to it
//!   ([`StreamOut::grant`]).
//! - **Bounded memory.** The producer waits ([`ItemSender::send`]) while
//!   the items queued and not yet sent reach the queue's limit (the stream
//!   window): a consumer that reads slowly makes the producer wait, and the
//!   server holds at most the limit (and one item) per stream, plus what the
//!   credit let out.
//! - **Batching.** Each ITEM carries every queued item of the front chunk
//!   (below) that fits the maximum payload and the credit (at least one),
//!   so items that pile up while the client is behind (no credit, or a
//!   slow write) share frames, and the credit goes below 0 by at most one
//!   item.
//! - **Chunks.** The queue keeps its items as the entries an ITEM
//!   carries, in chunks of at most [`CHUNK`] bytes (no entry spans two),
//!   and an ITEM's payload is split off the front chunk: no allocation or
//!   second copy per item (a typed item is encoded in its thread's buffer
//!   and copied in once), and a burst of items fills new chunks rather
//!   than moving what is queued into ever larger buffers.
//!
//! The items a client sends on its stream come in through [`StreamIn`]:
//! the connection checks the client's credit as it reads each ITEM, the
//! method takes them ([`ItemReceiver`]), and what it consumed is granted
//! back in CREDIT frames once that is half the window. [`StreamIo`] is
//! both halves as the stream's in-flight slot holds them.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::Waker;

use bytes::{Buf, Bytes, BytesMut};
use tokio::sync::Notify;

use super::in_flight::Parts;
use super::lock;
use super::topics::{PushCounters, Subscriber};
use crate::frame_io::COPY_LIMIT;
use crate::protocol::{decode_item, encode_credit, encode_item_entry, Consumed, ItemError};
use crate::protocol::{Credit, CreditOverflow, Entry, Frame, Kind, ENTRY_HEADER_LEN};

/// What the queue charges for one item beyond its entry's bytes: its
/// length in the queue's list (8 bytes) and the room its buffer keeps to
/// grow. Without such a charge a stream of tiny items held 4.4x its limit
/// in heap (when each item was an allocation of its own: 1-byte items, 35
/// bytes of heap each, 8 counted); with it the queue's charge is at least
/// the heap it holds, whatever the items' size.
const QUEUED_ITEM_OVERHEAD: usize = 64;

/// The least a queue's chunk is made with (its first after the queue was
/// empty): an ITEM of a few small items takes one allocation, not one per
/// item.
const MIN_QUEUE_BUFFER: usize = 1024;

/// The largest chunk of a queue (an item larger than it has a chunk of its
/// own size). A burst's chunks double from [`MIN_QUEUE_BUFFER`] to this;
/// each is written once and goes out as the payloads of the ITEMs made
/// from it. Before chunks the queue was one buffer that doubled, copying
/// what it held at each step: a stream that queued its window moved
/// twice the window, and the buffers of 128 KiB and more that glibc gives
/// back to the system at each free were faulted in again by the next
/// burst (one page fault every 57 items of 64 B on the guard's
/// `stream,1,1,64` row).
const CHUNK: usize = 16 * 1024;

/// The sending half of one server stream, shared by the producer
/// ([`ItemSender`]) and the connection (as the stream slot's [`Parts`]).
pub(super) struct StreamOut {
    id: u32,
    /// The largest ITEM payload (the connection's maximum payload).
    max_payload: usize,
    /// The queued items' charge ([`Inner::charge`]) at which the producer
    /// waits.
    limit: usize,
    inner: Mutex<Inner>,
    /// Wakes a producer waiting for room in the queue.
    room: Notify,
    /// The server's counts (items sent).
    counters: Arc<PushCounters>,
}

struct Inner {
    /// The queued items as the entries an ITEM carries (type, length,
    /// value), oldest first, in chunks (no entry spans two): an ITEM's
    /// payload is split off the front chunk, without a copy or an
    /// allocation per item.
    chunks: VecDeque<BytesMut>,
    /// The capacity of the next chunk: doubles from [`MIN_QUEUE_BUFFER`]
    /// to [`CHUNK`] while items pile up, back to the least once the queue
    /// is empty.
    next_chunk: usize,
    /// The bytes of the entries in `chunks`.
    bytes: usize,
    /// The length of each entry in `chunks`, oldest first.
    lens: VecDeque<usize>,
    credit: Credit,
    /// The stream's slot, to wake when an ITEM may go out.
    slot: Option<Waker>,
    /// No more items will be sent: the client cancelled, or the stream
    /// ended; a producer's `send` fails.
    closed: bool,
}

impl StreamOut {
    /// The stream `id` whose client credit starts at `window`; the producer
    /// waits while the queued items' charge reaches `limit`; no ITEM
    /// payload exceeds `max_payload`.
    #[cfg(test)]
    pub(super) fn new(id: u32, window: u32, limit: usize, max_payload: usize) -> Arc<StreamOut> {
        StreamOut::counted(id, window, limit, max_payload, Arc::default())
    }

    /// As [`StreamOut::new`], counting the items sent in `counters`.
    fn counted(
        id: u32,
        window: u32,
        limit: usize,
        max_payload: usize,
        counters: Arc<PushCounters>,
    ) -> Arc<StreamOut> {
        Arc::new(StreamOut {
            counters,
            id,
            max_payload,
            limit,
            inner: Mutex::new(Inner {
                chunks: VecDeque::new(),
                next_chunk: MIN_QUEUE_BUFFER,
                bytes: 0,
                lens: VecDeque::new(),
                credit: Credit::new(window),
                slot: None,
                closed: false,
            }),
            room: Notify::new(),
        })
    }

    /// The client granted `bytes` more credit (a CREDIT frame). Past the
    /// protocol's maximum it is `flow control`: the caller closes the
    /// connection.
    pub(super) fn grant(&self, bytes: u32) -> Result<(), CreditOverflow> {
        let mut inner = lock(&self.inner);
        inner.credit.grant(bytes)?;
        if inner.credit.may_send() && !inner.lens.is_empty() {
            wake(&inner.slot);
        }
        Ok(())
    }

    /// No more items go out (the stream was cancelled or ended): what was
    /// queued is dropped and a waiting producer's `send` fails.
    pub(super) fn close(&self) {
        let mut inner = lock(&self.inner);
        inner.closed = true;
        inner.empty();
        drop(inner);
        self.room.notify_waiters();
    }

    /// The charge of the items queued and not yet sent.
    #[cfg(test)]
    pub(super) fn queued(&self) -> usize {
        lock(&self.inner).charge()
    }

    /// The client's credit now.
    #[cfg(test)]
    pub(super) fn credit(&self) -> i64 {
        lock(&self.inner).credit.get()
    }
}

impl Parts for StreamOut {
    fn attach(&self, waker: Waker) {
        lock(&self.inner).slot = Some(waker);
    }

    /// The next ITEM: as many of the front chunk's items as fit one
    /// payload and the credit (at least one, however large: an item larger
    /// than the window goes alone once the credit is above 0), while the
    /// credit is above 0.
    fn next_part(&self) -> Option<Frame> {
        let mut inner = lock(&self.inner);
        if !inner.credit.may_send() || inner.lens.is_empty() {
            return None;
        }
        // No more entries than the credit allows (but at least one): the
        // credit goes below 0 by at most one item, so the client holds at
        // most the window and one item, not the window and a whole batch.
        // And no more than the front chunk holds: a payload is one piece.
        let room = usize::try_from(inner.credit.get()).map_or(0, |c| c.min(self.max_payload));
        let front = inner.chunks.front().map_or(0, BytesMut::len);
        let (mut len, mut items) = (0, 0usize);
        for &entry in &inner.lens {
            if len != 0 && (len + entry > room || len + entry > front) {
                break;
            }
            len += entry;
            items += 1;
        }
        inner.lens.drain(..items);
        inner.bytes -= len;
        let payload = inner.take_payload(len);
        let taken = inner.credit.take(payload.len());
        debug_assert!(taken, "checked above");
        drop(inner);
        PushCounters::add(&self.counters.items_sent, items as u64);
        self.room.notify_waiters();
        Some(Frame::new(Kind::Item, self.id, payload))
    }

    fn is_drained(&self) -> bool {
        let inner = lock(&self.inner);
        inner.lens.is_empty() || inner.closed
    }
}

impl StreamOut {
    /// Queues a copy of `value`, as an item entry, if the queue is under
    /// its limit.
    fn try_queue(&self, value: &[u8]) -> Queued {
        let mut inner = lock(&self.inner);
        if inner.closed {
            return Queued::Closed;
        }
        if inner.charge() >= self.limit {
            return Queued::Full;
        }
        let entry = ENTRY_HEADER_LEN + value.len();
        let most = self.limit + entry;
        encode_item_entry(value, inner.room_for(entry, most));
        inner.bytes += entry;
        inner.lens.push_back(entry);
        if inner.credit.may_send() {
            wake(&inner.slot);
        }
        Queued::Yes
    }
}

impl Inner {
    /// What the queued items count against the queue's limit: each
    /// entry's bytes (its 5-byte header and value) and
    /// [`QUEUED_ITEM_OVERHEAD`].
    fn charge(&self) -> usize {
        self.bytes + self.lens.len() * QUEUED_ITEM_OVERHEAD
    }

    /// The chunk to write an entry of `more` bytes in: the last one if it
    /// has room, or a new one, [`Inner::next_chunk`] large (or `more`),
    /// but never past `most` (what the queue can hold: its limit and one
    /// item), so that a full queue's chunks hold no more heap than its
    /// charge.
    fn room_for(&mut self, more: usize, most: usize) -> &mut BytesMut {
        let fits = self
            .chunks
            .back()
            .is_some_and(|back| back.capacity() - back.len() >= more);
        if !fits {
            let cap = self.next_chunk.min(most).max(more);
            self.next_chunk = (2 * self.next_chunk).min(CHUNK);
            self.chunks.push_back(BytesMut::with_capacity(cap));
        }
        self.chunks.back_mut().expect("one made above")
    }

    /// The first `len` bytes of the front chunk, as an ITEM's payload.
    /// Split off (no copy) when the connection copies a payload that small
    /// into its write buffer at once ([`COPY_LIMIT`]), or when it is all
    /// the chunk holds and at least what the chunk keeps spare; otherwise
    /// copied out, so that an ITEM waiting to be written never keeps a
    /// chunk much larger than itself alive (one the stream goes on
    /// filling): what a client that reads nothing makes the server hold
    /// stays about what its frames count.
    fn take_payload(&mut self, len: usize) -> Bytes {
        let front = self.chunks.front_mut().expect("an entry is queued");
        let whole = len == front.len();
        let payload = if len <= COPY_LIMIT || (whole && front.capacity() - len <= len) {
            front.split_to(len).freeze()
        } else {
            let payload = Bytes::copy_from_slice(&front[..len]);
            front.advance(len);
            payload
        };
        if self.lens.is_empty() {
            // Nothing left to send: the chunks go with their last ITEMs
            // (once written), not kept by a stream that may stay idle.
            self.empty();
        } else if whole {
            self.chunks.pop_front();
        }
        payload
    }

    /// Drops every queued item.
    fn empty(&mut self) {
        self.chunks.clear();
        self.lens.clear();
        self.bytes = 0;
        self.next_chunk = MIN_QUEUE_BUFFER;
    }
}

/// What [`StreamOut::try_queue`] did.
#[derive(Debug, PartialEq, Eq)]
enum Queued {
    Yes,
    /// The queue is full: try again once there is room.
    Full,
    Closed,
}

fn wake(slot: &Option<Waker>) {
    if let Some(waker) = slot {
        waker.wake_by_ref();
    }
}

/// The stream is closed: the client cancelled it, or the connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the stream was closed: the client cancelled it or went away")]
pub struct StreamClosed;

/// What a streaming method sends its items through: encoded values, each
/// one item (revision 2.2). The typed side is
/// [`rpc::ItemSink`](crate::rpc::ItemSink).
#[derive(Clone)]
pub struct ItemSender {
    stream: Arc<StreamOut>,
}

impl ItemSender {
    pub(super) fn new(stream: Arc<StreamOut>) -> ItemSender {
        ItemSender { stream }
    }

    /// The largest value one item may have: the maximum payload less its
    /// entry's header.
    pub fn max_len(&self) -> usize {
        self.stream.max_payload.saturating_sub(ENTRY_HEADER_LEN)
    }

    /// Queues one encoded item, waiting first while the queue holds its
    /// limit (the client is behind: it makes the method wait, not the
    /// server's memory grow). Fails once the stream is closed: the client
    /// cancelled it or left. The caller keeps a value within
    /// [`ItemSender::max_len`].
    pub async fn send(&self, value: Bytes) -> Result<(), StreamClosed> {
        match self.try_send(&value)? {
            true => Ok(()),
            // Boxed: rare, and kept out of the future of every send, which
            // the method moves (a memcpy of all of it).
            false => Box::pin(self.send_when_room(value)).await,
        }
    }

    /// Queues a copy of `value` if the queue has room now: `Ok(false)`
    /// when it is full (then [`ItemSender::send`] waits for room). What
    /// the typed [`ItemSink`](crate::rpc::ItemSink) calls with the item it
    /// encoded in its thread's buffer: no allocation of its own.
    pub(crate) fn try_send(&self, value: &[u8]) -> Result<bool, StreamClosed> {
        match self.stream.try_queue(value) {
            Queued::Yes => Ok(true),
            Queued::Full => Ok(false),
            Queued::Closed => Err(StreamClosed),
        }
    }

    /// [`ItemSender::send`] once the queue was found full.
    async fn send_when_room(&self, value: Bytes) -> Result<(), StreamClosed> {
        let stream = &self.stream;
        loop {
            // The wait for room is armed only once the queue was found
            // full (arming it costs two locks of the Notify), then the
            // queue is tried again: room made in between is not missed.
            let room = stream.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            if self.try_send(&value)? {
                return Ok(());
            }
            room.await;
        }
    }

    /// Whether the stream is closed (a `send` would fail).
    pub fn is_closed(&self) -> bool {
        lock(&self.stream.inner).closed
    }
}

impl std::fmt::Debug for ItemSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ItemSender")
            .field("id", &self.stream.id)
            .finish_non_exhaustive()
    }
}

/// The items a client sends on one stream, as the server receives them.
pub(super) struct StreamIn {
    id: u32,
    inner: Mutex<InInner>,
}

struct InInner {
    /// Item values read and not yet taken by the method, oldest first.
    items: VecDeque<Bytes>,
    /// The client's credit, as the server counts it.
    credit: Credit,
    /// What the method took and the server has not granted back yet.
    consumed: Consumed,
    /// Bytes to grant in the next CREDIT frame.
    grant: u32,
    /// The client sent END.
    ended: bool,
    /// The stream is over: nothing more comes.
    closed: bool,
    /// The method, waiting for an item.
    reader: Option<Waker>,
    /// The stream's slot, to wake when a CREDIT may go out.
    slot: Option<Waker>,
}

/// Why the server refuses an ITEM or END from the client.
#[derive(Debug)]
pub(super) enum InError {
    /// The client's credit was used up: ERROR `flow control`, close.
    FlowControl,
    /// The ITEM does not follow its layout: `malformed frame`, close.
    Malformed(ItemError),
    /// An ITEM or END after END: `unexpected frame`, close.
    Ended,
}

impl StreamIn {
    pub(super) fn new(id: u32, window: u32) -> Arc<StreamIn> {
        Arc::new(StreamIn {
            id,
            inner: Mutex::new(InInner {
                items: VecDeque::new(),
                credit: Credit::new(window),
                consumed: Consumed::new(window),
                grant: 0,
                ended: false,
                closed: false,
                reader: None,
                slot: None,
            }),
        })
    }

    /// An ITEM read from the client, checked against its credit: its
    /// items are queued for the method. Entries of types the server does
    /// not take are skipped and count as consumed at once.
    pub(super) fn receive(&self, payload: &Bytes) -> Result<(), InError> {
        let mut inner = lock(&self.inner);
        if inner.ended {
            return Err(InError::Ended);
        }
        let entries = decode_item(payload, true).map_err(InError::Malformed)?;
        if !inner.credit.take(payload.len()) {
            return Err(InError::FlowControl);
        }
        let mut skipped = payload.len();
        for entry in entries {
            if let Entry::Item(value) = entry {
                skipped -= ENTRY_HEADER_LEN + value.len();
                inner.items.push_back(value);
            }
        }
        if skipped > 0 {
            inner.took(skipped);
        }
        if let Some(reader) = inner.reader.take() {
            reader.wake();
        }
        Ok(())
    }

    /// The client's END.
    pub(super) fn end(&self) -> Result<(), InError> {
        let mut inner = lock(&self.inner);
        if inner.ended {
            return Err(InError::Ended);
        }
        inner.ended = true;
        if let Some(reader) = inner.reader.take() {
            reader.wake();
        }
        Ok(())
    }

    fn close(&self) {
        let mut inner = lock(&self.inner);
        inner.closed = true;
        inner.items.clear();
        if let Some(reader) = inner.reader.take() {
            reader.wake();
        }
    }

    /// The CREDIT to send now, if the method consumed enough.
    fn credit_frame(&self) -> Option<Frame> {
        let mut inner = lock(&self.inner);
        let bytes = std::mem::take(&mut inner.grant);
        if bytes == 0 {
            return None;
        }
        inner
            .credit
            .grant(bytes)
            .expect("the server grants only what was consumed");
        Some(Frame::new(Kind::Credit, self.id, encode_credit(bytes)))
    }
}

impl InInner {
    /// The method consumed `bytes` of ITEM payload: granted back once half
    /// the window is.
    fn took(&mut self, bytes: usize) {
        if let Some(grant) = self.consumed.took(bytes) {
            self.grant += grant;
            wake(&self.slot);
        }
    }
}

/// What a streaming method takes the client's items from: encoded
/// values, each one item, until the client's END (revision 2.2). The typed
/// side is [`rpc::ItemSource`](crate::rpc::ItemSource).
pub struct ItemReceiver {
    stream: Arc<StreamIn>,
}

impl ItemReceiver {
    /// The next item's value; `None` once the client sent END (or the
    /// stream is over: cancelled, or the connection gone).
    pub async fn next(&mut self) -> Option<Bytes> {
        std::future::poll_fn(|cx| {
            let mut inner = lock(&self.stream.inner);
            if let Some(value) = inner.items.pop_front() {
                inner.took(ENTRY_HEADER_LEN + value.len());
                return std::task::Poll::Ready(Some(value));
            }
            if inner.ended || inner.closed {
                return std::task::Poll::Ready(None);
            }
            inner.reader = Some(cx.waker().clone());
            std::task::Poll::Pending
        })
        .await
    }
}

impl std::fmt::Debug for ItemReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ItemReceiver")
            .field("id", &self.stream.id)
            .finish_non_exhaustive()
    }
}

/// A streaming method's items: what it sends (a server or bidirectional
/// stream) and what it takes (a client or bidirectional stream), as
/// [`Calls::call_stream`](super::Calls::call_stream) gets them.
#[derive(Debug)]
pub struct StreamItems {
    /// Where its items go, if it sends any.
    pub sender: Option<ItemSender>,
    /// Where the client's items come from, if it takes any.
    pub receiver: Option<ItemReceiver>,
}

/// Both halves of one stream, as its in-flight slot holds them: the
/// connection routes the client's ITEM, CREDIT and END here, and takes the
/// stream's ITEM and CREDIT frames from it ([`Parts`]).
pub(super) struct StreamIo {
    pub(super) out: Option<Arc<StreamOut>>,
    pub(super) input: Option<Arc<StreamIn>>,
    /// A subscription's queue (a SUBSCRIBE's stream).
    pub(super) subscriber: Option<Arc<Subscriber>>,
    counters: Arc<PushCounters>,
}

impl StreamIo {
    /// A stream `id` of `direction`: its halves, and the items the method
    /// gets.
    pub(super) fn open(
        id: u32,
        direction: crate::protocol::StreamDirection,
        window: u32,
        max_payload: usize,
        counters: &Arc<PushCounters>,
    ) -> (Arc<StreamIo>, StreamItems) {
        let out = direction.server_sends().then(|| {
            let counters = counters.clone();
            StreamOut::counted(id, window, window as usize, max_payload, counters)
        });
        let input = direction.client_sends().then(|| StreamIn::new(id, window));
        let items = StreamItems {
            sender: out.clone().map(ItemSender::new),
            receiver: input.clone().map(|stream| ItemReceiver { stream }),
        };
        counters.streams_open.fetch_add(1, Ordering::Relaxed);
        let io = StreamIo {
            out,
            input,
            subscriber: None,
            counters: counters.clone(),
        };
        (Arc::new(io), items)
    }

    /// A subscription's stream.
    pub(super) fn subscription(
        subscriber: Arc<Subscriber>,
        counters: &Arc<PushCounters>,
    ) -> Arc<StreamIo> {
        counters.subscribers.fetch_add(1, Ordering::Relaxed);
        Arc::new(StreamIo {
            out: None,
            input: None,
            subscriber: Some(subscriber),
            counters: counters.clone(),
        })
    }

    /// The stream is over: a method still sending fails, one still
    /// taking items gets none.
    pub(super) fn close(&self) {
        if let Some(out) = &self.out {
            out.close();
        }
        if let Some(input) = &self.input {
            input.close();
        }
        if let Some(subscriber) = &self.subscriber {
            subscriber.close();
        }
    }
}

impl Drop for StreamIo {
    fn drop(&mut self) {
        let open = match self.subscriber {
            Some(_) => &self.counters.subscribers,
            None => &self.counters.streams_open,
        };
        open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Parts for StreamIo {
    fn attach(&self, waker: Waker) {
        if let Some(input) = &self.input {
            lock(&input.inner).slot = Some(waker.clone());
        }
        if let Some(subscriber) = &self.subscriber {
            subscriber.attach(waker.clone());
        }
        if let Some(out) = &self.out {
            out.attach(waker);
        }
    }

    /// A CREDIT first (it lets the client go on), then the next ITEM.
    fn next_part(&self) -> Option<Frame> {
        if let Some(credit) = self.input.as_ref().and_then(|i| i.credit_frame()) {
            return Some(credit);
        }
        if let Some(subscriber) = &self.subscriber {
            return subscriber.next_part();
        }
        self.out.as_ref().and_then(|out| out.next_part())
    }

    /// Only ITEMs hold the last answer back: a CREDIT after it would be
    /// of no use.
    fn is_drained(&self) -> bool {
        self.out.as_ref().is_none_or(|out| out.is_drained())
            && self.subscriber.as_ref().is_none_or(|s| s.is_drained())
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::task::{Context, Poll};

    use super::*;
    use crate::protocol::decode_item;

    fn items(frame: &Frame) -> Vec<Bytes> {
        assert_eq!((frame.kind, frame.id), (Kind::Item, 9));
        decode_item(&frame.payload, false)
            .unwrap()
            .into_iter()
            .map(|entry| match entry {
                Entry::Item(value) => value,
                other => panic!("{other:?}"),
            })
            .collect()
    }

    fn poll_once<F: Future>(future: std::pin::Pin<&mut F>) -> Poll<F::Output> {
        let waker = futures_util::task::noop_waker();
        future.poll(&mut Context::from_waker(&waker))
    }

    #[tokio::test]
    async fn items_go_out_in_order_batched_while_credit_lasts() {
        let stream = StreamOut::new(9, 20, 1000, 1000);
        let sender = ItemSender::new(stream.clone());
        for n in 0..4u8 {
            sender.send(Bytes::from(vec![b'0' + n; 3])).await.unwrap();
        }
        // Four entries of 8 bytes, queued while the client was behind: one
        // ITEM carries as many as the credit of 20 allows...
        let frame = stream.next_part().unwrap();
        assert_eq!(items(&frame), ["000", "111"]);
        assert_eq!(stream.credit(), 20 - 16);
        // ...and the next at least one, taking the credit below 0 by less
        // than one item.
        assert_eq!(items(&stream.next_part().unwrap()), ["222"]);
        assert_eq!(stream.credit(), 4 - 8);
        // Credit below 0: nothing goes out until the client grants more.
        sender.send(Bytes::from_static(b"444")).await.unwrap();
        assert!(stream.next_part().is_none() && !stream.is_drained());
        stream.grant(4).unwrap();
        assert!(stream.next_part().is_none(), "credit back to 0 only");
        stream.grant(100).unwrap();
        assert_eq!(items(&stream.next_part().unwrap()), ["333", "444"]);
        assert!(stream.is_drained());
        let err = stream.grant(u32::MAX).unwrap_err();
        assert_eq!(err, CreditOverflow);
    }

    /// A burst fills chunks that double up to [`CHUNK`], and each ITEM is
    /// one chunk's entries, handed over whole (no copy): nothing queued is
    /// ever moved into a larger buffer, and no ITEM keeps more than its own
    /// chunk alive.
    #[tokio::test]
    async fn a_burst_goes_out_as_its_chunks_each_handed_over_whole() {
        let stream = StreamOut::new(9, 1 << 20, 1 << 20, 1 << 20);
        let sender = ItemSender::new(stream.clone());
        for _ in 0..100 {
            // Entries of 1000 bytes.
            sender.send(Bytes::from(vec![b'x'; 995])).await.unwrap();
        }
        let mut counts = Vec::new();
        while let Some(frame) = stream.next_part() {
            counts.push(items(&frame).len());
            assert!(frame.payload.is_unique(), "a view of a chunk still filled");
        }
        // Chunks of 1, 2, 4, 8 and then 16 KiB, which hold 16 entries.
        assert_eq!(counts, [1, 2, 4, 8, 16, 16, 16, 16, 16, 5]);
        assert!(stream.is_drained() && stream.queued() == 0);
    }

    /// A large ITEM taken while entries stay in its chunk is a copy: were
    /// it a view of the chunk, every such ITEM waiting to be written (a
    /// client that reads nothing) would keep a whole chunk alive, more
    /// than its frames count. A small one is split off (the connection
    /// copies it into its write buffer at once).
    #[tokio::test]
    async fn a_large_item_frame_keeps_no_queue_chunk_alive() {
        let stream = StreamOut::new(9, 1 << 20, 1 << 20, 6000);
        let sender = ItemSender::new(stream.clone());
        for _ in 0..15 {
            sender.send(Bytes::from(vec![b'x'; 995])).await.unwrap();
        }
        // Chunks of 1, 2, 4 and 8 entries; the first three go out whole.
        for n in [1, 2, 4] {
            assert_eq!(items(&stream.next_part().unwrap()).len(), n);
        }
        // Six of the last chunk's eight fit the maximum payload: a copy.
        let large = stream.next_part().unwrap();
        assert_eq!(items(&large).len(), 6);
        assert!(large.payload.is_unique(), "a view of the queue's chunk");
        // The two left, small, are split off the chunk's end.
        let small = stream.next_part().unwrap();
        assert_eq!(items(&small).len(), 2);
        assert!(small.payload.is_unique() && stream.is_drained());
    }

    #[tokio::test]
    async fn an_item_never_shares_a_frame_past_the_maximum_payload() {
        let stream = StreamOut::new(9, 1 << 20, 1 << 20, 20);
        let sender = ItemSender::new(stream.clone());
        for value in ["aaaaa", "bbbbb", "ccccccccccccccccccccccccc"] {
            sender.send(Bytes::from(value)).await.unwrap();
        }
        // 10 + 10 bytes fit 20; the large item goes alone.
        assert_eq!(items(&stream.next_part().unwrap()), ["aaaaa", "bbbbb"]);
        let big = stream.next_part().unwrap();
        assert_eq!(items(&big), ["ccccccccccccccccccccccccc"]);
        assert!(big.payload.len() > 20);
    }

    /// Through an in-flight slot, as the connection will run it: a
    /// producer of more than the window sends what the credit allows, waits
    /// for CREDIT, and its last answer follows its last item.
    #[tokio::test]
    async fn in_a_slot_the_last_answer_follows_every_item_and_credit_paces_the_producer() {
        use super::super::in_flight::{Answer, InFlight, Limit};
        // A queue of about three 1-byte items.
        let limit = 3 * (ENTRY_HEADER_LEN + 1 + QUEUED_ITEM_OVERHEAD);
        let stream = StreamOut::new(9, 24, limit, 1000);
        let sender = ItemSender::new(stream.clone());
        let producer = async move {
            for n in 0..10u8 {
                sender.send(Bytes::from(vec![b'0' + n])).await.unwrap();
            }
            (9, Frame::response(9, "null"))
        };
        let mut in_flight = InFlight::new(4);
        let parts: Arc<dyn Parts> = stream.clone();
        in_flight
            .start(9, || producer, 0, Limit::None, Some(parts))
            .unwrap();
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut got = Vec::new();
        let mut last = None;
        for _ in 0..100 {
            match in_flight.poll_answer(&mut cx, &mut false) {
                Poll::Ready(Some(Answer::Part(frame))) => {
                    assert!(last.is_none(), "an ITEM after the last answer");
                    // Never more than the window (and one ITEM) unconsumed.
                    assert!(stream.credit() > -(frame.payload.len() as i64));
                    got.extend(items(&frame));
                    // The client consumed it, and grants it back.
                    stream.grant(frame.payload.len() as u32).unwrap();
                }
                Poll::Ready(Some(Answer::Last(frame))) => last = Some(frame),
                Poll::Ready(None) => break,
                Poll::Pending => assert!(stream.queued() <= limit + 6 + QUEUED_ITEM_OVERHEAD),
            }
        }
        let want: Vec<Bytes> = (0..10u8).map(|n| Bytes::from(vec![b'0' + n])).collect();
        assert_eq!(got, want);
        assert_eq!(last.expect("the last answer").payload, "null");
        assert!(in_flight.is_empty());
    }

    #[tokio::test]
    async fn a_producer_waits_while_its_queue_is_full_and_fails_once_closed() {
        // Credit 0: nothing goes out; the queue's limit is two entries.
        let two = 2 * (ENTRY_HEADER_LEN + 3 + QUEUED_ITEM_OVERHEAD);
        let stream = StreamOut::new(9, 0, two, 1000);
        let sender = ItemSender::new(stream.clone());
        sender.send(Bytes::from_static(b"one")).await.unwrap();
        sender.send(Bytes::from_static(b"two")).await.unwrap();
        let third = sender.send(Bytes::from_static(b"three"));
        tokio::pin!(third);
        assert!(poll_once(third.as_mut()).is_pending());
        assert_eq!(
            stream.queued(),
            two,
            "the server holds no more than its limit"
        );
        // The client grants credit; an ITEM goes out and frees room.
        stream.grant(100).unwrap();
        assert_eq!(items(&stream.next_part().unwrap()), ["one", "two"]);
        assert_eq!(poll_once(third.as_mut()), Poll::Ready(Ok(())));
        // Closed (cancelled): the queue is dropped, sends fail.
        let fourth = sender.send(Bytes::from_static(b"four"));
        tokio::pin!(fourth);
        stream.close();
        assert_eq!(poll_once(fourth.as_mut()), Poll::Ready(Err(StreamClosed)));
        assert!(stream.is_drained() && stream.queued() == 0);
    }
}
