//! The `contacts` actions against a recording contact store (the runner's real one is
//! exercised by `tests/e2e/contacts.rs` and the store's tests): what each action asks of the
//! store, with which idempotency key, and how the store's answers become outputs and errors.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use enlace_core::contacts::{
    Consent, ConsentStatus, Contact, ContactDetail, ContactKey, ContactOp, ContactOutcome, ContactsBackend, ContactsError, Note,
    TimelineEvent, WriteContext,
};
use enlace_core::http::{HttpRequest, HttpResponse, HttpTransport, TransportError};
use enlace_core::{ActionContext, BoxFuture, ConnectorError, Credentials, ErrorClass, Extensions, Idempotency, TriggerKind};
use serde_json::{Value, json};

use crate::{connector, sample_contact};

/// Contact actions make no HTTP request: this transport fails the test if one tries.
struct NoHttp;

impl HttpTransport for NoHttp {
    fn send(&self, _r: HttpRequest) -> BoxFuture<'_, Result<HttpResponse, TransportError>> {
        Box::pin(async { panic!("a contacts action sent an HTTP request") })
    }
}

type Answer = Box<dyn Fn(&ContactOp) -> Result<ContactOutcome, ContactsError> + Send + Sync>;

/// A contact store that records what it is asked and answers with `answer`.
struct Recorder {
    seen: Mutex<Vec<(WriteContext, ContactOp)>>,
    found: Mutex<Vec<ContactKey>>,
    answer: Answer,
    detail: Option<ContactDetail>,
}

impl ContactsBackend for Recorder {
    fn apply<'a>(&'a self, w: WriteContext, op: ContactOp) -> BoxFuture<'a, Result<ContactOutcome, ContactsError>> {
        let r = (self.answer)(&op);
        self.seen.lock().unwrap().push((w, op));
        Box::pin(async move { r })
    }

    fn find<'a>(&'a self, key: ContactKey) -> BoxFuture<'a, Result<Option<ContactDetail>, ContactsError>> {
        self.found.lock().unwrap().push(key);
        let d = self.detail.clone();
        Box::pin(async move { Ok(d) })
    }
}

fn outcome(op: &ContactOp) -> Result<ContactOutcome, ContactsError> {
    let mut contact = sample_contact();
    let mut consent = None;
    let mut note = None;
    let mut event = None;
    match op {
        ContactOp::Upsert { email, fields } => {
            contact.email = email.trim().to_lowercase();
            contact.fields = fields.clone();
        }
        ContactOp::RecordConsent { consent: c, .. } => {
            consent = Some(Consent {
                id: "c1".into(),
                purpose: c.purpose.clone(),
                channel: c.channel.clone(),
                status: c.status,
                evidence: c.evidence.clone(),
                at: 5,
            })
        }
        ContactOp::AddNote { body, author, .. } => note = Some(Note { id: "n1".into(), body: body.clone(), author: author.clone(), at: 5 }),
        ContactOp::RecordEvent { kind, data, at, .. } => {
            event = Some(TimelineEvent {
                id: "e1".into(),
                kind: kind.clone(),
                data: data.clone(),
                run_id: Some("run_1".into()),
                at: at.unwrap_or(5),
            })
        }
        _ => {}
    }
    Ok(ContactOutcome { contact, created: matches!(op, ContactOp::Upsert { .. }), changed: true, consent, note, event })
}

fn store(answer: Answer) -> Arc<Recorder> {
    Arc::new(Recorder { seen: Mutex::default(), found: Mutex::default(), answer, detail: None })
}

fn ctx(backend: Option<Arc<Recorder>>) -> ActionContext {
    ActionContext {
        run_id: "run_1".into(),
        step_key: "tag".into(),
        attempt: 2,
        idempotency_key: "run_1:tag".into(),
        credentials: Credentials::None,
        http: Arc::new(NoHttp),
        timeout: Duration::from_secs(5),
        extensions: Extensions { contacts: backend.map(|b| b as Arc<dyn ContactsBackend>), ..Default::default() },
    }
}

async fn call(action: &str, ctx: &ActionContext, with: Value) -> Result<Value, ConnectorError> {
    connector().action(action).unwrap().call(ctx, with).await
}

fn bad_input(r: Result<Value, ConnectorError>) -> (String, String) {
    match r {
        Err(ConnectorError::BadInput { path, message }) => (path, message),
        other => panic!("expected bad input, got {other:?}"),
    }
}

