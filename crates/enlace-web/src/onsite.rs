//! On-site messages for `/track.js`: `POST /web/messages` answers the pop-ups and banners
//! waiting for the contact a token names, and `POST /web/messages/event` records what the
//! visitor did with one (viewed, clicked, dismissed) on the message and the timeline.
//!
//! The same gate as `POST /track` (`track::site_gate`): a configured origin, the rate
//! limit, a signed contact token in the body (`text/plain` JSON, so no preflight), 8 KiB at
//! most. The script calls these only after the site's consent call. Messages are plain
//! text (title, body, button label) and an http(s) button address: the script writes them
//! with `textContent`, so a template cannot put markup on the site.

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use enlace_runner::links::read_contact_token;
use enlace_runner::web::MessageAction;
use serde::Deserialize;
use serde_json::json;

use crate::AppState;
use crate::error::{ApiError, Code};
use crate::track::{MAX_TRACK_BYTES, site_gate, with_cors};

pub fn routes() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/web/messages", axum::routing::post(pending).options(crate::track::preflight_route))
        .route("/web/messages/event", axum::routing::post(event).options(crate::track::preflight_route))
        .layer(DefaultBodyLimit::max(MAX_TRACK_BYTES))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Ask {
    token: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Did {
    token: String,
    message: String,
    action: String,
    #[serde(default)]
    url: Option<String>,
}

fn contact(s: &AppState, token: &str) -> Result<String, ApiError> {
    read_contact_token(s.runner.store(), token)
        .ok_or_else(|| ApiError::invalid("token", "the contact token is damaged or was not made by this installation"))
}

async fn pending(State(s): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let origin = match site_gate(&s, &headers) {
        Ok(o) => o,
        Err(r) => return r,
    };
    let cors = Some(origin.as_str());
    let ask: Ask = match serde_json::from_slice(&body) {
        Ok(a) => a,
        Err(e) => return with_cors(ApiError::new(Code::InvalidJson, format!("expected {{\"token\": ...}}: {e}")).into_response(), cors),
    };
    let id = match contact(&s, &ask.token) {
        Ok(id) => id,
        Err(e) => return with_cors(e.into_response(), cors),
    };
    match s.runner.web().pending(&id).await {
        Ok(list) => {
            let messages: Vec<_> = list
                .iter()
                .map(|m| {
                    json!({
                        "id": m.id,
                        "kind": m.message.kind.as_str(),
                        "title": m.message.title,
                        "body": m.message.body,
                        "button_label": m.message.cta_label,
                        "button_url": m.message.cta_url,
                    })
                })
                .collect();
            let mut r = axum::Json(json!({ "messages": messages })).into_response();
            r.headers_mut().insert(axum::http::header::CACHE_CONTROL, "no-store".parse().expect("static header"));
            with_cors(r, cors)
        }
        Err(e) => with_cors(ApiError::from(e).into_response(), cors),
    }
}

async fn event(State(s): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let origin = match site_gate(&s, &headers) {
        Ok(o) => o,
        Err(r) => return r,
    };
    let cors = Some(origin.as_str());
    let did: Did = match serde_json::from_slice(&body) {
        Ok(d) => d,
        Err(e) => {
            return with_cors(
                ApiError::new(Code::InvalidJson, format!("expected {{\"token\", \"message\", \"action\", \"url\"}}: {e}")).into_response(),
                cors,
            );
        }
    };
    let id = match contact(&s, &did.token) {
        Ok(id) => id,
        Err(e) => return with_cors(e.into_response(), cors),
    };
    let Some(action) = MessageAction::parse(&did.action) else {
        return with_cors(ApiError::invalid("action", "`action` is one of viewed, clicked, dismissed").into_response(), cors);
    };
    let url = did.url.filter(|u| crate::track::origin_of(u).as_deref() == Some(origin.as_str()));
    match s.runner.web().record(&id, &did.message, action, url).await {
        // Recorded, or already recorded before (a repeated beacon): nothing to say either way.
        Ok(_) => with_cors(StatusCode::NO_CONTENT.into_response(), cors),
        Err(e) => with_cors(ApiError::from(e).into_response(), cors),
    }
}
