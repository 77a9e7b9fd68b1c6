//! The embedded contact store: contacts, tags, consent history with evidence, notes and the
//! timeline (tables in `migrations/*/…_contacts.sql`).
//!
//! A change ([`ContactOp`]) is one transaction: the change, its timeline row, and the event
//! and run of every recipe it starts (the subscriptions the runner passes in
//! [`ContactWrite::subs`]), so a change is never without its timeline entry nor its runs. On
//! SQLite the transaction is a job of the one writer task (group commit); on PostgreSQL a
//! transaction on a pooled connection, where the contact row is locked (`FOR UPDATE`) and a
//! concurrent insert of the same email waits for the first and then updates it: twenty
//! concurrent upserts of one email make one contact.
//!
//! The logic is written once, here, over [`ContactTx`]: a handful of statements each backend
//! implements (`sqlite/contacts.rs`, `pg/contacts.rs`).

use enlace_core::contacts::{
    Consent, ConsentStatus, Contact, ContactDetail, ContactKey, ContactOp, ContactOutcome, ContactTrigger, Evidence, MAX_EVENT_DATA_BYTES,
    NewConsent, Note, PhoneConsentOutcome, PhoneDecision, TimelineEvent, WriteContext, check_channel, check_kind, check_purpose,
    normalize_email, normalize_tag,
};
use enlace_core::scoring::{Scoring, ScoringRules};
use serde_json::{Map, Value, json};

use crate::{Accepted, Backend, Millis, NewEvent, Result, Store, StoreError, new_id};

/// The most a contact's fields may hold, as JSON text.
pub const MAX_FIELDS_BYTES: usize = 64 * 1024;
/// The longest note, in characters.
pub const MAX_NOTE_CHARS: usize = 10_000;
/// Timeline entries [`Store::contact_detail`] returns.
pub const DETAIL_TIMELINE: i64 = 100;

/// A recipe started by contact changes: the runner lists the enabled ones.
#[derive(Debug, Clone, PartialEq)]
pub struct ContactSub {
    pub recipe_id: String,
    pub recipe_version: i64,
    pub trigger: ContactTrigger,
    /// For `tag_added`: only this tag.
    pub tag: Option<String>,
    /// For `event`: only timeline entries of this kind.
    pub kind: Option<String>,
}

/// A recipe whose trigger is `enlace.event` with this name: a scoring threshold crossed in a
/// contact change starts it in the same transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct EventSub {
    pub recipe_id: String,
    pub recipe_version: i64,
    pub name: String,
}

/// The timeline kind of a scoring threshold crossed upward (never scored itself).
pub const SCORE_THRESHOLD: &str = "score_threshold";

/// Which timeline entries of a contact to read, newest first.
#[derive(Debug, Clone, Default)]
pub struct TimelineQuery {
    /// Only these kinds (all when empty).
    pub kinds: Vec<String>,
    /// Only entries at or after this time (Unix ms).
    pub since: Option<Millis>,
    /// Only entries before this time (Unix ms).
    pub until: Option<Millis>,
    /// Keyset pagination: entries older than this `(at, id)` (the last entry of the previous page).
    pub before: Option<(Millis, String)>,
    /// At most this many (1 to 500; 50 when 0).
    pub limit: i64,
}

impl TimelineQuery {
    pub(crate) fn limit(&self) -> i64 {
        if self.limit <= 0 { 50 } else { self.limit.min(500) }
    }
}

/// Everything a contact change needs besides the change itself.
#[derive(Debug, Clone, Default)]
pub struct ContactWrite {
    pub ctx: WriteContext,
    /// The recipes that may start on this change; those it matches start in its transaction.
    pub subs: Vec<ContactSub>,
    pub now: Millis,
    /// The `enlace.event` recipes, for the events of scoring thresholds the change crosses.
    pub events: Vec<EventSub>,
}

/// What a change did, and the runs it started.
#[derive(Debug, Clone)]
pub struct ContactApplied {
    pub outcome: ContactOutcome,
    /// Runs started by the change (queued, due now); a retried call starts none again.
    pub started: Vec<Accepted>,
    /// Waiting journey runs of the contact made due by the change's timeline rows.
    pub woken: u64,
}

/// Which contacts to list.
#[derive(Debug, Clone, Default)]
pub struct ContactFilter {
    /// Only the contact with this email (compared case-insensitively).
    pub email: Option<String>,
    /// Only contacts with this tag.
    pub tag: Option<String>,
    /// Keyset pagination: contacts whose id sorts after this one (ids are UUIDv7: creation order).
    pub after: Option<String>,
    /// At most this many (1 to 500; 50 when 0).
    pub limit: i64,
}

impl ContactFilter {
    pub(crate) fn limit(&self) -> i64 {
        if self.limit <= 0 { 50 } else { self.limit.min(500) }
    }
}

