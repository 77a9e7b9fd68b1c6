//! The SQLite backend: one writer connection fed by a channel (group commit), a pool of
//! read-only connections, WAL mode.

use std::any::Any;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use enlace_core::Credentials;
use serde_json::Value;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, Executor, Row, SqliteConnection, SqlitePool};
use tokio::sync::{mpsc, oneshot};

mod accounts;
mod contacts;
mod gdpr;

use crate::crypto::SecretBox;
use crate::types::*;
use crate::{Result, StoreError, Synchronous, new_id, token_hash};

mod polling;
mod sends;
mod web;

crate::social::social_statements!(contacts::Tx<'_>, false);

/// The `Tx` of the shared statements over one connection.
pub(crate) fn contacts_tx(c: &mut SqliteConnection) -> contacts::Tx<'_> {
    contacts::Tx(c)
}

impl Sqlite {
    /// A connection of the read pool.
    pub(crate) async fn read_conn(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Sqlite>> {
        Ok(self.read.acquire().await?)
    }

    /// A job of the writer, in a savepoint of its own.
    pub(crate) async fn write_job<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T>> + Send + 'static,
    {
        self.write(f).await
    }
}

type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;
type Work = Box<dyn for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<Box<dyn Any + Send>>> + Send>;

struct Job {
    work: Work,
    reply: oneshot::Sender<Result<Box<dyn Any + Send>>>,
    /// Run in a savepoint, so that its failure undoes only its own writes. Jobs on the hot
    /// path (accepting, journaling, finishing runs) fail only when the database does, and
    /// skip the savepoint's two round trips: their failure rolls the whole batch back.
    isolated: bool,
}

/// Accepting an event: the hottest write, batched into multi-row inserts.
struct AcceptJob {
    event: NewEvent,
    reply: oneshot::Sender<Result<Accepted>>,
}

/// Finishing a run with its last step: the other hot write, batched the same way.
struct FinishJob {
    run_id: String,
    owner: String,
    status: RunStatus,
    error: Option<Value>,
    step: StepRecord,
    now: Millis,
    reply: oneshot::Sender<Result<bool>>,
}

enum Msg {
    Job(Job),
    Accept(Box<AcceptJob>),
    Finish(Box<FinishJob>),
    /// Commit what is pending, close the connection, answer, stop.
    Close(oneshot::Sender<()>),
}

#[derive(Default)]
struct Batch {
    jobs: Vec<Job>,
    accepts: Vec<AcceptJob>,
    finishes: Vec<FinishJob>,
}

impl Batch {
    fn len(&self) -> usize {
        self.jobs.len() + self.accepts.len() + self.finishes.len()
    }

    fn push(&mut self, m: Msg) -> Option<oneshot::Sender<()>> {
        match m {
            Msg::Job(j) => self.jobs.push(j),
            Msg::Accept(a) => self.accepts.push(*a),
            Msg::Finish(f) => self.finishes.push(*f),
            Msg::Close(done) => return Some(done),
        }
        None
    }

