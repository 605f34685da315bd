//! The crate's error type.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use crate::protocol::ErrorCode;

/// Everything that can go wrong in pipesvc.
///
/// Text that came from the server (HELLO names, ERROR messages, GOODBYE
/// reasons) is kept as it was sent; `Display` escapes its control
/// characters, so that printing an error cannot drive a terminal.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The endpoint name cannot be used.
    #[error("invalid endpoint name {name:?}: {reason}")]
    InvalidEndpoint {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A setting cannot work: `setting` names it (as its builder method,
    /// option field or configuration key is called) and `message` says why.
    /// Returned by [`ServerBuilder::bind`](crate::server::ServerBuilder::bind),
    /// [`Client::connect_with`](crate::Client::connect_with) and
    /// [`Listener::bind`](crate::transport::Listener::bind) before anything
    /// is opened: pipesvc never clamps a bad value or panics on one.
    #[error("invalid configuration: {setting}: {message}")]
    Config {
        /// The setting, such as `max_connections`.
        setting: String,
        /// What is wrong with its value.
        message: String,
    },
    /// The server could not start listening on its endpoint. The cause is
    /// the error's `source()` (not repeated in its message).
    #[error("cannot listen on {endpoint}")]
    Bind {
        /// The endpoint, as displayed.
        endpoint: String,
        /// The cause, with a message that says what to do.
        #[source]
        source: io::Error,
    },
    /// The client gave up connecting. The last error seen is the error's
    /// `source()` (not repeated in its message).
    #[error("could not connect to {endpoint} within {timeout:?} ({attempts} attempts)")]
    Connect {
        /// The endpoint, as displayed.
        endpoint: String,
        /// The configured connect timeout (`ConnectOptions::timeout`).
        timeout: Duration,
        /// How many times a connection was tried.
        attempts: u32,
        /// The last error seen.
        #[source]
        source: io::Error,
    },
    /// The server is not one the client agreed to talk to (see
    /// `ClientOptions::server_identity` and `expect_server_pid`): another
    /// user's process, or a socket another user could have swapped. Nothing
    /// was sent to it.
    #[error("refusing to talk to {endpoint}: expected {expected}, found {found}")]
    WrongServer {
        /// The endpoint, as displayed.
        endpoint: String,
        /// Who the server should be, in words: "a server running as uid
        /// 1000 (you) or root", "pid 42", a SID on Windows.
        expected: String,
        /// Who or what was found: "a server running as uid 65534 (pid 7)",
        /// the directory another user owns, "pid 43".
        found: String,
    },
    /// The server speaks only protocol version 1 (pipesvc 0.3 or older):
    /// it answered this client's version 2 HELLO with ERROR `unsupported
    /// version`. Nothing else was sent to it.
    #[error(
        "the server {} is too old: it speaks only protocol version 1, and this client needs \
         version 2 (pipesvc 0.4 or later on the server); it said: {}",
        Escaped(.server),
        Escaped(.message)
    )]
    ServerTooOld {
        /// The name the server gave in its HELLO.
        server: String,
        /// The server's ERROR message.
        message: String,
    },
    /// The peer broke the protocol, or answered the handshake with an error.
    #[error("protocol error: {}", Escaped(.0))]
    Protocol(String),
    /// The service (the server's handler) answered a request with an error:
    /// an ERROR frame with a service code (1000 and up).
    #[error("{}", CodeAndMessage(*.code, .message))]
    Remote {
        /// The code from the ERROR frame (1000 and up).
        code: ErrorCode,
        /// The message from the ERROR frame.
        message: String,
    },
    /// The server refused or failed a request at the protocol level: an
    /// ERROR frame with a protocol code (below 1000), for example
    /// `shutting down` (7), `overloaded` (6) or `handler failed` (5).
    #[error("server error: {}", CodeAndMessage(*.code, .message))]
    Server {
        /// The code from the ERROR frame (below 1000).
        code: ErrorCode,
        /// The message from the ERROR frame.
        message: String,
    },
    /// The connection is gone (or going); the request was not answered.
    #[error("connection closed: {0}")]
    ConnectionClosed(CloseReason),
    /// A payload is larger than the peer accepts in one frame.
    #[error("payload of {len} bytes exceeds the maximum of {max} bytes per frame")]
    PayloadTooLarge {
        /// The payload's length.
        len: usize,
        /// The largest payload allowed.
        max: usize,
    },
    /// An operation did not finish in time: the configured limit, and what
    /// was waited for.
    #[error("timed out after {0:?} {1}")]
    Timeout(Duration, &'static str),
    /// An I/O error from the transport.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// A server cannot act as its client
    /// ([`ConnectionContext::run_as_client`](crate::server::ConnectionContext::run_as_client)):
    /// the client did not allow it, Windows refused, or the platform has no
    /// such thing. Nothing ran.
    #[error("cannot act as the client: {0}")]
    Impersonation(String),
}

