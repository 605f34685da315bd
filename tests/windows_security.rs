//! Windows security defaults (issue 4): the pipe's security descriptor on
//! every instance, custom and invalid SDDL, who the descriptor keeps out,
//! remote clients, the squatting check, the client's impersonation level and
//! the process ids each side reads. Runs on Windows and under Wine; a rule
//! Wine does not implement is skipped with the reason (see SECURITY.md).
#![cfg(windows)]

mod common;

use std::collections::BTreeSet;
use std::ffi::{c_void, OsStr, OsString};
use std::io;
use std::os::windows::ffi::{OsStrExt, OsStringExt};
use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle};
use std::ptr;
use std::time::Duration;

use bytes::Bytes;
use common::{guard, skip, unique_endpoint, wine_version, TestServer};
use pipesvc::client::ClientOptions;
use pipesvc::server::{AccessPolicy, ConnectionContext, Preset, Server, ServiceError};
use pipesvc::transport::{self, ConnectOptions, Listener, ListenerOptions, ServerStream};
use pipesvc::{Client, Endpoint, Error};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::windows::named_pipe::{
    ClientOptions as PipeClientOptions, ServerOptions as PipeServerOptions,
};
use windows_sys::core::PWSTR;
use windows_sys::Win32::Foundation::{
    LocalFree, ERROR_ACCESS_DENIED, GENERIC_READ, HANDLE, INVALID_HANDLE_VALUE,
};
use windows_sys::Win32::Security::Authorization::{
    ConvertSecurityDescriptorToStringSecurityDescriptorW, ConvertSidToStringSidW, GetSecurityInfo,
    SDDL_REVISION_1, SE_KERNEL_OBJECT,
};
use windows_sys::Win32::Security::{
    GetTokenInformation, ImpersonateAnonymousToken, ImpersonateLoggedOnUser, RevertToSelf,
    SecurityIdentification, TokenImpersonationLevel, TokenUser, DACL_SECURITY_INFORMATION,
    PSECURITY_DESCRIPTOR, PSID, TOKEN_DUPLICATE, TOKEN_QUERY, TOKEN_USER,
};
use windows_sys::Win32::Storage::FileSystem::{
    CreateFileW, OPEN_EXISTING, SECURITY_ANONYMOUS, SECURITY_DELEGATION, SECURITY_IMPERSONATION,
};
use windows_sys::Win32::System::Pipes::ImpersonateNamedPipeClient;
use windows_sys::Win32::System::Threading::{
    GetCurrentProcess, GetCurrentThread, OpenProcessToken, OpenThreadToken,
};

async fn echo(request: Bytes, _ctx: ConnectionContext) -> Result<Bytes, ServiceError> {
    Ok(request)
}

fn options(security_descriptor: Option<String>) -> ListenerOptions {
    // One instance waits at a time, so the first accepted stream is the
    // first instance and the second one a later instance.
    ListenerOptions::new()
        .backlog(1)
        .security_descriptor(security_descriptor)
}

fn quick_connect() -> ConnectOptions {
    ConnectOptions::new().timeout(Duration::from_millis(200))
}

