//! Run history: list and filter, detail with every step, replay, cancel.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use enlace_store::{RunDetail, RunFilter, RunRow, RunStatus, StepRecord};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::recipes::ts;
use crate::AppState;
use crate::error::{ApiError, ApiResult, ErrorBody};

#[derive(Debug, Serialize, ToSchema)]
pub struct RunView {
    pub id: String,
    pub recipe_id: String,
    pub recipe_version: i64,
    /// queued, running, waiting, succeeded, filtered, failed or cancelled.
    pub status: String,
    /// 1, then one more per replay.
    pub attempt: i64,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// For a queued or waiting run: when it continues.
    pub due_at: Option<String>,
    /// Why it failed: `{class, message, hint, step, ...}`.
    #[schema(value_type = Option<Object>)]
    pub error: Option<Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RunList {
    pub runs: Vec<RunView>,
    /// Pass as `before` to get the next (older) page; absent on the last page.
    pub next: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventView {
    pub id: String,
    pub source: String,
    pub dedupe_key: Option<String>,
    pub received_at: String,
    #[schema(value_type = Object)]
    pub payload: Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StepView {
    /// The step id, or `loop[2].step` inside a foreach.
    pub key: String,
    pub step_id: String,
    pub kind: String,
    /// running, succeeded, failed, retrying, waiting, filtered or cancelled.
    pub status: String,
    pub attempts: i64,
    /// The input as sent, secrets masked.
    #[schema(value_type = Option<Object>)]
    pub input: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub output: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub error: Option<Value>,
    /// Sent to APIs that accept one: the same on every retry and replay.
    pub idempotency_key: Option<String>,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub duration_ms: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RunDetailView {
    #[serde(flatten)]
    pub run: RunView,
    pub event: EventView,
    pub steps: Vec<StepView>,
}

pub(crate) fn run_view(r: &RunRow) -> RunView {
    RunView {
        id: r.id.clone(),
        recipe_id: r.recipe_id.clone(),
        recipe_version: r.recipe_version,
        status: r.status.as_str().into(),
        attempt: r.attempt,
        created_at: ts(r.created_at),
        started_at: r.started_at.map(ts),
        finished_at: r.finished_at.map(ts),
        due_at: if matches!(r.status, RunStatus::Queued | RunStatus::Waiting) { r.due_at.map(ts) } else { None },
        error: r.error.clone(),
    }
}

fn step_view(s: &StepRecord) -> StepView {
    StepView {
        key: s.key.clone(),
        step_id: s.step_id.clone(),
        kind: s.kind.clone(),
        status: s.status.as_str().into(),
        attempts: s.attempts,
        input: s.input.clone(),
        output: s.output.clone(),
        error: s.error.clone(),
        idempotency_key: s.idempotency_key.clone(),
        started_at: ts(s.started_at),
        finished_at: s.finished_at.map(ts),
        duration_ms: s.finished_at.map(|f| f - s.started_at),
    }
}

pub fn detail_view(d: &RunDetail) -> RunDetailView {
    RunDetailView {
        run: run_view(&d.run),
        event: EventView {
            id: d.event.id.clone(),
            source: d.event.source.clone(),
            dedupe_key: d.event.dedupe_key.clone(),
            received_at: ts(d.event.received_at),
            payload: d.event.payload.clone(),
        },
        steps: d.steps.iter().map(step_view).collect(),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only runs of this recipe.
    pub recipe: Option<String>,
    /// Only runs with this status.
    pub status: Option<String>,
    /// Only runs created at or after this time (RFC 3339).
    pub since: Option<String>,
    /// Only runs created before this time (RFC 3339).
    pub until: Option<String>,
    /// The `next` of the previous page.
    pub before: Option<String>,
    /// Page size, 1 to 1000 (default 50).
    pub limit: Option<i64>,
}

fn parse_time(field: &str, v: &Option<String>) -> ApiResult<Option<i64>> {
    match v {
        None => Ok(None),
        Some(t) => chrono::DateTime::parse_from_rfc3339(t)
            .map(|d| Some(d.timestamp_millis()))
            .map_err(|_| ApiError::invalid(field, format!("`{t}` is not an RFC 3339 time, like 2026-11-25T18:00:00Z"))),
    }
}

/// Runs, newest first, filtered by recipe, status and time.
#[utoipa::path(get, path = "/api/v1/runs", tag = "runs", params(ListQuery), responses((status = 200, body = RunList), (status = 400, body = ErrorBody)))]
pub async fn list(State(s): State<AppState>, Query(q): Query<ListQuery>) -> ApiResult<Json<RunList>> {
    let status = match &q.status {
        None => None,
        Some(st) => Some(RunStatus::parse(st).ok_or_else(|| {
            ApiError::invalid(
                "status",
                format!("unknown status `{st}`; valid: {}", RunStatus::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")),
            )
        })?),
    };
    let limit = q.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be between 1 and 1000"));
    }
    let filter = RunFilter {
        recipe_id: q.recipe.clone(),
        status,
        since: parse_time("since", &q.since)?,
        until: parse_time("until", &q.until)?,
        before: q.before.clone(),
        limit,
    };
    let rows = s.runner.store().list_runs(&filter).await?;
    let next = if rows.len() as i64 == limit { rows.last().map(|r| r.id.clone()) } else { None };
    Ok(Json(RunList { runs: rows.iter().map(run_view).collect(), next }))
}

/// One run with its event and every step's input, output, attempts and timing (secrets masked).
#[utoipa::path(get, path = "/api/v1/runs/{id}", tag = "runs", params(("id" = String, Path)), responses((status = 200, body = RunDetailView), (status = 404, body = ErrorBody)))]
pub async fn get(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<RunDetailView>> {
    let d = s.runner.store().run_detail(&id).await?.ok_or_else(|| ApiError::not_found(format!("no run `{id}`")))?;
    Ok(Json(detail_view(&d)))
}

#[derive(Debug, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    /// Run the recipe's current version instead of the version the run started with.
    #[serde(default)]
    pub latest_version: bool,
}

/// Replays a failed or cancelled run from its failed step. Completed steps keep their outputs and are not called again.
#[utoipa::path(post, path = "/api/v1/runs/{id}/replay", tag = "runs", params(("id" = String, Path)), request_body(content = Option<ReplayRequest>, content_type = "application/json"),
    responses((status = 200, body = RunView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn replay(State(s): State<AppState>, Path(id): Path<String>, body: Bytes) -> ApiResult<Json<RunView>> {
    let req: ReplayRequest = if body.iter().all(u8::is_ascii_whitespace) {
        ReplayRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(crate::error::Code::InvalidJson, format!("the body must be `{{\"latest_version\": true|false}}` or empty: {e}"))
        })?
    };
    let row = s.runner.replay(&id, req.latest_version).await?;
    Ok(Json(run_view(&row)))
}

/// Cancels a queued, running or waiting run.
#[utoipa::path(post, path = "/api/v1/runs/{id}/cancel", tag = "runs", params(("id" = String, Path)), responses((status = 200, body = RunView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn cancel(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<RunView>> {
    let row = s.runner.cancel(&id).await?;
    Ok(Json(run_view(&row)))
}
