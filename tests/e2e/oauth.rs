//! OAuth2 connections end to end, on both stores: the sign-in through `/oauth/callback`
//! (authorization code with PKCE, `state` checked and used once), tokens refreshed ahead
//! of expiry and once after a 401, one refresh at a time, a refused refresh holding runs
//! until the user signs in again, the refresh token never lost, and the client credentials
//! grant.
//!
//! Two authorization servers run on loopback. `Strict` is ours: it enforces what the public
//! mock servers let slide (a code used once and only with its PKCE verifier and redirect
//! URI, the client's secret on every token request, refresh tokens rotated so that an old
//! one is refused). `oauth2-mock-server` (npm, installed by `.ci/run`) is a third-party
//! server that checks the S256 PKCE verifier; the sign-in and a refresh run against it too.

use std::collections::{BTreeMap, HashMap};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use enlace_store::RunStatus;
use reqwest::Method;
use serde_json::{Value, json};
use sha2::Digest;

use crate::support::*;

const CLIENT_ID: &str = "enlace-test-client";
const CLIENT_SECRET: &str = "client-secret-0123";

#[derive(Default)]
struct AsInner {
    /// code → (challenge, redirect_uri)
    codes: HashMap<String, (String, String)>,
    /// Refresh tokens that work now.
    refresh_tokens: Vec<String>,
    /// Access tokens that work now.
    access_tokens: Vec<String>,
    expires_in: u64,
    /// Whether a code exchange answers with a refresh token (Google does not on a second consent).
    refresh_on_code: bool,
    issued: u64,
    refreshes: u64,
    code_exchanges: u64,
    client_credentials: u64,
    /// The bearer token of each API call.
    api_calls: Vec<String>,
    /// Problems the server saw (a failed check). A test asserts it stays empty.
    violations: Vec<String>,
    /// What `GET /api/feed` lists (newest first), to tokens it accepts.
    feed: Vec<Value>,
}

/// A strict authorization server and a resource API that accepts its access tokens.
#[derive(Clone)]
struct Strict {
    base: String,
    inner: Arc<Mutex<AsInner>>,
}

fn s256(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()))
}

fn oauth_error(code: &str, description: &str) -> Response {
    (StatusCode::BAD_REQUEST, axum::Json(json!({"error": code, "error_description": description}))).into_response()
}

impl Strict {
    async fn start() -> Strict {
        let inner = Arc::new(Mutex::new(AsInner { expires_in: 3600, refresh_on_code: true, ..AsInner::default() }));
        let app = Router::new()
            .route("/authorize", get(authorize))
            .route("/token", post(token))
            .route("/api/me", get(me))
            .route("/api/feed", get(feed))
            .with_state(inner.clone());
        let base = format!("http://{}", serve_local(app).await);
        Strict { base, inner }
    }

    fn with<T>(&self, f: impl FnOnce(&mut AsInner) -> T) -> T {
        f(&mut self.inner.lock().unwrap())
    }

    fn credentials(&self) -> Value {
        json!({
            "kind": "oauth2", "grant": "authorization_code",
            "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
            "authorize_url": format!("{}/authorize", self.base), "token_url": format!("{}/token", self.base),
            "scopes": ["contacts.read", "offline_access"],
        })
    }

    /// The access token is refused from now on (revoked, or expired early).
    fn revoke_access(&self) {
        self.with(|a| a.access_tokens.clear());
    }
}

fn issue(a: &mut AsInner, with_refresh: bool) -> Value {
    a.issued += 1;
    let at = format!("at-{}-{}", a.issued, uuid::Uuid::new_v4().simple());
    a.access_tokens.push(at.clone());
    let mut body = json!({"access_token": at, "token_type": "Bearer", "expires_in": a.expires_in, "scope": "contacts.read offline_access"});
    if with_refresh {
        let rt = format!("rt-{}-{}", a.issued, uuid::Uuid::new_v4().simple());
        a.refresh_tokens.push(rt.clone());
        body["refresh_token"] = json!(rt);
    }
    body
}

