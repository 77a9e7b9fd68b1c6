//! Enlace's HTTP interface, the only crate that speaks HTTP to clients: webhook ingress
//! (`/hooks`), the REST API (`/api/v1`, described by an OpenAPI document generated from the
//! handlers themselves), the web UI (`ui`: `/`, `/setup`, `/login`, `/ui/...`), health and metrics.
//!
//! Handlers stay thin: they extract, call the runner or the store, and answer. Every error
//! leaves through [`error::ApiError`], one table of codes.

pub mod api;
pub mod email_tracking;
pub mod error;
pub mod forms;
pub mod hooks;
pub mod oauth;
pub mod onsite;
pub mod prefs;
pub mod public_page;
pub mod track;
pub mod ui;
pub mod unsubscribe;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use enlace_runner::Runner;
use governor::DefaultDirectRateLimiter;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tracing::Instrument;

use crate::error::{ApiError, Code, REQUEST_ID};

/// Settings of the HTTP interface.
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// Accept webhooks. False on a node that should not take traffic.
    pub hooks: bool,
    /// Enlace's address as browsers and vendors reach it (`ENLACE_PUBLIC_URL`, like
    /// `https://enlace.example.com`): OAuth2 sign-ins come back to `<public_url>/oauth/callback`,
    /// and vendors that sign the address they call (Twilio) are checked against
    /// `<public_url>/hooks/...`. When unset, the address each request came to is used.
    pub public_url: Option<String>,
    /// The websites whose pages may send page views to `POST /track`
    /// (`ENLACE_TRACK_ORIGINS`, like `https://shop.example.com`); none: `/track` refuses all.
    pub track_origins: Vec<String>,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig { hooks: true, public_url: None, track_origins: vec![] }
    }
}

pub(crate) struct Shared {
    pub config: WebConfig,
    /// Inbound limits per hook path.
    pub hook_limits: Mutex<HashMap<String, (String, Arc<DefaultDirectRateLimiter>)>>,
    /// Secret values read for signature checks, kept for a few seconds.
    pub secret_cache: Mutex<HashMap<String, (String, Instant)>>,
    pub http_requests: Family<Vec<(&'static str, String)>, Counter>,
    pub openapi: String,
    /// The rate limit of `POST /track`.
    pub track_limit: Arc<DefaultDirectRateLimiter>,
    /// The web UI's state (setup done, failed sign-ins).
    pub ui: ui::UiState,
    /// The rate limit of form submissions, per IP address.
    pub form_limit: Arc<governor::DefaultKeyedRateLimiter<String>>,
}

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub runner: Runner,
    pub(crate) shared: Arc<Shared>,
}

impl AppState {
    /// Forgets cached secret values (after a secret changes).
    pub fn invalidate_secrets(&self) {
        self.shared.secret_cache.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// How long a secret read for a signature check is reused.
pub(crate) const SECRET_TTL: Duration = Duration::from_secs(5);

/// The whole application: every route with its layers.
pub fn app(runner: Runner, config: WebConfig) -> Router {
    let http_requests = Family::<Vec<(&'static str, String)>, Counter>::default();
    runner.metrics().registry.lock().unwrap_or_else(|e| e.into_inner()).register(
        "http_requests",
        "HTTP requests answered, by route and status class",
        http_requests.clone(),
    );
    let (api_router, openapi) = api::router().split_for_parts();
    let openapi = serde_json::to_string_pretty(&openapi).unwrap_or_else(|_| "{}".into());
    let state = AppState {
        runner,
        shared: Arc::new(Shared {
            config,
            hook_limits: Mutex::new(HashMap::new()),
            secret_cache: Mutex::new(HashMap::new()),
            http_requests,
            openapi,
            track_limit: track::limiter(),
            ui: ui::UiState::new(),
            form_limit: forms::limiter(),
        }),
    };
    let api_router = api_router.route_layer(middleware::from_fn_with_state(state.clone(), api::auth::require_token));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/v1/openapi.json", get(openapi_json))
        .merge(hooks::routes())
        .merge(oauth::routes())
        .merge(unsubscribe::routes())
        .merge(track::routes())
        .merge(onsite::routes())
        .merge(forms::routes())
        .merge(email_tracking::routes())
        .merge(api_router)
        .merge(ui::routes(state.clone()))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), request_layer))
        .with_state(state)
}

/// The OpenAPI document, as served at `/api/v1/openapi.json`.
pub fn openapi_document() -> String {
    serde_json::to_string_pretty(&api::router().split_for_parts().1).unwrap_or_default()
}

/// 200 when the database answers, 503 when it does not.
async fn healthz(State(s): State<AppState>) -> Response {
    match s.runner.store().ping().await {
        Ok(()) => {
            (StatusCode::OK, axum::Json(serde_json::json!({"status": "ok", "database": s.runner.store().backend_name()}))).into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "health check: the database does not answer");
            ApiError::new(Code::Unavailable, "the database does not answer").into_response()
        }
    }
}

async fn metrics(State(s): State<AppState>) -> Response {
    let body = s.runner.metrics().encode();
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body).into_response()
}

async fn openapi_json(State(s): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], s.shared.openapi.clone()).into_response()
}

async fn not_found(req: Request) -> ApiError {
    ApiError::new(
        Code::NotFound,
        format!(
            "no route for {} {}; the API is under /api/v1 (see /api/v1/openapi.json), webhooks under /hooks/PATH",
            req.method(),
            req.uri().path()
        ),
    )
}

/// Gives every request an id (kept from `x-request-id` when the caller sent a sane one),
/// scopes it for error bodies and logs, counts the request, and turns the framework's own
/// plain-text rejections into the one error shape.
async fn request_layer(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    let route = req.extensions().get::<axum::extract::MatchedPath>().map(|m| m.as_str().to_string()).unwrap_or_else(|| "unmatched".into());
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let span = tracing::debug_span!("request", request_id = %id, method = %method, path = %path);
    let mut resp = REQUEST_ID
        .scope(
            id.clone(),
            async move {
                let resp = next.run(req).await;
                reshape_rejection(resp).await
            }
            .instrument(span),
        )
        .await;
    let class = format!("{}xx", resp.status().as_u16() / 100);
    s.shared.http_requests.get_or_create(&vec![("route", route), ("status", class)]).inc();
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

async fn reshape_rejection(resp: Response) -> Response {
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    // JSON errors are already shaped; the UI's pages are HTML on purpose.
    let keep = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/html"));
    if keep {
        return resp;
    }
    let bytes = axum::body::to_bytes(resp.into_body(), 64 * 1024).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes).trim().to_string();
    let code = match status {
        StatusCode::METHOD_NOT_ALLOWED => {
            let mut r =
                ApiError::new(Code::InvalidRequest, "this route does not take that method; see /api/v1/openapi.json").into_response();
            *r.status_mut() = status;
            return r;
        }
        StatusCode::PAYLOAD_TOO_LARGE => Code::PayloadTooLarge,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => Code::UnsupportedMediaType,
        StatusCode::NOT_FOUND => Code::NotFound,
        StatusCode::UNAUTHORIZED => Code::Unauthorized,
        s if s.is_server_error() => Code::Internal,
        _ if text.contains("JSON") || text.contains("json") => Code::InvalidJson,
        _ => Code::InvalidRequest,
    };
    let message = if text.is_empty() { status.canonical_reason().unwrap_or("error").to_string() } else { text };
    let mut r = ApiError::new(code, message).into_response();
    *r.status_mut() = status;
    r
}

/// Serves until `shutdown` resolves, then stops accepting and finishes requests in flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>()).with_graceful_shutdown(shutdown).await
}