#[test]
fn the_manifest_declares_every_action_and_trigger_documented() {
    let c = connector();
    let m = &c.manifest;
    assert_eq!(m.id, "contacts");
    assert_eq!(m.auth, enlace_core::AuthKind::None);
    let ids: Vec<&str> = m.actions.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(
        ids,
        ["upsert_contact", "set_fields", "add_tag", "remove_tag", "record_consent", "add_note", "record_event", "find_contact"]
    );
    for a in &m.actions {
        assert!(!a.http_only, "{}: contact actions use the store, not HTTP, and a dry run must not call them", a.id);
        assert!(
            matches!(a.idempotency, Idempotency::Natural | Idempotency::Key),
            "{}: every contact action is safe to retry with the same key",
            a.id
        );
        let props = a.input_schema["properties"].as_object().unwrap();
        for (name, p) in props {
            let documented = p.get("description").and_then(Value::as_str).is_some_and(|d| !d.is_empty())
                || p.get("$ref").is_some() && name == "evidence";
            assert!(documented, "{}.{name} has no description", a.id);
        }
        assert!(a.sample.is_object(), "{} has a sample", a.id);
    }
    let triggers: Vec<(&str, TriggerKind)> = m.triggers.iter().map(|t| (t.id.as_str(), t.kind)).collect();
    assert_eq!(
        triggers,
        [
            ("contact_created", TriggerKind::Contact),
            ("contact_updated", TriggerKind::Contact),
            ("tag_added", TriggerKind::Contact),
            ("event", TriggerKind::Contact)
        ]
    );
    assert!(m.trigger("event").unwrap().config_schema["properties"]["kind"]["description"].is_string());
    assert!(m.trigger("tag_added").unwrap().config_schema["properties"]["tag"]["description"].is_string());
}

#[tokio::test]
async fn upsert_sends_the_step_key_and_run_with_the_email_and_fields() {
    let s = store(Box::new(outcome));
    let c = ctx(Some(s.clone()));
    let out = call("upsert_contact", &c, json!({"email": " Ada@Example.com", "fields": {"first_name": "Ada", "old": null}})).await.unwrap();
    assert_eq!(out["created"], true);
    assert_eq!(out["id"], out["contact"]["id"]);
    assert_eq!(out["contact"]["email"], "ada@example.com");
    let seen = s.seen.lock().unwrap();
    let (w, op) = &seen[0];
    assert_eq!(w, &WriteContext { op_key: Some("run_1:tag".into()), run_id: Some("run_1".into()) });
    assert_eq!(
        op,
        &ContactOp::Upsert {
            email: " Ada@Example.com".into(),
            fields: json!({"first_name": "Ada", "old": null}).as_object().unwrap().clone()
        }
    );
}

#[tokio::test]
async fn bad_inputs_name_their_field_before_the_store_is_asked() {
    let s = store(Box::new(outcome));
    let c = ctx(Some(s.clone()));
    let (path, msg) = bad_input(call("upsert_contact", &c, json!({"email": "not-an-email"})).await);
    assert_eq!((path.as_str(), msg.contains("name@domain")), ("email", true));
    let (path, msg) = bad_input(call("add_tag", &c, json!({"tag": "vip"})).await);
    assert_eq!(path, "email");
    assert!(msg.contains("`email` or `contact_id`"), "{msg}");
    let (path, _) = bad_input(call("add_tag", &c, json!({"email": "a@b.io", "contact_id": "x", "tag": "vip"})).await);
    assert_eq!(path, "contact_id");
    let (path, _) = bad_input(call("add_tag", &c, json!({"email": "a@b.io", "tag": "   "})).await);
    assert_eq!(path, "tag");
    let consent = |channel: &str, purpose: &str, at: Option<&str>| {
        json!({"email": "a@b.io", "purpose": purpose, "channel": channel, "status": "granted",
               "evidence": {"source": "form", "recorded_at": at}})
    };
    let (path, msg) = bad_input(call("record_consent", &c, consent("fax", "marketing", None)).await);
    assert_eq!(path, "channel");
    assert_eq!(msg, "`fax` is not a consent channel; use one of: email, sms, whatsapp, push, voice, mail, social, ads, web");
    let (path, _) = bad_input(call("record_consent", &c, consent("email", "Marketing!", None)).await);
    assert_eq!(path, "purpose");
    let (path, _) = bad_input(call("record_consent", &c, consent("email", "marketing", Some("yesterday"))).await);
    assert_eq!(path, "evidence.recorded_at");
    let (path, _) = bad_input(
        call(
            "record_consent",
            &c,
            json!({"email": "a@b.io", "purpose": "marketing", "channel": "sms", "status": "maybe", "evidence": {"source": "x"}}),
        )
        .await,
    );
    assert_eq!(path, "status");
    let (path, _) = bad_input(call("add_note", &c, json!({"contact_id": "c", "body": " "})).await);
    assert_eq!(path, "body");
    assert!(s.seen.lock().unwrap().is_empty(), "nothing reached the store");
}

