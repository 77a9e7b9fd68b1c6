//! The web channel's vocabulary (pure, no IO): hosted forms as data ([`FormDef`]: fields,
//! consent checkboxes with their exact wording, what a submission stores), the server-side
//! check of a submission ([`FormDef::accept`]), on-site messages ([`WebMessage`], pop-ups and
//! banners a recipe queues for a contact), and the [`WebBackend`] trait through which the
//! built-in `web` app reaches the store (lent in [`crate::Extensions::web`], like contacts).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::BoxFuture;
use crate::contacts::{check_channel, check_purpose, normalize_email, normalize_tag};

/// How long a signed form link stays valid when the form does not say (`link_ttl`).
pub const DEFAULT_LINK_TTL: &str = "30d";
/// The longest a form link may stay valid.
pub const MAX_LINK_TTL_DAYS: u64 = 365;
/// The longest text a text field takes.
pub const MAX_TEXT: usize = 2000;

/// The kinds of form fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FieldKind {
    /// One line of text (`multiline: true` for a text area).
    Text,
    /// An email address (on a public form, the field named `email` says who the contact is).
    Email,
    /// A phone number, stored in E.164 (`+14155552671`); `country` lets people omit the prefix.
    Phone,
    /// One of `options` (radio buttons).
    Choice,
    /// Any of `options` (checkboxes); stored as a list.
    MultiChoice,
    /// A consent checkbox: ticked, it records consent to `purpose` on `channel`, with `label`
    /// (the exact wording shown) as evidence. Never pre-ticked; unticked records nothing.
    Consent,
}

/// One option of a choice: a value, and the label shown (the value when none).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum FormOption {
    Value(String),
    Labelled { value: String, label: String },
}

impl FormOption {
    pub fn value(&self) -> &str {
        match self {
            FormOption::Value(v) | FormOption::Labelled { value: v, .. } => v,
        }
    }
    pub fn label(&self) -> &str {
        match self {
            FormOption::Value(v) => v,
            FormOption::Labelled { label, .. } => label,
        }
    }
}

/// A field of a form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FormField {
    /// The field's name: the contact field it is stored in (`pets`, `phone`). Lowercase
    /// letters, digits and `_`.
    pub name: String,
    #[serde(rename = "type")]
    pub kind: FieldKind,
    /// The label shown; for a consent checkbox, the exact wording the contact agrees to.
    pub label: String,
    /// A line of help under the label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
    /// Whether an answer is needed (a required consent box must be ticked).
    #[serde(default)]
    pub required: bool,
    /// The choices (`choice`, `multi_choice`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<FormOption>,
    /// `consent`: the purpose agreed to (`marketing` by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    /// `consent`: the channel (`email`, `sms`...; `email` by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// `phone`: the country a number without `+` is read in (ISO code like `US`, `FR`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    /// `text`: a text area rather than one line.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub multiline: bool,
}

/// A hosted form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FormDef {
    /// The form's id, in its address (`/f/<id>`): lowercase letters, digits, `-` and `_`.
    pub id: String,
    /// The page's heading.
    pub title: String,
    /// A paragraph under the heading.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intro: Option<String>,
    pub fields: Vec<FormField>,
    /// The button's label (`Send` by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submit: Option<String>,
    /// What the page says after a submission (`Thank you!` by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thanks: Option<String>,
    /// Tags given to the contact who submits.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// A public form opens without a signed link and finds (or creates) the contact by its
    /// `email` field. A form that is not public answers only to signed links.
    #[serde(default)]
    pub public: bool,
    /// How long its signed links stay valid (`30d` by default, at most 365 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_ttl: Option<String>,
}

/// What a valid submission stores.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Accepted {
    /// The contact fields to set (every field but consent boxes and `email`).
    pub fields: Map<String, Value>,
    /// The `email` field's value, normalised (public forms find the contact by it).
    pub email: Option<String>,
    /// Each ticked consent box: purpose, channel, the wording shown.
    pub consents: Vec<(String, String, String)>,
}

fn slug_ok(s: &str, extra: &[char]) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || extra.contains(&c))
}