async fn authorize(State(s): State<Arc<Mutex<AsInner>>>, Query(q): Query<BTreeMap<String, String>>) -> Response {
    let mut a = s.lock().unwrap();
    let get = |k: &str| q.get(k).cloned().unwrap_or_default();
    let mut problems = vec![];
    if get("response_type") != "code" {
        problems.push("response_type is not code".to_string());
    }
    if get("client_id") != CLIENT_ID {
        problems.push(format!("unknown client_id {}", get("client_id")));
    }
    if get("code_challenge_method") != "S256" || get("code_challenge").len() != 43 {
        problems.push("no S256 code_challenge".to_string());
    }
    if get("state").len() < 16 {
        problems.push("state missing or short".to_string());
    }
    if get("scope") != "contacts.read offline_access" {
        problems.push(format!("scope is {:?}", get("scope")));
    }
    if !problems.is_empty() {
        a.violations.extend(problems.clone());
        return (StatusCode::BAD_REQUEST, problems.join("; ")).into_response();
    }
    let code = uuid::Uuid::new_v4().simple().to_string();
    a.codes.insert(code.clone(), (get("code_challenge"), get("redirect_uri")));
    let mut to = reqwest::Url::parse(&get("redirect_uri")).unwrap();
    to.query_pairs_mut().append_pair("code", &code).append_pair("state", &get("state"));
    Redirect::to(to.as_str()).into_response()
}

async fn token(State(s): State<Arc<Mutex<AsInner>>>, headers: HeaderMap, body: String) -> Response {
    let mut a = s.lock().unwrap();
    let expected = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}")));
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        a.violations.push("token request without the client's credentials".into());
        return (StatusCode::UNAUTHORIZED, axum::Json(json!({"error": "invalid_client"}))).into_response();
    }
    let form: BTreeMap<String, String> = form_urlencoded::parse(body.as_bytes()).into_owned().collect();
    let get = |k: &str| form.get(k).cloned().unwrap_or_default();
    match get("grant_type").as_str() {
        "authorization_code" => {
            a.code_exchanges += 1;
            // A code works once, with its verifier and its redirect URI.
            let Some((challenge, redirect)) = a.codes.remove(&get("code")) else {
                return oauth_error("invalid_grant", "unknown or used code");
            };
            if s256(&get("code_verifier")) != challenge {
                a.violations.push("wrong PKCE verifier".into());
                return oauth_error("invalid_grant", "code_verifier does not match");
            }
            if get("redirect_uri") != redirect {
                a.violations.push("redirect_uri differs from the authorization request's".into());
                return oauth_error("invalid_grant", "redirect_uri mismatch");
            }
            let with_refresh = a.refresh_on_code;
            axum::Json(issue(&mut a, with_refresh)).into_response()
        }
        "refresh_token" => {
            a.refreshes += 1;
            let rt = get("refresh_token");
            let Some(i) = a.refresh_tokens.iter().position(|t| *t == rt) else {
                return oauth_error("invalid_grant", "Token has been expired or revoked.");
            };
            // Rotation: the refresh token used is spent.
            a.refresh_tokens.remove(i);
            axum::Json(issue(&mut a, true)).into_response()
        }
        "client_credentials" => {
            a.client_credentials += 1;
            axum::Json(issue(&mut a, false)).into_response()
        }
        other => oauth_error("unsupported_grant_type", other),
    }
}

async fn me(State(s): State<Arc<Mutex<AsInner>>>, headers: HeaderMap) -> Response {
    let mut a = s.lock().unwrap();
    let token =
        headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")).unwrap_or("").to_string();
    a.api_calls.push(token.clone());
    if a.access_tokens.contains(&token) {
        axum::Json(json!({"email": "ana@example.com"})).into_response()
    } else {
        (StatusCode::UNAUTHORIZED, axum::Json(json!({"error": "invalid_token"}))).into_response()
    }
}

async fn feed(State(s): State<Arc<Mutex<AsInner>>>, headers: HeaderMap) -> Response {
    let mut a = s.lock().unwrap();
    let token =
        headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")).unwrap_or("").to_string();
    a.api_calls.push(token.clone());
    if a.access_tokens.contains(&token) {
        axum::Json(json!({"items": a.feed})).into_response()
    } else {
        (StatusCode::UNAUTHORIZED, axum::Json(json!({"error": "invalid_token"}))).into_response()
    }
}

