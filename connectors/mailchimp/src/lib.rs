//! The `mailchimp` app: keep Mailchimp audiences up to date.
//!
//! One action, [`upsert_member::UpsertMember`] (`mailchimp.upsert_member`): adds or updates
//! an audience member (`PUT /3.0/lists/{list_id}/members/{subscriber_hash}`), with merge
//! fields and marketing permissions, then sets its tags (`POST .../tags`: the member upsert
//! does not change tags of an existing member). Basic authentication with any username and
//! the API key, whose `-us21` suffix names the account's data center, the host to call. A
//! connection test pings the API. The upsert is a PUT keyed by the email: repeating it is
//! harmless, so it is declared idempotent. What the app does for end users is in this
//! folder's README.md.

pub mod upsert_member;

use std::time::Duration;

use enlace_core::{AuthKind, Connector, RateLimit};

/// The app id recipes use (`app: mailchimp`).
pub const APP_ID: &str = "mailchimp";

/// Mailchimp's Marketing API; `{dc}` is the data center named by the API key's suffix.
pub const API_BASE: &str = "https://{dc}.api.mailchimp.com/3.0";

/// The `mailchimp` connector, talking to Mailchimp.
pub fn connector() -> Connector {
    connector_at(API_BASE)
}

/// The `mailchimp` connector with another API base address, for tests only: they point it
/// at a local server answering like Mailchimp (`{dc}` in it is replaced by the key's data
/// center, as in [`API_BASE`]). The installation always uses [`connector`].
pub fn connector_at(api_base: &str) -> Connector {
    Connector::builder(
        APP_ID,
        "Mailchimp",
        "Add or update members of Mailchimp audiences, with merge fields, tags and marketing permissions (GDPR consent).",
    )
    .auth(AuthKind::Basic)
    // Mailchimp allows 10 simultaneous connections per API key and answers 429 beyond
    // that; an upsert is one or two short calls, so ten per second per connection stays
    // inside it. A connection may set its own.
    .rate_limit(RateLimit { calls: 10, per: Duration::from_secs(1) })
    .connection_test(upsert_member::Ping::new(api_base))
    .action(upsert_member::UpsertMember::new(api_base))
    .build()
}

#[cfg(test)]
mod tests;
