//! The transports: [`ReqwestTransport`] sends for real behind the SSRF guard, the size cap
//! and the timeout; [`RecordingTransport`] records what a dry run would send.

use std::error::Error as StdError;
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use reqwest::{Method, Url};

use enlace_core::BoxFuture;
use enlace_core::http::{HttpRequest, HttpResponse, HttpTransport, TransportError};

use crate::ssrf::{self, DnsFailure, GuardedResolver, RedirectRefused, RedirectStopped, Refused};

/// How the real transport behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportConfig {
    /// Lift the SSRF guard: allow loopback, private and link-local destinations. Tests and
    /// local demos set it (`ENLACE_ALLOW_PRIVATE_NETWORKS=true`); production should not.
    pub allow_private_networks: bool,
    /// The timeout of a request that does not name its own (30 s).
    pub default_timeout: Duration,
    /// How long establishing a connection (DNS, TCP, TLS) may take (10 s).
    pub connect_timeout: Duration,
    /// The largest response body read; a larger one is [`TransportError::TooLarge`] (10 MiB).
    pub max_response_bytes: usize,
    pub user_agent: String,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            allow_private_networks: false,
            default_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            max_response_bytes: 10 * 1024 * 1024,
            user_agent: concat!("enlace/", env!("CARGO_PKG_VERSION")).to_string(),
        }
    }
}

impl TransportConfig {
    /// The defaults, with `allow_private_networks` read from `ENLACE_ALLOW_PRIVATE_NETWORKS`
    /// (`true` or `1`; anything else keeps the guard on).
    pub fn from_env() -> Self {
        let value = std::env::var(ssrf::ALLOW_PRIVATE_ENV).ok();
        TransportConfig { allow_private_networks: allow_private_from(value.as_deref()), ..TransportConfig::default() }
    }
}

/// How `ENLACE_ALLOW_PRIVATE_NETWORKS` is read.
pub(crate) fn allow_private_from(value: Option<&str>) -> bool {
    match value.map(str::trim) {
        Some(v) if v.eq_ignore_ascii_case("true") || v == "1" => true,
        Some(v) if !v.is_empty() && !v.eq_ignore_ascii_case("false") && v != "0" => {
            tracing::warn!(value = v, "{} is neither `true`/`1` nor `false`/`0`; the SSRF guard stays on", ssrf::ALLOW_PRIVATE_ENV);
            false
        }
        _ => false,
    }
}

/// The HTTP client could not be built.
#[derive(Debug, thiserror::Error)]
#[error("the HTTP client could not be built: {0}")]
pub struct BuildError(String);

/// The real transport: one pooled reqwest client, built once and shared (cloning is cheap).
#[derive(Clone, Debug)]
pub struct ReqwestTransport {
    client: reqwest::Client,
    config: Arc<TransportConfig>,
}

static CRYPTO_PROVIDER: Once = Once::new();

/// Installs rustls' ring provider as the process default, once. Another provider installed
/// first is kept.
pub fn install_crypto_provider() {
    CRYPTO_PROVIDER.call_once(|| {
        let _already_installed = rustls::crypto::ring::default_provider().install_default();
    });
}

