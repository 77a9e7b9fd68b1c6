//! The UI's accounts and sessions on SQLite (see `crate::accounts`).

use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use super::{Sqlite, is_unique_violation};
use crate::accounts::{DraftRow, NewSession, SampleRow, SessionRow, UserRow};
use crate::{Millis, Result, StoreError};

fn user_of(r: &SqliteRow) -> UserRow {
    UserRow { id: r.get("id"), username: r.get("username"), role: r.get("role"), created_at: r.get("created_at") }
}

fn draft_of(r: &SqliteRow) -> DraftRow {
    DraftRow {
        recipe_id: r.get("recipe_id"),
        source: serde_json::from_str(&r.get::<String, _>("source")).unwrap_or(serde_json::Value::Null),
        updated_at: r.get("updated_at"),
        updated_by: r.get("updated_by"),
    }
}

fn taken(username: &str) -> StoreError {
    StoreError::Conflict(format!("an account named `{username}` exists already; choose another name"))
}

impl Sqlite {
    pub(crate) async fn ui_user_count(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM ui_users").fetch_one(&self.read).await?)
    }

    pub(crate) async fn ui_create_first_admin(&self, user: UserRow, hash: String) -> Result<Option<UserRow>> {
        // The writer is alone: the check and the insert cannot interleave with another setup.
        self.write(move |c| {
            Box::pin(async move {
                let n = sqlx::query(
                    "INSERT INTO ui_users (id, username, password_hash, role, created_at, updated_at) \
                     SELECT ?, ?, ?, 'admin', ?, ? WHERE NOT EXISTS (SELECT 1 FROM ui_users)",
                )
                .bind(&user.id)
                .bind(&user.username)
                .bind(&hash)
                .bind(user.created_at)
                .bind(user.created_at)
                .execute(&mut *c)
                .await?
                .rows_affected();
                Ok((n == 1).then_some(user))
            })
        })
        .await
    }

    pub(crate) async fn ui_create_user(&self, user: UserRow, hash: String) -> Result<()> {
        self.write(move |c| {
            Box::pin(async move {
                let res = sqlx::query(
                    "INSERT INTO ui_users (id, username, password_hash, role, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
                )
                .bind(&user.id)
                .bind(&user.username)
                .bind(&hash)
                .bind(&user.role)
                .bind(user.created_at)
                .bind(user.created_at)
                .execute(&mut *c)
                .await;
                match res {
                    Err(e) if is_unique_violation(&e) => Err(taken(&user.username)),
                    Err(e) => Err(e.into()),
                    Ok(_) => Ok(()),
                }
            })
        })
        .await
    }

    pub(crate) async fn ui_user_by_name(&self, username: &str) -> Result<Option<(UserRow, String)>> {
        let row = sqlx::query("SELECT id, username, role, created_at, password_hash FROM ui_users WHERE username = ?")
            .bind(username)
            .fetch_optional(&self.read)
            .await?;
        Ok(row.map(|r| (user_of(&r), r.get("password_hash"))))
    }

    pub(crate) async fn ui_list_users(&self) -> Result<Vec<UserRow>> {
        let rows = sqlx::query("SELECT id, username, role, created_at FROM ui_users ORDER BY username").fetch_all(&self.read).await?;
        Ok(rows.iter().map(user_of).collect())
    }

    pub(crate) async fn ui_set_role(&self, id: &str, role: &str, now: Millis) -> Result<bool> {
        let (id, role) = (id.to_string(), role.to_string());
        self.write(move |c| {
            Box::pin(async move {
                Ok(sqlx::query("UPDATE ui_users SET role = ?, updated_at = ? WHERE id = ?")
                    .bind(&role)
                    .bind(now)
                    .bind(&id)
                    .execute(&mut *c)
                    .await?
                    .rows_affected()
                    > 0)
            })
        })
        .await
    }

    pub(crate) async fn ui_set_password(&self, id: &str, hash: &str, now: Millis) -> Result<bool> {
        let (id, hash) = (id.to_string(), hash.to_string());
        self.write(move |c| {
            Box::pin(async move {
                let n = sqlx::query("UPDATE ui_users SET password_hash = ?, updated_at = ? WHERE id = ?")
                    .bind(&hash)
                    .bind(now)
                    .bind(&id)
                    .execute(&mut *c)
                    .await?
                    .rows_affected();
                sqlx::query("DELETE FROM ui_sessions WHERE user_id = ?").bind(&id).execute(&mut *c).await?;
                Ok(n > 0)
            })
        })
        .await
    }

    pub(crate) async fn ui_delete_user(&self, id: &str) -> Result<bool> {
        let id = id.to_string();
        self.write(move |c| {
            Box::pin(
                async move { Ok(sqlx::query("DELETE FROM ui_users WHERE id = ?").bind(&id).execute(&mut *c).await?.rows_affected() > 0) },
            )
        })
        .await
    }

    pub(crate) async fn ui_create_session(&self, s: NewSession) -> Result<()> {
        self.write(move |c| {
            Box::pin(async move {
                sqlx::query("DELETE FROM ui_sessions WHERE expires_at <= ?").bind(s.now).execute(&mut *c).await?;
                sqlx::query("INSERT INTO ui_sessions (id_hash, user_id, csrf, created_at, expires_at) VALUES (?, ?, ?, ?, ?)")
                    .bind(&s.id_hash)
                    .bind(&s.user_id)
                    .bind(&s.csrf)
                    .bind(s.now)
                    .bind(s.expires_at)
                    .execute(&mut *c)
                    .await?;
                Ok(())
            })
        })
        .await
    }

