//! `sendgrid.send_email`: one message through `POST /v3/mail/send`.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::HeaderValue;
use http::header::CONTENT_TYPE;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use enlace_core::http::{HttpRequest, HttpResponse, Method};
use enlace_core::{Action, ActionContext, ConnectionContext, ConnectionTest, ConnectorError, Credentials, Idempotency};

/// The most recipients (to, cc and bcc together) SendGrid takes in one message.
pub const MAX_RECIPIENTS: usize = 1000;
/// The most categories of one message, and the longest one.
pub const MAX_CATEGORIES: usize = 10;
pub const MAX_CATEGORY_CHARS: usize = 255;
/// The most unsubscribe groups shown on the preferences page.
pub const MAX_GROUPS_TO_DISPLAY: usize = 25;
/// How far ahead SendGrid schedules a message.
pub const MAX_SCHEDULE_HOURS: i64 = 72;

/// Headers SendGrid sets itself and refuses in `headers`.
const RESERVED_HEADERS: &[&str] = &[
    "x-sg-id",
    "x-sg-eid",
    "received",
    "dkim-signature",
    "content-type",
    "content-transfer-encoding",
    "to",
    "from",
    "subject",
    "reply-to",
    "cc",
    "bcc",
];

/// An email address: `ana@example.com`, `Ana María <ana@example.com>`, or
/// `{"email": "ana@example.com", "name": "Ana María"}`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Address {
    Text(String),
    Object(NamedAddress),
}

/// An address with a display name.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NamedAddress {
    /// The address, like `ana@example.com`.
    pub email: String,
    /// The name shown beside it, like `Ana María`.
    #[serde(default)]
    pub name: Option<String>,
}

/// One address or a list. (The list is tried first: serde would also read a short list
/// as the fields of one `{"email", "name"}` object.)
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Addresses {
    Many(Vec<Address>),
    One(Address),
}

impl Addresses {
    fn list(&self) -> (Vec<&Address>, bool) {
        match self {
            Addresses::One(a) => (vec![a], false),
            Addresses::Many(v) => (v.iter().collect(), true),
        }
    }
}

/// The unsubscribe group of the message.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Asm {
    /// The ID of the unsubscribe group (SendGrid: Marketing > Unsubscribe Groups) the
    /// message belongs to: a recipient who unsubscribes from it gets no more of its messages.
    pub group_id: u64,
    /// The groups listed on the preferences page the unsubscribe link opens (at most 25
    /// group IDs).
    #[serde(default)]
    pub groups_to_display: Option<Vec<u64>>,
}

/// The `with` map of a `sendgrid.send_email` step.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// The sender: a verified sender or an address of an authenticated domain in your
    /// SendGrid account, as `news@example.com`, `Acme News <news@example.com>` or
    /// `{"email": "news@example.com", "name": "Acme News"}`.
    pub from: Address,
    /// The recipients: one address or a list (in the same forms as `from`). Everyone in
    /// `to`, `cc` and `bcc` receives the same message; at most 1000 in all.
    pub to: Addresses,
    /// Copies: one address or a list.
    #[serde(default)]
    pub cc: Option<Addresses>,
    /// Blind copies: one address or a list.
    #[serde(default)]
    pub bcc: Option<Addresses>,
    /// Where replies go, when not to `from`.
    #[serde(default)]
    pub reply_to: Option<Address>,
    /// The subject line. Required without `template_id`; a dynamic template sets its own
    /// subject (which may use `dynamic_template_data`).
    #[serde(default)]
    pub subject: Option<String>,
    /// The plain-text body. Give `text`, `html` or both, or a `template_id`.
    #[serde(default)]
    pub text: Option<String>,
    /// The HTML body. Give `text`, `html` or both, or a `template_id`.
    #[serde(default)]
    pub html: Option<String>,
    /// A dynamic template's ID (`d-` and 32 hexadecimal characters, in SendGrid under
    /// Email API > Dynamic Templates): the template gives the subject and the body.
    #[serde(default)]
    pub template_id: Option<String>,
    /// The values a dynamic template fills in (`{{first_name}}` in the template reads
    /// `first_name` here): any JSON object. Needs `template_id`.
    #[serde(default)]
    pub dynamic_template_data: Option<Map<String, Value>>,
    /// The unsubscribe group: `{"group_id": 12345, "groups_to_display": [12345, 67890]}`.
    #[serde(default)]
    pub asm: Option<Asm>,
    /// Categories to group the message by in SendGrid's statistics: at most 10, each at
    /// most 255 characters, no duplicates.
    #[serde(default)]
    pub categories: Option<Vec<String>>,
    /// Send later: a time in RFC 3339 (`2026-04-15T09:00:00+02:00`), in the future and at
    /// most 72 hours ahead (SendGrid's limit).
    #[serde(default)]
    pub send_at: Option<String>,
    /// Extra email headers, like `{"List-Unsubscribe": "<mailto:unsub@example.com>"}`.
    /// Headers SendGrid sets itself (From, To, Subject, Content-Type...) are refused.
    #[serde(default)]
    pub headers: Option<BTreeMap<String, String>>,
}

