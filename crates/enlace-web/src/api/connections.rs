//! Connections: create (credentials checked against the app's auth kind, then encrypted at
//! rest), list, show, rename, test and delete. No answer ever carries a credential.
//!
//! The checks and the test are public functions so that the CLI (`enlace connections`),
//! which opens the store directly, applies exactly the same rules.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use enlace_core::{ConnectionContext, Credentials, GrantType, RateLimit, Registry, TestOutcome, parse_credentials_with};
use enlace_runner::Runner;
use enlace_store::{ConnectionRow, PendingAuthorization, RateSpec};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::recipes::ts;
use crate::AppState;
use crate::error::{ApiError, ApiResult, Code, ErrorBody};

/// How long a connection test may take.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A connection as every answer shows it: never its credentials.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConnectionView {
    /// What recipes write as `connection:`. Never changes.
    pub id: String,
    /// The app it connects to.
    pub app: String,
    /// A label, free to change (`rename`).
    pub name: String,
    /// `untested` until a test runs, then `ok` or `error`.
    pub status: String,
    /// What the last test found: the app's answer when it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_message: Option<String>,
    /// When the last test ran (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tested_at: Option<String>,
    /// The user's own limit on calls made with this connection, on top of the app's.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub rate_limit: Option<RateLimit>,
    pub created_at: String,
    pub updated_at: String,
    /// For a new OAuth2 connection (authorization code grant): where the user signs in to
    /// finish connecting (also `POST /api/v1/connections/{id}/authorize`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authorize_url: Option<String>,
}

/// Where to send a user to sign in.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuthorizeView {
    pub id: String,
    /// Open this in a browser: the app's sign-in page. It comes back to `/oauth/callback`.
    pub authorize_url: String,
    /// The callback address the app must allow (register it with the OAuth app).
    pub redirect_uri: String,
    /// The sign-in must finish before this time (RFC 3339); then ask for a new address.
    pub expires_at: String,
}

/// New credentials for an existing connection.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCredentials {
    /// As in `POST /api/v1/connections`.
    #[schema(value_type = Object)]
    pub credentials: Value,
}

/// How long a sign-in may take, from the authorize address to the callback.
pub const AUTHORIZE_TTL_MS: i64 = 10 * 60 * 1000;

/// The view of a stored connection.
pub fn connection_view(r: &ConnectionRow) -> ConnectionView {
    ConnectionView {
        id: r.id.clone(),
        app: r.app.clone(),
        name: r.name.clone(),
        status: r.status.clone(),
        status_message: r.status_message.clone(),
        tested_at: r.tested_at.map(ts),
        rate_limit: r.rate_limit.map(|l| RateLimit { calls: l.calls, per: Duration::from_millis(l.per_ms.max(0) as u64) }),
        created_at: ts(r.created_at),
        updated_at: ts(r.updated_at),
        authorize_url: None,
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewConnection {
    /// The id recipes write as `connection:`: lowercase letters, digits, `-` and `_`, at most
    /// 63 characters. It cannot change later (the name can).
    pub id: String,
    /// The app it connects to (`smtp`; `http` for credentials put on `http.request` calls).
    pub app: String,
    /// A label; defaults to the id.
    pub name: Option<String>,
    /// The credentials, by kind: `{"kind": "bearer", "token": "..."}`,
    /// `{"kind": "api_key", "header": "X-Api-Key", "key": "..."}`,
    /// `{"kind": "basic", "username": "...", "password": "..."}`,
    /// `{"kind": "smtp", "host": "smtp.example.com", "port": 587, "username": "...", "password": "...", "tls": "starttls"}`
    /// (`tls`: `starttls`, `tls` or `none`; optional `ca_certificate`, PEM). The kind must be
    /// one the app takes. Stored encrypted; never shown again.
    #[schema(value_type = Object)]
    pub credentials: Value,
    /// Optional: at most `calls` calls per `per` (`{"calls": 100, "per": "1m"}`) with this
    /// connection, shared by every recipe using it, on top of the app's own limit.
    #[schema(value_type = Option<Object>)]
    pub rate_limit: Option<RateLimit>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rename {
    /// The new label. The id, which recipes reference, does not change.
    pub name: String,
}

/// The outcome of a connection test.
#[derive(Debug, Serialize, ToSchema)]
pub struct TestView {
    pub id: String,
    /// `ok`, `error`, or `untested` when the app has no connection test.
    pub status: String,
    /// What the app answered, or why the test could not run.
    pub message: String,
    /// For `error`: the error class (`auth`, `transient`, `permanent`...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    /// When the test ran (absent for `untested`: nothing was recorded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tested_at: Option<String>,
}

fn id_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_')
        && s.as_bytes()[0].is_ascii_alphanumeric()
}

/// Checks a connection's label.
pub fn check_name(name: &str) -> Result<String, ApiError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(ApiError::invalid("name", "is empty; give the connection a label, like `Marketing mailbox`"));
    }
    if name.chars().count() > 100 {
        return Err(ApiError::invalid("name", "is longer than 100 characters"));
    }
    if name.chars().any(char::is_control) {
        return Err(ApiError::invalid("name", "contains a line break or another control character"));
    }
    Ok(name.to_string())
}

