//! The PostgreSQL backend, for several nodes sharing one store.
//!
//! Every write is one transaction on a pooled connection; PostgreSQL groups concurrent
//! commits itself, so there is no writer task. The hot writes (accepting an event with its
//! run; journaling steps; moving a run) are each a single statement, so one round trip and
//! one commit: data-modifying `WITH` clauses carry the fencing check, the journal rows, the
//! emitted events and the `NOTIFY`, all or nothing.
//!
//! Claiming takes due runs with `FOR UPDATE SKIP LOCKED`, so nodes claiming at once never
//! wait on each other nor take the same run. A claimed run is leased: its owner heartbeats,
//! and a run whose lease ran out is reaped back to the queue. Every write of a run checks
//! `status = 'running' AND owner = $me`, so a node that lost its lease cannot write over the
//! new owner. A transaction that makes a run claimable sends one `pg_notify('enlace_runs',
//! <due_at>)`; every node listens and wakes its poller.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use enlace_core::Credentials;
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::{ConnectOptions, Connection, PgConnection, Postgres, QueryBuilder, Row};
use tokio::sync::Notify;

mod accounts;
mod contacts;
mod gdpr;

use crate::crypto::SecretBox;
use crate::sqlite::{digest, json_text, parse_json};
use crate::types::*;
use crate::{Result, StoreError, new_id, redact_url, token_hash};

mod polling;
mod sends;
mod web;

crate::social::social_statements!(contacts::Tx<'_>, true);

/// The `Tx` of the shared statements over one connection.
pub(crate) fn contacts_tx(c: &mut PgConnection) -> contacts::Tx<'_> {
    contacts::Tx(c)
}

impl Pg {
    /// A connection of the pool.
    pub(crate) async fn pool_conn(&self) -> Result<sqlx::pool::PoolConnection<Postgres>> {
        Ok(self.pool.acquire().await?)
    }

    pub(crate) async fn begin(&self) -> Result<sqlx::Transaction<'static, Postgres>> {
        Ok(self.pool.begin().await?)
    }
}

/// sqlx's migrator takes a PostgreSQL advisory lock (keyed by the database) around the
/// migrations: nodes starting at once apply them once, the others wait and find them done.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/postgres");

/// The channel of run wake-ups; the payload is the due time (ms) of the earliest run the
/// transaction made claimable.
const CHANNEL: &str = "enlace_runs";

/// Connections in the pool unless the URL says `pool_max_conns=N`.
const DEFAULT_POOL_SIZE: u32 = 10;

pub(crate) struct Pg {
    pool: PgPool,
    secrets: SecretBox,
    wake: Arc<Notify>,
    /// The listener task (and its own one-connection pool, closed with the store).
    listener: tokio::task::JoinHandle<()>,
    listener_pool: PgPool,
}

impl Drop for Pg {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

/// Takes `pool_max_conns=N` out of the URL's parameters (sqlx does not know it).
fn split_pool_size(url: &str) -> Result<(String, u32)> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_string(), DEFAULT_POOL_SIZE));
    };
    let mut size = DEFAULT_POOL_SIZE;
    let mut rest = vec![];
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("pool_max_conns", v)) => {
                size = v.parse::<u32>().ok().filter(|n| *n >= 1).ok_or_else(|| {
                    StoreError::Config(format!(
                        "the database URL's pool_max_conns must be a whole number of connections, at least 1 (it is `{v}`)"
                    ))
                })?;
            }
            _ => rest.push(pair),
        }
    }
    let url = if rest.is_empty() { base.to_string() } else { format!("{base}?{}", rest.join("&")) };
    Ok((url, size))
}

/// Wakes every poller waiting now, and leaves a permit for the next one to wait, so that a
/// poller between two waits does not miss the news.
fn wake_all(n: &Notify) {
    n.notify_waiters();
    n.notify_one();
}

/// Listens on `enlace_runs` until the store closes, reconnecting with backoff when the
/// connection drops. Notifications sent while it was away are lost, so every reconnection
/// wakes the pollers too (they then look for due work themselves).
async fn listen_loop(pool: PgPool, first: PgListener, wake: Arc<Notify>) {
    let mut listener = Some(first);
    let mut backoff = Duration::from_millis(100);
    loop {
        let l = match listener.as_mut() {
            Some(l) => l,
            None => {
                let attempt = async {
                    let mut l = PgListener::connect_with(&pool).await?;
                    l.listen(CHANNEL).await?;
                    Ok::<_, sqlx::Error>(l)
                };
                match attempt.await {
                    Ok(l) => {
                        tracing::info!("listening for run wake-ups from PostgreSQL again");
                        backoff = Duration::from_millis(100);
                        wake_all(&wake);
                        listener.insert(l)
                    }
                    Err(sqlx::Error::PoolClosed) => return,
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot listen for run wake-ups from PostgreSQL; retrying (pollers fall back to polling)");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                        continue;
                    }
                }
            }
        };
        match l.try_recv().await {
            Ok(Some(_)) => wake_all(&wake),
            Ok(None) => {
                // The connection dropped and PgListener made a new one.
                tracing::warn!("the PostgreSQL connection for run wake-ups dropped and was reconnected");
                wake_all(&wake);
            }
            Err(sqlx::Error::PoolClosed) => return,
            Err(e) => {
                tracing::warn!(error = %e, "lost the PostgreSQL connection for run wake-ups; reconnecting");
                listener = None;
            }
        }
    }
}

/// Maps PostgreSQL errors that are the caller's input to `Invalid`.
fn pg_err(e: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(d) = &e
        && d.code().as_deref() == Some("22021")
    {
        return StoreError::Invalid("a text value contains the NUL character (\\u0000), which PostgreSQL cannot store; remove it".into());
    }
    e.into()
}

fn is_unique_violation(e: &sqlx::Error, constraint: Option<&str>) -> bool {
    match e {
        sqlx::Error::Database(d) if d.is_unique_violation() => constraint.is_none() || d.constraint() == constraint,
        _ => false,
    }
}

// ---- rows ----

macro_rules! recipe_cols {
    () => {
        "id, version, enabled, origin, hook_path, event_name, is_cron, created_at, updated_at"
    };
}

fn recipe_row(r: &PgRow) -> RecipeRow {
    RecipeRow {
        id: r.get("id"),
        version: r.get("version"),
        enabled: r.get("enabled"),
        origin: r.get("origin"),
        hook_path: r.get("hook_path"),
        event_name: r.get("event_name"),
        is_cron: r.get("is_cron"),
        created_at: r.get("created_at"),
        updated_at: r.get("updated_at"),
    }
}

macro_rules! run_cols {
    () => {
        "id, recipe_id, recipe_version, event_id, status, due_at, attempt, owner, replay_of, error, created_at, started_at, finished_at, updated_at"
    };
}

fn run_row(r: &PgRow) -> RunRow {
    let status: String = r.get("status");
    RunRow {
        id: r.get("id"),
        recipe_id: r.get("recipe_id"),
        recipe_version: r.get("recipe_version"),
        event_id: r.get("event_id"),
        status: RunStatus::parse(&status).unwrap_or(RunStatus::Failed),
        due_at: r.get("due_at"),
        attempt: r.get("attempt"),
        owner: r.get("owner"),
        replay_of: r.get("replay_of"),
        error: parse_json(r.get("error")),
        created_at: r.get("created_at"),
        started_at: r.get("started_at"),
        finished_at: r.get("finished_at"),
        updated_at: r.get("updated_at"),
    }
}

