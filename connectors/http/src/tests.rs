//! `http.request` against a real local server on 127.0.0.1:0, through the erased action the
//! runner calls (so input decoding is tested too).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request as AxumRequest, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{any, get};
use serde_json::{Value, json};

use enlace_core::http::HttpTransport;
use enlace_core::{ActionContext, ConnectorError, Credentials, ErrorClass, Secret};
use enlace_kit::{RecordingTransport, ReqwestTransport, TransportConfig};

use crate::connector;

#[derive(Clone, Default)]
struct Hits(Arc<AtomicUsize>);

async fn echo(State(hits): State<Hits>, req: AxumRequest) -> axum::Json<Value> {
    hits.0.fetch_add(1, Ordering::SeqCst);
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    let headers: serde_json::Map<String, Value> =
        parts.headers.iter().map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or_default()))).collect();
    axum::Json(json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    }))
}

async fn serve() -> (SocketAddr, Hits) {
    let hits = Hits::default();
    let app = Router::new()
        .route("/echo", any(echo))
        .route("/rate", any(|| async { (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "7")], "slow down").into_response() }))
        .route("/fail", any(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "database on fire").into_response() }))
        .route(
            "/unauthorized",
            any(|| async { (StatusCode::UNAUTHORIZED, axum::Json(json!({"message": "invalid api key"}))).into_response() }),
        )
        .route(
            "/bad",
            any(|| async { (StatusCode::BAD_REQUEST, axum::Json(json!({"error": {"message": "email is invalid"}}))).into_response() }),
        )
        .route(
            "/slow",
            any(|State(hits): State<Hits>| async move {
                hits.0.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(3)).await;
                "late"
            }),
        )
        .route("/text", get(|| async { ([("content-type", "text/plain")], "plain words").into_response() }))
        .route("/binary", get(|| async { ([("content-type", "application/octet-stream")], vec![0xffu8, 0xfe, 0x00]).into_response() }))
        .route(
            "/multi",
            get(|| async {
                let mut h = HeaderMap::new();
                h.append("x-tag", "a".parse().unwrap());
                h.append("x-tag", "b".parse().unwrap());
                (h, axum::Json(json!({"ok": true}))).into_response()
            }),
        )
        .with_state(hits.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, hits)
}

fn ctx_with(http: Arc<dyn HttpTransport>, credentials: Credentials) -> ActionContext {
    ActionContext {
        run_id: "run_1".into(),
        step_key: "post".into(),
        attempt: 1,
        idempotency_key: "run_1:post".into(),
        credentials,
        http,
        timeout: Duration::from_secs(60),
        extensions: Default::default(),
    }
}

fn loopback() -> Arc<dyn HttpTransport> {
    Arc::new(ReqwestTransport::new(TransportConfig { allow_private_networks: true, ..TransportConfig::default() }).unwrap())
}

fn ctx() -> ActionContext {
    ctx_with(loopback(), Credentials::None)
}

async fn call(ctx: &ActionContext, input: Value) -> Result<Value, ConnectorError> {
    let c = connector();
    let action = c.action("request").expect("http.request is registered");
    action.call(ctx, input).await
}

#[tokio::test]
async fn posts_json_with_headers_query_and_idempotency_key() {
    let (addr, hits) = serve().await;
    let out = call(
        &ctx(),
        json!({
            "url": format!("http://{addr}/echo"),
            "headers": {"X-Trace": "abc", "Accept": "application/json"},
            "query": {"page": 2, "q": "a b&c", "flag": true, "tag": ["x", "y"], "skip": null},
            "json": {"greeting": "Hi Ana!", "skus": ["A1", "B2"], "total": 12.5},
        }),
    )
    .await
    .expect("sent");
    assert_eq!(hits.0.load(Ordering::SeqCst), 1);
    assert_eq!(out["status"], 200);
    assert_eq!(out["headers"]["content-type"], "application/json");
    let seen = &out["body"];
    assert_eq!(seen["method"], "POST", "a body without a method is a POST");
    assert_eq!(seen["path"], "/echo");
    assert_eq!(seen["query"], "page=2&q=a+b%26c&flag=true&tag=x&tag=y");
    assert_eq!(seen["headers"]["x-trace"], "abc");
    assert_eq!(seen["headers"]["accept"], "application/json");
    assert_eq!(seen["headers"]["content-type"], "application/json");
    assert_eq!(seen["headers"]["idempotency-key"], "run_1:post");
    let sent: Value = serde_json::from_str(seen["body"].as_str().unwrap()).unwrap();
    assert_eq!(sent, json!({"greeting": "Hi Ana!", "skus": ["A1", "B2"], "total": 12.5}));
    assert!(out.get("body_encoding").is_none());
}

