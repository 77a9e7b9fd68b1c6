//! `slack.post_message`: one message through `chat.postMessage`.

use std::sync::Arc;

use bytes::Bytes;
use http::HeaderValue;
use http::header::CONTENT_TYPE;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use enlace_core::http::{HttpRequest, HttpResponse, Method};
use enlace_core::{Action, ActionContext, ConnectionContext, ConnectionTest, ConnectorError, Credentials, Idempotency};

/// The most characters Slack takes in `text`.
pub const MAX_TEXT_CHARS: usize = 40_000;
/// The most blocks in one message.
pub const MAX_BLOCKS: usize = 50;

/// The `with` map of a `slack.post_message` step.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// Where to post: a channel ID (`C0123456789`, from the channel's details in Slack), a
    /// channel name (`#marketing`), or a user ID (`U0123456789`) for a direct message from
    /// the app. The app must be a member of a private channel.
    pub channel: String,
    /// The message text, with Slack's formatting (`*bold*`, `<https://example.com|a link>`,
    /// `<@U0123456789>` to mention someone). Required without `blocks`; with `blocks`, it is
    /// the text of notifications and screen readers. At most 40000 characters.
    #[serde(default)]
    pub text: Option<String>,
    /// Block Kit blocks: a list of block objects such as
    /// `{"type": "section", "text": {"type": "mrkdwn", "text": "Hi *Ana*"}}` (design them in
    /// Slack's Block Kit Builder). At most 50.
    #[serde(default)]
    pub blocks: Option<Vec<Value>>,
    /// Reply in a thread: the `ts` of the thread's first message (`1712345678.123456`),
    /// for example the output `ts` of an earlier `slack.post_message` step.
    #[serde(default)]
    pub thread_ts: Option<String>,
    /// With `thread_ts`: also show the reply in the channel. Defaults to false.
    #[serde(default)]
    pub reply_broadcast: Option<bool>,
    /// Show previews of links to text pages. Slack's default applies when left out.
    #[serde(default)]
    pub unfurl_links: Option<bool>,
    /// Show previews of links to images and videos. Slack's default (true) applies when
    /// left out.
    #[serde(default)]
    pub unfurl_media: Option<bool>,
}

/// The posted message.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Output {
    /// The ID of the channel the message is in (`C0123456789`), also when a name was given.
    pub channel: String,
    /// The message's timestamp, its ID in the channel (`1712345678.123456`): give it as
    /// `thread_ts` to reply in its thread.
    pub ts: String,
    /// The thread the message was posted in, when it is a reply.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thread_ts: Option<String>,
    /// The text of the posted message as Slack stored it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// `slack.post_message`.
#[derive(Debug, Clone)]
pub struct PostMessage {
    api_base: Arc<str>,
}

impl PostMessage {
    /// The action against the Web API at `api_base` (`https://slack.com/api`).
    pub fn new(api_base: &str) -> Self {
        PostMessage { api_base: Arc::from(api_base.trim_end_matches('/')) }
    }
}

impl Action for PostMessage {
    type Input = Input;
    type Output = Output;

    const ID: &'static str = "post_message";
    const NAME: &'static str = "Post a message";
    const DESCRIPTION: &'static str =
        "Posts a message to a channel, a direct message or a thread, as text or Block Kit blocks, and returns its channel and timestamp.";
    // Slack has no idempotency key for chat.postMessage: a message posted twice shows twice.
    const IDEMPOTENCY: Idempotency = Idempotency::None;

    fn sample() -> Output {
        Output {
            channel: "C0123456789".into(),
            ts: "1776159000.123456".into(),
            thread_ts: None,
            text: Some("New signup: Ana María (ana@example.com), plan pro".into()),
        }
    }

    async fn call(&self, ctx: &ActionContext, input: Input) -> Result<Output, ConnectorError> {
        let mut request = build_request(&self.api_base, &input, &ctx.credentials)?;
        if !ctx.timeout.is_zero() {
            request.timeout = Some(ctx.timeout);
        }
        let resp = ctx.http.send(request).await.map_err(|e| enlace_kit::transport_error(e, false))?;
        output_of(resp)
    }
}

