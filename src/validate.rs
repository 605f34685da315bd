//! The checks behind pipesvc's one validation policy: a setting that
//! cannot work is an [`Error::Config`] naming it, returned before anything
//! is opened (from `bind` and `connect`); setters store what they are given
//! and never clamp or panic.

use std::time::Duration;

use crate::error::{Error, Result};

/// The longest timeout accepted: far beyond any real use, and far enough
/// below `Duration::MAX` that deadline arithmetic (`now + timeout`) cannot
/// overflow.
pub(crate) const MAX_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// A timeout that must be above zero (zero would fail every attempt) and
/// at most [`MAX_TIMEOUT`].
pub(crate) fn positive_timeout(setting: &str, timeout: Duration) -> Result<()> {
    if timeout.is_zero() {
        return Err(Error::config(
            setting,
            "must be above zero: nothing could ever finish in no time",
        ));
    }
    bounded_timeout(setting, timeout)
}

/// A timeout where zero has a meaning ("do not wait"), at most
/// [`MAX_TIMEOUT`].
pub(crate) fn bounded_timeout(setting: &str, timeout: Duration) -> Result<()> {
    if timeout > MAX_TIMEOUT {
        return Err(Error::config(
            setting,
            format!("{timeout:?} is longer than the longest allowed, {MAX_TIMEOUT:?} (a year)"),
        ));
    }
    Ok(())
}

/// A count or size that must be at least `min`, with `why` saying what a
/// smaller one would break.
pub(crate) fn at_least(setting: &str, value: u64, min: u64, why: &str) -> Result<()> {
    if value < min {
        return Err(Error::config(
            setting,
            format!("must be at least {min}, not {value}: {why}"),
        ));
    }
    Ok(())
}

/// A count that must be at most `max`, with `why` saying what limits it.
pub(crate) fn at_most(setting: &str, value: u64, max: u64, why: &str) -> Result<()> {
    if value > max {
        return Err(Error::config(
            setting,
            format!("must be at most {max}, not {value}: {why}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(result: Result<()>) -> String {
        match result {
            Err(Error::Config { setting, message }) => format!("{setting}: {message}"),
            other => panic!("expected Error::Config, got {other:?}"),
        }
    }

    #[test]
    fn zero_and_huge_timeouts_are_refused_by_name() {
        let zero = message(positive_timeout("write_timeout", Duration::ZERO));
        assert!(
            zero.starts_with("write_timeout: must be above zero"),
            "{zero}"
        );
        let huge = message(bounded_timeout("close_timeout", Duration::MAX));
        assert!(
            huge.starts_with("close_timeout: ") && huge.contains("a year"),
            "{huge}"
        );
        assert!(bounded_timeout("close_timeout", Duration::ZERO).is_ok());
        assert!(positive_timeout("x", MAX_TIMEOUT).is_ok());
    }

    #[test]
    fn bounds_say_the_limit_and_the_value() {
        let low = message(at_least("max_connections", 0, 1, "no client could connect"));
        assert_eq!(
            low,
            "max_connections: must be at least 1, not 0: no client could connect"
        );
        let high = message(at_most("max_instances", 255, 254, "Windows allows 254"));
        assert_eq!(
            high,
            "max_instances: must be at most 254, not 255: Windows allows 254"
        );
        assert!(at_least("x", 1, 1, "").is_ok() && at_most("x", 254, 254, "").is_ok());
    }

    #[test]
    fn the_display_names_the_setting_and_why() {
        let err = Error::config("max_in_flight", "must be at least 1, not 0");
        assert_eq!(
            err.to_string(),
            "invalid configuration: max_in_flight: must be at least 1, not 0"
        );
    }
}
