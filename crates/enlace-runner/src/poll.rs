//! Connectors' own triggers: polling triggers and subscribe (REST hook) triggers.
//!
//! **Polling.** Every enabled recipe whose trigger is a connector's polling trigger is
//! polled every `every` (the trigger's setting: default 5m, at least 10s) with its
//! connection's credentials, under the connection's rate budget (the same one its steps
//! use). One node at a time polls a recipe: the poll is leased in the store (the poll's
//! timeout plus 30s), and the commit is refused if the lease was lost.
//!
//! - The first poll after a recipe is enabled *seeds*: it records the cursor and every key
//!   returned as seen, and fires nothing.
//! - Later polls fire each item whose dedupe key is not seen, oldest first (items arrive
//!   newest first); each item is its run's `trigger`. The runs, the seen keys and the new
//!   cursor are one transaction, so a crash can neither lose nor double an item.
//! - The state is kept by recipe id, not version: editing a recipe neither re-fires nor
//!   misses anything. Disabling forgets the cursor (not the seen keys); enabling again seeds
//!   again, so items that arrived while the recipe was off do not fire.
//! - Flood guard: a poll that finds more new items than `hold_above` (default 100) holds them
//!   all as one batch; approving it fires them once, discarding it leaves them seen.
//! - Errors are classified by the connector. `rate_limited`: the next poll waits for the
//!   app's `Retry-After` (at least `every`) and the connection is held for the steps too.
//!   `auth`: the state says so and is *paused*: polling resumes as soon as the connection
//!   changes (repaired, re-tested), and otherwise retries with the backoff below.
//!   Anything else: backoff, `every` doubled per failure in a row, at most 1h (or `every`
//!   if longer). A success clears the error.
//!
//! **Subscribe.** When a recipe with a subscribe trigger is enabled, the runner subscribes
//! with `target_url = <public URL>/hooks/subscriptions/<recipe id>` (the ordinary webhook
//! ingress), stores the subscription, subscribes again [`RESUBSCRIBE_BEFORE`] before it
//! expires (then drops the old one), and unsubscribes when the recipe is disabled. The
//! same store lease keeps two nodes from doing it at once; failures show in the trigger's
//! state and are retried with the same backoff.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use enlace_core::action::ActionContext;
use enlace_core::trigger::{DynPollingTrigger, DynSubscribeTrigger, PollPage, PolledItem};
use enlace_core::{ConnectorError, Credentials, ErrorClass, RateLimit, Subscription};
use enlace_recipe::model::{DEFAULT_POLL_EVERY, TriggerConfig, subscription_path};
use enlace_store::{Accepted, CursorMark, HeldBatch, PollCommit, PollItem, PollState, StoreError, SubscriptionRow};
use serde::Serialize;
use serde_json::{Value, json};

use crate::catalog::Current;
use crate::clock::rfc3339;
use crate::exec::{connection_credentials, rate_wait};
use crate::{Inner, Runner, RunnerError};

/// The longest wait between polls after failures (unless `every` is longer).
pub const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// How long before a subscription expires the runner subscribes again.
pub const RESUBSCRIBE_BEFORE: Duration = Duration::from_secs(3600);
/// Polls running at once in one node.
const PARALLEL_POLLS: usize = 8;

/// What a pass over the due triggers did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PollReport {
    /// Polls made (seeding ones included).
    pub polled: usize,
    pub seeded: usize,
    /// Runs started.
    pub fired: usize,
    /// Batches held by the flood guard.
    pub held: usize,
    /// Polls that failed (see each recipe's trigger state).
    pub errors: usize,
    /// Subscriptions made, renewed or dropped.
    pub subscriptions: usize,
}

impl PollReport {
    fn add(&mut self, o: &PollReport) {
        self.polled += o.polled;
        self.seeded += o.seeded;
        self.fired += o.fired;
        self.held += o.held;
        self.errors += o.errors;
        self.subscriptions += o.subscriptions;
    }
}

/// A recipe's trigger as the API shows it (`GET /api/v1/recipes/{id}/trigger`).
#[derive(Debug, Clone, Serialize)]
pub struct TriggerStatus {
    pub recipe_id: String,
    /// `polling` or `subscribe`.
    pub kind: &'static str,
    pub enabled: bool,
    /// Polling: how often, and the flood guard's threshold.
    pub every: Option<Duration>,
    pub hold_above: Option<u32>,
    pub state: Option<PollState>,
    pub held: Vec<HeldBatch>,
    pub cursor_history: Vec<CursorMark>,
    /// Subscribe: the subscription's id, target and expiry.
    pub subscription: Option<Value>,
}

