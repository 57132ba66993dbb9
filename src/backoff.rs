//! Retrying an operation that can fail at once, and again at once: accept with no descriptor
//! left (EMFILE), a reconnect, reopening a file, a socket read. Without a pause such a loop
//! spins a core and, logging each failure, floods sluice's own log (issue 21: 500k lines a
//! second from one accept loop). Every such loop goes through a [`Backoff`]: each failure in a
//! row waits twice as long as the one before, up to a bound, and failures are logged at most
//! once per [`FAILURE_LOG_INTERVAL`] with the number left unlogged in between.

use std::time::Duration;

use crate::metrics::LogLimiter;

/// A failure that keeps repeating is logged at most this often.
pub const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The retry state of one loop.
#[derive(Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
    log: LogLimiter,
}

/// What a loop does after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    /// Wait this long before the next attempt.
    pub delay: Duration,
    /// `Some(n)`: log this failure, saying that `n` were not logged since the last one that was;
    /// `None`: do not log it.
    pub log: Option<u64>,
}

impl Backoff {
    /// Waits `min` after a first failure, doubling after each further one up to `max`.
    pub const fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max,
            next: min,
            log: LogLimiter::new(FAILURE_LOG_INTERVAL),
        }
    }

    /// Records a failure: how long to wait, and whether to log it.
    pub fn fail(&mut self) -> Failure {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        Failure {
            delay,
            log: self.log.allow(),
        }
    }

    /// Records a success: the next failure waits `min` again. The log keeps its pace, so a
    /// failure that alternates with successes is still logged once per interval.
    pub fn succeed(&mut self) {
        self.next = self.min;
    }
}

/// Sleeps for `delay`, or less if `cancel` fires first: a stop does not wait out a backoff.
pub async fn pause(delay: Duration, cancel: &tokio_util::sync::CancellationToken) {
    tokio::select! {
        _ = cancel.cancelled() => {}
        _ = tokio::time::sleep(delay) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_bound_and_reset_on_success() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(500));
        let delays: Vec<Duration> = (0..5).map(|_| b.fail().delay).collect();
        assert_eq!(delays, [ms(100), ms(200), ms(400), ms(500), ms(500)]);
        b.succeed();
        assert_eq!(b.fail().delay, ms(100));
    }

    #[test]
    fn a_burst_of_failures_is_logged_once_with_a_count() {
        let mut b = Backoff::new(Duration::from_millis(1), Duration::from_millis(1));
        assert_eq!(b.fail().log, Some(0));
        let logged = (0..1000).filter(|_| b.fail().log.is_some()).count();
        assert_eq!(logged, 0, "within the interval nothing more is logged");
    }
}
