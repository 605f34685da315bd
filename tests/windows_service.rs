//! `pipesvc service` (issue 7): the real binary registered with the real
//! Service Control Manager (Windows, or Wine's services.exe), started,
//! called, stopped and removed, with every step checked through the SCM's
//! own API (the windows-service crate). Each test uses its own service and
//! pipe names, so they run in parallel; every wait polls the SCM with a
//! deadline. Off Windows, the one test here checks that `pipesvc service`
//! refuses clearly.

mod common;

use std::process::{Command, Output};

use pipesvc::testing::output_within;

/// The `pipesvc` executable cargo built for these tests.
const BIN: &str = env!("CARGO_BIN_EXE_pipesvc");

/// Runs `pipesvc ARGS` to completion and returns what it printed. A run
/// still going after the hang guard is killed and fails the test.
fn pipesvc(args: &[&str]) -> Output {
    let mut command = Command::new(BIN);
    command.args(args);
    output_within(command, common::HANG_GUARD)
        .unwrap_or_else(|e| panic!("`pipesvc {}`: {e}", args.join(" ")))
}

#[cfg(not(windows))]
#[test]
fn service_commands_are_windows_only_and_point_to_systemd() {
    for args in [
        &["service", "install", "--name", "x"][..],
        &["service", "start"],
        &["service", "stop"],
        &["service", "uninstall"],
        &["service", "status"],
    ] {
        let out = pipesvc(args);
        assert!(!out.status.success(), "{args:?}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("Windows-only"), "{args:?}: {err}");
        assert!(err.contains("contrib/pipesvc.service"), "{args:?}: {err}");
    }
}

#[cfg(windows)]
mod windows {
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::{Duration, Instant};

    use pipesvc::client::ClientOptions;
    use pipesvc::protocol::Kind;
    use windows_service::service::{
        Service, ServiceAccess, ServiceExitCode, ServiceStartType, ServiceState,
    };
    use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};
    use windows_sys::Win32::Foundation::ERROR_SERVICE_DOES_NOT_EXIST;

    use super::{common, pipesvc};

    /// How often the tests ask the SCM for a service's state.
    const POLL: Duration = Duration::from_millis(20);

    /// A service name no other test (in this or another process) uses.
    fn unique_service(test: &str) -> String {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        format!("pipesvc-t{}-{test}-{n}", std::process::id())
    }

    /// The SCM, for checking what the commands did.
    fn scm() -> ServiceManager {
        ServiceManager::local_computer(None::<&str>, ServiceManagerAccess::CONNECT)
            .expect("connect to the Service Control Manager")
    }

    /// Opens service `name` for querying its state and configuration.
    fn open(name: &str) -> windows_service::Result<Service> {
        scm().open_service(
            name,
            ServiceAccess::QUERY_STATUS | ServiceAccess::QUERY_CONFIG,
        )
    }

    /// The current state of service `name`.
    fn state(name: &str) -> ServiceState {
        open(name)
            .expect("open the service")
            .query_status()
            .expect("query the service")
            .current_state
    }

    /// Whether the SCM no longer knows `name`.
    fn is_gone(name: &str) -> bool {
        match open(name) {
            Err(windows_service::Error::Winapi(e)) => {
                e.raw_os_error() == Some(ERROR_SERVICE_DOES_NOT_EXIST as i32)
            }
            _ => false,
        }
    }

    /// Polls the SCM until `done`, within the hang guard.
    fn eventually(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + common::HANG_GUARD;
        while !done() {
            assert!(Instant::now() < deadline, "gave up waiting: {what}");
            std::thread::sleep(POLL);
        }
    }

    /// Output as text.
    fn text(bytes: &[u8]) -> String {
        String::from_utf8_lossy(bytes).into_owned()
    }

    /// Runs `pipesvc ARGS`, expects success, returns its stdout.
    fn ok(args: &[&str]) -> String {
        let out = pipesvc(args);
        assert!(
            out.status.success(),
            "`pipesvc {}` failed: {}{}",
            args.join(" "),
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// Runs `pipesvc ARGS`, expects failure, returns its stderr.
    fn fails(args: &[&str]) -> String {
        let out = pipesvc(args);
        assert!(
            !out.status.success(),
            "`pipesvc {}` succeeded: {}",
            args.join(" "),
            text(&out.stdout)
        );
        text(&out.stderr)
    }

    /// The log file `install` picks when given none.
    fn default_log_file(service: &str) -> PathBuf {
        let base = std::env::var_os("ProgramData").expect("ProgramData is set");
        PathBuf::from(base)
            .join("pipesvc")
            .join(format!("{service}.log"))
    }

    /// An installed service: removed (stopped first) and its log deleted
    /// when dropped, even when the test failed half-way.
    struct Installed {
        name: String,
        pipe: String,
        log: PathBuf,
    }

    impl Installed {
        /// `pipesvc service install --service-name NAME --start-type demand
        /// [EXTRA...] --name PIPE`, checked to have succeeded. `None` (after
        /// a skip line) when this user may not install services: that needs
        /// an elevated prompt on Windows.
        fn new(test: &str, extra: &[&str]) -> Option<Installed> {
            let name = unique_service(test);
            let pipe = common::unique_endpoint(test)
                .address()
                .to_string_lossy()
                .into_owned();
            let mut args = vec!["service", "install", "--service-name", &name];
            args.extend_from_slice(&["--start-type", "demand"]);
            args.extend_from_slice(extra);
            args.extend_from_slice(&["--name", &pipe]);
            let out = pipesvc(&args);
            let service = Installed {
                log: default_log_file(&name),
                name,
                pipe,
            };
            if !out.status.success() {
                let err = text(&out.stderr);
                if err.contains("access denied") && common::wine_version().is_none() {
                    assert!(err.contains("run as administrator"), "{err}");
                    common::skip(test, "installing a service needs an elevated prompt");
                    return None;
                }
                panic!("install failed: {err}");
            }
            Some(service)
        }

        /// `pipesvc service start`, expected to succeed; its stdout.
        fn start(&self) -> String {
            ok(&["service", "start", "--service-name", &self.name])
        }

        /// `pipesvc service stop`, expected to succeed; its stdout.
        fn stop(&self) -> String {
            ok(&["service", "stop", "--service-name", &self.name])
        }

        /// The service's log file, as it is now.
        fn log(&self) -> String {
            std::fs::read_to_string(&self.log)
                .unwrap_or_else(|e| panic!("read the log {}: {e}", self.log.display()))
        }
    }

    impl Drop for Installed {
        fn drop(&mut self) {
            if let Ok(service) = scm().open_service(
                &self.name,
                ServiceAccess::STOP | ServiceAccess::DELETE | ServiceAccess::QUERY_STATUS,
            ) {
                let _ = service.stop();
                let _ = service.delete();
            }
            let _ = std::fs::remove_file(&self.log);
        }
    }

    /// Asserts that `needles` appear in `haystack` in this order.
    fn assert_in_order(haystack: &str, needles: &[&str]) {
        let mut rest = haystack;
        for needle in needles {
            let at = rest
                .find(needle)
                .unwrap_or_else(|| panic!("{needle:?} missing (in order) from:\n{haystack}"));
            rest = &rest[at + needle.len()..];
        }
    }

    /// The interactive-users preset: `install` leaves the pipe's
    /// descriptor to it (one of its own would disagree with the preset, and
    /// the service would refuse to start), and the service serves this
    /// user (Wine runs every process as one interactive user).
    #[test]
    fn the_interactive_users_preset_installs_without_a_descriptor_of_its_own() {
        const TEST: &str = "svc-preset";
        let Some(service) = Installed::new(TEST, &["--allow", "interactive-users"]) else {
            return;
        };
        let config = open(&service.name).unwrap().query_config().unwrap();
        let command_line = config.executable_path.to_string_lossy().into_owned();
        assert!(
            command_line.contains(" --allow interactive-users"),
            "{command_line}"
        );
        assert!(
            !command_line.contains("--security-descriptor"),
            "{command_line}"
        );
        let out = service.start();
        assert!(out.contains("is running (pid "), "{out}");
        assert_eq!(ok(&["call", "--name", &service.pipe, "preset"]), "preset\n");
        service.stop();
    }

    /// The README's operator steps, each checked through the SCM: install,
    /// start, call and ping, status, stop, uninstall.
    #[test]
    fn install_start_call_stop_uninstall() {
        const TEST: &str = "svc-life";
        let Some(service) = Installed::new(TEST, &[]) else {
            return;
        };
        let name = service.name.as_str();

        // Installed: stopped, started on demand, the documented command line.
        let scm_service = open(name).expect("the service exists");
        let config = scm_service.query_config().expect("query its config");
        assert_eq!(state(name), ServiceState::Stopped);
        assert_eq!(config.start_type, ServiceStartType::OnDemand);
        assert_eq!(
            config.display_name.to_string_lossy(),
            format!("pipesvc IPC service ({name})")
        );
        let command_line = config.executable_path.to_string_lossy().into_owned();
        let sddl = pipesvc::transport::default_security_descriptor().unwrap();
        for part in [
            format!(" service run --service-name {name} --log-file "),
            format!(" --name {} ", service.pipe),
            format!(" --security-descriptor {sddl}"),
        ] {
            assert!(command_line.contains(&part), "{part:?} in {command_line}");
        }
        drop(scm_service);

        // Started: RUNNING with a process, and that process serves the pipe.
        let out = service.start();
        assert!(out.contains("is running (pid "), "{out}");
        let status = open(name).unwrap().query_status().unwrap();
        assert_eq!(status.current_state, ServiceState::Running);
        let pid = status.process_id.expect("a running service has a pid");
        assert!(out.contains(&format!("(pid {pid})")), "{out}");
        assert_eq!(
            ok(&["call", "--name", &service.pipe, "hello service"]),
            "hello service\n"
        );
        let pings = ok(&["ping", "--name", &service.pipe, "--count", "2"]);
        assert_eq!(pings.matches("pong seq=").count(), 2, "{pings}");
        // The README's query step: the call above is counted.
        let counters = ok(&["status", "--name", &service.pipe, "--json"]);
        assert!(counters.contains("\"requests_served\":1,"), "{counters}");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(common::guard(async {
            let options = ClientOptions::new().expect_server_pid(Some(pid));
            let endpoint = service.pipe.parse().unwrap();
            let client = pipesvc::Client::connect_with(&endpoint, options)
                .await
                .expect("the service's own process answers on its pipe");
            assert_eq!(&client.request("from pid").await.unwrap()[..], b"from pid");
            client.close().await;
        }));
        let out = ok(&["service", "status", "--service-name", name]);
        assert!(out.contains(&format!("RUNNING (pid {pid})")), "{out}");
        assert!(
            out.contains(&format!("log file: {}", service.log.display())),
            "{out}"
        );
        let out = service.start();
        assert!(out.contains("already running"), "{out}");

        // Stopped gracefully: a connected client is told GOODBYE, then
        // STOPPED with no error, and the pipe is gone.
        let (out, frames) = runtime.block_on(common::guard(async {
            let endpoint = service.pipe.parse().unwrap();
            let (mut raw, _hello) = common::RawClient::handshake(&endpoint).await;
            let reader = tokio::spawn(async move {
                let mut kinds = Vec::new();
                while let Some(frame) = raw.recv().await {
                    kinds.push(frame.kind);
                }
                kinds
            });
            let name = service.name.clone();
            let stop = tokio::task::spawn_blocking(move || {
                ok(&["service", "stop", "--service-name", &name])
            });
            (stop.await.unwrap(), reader.await.unwrap())
        }));
        assert!(out.contains("stopped"), "{out}");
        assert_eq!(
            frames.last(),
            Some(&Kind::Goodbye),
            "GOODBYE, then the close: {frames:?}"
        );
        let status = open(name).unwrap().query_status().unwrap();
        assert_eq!(status.current_state, ServiceState::Stopped);
        assert_eq!(status.exit_code, ServiceExitCode::NO_ERROR);
        let err = fails(&[
            "call",
            "--name",
            &service.pipe,
            "--connect-timeout",
            "0.2",
            "hi",
        ]);
        assert!(err.contains("could not connect"), "{err}");
        let out = service.stop();
        assert!(out.contains("is not running"), "{out}");
        // Each state was reported, in order.
        assert_in_order(
            &service.log(),
            &[
                "service starting",
                "START_PENDING",
                "listening",
                "RUNNING",
                "stop requested by the Service Control Manager",
                "STOP_PENDING",
                "stopped",
                "STOPPED",
            ],
        );

        // Removed.
        let out = ok(&["service", "uninstall", "--service-name", name]);
        assert!(out.contains("removed"), "{out}");
        assert!(is_gone(name));
        let err = fails(&["service", "uninstall", "--service-name", name]);
        assert!(err.contains("no such service"), "{err}");
    }

    /// `uninstall` stops a running service (gracefully) before removing it.
    #[test]
    fn uninstall_stops_a_running_service_first() {
        // Also: the global --log-format given to install is the service's.
        let Some(service) = Installed::new("svc-rm-running", &["--log-format", "json"]) else {
            return;
        };
        service.start();
        let out = ok(&["service", "uninstall", "--service-name", &service.name]);
        assert_in_order(&out, &["stopped", "removed"]);
        assert!(is_gone(&service.name));
        let log = service.log();
        assert_in_order(&log, &["stop requested", "STOPPED"]);
        for line in log.lines() {
            let json: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
            assert!(json["fields"]["message"].is_string(), "{line}");
        }
    }

    /// A service whose server cannot start ends STOPPED with an exit code
    /// that `start` and `status` explain, pointing to the log, which has
    /// the server's own error (and only errors and warnings, as its
    /// `--log-filter` says).
    #[test]
    fn a_service_that_cannot_start_says_why() {
        let bad_sddl = "D:(this is not SDDL";
        let Some(service) = Installed::new(
            "svc-bad",
            &["--log-filter", "warn", "--security-descriptor", bad_sddl],
        ) else {
            return;
        };
        let err = fails(&["service", "start", "--service-name", &service.name]);
        assert!(err.contains("stopped while starting"), "{err}");
        assert!(err.contains("the server could not start"), "{err}");
        assert!(
            err.contains(&format!("its log: {}", service.log.display())),
            "{err}"
        );
        eventually("the service to be STOPPED", || {
            state(&service.name) == ServiceState::Stopped
        });
        let status = open(&service.name).unwrap().query_status().unwrap();
        assert_eq!(status.exit_code, ServiceExitCode::ServiceSpecific(1));
        let out = ok(&["service", "status", "--service-name", &service.name]);
        assert!(out.contains("STOPPED"), "{out}");
        assert!(
            out.contains("last exit: the server could not start"),
            "{out}"
        );
        let log = service.log();
        assert!(log.contains("invalid security descriptor"), "{log}");
        assert!(log.contains(bad_sddl), "{log}");
        assert!(
            !log.contains("service starting"),
            "only warnings and errors: {log}"
        );
    }

    /// A log file that cannot be opened stops the service at start-up (it
    /// would run blind), and `start` says so.
    #[test]
    fn a_log_file_that_cannot_be_opened_stops_the_service() {
        // A directory where the file should be.
        let dir = std::env::temp_dir().join(unique_service("svc-log-dir"));
        std::fs::create_dir_all(&dir).unwrap();
        let Some(service) = Installed::new("svc-log", &["--log-file", dir.to_str().unwrap()])
        else {
            return;
        };
        let err = fails(&["service", "start", "--service-name", &service.name]);
        assert!(err.contains("could not open its log file"), "{err}");
        assert!(err.contains("service-specific error 3"), "{err}");
        std::fs::remove_dir(&dir).unwrap();
    }

    /// What each command says when it cannot do what was asked.
    #[test]
    fn errors_say_what_is_wrong() {
        let Some(service) = Installed::new("svc-errors", &[]) else {
            return;
        };
        let err = fails(&[
            "service",
            "install",
            "--service-name",
            &service.name,
            "--name",
            "other",
        ]);
        assert!(err.contains("service already exists"), "{err}");
        assert!(err.contains("pipesvc service uninstall"), "{err}");

        let missing = unique_service("svc-missing");
        for command in ["start", "stop", "status", "uninstall"] {
            let err = fails(&["service", command, "--service-name", &missing]);
            assert!(
                err.contains(&format!("service {missing:?}: no such service")),
                "{command}: {err}"
            );
        }

        let other = unique_service("svc-bad-options");
        let err = fails(&[
            "service",
            "install",
            "--service-name",
            &other,
            "--max-connections",
            "lots",
        ]);
        assert!(err.contains("invalid serve options"), "{err}");
        let err = fails(&[
            "service",
            "install",
            "--name",
            "x",
            "--service-name",
            &other,
        ]);
        assert!(
            err.contains("`--service-name` is an option of `install` itself"),
            "{err}"
        );
        assert!(is_gone(&other), "nothing is installed after a refusal");

        // A name the SCM refuses: nothing is left behind, not even the log
        // directory its default log file would have needed.
        let bad = format!("{}/x", unique_service("svc-bad-name"));
        let err = fails(&["service", "install", "--service-name", &bad]);
        assert!(
            err.contains(&format!(
                "cannot install service {bad:?}: invalid service name"
            )),
            "{err}"
        );
        let log_dir = default_log_file(&bad).parent().unwrap().to_path_buf();
        assert!(!log_dir.exists(), "{} was created", log_dir.display());
    }

    /// `pipesvc service run` is for the SCM: from a console it says what to
    /// run instead, and serves nothing.
    #[test]
    fn run_from_a_console_says_what_to_use_instead() {
        let pipe = common::unique_endpoint("svc-console")
            .address()
            .to_string_lossy()
            .into_owned();
        let err = fails(&[
            "service",
            "run",
            "--service-name",
            "pipesvc-console",
            "--name",
            &pipe,
        ]);
        assert!(
            err.contains("started by the Service Control Manager"),
            "{err}"
        );
        assert!(err.contains("pipesvc serve"), "{err}");
    }

    /// Runs `pipesvc ARGS` with this process's token, the Administrators
    /// group made deny-only (as a user who is not an administrator, or an
    /// administrator's prompt that is not elevated). Returns its exit code
    /// and what it printed (stdout and stderr together), or why it could
    /// not be started that way.
    fn run_without_administrators(args: &[&str]) -> Result<(u32, String), String> {
        use std::os::windows::ffi::OsStrExt;
        use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle};
        use std::ptr;
        use windows_sys::Win32::Foundation::{
            LocalFree, SetHandleInformation, HANDLE, HANDLE_FLAG_INHERIT, WAIT_OBJECT_0,
        };
        use windows_sys::Win32::Security::Authorization::ConvertStringSidToSidW;
        use windows_sys::Win32::Security::{
            PSID, TOKEN_ASSIGN_PRIMARY, TOKEN_DUPLICATE, TOKEN_QUERY,
        };
        use windows_sys::Win32::System::Threading::{
            CreateProcessAsUserW, GetCurrentProcess, GetExitCodeProcess, OpenProcessToken,
            TerminateProcess, WaitForSingleObject, PROCESS_INFORMATION, STARTF_USESTDHANDLES,
            STARTUPINFOW,
        };

        let os_error = |what: &str| format!("{what} failed: {}", std::io::Error::last_os_error());
        let mut raw: HANDLE = ptr::null_mut();
        // SAFETY: a pseudo-handle for this process; `raw` receives a token.
        let access = TOKEN_DUPLICATE | TOKEN_QUERY | TOKEN_ASSIGN_PRIMARY;
        if unsafe { OpenProcessToken(GetCurrentProcess(), access, &mut raw) } == 0 {
            return Err(os_error("OpenProcessToken"));
        }
        // SAFETY: a token handle we now own.
        let token = unsafe { OwnedHandle::from_raw_handle(raw) };
        // BUILTIN\Administrators.
        let administrators: Vec<u16> = "S-1-5-32-544\0".encode_utf16().collect();
        let mut sid: PSID = ptr::null_mut();
        // SAFETY: a NUL-terminated string; `sid` receives a LocalAlloc'd SID.
        if unsafe { ConvertStringSidToSidW(administrators.as_ptr(), &mut sid) } == 0 {
            return Err(os_error("ConvertStringSidToSidW"));
        }
        let restricted = common::token::deny_only(&token, sid);
        // SAFETY: allocated by ConvertStringSidToSidW; used no more.
        unsafe { LocalFree(sid) };
        let restricted = restricted.map_err(|e| format!("CreateRestrictedToken failed: {e}"))?;

        // The child writes its output to a file that it inherits.
        let path = std::env::temp_dir().join(format!("{}.out", unique_service("svc-out")));
        let output = std::fs::File::create(&path).map_err(|e| e.to_string())?;
        let handle = output.as_raw_handle() as HANDLE;
        // SAFETY: an open file handle of ours.
        if unsafe { SetHandleInformation(handle, HANDLE_FLAG_INHERIT, HANDLE_FLAG_INHERIT) } == 0 {
            return Err(os_error("SetHandleInformation"));
        }
        let mut command_line: Vec<u16> = std::ffi::OsString::from(format!("\"{}\"", super::BIN))
            .encode_wide()
            .collect();
        for arg in args {
            command_line.push(u16::from(b' '));
            command_line.extend(arg.encode_utf16());
        }
        command_line.push(0);
        // SAFETY: plain-old-data structures, zero is their empty value.
        let mut startup: STARTUPINFOW = unsafe { std::mem::zeroed() };
        startup.cb = std::mem::size_of::<STARTUPINFOW>() as u32;
        startup.dwFlags = STARTF_USESTDHANDLES;
        startup.hStdOutput = handle;
        startup.hStdError = handle;
        // SAFETY: as above.
        let mut process: PROCESS_INFORMATION = unsafe { std::mem::zeroed() };
        // SAFETY: a primary token we own, a writable NUL-terminated command
        // line, startup info whose handles are open; `process` receives
        // two handles, owned below.
        let ok = unsafe {
            CreateProcessAsUserW(
                restricted.as_raw_handle() as HANDLE,
                ptr::null(),
                command_line.as_mut_ptr(),
                ptr::null(),
                ptr::null(),
                1,
                0,
                ptr::null(),
                ptr::null(),
                &startup,
                &mut process,
            )
        };
        if ok == 0 {
            return Err(os_error("CreateProcessAsUserW"));
        }
        // SAFETY: handles CreateProcessAsUserW gave us.
        let (child, _thread) = unsafe {
            (
                OwnedHandle::from_raw_handle(process.hProcess),
                OwnedHandle::from_raw_handle(process.hThread),
            )
        };
        let child = child.as_raw_handle() as HANDLE;
        let guard_ms = common::HANG_GUARD.as_millis() as u32;
        // SAFETY: a process handle we own.
        if unsafe { WaitForSingleObject(child, guard_ms) } != WAIT_OBJECT_0 {
            // SAFETY: as above.
            unsafe { TerminateProcess(child, 1) };
            panic!(
                "`pipesvc {}` was still running after {:?}",
                args.join(" "),
                common::HANG_GUARD
            );
        }
        let mut code = 0u32;
        // SAFETY: as above; `code` receives the exit code.
        if unsafe { GetExitCodeProcess(child, &mut code) } == 0 {
            return Err(os_error("GetExitCodeProcess"));
        }
        drop(output);
        let text = std::fs::read_to_string(&path).map_err(|e| e.to_string())?;
        let _ = std::fs::remove_file(&path);
        Ok((code, text))
    }

    /// Installing a service needs administrator rights: without them,
    /// `install` says to run as administrator, and installs nothing.
    #[test]
    fn install_without_administrator_rights_says_to_run_as_administrator() {
        const TEST: &str = "install_without_administrator_rights_says_to_run_as_administrator";
        let name = unique_service("svc-denied");
        let args = [
            "service",
            "install",
            "--service-name",
            &name,
            "--start-type",
            "demand",
        ];
        let (code, out) = match run_without_administrators(&args) {
            Ok(result) => result,
            Err(gap) => match common::wine_version() {
                Some(version) => return common::skip(TEST, &format!("Wine {version}: {gap}")),
                None => panic!("{gap}"),
            },
        };
        if code == 0 {
            // Remove what should not have been installed.
            let installed = Installed {
                log: default_log_file(&name),
                name: name.clone(),
                pipe: String::new(),
            };
            drop(installed);
            let Some(version) = common::wine_version() else {
                panic!("installed without administrator rights: {out}");
            };
            return common::skip(
                TEST,
                &format!(
                    "Wine {version}'s services.exe does not check the caller's rights: a token \
                     with Administrators deny-only installed a service"
                ),
            );
        }
        assert!(
            out.contains(&format!(
                "cannot install service {name:?}: access denied: run as administrator"
            )),
            "{out}"
        );
        assert!(is_gone(&name));
    }
}
