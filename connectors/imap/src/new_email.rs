//! `imap.new_email`: the messages that arrived in a folder since the last poll.
//!
//! The cursor is `<uidvalidity>:<highest uid seen>`. IMAP gives every message of a folder a
//! UID that only grows, valid as long as the folder's UIDVALIDITY stays the same; so "after
//! the cursor" is `UID SEARCH UID <last+1>:*`. The folder is opened with EXAMINE (read-only)
//! and bodies are read with `BODY.PEEK[]`: polling never marks mail as read.
//!
//! - No cursor (the first poll, or the runner seeding a new recipe): the newest
//!   [`MAX_PER_POLL`] messages, and the cursor at the folder's end. The folder's history is
//!   not walked.
//! - A cursor of another UIDVALIDITY (the folder was recreated or renumbered) or one that
//!   cannot be read: nothing, and the cursor at the folder's current end, so that old mail
//!   does not flood the recipe.
//! - More new messages than [`MAX_PER_POLL`] (or than [`MAX_POLL_BYTES`]): the oldest of
//!   them are returned and the cursor advances over those only; the next poll returns the
//!   rest. Nothing is skipped.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use mail_parser::{Address, MessageParser, MimeHeaders};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use enlace_core::trigger::{PollPage, PollingTrigger};
use enlace_core::{ActionContext, ConnectorError};

use crate::client::{Session, deadline_for, imap_credentials};

/// At most this many messages per poll.
pub const MAX_PER_POLL: usize = 50;
/// At most this many bytes of messages (their RFC822.SIZE) read per poll; at least one
/// message is always read.
pub const MAX_POLL_BYTES: u64 = 50 * 1024 * 1024;
/// A message larger than this is not downloaded: its headers are, and a note says so.
pub const MAX_MESSAGE_BYTES: u64 = 40 * 1024 * 1024;
/// The default of `max_attachment_bytes`.
pub const DEFAULT_ATTACHMENT_BYTES: u64 = 10 * 1024 * 1024;
/// The highest `max_attachment_bytes` accepted.
pub const MAX_ATTACHMENT_BYTES: u64 = 25 * 1024 * 1024;

fn inbox() -> String {
    "INBOX".into()
}

/// The `with` map of an `imap.new_email` trigger.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The folder to watch, as your mail program shows it: `INBOX` (the default),
    /// `Invoices`, `INBOX/Receipts`, `[Gmail]/All Mail`. Non-ASCII names (`Rechnungen/März`)
    /// work as written. A folder the server does not have fails with the list of those it has.
    #[serde(default = "inbox")]
    pub folder: String,
    /// Only messages with at least one attachment start a run (the others are passed over,
    /// and not looked at again). Default: false, every new message.
    #[serde(default)]
    pub only_with_attachments: bool,
    /// Only messages from this sender address start a run, like `invoices@supplier.example`
    /// (case does not matter; a name around it, `Supplier <invoices@supplier.example>`, is
    /// ignored).
    #[serde(default)]
    pub from: Option<String>,
    /// The largest attachment whose content is included (`content_base64`), in bytes.
    /// Larger ones are listed with `content_base64: null` and a `skipped` reason. Default
    /// 10485760 (10 MiB); at most 26214400 (25 MiB).
    #[serde(default)]
    pub max_attachment_bytes: Option<u64>,
}

/// A sender or recipient.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Person {
    /// The email address, like `ana@example.com`.
    pub address: String,
    /// The display name, like `Ana Lima`, when the message gives one.
    pub name: Option<String>,
}

/// A file attached to the message. `name`, `content_type` and `content_base64` are what
/// `smtp.send_email` (and other steps that take files) accept, so `trigger.attachments` can
/// be passed on as it is.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Attachment {
    /// The file name the sender gave, like `invoice-2026-04.pdf` (`attachment-N` when it gave
    /// none, `message-N.eml` for a forwarded message).
    pub name: String,
    /// The media type, like `application/pdf`.
    pub content_type: String,
    /// The size in bytes, decoded.
    pub size: u64,
    /// The file's bytes, base64-encoded; null when it was larger than `max_attachment_bytes`.
    pub content_base64: Option<String>,
    /// Why the content is not included (`larger than 10485760 bytes`); absent when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

