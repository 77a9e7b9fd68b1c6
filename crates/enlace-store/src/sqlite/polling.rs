//! SQLite: the state of polling and subscribe triggers (see `crate::polling`). Every write
//! goes through the writer task, so a poll's commit shares the group commit of the
//! acceptances around it and is one transaction (a savepoint of the group).

use enlace_core::Secret;
use serde_json::Value;
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};

use super::{Sqlite, insert_event, json_text, parse_json};
use crate::polling::*;
use crate::types::{Accepted, Millis, NewEvent};
use crate::{Result, StoreError, new_id};

macro_rules! state_cols {
    () => {
        "recipe_id, cursor, seeded_at, last_polled_at, next_poll_at, last_error, paused, failures, lease_owner, lease_until, updated_at"
    };
}

fn state_row(r: &SqliteRow) -> PollState {
    PollState {
        recipe_id: r.get("recipe_id"),
        cursor: r.get("cursor"),
        seeded_at: r.get("seeded_at"),
        last_polled_at: r.get("last_polled_at"),
        next_poll_at: r.get("next_poll_at"),
        last_error: parse_json(r.get("last_error")),
        paused: r.get::<i64, _>("paused") != 0,
        failures: r.get("failures"),
        lease_owner: r.get("lease_owner"),
        lease_until: r.get("lease_until"),
        updated_at: r.get("updated_at"),
    }
}

