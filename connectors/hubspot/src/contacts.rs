//! Writing contacts: `upsert_contact` (one, by email), `upsert_contacts` (batch upsert by
//! email), `create_contacts` (batch create) and `update_contacts` (batch update by id).
//!
//! Every write goes through one of HubSpot's batch endpoints
//! (`POST /crm/v3/objects/contacts/batch/{upsert,create,update}`), at most 100 contacts per
//! call. A step with more is refused before anything is sent, naming `contacts` and the limit:
//! one step is one call, so the connection's rate budget and a retry cover the whole step, and
//! a step never ends half written by our own doing. Each input carries an `objectWriteTraceId`
//! (its index in the step's list), which makes HubSpot answer a partly failed batch with
//! 207 Multi-Status, saying which inputs failed and why: the step then succeeds with the
//! failures listed in `failed`; only when every input failed does the step fail, with the
//! first failure classified.

use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use enlace_core::http::Method;
use enlace_core::{Action, ActionContext, ConnectorError, Idempotency};

use crate::api;

/// The most contacts HubSpot takes in one batch call.
pub const MAX_BATCH: usize = 100;

/// Property values by internal name.
pub type Properties = Map<String, Value>;

/// One contact of `upsert_contacts`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpsertItem {
    /// The contact's email address: HubSpot finds the contact by it (a new contact is created
    /// when none has it). Case does not matter.
    pub email: String,
    /// Property values by HubSpot internal name, like `{"firstname": "Ana", "lastname":
    /// "García", "lifecyclestage": "lead"}` (Settings > Properties shows each property's internal
    /// name). Numbers and true/false are sent as text, a list as HubSpot's `a;b` for
    /// multiple-checkbox properties, and an empty text clears a value.
    #[serde(default)]
    pub properties: Properties,
}

/// The `with` map of `hubspot.upsert_contact`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpsertContactInput {
    /// The contact's email address: HubSpot updates the contact with this email, or creates one.
    /// Case does not matter.
    pub email: String,
    /// Property values by HubSpot internal name, like `{"firstname": "Ana", "lifecyclestage":
    /// "lead"}` (Settings > Properties shows each property's internal name). Numbers and
    /// true/false are sent as text, a list as `a;b` for multiple-checkbox properties, and an
    /// empty text clears a value.
    #[serde(default)]
    pub properties: Properties,
}

/// The `with` map of `hubspot.upsert_contacts`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpsertContactsInput {
    /// The contacts to create or update, each `{"email": "...", "properties": {...}}`; at most
    /// 100 per step (HubSpot's batch limit): split longer lists over several steps.
    pub contacts: Vec<UpsertItem>,
}

/// One contact of `create_contacts`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateItem {
    /// Property values by HubSpot internal name; give at least `email` (HubSpot's key against
    /// duplicates), `firstname` or `lastname`, like `{"email": "ana@example.com", "firstname":
    /// "Ana"}`. Numbers and true/false are sent as text, a list as `a;b`.
    pub properties: Properties,
}

/// The `with` map of `hubspot.create_contacts`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateContactsInput {
    /// The contacts to create, each `{"properties": {...}}`; at most 100 per step. A contact
    /// whose email already exists in HubSpot fails (listed in `failed` with the existing
    /// contact's id): use `upsert_contacts` to create or update.
    pub contacts: Vec<CreateItem>,
}

/// One contact of `update_contacts`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateItem {
    /// The contact's HubSpot id (the record ID in its URL, or `id` from an earlier step), like
    /// `12345`.
    pub id: String,
    /// The property values to set, by internal name, like `{"lifecyclestage": "customer"}`.
    /// Properties left out keep their values; an empty text clears one.
    pub properties: Properties,
}

/// The `with` map of `hubspot.update_contacts`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateContactsInput {
    /// The contacts to update, each `{"id": "...", "properties": {...}}`; at most 100 per step.
    pub contacts: Vec<UpdateItem>,
}

