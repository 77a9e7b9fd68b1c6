//! The web UI's accounts: people who sign in (`ui_users`, argon2id hashes made by the web
//! crate) and their sessions (`ui_sessions`, keyed by the SHA-256 of the cookie's value,
//! each with its CSRF token and an absolute expiry). Tables in `migrations/*/…_ui_accounts.sql`.
//!
//! The store decides nothing about passwords or roles: it keeps what the web crate hands it,
//! and makes the first account atomically (only while there is none).

use serde::Serialize;

use crate::{Backend, Millis, Result, Store};

/// A person who signs in to the UI.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct UserRow {
    pub id: String,
    pub username: String,
    /// `admin`, `editor` or `viewer`.
    pub role: String,
    pub created_at: Millis,
}

/// A live session and whose it is.
#[derive(Debug, Clone)]
pub struct SessionRow {
    pub user: UserRow,
    pub csrf: String,
    pub created_at: Millis,
    pub expires_at: Millis,
}

/// A new session.
#[derive(Debug, Clone)]
pub struct NewSession {
    /// Hex SHA-256 of the cookie's value ([`crate::token_hash`]).
    pub id_hash: String,
    pub user_id: String,
    pub csrf: String,
    pub now: Millis,
    pub expires_at: Millis,
}

/// A recipe being built in the editor.
#[derive(Debug, Clone, PartialEq)]
pub struct DraftRow {
    pub recipe_id: String,
    pub source: serde_json::Value,
    pub updated_at: Millis,
    pub updated_by: String,
}

/// A sample request caught for a webhook recipe being built.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleRow {
    pub path: String,
    pub recipe_id: String,
    pub listening_until: Millis,
    /// `{body, headers, query, received_at}`, once a request came.
    pub payload: Option<serde_json::Value>,
    pub received_at: Option<Millis>,
}

impl Store {
    /// Saves (replaces) a recipe's draft.
    pub async fn ui_save_draft(&self, d: &DraftRow) -> Result<()> {
        dispatch!(self, b => b.ui_save_draft(d.clone()).await)
    }

    pub async fn ui_draft(&self, recipe_id: &str) -> Result<Option<DraftRow>> {
        dispatch!(self, b => b.ui_draft(recipe_id).await)
    }

    /// Every draft, by recipe id.
    pub async fn ui_drafts(&self) -> Result<Vec<DraftRow>> {
        dispatch!(self, b => b.ui_drafts().await)
    }

    pub async fn ui_delete_draft(&self, recipe_id: &str) -> Result<bool> {
        dispatch!(self, b => b.ui_delete_draft(recipe_id).await)
    }

    /// Listens for a sample request on a webhook path until `until` (a new listen forgets
    /// the previous sample).
    pub async fn ui_listen_sample(&self, path: &str, recipe_id: &str, until: Millis) -> Result<()> {
        dispatch!(self, b => b.ui_listen_sample(path, recipe_id, until).await)
    }

    /// Keeps a request as the sample of the path, if the editor listens on it at `now`:
    /// false when nobody listens.
    pub async fn ui_capture_sample(&self, path: &str, payload: &serde_json::Value, now: Millis) -> Result<bool> {
        dispatch!(self, b => b.ui_capture_sample(path, payload.to_string(), now).await)
    }

    /// The sample state of a recipe (its latest listen, and the request caught, if any).
    pub async fn ui_sample(&self, recipe_id: &str) -> Result<Option<SampleRow>> {
        dispatch!(self, b => b.ui_sample(recipe_id).await)
    }

    /// How many accounts exist (0: the UI is not set up yet).
    pub async fn ui_user_count(&self) -> Result<i64> {
        dispatch!(self, b => b.ui_user_count().await)
    }

    /// Creates the first account, an admin, only while no account exists: `None` when one
    /// does (someone finished the setup first).
    pub async fn ui_create_first_admin(&self, username: &str, password_hash: &str, now: Millis) -> Result<Option<UserRow>> {
        let user = UserRow { id: crate::new_id(), username: username.to_string(), role: "admin".into(), created_at: now };
        dispatch!(self, b => b.ui_create_first_admin(user.clone(), password_hash.to_string()).await)
    }

    /// Creates an account; `Conflict` when the name is taken.
    pub async fn ui_create_user(&self, username: &str, password_hash: &str, role: &str, now: Millis) -> Result<UserRow> {
        let user = UserRow { id: crate::new_id(), username: username.to_string(), role: role.to_string(), created_at: now };
        dispatch!(self, b => b.ui_create_user(user.clone(), password_hash.to_string()).await)?;
        Ok(user)
    }

    /// An account and its password hash, by name.
    pub async fn ui_user_by_name(&self, username: &str) -> Result<Option<(UserRow, String)>> {
        dispatch!(self, b => b.ui_user_by_name(username).await)
    }

    /// Every account, by name.
    pub async fn ui_list_users(&self) -> Result<Vec<UserRow>> {
        dispatch!(self, b => b.ui_list_users().await)
    }

    /// Changes an account's role; false when there is no such account.
    pub async fn ui_set_role(&self, user_id: &str, role: &str, now: Millis) -> Result<bool> {
        dispatch!(self, b => b.ui_set_role(user_id, role, now).await)
    }

    /// Changes an account's password hash and ends its sessions; false when there is no such account.
    pub async fn ui_set_password(&self, user_id: &str, password_hash: &str, now: Millis) -> Result<bool> {
        dispatch!(self, b => b.ui_set_password(user_id, password_hash, now).await)
    }

    /// Deletes an account (its sessions go with it); false when there is no such account.
    pub async fn ui_delete_user(&self, user_id: &str) -> Result<bool> {
        dispatch!(self, b => b.ui_delete_user(user_id).await)
    }

    /// Stores a new session (and drops expired ones).
    pub async fn ui_create_session(&self, s: &NewSession) -> Result<()> {
        dispatch!(self, b => b.ui_create_session(s.clone()).await)
    }

    /// The session whose cookie hashes to `id_hash`, if it has not expired at `now`.
    pub async fn ui_session(&self, id_hash: &str, now: Millis) -> Result<Option<SessionRow>> {
        dispatch!(self, b => b.ui_session(id_hash, now).await)
    }

    /// Ends a session (signing out).
    pub async fn ui_delete_session(&self, id_hash: &str) -> Result<bool> {
        dispatch!(self, b => b.ui_delete_session(id_hash).await)
    }
}