/// A server end of a pipe instance, what kind of instance it is, and its
/// client, kept open.
type Instance = (&'static str, ServerStream, transport::ClientStream);

async fn accept_one(
    listener: &mut Listener,
    endpoint: &Endpoint,
) -> (ServerStream, transport::ClientStream) {
    let connecting = tokio::spawn({
        let endpoint = endpoint.clone();
        async move { transport::connect(&endpoint, &ConnectOptions::default()).await }
    });
    let (server, _peer) = guard(listener.accept()).await.expect("accept");
    let client = guard(connecting).await.unwrap().expect("connect").stream;
    (server, client)
}

/// Server ends of each kind of instance a listener with `sddl` creates:
/// the first, a later one (made while the first is open, so Windows gives
/// it the pipe's existing descriptor), and one made after every earlier
/// instance had closed (so the pipe is created anew, from that call's
/// descriptor).
async fn every_kind_of_instance(test: &str, sddl: Option<String>) -> Vec<Instance> {
    let mut instances = Vec::new();
    let endpoint = unique_endpoint(test);
    let mut listener = Listener::bind(&endpoint, &options(sddl.clone())).expect("bind");
    let (server, client) = accept_one(&mut listener, &endpoint).await;
    instances.push(("the first instance", server, client));
    let (server, client) = accept_one(&mut listener, &endpoint).await;
    instances.push(("a later instance", server, client));

    let endpoint = unique_endpoint(test);
    let one_at_a_time = options(sddl).max_instances(Some(1));
    let mut listener = Listener::bind(&endpoint, &one_at_a_time).expect("bind");
    drop(accept_one(&mut listener, &endpoint).await); // the pipe is gone now
    let (server, client) = accept_one(&mut listener, &endpoint).await;
    instances.push(("an instance made after all others closed", server, client));
    instances
}

// --- Win32 helpers ------------------------------------------------------------

fn wide(s: &OsStr) -> Vec<u16> {
    s.encode_wide().chain([0]).collect()
}

/// Takes a LocalAlloc'd NUL-terminated string and frees it.
///
/// # Safety
/// `s` must be such a string, not used afterwards.
unsafe fn take_local_string(s: PWSTR) -> String {
    let len = (0..).take_while(|&i| *s.add(i) != 0).count();
    let text = OsString::from_wide(std::slice::from_raw_parts(s, len));
    LocalFree(s.cast());
    text.into_string().expect("unicode")
}

fn process_token(access: u32) -> OwnedHandle {
    let mut token: HANDLE = ptr::null_mut();
    // SAFETY: pseudo-handle of this process; `token` receives a handle.
    let ok = unsafe { OpenProcessToken(GetCurrentProcess(), access, &mut token) };
    assert_ne!(ok, 0, "OpenProcessToken: {}", io::Error::last_os_error());
    // SAFETY: a token handle we own.
    unsafe { OwnedHandle::from_raw_handle(token) }
}

/// The TOKEN_USER of `token`, in a buffer that keeps its SID alive.
fn token_user(token: &OwnedHandle) -> Vec<u64> {
    let token = token.as_raw_handle() as HANDLE;
    let mut len = 0u32;
    // SAFETY: size query.
    unsafe { GetTokenInformation(token, TokenUser, ptr::null_mut(), 0, &mut len) };
    assert!(len > 0, "TokenUser size: {}", io::Error::last_os_error());
    let mut buffer = vec![0u64; (len as usize).div_ceil(8)];
    // SAFETY: `buffer` holds `len` bytes.
    let ok =
        unsafe { GetTokenInformation(token, TokenUser, buffer.as_mut_ptr().cast(), len, &mut len) };
    assert_ne!(ok, 0, "TokenUser: {}", io::Error::last_os_error());
    buffer
}

fn user_sid_of(buffer: &[u64]) -> PSID {
    // SAFETY: `buffer` came from `token_user`: it starts with a TOKEN_USER.
    unsafe { (*buffer.as_ptr().cast::<TOKEN_USER>()).User.Sid }
}

/// This process's user SID as a string, computed here independently of
/// pipesvc's own code.
fn current_user_sid() -> String {
    let buffer = token_user(&process_token(TOKEN_QUERY));
    let mut string: PWSTR = ptr::null_mut();
    // SAFETY: a valid SID; `string` receives a LocalAlloc'd string.
    let ok = unsafe { ConvertSidToStringSidW(user_sid_of(&buffer), &mut string) };
    assert_ne!(
        ok,
        0,
        "ConvertSidToStringSidW: {}",
        io::Error::last_os_error()
    );
    // SAFETY: as returned by ConvertSidToStringSidW.
    unsafe { take_local_string(string) }
}

/// The DACL of a live kernel object, read with GetSecurityInfo, as SDDL.
fn dacl_of(handle: &impl AsRawHandle) -> String {
    let mut descriptor: PSECURITY_DESCRIPTOR = ptr::null_mut();
    // SAFETY: an open handle; `descriptor` receives a LocalAlloc'd copy.
    let err = unsafe {
        GetSecurityInfo(
            handle.as_raw_handle() as HANDLE,
            SE_KERNEL_OBJECT,
            DACL_SECURITY_INFORMATION,
            ptr::null_mut(),
            ptr::null_mut(),
            ptr::null_mut(),
            ptr::null_mut(),
            &mut descriptor,
        )
    };
    assert_eq!(
        err,
        0,
        "GetSecurityInfo: {}",
        io::Error::from_raw_os_error(err as i32)
    );
    let mut string: PWSTR = ptr::null_mut();
    // SAFETY: a valid descriptor; `string` receives a LocalAlloc'd string.
    let ok = unsafe {
        ConvertSecurityDescriptorToStringSecurityDescriptorW(
            descriptor,
            SDDL_REVISION_1,
            DACL_SECURITY_INFORMATION,
            &mut string,
            ptr::null_mut(),
        )
    };
    let convert_error = io::Error::last_os_error();
    // SAFETY: from GetSecurityInfo, freed once.
    unsafe { LocalFree(descriptor) };
    assert_ne!(
        ok, 0,
        "ConvertSecurityDescriptorToString...: {convert_error}"
    );
    // SAFETY: as returned by the conversion.
    unsafe { take_local_string(string) }
}

/// One ACE of an SDDL DACL: `(type;flags;rights;object;inherited object;sid)`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Ace {
    kind: String,
    flags: String,
    rights: String,
    sid: String,
}

