//! Rate limits per connection, shared by every recipe that uses the connection: the
//! connector's declared limit (governor, in this process) and the waits vendors ask for
//! with 429 and `Retry-After`, which hold the whole connection, not just one run.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use enlace_core::RateLimit;
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota};

#[derive(Default)]
pub struct RateLimits {
    limiters: Mutex<HashMap<String, Arc<DefaultDirectRateLimiter>>>,
    /// Until when (ms since epoch) a key is held by a vendor's `Retry-After`.
    held: Mutex<HashMap<String, i64>>,
}

impl RateLimits {
    /// How long to wait before a call on `key` may go out: zero when it may go now (and the
    /// call is counted), else the wait (nothing counted).
    pub fn check(&self, key: &str, limit: Option<RateLimit>, now_ms: i64) -> Duration {
        if let Some(until) = self.held.lock().unwrap_or_else(|e| e.into_inner()).get(key).copied()
            && until > now_ms
        {
            return Duration::from_millis((until - now_ms) as u64);
        }
        let Some(limit) = limit else { return Duration::ZERO };
        let limiter = {
            let mut map = self.limiters.lock().unwrap_or_else(|e| e.into_inner());
            map.entry(key.to_string())
                .or_insert_with(|| {
                    let calls = NonZeroU32::new(limit.calls.max(1)).unwrap_or(NonZeroU32::MIN);
                    let period = limit.per / limit.calls.max(1);
                    let quota = Quota::with_period(period.max(Duration::from_micros(1)))
                        .unwrap_or_else(|| Quota::per_second(calls))
                        .allow_burst(calls);
                    Arc::new(DefaultDirectRateLimiter::direct(quota))
                })
                .clone()
        };
        match limiter.check() {
            Ok(()) => Duration::ZERO,
            Err(not_until) => not_until.wait_time_from(DefaultClock::default().now()),
        }
    }

    /// A vendor asked to wait: hold every call on `key` until then.
    pub fn hold(&self, key: &str, until_ms: i64) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let e = held.entry(key.to_string()).or_insert(until_ms);
        *e = (*e).max(until_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_limit_and_vendor_hold() {
        let l = RateLimits::default();
        let lim = Some(RateLimit { calls: 2, per: Duration::from_secs(60) });
        assert_eq!(l.check("c1", lim, 0), Duration::ZERO);
        assert_eq!(l.check("c1", lim, 0), Duration::ZERO);
        assert!(l.check("c1", lim, 0) > Duration::from_secs(1), "the third call in a minute waits");
        assert_eq!(l.check("c2", lim, 0), Duration::ZERO, "another connection has its own budget");
        l.hold("c3", 5_000);
        assert_eq!(l.check("c3", None, 1_000), Duration::from_millis(4_000));
        assert_eq!(l.check("c3", None, 5_000), Duration::ZERO);
    }
}
