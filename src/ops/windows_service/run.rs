//! `PRODUCT service run`: the process the Service Control Manager launches.
//!
//! `main` hands the arguments to [`service_main`] (through [`LAUNCH`]) and
//! blocks in the SCM's dispatcher, which calls [`service_main`] on a thread
//! of its own. That thread reports START_PENDING, serves through
//! [`crate::ops::serve_until`] on a Tokio runtime, reports RUNNING once the
//! pipe accepts clients, STOP_PENDING when the SCM asks it to stop (Stop or
//! system Shutdown), and STOPPED, with an exit code, once the server has
//! shut down gracefully.
//!
//! Logs go to the file named by `--log-file` (a service has no console).

use std::cell::Cell;
use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tracing_subscriber::EnvFilter;

use crate::ops::logging::{self, LogFormat};
use crate::ops::Answers;
use crate::ops::Product;
use serde::de::DeserializeOwned;
use windows_service::service::{
    ServiceControl, ServiceControlAccept, ServiceExitCode, ServiceState, ServiceStatus, ServiceType,
};
use windows_service::service_control_handler::{
    self, ServiceControlHandlerResult, ServiceStatusHandle,
};
use windows_service::{define_windows_service, service_dispatcher};
use windows_sys::Win32::Foundation::ERROR_FAILED_SERVICE_CONTROLLER_CONNECT;

use super::manage::{state_name, ServiceError};
use super::{default_log_file, RunArgs};

/// Service-specific exit code: the server could not start (the pipe name
/// is taken, an option is invalid, ...). The log says which.
pub const EXIT_START_FAILED: u32 = 1;
/// Service-specific exit code: the server failed after it had started.
pub const EXIT_SERVE_FAILED: u32 = 2;
/// Service-specific exit code: the log file could not be opened (or the
/// log filter is invalid), so the service did not start: it would have run
/// blind.
pub const EXIT_LOG_FILE: u32 = 3;
/// Service-specific exit code: the service panicked (see the log).
pub const EXIT_PANIC: u32 = 4;

/// What a service-specific exit code of `pipesvc service run` means.
pub fn exit_code_meaning(code: u32) -> &'static str {
    match code {
        EXIT_START_FAILED => "the server could not start",
        EXIT_SERVE_FAILED => "the server failed while running",
        EXIT_LOG_FILE => "the service could not open its log file (or its --log-filter is invalid)",
        EXIT_PANIC => "the service panicked",
        _ => "unknown error",
    }
}

/// How long the SCM should wait for START_PENDING to become RUNNING.
const START_WAIT_HINT: Duration = Duration::from_secs(10);
/// How long the SCM should wait for STOP_PENDING to become STOPPED: the
/// server's graceful shutdown, and some margin.
const STOP_WAIT_HINT: Duration =
    Duration::from_secs(crate::server::DEFAULT_SHUTDOWN_TIMEOUT.as_secs() + 10);
/// How long leftover blocking tasks may delay the end of the runtime.
const RUNTIME_SHUTDOWN: Duration = Duration::from_secs(2);

/// What [`service_main`] runs: the service with its arguments and handler,
/// put here by [`run`] before it starts the dispatcher that calls
/// [`service_main`] on another thread.
type Launch = Box<dyn FnOnce() + Send>;
static LAUNCH: Mutex<Option<Launch>> = Mutex::new(None);

/// Told by the control handler when the SCM asks the service to stop. A
/// request that comes before anyone waits is kept (as a permit).
static STOP: Notify = Notify::const_new();

define_windows_service!(ffi_service_main, service_main);

