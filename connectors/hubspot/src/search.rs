//! `hubspot.search_contacts`: `POST /crm/v3/objects/contacts/search`, page after page.
//!
//! HubSpot's search takes its page cursor in the JSON body (`"after": "200"`) and gives the
//! next one at `paging.next.after`. `enlace_kit::Pager` sends a cursor back as a query
//! parameter only, so the loop is written here: the same request body each time with `after`
//! set, every page classified, an error naming its page.
//!
//! Limits HubSpot documents and this action keeps: at most 200 results per page, 6 filters in
//! a group, 10,000 results per search in all (`after` cannot go past it), and 5 search
//! requests per second per account. A step reads at most 1,000 contacts (5 pages): more would
//! hit the per-second limit inside one step, and a retried step starts over. Longer lists are
//! read over several steps, each giving the next one `after` (its `next_after`).

use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use enlace_core::http::Method;
use enlace_core::{Action, ActionContext, ConnectorError, Idempotency};

use crate::api;

/// HubSpot's largest search page.
pub const MAX_PAGE: usize = 200;
/// The most contacts one step reads (five pages of 200: HubSpot's search allows 5 requests
/// per second per account).
pub const MAX_LIMIT: usize = 1_000;
/// HubSpot's search returns at most this many results in all, whatever the paging.
pub const SEARCH_WINDOW: u64 = 10_000;
/// The most filters in one filter group.
pub const MAX_FILTERS: usize = 6;

/// HubSpot's filter operators.
pub const OPERATORS: [&str; 13] = [
    "EQ",
    "NEQ",
    "LT",
    "LTE",
    "GT",
    "GTE",
    "BETWEEN",
    "IN",
    "NOT_IN",
    "HAS_PROPERTY",
    "NOT_HAS_PROPERTY",
    "CONTAINS_TOKEN",
    "NOT_CONTAINS_TOKEN",
];

/// One condition on a property.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    /// The property's internal name, like `email`, `lifecyclestage` or `createdate`.
    pub property: String,
    /// How to compare: `EQ`, `NEQ`, `LT`, `LTE`, `GT`, `GTE`, `BETWEEN` (with `value` and
    /// `high_value`), `IN` / `NOT_IN` (with `values`), `HAS_PROPERTY` / `NOT_HAS_PROPERTY` (no
    /// value: the property is set or not), `CONTAINS_TOKEN` / `NOT_CONTAINS_TOKEN` (a word of a
    /// text, `*` as a wildcard: `*@example.com`).
    pub operator: String,
    /// The value to compare with. Dates as milliseconds since 1970 (`1767225600000`) or as
    /// `2026-01-01`; enumerations by their internal value (`lead`, `customer`).
    #[serde(default)]
    pub value: Option<Value>,
    /// For `IN` and `NOT_IN`: the values, like `["lead", "subscriber"]`.
    #[serde(default)]
    pub values: Option<Vec<Value>>,
    /// For `BETWEEN`: the upper end (`value` is the lower one).
    #[serde(default)]
    pub high_value: Option<Value>,
}

/// Ascending or descending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Smallest, oldest or A first.
    Ascending,
    /// Largest, newest or Z first.
    Descending,
}

/// The order of the results.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Sort {
    /// The property to sort by, like `lastmodifieddate`.
    pub property: String,
    /// `ascending` (the default) or `descending`.
    #[serde(default)]
    pub direction: Option<Direction>,
}

/// The `with` map of `hubspot.search_contacts`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchInput {
    /// Conditions a contact must all meet (up to 6), like `[{"property": "lifecyclestage",
    /// "operator": "EQ", "value": "lead"}]`. None: every contact.
    #[serde(default)]
    pub filters: Vec<Filter>,
    /// Words to look for in the contacts' default text properties (name, email, phone, company),
    /// like `ana@example.com` or `García`.
    #[serde(default)]
    pub query: Option<String>,
    /// The properties to return, by internal name, like `["email", "firstname",
    /// "lifecyclestage"]`. Left out: HubSpot's default set (`email`, `firstname`, `lastname`,
    /// `createdate`, `lastmodifieddate`, `hs_object_id`).
    #[serde(default)]
    pub properties: Option<Vec<String>>,
    /// The order of the results, like `{"property": "createdate", "direction": "descending"}`.
    /// Left out: HubSpot's order.
    #[serde(default)]
    pub sort: Option<Sort>,
    /// How many contacts to return at most: 1 to 1000, 100 by default. HubSpot serves 200 per
    /// page; this step reads the pages up to the limit.
    #[serde(default)]
    pub limit: Option<usize>,
    /// Continue an earlier search: the `next_after` of a previous step with the same filters.
    /// A search cannot reach past its first 10,000 results: narrow the filters (a date range)
    /// instead.
    #[serde(default)]
    pub after: Option<String>,
}

