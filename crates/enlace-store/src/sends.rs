//! The send ledger and the send policy's settings (tables in `migrations/*/…_send_policy.sql`).
//!
//! One ledger row per message and recipient, keyed by the message (`ORIGINAL_RUN:STEP_KEY`)
//! and the recipient, so a retry, a restart or a replay finds the row of the first attempt.
//! [`Store::reserve_send`] is one transaction: it reads the facts (the previous rows of the
//! message, each recipient's contact, consent, suppression and earlier sends in the cap
//! window, the recipe's sends in the last hour and day), hands them to the runner's decision
//! (the store decides nothing), and writes the decision's rows and timeline entries. On
//! PostgreSQL the transaction first takes an advisory lock per recipient (its contact, or its
//! address) and per recipe, in one order, so two runs cannot both pass a full cap; SQLite's
//! single writer serialises it anyway. [`Store::settle_send`] records the call's outcome.
//!
//! The logic is written once, here, over [`SendTx`] plus the contact store's [`ContactTx`].

use enlace_core::contacts::{Consent, ConsentStatus, Contact, ContactKey, TimelineEvent};
use enlace_core::policy::{ALL_PURPOSES, PastSend, PolicySettings, RecipientKind, SendLimits};
use serde::Serialize;
use serde_json::{Value, json};

use crate::contacts::{ContactTx, normalize_phone, phone_decisions};
use crate::{Backend, Millis, Result, Store, StoreError, new_id};

/// The `held_connection` of a run whose message waits for approval: `approval:<recipe id>`
/// (connection ids are slugs, so it names no connection).
pub fn approval_hold(recipe_id: &str) -> String {
    format!("approval:{recipe_id}")
}

/// Where a message stands (the ledger's `status`).
pub mod status {
    /// Let out: the call is being made (or was interrupted: maybe sent).
    pub const RESERVED: &str = "reserved";
    pub const SENT: &str = "sent";
    pub const DEFERRED: &str = "deferred";
    pub const BLOCKED: &str = "blocked";
    /// Above the recipe's limits: waits for a person.
    pub const HELD: &str = "held";
    pub const APPROVED: &str = "approved";
    pub const REJECTED: &str = "rejected";
    /// The call failed without delivering: the slot is free again.
    pub const RELEASED: &str = "released";
    /// Held, then the recipe was killed.
    pub const CANCELLED: &str = "cancelled";
}

/// One row of the send ledger.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LedgerRow {
    pub id: String,
    /// The message: the original run's id and the step key (a replay keeps it).
    pub message_key: String,
    /// The recipient, normalised (an email lowercased, a number in E.164).
    pub recipient: String,
    pub contact_id: Option<String>,
    pub recipe_id: String,
    /// The run that last decided about it.
    pub run_id: String,
    pub step_key: String,
    pub channel: String,
    pub purpose: String,
    pub transactional: bool,
    /// reserved, sent, deferred, blocked, held, approved, rejected, released, cancelled.
    pub status: String,
    /// Why it is deferred, blocked or held, in plain words.
    pub reason: Option<String>,
    /// Deferred until (Unix milliseconds).
    pub until: Option<Millis>,
    /// When it was let out (Unix milliseconds): what the caps count.
    pub sent_at: Option<Millis>,
    pub decided_at: Millis,
    /// The action's output, once sent (a replay gives it back instead of sending again).
    #[serde(skip)]
    pub output: Option<Value>,
}

/// A message about to leave.
#[derive(Debug, Clone)]
pub struct SendRequest {
    pub message_key: String,
    pub recipe_id: String,
    pub run_id: String,
    pub step_key: String,
    pub channel: String,
    pub purpose: String,
    pub transactional: bool,
    pub kind: RecipientKind,
    /// As the action's input names them (see `Reach::recipients`).
    pub recipients: Vec<String>,
    /// How far back earlier sends count (the longest cap window).
    pub window_ms: i64,
    /// The recipe's blast-radius limits: the recipe's sends are counted only up to what
    /// they need (nothing without limits), so a recipe that sent a million messages today
    /// does not read a million ledger rows for its next one.
    pub limits: SendLimits,
    pub now: Millis,
}

/// What the store knows about one recipient, read in the reservation's transaction.
#[derive(Debug, Clone)]
pub struct RecipientFacts {
    /// Normalised.
    pub address: String,
    pub contact: Option<Contact>,
    /// The latest decision for the message's purpose on its channel.
    pub consent: Option<Consent>,
    /// Why the channel is suppressed for this recipient (STOP, purpose `all` withdrawn).
    pub suppressed: Option<String>,
    /// Earlier messages that count toward the caps (not transactional, let out within the
    /// window), on every channel.
    pub sent: Vec<PastSend>,
}

