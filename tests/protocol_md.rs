//! PROTOCOL.md's examples, read from the document itself and checked
//! against the codec and the real `pipesvc serve`: the frame layout
//! example, both example exchanges byte for byte, the DESCRIBE example
//! and the server messages the document quotes. The document and the code
//! cannot drift apart: a change to either that the other does not follow
//! fails here.

mod common;

use std::process::Command;

use bytes::BytesMut;
use common::{guard, unique_endpoint, HANG_GUARD};
use pipesvc::protocol::{
    decode_credit, decode_item, encode_item, ErrorPayload, Frame, FrameCodec, HelloReply, Kind,
    Subscribe, DEFAULT_STREAM_WINDOW,
};
use pipesvc::testing::ServiceProcess;
use pipesvc::transport::{self, ConnectOptions};
use pipesvc::Endpoint;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::{Decoder, Encoder};

fn protocol_md() -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("PROTOCOL.md");
    std::fs::read_to_string(path).expect("read PROTOCOL.md")
}

/// The text of the section that starts at the heading line `heading`, up
/// to the next heading of any level.
fn section<'a>(doc: &'a str, heading: &str) -> &'a str {
    let start = doc
        .find(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("PROTOCOL.md has no heading {heading:?}"))
        + heading.len()
        + 2;
    let rest = &doc[start..];
    let end = rest.find("\n#").unwrap_or(rest.len());
    &rest[..end]
}

/// The code blocks of `text`, without their fences.
fn code_blocks(text: &str) -> Vec<&str> {
    text.split("```")
        .skip(1)
        .step_by(2)
        .map(|block| block.split_once('\n').map_or("", |(_, body)| body))
        .collect()
}

/// Bytes written as PROTOCOL.md writes them: `1c 00 ...`.
fn hex(text: &str) -> Option<Vec<u8>> {
    let bytes: Option<Vec<u8>> = text
        .split_whitespace()
        .map(|b| match b.len() {
            2 => u8::from_str_radix(b, 16).ok(),
            _ => None,
        })
        .collect();
    bytes.filter(|b| !b.is_empty())
}

/// One frame of an example exchange.
#[derive(Debug)]
struct Step {
    from_client: bool,
    /// The summary line, as written.
    summary: String,
    /// `len=`, `kind=` and `id=` of the summary (`len` may be left out).
    len: Option<u32>,
    kind: u8,
    id: u32,
    /// The frame's bytes, if the document gives them.
    bytes: Option<Vec<u8>>,
}

fn field(summary: &str, name: &str) -> Option<u32> {
    let at = summary.find(&format!(" {name}="))? + name.len() + 2;
    let digits: String = summary[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    Some(digits.parse().expect("a number"))
}

/// The frames of an example exchange: each summary line, and the lines of
/// hex bytes under it.
fn steps(block: &str) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    for line in block.lines() {
        let from = ["client → server", "server → client"]
            .into_iter()
            .find(|from| line.starts_with(from));
        if let Some(from) = from {
            steps.push(Step {
                from_client: from.starts_with("client"),
                summary: line.to_owned(),
                len: field(line, "len"),
                kind: field(line, "kind").expect("kind=") as u8,
                id: field(line, "id").expect("id="),
                bytes: None,
            });
        } else if let Some(bytes) = hex(line) {
            let step = steps.last_mut().expect("hex under a summary line");
            step.bytes.get_or_insert_with(Vec::new).extend(bytes);
        } else {
            assert_eq!(line.trim(), "client closes", "an unexpected line {line:?}");
        }
    }
    steps
}

impl Step {
    /// The frame its bytes are, checked against its summary line: the
    /// summary says what the bytes say.
    fn frame(&self) -> Frame {
        let bytes = self.bytes.as_ref().expect("the frame's bytes");
        let frame = FrameCodec::new(u32::MAX)
            .with_version(2)
            .decode(&mut BytesMut::from(&bytes[..]))
            .expect("the bytes are a frame")
            .unwrap_or_else(|| panic!("the bytes of {:?} are not a whole frame", self.summary));
        assert_eq!(bytes.len(), frame.wire_len(), "{}", self.summary);
        let actual = ((frame.wire_len() - 4) as u32, frame.kind.to_u8(), frame.id);
        assert_eq!(
            (self.len.unwrap_or(actual.0), self.kind, self.id),
            actual,
            "{}",
            self.summary
        );
        frame
    }
}

