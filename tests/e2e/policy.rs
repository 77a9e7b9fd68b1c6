//! The send policy end to end (issue 5, items 5 and 6), on both stores, with a virtual clock
//! and a real SMTP server: no marketing email without consent, from any recipe; the fourth
//! marketing email in 30 days deferred, then sent when a slot frees; a STOP by SMS blocking
//! the next SMS from every recipe; a message due at 03:00 local time leaving at 08:00 local;
//! a replayed run not sending its email again; sends above a recipe's limits held for
//! approval, approved, and cancelled by the kill switch.

use std::sync::Arc;
use std::time::Duration;

use enlace_core::contacts::{ConsentStatus, ContactKey, ContactOp, Evidence, NewConsent, WriteContext};
use enlace_core::{AuthKind, parse_credentials};
use enlace_runner::clock::{Clock, ManualClock};
use enlace_runner::{Runner, RunnerConfig};
use enlace_store::{ContactWrite, RunStatus, Store};
use serde_json::{Map, Value, json};

use crate::smtp::SmtpServer;
use crate::support::*;

const DAY: Duration = Duration::from_secs(86_400);

/// A runner with a manual clock (2026-09-21 14:13 UTC) on a fresh store, the given
/// connectors, and an SMTP connection `mail` to `smtp` when given.
async fn policy_runner(registry: enlace_core::Registry, smtp: Option<&SmtpServer>) -> (Runner, ManualClock, Store) {
    let store = test_store().await;
    let clock = ManualClock::new(1_790_000_000_000);
    let runner = Runner::new(store.clone(), registry, RunnerConfig::default(), transport(), Arc::new(clock.clone()) as Arc<dyn Clock>);
    runner.load(false).await.unwrap();
    if let Some(smtp) = smtp {
        let creds = parse_credentials(&smtp.credentials("s3cret-Pa55word"), AuthKind::Smtp).unwrap();
        store.create_connection("mail", "smtp", "mail", &creds, None, 0).await.unwrap();
    }
    (runner, clock, store)
}

fn mail_recipe(id: &str, extra: &str) -> String {
    format!(
        r#"
id: {id}
trigger: {{app: webhook, event: catch}}
steps:
  - id: mail
    app: smtp
    action: send_email
    connection: mail
{extra}    with:
      from: "Pet Shop <news@example.com>"
      to: "{{{{trigger.body.email}}}}"
      subject: "From {id}"
      text: "Hello from {id}"
"#
    )
}

async fn contact(store: &Store, clock: &ManualClock, email: &str, fields: Value) -> String {
    let fields: Map<String, Value> = fields.as_object().cloned().unwrap_or_default();
    let w = ContactWrite { ctx: WriteContext::default(), subs: vec![], events: vec![], now: clock.now_ms() };
    store.apply_contact(ContactOp::Upsert { email: email.into(), fields }, w).await.unwrap().outcome.contact.id
}

async fn consent(store: &Store, clock: &ManualClock, email: &str, channel: &str, status: ConsentStatus) {
    let evidence = Evidence {
        source: "signup form on example.com/join".into(),
        ip: None,
        text: Some("Yes, send me offers".into()),
        recorded_at: clock.now_ms(),
        run_id: None,
        details: Map::new(),
    };
    let op = ContactOp::RecordConsent {
        key: ContactKey::Email(email.into()),
        consent: NewConsent { purpose: "marketing".into(), channel: channel.into(), status, evidence },
    };
    store
        .apply_contact(op, ContactWrite { ctx: WriteContext::default(), subs: vec![], events: vec![], now: clock.now_ms() })
        .await
        .unwrap();
}

/// The step's output and its policy decision.
async fn step_output(store: &Store, run_id: &str, key: &str) -> Value {
    let d = store.run_detail(run_id).await.unwrap().unwrap();
    d.steps.iter().find(|s| s.key == key).and_then(|s| s.output.clone()).unwrap_or(Value::Null)
}

async fn timeline_kinds(store: &Store, email: &str) -> Vec<String> {
    let d = store.contact_detail(ContactKey::Email(email.into())).await.unwrap().unwrap();
    d.timeline.iter().map(|e| e.kind.clone()).collect()
}