impl ReqwestTransport {
    pub fn new(config: TransportConfig) -> Result<Self, BuildError> {
        install_crypto_provider();
        let client = reqwest::Client::builder()
            .user_agent(config.user_agent.clone())
            // Proxies from the environment would bypass the guard (the proxy resolves the
            // name, not us) and surprise operators: none.
            .no_proxy()
            .dns_resolver(GuardedResolver { allow_private: config.allow_private_networks })
            .redirect(ssrf::redirect_policy(config.allow_private_networks))
            .connect_timeout(config.connect_timeout)
            .timeout(config.default_timeout)
            // Keep-alive pooling: the same vendors are called over and over.
            .pool_max_idle_per_host(256)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| BuildError(error_chain(&e)))?;
        Ok(ReqwestTransport { client, config: Arc::new(config) })
    }

    /// [`ReqwestTransport::new`] with [`TransportConfig::from_env`].
    pub fn from_env() -> Result<Self, BuildError> {
        Self::new(TransportConfig::from_env())
    }

    pub fn config(&self) -> &TransportConfig {
        &self.config
    }

    /// Sends one request and reads the response body up to the cap.
    pub async fn execute(&self, req: HttpRequest) -> Result<HttpResponse, TransportError> {
        let url = Url::parse(&req.url).map_err(|e| TransportError::InvalidUrl(format!("not a valid URL: {e}")))?;
        ssrf::check_url(&url, self.config.allow_private_networks)?;
        let timeout = req.timeout.unwrap_or(self.config.default_timeout);
        let cap = self.config.max_response_bytes;
        let host = url.host_str().unwrap_or_default().to_string();
        let method = req.method.clone();
        let started = Instant::now();

        let mut builder = self.client.request(req.method, url).headers(req.headers).timeout(timeout);
        if !req.body.is_empty() || !matches!(method, Method::GET | Method::HEAD | Method::OPTIONS | Method::DELETE) {
            builder = builder.body(req.body);
        }
        let result = async {
            let mut resp = builder.send().await.map_err(|e| map_reqwest_error(e, timeout))?;
            if let Some(len) = resp.content_length()
                && len > cap as u64
            {
                return Err(TransportError::TooLarge { limit: cap });
            }
            let status = resp.status();
            let headers = std::mem::take(resp.headers_mut());
            let body = read_capped(&mut resp, cap, timeout).await?;
            Ok(HttpResponse { status, headers, body })
        }
        .await;

        let elapsed_ms = started.elapsed().as_millis() as u64;
        match &result {
            Ok(resp) => {
                tracing::debug!(%method, host, status = resp.status.as_u16(), elapsed_ms, "http exchange")
            }
            Err(e) => {
                tracing::debug!(%method, host, error = %e, elapsed_ms, "http exchange failed")
            }
        }
        result
    }
}

async fn read_capped(resp: &mut reqwest::Response, cap: usize, timeout: Duration) -> Result<Bytes, TransportError> {
    // Most bodies come in one chunk: keep it without copying.
    let mut first: Option<Bytes> = None;
    let mut buf: Option<BytesMut> = None;
    let mut total = 0usize;
    while let Some(chunk) = resp.chunk().await.map_err(|e| map_reqwest_error(e, timeout))? {
        total = total.saturating_add(chunk.len());
        if total > cap {
            return Err(TransportError::TooLarge { limit: cap });
        }
        match (&mut first, &mut buf) {
            (None, None) => first = Some(chunk),
            (Some(f), None) => {
                let mut b = BytesMut::with_capacity(f.len() + chunk.len());
                b.extend_from_slice(f);
                b.extend_from_slice(&chunk);
                first = None;
                buf = Some(b);
            }
            (_, Some(b)) => b.extend_from_slice(&chunk),
        }
    }
    Ok(match (first, buf) {
        (_, Some(b)) => b.freeze(),
        (Some(f), None) => f,
        (None, None) => Bytes::new(),
    })
}

impl HttpTransport for ReqwestTransport {
    fn send(&self, request: HttpRequest) -> BoxFuture<'_, Result<HttpResponse, TransportError>> {
        Box::pin(self.execute(request))
    }

    fn allows_private_networks(&self) -> bool {
        self.config.allow_private_networks
    }
}

/// The first error of type `T` in an error's source chain.
fn find_in_chain<'a, T: StdError + 'static>(err: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        current = e.source();
    }
    None
}

/// An error and its causes on one line, without repeats.
fn error_chain(err: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = Some(err);
    while let Some(e) = current {
        let text = e.to_string();
        if !parts.iter().any(|p| p == &text) {
            parts.push(text);
        }
        current = e.source();
    }
    parts.join(": ")
}

/// What a reqwest failure means for the caller. The URL is left out of every message: its
/// query string may hold an API key.
fn map_reqwest_error(err: reqwest::Error, timeout: Duration) -> TransportError {
    let err = err.without_url();
    classify_failure(&err, err.is_timeout(), err.is_connect(), err.is_builder(), timeout)
}