/// A frame's whole bytes, from its length field on.
fn encode(frame: Frame) -> Vec<u8> {
    let mut bytes = BytesMut::new();
    FrameCodec::new(u32::MAX).encode(frame, &mut bytes).unwrap();
    bytes.to_vec()
}

async fn serve(test: &str) -> (ServiceProcess, Endpoint) {
    let endpoint = unique_endpoint(test);
    let mut command = Command::new(env!("CARGO_BIN_EXE_pipesvc"));
    command
        .arg("serve")
        .arg("--name")
        .arg(endpoint.address())
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null());
    let service = ServiceProcess::start(command, &endpoint, HANG_GUARD)
        .await
        .expect("start pipesvc serve");
    (service, endpoint)
}

/// Plays `steps` against `pipesvc serve`: sends what the client sends, and
/// checks every frame the server sends against the document.
async fn play(steps: &[Step], endpoint: &Endpoint) {
    let mut stream = transport::connect(endpoint, &ConnectOptions::default())
        .await
        .expect("connect")
        .stream;
    for step in steps {
        if step.bytes.is_some() {
            step.frame();
        }
        if step.from_client {
            let bytes = step.bytes.as_ref().expect("a client frame's bytes");
            stream.write_all(bytes).await.unwrap();
            continue;
        }
        let mut length = [0u8; 4];
        stream.read_exact(&mut length).await.unwrap();
        let mut frame = length.to_vec();
        frame.resize(4 + u32::from_le_bytes(length) as usize, 0);
        stream.read_exact(&mut frame[4..]).await.unwrap();
        match &step.bytes {
            Some(bytes) => assert_eq!(&frame, bytes, "{}", step.summary),
            None => {
                // No bytes given: its kind and id, and the payload as far
                // as the summary shows it (`{"service":"pipesvc",...}`).
                assert_eq!(
                    (frame[4], &frame[6..10]),
                    (step.kind, &step.id.to_le_bytes()[..])
                );
                let shown = step.summary.split_whitespace().last().unwrap();
                let prefix = shown.trim_end_matches("...}");
                let payload = String::from_utf8_lossy(&frame[10..]);
                assert!(payload.starts_with(prefix), "{}: {payload}", step.summary);
            }
        }
    }
}

#[test]
fn the_frame_layout_example_is_what_the_codec_reads_and_writes() {
    let doc = protocol_md();
    let example = code_blocks(section(&doc, "## Frame layout"))[1];
    let bytes = hex(example).expect("the example's bytes");
    let frame = FrameCodec::new(u32::MAX)
        .decode(&mut BytesMut::from(&bytes[..]))
        .unwrap()
        .expect("a whole frame");
    assert_eq!(frame, Frame::request(0x0102_0304, "hi"));
    assert_eq!(encode(frame), bytes);
}

#[tokio::test]
async fn the_example_exchanges_are_what_pipesvc_serve_sends_byte_for_byte() {
    let doc = protocol_md();
    let (_service, endpoint) = serve("protocol-md").await;
    for heading in [
        "## A complete exchange",
        "## A complete exchange, version 2",
    ] {
        let blocks = code_blocks(section(&doc, heading));
        let steps = steps(blocks[0]);
        assert!(steps.len() > 6, "{heading}: {steps:?}");
        guard(play(&steps, &endpoint)).await;
    }
}

#[tokio::test]
async fn the_describe_example_is_pipesvc_serves_description() {
    let doc = protocol_md();
    let example = code_blocks(section(&doc, "### DESCRIBE"))[0];
    let example: Value = serde_json::from_str(example).expect("the example is JSON");
    let (_service, endpoint) = serve("protocol-md-describe").await;
    let client = pipesvc::Client::connect(&endpoint).await.unwrap();
    let real: Value = serde_json::from_slice(&guard(client.describe_raw()).await.unwrap()).unwrap();
    for member in ["service", "protocol", "encodings"] {
        assert_eq!(example[member], real[member], "{member}");
    }
    assert!(example["version"].is_string());
    // The methods it shows, exactly as the server describes them.
    for method in example["methods"].as_array().unwrap() {
        let name = &method["name"];
        let real = real["methods"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| &m["name"] == name)
            .unwrap_or_else(|| panic!("pipesvc serve has no method {name}"));
        assert_eq!(method, real);
    }
}

