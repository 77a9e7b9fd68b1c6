//! `smtp.send_email`: one message through the connection's SMTP server.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use enlace_core::{Action, ActionContext, ConnectorError, Idempotency};

use crate::client::{Session, deadline_for, smtp_credentials};
use crate::message;

/// One address or several: a text (`"Ana <ana@example.com>"`, or several separated by
/// commas) or a list of texts.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Addresses {
    One(String),
    Many(Vec<String>),
}

impl Default for Addresses {
    fn default() -> Self {
        Addresses::Many(vec![])
    }
}

/// A file attached to the message.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Attachment {
    /// The file name the recipient sees, like `invoice-2026-04.pdf`.
    pub name: String,
    /// The file's media type, like `application/pdf` or `text/csv`. Defaults to
    /// `application/octet-stream` for `content_base64` and `text/plain; charset=utf-8` for
    /// `content_text`.
    #[serde(default)]
    pub content_type: Option<String>,
    /// The file's bytes, base64-encoded (line breaks and spaces are ignored). Give this or
    /// `content_text`.
    #[serde(default)]
    pub content_base64: Option<String>,
    /// The file's content as text (a CSV, an .ics invitation, a note). Give this or
    /// `content_base64`.
    #[serde(default)]
    pub content_text: Option<String>,
    /// Ignored: the size a trigger reports with each attachment (`imap.new_email`), so that
    /// its attachments can be passed on as they are.
    #[serde(default)]
    pub size: Option<u64>,
    /// Set by a trigger that left the file's content out (`imap.new_email` for a file above
    /// its `max_attachment_bytes`); such an attachment cannot be sent, and the step says so.
    #[serde(default)]
    pub skipped: Option<String>,
}

/// The `with` map of an `smtp.send_email` step.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// The sender, as an address (`news@example.com`) or with a name
    /// (`Example News <news@example.com>`). Most servers accept only the addresses of the
    /// account the connection logs in with.
    pub from: String,
    /// The recipients: an address, several separated by commas, or a list. At least one
    /// recipient in `to`, `cc` or `bcc` is needed.
    #[serde(default)]
    pub to: Addresses,
    /// Copy recipients, shown to everyone: an address, several separated by commas, or a list.
    #[serde(default)]
    pub cc: Addresses,
    /// Blind copy recipients: they receive the message, and no recipient sees them (no `Bcc`
    /// header is sent).
    #[serde(default)]
    pub bcc: Addresses,
    /// Where replies go, when not to the sender (`Support <support@example.com>`).
    #[serde(default)]
    pub reply_to: Option<String>,
    /// The subject line. Any language: non-ASCII text is encoded for you.
    pub subject: String,
    /// The plain-text body. Give `text`, `html` or both: with both, mail programs show the
    /// HTML and fall back to the text (multipart/alternative).
    #[serde(default)]
    pub text: Option<String>,
    /// The HTML body. Give `text`, `html` or both. Values a template inserts here are
    /// HTML-escaped (`{{{raw}}}` inserts HTML as is).
    #[serde(default)]
    #[schemars(extend("contentMediaType" = "text/html"))]
    pub html: Option<String>,
    /// Extra headers, name to value (`List-Unsubscribe: "<https://example.com/u/42>"`,
    /// `X-Campaign: spring`). The headers that have a field of their own (From, To, Cc,
    /// Bcc, Reply-To, Subject, Message-ID, Date, MIME and content headers) are refused here.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Files to attach, each with `name`, `content_type` and `content_base64` or
    /// `content_text`. At most 20 MiB in all.
    #[serde(default)]
    pub attachments: Vec<Attachment>,
    /// One-click unsubscribe (RFC 8058) from this purpose, like `marketing`: Enlace adds
    /// `List-Unsubscribe` (a link to this installation, signed for the recipient) and
    /// `List-Unsubscribe-Post: List-Unsubscribe=One-Click`, and puts the same link wherever
    /// `%unsubscribe_url%` appears in `text` and `html`. Following it withdraws the
    /// recipient's consent for this purpose on the email channel (the `contacts` app). Needs
    /// exactly one recipient in `to` (the link is personal) and Enlace's public address
    /// (`ENLACE_PUBLIC_URL`).
    #[serde(default)]
    pub unsubscribe: Option<String>,
    /// Track opens and clicks: every `http(s)` link of `html` becomes a link to this
    /// installation that records `email_clicked` on the recipient's contact and then leads
    /// to the original address (only to it), and a 1x1 image that records `email_opened` is
    /// added. Needs `html`, exactly one recipient in `to` and Enlace's public address.
    #[serde(default)]
    pub track: bool,
}

