//! `http.poll_json`: a polling trigger over any JSON feed (a list of items behind a GET).
//!
//! Each poll GETs the feed, takes the list of items (`items`, a JSONPath), reads each
//! item's id (`id`) as its dedupe key, and hands the items to the runner newest first:
//! in the feed's order, or sorted by `sort_by` (largest first). With `cursor_param`, the
//! newest item's id (or `sort_by` value) becomes the cursor and is sent back as that query
//! parameter, so a feed that supports it answers only what is newer.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use enlace_core::http::HttpRequest;
use enlace_core::trigger::{PollPage, PollingTrigger};
use enlace_core::{ActionContext, ConnectorError};
use enlace_kit::Url;

/// The most items one poll takes from the feed (the newest ones).
pub const MAX_ITEMS: usize = 1_000;
/// How long one poll may take.
pub const POLL_TIMEOUT: Duration = Duration::from_secs(30);

/// The trigger's `with`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The address of the feed, in full: `https://shop.example.com/api/orders.json`. Fetched
    /// with GET, with the connection's credentials when the trigger names one. Loopback,
    /// private-network and link-local addresses are refused unless the installation sets
    /// ENLACE_ALLOW_PRIVATE_NETWORKS=true.
    pub url: String,
    /// Where the list of items is in the answer, as a JSONPath: `$.data.orders[*]`, or `$`
    /// when the answer is the list itself (the default).
    #[serde(default)]
    pub items: Option<String>,
    /// The unique id of an item, which decides whether it is new: a field name (`id`) or a
    /// JSONPath into the item (`$.meta.uuid`). Numbers are taken as text.
    pub id: String,
    /// A field (or JSONPath) to order the items by, largest first (a creation date in
    /// RFC 3339, or a growing number). When left out, the feed must list the newest first.
    #[serde(default)]
    pub sort_by: Option<String>,
    /// A query parameter to send the cursor in (`since`): the newest item's id, or its
    /// `sort_by` value, from the previous poll. For feeds that can answer "only newer
    /// than"; leave out otherwise (items already seen are skipped either way).
    #[serde(default)]
    pub cursor_param: Option<String>,
    /// Headers to send with the request (`Accept: application/json` is sent by default).
    /// Put credentials in a connection, not here.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// One item of the feed, as the feed has it; the run's `trigger` is this value.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(transparent)]
pub struct Item {
    pub value: Value,
    #[serde(skip)]
    #[schemars(skip)]
    key: String,
}

pub struct PollJson;

impl PollingTrigger for PollJson {
    type Config = Config;
    type Item = Item;

    const ID: &'static str = "poll_json";
    const NAME: &'static str = "New items in a JSON feed";
    const DESCRIPTION: &'static str = "Checks a JSON feed (any address answering a list of items) every few minutes and starts the recipe once for each new item, oldest first. Items already in the feed when the recipe is switched on do not start it.";

    fn sample() -> Item {
        Item {
            value: json!({"id": "ord_1042", "email": "ada@example.com", "total": 42.5, "created_at": "2026-11-25T09:30:00Z"}),
            key: "ord_1042".into(),
        }
    }

    fn dedupe_key(item: &Item) -> String {
        item.key.clone()
    }

    async fn poll(&self, ctx: &ActionContext, config: Config, cursor: Option<String>) -> Result<PollPage<Item>, ConnectorError> {
        let items_path = config.items.clone().unwrap_or_else(|| "$".into());
        check_path(&items_path, "items")?;
        let id_path = field_path(&config.id);
        check_path(&id_path, "id")?;
        let sort_path = config.sort_by.as_deref().map(field_path);
        if let Some(p) = &sort_path {
            check_path(p, "sort_by")?;
        }

        let mut url = Url::parse(config.url.trim()).map_err(|e| {
            ConnectorError::bad_input(
                "url",
                format!("is not a valid address ({e}); write a full address like https://api.example.com/items"),
            )
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ConnectorError::bad_input("url", format!("the scheme `{}` is not allowed; use http or https", url.scheme())));
        }
        if let (Some(param), Some(c)) = (&config.cursor_param, &cursor) {
            url.query_pairs_mut().append_pair(param, c);
        }
        let mut request = HttpRequest::new(Method::GET, url.to_string());
        request.timeout = Some(if ctx.timeout.is_zero() { POLL_TIMEOUT } else { POLL_TIMEOUT.min(ctx.timeout) });
        enlace_kit::apply_credentials(&mut request, &ctx.credentials)?;
        request.headers.insert(http::header::ACCEPT, HeaderValue::from_static("application/json"));
        for (name, value) in &config.headers {
            let path = format!("headers.{name}");
            let n = HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|_| ConnectorError::bad_input(&path, format!("`{name}` is not a valid header name")))?;
            let mut v = HeaderValue::from_str(value.trim())
                .map_err(|_| ConnectorError::bad_input(&path, "the value contains a character not allowed in a header"))?;
            v.set_sensitive(true);
            request.headers.insert(n, v);
        }