/// Splits `D:<flags>(ace)(ace)...` into the DACL flags and its ACEs.
fn parse_dacl(sddl: &str) -> (String, Vec<Ace>) {
    let dacl = sddl
        .strip_prefix("D:")
        .unwrap_or_else(|| panic!("no DACL in {sddl:?}"));
    let (flags, mut rest) = dacl.split_at(dacl.find('(').unwrap_or(dacl.len()));
    let mut aces = Vec::new();
    while let Some(body) = rest.strip_prefix('(') {
        let end = body
            .find(')')
            .unwrap_or_else(|| panic!("bad ACE in {sddl:?}"));
        let fields: Vec<&str> = body[..end].split(';').collect();
        assert_eq!(fields.len(), 6, "bad ACE {:?} in {sddl:?}", &body[..end]);
        aces.push(Ace {
            kind: fields[0].into(),
            flags: fields[1].into(),
            rights: fields[2].into(),
            sid: fields[5].into(),
        });
        rest = &body[end + 1..];
    }
    assert!(rest.is_empty(), "trailing {rest:?} in {sddl:?}");
    (flags.into(), aces)
}

/// Full access, as written (`GA`) or as Windows maps it for a pipe when
/// it creates the object (`FA`, FILE_ALL_ACCESS).
fn is_full_access(rights: &str) -> bool {
    matches!(rights, "GA" | "FA" | "0x1f01ff")
}

/// Checks that `sddl` (a DACL read back) is protected and has exactly one
/// access-allowed, non-inherited, full-access ACE for each of `sids`.
fn assert_protected_full_access_for(sddl: &str, sids: &[&str]) {
    let (flags, aces) = parse_dacl(sddl);
    assert!(flags.contains('P'), "the DACL is not protected: {sddl}");
    let found: Vec<&str> = aces.iter().map(|ace| ace.sid.as_str()).collect();
    let wanted: BTreeSet<&str> = sids.iter().copied().collect();
    assert_eq!(
        found.len(),
        sids.len(),
        "ACEs {found:?}, expected {sids:?}: {sddl}"
    );
    assert_eq!(
        found.iter().copied().collect::<BTreeSet<_>>(),
        wanted,
        "{sddl}"
    );
    for ace in &aces {
        assert_eq!(ace.kind, "A", "not an allow ACE: {ace:?} in {sddl}");
        assert_eq!(ace.flags, "", "inheritance flags on {ace:?} in {sddl}");
        assert!(
            is_full_access(&ace.rights),
            "not full access: {ace:?} in {sddl}"
        );
    }
}

// --- the security descriptor --------------------------------------------------

