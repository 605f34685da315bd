//! The client against rogue servers (tests/common/rogue.rs): each fault
//! gives a clear error within the call's deadline, and server text is
//! escaped before it is displayed.

mod common;
#[path = "common/rogue.rs"]
mod rogue;

use std::time::Duration;

use bytes::Bytes;

use common::{guard, unique_endpoint};
use pipesvc::client::{ClientOptions, DEFAULT_REQUEST_TIMEOUT};
use pipesvc::error::{CloseReason, Escaped};
use pipesvc::protocol::Kind;
use pipesvc::{Client, Error};
use rogue::{Behaviour, Rogue, ESCAPES};

/// The deadline these tests give each call: short, as nothing will come.
const DEADLINE: Duration = Duration::from_millis(500);

async fn client_of(test: &str, behaviour: Behaviour) -> (Rogue, Client) {
    let rogue = Rogue::start(unique_endpoint(test), "rogue", behaviour);
    let options = ClientOptions::new().request_timeout(Some(DEADLINE));
    let client = guard(Client::connect_with(&rogue.endpoint, options))
        .await
        .expect("the rogue completes the handshake");
    (rogue, client)
}

/// Expects the deadline to run out while waiting for the answer.
fn assert_answer_timed_out(err: Error) {
    match &err {
        Error::Timeout(limit, what) => {
            assert_eq!(*limit, DEADLINE, "the configured deadline is named");
            assert!(what.contains("answer"), "{err}");
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
}

#[test]
fn requests_have_a_deadline_by_default() {
    // The options have no getters (they only grow); their Debug shows it.
    let options = format!("{:?}", ClientOptions::new());
    let expected = format!("request_timeout: {:?}", Some(DEFAULT_REQUEST_TIMEOUT));
    assert!(options.contains(&expected), "{options}");
}

#[tokio::test]
async fn silence_after_hello_fails_at_the_deadline() {
    let (_rogue, client) = client_of("rogue-silent", Behaviour::Silent).await;
    assert_answer_timed_out(guard(client.request("x")).await.unwrap_err());
    assert_answer_timed_out(guard(client.ping()).await.unwrap_err());
    assert_answer_timed_out(guard(client.status()).await.unwrap_err());
    let err = guard(client.request_with_timeout("x", Some(Duration::from_millis(50))))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Timeout(d, _) if d == Duration::from_millis(50)),
        "the per-call deadline wins: {err}"
    );
}

#[tokio::test]
async fn half_an_answer_fails_at_the_deadline() {
    let (_rogue, client) = client_of("rogue-half", Behaviour::HalfFrame).await;
    assert_answer_timed_out(guard(client.request("x")).await.unwrap_err());
}

#[tokio::test]
async fn answers_to_unknown_ids_fail_at_the_deadline() {
    let (_rogue, client) = client_of("rogue-unknown-ids", Behaviour::UnknownIds).await;
    for _ in 0..3 {
        assert_answer_timed_out(guard(client.request("x")).await.unwrap_err());
    }
}

#[tokio::test]
async fn a_frame_over_the_clients_limit_ends_the_connection_at_once() {
    // u32::MAX: the client must refuse it from the length field alone
    // (never wait for, or reserve, 4 GiB).
    let (_rogue, client) = client_of("rogue-oversized", Behaviour::Oversized(u32::MAX)).await;
    let err = guard(client.request_with_timeout("x", None))
        .await
        .unwrap_err();
    match &err {
        Error::ConnectionClosed(CloseReason::Protocol(why)) => {
            assert!(
                why.contains("too large") || why.contains("exceeds"),
                "{err}"
            )
        }
        other => panic!("expected a protocol close, got {other:?}"),
    }
    assert!(client.is_closed());
}

#[tokio::test]
async fn a_flood_of_notifies_does_not_hold_up_the_deadline() {
    let (rogue, client) = client_of("rogue-flood-deadline", Behaviour::NotifyFlood(1 << 20)).await;
    rogue.notifies.reached(8).await;
    assert_answer_timed_out(guard(client.request("x")).await.unwrap_err());
}