/// A contact as HubSpot stored it.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Contact {
    /// The contact's HubSpot id (its record ID), like `12345`.
    pub id: String,
    /// Its email address, as HubSpot stored it (lowercased).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Whether the contact was created by this step (false: an existing one was updated).
    /// Only upserts say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new: Option<bool>,
    /// Which input it came from: its position in the step's `contacts` (from 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    /// The property values HubSpot returned, by internal name (all as text).
    pub properties: Properties,
}

/// An input HubSpot refused, in a batch that partly succeeded.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Failed {
    /// The input's position in the step's `contacts` (from 0), when HubSpot said which.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    /// The input's email, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The input's contact id (updates).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// HubSpot's category, like `VALIDATION_ERROR` or `CONFLICT`.
    pub category: String,
    /// HubSpot's explanation.
    pub message: String,
    /// The property HubSpot refused, when it named one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub property: Option<String>,
    /// For `CONFLICT` (the email exists already): the id of the existing contact.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub existing_id: Option<String>,
}

/// What a batch step gives later steps.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct BatchOutput {
    /// The contacts written, in the order of the step's `contacts`.
    pub contacts: Vec<Contact>,
    /// The inputs HubSpot refused (the others were written); empty when all went through.
    pub failed: Vec<Failed>,
    /// How many contacts were created.
    pub created: usize,
    /// How many existing contacts were updated.
    pub updated: usize,
}

/// What `upsert_contact` gives later steps.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct UpsertContactOutput {
    /// The contact's HubSpot id, like `12345`.
    pub id: String,
    /// Its email address as HubSpot stored it (lowercased).
    pub email: String,
    /// Whether the contact was created (false: an existing contact was updated).
    pub new: bool,
    /// The property values HubSpot returned, by internal name (all as text).
    pub properties: Properties,
}

fn sample_properties(email: &str) -> Properties {
    let mut p = Map::new();
    p.insert("email".into(), json!(email));
    p.insert("firstname".into(), json!("Ana"));
    p.insert("lastname".into(), json!("García"));
    p.insert("lifecyclestage".into(), json!("lead"));
    p.insert("createdate".into(), json!("2026-03-02T09:15:22.481Z"));
    p.insert("lastmodifieddate".into(), json!("2026-03-02T09:15:22.481Z"));
    p.insert("hs_object_id".into(), json!("12345"));
    p
}

fn sample_batch(new: Option<bool>) -> BatchOutput {
    BatchOutput {
        contacts: vec![Contact {
            id: "12345".into(),
            email: Some("ana@example.com".into()),
            new,
            index: Some(0),
            properties: sample_properties("ana@example.com"),
        }],
        failed: vec![Failed {
            index: Some(1),
            email: Some("ben@example.com".into()),
            id: None,
            category: "VALIDATION_ERROR".into(),
            message: "Property \"favorite_food\" does not exist".into(),
            property: Some("favorite_food".into()),
            existing_id: None,
        }],
        created: 1,
        updated: 0,
    }
}

/// A property name as HubSpot's internal names are written; labels (`First name`) are refused.
fn check_properties(props: &Properties, at: &str) -> Result<Map<String, Value>, ConnectorError> {
    let mut out = Map::new();
    for (name, value) in props {
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.') {
            return Err(ConnectorError::bad_input(
                format!("{at}.{name}"),
                "is not a HubSpot internal property name: use the internal name (Settings > Properties > the property), like `firstname` or `lifecyclestage`, not its label",
            ));
        }
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => n.to_string(),
            Value::Array(items) => {
                let mut parts = Vec::new();
                for item in items {
                    match item {
                        Value::String(s) => parts.push(s.clone()),
                        Value::Number(n) => parts.push(n.to_string()),
                        _ => {
                            return Err(ConnectorError::bad_input(
                                format!("{at}.{name}"),
                                "a list holds the options of a multiple-checkbox property: give texts, like [\"a\", \"b\"]",
                            ));
                        }
                    }
                }
                parts.join(";")
            }
            Value::Object(_) => {
                return Err(ConnectorError::bad_input(
                    format!("{at}.{name}"),
                    "must be a text, a number, true/false or a list, not an object",
                ));
            }
        };
        out.insert(name.clone(), Value::String(text));
    }
    Ok(out)
}