/// Everything a decision reads.
#[derive(Debug, Clone)]
pub struct SendFacts {
    pub recipients: Vec<RecipientFacts>,
    /// The message's rows from earlier attempts (empty the first time).
    pub previous: Vec<LedgerRow>,
    /// The recipe's messages let out in the last hour and the last day, counted up to one
    /// above the request's limit (0 without a limit).
    pub recipe_last_hour: i64,
    pub recipe_last_day: i64,
}

/// What to write for a message: one row per recipient with this status, and a timeline
/// entry of `timeline` kind for each recipient that is a contact.
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerWrite {
    pub status: &'static str,
    pub reason: Option<String>,
    pub until: Option<Millis>,
    pub timeline: Option<&'static str>,
}

/// The runner's decision over the facts: `None` writes nothing.
pub type Decide = Box<dyn FnOnce(&SendFacts) -> Option<LedgerWrite> + Send>;

/// The statements the ledger needs, per backend, on one connection in a transaction.
pub(crate) trait SendTx: ContactTx {
    /// Serialises reservations on these keys until the transaction ends (PostgreSQL):
    /// whether it took locks. `false` where nothing else writes meanwhile (SQLite's one
    /// writer), so what was read before is what a lock holder would read.
    fn lock_keys(&mut self, keys: &[String]) -> impl Future<Output = Result<bool>> + Send;
    fn message_rows(&mut self, message_key: &str) -> impl Future<Output = Result<Vec<LedgerRow>>> + Send;
    /// Sends let out to this contact (or, without one, this address) since `since`, other
    /// messages than `except`, not transactional.
    fn past_sends(
        &mut self,
        contact_id: Option<&str>,
        address: &str,
        since: Millis,
        except: &str,
    ) -> impl Future<Output = Result<Vec<PastSend>>> + Send;
    /// The recipe's sends let out since `hour` and since `day`, each counted up to its
    /// cap (a cap of 0 reads nothing), in one read.
    fn recipe_sends(&mut self, recipe_id: &str, hour: (Millis, i64), day: (Millis, i64))
    -> impl Future<Output = Result<(i64, i64)>> + Send;
    /// Inserts the row, or updates the row of its message and recipient.
    fn put_row(&mut self, row: &LedgerRow) -> impl Future<Output = Result<()>> + Send;
}

fn describe(c: &Consent) -> String {
    let when = chrono::DateTime::from_timestamp_millis(c.evidence.recorded_at.max(c.at))
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_default();
    match &c.evidence.text {
        Some(t) => format!("recorded by `{}` at {when}, wording: \"{t}\"", c.evidence.source),
        None => format!("recorded by `{}` at {when}", c.evidence.source),
    }
}

async fn facts_of<T: SendTx>(t: &mut T, r: &SendRequest, address: &str) -> Result<RecipientFacts> {
    let mut f = RecipientFacts { address: address.to_string(), contact: None, consent: None, suppressed: None, sent: vec![] };
    match r.kind {
        RecipientKind::Phone => {
            let Ok(phone) = normalize_phone(address) else { return Ok(f) };
            f.address = phone.clone();
            let ids = t.contacts_by_phone(&phone, false).await?;
            if let Some(id) = ids.first() {
                f.contact = t.contact(&ContactKey::Id(id.clone()), false).await?;
            }
            let purposes = [ALL_PURPOSES, enlace_core::policy::DEFAULT_PURPOSE, r.purpose.as_str()];
            let mut decisions = phone_decisions(t, &phone, &ids, &purposes, &r.channel).await?;
            let this = decisions.pop().flatten();
            // A STOP (or any decision the number sent itself) suppresses the channel.
            for (purpose, d) in [ALL_PURPOSES, enlace_core::policy::DEFAULT_PURPOSE].into_iter().zip(decisions) {
                if let Some(d) = d
                    && d.status == ConsentStatus::Withdrawn
                    && (purpose == ALL_PURPOSES || d.contact_id.is_none() || d.evidence.source.contains("inbound"))
                {
                    let body = d.evidence.details.get("body").and_then(Value::as_str).unwrap_or("").trim().to_string();
                    f.suppressed = Some(if body.is_empty() {
                        format!("the number opted out (recorded by `{}`)", d.evidence.source)
                    } else {
                        format!("the number replied `{body}` (recorded by `{}`)", d.evidence.source)
                    });
                    break;
                }
            }
            if let Some(d) = this {
                f.consent = Some(Consent {
                    id: String::new(),
                    purpose: r.purpose.clone(),
                    channel: r.channel.clone(),
                    status: d.status,
                    evidence: d.evidence,
                    at: d.at,
                });
            }
        }
        RecipientKind::Email | RecipientKind::ContactId => {
            let key = match r.kind {
                RecipientKind::Email => {
                    f.address = address.trim().to_lowercase();
                    ContactKey::Email(f.address.clone())
                }
                _ => ContactKey::Id(address.to_string()),
            };
            f.contact = t.contact(&key, false).await?;
            if let Some(c) = &f.contact {
                let mut latest = t.latest_consents(&c.id, &[ALL_PURPOSES, r.purpose.as_str()], &r.channel).await?;
                f.consent = latest.pop().flatten();
                if let Some(all) = latest.pop().flatten()
                    && all.status == ConsentStatus::Withdrawn
                {
                    f.suppressed = Some(format!("`all` withdrawn on {} ({})", r.channel, describe(&all)));
                }
            }
        }
    }
    let since = r.now - r.window_ms;
    f.sent = t.past_sends(f.contact.as_ref().map(|c| c.id.as_str()), &f.address, since, &r.message_key).await?;
    Ok(f)
}

