//! `twilio.send_sms` against a local server on 127.0.0.1:0 that answers like Twilio
//! (recorded answers), through the erased action the runner calls.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

use enlace_core::{ActionContext, ConnectorError, Credentials, ErrorClass, Idempotency, Secret};

use crate::connector_at;

const SID: &str = "AC0123456789abcdef0123456789abcdef";
const TOKEN: &str = "auth-token-5ecr3t";

#[derive(Clone)]
struct Twilio {
    answer: Arc<dyn Fn() -> Response + Send + Sync>,
    seen: Arc<Mutex<Vec<(String, HeaderMap, String)>>>,
    delay: Arc<Mutex<Duration>>,
}

async fn messages(State(s): State<Twilio>, Path(account): Path<String>, headers: HeaderMap, body: String) -> Response {
    s.seen.lock().unwrap().push((account, headers, body));
    let delay = *s.delay.lock().unwrap();
    tokio::time::sleep(delay).await;
    (s.answer)()
}

async fn serve(answer: impl Fn() -> Response + Send + Sync + 'static) -> (SocketAddr, Twilio) {
    let state = Twilio { answer: Arc::new(answer), seen: Arc::default(), delay: Arc::default() };
    let app = Router::new().route("/2010-04-01/Accounts/{account}/Messages.json", post(messages)).with_state(state.clone());
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

fn error_answer(status: u16, code: u64, message: &'static str) -> impl Fn() -> Response + Send + Sync {
    json_answer(
        status,
        &[],
        json!({"code": code, "message": message, "more_info": format!("https://www.twilio.com/docs/errors/{code}"), "status": status}),
    )
}

fn ctx_with(credentials: Credentials) -> ActionContext {
    enlace_kit::testing::ctx(credentials)
}

fn basic() -> Credentials {
    Credentials::Basic { username: SID.into(), password: Secret::new(TOKEN) }
}

async fn call_with(addr: SocketAddr, credentials: Credentials, input: Value) -> Result<Value, ConnectorError> {
    let c = connector_at(&format!("http://{addr}"));
    c.action("send_sms").expect("registered").call(&ctx_with(credentials), input).await
}

async fn call(addr: SocketAddr, input: Value) -> Result<Value, ConnectorError> {
    call_with(addr, basic(), input).await
}

fn created() -> Value {
    json!({
        "account_sid": SID, "api_version": "2010-04-01", "body": "Hi Ana", "date_created": "Tue, 14 Apr 2026 09:30:00 +0000",
        "direction": "outbound-api", "error_code": null, "from": "+14155550100", "num_media": "0", "num_segments": "1",
        "sid": "SM1f0e8ae6ade43cb3c0ce4525424e404f", "status": "queued", "to": "+14155552671",
        "uri": format!("/2010-04-01/Accounts/{SID}/Messages/SM1f0e8ae6ade43cb3c0ce4525424e404f.json")
    })
}

fn form(body: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(body.as_bytes()).into_owned().collect()
}

#[tokio::test]
async fn sends_a_form_with_basic_auth_and_reads_the_message() {
    let (addr, twilio) = serve(json_answer(201, &[], created())).await;
    let out = call(
        addr,
        json!({"to": " +1 415 555 2671 ", "from": "+14155550100", "body": "Hi Ana & co",
               "media_url": ["https://example.com/a.png", "https://example.com/b.png"]}),
    )
    .await
    .expect("sent");
    assert_eq!(
        out,
        json!({"sid": "SM1f0e8ae6ade43cb3c0ce4525424e404f", "status": "queued", "to": "+14155552671", "from": "+14155550100",
               "date_created": "2026-04-14T09:30:00+00:00"})
    );
    let seen = twilio.seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    let (account, headers, body) = &seen[0];
    assert_eq!(account, SID);
    let basic = headers["authorization"].to_str().unwrap().strip_prefix("Basic ").unwrap().to_string();
    assert_eq!(basic, "QUMwMTIzNDU2Nzg5YWJjZGVmMDEyMzQ1Njc4OWFiY2RlZjphdXRoLXRva2VuLTVlY3IzdA==", "base64 of sid:token");
    assert_eq!(headers["content-type"], "application/x-www-form-urlencoded");
    assert_eq!(
        form(body),
        [
            ("To", "+14155552671"),
            ("From", "+14155550100"),
            ("Body", "Hi Ana & co"),
            ("MediaUrl", "https://example.com/a.png"),
            ("MediaUrl", "https://example.com/b.png")
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
    );
}

#[tokio::test]
async fn a_messaging_service_and_media_alone() {
    let mut answer = created();
    answer["from"] = Value::Null;
    answer["status"] = json!("accepted");
    let (addr, twilio) = serve(json_answer(201, &[], answer)).await;
    let out = call(
        addr,
        json!({"to": "+447911123456", "messaging_service_sid": "MG0123456789abcdef0123456789abcdef", "media_url": "https://example.com/a.png"}),
    )
    .await
    .unwrap();
    assert_eq!(out["status"], "accepted");
    assert!(out.get("from").is_none(), "no sender yet: {out}");
    let sent = form(&twilio.seen.lock().unwrap()[0].2);
    assert_eq!(
        sent,
        [("To", "+447911123456"), ("MessagingServiceSid", "MG0123456789abcdef0123456789abcdef"), ("MediaUrl", "https://example.com/a.png")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
    );
}

#[tokio::test]
async fn error_answers_are_classified() {
    let input = json!({"to": "+14155552671", "from": "+14155550100", "body": "hi"});

    let (addr, _) =
        serve(json_answer(429, &[("retry-after", "12")], json!({"code": 20429, "message": "Too Many Requests", "status": 429}))).await;
    let err = call(addr, input.clone()).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::RateLimited, "{err}");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(12)));

    let (addr, _) = serve(error_answer(401, 20003, "Authenticate")).await;
    let err = call(addr, input.clone()).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Auth, "{err}");
    assert!(err.message().contains("20003") && err.message().contains("Auth Token"), "{err}");
    assert!(!err.message().contains(TOKEN), "{err}");

    let (addr, _) = serve(error_answer(503, 20500, "Service unavailable")).await;
    assert_eq!(call(addr, input.clone()).await.unwrap_err().class(), ErrorClass::Transient);

    // 4xx codes that name a field, not retried (one call each).
    for (code, field) in
        [(21211, "to"), (21610, "to"), (21606, "from"), (21617, "body"), (21620, "media_url"), (21703, "messaging_service_sid")]
    {
        let (addr, twilio) = serve(error_answer(400, code, "The 'To' number +14155552671 is not a valid phone number.")).await;
        let err = call(addr, input.clone()).await.unwrap_err();
        assert!(matches!(&err, ConnectorError::BadInput { path, .. } if path == field), "{code}: {err:?}");
        assert!(err.message().contains(&format!("Twilio error {code}")), "{err}");
        assert!(err.message().contains(&format!("https://www.twilio.com/docs/errors/{code}")), "more_info is kept: {err}");
        assert_eq!(twilio.seen.lock().unwrap().len(), 1);
    }

    // Another 4xx: permanent, with Twilio's message and code.
    let (addr, _) = serve(error_answer(400, 30007, "Message filtered")).await;
    let err = call(addr, input.clone()).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Permanent, "{err}");
    assert!(err.message().contains("Message filtered") && err.message().contains("Twilio error 30007"), "{err}");
}

