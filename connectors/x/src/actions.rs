//! `x.post_tweet` (text, a reply, media with alt text) and `x.recent_posts`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use enlace_core::http::{HttpRequest, Method, TransportError};
use enlace_core::social::{Media, Network, validate};
use enlace_core::{Action, ActionContext, ConnectorError, Idempotency};

use crate::{checked, id_field, is_id, json_of, request};

/// The most media a post takes (pictures; a video or a GIF goes alone).
pub const MAX_MEDIA: usize = 4;
/// The most characters of a media file's alt text (X's `alt_text.text`).
pub const MAX_ALT: usize = 1000;
/// X's size limits: a picture 5 MB, a GIF 15 MB, a video 512 MB (this installation's
/// transport reads at most 10 MiB of any answer, so a larger file fails when fetched).
pub const MAX_IMAGE_BYTES: usize = 5 * 1024 * 1024;
pub const MAX_GIF_BYTES: usize = 15 * 1024 * 1024;
pub const MAX_VIDEO_BYTES: usize = 512 * 1024 * 1024;
/// The size of each `append` of a chunked upload (before base64).
pub const CHUNK_BYTES: usize = 2 * 1024 * 1024;
/// How long the action waits for X to process a video or a GIF before giving up for now
/// (a passing fault: nothing was posted yet).
pub const MAX_PROCESSING: Duration = Duration::from_secs(120);

/// A picture, video or GIF to attach.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MediaInput {
    /// An address the file is fetched from (`https://...`).
    pub url: String,
    /// Its MIME type: `image/jpeg`, `image/png`, `image/webp`, `image/gif`, `video/mp4` or
    /// `video/quicktime`.
    pub mime_type: String,
    /// A description for people who cannot see it (alt text), at most 1000 characters.
    #[serde(default)]
    pub alt: Option<String>,
}

/// The `with` map of an `x.post_tweet` step.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PostInput {
    /// The post's text, at most 280 weighted characters (URLs count as 23, most CJK
    /// characters and emoji as 2). May be empty when media are attached.
    pub text: String,
    /// The id of the post to reply to, like `1346889436626259968` (from an earlier step's `id`).
    #[serde(default)]
    pub reply_to: Option<String>,
    /// Media to upload and attach: up to 4 pictures, or one video or GIF.
    #[serde(default)]
    pub media: Vec<MediaInput>,
}

/// The new post.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct PostOutput {
    /// The new post's id.
    pub id: String,
    /// The post's text as X stored it.
    pub text: String,
}

/// What X calls a media file's category, by its MIME type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `tweet_image`, uploaded in one request.
    Image,
    /// `tweet_gif`, uploaded in chunks.
    Gif,
    /// `tweet_video`, uploaded in chunks.
    Video,
}

impl Kind {
    pub fn of(mime_type: &str) -> Option<Kind> {
        match mime_type {
            "image/jpeg" | "image/png" | "image/webp" => Some(Kind::Image),
            "image/gif" => Some(Kind::Gif),
            "video/mp4" | "video/quicktime" => Some(Kind::Video),
            _ => None,
        }
    }
    pub fn category(self) -> &'static str {
        match self {
            Kind::Image => "tweet_image",
            Kind::Gif => "tweet_gif",
            Kind::Video => "tweet_video",
        }
    }
    fn max_bytes(self) -> usize {
        match self {
            Kind::Image => MAX_IMAGE_BYTES,
            Kind::Gif => MAX_GIF_BYTES,
            Kind::Video => MAX_VIDEO_BYTES,
        }
    }
}

/// Checks a post before any request: the text in X's weighted characters, the media count
/// and types (the rules the scheduler checks, `enlace_core::social::validate`), the alt
/// texts and the reply's id.
pub fn check(input: &PostInput) -> Result<(), ConnectorError> {
    let media: Vec<Media> =
        input.media.iter().map(|m| Media { url: m.url.clone(), mime_type: m.mime_type.clone(), alt: m.alt.clone() }).collect();
    if let Err(problems) = validate(Network::X, &input.text, &media, &Default::default()) {
        let field = problems[0].field.clone();
        let said: Vec<String> = problems.iter().map(|p| if p.field == field { p.message.clone() } else { p.to_string() }).collect();
        return Err(ConnectorError::bad_input(field, said.join("; ")));
    }
    for (i, m) in input.media.iter().enumerate() {
        let n = m.alt.as_deref().map_or(0, |a| a.chars().count());
        if n > MAX_ALT {
            return Err(ConnectorError::bad_input(
                format!("media[{i}].alt"),
                format!("is {n} characters long; X takes at most {MAX_ALT}: cut {}", n - MAX_ALT),
            ));
        }
    }
    if let Some(r) = &input.reply_to {
        id_field("reply_to", r)?;
    }
    Ok(())
}

