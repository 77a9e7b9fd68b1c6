//! The web UI: server-rendered pages for people (docs/ui.md).
//!
//! Pages are Handlebars templates from `web/templates/`, compiled into the binary
//! (`include_str!`) and registered once; every `{{value}}` is HTML-escaped. The style sheet
//! and the one small script are served from `/ui/static/` (no outside host, no inline
//! script: the pages' Content-Security-Policy allows only `'self'`).
//!
//! Accounts (`auth`): the first-run setup makes the first admin; sessions are random ids
//! in an HttpOnly, SameSite=Lax cookie (Secure when the public address is https), kept
//! hashed in the store with an absolute expiry; every form of a session carries the
//! session's CSRF token (checked by [`session_layer`] before any handler runs); roles
//! (admin, editor, viewer) are checked by each handler with [`Session::require`].
//!
//! Handlers stay thin: they call the same functions as the API (`crate::api::*`), the
//! runner and the store.

pub mod auth;
pub mod editor;
pub mod journeys;
mod pages;
mod social;
mod templates;
mod test_call;

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use serde_json::{Value, json};

pub use auth::Role;
pub use templates::render;

use crate::AppState;
use crate::error::ApiError;

/// Largest form body a page takes (a recipe's source is the largest field).
pub const MAX_FORM_BYTES: usize = 2 * 1024 * 1024;

/// The UI's own state in the application.
pub(crate) struct UiState {
    /// True once an account exists (then `/setup` is closed for good).
    pub set_up: AtomicBool,
    /// Failed sign-ins per user name and per client address, for the login rate limit.
    pub failures: Mutex<HashMap<String, Vec<Instant>>>,
}

impl UiState {
    pub(crate) fn new() -> UiState {
        UiState { set_up: AtomicBool::new(false), failures: Mutex::new(HashMap::new()) }
    }
}

/// The signed-in person of a request, put there by [`session_layer`].
#[derive(Debug, Clone)]
pub struct Session {
    pub user_id: String,
    pub username: String,
    pub role: Role,
    /// The session's CSRF token: every form sends it back as `_csrf`.
    pub csrf: String,
    /// A message left by the previous request (after a redirect).
    pub flash: Option<Flash>,
    /// The path asked for, to mark the current page in the navigation.
    pub path: String,
    /// Enlace's address as the browser reaches it (`public_url`, else the request's host).
    pub base: String,
}

/// A one-time message shown on the next page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flash {
    /// `ok` or `error`.
    pub kind: String,
    pub text: String,
}

impl<S: Send + Sync> FromRequestParts<S> for Session {
    type Rejection = UiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Session>()
            .cloned()
            .ok_or_else(|| UiError::new(StatusCode::UNAUTHORIZED, "Please sign in", "This page needs a signed-in session.", None))
    }
}

impl Session {
    /// Refuses the request unless the person's role is at least `role`.
    pub fn require(&self, role: Role) -> Result<(), UiError> {
        if self.role.at_least(role) {
            Ok(())
        } else {
            Err(UiError::new(
                StatusCode::FORBIDDEN,
                "Not allowed",
                &format!("This needs the {} role; you are signed in as {} ({}).", role.as_str(), self.username, self.role.as_str()),
                Some("Ask an admin to change your role on the Users page."),
            ))
        }
    }

    /// What every page's layout reads.
    fn layout(&self) -> Value {
        json!({
            "user": {"name": self.username, "role": self.role.as_str()},
            "csrf": self.csrf,
            "flash": self.flash.as_ref().map(|f| json!({"kind": f.kind, "text": f.text})),
            "can_edit": self.role.at_least(Role::Editor),
            "is_admin": self.role == Role::Admin,
            "nav": nav(&self.path),
        })
    }
}

/// The navigation, with the current section marked.
fn nav(path: &str) -> Value {
    let items = [
        ("/ui/recipes", "Recipes"),
        ("/ui/runs", "Runs"),
        ("/ui/journeys", "Journeys"),
        ("/ui/apps", "Apps"),
        ("/ui/connections", "Connections"),
        ("/ui/contacts", "Contacts"),
        ("/ui/social", "Social"),
        ("/ui/tokens", "API tokens"),
        ("/ui/users", "Users"),
    ];
    Value::Array(
        items
            .iter()
            .map(|(href, label)| json!({"href": href, "label": label, "current": path == *href || path.starts_with(&format!("{href}/"))}))
            .collect(),
    )
}

/// Renders `template` inside the layout for a signed-in person.
pub fn page(sess: &Session, title: &str, template: &str, mut data: Value) -> Response {
    let mut ctx = sess.layout();
    ctx["title"] = Value::String(title.to_string());
    if let (Some(o), Some(d)) = (ctx.as_object_mut(), data.as_object_mut()) {
        o.extend(std::mem::take(d));
    }
    html(StatusCode::OK, render(template, &ctx))
}

