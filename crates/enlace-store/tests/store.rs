//! The store's behaviour, checked the same way on both backends: every scenario in `both!`
//! runs once on SQLite and once on PostgreSQL (a fresh database per test, made by
//! `enlace_store::testing`). The scenarios that need several nodes (wake-ups, shared rate
//! limits, claiming races) run on PostgreSQL only.
//!
//! PostgreSQL must be reachable (see `enlace_store::testing`): a test that cannot reach it
//! fails and says how to start it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use enlace_store::*;
use serde_json::{Value, json};
use tokio::task::JoinSet;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Sqlite,
    Postgres,
}

/// One store's database, and the data directory beside it.
struct Db {
    kind: Kind,
    /// The PostgreSQL database's URL.
    url: Option<String>,
    dir: PathBuf,
    key: String,
    first: Store,
}

fn key_text(byte: u8) -> String {
    hex_key(&[byte; 32])
}

fn hex_key(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Db {
    async fn new(kind: Kind) -> Db {
        let dir = std::env::temp_dir().join(format!("enlace-store-test-{}", new_id()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = match kind {
            Kind::Sqlite => None,
            Kind::Postgres => Some(testing::postgres_database().await.unwrap_or_else(|e| panic!("{e}"))),
        };
        let key = key_text(7);
        let first = open(kind, url.as_deref(), &dir, &key, None).await.unwrap_or_else(|e| panic!("opening the store: {e}"));
        Db { kind, url, dir, key, first }
    }

    fn store(&self) -> Store {
        self.first.clone()
    }

    /// Another process's store on the same database (PostgreSQL: its own pool and listener;
    /// SQLite: the same store, since one process owns an SQLite store).
    async fn another(&self, pool: Option<u32>) -> Store {
        match self.kind {
            Kind::Sqlite => self.first.clone(),
            Kind::Postgres => open(self.kind, self.url.as_deref(), &self.dir, &self.key, pool).await.unwrap_or_else(|e| panic!("{e}")),
        }
    }

    async fn stores(&self, n: usize) -> Vec<Store> {
        let mut out = vec![self.store()];
        for _ in 1..n {
            out.push(self.another(Some(3)).await);
        }
        out
    }

    async fn finish(self) {
        self.first.close().await;
        if let Some(url) = &self.url {
            testing::drop_database(url).await.unwrap();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn open(kind: Kind, url: Option<&str>, dir: &std::path::Path, key: &str, pool: Option<u32>) -> Result<Store> {
    let database_url = match (kind, url) {
        (Kind::Sqlite, _) => None,
        (Kind::Postgres, Some(u)) => Some(match pool {
            Some(n) => format!("{u}?pool_max_conns={n}"),
            None => u.to_string(),
        }),
        (Kind::Postgres, None) => unreachable!(),
    };
    Store::open(&StoreConfig {
        database_url,
        data_dir: dir.to_path_buf(),
        secret_key: Some(key.to_string()),
        synchronous: Synchronous::Normal,
    })
    .await
}

fn event(recipe: &str, dedupe: Option<&str>, now: Millis, owner: Option<&str>) -> NewEvent {
    NewEvent {
        recipe_id: recipe.into(),
        recipe_version: 1,
        source: "webhook".into(),
        dedupe_key: dedupe.map(String::from),
        payload: json!({"n": now, "text": "hé"}).to_string(),
        owner: owner.map(String::from),
        lease_ms: 30_000,
        now,
    }
}

fn step(key: &str, seq: i64, status: StepStatus, output: Option<Value>, at: Millis) -> StepRecord {
    StepRecord {
        key: key.into(),
        seq,
        step_id: key.into(),
        kind: "http.request".into(),
        status,
        input: Some(json!({"url": "http://x"})),
        output,
        error: None,
        attempts: 1,
        idempotency_key: Some(format!("idem-{key}")),
        started_at: at,
        finished_at: Some(at + 5),
    }
}

fn recipe(id: &str, body: Value, hook: Option<&str>) -> SaveRecipe {
    SaveRecipe { id: id.into(), body, enabled: true, origin: "api".into(), hook_path: hook.map(String::from), event_name: None, cron: None }
}

macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Kind::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Kind::Postgres).await
                }
            )*
        }
    };
}

both!(
    backend_facts,
    recipes_are_versioned,
    accept_and_dedupe,
    claim_journal_and_fencing,
    heartbeat_and_reap,
    cron_fires_once,
    replay_and_cancel,
    secrets_connections_tokens,
    a_wrong_secret_key_refuses_to_open,
    contacts_upsert_race_makes_one_contact,
    contacts_changes_write_the_timeline_and_start_subscribed_runs_once,
    contacts_consent_history_and_notes_are_idempotent_per_key,
    contacts_list_filters_and_erase_removes_everything,
    polling_claims_commits_and_fences,
    polling_held_batches_fire_once_and_rewinds_rearm,
    subscriptions_keep_their_secret_sealed,
    contacts_phone_decisions_reach_contacts_and_the_suppression_list,
    gdpr_export_has_everything_and_erase_leaves_no_trace,
    gdpr_audience_removals_queue_claim_retry_and_lease,
    send_ledger_reservations_pass_a_cap_once_and_keep_their_key,
    timeline_events_are_recorded_once_queried_and_start_their_kind,
    timeline_scores_decay_and_thresholds_fire_once_per_crossing,
    flow_counts_group_runs_by_recipe_step_and_status,
);

async fn backend_facts(kind: Kind) {
    let db = Db::new(kind).await;
    let s = db.store();
    s.ping().await.unwrap();
    let now = s.db_now_ms().await.unwrap();
    let wall = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    assert!((now - wall).abs() < 60_000, "the database's clock {now} is far from this machine's {wall}");
    match kind {
        Kind::Sqlite => {
            assert_eq!(s.backend_name(), "sqlite");
            assert!(s.sqlite_path().is_some());
            assert!(s.wakeups().is_none());
            assert!(!s.shared_rate_limits());
            let e = s.rate_acquire("k", 1, 1000).await.unwrap_err().to_string();
            assert!(e.contains("PostgreSQL") && e.contains("shared_rate_limits"), "{e}");
            assert!(s.rate_hold("k", now).await.is_err());
        }
        Kind::Postgres => {
            assert_eq!(s.backend_name(), "postgres");
            assert!(s.sqlite_path().is_none());
            assert!(s.wakeups().is_some());
            assert!(s.shared_rate_limits());
            // A server that is not there: a prompt, precise error.
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let url = format!("postgres://root:pw@127.0.0.1:{port}/x");
            let started = Instant::now();
            let Err(e) = open(kind, Some(&url), &db.dir, &db.key, None).await else { panic!("nothing listens on {port}") };
            let e = e.to_string();
            assert!(e.contains("cannot connect to PostgreSQL") && e.contains("check that the server runs"), "{e}");
            assert!(!e.contains("pw@"), "the password is hidden: {e}");
            assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
            let Err(e) = open(kind, Some(&format!("{url}?pool_max_conns=0")), &db.dir, &db.key, None).await else { panic!("no pool") };
            assert!(e.to_string().contains("pool_max_conns"), "{e}");
        }
    }
    s.close().await;
    assert!(matches!(s.ping().await, Err(StoreError::Closed)), "a closed store says so");
    db.finish().await;
}

async fn recipes_are_versioned(kind: Kind) {
    let db = Db::new(kind).await;
    let s = db.store();
    let a = s.save_recipe(recipe("r1", json!({"steps": ["a"]}), Some("in")), 1000).await.unwrap();
    assert!(a.new_version);
    assert_eq!((a.recipe.version, a.recipe.enabled, a.recipe.hook_path.as_deref()), (1, true, Some("in")));
    let same = s.save_recipe(recipe("r1", json!({"steps": ["a"]}), Some("in")), 2000).await.unwrap();
    assert!(!same.new_version);
    assert_eq!(same.recipe.version, 1);
    let b = s.save_recipe(recipe("r1", json!({"steps": ["a", "b"]}), Some("in")), 3000).await.unwrap();
    assert!(b.new_version);
    assert_eq!(b.recipe.version, 2);
    let versions = s.recipe_versions("r1").await.unwrap();
    assert_eq!(versions.iter().map(|v| v.version).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(s.recipe_version("r1", 1).await.unwrap().unwrap().body, json!({"steps": ["a"]}));
    assert!(s.recipe_version("r1", 9).await.unwrap().is_none());

    // An unchanged body keeps a switch turned off meanwhile.
    assert!(!s.set_enabled("r1", false, 4000).await.unwrap().unwrap().enabled);
    let again = s.save_recipe(recipe("r1", json!({"steps": ["a", "b"]}), Some("in")), 5000).await.unwrap();
    assert!(!again.recipe.enabled && !again.new_version);
    assert!(s.set_enabled("nope", true, 5000).await.unwrap().is_none());
    assert_eq!(s.recipes_updated_at().await.unwrap(), 5000);

    // One enabled recipe per webhook path.
    s.set_enabled("r1", true, 6000).await.unwrap();
    let e = s.save_recipe(recipe("r2", json!({}), Some("in")), 7000).await.unwrap_err();
    assert!(matches!(e, StoreError::Conflict(_)), "{e:?}");
    assert!(e.to_string().contains("`in`") && e.to_string().contains("`r1`"), "{e}");
    let mut off = recipe("r2", json!({}), Some("in"));
    off.enabled = false;
    s.save_recipe(off, 7000).await.unwrap();
    let e = s.set_enabled("r2", true, 8000).await.unwrap_err();
    assert!(matches!(e, StoreError::Conflict(_)) && e.to_string().contains("same webhook path"), "{e}");
    assert_eq!(s.list_recipes().await.unwrap().iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), vec!["r1", "r2"]);

    // Cron recipes: the pending tick survives a save with the same schedule.
    let mut c = recipe("tick", json!({"cron": 1}), None);
    c.cron = Some(CronSpec { expression: "* * * * *".into(), timezone: "UTC".into(), next_at: 60_000 });
    assert!(s.save_recipe(c.clone(), 1000).await.unwrap().recipe.is_cron);
    c.cron.as_mut().unwrap().next_at = 120_000;
    s.save_recipe(c.clone(), 2000).await.unwrap();
    assert_eq!(s.due_schedules(60_000).await.unwrap(), vec![("tick".to_string(), 60_000)]);
    c.cron = None;
    s.save_recipe(c, 3000).await.unwrap();
    assert!(s.due_schedules(1_000_000).await.unwrap().is_empty());

    // Nodes that start together save the same recipe files at once: one version.
    let stores = db.stores(3).await;
    let mut set = JoinSet::new();
    for i in 0..12 {
        let s = stores[i % stores.len()].clone();
        set.spawn(async move { s.save_recipe(recipe("shared", json!({"same": true}), None), 9000).await.unwrap().new_version });
    }
    let fresh = set.join_all().await.into_iter().filter(|n| *n).count();
    assert_eq!(fresh, 1, "exactly one save stores the first version");
    assert_eq!(s.recipe_versions("shared").await.unwrap().len(), 1);
    db.finish().await;
}

async fn accept_and_dedupe(kind: Kind) {
    let db = Db::new(kind).await;
    let s = db.store();
    let plain = s.accept_event(event("r", None, 1000, None)).await.unwrap();
    assert!(!plain.duplicate);
    let run = s.get_run(&plain.run_id).await.unwrap().unwrap();
    assert_eq!((run.status, run.due_at, run.owner.clone(), run.attempt), (RunStatus::Queued, Some(1000), None, 1));
    let detail = s.run_detail(&plain.run_id).await.unwrap().unwrap();
    assert_eq!(detail.event.payload, json!({"n": 1000, "text": "hé"}));
    assert_eq!(detail.event.id, plain.event_id);

    let owned = s.accept_event(event("r", None, 1000, Some("node-a"))).await.unwrap();
    let run = s.get_run(&owned.run_id).await.unwrap().unwrap();
    assert_eq!((run.status, run.owner.as_deref(), run.started_at), (RunStatus::Running, Some("node-a"), Some(1000)));

    let first = s.accept_event(event("r", Some("k1"), 1000, None)).await.unwrap();
    let second = s.accept_event(event("r", Some("k1"), 2000, None)).await.unwrap();
    assert!(!first.duplicate && second.duplicate);
    assert_eq!((&second.run_id, &second.event_id), (&first.run_id, &first.event_id));
    // The same key for another recipe is another event.
    assert!(!s.accept_event(event("other", Some("k1"), 1000, None)).await.unwrap().duplicate);

    // Many concurrent deliveries of one event (from several nodes on PostgreSQL): one run.
    let stores = db.stores(3).await;
    let mut set = JoinSet::new();
    for i in 0..48 {
        let s = stores[i % stores.len()].clone();
        set.spawn(async move { s.accept_event(event("r", Some("storm"), 3000 + i as i64, None)).await.unwrap() });
    }
    let all = set.join_all().await;
    assert_eq!(all.iter().filter(|a| !a.duplicate).count(), 1, "exactly one delivery starts a run");
    let ids: HashSet<&str> = all.iter().map(|a| a.run_id.as_str()).collect();
    assert_eq!(ids.len(), 1, "every duplicate answers with the first run: {ids:?}");
    let runs = s.list_runs(&RunFilter { recipe_id: Some("r".into()), limit: 100, ..Default::default() }).await.unwrap();
    assert_eq!(runs.len(), 4, "plain, owned, k1 and storm");
    let counts = s.run_counts().await.unwrap();
    assert_eq!(counts.get("queued"), Some(&4));
    assert_eq!(counts.get("running"), Some(&1));
    // History filters and keyset pages.
    let page = s.list_runs(&RunFilter { limit: 2, ..Default::default() }).await.unwrap();
    assert_eq!(page.len(), 2);
    let next = s.list_runs(&RunFilter { limit: 10, before: Some(page[1].id.clone()), ..Default::default() }).await.unwrap();
    assert_eq!(next.len(), 3);
    assert!(next.iter().all(|r| r.id < page[1].id));
    let running = s.list_runs(&RunFilter { status: Some(RunStatus::Running), ..Default::default() }).await.unwrap();
    assert_eq!(running.len(), 1);
    let late = s.list_runs(&RunFilter { since: Some(3000), until: Some(10_000), ..Default::default() }).await.unwrap();
    assert_eq!(late.len(), 1);
    db.finish().await;
}