fn step_row(r: &PgRow) -> StepRecord {
    let status: String = r.get("status");
    StepRecord {
        key: r.get("key"),
        seq: r.get("seq"),
        step_id: r.get("step_id"),
        kind: r.get("kind"),
        status: StepStatus::parse(&status).unwrap_or(StepStatus::Failed),
        input: parse_json(r.get("input")),
        output: parse_json(r.get("output")),
        error: parse_json(r.get("error")),
        attempts: r.get("attempts"),
        idempotency_key: r.get("idempotency_key"),
        started_at: r.get("started_at"),
        finished_at: r.get("finished_at"),
    }
}

macro_rules! connection_cols {
    () => {
        "id, app, name, status, status_message, tested_at, rate_calls, rate_per_ms, created_at, updated_at"
    };
}

fn connection_row(r: &PgRow) -> ConnectionRow {
    ConnectionRow {
        id: r.get("id"),
        app: r.get("app"),
        name: r.get("name"),
        status: r.get("status"),
        status_message: r.get("status_message"),
        tested_at: r.get("tested_at"),
        rate_limit: crate::rate_spec(r.get("rate_calls"), r.get("rate_per_ms")),
        created_at: r.get("created_at"),
        updated_at: r.get("updated_at"),
    }
}

fn token_row(r: &PgRow) -> TokenRow {
    TokenRow { id: r.get("id"), name: r.get("name"), created_at: r.get("created_at"), last_used_at: r.get("last_used_at") }
}

// ---- the statements of the hot writes ----

/// New events and their runs as columns, bound as arrays and unnested in SQL: any number
/// of them in one statement.
struct EventColumns {
    event_id: Vec<String>,
    run_id: Vec<String>,
    recipe_id: Vec<String>,
    recipe_version: Vec<i64>,
    source: Vec<String>,
    dedupe_key: Vec<Option<String>>,
    payload: Vec<String>,
    now: Vec<i64>,
    owner: Vec<Option<String>>,
    lease_until: Vec<Option<i64>>,
}

impl EventColumns {
    fn new(events: Vec<NewEvent>) -> EventColumns {
        let n = events.len();
        let mut c = EventColumns {
            event_id: Vec::with_capacity(n),
            run_id: Vec::with_capacity(n),
            recipe_id: Vec::with_capacity(n),
            recipe_version: Vec::with_capacity(n),
            source: Vec::with_capacity(n),
            dedupe_key: Vec::with_capacity(n),
            payload: Vec::with_capacity(n),
            now: Vec::with_capacity(n),
            owner: Vec::with_capacity(n),
            lease_until: Vec::with_capacity(n),
        };
        for e in events {
            c.event_id.push(new_id());
            c.run_id.push(new_id());
            c.lease_until.push(e.owner.as_ref().map(|_| e.now + e.lease_ms));
            c.recipe_id.push(e.recipe_id);
            c.recipe_version.push(e.recipe_version);
            c.source.push(e.source);
            c.dedupe_key.push(e.dedupe_key);
            c.payload.push(e.payload);
            c.now.push(e.now);
            c.owner.push(e.owner);
        }
        c
    }

    /// Pushes the `src`, `ev` and `er` clauses (after a `WITH` or a comma): the events
    /// inserted unless their dedupe key was seen (`gate` may add a condition), and a run for
    /// each event inserted: `running` for its owner, else `queued`, due now. `er` returns
    /// the runs stored.
    fn push_ctes(self, q: &mut QueryBuilder<Postgres>, gate: &str) {
        q.push("src AS (SELECT * FROM UNNEST(");
        q.push_bind(self.event_id).push("::text[], ");
        q.push_bind(self.run_id).push("::text[], ");
        q.push_bind(self.recipe_id).push("::text[], ");
        q.push_bind(self.recipe_version).push("::int8[], ");
        q.push_bind(self.source).push("::text[], ");
        q.push_bind(self.dedupe_key).push("::text[], ");
        q.push_bind(self.payload).push("::text[], ");
        q.push_bind(self.now).push("::int8[], ");
        q.push_bind(self.owner).push("::text[], ");
        q.push_bind(self.lease_until).push("::int8[]");
        q.push(
            ") AS u(event_id, run_id, recipe_id, recipe_version, source, dedupe_key, payload, now, owner, lease_until)),
             ev AS (INSERT INTO events (id, recipe_id, source, dedupe_key, payload, received_at)
                    SELECT event_id, recipe_id, source, dedupe_key, payload, now FROM src ",
        );
        q.push(gate);
        q.push(
            " ON CONFLICT DO NOTHING RETURNING id),
             er AS (INSERT INTO runs (id, recipe_id, recipe_version, event_id, status, due_at, owner, lease_until, created_at, started_at, updated_at)
                    SELECT s.run_id, s.recipe_id, s.recipe_version, s.event_id,
                           CASE WHEN s.owner IS NULL THEN 'queued' ELSE 'running' END, s.now, s.owner, s.lease_until, s.now,
                           CASE WHEN s.owner IS NULL THEN NULL ELSE s.now END, s.now
                    FROM src s JOIN ev ON ev.id = s.event_id
                    RETURNING id, event_id, owner, due_at)",
        );
    }
}

/// The select-list item that sends one notification (the earliest due time) when the
/// relation `notes(due_at)` has rows, and counts it.
macro_rules! notify_notes {
    () => {
        "(SELECT count(*) FROM (SELECT pg_notify('enlace_runs', MIN(due_at)::text) FROM notes HAVING count(*) > 0) n) AS notified"
    };
}
const NOTIFY_NOTES: &str = notify_notes!();

/// Sends back to the queue (due `$1`, no owner) the running runs `$target` selects, which
/// must lock them in id order (so that two such writes never deadlock), with one
/// notification if any; returns their number as `n`.
macro_rules! requeue_sql {
    ($target:literal) => {
        concat!(
            "WITH picked AS MATERIALIZED (",
            $target,
            "), back AS (UPDATE runs SET status = 'queued', due_at = $1, owner = NULL, lease_until = NULL, updated_at = $1
               FROM picked WHERE runs.id = picked.id AND runs.status = 'running' RETURNING runs.due_at),
             notes AS (SELECT due_at FROM back)
             SELECT (SELECT count(*) FROM back) AS n, ",
            notify_notes!()
        )
    };
}

