//! The contact store on SQLite: [`ContactTx`] over one connection. Writes are jobs of the
//! writer task (in its group commit, each in a savepoint of its own); reads use the read pool.

use enlace_core::contacts::{
    Consent, ConsentStatus, Contact, ContactDetail, ContactKey, ContactOp, Evidence, NewConsent, Note, PhoneConsentOutcome, PhoneDecision,
    TimelineEvent,
};
use enlace_core::scoring::ScoringRules;
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};

use super::{Sqlite, json_text, parse_json};
use crate::contacts::{
    ContactApplied, ContactFilter, ContactTx, ContactWrite, ScoreRow, Suppression, TimelineQuery, apply, apply_phone, detail, fields_of,
    phone_decision, phone_of, score_now, tags_of,
};
use crate::journeys::{Entered, JourneyEntry, enter};
use crate::{Accepted, Millis, NewEvent, Result, new_id};

macro_rules! contact_select {
    () => {
        "SELECT c.id, c.email, c.email_original, c.fields, c.created_at, c.updated_at, c.version,
           sc.points AS score_points, sc.as_of AS score_as_of, sc.half_life AS score_half_life,
           (SELECT json_group_array(t.tag) FROM contact_tags t WHERE t.contact_id = c.id) AS tags
         FROM contacts c LEFT JOIN contact_scores sc ON sc.contact_id = c.id "
    };
}

fn contact_row(r: &SqliteRow) -> Contact {
    Contact {
        id: r.get("id"),
        email: r.get("email"),
        email_original: r.get("email_original"),
        fields: fields_of(&r.get::<String, _>("fields")),
        tags: tags_of(r.get("tags")),
        created_at: r.get("created_at"),
        updated_at: r.get("updated_at"),
        version: r.get("version"),
        score: score_now(r.get("score_points"), r.get("score_as_of"), r.get("score_half_life")),
    }
}

/// The status and evidence of a consent or suppression row.
fn consent_row_of(evidence: Option<String>, status: String) -> (ConsentStatus, Evidence) {
    let evidence = parse_json(evidence).and_then(|v| serde_json::from_value::<Evidence>(v).ok()).unwrap_or(Evidence {
        source: String::new(),
        ip: None,
        text: None,
        recorded_at: 0,
        run_id: None,
        details: Default::default(),
    });
    (ConsentStatus::parse(&status).unwrap_or(ConsentStatus::Withdrawn), evidence)
}

fn consent_row(r: &SqliteRow) -> Consent {
    let evidence = parse_json(r.get("evidence")).and_then(|v| serde_json::from_value::<Evidence>(v).ok()).unwrap_or(Evidence {
        source: String::new(),
        ip: None,
        text: None,
        recorded_at: 0,
        run_id: None,
        details: Default::default(),
    });
    Consent {
        id: r.get("id"),
        purpose: r.get("purpose"),
        channel: r.get("channel"),
        status: ConsentStatus::parse(&r.get::<String, _>("status")).unwrap_or(ConsentStatus::Withdrawn),
        evidence,
        at: r.get("at"),
    }
}

fn note_row(r: &SqliteRow) -> Note {
    Note { id: r.get("id"), body: r.get("body"), author: r.get("author"), at: r.get("at") }
}

fn timeline_row(r: &SqliteRow) -> TimelineEvent {
    TimelineEvent {
        id: r.get("id"),
        kind: r.get("kind"),
        data: parse_json(r.get("data")).unwrap_or_default(),
        run_id: r.get("run_id"),
        at: r.get("at"),
    }
}

pub(crate) struct Tx<'c>(pub(crate) &'c mut SqliteConnection);

