//! [`Kind`] and the one table of what each kind of frame needs
//! ([`Kind::rules`]): since which version it exists, who may send it, what
//! its id must be, whether it starts a request and whether the server acts
//! on it at once. The HELLO reply's list of kinds, the codec's kinds per
//! version and the highest version this crate speaks all come from this
//! table; the matches here are exhaustive, so a new kind does not compile
//! until its rules are written down.

/// The kind of a frame (byte 4 of every frame).
///
/// Kinds 10 to 12 exist from protocol version 2 on. On a version 2
/// connection a kind byte the receiver does not know decodes as
/// [`Kind::Unknown`], so that it can be answered instead of closing the
/// connection (PROTOCOL.md, "Unknown kinds").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Kind {
    /// Handshake: the server's greeting, then the client's answer.
    Hello,
    /// A call from the client; answered by RESPONSE or ERROR with the same id.
    Request,
    /// The successful answer to the REQUEST with the same id.
    Response,
    /// A failure: of the request with this id, or of the connection (id 0).
    Error,
    /// A one-way message, in either direction; never answered.
    Notify,
    /// Sent by the server when it closes the connection on purpose.
    Goodbye,
    /// Liveness probe from the client; answered by PONG with the same id.
    Ping,
    /// The answer to a PING; echoes its id and payload.
    Pong,
    /// The client asks for the server's counters; answered by RESPONSE
    /// with a [`Status`](super::Status) payload (protocol 1.1).
    Status,
    /// A call of a named method, with metadata such as a deadline
    /// ([`CallHeader`](super::CallHeader)); answered by RESPONSE or ERROR with the same
    /// id (protocol 2).
    Call,
    /// The client no longer wants the answer to the request with this id;
    /// the server stops it and answers ERROR `cancelled` (protocol 2).
    Cancel,
    /// The client asks for the service's description; answered by RESPONSE
    /// with JSON (protocol 2).
    Describe,
    /// One or more items of the stream with this id (revision 2.2).
    Item,
    /// More credit, in bytes of ITEM payload, for the stream with this id
    /// (revision 2.2).
    Credit,
    /// The client sends no more items on the stream with this id
    /// (revision 2.2).
    End,
    /// The client subscribes to a topic; answered by ITEMs, then ERROR or
    /// RESPONSE (revision 2.2).
    Subscribe,
    /// A kind byte this crate does not know, read on a version 2
    /// connection (a version 1 connection refuses it instead), or one of
    /// a revision it does not speak yet ([`Kind::is_spoken`]).
    Unknown(u8),
}

/// The revision of protocol version 2 this crate speaks: kinds of a later
/// revision are in the table, but not listed in the HELLO reply nor
/// decoded as themselves ([`Kind::is_spoken`]). Revision 2.2 (ITEM,
/// CREDIT, END, SUBSCRIBE: streams and topics).
pub const SPOKEN_REVISION: u16 = 2;

/// Every kind this crate defines, in the order of their wire bytes
/// ([`Kind::Unknown`] is not one).
pub const KINDS: [Kind; 16] = [
    Kind::Hello,
    Kind::Request,
    Kind::Response,
    Kind::Error,
    Kind::Notify,
    Kind::Goodbye,
    Kind::Ping,
    Kind::Pong,
    Kind::Status,
    Kind::Call,
    Kind::Cancel,
    Kind::Describe,
    Kind::Item,
    Kind::Credit,
    Kind::End,
    Kind::Subscribe,
];

/// Who may send frames of a kind (PROTOCOL.md, "Kinds": "sent by").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Sender {
    /// Only a client.
    Client,
    /// Only a server.
    Server,
    /// Either side.
    Both,
}

/// What the id of a frame a client sends must be (PROTOCOL.md, "Ids").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdRule {
    /// 0: the frame carries none (any other is ignored).
    Zero,
    /// A new request id: not 0 (the answer would read as one about the
    /// connection), and not the id of a request in flight (two answers
    /// would share it).
    New,
    /// A new request id, or 0: then the frame is ignored (kinds the
    /// server does not know, protocol 2).
    NewOrZero,
    /// The id of a request the client sent earlier, not 0 (CANCEL).
    OfRequest,
    /// The id of the request it answers, or 0 (a frame only a server
    /// sends: RESPONSE, ERROR, PONG).
    Answer,
}

