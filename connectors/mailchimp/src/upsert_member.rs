//! `mailchimp.upsert_member`: `PUT /3.0/lists/{list_id}/members/{subscriber_hash}`, then
//! `POST .../members/{subscriber_hash}/tags` when tags are given.

use std::sync::Arc;

use bytes::Bytes;
use http::HeaderValue;
use http::header::CONTENT_TYPE;
use md5::{Digest, Md5};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use enlace_core::http::{HttpRequest, HttpResponse, Method};
use enlace_core::{Action, ActionContext, ConnectionContext, ConnectionTest, ConnectorError, Credentials, Idempotency};

/// A member's subscription status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Receives campaigns.
    Subscribed,
    /// Opted out.
    Unsubscribed,
    /// Removed after bounces; cannot be re-subscribed through the API.
    Cleaned,
    /// Sent a confirmation email first (double opt-in); subscribed once they confirm.
    Pending,
    /// Receives transactional email only.
    Transactional,
}

/// A tag: its name (added), or `{"name": ..., "status": "active" | "inactive"}`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Tag {
    Name(String),
    Object(TagObject),
}

/// A tag with whether to add (`active`) or remove (`inactive`) it.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TagObject {
    /// The tag's name, like `webinar-2026`.
    pub name: String,
    /// `active` adds the tag to the member, `inactive` removes it. Defaults to `active`.
    #[serde(default)]
    pub status: Option<TagStatus>,
}

/// Whether a tag is added or removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TagStatus {
    Active,
    Inactive,
}

/// One marketing permission (GDPR fields of the audience).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MarketingPermission {
    /// The permission's ID in the audience (Mailchimp lists them for each member, and in the
    /// audience's GDPR settings), like `a1b2c3d4e5`.
    pub marketing_permission_id: String,
    /// Whether the member gave this permission.
    pub enabled: bool,
}

/// The `with` map of a `mailchimp.upsert_member` step.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// The audience's ID (in Mailchimp: Audience > Settings > Audience name and defaults,
    /// "Audience ID"), like `a1b2c3d4e5`.
    pub list_id: String,
    /// The member's email address (`email_address` is accepted too). Case does not matter:
    /// Mailchimp finds the member by the lowercased address.
    #[serde(alias = "email_address")]
    pub email: String,
    /// The status a new member gets: `subscribed`, `pending` (Mailchimp sends a
    /// confirmation email first: double opt-in), `unsubscribed`, `cleaned` or
    /// `transactional`. An existing member keeps theirs unless `status` is given.
    pub status_if_new: Status,
    /// The status to set on an existing member too (same values as `status_if_new`). Leave
    /// it out to keep an existing member's status, for example not to re-subscribe someone
    /// who unsubscribed.
    #[serde(default)]
    pub status: Option<Status>,
    /// The audience's merge fields by tag, like `{"FNAME": "Ana", "LNAME": "García"}` (the
    /// tags are in Audience > Settings > Audience fields and *|MERGE|* tags).
    #[serde(default)]
    pub merge_fields: Option<Map<String, Value>>,
    /// Tags to add (a name, or `{"name": ..., "status": "active"}`) or remove
    /// (`{"name": ..., "status": "inactive"}`). Set on new and existing members alike.
    #[serde(default)]
    pub tags: Option<Vec<Tag>>,
    /// Marketing permissions (GDPR consent) to set: a list of
    /// `{"marketing_permission_id": "...", "enabled": true}`.
    #[serde(default)]
    pub marketing_permissions: Option<Vec<MarketingPermission>>,
}

/// The member as Mailchimp stored it.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Output {
    /// The member's ID: the MD5 hash of the lowercased email (the subscriber hash).
    pub id: String,
    /// The email address as Mailchimp stored it.
    pub email_address: String,
    /// The member's status after the upsert (`subscribed`, `pending`...).
    pub status: String,
    /// The audience.
    pub list_id: String,
    /// An ID for the address that stays the same across audiences (`unique_email_id`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unique_email_id: Option<String>,
    /// The member's ID in Mailchimp's web pages (`web_id`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub web_id: Option<u64>,
    /// The tags added or removed by a second call, as `{"name", "status"}`; empty when the
    /// step gave none.
    pub tags_set: Vec<TagOutput>,
}

