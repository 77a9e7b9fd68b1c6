//! Webhook ingress: `POST /hooks/{path}`. The event is answered 202 only after it is stored
//! durably; a bad signature, an oversized body or malformed JSON starts nothing.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, OriginalUri, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use enlace_core::{ErrorClass, Extensions, InboundContext, InboundRequest};
use enlace_recipe::model::{Respond, WebhookConfig};
use enlace_recipe::validate::MAX_MAX_BODY;
use enlace_runner::{Current, Incoming};
use enlace_store::RunStatus;
use governor::{DefaultDirectRateLimiter, Quota};
use hmac::{Hmac, Mac};
use serde_json::{Map, Value, json};
use sha2::Sha256;

use crate::error::{ApiError, ApiResult, Code};
use crate::{AppState, SECRET_TTL};

pub fn routes() -> axum::Router<AppState> {
    axum::Router::new().route("/hooks/{*path}", post(catch).layer(DefaultBodyLimit::disable()))
}

/// Headers that never reach a recipe (credentials of the caller, hop-by-hop noise).
const DROPPED_HEADERS: &[&str] = &["authorization", "cookie", "proxy-authorization", "connection", "keep-alive", "transfer-encoding"];

async fn catch(
    State(s): State<AppState>,
    Path(path): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    if !s.shared.config.hooks {
        return Err(ApiError::new(Code::HookNotFound, "this node does not take webhooks"));
    }
    let Some(cur) = s.runner.hook(&path) else {
        // A recipe being built in the web UI may be listening for a sample request here.
        if let Some(r) = crate::ui::editor::capture_sample(&s, &path, &query, &headers, body).await? {
            return Ok(r);
        }
        return Err(ApiError::new(
            Code::HookNotFound,
            format!("no enabled recipe listens on /hooks/{path}; check the path, or enable the recipe"),
        ));
    };
    let Some(hook) = cur.recipe.hook() else {
        return Err(ApiError::new(Code::HookNotFound, format!("no enabled recipe listens on /hooks/{path}")));
    };
    let recipe_id = cur.row.id.clone();
    let version = cur.row.version;

    check_rate(&s, &path, hook)?;

    // The body: refuse by Content-Length before reading, and stop reading at the cap.
    let limit = hook.max_body.min(MAX_MAX_BODY);
    if let Some(len) = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok())
        && len > limit
    {
        return Err(too_large(limit));
    }
    let raw = axum::body::to_bytes(body, limit).await.map_err(|_| too_large(limit))?;

    if hook.inbound {
        return inbound(&s, &cur, &uri, headers, raw).await;
    }

    if let Some(secret_t) = &hook.secret {
        let secret = signing_secret(&s, secret_t).await?;
        verify_signature(&headers, &hook.signature_header, &secret, &raw)?;
    }

    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase();
    let body = parse_body(&content_type, &raw)?;
    let mut hdrs = Map::new();
    for (k, v) in &headers {
        let name = k.as_str();
        if DROPPED_HEADERS.contains(&name) || name == hook.signature_header {
            continue;
        }
        if let Ok(v) = v.to_str() {
            hdrs.insert(name.to_string(), Value::String(v.to_string()));
        }
    }
    let received_at = enlace_runner::clock::rfc3339(s.runner.now_ms());
    let event = json!({"body": body, "headers": hdrs, "query": query, "received_at": received_at, "path": path});

    let dedupe_key = match &hook.dedupe_key {
        Some(t) => {
            let data = json!({"trigger": &event});
            match t.render_value(&data) {
                Ok(Value::Null) => None,
                Ok(Value::String(k)) if k.is_empty() => None,
                Ok(Value::String(k)) => Some(k),
                Ok(other) => Some(other.to_string()),
                Err(e) => {
                    return Err(ApiError::new(Code::InvalidRequest, format!("the event has no dedupe key: {}", e.message)).at("dedupe_key"));
                }
            }
        }
        None => None,
    };

    let wait = match &hook.respond {
        Respond::AfterRun { timeout, .. } => Some(*timeout),
        Respond::Accepted => None,
    };
    let (accepted, rx) = s
        .runner
        .accept(Incoming { recipe_id, recipe_version: version, source: "webhook", payload: event, dedupe_key, wait: wait.is_some() })
        .await?;
    if accepted.duplicate {
        return Ok((StatusCode::OK, Json(json!({"run_id": accepted.run_id, "duplicate": true}))).into_response());
    }
    let (Some(rx), Some(timeout)) = (rx, wait) else {
        return Ok((StatusCode::ACCEPTED, Json(json!({"run_id": accepted.run_id}))).into_response());
    };
    match tokio::time::timeout(timeout, rx).await {
        Ok(Ok(outcome)) => match outcome.status {
            RunStatus::Succeeded => Ok(respond_with(outcome.response.unwrap_or(Value::Null), &accepted.run_id)),
            RunStatus::Filtered => Ok((StatusCode::OK, Json(json!({"run_id": accepted.run_id, "status": "filtered"}))).into_response()),
            RunStatus::Failed => {
                let message =
                    outcome.error.as_ref().and_then(|e| e.get("message")).and_then(Value::as_str).unwrap_or("the run failed").to_string();
                let mut e = ApiError::new(Code::RunFailed, format!("the run failed: {message}"));
                e.run_id = Some(accepted.run_id);
                Err(e)
            }
            _ => Ok((StatusCode::ACCEPTED, Json(json!({"run_id": accepted.run_id, "status": outcome.status}))).into_response()),
        },
        _ => {
            s.runner.forget_waiter(&accepted.run_id);
            Ok((StatusCode::ACCEPTED, Json(json!({"run_id": accepted.run_id}))).into_response())
        }
    }
}

