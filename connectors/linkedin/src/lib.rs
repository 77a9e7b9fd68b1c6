//! The `linkedin` app: posts on LinkedIn for a member or an organization page through the
//! Posts API (`POST /rest/posts`, Rest.li 2.0, versioned by the `LinkedIn-Version` header;
//! <https://learn.microsoft.com/en-us/linkedin/marketing/community-management/shares/posts-api>).
//!
//! [`CreatePost`] (`linkedin.create_post`) publishes text, with a link (an article) or an
//! image (uploaded first through the Images API); LinkedIn answers 201 with the post's URN in
//! the `x-restli-id` header. The Posts API takes no idempotency key, so the action is not
//! idempotent: a request that left without an answer is "maybe published", and
//! [`RecentPosts`] (`linkedin.recent_posts`) lets a scheduler look for it among the author's
//! latest posts before deciding anything. What the app does for end users is in README.md.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderName, HeaderValue};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use enlace_core::http::{HttpRequest, HttpResponse, Method};
use enlace_core::{Action, ActionContext, ClientAuth, Connector, ConnectorError, Idempotency, OAuth2App, RateLimit};

/// The app id recipes use (`app: linkedin`).
pub const APP_ID: &str = "linkedin";

/// LinkedIn's REST API.
pub const API_BASE: &str = "https://api.linkedin.com";

/// The API version sent as `LinkedIn-Version` (YYYYMM; LinkedIn keeps each for a year).
pub const LINKEDIN_VERSION: &str = "202510";

/// The most characters of a post's commentary.
pub const MAX_TEXT: usize = 3000;

/// The most posts `recent_posts` reads.
pub const MAX_RECENT: u32 = 100;

/// The `linkedin` connector, talking to LinkedIn.
pub fn connector() -> Connector {
    connector_at(API_BASE)
}

/// The connector with another API base address, for tests only (a fake vendor on
/// 127.0.0.1); the installation always uses [`connector`].
pub fn connector_at(api_base: &str) -> Connector {
    let base: Arc<str> = Arc::from(api_base.trim_end_matches('/'));
    Connector::builder(APP_ID, "LinkedIn", "Publish posts on LinkedIn, for yourself or an organization page, with a link or an image.")
        // LinkedIn's 3-legged OAuth 2.0; it takes the client's id and secret in the token
        // request's body. `w_member_social` posts as the member, `w_organization_social` and
        // `r_organization_social` post and read as a page the member administers.
        .oauth2(OAuth2App {
            authorize_url: "https://www.linkedin.com/oauth/v2/authorization".into(),
            token_url: "https://www.linkedin.com/oauth/v2/accessToken".into(),
            scopes: vec!["w_member_social".into(), "w_organization_social".into(), "r_organization_social".into()],
            authorize_params: Default::default(),
            client_auth: ClientAuth::Body,
        })
        // LinkedIn's daily application and member limits are per endpoint and not published
        // as numbers; 429 answers are waited out. One post a second per connection is more
        // than any schedule needs.
        .rate_limit(RateLimit { calls: 1, per: Duration::from_secs(1) })
        .action(CreatePost { base: base.clone() })
        .action(RecentPosts { base })
        .build()
}

/// Who sees the post.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Visibility {
    /// Anyone on or off LinkedIn.
    #[default]
    Public,
    /// The member's connections only (member authors).
    Connections,
}

/// The `with` map of `linkedin.create_post`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateInput {
    /// Who posts: an organization (`urn:li:organization:123`, a page the connection's member
    /// administers) or the member (`urn:li:person:abc`).
    pub author: String,
    /// The post's text, at most 3000 characters. Mentions and hashtags are sent as plain text.
    pub text: String,
    /// A link shown as an article card (give `link` or `image_url`, not both).
    #[serde(default)]
    pub link: Option<String>,
    /// A public https address of an image (JPEG, PNG or GIF) to attach; Enlace fetches it
    /// and uploads it to LinkedIn.
    #[serde(default)]
    pub image_url: Option<String>,
    /// `PUBLIC` (default) or `CONNECTIONS`.
    #[serde(default)]
    pub visibility: Option<Visibility>,
}

/// A published post.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct CreateOutput {
    /// The post's URN (`urn:li:share:7100000000000000000`).
    pub id: String,
    /// Its address on LinkedIn.
    pub url: String,
}

