//! The typed items a streaming method's handler sends and takes
//! ([`Service::stream_method`](super::Service::stream_method)): each item
//! in the CALL's encoding, one entry of an ITEM frame (PROTOCOL.md,
//! "Streams", revision 2.2).

use std::marker::PhantomData;

use bytes::Bytes;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::codec;
use crate::protocol::Encoding;
use crate::server::{ItemReceiver, ItemSender, ServiceError};

/// Where a streaming method sends its items of type `T`, in order. A
/// client that reads slowly makes [`ItemSink::send`] wait (flow control),
/// never the server's memory grow.
#[derive(Debug)]
pub struct ItemSink<T> {
    raw: Option<ItemSender>,
    encoding: Encoding,
    types: PhantomData<fn(&T)>,
}

impl<T> Clone for ItemSink<T> {
    fn clone(&self) -> Self {
        ItemSink {
            raw: self.raw.clone(),
            encoding: self.encoding,
            types: PhantomData,
        }
    }
}

impl<T: Serialize> ItemSink<T> {
    pub(super) fn new(raw: Option<ItemSender>, encoding: Encoding) -> ItemSink<T> {
        ItemSink {
            raw,
            encoding,
            types: PhantomData,
        }
    }

    /// Sends `item` to the client, waiting while the client is behind.
    /// Fails with ERROR `cancelled` once the client cancelled the stream
    /// or left (return it: the stream is over anyway), and with `handler
    /// failed` for an item that does not encode or is larger than one
    /// frame; `?` ends the stream with that error.
    pub async fn send(&self, item: &T) -> Result<(), ServiceError> {
        let Some(raw) = &self.raw else {
            let why = "this method streams no items to the client";
            return Err(ServiceError::new(why));
        };
        // Encoded in the thread's buffer and copied into the stream's
        // queue: no allocation per item. Only an item that finds the queue
        // full is copied out, to wait for room.
        let queued = codec::with_encoded(self.encoding, item, |value| {
            if value.len() > raw.max_len() {
                return Err(ServiceError::new(format!(
                    "an item of {} bytes exceeds the largest of {}",
                    value.len(),
                    raw.max_len()
                )));
            }
            match raw.try_send(value) {
                Ok(true) => Ok(None),
                Ok(false) => Ok(Some(Bytes::copy_from_slice(value))),
                Err(closed) => Err(ServiceError::cancelled(closed.to_string())),
            }
        })
        .map_err(|e| ServiceError::new(format!("cannot encode an item: {e}")))??;
        match queued {
            None => Ok(()),
            Some(value) => raw
                .send(value)
                .await
                .map_err(|e| ServiceError::cancelled(e.to_string())),
        }
    }

    /// Whether the stream is over (the client cancelled or left): a
    /// `send` would fail.
    pub fn is_closed(&self) -> bool {
        self.raw.as_ref().is_none_or(ItemSender::is_closed)
    }
}

/// Where a streaming method takes the client's items of type `T` from,
/// in order, until the client's END. What it takes is granted back to the
/// client as credit.
#[derive(Debug)]
pub struct ItemSource<T> {
    raw: Option<ItemReceiver>,
    encoding: Encoding,
    types: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> ItemSource<T> {
    pub(super) fn new(raw: Option<ItemReceiver>, encoding: Encoding) -> ItemSource<T> {
        ItemSource {
            raw,
            encoding,
            types: PhantomData,
        }
    }

    /// The next item; `Ok(None)` once the client sent END (at once for a
    /// method that takes no items). An item that does not decode into `T`
    /// is ERROR `bad request` naming the field: `?` ends the stream with
    /// it.
    pub async fn next(&mut self) -> Result<Option<T>, ServiceError> {
        let Some(raw) = &mut self.raw else {
            return Ok(None);
        };
        let Some(value) = raw.next().await else {
            return Ok(None);
        };
        codec::decode(self.encoding, &value, "item")
            .map(Some)
            .map_err(ServiceError::bad_request)
    }
}
