//! The web channel as the `web` app, the public pages and the API see it: forms (checked,
//! stored, linked, submitted onto the contact through the contacts service) and on-site
//! messages (queued once per contact and rule, never for a product the contact bought when
//! the rule says so, never after the contact withdrew the `web` channel for the purpose;
//! views, clicks and dismissals on the timeline).

use std::sync::Arc;

use enlace_core::BoxFuture;
use enlace_core::contacts::{ConsentStatus, ContactKey, ContactOp, ContactsError, Evidence, NewConsent, WriteContext};
use enlace_core::web::{Accepted, FormDef, FormLink, NewWebMessage, Queued, WebBackend, WebMessage, purchase_names};
use enlace_store::web::{StoredForm, message_status as st};
use serde_json::{Map, Value, json};

use crate::{Inner, RunnerError};

/// The base of links when a simulation has no public address.
pub const SIMULATED_BASE: &str = "https://enlace.invalid";

/// The runner's web channel service. Cheap to clone.
#[derive(Clone)]
pub struct Web {
    inner: Arc<Inner>,
}

/// Where a submission came from, for the consent's evidence and the timeline.
#[derive(Debug, Clone, Default)]
pub struct SubmissionContext {
    /// The page's address (without its token).
    pub url: String,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// One id per submission (the retried request of one submission stores nothing twice).
    pub submission_id: String,
}

/// What a visitor did with an on-site message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageAction {
    Viewed,
    Clicked,
    Dismissed,
}

impl MessageAction {
    pub fn parse(s: &str) -> Option<MessageAction> {
        match s {
            "viewed" => Some(MessageAction::Viewed),
            "clicked" => Some(MessageAction::Clicked),
            "dismissed" => Some(MessageAction::Dismissed),
            _ => None,
        }
    }
    /// The timeline kind it is recorded as.
    pub fn kind(self) -> &'static str {
        match self {
            MessageAction::Viewed => "web_message_viewed",
            MessageAction::Clicked => "web_message_clicked",
            MessageAction::Dismissed => "web_message_dismissed",
        }
    }
}

fn check_form(f: &FormDef) -> Result<(), RunnerError> {
    let errs = f.check();
    if errs.is_empty() {
        return Ok(());
    }
    Err(RunnerError::Invalid(errs.into_iter().map(|(p, m)| format!("{p}: {m}")).collect::<Vec<_>>().join("; ")))
}

impl Web {
    pub(crate) fn new(inner: Arc<Inner>) -> Web {
        Web { inner }
    }

    fn base(&self) -> Result<String, RunnerError> {
        match self.inner.config.public_url.as_deref().filter(|b| !b.is_empty()) {
            Some(b) => Ok(b.trim_end_matches('/').to_string()),
            None if self.inner.config.simulate => Ok(SIMULATED_BASE.into()),
            None => Err(RunnerError::Invalid("form links need Enlace's public address: set ENLACE_PUBLIC_URL (or --public-url)".into())),
        }
    }

    /// Checks and stores a form; true when it was created.
    pub async fn put_form(&self, f: &FormDef) -> Result<bool, RunnerError> {
        check_form(f)?;
        Ok(self.inner.store.put_form(f, self.inner.clock.now_ms()).await?)
    }

    pub async fn form(&self, id: &str) -> Result<Option<StoredForm>, RunnerError> {
        Ok(self.inner.store.form(id).await?)
    }

    /// A signed link to `form` for a contact, valid for `ttl_ms` or the form's `link_ttl`.
    pub async fn form_link(&self, form: &str, contact_id: &str, ttl_ms: Option<i64>) -> Result<FormLink, RunnerError> {
        let base = self.base()?;
        let ttl = match self.inner.store.form(form).await? {
            Some(f) => f.form.ttl_ms().map_err(RunnerError::Invalid)?,
            // A simulation runs on an empty store: the forms are the installation's.
            None if self.inner.config.simulate => 30 * 86_400_000,
            None => {
                return Err(RunnerError::NotFound(format!(
                    "no form `{form}`; create it first (`enlace forms put FILE` or PUT /api/v1/forms/{form})"
                )));
            }
        };
        let ttl = ttl_ms.unwrap_or(ttl);
        if self.inner.store.contact(ContactKey::Id(contact_id.to_string())).await?.is_none() {
            return Err(RunnerError::NotFound(format!("no contact `{contact_id}`")));
        }
        let expires_at = self.inner.clock.now_ms() + ttl;
        let token = crate::links::form_token(&self.inner.store, form, contact_id, expires_at);
        let expires = chrono::DateTime::from_timestamp_millis(expires_at)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_default();
        Ok(FormLink { form: form.to_string(), url: format!("{base}/f/{form}?t={token}"), expires_at: expires })
    }