/// A plausible email address: something@domain.tld, no spaces. HubSpot checks the rest.
pub fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.rsplit_once('@') else { return false };
    !local.is_empty() && domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.') && !s.chars().any(char::is_whitespace)
}

fn check_count(n: usize) -> Result<(), ConnectorError> {
    if n == 0 {
        return Err(ConnectorError::bad_input("contacts", "is empty: give at least one contact"));
    }
    if n > MAX_BATCH {
        return Err(ConnectorError::bad_input(
            "contacts",
            format!(
                "has {n} contacts; HubSpot takes at most {MAX_BATCH} per batch: split the list over several steps (for example with a loop over chunks of 100)"
            ),
        ));
    }
    Ok(())
}

/// What the connector knows of each input, to tie HubSpot's answers back to it.
#[derive(Debug, Clone, Default)]
struct Sent {
    email: Option<String>,
    id: Option<String>,
    properties: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Upsert,
    Create,
    Update,
}

impl Kind {
    fn endpoint(self) -> &'static str {
        match self {
            Kind::Upsert => "upsert",
            Kind::Create => "create",
            Kind::Update => "update",
        }
    }
}

/// The step's field that holds property `name`: `contacts[i].properties.name` for the first
/// input that sets it, `contacts[i].email` for an upsert's email.
fn batch_field(sent: &[Sent], kind: Kind, name: &str, message: &str) -> String {
    if let Some(i) = sent.iter().position(|s| s.properties.iter().any(|p| p == name)) {
        return format!("contacts[{i}].properties.{name}");
    }
    if name == "email" && kind == Kind::Upsert {
        let lower = message.to_lowercase();
        let i = sent.iter().position(|s| s.email.as_deref().is_some_and(|e| lower.contains(e))).unwrap_or(0);
        return format!("contacts[{i}].email");
    }
    "contacts".to_string()
}

/// Sends one batch call and reads HubSpot's answer (200, 201 or 207).
async fn run_batch(
    api_base: &str,
    ctx: &ActionContext,
    kind: Kind,
    inputs: Vec<Value>,
    sent: &[Sent],
) -> Result<BatchOutput, ConnectorError> {
    let url = format!("{api_base}/crm/v3/objects/contacts/batch/{}", kind.endpoint());
    let body = json!({ "inputs": inputs });
    let request = api::request(Method::POST, url, Some(&body), &ctx.credentials, ctx.timeout)?;
    let idempotent = kind != Kind::Create;
    let resp = api::send(&ctx.http, request, idempotent).await?;
    if resp.status.as_u16() >= 400 {
        let err = api::error_of(resp, &|name| batch_field(sent, kind, name, ""));
        // A 400 about an email names no property: point at the input whose address it quotes.
        return Err(match err {
            ConnectorError::BadInput { path, message } if path.ends_with(".email") || path == "contacts" => {
                let path = if path == "contacts" { path } else { batch_field(sent, kind, "email", &message) };
                ConnectorError::BadInput { path, message }
            }
            other => other,
        });
    }
    let status = resp.status.as_u16();
    let Some(body) = api::json_object(&resp).filter(|b| b.get("results").is_some_and(Value::is_array)) else {
        let what = format!(
            "HubSpot answered HTTP {status} to the batch {} without a `results` list ({})",
            kind.endpoint(),
            api::describe_body(&resp)
        );
        return Err(if kind == Kind::Create {
            ConnectorError::MaybeDelivered {
                message: format!("{what}; the contacts may have been created: check HubSpot before replaying"),
            }
        } else {
            ConnectorError::permanent(format!("{what}; the write is idempotent, so replaying the run is safe"))
        });
    };
    read_batch(&Value::Object(body), kind, sent)
}