/// What SendGrid accepted.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Output {
    /// SendGrid's ID of the accepted message (the `X-Message-Id` answer header), to find it
    /// in the Email Activity feed and to match event webhooks (their `sg_message_id`
    /// starts with it). Absent when SendGrid gave none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
}

/// `sendgrid.send_email`.
#[derive(Debug, Clone)]
pub struct SendEmail {
    api_base: Arc<str>,
}

impl SendEmail {
    /// The action against the API at `api_base` (`https://api.sendgrid.com`).
    pub fn new(api_base: &str) -> Self {
        SendEmail { api_base: Arc::from(api_base.trim_end_matches('/')) }
    }
}

impl Action for SendEmail {
    type Input = Input;
    type Output = Output;

    const ID: &'static str = "send_email";
    const NAME: &'static str = "Send an email";
    const DESCRIPTION: &'static str = "Sends an email through SendGrid, as text and HTML or from a dynamic template, with an unsubscribe group, categories and an optional scheduled time.";
    // SendGrid takes no idempotency key for mail/send: a request sent twice sends two emails.
    const IDEMPOTENCY: Idempotency = Idempotency::None;

    /// Every recipient is a person the send policy decides about.
    fn reaches() -> Option<enlace_core::policy::Reach> {
        use enlace_core::policy::{Reach, RecipientKind};
        Some(Reach::new("email", RecipientKind::Email, &["to", "cc", "bcc"]))
    }

    fn sample() -> Output {
        Output { message_id: Some("14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0".into()) }
    }

    async fn call(&self, ctx: &ActionContext, input: Input) -> Result<Output, ConnectorError> {
        let mut request = build_request_at(&self.api_base, &input, &ctx.credentials, Utc::now())?;
        if !ctx.timeout.is_zero() {
            request.timeout = Some(ctx.timeout);
        }
        let resp = ctx.http.send(request).await.map_err(|e| enlace_kit::transport_error(e, false))?;
        output_of(resp)
    }
}

/// Checks the input and the connection and builds the request, `send_at` checked against
/// the clock. See [`build_request_at`].
pub fn build_request(api_base: &str, input: &Input, credentials: &Credentials) -> Result<HttpRequest, ConnectorError> {
    build_request_at(api_base, input, credentials, Utc::now())
}