    /// Stores a checked submission on its contact, through the contacts service: the
    /// contact (found by `contact_id`, or by the `email` field on a public form, created if
    /// new), its fields, the form's tags, each ticked consent with the wording shown as
    /// evidence, and last `form_submitted {form, url, fields}` on its timeline (which wakes the
    /// journeys waiting for it and starts `contacts.event` recipes). Returns the contact's id.
    pub async fn submit(
        &self,
        form: &FormDef,
        contact_id: Option<&str>,
        a: Accepted,
        cx: &SubmissionContext,
    ) -> Result<String, RunnerError> {
        let contacts = crate::contacts::Contacts::new(self.inner.clone());
        let w = |n: &str| WriteContext { op_key: Some(format!("form:{}:{n}", cx.submission_id)), run_id: None };
        let id = match (contact_id, &a.email) {
            (Some(id), _) => {
                if !a.fields.is_empty() {
                    contacts.apply(w("fields"), ContactOp::SetFields { key: ContactKey::Id(id.into()), fields: a.fields.clone() }).await?;
                }
                id.to_string()
            }
            (None, Some(email)) => {
                let out = contacts.apply(w("upsert"), ContactOp::Upsert { email: email.clone(), fields: a.fields.clone() }).await?;
                out.outcome.contact.id
            }
            (None, None) => return Err(RunnerError::Invalid("a public form needs the `email` field".into())),
        };
        let key = || ContactKey::Id(id.clone());
        for (i, tag) in form.tags.iter().enumerate() {
            contacts.apply(w(&format!("tag{i}")), ContactOp::AddTag { key: key(), tag: tag.clone() }).await?;
        }
        let now = self.inner.clock.now_ms();
        for (i, (purpose, channel, wording)) in a.consents.iter().enumerate() {
            let mut details = Map::new();
            details.insert("form".into(), json!(form.id));
            details.insert("url".into(), json!(cx.url));
            if let Some(ua) = &cx.user_agent {
                details.insert("user_agent".into(), json!(ua));
            }
            let consent = NewConsent {
                purpose: purpose.clone(),
                channel: channel.clone(),
                status: ConsentStatus::Granted,
                evidence: Evidence {
                    source: format!("form `{}` ({})", form.id, cx.url),
                    ip: cx.ip.clone(),
                    text: Some(wording.clone()),
                    recorded_at: now,
                    run_id: None,
                    details,
                },
            };
            contacts.apply(w(&format!("consent{i}")), ContactOp::RecordConsent { key: key(), consent }).await?;
        }
        let mut fields = a.fields.clone();
        if let Some(e) = &a.email {
            fields.insert("email".into(), json!(e));
        }
        let consents: Vec<Value> = a.consents.iter().map(|(p, c, _)| json!({"purpose": p, "channel": c})).collect();
        let data = json!({"form": form.id, "url": cx.url, "fields": fields, "consents": consents});
        contacts.apply(w("event"), ContactOp::RecordEvent { key: key(), kind: "form_submitted".into(), data, at: None }).await?;
        Ok(id)
    }

    /// Whether the contact's timeline has a purchase of `product`.
    async fn bought(&self, contact_id: &str, product: &str) -> Result<bool, RunnerError> {
        let purchases = self.inner.store.contact_events(contact_id, "purchase", 0, 1000).await?;
        Ok(purchases.iter().any(|e| purchase_names(&e.data, product)))
    }

    /// Whether the contact withdrew `purpose` on the `web` channel (latest decision).
    async fn web_withdrawn(&self, contact_id: &str, purpose: &str) -> Result<bool, RunnerError> {
        let Some(d) = self.inner.store.contact_detail(ContactKey::Id(contact_id.to_string())).await? else { return Ok(true) };
        Ok(d.consents.iter().any(|c| c.channel == "web" && c.purpose == purpose && c.status == ConsentStatus::Withdrawn))
    }

