//! `PRODUCT service install|uninstall|start|stop|status`: requests to the
//! Service Control Manager through the `windows-service` crate, with errors
//! that say what to do, and waits that poll the service's state until a
//! deadline. Each command writes what it did to the caller's `out`, line
//! by line as it happens (a later failure keeps the lines before it).

use std::ffi::{OsStr, OsString};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser;
use windows_service::service::{
    Service, ServiceAccess, ServiceConfig, ServiceErrorControl, ServiceExitCode, ServiceInfo,
    ServiceStartType, ServiceState, ServiceStatus, ServiceType,
};
use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};
use windows_sys::Win32::Foundation::{
    ERROR_ACCESS_DENIED, ERROR_DUPLICATE_SERVICE_NAME, ERROR_FILE_NOT_FOUND, ERROR_INVALID_NAME,
    ERROR_PATH_NOT_FOUND, ERROR_SERVICE_ALREADY_RUNNING, ERROR_SERVICE_CANNOT_ACCEPT_CTRL,
    ERROR_SERVICE_DATABASE_LOCKED, ERROR_SERVICE_DISABLED, ERROR_SERVICE_DOES_NOT_EXIST,
    ERROR_SERVICE_EXISTS, ERROR_SERVICE_MARKED_FOR_DELETE, ERROR_SERVICE_NEVER_STARTED,
    ERROR_SERVICE_NOT_ACTIVE, ERROR_SERVICE_REQUEST_TIMEOUT,
};

use serde::de::DeserializeOwned;

use super::{default_log_file, run, InstallArgs, ServiceNameArg, StartType, WaitArgs};
use crate::ops::config::ServeArgs;
use crate::ops::logging::LogFormat;
use crate::ops::Product;

/// How often a wait asks the SCM for the service's state.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Why a `PRODUCT service` command failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The Service Control Manager refused or failed a request.
    #[error("cannot {action} service {service:?}: {reason}")]
    Scm {
        /// What was asked: "install", "start", ...
        action: &'static str,
        /// The service name.
        service: String,
        /// What it means and what to do, or the system's message.
        reason: String,
        /// The system's error.
        source: io::Error,
    },
    /// The serve options given to `install` are not valid `PRODUCT serve`
    /// options.
    #[error("invalid serve options for the service: {0}")]
    ServeOptions(String),
    /// The service stopped before it reported RUNNING.
    #[error("service {service:?} stopped while starting: {reason}")]
    StoppedWhileStarting {
        /// The service name.
        service: String,
        /// Its exit code explained, and where its log is.
        reason: String,
    },
    /// The service did not reach the state asked for in time.
    #[error(
        "service {service:?} is still {state} after {waited:?} (waiting for {want}); \
         try again with a longer --timeout, or look at its log"
    )]
    Timeout {
        /// The service name.
        service: String,
        /// The state it was last seen in.
        state: &'static str,
        /// The state waited for.
        want: &'static str,
        /// How long it was waited for.
        waited: Duration,
    },
    /// `install` failed after the SCM had registered the service, and
    /// removing the half-installed service failed too.
    #[error(
        "{error} (and the half-installed service {service:?} could not be removed: {cleanup})"
    )]
    HalfInstalled {
        /// Why `install` failed.
        #[source]
        error: Box<ServiceError>,
        /// The service name.
        service: String,
        /// Why it could not be removed.
        cleanup: windows_service::Error,
    },
    /// The service dispatcher (`service run`) failed.
    #[error(transparent)]
    Dispatcher(windows_service::Error),
    /// The command's report could not be written (to the caller's `out`).
    #[error("cannot write what the command did: {0}")]
    Write(#[source] io::Error),
    /// Anything else, with a message that names it.
    #[error("{0}")]
    Other(String),
}

/// Writes a line of a command's report to `out`.
macro_rules! say {
    ($out:expr, $($arg:tt)*) => {
        writeln!($out, $($arg)*).map_err(ServiceError::Write)?
    };
}

/// The result of a `PRODUCT service` command.
type Result<T> = std::result::Result<T, ServiceError>;

/// The SCM's name for a state, as `sc query` prints it.
pub fn state_name(state: ServiceState) -> &'static str {
    match state {
        ServiceState::Stopped => "STOPPED",
        ServiceState::StartPending => "START_PENDING",
        ServiceState::StopPending => "STOP_PENDING",
        ServiceState::Running => "RUNNING",
        ServiceState::ContinuePending => "CONTINUE_PENDING",
        ServiceState::PausePending => "PAUSE_PENDING",
        ServiceState::Paused => "PAUSED",
    }
}