/// Checks the input and builds the `mail/send` request, credentials included, as of `now`.
/// A problem with the input is [`ConnectorError::BadInput`] naming the field; a connection
/// without an API key is [`ConnectorError::Auth`].
pub fn build_request_at(
    api_base: &str,
    input: &Input,
    credentials: &Credentials,
    now: DateTime<Utc>,
) -> Result<HttpRequest, ConnectorError> {
    let from = address("from", &input.from)?;
    let mut personalization = Map::new();
    let mut count = 0;
    for (field, list) in [("to", Some(&input.to)), ("cc", input.cc.as_ref()), ("bcc", input.bcc.as_ref())] {
        let Some(list) = list else { continue };
        let (items, many) = list.list();
        if items.is_empty() {
            if field == "to" {
                return Err(ConnectorError::bad_input("to", "is empty; give at least one recipient"));
            }
            continue;
        }
        let mut out = Vec::with_capacity(items.len());
        for (i, a) in items.iter().enumerate() {
            let path = if many { format!("{field}[{i}]") } else { field.to_string() };
            out.push(address(&path, a)?);
        }
        count += out.len();
        personalization.insert(field.into(), Value::Array(out));
    }
    if count > MAX_RECIPIENTS {
        return Err(ConnectorError::bad_input(
            "to",
            format!("the message has {count} recipients in to, cc and bcc; SendGrid takes at most {MAX_RECIPIENTS}"),
        ));
    }

    let non_empty = |v: &Option<String>| v.as_deref().filter(|s| !s.trim().is_empty()).map(str::to_string);
    let subject = non_empty(&input.subject);
    let text = non_empty(&input.text);
    let html = non_empty(&input.html);
    let template_id = non_empty(&input.template_id).map(|t| t.trim().to_string());
    if let Some(t) = &template_id
        && !is_template_id(t)
    {
        return Err(ConnectorError::bad_input(
            "template_id",
            format!(
                "`{t}` is not a template ID: a dynamic template's ID is d- and 32 hexadecimal characters (Email API > Dynamic Templates), a legacy one a UUID"
            ),
        ));
    }
    if template_id.is_none() {
        if subject.is_none() {
            return Err(ConnectorError::bad_input("subject", "give the `subject`, or a `template_id` whose template sets it"));
        }
        if text.is_none() && html.is_none() {
            return Err(ConnectorError::bad_input("text", "give the message's `text`, `html`, or both, or a `template_id`"));
        }
    }
    if let Some(data) = &input.dynamic_template_data {
        if template_id.is_none() {
            return Err(ConnectorError::bad_input("dynamic_template_data", "goes with `template_id`: it fills in a dynamic template"));
        }
        personalization.insert("dynamic_template_data".into(), Value::Object(data.clone()));
    }

    let mut body = Map::new();
    body.insert("personalizations".into(), json!([Value::Object(personalization)]));
    body.insert("from".into(), from);
    if let Some(r) = &input.reply_to {
        body.insert("reply_to".into(), address("reply_to", r)?);
    }
    if let Some(s) = subject {
        body.insert("subject".into(), Value::String(s));
    }
    // SendGrid wants text/plain first, then text/html.
    let mut content = Vec::new();
    if let Some(t) = text {
        content.push(json!({"type": "text/plain", "value": t}));
    }
    if let Some(h) = html {
        content.push(json!({"type": "text/html", "value": h}));
    }
    if !content.is_empty() {
        body.insert("content".into(), Value::Array(content));
    }
    if let Some(t) = template_id {
        body.insert("template_id".into(), Value::String(t));
    }
    if let Some(asm) = &input.asm {
        let mut a = json!({"group_id": asm.group_id});
        if let Some(groups) = &asm.groups_to_display {
            if groups.len() > MAX_GROUPS_TO_DISPLAY {
                return Err(ConnectorError::bad_input(
                    "asm.groups_to_display",
                    format!("has {} groups; SendGrid shows at most {MAX_GROUPS_TO_DISPLAY}", groups.len()),
                ));
            }
            a["groups_to_display"] = json!(groups);
        }
        body.insert("asm".into(), a);
    }
    if let Some(categories) = &input.categories {
        if categories.len() > MAX_CATEGORIES {
            return Err(ConnectorError::bad_input(
                "categories",
                format!("has {} categories; SendGrid takes at most {MAX_CATEGORIES}", categories.len()),
            ));
        }
        let mut seen = HashSet::new();
        for (i, c) in categories.iter().enumerate() {
            let path = format!("categories[{i}]");
            if c.trim().is_empty() {
                return Err(ConnectorError::bad_input(path, "is empty"));
            }
            if c.chars().count() > MAX_CATEGORY_CHARS {
                return Err(ConnectorError::bad_input(path, format!("is longer than {MAX_CATEGORY_CHARS} characters")));
            }
            if !seen.insert(c.as_str()) {
                return Err(ConnectorError::bad_input(path, format!("`{c}` is listed twice; SendGrid refuses duplicate categories")));
            }
        }
        if !categories.is_empty() {
            body.insert("categories".into(), json!(categories));
        }
    }
    if let Some(at) = &input.send_at {
        body.insert("send_at".into(), json!(send_at(at, now)?));
    }
    if let Some(headers) = &input.headers {
        for (name, value) in headers {
            let path = format!("headers.{name}");
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(ConnectorError::bad_input(path, format!("`{name}` is not a valid header name")));
            }
            if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
                return Err(ConnectorError::bad_input(
                    path,
                    format!(
                        "SendGrid sets `{name}` itself and refuses it here; use the step's own fields (from, to, subject, reply_to...)"
                    ),
                ));
            }
            if value.contains(['\r', '\n']) {
                return Err(ConnectorError::bad_input(path, "contains a line break, which a header value cannot"));
            }
        }
        if !headers.is_empty() {
            body.insert("headers".into(), json!(headers));
        }
    }

    if !matches!(credentials, Credentials::Bearer { .. }) {
        return Err(ConnectorError::auth(
            "this step needs a SendGrid connection: a bearer connection holding an API key (SG....) with the Mail Send permission",
        ));
    }
    let mut request = HttpRequest::new(Method::POST, format!("{api_base}/v3/mail/send"));
    request.headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let encoded =
        serde_json::to_vec(&Value::Object(body)).map_err(|e| ConnectorError::permanent(format!("could not encode the message: {e}")))?;
    request.body = Bytes::from(encoded);
    enlace_kit::apply_credentials(&mut request, credentials)?;
    Ok(request)
}