async fn a_contact_without_email_consent_receives_no_marketing_email_from_any_recipe() {
    let smtp = SmtpServer::start().await;
    let (runner, clock, store) = policy_runner(enlace_connectors::registry(), Some(&smtp)).await;
    install(&runner, &mail_recipe("welcome", "")).await;
    install(&runner, &mail_recipe("newsletter", "    purpose: newsletter\n")).await;
    install(&runner, &mail_recipe("receipt", "    transactional: true\n")).await;
    contact(&store, &clock, "ana@example.com", json!({"first_name": "Ana"})).await;
    // Consent by SMS is not consent by email; a stranger has none at all.
    consent(&store, &clock, "ana@example.com", "sms", ConsentStatus::Granted).await;

    for (recipe, email) in [("welcome", "ana@example.com"), ("newsletter", "ana@example.com"), ("welcome", "bo@example.com")] {
        let run = start_run(&runner, recipe, json!({"email": email})).await;
        assert_eq!(settled(&store, &run).await.status, RunStatus::Succeeded, "a blocked message does not fail the run");
        let out = step_output(&store, &run, "mail").await;
        assert_eq!(out["sent"], false, "{out}");
        assert_eq!(out["policy"]["decision"], "blocked", "{out}");
        assert!(out["policy"]["reason"].as_str().unwrap().contains("no consent to `"), "{out}");
    }
    assert!(smtp.messages().is_empty(), "no email left");
    assert_eq!(timeline_kinds(&store, "ana@example.com").await.iter().filter(|k| *k == "message_blocked").count(), 2);

    // A withdrawal blocks even a transactional message; a transactional one to a contact that
    // withdrew nothing goes (the server counts).
    let run = start_run(&runner, "receipt", json!({"email": "bo@example.com"})).await;
    assert_eq!(settled(&store, &run).await.status, RunStatus::Succeeded);
    assert_eq!(smtp.messages().len(), 1);
    consent(&store, &clock, "ana@example.com", "email", ConsentStatus::Withdrawn).await;
    let run = start_run(&runner, "receipt", json!({"email": "ana@example.com"})).await;
    settled(&store, &run).await;
    let out = step_output(&store, &run, "mail").await;
    assert!(out["policy"]["reason"].as_str().unwrap().contains("withdrew consent to `marketing` by email"), "{out}");
    assert_eq!(smtp.messages().len(), 1);
}

async fn a_fourth_marketing_email_in_30_days_is_deferred_then_sent_when_allowed() {
    let smtp = SmtpServer::start().await;
    let (runner, clock, store) = policy_runner(enlace_connectors::registry(), Some(&smtp)).await;
    install(&runner, &mail_recipe("promo-a", "")).await;
    install(&runner, &mail_recipe("promo-b", "")).await;
    contact(&store, &clock, "ana@example.com", json!({})).await;
    consent(&store, &clock, "ana@example.com", "email", ConsentStatus::Granted).await;
    let first = clock.now_ms();
    // Three in three days, from two recipes: the cap is per contact, not per recipe.
    for (i, recipe) in ["promo-a", "promo-b", "promo-a"].iter().enumerate() {
        let run = start_run(&runner, recipe, json!({"email": "ana@example.com"})).await;
        assert_eq!(settled(&store, &run).await.status, RunStatus::Succeeded);
        assert_eq!(smtp.messages().len(), i + 1);
        clock.advance(DAY);
    }
    let run = start_run(&runner, "promo-b", json!({"email": "ana@example.com"})).await;
    let parked = settled(&store, &run).await;
    assert_eq!(parked.status, RunStatus::Waiting);
    // The first send leaves the 30-day window 30 days after it (14:13 UTC, not quiet).
    assert_eq!(parked.due_at, Some(first + 30 * DAY.as_millis() as i64));
    let out = step_output(&store, &run, "mail").await;
    assert_eq!(out["policy"]["decision"], "deferred", "{out}");
    assert!(out["policy"]["summary"].as_str().unwrap().contains("3 email message(s) in 30d already"), "{out}");
    assert_eq!(smtp.messages().len(), 3, "deferred, not sent");
    assert!(timeline_kinds(&store, "ana@example.com").await.contains(&"message_deferred".to_string()));

    // A day before: still waiting. At the time: sent.
    clock.set(first + 29 * DAY.as_millis() as i64);
    runner.drain_due().await.unwrap();
    assert_eq!(store.get_run(&run).await.unwrap().unwrap().status, RunStatus::Waiting);
    clock.set(first + 30 * DAY.as_millis() as i64);
    runner.drain_due().await.unwrap();
    assert_eq!(settled(&store, &run).await.status, RunStatus::Succeeded);
    assert_eq!(smtp.messages().len(), 4);
    let sent = timeline_kinds(&store, "ana@example.com").await.iter().filter(|k| *k == "message_sent").count();
    assert_eq!(sent, 4);
}

