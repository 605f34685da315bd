//! Rate-limited log lines: a line that can repeat once per client (a
//! refusal, a failing `accept`) must not let a flood of clients grow the
//! log without bound.
//!
//! Each call site of [`limited!`](crate::log_limit::limited) may log at
//! most [`LINES_PER_INTERVAL`] lines per [`INTERVAL`]; the lines past that
//! are counted, not written, and the first line the site logs in a later
//! interval is preceded by one line "suppressed K similar lines" at the
//! same level. (The count is written when the site logs again: a flood
//! that stops for good leaves its last count unwritten.)

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lines one call site may log per [`INTERVAL`].
pub(crate) const LINES_PER_INTERVAL: u32 = 10;

/// The window [`LINES_PER_INTERVAL`] applies to.
pub(crate) const INTERVAL: Duration = Duration::from_secs(10);

/// The budget of one call site.
#[derive(Debug)]
pub(crate) struct LogLimit {
    lines: u32,
    interval: Duration,
    state: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    start: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

impl LogLimit {
    /// At most `lines` lines per `interval`.
    pub(crate) const fn new(lines: u32, interval: Duration) -> LogLimit {
        LogLimit {
            lines,
            interval,
            state: Mutex::new(Window {
                start: None,
                logged: 0,
                suppressed: 0,
            }),
        }
    }

    /// Whether a line may be logged at `now`: `Some(k)` if so, `k` being
    /// the lines suppressed since the last one logged; `None` if it is to
    /// be suppressed (and counted).
    pub(crate) fn admit(&self, now: Instant) -> Option<u64> {
        let mut window = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let expired = window
            .start
            .is_none_or(|start| now.saturating_duration_since(start) >= self.interval);
        if expired {
            window.start = Some(now);
            window.logged = 0;
        }
        if window.logged < self.lines {
            window.logged += 1;
            Some(std::mem::take(&mut window.suppressed))
        } else {
            window.suppressed += 1;
            None
        }
    }
}

/// Logs like `tracing::$level!`, at most [`LINES_PER_INTERVAL`] lines per
/// [`INTERVAL`] from this call site; see the module documentation.
///
/// `limited!(warn, error = %e, "accept failed")`. The `@with` form takes
/// the [`LogLimit`] and the current instant, for tests.
macro_rules! limited {
    ($level:ident, $($arg:tt)+) => {{
        static LIMIT: $crate::log_limit::LogLimit = $crate::log_limit::LogLimit::new(
            $crate::log_limit::LINES_PER_INTERVAL,
            $crate::log_limit::INTERVAL,
        );
        $crate::log_limit::limited!(@with &LIMIT, ::std::time::Instant::now(), $level, $($arg)+)
    }};
    (@with $limit:expr, $now:expr, $level:ident, $($arg:tt)+) => {{
        if let Some(suppressed) = $limit.admit($now) {
            if suppressed > 0 {
                ::tracing::$level!(suppressed, "suppressed {} similar lines", suppressed);
            }
            ::tracing::$level!($($arg)+);
        }
    }};
}
pub(crate) use limited;

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing::field::{Field, Visit};
    use tracing_subscriber::layer::{Context, SubscriberExt};
    use tracing_subscriber::Layer;

    use super::*;

    /// Records the message of every event.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<String>>>);

    struct Message(String);

    impl Visit for Message {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            if field.name() == "message" {
                self.0 = format!("{value:?}");
            }
        }
    }

    impl<S: tracing::Subscriber> Layer<S> for Capture {
        fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
            let mut message = Message(String::new());
            event.record(&mut message);
            self.0.lock().unwrap().push(message.0);
        }
    }

    /// Runs `f` with a subscriber capturing every event; returns their messages.
    fn captured(f: impl FnOnce()) -> Vec<String> {
        let capture = Capture::default();
        let subscriber = tracing_subscriber::registry().with(capture.clone());
        tracing::subscriber::with_default(subscriber, f);
        let lines = capture.0.lock().unwrap().clone();
        lines
    }

    #[test]
    fn a_flood_logs_the_budget_then_one_count_per_interval() {
        let limit = LogLimit::new(3, Duration::from_secs(10));
        let start = Instant::now();
        let lines = captured(|| {
            // 1000 lines in the first interval, 5 in the next, 1 much later.
            for i in 0..1000u32 {
                limited!(@with &limit, start, warn, i, "refused");
            }
            let next = start + Duration::from_secs(10);
            for i in 0..5u32 {
                limited!(@with &limit, next, warn, i, "refused");
            }
            limited!(@with &limit, start + Duration::from_secs(3600), warn, "refused");
        });
        let expected = [
            "refused",
            "refused",
            "refused",
            "suppressed 997 similar lines",
            "refused",
            "refused",
            "refused",
            "suppressed 2 similar lines",
            "refused",
        ];
        assert_eq!(lines, expected);
    }

    #[test]
    fn call_sites_have_budgets_of_their_own() {
        let lines = captured(|| {
            for _ in 0..100 {
                limited!(warn, "first site");
                limited!(error, "second site");
            }
        });
        let count = |text: &str| lines.iter().filter(|l| *l == text).count();
        assert_eq!(count("first site"), LINES_PER_INTERVAL as usize);
        assert_eq!(count("second site"), LINES_PER_INTERVAL as usize);
        assert_eq!(lines.len(), 2 * LINES_PER_INTERVAL as usize);
    }
}
