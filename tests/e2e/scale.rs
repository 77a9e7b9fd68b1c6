//! Scale-out on PostgreSQL with real processes: several `enlace worker` nodes and an
//! ingress-only `enlace serve --no-workers`, one fresh PostgreSQL database per test.
//! Nothing lost, nothing doubled, one cron fire per tick, one rate budget for all nodes.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use enlace_store::{RateSpec, Store, StoreConfig, Synchronous};
use serde_json::json;

use crate::support::*;

/// The key every node of one test shares (nodes of a PostgreSQL store must).
const KEY: &str = "5ca1e0ff5ca1e0ff5ca1e0ff5ca1e0ff5ca1e0ff5ca1e0ff5ca1e0ff5ca1e0ff";

/// A child process of the test, killed (SIGKILL) when dropped.
struct Node {
    child: Child,
    base: Option<String>,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn node(db: &str, data: &Path, args: &[&str], lease: &str) -> Command {
    let mut c = bin();
    c.env("ENLACE_ALLOW_PRIVATE_NETWORKS", "true")
        .env("ENLACE_LOG", "warn")
        .env("ENLACE_SECRET_KEY", KEY)
        .env("ENLACE_DATABASE_URL", db)
        .env("ENLACE_LEASE", lease)
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    c
}

/// Starts a node and waits for its first line (the listening address, or the worker's start).
fn start(mut cmd: Command) -> Node {
    let mut child = cmd.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let base = line.trim().strip_prefix("Enlace listening on ").map(str::to_string);
    assert!(base.is_some() || line.starts_with("Enlace worker"), "unexpected first line: {line:?}");
    Node { child, base }
}

fn ingress(db: &str, data: &Path, recipes: &Path) -> Node {
    let recipes = recipes.to_str().unwrap();
    start(node(db, data, &["serve", "--no-workers", "--listen", "127.0.0.1:0", "--recipes", recipes], "3s"))
}

fn worker(db: &str, data: &Path, lease: &str) -> Node {
    start(node(db, data, &["worker", "--concurrency", "64"], lease))
}

async fn open(db: &str, data: &Path) -> Store {
    Store::open(&StoreConfig {
        database_url: Some(db.to_string()),
        data_dir: data.to_path_buf(),
        secret_key: Some(KEY.to_string()),
        synchronous: Synchronous::Full,
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_webhooks_on_three_workers_survive_a_kill_9_exactly_once() {
    const N: usize = 10_000;
    let sink = Target::start().await;
    let db = enlace_store::testing::postgres_database().await.unwrap();
    let data = temp_dir("scale-10k");
    let recipes = data.join("recipes");
    std::fs::create_dir_all(&recipes).unwrap();
    std::fs::write(
        recipes.join("signup.yaml"),
        format!(
            r#"
id: signup
trigger:
  app: webhook
  event: catch
  with: {{path: signup, secret: "{{{{secrets.hook}}}}", dedupe_key: "{{{{trigger.body.event_id}}}}"}}
steps:
  - id: post
    app: http
    action: request
    with: {{method: POST, url: "{u}", idempotent: true, json: {{event_id: "{{{{trigger.body.event_id}}}}", email: "{{{{lowercase trigger.body.email}}}}"}}}}
"#,
            u = sink.url("/sink")
        ),
    )
    .unwrap();
    let store = open(&db, &data).await;
    store.set_secret("hook", "s3cret", 0).await.unwrap();

    let serve = ingress(&db, &data, &recipes);
    let base = serve.base.clone().unwrap();
    let mut workers: Vec<Node> = (0..3).map(|_| worker(&db, &data, "2s")).collect();

    let http = client();
    let sent = Arc::new(AtomicUsize::new(0));
    let mut senders = vec![];
    const SENDERS: usize = 16;
    for s in 0..SENDERS {
        let (http, base, sent) = (http.clone(), base.clone(), sent.clone());
        senders.push(tokio::spawn(async move {
            let mut bad = vec![];
            for i in (s..N).step_by(SENDERS) {
                let body = serde_json::to_vec(&json!({"event_id": format!("evt-{i}"), "email": format!("USER{i}@example.com")})).unwrap();
                let sig = sign("s3cret", &body);
                let mut tries = 0;
                loop {
                    tries += 1;
                    let res = http
                        .post(format!("{base}/hooks/signup"))
                        .header("content-type", "application/json")
                        .header("x-enlace-signature", &sig)
                        .body(body.clone())
                        .send()
                        .await;
                    match res {
                        Ok(r) if r.status().as_u16() == 202 => break,
                        // A retry of the same event is what a webhook sender does; the dedupe key makes it safe.
                        Ok(r) if r.status().is_server_error() && tries < 5 => {}
                        Ok(r) => {
                            bad.push(format!("evt-{i}: {} {}", r.status(), r.text().await.unwrap_or_default()));
                            break;
                        }
                        Err(e) if tries < 5 => bad.push(format!("evt-{i}: retrying after {e}")),
                        Err(e) => {
                            bad.push(format!("evt-{i}: {e}"));
                            break;
                        }
                    }
                }
                sent.fetch_add(1, Ordering::Relaxed);
            }
            bad
        }));
    }
    // Kill one worker with SIGKILL in the middle of the load.
    while sent.load(Ordering::Relaxed) < N / 2 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let at_kill = sink.count_on("/sink");
    let mut victim = workers.remove(0);
    victim.child.kill().unwrap();
    victim.child.wait().unwrap();
    let mut errors = vec![];
    for s in senders {
        errors.extend(s.await.unwrap());
    }
    assert!(errors.iter().all(|e| e.contains("retrying")), "webhooks not accepted: {:?}", &errors[..errors.len().min(10)]);

    // Every event reaches the sink; the dead worker's runs come back after its lease (2 s).
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut keys_by_event: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    loop {
        keys_by_event.clear();
        for r in sink.received_on("/sink") {
            let event = r.body["event_id"].as_str().unwrap_or_default().to_string();
            let key = r.header("idempotency-key").unwrap_or_default();
            keys_by_event.entry(event).or_default().insert(key);
        }
        if keys_by_event.len() >= N || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(at_kill < N, "the worker was killed after the load, not during it ({at_kill} delivered by then)");
    assert_eq!(keys_by_event.len(), N, "distinct events at the sink");
    let all_keys: BTreeSet<&String> = keys_by_event.values().flatten().collect();
    assert_eq!(all_keys.len(), N, "distinct idempotency keys at the sink");
    let doubled: Vec<_> = keys_by_event.iter().filter(|(_, k)| k.len() != 1).take(5).collect();
    assert!(doubled.is_empty(), "events that reached the sink from two runs: {doubled:?}");
    for k in &all_keys {
        assert!(k.ends_with(":post") && k.len() > 10, "an idempotency key is run id + step: {k}");
    }

    // The store agrees: one run per event, all succeeded.
    let counts = store.run_counts().await.unwrap();
    assert_eq!(counts.get("succeeded").copied(), Some(N as i64), "runs by status: {counts:?}");
    assert_eq!(counts.values().sum::<i64>(), N as i64, "runs by status: {counts:?}");
    let delivered = sink.count_on("/sink");
    assert!(delivered >= N, "{delivered}");
    drop(workers);
    drop(serve);
    store.close().await;
    enlace_store::testing::drop_database(&db).await.unwrap();
}

/// Three nodes (three runners, each with its own connections to the database, as three
/// processes have) fire the due schedules at the same moments, for 60 ticks of an
/// every-minute cron on a virtual clock: each tick fires exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cron_recipe_on_three_nodes_fires_once_per_tick() {
    let db = enlace_store::testing::postgres_database().await.unwrap();
    let data = temp_dir("scale-cron");
    let yaml = r#"
id: tick
trigger: {app: schedule, event: cron, with: {cron: "* * * * *", timezone: UTC}}
steps:
  - id: note
    emit: ticked
    data: {at: "{{trigger.fired_at}}"}
"#;
    let start_ms: i64 = 1_790_000_000_000 - 1_790_000_000_000 % 60_000 + 1_000;
    let mut nodes = vec![];
    for i in 0..3 {
        let store = open(&db, &data).await;
        let clock = enlace_runner::ManualClock::new(start_ms);
        let config = enlace_runner::RunnerConfig { node_id: format!("node-{i}"), ..Default::default() };
        let runner = enlace_runner::Runner::new(store, enlace_connectors::registry(), config, transport(), Arc::new(clock.clone()));
        if i == 0 {
            install(&runner, yaml).await;
        }
        runner.load(false).await.unwrap();
        nodes.push((runner, clock));
    }
    let mut fired = 0;
    for tick in 1..=60 {
        let at = start_ms + tick * 60_000;
        for (_, clock) in &nodes {
            clock.set(at);
        }
        let (a, b, c) = tokio::join!(nodes[0].0.fire_due_schedules(), nodes[1].0.fire_due_schedules(), nodes[2].0.fire_due_schedules());
        let n = a.unwrap() + b.unwrap() + c.unwrap();
        assert_eq!(n, 1, "tick {tick}: fired {n} times across the three nodes");
        fired += n;
    }
    assert_eq!(fired, 60);
    let store = nodes[0].0.store().clone();
    let runs =
        store.list_runs(&enlace_store::RunFilter { recipe_id: Some("tick".into()), limit: 1000, ..Default::default() }).await.unwrap();
    assert_eq!(runs.len(), 60, "one run per tick");
    let mut ticks = BTreeSet::new();
    for r in &runs {
        let d = store.run_detail(&r.id).await.unwrap().unwrap();
        assert!(ticks.insert(d.event.payload["fired_at"].as_str().unwrap().to_string()), "a tick fired twice: {:?}", d.event.payload);
    }
    for (runner, _) in &nodes {
        runner.store().close().await;
    }
    enlace_store::testing::drop_database(&db).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_limited_to_10_per_second_holds_across_three_nodes() {
    const N: usize = 60;
    let sink = Target::start().await;
    let db = enlace_store::testing::postgres_database().await.unwrap();
    let data = temp_dir("scale-rate");
    let recipes = data.join("recipes");
    std::fs::create_dir_all(&recipes).unwrap();
    std::fs::write(
        recipes.join("limited.yaml"),
        format!(
            r#"
id: limited
trigger: {{app: webhook, event: catch, with: {{path: limited}}}}
steps:
  - id: post
    app: http
    action: request
    connection: crm
    with: {{method: POST, url: "{u}", idempotent: true, json: {{n: "{{{{trigger.body.n}}}}"}}}}
"#,
            u = sink.url("/limited")
        ),
    )
    .unwrap();
    let store = open(&db, &data).await;
    store
        .create_connection(
            "crm",
            "http",
            "CRM",
            &enlace_core::Credentials::Bearer { token: enlace_core::Secret::new("t0k") },
            Some(RateSpec { calls: 10, per_ms: 1000 }),
            0,
        )
        .await
        .unwrap();
    let serve = ingress(&db, &data, &recipes);
    let base = serve.base.clone().unwrap();
    let workers: Vec<Node> = (0..3).map(|_| worker(&db, &data, "3s")).collect();
    let http = client();
    for n in 0..N {
        let r = http.post(format!("{base}/hooks/limited")).json(&json!({"n": n})).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 202, "{}", r.text().await.unwrap());
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while sink.count_on("/limited") < N && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(workers);
    drop(serve);
    let times = sink.arrivals_on("/limited");
    assert_eq!(times.len(), N, "every call made");
    // No one-second window holds more than 10 calls (one more allowed for clock edges).
    let mut worst = 0;
    for (i, t) in times.iter().enumerate() {
        let in_window = times[i..].iter().take_while(|u| u.duration_since(*t) < Duration::from_secs(1)).count();
        worst = worst.max(in_window);
    }
    let offsets: Vec<u128> = times.iter().map(|t| t.duration_since(times[0]).as_millis()).collect();
    assert!(worst <= 11, "{worst} calls in one second; arrivals (ms after the first): {offsets:?}");
    let span = times.last().unwrap().duration_since(times[0]);
    assert!(span >= Duration::from_millis(4_500), "60 calls at 10/s take about 5 s, not {span:?}");
    store.close().await;
    enlace_store::testing::drop_database(&db).await.unwrap();
}

#[test]
fn worker_and_no_workers_refuse_sqlite_with_a_clear_error() {
    let data = temp_dir("scale-sqlite");
    let out = bin().args(["worker", "--data-dir"]).arg(&data).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--database-url postgres://"), "{err}");
    let out = bin().args(["serve", "--no-workers", "--data-dir"]).arg(&data).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--no-workers needs a store shared"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_synchronous_webhook_on_an_ingress_only_node_answers_with_the_run_of_a_worker() {
    let sink = Target::start().await;
    sink.script("/answer", vec![Answer::status(200, r#"{"greeting": "hello from the sink"}"#)]);
    let db = enlace_store::testing::postgres_database().await.unwrap();
    let data = temp_dir("scale-sync");
    let recipes = data.join("recipes");
    std::fs::create_dir_all(&recipes).unwrap();
    std::fs::write(
        recipes.join("sync.yaml"),
        format!(
            r#"
id: sync
trigger:
  app: webhook
  event: catch
  with: {{path: sync, respond: {{after_run: "{{{{steps.post.body}}}}", timeout: "10s"}}}}
steps:
  - id: post
    app: http
    action: request
    with: {{method: POST, url: "{u}", idempotent: true, json: {{n: "{{{{trigger.body.n}}}}"}}}}
"#,
            u = sink.url("/answer")
        ),
    )
    .unwrap();
    let serve = ingress(&db, &data, &recipes);
    let base = serve.base.clone().unwrap();
    let w = worker(&db, &data, "3s");
    let r = client().post(format!("{base}/hooks/sync")).json(&json!({"n": 1})).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body, json!({"greeting": "hello from the sink"}));
    drop(w);
    drop(serve);
    enlace_store::testing::drop_database(&db).await.unwrap();
}

/// The same with real processes and the real clock: three `enlace worker`s run an
/// every-minute cron until the next minute's tick (under a minute), which reaches the sink once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cron_tick_on_three_worker_processes_fires_once() {
    let sink = Target::start().await;
    let db = enlace_store::testing::postgres_database().await.unwrap();
    let data = temp_dir("scale-cron-procs");
    let recipes = data.join("recipes");
    std::fs::create_dir_all(&recipes).unwrap();
    std::fs::write(
        recipes.join("tick.yaml"),
        format!(
            r#"
id: tick
trigger: {{app: schedule, event: cron, with: {{cron: "* * * * *", timezone: UTC}}}}
steps:
  - id: post
    app: http
    action: request
    with: {{method: POST, url: "{u}", idempotent: true, json: {{fired_at: "{{{{trigger.fired_at}}}}"}}}}
"#,
            u = sink.url("/tick")
        ),
    )
    .unwrap();
    let serve = ingress(&db, &data, &recipes);
    let workers: Vec<Node> = (0..3).map(|_| worker(&db, &data, "3s")).collect();
    let deadline = Instant::now() + Duration::from_secs(75);
    while sink.count_on("/tick") == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Give the other nodes time to fire the same tick, if they were going to.
    tokio::time::sleep(Duration::from_secs(3)).await;
    drop(workers);
    drop(serve);
    let got = sink.received_on("/tick");
    assert!(!got.is_empty(), "no tick fired within 75 s");
    let mut per_tick: BTreeMap<String, usize> = BTreeMap::new();
    for r in &got {
        *per_tick.entry(r.body["fired_at"].as_str().unwrap().to_string()).or_default() += 1;
    }
    assert!(per_tick.values().all(|n| *n == 1), "a tick fired more than once: {per_tick:?}");
    enlace_store::testing::drop_database(&db).await.unwrap();
}