/// One item a rewind would fire (or would skip).
#[derive(Debug, Clone, Serialize)]
pub struct RewindItem {
    pub key: String,
    pub event: Value,
    /// A run was started for it before.
    pub already_fired: bool,
    pub fired_at: Option<i64>,
    pub would_fire: bool,
}

/// What a rewind found (and, unless a preview, did).
#[derive(Debug, Clone, Serialize)]
pub struct RewindOutcome {
    pub recipe_id: String,
    /// The cursor in effect at the time asked for, and since when.
    pub cursor: Option<String>,
    pub cursor_since: i64,
    pub preview: bool,
    pub refire: bool,
    /// Oldest first.
    pub items: Vec<RewindItem>,
    pub would_fire: usize,
}

/// The connector trigger behind a recipe, with its settings.
enum Kind {
    Polling { trigger: Arc<dyn DynPollingTrigger>, with: Value, every: Duration, hold_above: u32 },
    Subscribe { trigger: Arc<dyn DynSubscribeTrigger>, with: Value },
}

fn kind_of(inner: &Inner, cur: &Current) -> Option<Kind> {
    let t = &cur.recipe.trigger;
    let connector = inner.registry.get(&t.app)?;
    match &t.config {
        TriggerConfig::Polling { with, every, hold_above } => connector.polling_trigger(&t.event).map(|p| Kind::Polling {
            trigger: p.clone(),
            with: with.clone(),
            every: *every,
            hold_above: *hold_above,
        }),
        TriggerConfig::Subscribe { with, .. } => {
            connector.subscribe_trigger(&t.event).map(|s| Kind::Subscribe { trigger: s.clone(), with: with.clone() })
        }
        _ => None,
    }
}

fn lease_ms(inner: &Inner) -> i64 {
    (inner.config.step_timeout + Duration::from_secs(30)).as_millis() as i64
}

fn backoff(every: Duration, failures: i64) -> Duration {
    let f = failures.clamp(1, 20) as u32;
    every.saturating_mul(2u32.saturating_pow(f)).min(MAX_BACKOFF.max(every))
}