#[tokio::test]
async fn the_default_descriptor_admits_only_system_and_the_user_on_every_instance() {
    let user = current_user_sid();
    for (which, server, _client) in every_kind_of_instance("default-dacl", None).await {
        let dacl = dacl_of(&server);
        eprintln!("pipesvc-report: default DACL of {which}: {dacl}");
        assert_protected_full_access_for(&dacl, &["SY", &user]);
        for nobody in ["WD", "AN"] {
            assert!(!dacl.contains(&format!(";{nobody})")), "{nobody} in {dacl}");
        }
    }
}

#[tokio::test]
async fn a_custom_descriptor_is_applied_to_every_instance() {
    let user = current_user_sid();
    // The user and the Administrators group; no SYSTEM, unlike the default.
    let sddl = format!("D:P(A;;GA;;;{user})(A;;GA;;;BA)");
    for (which, server, _client) in every_kind_of_instance("custom-dacl", Some(sddl)).await {
        let dacl = dacl_of(&server);
        eprintln!("pipesvc-report: custom DACL of {which}: {dacl}");
        assert_protected_full_access_for(&dacl, &[&user, "BA"]);
    }
}

/// Checks a DACL read back against the interactive-users preset's: network
/// logons and anonymous denied first, SYSTEM (and `user`) full access,
/// interactive users read and write without creating instances.
fn assert_interactive_users_dacl(which: &str, dacl: &str, user: &str) {
    eprintln!("pipesvc-report: interactive-users DACL of {which}: {dacl}");
    let (flags, aces) = parse_dacl(dacl);
    assert!(flags.contains('P'), "not protected: {dacl}");
    let denied: Vec<&str> = aces.iter().take(2).map(|ace| ace.sid.as_str()).collect();
    assert_eq!(denied, ["NU", "AN"], "{dacl}");
    assert!(aces
        .iter()
        .take(2)
        .all(|ace| ace.kind == "D" && is_full_access(&ace.rights)));
    let allowed: Vec<&Ace> = aces.iter().skip(2).collect();
    assert!(allowed.iter().all(|ace| ace.kind == "A"), "{dacl}");
    let full: BTreeSet<&str> = allowed
        .iter()
        .filter(|ace| is_full_access(&ace.rights))
        .map(|ace| ace.sid.as_str())
        .collect();
    assert_eq!(full, BTreeSet::from(["SY", user]), "{dacl}");
    let interactive: Vec<&&Ace> = allowed.iter().filter(|ace| ace.sid == "IU").collect();
    assert_eq!(interactive.len(), 1, "{dacl}");
    assert!(
        interactive[0].rights.eq_ignore_ascii_case("0x12019b"),
        "interactive users get read and write, not FILE_CREATE_PIPE_INSTANCE: {dacl}"
    );
    assert_eq!(aces.len(), 5, "{dacl}");
}

#[tokio::test]
async fn the_interactive_users_preset_puts_its_descriptor_on_every_instance() {
    let user = current_user_sid();
    let sddl = Preset::InteractiveUsers.security_descriptor().unwrap();
    for (which, server, _client) in every_kind_of_instance("preset-dacl", Some(sddl.clone())).await
    {
        assert_interactive_users_dacl(which, &dacl_of(&server), &user);
    }
    // Through the server: the preset sets the descriptor, which a client's
    // handle reads back, and the policy admits this (same) user.
    let endpoint = unique_endpoint("preset-server");
    let server = Server::builder(endpoint.clone())
        .access(AccessPolicy::interactive_users())
        .handler(echo)
        .bind()
        .unwrap();
    let serving = TestServer::start(server);
    let client = guard(Client::connect(&endpoint)).await.unwrap();
    let raw = transport::connect(&endpoint, &ConnectOptions::default())
        .await
        .unwrap()
        .stream;
    assert_interactive_users_dacl("a server's instance", &dacl_of(&raw), &user);
    assert_eq!(client.request("in").await.unwrap(), "in");
    client.close().await;
    drop(raw);
    guard(serving.stop()).await.unwrap();
    // A descriptor of one's own beside the preset would disagree with it.
    let err = Server::builder(unique_endpoint("preset-sddl"))
        .access(AccessPolicy::interactive_users())
        .security_descriptor(sddl)
        .handler(echo)
        .bind()
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("security_descriptor: the access policy's interactive-users preset"),
        "{err}"
    );
}

