//! Ad retargeting end to end on the real server, with the real `meta_audiences` and
//! `google_ads_audiences` connectors pointed at a local fake vendor: a person with `ads`
//! consent is uploaded to both platforms, each hashed its own way; a person without it is
//! uploaded nowhere (the step is blocked by the send policy, no request leaves); withdrawing
//! the `ads` consent, and erasing a contact, sends the removals to both platforms with the
//! hashes each one was sent.

use enlace_core::audience::sha256_hex;
use enlace_core::{Credentials, Registry, Secret};
use enlace_store::{ContactKey, ContactOp, RunStatus};
use serde_json::{Value, json};

use crate::support::*;

const AUD: &str = "23851234567890123";
const CREATE: &str = "/gads/v25/customers/1234567890/offlineUserDataJobs:create";

fn registry(target: &Target) -> Registry {
    let mut all: Vec<_> =
        enlace_connectors::all().into_iter().filter(|c| !matches!(c.id(), "meta_audiences" | "google_ads_audiences")).collect();
    all.push(enlace_connector_meta_audiences::connector_at(&target.url("/meta")));
    all.push(enlace_connector_google_ads_audiences::connector_at(&target.url("/gads"), Some("dev-token")));
    Registry::new(all).unwrap()
}

const RECIPE: &str = r#"
id: visitors
trigger: {app: webhook, event: catch, with: {path: visitors}}
steps:
  - id: meta
    app: meta_audiences
    action: add_users
    connection: meta-ads
    with:
      audience_id: "23851234567890123"
      email: "{{trigger.body.email}}"
      phone: "{{trigger.body.phone}}"
  - id: google
    app: google_ads_audiences
    action: add_users
    connection: google-ads
    with:
      audience: {customer_id: "123-456-7890", user_list_id: "987654321"}
      email: "{{trigger.body.email}}"
      phone: "{{trigger.body.phone}}"
"#;

fn evidence() -> enlace_store::Evidence {
    enlace_store::Evidence {
        source: "cookie banner".into(),
        ip: None,
        text: None,
        recorded_at: 1,
        run_id: None,
        details: Default::default(),
    }
}

async fn contact(s: &TestServer, email: &str, phone: &str, ads: Option<enlace_store::ConsentStatus>) -> String {
    let mut fields = serde_json::Map::new();
    fields.insert("phone".into(), json!(phone));
    let c = s.runner.contacts().apply(Default::default(), ContactOp::Upsert { email: email.into(), fields }).await.unwrap();
    if let Some(status) = ads {
        consent(s, &c.outcome.contact.id, status).await;
    }
    c.outcome.contact.id
}

async fn consent(s: &TestServer, id: &str, status: enlace_store::ConsentStatus) {
    let op = ContactOp::RecordConsent {
        key: ContactKey::Id(id.into()),
        consent: enlace_store::NewConsent { purpose: "marketing".into(), channel: "ads".into(), status, evidence: evidence() },
    };
    s.runner.contacts().apply(Default::default(), op).await.unwrap();
}

async fn visit(s: &TestServer, email: &str, phone: &str) -> enlace_store::RunDetail {
    let r = s.http.post(s.url("/hooks/visitors")).json(&json!({"email": email, "phone": phone})).send().await.unwrap();
    assert_eq!(r.status(), 202);
    let run: Value = r.json().await.unwrap();
    let id = run["run_id"].as_str().unwrap().to_string();
    status(&s.store, &id, RunStatus::Succeeded).await;
    s.store.run_detail(&id).await.unwrap().unwrap()
}

fn script_google(target: &Target, jobs: std::ops::Range<u32>) {
    target.script(
        CREATE,
        jobs.map(|n| Answer::status(200, &json!({"resourceName": format!("customers/1234567890/offlineUserDataJobs/{n}")}).to_string()))
            .collect(),
    );
}