#[tokio::test]
async fn a_malformed_answer_is_a_clear_maybe_delivered() {
    let input = json!({"to": "+14155552671", "from": "+14155550100", "body": "hi"});
    let (addr, _) = serve(|| (StatusCode::CREATED, [("content-type", "text/html")], "<html>gateway</html>").into_response()).await;
    let err = call(addr, input.clone()).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::MaybeDelivered, "{err}");
    assert!(err.message().contains("not a JSON object") && err.message().contains("gateway"), "{err}");

    let (addr, _) = serve(json_answer(201, &[], json!({"status": "queued"}))).await;
    let err = call(addr, input).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::MaybeDelivered, "{err}");
    assert!(err.message().contains("without the message's `sid`"), "{err}");
}

#[tokio::test]
async fn bad_input_names_the_field_and_sends_nothing() {
    let (addr, twilio) = serve(json_answer(201, &[], created())).await;
    let ok = json!({"to": "+14155552671", "from": "+14155550100", "body": "hi"});
    let with = |k: &str, v: Value| {
        let mut i = ok.clone();
        if v.is_null() {
            i.as_object_mut().unwrap().remove(k);
        } else {
            i[k] = v;
        }
        i
    };
    let cases = [
        (with("to", json!("4155552671")), "to", "E.164 form"),
        (with("to", json!("+1415555")), "to", "like +14155552671"),
        (with("to", json!("+1 (415) call-me")), "to", "E.164"),
        (with("from", Value::Null), "from", "give the sender"),
        (with("messaging_service_sid", json!("MG0123456789abcdef0123456789abcdef")), "from", "not both"),
        (with("from", json!("Way Too Long Sender")), "from", "alphanumeric sender ID"),
        (with("from", json!("+1999")), "from", "E.164"),
        (with("body", Value::Null), "body", "`body`, `media_url`, or both"),
        (with("body", json!("x".repeat(1601))), "body", "at most 1600"),
        (with("media_url", json!(["https://example.com/a.png", "ftp://example.com/b"])), "media_url[1]", "http or https"),
        (with("media_url", json!(vec!["https://example.com/a.png"; 11])), "media_url", "at most 10"),
        (with("status_callback", json!("https://example.com")), "status_callback", "unknown field `status_callback`"),
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
    // A messaging service SID that is not one.
    let err = call(addr, json!({"to": "+14155552671", "messaging_service_sid": "MG123", "body": "hi"})).await.unwrap_err();
    assert!(matches!(&err, ConnectorError::BadInput { path, .. } if path == "messaging_service_sid"), "{err:?}");
    // An alphanumeric sender is fine.
    call(addr, with("from", json!("ACME Shop"))).await.expect("alphanumeric sender");
    // A connection whose username is not an Account SID: an auth error saying what to fix.
    let err = call_with(addr, Credentials::Basic { username: "ana@example.com".into(), password: Secret::new(TOKEN) }, ok.clone())
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Auth);
    assert!(err.message().contains("Account SID"), "{err}");
    assert_eq!(twilio.seen.lock().unwrap().len(), 1, "only the valid alphanumeric-sender call was sent");
}

