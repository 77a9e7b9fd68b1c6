//! The `twilio` app: send SMS and MMS through Twilio's Programmable Messaging.
//!
//! One action, [`send_sms::SendSms`] (`twilio.send_sms`), over Twilio's REST API with the
//! account's SID and auth token (a basic connection), and a connection test
//! ([`send_sms::FetchAccount`]: it reads the account). Two triggers Twilio calls on
//! `/hooks/{path}` ([`inbound`]: `twilio.inbound_sms`, `twilio.status_callback`), signed by
//! Twilio with the auth token; an inbound STOP withdraws the sender's SMS consent in the
//! contact store, and `send_sms` refuses a number whose latest SMS decision is a withdrawal. Twilio has no idempotency key for
//! messages, so the action is not idempotent: a request that left without an answer is
//! "maybe delivered", never sent again blindly. What the app does for end users is in this
//! folder's README.md.

pub mod inbound;
pub mod send_sms;

use std::time::Duration;

use enlace_core::{AuthKind, Connector, RateLimit};

/// The app id recipes use (`app: twilio`).
pub const APP_ID: &str = "twilio";

/// Twilio's REST API.
pub const API_BASE: &str = "https://api.twilio.com";

/// The `twilio` connector, talking to Twilio.
pub fn connector() -> Connector {
    connector_at(API_BASE)
}

/// The `twilio` connector with another REST API base address, for tests only: they point
/// it at a local server (a recorded-response server, or Prism serving Twilio's own API
/// description). The installation always uses [`connector`].
pub fn connector_at(api_base: &str) -> Connector {
    Connector::builder(
        APP_ID,
        "Twilio",
        "Send SMS and MMS text messages through Twilio, from a phone number or a Messaging Service; receive SMS and delivery statuses.",
    )
    .auth(AuthKind::Basic)
    // Twilio queues accepted messages and sends them at each sender's own rate (one
    // segment per second for a long code); the API itself refuses bursts beyond an
    // account's concurrency with 429 / error 20429. Ten requests per second per
    // connection stays well inside that; a connection may set its own.
    .rate_limit(RateLimit { calls: 10, per: Duration::from_secs(1) })
    .connection_test(send_sms::FetchAccount::new(api_base))
    .action(send_sms::SendSms::new(api_base))
    .inbound_trigger(inbound::TwilioHook::inbound_sms())
    .inbound_trigger(inbound::TwilioHook::status_callback())
    .build()
}

#[cfg(test)]
mod inbound_tests;
#[cfg(test)]
mod tests;