/// An HTML answer with the UI's security headers.
pub fn html(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    security_headers(h);
    r
}

fn security_headers(h: &mut HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// A page's error: a clear page with what happened and what to do.
#[derive(Debug)]
pub struct UiError {
    pub status: StatusCode,
    pub title: String,
    pub message: String,
    pub hint: Option<String>,
}

impl UiError {
    pub fn new(status: StatusCode, title: &str, message: &str, hint: Option<&str>) -> UiError {
        UiError { status, title: title.into(), message: message.into(), hint: hint.map(str::to_string) }
    }

    pub fn not_found(what: &str) -> UiError {
        UiError::new(StatusCode::NOT_FOUND, "Not found", what, Some("Check the address, or go back to the list it came from."))
    }
}

impl From<ApiError> for UiError {
    fn from(e: ApiError) -> UiError {
        let status = e.code.status();
        let title = match status.as_u16() {
            404 => "Not found",
            409 => "Not possible now",
            400 | 422 => "Please check the input",
            401 | 403 => "Not allowed",
            s if s >= 500 => "Something went wrong",
            _ => "That did not work",
        };
        let message = match &e.path {
            Some(p) if !p.is_empty() => format!("{p}: {}", e.message),
            _ => e.message.clone(),
        };
        UiError { status, title: title.into(), message, hint: None }
    }
}

impl From<enlace_store::StoreError> for UiError {
    fn from(e: enlace_store::StoreError) -> UiError {
        ApiError::from(e).into()
    }
}

impl From<enlace_runner::RunnerError> for UiError {
    fn from(e: enlace_runner::RunnerError) -> UiError {
        ApiError::from(e).into()
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(status = %self.status, message = %self.message, "UI page failed");
        }
        let ctx = json!({
            "title": self.title,
            "status": self.status.as_u16(),
            "message": self.message,
            "hint": self.hint,
            "request_id": crate::error::REQUEST_ID.try_with(|id| id.clone()).ok(),
        });
        html(self.status, render("error", &ctx))
    }
}

pub type UiResult<T = Response> = Result<T, UiError>;

/// A redirect after a form, with a message for the next page.
pub fn redirect_flash(to: &str, kind: &str, text: &str) -> Response {
    let mut r = Redirect::to(to).into_response();
    let value: String = form_urlencoded::Serializer::new(String::new()).append_pair("k", kind).append_pair("t", text).finish();
    if let Ok(v) = HeaderValue::from_str(&format!("enlace_flash={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age=60")) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

/// A cookie's value from the request's `Cookie` headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == name).then(|| v.to_string())
    })
}

fn read_flash(headers: &HeaderMap) -> Option<Flash> {
    let raw = cookie(headers, "enlace_flash")?;
    let mut kind = None;
    let mut text = None;
    for (k, v) in form_urlencoded::parse(raw.as_bytes()) {
        match &*k {
            "k" => kind = Some(if v == "error" { "error".to_string() } else { "ok".to_string() }),
            "t" => text = Some(v.chars().take(500).collect::<String>()),
            _ => {}
        }
    }
    Some(Flash { kind: kind?, text: text? })
}

/// A submitted form (`application/x-www-form-urlencoded`), already CSRF-checked.
#[derive(Debug, Default, Clone)]
pub struct Form(pub Vec<(String, String)>);

impl Form {
    pub fn parse(body: &[u8]) -> Form {
        Form(form_urlencoded::parse(body).map(|(k, v)| (k.into_owned(), v.into_owned())).collect())
    }
    /// The field's value (the first, if repeated).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
    /// The field's value, trimmed; empty when absent.
    pub fn text(&self, name: &str) -> String {
        self.get(name).unwrap_or("").trim().to_string()
    }
}

/// Constant-time comparison of two tokens.
pub(crate) fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether any account exists (remembered once true).
pub(crate) async fn is_set_up(s: &AppState) -> Result<bool, UiError> {
    if s.shared.ui.set_up.load(Ordering::Relaxed) {
        return Ok(true);
    }
    let yes = s.runner.store().ui_user_count().await? > 0;
    if yes {
        s.shared.ui.set_up.store(true, Ordering::Relaxed);
    }
    Ok(yes)
}

fn csrf_refused() -> UiError {
    UiError::new(
        StatusCode::FORBIDDEN,
        "This form has expired",
        "The form did not carry this session's security token, so nothing was changed. This happens when a form was opened before signing in again, or was sent from another site.",
        Some("Go back, reload the page and send the form again."),
    )
}