#[tokio::test]
async fn an_invalid_descriptor_fails_at_bind_with_a_config_error() {
    for sddl in [
        "D:P(A;;GA;;;NOT-A-SID)",
        "no SDDL at all",
        "D:P(A;;GA;;;SY",
        // Parse, but have no DACL: anyone could connect.
        "",
        "O:SY",
    ] {
        let endpoint = unique_endpoint("bad-sddl");
        let err = Server::builder(endpoint.clone())
            .security_descriptor(sddl)
            .handler(echo)
            .bind()
            .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, Error::Config { .. }), "{sddl:?}: {text}");
        assert!(
            text.contains(&format!("{sddl:?}")),
            "names the SDDL: {text}"
        );
        // Refused before any instance was created.
        let absent = transport::connect(&endpoint, &quick_connect()).await;
        assert!(matches!(absent, Err(Error::Connect { .. })), "{sddl:?}");
    }
}

#[tokio::test]
async fn the_descriptor_is_enforced_a_pipe_not_granting_the_user_refuses_it() {
    const TEST: &str = "the_descriptor_is_enforced_a_pipe_not_granting_the_user_refuses_it";
    let endpoint = unique_endpoint("enforced");
    // Only the Guests group: not this process, whoever runs the tests.
    let sddl = "D:P(A;;GA;;;BG)";
    let mut listener = Listener::bind(&endpoint, &options(Some(sddl.into()))).expect("bind");
    match transport::connect(&endpoint, &quick_connect()).await {
        Err(Error::Connect { source, .. })
            if source.raw_os_error() == Some(ERROR_ACCESS_DENIED as i32) => {}
        Err(other) => panic!("expected access denied, got {other}"),
        Ok(_client) => {
            let Some(version) = wine_version() else {
                panic!("the descriptor was not enforced: the user got in");
            };
            // The descriptor is on the pipe all the same: Wine lets anyone in.
            let (server, _) = guard(listener.accept()).await.expect("accept");
            let applied = dacl_of(&server);
            assert_protected_full_access_for(&applied, &["BG"]);
            skip(
                TEST,
                &format!(
                    "Wine {version} does not enforce a pipe's DACL: this user opened a pipe \
                     whose DACL (read back: {applied}) grants only Guests"
                ),
            );
        }
    }
}

/// Runs `open` while this thread impersonates `identity`; reverts after.
fn as_identity<T>(identity: &Identity, open: impl FnOnce() -> T) -> io::Result<T> {
    struct Revert;
    impl Drop for Revert {
        fn drop(&mut self) {
            // SAFETY: no preconditions; ends this thread's impersonation.
            unsafe { RevertToSelf() };
        }
    }
    // SAFETY: impersonation of a token handle we own, or of the anonymous
    // token; `Revert` undoes it on this thread even on panic.
    let ok = unsafe {
        match identity {
            Identity::Anonymous => ImpersonateAnonymousToken(GetCurrentThread()),
            Identity::OtherUser(token) => ImpersonateLoggedOnUser(token.as_raw_handle() as HANDLE),
        }
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    let _revert = Revert;
    Ok(open())
}

enum Identity {
    /// The anonymous logon.
    Anonymous,
    /// This user's token with the user SID made deny-only: in the same
    /// groups (Everyone, Users, ...) but not this user, like another local
    /// user would be.
    OtherUser(OwnedHandle),
}

impl Identity {
    fn name(&self) -> &'static str {
        match self {
            Identity::Anonymous => "the anonymous logon",
            Identity::OtherUser(_) => "another user (this token, user SID deny-only)",
        }
    }
}

fn other_user() -> io::Result<Identity> {
    let token = process_token(TOKEN_QUERY | TOKEN_DUPLICATE);
    let user = token_user(&token);
    let restricted = common::token::deny_only(&token, user_sid_of(&user))?;
    Ok(Identity::OtherUser(restricted))
}

