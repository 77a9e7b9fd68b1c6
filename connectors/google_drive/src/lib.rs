//! The `google_drive` app: save files to Google Drive, make folders, and start recipes when
//! a file lands in a folder.
//!
//! - [`upload::UploadFile`] (`google_drive.upload_file`): one multipart upload
//!   (`uploadType=multipart`) of a text, base64 bytes, a file fetched from a URL (through
//!   `ctx.http`, so the SSRF guard applies), or another step's attachment.
//! - [`folder::CreateFolder`] (`google_drive.create_folder`).
//! - [`trigger::NewFile`] (`google_drive.new_file`): a polling trigger over Drive's Changes
//!   API, the page token as the cursor.
//! - [`folder::AboutUser`]: the connection test (`about?fields=user`).
//!
//! Auth is OAuth2: the connector receives an access token and puts it on as a bearer token;
//! a 401 is an `auth` error carrying Google's message, and the runner refreshes the token
//! once. Google answers rate limits with 429, or with 403 and the reason
//! `userRateLimitExceeded` / `rateLimitExceeded`: both are `rate_limited` ([`google`]).
//! What the app does for end users is in this folder's README.md.

pub mod folder;
pub mod google;
pub mod trigger;
pub mod upload;

use std::time::Duration;

use enlace_core::{ClientAuth, Connector, OAuth2App, RateLimit};

/// The app id recipes use (`app: google_drive`).
pub const APP_ID: &str = "google_drive";

/// Drive API v3 (metadata: folders, changes, about).
pub const API_BASE: &str = "https://www.googleapis.com/drive/v3";

/// Drive API v3's upload endpoint (file contents).
pub const UPLOAD_BASE: &str = "https://www.googleapis.com/upload/drive/v3";

/// The `google_drive` connector, talking to Google.
pub fn connector() -> Connector {
    connector_at(API_BASE, UPLOAD_BASE)
}

/// The `google_drive` connector with other base addresses, for tests only: they point it
/// at a local server (recorded answers, or Prism serving Google's own API description and a
/// checking upload route). The installation always uses [`connector`].
pub fn connector_at(api_base: &str, upload_base: &str) -> Connector {
    Connector::builder(
        APP_ID,
        "Google Drive",
        "Save files to Google Drive (from text, a URL or another step's attachment), create folders, and start a recipe when a new file lands in a folder.",
    )
    // Google's OAuth 2.0 for web server apps (developers.google.com/identity/protocols/oauth2/web-server):
    // `access_type=offline` asks for a refresh token, `prompt=consent` makes Google send one
    // again on a second sign-in. The `drive` scope: the trigger reads files other apps put
    // in the folder, which `drive.file` would not show (a connection may ask for less).
    .oauth2(OAuth2App {
        authorize_url: "https://accounts.google.com/o/oauth2/v2/auth".into(),
        token_url: "https://oauth2.googleapis.com/token".into(),
        scopes: vec!["https://www.googleapis.com/auth/drive".into()],
        authorize_params: [("access_type", "offline"), ("prompt", "consent"), ("include_granted_scopes", "true")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        client_auth: ClientAuth::Basic,
    })
    // Google's documented Drive API quota: 12,000 queries per 60 seconds per user (and per
    // project), "Usage limits", developers.google.com/workspace/drive/api/guides/limits.
    // Projects created from May 2026 count quota units instead (325,000 per minute per user);
    // 12,000 calls a minute stays inside either. Google answers 403 userRateLimitExceeded or
    // 429 beyond it, which the connector classifies as rate limited.
    .rate_limit(RateLimit { calls: 12_000, per: Duration::from_secs(60) })
    .connection_test(folder::AboutUser::new(api_base))
    .action(upload::UploadFile::new(upload_base))
    .action(folder::CreateFolder::new(api_base))
    .polling_trigger(trigger::NewFile::new(api_base))
    .build()
}

#[cfg(test)]
mod tests;
