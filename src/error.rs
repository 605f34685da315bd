//! The crate's error type.

use std::io;
use std::time::Duration;

use crate::protocol::ErrorCode;

/// Everything that can go wrong in pipesvc.
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
    /// A setting cannot work; the message names it and says why.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The server could not start listening on its endpoint.
    #[error("cannot listen on {endpoint}: {source}")]
    Bind {
        /// The endpoint, as displayed.
        endpoint: String,
        /// The cause, with a message that says what to do.
        source: io::Error,
    },
    /// The client gave up connecting.
    #[error("could not connect to {endpoint} within {timeout:?} ({attempts} attempts): {source}")]
    Connect {
        /// The endpoint, as displayed.
        endpoint: String,
        /// The connect timeout that ran out (or elapsed before a fatal error).
        timeout: Duration,
        /// How many times a connection was tried.
        attempts: u32,
        /// The last error seen.
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
    /// The peer broke the protocol, or answered the handshake with an error.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The server answered a request with an ERROR frame.
    #[error("server error {code}: {message}")]
    Remote {
        /// The code from the ERROR frame.
        code: ErrorCode,
        /// The message from the ERROR frame.
        message: String,
    },
    /// The connection is gone (or going); the request was not answered.
    #[error("connection closed: {0}")]
    ConnectionClosed(String),
    /// A payload is larger than the peer accepts in one frame.
    #[error("payload of {len} bytes exceeds the maximum of {max} bytes per frame")]
    PayloadTooLarge {
        /// The payload's length.
        len: usize,
        /// The largest payload allowed.
        max: usize,
    },
    /// An operation did not finish in time.
    #[error("timed out after {0:?}: {1}")]
    Timeout(Duration, &'static str),
    /// An I/O error from the transport.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
}

impl Error {
    /// The protocol error code behind this error, when there is one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Remote { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
