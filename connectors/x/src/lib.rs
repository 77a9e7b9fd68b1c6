//! The `x` app: posts on X (formerly Twitter) with text and media, reads the account's
//! recent posts, and starts recipes on new mentions, through X API v2 as X's own API
//! description says (`../shared/vendor-specs/x/openapi.json`, checked with Prism by
//! tests/e2e/contracts.rs).
//!
//! - [`actions::PostTweet`] (`x.post_tweet`): each media file is fetched through the
//!   SSRF-guarded transport, uploaded (`POST /2/media/upload` for a picture; for a video or
//!   a GIF the chunked `initialize`, `append`, `finalize`, then `GET /2/media/upload` while X
//!   says it is processing), given its alt text (`POST /2/media/metadata`), then the post
//!   is made with the media ids (`POST /2/tweets`). X takes no idempotency key: a post
//!   request that left without an answer is "maybe delivered", never sent again blindly.
//! - [`actions::RecentPosts`] (`x.recent_posts`): `GET /2/users/me`, then the account's
//!   newest posts (`GET /2/users/{id}/tweets`), their `t.co` links written back as the
//!   addresses they stand for, so the social scheduler can tell whether a post that timed
//!   out is there.
//! - [`trigger::NewMention`] (`x.new_mention`): `GET /2/users/{id}/mentions` since the
//!   newest mention seen.
//!
//! Errors: 429 waits for `Retry-After`, or else X's `x-rate-limit-reset` (epoch seconds);
//! 401 is the connection's credentials; 403 (a duplicate post, a reply the account may not
//! make, a missing scope) is a refusal of this request with X's `detail`; 400 is bad input;
//! 5xx is a passing fault. What the app does for end users is in this folder's README.md.

pub mod actions;
pub mod trigger;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderValue;
use http::header::CONTENT_TYPE;
use serde_json::Value;

use enlace_core::http::{HttpRequest, HttpResponse, Method};
use enlace_core::{ActionContext, Connector, ConnectorError, OAuth2App, RateLimit};

/// The app id recipes use (`app: x`).
pub const APP_ID: &str = "x";

/// X API v2.
pub const API_BASE: &str = "https://api.x.com";

/// The `x` connector, talking to X.
pub fn connector() -> Connector {
    connector_at(API_BASE)
}

/// The connector with another API base address, for tests only (a fake X or Prism on
/// 127.0.0.1); the installation always uses [`connector`].
pub fn connector_at(api_base: &str) -> Connector {
    let base: Arc<str> = Arc::from(api_base.trim_end_matches('/'));
    Connector::builder(
        APP_ID,
        "X",
        "Post to X (formerly Twitter) as the signed-in account, with pictures or a video, read its recent posts, and start recipes on new mentions of an account.",
    )
    // Version 2: `recent_posts` added, `new_mention` items typed.
    .version("2")
    // X's OAuth 2.0 authorization code flow with PKCE ("OAuth 2.0 Making requests on behalf
    // of users" in X's developer documentation); `offline.access` gives a refresh token,
    // `media.write` lets the app upload media.
    .oauth2(OAuth2App {
        authorize_url: "https://x.com/i/oauth2/authorize".into(),
        token_url: "https://api.x.com/2/oauth2/token".into(),
        scopes: vec!["tweet.read".into(), "tweet.write".into(), "users.read".into(), "media.write".into(), "offline.access".into()],
        authorize_params: Default::default(),
        client_auth: Default::default(),
    })
    // POST /2/tweets: 100 requests per 15 minutes per user (X's rate limit table). Each
    // answer's `x-rate-limit-*` headers feed the connection's budget.
    .rate_limit(RateLimit { calls: 100, per: Duration::from_secs(15 * 60) })
    .action(actions::PostTweet { base: base.clone() })
    .action(actions::RecentPosts { base: base.clone() })
    .polling_trigger(trigger::NewMention { base })
    .build()
}

/// A request to X with the connection's token and the step's timeout; `body` as JSON.
pub(crate) fn request(
    base: &str,
    ctx: &ActionContext,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Result<HttpRequest, ConnectorError> {
    let mut req = HttpRequest::new(method, format!("{base}{path}"));
    if let Some(b) = body {
        req.headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        req.body = Bytes::from(serde_json::to_vec(b).unwrap_or_default());
    }
    enlace_kit::apply_credentials(&mut req, &ctx.credentials)?;
    if !ctx.timeout.is_zero() {
        req.timeout = Some(ctx.timeout);
    }
    Ok(req)
}

/// X's own words about an error: the first of its `errors`' `message` (the most precise),
/// else a problem's `detail`, else its `title`, else what the kit finds.
pub fn x_message(resp: &HttpResponse) -> String {
    let body = enlace_kit::json_body(resp).unwrap_or(Value::Null);
    let s = |v: &Value| v.as_str().map(str::trim).filter(|s| !s.is_empty()).map(str::to_string);
    s(&body["errors"][0]["message"])
        .or_else(|| s(&body["errors"][0]["detail"]))
        .or_else(|| s(&body["detail"]))
        .or_else(|| s(&body["title"]))
        .or_else(|| enlace_kit::vendor_message(resp))
        .unwrap_or_else(|| "no message".into())
}

/// Passes answers below 400 through and classifies the rest as X means them: 403 is a
/// refusal of this request (a duplicate post, a reply the account may not make, a scope the
/// connection lacks), with X's `detail`; 400 is bad input on `field`; 429 waits for
/// `Retry-After` or `x-rate-limit-reset`; 401 (credentials), 5xx (passing) and the rest as
/// the kit classifies them.
pub fn checked(resp: HttpResponse, field: &str) -> Result<HttpResponse, ConnectorError> {
    let code = resp.status.as_u16();
    match code {
        0..400 => Ok(resp),
        403 => Err(ConnectorError::Permanent { message: format!("X refused it (HTTP 403): {}", x_message(&resp)), status: Some(403) }),
        400 => Err(ConnectorError::bad_input(field, format!("X refused it (HTTP 400): {}", x_message(&resp)))),
        _ => enlace_kit::classify(resp),
    }
}

/// The JSON of an answer.
pub(crate) fn json_of(resp: &HttpResponse) -> Result<Value, ConnectorError> {
    serde_json::from_slice(&resp.body)
        .map_err(|e| ConnectorError::permanent(format!("X answered something that is not JSON (HTTP {}): {e}", resp.status.as_u16())))
}

/// Whether `id` is one of X's numeric ids (`^[0-9]{1,19}$`).
pub fn is_id(id: &str) -> bool {
    (1..=19).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_digit())
}

/// `field` checked as one of X's numeric ids.
pub(crate) fn id_field(field: &str, id: &str) -> Result<String, ConnectorError> {
    let t = id.trim();
    if is_id(t) {
        Ok(t.to_string())
    } else {
        Err(ConnectorError::bad_input(field, format!("`{id}` is not an X id: X's ids are 1 to 19 digits, like `1346889436626259968`")))
    }
}

#[cfg(test)]
mod tests;
