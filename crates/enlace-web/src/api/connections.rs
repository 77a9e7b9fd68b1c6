//! Connections: create (credentials checked against the app's auth kind, then encrypted at
//! rest), list, show, rename, test and delete. No answer ever carries a credential.
//!
//! The checks and the test are public functions so that the CLI (`enlace connections`),
//! which opens the store directly, applies exactly the same rules.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use enlace_core::http::HttpTransport;
use enlace_core::{ConnectionContext, Credentials, RateLimit, Registry, TestOutcome, parse_credentials};
use enlace_store::{ConnectionRow, RateSpec, Store};
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
}

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
    let credentials = parse_credentials(&c.credentials, connector.manifest.auth).map_err(|e| ApiError::invalid(&e.path, e.message))?;
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

/// Tests a connection with its app's test and records the outcome on it (`ok` or `error`
/// with the message). An app without a test records nothing and says so.
pub async fn run_test(store: &Store, registry: &Registry, http: Arc<dyn HttpTransport>, id: &str, now: i64) -> Result<TestView, ApiError> {
    let Some((row, credentials)) = store.connection(id).await? else {
        return Err(ApiError::not_found(format!("no connection `{id}`")));
    };
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
pub async fn create(State(s): State<AppState>, Json(c): Json<NewConnection>) -> ApiResult<(StatusCode, Json<ConnectionView>)> {
    let (name, credentials, rate) = check_new(s.runner.registry(), &c)?;
    let r = s.runner.store().create_connection(&c.id, &c.app, &name, &credentials, rate, s.runner.now_ms()).await?;
    Ok((StatusCode::CREATED, Json(connection_view(&r))))
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
    let http = s.runner.transport().clone();
    Ok(Json(run_test(s.runner.store(), s.runner.registry(), http, &id, s.runner.now_ms()).await?))
}
