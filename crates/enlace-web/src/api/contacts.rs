//! Contacts, the embedded CRM: list (by email or tag, paginated), show (with tags, current
//! consents, notes and timeline), upsert, and erase (GDPR, in `gdpr.rs`: the contact, every row about it, its personal data in the
//! run history). An upsert here starts the `contacts.*` recipes it matches, as a recipe's would.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use enlace_core::contacts::{Consent, Contact, ContactKey, ContactOp, Note, TimelineEvent, WriteContext};
use enlace_store::ContactFilter;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};

use super::recipes::ts;
use crate::AppState;
use crate::error::{ApiError, ApiResult, ErrorBody};

/// A contact.
#[derive(Debug, Serialize, ToSchema)]
pub struct ContactView {
    pub id: String,
    /// Normalised: trimmed, lowercase. Unique.
    pub email: String,
    /// As first given.
    pub email_original: String,
    #[schema(value_type = Object)]
    pub fields: Map<String, Value>,
    /// Sorted.
    pub tags: Vec<String>,
    /// 1 at creation, +1 with every change.
    pub version: i64,
    /// The lead score, decayed to now (`/api/v1/scoring` sets the rules).
    pub score: f64,
    pub created_at: String,
    pub updated_at: String,
}

pub(crate) fn contact_view(c: Contact) -> ContactView {
    ContactView {
        id: c.id,
        email: c.email,
        email_original: c.email_original,
        fields: c.fields,
        tags: c.tags,
        version: c.version,
        score: (c.score * 1000.0).round() / 1000.0,
        created_at: ts(c.created_at),
        updated_at: ts(c.updated_at),
    }
}

/// The current decision for one purpose on one channel, with its evidence.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConsentView {
    pub purpose: String,
    pub channel: String,
    /// `granted` or `withdrawn`.
    pub status: String,
    /// `{source, ip?, text?, recorded_at, run_id?}`: where the contact decided and what it was shown.
    #[schema(value_type = Object)]
    pub evidence: Value,
    pub at: String,
}

fn consent_view(c: Consent) -> ConsentView {
    ConsentView {
        purpose: c.purpose,
        channel: c.channel,
        status: c.status.as_str().into(),
        evidence: serde_json::to_value(&c.evidence).unwrap_or_default(),
        at: ts(c.at),
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NoteView {
    pub id: String,
    pub body: String,
    pub author: Option<String>,
    pub at: String,
}

fn note_view(n: Note) -> NoteView {
    NoteView { id: n.id, body: n.body, author: n.author, at: ts(n.at) }
}

/// One timeline entry: what changed or happened, and which run did it.
#[derive(Debug, Serialize, ToSchema)]
pub struct TimelineView {
    pub id: String,
    /// `created`, `fields_updated`, `tag_added`, `tag_removed`, `consent_recorded`, `note_added`,
    /// `score_threshold`, or a recorded activity's kind (`page_viewed`, `email_opened`, ...).
    pub kind: String,
    #[schema(value_type = Object)]
    pub data: Value,
    pub run_id: Option<String>,
    pub at: String,
}

pub(crate) fn timeline_view(e: TimelineEvent) -> TimelineView {
    TimelineView { id: e.id, kind: e.kind, data: e.data, run_id: e.run_id, at: ts(e.at) }
}

/// A contact with everything stored about it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ContactDetailView {
    #[serde(flatten)]
    pub contact: ContactView,
    /// The current decision per purpose and channel.
    pub consents: Vec<ConsentView>,
    /// Newest first.
    pub notes: Vec<NoteView>,
    /// The latest 100 entries, newest first.
    pub timeline: Vec<TimelineView>,
}

/// A page of contacts.
#[derive(Debug, Serialize, ToSchema)]
pub struct ContactPage {
    /// Oldest first.
    pub contacts: Vec<ContactView>,
    /// Give it as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only the contact with this email (case-insensitive).
    pub email: Option<String>,
    /// Only contacts with this tag.
    pub tag: Option<String>,
    /// At most this many (1 to 500, default 50).
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Creates or updates a contact by email.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpsertContact {
    /// The contact's email: the contact with this email (case-insensitive) is updated, or
    /// created.
    pub email: String,
    /// Fields merged into the contact's: the ones named are set (`null` removes one), the
    /// others kept.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub fields: Map<String, Value>,
    /// Tags to add (the contact keeps the ones it has).
    #[serde(default)]
    pub tags: Vec<String>,
}

/// The contact after an upsert.
#[derive(Debug, Serialize, ToSchema)]
pub struct Upserted {
    /// True when the request created the contact.
    pub created: bool,
    pub contact: ContactView,
}

/// Contacts in creation order, filtered by email or tag, a page at a time.
#[utoipa::path(get, path = "/api/v1/contacts", tag = "contacts", params(ListQuery), responses((status = 200, body = ContactPage), (status = 400, body = ErrorBody)))]
pub async fn list(State(s): State<AppState>, Query(q): Query<ListQuery>) -> ApiResult<Json<ContactPage>> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid("limit", format!("must be between 1 and 500 (it is {limit})")));
    }
    let f = ContactFilter { email: q.email.filter(|e| !e.trim().is_empty()), tag: q.tag.filter(|t| !t.is_empty()), after: q.cursor, limit };
    let rows = s.runner.store().list_contacts(&f).await.map_err(|e| match e {
        enlace_store::StoreError::Invalid(m) => ApiError::invalid("email", m),
        other => other.into(),
    })?;
    let next_cursor = if rows.len() as i64 == limit { rows.last().map(|c| c.id.clone()) } else { None };
    Ok(Json(ContactPage { contacts: rows.into_iter().map(contact_view).collect(), next_cursor }))
}