fn ms(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

/// The context a trigger's calls get: no run, the trigger's own key.
async fn trigger_context(inner: &Inner, cur: &Current, purpose: &str, now: i64) -> Result<ActionContext, ConnectorError> {
    let t = &cur.recipe.trigger;
    let credentials = match &t.connection {
        Some(id) => match connection_credentials(inner, &t.app, id).await?.1 {
            // An OAuth2 connection's token, refreshed first when it expires soon.
            Credentials::OAuth2Grant(g) => {
                let fresh = crate::oauth::fresh_grant(inner, id, *g, None).await?;
                crate::oauth::handed_out(&Credentials::OAuth2Grant(Box::new(fresh)))
            }
            other => other,
        },
        None => Credentials::None,
    };
    Ok(ActionContext {
        run_id: format!("trigger:{}", cur.row.id),
        step_key: "trigger".into(),
        attempt: 1,
        idempotency_key: format!("{purpose}:{}:{now}", cur.row.id),
        credentials,
        http: inner.transport.clone(),
        timeout: inner.config.step_timeout,
        extensions: Default::default(),
    })
}

/// The rate budget key and limit of the recipe's trigger (its connection's, else the app's).
async fn budget(inner: &Inner, cur: &Current) -> (String, Option<RateLimit>) {
    let t = &cur.recipe.trigger;
    let declared = inner.registry.get(&t.app).and_then(|c| c.manifest.rate_limit);
    match &t.connection {
        Some(c) => {
            let own = match inner.store.connection(c).await {
                Ok(Some((row, _))) => {
                    row.rate_limit.map(|l| RateLimit { calls: l.calls, per: Duration::from_millis(l.per_ms.max(1) as u64) })
                }
                _ => None,
            };
            (format!("connection:{c}"), own.or(declared))
        }
        None => (format!("app:{}", t.app), declared),
    }
}

fn error_json(e: &ConnectorError, now: i64, next: i64) -> Value {
    let mut v = e.to_json();
    v["at"] = json!(rfc3339(now));
    v["next_poll_at"] = json!(rfc3339(next));
    v
}

/// Polls a trigger once, with the connector's classification, within the poll's timeout.
async fn poll_once(
    inner: &Inner,
    cur: &Current,
    trigger: &Arc<dyn DynPollingTrigger>,
    with: &Value,
    cursor: Option<String>,
    now: i64,
) -> Result<PollPage<PolledItem>, ConnectorError> {
    let mut ctx = trigger_context(inner, cur, "poll", now).await?;
    let first = poll_with(inner, trigger, &ctx, with, cursor.clone()).await;
    // A refused OAuth2 token: refresh once (unless someone already did) and poll again, as
    // a step does. Anything else, or a second refusal, is the poll's error.
    let t = &cur.recipe.trigger;
    if let (Err(e), Some(id), Credentials::OAuth2 { access_token }) = (&first, &t.connection, &ctx.credentials)
        && e.class() == ErrorClass::Auth
        && let Ok((_, Credentials::OAuth2Grant(g))) = connection_credentials(inner, &t.app, id).await
        && g.can_refresh()
    {
        let rejected = access_token.expose().to_string();
        let fresh = crate::oauth::fresh_grant(inner, id, *g, Some(&rejected)).await?;
        ctx.credentials = crate::oauth::handed_out(&Credentials::OAuth2Grant(Box::new(fresh)));
        return poll_with(inner, trigger, &ctx, with, cursor).await;
    }
    first
}

async fn poll_with(
    inner: &Inner,
    trigger: &Arc<dyn DynPollingTrigger>,
    ctx: &ActionContext,
    with: &Value,
    cursor: Option<String>,
) -> Result<PollPage<PolledItem>, ConnectorError> {
    match tokio::time::timeout(inner.config.step_timeout, trigger.poll(ctx, with.clone(), cursor)).await {
        Ok(r) => r,
        Err(_) => Err(ConnectorError::transient(format!("the app did not answer within {}s", inner.config.step_timeout.as_secs()))),
    }
}

/// Items newest first, each key once (the newest occurrence).
fn unique(items: Vec<PolledItem>) -> Vec<PolledItem> {
    let mut seen = HashSet::new();
    items.into_iter().filter(|i| seen.insert(i.dedupe_key.clone())).collect()
}

/// Polls one claimed recipe and commits what it found.
async fn poll_recipe(inner: Arc<Inner>, cur: Current, state: PollState) -> Result<PollReport, RunnerError> {
    let Some(Kind::Polling { trigger, with, every, hold_above }) = kind_of(&inner, &cur) else { return Ok(PollReport::default()) };
    let now = inner.clock.now_ms();
    let id = cur.row.id.clone();
    let mut commit = PollCommit {
        recipe_id: id.clone(),
        recipe_version: cur.row.version,
        owner: inner.config.node_id.clone(),
        now,
        next_poll_at: now + ms(every),
        failures: state.failures,
        ..PollCommit::default()
    };
    let mut report = PollReport::default();

    let (key, limit) = budget(&inner, &cur).await;
    let wait = rate_wait(&inner, &key, limit, now).await;
    if !wait.is_zero() {
        // The connection's budget is spent: try again when it allows, keep everything else.
        commit.next_poll_at = now + ms(wait);
        commit.error = state.last_error.clone();
        commit.paused = state.paused;
        inner.store.poll_commit(commit).await?;
        return Ok(report);
    }

    report.polled = 1;
    match poll_once(&inner, &cur, &trigger, &with, state.cursor.clone(), now).await {
        Ok(page) => {
            let items = unique(page.items);
            commit.cursor = page.cursor;
            commit.seen = items.iter().map(|i| i.dedupe_key.clone()).collect();
            commit.failures = 0;
            if state.seeded_at.is_none() {
                commit.seed = true;
                report.seeded = 1;
            } else {
                let settled: HashSet<String> =
                    inner.store.poll_seen(&id, &commit.seen).await?.into_iter().filter(|k| k.settled()).map(|k| k.key).collect();
                let fresh: Vec<PollItem> = items
                    .into_iter()
                    .rev()
                    .filter(|i| !settled.contains(&i.dedupe_key))
                    .map(|i| PollItem { key: i.dedupe_key, event: i.event })
                    .collect();
                if fresh.len() > hold_above as usize {
                    tracing::warn!(recipe = %id, items = fresh.len(), hold_above, "a poll found more new items than the flood guard allows; they are held for approval");
                    commit.hold = fresh;
                } else {
                    commit.fire = fresh;
                }
            }
        }
        Err(e) => {
            report.errors = 1;
            let class = e.class();
            let failures = state.failures + 1;
            let wait = match class {
                ErrorClass::RateLimited => {
                    let wait = e.retry_after().unwrap_or_else(|| backoff(every, failures)).max(every);
                    let until = now + ms(wait);
                    inner.limits.hold(&key, until);
                    if inner.store.shared_rate_limits()
                        && let Err(err) = inner.store.rate_hold(&key, until).await
                    {
                        tracing::warn!(key = %key, error = %err, "sharing a vendor's Retry-After with the other nodes failed");
                    }
                    wait
                }
                _ => backoff(every, failures),
            };
            commit.failures = if class == ErrorClass::RateLimited { state.failures } else { failures };
            commit.next_poll_at = now + ms(wait);
            commit.paused = class == ErrorClass::Auth;
            commit.error = Some(error_json(&e, now, commit.next_poll_at));
            tracing::warn!(recipe = %id, error_kind = class.as_str(), error = %e, wait_ms = ms(wait), "polling the trigger failed");
        }
    }
    let held_items = commit.hold.len();
    match inner.store.poll_commit(commit).await? {
        Some(done) => {
            report.fired = done.runs.len();
            report.held = usize::from(done.held.is_some());
            if report.fired > 0 {
                inner.metrics.events_accepted.get_or_create(&vec![("source", "poll".to_string())]).inc_by(report.fired as u64);
                inner.wake.notify_one();
            }
            if held_items > 0 {
                tracing::info!(recipe = %id, batch = ?done.held, "held batch stored");
            }
        }
        None => tracing::warn!(recipe = %id, "this node lost the poll's lease before it committed; the next poll finds the items again"),
    }
    Ok(report)
}

/// Whether the connection of a paused (auth-failed) trigger changed since its last poll.
async fn repaired(inner: &Inner, cur: &Current, state: &PollState) -> bool {
    let Some(c) = &cur.recipe.trigger.connection else { return false };
    let since = state.last_polled_at.unwrap_or(0);
    matches!(inner.store.connection(c).await, Ok(Some((row, _))) if row.updated_at > since || row.tested_at.is_some_and(|t| t > since))
}

/// One pass: polls every polling trigger that is due (and claimable here), keeps the
/// subscriptions of subscribe triggers as they should be, and forgets the state of
/// recipes that were disabled elsewhere.
pub(crate) async fn run_due(inner: &Arc<Inner>) -> Result<PollReport, RunnerError> {
    let now = inner.clock.now_ms();
    let states: BTreeMap<String, PollState> = inner.store.poll_states().await?.into_iter().map(|s| (s.recipe_id.clone(), s)).collect();
    let mut report = PollReport::default();
    let mut tasks = tokio::task::JoinSet::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(PARALLEL_POLLS));
    let mut known = HashSet::new();
    for cur in inner.catalog.all() {
        let Some(kind) = kind_of(inner, &cur) else { continue };
        known.insert(cur.row.id.clone());
        let state = states.get(&cur.row.id);
        match kind {
            Kind::Subscribe { .. } => match sync_subscription(inner, &cur).await {
                Ok(n) => report.subscriptions += n,
                Err(e) => tracing::error!(recipe = %cur.row.id, error = %e, "keeping the trigger's subscription failed"),
            },
            Kind::Polling { .. } if !cur.row.enabled => {
                if state.is_some() {
                    inner.store.poll_forget(&cur.row.id).await?;
                }
            }
            Kind::Polling { .. } => {
                let leased = state
                    .is_some_and(|s| s.lease_until.is_some_and(|u| u >= now) && s.lease_owner.as_deref() != Some(&inner.config.node_id));
                if leased {
                    continue;
                }
                let force = match state {
                    None => false,
                    Some(s) if s.next_poll_at <= now => false,
                    Some(s) if s.paused && repaired(inner, &cur, s).await => true,
                    Some(_) => continue,
                };
                let Some(claimed) = inner.store.poll_claim(&cur.row.id, &inner.config.node_id, now, lease_ms(inner), force).await? else {
                    continue;
                };
                let (me, slots) = (inner.clone(), slots.clone());
                tasks.spawn(async move {
                    let _slot = slots.acquire_owned().await;
                    poll_recipe(me, cur, claimed).await
                });
            }
        }
    }
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Ok(r)) => report.add(&r),
            Ok(Err(e)) => tracing::error!(error = %e, "committing a poll failed"),
            Err(e) => tracing::error!(error = %e, "a poll task ended abnormally"),
        }
    }
    // Subscriptions of recipes that no longer exist here.
    for sub in inner.store.subscriptions().await? {
        if !known.contains(&sub.recipe_id) && inner.catalog.current(&sub.recipe_id).is_none() {
            inner.store.delete_subscription(&sub.recipe_id).await?;
        }
    }
    Ok(report)
}

