//! The `hubspot` actions, trigger and connection test against a local server on 127.0.0.1:0
//! that answers like HubSpot, with answers written from HubSpot's public CRM v3 documentation
//! (no API description of HubSpot may be kept), through the erased forms the runner calls.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat};
use serde_json::{Value, json};

use enlace_core::http::HttpTransport;
use enlace_core::trigger::PollPage;
use enlace_core::trigger::PolledItem;
use enlace_core::{ActionContext, Connector, ConnectorError, Credentials, ErrorClass, Idempotency, Secret};
use enlace_kit::{ReqwestTransport, TransportConfig};

const TOKEN: &str = "pat-na1-00000000-1111-2222-3333-444444444444";

/// One request the server saw: method, path and query, headers, JSON body.
type Seen = (Method, String, HeaderMap, Value);
type Answer = Arc<dyn Fn(&Method, &str, &Value) -> Response + Send + Sync>;

#[derive(Clone)]
struct HubSpot {
    answer: Answer,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl HubSpot {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
    fn bodies(&self) -> Vec<Value> {
        self.seen().into_iter().map(|s| s.3).collect()
    }
}

async fn any(State(s): State<HubSpot>, method: Method, uri: Uri, headers: HeaderMap, body: String) -> Response {
    let body: Value = if body.is_empty() { Value::Null } else { serde_json::from_str(&body).expect("the connector sends JSON") };
    let path = uri.path_and_query().map(|p| p.to_string()).unwrap_or_default();
    s.seen.lock().unwrap().push((method.clone(), path.clone(), headers, body.clone()));
    (s.answer)(&method, &path, &body)
}

async fn serve(answer: impl Fn(&Method, &str, &Value) -> Response + Send + Sync + 'static) -> (SocketAddr, HubSpot) {
    let state = HubSpot { answer: Arc::new(answer), seen: Arc::default() };
    let app = Router::new().fallback(any).with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, state)
}

