//! The `smtp` app: send email through any SMTP server (a mail provider's submission
//! server, a company relay, a transactional email service's SMTP endpoint).
//!
//! One action, [`send::SendEmail`] (`smtp.send_email`), and a connection test that logs in
//! and quits ([`client::TestLogin`]). SMTP is not HTTP, so the action sets `HTTP_ONLY =
//! false` (a dry run never calls it) and applies the installation's SSRF guard itself,
//! through `enlace_kit::ssrf`, with the policy the HTTP transport reports. What the app does
//! for end users is in this folder's README.md.

pub mod client;
pub mod message;
pub mod send;

use enlace_core::{AuthKind, Connector};

/// The app id recipes use (`app: smtp`).
pub const APP_ID: &str = "smtp";

/// The `smtp` connector.
pub fn connector() -> Connector {
    Connector::builder(
        APP_ID,
        "Email (SMTP)",
        "Send email through your own mail server or provider over SMTP: text and HTML, attachments, reply-to, cc, bcc and custom headers.",
    )
    .auth(AuthKind::Smtp)
    .connection_test(client::TestLogin)
    .action(send::SendEmail)
    .build()
}

#[cfg(test)]
mod tests;