/// What a frame of one kind needs, and what the server does with it when
/// a client sends it after the handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct KindRules {
    /// The protocol version that defines the kind.
    pub since: u16,
    /// The revision of that version that defines it (2 for revision 2.2's
    /// kinds; 0 for the others: their revisions are all spoken).
    pub revision: u16,
    /// Who may send it. A client sends HELLO once, first; after the
    /// handshake a HELLO from it is `unexpected frame`.
    pub sender: Sender,
    /// What its id must be.
    pub id: IdRule,
    /// It starts a handler: it counts against the in-flight limit, waits
    /// there for room, and is answered once the handler is done (REQUEST,
    /// CALL).
    pub starts: bool,
    /// The server acts on it at once, also past the requests waiting at
    /// the in-flight limit (PING, STATUS, CANCEL, DESCRIBE, unknown
    /// kinds); the others are taken in the order read.
    pub at_once: bool,
}

impl KindRules {
    const fn new(since: u16, sender: Sender, id: IdRule) -> KindRules {
        KindRules {
            since,
            revision: 0,
            sender,
            id,
            starts: false,
            at_once: false,
        }
    }

    const fn starts(mut self) -> KindRules {
        self.starts = true;
        self
    }

    const fn at_once(mut self) -> KindRules {
        self.at_once = true;
        self
    }

    const fn revision(mut self, revision: u16) -> KindRules {
        self.revision = revision;
        self
    }

    /// Whether a client may send it (HELLO: first, once).
    pub const fn from_client(&self) -> bool {
        matches!(self.sender, Sender::Client | Sender::Both)
    }

    /// Whether a server may send it.
    pub const fn from_server(&self) -> bool {
        matches!(self.sender, Sender::Server | Sender::Both)
    }

    /// Whether a client's frame of this kind needs an id other than 0.
    pub const fn needs_id(&self) -> bool {
        matches!(self.id, IdRule::New | IdRule::OfRequest)
    }

    /// Whether a client's frame of this kind with an id other than 0 must
    /// carry a new one (not the id of a request in flight).
    pub const fn takes_new_id(&self) -> bool {
        matches!(self.id, IdRule::New | IdRule::NewOrZero)
    }
}

impl Kind {
    /// The kind's rules: the one table of PROTOCOL.md's "Kinds" and "Ids".
    pub const fn rules(self) -> KindRules {
        use IdRule::*;
        use Sender::*;
        match self {
            Kind::Hello => KindRules::new(1, Both, Zero),
            Kind::Request => KindRules::new(1, Client, New).starts(),
            Kind::Response => KindRules::new(1, Server, Answer),
            Kind::Error => KindRules::new(1, Server, Answer),
            // Handled one at a time, in order (`on_notify`).
            Kind::Notify => KindRules::new(1, Both, Zero),
            Kind::Goodbye => KindRules::new(1, Server, Zero),
            Kind::Ping => KindRules::new(1, Client, New).at_once(),
            Kind::Pong => KindRules::new(1, Server, Answer),
            Kind::Status => KindRules::new(1, Client, New).at_once(),
            Kind::Call => KindRules::new(2, Client, New).starts(),
            Kind::Cancel => KindRules::new(2, Client, OfRequest).at_once(),
            Kind::Describe => KindRules::new(2, Client, New).at_once(),
            // Revision 2.2: the id of a stream in flight; taken as read,
            // also past the requests waiting at the in-flight limit.
            Kind::Item => KindRules::new(2, Both, OfRequest).at_once().revision(2),
            Kind::Credit => KindRules::new(2, Both, OfRequest).at_once().revision(2),
            Kind::End => KindRules::new(2, Client, OfRequest).at_once().revision(2),
            // A stream that does not count against the in-flight limit.
            Kind::Subscribe => KindRules::new(2, Client, New).at_once().revision(2),
            Kind::Unknown(_) => KindRules::new(2, Client, NewOrZero).at_once(),
        }
    }

    /// The kind for a wire byte, or `None` for a byte no protocol version
    /// this crate speaks defines (1 to 12; 10 to 12 only in version 2).
    pub const fn from_u8(byte: u8) -> Option<Kind> {
        Some(match byte {
            1 => Kind::Hello,
            2 => Kind::Request,
            3 => Kind::Response,
            4 => Kind::Error,
            5 => Kind::Notify,
            6 => Kind::Goodbye,
            7 => Kind::Ping,
            8 => Kind::Pong,
            9 => Kind::Status,
            10 => Kind::Call,
            11 => Kind::Cancel,
            12 => Kind::Describe,
            13 => Kind::Item,
            14 => Kind::Credit,
            15 => Kind::End,
            16 => Kind::Subscribe,
            _ => return None,
        })
    }

