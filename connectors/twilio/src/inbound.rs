//! Twilio calls Enlace: `twilio.inbound_sms` (a message to one of your numbers) and
//! `twilio.status_callback` (a sent message's delivery status), both served on
//! `/hooks/{path}` and signed by Twilio with the account's Auth Token.
//!
//! Twilio's signature (`X-Twilio-Signature`) is base64(HMAC-SHA1(auth token, the URL Twilio
//! called, then every POST parameter's name and value, sorted by name)). It is checked in
//! constant time, against the URL as configured (`ENLACE_PUBLIC_URL`), without its port,
//! and with the scheme's default port, as Twilio's own libraries do. A request that fails
//! the check is refused (401) and stores nothing.
//!
//! An inbound SMS whose whole body is an opt-out keyword (STOP, STOPALL, UNSUBSCRIBE,
//! CANCEL, END, QUIT, OPTOUT, REVOKE) withdraws the sender's consent to marketing SMS in
//! the contact store, in the same request and before Twilio is answered: on every contact
//! whose phone is the sender's, and in the suppression list keyed by the number (so a
//! contact created later with it starts withdrawn). START, UNSTOP and YES grant it again.

use std::collections::BTreeMap;

use bytes::Bytes;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use base64::Engine as _;
use enlace_core::contacts::{ConsentStatus, ContactsError, Evidence, NewConsent, WriteContext};
use enlace_core::manifest::schema_of;
use enlace_core::{
    BoxFuture, ConnectorError, Credentials, InboundContext, InboundEvent, InboundReply, InboundRequest, InboundTrigger, TriggerKind,
    TriggerSpec,
};

/// The header carrying Twilio's signature.
pub const SIGNATURE_HEADER: &str = "x-twilio-signature";
/// The consent purpose an SMS opt-out withdraws.
pub const PURPOSE: &str = "marketing";
/// The evidence source of a consent recorded from an SMS reply.
pub const SOURCE: &str = "twilio_inbound_sms";
/// Whole-body keywords (any case, trimmed) that withdraw SMS consent: Twilio's standard
/// opt-out keywords.
pub const OPT_OUT: &[&str] = &["STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT", "REVOKE"];
/// Whole-body keywords that grant it again: Twilio's opt-in keywords.
pub const OPT_IN: &[&str] = &["START", "UNSTOP", "YES"];

/// The empty TwiML answer to an inbound message: Twilio sends no reply of its own.
pub const EMPTY_TWIML: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response/>";

/// Twilio's signature of a request: base64(HMAC-SHA1(`auth_token`, `url` followed by every
/// parameter's name and value, sorted by name, then by value for a repeated name)).
pub fn signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, auth_token.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(ring::hmac::sign(&key, &signed_data(url, params)).as_ref())
}

fn signed_data(url: &str, params: &[(String, String)]) -> Vec<u8> {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut data = url.as_bytes().to_vec();
    for (k, v) in sorted {
        data.extend_from_slice(k.as_bytes());
        data.extend_from_slice(v.as_bytes());
    }
    data
}

/// Whether `given` (the `X-Twilio-Signature` header) is Twilio's signature of the request.
/// The URL is tried as given, without its port, and with the scheme's default port (Twilio
/// may sign either); each comparison is constant-time.
pub fn verify(auth_token: &str, url: &str, params: &[(String, String)], given: &str) -> bool {
    let Ok(tag) = base64::engine::general_purpose::STANDARD.decode(given.trim()) else { return false };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, auth_token.as_bytes());
    let mut ok = false;
    for candidate in url_variants(url) {
        // No early exit: every variant is checked.
        ok |= ring::hmac::verify(&key, &signed_data(&candidate, params), &tag).is_ok();
    }
    ok
}

