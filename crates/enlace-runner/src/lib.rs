//! The recipe runner: it accepts events into the store, runs recipes step by step with a
//! durable journal, retries with exponential backoff and full jitter (honouring the
//! vendor's `Retry-After`), parks runs on durable timers, applies rate limits per
//! connection, and finishes or hands back every run it holds.
//!
//! How a run moves: ingress stores the event and its run in one transaction. When a worker
//! slot is free, the run is stored already leased to this node and starts at once;
//! otherwise it is queued and the poller claims it when a slot frees. A run that must wait
//! (a delay, a retry, a rate budget) is parked with a due time and leaves its worker; the
//! poller claims it again when it is due. Nothing waits in memory: a million pending
//! delays are a million rows and an index.
//!
//! Resuming is replaying the journal: the interpreter walks the recipe from the top, and
//! every step already in the journal gives its recorded outcome without being called again.
//! A call whose outcome is unknown (in flight at a crash, or timed out after it was sent) is
//! sent again only when the action is idempotent for that input; with the same idempotency
//! key (run id + step key) either way.

mod audience;
pub mod catalog;
pub mod clock;
pub mod contacts;
mod exec;
pub mod limits;
pub mod links;
pub mod mask;
pub mod metrics;
pub mod oauth;
mod policy;
pub mod poll;
pub mod simulate;
pub mod social;
pub mod web;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use enlace_core::http::{HttpRequest, HttpTransport};
use enlace_core::{ConnectorError, Credentials, Registry};
use enlace_recipe::Recipe;
use enlace_recipe::model::TriggerConfig;
use enlace_store::{Accepted, EventRow, NewEvent, RecipeRow, Replay, RunDetail, RunRow, RunStatus, SaveRecipe, Saved, Store, StoreError};
use serde_json::Value;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, oneshot};
use tokio_util::sync::CancellationToken;

pub use catalog::{Catalog, Current};

/// Reads a time as recipes do: RFC 3339, a local date-time (UTC), a date, or Unix seconds.
pub fn exec_parse_time(s: &str) -> Result<i64, String> {
    exec::parse_time(&serde_json::Value::String(s.to_string()), None)
}
pub use clock::{Clock, ManualClock, SystemClock};
pub use metrics::Metrics;
pub use poll::{PollReport, RewindItem, RewindOutcome, TriggerStatus};

#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for RunnerError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(m) => RunnerError::NotFound(m),
            StoreError::Conflict(m) => RunnerError::Conflict(m),
            StoreError::Invalid(m) => RunnerError::Invalid(m),
            other => RunnerError::Store(other),
        }
    }
}

#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// This process's name in leases (`owner`).
    pub node_id: String,
    /// Runs in flight at once in this process.
    pub concurrency: usize,
    /// Whether this process runs workers, timers and schedules. An ingress-only node
    /// (`enlace serve --no-workers`) stores events and queues their runs for other nodes.
    pub workers: bool,
    /// How long a claimed run stays leased to this node without a heartbeat. Heartbeats
    /// renew it every third of this; a node that dies loses its runs to the reaper of
    /// another node once it runs out.
    pub lease: Duration,
    /// Longest an action call may take before its outcome counts as unknown.
    pub step_timeout: Duration,
    /// Call nothing outside: actions that do all their IO over HTTP are called with a
    /// recording transport, the others not at all; every action's output is its sample.
    pub dry_run: bool,
    /// The address apps reach this installation at (`ENLACE_PUBLIC_URL`, for example
    /// `https://enlace.example.com`): subscribe triggers give apps
    /// `<public_url>/hooks/subscriptions/<recipe id>`. Without it they cannot subscribe.
    pub public_url: Option<String>,
    /// A simulation (`enlace simulate`): like `dry_run` for outside apps, but the embedded
    /// ones (the contact store) run for real in the simulation's store, and no dry-run log
    /// is kept. Set together with `dry_run`.
    pub simulate: bool,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        RunnerConfig {
            node_id: format!("node-{}", uuid::Uuid::new_v4().simple()),
            concurrency: 256,
            workers: true,
            lease: Duration::from_secs(30),
            step_timeout: Duration::from_secs(300),
            dry_run: false,
            public_url: None,
            simulate: false,
        }
    }
}

