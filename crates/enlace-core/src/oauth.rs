//! OAuth2 connections, as data: what an app declares about its authorization server
//! ([`OAuth2App`]), and what a connection holds ([`OAuth2Grant`]: the client, the grant type
//! and the current tokens). The token requests themselves are the connector kit's
//! (`enlace_kit::oauth`); when to refresh, and what a failed refresh does to runs, is the
//! runner's.
//!
//! Two grants are supported: the authorization code grant with PKCE (S256), for apps a user
//! signs in to in the browser, and the client credentials grant, for server-to-server apps.
//! A connection that only holds an access token pasted by the user (a private app's token)
//! stays a plain [`crate::Credentials::OAuth2`] and is never refreshed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::secret::Secret;

/// What an app declares about its OAuth2 authorization server (in its manifest). A
/// connection may override the URLs (a self-hosted app, a test server).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct OAuth2App {
    /// Where the user is sent to sign in and consent.
    pub authorize_url: String,
    /// Where codes and refresh tokens are exchanged for tokens.
    pub token_url: String,
    /// The scopes asked for when the connection names none.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Extra query parameters of the authorization request, for example Google's
    /// `access_type=offline` and `prompt=consent` (without them Google gives no refresh
    /// token, or none on a second consent).
    #[serde(default)]
    pub authorize_params: BTreeMap<String, String>,
    /// How the client authenticates at the token endpoint.
    #[serde(default)]
    pub client_auth: ClientAuth,
}

/// How the client's id and secret reach the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// HTTP basic authentication (RFC 6749 §2.3.1: every server must accept it).
    #[default]
    Basic,
    /// `client_id` and `client_secret` in the form body (HubSpot, some older servers).
    Body,
}

/// Which OAuth2 grant a connection uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantType {
    /// A user signs in through the browser; Enlace receives a code at `/oauth/callback`
    /// and exchanges it (with the PKCE verifier) for an access token and a refresh token.
    AuthorizationCode,
    /// Server to server: the client's own id and secret buy an access token, again whenever
    /// it expires.
    ClientCredentials,
}

impl GrantType {
    pub fn as_str(self) -> &'static str {
        match self {
            GrantType::AuthorizationCode => "authorization_code",
            GrantType::ClientCredentials => "client_credentials",
        }
    }
}

/// An OAuth2 connection: the client, where its tokens come from, and the tokens it holds.
/// Sealed at rest with the other credentials; the refresh token and the client secret never
/// leave the store in clear, and [`Secret`] keeps them out of logs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OAuth2Grant {
    pub grant: GrantType,
    pub client_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<Secret>,
    /// Empty for the client credentials grant.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub authorize_url: String,
    pub token_url: String,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub authorize_params: BTreeMap<String, String>,
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// `None` until the user has signed in (authorization code) or the first token request
    /// (client credentials).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<Secret>,
    /// When the access token expires (Unix milliseconds), when the server said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    /// The scopes the server granted, when it said (it may grant fewer than asked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub granted_scopes: Option<Vec<String>>,
}

/// What a token endpoint answered.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenSet {
    pub access_token: Secret,
    /// `None` when the server sent none: the one held is kept.
    pub refresh_token: Option<Secret>,
    pub expires_in_ms: Option<i64>,
    pub scopes: Option<Vec<String>>,
}

/// How long before its expiry an access token is refreshed: a call that starts with a token
/// about to expire could be refused halfway through a run.
pub const REFRESH_AHEAD_MS: i64 = 5 * 60 * 1000;

impl OAuth2Grant {
    /// Whether the connection has an access token at all (the user signed in).
    pub fn is_authorized(&self) -> bool {
        self.access_token.as_ref().is_some_and(|t| !t.is_empty())
    }

    /// Whether the access token should be refreshed before it is used at `now`: it is
    /// missing, or expires within [`REFRESH_AHEAD_MS`] (or within a tenth of a short
    /// lifetime).
    pub fn needs_refresh(&self, now_ms: i64) -> bool {
        if !self.is_authorized() {
            return true;
        }
        match self.expires_at {
            Some(at) => at - now_ms <= REFRESH_AHEAD_MS,
            None => false,
        }
    }

