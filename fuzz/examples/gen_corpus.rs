//! Writes the seed corpus, fuzz/corpus/<target>/, with pipesvc's own
//! encoder (no hand-typed hex):
//!
//! ```sh
//! cd fuzz && cargo run --example gen_corpus
//! ```
//!
//! Rewrites the files it owns (named `seed-*`) and leaves others alone.
//! Input layouts are described at the top of each fuzz target.

use std::fs;
use std::path::Path;

use bytes::{Bytes, BytesMut};
use pipesvc::protocol::{
    CallHeader, ClientHello, Encoding, ErrorCode, Frame, FrameCodec, Kind, ServerHello,
};
use tokio_util::codec::Encoder;

fn wire(frames: &[Frame]) -> Vec<u8> {
    let mut buf = BytesMut::new();
    let mut codec = FrameCodec::new(u32::MAX);
    for frame in frames {
        codec.encode(frame.clone(), &mut buf).expect("encode");
    }
    buf.to_vec()
}

/// A header with any `length`, kind and flags, then `payload`: for the
/// frames the encoder refuses to produce.
fn raw(length: u32, kind: u8, flags: u8, id: u32, payload: &[u8]) -> Vec<u8> {
    let mut bytes = length.to_le_bytes().to_vec();
    bytes.extend([kind, flags]);
    bytes.extend(id.to_le_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

fn client_hello(version: u16) -> Frame {
    let mut hello = ClientHello::new();
    hello.version = version;
    Frame::new(Kind::Hello, 0, hello.encode())
}

fn server_hello() -> Frame {
    let hello = ServerHello::new(8 * 1024 * 1024, "pipesvc");
    Frame::new(Kind::Hello, 0, hello.encode())
}

fn write(target: &str, name: &str, control: u8, body: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    fs::create_dir_all(&dir).expect("create the corpus directory");
    let mut bytes = vec![control];
    bytes.extend_from_slice(body);
    fs::write(dir.join(format!("seed-{name}")), bytes).expect("write a seed");
}

fn main() {
    let hi = || Bytes::from_static(b"hello");
    let one_of_each = [
        ("hello", server_hello()),
        (
            "request",
            Frame::request(0x0102_0304, Bytes::from_static(b"hi")),
        ),
        ("response", Frame::response(1, hi())),
        (
            "error",
            Frame::error(0, ErrorCode::MALFORMED_FRAME, "malformed frame"),
        ),
        (
            "notify",
            Frame::notify(Bytes::from_static(b"Hello Pipe World")),
        ),
        ("goodbye", Frame::goodbye("the server is shutting down")),
        ("ping", Frame::new(Kind::Ping, 2, Bytes::new())),
        ("pong", Frame::new(Kind::Pong, 2, Bytes::new())),
    ];
    // PROTOCOL.md's complete exchange, both directions in order.
    let exchange = wire(&[
        server_hello(),
        client_hello(1),
        Frame::notify(Bytes::from_static(b"Hello Pipe World")),
        Frame::request(1, hi()),
        Frame::response(1, hi()),
        Frame::new(Kind::Ping, 2, Bytes::new()),
        Frame::new(Kind::Pong, 2, Bytes::new()),
    ]);
    let malformed: [(&str, Vec<u8>); 6] = [
        ("oversized-length", raw(u32::MAX, 2, 0, 1, b"")),
        ("length-just-over-1k", raw(1025, 2, 0, 1, b"")),
        ("too-short-length", raw(5, 2, 0, 1, b"")),
        ("zero-length", raw(0, 0, 0, 0, b"")),
        ("unknown-kind", raw(6, 9, 0, 1, b"")),
        ("nonzero-flags", raw(8, 2, 1, 1, b"hi")),
    ];

    // decode: control byte = max-length index (low 3 bits) | split mode << 3
    // (4 bits) | version 2 << 7.
    // 0x0e = 1 KiB maximum, 1-byte reads; 0x0f = 64 KiB, 1-byte reads;
    // 0x17 = 64 KiB, 2-byte reads; 0x1b = 16 bytes, 3-byte reads;
    // 0x1e = 1 KiB, 3-byte reads; 0x7f = 64 KiB, pseudo-random reads;
    // 0x8f / 0xff = the same as 0x0f / 0x7f, decoding version 2's kinds.
    for (name, frame) in &one_of_each {
        write("decode", name, 0x0f, &wire(std::slice::from_ref(frame)));
    }
    write("decode", "exchange", 0x7f, &exchange);
    let call = |id, method: &str, timeout_ms: u64, params: &[u8]| {
        let timeout = (timeout_ms > 0).then(|| std::time::Duration::from_millis(timeout_ms));
        let header = CallHeader::new(method, Encoding::Json).with_timeout(timeout);
        Frame::new(Kind::Call, id, header.encode_with(params).expect("a CALL"))
    };
    let empty = |kind, id| Frame::new(kind, id, Bytes::new());
    // PROTOCOL.md's version 2 frames, and kinds unknown to it.
    let v2 = wire(&[
        call(1, "echo", 5000, b"{\"a\":1}"),
        empty(Kind::Cancel, 2),
        empty(Kind::Describe, 3),
    ]);
    let mut v2_unknown = v2.clone();
    v2_unknown.extend(raw(6, 200, 0, 4, b""));
    v2_unknown.extend(raw(7, 0, 0, 0, b"z"));
    write("decode", "v2-kinds", 0x8f, &v2_unknown);
    write("decode", "v2-kinds-random-reads", 0xff, &v2_unknown);
    write("decode", "v2-kinds-as-v1", 0x0f, &v2);
    write("decode", "exchange-split-3", 0x1e, &exchange);
    write(
        "decode",
        "exactly-max-16",
        0x1b,
        &wire(&[Frame::request(1, vec![7u8; 10])]),
    );
    write(
        "decode",
        "one-over-max-16",
        0x1b,
        &wire(&[Frame::request(1, vec![7u8; 11])]),
    );
    for (name, bytes) in &malformed {
        write("decode", name, 0x0e, bytes);
    }
    let mut truncated = exchange.clone();
    truncated.truncate(exchange.len() - 3);
    write("decode", "truncated", 0x17, &truncated);

    // server: control bit 0 = the harness sends a valid HELLO first;
    // bits 1-3 = write size (0 = all at once, 1 = 1 byte at a time);
    // bit 4 = that HELLO names version 2.
    let request = |id, payload: &'static [u8]| Frame::request(id, Bytes::from_static(payload));
    let session = wire(&[
        request(1, b"hello"),
        Frame::new(Kind::Ping, 2, Bytes::from_static(b"p")),
        Frame::notify(Bytes::from_static(b"to the server")),
        request(3, b"!service error"),
        request(4, b"Big response"),
        request(5, b"Notify me"),
        request(6, b"Yield first"),
    ]);
    write("server", "session", 0x01, &session);
    write("server", "session-bytewise", 0x03, &session);
    write(
        "server",
        "exchange",
        0x00,
        &wire(&[
            client_hello(1),
            request(1, b"hello"),
            Frame::new(Kind::Ping, 2, Bytes::new()),
        ]),
    );
    write("server", "handshake-only", 0x01, b"");
    write("server", "nothing", 0x00, b"");
    write(
        "server",
        "request-before-hello",
        0x00,
        &wire(&[request(1, b"hi")]),
    );
    write(
        "server",
        "hello-bad-magic",
        0x00,
        &wire(&[Frame::new(
            Kind::Hello,
            0,
            Bytes::from_static(b"XSVC\x01\x00"),
        )]),
    );
    write(
        "server",
        "hello-too-short",
        0x00,
        &wire(&[Frame::new(Kind::Hello, 0, Bytes::from_static(b"PSVC"))]),
    );
    write("server", "hello-version-2", 0x00, &wire(&[client_hello(2)]));
    write("server", "second-hello", 0x01, &wire(&[client_hello(1)]));
    write(
        "server",
        "duplicate-id",
        0x01,
        &wire(&[request(9, b"Yield"), request(9, b"Yield")]),
    );
    write(
        "server",
        "client-sends-response",
        0x01,
        &wire(&[Frame::response(1, hi())]),
    );
    write(
        "server",
        "request-id-0",
        0x01,
        &wire(&[request(0, b"!zero")]),
    );
    write(
        "server",
        "truncated-request",
        0x01,
        &wire(&[request(1, b"hello")])[..12],
    );
    for (name, bytes) in &malformed {
        write("server", name, 0x01, bytes);
        write("server", &format!("{name}-before-hello"), 0x00, bytes);
    }
    let mut pipelined = Vec::new();
    for id in 1..=12u32 {
        pipelined.extend(wire(&[Frame::request(id, format!("Y{id}").into_bytes())]));
    }
    write("server", "pipelined", 0x01, &pipelined);
    let v2_session = {
        let mut bytes = wire(&[
            call(1, "", 0, b"hello"),
            call(2, "", 1, b"Yield, then maybe too late"),
            call(3, "no.such.method", 0, b"{}"),
            Frame::new(Kind::Call, 4, Bytes::from_static(b"\x01\x09cut")),
            request(5, b"Yield"),
            empty(Kind::Cancel, 5),
            empty(Kind::Cancel, 77),
            empty(Kind::Describe, 6),
            Frame::new(Kind::Ping, 7, Bytes::from_static(b"p")),
        ]);
        bytes.extend(raw(6, 200, 0, 8, b""));
        bytes.extend(raw(6, 200, 0, 0, b""));
        bytes
    };
    write("server", "v2-session", 0x11, &v2_session);
    write("server", "v2-session-bytewise", 0x13, &v2_session);
    write("server", "v2-kinds-from-v1", 0x01, &v2_session);
    write(
        "server",
        "v2-cancel-id-0",
        0x11,
        &wire(&[empty(Kind::Cancel, 0)]),
    );
    // The fuzzed server's access policy: `s...` methods are refused `not
    // allowed`, `o...` methods pass their rule and are unknown.
    let v2_rules = wire(&[
        call(1, "secret", 0, b"{}"),
        call(2, "open", 0, b"{}"),
        call(3, "", 0, b"after the refusals"),
    ]);
    write("server", "v2-method-rules", 0x11, &v2_rules);
    println!(
        "seed corpus written under {}/corpus",
        env!("CARGO_MANIFEST_DIR")
    );
}
