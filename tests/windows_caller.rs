//! Who is calling (issue 22), on Windows: the client's token as the server
//! reads it (a real `pipesvc call` process, through `whoami`), connection
//! rules checked once that token is read, a client thread acting as another
//! user, and `run_as_client` for a client that allowed impersonation (and
//! never for one that did not). Runs on Windows and under Wine; what Wine
//! does not do is skipped naming the gap (see SECURITY.md).
#![cfg(windows)]

mod common;

use std::ffi::OsString;
use std::io::{self, BufRead, BufReader};
use std::os::windows::ffi::OsStringExt;
use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle};
use std::process::{Command, Stdio};
use std::ptr;
use std::time::Duration;

use bytes::Bytes;
use common::{guard, skip, unique_endpoint, wine_version, TestServer};
use pipesvc::client::ClientOptions;
use pipesvc::protocol::ErrorCode;
use pipesvc::server::{AccessPolicy, ConnectionContext, Rule, Server, ServiceError};
use pipesvc::testing::output_within;
use pipesvc::transport::{Caller, ImpersonationLevel};
use pipesvc::Client;
use tokio::net::windows::named_pipe::ClientOptions as PipeClientOptions;
use windows_sys::core::PWSTR;
use windows_sys::Win32::Foundation::{LocalFree, ERROR_NO_TOKEN, HANDLE};
use windows_sys::Win32::Security::Authorization::ConvertSidToStringSidW;
use windows_sys::Win32::Security::{
    GetTokenInformation, ImpersonateLoggedOnUser, RevertToSelf, TokenUser, TOKEN_DUPLICATE,
    TOKEN_QUERY, TOKEN_USER,
};
use windows_sys::Win32::Storage::FileSystem::SECURITY_IDENTIFICATION;
use windows_sys::Win32::System::Threading::{
    GetCurrentProcess, GetCurrentThread, OpenProcessToken, OpenThreadToken,
};

const BIN: &str = env!("CARGO_BIN_EXE_pipesvc");
const PATIENCE: Duration = Duration::from_secs(60);

// --- tokens, read here independently of pipesvc -------------------------------

fn process_token(access: u32) -> OwnedHandle {
    let mut token: HANDLE = ptr::null_mut();
    // SAFETY: pseudo-handle of this process; `token` receives a handle.
    let ok = unsafe { OpenProcessToken(GetCurrentProcess(), access, &mut token) };
    assert_ne!(ok, 0, "OpenProcessToken: {}", io::Error::last_os_error());
    // SAFETY: a token handle we own.
    unsafe { OwnedHandle::from_raw_handle(token) }
}

/// The user SID of `token`, as a string.
fn user_of(token: &OwnedHandle) -> String {
    let raw = token.as_raw_handle() as HANDLE;
    let mut len = 0u32;
    // SAFETY: size query.
    unsafe { GetTokenInformation(raw, TokenUser, ptr::null_mut(), 0, &mut len) };
    let mut buffer = vec![0u64; (len as usize).div_ceil(8)];
    // SAFETY: `buffer` holds `len` bytes.
    let ok =
        unsafe { GetTokenInformation(raw, TokenUser, buffer.as_mut_ptr().cast(), len, &mut len) };
    assert_ne!(ok, 0, "TokenUser: {}", io::Error::last_os_error());
    let mut string: PWSTR = ptr::null_mut();
    // SAFETY: `buffer` starts with a TOKEN_USER whose SID lives in it;
    // `string` receives a LocalAlloc'd string, freed below.
    unsafe {
        let sid = (*buffer.as_ptr().cast::<TOKEN_USER>()).User.Sid;
        assert_ne!(ConvertSidToStringSidW(sid, &mut string), 0);
        let len = (0..).take_while(|&i| *string.add(i) != 0).count();
        let text = OsString::from_wide(std::slice::from_raw_parts(string, len));
        LocalFree(string.cast());
        text.into_string().unwrap()
    }
}

/// The user of this thread's impersonation token; `ERROR_NO_TOKEN` when
/// the thread is not impersonating.
fn thread_user() -> io::Result<String> {
    let mut raw: HANDLE = ptr::null_mut();
    // SAFETY: this thread's pseudo-handle, opened as the process.
    if unsafe { OpenThreadToken(GetCurrentThread(), TOKEN_QUERY, 1, &mut raw) } == 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a token handle we own.
    Ok(user_of(&unsafe { OwnedHandle::from_raw_handle(raw) }))
}

