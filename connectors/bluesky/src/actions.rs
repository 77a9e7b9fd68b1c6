//! `bluesky.post`, `bluesky.recent_posts` and the connection test.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use http::HeaderValue;
use http::header::CONTENT_TYPE;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use enlace_core::connection::{ConnectionContext, ConnectionTest};
use enlace_core::http::{HttpRequest, Method};
use enlace_core::{Action, ActionContext, ConnectorError, Idempotency};

use crate::facets::{self, Feature};
use crate::xrpc::{self, Sessions, Xrpc};

/// The collection of posts.
pub const POST_COLLECTION: &str = "app.bsky.feed.post";
/// The most images a post takes (`app.bsky.embed.images`).
pub const MAX_IMAGES: usize = 4;
/// The largest image a post takes, in bytes (the lexicon's `maxSize`).
pub const MAX_IMAGE_BYTES: usize = 2_000_000;
/// The most languages a post declares.
pub const MAX_LANGS: usize = 3;

/// An image to attach.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageInput {
    /// An address the image is fetched from (`https://...`): JPEG, PNG, WebP or GIF, at
    /// most 2,000,000 bytes.
    pub url: String,
    /// A description for people who cannot see it (alt text).
    #[serde(default)]
    pub alt: String,
}

/// The `with` map of a `bluesky.post` step.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PostInput {
    /// The post's text: at most 300 graphemes (what people see as characters) and 3000
    /// bytes. Links, `@handle` mentions and `#tags` in it are made clickable.
    #[serde(default)]
    pub text: String,
    /// Images to upload and attach, at most 4, each with its alt text.
    #[serde(default)]
    pub images: Vec<ImageInput>,
    /// The text's languages, at most 3 (`en`, `es`, `pt-BR`).
    #[serde(default)]
    pub langs: Option<Vec<String>>,
    /// The PDS that hosts the account, like `https://bsky.social` (the default). Give it
    /// for an account on another PDS.
    #[serde(default)]
    pub service: Option<String>,
}

/// The created post.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct PostOutput {
    /// The post's `at://` URI (`at://did:plc:.../app.bsky.feed.post/RKEY`): Bluesky's
    /// identifier of the record, the same as `uri`.
    pub id: String,
    /// Its address in the Bluesky app (`https://bsky.app/profile/HANDLE/post/RKEY`).
    pub url: String,
    /// The record's `at://` URI.
    pub uri: String,
    /// The record's CID (the hash of this version of it).
    pub cid: String,
}

/// The address of a post in the Bluesky app.
pub fn app_url(profile: &str, uri: &str) -> String {
    let rkey = uri.rsplit('/').next().unwrap_or_default();
    format!("https://bsky.app/profile/{profile}/post/{rkey}")
}

/// `bluesky.post`.
pub struct Post {
    pub(crate) service: String,
    pub(crate) sessions: Arc<Sessions>,
}

/// Checks what the PDS would refuse, before anything is sent.
fn check_input(input: &PostInput) -> Result<(), ConnectorError> {
    if input.text.trim().is_empty() && input.images.is_empty() {
        return Err(ConnectorError::bad_input("text", "is empty; write a text or attach an image"));
    }
    let g = enlace_core::social::graphemes(&input.text);
    if g > enlace_core::social::BLUESKY_MAX_GRAPHEMES {
        return Err(ConnectorError::bad_input(
            "text",
            format!(
                "{g} of {} graphemes: cut {}",
                enlace_core::social::BLUESKY_MAX_GRAPHEMES,
                g - enlace_core::social::BLUESKY_MAX_GRAPHEMES
            ),
        ));
    }
    if input.text.len() > enlace_core::social::BLUESKY_MAX_BYTES {
        return Err(ConnectorError::bad_input(
            "text",
            format!(
                "{} of {} bytes (UTF-8): cut {} bytes",
                input.text.len(),
                enlace_core::social::BLUESKY_MAX_BYTES,
                input.text.len() - enlace_core::social::BLUESKY_MAX_BYTES
            ),
        ));
    }
    if input.images.len() > MAX_IMAGES {
        return Err(ConnectorError::bad_input("images", format!("has {} images; a post takes at most {MAX_IMAGES}", input.images.len())));
    }
    let langs = input.langs.as_deref().unwrap_or_default();
    if langs.len() > MAX_LANGS {
        return Err(ConnectorError::bad_input("langs", format!("has {} languages; a post declares at most {MAX_LANGS}", langs.len())));
    }
    for (i, l) in langs.iter().enumerate() {
        if !language_tag(l) {
            return Err(ConnectorError::bad_input(
                format!("langs[{i}]"),
                format!("`{l}` is not a language tag; write it like `en`, `es` or `pt-BR`"),
            ));
        }
    }
    Ok(())
}