/// The body of `POST /2/tweets`.
pub fn tweet_body(text: &str, media_ids: &[String], reply_to: Option<&str>) -> Value {
    let mut body = json!({"text": text});
    if !media_ids.is_empty() {
        body["media"] = json!({"media_ids": media_ids});
    }
    if let Some(r) = reply_to.map(str::trim).filter(|r| !r.is_empty()) {
        body["reply"] = json!({"in_reply_to_tweet_id": r});
    }
    body
}

/// The body of a one-request upload (`POST /2/media/upload`): the file base64-encoded.
pub fn simple_upload_body(data: &[u8], kind: Kind) -> Value {
    json!({"media": B64.encode(data), "media_category": kind.category()})
}

/// The body of `POST /2/media/upload/initialize`.
pub fn initialize_body(mime_type: &str, total_bytes: usize, kind: Kind) -> Value {
    json!({"media_type": mime_type, "total_bytes": total_bytes, "media_category": kind.category()})
}

/// The body of `POST /2/media/upload/{id}/append`: one chunk, base64-encoded.
pub fn append_body(chunk: &[u8], segment_index: usize) -> Value {
    json!({"media": B64.encode(chunk), "segment_index": segment_index})
}

/// The body of `POST /2/media/metadata` that sets a file's alt text.
pub fn alt_text_body(media_id: &str, alt: &str) -> Value {
    json!({"id": media_id, "metadata": {"alt_text": {"text": alt}}})
}

/// `x.post_tweet`.
#[derive(Debug, Clone)]
pub struct PostTweet {
    pub(crate) base: Arc<str>,
}

