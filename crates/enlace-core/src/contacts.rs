//! The vocabulary of Enlace's embedded contact store (the `contacts` app): contacts, their
//! tags, consents with evidence, notes and timeline, and the [`ContactsBackend`] trait through
//! which the `contacts` connector reaches the store.
//!
//! The connector gets no store: it is given an `Arc<dyn ContactsBackend>` in
//! [`crate::ActionContext::extensions`] by the runner, which implements the trait over
//! `enlace-store` (and starts the recipes whose triggers are `contacts.*` in the same
//! transaction as the change). This crate only names the trait: no IO here.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::BoxFuture;

/// The channels consent is recorded for. `ads` is retargeting audiences, `web` is tracking
/// and messages on a website, `social` is direct messages on a social network, `mail` is
/// postal mail and `voice` is phone calls.
pub const CHANNELS: &[&str] = &["email", "sms", "whatsapp", "push", "voice", "mail", "social", "ads", "web"];

/// How a contact is found: by its id, or by its email (compared case-insensitively).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContactKey {
    Id(String),
    Email(String),
}

/// A contact, with its tags.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Contact {
    /// The contact's id (a UUIDv7).
    pub id: String,
    /// The email, normalised: trimmed and lowercase. Unique.
    pub email: String,
    /// The email as it was first given.
    pub email_original: String,
    /// The contact's fields (name, phone, interests, anything).
    pub fields: Map<String, Value>,
    /// The contact's tags, sorted.
    pub tags: Vec<String>,
    /// When the contact was created (Unix milliseconds).
    pub created_at: i64,
    /// When the contact last changed (Unix milliseconds).
    pub updated_at: i64,
    /// 1 at creation, +1 with every change.
    pub version: i64,
    /// The lead score (see [`crate::scoring`]), decayed to the moment it was read; 0 when
    /// no scoring rule ever matched the contact's activity.
    #[serde(default)]
    pub score: f64,
}

/// Whether consent is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConsentStatus {
    Granted,
    Withdrawn,
}

impl ConsentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ConsentStatus::Granted => "granted",
            ConsentStatus::Withdrawn => "withdrawn",
        }
    }

    pub fn parse(s: &str) -> Option<ConsentStatus> {
        match s {
            "granted" => Some(ConsentStatus::Granted),
            "withdrawn" => Some(ConsentStatus::Withdrawn),
            _ => None,
        }
    }
}

/// What proves a consent decision: who or what recorded it, where, and what the contact saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Evidence {
    /// Where the decision was made (`signup form on example.com/join`, `SMS reply STOP`).
    pub source: String,
    /// The contact's IP address, when the decision was made online.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// The wording the contact was shown (the checkbox label, the message text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// When the contact made the decision (Unix milliseconds).
    pub recorded_at: i64,
    /// The run that recorded it, when a recipe did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// Further facts as the source names them, next to the fields above (an SMS reply:
    /// `message_sid`, `body`, `at`).
    #[serde(flatten, default, skip_serializing_if = "Map::is_empty")]
    pub details: Map<String, Value>,
}

/// One consent decision for a purpose on a channel. The history is kept; the latest decision
/// per purpose and channel is the current state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Consent {
    /// The consent record's id.
    pub id: String,
    /// What the contact agreed to, or withdrew from (`marketing`, `newsletter`, `tracking`).
    pub purpose: String,
    /// The channel (one of [`CHANNELS`]).
    pub channel: String,
    pub status: ConsentStatus,
    pub evidence: Evidence,
    /// When it was stored (Unix milliseconds).
    pub at: i64,
}

/// A note on a contact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Note {
    /// The note's id.
    pub id: String,
    /// The note's text.
    pub body: String,
    /// Who wrote it (a person, or the recipe that added it).
    pub author: Option<String>,
    /// Unix milliseconds.
    pub at: i64,
}

/// One entry of a contact's timeline: every change to a contact writes one, in the same
/// transaction as the change. The store's own kinds are `created`, `fields_updated`,
/// `tag_added`, `tag_removed`, `consent_recorded`, `note_added` and `score_threshold`; activity
/// recorded with [`ContactOp::RecordEvent`] brings its own kind (the standard ones are
/// [`STANDARD_KINDS`]: `email_opened`, `page_viewed`, `purchase`, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TimelineEvent {
    /// The entry's id.
    pub id: String,
    /// What happened (`created`, `tag_added`, ...; see above).
    pub kind: String,
    /// What changed, by kind (the fields set, the tag, the consent...).
    pub data: Value,
    /// The run that made the change, if a recipe did.
    pub run_id: Option<String>,
    /// Unix milliseconds.
    pub at: i64,
}

