//! `hubspot.contact_updated` ("New or updated contact"): a polling trigger over the contacts
//! search endpoint.
//!
//! The cursor is a time in milliseconds since the epoch: every change before it has been
//! delivered. A poll asks HubSpot for the contacts whose `lastmodifieddate` (`createdate` with
//! `only_new`) lies in the window `[cursor, now - 30 s)`, oldest first, and hands them to the
//! runner newest first, each with the dedupe key `<id>:<that timestamp in ms>`: a contact
//! changed twice fires twice, the same change never twice.
//!
//! Why the window ends 30 seconds ago: HubSpot's search index lags the writes by a few
//! seconds. A change too recent to be searchable yet would otherwise be passed by a cursor
//! that moved beyond it; 30 seconds later it is indexed, and still inside the next window.
//!
//! Why oldest first in the request, although items are handed over newest first: a poll
//! returns at most [`MAX_ITEMS_PER_POLL`] items. Reading the window oldest first and moving the
//! cursor just past the last item taken means a backlog of any size drains in order, poll
//! after poll, and nothing is skipped. (Reading newest first would deliver the newest 100 and
//! leave the older ones behind a cursor that cannot move back over them, or, with the cursor
//! held at the oldest item returned, fetch the same newest 100 forever.) For the same reason
//! HubSpot's 10,000-result ceiling on a search never matters here: a poll reads one page of
//! 101 results (the one past the cap tells whether the cap cut through a millisecond), whatever
//! the size of the backlog; only a single millisecond holding more than 100 changes is read
//! with further pages.
//!
//! Enabling a recipe (no cursor yet) returns no items and seeds the cursor with the current
//! time, or just after the newest contact's timestamp when HubSpot's clock is ahead of ours,
//! so that old contacts do not fire.

use std::sync::Arc;

use chrono::DateTime;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use enlace_core::trigger::{PollPage, PollingTrigger};
use enlace_core::{ActionContext, ConnectorError};

use crate::search::{self, SEARCH_WINDOW};

/// The current time in milliseconds since the epoch.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The system clock, in milliseconds since the epoch.
pub fn system_clock() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// How far behind now a poll's window ends, in milliseconds (HubSpot's search index lag).
pub const SETTLE_MS: i64 = 30_000;

/// The most items one poll returns.
pub const MAX_ITEMS_PER_POLL: usize = 100;

/// The properties returned when the config names none.
pub const DEFAULT_PROPERTIES: [&str; 3] = ["email", "firstname", "lastname"];

/// The `with` map of a `hubspot.contact_updated` trigger.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The properties each event carries, by internal name, like `["email", "firstname",
    /// "lifecyclestage"]`. Left out: `email`, `firstname`, `lastname`. `createdate` and
    /// `lastmodifieddate` are always included.
    #[serde(default)]
    pub properties: Option<Vec<String>>,
    /// Only newly created contacts (`createdate`), not changes to existing ones. Defaults to
    /// false: new and updated contacts both fire.
    #[serde(default)]
    pub only_new: bool,
}

/// A contact that was created or changed.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Item {
    /// The contact's HubSpot id, like `12345`.
    pub id: String,
    /// Whether the contact was created since the previous poll (false: an existing contact
    /// changed).
    pub new: bool,
    /// The property values asked for, by internal name (all as text; dates as ISO 8601).
    pub properties: Map<String, Value>,
    /// When the contact was created (ISO 8601).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// When the contact was last changed (ISO 8601).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    /// `<id>:<timestamp in ms>`: one key per change.
    #[serde(skip)]
    #[schemars(skip)]
    key: String,
}

/// A timestamp HubSpot gives (`2026-03-02T09:15:22.481Z`, or milliseconds as text) in
/// milliseconds since the epoch.
pub fn millis(v: &Value) -> Option<i64> {
    let s = match v {
        Value::String(s) => s.trim(),
        Value::Number(n) => return n.as_i64(),
        _ => return None,
    };
    if let Ok(n) = s.parse::<i64>() {
        return Some(n);
    }
    DateTime::parse_from_rfc3339(s).ok().map(|d| d.timestamp_millis())
}