/// `send_at` as Unix seconds, refused in the past or more than 72 hours ahead of `now`.
fn send_at(raw: &str, now: DateTime<Utc>) -> Result<i64, ConnectorError> {
    let at = DateTime::parse_from_rfc3339(raw.trim()).map_err(|_| {
        ConnectorError::bad_input(
            "send_at",
            format!("`{raw}` is not a time in RFC 3339 form, like 2026-04-15T09:00:00+02:00 or 2026-04-15T07:00:00Z"),
        )
    })?;
    let at = at.with_timezone(&Utc);
    if at <= now {
        return Err(ConnectorError::bad_input(
            "send_at",
            format!(
                "{} is in the past (it is now {}); leave `send_at` out to send at once",
                at.to_rfc3339(),
                now.format("%Y-%m-%dT%H:%M:%SZ")
            ),
        ));
    }
    if at - now > chrono::Duration::hours(MAX_SCHEDULE_HOURS) {
        return Err(ConnectorError::bad_input(
            "send_at",
            format!(
                "{} is more than {MAX_SCHEDULE_HOURS} hours ahead; SendGrid schedules at most {MAX_SCHEDULE_HOURS} hours in advance (add a `delay` step before this one to send later)",
                at.to_rfc3339()
            ),
        ));
    }
    Ok(at.timestamp())
}

/// An address as SendGrid's `{"email", "name"}` object, checked.
fn address(path: &str, a: &Address) -> Result<Value, ConnectorError> {
    let (email, name) = match a {
        Address::Object(n) => (n.email.trim().to_string(), n.name.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_string)),
        Address::Text(t) => {
            let t = t.trim();
            match (t.rfind('<'), t.ends_with('>')) {
                (Some(open), true) => {
                    let name = t[..open].trim().trim_matches('"').trim();
                    (t[open + 1..t.len() - 1].trim().to_string(), (!name.is_empty()).then(|| name.to_string()))
                }
                _ => (t.to_string(), None),
            }
        }
    };
    if !is_email(&email) {
        return Err(ConnectorError::bad_input(
            path,
            format!(
                "`{email}` is not an email address; give `ana@example.com`, `Ana <ana@example.com>` or {{\"email\": ..., \"name\": ...}}"
            ),
        ));
    }
    let mut out = json!({"email": email});
    if let Some(n) = name {
        out["name"] = Value::String(n);
    }
    Ok(out)
}

fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.rsplit_once('@') else { return false };
    !local.is_empty()
        && !s.chars().any(|c| c.is_whitespace() || matches!(c, '<' | '>' | ',' | ';'))
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains('@')
}

/// A dynamic template ID (`d-` and 32 hex) or a legacy template's UUID.
fn is_template_id(s: &str) -> bool {
    let hex = |t: &str| t.bytes().all(|b| b.is_ascii_hexdigit());
    if let Some(rest) = s.strip_prefix("d-") {
        return rest.len() == 32 && hex(rest);
    }
    let parts: Vec<&str> = s.split('-').collect();
    parts.iter().map(|p| p.len()).collect::<Vec<_>>() == [8, 4, 4, 4, 12] && parts.iter().all(|p| hex(p))
}

/// The step's output from SendGrid's answer, or the error it reports.
pub fn output_of(resp: HttpResponse) -> Result<Output, ConnectorError> {
    if resp.status.as_u16() >= 400 {
        return Err(sendgrid_error(resp));
    }
    if !resp.status.is_success() {
        return Err(ConnectorError::MaybeDelivered {
            message: format!(
                "SendGrid answered HTTP {} instead of 202 Accepted; the email may have been sent: check SendGrid's Email Activity before replaying",
                resp.status.as_u16()
            ),
        });
    }
    let message_id =
        resp.headers.get("x-message-id").and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty()).map(str::to_string);
    Ok(Output { message_id })
}

