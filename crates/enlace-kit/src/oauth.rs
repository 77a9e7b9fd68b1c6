//! OAuth2 token requests, built by the `oauth2` crate and sent through the connector
//! transport (so token endpoints pass the same SSRF guard, size cap and timeouts as every
//! other call): the authorization URL with PKCE (S256) and a fresh `state`, the code
//! exchange, the refresh, and the client credentials grant.
//!
//! Failures come back as [`ConnectorError`] classes the runner acts on: `Auth` when the
//! server refused the grant itself (`invalid_grant`, `invalid_client`, `unauthorized_client`,
//! `invalid_scope`: only the user can repair it, so the connection needs reconnecting),
//! `RateLimited` on 429, `Transient` on 5xx or a network failure (the refresh is tried again
//! later, the connection is not marked broken), `Permanent` for an answer that is not a
//! token response. Messages carry the server's `error` and `error_description`, never a
//! token.

use std::sync::Mutex;
use std::time::Duration;

use enlace_core::http::{HttpRequest, HttpTransport, Method, StatusCode};
use enlace_core::{ClientAuth, ConnectorError, GrantType, OAuth2Grant, Secret, TokenSet};
use oauth2::basic::{BasicClient, BasicErrorResponseType};
use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl,
    RefreshToken, RequestTokenError, Scope, TokenResponse, TokenUrl,
};

use crate::classify::{classify, transport_error};

/// How long a token request may take.
pub const TOKEN_TIMEOUT: Duration = Duration::from_secs(30);

/// Where to send the user to sign in, and what to keep until they come back.
#[derive(Debug)]
pub struct AuthorizationStart {
    /// The authorization server's page, with `client_id`, `redirect_uri`, `scope`,
    /// `state`, `code_challenge` (S256) and the app's extra parameters.
    pub url: String,
    /// The `state` the callback must bring back (compared in constant time by the store's
    /// lookup: it is the key of the pending authorization).
    pub state: String,
    /// The PKCE verifier, sent with the code exchange. Never shown to anyone.
    pub verifier: Secret,
}

fn bad_config(field: &str, e: impl std::fmt::Display) -> ConnectorError {
    ConnectorError::bad_input(format!("credentials.{field}"), format!("is not a usable URL: {e}"))
}

type Client = oauth2::Client<
    oauth2::basic::BasicErrorResponse,
    oauth2::basic::BasicTokenResponse,
    oauth2::basic::BasicTokenIntrospectionResponse,
    oauth2::StandardRevocableToken,
    oauth2::basic::BasicRevocationErrorResponse,
    oauth2::EndpointMaybeSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointSet,
>;

fn client(g: &OAuth2Grant, redirect_uri: Option<&str>) -> Result<Client, ConnectorError> {
    let auth_url = if g.authorize_url.is_empty() {
        None
    } else {
        Some(AuthUrl::new(g.authorize_url.clone()).map_err(|e| bad_config("authorize_url", e))?)
    };
    let mut c = BasicClient::new(ClientId::new(g.client_id.clone()))
        .set_auth_uri_option(auth_url)
        .set_token_uri(TokenUrl::new(g.token_url.clone()).map_err(|e| bad_config("token_url", e))?)
        .set_auth_type(match g.client_auth {
            ClientAuth::Basic => AuthType::BasicAuth,
            ClientAuth::Body => AuthType::RequestBody,
        });
    if let Some(s) = &g.client_secret {
        c = c.set_client_secret(ClientSecret::new(s.expose().to_string()));
    }
    if let Some(r) = redirect_uri {
        c = c.set_redirect_uri(RedirectUrl::new(r.to_string()).map_err(|e| bad_config("redirect_uri", e))?);
    }
    Ok(c)
}

