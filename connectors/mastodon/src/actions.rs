//! `mastodon.post`, `mastodon.recent_posts`, `mastodon.instance_limits`.

use bytes::Bytes;
use http::HeaderValue;
use http::header::CONTENT_TYPE;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use enlace_core::http::{HttpRequest, HttpResponse, Method};
use enlace_core::{Action, ActionContext, ConnectorError, Credentials, Idempotency};

/// The most media a status takes on a default instance (the instance may say more).
pub const MAX_MEDIA: usize = 4;
/// The most bytes of one media file this connector uploads.
pub const MAX_MEDIA_BYTES: usize = 40 * 1024 * 1024;

/// A picture, video or sound to attach.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MediaInput {
    /// An address the file is fetched from (`https://...`).
    pub url: String,
    /// Its MIME type, like `image/png`.
    pub mime_type: String,
    /// A description for people who cannot see it (alt text).
    #[serde(default)]
    pub alt: Option<String>,
}

/// The `with` map of a `mastodon.post` step.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PostInput {
    /// The instance's address, like `https://mastodon.social` (the social scheduler fills it
    /// in from the connection).
    pub instance: String,
    /// The status's text (the instance's own limit applies; 500 characters by default, URLs
    /// count as 23).
    #[serde(default)]
    pub status: String,
    /// Media to upload and attach, at most 4 on a default instance.
    #[serde(default)]
    pub media: Vec<MediaInput>,
    /// `public`, `unlisted`, `private` (followers only) or `direct`. The account's default
    /// when left out.
    #[serde(default)]
    pub visibility: Option<String>,
    /// A content warning shown before the text.
    #[serde(default)]
    pub spoiler_text: Option<String>,
    /// The text's language, ISO 639-1 (`en`, `es`).
    #[serde(default)]
    pub language: Option<String>,
}

/// The posted status.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct PostOutput {
    /// The status's id on the instance.
    pub id: String,
    /// Its public address.
    pub url: Option<String>,
    /// When the instance made it (RFC 3339).
    pub created_at: Option<String>,
}

fn base(instance: &str) -> Result<String, ConnectorError> {
    let b = instance.trim().trim_end_matches('/');
    if !(b.starts_with("https://") || b.starts_with("http://")) || b.len() < 9 {
        return Err(ConnectorError::bad_input(
            "instance",
            format!("`{instance}` is not an instance's address; write it like https://mastodon.social"),
        ));
    }
    Ok(b.to_string())
}

fn authed(mut req: HttpRequest, creds: &Credentials, ctx: &ActionContext) -> Result<HttpRequest, ConnectorError> {
    if matches!(creds, Credentials::None) {
        return Err(ConnectorError::auth(
            "this step has no Mastodon connection; create an oauth2 connection on your instance and name it in `connection`",
        ));
    }
    enlace_kit::apply_credentials(&mut req, creds)?;
    if !ctx.timeout.is_zero() {
        req.timeout = Some(ctx.timeout);
    }
    Ok(req)
}

/// Mastodon's errors are `{"error": "..."}`; 422 is a refused status (too long, bad
/// visibility...), a refusal of this input.
fn classified(resp: HttpResponse, field: &str) -> Result<HttpResponse, ConnectorError> {
    if resp.status.as_u16() == 422 {
        let msg =
            serde_json::from_slice::<Value>(&resp.body).ok().and_then(|v| v["error"].as_str().map(str::to_string)).unwrap_or_default();
        return Err(ConnectorError::bad_input(field, format!("the instance refused it: {msg}")));
    }
    enlace_kit::classify(resp)
}

fn json_of(resp: &HttpResponse) -> Result<Value, ConnectorError> {
    serde_json::from_slice(&resp.body)
        .map_err(|e| ConnectorError::permanent(format!("the instance answered something that is not JSON: {e}")))
}

/// The status request: JSON body, `Idempotency-Key` header.
pub fn status_request(instance: &str, input: &PostInput, media_ids: &[String], key: &str) -> Result<HttpRequest, ConnectorError> {
    let b = base(instance)?;
    if input.status.trim().is_empty() && media_ids.is_empty() {
        return Err(ConnectorError::bad_input("status", "is empty; write a text or attach media"));
    }
    if let Some(v) = &input.visibility
        && !["public", "unlisted", "private", "direct"].contains(&v.as_str())
    {
        return Err(ConnectorError::bad_input("visibility", format!("`{v}` is not a visibility; use public, unlisted, private or direct")));
    }
    let mut body = json!({"status": input.status});
    if !media_ids.is_empty() {
        body["media_ids"] = json!(media_ids);
    }
    for (k, v) in [("visibility", &input.visibility), ("spoiler_text", &input.spoiler_text), ("language", &input.language)] {
        if let Some(v) = v.as_ref().filter(|v| !v.is_empty()) {
            body[k] = json!(v);
        }
    }
    let mut req = HttpRequest::new(Method::POST, format!("{b}/api/v1/statuses"));
    req.headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if !key.is_empty() {
        req.headers.insert(
            "idempotency-key",
            HeaderValue::from_str(key).map_err(|_| ConnectorError::bad_input("idempotency_key", "has characters a header cannot carry"))?,
        );
    }
    req.body = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
    Ok(req)
}

