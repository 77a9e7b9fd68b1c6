//! One table of API errors: every error Enlace's HTTP interface returns has a code from
//! here, its HTTP status, and the body `{code, message, path?, request_id}`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use enlace_recipe::Diagnostic;
use enlace_runner::RunnerError;
use enlace_store::StoreError;
use serde::Serialize;
use utoipa::ToSchema;

/// Every error code, with its status and what it means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Code {
    /// No or an unknown bearer token.
    Unauthorized,
    /// The webhook's signature is missing or does not match its body.
    BadSignature,
    /// No such object (recipe, run, token...).
    NotFound,
    /// The contact was erased (GDPR): nothing about it is kept.
    Erased,
    /// No enabled recipe listens on this hook path.
    HookNotFound,
    /// The request body is larger than allowed.
    PayloadTooLarge,
    /// The body is not valid JSON.
    InvalidJson,
    /// The body's content type is not one we read.
    UnsupportedMediaType,
    /// Over the inbound limit: retry after `Retry-After`.
    RateLimited,
    /// A recipe did not validate; `diagnostics` lists every problem.
    InvalidRecipe,
    /// A parameter or field of the request is wrong; `path` names it.
    InvalidRequest,
    /// The request conflicts with the current state (a used name, a run already ended).
    Conflict,
    /// A synchronous webhook's run failed.
    RunFailed,
    /// The database cannot be reached.
    Unavailable,
    /// A bug or an unexpected failure; the request id is in the logs.
    Internal,
}

impl Code {
    pub fn status(self) -> StatusCode {
        match self {
            Code::Unauthorized | Code::BadSignature => StatusCode::UNAUTHORIZED,
            Code::NotFound | Code::HookNotFound => StatusCode::NOT_FOUND,
            Code::Erased => StatusCode::GONE,
            Code::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Code::InvalidJson | Code::InvalidRequest => StatusCode::BAD_REQUEST,
            Code::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Code::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Code::InvalidRecipe => StatusCode::UNPROCESSABLE_ENTITY,
            Code::Conflict => StatusCode::CONFLICT,
            Code::RunFailed => StatusCode::BAD_GATEWAY,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Code::Unauthorized => "unauthorized",
            Code::BadSignature => "bad_signature",
            Code::NotFound => "not_found",
            Code::Erased => "erased",
            Code::HookNotFound => "hook_not_found",
            Code::PayloadTooLarge => "payload_too_large",
            Code::InvalidJson => "invalid_json",
            Code::UnsupportedMediaType => "unsupported_media_type",
            Code::RateLimited => "rate_limited",
            Code::InvalidRecipe => "invalid_recipe",
            Code::InvalidRequest => "invalid_request",
            Code::Conflict => "conflict",
            Code::RunFailed => "run_failed",
            Code::Unavailable => "unavailable",
            Code::Internal => "internal",
        }
    }

    /// Every code, for the docs and the table test.
    pub const ALL: [Code; 15] = [
        Code::Unauthorized,
        Code::BadSignature,
        Code::NotFound,
        Code::Erased,
        Code::HookNotFound,
        Code::PayloadTooLarge,
        Code::InvalidJson,
        Code::UnsupportedMediaType,
        Code::RateLimited,
        Code::InvalidRecipe,
        Code::InvalidRequest,
        Code::Conflict,
        Code::RunFailed,
        Code::Unavailable,
        Code::Internal,
    ];
}

/// The body of every error.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub code: Code,
    pub message: String,
    /// The path of the value at fault (`steps[1].with.url`, `limit`), when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Also in the `x-request-id` header and in the logs.
    pub request_id: String,
    /// For `invalid_recipe`: every problem found.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub diagnostics: Option<Vec<Diagnostic>>,
    /// For `run_failed`: the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
}

/// An error on its way to the client. The request id is filled in by the request-id layer.
#[derive(Debug)]
pub struct ApiError {
    pub code: Code,
    pub message: String,
    pub path: Option<String>,
    pub diagnostics: Option<Vec<Diagnostic>>,
    pub run_id: Option<String>,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        ApiError { code, message: message.into(), path: None, diagnostics: None, run_id: None, retry_after: None }
    }
    pub fn at(mut self, path: impl Into<String>) -> Self {
        self.path = Some(path.into());
        self
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(Code::NotFound, message)
    }
    pub fn invalid(path: &str, message: impl Into<String>) -> Self {
        ApiError::new(Code::InvalidRequest, message).at(path)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(m) => ApiError::new(Code::NotFound, m),
            StoreError::Conflict(m) => ApiError::new(Code::Conflict, m),
            StoreError::Invalid(m) => ApiError::new(Code::InvalidRequest, m),
            StoreError::Database(m) if m.contains("unable to open") || m.contains("pool timed out") => {
                tracing::error!(error = %m, "database unavailable");
                ApiError::new(Code::Unavailable, "the database cannot be reached; try again shortly")
            }
            StoreError::Closed => ApiError::new(Code::Unavailable, "Enlace is shutting down; try again shortly"),
            other => {
                tracing::error!(error = %other, "store error");
                ApiError::new(Code::Internal, "an unexpected error occurred; the request id is in the logs")
            }
        }
    }
}

impl From<RunnerError> for ApiError {
    fn from(e: RunnerError) -> Self {
        match e {
            RunnerError::NotFound(m) => ApiError::new(Code::NotFound, m),
            RunnerError::Conflict(m) => ApiError::new(Code::Conflict, m),
            RunnerError::Invalid(m) => ApiError::new(Code::InvalidRequest, m),
            RunnerError::Store(s) => s.into(),
        }
    }
}

/// The request id of the request being answered, set by the request-id layer.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

tokio::task_local! {
    pub static REQUEST_ID: String;
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let request_id = REQUEST_ID.try_with(|r| r.clone()).unwrap_or_default();
        let status = self.code.status();
        if status.is_server_error() {
            tracing::error!(request_id = %request_id, code = self.code.as_str(), message = %self.message, "request failed");
        }
        let body = ErrorBody {
            code: self.code,
            message: self.message,
            path: self.path,
            request_id,
            diagnostics: self.diagnostics,
            run_id: self.run_id,
        };
        let mut resp = (status, Json(body)).into_response();
        if let Some(secs) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