/// The URL that starts the sign-in, with a fresh `state` and PKCE challenge.
pub fn authorization_start(g: &OAuth2Grant, redirect_uri: &str) -> Result<AuthorizationStart, ConnectorError> {
    if g.grant != GrantType::AuthorizationCode {
        return Err(ConnectorError::bad_input(
            "credentials.grant",
            "a `client_credentials` connection has no sign-in: its token comes from the client id and secret",
        ));
    }
    let c = client(g, Some(redirect_uri))?;
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut req = c
        .authorize_url(CsrfToken::new_random)
        .map_err(|e| ConnectorError::bad_input("credentials.authorize_url", e.to_string()))?
        .set_pkce_challenge(challenge)
        .add_scopes(g.scopes.iter().map(|s| Scope::new(s.clone())));
    for (k, v) in &g.authorize_params {
        req = req.add_extra_param(k.clone(), v.clone());
    }
    let (url, state) = req.url();
    Ok(AuthorizationStart { url: url.to_string(), state: state.secret().clone(), verifier: Secret::new(verifier.secret().clone()) })
}

/// The transport as the `oauth2` crate's client, remembering the last answer so that a
/// failure the crate cannot read (a 503 page, a 429) is classified from its status.
struct Sender<'a> {
    transport: &'a dyn HttpTransport,
    last: Mutex<Option<(StatusCode, enlace_core::http::HttpResponse)>>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct SendError(String, #[source] Option<enlace_core::http::TransportError>);

impl Sender<'_> {
    async fn send(&self, req: oauth2::HttpRequest) -> Result<oauth2::HttpResponse, SendError> {
        let (parts, body) = req.into_parts();
        let method = Method::from_bytes(parts.method.as_str().as_bytes()).unwrap_or(Method::POST);
        let mut out = HttpRequest::new(method, parts.uri.to_string());
        out.headers = parts.headers;
        out.body = body.into();
        out.timeout = Some(TOKEN_TIMEOUT);
        let resp = self.transport.send(out).await.map_err(|e| SendError(e.to_string(), Some(e)))?;
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some((resp.status, resp.clone()));
        let mut b = http::Response::builder().status(resp.status.as_u16());
        for (k, v) in &resp.headers {
            b = b.header(k, v);
        }
        b.body(resp.body.to_vec()).map_err(|e| SendError(e.to_string(), None))
    }
}

// A named client rather than a closure: the future of a closure-based client is not `Send`
// for every lifetime (a compiler limitation with higher-ranked bounds), and the runner
// needs a `Send` refresh.
impl<'c> oauth2::AsyncHttpClient<'c> for Sender<'_> {
    type Error = SendError;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<oauth2::HttpResponse, SendError>> + Send + 'c>>;

    fn call(&'c self, request: oauth2::HttpRequest) -> Self::Future {
        Box::pin(self.send(request))
    }
}

fn token_set(r: &oauth2::basic::BasicTokenResponse) -> TokenSet {
    TokenSet {
        access_token: Secret::new(r.access_token().secret().clone()),
        refresh_token: r.refresh_token().map(|t| Secret::new(t.secret().clone())),
        expires_in_ms: r.expires_in().map(|d| d.as_millis().min(i64::MAX as u128) as i64),
        scopes: r.scopes().map(|s| s.iter().map(|x| x.to_string()).collect()),
    }
}

