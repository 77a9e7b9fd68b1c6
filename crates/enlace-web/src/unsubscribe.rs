//! `/u/{token}`: one-click unsubscribe (RFC 8058) from the link a marketing email carries
//! (`smtp.send_email` with `unsubscribe:`, in `List-Unsubscribe` and in the body). `GET`
//! shows the preference page (`crate::prefs`), with this one-click button on it.
//!
//! No API token: the signed token is the authority (it names one address and one purpose,
//! and only this installation's key makes it). `POST` unsubscribes: that is what mail
//! programs send for `List-Unsubscribe-Post: List-Unsubscribe=One-Click`, and what the page's
//! button sends. `GET` only shows the page with the button, so that a link scanner opening
//! every link of a message unsubscribes nobody. Unsubscribing records the consent for the
//! purpose on the email channel as withdrawn, with its evidence, on the contact of that
//! address (created if the address was not a contact yet, so the decision is kept).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use enlace_core::contacts::{ConsentStatus, ContactKey, ContactOp, Evidence, NewConsent, WriteContext};
use enlace_runner::links::read_unsubscribe_token;

use crate::AppState;

pub fn routes() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/u/{token}", get(crate::prefs::show).post(unsubscribe))
        .route("/u/{token}/preferences", axum::routing::post(crate::prefs::save))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

fn page(status: StatusCode, title: &str, body_html: String) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title>\
         <meta name=\"viewport\" content=\"width=device-width\"></head><body style=\"font-family:system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem\">\
         <h1>{t}</h1>{body_html}</body></html>",
        t = escape(title)
    );
    let mut r = (status, Html(html)).into_response();
    let h = r.headers_mut();
    h.insert("cache-control", "no-store".parse().expect("static header"));
    h.insert("referrer-policy", "no-referrer".parse().expect("static header"));
    h.insert("x-frame-options", "DENY".parse().expect("static header"));
    r
}

fn unknown() -> Response {
    page(
        StatusCode::BAD_REQUEST,
        "Link not recognised",
        "<p>This unsubscribe link is damaged or was not made by this sender. Reply to the email and ask to be removed.</p>".into(),
    )
}

async fn unsubscribe(State(s): State<AppState>, Path(token): Path<String>) -> Response {
    let Some(u) = read_unsubscribe_token(s.runner.store(), &token) else { return unknown() };
    let contacts = s.runner.contacts();
    let now = s.runner.now_ms();
    // The contact first (an address that is not one yet becomes one, so the decision is kept).
    let upsert = ContactOp::Upsert { email: u.email.clone(), fields: Default::default() };
    if let Err(e) = contacts.apply(WriteContext::default(), upsert).await {
        tracing::error!(error = %e, "recording an unsubscribe failed");
        return page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Try again",
            "<p>We could not record this just now; please try again in a moment.</p>".into(),
        );
    }
    let consent = NewConsent {
        purpose: u.purpose.clone(),
        channel: "email".into(),
        status: ConsentStatus::Withdrawn,
        evidence: Evidence {
            source: "one-click unsubscribe link (RFC 8058)".into(),
            ip: None,
            text: None,
            recorded_at: now,
            run_id: None,
            details: Default::default(),
        },
    };
    let op = ContactOp::RecordConsent { key: ContactKey::Email(u.email.clone()), consent };
    if let Err(e) = contacts.apply(WriteContext::default(), op).await {
        tracing::error!(error = %e, "recording an unsubscribe failed");
        return page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Try again",
            "<p>We could not record this just now; please try again in a moment.</p>".into(),
        );
    }
    tracing::info!(purpose = %u.purpose, "a contact unsubscribed through a one-click link");
    page(
        StatusCode::OK,
        "You are unsubscribed",
        format!("<p>{} will get no more <b>{}</b> email from us.</p>", escape(&u.email), escape(&u.purpose)),
    )
}