fn no_redirects() -> reqwest::Client {
    enlace_kit::transport::install_crypto_provider();
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// What a user's browser does: open the sign-in address, consent, follow the redirect back
/// to Enlace. Returns the callback's status and page.
async fn sign_in(s: &TestServer, authorize_url: &str) -> (u16, String, String) {
    let http = no_redirects();
    let r = http.get(authorize_url).send().await.unwrap();
    assert_eq!(r.status(), 303, "the sign-in page redirects back: {}", r.text().await.unwrap());
    let back = r.headers()["location"].to_str().unwrap().to_string();
    assert!(back.starts_with(&s.url("/oauth/callback?")), "{back}");
    let r = http.get(&back).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap(), back)
}

async fn create(s: &TestServer, id: &str, credentials: Value) -> Value {
    let r = s
        .api(Method::POST, "/api/v1/connections")
        .json(&json!({"id": id, "app": "http", "credentials": credentials}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    r.json().await.unwrap()
}

async fn connection(s: &TestServer, id: &str) -> Value {
    s.api(Method::GET, &format!("/api/v1/connections/{id}")).send().await.unwrap().json().await.unwrap()
}

async fn reauthorize(s: &TestServer, id: &str) -> String {
    let r = s.api(Method::POST, &format!("/api/v1/connections/{id}/authorize")).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["redirect_uri"], s.url("/oauth/callback"));
    v["authorize_url"].as_str().unwrap().to_string()
}

async fn install_call(s: &TestServer, id: &str, conn: &str, url: &str) {
    let yaml = format!(
        "id: {id}\ntrigger: {{app: webhook, event: catch}}\nsteps:\n  - id: call\n    app: http\n    action: request\n    connection: {conn}\n    with: {{method: GET, url: \"{url}\"}}\n"
    );
    let r = s.api(Method::POST, "/api/v1/recipes").header("content-type", "application/yaml").body(yaml).send().await.unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
}

async fn fire(s: &TestServer, path: &str) -> String {
    let r: Value = s.http.post(s.url(&format!("/hooks/{path}"))).json(&json!({})).send().await.unwrap().json().await.unwrap();
    r["run_id"].as_str().unwrap_or_else(|| panic!("no run id: {r}")).to_string()
}

/// Whatever the API shows of a connection and its runs never holds a token or the secret.
async fn assert_nothing_leaks(s: &TestServer, strict: &Strict, runs: &[&str]) {
    let (rts, ats) = strict.with(|a| (a.refresh_tokens.clone(), a.access_tokens.clone()));
    let mut shown = s.api(Method::GET, "/api/v1/connections").send().await.unwrap().text().await.unwrap();
    for r in runs {
        shown.push_str(&s.api(Method::GET, &format!("/api/v1/runs/{r}")).send().await.unwrap().text().await.unwrap());
    }
    for secret in rts.iter().chain(ats.iter()).map(String::as_str).chain([CLIENT_SECRET]) {
        assert!(!shown.contains(secret), "a secret is shown: {secret}");
    }
}

async fn sign_in_with_pkce_then_calls_carry_the_token() {
    let strict = Strict::start().await;
    let s = TestServer::start().await;
    let created = create(&s, "crm", strict.credentials()).await;
    assert_eq!(created["status"], "needs_reconnect", "{created}");
    let url = created["authorize_url"].as_str().unwrap().to_string();
    assert!(url.starts_with(&format!("{}/authorize?", strict.base)), "{url}");

    let (code, page, back) = sign_in(&s, &url).await;
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("Connected"), "{page}");
    assert_eq!(connection(&s, "crm").await["status"], "ok");
    // The same callback again: a state works once.
    let again = no_redirects().get(&back).send().await.unwrap();
    assert_eq!(again.status(), 400);
    assert!(again.text().await.unwrap().contains("already used"));
    // A state Enlace never sent.
    let forged = no_redirects().get(s.url("/oauth/callback?code=x&state=forged-state-0123456789")).send().await.unwrap();
    assert_eq!(forged.status(), 400);
    // A user who refuses consent: the app sends an error; nothing changes.
    let refused = reauthorize(&s, "crm").await;
    let state = reqwest::Url::parse(&refused).unwrap().query_pairs().find(|(k, _)| k == "state").unwrap().1.to_string();
    let r = no_redirects().get(s.url(&format!("/oauth/callback?error=access_denied&state={state}"))).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("access_denied"));
    assert_eq!(connection(&s, "crm").await["status"], "ok");

    install_call(&s, "me", "crm", &format!("{}/api/me", strict.base)).await;
    let run = fire(&s, "me").await;
    status(&s.store, &run, RunStatus::Succeeded).await;
    let (calls, ats, violations, exchanges) =
        strict.with(|a| (a.api_calls.clone(), a.access_tokens.clone(), a.violations.clone(), a.code_exchanges));
    assert_eq!(calls, ats, "the call carried the token of the sign-in");
    assert_eq!(exchanges, 1);
    assert!(violations.is_empty(), "{violations:?}");
    assert_nothing_leaks(&s, &strict, &[&run]).await;
}