/// The statements the contact logic needs, per backend, on one connection (in a transaction
/// for writes).
/// (GDPR's statements come with it: a withdrawn `ads` consent queues audience removals.)
pub(crate) trait ContactTx: Send + crate::gdpr::GdprTx {
    /// The contact with its tags; `lock` takes its row lock until the transaction ends
    /// (PostgreSQL; SQLite's writer is alone anyway).
    fn contact(&mut self, key: &ContactKey, lock: bool) -> impl Future<Output = Result<Option<Contact>>> + Send;
    /// Inserts the contact unless its email exists (then waits for a concurrent insert of
    /// it to end, and inserts nothing): whether it was inserted.
    fn insert_contact(&mut self, c: &Contact) -> impl Future<Output = Result<bool>> + Send;
    /// Writes fields, updated_at and version.
    fn update_contact(&mut self, c: &Contact) -> impl Future<Output = Result<()>> + Send;
    fn insert_tag(&mut self, contact_id: &str, tag: &str, at: Millis) -> impl Future<Output = Result<bool>> + Send;
    fn delete_tag(&mut self, contact_id: &str, tag: &str) -> impl Future<Output = Result<bool>> + Send;
    fn consent_by_op(&mut self, contact_id: &str, op_key: &str) -> impl Future<Output = Result<Option<Consent>>> + Send;
    fn insert_consent(&mut self, contact_id: &str, c: &Consent, op_key: Option<&str>) -> impl Future<Output = Result<()>> + Send;
    fn note_by_op(&mut self, contact_id: &str, op_key: &str) -> impl Future<Output = Result<Option<Note>>> + Send;
    fn insert_note(&mut self, contact_id: &str, n: &Note, op_key: Option<&str>) -> impl Future<Output = Result<()>> + Send;
    /// Writes a timeline row (only [`record_timeline`] calls it).
    fn insert_timeline(&mut self, contact_id: &str, e: &TimelineEvent, op_key: Option<&str>) -> impl Future<Output = Result<()>> + Send;
    /// The timeline row the call `op_key` recorded.
    fn timeline_by_op(&mut self, contact_id: &str, op_key: &str) -> impl Future<Output = Result<Option<TimelineEvent>>> + Send;
    /// The installation's scoring rules, when set.
    fn scoring(&mut self) -> impl Future<Output = Result<Option<ScoringRules>>> + Send;
    /// A contact's score row.
    fn score(&mut self, contact_id: &str) -> impl Future<Output = Result<Option<ScoreRow>>> + Send;
    fn put_score(&mut self, contact_id: &str, s: &ScoreRow, now: Millis) -> impl Future<Output = Result<()>> + Send;
    /// Stores a trigger event and its queued run unless its dedupe key was seen; `None` then.
    fn insert_run(&mut self, e: &NewEvent) -> impl Future<Output = Result<Option<Accepted>>> + Send;
    /// The latest decision per purpose and channel.
    fn current_consents(&mut self, contact_id: &str) -> impl Future<Output = Result<Vec<Consent>>> + Send;
    fn notes(&mut self, contact_id: &str) -> impl Future<Output = Result<Vec<Note>>> + Send;
    /// Newest first.
    fn timeline(&mut self, contact_id: &str, q: &TimelineQuery) -> impl Future<Output = Result<Vec<TimelineEvent>>> + Send;
    /// The ids of the contacts whose `phone` column is this E.164 number, in id order; their
    /// rows locked when `lock`.
    fn contacts_by_phone(&mut self, phone: &str, lock: bool) -> impl Future<Output = Result<Vec<String>>> + Send;
    /// A contact's latest decision for a purpose and channel.
    fn latest_consent(&mut self, contact_id: &str, purpose: &str, channel: &str) -> impl Future<Output = Result<Option<Consent>>> + Send;
    /// A contact's latest decision on a channel for each of these purposes (in their order),
    /// in one read: the send policy asks for `all` and the message's purpose together.
    fn latest_consents(
        &mut self,
        contact_id: &str,
        purposes: &[&str],
        channel: &str,
    ) -> impl Future<Output = Result<Vec<Option<Consent>>>> + Send;
    /// The suppression list's latest decision per purpose and channel for a number.
    fn suppressions(&mut self, phone: &str) -> impl Future<Output = Result<Vec<Suppression>>> + Send;
    /// Whether the call `op_key` already recorded a decision of this number.
    fn suppression_seen(&mut self, phone: &str, op_key: &str) -> impl Future<Output = Result<bool>> + Send;
    /// Adds a decision to the number's history.
    fn put_suppression(&mut self, s: &Suppression) -> impl Future<Output = Result<()>> + Send;
    /// Makes the contact's waiting runs that listen for `kind` due at `now` (with a wake-up
    /// for the other nodes on PostgreSQL): how many.
    fn wake_runs(&mut self, contact_id: &str, kind: &str, now: Millis) -> impl Future<Output = Result<u64>> + Send;
    /// Serialises journey entries of one recipe and contact (PostgreSQL: a transaction-level
    /// advisory lock; SQLite's writer is alone).
    fn lock_journey(&mut self, recipe_id: &str, contact_id: &str) -> impl Future<Output = Result<()>> + Send;
    /// Sets a run's contact and wake-up kinds if `owner` still holds it running.
    fn bind_run_contact(
        &mut self,
        run_id: &str,
        owner: &str,
        contact_id: &str,
        wake_on: Option<&str>,
    ) -> impl Future<Output = Result<bool>> + Send;
    /// Whether `run_id` has entered the recipe for this contact, and the latest entry's time.
    fn journey_entries(
        &mut self,
        recipe_id: &str,
        contact_id: &str,
        run_id: &str,
    ) -> impl Future<Output = Result<(bool, Option<Millis>)>> + Send;
    fn insert_journey_entry(
        &mut self,
        recipe_id: &str,
        contact_id: &str,
        run_id: &str,
        at: Millis,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Timeline events of one kind at or after `since`, oldest first.
    fn events_since(
        &mut self,
        contact_id: &str,
        kind: &str,
        since: Millis,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<TimelineEvent>>> + Send;
}

/// A contact's score: `points` as of `as_of`, and the thresholds it is at or above.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ScoreRow {
    pub points: f64,
    pub as_of: Millis,
    pub half_life: Option<i64>,
    pub above: Vec<String>,
}

/// The score a contact row shows: its points decayed to the moment of reading.
pub(crate) fn score_now(points: Option<f64>, as_of: Option<i64>, half_life: Option<i64>) -> f64 {
    match (points, as_of) {
        (Some(p), Some(at)) => {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(at);
            // Never grown back for an as_of in the future (an entry dated ahead).
            enlace_core::scoring::decay(p, (now - at).max(0), half_life)
        }
        _ => 0.0,
    }
}

/// A row of the suppression list: a decision a phone number sent itself.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Suppression {
    pub phone: String,
    pub purpose: String,
    pub channel: String,
    pub status: ConsentStatus,
    pub evidence: Evidence,
    pub at: Millis,
    pub op_key: Option<String>,
}