/// What an error from the SCM means for `service`, and what to do about
/// it; `None` for codes without a better explanation than the system's.
fn explain(code: u32, service: &str) -> Option<String> {
    let text = match code {
        ERROR_ACCESS_DENIED => {
            "access denied: run as administrator (from an elevated prompt)".to_string()
        }
        ERROR_SERVICE_EXISTS => format!(
            "service already exists (remove it first: {} service uninstall --service-name {service})",
            super::program()
        ),
        ERROR_DUPLICATE_SERVICE_NAME => {
            "another service already uses this display name (choose another with --display-name)"
                .to_string()
        }
        ERROR_SERVICE_DOES_NOT_EXIST => format!(
            "no such service (install it with: {} service install --service-name {service})",
            super::program()
        ),
        ERROR_SERVICE_MARKED_FOR_DELETE => "the service is marked for deletion: it disappears \
            once every program that has it open (such as the Services console) closes it"
            .to_string(),
        ERROR_SERVICE_DISABLED => "the service is disabled (its start type is `disabled`)".to_string(),
        ERROR_SERVICE_CANNOT_ACCEPT_CTRL => {
            "the service cannot take this request now (it is starting or stopping); try again"
                .to_string()
        }
        ERROR_SERVICE_REQUEST_TIMEOUT => {
            "the service did not answer the Service Control Manager in time".to_string()
        }
        ERROR_SERVICE_DATABASE_LOCKED => {
            "the service database is locked (another service is being started)".to_string()
        }
        ERROR_INVALID_NAME => "invalid service name".to_string(),
        ERROR_FILE_NOT_FOUND | ERROR_PATH_NOT_FOUND => format!(
            "the service's executable is missing (was it moved or deleted since `{} service \
             install`? install it again)",
            super::program()
        ),
        _ => return None,
    };
    Some(text)
}

/// The error for a failed SCM request: `action` on `service`.
fn scm_error(action: &'static str, service: &str, err: windows_service::Error) -> ServiceError {
    match err {
        windows_service::Error::Winapi(source) => {
            let reason = source
                .raw_os_error()
                .and_then(|code| explain(code as u32, service))
                .unwrap_or_else(|| source.to_string());
            ServiceError::Scm {
                action,
                service: service.to_string(),
                reason,
                source,
            }
        }
        other => ServiceError::Other(format!("cannot {action} service {service:?}: {other}")),
    }
}

/// The Windows error code inside `err`, if any.
fn os_code(err: &windows_service::Error) -> Option<u32> {
    match err {
        windows_service::Error::Winapi(e) => e.raw_os_error().map(|code| code as u32),
        _ => None,
    }
}

/// Connects to the local SCM with `access`.
fn manager(
    access: ServiceManagerAccess,
    action: &'static str,
    service: &str,
) -> Result<ServiceManager> {
    ServiceManager::local_computer(None::<&str>, access).map_err(|e| scm_error(action, service, e))
}

/// Opens `service` with `access` for `action`.
fn open(access: ServiceAccess, action: &'static str, service: &str) -> Result<Service> {
    manager(ServiceManagerAccess::CONNECT, action, service)?
        .open_service(service, access)
        .map_err(|e| scm_error(action, service, e))
}

/// `PRODUCT serve`'s options, parsed on their own to check the ones given
/// to `install` before they end up on the service's command line.
#[derive(Parser, Debug)]
#[command(name = "service install", no_binary_name = true)]
struct ServeOptions {
    #[command(flatten)]
    serve: ServeArgs,
}

/// The options of `install` itself, which must come before the serve
/// options (everything from the first serve option on is taken as one).
const INSTALL_OPTIONS: [&str; 6] = [
    "--service-name",
    "--display-name",
    "--description",
    "--start-type",
    "--log-file",
    "--log-filter",
];

/// Parses `options` as `PRODUCT serve` options.
fn parse_serve_options(options: &[OsString]) -> Result<ServeArgs> {
    use clap::{CommandFactory, FromArgMatches};
    ServeOptions::command()
        .name(format!("{} service install", super::program()))
        .try_get_matches_from(options)
        .and_then(|matches| ServeOptions::from_arg_matches(&matches))
        .map(|parsed| parsed.serve)
        .map_err(|e| {
            let text = e.to_string();
            let mut message = text
                .trim()
                .strip_prefix("error: ")
                .unwrap_or(text.trim())
                .to_string();
            let misplaced = options.iter().filter_map(|o| o.to_str()).find(|o| {
                INSTALL_OPTIONS
                    .iter()
                    .any(|name| o == name || o.starts_with(&format!("{name}=")))
            });
            if let Some(option) = misplaced {
                message.push_str(&format!(
                    "\n(`{option}` is an option of `install` itself: put it before the serve options)"
                ));
            }
            ServiceError::ServeOptions(message)
        })
}

