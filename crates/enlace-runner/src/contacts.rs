//! The contact store as the `contacts` app's actions and the API see it: the runner's
//! implementation of [`ContactsBackend`] over `enlace-store`.
//!
//! A change is handed to the store with the enabled recipes whose `contacts.*` trigger may
//! match it (from the catalog, like `emit` finds the recipes of an event); the store writes
//! the change, its timeline row, and the event and queued run of every recipe it matches in
//! one transaction, with a dedupe key made from the step's idempotency key, so a retried step
//! starts nothing twice. The poller is woken when runs were started.

use std::sync::Arc;

use enlace_core::BoxFuture;
use enlace_core::contacts::{
    ContactDetail, ContactKey, ContactOp, ContactOutcome, ContactsBackend, ContactsError, NewConsent, PhoneConsentOutcome, PhoneDecision,
    WriteContext,
};
use enlace_store::{ContactApplied, ContactWrite, StoreError};

use crate::{Inner, RunnerError};

/// The runner's contact service. Cheap to clone.
#[derive(Clone)]
pub struct Contacts {
    inner: Arc<Inner>,
}

impl Contacts {
    pub(crate) fn new(inner: Arc<Inner>) -> Contacts {
        Contacts { inner }
    }

    fn write(&self, ctx: WriteContext) -> ContactWrite {
        let catalog = &self.inner.catalog;
        ContactWrite { ctx, subs: catalog.contact_subs(), now: self.inner.clock.now_ms(), events: catalog.event_subs() }
    }

    /// Applies a change and starts the recipes it triggers; returns the change and the runs.
    pub async fn apply(&self, ctx: WriteContext, op: ContactOp) -> Result<ContactApplied, RunnerError> {
        let w = self.write(ctx);
        let applied = self.inner.store.apply_contact(op, w).await?;
        if !applied.started.is_empty() {
            let labels = vec![("source", "contacts".to_string())];
            self.inner.metrics.events_accepted.get_or_create(&labels).inc_by(applied.started.len() as u64);
        }
        // Runs started, or journeys waiting for this contact's event made due.
        if !applied.started.is_empty() || applied.woken > 0 {
            self.inner.wake.notify_one();
        }
        Ok(applied)
    }

    /// Records a decision a phone number sent itself (an SMS reply STOP or START) on its
    /// contacts and in the suppression list, starting the recipes it triggers.
    pub async fn apply_phone(&self, ctx: WriteContext, phone: &str, consent: NewConsent) -> Result<PhoneConsentOutcome, RunnerError> {
        let w = self.write(ctx);
        let (outcome, started) = self.inner.store.apply_phone_consent(phone, consent, w).await?;
        if !started.is_empty() {
            let labels = vec![("source", "contacts".to_string())];
            self.inner.metrics.events_accepted.get_or_create(&labels).inc_by(started.len() as u64);
            self.inner.wake.notify_one();
        }
        Ok(outcome)
    }
}

pub(crate) fn runner_error(e: RunnerError) -> ContactsError {
    match e {
        RunnerError::Store(e) => contacts_error(e),
        RunnerError::NotFound(m) => ContactsError::NotFound(m),
        RunnerError::Invalid(m) | RunnerError::Conflict(m) => ContactsError::Invalid(m),
    }
}

fn contacts_error(e: StoreError) -> ContactsError {
    match e {
        StoreError::NotFound(m) => ContactsError::NotFound(m),
        StoreError::Invalid(m) | StoreError::Conflict(m) => ContactsError::Invalid(m),
        other => ContactsError::Unavailable(format!("the contact store failed: {other}")),
    }
}

impl ContactsBackend for Contacts {
    fn apply<'a>(&'a self, w: WriteContext, op: ContactOp) -> BoxFuture<'a, Result<ContactOutcome, ContactsError>> {
        Box::pin(async move {
            match Contacts::apply(self, w, op).await {
                Ok(a) => Ok(a.outcome),
                Err(RunnerError::Store(e)) => Err(contacts_error(e)),
                Err(RunnerError::NotFound(m)) => Err(ContactsError::NotFound(m)),
                Err(RunnerError::Invalid(m) | RunnerError::Conflict(m)) => Err(ContactsError::Invalid(m)),
            }
        })
    }

    fn find<'a>(&'a self, key: ContactKey) -> BoxFuture<'a, Result<Option<ContactDetail>, ContactsError>> {
        Box::pin(async move { self.inner.store.contact_detail(key).await.map_err(contacts_error) })
    }

    fn record_phone_consent<'a>(
        &'a self,
        w: WriteContext,
        phone: String,
        consent: NewConsent,
    ) -> BoxFuture<'a, Result<PhoneConsentOutcome, ContactsError>> {
        Box::pin(async move { self.apply_phone(w, &phone, consent).await.map_err(runner_error) })
    }

    fn phone_consent<'a>(
        &'a self,
        phone: String,
        purpose: String,
        channel: String,
    ) -> BoxFuture<'a, Result<Option<PhoneDecision>, ContactsError>> {
        Box::pin(async move { self.inner.store.phone_consent(&phone, &purpose, &channel).await.map_err(contacts_error) })
    }
}
