//! [`ClientOptions`]: how a client connects and what bounds each of its
//! waits, with the defaults.

use std::time::Duration;

#[cfg(doc)]
use super::{CallOptions, Client, Notification, DEADLINE_GRACE};
use super::{NotificationPolicy, ServerIdentity};
#[cfg(doc)]
use crate::error::Error;
use crate::error::Result;
use crate::protocol::{Encoding, ServerHello, DEFAULT_MAX_FRAME_LEN, HEADER_LEN};
use crate::transport::ConnectOptions;
use crate::validate;

/// Default time the server has to send its HELLO.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Default deadline of a request, ping or status call: everything the call
/// waits for (a reconnect, room to send, the answer) fits in it.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Default number of notifications buffered for [`Client::notifications`].
pub const DEFAULT_NOTIFICATION_BUFFER: usize = 256;
/// Default payload bytes buffered for [`Client::notifications`] (one
/// notification is always taken into an empty buffer, whatever its size).
pub const DEFAULT_NOTIFICATION_BUFFER_BYTES: usize = 4 << 20;
/// Default time [`Client::close`] waits for answers in flight before it
/// aborts the connection.
pub const DEFAULT_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How a [`Client`] connects: [`ClientOptions::new`] (the defaults), then
/// the setters, each returning the options:
///
/// ```
/// use std::time::Duration;
/// use pipesvc::client::ClientOptions;
///
/// let options = ClientOptions::new()
///     .request_timeout(Some(Duration::from_secs(5)))
///     .reconnect(true);
/// # let _ = options;
/// ```
///
/// A value that cannot work (a zero timeout, an empty buffer, a frame
/// limit too small for the server's HELLO) is refused by
/// [`Client::connect_with`] with [`Error::Config`] naming the setting,
/// before anything is opened.
///
/// # What bounds what
///
/// Every wait of the client has a limit, whatever the server does (says
/// nothing, dribbles its frames a byte at a time, stops reading):
///
/// | wait | bounded by |
/// |---|---|
/// | reaching the server: retrying while it is busy or absent, or when it went away during its handshake | [`connect_timeout`](Self::connect_timeout) (5 s) |
/// | the handshake, from the moment the stream is connected: the server's HELLO, this client's HELLO written, the server's HELLO reply, all together (with [`send_first`](Self::send_first), in the background) | [`handshake_timeout`](Self::handshake_timeout) (5 s) |
/// | [`Client::connect_with`] as a whole | `connect_timeout` + `handshake_timeout`, plus [`wait_for_service`](Self::wait_for_service) if set (no attempt starts after it) |
/// | [`Client::from_io`], [`Client::from_connector`]: opening the stream and the handshake | `connect_timeout` (the handshake also by `handshake_timeout`) |
/// | a request, PING, STATUS or DESCRIBE: a reconnect in progress, room to send (a server that does not read), the answer | [`request_timeout`](Self::request_timeout) (30 s), or the call's own |
/// | a typed call ([`Client::call_raw`]) | its deadline ([`CallOptions::timeout`], default `request_timeout`) plus [`DEADLINE_GRACE`] |
/// | a NOTIFY: a reconnect in progress, room to send | `request_timeout` |
/// | [`Client::close`]: answers in flight, queued frames written | [`close_timeout`](Self::close_timeout) (5 s), then the connection is aborted |
/// | dropping the last clone without `close`: queued frames written, in the background | `close_timeout`, then the connection is aborted |
/// | each reconnect attempt (with [`reconnect`](Self::reconnect)) | `connect_timeout` + `handshake_timeout` |
///
/// Only a `request_timeout` of `None` (or a call's own `None`) waits
/// without limit: the caller's choice. A caller with one deadline for a
/// whole exchange, handshake included, starts it at
/// [`Client::connected_at`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ClientOptions {
    pub(crate) connect: ConnectOptions,
    pub(crate) handshake_timeout: Duration,
    pub(crate) max_frame_len: u32,
    pub(crate) notification_buffer: usize,
    pub(crate) notification_buffer_bytes: usize,
    pub(crate) notification_policy: NotificationPolicy,
    pub(crate) expect_server_pid: Option<u32>,
    pub(crate) server_identity: ServerIdentity,
    pub(crate) request_timeout: Option<Duration>,
    pub(crate) close_timeout: Duration,
    pub(crate) reconnect: bool,
    pub(crate) wait_for_service: Duration,
    pub(crate) encoding: Encoding,
    pub(crate) send_first: bool,
}