/// A BCP 47 language tag, loosely: a 2 or 3 letter language (or `i`/`x`), then subtags of
/// 1 to 8 letters and digits.
fn language_tag(s: &str) -> bool {
    let mut parts = s.split('-');
    let first = parts.next().unwrap_or_default();
    let first_ok = (2..=3).contains(&first.len()) && first.bytes().all(|b| b.is_ascii_alphabetic()) || first == "i" || first == "x";
    first_ok && parts.all(|p| (1..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// The image's type: the answer's `Content-Type` when it is an image, else the address's
/// extension.
fn image_type(content_type: Option<&str>, url: &str) -> Option<String> {
    let ct = content_type.map(|c| c.split(';').next().unwrap_or_default().trim().to_ascii_lowercase()).unwrap_or_default();
    if ct.starts_with("image/") {
        return Some(ct);
    }
    let path = url.split(['?', '#']).next().unwrap_or_default().to_ascii_lowercase();
    let ext = path.rsplit_once('.').map(|(_, e)| e).unwrap_or_default();
    match ext {
        "jpg" | "jpeg" => Some("image/jpeg".into()),
        "png" => Some("image/png".into()),
        "webp" => Some("image/webp".into()),
        "gif" => Some("image/gif".into()),
        _ => None,
    }
}

impl Post {
    /// Fetches an image (through the step's transport: the SSRF guard applies) and uploads
    /// it; the blob reference the PDS gave.
    async fn upload(&self, ctx: &ActionContext, x: &Xrpc<'_>, i: usize, img: &ImageInput) -> Result<Value, ConnectorError> {
        let field = format!("images[{i}].url");
        let mut get = HttpRequest::new(Method::GET, img.url.clone());
        get.timeout = (!ctx.timeout.is_zero()).then_some(ctx.timeout);
        let file = ctx.http.send(get).await.map_err(|e| match enlace_kit::transport_error(e, true) {
            ConnectorError::BadInput { message, .. } => ConnectorError::bad_input(&field, message),
            other => other,
        })?;
        if !file.status.is_success() {
            return Err(ConnectorError::bad_input(&field, format!("fetching the image answered {}", file.status)));
        }
        let mime = image_type(file.headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()), &img.url).ok_or_else(|| {
            ConnectorError::bad_input(
                &field,
                "is not an image (neither its Content-Type nor its name says so); Bluesky takes JPEG, PNG, WebP or GIF",
            )
        })?;
        if file.body.len() > MAX_IMAGE_BYTES {
            return Err(ConnectorError::bad_input(
                &field,
                format!("the image is {} bytes; Bluesky takes at most {MAX_IMAGE_BYTES}: make it smaller", file.body.len()),
            ));
        }
        let body = file.body.clone();
        let ct = HeaderValue::from_str(&mime).map_err(|_| ConnectorError::bad_input(&field, "has a content type a header cannot carry"))?;
        let (resp, _) = x
            .call(
                |_| {
                    let mut req = HttpRequest::new(Method::POST, x.url("com.atproto.repo.uploadBlob"));
                    req.headers.insert(CONTENT_TYPE, ct.clone());
                    req.body = body.clone();
                    req
                },
                // An unreferenced blob is deleted by the PDS: uploading again is harmless.
                true,
            )
            .await?;
        let resp = xrpc::check(resp, &format!("images[{i}]"))?;
        let v = xrpc::json_of(&resp, "uploadBlob")?;
        match v.get("blob") {
            Some(b) if b.is_object() => Ok(b.clone()),
            _ => Err(ConnectorError::permanent("the PDS answered uploadBlob without a `blob`")),
        }
    }

    /// The DID of a handle (`com.atproto.identity.resolveHandle`); `None` when it does not
    /// resolve (the mention then stays plain text).
    async fn resolve(&self, ctx: &ActionContext, base: &str, handle: &str) -> Result<Option<String>, ConnectorError> {
        let mut req = HttpRequest::new(
            Method::GET,
            format!("{base}/xrpc/com.atproto.identity.resolveHandle?handle={}", utf8_percent_encode(handle, NON_ALPHANUMERIC)),
        );
        req.timeout = (!ctx.timeout.is_zero()).then_some(ctx.timeout);
        let resp = ctx.http.send(req).await.map_err(|e| enlace_kit::transport_error(e, true))?;
        let status = resp.status.as_u16();
        if status == 400 || status == 404 {
            // `InvalidRequest: Unable to resolve handle`, or `HandleNotFound`.
            return Ok(None);
        }
        let resp = xrpc::check(resp, "text")?;
        let v = xrpc::json_of(&resp, "resolveHandle")?;
        Ok(v.get("did").and_then(Value::as_str).filter(|d| d.starts_with("did:")).map(str::to_string))
    }

    /// The text's facets, mentions resolved (the unresolved ones left out).
    async fn facets(&self, ctx: &ActionContext, base: &str, text: &str) -> Result<Vec<Value>, ConnectorError> {
        let mut dids: HashMap<String, Option<String>> = HashMap::new();
        let mut out = vec![];
        for f in facets::detect(text) {
            let feature = match f.feature {
                Feature::Link(uri) => json!({"$type": "app.bsky.richtext.facet#link", "uri": uri}),
                Feature::Tag(tag) => json!({"$type": "app.bsky.richtext.facet#tag", "tag": tag}),
                Feature::Mention(handle) => {
                    let did = match dids.get(&handle) {
                        Some(d) => d.clone(),
                        None => {
                            let d = self.resolve(ctx, base, &handle).await?;
                            dids.insert(handle.clone(), d.clone());
                            d
                        }
                    };
                    match did {
                        Some(did) => json!({"$type": "app.bsky.richtext.facet#mention", "did": did}),
                        None => continue,
                    }
                }
            };
            out.push(facets::facet_json(f.start, f.end, feature));
        }
        Ok(out)
    }
}

/// The `com.atproto.repo.createRecord` body of a post.
pub fn create_record_body(
    did: &str,
    text: &str,
    facets: &[Value],
    images: &[(Value, String)],
    langs: &[String],
    created_at: &str,
) -> Value {
    let mut record = json!({"$type": POST_COLLECTION, "text": text, "createdAt": created_at});
    if !facets.is_empty() {
        record["facets"] = json!(facets);
    }
    if !images.is_empty() {
        record["embed"] = json!({
            "$type": "app.bsky.embed.images",
            "images": images.iter().map(|(blob, alt)| json!({"image": blob, "alt": alt})).collect::<Vec<_>>(),
        });
    }
    if !langs.is_empty() {
        record["langs"] = json!(langs);
    }
    json!({"repo": did, "collection": POST_COLLECTION, "record": record})
}

impl Action for Post {
    type Input = PostInput;
    type Output = PostOutput;
    const ID: &'static str = "post";
    const NAME: &'static str = "Post";
    const DESCRIPTION: &'static str =
        "Posts on the account: text with clickable links, mentions and hashtags, up to 4 images with alt text, languages.";
    // Bluesky takes no idempotency key: a lost answer is "maybe delivered" (the social
    // scheduler then looks among the account's recent posts).
    const IDEMPOTENCY: Idempotency = Idempotency::None;

    fn sample() -> PostOutput {
        let uri = "at://did:plc:ewvi7nxzyoun6zhxrhs64oiz/app.bsky.feed.post/3l6oveex3ii2l";
        PostOutput {
            id: uri.into(),
            url: "https://bsky.app/profile/enlace.bsky.social/post/3l6oveex3ii2l".into(),
            uri: uri.into(),
            cid: "bafyreig2fjxi3rptqdgylg7e5hmjl6mcke7rn2b6cugzlqq3i4zu6rq52q".into(),
        }
    }

    async fn call(&self, ctx: &ActionContext, input: PostInput) -> Result<PostOutput, ConnectorError> {
        check_input(&input)?;
        let base = xrpc::service_base(input.service.as_deref(), &self.service)?;
        let x = Xrpc::new(ctx.http.as_ref(), ctx.timeout, base.clone(), &self.sessions, &ctx.credentials)?;
        // Signed in first: refused credentials are said before anything is fetched.
        x.session().await?;
        let mut images = vec![];
        for (i, img) in input.images.iter().enumerate() {
            images.push((self.upload(ctx, &x, i, img).await?, img.alt.clone()));
        }
        let facets = self.facets(ctx, &base, &input.text).await?;
        let created_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let langs = input.langs.clone().unwrap_or_default();
        let (resp, session) = x
            .call(
                |s| {
                    let body = create_record_body(&s.did, &input.text, &facets, &images, &langs, &created_at);
                    let mut req = HttpRequest::new(Method::POST, x.url("com.atproto.repo.createRecord"));
                    req.headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                    req.body = Bytes::from(body.to_string());
                    req
                },
                false,
            )
            .await?;
        let resp = xrpc::check(resp, "text")?;
        // The post is made: an answer that cannot be read must not make a second one.
        let v: Value = serde_json::from_slice(&resp.body).map_err(|e| ConnectorError::MaybeDelivered {
            message: format!("the PDS took the post but its answer could not be read ({e}); it may be published"),
        })?;
        let (Some(uri), Some(cid)) = (v.get("uri").and_then(Value::as_str), v.get("cid").and_then(Value::as_str)) else {
            return Err(ConnectorError::MaybeDelivered {
                message: "the PDS took the post but answered no `uri` or `cid`; it may be published".into(),
            });
        };
        Ok(PostOutput { id: uri.into(), url: app_url(&session.handle, uri), uri: uri.into(), cid: cid.into() })
    }
}

/// The `with` map of `bluesky.recent_posts`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecentInput {
    /// Whose posts: a handle or DID (the social scheduler gives the channel's `handle`).
    /// The connection's own account when left out.
    #[serde(default)]
    pub actor: Option<String>,
    /// How many of the newest posts (1 to 100, default 20).
    #[serde(default)]
    pub limit: Option<u32>,
    /// The PDS that hosts the account, like `https://bsky.social` (the default).
    #[serde(default)]
    pub service: Option<String>,
}

/// One post.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct RecentPost {
    /// The post's `at://` URI (as `bluesky.post` gives it).
    pub id: String,
    /// Its address in the Bluesky app.
    pub url: Option<String>,
    /// The post's text.
    pub text: String,
    /// When it was written, as the post says (RFC 3339).
    pub created_at: Option<String>,
}

