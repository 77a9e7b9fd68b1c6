//! The `contacts` app: Enlace's embedded CRM, which works with no outside app.
//!
//! Actions upsert contacts by email, tag them, set fields, record consent per purpose and
//! channel with its evidence, add notes, record activity on the timeline and find contacts.
//! Triggers start recipes when a contact is created or updated, gets a tag, or has an entry
//! of some kind written to its timeline. The store is Enlace's own database: the
//! actions reach it through the [`ContactsBackend`] the runner lends each call in
//! `ActionContext::extensions` (they make no HTTP request, so `HTTP_ONLY` is false and a
//! dry run does not call them), and the runner starts the triggered recipes in the same
//! transaction as the change. What the app does for end users is in this folder's README.md.

use std::sync::Arc;

use enlace_core::contacts::{
    Consent, ConsentStatus, Contact, ContactDetail, ContactKey, ContactOp, ContactOutcome, ContactTrigger, ContactsBackend, ContactsError,
    Evidence, NewConsent, Note, TimelineEvent, WriteContext, check_channel, check_kind, check_purpose, normalize_email, normalize_tag,
};
use enlace_core::manifest::schema_of;
use enlace_core::{Action, ActionContext, Connector, ConnectorError, Idempotency, TriggerKind, TriggerSpec};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// The app id recipes use (`app: contacts`).
pub const APP_ID: &str = "contacts";

/// The `contacts` connector.
pub fn connector() -> Connector {
    let mut b = Connector::builder(
        APP_ID,
        "Contacts",
        "Enlace's built-in contact store: contacts by email with fields and tags, consent per purpose and channel with its evidence, notes, and a timeline of every change.",
    )
    // 2: contacts carry their lead score; the timeline's activities (`record_event`, `contacts.event`).
    .version("2")
    .action(UpsertContact)
    .action(SetFields)
    .action(AddTag)
    .action(RemoveTag)
    .action(RecordConsent)
    .action(AddNote)
    .action(RecordEvent)
    .action(FindContact);
    for t in ContactTrigger::ALL {
        b = b.builtin_trigger(trigger_spec(t));
    }
    b.build()
}

// ---- shared parts ----

/// Which contact a step acts on: by `email` or by `contact_id`, exactly one of them.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// The contact's email (compared case-insensitively). Give this or `contact_id`.
    #[serde(default)]
    pub email: Option<String>,
    /// The contact's id (the `id` output of `contacts.upsert_contact`). Give this or `email`.
    #[serde(default)]
    pub contact_id: Option<String>,
}

impl Target {
    fn key(&self) -> Result<(ContactKey, &'static str), ConnectorError> {
        match (
            self.email.as_deref().map(str::trim).filter(|e| !e.is_empty()),
            self.contact_id.as_deref().map(str::trim).filter(|i| !i.is_empty()),
        ) {
            (Some(_), Some(_)) => Err(ConnectorError::bad_input("contact_id", "give either `email` or `contact_id`, not both")),
            (Some(e), None) => {
                let e = normalize_email(e).map_err(|m| ConnectorError::bad_input("email", m))?;
                Ok((ContactKey::Email(e), "email"))
            }
            (None, Some(id)) => Ok((ContactKey::Id(id.to_string()), "contact_id")),
            (None, None) => Err(ConnectorError::bad_input("email", "say which contact: give `email` or `contact_id`")),
        }
    }
}

fn backend(ctx: &ActionContext) -> Result<&Arc<dyn ContactsBackend>, ConnectorError> {
    ctx.extensions.contacts.as_ref().ok_or_else(|| {
        ConnectorError::permanent(
            "the contact store is not available to this call (only the runner provides it; a dry run does not call contact actions)",
        )
    })
}

fn write_context(ctx: &ActionContext) -> WriteContext {
    WriteContext { op_key: Some(ctx.idempotency_key.clone()), run_id: Some(ctx.run_id.clone()) }
}

/// Turns a contact-store error into the connector's classes; `field` is the input that
/// named the contact.
fn classify(e: ContactsError, field: &str) -> ConnectorError {
    match e {
        ContactsError::NotFound(m) => {
            ConnectorError::bad_input(field, format!("{m}; create it first with `contacts.upsert_contact`, or check the {field}"))
        }
        ContactsError::Invalid(m) => ConnectorError::bad_input("", m),
        ContactsError::Unavailable(m) => ConnectorError::transient(m),
    }
}

