//! XRPC calls to a PDS: the session (sign in, refresh, sign in again), the access token on
//! every call, and the PDS's errors (`{"error": "Name", "message": "..."}`) classified.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderValue;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use enlace_core::http::{HttpRequest, HttpResponse, HttpTransport, Method};
use enlace_core::{ConnectorError, Credentials, Secret};

/// A signed-in account: its tokens, DID and handle.
#[derive(Clone, Debug)]
pub struct Session {
    access: Secret,
    refresh: Secret,
    /// The account's DID (`did:plc:...`): the repo posts are written to.
    pub did: String,
    /// The account's handle as the PDS knows it now.
    pub handle: String,
}

/// The sessions of one connector, per account (the service, the identifier and the
/// SHA-256 of the app password: a changed password signs in again). In memory only.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    fn get(&self, key: &str) -> Option<Session> {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).get(key).cloned()
    }
    fn put(&self, key: &str, s: Session) {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).insert(key.to_string(), s);
    }
    fn forget(&self, key: &str) {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }
    /// How many sessions are kept (tests).
    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `https://pds.example` from an action's `service` or the connector's default.
pub fn service_base(given: Option<&str>, default: &str) -> Result<String, ConnectorError> {
    let s = given.map(str::trim).filter(|s| !s.is_empty()).unwrap_or(default).trim_end_matches('/');
    let rest = s.strip_prefix("https://").or_else(|| s.strip_prefix("http://"));
    if rest.is_none_or(|r| r.is_empty() || r.contains(['/', '?', '#', ' '])) {
        return Err(ConnectorError::bad_input(
            "service",
            format!("`{s}` is not a PDS address; write it like https://bsky.social (the server that hosts the account)"),
        ));
    }
    Ok(s.to_string())
}

/// A client of one PDS for one account.
pub struct Xrpc<'a> {
    http: &'a dyn HttpTransport,
    timeout: Duration,
    base: String,
    sessions: &'a Arc<Sessions>,
    identifier: String,
    password: Secret,
    key: String,
}

/// The error name and message of a PDS answer.
pub fn error_of(resp: &HttpResponse) -> (String, String) {
    let v: Value = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
    let name = v.get("error").and_then(Value::as_str).unwrap_or_default().to_string();
    let message = v.get("message").and_then(Value::as_str).unwrap_or_default().to_string();
    (name, message)
}

fn said(status: u16, name: &str, message: &str) -> String {
    match (name.is_empty(), message.is_empty()) {
        (true, true) => format!("the PDS answered {status}"),
        (false, true) => format!("the PDS answered {status} {name}"),
        (true, false) => format!("the PDS answered {status}: {message}"),
        (false, false) => format!("the PDS answered {status} {name}: {message}"),
    }
}

/// Where in a step's input a refused record points: the PDS names the record's path
/// (`Invalid app.bsky.feed.post record: Record/embed/images/0/alt must be a string`).
pub fn field_of(message: &str, default: &str) -> String {
    let Some(at) = message.find("Record/") else { return default.to_string() };
    let path: Vec<&str> = message[at + 7..].split(|c: char| c.is_whitespace()).next().unwrap_or_default().split('/').collect();
    match path.as_slice() {
        ["text", ..] | ["facets", ..] => "text".into(),
        ["langs", i, ..] => format!("langs[{i}]"),
        ["langs"] => "langs".into(),
        ["embed", "images", i, "alt", ..] => format!("images[{i}].alt"),
        ["embed", "images", i, ..] => format!("images[{i}]"),
        ["embed", ..] => "images".into(),
        _ => default.to_string(),
    }
}