fn is_no_token(result: &io::Result<String>) -> bool {
    matches!(result, Err(e) if e.raw_os_error() == Some(ERROR_NO_TOKEN as i32))
}

// --- the identity of a real client process ------------------------------------

/// A `pipesvc serve` process, killed when dropped. Ready once it prints its
/// `listening on` line: no client polls it while it starts.
struct Serve(std::process::Child);

impl Serve {
    fn start(name: &str) -> Serve {
        let mut child = Command::new(BIN)
            .args(["serve", "--name", name])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pipesvc serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let serve = Serve(child);
        let line = rx.recv_timeout(PATIENCE).unwrap_or_default();
        assert!(
            line.contains("listening on"),
            "pipesvc serve did not start: {line:?}"
        );
        serve
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_token_of_a_real_client_process_is_read_back() {
    let endpoint = unique_endpoint("whoami");
    let _server = Serve::start(&endpoint.to_string());
    let mut call = Command::new(BIN);
    call.args(["call", "--method", "whoami", "--name"])
        .arg(endpoint.to_string())
        .env("RUST_LOG", "off");
    let output = tokio::task::spawn_blocking(move || output_within(call, PATIENCE))
        .await
        .unwrap()
        .expect("pipesvc call");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    eprintln!("pipesvc-report: whoami of a pipesvc call process: {seen}");

    // The client is a child of this process, with the same token: compare
    // with this process's token, read independently for the user.
    let me = Caller::current();
    let user = user_of(&process_token(TOKEN_QUERY));
    assert_eq!(seen["sid"], user.as_str(), "{seen}");
    assert_eq!(seen["user"].as_str(), me.account(), "{seen}");
    assert_eq!(
        seen["session_id"].as_u64(),
        me.session_id().map(u64::from),
        "{seen}"
    );
    assert_eq!(seen["logon_session"].as_u64(), me.logon_session(), "{seen}");
    assert_eq!(
        seen["integrity_rid"].as_u64(),
        me.integrity().map(|i| u64::from(i.0)),
        "{seen}"
    );
    assert_eq!(seen["elevated"].as_bool(), me.elevated(), "{seen}");
    let groups: Vec<String> =
        serde_json::from_value(seen["group_sids"].clone()).unwrap_or_default();
    assert_eq!(groups, me.group_sids(), "{seen}");
    let exe = seen["executable"]
        .as_str()
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(exe.ends_with("pipesvc.exe"), "{seen}");
    assert!(
        seen["pid"]
            .as_u64()
            .is_some_and(|pid| pid != u64::from(std::process::id())),
        "{seen}"
    );
    assert!(
        seen.get("uid").is_none() && seen.get("groups").is_none(),
        "{seen}"
    );
    match wine_version() {
        // Wine gives the server the impersonation level whatever the
        // client asked (tests/windows_security.rs).
        Some(_) => assert!(seen["impersonation"].is_string(), "{seen}"),
        None => assert_eq!(seen["impersonation"], "identification", "{seen}"),
    }
}

// --- connection rules, once the token is read ---------------------------------

async fn serve_with(policy: AccessPolicy) -> TestServer {
    let server = Server::builder(unique_endpoint("rules"))
        .access(policy)
        .handler(|_: Bytes, ctx: ConnectionContext| async move {
            let caller = ctx.caller();
            Ok::<_, ServiceError>(Bytes::from(format!(
                "{} {:?}",
                caller.user_sid().unwrap_or("?"),
                caller.impersonation_level()
            )))
        })
        .bind()
        .unwrap();
    TestServer::start(server)
}

#[tokio::test]
async fn connection_rules_are_checked_once_the_token_is_read() {
    let me = user_of(&process_token(TOKEN_QUERY));
    // Only SYSTEM: this client is refused after its HELLO, naming the rule.
    let server = serve_with(AccessPolicy::only(Rule::user("S-1-5-18"))).await;
    let err = guard(Client::connect(server.endpoint())).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NOT_ALLOWED), "{err}");
    assert!(
        err.to_string()
            .contains("(rule \"user:S-1-5-18\") does not admit this client ("),
        "{err}"
    );
    guard(server.stop()).await.unwrap();

