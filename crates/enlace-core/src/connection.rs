//! Connections: checking the credentials a user gives against the app's declared
//! [`AuthKind`], and the hook a connector offers to test a connection.
//!
//! [`parse_credentials`] reads credentials as the API and the CLI receive them (JSON) and
//! names the first wrong field (`credentials.password is required for basic credentials`),
//! rather than leaving users with a deserializer's message. A connector that can check
//! credentials without side effects (log in, then log out) implements [`ConnectionTest`];
//! an app without one answers [`TestOutcome::Unavailable`].

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::BoxFuture;
use crate::error::ConnectorError;
use crate::http::HttpTransport;
use crate::manifest::AuthKind;
use crate::oauth::{ClientAuth, GrantType, OAuth2App, OAuth2Grant};
use crate::secret::{Credentials, Secret};

/// A field of credentials that is wrong, with its path (`credentials.password`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct CredentialsError {
    pub path: String,
    pub message: String,
}

impl CredentialsError {
    fn at(field: &str, message: impl Into<String>) -> Self {
        let path = if field.is_empty() { "credentials".to_string() } else { format!("credentials.{field}") };
        CredentialsError { path, message: message.into() }
    }
}

/// The credential kinds a connection to an app with this auth kind may hold. An app that
/// declares no auth of its own (the generic `http` app) takes any kind that goes on an HTTP
/// request.
pub fn accepted_kinds(auth: AuthKind) -> &'static [&'static str] {
    match auth {
        AuthKind::None => &["bearer", "api_key", "basic", "oauth2"],
        AuthKind::ApiKey => &["api_key"],
        AuthKind::Bearer => &["bearer"],
        AuthKind::Basic => &["basic"],
        // A private app's token (HubSpot, Slack) is a bearer token on the same API.
        AuthKind::OAuth2 => &["oauth2", "bearer"],
        AuthKind::Smtp => &["smtp"],
        AuthKind::Imap => &["imap"],
    }
}

/// A field of a credential kind (the web UI builds its connection forms from these).
#[derive(Debug, Clone, Copy)]
pub struct Field {
    pub name: &'static str,
    pub required: bool,
    /// What to give, for help text and errors.
    pub what: &'static str,
}

/// The fields of a credential kind (`api_key`, `bearer`, `basic`, `oauth2`, `smtp`,
/// `imap`), in the order users write them; `None` for an unknown kind.
pub fn credential_fields(kind: &str) -> Option<&'static [Field]> {
    fields_of(kind)
}

const fn req(name: &'static str, what: &'static str) -> Field {
    Field { name, required: true, what }
}

const fn opt(name: &'static str, what: &'static str) -> Field {
    Field { name, required: false, what }
}

/// The fields of each kind, in the order users write them.
fn fields_of(kind: &str) -> Option<&'static [Field]> {
    const BEARER: &[Field] = &[req("token", "the API token or access token")];
    const API_KEY: &[Field] = &[req("header", "the header that carries the key, like `X-Api-Key`"), req("key", "the API key")];
    const BASIC: &[Field] = &[req("username", "the user name"), req("password", "the password")];
    const OAUTH2: &[Field] = &[req("access_token", "the OAuth2 access token")];
    const SMTP: &[Field] = &[
        req("host", "the SMTP server's host name, like `smtp.example.com`"),
        opt("port", "the port (default: 587 for starttls, 465 for tls, 25 for none)"),
        opt("username", "the account to log in with"),
        opt("password", "the account's password (or app password)"),
        opt("tls", "`starttls` (default), `tls` or `none`"),
        opt("ca_certificate", "a PEM certificate to trust besides the system's roots"),
    ];
    const IMAP: &[Field] = &[
        req("host", "the IMAP server's host name, like `imap.example.com`"),
        opt("port", "the port (default: 993 for tls, 143 for starttls and none)"),
        req("username", "the mailbox account to log in with"),
        req("password", "the account's password (or app password)"),
        opt("tls", "`tls` (default), `starttls` or `none`"),
        opt("ca_certificate", "a PEM certificate to trust besides the system's roots"),
    ];
    Some(match kind {
        "bearer" => BEARER,
        "api_key" => API_KEY,
        "basic" => BASIC,
        "oauth2" => OAUTH2,
        "smtp" => SMTP,
        "imap" => IMAP,
        _ => return None,
    })
}