async fn claim_journal_and_fencing(kind: Kind) {
    let db = Db::new(kind).await;
    let s = db.store();
    for i in 0..3 {
        s.accept_event(event("r", None, 1000 + i, None)).await.unwrap();
    }
    assert!(s.claim_due("a", 999, 10, 30_000).await.unwrap().is_empty(), "nothing is due before its time");
    assert_eq!(s.next_due_at().await.unwrap(), Some(1000));
    let got = s.claim_due("a", 5000, 2, 30_000).await.unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].recipe_id, "r");
    let rest = s.claim_due("b", 5000, 5, 30_000).await.unwrap();
    assert_eq!(rest.len(), 1);
    assert!(s.claim_due("a", 5000, 5, 30_000).await.unwrap().is_empty());
    assert_eq!(s.next_due_at().await.unwrap(), None);
    let run = &got[0].run_id;
    let r = s.get_run(run).await.unwrap().unwrap();
    assert_eq!((r.status, r.owner.as_deref(), r.started_at), (RunStatus::Running, Some("a"), Some(5000)));

    // The owner journals; a non-owner writes nothing.
    let s1 = step("fetch", 1, StepStatus::Succeeded, Some(json!({"v": 1})), 5000);
    assert!(s.record_steps(run, "a", vec![s1.clone()], vec![], 5010).await.unwrap());
    assert!(!s.record_steps(run, "b", vec![step("evil", 2, StepStatus::Succeeded, None, 5000)], vec![], 5010).await.unwrap());
    assert!(!s.update_run(run, "b", vec![], RunUpdate::Finish { status: RunStatus::Failed, error: None }, vec![], 5010).await.unwrap());
    // A key given twice keeps its last record.
    let running = step("send", 2, StepStatus::Running, None, 5020);
    let sent = step("send", 2, StepStatus::Succeeded, Some(json!({"id": "m1"})), 5020);
    assert!(s.record_steps(run, "a", vec![running, sent.clone()], vec![], 5030).await.unwrap());
    let d = s.run_detail(run).await.unwrap().unwrap();
    assert_eq!(d.steps, vec![s1.clone(), sent.clone()]);
    assert_eq!(d.run.status, RunStatus::Running);

    // Parked until 9000: not claimable before.
    let wait = step("pause", 3, StepStatus::Waiting, None, 5040);
    assert!(s.update_run(run, "a", vec![wait], RunUpdate::Park { status: RunStatus::Waiting, due_at: 9000 }, vec![], 5050).await.unwrap());
    let r = s.get_run(run).await.unwrap().unwrap();
    assert_eq!((r.status, r.due_at, r.owner), (RunStatus::Waiting, Some(9000), None));
    assert!(!s.record_steps(run, "a", vec![], vec![], 5060).await.unwrap(), "a parked run is nobody's");
    assert_eq!(s.next_due_at().await.unwrap(), Some(9000));
    assert!(s.claim_due("c", 8999, 5, 30_000).await.unwrap().is_empty());
    assert_eq!(s.claim_due("c", 9000, 5, 30_000).await.unwrap().len(), 1);

    // Finished with its last steps and an emitted event, in one write.
    let done = step("pause", 3, StepStatus::Succeeded, None, 9000);
    let last = step("notify", 4, StepStatus::Succeeded, Some(json!(true)), 9001);
    let emitted = NewEvent { source: "emit".into(), ..event("downstream", Some("e1"), 9002, None) };
    assert!(
        s.update_run(
            run,
            "c",
            vec![done, last.clone()],
            RunUpdate::Finish { status: RunStatus::Succeeded, error: None },
            vec![emitted],
            9002
        )
        .await
        .unwrap()
    );
    let d = s.run_detail(run).await.unwrap().unwrap();
    assert_eq!((d.run.status, d.run.finished_at, d.run.owner.clone(), d.run.due_at), (RunStatus::Succeeded, Some(9002), None, None));
    assert_eq!(d.steps.len(), 4);
    assert_eq!(d.steps[3], last);
    let down = s.list_runs(&RunFilter { recipe_id: Some("downstream".into()), ..Default::default() }).await.unwrap();
    assert_eq!(down.len(), 1);
    assert_eq!((down[0].status, down[0].due_at), (RunStatus::Queued, Some(9002)));
    assert!(
        !s.update_run(run, "c", vec![], RunUpdate::Finish { status: RunStatus::Failed, error: None }, vec![], 9003).await.unwrap(),
        "a finished run is not moved again"
    );

    // The one-step finish (SQLite's batched path), and a failure with its error.
    let other = &got[1].run_id;
    let fail = StepRecord { error: Some(json!({"class": "permanent"})), ..step("x", 1, StepStatus::Failed, None, 6000) };
    let err = json!({"class": "permanent", "message": "no"});
    assert!(
        !s.update_run(
            other,
            "b",
            vec![fail.clone()],
            RunUpdate::Finish { status: RunStatus::Failed, error: Some(err.clone()) },
            vec![],
            6001
        )
        .await
        .unwrap(),
        "b does not hold it"
    );
    assert!(
        s.update_run(
            other,
            "a",
            vec![fail.clone()],
            RunUpdate::Finish { status: RunStatus::Failed, error: Some(err.clone()) },
            vec![],
            6001
        )
        .await
        .unwrap()
    );
    let d = s.run_detail(other).await.unwrap().unwrap();
    assert_eq!((d.run.status, d.run.error), (RunStatus::Failed, Some(err)));
    assert_eq!(d.steps, vec![fail]);

    // Cancelled while running: the late worker's writes are refused.
    let third = &rest[0].run_id;
    s.cancel_run(third, 7000).await.unwrap();
    assert!(!s.record_steps(third, "b", vec![step("y", 1, StepStatus::Succeeded, None, 7001)], vec![], 7001).await.unwrap());
    assert!(s.run_detail(third).await.unwrap().unwrap().steps.is_empty());
    db.finish().await;
}

async fn heartbeat_and_reap(kind: Kind) {
    let db = Db::new(kind).await;
    let s = db.store();
    for i in 0..2 {
        s.accept_event(event("r", None, i, None)).await.unwrap();
    }
    let claimed = s.claim_due("a", 1, 10, 1000).await.unwrap();
    assert_eq!(claimed.len(), 2);
    assert_eq!(s.heartbeat("a", 500, 1000).await.unwrap(), 2);
    assert_eq!(s.heartbeat("nobody", 500, 1000).await.unwrap(), 0);
    assert_eq!(s.reap_expired(1400).await.unwrap(), 0, "the heartbeat moved the leases to 1500");
    assert_eq!(s.reap_expired(1600).await.unwrap(), 2);
    let r = s.get_run(&claimed[0].run_id).await.unwrap().unwrap();
    assert_eq!((r.status, r.due_at, r.owner), (RunStatus::Queued, Some(1600), None));

    // A new owner takes them; the old one, back from a pause, can write nothing.
    assert_eq!(s.claim_due("b", 1600, 10, 1000).await.unwrap().len(), 2);
    let run = &claimed[0].run_id;
    assert!(!s.record_steps(run, "a", vec![step("s", 1, StepStatus::Succeeded, None, 1700)], vec![], 1700).await.unwrap());
    assert!(!s.update_run(run, "a", vec![], RunUpdate::Finish { status: RunStatus::Succeeded, error: None }, vec![], 1700).await.unwrap());
    assert_eq!(s.heartbeat("a", 1700, 1000).await.unwrap(), 0);
    assert!(s.record_steps(run, "b", vec![step("s", 1, StepStatus::Succeeded, None, 1700)], vec![], 1700).await.unwrap());

    // Handing back (a draining shutdown), and recovery after a crash of the only node.
    assert_eq!(s.release_owned("b", 1800).await.unwrap(), 2);
    assert_eq!(s.release_owned("b", 1800).await.unwrap(), 0);
    assert_eq!(s.claim_due("c", 1800, 1, 1000).await.unwrap().len(), 1);
    assert_eq!(s.recover_orphans(1900).await.unwrap(), 1);
    let counts = s.run_counts().await.unwrap();
    assert_eq!(counts.get("queued"), Some(&2));
    assert_eq!(counts.get("running"), None);
    db.finish().await;
}

async fn cron_fires_once(kind: Kind) {
    let db = Db::new(kind).await;
    let s = db.store();
    let mut c = recipe("tick", json!({}), None);
    c.cron = Some(CronSpec { expression: "* * * * *".into(), timezone: "UTC".into(), next_at: 60_000 });
    s.save_recipe(c, 0).await.unwrap();
    assert_eq!(s.due_schedules(59_999).await.unwrap(), vec![]);
    assert_eq!(s.due_schedules(60_000).await.unwrap(), vec![("tick".to_string(), 60_000)]);
    let tick = |now| NewEvent { source: "cron".into(), ..event("tick", Some("cron:60000"), now, None) };

    let stores = db.stores(3).await;
    let mut set = JoinSet::new();
    for i in 0..24 {
        let (s, ev) = (stores[i % stores.len()].clone(), tick(60_000 + i as i64));
        set.spawn(async move { s.fire_schedule("tick", 60_000, 120_000, ev).await.unwrap() });
    }
    let fired: Vec<Accepted> = set.join_all().await.into_iter().flatten().collect();
    assert_eq!(fired.len(), 1, "one tick fires once: {fired:?}");
    assert!(!fired[0].duplicate);
    assert!(s.due_schedules(60_000).await.unwrap().is_empty());
    assert_eq!(s.due_schedules(120_000).await.unwrap(), vec![("tick".to_string(), 120_000)]);
    let runs = s.list_runs(&RunFilter { recipe_id: Some("tick".into()), ..Default::default() }).await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].id, fired[0].run_id);

    // The dedupe key guards too: a schedule moved back by hand cannot fire that tick again.
    let again = s.fire_schedule("tick", 120_000, 180_000, tick(120_000)).await.unwrap().expect("the schedule was at 120000");
    assert!(again.duplicate);
    assert_eq!(again.run_id, fired[0].run_id);
    assert!(s.fire_schedule("missing", 1, 2, tick(1)).await.unwrap().is_none());
    db.finish().await;
}

async fn replay_and_cancel(kind: Kind) {
    let db = Db::new(kind).await;
    let s = db.store();
    let a = s.accept_event(event("r", None, 1000, None)).await.unwrap();
    let c = s.cancel_run(&a.run_id, 2000).await.unwrap();
    assert_eq!((c.status, c.finished_at, c.due_at), (RunStatus::Cancelled, Some(2000), None));
    assert_eq!(c.error.as_ref().and_then(|e| e.get("class")), Some(&json!("cancelled")));
    let e = s.cancel_run(&a.run_id, 2000).await.unwrap_err();
    assert!(matches!(e, StoreError::Conflict(_)) && e.to_string().contains("already ended (cancelled)"), "{e}");
    assert!(matches!(s.cancel_run("nope", 1).await.unwrap_err(), StoreError::NotFound(_)));

    let r = s.replay_run(&a.run_id, Replay { latest_version: Some(3), now: 3000 }).await.unwrap();
    assert_eq!((r.status, r.attempt, r.recipe_version, r.due_at, r.finished_at), (RunStatus::Queued, 2, 3, Some(3000), None));
    assert!(r.error.is_none());
    let e = s.replay_run(&a.run_id, Replay { latest_version: None, now: 3000 }).await.unwrap_err();
    assert!(matches!(e, StoreError::Conflict(_)) && e.to_string().contains("only failed or cancelled"), "{e}");
    assert!(matches!(s.replay_run("nope", Replay { latest_version: None, now: 1 }).await.unwrap_err(), StoreError::NotFound(_)));

    // A failed run replays from its failed step; completed steps keep their outputs.
    let run = &s.claim_due("a", 3000, 1, 10_000).await.unwrap()[0].run_id;
    let ok = step("one", 1, StepStatus::Succeeded, Some(json!(1)), 3000);
    let bad = step("two", 2, StepStatus::Failed, None, 3001);
    assert!(
        s.update_run(run, "a", vec![ok.clone(), bad], RunUpdate::Finish { status: RunStatus::Failed, error: None }, vec![], 3002)
            .await
            .unwrap()
    );
    s.replay_run(run, Replay { latest_version: None, now: 4000 }).await.unwrap();
    let d = s.run_detail(run).await.unwrap().unwrap();
    assert_eq!(d.run.attempt, 3);
    assert_eq!(d.steps[0], ok);
    assert_eq!(d.steps[1].status, StepStatus::Retrying);
    // Cancelling a running run marks its unfinished steps.
    let run = &s.claim_due("a", 4000, 1, 10_000).await.unwrap()[0].run_id;
    assert!(s.record_steps(run, "a", vec![step("three", 3, StepStatus::Running, None, 4001)], vec![], 4001).await.unwrap());
    s.cancel_run(run, 4002).await.unwrap();
    let d = s.run_detail(run).await.unwrap().unwrap();
    assert_eq!(
        d.steps.iter().map(|s| s.status).collect::<Vec<_>>(),
        vec![StepStatus::Succeeded, StepStatus::Cancelled, StepStatus::Cancelled]
    );
    db.finish().await;
}

