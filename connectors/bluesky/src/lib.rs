//! The `bluesky` app: post on Bluesky (or any AT Protocol PDS) with an app password, and
//! read the account's recent posts.
//!
//! A connection is `basic` credentials: `username` is the account's handle (or its email),
//! `password` an app password. Actions sign in with `com.atproto.server.createSession` and
//! keep the session (its access and refresh tokens) in memory, per account, for the life of
//! the process: a token that expired (`ExpiredToken`) is renewed with
//! `com.atproto.server.refreshSession`, and when the refresh token is refused too the
//! action signs in again. The connector framework has no place to store tokens an action
//! makes (the runner stores OAuth2 tokens it refreshes itself), so a restart signs in once
//! more; tokens are never logged nor put in an error message.
//!
//! The PDS is `https://bsky.social` unless an action is given another `service` (the
//! social scheduler passes a channel's `service` parameter); tests point the whole app at a
//! local server with [`connector_at`]. What the app does for end users is in this folder's
//! README.md.

pub mod actions;
pub mod facets;
pub mod xrpc;

#[cfg(any(test, feature = "testing"))]
pub mod testing;

use std::sync::Arc;
use std::time::Duration;

use enlace_core::{AuthKind, Connector, RateLimit};

/// The app id recipes use (`app: bluesky`).
pub const APP_ID: &str = "bluesky";

/// The PDS an account signs in to when no `service` is given (Bluesky's entryway, which
/// serves every account hosted by Bluesky).
pub const DEFAULT_SERVICE: &str = "https://bsky.social";

/// The `bluesky` connector, on Bluesky's own PDS.
pub fn connector() -> Connector {
    connector_at(DEFAULT_SERVICE)
}

/// The connector with another default PDS (tests: a local server).
pub fn connector_at(service: &str) -> Connector {
    let sessions = Arc::new(xrpc::Sessions::default());
    let service = service.trim_end_matches('/').to_string();
    Connector::builder(
        APP_ID,
        "Bluesky",
        "Post on Bluesky with an app password: text with links, mentions and hashtags, images with alt text, languages.",
    )
    .auth(AuthKind::Basic)
    // A PDS lets an account create records for 5,000 points an hour (a post costs 3, so
    // about 1,666 posts) and answers `RateLimit-*` headers on every call, which hold the
    // connection when its budget is spent; a 429 waits for its reset.
    .rate_limit(RateLimit { calls: 1_500, per: Duration::from_secs(3600) })
    .action(actions::Post { service: service.clone(), sessions: sessions.clone() })
    .action(actions::RecentPosts { service: service.clone(), sessions: sessions.clone() })
    .connection_test(actions::SignIn { service, sessions })
    .build()
}

#[cfg(test)]
mod tests;
