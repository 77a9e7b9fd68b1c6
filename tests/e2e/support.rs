//! Shared test parts: a scriptable HTTP target that records what it receives, a runner on
//! a temporary store, an in-process server on port 0, and request signing.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use enlace_kit::{ReqwestTransport, TransportConfig};
use enlace_runner::{Clock, ManualClock, Runner, RunnerConfig, SystemClock};
use enlace_store::{RunRow, RunStatus, Store};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

/// One request the target received.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Value,
    /// When it arrived.
    pub at: Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
    }
}

/// A scripted answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub delay: Duration,
}

impl Answer {
    pub fn status(status: u16, body: &str) -> Self {
        Answer { status, headers: vec![], body: body.to_string(), delay: Duration::ZERO }
    }
    pub fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.to_string(), v.to_string()));
        self
    }
    pub fn after(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }
}

#[derive(Default)]
struct TargetState {
    received: Vec<Received>,
    /// Answers per path, used in order; when empty, 200 `{"ok":true}`.
    script: Vec<(String, VecDeque<Answer>)>,
}

/// An HTTP target on 127.0.0.1:0.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    state: Arc<Mutex<TargetState>>,
}

impl Target {
    pub async fn start() -> Target {
        let state = Arc::new(Mutex::new(TargetState::default()));
        let app = Router::new().fallback(handle).with_state(state.clone());
        let addr = serve_local(app).await;
        Target { addr, state }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Answers the next requests to `path` with these, in order.
    pub fn script(&self, path: &str, answers: Vec<Answer>) {
        self.state.lock().unwrap().script.push((path.to_string(), answers.into()));
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    pub fn received_on(&self, path: &str) -> Vec<Received> {
        self.received().into_iter().filter(|r| r.path == path).collect()
    }

    /// How many requests arrived on `path` (without copying them).
    pub fn count_on(&self, path: &str) -> usize {
        self.state.lock().unwrap().received.iter().filter(|r| r.path == path).count()
    }

    /// When each request on `path` arrived, in order.
    pub fn arrivals_on(&self, path: &str) -> Vec<Instant> {
        self.state.lock().unwrap().received.iter().filter(|r| r.path == path).map(|r| r.at).collect()
    }

    pub async fn wait_for(&self, path: &str, n: usize) -> Vec<Received> {
        for _ in 0..500 {
            let got = self.received_on(path);
            if got.len() >= n {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the target did not receive {n} request(s) on {path}; it got {:?}", self.received());
    }
}

async fn handle(State(state): State<Arc<Mutex<TargetState>>>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let body_v = serde_json::from_slice(&body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    let path = uri.path().to_string();
    let answer = {
        let mut s = state.lock().unwrap();
        s.received.push(Received { method: method.to_string(), path: path.clone(), headers, body: body_v, at: Instant::now() });
        s.script.iter_mut().find(|(p, q)| *p == path && !q.is_empty()).and_then(|(_, q)| q.pop_front())
    };
    let Some(a) = answer else {
        return (StatusCode::OK, [("content-type", "application/json")], r#"{"ok":true}"#).into_response();
    };
    if !a.delay.is_zero() {
        tokio::time::sleep(a.delay).await;
    }
    let mut resp = (StatusCode::from_u16(a.status).unwrap(), a.body).into_response();
    resp.headers_mut().insert("content-type", "application/json".parse().unwrap());
    for (k, v) in a.headers {
        resp.headers_mut().insert(axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
    }
    resp
}

/// A plain HTTP client for tests (rustls needs its crypto provider installed once).
/// Serves `app` on a fresh port of 127.0.0.1 for the rest of the test binary; its address.
pub async fn serve_local(app: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// A port of 127.0.0.1 free right now (for servers the tests start as other processes).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn client() -> reqwest::Client {
    enlace_kit::transport::install_crypto_provider();
    reqwest::Client::new()
}

pub fn transport() -> Arc<ReqwestTransport> {
    Arc::new(ReqwestTransport::new(TransportConfig { allow_private_networks: true, ..TransportConfig::default() }).unwrap())
}

/// Which store a test runs on (the runner tests run on both).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

tokio::task_local! {
    pub static BACKEND: Backend;
}

/// A store for a test: SQLite in a temporary directory, or (inside `BACKEND.scope(Postgres)`)
/// a fresh PostgreSQL database.
pub async fn test_store() -> Store {
    match BACKEND.try_with(|b| *b).unwrap_or(Backend::Sqlite) {
        Backend::Sqlite => Store::temporary().await.unwrap(),
        Backend::Postgres => {
            let url = enlace_store::testing::postgres_database().await.unwrap();
            let dir = std::env::temp_dir().join(format!("enlace-e2e-pg-{}", uuid::Uuid::now_v7()));
            enlace_store::Store::open(&enlace_store::StoreConfig {
                database_url: Some(url),
                data_dir: dir,
                secret_key: Some(format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())),
                synchronous: enlace_store::Synchronous::Full,
            })
            .await
            .unwrap()
        }
    }
}

/// A runner on a temporary store with a manual clock; nothing runs in the background.
pub async fn manual_runner(store: Option<Store>) -> (Runner, ManualClock, Store) {
    let store = match store {
        Some(s) => s,
        None => test_store().await,
    };
    let clock = ManualClock::new(1_790_000_000_000);
    let runner = Runner::new(
        store.clone(),
        enlace_connectors::registry(),
        RunnerConfig::default(),
        transport(),
        Arc::new(clock.clone()) as Arc<dyn Clock>,
    );
    runner.load(false).await.unwrap();
    (runner, clock, store)
}

/// Loads a recipe from YAML text and saves it.
pub async fn install(runner: &Runner, yaml: &str) -> enlace_recipe::Recipe {
    let recipe =
        enlace_recipe::load(yaml, Some("test.yaml"), runner.registry()).unwrap_or_else(|d| panic!("recipe does not validate:\n{d}"));
    runner.save_recipe(&recipe, "api").await.unwrap();
    recipe
}

/// Starts a run of an installed recipe with `{"body": body}` as its event (no HTTP).
pub async fn start_run(runner: &enlace_runner::Runner, recipe: &str, body: Value) -> String {
    let cur = runner.catalog().current(recipe).unwrap();
    let (a, _) = runner
        .accept(enlace_runner::Incoming {
            recipe_id: recipe.into(),
            recipe_version: cur.row.version,
            source: "manual",
            payload: serde_json::json!({"body": body}),
            dedupe_key: None,
            wait: false,
        })
        .await
        .unwrap();
    a.run_id
}

/// Waits until the run is no longer `running` (it finished or parked).
pub async fn settled(store: &Store, run_id: &str) -> RunRow {
    for _ in 0..1000 {
        let r = store.get_run(run_id).await.unwrap().unwrap();
        if r.status != RunStatus::Running {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("run {run_id} is still running");
}

/// Waits until the run has this status.
pub async fn status(store: &Store, run_id: &str, want: RunStatus) -> RunRow {
    let mut last = None;
    for _ in 0..1000 {
        let r = store.get_run(run_id).await.unwrap().unwrap();
        if r.status == want {
            return r;
        }
        last = Some(r);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("run {run_id} never reached {want}: {last:?}");
}

pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The real application on 127.0.0.1:0, with a real runner in the background.
pub struct TestServer {
    pub base: String,
    pub runner: Runner,
    pub store: Store,
    pub token: String,
    pub http: reqwest::Client,
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::start_with(enlace_connectors::registry()).await
    }

    /// The same with another registry (connectors pointed at local mocks of their vendors).
    pub async fn start_with(registry: enlace_core::Registry) -> TestServer {
        TestServer::start_configured(registry, enlace_web::WebConfig::default()).await
    }

    /// The same with the web layer's own settings (a fixed public address).
    pub async fn start_configured(registry: enlace_core::Registry, web: enlace_web::WebConfig) -> TestServer {
        // SQLite, or a fresh PostgreSQL database inside `BACKEND.scope(Postgres)`.
        let store = test_store().await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Its own address is its public address, as `serve` does by default.
        let config = RunnerConfig { public_url: Some(format!("http://{addr}")), ..RunnerConfig::default() };
        let runner = Runner::new(store.clone(), registry, config, transport(), Arc::new(SystemClock));
        runner.load(false).await.unwrap();
        runner.start();
        let app = enlace_web::app(runner.clone(), web);
        tokio::spawn(async move { enlace_web::serve(listener, app, std::future::pending()).await.unwrap() });
        let (_, token) = store.create_token("test", 0).await.unwrap();
        TestServer { base: format!("http://{addr}"), runner, store, token, http: client() }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn api(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, self.url(path)).bearer_auth(&self.token)
    }
}

/// An error body with its request id replaced, for snapshots.
pub fn redact(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut()
        && o.contains_key("request_id")
    {
        o.insert("request_id".into(), Value::String("[request_id]".into()));
    }
    v
}

/// A fresh directory under the system's temporary directory.
pub fn temp_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("enlace-e2e-{name}-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The `enlace` binary built for these tests.
pub fn bin() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_enlace"))
}

/// Runs the `enlace` binary on a data directory (SQLite) with `stdin` as its input, the SSRF
/// guard lifted or not; returns whether it succeeded, its stdout and its stderr.
pub fn cli(data_dir: &std::path::Path, args: &[&str], stdin: &str, allow_private: bool) -> (bool, String, String) {
    let mut cmd = bin();
    cmd.env("ENLACE_DATA_DIR", data_dir)
        .env_remove("ENLACE_DATABASE_URL")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    if allow_private {
        cmd.env("ENLACE_ALLOW_PRIVATE_NETWORKS", "true");
    } else {
        cmd.env_remove("ENLACE_ALLOW_PRIVATE_NETWORKS");
    }
    let mut child = cmd.spawn().unwrap();
    // A command that reads nothing may exit before its input is written: that is fine.
    let _ = std::io::Write::write_all(&mut child.stdin.take().unwrap(), stdin.as_bytes());
    let out = child.wait_with_output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Runs each test on both stores: `<test>::sqlite` and `<test>::postgres` (a fresh
/// PostgreSQL database per test).
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use crate::support::{BACKEND, Backend};
            #[tokio::test]
            async fn sqlite() {
                BACKEND.scope(Backend::Sqlite, super::$name()).await
            }
            #[tokio::test]
            async fn postgres() {
                BACKEND.scope(Backend::Postgres, super::$name()).await
            }
        }
    )*};
}
