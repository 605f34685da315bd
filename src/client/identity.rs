//! Who is the server? The check a client makes after connecting and before
//! it sends a byte, so that a process squatting on the endpoint (another
//! local user who got there first) never sees a request.
//!
//! Unix: the server's uid as the kernel reports it (`SO_PEERCRED`), and the
//! directories leading to the socket (none of them may be in the hands of
//! another user). Windows: the user of the pipe server's process token, or
//! the pipe's owner when that process cannot be opened. See SECURITY.md.

use crate::endpoint::Endpoint;
use crate::error::{Error, Result};
use crate::transport::{ClientStream, PeerInfo};

#[cfg(unix)]
mod unix;
#[cfg(unix)]
use unix as platform;
#[cfg(windows)]
mod windows;
#[cfg(windows)]
use windows as platform;

/// Which server a client agrees to talk to
/// ([`ClientOptions::server_identity`](super::ClientOptions::server_identity)).
/// Checked after connecting and before anything is sent; a server that
/// does not fit fails the connection with [`Error::WrongServer`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ServerIdentity {
    /// The default: a server running as the client's own user, or as root
    /// (Unix) / LocalSystem (Windows). On Unix the socket's directories must
    /// also belong to those users, and none may be writable by others
    /// (unless sticky, like `/tmp`; a socket directly in such a shared
    /// directory must then be owned by those users too).
    #[default]
    SameUserOrAdmin,
    /// No check at all: any server is accepted (the behaviour before
    /// pipesvc 0.3). Only for endpoints nobody else can reach.
    Any,
    /// Exactly this uid (Unix), for a service running as a user of its
    /// own. Its directories may belong to that uid, the client's or root.
    /// On Windows it is [`Error::Config`].
    Uid(u32),
    /// Exactly this user SID, such as `S-1-5-18` (Windows). On Unix it is
    /// [`Error::Config`].
    Sid(String),
}

impl ServerIdentity {
    /// The identity of the account `name`: its uid on Unix (`getpwnam`),
    /// its SID on Windows (`LookupAccountNameW`; a SID string such as
    /// `S-1-5-18` is also taken). An unknown name is [`Error::Config`].
    pub fn of_user(name: &str) -> Result<ServerIdentity> {
        platform::identity_of_user(name)
    }
}

/// Refuses a server that `wanted` does not admit, before anything is sent.
pub(super) fn check(
    endpoint: &Endpoint,
    wanted: &ServerIdentity,
    stream: &ClientStream,
    server: &PeerInfo,
) -> Result<()> {
    if *wanted == ServerIdentity::Any {
        return Ok(());
    }
    platform::check(endpoint, wanted, stream, server).map_err(|refusal| match refusal {
        Refusal::Mismatch { expected, found } => {
            tracing::warn!(
                endpoint = %endpoint, %expected, %found,
                "refusing to talk to a server that is not who it should be"
            );
            Error::WrongServer {
                endpoint: endpoint.to_string(),
                expected,
                found,
            }
        }
        Refusal::Config(message) => Error::config("server_identity", message),
    })
}

/// Why [`check`] refused.
enum Refusal {
    /// The server (or the way to it) is not the one expected.
    Mismatch { expected: String, found: String },
    /// The expected identity makes no sense on this platform.
    Config(String),
}
