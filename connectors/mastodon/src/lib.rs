//! The `mastodon` app: post statuses on any Mastodon instance, read the account's recent
//! statuses, and read the instance's limits.
//!
//! The instance is part of the connection: an `oauth2` connection whose `authorize_url` and
//! `token_url` are the instance's (`https://INSTANCE/oauth/authorize`, `/oauth/token`), with
//! the client id and secret of an application registered on that instance. Actions take the
//! instance's address as `instance` (the social scheduler fills it in from the connection).
//! `post` sends the step's idempotency key as `Idempotency-Key` (the instance keeps it for
//! an hour), so a resend of the same step makes no second status. What the app does for
//! end users is in this folder's README.md.

pub mod actions;

use std::time::Duration;

use enlace_core::{AuthKind, Connector, OAuth2App, RateLimit};

/// The app id recipes use (`app: mastodon`).
pub const APP_ID: &str = "mastodon";

/// The `mastodon` connector. Its OAuth2 addresses are a placeholder: every connection names
/// its own instance's.
pub fn connector() -> Connector {
    Connector::builder(APP_ID, "Mastodon", "Post statuses (text, media, visibility, content warning, language) on a Mastodon instance.")
        .auth(AuthKind::OAuth2)
        .oauth2(OAuth2App {
            authorize_url: "https://mastodon.example/oauth/authorize".into(),
            token_url: "https://mastodon.example/oauth/token".into(),
            scopes: vec!["read:accounts".into(), "read:statuses".into(), "write:statuses".into(), "write:media".into()],
            authorize_params: Default::default(),
            client_auth: Default::default(),
        })
        // Mastodon's default: 300 calls per 5 minutes per account; media uploads 30 per 30
        // minutes. The answers' X-RateLimit-* headers hold the connection when it is spent.
        .rate_limit(RateLimit { calls: 300, per: Duration::from_secs(300) })
        .action(actions::Post)
        .action(actions::RecentPosts)
        .action(actions::InstanceLimits)
        .build()
}

#[cfg(test)]
mod tests;