/// The step's output from a batch answer: results tied to their inputs, failures listed; an
/// error when every input failed.
fn read_batch(body: &Value, kind: Kind, sent: &[Sent]) -> Result<BatchOutput, ConnectorError> {
    let index_of_trace = |v: &Value| -> Option<usize> {
        v.get("objectWriteTraceId").and_then(Value::as_str).and_then(|t| t.parse::<usize>().ok()).filter(|i| *i < sent.len())
    };
    let mut contacts = Vec::new();
    for r in body["results"].as_array().into_iter().flatten() {
        let Some(id) = r.get("id").and_then(|v| v.as_str().map(str::to_string).or_else(|| v.as_u64().map(|n| n.to_string()))) else {
            return Err(ConnectorError::permanent(format!("HubSpot's batch {} answer has a result without an `id`: {r}", kind.endpoint())));
        };
        let properties = r.get("properties").and_then(Value::as_object).cloned().unwrap_or_default();
        let email = properties.get("email").and_then(Value::as_str).map(str::to_string);
        let index = index_of_trace(r)
            .or_else(|| {
                let e = email.as_deref()?.to_lowercase();
                sent.iter().position(|s| s.email.as_deref() == Some(e.as_str()))
            })
            .or_else(|| sent.iter().position(|s| s.id.as_deref() == Some(id.as_str())));
        let new = match kind {
            Kind::Upsert => r.get("new").and_then(Value::as_bool),
            _ => None,
        };
        let email = email.or_else(|| index.and_then(|i| sent[i].email.clone()));
        contacts.push(Contact { id, email, new, index, properties });
    }
    contacts.sort_by_key(|c| c.index.unwrap_or(usize::MAX));

    let mut failed = Vec::new();
    for e in body.get("errors").and_then(Value::as_array).into_iter().flatten() {
        let category = e.get("category").and_then(Value::as_str).unwrap_or("ERROR").to_string();
        let message = e.get("message").and_then(Value::as_str).unwrap_or("refused").to_string();
        let problems = api::property_problems(e);
        let property = problems.first().map(|p| p.name.clone());
        let message = problems.first().map(api::problem_sentence).unwrap_or(message);
        let existing_id = api::existing_id(e.get("message").and_then(Value::as_str).unwrap_or_default());
        let mut indexes: Vec<usize> =
            api::context_values(e, "objectWriteTraceId").iter().filter_map(|t| t.parse().ok()).filter(|i| *i < sent.len()).collect();
        if indexes.is_empty() {
            for id in api::context_values(e, "ids") {
                if let Some(i) =
                    sent.iter().position(|s| s.id.as_deref() == Some(id.as_str()) || s.email.as_deref() == Some(id.to_lowercase().as_str()))
                {
                    indexes.push(i);
                }
            }
        }
        let entry = |index: Option<usize>| Failed {
            index,
            email: index.and_then(|i| sent[i].email.clone()),
            id: index.and_then(|i| sent[i].id.clone()),
            category: category.clone(),
            message: message.clone(),
            property: property.clone(),
            existing_id: existing_id.clone(),
        };
        if indexes.is_empty() {
            failed.push(entry(None));
        } else {
            failed.extend(indexes.into_iter().map(|i| entry(Some(i))));
        }
    }

    if contacts.is_empty() && !failed.is_empty() {
        return Err(all_failed(&failed, sent.len()));
    }
    let created = match kind {
        Kind::Create => contacts.len(),
        Kind::Update => 0,
        Kind::Upsert => contacts.iter().filter(|c| c.new == Some(true)).count(),
    };
    let updated = contacts.len() - created;
    Ok(BatchOutput { contacts, failed, created, updated })
}

