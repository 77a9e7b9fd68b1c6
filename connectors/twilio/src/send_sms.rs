//! `twilio.send_sms`: one message through `POST /2010-04-01/Accounts/{AccountSid}/Messages.json`.

use std::sync::Arc;

use bytes::Bytes;
use http::HeaderValue;
use http::header::CONTENT_TYPE;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use enlace_core::contacts::ConsentStatus;
use enlace_core::http::{HttpRequest, HttpResponse, Method};
use enlace_core::{Action, ActionContext, ConnectionContext, ConnectionTest, ConnectorError, Credentials, Idempotency};

/// The most characters Twilio takes in a message body.
pub const MAX_BODY_CHARS: usize = 1600;
/// The most media files in one message.
pub const MAX_MEDIA: usize = 10;

/// One address or several.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum MediaUrls {
    One(String),
    Many(Vec<String>),
}

impl MediaUrls {
    fn list(&self) -> Vec<&str> {
        match self {
            MediaUrls::One(u) => vec![u.as_str()],
            MediaUrls::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

/// The `with` map of a `twilio.send_sms` step.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// The recipient's phone number in E.164 form: a plus sign, the country code and the
    /// number, digits only, like `+14155552671` (the template helper `e164` turns local
    /// numbers into this form).
    pub to: String,
    /// The sender: one of your Twilio phone numbers in E.164 form (`+14155550100`), or an
    /// alphanumeric sender ID (`ACME`, 1 to 11 letters, digits and spaces, where the
    /// destination country allows one). Give `from` or `messaging_service_sid`, not both.
    #[serde(default)]
    pub from: Option<String>,
    /// The SID of a Messaging Service to send from (`MG` and 32 hexadecimal characters,
    /// in the Twilio Console under Messaging > Services): Twilio picks the sender from its
    /// pool. Give `from` or `messaging_service_sid`, not both.
    #[serde(default)]
    pub messaging_service_sid: Option<String>,
    /// The text of the message, at most 1600 characters (longer texts are split into
    /// segments by Twilio and billed per segment). Give `body`, `media_url` or both.
    #[serde(default)]
    pub body: Option<String>,
    /// Images or other media to send as an MMS: a public https address, or a list of up to
    /// 10. Give `body`, `media_url` or both.
    #[serde(default)]
    pub media_url: Option<MediaUrls>,
}

/// The message Twilio created.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Output {
    /// The message's SID (`SM...` for SMS, `MM...` for MMS), to look it up in the Twilio
    /// Console or match delivery status callbacks.
    pub sid: String,
    /// Twilio's status of the message: usually `queued` (or `accepted` with a Messaging
    /// Service) right after sending; it moves on to `sent` and `delivered` later.
    pub status: String,
    /// The recipient, in E.164 form.
    pub to: String,
    /// The sender. Absent while a Messaging Service has not picked one yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// When Twilio created the message, in RFC 3339 (`2026-04-14T09:30:00+00:00`).
    pub date_created: String,
}

/// `twilio.send_sms`.
#[derive(Debug, Clone)]
pub struct SendSms {
    api_base: Arc<str>,
}

impl SendSms {
    /// The action against the REST API at `api_base` (`https://api.twilio.com`).
    pub fn new(api_base: &str) -> Self {
        SendSms { api_base: Arc::from(api_base.trim_end_matches('/')) }
    }
}

impl Action for SendSms {
    type Input = Input;
    type Output = Output;

    const ID: &'static str = "send_sms";
    const NAME: &'static str = "Send an SMS";
    const DESCRIPTION: &'static str =
        "Sends a text message (SMS, or MMS with media) to a phone number, from one of your Twilio numbers or a Messaging Service.";
    // Twilio takes no idempotency key for messages: a request sent twice sends two messages.
    const IDEMPOTENCY: Idempotency = Idempotency::None;

    /// Every recipient is a person the send policy decides about.
    fn reaches() -> Option<enlace_core::policy::Reach> {
        use enlace_core::policy::{Reach, RecipientKind};
        Some(Reach::new("sms", RecipientKind::Phone, &["to"]))
    }

    fn sample() -> Output {
        Output {
            sid: "SM1f0e8ae6ade43cb3c0ce4525424e404f".into(),
            status: "queued".into(),
            to: "+14155552671".into(),
            from: Some("+14155550100".into()),
            date_created: "2026-04-14T09:30:00+00:00".into(),
        }
    }