async fn secrets_connections_tokens(kind: Kind) {
    let db = Db::new(kind).await;
    let s = db.store();
    s.set_secret("API_KEY", "hunter2", 1000).await.unwrap();
    s.set_secret("API_KEY", "hunter3", 2000).await.unwrap();
    s.set_secret("OTHER", "x", 2000).await.unwrap();
    let got = s.secrets(&["API_KEY".into(), "MISSING".into()]).await.unwrap();
    assert_eq!(got, BTreeMap::from([("API_KEY".to_string(), "hunter3".to_string())]));
    assert_eq!(s.list_secrets().await.unwrap(), vec![("API_KEY".to_string(), 2000), ("OTHER".to_string(), 2000)]);
    assert!(s.delete_secret("OTHER").await.unwrap());
    assert!(!s.delete_secret("OTHER").await.unwrap());

    let creds: enlace_core::Credentials = serde_json::from_value(json!({"kind": "bearer", "token": "tok-123"})).unwrap();
    let limit = RateSpec { calls: 5, per_ms: 1000 };
    let row = s.create_connection("crm", "http", "CRM", &creds, Some(limit), 1000).await.unwrap();
    assert_eq!((row.status.as_str(), row.rate_limit), ("untested", Some(limit)));
    s.create_connection("plain", "http", "Plain", &creds, None, 1000).await.unwrap();
    let (back, back_creds) = s.connection("crm").await.unwrap().unwrap();
    assert_eq!((back.name.as_str(), back.rate_limit), ("CRM", Some(limit)));
    assert_eq!(serde_json::to_value(&back_creds).unwrap(), serde_json::to_value(&creds).unwrap());
    assert_eq!(s.connection("plain").await.unwrap().unwrap().0.rate_limit, None);
    assert!(s.connection("missing").await.unwrap().is_none());
    let e = s.create_connection("crm", "http", "again", &creds, None, 1000).await.unwrap_err();
    assert!(matches!(e, StoreError::Conflict(_)) && e.to_string().contains("exists already"), "{e}");
    let e = s.create_connection("bad", "http", "bad", &creds, Some(RateSpec { calls: 0, per_ms: 1000 }), 1000).await.unwrap_err();
    assert!(matches!(e, StoreError::Invalid(_)) && e.to_string().contains("at least 1 call"), "{e}");
    let list = s.list_connections().await.unwrap();
    assert_eq!(list.iter().map(|c| (c.id.as_str(), c.rate_limit)).collect::<Vec<_>>(), vec![("crm", Some(limit)), ("plain", None)]);
    let renamed = s.rename_connection("crm", "The CRM", 3000).await.unwrap().unwrap();
    assert_eq!((renamed.name.as_str(), renamed.updated_at, renamed.rate_limit), ("The CRM", 3000, Some(limit)));
    let tested = s.set_connection_status("crm", "error", "401 from the app", 4000).await.unwrap().unwrap();
    assert_eq!(
        (tested.status.as_str(), tested.status_message.as_deref(), tested.tested_at),
        ("error", Some("401 from the app"), Some(4000))
    );
    assert!(s.rename_connection("missing", "x", 1).await.unwrap().is_none());
    assert!(s.delete_connection("crm").await.unwrap());
    assert!(!s.delete_connection("crm").await.unwrap());

    let (t, plain) = s.create_token("ci", 1000).await.unwrap();
    assert!(plain.starts_with("enl_"));
    assert_eq!(s.verify_token(&plain).await.unwrap().unwrap().id, t.id);
    assert!(s.verify_token("enl_wrong").await.unwrap().is_none());
    let e = s.create_token("ci", 1000).await.unwrap_err();
    assert!(matches!(e, StoreError::Conflict(_)) && e.to_string().contains("`ci`"), "{e}");
    s.create_token("deploy", 1000).await.unwrap();
    assert_eq!(s.list_tokens().await.unwrap().iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), vec!["ci", "deploy"]);
    assert!(s.revoke_token("ci").await.unwrap());
    assert!(s.verify_token(&plain).await.unwrap().is_none());
    db.finish().await;
}

async fn a_wrong_secret_key_refuses_to_open(kind: Kind) {
    let db = Db::new(kind).await;
    db.store().set_secret("S", "v", 1).await.unwrap();
    db.first.close().await;
    let Err(e) = open(kind, db.url.as_deref(), &db.dir, &key_text(8), None).await else { panic!("another key must be refused") };
    let e = e.to_string();
    assert!(e.contains("not the one the store's secrets were encrypted with") && e.contains("ENLACE_SECRET_KEY"), "{e}");
    let s = open(kind, db.url.as_deref(), &db.dir, &db.key, None).await.unwrap();
    assert_eq!(s.secrets(&["S".into()]).await.unwrap().get("S").map(String::as_str), Some("v"));
    s.close().await;
    db.finish().await;
}

// ---- PostgreSQL only: several nodes ----

/// Waits for a wake-up; `false` after `ms`.
async fn woken(w: &tokio::sync::Notify, ms: u64) -> bool {
    tokio::time::timeout(Duration::from_millis(ms), w.notified()).await.is_ok()
}

