//! The typed methods of `pipesvc serve` (the real binary): `echo`, `sleep`
//! (cancellable) and `whoami`, beside the byte echo, listed by DESCRIBE.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{guard, unique_endpoint, HANG_GUARD};
use pipesvc::client::CallOptions;
use pipesvc::protocol::ErrorCode;
use pipesvc::rpc::Method;
use pipesvc::testing::ServiceProcess;
use pipesvc::Client;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

const ECHO: Method<Value, Value> = Method::new("echo", "");
const SLEEP: Method<Sleep, ()> = Method::new("sleep", "");
const WHOAMI: Method<(), Value> = Method::new("whoami", "");

#[derive(Serialize, Deserialize)]
struct Sleep {
    ms: u64,
}

async fn serve(test: &str) -> (ServiceProcess, Client) {
    let endpoint = unique_endpoint(test);
    let mut command = Command::new(env!("CARGO_BIN_EXE_pipesvc"));
    command.arg("serve").arg("--name").arg(endpoint.address());
    let service = ServiceProcess::start(command, &endpoint, HANG_GUARD)
        .await
        .expect("start pipesvc serve");
    let client = Client::connect(&endpoint).await.expect("connect");
    (service, client)
}

#[tokio::test]
async fn echo_sleep_and_whoami_answer_beside_the_byte_echo() {
    let (_service, client) = serve("serve-methods").await;
    guard(async {
        let value = json!({"a": [1, "é", null, {"b": u64::MAX}], "t": true});
        assert_eq!(client.call(&ECHO, &value).await.unwrap(), value);
        client.call(&SLEEP, &Sleep { ms: 1 }).await.expect("sleep");
        let me = client.call(&WHOAMI, &()).await.expect("whoami");
        assert_eq!(me["pid"], std::process::id());
        #[cfg(unix)]
        // SAFETY: getuid has no preconditions.
        assert_eq!(me["uid"], unsafe { libc::getuid() });
        #[cfg(windows)]
        assert!(me.get("uid").is_none(), "{me}");
        assert_eq!(&client.request("bytes").await.unwrap()[..], b"bytes");
        let description = client.describe().await.expect("describe");
        let names: Vec<&str> = description
            .methods
            .iter()
            .map(|m| m.name.as_str())
            .collect();
        assert_eq!(names, ["echo", "sleep", "whoami", "count", "lines"]);
        assert_eq!(
            description.method("sleep").unwrap().request["required"][0],
            "ms"
        );
    })
    .await;
}

#[tokio::test]
async fn a_sleep_is_stopped_by_its_deadline_and_by_cancel() {
    let (_service, client) = serve("serve-sleep").await;
    guard(async {
        let options = CallOptions::new().timeout(Some(Duration::from_millis(50)));
        let err = client
            .call_with(&SLEEP, &Sleep { ms: 600_000 }, options)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::TIMED_OUT), "{err}");
        // Given up on by the client (a timeout of its own, far from the
        // server's): the dropped call sends CANCEL.
        let patience = Duration::from_millis(100);
        let sleep = client.call(&SLEEP, &Sleep { ms: 600_000 });
        assert!(tokio::time::timeout(patience, sleep).await.is_err());
        // The CANCEL was queued when the call was dropped, before this
        // STATUS; the server acts on it when it reads it, and counts its
        // ERROR `cancelled` before it reads on (PROTOCOL.md, "Status").
        let status = client.status().await.unwrap();
        assert_eq!(status.requests_cancelled, 1);
    })
    .await;
}