/// The `with` map of `linkedin.recent_posts`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecentInput {
    /// Whose posts: `urn:li:organization:123` or `urn:li:person:abc`.
    pub author: String,
    /// How many of the latest posts (1 to 100, default 10).
    #[serde(default)]
    pub limit: Option<u32>,
}

/// One post.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Post {
    /// The post's URN.
    pub id: String,
    /// Its address on LinkedIn.
    pub url: String,
    /// Its text, as typed (LinkedIn's "little text" escapes removed).
    pub text: String,
    /// When it was created, RFC 3339.
    pub created_at: String,
}

/// The author's latest posts, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct RecentOutput {
    /// The posts, newest first.
    pub posts: Vec<Post>,
}

/// `linkedin.create_post`.
#[derive(Debug, Clone)]
pub struct CreatePost {
    base: Arc<str>,
}

/// `linkedin.recent_posts`.
#[derive(Debug, Clone)]
pub struct RecentPosts {
    base: Arc<str>,
}

/// A post's address: `https://www.linkedin.com/feed/update/<urn>/`.
pub fn post_url(urn: &str) -> String {
    format!("https://www.linkedin.com/feed/update/{urn}/")
}

/// An author URN, checked: `urn:li:organization:<digits>` or `urn:li:person:<id>`.
pub fn author(raw: &str) -> Result<String, ConnectorError> {
    let a = raw.trim();
    let ok = match (a.strip_prefix("urn:li:organization:"), a.strip_prefix("urn:li:person:")) {
        (Some(id), _) => !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()),
        (_, Some(id)) => !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        _ => false,
    };
    if ok {
        Ok(a.to_string())
    } else {
        Err(ConnectorError::bad_input(
            "author",
            format!("`{raw}` is not an author URN: `urn:li:organization:<id>` for a page, or `urn:li:person:<id>` for the member"),
        ))
    }
}

/// The characters LinkedIn's "little text" reserves, escaped with a backslash.
const LITTLE_TEXT_RESERVED: &[char] = &['|', '{', '}', '@', '[', ']', '(', ')', '<', '>', '#', '\\', '*', '_', '~'];

/// The commentary in LinkedIn's "little text" format: its reserved characters
/// (`| { } @ [ ] ( ) < > # \ * _ ~`) escaped with a backslash, so they show as typed.
pub fn little_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if LITTLE_TEXT_RESERVED.contains(&c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A commentary in "little text" back as typed: the backslashes [`little_text`] put before
/// reserved characters removed (a scheduler compares it with the text it sent).
pub fn plain_text(commentary: &str) -> String {
    let mut out = String::with_capacity(commentary.len());
    let mut chars = commentary.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\'
            && let Some(&next) = chars.peek()
            && LITTLE_TEXT_RESERVED.contains(&next)
        {
            out.push(next);
            chars.next();
            continue;
        }
        out.push(c);
    }
    out
}

fn https_url(field: &str, raw: &str) -> Result<String, ConnectorError> {
    let ok = enlace_kit::Url::parse(raw.trim()).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some());
    if ok { Ok(raw.trim().to_string()) } else { Err(ConnectorError::bad_input(field, format!("`{raw}` is not an http or https address"))) }
}

/// The JSON body of `POST /rest/posts`; `image` is the uploaded image's URN, if any.
pub fn post_body(input: &CreateInput, image: Option<&str>) -> Result<Value, ConnectorError> {
    let author = author(&input.author)?;
    let text = input.text.trim();
    if text.is_empty() {
        return Err(ConnectorError::bad_input("text", "is empty: give the post's text"));
    }
    let n = text.chars().count();
    if n > MAX_TEXT {
        return Err(ConnectorError::bad_input(
            "text",
            format!("is {n} characters long; LinkedIn takes at most {MAX_TEXT}: cut {}", n - MAX_TEXT),
        ));
    }
    let visibility = input.visibility.unwrap_or_default();
    if visibility == Visibility::Connections && author.starts_with("urn:li:organization:") {
        return Err(ConnectorError::bad_input("visibility", "`CONNECTIONS` is for member posts; an organization posts `PUBLIC`"));
    }
    let mut body = json!({
        "author": author,
        "commentary": little_text(text),
        "visibility": visibility,
        "distribution": {"feedDistribution": "MAIN_FEED", "targetEntities": [], "thirdPartyDistributionChannels": []},
        "lifecycleState": "PUBLISHED",
        "isReshareDisabledByAuthor": false,
    });
    match (&input.link, image) {
        (Some(_), Some(_)) => {
            return Err(ConnectorError::bad_input("link", "give `link` or `image_url`, not both: a LinkedIn post has one attachment"));
        }
        (Some(link), None) => {
            let link = https_url("link", link)?;
            body["content"] = json!({"article": {"source": link, "title": link}});
        }
        (None, Some(urn)) => body["content"] = json!({"media": {"id": urn}}),
        (None, None) => {}
    }
    Ok(body)
}

