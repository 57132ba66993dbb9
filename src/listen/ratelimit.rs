//! Per-source rate limiting (hostile-inputs J02): a token bucket per sender IP (per listener for
//! unix sockets), checked before a message is parsed. What is over the limit is dropped and
//! counted as `rate_limited`, and logged at most once per `interval` per source, as rsyslog's
//! "begin to drop messages due to rate-limiting" and "N messages suppressed".
//!
//! The buckets live in one map per listener behind a mutex; a TCP connection looks its bucket
//! up once and keeps it, so connections from one address share it and the map is locked only
//! at connect. Listeners without `rate_limit` never get here. The map is bounded: buckets that
//! have refilled carry no state and are forgotten first, then the least recently used ones
//! (counted as `rate_limit_evictions`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use crate::listen::settings::RateLimit;
use crate::metrics::{self, ListenerMetrics};

/// Most sources whose buckets are kept per listener (a spoofed-source flood cannot grow it).
pub const MAX_TRACKED_SOURCES: usize = 10_000;

/// One source's token bucket and the state of its log lines.
#[derive(Debug)]
pub struct Bucket {
    tokens: f64,
    /// Last refill, which is also the last message seen.
    refilled: Instant,
    /// Messages dropped since the last log line about them.
    suppressed: u64,
    /// Between "begin to drop" and the line saying the limit was lifted.
    dropping: bool,
    last_log: Option<Instant>,
}

impl Bucket {
    fn new(limit: &RateLimit, now: Instant) -> Bucket {
        Bucket {
            tokens: f64::from(limit.burst),
            refilled: now,
            suppressed: 0,
            dropping: false,
            last_log: None,
        }
    }

    fn refill(&mut self, limit: &RateLimit, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        let rate = f64::from(limit.messages) / limit.interval.as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(f64::from(limit.burst));
        self.refilled = now;
    }

    /// Whether one more message from this source passes at `now`; logs the start and end of
    /// dropping, at most once per `interval`.
    pub fn admit(&mut self, limit: &RateLimit, now: Instant, who: &Source<'_>) -> bool {
        self.refill(limit, now);
        let may_log = self
            .last_log
            .is_none_or(|t| now.saturating_duration_since(t) >= limit.interval);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            if self.dropping && may_log {
                tracing::warn!(listener = %who.listener, source = %who, suppressed = self.suppressed,
                    "rate limit lifted: {} messages suppressed", self.suppressed);
                self.dropping = false;
                self.suppressed = 0;
                self.last_log = Some(now);
            }
            return true;
        }
        self.suppressed += 1;
        if may_log {
            if self.dropping {
                tracing::warn!(listener = %who.listener, source = %who, suppressed = self.suppressed,
                    "{} messages suppressed due to rate-limiting", self.suppressed);
                self.suppressed = 0;
            } else {
                tracing::warn!(listener = %who.listener, source = %who, messages = limit.messages,
                    interval = ?limit.interval, burst = limit.burst,
                    "begin to drop messages due to rate-limiting");
            }
            self.last_log = Some(now);
        }
        self.dropping = true;
        false
    }

    /// Whether forgetting this bucket changes nothing: it is full again and owes no log line.
    fn is_idle(&mut self, limit: &RateLimit, now: Instant) -> bool {
        self.refill(limit, now);
        !self.dropping && self.tokens >= f64::from(limit.burst)
    }
}

/// Who a bucket belongs to, for log lines.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    /// The listener's name.
    pub listener: &'a str,
    /// The sender; `None` on unix sockets (one bucket for the listener).
    pub ip: Option<IpAddr>,
}

impl std::fmt::Display for Source<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.ip {
            Some(ip) => write!(f, "{ip}"),
            None => f.write_str("local"),
        }
    }
}

/// The buckets of one listener.
#[derive(Debug)]
pub struct SourceLimiter {
    limit: RateLimit,
    listener: Arc<str>,
    metrics: Arc<ListenerMetrics>,
    buckets: Mutex<HashMap<Option<IpAddr>, Arc<Mutex<Bucket>>>>,
    max_sources: usize,
}

impl SourceLimiter {
    /// Buckets for `listener`, each holding `limit`.
    pub fn new(limit: RateLimit, listener: Arc<str>, metrics: Arc<ListenerMetrics>) -> Self {
        Self::with_capacity(limit, listener, metrics, MAX_TRACKED_SOURCES)
    }

    fn with_capacity(
        limit: RateLimit,
        listener: Arc<str>,
        metrics: Arc<ListenerMetrics>,
        max_sources: usize,
    ) -> Self {
        SourceLimiter {
            limit,
            listener,
            metrics,
            buckets: Mutex::new(HashMap::new()),
            max_sources,
        }
    }