#[tokio::test]
async fn get_by_default_custom_or_no_idempotency_header() {
    let (addr, _) = serve().await;
    let out =
        call(&ctx(), json!({"url": format!("http://{addr}/echo?keep=1"), "query": {"more": "2"}, "idempotency_header": "X-Request-Key"}))
            .await
            .unwrap();
    assert_eq!(out["body"]["method"], "GET");
    assert_eq!(out["body"]["query"], "keep=1&more=2");
    assert_eq!(out["body"]["headers"]["x-request-key"], "run_1:post");
    assert!(out["body"]["headers"].get("idempotency-key").is_none());
    assert!(out["body"]["headers"].get("content-type").is_none(), "no body, no content type");

    let out = call(&ctx(), json!({"url": format!("http://{addr}/echo"), "method": "delete", "idempotency_header": ""})).await.unwrap();
    assert_eq!(out["body"]["method"], "DELETE");
    assert!(out["body"]["headers"].get("idempotency-key").is_none(), "an empty header name sends no key");
}

#[tokio::test]
async fn form_and_text_bodies() {
    let (addr, _) = serve().await;
    let url = format!("http://{addr}/echo");
    let out = call(
        &ctx(),
        json!({"url": url, "method": "PUT", "form": {"name": "Ana María", "n": 3, "ok": false, "pets": ["dog", "cat"], "none": null}}),
    )
    .await
    .unwrap();
    let seen = &out["body"];
    assert_eq!(seen["method"], "PUT");
    assert_eq!(seen["headers"]["content-type"], "application/x-www-form-urlencoded");
    assert_eq!(seen["body"], "name=Ana+Mar%C3%ADa&n=3&ok=false&pets=dog&pets=cat");

    let out = call(&ctx(), json!({"url": url, "body": "id,email\n1,ana@example.com\n", "content_type": "text/csv"})).await.unwrap();
    assert_eq!(out["body"]["method"], "POST");
    assert_eq!(out["body"]["headers"]["content-type"], "text/csv");
    assert_eq!(out["body"]["body"], "id,email\n1,ana@example.com\n");

    let out = call(&ctx(), json!({"url": url, "body": "hello"})).await.unwrap();
    assert_eq!(out["body"]["headers"]["content-type"], "text/plain; charset=utf-8");

    // A Content-Type header of the step's own wins over the default.
    let out = call(&ctx(), json!({"url": url, "json": [1], "headers": {"Content-Type": "application/vnd.api+json"}})).await.unwrap();
    assert_eq!(out["body"]["headers"]["content-type"], "application/vnd.api+json");
}

#[tokio::test]
async fn error_statuses_are_classified() {
    let (addr, _) = serve().await;
    let at = |path: &str| json!({"url": format!("http://{addr}{path}"), "method": "POST", "json": {}});

    let err = call(&ctx(), at("/rate")).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::RateLimited, "{err}");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));

    let err = call(&ctx(), at("/fail")).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Transient, "{err}");
    assert!(err.message().contains("database on fire"), "{err}");

    let err = call(&ctx(), at("/unauthorized")).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Auth, "{err}");
    assert!(err.message().contains("invalid api key"), "{err}");

    let err = call(&ctx(), at("/bad")).await.unwrap_err();
    assert_eq!(err, ConnectorError::Permanent { message: "HTTP 400 Bad Request: email is invalid".into(), status: Some(400) });
}

#[tokio::test]
async fn fail_on_status_false_returns_any_status() {
    let (addr, _) = serve().await;
    let out = call(&ctx(), json!({"url": format!("http://{addr}/bad"), "fail_on_status": false})).await.unwrap();
    assert_eq!(out["status"], 400);
    assert_eq!(out["body"], json!({"error": {"message": "email is invalid"}}));
    let out = call(&ctx(), json!({"url": format!("http://{addr}/rate"), "fail_on_status": false})).await.unwrap();
    assert_eq!(out["status"], 429);
    assert_eq!(out["headers"]["retry-after"], "7");
    assert_eq!(out["body"], "slow down");
}

