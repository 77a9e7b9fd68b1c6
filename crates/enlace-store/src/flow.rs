//! Counts for the web UI's Journeys page: over a window, how many runs of each recipe are in
//! each status, and how many runs reached each step with each outcome (from the journal).
//!
//! Two grouped reads, written for each backend (the same SQL, with each one's placeholders),
//! over the runs created at or after `since`: the run counts scan `runs` (no index on
//! `created_at`, on purpose: every index is written on every accepted event), the step counts
//! join each of those runs to its journal rows by the journal's primary key `(run_id, key)`.
//! A step that ran several times in one run (a loop, a retry recorded under its key) counts
//! that run once per status.

use serde::Serialize;
use sqlx::Row;

use crate::{Backend, Millis, Result, Store};

/// Runs of one recipe whose journal has `step_id` in `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepCount {
    pub recipe_id: String,
    pub step_id: String,
    /// The journal's status: `running`, `succeeded`, `failed`, `retrying`, `waiting`,
    /// `filtered`, `cancelled`.
    pub status: String,
    pub runs: i64,
}

/// Runs of one recipe in `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunCount {
    pub recipe_id: String,
    pub status: String,
    pub runs: i64,
}

/// Both counts, sorted by recipe, step and status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FlowCounts {
    pub runs: Vec<RunCount>,
    pub steps: Vec<StepCount>,
}

const RUNS_SQLITE: &str =
    "SELECT recipe_id, status, COUNT(*) AS n FROM runs WHERE created_at >= ? GROUP BY recipe_id, status ORDER BY recipe_id, status";
const STEPS_SQLITE: &str = "SELECT r.recipe_id, s.step_id, s.status, COUNT(DISTINCT s.run_id) AS n FROM runs r JOIN steps s ON s.run_id = r.id \
     WHERE r.created_at >= ? GROUP BY r.recipe_id, s.step_id, s.status ORDER BY r.recipe_id, s.step_id, s.status";
const RUNS_PG: &str =
    "SELECT recipe_id, status, COUNT(*) AS n FROM runs WHERE created_at >= $1 GROUP BY recipe_id, status ORDER BY recipe_id, status";
const STEPS_PG: &str = "SELECT r.recipe_id, s.step_id, s.status, COUNT(DISTINCT s.run_id) AS n FROM runs r JOIN steps s ON s.run_id = r.id \
     WHERE r.created_at >= $1 GROUP BY r.recipe_id, s.step_id, s.status ORDER BY r.recipe_id, s.step_id, s.status";

macro_rules! counts {
    ($runs:expr, $steps:expr) => {
        FlowCounts {
            runs: $runs.iter().map(|r| RunCount { recipe_id: r.get("recipe_id"), status: r.get("status"), runs: r.get("n") }).collect(),
            steps: $steps
                .iter()
                .map(|r| StepCount { recipe_id: r.get("recipe_id"), step_id: r.get("step_id"), status: r.get("status"), runs: r.get("n") })
                .collect(),
        }
    };
}

impl Store {
    /// Run and step counts of the runs created at or after `since` (see the module's
    /// documentation).
    pub async fn flow_counts(&self, since: Millis) -> Result<FlowCounts> {
        match &self.backend {
            Backend::Sqlite(b) => {
                let mut c = b.read_conn().await?;
                let runs = sqlx::query(RUNS_SQLITE).bind(since).fetch_all(&mut *c).await?;
                let steps = sqlx::query(STEPS_SQLITE).bind(since).fetch_all(&mut *c).await?;
                Ok(counts!(runs, steps))
            }
            Backend::Postgres(b) => {
                let mut c = b.pool_conn().await?;
                let runs = sqlx::query(RUNS_PG).bind(since).fetch_all(&mut *c).await?;
                let steps = sqlx::query(STEPS_PG).bind(since).fetch_all(&mut *c).await?;
                Ok(counts!(runs, steps))
            }
        }
    }
}