/// One new message: what a recipe reads as `trigger`.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Email {
    /// The message's UID in the folder (unique there while `uid_validity` stays the same).
    pub uid: u32,
    /// The folder's UIDVALIDITY when the message was read.
    pub uid_validity: u32,
    /// The folder it was found in.
    pub folder: String,
    /// The `Message-ID` header, with its angle brackets, like `<CAF3x9@mail.example.com>`.
    pub message_id: Option<String>,
    /// The sender (the first address of `From`).
    pub from: Option<Person>,
    /// The `To` recipients.
    pub to: Vec<Person>,
    /// The `Cc` recipients.
    pub cc: Vec<Person>,
    /// Where the sender wants replies to go (`Reply-To`), when the message says.
    pub reply_to: Vec<Person>,
    /// The `Message-ID` this message answers (`In-Reply-To`), with its angle brackets.
    pub in_reply_to: Option<String>,
    /// The subject line, decoded (empty when there is none).
    pub subject: String,
    /// When it was sent (the `Date` header), RFC 3339, like `2026-04-02T09:14:05+02:00`.
    pub date: Option<String>,
    /// The plain-text body, with `\n` line ends; made from the HTML body when the message
    /// has no text part.
    pub text: Option<String>,
    /// The HTML body (`\n` line ends), when the message has one.
    pub html: Option<String>,
    /// The message's size in bytes, as the server counts it.
    pub size: u64,
    /// The attached files.
    pub attachments: Vec<Attachment>,
    /// Set when the message could not be read in full (too large, not valid MIME): what is
    /// missing. Absent for a normal message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// `imap.new_email`.
#[derive(Debug, Clone, Copy, Default)]
pub struct NewEmail;

/// A checked configuration.
struct Checked {
    folder: String,
    only_with_attachments: bool,
    from: Option<String>,
    max_attachment_bytes: u64,
}

fn check(config: Config) -> Result<Checked, ConnectorError> {
    let folder = config.folder.trim().to_string();
    if folder.is_empty() {
        return Err(ConnectorError::bad_input("folder", "is empty; give a folder name like `INBOX`"));
    }
    if folder.chars().any(char::is_control) {
        return Err(ConnectorError::bad_input("folder", "holds a line break or another control character"));
    }
    let from = match config.from.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(f) => {
            let address = match (f.rfind('<'), f.rfind('>')) {
                (Some(a), Some(b)) if a < b => f[a + 1..b].trim(),
                _ => f,
            };
            if !address.contains('@') || address.chars().any(|c| c.is_control() || c.is_whitespace() || c == '"' || c == '\\') {
                return Err(ConnectorError::bad_input(
                    "from",
                    format!("`{f}` is not an email address; write one like `invoices@supplier.example`"),
                ));
            }
            Some(address.to_lowercase())
        }
    };
    let max_attachment_bytes = config.max_attachment_bytes.unwrap_or(DEFAULT_ATTACHMENT_BYTES);
    if max_attachment_bytes > MAX_ATTACHMENT_BYTES {
        return Err(ConnectorError::bad_input(
            "max_attachment_bytes",
            format!("{max_attachment_bytes} is more than the {MAX_ATTACHMENT_BYTES} bytes (25 MiB) an item may carry"),
        ));
    }
    Ok(Checked { folder, only_with_attachments: config.only_with_attachments, from, max_attachment_bytes })
}

/// `<uidvalidity>:<uid>`, or `None` when the text is not one.
fn parse_cursor(cursor: &str) -> Option<(u32, u32)> {
    let (v, u) = cursor.trim().split_once(':')?;
    Some((v.parse().ok()?, u.parse().ok()?))
}

impl PollingTrigger for NewEmail {
    type Config = Config;
    type Item = Email;

    const ID: &'static str = "new_email";
    const NAME: &'static str = "New email in a folder";
    const DESCRIPTION: &'static str = "Starts a run for each new message in a folder of an IMAP mailbox (INBOX by default), with its sender, recipients, subject, text and HTML bodies and attachments. Optionally only messages with attachments, or from one sender. Mail is never marked as read.";

