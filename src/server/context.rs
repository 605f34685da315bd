//! [`Context`]: what a handler knows about, and can do to, its connection.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::protocol::Frame;
use crate::transport::PeerInfo;

/// One client connection, as seen by a handler. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Context {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    id: u64,
    peer: PeerInfo,
    outbound: mpsc::Sender<Frame>,
    max_payload: usize,
}

impl Context {
    pub(crate) fn new(
        id: u64,
        peer: PeerInfo,
        outbound: mpsc::Sender<Frame>,
        max_payload: usize,
    ) -> Context {
        Context {
            inner: Arc::new(Inner {
                id,
                peer,
                outbound,
                max_payload,
            }),
        }
    }

    /// A number unique to this connection for the server's lifetime.
    pub fn connection_id(&self) -> u64 {
        self.inner.id
    }

    /// What the operating system says about the client process.
    pub fn peer(&self) -> &PeerInfo {
        &self.inner.peer
    }

    /// Sends a NOTIFY to this client. Waits while the connection's outbound
    /// queue is full; fails once the connection is closed.
    pub async fn notify(&self, payload: impl Into<Bytes>) -> Result<()> {
        self.send(Frame::notify(payload)).await
    }

    /// The largest payload one frame can carry on this connection.
    pub fn max_payload(&self) -> usize {
        self.inner.max_payload
    }

    pub(crate) async fn send(&self, frame: Frame) -> Result<()> {
        if frame.payload.len() > self.inner.max_payload {
            return Err(Error::PayloadTooLarge {
                len: frame.payload.len(),
                max: self.inner.max_payload,
            });
        }
        self.inner
            .outbound
            .send(frame)
            .await
            .map_err(|_| Error::ConnectionClosed(crate::error::CloseReason::ClientDisconnected))
    }
}
