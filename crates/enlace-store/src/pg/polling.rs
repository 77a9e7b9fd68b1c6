//! PostgreSQL: the state of polling and subscribe triggers (see `crate::polling`). A poll's
//! lease is the row's `lease_owner`/`lease_until`, taken by one conditional `UPDATE`, so two
//! nodes never poll a recipe at once; the commit is one transaction that first checks the
//! lease (holding the row's lock to the end), then stores the events, runs, keys and cursor,
//! and wakes the other nodes' pollers when it queued runs.

use enlace_core::Secret;
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Postgres, QueryBuilder, Row};

use super::{EventColumns, NOTIFY_NOTES, Pg, pg_err};
use crate::polling::*;
use crate::sqlite::{json_text, parse_json};
use crate::types::{Accepted, Millis, NewEvent};
use crate::{Result, StoreError, new_id};

macro_rules! state_cols {
    () => {
        "recipe_id, cursor, seeded_at, last_polled_at, next_poll_at, last_error, paused, failures, lease_owner, lease_until, updated_at"
    };
}

fn state_row(r: &PgRow) -> PollState {
    PollState {
        recipe_id: r.get("recipe_id"),
        cursor: r.get("cursor"),
        seeded_at: r.get("seeded_at"),
        last_polled_at: r.get("last_polled_at"),
        next_poll_at: r.get("next_poll_at"),
        last_error: parse_json(r.get("last_error")),
        paused: r.get("paused"),
        failures: r.get("failures"),
        lease_owner: r.get("lease_owner"),
        lease_until: r.get("lease_until"),
        updated_at: r.get("updated_at"),
    }
}

fn held_row(r: &PgRow, with_items: bool) -> HeldBatch {
    let items =
        if with_items { parse_json(r.get("items")).and_then(|v| serde_json::from_value(v).ok()).unwrap_or_default() } else { vec![] };
    HeldBatch {
        id: r.get("id"),
        recipe_id: r.get("recipe_id"),
        count: r.get("count"),
        created_at: r.get("created_at"),
        status: r.get("status"),
        decided_at: r.get("decided_at"),
        items,
    }
}

/// Fires items, oldest first (see the SQLite twin): marks the keys, then stores every
/// event and queued run in one statement that also wakes the pollers.
async fn fire_items(
    c: &mut PgConnection,
    recipe_id: &str,
    version: i64,
    items: &[PollItem],
    now: Millis,
    always: bool,
) -> Result<(Vec<Accepted>, usize)> {
    let mut events = Vec::with_capacity(items.len());
    let mut skipped = 0;
    for (i, item) in items.iter().enumerate() {
        let fired: Option<i64> = sqlx::query_scalar(
            "INSERT INTO poll_seen (recipe_id, key, first_seen_at, seen_at, fired, fired_at, rearmed) VALUES ($1, $2, $3, $3, 1, $3, FALSE)
             ON CONFLICT (recipe_id, key) DO UPDATE SET fired = poll_seen.fired + 1, fired_at = excluded.fired_at, seen_at = excluded.seen_at, rearmed = FALSE
             WHERE poll_seen.rearmed OR $4
             RETURNING fired",
        )
        .bind(recipe_id)
        .bind(&item.key)
        .bind(now)
        .bind(always)
        .fetch_optional(&mut *c)
        .await?;
        let Some(fired) = fired else {
            skipped += 1;
            continue;
        };
        events.push(NewEvent {
            recipe_id: recipe_id.to_string(),
            recipe_version: version,
            source: "poll".into(),
            dedupe_key: Some(event_dedupe_key(&item.key, fired)),
            payload: json_text(&item.event),
            owner: None,
            lease_ms: 0,
            now: item_time(now, i, items.len()),
        });
    }
    if events.is_empty() {
        return Ok((vec![], skipped));
    }
    let wanted = events.len();
    let mut q = QueryBuilder::<Postgres>::new("WITH ");
    EventColumns::new(events).push_ctes(&mut q, "");
    q.push(
        ", notes AS (SELECT due_at FROM er), ids AS (SELECT er.id, er.event_id, er.due_at FROM er) SELECT ids.id AS run_id, ids.event_id, ",
    );
    q.push(NOTIFY_NOTES);
    q.push(" FROM ids ORDER BY ids.due_at, ids.id");
    let rows = q.build().fetch_all(&mut *c).await.map_err(pg_err)?;
    let runs: Vec<Accepted> =
        rows.iter().map(|r| Accepted { run_id: r.get("run_id"), event_id: r.get("event_id"), duplicate: false }).collect();
    skipped += wanted - runs.len();
    Ok((runs, skipped))
}