impl PostTweet {
    /// Fetches media `i` through the installation's transport (the SSRF guard applies).
    async fn fetch(&self, ctx: &ActionContext, i: usize, m: &MediaInput, kind: Kind) -> Result<Vec<u8>, ConnectorError> {
        let field = format!("media[{i}].url");
        let url = enlace_kit::Url::parse(m.url.trim())
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| ConnectorError::bad_input(&field, format!("`{}` is not an http or https address of the file", m.url)))?;
        let mut get = HttpRequest::new(Method::GET, url.to_string());
        get.timeout = (!ctx.timeout.is_zero()).then_some(ctx.timeout);
        let file = ctx.http.send(get).await.map_err(|e| match e {
            TransportError::TooLarge { limit } => {
                ConnectorError::bad_input(&field, format!("the file is larger than the {limit} bytes this installation fetches"))
            }
            TransportError::Forbidden(why) | TransportError::InvalidUrl(why) => ConnectorError::bad_input(&field, why),
            e => enlace_kit::transport_error(e, true),
        })?;
        let code = file.status.as_u16();
        if code >= 500 {
            return Err(ConnectorError::transient(format!("fetching media[{i}] answered HTTP {code}")));
        }
        if !file.status.is_success() {
            return Err(ConnectorError::bad_input(&field, format!("fetching it answered HTTP {code}")));
        }
        if file.body.len() > kind.max_bytes() {
            return Err(ConnectorError::bad_input(
                &field,
                format!("the file has {} bytes; X takes at most {} for a {}", file.body.len(), kind.max_bytes(), kind.category()),
            ));
        }
        if file.body.is_empty() {
            return Err(ConnectorError::bad_input(&field, "the file is empty"));
        }
        Ok(file.body.to_vec())
    }

    /// Sends one upload request; uploads are safe to repeat (an unused media id expires).
    async fn send(&self, ctx: &ActionContext, req: HttpRequest, field: &str) -> Result<Value, ConnectorError> {
        let resp = checked(ctx.http.send(req).await.map_err(|e| enlace_kit::transport_error(e, true))?, field)?;
        json_of(&resp)
    }

    /// The media id in an upload answer's `data.id`.
    fn media_id(v: &Value, step: &str) -> Result<String, ConnectorError> {
        match v["data"]["id"].as_str() {
            Some(id) if is_id(id) => Ok(id.to_string()),
            Some(id) => Err(ConnectorError::permanent(format!("X's {step} answered the media id `{id}`, which is not an X id"))),
            None => Err(ConnectorError::permanent(format!("X's {step} answered no media id (`data.id`)"))),
        }
    }

    /// Uploads media `i` and sets its alt text; its media id.
    async fn upload(&self, ctx: &ActionContext, i: usize, m: &MediaInput) -> Result<String, ConnectorError> {
        let field = format!("media[{i}]");
        let kind = Kind::of(&m.mime_type)
            .ok_or_else(|| ConnectorError::bad_input(format!("{field}.mime_type"), format!("X does not take `{}`", m.mime_type)))?;
        let data = self.fetch(ctx, i, m, kind).await?;
        let b = &*self.base;
        let (id, mut info) = match kind {
            Kind::Image => {
                let body = simple_upload_body(&data, kind);
                let v = self.send(ctx, request(b, ctx, Method::POST, "/2/media/upload", Some(&body))?, &field).await?;
                (Self::media_id(&v, "upload")?, v["data"]["processing_info"].clone())
            }
            Kind::Gif | Kind::Video => {
                let body = initialize_body(&m.mime_type, data.len(), kind);
                let v = self.send(ctx, request(b, ctx, Method::POST, "/2/media/upload/initialize", Some(&body))?, &field).await?;
                let id = Self::media_id(&v, "upload initialize")?;
                for (n, chunk) in data.chunks(CHUNK_BYTES).enumerate() {
                    let body = append_body(chunk, n);
                    let path = format!("/2/media/upload/{id}/append");
                    self.send(ctx, request(b, ctx, Method::POST, &path, Some(&body))?, &field).await?;
                }
                let v = self.send(ctx, request(b, ctx, Method::POST, &format!("/2/media/upload/{id}/finalize"), None)?, &field).await?;
                (id, v["data"]["processing_info"].clone())
            }
        };
        // X processes videos and GIFs after the upload: wait as long as it says, up to
        // MAX_PROCESSING.
        let deadline = Instant::now() + MAX_PROCESSING;
        loop {
            match info["state"].as_str() {
                None | Some("succeeded") => break,
                Some("failed") => {
                    let why = info["error"]["message"].as_str().unwrap_or("X gave no reason");
                    return Err(ConnectorError::bad_input(field, format!("X could not process the file: {why}")));
                }
                Some(_) => {
                    let wait = Duration::from_secs(info["check_after_secs"].as_u64().unwrap_or(1).clamp(1, 60));
                    if Instant::now() + wait > deadline {
                        return Err(ConnectorError::transient(format!(
                            "X was still processing {field} after {} s (nothing was posted); trying again later",
                            MAX_PROCESSING.as_secs()
                        )));
                    }
                    tokio::time::sleep(wait).await;
                    let path = format!("/2/media/upload?media_id={id}&command=STATUS");
                    let v = self.send(ctx, request(b, ctx, Method::GET, &path, None)?, &field).await?;
                    info = v["data"]["processing_info"].clone();
                }
            }
        }
        if let Some(alt) = m.alt.as_deref().map(str::trim).filter(|a| !a.is_empty()) {
            let body = alt_text_body(&id, alt);
            self.send(ctx, request(b, ctx, Method::POST, "/2/media/metadata", Some(&body))?, &format!("{field}.alt")).await?;
        }
        Ok(id)
    }
}

impl Action for PostTweet {
    type Input = PostInput;
    type Output = PostOutput;
    const ID: &'static str = "post_tweet";
    const NAME: &'static str = "Post a tweet";
    const DESCRIPTION: &'static str = "Posts a tweet (a post) from the connected account, with up to 4 pictures or one video or GIF (with alt text), optionally as a reply.";
    const IDEMPOTENCY: Idempotency = Idempotency::None;

    fn sample() -> PostOutput {
        PostOutput { id: "1445880548472328192".into(), text: "Our spring webinar is open: https://t.co/abc".into() }
    }

    async fn call(&self, ctx: &ActionContext, input: PostInput) -> Result<PostOutput, ConnectorError> {
        check(&input)?;
        let mut ids = Vec::with_capacity(input.media.len());
        for (i, m) in input.media.iter().enumerate() {
            ids.push(self.upload(ctx, i, m).await?);
        }
        let body = tweet_body(&input.text, &ids, input.reply_to.as_deref());
        let req = request(&self.base, ctx, Method::POST, "/2/tweets", Some(&body))?;
        // X takes no idempotency key: an unanswered post request may have made the post.
        let resp = checked(ctx.http.send(req).await.map_err(|e| enlace_kit::transport_error(e, false))?, "text")?;
        let v = serde_json::from_slice::<Value>(&resp.body).unwrap_or(Value::Null);
        match v["data"]["id"].as_str() {
            Some(id) => Ok(PostOutput { id: id.to_string(), text: v["data"]["text"].as_str().unwrap_or(&input.text).to_string() }),
            None => Err(ConnectorError::MaybeDelivered {
                message: format!("X answered HTTP {} without the post's `data.id`; the post may have been made", resp.status.as_u16()),
            }),
        }
    }
}