/// Reads credentials for an app whose manifest declares `auth`. Every problem names the
/// field (`credentials.host`) and says what to write instead; secret values never appear in
/// a message.
pub fn parse_credentials(value: &Value, auth: AuthKind) -> Result<Credentials, CredentialsError> {
    parse_credentials_with(value, auth, None)
}

/// [`parse_credentials`] for an app that declares an OAuth2 authorization server: an
/// `oauth2` connection with a `grant` takes the app's URLs and scopes where it names none.
pub fn parse_credentials_with(value: &Value, auth: AuthKind, oauth: Option<&OAuth2App>) -> Result<Credentials, CredentialsError> {
    let accepted = accepted_kinds(auth);
    if let Some(map) = value.as_object()
        && map.get("kind").and_then(Value::as_str) == Some("oauth2")
        && map.contains_key("grant")
        && accepted.contains(&"oauth2")
    {
        return parse_oauth2_grant(map, oauth).map(|g| Credentials::OAuth2Grant(Box::new(g)));
    }
    let example = |k: &str| -> String {
        let fields: Vec<String> =
            fields_of(k).unwrap_or_default().iter().filter(|f| f.required).map(|f| format!("\"{}\": \"...\"", f.name)).collect();
        format!("{{\"kind\": \"{k}\", {}}}", fields.join(", "))
    };
    let Some(map) = value.as_object() else {
        return Err(CredentialsError::at("", format!("must be an object, like {}", example(accepted[0]))));
    };
    let kind = match map.get("kind") {
        Some(Value::String(k)) => k.as_str(),
        Some(_) => return Err(CredentialsError::at("kind", format!("must be text: one of {}", quoted(accepted)))),
        None => {
            return Err(CredentialsError::at("kind", format!("is required: one of {}, like {}", quoted(accepted), example(accepted[0]))));
        }
    };
    let Some(fields) = fields_of(kind) else {
        return Err(CredentialsError::at("kind", format!("unknown kind `{kind}`; this app takes {}", quoted(accepted))));
    };
    if !accepted.contains(&kind) {
        return Err(CredentialsError::at("kind", format!("this app takes {} credentials, not `{kind}`", quoted(accepted))));
    }
    let names: Vec<&str> = fields.iter().map(|f| f.name).collect();
    for key in map.keys().filter(|k| *k != "kind") {
        if !names.contains(&key.as_str()) {
            return Err(CredentialsError::at(key, format!("unknown field in `{kind}` credentials; the fields are {}", quoted(&names))));
        }
    }
    for f in fields {
        match map.get(f.name) {
            None | Some(Value::Null) if f.required => {
                return Err(CredentialsError::at(f.name, format!("is required for `{kind}` credentials: {}", f.what)));
            }
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if s.trim().is_empty() => {
                return Err(CredentialsError::at(f.name, format!("is empty; give {}", f.what)));
            }
            Some(Value::String(_)) if f.name != "port" => {}
            Some(Value::Number(_)) if f.name == "port" => {}
            Some(_) if f.name == "port" => return Err(CredentialsError::at(f.name, "must be a number from 1 to 65535")),
            Some(_) => return Err(CredentialsError::at(f.name, format!("must be text: {}", f.what))),
        }
    }
    if kind == "smtp" {
        check_server(map, "smtp.example.com", "`starttls` (port 587), `tls` (port 465, sometimes called SSL) or `none`")?;
    }
    if kind == "imap" {
        check_server(map, "imap.example.com", "`tls` (port 993, sometimes called SSL), `starttls` (port 143) or `none`")?;
    }
    if kind == "api_key" {
        let header = map.get("header").and_then(Value::as_str).unwrap_or_default().trim();
        if !header.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(CredentialsError::at("header", format!("`{header}` is not a header name; use letters, digits and `-`")));
        }
    }
    serde_json::from_value::<Credentials>(value.clone())
        .map_err(|e| CredentialsError::at("", format!("could not be read: {}", strip_secret_hint(&e.to_string()))))
}