    /// The bucket of `ip` (IPv4-mapped IPv6 addresses count as IPv4), created full if new.
    pub fn bucket(&self, ip: Option<IpAddr>) -> Arc<Mutex<Bucket>> {
        let ip = ip.map(|ip| match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        });
        let now = Instant::now();
        let mut map = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(b) = map.get(&ip) {
            return b.clone();
        }
        if map.len() >= self.max_sources {
            self.make_room(&mut map, now);
        }
        map.entry(ip)
            .or_insert_with(|| Arc::new(Mutex::new(Bucket::new(&self.limit, now))))
            .clone()
    }

    /// Whether one more message from `ip` passes; counts it as `rate_limited` if not.
    pub fn admit(&self, ip: Option<IpAddr>) -> bool {
        let bucket = self.bucket(ip);
        self.admit_in(&bucket, ip)
    }

    /// As [`SourceLimiter::admit`], with a bucket the caller kept (a TCP connection's).
    pub fn admit_in(&self, bucket: &Mutex<Bucket>, ip: Option<IpAddr>) -> bool {
        let who = Source {
            listener: &self.listener,
            ip,
        };
        let pass = bucket.lock().unwrap_or_else(PoisonError::into_inner).admit(
            &self.limit,
            Instant::now(),
            &who,
        );
        if !pass {
            metrics::add(&self.metrics.rate_limited, 1);
        }
        pass
    }

    /// Frees an eighth of the map (amortising the sweep): idle buckets first, then the least
    /// recently used ones that no connection holds.
    fn make_room(&self, map: &mut HashMap<Option<IpAddr>, Arc<Mutex<Bucket>>>, now: Instant) {
        let target = self.max_sources - self.max_sources.div_ceil(8);
        map.retain(|_, b| {
            Arc::strong_count(b) > 1 || !b.try_lock().is_ok_and(|mut b| b.is_idle(&self.limit, now))
        });
        if map.len() <= target {
            return;
        }
        let mut by_age: Vec<(Instant, Option<IpAddr>)> = map
            .iter()
            .filter(|(_, b)| Arc::strong_count(b) == 1)
            .filter_map(|(k, b)| b.try_lock().ok().map(|b| (b.refilled, *k)))
            .collect();
        by_age.sort_unstable();
        let excess = map.len() - target;
        for (_, k) in by_age.into_iter().take(excess) {
            map.remove(&k);
            metrics::add(&self.metrics.rate_limit_evictions, 1);
        }
    }

    /// Number of sources tracked now.
    pub fn tracked(&self) -> usize {
        self.buckets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limit(messages: u32, interval_ms: u64, burst: u32) -> RateLimit {
        RateLimit {
            messages,
            interval: Duration::from_millis(interval_ms),
            burst,
        }
    }

    #[test]
    fn bucket_passes_burst_then_refills_at_the_rate() {
        let l = limit(10, 1000, 5);
        let t0 = Instant::now();
        let who = Source {
            listener: "t",
            ip: None,
        };
        let mut b = Bucket::new(&l, t0);
        let passed = (0..8).filter(|_| b.admit(&l, t0, &who)).count();
        assert_eq!(passed, 5);
        assert_eq!(b.suppressed, 3);
        // 10 per second: 300 ms later three more tokens, no more.
        let t1 = t0 + Duration::from_millis(300);
        let passed = (0..8).filter(|_| b.admit(&l, t1, &who)).count();
        assert_eq!(passed, 3);
        // Refilling stops at the burst.
        let t2 = t1 + Duration::from_secs(60);
        let passed = (0..20).filter(|_| b.admit(&l, t2, &who)).count();
        assert_eq!(passed, 5);
    }

    #[test]
    fn sources_are_separate_and_bounded() {
        let m = Arc::new(ListenerMetrics::default());
        let s = SourceLimiter::with_capacity(limit(1, 3_600_000, 1), "t".into(), m.clone(), 16);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert!(s.admit(Some(a)));
        assert!(
            !s.admit(Some(mapped)),
            "a mapped address is the same source"
        );
        assert!(s.admit(Some("10.0.0.2".parse().unwrap())));
        assert_eq!(metrics::get(&m.rate_limited), 1);
        // A flood of distinct sources: the map stays bounded, and the evicted are counted.
        for i in 0..100u32 {
            s.admit(Some(IpAddr::from(std::net::Ipv4Addr::from(
                0x0b00_0000 + i,
            ))));
            assert!(s.tracked() <= 16);
        }
        assert!(metrics::get(&m.rate_limit_evictions) >= 84);
    }
}
