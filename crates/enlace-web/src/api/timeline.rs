//! The contact timeline as an activity log, and lead scoring: record an activity on a
//! contact (`POST /api/v1/contacts/{id}/events`, idempotent per `key`), read a contact's
//! timeline a page at a time (`GET /api/v1/contacts/{id}/timeline`), and read or replace the
//! scoring rules (`GET`/`PUT /api/v1/scoring`).

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use enlace_core::contacts::{ContactKey, ContactOp, WriteContext, check_kind};
use enlace_core::scoring::ScoringRules;
use enlace_store::TimelineQuery;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};

use super::contacts::{ContactView, TimelineView, contact_view, timeline_view};
use crate::AppState;
use crate::error::{ApiError, ApiResult, ErrorBody};

/// An activity to record on a contact's timeline.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEvent {
    /// What happened, a slug: `email_opened`, `page_viewed`, `form_submitted`, `purchase`... (see docs/recipes.md).
    pub kind: String,
    /// The details, a JSON object (`page_viewed`: `{url, title, duration_ms, referrer}`), up to 16 KiB.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub data: Map<String, Value>,
    /// When it happened, RFC 3339; now when absent.
    #[serde(default)]
    pub at: Option<String>,
    /// Makes the request idempotent: a second request with the same key records nothing and
    /// answers with the first entry (the `Idempotency-Key` header does the same).
    #[serde(default)]
    pub key: Option<String>,
}

/// What recording did.
#[derive(Debug, Serialize, ToSchema)]
pub struct Recorded {
    /// False when the key had already recorded it.
    pub recorded: bool,
    pub event: TimelineView,
    /// The contact, with its score after the entry.
    pub contact: ContactView,
}

/// A page of a contact's timeline.
#[derive(Debug, Serialize, ToSchema)]
pub struct TimelinePage {
    /// Newest first.
    pub events: Vec<TimelineView>,
    /// Give it as `cursor` for the next (older) page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TimelineParams {
    /// Only these kinds, comma-separated (`page_viewed,purchase`).
    pub kind: Option<String>,
    /// Only entries at or after this time (RFC 3339).
    pub since: Option<String>,
    /// Only entries before this time (RFC 3339).
    pub until: Option<String>,
    /// At most this many (1 to 500, default 50).
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

fn time(path: &str, s: &str) -> ApiResult<i64> {
    chrono::DateTime::parse_from_rfc3339(s.trim())
        .map(|t| t.timestamp_millis())
        .map_err(|_| ApiError::invalid(path, format!("`{s}` is not an RFC 3339 time (like `2026-11-25T14:03:00Z`)")))
}

/// Records an activity on a contact's timeline: scored by the scoring rules and starting the
/// `contacts.event` recipes of its kind, in one transaction. 201 when recorded, 200 when the
/// same `key` had recorded it already.
#[utoipa::path(post, path = "/api/v1/contacts/{id}/events", tag = "contacts", params(("id" = String, Path), ("Idempotency-Key" = Option<String>, Header, description = "Same as `key` in the body")),
    request_body = NewEvent, responses((status = 201, body = Recorded), (status = 200, body = Recorded), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn record(
    State(s): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(e): Json<NewEvent>,
) -> ApiResult<(StatusCode, Json<Recorded>)> {
    check_kind(&e.kind).map_err(|m| ApiError::invalid("kind", m))?;
    let at = e.at.as_deref().map(|t| time("at", t)).transpose()?;
    let header_key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_string);
    let key = e.key.or(header_key).filter(|k| !k.trim().is_empty());
    if key.as_ref().is_some_and(|k| k.len() > 200) {
        return Err(ApiError::invalid("key", "the key is longer than 200 characters"));
    }
    // Namespaced so that an API caller's key never meets a step's idempotency key.
    let ctx = WriteContext { op_key: key.map(|k| format!("api:{k}")), run_id: None };
    let op = ContactOp::RecordEvent { key: ContactKey::Id(id), kind: e.kind, data: Value::Object(e.data), at };
    let out = s.runner.contacts().apply(ctx, op).await.map_err(|e| match e {
        enlace_runner::RunnerError::Invalid(m) => ApiError::invalid("data", m),
        other => other.into(),
    })?;
    let o = out.outcome;
    let event = o.event.ok_or_else(|| ApiError::new(crate::error::Code::Internal, "the store recorded no event"))?;
    let status = if o.changed { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(Recorded { recorded: o.changed, event: timeline_view(event), contact: contact_view(o.contact) })))
}