/// The account's newest posts.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct RecentOutput {
    /// Newest first.
    pub posts: Vec<RecentPost>,
}

/// `bluesky.recent_posts`.
pub struct RecentPosts {
    pub(crate) service: String,
    pub(crate) sessions: Arc<Sessions>,
}

impl Action for RecentPosts {
    type Input = RecentInput;
    type Output = RecentOutput;
    const ID: &'static str = "recent_posts";
    const NAME: &'static str = "Recent posts";
    const DESCRIPTION: &'static str = "Reads the account's newest posts (to check whether a post is already there).";
    const IDEMPOTENCY: Idempotency = Idempotency::Natural;

    fn sample() -> RecentOutput {
        RecentOutput {
            posts: vec![RecentPost {
                id: "at://did:plc:ewvi7nxzyoun6zhxrhs64oiz/app.bsky.feed.post/3l6oveex3ii2l".into(),
                url: Some("https://bsky.app/profile/enlace.bsky.social/post/3l6oveex3ii2l".into()),
                text: "Our spring webinar is open".into(),
                created_at: Some("2026-11-26T09:00:00.000Z".into()),
            }],
        }
    }

    async fn call(&self, ctx: &ActionContext, input: RecentInput) -> Result<RecentOutput, ConnectorError> {
        let base = xrpc::service_base(input.service.as_deref(), &self.service)?;
        let x = Xrpc::new(ctx.http.as_ref(), ctx.timeout, base, &self.sessions, &ctx.credentials)?;
        let limit = input.limit.unwrap_or(20).clamp(1, 100);
        let actor = input.actor.as_deref().map(|a| a.trim().trim_start_matches('@')).filter(|a| !a.is_empty()).map(str::to_string);
        let (resp, session) = x
            .call(
                |s| {
                    let repo = actor.clone().unwrap_or_else(|| s.did.clone());
                    HttpRequest::new(
                        Method::GET,
                        format!(
                            "{}?repo={}&collection={POST_COLLECTION}&limit={limit}",
                            x.url("com.atproto.repo.listRecords"),
                            utf8_percent_encode(&repo, NON_ALPHANUMERIC)
                        ),
                    )
                },
                true,
            )
            .await?;
        let v = xrpc::json_of(&xrpc::check(resp, "actor")?, "listRecords")?;
        // The app's address uses the handle; a DID works there too.
        let profile = match &actor {
            Some(a) if *a != session.did => a.clone(),
            _ => session.handle.clone(),
        };
        let posts = v
            .get("records")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|r| {
                let uri = r.get("uri").and_then(Value::as_str)?;
                let value = r.get("value")?;
                Some(RecentPost {
                    id: uri.to_string(),
                    url: Some(app_url(&profile, uri)),
                    text: value.get("text").and_then(Value::as_str).unwrap_or_default().to_string(),
                    created_at: value.get("createdAt").and_then(Value::as_str).map(str::to_string),
                })
            })
            .collect();
        Ok(RecentOutput { posts })
    }
}

/// The connection test: sign in (a new session, changing nothing).
pub struct SignIn {
    pub(crate) service: String,
    pub(crate) sessions: Arc<Sessions>,
}

impl ConnectionTest for SignIn {
    async fn test(&self, ctx: &ConnectionContext) -> Result<String, ConnectorError> {
        let x = Xrpc::new(ctx.http.as_ref(), ctx.timeout, self.service.clone(), &self.sessions, &ctx.credentials)?;
        let s = x.sign_in().await?;
        Ok(format!("Signed in to {} as @{} ({})", self.service, s.handle, s.did))
    }
}