async fn apply(ctx: &ActionContext, op: ContactOp, field: &str) -> Result<ContactOutcome, ConnectorError> {
    backend(ctx)?.apply(write_context(ctx), op).await.map_err(|e| classify(e, field))
}

fn sample_contact() -> Contact {
    let mut fields = Map::new();
    fields.insert("first_name".into(), json!("Ada"));
    fields.insert("interests".into(), json!(["dogs", "food"]));
    fields.insert("acquired_via".into(), json!("signup-form"));
    Contact {
        id: "0193a1f2-7c4e-7d2a-9b1e-5f3c2a1b0c9d".into(),
        email: "ada@example.com".into(),
        email_original: "Ada@Example.com".into(),
        fields,
        tags: vec!["newsletter".into(), "vip".into()],
        created_at: 1_764_115_200_000,
        updated_at: 1_764_118_800_000,
        version: 3,
        score: 12.5,
    }
}

fn check_fields(fields: &Map<String, Value>) -> Result<(), ConnectorError> {
    match fields.keys().find(|k| k.trim().is_empty()) {
        Some(_) => Err(ConnectorError::bad_input("fields", "a field name is empty")),
        None => Ok(()),
    }
}

// ---- upsert_contact ----

/// The `with` map of `contacts.upsert_contact`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpsertInput {
    /// The contact's email: the contact with this email (compared case-insensitively) is
    /// updated, or created when there is none.
    pub email: String,
    /// Fields to store on the contact (`{first_name: Ada, interests: [dogs]}`), merged into
    /// the fields it has: the fields named here are set, the others kept. A field set to
    /// `null` is removed.
    #[serde(default)]
    pub fields: Map<String, Value>,
}

/// The contact after the upsert.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct UpsertOutput {
    /// The contact's id.
    pub id: String,
    /// True when this step created the contact.
    pub created: bool,
    /// True when this step changed something (false when the contact already had these fields).
    pub changed: bool,
    pub contact: Contact,
}

/// `contacts.upsert_contact`.
pub struct UpsertContact;

impl Action for UpsertContact {
    type Input = UpsertInput;
    type Output = UpsertOutput;
    const ID: &'static str = "upsert_contact";
    const NAME: &'static str = "Create or update a contact";
    const DESCRIPTION: &'static str = "Finds the contact by email and merges the fields into it, or creates it. Starts `contacts.contact_created` or `contacts.contact_updated` recipes.";
    const IDEMPOTENCY: Idempotency = Idempotency::Natural;
    const HTTP_ONLY: bool = false;

    fn sample() -> UpsertOutput {
        let contact = sample_contact();
        UpsertOutput { id: contact.id.clone(), created: true, changed: true, contact }
    }

    async fn call(&self, ctx: &ActionContext, input: UpsertInput) -> Result<UpsertOutput, ConnectorError> {
        normalize_email(&input.email).map_err(|m| ConnectorError::bad_input("email", m))?;
        check_fields(&input.fields)?;
        let out = apply(ctx, ContactOp::Upsert { email: input.email, fields: input.fields }, "email").await?;
        Ok(UpsertOutput { id: out.contact.id.clone(), created: out.created, changed: out.changed, contact: out.contact })
    }
}

// ---- set_fields ----

/// The `with` map of `contacts.set_fields`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetFieldsInput {
    /// The contact's email (compared case-insensitively). Give this or `contact_id`.
    #[serde(default)]
    pub email: Option<String>,
    /// The contact's id. Give this or `email`.
    #[serde(default)]
    pub contact_id: Option<String>,
    /// The fields to set (`{phone: "+33612345678"}`); the other fields are kept. A field set
    /// to `null` is removed.
    pub fields: Map<String, Value>,
}

/// The contact after the change.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ChangeOutput {
    /// True when this step changed the contact (false when it already was so).
    pub changed: bool,
    pub contact: Contact,
}

/// `contacts.set_fields`.
pub struct SetFields;

