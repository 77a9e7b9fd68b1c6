//! Journeys (contact-scoped recipes) end to end on both backends, with a manual clock:
//! `wait_for` woken by the contact's event (and not by another contact's, nor by an event
//! that does not match), its timeout; an exit goal reached in the middle of a delay ends the
//! run before its next step; re-entry `once` and `cooldown`; `split` sticky per contact;
//! `delay_until` in the contact's own time zone; and a restart in the middle of a seven-day
//! wait loses nothing.

use std::time::Duration;

use enlace_core::contacts::{ContactKey, ContactOp, WriteContext};
use enlace_runner::{Clock, Runner};
use enlace_store::{RunFilter, RunStatus, Store};
use serde_json::{Map, Value, json};

use crate::support::*;

const DAY: Duration = Duration::from_secs(86_400);

async fn upsert(runner: &Runner, email: &str, fields: Value) -> String {
    let fields: Map<String, Value> = fields.as_object().cloned().unwrap_or_default();
    let a = runner.contacts().apply(WriteContext::default(), ContactOp::Upsert { email: email.into(), fields }).await.unwrap();
    a.outcome.contact.id
}

async fn tag(runner: &Runner, email: &str, tag: &str) {
    runner
        .contacts()
        .apply(WriteContext::default(), ContactOp::AddTag { key: ContactKey::Email(email.into()), tag: tag.into() })
        .await
        .unwrap();
}

async fn runs_of(store: &Store, recipe: &str) -> Vec<enlace_store::RunRow> {
    let mut runs = store.list_runs(&RunFilter { recipe_id: Some(recipe.into()), limit: 100, ..Default::default() }).await.unwrap();
    runs.reverse();
    runs
}

fn post(url: &str, json: &str) -> String {
    format!("app: http\n    action: request\n    with: {{method: POST, url: \"{url}\", json: {json}}}")
}

async fn wait_for_is_woken_by_the_contacts_matching_event_or_times_out() {
    let target = Target::start().await;
    let (runner, clock, store) = manual_runner(None).await;
    install(
        &runner,
        &format!(
            r#"
id: ask-interests
trigger: {{app: contacts, event: contact_created}}
steps:
  - id: answer
    wait_for: {{event: tag_added, match: {{tag: answered}}, timeout: 3d}}
  - id: report
    {}
"#,
            post(
                &target.url("/report"),
                r#"{email: "{{contact.email}}", received: "{{steps.answer.received}}", tag: "{{default steps.answer.event.data.tag ''}}"}"#
            )
        ),
    )
    .await;
    upsert(&runner, "ada@example.com", json!({})).await;
    upsert(&runner, "bob@example.com", json!({})).await;
    runner.drain_due().await.unwrap();
    let runs = runs_of(&store, "ask-interests").await;
    assert_eq!(runs.len(), 2);
    assert!(runs.iter().all(|r| r.status == RunStatus::Waiting), "{runs:?}");

    // Another tag, and Bob's answer: Ada's wait goes on.
    tag(&runner, "ada@example.com", "other").await;
    clock.advance(Duration::from_secs(3600));
    tag(&runner, "bob@example.com", "answered").await;
    runner.drain_due().await.unwrap();
    let got = target.received_on("/report");
    assert_eq!(got.len(), 1, "only Bob answered");
    assert_eq!(got[0].body, json!({"email": "bob@example.com", "received": true, "tag": "answered"}));
    assert_eq!(store.get_run(&runs[0].id).await.unwrap().unwrap().status, RunStatus::Waiting);
    let bob = store.run_detail(&runs[1].id).await.unwrap().unwrap();
    assert_eq!(bob.run.status, RunStatus::Succeeded);
    let journey = bob.steps.iter().find(|s| s.key == "$journey").unwrap();
    assert_eq!(journey.output.as_ref().unwrap()["email"], "bob@example.com");

    // Ada never answers: at the timeout the journey goes on without the event.
    clock.advance(3 * DAY);
    runner.drain_due().await.unwrap();
    let got = target.received_on("/report");
    assert_eq!(got.len(), 2);
    assert_eq!(got[1].body, json!({"email": "ada@example.com", "received": false, "tag": ""}));
}