/// A phone number in E.164 from what a person typed (`+1 415 555 0123`, or `06 12 34 56 78`
/// with a country); the error says how to write it.
pub fn normalize_phone_input(raw: &str, country: Option<&str>) -> Result<String, String> {
    let s = raw.trim();
    let how = "write it with the country code, like +14155550123";
    let allowed =
        s.chars().enumerate().all(|(i, c)| c.is_ascii_digit() || matches!(c, ' ' | '-' | '(' | ')' | '.') || (i == 0 && c == '+'));
    let digits = s.chars().filter(char::is_ascii_digit).count();
    if !allowed || !(5..=17).contains(&digits) {
        return Err(format!("This is not a phone number: {how}."));
    }
    let region = match (s.starts_with('+'), country) {
        (true, _) => None,
        (false, Some(c)) => {
            Some(c.parse::<phonenumber::country::Id>().map_err(|_| format!("This phone number needs its country code: {how}."))?)
        }
        (false, None) => return Err(format!("This phone number needs its country code: {how}.")),
    };
    match phonenumber::parse(region, s) {
        Ok(n) if phonenumber::is_valid(&n) => Ok(n.format().mode(phonenumber::Mode::E164).to_string()),
        _ => Err(format!("This is not a valid phone number: {how}.")),
    }
}

impl FormDef {
    /// Every problem of the definition, with its path (`fields[2].options`).
    pub fn check(&self) -> Vec<(String, String)> {
        let mut errs = vec![];
        if !slug_ok(&self.id, &['-']) {
            errs.push((
                "id".into(),
                format!(
                    "`{}` is not a form id: use 1 to 64 lowercase letters, digits, `-` and `_`, starting with a letter (like `interests`)",
                    self.id
                ),
            ));
        }
        if self.title.trim().is_empty() {
            errs.push(("title".into(), "give the form a title (the page's heading)".into()));
        }
        if self.fields.is_empty() {
            errs.push(("fields".into(), "a form needs at least one field".into()));
        }
        if let Err(e) = self.ttl_ms() {
            errs.push(("link_ttl".into(), e));
        }
        for (i, t) in self.tags.iter().enumerate() {
            if let Err(e) = normalize_tag(t) {
                errs.push((format!("tags[{i}]"), e));
            }
        }
        let mut names = BTreeMap::new();
        for (i, f) in self.fields.iter().enumerate() {
            let p = format!("fields[{i}]");
            if !slug_ok(&f.name, &[]) {
                errs.push((
                    format!("{p}.name"),
                    format!("`{}` is not a field name: use lowercase letters, digits and `_`, starting with a letter", f.name),
                ));
            }
            if let Some(j) = names.insert(f.name.clone(), i) {
                errs.push((format!("{p}.name"), format!("`{}` is also the name of fields[{j}]", f.name)));
            }
            if f.label.trim().is_empty() {
                errs.push((format!("{p}.label"), "every field needs a label (for a consent box: the exact wording)".into()));
            }
            let choices = matches!(f.kind, FieldKind::Choice | FieldKind::MultiChoice);
            if choices && f.options.is_empty() {
                errs.push((format!("{p}.options"), "a choice needs its options (like `[dogs, cats, birds]`)".into()));
            }
            if !choices && !f.options.is_empty() {
                errs.push((format!("{p}.options"), "only `choice` and `multi_choice` fields take options".into()));
            }
            let mut seen = std::collections::BTreeSet::new();
            for (j, o) in f.options.iter().enumerate() {
                if o.value().trim().is_empty() || !seen.insert(o.value().to_string()) {
                    errs.push((format!("{p}.options[{j}]"), format!("option values must be unique and not empty (`{}`)", o.value())));
                }
            }
            if f.kind == FieldKind::Consent {
                if let Err(e) = check_purpose(f.purpose.as_deref().unwrap_or("marketing")) {
                    errs.push((format!("{p}.purpose"), e));
                }
                if let Err(e) = check_channel(f.channel.as_deref().unwrap_or("email")) {
                    errs.push((format!("{p}.channel"), e));
                }
            } else if f.purpose.is_some() || f.channel.is_some() {
                errs.push((format!("{p}.purpose"), "only `consent` fields take a purpose and a channel".into()));
            }
            if let Some(c) = &f.country
                && (f.kind != FieldKind::Phone || c.parse::<phonenumber::country::Id>().is_err())
            {
                errs.push((format!("{p}.country"), format!("`{c}`: `country` is an ISO country code (like `US`) on a `phone` field")));
            }
            if f.kind == FieldKind::Email && f.name != "email" {
                errs.push((format!("{p}.name"), "an `email` field must be named `email` (it is the contact's address)".into()));
            }
        }
        if self.public && !self.fields.iter().any(|f| f.kind == FieldKind::Email && f.required) {
            errs.push(("fields".into(), "a public form needs a required `email` field (it says who the contact is)".into()));
        }
        errs
    }

    /// How long its links stay valid, in milliseconds.
    pub fn ttl_ms(&self) -> Result<i64, String> {
        let d = crate::duration::parse_duration(self.link_ttl.as_deref().unwrap_or(DEFAULT_LINK_TTL))?;
        if d.as_secs() > MAX_LINK_TTL_DAYS * 86_400 || d.as_secs() < 60 {
            return Err(format!("links stay valid between 1m and {MAX_LINK_TTL_DAYS}d"));
        }
        Ok(d.as_millis() as i64)
    }