async fn a_stop_by_sms_blocks_the_next_sms_from_every_recipe() {
    let target = Target::start().await;
    let mut connectors: Vec<_> = enlace_connectors::all().into_iter().filter(|c| c.id() != "twilio").collect();
    connectors.push(enlace_connector_twilio::connector_at(&target.url("")));
    let (runner, clock, store) = policy_runner(enlace_core::Registry::new(connectors).unwrap(), None).await;
    let creds = json!({"kind": "basic", "username": format!("AC{}", "a".repeat(32)), "password": "tok"});
    store.create_connection("sms", "twilio", "sms", &parse_credentials(&creds, AuthKind::Basic).unwrap(), None, 0).await.unwrap();
    for (id, extra) in [("promo", ""), ("reminder", "    purpose: webinar\n"), ("alert", "    transactional: true\n")] {
        let yaml = format!(
            "id: {id}\ntrigger: {{app: webhook, event: catch}}\nsteps:\n  - id: text\n    app: twilio\n    action: send_sms\n    connection: sms\n    retry: {{attempts: 1}}\n{extra}    with: {{to: \"{{{{trigger.body.to}}}}\", from: \"+14155550100\", body: \"Hi from {id}\"}}\n"
        );
        install(&runner, &yaml).await;
    }
    contact(&store, &clock, "ana@example.com", json!({"phone": "+1 415 555 2671"})).await;
    consent(&store, &clock, "ana@example.com", "sms", ConsentStatus::Granted).await;
    // The number replies STOP (recorded as Twilio's inbound trigger records it).
    let mut details = Map::new();
    details.insert("body".into(), json!("STOP"));
    details.insert("message_sid".into(), json!("SM0123456789abcdef0123456789abcdef"));
    let stop = NewConsent {
        purpose: "marketing".into(),
        channel: "sms".into(),
        status: ConsentStatus::Withdrawn,
        evidence: Evidence {
            source: "twilio_inbound_sms".into(),
            ip: None,
            text: None,
            recorded_at: clock.now_ms(),
            run_id: None,
            details,
        },
    };
    clock.advance(Duration::from_secs(60));
    let w = ContactWrite {
        ctx: WriteContext { op_key: Some("SM0123".into()), run_id: None },
        subs: vec![],
        events: vec![],
        now: clock.now_ms(),
    };
    store.apply_phone_consent("+14155552671", stop, w).await.unwrap();

    for id in ["promo", "reminder", "alert"] {
        let run = start_run(&runner, id, json!({"to": "+1 (415) 555-2671"})).await;
        assert_eq!(settled(&store, &run).await.status, RunStatus::Succeeded);
        let out = step_output(&store, &run, "text").await;
        assert_eq!(out["policy"]["decision"], "blocked", "{id}: {out}");
        assert!(out["policy"]["reason"].as_str().unwrap().contains("replied `STOP`"), "{out}");
    }
    assert!(target.received().is_empty(), "Twilio was never called");
    // The control: a transactional text to another number does reach the stand-in.
    let run = start_run(&runner, "alert", json!({"to": "+14155550199"})).await;
    settled(&store, &run).await;
    assert_eq!(target.received().len(), 1);
}

async fn a_message_due_at_3am_local_time_leaves_at_the_start_of_the_allowed_window() {
    let smtp = SmtpServer::start().await;
    let (runner, clock, store) = policy_runner(enlace_connectors::registry(), Some(&smtp)).await;
    install(&runner, &mail_recipe("promo", "")).await;
    contact(&store, &clock, "ana@example.com", json!({"timezone": "America/New_York"})).await;
    consent(&store, &clock, "ana@example.com", "email", ConsentStatus::Granted).await;
    // 2026-09-22T07:00:00Z is 03:00 in New York (EDT); 08:00 there is 12:00Z.
    let three_am = 1_790_060_400_000;
    clock.set(three_am);
    let run = start_run(&runner, "promo", json!({"email": "ana@example.com"})).await;
    let parked = settled(&store, &run).await;
    assert_eq!(parked.status, RunStatus::Waiting);
    assert_eq!(parked.due_at, Some(three_am + 5 * 3_600_000));
    let out = step_output(&store, &run, "mail").await;
    assert!(out["policy"]["summary"].as_str().unwrap().contains("quiet hours 21:00-08:00 in America/New_York"), "{out}");
    clock.set(three_am + 5 * 3_600_000 - 1_000);
    runner.drain_due().await.unwrap();
    assert!(smtp.messages().is_empty());
    clock.set(three_am + 5 * 3_600_000);
    runner.drain_due().await.unwrap();
    assert_eq!(settled(&store, &run).await.status, RunStatus::Succeeded);
    assert_eq!(smtp.messages().len(), 1);
}

