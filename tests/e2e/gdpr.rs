//! GDPR end to end on the real server, on both stores: a webhook recipe stores a contact,
//! adds it to an ad audience through a test app (`adsx`, whose actions call a local target
//! that records them) and waits a day; the export holds everything; the erasure cancels the
//! waiting run, redacts the history, leaves no trace of the email or phone in any table,
//! leaves the other contact alone, and the audience removal reaches the app exactly once,
//! also across a restart (a removal queued while no server runs is sent by the next one).
//! The CLI's `contacts export` and `contacts erase`.

use std::sync::Arc;
use std::time::Duration;

use enlace_core::audience::{Audience, AudienceRemoval, sha256_hex};
use enlace_core::http::{HeaderValue, HttpRequest, Method as HttpMethod};
use enlace_core::manifest::Idempotency;
use enlace_core::{Action, ActionContext, Connector, ConnectorError, Registry};
use enlace_runner::{Runner, RunnerConfig, SystemClock};
use enlace_store::{ContactKey, RunFilter, RunStatus};
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::*;

/// Adds a person to an audience of the test app.
struct AddMember {
    base: String,
}

async fn post(ctx: &ActionContext, url: String, body: Value) -> Result<Value, ConnectorError> {
    let mut req = HttpRequest::new(HttpMethod::POST, url);
    req.body = serde_json::to_vec(&body).unwrap().into();
    req.headers.insert("content-type", HeaderValue::from_static("application/json"));
    enlace_kit::classify(ctx.http.send(req).await.map_err(|e| enlace_kit::transport_error(e, true))?)?;
    Ok(json!({"ok": true}))
}

impl Action for AddMember {
    // JSON in and out: `audience`, `email`, `phone`.
    type Input = Value;
    type Output = Value;
    const ID: &'static str = "add_member";
    const NAME: &'static str = "Add to audience";
    const DESCRIPTION: &'static str = "Adds a person to a retargeting audience.";
    const IDEMPOTENCY: Idempotency = Idempotency::Natural;
    const AUDIENCE: Option<Audience> = Some(Audience::Adds {
        audience_field: "audience",
        email_field: Some("email"),
        phone_field: Some("phone"),
        remove_action: "remove_member",
        people_field: None,
        hashing: enlace_core::audience::Hashing::Standard,
    });

    fn sample() -> Value {
        json!({"ok": true})
    }

    async fn call(&self, ctx: &ActionContext, input: Value) -> Result<Value, ConnectorError> {
        // Like a real platform: hashed identifiers only.
        let email = input["email"].as_str().map(|e| sha256_hex(&e.trim().to_lowercase()));
        post(ctx, format!("{}/add", self.base), json!({"audience": input["audience"], "email_sha256": email})).await
    }
}

/// Removes a person from an audience of the test app.
struct RemoveMember {
    base: String,
}

impl Action for RemoveMember {
    type Input = AudienceRemoval;
    type Output = Value;
    const ID: &'static str = "remove_member";
    const NAME: &'static str = "Remove from audience";
    const DESCRIPTION: &'static str = "Removes a person from a retargeting audience.";
    const IDEMPOTENCY: Idempotency = Idempotency::Natural;
    const AUDIENCE: Option<Audience> = Some(Audience::Removes);

    fn sample() -> Value {
        json!({"ok": true})
    }

    async fn call(&self, ctx: &ActionContext, input: AudienceRemoval) -> Result<Value, ConnectorError> {
        let mut body = serde_json::to_value(&input).unwrap();
        body["idempotency_key"] = json!(ctx.idempotency_key);
        post(ctx, format!("{}/remove", self.base), body).await
    }
}

fn registry(target: &Target) -> Registry {
    let mut all = enlace_connectors::all();
    all.push(
        Connector::builder("adsx", "Ads test app", "A retargeting app on a local server.")
            .action(AddMember { base: target.url("") })
            .action(RemoveMember { base: target.url("") })
            .build(),
    );
    Registry::new(all).unwrap()
}