/// A phone number in E.164 (`+14155552671`) from the ways people write one
/// (`+1 (415) 555-2671`, `+44 (0)20 7946 0958`): it must start with `+` and the country code.
pub fn normalize_phone(raw: &str) -> std::result::Result<String, String> {
    let s = raw.trim();
    let expected = "write it in international form: a plus sign, the country code and the number, like +14155552671";
    if !s.starts_with('+') {
        return Err(format!("`{s}` is not a phone number in international form; {expected}"));
    }
    let digits = s.chars().filter(char::is_ascii_digit).count();
    let allowed = s[1..].chars().all(|c| c.is_ascii_digit() || matches!(c, ' ' | '-' | '(' | ')' | '.'));
    if !allowed || !(5..=17).contains(&digits) {
        return Err(format!("`{s}` is not a phone number; {expected}"));
    }
    match phonenumber::parse(None, s) {
        Ok(n) => Ok(n.format().mode(phonenumber::Mode::E164).to_string()),
        Err(e) => Err(format!("`{s}` is not a phone number ({e}); {expected}")),
    }
}

/// The `phone` column of a contact: its `phone` field in E.164, when it is a number in
/// international form.
pub(crate) fn phone_of(fields: &Map<String, Value>) -> Option<String> {
    fields.get("phone").and_then(Value::as_str).and_then(|p| normalize_phone(p).ok())
}

fn invalid(msg: impl Into<String>) -> StoreError {
    StoreError::Invalid(msg.into())
}

fn not_found(key: &ContactKey) -> StoreError {
    match key {
        ContactKey::Id(id) => StoreError::NotFound(format!("no contact with the id `{id}`")),
        ContactKey::Email(e) => StoreError::NotFound(format!("no contact with the email `{e}`")),
    }
}

/// The key with its email normalised (so that lookups ignore case).
pub(crate) fn normal_key(key: ContactKey) -> Result<ContactKey> {
    match key {
        ContactKey::Email(e) => Ok(ContactKey::Email(normalize_email(&e).map_err(invalid)?)),
        ContactKey::Id(id) if id.trim().is_empty() => Err(invalid("the contact id is empty")),
        ContactKey::Id(id) => Ok(ContactKey::Id(id.trim().to_string())),
    }
}

/// Merges `patch` into `fields` (a `null` removes the field); returns the names of the fields
/// that changed, in the patch's order.
pub(crate) fn merge_fields(fields: &mut Map<String, Value>, patch: &Map<String, Value>) -> Vec<String> {
    let mut changed = vec![];
    for (k, v) in patch {
        let differs = match v {
            Value::Null => fields.remove(k).is_some(),
            v if fields.get(k) == Some(v) => false,
            v => {
                fields.insert(k.clone(), v.clone());
                true
            }
        };
        if differs {
            changed.push(k.clone());
        }
    }
    changed
}

fn check_fields(patch: &Map<String, Value>) -> Result<()> {
    if let Some(k) = patch.keys().find(|k| k.trim().is_empty() || k.len() > 200) {
        return Err(invalid(format!("the field name `{k}` is empty or longer than 200 characters")));
    }
    Ok(())
}

fn check_size(c: &Contact) -> Result<()> {
    let n = serde_json::to_string(&c.fields).map(|s| s.len()).unwrap_or(0);
    if n > MAX_FIELDS_BYTES {
        return Err(invalid(format!(
            "the contact's fields would take {n} bytes, more than the {MAX_FIELDS_BYTES} allowed; keep large data elsewhere and store a link"
        )));
    }
    Ok(())
}

/// One change to publish: the trigger, its extra payload, and what makes its dedupe key.
struct Fire {
    trigger: ContactTrigger,
    tag: Option<String>,
    extra: Map<String, Value>,
}

/// A timeline row to write.
struct Pending {
    kind: String,
    data: Value,
    at: Millis,
    op_key: Option<String>,
}

struct Change<'a> {
    w: &'a ContactWrite,
    contact: Contact,
    created: bool,
    changed: bool,
    timeline: Vec<Pending>,
    fire: Vec<Fire>,
}

impl Change<'_> {
    fn log(&mut self, kind: &str, data: Value) {
        self.timeline.push(Pending { kind: kind.to_string(), data, at: self.w.now, op_key: None });
    }

    fn touch(&mut self) {
        self.changed = true;
        self.contact.version += 1;
        self.contact.updated_at = self.w.now.max(self.contact.updated_at);
    }
}