/// The URL as given, without its port, and with the scheme's default port.
fn url_variants(url: &str) -> Vec<String> {
    let mut out = vec![url.to_string()];
    let Some((scheme, rest)) = url.split_once("://") else { return out };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    // The port follows the last `:` after an IPv6 literal's `]`.
    let host_end = authority.rfind(']').map(|i| i + 1).unwrap_or(0);
    let (host, port) = match authority[host_end..].rfind(':') {
        Some(i) => (&authority[..host_end + i], Some(&authority[host_end + i + 1..])),
        None => (authority, None),
    };
    match port {
        Some(_) => out.push(format!("{scheme}://{host}{tail}")),
        None => match scheme.to_ascii_lowercase().as_str() {
            "https" => out.push(format!("{scheme}://{host}:443{tail}")),
            "http" => out.push(format!("{scheme}://{host}:80{tail}")),
            _ => {}
        },
    }
    out
}

/// What an inbound message's body says about consent: `Withdrawn` for an opt-out keyword,
/// `Granted` for an opt-in keyword (the whole body, trimmed, in any case), else `None`.
pub fn keyword_consent(body: &str) -> Option<ConsentStatus> {
    let b = body.trim().to_ascii_uppercase();
    if OPT_OUT.contains(&b.as_str()) {
        Some(ConsentStatus::Withdrawn)
    } else if OPT_IN.contains(&b.as_str()) {
        Some(ConsentStatus::Granted)
    } else {
        None
    }
}

/// The `with` of `twilio.inbound_sms` and `twilio.status_callback`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct HookConfig {
    /// The hook's path: give Twilio the address `https://<your Enlace>/hooks/{path}` (for an
    /// inbound SMS: the phone number's or Messaging Service's "A message comes in" webhook,
    /// HTTP POST; for delivery status: the `StatusCallback` of the messages you send).
    /// Letters, digits, `-`, `_`, `.` and `/`. Defaults to the recipe's id.
    pub path: Option<String>,
}

/// What a recipe reads as `trigger` for `twilio.inbound_sms`: Twilio's parameters under
/// their own names, plus `received_at` (and `opt_out` for a keyword message).
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct InboundSms {
    /// The sender's phone number in E.164 (`+14155552671`); `whatsapp:+1...` for WhatsApp.
    #[serde(rename = "From")]
    pub from: String,
    /// Your Twilio number that received the message, in E.164.
    #[serde(rename = "To")]
    pub to: String,
    /// The text of the message (up to 1600 characters).
    #[serde(rename = "Body")]
    pub body: String,
    /// The message's SID (`SM...`, or `MM...` with media): unique per message.
    #[serde(rename = "MessageSid")]
    pub message_sid: String,
    /// Your Account SID (`AC...`).
    #[serde(rename = "AccountSid")]
    pub account_sid: String,
    /// How many media files came with the message (`"0"` for a plain SMS); each is at
    /// `MediaUrl0`, `MediaUrl1`, ... with its type in `MediaContentType0`, ...
    #[serde(rename = "NumMedia")]
    pub num_media: String,
    /// Every other parameter Twilio sent, under its own name (`MediaUrl0`,
    /// `MediaContentType0`, `NumSegments`, `MessagingServiceSid`, `FromCity`, `FromCountry`,
    /// `OptOutType`, ...).
    #[serde(flatten)]
    pub other: BTreeMap<String, String>,
    /// When Enlace received it (RFC 3339, UTC).
    pub received_at: String,
    /// Present when the whole body was an opt-out or opt-in keyword: what Enlace recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opt_out: Option<OptOut>,
}

/// The consent an SMS keyword recorded.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct OptOut {
    /// The keyword, uppercase (`STOP`, `START`, ...), or Twilio's `OptOutType` when a keyword
    /// of your Messaging Service's own opt-out management matched.
    pub keyword: String,
    /// `withdrawn` (an opt-out) or `granted` (an opt-in), for purpose `marketing` on channel
    /// `sms` (`whatsapp` for WhatsApp messages).
    pub status: ConsentStatus,
    /// The ids of the contacts whose phone is the sender's, each with the decision recorded
    /// (none: the number is only on the suppression list).
    pub contacts: Vec<String>,
}