/// Every input failed: the step fails, with the first failure classified.
fn all_failed(failed: &[Failed], inputs: usize) -> ConnectorError {
    let first = &failed[0];
    let lead = if inputs == 1 { String::new() } else { format!("HubSpot refused all {inputs} contacts; the first: ") };
    let at = first.index.map(|i| format!("contacts[{i}]")).unwrap_or_else(|| "contacts".into());
    if let Some(p) = &first.property {
        return ConnectorError::bad_input(format!("{at}.properties.{p}"), format!("{lead}{}", first.message));
    }
    match first.category.as_str() {
        "CONFLICT" => {
            let existing = first
                .existing_id
                .as_deref()
                .map(|id| format!(" (existing contact ID {id}); use `upsert_contacts` to update it"))
                .unwrap_or_default();
            ConnectorError::Permanent { message: format!("{lead}{}{existing}", first.message), status: Some(409) }
        }
        "VALIDATION_ERROR" => ConnectorError::bad_input(at, format!("{lead}{}", first.message)),
        "RATE_LIMITS" => {
            ConnectorError::RateLimited { retry_after: Some(api::BURST_LIMIT_WAIT), message: format!("{lead}{}", first.message) }
        }
        _ => ConnectorError::permanent(format!("{lead}{} ({})", first.message, first.category)),
    }
}

/// Checks and encodes the inputs of an upsert by email.
fn upsert_inputs(items: &[(&str, &Properties)], single: bool) -> Result<(Vec<Value>, Vec<Sent>), ConnectorError> {
    let mut inputs = Vec::new();
    let mut sent = Vec::new();
    for (i, (email, props)) in items.iter().enumerate() {
        let at = if single { String::new() } else { format!("contacts[{i}].") };
        let email = email.trim().to_lowercase();
        if !is_email(&email) {
            return Err(ConnectorError::bad_input(format!("{at}email"), format!("`{email}` is not an email address")));
        }
        if let Some(i2) = sent.iter().position(|s: &Sent| s.email.as_deref() == Some(email.as_str())) {
            return Err(ConnectorError::bad_input(
                format!("{at}email"),
                format!("`{email}` is also contacts[{i2}]: HubSpot refuses a batch that names one contact twice; merge the two"),
            ));
        }
        let mut properties = check_properties(props, &format!("{at}properties"))?;
        if let Some(other) = properties.get("email").and_then(Value::as_str)
            && other.trim().to_lowercase() != email
        {
            return Err(ConnectorError::bad_input(
                format!("{at}properties.email"),
                "differs from `email`, which finds the contact; to change a contact's address, use `update_contacts` with its id",
            ));
        }
        properties.remove("email");
        inputs.push(json!({"idProperty": "email", "id": email, "properties": properties, "objectWriteTraceId": i.to_string()}));
        sent.push(Sent { email: Some(email), id: None, properties: props.keys().cloned().collect() });
    }
    Ok((inputs, sent))
}

macro_rules! with_base {
    ($name:ident) => {
        impl $name {
            /// The action against the API at `api_base` (`https://api.hubapi.com`).
            pub fn new(api_base: &str) -> Self {
                $name { api_base: Arc::from(api_base.trim_end_matches('/')) }
            }
        }
    };
}

/// `hubspot.upsert_contact`.
#[derive(Debug, Clone)]
pub struct UpsertContact {
    api_base: Arc<str>,
}
with_base!(UpsertContact);

impl Action for UpsertContact {
    type Input = UpsertContactInput;
    type Output = UpsertContactOutput;

    const ID: &'static str = "upsert_contact";
    const NAME: &'static str = "Create or update a contact";
    const DESCRIPTION: &'static str =
        "Updates the HubSpot contact with this email, or creates it, with the given properties; returns its id and whether it is new.";
    // Keyed by the email: doing it twice leaves the same contact.
    const IDEMPOTENCY: Idempotency = Idempotency::Natural;