/// Takes the permits left by earlier wake-ups.
async fn drain(w: &tokio::sync::Notify) {
    while woken(w, 30).await {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_wakeups_reach_other_nodes() {
    let db = Db::new(Kind::Postgres).await;
    let a = db.store();
    let b = db.another(Some(2)).await;
    let w = a.wakeups().expect("PostgreSQL stores have wake-ups");

    // A run stored for its owner is nobody else's business.
    b.accept_event(event("r", None, 1000, Some("node-b"))).await.unwrap();
    assert!(!woken(&w, 300).await, "a run accepted for its owner wakes no one");

    b.accept_event(event("r", None, 1000, None)).await.unwrap();
    assert!(woken(&w, 5000).await, "a queued run wakes the other nodes");
    drain(&w).await;

    let run = b.claim_due("node-b", 1000, 1, 60_000).await.unwrap().remove(0).run_id;
    assert!(!woken(&w, 200).await, "claiming wakes no one");
    b.update_run(&run, "node-b", vec![], RunUpdate::Park { status: RunStatus::Waiting, due_at: 5000 }, vec![], 1001).await.unwrap();
    assert!(woken(&w, 5000).await, "a parked run wakes the other nodes");
    drain(&w).await;

    let claimed = b.claim_due("node-b", 5000, 1, 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    drain(&w).await;
    assert_eq!(b.reap_expired(40_000).await.unwrap(), 2, "the owned run and the claimed one");
    assert!(woken(&w, 5000).await, "reaped runs wake the other nodes");
    drain(&w).await;

    let c = b.claim_due("node-b", 40_000, 10, 60_000).await.unwrap();
    assert_eq!(c.len(), 2);
    b.update_run(&c[0].run_id, "node-b", vec![], RunUpdate::Finish { status: RunStatus::Failed, error: None }, vec![], 40_001)
        .await
        .unwrap();
    drain(&w).await;
    b.replay_run(&c[0].run_id, Replay { latest_version: None, now: 41_000 }).await.unwrap();
    assert!(woken(&w, 5000).await, "a replayed run wakes the other nodes");
    drain(&w).await;
    assert_eq!(b.release_owned("node-b", 42_000).await.unwrap(), 1);
    assert!(woken(&w, 5000).await, "runs handed back wake the other nodes");
    drain(&w).await;

    let mut cron = recipe("tick", json!({}), None);
    cron.cron = Some(CronSpec { expression: "* * * * *".into(), timezone: "UTC".into(), next_at: 60_000 });
    b.save_recipe(cron, 1).await.unwrap();
    b.fire_schedule("tick", 60_000, 120_000, event("tick", Some("cron:60000"), 60_000, None)).await.unwrap().unwrap();
    assert!(woken(&w, 5000).await, "a cron tick wakes the other nodes");
    b.close().await;
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_rate_limit_is_a_sliding_window_across_nodes() {
    const CALLS: usize = 10;
    const PER_MS: i64 = 1000;
    let db = Db::new(Kind::Postgres).await;
    let stores = db.stores(3).await;
    let run_for = Duration::from_millis(2600);
    let started = Instant::now();
    let mut set = JoinSet::new();
    for (i, s) in stores.iter().enumerate() {
        for _ in 0..3 {
            let s = s.clone();
            set.spawn(async move {
                // (before, after): the database's clock around each call let go, so the
                // true grant time lies between (ms, the end rounded up).
                let mut grants = vec![];
                while started.elapsed() < run_for {
                    let before = s.db_now_ms().await.unwrap();
                    let wait = s.rate_acquire("conn:crm", CALLS as u32, PER_MS).await.unwrap();
                    if wait == 0 {
                        let after = s.db_now_ms().await.unwrap() + 1;
                        grants.push((before, after));
                    } else {
                        assert!(wait <= PER_MS, "node {i}: a wait of {wait} ms is longer than the window");
                        tokio::time::sleep(Duration::from_millis(wait as u64)).await;
                    }
                }
                grants
            });
        }
    }
    let mut grants: Vec<(i64, i64)> = set.join_all().await.into_iter().flatten().collect();
    grants.sort();
    let first = grants[0].0;
    let last = grants.iter().map(|g| g.1).max().unwrap();
    assert!(grants.len() >= 2 * CALLS, "the limit lets calls go in later windows too: {} in {} ms", grants.len(), last - first);
    assert!(
        grants.len() as i64 <= CALLS as i64 * ((last - first) / PER_MS + 1),
        "{} calls in {} ms is more than {CALLS} per {PER_MS} ms",
        grants.len(),
        last - first
    );
    // Any CALLS + 1 calls must span at least PER_MS. For each call as the earliest, the
    // tightest set takes the CALLS others (starting no earlier) that ended soonest.
    for (i, &(start, end)) in grants.iter().enumerate() {
        let mut ends: Vec<i64> = grants[i + 1..].iter().map(|g| g.1).collect();
        if ends.len() < CALLS {
            break;
        }
        ends.sort();
        let span = ends[CALLS - 1].max(end) - start;
        assert!(span >= PER_MS, "{} calls went within {span} ms (< {PER_MS}): {grants:?}", CALLS + 1);
    }

    // A vendor's Retry-After holds the key on every node.
    let s = &stores[1];
    let until = s.db_now_ms().await.unwrap() + 400;
    s.rate_hold("conn:held", until).await.unwrap();
    s.rate_hold("conn:held", until - 300).await.unwrap();
    let wait = stores[2].rate_acquire("conn:held", 100, 1000).await.unwrap();
    assert!((1..=400).contains(&wait), "the rest of the hold, not {wait}");
    tokio::time::sleep(Duration::from_millis(wait as u64 + 5)).await;
    assert_eq!(stores[0].rate_acquire("conn:held", 100, 1000).await.unwrap(), 0);
    let e = s.rate_acquire("conn:x", 0, 1000).await.unwrap_err();
    assert!(matches!(e, StoreError::Invalid(_)), "{e}");
    for s in &stores[1..] {
        s.close().await;
    }
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_claiming_race_takes_each_run_once() {
    const RUNS: usize = 2000;
    let db = Db::new(Kind::Postgres).await;
    let s = db.store();
    let mut set = JoinSet::new();
    for t in 0..8 {
        let s = s.clone();
        set.spawn(async move {
            for i in (t..RUNS).step_by(8) {
                s.accept_event(event("r", None, (i % 50) as i64, None)).await.unwrap();
            }
        });
    }
    set.join_all().await;
    assert_eq!(s.run_counts().await.unwrap().get("queued"), Some(&(RUNS as i64)));

    let mut nodes = vec![];
    for _ in 0..8 {
        nodes.push(db.another(Some(4)).await);
    }
    let mut set = JoinSet::new();
    for (n, node) in nodes.iter().enumerate() {
        for t in 0..4 {
            let node = node.clone();
            let owner = format!("node-{n}-{t}");
            set.spawn(async move {
                let mut mine = vec![];
                let mut limit = 1 + (n + t) % 7;
                loop {
                    let got = node.claim_due(&owner, 100, limit as i64, 60_000).await.unwrap();
                    if got.is_empty() {
                        break;
                    }
                    mine.extend(got.into_iter().map(|c| (c.run_id, owner.clone())));
                    limit = 1 + (limit + 3) % 7;
                }
                mine
            });
        }
    }
    let claims: Vec<(String, String)> = set.join_all().await.into_iter().flatten().collect();
    let mut seen: HashMap<&str, &str> = HashMap::new();
    for (run, owner) in &claims {
        if let Some(before) = seen.insert(run.as_str(), owner.as_str()) {
            panic!("run {run} was claimed twice: by {before} and by {owner}");
        }
    }
    assert_eq!(seen.len(), RUNS, "every run is claimed");
    assert!(s.claim_due("late", 100, 10, 1000).await.unwrap().is_empty());
    // The store agrees on who holds what.
    let mut stored = HashMap::new();
    let mut before = None;
    loop {
        let page = s.list_runs(&RunFilter { limit: 1000, before: before.clone(), ..Default::default() }).await.unwrap();
        let Some(last) = page.last() else { break };
        before = Some(last.id.clone());
        for r in page {
            assert_eq!(r.status, RunStatus::Running);
            stored.insert(r.id, r.owner.unwrap_or_default());
        }
    }
    assert_eq!(stored.len(), RUNS);
    for (run, owner) in &seen {
        assert_eq!(stored.get(*run).map(String::as_str), Some(*owner), "run {run}");
    }
    let per_node: HashSet<&str> = seen.values().copied().collect();
    assert!(per_node.len() > 8, "the claims spread over the nodes' tasks ({} claimers)", per_node.len());
    for n in nodes {
        n.close().await;
    }
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_wakeups_survive_a_dropped_connection() {
    let db = Db::new(Kind::Postgres).await;
    let a = db.store();
    let b = db.another(Some(2)).await;
    let w = a.wakeups().unwrap();
    // The server ends every listening session (as a restart or a network cut would).
    use sqlx::Connection as _;
    let mut admin = sqlx::PgConnection::connect(db.url.as_deref().unwrap()).await.unwrap();
    let ended: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%' AND pid <> pg_backend_pid()",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert_eq!(ended.len(), 2, "each store listens on its own connection");
    assert!(woken(&w, 10_000).await, "a reconnection wakes the pollers (notifications may have been missed)");
    drain(&w).await;
    b.accept_event(event("r", None, 1000, None)).await.unwrap();
    assert!(woken(&w, 10_000).await, "wake-ups arrive again after the reconnection");
    admin.close().await.unwrap();
    b.close().await;
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_nodes_starting_together_migrate_once() {
    let url = testing::postgres_database().await.unwrap_or_else(|e| panic!("{e}"));
    let dir = std::env::temp_dir().join(format!("enlace-store-test-{}", new_id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = key_text(9);
    let mut set = JoinSet::new();
    for _ in 0..4 {
        let (url, dir, key) = (url.clone(), dir.clone(), key.clone());
        set.spawn(async move { open(Kind::Postgres, Some(&url), &dir, &key, Some(2)).await });
    }
    let stores: Vec<Store> =
        set.join_all().await.into_iter().map(|r| r.unwrap_or_else(|e| panic!("a node failed to start: {e}"))).collect();
    stores[0].set_secret("S", "v", 1).await.unwrap();
    assert_eq!(stores[3].secrets(&["S".into()]).await.unwrap().len(), 1);
    for s in &stores {
        s.close().await;
    }
    testing::drop_database(&url).await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_from_before_the_key_check_is_checked_against_its_secrets() {
    use sqlx::Connection as _;
    let db = Db::new(Kind::Sqlite).await;
    db.store().set_secret("S", "v", 1).await.unwrap();
    let path = db.store().sqlite_path().unwrap().to_path_buf();
    db.first.close().await;
    // As an older store: secrets, and no check value.
    let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display())).await.unwrap();
    sqlx::query("DELETE FROM meta").execute(&mut c).await.unwrap();
    c.close().await.unwrap();
    let Err(e) = open(Kind::Sqlite, None, &db.dir, &key_text(8), None).await else { panic!("another key must be refused") };
    assert!(e.to_string().contains("ENLACE_SECRET_KEY"), "{e}");
    let s = open(Kind::Sqlite, None, &db.dir, &db.key, None).await.unwrap();
    s.close().await;
    // The right key wrote the check value: now even a store without secrets is checked.
    let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display())).await.unwrap();
    sqlx::query("DELETE FROM secrets").execute(&mut c).await.unwrap();
    c.close().await.unwrap();
    assert!(open(Kind::Sqlite, None, &db.dir, &key_text(8), None).await.is_err());
    db.finish().await;
}

// ---- contacts ----

fn write(op_key: Option<&str>, subs: Vec<ContactSub>, now: Millis) -> ContactWrite {
    ContactWrite {
        ctx: WriteContext { op_key: op_key.map(String::from), run_id: op_key.map(|k| format!("run-of-{k}")) },
        subs,
        now,
        events: vec![],
    }
}

fn fields(v: Value) -> serde_json::Map<String, Value> {
    v.as_object().unwrap().clone()
}

async fn contacts_upsert_race_makes_one_contact(kind: Kind) {
    let db = Db::new(kind).await;
    // Several nodes on PostgreSQL (each its own pool), the one writer on SQLite.
    let stores = db.stores(3).await;
    let sub = ContactSub { recipe_id: "welcome".into(), recipe_version: 1, trigger: ContactTrigger::ContactCreated, tag: None, kind: None };
    let mut set = JoinSet::new();
    for i in 0..20 {
        let s = stores[i % stores.len()].clone();
        let sub = sub.clone();
        set.spawn(async move {
            let email = if i % 2 == 0 { "Race@Example.com" } else { "race@example.com " };
            let op = ContactOp::Upsert { email: email.into(), fields: fields(json!({format!("f{i}"): i})) };
            s.apply_contact(op, write(None, vec![sub], 1_000 + i as i64)).await.unwrap()
        });
    }
    let mut created = 0;
    let mut ids = HashSet::new();
    let mut started = 0;
    while let Some(r) = set.join_next().await {
        let a = r.unwrap();
        created += a.outcome.created as usize;
        started += a.started.len();
        ids.insert(a.outcome.contact.id.clone());
    }
    assert_eq!(created, 1, "exactly one upsert created the contact");
    assert_eq!(ids.len(), 1, "every upsert answered with the same contact");
    assert_eq!(started, 1, "contact_created started its recipe once");
    let all = db.store().list_contacts(&ContactFilter::default()).await.unwrap();
    assert_eq!(all.len(), 1);
    let c = &all[0];
    assert_eq!(c.email, "race@example.com");
    assert_eq!(c.fields.len(), 20, "no upsert's fields were lost: {:?}", c.fields);
    assert_eq!(c.version, 20, "one version per change");
    let d = db.store().contact_detail(ContactKey::Email("RACE@example.com".into())).await.unwrap().unwrap();
    let kinds: Vec<&str> = d.timeline.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "created").count(), 1);
    assert_eq!(kinds.iter().filter(|k| **k == "fields_updated").count(), 19);
    for s in stores.into_iter().skip(1) {
        s.close().await;
    }
    db.finish().await;
}

async fn contacts_changes_write_the_timeline_and_start_subscribed_runs_once(kind: Kind) {
    let db = Db::new(kind).await;
    let s = db.store();
    let subs = vec![
        ContactSub {
            recipe_id: "on-vip".into(),
            recipe_version: 2,
            trigger: ContactTrigger::TagAdded,
            tag: Some("vip".into()),
            kind: None,
        },
        ContactSub { recipe_id: "on-any-tag".into(), recipe_version: 1, trigger: ContactTrigger::TagAdded, tag: None, kind: None },
        ContactSub { recipe_id: "on-update".into(), recipe_version: 1, trigger: ContactTrigger::ContactUpdated, tag: None, kind: None },
        ContactSub { recipe_id: "on-create".into(), recipe_version: 1, trigger: ContactTrigger::ContactCreated, tag: None, kind: None },
    ];
    let up = |f: Value| ContactOp::Upsert { email: "Ada@Example.com".into(), fields: fields(f) };
    let a = s.apply_contact(up(json!({"name": "Ada"})), write(Some("r1:up"), subs.clone(), 10)).await.unwrap();
    assert!(a.outcome.created && a.outcome.changed);
    assert_eq!(a.outcome.contact.email_original, "Ada@Example.com");
    assert_eq!(a.started.len(), 1, "created, not also updated");
    let id = a.outcome.contact.id.clone();
    // The same upsert again (a retry): nothing changes, nothing starts.
    let again = s.apply_contact(up(json!({"name": "Ada"})), write(Some("r1:up"), subs.clone(), 11)).await.unwrap();
    assert!(!again.outcome.created && !again.outcome.changed && again.started.is_empty());
    assert_eq!(again.outcome.contact.version, 1);
    // A field changes: updated.
    let b = s.apply_contact(up(json!({"plan": "pro", "name": "Ada"})), write(Some("r2:up"), subs.clone(), 12)).await.unwrap();
    assert!(b.outcome.changed && !b.outcome.created);
    assert_eq!(b.started.len(), 1);
    // A tag: both tag recipes; a retry of the same step (same key) starts nothing and changes nothing.
    let tag = ContactOp::AddTag { key: ContactKey::Id(id.clone()), tag: " vip ".into() };
    let t1 = s.apply_contact(tag.clone(), write(Some("r3:tag"), subs.clone(), 13)).await.unwrap();
    assert_eq!(t1.started.len(), 2);
    assert_eq!(t1.outcome.contact.tags, vec!["vip".to_string()]);
    let t2 = s.apply_contact(tag.clone(), write(Some("r3:tag"), subs.clone(), 14)).await.unwrap();
    assert!(!t2.outcome.changed && t2.started.is_empty());
    // Removed, then added again by the same step key: the tag is back, the recipes' dedupe
    // key (the step's) starts nothing twice.
    s.apply_contact(ContactOp::RemoveTag { key: ContactKey::Id(id.clone()), tag: "vip".into() }, write(Some("r4:rm"), subs.clone(), 15))
        .await
        .unwrap();
    let t3 = s.apply_contact(tag, write(Some("r3:tag"), subs.clone(), 16)).await.unwrap();
    assert!(t3.outcome.changed && t3.started.is_empty());
    // Another tag: only the recipe without a tag filter.
    let t4 = s
        .apply_contact(
            ContactOp::AddTag { key: ContactKey::Email("ADA@example.com".into()), tag: "newsletter".into() },
            write(None, subs.clone(), 17),
        )
        .await
        .unwrap();
    assert_eq!(t4.started.len(), 1);
    // The runs are queued with the contact in their event.
    let run = s.run_detail(&t1.started[0].run_id).await.unwrap().unwrap();
    assert_eq!(run.run.status, RunStatus::Queued);
    assert_eq!(run.event.source, "contacts");
    assert_eq!(run.event.payload["trigger"], "tag_added");
    assert_eq!(run.event.payload["tag"], "vip");
    assert_eq!(run.event.payload["contact"]["email"], "ada@example.com");
    assert_eq!(run.event.payload["run_id"], "run-of-r3:tag");
    let claimed = s.claim_due("n1", 100, 100, 30_000).await.unwrap();
    assert_eq!(claimed.len(), 5, "create, update, two for vip, one for newsletter");
    // Every change wrote its timeline row (newest first), with the run that made it.
    let d = s.contact_detail(ContactKey::Id(id.clone())).await.unwrap().unwrap();
    let kinds: Vec<&str> = d.timeline.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["tag_added", "tag_added", "tag_removed", "tag_added", "fields_updated", "created"]);
    assert_eq!(d.timeline[4].data, json!({"changed": {"plan": "pro"}}));
    assert_eq!(d.timeline[5].run_id.as_deref(), Some("run-of-r1:up"));
    assert_eq!(d.contact.tags, vec!["newsletter".to_string(), "vip".to_string()]);
    assert_eq!(d.contact.version, 6);
    // Errors: unknown contact, bad email, bad tag; nothing written.
    let e = s.apply_contact(ContactOp::AddTag { key: ContactKey::Id("nope".into()), tag: "x".into() }, write(None, vec![], 20)).await;
    assert!(matches!(e, Err(StoreError::NotFound(ref m)) if m.contains("nope")), "{e:?}");
    let e = s.apply_contact(ContactOp::Upsert { email: "nope".into(), fields: Default::default() }, write(None, vec![], 20)).await;
    assert!(matches!(e, Err(StoreError::Invalid(_))), "{e:?}");
    let big = json!({"blob": "x".repeat(MAX_FIELDS_BYTES)});
    let e = s.apply_contact(ContactOp::SetFields { key: ContactKey::Id(id.clone()), fields: fields(big) }, write(None, vec![], 20)).await;
    assert!(matches!(e, Err(StoreError::Invalid(ref m)) if m.contains("bytes")), "{e:?}");
    assert_eq!(s.contact(ContactKey::Id(id)).await.unwrap().unwrap().version, 6);
    db.finish().await;
}

async fn contacts_consent_history_and_notes_are_idempotent_per_key(kind: Kind) {
    let db = Db::new(kind).await;
    let s = db.store();
    let id = s
        .apply_contact(ContactOp::Upsert { email: "bo@example.com".into(), fields: Default::default() }, write(None, vec![], 1))
        .await
        .unwrap()
        .outcome
        .contact
        .id;
    let key = ContactKey::Id(id.clone());
    let consent = |purpose: &str, channel: &str, status: ConsentStatus, source: &str| ContactOp::RecordConsent {
        key: key.clone(),
        consent: NewConsent {
            purpose: purpose.into(),
            channel: channel.into(),
            status,
            evidence: Evidence {
                source: source.into(),
                ip: Some("203.0.113.7".into()),
                text: Some("Yes".into()),
                recorded_at: 5,
                run_id: None,
                details: Default::default(),
            },
        },
    };
    let g = s.apply_contact(consent("marketing", "email", ConsentStatus::Granted, "form"), write(Some("r1:c"), vec![], 10)).await.unwrap();
    let c1 = g.outcome.consent.clone().unwrap();
    assert_eq!(c1.evidence.run_id.as_deref(), Some("run-of-r1:c"), "the run that recorded it is part of the evidence");
    // A retry of the same step stores nothing more and answers with the first decision.
    let again =
        s.apply_contact(consent("marketing", "email", ConsentStatus::Granted, "form"), write(Some("r1:c"), vec![], 11)).await.unwrap();
    assert!(!again.outcome.changed);
    assert_eq!(again.outcome.consent.unwrap().id, c1.id);
    s.apply_contact(consent("marketing", "sms", ConsentStatus::Granted, "form"), write(Some("r1:d"), vec![], 12)).await.unwrap();
    // Withdrawn later, in the same millisecond as another decision: the later row wins.
    s.apply_contact(consent("marketing", "sms", ConsentStatus::Withdrawn, "SMS reply STOP"), write(Some("r2:stop"), vec![], 12))
        .await
        .unwrap();
    let e = s.apply_contact(consent("marketing", "fax", ConsentStatus::Granted, "form"), write(None, vec![], 13)).await;
    assert!(matches!(e, Err(StoreError::Invalid(ref m)) if m.contains("email, sms")), "{e:?}");
    let e = s.apply_contact(consent("marketing", "email", ConsentStatus::Granted, " "), write(None, vec![], 13)).await;
    assert!(matches!(e, Err(StoreError::Invalid(_))), "{e:?}");

    let note = |body: &str| ContactOp::AddNote { key: key.clone(), body: body.into(), author: Some("marie".into()) };
    let n1 = s.apply_contact(note("Called back."), write(Some("r3:n"), vec![], 20)).await.unwrap().outcome.note.unwrap();
    let n2 = s.apply_contact(note("Called back."), write(Some("r3:n"), vec![], 21)).await.unwrap();
    assert_eq!(n2.outcome.note.unwrap().id, n1.id, "a retried note is stored once");
    assert!(s.apply_contact(note(""), write(None, vec![], 22)).await.is_err());

    let d = s.contact_detail(key).await.unwrap().unwrap();
    let current: Vec<(String, String, ConsentStatus)> =
        d.consents.iter().map(|c| (c.purpose.clone(), c.channel.clone(), c.status)).collect();
    assert_eq!(
        current,
        [("marketing".into(), "email".into(), ConsentStatus::Granted), ("marketing".into(), "sms".into(), ConsentStatus::Withdrawn)]
    );
    assert_eq!(d.consents[1].evidence.source, "SMS reply STOP");
    assert_eq!(d.notes.len(), 1);
    let kinds: Vec<&str> = d.timeline.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["note_added", "consent_recorded", "consent_recorded", "consent_recorded", "created"]);
    db.finish().await;
}

async fn contacts_list_filters_and_erase_removes_everything(kind: Kind) {
    let db = Db::new(kind).await;
    let s = db.store();
    let mut ids = vec![];
    for i in 0..5 {
        let a = s
            .apply_contact(
                ContactOp::Upsert { email: format!("p{i}@example.com"), fields: fields(json!({"i": i})) },
                write(None, vec![], i),
            )
            .await
            .unwrap();
        let id = a.outcome.contact.id;
        if i % 2 == 0 {
            s.apply_contact(ContactOp::AddTag { key: ContactKey::Id(id.clone()), tag: "even".into() }, write(None, vec![], 10))
                .await
                .unwrap();
        }
        ids.push(id);
    }
    let page = |after: Option<String>, tag: Option<&str>| ContactFilter { email: None, tag: tag.map(String::from), after, limit: 2 };
    let first = s.list_contacts(&page(None, None)).await.unwrap();
    assert_eq!(first.iter().map(|c| c.id.clone()).collect::<Vec<_>>(), ids[..2]);
    let second = s.list_contacts(&page(Some(first[1].id.clone()), None)).await.unwrap();
    assert_eq!(second.iter().map(|c| c.id.clone()).collect::<Vec<_>>(), ids[2..4]);
    let even = s.list_contacts(&ContactFilter { tag: Some("even".into()), ..Default::default() }).await.unwrap();
    assert_eq!(even.len(), 3);
    assert!(even.iter().all(|c| c.tags == ["even"]));
    let one = s.list_contacts(&ContactFilter { email: Some("P3@Example.com".into()), ..Default::default() }).await.unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].fields["i"], 3);

    let victim = ids[0].clone();
    s.apply_contact(
        ContactOp::RecordConsent {
            key: ContactKey::Id(victim.clone()),
            consent: NewConsent {
                purpose: "marketing".into(),
                channel: "email".into(),
                status: ConsentStatus::Granted,
                evidence: Evidence {
                    source: "form".into(),
                    ip: None,
                    text: None,
                    recorded_at: 1,
                    run_id: None,
                    details: Default::default(),
                },
            },
        },
        write(None, vec![], 11),
    )
    .await
    .unwrap();
    s.apply_contact(ContactOp::AddNote { key: ContactKey::Id(victim.clone()), body: "x".into(), author: None }, write(None, vec![], 12))
        .await
        .unwrap();
    assert!(s.erase_contact(&victim).await.unwrap());
    assert!(!s.erase_contact(&victim).await.unwrap(), "already gone");
    assert!(s.contact_detail(ContactKey::Id(victim.clone())).await.unwrap().is_none());
    assert!(s.contact(ContactKey::Email("p0@example.com".into())).await.unwrap().is_none());
    assert_eq!(s.list_contacts(&ContactFilter { tag: Some("even".into()), ..Default::default() }).await.unwrap().len(), 2);
    // The email is free again: a new upsert makes a new contact with nothing of the old one.
    let again = s
        .apply_contact(ContactOp::Upsert { email: "p0@example.com".into(), fields: Default::default() }, write(None, vec![], 20))
        .await
        .unwrap();
    assert!(again.outcome.created);
    let d = s.contact_detail(ContactKey::Id(again.outcome.contact.id)).await.unwrap().unwrap();
    assert!(d.consents.is_empty() && d.notes.is_empty() && d.contact.tags.is_empty());
    assert_eq!(d.timeline.len(), 1);
    db.finish().await;
}