/// An absolute version of `path` (the SCM starts services in the system
/// directory, so a relative path would mean something else there).
fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path)
        .map_err(|e| ServiceError::Other(format!("cannot resolve {}: {e}", path.display())))
}

/// `PRODUCT service install`; `E` is the product's own config keys.
pub fn install<E: DeserializeOwned>(
    product: &Product,
    args: InstallArgs,
    log_format: LogFormat,
    out: &mut dyn Write,
) -> Result<()> {
    let name = args.service.name(product);
    let serve = parse_serve_options(&args.serve_options)?;
    let given = serve
        .given::<E>(product)
        .map_err(|e| ServiceError::ServeOptions(e.to_string()))?;
    let endpoint = given
        .endpoint(product)
        .map_err(|e| ServiceError::ServeOptions(e.to_string()))?;
    let log_file = absolute(
        &args
            .log_file
            .clone()
            .unwrap_or_else(|| default_log_file(product, name)),
    )?;
    let executable = std::env::current_exe()
        .map_err(|e| ServiceError::Other(format!("cannot find this executable's path: {e}")))?;

    let mut launch_arguments: Vec<OsString> = ["service", "run", "--service-name", name]
        .iter()
        .map(OsString::from)
        .collect();
    launch_arguments.push("--log-file".into());
    launch_arguments.push(log_file.clone().into_os_string());
    // The format `install` was given (flag or PIPESVC_LOG_FORMAT) is the
    // service's: its environment is not the installer's.
    launch_arguments.push("--log-format".into());
    launch_arguments.push(log_format.as_arg().into());
    if let Some(filter) = &args.log_filter {
        tracing_subscriber::EnvFilter::try_new(filter)
            .map_err(|e| ServiceError::Other(format!("invalid --log-filter {filter:?}: {e}")))?;
        launch_arguments.push("--log-filter".into());
        launch_arguments.push(filter.into());
    }
    launch_arguments.extend(args.serve_options.iter().cloned());
    // A preset sets the descriptor itself, in agreement with its rules.
    let preset = given.allow.iter().flatten().any(|entry| entry.is_preset());
    if given.security_descriptor.is_none() && !preset {
        // The service runs as LocalSystem: its own default descriptor would
        // admit SYSTEM only. Admit the installing user too.
        let sddl = crate::transport::default_security_descriptor().map_err(|e| {
            ServiceError::Other(format!(
                "cannot read this user's SID for the pipe's security descriptor: {e} \
                 (give one with --security-descriptor)"
            ))
        })?;
        launch_arguments.push("--security-descriptor".into());
        launch_arguments.push(sddl.into());
    }

    let program = product.name();
    let display_name = args.display_name.clone().unwrap_or_else(|| {
        if name == program {
            format!("{program} IPC service")
        } else {
            format!("{program} IPC service ({name})")
        }
    });
    let description = args.description.clone().unwrap_or_else(|| {
        format!("Answers {program} clients on the named pipe {endpoint} ({program} serve).")
    });
    let info = ServiceInfo {
        name: name.into(),
        display_name: display_name.clone().into(),
        service_type: ServiceType::OWN_PROCESS,
        start_type: match args.start_type {
            StartType::Auto => ServiceStartType::AutoStart,
            StartType::Demand => ServiceStartType::OnDemand,
            StartType::Disabled => ServiceStartType::Disabled,
        },
        error_control: ServiceErrorControl::Normal,
        executable_path: executable,
        launch_arguments,
        dependencies: vec![],
        account_name: None, // LocalSystem
        account_password: None,
    };
    let manager = manager(
        ServiceManagerAccess::CONNECT | ServiceManagerAccess::CREATE_SERVICE,
        "install",
        name,
    )?;
    let service = manager
        .create_service(
            &info,
            ServiceAccess::CHANGE_CONFIG | ServiceAccess::QUERY_CONFIG | ServiceAccess::DELETE,
        )
        .map_err(|e| scm_error("install", name, e))?;
    // Made once the SCM has accepted the name: a refused install leaves
    // nothing behind.
    let finish = service
        .set_description(&description)
        .map_err(|e| scm_error("set the description of", name, e))
        .and_then(|()| match log_file.parent() {
            Some(dir) => std::fs::create_dir_all(dir).map_err(|e| {
                ServiceError::Other(format!(
                    "cannot create the log directory {}: {e}",
                    dir.display()
                ))
            }),
            None => Ok(()),
        });
    if let Err(error) = finish {
        return Err(match service.delete() {
            Ok(()) => error,
            Err(cleanup) => ServiceError::HalfInstalled {
                error: Box::new(error),
                service: name.to_string(),
                cleanup,
            },
        });
    }
    let command_line = service
        .query_config()
        .map(|config| config.executable_path.display().to_string())
        .unwrap_or_else(|e| format!("(cannot read it back: {e})"));
    say!(
        out,
        "installed service {name:?} ({display_name}), start type {}",
        start_type_name(info.start_type)
    );
    say!(out, "  command line: {command_line}");
    say!(out, "  pipe: {endpoint}");
    say!(out, "  log file: {}", log_file.display());
    say!(
        out,
        "start it with: {program} service start --service-name {name}"
    );
    Ok(())
}

