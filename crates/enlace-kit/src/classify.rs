//! Turning vendors' answers into [`ConnectorError`] classes.
//!
//! A connector never sleeps or retries: it says what kind of failure it saw, with the wait
//! the vendor asked for, and the runner decides. The functions here cover what most HTTP
//! APIs do; a connector adds its vendor's quirks on top (see [`check_ok_field`] for "200
//! bodies that are really errors").

use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::Value;

use enlace_core::ConnectorError;
use enlace_core::http::{HeaderMap, HttpResponse, StatusCode, TransportError};

use crate::ratelimit::rate_info_at;

/// The longest wait a vendor may ask for; anything longer is taken as this (a day).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// How much of a text body an error message quotes.
const MESSAGE_CHARS: usize = 300;

/// Passes 1xx, 2xx and 3xx responses through and classifies the rest:
/// 429 is [`ConnectorError::RateLimited`] (with `Retry-After`, or the reset of the rate
/// limit headers read by [`crate::rate_info`]), 408, 425 and 5xx are
/// [`ConnectorError::Transient`], 401 and 403 are [`ConnectorError::Auth`], any other 4xx is
/// [`ConnectorError::Permanent`] with the status and the vendor's own message.
pub fn classify(resp: HttpResponse) -> Result<HttpResponse, ConnectorError> {
    let status = resp.status;
    if status.as_u16() < 400 {
        return Ok(resp);
    }
    let message = status_message(&resp);
    let code = status.as_u16();
    Err(match code {
        429 => {
            let now = Utc::now();
            let now_ms = now.timestamp_millis().max(0) as u64;
            let retry_after = rate_info_at(&resp.headers, now).and_then(|r| r.retry_after.or_else(|| r.reset_after(now_ms)));
            ConnectorError::RateLimited { retry_after, message }
        }
        408 | 425 | 500..=599 => ConnectorError::Transient { message, retry_after: retry_after(&resp.headers) },
        401 | 403 => ConnectorError::Auth { message },
        _ => ConnectorError::Permanent { message, status: Some(code) },
    })
}

/// Meta's Graph API errors (`{"error": {"message", "type", "code", "error_subcode",
/// "fbtrace_id"}}`, any status) classified by their code, as Meta's "Handling Errors" guide
/// lists them: 190 and 102 (the token is invalid or expired), 10 and 200-299 (a permission
/// is missing) are `Auth`; 4, 17, 32, 613 and 80000-80014 (application, user, page and
/// business use case limits) are `RateLimited`, waiting for the usage headers'
/// `estimated_time_to_regain_access` or `Retry-After`; 1 and 2 (unknown, service) are
/// `Transient`; 100 (an invalid parameter) is `BadInput` on `field` when the action knows
/// which of its fields it is about; anything else goes to [`classify`].
pub fn graph_error(resp: HttpResponse, field: Option<&str>) -> ConnectorError {
    let body = json_body(&resp).unwrap_or(Value::Null);
    let err = body.get("error");
    let code = err.and_then(|e| e.get("code")).and_then(Value::as_i64);
    let sub = err.and_then(|e| e.get("error_subcode")).and_then(Value::as_i64);
    let text = err.and_then(|e| e.get("error_user_msg").or_else(|| e.get("message"))).and_then(Value::as_str).unwrap_or("").trim();
    let trace = err.and_then(|e| e.get("fbtrace_id")).and_then(Value::as_str).map(|t| format!(", fbtrace_id {t}")).unwrap_or_default();
    let said = |c: i64| match sub {
        Some(s) => format!("Graph API error {c}/{s}: {text}{trace}"),
        None => format!("Graph API error {c}: {text}{trace}"),
    };
    let Some(c) = code else {
        return match classify(resp) {
            Err(e) => e,
            Ok(r) => ConnectorError::permanent(format!("the Graph API answered HTTP {} without an error object", r.status.as_u16())),
        };
    };
    match c {
        190 | 102 => {
            ConnectorError::auth(format!("{}; the access token is invalid or expired: repair the connection with a new token", said(c)))
        }
        10 | 200..=299 => {
            ConnectorError::auth(format!("{}; the token lacks a permission this call needs: grant it and repair the connection", said(c)))
        }
        4 | 17 | 32 | 613 | 80000..=80014 => {
            let now = Utc::now();
            let now_ms = now.timestamp_millis().max(0) as u64;
            let retry_after = rate_info_at(&resp.headers, now).and_then(|r| r.retry_after.or_else(|| r.reset_after(now_ms)));
            ConnectorError::RateLimited { retry_after, message: said(c) }
        }
        1 | 2 => ConnectorError::Transient { message: said(c), retry_after: retry_after(&resp.headers) },
        100 if field.is_some() => ConnectorError::bad_input(field.unwrap_or_default(), said(c)),
        _ => match classify(resp) {
            Err(ConnectorError::Permanent { status, .. }) => ConnectorError::Permanent { message: said(c), status },
            Err(ConnectorError::Auth { .. }) => ConnectorError::auth(said(c)),
            Err(e) => e,
            Ok(_) => ConnectorError::permanent(said(c)),
        },
    }
}

