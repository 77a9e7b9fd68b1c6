//! The web channel's statements on PostgreSQL (see `crate::web`).

use super::{Pg, pg_err};
use crate::web::{MessageRow, StoredForm, form_of, message_of};
use crate::{Millis, Result};
use enlace_core::web::WebMessage;

impl Pg {
    pub(crate) async fn put_form(&self, id: String, text: String, now: Millis) -> Result<bool> {
        // xmax = 0: the row was inserted, not updated.
        let created: bool = sqlx::query_scalar(
            "INSERT INTO web_forms (id, definition, created_at, updated_at) VALUES ($1, $2, $3, $3) \
             ON CONFLICT (id) DO UPDATE SET definition = excluded.definition, updated_at = excluded.updated_at \
             RETURNING (xmax::text = '0')",
        )
        .bind(&id)
        .bind(&text)
        .bind(now)
        .fetch_one(&self.pool)
        .await
        .map_err(pg_err)?;
        Ok(created)
    }

    pub(crate) async fn form(&self, id: &str) -> Result<Option<StoredForm>> {
        let row: Option<(String, String, i64, i64)> =
            sqlx::query_as("SELECT id, definition, created_at, updated_at FROM web_forms WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .map_err(pg_err)?;
        row.map(|(id, t, c, u)| form_of(&id, &t, c, u)).transpose()
    }

    pub(crate) async fn forms(&self) -> Result<Vec<StoredForm>> {
        let rows: Vec<(String, String, i64, i64)> =
            sqlx::query_as("SELECT id, definition, created_at, updated_at FROM web_forms ORDER BY id")
                .fetch_all(&self.pool)
                .await
                .map_err(pg_err)?;
        rows.into_iter().map(|(id, t, c, u)| form_of(&id, &t, c, u)).collect()
    }

    pub(crate) async fn delete_form(&self, id: &str) -> Result<bool> {
        Ok(sqlx::query("DELETE FROM web_forms WHERE id = $1").bind(id).execute(&self.pool).await.map_err(pg_err)?.rows_affected() > 0)
    }

    pub(crate) async fn insert_web_message(
        &self,
        id: String,
        contact_id: String,
        rule: String,
        text: String,
        now: Millis,
    ) -> Result<std::result::Result<String, String>> {
        let done = sqlx::query(
            "INSERT INTO web_messages (id, contact_id, rule, message, status, created_at) VALUES ($1, $2, $3, $4, 'pending', $5) \
             ON CONFLICT (contact_id, rule) DO NOTHING",
        )
        .bind(&id)
        .bind(&contact_id)
        .bind(&rule)
        .bind(&text)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(pg_err)?;
        if done.rows_affected() > 0 {
            return Ok(Ok(id));
        }
        let existing: String = sqlx::query_scalar("SELECT id FROM web_messages WHERE contact_id = $1 AND rule = $2")
            .bind(&contact_id)
            .bind(&rule)
            .fetch_one(&self.pool)
            .await
            .map_err(pg_err)?;
        Ok(Err(existing))
    }

    pub(crate) async fn web_messages(&self, contact_id: Option<&str>, status: Option<&str>, limit: i64) -> Result<Vec<WebMessage>> {
        let rows: Vec<MessageRow> = sqlx::query_as(
            "SELECT id, message, status, created_at, shown_at, closed_at FROM web_messages \
             WHERE ($1::text IS NULL OR contact_id = $1) AND ($2::text IS NULL OR status = $2) \
             ORDER BY CASE WHEN $2 = 'pending' THEN created_at ELSE -created_at END, id LIMIT $3",
        )
        .bind(contact_id)
        .bind(status)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(pg_err)?;
        rows.into_iter().map(message_of).collect()
    }

    pub(crate) async fn web_message(&self, id: &str) -> Result<Option<WebMessage>> {
        let row: Option<MessageRow> =
            sqlx::query_as("SELECT id, message, status, created_at, shown_at, closed_at FROM web_messages WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .map_err(pg_err)?;
        row.map(message_of).transpose()
    }

    pub(crate) async fn set_web_message_status(
        &self,
        id: &str,
        contact_id: Option<&str>,
        from: Vec<String>,
        to: &str,
        now: Millis,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE web_messages SET status = $1, \
               shown_at = CASE WHEN $1 = 'shown' THEN $2 ELSE shown_at END, \
               closed_at = CASE WHEN $1 = 'shown' THEN closed_at ELSE $2 END \
             WHERE id = $3 AND ($4::text IS NULL OR contact_id = $4) AND status = ANY($5)",
        )
        .bind(to)
        .bind(now)
        .bind(id)
        .bind(contact_id)
        .bind(&from)
        .execute(&self.pool)
        .await
        .map_err(pg_err)?;
        Ok(done.rows_affected() > 0)
    }
}
