//! Enlace's durable store: the only crate that speaks SQL.
//!
//! One [`Store`] API over two backends. SQLite (WAL, `synchronous=FULL` by default) is the
//! embedded default, for one node; PostgreSQL (`postgres://` URLs) lets several nodes share
//! one store: runs are claimed with `FOR UPDATE SKIP LOCKED`, leased and heartbeaten, and
//! `NOTIFY` wakes the other nodes' pollers. Callers do not change with the backend. The
//! store holds recipes and their versions, the inbound event inbox, runs (which are also
//! the queue and the durable timers) with their step journal, cron schedules, encrypted
//! secrets and connections, API tokens, and the embedded contact store (contacts, tags,
//! consent history, notes, timeline: `contacts.rs`), and GDPR's export, erasure and ad
//! audience removal queue (`gdpr.rs`).
//!
//! Writes on SQLite go through one writer task that commits in groups: many webhook
//! acceptances share one fsync, and each caller is answered only after its commit. On
//! PostgreSQL every write is one transaction on a pooled connection (the server groups
//! commits itself), and the hot writes are single statements.
//!
//! Architecture invariant: no other crate contains SQL, and no method here decides policy
//! (retries, what runs next): it stores what the runner decides, atomically.

mod contacts;
mod crypto;
mod flow;
pub mod gdpr;
mod journeys;
mod pg;
mod polling;
mod sends;
pub mod social;
mod sqlite;
pub mod testing;
mod types;
pub mod web;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use enlace_core::Credentials;

pub use contacts::{
    ContactApplied, ContactFilter, ContactSub, ContactWrite, DETAIL_TIMELINE, EventSub, MAX_FIELDS_BYTES, MAX_NOTE_CHARS, SCORE_THRESHOLD,
    TimelineQuery, normalize_phone,
};
pub use crypto::SecretBox;
pub use enlace_core::contacts::{
    Consent, ConsentStatus, Contact, ContactDetail, ContactKey, ContactOp, ContactOutcome, ContactTrigger, Evidence, NewConsent, Note,
    PhoneConsentOutcome, PhoneDecision, TimelineEvent, WriteContext,
};
pub use flow::{FlowCounts, RunCount, StepCount};
pub use journeys::{Entered, EntryRule, JourneyEntry, may_enter};
pub use polling::*;
pub use sends::{Decide, LedgerRow, LedgerWrite, RecipientFacts, SendFacts, SendRequest, approval_hold, status as send_status};
pub use types::*;

/// What went wrong in the store. Callers map these to API errors; none of them is "the
/// caller's fault" except `NotFound`, `Conflict` and `Invalid`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error("configuration: {0}")]
    Config(String),
    #[error("secret store: {0}")]
    Crypto(String),
    #[error("database: {0}")]
    Database(String),
    #[error("the store is shutting down")]
    Closed,
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolClosed => StoreError::Closed,
            e => StoreError::Database(e.to_string()),
        }
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        StoreError::Database(format!("migration failed: {e}"))
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// How hard SQLite syncs: `Full` survives power loss (the default), `Normal` survives a
/// crash of the process but may lose the last commits on power loss. `Off` never waits for
/// the disk: only for throwaway stores (the simulator's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synchronous {
    Full,
    Normal,
    Off,
}

/// Where the store lives.
#[derive(Clone)]
pub struct StoreConfig {
    /// `sqlite://PATH` or a path; `None` means `<data_dir>/enlace.db`. Or
    /// `postgres://USER:PASSWORD@HOST:PORT/DATABASE` (also `postgresql://`), with sqlx's
    /// connection parameters and `pool_max_conns=N`: the size of the connection pool
    /// (default 10).
    pub database_url: Option<String>,
    pub data_dir: PathBuf,
    /// `ENLACE_SECRET_KEY`.
    pub secret_key: Option<String>,
    pub synchronous: Synchronous,
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("database_url", &self.database_url.as_ref().map(|u| redact_url(u)))
            .field("data_dir", &self.data_dir)
            .field("secret_key", &self.secret_key.as_ref().map(|_| "[secret]"))
            .field("synchronous", &self.synchronous)
            .finish()
    }
}

/// A database URL with its password hidden, for logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}://{}:[secret]@{}", &url[..s], user, &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

#[derive(Clone)]
enum Backend {
    Sqlite(Arc<sqlite::Sqlite>),
    Postgres(Arc<pg::Pg>),
}

/// The store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