/// The fields of an OAuth2 connection that Enlace keeps fresh.
const OAUTH2_GRANT_FIELDS: &[&str] = &[
    "kind",
    "grant",
    "client_id",
    "client_secret",
    "authorize_url",
    "token_url",
    "scopes",
    "authorize_params",
    "client_auth",
    "refresh_token",
];

/// Reads `{"kind": "oauth2", "grant": "authorization_code" | "client_credentials",
/// "client_id", "client_secret"?, "authorize_url"?, "token_url"?, "scopes"?, ...}`. URLs
/// and scopes default to the app's; a `refresh_token` may be given to bring a connection
/// over from elsewhere (it is then refreshed before first use).
fn parse_oauth2_grant(map: &Map<String, Value>, app: Option<&OAuth2App>) -> Result<OAuth2Grant, CredentialsError> {
    for key in map.keys() {
        if !OAUTH2_GRANT_FIELDS.contains(&key.as_str()) {
            return Err(CredentialsError::at(
                key,
                format!("unknown field in `oauth2` credentials with a `grant`; the fields are {}", quoted(&OAUTH2_GRANT_FIELDS[1..])),
            ));
        }
    }
    let text = |name: &str| -> Result<Option<String>, CredentialsError> {
        match map.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => Err(CredentialsError::at(name, "is empty")),
            Some(Value::String(s)) => Ok(Some(s.trim().to_string())),
            Some(_) => Err(CredentialsError::at(name, "must be text")),
        }
    };
    let grant = match text("grant")?.as_deref() {
        Some("authorization_code") => GrantType::AuthorizationCode,
        Some("client_credentials") => GrantType::ClientCredentials,
        Some(other) => {
            return Err(CredentialsError::at(
                "grant",
                format!(
                    "`{other}` is not a supported grant: use `authorization_code` (a user signs in, with PKCE) or `client_credentials` (server to server)"
                ),
            ));
        }
        None => unreachable!("checked by the caller"),
    };
    let client_id = text("client_id")?.ok_or_else(|| {
        CredentialsError::at(
            "client_id",
            "is required: the client id of the OAuth app registered with the vendor (or set ENLACE_OAUTH_<APP>_CLIENT_ID)",
        )
    })?;
    let client_secret = text("client_secret")?.map(Secret::new);
    if grant == GrantType::ClientCredentials && client_secret.is_none() {
        return Err(CredentialsError::at("client_secret", "is required for the `client_credentials` grant: the OAuth app's client secret"));
    }
    let url = |name: &str, default: Option<&str>| -> Result<String, CredentialsError> {
        let v = text(name)?.or_else(|| default.filter(|d| !d.is_empty()).map(str::to_string)).unwrap_or_default();
        if !(v.is_empty() || v.starts_with("https://") || v.starts_with("http://")) {
            return Err(CredentialsError::at(name, format!("`{v}` is not an http(s) URL")));
        }
        Ok(v)
    };
    let token_url = url("token_url", app.map(|a| a.token_url.as_str()))?;
    if token_url.is_empty() {
        return Err(CredentialsError::at("token_url", "is required: the authorization server's token endpoint (this app declares none)"));
    }
    let authorize_url = url("authorize_url", app.map(|a| a.authorize_url.as_str()))?;
    if grant == GrantType::AuthorizationCode && authorize_url.is_empty() {
        return Err(CredentialsError::at(
            "authorize_url",
            "is required for the `authorization_code` grant: where users sign in (this app declares none)",
        ));
    }
    let scopes = match map.get("scopes") {
        None | Some(Value::Null) => app.map(|a| a.scopes.clone()).unwrap_or_default(),
        Some(Value::String(s)) => s.split_whitespace().map(str::to_string).collect(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| v.as_str().map(str::to_string).ok_or_else(|| CredentialsError::at(&format!("scopes[{i}]"), "must be text")))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(CredentialsError::at("scopes", "must be a list of scopes, or one text with scopes separated by spaces")),
    };
    let mut authorize_params = app.map(|a| a.authorize_params.clone()).unwrap_or_default();
    match map.get("authorize_params") {
        None | Some(Value::Null) => {}
        Some(Value::Object(o)) => {
            for (k, v) in o {
                let v = v.as_str().ok_or_else(|| CredentialsError::at(&format!("authorize_params.{k}"), "must be text"))?;
                authorize_params.insert(k.clone(), v.to_string());
            }
        }
        Some(_) => return Err(CredentialsError::at("authorize_params", "must be an object of text values")),
    }
    let client_auth = match text("client_auth")?.as_deref() {
        None => app.map(|a| a.client_auth).unwrap_or_default(),
        Some("basic") => ClientAuth::Basic,
        Some("body") => ClientAuth::Body,
        Some(other) => {
            return Err(CredentialsError::at(
                "client_auth",
                format!("`{other}` is not a client authentication: use `basic` (HTTP basic, the default) or `body` (in the form)"),
            ));
        }
    };
    Ok(OAuth2Grant {
        grant,
        client_id,
        client_secret,
        authorize_url,
        token_url,
        scopes,
        authorize_params,
        client_auth,
        access_token: None,
        refresh_token: text("refresh_token")?.map(Secret::new),
        expires_at: None,
        granted_scopes: None,
    })
}