/// What a recipe reads as `trigger` for `twilio.status_callback`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct StatusCallback {
    /// The message's SID (`SM...`), as `twilio.send_sms` gave it (`steps.<id>.sid`).
    #[serde(rename = "MessageSid")]
    pub message_sid: String,
    /// The new status: `queued`, `sending`, `sent`, `delivered`, `undelivered`, `failed`,
    /// `accepted`, `scheduled`, `read`, `canceled`, `partially_delivered`.
    #[serde(rename = "MessageStatus")]
    pub message_status: String,
    /// For `undelivered` and `failed`: Twilio's error code (`30003`: unreachable handset,
    /// `30006`: landline or unreachable carrier, `30007`: filtered as spam, ...); see
    /// twilio.com/docs/api/errors.
    #[serde(rename = "ErrorCode", skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// The recipient, in E.164.
    #[serde(rename = "To")]
    pub to: String,
    /// The sender (your number or sender ID).
    #[serde(rename = "From", skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Your Account SID (`AC...`).
    #[serde(rename = "AccountSid")]
    pub account_sid: String,
    /// Every other parameter Twilio sent, under its own name (`SmsStatus`, `ErrorMessage`,
    /// `MessagingServiceSid`, `RawDlrDoneDate`, `ApiVersion`, ...).
    #[serde(flatten)]
    pub other: BTreeMap<String, String>,
    /// When Enlace received it (RFC 3339, UTC).
    pub received_at: String,
}

fn inbound_sms_sample() -> InboundSms {
    let mut other = BTreeMap::new();
    other.insert("NumSegments".into(), "1".into());
    other.insert("FromCountry".into(), "US".into());
    other.insert("SmsStatus".into(), "received".into());
    other.insert("ApiVersion".into(), "2010-04-01".into());
    InboundSms {
        from: "+14155552671".into(),
        to: "+14155550100".into(),
        body: "Yes, see you on Thursday!".into(),
        message_sid: "SM1f0e8ae6ade43cb3c0ce4525424e404f".into(),
        account_sid: "AC0123456789abcdef0123456789abcdef".into(),
        num_media: "0".into(),
        other,
        received_at: "2026-04-14T09:31:02.120Z".into(),
        opt_out: None,
    }
}

fn status_sample() -> StatusCallback {
    let mut other = BTreeMap::new();
    other.insert("SmsStatus".into(), "undelivered".into());
    other.insert("ApiVersion".into(), "2010-04-01".into());
    StatusCallback {
        message_sid: "SM1f0e8ae6ade43cb3c0ce4525424e404f".into(),
        message_status: "undelivered".into(),
        error_code: Some("30003".into()),
        to: "+14155552671".into(),
        from: Some("+14155550100".into()),
        account_sid: "AC0123456789abcdef0123456789abcdef".into(),
        other,
        received_at: "2026-04-14T09:30:07.512Z".into(),
    }
}

/// Which of the two triggers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    InboundSms,
    Status,
}

/// `twilio.inbound_sms` or `twilio.status_callback`.
pub struct TwilioHook {
    kind: Kind,
    spec: TriggerSpec,
}

impl TwilioHook {
    /// `twilio.inbound_sms`.
    pub fn inbound_sms() -> Self {
        TwilioHook {
            kind: Kind::InboundSms,
            spec: TriggerSpec {
                id: "inbound_sms".into(),
                name: "Inbound SMS".into(),
                description: "Starts the recipe for every SMS or MMS sent to your Twilio number (Twilio's signature checked, each message once). A whole-body STOP (or another opt-out keyword) withdraws the sender's SMS consent first; START, UNSTOP or YES grants it again.".into(),
                kind: TriggerKind::Webhook,
                config_schema: schema_of::<HookConfig>(),
                output_schema: schema_of::<InboundSms>(),
                sample: serde_json::to_value(inbound_sms_sample()).unwrap_or(Value::Null),
            },
        }
    }