/// A PDS answer classified: 2xx passes; 429 waits for `Retry-After` or the
/// `RateLimit-Reset` time (the kit reads both); a refused session is `Auth`; 400
/// `InvalidRequest` (and other 400s, 413) is bad input on the field the message names
/// (else `field`); 5xx is transient; anything else permanent.
pub fn check(resp: HttpResponse, field: &str) -> Result<HttpResponse, ConnectorError> {
    let status = resp.status.as_u16();
    if status < 400 {
        return Ok(resp);
    }
    let (name, message) = error_of(&resp);
    let text = said(status, &name, &message);
    if status == 429 || status == 408 || status >= 500 {
        return match enlace_kit::classify(resp) {
            Err(ConnectorError::RateLimited { retry_after, .. }) => Err(ConnectorError::RateLimited { retry_after, message: text }),
            Err(ConnectorError::Transient { retry_after, .. }) => Err(ConnectorError::Transient { retry_after, message: text }),
            other => other,
        };
    }
    if status == 401
        || status == 403
        || ["AuthenticationRequired", "InvalidToken", "ExpiredToken", "AuthMissing", "AccountTakedown", "AccountDeactivated"]
            .contains(&name.as_str())
    {
        return Err(ConnectorError::auth(format!(
            "Bluesky refused the connection ({text}); check the handle and app password of the connection, or make a new app password"
        )));
    }
    if status == 400 || status == 413 {
        return Err(ConnectorError::bad_input(field_of(&message, field), format!("Bluesky refused it: {text}")));
    }
    Err(ConnectorError::Permanent { message: text, status: Some(status) })
}

/// The JSON of a 2xx answer.
pub fn json_of(resp: &HttpResponse, what: &str) -> Result<Value, ConnectorError> {
    serde_json::from_slice(&resp.body)
        .map_err(|e| ConnectorError::permanent(format!("the PDS answered {what} with something that is not JSON: {e}")))
}

fn bearer(req: &mut HttpRequest, token: &Secret) -> Result<(), ConnectorError> {
    let mut v = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
        .map_err(|_| ConnectorError::permanent("the PDS gave a session token that cannot be sent in a header"))?;
    v.set_sensitive(true);
    req.headers.insert(AUTHORIZATION, v);
    Ok(())
}

/// Whether an answer says the access token is no longer good (renew it, then send again:
/// the PDS refused the call before doing anything).
fn token_refused(resp: &HttpResponse) -> bool {
    let s = resp.status.as_u16();
    (s == 400 || s == 401) && matches!(error_of(resp).0.as_str(), "ExpiredToken" | "InvalidToken")
}

