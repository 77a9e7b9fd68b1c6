//! Reading vendors' rate limit headers into one [`RateInfo`].
//!
//! The runner keeps a budget per connection; [`rate_info`] is what it will read from every
//! response to feed that budget (the wiring into the runner is not done yet: today only
//! [`crate::classify()`] uses it, for the wait of a 429). A connector may also call it to
//! report how much of the vendor's quota is left.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use enlace_core::http::HeaderMap;

use crate::classify::{MAX_RETRY_AFTER, parse_retry_after};

/// What a response's headers say about the vendor's rate limit. Every field is `None` when
/// no header gave it.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RateInfo {
    /// Calls allowed in the window.
    pub limit: Option<u64>,
    /// Calls left in the window.
    pub remaining: Option<u64>,
    /// When the window resets, in milliseconds since the Unix epoch.
    pub reset_at_ms: Option<u64>,
    /// The wait `Retry-After` asks for (seconds or an HTTP-date), capped at
    /// [`MAX_RETRY_AFTER`]; failing that, Facebook's `estimated_time_to_regain_access`.
    pub retry_after: Option<Duration>,
    /// How much of the quota is used, in percent (Facebook's `X-App-Usage` and
    /// `X-Business-Use-Case-Usage`: the highest of their counters). May exceed 100.
    pub usage_percent: Option<f64>,
}

impl RateInfo {
    /// The time until the window resets, seen at `now_ms` (zero when it is past).
    pub fn reset_after(&self, now_ms: u64) -> Option<Duration> {
        self.reset_at_ms.map(|at| Duration::from_millis(at.saturating_sub(now_ms)).min(MAX_RETRY_AFTER))
    }

    /// The wait before the next call: `retry_after`, or else the time until the reset when
    /// nothing is left (`remaining` is 0) or nothing was said about what is left.
    pub fn wait(&self, now_ms: u64) -> Option<Duration> {
        if self.retry_after.is_some() {
            return self.retry_after;
        }
        match self.remaining {
            Some(n) if n > 0 => None,
            _ => self.reset_after(now_ms),
        }
    }
}

/// Reads, from the headers of any response (not only a 429):
/// - `Retry-After`: delta seconds or an HTTP-date;
/// - `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset` (GitHub, Mailchimp
///   and many others; X spells them `x-rate-limit-*`, its reset in epoch seconds) and, when those are absent, the IETF draft's `RateLimit-Limit`,
///   `RateLimit-Remaining`, `RateLimit-Reset` or its single `RateLimit` header (`limit=100,
///   remaining=50, reset=5`, or the later `"default";r=50;t=30` with the limit in
///   `RateLimit-Policy: "default";q=100;w=60`); with several policies, the first counts. A
///   reset is delta seconds, or an epoch timestamp when the number is too large to be a
///   delta (at least 10^9: seconds, i.e. after 2001; at least 10^12: milliseconds);
/// - HubSpot's `X-HubSpot-RateLimit-Max` and `X-HubSpot-RateLimit-Remaining` (when no
///   `X-RateLimit-*` header says otherwise), the reset being one rolling window
///   (`X-HubSpot-RateLimit-Interval-Milliseconds`) from now;
/// - Facebook's `X-App-Usage`, `X-Page-Usage` and `X-Business-Use-Case-Usage` (JSON objects of percentages):
///   the highest percentage is `usage_percent`.
///
/// `None` when none of these headers is there or none could be read.
pub fn rate_info(headers: &HeaderMap) -> Option<RateInfo> {
    rate_info_at(headers, Utc::now())
}

