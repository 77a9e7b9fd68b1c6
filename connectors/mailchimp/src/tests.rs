//! `mailchimp.upsert_member` against a local server on 127.0.0.1:0 that answers like
//! Mailchimp, with answers written from Mailchimp's public API documentation (no API
//! description of Mailchimp may be kept), through the erased action the runner calls.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde_json::{Value, json};

use enlace_core::{ActionContext, ConnectorError, Credentials, ErrorClass, Idempotency, Secret};

use crate::connector_at;
use crate::upsert_member::{Input, build_requests, data_center, subscriber_hash};

const KEY: &str = "0123456789abcdef0123456789abcdef-us21";
const LIST: &str = "a1b2c3d4e5";
/// md5("ana@example.com").
const ANA: &str = "cdb9d6a1dddc375a09cc83e3001598dc";

type Answer = Arc<dyn Fn() -> Response + Send + Sync>;
/// One request the server saw: method, path (below `/3.0`), headers, JSON body.
type Seen = (Method, String, HeaderMap, Value);

#[derive(Clone)]
struct Mailchimp {
    upsert: Answer,
    tags: Answer,
    seen: Arc<Mutex<Vec<Seen>>>,
}

async fn record(s: &Mailchimp, method: Method, path: String, headers: HeaderMap, body: String) {
    s.seen.lock().unwrap().push((method, path, headers, serde_json::from_str(&body).unwrap_or(Value::Null)));
}

async fn serve(
    upsert: impl Fn() -> Response + Send + Sync + 'static,
    tags: impl Fn() -> Response + Send + Sync + 'static,
) -> (SocketAddr, Mailchimp) {
    let state = Mailchimp { upsert: Arc::new(upsert), tags: Arc::new(tags), seen: Arc::default() };
    let app = Router::new()
        .route(
            "/3.0/lists/{list}/members/{hash}",
            put(|State(s): State<Mailchimp>, Path((l, h)): Path<(String, String)>, headers: HeaderMap, body: String| async move {
                record(&s, Method::PUT, format!("/lists/{l}/members/{h}"), headers, body).await;
                (s.upsert)()
            }),
        )
        .route(
            "/3.0/lists/{list}/members/{hash}/tags",
            post(|State(s): State<Mailchimp>, Path((l, h)): Path<(String, String)>, headers: HeaderMap, body: String| async move {
                record(&s, Method::POST, format!("/lists/{l}/members/{h}/tags"), headers, body).await;
                (s.tags)()
            }),
        )
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, state)
}

fn answer(status: u16, content_type: &'static str, body: Value) -> impl Fn() -> Response + Send + Sync {
    move || (StatusCode::from_u16(status).unwrap(), [("content-type", content_type)], body.to_string()).into_response()
}

fn problem(status: u16, title: &str, detail: &str, errors: Option<Value>) -> impl Fn() -> Response + Send + Sync {
    let mut body = json!({
        "type": "https://mailchimp.com/developer/marketing/docs/errors/",
        "title": title, "status": status, "detail": detail,
        "instance": "2b5c5b1c-3e5d-4a4b-9f6f-3c1a2b3c4d5e"
    });
    if let Some(e) = errors {
        body["errors"] = e;
    }
    answer(status, "application/problem+json; charset=utf-8", body)
}

fn no_content() -> impl Fn() -> Response + Send + Sync {
    || StatusCode::NO_CONTENT.into_response()
}

/// A member as `PUT /lists/{list_id}/members/{subscriber_hash}` returns it (abridged).
fn member(status: &str) -> Value {
    json!({
        "id": ANA, "email_address": "ana@example.com", "unique_email_id": "882e9bec19", "contact_id": "6ba1f5d4c3e2b1a0",
        "full_name": "Ana García", "web_id": 123456789, "email_type": "html", "status": status,
        "merge_fields": {"FNAME": "Ana", "LNAME": "García", "ADDRESS": "", "PHONE": ""},
        "stats": {"avg_open_rate": 0, "avg_click_rate": 0}, "ip_signup": "", "timestamp_signup": "",
        "ip_opt": "198.51.100.7", "timestamp_opt": "2026-04-14T09:30:00+00:00", "member_rating": 2,
        "last_changed": "2026-04-14T09:30:00+00:00", "language": "", "vip": false, "email_client": "",
        "location": {"latitude": 0, "longitude": 0, "gmtoff": 0, "dstoff": 0, "country_code": "", "timezone": ""},
        "marketing_permissions": [{"marketing_permission_id": "7d2f1e0c9b", "text": "Email", "enabled": true}],
        "source": "API - Generic", "tags_count": 0, "tags": [], "list_id": LIST,
        "_links": [{"rel": "self", "href": format!("https://us21.api.mailchimp.com/3.0/lists/{LIST}/members/{ANA}"), "method": "GET"}]
    })
}

