//! Durations as recipes write them: `30s`, `15m`, `2h`, `3d`, `1w`, and `500ms`.
//! Compound forms (`1h30m`) are accepted too.

use std::time::Duration;

/// Parses a duration. The error names what is wrong and shows the accepted forms.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration; write a number and a unit, like `30s`, `15m`, `2h`, `3d` or `1w`".into());
    }
    let mut total: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 {
            return Err(format!("`{text}` is not a duration; write a number and a unit, like `30s`, `15m`, `2h`, `3d` or `1w`"));
        }
        let n: u128 = rest[..digits].parse().map_err(|_| format!("`{text}`: number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(|b| b.is_ascii_alphabetic()).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let ms: u128 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            "" => return Err(format!("`{text}` has no unit; add one of ms, s, m, h, d, w (for example `{n}s`)")),
            other => return Err(format!("`{text}`: unknown unit `{other}`; use one of ms, s, m, h, d, w")),
        };
        total = total
            .checked_add(n.checked_mul(ms).ok_or_else(|| format!("`{text}` is too long"))?)
            .ok_or_else(|| format!("`{text}` is too long"))?;
    }
    if total > u64::MAX as u128 {
        return Err(format!("`{text}` is too long"));
    }
    Ok(Duration::from_millis(total as u64))
}

/// Formats a duration in the largest exact units (`90s` becomes `1m30s`).
pub fn format_duration(d: Duration) -> String {
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [("w", 604_800_000u128), ("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)] {
        if ms >= size {
            out.push_str(&format!("{}{}", ms / size, unit));
            ms %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_duration("3d").unwrap(), Duration::from_secs(3 * 86400));
        assert_eq!(parse_duration("1w").unwrap(), Duration::from_secs(7 * 86400));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
    }

    #[test]
    fn rejects_with_a_reason() {
        assert!(parse_duration("").unwrap_err().contains("empty"));
        assert!(parse_duration("10").unwrap_err().contains("no unit"));
        assert!(parse_duration("3y").unwrap_err().contains("unknown unit `y`"));
        assert!(parse_duration("soon").unwrap_err().contains("not a duration"));
    }

    #[test]
    fn formats_back() {
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(format_duration(Duration::from_secs(86400 * 8)), "1w1d");
        assert_eq!(format_duration(parse_duration("2h").unwrap()), "2h");
    }
}