    /// Checks a submission (each field's values as posted, several for a multi-choice):
    /// what to store, or a message per field saying what to fix.
    pub fn accept(&self, values: &BTreeMap<String, Vec<String>>) -> Result<Accepted, BTreeMap<String, String>> {
        let mut out = Accepted::default();
        let mut errs = BTreeMap::new();
        for f in &self.fields {
            let given: Vec<&str> =
                values.get(&f.name).map(|v| v.iter().map(|s| s.trim()).filter(|s| !s.is_empty()).collect()).unwrap_or_default();
            let first = given.first().copied();
            let missing = || match f.kind {
                FieldKind::Consent => "Tick this box to go on.".to_string(),
                FieldKind::Choice => "Choose one.".to_string(),
                FieldKind::MultiChoice => "Choose at least one.".to_string(),
                _ => "This is required.".to_string(),
            };
            if given.is_empty() {
                if f.required {
                    errs.insert(f.name.clone(), missing());
                }
                continue;
            }
            match f.kind {
                FieldKind::Text => {
                    let v = given.join(" ");
                    if v.chars().count() > MAX_TEXT {
                        errs.insert(f.name.clone(), format!("Keep this under {MAX_TEXT} characters."));
                    } else {
                        out.fields.insert(f.name.clone(), Value::String(v));
                    }
                }
                FieldKind::Email => match normalize_email(first.unwrap_or_default()) {
                    Ok(e) => out.email = Some(e),
                    Err(_) => {
                        errs.insert(f.name.clone(), "This is not an email address: write it like name@example.com.".into());
                    }
                },
                FieldKind::Phone => match normalize_phone_input(first.unwrap_or_default(), f.country.as_deref()) {
                    Ok(p) => {
                        out.fields.insert(f.name.clone(), Value::String(p));
                    }
                    Err(e) => {
                        errs.insert(f.name.clone(), e);
                    }
                },
                FieldKind::Choice | FieldKind::MultiChoice => {
                    let known: Vec<&str> = f.options.iter().map(FormOption::value).collect();
                    if let Some(bad) = given.iter().find(|v| !known.contains(v)) {
                        errs.insert(f.name.clone(), format!("`{bad}` is not one of the choices."));
                    } else if f.kind == FieldKind::Choice {
                        if given.len() > 1 {
                            errs.insert(f.name.clone(), "Choose only one.".into());
                        } else {
                            out.fields.insert(f.name.clone(), Value::String(given[0].to_string()));
                        }
                    } else {
                        // In the form's order, each once.
                        let chosen: Vec<Value> = known.iter().filter(|k| given.contains(k)).map(|k| Value::String(k.to_string())).collect();
                        out.fields.insert(f.name.clone(), Value::Array(chosen));
                    }
                }
                FieldKind::Consent => {
                    out.consents.push((
                        f.purpose.clone().unwrap_or_else(|| "marketing".into()),
                        f.channel.clone().unwrap_or_else(|| "email".into()),
                        f.label.clone(),
                    ));
                }
            }
        }
        if errs.is_empty() { Ok(out) } else { Err(errs) }
    }
}

/// How an on-site message shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    /// A box in the corner of the page, with a close button; the page stays usable.
    #[default]
    Popup,
    /// A bar across the top of the page.
    Banner,
}

impl MessageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::Popup => "popup",
            MessageKind::Banner => "banner",
        }
    }
    pub fn parse(s: &str) -> Option<MessageKind> {
        match s {
            "popup" => Some(MessageKind::Popup),
            "banner" => Some(MessageKind::Banner),
            _ => None,
        }
    }
}

/// What a recipe queues for a contact (`web.show_message`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct NewWebMessage {
    pub contact_id: String,
    /// Shown once per contact per rule: a second message with the same rule is not queued.
    pub rule: String,
    pub kind: MessageKind,
    /// The heading (plain text).
    pub title: String,
    /// The text (plain text; line breaks kept).
    pub body: String,
    /// The button's label, when there is a button.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cta_label: Option<String>,
    /// Where the button leads (http or https).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cta_url: Option<String>,
    /// The product it is about: with `unless_purchased`, never shown once the contact's
    /// timeline has a `purchase` of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
    #[serde(default)]
    pub unless_purchased: bool,
    /// The consent purpose it serves (`marketing`): not shown when the contact withdrew it
    /// on the `web` channel.
    pub purpose: String,
    /// Not shown after this time (Unix milliseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    /// The run that queued it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
}

