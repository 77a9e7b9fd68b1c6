//! Secrets and API tokens (connections are in `connections`).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::recipes::ts;
use crate::AppState;
use crate::error::{ApiError, ApiResult, ErrorBody};

fn slug_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_')
        && s.as_bytes()[0].is_ascii_alphanumeric()
}

fn secret_name_ok(s: &str) -> bool {
    !s.is_empty() && s.len() <= 100 && s.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SecretView {
    pub name: String,
    pub updated_at: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretValue {
    /// Stored encrypted; never returned by the API.
    pub value: String,
}

/// Secret names (never values).
#[utoipa::path(get, path = "/api/v1/secrets", tag = "secrets", responses((status = 200, body = Vec<SecretView>)))]
pub async fn list_secrets(State(s): State<AppState>) -> ApiResult<Json<Vec<SecretView>>> {
    let rows = s.runner.store().list_secrets().await?;
    Ok(Json(rows.into_iter().map(|(name, at)| SecretView { name, updated_at: ts(at) }).collect()))
}

/// Sets a secret, read by recipes as `{{secrets.NAME}}`.
#[utoipa::path(put, path = "/api/v1/secrets/{name}", tag = "secrets", params(("name" = String, Path)), request_body = SecretValue, responses((status = 204), (status = 400, body = ErrorBody)))]
pub async fn put_secret(State(s): State<AppState>, Path(name): Path<String>, Json(v): Json<SecretValue>) -> ApiResult<StatusCode> {
    if !secret_name_ok(&name) {
        return Err(ApiError::invalid("name", format!("`{name}` is not a valid secret name: use letters, digits, `_` and `-`")));
    }
    s.runner.store().set_secret(&name, &v.value, s.runner.now_ms()).await?;
    s.invalidate_secrets();
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes a secret.
#[utoipa::path(delete, path = "/api/v1/secrets/{name}", tag = "secrets", params(("name" = String, Path)), responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_secret(State(s): State<AppState>, Path(name): Path<String>) -> ApiResult<StatusCode> {
    s.invalidate_secrets();
    if s.runner.store().delete_secret(&name).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("no secret `{name}`")))
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenView {
    pub name: String,
    pub created_at: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    pub name: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedToken {
    pub name: String,
    /// Shown once: only its hash is kept.
    pub token: String,
}

/// API tokens (names only).
#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens", responses((status = 200, body = Vec<TokenView>)))]
pub async fn list_tokens(State(s): State<AppState>) -> ApiResult<Json<Vec<TokenView>>> {
    let rows = s.runner.store().list_tokens().await?;
    Ok(Json(rows.into_iter().map(|t| TokenView { name: t.name, created_at: ts(t.created_at) }).collect()))
}

/// Creates a token. The token is in this answer only.
#[utoipa::path(post, path = "/api/v1/tokens", tag = "tokens", request_body = NewToken, responses((status = 201, body = CreatedToken), (status = 409, body = ErrorBody)))]
pub async fn create_token(State(s): State<AppState>, Json(t): Json<NewToken>) -> ApiResult<(StatusCode, Json<CreatedToken>)> {
    if !slug_ok(&t.name) {
        return Err(ApiError::invalid("name", "use lowercase letters, digits, `-` and `_`"));
    }
    let (row, token) = s.runner.store().create_token(&t.name, s.runner.now_ms()).await?;
    Ok((StatusCode::CREATED, Json(CreatedToken { name: row.name, token })))
}

/// Revokes a token at once.
#[utoipa::path(delete, path = "/api/v1/tokens/{name}", tag = "tokens", params(("name" = String, Path)), responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn revoke_token(State(s): State<AppState>, Path(name): Path<String>) -> ApiResult<StatusCode> {
    if s.runner.store().revoke_token(&name).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("no token `{name}`")))
    }
}