async fn tokens_are_refreshed_ahead_of_expiry_and_rotated_refresh_tokens_are_kept() {
    let strict = Strict::start().await;
    // Every token expires within the five minutes Enlace refreshes ahead of.
    strict.with(|a| a.expires_in = 120);
    let s = TestServer::start().await;
    let url = create(&s, "crm", strict.credentials()).await["authorize_url"].as_str().unwrap().to_string();
    assert_eq!(sign_in(&s, &url).await.0, 200);
    install_call(&s, "me", "crm", &format!("{}/api/me", strict.base)).await;
    for i in 1..=3u64 {
        let run = fire(&s, "me").await;
        status(&s.store, &run, RunStatus::Succeeded).await;
        // Refreshed before the call, with the refresh token of the last refresh (the server
        // refuses a spent one): the rotated token was stored each time.
        assert_eq!(strict.with(|a| a.refreshes), i);
    }
    let (calls, violations) = strict.with(|a| (a.api_calls.clone(), a.violations.clone()));
    assert_eq!(calls.len(), 3, "no call was refused: {calls:?}");
    assert!(violations.is_empty(), "{violations:?}");
}

async fn a_refused_token_is_refreshed_once_for_many_runs_at_once() {
    let strict = Strict::start().await;
    let s = TestServer::start().await;
    let url = create(&s, "crm", strict.credentials()).await["authorize_url"].as_str().unwrap().to_string();
    assert_eq!(sign_in(&s, &url).await.0, 200);
    install_call(&s, "me", "crm", &format!("{}/api/me", strict.base)).await;
    let first = fire(&s, "me").await;
    status(&s.store, &first, RunStatus::Succeeded).await;
    strict.revoke_access();
    let runs: Vec<String> = futures::future::join_all((0..8).map(|_| fire(&s, "me"))).await;
    for r in &runs {
        status(&s.store, r, RunStatus::Succeeded).await;
    }
    // Eight 401s, one refresh (a second one would have sent a spent refresh token and been
    // refused), and each run called again with the new token.
    let (refreshes, calls, ats) = strict.with(|a| (a.refreshes, a.api_calls.clone(), a.access_tokens.clone()));
    assert_eq!(refreshes, 1, "one refresh for all");
    assert_eq!(ats.len(), 1);
    assert_eq!(calls.iter().filter(|t| **t == ats[0]).count(), 8, "every run retried with the new token");
    let detail: Value = s.api(Method::GET, &format!("/api/v1/runs/{}", runs[0])).send().await.unwrap().json().await.unwrap();
    assert_eq!(detail["steps"][0]["attempts"], 1, "the retry after a refresh is part of the same attempt: {detail}");
    assert_nothing_leaks(&s, &strict, &[&runs[0]]).await;
}