fn ctx_with(credentials: Credentials) -> ActionContext {
    // The kit's context: the real transport with loopback allowed.
    enlace_kit::testing::ctx(credentials)
}

fn basic(key: &str) -> Credentials {
    Credentials::Basic { username: "enlace".into(), password: Secret::new(key) }
}

async fn call_with(addr: SocketAddr, credentials: Credentials, input: Value) -> Result<Value, ConnectorError> {
    let c = connector_at(&format!("http://{addr}/3.0"));
    c.action("upsert_member").expect("registered").call(&ctx_with(credentials), input).await
}

async fn call(addr: SocketAddr, input: Value) -> Result<Value, ConnectorError> {
    call_with(addr, basic(KEY), input).await
}

fn simple() -> Value {
    json!({"list_id": LIST, "email": "Ana@Example.com", "status_if_new": "subscribed"})
}

#[test]
fn the_subscriber_hash_is_the_md5_of_the_lowercased_email() {
    assert_eq!(subscriber_hash("ana@example.com"), ANA);
    assert_eq!(subscriber_hash(" Ana@EXAMPLE.com "), ANA);
    // Mailchimp's documentation example.
    assert_eq!(subscriber_hash("Urist.McVankab@freddiesjokes.com"), "62eeb292278cc15f5817cb78f7790b08");
}

#[tokio::test]
async fn upserts_the_member_then_sets_its_tags() {
    let (addr, mc) = serve(answer(200, "application/json; charset=utf-8", member("subscribed")), no_content()).await;
    let out = call(
        addr,
        json!({
            "list_id": LIST, "email_address": "Ana@Example.com", "status_if_new": "pending", "status": "subscribed",
            "merge_fields": {"FNAME": "Ana", "LNAME": "García"},
            "tags": ["webinar-2026", {"name": "lead", "status": "inactive"}],
            "marketing_permissions": [{"marketing_permission_id": "7d2f1e0c9b", "enabled": true}]
        }),
    )
    .await
    .expect("upserted");
    assert_eq!(
        out,
        json!({"id": ANA, "email_address": "ana@example.com", "status": "subscribed", "list_id": LIST, "unique_email_id": "882e9bec19",
               "web_id": 123456789, "tags_set": [{"name": "webinar-2026", "status": "active"}, {"name": "lead", "status": "inactive"}]})
    );
    let seen = mc.seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    let (method, path, headers, body) = &seen[0];
    assert_eq!((method, path.as_str()), (&Method::PUT, format!("/lists/{LIST}/members/{ANA}").as_str()));
    // Basic authentication: any username, the API key as the password.
    assert_eq!(headers["authorization"], "Basic ZW5sYWNlOjAxMjM0NTY3ODlhYmNkZWYwMTIzNDU2Nzg5YWJjZGVmLXVzMjE=");
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(
        body,
        &json!({"email_address": "Ana@Example.com", "status_if_new": "pending", "status": "subscribed",
                "merge_fields": {"FNAME": "Ana", "LNAME": "García"},
                "marketing_permissions": [{"marketing_permission_id": "7d2f1e0c9b", "enabled": true}]})
    );
    let (method, path, headers, body) = &seen[1];
    assert_eq!((method, path.as_str()), (&Method::POST, format!("/lists/{LIST}/members/{ANA}/tags").as_str()));
    assert!(headers.contains_key("authorization"));
    assert_eq!(body, &json!({"tags": [{"name": "webinar-2026", "status": "active"}, {"name": "lead", "status": "inactive"}]}));
}

#[tokio::test]
async fn without_tags_there_is_one_call() {
    let (addr, mc) = serve(answer(200, "application/json", member("subscribed")), no_content()).await;
    let out = call(addr, simple()).await.unwrap();
    assert_eq!(out["tags_set"], json!([]));
    let seen = mc.seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].3, json!({"email_address": "Ana@Example.com", "status_if_new": "subscribed"}));
}

#[test]
fn the_data_center_comes_from_the_key() {
    let input: Input = serde_json::from_value(simple()).unwrap();
    let plan = build_requests(crate::API_BASE, &input, &basic(KEY)).unwrap();
    assert_eq!(plan.upsert.url, format!("https://us21.api.mailchimp.com/3.0/lists/{LIST}/members/{ANA}"));
    assert!(plan.tags.is_none());
    assert_eq!(data_center("abc-us6").unwrap(), "us6");
    for bad in ["0123456789abcdef", "abc-", "abc-US21", "abc-us", "abc-21", "abc-us21.evil.com", "abc-us21/x"] {
        let err = data_center(bad).unwrap_err();
        assert_eq!(err.class(), ErrorClass::Auth, "{bad}");
        assert!(err.message().contains("-us21") && err.message().contains("Extras > API keys"), "{err}");
        assert!(!err.message().contains(bad), "the key is not shown: {err}");
    }
}