/// Whether steps or triggers of this app can use a connection: it has actions or polling
/// triggers (the built-in `webhook`, `schedule` and `enlace` apps have neither).
pub fn takes_connections(connector: &enlace_core::Connector) -> bool {
    !connector.manifest.actions.is_empty() || connector.manifest.triggers.iter().any(|t| t.kind == enlace_core::TriggerKind::Polling)
}

/// What a new connection will store, checked: the id, the app (installed, and taking
/// connections), the name, the credentials against the app's auth kind, the rate limit.
pub fn check_new(registry: &Registry, c: &NewConnection) -> Result<(String, Credentials, Option<RateSpec>), ApiError> {
    if !id_ok(&c.id) {
        return Err(ApiError::invalid(
            "id",
            format!(
                "`{}` is not a valid connection id: use lowercase letters, digits, `-` and `_` (at most 63), starting with a letter or digit",
                c.id
            ),
        ));
    }
    let Some(connector) = registry.get(&c.app) else {
        return Err(ApiError::invalid("app", format!("no app `{}`; installed: {}", c.app, registry.app_ids().join(", "))));
    };
    if !takes_connections(connector) {
        return Err(ApiError::invalid("app", format!("the app `{}` is built in and takes no connection", c.app)));
    }
    let name = match &c.name {
        Some(n) => check_name(n)?,
        None => c.id.clone(),
    };
    let credentials = check_credentials(connector, &c.credentials)?;
    let rate = match c.rate_limit {
        None => None,
        Some(l) => {
            let spec = RateSpec { calls: l.calls, per_ms: i64::try_from(l.per.as_millis()).unwrap_or(i64::MAX) };
            spec.check().map_err(|e| ApiError::invalid("rate_limit", e))?;
            Some(spec)
        }
    };
    Ok((name, credentials, rate))
}

/// Credentials for an app, checked against its auth kind. An OAuth2 connection with a
/// `grant` takes the app's declared authorization server, and the installation's client id
/// and secret (`ENLACE_OAUTH_<APP>_CLIENT_ID`, `ENLACE_OAUTH_<APP>_CLIENT_SECRET`) when it
/// names none.
pub fn check_credentials(connector: &enlace_core::Connector, value: &Value) -> Result<Credentials, ApiError> {
    let mut value = value.clone();
    if let Some(map) = value.as_object_mut()
        && map.get("kind").and_then(Value::as_str) == Some("oauth2")
        && map.contains_key("grant")
    {
        let prefix = format!("ENLACE_OAUTH_{}", connector.id().to_ascii_uppercase());
        for (field, var) in [("client_id", format!("{prefix}_CLIENT_ID")), ("client_secret", format!("{prefix}_CLIENT_SECRET"))] {
            if !map.contains_key(field)
                && let Ok(v) = std::env::var(&var)
                && !v.trim().is_empty()
            {
                map.insert(field.to_string(), Value::String(v));
            }
        }
    }
    parse_credentials_with(&value, connector.manifest.auth, connector.manifest.oauth2.as_ref())
        .map_err(|e| ApiError::invalid(&e.path, e.message))
}