/// Applies one change, with its timeline rows and the runs it starts.
pub(crate) async fn apply<T: ContactTx>(t: &mut T, op: ContactOp, w: &ContactWrite) -> Result<ContactApplied> {
    let now = w.now;
    let mut consent = None;
    let mut note = None;
    let mut event = None;
    let mut activity = false;
    let mut ch = match op {
        ContactOp::Upsert { email, fields } => {
            let norm = normalize_email(&email).map_err(invalid)?;
            check_fields(&fields)?;
            let existing = t.contact(&ContactKey::Email(norm.clone()), true).await?;
            let existing = match existing {
                Some(c) => Some(c),
                None => {
                    let mut fresh = Contact {
                        id: new_id(),
                        email: norm.clone(),
                        email_original: email.trim().to_string(),
                        fields: Map::new(),
                        tags: vec![],
                        created_at: now,
                        updated_at: now,
                        version: 1,
                        score: 0.0,
                    };
                    merge_fields(&mut fresh.fields, &fields);
                    check_size(&fresh)?;
                    if t.insert_contact(&fresh).await? {
                        let data = json!({"email": fresh.email, "fields": fresh.fields});
                        let mut ch = Change { w, contact: fresh, created: true, changed: true, timeline: vec![], fire: vec![] };
                        ch.log("created", data);
                        ch.fire.push(Fire { trigger: ContactTrigger::ContactCreated, tag: None, extra: Map::new() });
                        carry_suppressions(t, &mut ch, None).await?;
                        return finish(t, ch, None, None, None, false).await;
                    }
                    // Another transaction created it meanwhile: update that one.
                    t.contact(&ContactKey::Email(norm.clone()), true).await?
                }
            };
            let contact = existing.ok_or_else(|| StoreError::Database(format!("the contact `{norm}` was neither inserted nor found")))?;
            let mut ch = Change { w, contact, created: false, changed: false, timeline: vec![], fire: vec![] };
            let before = phone_of(&ch.contact.fields);
            set_fields(&mut ch, &fields)?;
            carry_suppressions(t, &mut ch, before).await?;
            ch
        }
        ContactOp::SetFields { key, fields } => {
            check_fields(&fields)?;
            let contact = find(t, key).await?;
            let mut ch = Change { w, contact, created: false, changed: false, timeline: vec![], fire: vec![] };
            let before = phone_of(&ch.contact.fields);
            set_fields(&mut ch, &fields)?;
            carry_suppressions(t, &mut ch, before).await?;
            ch
        }
        ContactOp::AddTag { key, tag } => {
            let tag = normalize_tag(&tag).map_err(invalid)?;
            let contact = find(t, key).await?;
            let mut ch = Change { w, contact, created: false, changed: false, timeline: vec![], fire: vec![] };
            if t.insert_tag(&ch.contact.id, &tag, now).await? {
                ch.touch();
                ch.contact.tags.push(tag.clone());
                ch.contact.tags.sort();
                ch.log("tag_added", json!({"tag": tag}));
                let mut extra = Map::new();
                extra.insert("tag".into(), json!(tag));
                ch.fire.push(Fire { trigger: ContactTrigger::TagAdded, tag: Some(tag), extra });
            }
            ch
        }
        ContactOp::RemoveTag { key, tag } => {
            let tag = normalize_tag(&tag).map_err(invalid)?;
            let contact = find(t, key).await?;
            let mut ch = Change { w, contact, created: false, changed: false, timeline: vec![], fire: vec![] };
            if t.delete_tag(&ch.contact.id, &tag).await? {
                ch.touch();
                ch.contact.tags.retain(|x| *x != tag);
                ch.log("tag_removed", json!({"tag": tag}));
            }
            ch
        }
        ContactOp::RecordConsent { key, consent: nc } => {
            check_purpose(&nc.purpose).map_err(invalid)?;
            check_channel(&nc.channel).map_err(invalid)?;
            if nc.evidence.source.trim().is_empty() {
                return Err(invalid("the consent's evidence needs a `source`: where the contact decided"));
            }
            let contact = find(t, key).await?;
            let mut ch = Change { w, contact, created: false, changed: false, timeline: vec![], fire: vec![] };
            let seen = match &w.ctx.op_key {
                Some(k) => t.consent_by_op(&ch.contact.id, k).await?,
                None => None,
            };
            match seen {
                Some(c) => consent = Some(c),
                None => {
                    let mut evidence = nc.evidence;
                    if evidence.run_id.is_none() {
                        evidence.run_id = w.ctx.run_id.clone();
                    }
                    let c = Consent { id: new_id(), purpose: nc.purpose, channel: nc.channel, status: nc.status, evidence, at: now };
                    t.insert_consent(&ch.contact.id, &c, w.ctx.op_key.as_deref()).await?;
                    if c.channel == "ads" && c.status == ConsentStatus::Withdrawn {
                        // Out of every ad audience it was added to, in this transaction.
                        crate::gdpr::queue_removals(t, &ch.contact, "consent_withdrawn", now).await?;
                    }
                    ch.touch();
                    ch.log(
                        "consent_recorded",
                        json!({"consent_id": c.id, "purpose": c.purpose, "channel": c.channel, "status": c.status, "source": c.evidence.source}),
                    );
                    consent = Some(c);
                }
            }
            ch
        }
        ContactOp::AddNote { key, body, author } => {
            if body.trim().is_empty() {
                return Err(invalid("the note is empty"));
            }
            if body.chars().count() > MAX_NOTE_CHARS {
                return Err(invalid(format!("the note is longer than {MAX_NOTE_CHARS} characters")));
            }
            let contact = find(t, key).await?;
            let mut ch = Change { w, contact, created: false, changed: false, timeline: vec![], fire: vec![] };
            let seen = match &w.ctx.op_key {
                Some(k) => t.note_by_op(&ch.contact.id, k).await?,
                None => None,
            };
            match seen {
                Some(n) => note = Some(n),
                None => {
                    let n = Note { id: new_id(), body, author, at: now };
                    t.insert_note(&ch.contact.id, &n, w.ctx.op_key.as_deref()).await?;
                    ch.touch();
                    ch.log("note_added", json!({"note_id": n.id, "author": n.author}));
                    note = Some(n);
                }
            }
            ch
        }
        ContactOp::RecordEvent { key, kind, data, at } => {
            check_kind(&kind).map_err(invalid)?;
            let data = match data {
                Value::Null => Value::Object(Map::new()),
                d @ Value::Object(_) => d,
                _ => return Err(invalid("the event's `data` must be a JSON object (`{\"url\": ...}`)")),
            };
            let n = data.to_string().len();
            if n > MAX_EVENT_DATA_BYTES {
                return Err(invalid(format!("the event's data takes {n} bytes, more than the {MAX_EVENT_DATA_BYTES} allowed")));
            }
            let contact = find(t, key).await?;
            let mut ch = Change { w, contact, created: false, changed: false, timeline: vec![], fire: vec![] };
            let seen = match &w.ctx.op_key {
                Some(k) => t.timeline_by_op(&ch.contact.id, k).await?,
                None => None,
            };
            match seen {
                Some(e) => event = Some(e),
                None => {
                    // An activity is not a change of the contact's record: its version stays.
                    activity = true;
                    ch.timeline.push(Pending { kind, data, at: at.unwrap_or(now), op_key: w.ctx.op_key.clone() });
                }
            }
            ch
        }
    };
    if ch.changed && !ch.created {
        t.update_contact(&ch.contact).await?;
    }
    ch.changed |= ch.created || activity;
    finish(t, ch, consent, note, event, activity).await
}