        let response = ctx.http.send(request).await.map_err(|e| enlace_kit::transport_error(e, true))?;
        let response = enlace_kit::classify(response)?;
        let body: Value = serde_json::from_slice(&response.body).map_err(|e| {
            ConnectorError::permanent(format!("the feed did not answer JSON ({e}); check the address, or that it answers a JSON list"))
        })?;
        let found = query(&body, &items_path)?;
        // `$` names the list itself; `$.data[*]` its items.
        let list: Vec<Value> = match found.as_slice() {
            [Value::Array(items)] if !items_path.trim_end().ends_with("[*]") => items.clone(),
            _ => found,
        };
        let mut items = Vec::with_capacity(list.len().min(MAX_ITEMS));
        for (i, value) in list.into_iter().enumerate() {
            let key = match query(&value, &id_path)?.first() {
                Some(Value::String(s)) if !s.is_empty() => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                Some(other) if !other.is_null() && !other.is_array() && !other.is_object() => other.to_string(),
                _ => {
                    return Err(ConnectorError::permanent(format!(
                        "item {i} of the feed has no usable id at `{}`: every item needs a text or number id to tell new items from old ones",
                        config.id
                    )));
                }
            };
            let sort = match &sort_path {
                Some(p) => query(&value, p)?.into_iter().next(),
                None => None,
            };
            items.push((Item { value, key }, sort));
        }
        if sort_path.is_some() {
            // Largest first; a stable sort keeps the feed's order among equals.
            items.sort_by(|a, b| compare(b.1.as_ref(), a.1.as_ref()));
        }
        items.truncate(MAX_ITEMS);
        let next_cursor = config.cursor_param.as_ref().and_then(|_| {
            items.first().map(|(item, sort)| match sort {
                Some(Value::String(s)) => s.clone(),
                Some(v) if !v.is_null() => v.to_string(),
                _ => item.key.clone(),
            })
        });
        Ok(PollPage { items: items.into_iter().map(|(i, _)| i).collect(), cursor: next_cursor })
    }
}

/// `id` → `$.id`; a JSONPath stays as written.
fn field_path(field: &str) -> String {
    let f = field.trim();
    if f.starts_with('$') { f.to_string() } else { format!("$['{}']", f.replace('\'', "\\'")) }
}

fn check_path(path: &str, field: &str) -> Result<(), ConnectorError> {
    jsonpath_rust::parser::parse_json_path(path).map(|_| ()).map_err(|e| {
        ConnectorError::bad_input(field, format!("`{path}` is not a valid JSONPath: {}", e.to_string().lines().next().unwrap_or("")))
    })
}

fn query(value: &Value, path: &str) -> Result<Vec<Value>, ConnectorError> {
    use jsonpath_rust::JsonPath;
    value
        .query(path)
        .map(|found| found.into_iter().cloned().collect())
        .map_err(|e| ConnectorError::bad_input("items", format!("`{path}` could not be applied to the feed: {e}")))
}

/// Numbers by value, text by text (RFC 3339 times sort as text), missing values last.
fn compare(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    match (a, b) {
        (Some(Value::Number(x)), Some(Value::Number(y))) => x.as_f64().partial_cmp(&y.as_f64()).unwrap_or(Ordering::Equal),
        (Some(Value::String(x)), Some(Value::String(y))) => x.cmp(y),
        (Some(Value::Null) | None, Some(Value::Null) | None) => Ordering::Equal,
        (Some(Value::Null) | None, _) => Ordering::Less,
        (_, Some(Value::Null) | None) => Ordering::Greater,
        (Some(x), Some(y)) => x.to_string().cmp(&y.to_string()),
    }
}