    async fn call(&self, ctx: &ActionContext, input: Input) -> Result<Output, ConnectorError> {
        let mut request = build_request(&self.api_base, &input, &ctx.credentials)?;
        check_consent(ctx, &e164("to", &input.to)?).await?;
        if !ctx.timeout.is_zero() {
            request.timeout = Some(ctx.timeout);
        }
        let resp = ctx.http.send(request).await.map_err(|e| enlace_kit::transport_error(e, false))?;
        output_of(resp)
    }
}

/// Refuses a recipient whose latest decision about marketing SMS is a withdrawal (they
/// replied STOP, or a withdrawal was recorded on their contact): a Permanent error naming
/// the consent, before anything is sent. Without a contact store (a connector's unit test)
/// there is nothing to check; a store that cannot answer is a transient failure (nothing
/// is sent while consent is unknown).
async fn check_consent(ctx: &ActionContext, to: &str) -> Result<(), ConnectorError> {
    let Some(contacts) = &ctx.extensions.contacts else { return Ok(()) };
    let decision = contacts.phone_consent(to.to_string(), crate::inbound::PURPOSE.into(), "sms".into()).await.map_err(|e| {
        ConnectorError::transient(format!("the SMS consent of {to} could not be read ({e}); nothing was sent, the step is retried"))
    })?;
    let Some(d) = decision.filter(|d| d.status == ConsentStatus::Withdrawn) else { return Ok(()) };
    let when =
        chrono::DateTime::from_timestamp_millis(d.at).map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)).unwrap_or_default();
    let how = match (d.evidence.source.as_str(), d.evidence.details.get("message_sid").and_then(Value::as_str)) {
        (crate::inbound::SOURCE, Some(sid)) => format!(
            "they replied `{}` by SMS (message {sid})",
            d.evidence.details.get("body").and_then(Value::as_str).unwrap_or("STOP").trim()
        ),
        (source, _) => format!("recorded by `{source}`"),
    };
    let whose = match &d.contact_id {
        Some(id) => format!("on the contact `{id}`"),
        None => "on the suppression list".to_string(),
    };
    Err(ConnectorError::Permanent {
        message: format!(
            "{to} withdrew consent to SMS (consent `{}` on channel `sms`: withdrawn at {when}, {how}, {whose}); Enlace sends no SMS to a number that opted out. It takes texts again after it replies START, or after a newer consent is recorded",
            crate::inbound::PURPOSE
        ),
        status: None,
    })
}

/// Checks the input and the connection and builds the request. A problem with the input
/// is [`ConnectorError::BadInput`] naming the field; a connection whose username is not an
/// Account SID is [`ConnectorError::Auth`].
pub fn build_request(api_base: &str, input: &Input, credentials: &Credentials) -> Result<HttpRequest, ConnectorError> {
    let to = e164("to", &input.to)?;
    let from = match (input.from.as_deref().map(str::trim), input.messaging_service_sid.as_deref().map(str::trim)) {
        (Some(_), Some(_)) => {
            return Err(ConnectorError::bad_input(
                "from",
                "give `from` or `messaging_service_sid`, not both: with a Messaging Service, Twilio picks the sender",
            ));
        }
        (None, None) | (Some(""), None) | (None, Some("")) => {
            return Err(ConnectorError::bad_input(
                "from",
                "give the sender: `from` (one of your Twilio numbers, like +14155550100) or `messaging_service_sid` (MG...)",
            ));
        }
        (Some(f), None) => ("From", sender(f)?),
        (None, Some(mg)) => {
            if !is_sid(mg, "MG") {
                return Err(ConnectorError::bad_input(
                    "messaging_service_sid",
                    format!("`{mg}` is not a Messaging Service SID: MG followed by 32 hexadecimal characters"),
                ));
            }
            ("MessagingServiceSid", mg.to_string())
        }
    };
    let body = input.body.as_deref().filter(|b| !b.trim().is_empty());
    let media = input.media_url.as_ref().map(MediaUrls::list).unwrap_or_default();
    if body.is_none() && media.is_empty() {
        return Err(ConnectorError::bad_input("body", "give the message's `body`, `media_url`, or both"));
    }
    if let Some(b) = body {
        let n = b.chars().count();
        if n > MAX_BODY_CHARS {
            return Err(ConnectorError::bad_input("body", format!("is {n} characters long; Twilio takes at most {MAX_BODY_CHARS}")));
        }
    }
    if media.len() > MAX_MEDIA {
        return Err(ConnectorError::bad_input("media_url", format!("has {} addresses; Twilio takes at most {MAX_MEDIA}", media.len())));
    }
    for (i, url) in media.iter().enumerate() {
        let ok = enlace_kit::Url::parse(url.trim()).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some());
        if !ok {
            let path = if matches!(input.media_url, Some(MediaUrls::Many(_))) { format!("media_url[{i}]") } else { "media_url".into() };
            return Err(ConnectorError::bad_input(path, format!("`{url}` is not a public http or https address Twilio can fetch")));
        }
    }

    let account_sid = account_sid(credentials)?;

    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("To", &to);
    form.append_pair(from.0, &from.1);
    if let Some(b) = body {
        form.append_pair("Body", b);
    }
    // Repeated, as Twilio documents it (one `MediaUrl` per file).
    for url in &media {
        form.append_pair("MediaUrl", url.trim());
    }
    let mut request = HttpRequest::new(Method::POST, format!("{api_base}/2010-04-01/Accounts/{account_sid}/Messages.json"));
    request.headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/x-www-form-urlencoded"));
    request.body = Bytes::from(form.finish());
    enlace_kit::apply_credentials(&mut request, credentials)?;
    Ok(request)
}

