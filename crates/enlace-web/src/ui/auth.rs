//! Accounts: the first-run setup, signing in and out, sessions, passwords, roles.
//!
//! - Passwords: argon2id (the `argon2` crate's defaults: 19 MiB, 2 passes), PHC strings
//!   with a random salt, hashed and checked off the async threads.
//! - Sessions: 32 random bytes in the `enlace_session` cookie (HttpOnly, SameSite=Lax,
//!   `Secure` when the public address is https), stored as their SHA-256 with an absolute
//!   expiry of [`SESSION_TTL_MS`]; signing out deletes the row.
//! - CSRF: a session's forms carry its token (checked in `session_layer`). The two forms
//!   before a session exists (setup, sign-in) use a double-submit cookie: `enlace_pre`
//!   (random, HttpOnly, SameSite=Lax) must equal the form's `_csrf`.
//! - Sign-in rate limit: [`MAX_FAILURES`] failed attempts per user name and per client
//!   address within [`FAILURE_WINDOW`] lock that name or address out until the oldest
//!   failure leaves the window (kept in the node's memory).

use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use super::{Form, UiError, cookie, html, is_set_up, redirect_flash, render, same_token};
use crate::AppState;

pub const SESSION_COOKIE: &str = "enlace_session";
const PRE_COOKIE: &str = "enlace_pre";
/// How long a session lives, from sign-in.
pub const SESSION_TTL_MS: i64 = 12 * 60 * 60 * 1000;
/// Failed sign-ins allowed per user name and per address within [`FAILURE_WINDOW`].
pub const MAX_FAILURES: usize = 5;
pub const FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);
/// The shortest password accepted.
pub const MIN_PASSWORD: usize = 12;

/// What a person may do. Each role can do what the ones below it can.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Reads everything (recipes, runs, connections, contacts); changes nothing.
    Viewer,
    /// Also builds, tests, enables and disables recipes, connects apps, replays and cancels runs.
    Editor,
    /// Also manages accounts and API tokens, erases and exports contacts.
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Admin, Role::Editor, Role::Viewer];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Editor => "editor",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    pub fn at_least(self, other: Role) -> bool {
        self >= other
    }
}

fn random_token() -> String {
    use rand::RngCore;
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    hex::encode(raw)
}

/// Hashes a password with argon2id and a fresh salt (a PHC string).
pub fn hash_password(password: &str) -> Result<String, UiError> {
    use rand::RngCore;
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| internal(&e.to_string()))?;
    Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| internal(&e.to_string()))
}

/// Whether `password` matches the stored PHC string.
pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

async fn hash_off_thread(password: String) -> Result<String, UiError> {
    tokio::task::spawn_blocking(move || hash_password(&password)).await.map_err(|e| internal(&e.to_string()))?
}

fn internal(m: &str) -> UiError {
    UiError::new(StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong", m, None)
}

/// Checks a new account's name: returns it lowercased.
pub fn check_username(name: &str) -> Result<String, String> {
    let n = name.trim().to_lowercase();
    if n.is_empty() {
        return Err("Give a user name or an email address.".into());
    }
    if n.chars().count() > 100 {
        return Err("The user name is longer than 100 characters.".into());
    }
    if !n.chars().all(|c| c.is_alphanumeric() || "@.-_+".contains(c)) {
        return Err("Use letters, digits and @ . - _ + in the user name.".into());
    }
    Ok(n)
}

/// Checks a new password (and its confirmation).
pub fn check_password(password: &str, confirm: &str) -> Result<(), String> {
    if password.chars().count() < MIN_PASSWORD {
        return Err(format!("The password must have at least {MIN_PASSWORD} characters."));
    }
    if password.len() > 1024 {
        return Err("The password is longer than 1024 bytes.".into());
    }
    if password != confirm {
        return Err("The two passwords differ; type the same password twice.".into());
    }
    Ok(())
}

/// `Secure` on cookies when Enlace is reached over https.
fn secure(s: &AppState) -> &'static str {
    if s.shared.config.public_url.as_deref().is_some_and(|u| u.starts_with("https://")) { "; Secure" } else { "" }
}

fn set_cookie(resp: &mut Response, value: String) {
    if let Ok(v) = HeaderValue::from_str(&value) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// The pre-session CSRF token: the cookie's, or a new one to set.
fn pre_token(headers: &HeaderMap) -> (String, bool) {
    match cookie(headers, PRE_COOKIE).filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit())) {
        Some(v) => (v, false),
        None => (random_token(), true),
    }
}

fn public_page(s: &AppState, headers: &HeaderMap, status: StatusCode, template: &str, mut ctx: serde_json::Value) -> Response {
    let (token, new) = pre_token(headers);
    ctx["csrf"] = json!(token);
    let mut r = html(status, render(template, &ctx));
    if new {
        set_cookie(&mut r, format!("{PRE_COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age=86400{}", secure(s)));
    }
    r
}

