//! The connector test kit (feature `testing`, for dev-dependencies only): what every
//! connector's tests used to write for themselves.
//!
//! - [`transport`] and [`ctx`]: the real transport with loopback allowed, and an
//!   [`ActionContext`] around it (run `run_1`, step `step`, attempt 1).
//! - [`FakeVendor`]: a local HTTP server on `127.0.0.1:0` that answers like the vendor from
//!   [`Reply`]s (written inline or read from a recorded fixture file), one queue per
//!   `METHOD /path`, the last reply repeating, and records every request it saw.
//! - [`Canned`]: a transport that answers every request with one reply, without a network:
//!   the conformance test uses it to show each connector classifies 401, 429 and 5xx.
//! - [`fixture`]: a connector's recorded fixture file, read from its folder.
//! - [`graph`]: Graph API requests checked against Meta's own description of its nodes.

pub mod graph;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use enlace_core::http::{HeaderMap, HeaderName, HeaderValue, HttpRequest, HttpResponse, HttpTransport, StatusCode, TransportError};
use enlace_core::{ActionContext, BoxFuture, Credentials};
use serde_json::Value;

use crate::{ReqwestTransport, TransportConfig};

/// The real transport (SSRF guard, caps, timeouts) with loopback allowed, for tests.
pub fn transport() -> Arc<dyn HttpTransport> {
    Arc::new(ReqwestTransport::new(TransportConfig { allow_private_networks: true, ..TransportConfig::default() }).expect("transport"))
}

/// An action context for a test call: [`transport`], these credentials, run `run_1`,
/// step `step`, attempt 1, idempotency key `run_1:step`, a 10 s timeout, no extensions.
pub fn ctx(credentials: Credentials) -> ActionContext {
    ctx_with(transport(), credentials)
}

/// [`ctx`] with another transport (a [`Canned`] one, a recorder).
pub fn ctx_with(http: Arc<dyn HttpTransport>, credentials: Credentials) -> ActionContext {
    ActionContext {
        run_id: "run_1".into(),
        step_key: "step".into(),
        attempt: 1,
        idempotency_key: "run_1:step".into(),
        credentials,
        http,
        timeout: Duration::from_secs(10),
        extensions: Default::default(),
    }
}

/// A connector's recorded fixture (`connectors/<app>/fixtures/<name>`), as JSON. `dir` is
/// the connector's folder: `env!("CARGO_MANIFEST_DIR")` in its tests.
pub fn fixture(dir: &str, name: &str) -> Value {
    let path = Path::new(dir).join("fixtures").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read the fixture {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("the fixture {} is not JSON: {e}", path.display()))
}

/// One answer of a fake vendor.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Reply {
    /// A JSON answer (`content-type: application/json`).
    pub fn json(status: u16, body: Value) -> Reply {
        Reply { status, headers: vec![("content-type".into(), "application/json".into())], body: Bytes::from(body.to_string()) }
    }

    /// A text answer with this content type.
    pub fn text(status: u16, content_type: &str, body: &str) -> Reply {
        Reply { status, headers: vec![("content-type".into(), content_type.into())], body: Bytes::from(body.to_string()) }
    }

    /// An empty answer (204, or 202...).
    pub fn empty(status: u16) -> Reply {
        Reply { status, headers: vec![], body: Bytes::new() }
    }

    /// A recorded answer: a fixture file holding `{"status": 200, "headers": {...}, "body": ...}`
    /// (a JSON body is sent as JSON, a string body as it is).
    pub fn recorded(dir: &str, name: &str) -> Reply {
        let v = fixture(dir, name);
        let status = v.get("status").and_then(Value::as_u64).unwrap_or(200) as u16;
        let mut headers: Vec<(String, String)> = v
            .get("headers")
            .and_then(Value::as_object)
            .map(|h| h.iter().map(|(k, v)| (k.to_lowercase(), v.as_str().unwrap_or_default().to_string())).collect())
            .unwrap_or_default();
        let body = match v.get("body") {
            None | Some(Value::Null) => Bytes::new(),
            Some(Value::String(s)) => Bytes::from(s.clone()),
            Some(other) => {
                if !headers.iter().any(|(k, _)| k == "content-type") {
                    headers.push(("content-type".into(), "application/json".into()));
                }
                Bytes::from(other.to_string())
            }
        };
        Reply { status, headers, body }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_lowercase(), value.into()));
        self
    }

    fn response(&self) -> HttpResponse {
        let mut headers = HeaderMap::new();
        for (k, v) in &self.headers {
            if let (Ok(k), Ok(v)) = (HeaderName::try_from(k.as_str()), HeaderValue::try_from(v.as_str())) {
                headers.append(k, v);
            }
        }
        HttpResponse { status: StatusCode::from_u16(self.status).unwrap_or(StatusCode::OK), headers, body: self.body.clone() }
    }
}

