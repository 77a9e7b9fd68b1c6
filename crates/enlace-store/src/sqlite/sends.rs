//! The send ledger on SQLite: [`SendTx`] over the contact store's connection wrapper.
//! Reservations are jobs of the writer task (alone, so nothing needs locking).

use enlace_core::policy::PastSend;
use serde_json::Value;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use super::contacts::Tx;
use super::{Sqlite, json_text, parse_json};
use crate::sends::{Decide, LedgerRow, LedgerWrite, SendFacts, SendRequest, SendTx, reserve, settle, status};
use crate::{Millis, Result};

const COLS: &str = "id, message_key, recipient, contact_id, recipe_id, run_id, step_key, channel, purpose, transactional, status, reason, until, sent_at, decided_at, output";

fn row_of(r: &SqliteRow) -> LedgerRow {
    LedgerRow {
        id: r.get("id"),
        message_key: r.get("message_key"),
        recipient: r.get("recipient"),
        contact_id: r.get("contact_id"),
        recipe_id: r.get("recipe_id"),
        run_id: r.get("run_id"),
        step_key: r.get("step_key"),
        channel: r.get("channel"),
        purpose: r.get("purpose"),
        transactional: r.get::<i64, _>("transactional") != 0,
        status: r.get("status"),
        reason: r.get("reason"),
        until: r.get("until"),
        sent_at: r.get("sent_at"),
        decided_at: r.get("decided_at"),
        output: parse_json(r.get("output")),
    }
}

impl SendTx for Tx<'_> {
    async fn lock_keys(&mut self, _keys: &[String]) -> Result<bool> {
        // The writer is alone: nothing changed since the facts were read.
        Ok(false)
    }

    async fn message_rows(&mut self, message_key: &str) -> Result<Vec<LedgerRow>> {
        let sql = format!("SELECT {COLS} FROM send_ledger WHERE message_key = ? ORDER BY recipient");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(message_key).fetch_all(&mut *self.0).await?;
        Ok(rows.iter().map(row_of).collect())
    }

    async fn past_sends(&mut self, contact_id: Option<&str>, address: &str, since: Millis, except: &str) -> Result<Vec<PastSend>> {
        let (sql, key) = match contact_id {
            Some(id) => (
                "SELECT channel, sent_at FROM send_ledger WHERE contact_id = ? AND sent_at > ? AND transactional = 0 AND message_key <> ?",
                id,
            ),
            None => (
                "SELECT channel, sent_at FROM send_ledger WHERE recipient = ? AND sent_at > ? AND transactional = 0 AND message_key <> ?",
                address,
            ),
        };
        let rows = sqlx::query(sql).bind(key).bind(since).bind(except).fetch_all(&mut *self.0).await?;
        Ok(rows.iter().map(|r| PastSend { channel: r.get("channel"), at: r.get("sent_at") }).collect())
    }

    async fn recipe_sends(&mut self, recipe_id: &str, hour: (Millis, i64), day: (Millis, i64)) -> Result<(i64, i64)> {
        let r = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM (SELECT 1 FROM send_ledger WHERE recipe_id = ?1 AND sent_at > ?2 LIMIT ?3)) AS hour,
                    (SELECT COUNT(*) FROM (SELECT 1 FROM send_ledger WHERE recipe_id = ?1 AND sent_at > ?4 LIMIT ?5)) AS day",
        )
        .bind(recipe_id)
        .bind(hour.0)
        .bind(hour.1)
        .bind(day.0)
        .bind(day.1)
        .fetch_one(&mut *self.0)
        .await?;
        Ok((r.get("hour"), r.get("day")))
    }

    async fn put_row(&mut self, r: &LedgerRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO send_ledger (id, message_key, recipient, contact_id, recipe_id, run_id, step_key, channel, purpose, transactional, status, reason, until, sent_at, decided_at, output)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (message_key, recipient) DO UPDATE SET contact_id = excluded.contact_id, run_id = excluded.run_id,
               status = excluded.status, reason = excluded.reason, until = excluded.until, sent_at = excluded.sent_at,
               decided_at = excluded.decided_at, output = excluded.output",
        )
        .bind(&r.id)
        .bind(&r.message_key)
        .bind(&r.recipient)
        .bind(&r.contact_id)
        .bind(&r.recipe_id)
        .bind(&r.run_id)
        .bind(&r.step_key)
        .bind(&r.channel)
        .bind(&r.purpose)
        .bind(r.transactional as i64)
        .bind(&r.status)
        .bind(&r.reason)
        .bind(r.until)
        .bind(r.sent_at)
        .bind(r.decided_at)
        .bind(r.output.as_ref().map(json_text))
        .execute(&mut *self.0)
        .await?;
        Ok(())
    }
}

