//! The preference page behind the signed unsubscribe link: `GET /u/{token}` shows what the
//! address's contact agreed to, per channel and purpose (the latest decision of each, with
//! when and how it was given), as checkboxes; `POST /u/{token}/preferences` saves the boxes
//! changed, or with `leave=all` withdraws everything granted. Each change is one consent
//! decision recorded through the contacts service, with its evidence: the source (this
//! page), the exact wording of the box, the time, the IP address and the user agent. The
//! send policy reads consent when a message is about to leave, so a withdrawal also stops
//! the messages already queued.
//!
//! The page keeps the one-click button (`POST /u/{token}`, RFC 8058, in
//! `crate::unsubscribe`), which mail programs call for `List-Unsubscribe-Post`. Opening the
//! page changes nothing (link scanners open every link).

use std::collections::BTreeSet;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use enlace_core::contacts::{Consent, ConsentStatus, ContactKey, ContactOp, Evidence, NewConsent, WriteContext};
use enlace_runner::links::{Unsubscribe, read_unsubscribe_token};
use serde_json::{Map, json};

use crate::AppState;
use crate::public_page::{PeerIp, escape, form_values, notice, page, user_agent};

/// Where the evidence says a decision was made.
pub const SOURCE: &str = "preference page (signed unsubscribe link)";

fn channel_name(c: &str) -> &str {
    match c {
        "email" => "email",
        "sms" => "text message (SMS)",
        "whatsapp" => "WhatsApp",
        "push" => "push notification",
        "voice" => "phone call",
        "mail" => "post",
        "social" => "social network message",
        "ads" => "ads on other sites (audiences)",
        "web" => "messages on our website",
        other => other,
    }
}

/// The exact wording of a box (what the evidence records).
pub fn wording(purpose: &str, channel: &str) -> String {
    format!("Send me {purpose} messages by {}.", channel_name(channel))
}

fn unknown() -> Response {
    notice(
        StatusCode::BAD_REQUEST,
        "Link not recognised",
        "<p>This link is damaged or was not made by this sender. Reply to the email and ask to be removed.</p>",
    )
}

fn try_again() -> Response {
    notice(StatusCode::SERVICE_UNAVAILABLE, "Try again", "<p>We could not do this just now; please try again in a moment.</p>")
}

/// The decisions the page shows: the contact's latest per purpose and channel, and the
/// link's own purpose on email (unset when nothing was recorded).
fn rows(u: &Unsubscribe, consents: &[Consent]) -> Vec<(String, String, Option<Consent>)> {
    let mut out: Vec<(String, String, Option<Consent>)> =
        consents.iter().map(|c| (c.purpose.clone(), c.channel.clone(), Some(c.clone()))).collect();
    if !out.iter().any(|(p, ch, _)| *p == u.purpose && ch == "email") {
        out.push((u.purpose.clone(), "email".into(), None));
    }
    out.sort_by(|a, b| (&a.1, &a.0).cmp(&(&b.1, &b.0)));
    out
}

fn date(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map(|t| t.format("%Y-%m-%d").to_string()).unwrap_or_default()
}

fn render(token: &str, u: &Unsubscribe, consents: &[Consent], saved: Option<&str>) -> Response {
    let t = escape(token);
    let mut body = format!("<h1>Your preferences</h1><p>For <strong>{}</strong>.</p>", escape(&u.email));
    if let Some(s) = saved {
        body.push_str(&format!("<p class=\"ok\" role=\"status\">{}</p>", escape(s)));
    }
    body.push_str(&format!(
        "<form method=\"post\" action=\"/u/{t}/preferences\"><fieldset class=\"f\"><legend>What we may send you</legend>"
    ));
    for (i, (purpose, channel, c)) in rows(u, consents).iter().enumerate() {
        let key = format!("{purpose}:{channel}");
        let granted = c.as_ref().is_some_and(|c| c.status == ConsentStatus::Granted);
        let how = match c {
            Some(c) => format!(
                "{} on {} ({})",
                if c.status == ConsentStatus::Granted { "Agreed" } else { "Withdrawn" },
                date(c.at),
                escape(&c.evidence.source)
            ),
            None => "Nothing recorded".into(),
        };
        body.push_str(&format!(
            "<input type=\"hidden\" name=\"shown\" value=\"{k}\"><label for=\"p-{i}\"><input id=\"p-{i}\" type=\"checkbox\" name=\"keep\" value=\"{k}\"{checked} aria-describedby=\"d-{i}\"><span>{w}<br><small id=\"d-{i}\">{how}</small></span></label>",
            k = escape(&key),
            checked = if granted { " checked" } else { "" },
            w = escape(&wording(purpose, channel)),
        ));
    }
    body.push_str("</fieldset><button type=\"submit\">Save my choices</button></form>");
    body.push_str(&format!(
        "<form method=\"post\" action=\"/u/{t}/preferences\"><input type=\"hidden\" name=\"leave\" value=\"all\">\
         <button type=\"submit\" class=\"secondary\">Unsubscribe from everything</button></form>\
         <form method=\"post\" action=\"/u/{t}\"><input type=\"hidden\" name=\"List-Unsubscribe\" value=\"One-Click\">\
         <button type=\"submit\" class=\"secondary\">Only stop {p} email</button></form>",
        p = escape(&u.purpose)
    ));
    page(StatusCode::OK, "Your preferences", &body)
}