pub(crate) async fn reserve<T: SendTx>(t: &mut T, r: SendRequest, decide: Decide) -> Result<(SendFacts, Option<LedgerWrite>)> {
    let mut addresses: Vec<String> = vec![];
    let mut recipients = vec![];
    // Read each recipient once, then lock in one order: the recipe, then the people.
    for a in &r.recipients {
        if addresses.contains(a) {
            continue;
        }
        addresses.push(a.clone());
    }
    let mut keys: Vec<String> = vec![format!("recipe:{}", r.recipe_id)];
    let mut first = Vec::with_capacity(addresses.len());
    for a in &addresses {
        let f = facts_of(t, &r, a).await?;
        keys.push(match &f.contact {
            Some(c) => format!("contact:{}", c.id),
            None => format!("address:{}", f.address),
        });
        first.push(f);
    }
    keys[1..].sort();
    keys.dedup();
    if t.lock_keys(&keys).await? {
        // Read again under the locks: what counts is what the lock holder sees.
        for a in &addresses {
            recipients.push(facts_of(t, &r, a).await?);
        }
    } else {
        recipients = first;
    }
    let previous = t.message_rows(&r.message_key).await?;
    // One above a limit is enough to know it is reached.
    let cap = |l: Option<u32>| l.map_or(0, |l| i64::from(l) + 1);
    let (hour_cap, day_cap) = (cap(r.limits.sends_per_hour), cap(r.limits.sends_per_day));
    let (recipe_last_hour, recipe_last_day) = if hour_cap == 0 && day_cap == 0 {
        (0, 0)
    } else {
        t.recipe_sends(&r.recipe_id, (r.now - 3_600_000, hour_cap), (r.now - 86_400_000, day_cap)).await?
    };
    let facts = SendFacts { recipients, previous, recipe_last_hour, recipe_last_day };
    let write = decide(&facts);
    if let Some(w) = &write {
        for f in &facts.recipients {
            let prev = facts.previous.iter().find(|p| p.recipient == f.address);
            let row = LedgerRow {
                id: prev.map(|p| p.id.clone()).unwrap_or_else(new_id),
                message_key: r.message_key.clone(),
                recipient: f.address.clone(),
                contact_id: f.contact.as_ref().map(|c| c.id.clone()),
                recipe_id: r.recipe_id.clone(),
                run_id: r.run_id.clone(),
                step_key: r.step_key.clone(),
                channel: r.channel.clone(),
                purpose: r.purpose.clone(),
                transactional: r.transactional,
                status: w.status.to_string(),
                reason: w.reason.clone(),
                until: w.until,
                sent_at: (w.status == status::RESERVED).then_some(r.now),
                decided_at: r.now,
                output: None,
            };
            t.put_row(&row).await?;
            if let (Some(kind), Some(c)) = (w.timeline, &f.contact) {
                t.insert_timeline(&c.id, &timeline(kind, &row, r.now), None).await?;
            }
        }
    }
    Ok((facts, write))
}

fn timeline(kind: &str, row: &LedgerRow, now: Millis) -> TimelineEvent {
    let until = row.until.and_then(chrono::DateTime::from_timestamp_millis).map(|t| t.to_rfc3339());
    TimelineEvent {
        id: new_id(),
        kind: kind.to_string(),
        data: json!({
            "channel": row.channel,
            "purpose": row.purpose,
            "transactional": row.transactional,
            "recipe": row.recipe_id,
            "run": row.run_id,
            "step": row.step_key,
            "recipient": row.recipient,
            "reason": row.reason,
            "until": until,
        }),
        run_id: Some(row.run_id.clone()),
        at: now,
    }
}

