//! `http.poll_json` against a real local feed on 127.0.0.1:0 whose items change during the
//! test, through the erased trigger the runner calls (so config decoding is tested too).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::{Value, json};

use enlace_core::http::HttpTransport;
use enlace_core::trigger::DynPollingTrigger;
use enlace_core::{ActionContext, Credentials, ErrorClass, Secret};
use enlace_kit::{ReqwestTransport, TransportConfig};

use crate::connector;

/// What the feed saw of one request: the `since` parameter and the Authorization header.
type Seen = (Option<String>, Option<String>);

#[derive(Clone, Default)]
struct Feed {
    items: Arc<Mutex<Vec<Value>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

async fn feed(State(f): State<Feed>, Query(q): Query<std::collections::BTreeMap<String, String>>, headers: HeaderMap) -> impl IntoResponse {
    let auth = headers.get("authorization").map(|v| v.to_str().unwrap().to_string());
    f.seen.lock().unwrap().push((q.get("since").cloned(), auth));
    let items = f.items.lock().unwrap().clone();
    let since: i64 = q.get("since").and_then(|s| s.parse().ok()).unwrap_or(0);
    let items: Vec<Value> = items.into_iter().filter(|i| i["n"].as_i64().unwrap_or(0) > since).collect();
    axum::Json(json!({"data": {"orders": items}}))
}

async fn serve() -> (SocketAddr, Feed) {
    let f = Feed::default();
    let app = Router::new()
        .route("/feed", get(feed))
        .route("/list", get(|State(f): State<Feed>| async move { axum::Json(Value::Array(f.items.lock().unwrap().clone())) }))
        .route("/rate", get(|| async { (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "120")], "slow down").into_response() }))
        .route("/auth", get(|| async { (StatusCode::UNAUTHORIZED, axum::Json(json!({"message": "bad token"}))).into_response() }))
        .route("/html", get(|| async { ([("content-type", "text/html")], "<html>login</html>").into_response() }))
        .route("/noid", get(|| async { axum::Json(json!([{"name": "no id"}])) }))
        .with_state(f.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, f)
}

fn ctx(credentials: Credentials) -> ActionContext {
    let http: Arc<dyn HttpTransport> =
        Arc::new(ReqwestTransport::new(TransportConfig { allow_private_networks: true, ..TransportConfig::default() }).unwrap());
    ActionContext {
        run_id: "trigger:t".into(),
        step_key: "trigger".into(),
        attempt: 1,
        idempotency_key: "poll:t:1".into(),
        credentials,
        http,
        timeout: std::time::Duration::from_secs(10),
        extensions: Default::default(),
    }
}

fn trigger() -> Arc<dyn DynPollingTrigger> {
    connector().polling_trigger("poll_json").unwrap().clone()
}

fn order(n: i64) -> Value {
    json!({"id": format!("ord_{n}"), "n": n, "created_at": format!("2026-11-25T09:{n:02}:00Z")})
}

#[tokio::test]
async fn items_newest_first_with_keys_and_a_cursor_sent_back() {
    let (addr, f) = serve().await;
    *f.items.lock().unwrap() = vec![order(1), order(3), order(2)];
    let t = trigger();
    let config =
        json!({"url": format!("http://{addr}/feed"), "items": "$.data.orders", "id": "id", "sort_by": "n", "cursor_param": "since"});
    let ctx = ctx(Credentials::Bearer { token: Secret::new("tok") });
    let page = t.poll(&ctx, config.clone(), None).await.unwrap();
    let keys: Vec<&str> = page.items.iter().map(|i| i.dedupe_key.as_str()).collect();
    assert_eq!(keys, ["ord_3", "ord_2", "ord_1"], "sorted by `n`, largest first");
    assert_eq!(page.items[0].event, order(3), "the event is the feed's item as it is");
    assert_eq!(page.cursor.as_deref(), Some("3"), "the newest `sort_by` value is the cursor");

    f.items.lock().unwrap().push(order(4));
    let page = t.poll(&ctx, config, page.cursor).await.unwrap();
    assert_eq!(page.items.iter().map(|i| i.dedupe_key.as_str()).collect::<Vec<_>>(), ["ord_4"]);
    assert_eq!(page.cursor.as_deref(), Some("4"));
    let seen = f.seen.lock().unwrap().clone();
    assert_eq!(seen[0], (None, Some("Bearer tok".into())), "the connection's credentials go on the request");
    assert_eq!(seen[1].0.as_deref(), Some("3"), "the cursor goes back as the named query parameter");
}

#[tokio::test]
async fn a_plain_list_in_feed_order_keeps_no_cursor() {
    let (addr, f) = serve().await;
    *f.items.lock().unwrap() = vec![json!({"id": 12, "t": "b"}), json!({"id": 11, "t": "a"})];
    let page = trigger().poll(&ctx(Credentials::None), json!({"url": format!("http://{addr}/list"), "id": "$.id"}), None).await.unwrap();
    assert_eq!(page.items.iter().map(|i| i.dedupe_key.as_str()).collect::<Vec<_>>(), ["12", "11"], "numbers become text keys");
    assert_eq!(page.cursor, None, "without cursor_param the cursor stays as it is");
}

#[tokio::test]
async fn errors_are_classified() {
    let (addr, _f) = serve().await;
    let t = trigger();
    let c = ctx(Credentials::None);
    let poll = |path: &str| t.poll(&c, json!({"url": format!("http://{addr}{path}"), "id": "id"}), None);
    let e = poll("/rate").await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::RateLimited);
    assert_eq!(e.retry_after(), Some(std::time::Duration::from_secs(120)));
    assert_eq!(poll("/auth").await.unwrap_err().class(), ErrorClass::Auth);
    let e = poll("/html").await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::Permanent);
    assert!(e.message().contains("did not answer JSON"), "{e}");
    let e = poll("/noid").await.unwrap_err();
    assert!(e.message().contains("no usable id at `id`"), "{e}");
    let e = t.poll(&c, json!({"url": format!("http://{addr}/list"), "id": "$[", "items": "$"}), None).await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::BadInput);
    let e = t.poll(&c, json!({"url": format!("http://{addr}/list")}), None).await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::BadInput, "`id` is required: {e}");
    let e = t.poll(&c, json!({"url": "ftp://example.com/x", "id": "id"}), None).await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::BadInput);
}

#[tokio::test]
async fn the_ssrf_guard_applies() {
    let http: Arc<dyn HttpTransport> = Arc::new(ReqwestTransport::new(TransportConfig::default()).unwrap());
    let c = ActionContext { http, ..ctx(Credentials::None) };
    let e = trigger().poll(&c, json!({"url": "http://127.0.0.1:9/feed", "id": "id"}), None).await.unwrap_err();
    assert!(matches!(e.class(), ErrorClass::Permanent | ErrorClass::BadInput), "loopback is refused: {e}");
}

#[test]
fn the_manifest_documents_every_field() {
    let c = connector();
    let spec = c.manifest.trigger("poll_json").unwrap();
    let props = spec.config_schema["properties"].as_object().unwrap();
    for (name, p) in props {
        assert!(p.get("description").and_then(Value::as_str).is_some_and(|d| d.len() > 20), "`{name}` is documented");
    }
    assert_eq!(spec.sample["id"], "ord_1042");
}