/// Starts a sign-in for an OAuth2 connection (authorization code grant): a fresh `state`
/// and PKCE verifier are stored (the verifier sealed), and the app's sign-in address is
/// returned. `base` is Enlace's public address (`ENLACE_PUBLIC_URL`).
pub async fn start_authorization(runner: &Runner, id: &str, base: &str) -> Result<AuthorizeView, ApiError> {
    let Some((_, credentials)) = runner.store().connection(id).await? else {
        return Err(ApiError::not_found(format!("no connection `{id}`")));
    };
    let Credentials::OAuth2Grant(g) = credentials else {
        return Err(ApiError::invalid(
            "id",
            format!(
                "the connection `{id}` is not an OAuth2 connection with a sign-in; give it new credentials with PUT /api/v1/connections/{id}/credentials"
            ),
        ));
    };
    if g.grant != GrantType::AuthorizationCode {
        return Err(ApiError::invalid("id", format!("the connection `{id}` uses the client credentials grant: it needs no sign-in")));
    }
    let redirect_uri = format!("{}/oauth/callback", base.trim_end_matches('/'));
    let start = enlace_kit::oauth::authorization_start(&g, &redirect_uri).map_err(|e| ApiError::invalid("credentials", e.to_string()))?;
    let now = runner.now_ms();
    let expires_at = now + AUTHORIZE_TTL_MS;
    runner
        .store()
        .begin_authorization(PendingAuthorization {
            state: start.state,
            connection_id: id.to_string(),
            verifier: start.verifier.expose().to_string(),
            redirect_uri: redirect_uri.clone(),
            created_at: now,
            expires_at,
        })
        .await?;
    Ok(AuthorizeView { id: id.to_string(), authorize_url: start.url, redirect_uri, expires_at: ts(expires_at) })
}

/// After a connection got credentials: an OAuth2 client credentials connection gets its
/// first token now (so a wrong secret shows at once); a sign-in connection is marked as
/// waiting for its sign-in.
pub async fn first_token(runner: &Runner, id: &str, credentials: &Credentials) -> Result<(), ApiError> {
    let Credentials::OAuth2Grant(g) = credentials else { return Ok(()) };
    let now = runner.now_ms();
    if g.grant == GrantType::ClientCredentials || g.can_refresh() {
        match runner.connection_credentials(id).await {
            Ok(_) => {}
            Err(e) => {
                // A refused grant already marked the connection; anything else is recorded here.
                if e.class() != enlace_core::ErrorClass::Auth {
                    runner.store().set_connection_status(id, "error", &e.to_string(), now).await?;
                }
            }
        }
    } else {
        runner
            .store()
            .set_connection_status(
                id,
                enlace_runner::oauth::NEEDS_RECONNECT,
                "not signed in yet: open the authorize address to finish connecting",
                now,
            )
            .await?;
    }
    Ok(())
}