const RECIPE: &str = r#"
id: retarget
trigger: {app: webhook, event: catch, with: {path: retarget}}
steps:
  - id: upsert
    app: contacts
    action: upsert_contact
    with:
      email: "{{trigger.body.email}}"
      fields:
        first_name: "{{trigger.body.first_name}}"
        phone: "{{trigger.body.phone}}"
  - id: audience
    app: adsx
    action: add_member
    with:
      audience: visitors
      email: "{{trigger.body.email}}"
      phone: "{{trigger.body.phone}}"
  - id: later
    delay: 1d
  - id: follow_up
    app: http
    action: request
    with: {method: POST, url: "http://127.0.0.1:9/never", json: {to: "{{trigger.body.email}}"}}
"#;

async fn signup(s: &TestServer, email: &str, phone: &str, name: &str) -> String {
    let body = json!({"email": email, "phone": phone, "first_name": name});
    let r = s.http.post(s.url("/hooks/retarget")).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 202);
    let run: Value = r.json().await.unwrap();
    let id = run["run_id"].as_str().unwrap().to_string();
    status(&s.store, &id, RunStatus::Waiting).await;
    id
}

async fn get(s: &TestServer, path: &str) -> (u16, Value) {
    let r = s.api(Method::GET, path).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn export_then_erase_leaves_no_trace_and_removes_from_the_audience_once() {
    let target = Target::start().await;
    let s = TestServer::start_with(registry(&target)).await;
    install(&s.runner, RECIPE).await;
    let ada_run = signup(&s, "Ada@Example.com", "+1 415 555 2671", "Ada").await;
    let bo_run = signup(&s, "bo@example.com", "+44 20 7946 0958", "Bo").await;
    assert_eq!(target.count_on("/add"), 2);
    let ada = s.store.contact(ContactKey::Email("ada@example.com".into())).await.unwrap().unwrap();
    let bo = s.store.contact_detail(ContactKey::Email("bo@example.com".into())).await.unwrap().unwrap();

    // The export: the contact, its timeline, its audience and its run, with its steps.
    let (code, x) = get(&s, &format!("/api/v1/contacts/{}/export", ada.id)).await;
    assert_eq!(code, 200, "{x}");
    assert_eq!(x["contact"]["email"], "ada@example.com");
    assert_eq!(x["contact"]["fields"]["phone"], "+1 415 555 2671");
    assert_eq!(x["timeline"][0]["kind"], "created");
    assert_eq!(x["timeline"][0]["run_id"], ada_run.as_str());
    assert_eq!(x["audience_memberships"][0]["audience"], "visitors");
    assert_eq!(x["audience_memberships"][0]["email_sha256"], sha256_hex("ada@example.com"));
    assert_eq!(x["audience_memberships"][0]["phone_sha256"], sha256_hex("+14155552671"));
    assert_eq!(x["runs"].as_array().unwrap().len(), 1);
    assert_eq!(x["runs"][0]["run"]["id"], ada_run.as_str());
    assert_eq!(x["runs"][0]["steps"][1]["key"], "audience");
    let r = s.http.get(s.url(&format!("/api/v1/contacts/{}/export", ada.id))).send().await.unwrap();
    assert_eq!(r.status(), 401, "the export needs the API token");
    let (_, doc) = get(&s, "/api/v1/openapi.json").await;
    for (path, method) in [
        ("/api/v1/contacts/{id}/export", "get"),
        ("/api/v1/contacts/{id}", "delete"),
        ("/api/v1/erasures", "get"),
        ("/api/v1/audience-removals", "get"),
    ] {
        assert!(doc["paths"][path][method].is_object(), "{method} {path} is not in the OpenAPI document");
    }
    let (code, bad) = get(&s, &format!("/api/v1/contacts/{}/export?runs_limit=0", ada.id)).await;
    assert_eq!((code, bad["code"].as_str(), bad["path"].as_str()), (400, Some("invalid_request"), Some("runs_limit")));

    // The erasure.
    let r = s.api(Method::DELETE, &format!("/api/v1/contacts/{}", ada.id)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let e: Value = r.json().await.unwrap();
    assert_eq!((e["runs_redacted"].as_i64(), e["runs_cancelled"].as_i64(), e["removals_queued"].as_i64()), (Some(1), Some(1), Some(1)));
    assert_eq!(e["erased_by"], "api:test");
    let removed = target.wait_for("/remove", 1).await;
    assert_eq!(removed[0].body["audience"], "visitors");
    assert_eq!(removed[0].body["email_sha256"], sha256_hex("ada@example.com"));
    assert_eq!(removed[0].body["phone_sha256"], sha256_hex("+14155552671"));
    for needle in ["ada@example.com", "+14155552671", "415 555 2671", "4155552671"] {
        let left = enlace_store::testing::tables_containing(&s.store, needle).await.unwrap();
        assert!(left.is_empty(), "`{needle}` is still stored in {left:?}");
    }
    // Erased, not unknown.
    let (code, gone) = get(&s, &format!("/api/v1/contacts/{}", ada.id)).await;
    assert_eq!((code, gone["code"].as_str()), (410, Some("erased")));
    let r = s.api(Method::DELETE, &format!("/api/v1/contacts/{}", ada.id)).send().await.unwrap();
    assert_eq!(r.status(), 410);
    let (_, found) = get(&s, "/api/v1/erasures?email=ADA%40example.com").await;
    assert_eq!(found[0]["contact_id"], ada.id.as_str());
    let (code, _) = get(&s, "/api/v1/erasures").await;
    assert_eq!(code, 400);
    // The run stays listable, cancelled, with its history redacted.
    let run = s.store.run_detail(&ada_run).await.unwrap().unwrap();
    assert_eq!(run.run.status, RunStatus::Cancelled);
    assert_eq!(run.event.payload["body"], json!({"email": "[erased]", "phone": "[erased]", "first_name": "[erased]"}));
    assert_eq!(run.steps[1].input.as_ref().unwrap()["audience"], "visitors");
    assert_eq!(run.steps[1].input.as_ref().unwrap()["email"], "[erased]");
    assert_eq!(s.store.list_runs(&RunFilter::default()).await.unwrap().len(), 2);
    // Bo is untouched and still waits.
    assert_eq!(s.store.contact_detail(ContactKey::Email("bo@example.com".into())).await.unwrap().unwrap(), bo);
    assert_eq!(s.store.get_run(&bo_run).await.unwrap().unwrap().status, RunStatus::Waiting);
    let (_, q) = get(&s, "/api/v1/audience-removals?status=done").await;
    assert_eq!((q.as_array().unwrap().len(), q[0]["reason"].as_str()), (1, Some("erased")));

    // A restart: the server stops; Bo is erased meanwhile (as `enlace contacts erase` does,
    // on the store); the next server sends Bo's removal once and Ada's not again.
    s.runner.shutdown(Duration::from_secs(5)).await;
    let er = s.store.erase(ContactKey::Email("bo@example.com".into()), "cli", s.runner.now_ms()).await.unwrap();
    assert_eq!(er.removals_queued, 1);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(target.count_on("/remove"), 1, "nothing is sent while no server runs");
    let again = Runner::new(s.store.clone(), registry(&target), RunnerConfig::default(), transport(), Arc::new(SystemClock));
    again.load(false).await.unwrap();
    again.start();
    let removed = target.wait_for("/remove", 2).await;
    assert_eq!(removed[1].body["email_sha256"], sha256_hex("bo@example.com"));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(target.count_on("/remove"), 2, "each removal reached the app once");
    let (_, q) = get(&s, "/api/v1/audience-removals").await;
    assert!(q.as_array().unwrap().iter().all(|r| r["status"] == "done"), "{q}");
    again.shutdown(Duration::from_secs(5)).await;
}

async fn a_failing_removal_is_retried_then_delivered() {
    let target = Target::start().await;
    target.script("/remove", vec![Answer::status(503, "{}")]);
    let s = TestServer::start_with(registry(&target)).await;
    install(&s.runner, RECIPE).await;
    signup(&s, "cy@example.com", "+14155550100", "Cy").await;
    let contact = s.store.contact(ContactKey::Email("cy@example.com".into())).await.unwrap().unwrap();
    // Withdrawing the `ads` consent takes Cy out of the audience (the contact is kept).
    let evidence = enlace_store::Evidence {
        source: "preference center".into(),
        ip: None,
        text: None,
        recorded_at: 1,
        run_id: None,
        details: Default::default(),
    };
    s.runner
        .contacts()
        .apply(
            Default::default(),
            enlace_store::ContactOp::RecordConsent {
                key: ContactKey::Id(contact.id.clone()),
                consent: enlace_store::NewConsent {
                    purpose: "marketing".into(),
                    channel: "ads".into(),
                    status: enlace_store::ConsentStatus::Withdrawn,
                    evidence,
                },
            },
        )
        .await
        .unwrap();
    target.wait_for("/remove", 1).await;
    let (_, q) = get(&s, "/api/v1/audience-removals").await;
    assert_eq!(q[0]["reason"], "consent_withdrawn");
    // 503 is transient: retried after 2 s with the same idempotency key.
    let removed = target.wait_for("/remove", 2).await;
    assert_eq!(removed[0].body["idempotency_key"], removed[1].body["idempotency_key"]);
    for _ in 0..100 {
        let (_, q) = get(&s, "/api/v1/audience-removals?status=done").await;
        if q.as_array().is_some_and(|a| a.len() == 1) {
            assert_eq!(q[0]["attempts"], 2);
            assert_eq!(q[0]["last_error"]["class"], "transient");
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the removal never ended as done");
}

on_both_backends!(export_then_erase_leaves_no_trace_and_removes_from_the_audience_once, a_failing_removal_is_retried_then_delivered);

#[test]
fn cli_exports_and_erases() {
    let dir = temp_dir("gdpr-cli");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = enlace_store::Store::open(&enlace_store::StoreConfig {
            database_url: None,
            data_dir: dir.clone(),
            secret_key: None,
            synchronous: enlace_store::Synchronous::Full,
        })
        .await
        .unwrap();
        let w = enlace_store::ContactWrite { now: 5, ..Default::default() };
        let op = enlace_store::ContactOp::Upsert {
            email: "dee@example.com".into(),
            fields: json!({"first_name": "Dee", "phone": "+14155550111"}).as_object().unwrap().clone(),
        };
        store.apply_contact(op, w).await.unwrap();
        store.close().await;
    });
    let (ok, _, err) = cli(&dir, &["contacts", "erase", "dee@example.com"], "", false);
    assert!(!ok && err.contains("--yes"), "{err}");
    let out = dir.join("dee.json");
    let (ok, _, err) = cli(&dir, &["contacts", "export", "DEE@example.com", "--out", out.to_str().unwrap()], "", false);
    assert!(ok, "{err}");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(doc["contact"]["fields"]["first_name"], "Dee");
    assert_eq!(doc["timeline"][0]["kind"], "created");
    assert!(doc.get("runs_next").is_none() && doc["runs"].is_array());
    let (ok, stdout, err) = cli(&dir, &["contacts", "erase", "dee@example.com", "--yes"], "", false);
    assert!(ok, "{err}");
    let record: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(record["erased_by"], "cli");
    assert!(!stdout.contains("dee@example.com"), "the record holds no personal data: {stdout}");
    let (ok, _, err) = cli(&dir, &["contacts", "export", "dee@example.com"], "", false);
    assert!(!ok && err.contains("was erased"), "{err}");
    let (ok, _, err) = cli(&dir, &["contacts", "erase", "nobody@example.com", "--yes"], "", false);
    assert!(!ok && err.contains("no contact"), "{err}");
}
