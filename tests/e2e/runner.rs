//! The runner: error classes and retries against a real local server, durable delays on a
//! controllable clock, resuming after a restart without calling completed steps again,
//! chaining, loops and branches, cron.

use std::time::Duration;

use enlace_store::{RunStatus, StepStatus};
use serde_json::json;

use crate::support::*;

fn one_call_recipe(target: &Target, path: &str, extra: &str) -> String {
    format!(
        r#"
id: call
trigger: {{app: webhook, event: catch}}
steps:
  - id: post
    app: http
    action: request
    {extra}
    with:
      method: POST
      url: "{url}"
      json:
        email: "{{{{lowercase trigger.body.email}}}}"
"#,
        url = target.url(path)
    )
}

async fn rate_limited_waits_for_retry_after_then_succeeds_with_the_same_key() {
    let target = Target::start().await;
    target.script("/t", vec![Answer::status(429, r#"{"message":"slow down"}"#).header("retry-after", "7")]);
    let (runner, clock, store) = manual_runner(None).await;
    install(&runner, &one_call_recipe(&target, "/t", "")).await;
    let run = start_run(&runner, "call", json!({"email": "ADA@example.com"})).await;
    let r = settled(&store, &run).await;
    assert_eq!(r.status, RunStatus::Queued, "a 429 parks the run for a retry");
    assert_eq!(
        r.due_at,
        Some(clock_now(&runner) + 7_000),
        "the retry waits exactly the server's Retry-After (the backoff ceiling is lower)"
    );
    let d = store.run_detail(&run).await.unwrap().unwrap();
    assert_eq!(d.steps[0].status, StepStatus::Retrying);
    assert_eq!(d.steps[0].error.as_ref().unwrap()["class"], "rate_limited");

    // Not before its time.
    clock.advance(Duration::from_millis(6_999));
    assert_eq!(runner.drain_due().await.unwrap(), 0);
    clock.advance(Duration::from_millis(1));
    assert_eq!(runner.drain_due().await.unwrap(), 1);
    let r = store.get_run(&run).await.unwrap().unwrap();
    assert_eq!(r.status, RunStatus::Succeeded);
    let got = target.received_on("/t");
    assert_eq!(got.len(), 2);
    assert_eq!(got[1].body, json!({"email": "ada@example.com"}));
    let k1 = got[0].header("idempotency-key").unwrap();
    assert_eq!(Some(k1.clone()), got[1].header("idempotency-key"), "a retry sends the same idempotency key");
    assert_eq!(k1, format!("{run}:post"));
}

fn clock_now(r: &enlace_runner::Runner) -> i64 {
    r.now_ms()
}

async fn server_errors_retry_with_backoff_and_full_jitter() {
    let target = Target::start().await;
    target.script("/t", vec![Answer::status(500, "{}"), Answer::status(503, "{}")]);
    let (runner, clock, store) = manual_runner(None).await;
    install(&runner, &one_call_recipe(&target, "/t", r#"retry: {attempts: 4, initial: "10s", max: "1h"}"#)).await;
    let run = start_run(&runner, "call", json!({"email": "a@b.c"})).await;
    let r = settled(&store, &run).await;
    assert_eq!(r.status, RunStatus::Queued);
    let wait1 = r.due_at.unwrap() - runner.now_ms();
    assert!((0..=10_000).contains(&wait1), "first retry waits between 0 and the initial 10s, got {wait1}ms");
    clock.set(r.due_at.unwrap());
    runner.drain_due().await.unwrap();
    let r = store.get_run(&run).await.unwrap().unwrap();
    assert_eq!(r.status, RunStatus::Queued);
    let wait2 = r.due_at.unwrap() - runner.now_ms();
    assert!((0..=20_000).contains(&wait2), "second retry waits up to twice the initial, got {wait2}ms");
    clock.set(r.due_at.unwrap());
    runner.drain_due().await.unwrap();
    assert_eq!(store.get_run(&run).await.unwrap().unwrap().status, RunStatus::Succeeded);
    assert_eq!(target.received_on("/t").len(), 3);
    let d = store.run_detail(&run).await.unwrap().unwrap();
    assert_eq!(d.steps[0].attempts, 3);
}

async fn a_spent_budget_in_the_apps_headers_holds_the_next_call_until_the_reset() {
    let target = Target::start().await;
    // The app answers the first call and says nothing is left until 30 s from now.
    let reset = (chrono::Utc::now().timestamp() + 30).to_string();
    target.script(
        "/t",
        vec![Answer::status(200, "{}").header("x-ratelimit-remaining", "0").header("x-ratelimit-reset", &reset), Answer::status(200, "{}")],
    );
    let (runner, clock, store) = manual_runner(None).await;
    install(&runner, &one_call_recipe(&target, "/t", "")).await;
    let first = start_run(&runner, "call", json!({"email": "a@b.c"})).await;
    assert_eq!(settled(&store, &first).await.status, RunStatus::Succeeded);
    let second = start_run(&runner, "call", json!({"email": "d@e.f"})).await;
    let r = settled(&store, &second).await;
    assert_eq!(r.status, RunStatus::Queued, "the second call waits for the reset instead of being refused");
    let wait = r.due_at.unwrap() - runner.now_ms();
    assert!((20_000..=31_000).contains(&wait), "held until the reset, got {wait}ms");
    assert_eq!(target.received_on("/t").len(), 1, "nothing was sent while the budget was spent");
    clock.set(r.due_at.unwrap());
    runner.drain_due().await.unwrap();
    assert_eq!(store.get_run(&second).await.unwrap().unwrap().status, RunStatus::Succeeded);
    assert_eq!(target.received_on("/t").len(), 2);
}

async fn auth_and_bad_request_fail_at_once_without_retry() {
    let target = Target::start().await;
    target.script("/auth", vec![Answer::status(401, r#"{"error":"invalid_token"}"#)]);
    target.script("/bad", vec![Answer::status(400, r#"{"error":{"message":"email is invalid"}}"#)]);
    let (runner, _clock, store) = manual_runner(None).await;
    install(&runner, &one_call_recipe(&target, "/auth", "")).await;
    let run = start_run(&runner, "call", json!({"email": "a@b.c"})).await;
    let r = settled(&store, &run).await;
    assert_eq!(r.status, RunStatus::Failed);
    assert_eq!(r.error.as_ref().unwrap()["class"], "auth");
    assert_eq!(target.received_on("/auth").len(), 1, "an auth error is not retried blindly");

    install(&runner, &one_call_recipe(&target, "/bad", "")).await;
    let run = start_run(&runner, "call", json!({"email": "a@b.c"})).await;
    let r = settled(&store, &run).await;
    assert_eq!(r.status, RunStatus::Failed);
    let e = r.error.unwrap();
    assert_eq!(e["class"], "permanent");
    assert_eq!(e["status"], 400);
    assert!(e["message"].as_str().unwrap().contains("email is invalid"), "the vendor's message is kept: {e}");
    assert_eq!(target.received_on("/bad").len(), 1);
    assert_eq!(runner.drain_due().await.unwrap(), 0, "nothing is queued for a retry");
}

async fn a_failed_run_replays_from_its_failed_step() {
    let target = Target::start().await;
    target.script("/flaky", vec![Answer::status(500, "{}"), Answer::status(500, "{}")]);
    let (runner, clock, store) = manual_runner(None).await;
    let yaml = format!(
        r#"
id: two
trigger: {{app: webhook, event: catch}}
steps:
  - id: first
    app: http
    action: request
    with: {{method: POST, url: "{a}", json: {{n: 1}}}}
  - id: second
    app: http
    action: request
    retry: {{attempts: 2, initial: "1s"}}
    with: {{method: POST, url: "{b}", json: {{from_first: "{{{{steps.first.body.ok}}}}"}}}}
"#,
        a = target.url("/ok"),
        b = target.url("/flaky")
    );
    install(&runner, &yaml).await;
    let run = start_run(&runner, "two", json!({})).await;
    let r = settled(&store, &run).await;
    clock.set(r.due_at.unwrap());
    runner.drain_due().await.unwrap();
    let r = store.get_run(&run).await.unwrap().unwrap();
    assert_eq!(r.status, RunStatus::Failed, "two attempts, both 500");
    assert_eq!(r.error.as_ref().unwrap()["step"], "second");

    // The target is back: replay.
    runner.replay(&run, false).await.unwrap();
    runner.drain_due().await.unwrap();
    let r = store.get_run(&run).await.unwrap().unwrap();
    assert_eq!(r.status, RunStatus::Succeeded);
    assert_eq!(r.attempt, 2);
    assert_eq!(target.received_on("/ok").len(), 1, "the completed first step is not called again");
    let flaky = target.received_on("/flaky");
    assert_eq!(flaky.len(), 3);
    assert_eq!(flaky[2].body, json!({"from_first": true}), "the replayed step reads the first step's recorded output");
    assert_eq!(flaky[0].header("idempotency-key"), flaky[2].header("idempotency-key"));
    // A succeeded run cannot be replayed.
    assert!(runner.replay(&run, false).await.is_err());
}

async fn a_one_week_delay_is_a_durable_timer_that_survives_a_restart() {
    let target = Target::start().await;
    let (runner, clock, store) = manual_runner(None).await;
    let yaml = format!(
        r#"
id: later
trigger: {{app: webhook, event: catch}}
steps:
  - id: wait
    delay: 1w
  - id: post
    app: http
    action: request
    with: {{method: POST, url: "{u}", json: {{waited: "{{{{steps.wait.until}}}}"}}}}
"#,
        u = target.url("/after")
    );
    install(&runner, &yaml).await;
    let start = runner.now_ms();
    let run = start_run(&runner, "later", json!({})).await;
    let r = settled(&store, &run).await;
    assert_eq!(r.status, RunStatus::Waiting);
    assert_eq!(r.due_at, Some(start + 7 * 86_400_000));
    drop(runner);

    let _ = clock;

    // A new process on the same store, its clock almost a week later: nothing yet.
    let (runner2, clock3, _) = manual_runner(Some(store.clone())).await;
    clock3.set(start + 7 * 86_400_000 - 1_000);
    assert_eq!(runner2.drain_due().await.unwrap(), 0);
    assert!(target.received_on("/after").is_empty());
    clock3.set(start + 7 * 86_400_000);
    assert_eq!(runner2.drain_due().await.unwrap(), 1, "due exactly at its time");
    assert_eq!(store.get_run(&run).await.unwrap().unwrap().status, RunStatus::Succeeded);
    let got = target.received_on("/after");
    assert_eq!(got.len(), 1);
    assert!(got[0].body["waited"].as_str().unwrap().ends_with('Z'));
}

async fn an_interrupted_run_resumes_without_calling_completed_steps_again() {
    let target = Target::start().await;
    // The second call hangs: the "process" dies while it is in flight.
    target.script("/slow", vec![Answer::status(200, "{}").after(Duration::from_secs(30))]);
    target.script("/slow-put", vec![Answer::status(200, "{}").after(Duration::from_secs(30))]);
    let (runner, _clock, store) = manual_runner(None).await;
    let yaml = |id: &str, method: &str, path: &str| {
        format!(
            r#"
id: {id}
trigger: {{app: webhook, event: catch}}
steps:
  - id: first
    app: http
    action: request
    with: {{method: POST, url: "{a}", json: {{n: 1}}}}
  - id: second
    app: http
    action: request
    with: {{method: {method}, url: "{b}", json: {{n: 2}}}}
"#,
            a = target.url("/first"),
            b = target.url(path)
        )
    };
    install(&runner, &yaml("post-twice", "POST", "/slow")).await;
    install(&runner, &yaml("put-twice", "PUT", "/slow-put")).await;
    let run_post = start_run(&runner, "post-twice", json!({})).await;
    let run_put = start_run(&runner, "put-twice", json!({})).await;
    target.wait_for("/slow", 1).await;
    target.wait_for("/slow-put", 1).await;

    // "Restart": a new runner on the same store recovers the runs left running.
    let (runner2, _c, _) = manual_runner(Some(store.clone())).await;
    runner2.load(true).await.unwrap();
    runner2.drain_due().await.unwrap();

    // The PUT is idempotent: sent again with the same key, and the run completes.
    let put = store.get_run(&run_put).await.unwrap().unwrap();
    assert_eq!(put.status, RunStatus::Succeeded, "{:?}", put.error);
    let puts = target.received_on("/slow-put");
    assert_eq!(puts.len(), 2);
    assert_eq!(puts[0].header("idempotency-key"), puts[1].header("idempotency-key"));

    // The POST may have been delivered: not sent again blindly; the run waits for a person.
    let r = store.get_run(&run_post).await.unwrap().unwrap();
    assert_eq!(r.status, RunStatus::Failed);
    assert_eq!(r.error.as_ref().unwrap()["class"], "maybe_delivered");
    assert_eq!(target.received_on("/slow").len(), 1);

    // Either way the completed first steps were not called again.
    assert_eq!(target.received_on("/first").len(), 2, "one first call per run, none on resume");

    // The first process's calls finishing late change nothing: the runs are not theirs anymore.
    drop(runner);
}

async fn emit_chains_recipes_once_and_loops_and_branches_expose_outputs() {
    let target = Target::start().await;
    let (runner, _clock, store) = manual_runner(None).await;
    install(
        &runner,
        &format!(
            r#"
id: listener
trigger: {{app: enlace, event: event, with: {{name: order.paid}}}}
steps:
  - id: each
    foreach: "{{{{trigger.items}}}}"
    steps:
      - id: kind
        branch:
          - if: "{{{{gt item.qty 1}}}}"
            steps:
              - id: bulk
                app: http
                action: request
                with: {{method: POST, url: "{u}", json: {{sku: "{{{{item.sku}}}}", index: "{{{{index}}}}", bulk: true}}}}
          - else:
              - id: single
                app: http
                action: request
                with: {{method: POST, url: "{u}", json: {{sku: "{{{{item.sku}}}}", index: "{{{{index}}}}", bulk: false}}}}
  - id: summary
    app: http
    action: request
    with: {{method: POST, url: "{s}", json: {{count: "{{{{len steps.each}}}}", statuses: "{{{{jsonpath steps '$.bulk[*].status'}}}}"}}}}
"#,
            u = target.url("/line"),
            s = target.url("/summary")
        ),
    )
    .await;
    install(
        &runner,
        r#"
id: shop
trigger: {app: webhook, event: catch}
steps:
  - id: announce
    emit: order.paid
    data:
      items: "{{trigger.body.items}}"
"#,
    )
    .await;
    let run = start_run(&runner, "shop", json!({"items": [{"sku": "a", "qty": 1}, {"sku": "b", "qty": 3}]})).await;
    assert_eq!(settled(&store, &run).await.status, RunStatus::Succeeded);
    runner.drain_due().await.unwrap();
    let lines = target.received_on("/line");
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0].body, json!({"sku": "a", "index": 0, "bulk": false}));
    assert_eq!(lines[1].body, json!({"sku": "b", "index": 1, "bulk": true}));
    let summary = target.received_on("/summary");
    assert_eq!(summary[0].body["count"], 2);
    // After the loop, `steps.bulk` is the list of its per-item outputs (null where it did not run).
    assert_eq!(summary[0].body["statuses"], json!([200]));
    let listener_runs =
        store.list_runs(&enlace_store::RunFilter { recipe_id: Some("listener".into()), limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(listener_runs.len(), 1);
    let d = store.run_detail(&listener_runs[0].id).await.unwrap().unwrap();
    let keys: Vec<&str> = d.steps.iter().map(|s| s.key.as_str()).collect();
    assert!(keys.contains(&"each[0].single") && keys.contains(&"each[1].bulk"), "{keys:?}");
}

async fn cron_fires_once_per_tick() {
    let target = Target::start().await;
    let (runner, clock, store) = manual_runner(None).await;
    clock.set(chrono::DateTime::parse_from_rfc3339("2026-12-01T08:59:30Z").unwrap().timestamp_millis());
    install(
        &runner,
        &format!(
            r#"
id: morning
trigger: {{app: schedule, event: cron, with: {{cron: "0 10 * * *", timezone: Europe/Paris}}}}
steps:
  - id: ping
    app: http
    action: request
    with: {{method: POST, url: "{u}", json: {{at: "{{{{trigger.fired_at}}}}"}}}}
"#,
            u = target.url("/tick")
        ),
    )
    .await;
    assert_eq!(runner.fire_due_schedules().await.unwrap(), 0);
    // 10:00 in Paris is 09:00 UTC in December.
    clock.set(chrono::DateTime::parse_from_rfc3339("2026-12-01T09:00:00Z").unwrap().timestamp_millis());
    assert_eq!(runner.fire_due_schedules().await.unwrap(), 1);
    assert_eq!(runner.fire_due_schedules().await.unwrap(), 0, "a tick fires once");
    runner.drain_due().await.unwrap();
    let got = target.received_on("/tick");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body["at"], "2026-12-01T09:00:00.000Z");
    let _ = store;
}

async fn secrets_are_masked_in_run_history() {
    let target = Target::start().await;
    let (runner, _clock, store) = manual_runner(None).await;
    store.set_secret("CRM_KEY", "sk_live_very_secret", 0).await.unwrap();
    install(
        &runner,
        &format!(
            r#"
id: masked
trigger: {{app: webhook, event: catch}}
steps:
  - id: post
    app: http
    action: request
    with:
      method: POST
      url: "{u}"
      headers: {{X-Key: "{{{{secrets.CRM_KEY}}}}"}}
      json: {{note: "key is {{{{secrets.CRM_KEY}}}}"}}
"#,
            u = target.url("/m")
        ),
    )
    .await;
    let run = start_run(&runner, "masked", json!({})).await;
    assert_eq!(settled(&store, &run).await.status, RunStatus::Succeeded);
    let got = target.received_on("/m");
    assert_eq!(got[0].header("x-key").as_deref(), Some("sk_live_very_secret"), "the real value is sent");
    let d = store.run_detail(&run).await.unwrap().unwrap();
    let stored = serde_json::to_string(&d.steps).unwrap();
    assert!(!stored.contains("sk_live_very_secret"), "run history holds no secret: {stored}");
    assert_eq!(d.steps[0].input.as_ref().unwrap()["headers"]["X-Key"], "[secret]");
    assert_eq!(d.steps[0].input.as_ref().unwrap()["json"]["note"], "key is [secret]");
}

async fn a_caller_that_goes_away_never_leaves_a_run_without_its_worker() {
    let target = Target::start().await;
    let (runner, _clock, store) = manual_runner(None).await;
    install(&runner, &one_call_recipe(&target, "/t", "")).await;
    // Callers abandon `accept` at every point of its way (a webhook client disconnecting).
    for i in 0..60u64 {
        let r = runner.clone();
        let h = tokio::spawn(async move { start_run(&r, "call", json!({"email": "x@y.z"})).await });
        for _ in 0..(i % 6) {
            tokio::task::yield_now().await;
        }
        h.abort();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let runs = store.list_runs(&enlace_store::RunFilter { limit: 1000, ..Default::default() }).await.unwrap();
    for r in &runs {
        let r = settled(&store, &r.id).await;
        assert_eq!(r.status, RunStatus::Succeeded, "run {} was stored and then left behind", r.id);
    }
    assert_eq!(target.received_on("/t").len(), runs.len());
}

on_both_backends!(
    rate_limited_waits_for_retry_after_then_succeeds_with_the_same_key,
    a_spent_budget_in_the_apps_headers_holds_the_next_call_until_the_reset,
    server_errors_retry_with_backoff_and_full_jitter,
    auth_and_bad_request_fail_at_once_without_retry,
    a_failed_run_replays_from_its_failed_step,
    a_one_week_delay_is_a_durable_timer_that_survives_a_restart,
    an_interrupted_run_resumes_without_calling_completed_steps_again,
    emit_chains_recipes_once_and_loops_and_branches_expose_outputs,
    cron_fires_once_per_tick,
    secrets_are_masked_in_run_history,
    a_caller_that_goes_away_never_leaves_a_run_without_its_worker,
);