/// A tag the step set.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct TagOutput {
    /// The tag's name.
    pub name: String,
    /// `active` (added) or `inactive` (removed).
    pub status: String,
}

/// `mailchimp.upsert_member`.
#[derive(Debug, Clone)]
pub struct UpsertMember {
    api_base: Arc<str>,
}

impl UpsertMember {
    /// The action against the API at `api_base` (`https://{dc}.api.mailchimp.com/3.0`).
    pub fn new(api_base: &str) -> Self {
        UpsertMember { api_base: Arc::from(api_base.trim_end_matches('/')) }
    }
}

impl Action for UpsertMember {
    type Input = Input;
    type Output = Output;

    const ID: &'static str = "upsert_member";
    const NAME: &'static str = "Add or update an audience member";
    const DESCRIPTION: &'static str = "Adds a contact to a Mailchimp audience or updates the member with that email: status, merge fields, tags and marketing permissions.";
    // A PUT keyed by the email, and tags set to a given state: repeating it changes nothing more.
    const IDEMPOTENCY: Idempotency = Idempotency::Natural;

    fn sample() -> Output {
        Output {
            id: "cdb9d6a1dddc375a09cc83e3001598dc".into(),
            email_address: "ana@example.com".into(),
            status: "subscribed".into(),
            list_id: "a1b2c3d4e5".into(),
            unique_email_id: Some("882e9bec19".into()),
            web_id: Some(123_456_789),
            tags_set: vec![TagOutput { name: "webinar-2026".into(), status: "active".into() }],
        }
    }

    async fn call(&self, ctx: &ActionContext, input: Input) -> Result<Output, ConnectorError> {
        let plan = build_requests(&self.api_base, &input, &ctx.credentials)?;
        let mut upsert = plan.upsert;
        if !ctx.timeout.is_zero() {
            upsert.timeout = Some(ctx.timeout);
        }
        let resp = ctx.http.send(upsert).await.map_err(|e| enlace_kit::transport_error(e, true))?;
        let mut out = output_of(resp)?;
        if let Some(mut tags) = plan.tags {
            if !ctx.timeout.is_zero() {
                tags.timeout = Some(ctx.timeout);
            }
            let resp = ctx.http.send(tags).await.map_err(|e| enlace_kit::transport_error(e, true))?;
            if resp.status.as_u16() >= 400 {
                let err = mailchimp_error(resp, "tags");
                return Err(prefix(err, "the member was saved, but Mailchimp refused its tags: "));
            }
            out.tags_set = plan.tags_set;
        }
        Ok(out)
    }
}

/// The requests of one upsert.
#[derive(Debug)]
pub struct Plan {
    /// `PUT .../members/{hash}`.
    pub upsert: HttpRequest,
    /// `POST .../members/{hash}/tags`, when tags are given.
    pub tags: Option<HttpRequest>,
    tags_set: Vec<TagOutput>,
}

/// The subscriber hash: the MD5 of the lowercased email, in hexadecimal.
pub fn subscriber_hash(email: &str) -> String {
    hex::encode(Md5::digest(email.trim().to_lowercase().as_bytes()))
}

