//! GDPR: export everything stored about a contact, erase a contact (its rows, its personal
//! data in the run history, its pending runs, its ad audience memberships), keep a record of
//! the erasure without personal data, and the durable queue of ad audience removals (tables
//! in `migrations/*/…_gdpr.sql`).
//!
//! An erasure is one transaction (on SQLite a job of the writer): a crash leaves either
//! nothing done or everything done, and the removals it queues are in the same commit, so
//! none is lost and none is queued twice.
//!
//! The logic is written once over [`GdprTx`]. Its statements differ between the backends
//! only in placeholders (`?` or `$n`, rewritten by [`dialect`]) and in the removal queue's
//! claim (`FOR UPDATE SKIP LOCKED` on PostgreSQL), so one macro ([`gdpr_statements!`])
//! implements it for both `Tx` types rather than two copies of the same SQL.

use enlace_core::audience::sha256_hex;
use enlace_core::contacts::{Consent, ConsentStatus, Contact, ContactKey, Evidence, Note, PhoneDecision, TimelineEvent, normalize_email};
use serde::Serialize;
use serde_json::{Value, json};

use crate::contacts::{ContactTx, normal_key, normalize_phone, phone_of};
use crate::{Millis, Result, RunDetail, Store, StoreError, new_id};

/// What replaces personal data in the run history.
pub const ERASED: &str = "[erased]";
/// The fields of a contact taken as its name: their values are redacted (as whole words)
/// in the history of the runs about it.
pub const NAME_FIELDS: &[&str] =
    &["name", "first_name", "last_name", "full_name", "firstname", "lastname", "given_name", "family_name", "surname", "display_name"];
/// Runs per page of an export.
pub const EXPORT_RUNS_PAGE: i64 = 100;
/// Attempts of an audience removal before it is left `failed`.
pub const REMOVAL_ATTEMPTS: i64 = 10;

/// The record of an erasure: no personal data, only keyed hashes (HMAC-SHA256 with a key
/// derived from the installation's secret key) of the email and phone.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Erasure {
    pub id: String,
    /// The erased contact's id.
    pub contact_id: String,
    /// Hex HMAC-SHA256 of the normalised email.
    pub email_hash: String,
    /// Hex HMAC-SHA256 of the E.164 phone, if the contact had one.
    pub phone_hash: Option<String>,
    /// The withdrawals the number had sent itself (an SMS STOP), as `purpose:channel`: the
    /// suppression list's rows go with the contact, these keep the number suppressed.
    pub phone_withdrawn: Vec<String>,
    /// Who asked (`api:<token name>`, `cli`).
    pub erased_by: String,
    pub erased_at: Millis,
    /// Runs whose history had personal data replaced by `[erased]`.
    pub runs_redacted: i64,
    /// Pending runs about the contact that were cancelled.
    pub runs_cancelled: i64,
    /// Ad audience removals queued.
    pub removals_queued: i64,
}

/// A tag with when it was added.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TagRow {
    pub tag: String,
    pub added_at: Millis,
}

/// A decision a phone number sent itself (an SMS reply STOP or START).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SuppressionRow {
    pub phone: String,
    pub purpose: String,
    pub channel: String,
    pub status: String,
    pub evidence: Value,
    pub at: Millis,
}

/// A person in an ad audience, as an add action put them there.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AudienceMember {
    pub id: String,
    pub contact_id: Option<String>,
    pub email_sha256: Option<String>,
    pub phone_sha256: Option<String>,
    pub app: String,
    pub connection_id: Option<String>,
    /// The app's action that takes the person out.
    pub remove_action: String,
    /// The audience, as the add action named it.
    pub audience: Value,
    pub run_id: Option<String>,
    pub added_at: Millis,
}

/// A membership to record: the add action's app, connection and audience, and the person's
/// normalised identifiers (hashed before they are stored).
#[derive(Debug, Clone, PartialEq)]
pub struct NewMembership {
    pub app: String,
    pub connection_id: Option<String>,
    pub remove_action: String,
    pub audience: Value,
    /// Normalised (trimmed, lowercase).
    pub email: Option<String>,
    /// E.164.
    pub phone: Option<String>,
    /// The hashes the app matches, when its normalisation differs from the standard one
    /// (`enlace_core::audience::Hashing`): kept instead of SHA-256 of `email` / `phone`, so
    /// the removal sends what the app was sent. `email` and `phone` still find the contact.
    pub email_sha256: Option<String>,
    pub phone_sha256: Option<String>,
    pub run_id: Option<String>,
    pub now: Millis,
}

/// One removal from an ad audience, queued for the runner.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AudienceRemovalRow {
    pub id: String,
    pub app: String,
    pub connection_id: Option<String>,
    pub remove_action: String,
    pub audience: Value,
    pub email_sha256: Option<String>,
    pub phone_sha256: Option<String>,
    /// `erased` or `consent_withdrawn`.
    pub reason: String,
    /// `pending`, `sending`, `done` or `failed`.
    pub status: String,
    pub attempts: i64,
    pub due_at: Option<Millis>,
    /// The last failure: `{class, message}`.
    pub last_error: Option<Value>,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub done_at: Option<Millis>,
}

/// How a claimed removal ended.
#[derive(Debug, Clone, PartialEq)]
pub enum RemovalOutcome {
    /// The app took the person out.
    Done,
    /// Try again at `due_at`.
    Retry { due_at: Millis, error: Value },
    /// Given up: the error says why.
    Failed { error: Value },
}

/// Everything stored about a contact, except its runs (the export's first part).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContactRecords {
    pub contact: Contact,
    pub tags: Vec<TagRow>,
    /// Every consent decision, oldest first, with its evidence.
    pub consents: Vec<Consent>,
    pub notes: Vec<Note>,
    /// The whole timeline, oldest first.
    pub timeline: Vec<TimelineEvent>,
    /// The decisions the contact's phone number sent itself, oldest first.
    pub phone_suppressions: Vec<SuppressionRow>,
    /// The ad audiences it was added to.
    pub audience_memberships: Vec<AudienceMember>,
}

/// Everything stored about a contact (see `docs/gdpr.md` for each field).
#[derive(Debug, Clone, Serialize)]
pub struct ContactExport {
    /// `enlace.contact-export.v1`.
    pub format: &'static str,
    pub exported_at: Millis,
    #[serde(flatten)]
    pub records: ContactRecords,
    /// The runs about the contact (this page), oldest first, each with its event and steps.
    pub runs: Vec<RunDetail>,
    /// Give it as `runs_after` for the next page of runs; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runs_next: Option<String>,
}

