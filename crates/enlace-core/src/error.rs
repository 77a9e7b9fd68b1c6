//! The error classes every connector returns. The runner, not the connector, decides what
//! to do with each: a connector never sleeps or retries by itself.

use std::time::Duration;

use serde::Serialize;

/// The class of a [`ConnectorError`], as stored in run history and shown to users.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, Hash)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// The vendor said "too many requests"; retry after its `Retry-After`.
    RateLimited,
    /// A passing fault (5xx, connection refused, reset before the request was sent): retry
    /// with exponential backoff and jitter.
    Transient,
    /// The credentials were refused: refresh once, then hold until the connection is repaired.
    Auth,
    /// The vendor refused the request for good: fail now, no retry.
    Permanent,
    /// The input is wrong (with the path of the bad field): fail now, no retry.
    BadInput,
    /// The request left and no answer came back (a timeout after sending): it may have been
    /// delivered. Retried only when the action is idempotent.
    MaybeDelivered,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::RateLimited => "rate_limited",
            ErrorClass::Transient => "transient",
            ErrorClass::Auth => "auth",
            ErrorClass::Permanent => "permanent",
            ErrorClass::BadInput => "bad_input",
            ErrorClass::MaybeDelivered => "maybe_delivered",
        }
    }

    /// A sentence for run history: what this class means for the run.
    pub fn hint(self) -> &'static str {
        match self {
            ErrorClass::RateLimited => "the app asked us to slow down; the step is retried after the wait it gave",
            ErrorClass::Transient => "a passing fault; the step is retried with exponential backoff",
            ErrorClass::Auth => "the app refused the credentials; repair the connection, then replay the run",
            ErrorClass::Permanent => "the app refused the request for good; fix the recipe or the data, then replay",
            ErrorClass::BadInput => "a field of the step's input is wrong; fix it, then replay",
            ErrorClass::MaybeDelivered => {
                "the request left but no answer came back, so it may have been delivered; it is not sent again blindly: check the target, then replay or cancel"
            }
        }
    }
}

impl std::fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a connector returns when a call does not succeed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConnectorError {
    #[error("rate limited: {message}")]
    RateLimited { retry_after: Option<Duration>, message: String },
    #[error("transient failure: {message}")]
    Transient { message: String, retry_after: Option<Duration> },
    #[error("authentication refused: {message}")]
    Auth { message: String },
    #[error("permanent failure: {message}")]
    Permanent { message: String, status: Option<u16> },
    #[error("bad input at `{path}`: {message}")]
    BadInput { path: String, message: String },
    #[error("maybe delivered: {message}")]
    MaybeDelivered { message: String },
}

impl ConnectorError {
    pub fn class(&self) -> ErrorClass {
        match self {
            ConnectorError::RateLimited { .. } => ErrorClass::RateLimited,
            ConnectorError::Transient { .. } => ErrorClass::Transient,
            ConnectorError::Auth { .. } => ErrorClass::Auth,
            ConnectorError::Permanent { .. } => ErrorClass::Permanent,
            ConnectorError::BadInput { .. } => ErrorClass::BadInput,
            ConnectorError::MaybeDelivered { .. } => ErrorClass::MaybeDelivered,
        }
    }

    pub fn transient(message: impl Into<String>) -> Self {
        ConnectorError::Transient { message: message.into(), retry_after: None }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        ConnectorError::Permanent { message: message.into(), status: None }
    }

    pub fn bad_input(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConnectorError::BadInput { path: path.into(), message: message.into() }
    }

    pub fn auth(message: impl Into<String>) -> Self {
        ConnectorError::Auth { message: message.into() }
    }

    /// The wait the server asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ConnectorError::RateLimited { retry_after, .. } | ConnectorError::Transient { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The plain message, without the class prefix.
    pub fn message(&self) -> &str {
        match self {
            ConnectorError::RateLimited { message, .. }
            | ConnectorError::Transient { message, .. }
            | ConnectorError::Auth { message }
            | ConnectorError::Permanent { message, .. }
            | ConnectorError::BadInput { message, .. }
            | ConnectorError::MaybeDelivered { message } => message,
        }
    }

    /// The JSON stored in run history for this error.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "class": self.class().as_str(),
            "message": self.message(),
            "hint": self.class().hint(),
        });
        if let Some(ra) = self.retry_after() {
            v["retry_after_ms"] = serde_json::json!(ra.as_millis() as u64);
        }
        match self {
            ConnectorError::BadInput { path, .. } => v["path"] = serde_json::json!(path),
            ConnectorError::Permanent { status: Some(s), .. } => v["status"] = serde_json::json!(s),
            _ => {}
        }
        v
    }
}
