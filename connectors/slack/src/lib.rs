//! The `slack` app: post messages to Slack channels, direct messages and threads.
//!
//! One action, [`post_message::PostMessage`] (`slack.post_message`), over Slack's Web API
//! with a bot token (a bearer connection), and a connection test ([`post_message::AuthTest`],
//! `auth.test`). Slack answers most errors with HTTP 200 and
//! `{"ok": false, "error": "..."}`: those are classified with
//! `enlace_kit::check_ok_response`, the codes that point at a field of the step naming it.
//! What the app does for end users is in this folder's README.md.

pub mod post_message;

use std::time::Duration;

use enlace_core::{AuthKind, Connector, RateLimit};

/// The app id recipes use (`app: slack`).
pub const APP_ID: &str = "slack";

/// Slack's Web API.
pub const API_BASE: &str = "https://slack.com/api";

/// The `slack` connector, talking to Slack.
pub fn connector() -> Connector {
    connector_at(API_BASE)
}

/// The `slack` connector with another Web API base address, for tests only: they point it
/// at a local server (a recorded-response server, or Prism serving Slack's own API
/// description). The installation always uses [`connector`].
pub fn connector_at(api_base: &str) -> Connector {
    Connector::builder(APP_ID, "Slack", "Post messages to Slack channels, direct messages and threads, as text or Block Kit blocks.")
        .auth(AuthKind::Bearer)
        // chat.postMessage: Slack allows about one message per second per channel (short
        // bursts tolerated) and answers 429 with Retry-After beyond that. One per second per
        // connection is that limit for a connection that posts to one channel, and on the safe
        // side for one that posts to several; a connection may set its own.
        .rate_limit(RateLimit { calls: 1, per: Duration::from_secs(1) })
        .connection_test(post_message::AuthTest::new(api_base))
        .action(post_message::PostMessage::new(api_base))
        .build()
}

#[cfg(test)]
mod tests;
