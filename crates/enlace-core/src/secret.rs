//! Credentials that never print themselves.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A secret string. `Debug` and `Display` print `[secret]`; only [`Secret::expose`] gives
/// the value, so a stray `{:?}` or a log line cannot leak it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[secret]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[secret]")
    }
}

/// What a connection hands to an action: the credentials the kit puts on a request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Credentials {
    /// No credentials.
    #[default]
    None,
    /// `Authorization: Bearer <token>`.
    Bearer { token: Secret },
    /// An API key sent in a header (for example `X-Api-Key`).
    ApiKey { header: String, key: Secret },
    /// HTTP basic authentication.
    Basic { username: String, password: Secret },
    /// An OAuth2 access token (refresh is the connection manager's job, not the action's).
    OAuth2 { access_token: Secret },
}

impl Credentials {
    /// The secret values inside, for masking in run history.
    pub fn secret_values(&self) -> Vec<&str> {
        match self {
            Credentials::None => vec![],
            Credentials::Bearer { token } => vec![token.expose()],
            Credentials::ApiKey { key, .. } => vec![key.expose()],
            Credentials::Basic { password, .. } => vec![password.expose()],
            Credentials::OAuth2 { access_token } => vec![access_token.expose()],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let c = Credentials::Bearer { token: Secret::new("tok_live_123") };
        let shown = format!("{c:?}");
        assert!(!shown.contains("tok_live_123"), "{shown}");
        assert!(shown.contains("[secret]"));
    }
}