#[tokio::test]
async fn error_answers_are_classified() {
    let tags_ok = no_content;
    // 400 naming a field: bad input on the step's field, not retried.
    for (field, want) in [("email_address", "email"), ("FNAME", "merge_fields.FNAME"), ("merge_fields.BIRTHDAY", "merge_fields.BIRTHDAY")] {
        let (addr, mc) = serve(
            problem(
                400,
                "Invalid Resource",
                "The resource submitted could not be validated. For field-specific details, see the 'errors' array.",
                Some(json!([{"field": field, "message": "Please enter a value"}])),
            ),
            tags_ok(),
        )
        .await;
        let err = call(addr, simple()).await.unwrap_err();
        match &err {
            ConnectorError::BadInput { path, message } => {
                assert_eq!(path, want, "{err}");
                assert!(message.contains("Invalid Resource") && message.contains("Please enter a value"), "{message}");
            }
            other => panic!("{field}: expected bad input, got {other:?}"),
        }
        assert_eq!(mc.seen.lock().unwrap().len(), 1);
    }
    // 400 about the address itself.
    for (title, detail) in [
        ("Member Exists", "ana@example.com is already a list member. Use PUT to insert or update list members."),
        ("Invalid Resource", "ana@example.com looks fake or invalid, please enter a real email address."),
        (
            "Forgotten Email Not Subscribed",
            "ana@example.com was permanently deleted and cannot be re-imported. The contact must re-subscribe to get back on the list.",
        ),
    ] {
        let (addr, _) = serve(problem(400, title, detail, None), tags_ok()).await;
        let err = call(addr, simple()).await.unwrap_err();
        assert!(
            matches!(&err, ConnectorError::BadInput { path, message } if path == "email" && message.contains(title) && message.contains(detail)),
            "{err:?}"
        );
    }
    // Another 400: permanent, with Mailchimp's words.
    let (addr, _) = serve(problem(400, "Bad Request", "The request could not be processed.", None), tags_ok()).await;
    let err = call(addr, simple()).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Permanent, "{err}");
    assert!(err.message().contains("The request could not be processed."), "{err}");
    // 404: no such audience.
    let (addr, _) = serve(problem(404, "Resource Not Found", "The requested resource could not be found.", None), tags_ok()).await;
    let err = call(addr, simple()).await.unwrap_err();
    assert!(matches!(&err, ConnectorError::BadInput { path, .. } if path == "list_id"), "{err:?}");

    let (addr, _) = serve(
        problem(401, "API Key Invalid", "Your API key may be invalid, or you've attempted to access the wrong datacenter.", None),
        tags_ok(),
    )
    .await;
    let err = call(addr, simple()).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Auth, "{err}");
    assert!(err.message().contains("API Key Invalid") && err.message().contains("Extras > API keys"), "{err}");
    assert!(!err.message().contains(KEY), "{err}");

    let (addr, _) = serve(
        move || {
            let mut r = problem(429, "Too Many Requests", "You have exceeded the limit of 10 simultaneous connections.", None)();
            r.headers_mut().insert("retry-after", "5".parse().unwrap());
            r
        },
        tags_ok(),
    )
    .await;
    let err = call(addr, simple()).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::RateLimited, "{err}");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(5)));
    assert!(err.message().contains("10 simultaneous connections"), "{err}");

    let (addr, _) = serve(problem(500, "Internal Server Error", "An unexpected internal error has occurred.", None), tags_ok()).await;
    let err = call(addr, simple()).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Transient, "{err}");

    // The tags call refused: the step fails saying the member was saved.
    let (addr, _) = serve(
        answer(200, "application/json", member("subscribed")),
        problem(400, "Invalid Resource", "Invalid tag.", Some(json!([{"field": "tags", "message": "Tag name too long"}]))),
    )
    .await;
    let mut input = simple();
    input["tags"] = json!(["x"]);
    let err = call(addr, input).await.unwrap_err();
    assert!(
        matches!(&err, ConnectorError::BadInput { path, message } if path == "tags" && message.starts_with("the member was saved")),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_malformed_answer_is_a_clear_error() {
    let (addr, _) =
        serve(|| (StatusCode::OK, [("content-type", "text/html")], "<html>maintenance</html>").into_response(), no_content()).await;
    let err = call(addr, simple()).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Permanent, "{err}");
    assert!(err.message().contains("not a JSON object") && err.message().contains("maintenance"), "{err}");

    let (addr, _) = serve(answer(200, "application/json", json!({"status": "subscribed"})), no_content()).await;
    let err = call(addr, simple()).await.unwrap_err();
    assert!(err.message().contains("without the member's `id`"), "{err}");
}

