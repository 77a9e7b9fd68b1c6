//! Hosted forms and on-site messages (`/api/v1/forms`, `/api/v1/web-messages`): define,
//! read and delete forms, make a signed link to one for a contact; list, queue and cancel
//! on-site messages. The pages themselves are public (`crate::forms`, `crate::onsite`).

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use enlace_core::ConnectorError;
use enlace_core::contacts::{ContactKey, normalize_email};
use enlace_core::web::{FormDef, MessageKind, NewWebMessage};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use super::recipes::ts;
use crate::AppState;
use crate::error::{ApiError, ApiResult, ErrorBody};

fn form_view(f: enlace_store::web::StoredForm) -> Value {
    let mut v = serde_json::to_value(&f.form).unwrap_or(Value::Null);
    v["created_at"] = json!(ts(f.created_at));
    v["updated_at"] = json!(ts(f.updated_at));
    v
}

/// Every form, by id.
#[utoipa::path(get, path = "/api/v1/forms", tag = "web", responses((status = 200, body = Object)))]
pub async fn list(State(s): State<AppState>) -> ApiResult<Json<Vec<Value>>> {
    Ok(Json(s.runner.store().forms().await?.into_iter().map(form_view).collect()))
}

/// A form's definition.
#[utoipa::path(get, path = "/api/v1/forms/{id}", tag = "web", params(("id" = String, Path)), responses((status = 200, body = Object), (status = 404, body = ErrorBody)))]
pub async fn get(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    match s.runner.web().form(&id).await? {
        Some(f) => Ok(Json(form_view(f))),
        None => Err(ApiError::not_found(format!("no form `{id}`"))),
    }
}

/// Creates or replaces a form: `title`, `intro`, `fields` (each `name`, `type` (`text`,
/// `email`, `phone`, `choice`, `multi_choice`, `consent`), `label` (a consent box: its exact
/// wording), `help`, `required`, `options`, `purpose` and `channel` (consent), `country`
/// (phone), `multiline` (text)), `submit`, `thanks`, `tags`, `public`, `link_ttl`. Every
/// problem is refused with its path. 201 when created.
#[utoipa::path(put, path = "/api/v1/forms/{id}", tag = "web", params(("id" = String, Path)), request_body = Object, responses((status = 200, body = Object), (status = 201, body = Object), (status = 400, body = ErrorBody)))]
pub async fn put(State(s): State<AppState>, Path(id): Path<String>, Json(mut body): Json<Value>) -> ApiResult<Response> {
    if let Some(o) = body.as_object_mut() {
        match o.get("id").and_then(Value::as_str) {
            Some(given) if given != id => {
                return Err(ApiError::invalid("id", format!("the body's id `{given}` is not the address's `{id}`")));
            }
            _ => {
                o.insert("id".into(), json!(id));
            }
        }
    }
    let form: FormDef = match enlace_core::action::decode_input(body) {
        Ok(f) => f,
        Err(ConnectorError::BadInput { path, message }) => return Err(ApiError::invalid(&path, message)),
        Err(e) => return Err(ApiError::invalid("", e.to_string())),
    };
    if let Some((path, _)) = form.check().first() {
        let all: Vec<String> = form.check().into_iter().map(|(p, m)| format!("{p}: {m}")).collect();
        return Err(ApiError::invalid(path, all.join("; ")));
    }
    let created = s.runner.web().put_form(&form).await?;
    let stored = s.runner.web().form(&id).await?.ok_or_else(|| ApiError::not_found(format!("no form `{id}`")))?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(form_view(stored))).into_response())
}

/// Deletes a form; its links stop working.
#[utoipa::path(delete, path = "/api/v1/forms/{id}", tag = "web", params(("id" = String, Path)), responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    if s.runner.store().delete_form(&id).await? { Ok(StatusCode::NO_CONTENT) } else { Err(ApiError::not_found(format!("no form `{id}`"))) }
}

/// Whom a link is for.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkRequest {
    /// The contact's id; or `email`.
    #[serde(default)]
    pub contact_id: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    /// How long the link works (`14d`); the form's `link_ttl` by default.
    #[serde(default)]
    pub valid_for: Option<String>,
}

async fn contact_id(s: &AppState, id: Option<String>, email: Option<String>) -> ApiResult<String> {
    let key = match (id, email) {
        (Some(id), None) => ContactKey::Id(id),
        (None, Some(e)) => ContactKey::Email(normalize_email(&e).map_err(|m| ApiError::invalid("email", m))?),
        _ => return Err(ApiError::invalid("contact_id", "give either `contact_id` or `email`")),
    };
    match s.runner.store().contact(key).await? {
        Some(c) => Ok(c.id),
        None => Err(ApiError::not_found("no such contact")),
    }
}