    fn sample() -> UpsertContactOutput {
        UpsertContactOutput {
            id: "12345".into(),
            email: "ana@example.com".into(),
            new: true,
            properties: sample_properties("ana@example.com"),
        }
    }

    async fn call(&self, ctx: &ActionContext, input: UpsertContactInput) -> Result<UpsertContactOutput, ConnectorError> {
        let (inputs, sent) = upsert_inputs(&[(input.email.as_str(), &input.properties)], true)?;
        let out = run_batch(&self.api_base, ctx, Kind::Upsert, inputs, &sent).await.map_err(single_path)?;
        let Some(contact) = out.contacts.into_iter().next() else {
            return Err(ConnectorError::permanent("HubSpot's upsert answer has no result for the contact"));
        };
        Ok(UpsertContactOutput {
            id: contact.id,
            email: contact.email.unwrap_or_else(|| sent[0].email.clone().unwrap_or_default()),
            new: contact.new.unwrap_or(false),
            properties: contact.properties,
        })
    }
}

/// `contacts[0].properties.x` → `properties.x` for the one-contact action.
fn single_path(err: ConnectorError) -> ConnectorError {
    match err {
        ConnectorError::BadInput { path, message } => {
            let path =
                path.strip_prefix("contacts[0].").map(str::to_string).unwrap_or(if path == "contacts" { "email".into() } else { path });
            ConnectorError::BadInput { path, message }
        }
        other => other,
    }
}

/// `hubspot.upsert_contacts`.
#[derive(Debug, Clone)]
pub struct UpsertContacts {
    api_base: Arc<str>,
}
with_base!(UpsertContacts);

impl Action for UpsertContacts {
    type Input = UpsertContactsInput;
    type Output = BatchOutput;

    const ID: &'static str = "upsert_contacts";
    const NAME: &'static str = "Create or update contacts (batch)";
    const DESCRIPTION: &'static str =
        "Creates or updates up to 100 HubSpot contacts by email in one call; lists which were created, updated, or refused and why.";
    const IDEMPOTENCY: Idempotency = Idempotency::Natural;

    fn sample() -> BatchOutput {
        sample_batch(Some(true))
    }

    async fn call(&self, ctx: &ActionContext, input: UpsertContactsInput) -> Result<BatchOutput, ConnectorError> {
        check_count(input.contacts.len())?;
        let items: Vec<(&str, &Properties)> = input.contacts.iter().map(|c| (c.email.as_str(), &c.properties)).collect();
        let (inputs, sent) = upsert_inputs(&items, false)?;
        run_batch(&self.api_base, ctx, Kind::Upsert, inputs, &sent).await
    }
}

/// `hubspot.create_contacts`.
#[derive(Debug, Clone)]
pub struct CreateContacts {
    api_base: Arc<str>,
}
with_base!(CreateContacts);

impl Action for CreateContacts {
    type Input = CreateContactsInput;
    type Output = BatchOutput;

    const ID: &'static str = "create_contacts";
    const NAME: &'static str = "Create contacts (batch)";
    const DESCRIPTION: &'static str =
        "Creates up to 100 HubSpot contacts in one call; a contact whose email exists already is listed as failed with the existing id.";
    // A second call creates the contacts again (or fails on their emails): never sent blindly.
    const IDEMPOTENCY: Idempotency = Idempotency::None;

    fn sample() -> BatchOutput {
        let mut out = sample_batch(None);
        out.failed[0] = Failed {
            index: Some(1),
            email: Some("ben@example.com".into()),
            id: None,
            category: "CONFLICT".into(),
            message: "Contact already exists. Existing ID: 67890".into(),
            property: None,
            existing_id: Some("67890".into()),
        };
        out
    }