/// A connector's inbound trigger (`twilio.inbound_sms`): the connector checks the vendor's
/// signature with the trigger's connection and shapes the event; the event is stored (a
/// duplicate starts nothing), and only then does the vendor get the connector's answer.
async fn inbound(s: &AppState, cur: &Current, uri: &Uri, headers: HeaderMap, raw: bytes::Bytes) -> ApiResult<Response> {
    let trigger = &cur.recipe.trigger;
    let Some(handler) = s.runner.registry().get(&trigger.app).and_then(|c| c.inbound_trigger(&trigger.event)).cloned() else {
        return Err(ApiError::new(Code::HookNotFound, format!("this installation has no trigger `{}.{}`", trigger.app, trigger.event)));
    };
    let credentials = match &trigger.connection {
        Some(id) => s.runner.connection_credentials(id).await.map_err(|e| {
            tracing::error!(recipe = %cur.row.id, connection = %id, error = %e, "an inbound hook's connection cannot be read; every request is refused");
            ApiError::new(
                Code::BadSignature,
                format!("this hook's connection `{id}` cannot be read on the server, so no signature can be checked"),
            )
        })?,
        None => enlace_core::Credentials::None,
    };
    let base = crate::api::connections::public_base(s.shared.config.public_url.as_deref(), &headers);
    let url = format!("{base}{}", uri.path_and_query().map(|p| p.as_str()).unwrap_or_else(|| uri.path()));
    let ctx =
        InboundContext { credentials, extensions: Extensions { contacts: Some(Arc::new(s.runner.contacts())), ..Default::default() } };
    let req = InboundRequest { url, headers, body: raw, received_at: s.runner.now_ms() };
    let ev = handler.receive(&ctx, &req).await.map_err(|e| {
        let code = match e.class() {
            ErrorClass::Auth => Code::BadSignature,
            ErrorClass::BadInput | ErrorClass::Permanent => Code::InvalidRequest,
            _ => Code::Unavailable,
        };
        if code == Code::Unavailable {
            tracing::error!(recipe = %cur.row.id, error = %e, "an inbound hook could not be handled; the sender is asked to retry");
        }
        let message = match e {
            enlace_core::ConnectorError::BadInput { path, message } => format!("{path}: {message}"),
            other => other.to_string(),
        };
        ApiError::new(code, message)
    })?;
    let (accepted, _) = s
        .runner
        .accept(Incoming {
            recipe_id: cur.row.id.clone(),
            recipe_version: cur.row.version,
            source: "webhook",
            payload: ev.event,
            dedupe_key: ev.dedupe_key,
            wait: false,
        })
        .await?;
    let status = StatusCode::from_u16(ev.reply.status).unwrap_or(StatusCode::OK);
    let mut resp = (status, ev.reply.body).into_response();
    if let Some(ct) = ev.reply.content_type {
        resp.headers_mut().insert(header::CONTENT_TYPE, axum::http::HeaderValue::from_static(ct));
    }
    if let Ok(h) = accepted.run_id.parse() {
        resp.headers_mut().insert("x-enlace-run-id", h);
    }
    if accepted.duplicate {
        resp.headers_mut().insert("x-enlace-duplicate", axum::http::HeaderValue::from_static("true"));
    }
    Ok(resp)
}

fn respond_with(v: Value, run_id: &str) -> Response {
    let mut resp = match v {
        Value::String(text) => ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response(),
        other => Json(other).into_response(),
    };
    if let Ok(h) = run_id.parse() {
        resp.headers_mut().insert("x-enlace-run-id", h);
    }
    resp
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        Code::PayloadTooLarge,
        format!("the body is larger than this hook accepts ({limit} bytes); send less, or raise `max_body` in the recipe's trigger"),
    )
}

