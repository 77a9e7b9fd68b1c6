//! The `http` app: call any web address or API from a recipe.
//!
//! One action, [`request::Request`] (`http.request`). It needs no connection, but when a
//! step names one, the connection's credentials (any kind) are put on the request. What
//! the app does for end users is in this folder's README.md.

pub mod request;

use enlace_core::{AuthKind, Connector};

/// The app id recipes use (`app: http`).
pub const APP_ID: &str = "http";

/// The `http` connector.
pub fn connector() -> Connector {
    Connector::builder(
        APP_ID,
        "HTTP",
        "Call any web address or API: send GET, POST, PUT, PATCH or DELETE requests with JSON, form or text bodies, and use the answer in later steps.",
    )
    .auth(AuthKind::None)
    .action(request::Request)
    .build()
}

#[cfg(test)]
mod tests;