/// Rewrites every `href="http..."` / `href='http...'` of `html` with `link` (the unsubscribe
/// link left as it is) and adds `pixel` (an image address) before `</body>`, or at the end.
pub fn track_html(
    html: &str,
    skip: Option<&str>,
    mut link: impl FnMut(&str) -> Result<String, String>,
    pixel: &str,
) -> Result<String, String> {
    let mut out = String::with_capacity(html.len() + 256);
    let mut rest = html;
    loop {
        let lower = rest.to_ascii_lowercase();
        let Some(at) = lower.find("href=") else { break };
        let quote_at = at + 5;
        let quote = rest[quote_at..].chars().next();
        let Some(q @ ('"' | '\'')) = quote else {
            out.push_str(&rest[..quote_at]);
            rest = &rest[quote_at..];
            continue;
        };
        let start = quote_at + 1;
        let Some(len) = rest[start..].find(q) else { break };
        let raw = &rest[start..start + len];
        let url = raw.replace("&amp;", "&");
        out.push_str(&rest[..start]);
        let lower_url = url.to_ascii_lowercase();
        if (lower_url.starts_with("http://") || lower_url.starts_with("https://")) && Some(url.as_str()) != skip {
            out.push_str(&link(&url)?.replace('&', "&amp;"));
        } else {
            out.push_str(raw);
        }
        rest = &rest[start + len..];
    }
    out.push_str(rest);
    let img = format!("<img src=\"{}\" width=\"1\" height=\"1\" alt=\"\" style=\"display:block;border:0\">", pixel.replace('&', "&amp;"));
    match out.to_ascii_lowercase().rfind("</body>") {
        Some(i) => out.insert_str(i, &img),
        None => out.push_str(&img),
    }
    Ok(out)
}

/// Adds open and click tracking to `input` when it asks for it.
fn with_tracking(ctx: &ActionContext, mut input: Input, unsubscribe_url: Option<String>) -> Result<Input, ConnectorError> {
    if !input.track {
        return Ok(input);
    }
    let Some(html) = input.html.take() else {
        return Err(ConnectorError::bad_input("track", "tracking needs an `html` body (opens and clicks are seen in HTML only)"));
    };
    let to: Vec<String> = match &input.to {
        Addresses::One(s) => s.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect(),
        Addresses::Many(v) => v.iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect(),
    };
    let [recipient] = to.as_slice() else {
        return Err(ConnectorError::bad_input(
            "to",
            "a tracked email goes to exactly one recipient in `to` (its links are personal); send one email per person",
        ));
    };
    let email = recipient.parse::<lettre::message::Mailbox>().map(|m| m.email.to_string()).unwrap_or_else(|_| recipient.clone());
    let Some(links) = ctx.extensions.links.as_ref() else {
        return Err(ConnectorError::permanent("this runner signs no links, so opens and clicks cannot be tracked"));
    };
    let message = ctx.idempotency_key.clone();
    let pixel = links.open_url(&email, &message).map_err(|e| ConnectorError::bad_input("track", e))?;
    let html = track_html(&html, unsubscribe_url.as_deref(), |u| links.click_url(&email, &message, u), &pixel)
        .map_err(|e| ConnectorError::bad_input("track", e))?;
    input.html = Some(html);
    Ok(input)
}

/// The placeholder `text` and `html` may carry for the unsubscribe link.
pub const UNSUBSCRIBE_PLACEHOLDER: &str = "%unsubscribe_url%";

/// Adds the unsubscribe headers and link to `input` when it asks for them.
fn with_unsubscribe(ctx: &ActionContext, mut input: Input) -> Result<Input, ConnectorError> {
    let Some(purpose) = input.unsubscribe.clone() else {
        if input.text.iter().chain(input.html.iter()).any(|b| b.contains(UNSUBSCRIBE_PLACEHOLDER)) {
            return Err(ConnectorError::bad_input(
                "unsubscribe",
                "the body holds `%unsubscribe_url%` but no `unsubscribe` purpose is given; add `unsubscribe: marketing`",
            ));
        }
        return Ok(input);
    };
    let purpose = purpose.trim().to_string();
    if purpose.is_empty() || !purpose.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        return Err(ConnectorError::bad_input("unsubscribe", "is not a purpose: use a word like `marketing` or `newsletter`"));
    }
    let to: Vec<String> = match &input.to {
        Addresses::One(s) => s.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect(),
        Addresses::Many(v) => v.iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect(),
    };
    let [recipient] = to.as_slice() else {
        return Err(ConnectorError::bad_input(
            "to",
            "an email with an unsubscribe link goes to exactly one recipient in `to` (the link is personal); send one email per person",
        ));
    };
    let email = recipient.parse::<lettre::message::Mailbox>().map(|m| m.email.to_string()).unwrap_or_else(|_| recipient.clone());
    let Some(links) = ctx.extensions.links.as_ref() else {
        return Err(ConnectorError::permanent("this runner signs no links, so the unsubscribe link cannot be made"));
    };
    let url = links.unsubscribe_url(&email, &purpose).map_err(|e| ConnectorError::bad_input("unsubscribe", e))?;
    for (name, value) in [("List-Unsubscribe", format!("<{url}>")), ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click".to_string())] {
        if input.headers.keys().any(|k| k.eq_ignore_ascii_case(name)) {
            return Err(ConnectorError::bad_input(format!("headers.{name}"), "is set by `unsubscribe`: leave it out of `headers`"));
        }
        input.headers.insert(name.to_string(), value);
    }
    input.text = input.text.map(|t| t.replace(UNSUBSCRIBE_PLACEHOLDER, &url));
    input.html = input.html.map(|h| h.replace(UNSUBSCRIBE_PLACEHOLDER, &url));
    Ok(input)
}