macro_rules! dispatch {
    ($self:ident, $b:ident => $e:expr) => {
        match &$self.backend {
            Backend::Sqlite($b) => $e,
            Backend::Postgres($b) => $e,
        }
    };
}

// After `dispatch!`, which it uses.
mod accounts;
pub use accounts::{DraftRow, NewSession, SampleRow, SessionRow, UserRow};

impl Store {
    /// Opens (creating if needed) the store and applies pending migrations.
    pub async fn open(cfg: &StoreConfig) -> Result<Store> {
        let url = cfg.database_url.clone().unwrap_or_default();
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            // Every node of a PostgreSQL store must use the same key: give them all
            // ENLACE_SECRET_KEY (the key file is per machine). The store's check value
            // refuses a node with another key.
            if cfg.secret_key.as_deref().is_none_or(|k| k.trim().is_empty()) {
                std::fs::create_dir_all(&cfg.data_dir).map_err(|e| {
                    StoreError::Config(format!("cannot create the data directory {} for secret.key: {e}", cfg.data_dir.display()))
                })?;
            }
            let secrets = SecretBox::load(cfg.secret_key.as_deref(), Some(&cfg.data_dir))?;
            let db = pg::Pg::open(&url, secrets).await?;
            return Ok(Store { backend: Backend::Postgres(Arc::new(db)) });
        }
        let path: PathBuf = if url.is_empty() {
            cfg.data_dir.join("enlace.db")
        } else if let Some(p) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) {
            PathBuf::from(p.split('?').next().unwrap_or(p))
        } else if !url.contains("://") {
            PathBuf::from(&url)
        } else {
            return Err(StoreError::Config(format!(
                "unsupported database URL `{}`: use sqlite://PATH or postgres://USER:PASSWORD@HOST:PORT/DATABASE",
                redact_url(&url)
            )));
        };
        std::fs::create_dir_all(&cfg.data_dir)
            .map_err(|e| StoreError::Config(format!("cannot create the data directory {}: {e}", cfg.data_dir.display())))?;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| StoreError::Config(format!("cannot create {}: {e}", parent.display())))?;
        }
        let secrets = SecretBox::load(cfg.secret_key.as_deref(), Some(&cfg.data_dir))?;
        let db = sqlite::Sqlite::open(&path, secrets, cfg.synchronous).await?;
        Ok(Store { backend: Backend::Sqlite(Arc::new(db)) })
    }

    /// A store in a fresh temporary directory (tests, `enlace run`). The directory is removed
    /// when the last clone of the store is dropped.
    pub async fn temporary() -> Result<Store> {
        Self::temporary_with(Synchronous::Normal).await
    }

    /// [`Store::temporary`] with this durability (`Off` for a simulation: nothing in it
    /// outlives the process).
    pub async fn temporary_with(sync: Synchronous) -> Result<Store> {
        let dir = std::env::temp_dir().join(format!("enlace-tmp-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).map_err(|e| StoreError::Config(format!("cannot create {}: {e}", dir.display())))?;
        let secrets = SecretBox::from_key(&rand_key());
        let mut db = sqlite::Sqlite::open(&dir.join("enlace.db"), secrets, sync).await?;
        db.remove_on_drop(dir);
        Ok(Store { backend: Backend::Sqlite(Arc::new(db)) })
    }

    /// `sqlite` or `postgres`.
    pub fn backend_name(&self) -> &'static str {
        match &self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// The file of an SQLite store; `None` on PostgreSQL.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match &self.backend {
            Backend::Sqlite(b) => Some(b.path()),
            Backend::Postgres(_) => None,
        }
    }

    /// Wakes the pollers of this process when a run may have become due anywhere: on
    /// PostgreSQL, a listener on the channel `enlace_runs` fires it on every notification
    /// (every transaction that queues a run or moves its due time sends one), so a node
    /// learns of work another node queued without polling. Each notification wakes every
    /// task waiting on it and leaves a permit for the next one to wait. `None` on SQLite,
    /// where only this process writes and its runner knows when it queues work.
    pub fn wakeups(&self) -> Option<Arc<tokio::sync::Notify>> {
        match &self.backend {
            Backend::Sqlite(_) => None,
            Backend::Postgres(b) => Some(b.wakeups()),
        }
    }

    /// Whether rate limits are kept in the store, shared by every node ([`Store::rate_acquire`]):
    /// true on PostgreSQL. On SQLite the runner limits in process.
    pub fn shared_rate_limits(&self) -> bool {
        matches!(self.backend, Backend::Postgres(_))
    }

    /// Succeeds when the database answers.
    pub async fn ping(&self) -> Result<()> {
        dispatch!(self, b => b.ping().await)
    }

    /// Finishes pending writes and closes the database.
    pub async fn close(&self) {
        dispatch!(self, b => b.close().await)
    }

    // ---- recipes ----

    /// Saves a recipe: a new version when the body changed, and its flags either way.
    pub async fn save_recipe(&self, r: SaveRecipe, now: Millis) -> Result<Saved> {
        dispatch!(self, b => b.save_recipe(r, now).await)
    }
    pub async fn get_recipe(&self, id: &str) -> Result<Option<RecipeRow>> {
        dispatch!(self, b => b.get_recipe(id).await)
    }
    pub async fn list_recipes(&self) -> Result<Vec<RecipeRow>> {
        dispatch!(self, b => b.list_recipes().await)
    }
    pub async fn recipe_version(&self, id: &str, version: i64) -> Result<Option<RecipeVersion>> {
        dispatch!(self, b => b.recipe_version(id, version).await)
    }
    pub async fn recipe_versions(&self, id: &str) -> Result<Vec<RecipeVersion>> {
        dispatch!(self, b => b.recipe_versions(id).await)
    }
    /// Enables or disables; `None` when there is no such recipe.
    pub async fn set_enabled(&self, id: &str, enabled: bool, now: Millis) -> Result<Option<RecipeRow>> {
        dispatch!(self, b => b.set_enabled(id, enabled, now).await)
    }
    /// The latest `updated_at` of any recipe: a cheap check for changes made elsewhere.
    pub async fn recipes_updated_at(&self) -> Result<Millis> {
        dispatch!(self, b => b.recipes_updated_at().await)
    }

    // ---- inbox and queue ----

    /// Stores an event and the run it starts, atomically; a repeated dedupe key starts nothing.
    pub async fn accept_event(&self, e: NewEvent) -> Result<Accepted> {
        dispatch!(self, b => b.accept_event(e).await)
    }
    /// Takes up to `limit` due runs for `owner`.
    pub async fn claim_due(&self, owner: &str, now: Millis, limit: i64, lease_ms: i64) -> Result<Vec<Claimed>> {
        dispatch!(self, b => b.claim_due(owner, now, limit, lease_ms).await)
    }
    /// The earliest due time of any queued or waiting run.
    pub async fn next_due_at(&self) -> Result<Option<Millis>> {
        dispatch!(self, b => b.next_due_at().await)
    }
    pub async fn run_detail(&self, run_id: &str) -> Result<Option<RunDetail>> {
        dispatch!(self, b => b.run_detail(run_id).await)
    }
    pub async fn get_run(&self, run_id: &str) -> Result<Option<RunRow>> {
        dispatch!(self, b => b.get_run(run_id).await)
    }
    /// Writes step journal entries (insert or replace by key) and the events they emitted,
    /// in one transaction, if `owner` still holds the run; `false` (nothing written) when
    /// it does not (the run was cancelled or handed back meanwhile).
    pub async fn record_steps(
        &self,
        run_id: &str,
        owner: &str,
        steps: Vec<StepRecord>,
        emitted: Vec<NewEvent>,
        now: Millis,
    ) -> Result<bool> {
        dispatch!(self, b => b.record_steps(run_id, owner, steps, emitted, now).await)
    }
    /// Moves a run its owner holds: finish it or park it, with the steps that decided it and
    /// the events it emitted, in one transaction. Returns `false`, changing nothing, when the
    /// run is no longer the owner's to move (cancelled meanwhile).
    pub async fn update_run(
        &self,
        run_id: &str,
        owner: &str,
        steps: Vec<StepRecord>,
        update: RunUpdate,
        emitted: Vec<NewEvent>,
        now: Millis,
    ) -> Result<bool> {
        dispatch!(self, b => b.update_run(run_id, owner, steps, update, emitted, now).await)
    }
    /// Extends the lease of every run `owner` holds to `now + lease_ms`: a live node calls it
    /// well within its lease, so that [`Store::reap_expired`] leaves its runs alone. Returns
    /// how many runs it holds.
    pub async fn heartbeat(&self, owner: &str, now: Millis, lease_ms: i64) -> Result<u64> {
        dispatch!(self, b => b.heartbeat(owner, now, lease_ms).await)
    }
    /// Returns to the queue (due now, no owner) every running run whose lease ran out before
    /// `now`: its owner died or lost the database. Safe with many nodes: a node that only
    /// lost its lease cannot write over the new owner, since every write of a run checks its
    /// owner. Returns how many.
    pub async fn reap_expired(&self, now: Millis) -> Result<u64> {
        dispatch!(self, b => b.reap_expired(now).await)
    }
    /// Returns every run `owner` holds to the queue (a draining shutdown).
    pub async fn release_owned(&self, owner: &str, now: Millis) -> Result<u64> {
        dispatch!(self, b => b.release_owned(owner, now).await)
    }
    /// Returns to the queue every run left `running` by a process that died. Only safe
    /// when no other process runs workers on this store (SQLite's data-directory lock); with
    /// several nodes on PostgreSQL use [`Store::reap_expired`], which takes only runs whose
    /// lease ran out.
    pub async fn recover_orphans(&self, now: Millis) -> Result<u64> {
        dispatch!(self, b => b.recover_orphans(now).await)
    }

    // ---- schedules ----

    /// Cron recipes whose next tick is due.
    pub async fn due_schedules(&self, now: Millis) -> Result<Vec<(String, Millis)>> {
        dispatch!(self, b => b.due_schedules(now).await)
    }
    /// Fires the tick `expected` of a schedule exactly once: moves it to `next` and stores
    /// the event and run, or does nothing (returns `None`) if another node already did.
    pub async fn fire_schedule(&self, recipe_id: &str, expected: Millis, next: Millis, event: NewEvent) -> Result<Option<Accepted>> {
        dispatch!(self, b => b.fire_schedule(recipe_id, expected, next, event).await)
    }

    // ---- run history ----

    pub async fn list_runs(&self, f: &RunFilter) -> Result<Vec<RunRow>> {
        dispatch!(self, b => b.list_runs(f).await)
    }
    /// Counts of runs by status.
    pub async fn run_counts(&self) -> Result<BTreeMap<String, i64>> {
        dispatch!(self, b => b.run_counts().await)
    }
    pub async fn cancel_run(&self, run_id: &str, now: Millis) -> Result<RunRow> {
        dispatch!(self, b => b.cancel_run(run_id, now).await)
    }
    /// Cancels every run of a recipe that has not ended (queued, running, waiting), with
    /// `reason` as their error, in one transaction; returns how many. A worker running one
    /// finds it cancelled at its next write and stops.
    pub async fn cancel_recipe_runs(&self, recipe_id: &str, reason: &str, now: Millis) -> Result<u64> {
        dispatch!(self, b => b.cancel_recipe_runs(recipe_id, reason, now).await)
    }
    /// Queues a failed or cancelled run again from its first unfinished step; completed
    /// steps keep their outputs and are not called again.
    pub async fn replay_run(&self, run_id: &str, r: Replay) -> Result<RunRow> {
        dispatch!(self, b => b.replay_run(run_id, r).await)
    }

    // ---- signed links ----

    /// Signs `data` for a link of kind `context` with the installation's key (see
    /// [`SecretBox::sign_link`]): every node with the same secret key signs alike.
    pub fn sign_link(&self, context: &str, data: &[u8]) -> [u8; 32] {
        dispatch!(self, b => b.secret_box().sign_link(context, data))
    }

    /// Checks a link's signature in constant time.
    pub fn verify_link(&self, context: &str, data: &[u8], signature: &[u8]) -> bool {
        dispatch!(self, b => b.secret_box().verify_link(context, data, signature))
    }

    // ---- secrets ----

    pub async fn set_secret(&self, name: &str, value: &str, now: Millis) -> Result<()> {
        dispatch!(self, b => b.set_secret(name, value, now).await)
    }
    /// The values of the named secrets that exist.
    pub async fn secrets(&self, names: &[String]) -> Result<BTreeMap<String, String>> {
        dispatch!(self, b => b.secrets(names).await)
    }
    pub async fn list_secrets(&self) -> Result<Vec<(String, Millis)>> {
        dispatch!(self, b => b.list_secrets().await)
    }
    pub async fn delete_secret(&self, name: &str) -> Result<bool> {
        dispatch!(self, b => b.delete_secret(name).await)
    }

    // ---- connections ----

    /// Stores a connection, its credentials sealed, with the user's rate limit if any.
    /// `Conflict` when the id is taken; `Invalid` when the rate limit cannot be kept.
    pub async fn create_connection(
        &self,
        id: &str,
        app: &str,
        name: &str,
        credentials: &Credentials,
        rate_limit: Option<RateSpec>,
        now: Millis,
    ) -> Result<ConnectionRow> {
        if let Some(r) = &rate_limit {
            r.check().map_err(|e| StoreError::Invalid(format!("connection `{id}`: {e}")))?;
        }
        dispatch!(self, b => b.create_connection(id, app, name, credentials, rate_limit, now).await)
    }
    pub async fn connection(&self, id: &str) -> Result<Option<(ConnectionRow, Credentials)>> {
        dispatch!(self, b => b.connection(id).await)
    }
    pub async fn list_connections(&self) -> Result<Vec<ConnectionRow>> {
        dispatch!(self, b => b.list_connections().await)
    }
    pub async fn delete_connection(&self, id: &str) -> Result<bool> {
        dispatch!(self, b => b.delete_connection(id).await)
    }
    /// Changes a connection's label (its id, which recipes reference, stays); `None` when
    /// there is no such connection.
    pub async fn rename_connection(&self, id: &str, name: &str, now: Millis) -> Result<Option<ConnectionRow>> {
        dispatch!(self, b => b.rename_connection(id, name, now).await)
    }
    /// Records the outcome of a connection test: `status` (`ok` or `error`), the message,
    /// and `now` as the test time; `None` when there is no such connection.
    pub async fn set_connection_status(&self, id: &str, status: &str, message: &str, now: Millis) -> Result<Option<ConnectionRow>> {
        dispatch!(self, b => b.set_connection_status(id, status, message, now).await)
    }

    /// Replaces a connection's credentials (sealed again), after a sign-in or a token
    /// refresh, and its status with them when `status` is given (`ok`, `needs_reconnect`,
    /// with a message). `None` when there is no such connection.
    pub async fn save_connection_credentials(
        &self,
        id: &str,
        credentials: &Credentials,
        status: Option<(&str, &str)>,
        now: Millis,
    ) -> Result<Option<ConnectionRow>> {
        dispatch!(self, b => b.save_connection_credentials(id, credentials, status, now).await)
    }

    /// Takes the right to refresh a connection's token until `until` (or renews it for the
    /// same `owner`); false while another node or task holds it. One refresh at a time per
    /// connection across every node, so a rotated refresh token is never sent twice.
    pub async fn try_refresh_lease(&self, id: &str, owner: &str, now: Millis, until: Millis) -> Result<bool> {
        dispatch!(self, b => b.try_refresh_lease(id, owner, now, until).await)
    }

    /// Gives back the refresh lease taken by `owner`.
    pub async fn end_refresh_lease(&self, id: &str, owner: &str) -> Result<()> {
        dispatch!(self, b => b.end_refresh_lease(id, owner).await)
    }

    /// Records a sign-in in progress (its `state` hashed, its PKCE verifier sealed); also
    /// forgets expired ones.
    pub async fn begin_authorization(&self, a: PendingAuthorization) -> Result<()> {
        dispatch!(self, b => b.begin_authorization(a).await)
    }

    /// The sign-in a callback's `state` belongs to, taken out of the store (a `state`
    /// works once). `None` for an unknown, used or expired `state`.
    pub async fn take_authorization(&self, state: &str, now: Millis) -> Result<Option<PendingAuthorization>> {
        dispatch!(self, b => b.take_authorization(state, now).await)
    }

    /// Sends the runs held for a connection back to the queue, due now; returns how many.
    pub async fn release_held_runs(&self, connection: &str, now: Millis) -> Result<u64> {
        dispatch!(self, b => b.release_held_runs(connection, now).await)
    }

    // ---- shared rate limits (PostgreSQL) ----

    /// Asks to make one call under the limit `key`: at most `calls` calls in any window of
    /// `per_ms` milliseconds, counted across every node (a sliding window kept in the
    /// database, timed by the database's clock, so the nodes' clocks do not matter). Returns
    /// 0 when the call may go now (it is counted), or how many milliseconds to wait before
    /// asking again (nothing is counted): the rest of a hold ([`Store::rate_hold`]) first,
    /// else until the oldest call in the window leaves it. Only on stores where
    /// [`Store::shared_rate_limits`] is true.
    pub async fn rate_acquire(&self, key: &str, calls: u32, per_ms: i64) -> Result<i64> {
        RateSpec { calls, per_ms }.check().map_err(|e| StoreError::Invalid(format!("rate limit `{key}`: {e}")))?;
        match &self.backend {
            Backend::Postgres(b) => b.rate_acquire(key, calls, per_ms).await,
            Backend::Sqlite(_) => Err(no_shared_limits()),
        }
    }

    /// Holds the limit `key` on every node until `until_ms` (Unix milliseconds), as a
    /// vendor's `Retry-After` asks: [`Store::rate_acquire`] answers with the rest of the
    /// hold. A hold only ever grows (the later of the two ends is kept). Holds last seconds,
    /// so the few milliseconds by which the nodes' clocks differ do not matter. Only on
    /// stores where [`Store::shared_rate_limits`] is true.
    pub async fn rate_hold(&self, key: &str, until_ms: Millis) -> Result<()> {
        match &self.backend {
            Backend::Postgres(b) => b.rate_hold(key, until_ms).await,
            Backend::Sqlite(_) => Err(no_shared_limits()),
        }
    }

    /// The database's clock, in Unix milliseconds: one time for every node.
    pub async fn db_now_ms(&self) -> Result<Millis> {
        dispatch!(self, b => b.db_now_ms().await)
    }

    // ---- API tokens ----

    /// Creates a token; the plain token is returned once and only its hash is kept.
    pub async fn create_token(&self, name: &str, now: Millis) -> Result<(TokenRow, String)> {
        dispatch!(self, b => b.create_token(name, now).await)
    }
    pub async fn verify_token(&self, token: &str) -> Result<Option<TokenRow>> {
        dispatch!(self, b => b.verify_token(token).await)
    }
    pub async fn list_tokens(&self) -> Result<Vec<TokenRow>> {
        dispatch!(self, b => b.list_tokens().await)
    }
    pub async fn revoke_token(&self, name: &str) -> Result<bool> {
        dispatch!(self, b => b.revoke_token(name).await)
    }
}