fn reply(status: u16, headers: &[(&str, &str)], body: Value) -> Response {
    let mut r = (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response();
    for (k, v) in headers {
        r.headers_mut().insert(axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
    }
    r
}

fn fixed(status: u16, headers: &'static [(&'static str, &'static str)], body: Value) -> impl Fn(&Method, &str, &Value) -> Response {
    move |_: &Method, _: &str, _: &Value| reply(status, headers, body.clone())
}

fn transport() -> Arc<dyn HttpTransport> {
    Arc::new(ReqwestTransport::new(TransportConfig { allow_private_networks: true, ..TransportConfig::default() }).unwrap())
}

fn ctx() -> ActionContext {
    ActionContext {
        run_id: "run_1".into(),
        step_key: "crm".into(),
        attempt: 1,
        idempotency_key: "run_1:crm".into(),
        credentials: Credentials::OAuth2 { access_token: Secret::new(TOKEN) },
        http: transport(),
        timeout: Duration::from_secs(10),
        extensions: Default::default(),
    }
}

fn connector(addr: SocketAddr) -> Connector {
    crate::connector_at(&format!("http://{addr}"))
}

async fn call(addr: SocketAddr, action: &str, input: Value) -> Result<Value, ConnectorError> {
    connector(addr).action(action).expect("registered").call(&ctx(), input).await
}

fn iso(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms).unwrap().to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn bad_input(err: &ConnectorError) -> (&str, &str) {
    match err {
        ConnectorError::BadInput { path, message } => (path.as_str(), message.as_str()),
        other => panic!("expected bad input, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Writes

/// A batch upsert answer as HubSpot documents it.
fn upsert_result(id: &str, email: &str, new: bool, trace: &str) -> Value {
    json!({
        "id": id, "new": new, "objectWriteTraceId": trace,
        "properties": {"email": email, "firstname": "Ana", "createdate": "2026-03-02T09:15:22.481Z",
                       "lastmodifieddate": "2026-03-04T16:40:03.120Z", "hs_object_id": id},
        "createdAt": "2026-03-02T09:15:22.481Z", "updatedAt": "2026-03-04T16:40:03.120Z", "archived": false
    })
}

#[tokio::test]
async fn upsert_contact_sends_one_batch_input_keyed_by_email() {
    let (addr, hs) = serve(fixed(
        200,
        &[("x-hubspot-ratelimit-max", "100"), ("x-hubspot-ratelimit-remaining", "99")],
        json!({"status": "COMPLETE", "results": [upsert_result("12345", "ana@example.com", true, "0")],
               "startedAt": "2026-03-04T16:40:03.000Z", "completedAt": "2026-03-04T16:40:03.200Z"}),
    ))
    .await;
    let out = call(
        addr,
        "upsert_contact",
        json!({"email": " Ana@Example.com ", "properties": {"firstname": "Ana", "hs_lead_score": 42, "newsletter": true,
               "interests": ["webinars", "pricing"], "phone": null}}),
    )
    .await
    .expect("upserted");
    assert_eq!(out["id"], "12345");
    assert_eq!(out["email"], "ana@example.com");
    assert_eq!(out["new"], true);
    assert_eq!(out["properties"]["hs_object_id"], "12345");

    let seen = hs.seen();
    assert_eq!(seen.len(), 1);
    let (method, path, headers, body) = &seen[0];
    assert_eq!((method, path.as_str()), (&Method::POST, "/crm/v3/objects/contacts/batch/upsert"));
    assert_eq!(headers["authorization"], format!("Bearer {TOKEN}"));
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(
        body,
        &json!({"inputs": [{"idProperty": "email", "id": "ana@example.com", "objectWriteTraceId": "0",
                "properties": {"firstname": "Ana", "hs_lead_score": "42", "newsletter": "true",
                               "interests": "webinars;pricing", "phone": ""}}]}),
        "values go as text, lists as `a;b`, null clears"
    );
}

#[tokio::test]
async fn upsert_contacts_lists_created_updated_and_a_207_partial_failure() {
    let (addr, _) = serve(fixed(
        207,
        &[],
        json!({
            "status": "COMPLETE",
            "results": [upsert_result("2", "ben@example.com", false, "2"), upsert_result("1", "ana@example.com", true, "0")],
            "numErrors": 1,
            "errors": [{
                "status": "error", "category": "VALIDATION_ERROR",
                "message": "Property values were not valid: [{\"isValid\":false,\"message\":\"Property \\\"favorite_food\\\" does not exist\",\"error\":\"PROPERTY_DOESNT_EXIST\",\"name\":\"favorite_food\"}]",
                "context": {"objectWriteTraceId": ["1"]}
            }]
        }),
    ))
    .await;
    let out = call(
        addr,
        "upsert_contacts",
        json!({"contacts": [
            {"email": "ana@example.com", "properties": {"firstname": "Ana"}},
            {"email": "cy@example.com", "properties": {"favorite_food": "tacos"}},
            {"email": "ben@example.com", "properties": {"lifecyclestage": "customer"}}
        ]}),
    )
    .await
    .expect("a partial batch is not a failed step");
    assert_eq!((out["created"].as_u64(), out["updated"].as_u64()), (Some(1), Some(1)));
    let ids: Vec<&str> = out["contacts"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["1", "2"], "in the order of the inputs");
    assert_eq!(out["contacts"][1]["index"], 2);
    assert_eq!(out["contacts"][1]["new"], false);
    let failed = &out["failed"];
    assert_eq!(failed.as_array().unwrap().len(), 1);
    assert_eq!(failed[0]["index"], 1);
    assert_eq!(failed[0]["email"], "cy@example.com");
    assert_eq!(failed[0]["category"], "VALIDATION_ERROR");
    assert_eq!(failed[0]["property"], "favorite_food");
    assert!(failed[0]["message"].as_str().unwrap().contains("does not exist"), "{failed}");
}

#[tokio::test]
async fn a_batch_where_every_input_failed_fails_the_step_on_the_first_property() {
    let (addr, hs) = serve(fixed(
        207,
        &[],
        json!({"status": "COMPLETE", "results": [], "numErrors": 2, "errors": [
            {"status": "error", "category": "VALIDATION_ERROR", "message": "Property \"favorite_food\" does not exist",
             "errors": [{"message": "Property \"favorite_food\" does not exist", "code": "PROPERTY_DOESNT_EXIST",
                         "context": {"propertyName": ["favorite_food"]}}],
             "context": {"objectWriteTraceId": ["1"]}},
            {"status": "error", "category": "VALIDATION_ERROR", "message": "Property \"favorite_food\" does not exist",
             "context": {"objectWriteTraceId": ["0"], "propertyName": ["favorite_food"]}}
        ]}),
    ))
    .await;
    let input = json!({"contacts": [
        {"email": "ana@example.com", "properties": {"favorite_food": "tacos"}},
        {"email": "ben@example.com", "properties": {"favorite_food": "pizza"}}
    ]});
    let err = call(addr, "upsert_contacts", input).await.unwrap_err();
    let (path, message) = bad_input(&err);
    assert_eq!(path, "contacts[1].properties.favorite_food");
    assert!(message.starts_with("HubSpot refused all 2 contacts; the first: HubSpot refused the property `favorite_food`"), "{message}");
    assert!(message.contains("internal name"), "{message}");
    assert_eq!(hs.seen().len(), 1, "not retried inside the connector");
}

#[tokio::test]
async fn a_400_naming_a_property_is_bad_input_on_it_and_sent_once() {
    // The single-object validation answer: the details are JSON inside the message.
    let body = json!({
        "status": "error",
        "message": "Property values were not valid: [{\"isValid\":false,\"message\":\"Property \\\"favorite_food\\\" does not exist\",\"error\":\"PROPERTY_DOESNT_EXIST\",\"name\":\"favorite_food\",\"localizedErrorMessage\":\"Property \\\"favorite_food\\\" does not exist\"}]",
        "correlationId": "aeb5f871-7f07-4993-9211-075dc63e7cbf",
        "category": "VALIDATION_ERROR"
    });
    let (addr, hs) = serve(fixed(400, &[], body.clone())).await;
    let err =
        call(addr, "upsert_contact", json!({"email": "ana@example.com", "properties": {"favorite_food": "tacos"}})).await.unwrap_err();
    let (path, message) = bad_input(&err);
    assert_eq!(path, "properties.favorite_food");
    assert!(message.contains("PROPERTY_DOESNT_EXIST") && message.contains("aeb5f871-7f07-4993-9211-075dc63e7cbf"), "{message}");
    assert_eq!(hs.seen().len(), 1);

    let (addr, _) = serve(fixed(400, &[], body)).await;
    let err = call(
        addr,
        "update_contacts",
        json!({"contacts": [{"id": "1", "properties": {"firstname": "Ana"}}, {"id": "2", "properties": {"favorite_food": "x"}}]}),
    )
    .await
    .unwrap_err();
    assert_eq!(bad_input(&err).0, "contacts[1].properties.favorite_food");

    // The `errors[].context.propertyName` form, in a search.
    let (addr, _) = serve(fixed(
        400,
        &[],
        json!({"status": "error", "message": "There was a problem with the request.", "category": "VALIDATION_ERROR",
               "errors": [{"message": "Unable to find property favourite_food", "code": "PROPERTY_DOESNT_EXIST",
                           "context": {"propertyName": ["favourite_food"]}}]}),
    ))
    .await;
    let err =
        call(addr, "search_contacts", json!({"filters": [{"property": "favourite_food", "operator": "HAS_PROPERTY"}]})).await.unwrap_err();
    assert_eq!(bad_input(&err).0, "filters[0].property");

    // A 400 that names nothing is permanent, with HubSpot's words.
    let (addr, _) =
        serve(fixed(400, &[], json!({"status": "error", "message": "Invalid input JSON", "category": "VALIDATION_ERROR"}))).await;
    let err = call(addr, "upsert_contact", json!({"email": "ana@example.com"})).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Permanent, "{err}");
    assert!(err.message().contains("Invalid input JSON"), "{err}");
}

#[tokio::test]
async fn create_contacts_sends_properties_and_reads_conflicts() {
    let (addr, hs) = serve(fixed(
        201,
        &[],
        json!({"status": "COMPLETE", "results": [{"id": "501", "objectWriteTraceId": "0",
               "properties": {"email": "ana@example.com", "firstname": "Ana", "hs_object_id": "501"},
               "createdAt": "2026-03-04T16:40:03.120Z", "updatedAt": "2026-03-04T16:40:03.120Z", "archived": false}]}),
    ))
    .await;
    let out = call(addr, "create_contacts", json!({"contacts": [{"properties": {"email": "Ana@example.com", "firstname": "Ana"}}]}))
        .await
        .unwrap();
    assert_eq!((out["created"].as_u64(), out["contacts"][0]["id"].as_str()), (Some(1), Some("501")));
    let (method, path, _, body) = &hs.seen()[0];
    assert_eq!((method, path.as_str()), (&Method::POST, "/crm/v3/objects/contacts/batch/create"));
    assert_eq!(body, &json!({"inputs": [{"properties": {"email": "ana@example.com", "firstname": "Ana"}, "objectWriteTraceId": "0"}]}));

    // The whole batch refused: 409 CONFLICT, permanent, with the existing contact's id.
    let (addr, hs) = serve(fixed(
        409,
        &[],
        json!({"status": "error", "message": "Contact already exists. Existing ID: 67890",
               "correlationId": "5f9b7c1e-0000-4000-8000-000000000001", "category": "CONFLICT"}),
    ))
    .await;
    let err = call(addr, "create_contacts", json!({"contacts": [{"properties": {"email": "ben@example.com"}}]})).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Permanent, "{err}");
    assert!(err.message().contains("(ID 67890)") && err.message().contains("upsert_contacts"), "{err}");
    assert_eq!(hs.seen().len(), 1);

    // Multi-status: one created, one conflicting.
    let (addr, _) = serve(fixed(
        207,
        &[],
        json!({"status": "COMPLETE", "numErrors": 1,
               "results": [{"id": "502", "objectWriteTraceId": "1", "properties": {"email": "cy@example.com"}}],
               "errors": [{"status": "error", "category": "CONFLICT", "message": "Contact already exists. Existing ID: 67890",
                           "context": {"objectWriteTraceId": ["0"]}}]}),
    ))
    .await;
    let out = call(
        addr,
        "create_contacts",
        json!({"contacts": [{"properties": {"email": "ben@example.com"}}, {"properties": {"email": "cy@example.com"}}]}),
    )
    .await
    .unwrap();
    assert_eq!(out["failed"][0]["existing_id"], "67890");
    assert_eq!(out["failed"][0]["email"], "ben@example.com");
    assert_eq!(out["contacts"][0]["index"], 1);
}

#[tokio::test]
async fn update_contacts_by_id() {
    let (addr, hs) = serve(fixed(
        200,
        &[],
        json!({"status": "COMPLETE", "results": [{"id": "7", "objectWriteTraceId": "0",
               "properties": {"lifecyclestage": "customer", "hs_object_id": "7"}}]}),
    ))
    .await;
    let out =
        call(addr, "update_contacts", json!({"contacts": [{"id": "7", "properties": {"lifecyclestage": "customer"}}]})).await.unwrap();
    assert_eq!((out["updated"].as_u64(), out["contacts"][0]["index"].as_u64()), (Some(1), Some(0)));
    let (_, path, _, body) = &hs.seen()[0];
    assert_eq!(path, "/crm/v3/objects/contacts/batch/update");
    assert_eq!(body, &json!({"inputs": [{"id": "7", "properties": {"lifecyclestage": "customer"}, "objectWriteTraceId": "0"}]}));
}

#[tokio::test]
async fn bad_input_names_the_field_and_sends_nothing() {
    let (addr, hs) = serve(fixed(200, &[], json!({"results": []}))).await;
    let many: Vec<Value> = (0..101).map(|i| json!({"email": format!("c{i}@example.com")})).collect();
    let cases = [
        ("upsert_contacts", json!({"contacts": many}), "contacts", "at most 100"),
        ("upsert_contacts", json!({"contacts": []}), "contacts", "is empty"),
        ("upsert_contact", json!({"email": "not-an-address"}), "email", "not an email address"),
        ("upsert_contact", json!({"email": "a@example.com", "properties": {"First name": "Ana"}}), "properties.First name", "internal"),
        (
            "upsert_contact",
            json!({"email": "a@example.com", "properties": {"email": "b@example.com"}}),
            "properties.email",
            "update_contacts",
        ),
        ("upsert_contact", json!({"email": "a@example.com", "properties": {"x": {"y": 1}}}), "properties.x", "not an object"),
        (
            "upsert_contacts",
            json!({"contacts": [{"email": "a@example.com"}, {"email": "A@example.com"}]}),
            "contacts[1].email",
            "also contacts[0]",
        ),
        ("create_contacts", json!({"contacts": [{"properties": {"phone": "1"}}]}), "contacts[0].properties", "at least `email`"),
        ("update_contacts", json!({"contacts": [{"id": "abc", "properties": {"a": "b"}}]}), "contacts[0].id", "digits"),
        ("update_contacts", json!({"contacts": [{"id": "1", "properties": {}}]}), "contacts[0].properties", "is empty"),
        (
            "search_contacts",
            json!({"filters": [{"property": "email", "operator": "LIKE", "value": "x"}]}),
            "filters[0].operator",
            "EQ, NEQ",
        ),
        ("search_contacts", json!({"filters": [{"property": "email", "operator": "eq"}]}), "filters[0].value", "takes one `value`"),
        (
            "search_contacts",
            json!({"filters": [{"property": "email", "operator": "IN", "value": "x"}]}),
            "filters[0].values",
            "non-empty list",
        ),
        (
            "search_contacts",
            json!({"filters": [{"property": "email", "operator": "HAS_PROPERTY", "value": "x"}]}),
            "filters[0].value",
            "takes no value",
        ),
        (
            "search_contacts",
            json!({"filters": [{"property": "createdate", "operator": "BETWEEN", "value": "1"}]}),
            "filters[0].high_value",
            "`BETWEEN` takes",
        ),
        ("search_contacts", json!({"limit": 5000}), "limit", "from 1 to 1000"),
        ("search_contacts", json!({"after": "10000"}), "after", "10000 results"),
        ("search_contacts", json!({"sort": {"property": "email", "direction": "down"}}), "sort.direction", "unknown variant"),
        ("upsert_contact", json!({"email": "a@example.com", "tags": ["x"]}), "tags", "unknown field"),
    ];
    for (action, input, want_path, part) in cases {
        let err = call(addr, action, input.clone()).await.unwrap_err();
        let (path, message) = bad_input(&err);
        assert_eq!(path, want_path, "{action} {input}: {err}");
        assert!(message.contains(part), "{action} {input}: `{message}` lacks `{part}`");
    }
    assert!(hs.seen().is_empty(), "nothing was sent");
}

// ---------------------------------------------------------------------------------------------
// Errors every call shares

#[tokio::test]
async fn a_429_with_retry_after_is_rate_limited_for_that_long() {
    let body = json!({"status": "error", "message": "You have reached your ten_secondly_rolling limit.", "errorType": "RATE_LIMIT",
                      "correlationId": "c033cdaa-2c40-4a64-ae48-b4cec88dad24", "policyName": "TEN_SECONDLY_ROLLING"});
    let (addr, _) = serve(fixed(429, &[("retry-after", "7")], body.clone())).await;
    let err = call(addr, "upsert_contact", json!({"email": "ana@example.com"})).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::RateLimited, "{err}");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
    assert!(err.message().contains("ten_secondly_rolling"), "{err}");

    // No Retry-After: the rolling window of the X-HubSpot-RateLimit-* headers.
    let (addr, _) = serve(fixed(
        429,
        &[
            ("x-hubspot-ratelimit-interval-milliseconds", "10000"),
            ("x-hubspot-ratelimit-max", "100"),
            ("x-hubspot-ratelimit-remaining", "0"),
        ],
        body.clone(),
    ))
    .await;
    let err = call(addr, "search_contacts", json!({})).await.unwrap_err();
    let wait = err.retry_after().unwrap();
    assert!(wait > Duration::from_secs(9) && wait <= Duration::from_secs(10), "{wait:?}");
    // Nothing at all: HubSpot's window, 10 s.
    let (addr, _) = serve(fixed(429, &[], body)).await;
    let err = call(addr, "search_contacts", json!({})).await.unwrap_err();
    assert_eq!(err.retry_after(), Some(crate::api::BURST_LIMIT_WAIT));

    // The daily quota: its reset (midnight in the account's time zone) is unknown: an hour.
    let (addr, _) = serve(fixed(
        429,
        &[("x-hubspot-ratelimit-interval-milliseconds", "10000"), ("x-hubspot-ratelimit-remaining", "99")],
        json!({"status": "error", "message": "You have reached your daily limit.", "errorType": "RATE_LIMIT",
               "correlationId": "c033cdaa-2c40-4a64-ae48-b4cec88dad24", "policyName": "DAILY"}),
    ))
    .await;
    let err = call(addr, "upsert_contact", json!({"email": "ana@example.com"})).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::RateLimited);
    assert_eq!(err.retry_after(), Some(Duration::from_secs(3600)));
    assert!(err.message().contains("midnight in the HubSpot account's time zone"), "{err}");
}

#[tokio::test]
async fn a_401_is_auth_with_hubspots_message_and_no_token() {
    let (addr, hs) = serve(fixed(
        401,
        &[],
        json!({"status": "error", "message": "Authentication credentials not found. This API supports OAuth 2.0 authentication.",
               "correlationId": "3d3e35b7-0dae-4b9f-a6e3-9c230cbcf8dd", "category": "INVALID_AUTHENTICATION"}),
    ))
    .await;
    for (action, input) in [
        ("upsert_contact", json!({"email": "ana@example.com"})),
        ("create_contacts", json!({"contacts": [{"properties": {"email": "a@example.com"}}]})),
        ("search_contacts", json!({})),
    ] {
        let err = call(addr, action, input).await.unwrap_err();
        assert_eq!(err.class(), ErrorClass::Auth, "{action}: {err}");
        assert!(err.message().contains("Authentication credentials not found"), "{err}");
        assert!(!err.message().contains(TOKEN) && !format!("{err:?}").contains(TOKEN), "{err:?}");
    }
    assert_eq!(hs.seen().len(), 3);

    let (addr, _) = serve(fixed(
        403,
        &[],
        json!({"status": "error", "message": "This app hasn't been granted all required scopes to make this call.", "category": "MISSING_SCOPES"}),
    ))
    .await;
    let err = call(addr, "search_contacts", json!({})).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Auth);
    assert!(err.message().contains("crm.objects.contacts.read"), "{err}");

    // A step without a connection.
    let mut no_creds = ctx();
    no_creds.credentials = Credentials::None;
    let err = connector(addr).action("search_contacts").unwrap().call(&no_creds, json!({})).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Auth);
}

