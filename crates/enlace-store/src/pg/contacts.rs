//! The contact store on PostgreSQL: [`ContactTx`] over one connection. A write is one
//! transaction; the contact's row is locked (`FOR UPDATE`) before it is changed, and an
//! insert of an email another transaction is inserting waits for it (`ON CONFLICT DO
//! NOTHING`), then updates that contact. A run started by the change sends the wake-up
//! (`pg_notify`), delivered at commit.

use enlace_core::contacts::{
    Consent, ConsentStatus, Contact, ContactDetail, ContactKey, ContactOp, Evidence, NewConsent, Note, PhoneConsentOutcome, PhoneDecision,
    TimelineEvent,
};
use enlace_core::scoring::ScoringRules;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Postgres, QueryBuilder, Row};

use super::{Pg, pg_err};
use crate::contacts::{
    ContactApplied, ContactFilter, ContactTx, ContactWrite, ScoreRow, Suppression, TimelineQuery, apply, apply_phone, detail, fields_of,
    phone_decision, phone_of, score_now, tags_of,
};
use crate::journeys::{Entered, JourneyEntry, enter};
use crate::sqlite::{json_text, parse_json};
use crate::{Accepted, Millis, NewEvent, Result, new_id};

macro_rules! contact_select {
    () => {
        "SELECT c.id, c.email, c.email_original, c.fields, c.created_at, c.updated_at, c.version,
           sc.points AS score_points, sc.as_of AS score_as_of, sc.half_life AS score_half_life,
           (SELECT COALESCE(json_agg(t.tag), '[]'::json)::text FROM contact_tags t WHERE t.contact_id = c.id) AS tags
         FROM contacts c LEFT JOIN contact_scores sc ON sc.contact_id = c.id "
    };
}

