//! Hosted forms: `GET /f/{form}` shows a form, `POST /f/{form}` takes its answers.
//!
//! No API token. A form that is not public opens only through a signed link
//! (`/f/<form>?t=<token>`, made by `web.form_link` or `enlace forms link`): the token names the
//! form, the contact and an expiry under the installation's signature, so nobody can guess
//! a link or point one at another contact, and an old link stops working. The page opens
//! prefilled with the contact's fields (consent boxes are never pre-ticked). A public form
//! opens without a token and finds or creates the contact by its `email` field.
//!
//! Answers are checked on the server ([`enlace_core::web::FormDef::accept`]): on a problem
//! the page comes back (422) with every answer kept, a summary linking to each field in
//! error, and each field's message tied to it with `aria-describedby`. Valid answers go onto
//! the contact through the contacts service (`enlace_runner::web::Web::submit`): fields, the
//! form's tags, each ticked consent with its exact wording, IP and user agent as evidence,
//! then `form_submitted` on the timeline. Spam: a honeypot field people do not see (filled:
//! the visitor is thanked and nothing is stored), and at most [`FORM_POSTS_PER_MINUTE`]
//! submissions a minute per IP address (429 beyond). A hidden id per rendered page makes a
//! double submission of one page store once.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use enlace_core::contacts::ContactKey;
use enlace_core::web::{FieldKind, FormDef};
use enlace_runner::links::{LinkRefused, read_form_token};
use enlace_runner::web::SubmissionContext;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::Deserialize;
use serde_json::Value;

use crate::AppState;
use crate::public_page::{PeerIp, escape, form_values, notice, page, user_agent};

/// Submissions a minute one IP address may make (all forms together).
pub const FORM_POSTS_PER_MINUTE: u32 = 10;
/// The largest submission read.
pub const MAX_FORM_BYTES: usize = 32 * 1024;
/// The honeypot field's name: hidden from people, filled by form-filling robots.
pub const HONEYPOT: &str = "website";

pub fn routes() -> axum::Router<AppState> {
    axum::Router::new().route("/f/{form}", get(show).post(submit)).layer(DefaultBodyLimit::max(MAX_FORM_BYTES))
}

pub(crate) fn limiter() -> Arc<DefaultKeyedRateLimiter<String>> {
    let n = NonZeroU32::new(FORM_POSTS_PER_MINUTE).expect("non-zero");
    Arc::new(RateLimiter::keyed(Quota::per_minute(n).allow_burst(n)))
}

#[derive(Debug, Deserialize)]
struct LinkQuery {
    #[serde(default)]
    t: Option<String>,
}

/// Whom a page is for: a contact bound by a signed link, or nobody yet (a public form).
enum Bound {
    Contact { id: String, token: String },
    Public,
}

fn refused_link() -> Response {
    notice(
        StatusCode::BAD_REQUEST,
        "This link is not valid",
        "<p>The link is damaged or incomplete: it may have been cut when it was copied. Open it again from the message you received, or ask us for a new one.</p>",
    )
}

fn expired_link() -> Response {
    notice(
        StatusCode::GONE,
        "This link has expired",
        "<p>Links to our forms work for a limited time, and this one is past it. Ask us for a new link, or use the link in a more recent message.</p>",
    )
}

fn unavailable() -> Response {
    notice(
        StatusCode::SERVICE_UNAVAILABLE,
        "Please try again",
        "<p>We could not open this form just now; please try again in a moment.</p>",
    )
}

fn no_form() -> Response {
    notice(
        StatusCode::NOT_FOUND,
        "Form not found",
        "<p>There is no such form here. Check the address, or open the link from your message again.</p>",
    )
}

/// The form and whom it is for, or the page saying why not.
async fn resolve(
    s: &AppState,
    form_id: &str,
    token: Option<&str>,
) -> Result<(FormDef, Bound, Option<enlace_core::contacts::Contact>), Response> {
    let form = match s.runner.web().form(form_id).await {
        Ok(Some(f)) => f.form,
        Ok(None) => return Err(no_form()),
        Err(e) => {
            tracing::error!(error = %e, form = form_id, "reading a form failed");
            return Err(unavailable());
        }
    };
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        if form.public {
            return Ok((form, Bound::Public, None));
        }
        return Err(notice(
            StatusCode::FORBIDDEN,
            "Open this form from your message",
            "<p>This form is personal: open it with the link in the email or text message we sent you.</p>",
        ));
    };
    let t = match read_form_token(s.runner.store(), token, s.runner.now_ms()) {
        Ok(t) if t.form == form.id => t,
        Ok(_) | Err(LinkRefused::Invalid) => return Err(refused_link()),
        Err(LinkRefused::Expired { .. }) => return Err(expired_link()),
    };
    match s.runner.store().contact(ContactKey::Id(t.contact_id.clone())).await {
        Ok(Some(c)) => Ok((form, Bound::Contact { id: t.contact_id, token: token.to_string() }, Some(c))),
        Ok(None) => {
            Err(notice(StatusCode::GONE, "This link no longer works", "<p>The details this link was for are no longer stored with us.</p>"))
        }
        Err(e) => {
            tracing::error!(error = %e, "reading a form's contact failed");
            Err(unavailable())
        }
    }
}