impl Error {
    /// An [`Error::Config`] for `setting`: for code that validates its own
    /// settings (a configuration file, command-line flags) and wants to
    /// report them like pipesvc's.
    pub fn config(setting: impl Into<String>, message: impl Into<String>) -> Error {
        Error::Config {
            setting: setting.into(),
            message: message.into(),
        }
    }

    /// The protocol error code behind this error, when there is one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Remote { code, .. } | Error::Server { code, .. } => Some(*code),
            Error::ConnectionClosed(CloseReason::ServerError { code, .. }) => Some(*code),
            _ => None,
        }
    }

    /// The error for an ERROR frame answering a request: [`Error::Remote`]
    /// for service codes, [`Error::Server`] for protocol codes.
    pub(crate) fn from_error_frame(code: ErrorCode, message: String) -> Error {
        if code.0 >= ErrorCode::FIRST_SERVICE_CODE {
            Error::Remote { code, message }
        } else {
            Error::Server { code, message }
        }
    }
}

/// Why a connection ended, as far as one side can tell.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum CloseReason {
    /// The server said GOODBYE (it is shutting down), with its reason.
    Goodbye(String),
    /// The server sent an ERROR for the whole connection (id 0) and closed.
    ServerError {
        /// The code from the ERROR frame.
        code: ErrorCode,
        /// The message from the ERROR frame.
        message: String,
    },
    /// The server closed the connection without a word (end of stream).
    Eof,
    /// The server closed the connection before completing the handshake.
    EofDuringHandshake,
    /// Reading or writing failed: the connection was reset or broke.
    Reset(Arc<io::Error>),
    /// The server broke the protocol; the client hung up.
    Protocol(String),
    /// The client is closing (or closed) the connection.
    ClientClosed,
    /// The connection was lost and `reconnect` is off (or the connection
    /// ended before the call could be sent).
    Lost,
    /// Server side: the client has disconnected.
    ClientDisconnected,
}

impl CloseReason {
    /// The reason for an I/O error seen on the connection.
    pub(crate) fn io(err: io::Error) -> CloseReason {
        CloseReason::Reset(Arc::new(err))
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Goodbye(reason) if reason.is_empty() => {
                write!(f, "the server said goodbye")
            }
            CloseReason::Goodbye(reason) => {
                write!(f, "the server said goodbye: {}", Escaped(reason))
            }
            CloseReason::ServerError { code, message } => {
                write!(f, "server error: {}", CodeAndMessage(*code, message))
            }
            CloseReason::Eof => write!(f, "the server closed the connection"),
            CloseReason::EofDuringHandshake => {
                write!(f, "the server closed the connection during the handshake")
            }
            CloseReason::Reset(e) => write!(f, "the connection broke: {e}"),
            CloseReason::Protocol(why) => {
                write!(f, "protocol error from the server: {}", Escaped(why))
            }
            CloseReason::ClientClosed => write!(f, "the client closed the connection"),
            CloseReason::Lost => write!(f, "the connection is closed"),
            CloseReason::ClientDisconnected => write!(f, "the client has disconnected"),
        }
    }
}

/// An ERROR frame's code and message, the message escaped, and left out
/// when it says no more than the code's name (`not allowed (11)`, not
/// `not allowed (11): not allowed`).
struct CodeAndMessage<'a>(ErrorCode, &'a str);

impl fmt::Display for CodeAndMessage<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let CodeAndMessage(code, message) = *self;
        if message.is_empty() || message == code.name() {
            return write!(f, "{code}");
        }
        write!(f, "{code}: {}", Escaped(message))
    }
}

/// Displays text from the peer with its control and invisible characters
/// escaped (`\u{1b}`, `\n`, `\u{202e}`, ...; see [`is_escaped`]), so that
/// it cannot move the cursor, recolour or clear a terminal, nor hide or
/// reorder what is shown. Other characters are shown as they are.
#[derive(Clone, Copy, Debug)]
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            if is_escaped(c) {
                write!(f, "{}", c.escape_default())?;
            } else {
                fmt::Write::write_char(f, c)?;
            }
        }
        Ok(())
    }
}