    pub(crate) async fn ui_session(&self, id_hash: &str, now: Millis) -> Result<Option<SessionRow>> {
        let row = sqlx::query(
            "SELECT u.id, u.username, u.role, u.created_at, s.csrf, s.created_at AS s_created, s.expires_at \
             FROM ui_sessions s JOIN ui_users u ON u.id = s.user_id WHERE s.id_hash = ? AND s.expires_at > ?",
        )
        .bind(id_hash)
        .bind(now)
        .fetch_optional(&self.read)
        .await?;
        Ok(row.map(|r| SessionRow {
            user: user_of(&r),
            csrf: r.get("csrf"),
            created_at: r.get("s_created"),
            expires_at: r.get("expires_at"),
        }))
    }

    pub(crate) async fn ui_delete_session(&self, id_hash: &str) -> Result<bool> {
        let id_hash = id_hash.to_string();
        self.write(move |c| {
            Box::pin(async move {
                Ok(sqlx::query("DELETE FROM ui_sessions WHERE id_hash = ?").bind(&id_hash).execute(&mut *c).await?.rows_affected() > 0)
            })
        })
        .await
    }

    pub(crate) async fn ui_save_draft(&self, d: DraftRow) -> Result<()> {
        self.write(move |c| {
            Box::pin(async move {
                sqlx::query(
                    "INSERT INTO ui_drafts (recipe_id, source, updated_at, updated_by) VALUES (?, ?, ?, ?) \
                     ON CONFLICT (recipe_id) DO UPDATE SET source = excluded.source, updated_at = excluded.updated_at, updated_by = excluded.updated_by",
                )
                .bind(&d.recipe_id)
                .bind(d.source.to_string())
                .bind(d.updated_at)
                .bind(&d.updated_by)
                .execute(&mut *c)
                .await?;
                Ok(())
            })
        })
        .await
    }

    pub(crate) async fn ui_draft(&self, recipe_id: &str) -> Result<Option<DraftRow>> {
        let row = sqlx::query("SELECT recipe_id, source, updated_at, updated_by FROM ui_drafts WHERE recipe_id = ?")
            .bind(recipe_id)
            .fetch_optional(&self.read)
            .await?;
        Ok(row.map(|r| draft_of(&r)))
    }

    pub(crate) async fn ui_drafts(&self) -> Result<Vec<DraftRow>> {
        let rows =
            sqlx::query("SELECT recipe_id, source, updated_at, updated_by FROM ui_drafts ORDER BY recipe_id").fetch_all(&self.read).await?;
        Ok(rows.iter().map(draft_of).collect())
    }

    pub(crate) async fn ui_delete_draft(&self, recipe_id: &str) -> Result<bool> {
        let id = recipe_id.to_string();
        self.write(move |c| {
            Box::pin(async move {
                Ok(sqlx::query("DELETE FROM ui_drafts WHERE recipe_id = ?").bind(&id).execute(&mut *c).await?.rows_affected() > 0)
            })
        })
        .await
    }

    pub(crate) async fn ui_listen_sample(&self, path: &str, recipe_id: &str, until: Millis) -> Result<()> {
        let (path, recipe_id) = (path.to_string(), recipe_id.to_string());
        self.write(move |c| {
            Box::pin(async move {
                sqlx::query("DELETE FROM ui_samples WHERE recipe_id = ? OR path = ?").bind(&recipe_id).bind(&path).execute(&mut *c).await?;
                sqlx::query("INSERT INTO ui_samples (path, recipe_id, listening_until) VALUES (?, ?, ?)")
                    .bind(&path)
                    .bind(&recipe_id)
                    .bind(until)
                    .execute(&mut *c)
                    .await?;
                Ok(())
            })
        })
        .await
    }

    pub(crate) async fn ui_capture_sample(&self, path: &str, payload: String, now: Millis) -> Result<bool> {
        let path = path.to_string();
        self.write(move |c| {
            Box::pin(async move {
                Ok(sqlx::query("UPDATE ui_samples SET payload = ?, received_at = ? WHERE path = ? AND listening_until > ?")
                    .bind(&payload)
                    .bind(now)
                    .bind(&path)
                    .bind(now)
                    .execute(&mut *c)
                    .await?
                    .rows_affected()
                    > 0)
            })
        })
        .await
    }

    pub(crate) async fn ui_sample(&self, recipe_id: &str) -> Result<Option<SampleRow>> {
        let row = sqlx::query("SELECT path, recipe_id, listening_until, payload, received_at FROM ui_samples WHERE recipe_id = ?")
            .bind(recipe_id)
            .fetch_optional(&self.read)
            .await?;
        Ok(row.map(|r| SampleRow {
            path: r.get("path"),
            recipe_id: r.get("recipe_id"),
            listening_until: r.get("listening_until"),
            payload: r.get::<Option<String>, _>("payload").and_then(|p| serde_json::from_str(&p).ok()),
            received_at: r.get("received_at"),
        }))
    }
}