    fn sample() -> Email {
        Email {
            uid: 4127,
            uid_validity: 1711843200,
            folder: "INBOX".into(),
            message_id: Some("<CAF3x9kQ2m@mail.supplier.example>".into()),
            from: Some(Person { address: "invoices@supplier.example".into(), name: Some("Supplier Billing".into()) }),
            to: vec![Person { address: "accounts@example.com".into(), name: Some("Example Accounts".into()) }],
            cc: vec![],
            reply_to: vec![Person { address: "billing-help@supplier.example".into(), name: None }],
            in_reply_to: None,
            subject: "Invoice INV-2026-0412 for April".into(),
            date: Some("2026-04-02T09:14:05+02:00".into()),
            text: Some("Hello,\n\nplease find attached invoice INV-2026-0412, due on 2026-05-02.\n\nKind regards,\nSupplier Billing\n".into()),
            html: Some("<p>Hello,</p><p>please find attached invoice <b>INV-2026-0412</b>, due on 2026-05-02.</p><p>Kind regards,<br>Supplier Billing</p>".into()),
            size: 48213,
            attachments: vec![Attachment {
                name: "INV-2026-0412.pdf".into(),
                content_type: "application/pdf".into(),
                size: 9,
                content_base64: Some("JVBERi0xLjcK".into()),
                skipped: None,
            }],
            note: None,
        }
    }

    fn dedupe_key(item: &Email) -> String {
        format!("{}:{}", item.uid_validity, item.uid)
    }

    async fn poll(&self, ctx: &ActionContext, config: Config, cursor: Option<String>) -> Result<PollPage<Email>, ConnectorError> {
        let creds = imap_credentials(&ctx.credentials)?;
        let config = check(config)?;
        let mut session = Session::open(creds, ctx.http.allows_private_networks(), deadline_for(ctx.timeout)).await?;
        let result = poll_in(&mut session, &config, cursor.as_deref()).await;
        session.logout().await;
        result
    }
}

/// An IMAP quoted string.
fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

async fn poll_in(session: &mut Session, config: &Checked, cursor: Option<&str>) -> Result<PollPage<Email>, ConnectorError> {
    let folder = session.examine(&config.folder, "folder").await?;
    let validity = folder.uid_validity;
    let from_key = config.from.as_deref().map(|f| format!(" FROM {}", quoted(f))).unwrap_or_default();
    // The folder's end: every message in it has a lower UID than UIDNEXT.
    let end = match folder.uid_next {
        Some(next) => next.saturating_sub(1),
        None if folder.exists == 0 => 0,
        None => session.uid_search("ALL").await?.last().copied().unwrap_or(0),
    };
    let (taken, mut capped, last) = match cursor.map(parse_cursor) {
        Some(Some((v, last))) if v == validity => {
            let found: Vec<u32> = if folder.exists == 0 {
                vec![]
            } else {
                // `n:*` always includes the highest UID, even below n: filtered out here.
                session
                    .uid_search(&format!("UID {}:*{from_key}", last.saturating_add(1)))
                    .await?
                    .into_iter()
                    .filter(|u| *u > last)
                    .collect()
            };
            let capped = found.len() > MAX_PER_POLL;
            (found.into_iter().take(MAX_PER_POLL).collect::<Vec<_>>(), capped, last)
        }
        // Another UIDVALIDITY, or a cursor that is not ours: start again from the folder's
        // end, without returning its history.
        Some(_) => (vec![], false, end),
        None => {
            let found = if folder.exists == 0 { vec![] } else { session.uid_search(&format!("ALL{from_key}")).await? };
            let skip = found.len().saturating_sub(MAX_PER_POLL);
            (found.into_iter().skip(skip).collect(), false, 0)
        }
    };
    // How much there is to read: the oldest first, within the byte budget.
    let sizes = session.uid_fetch(&taken, "(UID RFC822.SIZE)").await?;
    let size_of = |uid: u32| sizes.iter().find(|f| f.uid == Some(uid)).and_then(|f| f.size).map(u64::from);
    let mut budget = 0u64;
    let mut whole = vec![];
    let mut headers_only = vec![];
    let mut read = vec![];
    for uid in taken {
        let Some(size) = size_of(uid) else { continue }; // expunged meanwhile
        let cost = if size > MAX_MESSAGE_BYTES { 0 } else { size };
        if !read.is_empty() && budget + cost > MAX_POLL_BYTES {
            capped = true;
            break;
        }
        budget += cost;
        read.push(uid);
        if size > MAX_MESSAGE_BYTES { headers_only.push(uid) } else { whole.push(uid) }
    }
    let mut fetched = session.uid_fetch(&whole, "(UID RFC822.SIZE BODY.PEEK[])").await?;
    fetched.extend(session.uid_fetch(&headers_only, "(UID RFC822.SIZE BODY.PEEK[HEADER])").await?);
    let mut items = vec![];
    for f in &fetched {
        let Some(uid) = f.uid else { continue };
        if !read.contains(&uid) {
            continue;
        }
        let size = f.size.map(u64::from).unwrap_or_default();
        let (raw, note) = match (f.body(), f.header()) {
            (Some(body), _) => (body, None),
            (None, Some(header)) => {
                (header, Some(format!("the message is larger than {MAX_MESSAGE_BYTES} bytes: only its headers were read")))
            }
            (None, None) => (&b""[..], Some("the server gave no content for this message".to_string())),
        };
        let email = read_email(uid, validity, &config.folder, size, raw, note, config.max_attachment_bytes);
        if let Some(from) = &config.from
            && email.from.as_ref().is_none_or(|p| p.address.to_lowercase() != *from)
        {
            continue;
        }
        if config.only_with_attachments && email.attachments.is_empty() {
            continue;
        }
        items.push(email);
    }
    items.sort_by_key(|e| std::cmp::Reverse(e.uid));
    items.dedup_by_key(|e| e.uid);
    // The cursor advances over what was looked at: everything up to the folder's end, or,
    // when a cap stopped the poll, up to the last message read.
    let high = if capped { read.last().copied().unwrap_or(last) } else { read.last().copied().unwrap_or(0).max(end).max(last) };
    Ok(PollPage { items, cursor: Some(format!("{validity}:{high}")) })
}