impl ContactTx for Tx<'_> {
    async fn contact(&mut self, key: &ContactKey, _lock: bool) -> Result<Option<Contact>> {
        let (sql, v) = match key {
            ContactKey::Id(id) => (concat!(contact_select!(), "WHERE c.id = ?"), id),
            ContactKey::Email(e) => (concat!(contact_select!(), "WHERE c.email = ?"), e),
        };
        Ok(sqlx::query(sql).bind(v).fetch_optional(&mut *self.0).await?.map(|r| contact_row(&r)))
    }

    async fn insert_contact(&mut self, c: &Contact) -> Result<bool> {
        let r = sqlx::query(
            "INSERT INTO contacts (id, email, email_original, fields, created_at, updated_at, version, phone) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (email) DO NOTHING",
        )
        .bind(&c.id)
        .bind(&c.email)
        .bind(&c.email_original)
        .bind(json_text(&serde_json::Value::Object(c.fields.clone())))
        .bind(c.created_at)
        .bind(c.updated_at)
        .bind(c.version)
        .bind(phone_of(&c.fields))
        .execute(&mut *self.0)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn update_contact(&mut self, c: &Contact) -> Result<()> {
        sqlx::query("UPDATE contacts SET fields = ?1, updated_at = ?2, version = ?3, phone = ?5 WHERE id = ?4")
            .bind(json_text(&serde_json::Value::Object(c.fields.clone())))
            .bind(c.updated_at)
            .bind(c.version)
            .bind(&c.id)
            .bind(phone_of(&c.fields))
            .execute(&mut *self.0)
            .await?;
        Ok(())
    }

    async fn insert_tag(&mut self, contact_id: &str, tag: &str, at: Millis) -> Result<bool> {
        let r = sqlx::query("INSERT INTO contact_tags (contact_id, tag, added_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING")
            .bind(contact_id)
            .bind(tag)
            .bind(at)
            .execute(&mut *self.0)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn delete_tag(&mut self, contact_id: &str, tag: &str) -> Result<bool> {
        let r = sqlx::query("DELETE FROM contact_tags WHERE contact_id = ? AND tag = ?")
            .bind(contact_id)
            .bind(tag)
            .execute(&mut *self.0)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn consent_by_op(&mut self, contact_id: &str, op_key: &str) -> Result<Option<Consent>> {
        let r = sqlx::query("SELECT id, purpose, channel, status, evidence, at FROM contact_consents WHERE contact_id = ? AND op_key = ?")
            .bind(contact_id)
            .bind(op_key)
            .fetch_optional(&mut *self.0)
            .await?;
        Ok(r.map(|r| consent_row(&r)))
    }

    async fn insert_consent(&mut self, contact_id: &str, c: &Consent, op_key: Option<&str>) -> Result<()> {
        sqlx::query(
            "INSERT INTO contact_consents (id, contact_id, purpose, channel, status, evidence, at, op_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&c.id)
        .bind(contact_id)
        .bind(&c.purpose)
        .bind(&c.channel)
        .bind(c.status.as_str())
        .bind(json_text(&serde_json::to_value(&c.evidence).unwrap_or_default()))
        .bind(c.at)
        .bind(op_key)
        .execute(&mut *self.0)
        .await?;
        Ok(())
    }

    async fn note_by_op(&mut self, contact_id: &str, op_key: &str) -> Result<Option<Note>> {
        let r = sqlx::query("SELECT id, body, author, at FROM contact_notes WHERE contact_id = ? AND op_key = ?")
            .bind(contact_id)
            .bind(op_key)
            .fetch_optional(&mut *self.0)
            .await?;
        Ok(r.map(|r| note_row(&r)))
    }

    async fn insert_note(&mut self, contact_id: &str, n: &Note, op_key: Option<&str>) -> Result<()> {
        sqlx::query("INSERT INTO contact_notes (id, contact_id, body, author, at, op_key) VALUES (?, ?, ?, ?, ?, ?)")
            .bind(&n.id)
            .bind(contact_id)
            .bind(&n.body)
            .bind(&n.author)
            .bind(n.at)
            .bind(op_key)
            .execute(&mut *self.0)
            .await?;
        Ok(())
    }

    async fn insert_timeline(&mut self, contact_id: &str, e: &TimelineEvent, op_key: Option<&str>) -> Result<()> {
        sqlx::query("INSERT INTO contact_events (id, contact_id, kind, data, run_id, at, op_key) VALUES (?, ?, ?, ?, ?, ?, ?)")
            .bind(&e.id)
            .bind(contact_id)
            .bind(&e.kind)
            .bind(json_text(&e.data))
            .bind(&e.run_id)
            .bind(e.at)
            .bind(op_key)
            .execute(&mut *self.0)
            .await?;
        Ok(())
    }

    async fn timeline_by_op(&mut self, contact_id: &str, op_key: &str) -> Result<Option<TimelineEvent>> {
        let r = sqlx::query("SELECT id, kind, data, run_id, at FROM contact_events WHERE contact_id = ? AND op_key = ?")
            .bind(contact_id)
            .bind(op_key)
            .fetch_optional(&mut *self.0)
            .await?;
        Ok(r.map(|r| timeline_row(&r)))
    }

    async fn scoring(&mut self) -> Result<Option<ScoringRules>> {
        let text: Option<String> = sqlx::query_scalar("SELECT rules FROM scoring_rules WHERE id = 1").fetch_optional(&mut *self.0).await?;
        Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
    }

    async fn score(&mut self, contact_id: &str) -> Result<Option<ScoreRow>> {
        let r = sqlx::query("SELECT points, as_of, half_life, above FROM contact_scores WHERE contact_id = ?")
            .bind(contact_id)
            .fetch_optional(&mut *self.0)
            .await?;
        Ok(r.map(|r| ScoreRow {
            points: r.get("points"),
            as_of: r.get("as_of"),
            half_life: r.get("half_life"),
            above: serde_json::from_str(&r.get::<String, _>("above")).unwrap_or_default(),
        }))
    }

    async fn put_score(&mut self, contact_id: &str, s: &ScoreRow, now: Millis) -> Result<()> {
        sqlx::query(
            "INSERT INTO contact_scores (contact_id, points, as_of, half_life, above, updated_at) VALUES (?, ?, ?, ?, ?, ?)
             ON CONFLICT (contact_id) DO UPDATE SET points = excluded.points, as_of = excluded.as_of, half_life = excluded.half_life,
               above = excluded.above, updated_at = excluded.updated_at",
        )
        .bind(contact_id)
        .bind(s.points)
        .bind(s.as_of)
        .bind(s.half_life)
        .bind(serde_json::to_string(&s.above).unwrap_or_else(|_| "[]".into()))
        .bind(now)
        .execute(&mut *self.0)
        .await?;
        Ok(())
    }

    async fn insert_run(&mut self, e: &NewEvent) -> Result<Option<Accepted>> {
        let (event_id, run_id) = (new_id(), new_id());
        let r = sqlx::query(
            "INSERT INTO events (id, recipe_id, source, dedupe_key, payload, received_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(&event_id)
        .bind(&e.recipe_id)
        .bind(&e.source)
        .bind(&e.dedupe_key)
        .bind(&e.payload)
        .bind(e.now)
        .execute(&mut *self.0)
        .await?;
        if r.rows_affected() == 0 {
            return Ok(None);
        }
        sqlx::query(
            "INSERT INTO runs (id, recipe_id, recipe_version, event_id, status, due_at, created_at, updated_at) VALUES (?, ?, ?, ?, 'queued', ?, ?, ?)",
        )
        .bind(&run_id)
        .bind(&e.recipe_id)
        .bind(e.recipe_version)
        .bind(&event_id)
        .bind(e.now)
        .bind(e.now)
        .bind(e.now)
        .execute(&mut *self.0)
        .await?;
        Ok(Some(Accepted { run_id, event_id, duplicate: false }))
    }

    async fn current_consents(&mut self, contact_id: &str) -> Result<Vec<Consent>> {
        let rows = sqlx::query(
            "SELECT id, purpose, channel, status, evidence, at FROM contact_consents c
             WHERE c.contact_id = ? AND NOT EXISTS (
               SELECT 1 FROM contact_consents d WHERE d.contact_id = c.contact_id AND d.purpose = c.purpose AND d.channel = c.channel
                 AND (d.at > c.at OR (d.at = c.at AND d.id > c.id)))
             ORDER BY purpose, channel",
        )
        .bind(contact_id)
        .fetch_all(&mut *self.0)
        .await?;
        Ok(rows.iter().map(consent_row).collect())
    }

    async fn notes(&mut self, contact_id: &str) -> Result<Vec<Note>> {
        let rows = sqlx::query("SELECT id, body, author, at FROM contact_notes WHERE contact_id = ? ORDER BY at DESC, id DESC")
            .bind(contact_id)
            .fetch_all(&mut *self.0)
            .await?;
        Ok(rows.iter().map(note_row).collect())
    }

    async fn timeline(&mut self, contact_id: &str, q: &TimelineQuery) -> Result<Vec<TimelineEvent>> {
        let mut sql = String::from("SELECT id, kind, data, run_id, at FROM contact_events WHERE contact_id = ?");
        if !q.kinds.is_empty() {
            sql.push_str(" AND kind IN (");
            sql.push_str(&vec!["?"; q.kinds.len()].join(", "));
            sql.push(')');
        }
        if q.since.is_some() {
            sql.push_str(" AND at >= ?");
        }
        if q.until.is_some() {
            sql.push_str(" AND at < ?");
        }
        if q.before.is_some() {
            sql.push_str(" AND (at < ? OR (at = ? AND id < ?))");
        }
        sql.push_str(" ORDER BY at DESC, id DESC LIMIT ?");
        // Assembled from fixed fragments only; every value is bound.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(contact_id);
        for k in &q.kinds {
            query = query.bind(k);
        }
        for t in [q.since, q.until].into_iter().flatten() {
            query = query.bind(t);
        }
        if let Some((at, id)) = &q.before {
            query = query.bind(*at).bind(*at).bind(id);
        }
        let rows = query.bind(q.limit()).fetch_all(&mut *self.0).await?;
        Ok(rows.iter().map(timeline_row).collect())
    }

    async fn contacts_by_phone(&mut self, phone: &str, _lock: bool) -> Result<Vec<String>> {
        // The writer is alone: nothing to lock.
        Ok(sqlx::query_scalar("SELECT id FROM contacts WHERE phone = ? ORDER BY id").bind(phone).fetch_all(&mut *self.0).await?)
    }

    async fn latest_consent(&mut self, contact_id: &str, purpose: &str, channel: &str) -> Result<Option<Consent>> {
        let r = sqlx::query(
            "SELECT id, purpose, channel, status, evidence, at FROM contact_consents WHERE contact_id = ? AND purpose = ? AND channel = ?
             ORDER BY at DESC, id DESC LIMIT 1",
        )
        .bind(contact_id)
        .bind(purpose)
        .bind(channel)
        .fetch_optional(&mut *self.0)
        .await?;
        Ok(r.map(|r| consent_row(&r)))
    }

    async fn latest_consents(&mut self, contact_id: &str, purposes: &[&str], channel: &str) -> Result<Vec<Option<Consent>>> {
        let list = serde_json::to_string(purposes).unwrap_or_else(|_| "[]".into());
        let rows = sqlx::query(
            "SELECT id, purpose, channel, status, evidence, at FROM contact_consents
             WHERE contact_id = ? AND channel = ? AND purpose IN (SELECT value FROM json_each(?))
             ORDER BY at DESC, id DESC",
        )
        .bind(contact_id)
        .bind(channel)
        .bind(list)
        .fetch_all(&mut *self.0)
        .await?;
        Ok(crate::contacts::latest_per_purpose(rows.iter().map(consent_row).collect(), purposes))
    }

    async fn suppressions(&mut self, phone: &str) -> Result<Vec<Suppression>> {
        let rows = sqlx::query(
            "SELECT phone, purpose, channel, status, evidence, at, op_key FROM phone_suppressions s
             WHERE s.phone = ? AND NOT EXISTS (
               SELECT 1 FROM phone_suppressions d WHERE d.phone = s.phone AND d.purpose = s.purpose AND d.channel = s.channel
                 AND (d.at > s.at OR (d.at = s.at AND d.id > s.id)))
             ORDER BY purpose, channel",
        )
        .bind(phone)
        .fetch_all(&mut *self.0)
        .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let (status, evidence) = consent_row_of(r.get("evidence"), r.get("status"));
                Suppression {
                    phone: r.get("phone"),
                    purpose: r.get("purpose"),
                    channel: r.get("channel"),
                    status,
                    evidence,
                    at: r.get("at"),
                    op_key: r.get("op_key"),
                }
            })
            .collect())
    }

    async fn suppression_seen(&mut self, phone: &str, op_key: &str) -> Result<bool> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM phone_suppressions WHERE phone = ? AND op_key = ?")
            .bind(phone)
            .bind(op_key)
            .fetch_one(&mut *self.0)
            .await?;
        Ok(n > 0)
    }

    async fn put_suppression(&mut self, s: &Suppression) -> Result<()> {
        sqlx::query(
            "INSERT INTO phone_suppressions (id, phone, purpose, channel, status, evidence, at, op_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(new_id())
        .bind(&s.phone)
        .bind(&s.purpose)
        .bind(&s.channel)
        .bind(s.status.as_str())
        .bind(json_text(&serde_json::to_value(&s.evidence).unwrap_or_default()))
        .bind(s.at)
        .bind(&s.op_key)
        .execute(&mut *self.0)
        .await?;
        Ok(())
    }

    async fn wake_runs(&mut self, contact_id: &str, kind: &str, now: Millis) -> Result<u64> {
        let r = sqlx::query(
            "UPDATE runs SET due_at = ?, updated_at = ? WHERE contact_id = ? AND status = 'waiting' AND due_at > ? AND instr(wake_on, ?) > 0",
        )
        .bind(now)
        .bind(now)
        .bind(contact_id)
        .bind(now)
        .bind(format!(",{kind},"))
        .execute(&mut *self.0)
        .await?;
        Ok(r.rows_affected())
    }

    async fn lock_journey(&mut self, _recipe_id: &str, _contact_id: &str) -> Result<()> {
        Ok(())
    }

    async fn bind_run_contact(&mut self, run_id: &str, owner: &str, contact_id: &str, wake_on: Option<&str>) -> Result<bool> {
        let r = sqlx::query("UPDATE runs SET contact_id = ?, wake_on = ? WHERE id = ? AND status = 'running' AND owner = ?")
            .bind(contact_id)
            .bind(wake_on)
            .bind(run_id)
            .bind(owner)
            .execute(&mut *self.0)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn journey_entries(&mut self, recipe_id: &str, contact_id: &str, run_id: &str) -> Result<(bool, Option<Millis>)> {
        let r = sqlx::query(
            "SELECT COALESCE(MAX(run_id = ?), 0) AS mine, MAX(entered_at) AS last FROM journey_entries WHERE recipe_id = ? AND contact_id = ?",
        )
        .bind(run_id)
        .bind(recipe_id)
        .bind(contact_id)
        .fetch_one(&mut *self.0)
        .await?;
        Ok((r.get::<i64, _>("mine") != 0, r.get("last")))
    }

    async fn insert_journey_entry(&mut self, recipe_id: &str, contact_id: &str, run_id: &str, at: Millis) -> Result<()> {
        sqlx::query("INSERT INTO journey_entries (recipe_id, contact_id, run_id, entered_at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING")
            .bind(recipe_id)
            .bind(contact_id)
            .bind(run_id)
            .bind(at)
            .execute(&mut *self.0)
            .await?;
        Ok(())
    }

    async fn events_since(&mut self, contact_id: &str, kind: &str, since: Millis, limit: i64) -> Result<Vec<TimelineEvent>> {
        let rows = sqlx::query(
            "SELECT id, kind, data, run_id, at FROM contact_events WHERE contact_id = ? AND at >= ? AND kind = ? ORDER BY at, id LIMIT ?",
        )
        .bind(contact_id)
        .bind(since)
        .bind(kind)
        .bind(limit)
        .fetch_all(&mut *self.0)
        .await?;
        Ok(rows.iter().map(timeline_row).collect())
    }
}

impl Sqlite {
    pub(crate) async fn enter_journey(&self, j: JourneyEntry) -> Result<Entered> {
        self.write(move |c| Box::pin(async move { enter(&mut Tx(c), &j).await })).await
    }

    pub(crate) async fn contact_events(&self, contact_id: &str, kind: &str, since: Millis, limit: i64) -> Result<Vec<TimelineEvent>> {
        let mut c = self.read.acquire().await?;
        Tx(&mut c).events_since(contact_id, kind, since, limit).await
    }

    pub(crate) async fn apply_contact(&self, op: ContactOp, w: ContactWrite) -> Result<ContactApplied> {
        self.write(move |c| Box::pin(async move { apply(&mut Tx(c), op, &w).await })).await
    }

    pub(crate) async fn apply_phone_consent(
        &self,
        phone: &str,
        consent: NewConsent,
        w: ContactWrite,
    ) -> Result<(PhoneConsentOutcome, Vec<Accepted>)> {
        let phone = phone.to_string();
        self.write(move |c| Box::pin(async move { apply_phone(&mut Tx(c), &phone, consent, &w).await })).await
    }

    pub(crate) async fn phone_consent(&self, phone: &str, purpose: &str, channel: &str) -> Result<Option<PhoneDecision>> {
        let mut c = self.read.acquire().await?;
        phone_decision(&mut Tx(&mut c), phone, purpose, channel).await
    }

    pub(crate) async fn contact(&self, key: &ContactKey) -> Result<Option<Contact>> {
        let mut c = self.read.acquire().await?;
        Tx(&mut c).contact(key, false).await
    }

    pub(crate) async fn contact_detail(&self, key: ContactKey, timeline: i64) -> Result<Option<ContactDetail>> {
        let mut c = self.read.acquire().await?;
        detail(&mut Tx(&mut c), key, timeline).await
    }

    pub(crate) async fn list_contacts(&self, f: &ContactFilter) -> Result<Vec<Contact>> {
        let mut sql = String::from(concat!(contact_select!(), "WHERE 1 = 1"));
        if f.email.is_some() {
            sql.push_str(" AND c.email = ?");
        }
        if f.tag.is_some() {
            sql.push_str(" AND EXISTS (SELECT 1 FROM contact_tags x WHERE x.contact_id = c.id AND x.tag = ?)");
        }
        if f.after.is_some() {
            sql.push_str(" AND c.id > ?");
        }
        sql.push_str(" ORDER BY c.id LIMIT ?");
        // Assembled from fixed fragments only; every value is bound.
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for v in [&f.email, &f.tag, &f.after].into_iter().flatten() {
            q = q.bind(v);
        }
        let rows = q.bind(f.limit()).fetch_all(&self.read).await?;
        Ok(rows.iter().map(contact_row).collect())
    }

    pub(crate) async fn timeline_page(&self, contact_id: &str, q: &TimelineQuery) -> Result<Vec<TimelineEvent>> {
        let mut c = self.read.acquire().await?;
        Tx(&mut c).timeline(contact_id, q).await
    }

    pub(crate) async fn scoring_rules(&self) -> Result<Option<ScoringRules>> {
        let mut c = self.read.acquire().await?;
        Tx(&mut c).scoring().await
    }

    pub(crate) async fn set_scoring_rules(&self, rules: String, now: Millis) -> Result<()> {
        self.write(move |c| {
            Box::pin(async move {
                sqlx::query(
                    "INSERT INTO scoring_rules (id, rules, updated_at) VALUES (1, ?, ?)
                     ON CONFLICT (id) DO UPDATE SET rules = excluded.rules, updated_at = excluded.updated_at",
                )
                .bind(rules)
                .bind(now)
                .execute(&mut *c)
                .await?;
                Ok(())
            })
        })
        .await
    }
}