/// Turns a failed token request into a class the runner acts on.
fn token_error(what: &str, sender: &Sender<'_>, err: RequestTokenError<SendError, oauth2::basic::BasicErrorResponse>) -> ConnectorError {
    let last_status = sender.last.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map(|(s, _)| *s);
    match err {
        RequestTokenError::ServerResponse(e) => {
            // A 429 keeps its Retry-After, whatever the body says.
            let last = sender.last.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some((status, resp)) = last
                && status == StatusCode::TOO_MANY_REQUESTS
                && let Err(limited) = classify(resp)
            {
                return limited;
            }
            let status = last_status;
            let code = e.error().to_string();
            let detail = e.error_description().map(|d| format!(": {d}")).unwrap_or_default();
            let message = format!("the authorization server refused the {what} ({code}{detail})");
            match e.error() {
                BasicErrorResponseType::InvalidGrant
                | BasicErrorResponseType::InvalidClient
                | BasicErrorResponseType::UnauthorizedClient
                | BasicErrorResponseType::InvalidScope => {
                    ConnectorError::auth(format!("{message}; reconnect the connection to sign in again"))
                }
                _ => {
                    // A server error with a well-formed body (`temporarily_unavailable`, or a
                    // 5xx carrying `server_error`) is worth another try.
                    if code == "temporarily_unavailable" || code == "server_error" || status.is_some_and(|s| s.is_server_error()) {
                        ConnectorError::transient(message)
                    } else {
                        ConnectorError::permanent(message)
                    }
                }
            }
        }
        RequestTokenError::Request(SendError(_, Some(t))) => transport_error(t, true),
        RequestTokenError::Request(SendError(m, None)) => ConnectorError::transient(format!("the {what} failed: {m}")),
        RequestTokenError::Parse(_, _) | RequestTokenError::Other(_) => {
            let last = sender.last.lock().unwrap_or_else(|e| e.into_inner()).take();
            match last {
                Some((status, resp)) if status.as_u16() >= 400 => match classify(resp) {
                    Err(e) => match e {
                        // A 401 from a token endpoint is the client being refused.
                        ConnectorError::Auth { .. } => ConnectorError::auth(format!(
                            "the authorization server refused the {what} (HTTP {status}); check the client id and secret, then reconnect"
                        )),
                        other => other,
                    },
                    Ok(_) => ConnectorError::permanent(format!("the {what} failed with HTTP {status}")),
                },
                Some((status, _)) => ConnectorError::permanent(format!(
                    "the authorization server's answer to the {what} (HTTP {status}) is not a token response: it needs `access_token` and `token_type`"
                )),
                None => ConnectorError::transient(format!("the {what} got no answer")),
            }
        }
    }
}

/// Exchanges the code the user brought back for tokens (with the PKCE verifier).
pub async fn exchange_code(
    transport: &dyn HttpTransport,
    g: &OAuth2Grant,
    code: &str,
    verifier: &Secret,
    redirect_uri: &str,
) -> Result<TokenSet, ConnectorError> {
    let c = client(g, Some(redirect_uri))?;
    let sender = Sender { transport, last: Mutex::new(None) };
    c.exchange_code(AuthorizationCode::new(code.to_string()))
        .set_pkce_verifier(PkceCodeVerifier::new(verifier.expose().to_string()))
        .request_async(&sender)
        .await
        .map(|r| token_set(&r))
        .map_err(|e| token_error("code exchange", &sender, e))
}

