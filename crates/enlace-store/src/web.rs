//! The web channel's tables (`migrations/*/…_web_channel.sql`): hosted forms (their
//! definitions as JSON) and the on-site messages recipes queue for contacts, one per contact
//! and rule. The store keeps what the runner decided (a message's purchase check, a form's
//! validation happen before); it refuses a second message for a rule by the unique index.

use enlace_core::web::{FormDef, NewWebMessage, WebMessage};
use serde::Serialize;

use crate::{Millis, Result, Store, StoreError};

/// A stored form.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredForm {
    pub form: FormDef,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// The statuses of an on-site message.
pub mod message_status {
    pub const PENDING: &str = "pending";
    pub const SHOWN: &str = "shown";
    pub const CLICKED: &str = "clicked";
    pub const DISMISSED: &str = "dismissed";
    pub const SKIPPED: &str = "skipped";
    pub const CANCELLED: &str = "cancelled";
}

/// A row of `web_messages` as read.
pub(crate) type MessageRow = (String, String, String, i64, Option<i64>, Option<i64>);

pub(crate) fn message_of(r: MessageRow) -> Result<WebMessage> {
    let (id, message, status, created_at, shown_at, closed_at) = r;
    let message: NewWebMessage =
        serde_json::from_str(&message).map_err(|e| StoreError::Database(format!("the stored web message {id} cannot be read: {e}")))?;
    Ok(WebMessage { id, message, status, created_at, shown_at, closed_at })
}

pub(crate) fn form_of(id: &str, text: &str, created_at: i64, updated_at: i64) -> Result<StoredForm> {
    let form: FormDef =
        serde_json::from_str(text).map_err(|e| StoreError::Database(format!("the stored form {id} cannot be read: {e}")))?;
    Ok(StoredForm { form, created_at, updated_at })
}

macro_rules! dispatch {
    ($self:ident, $b:ident => $e:expr) => {
        match &$self.backend {
            crate::Backend::Sqlite($b) => $e,
            crate::Backend::Postgres($b) => $e,
        }
    };
}

impl Store {
    /// Creates or replaces a form (checked by the caller); true when it was created.
    pub async fn put_form(&self, form: &FormDef, now: Millis) -> Result<bool> {
        let text = serde_json::to_string(form).map_err(|e| StoreError::Invalid(e.to_string()))?;
        dispatch!(self, b => b.put_form(form.id.clone(), text, now).await)
    }

    pub async fn form(&self, id: &str) -> Result<Option<StoredForm>> {
        dispatch!(self, b => b.form(id).await)
    }

    /// Every form, by id.
    pub async fn forms(&self) -> Result<Vec<StoredForm>> {
        dispatch!(self, b => b.forms().await)
    }

    /// Deletes a form; false when there was none.
    pub async fn delete_form(&self, id: &str) -> Result<bool> {
        dispatch!(self, b => b.delete_form(id).await)
    }

    /// Queues a message unless the contact already has one for its rule: `Ok(Err(existing
    /// id))` then.
    pub async fn insert_web_message(&self, m: &NewWebMessage, now: Millis) -> Result<std::result::Result<String, String>> {
        let text = serde_json::to_string(m).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let id = crate::new_id();
        dispatch!(self, b => b.insert_web_message(id.clone(), m.contact_id.clone(), m.rule.clone(), text, now).await)
    }

    /// A contact's messages still to show (pending, not expired at `now`), oldest first.
    pub async fn pending_web_messages(&self, contact_id: &str, now: Millis) -> Result<Vec<WebMessage>> {
        let all = dispatch!(self, b => b.web_messages(Some(contact_id), Some(message_status::PENDING), 50).await)?;
        Ok(all.into_iter().filter(|m| m.message.expires_at.is_none_or(|t| t > now)).collect())
    }

    /// Messages, newest first: a contact's, of a status, or all.
    pub async fn web_messages(&self, contact_id: Option<&str>, status: Option<&str>, limit: i64) -> Result<Vec<WebMessage>> {
        dispatch!(self, b => b.web_messages(contact_id, status, limit.clamp(1, 1000)).await)
    }

    pub async fn web_message(&self, id: &str) -> Result<Option<WebMessage>> {
        dispatch!(self, b => b.web_message(id).await)
    }

    /// Moves a message of this contact from one of `from` to `to` (setting `shown_at` for
    /// `shown`, `closed_at` otherwise); the message after the change, `None` when it was not
    /// in one of `from` (or is not this contact's).
    pub async fn set_web_message_status(
        &self,
        id: &str,
        contact_id: Option<&str>,
        from: &[&str],
        to: &str,
        now: Millis,
    ) -> Result<Option<WebMessage>> {
        let from: Vec<String> = from.iter().map(|s| s.to_string()).collect();
        let changed = dispatch!(self, b => b.set_web_message_status(id, contact_id, from, to, now).await)?;
        if changed { self.web_message(id).await } else { Ok(None) }
    }
}