/// Checks the input and builds the `chat.postMessage` request, credentials included.
/// Every problem with the input is [`ConnectorError::BadInput`] naming the field.
pub fn build_request(api_base: &str, input: &Input, credentials: &Credentials) -> Result<HttpRequest, ConnectorError> {
    let channel = input.channel.trim();
    if channel.is_empty() {
        return Err(ConnectorError::bad_input("channel", "is empty; give a channel ID like C0123456789 or a name like #marketing"));
    }
    let text = input.text.as_deref().filter(|t| !t.trim().is_empty());
    let blocks = input.blocks.as_deref().filter(|b| !b.is_empty());
    if text.is_none() && blocks.is_none() {
        return Err(ConnectorError::bad_input("text", "give the message's `text`, `blocks`, or both"));
    }
    if let Some(t) = text {
        let n = t.chars().count();
        if n > MAX_TEXT_CHARS {
            return Err(ConnectorError::bad_input("text", format!("is {n} characters long; Slack takes at most {MAX_TEXT_CHARS}")));
        }
    }
    if let Some(blocks) = blocks {
        check_blocks(blocks)?;
    }
    if let Some(ts) = &input.thread_ts
        && !is_ts(ts.trim())
    {
        return Err(ConnectorError::bad_input(
            "thread_ts",
            format!("`{ts}` is not a message timestamp; it looks like 1712345678.123456 (the `ts` of the thread's first message)"),
        ));
    }
    if input.reply_broadcast.is_some() && input.thread_ts.is_none() {
        return Err(ConnectorError::bad_input("reply_broadcast", "goes with `thread_ts`: it shows a thread reply in the channel too"));
    }

    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("channel", channel);
    if let Some(t) = text {
        form.append_pair("text", t);
    }
    if let Some(blocks) = blocks {
        let json = serde_json::to_string(blocks).map_err(|e| ConnectorError::bad_input("blocks", format!("could not be encoded: {e}")))?;
        form.append_pair("blocks", &json);
    }
    if let Some(ts) = &input.thread_ts {
        form.append_pair("thread_ts", ts.trim());
    }
    for (name, flag) in
        [("reply_broadcast", input.reply_broadcast), ("unfurl_links", input.unfurl_links), ("unfurl_media", input.unfurl_media)]
    {
        if let Some(flag) = flag {
            form.append_pair(name, if flag { "true" } else { "false" });
        }
    }

    if matches!(credentials, Credentials::None) {
        return Err(ConnectorError::auth(
            "this step has no Slack connection; create a bearer connection with the app's bot token (xoxb-...) and name it in the step's `connection`",
        ));
    }
    let mut request = HttpRequest::new(Method::POST, format!("{api_base}/chat.postMessage"));
    request.headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/x-www-form-urlencoded"));
    request.body = Bytes::from(form.finish());
    enlace_kit::apply_credentials(&mut request, credentials)?;
    Ok(request)
}

/// A Slack message timestamp: digits, a dot, digits.
fn is_ts(s: &str) -> bool {
    match s.split_once('.') {
        Some((a, b)) => !a.is_empty() && !b.is_empty() && a.bytes().all(|c| c.is_ascii_digit()) && b.bytes().all(|c| c.is_ascii_digit()),
        None => false,
    }
}

fn check_blocks(blocks: &[Value]) -> Result<(), ConnectorError> {
    if blocks.len() > MAX_BLOCKS {
        return Err(ConnectorError::bad_input("blocks", format!("has {} blocks; Slack takes at most {MAX_BLOCKS}", blocks.len())));
    }
    for (i, block) in blocks.iter().enumerate() {
        let Some(obj) = block.as_object() else {
            return Err(ConnectorError::bad_input(format!("blocks[{i}]"), "must be a block object like {\"type\": \"section\", ...}"));
        };
        if obj.get("type").and_then(Value::as_str).is_none_or(|t| t.trim().is_empty()) {
            return Err(ConnectorError::bad_input(
                format!("blocks[{i}].type"),
                "is missing; every block has a `type` (section, header, divider, image, actions, context...)",
            ));
        }
    }
    Ok(())
}

/// The step's output from Slack's answer, or the error it reports.
pub fn output_of(resp: HttpResponse) -> Result<Output, ConnectorError> {
    let resp = enlace_kit::classify(resp)?;
    let Some(body) = enlace_kit::json_body(&resp).filter(Value::is_object) else {
        return Err(ConnectorError::MaybeDelivered {
            message: format!(
                "Slack answered HTTP {} with a body that is not a JSON object ({}); the message may have been posted: check the channel before replaying",
                resp.status.as_u16(),
                enlace_kit::vendor_message(&resp).unwrap_or_else(|| "empty".into())
            ),
        });
    };
    enlace_kit::check_ok_response(&resp, &body, "ok", "error", slack_error)?;
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
    let (Some(channel), Some(ts)) = (text(body.get("channel")), text(body.get("ts"))) else {
        return Err(ConnectorError::permanent(
            "Slack answered `ok: true` without the message's `channel` and `ts`: the message was posted, but later steps cannot refer to it",
        ));
    };
    Ok(Output { channel, ts, thread_ts: text(body.pointer("/message/thread_ts")), text: text(body.pointer("/message/text")) })
}

