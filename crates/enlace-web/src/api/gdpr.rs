//! GDPR: export everything stored about a contact, erase a contact (with its run history
//! redacted, its pending runs cancelled and its ad audience removals queued), look up
//! erasures, and read the ad audience removal queue. See `docs/gdpr.md`.

use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use enlace_core::contacts::ContactKey;
use enlace_store::StoreError;
use enlace_store::gdpr::{AudienceRemovalRow, Erasure};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::auth::Caller;
use super::recipes::ts;
use crate::AppState;
use crate::error::{ApiError, ApiResult, Code, ErrorBody};

/// The record an erasure leaves: no personal data, only keyed hashes.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErasureView {
    pub id: String,
    /// The erased contact's id.
    pub contact_id: String,
    /// Hex HMAC-SHA256 of the normalised email, keyed with the installation's secret key.
    pub email_hash: String,
    /// The same of the E.164 phone, if the contact had one.
    pub phone_hash: Option<String>,
    /// The withdrawals the phone number had sent itself (`purpose:channel`, an SMS STOP):
    /// the number stays suppressed after the erasure.
    pub phone_withdrawn: Vec<String>,
    /// Who asked: `api:<token name>` or `cli`.
    pub erased_by: String,
    pub erased_at: String,
    /// Runs whose history had the contact's data replaced by `[erased]`.
    pub runs_redacted: i64,
    /// Pending runs about the contact that were cancelled.
    pub runs_cancelled: i64,
    /// Ad audience removals queued (see `/api/v1/audience-removals`).
    pub removals_queued: i64,
}

pub(crate) fn erasure_view(e: Erasure) -> ErasureView {
    ErasureView {
        id: e.id,
        contact_id: e.contact_id,
        email_hash: e.email_hash,
        phone_hash: e.phone_hash,
        phone_withdrawn: e.phone_withdrawn,
        erased_by: e.erased_by,
        erased_at: ts(e.erased_at),
        runs_redacted: e.runs_redacted,
        runs_cancelled: e.runs_cancelled,
        removals_queued: e.removals_queued,
    }
}

/// The `erased` error for a contact id that was erased.
pub(crate) fn erased(id: &str, e: &Erasure) -> ApiError {
    ApiError::new(
        Code::Erased,
        format!("the contact `{id}` was erased at {} (erasure `{}`); nothing about it is kept", ts(e.erased_at), e.id),
    )
}

/// A 404 for a contact id, or `erased` (410) when it was erased.
pub(crate) async fn missing(s: &AppState, id: &str) -> ApiError {
    match s.runner.store().erasure_of(id).await {
        Ok(Some(e)) => erased(id, &e),
        _ => ApiError::not_found(format!("no contact `{id}`")),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// The `runs_next` of the previous page: the runs after it.
    pub runs_after: Option<String>,
    /// Runs per page (1 to 1000, default 100).
    pub runs_limit: Option<i64>,
}

/// Everything stored about a contact, as one JSON document: the contact, its tags, every
/// consent decision with its evidence, notes, the whole timeline, its phone's suppression
/// decisions, its ad audience memberships, and the runs about it with their events and
/// steps (a page at a time: follow `runs_next`). `docs/gdpr.md` describes every field.
#[utoipa::path(get, path = "/api/v1/contacts/{id}/export", tag = "contacts", params(("id" = String, Path), ExportQuery),
    responses((status = 200, body = Object), (status = 404, body = ErrorBody), (status = 410, body = ErrorBody)))]
pub async fn export(State(s): State<AppState>, Path(id): Path<String>, Query(q): Query<ExportQuery>) -> ApiResult<Json<Value>> {
    let limit = q.runs_limit.unwrap_or(enlace_store::gdpr::EXPORT_RUNS_PAGE);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("runs_limit", format!("must be between 1 and 1000 (it is {limit})")));
    }
    let now = s.runner.now_ms();
    let Some(doc) = s.runner.store().export_contact(ContactKey::Id(id.clone()), q.runs_after.as_deref(), limit, now).await? else {
        return Err(missing(&s, &id).await);
    };
    Ok(Json(serde_json::to_value(doc).map_err(|e| ApiError::new(Code::Internal, format!("the export could not be encoded: {e}")))?))
}

/// Erases a contact: its pending runs are cancelled, its email, phone and name are replaced
/// by `[erased]` in the history of every run about it (the runs stay, with their status),
/// a removal is queued for every ad audience it was added to, and the contact and every row
/// about it are deleted, in one transaction. Answers the erasure's record (no personal
/// data). It cannot be undone; a second call answers 410 `erased`.
#[utoipa::path(delete, path = "/api/v1/contacts/{id}", tag = "contacts", params(("id" = String, Path)),
    responses((status = 200, body = ErasureView), (status = 404, body = ErrorBody), (status = 410, body = ErrorBody)))]
