//! `sendgrid.send_email` against a local server on 127.0.0.1:0 that answers like SendGrid
//! (recorded answers), through the erased action the runner calls.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use enlace_core::{ActionContext, ConnectorError, Credentials, ErrorClass, Idempotency, Secret};

use crate::connector_at;
use crate::send_email::{Input, build_request_at};

const KEY: &str = "SG.test-key.5ecr3t-value";

#[derive(Clone)]
struct SendGrid {
    answer: Arc<dyn Fn() -> Response + Send + Sync>,
    seen: Arc<Mutex<Vec<(HeaderMap, Value)>>>,
    delay: Arc<Mutex<Duration>>,
}

async fn mail_send(State(s): State<SendGrid>, headers: HeaderMap, body: String) -> Response {
    let parsed = serde_json::from_str(&body).unwrap_or(Value::Null);
    s.seen.lock().unwrap().push((headers, parsed));
    let delay = *s.delay.lock().unwrap();
    tokio::time::sleep(delay).await;
    (s.answer)()
}

async fn serve(answer: impl Fn() -> Response + Send + Sync + 'static) -> (SocketAddr, SendGrid) {
    let state = SendGrid { answer: Arc::new(answer), seen: Arc::default(), delay: Arc::default() };
    let app = Router::new().route("/v3/mail/send", post(mail_send)).with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, state)
}

fn accepted(id: &'static str) -> impl Fn() -> Response + Send + Sync {
    move || (StatusCode::ACCEPTED, [("x-message-id", id)], "").into_response()
}