fn no_shared_limits() -> StoreError {
    StoreError::Config(
        "shared rate limits need a PostgreSQL store; on SQLite the runner limits calls in its own process (check `Store::shared_rate_limits` first)"
            .into(),
    )
}

/// A connection's rate limit from its two columns (both set, or none).
pub(crate) fn rate_spec(calls: Option<i64>, per_ms: Option<i64>) -> Option<RateSpec> {
    match (calls, per_ms) {
        (Some(c), Some(p)) => Some(RateSpec { calls: u32::try_from(c).unwrap_or(u32::MAX), per_ms: p }),
        _ => None,
    }
}

/// The check value that ties a store to one secret key: a fixed text sealed with the key
/// by the first process that opened the store, kept in `meta` as `secret_check`. A process
/// with another key cannot open it, and is refused before it writes secrets nobody else
/// can read.
pub(crate) mod secret_check {
    use crate::{SecretBox, StoreError};

    const CONTEXT: &str = "meta:secret_check";
    const PLAIN: &[u8] = b"enlace secret key check, version 1";

    fn wrong_key() -> StoreError {
        StoreError::Config(
            "this node's secret key is not the one the store's secrets were encrypted with; give every node the same ENLACE_SECRET_KEY (or, on SQLite, restore the data directory's original secret.key)"
                .into(),
        )
    }

    pub(crate) fn seal(secrets: &SecretBox) -> Result<Vec<u8>, StoreError> {
        secrets.seal(CONTEXT, PLAIN)
    }

    /// Checks the stored check value against this process's key.
    pub(crate) fn verify(secrets: &SecretBox, sealed: &[u8]) -> Result<(), StoreError> {
        match secrets.open(CONTEXT, sealed) {
            Ok(p) if p == PLAIN => Ok(()),
            _ => Err(wrong_key()),
        }
    }

    /// Checks a stored secret (of a store older than the check value) against the key.
    pub(crate) fn verify_sample(secrets: &SecretBox, context: &str, sealed: &[u8]) -> Result<(), StoreError> {
        secrets.open(context, sealed).map(|_| ()).map_err(|_| wrong_key())
    }
}

fn rand_key() -> [u8; 32] {
    use rand::RngCore;
    let mut k = [0u8; 32];
    rand::rng().fill_bytes(&mut k);
    k
}

/// A new id: UUIDv7, time-ordered, so ids sort by creation.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Hashes an API token for storage and lookup.
pub fn token_hash(token: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}