// ---- connector triggers ----

fn item(key: &str) -> PollItem {
    PollItem { key: key.into(), event: json!({"id": key}) }
}

fn commit(recipe: &str, owner: &str, now: Millis) -> PollCommit {
    PollCommit { recipe_id: recipe.into(), recipe_version: 1, owner: owner.into(), now, next_poll_at: now + 60_000, ..Default::default() }
}

fn keys(v: &[&str]) -> Vec<String> {
    v.iter().map(|k| k.to_string()).collect()
}

async fn polling_claims_commits_and_fences(kind: Kind) {
    let db = Db::new(kind).await;
    let s = db.store();
    assert!(s.poll_state("feed").await.unwrap().is_none());

    // One node at a time: the lease goes to the first claimer, others get nothing until it
    // ends or runs out.
    let stores = db.stores(3).await;
    let mut set = JoinSet::new();
    for (i, st) in stores.iter().cycle().take(12).enumerate() {
        let st = st.clone();
        set.spawn(async move { st.poll_claim("feed", &format!("node-{i}"), 1_000, 30_000, false).await.unwrap() });
    }
    let got: Vec<PollState> = set.join_all().await.into_iter().flatten().collect();
    assert_eq!(got.len(), 1, "exactly one node holds the poll: {got:?}");
    let owner = got[0].lease_owner.clone().unwrap();
    assert_eq!(got[0].seeded_at, None, "a new state is unseeded");
    let other = if owner == "node-0" { "node-1" } else { "node-0" };
    assert!(s.poll_claim("feed", other, 2_000, 30_000, true).await.unwrap().is_none(), "even forced, a live lease is kept");

    // Seeding: the cursor and the keys, nothing fired.
    let mut seed = commit("feed", &owner, 1_500);
    seed.seed = true;
    seed.cursor = Some("c1".into());
    seed.seen = keys(&["a", "b", "c"]);
    let done = s.poll_commit(seed.clone()).await.unwrap().expect("the owner commits");
    assert!(done.runs.is_empty());
    let st = s.poll_state("feed").await.unwrap().unwrap();
    assert_eq!((st.cursor.as_deref(), st.seeded_at, st.next_poll_at, st.lease_owner.as_deref()), (Some("c1"), Some(1_500), 61_500, None));
    assert!(s.poll_commit(seed).await.unwrap().is_none(), "without the lease a commit writes nothing");
    let seen = s.poll_seen("feed", &keys(&["a", "b", "c", "d"])).await.unwrap();
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|k| k.fired == 0 && k.settled()));

    // Not due yet: no claim; due: a claim.
    assert!(s.poll_claim("feed", "n", 61_499, 30_000, false).await.unwrap().is_none());
    let st = s.poll_claim("feed", "n", 61_500, 30_000, false).await.unwrap().unwrap();
    assert_eq!(st.cursor.as_deref(), Some("c1"));

    // New items fire with the cursor, oldest first; one already seen is skipped.
    let mut c2 = commit("feed", "n", 61_600);
    c2.cursor = Some("c2".into());
    c2.seen = keys(&["e", "d", "c"]);
    c2.fire = vec![item("d"), item("e"), item("c")];
    let done = s.poll_commit(c2).await.unwrap().unwrap();
    assert_eq!(done.runs.len(), 2);
    assert_eq!(done.skipped, 1, "`c` was seen at seeding");
    let runs = s.list_runs(&RunFilter { recipe_id: Some("feed".into()), ..Default::default() }).await.unwrap();
    assert_eq!(runs.len(), 2);
    let d = s.run_detail(&done.runs[0].run_id).await.unwrap().unwrap();
    assert_eq!(d.event.source, "poll");
    assert_eq!(d.event.dedupe_key.as_deref(), Some("poll:d"));
    assert_eq!(d.event.payload, json!({"id": "d"}));
    let e = s.run_detail(&done.runs[1].run_id).await.unwrap().unwrap();
    assert!(d.run.due_at < e.run.due_at, "the oldest item is due first");
    // The queue hands them out.
    let claimed = s.claim_due("w", 61_600, 10, 30_000).await.unwrap();
    assert_eq!(
        claimed.iter().map(|c| c.run_id.clone()).collect::<Vec<_>>(),
        done.runs.iter().map(|a| a.run_id.clone()).collect::<Vec<_>>()
    );

    // The cursor history, for rewinds.
    let marks = s.poll_cursors("feed", 10).await.unwrap();
    assert_eq!(
        marks.iter().map(|m| (m.cursor.clone().unwrap(), m.reason.as_str())).collect::<Vec<_>>(),
        vec![("c2".into(), "poll"), ("c1".into(), "seed")]
    );
    assert_eq!(s.poll_cursor_at("feed", 61_599).await.unwrap().unwrap().cursor.as_deref(), Some("c1"));
    assert_eq!(s.poll_cursor_at("feed", 61_600).await.unwrap().unwrap().cursor.as_deref(), Some("c2"));
    assert!(s.poll_cursor_at("feed", 1_499).await.unwrap().is_none());

    // An expired lease passes to another node; the first node's late commit is refused.
    s.poll_claim("feed", "slow", 121_600, 1_000, false).await.unwrap().unwrap();
    s.poll_claim("feed", "fast", 122_601, 30_000, false).await.unwrap().expect("the lease ran out");
    let mut late = commit("feed", "slow", 122_700);
    late.fire = vec![item("f")];
    assert!(s.poll_commit(late).await.unwrap().is_none(), "a node that lost the lease writes nothing");
    assert!(s.poll_seen("feed", &keys(&["f"])).await.unwrap().is_empty());

    // Forgetting (a disable) keeps the seen keys; the next claim starts unseeded.
    assert!(s.poll_forget("feed").await.unwrap());
    let st = s.poll_claim("feed", "n", 200_000, 30_000, false).await.unwrap().unwrap();
    assert_eq!(st.seeded_at, None);
    assert_eq!(s.poll_seen("feed", &keys(&["a", "d"])).await.unwrap().len(), 2);
    db.finish().await;
}

async fn polling_held_batches_fire_once_and_rewinds_rearm(kind: Kind) {
    let db = Db::new(kind).await;
    let s = db.store();
    s.poll_claim("flood", "n", 0, 30_000, false).await.unwrap().unwrap();
    let mut c = commit("flood", "n", 10);
    let many: Vec<PollItem> = (0..150).map(|i| item(&format!("k{i:03}"))).collect();
    c.seen = many.iter().map(|i| i.key.clone()).collect();
    c.hold = many.clone();
    let done = s.poll_commit(c).await.unwrap().unwrap();
    assert!(done.runs.is_empty());
    let batch_id = done.held.expect("a held batch");
    let listed = s.held_batches("flood").await.unwrap();
    assert_eq!((listed.len(), listed[0].count, listed[0].status.as_str(), listed[0].items.len()), (1, 150, "held", 0));
    assert_eq!(s.held_batch("flood", &batch_id).await.unwrap().unwrap().items, many);
    let seen = s.poll_seen("flood", &keys(&["k000", "k149"])).await.unwrap();
    assert!(seen.iter().all(|k| k.fired == 0 && k.settled()), "held items are seen, not fired");

    // Approving fires each item once, even when asked on several nodes at once.
    let stores = db.stores(3).await;
    let mut set = JoinSet::new();
    for st in stores.iter().cycle().take(6) {
        let (st, id) = (st.clone(), batch_id.clone());
        set.spawn(async move { st.decide_held("flood", &id, true, 1, 20).await });
    }
    let results = set.join_all().await;
    let ok: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(ok.len(), 1, "one approval wins");
    assert_eq!(ok[0].1.len(), 150);
    assert!(
        results.iter().filter_map(|r| r.as_ref().err()).all(|e| matches!(e, StoreError::Conflict(m) if m.contains("approved already")))
    );
    let runs = s.list_runs(&RunFilter { recipe_id: Some("flood".into()), limit: 1000, ..Default::default() }).await.unwrap();
    assert_eq!(runs.len(), 150);
    assert!(matches!(s.decide_held("flood", &batch_id, false, 1, 30).await, Err(StoreError::Conflict(_))));
    assert!(matches!(s.decide_held("flood", "nope", true, 1, 30).await, Err(StoreError::NotFound(_))));

    // A rewind re-arms fired keys: the next commit fires them again, under a new dedupe key.
    assert!(matches!(s.poll_rewind("none", None, vec![], 40).await, Err(StoreError::NotFound(_))));
    s.poll_rewind("flood", Some("old".into()), keys(&["k000"]), 40).await.unwrap();
    let seen = s.poll_seen("flood", &keys(&["k000"])).await.unwrap();
    assert!(!seen[0].settled());
    s.poll_claim("flood", "n", 40, 30_000, false).await.unwrap().expect("a rewind makes the poll due");
    assert!(matches!(s.poll_rewind("flood", None, vec![], 41).await, Err(StoreError::Conflict(_))), "not while a node polls");
    let mut c = commit("flood", "n", 50);
    c.fire = vec![item("k000"), item("k001")];
    let done = s.poll_commit(c).await.unwrap().unwrap();
    assert_eq!((done.runs.len(), done.skipped), (1, 1), "only the re-armed key fires again");
    let d = s.run_detail(&done.runs[0].run_id).await.unwrap().unwrap();
    assert_eq!(d.event.dedupe_key.as_deref(), Some("poll:k000:2"));
    let marks = s.poll_cursors("flood", 10).await.unwrap();
    assert_eq!((marks[0].cursor.as_deref(), marks[0].reason.as_str()), (Some("old"), "rewind"));

    // Discarding keeps the items seen and fires nothing.
    s.poll_claim("flood", "n", 70_000, 30_000, false).await.unwrap().unwrap();
    let mut c = commit("flood", "n", 70_000);
    c.hold = vec![item("z1"), item("z2")];
    let id = s.poll_commit(c).await.unwrap().unwrap().held.unwrap();
    let (b, runs) = s.decide_held("flood", &id, false, 1, 70_001).await.unwrap();
    assert_eq!((b.status.as_str(), runs.len()), ("discarded", 0));
    assert_eq!(s.poll_seen("flood", &keys(&["z1", "z2"])).await.unwrap().len(), 2);
    db.finish().await;
}

async fn subscriptions_keep_their_secret_sealed(kind: Kind) {
    let db = Db::new(kind).await;
    let s = db.store();
    let row = SubscriptionRow {
        recipe_id: "hooked".into(),
        app: "crm".into(),
        event: "contact_created".into(),
        subscription_id: "sub-1".into(),
        target_url: "https://enlace.example/hooks/subscriptions/hooked".into(),
        config: json!({"list": "a"}),
        connection: Some("crm-main".into()),
        secret: Some(enlace_core::Secret::new("whsec_topsecret")),
        expires_at: Some(5_000),
        created_at: 1,
        updated_at: 1,
    };
    s.save_subscription(row.clone()).await.unwrap();
    assert_eq!(s.subscription("hooked").await.unwrap().unwrap(), row);
    assert!(!format!("{row:?}").contains("topsecret"), "Debug hides the secret");
    let renewed = SubscriptionRow { subscription_id: "sub-2".into(), expires_at: Some(9_000), updated_at: 2, ..row };
    s.save_subscription(renewed.clone()).await.unwrap();
    assert_eq!(s.subscriptions().await.unwrap(), vec![renewed]);
    if kind == Kind::Sqlite {
        let bytes = std::fs::read(s.sqlite_path().unwrap()).unwrap_or_default();
        let wal = std::fs::read(s.sqlite_path().unwrap().with_extension("db-wal")).unwrap_or_default();
        let needle = b"whsec_topsecret";
        assert!(!bytes.windows(needle.len()).any(|w| w == needle) && !wal.windows(needle.len()).any(|w| w == needle), "sealed at rest");
    }
    assert!(s.delete_subscription("hooked").await.unwrap());
    assert!(s.subscription("hooked").await.unwrap().is_none());
    db.finish().await;
}

// ---- contacts: a phone number's own decisions ----

fn sms_reply(status: ConsentStatus, sid: &str, body: &str) -> NewConsent {
    let mut details = serde_json::Map::new();
    details.insert("message_sid".into(), json!(sid));
    details.insert("body".into(), json!(body));
    NewConsent {
        purpose: "marketing".into(),
        channel: "sms".into(),
        status,
        evidence: Evidence {
            source: "twilio_inbound_sms".into(),
            ip: None,
            text: Some(body.into()),
            recorded_at: 1,
            run_id: None,
            details,
        },
    }
}

