//! Building the message of an `smtp.send_email` step: addresses parsed, headers checked
//! (no line breaks, no header that has a field of its own), bodies and attachments put
//! together as MIME, and a Message-ID derived from the idempotency key. Every problem is a
//! [`ConnectorError::BadInput`] naming the field.

use base64::Engine as _;
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Attachment as MimeAttachment, Mailbox, Mailboxes, MultiPart, SinglePart};
use lettre::{Address, Message};
use sha2::{Digest, Sha256};

use enlace_core::ConnectorError;

use crate::send::{Addresses, Input};

/// The most attachment bytes one message may carry (after decoding). Providers commonly
/// cap whole messages at 20 to 25 MiB, and base64 adds a third.
pub const MAX_ATTACHMENT_BYTES: usize = 20 * 1024 * 1024;

/// Headers set through a field of their own, and the field.
const RESERVED: &[(&str, &str)] = &[
    ("from", "from"),
    ("sender", "from"),
    ("to", "to"),
    ("cc", "cc"),
    ("bcc", "bcc"),
    ("reply-to", "reply_to"),
    ("subject", "subject"),
    ("message-id", "(set from the step's idempotency key)"),
    ("date", "(set when the message is sent)"),
    ("mime-version", "(set for you)"),
    ("content-type", "text, html and attachments"),
    ("content-transfer-encoding", "(chosen for you)"),
];

/// A message ready to send.
#[derive(Debug)]
pub struct Built {
    pub envelope_from: Address,
    /// Every recipient once: to, cc, bcc.
    pub recipients: Vec<Address>,
    pub message_id: String,
    /// The message as sent (no `Bcc` header).
    pub bytes: Vec<u8>,
}

/// The Message-ID for a step: the same for every attempt and replay of the step (the key
/// is the run id and the step's key), unique across steps and runs.
pub fn message_id_for(idempotency_key: &str, from: &Address) -> String {
    let digest = Sha256::digest(idempotency_key.as_bytes());
    format!("<enlace.{}@{}>", hex::encode(&digest[..16]), from.domain())
}

fn parse_mailbox(text: &str, path: &str) -> Result<Mailbox, ConnectorError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(ConnectorError::bad_input(path, "is empty; write an address like `ana@example.com` or `Ana Lima <ana@example.com>`"));
    }
    text.parse::<Mailbox>().map_err(|e| {
        ConnectorError::bad_input(
            path,
            format!("`{text}` is not an email address ({e}); write one like `ana@example.com` or `Ana Lima <ana@example.com>`"),
        )
    })
}

fn parse_list(list: &Addresses, field: &str) -> Result<Vec<Mailbox>, ConnectorError> {
    let items: Vec<(String, &str)> = match list {
        Addresses::One(s) => vec![(field.to_string(), s.as_str())],
        Addresses::Many(v) => v.iter().enumerate().map(|(i, s)| (format!("{field}[{i}]"), s.as_str())).collect(),
    };
    let mut out = vec![];
    for (path, text) in items {
        if text.trim().is_empty() {
            if matches!(list, Addresses::One(_)) {
                continue;
            }
            return Err(ConnectorError::bad_input(&path, "is empty; write an address like `ana@example.com`"));
        }
        // One text may hold several addresses separated by commas.
        match text.parse::<Mailboxes>() {
            Ok(boxes) => out.extend(boxes),
            Err(_) => {
                // Name the bad one among several.
                for part in text.split(',') {
                    parse_mailbox(part, &path)?;
                }
                return Err(parse_mailbox(text, &path).err().unwrap_or_else(|| {
                    ConnectorError::bad_input(&path, format!("`{text}` is not a list of email addresses; separate addresses with commas"))
                }));
            }
        }
    }
    Ok(out)
}

fn no_line_break(value: &str, path: &str) -> Result<(), ConnectorError> {
    if value.contains(['\r', '\n']) {
        return Err(ConnectorError::bad_input(path, "contains a line break, which a mail header cannot hold"));
    }
    Ok(())
}

