//! Web activity: `GET /track.js`, the script a website includes, and `POST /track`, where it
//! records page views with their time on page for a known contact.
//!
//! No API token: the body carries a contact token (`enlace_runner::links::contact_token`,
//! signed with the installation's key; tracked email links bring it to the site), which is
//! the authority. The request's `Origin` and the page's own address must be one of the
//! configured origins (`ENLACE_TRACK_ORIGINS`; none configured: every request is refused),
//! and the answer carries CORS headers for that origin only. Bodies over 8 KiB are refused
//! before reading, and the endpoint takes at most [`TRACK_PER_SECOND`] requests a second
//! (429 beyond). A page view is `page_viewed {url, title, duration_ms, referrer}` on the
//! timeline, stored once per view id the script makes (a repeated beacon stores nothing).
//!
//! The script itself does nothing before the site calls `enlace.consent(true)`: no request,
//! no cookie, no storage (`web/track.js`).

use std::num::NonZeroU32;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use enlace_core::contacts::{ContactKey, ContactOp, WriteContext};
use enlace_runner::links::read_contact_token;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::Deserialize;
use serde_json::json;

use crate::AppState;
use crate::error::{ApiError, Code};

/// The largest body `/track` reads.
pub const MAX_TRACK_BYTES: usize = 8 * 1024;
/// Requests a second `/track` takes (the burst is twice that).
pub const TRACK_PER_SECOND: u32 = 50;

pub fn routes() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/track.js", get(script))
        .route("/track", axum::routing::post(track).options(preflight_route))
        .layer(DefaultBodyLimit::max(MAX_TRACK_BYTES))
}

pub(crate) fn limiter() -> Arc<DefaultDirectRateLimiter> {
    let per = NonZeroU32::new(TRACK_PER_SECOND).expect("non-zero");
    let burst = NonZeroU32::new(TRACK_PER_SECOND * 2).expect("non-zero");
    Arc::new(RateLimiter::direct(Quota::per_second(per).allow_burst(burst)))
}

async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
            (header::HeaderName::from_static("x-content-type-options"), "nosniff"),
        ],
        include_str!("../../../web/track.js"),
    )
        .into_response()
}

/// What the script sends.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PageView {
    token: String,
    /// The script's id of this page view (a random UUID kept in memory): a repeated beacon
    /// stores nothing twice.
    #[serde(default)]
    view: Option<String>,
    url: String,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    referrer: Option<String>,
    #[serde(default)]
    duration_ms: Option<u64>,
    /// The product the page shows (the page's `<meta name="enlace:product">`), for rules
    /// about products (the discount pop-up of `recipes/web-activity.yaml`).
    #[serde(default)]
    product: Option<String>,
}

/// `scheme://host[:port]` of an http(s) URL, lowercase (as a browser's `Origin` header has it).
pub(crate) fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let default_port = if scheme == "https" { ":443" } else { ":80" };
    let host = host.strip_suffix(default_port).unwrap_or(host);
    if host.is_empty() {
        return None;
    }
    Some(format!("{scheme}://{}", host.to_ascii_lowercase()))
}

fn allowed(s: &AppState, origin: &str) -> bool {
    s.shared.config.track_origins.iter().any(|o| o.trim_end_matches('/').eq_ignore_ascii_case(origin))
}

pub(crate) fn with_cors(mut r: Response, origin: Option<&str>) -> Response {
    if let Some(v) = origin.and_then(|o| HeaderValue::from_str(o).ok()) {
        let h = r.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    r
}

fn request_origin(headers: &HeaderMap) -> Option<String> {
    headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()).map(|o| o.trim_end_matches('/').to_ascii_lowercase())
}

fn refused(message: String) -> Response {
    ApiError::new(Code::InvalidRequest, message).into_response()
}