impl<'a> Xrpc<'a> {
    /// A client for the account of a `basic` connection (`username`: handle or email,
    /// `password`: an app password).
    pub fn new(
        http: &'a dyn HttpTransport,
        timeout: Duration,
        base: String,
        sessions: &'a Arc<Sessions>,
        creds: &Credentials,
    ) -> Result<Xrpc<'a>, ConnectorError> {
        let (identifier, password) = match creds {
            Credentials::Basic { username, password } if !username.trim().is_empty() => (username.trim().to_string(), password.clone()),
            Credentials::None => {
                return Err(ConnectorError::auth(
                    "this step has no Bluesky connection; create a `basic` connection with the handle as username and an app password as password",
                ));
            }
            _ => {
                return Err(ConnectorError::auth(
                    "a Bluesky connection is `basic`: the account's handle (or email) as username and an app password as password",
                ));
            }
        };
        let digest = Sha256::digest(password.expose().as_bytes());
        let key = format!("{base}\n{}\n{digest:x}", identifier.to_lowercase());
        Ok(Xrpc { http, timeout, base, sessions, identifier, password, key })
    }

    /// `{base}/xrpc/{nsid}`.
    pub fn url(&self, nsid: &str) -> String {
        format!("{}/xrpc/{nsid}", self.base)
    }

    async fn send_raw(&self, mut req: HttpRequest, idempotent: bool) -> Result<HttpResponse, ConnectorError> {
        if !self.timeout.is_zero() {
            req.timeout = Some(self.timeout);
        }
        self.http.send(req).await.map_err(|e| match enlace_kit::transport_error(e, idempotent) {
            // A PDS address the SSRF guard refuses (a private address).
            ConnectorError::BadInput { message, .. } => ConnectorError::bad_input("service", message),
            other => other,
        })
    }

    /// The account's session: kept, or a new sign-in.
    pub async fn session(&self) -> Result<Session, ConnectorError> {
        match self.sessions.get(&self.key) {
            Some(s) => Ok(s),
            None => self.sign_in().await,
        }
    }

    /// `com.atproto.server.createSession` with the identifier and app password.
    pub async fn sign_in(&self) -> Result<Session, ConnectorError> {
        let mut req = HttpRequest::new(Method::POST, self.url("com.atproto.server.createSession"));
        req.headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        req.body = Bytes::from(json!({"identifier": self.identifier, "password": self.password.expose()}).to_string());
        let resp = self.send_raw(req, true).await?;
        let status = resp.status.as_u16();
        if (400..500).contains(&status) && status != 429 && status != 408 {
            let (name, message) = error_of(&resp);
            let text = said(status, &name, &message);
            let hint = match name.as_str() {
                "AuthFactorTokenRequired" => {
                    "the account asks for an email code at sign-in: give an app password (Settings → Privacy and security → App passwords), not the account's password"
                }
                "AccountTakedown" => "the account was taken down by its host",
                _ => {
                    "check the handle (or email) and make a new app password in Bluesky's Settings → Privacy and security → App passwords, then update the connection"
                }
            };
            return Err(ConnectorError::auth(format!("Bluesky refused to sign in as `{}` ({text}): {hint}", self.identifier)));
        }
        let resp = check(resp, "connection")?;
        let s = self.read_session(&resp, "createSession")?;
        self.sessions.put(&self.key, s.clone());
        Ok(s)
    }

    fn read_session(&self, resp: &HttpResponse, what: &str) -> Result<Session, ConnectorError> {
        let v = json_of(resp, what)?;
        let text = |k: &str| v.get(k).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string);
        let (Some(access), Some(refresh), Some(did)) = (text("accessJwt"), text("refreshJwt"), text("did")) else {
            return Err(ConnectorError::permanent(format!("the PDS answered {what} without accessJwt, refreshJwt or did")));
        };
        if v.get("active") == Some(&Value::Bool(false)) {
            let why = text("status").unwrap_or_else(|| "not active".into());
            return Err(ConnectorError::auth(format!("the Bluesky account `{}` is {why} on its PDS", self.identifier)));
        }
        let handle = text("handle").unwrap_or_else(|| did.clone());
        Ok(Session { access: Secret::new(access), refresh: Secret::new(refresh), did, handle })
    }

    /// A new access token: `refreshSession` with the refresh token; when that is refused,
    /// a new sign-in. Passing faults (429, 5xx, no connection) are returned as they are.
    async fn renew(&self, old: &Session) -> Result<Session, ConnectorError> {
        let mut req = HttpRequest::new(Method::POST, self.url("com.atproto.server.refreshSession"));
        bearer(&mut req, &old.refresh)?;
        let resp = self.send_raw(req, true).await?;
        match check(resp, "connection") {
            Ok(resp) => {
                let s = self.read_session(&resp, "refreshSession")?;
                self.sessions.put(&self.key, s.clone());
                Ok(s)
            }
            Err(e) if matches!(e.class(), enlace_core::ErrorClass::Auth | enlace_core::ErrorClass::BadInput) => {
                self.sessions.forget(&self.key);
                self.sign_in().await
            }
            Err(e) => Err(e),
        }
    }

    /// Sends a call made by `build` with the session's access token; when the PDS says the
    /// token expired (or is not valid any more), renews it and sends the call once more.
    /// Returns the answer (unclassified) and the session used.
    pub async fn call(&self, build: impl Fn(&Session) -> HttpRequest, idempotent: bool) -> Result<(HttpResponse, Session), ConnectorError> {
        let mut s = self.session().await?;
        let mut renewed = false;
        loop {
            let mut req = build(&s);
            bearer(&mut req, &s.access)?;
            let resp = self.send_raw(req, idempotent).await?;
            if !renewed && token_refused(&resp) {
                s = self.renew(&s).await?;
                renewed = true;
                continue;
            }
            return Ok((resp, s));
        }
    }
}
