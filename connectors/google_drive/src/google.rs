//! Google's answers turned into error classes, and what the actions share.
//!
//! Google reports errors as `{"error": {"code": 403, "message": "...", "errors": [{"reason":
//! "userRateLimitExceeded", ...}], "status": "PERMISSION_DENIED"}}`. The status alone is not
//! enough: Drive answers rate limits with 403 as well as 429, and most other 403s (no write
//! access to the folder, storage full) are not about the credentials, so refreshing the token
//! would not help. The reason decides.

use serde_json::Value;

use enlace_core::http::{HttpRequest, HttpResponse};
use enlace_core::{ConnectorError, Credentials};

/// The media type of a Drive folder.
pub const FOLDER_MIME: &str = "application/vnd.google-apps.folder";

/// The `appProperties` key under which the actions store the step's idempotency key, so that
/// after an unknown outcome the file can be looked for before replaying:
/// `q = appProperties has { key='enlace_idempotency_key' and value='<key>' }`.
pub const IDEMPOTENCY_PROPERTY: &str = "enlace_idempotency_key";

/// Drive's limit on one app property: key and value together, in bytes (UTF-8).
const APP_PROPERTY_BYTES: usize = 124;

/// Reasons that mean "slow down" (Drive's "Resolve errors" guide: 403 `userRateLimitExceeded`,
/// 403 `rateLimitExceeded`, 403 `sharingRateLimitExceeded`, 429 `rateLimitExceeded`), plus
/// the `ErrorInfo` reason newer Google front ends send.
const RATE_REASONS: &[&str] = &[
    "userRateLimitExceeded",
    "rateLimitExceeded",
    "sharingRateLimitExceeded",
    "dailyLimitExceeded",
    "quotaExceeded",
    "RATE_LIMIT_EXCEEDED",
];

/// Reasons of a 403 that mean the token lacks a scope: the connection must be made again
/// with the Drive scope granted.
const SCOPE_REASONS: &[&str] = &["insufficientPermissions", "ACCESS_TOKEN_SCOPE_INSUFFICIENT", "authError"];

/// What a 404 means for a request: the field of the step that named the missing thing.
#[derive(Debug, Clone, Copy)]
pub struct NotFound {
    pub field: &'static str,
    pub hint: &'static str,
}

/// The first reason Google gives: `error.errors[].reason`, else an `ErrorInfo` detail's.
pub fn reason(body: &Value) -> Option<String> {
    let from_errors = body
        .pointer("/error/errors")
        .and_then(Value::as_array)
        .and_then(|list| list.iter().find_map(|e| e.get("reason").and_then(Value::as_str).filter(|r| !r.is_empty()).map(str::to_string)));
    from_errors.or_else(|| {
        body.pointer("/error/details").and_then(Value::as_array).and_then(|list| {
            list.iter().find_map(|d| d.get("reason").and_then(Value::as_str).filter(|r| !r.is_empty()).map(str::to_string))
        })
    })
}

/// `Google Drive answered HTTP 403 Forbidden: User rate limit exceeded. (userRateLimitExceeded)`.
fn message(resp: &HttpResponse, reason: Option<&str>) -> String {
    let status = match resp.status.canonical_reason() {
        Some(r) => format!("HTTP {} {r}", resp.status.as_u16()),
        None => format!("HTTP {}", resp.status.as_u16()),
    };
    let mut out = format!("Google Drive answered {status}");
    if let Some(m) = enlace_kit::vendor_message(resp) {
        out.push_str(": ");
        out.push_str(&m);
    }
    if let Some(r) = reason {
        out.push_str(&format!(" ({r})"));
    }
    out
}

