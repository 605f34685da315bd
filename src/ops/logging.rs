//! Where log lines go and how they are written: the same for the console
//! commands (stderr) and the Windows service (its log file).

use clap::ValueEnum;

use crate::ops::Product;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// The format of log lines.
#[derive(ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (with colours on a terminal).
    #[default]
    Text,
    /// One JSON object per line, with the fields of the event and of its
    /// spans (such as the peer's pid and uid on a connection's lines).
    Json,
}

impl LogFormat {
    /// The value of `--log-format` that selects this format.
    pub fn as_arg(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

/// The format `PREFIX_LOG_FORMAT` (with `product`'s prefix) names, or the
/// default when it is unset or empty.
pub fn format_from_env(product: &Product) -> Result<LogFormat, String> {
    let var = format!("{}LOG_FORMAT", product.env_prefix());
    match std::env::var(&var) {
        Ok(text) if !text.is_empty() => LogFormat::from_str(&text, false).map_err(|_| {
            format!("environment variable {var}: expected text or json, got {text:?}")
        }),
        Ok(_) | Err(std::env::VarError::NotPresent) => Ok(LogFormat::default()),
        Err(std::env::VarError::NotUnicode(_)) => {
            Err(format!("environment variable {var}: not valid UTF-8"))
        }
    }
}

/// `RUST_LOG`, else everything at `info` and above.
pub fn filter_from_env() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Sends the lines `filter` lets through to `writer`, as `format` says.
/// Text has colours only with `colours` (a terminal: not the journal, not
/// a file); JSON carries every span's fields, so that a connection's lines
/// say who the peer is.
pub fn init<W>(format: LogFormat, filter: EnvFilter, writer: W, colours: bool)
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Text => builder.with_ansi(colours).init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .init(),
    }
}

/// Log lines for a console program or a service under systemd: to stderr,
/// as `format` says, filtered by `RUST_LOG` (else `info`), with colours
/// only on a terminal.
pub fn init_console(format: LogFormat) {
    let colours = std::io::IsTerminal::is_terminal(&std::io::stderr());
    init(format, filter_from_env(), std::io::stderr, colours);
}
