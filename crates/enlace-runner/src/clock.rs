//! Time, swappable: the system clock in production, a manual clock in tests and dry runs
//! (a one-week delay is tested by moving the clock, not by waiting).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, TimeZone, Utc};

pub trait Clock: Send + Sync {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
    /// Whether time moves by itself (real) or only when told (manual).
    fn is_manual(&self) -> bool {
        false
    }
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        Utc::now().timestamp_millis()
    }
}

/// A clock that moves only when told.
#[derive(Clone)]
pub struct ManualClock {
    now: Arc<AtomicI64>,
}

impl ManualClock {
    pub fn new(start_ms: i64) -> Self {
        ManualClock { now: Arc::new(AtomicI64::new(start_ms)) }
    }
    pub fn advance(&self, by: std::time::Duration) {
        self.now.fetch_add(by.as_millis() as i64, Ordering::SeqCst);
    }
    pub fn set(&self, ms: i64) {
        self.now.store(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.now.load(Ordering::SeqCst)
    }
    fn is_manual(&self) -> bool {
        true
    }
}

/// RFC 3339 with milliseconds, UTC.
pub fn rfc3339(ms: i64) -> String {
    to_datetime(ms).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub fn to_datetime(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}