/// `PRODUCT service run`: connects to the SCM and runs the service until it
/// is stopped. Run from a console, it fails saying what to run instead.
pub fn run<E, H, F>(
    product: Product,
    args: RunArgs,
    log_format: LogFormat,
    make_handler: F,
) -> Result<(), ServiceError>
where
    E: DeserializeOwned + Send + 'static,
    H: Answers,
    F: FnOnce(E) -> H + Send + 'static,
{
    let service_name = args.service.name(&product).to_owned();
    let launch = move || service_body(product, args, log_format, make_handler);
    *LAUNCH.lock().unwrap_or_else(PoisonError::into_inner) = Some(Box::new(launch));
    match service_dispatcher::start(&service_name, ffi_service_main) {
        Ok(()) => Ok(()),
        Err(windows_service::Error::Winapi(e))
            if e.raw_os_error() == Some(ERROR_FAILED_SERVICE_CONTROLLER_CONNECT as i32) =>
        {
            Err(ServiceError::Other(format!(
                "`{name} service run` is started by the Service Control Manager, not from \
                 a console: use `{name} service start --service-name {service_name}`, or run \
                 `{name} serve` in this console",
                name = product.name()
            )))
        }
        Err(e) => Err(ServiceError::Dispatcher(e)),
    }
}

/// The service's main function, on the dispatcher's thread: everything
/// from START_PENDING to STOPPED.
fn service_main(_arguments: Vec<OsString>) {
    let Some(launch) = LAUNCH.lock().unwrap_or_else(PoisonError::into_inner).take() else {
        return; // started twice: cannot happen for an own-process service
    };
    launch();
}

/// What [`service_main`] does for `product`'s service.
fn service_body<E, H, F>(product: Product, args: RunArgs, log_format: LogFormat, make_handler: F)
where
    E: DeserializeOwned,
    H: Answers,
    F: FnOnce(E) -> H,
{
    let name = args.service.name(&product).to_owned();
    let log_file = args
        .log_file
        .clone()
        .unwrap_or_else(|| default_log_file(&product, &name));
    let logging = init_logging(&log_file, args.log_filter.as_deref(), log_format);
    if logging.is_ok() {
        tracing::info!(
            service = %name,
            pid = std::process::id(),
            version = env!("CARGO_PKG_VERSION"),
            "service starting"
        );
    }

    // The handler captures nothing: windows-service frees it after a Stop or
    // Shutdown, and would call it freed if another control came after one;
    // a zero-sized closure has nothing to free or read.
    let handler = |control| match control {
        ServiceControl::Stop | ServiceControl::Shutdown => {
            STOP.notify_one();
            ServiceControlHandlerResult::NoError
        }
        ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
        _ => ServiceControlHandlerResult::NotImplemented,
    };
    debug_assert_eq!(
        std::mem::size_of_val(&handler),
        0,
        "the handler captures nothing"
    );
    let handle = match service_control_handler::register(&name, handler) {
        Ok(handle) => handle,
        Err(e) => {
            tracing::error!(error = %e, "cannot register with the Service Control Manager");
            return;
        }
    };
    let status = Reporter {
        handle,
        checkpoint: AtomicU32::new(0),
    };
    status.set(ServiceState::StartPending);

    let exit = match logging {
        // Nowhere to log why: the exit code says it.
        Err(_) => ServiceExitCode::ServiceSpecific(EXIT_LOG_FILE),
        Ok(()) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            serve(&product, args, make_handler, &status)
        }))
        .unwrap_or(ServiceExitCode::ServiceSpecific(EXIT_PANIC)),
    };
    tracing::info!(exit_code = ?exit, "service stopped");
    // The last report: the SCM closes the handle after a STOPPED.
    status.stopped(exit);
}