impl Action for SetFields {
    type Input = SetFieldsInput;
    type Output = ChangeOutput;
    const ID: &'static str = "set_fields";
    const NAME: &'static str = "Set a contact's fields";
    const DESCRIPTION: &'static str =
        "Sets fields of an existing contact, keeping the others. Starts `contacts.contact_updated` recipes when a field changes.";
    const IDEMPOTENCY: Idempotency = Idempotency::Natural;
    const HTTP_ONLY: bool = false;

    fn sample() -> ChangeOutput {
        ChangeOutput { changed: true, contact: sample_contact() }
    }

    async fn call(&self, ctx: &ActionContext, input: SetFieldsInput) -> Result<ChangeOutput, ConnectorError> {
        let (key, field) = Target { email: input.email, contact_id: input.contact_id }.key()?;
        check_fields(&input.fields)?;
        let out = apply(ctx, ContactOp::SetFields { key, fields: input.fields }, field).await?;
        Ok(ChangeOutput { changed: out.changed, contact: out.contact })
    }
}

// ---- add_tag, remove_tag ----

/// The `with` map of `contacts.add_tag` and `contacts.remove_tag`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TagInput {
    /// The contact's email (compared case-insensitively). Give this or `contact_id`.
    #[serde(default)]
    pub email: Option<String>,
    /// The contact's id. Give this or `email`.
    #[serde(default)]
    pub contact_id: Option<String>,
    /// The tag (`vip`, `webinar-2026-12`): up to 100 characters, spaces around it removed.
    /// Tags are case-sensitive.
    pub tag: String,
}

/// `contacts.add_tag`.
pub struct AddTag;

impl Action for AddTag {
    type Input = TagInput;
    type Output = ChangeOutput;
    const ID: &'static str = "add_tag";
    const NAME: &'static str = "Tag a contact";
    const DESCRIPTION: &'static str = "Adds a tag to a contact (nothing happens if it has it). Starts `contacts.tag_added` recipes.";
    const IDEMPOTENCY: Idempotency = Idempotency::Natural;
    const HTTP_ONLY: bool = false;

    fn sample() -> ChangeOutput {
        ChangeOutput { changed: true, contact: sample_contact() }
    }

    async fn call(&self, ctx: &ActionContext, input: TagInput) -> Result<ChangeOutput, ConnectorError> {
        let (key, field) = Target { email: input.email, contact_id: input.contact_id }.key()?;
        let tag = normalize_tag(&input.tag).map_err(|m| ConnectorError::bad_input("tag", m))?;
        let out = apply(ctx, ContactOp::AddTag { key, tag }, field).await?;
        Ok(ChangeOutput { changed: out.changed, contact: out.contact })
    }
}

/// `contacts.remove_tag`.
pub struct RemoveTag;

impl Action for RemoveTag {
    type Input = TagInput;
    type Output = ChangeOutput;
    const ID: &'static str = "remove_tag";
    const NAME: &'static str = "Remove a tag from a contact";
    const DESCRIPTION: &'static str = "Removes a tag from a contact (nothing happens if it does not have it).";
    const IDEMPOTENCY: Idempotency = Idempotency::Natural;
    const HTTP_ONLY: bool = false;

    fn sample() -> ChangeOutput {
        ChangeOutput { changed: true, contact: sample_contact() }
    }

    async fn call(&self, ctx: &ActionContext, input: TagInput) -> Result<ChangeOutput, ConnectorError> {
        let (key, field) = Target { email: input.email, contact_id: input.contact_id }.key()?;
        let tag = normalize_tag(&input.tag).map_err(|m| ConnectorError::bad_input("tag", m))?;
        let out = apply(ctx, ContactOp::RemoveTag { key, tag }, field).await?;
        Ok(ChangeOutput { changed: out.changed, contact: out.contact })
    }
}

// ---- record_consent ----

/// What proves the decision.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EvidenceInput {
    /// Where the contact decided: the form, page, message or conversation
    /// (`signup form on example.com/join`, `SMS reply STOP`, `phone call with Marie`).
    pub source: String,
    /// The contact's IP address, when the decision was made online.
    #[serde(default)]
    pub ip: Option<String>,
    /// The exact wording the contact was shown (the checkbox label, the message). Keep it:
    /// consent is only valid for what was said.
    #[serde(default)]
    pub text: Option<String>,
    /// When the contact decided, in RFC 3339 (`2026-11-25T14:03:00Z`). Defaults to now.
    #[serde(default)]
    pub recorded_at: Option<String>,
}