/// A contact with everything stored about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ContactDetail {
    pub contact: Contact,
    /// The current consent per purpose and channel (the latest decision of each).
    pub consents: Vec<Consent>,
    pub notes: Vec<Note>,
    /// Newest first.
    pub timeline: Vec<TimelineEvent>,
}

/// A consent decision to record.
#[derive(Debug, Clone, PartialEq)]
pub struct NewConsent {
    pub purpose: String,
    pub channel: String,
    pub status: ConsentStatus,
    pub evidence: Evidence,
}

/// A change to make to the contact store.
#[derive(Debug, Clone, PartialEq)]
pub enum ContactOp {
    /// Creates the contact with this email, or merges `fields` into the existing one.
    Upsert {
        email: String,
        fields: Map<String, Value>,
    },
    /// Sets these fields (a `null` value removes the field); the others are kept.
    SetFields {
        key: ContactKey,
        fields: Map<String, Value>,
    },
    AddTag {
        key: ContactKey,
        tag: String,
    },
    RemoveTag {
        key: ContactKey,
        tag: String,
    },
    RecordConsent {
        key: ContactKey,
        consent: NewConsent,
    },
    AddNote {
        key: ContactKey,
        body: String,
        author: Option<String>,
    },
    /// Records an activity on the contact's timeline (`page_viewed`, `purchase`, ...):
    /// stored once per [`WriteContext::op_key`], scored, and starting the `contacts.event`
    /// recipes of its kind.
    RecordEvent {
        key: ContactKey,
        /// A slug (see [`check_kind`]).
        kind: String,
        /// A JSON object (see [`STANDARD_KINDS`] for the standard kinds' shapes).
        data: Value,
        /// When it happened (Unix milliseconds); now when `None`.
        at: Option<i64>,
    },
}

/// Who asks for a change: it makes a retried call idempotent and the timeline traceable.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WriteContext {
    /// The same for every attempt of one call (the step's idempotency key): a consent or a
    /// note is stored once per key, and the recipes a change starts are started once per key.
    pub op_key: Option<String>,
    /// The run making the change.
    pub run_id: Option<String>,
}

/// What a change did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContactOutcome {
    /// The contact after the change.
    pub contact: Contact,
    /// The contact was created by this change.
    pub created: bool,
    /// Something changed (false when the change was already in place: a retry, a tag the
    /// contact had).
    pub changed: bool,
    /// The consent recorded (`RecordConsent`).
    pub consent: Option<Consent>,
    /// The note added (`AddNote`).
    pub note: Option<Note>,
    /// The timeline entry recorded (`RecordEvent`; for a retried call, the one stored first).
    pub event: Option<TimelineEvent>,
}

/// Why a contact operation failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ContactsError {
    /// No contact with this id or email.
    #[error("{0}")]
    NotFound(String),
    /// The request is wrong (an email that is not one, an empty tag).
    #[error("{0}")]
    Invalid(String),
    /// The store failed or is unavailable: worth retrying.
    #[error("{0}")]
    Unavailable(String),
}

/// The latest consent decision about a phone number for one purpose and channel: from
/// the contacts whose `phone` it is, or from the suppression list (decisions a number sent
/// before any contact had it, such as an SMS reply STOP).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhoneDecision {
    /// The number, in E.164.
    pub phone: String,
    pub status: ConsentStatus,
    pub evidence: Evidence,
    /// When it was stored (Unix milliseconds).
    pub at: i64,
    /// The contact the decision is recorded on; `None` for the suppression list.
    pub contact_id: Option<String>,
}

/// What recording a phone number's decision did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PhoneConsentOutcome {
    /// The number, in E.164.
    pub phone: String,
    /// The contacts with this phone, each with the decision recorded on it (or found there,
    /// for a retried call).
    pub contacts: Vec<String>,
}