    /// Queues an on-site message (see [`WebBackend::queue_message`]).
    pub async fn queue_message(&self, m: NewWebMessage) -> Result<Queued, RunnerError> {
        if self.inner.store.contact(ContactKey::Id(m.contact_id.clone())).await?.is_none() {
            return Err(RunnerError::NotFound(format!("no contact `{}`", m.contact_id)));
        }
        if m.unless_purchased
            && let Some(p) = &m.product
            && self.bought(&m.contact_id, p).await?
        {
            return Ok(Queued { queued: false, reason: Some(format!("the contact already bought `{p}`")), message_id: None });
        }
        if self.web_withdrawn(&m.contact_id, &m.purpose).await? {
            return Ok(Queued {
                queued: false,
                reason: Some(format!("the contact withdrew `{}` on the web channel", m.purpose)),
                message_id: None,
            });
        }
        Ok(match self.inner.store.insert_web_message(&m, self.inner.clock.now_ms()).await? {
            Ok(id) => Queued { queued: true, reason: None, message_id: Some(id) },
            Err(id) => Queued {
                queued: false,
                reason: Some(format!("rule `{}` was already used for this contact (shown once)", m.rule)),
                message_id: Some(id),
            },
        })
    }

    /// The messages to show a contact now. Checked again at this moment: one whose product
    /// the contact bought since, or whose purpose the contact withdrew on the web channel, is
    /// marked `skipped` and not returned.
    pub async fn pending(&self, contact_id: &str) -> Result<Vec<WebMessage>, RunnerError> {
        let now = self.inner.clock.now_ms();
        let mut out = vec![];
        for m in self.inner.store.pending_web_messages(contact_id, now).await? {
            let bought = match (&m.message.product, m.message.unless_purchased) {
                (Some(p), true) => self.bought(contact_id, p).await?,
                _ => false,
            };
            if bought || self.web_withdrawn(contact_id, &m.message.purpose).await? {
                self.inner.store.set_web_message_status(&m.id, Some(contact_id), &[st::PENDING], st::SKIPPED, now).await?;
                continue;
            }
            out.push(m);
        }
        Ok(out)
    }

    /// Records what the visitor did with a message: its status, and a timeline entry
    /// (`web_message_viewed` / `_clicked` / `_dismissed`, once each). `None` when the
    /// message is not this contact's or the action does not apply any more.
    pub async fn record(
        &self,
        contact_id: &str,
        message_id: &str,
        action: MessageAction,
        url: Option<String>,
    ) -> Result<Option<WebMessage>, RunnerError> {
        let now = self.inner.clock.now_ms();
        let (from, to): (&[&str], &str) = match action {
            MessageAction::Viewed => (&[st::PENDING][..], st::SHOWN),
            MessageAction::Clicked => (&[st::PENDING, st::SHOWN][..], st::CLICKED),
            MessageAction::Dismissed => (&[st::PENDING, st::SHOWN][..], st::DISMISSED),
        };
        let Some(m) = self.inner.store.set_web_message_status(message_id, Some(contact_id), from, to, now).await? else { return Ok(None) };
        let mut data = json!({"message_id": m.id, "rule": m.message.rule, "kind": m.message.kind.as_str()});
        if let Some(p) = &m.message.product {
            data["product"] = json!(p);
        }
        if let Some(u) = url.filter(|u| u.len() <= 2048) {
            data["url"] = json!(u);
        }
        let w = WriteContext { op_key: Some(format!("web:{}:{}", m.id, action.kind())), run_id: m.message.run_id.clone() };
        let op = ContactOp::RecordEvent { key: ContactKey::Id(contact_id.to_string()), kind: action.kind().into(), data, at: None };
        crate::contacts::Contacts::new(self.inner.clone()).apply(w, op).await?;
        Ok(Some(m))
    }

    /// Cancels a message not shown yet.
    pub async fn cancel(&self, message_id: &str) -> Result<Option<WebMessage>, RunnerError> {
        Ok(self.inner.store.set_web_message_status(message_id, None, &[st::PENDING], st::CANCELLED, self.inner.clock.now_ms()).await?)
    }
}

impl WebBackend for Web {
    fn queue_message<'a>(&'a self, mut m: NewWebMessage, expires_in_ms: Option<i64>) -> BoxFuture<'a, Result<Queued, ContactsError>> {
        if let Some(ms) = expires_in_ms {
            m.expires_at = Some(self.inner.clock.now_ms() + ms);
        }
        Box::pin(async move { Web::queue_message(self, m).await.map_err(crate::contacts::runner_error) })
    }

    fn form_link<'a>(&'a self, form: String, contact_id: String, ttl_ms: Option<i64>) -> BoxFuture<'a, Result<FormLink, ContactsError>> {
        Box::pin(async move { Web::form_link(self, &form, &contact_id, ttl_ms).await.map_err(crate::contacts::runner_error) })
    }
}