pub async fn erase(State(s): State<AppState>, caller: Option<Extension<Caller>>, Path(id): Path<String>) -> ApiResult<Json<ErasureView>> {
    let by = format!("api:{}", caller.map_or_else(|| "unknown".to_string(), |Extension(Caller(name))| name));
    match s.runner.store().erase(ContactKey::Id(id.clone()), &by, s.runner.now_ms()).await {
        Ok(e) => {
            tracing::info!(erasure = %e.id, contact = %e.contact_id, by = %by, runs_redacted = e.runs_redacted, runs_cancelled = e.runs_cancelled, removals = e.removals_queued, "contact erased");
            Ok(Json(erasure_view(e)))
        }
        Err(StoreError::NotFound(_)) => Err(missing(&s, &id).await),
        Err(e) => Err(e.into()),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ErasureQuery {
    /// The erasures of the contact that had this email (compared through its keyed hash).
    pub email: Option<String>,
    /// The erasure of this contact id.
    pub contact_id: Option<String>,
}

/// The erasures of an email or a contact id: whether, when and by whom it was erased.
#[utoipa::path(get, path = "/api/v1/erasures", tag = "contacts", params(ErasureQuery),
    responses((status = 200, body = Vec<ErasureView>), (status = 400, body = ErrorBody)))]
pub async fn erasures(State(s): State<AppState>, Query(q): Query<ErasureQuery>) -> ApiResult<Json<Vec<ErasureView>>> {
    let store = s.runner.store();
    let found = match (q.email.filter(|e| !e.trim().is_empty()), q.contact_id.filter(|c| !c.trim().is_empty())) {
        (Some(email), None) => store.erasures_of_email(&email).await.map_err(|e| match e {
            StoreError::Invalid(m) => ApiError::invalid("email", m),
            other => other.into(),
        })?,
        (None, Some(id)) => store.erasure_of(&id).await?.into_iter().collect(),
        _ => return Err(ApiError::invalid("email", "give exactly one of `email` or `contact_id`")),
    };
    Ok(Json(found.into_iter().map(erasure_view).collect()))
}

/// One removal from an ad audience.
#[derive(Debug, Serialize, ToSchema)]
pub struct RemovalView {
    pub id: String,
    pub app: String,
    pub connection_id: Option<String>,
    /// The app's action that removes the person.
    pub remove_action: String,
    /// The audience, as the add action named it.
    #[schema(value_type = Object)]
    pub audience: Value,
    /// Hex SHA-256 of the normalised email.
    pub email_sha256: Option<String>,
    /// Hex SHA-256 of the E.164 phone.
    pub phone_sha256: Option<String>,
    /// `erased` or `consent_withdrawn`.
    pub reason: String,
    /// `pending`, `sending`, `done` or `failed`.
    pub status: String,
    pub attempts: i64,
    /// When it is (next) due, while pending.
    pub due_at: Option<String>,
    /// The last failure: `{class, message}`.
    #[schema(value_type = Option<Object>)]
    pub last_error: Option<Value>,
    pub created_at: String,
    pub done_at: Option<String>,
}

fn removal_view(r: AudienceRemovalRow) -> RemovalView {
    RemovalView {
        id: r.id,
        app: r.app,
        connection_id: r.connection_id,
        remove_action: r.remove_action,
        audience: r.audience,
        email_sha256: r.email_sha256,
        phone_sha256: r.phone_sha256,
        reason: r.reason,
        status: r.status,
        attempts: r.attempts,
        due_at: r.due_at.map(ts),
        last_error: r.last_error,
        created_at: ts(r.created_at),
        done_at: r.done_at.map(ts),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RemovalQuery {
    /// Only removals with this status: `pending`, `sending`, `done` or `failed`.
    pub status: Option<String>,
    /// At most this many (1 to 1000, default 100).
    pub limit: Option<i64>,
}

/// The ad audience removal queue, newest first.
#[utoipa::path(get, path = "/api/v1/audience-removals", tag = "contacts", params(RemovalQuery),
    responses((status = 200, body = Vec<RemovalView>), (status = 400, body = ErrorBody)))]
pub async fn removals(State(s): State<AppState>, Query(q): Query<RemovalQuery>) -> ApiResult<Json<Vec<RemovalView>>> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit", format!("must be between 1 and 1000 (it is {limit})")));
    }
    let rows = s.runner.store().audience_removals(q.status.as_deref(), limit).await.map_err(|e| match e {
        StoreError::Invalid(m) => ApiError::invalid("status", m),
        other => other.into(),
    })?;
    Ok(Json(rows.into_iter().map(removal_view).collect()))
}