/// A contact found.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Found {
    /// The contact's HubSpot id, like `12345`.
    pub id: String,
    /// The property values asked for, by internal name (all as text; dates as ISO 8601).
    pub properties: Map<String, Value>,
    /// When the contact was created (ISO 8601).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// When the contact was last changed (ISO 8601).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
}

/// What `search_contacts` gives later steps.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct SearchOutput {
    /// The contacts found, in HubSpot's order (or `sort`'s), at most `limit`.
    pub contacts: Vec<Found>,
    /// How many contacts match in all, as HubSpot counts them (may exceed what was returned).
    pub total: u64,
    /// When more contacts match: give this as `after` to a later step to read on. Absent at
    /// the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_after: Option<String>,
}

/// One page of a search.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub results: Vec<Value>,
    pub total: u64,
    pub next: Option<String>,
}

/// Sends one search request (`body` already holds `after` when it is not the first page) and
/// reads the page. `field_of` maps a property HubSpot refuses to the step's field.
pub async fn search_page(api_base: &str, ctx: &ActionContext, body: &Value, field_of: api::FieldOf<'_>) -> Result<Page, ConnectorError> {
    let url = format!("{api_base}/crm/v3/objects/contacts/search");
    let request = api::request(Method::POST, url, Some(body), &ctx.credentials, ctx.timeout)?;
    let resp = api::send(&ctx.http, request, true).await?;
    if resp.status.as_u16() >= 400 {
        return Err(api::error_of(resp, field_of));
    }
    let Some(page) = api::json_object(&resp) else {
        return Err(ConnectorError::permanent(format!(
            "HubSpot answered the search with HTTP {} and a body that is not a JSON object ({})",
            resp.status.as_u16(),
            api::describe_body(&resp)
        )));
    };
    let Some(results) = page.get("results").and_then(Value::as_array) else {
        return Err(ConnectorError::permanent(format!(
            "HubSpot's search answer has no `results` list (HTTP {}): {}",
            resp.status.as_u16(),
            api::describe_body(&resp)
        )));
    };
    let next = match page.get("paging").and_then(|p| p.pointer("/next/after")) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let total = page.get("total").and_then(Value::as_u64).unwrap_or(results.len() as u64);
    Ok(Page { results: results.clone(), total, next })
}

/// A search result as the step's output: id, properties, timestamps.
pub fn found(r: &Value) -> Result<Found, ConnectorError> {
    let id = r.get("id").and_then(|v| v.as_str().map(str::to_string).or_else(|| v.as_u64().map(|n| n.to_string())));
    let Some(id) = id else {
        return Err(ConnectorError::permanent(format!("HubSpot's search answer has a result without an `id`: {r}")));
    };
    let text = |k: &str| r.get(k).and_then(Value::as_str).map(str::to_string);
    Ok(Found {
        id,
        properties: r.get("properties").and_then(Value::as_object).cloned().unwrap_or_default(),
        created_at: text("createdAt"),
        updated_at: text("updatedAt"),
    })
}

fn scalar(v: &Value, at: String) -> Result<String, ConnectorError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        _ => Err(ConnectorError::bad_input(at, "must be a text, a number or true/false")),
    }
}

fn check_name(name: &str, at: String) -> Result<String, ConnectorError> {
    let name = name.trim();
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.') {
        return Err(ConnectorError::bad_input(
            at,
            format!(
                "`{name}` is not a HubSpot internal property name: use the internal name (Settings > Properties), like `lifecyclestage`"
            ),
        ));
    }
    Ok(name.to_string())
}