/// A new access token without the user: the refresh token grant, or the client
/// credentials grant again. A connection that can do neither is an `Auth` error (sign in
/// again).
pub async fn refresh(transport: &dyn HttpTransport, g: &OAuth2Grant) -> Result<TokenSet, ConnectorError> {
    let c = client(g, None)?;
    let sender = Sender { transport, last: Mutex::new(None) };
    let scopes = g.scopes.iter().map(|s| Scope::new(s.clone()));
    let result = match g.grant {
        GrantType::ClientCredentials => c.exchange_client_credentials().add_scopes(scopes).request_async(&sender).await,
        GrantType::AuthorizationCode => {
            let Some(rt) = g.refresh_token.as_ref().filter(|t| !t.is_empty()) else {
                return Err(ConnectorError::auth(
                    "the access token expired and the authorization server gave no refresh token; reconnect the connection to sign in again",
                ));
            };
            let rt = RefreshToken::new(rt.expose().to_string());
            c.exchange_refresh_token(&rt).request_async(&sender).await
        }
    };
    let what = if g.grant == GrantType::ClientCredentials { "client credentials request" } else { "token refresh" };
    result.map(|r| token_set(&r)).map_err(|e| token_error(what, &sender, e))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use axum::Router;
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode as AxStatus};
    use axum::routing::post;
    use enlace_core::ErrorClass;

    use super::*;
    use crate::{ReqwestTransport, TransportConfig};

    fn grant(token_url: &str) -> OAuth2Grant {
        OAuth2Grant {
            grant: GrantType::AuthorizationCode,
            client_id: "cid".into(),
            client_secret: Some(Secret::new("csecret")),
            authorize_url: "https://auth.example.com/authorize".into(),
            token_url: token_url.into(),
            scopes: vec!["files.read".into(), "offline".into()],
            authorize_params: BTreeMap::from([("access_type".to_string(), "offline".to_string())]),
            client_auth: ClientAuth::Basic,
            access_token: None,
            refresh_token: Some(Secret::new("rt-1")),
            expires_at: None,
            granted_scopes: None,
        }
    }

    #[test]
    fn the_authorization_url_carries_pkce_state_and_the_apps_parameters() {
        let g = grant("https://auth.example.com/token");
        let a = authorization_start(&g, "https://enlace.example.com/oauth/callback").unwrap();
        let url = reqwest::Url::parse(&a.url).unwrap();
        let q: BTreeMap<String, String> = url.query_pairs().into_owned().collect();
        assert_eq!(q["response_type"], "code");
        assert_eq!(q["client_id"], "cid");
        assert_eq!(q["redirect_uri"], "https://enlace.example.com/oauth/callback");
        assert_eq!(q["scope"], "files.read offline");
        assert_eq!(q["state"], a.state);
        assert_eq!(q["code_challenge_method"], "S256");
        assert_eq!(q["access_type"], "offline");
        // The challenge is the S256 of the verifier we keep.
        use sha2_check::challenge_of;
        assert_eq!(q["code_challenge"], challenge_of(a.verifier.expose()));
        assert!(a.state.len() >= 16);
        let b = authorization_start(&g, "https://enlace.example.com/oauth/callback").unwrap();
        assert_ne!(a.state, b.state, "a fresh state each time");
        let mut cc = g.clone();
        cc.grant = GrantType::ClientCredentials;
        assert_eq!(authorization_start(&cc, "https://x/cb").unwrap_err().class(), ErrorClass::BadInput);
    }

    /// S256 by hand (RFC 7636 appendix B), to check the crate's challenge independently.
    mod sha2_check {
        use base64::Engine as _;
        pub fn challenge_of(verifier: &str) -> String {
            use oauth2::PkceCodeChallenge;
            // The crate computes the same thing; compare against the RFC's own example first.
            let rfc = PkceCodeChallenge::from_code_verifier_sha256(&oauth2::PkceCodeVerifier::new(
                "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk".into(),
            ));
            assert_eq!(rfc.as_str(), "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
            let c = PkceCodeChallenge::from_code_verifier_sha256(&oauth2::PkceCodeVerifier::new(verifier.into()));
            let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(c.as_str()).unwrap();
            assert_eq!(decoded.len(), 32);
            c.as_str().to_string()
        }
    }

    #[derive(Clone, Default)]
    struct Seen(Arc<Mutex<Vec<(HeaderMap, String)>>>);

    async fn token_server(status: u16, body: &'static str) -> (String, Seen) {
        let seen = Seen::default();
        let app = Router::new()
            .route(
                "/token",
                post(move |State(s): State<Seen>, h: HeaderMap, body_in: String| async move {
                    s.0.lock().unwrap().push((h, body_in));
                    (AxStatus::from_u16(status).unwrap(), [("content-type", "application/json")], body)
                }),
            )
            .with_state(seen.clone());
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        (format!("http://{addr}/token"), seen)
    }

    fn transport() -> ReqwestTransport {
        ReqwestTransport::new(TransportConfig { allow_private_networks: true, ..TransportConfig::default() }).unwrap()
    }

    #[tokio::test]
    async fn refresh_sends_the_refresh_token_with_basic_client_auth() {
        let (url, seen) = token_server(
            200,
            r#"{"access_token":"at-2","token_type":"Bearer","expires_in":3600,"refresh_token":"rt-2","scope":"files.read"}"#,
        )
        .await;
        let t = refresh(&transport(), &grant(&url)).await.unwrap();
        assert_eq!(t.access_token.expose(), "at-2");
        assert_eq!(t.refresh_token.as_ref().unwrap().expose(), "rt-2");
        assert_eq!(t.expires_in_ms, Some(3_600_000));
        let (h, body) = seen.0.lock().unwrap()[0].clone();
        let form: BTreeMap<String, String> = form_urlencoded::parse(body.as_bytes()).into_owned().collect();
        assert_eq!(form["grant_type"], "refresh_token");
        assert_eq!(form["refresh_token"], "rt-1");
        assert!(!form.contains_key("client_secret"), "basic auth keeps the secret out of the body");
        assert_eq!(h["authorization"], "Basic Y2lkOmNzZWNyZXQ=");
    }

    #[tokio::test]
    async fn client_credentials_in_the_body_when_the_app_says_so() {
        let (url, seen) = token_server(200, r#"{"access_token":"cc-1","token_type":"bearer","expires_in":60}"#).await;
        let mut g = grant(&url);
        g.grant = GrantType::ClientCredentials;
        g.client_auth = ClientAuth::Body;
        g.refresh_token = None;
        let t = refresh(&transport(), &g).await.unwrap();
        assert_eq!((t.access_token.expose(), t.refresh_token.is_none()), ("cc-1", true));
        let (h, body) = seen.0.lock().unwrap()[0].clone();
        let form: BTreeMap<String, String> = form_urlencoded::parse(body.as_bytes()).into_owned().collect();
        assert_eq!(form["grant_type"], "client_credentials");
        assert_eq!((form["client_id"].as_str(), form["client_secret"].as_str()), ("cid", "csecret"));
        assert_eq!(form["scope"], "files.read offline");
        assert!(h.get("authorization").is_none());
    }

    #[tokio::test]
    async fn failures_are_classified_for_the_runner() {
        let t = transport();
        let (url, _) = token_server(400, r#"{"error":"invalid_grant","error_description":"Token has been expired or revoked."}"#).await;
        let e = refresh(&t, &grant(&url)).await.unwrap_err();
        assert_eq!(e.class(), ErrorClass::Auth);
        assert!(e.to_string().contains("invalid_grant: Token has been expired or revoked."), "{e}");
        assert!(!e.to_string().contains("rt-1"), "no token in messages: {e}");

        let (url, _) = token_server(503, "<html>down</html>").await;
        assert_eq!(refresh(&t, &grant(&url)).await.unwrap_err().class(), ErrorClass::Transient);

        let (url, _) = token_server(429, r#"{"error":"slow_down"}"#).await;
        assert_eq!(refresh(&t, &grant(&url)).await.unwrap_err().class(), ErrorClass::RateLimited);

        let (url, _) = token_server(200, r#"{"token":"nope"}"#).await;
        let e = refresh(&t, &grant(&url)).await.unwrap_err();
        assert_eq!(e.class(), ErrorClass::Permanent);
        assert!(e.to_string().contains("not a token response"), "{e}");

        let (url, _) = token_server(401, r#"{"message":"bad client"}"#).await;
        assert_eq!(refresh(&t, &grant(&url)).await.unwrap_err().class(), ErrorClass::Auth);

        let mut no_rt = grant("http://127.0.0.1:9/token");
        no_rt.refresh_token = None;
        let e = refresh(&t, &no_rt).await.unwrap_err();
        assert_eq!(e.class(), ErrorClass::Auth);
        assert!(e.to_string().contains("gave no refresh token"), "{e}");

        // Nothing listens on port 9: nothing was sent, try again later.
        assert_eq!(refresh(&t, &grant("http://127.0.0.1:9/token")).await.unwrap_err().class(), ErrorClass::Transient);
    }

    #[tokio::test]
    async fn the_ssrf_guard_covers_token_endpoints() {
        let guarded = ReqwestTransport::new(TransportConfig::default()).unwrap();
        let e = refresh(&guarded, &grant("http://127.0.0.1:9/token")).await.unwrap_err();
        assert_eq!(e.class(), ErrorClass::BadInput, "{e}");
    }
}