async fn touch_keys(c: &mut PgConnection, recipe_id: &str, keys: &[String], now: Millis, settle: bool) -> Result<()> {
    if keys.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO poll_seen (recipe_id, key, first_seen_at, seen_at, fired, rearmed)
         SELECT $1, k, $3, $3, 0, FALSE FROM UNNEST($2::text[]) AS u(k)
         ON CONFLICT (recipe_id, key) DO UPDATE SET seen_at = excluded.seen_at, rearmed = CASE WHEN $4 THEN FALSE ELSE poll_seen.rearmed END",
    )
    .bind(recipe_id)
    .bind(dedup(keys))
    .bind(now)
    .bind(settle)
    .execute(&mut *c)
    .await?;
    Ok(())
}

/// The keys once each (one `INSERT ... ON CONFLICT` may not touch a row twice).
fn dedup(keys: &[String]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    keys.iter().filter(|k| seen.insert(k.as_str())).cloned().collect()
}

async fn prune(c: &mut PgConnection, recipe_id: &str, now: Millis) -> Result<()> {
    sqlx::query("DELETE FROM poll_seen WHERE recipe_id = $1 AND seen_at < $2")
        .bind(recipe_id)
        .bind(now - SEEN_MAX_AGE_MS)
        .execute(&mut *c)
        .await?;
    sqlx::query(
        "DELETE FROM poll_seen WHERE recipe_id = $1 AND key IN
           (SELECT key FROM poll_seen WHERE recipe_id = $1 ORDER BY seen_at DESC, key OFFSET $2)",
    )
    .bind(recipe_id)
    .bind(SEEN_KEEP)
    .execute(&mut *c)
    .await?;
    sqlx::query(
        "DELETE FROM poll_cursors WHERE recipe_id = $1 AND id <= (SELECT id FROM poll_cursors WHERE recipe_id = $1 ORDER BY id DESC LIMIT 1 OFFSET $2)",
    )
    .bind(recipe_id)
    .bind(CURSOR_HISTORY_KEEP)
    .execute(&mut *c)
    .await?;
    Ok(())
}

async fn mark_cursor(c: &mut PgConnection, recipe_id: &str, cursor: Option<&str>, at: Millis, reason: &str) -> Result<()> {
    sqlx::query("INSERT INTO poll_cursors (recipe_id, cursor, at, reason) VALUES ($1, $2, $3, $4)")
        .bind(recipe_id)
        .bind(cursor)
        .bind(at)
        .bind(reason)
        .execute(&mut *c)
        .await?;
    Ok(())
}

fn subscription_row(p: &Pg, r: &PgRow) -> Result<SubscriptionRow> {
    let recipe_id: String = r.get("recipe_id");
    let secret = match r.get::<Option<Vec<u8>>, _>("secret") {
        Some(sealed) => {
            let plain = p.secrets.open(&format!("subscription:{recipe_id}"), &sealed)?;
            Some(Secret::new(String::from_utf8(plain).map_err(|_| StoreError::Crypto("a subscription secret is not text".into()))?))
        }
        None => None,
    };
    Ok(SubscriptionRow {
        app: r.get("app"),
        event: r.get("event"),
        subscription_id: r.get("subscription_id"),
        target_url: r.get("target_url"),
        config: parse_json(r.get("config")).unwrap_or(Value::Null),
        connection: r.get("connection"),
        secret,
        expires_at: r.get("expires_at"),
        created_at: r.get("created_at"),
        updated_at: r.get("updated_at"),
        recipe_id,
    })
}

