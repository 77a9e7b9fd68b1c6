//! `slack.post_message` against a local server on 127.0.0.1:0 that answers like Slack
//! (recorded answers), through the erased action the runner calls.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

use enlace_core::{ActionContext, ConnectorError, Credentials, ErrorClass, Idempotency, Secret};

use crate::connector_at;

const TOKEN: &str = "xoxb-test-1234567890";

/// What the server answers, and what it received.
#[derive(Clone)]
struct Slack {
    answer: Arc<dyn Fn() -> Response + Send + Sync>,
    seen: Arc<Mutex<Vec<(HeaderMap, String)>>>,
}

async fn chat_post_message(State(s): State<Slack>, headers: HeaderMap, body: String) -> Response {
    s.seen.lock().unwrap().push((headers, body));
    (s.answer)()
}

async fn serve(answer: impl Fn() -> Response + Send + Sync + 'static) -> (SocketAddr, Slack) {
    let state = Slack { answer: Arc::new(answer), seen: Arc::default() };
    let app = Router::new().route("/api/chat.postMessage", post(chat_post_message)).with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, state)
}

fn json_answer(status: u16, headers: &'static [(&'static str, &'static str)], body: Value) -> impl Fn() -> Response + Send + Sync {
    move || {
        let mut r = (StatusCode::from_u16(status).unwrap(), axum::Json(body.clone())).into_response();
        for (k, v) in headers {
            r.headers_mut().insert(*k, v.parse().unwrap());
        }
        r
    }
}

fn ctx() -> ActionContext {
    enlace_kit::testing::ctx(Credentials::Bearer { token: Secret::new(TOKEN) })
}

async fn call(addr: SocketAddr, input: Value) -> Result<Value, ConnectorError> {
    let c = connector_at(&format!("http://{addr}/api"));
    c.action("post_message").expect("registered").call(&ctx(), input).await
}

fn ok_body() -> Value {
    json!({
        "ok": true,
        "channel": "C0123456789",
        "ts": "1776159000.123456",
        "message": {"type": "message", "text": "Hi *Ana*", "thread_ts": "1776150000.000100", "ts": "1776159000.123456"}
    })
}

fn form(body: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(body.as_bytes()).into_owned().collect()
}

#[tokio::test]
async fn posts_a_form_with_bearer_token_and_reads_the_answer() {
    let (addr, slack) = serve(json_answer(200, &[], ok_body())).await;
    let blocks = json!([{"type": "section", "text": {"type": "mrkdwn", "text": "Hi *Ana*"}}]);
    let out = call(
        addr,
        json!({"channel": "#marketing", "text": "Hi *Ana* & co", "blocks": blocks, "thread_ts": "1776150000.000100",
               "reply_broadcast": true, "unfurl_links": false, "unfurl_media": true}),
    )
    .await
    .expect("posted");
    assert_eq!(out, json!({"channel": "C0123456789", "ts": "1776159000.123456", "thread_ts": "1776150000.000100", "text": "Hi *Ana*"}));
    let seen = slack.seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    let (headers, body) = &seen[0];
    assert_eq!(headers["authorization"], format!("Bearer {TOKEN}"));
    assert_eq!(headers["content-type"], "application/x-www-form-urlencoded");
    let sent = form(body);
    let get = |k: &str| sent.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(get("channel"), Some("#marketing"));
    assert_eq!(get("text"), Some("Hi *Ana* & co"));
    assert_eq!(serde_json::from_str::<Value>(get("blocks").unwrap()).unwrap(), blocks, "blocks go as a JSON text");
    assert_eq!(get("thread_ts"), Some("1776150000.000100"));
    assert_eq!(get("reply_broadcast"), Some("true"));
    assert_eq!(get("unfurl_links"), Some("false"));
    assert_eq!(get("unfurl_media"), Some("true"));
}

