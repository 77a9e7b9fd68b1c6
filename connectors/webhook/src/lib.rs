//! `webhook`: start a recipe from an HTTP request to `POST /hooks/{path}`.
//!
//! The trigger is carried out by Enlace itself: the web server verifies the signature,
//! applies the size and rate limits, stores the event durably, and only then answers.

use enlace_core::manifest::schema_of;
use enlace_core::{Connector, TriggerKind, TriggerSpec};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The `with` of `webhook.catch`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct CatchConfig {
    /// The hook's path: the recipe starts on `POST /hooks/{path}`. Letters, digits, `-`, `_`,
    /// `.` and `/`. Defaults to the recipe's id.
    pub path: Option<String>,
    /// HMAC-SHA256 key. When set, the request must carry the hex HMAC of its raw body in the
    /// signature header (`sha256=<hex>`), or it is refused with 401 and starts nothing.
    /// Usually `{{secrets.NAME}}`.
    pub secret: Option<String>,
    /// The header that carries the signature. Default `X-Enlace-Signature`.
    pub signature_header: Option<String>,
    /// A template over the incoming event (`trigger`) giving a key per event, for example
    /// `{{trigger.body.event_id}}`. A key seen before starts no second run: the answer
    /// names the first run.
    pub dedupe_key: Option<String>,
    /// `accepted` (the default): answer 202 with the run id as soon as the event is stored.
    /// Or `{after_run: TEMPLATE, timeout: "10s"}`: wait for the run to end and answer with
    /// the template rendered (202 with the run id if it takes longer).
    pub respond: Option<serde_json::Value>,
    /// Largest accepted body in bytes (default 1048576, at most 16777216); larger gets 413.
    pub max_body: Option<u64>,
    /// Inbound limit for this hook, like `100/s` or `600/m`; over it, 429 with `Retry-After`.
    pub rate_limit: Option<String>,
}

/// The event a webhook produces.
#[derive(Debug, Serialize, JsonSchema)]
pub struct CatchEvent {
    /// The request body: parsed JSON, form fields as a map, or text.
    pub body: serde_json::Value,
    /// Request headers, names in lowercase.
    pub headers: std::collections::BTreeMap<String, String>,
    /// Query string parameters.
    pub query: std::collections::BTreeMap<String, String>,
    /// When Enlace received it (RFC 3339, UTC).
    pub received_at: String,
    /// The hook path.
    pub path: String,
}

pub fn connector() -> Connector {
    Connector::builder("webhook", "Webhook", "Starts a recipe when another system sends an HTTP request to Enlace.")
        .builtin_trigger(TriggerSpec {
            id: "catch".into(),
            name: "Catch a webhook".into(),
            description: "Starts the recipe for every POST to /hooks/{path}: signature checked, body stored durably before the answer, duplicates dropped by dedupe key.".into(),
            kind: TriggerKind::Webhook,
            config_schema: schema_of::<CatchConfig>(),
            output_schema: schema_of::<CatchEvent>(),
            sample: json!({
                "body": {"event": "user.signup", "event_id": "evt_123", "user": {"first_name": "Ada", "email": "ada@example.com"}},
                "headers": {"content-type": "application/json"},
                "query": {},
                "received_at": "2026-11-25T17:45:12.345Z",
                "path": "signups"
            }),
        })
        .build()
}
