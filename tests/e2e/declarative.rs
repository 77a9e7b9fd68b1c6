//! Declarative connectors through the real binary: a manifest in a folder given with
//! `--connectors` is checked at start (a wrong one stops the command with its lines) and a
//! recipe runs against it; the generated docs' check fails on stale pages.

use std::path::Path;

use enlace_kit::testing::{FakeVendor, Reply};
use serde_json::json;

use crate::support::*;

fn manifest(base_url: &str) -> String {
    format!(
        r#"id: acme
name: Acme CRM
description: Create contacts in Acme CRM.
base_url: {base_url}
auth: none
errors:
  - status: 409
    class: bad_input
    field: email
    message: error.message
actions:
  - id: create_contact
    name: Create a contact
    description: Creates a contact.
    idempotency: key
    input:
      email: {{type: string, description: The contact's email., required: true}}
      name: {{type: string, description: The contact's name.}}
    request:
      method: POST
      path: /v1/contacts
      idempotency_header: Idempotency-Key
      json: {{email: "{{{{input.email}}}}", name: "{{{{input.name}}}}"}}
    output:
      path: contact
      schema: {{type: object, properties: {{id: {{type: string, description: The id.}}}}, required: [id]}}
      sample: {{id: c_1}}
"#
    )
}

const RECIPE: &str = r#"
id: signup-to-acme
trigger: {app: webhook, event: catch, with: {path: signup}}
steps:
  - id: contact
    app: acme
    action: create_contact
    with:
      email: "{{trigger.body.email}}"
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_recipe_runs_against_a_connector_loaded_from_a_folder() {
    let vendor = FakeVendor::start().await;
    vendor.on("POST", "/v1/contacts", [Reply::json(201, json!({"contact": {"id": "c_42", "email": "ana@example.com"}}))]);
    let dir = temp_dir("declarative");
    let apps = dir.join("apps");
    std::fs::create_dir_all(&apps).unwrap();
    std::fs::write(apps.join("acme.yaml"), manifest(&vendor.url())).unwrap();
    std::fs::write(dir.join("recipe.yaml"), RECIPE).unwrap();
    std::fs::write(dir.join("event.json"), r#"{"body": {"email": "ana@example.com"}}"#).unwrap();
    let (d, a) = (dir.clone(), apps.display().to_string());
    let (ok, out, err) = tokio::task::spawn_blocking(move || {
        let recipe = d.join("recipe.yaml").display().to_string();
        let event = d.join("event.json").display().to_string();
        cli(&d.join("data"), &["--connectors", &a, "run", &recipe, "--event", &event, "--json"], "", true)
    })
    .await
    .unwrap();
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("c_42"), "the step's output is the vendor's `contact`: {out}");
    let seen = vendor.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].json(), json!({"email": "ana@example.com"}), "the name left out is not sent");
    assert!(
        seen[0].header("idempotency-key").is_some_and(|k| k.ends_with(":contact")),
        "the step's idempotency key: {:?}",
        seen[0].headers
    );

    // Without --connectors, the app is unknown.
    let d = dir.clone();
    let (ok, _, err) =
        tokio::task::spawn_blocking(move || cli(&d.join("data"), &["validate", &d.join("recipe.yaml").display().to_string()], "", true))
            .await
            .unwrap();
    assert!(!ok && err.contains("unknown app `acme`"), "{err}");
}

#[test]
fn a_wrong_manifest_stops_the_command_with_its_lines() {
    let dir = temp_dir("declarative-bad");
    std::fs::write(dir.join("acme.yaml"), manifest("http://127.0.0.1:9").replace("    description: Creates a contact.\n", "")).unwrap();
    let (ok, _, err) = cli(&dir.join("data"), &["--connectors", &dir.display().to_string(), "connectors"], "", false);
    assert!(!ok);
    assert!(err.contains("acme.yaml:12:7: actions[0]: the key `description` is required"), "{err}");
    assert!(err.contains("are not valid"), "{err}");
}

#[test]
fn the_docs_check_fails_on_stale_pages_and_passes_on_fresh_ones() {
    let dir = temp_dir("docs");
    let out = dir.display().to_string();
    let (ok, _, err) = cli(&dir.join("data"), &["connectors", "docs", "--out", &out, "--check"], "", false);
    assert!(!ok && err.contains("slack.md is missing"), "{err}");
    let (ok, stdout, _) = cli(&dir.join("data"), &["connectors", "docs", "--out", &out], "", false);
    assert!(ok && stdout.contains("pages into"), "{stdout}");
    let (ok, _, _) = cli(&dir.join("data"), &["connectors", "docs", "--out", &out, "--check"], "", false);
    assert!(ok);
    assert!(Path::new(&out).join("rss2json.md").exists(), "declarative apps have pages too");
}