/// A contact that gets a phone number (created with one, or its `phone` changed) takes on
/// the withdrawals that number sent before (the suppression list), unless its own latest
/// decision for that purpose and channel is already a withdrawal: a number that replied STOP
/// gets no SMS because it was given to a contact later.
async fn carry_suppressions<T: ContactTx>(t: &mut T, ch: &mut Change<'_>, before: Option<String>) -> Result<()> {
    let Some(phone) = phone_of(&ch.contact.fields) else { return Ok(()) };
    if before.as_deref() == Some(phone.as_str()) {
        return Ok(());
    }
    for s in t.suppressions(&phone).await? {
        if s.status != ConsentStatus::Withdrawn {
            continue;
        }
        let current = t.latest_consent(&ch.contact.id, &s.purpose, &s.channel).await?;
        if current.is_some_and(|c| c.status == ConsentStatus::Withdrawn) {
            continue;
        }
        let mut evidence = s.evidence.clone();
        evidence.details.insert("phone".into(), json!(phone));
        evidence.details.insert("carried_from".into(), json!("phone_suppressions"));
        let c = Consent { id: new_id(), purpose: s.purpose, channel: s.channel, status: ConsentStatus::Withdrawn, evidence, at: ch.w.now };
        t.insert_consent(&ch.contact.id, &c, None).await?;
        if !ch.created {
            ch.touch();
        }
        ch.log(
            "consent_recorded",
            json!({"consent_id": c.id, "purpose": c.purpose, "channel": c.channel, "status": c.status, "source": c.evidence.source, "phone": phone}),
        );
    }
    Ok(())
}

/// Records a decision a phone number sent itself: on every contact with that phone (each a
/// change of its own, with its timeline row), and in the suppression list. A retried call
/// (the same `op_key`) changes nothing.
pub(crate) async fn apply_phone<T: ContactTx>(
    t: &mut T,
    phone: &str,
    nc: NewConsent,
    w: &ContactWrite,
) -> Result<(PhoneConsentOutcome, Vec<Accepted>)> {
    let phone = normalize_phone(phone).map_err(invalid)?;
    check_purpose(&nc.purpose).map_err(invalid)?;
    check_channel(&nc.channel).map_err(invalid)?;
    if nc.evidence.source.trim().is_empty() {
        return Err(invalid("the consent's evidence needs a `source`: where the contact decided"));
    }
    let ids = t.contacts_by_phone(&phone, true).await?;
    let mut started = vec![];
    for id in &ids {
        let applied = Box::pin(apply(t, ContactOp::RecordConsent { key: ContactKey::Id(id.clone()), consent: nc.clone() }, w)).await?;
        started.extend(applied.started);
    }
    let seen = match &w.ctx.op_key {
        Some(k) => t.suppression_seen(&phone, k).await?,
        None => false,
    };
    if !seen {
        let mut evidence = nc.evidence;
        if evidence.run_id.is_none() {
            evidence.run_id = w.ctx.run_id.clone();
        }
        let row = Suppression {
            phone: phone.clone(),
            purpose: nc.purpose,
            channel: nc.channel,
            status: nc.status,
            evidence,
            at: w.now,
            op_key: w.ctx.op_key.clone(),
        };
        t.put_suppression(&row).await?;
    }
    Ok((PhoneConsentOutcome { phone, contacts: ids }, started))
}

/// The latest decision about a number: the suppression list's and that of every contact
/// with the number, the newest winning (a withdrawal on a tie).
pub(crate) async fn phone_decision<T: ContactTx>(t: &mut T, phone: &str, purpose: &str, channel: &str) -> Result<Option<PhoneDecision>> {
    let phone = normalize_phone(phone).map_err(invalid)?;
    let ids = t.contacts_by_phone(&phone, false).await?;
    Ok(phone_decisions(t, &phone, &ids, &[purpose], channel).await?.pop().flatten())
}

/// [`phone_decision`] for several purposes at once, for a normalised number whose contacts
/// (`ids`) the caller has read: three reads whatever the number of purposes.
pub(crate) async fn phone_decisions<T: ContactTx>(
    t: &mut T,
    phone: &str,
    ids: &[String],
    purposes: &[&str],
    channel: &str,
) -> Result<Vec<Option<PhoneDecision>>> {
    let mut all: Vec<Vec<PhoneDecision>> = purposes.iter().map(|_| vec![]).collect();
    for s in t.suppressions(phone).await? {
        for (i, purpose) in purposes.iter().enumerate() {
            if s.purpose == *purpose && s.channel == channel {
                let d =
                    PhoneDecision { phone: phone.to_string(), status: s.status, evidence: s.evidence.clone(), at: s.at, contact_id: None };
                all[i].push(d);
            }
        }
    }
    for id in ids {
        for (i, c) in t.latest_consents(id, purposes, channel).await?.into_iter().enumerate() {
            if let Some(c) = c {
                let d = PhoneDecision {
                    phone: phone.to_string(),
                    status: c.status,
                    evidence: c.evidence,
                    at: c.at,
                    contact_id: Some(id.clone()),
                };
                all[i].push(d);
            }
        }
    }
    Ok(all.into_iter().map(|ds| ds.into_iter().max_by_key(|d| (d.at, d.status == ConsentStatus::Withdrawn))).collect())
}