/// Passes 1xx-3xx answers through and classifies the rest (see the module docs). A 404 is
/// [`ConnectorError::BadInput`] on `not_found.field` when given (the folder a step named
/// does not exist), otherwise permanent.
pub fn check(resp: HttpResponse, not_found: Option<NotFound>) -> Result<HttpResponse, ConnectorError> {
    let code = resp.status.as_u16();
    if code < 400 {
        return Ok(resp);
    }
    let reason = enlace_kit::json_body(&resp).as_ref().and_then(reason);
    let reason = reason.as_deref();
    let msg = message(&resp, reason);
    let rate_reason = reason.is_some_and(|r| RATE_REASONS.contains(&r));
    Err(match code {
        429 => ConnectorError::RateLimited { retry_after: enlace_kit::retry_after(&resp.headers), message: msg },
        403 if rate_reason => ConnectorError::RateLimited { retry_after: enlace_kit::retry_after(&resp.headers), message: msg },
        401 => ConnectorError::auth(msg),
        403 if reason.is_some_and(|r| SCOPE_REASONS.contains(&r)) => ConnectorError::auth(format!(
            "{msg}; connect Google Drive again and allow access to Drive (the https://www.googleapis.com/auth/drive scope)"
        )),
        404 => match not_found {
            Some(nf) => ConnectorError::bad_input(nf.field, format!("{msg}; {}", nf.hint)),
            None => ConnectorError::Permanent { message: msg, status: Some(code) },
        },
        408 | 425 | 500..=599 => ConnectorError::Transient { message: msg, retry_after: enlace_kit::retry_after(&resp.headers) },
        // Other 403s: no write access to the folder, storage quota exceeded, a domain policy.
        // The token is fine; a refresh would not help.
        _ => ConnectorError::Permanent { message: msg, status: Some(code) },
    })
}

/// The body as a JSON object, or a sentence saying what came instead.
pub fn json_object(resp: &HttpResponse) -> Result<serde_json::Map<String, Value>, String> {
    match enlace_kit::json_body(resp) {
        Some(Value::Object(map)) => Ok(map),
        Some(other) => Err(format!("{} in JSON instead of an object", kind(&other))),
        None => Err(match enlace_kit::vendor_message(resp) {
            Some(text) => format!("a body that is not JSON ({text})"),
            None => "an empty body".to_string(),
        }),
    }
}

/// What a JSON value is, with its article (`an object`).
pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A string field of a Drive resource.
pub(crate) fn text(map: &serde_json::Map<String, Value>, key: &str) -> Option<String> {
    map.get(key).and_then(Value::as_str).map(str::to_string)
}

/// Drive sends 64-bit numbers (`size`) as strings.
pub(crate) fn int64(map: &serde_json::Map<String, Value>, key: &str) -> Option<u64> {
    match map.get(key)? {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

/// The value stored under [`IDEMPOTENCY_PROPERTY`]: the key itself, or its SHA-256 in hex
/// when key and value together would pass Drive's 124 bytes.
pub fn idempotency_property(idempotency_key: &str) -> String {
    if IDEMPOTENCY_PROPERTY.len() + idempotency_key.len() <= APP_PROPERTY_BYTES {
        idempotency_key.to_string()
    } else {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(idempotency_key.as_bytes()))
    }
}

/// Refuses a step without a Google Drive connection before anything is sent.
pub(crate) fn require_connection(credentials: &Credentials) -> Result<(), ConnectorError> {
    if matches!(credentials, Credentials::None) {
        return Err(ConnectorError::auth(
            "this step has no Google Drive connection; connect Google Drive (an oauth2 connection) and name it in the step's `connection`",
        ));
    }
    Ok(())
}

/// `base + path` with the query parameters, each encoded.
pub(crate) fn url(base: &str, path: &str, query: &[(&str, &str)]) -> Result<String, ConnectorError> {
    let raw = format!("{}{path}", base.trim_end_matches('/'));
    let url = enlace_kit::Url::parse_with_params(&raw, query)
        .map_err(|e| ConnectorError::permanent(format!("the Google Drive address `{raw}` is not a valid URL: {e}")))?;
    Ok(url.to_string())
}

/// A request with the connection's token and the step's timeout.
pub(crate) fn authorized(
    mut request: HttpRequest,
    credentials: &Credentials,
    timeout: std::time::Duration,
) -> Result<HttpRequest, ConnectorError> {
    require_connection(credentials)?;
    if !timeout.is_zero() {
        request.timeout = Some(timeout);
    }
    enlace_kit::apply_credentials(&mut request, credentials)?;
    Ok(request)
}
