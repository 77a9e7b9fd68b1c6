//! The real `enlace` binary: validate, run with and without --dry-run, and serve across a
//! SIGTERM and a `kill -9`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

#[test]
fn validate_exits_1_with_every_diagnostic() {
    let dir = temp_dir("validate");
    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "id: x\ntrigger: {app: webhook, event: catch}\nsteps:\n  - id: a\n    app: http\n    action: request\n    with: {methd: GET}\n",
    )
    .unwrap();
    let good = Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes/hello-webhook.yaml");
    let out = bin().arg("validate").arg(&good).arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.yaml:7:"), "{stderr}");
    assert!(stderr.contains("unknown field `methd`; did you mean `method`?"), "{stderr}");
    assert!(stderr.contains("the field `url` is required"), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("hello-webhook.yaml: ok"));
    let out = bin().arg("validate").arg(&good).output().unwrap();
    assert!(out.status.success());
    let out = bin().arg("validate").arg(dir.join("missing.yaml")).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}

#[tokio::test]
async fn run_dry_run_prints_the_request_and_sends_nothing() {
    let target = Target::start().await;
    let dir = temp_dir("run");
    let recipe = dir.join("r.yaml");
    std::fs::write(
        &recipe,
        format!(
            "id: r\ntrigger: {{app: webhook, event: catch}}\nsteps:\n  - id: wait\n    delay: 2d\n  - id: post\n    app: http\n    action: request\n    with: {{method: POST, url: \"{}\", json: {{email: \"{{{{lowercase trigger.body.email}}}}\"}}}}\n",
            target.url("/dry")
        ),
    )
    .unwrap();
    let event = dir.join("event.json");
    std::fs::write(&event, r#"{"email": "ADA@EXAMPLE.COM"}"#).unwrap();
    let out = tokio::task::spawn_blocking({
        let (recipe, event) = (recipe.clone(), event.clone());
        move || {
            bin()
                .env("ENLACE_ALLOW_PRIVATE_NETWORKS", "true")
                .args(["run"])
                .arg(&recipe)
                .arg("--event")
                .arg(&event)
                .args(["--dry-run", "--json"])
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], "succeeded");
    let req = &v["dry_run"][0]["requests"][0];
    assert_eq!(req["method"], "POST");
    assert_eq!(req["body"], json!({"email": "ada@example.com"}));
    assert!(req["headers"]["idempotency-key"].as_str().unwrap().ends_with(":post"));
    assert!(target.received().is_empty(), "a dry run calls nothing");

    // Without --dry-run the request is really sent (and the 2-day delay is skipped).
    let out = tokio::task::spawn_blocking(move || {
        bin().env("ENLACE_ALLOW_PRIVATE_NETWORKS", "true").arg("run").arg(&recipe).arg("--event").arg(&event).output().unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("succeeded"));
    assert_eq!(target.received_on("/dry")[0].body, json!({"email": "ada@example.com"}));
}

struct Server {
    child: Child,
    base: String,
}

fn serve(data: &Path, recipes: &Path, extra: &[&str]) -> Server {
    let mut child = bin()
        .env("ENLACE_ALLOW_PRIVATE_NETWORKS", "true")
        .env("ENLACE_LOG", "warn")
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .arg("--recipes")
        .arg(recipes)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let base = line.trim().strip_prefix("Enlace listening on ").unwrap_or_else(|| panic!("unexpected first line: {line}")).to_string();
    Server { child, base }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn runs_json(data: &Path) -> Vec<(String, String)> {
    let out = bin().args(["runs", "list", "--limit", "100", "--data-dir"]).arg(data).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with("no runs"))
        .map(|l| {
            let mut p = l.split_whitespace();
            (p.next().unwrap().to_string(), p.nth(1).unwrap().to_string())
        })
        .collect()
}

async fn wait_status(data: &Path, want: &str) {
    for _ in 0..300 {
        let d = data.to_path_buf();
        let runs = tokio::task::spawn_blocking(move || runs_json(&d)).await.unwrap();
        if !runs.is_empty() && runs.iter().all(|(_, s)| s == want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("runs never all reached {want}: {:?}", runs_json(data));
}

fn two_step_recipe(dir: &Path, target: &Target, method: &str) {
    std::fs::write(
        dir.join("r.yaml"),
        format!(
            "id: crashy\ntrigger: {{app: webhook, event: catch, with: {{path: in}}}}\nsteps:\n  - id: first\n    app: http\n    action: request\n    with: {{method: POST, url: \"{}\", json: {{n: 1}}}}\n  - id: second\n    app: http\n    action: request\n    with: {{method: {method}, url: \"{}\", json: {{n: 2}}}}\n",
            target.url("/first"),
            target.url("/hang")
        ),
    )
    .unwrap();
}

#[tokio::test]
async fn after_kill_9_the_run_in_flight_resumes_with_the_same_idempotency_key() {
    let target = Target::start().await;
    target.script("/hang", vec![Answer::status(200, "{}").after(Duration::from_secs(60))]);
    let (data, recipes) = (temp_dir("kill-data"), temp_dir("kill-recipes"));
    two_step_recipe(&recipes, &target, "PUT");
    let mut s = serve(&data, &recipes, &[]);
    let r = client().post(format!("{}/hooks/in", s.base)).json(&json!({"a": 1})).send().await.unwrap();
    assert_eq!(r.status(), 202);
    target.wait_for("/hang", 1).await;
    // kill -9 while the second call is in flight.
    s.child.kill().unwrap();
    s.child.wait().unwrap();
    let _s2 = serve(&data, &recipes, &[]);
    let hang = target.wait_for("/hang", 2).await;
    wait_status(&data, "succeeded").await;
    assert_eq!(target.received_on("/first").len(), 1, "the completed step is not called again");
    assert_eq!(hang[0].method, "PUT");
    assert_eq!(hang[0].header("idempotency-key"), hang[1].header("idempotency-key"));
}

#[tokio::test]
async fn sigterm_hands_runs_in_flight_back_and_the_next_start_finishes_them() {
    let target = Target::start().await;
    target.script("/hang", vec![Answer::status(200, "{}").after(Duration::from_secs(60))]);
    let (data, recipes) = (temp_dir("term-data"), temp_dir("term-recipes"));
    two_step_recipe(&recipes, &target, "PUT");
    let mut s = serve(&data, &recipes, &["--drain-timeout", "500ms"]);
    let r = client().post(format!("{}/hooks/in", s.base)).json(&json!({})).send().await.unwrap();
    assert_eq!(r.status(), 202);
    target.wait_for("/hang", 1).await;
    let pid = s.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let exited = tokio::task::spawn_blocking(move || {
        let st = s.child.wait().unwrap();
        std::mem::forget(s);
        st
    })
    .await
    .unwrap();
    assert!(exited.success(), "SIGTERM is a clean stop");
    let d = data.clone();
    let runs = tokio::task::spawn_blocking(move || runs_json(&d)).await.unwrap();
    assert_eq!(runs[0].1, "queued", "the run in flight was handed back to the queue");
    let _s2 = serve(&data, &recipes, &[]);
    target.wait_for("/hang", 2).await;
    wait_status(&data, "succeeded").await;
    assert_eq!(target.received_on("/first").len(), 1);
}

#[test]
fn a_second_server_on_the_same_data_dir_is_refused() {
    let (data, recipes) = (temp_dir("lock-data"), temp_dir("lock-recipes"));
    let _s = serve(&data, &recipes, &[]);
    let out = bin().args(["serve", "--listen", "127.0.0.1:0", "--data-dir"]).arg(&data).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("another `enlace serve` is running"));
}

#[test]
fn an_invalid_recipe_file_stops_serve_before_anything_starts() {
    let (data, recipes) = (temp_dir("inv-data"), temp_dir("inv-recipes"));
    std::fs::write(recipes.join("bad.yaml"), "id: bad\ntrigger: {app: nope, event: x}\nsteps: []\n").unwrap();
    let out = bin().args(["serve", "--listen", "127.0.0.1:0", "--data-dir"]).arg(&data).arg("--recipes").arg(&recipes).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.yaml:2:") && err.contains("unknown app `nope`"), "{err}");
}