/// The latest of `rows` (newest first) for each purpose, in the purposes' order.
pub(crate) fn latest_per_purpose(rows: Vec<Consent>, purposes: &[&str]) -> Vec<Option<Consent>> {
    let mut out: Vec<Option<Consent>> = purposes.iter().map(|_| None).collect();
    for c in rows {
        for (i, p) in purposes.iter().enumerate() {
            if out[i].is_none() && c.purpose == *p {
                out[i] = Some(c.clone());
            }
        }
    }
    out
}

/// The contact, its row locked for the change.
async fn find<T: ContactTx>(t: &mut T, key: ContactKey) -> Result<Contact> {
    let key = normal_key(key)?;
    t.contact(&key, true).await?.ok_or_else(|| not_found(&key))
}

fn set_fields(ch: &mut Change<'_>, patch: &Map<String, Value>) -> Result<()> {
    let changed = merge_fields(&mut ch.contact.fields, patch);
    if changed.is_empty() {
        return Ok(());
    }
    check_size(&ch.contact)?;
    ch.touch();
    let set: Map<String, Value> = changed.iter().map(|k| (k.clone(), ch.contact.fields.get(k).cloned().unwrap_or(Value::Null))).collect();
    ch.log("fields_updated", json!({"changed": set}));
    let mut extra = Map::new();
    extra.insert("changed".into(), json!(changed));
    ch.fire.push(Fire { trigger: ContactTrigger::ContactUpdated, tag: None, extra });
    Ok(())
}

/// Writes the timeline rows and starts the subscribed recipes.
async fn finish<T: ContactTx>(
    t: &mut T,
    mut ch: Change<'_>,
    consent: Option<Consent>,
    note: Option<Note>,
    mut event: Option<TimelineEvent>,
    recording: bool,
) -> Result<ContactApplied> {
    let w = ch.w;
    let pending = std::mem::take(&mut ch.timeline);
    let mut rows = Vec::with_capacity(pending.len());
    let mut started = vec![];
    let mut scoring = None;
    for p in pending {
        rows.extend(record_timeline(t, &mut ch, p, &mut scoring, &mut started).await?);
    }
    // The contact's journeys waiting for these kinds look at their timeline now.
    let mut woken = 0;
    for (i, e) in rows.iter().enumerate() {
        if !rows[..i].iter().any(|r| r.kind == e.kind) {
            woken += t.wake_runs(&ch.contact.id, &e.kind, w.now).await?;
        }
    }
    if recording {
        event = rows.first().cloned();
    }
    // The same for every attempt of one call: a retried step starts nothing twice.
    let origin = w.ctx.op_key.clone().or_else(|| rows.first().map(|e| e.id.clone())).unwrap_or_else(new_id);
    let mut fire = std::mem::take(&mut ch.fire);
    let mut seen_kinds: Vec<&str> = vec![];
    for e in &rows {
        let n = seen_kinds.iter().filter(|k| **k == e.kind).count();
        seen_kinds.push(&e.kind);
        let mut extra = Map::new();
        extra.insert("event".into(), json!({"id": e.id, "kind": e.kind, "data": e.data, "at": e.at}));
        // Dedupe key: the kind and its rank in this change (row ids differ between attempts).
        fire.push(Fire { trigger: ContactTrigger::Event, tag: Some(format!("{}:{n}", e.kind)), extra });
    }
    for f in &fire {
        let (narrow, dedupe) = match f.trigger {
            ContactTrigger::Event => {
                let key = f.tag.clone().unwrap_or_default();
                (key.rsplit_once(':').map(|(k, _)| k.to_string()), format!("contacts:{origin}:event:{key}"))
            }
            _ => (f.tag.clone(), format!("contacts:{origin}:{}", f.trigger.id())),
        };
        for s in w.subs.iter().filter(|s| s.trigger == f.trigger) {
            let wanted = match f.trigger {
                ContactTrigger::Event => s.kind.is_none() || s.kind == narrow,
                _ => s.tag.is_none() || s.tag == narrow,
            };
            if !wanted {
                continue;
            }
            let mut payload = Map::new();
            payload.insert("trigger".into(), json!(f.trigger.id()));
            payload.insert("contact".into(), serde_json::to_value(&ch.contact).unwrap_or(Value::Null));
            payload.extend(f.extra.clone());
            if let Some(r) = &w.ctx.run_id {
                payload.insert("run_id".into(), json!(r));
            }
            let e = NewEvent {
                recipe_id: s.recipe_id.clone(),
                recipe_version: s.recipe_version,
                source: "contacts".into(),
                dedupe_key: Some(dedupe.clone()),
                payload: Value::Object(payload).to_string(),
                owner: None,
                lease_ms: 0,
                now: w.now,
            };
            if let Some(a) = t.insert_run(&e).await? {
                started.push(a);
            }
        }
    }
    Ok(ContactApplied {
        outcome: ContactOutcome { contact: ch.contact, created: ch.created, changed: ch.changed, consent, note, event },
        started,
        woken,
    })
}