async fn contacts_phone_decisions_reach_contacts_and_the_suppression_list(kind: Kind) {
    let db = Db::new(kind).await;
    let s = db.store();
    assert_eq!(normalize_phone(" +1 (415) 555-2671 ").unwrap(), "+14155552671");
    assert_eq!(normalize_phone("+44 (0)20 7946 0958").unwrap(), "+442079460958");
    assert!(normalize_phone("415 555 2671").unwrap_err().contains("international form"));
    assert!(normalize_phone("+1 call me").is_err());

    // Two contacts share a number written two ways; a third has another.
    let mut ids = vec![];
    for (i, phone) in ["+1 415 555 2671", "+14155552671", "+33 6 12 34 56 78"].iter().enumerate() {
        let a = s
            .apply_contact(
                ContactOp::Upsert { email: format!("ph{i}@example.com"), fields: fields(json!({"phone": phone})) },
                write(None, vec![], 1),
            )
            .await
            .unwrap();
        ids.push(a.outcome.contact.id);
    }
    assert_eq!(s.phone_consent("+14155552671", "marketing", "sms").await.unwrap(), None, "nothing decided yet");

    // STOP from the shared number: both its contacts, and the suppression list.
    let (out, started) = s
        .apply_phone_consent("+1 415-555-2671", sms_reply(ConsentStatus::Withdrawn, "SM1", "STOP"), write(Some("twilio:SM1"), vec![], 10))
        .await
        .unwrap();
    assert_eq!(out.phone, "+14155552671");
    assert_eq!(out.contacts, ids[..2].to_vec());
    assert!(started.is_empty());
    for id in &ids[..2] {
        let d = s.contact_detail(ContactKey::Id(id.clone())).await.unwrap().unwrap();
        assert_eq!(d.consents.len(), 1);
        let c = &d.consents[0];
        assert_eq!((c.purpose.as_str(), c.channel.as_str(), c.status), ("marketing", "sms", ConsentStatus::Withdrawn));
        assert_eq!(c.evidence.source, "twilio_inbound_sms");
        assert_eq!(c.evidence.details["message_sid"], "SM1");
        assert_eq!(d.timeline[0].kind, "consent_recorded");
    }
    assert!(s.contact_detail(ContactKey::Id(ids[2].clone())).await.unwrap().unwrap().consents.is_empty(), "another number");
    let d = s.phone_consent("+14155552671", "marketing", "sms").await.unwrap().unwrap();
    assert_eq!(d.status, ConsentStatus::Withdrawn);
    assert_eq!(d.evidence.details["body"], "STOP");
    assert_eq!(s.phone_consent("+14155552671", "marketing", "email").await.unwrap(), None, "another channel");

    // The same message again (Twilio's retry) records nothing more.
    s.apply_phone_consent("+14155552671", sms_reply(ConsentStatus::Withdrawn, "SM1", "STOP"), write(Some("twilio:SM1"), vec![], 11))
        .await
        .unwrap();
    assert_eq!(s.contact_detail(ContactKey::Id(ids[0].clone())).await.unwrap().unwrap().timeline.len(), 2, "created, one consent");

    // START grants it again; a late retry of the old STOP does not undo it.
    s.apply_phone_consent("+14155552671", sms_reply(ConsentStatus::Granted, "SM2", "START"), write(Some("twilio:SM2"), vec![], 20))
        .await
        .unwrap();
    s.apply_phone_consent("+14155552671", sms_reply(ConsentStatus::Withdrawn, "SM1", "STOP"), write(Some("twilio:SM1"), vec![], 30))
        .await
        .unwrap();
    assert_eq!(s.phone_consent("+14155552671", "marketing", "sms").await.unwrap().unwrap().status, ConsentStatus::Granted);

    // STOP from a number no contact has: none is created, the number is suppressed.
    let (out, _) = s
        .apply_phone_consent("+12025550143", sms_reply(ConsentStatus::Withdrawn, "SM3", "stop"), write(Some("twilio:SM3"), vec![], 40))
        .await
        .unwrap();
    assert!(out.contacts.is_empty());
    assert_eq!(s.list_contacts(&ContactFilter::default()).await.unwrap().len(), 3, "no contact created");
    let d = s.phone_consent("+1 202 555 0143", "marketing", "sms").await.unwrap().unwrap();
    assert_eq!((d.status, d.contact_id.clone()), (ConsentStatus::Withdrawn, None));

    // A contact created later with that number starts with SMS consent withdrawn.
    let later = s
        .apply_contact(
            ContactOp::Upsert { email: "later@example.com".into(), fields: fields(json!({"phone": "+1 202-555-0143"})) },
            write(Some("up-later"), vec![], 50),
        )
        .await
        .unwrap();
    let d = s.contact_detail(ContactKey::Id(later.outcome.contact.id.clone())).await.unwrap().unwrap();
    assert_eq!(d.consents.len(), 1);
    assert_eq!((d.consents[0].status, d.consents[0].evidence.details["message_sid"].clone()), (ConsentStatus::Withdrawn, json!("SM3")));
    assert_eq!(d.contact.version, 1);
    let kinds: Vec<&str> = d.timeline.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["consent_recorded", "created"]);
    // So does a contact whose phone is changed to it, even with an older grant of its own.
    s.apply_contact(
        ContactOp::RecordConsent { key: ContactKey::Id(ids[2].clone()), consent: sms_reply(ConsentStatus::Granted, "SM0", "YES") },
        write(Some("grant-2"), vec![], 55),
    )
    .await
    .unwrap();
    s.apply_contact(
        ContactOp::SetFields { key: ContactKey::Id(ids[2].clone()), fields: fields(json!({"phone": "+12025550143"})) },
        write(None, vec![], 60),
    )
    .await
    .unwrap();
    let d = s.contact_detail(ContactKey::Id(ids[2].clone())).await.unwrap().unwrap();
    assert_eq!(d.consents[0].status, ConsentStatus::Withdrawn);
    assert_eq!(s.phone_consent("+12025550143", "marketing", "sms").await.unwrap().unwrap().status, ConsentStatus::Withdrawn);
    // A bad number is refused.
    let e = s.apply_phone_consent("ACME", sms_reply(ConsentStatus::Withdrawn, "SM4", "STOP"), write(None, vec![], 70)).await;
    assert!(matches!(e, Err(StoreError::Invalid(_))), "{e:?}");
    db.finish().await;
}

// ---- GDPR ----

fn evidence(source: &str, at: Millis) -> Evidence {
    Evidence {
        source: source.into(),
        ip: Some("203.0.113.9".into()),
        text: Some("Yes, email me".into()),
        recorded_at: at,
        run_id: None,
        details: Default::default(),
    }
}

fn consent_op(id: &str, channel: &str, status: ConsentStatus, at: Millis) -> ContactOp {
    ContactOp::RecordConsent {
        key: ContactKey::Id(id.into()),
        consent: NewConsent { purpose: "marketing".into(), channel: channel.into(), status, evidence: evidence("signup form", at) },
    }
}

fn membership(email: Option<&str>, phone: Option<&str>, audience: &str, now: Millis) -> gdpr::NewMembership {
    gdpr::NewMembership {
        app: "ads".into(),
        connection_id: Some("ads-main".into()),
        remove_action: "remove_member".into(),
        audience: json!(audience),
        email: email.map(String::from),
        phone: phone.map(String::from),
        email_sha256: None,
        phone_sha256: None,
        run_id: None,
        now,
    }
}

async fn gdpr_export_has_everything_and_erase_leaves_no_trace(kind: Kind) {
    let db = Db::new(kind).await;
    let s = db.store();
    let ada_fields = json!({"first_name": "Ada", "last_name": "Lovelace", "phone": "+1 (415) 555-2671", "plan": "pro"});
    let ada = s
        .apply_contact(
            ContactOp::Upsert { email: "Ada.Lovelace@Example.com".into(), fields: fields(ada_fields) },
            write(Some("k1"), vec![], 10),
        )
        .await
        .unwrap()
        .outcome
        .contact;
    let bo = s
        .apply_contact(
            ContactOp::Upsert { email: "bo@example.com".into(), fields: fields(json!({"first_name": "Bo", "phone": "+44 20 7946 0958"})) },
            write(None, vec![], 11),
        )
        .await
        .unwrap()
        .outcome
        .contact;
    s.apply_contact(ContactOp::AddTag { key: ContactKey::Id(ada.id.clone()), tag: "vip".into() }, write(None, vec![], 12)).await.unwrap();
    s.apply_contact(consent_op(&ada.id, "email", ConsentStatus::Granted, 13), write(None, vec![], 13)).await.unwrap();
    s.apply_contact(consent_op(&ada.id, "email", ConsentStatus::Withdrawn, 14), write(None, vec![], 14)).await.unwrap();
    s.apply_contact(
        ContactOp::AddNote { key: ContactKey::Id(ada.id.clone()), body: "called Ada about the invoice".into(), author: Some("sam".into()) },
        write(None, vec![], 15),
    )
    .await
    .unwrap();
    // A STOP from Ada's phone, and Bo's own history.
    s.apply_phone_consent(
        "+14155552671",
        NewConsent {
            purpose: "marketing".into(),
            channel: "sms".into(),
            status: ConsentStatus::Withdrawn,
            evidence: evidence("SMS reply STOP", 16),
        },
        write(Some("twilio:SM1"), vec![], 16),
    )
    .await
    .unwrap();
    s.apply_contact(ContactOp::AddTag { key: ContactKey::Id(bo.id.clone()), tag: "vip".into() }, write(None, vec![], 17)).await.unwrap();
    s.record_audience_member(membership(Some("ada.lovelace@example.com"), None, "retarget-1", 18)).await.unwrap();
    s.record_audience_member(membership(Some("ada.lovelace@example.com"), None, "retarget-1", 19)).await.unwrap();
    s.record_audience_member(membership(Some("bo@example.com"), None, "retarget-1", 19)).await.unwrap();

    // Runs: one pending about Ada (found by its payload), one finished about her (found by
    // its steps), one about Bo, and one a contact change of Ada made (found by the timeline).
    let mut e = event("signup", Some("ADA.LOVELACE@example.com"), 20, None);
    e.payload = json!({"body": {"email": "ADA.LOVELACE@example.com", "first_name": "Ada", "plan": "pro"}}).to_string();
    let pending = s.accept_event(e).await.unwrap().run_id;
    let done = s.accept_event(event("sms", None, 21, Some("n1"))).await.unwrap().run_id;
    let mut st = step("send", 1, StepStatus::Succeeded, Some(json!({"sid": "SM9", "to": "+14155552671"})), 22);
    st.input = Some(json!({"to": "+1 (415) 555-2671", "body": "Hi Ada, your order shipped", "count": 3}));
    assert!(
        s.update_run(&done, "n1", vec![st], RunUpdate::Finish { status: RunStatus::Succeeded, error: None }, vec![], 23).await.unwrap()
    );
    let mut e = event("signup", Some("bo@example.com"), 24, None);
    e.payload = json!({"body": {"email": "bo@example.com", "first_name": "Bo"}}).to_string();
    let bos = s.accept_event(e).await.unwrap().run_id;
    let timeline_run = "run-of-k1".to_string();
    // A contact-scoped run (a journey) whose history names nobody: found by its contact.
    let journey = s.accept_event(event("journey", None, 25, Some("n1"))).await.unwrap().run_id;
    let entry = JourneyEntry {
        run_id: journey.clone(),
        owner: "n1".into(),
        recipe_id: "journey".into(),
        contact_id: ada.id.clone(),
        rule: EntryRule::Always,
        wake_on: vec![],
        now: 25,
    };
    s.enter_journey(entry).await.unwrap();

    // The export.
    let x = s.export_contact(ContactKey::Email("ada.lovelace@EXAMPLE.com".into()), None, 0, 30).await.unwrap().unwrap();
    let v = serde_json::to_value(&x).unwrap();
    assert_eq!(v["format"], "enlace.contact-export.v1");
    assert_eq!(v["contact"]["email_original"], "Ada.Lovelace@Example.com");
    assert_eq!(v["contact"]["fields"]["last_name"], "Lovelace");
    assert_eq!(v["tags"][0]["tag"], "vip");
    let consents: Vec<(&str, &str, &str)> = v["consents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["channel"].as_str().unwrap(), c["status"].as_str().unwrap(), c["evidence"]["source"].as_str().unwrap()))
        .collect();
    assert_eq!(
        consents,
        [("email", "granted", "signup form"), ("email", "withdrawn", "signup form"), ("sms", "withdrawn", "SMS reply STOP")]
    );
    assert_eq!(v["consents"][0]["evidence"]["text"], "Yes, email me", "the wording shown is kept");
    assert_eq!(v["notes"][0]["body"], "called Ada about the invoice");
    let kinds: Vec<&str> = v["timeline"].as_array().unwrap().iter().map(|t| t["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["created", "tag_added", "consent_recorded", "consent_recorded", "note_added", "consent_recorded"],
        "oldest first, all of it"
    );
    assert_eq!(v["phone_suppressions"].as_array().unwrap().len(), 1);
    assert_eq!(v["phone_suppressions"][0]["phone"], "+14155552671");
    assert_eq!(v["audience_memberships"].as_array().unwrap().len(), 1, "a repeated add is one membership");
    let run_ids: Vec<&str> = v["runs"].as_array().unwrap().iter().map(|r| r["run"]["id"].as_str().unwrap()).collect();
    assert_eq!(run_ids, [pending.as_str(), done.as_str(), journey.as_str()], "the runs about Ada, not Bo's");
    assert_eq!(v["runs"][1]["steps"][0]["input"]["body"], "Hi Ada, your order shipped");
    assert!(v.get("runs_next").is_none());
    // Paged.
    let p1 = s.export_contact(ContactKey::Id(ada.id.clone()), None, 1, 30).await.unwrap().unwrap();
    assert_eq!(p1.runs.len(), 1);
    assert_eq!(p1.runs_next.as_deref(), Some(pending.as_str()));
    let p2 = s.export_contact(ContactKey::Id(ada.id.clone()), p1.runs_next.as_deref(), 1, 30).await.unwrap().unwrap();
    assert_eq!(p2.runs[0].run.id, done);
    assert_eq!(p2.runs_next.as_deref(), Some(done.as_str()));
    assert!(!run_ids.contains(&timeline_run.as_str()));

    let bo_before = s.contact_detail(ContactKey::Id(bo.id.clone())).await.unwrap().unwrap();
    let bo_run_before = s.run_detail(&bos).await.unwrap().unwrap();

    // The scan sees what is there before the erasure.
    let before = testing::tables_containing(&s, "ADA.LOVELACE@example.com").await.unwrap();
    for place in ["contacts.email", "events.payload", "events.dedupe_key"] {
        assert!(before.contains(&place.to_string()), "{place} not in {before:?}");
    }
    assert!(testing::tables_containing(&s, "(415) 555-2671").await.unwrap().contains(&"steps.input".to_string()));

    // The erasure.
    let er = s.erase(ContactKey::Id(ada.id.clone()), "test", 40).await.unwrap();
    assert_eq!((er.runs_redacted, er.runs_cancelled, er.removals_queued), (2, 2, 1));
    assert_eq!(er.contact_id, ada.id);
    assert_eq!(er.email_hash.len(), 64);
    assert!(er.phone_hash.is_some());
    for needle in ["ada.lovelace@example.com", "+14155552671", "4155552671", "(415) 555-2671", "Lovelace"] {
        let left = testing::tables_containing(&s, needle).await.unwrap();
        assert!(left.is_empty(), "`{needle}` is still stored in {left:?}");
    }
    assert!(s.contact_detail(ContactKey::Id(ada.id.clone())).await.unwrap().is_none());
    assert!(matches!(s.erase(ContactKey::Id(ada.id.clone()), "test", 41).await, Err(StoreError::NotFound(_))));
    assert_eq!(s.erasure_of(&ada.id).await.unwrap().unwrap(), er);
    assert_eq!(s.erasures_of_email(" ADA.lovelace@example.com").await.unwrap(), vec![er.clone()]);
    assert!(s.erasures_of_email("bo@example.com").await.unwrap().is_empty());

    // The history stays readable: same runs, same statuses, personal data replaced.
    let p = s.run_detail(&pending).await.unwrap().unwrap();
    assert_eq!(p.run.status, RunStatus::Cancelled, "the pending run about Ada is cancelled");
    assert!(p.run.error.as_ref().unwrap()["message"].as_str().unwrap().contains("erased"));
    assert_eq!(p.event.payload, json!({"body": {"email": "[erased]", "first_name": "[erased]", "plan": "pro"}}));
    assert_eq!(p.event.dedupe_key.as_deref(), Some(format!("[erased]:{}", p.event.id).as_str()));
    let d = s.run_detail(&done).await.unwrap().unwrap();
    assert_eq!(d.run.status, RunStatus::Succeeded);
    assert_eq!(d.steps[0].input, Some(json!({"to": "[erased]", "body": "[erased]", "count": 3})));
    assert_eq!(d.steps[0].output, Some(json!({"sid": "SM9", "to": "[erased]"})));
    assert_eq!(s.list_runs(&RunFilter::default()).await.unwrap().len(), 4, "no run is deleted");
    assert_eq!(s.get_run(&journey).await.unwrap().unwrap().status, RunStatus::Cancelled, "the journey run is cancelled");

    // Bo is untouched.
    assert_eq!(s.contact_detail(ContactKey::Id(bo.id.clone())).await.unwrap().unwrap(), bo_before);
    let bo_run = s.run_detail(&bos).await.unwrap().unwrap();
    assert_eq!((bo_run.run.status, &bo_run.event.payload), (bo_run_before.run.status, &bo_run_before.event.payload));
    assert_eq!(s.phone_consent("+442079460958", "marketing", "sms").await.unwrap(), None);
    // Ada's number said STOP: it stays suppressed without being stored in clear.
    assert_eq!(er.phone_withdrawn, ["marketing:sms"]);
    let stop = s.phone_consent("+1 415 555 2671", "marketing", "sms").await.unwrap().unwrap();
    assert_eq!((stop.status, stop.contact_id), (ConsentStatus::Withdrawn, None));
    assert!(stop.evidence.source.contains("erased"), "{:?}", stop.evidence);
    assert_eq!(s.phone_consent("+14155552671", "marketing", "whatsapp").await.unwrap(), None);

    // The removal queued for Ada's audience, hashed.
    let q = s.audience_removals(None, 10).await.unwrap();
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].email_sha256.as_deref(), Some(enlace_core::audience::sha256_hex("ada.lovelace@example.com").as_str()));
    assert_eq!((q[0].reason.as_str(), q[0].status.as_str(), &q[0].audience), ("erased", "pending", &json!("retarget-1")));
    db.finish().await;
}