fn person(a: &mail_parser::Addr<'_>) -> Option<Person> {
    let address = a.address()?.trim().to_string();
    let name = a.name().map(str::trim).filter(|n| !n.is_empty() && *n != address).map(str::to_string);
    Some(Person { address, name })
}

fn people(a: Option<&Address<'_>>) -> Vec<Person> {
    a.map(|a| a.iter().filter_map(person).collect()).unwrap_or_default()
}

fn bracketed(id: &str) -> String {
    let id = id.trim();
    if id.starts_with('<') { id.to_string() } else { format!("<{id}>") }
}

/// The item of one message. A message that cannot be read as MIME gives its UID and size,
/// and a note.
pub fn read_email(
    uid: u32,
    uid_validity: u32,
    folder: &str,
    size: u64,
    raw: &[u8],
    note: Option<String>,
    max_attachment_bytes: u64,
) -> Email {
    let mut email = Email {
        uid,
        uid_validity,
        folder: folder.to_string(),
        message_id: None,
        from: None,
        to: vec![],
        cc: vec![],
        reply_to: vec![],
        in_reply_to: None,
        subject: String::new(),
        date: None,
        text: None,
        html: None,
        size,
        attachments: vec![],
        note,
    };
    let Some(message) = MessageParser::default().parse(raw) else {
        email.note = Some(email.note.unwrap_or_else(|| "the message could not be read as MIME: only its UID and size are given".into()));
        return email;
    };
    email.message_id = message.message_id().map(bracketed);
    email.from = message.from().and_then(|a| a.first()).and_then(person);
    email.to = people(message.to());
    email.cc = people(message.cc());
    email.reply_to = people(message.reply_to());
    let in_reply_to = message.in_reply_to();
    email.in_reply_to =
        in_reply_to.as_text().or_else(|| in_reply_to.as_text_list().and_then(|l| l.first().map(|s| s.as_ref()))).map(bracketed);
    email.subject = message.subject().unwrap_or_default().to_string();
    email.date = message.date().map(|d| d.to_rfc3339());
    if email.note.is_some() {
        // Headers only: no body to read.
        return email;
    }
    email.text = message.body_text(0).map(|t| t.replace("\r\n", "\n"));
    email.html = message.html_bodies().find(|p| p.is_text_html()).and_then(|p| p.text_contents()).map(|h| h.replace("\r\n", "\n"));
    for (i, part) in message.attachments().enumerate() {
        let content = part.contents();
        let name = part
            .attachment_name()
            .map(str::to_string)
            .unwrap_or_else(|| if part.is_message() { format!("message-{}.eml", i + 1) } else { format!("attachment-{}", i + 1) });
        let content_type = match part.content_type() {
            Some(ct) => match ct.subtype() {
                Some(sub) => format!("{}/{}", ct.ctype(), sub).to_lowercase(),
                None => ct.ctype().to_lowercase(),
            },
            None if part.is_message() => "message/rfc822".into(),
            None if part.is_text() => "text/plain".into(),
            None => "application/octet-stream".into(),
        };
        let size = content.len() as u64;
        let (content_base64, skipped) = if size > max_attachment_bytes {
            (None, Some(format!("larger than {max_attachment_bytes} bytes")))
        } else {
            (Some(STANDARD.encode(content)), None)
        };
        email.attachments.push(Attachment { name, content_type, size, content_base64, skipped });
    }
    email
}
