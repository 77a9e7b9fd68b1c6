//! The `contacts` app end to end: a webhook recipe builds a contact (upsert, tag, consent)
//! through the runner's contact store, a second recipe started by `contacts.tag_added` posts
//! to a local target exactly once (also when the tagging step is called again, as a retry
//! calls it), on both backends; the contacts API (list, show, upsert, erase) on the real
//! server; the validator's checks of contact triggers.

use std::sync::Arc;
use std::time::Duration;

use enlace_core::{ActionContext, Credentials, Extensions};
use enlace_runner::Incoming;
use enlace_store::{ConsentStatus, ContactKey, RunStatus};
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::*;

fn signup_recipe() -> &'static str {
    r#"
id: signup
trigger: {app: webhook, event: catch}
steps:
  - id: upsert
    app: contacts
    action: upsert_contact
    with:
      email: "{{trigger.body.email}}"
      fields:
        first_name: "{{trigger.body.name}}"
        acquired_via: signup-form
  - id: tag
    app: contacts
    action: add_tag
    with:
      contact_id: "{{steps.upsert.id}}"
      tag: vip
  - id: consent
    app: contacts
    action: record_consent
    with:
      email: "{{trigger.body.email}}"
      purpose: marketing
      channel: email
      status: granted
      evidence:
        source: signup form on example.com/join
        ip: "{{trigger.body.ip}}"
        text: Yes, send me offers by email
"#
}

fn alert_recipe(id: &str, tag: &str, url: &str) -> String {
    format!(
        r#"
id: {id}
trigger: {{app: contacts, event: tag_added, with: {{tag: {tag}}}}}
steps:
  - id: notify
    app: http
    action: request
    with:
      method: POST
      url: "{url}"
      json:
        email: "{{{{trigger.contact.email}}}}"
        name: "{{{{trigger.contact.fields.first_name}}}}"
        tag: "{{{{trigger.tag}}}}"
"#
    )
}