/// A `multipart/form-data` body with the file and its description.
pub fn media_request(instance: &str, m: &MediaInput, data: &[u8]) -> Result<HttpRequest, ConnectorError> {
    let b = base(instance)?;
    let boundary = "enlace-mastodon-media-0f8e7d6c5b4a";
    let name = m.url.rsplit('/').next().filter(|n| !n.is_empty() && !n.contains(['"', '\r', '\n'])).unwrap_or("file");
    let mut body = Vec::with_capacity(data.len() + 512);
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: {}\r\n\r\n",
            m.mime_type
        )
        .as_bytes(),
    );
    body.extend_from_slice(data);
    body.extend_from_slice(b"\r\n");
    if let Some(alt) = m.alt.as_ref().filter(|a| !a.is_empty()) {
        body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"description\"\r\n\r\n{alt}\r\n").as_bytes());
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    let mut req = HttpRequest::new(Method::POST, format!("{b}/api/v2/media"));
    req.headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_str(&format!("multipart/form-data; boundary={boundary}"))
            .unwrap_or(HeaderValue::from_static("multipart/form-data")),
    );
    req.body = Bytes::from(body);
    Ok(req)
}

/// `mastodon.post`.
#[derive(Debug, Clone, Copy)]
pub struct Post;

impl Action for Post {
    type Input = PostInput;
    type Output = PostOutput;
    const ID: &'static str = "post";
    const NAME: &'static str = "Post a status";
    const DESCRIPTION: &'static str =
        "Posts a status with optional media, visibility, content warning and language; the step's idempotency key goes as Idempotency-Key.";
    const IDEMPOTENCY: Idempotency = Idempotency::Key;

    fn sample() -> PostOutput {
        PostOutput {
            id: "103254962155278888".into(),
            url: Some("https://mastodon.example/@enlace/103254962155278888".into()),
            created_at: Some("2026-11-26T09:00:00.000Z".into()),
        }
    }

    async fn call(&self, ctx: &ActionContext, input: PostInput) -> Result<PostOutput, ConnectorError> {
        if input.media.len() > MAX_MEDIA {
            return Err(ConnectorError::bad_input("media", format!("has {} files; a status takes at most {MAX_MEDIA}", input.media.len())));
        }
        let mut ids = vec![];
        for (i, m) in input.media.iter().enumerate() {
            // Fetch the file, then upload it (a retried step uploads again: unattached media
            // are removed by the instance).
            let mut get = HttpRequest::new(Method::GET, m.url.clone());
            get.timeout = (!ctx.timeout.is_zero()).then_some(ctx.timeout);
            let file = ctx.http.send(get).await.map_err(|e| enlace_kit::transport_error(e, true))?;
            if !file.status.is_success() {
                return Err(ConnectorError::bad_input(format!("media[{i}].url"), format!("fetching it answered {}", file.status)));
            }
            if file.body.len() > MAX_MEDIA_BYTES {
                return Err(ConnectorError::bad_input(format!("media[{i}].url"), "the file is larger than 40 MiB"));
            }
            let req = authed(media_request(&input.instance, m, &file.body)?, &ctx.credentials, ctx)?;
            let resp = classified(ctx.http.send(req).await.map_err(|e| enlace_kit::transport_error(e, false))?, &format!("media[{i}]"))?;
            let v = json_of(&resp)?;
            let id = v["id"].as_str().ok_or_else(|| ConnectorError::permanent("the media upload answered no `id`"))?;
            ids.push(id.to_string());
        }
        let req = authed(status_request(&input.instance, &input, &ids, &ctx.idempotency_key)?, &ctx.credentials, ctx)?;
        // The key makes a resend safe: the instance answers the first status again.
        let resp = classified(ctx.http.send(req).await.map_err(|e| enlace_kit::transport_error(e, true))?, "status")?;
        let v = json_of(&resp)?;
        let id = v["id"].as_str().ok_or_else(|| ConnectorError::permanent("the instance answered no status `id`"))?;
        Ok(PostOutput {
            id: id.into(),
            url: v["url"].as_str().map(str::to_string),
            created_at: v["created_at"].as_str().map(str::to_string),
        })
    }
}

/// The `with` map of `mastodon.recent_posts`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecentInput {
    /// The instance's address, like `https://mastodon.social`.
    pub instance: String,
    /// How many of the newest statuses (1 to 40, default 20).
    #[serde(default)]
    pub limit: Option<u32>,
}

/// One status, its text as plain text.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct RecentPost {
    /// The status's id on the instance.
    pub id: String,
    /// Its public address.
    pub url: Option<String>,
    /// The status's text without its HTML.
    pub text: String,
    /// When the instance made it (RFC 3339).
    pub created_at: Option<String>,
}

/// The account's newest statuses.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct RecentOutput {
    /// Newest first.
    pub posts: Vec<RecentPost>,
}