fn rest_request(base: &str, ctx: &ActionContext, method: Method, path: &str, body: Option<&Value>) -> Result<HttpRequest, ConnectorError> {
    let mut r = HttpRequest::new(method, format!("{base}{path}"));
    r.headers.insert(HeaderName::from_static("linkedin-version"), HeaderValue::from_static(LINKEDIN_VERSION));
    r.headers.insert(HeaderName::from_static("x-restli-protocol-version"), HeaderValue::from_static("2.0.0"));
    if let Some(b) = body {
        r.headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        r.body = Bytes::from(b.to_string());
    }
    enlace_kit::apply_credentials(&mut r, &ctx.credentials)?;
    if !ctx.timeout.is_zero() {
        r.timeout = Some(ctx.timeout);
    }
    Ok(r)
}

/// LinkedIn's error answer (`{"status": 422, "code": "...", "message": "..."}`) classified;
/// a refusal that names the commentary is bad input on `text`.
fn linkedin_error(resp: HttpResponse) -> ConnectorError {
    let body = enlace_kit::json_body(&resp).unwrap_or(Value::Null);
    let message = body["message"].as_str().unwrap_or("").to_string();
    let status = resp.status.as_u16();
    if (400..500).contains(&status) && !matches!(status, 401 | 403 | 429) {
        if message.contains("commentary") {
            return ConnectorError::bad_input("text", format!("LinkedIn refused the text: {message}"));
        }
        if message.contains("author") {
            return ConnectorError::bad_input("author", format!("LinkedIn refused the author: {message}"));
        }
    }
    match enlace_kit::classify(resp) {
        Err(e) => e,
        Ok(_) => ConnectorError::permanent(format!("LinkedIn answered HTTP {status}")),
    }
}

impl CreatePost {
    /// Uploads the image: `initializeUpload` for the author, fetch the image, `PUT` it to the
    /// upload address. Its URN. Nothing is published yet, so any failure here is safe to retry.
    async fn upload_image(&self, ctx: &ActionContext, author: &str, url: &str) -> Result<String, ConnectorError> {
        let init = json!({"initializeUploadRequest": {"owner": author}});
        let r = rest_request(&self.base, ctx, Method::POST, "/rest/images?action=initializeUpload", Some(&init))?;
        let resp = ctx.http.send(r).await.map_err(|e| enlace_kit::transport_error(e, true))?;
        if resp.status.as_u16() >= 400 {
            return Err(linkedin_error(resp));
        }
        let v = enlace_kit::json_body(&resp).unwrap_or(Value::Null);
        let (Some(upload), Some(image)) = (v["value"]["uploadUrl"].as_str(), v["value"]["image"].as_str()) else {
            return Err(ConnectorError::transient(
                "LinkedIn's image upload answer has no `uploadUrl` and `image`; nothing was published, the step is retried",
            ));
        };
        let mut get = HttpRequest::new(Method::GET, url.to_string());
        if !ctx.timeout.is_zero() {
            get.timeout = Some(ctx.timeout);
        }
        let img = ctx.http.send(get).await.map_err(|e| enlace_kit::transport_error(e, true))?;
        if img.status.as_u16() >= 400 {
            return Err(ConnectorError::bad_input("image_url", format!("fetching the image answered HTTP {}", img.status.as_u16())));
        }
        let kind = img.headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase();
        if !kind.starts_with("image/") {
            return Err(ConnectorError::bad_input("image_url", format!("is not an image (its content type is `{kind}`)")));
        }
        let mut put = HttpRequest::new(Method::PUT, upload.to_string());
        put.headers
            .insert(CONTENT_TYPE, HeaderValue::from_str(&kind).unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream")));
        put.body = img.body.clone();
        enlace_kit::apply_credentials(&mut put, &ctx.credentials)?;
        if !ctx.timeout.is_zero() {
            put.timeout = Some(ctx.timeout);
        }
        let resp = ctx.http.send(put).await.map_err(|e| enlace_kit::transport_error(e, true))?;
        if resp.status.as_u16() >= 400 {
            return Err(linkedin_error(resp));
        }
        Ok(image.to_string())
    }
}

impl Action for CreatePost {
    type Input = CreateInput;
    type Output = CreateOutput;