async fn gdpr_audience_removals_queue_claim_retry_and_lease(kind: Kind) {
    let db = Db::new(kind).await;
    let s = db.store();
    let cy = s
        .apply_contact(
            ContactOp::Upsert { email: "cy@example.com".into(), fields: fields(json!({"phone": "+14155550100"})) },
            write(None, vec![], 1),
        )
        .await
        .unwrap()
        .outcome
        .contact;
    s.record_audience_member(membership(None, Some("+14155550100"), "aud-phone", 2)).await.unwrap();
    s.record_audience_member(membership(Some("cy@example.com"), None, "aud-email", 2)).await.unwrap();
    s.record_audience_member(membership(Some("someone@example.com"), None, "aud-email", 2)).await.unwrap();
    assert!(s.audience_removals(None, 10).await.unwrap().is_empty());
    // Granting ads consent queues nothing; withdrawing it queues a removal per membership.
    s.apply_contact(consent_op(&cy.id, "ads", ConsentStatus::Granted, 3), write(None, vec![], 3)).await.unwrap();
    assert!(s.audience_removals(None, 10).await.unwrap().is_empty());
    s.apply_contact(consent_op(&cy.id, "ads", ConsentStatus::Withdrawn, 4), write(None, vec![], 4)).await.unwrap();
    let q = s.audience_removals(Some("pending"), 10).await.unwrap();
    assert_eq!(q.len(), 2);
    assert!(q.iter().all(|r| r.reason == "consent_withdrawn"));
    let auds: HashSet<String> = q.iter().map(|r| r.audience.as_str().unwrap().to_string()).collect();
    assert_eq!(auds, HashSet::from(["aud-phone".to_string(), "aud-email".to_string()]));
    assert!(s.audience_removals(Some("nope"), 10).await.is_err());

    // Claimed once; a node that dies leaves it to another once its lease runs out.
    let a = s.claim_audience_removals("n1", 10, 10, 1_000).await.unwrap();
    assert_eq!(a.len(), 2);
    assert!(s.claim_audience_removals("n2", 500, 10, 1_000).await.unwrap().is_empty(), "leased to n1");
    let b = s.claim_audience_removals("n2", 2_000, 10, 1_000).await.unwrap();
    assert_eq!(b.len(), 2, "n1's lease ran out");
    assert!(!s.finish_audience_removal(&a[0].id, "n1", gdpr::RemovalOutcome::Done, 2_001).await.unwrap(), "n1 no longer holds it");
    assert!(s.finish_audience_removal(&b[0].id, "n2", gdpr::RemovalOutcome::Done, 2_001).await.unwrap());
    let err = json!({"class": "transient", "message": "503"});
    assert!(
        s.finish_audience_removal(&b[1].id, "n2", gdpr::RemovalOutcome::Retry { due_at: 5_000, error: err.clone() }, 2_002).await.unwrap()
    );
    assert!(s.claim_audience_removals("n2", 4_999, 10, 1_000).await.unwrap().is_empty(), "not due yet");
    let c = s.claim_audience_removals("n2", 5_000, 10, 1_000).await.unwrap();
    assert_eq!((c.len(), c[0].attempts, c[0].last_error.clone()), (1, 3, Some(err)));
    assert!(
        s.finish_audience_removal(&c[0].id, "n2", gdpr::RemovalOutcome::Failed { error: json!({"class": "permanent"}) }, 5_001)
            .await
            .unwrap()
    );
    assert_eq!(s.audience_removals(Some("done"), 10).await.unwrap().len(), 1);
    assert_eq!(s.audience_removals(Some("failed"), 10).await.unwrap().len(), 1);
    assert!(s.claim_audience_removals("n3", 1_000_000, 10, 1_000).await.unwrap().is_empty(), "done and failed stay so");
    // The memberships are gone with the withdrawal: withdrawing again queues nothing more.
    s.apply_contact(consent_op(&cy.id, "ads", ConsentStatus::Withdrawn, 6), write(None, vec![], 6)).await.unwrap();
    assert_eq!(s.audience_removals(None, 10).await.unwrap().len(), 2);
    db.finish().await;
}

/// Twenty runs decide at once about one contact whose cap is 3: exactly three pass (the
/// reservation counts in its own transaction); a message's rows are found again by its key
/// (a retry, a replay), settled once; the policy's settings are kept and checked.
async fn send_ledger_reservations_pass_a_cap_once_and_keep_their_key(kind: Kind) {
    use enlace_core::contacts::{ContactOp, WriteContext};
    use enlace_core::policy::{PolicySettings, RecipientKind};
    let db = Db::new(kind).await;
    let store = db.store();
    let w = ContactWrite { ctx: WriteContext::default(), subs: vec![], events: vec![], now: 1_000 };
    let op = ContactOp::Upsert { email: "ana@example.com".into(), fields: Default::default() };
    let contact = store.apply_contact(op, w).await.unwrap().outcome.contact;
    let request = |i: usize| SendRequest {
        message_key: format!("run-{i}:mail"),
        recipe_id: format!("recipe-{}", i % 2),
        run_id: format!("run-{i}"),
        step_key: "mail".into(),
        channel: "email".into(),
        purpose: "marketing".into(),
        transactional: false,
        kind: RecipientKind::Email,
        recipients: vec!["Ana@Example.com".into()],
        window_ms: 30 * 86_400_000,
        limits: enlace_core::policy::SendLimits { sends_per_hour: None, sends_per_day: Some(100) },
        now: 10_000 + i as i64,
    };
    let decide = || -> Decide {
        Box::new(|f: &SendFacts| {
            let status = if f.recipients[0].sent.len() < 3 { send_status::RESERVED } else { send_status::DEFERRED };
            Some(LedgerWrite {
                status,
                reason: None,
                until: None,
                timeline: (status == send_status::DEFERRED).then_some("message_deferred"),
            })
        })
    };
    let mut set = JoinSet::new();
    for i in 0..20 {
        let (s, r, d) = (store.clone(), request(i), decide());
        set.spawn(async move { s.reserve_send(r, d).await.unwrap().1.unwrap().status });
    }
    let mut passed = 0;
    while let Some(status) = set.join_next().await {
        passed += usize::from(status.unwrap() == send_status::RESERVED);
    }
    assert_eq!(passed, 3, "exactly three pass a cap of three");

    // The same message again (a retry): its row is there, under its contact.
    let (facts, _) = store.reserve_send(request(0), Box::new(|_| None)).await.unwrap();
    assert_eq!(facts.previous.len(), 1);
    assert_eq!(facts.previous[0].recipient, "ana@example.com");
    assert_eq!(facts.previous[0].contact_id.as_deref(), Some(contact.id.as_str()));
    assert!(facts.recipe_last_day <= 3 && (2..=3).contains(&facts.recipients[0].sent.len()), "{facts:?}");
    let reserved: Vec<String> = {
        let mut v = vec![];
        for i in 0..20 {
            let rows = store.message_rows(&format!("run-{i}:mail")).await.unwrap();
            if rows[0].status == send_status::RESERVED {
                v.push(rows[0].message_key.clone());
            }
        }
        v
    };
    store.settle_send(&reserved[0], true, Some(json!({"message_id": "m-1"})), 20_000).await.unwrap();
    store.settle_send(&reserved[1], false, None, 20_000).await.unwrap();
    let rows = store.message_rows(&reserved[0]).await.unwrap();
    assert_eq!((rows[0].status.as_str(), rows[0].output.clone()), ("sent", Some(json!({"message_id": "m-1"}))));
    let rows = store.message_rows(&reserved[1]).await.unwrap();
    assert_eq!((rows[0].status.as_str(), rows[0].sent_at), ("released", None), "a released slot counts no more");
    let detail = store.contact_detail(ContactKey::Id(contact.id.clone())).await.unwrap().unwrap();
    let kinds: Vec<&str> = detail.timeline.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "message_sent").count(), 1);
    assert_eq!(kinds.iter().filter(|k| **k == "message_deferred").count(), 17);

    // A recipe's sends are counted up to one above its limit (a recipe that sent a great
    // many reads no more rows), and not at all without limits.
    use enlace_core::policy::SendLimits;
    let counted = |i: usize, limits: SendLimits| SendRequest {
        recipe_id: "counted".into(),
        recipients: vec![format!("p{i}@example.com")],
        message_key: format!("counted-{i}:mail"),
        limits,
        ..request(i)
    };
    for i in 100..106 {
        let keep = Box::new(|_: &SendFacts| Some(LedgerWrite { status: send_status::RESERVED, reason: None, until: None, timeline: None }));
        store.reserve_send(counted(i, SendLimits::default()), keep).await.unwrap();
    }
    let capped = SendLimits { sends_per_hour: Some(2), sends_per_day: Some(10) };
    let (f, _) = store.reserve_send(counted(200, capped), Box::new(|_| None)).await.unwrap();
    assert_eq!((f.recipe_last_hour, f.recipe_last_day), (3, 6), "the hour counted to 3 (its limit 2, plus one), the day all 6");
    assert_eq!(
        capped.exceeded(f.recipe_last_hour, f.recipe_last_day, 1).as_deref(),
        Some("the recipe sent more than 2 message(s) in the last hour; its limit is 2 per hour (limits.sends_per_hour)")
    );
    let (f, _) = store.reserve_send(counted(201, SendLimits::default()), Box::new(|_| None)).await.unwrap();
    assert_eq!((f.recipe_last_hour, f.recipe_last_day), (0, 0), "no limits, nothing counted");

    // Settings: defaults until saved; a bad one is refused and changes nothing.
    assert_eq!(store.policy_settings().await.unwrap(), PolicySettings::default());
    let mut p = PolicySettings { default_timezone: "Europe/Paris".into(), ..PolicySettings::default() };
    store.set_policy_settings(&p, 1).await.unwrap();
    assert_eq!(store.policy_settings().await.unwrap().default_timezone, "Europe/Paris");
    p.default_timezone = "Paris".into();
    let e = store.set_policy_settings(&p, 2).await.unwrap_err().to_string();
    assert!(e.contains("default_timezone: `Paris` is not an IANA time zone"), "{e}");
    assert_eq!(store.policy_settings().await.unwrap().default_timezone, "Europe/Paris");
}