/// Slack's error codes of chat.postMessage that name a field of the step, or that mean
/// something other than [`enlace_kit::check_ok_field`]'s default.
fn slack_error(code: &str, body: &Value) -> Option<ConnectorError> {
    // Slack explains invalid blocks in `response_metadata.messages`.
    let details = body
        .pointer("/response_metadata/messages")
        .and_then(Value::as_array)
        .map(|m| m.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("; "))
        .filter(|m| !m.is_empty());
    let said = |what: &str| match &details {
        Some(d) => format!("Slack answered `{code}`: {what} ({d})"),
        None => format!("Slack answered `{code}`: {what}"),
    };
    Some(match code {
        "channel_not_found" => ConnectorError::bad_input(
            "channel",
            said(
                "no such channel, or the app cannot see it; use the channel ID from the channel's details, and invite the app to private channels",
            ),
        ),
        "not_in_channel" => ConnectorError::bad_input(
            "channel",
            said("the app is not a member of this channel; invite it (`/invite @your-app`) or give the token the chat:write.public scope"),
        ),
        "is_archived" => ConnectorError::bad_input("channel", said("the channel is archived")),
        "restricted_action" | "restricted_action_read_only_channel" | "cannot_reply_to_message" => {
            ConnectorError::bad_input("channel", said("posting here is not allowed for the app"))
        }
        "invalid_blocks" | "invalid_blocks_format" => ConnectorError::bad_input("blocks", said("Slack refused the blocks")),
        "no_text" => ConnectorError::bad_input("text", said("the message has no text")),
        "msg_too_long" | "msg_blocks_too_long" => ConnectorError::bad_input("text", said("the message is too long")),
        "thread_not_found" | "invalid_thread_ts" => ConnectorError::bad_input("thread_ts", said("no such thread in this channel")),
        "missing_scope" => ConnectorError::auth(said("the token lacks the chat:write scope; add it to the app and reinstall it")),
        // Slack: "it's possible some aspect of the operation succeeded before the error".
        "internal_error" | "fatal_error" => ConnectorError::MaybeDelivered {
            message: said(
                "a fault at Slack after the request arrived; the message may have been posted: check the channel before replaying",
            ),
        },
        "service_unavailable" | "request_timeout" => ConnectorError::transient(said("Slack could not take the request")),
        _ => return None,
    })
}

/// The connection test: `auth.test`, the cheapest authenticated call; it changes nothing.
#[derive(Debug, Clone)]
pub struct AuthTest {
    api_base: Arc<str>,
}

impl AuthTest {
    /// The test against the Web API at `api_base` (`https://slack.com/api`).
    pub fn new(api_base: &str) -> Self {
        AuthTest { api_base: Arc::from(api_base.trim_end_matches('/')) }
    }
}

impl ConnectionTest for AuthTest {
    async fn test(&self, ctx: &ConnectionContext) -> Result<String, ConnectorError> {
        if matches!(ctx.credentials, Credentials::None) {
            return Err(ConnectorError::auth("the connection holds no token; give it the app's bot token (xoxb-...)"));
        }
        let mut request = HttpRequest::new(Method::GET, format!("{}/auth.test", self.api_base));
        if !ctx.timeout.is_zero() {
            request.timeout = Some(ctx.timeout);
        }
        enlace_kit::apply_credentials(&mut request, &ctx.credentials)?;
        let resp = ctx.http.send(request).await.map_err(|e| enlace_kit::transport_error(e, true))?;
        let resp = enlace_kit::classify(resp)?;
        let Some(body) = enlace_kit::json_body(&resp).filter(Value::is_object) else {
            return Err(ConnectorError::permanent(format!(
                "Slack answered auth.test with a body that is not a JSON object ({})",
                enlace_kit::vendor_message(&resp).unwrap_or_else(|| "empty".into())
            )));
        };
        enlace_kit::check_ok_response(&resp, &body, "ok", "error", |_, _| None)?;
        let field = |k: &str| body.get(k).and_then(Value::as_str).unwrap_or("?").to_string();
        Ok(format!("the token works: app user `{}` in the workspace `{}` ({})", field("user"), field("team"), field("url")))
    }
}