/// Whether [`Escaped`] shows `c` as an escape (`\u{202e}`, `\n`) rather
/// than as itself: control characters (C0, DEL and C1), and characters
/// that are invisible or reorder the text around them, with which a server
/// could make what is shown differ from what was sent.
pub fn is_escaped(c: char) -> bool {
    c.is_control() || is_invisible(c)
}

/// Unicode's format characters (general category Cf: bidirectional
/// overrides, embeddings, isolates and marks, zero-width spaces and
/// joiners, the byte order mark, the soft hyphen, invisible operators,
/// tags...), the line and paragraph separators (Zl, Zp: a line break to
/// some terminals), and the characters that render as blank space of no
/// width or look like none (the combining grapheme joiner, Hangul fillers).
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{ad}'
            | '\u{600}'..='\u{605}'
            | '\u{61c}'
            | '\u{6dd}'
            | '\u{70f}'
            | '\u{890}'..='\u{891}'
            | '\u{8e2}'
            | '\u{180e}'
            | '\u{200b}'..='\u{200f}'
            | '\u{2028}'..='\u{202e}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206f}'
            | '\u{feff}'
            | '\u{fff9}'..='\u{fffb}'
            | '\u{110bd}'
            | '\u{110cd}'
            | '\u{13430}'..='\u{1343f}'
            | '\u{1bca0}'..='\u{1bca3}'
            | '\u{1d173}'..='\u{1d17a}'
            | '\u{e0001}'
            | '\u{e0020}'..='\u{e007f}'
            | '\u{34f}'
            | '\u{115f}'
            | '\u{1160}'
            | '\u{3164}'
            | '\u{ffa0}'
    )
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_text_is_escaped_when_displayed() {
        let err = Error::Remote {
            code: ErrorCode(1000),
            message: "\u{1b}[2Jgone\r\n\u{202e}x".into(),
        };
        assert_eq!(
            err.to_string(),
            "service error (1000): \\u{1b}[2Jgone\\r\\n\\u{202e}x"
        );
        let hidden =
            Error::Protocol("a\u{85}\u{7f}\u{200b}\u{2066}\u{feff}\u{ad}\u{2028}\u{e0041}z".into());
        assert_eq!(
            hidden.to_string(),
            "protocol error: a\\u{85}\\u{7f}\\u{200b}\\u{2066}\\u{feff}\\u{ad}\\u{2028}\\u{e0041}z"
        );
        // Visible text passes as it is: accents, scripts, emoji.
        let visible = "zwölf ✓ 名前 مرحبا 👍";
        assert_eq!(Escaped(visible).to_string(), visible);
        let closed = Error::ConnectionClosed(CloseReason::Goodbye("\u{7}bye".into()));
        assert_eq!(
            closed.to_string(),
            "connection closed: the server said goodbye: \\u{7}bye"
        );
    }

    #[test]
    fn a_message_that_only_repeats_the_code_is_said_once() {
        let refused = Error::ConnectionClosed(CloseReason::ServerError {
            code: ErrorCode::NOT_ALLOWED,
            message: "not allowed".into(),
        });
        assert_eq!(
            refused.to_string(),
            "connection closed: server error: not allowed (11)"
        );
        let overloaded = Error::from_error_frame(ErrorCode::OVERLOADED, "try later".into());
        assert_eq!(
            overloaded.to_string(),
            "server error: overloaded (6): try later"
        );
        let service = Error::from_error_frame(ErrorCode(1001), String::new());
        assert_eq!(service.to_string(), "service error (1001)");
    }

    #[test]
    fn the_cause_is_a_source_not_repeated_in_the_message() {
        let err = Error::Connect {
            endpoint: "x".into(),
            timeout: Duration::from_secs(5),
            attempts: 3,
            source: io::Error::new(io::ErrorKind::NotFound, "no such socket"),
        };
        assert_eq!(
            err.to_string(),
            "could not connect to x within 5s (3 attempts)"
        );
        let source = std::error::Error::source(&err).expect("a source");
        assert_eq!(source.to_string(), "no such socket");
    }

    #[test]
    fn protocol_and_service_codes_are_told_apart() {
        let shutting = Error::from_error_frame(ErrorCode::SHUTTING_DOWN, "bye".into());
        assert!(matches!(shutting, Error::Server { .. }), "{shutting}");
        let service = Error::from_error_frame(ErrorCode(1234), "no".into());
        assert!(matches!(service, Error::Remote { .. }), "{service}");
        assert_eq!(service.code(), Some(ErrorCode(1234)));
    }
}
