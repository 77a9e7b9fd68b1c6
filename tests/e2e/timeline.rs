//! The contact timeline as an activity log, end to end on the real server and both stores:
//! activity recorded through the API (idempotent per key) and by the `contacts.record_event`
//! action, read back a page at a time, starting `contacts.event` recipes of its kind; lead
//! scoring rules set through the API, a threshold crossed once starting the "hand to sales"
//! recipe (`enlace.event`), the score on the contact.

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::*;

fn on_purchase(url: &str) -> String {
    format!(
        r#"
id: thank-buyer
trigger: {{app: contacts, event: event, with: {{kind: purchase}}}}
steps:
  - id: post
    app: http
    action: request
    with:
      method: POST
      url: "{url}"
      json:
        email: "{{{{trigger.contact.email}}}}"
        order: "{{{{trigger.event.data.order_id}}}}"
"#
    )
}

fn hand_to_sales(url: &str) -> String {
    format!(
        r#"
id: hand-to-sales
trigger: {{app: enlace, event: event, with: {{name: lead.qualified}}}}
steps:
  - id: task
    app: http
    action: request
    with:
      method: POST
      url: "{url}"
      json:
        email: "{{{{trigger.contact.email}}}}"
        threshold: "{{{{trigger.threshold}}}}"
        score: "{{{{trigger.score}}}}"
"#
    )
}

const FORM_RECIPE: &str = r#"
id: form
trigger: {app: webhook, event: catch}
steps:
  - id: contact
    app: contacts
    action: upsert_contact
    with: {email: "{{trigger.body.email}}"}
  - id: record
    app: contacts
    action: record_event
    with:
      contact_id: "{{steps.contact.id}}"
      kind: form_submitted
      data: {form: "{{trigger.body.form}}"}
"#;