#[tokio::test]
async fn response_shapes() {
    let (addr, _) = serve().await;
    let out = call(&ctx(), json!({"url": format!("http://{addr}/text")})).await.unwrap();
    assert_eq!(out["body"], "plain words");
    let out = call(&ctx(), json!({"url": format!("http://{addr}/binary")})).await.unwrap();
    assert_eq!(out["body"], "//4A");
    assert_eq!(out["body_encoding"], "base64");
    let out = call(&ctx(), json!({"url": format!("http://{addr}/multi")})).await.unwrap();
    assert_eq!(out["headers"]["x-tag"], "a, b");
    assert_eq!(out["body"], json!({"ok": true}));
    let out = call(&ctx(), json!({"url": format!("http://{addr}/echo"), "method": "HEAD"})).await.unwrap();
    assert_eq!(out["status"], 200);
    assert_eq!(out["body"], "");

    let err = call(&ctx(), json!({"url": format!("http://{addr}/text"), "max_response_bytes": 5})).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert!(err.message().contains("max_response_bytes (5)"), "{err}");
}

#[tokio::test]
async fn a_timeout_after_sending_depends_on_idempotency() {
    let (addr, hits) = serve().await;
    let url = format!("http://{addr}/slow");
    let cases = [
        (json!({"url": url, "method": "POST", "json": {}, "timeout": "300ms"}), ErrorClass::MaybeDelivered),
        (json!({"url": url, "method": "PATCH", "json": {}, "timeout": "300ms"}), ErrorClass::MaybeDelivered),
        (json!({"url": url, "method": "PUT", "json": {}, "timeout": "300ms"}), ErrorClass::Transient),
        (json!({"url": url, "method": "POST", "json": {}, "timeout": "300ms", "idempotent": true}), ErrorClass::Transient),
        (json!({"url": url, "method": "GET", "timeout": "300ms", "idempotent": false}), ErrorClass::MaybeDelivered),
    ];
    let n = cases.len();
    for (input, class) in cases {
        let err = call(&ctx(), input.clone()).await.unwrap_err();
        assert_eq!(err.class(), class, "{input}: {err}");
        assert!(err.message().contains("no answer came within 300ms"), "{err}");
    }
    assert_eq!(hits.0.load(Ordering::SeqCst), n, "every request did arrive");
}

#[tokio::test]
async fn the_runner_timeout_bounds_the_request() {
    let (addr, _) = serve().await;
    let mut short = ctx();
    short.timeout = Duration::from_millis(200);
    let err = call(&short, json!({"url": format!("http://{addr}/slow"), "timeout": "2m"})).await.unwrap_err();
    assert!(err.message().contains("200ms"), "{err}");
}

#[tokio::test]
async fn credentials_from_the_connection_are_applied() {
    let (addr, _) = serve().await;
    let url = format!("http://{addr}/echo");
    let bearer = ctx_with(loopback(), Credentials::Bearer { token: Secret::new("tok_live_123") });
    let out = call(&bearer, json!({"url": url})).await.unwrap();
    assert_eq!(out["body"]["headers"]["authorization"], "Bearer tok_live_123");

    let basic = ctx_with(loopback(), Credentials::Basic { username: "ana".into(), password: Secret::new("s3cret") });
    let out = call(&basic, json!({"url": url})).await.unwrap();
    assert_eq!(out["body"]["headers"]["authorization"], "Basic YW5hOnMzY3JldA==");

    let key = ctx_with(loopback(), Credentials::ApiKey { header: "X-Api-Key".into(), key: Secret::new("k_9") });
    let out = call(&key, json!({"url": url})).await.unwrap();
    assert_eq!(out["body"]["headers"]["x-api-key"], "k_9");

    // A header the step sets itself wins over the connection's.
    let out = call(&bearer, json!({"url": url, "headers": {"Authorization": "Token other"}})).await.unwrap();
    assert_eq!(out["body"]["headers"]["authorization"], "Token other");
}