async fn a_refused_refresh_holds_runs_until_reconnect_and_no_refresh_token_is_lost() {
    let strict = Strict::start().await;
    let s = TestServer::start().await;
    let url = create(&s, "crm", strict.credentials()).await["authorize_url"].as_str().unwrap().to_string();
    assert_eq!(sign_in(&s, &url).await.0, 200);
    install_call(&s, "me", "crm", &format!("{}/api/me", strict.base)).await;
    // The user revoked Enlace at the app: the access and refresh tokens are refused.
    strict.with(|a| {
        a.access_tokens.clear();
        a.refresh_tokens.clear();
    });
    let run = fire(&s, "me").await;
    status(&s.store, &run, RunStatus::Waiting).await;
    let conn = connection(&s, "crm").await;
    assert_eq!(conn["status"], "needs_reconnect", "{conn}");
    assert!(conn["status_message"].as_str().unwrap().contains("invalid_grant"), "{conn}");
    let detail: Value = s.api(Method::GET, &format!("/api/v1/runs/{run}")).send().await.unwrap().json().await.unwrap();
    assert_eq!(detail["status"], "waiting");
    assert_eq!(detail["steps"][0]["status"], "waiting");
    assert!(detail["steps"][0]["error"]["hint"].as_str().unwrap().contains("/api/v1/connections/crm/authorize"), "{detail}");
    // Another run waits too, without calling the app.
    let calls_before = strict.with(|a| a.api_calls.len());
    let second = fire(&s, "me").await;
    status(&s.store, &second, RunStatus::Waiting).await;
    assert_eq!(strict.with(|a| a.api_calls.len()), calls_before);

    // The user signs in again: both runs resume and succeed.
    let url = reauthorize(&s, "crm").await;
    let (code, page, _) = sign_in(&s, &url).await;
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("2 runs that waited for it resume now"), "{page}");
    status(&s.store, &run, RunStatus::Succeeded).await;
    status(&s.store, &second, RunStatus::Succeeded).await;
    assert_eq!(connection(&s, "crm").await["status"], "ok");

    // The refresh token of the new sign-in was stored: a refresh works with it.
    strict.revoke_access();
    let third = fire(&s, "me").await;
    status(&s.store, &third, RunStatus::Succeeded).await;

    // A sign-in whose answer has no refresh token (Google on a second consent) keeps the
    // one held: the next refresh still works.
    strict.with(|a| a.refresh_on_code = false);
    let url = reauthorize(&s, "crm").await;
    assert_eq!(sign_in(&s, &url).await.0, 200);
    strict.revoke_access();
    let refreshes = strict.with(|a| a.refreshes);
    let fourth = fire(&s, "me").await;
    status(&s.store, &fourth, RunStatus::Succeeded).await;
    assert_eq!(strict.with(|a| a.refreshes), refreshes + 1);
    let violations = strict.with(|a| a.violations.clone());
    assert!(violations.is_empty(), "{violations:?}");
    assert_nothing_leaks(&s, &strict, &[&run, &second, &third, &fourth]).await;
}

async fn client_credentials_get_a_token_at_once_and_again_when_refused() {
    let strict = Strict::start().await;
    let s = TestServer::start().await;
    let created = create(
        &s,
        "svc",
        json!({"kind": "oauth2", "grant": "client_credentials", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "token_url": format!("{}/token", strict.base)}),
    )
    .await;
    assert_eq!(created["status"], "ok", "the first token was fetched at creation: {created}");
    assert!(created.get("authorize_url").is_none());
    assert_eq!(strict.with(|a| a.client_credentials), 1);
    install_call(&s, "svc", "svc", &format!("{}/api/me", strict.base)).await;
    let run = fire(&s, "svc").await;
    status(&s.store, &run, RunStatus::Succeeded).await;
    strict.revoke_access();
    let run = fire(&s, "svc").await;
    status(&s.store, &run, RunStatus::Succeeded).await;
    assert_eq!(strict.with(|a| a.client_credentials), 2);

    // A wrong secret shows at creation, with the server's refusal.
    let r = s
        .api(Method::POST, "/api/v1/connections")
        .json(&json!({"id": "svc2", "app": "http", "credentials": {"kind": "oauth2", "grant": "client_credentials", "client_id": CLIENT_ID, "client_secret": "wrong", "token_url": format!("{}/token", strict.base)}}))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "needs_reconnect", "{v}");
    assert!(v["status_message"].as_str().unwrap().contains("invalid_client"), "{v}");
}