/// The ERROR message of CALL `method` with `params` in `encoding`.
async fn call_error(endpoint: &Endpoint, method: &str, encoding: u8, params: &[u8]) -> String {
    let mut stream = transport::connect(endpoint, &ConnectOptions::default())
        .await
        .unwrap()
        .stream;
    let mut codec = FrameCodec::new(u32::MAX).with_version(2);
    let mut buffer = BytesMut::new();
    let mut next = async |stream: &mut transport::ClientStream, buffer: &mut BytesMut| loop {
        if let Some(frame) = codec.decode(buffer).unwrap() {
            break frame;
        }
        assert_ne!(stream.read_buf(buffer).await.unwrap(), 0, "the end");
    };
    assert_eq!(next(&mut stream, &mut buffer).await.kind, Kind::Hello);
    let hello = encode(Frame::new(Kind::Hello, 0, &b"PSVC\x02\x00"[..]));
    stream.write_all(&hello).await.unwrap();
    let mut payload = vec![encoding, method.len() as u8];
    payload.extend_from_slice(method.as_bytes());
    payload.extend_from_slice(&[0, 0, 0, 0, 0]);
    payload.extend_from_slice(params);
    stream
        .write_all(&encode(Frame::new(Kind::Call, 1, payload)))
        .await
        .unwrap();
    loop {
        let frame = next(&mut stream, &mut buffer).await;
        if frame.kind == Kind::Error {
            assert_eq!(frame.id, 1);
            return ErrorPayload::decode(&frame.payload).unwrap().message;
        }
    }
}