/// Writes one timeline row: THE function every change goes through to the timeline (a
/// hook for anything that must follow a contact's activity). It scores the row (the score
/// kept in the same transaction) and writes a [`SCORE_THRESHOLD`] row for every threshold
/// the score crosses upward, starting that threshold's `enlace.event` recipes. Returns the
/// rows written (the row, then its thresholds'). `scoring` caches the rules for the change.
async fn record_timeline<T: ContactTx>(
    t: &mut T,
    ch: &mut Change<'_>,
    p: Pending,
    scoring: &mut Option<Option<Scoring>>,
    started: &mut Vec<Accepted>,
) -> Result<Vec<TimelineEvent>> {
    let w = ch.w;
    let e = TimelineEvent { id: new_id(), kind: p.kind, data: p.data, run_id: w.ctx.run_id.clone(), at: p.at };
    t.insert_timeline(&ch.contact.id, &e, p.op_key.as_deref()).await?;
    let mut rows = vec![];
    if e.kind != SCORE_THRESHOLD {
        if scoring.is_none() {
            // Rules that no longer pass the checks (a newer version wrote them) score nothing.
            *scoring = Some(t.scoring().await?.and_then(|r| r.check().ok()));
        }
        if let Some(Some(rules)) = scoring.as_ref() {
            for (name, event_name, score) in score_entry(t, ch, rules, &e).await? {
                let data = json!({"threshold": name, "event": event_name, "score": score, "because": {"id": e.id, "kind": e.kind}});
                let row = TimelineEvent { id: new_id(), kind: SCORE_THRESHOLD.into(), data, run_id: w.ctx.run_id.clone(), at: w.now };
                t.insert_timeline(&ch.contact.id, &row, None).await?;
                let payload = json!({"contact": ch.contact, "score": score, "threshold": name, "event": event_name, "at": w.now});
                for s in w.events.iter().filter(|s| s.name == event_name) {
                    let ev = NewEvent {
                        recipe_id: s.recipe_id.clone(),
                        recipe_version: s.recipe_version,
                        source: "scoring".into(),
                        dedupe_key: Some(format!("score:{}", row.id)),
                        payload: payload.to_string(),
                        owner: None,
                        lease_ms: 0,
                        now: w.now,
                    };
                    if let Some(a) = t.insert_run(&ev).await? {
                        started.push(a);
                    }
                }
                rows.push(row);
            }
        }
    }
    rows.insert(0, e);
    Ok(rows)
}

/// Adds a timeline entry's points to the contact's score; the thresholds crossed upward
/// (name, event, score). A threshold the score had fallen below (by decay or negative
/// points) before this entry is armed again.
async fn score_entry<T: ContactTx>(
    t: &mut T,
    ch: &mut Change<'_>,
    rules: &Scoring,
    e: &TimelineEvent,
) -> Result<Vec<(String, String, f64)>> {
    let points = rules.points(&e.kind, &e.data);
    if points == 0.0 {
        return Ok(vec![]);
    }
    let now = ch.w.now;
    let h = rules.half_life_ms;
    let row = t.score(&ch.contact.id).await?.unwrap_or(ScoreRow { points: 0.0, as_of: e.at, half_life: h, above: vec![] });
    let before = enlace_core::scoring::decay(row.points, now - row.as_of, h);
    let mut above: Vec<String> =
        row.above.into_iter().filter(|n| rules.thresholds.iter().any(|th| th.name == *n && before >= th.score)).collect();
    let (p, as_of) = enlace_core::scoring::add(row.points, row.as_of, points, e.at, h);
    let after = enlace_core::scoring::decay(p, now - as_of, h);
    let mut crossed = vec![];
    for th in &rules.thresholds {
        if after >= th.score && !above.contains(&th.name) {
            above.push(th.name.clone());
            crossed.push((th.name.clone(), th.event.clone(), after));
        }
    }
    t.put_score(&ch.contact.id, &ScoreRow { points: p, as_of, half_life: h, above }, now).await?;
    ch.contact.score = after;
    Ok(crossed)
}

/// A contact with its consents, notes and latest timeline.
pub(crate) async fn detail<T: ContactTx>(t: &mut T, key: ContactKey, timeline_limit: i64) -> Result<Option<ContactDetail>> {
    let key = normal_key(key)?;
    let Some(contact) = t.contact(&key, false).await? else { return Ok(None) };
    let consents = t.current_consents(&contact.id).await?;
    let notes = t.notes(&contact.id).await?;
    let timeline = if timeline_limit > 0 {
        t.timeline(&contact.id, &TimelineQuery { limit: timeline_limit, ..Default::default() }).await?
    } else {
        vec![]
    };
    Ok(Some(ContactDetail { contact, consents, notes, timeline }))
}

/// Parses the `tags` column (a JSON array of text) of a contact query.
pub(crate) fn tags_of(text: Option<String>) -> Vec<String> {
    let mut tags: Vec<String> =
        text.and_then(|t| serde_json::from_str::<Vec<Option<String>>>(&t).ok()).unwrap_or_default().into_iter().flatten().collect();
    tags.sort();
    tags
}

