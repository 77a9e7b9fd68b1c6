//! The real router on 127.0.0.1:0: webhook ingress and the REST API.

use std::time::Duration;

use enlace_store::RunStatus;
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::*;

fn signed_recipe(target: &Target) -> String {
    format!(
        r#"
id: signups
trigger:
  app: webhook
  event: catch
  with:
    path: signups
    secret: "{{{{secrets.SIGNUP_HMAC}}}}"
    dedupe_key: "{{{{trigger.body.event_id}}}}"
    max_body: 2048
steps:
  - id: post
    app: http
    action: request
    with:
      method: POST
      url: "{u}"
      json:
        greeting: "Hi {{{{trigger.body.user.first_name}}}}"
        email: "{{{{lowercase trigger.body.user.email}}}}"
        event_id: "{{{{trigger.body.event_id}}}}"
        plan: "{{{{trigger.body.plan.tier}}}}"
"#,
        u = target.url("/sink")
    )
}

async fn setup() -> (TestServer, Target) {
    let target = Target::start().await;
    let s = TestServer::start().await;
    s.store.set_secret("SIGNUP_HMAC", "whsec_test", 0).await.unwrap();
    let resp = s
        .api(Method::POST, "/api/v1/recipes")
        .header("content-type", "application/yaml")
        .body(signed_recipe(&target))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    (s, target)
}

fn payload(event_id: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"event_id": event_id, "user": {"first_name": "Ada", "email": "Ada@Example.com"}, "plan": {"tier": "pro"}}))
        .unwrap()
}

async fn post_hook(s: &TestServer, body: &[u8], sig: Option<String>) -> reqwest::Response {
    let mut req = s.http.post(s.url("/hooks/signups")).header("content-type", "application/json").body(body.to_vec());
    if let Some(sig) = sig {
        req = req.header("x-enlace-signature", sig);
    }
    req.send().await.unwrap()
}

async fn run_count(s: &TestServer) -> usize {
    s.store.list_runs(&enlace_store::RunFilter { limit: 1000, ..Default::default() }).await.unwrap().len()
}