#[tokio::test]
async fn a_dry_run_records_the_request_and_sends_nothing() {
    let recorder = Arc::new(RecordingTransport::new());
    let ctx = ctx_with(recorder.clone(), Credentials::Bearer { token: Secret::new("tok_live_123") });
    let err = call(&ctx, json!({"url": "https://crm.example.com/api/greetings", "json": {"greeting": "Hi"}})).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert!(err.message().contains("dry run"), "{err}");
    let sent = recorder.take();
    assert_eq!(sent.len(), 1);
    let req = &sent[0];
    assert_eq!(req.method, http::Method::POST);
    assert_eq!(req.url, "https://crm.example.com/api/greetings");
    assert_eq!(req.headers["content-type"], "application/json");
    assert_eq!(req.headers["idempotency-key"], "run_1:post");
    assert_eq!(&req.body[..], br#"{"greeting":"Hi"}"#);
    assert_eq!(req.timeout, Some(Duration::from_secs(30)));
    let shown = format!("{req:?}");
    assert!(!shown.contains("tok_live_123"), "the token stays out of Debug: {shown}");
}

#[tokio::test]
async fn bad_input_names_the_field() {
    let ok = "https://api.example.com/x";
    let cases = [
        (json!({"url": ok, "json": {}, "body": "x"}), "json"),
        (json!({"url": ok, "form": {}, "body": "x"}), "form"),
        (json!({"url": ok, "method": "FETCH"}), "method"),
        (json!({"url": ok, "headers": {"X Bad": "1"}}), "headers.X Bad"),
        (json!({"url": ok, "headers": {"X-Ok": "line\nbreak"}}), "headers.X-Ok"),
        (json!({"url": ok, "headers": {"Content-Length": "3"}}), "headers.Content-Length"),
        (json!({"url": "not a url"}), "url"),
        (json!({"url": ""}), "url"),
        (json!({"url": "ftp://files.example.com/a"}), "url"),
        (json!({"url": "file:///etc/passwd"}), "url"),
        (json!({"url": ok, "query": {"a": {"b": 1}}}), "query.a"),
        (json!({"url": ok, "form": {"f": [{"x": 1}]}}), "form.f"),
        (json!({"url": ok, "json": {}, "content_type": "text/csv"}), "content_type"),
        (json!({"url": ok, "body": "a", "content_type": "text/csv", "headers": {"content-type": "text/csv"}}), "content_type"),
        (json!({"url": ok, "timeout": "forever"}), "timeout"),
        (json!({"url": ok, "timeout": "10m"}), "timeout"),
        (json!({"url": ok, "timeout": "0s"}), "timeout"),
        (json!({"url": ok, "max_response_bytes": 0}), "max_response_bytes"),
        (json!({"url": ok, "idempotency_header": "Bad Header"}), "idempotency_header"),
        (json!({"url": ok, "fail_on_status": "yes"}), "fail_on_status"),
        (json!({"method": "GET"}), ""),
        (json!({"url": ok, "bodyy": "x"}), "bodyy"),
    ];
    // A recorder: nothing is sent, and the checks must fail before it is reached.
    let recorder = Arc::new(RecordingTransport::new());
    let ctx = ctx_with(recorder.clone(), Credentials::None);
    for (input, want) in cases {
        match call(&ctx, input.clone()).await {
            Err(ConnectorError::BadInput { path, message }) => {
                assert_eq!(path, want, "{input}: {message}")
            }
            other => panic!("{input}: expected bad input at `{want}`, got {other:?}"),
        }
    }
    assert!(recorder.is_empty(), "bad input sends nothing");

    let err = call(&ctx, json!({"url": ok, "bodyy": "x"})).await.unwrap_err();
    assert!(err.message().contains("unknown field `bodyy`"), "{err}");
    let err = call(&ctx, json!({"url": ok, "method": "FETCH"})).await.unwrap_err();
    assert!(err.message().contains("GET") && err.message().contains("OPTIONS"), "the choices are listed: {err}");
}

#[tokio::test]
async fn private_destinations_are_refused_as_bad_url() {
    let (addr, hits) = serve().await;
    let guarded: Arc<dyn HttpTransport> = Arc::new(ReqwestTransport::new(TransportConfig::default()).unwrap());
    let ctx = ctx_with(guarded, Credentials::None);
    for url in
        [format!("http://{addr}/echo"), format!("http://localhost:{}/echo", addr.port()), "http://169.254.169.254/latest/meta-data/".into()]
    {
        match call(&ctx, json!({"url": url})).await {
            Err(ConnectorError::BadInput { path, message }) => {
                assert_eq!(path, "url");
                assert!(message.contains("ENLACE_ALLOW_PRIVATE_NETWORKS=true"), "{message}");
            }
            other => panic!("{url}: expected a refusal, got {other:?}"),
        }
    }
    assert_eq!(hits.0.load(Ordering::SeqCst), 0);
}

#[test]
fn idempotency_follows_the_method_and_the_flag() {
    let c = connector();
    let action = c.action("request").unwrap();
    let cases = [
        (json!({"url": "https://x.example"}), true),
        (json!({"url": "https://x.example", "json": {}}), false),
        (json!({"url": "https://x.example", "method": "POST"}), false),
        (json!({"url": "https://x.example", "method": "PATCH"}), false),
        (json!({"url": "https://x.example", "method": "PUT", "json": {}}), true),
        (json!({"url": "https://x.example", "method": "DELETE"}), true),
        (json!({"url": "https://x.example", "method": "HEAD"}), true),
        (json!({"url": "https://x.example", "method": "OPTIONS"}), true),
        (json!({"url": "https://x.example", "method": "POST", "idempotent": true}), true),
        (json!({"url": "https://x.example", "method": "GET", "idempotent": false}), false),
    ];
    for (input, want) in cases {
        assert_eq!(action.idempotent_for(&input), want, "{input}");
    }
    assert_eq!(action.spec().idempotency, enlace_core::Idempotency::PerCall);
}

/// Every property of a schema, nested ones included, with its path.
fn properties<'a>(schema: &'a Value, path: &str, out: &mut Vec<(String, &'a Value)>) {
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (name, prop) in props {
            let p = format!("{path}{name}");
            out.push((p.clone(), prop));
            properties(prop, &format!("{p}."), out);
        }
    }
    if let Some(defs) = schema.get("$defs").and_then(Value::as_object) {
        for (name, def) in defs {
            properties(def, &format!("$defs.{name}."), out);
        }
    }
}

