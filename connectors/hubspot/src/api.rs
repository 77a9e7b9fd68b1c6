//! What every HubSpot call shares: a JSON request carrying the connection's token, HubSpot's
//! error answers turned into [`ConnectorError`] classes, and the connection test.
//!
//! HubSpot answers errors as `{"status": "error", "message": "...", "correlationId": "...",
//! "category": "VALIDATION_ERROR", "errors": [{"message": "...", "code": "...", "context":
//! {"propertyName": ["..."]}}]}`; every field may be missing. Older validation messages carry
//! the details as JSON inside the message: `Property values were not valid: [{"isValid":
//! false, "message": "...", "error": "PROPERTY_DOESNT_EXIST", "name": "favorite_food"}]`. Both
//! forms name the property, which becomes the path of a [`ConnectorError::BadInput`].

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderValue;
use http::header::{ACCEPT, CONTENT_TYPE};
use serde_json::{Map, Value};

use enlace_core::http::{HttpRequest, HttpResponse, HttpTransport, Method};
use enlace_core::{ConnectionContext, ConnectionTest, ConnectorError, Credentials};

/// The wait after HubSpot's daily limit (`policyName: DAILY`) when the answer gives none. The
/// daily quota comes back at midnight in the account's time zone, which the API does not say,
/// so the step is tried again every hour until it passes.
pub const DAILY_LIMIT_WAIT: Duration = Duration::from_secs(3600);

/// The wait after HubSpot's burst limit (`TEN_SECONDLY_ROLLING`) when neither `Retry-After` nor
/// the rate limit headers give one: the length of HubSpot's rolling window.
pub const BURST_LIMIT_WAIT: Duration = Duration::from_secs(10);

/// Where a HubSpot property lives in the step's input: `properties.favorite_food`,
/// `contacts[2].properties.favorite_food`, `filters[0].property`...
pub type FieldOf<'a> = &'a (dyn Fn(&str) -> String + Sync);

/// A `POST`/`GET` with a JSON body (when given) and the connection's token. A step without a
/// connection is an [`ConnectorError::Auth`] error saying what to create.
pub fn request(
    method: Method,
    url: String,
    body: Option<&Value>,
    credentials: &Credentials,
    timeout: Duration,
) -> Result<HttpRequest, ConnectorError> {
    if matches!(credentials, Credentials::None) {
        return Err(ConnectorError::auth(
            "this step has no HubSpot connection; create one with a private app's access token (or through HubSpot's OAuth) and name it in the step's `connection`",
        ));
    }
    let mut request = HttpRequest::new(method, url);
    request.headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
    if let Some(body) = body {
        request.headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        request.body = Bytes::from(body.to_string());
    }
    if !timeout.is_zero() {
        request.timeout = Some(timeout);
    }
    enlace_kit::apply_credentials(&mut request, credentials)?;
    Ok(request)
}

/// Sends `request`; a transport failure is classified as for a call that is `idempotent` or not.
pub async fn send(http: &Arc<dyn HttpTransport>, request: HttpRequest, idempotent: bool) -> Result<HttpResponse, ConnectorError> {
    http.send(request).await.map_err(|e| enlace_kit::transport_error(e, idempotent))
}

/// The JSON object of a 2xx answer, or `None` when it is something else.
pub fn json_object(resp: &HttpResponse) -> Option<Map<String, Value>> {
    match enlace_kit::json_body(resp) {
        Some(Value::Object(map)) => Some(map),
        _ => None,
    }
}

/// What a body that is not what HubSpot documents looks like, for messages: its start.
pub fn describe_body(resp: &HttpResponse) -> String {
    enlace_kit::vendor_message(resp).unwrap_or_else(|| "an empty body".into())
}

/// A property named by an error, with HubSpot's words about it.
#[derive(Debug, Clone, PartialEq)]
pub struct PropertyProblem {
    /// The property's internal name (`favorite_food`).
    pub name: String,
    /// HubSpot's message about it (`Property "favorite_food" does not exist`).
    pub message: String,
    /// HubSpot's code, like `PROPERTY_DOESNT_EXIST`, `INVALID_OPTION` or `INVALID_EMAIL`.
    pub code: Option<String>,
}

