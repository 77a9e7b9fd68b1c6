//! The `web` actions against a recording backend (the runner's real one is exercised by
//! `tests/e2e/web_channel.rs`): what they hand over and how they refuse bad input.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use enlace_core::contacts::ContactsError;
use enlace_core::http::{HttpRequest, HttpResponse, HttpTransport, TransportError};
use enlace_core::web::{FormLink, NewWebMessage, Queued, WebBackend};
use enlace_core::{ActionContext, BoxFuture, ConnectorError, Credentials, ErrorClass, Extensions};
use serde_json::json;

use crate::connector;

struct NoHttp;

impl HttpTransport for NoHttp {
    fn send(&self, _r: HttpRequest) -> BoxFuture<'_, Result<HttpResponse, TransportError>> {
        Box::pin(async { panic!("a web action sent an HTTP request") })
    }
}

#[derive(Default)]
struct Recorder {
    queued: Mutex<Vec<(NewWebMessage, Option<i64>)>>,
    links: Mutex<Vec<(String, String, Option<i64>)>>,
}

impl WebBackend for Recorder {
    fn queue_message<'a>(&'a self, m: NewWebMessage, expires_in_ms: Option<i64>) -> BoxFuture<'a, Result<Queued, ContactsError>> {
        self.queued.lock().unwrap().push((m, expires_in_ms));
        Box::pin(async { Ok(Queued { queued: true, reason: None, message_id: Some("m-1".into()) }) })
    }
    fn form_link<'a>(&'a self, form: String, contact_id: String, ttl_ms: Option<i64>) -> BoxFuture<'a, Result<FormLink, ContactsError>> {
        self.links.lock().unwrap().push((form.clone(), contact_id, ttl_ms));
        Box::pin(async move {
            if form == "nope" {
                return Err(ContactsError::NotFound("no form `nope`".into()));
            }
            Ok(FormLink { form, url: "https://e.example/f/x?t=t".into(), expires_at: "2026-01-01T00:00:00Z".into() })
        })
    }
}

fn ctx(b: Option<Arc<Recorder>>) -> ActionContext {
    ActionContext {
        run_id: "run-1".into(),
        step_key: "s".into(),
        attempt: 1,
        idempotency_key: "run-1:s".into(),
        credentials: Credentials::None,
        http: Arc::new(NoHttp),
        timeout: Duration::from_secs(5),
        extensions: Extensions { web: b.map(|b| b as Arc<dyn WebBackend>), ..Default::default() },
    }
}

fn path(e: &ConnectorError) -> Option<&str> {
    match e {
        ConnectorError::BadInput { path, .. } => Some(path),
        _ => None,
    }
}

async fn call(c: &ActionContext, action: &str, input: serde_json::Value) -> Result<serde_json::Value, ConnectorError> {
    connector().action(action).unwrap().call(c, input).await
}

#[tokio::test]
async fn show_message_hands_the_message_over() {
    let r = Arc::new(Recorder::default());
    let c = ctx(Some(r.clone()));
    let out = call(
        &c,
        "show_message",
        json!({"contact_id": "c-1", "rule": "discount-dog-food", "title": "10% off", "body": "Dog food", "button_label": "Shop",
               "button_url": "https://shop.example/dog-food", "product": "dog-food", "unless_purchased": true, "expires_in": "7d"}),
    )
    .await
    .unwrap();
    assert_eq!(out, json!({"queued": true, "message_id": "m-1"}));
    let (m, exp) = r.queued.lock().unwrap()[0].clone();
    assert_eq!(
        (m.contact_id.as_str(), m.rule.as_str(), m.purpose.as_str(), m.run_id.as_deref()),
        ("c-1", "discount-dog-food", "marketing", Some("run-1"))
    );
    assert_eq!((m.product.as_deref(), m.unless_purchased, exp), (Some("dog-food"), true, Some(7 * 86_400_000)));
}

#[tokio::test]
async fn show_message_refuses_bad_input() {
    let c = ctx(Some(Arc::new(Recorder::default())));
    let base = json!({"contact_id": "c-1", "rule": "r", "title": "t", "body": "b"});
    for (change, field) in [
        (json!({"button_url": "javascript:alert(1)", "button_label": "x"}), "button_url"),
        (json!({"button_label": "x"}), "button_url"),
        (json!({"unless_purchased": true}), "product"),
        (json!({"title": " "}), "title"),
        (json!({"expires_in": "soon"}), "expires_in"),
    ] {
        let mut input = base.clone();
        input.as_object_mut().unwrap().extend(change.as_object().unwrap().clone());
        let e = call(&c, "show_message", input).await.unwrap_err();
        assert_eq!((e.class(), path(&e)), (ErrorClass::BadInput, Some(field)), "{e}");
    }
    let e = call(&ctx(None), "show_message", base).await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::Permanent);
}

#[tokio::test]
async fn form_link_asks_for_the_link() {
    let r = Arc::new(Recorder::default());
    let c = ctx(Some(r.clone()));
    let out = call(&c, "form_link", json!({"form": "interests", "contact_id": "c-1", "valid_for": "14d"})).await.unwrap();
    assert_eq!(out["url"], "https://e.example/f/x?t=t");
    assert_eq!(r.links.lock().unwrap()[0], ("interests".into(), "c-1".into(), Some(14 * 86_400_000)));
    let e = call(&c, "form_link", json!({"form": "nope", "contact_id": "c-1"})).await.unwrap_err();
    assert_eq!(path(&e), Some("form"));
}