async fn a_polling_trigger_refreshes_a_refused_token_and_polls_again() {
    let strict = Strict::start().await;
    let target = Target::start().await;
    let (runner, clock, store) = manual_runner(None).await;
    // A connection signed in earlier: its tokens are the server's.
    strict.with(|a| {
        a.access_tokens.push("at-old".into());
        a.refresh_tokens.push("rt-old".into());
        a.feed = vec![json!({"id": "c1"})];
    });
    let mut grant: enlace_core::OAuth2Grant =
        match enlace_core::parse_credentials(&strict.credentials(), enlace_core::AuthKind::OAuth2).unwrap() {
            enlace_core::Credentials::OAuth2Grant(g) => *g,
            other => panic!("{other:?}"),
        };
    grant.absorb(
        enlace_core::TokenSet {
            access_token: enlace_core::Secret::new("at-old"),
            refresh_token: Some(enlace_core::Secret::new("rt-old")),
            expires_in_ms: None,
            scopes: None,
        },
        runner.now_ms(),
    );
    store
        .create_connection("crm", "http", "CRM", &enlace_core::Credentials::OAuth2Grant(Box::new(grant)), None, runner.now_ms())
        .await
        .unwrap();
    let yaml = format!(
        "id: feed\ntrigger:\n  app: http\n  event: poll_json\n  connection: crm\n  every: 1m\n  with: {{url: \"{}/api/feed\", items: \"$.items\", id: id}}\nsteps:\n  - id: post\n    app: http\n    action: request\n    with: {{method: POST, url: \"{}\", json: {{id: \"{{{{trigger.id}}}}\"}}}}\n",
        strict.base,
        target.url("/got")
    );
    install(&runner, &yaml).await;
    assert_eq!(runner.poll_triggers().await.unwrap().seeded, 1);
    // The token is revoked; a new item waits in the feed.
    strict.with(|a| {
        a.access_tokens.clear();
        a.feed.insert(0, json!({"id": "c2"}));
    });
    clock.set(runner.now_ms() + 61_000);
    let r = runner.poll_triggers().await.unwrap();
    assert_eq!((r.errors, r.fired), (0, 1), "refreshed and polled again: {r:?}");
    runner.drain_due().await.unwrap();
    assert_eq!(target.received_on("/got").len(), 1);
    assert_eq!(strict.with(|a| a.refreshes), 1);
    let conn = store.connection("crm").await.unwrap().unwrap();
    let enlace_core::Credentials::OAuth2Grant(g) = conn.1 else { panic!("a grant") };
    assert_ne!(g.refresh_token.unwrap().expose(), "rt-old", "the rotated refresh token was stored");
}

on_both_backends!(
    a_polling_trigger_refreshes_a_refused_token_and_polls_again,
    sign_in_with_pkce_then_calls_carry_the_token,
    tokens_are_refreshed_ahead_of_expiry_and_rotated_refresh_tokens_are_kept,
    a_refused_token_is_refreshed_once_for_many_runs_at_once,
    a_refused_refresh_holds_runs_until_reconnect_and_no_refresh_token_is_lost,
    client_credentials_get_a_token_at_once_and_again_when_refused,
);

/// `oauth2-mock-server` from npm (`ENLACE_OAUTH2_MOCK`, else `~/.cache/enlace-oauth2-mock`),
/// started on a free port and stopped with the test.
struct NpmServer {
    base: String,
    child: Child,
}

impl Drop for NpmServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn npm_server_bin() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("ENLACE_OAUTH2_MOCK").filter(|p| !p.is_empty()) {
        return p.into();
    }
    let home = std::env::var_os("HOME").map(std::path::PathBuf::from).unwrap_or_else(|| "/root".into());
    home.join(".cache/enlace-oauth2-mock/node_modules/.bin/oauth2-mock-server")
}