/// A start type as `--start-type` spells it.
fn start_type_name(start_type: ServiceStartType) -> &'static str {
    match start_type {
        ServiceStartType::AutoStart => "auto",
        ServiceStartType::OnDemand => "demand",
        ServiceStartType::Disabled => "disabled",
        ServiceStartType::SystemStart => "system (a driver's)",
        ServiceStartType::BootStart => "boot (a driver's)",
    }
}

/// Polls the state of `service` (named `name`) until it is `want`, or
/// until `timeout`. Waiting for RUNNING fails at once if the service
/// stops instead.
fn wait_for(
    service: &Service,
    name: &str,
    want: ServiceState,
    timeout: Duration,
) -> Result<ServiceStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        let status = service
            .query_status()
            .map_err(|e| scm_error("query", name, e))?;
        if status.current_state == want {
            return Ok(status);
        }
        if want == ServiceState::Running && status.current_state == ServiceState::Stopped {
            return Err(stopped_while_starting(service, name, status.exit_code));
        }
        if Instant::now() >= deadline {
            return Err(ServiceError::Timeout {
                service: name.to_string(),
                state: state_name(status.current_state),
                want: state_name(want),
                waited: timeout,
            });
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// The error for a service that stopped before reporting RUNNING.
fn stopped_while_starting(service: &Service, name: &str, exit: ServiceExitCode) -> ServiceError {
    let log = service
        .query_config()
        .ok()
        .and_then(|config| log_file_of(&config))
        .map(|path| format!("; its log: {}", path.display()))
        .unwrap_or_default();
    ServiceError::StoppedWhileStarting {
        service: name.to_string(),
        reason: format!("{}{log}", describe_exit(exit)),
    }
}

/// The exit code a service reported, in words.
fn describe_exit(exit: ServiceExitCode) -> String {
    match exit {
        ServiceExitCode::Win32(0) => "no error".to_string(),
        ServiceExitCode::Win32(code) => format!(
            "Windows error {code} ({})",
            io::Error::from_raw_os_error(code as i32)
        ),
        ServiceExitCode::ServiceSpecific(code) => format!(
            "{} (service-specific error {code})",
            run::exit_code_meaning(code)
        ),
    }
}

/// `PRODUCT service start`.
pub fn start(product: &Product, args: &WaitArgs, out: &mut dyn Write) -> Result<()> {
    let name = args.service.name(product);
    let service = open(
        ServiceAccess::START | ServiceAccess::QUERY_STATUS | ServiceAccess::QUERY_CONFIG,
        "start",
        name,
    )?;
    let deadline = Instant::now() + args.timeout();
    loop {
        let status = service
            .query_status()
            .map_err(|e| scm_error("start", name, e))?;
        match status.current_state {
            ServiceState::Running => {
                say!(out, "service {name:?} is already running{}", pid(&status));
                return Ok(());
            }
            ServiceState::Stopped => {}
            // Starting already, or stopping: wait for that to finish first.
            _ if Instant::now() < deadline => {
                std::thread::sleep(POLL_INTERVAL);
                continue;
            }
            state => {
                return Err(ServiceError::Timeout {
                    service: name.to_string(),
                    state: state_name(state),
                    want: "STOPPED or RUNNING before starting it",
                    waited: args.timeout(),
                })
            }
        }
        match service.start::<&OsStr>(&[]) {
            Ok(()) => break,
            Err(e) => match os_code(&e) {
                Some(ERROR_SERVICE_ALREADY_RUNNING) => break,
                // Another service is being started right now.
                Some(ERROR_SERVICE_DATABASE_LOCKED) if Instant::now() < deadline => {
                    std::thread::sleep(POLL_INTERVAL);
                }
                // The service may have stopped during start-up: say why.
                Some(ERROR_SERVICE_REQUEST_TIMEOUT) => {
                    let status = service
                        .query_status()
                        .map_err(|e| scm_error("query", name, e))?;
                    if status.current_state == ServiceState::Stopped
                        && status.exit_code != ServiceExitCode::NO_ERROR
                    {
                        return Err(stopped_while_starting(&service, name, status.exit_code));
                    }
                    return Err(scm_error("start", name, e));
                }
                _ => return Err(scm_error("start", name, e)),
            },
        }
    }
    let remaining = deadline.saturating_duration_since(Instant::now());
    let status = wait_for(&service, name, ServiceState::Running, remaining)?;
    say!(out, "service {name:?} is running{}", pid(&status));
    Ok(())
}

/// ` (pid N)` when the status has a process id.
fn pid(status: &ServiceStatus) -> String {
    status
        .process_id
        .map(|pid| format!(" (pid {pid})"))
        .unwrap_or_default()
}

/// Asks `service` to stop unless it is stopped already, and waits until it
/// is. Returns whether it was running.
fn stop_and_wait(service: &Service, name: &str, timeout: Duration) -> Result<bool> {
    let deadline = Instant::now() + timeout;
    let mut asked = false;
    loop {
        let status = service
            .query_status()
            .map_err(|e| scm_error("stop", name, e))?;
        match status.current_state {
            ServiceState::Stopped => return Ok(asked),
            // Let a start finish (it cannot take a stop before), or a stop.
            ServiceState::StartPending | ServiceState::StopPending => {}
            _ if !asked => match service.stop() {
                Ok(_) => asked = true,
                Err(e) => match os_code(&e) {
                    Some(ERROR_SERVICE_NOT_ACTIVE) => return Ok(asked),
                    Some(ERROR_SERVICE_CANNOT_ACCEPT_CTRL) => {}
                    _ => return Err(scm_error("stop", name, e)),
                },
            },
            _ => {}
        }
        if Instant::now() >= deadline {
            return Err(ServiceError::Timeout {
                service: name.to_string(),
                state: state_name(status.current_state),
                want: "STOPPED",
                waited: timeout,
            });
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// `PRODUCT service stop`.
pub fn stop(product: &Product, args: &WaitArgs, out: &mut dyn Write) -> Result<()> {
    let name = args.service.name(product);
    let service = open(
        ServiceAccess::STOP | ServiceAccess::QUERY_STATUS,
        "stop",
        name,
    )?;
    if stop_and_wait(&service, name, args.timeout())? {
        say!(out, "service {name:?} stopped");
    } else {
        say!(out, "service {name:?} is not running");
    }
    Ok(())
}

/// `PRODUCT service uninstall`.
pub fn uninstall(product: &Product, args: &WaitArgs, out: &mut dyn Write) -> Result<()> {
    let name = args.service.name(product);
    let manager = manager(ServiceManagerAccess::CONNECT, "remove", name)?;
    let service = manager
        .open_service(
            name,
            ServiceAccess::QUERY_STATUS
                | ServiceAccess::QUERY_CONFIG
                | ServiceAccess::STOP
                | ServiceAccess::DELETE,
        )
        .map_err(|e| scm_error("remove", name, e))?;
    let deadline = Instant::now() + args.timeout();
    let log = service
        .query_config()
        .ok()
        .and_then(|config| log_file_of(&config));
    if stop_and_wait(&service, name, args.timeout())? {
        say!(out, "service {name:?} stopped");
    }
    service.delete().map_err(|e| scm_error("remove", name, e))?;
    drop(service);
    // The SCM removes the service once the last handle to it is closed.
    loop {
        match manager.open_service(name, ServiceAccess::QUERY_STATUS) {
            Err(e) if os_code(&e) == Some(ERROR_SERVICE_DOES_NOT_EXIST) => break,
            Err(e) => return Err(scm_error("query", name, e)),
            Ok(_) if Instant::now() >= deadline => {
                say!(
                    out,
                    "service {name:?} is marked for deletion: it disappears once every program \
                     that has it open (such as the Services console) closes it"
                );
                return Ok(());
            }
            Ok(_) => std::thread::sleep(POLL_INTERVAL),
        }
    }
    say!(out, "service {name:?} removed");
    if let Some(log) = log {
        say!(out, "its log file is left in place: {}", log.display());
    }
    Ok(())
}

/// `PRODUCT service status`.
pub fn status(product: &Product, args: &ServiceNameArg, out: &mut dyn Write) -> Result<()> {
    let name = args.name(product);
    let service = open(
        ServiceAccess::QUERY_STATUS | ServiceAccess::QUERY_CONFIG,
        "query",
        name,
    )?;
    let status = service
        .query_status()
        .map_err(|e| scm_error("query", name, e))?;
    let config = service
        .query_config()
        .map_err(|e| scm_error("query", name, e))?;
    say!(
        out,
        "service {name:?}: {}{}",
        state_name(status.current_state),
        pid(&status)
    );
    say!(
        out,
        "  display name: {}",
        config.display_name.to_string_lossy()
    );
    say!(out, "  start type: {}", start_type_name(config.start_type));
    say!(out, "  command line: {}", config.executable_path.display());
    if let Some(log) = log_file_of(&config) {
        say!(out, "  log file: {}", log.display());
    }
    let never_started = ServiceExitCode::Win32(ERROR_SERVICE_NEVER_STARTED);
    if status.current_state == ServiceState::Stopped
        && status.exit_code != ServiceExitCode::NO_ERROR
        && status.exit_code != never_started
    {
        say!(out, "  last exit: {}", describe_exit(status.exit_code));
    }
    Ok(())
}

/// The `--log-file` on a service's command line (as `install` wrote it).
fn log_file_of(config: &ServiceConfig) -> Option<PathBuf> {
    let words = split_command_line(&config.executable_path.to_string_lossy());
    let mut words = words.iter();
    while let Some(word) = words.next() {
        if word == "--log-file" {
            return words.next().map(PathBuf::from);
        }
        if let Some(path) = word.strip_prefix("--log-file=") {
            return Some(PathBuf::from(path));
        }
    }
    None
}

/// Splits a Windows command line into words, with the rules of the
/// Microsoft C runtime (those `CommandLineToArgvW` and Rust's
/// `std::env::args` follow): spaces and tabs separate words unless quoted;
/// `2n` backslashes before a `"` are `n` backslashes and the quote toggles
/// quoting; `2n + 1` backslashes before a `"` are `n` backslashes and a
/// literal `"`; other backslashes are literal.
fn split_command_line(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let mut slashes = 1;
                while chars.peek() == Some(&'\\') {
                    chars.next();
                    slashes += 1;
                }
                in_word = true;
                if chars.peek() == Some(&'"') {
                    word.extend(std::iter::repeat_n('\\', slashes / 2));
                    if slashes % 2 == 1 {
                        chars.next();
                        word.push('"');
                    }
                } else {
                    word.extend(std::iter::repeat_n('\\', slashes));
                }
            }
            '"' => {
                in_word = true;
                quoted = !quoted;
            }
            ' ' | '\t' if !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines_split_like_the_c_runtime() {
        assert_eq!(
            split_command_line(r#""C:\Program Files\p.exe" run  --log-file "C:\a b\x.log""#),
            [
                r"C:\Program Files\p.exe",
                "run",
                "--log-file",
                r"C:\a b\x.log"
            ]
        );
        assert_eq!(
            split_command_line(r#"a\\\"b "c\\" d\e """#),
            [r#"a\"b"#, r"c\", r"d\e", ""]
        );
        assert_eq!(split_command_line("  \t "), Vec::<String>::new());
    }

    #[test]
    fn serve_options_are_checked_and_misplaced_install_options_named() {
        let ok = parse_serve_options(&["--name".into(), "x".into()]).unwrap();
        let product = Product::PIPESVC;
        let endpoint = ok
            .given::<()>(&product)
            .unwrap()
            .endpoint(&product)
            .unwrap();
        assert_eq!(endpoint.to_string(), r"\\.\pipe\x");
        let err = parse_serve_options(&[
            "--name".into(),
            "x".into(),
            "--service-name".into(),
            "y".into(),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("--service-name"), "{err}");
        assert!(err.contains("before the serve options"), "{err}");
        let err = parse_serve_options(&["--max-connections".into(), "lots".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid serve options"), "{err}");
    }
}