    // By its own SID, by a group every token has (Everyone), by the same
    // user: admitted, and the handler sees the SID.
    for rule in [
        Rule::user(me.clone()),
        Rule::group("S-1-1-0"),
        Rule::same_user(),
    ] {
        let name = rule.name().to_owned();
        let server = serve_with(AccessPolicy::only(rule)).await;
        let client = guard(Client::connect(server.endpoint())).await.unwrap();
        let answer = client.request("").await.unwrap();
        assert!(
            String::from_utf8_lossy(&answer).starts_with(&me),
            "{name}: {answer:?}"
        );
        client.close().await;
        guard(server.stop()).await.unwrap();
    }
}

/// Runs `open` while this thread acts as `token`; reverts after.
fn as_token<T>(token: &OwnedHandle, open: impl FnOnce() -> T) -> io::Result<T> {
    struct Revert;
    impl Drop for Revert {
        fn drop(&mut self) {
            // SAFETY: no preconditions; ends this thread's impersonation.
            unsafe { RevertToSelf() };
        }
    }
    // SAFETY: a token handle we own; `Revert` undoes it on this thread.
    if unsafe { ImpersonateLoggedOnUser(token.as_raw_handle() as HANDLE) } == 0 {
        return Err(io::Error::last_os_error());
    }
    let _revert = Revert;
    Ok(open())
}

#[tokio::test(flavor = "current_thread")]
async fn a_client_thread_acting_as_another_user_is_not_taken_for_this_user() {
    const TEST: &str = "a_client_thread_acting_as_another_user_is_not_taken_for_this_user";
    // This token with its user SID deny-only: the same groups, not the user.
    let token = process_token(TOKEN_QUERY | TOKEN_DUPLICATE);
    let me = user_of(&token);
    let restricted = {
        let raw = token.as_raw_handle() as HANDLE;
        let mut len = 0u32;
        // SAFETY: size query, then the TOKEN_USER into `buffer`.
        unsafe { GetTokenInformation(raw, TokenUser, ptr::null_mut(), 0, &mut len) };
        let mut buffer = vec![0u64; (len as usize).div_ceil(8)];
        // SAFETY: `buffer` holds `len` bytes.
        unsafe { GetTokenInformation(raw, TokenUser, buffer.as_mut_ptr().cast(), len, &mut len) };
        // SAFETY: a TOKEN_USER whose SID lives in `buffer`, alive here.
        let sid = unsafe { (*buffer.as_ptr().cast::<TOKEN_USER>()).User.Sid };
        common::token::deny_only(&token, sid).expect("a restricted token")
    };
    let server = serve_with(AccessPolicy::only(Rule::same_user())).await;
    let name = server.endpoint().address().as_os_str().to_owned();
    // The pipe is opened on this thread while it acts as the other user.
    let pipe = as_token(&restricted, || {
        PipeClientOptions::new()
            .security_qos_flags(SECURITY_IDENTIFICATION)
            .open(&name)
    })
    .expect("impersonate")
    .expect("open the pipe");
    let outcome = guard(Client::from_io(pipe, ClientOptions::new())).await;
    match outcome {
        Err(err) => {
            assert_eq!(err.code(), Some(ErrorCode::NOT_ALLOWED), "{err}");
            assert!(err.to_string().contains("rule \"same-user\""), "{err}");
        }
        Ok(client) => {
            let answer = client.request("").await.unwrap();
            client.close().await;
            match wine_version() {
                Some(version) => skip(
                    TEST,
                    &format!(
                        "Wine {version} gives the server this process's token, not the client \
                         thread's restricted one (seen: {})",
                        String::from_utf8_lossy(&answer)
                    ),
                ),
                None => panic!("a client without this user's SID was admitted as {me}: {answer:?}"),
            }
        }
    }
    guard(server.stop()).await.unwrap();
}

// --- acting as the client -------------------------------------------------------