/// Pushes the `st` clause: upserts the journal rows of `run_id`, if the `mine` clause moved
/// the run. A key given twice keeps its last record (as applying them in order would).
fn push_steps_cte(q: &mut QueryBuilder<Postgres>, run_id: &str, steps: Vec<StepRecord>) {
    let mut last: BTreeMap<String, usize> = BTreeMap::new();
    for (i, s) in steps.iter().enumerate() {
        last.insert(s.key.clone(), i);
    }
    let steps: Vec<StepRecord> = steps.into_iter().enumerate().filter(|(i, s)| last.get(&s.key) == Some(i)).map(|(_, s)| s).collect();
    let n = steps.len();
    let mut key = Vec::with_capacity(n);
    let mut seq = Vec::with_capacity(n);
    let mut step_id = Vec::with_capacity(n);
    let mut kind = Vec::with_capacity(n);
    let mut status = Vec::with_capacity(n);
    let mut input = Vec::with_capacity(n);
    let mut output = Vec::with_capacity(n);
    let mut error = Vec::with_capacity(n);
    let mut attempts = Vec::with_capacity(n);
    let mut idem = Vec::with_capacity(n);
    let mut started = Vec::with_capacity(n);
    let mut finished = Vec::with_capacity(n);
    for s in steps {
        status.push(s.status.as_str().to_string());
        input.push(s.input.as_ref().map(json_text));
        output.push(s.output.as_ref().map(json_text));
        error.push(s.error.as_ref().map(json_text));
        key.push(s.key);
        seq.push(s.seq);
        step_id.push(s.step_id);
        kind.push(s.kind);
        attempts.push(s.attempts);
        idem.push(s.idempotency_key);
        started.push(s.started_at);
        finished.push(s.finished_at);
    }
    q.push(
        "st AS (INSERT INTO steps (run_id, key, seq, step_id, kind, status, input, output, error, attempts, idempotency_key, started_at, finished_at)
         SELECT ",
    );
    q.push_bind(run_id.to_string()).push("::text, u.* FROM UNNEST(");
    q.push_bind(key).push("::text[], ");
    q.push_bind(seq).push("::int8[], ");
    q.push_bind(step_id).push("::text[], ");
    q.push_bind(kind).push("::text[], ");
    q.push_bind(status).push("::text[], ");
    q.push_bind(input).push("::text[], ");
    q.push_bind(output).push("::text[], ");
    q.push_bind(error).push("::text[], ");
    q.push_bind(attempts).push("::int8[], ");
    q.push_bind(idem).push("::text[], ");
    q.push_bind(started).push("::int8[], ");
    q.push_bind(finished).push("::int8[]");
    q.push(
        ") AS u WHERE EXISTS (SELECT 1 FROM mine)
         ON CONFLICT (run_id, key) DO UPDATE SET status = excluded.status, input = excluded.input, output = excluded.output,
           error = excluded.error, attempts = excluded.attempts, idempotency_key = excluded.idempotency_key,
           started_at = excluded.started_at, finished_at = excluded.finished_at)",
    );
}

impl Pg {
    pub(crate) fn secret_box(&self) -> &SecretBox {
        &self.secrets
    }

    pub(crate) async fn open(url: &str, secrets: SecretBox) -> Result<Pg> {
        let (url, pool_size) = split_pool_size(url)?;
        let shown = redact_url(&url);
        let opts = PgConnectOptions::from_str(&url)
            .map_err(|e| StoreError::Config(format!("invalid PostgreSQL URL `{shown}`: {e}")))?
            .application_name("enlace")
            // Statements are not logged: the hot path runs thousands a second.
            .log_statements(log::LevelFilter::Off);
        let unreachable = |e: sqlx::Error| {
            StoreError::Config(format!(
                "cannot connect to PostgreSQL at `{shown}`: {e}; check that the server runs and accepts connections there, and the URL's user, password and database"
            ))
        };
        // One connection first: it says at once what is wrong (refused, authentication,
        // no such database), where the pool would retry until its timeout.
        let probe = PgConnection::connect_with(&opts).await.map_err(unreachable)?;
        let _ = probe.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(pool_size)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(opts.clone())
            .await
            .map_err(unreachable)?;
        // Several nodes may start at once: the migrator's advisory lock lets one apply.
        // (`run_direct` on a connection is `run` without its `Acquire` bound, which would
        // make `Store::open`'s future not `Send` for every lifetime, so not spawnable.)
        let mut conn = pool.acquire().await?;
        MIGRATOR.run_direct(None, &mut *conn, false).await?;
        check_secret_key(&mut conn, &secrets).await?;
        drop(conn);
        let listener_pool =
            PgPoolOptions::new().max_connections(1).max_lifetime(None).idle_timeout(None).connect_with(opts).await.map_err(unreachable)?;
        let mut first = PgListener::connect_with(&listener_pool).await.map_err(unreachable)?;
        // Subscribed before `open` returns: nothing sent after it is missed.
        first.listen(CHANNEL).await?;
        let wake = Arc::new(Notify::new());
        let listener = tokio::spawn(listen_loop(listener_pool.clone(), first, wake.clone()));
        Ok(Pg { pool, secrets, wake, listener, listener_pool })
    }

