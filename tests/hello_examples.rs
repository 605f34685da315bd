//! The seed's hello programs, as `examples/hello_*.rs`, talk to each other.

mod common;

#[path = "../examples/hello_client.rs"]
mod hello_client;
#[path = "../examples/hello_server.rs"]
mod hello_server;

use common::{guard, unique_endpoint};

#[tokio::test]
async fn hello_client_reads_what_hello_server_sends() {
    let endpoint = unique_endpoint("hello");
    // The client retries until the server's pipe exists, as it would if
    // started first from a script.
    let (sent, message) =
        guard(async { tokio::join!(hello_server::run(&endpoint), hello_client::run(&endpoint)) })
            .await;
    let expected = hello_server::MESSAGE;
    assert_eq!(
        sent.unwrap(),
        expected.len() * 2,
        "UTF-16LE: two bytes a unit"
    );
    assert_eq!(message.unwrap(), expected);
}