pub(crate) fn fields_of(text: &str) -> Map<String, Value> {
    match serde_json::from_str(text) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

impl Store {
    /// Makes a change to the contact store, atomically with its timeline rows and the runs
    /// of the subscribed recipes it matches. `Invalid` for a bad email, tag, purpose or
    /// channel; `NotFound` when the contact does not exist (except for an upsert).
    pub async fn apply_contact(&self, op: ContactOp, w: ContactWrite) -> Result<ContactApplied> {
        match &self.backend {
            Backend::Sqlite(b) => b.apply_contact(op, w).await,
            Backend::Postgres(b) => b.apply_contact(op, w).await,
        }
    }

    /// A contact by id or email, with its tags.
    pub async fn contact(&self, key: ContactKey) -> Result<Option<Contact>> {
        // One statement: the runner reads the run's contact for every run segment.
        let key = normal_key(key)?;
        match &self.backend {
            Backend::Sqlite(b) => b.contact(&key).await,
            Backend::Postgres(b) => b.contact(&key).await,
        }
    }

    /// A contact with its tags, current consents, notes and the latest
    /// [`DETAIL_TIMELINE`] timeline entries (newest first).
    pub async fn contact_detail(&self, key: ContactKey) -> Result<Option<ContactDetail>> {
        match &self.backend {
            Backend::Sqlite(b) => b.contact_detail(key, DETAIL_TIMELINE).await,
            Backend::Postgres(b) => b.contact_detail(key, DETAIL_TIMELINE).await,
        }
    }

    /// Contacts in creation order (oldest first), filtered.
    pub async fn list_contacts(&self, f: &ContactFilter) -> Result<Vec<Contact>> {
        let mut f = f.clone();
        if let Some(e) = &f.email {
            f.email = Some(normalize_email(e).map_err(invalid)?);
        }
        match &self.backend {
            Backend::Sqlite(b) => b.list_contacts(&f).await,
            Backend::Postgres(b) => b.list_contacts(&f).await,
        }
    }

    /// Records a decision a phone number sent itself (an SMS reply STOP or START): on every
    /// contact whose phone it is and in the suppression list, in one transaction, with the
    /// runs it starts. `Invalid` for a number that is not one (it must be in international
    /// form), a bad purpose or channel.
    pub async fn apply_phone_consent(
        &self,
        phone: &str,
        consent: NewConsent,
        w: ContactWrite,
    ) -> Result<(PhoneConsentOutcome, Vec<Accepted>)> {
        match &self.backend {
            Backend::Sqlite(b) => b.apply_phone_consent(phone, consent, w).await,
            Backend::Postgres(b) => b.apply_phone_consent(phone, consent, w).await,
        }
    }

    /// The latest decision about a phone number for a purpose and channel, from its
    /// contacts and the suppression list (the newest wins).
    pub async fn phone_consent(&self, phone: &str, purpose: &str, channel: &str) -> Result<Option<PhoneDecision>> {
        let found = match &self.backend {
            Backend::Sqlite(b) => b.phone_consent(phone, purpose, channel).await,
            Backend::Postgres(b) => b.phone_consent(phone, purpose, channel).await,
        }?;
        match found {
            Some(d) => Ok(Some(d)),
            // A STOP whose contact was erased still stands (GDPR keeps it hashed).
            None => self.erased_phone_decision(phone, purpose, channel).await,
        }
    }

    /// A contact's timeline, newest first: the entries of these kinds (all when empty) at or
    /// after `since`, at most `limit` (1 to 500). For templates and journeys: a contact's
    /// recent activity.
    pub async fn contact_timeline(
        &self,
        contact_id: &str,
        kinds: &[String],
        since: Option<Millis>,
        limit: i64,
    ) -> Result<Vec<TimelineEvent>> {
        self.timeline_page(contact_id, &TimelineQuery { kinds: kinds.to_vec(), since, limit, ..Default::default() }).await
    }

    /// A page of a contact's timeline, newest first (see [`TimelineQuery`]). An unknown
    /// contact has an empty timeline.
    pub async fn timeline_page(&self, contact_id: &str, q: &TimelineQuery) -> Result<Vec<TimelineEvent>> {
        for k in &q.kinds {
            check_kind(k).map_err(invalid)?;
        }
        match &self.backend {
            Backend::Sqlite(b) => b.timeline_page(contact_id, q).await,
            Backend::Postgres(b) => b.timeline_page(contact_id, q).await,
        }
    }

    /// The installation's lead scoring rules (empty when never set).
    pub async fn scoring_rules(&self) -> Result<ScoringRules> {
        match &self.backend {
            Backend::Sqlite(b) => b.scoring_rules().await,
            Backend::Postgres(b) => b.scoring_rules().await,
        }
        .map(Option::unwrap_or_default)
    }

    /// Replaces the lead scoring rules, checked first (`Invalid` lists every problem with
    /// its path). Scores already kept stay; new entries are scored by the new rules.
    pub async fn set_scoring_rules(&self, rules: &ScoringRules, now: Millis) -> Result<()> {
        if let Err(problems) = rules.check() {
            let text: Vec<String> = problems.iter().map(|p| format!("{}: {}", p.path, p.message)).collect();
            return Err(invalid(text.join("; ")));
        }
        let text = serde_json::to_string(rules).map_err(|e| StoreError::Database(e.to_string()))?;
        match &self.backend {
            Backend::Sqlite(b) => b.set_scoring_rules(text, now).await,
            Backend::Postgres(b) => b.set_scoring_rules(text, now).await,
        }
    }

    /// Erases a contact and everything stored about it, as [`Store::erase`] does (recorded
    /// as erased by `store`, now). `false` when there is no such contact.
    pub async fn erase_contact(&self, id: &str) -> Result<bool> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        match self.erase(ContactKey::Id(id.to_string()), "store", now).await {
            Ok(_) => Ok(true),
            Err(StoreError::NotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_merge_and_null_removes() {
        let mut f = Map::new();
        f.insert("a".into(), json!(1));
        f.insert("b".into(), json!("x"));
        let patch = json!({"a": 1, "b": null, "c": [1], "d": null}).as_object().unwrap().clone();
        assert_eq!(merge_fields(&mut f, &patch), vec!["b".to_string(), "c".to_string()]);
        assert_eq!(Value::Object(f), json!({"a": 1, "c": [1]}));
    }
}
