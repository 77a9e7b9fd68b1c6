//! What the store hands out and takes in.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Milliseconds since the Unix epoch, UTC.
pub type Millis = i64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Queued,
    Running,
    Waiting,
    Succeeded,
    Filtered,
    Failed,
    Cancelled,
}

impl RunStatus {
    pub const ALL: [RunStatus; 7] = [
        RunStatus::Queued,
        RunStatus::Running,
        RunStatus::Waiting,
        RunStatus::Succeeded,
        RunStatus::Filtered,
        RunStatus::Failed,
        RunStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Waiting => "waiting",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Filtered => "filtered",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<RunStatus> {
        RunStatus::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// A finished run changes no more (until a replay).
    pub fn is_final(self) -> bool {
        matches!(self, RunStatus::Succeeded | RunStatus::Filtered | RunStatus::Failed | RunStatus::Cancelled)
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// The call started and has no outcome yet (a marker written before non-idempotent calls).
    Running,
    Succeeded,
    Failed,
    /// Failed, another attempt is scheduled.
    Retrying,
    /// A delay not yet over.
    Waiting,
    /// A filter that stopped the run.
    Filtered,
    Cancelled,
}

impl StepStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Running => "running",
            StepStatus::Succeeded => "succeeded",
            StepStatus::Failed => "failed",
            StepStatus::Retrying => "retrying",
            StepStatus::Waiting => "waiting",
            StepStatus::Filtered => "filtered",
            StepStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<StepStatus> {
        [
            StepStatus::Running,
            StepStatus::Succeeded,
            StepStatus::Failed,
            StepStatus::Retrying,
            StepStatus::Waiting,
            StepStatus::Filtered,
            StepStatus::Cancelled,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

/// A recipe as stored: its current version and flags.
#[derive(Debug, Clone, Serialize)]
pub struct RecipeRow {
    pub id: String,
    pub version: i64,
    pub enabled: bool,
    pub origin: String,
    pub hook_path: Option<String>,
    pub event_name: Option<String>,
    pub is_cron: bool,
    pub created_at: Millis,
    pub updated_at: Millis,
}

#[derive(Debug, Clone, Serialize)]
pub struct RecipeVersion {
    pub recipe_id: String,
    pub version: i64,
    pub body: Value,
    pub created_at: Millis,
}

/// What saving a recipe needs: the checked recipe's source and the names the store indexes.
#[derive(Debug, Clone)]
pub struct SaveRecipe {
    pub id: String,
    pub body: Value,
    pub enabled: bool,
    pub origin: String,
    pub hook_path: Option<String>,
    pub event_name: Option<String>,
    pub cron: Option<CronSpec>,
}

#[derive(Debug, Clone)]
pub struct CronSpec {
    pub expression: String,
    pub timezone: String,
    /// The first tick to fire.
    pub next_at: Millis,
}

/// The outcome of saving a recipe.
#[derive(Debug, Clone, Serialize)]
pub struct Saved {
    pub recipe: RecipeRow,
    /// False when the body was the same as the current version's: nothing changed.
    pub new_version: bool,
}

/// An event to accept into the inbox, with the run it starts.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub recipe_id: String,
    pub recipe_version: i64,
    pub source: String,
    pub dedupe_key: Option<String>,
    /// The event as JSON text (the caller serialises it, so that it keeps its value).
    pub payload: String,
    /// The node that runs it at once (the run is stored as `running`, leased to it), or
    /// `None` to queue it for any worker.
    pub owner: Option<String>,
    pub lease_ms: i64,
    pub now: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Accepted {
    pub run_id: String,
    pub event_id: String,
    /// The dedupe key was seen before: no new run; `run_id` is the first one's.
    pub duplicate: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunRow {
    pub id: String,
    pub recipe_id: String,
    pub recipe_version: i64,
    pub event_id: String,
    pub status: RunStatus,
    pub due_at: Option<Millis>,
    pub attempt: i64,
    pub owner: Option<String>,
    pub replay_of: Option<String>,
    pub error: Option<Value>,
    pub created_at: Millis,
    pub started_at: Option<Millis>,
    pub finished_at: Option<Millis>,
    pub updated_at: Millis,
}

#[derive(Debug, Clone, Serialize)]
pub struct EventRow {
    pub id: String,
    pub recipe_id: String,
    pub source: String,
    pub dedupe_key: Option<String>,
    pub payload: Value,
    pub received_at: Millis,
}

/// One step's journal entry.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StepRecord {
    pub key: String,
    pub seq: i64,
    pub step_id: String,
    pub kind: String,
    pub status: StepStatus,
    pub input: Option<Value>,
    pub output: Option<Value>,
    pub error: Option<Value>,
    pub attempts: i64,
    pub idempotency_key: Option<String>,
    pub started_at: Millis,
    pub finished_at: Option<Millis>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunDetail {
    pub run: RunRow,
    pub event: EventRow,
    pub steps: Vec<StepRecord>,
}

/// A run a worker now owns.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub run_id: String,
    pub recipe_id: String,
    pub recipe_version: i64,
}

/// How a worker leaves a run it owns.
#[derive(Debug, Clone)]
pub enum RunUpdate {
    /// Finished: succeeded, filtered, failed or cancelled.
    Finish { status: RunStatus, error: Option<Value> },
    /// Back to the queue until `due_at`: `Queued` for a retry, `Waiting` for a delay.
    Park { status: RunStatus, due_at: Millis },
    /// `Waiting` with no due time, until the connection is repaired
    /// ([`crate::Store::release_held_runs`]).
    Hold { connection: String },
}

/// A sign-in in progress (OAuth2 authorization code grant), between the redirect to the
/// authorization server and the callback.
#[derive(Clone)]
pub struct PendingAuthorization {
    /// The `state` sent out; stored only as its hash.
    pub state: String,
    pub connection_id: String,
    /// The PKCE verifier; sealed at rest.
    pub verifier: String,
    pub redirect_uri: String,
    pub created_at: Millis,
    pub expires_at: Millis,
}

impl std::fmt::Debug for PendingAuthorization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingAuthorization")
            .field("connection_id", &self.connection_id)
            .field("redirect_uri", &self.redirect_uri)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// Events a finishing step publishes (`emit`), stored in the same transaction.
#[derive(Debug, Clone)]
pub struct Emitted {
    pub events: Vec<NewEvent>,
}

#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub recipe_id: Option<String>,
    pub status: Option<RunStatus>,
    /// Only runs created at or after this time.
    pub since: Option<Millis>,
    /// Only runs created before this time.
    pub until: Option<Millis>,
    /// Keyset pagination: runs created before this run (its id).
    pub before: Option<String>,
    pub limit: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConnectionRow {
    pub id: String,
    pub app: String,
    pub name: String,
    /// `untested` until a test runs, then `ok` or `error`.
    pub status: String,
    /// What the last test found (the app's answer), when one ran.
    pub status_message: Option<String>,
    /// When the last test ran.
    pub tested_at: Option<Millis>,
    /// The user's limit on calls made with this connection (on top of the app's own).
    pub rate_limit: Option<RateSpec>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// At most `calls` calls in any window of `per_ms` milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateSpec {
    pub calls: u32,
    pub per_ms: i64,
}

impl RateSpec {
    /// Checks that the limit can be kept: at least one call, in a window of at least 1 ms.
    pub fn check(&self) -> Result<(), String> {
        if self.calls == 0 {
            return Err("a rate limit must allow at least 1 call (`calls` is 0); remove the limit to allow any rate".into());
        }
        if self.per_ms <= 0 {
            return Err(format!("a rate limit's window must be at least 1 ms (`per_ms` is {})", self.per_ms));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TokenRow {
    pub id: String,
    pub name: String,
    pub created_at: Millis,
    pub last_used_at: Option<Millis>,
}

/// What `replay` does.
#[derive(Debug, Clone)]
pub struct Replay {
    /// Run the recipe's current version instead of the run's own.
    pub latest_version: Option<i64>,
    pub now: Millis,
}