/// The `with` map of `contacts.record_consent`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsentInput {
    /// The contact's email (compared case-insensitively). Give this or `contact_id`.
    #[serde(default)]
    pub email: Option<String>,
    /// The contact's id. Give this or `email`.
    #[serde(default)]
    pub contact_id: Option<String>,
    /// What the contact agrees to, or withdraws from: `marketing`, `newsletter`,
    /// `tracking`, ... (lowercase letters, digits, `_`, `-`, `.`). Consent is per purpose:
    /// agreeing to a newsletter is not agreeing to marketing.
    pub purpose: String,
    /// The channel: one of `email`, `sms`, `whatsapp`, `push`, `voice` (calls), `mail`
    /// (postal), `social` (direct messages), `ads` (retargeting audiences), `web` (tracking
    /// and messages on a website).
    pub channel: String,
    /// `granted` or `withdrawn`.
    pub status: ConsentStatus,
    /// What proves the decision: where it was made, and what the contact saw.
    pub evidence: EvidenceInput,
}

/// The decision as stored.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ConsentOutput {
    /// False when this step had already recorded it (a retry).
    pub recorded: bool,
    pub consent: Consent,
    pub contact: Contact,
}

/// `contacts.record_consent`.
pub struct RecordConsent;

fn parse_time(s: &str) -> Result<i64, ConnectorError> {
    chrono::DateTime::parse_from_rfc3339(s.trim()).map(|t| t.timestamp_millis()).map_err(|_| {
        ConnectorError::bad_input("evidence.recorded_at", format!("`{s}` is not an RFC 3339 time (like `2026-11-25T14:03:00Z`)"))
    })
}

impl Action for RecordConsent {
    type Input = ConsentInput;
    type Output = ConsentOutput;
    const ID: &'static str = "record_consent";
    const NAME: &'static str = "Record consent";
    const DESCRIPTION: &'static str = "Records that a contact granted or withdrew consent for a purpose on a channel, with its evidence. The history is kept; the latest decision counts.";
    // Stored once per step (the idempotency key): a retried step records nothing twice.
    const IDEMPOTENCY: Idempotency = Idempotency::Key;
    const HTTP_ONLY: bool = false;

    fn sample() -> ConsentOutput {
        ConsentOutput {
            recorded: true,
            consent: Consent {
                id: "0193a1f2-8a10-7b3c-8d4e-1a2b3c4d5e6f".into(),
                purpose: "marketing".into(),
                channel: "email".into(),
                status: ConsentStatus::Granted,
                evidence: Evidence {
                    source: "signup form on example.com/join".into(),
                    ip: Some("203.0.113.7".into()),
                    text: Some("Yes, send me offers and news by email".into()),
                    recorded_at: 1_764_115_200_000,
                    run_id: Some("0193a1f2-7000-7000-8000-000000000001".into()),
                    details: Map::new(),
                },
                at: 1_764_115_200_000,
            },
            contact: sample_contact(),
        }
    }

    async fn call(&self, ctx: &ActionContext, input: ConsentInput) -> Result<ConsentOutput, ConnectorError> {
        let (key, field) = Target { email: input.email, contact_id: input.contact_id }.key()?;
        check_purpose(&input.purpose).map_err(|m| ConnectorError::bad_input("purpose", m))?;
        check_channel(&input.channel).map_err(|m| ConnectorError::bad_input("channel", m))?;
        let ev = input.evidence;
        if ev.source.trim().is_empty() {
            return Err(ConnectorError::bad_input("evidence.source", "say where the contact decided (the form, page or message)"));
        }
        let recorded_at = match &ev.recorded_at {
            Some(t) => parse_time(t)?,
            None => chrono::Utc::now().timestamp_millis(),
        };
        let evidence = Evidence {
            source: ev.source.trim().to_string(),
            ip: ev.ip,
            text: ev.text,
            recorded_at,
            run_id: Some(ctx.run_id.clone()),
            details: Map::new(),
        };
        let consent = NewConsent { purpose: input.purpose, channel: input.channel, status: input.status, evidence };
        let out = apply(ctx, ContactOp::RecordConsent { key, consent }, field).await?;
        let consent = out.consent.ok_or_else(|| ConnectorError::permanent("the contact store recorded no consent"))?;
        Ok(ConsentOutput { recorded: out.changed, consent, contact: out.contact })
    }
}