/// A queued on-site message and what became of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct WebMessage {
    pub id: String,
    #[serde(flatten)]
    pub message: NewWebMessage,
    /// `pending` (not shown yet), `shown`, `clicked`, `dismissed`, `skipped` (the product was
    /// bought, or the consent withdrawn, before it showed), `cancelled`.
    pub status: String,
    pub created_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shown_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_at: Option<i64>,
}

/// Whether a `purchase` timeline entry's data names this product: its `product_id` or `sku`,
/// or an item's (`items: [{sku}]` or `{product_id}`).
pub fn purchase_names(data: &Value, product: &str) -> bool {
    let hit = |v: &Value| {
        ["product_id", "sku", "product"].iter().any(|k| v.get(*k).and_then(Value::as_str).is_some_and(|p| p.eq_ignore_ascii_case(product)))
    };
    hit(data) || data.get("items").and_then(Value::as_array).is_some_and(|items| items.iter().any(hit))
}

/// What queuing a message did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Queued {
    /// Whether it was queued now (false: see `reason`).
    pub queued: bool,
    /// Why not, in words (`already queued for this rule`, `already bought dog-food`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The message (the one queued before, when the rule had one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
}

/// A signed link to a form for a contact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FormLink {
    /// The form's id.
    pub form: String,
    /// The signed link (`<public_url>/f/<form>?t=<token>`): put it in the email or SMS.
    pub url: String,
    /// When the link stops working (RFC 3339).
    pub expires_at: String,
}

/// The web channel as the `web` app's actions see it (the runner implements it over the store).
pub trait WebBackend: Send + Sync {
    /// Queues an on-site message, unless the rule was used for this contact or the contact
    /// bought the product (see [`NewWebMessage`]); `expires_in_ms` after now (the runner's
    /// clock), it is not shown any more.
    fn queue_message<'a>(
        &'a self,
        m: NewWebMessage,
        expires_in_ms: Option<i64>,
    ) -> BoxFuture<'a, Result<Queued, crate::contacts::ContactsError>>;
    /// A signed link to a form for a contact, valid for the form's `link_ttl` (or `ttl_ms`).
    fn form_link<'a>(
        &'a self,
        form: String,
        contact_id: String,
        ttl_ms: Option<i64>,
    ) -> BoxFuture<'a, Result<FormLink, crate::contacts::ContactsError>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interests() -> FormDef {
        serde_json::from_value(serde_json::json!({
            "id": "interests", "title": "Your pets",
            "fields": [
                {"name": "pets", "type": "multi_choice", "label": "Pets", "options": ["dogs", "cats", "birds"], "required": true},
                {"name": "phone", "type": "phone", "label": "Mobile"},
                {"name": "sms_ok", "type": "consent", "label": "Text me reminders.", "channel": "sms"}
            ]
        }))
        .unwrap()
    }

    fn vals(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<String>> {
        let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (k, v) in pairs {
            m.entry(k.to_string()).or_default().push(v.to_string());
        }
        m
    }

    #[test]
    fn submissions_are_checked_field_by_field() {
        let f = interests();
        assert!(f.check().is_empty(), "{:?}", f.check());
        let e = f.accept(&vals(&[("phone", "555")])).unwrap_err();
        assert_eq!(e["pets"], "Choose at least one.");
        assert!(e["phone"].contains("country code"), "{e:?}");
        let e = f.accept(&vals(&[("pets", "fish")])).unwrap_err();
        assert!(e["pets"].contains("`fish`"));
        let ok = f.accept(&vals(&[("pets", "cats"), ("pets", "dogs"), ("phone", "+1 (415) 555-0123"), ("sms_ok", "yes")])).unwrap();
        assert_eq!(ok.fields["pets"], serde_json::json!(["dogs", "cats"]));
        assert_eq!(ok.fields["phone"], "+14155550123");
        assert_eq!(ok.consents, vec![("marketing".into(), "sms".into(), "Text me reminders.".into())]);
        assert_eq!(normalize_phone_input("06 12 34 56 78", Some("FR")).unwrap(), "+33612345678");
    }

    #[test]
    fn definitions_name_every_problem() {
        let mut f = interests();
        f.id = "Bad Id".into();
        f.fields[0].options.clear();
        f.fields[2].channel = Some("fax".into());
        f.public = true;
        let paths: Vec<String> = f.check().into_iter().map(|(p, _)| p).collect();
        assert_eq!(paths, ["id", "fields[0].options", "fields[2].channel", "fields"]);
    }

    #[test]
    fn purchases_name_products() {
        let d = serde_json::json!({"order_id": "A", "items": [{"sku": "DOG-FOOD", "qty": 1}]});
        assert!(purchase_names(&d, "dog-food"));
        assert!(!purchase_names(&d, "cat-food"));
        assert!(purchase_names(&serde_json::json!({"product_id": "x"}), "x"));
    }
}