/// `mastodon.recent_posts`.
#[derive(Debug, Clone, Copy)]
pub struct RecentPosts;

/// Mastodon's HTML content as plain text: paragraphs and line breaks as new lines, tags
/// dropped (a link's hidden parts included, so the whole address comes back), entities read.
pub fn html_to_text(html: &str) -> String {
    let s = html.replace("<br>", "\n").replace("<br/>", "\n").replace("<br />", "\n").replace("</p><p>", "\n\n");
    let mut out = String::with_capacity(s.len());
    let mut in_tag = false;
    for c in s.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&#39;", "'").replace("&apos;", "'").replace("&amp;", "&")
}

impl Action for RecentPosts {
    type Input = RecentInput;
    type Output = RecentOutput;
    const ID: &'static str = "recent_posts";
    const NAME: &'static str = "Recent statuses";
    const DESCRIPTION: &'static str = "Reads the connected account's newest statuses (to check whether a post is already there).";
    const IDEMPOTENCY: Idempotency = Idempotency::Natural;

    fn sample() -> RecentOutput {
        RecentOutput {
            posts: vec![RecentPost {
                id: "103254962155278888".into(),
                url: Some("https://mastodon.example/@enlace/103254962155278888".into()),
                text: "Our spring webinar is open".into(),
                created_at: Some("2026-11-26T09:00:00.000Z".into()),
            }],
        }
    }

    async fn call(&self, ctx: &ActionContext, input: RecentInput) -> Result<RecentOutput, ConnectorError> {
        let b = base(&input.instance)?;
        let limit = input.limit.unwrap_or(20).clamp(1, 40);
        let me = authed(HttpRequest::new(Method::GET, format!("{b}/api/v1/accounts/verify_credentials")), &ctx.credentials, ctx)?;
        let me = json_of(&enlace_kit::classify(ctx.http.send(me).await.map_err(|e| enlace_kit::transport_error(e, true))?)?)?;
        let id = me["id"].as_str().ok_or_else(|| ConnectorError::permanent("verify_credentials answered no account `id`"))?;
        let id = percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC);
        let req = authed(
            HttpRequest::new(Method::GET, format!("{b}/api/v1/accounts/{id}/statuses?limit={limit}&exclude_reblogs=true")),
            &ctx.credentials,
            ctx,
        )?;
        let v = json_of(&enlace_kit::classify(ctx.http.send(req).await.map_err(|e| enlace_kit::transport_error(e, true))?)?)?;
        let posts = v
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| RecentPost {
                id: s["id"].as_str().unwrap_or_default().to_string(),
                url: s["url"].as_str().map(str::to_string),
                text: html_to_text(s["content"].as_str().unwrap_or_default()),
                created_at: s["created_at"].as_str().map(str::to_string),
            })
            .collect();
        Ok(RecentOutput { posts })
    }
}

/// The `with` map of `mastodon.instance_limits`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsInput {
    /// The instance's address, like `https://mastodon.social`.
    pub instance: String,
}

/// What the instance allows (from `GET /api/v2/instance`).
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct LimitsOutput {
    /// The most characters of a status.
    pub max_characters: Option<u64>,
    /// The most media of a status.
    pub max_media_attachments: Option<u64>,
    /// How many characters a URL counts as.
    pub characters_reserved_per_url: Option<u64>,
    /// The MIME types it takes.
    pub supported_mime_types: Vec<String>,
}

/// `mastodon.instance_limits`.
#[derive(Debug, Clone, Copy)]
pub struct InstanceLimits;

impl Action for InstanceLimits {
    type Input = LimitsInput;
    type Output = LimitsOutput;
    const ID: &'static str = "instance_limits";
    const NAME: &'static str = "Instance limits";
    const DESCRIPTION: &'static str =
        "Reads the instance's own limits: characters per status, media per status, the length of a URL, the media types.";
    const IDEMPOTENCY: Idempotency = Idempotency::Natural;

    fn sample() -> LimitsOutput {
        LimitsOutput {
            max_characters: Some(500),
            max_media_attachments: Some(4),
            characters_reserved_per_url: Some(23),
            supported_mime_types: vec!["image/png".into()],
        }
    }

    async fn call(&self, ctx: &ActionContext, input: LimitsInput) -> Result<LimitsOutput, ConnectorError> {
        let b = base(&input.instance)?;
        let mut req = HttpRequest::new(Method::GET, format!("{b}/api/v2/instance"));
        req.timeout = (!ctx.timeout.is_zero()).then_some(ctx.timeout);
        let v = json_of(&enlace_kit::classify(ctx.http.send(req).await.map_err(|e| enlace_kit::transport_error(e, true))?)?)?;
        let l = enlace_core::social::InstanceLimits::from_mastodon_instance(&v);
        Ok(LimitsOutput {
            max_characters: l.max_characters.map(|x| x as u64),
            max_media_attachments: l.max_media_attachments.map(|x| x as u64),
            characters_reserved_per_url: l.characters_reserved_per_url.map(|x| x as u64),
            supported_mime_types: l.supported_mime_types,
        })
    }
}