#[tokio::test]
async fn bad_input_names_the_field_and_sends_nothing() {
    let (addr, mc) = serve(answer(200, "application/json", member("subscribed")), no_content()).await;
    let with = |k: &str, v: Value| {
        let mut i = simple();
        if v.is_null() {
            i.as_object_mut().unwrap().remove(k);
        } else {
            i[k] = v;
        }
        i
    };
    let cases = [
        (with("list_id", json!("a1/../x")), "list_id", "not an audience ID"),
        (with("email", json!("ana at example")), "email", "not an email address"),
        (with("status_if_new", json!("active")), "status_if_new", "unknown variant"),
        (with("status_if_new", Value::Null), "", "missing field `status_if_new`"),
        (with("merge_fields", json!({"first name": "Ana"})), "merge_fields.first name", "not a merge tag"),
        (with("tags", json!([""])), "tags[0]", "empty name"),
        (with("tags", json!(["t".repeat(101)])), "tags[0]", "longer than 100"),
        (
            with("marketing_permissions", json!([{"marketing_permission_id": " ", "enabled": true}])),
            "marketing_permissions[0].marketing_permission_id",
            "is empty",
        ),
        (with("interests", json!({})), "interests", "unknown field `interests`"),
    ];
    for (input, want_path, part) in cases {
        let err = call(addr, input.clone()).await.unwrap_err();
        match &err {
            ConnectorError::BadInput { path, message } => {
                assert_eq!(path, want_path, "{input}: {err}");
                assert!(message.contains(part), "{input}: `{message}` lacks `{part}`");
            }
            other => panic!("{input}: expected bad input, got {other:?}"),
        }
    }
    // A key without its data center: an auth error saying where to find the whole key.
    let err = call_with(addr, basic("0123456789abcdef0123456789abcdef"), simple()).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Auth);
    assert!(err.message().contains("-us21"), "{err}");
    let err = call_with(addr, Credentials::Bearer { token: Secret::new(KEY) }, simple()).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Auth);
    assert!(mc.seen.lock().unwrap().is_empty(), "nothing was sent");
}

#[test]
fn manifest_declares_basic_auth_rate_limit_and_natural_idempotency() {
    let c = crate::connector();
    let m = &c.manifest;
    assert_eq!(m.id, "mailchimp");
    assert_eq!(m.auth, enlace_core::AuthKind::Basic);
    assert_eq!(m.rate_limit, Some(enlace_core::RateLimit { calls: 10, per: Duration::from_secs(1) }));
    assert!(m.connection_test);
    let a = m.action("upsert_member").unwrap();
    assert_eq!(a.idempotency, Idempotency::Natural, "a PUT keyed by the email: repeating it is harmless");
    assert_eq!(a.input_schema["required"], json!(["list_id", "email", "status_if_new"]));
    for (name, prop) in a.input_schema["properties"].as_object().unwrap() {
        assert!(prop["description"].as_str().is_some_and(|d| d.len() > 20), "{name} is documented");
    }
    for key in ["id", "email_address", "status", "list_id", "tags_set"] {
        assert!(a.sample.get(key).is_some(), "the sample has {key}");
        assert!(a.output_schema["properties"].get(key).is_some(), "the output schema has {key}");
    }
}

#[tokio::test]
async fn the_connection_test_pings_the_data_center_of_the_key() {
    use enlace_core::{ConnectionContext, TestOutcome};
    let app = Router::new().route(
        "/3.0/ping",
        get(|headers: HeaderMap| async move {
            let good = "Basic ZW5sYWNlOjAxMjM0NTY3ODlhYmNkZWYwMTIzNDU2Nzg5YWJjZGVmLXVzMjE=";
            if headers.get("authorization").is_some_and(|v| v == good) {
                answer(200, "application/json", json!({"health_status": "Everything's Chimpy!"}))()
            } else {
                problem(401, "API Key Invalid", "Your API key may be invalid, or you've attempted to access the wrong datacenter.", None)()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let c = connector_at(&format!("http://{addr}/3.0"));
    let with = |key: &str| ConnectionContext {
        connection_id: "mailchimp-main".into(),
        credentials: basic(key),
        http: ctx_with(basic(KEY)).http,
        timeout: Duration::from_secs(5),
    };
    match c.test_connection(&with(KEY)).await {
        TestOutcome::Ok(m) => assert_eq!(m, "the API key works in data center us21: Everything's Chimpy!"),
        other => panic!("{other:?}"),
    }
    match c.test_connection(&with("ffffffffffffffffffffffffffffffff-us21")).await {
        TestOutcome::Failed(e) => assert_eq!(e.class(), ErrorClass::Auth, "{e}"),
        other => panic!("{other:?}"),
    }
    match c.test_connection(&with("no-data-center")).await {
        TestOutcome::Failed(e) => assert!(e.class() == ErrorClass::Auth && e.message().contains("-us21"), "{e}"),
        other => panic!("{other:?}"),
    }
}