/// What the server accepted.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Output {
    /// The message's `Message-ID` header, with its angle brackets. It is derived from the
    /// step's idempotency key, so a retry or a replay of this step sends the same id, and
    /// mail systems that deduplicate on it keep one copy.
    pub message_id: String,
    /// The envelope recipients the server accepted (to, cc and bcc, each once), as plain
    /// addresses.
    pub accepted: Vec<String>,
    /// The server's answer to the message (for example `250 2.0.0 Ok: queued as 4Q2J1x`),
    /// which often carries its queue id.
    pub server_response: String,
}

/// `smtp.send_email`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SendEmail;

impl Action for SendEmail {
    type Input = Input;
    type Output = Output;

    const ID: &'static str = "send_email";
    const NAME: &'static str = "Send an email";
    const DESCRIPTION: &'static str = "Sends one email through the connection's SMTP server: text and/or HTML, attachments, cc, bcc, reply-to and extra headers. Returns the Message-ID and the accepted recipients.";
    // A second SMTP transaction is a second email: a call whose outcome is unknown is never
    // resent blindly. The Message-ID, the same on every attempt, lets mail systems (and
    // people) recognise a copy.
    const IDEMPOTENCY: Idempotency = Idempotency::None;
    const HTTP_ONLY: bool = false;

    /// Every recipient is a person the send policy decides about.
    fn reaches() -> Option<enlace_core::policy::Reach> {
        use enlace_core::policy::{Reach, RecipientKind};
        Some(Reach::new("email", RecipientKind::Email, &["to", "cc", "bcc"]))
    }

    fn sample() -> Output {
        Output {
            message_id: "<enlace.7f3a9c2e81d4b6a05e1f9d3c2b7a6e40@example.com>".into(),
            accepted: vec!["ana@example.org".into(), "team@example.com".into()],
            server_response: "250 2.0.0 Ok: queued as 4Q2J1x3bKz".into(),
        }
    }

    async fn call(&self, ctx: &ActionContext, input: Input) -> Result<Output, ConnectorError> {
        let creds = smtp_credentials(&ctx.credentials)?;
        let input = with_unsubscribe(ctx, input)?;
        let unsubscribe_url = input.headers.get("List-Unsubscribe").map(|v| v.trim_matches(['<', '>']).to_string());
        let input = with_tracking(ctx, input, unsubscribe_url)?;
        // Everything about the input is checked before any connection is made.
        let built = message::build(&input, &ctx.idempotency_key)?;
        let mut session = Session::open(creds, ctx.http.allows_private_networks(), deadline_for(ctx.timeout)).await?;
        match session.send(&built.envelope_from, &built.recipients, &built.bytes).await {
            Ok(server_response) => {
                session.quit().await;
                Ok(Output {
                    message_id: built.message_id,
                    accepted: built.recipients.iter().map(ToString::to_string).collect(),
                    server_response,
                })
            }
            Err(e) => {
                session.abort().await;
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod track_tests {
    use super::track_html;

    #[test]
    fn links_are_rewritten_and_the_pixel_added() {
        let html = "<html><body><a href=\"https://shop.example.com/a?x=1&amp;y=2\">A</a> <A HREF='http://b.example/'>B</A> \
                    <a href=\"mailto:x@y.z\">m</a> <a href=\"https://e.example/u/1\">unsub</a></body></html>";
        let out =
            track_html(html, Some("https://e.example/u/1"), |u| Ok(format!("https://e.example/c/{}&z", u.len())), "https://e.example/o/t")
                .unwrap();
        assert_eq!(
            out,
            "<html><body><a href=\"https://e.example/c/34&amp;z\">A</a> <A HREF='https://e.example/c/17&amp;z'>B</A> \
             <a href=\"mailto:x@y.z\">m</a> <a href=\"https://e.example/u/1\">unsub</a>\
             <img src=\"https://e.example/o/t\" width=\"1\" height=\"1\" alt=\"\" style=\"display:block;border:0\"></body></html>"
        );
        // The decoded address is what gets signed (`&amp;` is HTML for `&`).
        let mut seen = vec![];
        track_html(
            "<a href=\"https://a.example/?p=1&amp;q=2\">x</a>",
            None,
            |u| {
                seen.push(u.to_string());
                Ok(u.to_string())
            },
            "p",
        )
        .unwrap();
        assert_eq!(seen, ["https://a.example/?p=1&q=2"]);
    }
}