#[tokio::test]
async fn a_5xx_is_transient() {
    let (addr, _) = serve(fixed(502, &[], json!({"status": "error", "message": "Bad gateway", "category": "INTERNAL_ERROR"}))).await;
    let err = call(addr, "update_contacts", json!({"contacts": [{"id": "1", "properties": {"a": "b"}}]})).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Transient, "{err}");
    assert!(err.message().contains("Bad gateway"), "{err}");
}

#[tokio::test]
async fn a_malformed_answer_is_a_clear_error() {
    let html =
        |_: &Method, _: &str, _: &Value| (StatusCode::OK, [("content-type", "text/html")], "<html>upstream proxy</html>").into_response();
    let (addr, _) = serve(html).await;
    let err = call(addr, "upsert_contact", json!({"email": "ana@example.com"})).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Permanent, "{err}");
    assert!(err.message().contains("without a `results` list") && err.message().contains("upstream proxy"), "{err}");
    // A create may have happened: never resent blindly.
    let err = call(addr, "create_contacts", json!({"contacts": [{"properties": {"email": "a@example.com"}}]})).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::MaybeDelivered, "{err}");
    assert!(err.message().contains("check HubSpot before replaying"), "{err}");
    let err = call(addr, "search_contacts", json!({})).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Permanent, "{err}");
    assert!(err.message().contains("not a JSON object"), "{err}");

    let (addr, _) = serve(fixed(200, &[], json!({"status": "COMPLETE", "results": [{"properties": {}}]}))).await;
    let err = call(addr, "upsert_contact", json!({"email": "ana@example.com"})).await.unwrap_err();
    assert!(err.message().contains("without an `id`"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Search

#[tokio::test]
async fn search_follows_after_in_the_body_up_to_the_limit() {
    let contact = |i: u64| {
        json!({"id": i.to_string(), "properties": {"email": format!("c{i}@example.com"), "hs_object_id": i.to_string()},
                                  "createdAt": "2026-03-02T09:15:22.481Z", "updatedAt": "2026-03-04T16:40:03.120Z", "archived": false})
    };
    let (addr, hs) = serve(move |_: &Method, path: &str, body: &Value| {
        assert_eq!(path, "/crm/v3/objects/contacts/search");
        let after: u64 = body.get("after").and_then(Value::as_str).map_or(0, |a| a.parse().unwrap());
        let limit = body["limit"].as_u64().unwrap();
        let results: Vec<Value> = (after..(after + limit).min(450)).map(contact).collect();
        let mut page = json!({"total": 450, "results": results});
        if after + limit < 450 {
            page["paging"] = json!({"next": {"after": (after + limit).to_string(), "link": "?after=..."}});
        }
        reply(200, &[], page)
    })
    .await;
    let out = call(
        addr,
        "search_contacts",
        json!({"filters": [{"property": "lifecyclestage", "operator": "in", "values": ["lead", "subscriber"]},
                           {"property": "createdate", "operator": "BETWEEN", "value": 1767225600000u64, "high_value": "1769904000000"}],
               "query": "example.com", "properties": ["email", "lifecyclestage"],
               "sort": {"property": "createdate", "direction": "descending"}, "limit": 300}),
    )
    .await
    .unwrap();
    assert_eq!(out["contacts"].as_array().unwrap().len(), 300);
    assert_eq!(out["contacts"][299]["id"], "299");
    assert_eq!(out["contacts"][0]["updated_at"], "2026-03-04T16:40:03.120Z");
    assert_eq!((out["total"].as_u64(), out["next_after"].as_str()), (Some(450), Some("300")));

    let bodies = hs.bodies();
    assert_eq!(bodies.len(), 2, "two pages");
    assert_eq!(
        bodies[0],
        json!({
            "filterGroups": [{"filters": [
                {"propertyName": "lifecyclestage", "operator": "IN", "values": ["lead", "subscriber"]},
                {"propertyName": "createdate", "operator": "BETWEEN", "value": "1767225600000", "highValue": "1769904000000"}
            ]}],
            "query": "example.com", "properties": ["email", "lifecyclestage"],
            "sorts": [{"propertyName": "createdate", "direction": "DESCENDING"}],
            "limit": 200
        })
    );
    assert_eq!((bodies[1]["after"].as_str(), bodies[1]["limit"].as_u64()), (Some("200"), Some(100)), "the cursor goes in the body");
    assert!(hs.seen().iter().all(|(_, path, _, _)| !path.contains('?')), "nothing in the query string");

    // Continuing from next_after reads the rest and ends.
    let out = call(addr, "search_contacts", json!({"after": "300", "limit": 1000})).await.unwrap();
    assert_eq!(out["contacts"].as_array().unwrap().len(), 150);
    assert!(out.get("next_after").is_none(), "{out}");
}

#[tokio::test]
async fn a_429_on_page_two_names_the_page() {
    let (addr, _) = serve(|_: &Method, _: &str, body: &Value| {
        if body.get("after").is_some() {
            return reply(
                429,
                &[("retry-after", "1")],
                json!({"status": "error", "message": "You have reached your secondly limit.", "policyName": "SECONDLY"}),
            );
        }
        reply(200, &[], json!({"total": 3, "results": [{"id": "1", "properties": {}}], "paging": {"next": {"after": "1"}}}))
    })
    .await;
    let err = call(addr, "search_contacts", json!({"limit": 3})).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::RateLimited);
    assert_eq!(err.retry_after(), Some(Duration::from_secs(1)));
    assert!(err.message().starts_with("page 2 of the search: HubSpot answered HTTP 429"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// The connection test

#[tokio::test]
async fn the_connection_test_reads_one_contact() {
    use enlace_core::{ConnectionContext, TestOutcome};
    let (addr, hs) = serve(|_: &Method, _: &str, _: &Value| reply(200, &[], json!({"results": [{"id": "1", "properties": {}}]}))).await;
    let c = connector(addr);
    assert!(c.manifest.connection_test);
    let with = |creds: Credentials| ConnectionContext {
        connection_id: "hubspot-main".into(),
        credentials: creds,
        http: transport(),
        timeout: Duration::from_secs(5),
    };
    match c.test_connection(&with(Credentials::OAuth2 { access_token: Secret::new(TOKEN) })).await {
        TestOutcome::Ok(m) => assert_eq!(m, "Connected: the token can read HubSpot contacts"),
        other => panic!("{other:?}"),
    }
    let (method, path, headers, _) = &hs.seen()[0];
    assert_eq!((method, path.as_str()), (&Method::GET, "/crm/v3/objects/contacts?limit=1"));
    assert_eq!(headers["authorization"], format!("Bearer {TOKEN}"));

    let (addr, _) = serve(fixed(401, &[], json!({"status": "error", "message": "The OAuth token used to make this call expired 2 hour(s) ago.", "category": "EXPIRED_AUTHENTICATION"}))).await;
    match connector(addr).test_connection(&with(Credentials::OAuth2 { access_token: Secret::new("expired") })).await {
        TestOutcome::Failed(e) => {
            assert_eq!(e.class(), ErrorClass::Auth, "{e}");
            assert!(e.message().contains("expired 2 hour(s) ago") && !e.message().contains("expired\""), "{e}");
        }
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The trigger

/// A contacts search that honours what the trigger sends: GTE/LT/EQ filters on one date
/// property, the sort direction, `limit` and `after` (an offset, as HubSpot's is).
fn fake_search(contacts: &[(u64, i64, i64)], body: &Value) -> Value {
    let prop = body["sorts"][0]["propertyName"].as_str().unwrap().to_string();
    let at = |c: &(u64, i64, i64)| if prop == "createdate" { c.1 } else { c.2 };
    let mut hits: Vec<&(u64, i64, i64)> = contacts
        .iter()
        .filter(|c| {
            body.pointer("/filterGroups/0/filters").and_then(Value::as_array).into_iter().flatten().all(|f| {
                assert_eq!(f["propertyName"], prop.as_str());
                let v: i64 = f["value"].as_str().unwrap().parse().unwrap();
                match f["operator"].as_str().unwrap() {
                    "GTE" => at(c) >= v,
                    "LT" => at(c) < v,
                    other => panic!("unexpected operator {other}"),
                }
            })
        })
        .collect();
    hits.sort_by_key(|c| (at(c), c.0));
    if body["sorts"][0]["direction"] == "DESCENDING" {
        hits.reverse();
    }
    let after: usize = body.get("after").and_then(Value::as_str).map_or(0, |a| a.parse().unwrap());
    let limit = body["limit"].as_u64().unwrap() as usize;
    let page: Vec<Value> = hits
        .iter()
        .skip(after)
        .take(limit)
        .map(|(id, created, modified)| {
            json!({"id": id.to_string(), "archived": false, "createdAt": iso(*created), "updatedAt": iso(*modified),
                   "properties": {"email": format!("c{id}@example.com"), "createdate": iso(*created),
                                  "lastmodifieddate": iso(*modified), "hs_object_id": id.to_string()}})
        })
        .collect();
    let mut out = json!({"total": hits.len(), "results": page});
    if after + limit < hits.len() {
        out["paging"] = json!({"next": {"after": (after + limit).to_string()}});
    }
    out
}

const T0: i64 = 1_772_000_000_000;

async fn serve_contacts(contacts: Arc<Mutex<Vec<(u64, i64, i64)>>>) -> (SocketAddr, HubSpot) {
    serve(move |_: &Method, path: &str, body: &Value| {
        assert_eq!(path, "/crm/v3/objects/contacts/search");
        reply(200, &[], fake_search(&contacts.lock().unwrap(), body))
    })
    .await
}

async fn poll(addr: SocketAddr, now: i64, config: Value, cursor: Option<&str>) -> PollPage<PolledItem> {
    let c = crate::build(&format!("http://{addr}"), Arc::new(move || now));
    c.polling_trigger("contact_updated").expect("registered").poll(&ctx(), config, cursor.map(str::to_string)).await.expect("polled")
}

fn ids(page: &PollPage<PolledItem>) -> Vec<String> {
    page.items.iter().map(|i| i.event["id"].as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn enabling_seeds_the_cursor_and_fires_nothing_old() {
    let contacts = Arc::new(Mutex::new(vec![(1, T0, T0 + 5_000), (2, T0, T0 + 9_000)]));
    let (addr, hs) = serve_contacts(contacts.clone()).await;
    let now = T0 + 60_000;
    let page = poll(addr, now, json!({}), None).await;
    assert!(page.items.is_empty(), "old contacts do not fire");
    assert_eq!(page.cursor.as_deref(), Some(now.to_string().as_str()));
    assert_eq!(
        hs.bodies()[0],
        json!({"sorts": [{"propertyName": "lastmodifieddate", "direction": "DESCENDING"}], "properties": ["lastmodifieddate"], "limit": 1})
    );

    // HubSpot's clock ahead of ours: just after the newest contact.
    let page = poll(addr, T0 + 8_000, json!({"only_new": true}), None).await;
    assert_eq!(page.cursor.as_deref(), Some((T0 + 8_000).to_string().as_str()), "createdate T0 is older than now");
    let page = poll(addr, T0 + 4_000, json!({}), None).await;
    assert_eq!(page.cursor.as_deref(), Some((T0 + 9_001).to_string().as_str()));

    // An empty account: now.
    contacts.lock().unwrap().clear();
    assert_eq!(poll(addr, now, json!({}), None).await.cursor.as_deref(), Some(now.to_string().as_str()));
}

#[tokio::test]
async fn a_poll_returns_the_window_newest_first_with_a_key_per_change() {
    let cursor = T0;
    let contacts = Arc::new(Mutex::new(vec![
        (1, T0 - 90_000, T0 - 1),      // before the cursor: delivered already
        (2, T0 - 90_000, T0 + 1_000),  // updated
        (3, T0 + 2_000, T0 + 2_000),   // created in the window
        (4, T0 - 90_000, T0 + 3_000),  // updated
        (5, T0 + 45_000, T0 + 45_000), // too recent: HubSpot may not have indexed its neighbours
    ]));
    let (addr, hs) = serve_contacts(contacts.clone()).await;
    let now = T0 + 60_000;
    let page = poll(addr, now, json!({"properties": ["email", "lifecyclestage"]}), Some(&cursor.to_string())).await;
    assert_eq!(ids(&page), ["4", "3", "2"], "newest first");
    let keys: Vec<&str> = page.items.iter().map(|i| i.dedupe_key.as_str()).collect();
    assert_eq!(keys, [format!("4:{}", T0 + 3_000), format!("3:{}", T0 + 2_000), format!("2:{}", T0 + 1_000)]);
    assert_eq!(page.items[1].event["new"], true);
    assert_eq!(page.items[0].event["new"], false);
    assert_eq!(page.items[0].event["properties"]["email"], "c4@example.com");
    assert_eq!(page.cursor.as_deref(), Some((now - crate::trigger::SETTLE_MS).to_string().as_str()), "the window's end");
    assert_eq!(
        hs.bodies()[0],
        json!({
            "filterGroups": [{"filters": [
                {"propertyName": "lastmodifieddate", "operator": "GTE", "value": T0.to_string()},
                {"propertyName": "lastmodifieddate", "operator": "LT", "value": (T0 + 30_000).to_string()}
            ]}],
            "sorts": [{"propertyName": "lastmodifieddate", "direction": "ASCENDING"}],
            "properties": ["email", "lifecyclestage", "createdate", "lastmodifieddate"],
            "limit": 101
        })
    );

    // The next poll starts where this one ended: contact 5 now, and 2 again after a new change,
    // under a new key.
    contacts.lock().unwrap()[1].2 = T0 + 50_000;
    let page = poll(addr, T0 + 120_000, json!({}), page.cursor.as_deref()).await;
    assert_eq!(ids(&page), ["2", "5"]);
    assert_eq!(page.items[0].dedupe_key, format!("2:{}", T0 + 50_000));
    assert_eq!(page.cursor.as_deref(), Some((T0 + 90_000).to_string().as_str()));

    // Too soon for a window: nothing, the cursor kept.
    let page = poll(addr, T0 + 100_000, json!({}), Some(&(T0 + 90_000).to_string())).await;
    assert!(page.items.is_empty() && page.cursor.is_none());

    // only_new filters and keys on createdate.
    let page = poll(addr, T0 + 60_000, json!({"only_new": true}), Some(&T0.to_string())).await;
    assert_eq!(ids(&page), ["3"]);
    assert_eq!(page.items[0].dedupe_key, format!("3:{}", T0 + 2_000));
    assert_eq!(hs.bodies().last().unwrap()["sorts"][0]["propertyName"], "createdate");
}

#[tokio::test]
async fn the_cap_drains_a_backlog_in_order_without_skipping() {
    // 250 changes, one per millisecond.
    let contacts: Vec<(u64, i64, i64)> = (0..250).map(|i| (1000 + i as u64, T0 - 100_000, T0 + i)).collect();
    let (addr, _) = serve_contacts(Arc::new(Mutex::new(contacts))).await;
    let now = T0 + 100_000;
    let mut cursor = T0.to_string();
    let mut seen: Vec<String> = Vec::new();
    let mut sizes = Vec::new();
    for _ in 0..3 {
        let page = poll(addr, now, json!({}), Some(&cursor)).await;
        sizes.push(page.items.len());
        let mut got = ids(&page);
        got.reverse();
        seen.extend(got);
        cursor = page.cursor.unwrap();
    }
    assert_eq!(sizes, [100, 100, 50]);
    let want: Vec<String> = (0..250).map(|i| (1000 + i).to_string()).collect();
    assert_eq!(seen, want, "every change once, oldest poll first");
    assert_eq!(cursor, (now - crate::trigger::SETTLE_MS).to_string());
}

#[tokio::test]
async fn the_cap_never_cuts_through_a_millisecond() {
    // 98 changes, then 5 in one millisecond across the cap.
    let mut contacts: Vec<(u64, i64, i64)> = (0..98).map(|i| (i as u64, T0 - 100_000, T0 + i)).collect();
    contacts.extend((0..5).map(|j| (500 + j as u64, T0 - 100_000, T0 + 200)));
    let (addr, _) = serve_contacts(Arc::new(Mutex::new(contacts))).await;
    let now = T0 + 100_000;
    let page = poll(addr, now, json!({}), Some(&T0.to_string())).await;
    assert_eq!(page.items.len(), 98, "the millisecond at the cap waits for the next poll");
    assert_eq!(page.cursor.as_deref(), Some((T0 + 200).to_string().as_str()));
    let page = poll(addr, now, json!({}), page.cursor.as_deref()).await;
    assert_eq!(page.items.len(), 5);

    // 150 changes in a single millisecond (a bulk import): read whole, then the cursor passes it.
    let contacts: Vec<(u64, i64, i64)> = (0..150).map(|i| (i as u64, T0 - 100_000, T0 + 7)).collect();
    let (addr, hs) = serve_contacts(Arc::new(Mutex::new(contacts))).await;
    let page = poll(addr, now, json!({}), Some(&T0.to_string())).await;
    assert_eq!(page.items.len(), 150);
    assert_eq!(page.cursor.as_deref(), Some((T0 + 8).to_string().as_str()));
    let bodies = hs.bodies();
    assert_eq!(bodies.len(), 1 + 1, "the capped page, then the millisecond in one page of 200");
    assert_eq!(bodies[1]["filterGroups"][0]["filters"][0]["value"], (T0 + 7).to_string());
    assert_eq!(bodies[1]["filterGroups"][0]["filters"][1]["value"], (T0 + 8).to_string());
}

#[tokio::test]
async fn trigger_errors_are_classified() {
    let (addr, _) = serve(fixed(
        429,
        &[("retry-after", "2")],
        json!({"status": "error", "message": "You have reached your secondly limit.", "policyName": "SECONDLY"}),
    ))
    .await;
    let c = crate::build(&format!("http://{addr}"), Arc::new(|| T0));
    let t = c.polling_trigger("contact_updated").unwrap();
    let err = t.poll(&ctx(), json!({}), Some((T0 - 60_000).to_string())).await.unwrap_err();
    assert_eq!((err.class(), err.retry_after()), (ErrorClass::RateLimited, Some(Duration::from_secs(2))));
    let err = t.poll(&ctx(), json!({}), Some("yesterday".into())).await.unwrap_err();
    assert!(err.message().contains("not a time in milliseconds"), "{err}");
    let err = t.poll(&ctx(), json!({"properties": ["First name"]}), None).await.unwrap_err();
    assert_eq!(bad_input(&err).0, "properties[0]");
    let err = t.poll(&ctx(), json!({"only_new": true, "every": "5m"}), None).await.unwrap_err();
    assert_eq!(bad_input(&err).0, "every");

    let (addr, _) = serve(fixed(200, &[], json!({"total": 1, "results": [{"id": "1", "properties": {"email": "a@example.com"}}]}))).await;
    let c = crate::build(&format!("http://{addr}"), Arc::new(|| T0));
    let err = c.polling_trigger("contact_updated").unwrap().poll(&ctx(), json!({}), Some((T0 - 60_000).to_string())).await.unwrap_err();
    assert!(err.message().contains("no readable `lastmodifieddate`"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// The manifest

#[test]
fn manifest_declares_oauth2_the_burst_limit_and_documents_every_field() {
    let c = crate::connector();
    let m = &c.manifest;
    assert_eq!(m.id, "hubspot");
    assert_eq!(m.auth, enlace_core::AuthKind::OAuth2);
    let o = m.oauth2.as_ref().expect("HubSpot users sign in with OAuth2");
    assert_eq!(o.client_auth, enlace_core::ClientAuth::Body, "HubSpot's token endpoint reads the client in the body");
    assert!(o.scopes.iter().any(|s| s == "crm.objects.contacts.write"));
    assert_eq!(m.rate_limit, Some(enlace_core::RateLimit { calls: 100, per: Duration::from_secs(10) }));
    let want = [
        ("upsert_contact", Idempotency::Natural),
        ("upsert_contacts", Idempotency::Natural),
        ("create_contacts", Idempotency::None),
        ("update_contacts", Idempotency::Natural),
        ("search_contacts", Idempotency::Natural),
    ];
    assert_eq!(m.actions.len(), want.len());
    for (id, idempotency) in want {
        let a = m.action(id).unwrap_or_else(|| panic!("{id}"));
        assert_eq!(a.idempotency, idempotency, "{id}");
        assert_documented(&a.input_schema, id);
        assert!(a.sample.is_object(), "{id}");
        for key in a.sample.as_object().unwrap().keys() {
            assert!(a.output_schema["properties"].get(key).is_some(), "{id}: the output schema has {key}");
        }
    }
    let t = m.trigger("contact_updated").unwrap();
    assert_eq!(t.kind, enlace_core::TriggerKind::Polling);
    assert_documented(&t.config_schema, "contact_updated");
    assert_eq!(t.sample["id"], "12345");
    assert!(t.output_schema["properties"].get("key").is_none(), "the dedupe key is not part of the event");
}

/// Every property of the schema and of its definitions has a description.
fn assert_documented(schema: &Value, what: &str) {
    let mut objects = vec![schema.clone()];
    objects.extend(schema.get("$defs").and_then(Value::as_object).into_iter().flat_map(|d| d.values().cloned()));
    for o in objects {
        for (name, prop) in o.get("properties").and_then(Value::as_object).into_iter().flatten() {
            assert!(prop["description"].as_str().is_some_and(|d| d.len() > 20), "{what}: `{name}` is documented");
        }
    }
}