/// The contact store as actions see it (implemented by the runner over `enlace-store`).
pub trait ContactsBackend: Send + Sync {
    /// Makes a change atomically, with its timeline entry and the runs it starts.
    fn apply<'a>(&'a self, w: WriteContext, op: ContactOp) -> BoxFuture<'a, Result<ContactOutcome, ContactsError>>;
    /// A contact with its consents, notes and latest timeline entries.
    fn find<'a>(&'a self, key: ContactKey) -> BoxFuture<'a, Result<Option<ContactDetail>, ContactsError>>;
    /// Records a decision a phone number made itself (an SMS reply STOP or START), in one
    /// transaction: on every contact whose `phone` it is, and in the suppression list keyed
    /// by the number (so a contact created later with that phone starts with it). The
    /// number is normalised to E.164; one that is not a phone number is `Invalid`. The
    /// `op_key` of `w` stores a retried call once.
    fn record_phone_consent<'a>(
        &'a self,
        w: WriteContext,
        phone: String,
        consent: NewConsent,
    ) -> BoxFuture<'a, Result<PhoneConsentOutcome, ContactsError>> {
        let _ = (w, phone, consent);
        Box::pin(async { Err(ContactsError::Unavailable("this contact store does not record consent by phone number".into())) })
    }
    /// The latest decision about a phone number for a purpose and channel (see
    /// [`PhoneDecision`]), or `None` when nothing is recorded.
    fn phone_consent<'a>(
        &'a self,
        phone: String,
        purpose: String,
        channel: String,
    ) -> BoxFuture<'a, Result<Option<PhoneDecision>, ContactsError>> {
        let _ = (phone, purpose, channel);
        Box::pin(async { Err(ContactsError::Unavailable("this contact store cannot look up consent by phone number".into())) })
    }
}

/// What the runner lends a call beyond HTTP: the built-in services of this installation.
/// Each is `None` where the runner does not provide it (a connector's unit test, a dry run).
#[derive(Clone, Default)]
pub struct Extensions {
    /// The embedded contact store (`contacts` app).
    pub contacts: Option<std::sync::Arc<dyn ContactsBackend>>,
    /// Links this installation signs for the messages connectors send.
    pub links: Option<std::sync::Arc<dyn Links>>,
    /// The social post scheduler (`social` app).
    pub social: Option<std::sync::Arc<dyn crate::social::SocialBackend>>,
    /// The web channel (`web` app): on-site messages and signed form links.
    pub web: Option<std::sync::Arc<dyn crate::web::WebBackend>>,
}

impl std::fmt::Debug for Extensions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Extensions")
            .field("contacts", &self.contacts.is_some())
            .field("links", &self.links.is_some())
            .field("social", &self.social.is_some())
            .field("web", &self.web.is_some())
            .finish()
    }
}

/// Links Enlace signs and later takes back (the runner implements it with the
/// installation's secret key and public address).
pub trait Links: Send + Sync {
    /// The one-click unsubscribe address (RFC 8058) for `email` from `purpose` on the email
    /// channel; the error says why there is none (no public address configured).
    fn unsubscribe_url(&self, email: &str, purpose: &str) -> Result<String, String>;
    /// The open pixel's address for a message (`message`: which send it was) to `email`:
    /// loading it records `email_opened` on that contact's timeline.
    fn open_url(&self, email: &str, message: &str) -> Result<String, String> {
        let _ = (email, message);
        Err("this runner signs no tracking links".into())
    }
    /// A click-tracking address that records `email_clicked` and redirects to `url` (only
    /// to it: the address is signed).
    fn click_url(&self, email: &str, message: &str, url: &str) -> Result<String, String> {
        let _ = (email, message, url);
        Err("this runner signs no tracking links".into())
    }
}

/// Lowercases and trims an email and checks that it looks like one (`local@domain`, no
/// spaces); the message says what is wrong.
pub fn normalize_email(email: &str) -> Result<String, String> {
    let e = email.trim();
    if e.is_empty() {
        return Err("the email is empty".into());
    }
    if e.len() > 320 {
        return Err("the email is longer than 320 characters".into());
    }
    if e.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("`{e}` is not an email address: it contains a space"));
    }
    match e.rsplit_once('@') {
        Some((local, domain)) if !local.is_empty() && !domain.is_empty() && !domain.starts_with('.') && !domain.ends_with('.') => {
            Ok(e.to_lowercase())
        }
        _ => Err(format!("`{e}` is not an email address (expected `name@domain`)")),
    }
}

/// Checks a channel name, listing the valid ones when it is not one.
pub fn check_channel(channel: &str) -> Result<(), String> {
    if CHANNELS.contains(&channel) {
        Ok(())
    } else {
        Err(format!("`{channel}` is not a consent channel; use one of: {}", CHANNELS.join(", ")))
    }
}