async fn activity_is_recorded_queried_scored_and_hands_leads_to_sales() {
    let target = Target::start().await;
    let s = TestServer::start().await;
    install(&s.runner, &on_purchase(&target.url("/purchase"))).await;
    install(&s.runner, &hand_to_sales(&target.url("/sales"))).await;
    install(&s.runner, FORM_RECIPE).await;
    let doc: Value = s.http.get(s.url("/api/v1/openapi.json")).send().await.unwrap().json().await.unwrap();
    for p in ["/api/v1/contacts/{id}/events", "/api/v1/contacts/{id}/timeline", "/api/v1/scoring"] {
        assert!(doc["paths"][p].is_object(), "{p} is documented");
    }
    assert_eq!(s.http.get(s.url("/api/v1/scoring")).send().await.unwrap().status(), 401);

    // Scoring rules: every problem reported, the first one's path named.
    let put = |body: Value| s.api(Method::PUT, "/api/v1/scoring").json(&body).send();
    let r = put(json!({"rules": [{"kind": "page_viewed", "points": 5}], "thresholds": [{"name": "q", "score": -1, "event": "Lead!"}]}))
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["path"], "thresholds[0].score", "{e}");
    assert!(e["message"].as_str().unwrap().contains("thresholds[0].event"), "{e}");
    let r = put(json!({"rules": [{"kind": "page_viewed", "point": 5}]})).await.unwrap();
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert!(e["message"].as_str().unwrap().contains("point"), "{e}");
    let rules = json!({
        "half_life": "30d",
        "rules": [
            {"kind": "page_viewed", "points": 10, "match": {"url": "https://shop.example.com/pricing*"}},
            {"kind": "form_submitted", "points": 25}
        ],
        "thresholds": [{"name": "qualified", "score": 50, "event": "lead.qualified"}]
    });
    assert_eq!(put(rules.clone()).await.unwrap().status(), 200);
    let got: Value = s.api(Method::GET, "/api/v1/scoring").send().await.unwrap().json().await.unwrap();
    assert_eq!((got["thresholds"][0]["name"].clone(), got["thresholds"][0]["score"].as_f64()), (json!("qualified"), Some(50.0)));

    let c: Value =
        s.api(Method::POST, "/api/v1/contacts").json(&json!({"email": "lea@example.com"})).send().await.unwrap().json().await.unwrap();
    let id = c["contact"]["id"].as_str().unwrap().to_string();
    let events = format!("/api/v1/contacts/{id}/events");

    // A purchase, recorded twice with one key: stored once, its recipe started once.
    let buy =
        json!({"kind": "purchase", "data": {"order_id": "A-1001", "total": 42.5}, "at": "2026-11-20T10:00:00Z", "key": "order-A-1001"});
    let r = s.api(Method::POST, &events).json(&buy).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let first: Value = r.json().await.unwrap();
    assert_eq!(first["event"]["at"], "2026-11-20T10:00:00.000Z");
    let r = s.api(Method::POST, &events).json(&buy).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let second: Value = r.json().await.unwrap();
    assert_eq!((second["recorded"].clone(), second["event"]["id"].clone()), (json!(false), first["event"]["id"].clone()));
    // The header works as the key too.
    let view = json!({"kind": "page_viewed", "data": {"url": "https://shop.example.com/blog/cats"}});
    for _ in 0..2 {
        s.api(Method::POST, &events).header("idempotency-key", "view-1").json(&view).send().await.unwrap();
    }
    let got = target.wait_for("/purchase", 1).await;
    assert_eq!(got[0].body, json!({"email": "lea@example.com", "order": "A-1001"}));

    // Bad requests name what is wrong.
    let r = s.api(Method::POST, &events).json(&json!({"kind": "Page Viewed"})).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["path"], "kind");
    let r = s.api(Method::POST, &events).json(&json!({"kind": "x", "at": "yesterday"})).send().await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["path"], "at");
    let r = s.api(Method::POST, "/api/v1/contacts/nope/events").json(&json!({"kind": "x"})).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let r = s.http.post(s.url(&events)).json(&json!({"kind": "x"})).send().await.unwrap();
    assert_eq!(r.status(), 401);

    // A form through a recipe (the action), then pricing views: 25 + 4 x 10 crosses 50
    // on the third (55), once; the sales recipe starts once with the contact and its score.
    let run = start_run(&s.runner, "form", json!({"email": "lea@example.com", "form": "demo-request"})).await;
    status(&s.store, &run, enlace_store::RunStatus::Succeeded).await;
    for i in 0..4 {
        let v = json!({"kind": "page_viewed", "data": {"url": format!("https://shop.example.com/pricing?v={i}")}});
        let r = s.api(Method::POST, &events).json(&v).send().await.unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    }
    let sales = target.wait_for("/sales", 1).await;
    assert_eq!(sales[0].body["email"], "lea@example.com");
    assert_eq!(sales[0].body["threshold"], "qualified");
    assert!(sales[0].body["score"].as_f64().unwrap() >= 50.0, "{}", sales[0].body);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(target.count_on("/sales"), 1, "a threshold fires once per crossing");
    let detail: Value = s.api(Method::GET, &format!("/api/v1/contacts/{id}")).send().await.unwrap().json().await.unwrap();
    let score = detail["score"].as_f64().unwrap();
    assert!((64.9..=65.0).contains(&score), "the contact shows its score: {score}");

    // The timeline: newest first, by kind, paged.
    let tl = |q: &str| s.api(Method::GET, &format!("/api/v1/contacts/{id}/timeline{q}")).send();
    let all: Value = tl("").await.unwrap().json().await.unwrap();
    let kinds: Vec<&str> = all["events"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "page_viewed").count(), 5);
    assert_eq!(kinds.iter().filter(|k| **k == "score_threshold").count(), 1);
    assert_eq!(kinds.last(), Some(&"purchase"), "the purchase happened before everything else: {kinds:?}");
    let forms: Value = tl("?kind=form_submitted,purchase").await.unwrap().json().await.unwrap();
    let f: Vec<&str> = forms["events"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(f, ["form_submitted", "purchase"]);
    assert_eq!(forms["events"][0]["data"]["form"], "demo-request");
    assert_eq!(forms["events"][0]["run_id"], json!(run));
    let p1: Value = tl("?kind=page_viewed&limit=3").await.unwrap().json().await.unwrap();
    let cursor = p1["next_cursor"].as_str().unwrap();
    let p2: Value = tl(&format!("?kind=page_viewed&limit=3&cursor={cursor}")).await.unwrap().json().await.unwrap();
    assert_eq!(p2["events"].as_array().unwrap().len(), 2);
    assert!(p2.get("next_cursor").is_none());
    let old: Value = tl("?until=2026-11-21T00:00:00Z").await.unwrap().json().await.unwrap();
    assert_eq!(old["events"].as_array().unwrap().len(), 1);
    let r = tl("?since=last-week").await.unwrap();
    assert_eq!((r.status().as_u16(), r.json::<Value>().await.unwrap()["path"].clone()), (400, json!("since")));
    assert_eq!(tl("?kind=Nope").await.unwrap().status(), 400);
    assert_eq!(s.api(Method::GET, "/api/v1/contacts/nope/timeline").send().await.unwrap().status(), 404);
}

on_both_backends!(activity_is_recorded_queried_scored_and_hands_leads_to_sales);

#[test]
fn event_triggers_are_validated() {
    let registry = enlace_connectors::registry();
    let load = |with: &str| {
        enlace_recipe::load(
            &format!(
                "id: t\ntrigger: {{app: contacts, event: event{with}}}\nsteps:\n  - id: s\n    filter: \"{{{{trigger.event.kind}}}}\"\n"
            ),
            Some("t.yaml"),
            &registry,
        )
    };
    assert!(load("").is_ok());
    assert!(load(", with: {kind: page_viewed}").is_ok());
    let d = load(", with: {kind: Page Viewed}").unwrap_err().to_string();
    assert!(d.contains("trigger.with.kind") && d.contains("event kind"), "{d}");
    let d = load(", with: {tag: vip}").unwrap_err().to_string();
    assert!(d.contains("tag"), "{d}");
}
