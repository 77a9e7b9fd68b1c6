//! The shipped recipe `recipes/email-attachments-to-drive.yaml`, end to end on loopback: the
//! file itself (not a copy) against a real IMAP server (dovecot, through
//! `enlace_connector_imap::testing`), Drive's upload endpoint (the checking route of
//! `contracts.rs`, which validates each upload's metadata against Drive's discovery
//! document) and a Slack Web API stand-in, on a manual clock, on both stores.
//!
//! A mail already in the mailbox when the recipe is enabled starts nothing (the first poll
//! seeds); then a mail with two attachments and one without arrive: one run saves both
//! files into the recipe's folder and posts one Slack message naming them, their links and
//! the sender; a later poll fires nothing again.

use std::sync::Arc;
use std::time::Duration;

use enlace_connector_imap::testing::{Dovecot, PASSWORD, TestAttachment, mail_with_attachments};
use enlace_core::{Credentials, Registry, Secret};
use enlace_runner::{Clock, ManualClock, Runner, RunnerConfig};
use enlace_store::{RunFilter, RunStatus, Store};
use serde_json::{Value, json};

use crate::contracts::drive_upload_route;
use crate::support::*;

/// The recipe file, read where it is shipped.
const RECIPE_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/recipes/email-attachments-to-drive.yaml");
/// The connection ids the recipe names.
const MAILBOX: &str = "mailbox";
const DRIVE: &str = "drive";
const SLACK: &str = "team-slack";
const DRIVE_TOKEN: &str = "ya29.drive-recipe-token-4711";
const SLACK_TOKEN: &str = "xoxb-drive-recipe-0815";

/// A PDF-like file: a header, then every byte value (not text, not UTF-8).
fn pdf() -> Vec<u8> {
    let mut b = b"%PDF-1.7\n".to_vec();
    b.extend((0u8..=255).cycle().take(5000));
    b.extend_from_slice(b"\n%%EOF\n");
    b
}
const CSV: &[u8] = b"sku;qty;price\nA-1;3;9.90\nB-2;5;12.00\n";

async fn runs(store: &Store, recipe: &str) -> Vec<enlace_store::RunRow> {
    store.list_runs(&RunFilter { recipe_id: Some(recipe.into()), limit: 100, ..Default::default() }).await.unwrap()
}

/// The fields of a form-encoded body the Slack stand-in received.
fn form(body: &Value) -> Vec<(String, String)> {
    let text = body.as_str().unwrap_or_else(|| panic!("Slack gets a form, not JSON: {body}"));
    form_urlencoded::parse(text.as_bytes()).into_owned().collect()
}

fn field<'a>(form: &'a [(String, String)], name: &str) -> &'a str {
    form.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).unwrap_or_else(|| panic!("no `{name}` in {form:?}"))
}

