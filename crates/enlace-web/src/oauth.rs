//! `GET /oauth/callback`: where an app's sign-in page sends the user back with a code.
//!
//! The route needs no API token (the browser comes from the app), so the `state` is what
//! authenticates the call: it is random, stored only as a hash, bound to one connection,
//! valid for ten minutes and only once. The code is exchanged with the PKCE verifier kept
//! for that `state`; the tokens are stored sealed; a refresh token the app does not send
//! again is kept; the runs that waited for the connection resume. The page says what
//! happened in words, never showing a token.

use std::collections::BTreeMap;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use enlace_core::{Credentials, ErrorClass};

use crate::AppState;

pub fn routes() -> axum::Router<AppState> {
    axum::Router::new().route("/oauth/callback", get(callback))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

fn page(status: StatusCode, title: &str, message: &str) -> Response {
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t} · Enlace</title>\
         <meta name=\"viewport\" content=\"width=device-width\"></head><body style=\"font-family:system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem\">\
         <h1>{t}</h1><p>{m}</p></body></html>",
        t = escape(title),
        m = escape(message)
    );
    let mut r = (status, Html(body)).into_response();
    // The page must not be cached or framed, and the code in its address must not leak.
    let h = r.headers_mut();
    h.insert("cache-control", "no-store".parse().expect("static header"));
    h.insert("referrer-policy", "no-referrer".parse().expect("static header"));
    h.insert("x-frame-options", "DENY".parse().expect("static header"));
    r
}

async fn callback(State(s): State<AppState>, Query(q): Query<BTreeMap<String, String>>) -> Response {
    let Some(state) = q.get("state").filter(|v| !v.is_empty()) else {
        return page(
            StatusCode::BAD_REQUEST,
            "Sign-in not recognised",
            "This address lacks the `state` Enlace sent to the app. Start the connection again from Enlace.",
        );
    };
    let now = s.runner.now_ms();
    let pending = match s.runner.store().take_authorization(state, now).await {
        Ok(Some(p)) => p,
        Ok(None) => {
            return page(
                StatusCode::BAD_REQUEST,
                "Sign-in expired or already used",
                "Enlace does not know this sign-in: it was used already, or more than ten minutes passed. Start the connection again from Enlace.",
            );
        }
        Err(e) => {
            tracing::error!(error = %e, "reading a pending sign-in failed");
            return page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Try again",
                "Enlace could not read its store; try the sign-in again in a moment.",
            );
        }
    };
    let id = pending.connection_id.clone();
    if let Some(err) = q.get("error") {
        let detail = q.get("error_description").map(|d| format!(" ({d})")).unwrap_or_default();
        tracing::info!(connection = %id, error = %err, "the sign-in was not completed at the app");
        return page(
            StatusCode::BAD_REQUEST,
            "Not connected",
            &format!("The app answered `{err}`{detail}. The connection `{id}` is unchanged; start the sign-in again to connect it."),
        );
    }
    let Some(code) = q.get("code").filter(|c| !c.is_empty()) else {
        return page(StatusCode::BAD_REQUEST, "Not connected", "The app sent no code. Start the sign-in again from Enlace.");
    };
    let grant = match s.runner.store().connection(&id).await {
        Ok(Some((_, Credentials::OAuth2Grant(g)))) => *g,
        Ok(_) => {
            return page(
                StatusCode::NOT_FOUND,
                "Not connected",
                &format!("The connection `{id}` was deleted or changed during the sign-in."),
            );
        }
        Err(e) => {
            tracing::error!(connection = %id, error = %e, "reading the connection failed");
            return page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Try again",
                "Enlace could not read its store; try the sign-in again in a moment.",
            );
        }
    };
    let verifier = enlace_core::Secret::new(pending.verifier.clone());
    let tokens = match enlace_kit::oauth::exchange_code(s.runner.transport().as_ref(), &grant, code, &verifier, &pending.redirect_uri).await
    {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(connection = %id, error = %e, "exchanging the sign-in code failed");
            let status = if e.class() == ErrorClass::Auth { StatusCode::BAD_REQUEST } else { StatusCode::BAD_GATEWAY };
            return page(status, "Not connected", &format!("{e}. The connection `{id}` is unchanged; start the sign-in again."));
        }
    };
    let mut grant = grant;
    grant.absorb(tokens, now);
    let credentials = Credentials::OAuth2Grant(Box::new(grant));
    if let Err(e) = s.runner.store().save_connection_credentials(&id, &credentials, Some(("ok", "signed in")), s.runner.now_ms()).await {
        tracing::error!(connection = %id, error = %e, "storing the tokens of a sign-in failed");
        return page(StatusCode::SERVICE_UNAVAILABLE, "Not connected", "Enlace could not store the tokens; start the sign-in again.");
    }
    let resumed = match s.runner.connection_repaired(&id).await {
        Ok(n) => n,
        Err(e) => {
            tracing::error!(connection = %id, error = %e, "releasing the runs held for a connection failed");
            0
        }
    };
    tracing::info!(connection = %id, resumed, "OAuth2 sign-in completed");
    let more = match resumed {
        0 => String::new(),
        1 => " One run that waited for it resumes now.".to_string(),
        n => format!(" {n} runs that waited for it resume now."),
    };
    page(StatusCode::OK, "Connected", &format!("The connection `{id}` is signed in. You can close this window.{more}"))
}
