//! The last frames before the server closes reach a client that is still
//! writing (PROTOCOL.md, "Closing"): after an ERROR for the connection, a
//! shutdown, or a cut for not reading, the client reads what was sent and
//! then the end of the stream, not a reset. On Linux a socket closed with
//! unread data in it resets the peer (ECONNRESET), and common client
//! stacks (Python's asyncio streams) then drop what they had received.

mod common;

use std::io;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::{guard, unique_endpoint, TestServer};
use pipesvc::protocol::{ErrorCode, ErrorPayload, Frame, FrameCodec, Kind};
use pipesvc::server::{ConnectionContext, Server, ServerBuilder, ServiceError};
use pipesvc::transport::{self, ConnectOptions};
use pipesvc::Endpoint;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::task::JoinHandle;
use tokio_util::codec::{Decoder, Encoder};

type Stream = Box<dyn common::RawIo>;

/// What the client still writes after the frame that ends the connection.
const MORE: usize = 600 * 1024;

fn echo_server(
    test: &str,
    configure: impl FnOnce(ServerBuilder<()>) -> ServerBuilder<()>,
) -> (Endpoint, TestServer) {
    let endpoint = unique_endpoint(test);
    let server = configure(Server::builder(endpoint.clone()))
        .handler(|request: Bytes, _: ConnectionContext| async move {
            match &request[..] {
                b"hold" => std::future::pending().await,
                _ => Ok::<_, ServiceError>(request),
            }
        })
        .bind()
        .expect("bind");
    (endpoint, TestServer::start(server))
}

fn encode(frame: Frame) -> Vec<u8> {
    let mut bytes = BytesMut::new();
    FrameCodec::new(u32::MAX).encode(frame, &mut bytes).unwrap();
    bytes.to_vec()
}

/// Connects, reads the server's HELLO and answers with a version 1 HELLO.
async fn handshake(endpoint: &Endpoint) -> (ReadHalf<Stream>, WriteHalf<Stream>) {
    let stream = transport::connect(endpoint, &ConnectOptions::default())
        .await
        .expect("connect")
        .stream;
    let (mut read, mut write) = tokio::io::split(Box::new(stream) as Stream);
    let mut length = [0u8; 4];
    read.read_exact(&mut length).await.unwrap();
    let mut hello = vec![0u8; u32::from_le_bytes(length) as usize];
    read.read_exact(&mut hello).await.unwrap();
    assert_eq!(hello[0], 1, "the server's HELLO");
    let ours = Frame::new(Kind::Hello, 0, &b"PSVC\x01\x00"[..]);
    write.write_all(&encode(ours)).await.unwrap();
    (read, write)
}

/// Sends a PING and reads its PONG.
async fn ping(read: &mut ReadHalf<Stream>, write: &mut WriteHalf<Stream>) {
    let ping = Frame::new(Kind::Ping, 2, Bytes::new());
    write.write_all(&encode(ping)).await.unwrap();
    let mut pong = [0u8; 10];
    read.read_exact(&mut pong).await.unwrap();
    assert_eq!(pong[4], 8, "PONG");
}

/// Writes `bytes` and then `MORE` bytes of PINGs from a task of its own,
/// never closing; ends once everything is written or writing fails.
fn keep_writing(mut write: WriteHalf<Stream>, first: Vec<u8>) -> JoinHandle<WriteHalf<Stream>> {
    tokio::spawn(async move {
        let ping = encode(Frame::new(Kind::Ping, 7, vec![0u8; 60 * 1024]));
        let mut bytes = first;
        while bytes.len() < MORE {
            bytes.extend_from_slice(&ping);
        }
        // A write may fail once the server has closed: this client does not
        // care, it reads what came.
        let _ = write.write_all(&bytes).await;
        let _ = write.flush().await;
        write
    })
}