/// Builds the message; see the module docs.
pub fn build(input: &Input, idempotency_key: &str) -> Result<Built, ConnectorError> {
    let from = parse_mailbox(&input.from, "from")?;
    let to = parse_list(&input.to, "to")?;
    let cc = parse_list(&input.cc, "cc")?;
    let bcc = parse_list(&input.bcc, "bcc")?;
    if to.is_empty() && cc.is_empty() && bcc.is_empty() {
        return Err(ConnectorError::bad_input("to", "no recipient: give at least one address in `to`, `cc` or `bcc`"));
    }
    let reply_to = match &input.reply_to {
        Some(r) if !r.trim().is_empty() => Some(parse_mailbox(r, "reply_to")?),
        _ => None,
    };
    if input.subject.trim().is_empty() {
        return Err(ConnectorError::bad_input("subject", "is empty; give the message a subject"));
    }
    no_line_break(&input.subject, "subject")?;
    let text = input.text.as_deref().filter(|t| !t.is_empty());
    let html = input.html.as_deref().filter(|t| !t.is_empty());
    if text.is_none() && html.is_none() {
        return Err(ConnectorError::bad_input("text", "the message has no body: give `text`, `html` or both"));
    }

    let message_id = if idempotency_key.is_empty() {
        // Outside a run (no key), a fresh id: the time and the message's own fields.
        let seed = format!("{:?}{}{}", std::time::SystemTime::now(), input.from, input.subject);
        message_id_for(&seed, &from.email)
    } else {
        message_id_for(idempotency_key, &from.email)
    };

    let mut builder = Message::builder().from(from.clone()).subject(input.subject.clone()).message_id(Some(message_id.clone()));
    for m in &to {
        builder = builder.to(m.clone());
    }
    for m in &cc {
        builder = builder.cc(m.clone());
    }
    if let Some(r) = reply_to {
        builder = builder.reply_to(r);
    }
    for (name, value) in &input.headers {
        let path = format!("headers.{name}");
        let lower = name.trim().to_ascii_lowercase();
        if let Some((_, field)) = RESERVED.iter().find(|(h, _)| *h == lower) {
            let how = if field.starts_with('(') { field.to_string() } else { format!("use the `{field}` field") };
            return Err(ConnectorError::bad_input(&path, format!("`{name}` cannot be set as an extra header: {how}")));
        }
        let header = HeaderName::new_from_ascii(name.trim().to_string()).map_err(|_| {
            ConnectorError::bad_input(
                &path,
                format!("`{name}` is not a header name: use ASCII letters, digits and `-`, without `:` or spaces"),
            )
        })?;
        no_line_break(value, &path)?;
        builder = builder.raw_header(HeaderValue::new(header, value.trim().to_string()));
    }

    // Every recipient once, in the order given.
    let mut recipients: Vec<Address> = vec![];
    for m in to.iter().chain(&cc).chain(&bcc) {
        if !recipients.contains(&m.email) {
            recipients.push(m.email.clone());
        }
    }
    let envelope = lettre::address::Envelope::new(Some(from.email.clone()), recipients.clone())
        .map_err(|e| ConnectorError::bad_input("to", format!("the recipients cannot be used: {e}")))?;
    builder = builder.envelope(envelope);

    let body = match (text, html) {
        (Some(t), Some(h)) => Body::Multi(MultiPart::alternative_plain_html(t.to_string(), h.to_string())),
        (Some(t), None) => Body::Single(SinglePart::plain(t.to_string())),
        (None, Some(h)) => Body::Single(SinglePart::html(h.to_string())),
        (None, None) => unreachable!("checked above"),
    };

    let message = if input.attachments.is_empty() {
        match body {
            Body::Multi(m) => builder.multipart(m),
            Body::Single(s) => builder.singlepart(s),
        }
    } else {
        let mut mixed = match body {
            Body::Multi(m) => MultiPart::mixed().multipart(m),
            Body::Single(s) => MultiPart::mixed().singlepart(s),
        };
        let mut total = 0usize;
        for (i, a) in input.attachments.iter().enumerate() {
            let path = format!("attachments[{i}]");
            if a.name.trim().is_empty() {
                return Err(ConnectorError::bad_input(format!("{path}.name"), "is empty; give the file name the recipient sees"));
            }
            no_line_break(&a.name, &format!("{path}.name"))?;
            let (bytes, default_type) = match (&a.content_base64, &a.content_text) {
                (Some(b64), None) => {
                    let compact: String = b64.chars().filter(|c| !c.is_ascii_whitespace()).collect();
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(compact.as_bytes())
                        .map_err(|e| ConnectorError::bad_input(format!("{path}.content_base64"), format!("is not valid base64 ({e})")))?;
                    (bytes, "application/octet-stream")
                }
                (None, Some(text)) => (text.clone().into_bytes(), "text/plain; charset=utf-8"),
                (Some(_), Some(_)) => {
                    return Err(ConnectorError::bad_input(&path, "give either `content_base64` or `content_text`, not both"));
                }
                (None, None) if a.skipped.is_some() => {
                    return Err(ConnectorError::bad_input(
                        &path,
                        format!(
                            "has no content: the trigger left it out ({}); raise the trigger's max_attachment_bytes, or leave this file out",
                            a.skipped.as_deref().unwrap_or_default()
                        ),
                    ));
                }
                (None, None) => {
                    return Err(ConnectorError::bad_input(
                        &path,
                        "has no content: give `content_base64` (the file's bytes in base64) or `content_text`",
                    ));
                }
            };
            let type_text = a.content_type.as_deref().map(str::trim).filter(|t| !t.is_empty()).unwrap_or(default_type);
            let content_type = ContentType::parse(type_text).map_err(|_| {
                ConnectorError::bad_input(
                    format!("{path}.content_type"),
                    format!("`{type_text}` is not a media type; write one like `application/pdf` or `text/csv`"),
                )
            })?;
            total += bytes.len();
            if total > MAX_ATTACHMENT_BYTES {
                return Err(ConnectorError::bad_input(
                    "attachments",
                    format!(
                        "the attachments add up to more than {} MiB, more than mail servers accept; send a link instead",
                        MAX_ATTACHMENT_BYTES / (1024 * 1024)
                    ),
                ));
            }
            mixed = mixed.singlepart(MimeAttachment::new(a.name.trim().to_string()).body(bytes, content_type));
        }
        builder.multipart(mixed)
    };
    let message = message.map_err(|e| ConnectorError::bad_input("", format!("the message could not be built: {e}")))?;

    Ok(Built { envelope_from: from.email, recipients, message_id, bytes: message.formatted() })
}

enum Body {
    Single(SinglePart),
    Multi(MultiPart),
}