fn classify_failure(
    err: &(dyn StdError + 'static),
    is_timeout: bool,
    is_connect: bool,
    is_builder: bool,
    timeout: Duration,
) -> TransportError {
    if let Some(refused) = find_in_chain::<Refused>(err) {
        return TransportError::Forbidden(refused.to_string());
    }
    if let Some(refused) = find_in_chain::<RedirectRefused>(err) {
        return TransportError::Forbidden(refused.to_string());
    }
    if let Some(stopped) = find_in_chain::<RedirectStopped>(err) {
        return TransportError::Other(stopped.to_string());
    }
    if is_timeout {
        // Only a failure while connecting proves that nothing left.
        return TransportError::Timeout { after: timeout, sent: !is_connect };
    }
    if let Some(dns) = find_in_chain::<DnsFailure>(err) {
        return TransportError::Connect(dns.to_string());
    }
    if is_connect {
        return TransportError::Connect(error_chain(err));
    }
    if is_builder {
        return TransportError::InvalidUrl(error_chain(err));
    }
    TransportError::Other(error_chain(err))
}

/// The dry run's transport: records every request, sends nothing, answers
/// [`TransportError::DryRun`].
#[derive(Debug, Default)]
pub struct RecordingTransport {
    requests: Mutex<Vec<HttpRequest>>,
}

impl RecordingTransport {
    pub fn new() -> Self {
        Self::default()
    }

    /// The requests recorded so far, emptying the record.
    pub fn take(&self) -> Vec<HttpRequest> {
        std::mem::take(&mut *self.requests.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// How many requests were recorded and not yet taken.
    pub fn len(&self) -> usize {
        self.requests.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl HttpTransport for RecordingTransport {
    fn send(&self, request: HttpRequest) -> BoxFuture<'_, Result<HttpResponse, TransportError>> {
        self.requests.lock().unwrap_or_else(|p| p.into_inner()).push(request);
        Box::pin(async { Err(TransportError::DryRun) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::Router;
    use axum::extract::{ConnectInfo, State};
    use axum::http::{HeaderMap, Uri};
    use axum::response::{IntoResponse, Redirect};
    use axum::routing::{any, get};
    use enlace_core::http::{HeaderValue, StatusCode};
    use serde_json::{Value, json};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[derive(Clone, Default)]
    struct Seen {
        hits: Arc<AtomicUsize>,
        peers: Arc<Mutex<Vec<SocketAddr>>>,
    }

    async fn echo(
        State(seen): State<Seen>,
        ConnectInfo(peer): ConnectInfo<SocketAddr>,
        method: axum::http::Method,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> axum::Json<Value> {
        seen.hits.fetch_add(1, Ordering::SeqCst);
        seen.peers.lock().unwrap().push(peer);
        let headers: serde_json::Map<String, Value> =
            headers.iter().map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or_default()))).collect();
        axum::Json(json!({"method": method.as_str(), "uri": uri.to_string(), "headers": headers, "body": String::from_utf8_lossy(&body)}))
    }

    async fn serve() -> (SocketAddr, Seen) {
        let seen = Seen::default();
        let app = Router::new()
            .route("/echo", any(echo))
            .route(
                "/slow",
                get(|State(seen): State<Seen>| async move {
                    seen.hits.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    "late"
                }),
            )
            .route("/big", get(|| async { "x".repeat(2048) }))
            .route(
                "/loop",
                get(|State(seen): State<Seen>| async move {
                    seen.hits.fetch_add(1, Ordering::SeqCst);
                    Redirect::temporary("/loop")
                }),
            )
            .route("/hop", get(|| async { Redirect::temporary("/echo") }))
            .route(
                "/teapot",
                get(|| async { (StatusCode::IM_A_TEAPOT, [("x-ratelimit-remaining", "0")], "short and stout").into_response() }),
            )
            .with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await.unwrap() });
        (addr, seen)
    }

    fn transport(allow_private_networks: bool) -> ReqwestTransport {
        ReqwestTransport::new(TransportConfig { allow_private_networks, max_response_bytes: 1024, ..TransportConfig::default() }).unwrap()
    }

    fn get_req(url: String) -> HttpRequest {
        HttpRequest::new(Method::GET, url)
    }

    #[tokio::test]
    async fn refuses_private_destinations_by_default_and_sends_nothing() {
        let (addr, seen) = serve().await;
        let guarded = transport(false);
        let port = addr.port();
        for url in [
            format!("http://127.0.0.1:{port}/echo"),
            format!("http://localhost:{port}/echo"),
            format!("http://[::1]:{port}/echo"),
            "http://10.0.0.1/".to_string(),
            "http://169.254.169.254/latest/meta-data/".to_string(),
            "http://metadata.google.internal/computeMetadata/v1/".to_string(),
        ] {
            match guarded.execute(get_req(url.clone())).await {
                Err(TransportError::Forbidden(msg)) => assert!(msg.contains("ENLACE_ALLOW_PRIVATE_NETWORKS=true"), "{url}: {msg}"),
                other => panic!("{url}: expected a refusal, got {other:?}"),
            }
        }
        let Err(TransportError::Forbidden(msg)) = guarded.execute(get_req(format!("http://localhost:{port}/echo"))).await else { panic!() };
        assert!(msg.contains("`localhost`: it resolves to 127.0.0.1"), "the refusal names the address: {msg}");
        assert_eq!(seen.hits.load(Ordering::SeqCst), 0, "nothing reached the server");
    }

    #[tokio::test]
    async fn allows_loopback_when_private_networks_are_allowed() {
        let (addr, seen) = serve().await;
        let open = transport(true);
        for host in [addr.to_string(), format!("localhost:{}", addr.port())] {
            let mut req = HttpRequest::new(Method::POST, format!("http://{host}/echo?a=1"));
            req.headers.insert("x-test", HeaderValue::from_static("yes"));
            req.body = Bytes::from_static(b"hello");
            let resp = open.execute(req).await.expect("sent");
            assert_eq!(resp.status, StatusCode::OK);
            let body: Value = serde_json::from_slice(&resp.body).unwrap();
            assert_eq!(body["method"], "POST");
            assert_eq!(body["uri"], "/echo?a=1");
            assert_eq!(body["headers"]["x-test"], "yes");
            assert_eq!(body["headers"]["user-agent"], format!("enlace/{}", env!("CARGO_PKG_VERSION")));
            assert_eq!(body["body"], "hello");
        }
        assert_eq!(seen.hits.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn connections_are_kept_alive_and_reused() {
        let (addr, seen) = serve().await;
        let open = transport(true);
        for _ in 0..5 {
            open.execute(get_req(format!("http://{addr}/echo"))).await.expect("sent");
        }
        let peers: HashSet<SocketAddr> = seen.peers.lock().unwrap().iter().copied().collect();
        assert_eq!(peers.len(), 1, "one pooled connection for five sequential requests: {peers:?}");
    }

    #[tokio::test]
    async fn non_success_statuses_are_responses_not_errors() {
        let (addr, _) = serve().await;
        let resp = transport(true).execute(get_req(format!("http://{addr}/teapot"))).await.expect("a response");
        assert_eq!(resp.status.as_u16(), 418);
        assert_eq!(resp.headers["x-ratelimit-remaining"], "0");
        assert_eq!(&resp.body[..], b"short and stout");
    }

    #[tokio::test]
    async fn responses_over_the_cap_are_refused() {
        let (addr, _) = serve().await;
        let open = transport(true);
        assert_eq!(open.execute(get_req(format!("http://{addr}/big"))).await.unwrap_err(), TransportError::TooLarge { limit: 1024 });
        // A HEAD answer announces the size of a body it does not carry.
        let head = open.execute(HttpRequest::new(Method::HEAD, format!("http://{addr}/big"))).await.expect("no body, nothing too large");
        assert_eq!(head.headers["content-length"], "2048");
        assert!(head.body.is_empty());

        // Without a Content-Length: the cap applies while streaming.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let raw = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = sock.read(&mut buf).await;
            let _ = sock.write_all(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n").await;
            for _ in 0..8 {
                if sock.write_all(&[b'y'; 512]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        assert_eq!(open.execute(get_req(format!("http://{raw}/"))).await.unwrap_err(), TransportError::TooLarge { limit: 1024 });
    }

    #[tokio::test]
    async fn a_timeout_after_sending_says_sent() {
        let (addr, seen) = serve().await;
        let mut req = get_req(format!("http://{addr}/slow"));
        req.timeout = Some(Duration::from_millis(300));
        let started = Instant::now();
        let err = transport(true).execute(req).await.unwrap_err();
        assert_eq!(err, TransportError::Timeout { after: Duration::from_millis(300), sent: true });
        assert!(started.elapsed() < Duration::from_secs(2), "the timeout struck early: {:?}", started.elapsed());
        assert_eq!(seen.hits.load(Ordering::SeqCst), 1, "the request did arrive");
    }

    #[tokio::test]
    async fn connection_refused_is_connect() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        match transport(true).execute(get_req(format!("http://{addr}/"))).await {
            Err(TransportError::Connect(msg)) => {
                println!("connect error: {msg}");
                assert!(msg.to_lowercase().contains("connection refused"), "{msg}");
                assert!(!msg.contains("http://"), "no URL in the message (its query may hold a key): {msg}");
            }
            other => panic!("expected Connect, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn redirects_are_followed_up_to_ten_hops() {
        let (addr, seen) = serve().await;
        let open = transport(true);
        let resp = open.execute(get_req(format!("http://{addr}/hop"))).await.expect("followed");
        let body: Value = serde_json::from_slice(&resp.body).unwrap();
        assert_eq!(body["uri"], "/echo");

        seen.hits.store(0, Ordering::SeqCst);
        match open.execute(get_req(format!("http://{addr}/loop"))).await {
            Err(TransportError::Other(msg)) => {
                assert!(msg.contains("more than 10 redirects"), "{msg}")
            }
            other => panic!("expected a redirect loop error, got {other:?}"),
        }
        assert_eq!(seen.hits.load(Ordering::SeqCst), 11, "the original request and ten redirects");
    }

    #[tokio::test]
    async fn bad_urls_are_invalid() {
        let t = transport(false);
        for url in ["not a url", "ftp://example.com/", "/relative"] {
            assert!(matches!(t.execute(get_req(url.into())).await, Err(TransportError::InvalidUrl(_))), "{url}");
        }
    }

    #[tokio::test]
    async fn the_recorder_records_and_sends_nothing() {
        let rec = RecordingTransport::new();
        let mut req = HttpRequest::new(Method::POST, "http://127.0.0.1:9/never");
        req.body = Bytes::from_static(b"{}");
        assert_eq!(rec.send(req).await.unwrap_err(), TransportError::DryRun);
        assert_eq!(rec.send(get_req("https://api.example.com/".into())).await.unwrap_err(), TransportError::DryRun);
        assert_eq!(rec.len(), 2);
        let taken = rec.take();
        assert_eq!(taken.iter().map(|r| r.url.as_str()).collect::<Vec<_>>(), ["http://127.0.0.1:9/never", "https://api.example.com/"]);
        assert_eq!(&taken[0].body[..], b"{}");
        assert!(rec.is_empty());
    }

    #[derive(Debug)]
    struct Wrapper(Box<dyn StdError + Send + Sync>);
    impl std::fmt::Display for Wrapper {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("client error (Connect)")
        }
    }
    impl StdError for Wrapper {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&*self.0)
        }
    }

    #[test]
    fn a_refusal_is_told_apart_from_a_dns_failure() {
        let t = Duration::from_secs(1);
        let refused = Wrapper(Box::new(Refused {
            host: "evil.example".into(),
            addr: Some("10.0.0.1".parse().unwrap()),
            reason: "private network address",
        }));
        assert!(matches!(classify_failure(&refused, false, true, false, t), TransportError::Forbidden(m) if m.contains("10.0.0.1")));
        let dns = Wrapper(Box::new(DnsFailure { host: "nope.example".into(), cause: "no such host".into() }));
        assert_eq!(
            classify_failure(&dns, false, true, false, t),
            TransportError::Connect("could not resolve `nope.example`: no such host".into())
        );
        let io = Wrapper(Box::new(std::io::Error::from(std::io::ErrorKind::TimedOut)));
        assert_eq!(
            classify_failure(&io, true, true, false, t),
            TransportError::Timeout { after: t, sent: false },
            "a connect timeout: nothing sent"
        );
        assert_eq!(classify_failure(&io, true, false, false, t), TransportError::Timeout { after: t, sent: true });
        let other = Wrapper(Box::new(std::io::Error::other("connection reset")));
        assert_eq!(
            classify_failure(&other, false, false, false, t),
            TransportError::Other("client error (Connect): connection reset".into())
        );
    }

    #[test]
    fn the_env_switch() {
        for (value, want) in [
            (Some("true"), true),
            (Some("TRUE"), true),
            (Some(" 1 "), true),
            (Some("false"), false),
            (Some("0"), false),
            (Some("yes"), false),
            (Some(""), false),
            (None, false),
        ] {
            assert_eq!(allow_private_from(value), want, "{value:?}");
        }
        let d = TransportConfig::default();
        assert!(!d.allow_private_networks);
        assert_eq!(
            (d.default_timeout, d.connect_timeout, d.max_response_bytes),
            (Duration::from_secs(30), Duration::from_secs(10), 10 * 1024 * 1024)
        );
    }
}
