//! The `web` app: Enlace's web channel as recipe steps, with no outside app.
//!
//! `show_message` queues a pop-up or a banner for a contact, shown by `/track.js` on the
//! contact's next page view after the site's consent call, once per contact and rule, never
//! for a product the contact bought when the step says so. `form_link` makes a signed,
//! expiring link to a hosted form for a contact, to put in an email or an SMS. The actions
//! reach Enlace's store through the [`WebBackend`] the runner lends each call in
//! `ActionContext::extensions` (no HTTP: `HTTP_ONLY` is false; a simulation runs them on its
//! own store). What the app does for end users is in this folder's README.md.

use std::sync::Arc;

use enlace_core::contacts::ContactsError;
use enlace_core::duration::parse_duration;
use enlace_core::web::{FormLink, MessageKind, NewWebMessage, Queued, WebBackend};
use enlace_core::{Action, ActionContext, Connector, ConnectorError, Idempotency};
use schemars::JsonSchema;
use serde::Deserialize;

#[cfg(test)]
mod tests;

/// The app id recipes use (`app: web`).
pub const APP_ID: &str = "web";

/// The `web` connector.
pub fn connector() -> Connector {
    Connector::builder(
        APP_ID,
        "Web",
        "Enlace's web channel: pop-ups and banners on your site for a known contact (shown by /track.js after consent), and signed links to hosted forms.",
    )
    .version("1")
    .action(ShowMessage)
    .action(FormLinkAction)
    .build()
}

fn backend(ctx: &ActionContext) -> Result<&Arc<dyn WebBackend>, ConnectorError> {
    ctx.extensions
        .web
        .as_ref()
        .ok_or_else(|| ConnectorError::permanent("the web channel is not available to this call (only the runner provides it)"))
}

fn classify(e: ContactsError, field: &str) -> ConnectorError {
    match e {
        ContactsError::NotFound(m) => ConnectorError::bad_input(field, m),
        ContactsError::Invalid(m) => ConnectorError::bad_input(field, m),
        ContactsError::Unavailable(m) => ConnectorError::transient(m),
    }
}

fn required(field: &str, v: &str) -> Result<String, ConnectorError> {
    let t = v.trim();
    if t.is_empty() { Err(ConnectorError::bad_input(field, format!("`{field}` is empty"))) } else { Ok(t.to_string()) }
}

// ---- show_message ----

/// The `with` map of `web.show_message`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShowInput {
    /// The contact to show it to (`{{contact.id}}` in a journey).
    pub contact_id: String,
    /// The rule's name: a contact sees a rule once, ever (a second step with the same rule
    /// queues nothing). Include the product for one offer per product (`discount-{{product}}`).
    pub rule: String,
    /// `popup` (a box in a corner, with a close button) or `banner` (a bar across the top).
    #[serde(default)]
    pub kind: MessageKind,
    /// The heading (plain text; templates welcome).
    pub title: String,
    /// The text (plain text; line breaks kept).
    pub body: String,
    /// The button's label; with `button_url`.
    #[serde(default)]
    pub button_label: Option<String>,
    /// Where the button leads (http or https).
    #[serde(default)]
    pub button_url: Option<String>,
    /// The product the message is about (its id or SKU, as purchases name it).
    #[serde(default)]
    pub product: Option<String>,
    /// With `product`: never show it to a contact whose timeline has a `purchase` of the
    /// product (checked when queued and again when shown).
    #[serde(default)]
    pub unless_purchased: bool,
    /// The consent purpose (`marketing` by default): a contact who withdrew it on the `web`
    /// channel is shown nothing.
    #[serde(default)]
    pub purpose: Option<String>,
    /// Not shown after this long (`7d`); kept until shown when empty.
    #[serde(default)]
    pub expires_in: Option<String>,
}

/// `web.show_message`.
pub struct ShowMessage;

impl Action for ShowMessage {
    type Input = ShowInput;
    type Output = Queued;
    const ID: &'static str = "show_message";
    const NAME: &'static str = "Show a pop-up or banner on the site";
    const DESCRIPTION: &'static str = "Queues an on-site message for a contact: /track.js shows it on the contact's next page view after the visitor's consent, once per contact and rule, never for a product already bought when asked.";
    // One row per contact and rule: a retried step queues nothing twice.
    const IDEMPOTENCY: Idempotency = Idempotency::Natural;
    const HTTP_ONLY: bool = false;

    fn sample() -> Queued {
        Queued { queued: true, reason: None, message_id: Some("0193a1f2-9b20-7c4d-9e5f-2b3c4d5e6f80".into()) }
    }