/// Checks a purpose name: lowercase letters, digits, `_`, `-` and `.`, 1 to 64 of them.
pub fn check_purpose(purpose: &str) -> Result<(), String> {
    let ok = !purpose.is_empty()
        && purpose.len() <= 64
        && purpose.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{purpose}` is not a consent purpose: use 1 to 64 lowercase letters, digits, `_`, `-` or `.` (for example `marketing`)"
        ))
    }
}

/// Trims a tag and checks it: 1 to 100 characters, no control characters.
pub fn normalize_tag(tag: &str) -> Result<String, String> {
    let t = tag.trim();
    if t.is_empty() {
        return Err("the tag is empty".into());
    }
    if t.chars().count() > 100 {
        return Err("the tag is longer than 100 characters".into());
    }
    if t.chars().any(char::is_control) {
        return Err("the tag contains a control character".into());
    }
    Ok(t.to_string())
}

/// The standard activity kinds of the timeline, each with the shape of its `data` (every
/// field optional; more may be added). Any other slug is accepted too.
pub const STANDARD_KINDS: &[(&str, &str)] = &[
    ("email_sent", "{message_id, subject, recipe, to}"),
    ("email_opened", "{message_id, recipe, user_agent}"),
    ("email_clicked", "{message_id, recipe, url}"),
    ("email_replied", "{message_id, subject}"),
    ("sms_sent", "{message_sid, to, body}"),
    ("sms_delivered", "{message_sid, to}"),
    ("sms_stop", "{message_sid, from, body}"),
    ("page_viewed", "{url, title, duration_ms, referrer}"),
    ("form_submitted", "{form, url, fields, consents}"),
    ("web_message_viewed", "{message_id, rule, kind, product, url}"),
    ("web_message_clicked", "{message_id, rule, kind, product, url}"),
    ("web_message_dismissed", "{message_id, rule, kind, product, url}"),
    ("cart_abandoned", "{cart_id, url, items: [{sku, name, qty, price}], total, currency}"),
    ("purchase", "{order_id, items: [{sku, name, qty, price}], total, currency}"),
    ("consent_given", "{purpose, channel, source}"),
    ("consent_withdrawn", "{purpose, channel, source}"),
];

/// The longest timeline entry's `data`, as JSON text.
pub const MAX_EVENT_DATA_BYTES: usize = 16 * 1024;

/// Checks a timeline kind: a slug of 1 to 64 lowercase letters, digits and `_`, starting
/// with a letter (`page_viewed`).
pub fn check_kind(kind: &str) -> Result<(), String> {
    let ok = kind.len() <= 64
        && kind.starts_with(|c: char| c.is_ascii_lowercase())
        && kind.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{kind}` is not an event kind: use 1 to 64 lowercase letters, digits and `_`, starting with a letter (for example `page_viewed`)"
        ))
    }
}

/// The contact store's triggers (`contacts.<id>`), carried out by the runner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContactTrigger {
    /// A contact was created.
    ContactCreated,
    /// A contact's fields changed.
    ContactUpdated,
    /// A tag was added to a contact (the recipe may name the tag).
    TagAdded,
    /// A timeline entry was written (the recipe may name its kind).
    Event,
}

impl ContactTrigger {
    pub const ALL: [ContactTrigger; 4] =
        [ContactTrigger::ContactCreated, ContactTrigger::ContactUpdated, ContactTrigger::TagAdded, ContactTrigger::Event];

    /// The trigger's id in the `contacts` app.
    pub fn id(self) -> &'static str {
        match self {
            ContactTrigger::ContactCreated => "contact_created",
            ContactTrigger::ContactUpdated => "contact_updated",
            ContactTrigger::TagAdded => "tag_added",
            ContactTrigger::Event => "event",
        }
    }

    pub fn from_id(id: &str) -> Option<ContactTrigger> {
        ContactTrigger::ALL.into_iter().find(|t| t.id() == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_channels_purposes_tags() {
        assert_eq!(normalize_email("  Ada.Lovelace@Example.COM ").unwrap(), "ada.lovelace@example.com");
        assert!(normalize_email("ada").unwrap_err().contains("name@domain"));
        assert!(normalize_email("ada @x.io").unwrap_err().contains("space"));
        assert!(normalize_email("@x.io").is_err() && normalize_email("a@").is_err() && normalize_email("").is_err());
        assert!(check_channel("sms").is_ok());
        let e = check_channel("fax").unwrap_err();
        assert!(e.contains("email, sms, whatsapp, push"), "{e}");
        assert!(check_purpose("marketing").is_ok() && check_purpose("Marketing").is_err() && check_purpose("").is_err());
        assert_eq!(normalize_tag(" vip ").unwrap(), "vip");
        assert!(normalize_tag("  ").is_err());
        assert_eq!(ContactTrigger::from_id("tag_added"), Some(ContactTrigger::TagAdded));
        assert_eq!(ContactTrigger::from_id("x"), None);
        assert_eq!(ContactTrigger::from_id("event"), Some(ContactTrigger::Event));
        assert!(check_kind("page_viewed").is_ok() && check_kind("a1").is_ok());
        for bad in ["", "Page", "1x", "page-viewed", "page viewed", &"x".repeat(65)] {
            assert!(check_kind(bad).unwrap_err().contains("event kind"), "{bad}");
        }
    }
}