async fn replaying_a_run_that_already_sent_an_email_does_not_send_it_again() {
    let smtp = SmtpServer::start().await;
    let (runner, clock, store) = policy_runner(enlace_connectors::registry(), Some(&smtp)).await;
    let port = free_port();
    let yaml = format!(
        "{}  - id: tell-crm\n    app: http\n    action: request\n    retry: {{attempts: 1}}\n    with: {{method: POST, url: \"http://127.0.0.1:{port}/crm\", json: {{sent: true}}}}\n",
        mail_recipe("promo", "")
    );
    install(&runner, &yaml).await;
    contact(&store, &clock, "ana@example.com", json!({})).await;
    consent(&store, &clock, "ana@example.com", "email", ConsentStatus::Granted).await;
    let run = start_run(&runner, "promo", json!({"email": "ana@example.com"})).await;
    assert_eq!(settled(&store, &run).await.status, RunStatus::Failed, "the CRM is down");
    assert_eq!(smtp.messages().len(), 1);
    for _ in 0..2 {
        runner.replay(&run, false).await.unwrap();
        runner.drain_due().await.unwrap();
        assert_eq!(settled(&store, &run).await.status, RunStatus::Failed);
    }
    assert_eq!(smtp.messages().len(), 1, "the replays did not send the email again");
    let rows = store.message_rows(&format!("{run}:mail")).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].status, "sent");
    let sent = timeline_kinds(&store, "ana@example.com").await.iter().filter(|k| *k == "message_sent").count();
    assert_eq!(sent, 1);
}

async fn sends_above_a_recipes_limit_wait_for_approval_and_the_kill_switch_cancels_them() {
    let smtp = SmtpServer::start().await;
    let (runner, _clock, store) = policy_runner(enlace_connectors::registry(), Some(&smtp)).await;
    let yaml =
        mail_recipe("blast", "    transactional: true\n").replace("steps:", "limits: {sends_per_hour: 2, sends_per_day: 100}\nsteps:");
    install(&runner, &yaml).await;
    let mut runs = vec![];
    for i in 0..4 {
        let run = start_run(&runner, "blast", json!({"email": format!("p{i}@example.com")})).await;
        runs.push((run.clone(), settled(&store, &run).await.status));
    }
    let statuses: Vec<RunStatus> = runs.iter().map(|r| r.1).collect();
    assert_eq!(statuses, [RunStatus::Succeeded, RunStatus::Succeeded, RunStatus::Waiting, RunStatus::Waiting]);
    assert_eq!(smtp.messages().len(), 2);
    let held = store.held_sends(Some("blast")).await.unwrap();
    assert_eq!(held.len(), 2);
    assert!(held[0].reason.as_deref().unwrap().contains("its limit is 2 per hour"), "{held:?}");
    let out = step_output(&store, &runs[2].0, "mail").await;
    assert_eq!(out["policy"]["decision"], "held", "{out}");

    // Approve one of them: it leaves; the other stays held.
    let approved = store.decide_held_sends("blast", Some(vec![held[0].message_key.clone()]), true, 0).await.unwrap();
    assert_eq!(approved.len(), 1);
    runner.drain_due().await.unwrap();
    assert_eq!(settled(&store, &held[0].run_id).await.status, RunStatus::Succeeded);
    assert_eq!(smtp.messages().len(), 3);
    assert_eq!(store.get_run(&held[1].run_id).await.unwrap().unwrap().status, RunStatus::Waiting);
    assert_eq!(store.held_sends(None).await.unwrap().len(), 1);

    // The kill switch cancels the run still held, and its message with it.
    let (_, cancelled) = runner.kill("blast").await.unwrap();
    assert_eq!(cancelled, 1);
    assert_eq!(store.get_run(&held[1].run_id).await.unwrap().unwrap().status, RunStatus::Cancelled);
    assert!(store.held_sends(None).await.unwrap().is_empty());
    assert_eq!(store.message_rows(&held[1].message_key).await.unwrap()[0].status, "cancelled");
    assert_eq!(smtp.messages().len(), 3);
}