impl Pg {
    pub(crate) async fn poll_states(&self) -> Result<Vec<PollState>> {
        let rows = sqlx::query(concat!("SELECT ", state_cols!(), " FROM poll_states ORDER BY recipe_id")).fetch_all(&self.pool).await?;
        Ok(rows.iter().map(state_row).collect())
    }

    pub(crate) async fn poll_state(&self, recipe_id: &str) -> Result<Option<PollState>> {
        let row = sqlx::query(concat!("SELECT ", state_cols!(), " FROM poll_states WHERE recipe_id = $1"))
            .bind(recipe_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(state_row))
    }

    pub(crate) async fn poll_claim(
        &self,
        recipe_id: &str,
        owner: &str,
        now: Millis,
        lease_ms: i64,
        force: bool,
    ) -> Result<Option<PollState>> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO poll_states (recipe_id, next_poll_at, updated_at) VALUES ($1, $2, $2) ON CONFLICT (recipe_id) DO NOTHING")
            .bind(recipe_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        let row = sqlx::query(concat!(
            "UPDATE poll_states SET lease_owner = $1, lease_until = $2 WHERE recipe_id = $3 AND (next_poll_at <= $4 OR $5)
               AND (lease_owner IS NULL OR lease_until < $4 OR lease_owner = $1) RETURNING ",
            state_cols!()
        ))
        .bind(owner)
        .bind(now + lease_ms)
        .bind(recipe_id)
        .bind(now)
        .bind(force)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(row.as_ref().map(state_row))
    }