fn check_rate(s: &AppState, path: &str, hook: &WebhookConfig) -> ApiResult<()> {
    let Some((calls, per)) = hook.rate_limit else { return Ok(()) };
    let spec = format!("{calls}/{}", per.as_millis());
    let limiter = {
        let mut map = s.shared.hook_limits.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(path) {
            Some((sp, l)) if *sp == spec => l.clone(),
            _ => {
                let n = NonZeroU32::new(calls).unwrap_or(NonZeroU32::MIN);
                let quota = Quota::with_period(per / calls.max(1)).unwrap_or_else(|| Quota::per_second(n)).allow_burst(n);
                let l = Arc::new(DefaultDirectRateLimiter::direct(quota));
                map.insert(path.to_string(), (spec, l.clone()));
                l
            }
        }
    };
    match limiter.check() {
        Ok(()) => Ok(()),
        Err(not_until) => {
            use governor::clock::Clock;
            let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
            let mut e = ApiError::new(
                Code::RateLimited,
                format!("this hook takes at most {calls} requests per {}; retry later", enlace_core::duration::format_duration(per)),
            );
            e.retry_after = Some(wait.as_secs().max(1));
            Err(e)
        }
    }
}

async fn signing_secret(s: &AppState, t: &enlace_recipe::template::Template) -> ApiResult<String> {
    let names: Vec<String> =
        t.references().iter().filter(|r| r.first().is_some_and(|f| f == "secrets")).filter_map(|r| r.get(1).cloned()).collect();
    let mut secrets = Map::new();
    let mut missing = vec![];
    for name in names {
        let cached = {
            let cache = s.shared.secret_cache.lock().unwrap_or_else(|e| e.into_inner());
            cache.get(&name).filter(|(_, at)| at.elapsed() < SECRET_TTL).map(|(v, _)| v.clone())
        };
        let value = match cached {
            Some(v) => Some(v),
            None => {
                let got = s.runner.store().secrets(std::slice::from_ref(&name)).await?;
                if let Some(v) = got.get(&name) {
                    s.shared.secret_cache.lock().unwrap_or_else(|e| e.into_inner()).insert(name.clone(), (v.clone(), Instant::now()));
                }
                got.get(&name).cloned()
            }
        };
        match value {
            Some(v) => {
                secrets.insert(name, Value::String(v));
            }
            None => missing.push(name),
        }
    }
    if !missing.is_empty() {
        tracing::error!(secrets = ?missing, "a webhook's signing secret is not set; every request is refused");
        return Err(ApiError::new(
            Code::BadSignature,
            "this hook's signing secret is not configured on the server, so no signature can match",
        ));
    }
    t.render_string(&json!({"secrets": secrets})).map_err(|e| {
        tracing::error!(error = %e.message, "rendering a webhook secret failed");
        ApiError::new(Code::BadSignature, "this hook's signing secret cannot be read on the server")
    })
}

/// Checks `sha256=<hex>` (or bare hex) against the HMAC-SHA256 of the raw body, in
/// constant time.
pub fn verify_signature(headers: &HeaderMap, header_name: &str, secret: &str, body: &[u8]) -> ApiResult<()> {
    let Some(given) = headers.get(header_name).and_then(|v| v.to_str().ok()) else {
        return Err(ApiError::new(
            Code::BadSignature,
            format!("the `{header_name}` header is missing: sign the raw body with HMAC-SHA256 and send `sha256=<hex>`"),
        ));
    };
    let hex_part = given.trim().strip_prefix("sha256=").unwrap_or(given.trim());
    let Ok(sig) = hex::decode(hex_part) else {
        return Err(ApiError::new(Code::BadSignature, format!("the `{header_name}` header is not `sha256=<hex>`")));
    };
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).map_err(|_| ApiError::new(Code::Internal, "bad HMAC key"))?;
    mac.update(body);
    mac.verify_slice(&sig).map_err(|_| {
        ApiError::new(Code::BadSignature, "the signature does not match the body; sign the exact raw body with the hook's secret")
    })
}

/// JSON (by content type, or by shape when none is given), form fields, or text.
fn parse_body(content_type: &str, raw: &[u8]) -> ApiResult<Value> {
    if raw.is_empty() {
        return Ok(Value::Null);
    }
    let looks_json = matches!(raw.iter().find(|b| !b.is_ascii_whitespace()), Some(b'{') | Some(b'['));
    if content_type.contains("json") || (content_type.is_empty() && looks_json) {
        return serde_json::from_slice(raw).map_err(|e| ApiError::new(Code::InvalidJson, format!("the body is not valid JSON: {e}")));
    }
    if content_type.starts_with("application/x-www-form-urlencoded") {
        let mut map = Map::new();
        for (k, v) in form_urlencoded::parse(raw) {
            map.insert(k.into_owned(), Value::String(v.into_owned()));
        }
        return Ok(Value::Object(map));
    }
    match std::str::from_utf8(raw) {
        Ok(text) if content_type.is_empty() || content_type.starts_with("text/") || content_type.contains("xml") => {
            Ok(Value::String(text.to_string()))
        }
        _ => Err(ApiError::new(
            Code::UnsupportedMediaType,
            format!("cannot read a `{content_type}` body; send JSON, a form (application/x-www-form-urlencoded) or text"),
        )),
    }
}