/// Makes a subscribe trigger's subscription match its recipe: subscribes when enabled
/// (again when the target or config changed, or before expiry), unsubscribes when disabled.
/// Returns how many subscriptions it made or dropped.
async fn sync_subscription(inner: &Arc<Inner>, cur: &Current) -> Result<usize, RunnerError> {
    let Some(Kind::Subscribe { trigger, with }) = kind_of(inner, cur) else { return Ok(0) };
    let id = &cur.row.id;
    let now = inner.clock.now_ms();
    let have = inner.store.subscription(id).await?;
    let state = inner.store.poll_state(id).await?;
    let target = target_url(inner, id);
    let want = cur.row.enabled;
    let due = state.as_ref().is_none_or(|s| s.next_poll_at <= now);
    let changed = |s: &SubscriptionRow| {
        s.config != with || s.connection != cur.recipe.trigger.connection || target.as_deref().is_some_and(|t| t != s.target_url)
    };
    let expiring = |s: &SubscriptionRow| s.expires_at.is_some_and(|e| e - ms(RESUBSCRIBE_BEFORE) <= now);
    let work = match (&have, want) {
        (None, true) => due,
        // An edit subscribes again at once; an expiry when it is due (failures back off).
        (Some(s), true) => changed(s) || (expiring(s) && due),
        (Some(_), false) => true,
        (None, false) => {
            if state.is_some() {
                inner.store.poll_forget(id).await?;
            }
            false
        }
    };
    if !work {
        return Ok(0);
    }
    let Some(_claimed) = inner.store.poll_claim(id, &inner.config.node_id, now, lease_ms(inner), true).await? else { return Ok(0) };
    let mut commit = PollCommit {
        recipe_id: id.clone(),
        recipe_version: cur.row.version,
        owner: inner.config.node_id.clone(),
        now,
        seed: true,
        next_poll_at: now + ms(DEFAULT_POLL_EVERY),
        ..PollCommit::default()
    };
    let mut changed = 0;
    let result: Result<(), ConnectorError> = async {
        let ctx = trigger_context(inner, cur, "subscribe", now).await?;
        if !want {
            if let Some(old) = &have {
                trigger.unsubscribe(&ctx, old.config.clone(), &to_subscription(old)).await?;
                inner.store.delete_subscription(id).await.map_err(store_failure)?;
                changed += 1;
            }
            return Ok(());
        }
        let Some(target) = target.clone() else {
            return Err(ConnectorError::permanent(
                "this node does not know its public address: set ENLACE_PUBLIC_URL (for example https://enlace.example.com) so that apps can call it back",
            ));
        };
        let sub = trigger.subscribe(&ctx, with.clone(), &target).await?;
        inner
            .store
            .save_subscription(SubscriptionRow {
                recipe_id: id.clone(),
                app: cur.recipe.trigger.app.clone(),
                event: cur.recipe.trigger.event.clone(),
                subscription_id: sub.id.clone(),
                target_url: target.clone(),
                config: with.clone(),
                connection: cur.recipe.trigger.connection.clone(),
                secret: sub.secret.clone(),
                expires_at: sub.expires_at,
                created_at: have.as_ref().map_or(now, |h| h.created_at),
                updated_at: now,
            })
            .await
            .map_err(store_failure)?;
        changed += 1;
        if let Some(e) = sub.expires_at {
            commit.next_poll_at = (e - ms(RESUBSCRIBE_BEFORE)).max(now + 1000);
        }
        // The old subscription goes once the new one is stored (best effort: it expires anyway).
        if let Some(old) = &have
            && old.subscription_id != sub.id
            && let Err(e) = trigger.unsubscribe(&ctx, old.config.clone(), &to_subscription(old)).await
        {
            tracing::warn!(recipe = %id, error = %e, "dropping the previous subscription failed; it ends when it expires");
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        let failures = state.as_ref().map_or(0, |s| s.failures) + 1;
        commit.failures = failures;
        commit.next_poll_at = now + ms(e.retry_after().unwrap_or_else(|| backoff(Duration::from_secs(30), failures)));
        commit.paused = e.class() == ErrorClass::Auth;
        commit.error = Some(error_json(&e, now, commit.next_poll_at));
        tracing::warn!(recipe = %id, error_kind = e.class().as_str(), error = %e, "the trigger's subscription could not be changed; retrying later");
    }
    inner.store.poll_commit(commit).await?;
    if !want && inner.store.subscription(id).await?.is_none() {
        inner.store.poll_forget(id).await?;
    }
    Ok(changed)
}

fn store_failure(e: StoreError) -> ConnectorError {
    ConnectorError::transient(format!("storing the subscription failed: {e}"))
}

fn to_subscription(row: &SubscriptionRow) -> Subscription {
    Subscription { id: row.subscription_id.clone(), expires_at: row.expires_at, secret: row.secret.clone() }
}

fn target_url(inner: &Inner, recipe_id: &str) -> Option<String> {
    let base = inner.config.public_url.as_deref()?.trim_end_matches('/');
    Some(format!("{base}/hooks/{}", subscription_path(recipe_id)))
}

/// Polls every due trigger until the runner shuts down (a pass a second; each recipe's own
/// schedule decides whether it is polled).
pub(crate) async fn trigger_loop(inner: Arc<Inner>) {
    loop {
        if let Err(e) = run_due(&inner).await {
            tracing::error!(error = %e, "polling triggers failed");
        }
        tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// After a recipe was saved or switched here: forget a disabled poll at once, and
/// subscribe or unsubscribe a subscribe trigger at once.
pub(crate) async fn trigger_changed(inner: &Arc<Inner>, id: &str) {
    let Some(cur) = inner.catalog.current(id) else { return };
    let r = match kind_of(inner, &cur) {
        Some(Kind::Polling { .. }) if !cur.row.enabled => inner.store.poll_forget(id).await.map(|_| 0).map_err(RunnerError::from),
        Some(Kind::Subscribe { .. }) if inner.config.workers => sync_subscription(inner, &cur).await,
        _ => Ok(0),
    };
    if let Err(e) = r {
        tracing::error!(recipe = %id, error = %e, "updating the recipe's trigger failed; the next pass tries again");
    }
}

impl Runner {
    /// Polls every trigger that is due now and keeps subscriptions as they should be (the
    /// background loop calls this every second; tests call it after moving a manual clock).
    pub async fn poll_triggers(&self) -> Result<PollReport, RunnerError> {
        run_due(&self.inner).await
    }

    /// A recipe's connector trigger: its poll state, held batches and cursor history, or its
    /// subscription.
    pub async fn trigger_status(&self, id: &str) -> Result<TriggerStatus, RunnerError> {
        let inner = &self.inner;
        let cur = inner.catalog.current(id).ok_or_else(|| RunnerError::NotFound(format!("no recipe `{id}`")))?;
        let kind = kind_of(inner, &cur).ok_or_else(|| {
            RunnerError::Invalid(format!(
                "the trigger of `{id}` ({}.{}) is not a connector's polling or subscribe trigger; it has no trigger state",
                cur.recipe.trigger.app, cur.recipe.trigger.event
            ))
        })?;
        let state = inner.store.poll_state(id).await?;
        let mut out = TriggerStatus {
            recipe_id: id.to_string(),
            kind: "polling",
            enabled: cur.row.enabled,
            every: None,
            hold_above: None,
            state,
            held: vec![],
            cursor_history: vec![],
            subscription: None,
        };
        match kind {
            Kind::Polling { every, hold_above, .. } => {
                out.every = Some(every);
                out.hold_above = Some(hold_above);
                out.held = inner.store.held_batches(id).await?;
                out.cursor_history = inner.store.poll_cursors(id, 20).await?;
            }
            Kind::Subscribe { .. } => {
                out.kind = "subscribe";
                out.subscription = inner.store.subscription(id).await?.map(|s| {
                    json!({
                        "id": s.subscription_id,
                        "target_url": s.target_url,
                        "expires_at": s.expires_at.map(rfc3339),
                        "created_at": rfc3339(s.created_at),
                        "updated_at": rfc3339(s.updated_at),
                    })
                });
            }
        }
        Ok(out)
    }

    /// Rewinds a polling trigger to its cursor as of `to` (ms): polls from there without
    /// saving and lists what would fire. Unless `preview`, moves the cursor back so that the
    /// next poll (due at once) fires those items; keys that fired already are skipped unless
    /// `refire`, which fires again the items that fired at or after `to`.
    pub async fn rewind_trigger(&self, id: &str, to: i64, preview: bool, refire: bool) -> Result<RewindOutcome, RunnerError> {
        let inner = &self.inner;
        let cur = inner.catalog.current(id).ok_or_else(|| RunnerError::NotFound(format!("no recipe `{id}`")))?;
        let Some(Kind::Polling { trigger, with, hold_above, .. }) = kind_of(inner, &cur) else {
            return Err(RunnerError::Invalid(format!("`{id}` has no polling trigger to rewind")));
        };
        let mark = inner.store.poll_cursor_at(id, to).await?.ok_or_else(|| {
            RunnerError::NotFound(format!(
                "`{id}` has no cursor as of {}: it was first polled later (or never); rewind to a time after its first poll",
                rfc3339(to)
            ))
        })?;
        let now = inner.clock.now_ms();
        let page = poll_once(inner, &cur, &trigger, &with, mark.cursor.clone(), now).await.map_err(|e| {
            RunnerError::Conflict(format!("polling from the cursor of {} failed ({}): {}", rfc3339(mark.at), e.class(), e.message()))
        })?;
        let items = unique(page.items);
        let keys: Vec<String> = items.iter().map(|i| i.dedupe_key.clone()).collect();
        let seen: BTreeMap<String, enlace_store::SeenKey> =
            inner.store.poll_seen(id, &keys).await?.into_iter().map(|k| (k.key.clone(), k)).collect();
        let mut list = vec![];
        let mut rearm = vec![];
        for i in items.into_iter().rev() {
            let s = seen.get(&i.dedupe_key);
            let already_fired = s.is_some_and(|s| s.fired > 0);
            let refires = refire && already_fired && s.and_then(|s| s.fired_at).is_some_and(|t| t >= to);
            let would_fire = s.is_none_or(|s| s.rearmed) || refires;
            if refires {
                rearm.push(i.dedupe_key.clone());
            }
            list.push(RewindItem { key: i.dedupe_key, event: i.event, already_fired, fired_at: s.and_then(|s| s.fired_at), would_fire });
        }
        let would_fire = list.iter().filter(|i| i.would_fire).count();
        if !preview {
            inner.store.poll_rewind(id, mark.cursor.clone(), rearm, now).await?;
            if would_fire > hold_above as usize {
                tracing::info!(recipe = %id, would_fire, hold_above, "the rewind's next poll will be held by the flood guard");
            }
        }
        Ok(RewindOutcome {
            recipe_id: id.to_string(),
            cursor: mark.cursor,
            cursor_since: mark.at,
            preview,
            refire,
            items: list,
            would_fire,
        })
    }

    /// Approves (fires every item once) or discards a batch the flood guard held.
    pub async fn decide_held(&self, id: &str, batch: &str, approve: bool) -> Result<(HeldBatch, Vec<Accepted>), RunnerError> {
        let inner = &self.inner;
        let row = inner.store.get_recipe(id).await?.ok_or_else(|| RunnerError::NotFound(format!("no recipe `{id}`")))?;
        let (batch, runs) = inner.store.decide_held(id, batch, approve, row.version, inner.clock.now_ms()).await?;
        if !runs.is_empty() {
            inner.metrics.events_accepted.get_or_create(&vec![("source", "poll".to_string())]).inc_by(runs.len() as u64);
            inner.wake.notify_one();
        }
        Ok((batch, runs))
    }
}