#[tokio::test]
async fn the_messages_the_document_quotes_are_the_servers() {
    let doc = protocol_md();
    let (_service, endpoint) = serve("protocol-md-messages").await;
    let json = guard(call_error(&endpoint, "sleep", 1, br#"{"ms":"x"}"#)).await;
    assert!(doc.contains(&format!("`{json}`")), "{json}");
    let bin = guard(call_error(&endpoint, "echo", 2, b"\xc4\x01a")).await;
    assert!(doc.contains(&format!("`{bin}`")), "{bin}");
    let int_key = guard(call_error(&endpoint, "echo", 2, b"\x81\x01\x01")).await;
    assert!(doc.contains(&format!("``{int_key}``")), "{int_key}");
}

/// The fields of a HELLO payload after magic and version: (tag, value).
fn hello_fields(payload: &[u8]) -> Vec<(u8, Vec<u8>)> {
    assert_eq!(&payload[..4], b"PSVC");
    let mut rest = &payload[6..];
    let mut fields = Vec::new();
    while !rest.is_empty() {
        let len = u16::from_le_bytes([rest[1], rest[2]]) as usize;
        assert!(rest.len() >= 3 + len, "a field runs past the payload");
        fields.push((rest[0], rest[3..3 + len].to_vec()));
        rest = &rest[3 + len..];
    }
    fields
}

/// The entries of an ITEM payload, checked against their layout: (type,
/// value).
fn item_entries(payload: &[u8], from_client: bool) -> Vec<(u8, Vec<u8>)> {
    assert!(!payload.is_empty(), "an ITEM with no entry");
    let mut rest = payload;
    let mut entries = Vec::new();
    while !rest.is_empty() {
        assert!(rest.len() >= 5, "an entry's header is cut short");
        let kind = rest[0];
        let len = u32::from_le_bytes(rest[1..5].try_into().unwrap()) as usize;
        assert!(rest.len() >= 5 + len, "an entry runs past the payload");
        let value = rest[5..5 + len].to_vec();
        match kind {
            0 => {}
            1 => assert_eq!(value.len(), 8, "a lagged count is a u64"),
            2 => assert!(value.is_empty(), "subscribed carries nothing"),
            other => panic!("an entry of type {other}"),
        }
        assert!(kind == 0 || !from_client, "type {kind} from a client");
        entries.push((kind, value));
        rest = &rest[5 + len..];
    }
    entries
}

/// Revision 2.2's example: every frame is what its summary says and
/// follows the layout the document gives its kind (HELLO fields, ITEM
/// entries, CREDIT, END, SUBSCRIBE), the kinds listed are the document's,
/// and the credit granted is the ITEM bytes the client consumed. It is
/// checked against the codec; the streaming methods and topic it shows are
/// those of a service that has them.
#[test]
fn the_revision_2_2_exchange_follows_the_layouts_the_document_gives() {
    let doc = protocol_md();
    let blocks = code_blocks(section(&doc, "## A complete exchange, revision 2.2"));
    let steps = steps(blocks[0]);
    assert!(steps.len() > 15, "{steps:?}");
    let mut hellos = 0;
    let mut window = None;
    // Bytes of ITEM payload the server sent per stream, since its last CREDIT.
    let mut unconsumed = std::collections::HashMap::<u32, u32>::new();
    let mut kinds_seen = std::collections::BTreeSet::new();
    for step in &steps {
        let frame = step.frame();
        let payload = &frame.payload[..];
        kinds_seen.insert(step.kind);
        match (step.kind, step.from_client) {
            (1, from_client) => {
                hellos += 1;
                match (hellos, from_client) {
                    // The server's first: version 1, the maximum, its name.
                    (1, false) => assert_eq!(payload[4..6], [1, 0]),
                    (2, true) => {
                        let fields = hello_fields(payload);
                        assert_eq!(payload[4..6], [2, 0]);
                        let kinds = &fields.iter().find(|f| f.0 == 2).expect("kinds").1;
                        assert!(kinds.contains(&13) && kinds.contains(&14), "{kinds:?}");
                    }
                    (3, false) => {
                        assert_eq!(payload[4..6], [2, 0]);
                        let fields = hello_fields(payload);
                        let kinds = &fields.iter().find(|f| f.0 == 2).expect("kinds").1;
                        assert_eq!(kinds, &[1, 2, 5, 7, 9, 10, 11, 12, 13, 14, 15, 16]);
                        let doc_kinds = "of revision 2.2: 1 2 5 7 9 10 11 12 13 14 15 16";
                        assert!(doc.contains(doc_kinds));
                        let value = &fields.iter().find(|f| f.0 == 3).expect("window").1;
                        window = Some(u32::from_le_bytes(value[..].try_into().unwrap()));
                        // The library reads (and writes) it so too.
                        let reply = HelloReply::decode(payload).unwrap();
                        assert_eq!(reply.stream_window, window);
                        assert_eq!(window, Some(DEFAULT_STREAM_WINDOW));
                        assert_eq!(&reply.encode()[..], payload);
                    }
                    other => panic!("a HELLO out of place: {other:?}"),
                }
            }
            (13, from_client) => {
                let entries = item_entries(payload, from_client);
                // The library decodes the same entries, and encodes them back
                // to the same bytes.
                let decoded = decode_item(&frame.payload, from_client).unwrap();
                assert_eq!(decoded.len(), entries.len());
                for (entry, (kind, value)) in decoded.iter().zip(&entries) {
                    assert_eq!(entry.type_byte(), *kind);
                    assert_eq!(entry.encoded_len(), 5 + value.len());
                }
                assert_eq!(encode_item(&decoded), frame.payload);
                if !from_client {
                    *unconsumed.entry(frame.id).or_default() += payload.len() as u32;
                    assert!(unconsumed[&frame.id] <= window.expect("the window first"));
                }
                if frame.id == 3 && entries[0].0 == 1 {
                    assert_eq!(entries[0].1, 2u64.to_le_bytes(), "2 events were dropped");
                }
            }
            (14, true) => {
                let granted = u32::from_le_bytes(payload.try_into().expect("a u32"));
                assert_eq!(decode_credit(payload), Some(granted));
                let consumed = unconsumed.insert(frame.id, 0).unwrap_or(0);
                assert_eq!(granted, consumed, "the client grants what it consumed");
                assert!(doc.contains(&format!("grants back the {consumed} bytes")));
            }
            (15, true) => assert!(payload.is_empty()),
            (16, true) => {
                assert!(matches!(payload[0], 1 | 2), "an encoding");
                let len = payload[1] as usize;
                assert_eq!(&payload[2..2 + len], b"ticks");
                let subscribe = Subscribe::decode(payload).unwrap();
                assert_eq!(subscribe.topic, "ticks");
                assert_eq!(&subscribe.encode()[..], payload);
            }
            (10 | 11, true) | (3..=5, false) => {}
            other => panic!("a frame the document does not allow here: {other:?}"),
        }
    }
    assert_eq!(window, Some(262_144));
    assert!(doc.contains("pipesvc: 262144, 256 KiB"));
    for kind in [13, 14, 15, 16] {
        assert!(kinds_seen.contains(&kind), "the example shows kind {kind}");
    }
}