    pub(crate) fn wakeups(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    pub(crate) async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub(crate) async fn close(&self) {
        self.listener.abort();
        self.listener_pool.close().await;
        self.pool.close().await;
    }

    pub(crate) async fn db_now_ms(&self) -> Result<Millis> {
        Ok(sqlx::query_scalar("SELECT (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT").fetch_one(&self.pool).await?)
    }

    // ---- recipes ----

    pub(crate) async fn save_recipe(&self, r: SaveRecipe, now: Millis) -> Result<Saved> {
        let body = json_text(&r.body);
        let dig = digest(&body);
        let mut tx = self.pool.begin().await?;
        // Nodes that start together each save the recipe files they load: one at a time
        // per recipe, so the second sees the first's version.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('enlace recipe ' || $1))").bind(&r.id).execute(&mut *tx).await?;
        let existing = sqlx::query(concat!("SELECT ", recipe_cols!(), " FROM recipes WHERE id = $1"))
            .bind(&r.id)
            .fetch_optional(&mut *tx)
            .await?
            .map(|row| recipe_row(&row));
        let current_digest: Option<String> = match &existing {
            Some(e) => {
                sqlx::query_scalar("SELECT digest FROM recipe_versions WHERE recipe_id = $1 AND version = $2")
                    .bind(&r.id)
                    .bind(e.version)
                    .fetch_optional(&mut *tx)
                    .await?
            }
            None => None,
        };
        let new_version = current_digest.as_deref() != Some(dig.as_str());
        let version = match (&existing, new_version) {
            (Some(e), false) => e.version,
            (Some(_), true) => {
                let max: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM recipe_versions WHERE recipe_id = $1")
                    .bind(&r.id)
                    .fetch_one(&mut *tx)
                    .await?;
                max + 1
            }
            (None, _) => 1,
        };
        let res = if existing.is_none() {
            sqlx::query("INSERT INTO recipes (id, version, enabled, origin, hook_path, event_name, is_cron, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)")
                .bind(&r.id)
                .bind(version)
                .bind(r.enabled)
                .bind(&r.origin)
                .bind(&r.hook_path)
                .bind(&r.event_name)
                .bind(r.cron.is_some())
                .bind(now)
                .execute(&mut *tx)
                .await
        } else {
            // An unchanged body keeps the recipe's switch as it is (a user may have disabled
            // it through the API since the file was loaded).
            let enabled = if new_version { r.enabled } else { existing.as_ref().is_some_and(|e| e.enabled) };
            sqlx::query("UPDATE recipes SET version = $1, enabled = $2, origin = $3, hook_path = $4, event_name = $5, is_cron = $6, updated_at = $7 WHERE id = $8")
                .bind(version)
                .bind(enabled)
                .bind(&r.origin)
                .bind(&r.hook_path)
                .bind(&r.event_name)
                .bind(r.cron.is_some())
                .bind(now)
                .bind(&r.id)
                .execute(&mut *tx)
                .await
        };
        if let Err(e) = res {
            if is_unique_violation(&e, Some("recipes_hook_path")) {
                tx.rollback().await?;
                let other: Option<String> = sqlx::query_scalar("SELECT id FROM recipes WHERE hook_path = $1 AND enabled AND id <> $2")
                    .bind(&r.hook_path)
                    .bind(&r.id)
                    .fetch_optional(&self.pool)
                    .await?;
                return Err(StoreError::Conflict(format!(
                    "the webhook path `{}` is already used by the enabled recipe `{}`; choose another `path`, or disable that recipe",
                    r.hook_path.as_deref().unwrap_or(""),
                    other.unwrap_or_default()
                )));
            }
            tx.rollback().await?;
            return Err(pg_err(e));
        }
        if new_version {
            sqlx::query("INSERT INTO recipe_versions (recipe_id, version, body, digest, created_at) VALUES ($1, $2, $3, $4, $5)")
                .bind(&r.id)
                .bind(version)
                .bind(&body)
                .bind(&dig)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(pg_err)?;
        }
        match &r.cron {
            Some(cron) => {
                // Keep the pending tick when the schedule did not change.
                sqlx::query(
                    "INSERT INTO schedules (recipe_id, next_at, expression, timezone) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (recipe_id) DO UPDATE SET
                       next_at = CASE WHEN schedules.expression = excluded.expression AND schedules.timezone = excluded.timezone THEN schedules.next_at ELSE excluded.next_at END,
                       expression = excluded.expression, timezone = excluded.timezone",
                )
                .bind(&r.id)
                .bind(cron.next_at)
                .bind(&cron.expression)
                .bind(&cron.timezone)
                .execute(&mut *tx)
                .await
                .map_err(pg_err)?;
            }
            None => {
                sqlx::query("DELETE FROM schedules WHERE recipe_id = $1").bind(&r.id).execute(&mut *tx).await?;
            }
        }
        let row = sqlx::query(concat!("SELECT ", recipe_cols!(), " FROM recipes WHERE id = $1")).bind(&r.id).fetch_one(&mut *tx).await?;
        tx.commit().await?;
        Ok(Saved { recipe: recipe_row(&row), new_version })
    }

    pub(crate) async fn get_recipe(&self, id: &str) -> Result<Option<RecipeRow>> {
        let row =
            sqlx::query(concat!("SELECT ", recipe_cols!(), " FROM recipes WHERE id = $1")).bind(id).fetch_optional(&self.pool).await?;
        Ok(row.map(|r| recipe_row(&r)))
    }

    pub(crate) async fn list_recipes(&self) -> Result<Vec<RecipeRow>> {
        let rows = sqlx::query(concat!("SELECT ", recipe_cols!(), " FROM recipes ORDER BY id")).fetch_all(&self.pool).await?;
        Ok(rows.iter().map(recipe_row).collect())
    }

    pub(crate) async fn recipe_version(&self, id: &str, version: i64) -> Result<Option<RecipeVersion>> {
        let row = sqlx::query("SELECT recipe_id, version, body, created_at FROM recipe_versions WHERE recipe_id = $1 AND version = $2")
            .bind(id)
            .bind(version)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| RecipeVersion {
            recipe_id: r.get("recipe_id"),
            version: r.get("version"),
            body: parse_json(r.get("body")).unwrap_or(Value::Null),
            created_at: r.get("created_at"),
        }))
    }

    pub(crate) async fn recipe_versions(&self, id: &str) -> Result<Vec<RecipeVersion>> {
        let rows = sqlx::query("SELECT recipe_id, version, body, created_at FROM recipe_versions WHERE recipe_id = $1 ORDER BY version")
            .bind(id)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|r| RecipeVersion {
                recipe_id: r.get("recipe_id"),
                version: r.get("version"),
                body: parse_json(r.get("body")).unwrap_or(Value::Null),
                created_at: r.get("created_at"),
            })
            .collect())
    }

    pub(crate) async fn set_enabled(&self, id: &str, enabled: bool, now: Millis) -> Result<Option<RecipeRow>> {
        let res = sqlx::query(concat!("UPDATE recipes SET enabled = $1, updated_at = $2 WHERE id = $3 RETURNING ", recipe_cols!()))
            .bind(enabled)
            .bind(now)
            .bind(id)
            .fetch_optional(&self.pool)
            .await;
        match res {
            Ok(row) => Ok(row.map(|r| recipe_row(&r))),
            Err(e) if is_unique_violation(&e, Some("recipes_hook_path")) => Err(StoreError::Conflict(format!(
                "`{id}` cannot be enabled: another enabled recipe uses the same webhook path; disable it or change one of the paths"
            ))),
            Err(e) => Err(e.into()),
        }
    }

    pub(crate) async fn recipes_updated_at(&self) -> Result<Millis> {
        let v: Option<i64> = sqlx::query_scalar("SELECT MAX(updated_at) FROM recipes").fetch_one(&self.pool).await?;
        Ok(v.unwrap_or(0))
    }

    // ---- inbox and queue ----

    /// One statement: the event, its run, and the wake-up when the run is queued. A seen
    /// dedupe key inserts nothing (a concurrent insert of the same key waits for the first
    /// to commit), and a second statement finds the first run.
    pub(crate) async fn accept_event(&self, e: NewEvent) -> Result<Accepted> {
        let (recipe_id, dedupe_key) = (e.recipe_id.clone(), e.dedupe_key.clone());
        let mut q = QueryBuilder::<Postgres>::new("WITH ");
        EventColumns::new(vec![e]).push_ctes(&mut q, "");
        q.push(", notes AS (SELECT due_at FROM er WHERE owner IS NULL) SELECT er.id AS run_id, er.event_id, ");
        q.push(NOTIFY_NOTES);
        q.push(" FROM er");
        if let Some(r) = q.build().fetch_optional(&self.pool).await.map_err(pg_err)? {
            return Ok(Accepted { run_id: r.get("run_id"), event_id: r.get("event_id"), duplicate: false });
        }
        self.first_run(&recipe_id, dedupe_key.as_deref()).await
    }

    /// The event and run stored first under a dedupe key.
    async fn first_run(&self, recipe_id: &str, dedupe_key: Option<&str>) -> Result<Accepted> {
        let row = sqlx::query(
            "SELECT e.id AS event_id, r.id AS run_id FROM events e JOIN runs r ON r.event_id = e.id WHERE e.recipe_id = $1 AND e.dedupe_key = $2 ORDER BY r.created_at, r.id LIMIT 1",
        )
        .bind(recipe_id)
        .bind(dedupe_key)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(r) => Ok(Accepted { run_id: r.get("run_id"), event_id: r.get("event_id"), duplicate: true }),
            None => Err(StoreError::Database("an event was neither stored nor a duplicate of a stored one".into())),
        }
    }

    pub(crate) async fn claim_due(&self, owner: &str, now: Millis, limit: i64, lease_ms: i64) -> Result<Vec<Claimed>> {
        // The CTE is materialized so the locking SELECT runs exactly once; SKIP LOCKED lets
        // nodes claiming at once take different runs without waiting on each other.
        let rows = sqlx::query(
            "WITH picked AS MATERIALIZED (
                 SELECT id FROM runs WHERE status IN ('queued', 'waiting') AND due_at <= $3 ORDER BY due_at LIMIT $4 FOR UPDATE SKIP LOCKED
             )
             UPDATE runs SET status = 'running', owner = $1, lease_until = $2, started_at = COALESCE(started_at, $3), updated_at = $3
             FROM picked WHERE runs.id = picked.id AND runs.status IN ('queued', 'waiting')
             RETURNING runs.id, runs.recipe_id, runs.recipe_version",
        )
        .bind(owner)
        .bind(now + lease_ms)
        .bind(now)
        // As on SQLite, a negative limit is no limit.
        .bind((limit >= 0).then_some(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| Claimed { run_id: r.get("id"), recipe_id: r.get("recipe_id"), recipe_version: r.get("recipe_version") })
            .collect())
    }

    pub(crate) async fn next_due_at(&self) -> Result<Option<Millis>> {
        Ok(sqlx::query_scalar("SELECT MIN(due_at) FROM runs WHERE status IN ('queued', 'waiting')").fetch_one(&self.pool).await?)
    }

    pub(crate) async fn get_run(&self, run_id: &str) -> Result<Option<RunRow>> {
        let row = sqlx::query(concat!("SELECT ", run_cols!(), " FROM runs WHERE id = $1")).bind(run_id).fetch_optional(&self.pool).await?;
        Ok(row.map(|r| run_row(&r)))
    }

    pub(crate) async fn run_detail(&self, run_id: &str) -> Result<Option<RunDetail>> {
        let mut c = self.pool.acquire().await?;
        let Some(run) = sqlx::query(concat!("SELECT ", run_cols!(), " FROM runs WHERE id = $1"))
            .bind(run_id)
            .fetch_optional(&mut *c)
            .await?
            .map(|r| run_row(&r))
        else {
            return Ok(None);
        };
        let e = sqlx::query("SELECT id, recipe_id, source, dedupe_key, payload, received_at FROM events WHERE id = $1")
            .bind(&run.event_id)
            .fetch_one(&mut *c)
            .await?;
        let event = EventRow {
            id: e.get("id"),
            recipe_id: e.get("recipe_id"),
            source: e.get("source"),
            dedupe_key: e.get("dedupe_key"),
            payload: parse_json(e.get("payload")).unwrap_or(Value::Null),
            received_at: e.get("received_at"),
        };
        let steps = sqlx::query(
            "SELECT key, seq, step_id, kind, status, input, output, error, attempts, idempotency_key, started_at, finished_at FROM steps WHERE run_id = $1 ORDER BY seq",
        )
        .bind(run_id)
        .fetch_all(&mut *c)
        .await?
        .iter()
        .map(step_row)
        .collect();
        Ok(Some(RunDetail { run, event, steps }))
    }

    /// The write of a run its owner holds, in one statement: `mine` moves the run (or only
    /// touches it) if `owner` still holds it; the journal rows and the emitted events go in
    /// only if it did; a notification goes out when the run was parked or an emitted run
    /// was queued. Returns whether the owner held the run.
    async fn write_owned(
        &self,
        run_id: &str,
        owner: &str,
        steps: Vec<StepRecord>,
        update: Option<RunUpdate>,
        emitted: Vec<NewEvent>,
        now: Millis,
    ) -> Result<bool> {
        let mut q = QueryBuilder::<Postgres>::new("WITH mine AS (UPDATE runs SET ");
        match update {
            None => {
                q.push("updated_at = ").push_bind(now);
            }
            Some(RunUpdate::Finish { status, error }) => {
                q.push("status = ").push_bind(status.as_str());
                q.push(", error = ").push_bind(error.as_ref().map(json_text));
                q.push(", finished_at = ").push_bind(now);
                q.push(", due_at = NULL, owner = NULL, lease_until = NULL, updated_at = ").push_bind(now);
            }
            Some(RunUpdate::Park { status, due_at }) => {
                q.push("status = ").push_bind(status.as_str());
                q.push(", due_at = ").push_bind(due_at);
                q.push(", owner = NULL, lease_until = NULL, updated_at = ").push_bind(now);
            }
            Some(RunUpdate::Hold { connection }) => {
                q.push("status = 'waiting', due_at = NULL, held_connection = ").push_bind(connection);
                q.push(", owner = NULL, lease_until = NULL, updated_at = ").push_bind(now);
            }
        }
        q.push(" WHERE id = ").push_bind(run_id.to_string());
        q.push(" AND status = 'running' AND owner = ").push_bind(owner.to_string());
        q.push(" RETURNING status, due_at)");
        if !steps.is_empty() {
            q.push(", ");
            push_steps_cte(&mut q, run_id, steps);
        }
        let emits = !emitted.is_empty();
        if emits {
            q.push(", ");
            EventColumns::new(emitted).push_ctes(&mut q, "WHERE EXISTS (SELECT 1 FROM mine)");
        }
        q.push(", notes AS (SELECT due_at FROM mine WHERE status IN ('queued', 'waiting') AND due_at IS NOT NULL");
        if emits {
            q.push(" UNION ALL SELECT due_at FROM er WHERE owner IS NULL");
        }
        q.push(") SELECT (SELECT count(*) FROM mine) AS moved, ");
        q.push(NOTIFY_NOTES);
        let row = q.build().fetch_one(&self.pool).await.map_err(pg_err)?;
        Ok(row.get::<i64, _>("moved") > 0)
    }

    pub(crate) async fn record_steps(
        &self,
        run_id: &str,
        owner: &str,
        steps: Vec<StepRecord>,
        emitted: Vec<NewEvent>,
        now: Millis,
    ) -> Result<bool> {
        self.write_owned(run_id, owner, steps, None, emitted, now).await
    }

    pub(crate) async fn update_run(
        &self,
        run_id: &str,
        owner: &str,
        steps: Vec<StepRecord>,
        update: RunUpdate,
        emitted: Vec<NewEvent>,
        now: Millis,
    ) -> Result<bool> {
        self.write_owned(run_id, owner, steps, Some(update), emitted, now).await
    }

    pub(crate) async fn heartbeat(&self, owner: &str, now: Millis, lease_ms: i64) -> Result<u64> {
        let r = sqlx::query(
            "WITH picked AS MATERIALIZED (SELECT id FROM runs WHERE status = 'running' AND owner = $1 ORDER BY id FOR UPDATE)
             UPDATE runs SET lease_until = $2 FROM picked WHERE runs.id = picked.id AND runs.status = 'running' AND runs.owner = $1",
        )
        .bind(owner)
        .bind(now + lease_ms)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    pub(crate) async fn reap_expired(&self, now: Millis) -> Result<u64> {
        // A run locked by someone else is being written (by its owner, alive after all) or
        // reaped by another node: skipped either way.
        let row = sqlx::query(requeue_sql!(
            "SELECT id FROM runs WHERE status = 'running' AND lease_until < $1 ORDER BY id FOR UPDATE SKIP LOCKED"
        ))
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.get::<i64, _>("n") as u64)
    }

    pub(crate) async fn release_owned(&self, owner: &str, now: Millis) -> Result<u64> {
        let row = sqlx::query(requeue_sql!("SELECT id FROM runs WHERE status = 'running' AND owner = $2 ORDER BY id FOR UPDATE"))
            .bind(now)
            .bind(owner)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.get::<i64, _>("n") as u64)
    }

    pub(crate) async fn recover_orphans(&self, now: Millis) -> Result<u64> {
        let row = sqlx::query(requeue_sql!("SELECT id FROM runs WHERE status = 'running' ORDER BY id FOR UPDATE"))
            .bind(now)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.get::<i64, _>("n") as u64)
    }

    // ---- schedules ----

    pub(crate) async fn due_schedules(&self, now: Millis) -> Result<Vec<(String, Millis)>> {
        let rows = sqlx::query(
            "SELECT s.recipe_id, s.next_at FROM schedules s JOIN recipes r ON r.id = s.recipe_id WHERE r.enabled AND s.next_at <= $1 ORDER BY s.next_at",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(|r| (r.get("recipe_id"), r.get("next_at"))).collect())
    }

    /// One statement: the schedule moves from `expected` to `next` only if it is still at
    /// `expected` (a node that comes second waits for the first's row lock, then finds it
    /// moved and fires nothing), and the event and run go in only if it moved. The event's
    /// dedupe key (`cron:{tick}`) guards a second time.
    pub(crate) async fn fire_schedule(&self, recipe_id: &str, expected: Millis, next: Millis, event: NewEvent) -> Result<Option<Accepted>> {
        let dedupe_key = event.dedupe_key.clone();
        let mut q = QueryBuilder::<Postgres>::new("WITH sched AS (UPDATE schedules SET next_at = ");
        q.push_bind(next);
        q.push(" WHERE recipe_id = ").push_bind(recipe_id.to_string());
        q.push(" AND next_at = ").push_bind(expected);
        q.push(" RETURNING recipe_id), ");
        EventColumns::new(vec![event]).push_ctes(&mut q, "WHERE EXISTS (SELECT 1 FROM sched)");
        q.push(
            ", notes AS (SELECT due_at FROM er WHERE owner IS NULL)
             SELECT (SELECT count(*) FROM sched) AS fired, (SELECT id FROM er LIMIT 1) AS run_id, (SELECT event_id FROM er LIMIT 1) AS event_id, ",
        );
        q.push(NOTIFY_NOTES);
        let row = q.build().fetch_one(&self.pool).await.map_err(pg_err)?;
        if row.get::<i64, _>("fired") == 0 {
            return Ok(None);
        }
        match row.get::<Option<String>, _>("run_id") {
            Some(run_id) => Ok(Some(Accepted { run_id, event_id: row.get("event_id"), duplicate: false })),
            None => self.first_run(recipe_id, dedupe_key.as_deref()).await.map(Some),
        }
    }

    // ---- run history ----

    pub(crate) async fn list_runs(&self, f: &RunFilter) -> Result<Vec<RunRow>> {
        let mut q = QueryBuilder::<Postgres>::new(concat!("SELECT ", run_cols!(), " FROM runs WHERE TRUE"));
        if let Some(r) = &f.recipe_id {
            q.push(" AND recipe_id = ").push_bind(r.clone());
        }
        if let Some(s) = f.status {
            q.push(" AND status = ").push_bind(s.as_str());
        }
        if let Some(s) = f.since {
            q.push(" AND created_at >= ").push_bind(s);
        }
        if let Some(u) = f.until {
            q.push(" AND created_at < ").push_bind(u);
        }
        if let Some(b) = &f.before {
            q.push(" AND id < ").push_bind(b.clone());
        }
        let limit = if f.limit <= 0 { 50 } else { f.limit.min(1000) };
        q.push(" ORDER BY id DESC LIMIT ").push_bind(limit);
        let rows = q.build().fetch_all(&self.pool).await.map_err(pg_err)?;
        Ok(rows.iter().map(run_row).collect())
    }

    pub(crate) async fn run_counts(&self) -> Result<BTreeMap<String, i64>> {
        let rows = sqlx::query("SELECT status, COUNT(*) AS n FROM runs GROUP BY status").fetch_all(&self.pool).await?;
        Ok(rows.iter().map(|r| (r.get::<String, _>("status"), r.get::<i64, _>("n"))).collect())
    }

    pub(crate) async fn cancel_run(&self, run_id: &str, now: Millis) -> Result<RunRow> {
        let mut tx = self.pool.begin().await?;
        let Some(run) = sqlx::query(concat!("SELECT ", run_cols!(), " FROM runs WHERE id = $1 FOR UPDATE"))
            .bind(run_id)
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| run_row(&r))
        else {
            tx.rollback().await?;
            return Err(StoreError::NotFound(format!("no run `{run_id}`")));
        };
        if run.status.is_final() {
            // Roll back now, not when the dropped transaction's connection is next used: the
            // row lock would make claimers (SKIP LOCKED) pass the run over meanwhile.
            tx.rollback().await?;
            return Err(StoreError::Conflict(format!(
                "run `{run_id}` has already ended ({}); only queued, running or waiting runs can be cancelled",
                run.status
            )));
        }
        let row = sqlx::query(concat!(
            "UPDATE runs SET status = 'cancelled', finished_at = $1, due_at = NULL, owner = NULL, lease_until = NULL, updated_at = $1, error = $2 WHERE id = $3 RETURNING ",
            run_cols!()
        ))
        .bind(now)
        .bind(json_text(&serde_json::json!({"class": "cancelled", "message": "cancelled by a user"})))
        .bind(run_id)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE steps SET status = 'cancelled', finished_at = $1 WHERE run_id = $2 AND status IN ('running', 'retrying', 'waiting')",
        )
        .bind(now)
        .bind(run_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(run_row(&row))
    }

    pub(crate) async fn replay_run(&self, run_id: &str, rp: Replay) -> Result<RunRow> {
        let mut tx = self.pool.begin().await?;
        let Some(run) = sqlx::query(concat!("SELECT ", run_cols!(), " FROM runs WHERE id = $1 FOR UPDATE"))
            .bind(run_id)
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| run_row(&r))
        else {
            tx.rollback().await?;
            return Err(StoreError::NotFound(format!("no run `{run_id}`")));
        };
        if !matches!(run.status, RunStatus::Failed | RunStatus::Cancelled) {
            // Roll back now (see cancel_run): the row stays claimable at once.
            tx.rollback().await?;
            return Err(StoreError::Conflict(format!("run `{run_id}` is {}; only failed or cancelled runs can be replayed", run.status)));
        }
        let version = rp.latest_version.unwrap_or(run.recipe_version);
        let row = sqlx::query(concat!(
            "UPDATE runs SET status = 'queued', due_at = $1, attempt = attempt + 1, recipe_version = $2, error = NULL, finished_at = NULL, owner = NULL, lease_until = NULL, updated_at = $1 WHERE id = $3 RETURNING ",
            run_cols!()
        ))
        .bind(rp.now)
        .bind(version)
        .bind(run_id)
        .fetch_one(&mut *tx)
        .await?;
        // Unfinished steps run again (a user's replay is the decision to resend a call whose
        // outcome was unknown); completed ones keep their outputs. The notification goes
        // out at commit, with the run.
        sqlx::query(
            "WITH s AS (UPDATE steps SET status = 'retrying' WHERE run_id = $1 AND status IN ('failed', 'cancelled', 'running', 'waiting'))
             SELECT pg_notify('enlace_runs', $2::int8::text)",
        )
        .bind(run_id)
        .bind(rp.now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(run_row(&row))
    }

    // ---- secrets ----

    pub(crate) async fn set_secret(&self, name: &str, value: &str, now: Millis) -> Result<()> {
        let sealed = self.secrets.seal(&format!("secret:{name}"), value.as_bytes())?;
        sqlx::query(
            "INSERT INTO secrets (name, value, created_at, updated_at) VALUES ($1, $2, $3, $3) ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        )
        .bind(name)
        .bind(&sealed)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(pg_err)?;
        Ok(())
    }

    pub(crate) async fn secrets(&self, names: &[String]) -> Result<BTreeMap<String, String>> {
        let rows =
            sqlx::query("SELECT name, value FROM secrets WHERE name = ANY($1)").bind(names).fetch_all(&self.pool).await.map_err(pg_err)?;
        let mut out = BTreeMap::new();
        for r in rows {
            let name: String = r.get("name");
            let sealed: Vec<u8> = r.get("value");
            let plain = self.secrets.open(&format!("secret:{name}"), &sealed)?;
            let value = String::from_utf8(plain).map_err(|_| StoreError::Crypto(format!("secret `{name}` is not UTF-8")))?;
            out.insert(name, value);
        }
        Ok(out)
    }

    pub(crate) async fn list_secrets(&self) -> Result<Vec<(String, Millis)>> {
        let rows = sqlx::query("SELECT name, updated_at FROM secrets ORDER BY name").fetch_all(&self.pool).await?;
        Ok(rows.iter().map(|r| (r.get("name"), r.get("updated_at"))).collect())
    }

    pub(crate) async fn delete_secret(&self, name: &str) -> Result<bool> {
        Ok(sqlx::query("DELETE FROM secrets WHERE name = $1").bind(name).execute(&self.pool).await.map_err(pg_err)?.rows_affected() > 0)
    }

    // ---- connections ----

    pub(crate) async fn create_connection(
        &self,
        id: &str,
        app: &str,
        name: &str,
        credentials: &Credentials,
        rate_limit: Option<RateSpec>,
        now: Millis,
    ) -> Result<ConnectionRow> {
        let plain = serde_json::to_vec(credentials).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let sealed = self.secrets.seal(&format!("connection:{id}"), &plain)?;
        let res = sqlx::query(concat!(
            "INSERT INTO connections (id, app, name, credentials, status, rate_calls, rate_per_ms, created_at, updated_at) VALUES ($1, $2, $3, $4, 'untested', $5, $6, $7, $7) RETURNING ",
            connection_cols!()
        ))
        .bind(id)
        .bind(app)
        .bind(name)
        .bind(&sealed)
        .bind(rate_limit.map(|r| i64::from(r.calls)))
        .bind(rate_limit.map(|r| r.per_ms))
        .bind(now)
        .fetch_one(&self.pool)
        .await;
        match res {
            Ok(r) => Ok(connection_row(&r)),
            Err(e) if is_unique_violation(&e, None) => {
                Err(StoreError::Conflict(format!("a connection `{id}` exists already; choose another id")))
            }
            Err(e) => Err(pg_err(e)),
        }
    }

    pub(crate) async fn connection(&self, id: &str) -> Result<Option<(ConnectionRow, Credentials)>> {
        let Some(r) = sqlx::query(concat!("SELECT credentials, ", connection_cols!(), " FROM connections WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(pg_err)?
        else {
            return Ok(None);
        };
        let sealed: Vec<u8> = r.get("credentials");
        let plain = self.secrets.open(&format!("connection:{id}"), &sealed)?;
        let creds: Credentials = serde_json::from_slice(&plain).map_err(|e| StoreError::Crypto(format!("connection `{id}`: {e}")))?;
        Ok(Some((connection_row(&r), creds)))
    }

    pub(crate) async fn list_connections(&self) -> Result<Vec<ConnectionRow>> {
        let rows = sqlx::query(concat!("SELECT ", connection_cols!(), " FROM connections ORDER BY id")).fetch_all(&self.pool).await?;
        Ok(rows.iter().map(connection_row).collect())
    }

    pub(crate) async fn delete_connection(&self, id: &str) -> Result<bool> {
        Ok(sqlx::query("DELETE FROM connections WHERE id = $1").bind(id).execute(&self.pool).await.map_err(pg_err)?.rows_affected() > 0)
    }

    pub(crate) async fn rename_connection(&self, id: &str, name: &str, now: Millis) -> Result<Option<ConnectionRow>> {
        let row = sqlx::query(concat!("UPDATE connections SET name = $1, updated_at = $2 WHERE id = $3 RETURNING ", connection_cols!()))
            .bind(name)
            .bind(now)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(pg_err)?;
        Ok(row.as_ref().map(connection_row))
    }

    pub(crate) async fn set_connection_status(&self, id: &str, status: &str, message: &str, now: Millis) -> Result<Option<ConnectionRow>> {
        let row = sqlx::query(concat!(
            "UPDATE connections SET status = $1, status_message = $2, tested_at = $3, updated_at = $3 WHERE id = $4 RETURNING ",
            connection_cols!()
        ))
        .bind(status)
        .bind(message)
        .bind(now)
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(pg_err)?;
        Ok(row.as_ref().map(connection_row))
    }

    pub(crate) async fn save_connection_credentials(
        &self,
        id: &str,
        credentials: &Credentials,
        status: Option<(&str, &str)>,
        now: Millis,
    ) -> Result<Option<ConnectionRow>> {
        let plain = serde_json::to_vec(credentials).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let sealed = self.secrets.seal(&format!("connection:{id}"), &plain)?;
        let row = match status {
            Some((st, msg)) => sqlx::query(concat!(
                "UPDATE connections SET credentials = $1, status = $2, status_message = $3, tested_at = $4, updated_at = $4 WHERE id = $5 RETURNING ",
                connection_cols!()
            ))
            .bind(&sealed)
            .bind(st)
            .bind(msg)
            .bind(now)
            .bind(id),
            None => sqlx::query(concat!("UPDATE connections SET credentials = $1, updated_at = $2 WHERE id = $3 RETURNING ", connection_cols!()))
                .bind(&sealed)
                .bind(now)
                .bind(id),
        }
        .fetch_optional(&self.pool)
        .await
        .map_err(pg_err)?;
        Ok(row.as_ref().map(connection_row))
    }

    pub(crate) async fn try_refresh_lease(&self, id: &str, owner: &str, now: Millis, until: Millis) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE connections SET refresh_owner = $1, refresh_until = $2 WHERE id = $3 AND (refresh_until IS NULL OR refresh_until < $4 OR refresh_owner = $1)",
        )
        .bind(owner)
        .bind(until)
        .bind(id)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(pg_err)?;
        Ok(r.rows_affected() > 0)
    }

    pub(crate) async fn end_refresh_lease(&self, id: &str, owner: &str) -> Result<()> {
        sqlx::query("UPDATE connections SET refresh_owner = NULL, refresh_until = NULL WHERE id = $1 AND refresh_owner = $2")
            .bind(id)
            .bind(owner)
            .execute(&self.pool)
            .await
            .map_err(pg_err)?;
        Ok(())
    }

    pub(crate) async fn begin_authorization(&self, a: PendingAuthorization) -> Result<()> {
        let sealed = self.secrets.seal(&format!("oauth_state:{}", a.connection_id), a.verifier.as_bytes())?;
        let mut tx = self.pool.begin().await.map_err(pg_err)?;
        sqlx::query("DELETE FROM oauth_states WHERE expires_at < $1").bind(a.created_at).execute(&mut *tx).await.map_err(pg_err)?;
        sqlx::query(
            "INSERT INTO oauth_states (state_hash, connection_id, verifier, redirect_uri, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(token_hash(&a.state))
        .bind(&a.connection_id)
        .bind(&sealed)
        .bind(&a.redirect_uri)
        .bind(a.created_at)
        .bind(a.expires_at)
        .execute(&mut *tx)
        .await
        .map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)?;
        Ok(())
    }

    pub(crate) async fn take_authorization(&self, state: &str, now: Millis) -> Result<Option<PendingAuthorization>> {
        let Some(r) = sqlx::query(
            "DELETE FROM oauth_states WHERE state_hash = $1 RETURNING connection_id, verifier, redirect_uri, created_at, expires_at",
        )
        .bind(token_hash(state))
        .fetch_optional(&self.pool)
        .await
        .map_err(pg_err)?
        else {
            return Ok(None);
        };
        let expires_at: i64 = r.get("expires_at");
        if expires_at < now {
            return Ok(None);
        }
        let connection_id: String = r.get("connection_id");
        let sealed: Vec<u8> = r.get("verifier");
        let verifier = self.secrets.open(&format!("oauth_state:{connection_id}"), &sealed)?;
        let verifier = String::from_utf8(verifier).map_err(|e| StoreError::Crypto(e.to_string()))?;
        Ok(Some(PendingAuthorization {
            state: state.to_string(),
            connection_id,
            verifier,
            redirect_uri: r.get("redirect_uri"),
            created_at: r.get("created_at"),
            expires_at,
        }))
    }

    pub(crate) async fn release_held_runs(&self, connection: &str, now: Millis) -> Result<u64> {
        let row = sqlx::query(concat!(
            "WITH notes AS (UPDATE runs SET status = 'queued', due_at = $1, held_connection = NULL, updated_at = $1 ",
            "WHERE held_connection = $2 AND status = 'waiting' RETURNING due_at) SELECT (SELECT count(*) FROM notes) AS n, ",
            notify_notes!()
        ))
        .bind(now)
        .bind(connection)
        .fetch_one(&self.pool)
        .await
        .map_err(pg_err)?;
        Ok(row.get::<i64, _>("n") as u64)
    }

    pub(crate) async fn cancel_recipe_runs(&self, recipe_id: &str, reason: &str, now: Millis) -> Result<u64> {
        let error = json_text(&serde_json::json!({"class": "cancelled", "message": reason}));
        let mut tx = self.pool.begin().await.map_err(pg_err)?;
        // Lock the runs in id order, as every multi-run write here does (no deadlock).
        sqlx::query("SELECT id FROM runs WHERE recipe_id = $1 AND status IN ('queued', 'running', 'waiting') ORDER BY id FOR UPDATE")
            .bind(recipe_id)
            .fetch_all(&mut *tx)
            .await
            .map_err(pg_err)?;
        sqlx::query("UPDATE steps SET status = 'cancelled', finished_at = $1 WHERE status IN ('running', 'retrying', 'waiting') AND run_id IN (SELECT id FROM runs WHERE recipe_id = $2 AND status IN ('queued', 'running', 'waiting'))")
            .bind(now)
            .bind(recipe_id)
            .execute(&mut *tx)
            .await
            .map_err(pg_err)?;
        let r = sqlx::query("UPDATE runs SET status = 'cancelled', finished_at = $1, due_at = NULL, owner = NULL, lease_until = NULL, held_connection = NULL, updated_at = $1, error = $2 WHERE recipe_id = $3 AND status IN ('queued', 'running', 'waiting')")
            .bind(now)
            .bind(&error)
            .bind(recipe_id)
            .execute(&mut *tx)
            .await
            .map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)?;
        Ok(r.rows_affected())
    }

    // ---- shared rate limits ----

    pub(crate) async fn rate_acquire(&self, key: &str, calls: u32, per_ms: i64) -> Result<i64> {
        let calls = i32::try_from(calls).unwrap_or(i32::MAX);
        sqlx::query_scalar("SELECT enlace_rate_acquire($1, $2, $3)")
            .bind(key)
            .bind(calls)
            .bind(per_ms)
            .fetch_one(&self.pool)
            .await
            .map_err(pg_err)
    }

    pub(crate) async fn rate_hold(&self, key: &str, until_ms: Millis) -> Result<()> {
        sqlx::query(
            "INSERT INTO rate_windows (key, held_until) VALUES ($1, $2)
             ON CONFLICT (key) DO UPDATE SET held_until = GREATEST(rate_windows.held_until, excluded.held_until)",
        )
        .bind(key)
        .bind(until_ms)
        .execute(&self.pool)
        .await
        .map_err(pg_err)?;
        Ok(())
    }

    // ---- tokens ----

    pub(crate) async fn create_token(&self, name: &str, now: Millis) -> Result<(TokenRow, String)> {
        use rand::RngCore;
        let mut raw = [0u8; 24];
        rand::rng().fill_bytes(&mut raw);
        let token = format!("enl_{}", hex::encode(raw));
        let row = TokenRow { id: new_id(), name: name.to_string(), created_at: now, last_used_at: None };
        let res = sqlx::query("INSERT INTO api_tokens (id, name, hash, created_at) VALUES ($1, $2, $3, $4)")
            .bind(&row.id)
            .bind(&row.name)
            .bind(token_hash(&token))
            .bind(now)
            .execute(&self.pool)
            .await;
        match res {
            Ok(_) => Ok((row, token)),
            Err(e) if is_unique_violation(&e, None) => {
                Err(StoreError::Conflict(format!("a token named `{}` exists already; choose another name or revoke it first", row.name)))
            }
            Err(e) => Err(pg_err(e)),
        }
    }

    pub(crate) async fn verify_token(&self, token: &str) -> Result<Option<TokenRow>> {
        let row = sqlx::query("SELECT id, name, created_at, last_used_at FROM api_tokens WHERE hash = $1")
            .bind(token_hash(token))
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(token_row))
    }

    pub(crate) async fn list_tokens(&self) -> Result<Vec<TokenRow>> {
        let rows = sqlx::query("SELECT id, name, created_at, last_used_at FROM api_tokens ORDER BY name").fetch_all(&self.pool).await?;
        Ok(rows.iter().map(token_row).collect())
    }

    pub(crate) async fn revoke_token(&self, name: &str) -> Result<bool> {
        Ok(sqlx::query("DELETE FROM api_tokens WHERE name = $1").bind(name).execute(&self.pool).await.map_err(pg_err)?.rows_affected() > 0)
    }
}