/// `HTTP 404 Not Found: <the vendor's message>`.
fn status_message(resp: &HttpResponse) -> String {
    let head = status_line(resp.status);
    match vendor_message(resp) {
        Some(m) => format!("{head}: {m}"),
        None => head,
    }
}

fn status_line(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("HTTP {} {reason}", status.as_u16()),
        None => format!("HTTP {}", status.as_u16()),
    }
}

/// The vendor's own explanation of an error: from a JSON body (`message`, `error.message`,
/// `error_description`, `error` as a string, `errors[0].message`, `detail`, `title`), or the
/// first 300 characters of a text body.
pub fn vendor_message(resp: &HttpResponse) -> Option<String> {
    if let Some(body) = json_body(resp) {
        return json_message(&body).map(|m| truncate(m.trim(), MESSAGE_CHARS));
    }
    let text = std::str::from_utf8(&resp.body).ok()?;
    let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if collapsed.is_empty() { None } else { Some(truncate(&collapsed, MESSAGE_CHARS)) }
}

fn non_empty(v: Option<&Value>) -> Option<&str> {
    v.and_then(Value::as_str).filter(|s| !s.trim().is_empty())
}

fn json_message(body: &Value) -> Option<&str> {
    non_empty(body.get("message"))
        .or_else(|| non_empty(body.pointer("/error/message")))
        .or_else(|| non_empty(body.get("error_description")))
        .or_else(|| non_empty(body.get("error")))
        .or_else(|| non_empty(body.pointer("/errors/0/message")))
        .or_else(|| non_empty(body.pointer("/errors/0")))
        .or_else(|| non_empty(body.get("detail")))
        .or_else(|| non_empty(body.get("title")))
}

fn truncate(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_string(),
    }
}

/// The body parsed as JSON when the content type says JSON (`application/json`,
/// `application/*+json`), or when there is no content type or a plain-text one and the body
/// looks like a JSON object or array. `None` otherwise, and when it does not parse.
pub fn json_body(resp: &HttpResponse) -> Option<Value> {
    let content_type = resp.headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(|v| v.to_ascii_lowercase());
    let declared_json = content_type.as_deref().is_some_and(is_json_content_type);
    let sniffable = content_type.as_deref().is_none_or(|ct| ct.starts_with("text/plain"));
    if !declared_json {
        let first = resp.body.iter().find(|b| !b.is_ascii_whitespace());
        if !(sniffable && matches!(first, Some(b'{') | Some(b'['))) {
            return None;
        }
    }
    serde_json::from_slice(&resp.body).ok()
}

/// Whether a content type (lowercase) is JSON.
pub fn is_json_content_type(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json")) || essence == "text/json"
}

/// The wait a `Retry-After` header asks for: delta-seconds or an HTTP-date, capped at
/// [`MAX_RETRY_AFTER`]. A date in the past is a wait of zero.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(http::header::RETRY_AFTER)?.to_str().ok()?.trim();
    parse_retry_after(value, Utc::now())
}