/// The checks shared by the mail servers' kinds (`smtp`, `imap`): a bare host name, a port,
/// a TLS mode (`modes` says which, with their ports), a username and password together, a
/// PEM certificate.
fn check_server(map: &Map<String, Value>, example_host: &str, modes: &str) -> Result<(), CredentialsError> {
    let host = map.get("host").and_then(Value::as_str).unwrap_or_default().trim();
    if host.contains("://") {
        return Err(CredentialsError::at(
            "host",
            format!("`{host}` is an address, not a host name; write just the name, like `{example_host}`"),
        ));
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let is_ipv6 = bare.parse::<std::net::Ipv6Addr>().is_ok();
    if !is_ipv6 && host.contains(':') {
        return Err(CredentialsError::at("host", format!("`{host}` holds a port; write the host name alone and the port in `port`")));
    }
    if !is_ipv6 && !host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_') {
        return Err(CredentialsError::at("host", format!("`{host}` is not a host name; write one like `{example_host}`")));
    }
    if let Some(port) = map.get("port") {
        match port.as_u64() {
            Some(p) if (1..=65535).contains(&p) => {}
            _ => return Err(CredentialsError::at("port", format!("`{port}` is not a port: give a number from 1 to 65535"))),
        }
    }
    if let Some(tls) = map.get("tls").and_then(Value::as_str)
        && !matches!(tls, "starttls" | "tls" | "none")
    {
        return Err(CredentialsError::at("tls", format!("`{tls}` is not a TLS mode: use {modes}")));
    }
    match (map.get("username").filter(|v| !v.is_null()), map.get("password").filter(|v| !v.is_null())) {
        (Some(_), None) => {
            return Err(CredentialsError::at("password", "is required when `username` is given: the account's password (or app password)"));
        }
        (None, Some(_)) => {
            return Err(CredentialsError::at("username", "is required when `password` is given: the account to log in with"));
        }
        _ => {}
    }
    if let Some(pem) = map.get("ca_certificate").and_then(Value::as_str)
        && !pem.contains("-----BEGIN CERTIFICATE-----")
    {
        return Err(CredentialsError::at("ca_certificate", "is not a PEM certificate: it must contain `-----BEGIN CERTIFICATE-----`"));
    }
    Ok(())
}

/// serde's messages quote unexpected values; credentials may hold secrets, so the quoted
/// value is dropped.
fn strip_secret_hint(message: &str) -> String {
    match message.find(" `") {
        Some(i) if message.starts_with("invalid value") || message.starts_with("invalid type") => message[..i].to_string(),
        _ => message.to_string(),
    }
}

fn quoted(items: &[&str]) -> String {
    items.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")
}