/// The contact's timestamp in `prop`, from its properties or the matching top-level field.
fn stamp(r: &Value, prop: &str) -> Option<i64> {
    let top = if prop == "createdate" { "createdAt" } else { "updatedAt" };
    r.pointer(&format!("/properties/{prop}")).and_then(millis).or_else(|| r.get(top).and_then(millis))
}

/// `hubspot.contact_updated`.
#[derive(Clone)]
pub struct ContactUpdated {
    api_base: Arc<str>,
    clock: Clock,
}

impl std::fmt::Debug for ContactUpdated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContactUpdated").field("api_base", &self.api_base).finish_non_exhaustive()
    }
}

impl ContactUpdated {
    /// The trigger against the API at `api_base`, reading the time from `clock`.
    pub fn new(api_base: &str, clock: Clock) -> Self {
        ContactUpdated { api_base: Arc::from(api_base.trim_end_matches('/')), clock }
    }

    fn item(r: &Value, prop: &str, from: i64) -> Result<(i64, Item), ConnectorError> {
        let found = search::found(r)?;
        let Some(ts) = stamp(r, prop) else {
            return Err(ConnectorError::permanent(format!("HubSpot's search answer gives contact {} no readable `{prop}`", found.id)));
        };
        let new = prop == "createdate" || stamp(r, "createdate").is_some_and(|c| c >= from);
        let key = format!("{}:{ts}", found.id);
        Ok((ts, Item { id: found.id, new, properties: found.properties, created_at: found.created_at, updated_at: found.updated_at, key }))
    }
}

impl PollingTrigger for ContactUpdated {
    type Config = Config;
    type Item = Item;

    const ID: &'static str = "contact_updated";
    const NAME: &'static str = "New or updated contact";
    const DESCRIPTION: &'static str =
        "Starts the recipe when a HubSpot contact is created or changed (or, with only_new, only when one is created).";

    fn sample() -> Item {
        let mut properties = Map::new();
        properties.insert("email".into(), json!("ana@example.com"));
        properties.insert("firstname".into(), json!("Ana"));
        properties.insert("lastname".into(), json!("García"));
        properties.insert("createdate".into(), json!("2026-03-02T09:15:22.481Z"));
        properties.insert("lastmodifieddate".into(), json!("2026-03-04T16:40:03.120Z"));
        properties.insert("hs_object_id".into(), json!("12345"));
        Item {
            id: "12345".into(),
            new: false,
            properties,
            created_at: Some("2026-03-02T09:15:22.481Z".into()),
            updated_at: Some("2026-03-04T16:40:03.120Z".into()),
            key: "12345:1772642403120".into(),
        }
    }

    fn dedupe_key(item: &Item) -> String {
        item.key.clone()
    }

    async fn poll(&self, ctx: &ActionContext, config: Config, cursor: Option<String>) -> Result<PollPage<Item>, ConnectorError> {
        let prop = if config.only_new { "createdate" } else { "lastmodifieddate" };
        let mut properties: Vec<String> = Vec::new();
        match &config.properties {
            Some(list) => {
                for (i, p) in list.iter().enumerate() {
                    let p = p.trim();
                    if p.is_empty() || !p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.') {
                        return Err(ConnectorError::bad_input(
                            format!("properties[{i}]"),
                            format!(
                                "`{p}` is not a HubSpot internal property name: use the internal name (Settings > Properties), like `lifecyclestage`"
                            ),
                        ));
                    }
                    properties.push(p.to_string());
                }
            }
            None => properties.extend(DEFAULT_PROPERTIES.iter().map(|p| p.to_string())),
        }
        for p in ["createdate", "lastmodifieddate"] {
            if !properties.iter().any(|q| q == p) {
                properties.push(p.to_string());
            }
        }
        let named = config.properties.clone().unwrap_or_default();
        let field_of = move |name: &str| match named.iter().position(|p| p.trim() == name) {
            Some(i) => format!("properties[{i}]"),
            None => "properties".to_string(),
        };
        let now = (self.clock)();