pub(crate) fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| cap(Duration::from_secs_f64(secs.min(MAX_RETRY_AFTER.as_secs_f64()))));
    }
    let at = parse_http_date(value)?;
    Some(cap((at - now).to_std().unwrap_or(Duration::ZERO)))
}

/// An HTTP-date in any of the three forms of RFC 9110 (IMF-fixdate, RFC 850, asctime).
fn parse_http_date(value: &str) -> Option<DateTime<Utc>> {
    if let Ok(d) = DateTime::parse_from_rfc2822(value) {
        return Some(d.with_timezone(&Utc));
    }
    for format in ["%A, %d-%b-%y %H:%M:%S GMT", "%a %b %e %H:%M:%S %Y"] {
        if let Ok(d) = NaiveDateTime::parse_from_str(value, format) {
            return Some(d.and_utc());
        }
    }
    None
}

fn cap(d: Duration) -> Duration {
    d.min(MAX_RETRY_AFTER)
}

/// What a transport failure means for the runner. `idempotent` says whether repeating the
/// call is harmless (see `enlace_core::Action::idempotent_for`): then an unknown outcome may
/// be retried, and is [`ConnectorError::Transient`] instead of
/// [`ConnectorError::MaybeDelivered`].
pub fn transport_error(err: TransportError, idempotent: bool) -> ConnectorError {
    match err {
        TransportError::Connect(m) => ConnectorError::transient(format!("could not connect, nothing was sent: {m}")),
        TransportError::Timeout { after, sent: false } => {
            ConnectorError::transient(format!("no connection within {}, nothing was sent", enlace_core::duration::format_duration(after)))
        }
        TransportError::Timeout { after, sent: true } => {
            let waited = enlace_core::duration::format_duration(after);
            if idempotent {
                ConnectorError::transient(format!(
                    "the request was sent and no answer came within {waited}; it is idempotent, so sending it again is safe"
                ))
            } else {
                ConnectorError::MaybeDelivered {
                    message: format!("the request was sent and no answer came within {waited}; it may have been delivered"),
                }
            }
        }
        TransportError::Forbidden(m) => ConnectorError::bad_input("url", m),
        TransportError::InvalidUrl(m) => ConnectorError::bad_input("url", m),
        TransportError::TooLarge { limit } => ConnectorError::permanent(format!("the response is larger than {limit} bytes")),
        TransportError::DryRun => ConnectorError::permanent("dry run: nothing was sent"),
        TransportError::Other(m) if idempotent => ConnectorError::transient(m),
        TransportError::Other(m) => ConnectorError::MaybeDelivered { message: format!("{m}; the request may have been delivered") },
    }
}

/// For APIs that answer 200 with an error inside (Slack: `{"ok": false, "error":
/// "invalid_auth"}`): when `body[field]` is `false`, classifies `body[error_field]`.
/// `ratelimited` is rate limited; `invalid_auth`, `not_authed`, `token_revoked`,
/// `token_expired` and `account_inactive` are auth; anything else is permanent. A body
/// without the field, or with it `true`, is fine.
pub fn check_ok_field(body: &Value, field: &str, error_field: &str) -> Result<(), ConnectorError> {
    if body.get(field) != Some(&Value::Bool(false)) {
        return Ok(());
    }
    let code = body.get(error_field).and_then(Value::as_str).unwrap_or("unknown_error");
    let message = format!("the app answered `{field}: false` with `{code}`");
    Err(match code {
        "ratelimited" | "rate_limited" => ConnectorError::RateLimited { retry_after: None, message },
        "invalid_auth" | "not_authed" | "token_revoked" | "token_expired" | "account_inactive" => ConnectorError::Auth { message },
        _ => ConnectorError::Permanent { message, status: None },
    })
}

