//! An in-memory transport: a pair of connected byte streams in one
//! process, for tests that need a server and a client but no pipe or
//! socket (fast, nothing to name or clean up, nothing the OS can refuse).
//!
//! Serve one end with
//! [`ServerHandle::serve_connection`](crate::server::ServerHandle::serve_connection),
//! run a [`Client`](crate::Client) over the other with
//! [`Client::from_io`](crate::Client::from_io):
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> pipesvc::Result<()> {
//! use bytes::Bytes;
//! use pipesvc::server::{ConnectionContext, Server, ServiceError};
//! use pipesvc::transport::{memory, PeerInfo};
//!
//! let server = Server::builder("in_memory".parse()?)
//!     .handler(|request: Bytes, _: ConnectionContext| async move {
//!         Ok::<_, ServiceError>(request)
//!     })
//!     .build()?; // no listener: only streams handed over are served
//! let handle = server.handle();
//! let serving = tokio::spawn(server.serve());
//!
//! let (client_end, server_end) = memory::pair();
//! handle.serve_connection(server_end, PeerInfo::current())?;
//! let client = pipesvc::Client::from_io(client_end, Default::default()).await?;
//! assert_eq!(&client.request("hi").await?[..], b"hi");
//!
//! handle.shutdown();
//! serving.await.expect("server task")?;
//! # Ok(()) }
//! ```
//!
//! Both ends are in this process, so the peer of either is
//! [`PeerInfo::current`](super::PeerInfo::current). Dropping one end is
//! seen by the other as the end of the stream (reads) and a broken pipe
//! (writes); [`shutdown`](tokio::io::AsyncWriteExt::shutdown) closes one
//! direction only, like a half-closed socket.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};

use super::PeerInfo;

/// Bytes each direction of a [`pair`] holds unread before a write waits:
/// about what a local socket buffers.
pub const DEFAULT_BUFFER: usize = 64 * 1024;

/// One end of an in-memory connection (see [`pair`]).
#[derive(Debug)]
pub struct MemoryStream {
    inner: DuplexStream,
}

impl MemoryStream {
    /// Who is on the other end: this process.
    pub fn peer(&self) -> PeerInfo {
        PeerInfo::current()
    }
}

/// Two connected ends, each direction buffering [`DEFAULT_BUFFER`] bytes.
pub fn pair() -> (MemoryStream, MemoryStream) {
    pair_with_buffer(DEFAULT_BUFFER)
}

/// Two connected ends, each direction buffering up to `bytes` unread
/// bytes (at least 1): a small buffer makes a reader that does not keep up
/// hold up the writer sooner, as a slow client does.
pub fn pair_with_buffer(bytes: usize) -> (MemoryStream, MemoryStream) {
    let (a, b) = tokio::io::duplex(bytes.max(1));
    (MemoryStream { inner: a }, MemoryStream { inner: b })
}

impl AsyncRead for MemoryStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for MemoryStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn bytes_cross_and_half_close_is_seen() {
        let (mut a, mut b) = pair_with_buffer(4);
        let writing = tokio::spawn(async move {
            a.write_all(b"hello world").await.expect("write");
            a.shutdown().await.expect("shutdown");
            a
        });
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.expect("read");
        assert_eq!(got, b"hello world");
        // The other direction still works after the half-close.
        let mut a = writing.await.expect("writer");
        b.write_all(b"back").await.expect("write back");
        let mut back = [0; 4];
        a.read_exact(&mut back).await.expect("read back");
        assert_eq!(&back, b"back");
    }

    #[tokio::test]
    async fn dropping_one_end_breaks_the_other() {
        let (a, mut b) = pair();
        drop(a);
        let err = b.write_all(b"x").await.expect_err("nobody reads");
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
        assert_eq!(b.read(&mut [0; 1]).await.expect("eof"), 0);
    }
}