#[test]
fn every_field_is_documented() {
    let c = connector();
    assert_eq!(c.manifest.id, "http");
    assert_eq!(c.manifest.actions.len(), 1);
    let spec = &c.manifest.actions[0];
    assert_eq!(spec.id, "request");
    for (which, schema) in [("input", &spec.input_schema), ("output", &spec.output_schema)] {
        let mut props = Vec::new();
        properties(schema, "", &mut props);
        assert!(props.len() >= if which == "input" { 13 } else { 3 }, "{which}: {props:?}");
        for (path, prop) in props {
            let doc = prop.get("description").and_then(Value::as_str).unwrap_or_default();
            assert!(doc.len() > 20, "{which} field `{path}` needs a doc comment: it is the UI's help text ({prop})");
        }
    }
    assert_eq!(spec.input_schema["required"], json!(["url"]));
    assert_eq!(spec.input_schema["additionalProperties"], json!(false), "unknown keys are refused");
    // The defaults the UI shows are the ones applied.
    let props = &spec.input_schema["properties"];
    assert_eq!(props["timeout"]["default"], "30s");
    assert_eq!(props["max_response_bytes"]["default"], 10 * 1024 * 1024);
    assert_eq!(props["idempotency_header"]["default"], "Idempotency-Key");
    assert_eq!(props["fail_on_status"]["default"], true);
    let methods = spec.input_schema.pointer("/properties/method/enum").expect("the method is a list of choices");
    for m in ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"] {
        assert!(methods.as_array().unwrap().contains(&json!(m)), "{methods}");
    }
}

#[test]
fn the_sample_fits_the_output() {
    let c = connector();
    let spec = &c.manifest.actions[0];
    let sample = spec.sample.as_object().unwrap();
    assert!(sample["status"].is_u64());
    assert!(sample["headers"].as_object().unwrap().keys().all(|k| k == &k.to_lowercase()));
    assert!(sample["body"].is_object());
    let required: Vec<&str> = spec.output_schema["required"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    for key in required {
        assert!(sample.contains_key(key), "the sample lacks `{key}`");
    }
}