/// A request a fake vendor or a canned transport saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// The path, without the query.
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Seen {
    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The body as a form (`a=1&b=2`).
    pub fn form(&self) -> BTreeMap<String, String> {
        form_urlencoded::parse(&self.body).into_owned().collect()
    }

    /// A header's value, if present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

type Routes = Arc<Mutex<BTreeMap<(String, String), VecDeque<Reply>>>>;

/// A local server answering like a vendor. See the module docs.
#[derive(Clone)]
pub struct FakeVendor {
    addr: SocketAddr,
    routes: Routes,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl FakeVendor {
    /// Starts a server with no routes: every request gets a 404 until [`FakeVendor::on`].
    pub async fn start() -> FakeVendor {
        let routes: Routes = Arc::default();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let (r, s) = (routes.clone(), seen.clone());
        let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
            let (routes, seen) = (r.clone(), s.clone());
            async move { answer(req, routes, seen).await }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        tokio::spawn(async move { axum::serve(listener, app).await.expect("fake vendor") });
        FakeVendor { addr, routes, seen }
    }

    /// Queues replies for `METHOD /path` (the path without the query); they are given in
    /// order and the last one repeats.
    pub fn on(&self, method: &str, path: &str, replies: impl IntoIterator<Item = Reply>) -> &Self {
        let key = (method.to_uppercase(), path.to_string());
        self.routes.lock().unwrap().entry(key).or_default().extend(replies);
        self
    }

    /// `http://127.0.0.1:PORT` (no trailing slash): give it to the connector's `connector_at`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request seen so far, in order.
    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn answer(req: axum::extract::Request, routes: Routes, seen: Arc<Mutex<Vec<Seen>>>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 16 * 1024 * 1024).await.unwrap_or_default();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default();
    let method = parts.method.as_str().to_string();
    seen.lock().unwrap().push(Seen { method: method.clone(), path: path.clone(), query, headers: parts.headers.clone(), body });
    let reply = {
        let mut routes = routes.lock().unwrap();
        routes.get_mut(&(method.clone(), path.clone())).and_then(|q| if q.len() > 1 { q.pop_front() } else { q.front().cloned() })
    };
    match reply {
        Some(r) => {
            let resp = r.response();
            let mut out = (resp.status, resp.body).into_response();
            *out.headers_mut() = resp.headers;
            out
        }
        None => (StatusCode::NOT_FOUND, format!("the fake vendor has no reply for {method} {path}")).into_response(),
    }
}

/// A transport that answers every request with one reply and records what it was asked.
pub struct Canned {
    reply: Reply,
    seen: Mutex<Vec<HttpRequest>>,
}

impl Canned {
    pub fn new(reply: Reply) -> Arc<Canned> {
        Arc::new(Canned { reply, seen: Mutex::new(vec![]) })
    }

    /// The requests it was asked to send.
    pub fn requests(&self) -> Vec<HttpRequest> {
        self.seen.lock().unwrap().clone()
    }
}

impl HttpTransport for Canned {
    fn send(&self, request: HttpRequest) -> BoxFuture<'_, Result<HttpResponse, TransportError>> {
        self.seen.lock().unwrap().push(request);
        let resp = self.reply.response();
        Box::pin(async move { Ok(resp) })
    }

    fn allows_private_networks(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[tokio::test]
    async fn a_fake_vendor_answers_in_order_and_records() {
        let v = FakeVendor::start().await;
        v.on("GET", "/items", [Reply::json(200, json!({"page": 1})), Reply::json(429, json!({})).header("Retry-After", "3")]);
        let http = transport();
        let get = |q: &str| http.send(HttpRequest::new(enlace_core::http::Method::GET, format!("{}/items?{q}", v.url())));
        assert_eq!(get("a=1").await.unwrap().body, Bytes::from(r#"{"page":1}"#));
        let second = get("a=2").await.unwrap();
        assert_eq!((second.status.as_u16(), second.headers["retry-after"].to_str().unwrap()), (429, "3"));
        assert_eq!(get("a=3").await.unwrap().status.as_u16(), 429, "the last reply repeats");
        let seen = v.requests();
        assert_eq!(seen.len(), 3);
        assert_eq!((seen[1].path.as_str(), seen[1].query["a"].as_str()), ("/items", "2"));
        let other = http.send(HttpRequest::new(enlace_core::http::Method::POST, format!("{}/items", v.url()))).await.unwrap();
        assert_eq!(other.status.as_u16(), 404, "an unknown route is a 404 that names it");
    }
}