async fn current(s: &AppState, email: &str) -> Result<Vec<Consent>, Response> {
    match s.runner.store().contact_detail(ContactKey::Email(email.to_string())).await {
        Ok(Some(d)) => Ok(d.consents),
        Ok(None) => Ok(vec![]),
        Err(e) => {
            tracing::error!(error = %e, "reading a contact's preferences failed");
            Err(try_again())
        }
    }
}

pub(crate) async fn show(State(s): State<AppState>, Path(token): Path<String>) -> Response {
    let Some(u) = read_unsubscribe_token(s.runner.store(), &token) else { return unknown() };
    match current(&s, &u.email).await {
        Ok(consents) => render(&token, &u, &consents, None),
        Err(r) => r,
    }
}

pub(crate) async fn save(
    State(s): State<AppState>,
    Path(token): Path<String>,
    PeerIp(ip): PeerIp,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(u) = read_unsubscribe_token(s.runner.store(), &token) else { return unknown() };
    let v = form_values(&body);
    let consents = match current(&s, &u.email).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let shown: Vec<(String, String, Option<Consent>)> = rows(&u, &consents);
    let leave_all = v.get("leave").is_some_and(|l| l.iter().any(|x| x == "all"));
    let posted_shown: BTreeSet<&str> = v.get("shown").map(|x| x.iter().map(String::as_str).collect()).unwrap_or_default();
    let keep: BTreeSet<&str> = v.get("keep").map(|x| x.iter().map(String::as_str).collect()).unwrap_or_default();
    let mut changes = vec![];
    for (purpose, channel, c) in &shown {
        let key = format!("{purpose}:{channel}");
        let granted = c.as_ref().is_some_and(|c| c.status == ConsentStatus::Granted);
        let want = if leave_all {
            false
        } else if posted_shown.contains(key.as_str()) {
            keep.contains(key.as_str())
        } else {
            continue;
        };
        // Only what changes is recorded (a box never set and left unticked stays unset).
        if want == granted || (!want && c.is_none()) {
            continue;
        }
        changes.push((purpose.clone(), channel.clone(), want));
    }
    if changes.is_empty() {
        let msg = if leave_all { "You were not subscribed to anything." } else { "Nothing changed." };
        return render(&token, &u, &consents, Some(msg));
    }
    let contacts = s.runner.contacts();
    if let Err(e) = contacts.apply(WriteContext::default(), ContactOp::Upsert { email: u.email.clone(), fields: Default::default() }).await
    {
        tracing::error!(error = %e, "recording preferences failed");
        return try_again();
    }
    let now = s.runner.now_ms();
    let ua = user_agent(&headers);
    for (purpose, channel, want) in &changes {
        let mut details = Map::new();
        if let Some(ua) = &ua {
            details.insert("user_agent".into(), json!(ua));
        }
        details.insert(
            "choice".into(),
            json!(if leave_all {
                "unsubscribe from everything"
            } else if *want {
                "box ticked"
            } else {
                "box unticked"
            }),
        );
        let consent = NewConsent {
            purpose: purpose.clone(),
            channel: channel.clone(),
            status: if *want { ConsentStatus::Granted } else { ConsentStatus::Withdrawn },
            evidence: Evidence {
                source: SOURCE.into(),
                ip: ip.clone(),
                text: Some(if leave_all { "Unsubscribe from everything".into() } else { wording(purpose, channel) }),
                recorded_at: now,
                run_id: None,
                details,
            },
        };
        if let Err(e) =
            contacts.apply(WriteContext::default(), ContactOp::RecordConsent { key: ContactKey::Email(u.email.clone()), consent }).await
        {
            tracing::error!(error = %e, "recording preferences failed");
            return try_again();
        }
    }
    tracing::info!(changes = changes.len(), "a contact changed its preferences");
    let consents = match current(&s, &u.email).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let msg = if leave_all {
        "You are unsubscribed from everything.".to_string()
    } else {
        let said: Vec<String> =
            changes.iter().map(|(p, c, w)| format!("{} {p} by {}", if *w { "agreed to" } else { "stopped" }, channel_name(c))).collect();
        format!("Saved: {}.", said.join("; "))
    };
    render(&token, &u, &consents, Some(&msg))
}
