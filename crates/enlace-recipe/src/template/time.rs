//! Times and durations for the `now` and `date` helpers.

use std::fmt::Write as _;

use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, SecondsFormat, TimeDelta, Utc};
use chrono_tz::Tz;
use serde_json::Value;

/// "Now" for a render: `run.now` when the data has it (the virtual clock of dry runs and
/// tests), else the system clock.
pub(crate) fn now(root: &Value) -> Result<DateTime<FixedOffset>, String> {
    match root.get("run").and_then(|r| r.get("now")) {
        None | Some(Value::Null) => {
            let t = Utc::now();
            Ok(DateTime::<Utc>::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t).fixed_offset())
        }
        Some(Value::String(s)) => DateTime::parse_from_rfc3339(s.trim()).map_err(|_| format!("`run.now` is not an RFC 3339 time: {s:?}")),
        Some(other) => Err(format!("`run.now` must be an RFC 3339 string, got {}", super::helpers::kind(other))),
    }
}

/// Reads a time: an RFC 3339 string, `"now"`, unix seconds (a number or a string of
/// digits), a date (`2024-05-01`, midnight UTC) or a date and time without offset (UTC).
pub(crate) fn parse_time(v: &Value, root: &Value) -> Result<DateTime<FixedOffset>, String> {
    match v {
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                from_unix_millis(i.checked_mul(1000), &n.to_string())
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                from_unix_millis(Some((f * 1000.0).round() as i64).filter(|_| f.is_finite()), &n.to_string())
            }
        }
        Value::String(s) => {
            let s = s.trim();
            if s.eq_ignore_ascii_case("now") {
                return now(root);
            }
            if let Ok(t) = DateTime::parse_from_rfc3339(s) {
                return Ok(t);
            }
            if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
                return from_unix_millis(s.parse::<i64>().ok().and_then(|i| i.checked_mul(1000)), s);
            }
            for f in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"] {
                if let Ok(t) = NaiveDateTime::parse_from_str(s, f) {
                    return Ok(t.and_utc().fixed_offset());
                }
            }
            if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
                return Ok(d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc().fixed_offset());
            }
            Err(format!("{s:?} is not a time; give an RFC 3339 time (2024-05-01T09:30:00Z), a date (2024-05-01), unix seconds or \"now\""))
        }
        other => Err(format!("expected a time, got {}", super::helpers::kind(other))),
    }
}

fn from_unix_millis(ms: Option<i64>, shown: &str) -> Result<DateTime<FixedOffset>, String> {
    ms.and_then(DateTime::<Utc>::from_timestamp_millis)
        .map(|t| t.fixed_offset())
        .ok_or_else(|| format!("{shown} is out of range for unix seconds"))
}

/// Parses a duration: `30s`, `15m`, `2h`, `3d`, `1w`, `500ms`, combinations such as
/// `1h30m`, with an optional leading `-` or `+`.
pub(crate) fn parse_duration(s: &str) -> Result<TimeDelta, String> {
    let bad = || format!("{s:?} is not a duration; write a number and a unit (ms, s, m, h, d, w) such as \"2d\", \"-3h\" or \"1h30m\"");
    let t = s.trim();
    let (negative, mut rest) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    rest = rest.trim_start();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total_ms: i64 = 0;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad());
        }
        let n: i64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = rest[digits..].trim_start();
        let unit_len = rest.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(rest.len());
        let unit_ms: i64 = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 604_800_000,
            _ => return Err(bad()),
        };
        rest = rest[unit_len..].trim_start();
        total_ms = n.checked_mul(unit_ms).and_then(|v| total_ms.checked_add(v)).ok_or_else(bad)?;
    }
    let ms = if negative { -total_ms } else { total_ms };
    TimeDelta::try_milliseconds(ms).ok_or_else(bad)
}

/// Parses an IANA time zone name (`Europe/London`, `UTC`).
pub(crate) fn parse_tz(s: &str) -> Result<Tz, String> {
    s.trim().parse::<Tz>().map_err(|_| format!("unknown time zone {s:?}; use an IANA name such as \"Europe/London\" or \"UTC\""))
}

