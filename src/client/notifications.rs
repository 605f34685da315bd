//! [`Notifications`]: the NOTIFY frames a server pushes to a client.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::sync::mpsc;

/// NOTIFY payloads from the server, in the order they arrived. Ends when
/// the connection closes. Also a [`futures_util::Stream`].
#[derive(Debug)]
pub struct Notifications {
    receiver: mpsc::Receiver<Bytes>,
}

impl Notifications {
    pub(super) fn new(receiver: mpsc::Receiver<Bytes>) -> Notifications {
        Notifications { receiver }
    }

    /// The next notification, or `None` once the connection has closed and
    /// every buffered notification has been read.
    pub async fn recv(&mut self) -> Option<Bytes> {
        self.receiver.recv().await
    }
}

impl futures_util::Stream for Notifications {
    type Item = Bytes;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        self.receiver.poll_recv(cx)
    }
}