fn json_answer(status: u16, headers: Vec<(&'static str, String)>, body: Value) -> impl Fn() -> Response + Send + Sync {
    move || {
        let mut r = (StatusCode::from_u16(status).unwrap(), axum::Json(body.clone())).into_response();
        for (k, v) in &headers {
            r.headers_mut().insert(*k, v.parse().unwrap());
        }
        r
    }
}

fn ctx_with(credentials: Credentials) -> ActionContext {
    enlace_kit::testing::ctx(credentials)
}

fn bearer() -> Credentials {
    Credentials::Bearer { token: Secret::new(KEY) }
}

async fn call_with(addr: SocketAddr, credentials: Credentials, input: Value) -> Result<Value, ConnectorError> {
    let c = connector_at(&format!("http://{addr}"));
    c.action("send_email").expect("registered").call(&ctx_with(credentials), input).await
}

async fn call(addr: SocketAddr, input: Value) -> Result<Value, ConnectorError> {
    call_with(addr, bearer(), input).await
}

fn simple() -> Value {
    json!({"from": "news@example.com", "to": "ana@example.com", "subject": "Hi", "text": "Hello Ana"})
}

#[tokio::test]
async fn sends_json_with_the_api_key_and_reads_the_message_id() {
    let (addr, sg) = serve(accepted("14c5d75ce93.dfd.64b469")).await;
    let in_an_hour = Utc::now() + chrono::Duration::hours(1);
    let out = call(
        addr,
        json!({
            "from": "Acme News <news@example.com>",
            "to": ["ana@example.com", {"email": "bo@example.com", "name": "Bo"}],
            "cc": "cc@example.com",
            "bcc": ["\"Audit\" <audit@example.com>"],
            "reply_to": "help@example.com",
            "subject": "Your order",
            "text": "Plain",
            "html": "<p>Rich</p>",
            "asm": {"group_id": 12345, "groups_to_display": [12345, 67890]},
            "categories": ["orders", "transactional"],
            "send_at": in_an_hour.to_rfc3339(),
            "headers": {"List-Unsubscribe": "<mailto:unsub@example.com>"}
        }),
    )
    .await
    .expect("sent");
    assert_eq!(out, json!({"message_id": "14c5d75ce93.dfd.64b469"}));
    let seen = sg.seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    let (headers, body) = &seen[0];
    assert_eq!(headers["authorization"], format!("Bearer {KEY}").as_str());
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(
        body,
        &json!({
            "personalizations": [{
                "to": [{"email": "ana@example.com"}, {"email": "bo@example.com", "name": "Bo"}],
                "cc": [{"email": "cc@example.com"}],
                "bcc": [{"email": "audit@example.com", "name": "Audit"}]
            }],
            "from": {"email": "news@example.com", "name": "Acme News"},
            "reply_to": {"email": "help@example.com"},
            "subject": "Your order",
            "content": [{"type": "text/plain", "value": "Plain"}, {"type": "text/html", "value": "<p>Rich</p>"}],
            "asm": {"group_id": 12345, "groups_to_display": [12345, 67890]},
            "categories": ["orders", "transactional"],
            "send_at": in_an_hour.timestamp(),
            "headers": {"List-Unsubscribe": "<mailto:unsub@example.com>"}
        })
    );
}

#[tokio::test]
async fn a_dynamic_template_needs_no_subject_or_content() {
    let (addr, sg) = serve(accepted("abc")).await;
    call(
        addr,
        json!({"from": "news@example.com", "to": ["ana@example.com"], "template_id": "d-0123456789abcdef0123456789abcdef",
               "dynamic_template_data": {"first_name": "Ana", "items": [{"sku": "A1"}]}}),
    )
    .await
    .expect("sent");
    let body = sg.seen.lock().unwrap()[0].1.clone();
    assert_eq!(
        body,
        json!({
            "personalizations": [{"to": [{"email": "ana@example.com"}], "dynamic_template_data": {"first_name": "Ana", "items": [{"sku": "A1"}]}}],
            "from": {"email": "news@example.com"},
            "template_id": "d-0123456789abcdef0123456789abcdef"
        })
    );
}

#[tokio::test]
async fn a_202_without_message_id_still_succeeds() {
    let (addr, _) = serve(|| StatusCode::ACCEPTED.into_response()).await;
    assert_eq!(call(addr, simple()).await.unwrap(), json!({}));
}

fn errors(list: Value) -> Value {
    json!({"errors": list})
}

#[tokio::test]
async fn error_answers_are_classified() {
    // A field SendGrid names becomes bad input on the step's field, not retried.
    for (field, want) in [
        ("from.email", "from"),
        ("personalizations.0.to.1.email", "to[1]"),
        ("personalizations.0.bcc.0.email", "bcc[0]"),
        ("content.0.value", "text"),
        ("template_id", "template_id"),
        ("asm.group_id", "asm.group_id"),
        ("send_at", "send_at"),
        ("reply_to.email", "reply_to"),
    ] {
        let (addr, sg) = serve(json_answer(
            400,
            vec![],
            errors(json!([{"message": "The from email does not contain a valid address.", "field": field, "help": "http://sendgrid.com/docs"}])),
        ))
        .await;
        let err = call(addr, simple()).await.unwrap_err();
        match &err {
            ConnectorError::BadInput { path, message } => {
                assert_eq!(path, want, "{field}: {err}");
                assert!(message.contains("does not contain a valid address") && message.contains(field), "{message}");
            }
            other => panic!("{field}: expected bad input, got {other:?}"),
        }
        assert_eq!(sg.seen.lock().unwrap().len(), 1);
    }

    // A 4xx without a field: permanent, with SendGrid's message.
    let (addr, _) = serve(json_answer(413, vec![], errors(json!([{"message": "too big", "field": null}])))).await;
    let err = call(addr, simple()).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Permanent, "{err}");
    assert!(err.message().contains("too big"), "{err}");

    for status in [401, 403] {
        let (addr, _) = serve(json_answer(status, vec![], errors(json!([{"message": "authorization required", "field": null}])))).await;
        let err = call(addr, simple()).await.unwrap_err();
        assert_eq!(err.class(), ErrorClass::Auth, "{err}");
        assert!(err.message().contains("authorization required") && err.message().contains("Mail Send permission"), "{err}");
        assert!(!err.message().contains(KEY), "{err}");
    }

    // 429: the wait from X-RateLimit-Reset (an epoch second), or Retry-After.
    let reset = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 30;
    let (addr, _) = serve(json_answer(
        429,
        vec![("x-ratelimit-limit", "600".into()), ("x-ratelimit-remaining", "0".into()), ("x-ratelimit-reset", reset.to_string())],
        errors(json!([{"message": "too many requests", "field": null}])),
    ))
    .await;
    let err = call(addr, simple()).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::RateLimited, "{err}");
    let wait = err.retry_after().expect("a wait");
    assert!(wait > Duration::from_secs(25) && wait <= Duration::from_secs(30), "{wait:?}");
    let (addr, _) = serve(json_answer(429, vec![("retry-after", "7".into())], errors(json!([{"message": "slow down"}])))).await;
    let err = call(addr, simple()).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::RateLimited);
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));

    let (addr, _) = serve(json_answer(500, vec![], errors(json!([{"message": "internal server error"}])))).await;
    let err = call(addr, simple()).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Transient, "{err}");
    let (addr, _) = serve(|| (StatusCode::BAD_GATEWAY, [("content-type", "text/html")], "<html>bad gateway</html>").into_response()).await;
    assert_eq!(call(addr, simple()).await.unwrap_err().class(), ErrorClass::Transient);
}