fn text<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty())
}

/// `context.<key>`: HubSpot gives a list of strings; a lone string is taken too.
pub fn context_values(v: &Value, key: &str) -> Vec<String> {
    match v.pointer(&format!("/context/{key}")) {
        Some(Value::Array(items)) => items.iter().filter_map(|i| i.as_str().map(str::to_string)).collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    }
}

/// Every property an error object (a whole answer, or one entry of a batch's `errors`) names.
pub fn property_problems(err: &Value) -> Vec<PropertyProblem> {
    let mut found: Vec<PropertyProblem> = Vec::new();
    let mut push = |p: PropertyProblem| {
        if !found.iter().any(|f| f.name == p.name) {
            found.push(p);
        }
    };
    for detail in err.get("errors").and_then(Value::as_array).into_iter().flatten() {
        let message = text(detail, "message").unwrap_or("refused").to_string();
        let code = text(detail, "code").map(str::to_string);
        for name in context_values(detail, "propertyName") {
            push(PropertyProblem { name, message: message.clone(), code: code.clone() });
        }
    }
    let message = text(err, "message").unwrap_or_default();
    for name in context_values(err, "propertyName") {
        push(PropertyProblem { name, message: message.to_string(), code: None });
    }
    // `Property values were not valid: [{...}]`: the details as JSON inside the message.
    if let Some(start) = message.find('[')
        && let Ok(Value::Array(items)) = serde_json::from_str::<Value>(&message[start..])
    {
        for item in items {
            if let Some(name) = text(&item, "name") {
                let message = text(&item, "message").unwrap_or("refused").to_string();
                push(PropertyProblem { name: name.to_string(), message, code: text(&item, "error").map(str::to_string) });
            }
        }
    }
    found
}

/// The id of the existing contact a `CONFLICT` names: `Contact already exists. Existing ID: 1234`.
pub fn existing_id(message: &str) -> Option<String> {
    let at = message.find("Existing ID:")? + "Existing ID:".len();
    let id: String = message[at..].trim_start().chars().take_while(char::is_ascii_digit).collect();
    (!id.is_empty()).then_some(id)
}

/// HubSpot's message, with the correlation id HubSpot's support asks for.
fn said(status: u16, body: Option<&Value>, resp: &HttpResponse) -> String {
    let message = body
        .and_then(|b| text(b, "message"))
        .map(str::to_string)
        .or_else(|| enlace_kit::vendor_message(resp))
        .unwrap_or_else(|| "no explanation".into());
    match body.and_then(|b| text(b, "correlationId")) {
        Some(id) => format!("HubSpot answered HTTP {status}: {message} (correlation id {id})"),
        None => format!("HubSpot answered HTTP {status}: {message}"),
    }
}

/// A property problem as a sentence.
pub fn problem_sentence(p: &PropertyProblem) -> String {
    let code = p.code.as_deref().map(|c| format!(" ({c})")).unwrap_or_default();
    let hint = match p.code.as_deref() {
        Some("PROPERTY_DOESNT_EXIST") => {
            "; use the property's internal name (HubSpot: Settings > Properties > the property > internal name), like `firstname` or `lifecyclestage`"
        }
        Some("READ_ONLY_VALUE") => "; HubSpot sets this property itself",
        Some("INVALID_OPTION") => "; use one of the property's internal option values",
        _ => "",
    };
    format!("HubSpot refused the property `{}`: {}{code}{hint}", p.name, p.message)
}