#[test]
fn manifest_declares_basic_auth_rate_limit_and_no_idempotency() {
    let c = crate::connector();
    let m = &c.manifest;
    assert_eq!(m.id, "twilio");
    assert_eq!(m.auth, enlace_core::AuthKind::Basic);
    assert_eq!(m.rate_limit, Some(enlace_core::RateLimit { calls: 10, per: Duration::from_secs(1) }));
    let a = m.action("send_sms").unwrap();
    assert_eq!(a.idempotency, Idempotency::None, "a timeout after sending is maybe delivered, never resent blindly");
    assert_eq!(a.input_schema["required"], json!(["to"]));
    for (name, prop) in a.input_schema["properties"].as_object().unwrap() {
        assert!(prop["description"].as_str().is_some_and(|d| d.len() > 20), "{name} is documented");
    }
    for key in ["sid", "status", "to", "from", "date_created"] {
        assert!(a.sample.get(key).is_some(), "the sample has {key}");
        assert!(a.output_schema["properties"].get(key).is_some(), "the output schema has {key}");
    }
}

#[tokio::test]
async fn a_timeout_after_sending_is_maybe_delivered_not_retried() {
    let (addr, twilio) = serve(json_answer(201, &[], created())).await;
    *twilio.delay.lock().unwrap() = Duration::from_millis(1500);
    let mut ctx = ctx_with(basic());
    ctx.timeout = Duration::from_millis(200);
    let c = connector_at(&format!("http://{addr}"));
    let action = c.action("send_sms").unwrap();
    let input = json!({"to": "+14155552671", "from": "+14155550100", "body": "hi"});
    assert!(!action.idempotent_for(&input), "the runner must not resend a maybe-delivered SMS");
    let err = action.call(&ctx, input).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::MaybeDelivered, "{err}");
    assert_eq!(twilio.seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn the_connection_test_reads_the_account_and_never_shows_its_token() {
    use enlace_core::{ConnectionContext, TestOutcome};
    let app = Router::new().route(
        "/2010-04-01/Accounts/{file}",
        axum::routing::get(|Path(file): Path<String>, headers: HeaderMap| async move {
            let good = format!("Basic {}", "QUMwMTIzNDU2Nzg5YWJjZGVmMDEyMzQ1Njc4OWFiY2RlZjphdXRoLXRva2VuLTVlY3IzdA==");
            if file == format!("{SID}.json") && headers.get("authorization").is_some_and(|v| v == good.as_str()) {
                (StatusCode::OK, axum::Json(json!({"sid": SID, "friendly_name": "Acme Marketing", "status": "active", "auth_token": TOKEN})))
            } else {
                (
                    StatusCode::UNAUTHORIZED,
                    axum::Json(json!({"code": 20003, "message": "Authenticate", "more_info": "https://www.twilio.com/docs/errors/20003", "status": 401})),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let c = connector_at(&format!("http://{addr}"));
    assert!(c.manifest.connection_test);
    let with = |password: &str| ConnectionContext {
        connection_id: "twilio-main".into(),
        credentials: Credentials::Basic { username: SID.into(), password: Secret::new(password) },
        http: ctx_with(basic()).http,
        timeout: Duration::from_secs(5),
    };
    match c.test_connection(&with(TOKEN)).await {
        TestOutcome::Ok(m) => {
            assert_eq!(m, "the Account SID and Auth Token work: account `Acme Marketing` (active)");
            assert!(!m.contains(TOKEN));
        }
        other => panic!("{other:?}"),
    }
    match c.test_connection(&with("wrong-token")).await {
        TestOutcome::Failed(e) => {
            assert_eq!(e.class(), ErrorClass::Auth, "{e}");
            assert!(e.message().contains("20003"), "{e}");
        }
        other => panic!("{other:?}"),
    }
}
