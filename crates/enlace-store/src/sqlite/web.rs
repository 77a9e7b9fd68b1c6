//! The web channel's statements on SQLite (see `crate::web`).

use super::Sqlite;
use crate::web::{MessageRow, StoredForm, form_of, message_of};
use crate::{Millis, Result};
use enlace_core::web::WebMessage;

impl Sqlite {
    pub(crate) async fn put_form(&self, id: String, text: String, now: Millis) -> Result<bool> {
        self.write(move |c| {
            Box::pin(async move {
                let existed: Option<i64> =
                    sqlx::query_scalar("SELECT 1 FROM web_forms WHERE id = ?").bind(&id).fetch_optional(&mut *c).await?;
                sqlx::query(
                    "INSERT INTO web_forms (id, definition, created_at, updated_at) VALUES (?, ?, ?, ?) \
                     ON CONFLICT (id) DO UPDATE SET definition = excluded.definition, updated_at = excluded.updated_at",
                )
                .bind(&id)
                .bind(&text)
                .bind(now)
                .bind(now)
                .execute(&mut *c)
                .await?;
                Ok(existed.is_none())
            })
        })
        .await
    }

    pub(crate) async fn form(&self, id: &str) -> Result<Option<StoredForm>> {
        let row: Option<(String, String, i64, i64)> =
            sqlx::query_as("SELECT id, definition, created_at, updated_at FROM web_forms WHERE id = ?")
                .bind(id)
                .fetch_optional(&self.read)
                .await?;
        row.map(|(id, t, c, u)| form_of(&id, &t, c, u)).transpose()
    }

    pub(crate) async fn forms(&self) -> Result<Vec<StoredForm>> {
        let rows: Vec<(String, String, i64, i64)> =
            sqlx::query_as("SELECT id, definition, created_at, updated_at FROM web_forms ORDER BY id").fetch_all(&self.read).await?;
        rows.into_iter().map(|(id, t, c, u)| form_of(&id, &t, c, u)).collect()
    }

    pub(crate) async fn delete_form(&self, id: &str) -> Result<bool> {
        let id = id.to_string();
        self.write(move |c| {
            Box::pin(
                async move { Ok(sqlx::query("DELETE FROM web_forms WHERE id = ?").bind(&id).execute(&mut *c).await?.rows_affected() > 0) },
            )
        })
        .await
    }

    pub(crate) async fn insert_web_message(
        &self,
        id: String,
        contact_id: String,
        rule: String,
        text: String,
        now: Millis,
    ) -> Result<std::result::Result<String, String>> {
        self.write(move |c| {
            Box::pin(async move {
                let done = sqlx::query(
                    "INSERT INTO web_messages (id, contact_id, rule, message, status, created_at) VALUES (?, ?, ?, ?, 'pending', ?) \
                     ON CONFLICT (contact_id, rule) DO NOTHING",
                )
                .bind(&id)
                .bind(&contact_id)
                .bind(&rule)
                .bind(&text)
                .bind(now)
                .execute(&mut *c)
                .await?;
                if done.rows_affected() > 0 {
                    return Ok(Ok(id));
                }
                let existing: String = sqlx::query_scalar("SELECT id FROM web_messages WHERE contact_id = ? AND rule = ?")
                    .bind(&contact_id)
                    .bind(&rule)
                    .fetch_one(&mut *c)
                    .await?;
                Ok(Err(existing))
            })
        })
        .await
    }

    pub(crate) async fn web_messages(&self, contact_id: Option<&str>, status: Option<&str>, limit: i64) -> Result<Vec<WebMessage>> {
        let rows: Vec<MessageRow> = sqlx::query_as(
            "SELECT id, message, status, created_at, shown_at, closed_at FROM web_messages \
             WHERE (?1 IS NULL OR contact_id = ?1) AND (?2 IS NULL OR status = ?2) \
             ORDER BY CASE WHEN ?2 = 'pending' THEN created_at ELSE -created_at END, id LIMIT ?3",
        )
        .bind(contact_id)
        .bind(status)
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        rows.into_iter().map(message_of).collect()
    }

    pub(crate) async fn web_message(&self, id: &str) -> Result<Option<WebMessage>> {
        let row: Option<MessageRow> =
            sqlx::query_as("SELECT id, message, status, created_at, shown_at, closed_at FROM web_messages WHERE id = ?")
                .bind(id)
                .fetch_optional(&self.read)
                .await?;
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
        let (id, contact_id, to) = (id.to_string(), contact_id.map(str::to_string), to.to_string());
        let from = serde_json::to_string(&from).unwrap_or_else(|_| "[]".into());
        self.write(move |c| {
            Box::pin(async move {
                let done = sqlx::query(
                    "UPDATE web_messages SET status = ?1, \
                       shown_at = CASE WHEN ?1 = 'shown' THEN ?2 ELSE shown_at END, \
                       closed_at = CASE WHEN ?1 = 'shown' THEN closed_at ELSE ?2 END \
                     WHERE id = ?3 AND (?4 IS NULL OR contact_id = ?4) AND status IN (SELECT value FROM json_each(?5))",
                )
                .bind(&to)
                .bind(now)
                .bind(&id)
                .bind(&contact_id)
                .bind(&from)
                .execute(&mut *c)
                .await?;
                Ok(done.rows_affected() > 0)
            })
        })
        .await
    }
}