/// How a run ended (or parked), for a caller waiting on it (a synchronous webhook).
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub run_id: String,
    pub status: RunStatus,
    /// The webhook's `respond.after_run` rendered, when the run finished and has one.
    pub response: Option<Value>,
    pub error: Option<Value>,
}

/// An event for a recipe, as ingress hands it over.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub recipe_id: String,
    pub recipe_version: i64,
    pub source: &'static str,
    pub payload: Value,
    pub dedupe_key: Option<String>,
    /// Whether the caller wants to wait for the outcome.
    pub wait: bool,
}

/// What a dry run's recording transport saw for one action call.
#[derive(Debug, Clone)]
pub struct DryCall {
    pub run_id: String,
    pub step_key: String,
    pub requests: Vec<HttpRequest>,
    pub called: bool,
}

pub(crate) struct Inner {
    store: Store,
    registry: Registry,
    catalog: Catalog,
    config: RunnerConfig,
    transport: Arc<dyn HttpTransport>,
    clock: Arc<dyn Clock>,
    limits: limits::RateLimits,
    metrics: Arc<Metrics>,
    slots: Arc<Semaphore>,
    wake: Notify,
    waiters: Mutex<HashMap<String, oneshot::Sender<RunOutcome>>>,
    shutdown: CancellationToken,
    /// Cancelled when shutdown has drained or handed back every run (heartbeats stop then).
    stopped: CancellationToken,
    dry_log: Mutex<Vec<DryCall>>,
    refresh_locks: oauth::RefreshLocks,
    /// Wakes the social publishing loop (a post scheduled, a channel resumed).
    social_wake: Notify,
    /// Signed links for the messages connectors send (one-click unsubscribe).
    links: Arc<dyn enlace_core::Links>,
}

/// The runner. Cheap to clone.
#[derive(Clone)]
pub struct Runner {
    inner: Arc<Inner>,
}

impl Runner {
    pub fn new(store: Store, registry: Registry, config: RunnerConfig, transport: Arc<dyn HttpTransport>, clock: Arc<dyn Clock>) -> Runner {
        let slots = Arc::new(Semaphore::new(config.concurrency.max(1)));
        let (store_for_links, public_url_for_links) = (store.clone(), config.public_url.clone());
        Runner {
            inner: Arc::new(Inner {
                catalog: Catalog::new(registry.clone()),
                store,
                registry,
                config,
                transport,
                clock,
                limits: limits::RateLimits::default(),
                metrics: Arc::new(Metrics::default()),
                slots,
                wake: Notify::new(),
                waiters: Mutex::new(HashMap::new()),
                shutdown: CancellationToken::new(),
                stopped: CancellationToken::new(),
                dry_log: Mutex::new(vec![]),
                refresh_locks: oauth::RefreshLocks::default(),
                social_wake: Notify::new(),
                links: Arc::new(links::SignedLinks { store: store_for_links, public_url: public_url_for_links }),
            }),
        }
    }

    /// A connection's credentials as an action would get them: an OAuth2 connection's
    /// token refreshed first when it expires soon (for connection tests).
    pub async fn connection_credentials(&self, id: &str) -> Result<Credentials, ConnectorError> {
        match self.inner.store.connection(id).await {
            Ok(Some((_, Credentials::OAuth2Grant(g)))) => {
                let g = oauth::fresh_grant(&self.inner, id, *g, None).await?;
                Ok(oauth::handed_out(&Credentials::OAuth2Grant(Box::new(g))))
            }
            Ok(Some((_, c))) => Ok(c),
            Ok(None) => Err(ConnectorError::bad_input("connection", format!("no connection `{id}`"))),
            Err(e) => Err(ConnectorError::transient(format!("reading the connection `{id}` failed: {e}"))),
        }
    }

