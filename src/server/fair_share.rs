//! Fair shares between clients: connections per user, and a rate for the
//! frames that get no answer.
//!
//! - **Connections per user** ([`Users`]): a user (the peer's [`UserKey`])
//!   may hold at most `max_connections_per_user` connections; the next one
//!   gets ERROR `overloaded` instead of HELLO. The server's own user and
//!   root are not limited: they run the service, and could stop it anyway.
//! - **Frames without an answer** ([`Throttle`]): a CANCEL for a request
//!   not in flight, a NOTIFY, or an unknown kind with id 0 costs the server
//!   work but produces no output, so nothing else slows a client that
//!   floods them. Each connection may send `unanswered_frame_rate` of them
//!   per second (as a burst, then at that rate); past it the server stops
//!   reading that connection until the rate allows more, so the flood is
//!   slowed by the kernel's buffers and costs the server nothing more.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::lock;
use crate::transport::{Caller, UserKey};

/// The users the per-user limit does not apply to: the server's own, and
/// root (Unix) or LocalSystem (Windows), who run services and could stop
/// this one anyway.
fn exempt() -> Vec<UserKey> {
    let me = Caller::current().user_key();
    let root = if cfg!(windows) {
        UserKey::Sid(Arc::from("S-1-5-18"))
    } else {
        UserKey::Uid(0)
    };
    me.into_iter().chain([root]).collect()
}

/// The connections each user holds, against the per-user limit.
#[derive(Debug)]
pub(super) struct Users {
    limit: usize,
    exempt: Vec<UserKey>,
    counts: Mutex<HashMap<UserKey, usize>>,
}

impl Users {
    pub(super) fn new(limit: usize) -> Arc<Users> {
        Arc::new(Users {
            limit,
            exempt: exempt(),
            counts: Mutex::default(),
        })
    }

    /// A connection for `caller`'s user ([`Caller::user_key`]: the uid on
    /// Unix, the user SID on Windows), or `None` if that user holds the
    /// limit already. A caller the OS told nothing about is not counted.
    pub(super) fn admit(self: &Arc<Users>, caller: &Caller) -> Option<UserSlot> {
        let key = caller.user_key().filter(|key| !self.exempt.contains(key));
        let Some(key) = key else {
            return Some(UserSlot {
                users: None,
                key: None,
            });
        };
        let mut counts = lock(&self.counts);
        let count = counts.entry(key.clone()).or_default();
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(UserSlot {
            users: Some(self.clone()),
            key: Some(key),
        })
    }

    /// What a client whose user holds the limit is told.
    pub(super) fn refusal(&self) -> String {
        format!(
            "this user holds {} connections, the server's limit per user; try again later",
            self.limit
        )
    }
}

/// One connection counted for its user; uncounted when dropped.
#[derive(Debug)]
pub(super) struct UserSlot {
    users: Option<Arc<Users>>,
    key: Option<UserKey>,
}

impl Drop for UserSlot {
    fn drop(&mut self) {
        let (Some(users), Some(key)) = (&self.users, &self.key) else {
            return;
        };
        let mut counts = lock(&users.counts);
        if let Some(count) = counts.get_mut(key) {
            *count -= 1;
            if *count == 0 {
                counts.remove(key);
            }
        }
    }
}

/// The rate of frames without an answer one connection may send: a token
/// bucket holding one second's worth, refilled as time passes. Spending is
/// a subtraction; the clock is read only when the bucket runs dry.
#[derive(Debug)]
pub(super) struct Throttle {
    rate: u32,
    tokens: u32,
    refilled: Instant,
}

impl Throttle {
    pub(super) fn new(rate: u32) -> Throttle {
        Throttle {
            rate,
            tokens: rate,
            refilled: Instant::now(),
        }
    }

    /// Takes one frame's token. `None`: the connection may go on reading;
    /// else the moment it may read again.
    pub(super) fn spend(&mut self) -> Option<Instant> {
        if self.tokens == 0 && !self.refill() {
            return Some(self.next_token());
        }
        self.tokens -= 1;
        None
    }

    /// Whether tokens are left, after adding those earned since the last
    /// refill.
    pub(super) fn refill(&mut self) -> bool {
        let now = Instant::now();
        let earned = now.duration_since(self.refilled).as_secs_f64() * f64::from(self.rate);
        if earned >= 1.0 {
            let earned = earned.min(f64::from(self.rate)) as u32;
            self.tokens = self.tokens.saturating_add(earned).min(self.rate);
            self.refilled = now;
        }
        self.tokens > 0
    }

    /// When the next batch of tokens is earned: a hundredth of a second's
    /// worth (at least one), so that a throttled connection is read in
    /// batches, not frame by frame.
    fn next_token(&self) -> Instant {
        let batch = (self.rate / 100).max(1);
        let wait = Duration::from_secs_f64(f64::from(batch) / f64::from(self.rate));
        self.refilled + wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::caller_details;
    use crate::transport::PeerInfo;

    /// A caller of another user (uid `n` on Unix; on Windows, a SID of
    /// its own, as the token would carry).
    fn other_user(n: u32) -> Caller {
        let peer = PeerInfo::new().with_uid(n).with_pid(n);
        let sid = cfg!(windows).then(|| format!("S-1-5-21-1-2-3-{n}"));
        Caller::from_details(caller_details(peer, None, sid, &[]))
    }

    #[test]
    fn a_user_holds_at_most_the_limit_and_the_servers_own_user_is_not_limited() {
        let users = Users::new(2);
        let other = other_user(65534);
        let a = users.admit(&other).expect("first");
        let b = users.admit(&other).expect("second");
        assert!(users.admit(&other).is_none(), "third");
        drop(a);
        let c = users.admit(&other).expect("again, once one left");
        // Another user has a limit of its own; the server's user has none.
        let _d = users.admit(&other_user(65533)).expect("another user");
        let mine: Vec<_> = (0..10)
            .map(|_| users.admit(&Caller::current()).expect("own user"))
            .collect();
        // A peer the OS told nothing about is not counted.
        assert!(users.admit(&Caller::from(PeerInfo::new())).is_some());
        drop((b, c, mine));
        assert_eq!(lock(&users.counts).len(), 1, "only the other user's one");
    }

    #[tokio::test]
    async fn the_throttle_allows_a_seconds_worth_then_the_rate() {
        let mut throttle = Throttle::new(1000);
        for _ in 0..1000 {
            assert_eq!(throttle.spend(), None);
        }
        let resume = throttle.spend().expect("dry");
        assert_eq!(resume - throttle.refilled, Duration::from_millis(10));
        // As if 10 ms had passed: a hundredth of a second's worth more.
        throttle.refilled -= Duration::from_millis(10);
        for _ in 0..10 {
            assert_eq!(throttle.spend(), None);
        }
        assert!(throttle.spend().is_some());
        // Five seconds later: refilled to one second's worth, no more.
        throttle.refilled -= Duration::from_secs(5);
        for _ in 0..1000 {
            assert_eq!(throttle.spend(), None);
        }
        assert!(throttle.spend().is_some());
    }
}