pub(crate) fn rate_info_at(headers: &HeaderMap, now: DateTime<Utc>) -> Option<RateInfo> {
    let now_ms = now.timestamp_millis().max(0) as u64;
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|s| !s.is_empty());

    let structured = text("ratelimit").map(structured_fields).unwrap_or_default();
    let policy = text("ratelimit-policy").map(structured_fields).unwrap_or_default();
    let field = |name: &str, keys: &[&str], from: &[(String, f64)]| -> Option<f64> {
        text(&format!("x-ratelimit-{name}"))
            .or_else(|| text(&format!("x-rate-limit-{name}")))
            .and_then(leading_number)
            .or_else(|| text(&format!("ratelimit-{name}")).and_then(leading_number))
            .or_else(|| from.iter().find(|(k, _)| keys.contains(&k.as_str())).map(|(_, v)| *v))
    };
    let limit =
        field("limit", &["limit"], &structured).or_else(|| policy.iter().find(|(k, _)| k == "q").map(|(_, v)| *v)).map(|n| n as u64);
    let remaining = field("remaining", &["remaining", "r"], &structured).map(|n| n as u64);
    let reset_at_ms = field("reset", &["reset", "t"], &structured).map(|n| reset_at(n, now_ms));

    // HubSpot: `X-HubSpot-RateLimit-Max` calls per rolling window of
    // `X-HubSpot-RateLimit-Interval-Milliseconds` (10000), `X-HubSpot-RateLimit-Remaining` left
    // in it. No reset time is sent: in a rolling window a slot frees at the latest one window
    // from now, so that is the reset. The daily headers (`-Daily`, `-Daily-Remaining`) are not
    // read: the daily reset is midnight in the account's time zone, which the headers do not say.
    let hubspot = |name: &str| text(&format!("x-hubspot-ratelimit-{name}")).and_then(leading_number);
    let limit = limit.or_else(|| hubspot("max").map(|n| n as u64));
    let remaining = remaining.or_else(|| hubspot("remaining").map(|n| n as u64));
    let reset_at_ms = reset_at_ms
        .or_else(|| hubspot("interval-milliseconds").map(|ms| now_ms.saturating_add(ms.min(MAX_RETRY_AFTER.as_millis() as f64) as u64)));

    let (usage_percent, regain) = facebook_usage(&[text("x-app-usage"), text("x-page-usage")], text("x-business-use-case-usage"));
    let retry_after = text("retry-after").and_then(|v| parse_retry_after(v, now)).or(regain);

    let info = RateInfo { limit, remaining, reset_at_ms, retry_after, usage_percent };
    (info != RateInfo::default()).then_some(info)
}

/// `100`, or the draft's `100, 100;w=60`: the leading number.
fn leading_number(text: &str) -> Option<f64> {
    let end = text.find([',', ';', ' ']).unwrap_or(text.len());
    text[..end].parse::<f64>().ok().filter(|n| n.is_finite() && *n >= 0.0)
}

/// The `key=value` numbers of a structured header, in order: `limit=100, remaining=50` or
/// `"default";r=50;t=30`.
fn structured_fields(text: &str) -> Vec<(String, f64)> {
    text.split([',', ';'])
        .filter_map(|part| {
            let (k, v) = part.split_once('=')?;
            let v = v.trim().trim_matches('"').parse::<f64>().ok().filter(|n| n.is_finite() && *n >= 0.0)?;
            Some((k.trim().to_ascii_lowercase(), v))
        })
        .collect()
}

/// A reset value as an epoch time in milliseconds: epoch milliseconds, epoch seconds, or
/// seconds from now, by size.
fn reset_at(n: f64, now_ms: u64) -> u64 {
    if n >= 1e12 {
        n as u64
    } else if n >= 1e9 {
        (n * 1000.0) as u64
    } else {
        now_ms.saturating_add((n.min(MAX_RETRY_AFTER.as_secs_f64()) * 1000.0) as u64)
    }
}