#[tokio::test]
async fn a_timeout_after_sending_is_maybe_delivered_not_retried() {
    let (addr, sg) = serve(accepted("x")).await;
    *sg.delay.lock().unwrap() = Duration::from_millis(1500);
    let mut ctx = ctx_with(bearer());
    ctx.timeout = Duration::from_millis(200);
    let c = connector_at(&format!("http://{addr}"));
    let action = c.action("send_email").unwrap();
    assert!(!action.idempotent_for(&simple()), "the runner must not resend a maybe-delivered email");
    let err = action.call(&ctx, simple()).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::MaybeDelivered, "{err}");
    assert_eq!(sg.seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn bad_input_names_the_field_and_sends_nothing() {
    let (addr, sg) = serve(accepted("x")).await;
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
        (with("from", json!("not an address")), "from", "not an email address"),
        (with("to", json!([])), "to", "at least one recipient"),
        (with("to", json!(["ana@example.com", "bo@"])), "to[1]", "`bo@` is not an email address"),
        (with("cc", json!("x y@example.com")), "cc", "not an email address"),
        (with("subject", Value::Null), "subject", "give the `subject`"),
        (with("text", Value::Null), "text", "`text`, `html`, or both"),
        (with("template_id", json!("welcome")), "template_id", "d- and 32 hexadecimal"),
        (with("dynamic_template_data", json!({"a": 1})), "dynamic_template_data", "goes with `template_id`"),
        (with("categories", json!(["a", "a"])), "categories[1]", "listed twice"),
        (with("categories", json!((0..11).map(|i| i.to_string()).collect::<Vec<_>>())), "categories", "at most 10"),
        (with("categories", json!(["x".repeat(256)])), "categories[0]", "longer than 255"),
        (with("asm", json!({"group_id": 1, "groups_to_display": vec![1; 26]})), "asm.groups_to_display", "at most 25"),
        (with("asm", json!({"groups_to_display": [1]})), "asm", "missing field `group_id`"),
        (with("send_at", json!("tomorrow")), "send_at", "RFC 3339"),
        (with("send_at", json!((Utc::now() - chrono::Duration::minutes(5)).to_rfc3339())), "send_at", "in the past"),
        (with("send_at", json!((Utc::now() + chrono::Duration::hours(73)).to_rfc3339())), "send_at", "more than 72 hours ahead"),
        (with("headers", json!({"Subject": "x"})), "headers.Subject", "SendGrid sets `Subject` itself"),
        (with("headers", json!({"X-Campaign": "a\r\nBcc: evil@example.com"})), "headers.X-Campaign", "line break"),
        (with("headers", json!({"Bad Name": "x"})), "headers.Bad Name", "not a valid header name"),
        (with("attachments", json!([])), "attachments", "unknown field `attachments`"),
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
    // A connection that is not an API key: an auth error saying what to fix.
    let err = call_with(addr, Credentials::Basic { username: "apikey".into(), password: Secret::new(KEY) }, simple()).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Auth);
    assert!(err.message().contains("API key") && !err.message().contains(KEY), "{err}");
    assert!(sg.seen.lock().unwrap().is_empty(), "nothing was sent");
}