    /// Whether this connection can get a new access token without the user: a refresh
    /// token, or the client credentials grant.
    pub fn can_refresh(&self) -> bool {
        self.grant == GrantType::ClientCredentials || self.refresh_token.as_ref().is_some_and(|t| !t.is_empty())
    }

    /// Takes in a token endpoint's answer received at `now`. A new refresh token replaces
    /// the old one; an answer without one keeps the old one (servers that do not rotate,
    /// and Google on a second consent, send none), so a refresh token is never lost.
    pub fn absorb(&mut self, tokens: TokenSet, now_ms: i64) {
        self.access_token = Some(tokens.access_token);
        if let Some(r) = tokens.refresh_token.filter(|r| !r.is_empty()) {
            self.refresh_token = Some(r);
        }
        self.expires_at = tokens.expires_in_ms.map(|ms| now_ms + ms);
        if tokens.scopes.is_some() {
            self.granted_scopes = tokens.scopes;
        }
    }

    /// Every secret value it holds (for masking).
    pub fn secret_values(&self) -> Vec<&str> {
        [&self.access_token, &self.refresh_token, &self.client_secret]
            .into_iter()
            .flatten()
            .map(Secret::expose)
            .filter(|s| !s.is_empty())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant() -> OAuth2Grant {
        OAuth2Grant {
            grant: GrantType::AuthorizationCode,
            client_id: "cid".into(),
            client_secret: Some(Secret::new("csecret")),
            authorize_url: "https://auth.example.com/authorize".into(),
            token_url: "https://auth.example.com/token".into(),
            scopes: vec!["a".into()],
            authorize_params: BTreeMap::new(),
            client_auth: ClientAuth::Basic,
            access_token: Some(Secret::new("at1")),
            refresh_token: Some(Secret::new("rt1")),
            expires_at: Some(1_000_000),
            granted_scopes: None,
        }
    }

    #[test]
    fn an_answer_without_a_refresh_token_keeps_the_old_one() {
        let mut g = grant();
        g.absorb(
            TokenSet { access_token: Secret::new("at2"), refresh_token: None, expires_in_ms: Some(3_600_000), scopes: None },
            2_000_000,
        );
        assert_eq!(g.access_token.as_ref().unwrap().expose(), "at2");
        assert_eq!(g.refresh_token.as_ref().unwrap().expose(), "rt1");
        assert_eq!(g.expires_at, Some(5_600_000));
        g.absorb(
            TokenSet {
                access_token: Secret::new("at3"),
                refresh_token: Some(Secret::new("rt2")),
                expires_in_ms: None,
                scopes: Some(vec!["a".into()]),
            },
            3_000_000,
        );
        assert_eq!(g.refresh_token.as_ref().unwrap().expose(), "rt2", "a rotated refresh token replaces the old one");
        assert_eq!(g.expires_at, None);
        // An empty refresh token is not a refresh token.
        g.absorb(
            TokenSet { access_token: Secret::new("at4"), refresh_token: Some(Secret::new("")), expires_in_ms: None, scopes: None },
            3_000_000,
        );
        assert_eq!(g.refresh_token.as_ref().unwrap().expose(), "rt2");
    }

    #[test]
    fn refresh_ahead_of_expiry() {
        let g = grant();
        assert!(!g.needs_refresh(1_000_000 - REFRESH_AHEAD_MS - 1));
        assert!(g.needs_refresh(1_000_000 - REFRESH_AHEAD_MS));
        let mut none = grant();
        none.access_token = None;
        assert!(none.needs_refresh(0));
        let mut forever = grant();
        forever.expires_at = None;
        assert!(!forever.needs_refresh(i64::MAX / 2));
    }

    #[test]
    fn debug_and_json_of_the_secret_parts() {
        let g = grant();
        let dbg = format!("{g:?}");
        assert!(!dbg.contains("rt1") && !dbg.contains("at1") && !dbg.contains("csecret"), "{dbg}");
        let mut values = g.secret_values();
        values.sort();
        assert_eq!(values, vec!["at1", "csecret", "rt1"]);
        assert!(g.can_refresh());
        let mut cc = grant();
        cc.grant = GrantType::ClientCredentials;
        cc.refresh_token = None;
        assert!(cc.can_refresh());
        cc.grant = GrantType::AuthorizationCode;
        assert!(!cc.can_refresh());
    }
}