pub(crate) async fn preflight_route(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let origin = request_origin(&headers);
    match origin.as_deref() {
        Some(o) if allowed(&s, o) => {
            let mut r = with_cors(StatusCode::NO_CONTENT.into_response(), Some(o));
            let h = r.headers_mut();
            h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("POST"));
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("content-type"));
            h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
            r
        }
        _ => StatusCode::FORBIDDEN.into_response(),
    }
}

/// The checks every request from a site's pages passes (`/track`, `/web/messages`): the rate
/// limit, then an `Origin` among the configured sites. The origin, or the answer refusing.
// The refusal is the answer itself, handed back as is once per request: its size does not matter.
#[allow(clippy::result_large_err)]
pub(crate) fn site_gate(s: &AppState, headers: &HeaderMap) -> Result<String, Response> {
    if s.shared.track_limit.check().is_err() {
        let mut r = ApiError::new(Code::RateLimited, "too many tracking requests; try again in a second").into_response();
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return Err(r);
    }
    let Some(origin) = request_origin(headers) else {
        return Err(refused(
            "no Origin header: /track takes requests from the pages of the configured sites (ENLACE_TRACK_ORIGINS)".into(),
        ));
    };
    if !allowed(s, &origin) {
        let mut r = ApiError::new(
            Code::InvalidRequest,
            format!("the origin `{origin}` may not send tracking data; add it to ENLACE_TRACK_ORIGINS (comma-separated, like https://shop.example.com)"),
        )
        .into_response();
        *r.status_mut() = StatusCode::FORBIDDEN;
        return Err(r);
    }
    Ok(origin)
}

async fn track(State(s): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let origin = match site_gate(&s, &headers) {
        Ok(o) => o,
        Err(r) => return r,
    };
    let cors = Some(origin.as_str());
    let view: PageView = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return with_cors(ApiError::new(Code::InvalidJson, format!("the body is not a page view: {e}")).into_response(), cors),
    };
    if origin_of(&view.url).as_deref() != Some(origin.as_str()) {
        return with_cors(ApiError::invalid("url", "the page's address is not on the origin that sent it").into_response(), cors);
    }
    let Some(contact_id) = read_contact_token(s.runner.store(), &view.token) else {
        return with_cors(
            ApiError::invalid("token", "the contact token is damaged or was not made by this installation").into_response(),
            cors,
        );
    };
    let mut data = serde_json::Map::new();
    data.insert("url".into(), json!(view.url));
    data.insert("title".into(), json!(view.title.unwrap_or_default()));
    data.insert("duration_ms".into(), json!(view.duration_ms.unwrap_or(0).min(24 * 3_600_000)));
    data.insert("referrer".into(), json!(view.referrer.unwrap_or_default()));
    if let Some(p) = view.product.map(|p| p.trim().chars().take(200).collect::<String>()).filter(|p| !p.is_empty()) {
        data.insert("product".into(), json!(p));
    }
    let ctx = WriteContext { op_key: view.view.filter(|v| !v.is_empty() && v.len() <= 64).map(|v| format!("track:{v}")), run_id: None };
    let op = ContactOp::RecordEvent { key: ContactKey::Id(contact_id), kind: "page_viewed".into(), data: data.into(), at: None };
    match s.runner.contacts().apply(ctx, op).await {
        Ok(_) => with_cors(StatusCode::NO_CONTENT.into_response(), cors),
        Err(enlace_runner::RunnerError::NotFound(_)) => {
            with_cors(ApiError::invalid("token", "the contact of this token no longer exists").into_response(), cors)
        }
        Err(e) => with_cors(ApiError::from(e).into_response(), cors),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_of_page_addresses() {
        assert_eq!(origin_of("https://Shop.Example.com/pricing?x=1").as_deref(), Some("https://shop.example.com"));
        assert_eq!(origin_of("http://127.0.0.1:8080/a").as_deref(), Some("http://127.0.0.1:8080"));
        assert_eq!(origin_of("https://shop.example.com:443").as_deref(), Some("https://shop.example.com"));
        assert_eq!(origin_of("data:text/html,hi"), None);
        assert_eq!(origin_of("nonsense"), None);
    }
}
