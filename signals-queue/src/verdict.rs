//! What a queued handler's error can ask of the worker, besides "failed, retry with backoff":
//! [`Snooze`] (not now: try again after a while, without using an attempt) and [`Discard`]
//! (never: the job ends `discarded`, with the reason).
//!
//! Both are ordinary error types. The worker looks for one along the error's `source()` chain,
//! starting at the error itself, so they work however the handler's error is built: returned
//! as they are (`Err(Snooze::after(d).into())` into a `Box<dyn Error>`), through `?` from a
//! function that returns them, as the source of an error of your own (`#[source]` with
//! thiserror), or inside an `anyhow::Error` (`anyhow::Error::new(Discard::because(…))`, or
//! `.context(…)` on top of one). Any other error is a failure, retried with backoff.

use std::fmt;
use std::time::Duration;

/// Not now: the job goes back to waiting for `after`, and the attempt it used is given back
/// (a rate limit, "the provider said 429"). A handler that snoozes forever runs forever: bound
/// it yourself if that matters (say, by the job's [`attempt`](crate::JobScope::attempt), which
/// a snooze does not raise, or the event's age).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use signals_queue::Snooze;
///
/// fn send(status: u16) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
///     if status == 429 {
///         return Err(Snooze::after(Duration::from_secs(30)).because("rate limited").into());
///     }
///     Ok(())
/// }
/// # assert!(send(429).is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snooze {
    after: Duration,
    reason: Option<String>,
}

impl Snooze {
    /// Try again after `after`.
    pub fn after(after: Duration) -> Snooze {
        Snooze {
            after,
            reason: None,
        }
    }

    /// Why, for the job's `last_error` and its attempt history.
    pub fn because(mut self, reason: impl Into<String>) -> Snooze {
        self.reason = Some(reason.into());
        self
    }

    /// How long the job waits.
    pub fn delay(&self) -> Duration {
        self.after
    }
}

impl fmt::Display for Snooze {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "snoozed for {:?}", self.after)?;
        match &self.reason {
            Some(reason) => write!(f, ": {reason}"),
            None => Ok(()),
        }
    }
}

impl std::error::Error for Snooze {}

/// Never retry: the job ends `discarded`, with the reason as its last error ("this customer
/// deleted their account"). Kept until pruned; an operator can still retry it.
///
/// # Examples
///
/// ```
/// use signals_queue::Discard;
///
/// fn welcome(account_exists: bool) -> Result<(), Discard> {
///     if !account_exists {
///         return Err(Discard::because("the customer deleted their account"));
///     }
///     Ok(())
/// }
/// # assert!(welcome(false).is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Discard {
    reason: String,
}

impl Discard {
    /// Discard the job, for `reason`.
    pub fn because(reason: impl Into<String>) -> Discard {
        Discard {
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Discard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "discarded: {}", self.reason)
    }
}

impl std::error::Error for Discard {}

/// What a failed attempt's error asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// A failure: retried after a backoff, dead when out of attempts.
    Fail,
    /// Waiting again for this long, the attempt given back.
    Snooze(Duration),
    /// Discarded.
    Discard,
}

impl Verdict {
    /// The first [`Snooze`] or [`Discard`] along `error`'s `source()` chain, itself first.
    pub(crate) fn of(error: &(dyn std::error::Error + 'static)) -> Verdict {
        let mut current = Some(error);
        while let Some(error) = current {
            if let Some(snooze) = error.downcast_ref::<Snooze>() {
                return Verdict::Snooze(snooze.after);
            }
            if error.is::<Discard>() {
                return Verdict::Discard;
            }
            current = error.source();
        }
        Verdict::Fail
    }

    /// As the failure statement binds it.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Verdict::Fail => "fail",
            Verdict::Snooze(_) => "snooze",
            Verdict::Discard => "discard",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wrapper(Box<dyn std::error::Error + Send + Sync>);

    impl fmt::Display for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("the provider refused")
        }
    }

    impl std::error::Error for Wrapper {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&*self.0)
        }
    }

    #[test]
    fn a_verdict_is_found_anywhere_along_the_source_chain() {
        let snooze = Snooze::after(Duration::from_secs(3));
        let boxed: Box<dyn std::error::Error + Send + Sync> = snooze.clone().into();
        assert_eq!(
            Verdict::of(&*boxed),
            Verdict::Snooze(Duration::from_secs(3))
        );
        let wrapped = Wrapper(Box::new(Wrapper(Discard::because("gone").into())));
        assert_eq!(Verdict::of(&wrapped), Verdict::Discard);
        let plain = std::io::Error::other("timeout");
        assert_eq!(Verdict::of(&plain), Verdict::Fail);
        assert_eq!(snooze.because("429").to_string(), "snoozed for 3s: 429");
    }
}