#[tokio::test]
async fn a_signed_webhook_reaches_the_target_mapped_and_is_in_the_history() {
    let (s, target) = setup().await;
    let body = payload("evt_1");
    let resp = post_hook(&s, &body, Some(sign("whsec_test", &body))).await;
    assert_eq!(resp.status(), 202);
    let run_id = resp.json::<Value>().await.unwrap()["run_id"].as_str().unwrap().to_string();
    // 202 came after the durable write: the run is in the store already.
    assert!(s.store.get_run(&run_id).await.unwrap().is_some());
    let got = target.wait_for("/sink", 1).await;
    assert_eq!(got[0].body, json!({"greeting": "Hi Ada", "email": "ada@example.com", "event_id": "evt_1", "plan": "pro"}));
    status(&s.store, &run_id, RunStatus::Succeeded).await;

    let detail: Value = s.api(Method::GET, &format!("/api/v1/runs/{run_id}")).send().await.unwrap().json().await.unwrap();
    assert_eq!(detail["status"], "succeeded");
    assert_eq!(detail["steps"][0]["input"]["json"]["email"], "ada@example.com");
    assert_eq!(detail["steps"][0]["output"]["status"], 200);
    assert_eq!(detail["event"]["payload"]["body"]["event_id"], "evt_1");
    let m = s.http.get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(m.contains(r#"enlace_events_accepted_total{source="webhook"} 1"#), "{m}");
    assert!(m.contains(r#"enlace_runs_total{status="succeeded"} 1"#), "{m}");
    assert!(m.contains(r#"enlace_step_duration_seconds_count{app="http",action="request"} 1"#), "{m}");
    let list: Value = s.api(Method::GET, "/api/v1/runs?recipe=signups&status=succeeded").send().await.unwrap().json().await.unwrap();
    assert_eq!(list["runs"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn bad_signature_401_and_no_run() {
    let (s, target) = setup().await;
    let body = payload("evt_2");
    let resp = post_hook(&s, &body, Some(sign("wrong", &body))).await;
    assert_eq!(resp.status(), 401);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["code"], "bad_signature");
    let resp = post_hook(&s, &body, None).await;
    assert_eq!(resp.status(), 401);
    assert!(resp.json::<Value>().await.unwrap()["message"].as_str().unwrap().contains("header is missing"));
    // A signature of another body does not do either.
    let resp = post_hook(&s, &body, Some(sign("whsec_test", b"{}"))).await;
    assert_eq!(resp.status(), 401);
    assert_eq!(run_count(&s).await, 0);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(target.received().is_empty());
}

#[tokio::test]
async fn oversized_413_malformed_400_unknown_404() {
    let (s, _target) = setup().await;
    let big = vec![b' '; 4096];
    let resp = post_hook(&s, &big, Some(sign("whsec_test", &big))).await;
    assert_eq!(resp.status(), 413);
    assert_eq!(resp.json::<Value>().await.unwrap()["code"], "payload_too_large");

    let bad = b"{\"event_id\": \"x\",".to_vec();
    let resp = post_hook(&s, &bad, Some(sign("whsec_test", &bad))).await;
    assert_eq!(resp.status(), 400);
    let v = redact(resp.json::<Value>().await.unwrap());
    insta::assert_json_snapshot!("malformed_json", v);

    let resp = s.http.post(s.url("/hooks/nobody-here")).body("{}").send().await.unwrap();
    assert_eq!(resp.status(), 404);
    let v = redact(resp.json::<Value>().await.unwrap());
    insta::assert_json_snapshot!("unknown_hook", v);
    assert_eq!(run_count(&s).await, 0);
}

#[tokio::test]
async fn the_same_dedupe_key_twice_gives_one_run() {
    let (s, target) = setup().await;
    let body = payload("evt_same");
    let a = post_hook(&s, &body, Some(sign("whsec_test", &body))).await;
    assert_eq!(a.status(), 202);
    let a: Value = a.json().await.unwrap();
    let b = post_hook(&s, &body, Some(sign("whsec_test", &body))).await;
    assert_eq!(b.status(), 200);
    let b: Value = b.json().await.unwrap();
    assert_eq!(b["duplicate"], true);
    assert_eq!(a["run_id"], b["run_id"]);
    target.wait_for("/sink", 1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(target.received_on("/sink").len(), 1);
    assert_eq!(run_count(&s).await, 1);
}

#[tokio::test]
async fn synchronous_webhook_answers_with_the_runs_result_and_inbound_limit_429() {
    let target = Target::start().await;
    target.script("/answer", vec![Answer::status(200, r#"{"ok":true,"id":"crm_1"}"#)]);
    let s = TestServer::start().await;
    let yaml = format!(
        r#"
id: sync
trigger:
  app: webhook
  event: catch
  with:
    respond: {{after_run: "{{{{steps.post.body}}}}", timeout: 5s}}
    rate_limit: 2/m
steps:
  - id: post
    app: http
    action: request
    with: {{method: POST, url: "{u}", json: {{q: "{{{{trigger.query.q}}}}"}}}}
"#,
        u = target.url("/answer")
    );
    let r = s.api(Method::POST, "/api/v1/recipes").header("content-type", "application/yaml").body(yaml).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let resp = s.http.post(s.url("/hooks/sync?q=hello")).json(&json!({})).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().contains_key("x-enlace-run-id"));
    assert_eq!(resp.json::<Value>().await.unwrap(), json!({"ok": true, "id": "crm_1"}));
    assert_eq!(target.received_on("/answer")[0].body, json!({"q": "hello"}));
    let second = s.http.post(s.url("/hooks/sync?q=again")).json(&json!({})).send().await.unwrap();
    assert_eq!(second.status(), 200);
    let third = s.http.post(s.url("/hooks/sync?q=over")).json(&json!({})).send().await.unwrap();
    assert_eq!(third.status(), 429);
    assert!(third.headers().get("retry-after").is_some());
    assert_eq!(third.json::<Value>().await.unwrap()["code"], "rate_limited");
}

#[tokio::test]
async fn api_needs_a_token_and_speaks_one_error_shape() {
    let s = TestServer::start().await;
    let r = s.http.get(s.url("/api/v1/recipes")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("x-request-id"));
    let v = redact(r.json().await.unwrap());
    insta::assert_json_snapshot!("no_token", v);
    let r = s.http.get(s.url("/api/v1/recipes")).bearer_auth("enl_nope").send().await.unwrap();
    assert_eq!(r.status(), 401);
    // These need no token.
    for path in ["/healthz", "/metrics", "/api/v1/openapi.json", "/"] {
        assert_eq!(s.http.get(s.url(path)).send().await.unwrap().status(), 200, "{path}");
    }
    let r = s.api(Method::GET, "/api/v1/runs?limit=0").send().await.unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!((v["code"].as_str(), v["path"].as_str()), (Some("invalid_request"), Some("limit")));
    let r = s.api(Method::GET, "/api/v1/runs?status=done").send().await.unwrap();
    assert!(r.json::<Value>().await.unwrap()["message"].as_str().unwrap().contains("valid: queued, running"));
    let r = s.api(Method::GET, "/api/v1/runs/nope").send().await.unwrap();
    assert_eq!(r.status(), 404);
    let r = s.api(Method::DELETE, "/api/v1/runs").send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "invalid_request");
}

#[tokio::test]
async fn recipes_validate_version_enable_disable_through_the_api() {
    let s = TestServer::start().await;
    let bad = json!({"id": "Bad Id", "trigger": {"app": "webhok", "event": "catch"}, "steps": []});
    let r = s.api(Method::POST, "/api/v1/recipes/validate").json(&bad).send().await.unwrap();
    assert_eq!(r.status(), 422);
    let v = redact(r.json().await.unwrap());
    insta::assert_json_snapshot!("invalid_recipe", v);

    let mut good = json!({"id": "ping", "trigger": {"app": "webhook", "event": "catch"}, "steps": [{"id": "stop", "filter": "{{eq trigger.body.go true}}"}]});
    let r = s.api(Method::POST, "/api/v1/recipes").json(&good).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let r = s.api(Method::POST, "/api/v1/recipes").json(&good).send().await.unwrap();
    assert_eq!(r.status(), 409);
    good["name"] = json!("Ping");
    let r: Value = s.api(Method::PUT, "/api/v1/recipes/ping").json(&good).send().await.unwrap().json().await.unwrap();
    assert_eq!((r["new_version"].as_bool(), r["recipe"]["version"].as_i64()), (Some(true), Some(2)));
    let r: Value = s.api(Method::PUT, "/api/v1/recipes/ping").json(&good).send().await.unwrap().json().await.unwrap();
    assert_eq!(r["new_version"], false, "the same body is not a new version");
    let versions: Value = s.api(Method::GET, "/api/v1/recipes/ping/versions").send().await.unwrap().json().await.unwrap();
    assert_eq!(versions.as_array().unwrap().len(), 2);
    assert_eq!(versions[0]["source"].get("name"), None);

    // A filtered run, then disable: the hook is gone.
    let r = s.http.post(s.url("/hooks/ping")).json(&json!({"go": false})).send().await.unwrap();
    assert_eq!(r.status(), 202);
    let run_id = r.json::<Value>().await.unwrap()["run_id"].as_str().unwrap().to_string();
    status(&s.store, &run_id, RunStatus::Filtered).await;
    let r: Value = s.api(Method::POST, "/api/v1/recipes/ping/disable").send().await.unwrap().json().await.unwrap();
    assert_eq!(r["enabled"], false);
    assert_eq!(s.http.post(s.url("/hooks/ping")).json(&json!({})).send().await.unwrap().status(), 404);
    s.api(Method::POST, "/api/v1/recipes/ping/enable").send().await.unwrap();
    assert_eq!(s.http.post(s.url("/hooks/ping")).json(&json!({})).send().await.unwrap().status(), 202);
}

#[tokio::test]
async fn cancel_a_waiting_run_and_replay_it() {
    let target = Target::start().await;
    let s = TestServer::start().await;
    let yaml = format!(
        "id: slow\ntrigger: {{app: webhook, event: catch}}\nsteps:\n  - id: pause\n    delay: 1h\n  - id: post\n    app: http\n    action: request\n    with: {{url: \"{}\", method: POST}}\n",
        target.url("/x")
    );
    s.api(Method::POST, "/api/v1/recipes").header("content-type", "application/yaml").body(yaml).send().await.unwrap();
    let r: Value = s.http.post(s.url("/hooks/slow")).json(&json!({})).send().await.unwrap().json().await.unwrap();
    let id = r["run_id"].as_str().unwrap().to_string();
    status(&s.store, &id, RunStatus::Waiting).await;
    let c: Value = s.api(Method::POST, &format!("/api/v1/runs/{id}/cancel")).send().await.unwrap().json().await.unwrap();
    assert_eq!(c["status"], "cancelled");
    let again = s.api(Method::POST, &format!("/api/v1/runs/{id}/cancel")).send().await.unwrap();
    assert_eq!(again.status(), 409);
    let rp: Value = s.api(Method::POST, &format!("/api/v1/runs/{id}/replay")).send().await.unwrap().json().await.unwrap();
    assert_eq!((rp["status"].as_str(), rp["attempt"].as_i64()), (Some("queued"), Some(2)));
    // The delay keeps its original due time: it is still waiting.
    let w = status(&s.store, &id, RunStatus::Waiting).await;
    assert!(w.due_at.unwrap() > s.runner.now_ms() + 3_000_000);
}

#[tokio::test]
async fn openapi_covers_every_api_route_and_metrics_count() {
    let s = TestServer::start().await;
    let doc: Value = s.http.get(s.url("/api/v1/openapi.json")).send().await.unwrap().json().await.unwrap();
    let paths: Vec<&String> = doc["paths"].as_object().unwrap().keys().collect();
    for p in [
        "/api/v1/recipes",
        "/api/v1/recipes/validate",
        "/api/v1/recipes/{id}",
        "/api/v1/recipes/{id}/versions",
        "/api/v1/runs",
        "/api/v1/runs/{id}",
        "/api/v1/runs/{id}/replay",
        "/api/v1/runs/{id}/cancel",
    ] {
        assert!(paths.iter().any(|x| *x == p), "{p} missing from the OpenAPI document: {paths:?}");
    }
    // Every documented route answers (with 401 for no token, never 404).
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let url = s.url(&path.replace("{id}", "x").replace("{version}", "1").replace("{app}", "http").replace("{name}", "x"));
            let r = s.http.request(method.to_uppercase().parse().unwrap(), url).send().await.unwrap();
            assert_eq!(r.status(), 401, "{method} {path}");
        }
    }
    let m = s.http.get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(m.contains("enlace_http_requests_total"), "{m}");
}

#[tokio::test]
async fn connection_credentials_are_sent_and_never_shown() {
    let target = Target::start().await;
    let s = TestServer::start().await;
    let r = s
        .api(Method::POST, "/api/v1/connections")
        .json(&json!({"id": "crm", "app": "http", "name": "Our CRM", "credentials": {"kind": "bearer", "token": "tok_live_123456"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let listed = s.api(Method::GET, "/api/v1/connections").send().await.unwrap().text().await.unwrap();
    assert!(listed.contains("Our CRM") && !listed.contains("tok_live_123456"), "{listed}");
    let bad = s
        .api(Method::POST, "/api/v1/connections")
        .json(&json!({"id": "Bad Id", "app": "http", "credentials": {"kind": "none"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.json::<Value>().await.unwrap()["path"], "id");
    let yaml = format!(
        "id: withconn\ntrigger: {{app: webhook, event: catch}}\nsteps:\n  - id: call\n    app: http\n    action: request\n    connection: crm\n    on_error: continue\n    with: {{method: GET, url: \"{}\"}}\n  - id: after\n    app: http\n    action: request\n    with: {{method: POST, url: \"{}\", json: {{previous: \"{{{{steps.call.error.class}}}}\"}}}}\n",
        target.url("/me"),
        target.url("/after")
    );
    target.script("/me", vec![Answer::status(403, r#"{"message":"forbidden"}"#)]);
    s.api(Method::POST, "/api/v1/recipes").header("content-type", "application/yaml").body(yaml).send().await.unwrap();
    let r: Value = s.http.post(s.url("/hooks/withconn")).json(&json!({})).send().await.unwrap().json().await.unwrap();
    let run_id = r["run_id"].as_str().unwrap();
    status(&s.store, run_id, RunStatus::Succeeded).await;
    let got = target.received_on("/me");
    assert_eq!(got[0].header("authorization").as_deref(), Some("Bearer tok_live_123456"));
    // on_error: continue turned the refusal into the step's output and went on.
    assert_eq!(target.received_on("/after")[0].body, json!({"previous": "auth"}));
    let detail = s.api(Method::GET, &format!("/api/v1/runs/{run_id}")).send().await.unwrap().text().await.unwrap();
    assert!(!detail.contains("tok_live_123456"), "{detail}");
}

#[tokio::test]
async fn concurrent_webhooks_batch_into_one_run_each_and_duplicates_into_none() {
    let (s, target) = setup().await;
    // 20 copies of one event at once: one run, and every answer names it.
    let body = payload("evt_storm");
    let sig = sign("whsec_test", &body);
    let answers = futures::future::join_all((0..20).map(|_| post_hook(&s, &body, Some(sig.clone())))).await;
    let mut ids = std::collections::BTreeSet::new();
    for r in answers {
        assert!(matches!(r.status().as_u16(), 200 | 202));
        ids.insert(r.json::<Value>().await.unwrap()["run_id"].as_str().unwrap().to_string());
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    // 150 different events at once: 150 runs, each delivered once.
    let bodies: Vec<Vec<u8>> = (0..150).map(|i| payload(&format!("evt_{i}"))).collect();
    let answers = futures::future::join_all(bodies.iter().map(|b| post_hook(&s, b, Some(sign("whsec_test", b))))).await;
    assert!(answers.iter().all(|r| r.status() == 202));
    let got = target.wait_for("/sink", 151).await;
    let distinct: std::collections::BTreeSet<String> = got.iter().map(|r| r.body["event_id"].as_str().unwrap().to_string()).collect();
    assert_eq!(distinct.len(), 151);
    assert_eq!(run_count(&s).await, 151);
}

async fn the_kill_switch_disables_a_recipe_and_cancels_what_it_has_pending() {
    let target = Target::start().await;
    let s = TestServer::start().await;
    for id in ["promo", "other"] {
        let yaml = format!(
            "id: {id}\ntrigger: {{app: webhook, event: catch}}\nsteps:\n  - id: wait\n    delay: 2d\n  - id: post\n    app: http\n    action: request\n    with: {{method: POST, url: \"{}\", json: {{}}}}\n",
            target.url("/sent")
        );
        let r = s.api(Method::POST, "/api/v1/recipes").header("content-type", "application/yaml").body(yaml).send().await.unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    }
    let fire = |path: &'static str| {
        let req = s.http.post(s.url(&format!("/hooks/{path}"))).json(&json!({}));
        async move { req.send().await.unwrap().json::<Value>().await.unwrap()["run_id"].as_str().unwrap().to_string() }
    };
    let mut promo = vec![];
    for _ in 0..3 {
        promo.push(fire("promo").await);
    }
    let other = fire("other").await;
    for r in promo.iter().chain([&other]) {
        status(&s.store, r, RunStatus::Waiting).await;
    }
    let r = s.api(Method::POST, "/api/v1/recipes/promo/kill").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["cancelled_runs"], 3, "{v}");
    assert_eq!(v["recipe"]["enabled"], false, "{v}");
    for r in &promo {
        let run = s.store.get_run(r).await.unwrap().unwrap();
        assert_eq!(run.status, RunStatus::Cancelled);
        assert!(run.error.unwrap()["message"].as_str().unwrap().contains("kill switch"));
    }
    // Other recipes are untouched; the killed one takes no new event.
    assert_eq!(s.store.get_run(&other).await.unwrap().unwrap().status, RunStatus::Waiting);
    assert_eq!(s.http.post(s.url("/hooks/promo")).json(&json!({})).send().await.unwrap().status(), 404);
    // Nothing it had pending is left to run.
    assert_eq!(s.runner.drain_due().await.unwrap(), 0);
    assert!(target.received_on("/sent").is_empty());
    assert_eq!(s.api(Method::POST, "/api/v1/recipes/nope/kill").send().await.unwrap().status(), 404);
}

on_both_backends!(the_kill_switch_disables_a_recipe_and_cancels_what_it_has_pending);