/// Checks the input and the connection and builds the requests, credentials included.
/// A problem with the input is [`ConnectorError::BadInput`] naming the field; an API key
/// without its data center is [`ConnectorError::Auth`].
pub fn build_requests(api_base: &str, input: &Input, credentials: &Credentials) -> Result<Plan, ConnectorError> {
    let list_id = input.list_id.trim();
    if list_id.is_empty() || !list_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(ConnectorError::bad_input(
            "list_id",
            format!(
                "`{}` is not an audience ID: letters and digits, like a1b2c3d4e5 (Audience > Settings > Audience name and defaults)",
                input.list_id
            ),
        ));
    }
    let email = input.email.trim();
    if !is_email(email) {
        return Err(ConnectorError::bad_input("email", format!("`{}` is not an email address", input.email)));
    }
    let mut body = json!({"email_address": email, "status_if_new": input.status_if_new});
    if let Some(s) = input.status {
        body["status"] = json!(s);
    }
    if let Some(fields) = &input.merge_fields {
        for tag in fields.keys() {
            if tag.is_empty() || tag.len() > 10 || !tag.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(ConnectorError::bad_input(
                    format!("merge_fields.{tag}"),
                    "is not a merge tag: up to 10 letters, digits and underscores, like FNAME (Audience > Settings > Audience fields and *|MERGE|* tags)",
                ));
            }
        }
        if !fields.is_empty() {
            body["merge_fields"] = Value::Object(fields.clone());
        }
    }
    if let Some(perms) = &input.marketing_permissions {
        for (i, p) in perms.iter().enumerate() {
            if p.marketing_permission_id.trim().is_empty() {
                return Err(ConnectorError::bad_input(format!("marketing_permissions[{i}].marketing_permission_id"), "is empty"));
            }
        }
        if !perms.is_empty() {
            body["marketing_permissions"] = Value::Array(
                perms.iter().map(|p| json!({"marketing_permission_id": p.marketing_permission_id.trim(), "enabled": p.enabled})).collect(),
            );
        }
    }
    let mut tags_set = Vec::new();
    for (i, t) in input.tags.iter().flatten().enumerate() {
        let (name, status) = match t {
            Tag::Name(n) => (n.trim(), TagStatus::Active),
            Tag::Object(o) => (o.name.trim(), o.status.unwrap_or(TagStatus::Active)),
        };
        if name.is_empty() {
            return Err(ConnectorError::bad_input(format!("tags[{i}]"), "has an empty name"));
        }
        if name.chars().count() > 100 {
            return Err(ConnectorError::bad_input(format!("tags[{i}]"), "is longer than 100 characters, Mailchimp's limit for a tag"));
        }
        let status = if status == TagStatus::Active { "active" } else { "inactive" };
        tags_set.push(TagOutput { name: name.to_string(), status: status.into() });
    }

    let Credentials::Basic { password: key, .. } = credentials else {
        return Err(ConnectorError::auth(
            "this step needs a Mailchimp connection: a basic connection with any username and the API key as password",
        ));
    };
    let dc = data_center(key.expose())?;
    let base = api_base.replace("{dc}", &dc);
    let hash = subscriber_hash(email);
    let member = format!("{base}/lists/{list_id}/members/{hash}");

    let mut upsert = HttpRequest::new(Method::PUT, member.clone());
    upsert.headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    upsert.body = Bytes::from(body.to_string());
    enlace_kit::apply_credentials(&mut upsert, credentials)?;

    let tags = if tags_set.is_empty() {
        None
    } else {
        let mut r = HttpRequest::new(Method::POST, format!("{member}/tags"));
        r.headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let list: Vec<Value> = tags_set.iter().map(|t| json!({"name": t.name, "status": t.status})).collect();
        r.body = Bytes::from(json!({"tags": list}).to_string());
        enlace_kit::apply_credentials(&mut r, credentials)?;
        Some(r)
    };
    Ok(Plan { upsert, tags, tags_set })
}

/// The data center named by the API key's suffix (`...-us21` → `us21`).
pub fn data_center(key: &str) -> Result<String, ConnectorError> {
    let dc = key.trim().rsplit_once('-').map(|(_, dc)| dc).unwrap_or_default();
    let letters = dc.bytes().take_while(u8::is_ascii_lowercase).count();
    if letters > 0 && letters < dc.len() && dc.len() <= 8 && dc[letters..].bytes().all(|b| b.is_ascii_digit()) {
        Ok(dc.to_string())
    } else {
        Err(ConnectorError::auth(
            "the connection's API key does not end with its data center (like `-us21`); copy the whole key from Mailchimp (profile menu > Profile > Extras > API keys) into the connection's password",
        ))
    }
}

fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.rsplit_once('@') else { return false };
    !local.is_empty()
        && !s.chars().any(|c| c.is_whitespace() || matches!(c, '<' | '>' | ',' | ';'))
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
}

/// The step's output from Mailchimp's answer to the upsert, or the error it reports.
pub fn output_of(resp: HttpResponse) -> Result<Output, ConnectorError> {
    if resp.status.as_u16() >= 400 {
        return Err(mailchimp_error(resp, "email"));
    }
    let status = resp.status.as_u16();
    let Some(body) = enlace_kit::json_body(&resp).filter(Value::is_object) else {
        return Err(ConnectorError::permanent(format!(
            "Mailchimp answered HTTP {status} with a body that is not a JSON object ({}), where the member was expected",
            enlace_kit::vendor_message(&resp).unwrap_or_else(|| "empty".into())
        )));
    };
    let text = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_string);
    let (Some(id), Some(email_address), Some(member_status), Some(list_id)) =
        (text("id"), text("email_address"), text("status"), text("list_id"))
    else {
        return Err(ConnectorError::permanent(format!(
            "Mailchimp answered HTTP {status} without the member's `id`, `email_address`, `status` and `list_id`"
        )));
    };
    Ok(Output {
        id,
        email_address,
        status: member_status,
        list_id,
        unique_email_id: text("unique_email_id"),
        web_id: body.get("web_id").and_then(Value::as_u64),
        tags_set: Vec::new(),
    })
}

/// Mailchimp's error answer (problem details: `{"type", "title", "status", "detail",
/// "instance", "errors": [{"field", "message"}]}`). A 400 naming a field, or about the
/// address (`Member Exists`, `Invalid Resource` on the email, `Forgotten Email Not
/// Subscribed`, `Member In Compliance State`), is bad input; `default_field` is the field
/// the request is about when Mailchimp names none.
pub fn mailchimp_error(resp: HttpResponse, default_field: &str) -> ConnectorError {
    let status = resp.status.as_u16();
    let body = enlace_kit::json_body(&resp).unwrap_or(Value::Null);
    let title = body.get("title").and_then(Value::as_str).unwrap_or_default().trim().to_string();
    let detail = body.get("detail").and_then(Value::as_str).unwrap_or_default().trim().to_string();
    let errors: Vec<(String, String)> = body
        .get("errors")
        .and_then(Value::as_array)
        .map(|l| {
            l.iter()
                .map(|e| {
                    let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or_default().trim().to_string();
                    (s("field"), s("message"))
                })
                .collect()
        })
        .unwrap_or_default();
    let mut said = format!("Mailchimp: {}", if title.is_empty() { format!("HTTP {status}") } else { title.clone() });
    if !detail.is_empty() {
        said.push_str(&format!(": {detail}"));
    }
    for (f, m) in &errors {
        said.push_str(&format!(" ({}{m})", if f.is_empty() { String::new() } else { format!("{f}: ") }));
    }
    if status == 400 {
        if let Some((field, _)) = errors.iter().find(|(f, _)| !f.is_empty()) {
            return ConnectorError::bad_input(step_field(field, default_field), said);
        }
        match title.as_str() {
            "Member Exists" | "Forgotten Email Not Subscribed" | "Member In Compliance State" => {
                return ConnectorError::bad_input("email", said);
            }
            "Invalid Resource" => return ConnectorError::bad_input(default_field, said),
            _ => {}
        }
    }
    if status == 404 {
        return ConnectorError::bad_input(
            "list_id",
            format!("{said}; check the audience ID (Audience > Settings > Audience name and defaults)"),
        );
    }
    match enlace_kit::classify(resp) {
        Err(ConnectorError::Auth { .. }) => ConnectorError::auth(format!(
            "{said}; check the connection's API key (profile menu > Profile > Extras > API keys): it may have been revoked"
        )),
        Err(ConnectorError::RateLimited { retry_after, .. }) => ConnectorError::RateLimited { retry_after, message: said },
        Err(ConnectorError::Transient { retry_after, .. }) => ConnectorError::Transient { retry_after, message: said },
        Err(ConnectorError::Permanent { status, .. }) => ConnectorError::Permanent { message: said, status },
        Err(e) => e,
        Ok(_) => ConnectorError::permanent(said),
    }
}