// ---- add_note ----

/// The `with` map of `contacts.add_note`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoteInput {
    /// The contact's email (compared case-insensitively). Give this or `contact_id`.
    #[serde(default)]
    pub email: Option<String>,
    /// The contact's id. Give this or `email`.
    #[serde(default)]
    pub contact_id: Option<String>,
    /// The note's text, up to 10000 characters.
    pub body: String,
    /// Who writes it (a person's name, or the recipe). Defaults to none.
    #[serde(default)]
    pub author: Option<String>,
}

/// The note as stored.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct NoteOutput {
    /// False when this step had already added it (a retry).
    pub added: bool,
    pub note: Note,
    pub contact: Contact,
}

/// `contacts.add_note`.
pub struct AddNote;

impl Action for AddNote {
    type Input = NoteInput;
    type Output = NoteOutput;
    const ID: &'static str = "add_note";
    const NAME: &'static str = "Add a note to a contact";
    const DESCRIPTION: &'static str = "Adds a note to a contact's record.";
    // Stored once per step (the idempotency key): a retried step adds nothing twice.
    const IDEMPOTENCY: Idempotency = Idempotency::Key;
    const HTTP_ONLY: bool = false;

    fn sample() -> NoteOutput {
        NoteOutput {
            added: true,
            note: Note {
                id: "0193a1f2-9b20-7c4d-9e5f-2b3c4d5e6f70".into(),
                body: "Asked about the webinar replay.".into(),
                author: Some("welcome-series".into()),
                at: 1_764_118_800_000,
            },
            contact: sample_contact(),
        }
    }

    async fn call(&self, ctx: &ActionContext, input: NoteInput) -> Result<NoteOutput, ConnectorError> {
        let (key, field) = Target { email: input.email, contact_id: input.contact_id }.key()?;
        if input.body.trim().is_empty() {
            return Err(ConnectorError::bad_input("body", "the note is empty"));
        }
        if input.body.chars().count() > 10_000 {
            return Err(ConnectorError::bad_input("body", "the note is longer than 10000 characters"));
        }
        let out = apply(ctx, ContactOp::AddNote { key, body: input.body, author: input.author }, field).await?;
        let note = out.note.ok_or_else(|| ConnectorError::permanent("the contact store added no note"))?;
        Ok(NoteOutput { added: out.changed, note, contact: out.contact })
    }
}

// ---- record_event ----

/// The `with` map of `contacts.record_event`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventInput {
    /// The contact's email (compared case-insensitively). Give this or `contact_id`.
    #[serde(default)]
    pub email: Option<String>,
    /// The contact's id. Give this or `email`.
    #[serde(default)]
    pub contact_id: Option<String>,
    /// What happened, a slug: `email_sent`, `email_opened`, `email_clicked`, `email_replied`,
    /// `sms_sent`, `sms_delivered`, `sms_stop`, `page_viewed`, `form_submitted`,
    /// `cart_abandoned`, `purchase`, `consent_given`, `consent_withdrawn`, or a kind of your
    /// own (lowercase letters, digits and `_`).
    pub kind: String,
    /// The details, a JSON object (`page_viewed`: `{url, title, duration_ms, referrer}`;
    /// `purchase`: `{order_id, items, total, currency}`), up to 16 KiB.
    #[serde(default)]
    pub data: Map<String, Value>,
    /// When it happened, in RFC 3339 (`2026-11-25T14:03:00Z`). Defaults to now.
    #[serde(default)]
    pub at: Option<String>,
}

/// The timeline entry as stored.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct EventOutput {
    /// False when this step had already recorded it (a retry).
    pub recorded: bool,
    pub event: TimelineEvent,
    /// The contact, with its score after this entry.
    pub contact: Contact,
}

/// `contacts.record_event`.
pub struct RecordEvent;