/// SendGrid's error answer: `{"errors": [{"message": "...", "field": "from.email", "help": ...}]}`.
/// An error naming a field is bad input on the step's field; otherwise the status decides.
pub fn sendgrid_error(resp: HttpResponse) -> ConnectorError {
    let status = resp.status.as_u16();
    let errors: Vec<(String, Option<String>)> = enlace_kit::json_body(&resp)
        .and_then(|b| b.get("errors").and_then(Value::as_array).cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|e| {
            let message = e.get("message").and_then(Value::as_str)?.trim().to_string();
            let field = e.get("field").and_then(Value::as_str).map(str::trim).filter(|f| !f.is_empty() && *f != "null").map(str::to_string);
            Some((message, field))
        })
        .collect();
    let all = errors
        .iter()
        .map(|(m, f)| match f {
            Some(f) => format!("{m} (field `{f}`)"),
            None => m.clone(),
        })
        .collect::<Vec<_>>()
        .join("; ");
    if (400..500).contains(&status)
        && !matches!(status, 401 | 403 | 429)
        && let Some(field) = errors.iter().find_map(|(_, f)| f.as_deref())
    {
        return ConnectorError::bad_input(step_field(field), format!("SendGrid refused the message: {all}"));
    }
    match enlace_kit::classify(resp) {
        Err(ConnectorError::Auth { message }) => ConnectorError::auth(format!(
            "{message}; check that the connection's API key is valid and has the Mail Send permission (Settings > API Keys)"
        )),
        Err(e) => e,
        Ok(_) => ConnectorError::permanent(format!("SendGrid answered HTTP {status}")),
    }
}

/// SendGrid's field path (`personalizations.0.to.1.email`, `from.email`, `content.0.value`)
/// as the step's field (`to[1]`, `from`, `text`).
fn step_field(field: &str) -> String {
    let parts: Vec<&str> = field.split('.').collect();
    match parts.as_slice() {
        ["personalizations", _, list @ ("to" | "cc" | "bcc"), i, ..] if i.parse::<usize>().is_ok() => format!("{list}[{i}]"),
        ["personalizations", _, list @ ("to" | "cc" | "bcc"), ..] => list.to_string(),
        ["personalizations", _, "dynamic_template_data", ..] => "dynamic_template_data".into(),
        ["personalizations", _, "send_at", ..] => "send_at".into(),
        ["personalizations", _, "subject", ..] => "subject".into(),
        ["personalizations", _, "headers", ..] => "headers".into(),
        ["personalizations", ..] => "to".into(),
        ["from" | "reply_to", ..] => parts[0].to_string(),
        ["content", ..] => "text".into(),
        ["asm", second, ..] => format!("asm.{second}"),
        ["categories", ..] => "categories".into(),
        [first, ..] => first.to_string(),
        [] => "from".into(),
    }
}

/// The connection test: `GET /v3/scopes` lists the API key's permissions and changes
/// nothing; the key must have `mail.send`.
#[derive(Debug, Clone)]
pub struct ApiKeyScopes {
    api_base: Arc<str>,
}

impl ApiKeyScopes {
    /// The test against the API at `api_base` (`https://api.sendgrid.com`).
    pub fn new(api_base: &str) -> Self {
        ApiKeyScopes { api_base: Arc::from(api_base.trim_end_matches('/')) }
    }
}

impl ConnectionTest for ApiKeyScopes {
    async fn test(&self, ctx: &ConnectionContext) -> Result<String, ConnectorError> {
        if !matches!(ctx.credentials, Credentials::Bearer { .. }) {
            return Err(ConnectorError::auth("the connection must be a bearer connection holding a SendGrid API key (SG....)"));
        }
        let mut request = HttpRequest::new(Method::GET, format!("{}/v3/scopes", self.api_base));
        if !ctx.timeout.is_zero() {
            request.timeout = Some(ctx.timeout);
        }
        enlace_kit::apply_credentials(&mut request, &ctx.credentials)?;
        let resp = ctx.http.send(request).await.map_err(|e| enlace_kit::transport_error(e, true))?;
        if resp.status.as_u16() >= 400 {
            return Err(sendgrid_error(resp));
        }
        let scopes: Vec<String> = enlace_kit::json_body(&resp)
            .and_then(|b| b.get("scopes").and_then(Value::as_array).cloned())
            .ok_or_else(|| {
                ConnectorError::permanent(format!(
                    "SendGrid answered HTTP {} to GET /v3/scopes without a `scopes` list",
                    resp.status.as_u16()
                ))
            })?
            .iter()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect();
        if !scopes.iter().any(|s| s == "mail.send") {
            return Err(ConnectorError::auth(
                "the API key works but lacks the Mail Send permission; edit it in SendGrid (Settings > API Keys) and give it Mail Send access",
            ));
        }
        Ok(format!("the API key works and may send mail ({} permissions)", scopes.len()))
    }
}
