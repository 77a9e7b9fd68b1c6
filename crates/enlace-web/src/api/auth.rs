//! Bearer tokens on the API. Tokens are random, shown once, and stored as SHA-256 hashes.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::error::{ApiError, Code};

/// The token's name, for handlers that log who did what.
#[derive(Clone, Debug)]
pub struct Caller(pub String);

pub async fn require_token(State(s): State<AppState>, mut req: Request, next: Next) -> Response {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim);
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return ApiError::new(Code::Unauthorized, "send `Authorization: Bearer <token>`; create a token with `enlace tokens create NAME`")
            .into_response();
    };
    match s.runner.store().verify_token(token).await {
        Ok(Some(row)) => {
            req.extensions_mut().insert(Caller(row.name));
            next.run(req).await
        }
        Ok(None) => ApiError::new(
            Code::Unauthorized,
            "this token is not valid (revoked, or never issued); create one with `enlace tokens create NAME`",
        )
        .into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}