/// The public address to build the callback from: `ENLACE_PUBLIC_URL`, else the address
/// this request came to.
pub fn public_base(configured: Option<&str>, headers: &axum::http::HeaderMap) -> String {
    if let Some(b) = configured.filter(|b| !b.is_empty()) {
        return b.trim_end_matches('/').to_string();
    }
    let host = headers.get(axum::http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1:8080");
    format!("http://{host}")
}

/// Tests a connection with its app's test and records the outcome on it (`ok` or `error`
/// with the message). An app without a test records nothing and says so. A passing test
/// repairs the connection: runs held for it resume.
pub async fn run_test(runner: &Runner, id: &str, now: i64) -> Result<TestView, ApiError> {
    let store = runner.store();
    let registry = runner.registry();
    let http = runner.transport().clone();
    let Some((row, stored)) = store.connection(id).await? else {
        return Err(ApiError::not_found(format!("no connection `{id}`")));
    };
    let mut secrets: Vec<String> = stored.secret_values().into_iter().filter(|s| !s.is_empty()).map(str::to_string).collect();
    let credentials = match &stored {
        // An OAuth2 connection is tested with a fresh token (refreshed first if it expires soon).
        Credentials::OAuth2Grant(_) => match runner.connection_credentials(id).await {
            Ok(c) => c,
            Err(e) => {
                let message = e.to_string();
                let status = if e.class() == enlace_core::ErrorClass::Auth { enlace_runner::oauth::NEEDS_RECONNECT } else { "error" };
                let row = store
                    .set_connection_status(id, status, &message, now)
                    .await?
                    .ok_or_else(|| ApiError::not_found(format!("no connection `{id}`")))?;
                return Ok(TestView {
                    id: row.id,
                    status: status.into(),
                    message,
                    class: Some(e.class().as_str().into()),
                    tested_at: row.tested_at.map(ts),
                });
            }
        },
        other => other.clone(),
    };
    secrets.extend(credentials.secret_values().into_iter().map(str::to_string));
    let Some(connector) = registry.get(&row.app) else {
        return Err(ApiError::new(
            Code::Conflict,
            format!("the connection `{id}` is for the app `{}`, which is not installed here", row.app),
        ));
    };
    let secrets: Vec<String> = credentials.secret_values().into_iter().filter(|s| !s.is_empty()).map(str::to_string).collect();
    let ctx = ConnectionContext { connection_id: id.to_string(), credentials, http, timeout: TEST_TIMEOUT };
    let (status, message, class) = match connector.test_connection(&ctx).await {
        TestOutcome::Ok(m) => ("ok", m, None),
        TestOutcome::Failed(e) => ("error", e.to_string(), Some(e.class().as_str().to_string())),
        TestOutcome::Unavailable(m) => {
            return Ok(TestView { id: row.id, status: "untested".into(), message: m, class: None, tested_at: None });
        }
    };
    // A server never echoes a password, but a message is shown and stored: make sure.
    let message = secrets.iter().fold(message, |m, s| m.replace(s.as_str(), "[secret]"));
    let row = store
        .set_connection_status(id, status, &message, now)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no connection `{id}` (it was deleted during the test)")))?;
    if status == "ok" {
        runner.connection_repaired(id).await?;
    }
    Ok(TestView { id: row.id, status: status.into(), message, class, tested_at: row.tested_at.map(ts) })
}

/// Every connection (never the credentials).
#[utoipa::path(get, path = "/api/v1/connections", tag = "connections", responses((status = 200, body = Vec<ConnectionView>)))]
pub async fn list(State(s): State<AppState>) -> ApiResult<Json<Vec<ConnectionView>>> {
    let rows = s.runner.store().list_connections().await?;
    Ok(Json(rows.iter().map(connection_view).collect()))
}

/// Creates a connection. The credentials are checked against the app's auth kind (an
/// error names the field), encrypted at rest, and never returned.
#[utoipa::path(post, path = "/api/v1/connections", tag = "connections", request_body = NewConnection, responses((status = 201, body = ConnectionView), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create(
    State(s): State<AppState>,
    headers: axum::http::HeaderMap,
    Json(c): Json<NewConnection>,
) -> ApiResult<(StatusCode, Json<ConnectionView>)> {
    let (name, credentials, rate) = check_new(s.runner.registry(), &c)?;
    s.runner.store().create_connection(&c.id, &c.app, &name, &credentials, rate, s.runner.now_ms()).await?;
    first_token(&s.runner, &c.id, &credentials).await?;
    let row = s
        .runner
        .store()
        .connection(&c.id)
        .await?
        .map(|(r, _)| r)
        .ok_or_else(|| ApiError::not_found(format!("no connection `{}`", c.id)))?;
    let mut view = connection_view(&row);
    if let Credentials::OAuth2Grant(g) = &credentials
        && g.grant == GrantType::AuthorizationCode
        && !g.can_refresh()
    {
        let base = public_base(s.shared.config.public_url.as_deref(), &headers);
        view.authorize_url = Some(start_authorization(&s.runner, &c.id, &base).await?.authorize_url);
    }
    Ok((StatusCode::CREATED, Json(view)))
}

/// Starts (or restarts) the sign-in of an OAuth2 connection: returns the app's sign-in
/// address. After the user consents, the app sends them to `/oauth/callback`, which stores
/// the tokens and resumes the runs that waited for the connection. Use it to reconnect a
/// connection marked `needs_reconnect`; its refresh token is kept if the app sends no new one.
#[utoipa::path(post, path = "/api/v1/connections/{id}/authorize", tag = "connections", params(("id" = String, Path)), responses((status = 200, body = AuthorizeView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn authorize(
    State(s): State<AppState>,
    headers: axum::http::HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<AuthorizeView>> {
    let base = public_base(s.shared.config.public_url.as_deref(), &headers);
    Ok(Json(start_authorization(&s.runner, &id, &base).await?))
}

