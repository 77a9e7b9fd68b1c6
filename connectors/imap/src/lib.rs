//! The `imap` app: read mail from any IMAP mailbox (a mail provider's account, a company
//! server, a shared inbox for invoices or orders).
//!
//! One polling trigger, [`new_email::NewEmail`] (`imap.new_email`), and a connection test
//! that logs in, opens INBOX read-only and logs out ([`client::TestLogin`]). IMAP is not
//! HTTP, so the connector applies the installation's SSRF guard itself, through
//! `enlace_kit::ssrf`, with the policy the HTTP transport reports, and checks the server's
//! certificate with rustls (the system's roots plus the connection's own). What the app does
//! for end users is in this folder's README.md.

pub mod client;
pub mod new_email;
pub mod testing;
pub mod utf7;

use enlace_core::{AuthKind, Connector};

/// The app id recipes use (`app: imap`).
pub const APP_ID: &str = "imap";

/// The `imap` connector.
pub fn connector() -> Connector {
    Connector::builder(
        APP_ID,
        "Email (IMAP)",
        "Watch a folder of your mailbox over IMAP: each new message (optionally only those with attachments, or from one sender) starts a run with its sender, subject, bodies and attachments. Mail is never marked as read.",
    )
    .auth(AuthKind::Imap)
    .connection_test(client::TestLogin)
    .polling_trigger(new_email::NewEmail)
    .build()
}

#[cfg(test)]
mod tests;