/// A filter in HubSpot's form, after checking the operator and the values it needs.
pub fn filter_json(f: &Filter, i: usize) -> Result<Value, ConnectorError> {
    let at = |field: &str| format!("filters[{i}].{field}");
    let property = check_name(&f.property, at("property"))?;
    let operator = f.operator.trim().to_ascii_uppercase();
    if !OPERATORS.contains(&operator.as_str()) {
        return Err(ConnectorError::bad_input(
            at("operator"),
            format!("`{}` is not one of HubSpot's operators: {}", f.operator, OPERATORS.join(", ")),
        ));
    }
    let mut out = json!({"propertyName": property, "operator": operator});
    let needs = match operator.as_str() {
        "HAS_PROPERTY" | "NOT_HAS_PROPERTY" => "nothing",
        "IN" | "NOT_IN" => "values",
        "BETWEEN" => "value and high_value",
        _ => "value",
    };
    let given = (f.value.is_some(), f.values.is_some(), f.high_value.is_some());
    let ok = match needs {
        "nothing" => given == (false, false, false),
        "values" => given == (false, true, false) && f.values.as_ref().is_some_and(|v| !v.is_empty()),
        "value and high_value" => given == (true, false, true),
        _ => given == (true, false, false),
    };
    if !ok {
        let field = match needs {
            "values" => "values",
            "value and high_value" if f.value.is_some() => "high_value",
            "nothing" if f.values.is_some() => "values",
            "nothing" if f.high_value.is_some() => "high_value",
            _ if f.values.is_some() && needs != "values" => "values",
            _ if f.high_value.is_some() && needs != "value and high_value" => "high_value",
            _ => "value",
        };
        let what = match needs {
            "nothing" => format!("`{operator}` takes no value: it only asks whether the property is set"),
            "values" => format!("`{operator}` takes a non-empty list in `values`, like [\"lead\", \"customer\"], and no `value`"),
            "value and high_value" => "`BETWEEN` takes `value` (the lower end) and `high_value` (the upper end)".to_string(),
            _ => format!("`{operator}` takes one `value` (`values` is for IN and NOT_IN, `high_value` for BETWEEN)"),
        };
        return Err(ConnectorError::bad_input(at(field), what));
    }
    if let Some(v) = &f.value {
        out["value"] = json!(scalar(v, at("value"))?);
    }
    if let Some(v) = &f.high_value {
        out["highValue"] = json!(scalar(v, at("high_value"))?);
    }
    if let Some(vs) = &f.values {
        let mut list = Vec::new();
        for (j, v) in vs.iter().enumerate() {
            list.push(json!(scalar(v, format!("filters[{i}].values[{j}]"))?));
        }
        out["values"] = Value::Array(list);
    }
    Ok(out)
}

/// Checks the input and builds the search body without `after` and `limit`.
pub fn search_body(input: &SearchInput) -> Result<Value, ConnectorError> {
    if input.filters.len() > MAX_FILTERS {
        return Err(ConnectorError::bad_input(
            "filters",
            format!("has {} filters; HubSpot takes at most {MAX_FILTERS} in a search", input.filters.len()),
        ));
    }
    let mut body = Map::new();
    if !input.filters.is_empty() {
        let filters = input.filters.iter().enumerate().map(|(i, f)| filter_json(f, i)).collect::<Result<Vec<_>, _>>()?;
        body.insert("filterGroups".into(), json!([{ "filters": filters }]));
    }
    if let Some(q) = input.query.as_deref().map(str::trim).filter(|q| !q.is_empty()) {
        body.insert("query".into(), json!(q));
    }
    if let Some(props) = &input.properties {
        let props = props.iter().enumerate().map(|(i, p)| check_name(p, format!("properties[{i}]"))).collect::<Result<Vec<_>, _>>()?;
        body.insert("properties".into(), json!(props));
    }
    if let Some(sort) = &input.sort {
        let property = check_name(&sort.property, "sort.property".into())?;
        let direction = match sort.direction.unwrap_or(Direction::Ascending) {
            Direction::Ascending => "ASCENDING",
            Direction::Descending => "DESCENDING",
        };
        body.insert("sorts".into(), json!([{ "propertyName": property, "direction": direction }]));
    }
    Ok(Value::Object(body))
}

/// The step's field that holds a property HubSpot refused.
fn search_field(input: &SearchInput, name: &str) -> String {
    if let Some(i) = input.filters.iter().position(|f| f.property.trim() == name) {
        return format!("filters[{i}].property");
    }
    if let Some(i) = input.properties.iter().flatten().position(|p| p.trim() == name) {
        return format!("properties[{i}]");
    }
    if input.sort.as_ref().is_some_and(|s| s.property.trim() == name) {
        return "sort.property".into();
    }
    "filters".into()
}