    /// The kind's wire byte.
    pub const fn to_u8(self) -> u8 {
        match self {
            Kind::Hello => 1,
            Kind::Request => 2,
            Kind::Response => 3,
            Kind::Error => 4,
            Kind::Notify => 5,
            Kind::Goodbye => 6,
            Kind::Ping => 7,
            Kind::Pong => 8,
            Kind::Status => 9,
            Kind::Call => 10,
            Kind::Cancel => 11,
            Kind::Describe => 12,
            Kind::Item => 13,
            Kind::Credit => 14,
            Kind::End => 15,
            Kind::Subscribe => 16,
            Kind::Unknown(byte) => byte,
        }
    }

    /// Whether this crate speaks the revision that defines the kind
    /// ([`SPOKEN_REVISION`]).
    pub const fn is_spoken(self) -> bool {
        let rules = self.rules();
        rules.since < 2 || rules.revision <= SPOKEN_REVISION
    }

    /// Whether the kind exists on a connection of protocol `version`, as
    /// this crate speaks it.
    const fn is_of_version(self, version: u16) -> bool {
        self.rules().since <= version && self.is_spoken()
    }

    /// The kind a wire byte stands for on a connection of protocol
    /// `version`: `None` for a byte that version does not define (or
    /// whose revision this crate does not speak yet).
    pub const fn of_version(byte: u8, version: u16) -> Option<Kind> {
        match Kind::from_u8(byte) {
            Some(kind) if kind.is_of_version(version) => Some(kind),
            _ => None,
        }
    }

    /// The highest kind byte defined by protocol `version` (9 in version 1,
    /// 12 in version 2).
    pub const fn last_of_version(version: u16) -> u8 {
        let mut last = 0;
        let mut i = 0;
        while i < KINDS.len() {
            if KINDS[i].is_of_version(version) {
                last = KINDS[i].to_u8();
            }
            i += 1;
        }
        last
    }

    /// The kinds a server of protocol `version` accepts from a client, in
    /// the order of their bytes: what its HELLO reply lists.
    pub fn accepted_from_client(version: u16) -> impl Iterator<Item = Kind> {
        KINDS
            .into_iter()
            .filter(move |kind| kind.rules().from_client() && kind.is_of_version(version))
    }
}

/// The highest protocol version the table defines a kind for: the
/// version this crate speaks.
pub(super) const fn highest_version() -> u16 {
    let mut highest = 1;
    let mut i = 0;
    while i < KINDS.len() {
        let since = KINDS[i].rules().since;
        if since > highest {
            highest = since;
        }
        i += 1;
    }
    highest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_names_every_byte_a_version_defines_once_and_in_order() {
        let defined: Vec<u8> = (0..=u8::MAX)
            .filter(|&b| Kind::from_u8(b).is_some())
            .collect();
        let listed: Vec<u8> = KINDS.iter().map(|k| k.to_u8()).collect();
        assert_eq!(defined, listed);
        for kind in KINDS {
            assert_eq!(Kind::from_u8(kind.to_u8()), Some(kind));
        }
        assert_eq!(Kind::last_of_version(1), 9);
        assert_eq!(Kind::last_of_version(2), 16);
        assert_eq!(highest_version(), super::super::PROTOCOL_VERSION);
        assert_eq!(Kind::of_version(10, 1), None);
        assert_eq!(Kind::of_version(10, 2), Some(Kind::Call));
        // Revision 2.2's kinds are spoken on version 2 connections only.
        for byte in 13..=16 {
            assert!(Kind::from_u8(byte).unwrap().is_spoken());
            assert_eq!(Kind::of_version(byte, 1), None);
            assert_eq!(Kind::of_version(byte, 2), Kind::from_u8(byte));
        }
    }

    #[test]
    fn the_kinds_a_client_may_send_are_the_hello_replys() {
        let bytes: Vec<u8> = Kind::accepted_from_client(2).map(Kind::to_u8).collect();
        assert_eq!(bytes, [1, 2, 5, 7, 9, 10, 11, 12, 13, 14, 15, 16]);
        let v1: Vec<u8> = Kind::accepted_from_client(1).map(Kind::to_u8).collect();
        assert_eq!(v1, [1, 2, 5, 7, 9]);
    }

    #[test]
    fn requests_need_new_ids_and_cancel_the_id_of_one() {
        for kind in [Kind::Request, Kind::Call, Kind::Ping, Kind::Status] {
            assert!(kind.rules().needs_id() && kind.rules().takes_new_id());
        }
        let cancel = Kind::Cancel.rules();
        assert!(cancel.needs_id() && !cancel.takes_new_id() && cancel.at_once);
        let unknown = Kind::Unknown(200).rules();
        assert!(!unknown.needs_id() && unknown.takes_new_id());
        assert!(Kind::Call.rules().starts && !Kind::Notify.rules().starts);
    }
}