    /// `twilio.status_callback`.
    pub fn status_callback() -> Self {
        TwilioHook {
            kind: Kind::Status,
            spec: TriggerSpec {
                id: "status_callback".into(),
                name: "SMS delivery status".into(),
                description: "Starts the recipe for every delivery status Twilio reports for a message you sent (queued, sent, delivered, undelivered, failed with its ErrorCode): Twilio's signature checked, each status of a message once.".into(),
                kind: TriggerKind::Webhook,
                config_schema: schema_of::<HookConfig>(),
                output_schema: schema_of::<StatusCallback>(),
                sample: serde_json::to_value(status_sample()).unwrap_or(Value::Null),
            },
        }
    }
}

impl InboundTrigger for TwilioHook {
    fn spec(&self) -> &TriggerSpec {
        &self.spec
    }

    fn receive<'a>(&'a self, ctx: &'a InboundContext, req: &'a InboundRequest) -> BoxFuture<'a, Result<InboundEvent, ConnectorError>> {
        Box::pin(async move {
            let params = checked_params(ctx, req)?;
            match self.kind {
                Kind::InboundSms => inbound_sms(ctx, req, params).await,
                Kind::Status => status(req, params),
            }
        })
    }
}

/// The form parameters of a request whose signature is Twilio's.
fn checked_params(ctx: &InboundContext, req: &InboundRequest) -> Result<Vec<(String, String)>, ConnectorError> {
    let token = match &ctx.credentials {
        Credentials::Basic { password, .. } => password.expose().to_string(),
        _ => {
            return Err(ConnectorError::auth(
                "the trigger's connection must be a Twilio connection (basic: the Account SID and the Auth Token), whose Auth Token checks Twilio's signature",
            ));
        }
    };
    let Some(given) = req.headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok()).filter(|v| !v.trim().is_empty()) else {
        return Err(ConnectorError::auth("the X-Twilio-Signature header is missing: only Twilio may call this hook"));
    };
    let content_type = req.headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase();
    if !content_type.starts_with("application/x-www-form-urlencoded") {
        return Err(ConnectorError::bad_input(
            "content-type",
            format!("Twilio sends its webhooks form-encoded (application/x-www-form-urlencoded), not `{content_type}`"),
        ));
    }
    let params: Vec<(String, String)> = form_urlencoded::parse(&req.body).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    if !verify(&token, &req.url, &params, given) {
        return Err(ConnectorError::auth(
            "the X-Twilio-Signature does not match this request: the trigger's connection must hold the Auth Token of the account that sends it, and Twilio must call the address Enlace is configured with (ENLACE_PUBLIC_URL)",
        ));
    }
    Ok(params)
}

fn field_map(params: Vec<(String, String)>) -> BTreeMap<String, String> {
    params.into_iter().collect()
}

fn take(map: &mut BTreeMap<String, String>, name: &str) -> Result<String, ConnectorError> {
    map.remove(name)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ConnectorError::bad_input(name, format!("Twilio's `{name}` parameter is missing")))
}