/// The highest percentage in Facebook's usage headers (`X-App-Usage`, `X-Page-Usage`:
/// one object of counters each), and the longest `estimated_time_to_regain_access` (minutes)
/// of `X-Business-Use-Case-Usage` and `X-Page-Usage`.
fn facebook_usage(flat: &[Option<&str>], business: Option<&str>) -> (Option<f64>, Option<Duration>) {
    const COUNTERS: [&str; 3] = ["call_count", "total_cputime", "total_time"];
    let mut usage: Option<f64> = None;
    let mut regain: Option<Duration> = None;
    let mut take = |entry: &Value| {
        for counter in COUNTERS {
            if let Some(p) = entry.get(counter).and_then(Value::as_f64) {
                usage = Some(usage.map_or(p, |u| u.max(p)));
            }
        }
        if let Some(minutes) = entry.get("estimated_time_to_regain_access").and_then(Value::as_f64).filter(|m| *m > 0.0) {
            let wait = Duration::from_secs_f64((minutes * 60.0).min(MAX_RETRY_AFTER.as_secs_f64()));
            regain = Some(regain.map_or(wait, |r| r.max(wait)));
        }
    };
    for app in flat.iter().flatten().filter_map(|t| serde_json::from_str::<Value>(t).ok()) {
        take(&app);
    }
    // `{"<business id>": [{"type": "ads_management", "call_count": 95, ...}, ...]}`
    if let Some(Value::Object(ids)) = business.and_then(|t| serde_json::from_str::<Value>(t).ok()) {
        for entry in ids.values().filter_map(Value::as_array).flatten() {
            take(entry);
        }
    }
    (usage, regain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use enlace_core::http::{HeaderName, HeaderValue};

    // The header examples below are written from memory of each vendor's public API
    // documentation (GitHub, Mailchimp, Twitter/X, the IETF httpapi draft, Facebook Graph
    // API, MDN for Retry-After), not copied from captured traffic.

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        map
    }

    fn at(rfc3339: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(rfc3339).unwrap().with_timezone(&Utc)
    }

    /// 2023-11-14T22:13:20Z, 1_700_000_000 seconds after the epoch.
    fn now() -> DateTime<Utc> {
        at("2023-11-14T22:13:20Z")
    }
    const NOW_MS: u64 = 1_700_000_000_000;

    #[test]
    fn github_epoch_seconds_reset() {
        let h = headers(&[
            ("x-ratelimit-limit", "5000"),
            ("x-ratelimit-remaining", "4999"),
            ("x-ratelimit-used", "1"),
            ("x-ratelimit-reset", "1700000060"),
            ("x-ratelimit-resource", "core"),
        ]);
        let info = rate_info_at(&h, now()).unwrap();
        assert_eq!(
            info,
            RateInfo {
                limit: Some(5000),
                remaining: Some(4999),
                reset_at_ms: Some(1_700_000_060_000),
                retry_after: None,
                usage_percent: None
            }
        );
        assert_eq!(info.reset_after(NOW_MS), Some(Duration::from_secs(60)));
        assert_eq!(info.wait(NOW_MS), None, "calls are left: no wait");
    }

    #[test]
    fn x_spells_them_with_a_hyphen() {
        // X API v2: `x-rate-limit-limit`, `-remaining`, `-reset` (epoch seconds).
        let h = headers(&[("x-rate-limit-limit", "100"), ("x-rate-limit-remaining", "0"), ("x-rate-limit-reset", "1700000090")]);
        let info = rate_info_at(&h, now()).unwrap();
        assert_eq!((info.limit, info.remaining, info.reset_at_ms), (Some(100), Some(0), Some(1_700_000_090_000)));
        assert_eq!(info.wait(NOW_MS), Some(Duration::from_secs(90)));
    }

    #[test]
    fn delta_seconds_reset_and_epoch_milliseconds() {
        // A reset in seconds from now (Twitch-style deltas, the IETF draft).
        let info = rate_info_at(&headers(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "42")]), now()).unwrap();
        assert_eq!(info.reset_at_ms, Some(NOW_MS + 42_000));
        assert_eq!(info.wait(NOW_MS), Some(Duration::from_secs(42)), "nothing left: wait for the reset");
        let info = rate_info_at(&headers(&[("x-ratelimit-reset", "1700000005000")]), now()).unwrap();
        assert_eq!(info.reset_at_ms, Some(1_700_000_005_000));
        assert_eq!(info.reset_after(NOW_MS), Some(Duration::from_secs(5)));
        let past = rate_info_at(&headers(&[("x-ratelimit-reset", "1600000000")]), now()).unwrap();
        assert_eq!(past.reset_after(NOW_MS), Some(Duration::ZERO));
    }

    #[test]
    fn retry_after_as_seconds_and_as_date() {
        // MDN's examples: `Retry-After: 120` and `Retry-After: Wed, 21 Oct 2015 07:28:00 GMT`.
        let info = rate_info_at(&headers(&[("retry-after", "120")]), now()).unwrap();
        assert_eq!(info, RateInfo { retry_after: Some(Duration::from_secs(120)), ..RateInfo::default() });
        let info = rate_info_at(&headers(&[("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")]), at("2015-10-21T07:27:00Z")).unwrap();
        assert_eq!(info.retry_after, Some(Duration::from_secs(60)));
        // Retry-After wins over the reset when both are there.
        let info =
            rate_info_at(&headers(&[("retry-after", "3"), ("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "60")]), now()).unwrap();
        assert_eq!(info.wait(NOW_MS), Some(Duration::from_secs(3)));
    }

    #[test]
    fn ietf_draft_headers_in_each_form() {
        // Draft 03-06: three headers, the limit with its policy.
        let info = rate_info_at(
            &headers(&[("ratelimit-limit", "100, 100;w=60"), ("ratelimit-remaining", "50"), ("ratelimit-reset", "50")]),
            now(),
        )
        .unwrap();
        assert_eq!((info.limit, info.remaining, info.reset_at_ms), (Some(100), Some(50), Some(NOW_MS + 50_000)));
        // Draft 07: one dictionary header.
        let info = rate_info_at(&headers(&[("ratelimit", "limit=100, remaining=50, reset=5")]), now()).unwrap();
        assert_eq!((info.limit, info.remaining, info.reset_at_ms), (Some(100), Some(50), Some(NOW_MS + 5_000)));
        // Draft 08 and later: named policies, the quota in RateLimit-Policy.
        let info = rate_info_at(&headers(&[("ratelimit", "\"default\";r=50;t=30"), ("ratelimit-policy", "\"default\";q=100;w=60")]), now())
            .unwrap();
        assert_eq!((info.limit, info.remaining, info.reset_at_ms), (Some(100), Some(50), Some(NOW_MS + 30_000)));
        // The X- headers come first when a vendor sends both.
        let info = rate_info_at(&headers(&[("x-ratelimit-remaining", "1"), ("ratelimit-remaining", "2")]), now()).unwrap();
        assert_eq!(info.remaining, Some(1));
    }

    #[test]
    fn facebook_page_usage_header() {
        let h = headers(&[
            ("x-app-usage", r#"{"call_count":3}"#),
            ("x-page-usage", r#"{"call_count":101,"total_cputime":20,"total_time":30,"estimated_time_to_regain_access":2}"#),
        ]);
        let info = rate_info_at(&h, now()).unwrap();
        assert_eq!(info.usage_percent, Some(101.0));
        assert_eq!(info.retry_after, Some(Duration::from_secs(120)));
    }

    #[test]
    fn facebook_usage_headers() {
        let info = rate_info_at(&headers(&[("x-app-usage", r#"{"call_count":28,"total_time":25,"total_cputime":25}"#)]), now()).unwrap();
        assert_eq!(info, RateInfo { usage_percent: Some(28.0), ..RateInfo::default() });
        let business = r#"{"112233445566778":[{"type":"ads_management","call_count":95,"total_cputime":20,"total_time":20,"estimated_time_to_regain_access":0},{"type":"custom_audience","call_count":10,"total_cputime":99,"total_time":5,"estimated_time_to_regain_access":7}]}"#;
        let info =
            rate_info_at(&headers(&[("x-business-use-case-usage", business), ("x-app-usage", r#"{"call_count":5}"#)]), now()).unwrap();
        assert_eq!(info.usage_percent, Some(99.0), "the highest counter of every entry");
        assert_eq!(info.retry_after, Some(Duration::from_secs(7 * 60)), "estimated_time_to_regain_access is in minutes");
        assert_eq!(info.wait(NOW_MS), Some(Duration::from_secs(420)));
    }

    #[test]
    fn hubspot_rolling_window_headers() {
        // HubSpot's usage guidelines: the burst limit per rolling window (10 s), what is left of
        // it, and the daily quota of private apps (not read: its reset is the account's midnight).
        let h = headers(&[
            ("x-hubspot-ratelimit-daily", "250000"),
            ("x-hubspot-ratelimit-daily-remaining", "249990"),
            ("x-hubspot-ratelimit-interval-milliseconds", "10000"),
            ("x-hubspot-ratelimit-max", "100"),
            ("x-hubspot-ratelimit-remaining", "97"),
        ]);
        let info = rate_info_at(&h, now()).unwrap();
        assert_eq!((info.limit, info.remaining, info.reset_at_ms), (Some(100), Some(97), Some(NOW_MS + 10_000)));
        assert_eq!(info.wait(NOW_MS), None, "calls are left: no wait");
        let spent = headers(&[
            ("x-hubspot-ratelimit-interval-milliseconds", "10000"),
            ("x-hubspot-ratelimit-max", "100"),
            ("x-hubspot-ratelimit-remaining", "0"),
        ]);
        let info = rate_info_at(&spent, now()).unwrap();
        assert_eq!(info.wait(NOW_MS), Some(Duration::from_secs(10)), "nothing left: at most one window");
        // Generic headers win when a response carries both.
        let both = headers(&[("x-ratelimit-remaining", "5"), ("x-hubspot-ratelimit-remaining", "0")]);
        assert_eq!(rate_info_at(&both, now()).unwrap().remaining, Some(5));
        // The daily headers alone say nothing this reader can use.
        assert_eq!(rate_info_at(&headers(&[("x-hubspot-ratelimit-daily-remaining", "0")]), now()), None);
    }

    #[test]
    fn nothing_readable_is_none() {
        assert_eq!(rate_info_at(&headers(&[("content-type", "application/json")]), now()), None);
        assert_eq!(rate_info_at(&headers(&[("x-ratelimit-remaining", "many"), ("x-app-usage", "{oops")]), now()), None);
        assert_eq!(rate_info_at(&headers(&[("retry-after", "-5")]), now()), None);
        // With the real clock.
        let info = rate_info(&headers(&[("x-ratelimit-reset", "10")])).unwrap();
        let now_ms = Utc::now().timestamp_millis() as u64;
        let after = info.reset_after(now_ms).unwrap();
        assert!(after > Duration::from_secs(9) && after <= Duration::from_secs(10), "{after:?}");
    }
}