/// One contact with its tags, current consents (with their evidence), notes and timeline.
#[utoipa::path(get, path = "/api/v1/contacts/{id}", tag = "contacts", params(("id" = String, Path)), responses((status = 200, body = ContactDetailView), (status = 404, body = ErrorBody), (status = 410, body = ErrorBody)))]
pub async fn get(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<ContactDetailView>> {
    let Some(d) = s.runner.store().contact_detail(ContactKey::Id(id.clone())).await? else {
        return Err(super::gdpr::missing(&s, &id).await);
    };
    Ok(Json(ContactDetailView {
        contact: contact_view(d.contact),
        consents: d.consents.into_iter().map(consent_view).collect(),
        notes: d.notes.into_iter().map(note_view).collect(),
        timeline: d.timeline.into_iter().map(timeline_view).collect(),
    }))
}

/// Creates or updates a contact by email, then adds the tags. 201 when it was created, 200
/// when it existed. Starts the recipes whose `contacts.*` trigger the change matches.
#[utoipa::path(post, path = "/api/v1/contacts", tag = "contacts", request_body = UpsertContact, responses((status = 201, body = Upserted), (status = 200, body = Upserted), (status = 400, body = ErrorBody)))]
pub async fn upsert(State(s): State<AppState>, Json(u): Json<UpsertContact>) -> ApiResult<(StatusCode, Json<Upserted>)> {
    let contacts = s.runner.contacts();
    let invalid = |path: &'static str| {
        move |e: enlace_runner::RunnerError| match e {
            enlace_runner::RunnerError::Invalid(m) => ApiError::invalid(path, m),
            other => other.into(),
        }
    };
    let up =
        contacts.apply(WriteContext::default(), ContactOp::Upsert { email: u.email, fields: u.fields }).await.map_err(invalid("email"))?;
    let created = up.outcome.created;
    let mut contact = up.outcome.contact;
    for tag in u.tags {
        let key = ContactKey::Id(contact.id.clone());
        contact = contacts.apply(WriteContext::default(), ContactOp::AddTag { key, tag }).await.map_err(invalid("tags"))?.outcome.contact;
    }
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(Upserted { created, contact: contact_view(contact) })))
}