async fn an_exit_goal_ends_the_journey_wherever_the_contact_is() {
    let target = Target::start().await;
    let (runner, clock, store) = manual_runner(None).await;
    install(
        &runner,
        &format!(
            r#"
id: cart
trigger: {{app: contacts, event: tag_added, with: {{tag: cart-abandoned}}}}
exit:
  - event: tag_added
    match: {{tag: purchased}}
    goal: true
  - if: "{{{{contains contact.tags 'do-not-disturb'}}}}"
steps:
  - id: wait
    delay: 2d
  - id: remind
    {}
"#,
            post(&target.url("/remind"), r#"{email: "{{contact.email}}"}"#)
        ),
    )
    .await;
    for who in ["ada", "bob", "cy"] {
        upsert(&runner, &format!("{who}@example.com"), json!({})).await;
        tag(&runner, &format!("{who}@example.com"), "cart-abandoned").await;
    }
    runner.drain_due().await.unwrap();
    let runs = runs_of(&store, "cart").await;
    assert_eq!(runs.len(), 3);
    assert!(runs.iter().all(|r| r.status == RunStatus::Waiting));

    // Ada buys on day one: her run ends at once, as reaching its goal, without waiting for the delay.
    clock.advance(DAY);
    tag(&runner, "ada@example.com", "purchased").await;
    runner.drain_due().await.unwrap();
    let ada = store.run_detail(&runs[0].id).await.unwrap().unwrap();
    assert_eq!(ada.run.status, RunStatus::Succeeded);
    let exit = ada.steps.iter().find(|s| s.key == "$exit").unwrap();
    let out = exit.output.as_ref().unwrap();
    assert_eq!(
        (out["goal"].clone(), out["before_step"].clone(), out["event"]["data"]["tag"].clone()),
        (json!(true), json!("wait"), json!("purchased"))
    );
    // Cy asks not to be disturbed: the condition holds at the next step, which is then not run.
    tag(&runner, "cy@example.com", "do-not-disturb").await;
    clock.advance(DAY + Duration::from_secs(1));
    runner.drain_due().await.unwrap();
    let got = target.received_on("/remind");
    assert_eq!(got.len(), 1, "only Bob is reminded");
    assert_eq!(got[0].body, json!({"email": "bob@example.com"}));
    let cy = store.get_run(&runs[2].id).await.unwrap().unwrap();
    assert_eq!(cy.status, RunStatus::Filtered);
}

async fn reentry_once_and_after_a_cooldown() {
    let (runner, clock, store) = manual_runner(None).await;
    for (id, reentry) in [("welcome-once", "once"), ("nudge", "{cooldown: 7d}")] {
        install(
            &runner,
            &format!(
                r#"
id: {id}
trigger: {{app: contacts, event: contact_updated}}
reentry: {reentry}
steps:
  - id: hello
    filter: "{{{{contact.email}}}}"
"#
            ),
        )
        .await;
    }
    upsert(&runner, "ada@example.com", json!({"n": 1})).await;
    for n in 2..=3 {
        upsert(&runner, "ada@example.com", json!({"n": n})).await;
        runner.drain_due().await.unwrap();
        clock.advance(DAY);
    }
    clock.advance(7 * DAY);
    upsert(&runner, "ada@example.com", json!({"n": 4})).await;
    runner.drain_due().await.unwrap();
    let statuses = |runs: Vec<enlace_store::RunRow>| runs.iter().map(|r| r.status).collect::<Vec<_>>();
    assert_eq!(statuses(runs_of(&store, "welcome-once").await), [RunStatus::Succeeded, RunStatus::Filtered, RunStatus::Filtered]);
    assert_eq!(statuses(runs_of(&store, "nudge").await), [RunStatus::Succeeded, RunStatus::Filtered, RunStatus::Succeeded]);
    let second = &runs_of(&store, "welcome-once").await[1];
    let d = store.run_detail(&second.id).await.unwrap().unwrap();
    let reason = d.steps[0].output.as_ref().unwrap()["reason"].as_str().unwrap().to_string();
    assert!(reason.contains("once per contact"), "{reason}");
    assert_eq!(d.steps.len(), 1, "no step ran");
}

async fn splits_are_sticky_and_local_times_are_the_contacts() {
    let target = Target::start().await;
    let (runner, _clock, store) = manual_runner(None).await;
    install(
        &runner,
        &format!(
            r#"
id: ab
trigger: {{app: webhook, event: catch}}
contact: "{{{{trigger.body.email}}}}"
steps:
  - id: pick
    split: {{a: 50, b: 50}}
    paths:
      a:
        - id: send_a
          {}
      b: []
  - id: morning
    delay_until: "2026-12-01T09:00"
"#,
            post(&target.url("/a"), r#"{email: "{{contact.email}}"}"#).replace("\n    ", "\n          ")
        ),
    )
    .await;
    let mut paths = std::collections::BTreeMap::new();
    for i in 0..12 {
        let email = format!("c{i}@example.com");
        let tz = if i % 2 == 0 { "Europe/Paris" } else { "America/New_York" };
        upsert(&runner, &email, json!({"timezone": tz})).await;
        for _ in 0..2 {
            let run = start_run(&runner, "ab", json!({"email": email})).await;
            let r = settled(&store, &run).await;
            assert_eq!(r.status, RunStatus::Waiting);
            let d = store.run_detail(&run).await.unwrap().unwrap();
            let path = d.steps.iter().find(|s| s.key == "pick").unwrap().output.clone().unwrap()["path"].clone();
            let until = d.steps.iter().find(|s| s.key == "morning").unwrap().output.clone().unwrap()["until"].clone();
            let want = if tz == "Europe/Paris" { "2026-12-01T08:00:00.000Z" } else { "2026-12-01T14:00:00.000Z" };
            assert_eq!(until, want, "09:00 in {tz}");
            let prev = paths.insert(email.clone(), path.clone());
            assert!(prev.is_none_or(|p| p == path), "{email} changed paths");
        }
    }
    let a = paths.values().filter(|p| *p == "a").count();
    assert!((1..12).contains(&a), "both paths are used: {paths:?}");
    assert_eq!(target.count_on("/a"), 2 * a);
    // A contact that does not exist: the run fails and says how to fix it.
    let run = start_run(&runner, "ab", json!({"email": "nobody@example.com"})).await;
    let r = settled(&store, &run).await;
    assert_eq!(r.status, RunStatus::Failed);
    let msg = r.error.unwrap()["message"].as_str().unwrap().to_string();
    assert!(msg.contains("no contact with the email `nobody@example.com`") && msg.contains("contacts.upsert"), "{msg}");
}

async fn a_restart_in_the_middle_of_a_seven_day_wait_loses_nothing() {
    let target = Target::start().await;
    let store = test_store().await;
    let recipe = format!(
        r#"
id: follow-up
trigger: {{app: contacts, event: tag_added, with: {{tag: webinar}}}}
steps:
  - id: reply
    wait_for: {{event: tag_added, match: {{tag: replied}}, timeout: 7d}}
  - id: report
    {}
"#,
        post(&target.url("/report"), r#"{email: "{{contact.email}}", received: "{{steps.reply.received}}"}"#)
    );
    let (runner, clock, _) = manual_runner(Some(store.clone())).await;
    install(&runner, &recipe).await;
    for who in ["ada", "bob"] {
        upsert(&runner, &format!("{who}@example.com"), json!({})).await;
        tag(&runner, &format!("{who}@example.com"), "webinar").await;
    }
    runner.drain_due().await.unwrap();
    clock.advance(2 * DAY);
    drop(runner);

    // A new process on the same store, three days into the wait.
    let (runner, clock2, _) = manual_runner(Some(store.clone())).await;
    clock2.set(clock.now_ms() + DAY.as_millis() as i64);
    tag(&runner, "ada@example.com", "replied").await;
    runner.drain_due().await.unwrap();
    assert_eq!(
        target.received_on("/report").iter().map(|r| r.body.clone()).collect::<Vec<_>>(),
        [json!({"email": "ada@example.com", "received": true})]
    );
    clock2.advance(4 * DAY);
    runner.drain_due().await.unwrap();
    let got: Vec<Value> = target.received_on("/report").iter().map(|r| r.body.clone()).collect();
    assert_eq!(got, [json!({"email": "ada@example.com", "received": true}), json!({"email": "bob@example.com", "received": false})]);
    assert!(runs_of(&store, "follow-up").await.iter().all(|r| r.status == RunStatus::Succeeded));
}

async fn an_exit_rule_that_cannot_be_rendered_fails_the_run_and_says_where() {
    let (runner, _clock, store) = manual_runner(None).await;
    install(
        &runner,
        r#"
id: broken-exit
trigger: {app: contacts, event: contact_created}
exit:
  - event: tag_added
    match: {tag: "{{contact.fields.favourite}}"}
steps:
  - id: hello
    filter: "{{contact.email}}"
"#,
    )
    .await;
    upsert(&runner, "ada@example.com", json!({})).await;
    runner.drain_due().await.unwrap();
    let run = &runs_of(&store, "broken-exit").await[0];
    assert_eq!(run.status, RunStatus::Failed);
    let d = store.run_detail(&run.id).await.unwrap().unwrap();
    let exit = d.steps.iter().find(|s| s.key == "$exit").expect("the failure is journaled as $exit");
    let e = exit.error.clone().unwrap();
    assert_eq!(e["path"], "exit[0].match.tag", "{e}");
    assert!(e["message"].as_str().unwrap().contains("favourite"), "{e}");
    assert!(d.steps.iter().all(|s| s.key != "hello"), "no step ran");
}

on_both_backends!(
    an_exit_rule_that_cannot_be_rendered_fails_the_run_and_says_where,
    wait_for_is_woken_by_the_contacts_matching_event_or_times_out,
    an_exit_goal_ends_the_journey_wherever_the_contact_is,
    reentry_once_and_after_a_cooldown,
    splits_are_sticky_and_local_times_are_the_contacts,
    a_restart_in_the_middle_of_a_seven_day_wait_loses_nothing,
);