/// A server whose byte handler runs `run_as_client` and reports what the
/// blocking thread saw: the thread's user while acting, or the error.
async fn run_as_server() -> TestServer {
    let server = Server::builder(unique_endpoint("run-as"))
        .handler(|request: Bytes, ctx: ConnectionContext| async move {
            let panics = &request[..] == b"panic";
            let ran = ctx
                .run_as_client(move || {
                    let user = thread_user();
                    assert!(!panics, "a panic while acting as the client");
                    user
                })
                .await;
            let text = match ran {
                Ok(Ok(user)) => format!("ran as {user}"),
                Ok(Err(e)) => format!("ran without a thread token: {e}"),
                Err(e) => format!("refused: {e}"),
            };
            Ok::<_, ServiceError>(Bytes::from(text))
        })
        .bind()
        .unwrap();
    TestServer::start(server)
}

/// Whether the only blocking thread of this runtime has a thread token:
/// `Ok` if it has none.
async fn blocking_thread_is_itself() -> Result<(), String> {
    let seen = tokio::task::spawn_blocking(thread_user).await.unwrap();
    if is_no_token(&seen) {
        Ok(())
    } else {
        Err(format!(
            "the blocking thread still acts as someone: {seen:?}"
        ))
    }
}

#[test]
fn run_as_client_acts_as_a_client_that_allowed_it_and_always_reverts() {
    const TEST: &str = "run_as_client_acts_as_a_client_that_allowed_it_and_always_reverts";
    // One blocking thread: the thread that acted as the client is the one
    // checked afterwards.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .max_blocking_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let me = user_of(&process_token(TOKEN_QUERY));
        let server = run_as_server().await;
        let options = ClientOptions::new().allow_impersonation(true);
        let client = guard(Client::connect_with(server.endpoint(), options))
            .await
            .unwrap();
        let answer = String::from_utf8(client.request("who").await.unwrap().to_vec()).unwrap();
        if let (Some(version), false) = (wine_version(), answer.starts_with("ran as")) {
            skip(
                TEST,
                &format!("Wine {version} cannot act as the pipe's client: {answer}"),
            );
            return;
        }
        assert_eq!(answer, format!("ran as {me}"));
        blocking_thread_is_itself().await.unwrap();
        // A panic while acting as the client: the handler fails, the thread
        // is itself again.
        let err = client.request("panic").await.unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::HANDLER_FAILED), "{err}");
        blocking_thread_is_itself().await.unwrap();
        client.close().await;
        guard(server.stop()).await.unwrap();
    });
}

#[tokio::test]
async fn an_identification_client_is_never_acted_as() {
    const TEST: &str = "an_identification_client_is_never_acted_as";
    let server = run_as_server().await;
    // The default client: the identification level.
    let client = guard(Client::connect(server.endpoint())).await.unwrap();
    let answer = String::from_utf8(client.request("who").await.unwrap().to_vec()).unwrap();
    client.close().await;
    guard(server.stop()).await.unwrap();
    if let (Some(version), true) = (wine_version(), answer.starts_with("ran as")) {
        skip(
            TEST,
            &format!(
                "Wine {version} gives the server the impersonation level whatever the client \
                 asked, so an identification client was acted as: {answer}"
            ),
        );
        return;
    }
    assert!(
        answer.starts_with(
            "refused: cannot act as the client: the client connected at the \
             identification level"
        ),
        "{answer}"
    );
    assert!(answer.contains("allow_impersonation"), "{answer}");
}

#[tokio::test]
async fn run_as_client_is_refused_for_a_stream_handed_over() {
    let server = run_as_server().await;
    let (stream, server_end) = pipesvc::transport::memory::pair();
    server
        .handle()
        .serve_connection(server_end, Caller::current())
        .unwrap();
    let client = guard(Client::from_io(stream, ClientOptions::new()))
        .await
        .unwrap();
    let answer = String::from_utf8(client.request("who").await.unwrap().to_vec()).unwrap();
    assert!(
        answer.starts_with("refused: cannot act as the client: the client's token was not read"),
        "{answer}"
    );
    assert_eq!(
        Caller::current().impersonation_level(),
        None::<ImpersonationLevel>,
        "a process token has no impersonation level"
    );
    client.close().await;
    guard(server.stop()).await.unwrap();
}
