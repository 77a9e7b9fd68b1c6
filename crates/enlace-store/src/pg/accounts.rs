//! The UI's accounts and sessions on PostgreSQL (see `crate::accounts`).

use sqlx::Row;
use sqlx::postgres::PgRow;

use super::{Pg, is_unique_violation, pg_err};
use crate::accounts::{DraftRow, NewSession, SampleRow, SessionRow, UserRow};
use crate::{Millis, Result, StoreError};

fn user_of(r: &PgRow) -> UserRow {
    UserRow { id: r.get("id"), username: r.get("username"), role: r.get("role"), created_at: r.get("created_at") }
}

fn draft_of(r: &PgRow) -> DraftRow {
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

impl Pg {
    pub(crate) async fn ui_user_count(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM ui_users").fetch_one(&self.pool).await?)
    }

    pub(crate) async fn ui_create_first_admin(&self, user: UserRow, hash: String) -> Result<Option<UserRow>> {
        // Two nodes finishing the setup at once: the advisory lock orders them, and the
        // second finds the first's account.
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('enlace:ui_setup'))").execute(&mut *tx).await?;
        let n = sqlx::query(
            "INSERT INTO ui_users (id, username, password_hash, role, created_at, updated_at) \
             SELECT $1, $2, $3, 'admin', $4, $4 WHERE NOT EXISTS (SELECT 1 FROM ui_users)",
        )
        .bind(&user.id)
        .bind(&user.username)
        .bind(&hash)
        .bind(user.created_at)
        .execute(&mut *tx)
        .await
        .map_err(pg_err)?
        .rows_affected();
        tx.commit().await?;
        Ok((n == 1).then_some(user))
    }

    pub(crate) async fn ui_create_user(&self, user: UserRow, hash: String) -> Result<()> {
        let res =
            sqlx::query("INSERT INTO ui_users (id, username, password_hash, role, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5)")
                .bind(&user.id)
                .bind(&user.username)
                .bind(&hash)
                .bind(&user.role)
                .bind(user.created_at)
                .execute(&self.pool)
                .await;
        match res {
            Err(e) if is_unique_violation(&e, None) => Err(taken(&user.username)),
            Err(e) => Err(pg_err(e)),
            Ok(_) => Ok(()),
        }
    }

    pub(crate) async fn ui_user_by_name(&self, username: &str) -> Result<Option<(UserRow, String)>> {
        let row = sqlx::query("SELECT id, username, role, created_at, password_hash FROM ui_users WHERE username = $1")
            .bind(username)
            .fetch_optional(&self.pool)
            .await
            .map_err(pg_err)?;
        Ok(row.map(|r| (user_of(&r), r.get("password_hash"))))
    }

    pub(crate) async fn ui_list_users(&self) -> Result<Vec<UserRow>> {
        let rows = sqlx::query("SELECT id, username, role, created_at FROM ui_users ORDER BY username").fetch_all(&self.pool).await?;
        Ok(rows.iter().map(user_of).collect())
    }

    pub(crate) async fn ui_set_role(&self, id: &str, role: &str, now: Millis) -> Result<bool> {
        Ok(sqlx::query("UPDATE ui_users SET role = $1, updated_at = $2 WHERE id = $3")
            .bind(role)
            .bind(now)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(pg_err)?
            .rows_affected()
            > 0)
    }

    pub(crate) async fn ui_set_password(&self, id: &str, hash: &str, now: Millis) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query("UPDATE ui_users SET password_hash = $1, updated_at = $2 WHERE id = $3")
            .bind(hash)
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(pg_err)?
            .rows_affected();
        sqlx::query("DELETE FROM ui_sessions WHERE user_id = $1").bind(id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(n > 0)
    }

    pub(crate) async fn ui_delete_user(&self, id: &str) -> Result<bool> {
        Ok(sqlx::query("DELETE FROM ui_users WHERE id = $1").bind(id).execute(&self.pool).await.map_err(pg_err)?.rows_affected() > 0)
    }

    pub(crate) async fn ui_create_session(&self, s: NewSession) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM ui_sessions WHERE expires_at <= $1").bind(s.now).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO ui_sessions (id_hash, user_id, csrf, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(&s.id_hash)
            .bind(&s.user_id)
            .bind(&s.csrf)
            .bind(s.now)
            .bind(s.expires_at)
            .execute(&mut *tx)
            .await
            .map_err(pg_err)?;
        tx.commit().await?;
        Ok(())
    }

    pub(crate) async fn ui_session(&self, id_hash: &str, now: Millis) -> Result<Option<SessionRow>> {
        let row = sqlx::query(
            "SELECT u.id, u.username, u.role, u.created_at, s.csrf, s.created_at AS s_created, s.expires_at \
             FROM ui_sessions s JOIN ui_users u ON u.id = s.user_id WHERE s.id_hash = $1 AND s.expires_at > $2",
        )
        .bind(id_hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| SessionRow {
            user: user_of(&r),
            csrf: r.get("csrf"),
            created_at: r.get("s_created"),
            expires_at: r.get("expires_at"),
        }))
    }

    pub(crate) async fn ui_delete_session(&self, id_hash: &str) -> Result<bool> {
        Ok(sqlx::query("DELETE FROM ui_sessions WHERE id_hash = $1")
            .bind(id_hash)
            .execute(&self.pool)
            .await
            .map_err(pg_err)?
            .rows_affected()
            > 0)
    }

    pub(crate) async fn ui_save_draft(&self, d: DraftRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO ui_drafts (recipe_id, source, updated_at, updated_by) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (recipe_id) DO UPDATE SET source = excluded.source, updated_at = excluded.updated_at, updated_by = excluded.updated_by",
        )
        .bind(&d.recipe_id)
        .bind(d.source.to_string())
        .bind(d.updated_at)
        .bind(&d.updated_by)
        .execute(&self.pool)
        .await
        .map_err(pg_err)?;
        Ok(())
    }

    pub(crate) async fn ui_draft(&self, recipe_id: &str) -> Result<Option<DraftRow>> {
        let row = sqlx::query("SELECT recipe_id, source, updated_at, updated_by FROM ui_drafts WHERE recipe_id = $1")
            .bind(recipe_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| draft_of(&r)))
    }

    pub(crate) async fn ui_drafts(&self) -> Result<Vec<DraftRow>> {
        let rows =
            sqlx::query("SELECT recipe_id, source, updated_at, updated_by FROM ui_drafts ORDER BY recipe_id").fetch_all(&self.pool).await?;
        Ok(rows.iter().map(draft_of).collect())
    }

    pub(crate) async fn ui_delete_draft(&self, recipe_id: &str) -> Result<bool> {
        Ok(sqlx::query("DELETE FROM ui_drafts WHERE recipe_id = $1").bind(recipe_id).execute(&self.pool).await?.rows_affected() > 0)
    }

    pub(crate) async fn ui_listen_sample(&self, path: &str, recipe_id: &str, until: Millis) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM ui_samples WHERE recipe_id = $1 OR path = $2").bind(recipe_id).bind(path).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO ui_samples (path, recipe_id, listening_until) VALUES ($1, $2, $3)")
            .bind(path)
            .bind(recipe_id)
            .bind(until)
            .execute(&mut *tx)
            .await
            .map_err(pg_err)?;
        tx.commit().await?;
        Ok(())
    }

    pub(crate) async fn ui_capture_sample(&self, path: &str, payload: String, now: Millis) -> Result<bool> {
        Ok(sqlx::query("UPDATE ui_samples SET payload = $1, received_at = $2 WHERE path = $3 AND listening_until > $2")
            .bind(&payload)
            .bind(now)
            .bind(path)
            .execute(&self.pool)
            .await
            .map_err(pg_err)?
            .rows_affected()
            > 0)
    }

    pub(crate) async fn ui_sample(&self, recipe_id: &str) -> Result<Option<SampleRow>> {
        let row = sqlx::query("SELECT path, recipe_id, listening_until, payload, received_at FROM ui_samples WHERE recipe_id = $1")
            .bind(recipe_id)
            .fetch_optional(&self.pool)
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