impl Action for RecordEvent {
    type Input = EventInput;
    type Output = EventOutput;
    const ID: &'static str = "record_event";
    const NAME: &'static str = "Record an activity on the timeline";
    const DESCRIPTION: &'static str = "Writes an entry (a page view, a purchase, a form submitted...) on a contact's timeline, scores it, and starts the `contacts.event` recipes of its kind.";
    // Stored once per step (the idempotency key): a retried step records nothing twice.
    const IDEMPOTENCY: Idempotency = Idempotency::Key;
    const HTTP_ONLY: bool = false;

    fn sample() -> EventOutput {
        EventOutput {
            recorded: true,
            event: TimelineEvent {
                id: "0193a1f2-9b20-7c4d-9e5f-2b3c4d5e6f72".into(),
                kind: "purchase".into(),
                data: json!({"order_id": "A-1001", "total": 42.5, "currency": "EUR", "items": [{"sku": "DOG-FOOD-2KG", "qty": 1, "price": 42.5}]}),
                run_id: Some("0193a1f2-7000-7000-8000-000000000001".into()),
                at: 1_764_118_800_000,
            },
            contact: sample_contact(),
        }
    }

    async fn call(&self, ctx: &ActionContext, input: EventInput) -> Result<EventOutput, ConnectorError> {
        let (key, field) = Target { email: input.email, contact_id: input.contact_id }.key()?;
        check_kind(&input.kind).map_err(|m| ConnectorError::bad_input("kind", m))?;
        let at =
            match &input.at {
                Some(t) => Some(chrono::DateTime::parse_from_rfc3339(t.trim()).map(|t| t.timestamp_millis()).map_err(|_| {
                    ConnectorError::bad_input("at", format!("`{t}` is not an RFC 3339 time (like `2026-11-25T14:03:00Z`)"))
                })?),
                None => None,
            };
        let op = ContactOp::RecordEvent { key, kind: input.kind, data: Value::Object(input.data), at };
        let out = apply(ctx, op, field).await?;
        let event = out.event.ok_or_else(|| ConnectorError::permanent("the contact store recorded no event"))?;
        Ok(EventOutput { recorded: out.changed, event, contact: out.contact })
    }
}

// ---- find_contact ----

/// What `contacts.find_contact` found.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct FindOutput {
    /// Whether the contact exists. A contact that does not exist is not an error: branch on
    /// this.
    pub found: bool,
    /// The contact, when found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contact: Option<Contact>,
    /// The current consent per purpose and channel.
    pub consents: Vec<Consent>,
    /// The contact's notes, newest first.
    pub notes: Vec<Note>,
    /// The latest timeline entries, newest first.
    pub timeline: Vec<TimelineEvent>,
}

/// `contacts.find_contact`.
pub struct FindContact;

impl Action for FindContact {
    type Input = Target;
    type Output = FindOutput;
    const ID: &'static str = "find_contact";
    const NAME: &'static str = "Find a contact";
    const DESCRIPTION: &'static str =
        "Finds a contact by email or id, with its tags, current consents, notes and timeline. Not found is `found: false`, not an error.";
    const IDEMPOTENCY: Idempotency = Idempotency::Natural;
    const HTTP_ONLY: bool = false;

    fn sample() -> FindOutput {
        let c = RecordConsent::sample();
        FindOutput {
            found: true,
            contact: Some(sample_contact()),
            consents: vec![c.consent],
            notes: vec![AddNote::sample().note],
            timeline: vec![TimelineEvent {
                id: "0193a1f2-9b20-7c4d-9e5f-2b3c4d5e6f71".into(),
                kind: "tag_added".into(),
                data: json!({"tag": "vip"}),
                run_id: Some("0193a1f2-7000-7000-8000-000000000001".into()),
                at: 1_764_118_800_000,
            }],
        }
    }

    async fn call(&self, ctx: &ActionContext, input: Target) -> Result<FindOutput, ConnectorError> {
        let (key, field) = input.key()?;
        match backend(ctx)?.find(key).await.map_err(|e| classify(e, field))? {
            Some(ContactDetail { contact, consents, notes, timeline }) => {
                Ok(FindOutput { found: true, contact: Some(contact), consents, notes, timeline })
            }
            None => Ok(FindOutput { found: false, contact: None, consents: vec![], notes: vec![], timeline: vec![] }),
        }
    }
}