    /// Answers every job with the same error (nothing of the batch was written).
    fn fail(self, msg: &str) {
        for j in self.jobs {
            let _ = j.reply.send(Err(StoreError::Database(msg.to_string())));
        }
        for a in self.accepts {
            let _ = a.reply.send(Err(StoreError::Database(msg.to_string())));
        }
        for f in self.finishes {
            let _ = f.reply.send(Err(StoreError::Database(msg.to_string())));
        }
    }
}

pub(crate) struct Sqlite {
    path: PathBuf,
    read: SqlitePool,
    writer: mpsc::Sender<Msg>,
    secrets: SecretBox,
    remove_dir: Option<PathBuf>,
}

impl Drop for Sqlite {
    fn drop(&mut self) {
        if let Some(dir) = &self.remove_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Most jobs one commit carries.
const MAX_BATCH: usize = 512;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/sqlite");

impl Sqlite {
    pub(crate) fn secret_box(&self) -> &SecretBox {
        &self.secrets
    }

    pub(crate) async fn open(path: &Path, secrets: SecretBox, sync: Synchronous) -> Result<Sqlite> {
        let base = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match sync {
                Synchronous::Full => SqliteSynchronous::Full,
                Synchronous::Normal => SqliteSynchronous::Normal,
                Synchronous::Off => SqliteSynchronous::Off,
            })
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            .pragma("temp_store", "memory")
            // Page caches: 8 MiB for the writer (the hot path's inserts append to the end
            // of their trees), 4 MiB for each reader (the API and the UI); at 16 MiB each,
            // they were a sixth of the server's peak memory (bench/README.md).
            .pragma("cache_size", "-8000")
            .statement_cache_capacity(256)
            // Statements are not logged (the hot path runs thousands a second), unless
            // ENLACE_TRACE_SQL is set, to count them (CONTRIBUTING.md): the SQL text only.
            .log_statements(if std::env::var_os("ENLACE_TRACE_SQL").is_some() { log::LevelFilter::Warn } else { log::LevelFilter::Off });
        let mut conn = SqliteConnection::connect_with(&base.clone().create_if_missing(true)).await?;
        // `run_direct` is `run` without its `Acquire` bound, which would make `Store::open`'s
        // future not `Send` for every lifetime (so not spawnable).
        MIGRATOR.run_direct(None, &mut conn, false).await?;
        check_secret_key(&mut conn, &secrets).await?;
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            .min_connections(1)
            .connect_with(base.clone().read_only(true).pragma("cache_size", "-4000"))
            .await?;
        let (tx, rx) = mpsc::channel::<Msg>(8192);
        tokio::spawn(writer(conn, rx));
        Ok(Sqlite { path: path.to_path_buf(), read, writer: tx, secrets, remove_dir: None })
    }

    pub(crate) fn remove_on_drop(&mut self, dir: PathBuf) {
        self.remove_dir = Some(dir);
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` in the writer's next transaction, in a savepoint of its own; answers after
    /// the commit.
    async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T>> + Send + 'static,
    {
        self.submit(f, true).await
    }

    /// Like `write`, without a savepoint: for jobs that fail only when the database does.
    async fn write_fast<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T>> + Send + 'static,
    {
        self.submit(f, false).await
    }

    async fn submit<T, F>(&self, f: F, isolated: bool) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T>> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let work: Work = Box::new(move |c| {
            Box::pin(async move {
                let v = f(c).await?;
                Ok(Box::new(v) as Box<dyn Any + Send>)
            })
        });
        self.writer.send(Msg::Job(Job { work, reply, isolated })).await.map_err(|_| StoreError::Closed)?;
        let out = rx.await.map_err(|_| StoreError::Closed)??;
        out.downcast::<T>().map(|b| *b).map_err(|_| StoreError::Database("internal: writer returned the wrong type".into()))
    }

    pub(crate) async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.read).await?;
        Ok(())
    }

    pub(crate) async fn db_now_ms(&self) -> Result<Millis> {
        Ok(sqlx::query_scalar("SELECT CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)").fetch_one(&self.read).await?)
    }

    pub(crate) async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.writer.send(Msg::Close(tx)).await.is_ok() {
            let _ = rx.await;
        }
        self.read.close().await;
    }
}

/// The writer: takes every job waiting, runs them in one transaction, commits once, then
/// answers each. Accepts and finishes go in as multi-row statements; other jobs one by one,
/// each in a savepoint when it may fail on its own.
async fn writer(mut conn: SqliteConnection, mut rx: mpsc::Receiver<Msg>) {
    while let Some(first) = rx.recv().await {
        let mut batch = Batch::default();
        let mut closing = batch.push(first);
        while closing.is_none() && batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(m) => closing = batch.push(m),
                Err(_) => break,
            }
        }
        if batch.len() > 0 {
            run_batch(&mut conn, batch).await;
        }
        if let Some(done) = closing.take() {
            rx.close();
            // Answer what arrived after the close request: nothing more is written.
            let mut late = Batch::default();
            while let Ok(m) = rx.try_recv() {
                let _ = late.push(m);
            }
            late.fail("the store is shutting down");
            let _ = conn.close().await;
            let _ = done.send(());
            return;
        }
    }
}

/// Most rows one multi-row statement carries (a handful of fixed sizes keeps the prepared
/// statement cache small).
const CHUNKS: [usize; 4] = [64, 16, 4, 1];

fn chunks<T>(items: Vec<T>) -> Vec<Vec<T>> {
    chunks_of(items, &CHUNKS)
}

/// A run segment journals a few entries at a time: finer sizes, one statement for up to 4.
const STEP_CHUNKS: [usize; 6] = [64, 16, 8, 4, 3, 2];

fn chunks_of<T>(mut items: Vec<T>, sizes: &[usize]) -> Vec<Vec<T>> {
    let mut out = vec![];
    while !items.is_empty() {
        let size = sizes.iter().copied().find(|c| *c <= items.len()).unwrap_or(1);
        let rest = items.split_off(size);
        out.push(items);
        items = rest;
    }
    out
}

fn placeholders(rows: usize, cols: usize) -> String {
    let row = format!("({})", vec!["?"; cols].join(", "));
    vec![row; rows].join(", ")
}

/// Stores many events and their runs: two statements per chunk. A repeated dedupe key
/// inserts nothing and answers with the first event's run.
async fn accept_many(c: &mut SqliteConnection, accepts: &[AcceptJob]) -> Result<Vec<Accepted>> {
    struct Prepared {
        event_id: String,
        run_id: String,
        payload: String,
    }
    let prepared: Vec<Prepared> =
        accepts.iter().map(|a| Prepared { event_id: new_id(), run_id: new_id(), payload: a.event.payload.clone() }).collect();
    let mut inserted: std::collections::HashSet<String> = std::collections::HashSet::with_capacity(accepts.len());
    let idx: Vec<usize> = (0..accepts.len()).collect();
    for chunk in chunks(idx.clone()) {
        let sql = format!(
            "INSERT INTO events (id, recipe_id, source, dedupe_key, payload, received_at) VALUES {} ON CONFLICT DO NOTHING RETURNING id",
            placeholders(chunk.len(), 6)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for &i in &chunk {
            let (e, p) = (&accepts[i].event, &prepared[i]);
            q = q.bind(&p.event_id).bind(&e.recipe_id).bind(&e.source).bind(&e.dedupe_key).bind(&p.payload).bind(e.now);
        }
        for row in q.fetch_all(&mut *c).await? {
            inserted.insert(row.get::<String, _>(0));
        }
    }
    let fresh: Vec<usize> = idx.iter().copied().filter(|&i| inserted.contains(&prepared[i].event_id)).collect();
    for chunk in chunks(fresh) {
        let sql = format!(
            "INSERT INTO runs (id, recipe_id, recipe_version, event_id, status, due_at, owner, lease_until, created_at, started_at, updated_at) VALUES {}",
            placeholders(chunk.len(), 11)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for &i in &chunk {
            let (e, p) = (&accepts[i].event, &prepared[i]);
            let (status, lease, started) = match &e.owner {
                Some(_) => (RunStatus::Running, Some(e.now + e.lease_ms), Some(e.now)),
                None => (RunStatus::Queued, None, None),
            };
            q = q
                .bind(&p.run_id)
                .bind(&e.recipe_id)
                .bind(e.recipe_version)
                .bind(&p.event_id)
                .bind(status.as_str())
                .bind(e.now)
                .bind(&e.owner)
                .bind(lease)
                .bind(e.now)
                .bind(started)
                .bind(e.now);
        }
        q.execute(&mut *c).await?;
    }
    let mut out = Vec::with_capacity(accepts.len());
    for (i, a) in accepts.iter().enumerate() {
        let p = &prepared[i];
        if inserted.contains(&p.event_id) {
            out.push(Accepted { run_id: p.run_id.clone(), event_id: p.event_id.clone(), duplicate: false });
            continue;
        }
        // The dedupe key was seen (possibly earlier in this very batch): the first run.
        let row = sqlx::query("SELECT e.id AS event_id, r.id AS run_id FROM events e JOIN runs r ON r.event_id = e.id WHERE e.recipe_id = ? AND e.dedupe_key = ? ORDER BY r.created_at LIMIT 1")
            .bind(&a.event.recipe_id)
            .bind(&a.event.dedupe_key)
            .fetch_optional(&mut *c)
            .await?;
        match row {
            Some(r) => out.push(Accepted { run_id: r.get("run_id"), event_id: r.get("event_id"), duplicate: true }),
            None => return Err(StoreError::Database("an event was neither stored nor a duplicate".into())),
        }
    }
    Ok(out)
}

/// Finishes many runs with their last step: two statements per chunk. A run its owner no
/// longer holds (cancelled meanwhile) is left as it is, and its step is not written.
async fn finish_many(c: &mut SqliteConnection, finishes: &[FinishJob]) -> Result<Vec<bool>> {
    let mut moved: std::collections::HashSet<String> = std::collections::HashSet::with_capacity(finishes.len());
    let idx: Vec<usize> = (0..finishes.len()).collect();
    for chunk in chunks(idx.clone()) {
        let sql = format!(
            "UPDATE runs SET status = v.column3, error = v.column4, finished_at = v.column5, due_at = NULL, owner = NULL, lease_until = NULL, updated_at = v.column5
             FROM (VALUES {}) AS v WHERE runs.id = v.column1 AND runs.status = 'running' AND runs.owner = v.column2 RETURNING runs.id",
            placeholders(chunk.len(), 5)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for &i in &chunk {
            let f = &finishes[i];
            q = q.bind(&f.run_id).bind(&f.owner).bind(f.status.as_str()).bind(f.error.as_ref().map(json_text)).bind(f.now);
        }
        for row in q.fetch_all(&mut *c).await? {
            moved.insert(row.get::<String, _>(0));
        }
    }
    let steps: Vec<(&str, &StepRecord)> =
        finishes.iter().filter(|f| moved.contains(&f.run_id)).map(|f| (f.run_id.as_str(), &f.step)).collect();
    upsert_steps(c, steps).await?;
    Ok(finishes.iter().map(|f| moved.contains(&f.run_id)).collect())
}

async fn run_batch(conn: &mut SqliteConnection, batch: Batch) {
    if let Err(e) = conn.execute("BEGIN IMMEDIATE").await {
        batch.fail(&e.to_string());
        return;
    }
    let Batch { jobs, accepts, finishes } = batch;
    let accepted = if accepts.is_empty() { Ok(vec![]) } else { accept_many(conn, &accepts).await };
    let finished = match &accepted {
        Ok(_) if !finishes.is_empty() => finish_many(conn, &finishes).await,
        _ => Ok(vec![]),
    };
    let (accepted, finished) = match (accepted, finished) {
        (Ok(a), Ok(f)) => (a, f),
        (Err(e), _) | (_, Err(e)) => {
            let _ = conn.execute("ROLLBACK").await;
            Batch { jobs, accepts, finishes }.fail(&format!("rolled back with the rest of its batch: {e}"));
            return;
        }
    };
    let single = jobs.len() == 1 && accepts.is_empty() && finishes.is_empty();
    let mut done = Vec::with_capacity(jobs.len());
    let mut rest = jobs.into_iter();
    while let Some(job) = rest.next() {
        let savepoint = job.isolated && !single;
        if savepoint && let Err(e) = conn.execute("SAVEPOINT job").await {
            done.push((job.reply, Err(e.into())));
            continue;
        }
        let r = (job.work)(conn).await;
        if savepoint {
            let end = if r.is_ok() { "RELEASE job" } else { "ROLLBACK TO job; RELEASE job" };
            if let Err(e) = conn.execute(end).await {
                tracing::error!(error = %e, "savepoint failed");
            }
        } else if let Err(e) = &r {
            // Without a savepoint, a failure may leave part of the job written: undo the
            // whole batch, and tell every job of it.
            let _ = conn.execute("ROLLBACK").await;
            let msg = format!("rolled back with the rest of its batch: {e}");
            let _ = job.reply.send(r);
            let jobs: Vec<Job> = rest.collect();
            for (reply, _) in done {
                let _ = reply.send(Err(StoreError::Database(msg.clone())));
            }
            Batch { jobs, accepts, finishes }.fail(&msg);
            return;
        }
        done.push((job.reply, r));
    }
    if single && done.iter().any(|(_, r)| r.is_err()) {
        let _ = conn.execute("ROLLBACK").await;
        for (reply, r) in done {
            let _ = reply.send(r);
        }
        return;
    }
    match conn.execute("COMMIT").await {
        Ok(_) => {
            for (reply, r) in done {
                let _ = reply.send(r);
            }
            for (a, r) in accepts.into_iter().zip(accepted) {
                let _ = a.reply.send(Ok(r));
            }
            for (f, r) in finishes.into_iter().zip(finished) {
                let _ = f.reply.send(Ok(r));
            }
        }
        Err(e) => {
            let _ = conn.execute("ROLLBACK").await;
            let msg = format!("commit failed: {e}");
            for (reply, _) in done {
                let _ = reply.send(Err(StoreError::Database(msg.clone())));
            }
            Batch { jobs: vec![], accepts, finishes }.fail(&msg);
        }
    }
}

pub(crate) fn json_text(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

pub(crate) fn parse_json(s: Option<String>) -> Option<Value> {
    s.and_then(|t| serde_json::from_str(&t).ok())
}

pub(crate) fn digest(body: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(body.as_bytes()))
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

macro_rules! recipe_cols {
    () => {
        "id, version, enabled, origin, hook_path, event_name, is_cron, created_at, updated_at"
    };
}

fn recipe_row(r: &SqliteRow) -> RecipeRow {
    RecipeRow {
        id: r.get("id"),
        version: r.get("version"),
        enabled: r.get::<i64, _>("enabled") != 0,
        origin: r.get("origin"),
        hook_path: r.get("hook_path"),
        event_name: r.get("event_name"),
        is_cron: r.get::<i64, _>("is_cron") != 0,
        created_at: r.get("created_at"),
        updated_at: r.get("updated_at"),
    }
}

macro_rules! run_cols {
    () => {
        "id, recipe_id, recipe_version, event_id, status, due_at, attempt, owner, replay_of, error, created_at, started_at, finished_at, updated_at"
    };
}

macro_rules! connection_cols {
    () => {
        "id, app, name, status, status_message, tested_at, rate_calls, rate_per_ms, created_at, updated_at"
    };
}

fn connection_row(r: &SqliteRow) -> ConnectionRow {
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

fn run_row(r: &SqliteRow) -> RunRow {
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

fn step_row(r: &SqliteRow) -> StepRecord {
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

// ---- statements shared by several operations (each takes the writer's connection) ----

/// Refuses a secret key other than the one the store's secrets were sealed with (see
/// [`crate::secret_check`]); the first start writes the check value.
async fn check_secret_key(c: &mut SqliteConnection, secrets: &SecretBox) -> Result<()> {
    let stored: Option<Vec<u8>> = sqlx::query_scalar("SELECT value FROM meta WHERE key = 'secret_check'").fetch_optional(&mut *c).await?;
    if let Some(sealed) = stored {
        return crate::secret_check::verify(secrets, &sealed);
    }
    // A store from before the check: an existing secret tells whether the key is right.
    let sample = sqlx::query("SELECT 'secret:' || name AS context, value FROM secrets UNION ALL SELECT 'connection:' || id, credentials FROM connections LIMIT 1")
        .fetch_optional(&mut *c)
        .await?;
    if let Some(r) = sample {
        crate::secret_check::verify_sample(secrets, &r.get::<String, _>("context"), &r.get::<Vec<u8>, _>("value"))?;
    }
    sqlx::query("INSERT INTO meta (key, value) VALUES ('secret_check', ?) ON CONFLICT (key) DO NOTHING")
        .bind(crate::secret_check::seal(secrets)?)
        .execute(&mut *c)
        .await?;
    Ok(())
}

async fn insert_event(c: &mut SqliteConnection, e: &NewEvent) -> Result<Accepted> {
    let event_id = new_id();
    let run_id = new_id();
    let payload = &e.payload;
    let (status, owner, lease) = match &e.owner {
        Some(o) => (RunStatus::Running, Some(o.as_str()), Some(e.now + e.lease_ms)),
        None => (RunStatus::Queued, None, None),
    };
    let started = if status == RunStatus::Running { Some(e.now) } else { None };
    // One round trip: the run is inserted only when the event was (a seen dedupe key
    // inserts neither).
    let done = sqlx::query(
        "INSERT INTO events (id, recipe_id, source, dedupe_key, payload, received_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING;
         INSERT INTO runs (id, recipe_id, recipe_version, event_id, status, due_at, owner, lease_until, created_at, started_at, updated_at)
           SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ? WHERE changes() = 1",
    )
    .bind(&event_id)
    .bind(&e.recipe_id)
    .bind(&e.source)
    .bind(&e.dedupe_key)
    .bind(payload)
    .bind(e.now)
    .bind(&run_id)
    .bind(&e.recipe_id)
    .bind(e.recipe_version)
    .bind(&event_id)
    .bind(status.as_str())
    .bind(e.now)
    .bind(owner)
    .bind(lease)
    .bind(e.now)
    .bind(started)
    .bind(e.now)
    .execute(&mut *c)
    .await?;
    if done.rows_affected() == 2 {
        return Ok(Accepted { run_id, event_id, duplicate: false });
    }
    // The dedupe key was seen: answer with the run the first event started.
    let row = sqlx::query("SELECT e.id AS event_id, r.id AS run_id FROM events e JOIN runs r ON r.event_id = e.id WHERE e.recipe_id = ? AND e.dedupe_key = ? ORDER BY r.created_at LIMIT 1")
        .bind(&e.recipe_id)
        .bind(&e.dedupe_key)
        .fetch_optional(&mut *c)
        .await?;
    match row {
        Some(r) => Ok(Accepted { run_id: r.get("run_id"), event_id: r.get("event_id"), duplicate: true }),
        None => Err(StoreError::Database(format!("storing the event inserted {} rows instead of 2", done.rows_affected()))),
    }
}

/// Writes journal entries (insert, or update the entry of the same run and key): one
/// statement per chunk. SQLite applies a statement's rows in order, so a key given twice
/// ends with its last entry.
async fn upsert_steps(c: &mut SqliteConnection, steps: Vec<(&str, &StepRecord)>) -> Result<()> {
    for chunk in chunks_of(steps, &STEP_CHUNKS) {
        let sql = format!(
            "INSERT INTO steps (run_id, key, seq, step_id, kind, status, input, output, error, attempts, idempotency_key, started_at, finished_at) VALUES {}
             ON CONFLICT (run_id, key) DO UPDATE SET status = excluded.status, input = excluded.input, output = excluded.output,
               error = excluded.error, attempts = excluded.attempts, idempotency_key = excluded.idempotency_key,
               started_at = excluded.started_at, finished_at = excluded.finished_at",
            placeholders(chunk.len(), 13)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (run_id, st) in chunk {
            q = q
                .bind(run_id)
                .bind(&st.key)
                .bind(st.seq)
                .bind(&st.step_id)
                .bind(&st.kind)
                .bind(st.status.as_str())
                .bind(st.input.as_ref().map(json_text))
                .bind(st.output.as_ref().map(json_text))
                .bind(st.error.as_ref().map(json_text))
                .bind(st.attempts)
                .bind(&st.idempotency_key)
                .bind(st.started_at)
                .bind(st.finished_at);
        }
        q.execute(&mut *c).await?;
    }
    Ok(())
}

impl Sqlite {
    // ---- recipes ----

    pub(crate) async fn save_recipe(&self, r: SaveRecipe, now: Millis) -> Result<Saved> {
        self.write(move |c| {
            Box::pin(async move {
                let body = json_text(&r.body);
                let dig = digest(&body);
                let existing = sqlx::query(concat!("SELECT ", recipe_cols!(), " FROM recipes WHERE id = ?")).bind(&r.id).fetch_optional(&mut *c).await?.map(|row| recipe_row(&row));
                let current_digest: Option<String> = match &existing {
                    Some(e) => sqlx::query_scalar("SELECT digest FROM recipe_versions WHERE recipe_id = ? AND version = ?").bind(&r.id).bind(e.version).fetch_optional(&mut *c).await?,
                    None => None,
                };
                let new_version = current_digest.as_deref() != Some(dig.as_str());
                let version = match (&existing, new_version) {
                    (Some(e), false) => e.version,
                    (Some(_), true) => {
                        let max: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM recipe_versions WHERE recipe_id = ?").bind(&r.id).fetch_one(&mut *c).await?;
                        max + 1
                    }
                    (None, _) => 1,
                };
                let res = if existing.is_none() {
                    sqlx::query("INSERT INTO recipes (id, version, enabled, origin, hook_path, event_name, is_cron, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")
                        .bind(&r.id)
                        .bind(version)
                        .bind(r.enabled as i64)
                        .bind(&r.origin)
                        .bind(&r.hook_path)
                        .bind(&r.event_name)
                        .bind(r.cron.is_some() as i64)
                        .bind(now)
                        .bind(now)
                        .execute(&mut *c)
                        .await
                } else {
                    // An unchanged body keeps the recipe's switch as it is (a user may have
                    // disabled it through the API since the file was loaded).
                    let enabled = if new_version { r.enabled } else { existing.as_ref().is_some_and(|e| e.enabled) };
                    sqlx::query("UPDATE recipes SET version = ?, enabled = ?, origin = ?, hook_path = ?, event_name = ?, is_cron = ?, updated_at = ? WHERE id = ?")
                        .bind(version)
                        .bind(enabled as i64)
                        .bind(&r.origin)
                        .bind(&r.hook_path)
                        .bind(&r.event_name)
                        .bind(r.cron.is_some() as i64)
                        .bind(now)
                        .bind(&r.id)
                        .execute(&mut *c)
                        .await
                };
                if let Err(e) = res {
                    if is_unique_violation(&e) {
                        let other: Option<String> = sqlx::query_scalar("SELECT id FROM recipes WHERE hook_path = ? AND enabled = 1 AND id <> ?").bind(&r.hook_path).bind(&r.id).fetch_optional(&mut *c).await?;
                        return Err(StoreError::Conflict(format!(
                            "the webhook path `{}` is already used by the enabled recipe `{}`; choose another `path`, or disable that recipe",
                            r.hook_path.as_deref().unwrap_or(""),
                            other.unwrap_or_default()
                        )));
                    }
                    return Err(e.into());
                }
                if new_version {
                    sqlx::query("INSERT INTO recipe_versions (recipe_id, version, body, digest, created_at) VALUES (?, ?, ?, ?, ?)")
                        .bind(&r.id)
                        .bind(version)
                        .bind(&body)
                        .bind(&dig)
                        .bind(now)
                        .execute(&mut *c)
                        .await?;
                }
                match &r.cron {
                    Some(cron) => {
                        // Keep the pending tick when the schedule did not change.
                        sqlx::query(
                            "INSERT INTO schedules (recipe_id, next_at, expression, timezone) VALUES (?, ?, ?, ?)
                             ON CONFLICT (recipe_id) DO UPDATE SET
                               next_at = CASE WHEN schedules.expression = excluded.expression AND schedules.timezone = excluded.timezone THEN schedules.next_at ELSE excluded.next_at END,
                               expression = excluded.expression, timezone = excluded.timezone",
                        )
                        .bind(&r.id)
                        .bind(cron.next_at)
                        .bind(&cron.expression)
                        .bind(&cron.timezone)
                        .execute(&mut *c)
                        .await?;
                    }
                    None => {
                        sqlx::query("DELETE FROM schedules WHERE recipe_id = ?").bind(&r.id).execute(&mut *c).await?;
                    }
                }
                let row = sqlx::query(concat!("SELECT ", recipe_cols!(), " FROM recipes WHERE id = ?")).bind(&r.id).fetch_one(&mut *c).await?;
                Ok(Saved { recipe: recipe_row(&row), new_version })
            })
        })
        .await
    }

    pub(crate) async fn get_recipe(&self, id: &str) -> Result<Option<RecipeRow>> {
        let row = sqlx::query(concat!("SELECT ", recipe_cols!(), " FROM recipes WHERE id = ?")).bind(id).fetch_optional(&self.read).await?;
        Ok(row.map(|r| recipe_row(&r)))
    }

    pub(crate) async fn list_recipes(&self) -> Result<Vec<RecipeRow>> {
        let rows = sqlx::query(concat!("SELECT ", recipe_cols!(), " FROM recipes ORDER BY id")).fetch_all(&self.read).await?;
        Ok(rows.iter().map(recipe_row).collect())
    }

    pub(crate) async fn recipe_version(&self, id: &str, version: i64) -> Result<Option<RecipeVersion>> {
        let row = sqlx::query("SELECT recipe_id, version, body, created_at FROM recipe_versions WHERE recipe_id = ? AND version = ?")
            .bind(id)
            .bind(version)
            .fetch_optional(&self.read)
            .await?;
        Ok(row.map(|r| RecipeVersion {
            recipe_id: r.get("recipe_id"),
            version: r.get("version"),
            body: parse_json(r.get("body")).unwrap_or(Value::Null),
            created_at: r.get("created_at"),
        }))
    }

    pub(crate) async fn recipe_versions(&self, id: &str) -> Result<Vec<RecipeVersion>> {
        let rows = sqlx::query("SELECT recipe_id, version, body, created_at FROM recipe_versions WHERE recipe_id = ? ORDER BY version")
            .bind(id)
            .fetch_all(&self.read)
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
        let id = id.to_string();
        self.write(move |c| {
            Box::pin(async move {
                let res = sqlx::query("UPDATE recipes SET enabled = ?, updated_at = ? WHERE id = ?").bind(enabled as i64).bind(now).bind(&id).execute(&mut *c).await;
                match res {
                    Ok(r) if r.rows_affected() == 0 => return Ok(None),
                    Ok(_) => {}
                    Err(e) if is_unique_violation(&e) => {
                        return Err(StoreError::Conflict(format!("`{id}` cannot be enabled: another enabled recipe uses the same webhook path; disable it or change one of the paths")));
                    }
                    Err(e) => return Err(e.into()),
                }
                let row = sqlx::query(concat!("SELECT ", recipe_cols!(), " FROM recipes WHERE id = ?")).bind(&id).fetch_one(&mut *c).await?;
                Ok(Some(recipe_row(&row)))
            })
        })
        .await
    }

    pub(crate) async fn recipes_updated_at(&self) -> Result<Millis> {
        let v: Option<i64> = sqlx::query_scalar("SELECT MAX(updated_at) FROM recipes").fetch_one(&self.read).await?;
        Ok(v.unwrap_or(0))
    }

    // ---- inbox and queue ----

    pub(crate) async fn accept_event(&self, e: NewEvent) -> Result<Accepted> {
        let (reply, rx) = oneshot::channel();
        self.writer.send(Msg::Accept(Box::new(AcceptJob { event: e, reply }))).await.map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    pub(crate) async fn claim_due(&self, owner: &str, now: Millis, limit: i64, lease_ms: i64) -> Result<Vec<Claimed>> {
        let owner = owner.to_string();
        self.write_fast(move |c| {
            Box::pin(async move {
                let rows = sqlx::query(
                    "UPDATE runs SET status = 'running', owner = ?, lease_until = ?, started_at = COALESCE(started_at, ?), updated_at = ?
                     WHERE id IN (SELECT id FROM runs WHERE status IN ('queued', 'waiting') AND due_at <= ? ORDER BY due_at LIMIT ?)
                     RETURNING id, recipe_id, recipe_version",
                )
                .bind(&owner)
                .bind(now + lease_ms)
                .bind(now)
                .bind(now)
                .bind(now)
                .bind(limit)
                .fetch_all(&mut *c)
                .await?;
                Ok(rows
                    .iter()
                    .map(|r| Claimed { run_id: r.get("id"), recipe_id: r.get("recipe_id"), recipe_version: r.get("recipe_version") })
                    .collect())
            })
        })
        .await
    }

    pub(crate) async fn next_due_at(&self) -> Result<Option<Millis>> {
        Ok(sqlx::query_scalar("SELECT MIN(due_at) FROM runs WHERE status IN ('queued', 'waiting')").fetch_one(&self.read).await?)
    }

    pub(crate) async fn get_run(&self, run_id: &str) -> Result<Option<RunRow>> {
        let row = sqlx::query(concat!("SELECT ", run_cols!(), " FROM runs WHERE id = ?")).bind(run_id).fetch_optional(&self.read).await?;
        Ok(row.map(|r| run_row(&r)))
    }

    pub(crate) async fn run_detail(&self, run_id: &str) -> Result<Option<RunDetail>> {
        let mut c = self.read.acquire().await?;
        let Some(run) = sqlx::query(concat!("SELECT ", run_cols!(), " FROM runs WHERE id = ?"))
            .bind(run_id)
            .fetch_optional(&mut *c)
            .await?
            .map(|r| run_row(&r))
        else {
            return Ok(None);
        };
        let e = sqlx::query("SELECT id, recipe_id, source, dedupe_key, payload, received_at FROM events WHERE id = ?")
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
        let steps = sqlx::query("SELECT key, seq, step_id, kind, status, input, output, error, attempts, idempotency_key, started_at, finished_at FROM steps WHERE run_id = ? ORDER BY seq")
            .bind(run_id)
            .fetch_all(&mut *c)
            .await?
            .iter()
            .map(step_row)
            .collect();
        Ok(Some(RunDetail { run, event, steps }))
    }

    pub(crate) async fn record_steps(
        &self,
        run_id: &str,
        owner: &str,
        steps: Vec<StepRecord>,
        emitted: Vec<NewEvent>,
        now: Millis,
    ) -> Result<bool> {
        let (run_id, owner) = (run_id.to_string(), owner.to_string());
        self.write_fast(move |c| {
            Box::pin(async move {
                let mine = sqlx::query("UPDATE runs SET updated_at = ? WHERE id = ? AND status = 'running' AND owner = ?")
                    .bind(now)
                    .bind(&run_id)
                    .bind(&owner)
                    .execute(&mut *c)
                    .await?;
                if mine.rows_affected() == 0 {
                    return Ok(false);
                }
                upsert_steps(c, steps.iter().map(|s| (run_id.as_str(), s)).collect()).await?;
                for e in &emitted {
                    insert_event(c, e).await?;
                }
                Ok(true)
            })
        })
        .await
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
        let (run_id, owner) = (run_id.to_string(), owner.to_string());
        if steps.len() == 1
            && emitted.is_empty()
            && let RunUpdate::Finish { status, error } = &update
        {
            let (reply, rx) = oneshot::channel();
            let step = steps.into_iter().next().ok_or_else(|| StoreError::Database("internal: no step".into()))?;
            let job = FinishJob { run_id, owner, status: *status, error: error.clone(), step, now, reply };
            self.writer.send(Msg::Finish(Box::new(job))).await.map_err(|_| StoreError::Closed)?;
            return rx.await.map_err(|_| StoreError::Closed)?;
        }
        self.write_fast(move |c| {
            Box::pin(async move {
                let res = match &update {
                    RunUpdate::Finish { status, error } => {
                        sqlx::query("UPDATE runs SET status = ?, error = ?, finished_at = ?, due_at = NULL, owner = NULL, lease_until = NULL, updated_at = ? WHERE id = ? AND status = 'running' AND owner = ?")
                            .bind(status.as_str())
                            .bind(error.as_ref().map(json_text))
                            .bind(now)
                            .bind(now)
                            .bind(&run_id)
                            .bind(&owner)
                            .execute(&mut *c)
                            .await?
                    }
                    RunUpdate::Park { status, due_at } => {
                        sqlx::query("UPDATE runs SET status = ?, due_at = ?, owner = NULL, lease_until = NULL, updated_at = ? WHERE id = ? AND status = 'running' AND owner = ?")
                            .bind(status.as_str())
                            .bind(due_at)
                            .bind(now)
                            .bind(&run_id)
                            .bind(&owner)
                            .execute(&mut *c)
                            .await?
                    }
                    RunUpdate::Hold { connection } => {
                        sqlx::query("UPDATE runs SET status = 'waiting', due_at = NULL, held_connection = ?, owner = NULL, lease_until = NULL, updated_at = ? WHERE id = ? AND status = 'running' AND owner = ?")
                            .bind(connection)
                            .bind(now)
                            .bind(&run_id)
                            .bind(&owner)
                            .execute(&mut *c)
                            .await?
                    }
                };
                if res.rows_affected() == 0 {
                    return Ok(false);
                }
                upsert_steps(c, steps.iter().map(|s| (run_id.as_str(), s)).collect()).await?;
                for e in &emitted {
                    insert_event(c, e).await?;
                }
                Ok(true)
            })
        })
        .await
    }

    pub(crate) async fn release_owned(&self, owner: &str, now: Millis) -> Result<u64> {
        let owner = owner.to_string();
        self.write_fast(move |c| {
            Box::pin(async move {
                let r = sqlx::query("UPDATE runs SET status = 'queued', due_at = ?, owner = NULL, lease_until = NULL, updated_at = ? WHERE status = 'running' AND owner = ?")
                    .bind(now)
                    .bind(now)
                    .bind(&owner)
                    .execute(&mut *c)
                    .await?;
                Ok(r.rows_affected())
            })
        })
        .await
    }

    pub(crate) async fn heartbeat(&self, owner: &str, now: Millis, lease_ms: i64) -> Result<u64> {
        let owner = owner.to_string();
        self.write_fast(move |c| {
            Box::pin(async move {
                let r = sqlx::query("UPDATE runs SET lease_until = ? WHERE status = 'running' AND owner = ?")
                    .bind(now + lease_ms)
                    .bind(&owner)
                    .execute(&mut *c)
                    .await?;
                Ok(r.rows_affected())
            })
        })
        .await
    }

    pub(crate) async fn reap_expired(&self, now: Millis) -> Result<u64> {
        self.write_fast(move |c| {
            Box::pin(async move {
                let r = sqlx::query(
                    "UPDATE runs SET status = 'queued', due_at = ?, owner = NULL, lease_until = NULL, updated_at = ? WHERE status = 'running' AND lease_until < ?",
                )
                .bind(now)
                .bind(now)
                .bind(now)
                .execute(&mut *c)
                .await?;
                Ok(r.rows_affected())
            })
        })
        .await
    }

    pub(crate) async fn recover_orphans(&self, now: Millis) -> Result<u64> {
        self.write_fast(move |c| {
            Box::pin(async move {
                let r = sqlx::query("UPDATE runs SET status = 'queued', due_at = ?, owner = NULL, lease_until = NULL, updated_at = ? WHERE status = 'running'")
                    .bind(now)
                    .bind(now)
                    .execute(&mut *c)
                    .await?;
                Ok(r.rows_affected())
            })
        })
        .await
    }

    // ---- schedules ----

    pub(crate) async fn due_schedules(&self, now: Millis) -> Result<Vec<(String, Millis)>> {
        let rows = sqlx::query("SELECT s.recipe_id, s.next_at FROM schedules s JOIN recipes r ON r.id = s.recipe_id WHERE r.enabled = 1 AND s.next_at <= ? ORDER BY s.next_at")
            .bind(now)
            .fetch_all(&self.read)
            .await?;
        Ok(rows.iter().map(|r| (r.get("recipe_id"), r.get("next_at"))).collect())
    }

    pub(crate) async fn fire_schedule(&self, recipe_id: &str, expected: Millis, next: Millis, event: NewEvent) -> Result<Option<Accepted>> {
        let recipe_id = recipe_id.to_string();
        self.write_fast(move |c| {
            Box::pin(async move {
                let r = sqlx::query("UPDATE schedules SET next_at = ? WHERE recipe_id = ? AND next_at = ?")
                    .bind(next)
                    .bind(&recipe_id)
                    .bind(expected)
                    .execute(&mut *c)
                    .await?;
                if r.rows_affected() == 0 {
                    return Ok(None);
                }
                Ok(Some(insert_event(c, &event).await?))
            })
        })
        .await
    }

    // ---- run history ----

    pub(crate) async fn list_runs(&self, f: &RunFilter) -> Result<Vec<RunRow>> {
        let mut sql = String::from(concat!("SELECT ", run_cols!(), " FROM runs WHERE 1 = 1"));
        if f.recipe_id.is_some() {
            sql.push_str(" AND recipe_id = ?");
        }
        if f.status.is_some() {
            sql.push_str(" AND status = ?");
        }
        if f.since.is_some() {
            sql.push_str(" AND created_at >= ?");
        }
        if f.until.is_some() {
            sql.push_str(" AND created_at < ?");
        }
        if f.before.is_some() {
            sql.push_str(" AND id < ?");
        }
        sql.push_str(" ORDER BY id DESC LIMIT ?");
        // Assembled from fixed fragments only; every value is bound.
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        if let Some(r) = &f.recipe_id {
            q = q.bind(r);
        }
        if let Some(s) = f.status {
            q = q.bind(s.as_str());
        }
        if let Some(s) = f.since {
            q = q.bind(s);
        }
        if let Some(u) = f.until {
            q = q.bind(u);
        }
        if let Some(b) = &f.before {
            q = q.bind(b);
        }
        let limit = if f.limit <= 0 { 50 } else { f.limit.min(1000) };
        let rows = q.bind(limit).fetch_all(&self.read).await?;
        Ok(rows.iter().map(run_row).collect())
    }

    pub(crate) async fn run_counts(&self) -> Result<BTreeMap<String, i64>> {
        let rows = sqlx::query("SELECT status, COUNT(*) AS n FROM runs GROUP BY status").fetch_all(&self.read).await?;
        Ok(rows.iter().map(|r| (r.get::<String, _>("status"), r.get::<i64, _>("n"))).collect())
    }

    pub(crate) async fn cancel_run(&self, run_id: &str, now: Millis) -> Result<RunRow> {
        let run_id = run_id.to_string();
        self.write(move |c| {
            Box::pin(async move {
                let Some(run) = sqlx::query(concat!("SELECT ", run_cols!(), " FROM runs WHERE id = ?")).bind(&run_id).fetch_optional(&mut *c).await?.map(|r| run_row(&r)) else {
                    return Err(StoreError::NotFound(format!("no run `{run_id}`")));
                };
                if run.status.is_final() {
                    return Err(StoreError::Conflict(format!("run `{run_id}` has already ended ({}); only queued, running or waiting runs can be cancelled", run.status)));
                }
                sqlx::query("UPDATE runs SET status = 'cancelled', finished_at = ?, due_at = NULL, owner = NULL, lease_until = NULL, updated_at = ?, error = ? WHERE id = ?")
                    .bind(now)
                    .bind(now)
                    .bind(json_text(&serde_json::json!({"class": "cancelled", "message": "cancelled by a user"})))
                    .bind(&run_id)
                    .execute(&mut *c)
                    .await?;
                sqlx::query("UPDATE steps SET status = 'cancelled', finished_at = ? WHERE run_id = ? AND status IN ('running', 'retrying', 'waiting')").bind(now).bind(&run_id).execute(&mut *c).await?;
                let row = sqlx::query(concat!("SELECT ", run_cols!(), " FROM runs WHERE id = ?")).bind(&run_id).fetch_one(&mut *c).await?;
                Ok(run_row(&row))
            })
        })
        .await
    }

    pub(crate) async fn cancel_recipe_runs(&self, recipe_id: &str, reason: &str, now: Millis) -> Result<u64> {
        let (recipe_id, error) = (recipe_id.to_string(), json_text(&serde_json::json!({"class": "cancelled", "message": reason})));
        self.write(move |c| {
            Box::pin(async move {
                sqlx::query("UPDATE steps SET status = 'cancelled', finished_at = ? WHERE status IN ('running', 'retrying', 'waiting') AND run_id IN (SELECT id FROM runs WHERE recipe_id = ? AND status IN ('queued', 'running', 'waiting'))")
                    .bind(now)
                    .bind(&recipe_id)
                    .execute(&mut *c)
                    .await?;
                let r = sqlx::query("UPDATE runs SET status = 'cancelled', finished_at = ?, due_at = NULL, owner = NULL, lease_until = NULL, held_connection = NULL, updated_at = ?, error = ? WHERE recipe_id = ? AND status IN ('queued', 'running', 'waiting')")
                    .bind(now)
                    .bind(now)
                    .bind(&error)
                    .bind(&recipe_id)
                    .execute(&mut *c)
                    .await?;
                Ok(r.rows_affected())
            })
        })
        .await
    }

    pub(crate) async fn replay_run(&self, run_id: &str, rp: Replay) -> Result<RunRow> {
        let run_id = run_id.to_string();
        self.write(move |c| {
            Box::pin(async move {
                let Some(run) = sqlx::query(concat!("SELECT ", run_cols!(), " FROM runs WHERE id = ?")).bind(&run_id).fetch_optional(&mut *c).await?.map(|r| run_row(&r)) else {
                    return Err(StoreError::NotFound(format!("no run `{run_id}`")));
                };
                if !matches!(run.status, RunStatus::Failed | RunStatus::Cancelled) {
                    return Err(StoreError::Conflict(format!("run `{run_id}` is {}; only failed or cancelled runs can be replayed", run.status)));
                }
                let version = rp.latest_version.unwrap_or(run.recipe_version);
                sqlx::query("UPDATE runs SET status = 'queued', due_at = ?, attempt = attempt + 1, recipe_version = ?, error = NULL, finished_at = NULL, owner = NULL, lease_until = NULL, updated_at = ? WHERE id = ?")
                    .bind(rp.now)
                    .bind(version)
                    .bind(rp.now)
                    .bind(&run_id)
                    .execute(&mut *c)
                    .await?;
                // Unfinished steps run again (a user's replay is the decision to resend a
                // call whose outcome was unknown); completed ones keep their outputs.
                sqlx::query("UPDATE steps SET status = 'retrying' WHERE run_id = ? AND status IN ('failed', 'cancelled', 'running', 'waiting')").bind(&run_id).execute(&mut *c).await?;
                let row = sqlx::query(concat!("SELECT ", run_cols!(), " FROM runs WHERE id = ?")).bind(&run_id).fetch_one(&mut *c).await?;
                Ok(run_row(&row))
            })
        })
        .await
    }

    // ---- secrets ----

    pub(crate) async fn set_secret(&self, name: &str, value: &str, now: Millis) -> Result<()> {
        let sealed = self.secrets.seal(&format!("secret:{name}"), value.as_bytes())?;
        let name = name.to_string();
        self.write(move |c| {
            Box::pin(async move {
                sqlx::query("INSERT INTO secrets (name, value, created_at, updated_at) VALUES (?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at")
                    .bind(&name)
                    .bind(&sealed)
                    .bind(now)
                    .bind(now)
                    .execute(&mut *c)
                    .await?;
                Ok(())
            })
        })
        .await
    }

    pub(crate) async fn secrets(&self, names: &[String]) -> Result<BTreeMap<String, String>> {
        let mut out = BTreeMap::new();
        for name in names {
            let row: Option<Vec<u8>> =
                sqlx::query_scalar("SELECT value FROM secrets WHERE name = ?").bind(name).fetch_optional(&self.read).await?;
            if let Some(sealed) = row {
                let plain = self.secrets.open(&format!("secret:{name}"), &sealed)?;
                out.insert(
                    name.clone(),
                    String::from_utf8(plain).map_err(|_| StoreError::Crypto(format!("secret `{name}` is not UTF-8")))?,
                );
            }
        }
        Ok(out)
    }

    pub(crate) async fn list_secrets(&self) -> Result<Vec<(String, Millis)>> {
        let rows = sqlx::query("SELECT name, updated_at FROM secrets ORDER BY name").fetch_all(&self.read).await?;
        Ok(rows.iter().map(|r| (r.get("name"), r.get("updated_at"))).collect())
    }

    pub(crate) async fn delete_secret(&self, name: &str) -> Result<bool> {
        let name = name.to_string();
        self.write(move |c| {
            Box::pin(async move {
                Ok(sqlx::query("DELETE FROM secrets WHERE name = ?").bind(&name).execute(&mut *c).await?.rows_affected() > 0)
            })
        })
        .await
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
        let row = ConnectionRow {
            id: id.to_string(),
            app: app.to_string(),
            name: name.to_string(),
            status: "untested".into(),
            status_message: None,
            tested_at: None,
            rate_limit,
            created_at: now,
            updated_at: now,
        };
        let r2 = row.clone();
        self.write(move |c| {
            Box::pin(async move {
                let res = sqlx::query(
                    "INSERT INTO connections (id, app, name, credentials, status, rate_calls, rate_per_ms, created_at, updated_at) VALUES (?, ?, ?, ?, 'untested', ?, ?, ?, ?)",
                )
                .bind(&r2.id)
                .bind(&r2.app)
                .bind(&r2.name)
                .bind(&sealed)
                .bind(r2.rate_limit.map(|r| i64::from(r.calls)))
                .bind(r2.rate_limit.map(|r| r.per_ms))
                .bind(now)
                .bind(now)
                .execute(&mut *c)
                .await;
                match res {
                    Err(e) if is_unique_violation(&e) => {
                        Err(StoreError::Conflict(format!("a connection `{}` exists already; choose another id", r2.id)))
                    }
                    Err(e) => Err(e.into()),
                    Ok(_) => Ok(()),
                }
            })
        })
        .await?;
        Ok(row)
    }

    pub(crate) async fn connection(&self, id: &str) -> Result<Option<(ConnectionRow, Credentials)>> {
        let Some(r) = sqlx::query(concat!("SELECT credentials, ", connection_cols!(), " FROM connections WHERE id = ?"))
            .bind(id)
            .fetch_optional(&self.read)
            .await?
        else {
            return Ok(None);
        };
        let sealed: Vec<u8> = r.get("credentials");
        let plain = self.secrets.open(&format!("connection:{id}"), &sealed)?;
        let creds: Credentials = serde_json::from_slice(&plain).map_err(|e| StoreError::Crypto(format!("connection `{id}`: {e}")))?;
        Ok(Some((connection_row(&r), creds)))
    }

    pub(crate) async fn list_connections(&self) -> Result<Vec<ConnectionRow>> {
        let rows = sqlx::query(concat!("SELECT ", connection_cols!(), " FROM connections ORDER BY id")).fetch_all(&self.read).await?;
        Ok(rows.iter().map(connection_row).collect())
    }

    pub(crate) async fn rename_connection(&self, id: &str, name: &str, now: Millis) -> Result<Option<ConnectionRow>> {
        let (id, name) = (id.to_string(), name.to_string());
        self.write(move |c| {
            Box::pin(async move {
                let row =
                    sqlx::query(concat!("UPDATE connections SET name = ?, updated_at = ? WHERE id = ? RETURNING ", connection_cols!()))
                        .bind(&name)
                        .bind(now)
                        .bind(&id)
                        .fetch_optional(&mut *c)
                        .await?;
                Ok(row.as_ref().map(connection_row))
            })
        })
        .await
    }

    pub(crate) async fn set_connection_status(&self, id: &str, status: &str, message: &str, now: Millis) -> Result<Option<ConnectionRow>> {
        let (id, status, message) = (id.to_string(), status.to_string(), message.to_string());
        self.write(move |c| {
            Box::pin(async move {
                let row = sqlx::query(concat!(
                    "UPDATE connections SET status = ?, status_message = ?, tested_at = ?, updated_at = ? WHERE id = ? RETURNING ",
                    connection_cols!()
                ))
                .bind(&status)
                .bind(&message)
                .bind(now)
                .bind(now)
                .bind(&id)
                .fetch_optional(&mut *c)
                .await?;
                Ok(row.as_ref().map(connection_row))
            })
        })
        .await
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
        let id = id.to_string();
        let status = status.map(|(s, m)| (s.to_string(), m.to_string()));
        self.write(move |c| {
            Box::pin(async move {
                let row = match &status {
                    Some((st, msg)) => sqlx::query(concat!(
                        "UPDATE connections SET credentials = ?, status = ?, status_message = ?, tested_at = ?, updated_at = ? WHERE id = ? RETURNING ",
                        connection_cols!()
                    ))
                    .bind(&sealed)
                    .bind(st)
                    .bind(msg)
                    .bind(now)
                    .bind(now)
                    .bind(&id),
                    None => sqlx::query(concat!("UPDATE connections SET credentials = ?, updated_at = ? WHERE id = ? RETURNING ", connection_cols!()))
                        .bind(&sealed)
                        .bind(now)
                        .bind(&id),
                }
                .fetch_optional(&mut *c)
                .await?;
                Ok(row.as_ref().map(connection_row))
            })
        })
        .await
    }

    pub(crate) async fn try_refresh_lease(&self, id: &str, owner: &str, now: Millis, until: Millis) -> Result<bool> {
        let (id, owner) = (id.to_string(), owner.to_string());
        self.write(move |c| {
            Box::pin(async move {
                let r = sqlx::query(
                    "UPDATE connections SET refresh_owner = ?, refresh_until = ? WHERE id = ? AND (refresh_until IS NULL OR refresh_until < ? OR refresh_owner = ?)",
                )
                .bind(&owner)
                .bind(until)
                .bind(&id)
                .bind(now)
                .bind(&owner)
                .execute(&mut *c)
                .await?;
                Ok(r.rows_affected() > 0)
            })
        })
        .await
    }

    pub(crate) async fn end_refresh_lease(&self, id: &str, owner: &str) -> Result<()> {
        let (id, owner) = (id.to_string(), owner.to_string());
        self.write(move |c| {
            Box::pin(async move {
                sqlx::query("UPDATE connections SET refresh_owner = NULL, refresh_until = NULL WHERE id = ? AND refresh_owner = ?")
                    .bind(&id)
                    .bind(&owner)
                    .execute(&mut *c)
                    .await?;
                Ok(())
            })
        })
        .await
    }

    pub(crate) async fn begin_authorization(&self, a: PendingAuthorization) -> Result<()> {
        let sealed = self.secrets.seal(&format!("oauth_state:{}", a.connection_id), a.verifier.as_bytes())?;
        let hash = token_hash(&a.state);
        self.write(move |c| {
            Box::pin(async move {
                sqlx::query("DELETE FROM oauth_states WHERE expires_at < ?").bind(a.created_at).execute(&mut *c).await?;
                sqlx::query(
                    "INSERT INTO oauth_states (state_hash, connection_id, verifier, redirect_uri, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)",
                )
                .bind(&hash)
                .bind(&a.connection_id)
                .bind(&sealed)
                .bind(&a.redirect_uri)
                .bind(a.created_at)
                .bind(a.expires_at)
                .execute(&mut *c)
                .await?;
                Ok(())
            })
        })
        .await
    }

    pub(crate) async fn take_authorization(&self, state: &str, now: Millis) -> Result<Option<PendingAuthorization>> {
        let hash = token_hash(state);
        let state = state.to_string();
        let row = self
            .write(move |c| {
                Box::pin(async move {
                    let row = sqlx::query(
                        "DELETE FROM oauth_states WHERE state_hash = ? RETURNING connection_id, verifier, redirect_uri, created_at, expires_at",
                    )
                    .bind(&hash)
                    .fetch_optional(&mut *c)
                    .await?;
                    Ok(row.map(|r| {
                        (
                            r.get::<String, _>("connection_id"),
                            r.get::<Vec<u8>, _>("verifier"),
                            r.get::<String, _>("redirect_uri"),
                            r.get::<i64, _>("created_at"),
                            r.get::<i64, _>("expires_at"),
                        )
                    }))
                })
            })
            .await?;
        let Some((connection_id, sealed, redirect_uri, created_at, expires_at)) = row else { return Ok(None) };
        if expires_at < now {
            return Ok(None);
        }
        let verifier = self.secrets.open(&format!("oauth_state:{connection_id}"), &sealed)?;
        let verifier = String::from_utf8(verifier).map_err(|e| StoreError::Crypto(e.to_string()))?;
        Ok(Some(PendingAuthorization { state, connection_id, verifier, redirect_uri, created_at, expires_at }))
    }

    pub(crate) async fn release_held_runs(&self, connection: &str, now: Millis) -> Result<u64> {
        let connection = connection.to_string();
        self.write(move |c| {
            Box::pin(async move {
                let r = sqlx::query(
                    "UPDATE runs SET status = 'queued', due_at = ?, held_connection = NULL, updated_at = ? WHERE held_connection = ? AND status = 'waiting'",
                )
                .bind(now)
                .bind(now)
                .bind(&connection)
                .execute(&mut *c)
                .await?;
                Ok(r.rows_affected())
            })
        })
        .await
    }

    pub(crate) async fn delete_connection(&self, id: &str) -> Result<bool> {
        let id = id.to_string();
        self.write(move |c| {
            Box::pin(async move {
                Ok(sqlx::query("DELETE FROM connections WHERE id = ?").bind(&id).execute(&mut *c).await?.rows_affected() > 0)
            })
        })
        .await
    }

    // ---- tokens ----

    pub(crate) async fn create_token(&self, name: &str, now: Millis) -> Result<(TokenRow, String)> {
        use rand::RngCore;
        let mut raw = [0u8; 24];
        rand::rng().fill_bytes(&mut raw);
        let token = format!("enl_{}", hex::encode(raw));
        let hash = token_hash(&token);
        let row = TokenRow { id: new_id(), name: name.to_string(), created_at: now, last_used_at: None };
        let r2 = row.clone();
        self.write(move |c| {
            Box::pin(async move {
                let res = sqlx::query("INSERT INTO api_tokens (id, name, hash, created_at) VALUES (?, ?, ?, ?)")
                    .bind(&r2.id)
                    .bind(&r2.name)
                    .bind(&hash)
                    .bind(now)
                    .execute(&mut *c)
                    .await;
                match res {
                    Err(e) if is_unique_violation(&e) => Err(StoreError::Conflict(format!(
                        "a token named `{}` exists already; choose another name or revoke it first",
                        r2.name
                    ))),
                    Err(e) => Err(e.into()),
                    Ok(_) => Ok(()),
                }
            })
        })
        .await?;
        Ok((row, token))
    }

    pub(crate) async fn verify_token(&self, token: &str) -> Result<Option<TokenRow>> {
        let hash = token_hash(token);
        let row = sqlx::query("SELECT id, name, created_at, last_used_at FROM api_tokens WHERE hash = ?")
            .bind(&hash)
            .fetch_optional(&self.read)
            .await?;
        Ok(row.map(|r| TokenRow {
            id: r.get("id"),
            name: r.get("name"),
            created_at: r.get("created_at"),
            last_used_at: r.get("last_used_at"),
        }))
    }

    pub(crate) async fn list_tokens(&self) -> Result<Vec<TokenRow>> {
        let rows = sqlx::query("SELECT id, name, created_at, last_used_at FROM api_tokens ORDER BY name").fetch_all(&self.read).await?;
        Ok(rows
            .iter()
            .map(|r| TokenRow {
                id: r.get("id"),
                name: r.get("name"),
                created_at: r.get("created_at"),
                last_used_at: r.get("last_used_at"),
            })
            .collect())
    }

    pub(crate) async fn revoke_token(&self, name: &str) -> Result<bool> {
        let name = name.to_string();
        self.write(move |c| {
            Box::pin(async move {
                Ok(sqlx::query("DELETE FROM api_tokens WHERE name = ?").bind(&name).execute(&mut *c).await?.rows_affected() > 0)
            })
        })
        .await
    }
}