async fn a_tag_added_by_a_recipe_starts_the_tag_recipe_exactly_once() {
    let target = Target::start().await;
    let (runner, _clock, store) = manual_runner(None).await;
    install(&runner, signup_recipe()).await;
    install(&runner, &alert_recipe("vip-alert", "vip", &target.url("/vip"))).await;
    install(&runner, &alert_recipe("other-alert", "other", &target.url("/other"))).await;

    let run = start_run(&runner, "signup", json!({"email": "Ada@Example.com", "name": "Ada", "ip": "203.0.113.7"})).await;
    let r = settled(&store, &run).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{:?}", r.error);
    let d = store.run_detail(&run).await.unwrap().unwrap();
    let upsert = d.steps.iter().find(|s| s.key == "upsert").unwrap().output.clone().unwrap();
    assert_eq!(upsert["created"], true);
    assert_eq!(upsert["contact"]["email"], "ada@example.com");
    let contact_id = upsert["id"].as_str().unwrap().to_string();

    // The tag started the vip recipe (queued in the tag's transaction), not the other one.
    runner.drain_due().await.unwrap();
    let got = target.received_on("/vip");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, json!({"email": "ada@example.com", "name": "Ada", "tag": "vip"}));
    assert_eq!(target.count_on("/other"), 0, "a tag filter starts only on its tag");

    // The tagging step called again with the same context, as the runner does when it
    // retries a step whose outcome it did not record (a crash after the store's commit):
    // nothing changes, and no recipe starts again.
    let app = runner.registry().get("contacts").unwrap();
    let ctx = ActionContext {
        run_id: run.clone(),
        step_key: "tag".into(),
        attempt: 2,
        idempotency_key: format!("{run}:tag"),
        credentials: Credentials::None,
        http: transport(),
        timeout: Duration::from_secs(10),
        extensions: Extensions { contacts: Some(Arc::new(runner.contacts())), ..Default::default() },
    };
    let again = app.action("add_tag").unwrap().call(&ctx, json!({"contact_id": contact_id, "tag": "vip"})).await.unwrap();
    assert_eq!(again["changed"], false);
    // A consent retried with the same key is stored once too.
    let consent = json!({"email": "ada@example.com", "purpose": "marketing", "channel": "email", "status": "granted",
                          "evidence": {"source": "signup form on example.com/join"}});
    let ctx_consent = ActionContext { step_key: "consent".into(), idempotency_key: format!("{run}:consent"), ..ctx.clone() };
    let c = app.action("record_consent").unwrap().call(&ctx_consent, consent).await.unwrap();
    assert_eq!(c["recorded"], false, "{c}");
    // A second signup of the same person (another event) tags nothing new either.
    let run2 = start_run(&runner, "signup", json!({"email": "ada@example.com", "name": "Ada", "ip": "203.0.113.7"})).await;
    assert_eq!(settled(&store, &run2).await.status, RunStatus::Succeeded);
    runner.drain_due().await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(target.count_on("/vip"), 1, "exactly one post for one tag");
    let vip_runs =
        store.list_runs(&enlace_store::RunFilter { recipe_id: Some("vip-alert".into()), limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(vip_runs.len(), 1);

    // The contact: one, tagged, with the consent and its evidence, and a timeline of the run.
    let d = store.contact_detail(ContactKey::Email("ADA@example.com".into())).await.unwrap().unwrap();
    assert_eq!(d.contact.id, contact_id);
    assert_eq!(d.contact.tags, ["vip"]);
    assert_eq!(d.contact.fields["acquired_via"], "signup-form");
    assert_eq!(d.consents.len(), 1);
    let c = &d.consents[0];
    assert_eq!((c.purpose.as_str(), c.channel.as_str(), c.status), ("marketing", "email", ConsentStatus::Granted));
    assert_eq!(c.evidence.ip.as_deref(), Some("203.0.113.7"));
    assert_eq!(c.evidence.text.as_deref(), Some("Yes, send me offers by email"));
    // The second signup recorded its own decision: the history keeps both, the latest counts.
    assert_eq!(c.evidence.run_id.as_deref(), Some(run2.as_str()));
    let timeline: Vec<(&str, &str)> = d.timeline.iter().rev().map(|e| (e.kind.as_str(), e.run_id.as_deref().unwrap_or(""))).collect();
    assert_eq!(
        timeline,
        [("created", run.as_str()), ("tag_added", run.as_str()), ("consent_recorded", run.as_str()), ("consent_recorded", run2.as_str())]
    );
}

async fn a_bad_channel_fails_the_step_with_the_valid_ones() {
    let (runner, _clock, store) = manual_runner(None).await;
    install(
        &runner,
        r#"
id: bad-consent
trigger: {app: webhook, event: catch}
steps:
  - id: find
    app: contacts
    action: find_contact
    with: {email: "{{trigger.body.email}}"}
  - id: consent
    app: contacts
    action: record_consent
    with:
      email: "{{trigger.body.email}}"
      purpose: marketing
      channel: "{{trigger.body.channel}}"
      status: granted
      evidence: {source: call}
"#,
    )
    .await;
    let cur = runner.catalog().current("bad-consent").unwrap();
    let (a, _) = runner
        .accept(Incoming {
            recipe_id: "bad-consent".into(),
            recipe_version: cur.row.version,
            source: "manual",
            payload: json!({"body": {"email": "nobody@example.com", "channel": "fax"}}),
            dedupe_key: None,
            wait: false,
        })
        .await
        .unwrap();
    let r = settled(&store, &a.run_id).await;
    assert_eq!(r.status, RunStatus::Failed);
    let d = store.run_detail(&a.run_id).await.unwrap().unwrap();
    assert_eq!(d.steps[0].output.as_ref().unwrap()["found"], false, "not found is an answer, not an error");
    let e = r.error.unwrap();
    assert_eq!(e["class"], "bad_input");
    assert_eq!(e["path"], "channel");
    assert!(e["message"].as_str().unwrap().contains("email, sms, whatsapp, push"), "{e}");
    assert_eq!(e["attempts"], 1, "bad input is not retried");
}

on_both_backends!(a_tag_added_by_a_recipe_starts_the_tag_recipe_exactly_once, a_bad_channel_fails_the_step_with_the_valid_ones);

#[tokio::test]
async fn the_api_lists_shows_upserts_and_erases_contacts() {
    let target = Target::start().await;
    let s = TestServer::start().await;
    install(&s.runner, &alert_recipe("vip-alert", "vip", &target.url("/vip"))).await;
    let doc: Value = s.http.get(s.url("/api/v1/openapi.json")).send().await.unwrap().json().await.unwrap();
    assert!(doc["paths"]["/api/v1/contacts"]["post"].is_object() && doc["paths"]["/api/v1/contacts/{id}"]["delete"].is_object());
    let anon = s.http.get(s.url("/api/v1/contacts")).send().await.unwrap();
    assert_eq!(anon.status(), 401);

    let up = |body: Value| s.api(Method::POST, "/api/v1/contacts").json(&body).send();
    let r = up(json!({"email": "Bo@Example.com", "fields": {"plan": "free", "first_name": "Bo"}, "tags": ["vip"]})).await.unwrap();
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    let id = created["contact"]["id"].as_str().unwrap().to_string();
    assert_eq!(created["contact"]["tags"], json!(["vip"]));
    let r = up(json!({"email": "bo@example.com", "fields": {"plan": "pro"}})).await.unwrap();
    assert_eq!(r.status(), 200);
    let again: Value = r.json().await.unwrap();
    assert_eq!(
        (again["created"].clone(), again["contact"]["id"].clone(), again["contact"]["fields"]["plan"].clone()),
        (json!(false), json!(id), json!("pro"))
    );
    up(json!({"email": "cy@example.com"})).await.unwrap();
    let r = up(json!({"email": "nope"})).await.unwrap();
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["path"], "email", "{e}");

    // The API's tag started the tag recipe, like a recipe's would.
    target.wait_for("/vip", 1).await;

    let page: Value = s.api(Method::GET, "/api/v1/contacts?limit=1").send().await.unwrap().json().await.unwrap();
    assert_eq!(page["contacts"][0]["email"], "bo@example.com");
    let cursor = page["next_cursor"].as_str().unwrap();
    let page2: Value = s.api(Method::GET, &format!("/api/v1/contacts?limit=1&cursor={cursor}")).send().await.unwrap().json().await.unwrap();
    assert_eq!(page2["contacts"][0]["email"], "cy@example.com");
    let tagged: Value = s.api(Method::GET, "/api/v1/contacts?tag=vip").send().await.unwrap().json().await.unwrap();
    assert_eq!(tagged["contacts"].as_array().unwrap().len(), 1);
    assert!(tagged.get("next_cursor").is_none());
    let by_email: Value = s.api(Method::GET, "/api/v1/contacts?email=CY%40example.com").send().await.unwrap().json().await.unwrap();
    assert_eq!(by_email["contacts"][0]["email"], "cy@example.com");

    let detail: Value = s.api(Method::GET, &format!("/api/v1/contacts/{id}")).send().await.unwrap().json().await.unwrap();
    assert_eq!(detail["email_original"], "Bo@Example.com");
    let kinds: Vec<&str> = detail["timeline"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["fields_updated", "tag_added", "created"]);

    let r = s.api(Method::DELETE, &format!("/api/v1/contacts/{id}")).send().await.unwrap();
    assert_eq!(r.status(), 200, "the erasure's record");
    let r = s.api(Method::GET, &format!("/api/v1/contacts/{id}")).send().await.unwrap();
    assert_eq!(r.status(), 410, "erased, not unknown");
    let r = s.api(Method::DELETE, &format!("/api/v1/contacts/{id}")).send().await.unwrap();
    assert_eq!(r.status(), 410);
    let r = s.api(Method::GET, "/api/v1/contacts/no-such-id").send().await.unwrap();
    assert_eq!(r.status(), 404);
    let left: Value = s.api(Method::GET, "/api/v1/contacts?tag=vip").send().await.unwrap().json().await.unwrap();
    assert_eq!(left["contacts"], json!([]));
}

#[test]
fn contact_triggers_are_validated() {
    let registry = enlace_connectors::registry();
    let load = |trigger: &str| {
        enlace_recipe::load(
            &format!(
                "id: t\ntrigger: {trigger}\nsteps:\n  - id: s\n    app: contacts\n    action: find_contact\n    with: {{email: \"{{{{trigger.contact.email}}}}\"}}\n"
            ),
            Some("t.yaml"),
            &registry,
        )
    };
    assert!(load("{app: contacts, event: tag_added, with: {tag: vip}}").is_ok());
    assert!(load("{app: contacts, event: contact_created}").is_ok());
    let d = load("{app: contacts, event: contact_created, with: {tag: vip}}").unwrap_err().to_string();
    assert!(d.contains("tag"), "{d}");
    let d = load("{app: contacts, event: tag_added, with: {tag: 5}}").unwrap_err().to_string();
    assert!(d.contains("trigger.with.tag"), "{d}");
    let d = load("{app: contacts, event: deleted}").unwrap_err().to_string();
    assert!(d.contains("contact_created") && d.contains("tag_added"), "{d}");
}