// ---- triggers ----

/// The `with` of `contacts.contact_created` and `contacts.contact_updated`: nothing.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoConfig {}

/// The `with` of `contacts.tag_added`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct TagConfig {
    /// Start only when this tag is added (`vip`). Without it, any tag starts the recipe.
    #[serde(default)]
    pub tag: Option<String>,
}

/// The `with` of `contacts.event`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct EventConfig {
    /// Start only for timeline entries of this kind (`page_viewed`, `purchase`,
    /// `score_threshold`). Without it, every entry starts the recipe.
    #[serde(default)]
    pub kind: Option<String>,
}

/// A timeline entry as `contacts.event` gives it.
#[derive(Debug, Serialize, JsonSchema)]
#[allow(dead_code)]
struct EventOfTrigger {
    /// The timeline entry's id.
    id: String,
    /// The kind (`page_viewed`).
    kind: String,
    /// The entry's details.
    data: Value,
    /// When it happened (Unix milliseconds).
    at: i64,
}

/// What a contact trigger's run sees as `trigger`.
#[derive(Debug, Serialize, JsonSchema)]
#[allow(dead_code)]
struct TriggerEvent {
    /// The trigger: `contact_created`, `contact_updated`, `tag_added` or `event`.
    trigger: String,
    /// The contact after the change.
    contact: Contact,
    /// `tag_added`: the tag.
    #[serde(skip_serializing_if = "Option::is_none")]
    tag: Option<String>,
    /// `contact_updated`: the names of the fields that changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    changed: Option<Vec<String>>,
    /// `event`: the timeline entry.
    #[serde(skip_serializing_if = "Option::is_none")]
    event: Option<EventOfTrigger>,
    /// The run that made the change, if a recipe did.
    #[serde(skip_serializing_if = "Option::is_none")]
    run_id: Option<String>,
}

fn trigger_spec(t: ContactTrigger) -> TriggerSpec {
    let (name, description, config_schema) = match t {
        ContactTrigger::ContactCreated => (
            "When a contact is created",
            "Starts the recipe when a contact is created (by a recipe, the API or the CLI). `trigger.contact` is the new contact.",
            schema_of::<NoConfig>(),
        ),
        ContactTrigger::ContactUpdated => (
            "When a contact's fields change",
            "Starts the recipe when fields of an existing contact change. `trigger.changed` lists them; `trigger.contact` is the contact after the change.",
            schema_of::<NoConfig>(),
        ),
        ContactTrigger::TagAdded => (
            "When a contact gets a tag",
            "Starts the recipe when a tag is added to a contact (once per addition: a retried step does not start it again), optionally only for one tag. `trigger.tag` is the tag.",
            schema_of::<TagConfig>(),
        ),
        ContactTrigger::Event => (
            "When an activity is recorded",
            "Starts the recipe when an entry is written to a contact's timeline (an activity recorded with `contacts.record_event`, `POST /track`, an email opened or clicked, a scoring threshold crossed, or any change), optionally only for one kind; once per entry. `trigger.event` is `{kind, data, at}`.",
            schema_of::<EventConfig>(),
        ),
    };
    let contact = sample_contact();
    let sample = match t {
        ContactTrigger::ContactCreated => json!({"trigger": t.id(), "contact": contact}),
        ContactTrigger::ContactUpdated => json!({"trigger": t.id(), "contact": contact, "changed": ["interests"]}),
        ContactTrigger::TagAdded => json!({"trigger": t.id(), "contact": contact, "tag": "vip"}),
        ContactTrigger::Event => {
            json!({"trigger": t.id(), "contact": contact, "event": {"id": "0193a1f2-9b20-7c4d-9e5f-2b3c4d5e6f73", "kind": "page_viewed",
            "data": {"url": "https://shop.example.com/pricing", "title": "Pricing", "duration_ms": 48000, "referrer": ""}, "at": 1_764_118_800_000i64}})
        }
    };
    TriggerSpec {
        id: t.id().into(),
        name: name.into(),
        description: description.into(),
        kind: TriggerKind::Contact,
        config_schema,
        output_schema: schema_of::<TriggerEvent>(),
        sample,
    }
}

#[cfg(test)]
mod tests;
