//! A rogue server: speaks the protocol badly on purpose, over the real
//! transport (a Unix socket, or a named pipe on Windows), to show what the
//! client does with a server that is broken or malicious.

#![allow(dead_code)] // each test binary uses a different subset

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use pipesvc::protocol::{
    ClientHello, Encoding, ErrorPayload, FrameCodec, HelloReply, Kind, ServerHello, HEADER_LEN,
};
use pipesvc::transport::{Listener, ListenerOptions, ServerStream};
use pipesvc::Endpoint;
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::Notify;
use tokio_util::codec::FramedRead;

/// How the rogue misbehaves once it has sent its HELLO.
#[derive(Clone, Debug)]
pub enum Behaviour {
    /// Reads everything, answers nothing.
    Silent,
    /// Answers each request with the first half of a RESPONSE frame, then
    /// nothing more.
    HalfFrame,
    /// Answers each request, always with an id nobody asked for.
    UnknownIds,
    /// Sends NOTIFY frames of this many payload bytes, without end.
    NotifyFlood(usize),
    /// Answers each request with a frame header announcing this length,
    /// and no payload.
    Oversized(u32),
    /// Answers each request with a service ERROR whose message carries
    /// terminal escape sequences.
    EscapeError,
    /// Answers each request with a service ERROR carrying this message.
    ErrorMessage(String),
    /// Answers each REQUEST, CALL, DESCRIBE and STATUS with a RESPONSE
    /// carrying these bytes (and each PING with a PONG).
    Answer(Bytes),
    /// Sends its HELLO, reads the client's, and never sends the HELLO
    /// reply; it keeps reading what comes.
    WithholdHelloReply,
    /// Sends its HELLO and, once the client's has come, its HELLO reply,
    /// each a byte at a time, spread over this long (a frame's bytes this
    /// long divided by its length apart); then reads and answers nothing.
    DribbleHandshake(Duration),
    /// Completes the handshake, then never reads again, nor answers.
    NoReading,
    /// Sends these bytes in place of its HELLO (not the protocol at all),
    /// then reads what comes and answers nothing.
    Garbage(Bytes),
}

/// A name and message a terminal would obey if printed raw: clear the
/// screen, set the window title, ring the bell.
pub const ESCAPES: &str = "rogue\u{1b}[2J\u{1b}]0;pwned\u{7}\r\nfake prompt$ ";

/// The running rogue server.
pub struct Rogue {
    /// Where it listens.
    pub endpoint: Endpoint,
    /// NOTIFY frames written so far (flood).
    pub notifies: Arc<Counter>,
    task: tokio::task::JoinHandle<()>,
}

/// A counter one can wait on.
#[derive(Default)]
pub struct Counter {
    count: AtomicU64,
    changed: Notify,
}