/// The Account SID: the username of the connection.
fn account_sid(credentials: &Credentials) -> Result<String, ConnectorError> {
    match credentials {
        Credentials::Basic { username, .. } if is_sid(username.trim(), "AC") => Ok(username.trim().to_string()),
        Credentials::Basic { .. } => Err(ConnectorError::auth(
            "the connection's username must be your Twilio Account SID (AC followed by 32 hexadecimal characters, on the Twilio Console's home page) and its password the Auth Token; repair the connection",
        )),
        _ => Err(ConnectorError::auth(
            "this step needs a Twilio connection: a basic connection with the Account SID as username and the Auth Token as password",
        )),
    }
}

/// A phone number checked and written in E.164.
fn e164(field: &str, raw: &str) -> Result<String, ConnectorError> {
    let s = raw.trim();
    let expected = "a phone number in E.164 form: a plus sign, the country code and the number, digits only, like +14155552671";
    if !s.starts_with('+') {
        return Err(ConnectorError::bad_input(field, format!("`{raw}` is not {expected} (the country code is missing)")));
    }
    match phonenumber::parse(None, s) {
        Ok(n) if phonenumber::is_valid(&n) => Ok(n.format().mode(phonenumber::Mode::E164).to_string()),
        _ => Err(ConnectorError::bad_input(field, format!("`{raw}` is not {expected}"))),
    }
}

/// `from`: an E.164 number or an alphanumeric sender ID.
fn sender(s: &str) -> Result<String, ConnectorError> {
    if s.starts_with('+') || s.starts_with(|c: char| c.is_ascii_digit()) && s.chars().all(|c| c.is_ascii_digit() || c == ' ') {
        return e164("from", s);
    }
    let alnum =
        s.chars().count() <= 11 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == ' ') && s.chars().any(|c| c.is_ascii_alphabetic());
    if alnum {
        Ok(s.to_string())
    } else {
        Err(ConnectorError::bad_input(
            "from",
            format!(
                "`{s}` is neither a phone number in E.164 form (like +14155550100) nor an alphanumeric sender ID (1 to 11 letters, digits and spaces)"
            ),
        ))
    }
}

