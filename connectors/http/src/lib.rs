//! The `http` app: call any web address or API from a recipe.
//!
//! One action, [`request::Request`] (`http.request`), and two polling triggers,
//! [`poll_json::PollJson`] (`http.poll_json`: new items in a JSON feed) and
//! [`poll_feed::PollFeed`] (`http.poll_feed`: new entries in an RSS or Atom feed). Neither needs a
//! connection, but when a step or trigger names one, the connection's credentials (any
//! kind) are put on the request. What the app does for end users is in this folder's
//! README.md.

pub mod poll_feed;
pub mod poll_json;
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
    // 2: the `poll_feed` trigger.
    .version("2")
    .action(request::Request)
    .polling_trigger(poll_json::PollJson)
    .polling_trigger(poll_feed::PollFeed)
    .build()
}

#[cfg(test)]
mod poll_tests;
#[cfg(test)]
mod tests;