/// A contact's timeline, newest first, filtered by kind and time, a page at a time.
#[utoipa::path(get, path = "/api/v1/contacts/{id}/timeline", tag = "contacts", params(("id" = String, Path), TimelineParams),
    responses((status = 200, body = TimelinePage), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn timeline(State(s): State<AppState>, Path(id): Path<String>, Query(q): Query<TimelineParams>) -> ApiResult<Json<TimelinePage>> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid("limit", format!("must be between 1 and 500 (it is {limit})")));
    }
    let kinds: Vec<String> =
        q.kind.as_deref().unwrap_or("").split(',').map(str::trim).filter(|k| !k.is_empty()).map(String::from).collect();
    for k in &kinds {
        check_kind(k).map_err(|m| ApiError::invalid("kind", m))?;
    }
    let since = q.since.as_deref().map(|t| time("since", t)).transpose()?;
    let until = q.until.as_deref().map(|t| time("until", t)).transpose()?;
    let before = match q.cursor.as_deref() {
        None | Some("") => None,
        Some(c) => {
            let bad = || ApiError::invalid("cursor", "not a cursor this API gave; start again without `cursor`");
            let (at, eid) = c.split_once('_').ok_or_else(bad)?;
            Some((at.parse::<i64>().map_err(|_| bad())?, eid.to_string()))
        }
    };
    let store = s.runner.store();
    if store.contact(ContactKey::Id(id.clone())).await?.is_none() {
        return Err(ApiError::not_found(format!("no contact `{id}`")));
    }
    let rows = store.timeline_page(&id, &TimelineQuery { kinds, since, until, before, limit }).await?;
    let next_cursor = if rows.len() as i64 == limit { rows.last().map(|e| format!("{}_{}", e.at, e.id)) } else { None };
    Ok(Json(TimelinePage { events: rows.into_iter().map(timeline_view).collect(), next_cursor }))
}

/// The lead scoring rules (the shape `enlace_core::scoring::ScoringRules` reads).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct ScoringDoc {
    /// How long until a point counts half (`14d`); no decay when absent.
    pub half_life: Option<String>,
    /// Every rule matching a timeline entry adds its points.
    pub rules: Vec<RuleDoc>,
    /// Crossing one upward emits its event once (again only after the score fell below).
    pub thresholds: Vec<ThresholdDoc>,
}

/// Points for the timeline entries of one kind.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct RuleDoc {
    /// The timeline kind (`page_viewed`).
    pub kind: String,
    /// Points added (negative ones subtract).
    pub points: f64,
    /// Only entries whose data has these values (`{"url": "https://shop.example.com/pricing*"}`; a trailing `*` is a prefix).
    #[serde(rename = "match")]
    #[schema(value_type = Option<Object>)]
    pub matches: Option<Map<String, Value>>,
}

/// A score that emits an event when crossed upward.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct ThresholdDoc {
    /// A slug (`qualified`).
    pub name: String,
    /// The score to reach.
    pub score: f64,
    /// The event emitted (`lead.qualified`): `enlace.event` recipes of that name start with `{contact, score, threshold, event, at}`.
    pub event: String,
}

/// The lead scoring rules (empty when never set).
#[utoipa::path(get, path = "/api/v1/scoring", tag = "contacts", responses((status = 200, body = ScoringDoc)))]
pub async fn get_scoring(State(s): State<AppState>) -> ApiResult<Json<ScoringRules>> {
    Ok(Json(s.runner.store().scoring_rules().await?))
}

/// Replaces the lead scoring rules. Every problem is reported at once (`path` names the
/// first). Scores kept so far stay; new timeline entries are scored by the new rules.
#[utoipa::path(put, path = "/api/v1/scoring", tag = "contacts", request_body = ScoringDoc,
    responses((status = 200, body = ScoringDoc), (status = 400, body = ErrorBody)))]
pub async fn put_scoring(State(s): State<AppState>, Json(body): Json<Value>) -> ApiResult<Json<ScoringRules>> {
    let rules: ScoringRules = serde_path_to_error::deserialize(body).map_err(|e| {
        let path = e.path().to_string();
        let message = format!("{}; see docs/recipes.md, \"Lead scoring\"", e.inner());
        if path == "." { ApiError::new(crate::error::Code::InvalidRequest, message) } else { ApiError::invalid(&path, message) }
    })?;
    if let Err(problems) = rules.check() {
        let text: Vec<String> = problems.iter().map(|p| format!("{}: {}", p.path, p.message)).collect();
        return Err(ApiError::invalid(&problems[0].path, text.join("; ")));
    }
    s.runner.store().set_scoring_rules(&rules, s.runner.now_ms()).await?;
    Ok(Json(rules))
}