#[test]
fn send_at_is_unix_seconds_within_72_hours() {
    let now = DateTime::parse_from_rfc3339("2026-04-14T09:00:00Z").unwrap().with_timezone(&Utc);
    let build = |at: &str| {
        let mut i = simple();
        i["send_at"] = json!(at);
        let input: Input = serde_json::from_value(i).unwrap();
        build_request_at("https://api.sendgrid.com", &input, &bearer(), now)
    };
    let body: Value = serde_json::from_slice(&build("2026-04-15T09:00:00+02:00").unwrap().body).unwrap();
    assert_eq!(body["send_at"], 1_776_236_400, "2026-04-15T07:00:00Z");
    assert!(build("2026-04-17T09:00:00Z").is_ok(), "exactly 72 hours ahead is allowed");
    let err = build("2026-04-17T09:00:01Z").unwrap_err();
    assert!(err.message().contains("at most 72 hours in advance"), "{err}");
    let err = build("2026-04-14T09:00:00Z").unwrap_err();
    assert!(err.message().contains("in the past") && err.message().contains("2026-04-14T09:00:00Z"), "{err}");
}

#[test]
fn manifest_declares_bearer_auth_rate_limit_and_no_idempotency() {
    let c = crate::connector();
    let m = &c.manifest;
    assert_eq!(m.id, "sendgrid");
    assert_eq!(m.auth, enlace_core::AuthKind::Bearer);
    assert_eq!(m.rate_limit, Some(enlace_core::RateLimit { calls: 10, per: Duration::from_secs(1) }));
    assert!(m.connection_test);
    let a = m.action("send_email").unwrap();
    assert_eq!(a.idempotency, Idempotency::None, "a timeout after sending is maybe delivered, never resent blindly");
    assert_eq!(a.input_schema["required"], json!(["from", "to"]));
    for (name, prop) in a.input_schema["properties"].as_object().unwrap() {
        assert!(prop["description"].as_str().is_some_and(|d| d.len() > 20), "{name} is documented");
    }
    assert!(a.sample["message_id"].is_string());
    assert!(a.output_schema["properties"].get("message_id").is_some());
}

#[tokio::test]
async fn the_connection_test_checks_the_mail_send_permission() {
    use enlace_core::{ConnectionContext, TestOutcome};
    let app = Router::new().route(
        "/v3/scopes",
        get(|headers: HeaderMap| async move {
            match headers.get("authorization").and_then(|v| v.to_str().ok()) {
                Some(v) if v == format!("Bearer {KEY}") => (StatusCode::OK, axum::Json(json!({"scopes": ["mail.send", "alerts.read"]}))),
                Some("Bearer SG.read-only") => (StatusCode::OK, axum::Json(json!({"scopes": ["alerts.read"]}))),
                _ => (StatusCode::UNAUTHORIZED, axum::Json(errors(json!([{"field": null, "message": "authorization required"}])))),
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let c = connector_at(&format!("http://{addr}"));
    let with = |token: &str| ConnectionContext {
        connection_id: "sendgrid-main".into(),
        credentials: Credentials::Bearer { token: Secret::new(token) },
        http: ctx_with(bearer()).http,
        timeout: Duration::from_secs(5),
    };
    match c.test_connection(&with(KEY)).await {
        TestOutcome::Ok(m) => assert_eq!(m, "the API key works and may send mail (2 permissions)"),
        other => panic!("{other:?}"),
    }
    for (token, part) in [("SG.read-only", "lacks the Mail Send permission"), ("SG.wrong", "authorization required")] {
        match c.test_connection(&with(token)).await {
            TestOutcome::Failed(e) => {
                assert_eq!(e.class(), ErrorClass::Auth, "{e}");
                assert!(e.message().contains(part), "{e}");
            }
            other => panic!("{other:?}"),
        }
    }
}
