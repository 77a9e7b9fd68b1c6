//! The send policy: its settings (`GET/PUT /api/v1/policy`), and the messages held for
//! approval above a recipe's limits (`GET /api/v1/approvals`, `POST
//! /api/v1/recipes/{id}/approvals`).

use axum::Json;
use axum::extract::{Path, Query, State};
use enlace_core::ConnectorError;
use enlace_core::policy::PolicySettings;
use enlace_store::LedgerRow;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::recipes::ts;
use crate::AppState;
use crate::error::{ApiError, ApiResult, ErrorBody};

/// The installation's send policy: `default_timezone` (IANA; contacts without a valid
/// `timezone` field), `quiet_hours` `{start, end}` (`HH:MM` local; none: no quiet hours),
/// `channels` (per channel: `cap` `{max, per}` on messages that are not transactional,
/// `quiet_hours` of its own), `all_channels` (a cap over every channel together).
#[utoipa::path(get, path = "/api/v1/policy", tag = "policy", responses((status = 200, body = Object)))]
pub async fn get(State(s): State<AppState>) -> ApiResult<Json<Value>> {
    let p = s.runner.store().policy_settings().await?;
    Ok(Json(serde_json::to_value(p).unwrap_or(Value::Null)))
}

/// Replaces the send policy. Every field is checked: a wrong one is refused with its path
/// and what is allowed; nothing changes then. It applies to the next decision of every run.
#[utoipa::path(put, path = "/api/v1/policy", tag = "policy", request_body = Object, responses((status = 200, body = Object), (status = 400, body = ErrorBody)))]
pub async fn put(State(s): State<AppState>, Json(body): Json<Value>) -> ApiResult<Json<Value>> {
    let p: PolicySettings = match enlace_core::action::decode_input(body) {
        Ok(p) => p,
        Err(ConnectorError::BadInput { path, message }) => return Err(ApiError::invalid(&path, message)),
        Err(e) => return Err(ApiError::invalid("", e.to_string())),
    };
    if let Some((path, _)) = p.check().first() {
        let all: Vec<String> = p.check().into_iter().map(|(p, m)| format!("{p}: {m}")).collect();
        return Err(ApiError::invalid(path, all.join("; ")));
    }
    s.runner.store().set_policy_settings(&p, s.runner.now_ms()).await?;
    Ok(Json(serde_json::to_value(p).unwrap_or(Value::Null)))
}

/// A message held for approval (one row per recipient).
#[derive(Debug, Serialize, ToSchema)]
pub struct HeldView {
    /// The message: approve or reject it by this key.
    pub message: String,
    pub recipe: String,
    pub run_id: String,
    pub step: String,
    pub recipient: String,
    pub contact_id: Option<String>,
    pub channel: String,
    pub purpose: String,
    pub transactional: bool,
    /// `held`, or after a decision `approved` / `rejected`.
    pub status: String,
    /// Why it is held (the limit it would pass).
    pub reason: Option<String>,
    pub held_at: String,
}

pub fn held_view(r: LedgerRow) -> HeldView {
    HeldView {
        message: r.message_key,
        recipe: r.recipe_id,
        run_id: r.run_id,
        step: r.step_key,
        recipient: r.recipient,
        contact_id: r.contact_id,
        channel: r.channel,
        purpose: r.purpose,
        transactional: r.transactional,
        status: r.status,
        reason: r.reason,
        held_at: ts(r.decided_at),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct HeldQuery {
    /// Only this recipe's.
    pub recipe: Option<String>,
}

/// Messages held for approval because their recipe passed its `limits`, oldest first.
#[utoipa::path(get, path = "/api/v1/approvals", tag = "policy", params(HeldQuery), responses((status = 200, body = Vec<HeldView>)))]
pub async fn list(State(s): State<AppState>, Query(q): Query<HeldQuery>) -> ApiResult<Json<Vec<HeldView>>> {
    let rows = s.runner.store().held_sends(q.recipe.as_deref()).await?;
    Ok(Json(rows.into_iter().map(held_view).collect()))
}

/// What to do with a recipe's held messages.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApprovalRequest {
    /// `approve` (they are sent, above the limits) or `reject` (they are not; their runs go on
    /// with the step blocked).
    pub decision: String,
    /// Only these messages (the `message` of `GET /api/v1/approvals`); all when absent.
    #[serde(default)]
    pub messages: Option<Vec<String>>,
}

/// What was decided.
#[derive(Debug, Serialize, ToSchema)]
pub struct Decided {
    pub decided: Vec<HeldView>,
}

/// Approves or rejects a recipe's messages held for approval; their runs go on at once.
#[utoipa::path(post, path = "/api/v1/recipes/{id}/approvals", tag = "policy", params(("id" = String, Path)), request_body = ApprovalRequest, responses((status = 200, body = Decided), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn decide(State(s): State<AppState>, Path(id): Path<String>, Json(r): Json<ApprovalRequest>) -> ApiResult<Json<Decided>> {
    let approve = match r.decision.as_str() {
        "approve" => true,
        "reject" => false,
        other => return Err(ApiError::invalid("decision", format!("`{other}` is not a decision; use `approve` or `reject`"))),
    };
    if s.runner.store().get_recipe(&id).await?.is_none() {
        return Err(ApiError::not_found(format!("no recipe `{id}`")));
    }
    let rows = s.runner.store().decide_held_sends(&id, r.messages, approve, s.runner.now_ms()).await?;
    Ok(Json(Decided { decided: rows.into_iter().map(held_view).collect() }))
}