impl Sqlite {
    pub(crate) async fn reserve_send(&self, r: SendRequest, decide: Decide) -> Result<(SendFacts, Option<LedgerWrite>)> {
        self.write(move |c| Box::pin(async move { reserve(&mut Tx(c), r, decide).await })).await
    }

    pub(crate) async fn settle_send(&self, message_key: &str, sent: bool, output: Option<Value>, now: Millis) -> Result<()> {
        let key = message_key.to_string();
        self.write(move |c| Box::pin(async move { settle(&mut Tx(c), &key, sent, output, now).await })).await
    }

    pub(crate) async fn message_rows(&self, message_key: &str) -> Result<Vec<LedgerRow>> {
        let mut c = self.read.acquire().await?;
        Tx(&mut c).message_rows(message_key).await
    }

    pub(crate) async fn held_sends(&self, recipe_id: Option<&str>) -> Result<Vec<LedgerRow>> {
        let sql = format!(
            "SELECT {} FROM send_ledger l JOIN runs r ON r.id = l.run_id WHERE l.status = 'held' AND r.status = 'waiting' AND (?1 IS NULL OR l.recipe_id = ?1) ORDER BY l.decided_at, l.id LIMIT 1000",
            COLS.split(", ").map(|c| format!("l.{c}")).collect::<Vec<_>>().join(", ")
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(recipe_id).fetch_all(&self.read).await?;
        Ok(rows.iter().map(row_of).collect())
    }

    pub(crate) async fn decide_held_sends(
        &self,
        recipe_id: &str,
        keys: Option<Vec<String>>,
        approve: bool,
        now: Millis,
    ) -> Result<Vec<LedgerRow>> {
        let recipe_id = recipe_id.to_string();
        self.write(move |c| {
            Box::pin(async move {
                let sql = format!("SELECT {COLS} FROM send_ledger WHERE recipe_id = ? AND status = 'held' ORDER BY decided_at, id");
                let rows: Vec<LedgerRow> = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(&recipe_id)
                    .fetch_all(&mut *c)
                    .await?
                    .iter()
                    .map(row_of)
                    .filter(|r| keys.as_ref().is_none_or(|k| k.contains(&r.message_key)))
                    .collect();
                let to = if approve { status::APPROVED } else { status::REJECTED };
                let mut out = vec![];
                for mut r in rows {
                    sqlx::query("UPDATE send_ledger SET status = ?, decided_at = ? WHERE id = ?").bind(to).bind(now).bind(&r.id).execute(&mut *c).await?;
                    r.status = to.to_string();
                    r.decided_at = now;
                    out.push(r);
                }
                // Every held run of the recipe runs again: those still held hold again.
                sqlx::query("UPDATE runs SET status = 'queued', due_at = ?, held_connection = NULL, updated_at = ? WHERE held_connection = ? AND status = 'waiting'")
                    .bind(now)
                    .bind(now)
                    .bind(crate::sends::approval_hold(&recipe_id))
                    .execute(&mut *c)
                    .await?;
                Ok(out)
            })
        })
        .await
    }

    pub(crate) async fn cancel_held_sends(&self, recipe_id: &str, now: Millis) -> Result<u64> {
        let recipe_id = recipe_id.to_string();
        self.write(move |c| {
            Box::pin(async move {
                Ok(sqlx::query("UPDATE send_ledger SET status = 'cancelled', decided_at = ? WHERE recipe_id = ? AND status = 'held'")
                    .bind(now)
                    .bind(&recipe_id)
                    .execute(&mut *c)
                    .await?
                    .rows_affected())
            })
        })
        .await
    }

    pub(crate) async fn policy_text(&self) -> Result<Option<String>> {
        Ok(sqlx::query_scalar("SELECT settings FROM send_policy WHERE id = 1").fetch_optional(&self.read).await?)
    }

    pub(crate) async fn set_policy_text(&self, text: String, now: Millis) -> Result<()> {
        self.write(move |c| {
            Box::pin(async move {
                sqlx::query("INSERT INTO send_policy (id, settings, updated_at) VALUES (1, ?, ?) ON CONFLICT (id) DO UPDATE SET settings = excluded.settings, updated_at = excluded.updated_at")
                    .bind(&text)
                    .bind(now)
                    .execute(&mut *c)
                    .await?;
                Ok(())
            })
        })
        .await
    }
}