/// Prefixes an error's message with the page it happened on (pages after the first).
pub fn on_page(err: ConnectorError, page: u32) -> ConnectorError {
    if page <= 1 {
        return err;
    }
    let p = |m: String| format!("page {page} of the search: {m}");
    match err {
        ConnectorError::BadInput { path, message } => ConnectorError::BadInput { path, message: p(message) },
        ConnectorError::Auth { message } => ConnectorError::Auth { message: p(message) },
        ConnectorError::Permanent { message, status } => ConnectorError::Permanent { message: p(message), status },
        ConnectorError::RateLimited { retry_after, message } => ConnectorError::RateLimited { retry_after, message: p(message) },
        ConnectorError::Transient { message, retry_after } => ConnectorError::Transient { message: p(message), retry_after },
        ConnectorError::MaybeDelivered { message } => ConnectorError::MaybeDelivered { message: p(message) },
    }
}

/// `hubspot.search_contacts`.
#[derive(Debug, Clone)]
pub struct SearchContacts {
    api_base: Arc<str>,
}

impl SearchContacts {
    /// The action against the API at `api_base` (`https://api.hubapi.com`).
    pub fn new(api_base: &str) -> Self {
        SearchContacts { api_base: Arc::from(api_base.trim_end_matches('/')) }
    }
}

impl Action for SearchContacts {
    type Input = SearchInput;
    type Output = SearchOutput;

    const ID: &'static str = "search_contacts";
    const NAME: &'static str = "Search contacts";
    const DESCRIPTION: &'static str = "Finds HubSpot contacts by their properties (filters like lifecyclestage EQ lead), with the properties you choose, up to 1000 per step.";
    const IDEMPOTENCY: Idempotency = Idempotency::Natural;

    fn sample() -> SearchOutput {
        let mut properties = Map::new();
        properties.insert("email".into(), json!("ana@example.com"));
        properties.insert("firstname".into(), json!("Ana"));
        properties.insert("lifecyclestage".into(), json!("lead"));
        properties.insert("hs_object_id".into(), json!("12345"));
        SearchOutput {
            contacts: vec![Found {
                id: "12345".into(),
                properties,
                created_at: Some("2026-03-02T09:15:22.481Z".into()),
                updated_at: Some("2026-03-04T16:40:03.120Z".into()),
            }],
            total: 1,
            next_after: None,
        }
    }

    async fn call(&self, ctx: &ActionContext, input: SearchInput) -> Result<SearchOutput, ConnectorError> {
        let limit = input.limit.unwrap_or(100);
        if limit == 0 || limit > MAX_LIMIT {
            return Err(ConnectorError::bad_input(
                "limit",
                format!(
                    "must be from 1 to {MAX_LIMIT} (HubSpot's search allows 5 requests per second: read more over several steps with `after`)"
                ),
            ));
        }
        let mut after = input.after.as_deref().map(str::trim).filter(|a| !a.is_empty()).map(str::to_string);
        if let Some(offset) = after.as_deref().and_then(|a| a.parse::<u64>().ok())
            && offset >= SEARCH_WINDOW
        {
            return Err(ConnectorError::bad_input(
                "after",
                format!(
                    "`{offset}` is past HubSpot's {SEARCH_WINDOW} results per search: narrow the filters instead (for example a `createdate` range)"
                ),
            ));
        }
        let base = search_body(&input)?;
        let field_of = |name: &str| search_field(&input, name);
        let mut contacts = Vec::new();
        let mut total;
        let mut page = 0u32;
        let next_after = loop {
            page += 1;
            let mut body = base.clone();
            body["limit"] = json!((limit - contacts.len()).min(MAX_PAGE));
            if let Some(a) = &after {
                body["after"] = json!(a);
            }
            let got = search_page(&self.api_base, ctx, &body, &field_of).await.map_err(|e| on_page(e, page))?;
            total = got.total;
            for r in got.results.iter().take(limit - contacts.len()) {
                contacts.push(found(r).map_err(|e| on_page(e, page))?);
            }
            match got.next {
                None => break None,
                Some(n) if after.as_deref() == Some(n.as_str()) => {
                    return Err(on_page(
                        ConnectorError::permanent(format!(
                            "HubSpot gave the same next-page cursor twice (`{n}`); stopping instead of looping"
                        )),
                        page,
                    ));
                }
                Some(n) if contacts.len() >= limit => break Some(n),
                Some(n) if n.parse::<u64>().is_ok_and(|o| o >= SEARCH_WINDOW) => break None,
                Some(n) => after = Some(n),
            }
        };
        Ok(SearchOutput { contacts, total, next_after })
    }
}