/// Classifies a HubSpot answer of 400 or more. `field_of` maps a property HubSpot names to the
/// step's field that holds it.
pub fn error_of(resp: HttpResponse, field_of: FieldOf<'_>) -> ConnectorError {
    let status = resp.status.as_u16();
    let body = enlace_kit::json_body(&resp).filter(Value::is_object);
    let message = said(status, body.as_ref(), &resp);
    let category = body.as_ref().and_then(|b| text(b, "category")).unwrap_or_default().to_string();
    match status {
        429 => {
            let policy = body.as_ref().and_then(|b| text(b, "policyName")).unwrap_or_default().to_ascii_uppercase();
            let header_wait = enlace_kit::retry_after(&resp.headers);
            let (retry_after, message) = if policy.contains("DAILY") {
                let wait = header_wait.unwrap_or(DAILY_LIMIT_WAIT);
                (
                    wait,
                    format!(
                        "{message}; the account's daily API quota is spent: it comes back at midnight in the HubSpot account's time zone, so the step is tried again every hour until then"
                    ),
                )
            } else {
                // Retry-After, else the rolling window read from X-HubSpot-RateLimit-* by the kit.
                let wait = match enlace_kit::classify(resp) {
                    Err(e) => e.retry_after(),
                    Ok(_) => None,
                };
                (wait.unwrap_or(BURST_LIMIT_WAIT), message)
            };
            ConnectorError::RateLimited { retry_after: Some(retry_after), message }
        }
        401 => ConnectorError::auth(format!(
            "{message}; the access token was refused (expired, revoked, or its private app deleted): reconnect, or paste the private app's current token into the connection"
        )),
        403 => ConnectorError::auth(format!(
            "{message}; the token is missing a scope this call needs (crm.objects.contacts.read to read, crm.objects.contacts.write to write): add it to the app, then update the connection"
        )),
        409 => {
            let existing = body.as_ref().and_then(|b| text(b, "message")).and_then(existing_id);
            let message = match existing {
                Some(id) => format!(
                    "{message}; a contact with this email already exists in HubSpot (ID {id}): use `upsert_contacts` to update it instead"
                ),
                None => message,
            };
            ConnectorError::Permanent { message, status: Some(409) }
        }
        400 | 422 => {
            let problems = body.as_ref().map(property_problems).unwrap_or_default();
            match problems.first() {
                Some(p) => {
                    let mut text = problem_sentence(p);
                    if problems.len() > 1 {
                        let others: Vec<String> = problems[1..].iter().map(|p| format!("`{}`", p.name)).collect();
                        text.push_str(&format!("; also refused: {}", others.join(", ")));
                    }
                    ConnectorError::bad_input(field_of(&p.name), format!("{text} [{message}]"))
                }
                None => ConnectorError::Permanent { message, status: Some(status) },
            }
        }
        408 | 425 | 500..=599 => ConnectorError::Transient { message, retry_after: enlace_kit::retry_after(&resp.headers) },
        _ if category == "OBJECT_NOT_FOUND" || status == 404 => ConnectorError::Permanent { message, status: Some(status) },
        _ => match enlace_kit::classify(resp) {
            Err(ConnectorError::Permanent { status, .. }) => ConnectorError::Permanent { message, status },
            Err(e) => e,
            Ok(_) => ConnectorError::Permanent { message, status: Some(status) },
        },
    }
}

/// The connection test: `GET /crm/v3/objects/contacts?limit=1`, the cheapest authenticated
/// read; it changes nothing.
#[derive(Debug, Clone)]
pub struct ReadOneContact {
    api_base: Arc<str>,
}

impl ReadOneContact {
    /// The test against the API at `api_base` (`https://api.hubapi.com`).
    pub fn new(api_base: &str) -> Self {
        ReadOneContact { api_base: Arc::from(api_base.trim_end_matches('/')) }
    }
}

impl ConnectionTest for ReadOneContact {
    async fn test(&self, ctx: &ConnectionContext) -> Result<String, ConnectorError> {
        let url = format!("{}/crm/v3/objects/contacts?limit=1", self.api_base);
        let request = request(Method::GET, url, None, &ctx.credentials, ctx.timeout)?;
        let resp = send(&ctx.http, request, true).await?;
        if resp.status.as_u16() >= 400 {
            return Err(error_of(resp, &|_| "connection".to_string()));
        }
        let Some(body) = json_object(&resp).filter(|b| b.get("results").is_some_and(Value::is_array)) else {
            return Err(ConnectorError::permanent(format!(
                "HubSpot answered HTTP {} to GET /crm/v3/objects/contacts without a `results` list ({})",
                resp.status.as_u16(),
                describe_body(&resp)
            )));
        };
        let any = body["results"].as_array().is_some_and(|r| !r.is_empty());
        Ok(if any {
            "Connected: the token can read HubSpot contacts".to_string()
        } else {
            "Connected: the token can read HubSpot contacts (the account has none yet)".to_string()
        })
    }
}