    pub(crate) async fn poll_seen(&self, recipe_id: &str, keys: &[String]) -> Result<Vec<SeenKey>> {
        let rows = sqlx::query(
            "SELECT key, first_seen_at, seen_at, fired, fired_at, rearmed FROM poll_seen WHERE recipe_id = $1 AND key = ANY($2::text[])",
        )
        .bind(recipe_id)
        .bind(keys.to_vec())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| SeenKey {
                key: r.get("key"),
                first_seen_at: r.get("first_seen_at"),
                seen_at: r.get("seen_at"),
                fired: r.get("fired"),
                fired_at: r.get("fired_at"),
                rearmed: r.get("rearmed"),
            })
            .collect())
    }

    pub(crate) async fn poll_commit(&self, p: PollCommit) -> Result<Option<PollCommitted>> {
        let mut tx = self.pool.begin().await?;
        // The lease check locks the row until the commit: a node that lost the lease (or a
        // rewind) cannot interleave.
        let before: Option<(Option<String>, Option<i64>)> =
            sqlx::query_as("SELECT cursor, seeded_at FROM poll_states WHERE recipe_id = $1 AND lease_owner = $2 FOR UPDATE")
                .bind(&p.recipe_id)
                .bind(&p.owner)
                .fetch_optional(&mut *tx)
                .await?;
        let Some((old_cursor, seeded_at)) = before else {
            tx.rollback().await?;
            return Ok(None);
        };
        let (runs, skipped) = fire_items(&mut tx, &p.recipe_id, p.recipe_version, &p.fire, p.now, false).await?;
        let mut held = None;
        if !p.hold.is_empty() {
            let id = new_id();
            let items = serde_json::to_value(&p.hold).unwrap_or(Value::Null);
            sqlx::query("INSERT INTO poll_held (id, recipe_id, items, count, created_at, status) VALUES ($1, $2, $3, $4, $5, 'held')")
                .bind(&id)
                .bind(&p.recipe_id)
                .bind(json_text(&items))
                .bind(p.hold.len() as i64)
                .bind(p.now)
                .execute(&mut *tx)
                .await?;
            let keys: Vec<String> = p.hold.iter().map(|i| i.key.clone()).collect();
            touch_keys(&mut tx, &p.recipe_id, &keys, p.now, true).await?;
            held = Some(id);
        }
        touch_keys(&mut tx, &p.recipe_id, &p.seen, p.now, false).await?;
        let seeding = p.seed && seeded_at.is_none();
        let moved = p.cursor.is_some() && p.cursor != old_cursor;
        if seeding || moved {
            let cursor = p.cursor.clone().or(old_cursor);
            mark_cursor(&mut tx, &p.recipe_id, cursor.as_deref(), p.now, if seeding { "seed" } else { "poll" }).await?;
        }
        sqlx::query(
            "UPDATE poll_states SET cursor = COALESCE($1, cursor), seeded_at = CASE WHEN $2 THEN COALESCE(seeded_at, $3) ELSE seeded_at END,
               last_polled_at = $3, next_poll_at = $4, last_error = $5, paused = $6, failures = $7, lease_owner = NULL, lease_until = NULL, updated_at = $3
             WHERE recipe_id = $8",
        )
        .bind(&p.cursor)
        .bind(p.seed)
        .bind(p.now)
        .bind(p.next_poll_at)
        .bind(p.error.as_ref().map(json_text))
        .bind(p.paused)
        .bind(p.failures)
        .bind(&p.recipe_id)
        .execute(&mut *tx)
        .await?;
        prune(&mut tx, &p.recipe_id, p.now).await?;
        tx.commit().await?;
        Ok(Some(PollCommitted { runs, held, skipped }))
    }

    pub(crate) async fn poll_forget(&self, recipe_id: &str) -> Result<bool> {
        let r = sqlx::query("DELETE FROM poll_states WHERE recipe_id = $1").bind(recipe_id).execute(&self.pool).await?;
        Ok(r.rows_affected() > 0)
    }

    pub(crate) async fn poll_cursor_at(&self, recipe_id: &str, at: Millis) -> Result<Option<CursorMark>> {
        let row =
            sqlx::query("SELECT cursor, at, reason FROM poll_cursors WHERE recipe_id = $1 AND at <= $2 ORDER BY at DESC, id DESC LIMIT 1")
                .bind(recipe_id)
                .bind(at)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|r| CursorMark { cursor: r.get("cursor"), at: r.get("at"), reason: r.get("reason") }))
    }

    pub(crate) async fn poll_cursors(&self, recipe_id: &str, limit: i64) -> Result<Vec<CursorMark>> {
        let rows = sqlx::query("SELECT cursor, at, reason FROM poll_cursors WHERE recipe_id = $1 ORDER BY id DESC LIMIT $2")
            .bind(recipe_id)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(|r| CursorMark { cursor: r.get("cursor"), at: r.get("at"), reason: r.get("reason") }).collect())
    }

    pub(crate) async fn poll_rewind(&self, recipe_id: &str, cursor: Option<String>, rearm: Vec<String>, now: Millis) -> Result<PollState> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(concat!(
            "UPDATE poll_states SET cursor = $1, next_poll_at = $2, updated_at = $2 WHERE recipe_id = $3 AND (lease_owner IS NULL OR lease_until < $2) RETURNING ",
            state_cols!()
        ))
        .bind(&cursor)
        .bind(now)
        .bind(recipe_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            let exists: Option<i32> =
                sqlx::query_scalar("SELECT 1 FROM poll_states WHERE recipe_id = $1").bind(recipe_id).fetch_optional(&mut *tx).await?;
            tx.rollback().await?;
            return Err(match exists {
                Some(_) => StoreError::Conflict(format!("`{recipe_id}` is being polled right now; try the rewind again in a moment")),
                None => StoreError::NotFound(format!("`{recipe_id}` has no poll state: it is disabled, or was never polled")),
            });
        };
        sqlx::query("UPDATE poll_seen SET rearmed = TRUE WHERE recipe_id = $1 AND key = ANY($2::text[])")
            .bind(recipe_id)
            .bind(rearm)
            .execute(&mut *tx)
            .await?;
        mark_cursor(&mut tx, recipe_id, cursor.as_deref(), now, "rewind").await?;
        tx.commit().await?;
        Ok(state_row(&row))
    }

    pub(crate) async fn held_batches(&self, recipe_id: &str) -> Result<Vec<HeldBatch>> {
        let rows = sqlx::query(
            "SELECT id, recipe_id, count, created_at, status, decided_at FROM poll_held WHERE recipe_id = $1 ORDER BY created_at DESC, id DESC LIMIT 100",
        )
        .bind(recipe_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(|r| held_row(r, false)).collect())
    }

    pub(crate) async fn held_batch(&self, recipe_id: &str, batch_id: &str) -> Result<Option<HeldBatch>> {
        let row = sqlx::query(
            "SELECT id, recipe_id, items, count, created_at, status, decided_at FROM poll_held WHERE recipe_id = $1 AND id = $2",
        )
        .bind(recipe_id)
        .bind(batch_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| held_row(&r, true)))
    }

    pub(crate) async fn decide_held(
        &self,
        recipe_id: &str,
        batch_id: &str,
        approve: bool,
        version: i64,
        now: Millis,
    ) -> Result<(HeldBatch, Vec<Accepted>)> {
        let mut tx = self.pool.begin().await?;
        let status = if approve { "approved" } else { "discarded" };
        let row = sqlx::query(
            "UPDATE poll_held SET status = $1, decided_at = $2 WHERE recipe_id = $3 AND id = $4 AND status = 'held'
             RETURNING id, recipe_id, items, count, created_at, status, decided_at",
        )
        .bind(status)
        .bind(now)
        .bind(recipe_id)
        .bind(batch_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            let was: Option<String> = sqlx::query_scalar("SELECT status FROM poll_held WHERE recipe_id = $1 AND id = $2")
                .bind(recipe_id)
                .bind(batch_id)
                .fetch_optional(&mut *tx)
                .await?;
            tx.rollback().await?;
            return Err(match was {
                Some(s) => StoreError::Conflict(format!("the held batch `{batch_id}` was {s} already")),
                None => StoreError::NotFound(format!("`{recipe_id}` has no held batch `{batch_id}`")),
            });
        };
        let batch = held_row(&row, true);
        let runs = if approve { fire_items(&mut tx, recipe_id, version, &batch.items, now, true).await?.0 } else { vec![] };
        tx.commit().await?;
        Ok((batch, runs))
    }

    pub(crate) async fn save_subscription(&self, s: SubscriptionRow) -> Result<()> {
        let sealed = match &s.secret {
            Some(sec) => Some(self.secrets.seal(&format!("subscription:{}", s.recipe_id), sec.expose().as_bytes())?),
            None => None,
        };
        sqlx::query(
            "INSERT INTO trigger_subscriptions (recipe_id, app, event, subscription_id, target_url, config, connection, secret, expires_at, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
             ON CONFLICT (recipe_id) DO UPDATE SET app = excluded.app, event = excluded.event, subscription_id = excluded.subscription_id,
               target_url = excluded.target_url, config = excluded.config, connection = excluded.connection, secret = excluded.secret,
               expires_at = excluded.expires_at, updated_at = excluded.updated_at",
        )
        .bind(&s.recipe_id)
        .bind(&s.app)
        .bind(&s.event)
        .bind(&s.subscription_id)
        .bind(&s.target_url)
        .bind(json_text(&s.config))
        .bind(&s.connection)
        .bind(sealed)
        .bind(s.expires_at)
        .bind(s.created_at)
        .bind(s.updated_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(crate) async fn subscription(&self, recipe_id: &str) -> Result<Option<SubscriptionRow>> {
        let row =
            sqlx::query("SELECT * FROM trigger_subscriptions WHERE recipe_id = $1").bind(recipe_id).fetch_optional(&self.pool).await?;
        row.map(|r| subscription_row(self, &r)).transpose()
    }

    pub(crate) async fn subscriptions(&self) -> Result<Vec<SubscriptionRow>> {
        let rows = sqlx::query("SELECT * FROM trigger_subscriptions ORDER BY recipe_id").fetch_all(&self.pool).await?;
        rows.iter().map(|r| subscription_row(self, r)).collect()
    }

    pub(crate) async fn delete_subscription(&self, recipe_id: &str) -> Result<bool> {
        let r = sqlx::query("DELETE FROM trigger_subscriptions WHERE recipe_id = $1").bind(recipe_id).execute(&self.pool).await?;
        Ok(r.rows_affected() > 0)
    }
}