/// Mailchimp's field (`email_address`, `merge_fields.FNAME`, `FNAME`) as the step's field.
fn step_field(field: &str, default_field: &str) -> String {
    match field {
        "email_address" => "email".into(),
        "status" | "status_if_new" | "list_id" | "tags" => field.into(),
        f if f.starts_with("merge_fields") || f.starts_with("marketing_permissions") || f.starts_with("tags") => f.into(),
        // Merge field errors name the bare merge tag.
        f if !f.is_empty() && f.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_') => format!("merge_fields.{f}"),
        "" => default_field.into(),
        f => f.into(),
    }
}

fn prefix(err: ConnectorError, p: &str) -> ConnectorError {
    match err {
        ConnectorError::BadInput { path, message } => ConnectorError::BadInput { path, message: format!("{p}{message}") },
        ConnectorError::Auth { message } => ConnectorError::Auth { message: format!("{p}{message}") },
        ConnectorError::Permanent { message, status } => ConnectorError::Permanent { message: format!("{p}{message}"), status },
        ConnectorError::RateLimited { retry_after, message } => {
            ConnectorError::RateLimited { retry_after, message: format!("{p}{message}") }
        }
        ConnectorError::Transient { message, retry_after } => ConnectorError::Transient { message: format!("{p}{message}"), retry_after },
        ConnectorError::MaybeDelivered { message } => ConnectorError::MaybeDelivered { message: format!("{p}{message}") },
    }
}

/// The connection test: `GET /3.0/ping`, which needs a valid key and changes nothing.
#[derive(Debug, Clone)]
pub struct Ping {
    api_base: Arc<str>,
}

impl Ping {
    /// The test against the API at `api_base` (`https://{dc}.api.mailchimp.com/3.0`).
    pub fn new(api_base: &str) -> Self {
        Ping { api_base: Arc::from(api_base.trim_end_matches('/')) }
    }
}

impl ConnectionTest for Ping {
    async fn test(&self, ctx: &ConnectionContext) -> Result<String, ConnectorError> {
        let Credentials::Basic { password, .. } = &ctx.credentials else {
            return Err(ConnectorError::auth(
                "the connection must be a basic connection with any username and the Mailchimp API key as password",
            ));
        };
        let dc = data_center(password.expose())?;
        let mut request = HttpRequest::new(Method::GET, format!("{}/ping", self.api_base.replace("{dc}", &dc)));
        if !ctx.timeout.is_zero() {
            request.timeout = Some(ctx.timeout);
        }
        enlace_kit::apply_credentials(&mut request, &ctx.credentials)?;
        let resp = ctx.http.send(request).await.map_err(|e| enlace_kit::transport_error(e, true))?;
        if resp.status.as_u16() >= 400 {
            return Err(mailchimp_error(resp, "connection"));
        }
        let health = enlace_kit::json_body(&resp)
            .and_then(|b| b.get("health_status").and_then(Value::as_str).map(str::to_string))
            .ok_or_else(|| {
                ConnectorError::permanent(format!(
                    "Mailchimp answered HTTP {} to GET /3.0/ping without a `health_status`",
                    resp.status.as_u16()
                ))
            })?;
        Ok(format!("the API key works in data center {dc}: {health}"))
    }
}