/// Runs the server until the SCM stops it; returns the exit code to report.
fn serve<E, H, F>(
    product: &Product,
    args: RunArgs,
    make_handler: F,
    status: &Reporter,
) -> ServiceExitCode
where
    E: DeserializeOwned,
    H: Answers,
    F: FnOnce(E) -> H,
{
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the Tokio runtime");
            return ServiceExitCode::ServiceSpecific(EXIT_START_FAILED);
        }
    };
    let started = Cell::new(false);
    let ready = |endpoint: &crate::Endpoint| -> io::Result<()> {
        status.set(ServiceState::Running);
        started.set(true);
        tracing::info!(%endpoint, "service running");
        Ok(())
    };
    let stop = async {
        STOP.notified().await;
        tracing::info!("stop requested by the Service Control Manager");
        status.set(ServiceState::StopPending);
    };
    let outcome = runtime.block_on(async {
        let loaded = args.serve.load::<E>(product)?;
        let handler = make_handler(loaded.extra);
        crate::ops::serve_until(product, loaded.settings, handler, stop, ready).await
    });
    // A blocking task (a flush to a client that stopped reading) must not
    // hold the service in STOP_PENDING.
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
    match outcome {
        Ok(()) => ServiceExitCode::NO_ERROR,
        Err(e) => {
            let code = if started.get() {
                EXIT_SERVE_FAILED
            } else {
                EXIT_START_FAILED
            };
            tracing::error!(error = %e, "{}", exit_code_meaning(code));
            ServiceExitCode::ServiceSpecific(code)
        }
    }
}

/// Reports the service's state to the SCM.
struct Reporter {
    handle: ServiceStatusHandle,
    /// Counts the pending reports, so the SCM sees progress.
    checkpoint: AtomicU32,
}

impl Reporter {
    /// Reports `state` (not STOPPED: see [`Reporter::stopped`]), with the
    /// controls accepted in it.
    fn set(&self, state: ServiceState) {
        let (controls_accepted, wait_hint) = match state {
            ServiceState::Running => (
                ServiceControlAccept::STOP | ServiceControlAccept::SHUTDOWN,
                Duration::ZERO,
            ),
            ServiceState::StopPending => (ServiceControlAccept::empty(), STOP_WAIT_HINT),
            _ => (ServiceControlAccept::empty(), START_WAIT_HINT),
        };
        let checkpoint = if wait_hint.is_zero() {
            0
        } else {
            self.checkpoint.fetch_add(1, Ordering::Relaxed) + 1
        };
        self.report(ServiceStatus {
            service_type: ServiceType::OWN_PROCESS,
            current_state: state,
            controls_accepted,
            exit_code: ServiceExitCode::NO_ERROR,
            checkpoint,
            wait_hint,
            process_id: None,
        });
    }

    /// Reports STOPPED with `exit`; must be the last report. Logged before
    /// it is sent: once the SCM has it, this process may be ended (and
    /// whoever waits for STOPPED may read the log) before a line written
    /// after it reaches the file.
    fn stopped(self, exit: ServiceExitCode) {
        tracing::info!("reporting STOPPED to the Service Control Manager (the last report)");
        let status = ServiceStatus {
            service_type: ServiceType::OWN_PROCESS,
            current_state: ServiceState::Stopped,
            controls_accepted: ServiceControlAccept::empty(),
            exit_code: exit,
            checkpoint: 0,
            wait_hint: Duration::ZERO,
            process_id: None,
        };
        if let Err(e) = self.handle.set_service_status(status) {
            tracing::error!(error = %e, "cannot report STOPPED to the Service Control Manager");
        }
    }

    /// Sends `status` to the SCM and logs it (or why it could not be sent).
    fn report(&self, status: ServiceStatus) {
        let state = status.current_state;
        let state = state_name(state);
        match self.handle.set_service_status(status) {
            Ok(()) => tracing::info!("reported {state} to the Service Control Manager"),
            Err(e) => {
                tracing::error!(error = %e, "cannot report {state} to the Service Control Manager")
            }
        }
    }
}

/// Sends the logs to the end of `path`, creating it and its directory if
/// needed, as `format` says. `filter` chooses which (a `RUST_LOG` filter);
/// without one, `RUST_LOG` does, else everything at `info` and above.
fn init_logging(path: &Path, filter: Option<&str>, format: LogFormat) -> io::Result<()> {
    let filter = match filter {
        Some(filter) => EnvFilter::try_new(filter)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?,
        None => logging::filter_from_env(),
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    logging::init(format, filter, Mutex::new(file), false);
    // A panic's message would go to stderr, which nobody reads here.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        tracing::error!("{info}");
        default_hook(info);
    }));
    Ok(())
}