#[tokio::test]
async fn a_429_is_rate_limited_with_the_wait_slack_asked_for() {
    let (addr, _) = serve(json_answer(429, &[("retry-after", "30")], json!({"ok": false, "error": "ratelimited"}))).await;
    let err = call(addr, json!({"channel": "C1", "text": "hi"})).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::RateLimited, "{err}");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(30)));
    assert!(err.message().contains("ratelimited"), "{err}");
}

#[tokio::test]
async fn ok_false_bodies_are_classified_by_code() {
    // (code, class, path of the bad field)
    let table = [
        ("invalid_auth", ErrorClass::Auth, None),
        ("token_revoked", ErrorClass::Auth, None),
        ("not_authed", ErrorClass::Auth, None),
        ("missing_scope", ErrorClass::Auth, None),
        ("ratelimited", ErrorClass::RateLimited, None),
        ("channel_not_found", ErrorClass::BadInput, Some("channel")),
        ("not_in_channel", ErrorClass::BadInput, Some("channel")),
        ("invalid_blocks", ErrorClass::BadInput, Some("blocks")),
        ("msg_too_long", ErrorClass::BadInput, Some("text")),
        ("thread_not_found", ErrorClass::BadInput, Some("thread_ts")),
        ("internal_error", ErrorClass::MaybeDelivered, None),
        ("service_unavailable", ErrorClass::Transient, None),
        ("too_many_attachments", ErrorClass::Permanent, None),
    ];
    for (code, class, path) in table {
        let body = json!({"ok": false, "error": code, "response_metadata": {"messages": ["[ERROR] missing required field: text [json-pointer:/blocks/0/text]"]}});
        let (addr, slack) = serve(json_answer(200, &[], body)).await;
        let err = call(addr, json!({"channel": "C1", "text": "hi"})).await.unwrap_err();
        assert_eq!(err.class(), class, "{code}: {err}");
        assert!(err.message().contains(code), "{code}: {err}");
        if let Some(path) = path {
            assert!(matches!(&err, ConnectorError::BadInput { path: p, .. } if p == path), "{code}: {err:?}");
        }
        if code == "invalid_blocks" {
            assert!(err.message().contains("json-pointer:/blocks/0/text"), "Slack's explanation is kept: {err}");
        }
        assert_eq!(slack.seen.lock().unwrap().len(), 1, "{code}: one call, no retry inside the connector");
    }
}

#[tokio::test]
async fn http_errors_are_classified() {
    let (addr, _) = serve(json_answer(401, &[], json!({"ok": false, "error": "invalid_auth"}))).await;
    let err = call(addr, json!({"channel": "C1", "text": "hi"})).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Auth, "{err}");
    assert!(!err.message().contains(TOKEN), "the token never shows in an error: {err}");

    let (addr, _) = serve(json_answer(503, &[], json!({"ok": false, "error": "service_unavailable"}))).await;
    assert_eq!(call(addr, json!({"channel": "C1", "text": "hi"})).await.unwrap_err().class(), ErrorClass::Transient);

    // A 4xx other than 401/403/429 fails for good (the runner does not retry Permanent).
    let (addr, slack) = serve(json_answer(400, &[], json!({"ok": false, "error": "invalid_arg_name"}))).await;
    let err = call(addr, json!({"channel": "C1", "text": "hi"})).await.unwrap_err();
    assert_eq!(err, ConnectorError::Permanent { message: "HTTP 400 Bad Request: invalid_arg_name".into(), status: Some(400) });
    assert_eq!(slack.seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_malformed_answer_is_a_clear_maybe_delivered() {
    let (addr, _) = serve(|| (StatusCode::OK, [("content-type", "text/html")], "<html>upstream proxy</html>").into_response()).await;
    let err = call(addr, json!({"channel": "C1", "text": "hi"})).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::MaybeDelivered, "{err}");
    assert!(err.message().contains("not a JSON object") && err.message().contains("upstream proxy"), "{err}");

    let (addr, _) = serve(json_answer(200, &[], json!({"ok": true}))).await;
    let err = call(addr, json!({"channel": "C1", "text": "hi"})).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Permanent, "{err}");
    assert!(err.message().contains("without the message's `channel` and `ts`"), "{err}");
}