/// Opens the pipe for reading only (what Windows' default pipe DACL grants
/// Everyone and anonymous) with CreateFileW; the OS error if refused.
fn open_for_reading(endpoint: &Endpoint) -> io::Result<OwnedHandle> {
    let name = wide(endpoint.address().as_os_str());
    // SAFETY: `name` is NUL-terminated; no template, no attributes.
    let handle = unsafe {
        CreateFileW(
            name.as_ptr(),
            GENERIC_READ,
            0,
            ptr::null(),
            OPEN_EXISTING,
            0,
            ptr::null_mut(),
        )
    };
    if handle == INVALID_HANDLE_VALUE {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a handle we own.
    Ok(unsafe { OwnedHandle::from_raw_handle(handle) })
}

#[tokio::test]
async fn the_default_descriptor_refuses_anonymous_and_other_users() {
    const TEST: &str = "the_default_descriptor_refuses_anonymous_and_other_users";
    // Control: the same identities open a pipe whose descriptor admits
    // Everyone and anonymous, so a refusal below is the default's doing.
    let open_endpoint = unique_endpoint("open-to-all");
    let open_to_all = options(Some("D:P(A;;GA;;;WD)(A;;GA;;;AN)(A;;GA;;;SY)".into()));
    let _open = Listener::bind(&open_endpoint, &open_to_all).expect("bind");
    let endpoint = unique_endpoint("default-refuses");
    let _listener = Listener::bind(&endpoint, &options(None)).expect("bind");
    let mut gaps = Vec::new();
    for identity in [Ok(Identity::Anonymous), other_user()] {
        let identity = match identity {
            Ok(identity) => identity,
            Err(e) if wine_version().is_some() => {
                gaps.push(format!("CreateRestrictedToken fails ({e})"));
                continue;
            }
            Err(e) => panic!("cannot make another user's token: {e}"),
        };
        let who = identity.name();
        let control = as_identity(&identity, || open_for_reading(&open_endpoint));
        let refused = as_identity(&identity, || open_for_reading(&endpoint));
        eprintln!("pipesvc-report: {who}: open-to-all pipe {control:?}, default pipe {refused:?}");
        if wine_version().is_some() {
            let gap = match &refused {
                Err(e) => Some(format!("it cannot impersonate {who} ({e})")),
                Ok(Ok(_)) => Some(format!(
                    "{who} opened a pipe with the default descriptor (pipe DACLs are not enforced)"
                )),
                Ok(Err(_)) => None,
            };
            if let Some(gap) = gap {
                gaps.push(gap);
                continue;
            }
        }
        let control = control.unwrap_or_else(|e| panic!("cannot impersonate {who}: {e}"));
        control.unwrap_or_else(|e| panic!("{who} cannot open even an open pipe: {e}"));
        match refused.expect("impersonation worked above") {
            Err(e) if e.raw_os_error() == Some(ERROR_ACCESS_DENIED as i32) => {}
            Err(e) => panic!("{who}: expected access denied, got {e}"),
            Ok(_) => panic!("{who} opened a pipe with the default descriptor"),
        }
    }
    if let Some(version) = wine_version().filter(|_| !gaps.is_empty()) {
        skip(TEST, &format!("Wine {version}: {}", gaps.join("; ")));
    }
}

// --- remote clients and squatting ---------------------------------------------

/// The same pipe through the SMB loopback (`\\127.0.0.1\pipe\...`): the
/// server sees a remote client.
fn remote_name(endpoint: &Endpoint) -> OsString {
    let local = endpoint
        .address()
        .as_os_str()
        .to_string_lossy()
        .into_owned();
    let pipe = local.strip_prefix(r"\\.\pipe\").expect("a local pipe name");
    OsString::from(format!(r"\\127.0.0.1\pipe\{pipe}"))
}

#[tokio::test]
async fn remote_clients_are_refused_unless_allowed() {
    const TEST: &str = "remote_clients_are_refused_unless_allowed";
    // Control first: with remote clients allowed, the loopback reaches it.
    let allowed = unique_endpoint("remote-allowed");
    let _allowed =
        Listener::bind(&allowed, &options(None).reject_remote_clients(false)).expect("bind");
    let control = tokio::task::spawn_blocking({
        let name = remote_name(&allowed);
        move || PipeClientOptions::new().open(name).map(drop)
    });
    if let Err(e) = guard(control).await.unwrap() {
        let gap = match wine_version() {
            Some(version) => format!(
                "Wine {version} has no SMB loopback to reach a local pipe as a remote client"
            ),
            None => "no SMB loopback (is the Server service running?)".into(),
        };
        skip(TEST, &format!("{gap}: {e}"));
        return;
    }
    let endpoint = unique_endpoint("remote-refused");
    let _listener = Listener::bind(&endpoint, &options(None)).expect("bind");
    let remote = tokio::task::spawn_blocking({
        let name = remote_name(&endpoint);
        move || PipeClientOptions::new().open(name).map(drop)
    });
    let refused = guard(remote).await.unwrap();
    assert!(refused.is_err(), "a remote client got in by default");
    // Locally it is reachable.
    transport::connect(&endpoint, &quick_connect())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_name_taken_by_another_pipe_fails_bind_naming_the_squatting_risk() {
    const TEST: &str = "a_name_taken_by_another_pipe_fails_bind_naming_the_squatting_risk";
    let endpoint = unique_endpoint("squatted");
    // A squatter creates the name first, with Windows' default descriptor.
    let _squatter = PipeServerOptions::new()
        .first_pipe_instance(true)
        .create(endpoint.address().as_os_str())
        .expect("squatter");
    match Server::builder(endpoint.clone()).handler(echo).bind() {
        Err(err) => {
            let text = common::chain(&err);
            assert!(matches!(err, Error::Bind { .. }), "{text}");
            assert!(text.contains("already owns this pipe name"), "{text}");
            assert!(text.contains("squatting"), "{text}");
        }
        Ok(_) => match wine_version() {
            Some(version) => skip(
                TEST,
                &format!("Wine {version} ignores FILE_FLAG_FIRST_PIPE_INSTANCE: bind succeeded next to the squatter"),
            ),
            None => panic!("bind succeeded on a name another pipe owns"),
        },
    }
}

// --- the client's impersonation level -----------------------------------------

/// Accepts one client on `listener` that writes one byte, and returns the
/// impersonation level ImpersonateNamedPipeClient gives the server.
async fn impersonation_level(
    listener: &mut Listener,
    mut client: impl tokio::io::AsyncWrite + Unpin,
) -> io::Result<i32> {
    client.write_all(b"x").await?;
    let (mut server, _) = guard(listener.accept()).await?;
    let mut byte = [0u8; 1];
    server.read_exact(&mut byte).await?;
    // SAFETY: an open server handle; the impersonation is undone below on
    // this same thread before anything else runs on it.
    if unsafe { ImpersonateNamedPipeClient(server.as_raw_handle() as HANDLE) } == 0 {
        return Err(io::Error::last_os_error());
    }
    let mut token: HANDLE = ptr::null_mut();
    // SAFETY: this thread's impersonation token, opened as ourselves.
    let opened = unsafe { OpenThreadToken(GetCurrentThread(), TOKEN_QUERY, 1, &mut token) };
    let open_error = io::Error::last_os_error();
    // SAFETY: no preconditions.
    unsafe { RevertToSelf() };
    if opened == 0 {
        return Err(open_error);
    }
    // SAFETY: a token handle we own.
    let token = unsafe { OwnedHandle::from_raw_handle(token) };
    let (mut level, mut len) = (-1i32, 0u32);
    // SAFETY: `level` has room for a SECURITY_IMPERSONATION_LEVEL.
    let ok = unsafe {
        GetTokenInformation(
            token.as_raw_handle() as HANDLE,
            TokenImpersonationLevel,
            ptr::from_mut(&mut level).cast::<c_void>(),
            4,
            &mut len,
        )
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(level)
}

#[tokio::test]
async fn the_client_lets_the_server_identify_it_but_not_impersonate_it() {
    const TEST: &str = "the_client_lets_the_server_identify_it_but_not_impersonate_it";
    let endpoint = unique_endpoint("qos");
    let mut listener = Listener::bind(&endpoint, &options(None)).expect("bind");
    let ours = transport::connect(&endpoint, &ConnectOptions::default())
        .await
        .expect("connect")
        .stream;
    let ours = impersonation_level(&mut listener, ours).await;
    if let Some(version) = wine_version() {
        // Does Wine honour a client's QoS at all? Ask for two other levels.
        let mut others = Vec::new();
        for flags in [
            SECURITY_ANONYMOUS,
            SECURITY_IMPERSONATION,
            SECURITY_DELEGATION,
        ] {
            let client = PipeClientOptions::new()
                .security_qos_flags(flags)
                .open(endpoint.address().as_os_str())
                .expect("open");
            others.push(
                impersonation_level(&mut listener, client)
                    .await
                    .map_err(|e| e.to_string()),
            );
        }
        let ours = ours.as_ref().map_err(|e| e.to_string()).cloned();
        eprintln!("pipesvc-report: impersonation level: ours {ours:?}; anonymous, impersonation, delegation clients {others:?}");
        if others.iter().all(|other| *other == ours) {
            skip(TEST, &format!("Wine {version} ignores the client's SECURITY_SQOS flags: every client gives the server the same impersonation level ({ours:?})"));
            return;
        }
    }
    assert_eq!(ours.expect("impersonate"), SecurityIdentification);
}

// --- process ids --------------------------------------------------------------

#[tokio::test]
async fn each_side_reads_the_other_sides_process_id() {
    let endpoint = unique_endpoint("pids");
    let handler = |_request: Bytes, ctx: ConnectionContext| async move {
        Ok::<_, ServiceError>(Bytes::from(format!("{:?}", ctx.peer().pid)))
    };
    let server = Server::builder(endpoint.clone())
        .handler(handler)
        .bind()
        .unwrap();
    let serving = TestServer::start(server);
    let client = Client::connect(&endpoint).await.unwrap();
    let me = Some(std::process::id());
    // Same process on both ends here.
    assert_eq!(
        client.server_peer().pid,
        me,
        "the server's pid, as the client reads it"
    );
    let seen = client.request("").await.unwrap();
    assert_eq!(
        seen,
        format!("{me:?}"),
        "the client's pid, as the server reads it"
    );
    client.close().await;
    guard(serving.stop()).await.expect("serve");
}

#[tokio::test]
async fn expect_server_pid_refuses_another_process_before_sending_anything() {
    let endpoint = unique_endpoint("wrong-server");
    let me = std::process::id();
    // A bare listener: it never sends HELLO, so a client that does not
    // stop at the pid check would wait for one instead of failing.
    let mut listener = Listener::bind(&endpoint, &options(None)).expect("bind");
    let wrong = me.wrapping_add(4);
    let options = ClientOptions::new().expect_server_pid(Some(wrong));
    let client = tokio::spawn({
        let endpoint = endpoint.clone();
        async move { Client::connect_with(&endpoint, options).await }
    });
    let (mut server, _) = guard(listener.accept()).await.expect("accept");
    let err = guard(client).await.unwrap().unwrap_err();
    let text = err.to_string();
    match &err {
        Error::WrongServer {
            expected, found, ..
        } => {
            assert_eq!(*expected, format!("pid {wrong}"), "{text}");
            assert_eq!(*found, format!("pid {me}"), "{text}");
        }
        _ => panic!("expected WrongServer, got {text}"),
    }
    // The client closed without writing a byte.
    common::assert_client_sent_nothing(&mut server).await;
    drop((server, listener));

    // The right pid connects.
    let server = Server::builder(endpoint.clone())
        .handler(echo)
        .bind()
        .unwrap();
    let serving = TestServer::start(server);
    let options = ClientOptions::new().expect_server_pid(Some(me));
    let client = Client::connect_with(&endpoint, options).await.unwrap();
    assert_eq!(client.request("hi").await.unwrap(), "hi");
    client.close().await;
    guard(serving.stop()).await.expect("serve");
}