    async fn call(&self, ctx: &ActionContext, input: CreateContactsInput) -> Result<BatchOutput, ConnectorError> {
        check_count(input.contacts.len())?;
        let mut inputs = Vec::new();
        let mut sent = Vec::new();
        for (i, c) in input.contacts.iter().enumerate() {
            let mut properties = check_properties(&c.properties, &format!("contacts[{i}].properties"))?;
            if !["email", "firstname", "lastname"]
                .iter()
                .any(|k| properties.get(*k).and_then(Value::as_str).is_some_and(|v| !v.trim().is_empty()))
            {
                return Err(ConnectorError::bad_input(
                    format!("contacts[{i}].properties"),
                    "give at least `email`, `firstname` or `lastname` (HubSpot's rule); `email` also keeps HubSpot from creating duplicates",
                ));
            }
            let email = match properties.get("email").and_then(Value::as_str).map(|e| e.trim().to_lowercase()) {
                Some(e) if !e.is_empty() => {
                    if !is_email(&e) {
                        return Err(ConnectorError::bad_input(
                            format!("contacts[{i}].properties.email"),
                            format!("`{e}` is not an email address"),
                        ));
                    }
                    properties.insert("email".into(), Value::String(e.clone()));
                    Some(e)
                }
                _ => None,
            };
            inputs.push(json!({"properties": properties, "objectWriteTraceId": i.to_string()}));
            sent.push(Sent { email, id: None, properties: c.properties.keys().cloned().collect() });
        }
        run_batch(&self.api_base, ctx, Kind::Create, inputs, &sent).await
    }
}

/// `hubspot.update_contacts`.
#[derive(Debug, Clone)]
pub struct UpdateContacts {
    api_base: Arc<str>,
}
with_base!(UpdateContacts);

impl Action for UpdateContacts {
    type Input = UpdateContactsInput;
    type Output = BatchOutput;

    const ID: &'static str = "update_contacts";
    const NAME: &'static str = "Update contacts (batch)";
    const DESCRIPTION: &'static str = "Sets properties on up to 100 HubSpot contacts, found by their ids, in one call.";
    // Setting values again leaves them as they are.
    const IDEMPOTENCY: Idempotency = Idempotency::Natural;

    fn sample() -> BatchOutput {
        let mut out = sample_batch(None);
        out.contacts[0].properties.insert("lifecyclestage".into(), json!("customer"));
        out.failed[0].id = Some("67890".into());
        out.failed[0].email = None;
        out.created = 0;
        out.updated = 1;
        out
    }

    async fn call(&self, ctx: &ActionContext, input: UpdateContactsInput) -> Result<BatchOutput, ConnectorError> {
        check_count(input.contacts.len())?;
        let mut inputs = Vec::new();
        let mut sent: Vec<Sent> = Vec::new();
        for (i, c) in input.contacts.iter().enumerate() {
            let id = c.id.trim();
            if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ConnectorError::bad_input(
                    format!("contacts[{i}].id"),
                    format!("`{}` is not a HubSpot contact id: digits, like 12345 (the record ID in the contact's URL)", c.id),
                ));
            }
            if let Some(j) = sent.iter().position(|s| s.id.as_deref() == Some(id)) {
                return Err(ConnectorError::bad_input(format!("contacts[{i}].id"), format!("`{id}` is also contacts[{j}]: merge the two")));
            }
            if c.properties.is_empty() {
                return Err(ConnectorError::bad_input(format!("contacts[{i}].properties"), "is empty: give the properties to set"));
            }
            let properties = check_properties(&c.properties, &format!("contacts[{i}].properties"))?;
            let email = properties.get("email").and_then(Value::as_str).map(|e| e.trim().to_lowercase());
            inputs.push(json!({"id": id, "properties": properties, "objectWriteTraceId": i.to_string()}));
            sent.push(Sent { email, id: Some(id.to_string()), properties: c.properties.keys().cloned().collect() });
        }
        run_batch(&self.api_base, ctx, Kind::Update, inputs, &sent).await
    }
}
