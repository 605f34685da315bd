//! Who is the server, on Windows (issue 12, item 4): the client reads the
//! user of the pipe server's process token (or the pipe's owner) and
//! refuses, before sending anything, a server not running as its own user
//! or SYSTEM. Runs on Windows and under Wine; every process there runs as
//! one user, so "another user" is stood for by requiring a SID the server
//! does not have (SYSTEM), which exercises the same refusal path.
#![cfg(windows)]

mod common;

use bytes::Bytes;
use common::{guard, skip, unique_endpoint, wine_version};
use pipesvc::client::{ClientOptions, ServerIdentity};
use pipesvc::transport::{self, Listener, ListenerOptions};
use pipesvc::{Client, Error};

/// The SID this process runs as, from the default descriptor pipesvc
/// builds for it: `D:P(A;;GA;;;SY)(A;;GA;;;<SID>)`.
fn my_sid() -> String {
    let sddl = transport::default_security_descriptor().expect("default descriptor");
    let start = sddl.rfind(";;;").expect("an ACE") + 3;
    sddl[start..].trim_end_matches(')').to_owned()
}

fn with(identity: ServerIdentity) -> ClientOptions {
    ClientOptions::new().server_identity(identity)
}

#[tokio::test]
async fn a_server_of_the_same_user_connects_by_default_and_by_its_sid() {
    let (endpoint, serving) = common::echo("same-user");
    let client = guard(Client::connect(&endpoint)).await.unwrap();
    assert_eq!(client.request("hi").await.unwrap(), Bytes::from("hi"));
    client.close().await;
    let client = guard(Client::connect_with(
        &endpoint,
        with(ServerIdentity::Sid(my_sid())),
    ))
    .await
    .unwrap();
    assert_eq!(client.request("hi").await.unwrap(), Bytes::from("hi"));
    client.close().await;
    guard(serving.stop()).await.expect("serve");
}

#[tokio::test]
async fn a_server_of_another_user_is_refused_before_anything_is_sent() {
    let endpoint = unique_endpoint("other-user");
    // A bare listener: it never sends HELLO and records what arrives.
    let mut listener = Listener::bind(&endpoint, &ListenerOptions::default()).expect("bind");
    let client = tokio::spawn({
        let endpoint = endpoint.clone();
        async move {
            Client::connect_with(&endpoint, with(ServerIdentity::Sid("S-1-5-18".into()))).await
        }
    });
    let (mut server, _) = guard(listener.accept()).await.expect("accept");
    let err = guard(client).await.unwrap().unwrap_err();
    let text = err.to_string();
    eprintln!("refused: {text}");
    common::assert_client_sent_nothing(&mut server).await;
    let Error::WrongServer {
        expected, found, ..
    } = &err
    else {
        panic!("expected WrongServer, got {text}");
    };
    // The SID, and the account's name when Windows knows it.
    assert!(
        expected.starts_with("a server running as S-1-5-18"),
        "{text}"
    );
    if found.contains("cannot be read") && wine_version().is_some() {
        // Refused all the same (the check fails closed), but the user was
        // not read: say which call Wine lacks.
        skip(
            "a_server_of_another_user_is_refused_before_anything_is_sent",
            &format!("the pipe server's user cannot be read here: {found}"),
        );
        return;
    }
    let me = my_sid();
    assert!(
        found.starts_with(&format!("a server running as {me}"))
            || found.starts_with(&format!("a pipe owned by {me}")),
        "{text}"
    );
    assert!(
        found.ends_with(&format!("(pid {})", std::process::id())),
        "{text}"
    );
}

#[tokio::test]
async fn any_server_skips_the_check_and_a_uid_is_a_configuration_error() {
    let (endpoint, serving) = common::echo("any");
    let client = guard(Client::connect_with(&endpoint, with(ServerIdentity::Any)))
        .await
        .unwrap();
    assert_eq!(client.request("hi").await.unwrap(), Bytes::from("hi"));
    client.close().await;
    let err = guard(Client::connect_with(
        &endpoint,
        with(ServerIdentity::Uid(0)),
    ))
    .await
    .unwrap_err();
    assert!(matches!(err, Error::Config { .. }), "{err}");
    guard(serving.stop()).await.expect("serve");
}

#[test]
fn account_names_and_sid_strings_resolve_to_sids() {
    assert_eq!(
        ServerIdentity::of_user("s-1-5-18").unwrap(),
        ServerIdentity::Sid("S-1-5-18".into())
    );
    assert!(matches!(
        ServerIdentity::of_user("S-1-nonsense"),
        Err(Error::Config { .. })
    ));
    match ServerIdentity::of_user("SYSTEM") {
        Ok(identity) => assert_eq!(identity, ServerIdentity::Sid("S-1-5-18".into())),
        Err(e) if wine_version().is_some() => skip(
            "account_names_and_sid_strings_resolve_to_sids",
            &format!("Wine's LookupAccountNameW(\"SYSTEM\") failed: {e}"),
        ),
        Err(e) => panic!("LookupAccountNameW(\"SYSTEM\") failed: {e}"),
    }
    let err = ServerIdentity::of_user("no-such-account-pipesvc").unwrap_err();
    assert!(err.to_string().contains("no-such-account-pipesvc"), "{err}");
}