fn held_row(r: &SqliteRow, with_items: bool) -> HeldBatch {
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

/// Fires items, oldest first: marks each key fired (only if unseen or re-armed, unless
/// `always`) and stores its event and queued run. Returns the runs and how many were skipped.
async fn fire_items(
    c: &mut SqliteConnection,
    recipe_id: &str,
    version: i64,
    items: &[PollItem],
    now: Millis,
    always: bool,
) -> Result<(Vec<Accepted>, usize)> {
    let mut runs = Vec::with_capacity(items.len());
    let mut skipped = 0;
    for (i, item) in items.iter().enumerate() {
        let fired: Option<i64> = sqlx::query_scalar(
            "INSERT INTO poll_seen (recipe_id, key, first_seen_at, seen_at, fired, fired_at, rearmed) VALUES (?, ?, ?, ?, 1, ?, 0)
             ON CONFLICT (recipe_id, key) DO UPDATE SET fired = poll_seen.fired + 1, fired_at = excluded.fired_at, seen_at = excluded.seen_at, rearmed = 0
             WHERE poll_seen.rearmed = 1 OR ?
             RETURNING fired",
        )
        .bind(recipe_id)
        .bind(&item.key)
        .bind(now)
        .bind(now)
        .bind(now)
        .bind(always)
        .fetch_optional(&mut *c)
        .await?;
        let Some(fired) = fired else {
            skipped += 1;
            continue;
        };
        let at = item_time(now, i, items.len());
        let event = NewEvent {
            recipe_id: recipe_id.to_string(),
            recipe_version: version,
            source: "poll".into(),
            dedupe_key: Some(event_dedupe_key(&item.key, fired)),
            payload: json_text(&item.event),
            owner: None,
            lease_ms: 0,
            now: at,
        };
        let a = insert_event(c, &event).await?;
        if a.duplicate {
            skipped += 1;
        } else {
            runs.push(a);
        }
    }
    Ok((runs, skipped))
}

/// Marks keys seen (fresh ones unfired); `settle` also clears a re-arm (held items).
async fn touch_keys(c: &mut SqliteConnection, recipe_id: &str, keys: &[String], now: Millis, settle: bool) -> Result<()> {
    for key in keys {
        sqlx::query(
            "INSERT INTO poll_seen (recipe_id, key, first_seen_at, seen_at, fired, rearmed) VALUES (?, ?, ?, ?, 0, 0)
             ON CONFLICT (recipe_id, key) DO UPDATE SET seen_at = excluded.seen_at, rearmed = CASE WHEN ? THEN 0 ELSE poll_seen.rearmed END",
        )
        .bind(recipe_id)
        .bind(key)
        .bind(now)
        .bind(now)
        .bind(settle)
        .execute(&mut *c)
        .await?;
    }
    Ok(())
}

async fn prune(c: &mut SqliteConnection, recipe_id: &str, now: Millis) -> Result<()> {
    sqlx::query("DELETE FROM poll_seen WHERE recipe_id = ? AND seen_at < ?")
        .bind(recipe_id)
        .bind(now - SEEN_MAX_AGE_MS)
        .execute(&mut *c)
        .await?;
    sqlx::query(
        "DELETE FROM poll_seen WHERE recipe_id = ? AND key IN
           (SELECT key FROM poll_seen WHERE recipe_id = ? ORDER BY seen_at DESC, key LIMIT -1 OFFSET ?)",
    )
    .bind(recipe_id)
    .bind(recipe_id)
    .bind(SEEN_KEEP)
    .execute(&mut *c)
    .await?;
    sqlx::query(
        "DELETE FROM poll_cursors WHERE recipe_id = ? AND id <= (SELECT id FROM poll_cursors WHERE recipe_id = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
    )
    .bind(recipe_id)
    .bind(recipe_id)
    .bind(CURSOR_HISTORY_KEEP)
    .execute(&mut *c)
    .await?;
    Ok(())
}

async fn mark_cursor(c: &mut SqliteConnection, recipe_id: &str, cursor: Option<&str>, at: Millis, reason: &str) -> Result<()> {
    sqlx::query("INSERT INTO poll_cursors (recipe_id, cursor, at, reason) VALUES (?, ?, ?, ?)")
        .bind(recipe_id)
        .bind(cursor)
        .bind(at)
        .bind(reason)
        .execute(&mut *c)
        .await?;
    Ok(())
}

fn subscription_row(s: &Sqlite, r: &SqliteRow) -> Result<SubscriptionRow> {
    let recipe_id: String = r.get("recipe_id");
    let secret = match r.get::<Option<Vec<u8>>, _>("secret") {
        Some(sealed) => {
            let plain = s.secrets.open(&format!("subscription:{recipe_id}"), &sealed)?;
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

impl Sqlite {
    pub(crate) async fn poll_states(&self) -> Result<Vec<PollState>> {
        let rows = sqlx::query(concat!("SELECT ", state_cols!(), " FROM poll_states ORDER BY recipe_id")).fetch_all(&self.read).await?;
        Ok(rows.iter().map(state_row).collect())
    }

    pub(crate) async fn poll_state(&self, recipe_id: &str) -> Result<Option<PollState>> {
        let row = sqlx::query(concat!("SELECT ", state_cols!(), " FROM poll_states WHERE recipe_id = ?"))
            .bind(recipe_id)
            .fetch_optional(&self.read)
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
        let (recipe_id, owner) = (recipe_id.to_string(), owner.to_string());
        self.write(move |c| {
            Box::pin(async move {
                sqlx::query(
                    "INSERT INTO poll_states (recipe_id, next_poll_at, updated_at) VALUES (?, ?, ?) ON CONFLICT (recipe_id) DO NOTHING",
                )
                .bind(&recipe_id)
                .bind(now)
                .bind(now)
                .execute(&mut *c)
                .await?;
                let row = sqlx::query(concat!(
                    "UPDATE poll_states SET lease_owner = ?, lease_until = ? WHERE recipe_id = ? AND (next_poll_at <= ? OR ?)
                       AND (lease_owner IS NULL OR lease_until < ? OR lease_owner = ?) RETURNING ",
                    state_cols!()
                ))
                .bind(&owner)
                .bind(now + lease_ms)
                .bind(&recipe_id)
                .bind(now)
                .bind(force)
                .bind(now)
                .bind(&owner)
                .fetch_optional(&mut *c)
                .await?;
                Ok(row.as_ref().map(state_row))
            })
        })
        .await
    }

    pub(crate) async fn poll_seen(&self, recipe_id: &str, keys: &[String]) -> Result<Vec<SeenKey>> {
        let mut out = Vec::new();
        for chunk in keys.chunks(500) {
            let sql = format!(
                "SELECT key, first_seen_at, seen_at, fired, fired_at, rearmed FROM poll_seen WHERE recipe_id = ? AND key IN ({})",
                vec!["?"; chunk.len()].join(", ")
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(recipe_id);
            for k in chunk {
                q = q.bind(k);
            }
            for r in q.fetch_all(&self.read).await? {
                out.push(SeenKey {
                    key: r.get("key"),
                    first_seen_at: r.get("first_seen_at"),
                    seen_at: r.get("seen_at"),
                    fired: r.get("fired"),
                    fired_at: r.get("fired_at"),
                    rearmed: r.get::<i64, _>("rearmed") != 0,
                });
            }
        }
        Ok(out)
    }

    pub(crate) async fn poll_commit(&self, p: PollCommit) -> Result<Option<PollCommitted>> {
        self.write(move |c| {
            Box::pin(async move {
                let before: Option<(Option<String>, Option<i64>)> =
                    sqlx::query_as("SELECT cursor, seeded_at FROM poll_states WHERE recipe_id = ? AND lease_owner = ?")
                        .bind(&p.recipe_id)
                        .bind(&p.owner)
                        .fetch_optional(&mut *c)
                        .await?;
                let Some((old_cursor, seeded_at)) = before else { return Ok(None) };
                let (runs, skipped) = fire_items(c, &p.recipe_id, p.recipe_version, &p.fire, p.now, false).await?;
                let mut held = None;
                if !p.hold.is_empty() {
                    let id = new_id();
                    let items = serde_json::to_value(&p.hold).unwrap_or(Value::Null);
                    sqlx::query("INSERT INTO poll_held (id, recipe_id, items, count, created_at, status) VALUES (?, ?, ?, ?, ?, 'held')")
                        .bind(&id)
                        .bind(&p.recipe_id)
                        .bind(json_text(&items))
                        .bind(p.hold.len() as i64)
                        .bind(p.now)
                        .execute(&mut *c)
                        .await?;
                    let keys: Vec<String> = p.hold.iter().map(|i| i.key.clone()).collect();
                    touch_keys(c, &p.recipe_id, &keys, p.now, true).await?;
                    held = Some(id);
                }
                touch_keys(c, &p.recipe_id, &p.seen, p.now, false).await?;
                let seeding = p.seed && seeded_at.is_none();
                let moved = p.cursor.is_some() && p.cursor != old_cursor;
                if seeding || moved {
                    let cursor = p.cursor.clone().or(old_cursor);
                    mark_cursor(c, &p.recipe_id, cursor.as_deref(), p.now, if seeding { "seed" } else { "poll" }).await?;
                }
                sqlx::query(
                    "UPDATE poll_states SET cursor = COALESCE(?, cursor), seeded_at = CASE WHEN ? THEN COALESCE(seeded_at, ?) ELSE seeded_at END,
                       last_polled_at = ?, next_poll_at = ?, last_error = ?, paused = ?, failures = ?, lease_owner = NULL, lease_until = NULL, updated_at = ?
                     WHERE recipe_id = ?",
                )
                .bind(&p.cursor)
                .bind(p.seed)
                .bind(p.now)
                .bind(p.now)
                .bind(p.next_poll_at)
                .bind(p.error.as_ref().map(json_text))
                .bind(p.paused)
                .bind(p.failures)
                .bind(p.now)
                .bind(&p.recipe_id)
                .execute(&mut *c)
                .await?;
                prune(c, &p.recipe_id, p.now).await?;
                Ok(Some(PollCommitted { runs, held, skipped }))
            })
        })
        .await
    }

    pub(crate) async fn poll_forget(&self, recipe_id: &str) -> Result<bool> {
        let recipe_id = recipe_id.to_string();
        self.write(move |c| {
            Box::pin(async move {
                let r = sqlx::query("DELETE FROM poll_states WHERE recipe_id = ?").bind(&recipe_id).execute(&mut *c).await?;
                Ok(r.rows_affected() > 0)
            })
        })
        .await
    }

    pub(crate) async fn poll_cursor_at(&self, recipe_id: &str, at: Millis) -> Result<Option<CursorMark>> {
        let row =
            sqlx::query("SELECT cursor, at, reason FROM poll_cursors WHERE recipe_id = ? AND at <= ? ORDER BY at DESC, id DESC LIMIT 1")
                .bind(recipe_id)
                .bind(at)
                .fetch_optional(&self.read)
                .await?;
        Ok(row.map(|r| CursorMark { cursor: r.get("cursor"), at: r.get("at"), reason: r.get("reason") }))
    }

    pub(crate) async fn poll_cursors(&self, recipe_id: &str, limit: i64) -> Result<Vec<CursorMark>> {
        let rows = sqlx::query("SELECT cursor, at, reason FROM poll_cursors WHERE recipe_id = ? ORDER BY id DESC LIMIT ?")
            .bind(recipe_id)
            .bind(limit)
            .fetch_all(&self.read)
            .await?;
        Ok(rows.iter().map(|r| CursorMark { cursor: r.get("cursor"), at: r.get("at"), reason: r.get("reason") }).collect())
    }

    pub(crate) async fn poll_rewind(&self, recipe_id: &str, cursor: Option<String>, rearm: Vec<String>, now: Millis) -> Result<PollState> {
        let recipe_id = recipe_id.to_string();
        self.write(move |c| {
            Box::pin(async move {
                let row = sqlx::query(concat!(
                    "UPDATE poll_states SET cursor = ?, next_poll_at = ?, updated_at = ? WHERE recipe_id = ? AND (lease_owner IS NULL OR lease_until < ?) RETURNING ",
                    state_cols!()
                ))
                .bind(&cursor)
                .bind(now)
                .bind(now)
                .bind(&recipe_id)
                .bind(now)
                .fetch_optional(&mut *c)
                .await?;
                let Some(row) = row else {
                    let exists: Option<i64> =
                        sqlx::query_scalar("SELECT 1 FROM poll_states WHERE recipe_id = ?").bind(&recipe_id).fetch_optional(&mut *c).await?;
                    return Err(match exists {
                        Some(_) => StoreError::Conflict(format!("`{recipe_id}` is being polled right now; try the rewind again in a moment")),
                        None => StoreError::NotFound(format!("`{recipe_id}` has no poll state: it is disabled, or was never polled")),
                    });
                };
                for key in &rearm {
                    sqlx::query("UPDATE poll_seen SET rearmed = 1 WHERE recipe_id = ? AND key = ?").bind(&recipe_id).bind(key).execute(&mut *c).await?;
                }
                mark_cursor(c, &recipe_id, cursor.as_deref(), now, "rewind").await?;
                Ok(state_row(&row))
            })
        })
        .await
    }

    pub(crate) async fn held_batches(&self, recipe_id: &str) -> Result<Vec<HeldBatch>> {
        let rows = sqlx::query(
            "SELECT id, recipe_id, count, created_at, status, decided_at FROM poll_held WHERE recipe_id = ? ORDER BY created_at DESC, id DESC LIMIT 100",
        )
        .bind(recipe_id)
        .fetch_all(&self.read)
        .await?;
        Ok(rows.iter().map(|r| held_row(r, false)).collect())
    }

    pub(crate) async fn held_batch(&self, recipe_id: &str, batch_id: &str) -> Result<Option<HeldBatch>> {
        let row =
            sqlx::query("SELECT id, recipe_id, items, count, created_at, status, decided_at FROM poll_held WHERE recipe_id = ? AND id = ?")
                .bind(recipe_id)
                .bind(batch_id)
                .fetch_optional(&self.read)
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
        let (recipe_id, batch_id) = (recipe_id.to_string(), batch_id.to_string());
        self.write(move |c| {
            Box::pin(async move {
                let status = if approve { "approved" } else { "discarded" };
                let row = sqlx::query(
                    "UPDATE poll_held SET status = ?, decided_at = ? WHERE recipe_id = ? AND id = ? AND status = 'held'
                     RETURNING id, recipe_id, items, count, created_at, status, decided_at",
                )
                .bind(status)
                .bind(now)
                .bind(&recipe_id)
                .bind(&batch_id)
                .fetch_optional(&mut *c)
                .await?;
                let Some(row) = row else {
                    let was: Option<String> = sqlx::query_scalar("SELECT status FROM poll_held WHERE recipe_id = ? AND id = ?")
                        .bind(&recipe_id)
                        .bind(&batch_id)
                        .fetch_optional(&mut *c)
                        .await?;
                    return Err(match was {
                        Some(s) => StoreError::Conflict(format!("the held batch `{batch_id}` was {s} already")),
                        None => StoreError::NotFound(format!("`{recipe_id}` has no held batch `{batch_id}`")),
                    });
                };
                let batch = held_row(&row, true);
                let runs = if approve { fire_items(c, &recipe_id, version, &batch.items, now, true).await?.0 } else { vec![] };
                Ok((batch, runs))
            })
        })
        .await
    }

    pub(crate) async fn save_subscription(&self, s: SubscriptionRow) -> Result<()> {
        let sealed = match &s.secret {
            Some(sec) => Some(self.secrets.seal(&format!("subscription:{}", s.recipe_id), sec.expose().as_bytes())?),
            None => None,
        };
        self.write(move |c| {
            Box::pin(async move {
                sqlx::query(
                    "INSERT INTO trigger_subscriptions (recipe_id, app, event, subscription_id, target_url, config, connection, secret, expires_at, created_at, updated_at)
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
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
                .execute(&mut *c)
                .await?;
                Ok(())
            })
        })
        .await
    }

    pub(crate) async fn subscription(&self, recipe_id: &str) -> Result<Option<SubscriptionRow>> {
        let row = sqlx::query("SELECT * FROM trigger_subscriptions WHERE recipe_id = ?").bind(recipe_id).fetch_optional(&self.read).await?;
        row.map(|r| subscription_row(self, &r)).transpose()
    }

    pub(crate) async fn subscriptions(&self) -> Result<Vec<SubscriptionRow>> {
        let rows = sqlx::query("SELECT * FROM trigger_subscriptions ORDER BY recipe_id").fetch_all(&self.read).await?;
        rows.iter().map(|r| subscription_row(self, r)).collect()
    }

    pub(crate) async fn delete_subscription(&self, recipe_id: &str) -> Result<bool> {
        let recipe_id = recipe_id.to_string();
        self.write(move |c| {
            Box::pin(async move {
                let r = sqlx::query("DELETE FROM trigger_subscriptions WHERE recipe_id = ?").bind(&recipe_id).execute(&mut *c).await?;
                Ok(r.rows_affected() > 0)
            })
        })
        .await
    }
}
