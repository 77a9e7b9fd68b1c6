//! Email opens and clicks: `/o/{token}` (the open pixel `smtp.send_email` with `track: true`
//! puts in the HTML) and `/c/{token}` (the links it rewrites). No API token: the signed
//! token is the authority (`enlace_runner::links::open_token`, `click_token`). An open
//! records `email_opened`, a click `email_clicked` on the recipient's contact (nothing when
//! the address is not a contact), and the click redirects to the one address that was
//! signed, with the contact's token (`enl=`) added so that `/track.js` knows the visitor
//! after consent: never an open redirect. A damaged token answers 400 and redirects nowhere.

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use enlace_core::contacts::{ContactKey, ContactOp, WriteContext};
use enlace_runner::links::{Tracked, contact_token, read_click_token, read_open_token};
use serde_json::json;

use crate::AppState;

/// A transparent 1x1 GIF.
const PIXEL: &[u8] = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff\x21\xf9\x04\x01\x00\x00\x00\x00\x2c\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02\x44\x01\x00\x3b";

pub fn routes() -> axum::Router<AppState> {
    axum::Router::new().route("/o/{token}", get(open)).route("/c/{token}", get(click))
}

/// Records the activity on the recipient's contact; its id when it is one.
async fn record(s: &AppState, t: &Tracked, kind: &str) -> Option<String> {
    let contact = match s.runner.store().contact(ContactKey::Email(t.email.clone())).await {
        Ok(Some(c)) => c,
        Ok(None) => return None,
        Err(e) => {
            tracing::warn!(error = %e, "email tracking: the contact could not be read");
            return None;
        }
    };
    let mut data = json!({"message_id": t.message});
    if let Some(u) = &t.url {
        data["url"] = json!(u);
    }
    let op = ContactOp::RecordEvent { key: ContactKey::Id(contact.id.clone()), kind: kind.into(), data, at: None };
    if let Err(e) = s.runner.contacts().apply(WriteContext::default(), op).await {
        tracing::warn!(error = %e, kind, "email tracking: the activity could not be recorded");
    }
    Some(contact.id)
}

async fn open(State(s): State<AppState>, Path(token): Path<String>) -> Response {
    if let Some(t) = read_open_token(s.runner.store(), token.trim_end_matches(".gif")) {
        record(&s, &t, "email_opened").await;
    }
    // The image either way: a mail program shows nothing broken.
    let mut r = ([(header::CONTENT_TYPE, "image/gif")], PIXEL).into_response();
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

async fn click(State(s): State<AppState>, Path(token): Path<String>) -> Response {
    let Some(t) = read_click_token(s.runner.store(), &token) else {
        return (StatusCode::BAD_REQUEST, "This link is damaged or was not made by this sender.").into_response();
    };
    let Some(url) = t.url.clone() else { return StatusCode::BAD_REQUEST.into_response() };
    let target = match record(&s, &t, "email_clicked").await {
        Some(id) => {
            let sep = if url.contains('?') { '&' } else { '?' };
            match url.split_once('#') {
                Some((u, frag)) => format!("{u}{sep}enl={}#{frag}", contact_token(s.runner.store(), &id)),
                None => format!("{url}{sep}enl={}", contact_token(s.runner.store(), &id)),
            }
        }
        None => url,
    };
    let mut r = StatusCode::FOUND.into_response();
    match HeaderValue::from_str(&target) {
        Ok(v) => {
            r.headers_mut().insert(header::LOCATION, v);
            r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r.headers_mut().insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
            r
        }
        Err(_) => (StatusCode::BAD_REQUEST, "This link's address cannot be followed.").into_response(),
    }
}