/// A signed link to the form for one contact (what `web.form_link` makes in a recipe).
#[utoipa::path(post, path = "/api/v1/forms/{id}/link", tag = "web", params(("id" = String, Path)), request_body = LinkRequest, responses((status = 200, body = Object), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn link(State(s): State<AppState>, Path(id): Path<String>, Json(r): Json<LinkRequest>) -> ApiResult<Json<Value>> {
    let cid = contact_id(&s, r.contact_id, r.email).await?;
    let ttl = match r.valid_for.as_deref() {
        Some(d) => Some(enlace_core::duration::parse_duration(d).map_err(|m| ApiError::invalid("valid_for", m))?.as_millis() as i64),
        None => None,
    };
    let l = s.runner.web().form_link(&id, &cid, ttl).await?;
    Ok(Json(serde_json::to_value(l).unwrap_or(Value::Null)))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct MessagesQuery {
    /// Only this contact's.
    pub contact_id: Option<String>,
    /// Only these: `pending`, `shown`, `clicked`, `dismissed`, `skipped`, `cancelled`.
    pub status: Option<String>,
    /// At most this many (100 by default, 1000 at most).
    pub limit: Option<i64>,
}

/// On-site messages, newest first.
#[utoipa::path(get, path = "/api/v1/web-messages", tag = "web", params(MessagesQuery), responses((status = 200, body = Object)))]
pub async fn messages(State(s): State<AppState>, Query(q): Query<MessagesQuery>) -> ApiResult<Json<Vec<Value>>> {
    let list = s.runner.store().web_messages(q.contact_id.as_deref(), q.status.as_deref(), q.limit.unwrap_or(100)).await?;
    Ok(Json(list.into_iter().map(|m| serde_json::to_value(m).unwrap_or(Value::Null)).collect()))
}

/// An on-site message to queue (what `web.show_message` does in a recipe).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueueRequest {
    #[serde(default)]
    pub contact_id: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    /// Shown once per contact per rule.
    pub rule: String,
    /// `popup` or `banner`.
    #[serde(default)]
    #[schema(value_type = String)]
    pub kind: MessageKind,
    pub title: String,
    pub body: String,
    #[serde(default)]
    pub button_label: Option<String>,
    #[serde(default)]
    pub button_url: Option<String>,
    #[serde(default)]
    pub product: Option<String>,
    #[serde(default)]
    pub unless_purchased: bool,
    #[serde(default)]
    pub purpose: Option<String>,
}

/// Queues an on-site message for a contact: `{queued, reason?, message_id?}` (not queued:
/// the rule was used for the contact, or it bought the product, or withdrew the web channel).
#[utoipa::path(post, path = "/api/v1/web-messages", tag = "web", request_body = QueueRequest, responses((status = 200, body = Object), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn queue(State(s): State<AppState>, Json(r): Json<QueueRequest>) -> ApiResult<Json<Value>> {
    let cid = contact_id(&s, r.contact_id, r.email).await?;
    for (field, v) in [("rule", &r.rule), ("title", &r.title), ("body", &r.body)] {
        if v.trim().is_empty() {
            return Err(ApiError::invalid(field, format!("`{field}` is empty")));
        }
    }
    if r.button_label.is_some() != r.button_url.is_some() {
        return Err(ApiError::invalid("button_url", "give both `button_label` and `button_url`, or neither"));
    }
    if let Some(u) = &r.button_url
        && !(u.starts_with("https://") || u.starts_with("http://"))
    {
        return Err(ApiError::invalid("button_url", format!("`{u}` is not an http(s) address")));
    }
    if r.unless_purchased && r.product.is_none() {
        return Err(ApiError::invalid("product", "`unless_purchased` needs the `product`"));
    }
    let purpose = r.purpose.unwrap_or_else(|| "marketing".into());
    enlace_core::contacts::check_purpose(&purpose).map_err(|m| ApiError::invalid("purpose", m))?;
    let m = NewWebMessage {
        contact_id: cid,
        rule: r.rule,
        kind: r.kind,
        title: r.title,
        body: r.body,
        cta_label: r.button_label,
        cta_url: r.button_url,
        product: r.product,
        unless_purchased: r.unless_purchased,
        purpose,
        expires_at: None,
        run_id: None,
    };
    let q = s.runner.web().queue_message(m).await?;
    Ok(Json(serde_json::to_value(q).unwrap_or(Value::Null)))
}

/// Cancels a message not shown yet.
#[utoipa::path(delete, path = "/api/v1/web-messages/{id}", tag = "web", params(("id" = String, Path)), responses((status = 200, body = Object), (status = 404, body = ErrorBody)))]
pub async fn cancel(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    match s.runner.web().cancel(&id).await? {
        Some(m) => Ok(Json(serde_json::to_value(m).unwrap_or(Value::Null))),
        None => Err(ApiError::not_found(format!("no pending web message `{id}`"))),
    }
}