/// An output format: RFC 3339 (the default), unix seconds or milliseconds (numbers), or a
/// strftime pattern.
#[derive(Debug)]
pub(crate) enum Format {
    Rfc3339,
    Unix,
    UnixMs,
    Pattern(Vec<Item<'static>>),
}

pub(crate) fn parse_format(s: &str) -> Result<Format, String> {
    match s {
        "" | "rfc3339" | "RFC3339" => Ok(Format::Rfc3339),
        "unix" => Ok(Format::Unix),
        "unix_ms" => Ok(Format::UnixMs),
        _ => StrftimeItems::new(s)
            .parse_to_owned()
            .map(Format::Pattern)
            .map_err(|_| format!("{s:?} is not a valid date format; use strftime fields such as \"%Y-%m-%d %H:%M\", or \"unix\"")),
    }
}

pub(crate) fn format_time(t: &DateTime<FixedOffset>, format: &Format) -> Result<Value, String> {
    match format {
        Format::Rfc3339 => Ok(Value::String(t.to_rfc3339_opts(SecondsFormat::AutoSi, true))),
        Format::Unix => Ok(Value::from(t.timestamp())),
        Format::UnixMs => Ok(Value::from(t.timestamp_millis())),
        Format::Pattern(items) => {
            let mut out = String::new();
            write!(out, "{}", t.format_with_items(items.iter()))
                .map_err(|_| "the date format cannot be applied to this time".to_string())?;
            Ok(Value::String(out))
        }
    }
}

/// The shared part of `now` and `date`: add a duration, convert to a zone, format.
pub(crate) fn transform(t: DateTime<FixedOffset>, add: Option<&str>, tz: Option<&str>, format: Option<&str>) -> Result<Value, String> {
    let mut t = t;
    if let Some(a) = add {
        let d = parse_duration(a)?;
        t = t.checked_add_signed(d).ok_or_else(|| format!("adding {a:?} goes out of the supported range of dates"))?;
    }
    if let Some(z) = tz {
        let zone = parse_tz(z)?;
        t = t.with_timezone(&zone).fixed_offset();
    }
    let format = parse_format(format.unwrap_or(""))?;
    format_time(&t, &format)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2d").unwrap(), TimeDelta::days(2));
        assert_eq!(parse_duration("-3h").unwrap(), TimeDelta::hours(-3));
        assert_eq!(parse_duration("1w").unwrap(), TimeDelta::weeks(1));
        assert_eq!(parse_duration("1h30m").unwrap(), TimeDelta::minutes(90));
        assert_eq!(parse_duration("500ms").unwrap(), TimeDelta::milliseconds(500));
        assert_eq!(parse_duration("+15 m").unwrap(), TimeDelta::minutes(15));
        for bad in ["", "2", "d", "2x", "2 days", "-", "1.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn times() {
        let root = serde_json::json!({});
        let t = parse_time(&Value::from(0), &root).unwrap();
        assert_eq!(t.to_rfc3339(), "1970-01-01T00:00:00+00:00");
        let t = parse_time(&Value::from("2024-05-01"), &root).unwrap();
        assert_eq!(t.to_rfc3339(), "2024-05-01T00:00:00+00:00");
        let t = parse_time(&Value::from("2024-05-01 10:30:00"), &root).unwrap();
        assert_eq!(t.to_rfc3339(), "2024-05-01T10:30:00+00:00");
        let t = parse_time(&Value::from("1714559400"), &root).unwrap();
        assert_eq!(t.to_rfc3339(), "2024-05-01T10:30:00+00:00");
        assert!(parse_time(&Value::from("yesterday"), &root).is_err());
        assert!(parse_time(&Value::Bool(true), &root).is_err());
    }

    #[test]
    fn formats() {
        assert!(parse_format("%Y-%m-%d").is_ok());
        assert!(parse_format("%Q").is_err());
    }
}