/// The contact's current answers, as the form shows them.
fn prefill(form: &FormDef, c: &enlace_core::contacts::Contact) -> BTreeMap<String, Vec<String>> {
    let mut m = BTreeMap::new();
    for f in &form.fields {
        let vals: Vec<String> = match f.kind {
            FieldKind::Consent => vec![],
            FieldKind::Email => vec![c.email.clone()],
            _ => match c.fields.get(&f.name) {
                Some(Value::String(v)) => vec![v.clone()],
                Some(Value::Array(a)) => a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
                Some(Value::Number(n)) => vec![n.to_string()],
                _ => vec![],
            },
        };
        if !vals.is_empty() {
            m.insert(f.name.clone(), vals);
        }
    }
    m
}

async fn show(State(s): State<AppState>, Path(form_id): Path<String>, Query(q): Query<LinkQuery>) -> Response {
    let (form, bound, contact) = match resolve(&s, &form_id, q.t.as_deref()).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let values = contact.as_ref().map(|c| prefill(&form, c)).unwrap_or_default();
    let nonce = uuid::Uuid::now_v7().simple().to_string();
    render(&form, &bound, &values, &BTreeMap::new(), &nonce, StatusCode::OK)
}

async fn submit(State(s): State<AppState>, Path(form_id): Path<String>, PeerIp(ip): PeerIp, headers: HeaderMap, body: Bytes) -> Response {
    if s.shared.form_limit.check_key(&ip.clone().unwrap_or_default()).is_err() {
        let mut r = notice(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many submissions",
            "<p>We received many submissions from your connection in the last minute. Please wait a minute, then go back and send the form again.</p>",
        );
        r.headers_mut().insert(axum::http::header::RETRY_AFTER, "60".parse().expect("static header"));
        return r;
    }
    let values = form_values(&body);
    let token = values.get("_t").and_then(|v| v.first()).cloned();
    let (form, bound, _) = match resolve(&s, &form_id, token.as_deref()).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let thanks = || {
        let text = form.thanks.clone().unwrap_or_else(|| "Thank you! Your answers are saved.".into());
        notice(StatusCode::OK, &form.title, &format!("<p class=\"ok\" role=\"status\">{}</p>", escape(&text)))
    };
    if values.get(HONEYPOT).is_some_and(|v| v.iter().any(|x| !x.trim().is_empty())) {
        tracing::info!(form = %form.id, "a form submission filled the honeypot: dropped");
        return thanks();
    }
    let nonce = values
        .get("_s")
        .and_then(|v| v.first())
        .filter(|n| !n.is_empty() && n.len() <= 64 && n.bytes().all(|b| b.is_ascii_alphanumeric()))
        .cloned()
        .unwrap_or_else(|| uuid::Uuid::now_v7().simple().to_string());
    let accepted = match form.accept(&values) {
        Ok(a) => a,
        Err(errors) => return render(&form, &bound, &values, &errors, &nonce, StatusCode::UNPROCESSABLE_ENTITY),
    };
    let base = s.shared.config.public_url.clone().or_else(|| s.runner.public_url()).unwrap_or_default();
    let cx = SubmissionContext {
        url: format!("{}/f/{}", base.trim_end_matches('/'), form.id),
        ip,
        user_agent: user_agent(&headers),
        submission_id: nonce.clone(),
    };
    let contact_id = match &bound {
        Bound::Contact { id, .. } => Some(id.as_str()),
        Bound::Public => None,
    };
    match s.runner.web().submit(&form, contact_id, accepted, &cx).await {
        Ok(_) => thanks(),
        Err(enlace_runner::RunnerError::Invalid(m)) => {
            // The contact store refused a value the form's own check let through.
            let mut errors = BTreeMap::new();
            errors.insert(form.fields.first().map(|f| f.name.clone()).unwrap_or_default(), m);
            render(&form, &bound, &values, &errors, &nonce, StatusCode::UNPROCESSABLE_ENTITY)
        }
        Err(e) => {
            tracing::error!(error = %e, form = %form.id, "storing a form submission failed");
            unavailable()
        }
    }
}