/// [`check_ok_field`] on a whole response, with a hook for the vendor's own error codes.
/// `vendor` sees each error code first (with the body, for details such as Slack's
/// `response_metadata.messages`) and may classify it (a code that names a field of the
/// input, say); a code it leaves (`None`) gets [`check_ok_field`]'s classes. A rate limit
/// carries the response's `Retry-After`. For the 2xx answers of APIs that report errors
/// inside the body; error statuses go through [`classify`] first.
pub fn check_ok_response(
    resp: &HttpResponse,
    body: &Value,
    field: &str,
    error_field: &str,
    vendor: impl Fn(&str, &Value) -> Option<ConnectorError>,
) -> Result<(), ConnectorError> {
    if body.get(field) != Some(&Value::Bool(false)) {
        return Ok(());
    }
    let code = body.get(error_field).and_then(Value::as_str).unwrap_or("unknown_error");
    if let Some(err) = vendor(code, body) {
        return Err(err);
    }
    match check_ok_field(body, field, error_field) {
        Err(ConnectorError::RateLimited { message, .. }) => {
            Err(ConnectorError::RateLimited { retry_after: retry_after(&resp.headers), message })
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use enlace_core::ErrorClass;
    use http::HeaderValue;
    use serde_json::json;

    fn resp(status: u16, headers: &[(&str, &str)], body: &str) -> HttpResponse {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        HttpResponse { status: StatusCode::from_u16(status).unwrap(), headers: map, body: Bytes::from(body.to_string()) }
    }

    #[test]
    fn every_status_class() {
        const JSON: (&str, &str) = ("content-type", "application/json");
        // (status, headers, body, expected class or None for ok, retry_after secs, message part, status kept)
        type Row<'a> = (u16, Vec<(&'a str, &'a str)>, &'a str, Option<ErrorClass>, Option<u64>, &'a str);
        let table: Vec<Row> = vec![
            (200, vec![], "{}", None, None, ""),
            (204, vec![], "", None, None, ""),
            (302, vec![("location", "/x")], "", None, None, ""),
            (429, vec![("retry-after", "7")], "", Some(ErrorClass::RateLimited), Some(7), "HTTP 429 Too Many Requests"),
            (429, vec![("x-ratelimit-reset", "12")], "", Some(ErrorClass::RateLimited), Some(12), "429"),
            (429, vec![("ratelimit-reset", "3")], "slow down", Some(ErrorClass::RateLimited), Some(3), "slow down"),
            (429, vec![], "", Some(ErrorClass::RateLimited), None, "429"),
            (408, vec![], "", Some(ErrorClass::Transient), None, "HTTP 408 Request Timeout"),
            (425, vec![], "", Some(ErrorClass::Transient), None, "425"),
            (500, vec![], "boom", Some(ErrorClass::Transient), None, "HTTP 500 Internal Server Error: boom"),
            (502, vec![], "", Some(ErrorClass::Transient), None, "502"),
            (503, vec![("retry-after", "30")], "", Some(ErrorClass::Transient), Some(30), "503"),
            (504, vec![], "", Some(ErrorClass::Transient), None, "504"),
            (599, vec![], "", Some(ErrorClass::Transient), None, "HTTP 599"),
            (401, vec![JSON], r#"{"message":"bad token"}"#, Some(ErrorClass::Auth), None, "HTTP 401 Unauthorized: bad token"),
            (403, vec![], "", Some(ErrorClass::Auth), None, "403"),
            (
                400,
                vec![JSON],
                r#"{"error":{"message":"email is invalid"}}"#,
                Some(ErrorClass::Permanent),
                None,
                "HTTP 400 Bad Request: email is invalid",
            ),
            (404, vec![], "", Some(ErrorClass::Permanent), None, "HTTP 404 Not Found"),
            (422, vec![JSON], r#"{"errors":[{"message":"name missing"}]}"#, Some(ErrorClass::Permanent), None, "name missing"),
            (409, vec![], "", Some(ErrorClass::Permanent), None, "409"),
        ];
        for (status, headers, body, class, wait, part) in table {
            let r = classify(resp(status, &headers, body));
            match class {
                None => assert_eq!(r.expect("passes").status.as_u16(), status),
                Some(class) => {
                    let err = r.expect_err("classified");
                    assert_eq!(err.class(), class, "status {status}: {err}");
                    assert_eq!(err.retry_after(), wait.map(Duration::from_secs), "status {status}");
                    assert!(err.message().contains(part), "status {status}: `{}` lacks `{part}`", err.message());
                    if class == ErrorClass::Permanent {
                        assert_eq!(err, ConnectorError::Permanent { message: err.message().to_string(), status: Some(status) });
                    }
                }
            }
        }
    }

    #[test]
    fn vendor_messages_from_each_json_shape_and_text() {
        let cases = [
            (json!({"message": "m1"}), "m1"),
            (json!({"error": {"message": "m2", "code": 3}}), "m2"),
            (json!({"error": "invalid_grant", "error_description": "m3"}), "m3"),
            (json!({"error": "m4"}), "m4"),
            (json!({"errors": [{"message": "m5"}, {"message": "other"}]}), "m5"),
            (json!({"detail": "m6", "title": "t"}), "m6"),
            (json!({"title": "m7"}), "m7"),
        ];
        for (body, want) in cases {
            let r = resp(400, &[("content-type", "application/problem+json")], &body.to_string());
            assert_eq!(vendor_message(&r).as_deref(), Some(want), "{body}");
        }
        // No known field: no message rather than a dump of the object.
        assert_eq!(vendor_message(&resp(400, &[("content-type", "application/json")], r#"{"x":1}"#)), None);
        let long = "é".repeat(400);
        let got = vendor_message(&resp(400, &[("content-type", "text/plain")], &long)).unwrap();
        assert_eq!(got.chars().count(), 301, "300 chars and an ellipsis");
        assert_eq!(vendor_message(&resp(500, &[], "  line one\n  line two ")).as_deref(), Some("line one line two"));
    }

    #[test]
    fn json_body_by_content_type_or_shape() {
        assert_eq!(json_body(&resp(200, &[("content-type", "application/json; charset=utf-8")], "3")), Some(json!(3)));
        assert_eq!(json_body(&resp(200, &[("content-type", "application/vnd.api+json")], r#"{"a":1}"#)), Some(json!({"a":1})));
        assert_eq!(json_body(&resp(200, &[], r#" [1,2]"#)), Some(json!([1, 2])));
        assert_eq!(json_body(&resp(200, &[("content-type", "text/plain")], r#"{"a":1}"#)), Some(json!({"a":1})));
        assert_eq!(json_body(&resp(200, &[("content-type", "text/html")], r#"{"a":1}"#)), None);
        assert_eq!(json_body(&resp(200, &[], "42")), None, "a bare number without a JSON content type stays text");
        assert_eq!(json_body(&resp(200, &[("content-type", "application/json")], "{oops")), None);
    }

    #[test]
    fn retry_after_as_seconds_and_as_http_date() {
        let now = DateTime::parse_from_rfc3339("2015-10-21T07:27:00Z").unwrap().with_timezone(&Utc);
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("1.5", now), Some(Duration::from_millis(1500)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now), Some(Duration::from_secs(60)));
        assert_eq!(parse_retry_after("Wednesday, 21-Oct-15 07:28:30 GMT", now), Some(Duration::from_secs(90)));
        assert_eq!(parse_retry_after("Wed Oct 21 07:29:00 2015", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now), Some(Duration::ZERO), "a past date: no wait");
        assert_eq!(parse_retry_after("99999999", now), Some(MAX_RETRY_AFTER), "absurd values are capped");
        assert_eq!(parse_retry_after("Fri, 01 Jan 2100 00:00:00 GMT", now), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
        // Through the header, with the real clock.
        assert_eq!(retry_after(&resp(429, &[("retry-after", "5")], "").headers), Some(Duration::from_secs(5)));
        let in_a_minute = (Utc::now() + chrono::Duration::seconds(61)).format("%a, %d %b %Y %H:%M:%S GMT").to_string();
        let got = retry_after(&resp(429, &[("retry-after", &in_a_minute)], "").headers).unwrap();
        assert!(got > Duration::from_secs(55) && got <= Duration::from_secs(61), "{got:?}");
    }

    #[test]
    fn transport_errors_by_class() {
        let t = Duration::from_secs(5);
        let table = [
            (TransportError::Connect("refused".into()), false, ErrorClass::Transient, "nothing was sent"),
            (TransportError::Timeout { after: t, sent: false }, false, ErrorClass::Transient, "nothing was sent"),
            (TransportError::Timeout { after: t, sent: true }, false, ErrorClass::MaybeDelivered, "no answer came within 5s"),
            (TransportError::Timeout { after: t, sent: true }, true, ErrorClass::Transient, "idempotent"),
            (TransportError::Forbidden("refused to call 10.0.0.1".into()), false, ErrorClass::BadInput, "10.0.0.1"),
            (TransportError::InvalidUrl("no host".into()), true, ErrorClass::BadInput, "no host"),
            (TransportError::TooLarge { limit: 10 }, true, ErrorClass::Permanent, "larger than 10 bytes"),
            (TransportError::DryRun, true, ErrorClass::Permanent, "dry run"),
            (TransportError::Other("reset".into()), false, ErrorClass::MaybeDelivered, "reset"),
            (TransportError::Other("reset".into()), true, ErrorClass::Transient, "reset"),
        ];
        for (err, idempotent, class, part) in table {
            let shown = format!("{err:?}");
            let got = transport_error(err, idempotent);
            assert_eq!(got.class(), class, "{shown} idempotent={idempotent}");
            assert!(got.message().contains(part), "{shown}: `{}` lacks `{part}`", got.message());
            if class == ErrorClass::BadInput {
                assert!(matches!(&got, ConnectorError::BadInput { path, .. } if path == "url"));
            }
        }
    }

    #[test]
    fn ok_field_errors() {
        assert_eq!(check_ok_field(&json!({"ok": true}), "ok", "error"), Ok(()));
        assert_eq!(check_ok_field(&json!({"data": 1}), "ok", "error"), Ok(()));
        let class = |code: &str| check_ok_field(&json!({"ok": false, "error": code}), "ok", "error").unwrap_err().class();
        assert_eq!(class("ratelimited"), ErrorClass::RateLimited);
        for code in ["invalid_auth", "not_authed", "token_revoked", "token_expired", "account_inactive"] {
            assert_eq!(class(code), ErrorClass::Auth, "{code}");
        }
        assert_eq!(class("channel_not_found"), ErrorClass::Permanent);
        let err = check_ok_field(&json!({"ok": false}), "ok", "error").unwrap_err();
        assert!(err.message().contains("unknown_error"), "{err}");
        let err = check_ok_field(&json!({"ok": false, "error": "channel_not_found"}), "ok", "error").unwrap_err();
        assert!(err.message().contains("channel_not_found"), "{err}");
    }

    #[test]
    fn ok_response_asks_the_vendor_first_and_keeps_retry_after() {
        let vendor = |code: &str, body: &Value| {
            (code == "channel_not_found").then(|| ConnectorError::bad_input("channel", format!("no such channel ({})", body["x"])))
        };
        let r = resp(200, &[("retry-after", "9")], "");
        let err = check_ok_response(&r, &json!({"ok": false, "error": "channel_not_found", "x": 1}), "ok", "error", vendor).unwrap_err();
        assert_eq!(err, ConnectorError::bad_input("channel", "no such channel (1)"));
        let err = check_ok_response(&r, &json!({"ok": false, "error": "ratelimited"}), "ok", "error", vendor).unwrap_err();
        assert_eq!(err.class(), ErrorClass::RateLimited);
        assert_eq!(err.retry_after(), Some(Duration::from_secs(9)));
        let err = check_ok_response(&r, &json!({"ok": false, "error": "invalid_auth"}), "ok", "error", vendor).unwrap_err();
        assert_eq!(err.class(), ErrorClass::Auth);
        let err = check_ok_response(&r, &json!({"ok": false, "error": "is_archived"}), "ok", "error", vendor).unwrap_err();
        assert_eq!(err.class(), ErrorClass::Permanent);
        assert_eq!(check_ok_response(&r, &json!({"ok": true}), "ok", "error", vendor), Ok(()));
    }
}