async fn start_npm_server() -> NpmServer {
    let bin = npm_server_bin();
    assert!(
        bin.exists(),
        "oauth2-mock-server is not installed at {}: run .ci/run, or `npm install --prefix ~/.cache/enlace-oauth2-mock oauth2-mock-server@9.3.0`",
        bin.display()
    );
    let port = free_port();
    let child =
        Command::new(bin).args(["-a", "127.0.0.1", "-p", &port.to_string()]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let server = NpmServer { base, child };
    for _ in 0..200 {
        if client().get(format!("{}/.well-known/openid-configuration", server.base)).send().await.is_ok_and(|r| r.status().is_success()) {
            return server;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("oauth2-mock-server did not start on {}", server.base);
}

#[tokio::test]
async fn sign_in_and_refresh_against_oauth2_mock_server() {
    let npm = start_npm_server().await;
    let target = Target::start().await;
    // The app's API: the first token is refused once, then anything is accepted.
    target.script("/me", vec![Answer::status(200, "{}"), Answer::status(401, r#"{"error":"invalid_token"}"#), Answer::status(200, "{}")]);
    let s = TestServer::start().await;
    let created = create(
        &s,
        "npm",
        json!({"kind": "oauth2", "grant": "authorization_code", "client_id": "enlace", "client_secret": "s3cret",
               "authorize_url": format!("{}/authorize", npm.base), "token_url": format!("{}/token", npm.base), "scopes": "openid email"}),
    )
    .await;
    let url = created["authorize_url"].as_str().unwrap();
    // This server answers 302 (ours 303).
    let http = no_redirects();
    let r = http.get(url).send().await.unwrap();
    assert!(r.status().is_redirection(), "{}", r.status());
    let back = r.headers()["location"].to_str().unwrap().to_string();
    let r = http.get(&back).send().await.unwrap();
    let (code, page) = (r.status(), r.text().await.unwrap());
    // The server checked the S256 verifier against the challenge of the sign-in address.
    assert_eq!(code, 200, "{page}");
    assert_eq!(connection(&s, "npm").await["status"], "ok");

    install_call(&s, "npm", "npm", &target.url("/me")).await;
    let run = fire(&s, "npm").await;
    status(&s.store, &run, RunStatus::Succeeded).await;
    let run = fire(&s, "npm").await;
    status(&s.store, &run, RunStatus::Succeeded).await;
    let got = target.received_on("/me");
    assert_eq!(got.len(), 3, "a call, a refused call, the same call after the refresh");
    let bearer = |i: usize| got[i].header("authorization").unwrap();
    assert!(bearer(0).starts_with("Bearer ey"), "a JWT from the server: {}", bearer(0));
    assert_eq!(bearer(0), bearer(1));
    let metrics = s.http.get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("enlace_oauth_refreshes_total{outcome=\"ok\"} 1"), "one refresh against the server:\n{metrics}");
    assert_eq!(connection(&s, "npm").await["status"], "ok");
}

// Several threads: the CLI runs as a blocking child process while the authorization server
// answers it from this test's runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_creates_oauth2_connections_and_prints_the_sign_in_address() {
    let strict = Strict::start().await;
    let data = temp_dir("oauth-cli");
    let creds = strict.credentials().to_string();
    let (ok, out, err) = cli(&data, &["connections", "create", "crm", "--app", "http", "--credentials-file", "-"], &creds, true);
    assert!(ok, "{out}{err}");
    assert!(out.contains("sign in to finish: `enlace connections authorize crm`"), "{out}");
    let (ok, out, err) = cli(&data, &["connections", "authorize", "crm", "--public-url", "https://enlace.example.com"], "", true);
    assert!(ok, "{out}{err}");
    let url = out.lines().find(|l| l.starts_with("http")).unwrap_or_else(|| panic!("no address: {out}")).to_string();
    assert!(err.contains("https://enlace.example.com/oauth/callback"), "{err}");
    // The address is one the strict server accepts (client, S256 challenge, state, scopes),
    // and it sends the browser back to the public address's callback.
    let r = no_redirects().get(&url).send().await.unwrap();
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());
    let back = r.headers()["location"].to_str().unwrap().to_string();
    assert!(back.starts_with("https://enlace.example.com/oauth/callback?code="), "{back}");
    assert!(strict.with(|a| a.violations.is_empty()));

    // Client credentials: the first token is fetched by `create`.
    let cc = json!({"kind": "oauth2", "grant": "client_credentials", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "token_url": format!("{}/token", strict.base)}).to_string();
    let (ok, out, err) = cli(&data, &["connections", "create", "svc", "--app", "http", "--credentials-file", "-"], &cc, true);
    assert!(ok, "{out}{err}");
    let (_, out, _) = cli(&data, &["connections", "show", "svc"], "", true);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["status"], "ok", "{v}");
    assert_eq!(strict.with(|a| a.client_credentials), 1);
    // Nothing the CLI printed holds a token or the secret.
    let (_, list, _) = cli(&data, &["connections", "list", "--json"], "", true);
    for secret in strict.with(|a| a.access_tokens.clone()).iter().map(String::as_str).chain([CLIENT_SECRET]) {
        assert!(!list.contains(secret) && !out.contains(secret));
    }
}