/// The texts of a run that may hold personal data.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RunTexts {
    pub run_id: String,
    pub event_id: String,
    pub payload: String,
    pub dedupe_key: Option<String>,
    pub error: Option<String>,
    pub steps: Vec<StepTexts>,
}

/// A step's `(key, input, output, error)`.
pub(crate) type StepTexts = (String, Option<String>, Option<String>, Option<String>);

/// What identifies a contact in free text: searched for (lowercase, as substrings) and
/// replaced; names are replaced as whole words only.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Needles {
    pub search: Vec<String>,
    pub names: Vec<String>,
}

/// The contact's email (as stored and as first given), phone (E.164, its digits, and as
/// written) and name fields.
pub fn needles(c: &Contact) -> Needles {
    let mut search = vec![c.email.to_lowercase(), c.email_original.trim().to_lowercase()];
    if let Some(p) = phone_of(&c.fields) {
        search.push(p.trim_start_matches('+').to_string());
        search.push(p);
    }
    if let Some(raw) = c.fields.get("phone").and_then(Value::as_str) {
        search.push(raw.trim().to_lowercase());
    }
    search.retain(|s| s.chars().count() >= 5);
    search.sort();
    search.dedup();
    let mut names: Vec<String> = c
        .fields
        .iter()
        .filter(|(k, _)| NAME_FIELDS.contains(&k.to_lowercase().as_str()))
        .filter_map(|(_, v)| v.as_str())
        .map(|s| s.trim().to_lowercase())
        .filter(|s| s.chars().count() >= 2)
        .collect();
    names.sort();
    names.dedup();
    Needles { search, names }
}

fn has_word(hay: &str, word: &str) -> bool {
    let mut from = 0;
    while let Some(i) = hay[from..].find(word) {
        let start = from + i;
        let end = start + word.len();
        let before = hay[..start].chars().next_back().is_none_or(|c| !c.is_alphanumeric());
        let after = hay[end..].chars().next().is_none_or(|c| !c.is_alphanumeric());
        if before && after {
            return true;
        }
        from = start + hay[start..].chars().next().map_or(1, char::len_utf8);
    }
    false
}

impl Needles {
    /// Whether a text holds any of them.
    pub fn found_in(&self, text: &str) -> bool {
        let t = text.to_lowercase();
        self.search.iter().any(|n| t.contains(n.as_str())) || self.names.iter().any(|n| has_word(&t, n))
    }

    /// Replaces every string (and object key) of `v` that equals or contains one of them
    /// with `[erased]`, keeping the structure; numbers that spell the phone's digits too.
    /// Whether anything changed.
    pub fn redact(&self, v: &mut Value) -> bool {
        match v {
            Value::String(s) => {
                if self.found_in(s) {
                    *s = ERASED.into();
                    return true;
                }
                false
            }
            Value::Number(n) => {
                let digits = n.to_string();
                let hit = self.search.iter().any(|s| s.len() >= 7 && s.chars().all(|c| c.is_ascii_digit()) && digits == *s);
                if hit {
                    *v = Value::String(ERASED.into());
                }
                hit
            }
            Value::Array(a) => a.iter_mut().fold(false, |ch, x| self.redact(x) | ch),
            Value::Object(o) => {
                let mut changed = false;
                let old = std::mem::take(o);
                let mut n = 0;
                for (k, mut x) in old {
                    changed |= self.redact(&mut x);
                    let key = if self.found_in(&k) {
                        changed = true;
                        n += 1;
                        if n == 1 { ERASED.to_string() } else { format!("{ERASED}{n}") }
                    } else {
                        k
                    };
                    o.insert(key, x);
                }
                changed
            }
            _ => false,
        }
    }

    /// [`Needles::redact`] over JSON text; text that is not JSON is `[erased]` whole when it
    /// holds one of them. `None` when nothing changed.
    pub fn redact_text(&self, text: &str) -> Option<String> {
        if !self.found_in(text) {
            return None;
        }
        match serde_json::from_str::<Value>(text) {
            Ok(mut v) => self.redact(&mut v).then(|| v.to_string()),
            // The columns hold JSON: a JSON string.
            Err(_) => Some(json!(ERASED).to_string()),
        }
    }
}