async fn new_mail_with_attachments_lands_in_drive_and_slack_once() {
    let mailbox = Dovecot::start().await;
    // Already there when the recipe is enabled: it must not fire.
    let old = mail_with_attachments(
        "Old Sender <old@example.org>",
        "Last year's invoice",
        "<old-1@example.org>",
        "From before.",
        &[TestAttachment { name: "old.pdf", content_type: "application/pdf", bytes: b"%PDF-1.4 old" }],
    );
    mailbox.append("INBOX", &old).await;

    // Drive's upload endpoint and Slack's Web API, on loopback.
    let (upload_base, uploads) = drive_upload_route().await;
    let slack = Target::start().await;
    slack.script(
        "/api/chat.postMessage",
        vec![Answer::status(200, r#"{"ok": true, "channel": "C0INVOICES", "ts": "1775210400.000100", "message": {"text": "saved"}}"#)],
    );
    let mut connectors: Vec<_> = enlace_connectors::all().into_iter().filter(|c| c.id() != "google_drive" && c.id() != "slack").collect();
    // Only uploads are called; metadata calls would go to a closed port and fail the run.
    connectors.push(enlace_connector_google_drive::connector_at("http://127.0.0.1:9/drive/v3", &upload_base));
    connectors.push(enlace_connector_slack::connector_at(&slack.url("/api")));
    let registry = Registry::new(connectors).unwrap();

    let store = test_store().await;
    let clock = ManualClock::new(1_790_000_000_000);
    let runner = Runner::new(store.clone(), registry, RunnerConfig::default(), transport(), Arc::new(clock.clone()) as Arc<dyn Clock>);
    runner.load(false).await.unwrap();

    // The connections the recipe names.
    store.create_connection(MAILBOX, "imap", "Invoices mailbox", &mailbox.credentials(PASSWORD), None, 0).await.unwrap();
    let drive_credentials: Credentials = serde_json::from_value(json!({"kind": "oauth2", "access_token": DRIVE_TOKEN})).unwrap();
    store.create_connection(DRIVE, "google_drive", "Drive", &drive_credentials, None, 0).await.unwrap();
    store.create_connection(SLACK, "slack", "Team Slack", &Credentials::Bearer { token: Secret::new(SLACK_TOKEN) }, None, 0).await.unwrap();

    // The shipped file, as it is; its vars say where the files and the message go.
    let yaml = std::fs::read_to_string(RECIPE_FILE).unwrap();
    let recipe = enlace_recipe::load(&yaml, Some(RECIPE_FILE), runner.registry()).unwrap_or_else(|d| panic!("{RECIPE_FILE}:\n{d}"));
    let folder = recipe.vars["drive_folder"].as_str().unwrap().to_string();
    let channel = recipe.vars["slack_channel"].as_str().unwrap().to_string();
    assert!(!recipe.enabled, "shipped disabled: it needs connections first");
    runner.save_recipe(&recipe, "file").await.unwrap();
    assert_eq!(runner.poll_triggers().await.unwrap().polled, 0, "a disabled recipe is not polled");

    // Enabled: the first poll seeds; the mail already there fires nothing.
    runner.set_enabled(&recipe.id, true).await.unwrap();
    let r = runner.poll_triggers().await.unwrap();
    assert_eq!((r.polled, r.seeded, r.fired, r.errors), (1, 1, 0, 0), "{r:?}");
    runner.drain_due().await.unwrap();
    assert!(runs(&store, &recipe.id).await.is_empty());

    // A mail with a PDF and a CSV, and one without attachments.
    let pdf = pdf();
    let with_files = mail_with_attachments(
        "\"Supplier Billing\" <billing@supplier.example>",
        "Invoice INV-0412",
        "<inv-0412@supplier.example>",
        "Invoice and items attached.",
        &[
            TestAttachment { name: "INV-0412.pdf", content_type: "application/pdf", bytes: &pdf },
            TestAttachment { name: "items.csv", content_type: "text/csv", bytes: CSV },
        ],
    );
    mailbox.append("INBOX", &with_files).await;
    mailbox.append("INBOX", &mail_with_attachments("bo@example.org", "Lunch?", "<lunch@example.org>", "Noon?", &[])).await;
    assert_eq!(runner.poll_triggers().await.unwrap().polled, 0, "not due before `every`");

    clock.advance(Duration::from_secs(5 * 60));
    let r = runner.poll_triggers().await.unwrap();
    assert_eq!((r.polled, r.fired, r.errors), (1, 1, 0), "only the mail with attachments fires: {r:?}");
    runner.drain_due().await.unwrap();

    let all = runs(&store, &recipe.id).await;
    assert_eq!(all.len(), 1, "{all:?}");
    let detail = store.run_detail(&all[0].id).await.unwrap().unwrap();
    assert_eq!(all[0].status, RunStatus::Succeeded, "{detail:#?}\nuploads: {:#?}", uploads.lock().unwrap());
    assert_eq!(detail.event.source, "poll");
    assert_eq!(detail.event.payload["subject"], "Invoice INV-0412");

    // Two uploads into the recipe's folder, with the attachments' names, types and bytes.
    let got = uploads.lock().unwrap().clone();
    assert_eq!(got.len(), 2, "{got:#?}");
    let expected: [(&str, &str, &[u8]); 2] = [("INV-0412.pdf", "application/pdf", &pdf), ("items.csv", "text/csv", CSV)];
    for (u, (name, mime, bytes)) in got.iter().zip(expected) {
        assert_eq!(u.problems, Vec::<String>::new(), "the upload matches Drive's File schema: {u:#?}");
        assert!(u.query.contains(&("uploadType".into(), "multipart".into())), "{u:#?}");
        assert_eq!(u.metadata["name"], name);
        assert_eq!(u.metadata["mimeType"], mime);
        assert_eq!(u.media_type, mime);
        assert_eq!(u.metadata["parents"], json!([folder]), "saved in the recipe's folder");
        assert!(u.media == bytes, "the media bytes of {name} are the attachment's ({} bytes, {} expected)", u.media.len(), bytes.len());
    }

    // One Slack message naming both files, their links and the sender.
    let posted = slack.received_on("/api/chat.postMessage");
    assert_eq!(posted.len(), 1, "{posted:#?}");
    assert_eq!(posted[0].header("authorization").as_deref(), Some(format!("Bearer {SLACK_TOKEN}").as_str()));
    let f = form(&posted[0].body);
    assert_eq!(field(&f, "channel"), channel);
    let text = field(&f, "text");
    for part in [
        "Saved 2 file(s) from Supplier Billing <billing@supplier.example>",
        "\"Invoice INV-0412\"",
        "• <https://drive.google.com/file/d/1UploadedFile1/view?usp=drivesdk|INV-0412.pdf>",
        "• <https://drive.google.com/file/d/1UploadedFile2/view?usp=drivesdk|items.csv>",
    ] {
        assert!(text.contains(part), "the message has `{part}`:\n{text}");
    }

    // No credential in the run's history.
    let history = serde_json::to_string(&detail.steps).unwrap();
    for secret in [DRIVE_TOKEN, SLACK_TOKEN, PASSWORD] {
        assert!(!history.contains(secret), "no credential in run history");
    }

    // Nothing new: the next poll fires nothing, nothing is sent again.
    clock.advance(Duration::from_secs(5 * 60));
    let r = runner.poll_triggers().await.unwrap();
    assert_eq!((r.polled, r.fired, r.errors), (1, 0, 0), "{r:?}");
    runner.drain_due().await.unwrap();
    assert_eq!(runs(&store, &recipe.id).await.len(), 1);
    assert_eq!(uploads.lock().unwrap().len(), 2);
    assert_eq!(slack.received_on("/api/chat.postMessage").len(), 1);
}

on_both_backends!(new_mail_with_attachments_lands_in_drive_and_slack_once);

/// An attachment above the trigger's `max_attachment_bytes` arrives without its content: the
/// recipe's loop leaves it out instead of failing the run on it.
#[test]
fn attachments_without_content_are_not_uploaded() {
    let yaml = std::fs::read_to_string(RECIPE_FILE).unwrap();
    let recipe = enlace_recipe::load(&yaml, Some(RECIPE_FILE), &enlace_connectors::registry()).unwrap_or_else(|d| panic!("{d}"));
    let step = recipe.find_step("each_file").expect("the loop over the attachments");
    let enlace_recipe::model::StepKind::Foreach { items, .. } = &step.kind else { panic!("each_file is a foreach: {:?}", step.kind) };
    let kept = json!({"name": "a.pdf", "content_type": "application/pdf", "size": 3, "content_base64": "JVBE"});
    let skipped = json!({"name": "huge.zip", "content_type": "application/zip", "size": 20_000_000, "content_base64": null, "skipped": "larger than 10485760 bytes"});
    let data = json!({"trigger": {"attachments": [kept, skipped]}, "vars": recipe.vars});
    assert_eq!(items.render_value(&data).unwrap(), json!([kept]));
}