/// Every UI page behind a sign-in: until the first account exists, every page sends to
/// `/setup`; without a live session, to `/login`. A `POST` must carry the session's CSRF
/// token as `_csrf`, checked here, before any handler runs.
pub async fn session_layer(State(s): State<AppState>, req: Request, next: Next) -> Response {
    match is_set_up(&s).await {
        Ok(true) => {}
        Ok(false) => return Redirect::to("/setup").into_response(),
        Err(e) => return e.into_response(),
    }
    let now = s.runner.now_ms();
    let session = match cookie(req.headers(), auth::SESSION_COOKIE) {
        Some(id) => match s.runner.store().ui_session(&enlace_store::token_hash(&id), now).await {
            Ok(row) => row,
            Err(e) => return UiError::from(e).into_response(),
        },
        None => None,
    };
    let path = req.uri().path().to_string();
    let Some(row) = session else {
        let back = if req.method() == Method::GET { req.uri().path_and_query().map(|p| p.as_str().to_string()) } else { None };
        let to = match back {
            Some(b) if b != "/" => format!("/login?next={}", form_urlencoded::byte_serialize(b.as_bytes()).collect::<String>()),
            _ => "/login".to_string(),
        };
        return Redirect::to(&to).into_response();
    };
    let flash = read_flash(req.headers());
    let sess = Session {
        user_id: row.user.id.clone(),
        username: row.user.username.clone(),
        role: Role::parse(&row.user.role).unwrap_or(Role::Viewer),
        csrf: row.csrf.clone(),
        flash: flash.clone(),
        path,
        base: crate::api::connections::public_base(s.shared.config.public_url.as_deref(), req.headers()),
    };
    let (mut parts, body) = req.into_parts();
    let body = if parts.method == Method::POST {
        let bytes: Bytes = match axum::body::to_bytes(body, MAX_FORM_BYTES).await {
            Ok(b) => b,
            Err(_) => {
                return UiError::new(StatusCode::PAYLOAD_TOO_LARGE, "Too large", "The form is larger than 2 MiB.", None).into_response();
            }
        };
        let sent = Form::parse(&bytes).get("_csrf").map(str::to_string).unwrap_or_default();
        if !same_token(&sent, &sess.csrf) {
            return csrf_refused().into_response();
        }
        Body::from(bytes)
    } else {
        body
    };
    parts.extensions.insert(sess);
    let mut resp = next.run(Request::from_parts(parts, body)).await;
    if flash.is_some() {
        let sets_flash = resp.headers().get_all(header::SET_COOKIE).iter().any(|v| v.as_bytes().starts_with(b"enlace_flash="));
        if !sets_flash {
            resp.headers_mut()
                .append(header::SET_COOKIE, HeaderValue::from_static("enlace_flash=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0"));
        }
    }
    resp
}

async fn static_css() -> Response {
    static_file("text/css; charset=utf-8", include_str!("../../../../web/ui.css"))
}

async fn static_js() -> Response {
    static_file("application/javascript; charset=utf-8", include_str!("../../../../web/ui.js"))
}

async fn static_journeys_js() -> Response {
    static_file("application/javascript; charset=utf-8", include_str!("../../../../web/journeys.js"))
}

async fn static_icon() -> Response {
    static_file("image/svg+xml", include_str!("../../../../web/icon.svg"))
}

fn static_file(ct: &'static str, body: &'static str) -> Response {
    let mut r = body.into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r.headers_mut().insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    r
}

async fn ui_not_found() -> UiError {
    UiError::not_found("There is no page at this address.")
}

/// The UI's routes: the public ones (setup, sign-in, static files) and the pages behind a
/// session.
pub fn routes(state: AppState) -> Router<AppState> {
    let pages = pages::routes()
        .merge(editor::routes())
        .merge(journeys::routes())
        .merge(test_call::routes())
        .merge(social::routes())
        .route("/ui/{*rest}", get(ui_not_found))
        .route_layer(middleware::from_fn_with_state(state, session_layer));
    Router::new()
        .merge(auth::routes())
        .route("/ui/static/ui.css", get(static_css))
        .route("/ui/static/ui.js", get(static_js))
        .route("/ui/static/journeys.js", get(static_journeys_js))
        .route("/ui/static/icon.svg", get(static_icon))
        .route(
            "/ui/static/calendar.js",
            get(|| async { static_file("application/javascript; charset=utf-8", include_str!("../../../../web/calendar.js")) }),
        )
        .route(
            "/ui/static/calendar.css",
            get(|| async { static_file("text/css; charset=utf-8", include_str!("../../../../web/calendar.css")) }),
        )
        .route("/favicon.ico", get(static_icon))
        .merge(pages)
}

#[cfg(test)]
mod tests;