    const ID: &'static str = "create_post";
    const NAME: &'static str = "Publish a post";
    const DESCRIPTION: &'static str = "Publishes a post on LinkedIn as a member or an organization page: text, with a link or an image.";
    // The Posts API takes no idempotency key: a request sent twice publishes twice.
    const IDEMPOTENCY: Idempotency = Idempotency::None;

    fn sample() -> CreateOutput {
        CreateOutput { id: "urn:li:share:7100000000000000000".into(), url: post_url("urn:li:share:7100000000000000000") }
    }

    async fn call(&self, ctx: &ActionContext, input: CreateInput) -> Result<CreateOutput, ConnectorError> {
        // Everything checked before anything leaves.
        post_body(&input, input.image_url.as_ref().map(|_| "urn:li:image:check"))?;
        let image = match &input.image_url {
            Some(u) => Some(self.upload_image(ctx, &author(&input.author)?, &https_url("image_url", u)?).await?),
            None => None,
        };
        let body = post_body(&input, image.as_deref())?;
        let r = rest_request(&self.base, ctx, Method::POST, "/rest/posts", Some(&body))?;
        let resp = ctx.http.send(r).await.map_err(|e| enlace_kit::transport_error(e, false))?;
        if resp.status.as_u16() >= 400 {
            return Err(linkedin_error(resp));
        }
        let id = resp.headers.get("x-restli-id").and_then(|v| v.to_str().ok()).map(str::to_string);
        match id {
            Some(id) if id.starts_with("urn:li:") => Ok(CreateOutput { url: post_url(&id), id }),
            _ => Err(ConnectorError::MaybeDelivered {
                message: format!(
                    "LinkedIn answered HTTP {} without the post's id (`x-restli-id`); the post may be published: look at the author's recent posts before publishing again",
                    resp.status.as_u16()
                ),
            }),
        }
    }
}

impl Action for RecentPosts {
    type Input = RecentInput;
    type Output = RecentOutput;

    const ID: &'static str = "recent_posts";
    const NAME: &'static str = "Recent posts";
    const DESCRIPTION: &'static str =
        "Reads an author's latest LinkedIn posts, newest first (to check whether a post whose answer was lost was published).";
    const IDEMPOTENCY: Idempotency = Idempotency::Natural;

    fn sample() -> RecentOutput {
        RecentOutput {
            posts: vec![Post {
                id: "urn:li:share:7100000000000000000".into(),
                url: post_url("urn:li:share:7100000000000000000"),
                text: "Our spring webinar is open for registration".into(),
                created_at: "2026-04-14T09:30:00Z".into(),
            }],
        }
    }

    async fn call(&self, ctx: &ActionContext, input: RecentInput) -> Result<RecentOutput, ConnectorError> {
        let author = author(&input.author)?;
        let limit = input.limit.unwrap_or(10);
        if !(1..=MAX_RECENT).contains(&limit) {
            return Err(ConnectorError::bad_input("limit", format!("must be 1 to {MAX_RECENT}")));
        }
        let enc = percent_encoding::utf8_percent_encode(&author, percent_encoding::NON_ALPHANUMERIC);
        let path = format!("/rest/posts?author={enc}&q=author&count={limit}&sortBy=LAST_MODIFIED");
        let r = rest_request(&self.base, ctx, Method::GET, &path, None)?;
        let resp = ctx.http.send(r).await.map_err(|e| enlace_kit::transport_error(e, true))?;
        if resp.status.as_u16() >= 400 {
            return Err(linkedin_error(resp));
        }
        let body = enlace_kit::json_body(&resp).unwrap_or(Value::Null);
        let mut posts: Vec<(i64, Post)> = body["elements"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| {
                let id = e["id"].as_str()?.to_string();
                let at = e["publishedAt"].as_i64().or_else(|| e["createdAt"].as_i64()).unwrap_or(0);
                let created_at = chrono::DateTime::from_timestamp_millis(at)
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                    .unwrap_or_default();
                Some((at, Post { url: post_url(&id), id, text: plain_text(e["commentary"].as_str().unwrap_or("")), created_at }))
            })
            .collect();
        posts.sort_by_key(|p| std::cmp::Reverse(p.0));
        Ok(RecentOutput { posts: posts.into_iter().map(|(_, p)| p).collect() })
    }
}

#[cfg(test)]
mod tests;