fn received_at(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

async fn inbound_sms(ctx: &InboundContext, req: &InboundRequest, params: Vec<(String, String)>) -> Result<InboundEvent, ConnectorError> {
    let mut map = field_map(params);
    let message_sid = take(&mut map, "MessageSid")?;
    let from = take(&mut map, "From")?;
    let body = map.remove("Body").unwrap_or_default();
    let at = received_at(req.received_at);
    // Twilio's own opt-out management names the kind of keyword it matched.
    let by_type = match map.get("OptOutType").map(|t| t.to_ascii_uppercase()).as_deref() {
        Some("STOP") => Some(ConsentStatus::Withdrawn),
        Some("START") => Some(ConsentStatus::Granted),
        _ => None,
    };
    let opt_out = match keyword_consent(&body).or(by_type) {
        None => None,
        Some(status) => {
            let keyword = if keyword_consent(&body).is_some() {
                body.trim().to_ascii_uppercase()
            } else {
                map.get("OptOutType").cloned().unwrap_or_default().to_ascii_uppercase()
            };
            let contacts = record_consent(ctx, &from, status, &message_sid, &body, &at, req.received_at).await?;
            Some(OptOut { keyword, status, contacts })
        }
    };
    let event = InboundSms {
        to: map.remove("To").unwrap_or_default(),
        account_sid: map.remove("AccountSid").unwrap_or_default(),
        num_media: map.remove("NumMedia").unwrap_or_else(|| "0".into()),
        from,
        body,
        message_sid: message_sid.clone(),
        other: map,
        received_at: at,
        opt_out,
    };
    Ok(InboundEvent {
        event: to_value(&event)?,
        dedupe_key: Some(format!("twilio:sms:{message_sid}")),
        reply: InboundReply { status: 200, content_type: Some("text/xml"), body: Bytes::from_static(EMPTY_TWIML.as_bytes()) },
    })
}

/// Records the sender's decision in the contact store (its contacts and the suppression
/// list). The message's SID makes a retried delivery record nothing twice.
async fn record_consent(
    ctx: &InboundContext,
    from: &str,
    status: ConsentStatus,
    message_sid: &str,
    body: &str,
    at: &str,
    at_ms: i64,
) -> Result<Vec<String>, ConnectorError> {
    let Some(contacts) = &ctx.extensions.contacts else {
        return Err(ConnectorError::transient("the contact store is not available, so the opt-out cannot be recorded; Twilio may retry"));
    };
    let (channel, phone) = match from.strip_prefix("whatsapp:") {
        Some(p) => ("whatsapp", p),
        None => ("sms", from),
    };
    let mut details = Map::new();
    details.insert("message_sid".into(), json!(message_sid));
    details.insert("body".into(), json!(body));
    details.insert("at".into(), json!(at));
    let consent = NewConsent {
        purpose: PURPOSE.into(),
        channel: channel.into(),
        status,
        evidence: Evidence { source: SOURCE.into(), ip: None, text: Some(body.to_string()), recorded_at: at_ms, run_id: None, details },
    };
    let w = WriteContext { op_key: Some(format!("twilio:{message_sid}")), run_id: None };
    match contacts.record_phone_consent(w, phone.to_string(), consent).await {
        Ok(out) => Ok(out.contacts),
        Err(ContactsError::Invalid(m)) => Err(ConnectorError::bad_input("From", m)),
        Err(e) => Err(ConnectorError::transient(format!("recording the opt-out failed: {e}; Twilio may retry"))),
    }
}

fn status(req: &InboundRequest, params: Vec<(String, String)>) -> Result<InboundEvent, ConnectorError> {
    let mut map = field_map(params);
    let message_sid = take(&mut map, "MessageSid")?;
    let message_status = take(&mut map, "MessageStatus")?;
    let event = StatusCallback {
        message_sid: message_sid.clone(),
        message_status: message_status.clone(),
        error_code: map.remove("ErrorCode").filter(|c| !c.is_empty()),
        to: map.remove("To").unwrap_or_default(),
        from: map.remove("From"),
        account_sid: map.remove("AccountSid").unwrap_or_default(),
        other: map,
        received_at: received_at(req.received_at),
    };
    Ok(InboundEvent {
        event: to_value(&event)?,
        dedupe_key: Some(format!("twilio:status:{message_sid}:{message_status}")),
        reply: InboundReply { status: 204, content_type: None, body: Bytes::new() },
    })
}

fn to_value<T: Serialize>(v: &T) -> Result<Value, ConnectorError> {
    serde_json::to_value(v).map_err(|e| ConnectorError::permanent(format!("the event could not be encoded: {e}")))
}
