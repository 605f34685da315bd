//! Which server the client commands (call, ping, status) agree to talk to.

use clap::Args;
use pipesvc::client::ServerIdentity;

/// By default a client talks only to a server running as its own user or
/// as root / SYSTEM, and refuses any other before sending anything
/// (SECURITY.md). These flags tighten or relax that.
#[derive(Args, Debug, Clone, Default)]
pub struct IdentityArgs {
    /// Talk only to a server running as this uid (Unix), for a service
    /// with a user of its own. Default: your own user or root.
    #[arg(long, value_name = "UID", conflicts_with_all = ["expect_user", "any_server"])]
    expect_uid: Option<u32>,
    /// Talk only to a server running as this user: a user name on Unix
    /// (looked up like getpwnam), an account name (DOMAIN\user) or SID
    /// (S-1-5-18 for LocalSystem) on Windows. Default: your own user or
    /// root / SYSTEM.
    #[arg(long, value_name = "NAME", conflicts_with = "any_server")]
    expect_user: Option<String>,
    /// Talk to whatever server answers, whoever runs it (no identity
    /// check): only for endpoints no other user can reach.
    #[arg(long)]
    any_server: bool,
}

impl IdentityArgs {
    /// The identity the flags ask for.
    pub fn server_identity(&self) -> pipesvc::Result<ServerIdentity> {
        if self.any_server {
            return Ok(ServerIdentity::Any);
        }
        if let Some(name) = &self.expect_user {
            return ServerIdentity::of_user(name);
        }
        match self.expect_uid {
            Some(_) if cfg!(windows) => Err(pipesvc::Error::config(
                "--expect-uid",
                "it is for Unix; on Windows use --expect-user with an account name or a SID",
            )),
            Some(uid) => Ok(ServerIdentity::Uid(uid)),
            None => Ok(ServerIdentity::SameUserOrAdmin),
        }
    }
}