/// The `with` map of `x.recent_posts`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecentInput {
    /// How many of the newest posts (5 to 100, default 20).
    #[serde(default)]
    pub limit: Option<u32>,
}

/// One post, its links as written.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct RecentPost {
    /// The post's id.
    pub id: String,
    /// Its address on X.
    pub url: Option<String>,
    /// The post's text with its `t.co` links written back as the addresses they stand for
    /// (an attached picture's link left out).
    pub text: String,
    /// When X made it (RFC 3339).
    pub created_at: Option<String>,
}

/// The account's newest posts.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct RecentOutput {
    /// Newest first.
    pub posts: Vec<RecentPost>,
}

/// A post's text as its author wrote it: X's `text` with each `t.co` link replaced by its
/// `expanded_url` (the link X adds for attached media removed) and X's HTML escapes
/// (`&amp;`, `&lt;`, `&gt;`) read.
pub fn written_text(post: &Value) -> String {
    let mut text = post["text"].as_str().unwrap_or_default().to_string();
    for u in post["entities"]["urls"].as_array().into_iter().flatten() {
        let Some(short) = u["url"].as_str().filter(|s| !s.is_empty()) else { continue };
        let media = u.get("media_key").is_some_and(|k| !k.is_null());
        let with = if media { "" } else { u["expanded_url"].as_str().filter(|s| !s.is_empty()).unwrap_or(short) };
        text = text.replacen(short, with, 1);
    }
    text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&").trim_end().to_string()
}

/// `x.recent_posts`.
#[derive(Debug, Clone)]
pub struct RecentPosts {
    pub(crate) base: Arc<str>,
}

impl Action for RecentPosts {
    type Input = RecentInput;
    type Output = RecentOutput;
    const ID: &'static str = "recent_posts";
    const NAME: &'static str = "Recent posts";
    const DESCRIPTION: &'static str =
        "Reads the connected account's newest posts, their links as written (to check whether a post is already there).";
    const IDEMPOTENCY: Idempotency = Idempotency::Natural;

    fn sample() -> RecentOutput {
        RecentOutput {
            posts: vec![RecentPost {
                id: "1445880548472328192".into(),
                url: Some("https://x.com/enlace/status/1445880548472328192".into()),
                text: "Our spring webinar is open: https://blog.example/webinar".into(),
                created_at: Some("2026-11-26T09:00:00.000Z".into()),
            }],
        }
    }

    async fn call(&self, ctx: &ActionContext, input: RecentInput) -> Result<RecentOutput, ConnectorError> {
        let limit = input.limit.unwrap_or(20).clamp(5, 100);
        let b = &*self.base;
        let me = request(b, ctx, Method::GET, "/2/users/me", None)?;
        let me = json_of(&checked(ctx.http.send(me).await.map_err(|e| enlace_kit::transport_error(e, true))?, "connection")?)?;
        let id = match me["data"]["id"].as_str() {
            Some(id) if is_id(id) => id.to_string(),
            Some(id) => {
                return Err(ConnectorError::permanent(format!("X's /2/users/me answered the account id `{id}`, which is not an X id")));
            }
            None => return Err(ConnectorError::permanent("X's /2/users/me answered no account `id`")),
        };
        let username = me["data"]["username"].as_str().filter(|u| !u.is_empty()).map(str::to_string);
        // X's description names the field list `post.fields`.
        let path = format!("/2/users/{id}/tweets?max_results={limit}&exclude=retweets&post.fields=created_at,entities");
        let req = request(b, ctx, Method::GET, &path, None)?;
        let v = json_of(&checked(ctx.http.send(req).await.map_err(|e| enlace_kit::transport_error(e, true))?, "connection")?)?;
        let posts = v["data"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                let pid = p["id"].as_str().unwrap_or_default().to_string();
                RecentPost {
                    url: Some(match &username {
                        Some(u) => format!("https://x.com/{u}/status/{pid}"),
                        None => format!("https://x.com/i/web/status/{pid}"),
                    }),
                    text: written_text(p),
                    created_at: p["created_at"].as_str().map(str::to_string),
                    id: pid,
                }
            })
            .collect();
        Ok(RecentOutput { posts })
    }
}