/// Records the call's outcome on the message's reserved rows: `sent` (with the output,
/// and a `message_sent` timeline entry per contact) or `released` (nothing was delivered).
pub(crate) async fn settle<T: SendTx>(t: &mut T, message_key: &str, sent: bool, output: Option<Value>, now: Millis) -> Result<()> {
    for mut row in t.message_rows(message_key).await? {
        if row.status != status::RESERVED {
            continue;
        }
        row.status = if sent { status::SENT } else { status::RELEASED }.to_string();
        row.output = output.clone();
        row.decided_at = now;
        if !sent {
            row.sent_at = None;
        }
        t.put_row(&row).await?;
        if sent && let Some(c) = row.contact_id.clone() {
            t.insert_timeline(&c, &timeline("message_sent", &row, now), None).await?;
        }
    }
    Ok(())
}

impl Store {
    /// Decides about a message in one transaction: reads the facts, asks `decide`, writes
    /// its rows and timeline entries. Returns the facts and what was written.
    pub async fn reserve_send(&self, r: SendRequest, decide: Decide) -> Result<(SendFacts, Option<LedgerWrite>)> {
        match &self.backend {
            Backend::Sqlite(b) => b.reserve_send(r, decide).await,
            Backend::Postgres(b) => b.reserve_send(r, decide).await,
        }
    }

    /// Records a reserved message's outcome: sent (with the action's output) or released.
    pub async fn settle_send(&self, message_key: &str, sent: bool, output: Option<Value>, now: Millis) -> Result<()> {
        match &self.backend {
            Backend::Sqlite(b) => b.settle_send(message_key, sent, output, now).await,
            Backend::Postgres(b) => b.settle_send(message_key, sent, output, now).await,
        }
    }

    /// The ledger rows of a message.
    pub async fn message_rows(&self, message_key: &str) -> Result<Vec<LedgerRow>> {
        match &self.backend {
            Backend::Sqlite(b) => b.message_rows(message_key).await,
            Backend::Postgres(b) => b.message_rows(message_key).await,
        }
    }

    /// Messages held for approval whose run still waits, oldest first; of one recipe, or all.
    pub async fn held_sends(&self, recipe_id: Option<&str>) -> Result<Vec<LedgerRow>> {
        match &self.backend {
            Backend::Sqlite(b) => b.held_sends(recipe_id).await,
            Backend::Postgres(b) => b.held_sends(recipe_id).await,
        }
    }

    /// Approves or rejects a recipe's held messages (all of them, or the messages named by
    /// `message_keys`), and puts their runs back in the queue, in one transaction. Returns
    /// the rows decided.
    pub async fn decide_held_sends(
        &self,
        recipe_id: &str,
        message_keys: Option<Vec<String>>,
        approve: bool,
        now: Millis,
    ) -> Result<Vec<LedgerRow>> {
        match &self.backend {
            Backend::Sqlite(b) => b.decide_held_sends(recipe_id, message_keys, approve, now).await,
            Backend::Postgres(b) => b.decide_held_sends(recipe_id, message_keys, approve, now).await,
        }
    }

    /// Marks a recipe's held messages cancelled (the kill switch).
    pub async fn cancel_held_sends(&self, recipe_id: &str, now: Millis) -> Result<u64> {
        match &self.backend {
            Backend::Sqlite(b) => b.cancel_held_sends(recipe_id, now).await,
            Backend::Postgres(b) => b.cancel_held_sends(recipe_id, now).await,
        }
    }

    /// The installation's send policy (the defaults until one is saved).
    pub async fn policy_settings(&self) -> Result<PolicySettings> {
        let text = match &self.backend {
            Backend::Sqlite(b) => b.policy_text().await?,
            Backend::Postgres(b) => b.policy_text().await?,
        };
        match text {
            None => Ok(PolicySettings::default()),
            Some(t) => serde_json::from_str(&t).map_err(|e| StoreError::Database(format!("the stored send policy cannot be read: {e}"))),
        }
    }

    /// Saves the send policy; `Invalid` naming every problem.
    pub async fn set_policy_settings(&self, p: &PolicySettings, now: Millis) -> Result<()> {
        let errs = p.check();
        if !errs.is_empty() {
            return Err(StoreError::Invalid(errs.into_iter().map(|(path, m)| format!("{path}: {m}")).collect::<Vec<_>>().join("; ")));
        }
        let text = serde_json::to_string(p).map_err(|e| StoreError::Invalid(e.to_string()))?;
        match &self.backend {
            Backend::Sqlite(b) => b.set_policy_text(text, now).await,
            Backend::Postgres(b) => b.set_policy_text(text, now).await,
        }
    }
}