// ---- the timeline as an activity log, lead scoring ----

fn wall_ms() -> Millis {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as Millis
}

fn record(contact_id: &str, kind: &str, data: Value, at: Option<Millis>) -> ContactOp {
    ContactOp::RecordEvent { key: ContactKey::Id(contact_id.into()), kind: kind.into(), data, at }
}

async fn timeline_events_are_recorded_once_queried_and_start_their_kind(kind: Kind) {
    let db = Db::new(kind).await;
    let s = db.store();
    let sub = |id: &str, kind: Option<&str>| ContactSub {
        recipe_id: id.into(),
        recipe_version: 1,
        trigger: ContactTrigger::Event,
        tag: None,
        kind: kind.map(String::from),
    };
    let subs = vec![sub("on-purchase", Some("purchase")), sub("on-any", None)];
    let now = 1_000_000;
    let up = ContactOp::Upsert { email: "ana@example.com".into(), fields: Default::default() };
    let c = s.apply_contact(up, write(None, subs.clone(), now)).await.unwrap();
    assert_eq!(c.started.len(), 1, "`created` is a timeline entry too: the recipe without a kind starts");
    let id = c.outcome.contact.id.clone();
    let buy = record(&id, "purchase", json!({"order_id": "A-1", "total": 42.5}), Some(now + 10));
    let a = s.apply_contact(buy.clone(), write(Some("r1:buy"), subs.clone(), now + 20)).await.unwrap();
    assert!(a.outcome.changed);
    assert_eq!(a.outcome.contact.version, 1, "an activity does not change the contact's record");
    let e = a.outcome.event.clone().unwrap();
    assert_eq!((e.kind.as_str(), e.at, e.run_id.as_deref()), ("purchase", now + 10, Some("run-of-r1:buy")));
    assert_eq!(a.started.len(), 2, "the kind's recipe and the one for every kind");
    let run = s.run_detail(&a.started[0].run_id).await.unwrap().unwrap();
    assert_eq!(run.event.payload["trigger"], "event");
    assert_eq!(run.event.payload["event"]["kind"], "purchase");
    assert_eq!(run.event.payload["event"]["data"]["order_id"], "A-1");
    assert_eq!(run.event.payload["event"]["at"], now + 10);
    assert_eq!(run.event.payload["contact"]["email"], "ana@example.com");
    // The same call again (a retry): the first entry back, nothing stored, nothing started.
    let again = s.apply_contact(buy, write(Some("r1:buy"), subs.clone(), now + 30)).await.unwrap();
    assert!(!again.outcome.changed && again.started.is_empty());
    assert_eq!(again.outcome.event.unwrap().id, e.id);
    // Another kind: only the recipe without a kind.
    for (i, k) in ["page_viewed", "email_opened", "page_viewed"].iter().enumerate() {
        let op = record(&id, k, json!({"n": i}), None);
        let r = s.apply_contact(op, write(None, subs.clone(), now + 100 + i as Millis)).await.unwrap();
        assert_eq!(r.started.len(), 1);
    }
    // Bad input: nothing written.
    for (op, want) in [
        (record(&id, "Page Viewed", json!({}), None), "event kind"),
        (record(&id, "x", json!([1]), None), "JSON object"),
        (record(&id, "x", json!({"b": "x".repeat(20_000)}), None), "bytes"),
    ] {
        let e = s.apply_contact(op, write(None, vec![], now)).await;
        assert!(matches!(e, Err(StoreError::Invalid(ref m)) if m.contains(want)), "{e:?}");
    }
    let e = s.apply_contact(record("nope", "x", json!({}), None), write(None, vec![], now)).await;
    assert!(matches!(e, Err(StoreError::NotFound(_))), "{e:?}");
    // Queries: newest first, by kind, by time, paged.
    let all = s.timeline_page(&id, &TimelineQuery::default()).await.unwrap();
    let kinds: Vec<&str> = all.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["page_viewed", "email_opened", "page_viewed", "purchase", "created"]);
    let views = s.contact_timeline(&id, &["page_viewed".into(), "purchase".into()], None, 10).await.unwrap();
    assert_eq!(views.iter().map(|e| e.data["n"].as_i64().unwrap_or(-1)).collect::<Vec<_>>(), [2, 0, -1]);
    let recent = s.contact_timeline(&id, &[], Some(now + 101), 10).await.unwrap();
    assert_eq!(recent.len(), 2);
    let q = TimelineQuery { until: Some(now + 101), limit: 2, ..Default::default() };
    let p1 = s.timeline_page(&id, &q).await.unwrap();
    assert_eq!(p1.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(), ["page_viewed", "purchase"]);
    let last = p1.last().unwrap();
    let p2 = s.timeline_page(&id, &TimelineQuery { before: Some((last.at, last.id.clone())), ..q.clone() }).await.unwrap();
    assert_eq!(p2.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(), ["created"]);
    assert!(matches!(s.contact_timeline(&id, &["Bad Kind".into()], None, 1).await, Err(StoreError::Invalid(_))));
    // Erasure takes the timeline with it.
    assert!(s.erase_contact(&id).await.unwrap());
    assert!(s.timeline_page(&id, &TimelineQuery::default()).await.unwrap().is_empty());
    db.finish().await;
}

async fn timeline_scores_decay_and_thresholds_fire_once_per_crossing(kind: Kind) {
    const DAY: Millis = 86_400_000;
    let db = Db::new(kind).await;
    let s = db.store();
    // No rules yet: nothing is scored.
    assert_eq!(s.scoring_rules().await.unwrap(), enlace_core::scoring::ScoringRules::default());
    let bad: enlace_core::scoring::ScoringRules = serde_json::from_value(json!({"rules": [{"kind": "Bad", "points": 1}]})).unwrap();
    assert!(matches!(s.set_scoring_rules(&bad, 0).await, Err(StoreError::Invalid(ref m)) if m.contains("rules[0].kind")));
    let rules: enlace_core::scoring::ScoringRules = serde_json::from_value(json!({
        "half_life": "7d",
        "rules": [
            {"kind": "page_viewed", "points": 10, "match": {"url": "https://shop.example.com/pricing*"}},
            {"kind": "form_submitted", "points": 30},
            {"kind": "sms_stop", "points": -100}
        ],
        "thresholds": [{"name": "qualified", "score": 50, "event": "lead.qualified"}]
    }))
    .unwrap();
    s.set_scoring_rules(&rules, 1).await.unwrap();
    assert_eq!(s.scoring_rules().await.unwrap().thresholds.len(), 1);
    let events = vec![EventSub { recipe_id: "hand-to-sales".into(), recipe_version: 3, name: "lead.qualified".into() }];
    let subs = vec![ContactSub {
        recipe_id: "on-threshold".into(),
        recipe_version: 1,
        trigger: ContactTrigger::Event,
        tag: None,
        kind: Some(SCORE_THRESHOLD.into()),
    }];
    let w = |key: &str, now: Millis| ContactWrite { events: events.clone(), ..write(Some(key), subs.clone(), now) };
    let now = wall_ms();
    let up = ContactOp::Upsert { email: "lead@example.com".into(), fields: Default::default() };
    let id = s.apply_contact(up, w("up", now)).await.unwrap().outcome.contact.id;
    // Two weeks ago a form (30 points): a quarter is left now.
    let r = s.apply_contact(record(&id, "form_submitted", json!({}), Some(now - 14 * DAY)), w("k1", now)).await.unwrap();
    assert!((r.outcome.contact.score - 7.5).abs() < 1e-6, "{}", r.outcome.contact.score);
    assert!(r.started.is_empty());
    // A page outside the rule's prefix scores nothing.
    let blog = record(&id, "page_viewed", json!({"url": "https://shop.example.com/blog"}), None);
    let r = s.apply_contact(blog, w("k2", now)).await.unwrap();
    assert!((r.outcome.contact.score - 7.5).abs() < 1e-6);
    // Pricing views: 17.5, 27.5, 37.5, 47.5, then 57.5 crosses 50 once.
    let mut fired = vec![];
    for i in 0..6 {
        let op = record(&id, "page_viewed", json!({"url": "https://shop.example.com/pricing/pro"}), None);
        let r = s.apply_contact(op, w(&format!("p{i}"), now)).await.unwrap();
        fired.push(r.started.len());
    }
    assert_eq!(fired, [0, 0, 0, 0, 2, 0], "the threshold's event recipe and its contacts.event recipe, once");
    let c = s.contact(ContactKey::Id(id.clone())).await.unwrap().unwrap();
    assert!((c.score - 67.5).abs() < 0.01, "read back, decayed to now: {}", c.score);
    let th = s.contact_timeline(&id, &[SCORE_THRESHOLD.into()], None, 10).await.unwrap();
    assert_eq!(th.len(), 1);
    assert_eq!(th[0].data["threshold"], "qualified");
    assert_eq!(th[0].data["event"], "lead.qualified");
    let runs = s.list_runs(&RunFilter { recipe_id: Some("hand-to-sales".into()), limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(runs.len(), 1);
    let d = s.run_detail(&runs[0].id).await.unwrap().unwrap();
    assert_eq!((d.run.recipe_version, d.event.source.as_str()), (3, "scoring"));
    assert_eq!(d.event.payload["threshold"], "qualified");
    assert_eq!(d.event.payload["contact"]["email"], "lead@example.com");
    assert!(d.event.payload["score"].as_f64().unwrap() >= 50.0);
    // A STOP drops it below; the next views cross again, and fire again.
    s.apply_contact(record(&id, "sms_stop", json!({}), None), w("stop", now)).await.unwrap();
    let mut fired = vec![];
    for i in 0..10 {
        let op = record(&id, "page_viewed", json!({"url": "https://shop.example.com/pricing"}), None);
        fired.push(s.apply_contact(op, w(&format!("q{i}"), now)).await.unwrap().started.len());
    }
    assert_eq!(fired.iter().sum::<usize>(), 2, "{fired:?}");
    // Later, by decay alone, the score falls below: the next crossing fires again.
    let later = now + 30 * DAY;
    let r = s.apply_contact(record(&id, "form_submitted", json!({}), Some(later)), w("late1", later)).await.unwrap();
    assert!(r.started.is_empty(), "{} is below 50", r.outcome.contact.score);
    let r = s.apply_contact(record(&id, "form_submitted", json!({}), Some(later)), w("late2", later)).await.unwrap();
    assert_eq!(r.started.len(), 2, "crossed again after falling below: {}", r.outcome.contact.score);
    db.finish().await;
}

/// The Journeys page's counts: runs per recipe and status, and per step and journal status,
/// over the runs created in the window; a step run several times in one run counts once.
async fn flow_counts_group_runs_by_recipe_step_and_status(kind: Kind) {
    let db = Db::new(kind).await;
    let s = db.store();
    let ok = |key: &str, seq, at| step(key, seq, StepStatus::Succeeded, Some(json!({})), at);
    // Before the window: not counted.
    let old = s.accept_event(event("a", None, 100, Some("n"))).await.unwrap().run_id;
    assert!(
        s.update_run(&old, "n", vec![ok("send", 1, 100)], RunUpdate::Finish { status: RunStatus::Succeeded, error: None }, vec![], 100)
            .await
            .unwrap()
    );
    // In the window.
    let r1 = s.accept_event(event("a", None, 1000, Some("n"))).await.unwrap().run_id;
    assert!(s.record_steps(&r1, "n", vec![ok("fetch", 1, 1000)], vec![], 1001).await.unwrap());
    assert!(
        s.update_run(&r1, "n", vec![ok("send", 2, 1002)], RunUpdate::Finish { status: RunStatus::Succeeded, error: None }, vec![], 1003)
            .await
            .unwrap()
    );
    let r2 = s.accept_event(event("a", None, 1100, Some("n"))).await.unwrap().run_id;
    let failed = step("send", 2, StepStatus::Failed, None, 1102);
    assert!(
        s.update_run(
            &r2,
            "n",
            vec![ok("fetch", 1, 1101), failed],
            RunUpdate::Finish { status: RunStatus::Failed, error: None },
            vec![],
            1103
        )
        .await
        .unwrap()
    );
    let r3 = s.accept_event(event("a", None, 1200, Some("n"))).await.unwrap().run_id;
    let pause = step("pause", 2, StepStatus::Waiting, None, 1202);
    assert!(
        s.update_run(
            &r3,
            "n",
            vec![ok("fetch", 1, 1201), pause],
            RunUpdate::Park { status: RunStatus::Waiting, due_at: 99_000 },
            vec![],
            1203
        )
        .await
        .unwrap()
    );
    // A loop: the step `send` twice in one run (two keys) counts the run once.
    let r4 = s.accept_event(event("a", None, 1300, Some("n"))).await.unwrap().run_id;
    let each = |i: i64| StepRecord { step_id: "send".into(), ..ok(&format!("each[{i}].send"), 1 + i, 1301) };
    assert!(
        s.update_run(&r4, "n", vec![each(0), each(1)], RunUpdate::Finish { status: RunStatus::Succeeded, error: None }, vec![], 1302)
            .await
            .unwrap()
    );
    s.accept_event(event("b", None, 1400, None)).await.unwrap();

    let c = s.flow_counts(1000).await.unwrap();
    let runs: Vec<(&str, &str, i64)> = c.runs.iter().map(|r| (r.recipe_id.as_str(), r.status.as_str(), r.runs)).collect();
    assert_eq!(runs, vec![("a", "failed", 1), ("a", "succeeded", 2), ("a", "waiting", 1), ("b", "queued", 1)]);
    let steps: Vec<(&str, &str, &str, i64)> =
        c.steps.iter().map(|r| (r.recipe_id.as_str(), r.step_id.as_str(), r.status.as_str(), r.runs)).collect();
    assert_eq!(
        steps,
        vec![("a", "fetch", "succeeded", 3), ("a", "pause", "waiting", 1), ("a", "send", "failed", 1), ("a", "send", "succeeded", 2),]
    );
    // The whole history counts the old run too; a window after everything counts nothing.
    let all = s.flow_counts(0).await.unwrap();
    assert_eq!(all.steps.iter().find(|x| x.step_id == "send" && x.status == "succeeded").unwrap().runs, 3);
    assert_eq!(s.flow_counts(10_000).await.unwrap(), enlace_store::FlowCounts::default());
    db.finish().await;
}