    async fn call(&self, ctx: &ActionContext, i: ShowInput) -> Result<Queued, ConnectorError> {
        let contact_id = required("contact_id", &i.contact_id)?;
        let rule = required("rule", &i.rule)?;
        if rule.chars().count() > 200 {
            return Err(ConnectorError::bad_input("rule", "a rule name is at most 200 characters"));
        }
        let title = required("title", &i.title)?;
        let body = required("body", &i.body)?;
        let label = i.button_label.map(|l| l.trim().to_string()).filter(|l| !l.is_empty());
        let url = i.button_url.map(|l| l.trim().to_string()).filter(|l| !l.is_empty());
        if label.is_some() != url.is_some() {
            return Err(ConnectorError::bad_input("button_url", "give both `button_label` and `button_url`, or neither"));
        }
        if let Some(u) = &url
            && !(u.starts_with("https://") || u.starts_with("http://"))
        {
            return Err(ConnectorError::bad_input("button_url", format!("`{u}` is not an http(s) address")));
        }
        let product = i.product.map(|p| p.trim().to_string()).filter(|p| !p.is_empty());
        if i.unless_purchased && product.is_none() {
            return Err(ConnectorError::bad_input("product", "`unless_purchased` needs the `product` to look for in purchases"));
        }
        let purpose = i.purpose.map(|p| p.trim().to_string()).filter(|p| !p.is_empty()).unwrap_or_else(|| "marketing".into());
        enlace_core::contacts::check_purpose(&purpose).map_err(|m| ConnectorError::bad_input("purpose", m))?;
        let expires_in = match i.expires_in.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            Some(d) => Some(parse_duration(d).map_err(|m| ConnectorError::bad_input("expires_in", m))?.as_millis() as i64),
            None => None,
        };
        let m = NewWebMessage {
            contact_id,
            rule,
            kind: i.kind,
            title,
            body,
            cta_label: label,
            cta_url: url,
            product,
            unless_purchased: i.unless_purchased,
            purpose,
            expires_at: None,
            run_id: Some(ctx.run_id.clone()),
        };
        backend(ctx)?.queue_message(m, expires_in).await.map_err(|e| classify(e, "contact_id"))
    }
}

// ---- form_link ----

/// The `with` map of `web.form_link`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkInput {
    /// The form's id (`interests`; see `enlace forms list`).
    pub form: String,
    /// The contact the link is for: the form opens prefilled with its fields and stores the
    /// answers on it.
    pub contact_id: String,
    /// How long the link works (`14d`); the form's `link_ttl` (30 days by default) when empty.
    #[serde(default)]
    pub valid_for: Option<String>,
}

/// `web.form_link`.
pub struct FormLinkAction;

impl Action for FormLinkAction {
    type Input = LinkInput;
    type Output = FormLink;
    const ID: &'static str = "form_link";
    const NAME: &'static str = "Make a signed link to a form";
    const DESCRIPTION: &'static str =
        "A link to a hosted form for one contact, signed and expiring, to put in an email or SMS: `{{steps.<id>.url}}`.";
    const IDEMPOTENCY: Idempotency = Idempotency::Natural;
    const HTTP_ONLY: bool = false;

    fn sample() -> FormLink {
        FormLink {
            form: "interests".into(),
            url: "https://enlace.example.com/f/interests?t=aW50ZXJlc3RzCjAxOTNhMWYyCjE3NjY3MTA4MDAwMDA.c2lnbmF0dXJl".into(),
            expires_at: "2025-12-26T00:00:00Z".into(),
        }
    }

    async fn call(&self, ctx: &ActionContext, i: LinkInput) -> Result<FormLink, ConnectorError> {
        let form = required("form", &i.form)?;
        let contact_id = required("contact_id", &i.contact_id)?;
        let ttl = match i.valid_for.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            Some(d) => {
                let d = parse_duration(d).map_err(|m| ConnectorError::bad_input("valid_for", m))?;
                if d.as_secs() < 60 || d.as_secs() > enlace_core::web::MAX_LINK_TTL_DAYS * 86_400 {
                    return Err(ConnectorError::bad_input("valid_for", "a link stays valid between 1m and 365d"));
                }
                Some(d.as_millis() as i64)
            }
            None => None,
        };
        let b = backend(ctx)?;
        b.form_link(form, contact_id, ttl).await.map_err(|e| match &e {
            ContactsError::NotFound(m) if m.contains("form") => classify(e, "form"),
            _ => classify(e, "contact_id"),
        })
    }
}