    /// After a connection was repaired (signed in again, new credentials): the runs held
    /// for it go back to the queue, due now. Returns how many.
    pub async fn connection_repaired(&self, id: &str) -> Result<u64, RunnerError> {
        let n = self.inner.store.release_held_runs(id, self.inner.clock.now_ms()).await?;
        // Social channels paused for it resume, and their waiting posts go.
        let resumed = self.inner.store.resume_channels(None, Some(id), self.inner.clock.now_ms()).await?;
        if !resumed.is_empty() {
            tracing::info!(connection = %id, channels = ?resumed, "the connection was repaired; its social channels resume");
            self.inner.social_wake.notify_one();
        }
        if n > 0 {
            tracing::info!(connection = %id, runs = n, "the connection was repaired; its held runs resume");
            self.inner.wake.notify_one();
        }
        Ok(n)
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }
    pub fn catalog(&self) -> &Catalog {
        &self.inner.catalog
    }
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }
    /// The outgoing transport actions use (its SSRF policy included): connection tests go
    /// through it too.
    pub fn transport(&self) -> &Arc<dyn HttpTransport> {
        &self.inner.transport
    }
    pub fn node_id(&self) -> &str {
        &self.inner.config.node_id
    }
    pub fn now_ms(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    /// Loads the recipes. With `recover`, returns to the queue the runs a dead process left
    /// running (only when this process is the only one running workers on the store).
    pub async fn load(&self, recover: bool) -> Result<Vec<(String, enlace_recipe::Diagnostics)>, RunnerError> {
        if recover {
            let n = self.inner.store.recover_orphans(self.now_ms()).await?;
            if n > 0 {
                tracing::warn!(runs = n, "runs left in flight by a previous process are queued again");
            }
        }
        self.inner.catalog.reload(&self.inner.store).await
    }

    /// Starts the background work: the poller that claims due runs, the cron scheduler and
    /// the recipe refresher. They stop at [`Runner::shutdown`].
    pub fn start(&self) {
        if self.inner.config.workers {
            let me = self.inner.clone();
            tokio::spawn(async move { exec::poll_loop(me).await });
            let me = self.inner.clone();
            tokio::spawn(async move { schedule_loop(me).await });
            let me = self.inner.clone();
            tokio::spawn(async move { lease_loop(me).await });
            let me = self.inner.clone();
            tokio::spawn(async move { poll::trigger_loop(me).await });
            let me = self.inner.clone();
            tokio::spawn(async move { audience::removal_loop(me).await });
            let me = self.inner.clone();
            tokio::spawn(async move { social::social_loop(me).await });
        }
        let me = self.inner.clone();
        tokio::spawn(async move { refresh_loop(me).await });
    }

    /// The contact store as actions and the API change it: every change starts the
    /// recipes whose `contacts.*` triggers it matches, in its own transaction.
    pub fn contacts(&self) -> contacts::Contacts {
        contacts::Contacts::new(self.inner.clone())
    }

    /// The social post scheduler: channels, posts, queues.
    pub fn social(&self) -> social::Social {
        social::Social::new(self.inner.clone())
    }

    /// Enlace's public address, when configured.
    pub fn public_url(&self) -> Option<String> {
        self.inner.config.public_url.clone()
    }

    /// The web channel: forms and on-site messages.
    pub fn web(&self) -> web::Web {
        web::Web::new(self.inner.clone())
    }

    /// Sends the ad audience removals that are due now (the background loop does this every
    /// second; tests on a manual clock call it); how many it handled.
    pub async fn process_audience_removals(&self) -> usize {
        audience::process_due(&self.inner).await
    }

    /// Wakes the poller (after a replay, a parked run, or a move of a manual clock).
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// Stops claiming work, waits up to `drain` for runs in flight, then hands what is still
    /// running back to the queue (it resumes at the next start, with the same idempotency
    /// keys). Returns the number of runs handed back.
    pub async fn shutdown(&self, drain: Duration) -> u64 {
        self.inner.shutdown.cancel();
        let total = self.inner.config.concurrency.max(1) as u32;
        let drained = tokio::time::timeout(drain, self.inner.slots.acquire_many(total)).await;
        let _stop_heartbeats = self.inner.stopped.clone().drop_guard();
        match drained {
            Ok(Ok(permits)) => {
                permits.forget();
                0
            }
            _ => {
                self.inner.slots.close();
                let n = self.inner.store.release_owned(&self.inner.config.node_id, self.now_ms()).await.unwrap_or(0);
                if n > 0 {
                    tracing::warn!(runs = n, "runs still in flight at shutdown are queued again");
                }
                n
            }
        }
    }

    /// Saves a checked recipe (a new version if it changed) and makes it live here.
    pub async fn save_recipe(&self, recipe: &Recipe, origin: &str) -> Result<Saved, RunnerError> {
        let now = self.now_ms();
        let (hook_path, event_name, cron) = match &recipe.trigger.config {
            TriggerConfig::Webhook(w) | TriggerConfig::Subscribe { hook: w, .. } => (Some(w.path.clone()), None, None),
            TriggerConfig::Event { name } => (None, Some(name.clone()), None),
            TriggerConfig::Cron(c) => {
                let next =
                    next_tick(c, now).ok_or_else(|| RunnerError::Invalid(format!("the cron expression `{}` never fires", c.expression)))?;
                (
                    None,
                    None,
                    Some(enlace_store::CronSpec {
                        expression: c.expression.clone(),
                        timezone: c.timezone.name().to_string(),
                        next_at: next,
                    }),
                )
            }
            TriggerConfig::Polling { .. } | TriggerConfig::Contact { .. } => (None, None, None),
        };
        let saved = self
            .inner
            .store
            .save_recipe(
                SaveRecipe {
                    id: recipe.id.clone(),
                    body: recipe.source.clone(),
                    enabled: recipe.enabled,
                    origin: origin.to_string(),
                    hook_path,
                    event_name,
                    cron,
                },
                now,
            )
            .await?;
        self.inner.catalog.put(saved.recipe.clone(), Arc::new(recipe.clone()));
        poll::trigger_changed(&self.inner, &recipe.id).await;
        Ok(saved)
    }

    /// Enables or disables a recipe.
    pub async fn set_enabled(&self, id: &str, enabled: bool) -> Result<RecipeRow, RunnerError> {
        let row = self
            .inner
            .store
            .set_enabled(id, enabled, self.now_ms())
            .await?
            .ok_or_else(|| RunnerError::NotFound(format!("no recipe `{id}`")))?;
        let recipe = self.inner.catalog.version(&self.inner.store, id, row.version).await?;
        self.inner.catalog.put(row.clone(), recipe);
        poll::trigger_changed(&self.inner, id).await;
        Ok(row)
    }

    /// The kill switch: disables the recipe (no new runs, its trigger stops) and cancels
    /// every run of it that has not ended, in that order, so nothing it has pending goes out.
    /// A call already in flight cannot be called back; its run is cancelled when it returns.
    /// Returns the recipe and how many runs were cancelled.
    pub async fn kill(&self, id: &str) -> Result<(RecipeRow, u64), RunnerError> {
        let row = self.set_enabled(id, false).await?;
        let n = self.inner.store.cancel_recipe_runs(id, "cancelled by the kill switch: the recipe was stopped", self.now_ms()).await?;
        // Its messages held for approval go with their runs.
        self.inner.store.cancel_held_sends(id, self.now_ms()).await?;
        tracing::warn!(recipe = %id, cancelled = n, "kill switch: the recipe is disabled and its pending runs are cancelled");
        Ok((row, n))
    }

    /// The enabled recipe on a hook path.
    pub fn hook(&self, path: &str) -> Option<Current> {
        self.inner.catalog.by_hook(path)
    }

    /// Stores an event and its run durably, then starts the run at once when a worker slot
    /// is free. With `wait`, the receiver gets the outcome when the run ends or parks.
    ///
    /// Cancellation-safe: the work runs in its own task, so a caller that goes away (a
    /// webhook client that disconnects) cannot leave a stored run without its worker.
    pub async fn accept(&self, inc: Incoming) -> Result<(Accepted, Option<oneshot::Receiver<RunOutcome>>), RunnerError> {
        let inner = self.inner.clone();
        let (tx, rx) = oneshot::channel();
        // One task stores the event, answers, and then runs the run (when a slot is free).
        tokio::spawn(async move {
            match accept_inner(inner.clone(), inc).await {
                Ok((accepted, waiter, start)) => {
                    let _ = tx.send(Ok((accepted, waiter)));
                    if let Some((run_id, permit, fresh)) = start {
                        exec::execute(inner, run_id, permit, fresh).await;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        });
        rx.await.map_err(|_| RunnerError::Invalid("accepting the event failed: the task ended early".into()))?
    }

    /// Stops waiting for a run's outcome (the caller gave up).
    pub fn forget_waiter(&self, run_id: &str) {
        self.inner.waiters.lock().unwrap_or_else(|e| e.into_inner()).remove(run_id);
    }

    /// Queues a failed or cancelled run again from its failed step.
    pub async fn replay(&self, run_id: &str, latest_version: bool) -> Result<RunRow, RunnerError> {
        let run = self.inner.store.get_run(run_id).await?.ok_or_else(|| RunnerError::NotFound(format!("no run `{run_id}`")))?;
        let latest = if latest_version {
            let rec = self
                .inner
                .store
                .get_recipe(&run.recipe_id)
                .await?
                .ok_or_else(|| RunnerError::NotFound(format!("the recipe `{}` of run `{run_id}` is gone", run.recipe_id)))?;
            Some(rec.version)
        } else {
            None
        };
        let row = self.inner.store.replay_run(run_id, Replay { latest_version: latest, now: self.now_ms() }).await?;
        self.inner.wake.notify_one();
        Ok(row)
    }

    pub async fn cancel(&self, run_id: &str) -> Result<RunRow, RunnerError> {
        Ok(self.inner.store.cancel_run(run_id, self.now_ms()).await?)
    }

    /// Claims and runs due runs in this task until none is due (tests and `enlace run`).
    /// Returns how many runs were executed.
    pub async fn drain_due(&self) -> Result<usize, RunnerError> {
        self.drain(64, false).await
    }

    /// Like [`Runner::drain_due`], running up to `parallel` claimed runs at once (each batch
    /// ends before the next is claimed): the simulator's pace.
    pub async fn drain_due_parallel(&self, parallel: usize) -> Result<usize, RunnerError> {
        self.drain(parallel.max(1) as i64, true).await
    }

    /// Claims up to `batch` due runs at a time and runs them, one after the other in this
    /// task, or at once (`spawn`), until none is due.
    async fn drain(&self, batch: i64, spawn: bool) -> Result<usize, RunnerError> {
        let mut total = 0;
        loop {
            let now = self.now_ms();
            let claimed =
                self.inner.store.claim_due(&self.inner.config.node_id, now, batch, self.inner.config.lease.as_millis() as i64).await?;
            if claimed.is_empty() {
                return Ok(total);
            }
            let mut running = Vec::with_capacity(if spawn { claimed.len() } else { 0 });
            for c in claimed {
                let permit = self
                    .inner
                    .slots
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| RunnerError::Conflict("the runner is shutting down".into()))?;
                if spawn {
                    running.push(tokio::spawn(exec::execute(self.inner.clone(), c.run_id, permit, None)));
                } else {
                    exec::execute(self.inner.clone(), c.run_id, permit, None).await;
                }
                total += 1;
            }
            for t in running {
                let _ = t.await;
            }
        }
    }

    /// Fires the cron schedules that are due now (the scheduler calls this every second).
    pub async fn fire_due_schedules(&self) -> Result<usize, RunnerError> {
        fire_schedules(&self.inner).await
    }

    /// Runs one recipe once, to its end, in this task: for `enlace run`. Delays are skipped
    /// by moving `clock` (a manual clock); retries wait for real unless `dry_run`.
    pub async fn run_once(&self, recipe: &Recipe, event: Value, clock: &ManualClock) -> Result<RunDetail, RunnerError> {
        let mut recipe = recipe.clone();
        recipe.enabled = true;
        let saved = self.save_recipe(&recipe, "cli").await?;
        let (accepted, _) = self
            .accept(Incoming {
                recipe_id: recipe.id.clone(),
                recipe_version: saved.recipe.version,
                source: "manual",
                payload: event,
                dedupe_key: None,
                wait: false,
            })
            .await?;
        loop {
            // Let a run started at once by `accept` finish before claiming.
            let all = self.inner.config.concurrency.max(1) as u32;
            if let Ok(p) = self.inner.slots.acquire_many(all).await {
                drop(p);
            }
            self.drain_due().await?;
            let run = self.inner.store.get_run(&accepted.run_id).await?.ok_or_else(|| RunnerError::NotFound("the run vanished".into()))?;
            if run.status.is_final() {
                break;
            }
            let Some(due) = run.due_at else { break };
            let now = self.now_ms();
            if due > now {
                if run.status == RunStatus::Queued && !self.inner.config.dry_run {
                    tokio::time::sleep(Duration::from_millis((due - now) as u64)).await;
                }
                clock.set(due);
            }
        }
        self.inner.store.run_detail(&accepted.run_id).await?.ok_or_else(|| RunnerError::NotFound("the run vanished".into()))
    }

    /// What a dry run's recording transport captured, oldest first.
    pub fn take_dry_calls(&self) -> Vec<DryCall> {
        std::mem::take(&mut *self.inner.dry_log.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// A run to start at once: its id, its worker slot, and what the worker needs to know.
type Start = (String, OwnedSemaphorePermit, Option<RunDetail>);

async fn accept_inner(
    inner: Arc<Inner>,
    inc: Incoming,
) -> Result<(Accepted, Option<oneshot::Receiver<RunOutcome>>, Option<Start>), RunnerError> {
    let inner = &inner;
    let now = inner.clock.now_ms();
    let permit: Option<OwnedSemaphorePermit> =
        if inner.shutdown.is_cancelled() || !inner.config.workers { None } else { inner.slots.clone().try_acquire_owned().ok() };
    let source = inc.source;
    let owner = permit.as_ref().map(|_| inner.config.node_id.clone());
    // Keep what the worker needs, so that it does not read the run back.
    let payload_text = serde_json::to_string(&inc.payload).map_err(|e| RunnerError::Invalid(format!("the event cannot be stored: {e}")))?;
    let keep = permit.as_ref().map(|_| (inc.recipe_id.clone(), inc.payload, inc.dedupe_key.clone()));
    let accepted = inner
        .store
        .accept_event(NewEvent {
            recipe_id: inc.recipe_id,
            recipe_version: inc.recipe_version,
            source: source.to_string(),
            dedupe_key: inc.dedupe_key,
            payload: payload_text,
            owner: owner.clone(),
            lease_ms: inner.config.lease.as_millis() as i64,
            now,
        })
        .await?;
    let labels = vec![("source", source.to_string())];
    if accepted.duplicate {
        inner.metrics.events_duplicate.get_or_create(&labels).inc();
        return Ok((accepted, None, None));
    }
    inner.metrics.events_accepted.get_or_create(&labels).inc();
    let rx = if inc.wait && !inner.config.workers {
        // Another node runs it: follow the run in the store.
        let (tx, rx) = oneshot::channel();
        tokio::spawn(exec::follow(inner.clone(), accepted.run_id.clone(), tx));
        Some(rx)
    } else if inc.wait {
        let (tx, rx) = oneshot::channel();
        inner.waiters.lock().unwrap_or_else(|e| e.into_inner()).insert(accepted.run_id.clone(), tx);
        Some(rx)
    } else {
        None
    };
    match permit {
        Some(p) => {
            let run_id = accepted.run_id.clone();
            let fresh = keep.map(|(recipe_id, payload, dedupe_key)| RunDetail {
                run: RunRow {
                    id: accepted.run_id.clone(),
                    recipe_id: recipe_id.clone(),
                    recipe_version: inc.recipe_version,
                    event_id: accepted.event_id.clone(),
                    status: RunStatus::Running,
                    due_at: Some(now),
                    attempt: 1,
                    owner,
                    replay_of: None,
                    error: None,
                    created_at: now,
                    started_at: Some(now),
                    finished_at: None,
                    updated_at: now,
                },
                event: EventRow {
                    id: accepted.event_id.clone(),
                    recipe_id,
                    source: source.to_string(),
                    dedupe_key,
                    payload,
                    received_at: now,
                },
                steps: vec![],
            });
            return Ok((accepted, rx, Some((run_id, p, fresh))));
        }
        None => inner.wake.notify_one(),
    }
    Ok((accepted, rx, None))
}

/// The first tick of a cron schedule strictly after `after_ms`.
pub fn next_tick(c: &enlace_recipe::model::CronConfig, after_ms: i64) -> Option<i64> {
    let after = clock::to_datetime(after_ms).with_timezone(&c.timezone);
    c.cron.find_next_occurrence(&after, false).ok().map(|t| t.timestamp_millis())
}

async fn fire_schedules(inner: &Arc<Inner>) -> Result<usize, RunnerError> {
    let now = inner.clock.now_ms();
    let due = inner.store.due_schedules(now).await?;
    let mut fired = 0;
    for (recipe_id, tick) in due {
        let Some(cur) = inner.catalog.current(&recipe_id) else { continue };
        let TriggerConfig::Cron(c) = &cur.recipe.trigger.config else { continue };
        // Ticks missed while stopped fire once, together: the next tick is after now.
        let Some(next) = next_tick(c, now.max(tick)) else { continue };
        let event = NewEvent {
            recipe_id: recipe_id.clone(),
            recipe_version: cur.row.version,
            source: "cron".into(),
            dedupe_key: Some(format!("cron:{tick}")),
            payload: serde_json::json!({"fired_at": clock::rfc3339(tick)}).to_string(),
            owner: None,
            lease_ms: 0,
            now,
        };
        if let Some(a) = inner.store.fire_schedule(&recipe_id, tick, next, event).await?
            && !a.duplicate
        {
            inner.metrics.events_accepted.get_or_create(&vec![("source", "cron".to_string())]).inc();
            fired += 1;
        }
    }
    if fired > 0 {
        inner.wake.notify_one();
    }
    Ok(fired)
}

async fn schedule_loop(inner: Arc<Inner>) {
    loop {
        if let Err(e) = fire_schedules(&inner).await {
            tracing::error!(error = %e, "firing cron schedules failed");
        }
        tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

/// Keeps this node's leases alive and, on a store shared by several nodes, returns to the
/// queue the runs of nodes whose leases ran out (they died, or lost the database). Heartbeats
/// go on while a shutdown drains, and stop once every run is finished or handed back.
async fn lease_loop(inner: Arc<Inner>) {
    let lease_ms = inner.config.lease.as_millis() as i64;
    let every = (inner.config.lease / 3).max(Duration::from_millis(100));
    let shared = inner.store.wakeups().is_some();
    loop {
        tokio::select! {
            _ = inner.stopped.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let now = inner.clock.now_ms();
        if let Err(e) = inner.store.heartbeat(&inner.config.node_id, now, lease_ms).await {
            tracing::error!(error = %e, "renewing this node's run leases failed; other nodes may take its runs when the leases end");
        }
        if shared && !inner.shutdown.is_cancelled() {
            match inner.store.reap_expired(now).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::warn!(runs = n, "runs of a node whose lease ran out are queued again");
                    inner.wake.notify_one();
                }
                Err(e) => tracing::error!(error = %e, "returning expired runs to the queue failed"),
            }
        }
    }
}

async fn refresh_loop(inner: Arc<Inner>) {
    loop {
        tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
        match inner.catalog.stale(&inner.store).await {
            Ok(true) => match inner.catalog.reload(&inner.store).await {
                Ok(invalid) => {
                    for (id, d) in invalid {
                        tracing::error!(recipe = %id, diagnostics = %d, "a stored recipe no longer validates; it does not run");
                    }
                }
                Err(e) => tracing::error!(error = %e, "reloading recipes failed"),
            },
            Ok(false) => {}
            Err(e) => tracing::error!(error = %e, "checking recipes for changes failed"),
        }
    }
}
