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
    /// An OAuth2 access token the user pasted (a private app's token): used as is, never
    /// refreshed. Written `oauth2` (snake_case alone would make it `o_auth2`).
    #[serde(rename = "oauth2", alias = "o_auth2")]
    OAuth2 { access_token: Secret },
    /// An OAuth2 connection Enlace keeps fresh: the client, the grant and the tokens. The
    /// runner refreshes it and hands actions a plain [`Credentials::OAuth2`] with the
    /// current access token.
    #[serde(rename = "oauth2_grant")]
    OAuth2Grant(Box<crate::oauth::OAuth2Grant>),
    /// An SMTP server and the account to send through.
    Smtp(SmtpCredentials),
    /// An IMAP server and the mailbox account to read.
    Imap(ImapCredentials),
}

/// How an SMTP connection is encrypted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Connect in plain text, then upgrade with `STARTTLS` before anything else is sent
    /// (port 587, "submission"). The server must offer STARTTLS.
    #[default]
    Starttls,
    /// TLS from the first byte (port 465, "submissions", sometimes called SSL).
    Tls,
    /// No encryption at all: only for a relay on a trusted network (port 25).
    None,
}

impl SmtpTls {
    pub fn as_str(self) -> &'static str {
        match self {
            SmtpTls::Starttls => "starttls",
            SmtpTls::Tls => "tls",
            SmtpTls::None => "none",
        }
    }

    /// The usual port for this mode: 587, 465 or 25.
    pub fn default_port(self) -> u16 {
        match self {
            SmtpTls::Starttls => 587,
            SmtpTls::Tls => 465,
            SmtpTls::None => 25,
        }
    }
}

/// What an SMTP connection holds. Only the password is secret.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct SmtpCredentials {
    /// The server's host name (`smtp.example.com`).
    pub host: String,
    /// The port; when absent, the usual one for `tls` (587, 465 or 25).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The account to log in with (AUTH PLAIN or LOGIN); absent for a relay that needs no login.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    #[serde(default)]
    pub tls: SmtpTls,
    /// A certificate (PEM) to trust besides the system's roots: for a server whose
    /// certificate is issued by a private authority, or self-signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificate: Option<String>,
}

impl SmtpCredentials {
    /// The port connected to: the one given, else the usual one for the TLS mode.
    pub fn effective_port(&self) -> u16 {
        self.port.unwrap_or_else(|| self.tls.default_port())
    }
}

/// How an IMAP connection is encrypted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ImapTls {
    /// TLS from the first byte (port 993, "imaps"): what mail providers offer.
    #[default]
    Tls,
    /// Connect in plain text, then upgrade with `STARTTLS` before logging in (port 143).
    Starttls,
    /// No encryption at all: only for a server on a trusted network (port 143).
    None,
}

impl ImapTls {
    pub fn as_str(self) -> &'static str {
        match self {
            ImapTls::Tls => "tls",
            ImapTls::Starttls => "starttls",
            ImapTls::None => "none",
        }
    }

    /// The usual port for this mode: 993 for `tls`, 143 otherwise.
    pub fn default_port(self) -> u16 {
        match self {
            ImapTls::Tls => 993,
            ImapTls::Starttls | ImapTls::None => 143,
        }
    }
}

/// What an IMAP connection holds. Only the password is secret.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct ImapCredentials {
    /// The server's host name (`imap.example.com`).
    pub host: String,
    /// The port; when absent, the usual one for `tls` (993 or 143).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The mailbox account to log in with.
    pub username: String,
    pub password: Secret,
    #[serde(default)]
    pub tls: ImapTls,
    /// A certificate (PEM) to trust besides the system's roots: for a server whose
    /// certificate is issued by a private authority, or self-signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificate: Option<String>,
}

impl ImapCredentials {
    /// The port connected to: the one given, else the usual one for the TLS mode.
    pub fn effective_port(&self) -> u16 {
        self.port.unwrap_or_else(|| self.tls.default_port())
    }
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
            Credentials::OAuth2Grant(g) => g.secret_values(),
            Credentials::Smtp(smtp) => smtp.password.iter().map(Secret::expose).collect(),
            Credentials::Imap(imap) => vec![imap.password.expose()],
        }
    }

    /// The kind, as written in `{"kind": ...}`.
    pub fn kind(&self) -> &'static str {
        match self {
            Credentials::None => "none",
            Credentials::Bearer { .. } => "bearer",
            Credentials::ApiKey { .. } => "api_key",
            Credentials::Basic { .. } => "basic",
            Credentials::OAuth2 { .. } | Credentials::OAuth2Grant(_) => "oauth2",
            Credentials::Smtp(_) => "smtp",
            Credentials::Imap(_) => "imap",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_reads_and_writes_the_name_users_write() {
        let all = [
            Credentials::None,
            Credentials::Bearer { token: Secret::new("t") },
            Credentials::ApiKey { header: "X-Api-Key".into(), key: Secret::new("k") },
            Credentials::Basic { username: "u".into(), password: Secret::new("p") },
            Credentials::OAuth2 { access_token: Secret::new("at") },
            Credentials::Smtp(SmtpCredentials { host: "smtp.example.com".into(), ..SmtpCredentials::default() }),
        ];
        for c in all {
            let v = serde_json::to_value(&c).unwrap();
            assert_eq!(v["kind"], c.kind(), "{v}");
            assert_eq!(serde_json::from_value::<Credentials>(v).unwrap(), c);
        }
        let read: Credentials = serde_json::from_str(r#"{"kind": "oauth2", "access_token": "at"}"#).unwrap();
        assert_eq!(read, Credentials::OAuth2 { access_token: Secret::new("at") });
        assert_eq!(serde_json::to_value(crate::AuthKind::OAuth2).unwrap(), "oauth2", "the app's auth kind too");
    }

    #[test]
    fn debug_never_shows_the_value() {
        let c = Credentials::Bearer { token: Secret::new("tok_live_123") };
        let shown = format!("{c:?}");
        assert!(!shown.contains("tok_live_123"), "{shown}");
        assert!(shown.contains("[secret]"));
        let c = Credentials::Imap(ImapCredentials {
            host: "imap.example.com".into(),
            username: "ana".into(),
            password: Secret::new("imap-pw-9"),
            ..Default::default()
        });
        let shown = format!("{c:?}");
        assert!(!shown.contains("imap-pw-9"), "{shown}");
        assert_eq!(c.secret_values(), vec!["imap-pw-9"]);
    }
}