/// The API on the real server: the policy's settings (checked, with the path of a wrong
/// field), the approvals list and decision, both behind the API token.
#[tokio::test]
async fn the_policy_and_approvals_api() {
    use reqwest::Method;
    let s = TestServer::start().await;
    let no_token = s.http.get(s.url("/api/v1/policy")).send().await.unwrap();
    assert_eq!(no_token.status(), 401);
    let p: Value = s.api(Method::GET, "/api/v1/policy").send().await.unwrap().json().await.unwrap();
    assert_eq!(p["channels"]["email"]["cap"], json!({"max": 3, "per": "30d"}), "{p}");
    assert_eq!(p["quiet_hours"], json!({"start": "21:00", "end": "08:00"}));

    let bad = s
        .api(Method::PUT, "/api/v1/policy")
        .json(&json!({"default_timezone": "UTC", "quiet_hours": {"start": "9pm", "end": "08:00"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let e: Value = bad.json().await.unwrap();
    assert_eq!(e["path"], "quiet_hours.start", "{e}");
    assert!(e["message"].as_str().unwrap().contains("HH:MM"), "{e}");
    let bad = s
        .api(Method::PUT, "/api/v1/policy")
        .json(&json!({"default_timezone": "UTC", "channels": {"email": {"cap": {"max": 0, "per": "30d"}}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(bad.json::<Value>().await.unwrap()["path"], "channels.email.cap.max");
    let good = json!({"default_timezone": "Europe/Paris", "quiet_hours": null, "channels": {"email": {"cap": {"max": 2, "per": "7d"}}}});
    let r = s.api(Method::PUT, "/api/v1/policy").json(&good).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let p: Value = s.api(Method::GET, "/api/v1/policy").send().await.unwrap().json().await.unwrap();
    assert_eq!((&p["default_timezone"], &p["channels"]["email"]["cap"]["max"]), (&json!("Europe/Paris"), &json!(2)));

    // A recipe that may send one message an hour: the second waits for approval.
    let smtp = SmtpServer::start().await;
    let creds = parse_credentials(&smtp.credentials("s3cret-Pa55word"), AuthKind::Smtp).unwrap();
    s.store.create_connection("mail", "smtp", "mail", &creds, None, 0).await.unwrap();
    let yaml = mail_recipe("blast", "    transactional: true\n").replace("steps:", "limits: {sends_per_hour: 1}\nsteps:");
    let r = s.api(Method::POST, "/api/v1/recipes").header("content-type", "application/yaml").body(yaml).send().await.unwrap();
    assert_eq!(r.status(), 201);
    // One after the other: two runs at once would race for the one slot.
    let mut runs = vec![];
    for (email, then) in [("a@example.com", RunStatus::Succeeded), ("b@example.com", RunStatus::Waiting)] {
        let r: Value = s.http.post(s.url("/hooks/blast")).json(&json!({"email": email})).send().await.unwrap().json().await.unwrap();
        runs.push(r["run_id"].as_str().unwrap().to_string());
        status(&s.store, &runs[runs.len() - 1], then).await;
    }
    let held: Value = s.api(Method::GET, "/api/v1/approvals?recipe=blast").send().await.unwrap().json().await.unwrap();
    assert_eq!(held.as_array().unwrap().len(), 1, "{held}");
    assert_eq!(held[0]["recipient"], "b@example.com");
    assert!(held[0]["reason"].as_str().unwrap().contains("1 per hour"), "{held}");
    let r = s.api(Method::POST, "/api/v1/recipes/blast/approvals").json(&json!({"decision": "maybe"})).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["path"], "decision");
    let r = s.api(Method::POST, "/api/v1/recipes/nope/approvals").json(&json!({"decision": "approve"})).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let r = s.api(Method::POST, "/api/v1/recipes/blast/approvals").json(&json!({"decision": "approve"})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["decided"][0]["status"], "approved");
    status(&s.store, &runs[1], RunStatus::Succeeded).await;
    assert_eq!(smtp.messages().len(), 2);
    let doc: Value = s.api(Method::GET, "/api/v1/openapi.json").send().await.unwrap().json().await.unwrap();
    for path in ["/api/v1/policy", "/api/v1/approvals", "/api/v1/recipes/{id}/approvals"] {
        assert!(doc["paths"].get(path).is_some(), "{path} is in the OpenAPI document");
    }
}

/// `enlace approvals` beside a runner on the same data directory: list, approve one by its
/// key, reject the rest, and a clear error for an unknown recipe.
#[tokio::test]
async fn the_approvals_cli() {
    let smtp = SmtpServer::start().await;
    let dir = temp_dir("approvals-cli");
    let config = enlace_store::StoreConfig {
        database_url: None,
        data_dir: dir.clone(),
        secret_key: None,
        synchronous: enlace_store::Synchronous::Full,
    };
    let store = Store::open(&config).await.unwrap();
    // The CLI puts the decided runs back in the queue due at the wall clock's now.
    let clock = ManualClock::new(chrono::Utc::now().timestamp_millis());
    let runner = Runner::new(
        store.clone(),
        enlace_connectors::registry(),
        RunnerConfig::default(),
        transport(),
        Arc::new(clock.clone()) as Arc<dyn Clock>,
    );
    runner.load(false).await.unwrap();
    let creds = parse_credentials(&smtp.credentials("s3cret-Pa55word"), AuthKind::Smtp).unwrap();
    store.create_connection("mail", "smtp", "mail", &creds, None, 0).await.unwrap();
    let yaml = mail_recipe("blast", "    transactional: true\n").replace("steps:", "limits: {sends_per_day: 1}\nsteps:");
    install(&runner, &yaml).await;
    let mut runs = vec![];
    for email in ["a@example.com", "b@example.com", "c@example.com"] {
        let run = start_run(&runner, "blast", json!({"email": email})).await;
        settled(&store, &run).await;
        runs.push(run);
    }
    assert_eq!(smtp.messages().len(), 1);

    let (ok, out, err) = cli(&dir, &["approvals", "list"], "", false);
    assert!(ok, "{err}");
    let held: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(held.as_array().unwrap().len(), 2, "{held}");
    let first = held[0]["message"].as_str().unwrap().to_string();
    let (ok, out, err) = cli(&dir, &["approvals", "approve", "blast", "--message", &first], "", false);
    assert!(ok, "{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()[0]["status"], "approved");
    let (ok, out, err) = cli(&dir, &["approvals", "reject", "blast"], "", false);
    assert!(ok, "{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()[0]["status"], "rejected");
    let (ok, _, err) = cli(&dir, &["approvals", "approve", "nope"], "", false);
    assert!(!ok && err.contains("no recipe `nope`"), "{err}");

    clock.advance(Duration::from_secs(60));
    runner.drain_due().await.unwrap();
    assert_eq!(smtp.messages().len(), 2, "the approved one left, the rejected one did not");
    let rejected = step_output(&store, &runs[2], "mail").await;
    assert!(rejected["policy"]["reason"].as_str().unwrap().contains("rejected"), "{rejected}");
    assert_eq!(store.get_run(&runs[2]).await.unwrap().unwrap().status, RunStatus::Succeeded);
}

/// A dry run decides as a real run does and records it, and sends nothing: the SMTP
/// connection points at a port nobody listens on.
async fn a_dry_run_applies_the_policy_and_records_its_decisions() {
    let store = test_store().await;
    let clock = ManualClock::new(1_790_000_000_000);
    let config = RunnerConfig { dry_run: true, ..RunnerConfig::default() };
    let runner = Runner::new(store.clone(), enlace_connectors::registry(), config, transport(), Arc::new(clock.clone()) as Arc<dyn Clock>);
    runner.load(false).await.unwrap();
    let creds = json!({"kind": "smtp", "host": "127.0.0.1", "port": free_port(), "username": "u", "password": "p", "tls": "none"});
    store.create_connection("mail", "smtp", "mail", &parse_credentials(&creds, AuthKind::Smtp).unwrap(), None, 0).await.unwrap();
    install(&runner, &mail_recipe("promo", "")).await;
    contact(&store, &clock, "ana@example.com", json!({})).await;
    consent(&store, &clock, "ana@example.com", "email", ConsentStatus::Granted).await;
    contact(&store, &clock, "bo@example.com", json!({})).await;
    let ana = start_run(&runner, "promo", json!({"email": "ana@example.com"})).await;
    assert_eq!(settled(&store, &ana).await.status, RunStatus::Succeeded);
    let bo = start_run(&runner, "promo", json!({"email": "bo@example.com"})).await;
    assert_eq!(settled(&store, &bo).await.status, RunStatus::Succeeded);
    assert_eq!(step_output(&store, &bo, "mail").await["policy"]["decision"], "blocked");
    assert_eq!(store.message_rows(&format!("{ana}:mail")).await.unwrap()[0].status, "sent");
    assert!(timeline_kinds(&store, "ana@example.com").await.contains(&"message_sent".to_string()));
    assert!(timeline_kinds(&store, "bo@example.com").await.contains(&"message_blocked".to_string()));
}

/// A test app that sends "email" and loses its first answer: the message may have gone.
struct Outbox {
    calls: Arc<std::sync::atomic::AtomicUsize>,
}

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct OutboxInput {
    /// The recipient.
    to: String,
}

impl enlace_core::Action for Outbox {
    type Input = OutboxInput;
    type Output = Value;
    const ID: &'static str = "send";
    const NAME: &'static str = "Send";
    const DESCRIPTION: &'static str = "Sends a message; the first answer is lost.";
    const IDEMPOTENCY: enlace_core::Idempotency = enlace_core::Idempotency::None;
    const HTTP_ONLY: bool = false;

    fn sample() -> Value {
        json!({"id": "m-1"})
    }

    fn reaches() -> Option<enlace_core::policy::Reach> {
        Some(enlace_core::policy::Reach::new("email", enlace_core::policy::RecipientKind::Email, &["to"]))
    }

    async fn call(&self, _ctx: &enlace_core::ActionContext, input: OutboxInput) -> Result<Value, enlace_core::ConnectorError> {
        let n = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if n == 0 {
            return Err(enlace_core::ConnectorError::MaybeDelivered { message: format!("the answer to {} was lost", input.to) });
        }
        Ok(json!({"id": format!("m-{n}")}))
    }
}

/// A message whose outcome is unknown (the answer was lost) stays reserved in the ledger: a
/// person's replay of the failed run does not send it again, while another message does go.
async fn a_replay_after_an_unknown_outcome_does_not_send_the_message_again() {
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut all = enlace_connectors::all();
    all.push(enlace_core::Connector::builder("outbox", "Outbox", "A test sender.").action(Outbox { calls: calls.clone() }).build());
    let (runner, clock, store) = policy_runner(enlace_core::Registry::new(all).unwrap(), None).await;
    let yaml = "id: promo\ntrigger: {app: webhook, event: catch}\nsteps:\n  - id: send\n    app: outbox\n    action: send\n    with: {to: \"{{trigger.body.email}}\"}\n";
    install(&runner, yaml).await;
    contact(&store, &clock, "ana@example.com", json!({})).await;
    consent(&store, &clock, "ana@example.com", "email", ConsentStatus::Granted).await;
    let run = start_run(&runner, "promo", json!({"email": "ana@example.com"})).await;
    let failed = settled(&store, &run).await;
    assert_eq!(failed.status, RunStatus::Failed);
    assert_eq!(failed.error.unwrap()["class"], "maybe_delivered");
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(store.message_rows(&format!("{run}:send")).await.unwrap()[0].status, "reserved");

    runner.replay(&run, false).await.unwrap();
    runner.drain_due().await.unwrap();
    assert_eq!(settled(&store, &run).await.status, RunStatus::Succeeded);
    let out = step_output(&store, &run, "send").await;
    assert!(out["policy"]["reason"].as_str().unwrap().contains("may have gone out already"), "{out}");
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1, "not sent again");

    // The control: a new run's message goes (the outbox answers from now on).
    let other = start_run(&runner, "promo", json!({"email": "ana@example.com"})).await;
    assert_eq!(settled(&store, &other).await.status, RunStatus::Succeeded);
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
}

on_both_backends!(
    a_replay_after_an_unknown_outcome_does_not_send_the_message_again,
    a_dry_run_applies_the_policy_and_records_its_decisions,
    a_contact_without_email_consent_receives_no_marketing_email_from_any_recipe,
    a_fourth_marketing_email_in_30_days_is_deferred_then_sent_when_allowed,
    a_stop_by_sms_blocks_the_next_sms_from_every_recipe,
    a_message_due_at_3am_local_time_leaves_at_the_start_of_the_allowed_window,
    replaying_a_run_that_already_sent_an_email_does_not_send_it_again,
    sends_above_a_recipes_limit_wait_for_approval_and_the_kill_switch_cancels_them,
);