#[tokio::test]
async fn server_text_is_kept_but_displayed_escaped() {
    let rogue = Rogue::start(
        unique_endpoint("rogue-escapes"),
        ESCAPES,
        Behaviour::EscapeError,
    );
    let client = guard(Client::connect(&rogue.endpoint)).await.unwrap();
    assert_eq!(client.server_name(), ESCAPES, "the name is kept as sent");
    let shown = Escaped(&client.server_name()).to_string();
    assert!(!shown.chars().any(char::is_control), "{shown:?}");
    let err = guard(client.request("x")).await.unwrap_err();
    let Error::Remote { message, .. } = &err else {
        panic!("expected a service error, got {err:?}");
    };
    assert_eq!(message, ESCAPES);
    let text = err.to_string();
    assert!(!text.chars().any(char::is_control), "{text:?}");
    assert!(text.contains("\\u{1b}[2J"), "{text}");
}

/// The handshake timeout the handshake tests give the client.
const HANDSHAKE: Duration = Duration::from_millis(1000);

/// Connects to a rogue with `behaviour` and expects the handshake to run
/// out of time, naming the handshake timeout and a HELLO; prints how long
/// it took (a figure, never asserted).
async fn assert_handshake_timed_out(test: &str, behaviour: Behaviour, waiting_for: &str) {
    let rogue = Rogue::start(unique_endpoint(test), "rogue", behaviour);
    let options = ClientOptions::new().handshake_timeout(HANDSHAKE);
    let start = tokio::time::Instant::now();
    let outcome = guard(Client::connect_with(&rogue.endpoint, options)).await;
    let elapsed = start.elapsed();
    let Err(err) = outcome else {
        panic!("{test}: the handshake completed after {elapsed:?}, past its {HANDSHAKE:?}");
    };
    eprintln!("{test}: {err} after {elapsed:?}");
    match &err {
        Error::Timeout(limit, what) => {
            assert_eq!(*limit, HANDSHAKE, "the handshake timeout is named: {err}");
            assert!(what.contains(waiting_for), "{err}");
        }
        other => panic!("expected a handshake timeout, got {other:?}"),
    }
}

#[tokio::test]
async fn a_withheld_hello_reply_fails_at_the_handshake_timeout() {
    assert_handshake_timed_out(
        "rogue-withheld-reply",
        Behaviour::WithholdHelloReply,
        "waiting for the server's HELLO reply",
    )
    .await;
}

#[tokio::test]
async fn the_handshake_timeout_bounds_the_whole_handshake() {
    // Each of the server's two HELLOs is dribbled over 70 % of the
    // handshake timeout: each alone would fit in it, both do not.
    assert_handshake_timed_out(
        "rogue-dribbled-handshake",
        Behaviour::DribbleHandshake(HANDSHAKE * 7 / 10),
        "waiting for the server's HELLO",
    )
    .await;
}

#[tokio::test]
async fn a_server_that_speaks_garbage_fails_the_connect_clearly() {
    // An HTTP answer (its first 4 bytes read as a huge length), a frame of
    // the HELLO's kind without the magic, and bytes of no shape at all:
    // each fails the connect as a protocol error, at once (the handshake
    // timeout is the hang guard's, so a timeout would fail the test).
    let cases: [(&str, Bytes); 3] = [
        (
            "http",
            Bytes::from_static(b"HTTP/1.1 400 Bad Request\r\n\r\n"),
        ),
        (
            "no-magic",
            rogue::frame_bytes(Kind::Hello, 0, b"JUNK\x01\x00\x00\x00\x80\x00"),
        ),
        ("random", (7u8..47).collect::<Vec<u8>>().into()),
    ];
    for (case, garbage) in cases {
        let test = format!("rogue-garbage-{case}");
        let rogue = Rogue::start(unique_endpoint(&test), "rogue", Behaviour::Garbage(garbage));
        let options = ClientOptions::new().handshake_timeout(Duration::from_secs(60));
        let err = guard(Client::connect_with(&rogue.endpoint, options))
            .await
            .expect_err("garbage is no server");
        assert!(matches!(err, Error::Protocol(_)), "{case}: {err:?}");
        println!("{case}: {err}");
    }
}