/// Refuses a secret key other than the one the store's secrets were sealed with (see
/// [`crate::secret_check`]); the first node writes the check value.
async fn check_secret_key(c: &mut PgConnection, secrets: &SecretBox) -> Result<()> {
    sqlx::query("INSERT INTO meta (key, value) VALUES ('secret_check', $1) ON CONFLICT (key) DO NOTHING")
        .bind(crate::secret_check::seal(secrets)?)
        .execute(&mut *c)
        .await?;
    let sealed: Vec<u8> = sqlx::query_scalar("SELECT value FROM meta WHERE key = 'secret_check'").fetch_one(&mut *c).await?;
    crate::secret_check::verify(secrets, &sealed)
}

#[cfg(test)]
mod tests {
    use super::split_pool_size;

    #[test]
    fn pool_size_comes_out_of_the_url() {
        assert_eq!(split_pool_size("postgres://u@h/db").unwrap(), ("postgres://u@h/db".to_string(), 10));
        assert_eq!(split_pool_size("postgres://u@h/db?pool_max_conns=3").unwrap(), ("postgres://u@h/db".to_string(), 3));
        assert_eq!(
            split_pool_size("postgres://u@h/db?sslmode=disable&pool_max_conns=25&application_name=x").unwrap(),
            ("postgres://u@h/db?sslmode=disable&application_name=x".to_string(), 25)
        );
        let e = split_pool_size("postgres://u@h/db?pool_max_conns=zero").unwrap_err().to_string();
        assert!(e.contains("pool_max_conns") && e.contains("zero"), "{e}");
        assert!(split_pool_size("postgres://u@h/db?pool_max_conns=0").is_err());
    }
}