/// Everything the server sent, up to the end of the stream, as frames
/// (the last one may be cut short by a cut-off: its bytes are left out);
/// fails if the stream ends in an error (a reset) instead of its end.
async fn read_to_end(mut read: ReadHalf<Stream>) -> Result<Vec<Frame>, io::Error> {
    let mut bytes = BytesMut::new();
    loop {
        let mut chunk = [0u8; 64 * 1024];
        match read.read(&mut chunk).await {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(e),
        }
    }
    let mut codec = FrameCodec::new(u32::MAX).with_version(2);
    let mut frames = Vec::new();
    while let Some(frame) = codec.decode(&mut bytes).expect("frames") {
        frames.push(frame);
    }
    Ok(frames)
}

fn error_of(frame: &Frame) -> (u32, ErrorCode) {
    assert_eq!(frame.kind, Kind::Error, "{frame:?}");
    (frame.id, ErrorPayload::decode(&frame.payload).unwrap().code)
}

#[tokio::test]
async fn an_error_for_the_connection_reaches_a_client_still_writing() {
    let (endpoint, serving) = echo_server("error-then-close", |b| b);
    let (read, write) = handshake(&endpoint).await;
    // A frame with flags 1 (malformed), and more after it.
    let writer = keep_writing(write, vec![6, 0, 0, 0, 2, 1, 1, 0, 0, 0]);
    let frames = guard(read_to_end(read))
        .await
        .expect("the ERROR, then the end of the stream, not a reset");
    let last = frames.last().expect("the ERROR");
    assert_eq!(error_of(last), (0, ErrorCode::MALFORMED_FRAME));
    drop(guard(writer).await.unwrap());
    guard(serving.stop()).await.expect("serve");
}

#[tokio::test]
async fn the_last_answers_at_shutdown_reach_a_client_still_writing() {
    let (endpoint, serving) = echo_server("shutdown-then-close", |b| {
        b.shutdown_timeout(Duration::ZERO)
    });
    let (mut read, write) = handshake(&endpoint).await;
    let hold = encode(Frame::request(1, "hold"));
    let mut write = write;
    write.write_all(&hold).await.unwrap();
    // The request is running once a PING sent after it is answered.
    ping(&mut read, &mut write).await;
    serving.handle().shutdown();
    let writer = keep_writing(write, Vec::new());
    let frames = guard(read_to_end(read))
        .await
        .expect("GOODBYE, the answer, then the end of the stream, not a reset");
    assert!(frames.iter().any(|f| f.kind == Kind::Goodbye), "{frames:?}");
    let answers: Vec<_> = frames.iter().filter(|f| f.kind == Kind::Error).collect();
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert_eq!(error_of(answers[0]), (1, ErrorCode::SHUTTING_DOWN));
    drop(guard(writer).await.unwrap());
    guard(serving.stop()).await.expect("serve");
}

/// A client that does not read is cut off (the write timeout, or no room
/// for a broadcast); what reached its socket before is still read, then
/// the end of the stream. (A named pipe cannot do this: a pending write
/// keeps it from closing, so the instance is disconnected, which the
/// client sees as a broken pipe.)
#[cfg(unix)]
#[tokio::test]
async fn a_client_cut_off_for_not_reading_reads_what_it_got_then_the_end() {
    for broadcast in [false, true] {
        let (endpoint, serving) = echo_server("cut-then-close", |b| match broadcast {
            true => b.max_output_bytes(1024),
            false => b.write_timeout(Duration::from_millis(100)),
        });
        let (mut read, mut write) = handshake(&endpoint).await;
        // Served (and reached by broadcasts) once a PING is answered.
        ping(&mut read, &mut write).await;
        let writer = keep_writing(write, Vec::new());
        if broadcast {
            // Two NOTIFYs do not fit its 1024 bytes: it is too slow.
            while serving.handle().broadcast(vec![1u8; 600]).await > 0 {}
        }
        // Writing ends when the server has taken everything (or, before,
        // when it was closed under it); only then does the client read.
        let write = guard(writer).await.unwrap();
        let frames = guard(read_to_end(read))
            .await
            .unwrap_or_else(|e| panic!("broadcast {broadcast}: the end, not {e}"));
        if !broadcast {
            // It stopped reading once the write was waiting: what it had
            // been sent until then filled its socket.
            assert!(!frames.is_empty(), "the PONGs written before the cut");
        }
        drop(write);
        guard(serving.stop()).await.expect("serve");
    }
}