fn contact_row(r: &PgRow) -> Contact {
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

fn consent_row(r: &PgRow) -> Consent {
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

fn note_row(r: &PgRow) -> Note {
    Note { id: r.get("id"), body: r.get("body"), author: r.get("author"), at: r.get("at") }
}

fn timeline_row(r: &PgRow) -> TimelineEvent {
    TimelineEvent {
        id: r.get("id"),
        kind: r.get("kind"),
        data: parse_json(r.get("data")).unwrap_or_default(),
        run_id: r.get("run_id"),
        at: r.get("at"),
    }
}

pub(crate) struct Tx<'c>(pub(crate) &'c mut PgConnection);

impl ContactTx for Tx<'_> {
    async fn contact(&mut self, key: &ContactKey, lock: bool) -> Result<Option<Contact>> {
        let (sql, v) = match (key, lock) {
            (ContactKey::Id(id), false) => (concat!(contact_select!(), "WHERE c.id = $1"), id),
            (ContactKey::Email(e), false) => (concat!(contact_select!(), "WHERE c.email = $1"), e),
            (ContactKey::Id(id), true) => (concat!(contact_select!(), "WHERE c.id = $1 FOR UPDATE OF c"), id),
            (ContactKey::Email(e), true) => (concat!(contact_select!(), "WHERE c.email = $1 FOR UPDATE OF c"), e),
        };
        Ok(sqlx::query(sql).bind(v).fetch_optional(&mut *self.0).await.map_err(pg_err)?.map(|r| contact_row(&r)))
    }

    async fn insert_contact(&mut self, c: &Contact) -> Result<bool> {
        let r = sqlx::query(
            "INSERT INTO contacts (id, email, email_original, fields, created_at, updated_at, version, phone) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
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
        .await
        .map_err(pg_err)?;
        Ok(r.rows_affected() == 1)
    }

    async fn update_contact(&mut self, c: &Contact) -> Result<()> {
        sqlx::query("UPDATE contacts SET fields = $1, updated_at = $2, version = $3, phone = $5 WHERE id = $4")
            .bind(json_text(&serde_json::Value::Object(c.fields.clone())))
            .bind(c.updated_at)
            .bind(c.version)
            .bind(&c.id)
            .bind(phone_of(&c.fields))
            .execute(&mut *self.0)
            .await
            .map_err(pg_err)?;
        Ok(())
    }

    async fn insert_tag(&mut self, contact_id: &str, tag: &str, at: Millis) -> Result<bool> {
        let r = sqlx::query("INSERT INTO contact_tags (contact_id, tag, added_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
            .bind(contact_id)
            .bind(tag)
            .bind(at)
            .execute(&mut *self.0)
            .await
            .map_err(pg_err)?;
        Ok(r.rows_affected() == 1)
    }

    async fn delete_tag(&mut self, contact_id: &str, tag: &str) -> Result<bool> {
        let r = sqlx::query("DELETE FROM contact_tags WHERE contact_id = $1 AND tag = $2")
            .bind(contact_id)
            .bind(tag)
            .execute(&mut *self.0)
            .await
            .map_err(pg_err)?;
        Ok(r.rows_affected() > 0)
    }

    async fn consent_by_op(&mut self, contact_id: &str, op_key: &str) -> Result<Option<Consent>> {
        let r =
            sqlx::query("SELECT id, purpose, channel, status, evidence, at FROM contact_consents WHERE contact_id = $1 AND op_key = $2")
                .bind(contact_id)
                .bind(op_key)
                .fetch_optional(&mut *self.0)
                .await?;
        Ok(r.map(|r| consent_row(&r)))
    }

    async fn insert_consent(&mut self, contact_id: &str, c: &Consent, op_key: Option<&str>) -> Result<()> {
        sqlx::query(
            "INSERT INTO contact_consents (id, contact_id, purpose, channel, status, evidence, at, op_key) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
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
        .await
        .map_err(pg_err)?;
        Ok(())
    }

    async fn note_by_op(&mut self, contact_id: &str, op_key: &str) -> Result<Option<Note>> {
        let r = sqlx::query("SELECT id, body, author, at FROM contact_notes WHERE contact_id = $1 AND op_key = $2")
            .bind(contact_id)
            .bind(op_key)
            .fetch_optional(&mut *self.0)
            .await?;
        Ok(r.map(|r| note_row(&r)))
    }

    async fn insert_note(&mut self, contact_id: &str, n: &Note, op_key: Option<&str>) -> Result<()> {
        sqlx::query("INSERT INTO contact_notes (id, contact_id, body, author, at, op_key) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(&n.id)
            .bind(contact_id)
            .bind(&n.body)
            .bind(&n.author)
            .bind(n.at)
            .bind(op_key)
            .execute(&mut *self.0)
            .await
            .map_err(pg_err)?;
        Ok(())
    }

    async fn insert_timeline(&mut self, contact_id: &str, e: &TimelineEvent, op_key: Option<&str>) -> Result<()> {
        sqlx::query("INSERT INTO contact_events (id, contact_id, kind, data, run_id, at, op_key) VALUES ($1, $2, $3, $4, $5, $6, $7)")
            .bind(&e.id)
            .bind(contact_id)
            .bind(&e.kind)
            .bind(json_text(&e.data))
            .bind(&e.run_id)
            .bind(e.at)
            .bind(op_key)
            .execute(&mut *self.0)
            .await
            .map_err(pg_err)?;
        Ok(())
    }

    async fn timeline_by_op(&mut self, contact_id: &str, op_key: &str) -> Result<Option<TimelineEvent>> {
        let r = sqlx::query("SELECT id, kind, data, run_id, at FROM contact_events WHERE contact_id = $1 AND op_key = $2")
            .bind(contact_id)
            .bind(op_key)
            .fetch_optional(&mut *self.0)
            .await
            .map_err(pg_err)?;
        Ok(r.map(|r| timeline_row(&r)))
    }

    async fn scoring(&mut self) -> Result<Option<ScoringRules>> {
        let text: Option<String> =
            sqlx::query_scalar("SELECT rules FROM scoring_rules WHERE id = 1").fetch_optional(&mut *self.0).await.map_err(pg_err)?;
        Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
    }

    async fn score(&mut self, contact_id: &str) -> Result<Option<ScoreRow>> {
        let r = sqlx::query("SELECT points, as_of, half_life, above FROM contact_scores WHERE contact_id = $1")
            .bind(contact_id)
            .fetch_optional(&mut *self.0)
            .await
            .map_err(pg_err)?;
        Ok(r.map(|r| ScoreRow {
            points: r.get("points"),
            as_of: r.get("as_of"),
            half_life: r.get("half_life"),
            above: serde_json::from_str(&r.get::<String, _>("above")).unwrap_or_default(),
        }))
    }

    async fn put_score(&mut self, contact_id: &str, s: &ScoreRow, now: Millis) -> Result<()> {
        sqlx::query(
            "INSERT INTO contact_scores (contact_id, points, as_of, half_life, above, updated_at) VALUES ($1, $2, $3, $4, $5, $6)
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
        .await
        .map_err(pg_err)?;
        Ok(())
    }

    async fn insert_run(&mut self, e: &NewEvent) -> Result<Option<Accepted>> {
        let (event_id, run_id) = (new_id(), new_id());
        let r = sqlx::query(
            "INSERT INTO events (id, recipe_id, source, dedupe_key, payload, received_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        )
        .bind(&event_id)
        .bind(&e.recipe_id)
        .bind(&e.source)
        .bind(&e.dedupe_key)
        .bind(&e.payload)
        .bind(e.now)
        .execute(&mut *self.0)
        .await
        .map_err(pg_err)?;
        if r.rows_affected() == 0 {
            return Ok(None);
        }
        sqlx::query(
            "INSERT INTO runs (id, recipe_id, recipe_version, event_id, status, due_at, created_at, updated_at) VALUES ($1, $2, $3, $4, 'queued', $5, $6, $7)",
        )
        .bind(&run_id)
        .bind(&e.recipe_id)
        .bind(e.recipe_version)
        .bind(&event_id)
        .bind(e.now)
        .bind(e.now)
        .bind(e.now)
        .execute(&mut *self.0)
        .await
        .map_err(pg_err)?;
        // Wakes the pollers of every node at commit (notifications of one transaction with
        // the same payload are sent once).
        sqlx::query("SELECT pg_notify('enlace_runs', $1::int8::text)").bind(e.now).execute(&mut *self.0).await?;
        Ok(Some(Accepted { run_id, event_id, duplicate: false }))
    }

    async fn current_consents(&mut self, contact_id: &str) -> Result<Vec<Consent>> {
        let rows = sqlx::query(
            "SELECT id, purpose, channel, status, evidence, at FROM contact_consents c
             WHERE c.contact_id = $1 AND NOT EXISTS (
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
        let rows = sqlx::query("SELECT id, body, author, at FROM contact_notes WHERE contact_id = $1 ORDER BY at DESC, id DESC")
            .bind(contact_id)
            .fetch_all(&mut *self.0)
            .await?;
        Ok(rows.iter().map(note_row).collect())
    }

    async fn timeline(&mut self, contact_id: &str, q: &TimelineQuery) -> Result<Vec<TimelineEvent>> {
        let mut b = QueryBuilder::<Postgres>::new("SELECT id, kind, data, run_id, at FROM contact_events WHERE contact_id = ");
        b.push_bind(contact_id.to_string());
        if !q.kinds.is_empty() {
            b.push(" AND kind = ANY(").push_bind(q.kinds.clone()).push(")");
        }
        if let Some(since) = q.since {
            b.push(" AND at >= ").push_bind(since);
        }
        if let Some(until) = q.until {
            b.push(" AND at < ").push_bind(until);
        }
        if let Some((at, id)) = &q.before {
            b.push(" AND (at, id) < (").push_bind(*at).push(", ").push_bind(id.clone()).push(")");
        }
        b.push(" ORDER BY at DESC, id DESC LIMIT ").push_bind(q.limit());
        let rows = b.build().fetch_all(&mut *self.0).await.map_err(pg_err)?;
        Ok(rows.iter().map(timeline_row).collect())
    }

    async fn contacts_by_phone(&mut self, phone: &str, lock: bool) -> Result<Vec<String>> {
        let sql = if lock {
            "SELECT id FROM contacts WHERE phone = $1 ORDER BY id FOR UPDATE"
        } else {
            "SELECT id FROM contacts WHERE phone = $1 ORDER BY id"
        };
        sqlx::query_scalar(sql).bind(phone).fetch_all(&mut *self.0).await.map_err(pg_err)
    }

    async fn latest_consent(&mut self, contact_id: &str, purpose: &str, channel: &str) -> Result<Option<Consent>> {
        let r = sqlx::query(
            "SELECT id, purpose, channel, status, evidence, at FROM contact_consents WHERE contact_id = $1 AND purpose = $2 AND channel = $3
             ORDER BY at DESC, id DESC LIMIT 1",
        )
        .bind(contact_id)
        .bind(purpose)
        .bind(channel)
        .fetch_optional(&mut *self.0)
        .await.map_err(pg_err)?;
        Ok(r.map(|r| consent_row(&r)))
    }

    async fn latest_consents(&mut self, contact_id: &str, purposes: &[&str], channel: &str) -> Result<Vec<Option<Consent>>> {
        let rows = sqlx::query(
            "SELECT id, purpose, channel, status, evidence, at FROM contact_consents
             WHERE contact_id = $1 AND channel = $2 AND purpose = ANY($3)
             ORDER BY at DESC, id DESC",
        )
        .bind(contact_id)
        .bind(channel)
        .bind(purposes.iter().map(|p| p.to_string()).collect::<Vec<String>>())
        .fetch_all(&mut *self.0)
        .await
        .map_err(pg_err)?;
        Ok(crate::contacts::latest_per_purpose(rows.iter().map(consent_row).collect(), purposes))
    }

    async fn suppressions(&mut self, phone: &str) -> Result<Vec<Suppression>> {
        let rows = sqlx::query(
            "SELECT phone, purpose, channel, status, evidence, at, op_key FROM phone_suppressions s
             WHERE s.phone = $1 AND NOT EXISTS (
               SELECT 1 FROM phone_suppressions d WHERE d.phone = s.phone AND d.purpose = s.purpose AND d.channel = s.channel
                 AND (d.at > s.at OR (d.at = s.at AND d.id > s.id)))
             ORDER BY purpose, channel",
        )
        .bind(phone)
        .fetch_all(&mut *self.0)
        .await
        .map_err(pg_err)?;
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
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM phone_suppressions WHERE phone = $1 AND op_key = $2")
            .bind(phone)
            .bind(op_key)
            .fetch_one(&mut *self.0)
            .await
            .map_err(pg_err)?;
        Ok(n > 0)
    }

    async fn put_suppression(&mut self, s: &Suppression) -> Result<()> {
        sqlx::query(
            "INSERT INTO phone_suppressions (id, phone, purpose, channel, status, evidence, at, op_key) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
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
        .await.map_err(pg_err)?;
        Ok(())
    }

    async fn wake_runs(&mut self, contact_id: &str, kind: &str, now: Millis) -> Result<u64> {
        let r = sqlx::query(
            "UPDATE runs SET due_at = $1, updated_at = $1 WHERE contact_id = $2 AND status = 'waiting' AND due_at > $1 AND strpos(wake_on, $3) > 0",
        )
        .bind(now)
        .bind(contact_id)
        .bind(format!(",{kind},"))
        .execute(&mut *self.0)
        .await
        .map_err(pg_err)?;
        if r.rows_affected() > 0 {
            // Delivered at commit: idle workers on every node look at once.
            sqlx::query("SELECT pg_notify('enlace_runs', $1::int8::text)").bind(now).execute(&mut *self.0).await.map_err(pg_err)?;
        }
        Ok(r.rows_affected())
    }

    async fn lock_journey(&mut self, recipe_id: &str, contact_id: &str) -> Result<()> {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 7))")
            .bind(format!("journey:{recipe_id}:{contact_id}"))
            .execute(&mut *self.0)
            .await
            .map_err(pg_err)?;
        Ok(())
    }

    async fn bind_run_contact(&mut self, run_id: &str, owner: &str, contact_id: &str, wake_on: Option<&str>) -> Result<bool> {
        let r = sqlx::query("UPDATE runs SET contact_id = $1, wake_on = $2 WHERE id = $3 AND status = 'running' AND owner = $4")
            .bind(contact_id)
            .bind(wake_on)
            .bind(run_id)
            .bind(owner)
            .execute(&mut *self.0)
            .await
            .map_err(pg_err)?;
        Ok(r.rows_affected() > 0)
    }

    async fn journey_entries(&mut self, recipe_id: &str, contact_id: &str, run_id: &str) -> Result<(bool, Option<Millis>)> {
        let r = sqlx::query(
            "SELECT COALESCE(bool_or(run_id = $1), false) AS mine, MAX(entered_at) AS last FROM journey_entries WHERE recipe_id = $2 AND contact_id = $3",
        )
        .bind(run_id)
        .bind(recipe_id)
        .bind(contact_id)
        .fetch_one(&mut *self.0)
        .await
        .map_err(pg_err)?;
        Ok((r.get::<bool, _>("mine"), r.get("last")))
    }

    async fn insert_journey_entry(&mut self, recipe_id: &str, contact_id: &str, run_id: &str, at: Millis) -> Result<()> {
        sqlx::query(
            "INSERT INTO journey_entries (recipe_id, contact_id, run_id, entered_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(recipe_id)
        .bind(contact_id)
        .bind(run_id)
        .bind(at)
        .execute(&mut *self.0)
        .await
        .map_err(pg_err)?;
        Ok(())
    }

    async fn events_since(&mut self, contact_id: &str, kind: &str, since: Millis, limit: i64) -> Result<Vec<TimelineEvent>> {
        let rows = sqlx::query(
            "SELECT id, kind, data, run_id, at FROM contact_events WHERE contact_id = $1 AND at >= $2 AND kind = $3 ORDER BY at, id LIMIT $4",
        )
        .bind(contact_id)
        .bind(since)
        .bind(kind)
        .bind(limit)
        .fetch_all(&mut *self.0)
        .await
        .map_err(pg_err)?;
        Ok(rows.iter().map(timeline_row).collect())
    }
}

impl Pg {
    pub(crate) async fn enter_journey(&self, j: JourneyEntry) -> Result<Entered> {
        let mut tx = self.pool.begin().await?;
        let out = enter(&mut Tx(&mut tx), &j).await?;
        tx.commit().await?;
        Ok(out)
    }

    pub(crate) async fn contact_events(&self, contact_id: &str, kind: &str, since: Millis, limit: i64) -> Result<Vec<TimelineEvent>> {
        let mut c = self.pool.acquire().await?;
        Tx(&mut c).events_since(contact_id, kind, since, limit).await
    }

    pub(crate) async fn apply_contact(&self, op: ContactOp, w: ContactWrite) -> Result<ContactApplied> {
        let mut tx = self.pool.begin().await?;
        // An error drops the transaction, which rolls it back.
        let out = apply(&mut Tx(&mut tx), op, &w).await?;
        tx.commit().await?;
        Ok(out)
    }

    pub(crate) async fn apply_phone_consent(
        &self,
        phone: &str,
        consent: NewConsent,
        w: ContactWrite,
    ) -> Result<(PhoneConsentOutcome, Vec<Accepted>)> {
        let mut tx = self.pool.begin().await?;
        let out = apply_phone(&mut Tx(&mut tx), phone, consent, &w).await?;
        tx.commit().await?;
        Ok(out)
    }

    pub(crate) async fn phone_consent(&self, phone: &str, purpose: &str, channel: &str) -> Result<Option<PhoneDecision>> {
        let mut c = self.pool.acquire().await?;
        phone_decision(&mut Tx(&mut c), phone, purpose, channel).await
    }

    pub(crate) async fn contact(&self, key: &ContactKey) -> Result<Option<Contact>> {
        let mut c = self.pool.acquire().await?;
        Tx(&mut c).contact(key, false).await
    }

    pub(crate) async fn contact_detail(&self, key: ContactKey, timeline: i64) -> Result<Option<ContactDetail>> {
        let mut c = self.pool.acquire().await?;
        detail(&mut Tx(&mut c), key, timeline).await
    }

    pub(crate) async fn list_contacts(&self, f: &ContactFilter) -> Result<Vec<Contact>> {
        let mut q = QueryBuilder::<Postgres>::new(concat!(contact_select!(), "WHERE TRUE"));
        if let Some(e) = &f.email {
            q.push(" AND c.email = ").push_bind(e.clone());
        }
        if let Some(t) = &f.tag {
            q.push(" AND EXISTS (SELECT 1 FROM contact_tags x WHERE x.contact_id = c.id AND x.tag = ").push_bind(t.clone()).push(")");
        }
        if let Some(a) = &f.after {
            q.push(" AND c.id > ").push_bind(a.clone());
        }
        q.push(" ORDER BY c.id LIMIT ").push_bind(f.limit());
        let rows = q.build().fetch_all(&self.pool).await.map_err(pg_err)?;
        Ok(rows.iter().map(contact_row).collect())
    }

    pub(crate) async fn timeline_page(&self, contact_id: &str, q: &TimelineQuery) -> Result<Vec<TimelineEvent>> {
        let mut c = self.pool.acquire().await?;
        Tx(&mut c).timeline(contact_id, q).await
    }

    pub(crate) async fn scoring_rules(&self) -> Result<Option<ScoringRules>> {
        let mut c = self.pool.acquire().await?;
        Tx(&mut c).scoring().await
    }

    pub(crate) async fn set_scoring_rules(&self, rules: String, now: Millis) -> Result<()> {
        sqlx::query(
            "INSERT INTO scoring_rules (id, rules, updated_at) VALUES (1, $1, $2)
             ON CONFLICT (id) DO UPDATE SET rules = excluded.rules, updated_at = excluded.updated_at",
        )
        .bind(rules)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(pg_err)?;
        Ok(())
    }
}
