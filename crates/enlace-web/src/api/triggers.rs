//! A recipe's connector trigger: the poll state (cursor, last and next poll, last error),
//! the batches the flood guard held (approve or discard), rewinds with a preview, and the
//! subscription of a subscribe trigger.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use enlace_core::duration::format_duration;
use enlace_runner::{RewindOutcome, TriggerStatus};
use enlace_store::HeldBatch;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::AppState;
use crate::api::recipes::ts;
use crate::error::{ApiError, ApiResult, Code, ErrorBody};

/// A recipe's trigger state.
#[derive(Debug, Serialize, ToSchema)]
pub struct TriggerStateView {
    pub recipe_id: String,
    /// `polling` or `subscribe`.
    pub kind: String,
    pub enabled: bool,
    /// Polling: how often (`5m`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub every: Option<String>,
    /// Polling: a poll that finds more new items than this holds them for approval.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold_above: Option<u32>,
    /// Where the next poll starts (the app's own cursor text).
    pub cursor: Option<String>,
    /// When the first poll recorded what was there (nothing fires before that).
    pub seeded_at: Option<String>,
    pub last_polled_at: Option<String>,
    pub next_poll_at: Option<String>,
    /// The classified error of the last poll (`class`, `message`, `hint`, `next_poll_at`).
    #[schema(value_type = Option<Object>)]
    pub last_error: Option<Value>,
    /// An auth error paused polling until the connection is repaired.
    pub paused: bool,
    /// Batches held by the flood guard, newest first.
    pub held: Vec<HeldBatchView>,
    /// How many items wait in held batches.
    pub held_items: i64,
    /// The latest cursor changes, newest first (rewinds pick from these).
    pub cursor_history: Vec<CursorView>,
    /// Subscribe: `{id, target_url, expires_at, created_at, updated_at}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub subscription: Option<Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HeldBatchView {
    pub id: String,
    pub count: i64,
    /// `held`, `approved` or `discarded`.
    pub status: String,
    pub created_at: String,
    pub decided_at: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CursorView {
    pub cursor: Option<String>,
    pub at: String,
    /// `seed`, `poll` or `rewind`.
    pub reason: String,
}

/// `POST /api/v1/recipes/{id}/trigger/rewind`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RewindRequest {
    /// An RFC 3339 time: the trigger goes back to its cursor as of then.
    pub to: String,
    /// Only list what would fire (the default); `false` moves the cursor back, and the next
    /// poll (at once) fires the items.
    #[serde(default)]
    pub preview: Option<bool>,
    /// Fire again the items that fired at or after `to` (otherwise they are skipped).
    #[serde(default)]
    pub refire: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RewindView {
    pub recipe_id: String,
    pub cursor: Option<String>,
    /// Since when that cursor was in effect.
    pub cursor_since: String,
    pub preview: bool,
    pub refire: bool,
    /// How many of `items` would start a run.
    pub would_fire: usize,
    /// What a poll from that cursor returns now, oldest first.
    pub items: Vec<RewindItemView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RewindItemView {
    /// The item's dedupe key.
    pub key: String,
    pub already_fired: bool,
    pub fired_at: Option<String>,
    pub would_fire: bool,
    /// The item as the app gave it (the run's `trigger`).
    #[schema(value_type = Object)]
    pub event: Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DecisionView {
    pub batch: HeldBatchView,
    /// The runs an approval started, oldest item first.
    pub run_ids: Vec<String>,
}

pub fn batch_view(b: &HeldBatch) -> HeldBatchView {
    HeldBatchView {
        id: b.id.clone(),
        count: b.count,
        status: b.status.clone(),
        created_at: ts(b.created_at),
        decided_at: b.decided_at.map(ts),
    }
}

/// The state of a recipe's connector trigger: cursor, last and next poll, last error, held batches; or its subscription.
#[utoipa::path(get, path = "/api/v1/recipes/{id}/trigger", tag = "triggers", params(("id" = String, Path)),
    responses((status = 200, body = TriggerStateView), (status = 400, description = "The recipe's trigger is not a polling or subscribe trigger", body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn show(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<TriggerStateView>> {
    Ok(Json(state_view(&s.runner.trigger_status(&id).await?)))
}

/// The API's (and the CLI's) view of a trigger's state.
pub fn state_view(t: &TriggerStatus) -> TriggerStateView {
    let st = t.state.as_ref();
    let held_items = t.held.iter().filter(|b| b.status == "held").map(|b| b.count).sum();
    TriggerStateView {
        recipe_id: t.recipe_id.clone(),
        kind: t.kind.to_string(),
        enabled: t.enabled,
        every: t.every.map(format_duration),
        hold_above: t.hold_above,
        cursor: st.and_then(|s| s.cursor.clone()),
        seeded_at: st.and_then(|s| s.seeded_at).map(ts),
        last_polled_at: st.and_then(|s| s.last_polled_at).map(ts),
        next_poll_at: st.map(|s| ts(s.next_poll_at)),
        last_error: st.and_then(|s| s.last_error.clone()),
        paused: st.is_some_and(|s| s.paused),
        held: t.held.iter().map(batch_view).collect(),
        held_items,
        cursor_history: t
            .cursor_history
            .iter()
            .map(|c| CursorView { cursor: c.cursor.clone(), at: ts(c.at), reason: c.reason.clone() })
            .collect(),
        subscription: t.subscription.clone(),
    }
}

/// Rewinds a polling trigger to its cursor as of `to`. With `preview` (the default) it only lists what would fire; otherwise the next poll fires it (items that fired already are skipped unless `refire`).
#[utoipa::path(post, path = "/api/v1/recipes/{id}/trigger/rewind", tag = "triggers", params(("id" = String, Path)), request_body = RewindRequest,
    responses((status = 200, body = RewindView), (status = 400, body = ErrorBody), (status = 404, description = "No recipe, or no cursor as of `to`", body = ErrorBody), (status = 409, description = "Polling from that cursor failed, or a poll is in progress", body = ErrorBody)))]
pub async fn rewind(State(s): State<AppState>, Path(id): Path<String>, body: Bytes) -> ApiResult<Json<RewindView>> {
    let req: RewindRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            Code::InvalidJson,
            format!("the body must be `{{\"to\": \"2026-11-25T09:00:00Z\", \"preview\": true, \"refire\": false}}`: {e}"),
        )
    })?;
    let to = chrono::DateTime::parse_from_rfc3339(req.to.trim())
        .map_err(|e| ApiError::invalid("to", format!("`{}` is not an RFC 3339 time ({e}); write one like 2026-11-25T09:00:00Z", req.to)))?
        .timestamp_millis();
    let preview = req.preview.unwrap_or(true);
    Ok(Json(rewind_view(s.runner.rewind_trigger(&id, to, preview, req.refire).await?)))
}

/// The API's (and the CLI's) view of a rewind.
pub fn rewind_view(out: RewindOutcome) -> RewindView {
    RewindView {
        recipe_id: out.recipe_id,
        cursor: out.cursor,
        cursor_since: ts(out.cursor_since),
        preview: out.preview,
        refire: out.refire,
        would_fire: out.would_fire,
        items: out
            .items
            .into_iter()
            .map(|i| RewindItemView {
                key: i.key,
                already_fired: i.already_fired,
                fired_at: i.fired_at.map(ts),
                would_fire: i.would_fire,
                event: i.event,
            })
            .collect(),
    }
}

/// Approves a batch the flood guard held: every item starts its run, once.
#[utoipa::path(post, path = "/api/v1/recipes/{id}/trigger/held/{batch}/approve", tag = "triggers", params(("id" = String, Path), ("batch" = String, Path)),
    responses((status = 200, body = DecisionView), (status = 404, body = ErrorBody), (status = 409, description = "The batch was approved or discarded already", body = ErrorBody)))]
pub async fn approve(State(s): State<AppState>, Path((id, batch)): Path<(String, String)>) -> ApiResult<Json<DecisionView>> {
    decide(&s, &id, &batch, true).await
}

/// Discards a batch the flood guard held: its items start nothing and stay seen.
#[utoipa::path(post, path = "/api/v1/recipes/{id}/trigger/held/{batch}/discard", tag = "triggers", params(("id" = String, Path), ("batch" = String, Path)),
    responses((status = 200, body = DecisionView), (status = 404, body = ErrorBody), (status = 409, description = "The batch was approved or discarded already", body = ErrorBody)))]
pub async fn discard(State(s): State<AppState>, Path((id, batch)): Path<(String, String)>) -> ApiResult<Json<DecisionView>> {
    decide(&s, &id, &batch, false).await
}

async fn decide(s: &AppState, id: &str, batch: &str, approve: bool) -> ApiResult<Json<DecisionView>> {
    let (b, runs) = s.runner.decide_held(id, batch, approve).await?;
    Ok(Json(DecisionView { batch: batch_view(&b), run_ids: runs.into_iter().map(|a| a.run_id).collect() }))
}
