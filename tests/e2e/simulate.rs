//! The simulator (`enlace simulate`): a journey over contacts and events on a virtual clock,
//! nothing sent (the targets are names that do not resolve, and a real call would fail), the
//! report's calls, counts and times, the same report for the same seed, another for another
//! seed; and the command line's errors.

use serde_json::Value;

use crate::support::*;

const JOURNEY: &str = r#"
id: greet
trigger: {app: contacts, event: contact_created}
reentry: once
steps:
  - id: welcome
    app: http
    action: request
    with: {method: POST, url: "https://crm.invalid/welcome", json: {to: "{{contact.email}}", name: "{{contact.fields.first_name}}"}}
  - id: answer
    wait_for: {event: tag_added, match: {tag: answered}, timeout: 3d}
  - id: follow
    branch:
      - if: "{{steps.answer.received}}"
        steps:
          - id: thanks
            app: http
            action: request
            with: {method: POST, url: "https://crm.invalid/thanks", json: {to: "{{contact.email}}"}}
      - else:
          - id: remind
            delay_until: "{{date (date run.now add='1d') format='%Y-%m-%d'}}T09:00"
          - id: reminder
            app: http
            action: request
            with: {method: POST, url: "https://crm.invalid/remind", json: {to: "{{contact.email}}"}}
"#;

const CONTACTS: &str = "email,at,first_name,timezone,consent.marketing.email
ada@example.com,2026-12-01T08:00:00Z,Ada,Europe/Paris,granted
bob@example.com,2026-12-01T10:30:00Z,Bob,America/New_York,granted
cy@example.com,2026-12-02T12:00:00Z,Cy,Asia/Tokyo,withdrawn
";

const EVENTS: &str = r#"{"each_contact": {"after": "1d", "probability": 0.5}, "tag": "answered"}
{"at": "2026-12-01T09:00:00Z", "contact": "ada@example.com", "fields": {"pet": "cat"}}
"#;

fn simulate(dir: &std::path::Path, seed: &str) -> Value {
    simulate_with(dir, seed, &[])
}