#[tokio::test]
async fn bad_input_names_the_field_and_sends_nothing() {
    let (addr, slack) = serve(json_answer(200, &[], ok_body())).await;
    let cases = [
        (json!({"channel": " ", "text": "hi"}), "channel", "is empty"),
        (json!({"channel": "C1"}), "text", "`text`, `blocks`, or both"),
        (json!({"channel": "C1", "text": "x".repeat(40_001)}), "text", "at most 40000"),
        (json!({"channel": "C1", "blocks": [{"text": "no type"}]}), "blocks[0].type", "is missing"),
        (json!({"channel": "C1", "blocks": ["section"]}), "blocks[0]", "block object"),
        (json!({"channel": "C1", "text": "hi", "thread_ts": "yesterday"}), "thread_ts", "1712345678.123456"),
        (json!({"channel": "C1", "text": "hi", "reply_broadcast": true}), "reply_broadcast", "goes with `thread_ts`"),
        (json!({"channel": "C1", "text": "hi", "as_user": true}), "as_user", "unknown field `as_user`"),
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
    let too_many: Vec<Value> = (0..51).map(|_| json!({"type": "divider"})).collect();
    let err = call(addr, json!({"channel": "C1", "blocks": too_many})).await.unwrap_err();
    assert!(err.message().contains("at most 50"), "{err}");
    assert!(slack.seen.lock().unwrap().is_empty(), "nothing was sent");
}

#[test]
fn manifest_declares_bearer_rate_limit_and_no_idempotency() {
    let c = crate::connector();
    let m = &c.manifest;
    assert_eq!(m.id, "slack");
    assert_eq!(m.auth, enlace_core::AuthKind::Bearer);
    assert_eq!(m.rate_limit, Some(enlace_core::RateLimit { calls: 1, per: Duration::from_secs(1) }));
    let a = m.action("post_message").unwrap();
    assert_eq!(a.idempotency, Idempotency::None);
    assert_eq!(a.input_schema["required"], json!(["channel"]));
    for (name, prop) in a.input_schema["properties"].as_object().unwrap() {
        assert!(prop["description"].as_str().is_some_and(|d| d.len() > 20), "{name} is documented");
    }
    for key in ["channel", "ts", "text"] {
        assert!(a.sample.get(key).is_some(), "the sample has {key}");
        assert!(a.output_schema["properties"].get(key).is_some(), "the output schema has {key}");
    }
}

#[tokio::test]
async fn the_connection_test_calls_auth_test_and_changes_nothing() {
    use enlace_core::{ConnectionContext, TestOutcome};
    let app = Router::new().route(
        "/api/auth.test",
        axum::routing::get(|headers: HeaderMap| async move {
            if headers.get("authorization").is_some_and(|v| v == format!("Bearer {TOKEN}").as_str()) {
                axum::Json(json!({"ok": true, "team": "Acme", "team_id": "T1", "user": "enlace", "user_id": "U1", "url": "https://acme.slack.com/"}))
            } else {
                axum::Json(json!({"ok": false, "error": "invalid_auth"}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let c = connector_at(&format!("http://{addr}/api"));
    assert!(c.manifest.connection_test);
    let with = |token: &str| ConnectionContext {
        connection_id: "team-slack".into(),
        credentials: Credentials::Bearer { token: Secret::new(token) },
        http: ctx().http,
        timeout: Duration::from_secs(5),
    };
    match c.test_connection(&with(TOKEN)).await {
        TestOutcome::Ok(m) => assert_eq!(m, "the token works: app user `enlace` in the workspace `Acme` (https://acme.slack.com/)"),
        other => panic!("{other:?}"),
    }
    match c.test_connection(&with("xoxb-revoked")).await {
        TestOutcome::Failed(e) => {
            assert_eq!(e.class(), ErrorClass::Auth, "{e}");
            assert!(e.message().contains("invalid_auth") && !e.message().contains("xoxb-revoked"), "{e}");
        }
        other => panic!("{other:?}"),
    }
}