/// What a connection test gets.
#[derive(Clone)]
pub struct ConnectionContext {
    /// The connection's id (for messages).
    pub connection_id: String,
    pub credentials: Credentials,
    /// The installation's HTTP transport: HTTP tests go through it; other protocols ask it
    /// for the network policy ([`HttpTransport::allows_private_networks`]).
    pub http: Arc<dyn HttpTransport>,
    /// How long the test may take in all.
    pub timeout: Duration,
}

impl std::fmt::Debug for ConnectionContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionContext")
            .field("connection_id", &self.connection_id)
            .field("credentials", &self.credentials)
            .finish_non_exhaustive()
    }
}

/// A connector's check of a connection: it logs in (or makes the cheapest authenticated
/// call) and changes nothing at the app. `Ok` carries a sentence for the user ("logged in
/// to smtp.example.com:587 as ana@example.com over STARTTLS").
pub trait ConnectionTest: Send + Sync + 'static {
    fn test(&self, ctx: &ConnectionContext) -> impl Future<Output = Result<String, ConnectorError>> + Send;
}

/// [`ConnectionTest`] over boxed futures, as [`crate::Connector`] keeps it.
pub trait DynConnectionTest: Send + Sync {
    fn test<'a>(&'a self, ctx: &'a ConnectionContext) -> BoxFuture<'a, Result<String, ConnectorError>>;
}

impl<T: ConnectionTest> DynConnectionTest for T {
    fn test<'a>(&'a self, ctx: &'a ConnectionContext) -> BoxFuture<'a, Result<String, ConnectorError>> {
        Box::pin(ConnectionTest::test(self, ctx))
    }
}