fn simulate_with(dir: &std::path::Path, seed: &str, extra: &[&str]) -> Value {
    let (recipes, contacts, events) = (dir.join("recipes"), dir.join("contacts.csv"), dir.join("events.jsonl"));
    let mut args = vec![
        "simulate",
        "--recipes",
        recipes.to_str().unwrap(),
        "--contacts",
        contacts.to_str().unwrap(),
        "--events",
        events.to_str().unwrap(),
        "--seed",
        seed,
        "--duration",
        "10d",
        "--json",
    ];
    args.extend_from_slice(extra);
    let (ok, out, err) = cli(dir, &args, "", false);
    assert!(ok, "simulate failed: {err}\n{out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

#[test]
fn a_journey_is_simulated_deterministically_and_nothing_is_sent() {
    let dir = temp_dir("simulate");
    std::fs::create_dir_all(dir.join("recipes")).unwrap();
    std::fs::write(dir.join("recipes/greet.yaml"), JOURNEY).unwrap();
    std::fs::write(dir.join("contacts.csv"), CONTACTS).unwrap();
    std::fs::write(dir.join("events.jsonl"), EVENTS).unwrap();

    let a = simulate(&dir, "7");
    assert_eq!(a, simulate(&dir, "7"), "the same seed gives the same report");
    assert_eq!(a, simulate_with(&dir, "7", &["--all-cpus"]), "on every CPU (a runtime of many threads), the same report");
    assert_eq!(a["contacts"], 3);
    assert_eq!(a["runs"]["greet"]["succeeded"], 3, "{a}");
    assert_eq!(a["steps"]["greet"]["welcome"]["succeeded"], 3);
    assert_eq!(a["steps"]["greet"]["$journey"]["succeeded"], 3);
    let calls = a["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 6, "a welcome and a thanks or a reminder each: {calls:?}");
    assert_eq!(a["call_counts"]["http.request"], 6);
    // In time order, with the contact, the step and what would have been sent.
    let first = &calls[0];
    assert_eq!(first["at"], "2026-12-01T08:00:00.000Z");
    assert_eq!(first["contact"], "ada@example.com");
    assert_eq!(first["step"], "welcome");
    assert_eq!(first["content"]["json"], serde_json::json!({"to": "ada@example.com", "name": "Ada"}));
    let ats: Vec<&str> = calls.iter().map(|c| c["at"].as_str().unwrap()).collect();
    assert!(ats.windows(2).all(|w| w[0] <= w[1]), "{ats:?}");
    // Who answered (drawn from the seed) got thanks a day after signing up; the others a
    // reminder at 09:00 their own time, the day after their three-day wait ended.
    for c in calls.iter().filter(|c| c["step"] != "welcome") {
        let who = c["contact"].as_str().unwrap();
        let at = c["at"].as_str().unwrap();
        match (who, c["step"].as_str().unwrap()) {
            ("ada@example.com", "thanks") => assert_eq!(at, "2026-12-02T08:00:00.000Z"),
            ("ada@example.com", "reminder") => assert_eq!(at, "2026-12-05T08:00:00.000Z", "09:00 in Paris"),
            ("bob@example.com", "thanks") => assert_eq!(at, "2026-12-02T10:30:00.000Z"),
            ("bob@example.com", "reminder") => assert_eq!(at, "2026-12-05T14:00:00.000Z", "09:00 in New York"),
            ("cy@example.com", "thanks") => assert_eq!(at, "2026-12-03T12:00:00.000Z"),
            ("cy@example.com", "reminder") => assert_eq!(at, "2026-12-06T00:00:00.000Z", "09:00 in Tokyo"),
            other => panic!("unexpected call {other:?}"),
        }
    }
    // Another seed draws other answers (over several seeds, at least one differs).
    let differs = ["1", "2", "3", "4"].iter().any(|s| simulate(&dir, s)["calls"] != a["calls"]);
    assert!(differs, "the seed drives who answers");
}

#[test]
fn bad_inputs_are_named() {
    let dir = temp_dir("simulate-bad");
    std::fs::create_dir_all(dir.join("recipes")).unwrap();
    std::fs::write(dir.join("recipes/greet.yaml"), JOURNEY).unwrap();
    std::fs::write(dir.join("contacts.csv"), "name\nAda\n").unwrap();
    let recipes = dir.join("recipes");
    let contacts = dir.join("contacts.csv");
    let (ok, _, err) =
        cli(&dir, &["simulate", "--recipes", recipes.to_str().unwrap(), "--contacts", contacts.to_str().unwrap()], "", false);
    assert!(!ok);
    assert!(err.contains("needs an `email` column"), "{err}");
    std::fs::write(dir.join("events.jsonl"), "{\"at\": \"2026-12-01T09:00:00Z\", \"webhook\": \"nope\"}\n").unwrap();
    let events = dir.join("events.jsonl");
    let (ok, _, err) = cli(&dir, &["simulate", "--recipes", recipes.to_str().unwrap(), "--events", events.to_str().unwrap()], "", false);
    assert!(!ok);
    assert!(err.contains("`nope`") && err.contains("webhook.catch"), "{err}");
    std::fs::write(dir.join("recipes/broken.yaml"), "id: broken\ntrigger: {app: webhook, event: catch}\nsteps: []\n").unwrap();
    let (ok, _, err) = cli(&dir, &["simulate", "--recipes", recipes.to_str().unwrap(), "--generate-contacts", "3"], "", false);
    assert!(!ok);
    assert!(err.contains("`steps` is empty") && err.contains("only valid recipes"), "{err}");
}

#[tokio::test]
async fn the_api_simulates_stored_recipes_under_the_installations_policy() {
    let s = TestServer::start().await;
    let r = s.api(reqwest::Method::POST, "/api/v1/recipes").body(JOURNEY).header("content-type", "application/yaml").send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let body = serde_json::json!({"recipes": ["greet"], "contacts": CONTACTS, "events": EVENTS, "seed": 7, "duration": "10d"});
    let r = s.api(reqwest::Method::POST, "/api/v1/simulate").json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let api: Value = r.json().await.unwrap();
    assert_eq!(api["runs"]["greet"]["succeeded"], 3, "{api}");
    assert_eq!(api["calls"].as_array().unwrap().len(), 6);
    // The same as the command line's report for the same inputs and seed.
    let dir = temp_dir("simulate-api");
    std::fs::create_dir_all(dir.join("recipes")).unwrap();
    std::fs::write(dir.join("recipes/greet.yaml"), JOURNEY).unwrap();
    std::fs::write(dir.join("contacts.csv"), CONTACTS).unwrap();
    std::fs::write(dir.join("events.jsonl"), EVENTS).unwrap();
    assert_eq!(api["calls"], simulate(&dir, "7")["calls"]);
    // Nothing of the simulation is in the installation's store.
    let contacts: Value = s.api(reqwest::Method::GET, "/api/v1/contacts").send().await.unwrap().json().await.unwrap();
    assert_eq!(contacts["contacts"].as_array().unwrap().len(), 0, "{contacts}");
    // Mistakes are named.
    let r = s.api(reqwest::Method::POST, "/api/v1/simulate").json(&serde_json::json!({"recipes": ["nope"]})).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.text().await.unwrap().contains("no recipe `nope`"));
    let r = s
        .api(reqwest::Method::POST, "/api/v1/simulate")
        .json(&serde_json::json!({"recipes": ["greet"], "events": "{\"at\": 1}"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["path"], "events", "{e}");
    assert!(e["message"].as_str().unwrap().contains("say what happens"), "{e}");
}

/// An ad audience upload in a simulated journey: the send policy's `ads` channel decides as in
/// production, so a contact without `ads` consent is not uploaded in the simulation either.
#[test]
fn a_simulated_audience_upload_follows_ads_consent() {
    let dir = temp_dir("simulate-ads");
    std::fs::create_dir_all(dir.join("recipes")).unwrap();
    std::fs::write(
        dir.join("recipes/retarget.yaml"),
        r#"
id: retarget
trigger: {app: contacts, event: contact_created}
reentry: once
steps:
  - id: audience
    app: meta_audiences
    action: add_users
    connection: meta-ads
    with:
      audience_id: "23851234567890123"
      email: "{{contact.email}}"
"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("contacts.csv"),
        "email,at,first_name,consent.marketing.ads\nada@example.com,2026-12-01T08:00:00Z,Ada,granted\nbob@example.com,2026-12-01T10:30:00Z,Bob,withdrawn\n",
    )
    .unwrap();
    std::fs::write(dir.join("events.jsonl"), "").unwrap();
    let a = simulate(&dir, "7");
    assert_eq!(a["contacts"], 2, "{a}");
    let calls = a["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1, "only Ada is uploaded: {a}");
    assert_eq!(calls[0]["contact"], "ada@example.com");
    assert_eq!(a["call_counts"]["meta_audiences.add_users"], 1, "{a}");
}
