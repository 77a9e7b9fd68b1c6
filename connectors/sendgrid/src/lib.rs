//! The `sendgrid` app: send email through Twilio SendGrid's v3 Mail Send API.
//!
//! One action, [`send_email::SendEmail`] (`sendgrid.send_email`), with an API key (a bearer
//! connection), and a connection test ([`send_email::ApiKeyScopes`]: it reads the key's
//! scopes and checks that `mail.send` is among them). SendGrid takes no idempotency key, so
//! the action is not idempotent: a request that left without an answer is "maybe
//! delivered", never sent again blindly. What the app does for end users is in this
//! folder's README.md.

pub mod send_email;

use std::time::Duration;

use enlace_core::{AuthKind, Connector, RateLimit};

/// The app id recipes use (`app: sendgrid`).
pub const APP_ID: &str = "sendgrid";

/// SendGrid's v3 Web API.
pub const API_BASE: &str = "https://api.sendgrid.com";

/// The `sendgrid` connector, talking to SendGrid.
pub fn connector() -> Connector {
    connector_at(API_BASE)
}

/// The `sendgrid` connector with another API base address, for tests only: they point it
/// at a local server (a recorded-response server, or Prism serving SendGrid's own API
/// description). The installation always uses [`connector`].
pub fn connector_at(api_base: &str) -> Connector {
    Connector::builder(
        APP_ID,
        "SendGrid",
        "Send email through Twilio SendGrid: plain text, HTML or dynamic templates, with unsubscribe groups, categories and scheduled sending.",
    )
    .auth(AuthKind::Bearer)
    // SendGrid answers 429 with X-RateLimit-Reset when an account goes beyond its limit.
    // Ten requests per second per connection keeps a recipe well inside it; a connection
    // may set its own.
    .rate_limit(RateLimit { calls: 10, per: Duration::from_secs(1) })
    .connection_test(send_email::ApiKeyScopes::new(api_base))
    .action(send_email::SendEmail::new(api_base))
    .build()
}

#[cfg(test)]
mod tests;