/// Hex HMAC-SHA256 of an identifier with the erasure key.
pub(crate) fn keyed_hash(key: &[u8; 32], value: &str) -> String {
    use hmac::Mac as _;
    let mut mac = <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(value.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// A `LIKE` pattern for a substring (`\` escapes), lowercase.
pub(crate) fn like(s: &str) -> String {
    let mut p = String::from("%");
    for c in s.to_lowercase().chars() {
        if matches!(c, '\\' | '%' | '_') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

/// The statement text for a backend: PostgreSQL numbers its placeholders (`$1`...).
pub(crate) fn dialect(pg: bool, sql: &str) -> String {
    if !pg {
        return sql.to_string();
    }
    let mut out = String::with_capacity(sql.len() + 16);
    let mut n = 0;
    for ch in sql.chars() {
        if ch == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(ch);
        }
    }
    out
}

/// The query that finds the runs about a contact: its contact-scoped runs (journeys,
/// `runs.contact_id`), the runs of its timeline entries, and those whose event (payload,
/// dedupe key), error, or steps' inputs, outputs and errors contain one of `needles`.
/// Binds: after, contact id twice, six patterns per needle, limit.
pub(crate) fn runs_about_sql(needles: usize) -> String {
    let mut sql = String::from(
        "SELECT r.id FROM runs r JOIN events e ON e.id = r.event_id WHERE r.id > ? AND (
           r.contact_id = ? OR r.id IN (SELECT x.run_id FROM contact_events x WHERE x.contact_id = ? AND x.run_id IS NOT NULL)",
    );
    for _ in 0..needles {
        sql.push_str(
            " OR lower(e.payload) LIKE ? ESCAPE '\\' OR lower(COALESCE(e.dedupe_key, '')) LIKE ? ESCAPE '\\'
              OR lower(COALESCE(r.error, '')) LIKE ? ESCAPE '\\'
              OR EXISTS (SELECT 1 FROM steps s WHERE s.run_id = r.id AND (lower(COALESCE(s.input, '')) LIKE ? ESCAPE '\\'
                 OR lower(COALESCE(s.output, '')) LIKE ? ESCAPE '\\' OR lower(COALESCE(s.error, '')) LIKE ? ESCAPE '\\'))",
        );
    }
    sql.push_str(") ORDER BY r.id LIMIT ?");
    sql
}

/// The statements GDPR needs, per backend (implemented by [`gdpr_statements!`]).
pub(crate) trait GdprTx: Send {
    /// Every consent decision, oldest first.
    fn consent_history(&mut self, contact_id: &str) -> impl Future<Output = Result<Vec<Consent>>> + Send;
    fn tag_rows(&mut self, contact_id: &str) -> impl Future<Output = Result<Vec<TagRow>>> + Send;
    /// Every decision of the number, oldest first.
    fn suppression_history(&mut self, phone: &str) -> impl Future<Output = Result<Vec<SuppressionRow>>> + Send;
    /// The ids of the runs about a contact after `after` (see [`runs_about_sql`]), in id order.
    fn runs_about(
        &mut self,
        contact_id: &str,
        needles: &[String],
        after: &str,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<String>>> + Send;
    fn run_texts(&mut self, run_id: &str) -> impl Future<Output = Result<Option<RunTexts>>> + Send;
    fn write_run_texts(&mut self, t: &RunTexts) -> impl Future<Output = Result<()>> + Send;
    /// Cancels the run if it has not ended (and its unfinished steps): whether it did.
    fn cancel_run(&mut self, run_id: &str, error: &str, now: Millis) -> impl Future<Output = Result<bool>> + Send;
    /// Memberships of this contact id or these hashed identifiers.
    fn memberships(
        &mut self,
        contact_id: &str,
        email_sha: Option<&str>,
        phone_sha: Option<&str>,
    ) -> impl Future<Output = Result<Vec<AudienceMember>>> + Send;
    fn delete_membership(&mut self, id: &str) -> impl Future<Output = Result<()>> + Send;
    fn upsert_membership(&mut self, m: &AudienceMember, member_key: &str) -> impl Future<Output = Result<()>> + Send;
    fn queue_removal(&mut self, r: &AudienceRemovalRow) -> impl Future<Output = Result<()>> + Send;
    fn delete_suppressions(&mut self, phone: &str) -> impl Future<Output = Result<()>> + Send;
    fn delete_contact(&mut self, id: &str) -> impl Future<Output = Result<bool>> + Send;
    fn insert_erasure(&mut self, e: &Erasure) -> impl Future<Output = Result<()>> + Send;
    /// Erasures of this contact id, this email hash or this phone hash.
    fn erasures(
        &mut self,
        contact_id: Option<&str>,
        email_hash: Option<&str>,
        phone_hash: Option<&str>,
    ) -> impl Future<Output = Result<Vec<Erasure>>> + Send;
    /// The contact with this email, else the first with this phone.
    fn contact_id_for(&mut self, email: Option<&str>, phone: Option<&str>) -> impl Future<Output = Result<Option<String>>> + Send;
    /// The removal queue, newest first, optionally of one status.
    fn removals(&mut self, status: Option<&str>, limit: i64) -> impl Future<Output = Result<Vec<AudienceRemovalRow>>> + Send;
    /// Claims due removals (pending and due, or sending with an expired lease).
    fn claim_removals(
        &mut self,
        owner: &str,
        now: Millis,
        limit: i64,
        lease_ms: i64,
    ) -> impl Future<Output = Result<Vec<AudienceRemovalRow>>> + Send;
    /// Ends a claimed removal, if `owner` still holds it.
    fn finish_removal(&mut self, id: &str, owner: &str, outcome: &RemovalOutcome, now: Millis)
    -> impl Future<Output = Result<bool>> + Send;
}

/// Implements [`GdprTx`] for a backend's `Tx` (a wrapper of `&mut <Backend>Connection`).
macro_rules! gdpr_statements {
    ($tx:ty, $pg:expr) => {
        const _: () = {
            use serde_json::Value;
            use sqlx::Row;

            use crate::gdpr::{AudienceMember, AudienceRemovalRow, Erasure, RemovalOutcome, RunTexts, SuppressionRow, TagRow, dialect};
            use crate::{Millis, Result};
            use enlace_core::contacts::{Consent, ConsentStatus, Evidence};

            fn q(sql: &str) -> sqlx::AssertSqlSafe<String> {
                sqlx::AssertSqlSafe(dialect($pg, sql))
            }
            fn json_of(s: Option<String>) -> Option<Value> {
                s.and_then(|t| serde_json::from_str(&t).ok())
            }
            const REMOVAL_COLS: &str = "id, app, connection_id, remove_action, audience, email_sha256, phone_sha256, reason, status, attempts, due_at, last_error, created_at, updated_at, done_at";
            macro_rules! removal_row {
                ($r:expr) => {
                    AudienceRemovalRow {
                        id: $r.get("id"),
                        app: $r.get("app"),
                        connection_id: $r.get("connection_id"),
                        remove_action: $r.get("remove_action"),
                        audience: json_of($r.get("audience")).unwrap_or(Value::Null),
                        email_sha256: $r.get("email_sha256"),
                        phone_sha256: $r.get("phone_sha256"),
                        reason: $r.get("reason"),
                        status: $r.get("status"),
                        attempts: $r.get("attempts"),
                        due_at: $r.get("due_at"),
                        last_error: json_of($r.get("last_error")),
                        created_at: $r.get("created_at"),
                        updated_at: $r.get("updated_at"),
                        done_at: $r.get("done_at"),
                    }
                };
            }
            macro_rules! erasure_row {
                ($r:expr) => {
                    Erasure {
                        id: $r.get("id"),
                        contact_id: $r.get("contact_id"),
                        email_hash: $r.get("email_hash"),
                        phone_hash: $r.get("phone_hash"),
                        phone_withdrawn: serde_json::from_str($r.get::<String, _>("phone_withdrawn").as_str()).unwrap_or_default(),
                        erased_by: $r.get("erased_by"),
                        erased_at: $r.get("erased_at"),
                        runs_redacted: $r.get("runs_redacted"),
                        runs_cancelled: $r.get("runs_cancelled"),
                        removals_queued: $r.get("removals_queued"),
                    }
                };
            }

            impl crate::gdpr::GdprTx for $tx {
                async fn consent_history(&mut self, contact_id: &str) -> Result<Vec<Consent>> {
                    let rows = sqlx::query(q("SELECT id, purpose, channel, status, evidence, at FROM contact_consents WHERE contact_id = ? ORDER BY at, id"))
                        .bind(contact_id)
                        .fetch_all(&mut *self.0)
                        .await?;
                    Ok(rows
                        .iter()
                        .map(|r| Consent {
                            id: r.get("id"),
                            purpose: r.get("purpose"),
                            channel: r.get("channel"),
                            status: ConsentStatus::parse(&r.get::<String, _>("status")).unwrap_or(ConsentStatus::Withdrawn),
                            evidence: json_of(r.get("evidence")).and_then(|v| serde_json::from_value::<Evidence>(v).ok()).unwrap_or(Evidence {
                                source: String::new(),
                                ip: None,
                                text: None,
                                recorded_at: 0,
                                run_id: None,
                                details: Default::default(),
                            }),
                            at: r.get("at"),
                        })
                        .collect())
                }

                async fn tag_rows(&mut self, contact_id: &str) -> Result<Vec<TagRow>> {
                    let rows = sqlx::query(q("SELECT tag, added_at FROM contact_tags WHERE contact_id = ? ORDER BY tag"))
                        .bind(contact_id)
                        .fetch_all(&mut *self.0)
                        .await?;
                    Ok(rows.iter().map(|r| TagRow { tag: r.get("tag"), added_at: r.get("added_at") }).collect())
                }

                async fn suppression_history(&mut self, phone: &str) -> Result<Vec<SuppressionRow>> {
                    let rows = sqlx::query(q("SELECT phone, purpose, channel, status, evidence, at FROM phone_suppressions WHERE phone = ? ORDER BY at, id"))
                        .bind(phone)
                        .fetch_all(&mut *self.0)
                        .await?;
                    Ok(rows
                        .iter()
                        .map(|r| SuppressionRow {
                            phone: r.get("phone"),
                            purpose: r.get("purpose"),
                            channel: r.get("channel"),
                            status: r.get("status"),
                            evidence: json_of(r.get("evidence")).unwrap_or(Value::Null),
                            at: r.get("at"),
                        })
                        .collect())
                }

                async fn runs_about(&mut self, contact_id: &str, needles: &[String], after: &str, limit: i64) -> Result<Vec<String>> {
                    let sql = crate::gdpr::runs_about_sql(needles.len());
                    let mut query = sqlx::query_scalar::<_, String>(q(&sql)).bind(after.to_string()).bind(contact_id.to_string()).bind(contact_id.to_string());
                    for n in needles {
                        let p = crate::gdpr::like(n);
                        for _ in 0..6 {
                            query = query.bind(p.clone());
                        }
                    }
                    Ok(query.bind(limit).fetch_all(&mut *self.0).await?)
                }

                async fn run_texts(&mut self, run_id: &str) -> Result<Option<RunTexts>> {
                    let Some(r) = sqlx::query(q("SELECT r.id, r.event_id, r.error, e.payload, e.dedupe_key FROM runs r JOIN events e ON e.id = r.event_id WHERE r.id = ?"))
                        .bind(run_id)
                        .fetch_optional(&mut *self.0)
                        .await?
                    else {
                        return Ok(None);
                    };
                    let steps = sqlx::query(q("SELECT key, input, output, error FROM steps WHERE run_id = ? ORDER BY seq, key"))
                        .bind(run_id)
                        .fetch_all(&mut *self.0)
                        .await?
                        .iter()
                        .map(|s| (s.get("key"), s.get("input"), s.get("output"), s.get("error")))
                        .collect();
                    Ok(Some(RunTexts {
                        run_id: r.get("id"),
                        event_id: r.get("event_id"),
                        payload: r.get("payload"),
                        dedupe_key: r.get("dedupe_key"),
                        error: r.get("error"),
                        steps,
                    }))
                }

                async fn write_run_texts(&mut self, t: &RunTexts) -> Result<()> {
                    sqlx::query(q("UPDATE events SET payload = ?, dedupe_key = ? WHERE id = ?"))
                        .bind(&t.payload)
                        .bind(&t.dedupe_key)
                        .bind(&t.event_id)
                        .execute(&mut *self.0)
                        .await?;
                    sqlx::query(q("UPDATE runs SET error = ? WHERE id = ?")).bind(&t.error).bind(&t.run_id).execute(&mut *self.0).await?;
                    for (key, input, output, error) in &t.steps {
                        sqlx::query(q("UPDATE steps SET input = ?, output = ?, error = ? WHERE run_id = ? AND key = ?"))
                            .bind(input)
                            .bind(output)
                            .bind(error)
                            .bind(&t.run_id)
                            .bind(key)
                            .execute(&mut *self.0)
                            .await?;
                    }
                    Ok(())
                }

                async fn cancel_run(&mut self, run_id: &str, error: &str, now: Millis) -> Result<bool> {
                    let r = sqlx::query(q("UPDATE runs SET status = 'cancelled', finished_at = ?, due_at = NULL, owner = NULL, lease_until = NULL, held_connection = NULL, updated_at = ?, error = ? WHERE id = ? AND status IN ('queued', 'running', 'waiting')"))
                        .bind(now)
                        .bind(now)
                        .bind(error)
                        .bind(run_id)
                        .execute(&mut *self.0)
                        .await?;
                    if r.rows_affected() == 0 {
                        return Ok(false);
                    }
                    sqlx::query(q("UPDATE steps SET status = 'cancelled', finished_at = ? WHERE run_id = ? AND status IN ('running', 'retrying', 'waiting')"))
                        .bind(now)
                        .bind(run_id)
                        .execute(&mut *self.0)
                        .await?;
                    Ok(true)
                }

                async fn memberships(&mut self, contact_id: &str, email_sha: Option<&str>, phone_sha: Option<&str>) -> Result<Vec<AudienceMember>> {
                    let rows = sqlx::query(q("SELECT id, contact_id, email_sha256, phone_sha256, app, connection_id, remove_action, audience, run_id, added_at FROM audience_members
                           WHERE contact_id = ? OR (email_sha256 IS NOT NULL AND email_sha256 = ?) OR (phone_sha256 IS NOT NULL AND phone_sha256 = ?) ORDER BY id"))
                        .bind(contact_id)
                        .bind(email_sha)
                        .bind(phone_sha)
                        .fetch_all(&mut *self.0)
                        .await?;
                    Ok(rows
                        .iter()
                        .map(|r| AudienceMember {
                            id: r.get("id"),
                            contact_id: r.get("contact_id"),
                            email_sha256: r.get("email_sha256"),
                            phone_sha256: r.get("phone_sha256"),
                            app: r.get("app"),
                            connection_id: r.get("connection_id"),
                            remove_action: r.get("remove_action"),
                            audience: json_of(r.get("audience")).unwrap_or(Value::Null),
                            run_id: r.get("run_id"),
                            added_at: r.get("added_at"),
                        })
                        .collect())
                }

                async fn delete_membership(&mut self, id: &str) -> Result<()> {
                    sqlx::query(q("DELETE FROM audience_members WHERE id = ?")).bind(id).execute(&mut *self.0).await?;
                    Ok(())
                }

                async fn upsert_membership(&mut self, m: &AudienceMember, member_key: &str) -> Result<()> {
                    sqlx::query(q("INSERT INTO audience_members (id, member_key, contact_id, email_sha256, phone_sha256, app, connection_id, remove_action, audience, run_id, added_at)
                           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                           ON CONFLICT (member_key) DO UPDATE SET contact_id = COALESCE(excluded.contact_id, audience_members.contact_id),
                             remove_action = excluded.remove_action, run_id = excluded.run_id, added_at = excluded.added_at"))
                        .bind(&m.id)
                        .bind(member_key)
                        .bind(&m.contact_id)
                        .bind(&m.email_sha256)
                        .bind(&m.phone_sha256)
                        .bind(&m.app)
                        .bind(&m.connection_id)
                        .bind(&m.remove_action)
                        .bind(m.audience.to_string())
                        .bind(&m.run_id)
                        .bind(m.added_at)
                        .execute(&mut *self.0)
                        .await?;
                    Ok(())
                }

                async fn queue_removal(&mut self, r: &AudienceRemovalRow) -> Result<()> {
                    sqlx::query(q("INSERT INTO audience_removals (id, app, connection_id, remove_action, audience, email_sha256, phone_sha256, reason, status, attempts, due_at, created_at, updated_at)
                           VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?, ?)"))
                        .bind(&r.id)
                        .bind(&r.app)
                        .bind(&r.connection_id)
                        .bind(&r.remove_action)
                        .bind(r.audience.to_string())
                        .bind(&r.email_sha256)
                        .bind(&r.phone_sha256)
                        .bind(&r.reason)
                        .bind(r.due_at)
                        .bind(r.created_at)
                        .bind(r.updated_at)
                        .execute(&mut *self.0)
                        .await?;
                    Ok(())
                }

                async fn delete_suppressions(&mut self, phone: &str) -> Result<()> {
                    sqlx::query(q("DELETE FROM phone_suppressions WHERE phone = ?")).bind(phone).execute(&mut *self.0).await?;
                    Ok(())
                }

                async fn delete_contact(&mut self, id: &str) -> Result<bool> {
                    // Tags, consents, notes and timeline go with it (ON DELETE CASCADE).
                    Ok(sqlx::query(q("DELETE FROM contacts WHERE id = ?")).bind(id).execute(&mut *self.0).await?.rows_affected() > 0)
                }

                async fn insert_erasure(&mut self, e: &Erasure) -> Result<()> {
                    sqlx::query(q("INSERT INTO contact_erasures (id, contact_id, email_hash, phone_hash, phone_withdrawn, erased_by, erased_at, runs_redacted, runs_cancelled, removals_queued)
                           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"))
                        .bind(&e.id)
                        .bind(&e.contact_id)
                        .bind(&e.email_hash)
                        .bind(&e.phone_hash)
                        .bind(serde_json::to_string(&e.phone_withdrawn).unwrap_or_else(|_| "[]".into()))
                        .bind(&e.erased_by)
                        .bind(e.erased_at)
                        .bind(e.runs_redacted)
                        .bind(e.runs_cancelled)
                        .bind(e.removals_queued)
                        .execute(&mut *self.0)
                        .await?;
                    Ok(())
                }

                async fn erasures(&mut self, contact_id: Option<&str>, email_hash: Option<&str>, phone_hash: Option<&str>) -> Result<Vec<Erasure>> {
                    let rows = sqlx::query(q("SELECT id, contact_id, email_hash, phone_hash, phone_withdrawn, erased_by, erased_at, runs_redacted, runs_cancelled, removals_queued
                           FROM contact_erasures WHERE contact_id = ? OR email_hash = ? OR phone_hash = ? ORDER BY id"))
                        .bind(contact_id)
                        .bind(email_hash)
                        .bind(phone_hash)
                        .fetch_all(&mut *self.0)
                        .await?;
                    Ok(rows.iter().map(|r| erasure_row!(r)).collect())
                }

                async fn contact_id_for(&mut self, email: Option<&str>, phone: Option<&str>) -> Result<Option<String>> {
                    if let Some(e) = email {
                        let id: Option<String> = sqlx::query_scalar(q("SELECT id FROM contacts WHERE email = ?")).bind(e).fetch_optional(&mut *self.0).await?;
                        if id.is_some() {
                            return Ok(id);
                        }
                    }
                    match phone {
                        Some(p) => Ok(sqlx::query_scalar(q("SELECT id FROM contacts WHERE phone = ? ORDER BY id LIMIT 1")).bind(p).fetch_optional(&mut *self.0).await?),
                        None => Ok(None),
                    }
                }

                async fn removals(&mut self, status: Option<&str>, limit: i64) -> Result<Vec<AudienceRemovalRow>> {
                    let sql = format!("SELECT {REMOVAL_COLS} FROM audience_removals WHERE (? IS NULL OR status = ?) ORDER BY id DESC LIMIT ?");
                    let rows = sqlx::query(q(&sql)).bind(status).bind(status).bind(limit).fetch_all(&mut *self.0).await?;
                    Ok(rows.iter().map(|r| removal_row!(r)).collect())
                }

                async fn claim_removals(&mut self, owner: &str, now: Millis, limit: i64, lease_ms: i64) -> Result<Vec<AudienceRemovalRow>> {
                    // Pending and due, or sending by a node whose lease ran out (it died mid-call).
                    let lock = if $pg { " FOR UPDATE SKIP LOCKED" } else { "" };
                    let sql = format!(
                        "UPDATE audience_removals SET status = 'sending', owner = ?, lease_until = ?, attempts = attempts + 1, updated_at = ?
                         WHERE id IN (SELECT id FROM audience_removals
                           WHERE (status = 'pending' AND due_at <= ?) OR (status = 'sending' AND lease_until < ?)
                           ORDER BY due_at, id LIMIT ?{lock})
                         RETURNING {REMOVAL_COLS}"
                    );
                    let rows = sqlx::query(q(&sql))
                        .bind(owner)
                        .bind(now + lease_ms)
                        .bind(now)
                        .bind(now)
                        .bind(now)
                        .bind(limit)
                        .fetch_all(&mut *self.0)
                        .await?;
                    Ok(rows.iter().map(|r| removal_row!(r)).collect())
                }

                async fn finish_removal(&mut self, id: &str, owner: &str, outcome: &RemovalOutcome, now: Millis) -> Result<bool> {
                    let (status, due_at, error, done_at) = match outcome {
                        RemovalOutcome::Done => ("done", None, None, Some(now)),
                        RemovalOutcome::Retry { due_at, error } => ("pending", Some(*due_at), Some(error.to_string()), None),
                        RemovalOutcome::Failed { error } => ("failed", None, Some(error.to_string()), Some(now)),
                    };
                    let r = sqlx::query(q("UPDATE audience_removals SET status = ?, due_at = ?, last_error = COALESCE(?, last_error), done_at = ?, owner = NULL, lease_until = NULL, updated_at = ?
                           WHERE id = ? AND owner = ? AND status = 'sending'"))
                        .bind(status)
                        .bind(due_at)
                        .bind(error)
                        .bind(done_at)
                        .bind(now)
                        .bind(id)
                        .bind(owner)
                        .execute(&mut *self.0)
                        .await?;
                    Ok(r.rows_affected() > 0)
                }
            }
        };
    };
}
pub(crate) use gdpr_statements;

/// The key of erasure hashes, derived from the installation's secret key.
pub(crate) const ERASURE_KEY_CONTEXT: &str = "gdpr:erasure-hash";

/// Everything stored about a contact but its runs; `None` when there is no such contact.
pub(crate) async fn records<T: ContactTx + GdprTx>(t: &mut T, key: ContactKey) -> Result<Option<ContactRecords>> {
    let key = normal_key(key)?;
    let Some(contact) = t.contact(&key, false).await? else { return Ok(None) };
    let phone = phone_of(&contact.fields);
    // The whole timeline, a page at a time (newest first), then oldest first.
    let mut timeline = vec![];
    let mut q = crate::contacts::TimelineQuery { limit: 500, ..Default::default() };
    loop {
        let page = t.timeline(&contact.id, &q).await?;
        let full = page.len() as i64 == q.limit();
        q.before = page.last().map(|e| (e.at, e.id.clone()));
        timeline.extend(page);
        if !full {
            break;
        }
    }
    timeline.reverse();
    let mut notes = t.notes(&contact.id).await?;
    notes.reverse();
    let email_sha = sha256_hex(&contact.email);
    Ok(Some(ContactRecords {
        tags: t.tag_rows(&contact.id).await?,
        consents: t.consent_history(&contact.id).await?,
        notes,
        timeline,
        phone_suppressions: match &phone {
            Some(p) => t.suppression_history(p).await?,
            None => vec![],
        },
        audience_memberships: contact_memberships(t, &contact.id, &email_sha, phone.as_deref()).await?,
        contact,
    }))
}

/// The ids of the runs about a contact, after `after`, in id order: its contact-scoped runs,
/// the runs its timeline names, and the runs whose history holds its email or phone.
pub(crate) async fn runs_about_contact<T: GdprTx>(t: &mut T, c: &Contact, after: Option<&str>, limit: i64) -> Result<Vec<String>> {
    let n = needles(c);
    t.runs_about(&c.id, &n.search, after.unwrap_or(""), limit).await
}

/// A contact's audience memberships: by its id, and by the hashes of its email and phone
/// (the phone as each platform's `Hashing` writes it: with `+`, and digits only for Meta).
async fn contact_memberships<T: GdprTx>(t: &mut T, id: &str, email_sha: &str, phone: Option<&str>) -> Result<Vec<AudienceMember>> {
    let mut out = t.memberships(id, Some(email_sha), phone.map(sha256_hex).as_deref()).await?;
    if let Some(meta) = phone.and_then(|p| enlace_core::audience::Hashing::Meta.phone_sha256(p).ok()) {
        for m in t.memberships(id, None, Some(&meta)).await? {
            if !out.iter().any(|o| o.id == m.id) {
                out.push(m);
            }
        }
    }
    Ok(out)
}

/// Queues a removal per audience membership of the contact and forgets the memberships:
/// on erasure, and when the contact withdraws its `ads` consent. How many it queued.
pub(crate) async fn queue_removals<T: GdprTx>(t: &mut T, c: &Contact, reason: &str, now: Millis) -> Result<i64> {
    let email_sha = sha256_hex(&c.email);
    let members = contact_memberships(t, &c.id, &email_sha, phone_of(&c.fields).as_deref()).await?;
    for m in &members {
        let r = AudienceRemovalRow {
            id: new_id(),
            app: m.app.clone(),
            connection_id: m.connection_id.clone(),
            remove_action: m.remove_action.clone(),
            audience: m.audience.clone(),
            email_sha256: m.email_sha256.clone(),
            phone_sha256: m.phone_sha256.clone(),
            reason: reason.into(),
            status: "pending".into(),
            attempts: 0,
            due_at: Some(now),
            last_error: None,
            created_at: now,
            updated_at: now,
            done_at: None,
        };
        t.queue_removal(&r).await?;
        t.delete_membership(&m.id).await?;
    }
    Ok(members.len() as i64)
}

/// Erases a contact in one transaction: cancels its pending runs, redacts its personal data
/// in the history of every run about it, queues the removals from its ad audiences, drops
/// its phone's suppression history (unless another contact has the number), deletes it
/// with every row about it, and records the erasure.
pub(crate) async fn erase<T: ContactTx + GdprTx>(
    t: &mut T,
    key: ContactKey,
    by: &str,
    hash_key: &[u8; 32],
    now: Millis,
) -> Result<Erasure> {
    let key = normal_key(key)?;
    let Some(contact) = t.contact(&key, true).await? else {
        return Err(match key {
            ContactKey::Id(id) => StoreError::NotFound(format!("no contact with the id `{id}`")),
            ContactKey::Email(e) => StoreError::NotFound(format!("no contact with the email `{e}`")),
        });
    };
    let n = needles(&contact);
    let mut ids = vec![];
    let mut after = String::new();
    loop {
        let page = t.runs_about(&contact.id, &n.search, &after, 500).await?;
        let Some(last) = page.last().cloned() else { break };
        ids.extend(page);
        after = last;
    }
    let cancel_error = json!({"class": "cancelled", "message": "cancelled: the contact it was about was erased"}).to_string();
    let (mut redacted, mut cancelled) = (0, 0);
    // In id order, as every write locking many runs does.
    for id in &ids {
        if t.cancel_run(id, &cancel_error, now).await? {
            cancelled += 1;
        }
        let Some(mut texts) = t.run_texts(id).await? else { continue };
        let mut changed = false;
        if let Some(p) = n.redact_text(&texts.payload) {
            texts.payload = p;
            changed = true;
        }
        if texts.dedupe_key.as_deref().is_some_and(|k| n.found_in(k)) {
            // Unique per recipe: the event's id keeps it so.
            texts.dedupe_key = Some(format!("{ERASED}:{}", texts.event_id));
            changed = true;
        }
        if let Some(e) = texts.error.as_deref().and_then(|e| n.redact_text(e)) {
            texts.error = Some(e);
            changed = true;
        }
        for (_, input, output, error) in texts.steps.iter_mut() {
            for slot in [input, output, error] {
                if let Some(x) = slot.as_deref().and_then(|s| n.redact_text(s)) {
                    *slot = Some(x);
                    changed = true;
                }
            }
        }
        if changed {
            t.write_run_texts(&texts).await?;
            redacted += 1;
        }
    }
    let removals = queue_removals(t, &contact, "erased", now).await?;
    let phone = phone_of(&contact.fields);
    let mut phone_withdrawn = vec![];
    if let Some(p) = &phone
        && t.contacts_by_phone(p, true).await?.iter().all(|id| *id == contact.id)
    {
        // The number's STOPs stay honoured, by its keyed hash (see `erased_phone_decision`).
        for s in t.suppressions(p).await? {
            if s.status == ConsentStatus::Withdrawn {
                phone_withdrawn.push(format!("{}:{}", s.purpose, s.channel));
            }
        }
        t.delete_suppressions(p).await?;
    }
    t.delete_contact(&contact.id).await?;
    let e = Erasure {
        id: new_id(),
        contact_id: contact.id.clone(),
        email_hash: keyed_hash(hash_key, &contact.email),
        phone_hash: phone.as_deref().map(|p| keyed_hash(hash_key, p)),
        phone_withdrawn,
        erased_by: by.into(),
        erased_at: now,
        runs_redacted: redacted,
        runs_cancelled: cancelled,
        removals_queued: removals,
    };
    t.insert_erasure(&e).await?;
    Ok(e)
}

/// Records that a person was added to an ad audience (hashed identifiers only). The key
/// makes a repeated add of the same person to the same audience one row.
pub(crate) async fn record_membership<T: GdprTx>(t: &mut T, m: NewMembership) -> Result<AudienceMember> {
    if m.email.is_none() && m.phone.is_none() {
        return Err(StoreError::Invalid("an audience membership needs an email or a phone".into()));
    }
    let contact_id = t.contact_id_for(m.email.as_deref(), m.phone.as_deref()).await?;
    let row = AudienceMember {
        id: new_id(),
        contact_id,
        email_sha256: m.email_sha256.or_else(|| m.email.as_deref().map(sha256_hex)),
        phone_sha256: m.phone_sha256.or_else(|| m.phone.as_deref().map(sha256_hex)),
        app: m.app,
        connection_id: m.connection_id,
        remove_action: m.remove_action,
        audience: m.audience,
        run_id: m.run_id,
        added_at: m.now,
    };
    let member_key = sha256_hex(&json!([row.app, row.connection_id, row.audience, row.email_sha256, row.phone_sha256]).to_string());
    t.upsert_membership(&row, &member_key).await?;
    Ok(row)
}

/// Normalises the identifiers of a membership: the email lowercased, the phone to E.164.
pub fn membership_identifiers(email: Option<&str>, phone: Option<&str>) -> std::result::Result<(Option<String>, Option<String>), String> {
    let email = email.filter(|e| !e.trim().is_empty()).map(normalize_email).transpose()?;
    let phone = phone.filter(|p| !p.trim().is_empty()).map(normalize_phone).transpose()?;
    Ok((email, phone))
}

/// Runs about a contact as the export shows them: their details, the next page's cursor.
pub(crate) fn page(mut details: Vec<RunDetail>, limit: i64) -> (Vec<RunDetail>, Option<String>) {
    let more = details.len() as i64 > limit;
    details.truncate(limit.max(0) as usize);
    let next = if more { details.last().map(|d| d.run.id.clone()) } else { None };
    (details, next)
}

macro_rules! on_backend {
    ($self:ident, $b:ident => $e:expr) => {
        match &$self.backend {
            crate::Backend::Sqlite($b) => $e,
            crate::Backend::Postgres($b) => $e,
        }
    };
}

impl Store {
    fn erasure_key(&self) -> [u8; 32] {
        self.sign_link(ERASURE_KEY_CONTEXT, b"")
    }

    /// Erases a contact (by id or email) in one transaction: its pending runs cancelled, its
    /// personal data in the history of every run about it replaced by `[erased]`, a removal
    /// queued per ad audience membership, its phone's suppression history dropped (unless
    /// another contact has the number), the contact and every row about it deleted, and an
    /// [`Erasure`] recorded with keyed hashes only. `NotFound` when there is no such contact.
    pub async fn erase(&self, key: ContactKey, by: &str, now: Millis) -> Result<Erasure> {
        let k = self.erasure_key();
        on_backend!(self, b => b.erase(key, by, k, now).await)
    }

    /// The erasures of a contact id (one, normally).
    pub async fn erasure_of(&self, contact_id: &str) -> Result<Option<Erasure>> {
        Ok(on_backend!(self, b => b.erasures(Some(contact_id), None, None).await)?.into_iter().next())
    }

    /// The erasures of contacts that had this email (matched by its keyed hash).
    pub async fn erasures_of_email(&self, email: &str) -> Result<Vec<Erasure>> {
        let email = normalize_email(email).map_err(StoreError::Invalid)?;
        let h = keyed_hash(&self.erasure_key(), &email);
        on_backend!(self, b => b.erasures(None, Some(&h), None).await)
    }

    /// A withdrawal a phone number sent itself (an SMS STOP) before its contact was erased:
    /// the suppression list's rows went with the contact, the erasure record keeps the
    /// decision under the number's keyed hash, so the number stays suppressed.
    pub(crate) async fn erased_phone_decision(&self, phone: &str, purpose: &str, channel: &str) -> Result<Option<PhoneDecision>> {
        let Ok(phone) = normalize_phone(phone) else { return Ok(None) };
        let h = keyed_hash(&self.erasure_key(), &phone);
        let found = on_backend!(self, b => b.erasures(None, None, Some(&h)).await)?;
        let want = format!("{purpose}:{channel}");
        Ok(found.into_iter().rev().find(|e| e.phone_withdrawn.contains(&want)).map(|e| PhoneDecision {
            phone,
            status: ConsentStatus::Withdrawn,
            evidence: Evidence {
                source: "a withdrawal this number sent, kept when its contact was erased".into(),
                ip: None,
                text: None,
                recorded_at: e.erased_at,
                run_id: None,
                details: [("erasure_id".to_string(), json!(e.id))].into_iter().collect(),
            },
            at: e.erased_at,
            contact_id: None,
        }))
    }

    /// The ids of the runs about a contact, in id order after `after`: the runs its timeline
    /// names and the runs whose event, error or steps hold its email or phone. This is the
    /// one place that decides which runs are about a contact (export, erasure).
    pub async fn runs_about_contact(&self, contact: &Contact, after: Option<&str>, limit: i64) -> Result<Vec<String>> {
        on_backend!(self, b => b.runs_about_contact(contact, after, limit).await)
    }

    /// Everything stored about a contact, with one page of the runs about it (at most
    /// `runs_limit`, after `runs_after`). `None` when there is no such contact.
    pub async fn export_contact(
        &self,
        key: ContactKey,
        runs_after: Option<&str>,
        runs_limit: i64,
        now: Millis,
    ) -> Result<Option<ContactExport>> {
        let Some(records) = on_backend!(self, b => b.contact_records(key).await)? else { return Ok(None) };
        let limit = if runs_limit <= 0 { EXPORT_RUNS_PAGE } else { runs_limit.min(1000) };
        let ids = self.runs_about_contact(&records.contact, runs_after, limit + 1).await?;
        let mut details = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(d) = self.run_detail(&id).await? {
                details.push(d);
            }
        }
        let (runs, runs_next) = page(details, limit);
        Ok(Some(ContactExport { format: "enlace.contact-export.v1", exported_at: now, records, runs, runs_next }))
    }

    /// Records that an action added a person to an ad audience (see [`NewMembership`]).
    pub async fn record_audience_member(&self, m: NewMembership) -> Result<AudienceMember> {
        on_backend!(self, b => b.record_membership(m).await)
    }

    /// The audience removal queue, newest first (`status`: `pending`, `sending`, `done`, `failed`).
    pub async fn audience_removals(&self, status: Option<&str>, limit: i64) -> Result<Vec<AudienceRemovalRow>> {
        if let Some(s) = status
            && !["pending", "sending", "done", "failed"].contains(&s)
        {
            return Err(StoreError::Invalid(format!("`{s}` is not a removal status; use pending, sending, done or failed")));
        }
        on_backend!(self, b => b.audience_removals(status, limit.clamp(1, 1000)).await)
    }

    /// Claims up to `limit` due removals for `owner` for `lease_ms` (a claim whose lease runs
    /// out is claimed again: its node died mid-call).
    pub async fn claim_audience_removals(&self, owner: &str, now: Millis, limit: i64, lease_ms: i64) -> Result<Vec<AudienceRemovalRow>> {
        on_backend!(self, b => b.claim_audience_removals(owner, now, limit, lease_ms).await)
    }

    /// Ends a claimed removal; `false` when `owner` no longer holds it.
    pub async fn finish_audience_removal(&self, id: &str, owner: &str, outcome: RemovalOutcome, now: Millis) -> Result<bool> {
        on_backend!(self, b => b.finish_audience_removal(id, owner, outcome, now).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contact() -> Contact {
        Contact {
            id: "c1".into(),
            email: "ada@example.com".into(),
            email_original: "Ada@Example.com".into(),
            fields: json!({"first_name": "Ada", "last_name": "Lovelace", "phone": "+1 415 555 2671", "plan": "pro"})
                .as_object()
                .unwrap()
                .clone(),
            tags: vec![],
            created_at: 0,
            updated_at: 0,
            version: 1,
            score: 0.0,
        }
    }

    #[test]
    fn redaction_keeps_structure_and_only_takes_what_names_the_contact() {
        let n = needles(&contact());
        assert!(n.search.contains(&"+14155552671".to_string()) && n.search.contains(&"ada@example.com".to_string()));
        let mut v = json!({
            "body": {"user": {"email": "ADA@example.com", "first_name": "Ada", "phone": "+14155552671"}, "plan": "pro"},
            "greeting": "Hi Ada!", "sms": 14155552671u64, "note": "Adam and Adaline are someone else", "n": 3,
            "by_email": {"ada@example.com": true}, "list": ["x", "mail to ada@example.com"]
        });
        assert!(n.redact(&mut v));
        assert_eq!(
            v,
            json!({
                "body": {"user": {"email": "[erased]", "first_name": "[erased]", "phone": "[erased]"}, "plan": "pro"},
                "greeting": "[erased]", "sms": "[erased]", "note": "Adam and Adaline are someone else", "n": 3,
                "by_email": {"[erased]": true}, "list": ["x", "[erased]"]
            })
        );
        assert_eq!(n.redact_text("{\"a\":\"nothing here\"}"), None);
        assert_eq!(n.redact_text("failed for ada@example.com").as_deref(), Some("\"[erased]\""));
        assert_eq!(like("a_b%c"), "%a\\_b\\%c%");
        assert_eq!(dialect(true, "a = ? AND b = ?"), "a = $1 AND b = $2");
        assert_eq!(dialect(false, "a = ?"), "a = ?");
        assert_eq!(keyed_hash(&[1; 32], "x").len(), 64);
        assert_ne!(keyed_hash(&[1; 32], "x"), keyed_hash(&[2; 32], "x"));
        let (details, next) = page(vec![], 10);
        assert!(details.is_empty() && next.is_none());
    }
}