/// The result of testing a connection.
#[derive(Debug, Clone, PartialEq)]
pub enum TestOutcome {
    /// The app accepted the credentials.
    Ok(String),
    /// The app refused them, or could not be reached.
    Failed(ConnectorError),
    /// The app has no connection test; the message says so and what happens instead.
    Unavailable(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(v: Value, auth: AuthKind) -> CredentialsError {
        parse_credentials(&v, auth).unwrap_err()
    }

    #[test]
    fn each_kind_reads() {
        let c = parse_credentials(&json!({"kind": "bearer", "token": "t0k"}), AuthKind::None).unwrap();
        assert_eq!(c.kind(), "bearer");
        let c = parse_credentials(&json!({"kind": "basic", "username": "ana", "password": "pw"}), AuthKind::Basic).unwrap();
        assert_eq!(c.secret_values(), vec!["pw"]);
        let c = parse_credentials(
            &json!({"kind": "smtp", "host": "smtp.example.com", "username": "ana", "password": "pw", "tls": "tls"}),
            AuthKind::Smtp,
        )
        .unwrap();
        let Credentials::Smtp(s) = c else { panic!("smtp") };
        assert_eq!((s.effective_port(), s.tls.as_str(), s.password.as_ref().map(|p| p.expose())), (465, "tls", Some("pw")));
        let c = parse_credentials(&json!({"kind": "smtp", "host": "relay.internal.example", "tls": "none"}), AuthKind::Smtp).unwrap();
        let Credentials::Smtp(s) = c else { panic!("smtp") };
        assert_eq!((s.effective_port(), s.username), (25, None));
    }

    #[test]
    fn every_problem_names_its_field() {
        let e = err(json!({"kind": "basic", "username": "ana"}), AuthKind::Basic);
        assert_eq!(e.path, "credentials.password");
        assert!(e.message.contains("is required for `basic` credentials"), "{e}");

        let e = err(json!({"token": "x"}), AuthKind::Bearer);
        assert_eq!(e.path, "credentials.kind");
        assert!(e.message.contains("`bearer`"), "{e}");

        let e = err(json!({"kind": "bearer", "token": "x"}), AuthKind::Smtp);
        assert_eq!(e.path, "credentials.kind");
        assert!(e.message.contains("this app takes `smtp` credentials, not `bearer`"), "{e}");

        let e = err(json!({"kind": "smtp", "host": "smtp.example.com", "pasword": "x"}), AuthKind::Smtp);
        assert_eq!(e.path, "credentials.pasword");
        assert!(e.message.contains("the fields are `host`, `port`"), "{e}");

        let e = err(json!({"kind": "smtp", "port": 587}), AuthKind::Smtp);
        assert_eq!(e.path, "credentials.host");

        let e = err(json!({"kind": "smtp", "host": "smtp.example.com:587"}), AuthKind::Smtp);
        assert!(e.message.contains("write the host name alone and the port in `port`"), "{e}");

        let e = err(json!({"kind": "smtp", "host": "smtp.example.com", "port": 70000}), AuthKind::Smtp);
        assert_eq!(e.path, "credentials.port");

        let e = err(json!({"kind": "smtp", "host": "smtp.example.com", "tls": "ssl"}), AuthKind::Smtp);
        assert_eq!(e.path, "credentials.tls");
        assert!(e.message.contains("`tls` (port 465, sometimes called SSL)"), "{e}");

        let e = err(json!({"kind": "smtp", "host": "smtp.example.com", "username": "ana"}), AuthKind::Smtp);
        assert_eq!(e.path, "credentials.password");

        let e = err(json!({"kind": "basic", "username": "ana", "password": ""}), AuthKind::Basic);
        assert!(e.message.contains("is empty"), "{e}");

        let e = err(json!("tok"), AuthKind::Bearer);
        assert_eq!(e.path, "credentials");
        assert!(e.message.contains(r#"{"kind": "bearer", "token": "..."}"#), "{e}");
    }

    #[test]
    fn oauth2_grants_read_with_the_apps_defaults() {
        let app = OAuth2App {
            authorize_url: "https://accounts.example.com/o/oauth2/auth".into(),
            token_url: "https://oauth2.example.com/token".into(),
            scopes: vec!["files".into()],
            authorize_params: [("access_type".to_string(), "offline".to_string())].into(),
            client_auth: ClientAuth::Body,
        };
        let c = parse_credentials_with(
            &json!({"kind": "oauth2", "grant": "authorization_code", "client_id": "cid", "client_secret": "cs"}),
            AuthKind::OAuth2,
            Some(&app),
        )
        .unwrap();
        let Credentials::OAuth2Grant(g) = &c else { panic!("a grant: {c:?}") };
        assert_eq!(
            (g.token_url.as_str(), g.scopes.clone(), g.client_auth),
            (app.token_url.as_str(), vec!["files".to_string()], ClientAuth::Body)
        );
        assert_eq!(g.authorize_params["access_type"], "offline");
        assert!(!g.is_authorized());
        assert_eq!(c.secret_values(), vec!["cs"]);
        // The connection's own URLs and scopes win.
        let c = parse_credentials_with(
            &json!({"kind": "oauth2", "grant": "authorization_code", "client_id": "cid", "token_url": "http://127.0.0.1:9/token", "scopes": "a b"}),
            AuthKind::OAuth2,
            Some(&app),
        )
        .unwrap();
        let Credentials::OAuth2Grant(g) = &c else { panic!("a grant") };
        assert_eq!((g.token_url.as_str(), g.scopes.len(), g.client_secret.is_none()), ("http://127.0.0.1:9/token", 2, true));
        // A pasted token stays a plain token.
        let c = parse_credentials_with(&json!({"kind": "oauth2", "access_token": "pat"}), AuthKind::OAuth2, Some(&app)).unwrap();
        assert!(matches!(c, Credentials::OAuth2 { .. }));
    }

    #[test]
    fn oauth2_grant_problems_name_their_field() {
        let e = |v: Value| parse_credentials_with(&v, AuthKind::OAuth2, None).unwrap_err();
        let x = e(json!({"kind": "oauth2", "grant": "password", "client_id": "c"}));
        assert_eq!(x.path, "credentials.grant");
        assert!(x.message.contains("`authorization_code`"), "{x}");
        let x = e(json!({"kind": "oauth2", "grant": "client_credentials", "client_id": "c", "token_url": "https://t.example/token"}));
        assert_eq!(x.path, "credentials.client_secret");
        let x = e(json!({"kind": "oauth2", "grant": "authorization_code", "client_id": "c", "token_url": "https://t.example/token"}));
        assert_eq!(x.path, "credentials.authorize_url");
        let x = e(json!({"kind": "oauth2", "grant": "authorization_code", "client_id": "c"}));
        assert_eq!(x.path, "credentials.token_url");
        let x = e(
            json!({"kind": "oauth2", "grant": "authorization_code", "client_id": "c", "token_url": "ftp://x", "authorize_url": "https://a"}),
        );
        assert_eq!(x.path, "credentials.token_url");
        let x = e(json!({"kind": "oauth2", "grant": "authorization_code", "clientid": "c"}));
        assert_eq!(x.path, "credentials.clientid");
        assert!(x.message.contains("`client_id`"), "{x}");
        let x = e(json!({"kind": "oauth2", "grant": "authorization_code", "token_url": "https://t", "authorize_url": "https://a"}));
        assert_eq!(x.path, "credentials.client_id");
        let x = e(
            json!({"kind": "oauth2", "grant": "client_credentials", "client_id": "c", "client_secret": "s", "token_url": "https://t", "scopes": [1]}),
        );
        assert_eq!(x.path, "credentials.scopes[0]");
    }

    #[test]
    fn imap_credentials_read_and_name_their_fields() {
        let c = parse_credentials(
            &json!({"kind": "imap", "host": "imap.example.com", "username": "ana@example.com", "password": "pw"}),
            AuthKind::Imap,
        )
        .unwrap();
        let Credentials::Imap(i) = &c else { panic!("imap") };
        assert_eq!((i.effective_port(), i.tls.as_str(), i.password.expose()), (993, "tls", "pw"));
        assert_eq!(c.secret_values(), vec!["pw"]);
        let c = parse_credentials(
            &json!({"kind": "imap", "host": "mail.internal.example", "username": "ana", "password": "pw", "tls": "starttls"}),
            AuthKind::Imap,
        )
        .unwrap();
        let Credentials::Imap(i) = c else { panic!("imap") };
        assert_eq!((i.effective_port(), i.tls.as_str()), (143, "starttls"));

        let e = err(json!({"kind": "imap", "host": "imap.example.com", "password": "pw"}), AuthKind::Imap);
        assert_eq!(e.path, "credentials.username");
        let e = err(json!({"kind": "imap", "host": "imap.example.com", "username": "ana"}), AuthKind::Imap);
        assert_eq!(e.path, "credentials.password");
        let e = err(json!({"kind": "imap", "host": "imaps://imap.example.com", "username": "a", "password": "p"}), AuthKind::Imap);
        assert_eq!(e.path, "credentials.host");
        assert!(e.message.contains("like `imap.example.com`"), "{e}");
        let e = err(json!({"kind": "imap", "host": "imap.example.com", "username": "a", "password": "p", "tls": "ssl"}), AuthKind::Imap);
        assert_eq!(e.path, "credentials.tls");
        assert!(e.message.contains("`tls` (port 993, sometimes called SSL)"), "{e}");
        let e = err(json!({"kind": "smtp", "host": "smtp.example.com"}), AuthKind::Imap);
        assert!(e.message.contains("this app takes `imap` credentials, not `smtp`"), "{e}");
        let e = err(
            json!({"kind": "imap", "host": "imap.example.com", "username": "a", "password": "hunter22", "ca_certificate": "x"}),
            AuthKind::Imap,
        );
        assert_eq!(e.path, "credentials.ca_certificate");
        assert!(!e.to_string().contains("hunter22"), "{e}");
    }

    #[test]
    fn messages_never_quote_a_secret() {
        let e = err(json!({"kind": "basic", "username": "ana", "password": 12345678}), AuthKind::Basic);
        assert!(!e.to_string().contains("12345678"), "{e}");
        let e = err(json!({"kind": "smtp", "host": "smtp.example.com", "password": "hunter22"}), AuthKind::Smtp);
        assert!(!e.to_string().contains("hunter22"), "{e}");
    }
}