#[tokio::test]
async fn consent_carries_its_evidence_and_the_run() {
    let s = store(Box::new(outcome));
    let c = ctx(Some(s.clone()));
    let out = call(
        "record_consent",
        &c,
        json!({"contact_id": "c-1", "purpose": "marketing", "channel": "sms", "status": "withdrawn",
               "evidence": {"source": "SMS reply STOP", "text": "STOP", "recorded_at": "2026-11-25T14:03:00Z"}}),
    )
    .await
    .unwrap();
    assert_eq!(out["recorded"], true);
    assert_eq!(out["consent"]["status"], "withdrawn");
    assert_eq!(
        out["consent"]["evidence"],
        json!({"source": "SMS reply STOP", "text": "STOP", "recorded_at": 1_795_615_380_000_i64, "run_id": "run_1"})
    );
    let seen = s.seen.lock().unwrap();
    match &seen[0].1 {
        ContactOp::RecordConsent { key, consent } => {
            assert_eq!(key, &ContactKey::Id("c-1".into()));
            assert_eq!(consent.status, ConsentStatus::Withdrawn);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn store_errors_are_classified() {
    let c = ctx(Some(store(Box::new(|_| Err(ContactsError::NotFound("no contact with the email `x@y.io`".into()))))));
    let (path, msg) = bad_input(call("set_fields", &c, json!({"email": "X@y.io", "fields": {"a": 1}})).await);
    assert_eq!(path, "email");
    assert!(msg.starts_with("no contact with the email `x@y.io`; create it first"), "{msg}");
    let c = ctx(Some(store(Box::new(|_| Err(ContactsError::Unavailable("the contact store failed: database is locked".into()))))));
    let e = call("add_tag", &c, json!({"contact_id": "c", "tag": "vip"})).await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::Transient, "a store failure is worth a retry: {e}");
    let c = ctx(None);
    let e = call("add_tag", &c, json!({"contact_id": "c", "tag": "vip"})).await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::Permanent);
    assert!(e.to_string().contains("contact store is not available"), "{e}");
}

#[tokio::test]
async fn find_says_found_false_for_a_missing_contact_and_returns_the_detail_otherwise() {
    let s = store(Box::new(outcome));
    let c = ctx(Some(s.clone()));
    let out = call("find_contact", &c, json!({"email": "Nobody@Example.com"})).await.unwrap();
    assert_eq!(out, json!({"found": false, "consents": [], "notes": [], "timeline": []}));
    assert_eq!(s.found.lock().unwrap()[0], ContactKey::Email("nobody@example.com".into()));
    let detail = ContactDetail { contact: sample_contact(), consents: vec![], notes: vec![], timeline: vec![] };
    let s = Arc::new(Recorder { seen: Mutex::default(), found: Mutex::default(), answer: Box::new(outcome), detail: Some(detail) });
    let out = call("find_contact", &ctx(Some(s)), json!({"contact_id": "x"})).await.unwrap();
    assert_eq!(out["found"], true);
    assert_eq!(out["contact"]["tags"], json!(["newsletter", "vip"]));
}

#[test]
fn samples_match_what_the_actions_return() {
    // The samples are what dry runs and data pills show: they must have the outputs' keys.
    let c = connector();
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&c.manifest.action("upsert_contact").unwrap().sample), ["id", "created", "changed", "contact"]);
    assert_eq!(keys(&c.manifest.action("find_contact").unwrap().sample), ["found", "contact", "consents", "notes", "timeline"]);
    let contact: Contact = serde_json::from_value(c.manifest.action("add_tag").unwrap().sample["contact"].clone()).unwrap();
    assert_eq!(contact.email, "ada@example.com");
}

#[tokio::test]
async fn record_event_sends_the_step_key_and_checks_kind_and_time() {
    let s = store(Box::new(outcome));
    let c = ctx(Some(s.clone()));
    let with = json!({"email": "Ada@Example.com", "kind": "purchase", "data": {"order_id": "A-1"}, "at": "2026-11-25T14:03:00Z"});
    let out = call("record_event", &c, with).await.unwrap();
    assert_eq!((out["recorded"].clone(), out["event"]["kind"].clone()), (json!(true), json!("purchase")));
    let (w, op) = s.seen.lock().unwrap().pop().unwrap();
    assert_eq!(w.op_key.as_deref(), Some("run_1:tag"), "stored once per step");
    match op {
        ContactOp::RecordEvent { key, kind, data, at } => {
            assert_eq!(key, ContactKey::Email("ada@example.com".into()));
            assert_eq!((kind.as_str(), data, at), ("purchase", json!({"order_id": "A-1"}), Some(1_795_615_380_000)));
        }
        other => panic!("{other:?}"),
    }
    let (path, msg) = bad_input(call("record_event", &c, json!({"email": "a@b.c", "kind": "Bought!"})).await);
    assert_eq!(path, "kind");
    assert!(msg.contains("event kind"), "{msg}");
    let (path, _) = bad_input(call("record_event", &c, json!({"email": "a@b.c", "kind": "x", "at": "today"})).await);
    assert_eq!(path, "at");
    assert!(s.seen.lock().unwrap().is_empty(), "nothing reached the store");
}