async fn consent_gates_uploads_and_withdrawal_or_erasure_removes_on_both_platforms() {
    let target = Target::start().await;
    script_google(&target, 1..10);
    let s = TestServer::start_with(registry(&target)).await;
    let meta_token = Credentials::Bearer { token: Secret::new("EAAB-system-user") };
    s.store.create_connection("meta-ads", "meta_audiences", "Meta ads", &meta_token, None, 0).await.unwrap();
    let google_token = Credentials::OAuth2 { access_token: Secret::new("ya29.google") };
    s.store.create_connection("google-ads", "google_ads_audiences", "Google Ads", &google_token, None, 0).await.unwrap();
    install(&s.runner, RECIPE).await;
    let ada = contact(&s, "Ada@Example.com", "+1 415 555 2671", Some(enlace_store::ConsentStatus::Granted)).await;
    contact(&s, "bo@example.com", "+14155550100", None).await;
    let cy = contact(&s, "cy@example.com", "+447946095800", Some(enlace_store::ConsentStatus::Granted)).await;

    // Ada gave `ads` consent: uploaded to both, each platform's hashing.
    let run = visit(&s, "Ada@Example.com", "+1 415 555 2671").await;
    assert_eq!(run.steps[0].output.as_ref().unwrap()["audience_id"], AUD, "{:?}", run.steps[0].output);
    let meta = target.received_on(&format!("/meta/{AUD}/users"));
    assert_eq!(meta.len(), 1);
    assert_eq!(meta[0].method, "POST");
    assert_eq!(meta[0].header("authorization").as_deref(), Some("Bearer EAAB-system-user"));
    assert_eq!(meta[0].body["payload"]["schema"], json!(["EMAIL", "PHONE"]));
    assert_eq!(meta[0].body["payload"]["data"], json!([[sha256_hex("ada@example.com"), sha256_hex("14155552671")]]));
    assert_eq!(target.count_on(CREATE), 1);
    let create = target.received_on(CREATE);
    assert_eq!(create[0].header("developer-token").as_deref(), Some("dev-token"));
    assert_eq!(create[0].header("authorization").as_deref(), Some("Bearer ya29.google"));
    let ops = target.received_on("/gads/v25/customers/1234567890/offlineUserDataJobs/1:addOperations");
    assert_eq!(
        ops[0].body["operations"][0]["create"]["userIdentifiers"],
        json!([{"hashedEmail": sha256_hex("ada@example.com")}, {"hashedPhoneNumber": sha256_hex("+14155552671")}])
    );
    assert_eq!(target.count_on("/gads/v25/customers/1234567890/offlineUserDataJobs/1:run"), 1);

    // Bo has no `ads` consent: blocked, nothing leaves.
    let before = target.received().len();
    let run = visit(&s, "bo@example.com", "+14155550100").await;
    for step in &run.steps {
        let out = step.output.as_ref().unwrap();
        assert_eq!(out["sent"], false, "{out}");
        assert_eq!(out["policy"]["decision"], "blocked", "{out}");
        assert_eq!(out["policy"]["channel"], "ads");
    }
    assert_eq!(target.received().len(), before, "nobody without ads consent is uploaded");

    // Cy too is uploaded; then Ada withdraws and Cy is erased.
    visit(&s, "cy@example.com", "+447946095800").await;
    consent(&s, &ada, enlace_store::ConsentStatus::Withdrawn).await;
    let r = s.api(reqwest::Method::DELETE, &format!("/api/v1/contacts/{cy}")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let deletes: Vec<_> = target.wait_for(&format!("/meta/{AUD}/users"), 4).await.into_iter().filter(|r| r.method == "DELETE").collect();
    assert_eq!(deletes.len(), 2);
    let mut rows: Vec<Value> = deletes.iter().map(|d| d.body["payload"]["data"][0].clone()).collect();
    rows.sort_by_key(|r| r.to_string());
    let mut want = vec![
        json!([sha256_hex("ada@example.com"), sha256_hex("14155552671")]),
        json!([sha256_hex("cy@example.com"), sha256_hex("447946095800")]),
    ];
    want.sort_by_key(|r| r.to_string());
    assert_eq!(rows, want, "Meta gets the hashes it was sent (phone digits without +)");
    // Google: two removal jobs, each a `remove` operation with E.164 hashes.
    let mut removed = vec![];
    for _ in 0..500 {
        removed = target
            .received()
            .into_iter()
            .filter(|r| r.path.ends_with(":addOperations") && r.body["operations"][0].get("remove").is_some())
            .map(|r| r.body["operations"][0]["remove"]["userIdentifiers"].clone())
            .collect();
        if removed.len() == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(removed.len(), 2, "{:?}", target.received());
    assert!(
        removed.contains(&json!([{"hashedEmail": sha256_hex("ada@example.com")}, {"hashedPhoneNumber": sha256_hex("+14155552671")}])),
        "{removed:?}"
    );
    assert!(
        removed.contains(&json!([{"hashedEmail": sha256_hex("cy@example.com")}, {"hashedPhoneNumber": sha256_hex("+447946095800")}])),
        "{removed:?}"
    );
    for _ in 0..200 {
        let q: Value = s.api(reqwest::Method::GET, "/api/v1/audience-removals?status=done").send().await.unwrap().json().await.unwrap();
        if q.as_array().is_some_and(|a| a.len() == 4) {
            let mut reasons: Vec<&str> = q.as_array().unwrap().iter().filter_map(|r| r["reason"].as_str()).collect();
            reasons.sort();
            assert_eq!(reasons, ["consent_withdrawn", "consent_withdrawn", "erased", "erased"]);
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the four removals never ended as done");
}

on_both_backends!(consent_gates_uploads_and_withdrawal_or_erasure_removes_on_both_platforms);
