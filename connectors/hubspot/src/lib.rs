//! The `hubspot` app: CRM contacts in HubSpot.
//!
//! Actions over the CRM v3 contacts API (`https://api.hubapi.com/crm/v3/objects/contacts`):
//! [`contacts::UpsertContact`] (`hubspot.upsert_contact`, one contact by email, the simple
//! path), [`contacts::UpsertContacts`] (batch upsert by email), [`contacts::CreateContacts`]
//! (batch create) and [`contacts::UpdateContacts`] (batch update by id), each at most 100
//! contacts per step; [`search::SearchContacts`] (`hubspot.search_contacts`: filters, paging
//! with `after` in the body). One polling trigger, [`trigger::ContactUpdated`]
//! (`hubspot.contact_updated`, "New or updated contact"), and a connection test that reads one
//! contact. A private app's access token and an OAuth2 access token are both sent as
//! `Authorization: Bearer`. HubSpot's errors (`{status, message, correlationId, category,
//! errors[{message, context: {propertyName}}]}`) are classified in [`api`]: a property that
//! does not exist is bad input on that property's field. What the app does for end users is in
//! this folder's README.md.

pub mod api;
pub mod contacts;
pub mod search;
pub mod trigger;

use std::sync::Arc;
use std::time::Duration;

use enlace_core::{ClientAuth, Connector, OAuth2App, RateLimit};

/// The app id recipes use (`app: hubspot`).
pub const APP_ID: &str = "hubspot";

/// HubSpot's API.
pub const API_BASE: &str = "https://api.hubapi.com";

/// The `hubspot` connector, talking to HubSpot.
pub fn connector() -> Connector {
    connector_at(API_BASE)
}

/// The `hubspot` connector with another API base address, for tests only: they point it at a
/// local server answering like HubSpot. The installation always uses [`connector`].
pub fn connector_at(api_base: &str) -> Connector {
    build(api_base, Arc::new(trigger::system_clock))
}

/// The connector with the clock its trigger reads (milliseconds since the epoch).
pub(crate) fn build(api_base: &str, clock: trigger::Clock) -> Connector {
    Connector::builder(
        APP_ID,
        "HubSpot",
        "Create, update, upsert and search CRM contacts in HubSpot, and start recipes when a contact is created or updated.",
    )
    // HubSpot's OAuth (developers.hubspot.com, "OAuth quickstart"): the token endpoint takes
    // the client id and secret in the form body. A private app's token is a bearer token
    // instead (no sign-in).
    .oauth2(OAuth2App {
        authorize_url: "https://app.hubspot.com/oauth/authorize".into(),
        token_url: "https://api.hubapi.com/oauth/v1/token".into(),
        scopes: vec!["crm.objects.contacts.read".into(), "crm.objects.contacts.write".into()],
        authorize_params: Default::default(),
        client_auth: ClientAuth::Body,
    })
    // HubSpot's API usage guidelines (developers.hubspot.com, "API usage guidelines and
    // limits"): private apps on Free and Starter accounts get 100 requests per 10 seconds
    // (Professional and Enterprise 190, the daily quota aside); OAuth apps get 100 per 10 s per
    // account. 100 per 10 s is the limit every account has; a connection may set more. The
    // search endpoints have their own, lower limit (5 requests per second per account), which
    // the search action and the trigger respect by reading few pages per call.
    .rate_limit(RateLimit { calls: 100, per: Duration::from_secs(10) })
    .connection_test(api::ReadOneContact::new(api_base))
    .action(contacts::UpsertContact::new(api_base))
    .action(contacts::UpsertContacts::new(api_base))
    .action(contacts::CreateContacts::new(api_base))
    .action(contacts::UpdateContacts::new(api_base))
    .action(search::SearchContacts::new(api_base))
    .polling_trigger(trigger::ContactUpdated::new(api_base, clock))
    .build()
}

#[cfg(test)]
mod tests;