        let Some(cursor) = cursor else {
            // Seeding: the newest contact's timestamp, so that nothing older fires.
            let body = json!({"sorts": [{"propertyName": prop, "direction": "DESCENDING"}], "properties": [prop], "limit": 1});
            let page = search::search_page(&self.api_base, ctx, &body, &field_of).await?;
            let newest = page.results.first().and_then(|r| stamp(r, prop));
            let seed = newest.map_or(now, |n| now.max(n + 1));
            return Ok(PollPage { items: Vec::new(), cursor: Some(seed.to_string()) });
        };
        let from: i64 = cursor.trim().parse().map_err(|_| {
            ConnectorError::permanent(format!(
                "the trigger's cursor `{cursor}` is not a time in milliseconds; rewind the trigger to a date to start again"
            ))
        })?;
        let until = now - SETTLE_MS;
        if until <= from {
            return Ok(PollPage { items: Vec::new(), cursor: None });
        }
        let window = |lo: i64, hi: i64| {
            json!({
                "filterGroups": [{"filters": [
                    {"propertyName": prop, "operator": "GTE", "value": lo.to_string()},
                    {"propertyName": prop, "operator": "LT", "value": hi.to_string()},
                ]}],
                "sorts": [{"propertyName": prop, "direction": "ASCENDING"}],
                "properties": properties,
            })
        };
        let mut body = window(from, until);
        body["limit"] = json!(MAX_ITEMS_PER_POLL + 1);
        let page = search::search_page(&self.api_base, ctx, &body, &field_of).await?;
        let mut rows = Vec::with_capacity(page.results.len());
        for r in &page.results {
            rows.push(Self::item(r, prop, from)?);
        }

        let (mut taken, next_cursor) = if rows.len() <= MAX_ITEMS_PER_POLL {
            match (page.next, rows.last()) {
                // The whole window was read: the next poll starts where it ended.
                (None, _) | (_, None) => (rows, until),
                // HubSpot paged below our limit (it should not): resume at the last item's
                // time; the items of that millisecond come again, deduplicated by their keys.
                (Some(_), Some((last, _))) => {
                    let last = *last;
                    (rows, last)
                }
            }
        } else {
            let boundary = rows[MAX_ITEMS_PER_POLL - 1].0;
            if rows[MAX_ITEMS_PER_POLL].0 > boundary {
                // The cap falls between two milliseconds: everything up to `boundary` is taken.
                rows.truncate(MAX_ITEMS_PER_POLL);
                (rows, boundary + 1)
            } else if rows[0].0 < boundary {
                // The cap cuts through the changes of one millisecond: take what came before
                // it; that millisecond leads the next poll.
                rows.retain(|(ts, _)| *ts < boundary);
                (rows, boundary)
            } else {
                // More than the cap changed in one millisecond (a bulk import): read all of it,
                // page by page, so that the cursor can move past it.
                let mut group = window(boundary, boundary + 1);
                group["limit"] = json!(search::MAX_PAGE);
                let mut all = Vec::new();
                let mut after: Option<String> = None;
                let mut n = 0u32;
                loop {
                    n += 1;
                    if let Some(a) = &after {
                        group["after"] = json!(a);
                    }
                    let p = search::search_page(&self.api_base, ctx, &group, &field_of).await.map_err(|e| search::on_page(e, n))?;
                    for r in &p.results {
                        all.push(Self::item(r, prop, from)?);
                    }
                    match p.next {
                        Some(a) if a.parse::<u64>().map_or(true, |o| o < SEARCH_WINDOW) && after.as_deref() != Some(a.as_str()) => {
                            after = Some(a)
                        }
                        _ => break,
                    }
                }
                (all, boundary + 1)
            }
        };
        // Newest first, as the runner expects.
        taken.reverse();
        Ok(PollPage { items: taken.into_iter().map(|(_, item)| item).collect(), cursor: Some(next_cursor.to_string()) })
    }
}