/// Replaces a connection's credentials (checked like at creation, then encrypted). The
/// connection's status starts again from `untested`, and the runs that waited for it
/// (held after the app refused the old credentials) resume.
#[utoipa::path(put, path = "/api/v1/connections/{id}/credentials", tag = "connections", params(("id" = String, Path)), request_body = NewCredentials, responses((status = 200, body = ConnectionView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn set_credentials(
    State(s): State<AppState>,
    headers: axum::http::HeaderMap,
    Path(id): Path<String>,
    Json(c): Json<NewCredentials>,
) -> ApiResult<Json<ConnectionView>> {
    let Some((row, _)) = s.runner.store().connection(&id).await? else {
        return Err(ApiError::not_found(format!("no connection `{id}`")));
    };
    let Some(connector) = s.runner.registry().get(&row.app) else {
        return Err(ApiError::new(
            Code::Conflict,
            format!("the connection `{id}` is for the app `{}`, which is not installed here", row.app),
        ));
    };
    let credentials = check_credentials(connector, &c.credentials)?;
    let now = s.runner.now_ms();
    s.runner.store().save_connection_credentials(&id, &credentials, Some(("untested", "new credentials")), now).await?;
    first_token(&s.runner, &id, &credentials).await?;
    let needs_sign_in = matches!(&credentials, Credentials::OAuth2Grant(g) if g.grant == GrantType::AuthorizationCode && !g.can_refresh());
    if !needs_sign_in {
        s.runner.connection_repaired(&id).await?;
    }
    let row =
        s.runner.store().connection(&id).await?.map(|(r, _)| r).ok_or_else(|| ApiError::not_found(format!("no connection `{id}`")))?;
    let mut view = connection_view(&row);
    if needs_sign_in {
        let base = public_base(s.shared.config.public_url.as_deref(), &headers);
        view.authorize_url = Some(start_authorization(&s.runner, &id, &base).await?.authorize_url);
    }
    Ok(Json(view))
}

/// One connection (never its credentials).
#[utoipa::path(get, path = "/api/v1/connections/{id}", tag = "connections", params(("id" = String, Path)), responses((status = 200, body = ConnectionView), (status = 404, body = ErrorBody)))]
pub async fn get(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<ConnectionView>> {
    match s.runner.store().connection(&id).await? {
        Some((row, _)) => Ok(Json(connection_view(&row))),
        None => Err(ApiError::not_found(format!("no connection `{id}`"))),
    }
}

/// Renames a connection: the label changes, the id (which recipes reference) does not.
#[utoipa::path(patch, path = "/api/v1/connections/{id}", tag = "connections", params(("id" = String, Path)), request_body = Rename, responses((status = 200, body = ConnectionView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn rename(State(s): State<AppState>, Path(id): Path<String>, Json(r): Json<Rename>) -> ApiResult<Json<ConnectionView>> {
    let name = check_name(&r.name)?;
    match s.runner.store().rename_connection(&id, &name, s.runner.now_ms()).await? {
        Some(row) => Ok(Json(connection_view(&row))),
        None => Err(ApiError::not_found(format!("no connection `{id}`"))),
    }
}

/// Deletes a connection. Runs that use it fail with a clear error until it is created again.
#[utoipa::path(delete, path = "/api/v1/connections/{id}", tag = "connections", params(("id" = String, Path)), responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    if s.runner.store().delete_connection(&id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("no connection `{id}`")))
    }
}

/// Tests a connection: the app checks the credentials (for SMTP: connect, encrypt, log in,
/// quit; nothing is sent). The outcome is recorded on the connection (`status`,
/// `status_message`, `tested_at`) and returned; a failed test is a 200 with `status: error`.
#[utoipa::path(post, path = "/api/v1/connections/{id}/test", tag = "connections", params(("id" = String, Path)), responses((status = 200, body = TestView), (status = 404, body = ErrorBody)))]
pub async fn test(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<TestView>> {
    Ok(Json(run_test(&s.runner, &id, s.runner.now_ms()).await?))
}