fn field_html(f: &enlace_core::web::FormField, vals: &[String], err: Option<&String>) -> String {
    let id = format!("f-{}", f.name);
    let name = escape(&f.name);
    let mut described = vec![];
    let mut head = String::new();
    if let Some(h) = &f.help {
        head.push_str(&format!("<p class=\"help\" id=\"h-{name}\">{}</p>", escape(h)));
        described.push(format!("h-{name}"));
    }
    if let Some(e) = err {
        head.push_str(&format!("<p class=\"err\" id=\"e-{name}\">{}</p>", escape(e)));
        described.push(format!("e-{name}"));
    }
    let aria = format!(
        "{}{}{}",
        if described.is_empty() { String::new() } else { format!(" aria-describedby=\"{}\"", described.join(" ")) },
        if err.is_some() { " aria-invalid=\"true\"" } else { "" },
        if f.required { " aria-required=\"true\"" } else { "" }
    );
    let req = if f.required { " <span aria-hidden=\"true\">*</span>" } else { "" };
    let first = vals.first().map(String::as_str).unwrap_or("");
    match f.kind {
        FieldKind::Text | FieldKind::Email | FieldKind::Phone => {
            let (ty, extra) = match f.kind {
                FieldKind::Email => ("email", " autocomplete=\"email\""),
                FieldKind::Phone => ("tel", " autocomplete=\"tel\" inputmode=\"tel\""),
                _ => ("text", ""),
            };
            let input = if f.kind == FieldKind::Text && f.multiline {
                format!("<textarea id=\"{id}\" name=\"{name}\" rows=\"4\"{aria}>{}</textarea>", escape(first))
            } else {
                format!("<input id=\"{id}\" name=\"{name}\" type=\"{ty}\" value=\"{}\"{extra}{aria}>", escape(first))
            };
            format!("<div class=\"f\"><label for=\"{id}\">{}{req}</label>{head}{input}</div>", escape(&f.label))
        }
        FieldKind::Choice | FieldKind::MultiChoice => {
            let ty = if f.kind == FieldKind::Choice { "radio" } else { "checkbox" };
            let mut opts = String::new();
            for (i, o) in f.options.iter().enumerate() {
                let checked = if vals.iter().any(|v| v == o.value()) { " checked" } else { "" };
                let oid = if i == 0 { id.clone() } else { format!("{id}-{i}") };
                opts.push_str(&format!(
                    "<label for=\"{oid}\"><input id=\"{oid}\" type=\"{ty}\" name=\"{name}\" value=\"{}\"{checked}>{}</label>",
                    escape(o.value()),
                    escape(o.label())
                ));
            }
            format!("<fieldset class=\"f\"{aria}><legend>{}{req}</legend>{head}{opts}</fieldset>", escape(&f.label))
        }
        FieldKind::Consent => {
            let checked = if vals.iter().any(|v| !v.is_empty()) { " checked" } else { "" };
            format!(
                "<div class=\"f c\">{head}<label for=\"{id}\"><input id=\"{id}\" type=\"checkbox\" name=\"{name}\" value=\"yes\"{checked}{aria}>{}{req}</label></div>",
                escape(&f.label)
            )
        }
    }
}

fn render(
    form: &FormDef,
    bound: &Bound,
    values: &BTreeMap<String, Vec<String>>,
    errors: &BTreeMap<String, String>,
    nonce: &str,
    status: StatusCode,
) -> Response {
    let mut body = format!("<h1>{}</h1>", escape(&form.title));
    if let Some(i) = &form.intro {
        body.push_str(&format!("<p>{}</p>", escape(i)));
    }
    if !errors.is_empty() {
        let n = errors.len();
        body.push_str(&format!(
            "<div class=\"summary\" role=\"alert\" tabindex=\"-1\"><p><strong>{}</strong></p><ul>",
            if n == 1 { "One answer needs a change:".to_string() } else { format!("{n} answers need a change:") }
        ));
        for f in form.fields.iter().filter(|f| errors.contains_key(&f.name)) {
            body.push_str(&format!("<li><a href=\"#f-{}\">{}: {}</a></li>", escape(&f.name), escape(&f.label), escape(&errors[&f.name])));
        }
        body.push_str("</ul></div>");
    }
    body.push_str(&format!("<form method=\"post\" action=\"/f/{}\" novalidate>", escape(&form.id)));
    if let Bound::Contact { token, .. } = bound {
        body.push_str(&format!("<input type=\"hidden\" name=\"_t\" value=\"{}\">", escape(token)));
    }
    body.push_str(&format!("<input type=\"hidden\" name=\"_s\" value=\"{}\">", escape(nonce)));
    for f in &form.fields {
        let vals = values.get(&f.name).cloned().unwrap_or_default();
        body.push_str(&field_html(f, &vals, errors.get(&f.name)));
    }
    body.push_str(&format!(
        "<div class=\"hp\" aria-hidden=\"true\"><label for=\"f-{HONEYPOT}\">Leave this empty</label>\
         <input id=\"f-{HONEYPOT}\" name=\"{HONEYPOT}\" type=\"text\" tabindex=\"-1\" autocomplete=\"off\"></div>"
    ));
    body.push_str(&format!("<button type=\"submit\">{}</button></form>", escape(form.submit.as_deref().unwrap_or("Send"))));
    page(status, &form.title, &body)
}