fn pre_csrf_ok(headers: &HeaderMap, form: &Form) -> bool {
    match (cookie(headers, PRE_COOKIE), form.get("_csrf")) {
        (Some(c), Some(f)) => !c.is_empty() && same_token(&c, f),
        _ => false,
    }
}

fn pre_csrf_refused() -> UiError {
    UiError::new(
        StatusCode::FORBIDDEN,
        "This form has expired",
        "The form did not carry the security token of this browser, so nothing was done (were cookies blocked, or was the form sent from another site?).",
        Some("Reload the page and send the form again."),
    )
}

/// Starts a session for `user_id` and sends to `to`.
async fn start_session(s: &AppState, user_id: &str, to: &str) -> Result<Response, UiError> {
    let id = random_token();
    let now = s.runner.now_ms();
    s.runner
        .store()
        .ui_create_session(&enlace_store::NewSession {
            id_hash: enlace_store::token_hash(&id),
            user_id: user_id.to_string(),
            csrf: random_token(),
            now,
            expires_at: now + SESSION_TTL_MS,
        })
        .await?;
    let mut r = Redirect::to(to).into_response();
    set_cookie(&mut r, format!("{SESSION_COOKIE}={id}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{}", SESSION_TTL_MS / 1000, secure(s)));
    Ok(r)
}

/// Only local paths: `next` never sends a person to another site.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.starts_with("/\\") && !n.contains(['\r', '\n']) => n.to_string(),
        _ => "/".to_string(),
    }
}

async fn setup_page(State(s): State<AppState>, headers: HeaderMap) -> Result<Response, UiError> {
    if is_set_up(&s).await? {
        return Ok(Redirect::to("/login").into_response());
    }
    Ok(public_page(&s, &headers, StatusCode::OK, "setup", json!({"title": "Set up Enlace", "min_password": MIN_PASSWORD})))
}

async fn setup_submit(State(s): State<AppState>, headers: HeaderMap, body: Bytes) -> Result<Response, UiError> {
    if is_set_up(&s).await? {
        return Ok(redirect_flash("/login", "error", "Enlace is already set up: sign in, or ask an admin for an account."));
    }
    let form = Form::parse(&body);
    if !pre_csrf_ok(&headers, &form) {
        return Err(pre_csrf_refused());
    }
    let username = form.text("username");
    let password = form.get("password").unwrap_or("").to_string();
    let problem = match check_username(&username) {
        Err(e) => Some(("username", e)),
        Ok(_) => check_password(&password, form.get("confirm").unwrap_or("")).err().map(|e| ("password", e)),
    };
    if let Some((field, message)) = problem {
        let ctx = json!({"title": "Set up Enlace", "min_password": MIN_PASSWORD, "username": username, "error": {"field": field, "message": message}});
        return Ok(public_page(&s, &headers, StatusCode::UNPROCESSABLE_ENTITY, "setup", ctx));
    }
    let name = check_username(&username).unwrap_or_default();
    let hash = hash_off_thread(password).await?;
    match s.runner.store().ui_create_first_admin(&name, &hash, s.runner.now_ms()).await? {
        Some(user) => {
            s.shared.ui.set_up.store(true, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(user = %user.username, "the first admin account was created");
            let mut r = start_session(&s, &user.id, "/ui/apps").await?;
            let flash = form_urlencoded::Serializer::new(String::new())
                .append_pair("k", "ok")
                .append_pair("t", "Welcome! Your admin account is ready. Start by connecting an app.")
                .finish();
            set_cookie(&mut r, format!("enlace_flash={flash}; Path=/; HttpOnly; SameSite=Lax; Max-Age=60"));
            Ok(r)
        }
        None => Ok(redirect_flash("/login", "error", "Someone finished the setup first: sign in, or ask them for an account.")),
    }
}

#[derive(Deserialize)]
struct LoginQuery {
    next: Option<String>,
}

async fn login_page(State(s): State<AppState>, headers: HeaderMap, Query(q): Query<LoginQuery>) -> Result<Response, UiError> {
    if !is_set_up(&s).await? {
        return Ok(Redirect::to("/setup").into_response());
    }
    let flash = super::read_flash(&headers).map(|f| json!({"kind": f.kind, "text": f.text}));
    let mut r = public_page(
        &s,
        &headers,
        StatusCode::OK,
        "login",
        json!({"title": "Sign in", "next": safe_next(q.next.as_deref()), "flash": flash}),
    );
    if flash.is_some() {
        set_cookie(&mut r, "enlace_flash=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0".into());
    }
    Ok(r)
}

/// How long until `key` may try again, if it is locked out.
fn locked(s: &AppState, keys: &[String], now: Instant) -> Option<Duration> {
    let mut map = s.shared.ui.failures.lock().unwrap_or_else(|e| e.into_inner());
    map.retain(|_, v| {
        v.retain(|t| now.duration_since(*t) < FAILURE_WINDOW);
        !v.is_empty()
    });
    keys.iter()
        .filter_map(|k| map.get(k))
        .filter(|v| v.len() >= MAX_FAILURES)
        .map(|v| FAILURE_WINDOW.saturating_sub(now.duration_since(v[v.len() - MAX_FAILURES])))
        .max()
}

fn record_failure(s: &AppState, keys: &[String], now: Instant) {
    let mut map = s.shared.ui.failures.lock().unwrap_or_else(|e| e.into_inner());
    for k in keys {
        map.entry(k.clone()).or_default().push(now);
    }
}

/// A fixed hash to check against when the name is unknown, so both cases take as long.
fn dummy_hash() -> &'static str {
    static H: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    H.get_or_init(|| hash_password("enlace-unknown-user-placeholder").unwrap_or_default())
}