impl ClientOptions {
    /// The defaults, as each setter gives them.
    pub fn new() -> ClientOptions {
        ClientOptions::default()
    }

    /// Transport options: connect timeout (default 5 s), read-only, pipe
    /// mode. See [`connect_timeout`](Self::connect_timeout) for the usual
    /// one.
    pub fn connect(mut self, connect: ConnectOptions) -> Self {
        self.connect = connect;
        self
    }

    /// How long to keep retrying a busy or absent server (default 5 s;
    /// zero tries once): [`ConnectOptions::timeout`] of
    /// [`connect`](Self::connect).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect.timeout = timeout;
        self
    }

    /// Time the whole handshake may take once the stream is connected
    /// (default 5 s; above zero): the server's HELLO, this client's HELLO
    /// written, and the server's HELLO reply, however the server spreads
    /// them. Past it, [`Error::Timeout`] names the step it was in.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Largest frame accepted from the server (default 8 MiB, the
    /// protocol's default maximum; at least the 26 bytes of the smallest
    /// HELLO reply, the larger of the server's two HELLOs). A
    /// frame announcing more is refused from its length field, before its
    /// payload is read, and ends the connection. Requests are bounded by
    /// the maximum the server announces instead.
    ///
    /// A frame's buffer grows as its bytes arrive, never to the announced
    /// length up front. After a frame larger than 64 KiB, the reader keeps
    /// its allocation to read the next frame as large into (no buffer grown
    /// and copied per frame), until a frame that does not need it arrives
    /// or a second passes without a frame.
    pub fn max_frame_len(mut self, max: u32) -> Self {
        self.max_frame_len = max;
        self
    }

    /// Notifications buffered until read (default 256; at least 1); see
    /// [`notification_policy`](Self::notification_policy) for what happens
    /// when the buffer is full.
    pub fn notification_buffer(mut self, notifications: usize) -> Self {
        self.notification_buffer = notifications;
        self
    }

    /// Payload bytes buffered until read (default 4 MiB; at least 1; one
    /// notification is always taken into an empty buffer, so a single
    /// frame up to `max_frame_len` fits).
    pub fn notification_buffer_bytes(mut self, bytes: usize) -> Self {
        self.notification_buffer_bytes = bytes;
        self
    }

    /// What a full notification buffer does: wait for the app (the
    /// default, lossless), drop with a [`Notification::Lagged`] marker, or
    /// ignore notifications altogether.
    pub fn notification_policy(mut self, policy: NotificationPolicy) -> Self {
        self.notification_policy = policy;
        self
    }

    /// Connect only if the server process has this id (read from the OS:
    /// `GetNamedPipeServerProcessId` on Windows, `SO_PEERCRED` on Unix),
    /// so that a process squatting on the name is not mistaken for the
    /// service. Checked before anything is sent. Default: no check.
    pub fn expect_server_pid(mut self, pid: Option<u32>) -> Self {
        self.expect_server_pid = pid;
        self
    }

    /// Which server the client agrees to talk to, checked after connecting
    /// and before anything is sent. Default
    /// [`ServerIdentity::SameUserOrAdmin`]: one running as this process's
    /// user or as root / LocalSystem, reached (on Unix) through directories
    /// no other user controls. Anything else fails with
    /// [`Error::WrongServer`]. See SECURITY.md. Not checked for a stream
    /// from the caller ([`Client::from_io`]): the caller vouches for it.
    pub fn server_identity(mut self, identity: ServerIdentity) -> Self {
        self.server_identity = identity;
        self
    }

    /// Lets the server act as this client (Windows): connect at the
    /// impersonation level (`SECURITY_SQOS_PRESENT | SECURITY_IMPERSONATION`
    /// on `CreateFileW`), so that the server's
    /// [`ConnectionContext::run_as_client`](crate::server::ConnectionContext::run_as_client)
    /// may open files and start processes with this client's rights.
    /// Default `false`: the identification level, at which a server learns
    /// who the client is but cannot act as it. Only for a server you
    /// trust that far (the [`server_identity`](Self::server_identity)
    /// check runs first either way). No effect on Unix, where a server
    /// cannot act as its client. Sets [`ConnectOptions::allow_impersonation`].
    pub fn allow_impersonation(mut self, allow: bool) -> Self {
        self.connect = self.connect.allow_impersonation(allow);
        self
    }

    /// The deadline of each request, ping or status call (default 30 s;
    /// `None`: none; not zero). It covers everything the call waits for: a
    /// reconnect in progress, room to send, the answer. A call past it
    /// fails with [`Error::Timeout`] naming what it waited for; a late
    /// answer is discarded. [`Client::request_with_timeout`] sets it per
    /// call.
    pub fn request_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How long [`Client::close`] waits for answers in flight and for
    /// queued frames to be written before it aborts the connection
    /// (default 5 s; zero aborts at once). A client dropped without
    /// `close` writes what is queued in the background, within the same
    /// time.
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// When the connection is lost (or the server says GOODBYE), connect
    /// again in the background, pausing between attempts from 50 ms
    /// doubling up to 5 s, until it succeeds or the client is closed; the
    /// notification stream carries on. Calls made meanwhile wait for that
    /// reconnect (within their deadline). Requests in flight when the
    /// connection died fail with [`Error::ConnectionClosed`] and are never
    /// sent again, so no request is ever answered twice. Default: off.
    pub fn reconnect(mut self, reconnect: bool) -> Self {
        self.reconnect = reconnect;
        self
    }

    /// How long the first connect waits for a service that is not there
    /// yet (default zero: not beyond the connect timeout), for an app that
    /// may start before its service. The first connection is then tried
    /// like a reconnect: again after each failure, pausing from 50 ms
    /// doubling up to 5 s, while the service is absent, starting, busy or
    /// refusing for now (`overloaded`, `shutting down`, going away during
    /// the handshake); no new attempt starts once `timeout` has passed, and
    /// each is bounded by the connect and handshake timeouts as always.
    /// What waiting cannot fix fails at once: a setting, the wrong server,
    /// `not allowed`, a server too old. [`Client::connect_with`] and
    /// [`Client::from_connector`] wait; for [`Client::from_io`] (one stream
    /// given once) a non-zero wait is refused with [`Error::Config`]. At
    /// most a year.
    pub fn wait_for_service(mut self, timeout: Duration) -> Self {
        self.wait_for_service = timeout;
        self
    }

    /// The encoding typed calls use when the server offers it (default
    /// MessagePack); otherwise the first of the server's this client
    /// knows. [`CallOptions::encoding`] overrides it per call.
    pub fn encoding(mut self, encoding: Encoding) -> Self {
        self.encoding = encoding;
        self
    }

    /// Connect without a round trip (default `false`): the first
    /// connection is handed out without waiting for the server, and
    /// requests made at once go out with this client's HELLO, in one
    /// write, before the server's HELLO is read (PROTOCOL.md, "Sending
    /// first", revision 2.3); with none, the HELLO goes out by itself a
    /// moment later (when the connection's reader task starts). A
    /// connection and its first answer then cost one round trip instead of
    /// two, and the server reads the HELLO and the first request together
    /// and answers both in one write: for a client that connects, asks
    /// once and goes.
    ///
    /// What [`Client::connect_with`] still checks before it returns: the
    /// endpoint is there and the server is one this client talks to
    /// ([`server_identity`](Self::server_identity),
    /// [`expect_server_pid`](Self::expect_server_pid)). The rest of the
    /// handshake (the HELLO written included) goes on in the background, within
    /// [`handshake_timeout`](Self::handshake_timeout), and what it would
    /// have made `connect` return instead is what every request made on
    /// the connection fails with: a refusal
    /// ([`Error::ConnectionClosed`] with the server's ERROR, such as
    /// `overloaded` or `not allowed`, or its GOODBYE), a server too old
    /// ([`Error::ServerTooOld`]), a broken HELLO ([`Error::Protocol`]), a
    /// server that closed ([`Error::ConnectionClosed`] with
    /// [`CloseReason::EofDuringHandshake`](crate::error::CloseReason::EofDuringHandshake)),
    /// the handshake's [`Error::Timeout`]. After a refusal or a server
    /// too old, the protocol guarantees that the server ran none of those
    /// requests (they may be sent again); after the others nothing is
    /// known, as for any request in flight on a lost connection. The
    /// connection's state then turns
    /// [`Lost`](super::ConnectionState::Lost) with the reason (a server
    /// too old as its ERROR `unsupported version`).
    ///
    /// Until the server's HELLOs are read, what they say is not known:
    /// [`Client::server_name`] is empty, [`Client::encodings`] and
    /// [`Client::stream_window`] are empty, [`Client::encoding`] is this
    /// option's [`encoding`](Self::encoding), and
    /// [`Client::server_max_frame_len`] is 74, the smallest maximum a
    /// server may announce; [`Client::handshake_done`] waits for them. So:
    ///
    /// - A request, call or NOTIFY whose frame fits in 74 bytes (a payload
    ///   of up to 68) is sent at once; a larger one waits for the server's
    ///   HELLO, which says how large a frame it takes (a frame over it
    ///   would end the connection).
    /// - Streams and subscriptions wait for the HELLO reply, which says
    ///   whether the server has them and their credit.
    /// - A call made before the HELLO reply is read is in this option's
    ///   encoding (its params are encoded when it is made). A server that
    ///   does not accept it answers `bad request` without running the
    ///   method: a typed call ([`rpc`](crate::rpc)) is then made again in
    ///   the other encoding, if the server takes that one;
    ///   [`Client::call_raw`] fails with [`Error::Server`]. Typed streams
    ///   and subscriptions pick their encoding once the handshake is done.
    ///
    /// Only the first connection sends first: reconnects (with
    /// [`reconnect`](Self::reconnect)) complete their handshake before
    /// calls use them, so that a server refusing for now is tried again
    /// with the reconnect's pauses rather than failing the calls waiting
    /// for it. With [`wait_for_service`](Self::wait_for_service), the wait
    /// covers a service that is absent or busy; a refusal read after
    /// `connect` returned fails the requests instead.
    pub fn send_first(mut self, send_first: bool) -> Self {
        self.send_first = send_first;
        self
    }

    /// Refuses, by name, settings that cannot work.
    pub(super) fn validate(&self) -> Result<()> {
        self.connect.validate()?;
        validate::positive_timeout("handshake_timeout", self.handshake_timeout)?;
        if let Some(timeout) = self.request_timeout {
            validate::positive_timeout("request_timeout", timeout)?;
        }
        validate::bounded_timeout("close_timeout", self.close_timeout)?;
        validate::bounded_timeout("wait_for_service", self.wait_for_service)?;
        let hello = largest_handshake_frame();
        let why = "the server's HELLO reply needs that much";
        validate::at_least("max_frame_len", self.max_frame_len.into(), hello, why)?;
        let why = "no notification could be buffered";
        let count = self.notification_buffer as u64;
        validate::at_least("notification_buffer", count, 1, why)?;
        let bytes = self.notification_buffer_bytes as u64;
        validate::at_least("notification_buffer_bytes", bytes, 1, why)
    }
}

/// The largest frame of a server's handshake: its HELLO reply (protocol
/// 2), the larger of its two HELLOs even when it offers no encoding.
/// Worked out once: every connect validates its options against it.
fn largest_handshake_frame() -> u64 {
    static LEN: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *LEN.get_or_init(|| {
        let reply = crate::protocol::HelloReply::new(crate::protocol::PROTOCOL_VERSION, &[]);
        (HEADER_LEN + ServerHello::fixed_len()).max(HEADER_LEN + reply.encode().len()) as u64
    })
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect: ConnectOptions::default(),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            notification_buffer: DEFAULT_NOTIFICATION_BUFFER,
            notification_buffer_bytes: DEFAULT_NOTIFICATION_BUFFER_BYTES,
            notification_policy: NotificationPolicy::default(),
            expect_server_pid: None,
            server_identity: ServerIdentity::SameUserOrAdmin,
            request_timeout: Some(DEFAULT_REQUEST_TIMEOUT),
            close_timeout: DEFAULT_CLOSE_TIMEOUT,
            reconnect: false,
            wait_for_service: Duration::ZERO,
            encoding: Encoding::MessagePack,
            send_first: false,
        }
    }
}