/// A Twilio SID: a two-letter prefix and 32 hexadecimal characters.
fn is_sid(s: &str, prefix: &str) -> bool {
    s.len() == 34 && s.starts_with(prefix) && s[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// The step's output from Twilio's answer, or the error it reports.
pub fn output_of(resp: HttpResponse) -> Result<Output, ConnectorError> {
    if resp.status.as_u16() >= 400 {
        return Err(twilio_error(resp));
    }
    let status = resp.status.as_u16();
    let Some(body) = enlace_kit::json_body(&resp).filter(Value::is_object) else {
        return Err(ConnectorError::MaybeDelivered {
            message: format!(
                "Twilio answered HTTP {status} with a body that is not a JSON object ({}); the message may have been sent: check the Twilio Console's messaging logs before replaying",
                enlace_kit::vendor_message(&resp).unwrap_or_else(|| "empty".into())
            ),
        });
    };
    let text = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_string);
    let (Some(sid), Some(msg_status), Some(to)) = (text("sid"), text("status"), text("to")) else {
        return Err(ConnectorError::MaybeDelivered {
            message: format!(
                "Twilio answered HTTP {status} without the message's `sid`, `status` and `to`; the message may have been sent: check the Twilio Console's messaging logs before replaying"
            ),
        });
    };
    let date_created =
        text("date_created").map(|d| chrono::DateTime::parse_from_rfc2822(&d).map(|t| t.to_rfc3339()).unwrap_or(d)).unwrap_or_default();
    Ok(Output { sid, status: msg_status, to, from: text("from"), date_created })
}

/// Twilio's error answer (`{"code": 21211, "message": "...", "more_info": "...", "status": 400}`)
/// classified: the codes that point at a field of the step name it.
fn twilio_error(resp: HttpResponse) -> ConnectorError {
    let body = enlace_kit::json_body(&resp).unwrap_or(Value::Null);
    let code = body.get("code").and_then(Value::as_u64);
    let message = body.get("message").and_then(Value::as_str).unwrap_or("").trim().to_string();
    let more = body.get("more_info").and_then(Value::as_str).map(|m| format!(" ({m})")).unwrap_or_default();
    let status = resp.status.as_u16();
    let said = |c: u64| format!("Twilio error {c}: {message}{more}");
    if let Some(c) = code {
        match c {
            20003 => return ConnectorError::auth(format!("{}; check the connection's Account SID and Auth Token", said(c))),
            20429 => return ConnectorError::RateLimited { retry_after: enlace_kit::retry_after(&resp.headers), message: said(c) },
            _ => {}
        }
        if (400..500).contains(&status) && !matches!(status, 401 | 403 | 429) {
            let field = match c {
                21211 | 21214 | 21407 | 21408 | 21610 | 21612 | 21614 => Some("to"),
                21212 | 21606 | 21659 | 21660 | 21661 => Some("from"),
                21602 | 21617 | 21619 => Some("body"),
                21620 | 21623 => Some("media_url"),
                21701..=21705 => Some("messaging_service_sid"),
                _ => None,
            };
            if let Some(field) = field {
                return ConnectorError::bad_input(field, said(c));
            }
        }
    }
    match enlace_kit::classify(resp) {
        Err(ConnectorError::Permanent { message: m, status }) if code.is_some() => {
            ConnectorError::Permanent { message: format!("{m} (Twilio error {}){more}", code.unwrap_or_default()), status }
        }
        Err(e) => e,
        // Not reached: only statuses of 400 and up come here.
        Ok(_) => ConnectorError::permanent(format!("Twilio answered HTTP {status}")),
    }
}

/// The connection test: fetches the account (`GET /2010-04-01/Accounts/{AccountSid}.json`),
/// which needs the Account SID and the Auth Token and changes nothing. The answer carries
/// the account's own token: only its name and status are read.
#[derive(Debug, Clone)]
pub struct FetchAccount {
    api_base: Arc<str>,
}

impl FetchAccount {
    /// The test against the REST API at `api_base` (`https://api.twilio.com`).
    pub fn new(api_base: &str) -> Self {
        FetchAccount { api_base: Arc::from(api_base.trim_end_matches('/')) }
    }
}

impl ConnectionTest for FetchAccount {
    async fn test(&self, ctx: &ConnectionContext) -> Result<String, ConnectorError> {
        let account_sid = account_sid(&ctx.credentials)?;
        let mut request = HttpRequest::new(Method::GET, format!("{}/2010-04-01/Accounts/{account_sid}.json", self.api_base));
        if !ctx.timeout.is_zero() {
            request.timeout = Some(ctx.timeout);
        }
        enlace_kit::apply_credentials(&mut request, &ctx.credentials)?;
        let resp = ctx.http.send(request).await.map_err(|e| enlace_kit::transport_error(e, true))?;
        if resp.status.as_u16() >= 400 {
            return Err(twilio_error(resp));
        }
        let body = enlace_kit::json_body(&resp).filter(Value::is_object).ok_or_else(|| {
            ConnectorError::permanent(format!("Twilio answered HTTP {} with a body that is not a JSON object", resp.status.as_u16()))
        })?;
        let field = |k: &str| body.get(k).and_then(Value::as_str).unwrap_or("?").to_string();
        Ok(format!("the Account SID and Auth Token work: account `{}` ({})", field("friendly_name"), field("status")))
    }
}
