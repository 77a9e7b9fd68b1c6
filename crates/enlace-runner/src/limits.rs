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

/// The transport an action call gets: the installation's, watching every answer's rate-limit
/// headers (`X-RateLimit-*`, the IETF `RateLimit` fields, HubSpot's and Facebook's usage
/// headers, `Retry-After`; read by `enlace_kit::rate_info`). An answer that says the budget
/// is spent (nothing `remaining`, usage at 100 %, or a `Retry-After`) holds the connection's
/// key until the window resets, on this node and, with a shared store, on every node: the
/// next call waits instead of being refused. The answer itself goes back to the connector
/// unchanged.
pub(crate) struct BudgetWatch {
    pub inner: Arc<crate::Inner>,
    pub key: String,
}

/// The wait a response's rate-limit headers ask for before the next call, if any.
pub(crate) fn spent_wait(headers: &enlace_core::http::HeaderMap, now_ms: u64) -> Option<Duration> {
    let info = enlace_kit::rate_info(headers)?;
    let wait = match (info.retry_after, info.remaining, info.usage_percent) {
        (Some(d), _, _) => Some(d),
        (None, Some(0), _) => info.reset_after(now_ms),
        (None, _, Some(u)) if u >= 100.0 => info.reset_after(now_ms),
        _ => None,
    };
    wait.filter(|d| !d.is_zero())
}

impl enlace_core::http::HttpTransport for BudgetWatch {
    fn send(
        &self,
        request: enlace_core::http::HttpRequest,
    ) -> enlace_core::BoxFuture<'_, Result<enlace_core::http::HttpResponse, enlace_core::http::TransportError>> {
        Box::pin(async move {
            let result = self.inner.transport.send(request).await;
            if let Ok(resp) = &result {
                let wall = chrono::Utc::now().timestamp_millis().max(0) as u64;
                if let Some(wait) = spent_wait(&resp.headers, wall) {
                    let until = self.inner.clock.now_ms() + wait.as_millis() as i64;
                    tracing::info!(key = %self.key, wait_ms = wait.as_millis() as u64, "the app says the rate budget is spent; holding the connection");
                    self.inner.limits.hold(&self.key, until);
                    if self.inner.store.shared_rate_limits() {
                        let (store, key) = (self.inner.store.clone(), self.key.clone());
                        tokio::spawn(async move {
                            if let Err(e) = store.rate_hold(&key, until).await {
                                tracing::warn!(key = %key, error = %e, "sharing a spent rate budget with the other nodes failed");
                            }
                        });
                    }
                }
            }
            result
        })
    }

    fn allows_private_networks(&self) -> bool {
        self.inner.transport.allows_private_networks()
    }
}

#[cfg(test)]
mod watch_tests {
    use enlace_core::http::{HeaderMap, HeaderValue};

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn only_a_spent_budget_holds() {
        let now_ms = 1_800_000_000_000u64;
        let reset = (now_ms / 1000 + 30).to_string();
        // Calls left: no hold.
        assert_eq!(spent_wait(&headers(&[("x-ratelimit-remaining", "5"), ("x-ratelimit-reset", &reset)]), now_ms), None);
        // Nothing left: hold until the reset.
        let w = spent_wait(&headers(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", &reset)]), now_ms).unwrap();
        assert!((29_000..=30_000).contains(&(w.as_millis() as u64)), "{w:?}");
        // A reset with nothing said about what is left: no hold.
        assert_eq!(spent_wait(&headers(&[("x-ratelimit-reset", &reset)]), now_ms), None);
        // Retry-After always counts.
        assert_eq!(spent_wait(&headers(&[("retry-after", "7")]), now_ms), Some(Duration::from_secs(7)));
        // No rate headers at all.
        assert_eq!(spent_wait(&HeaderMap::new(), now_ms), None);
    }
}
