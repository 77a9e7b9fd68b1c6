//! What a connector declares about itself. The manifest is data: the catalog, the UI's forms,
//! the validator and the generated docs all read it.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How a connection to this app authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthKind {
    /// No connection needed (built-in apps), or an optional one.
    None,
    ApiKey,
    Bearer,
    Basic,
    /// Written `oauth2`, like the credential kind (not snake_case's `o_auth2`).
    #[serde(rename = "oauth2", alias = "o_auth2")]
    OAuth2,
    Smtp,
    Imap,
}

/// A declared rate limit: at most `calls` per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimit {
    pub calls: u32,
    #[serde(with = "duration_ms")]
    pub per: Duration,
}

mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::duration::format_duration(*d))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        crate::duration::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

/// Whether calling an action twice with the same input (and idempotency key) is harmless.
/// The runner retries a call whose outcome is unknown only when it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Idempotency {
    /// A second call may repeat the effect (a second email). Never retried blindly.
    None,
    /// The vendor deduplicates on the idempotency key the action sends.
    Key,
    /// Repeating the call has no further effect (reads, upserts, PUT, DELETE).
    Natural,
    /// Depends on the input (for example `http.request`: the method and the `idempotent`
    /// field); the action answers per call through [`crate::DynAction::idempotent_for`].
    PerCall,
}

/// One action of a connector.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ActionSpec {
    pub id: String,
    pub name: String,
    pub description: String,
    /// JSON schema of the `with` map. Every property documents itself (`description`).
    pub input_schema: Value,
    /// JSON schema of the output a later step reads as `steps.<id>`.
    pub output_schema: Value,
    /// A representative output: dry runs and the UI's data pills use it.
    pub sample: Value,
    pub idempotency: Idempotency,
    /// The action does all its IO through `ActionContext::http`: a dry run may call it with a
    /// recording transport to show the exact requests it would send. Actions that speak
    /// another protocol (SMTP) set this to false and are never called in a dry run.
    #[serde(default = "yes")]
    pub http_only: bool,
    /// What the action does to ad audiences, if anything (see [`crate::audience`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<crate::audience::AudienceSpec>,
    /// The action sends a message to a person (email, SMS, a direct message, an ad
    /// audience): its channel and where the recipients are in its input. The runner applies
    /// the send policy before every call of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reaches: Option<crate::policy::Reach>,
}

fn yes() -> bool {
    true
}

/// How a trigger produces events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerKind {
    /// An inbound HTTP request (`POST /hooks/{path}`).
    Webhook,
    /// A clock (cron).
    Schedule,
    /// An internal event (`emit`).
    Event,
    /// A change in Enlace's contact store (`contacts.contact_created`, ...), started by the
    /// runner in the same transaction as the change.
    Contact,
    /// The runner polls the app with a cursor and a dedupe key per item.
    Polling,
    /// The app calls us after we subscribe (REST hooks).
    Subscribe,
}

/// One trigger of a connector.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TriggerSpec {
    pub id: String,
    pub name: String,
    pub description: String,
    pub kind: TriggerKind,
    /// JSON schema of the trigger's `with` map.
    pub config_schema: Value,
    /// JSON schema of the event, read by steps as `trigger`.
    pub output_schema: Value,
    pub sample: Value,
}

/// Everything a connector declares.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConnectorManifest {
    /// The app id used in recipes (`app: http`): lowercase, `[a-z][a-z0-9_]*`.
    pub id: String,
    pub name: String,
    pub description: String,
    pub auth: AuthKind,
    /// The vendor's documented limit, applied per connection unless the connection overrides it.
    pub rate_limit: Option<RateLimit>,
    /// Bumped when an output schema changes in a way recipes may notice.
    pub version: String,
    /// Whether a connection to this app can be tested (`enlace connections test`): the
    /// connector logs in and changes nothing.
    #[serde(default)]
    pub connection_test: bool,
    /// The app's OAuth2 authorization server, for apps users sign in to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth2: Option<crate::oauth::OAuth2App>,
    pub triggers: Vec<TriggerSpec>,
    pub actions: Vec<ActionSpec>,
}

impl ConnectorManifest {
    pub fn action(&self, id: &str) -> Option<&ActionSpec> {
        self.actions.iter().find(|a| a.id == id)
    }
    pub fn trigger(&self, id: &str) -> Option<&TriggerSpec> {
        self.triggers.iter().find(|t| t.id == id)
    }
}

/// The JSON schema of a Rust type, as a plain value (doc comments become descriptions).
pub fn schema_of<T: schemars::JsonSchema>() -> Value {
    let schema = schemars::schema_for!(T);
    let mut v = serde_json::to_value(schema).unwrap_or(Value::Null);
    if let Some(o) = v.as_object_mut() {
        o.remove("$schema");
    }
    v
}