impl Counter {
    fn add(&self) {
        self.count.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    /// Waits until the count reaches `n`.
    pub async fn reached(&self, n: u64) {
        loop {
            let changed = self.changed.notified();
            if self.count.load(Ordering::SeqCst) >= n {
                return;
            }
            changed.await;
        }
    }
}

impl Drop for Rogue {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Rogue {
    /// Listens on `endpoint` and serves every client with `behaviour`,
    /// naming itself `name` in its HELLO.
    pub fn start(endpoint: Endpoint, name: &str, behaviour: Behaviour) -> Rogue {
        let mut listener =
            Listener::bind(&endpoint, &ListenerOptions::default()).expect("bind the rogue");
        let notifies = Arc::new(Counter::default());
        let (counter, name) = (notifies.clone(), name.to_owned());
        let task = tokio::spawn(async move {
            while let Ok((stream, _peer)) = listener.accept().await {
                let (behaviour, counter) = (behaviour.clone(), counter.clone());
                tokio::spawn(serve(stream, name.clone(), behaviour, counter));
            }
        });
        Rogue {
            endpoint,
            notifies,
            task,
        }
    }
}

/// One frame's bytes, as the protocol lays them out.
pub fn frame_bytes(kind: Kind, id: u32, payload: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(4 + HEADER_LEN + payload.len());
    buf.put_u32_le((HEADER_LEN + payload.len()) as u32);
    buf.put_u8(kind.to_u8());
    buf.put_u8(0);
    buf.put_u32_le(id);
    buf.put_slice(payload);
    buf.freeze()
}

/// The rogue's HELLO frame, naming it `name`.
pub fn hello(name: &str) -> Bytes {
    let hello = ServerHello::new(pipesvc::protocol::DEFAULT_MAX_FRAME_LEN, name);
    frame_bytes(Kind::Hello, 0, &hello.encode())
}

/// The HELLO reply of a version 2 server, as a frame.
fn hello_reply() -> Bytes {
    let reply = HelloReply::new(2, &[Encoding::MessagePack, Encoding::Json]).encode();
    frame_bytes(Kind::Hello, 0, &reply)
}

async fn serve(stream: ServerStream, name: String, behaviour: Behaviour, notifies: Arc<Counter>) {
    let (read, mut write) = tokio::io::split(stream);
    let mut reader = FramedRead::new(read, FrameCodec::new(u32::MAX));
    match behaviour {
        Behaviour::WithholdHelloReply => {
            if write.write_all(&hello(&name)).await.is_ok() {
                drain(reader).await;
            }
            return;
        }
        Behaviour::DribbleHandshake(per_frame) => {
            let mut handshake = dribble(&mut write, &hello(&name), per_frame).await;
            handshake = handshake && matches!(reader.next().await, Some(Ok(_)));
            *reader.decoder_mut() = FrameCodec::new(u32::MAX).with_version(2);
            if handshake && dribble(&mut write, &hello_reply(), per_frame).await {
                drain(reader).await;
            }
            return;
        }
        Behaviour::Garbage(bytes) => {
            if write.write_all(&bytes).await.is_ok() {
                drain(reader).await;
            }
            return;
        }
        _ => {}
    }
    if write.write_all(&hello(&name)).await.is_err() {
        return;
    }
    if !answer_hello(&mut reader, &mut write).await {
        return;
    }
    if let Behaviour::NoReading = behaviour {
        // Holds both halves (alive until the end of this function), reading
        // nothing: what the client writes stays in the transport's buffers
        // until they are full.
        std::future::pending::<()>().await;
        return;
    }
    if let Behaviour::NotifyFlood(len) = behaviour {
        // Keep reading (and discarding) so the client's writes never block.
        tokio::spawn(drain(reader));
        let frame = frame_bytes(Kind::Notify, 0, &vec![b'n'; len]);
        while write.write_all(&frame).await.is_ok() {
            notifies.add();
        }
        return;
    }
    answer_requests(reader, write, behaviour).await;
}

/// Reads the client's HELLO and, as a version 2 server does, answers a
/// version 2 one with a HELLO reply; whether the client is still there.
pub async fn answer_hello<R, W>(reader: &mut FramedRead<R, FrameCodec>, write: &mut W) -> bool
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let Some(Ok(frame)) = reader.next().await else {
        return false;
    };
    let version = ClientHello::decode(&frame.payload).map_or(1, |hello| hello.version);
    if frame.kind != Kind::Hello || version < 2 {
        return true;
    }
    // A version 2 client sends CANCEL (kind 11) for what it gives up on.
    *reader.decoder_mut() = FrameCodec::new(u32::MAX).with_version(2);
    write.write_all(&hello_reply()).await.is_ok()
}

/// Writes `frame` a byte at a time, spread over `over`; whether the client
/// is still there.
async fn dribble<W: tokio::io::AsyncWrite + Unpin>(
    write: &mut W,
    frame: &[u8],
    over: Duration,
) -> bool {
    let pace = over / frame.len() as u32;
    for byte in frame {
        // The pace is the rogue's behaviour (how slowly it talks), not a
        // wait for anything in the test.
        tokio::time::sleep(pace).await;
        if write.write_all(&[*byte]).await.is_err() || write.flush().await.is_err() {
            return false;
        }
    }
    true
}

async fn drain(mut reader: FramedRead<ReadHalf<ServerStream>, FrameCodec>) {
    while let Some(Ok(_)) = reader.next().await {}
}

async fn answer_requests(
    mut reader: FramedRead<ReadHalf<ServerStream>, FrameCodec>,
    mut write: WriteHalf<ServerStream>,
    behaviour: Behaviour,
) {
    while let Some(Ok(frame)) = reader.next().await {
        if !matches!(
            frame.kind,
            Kind::Request | Kind::Ping | Kind::Status | Kind::Call | Kind::Describe
        ) {
            continue;
        }
        let reply = match &behaviour {
            Behaviour::Silent
            | Behaviour::NotifyFlood(_)
            | Behaviour::WithholdHelloReply
            | Behaviour::DribbleHandshake(_)
            | Behaviour::NoReading
            | Behaviour::Garbage(_) => continue,
            Behaviour::Answer(payload) => {
                let kind = match frame.kind {
                    Kind::Ping => Kind::Pong,
                    _ => Kind::Response,
                };
                frame_bytes(kind, frame.id, payload)
            }
            Behaviour::HalfFrame => {
                let whole = frame_bytes(Kind::Response, frame.id, &[b'h'; 64]);
                whole.slice(..whole.len() / 2)
            }
            Behaviour::UnknownIds => {
                frame_bytes(Kind::Response, frame.id.wrapping_add(1000), b"not yours")
            }
            Behaviour::Oversized(len) => {
                let mut header = BytesMut::new();
                header.put_u32_le(*len);
                header.put_u8(Kind::Response.to_u8());
                header.put_u8(0);
                header.put_u32_le(frame.id);
                header.freeze()
            }
            Behaviour::EscapeError => {
                let error = ErrorPayload::encode(pipesvc::protocol::ErrorCode(1000), ESCAPES);
                frame_bytes(Kind::Error, frame.id, &error)
            }
            Behaviour::ErrorMessage(message) => {
                let error = ErrorPayload::encode(pipesvc::protocol::ErrorCode(1000), message);
                frame_bytes(Kind::Error, frame.id, &error)
            }
        };
        if write.write_all(&reply).await.is_err() {
            return;
        }
    }
}