async fn login_submit(State(s): State<AppState>, headers: HeaderMap, req: Request) -> Result<Response, UiError> {
    if !is_set_up(&s).await? {
        return Ok(Redirect::to("/setup").into_response());
    }
    let addr = req.extensions().get::<ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip().to_string()).unwrap_or_else(|| "local".into());
    let body = axum::body::to_bytes(req.into_body(), 64 * 1024).await.map_err(|_| pre_csrf_refused())?;
    let form = Form::parse(&body);
    if !pre_csrf_ok(&headers, &form) {
        return Err(pre_csrf_refused());
    }
    let username = form.text("username").to_lowercase();
    let password = form.get("password").unwrap_or("").to_string();
    let next = safe_next(form.get("next"));
    let keys = vec![format!("user:{username}"), format!("addr:{addr}")];
    let now = Instant::now();
    if let Some(wait) = locked(&s, &keys, now) {
        let minutes = wait.as_secs().div_ceil(60).max(1);
        let ctx = json!({"title": "Sign in", "next": next, "username": username,
            "error": {"message": format!("Too many failed sign-ins. Wait {minutes} minute{} and try again.", if minutes == 1 { "" } else { "s" })}});
        let mut r = public_page(&s, &headers, StatusCode::TOO_MANY_REQUESTS, "login", ctx);
        if let Ok(v) = HeaderValue::from_str(&wait.as_secs().max(1).to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return Ok(r);
    }
    let found = s.runner.store().ui_user_by_name(&username).await?;
    let phc = found.as_ref().map(|(_, h)| h.clone()).unwrap_or_else(|| dummy_hash().to_string());
    let ok = tokio::task::spawn_blocking(move || verify_password(&password, &phc)).await.unwrap_or(false);
    match found {
        Some((user, _)) if ok => start_session(&s, &user.id, &next).await,
        _ => {
            record_failure(&s, &keys, now);
            tracing::info!(user = %username, addr = %addr, "a sign-in failed");
            let ctx = json!({"title": "Sign in", "next": next, "username": username,
                "error": {"message": "The user name or the password is wrong."}});
            Ok(public_page(&s, &headers, StatusCode::UNAUTHORIZED, "login", ctx))
        }
    }
}

/// Signing out: the session's row is deleted, and its cookie. The form carries the
/// session's CSRF token (a sign-out from another site is refused).
async fn logout(State(s): State<AppState>, headers: HeaderMap, body: Bytes) -> Result<Response, UiError> {
    let form = Form::parse(&body);
    if let Some(id) = cookie(&headers, SESSION_COOKIE) {
        let hash = enlace_store::token_hash(&id);
        if let Some(row) = s.runner.store().ui_session(&hash, s.runner.now_ms()).await? {
            if !same_token(form.get("_csrf").unwrap_or(""), &row.csrf) {
                return Err(super::csrf_refused());
            }
            s.runner.store().ui_delete_session(&hash).await?;
        }
    }
    let mut r = redirect_flash("/login", "ok", "You are signed out.");
    set_cookie(&mut r, format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{}", secure(&s)));
    Ok(r)
}

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/setup", get(setup_page).post(setup_submit))
        .route("/login", get(login_page).post(login_submit))
        .route("/logout", post(logout))
}

/// Creates an account for the Users page (the password hashed off the async threads).
pub(super) async fn create_account(s: &AppState, username: &str, password: &str, role: Role) -> Result<enlace_store::UserRow, UiError> {
    let hash = hash_off_thread(password.to_string()).await?;
    Ok(s.runner.store().ui_create_user(username, &hash, role.as_str(), s.runner.now_ms()).await?)
}

pub(super) async fn set_password(s: &AppState, user_id: &str, password: &str) -> Result<bool, UiError> {
    let hash = hash_off_thread(password.to_string()).await?;
    Ok(s.runner.store().ui_set_password(user_id, &hash, s.runner.now_ms()).await?)
}
