//! The `facebook_page` app: posts on a Facebook Page through the Graph API with a Page
//! access token (`POST /{page-id}/feed`, or `POST /{page-id}/photos` with a photo's `url`;
//! <https://developers.facebook.com/docs/pages-api/posts>).
//!
//! [`CreatePost`] (`facebook_page.create_post`) publishes a message, with a link or a photo.
//! The Graph API takes no idempotency key, so the action is not idempotent: a request that
//! left without an answer is "maybe published", and [`RecentPosts`]
//! (`facebook_page.recent_posts`, `GET /{page-id}/published_posts`) lets a scheduler look for
//! it before deciding anything. The usage headers of every answer (`X-App-Usage`,
//! `X-Page-Usage`, `X-Business-Use-Case-Usage`) drive the connection's rate budget through
//! the runner. What the app does for end users is in README.md.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderValue;
use http::header::CONTENT_TYPE;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use enlace_core::http::{HttpRequest, HttpResponse, Method};
use enlace_core::{Action, ActionContext, AuthKind, Connector, ConnectorError, Idempotency, RateLimit};

/// The app id recipes use (`app: facebook_page`).
pub const APP_ID: &str = "facebook_page";

/// The Graph API, at the version this connector was written against.
pub const API_BASE: &str = "https://graph.facebook.com/v21.0";

/// The most characters of a post's message (Facebook's limit).
pub const MAX_MESSAGE: usize = 63_206;

/// The most posts `recent_posts` reads.
pub const MAX_RECENT: u32 = 100;

/// The `facebook_page` connector, talking to Meta.
pub fn connector() -> Connector {
    connector_at(API_BASE)
}

/// The connector with another Graph API base address, for tests only (a fake vendor on
/// 127.0.0.1); the installation always uses [`connector`].
pub fn connector_at(api_base: &str) -> Connector {
    let base: Arc<str> = Arc::from(api_base.trim_end_matches('/'));
    Connector::builder(APP_ID, "Facebook Page", "Publish posts on a Facebook Page: a message, with a link or a photo.")
        .auth(AuthKind::Bearer)
        // Page calls are limited by the Page's rate limit (4800 calls per engaged user per 24
        // hours), reported in `X-Page-Usage` / `X-Business-Use-Case-Usage`, which the runner
        // reads and waits on; one post a second per connection is more than any schedule.
        .rate_limit(RateLimit { calls: 1, per: Duration::from_secs(1) })
        .action(CreatePost { base: base.clone() })
        .action(RecentPosts { base })
        .build()
}

/// The `with` map of `facebook_page.create_post`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateInput {
    /// The Page's id (digits; the Page's About section, or Meta Business Suite settings).
    pub page_id: String,
    /// The post's text.
    pub message: String,
    /// A link shown with the post (give `link` or `photo_url`, not both).
    #[serde(default)]
    pub link: Option<String>,
    /// A public address of a photo Facebook fetches and posts, with the message as its caption.
    #[serde(default)]
    pub photo_url: Option<String>,
}

/// A published post.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct CreateOutput {
    /// The post's id (`<page id>_<post id>`).
    pub id: String,
    /// Its address on Facebook.
    pub url: String,
}

/// The `with` map of `facebook_page.recent_posts`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecentInput {
    /// The Page's id.
    pub page_id: String,
    /// How many of the latest posts (1 to 100, default 10).
    #[serde(default)]
    pub limit: Option<u32>,
}

/// One post.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Post {
    /// The post's id.
    pub id: String,
    /// Its address on Facebook.
    pub url: String,
    /// Its message (empty for a post without one).
    pub text: String,
    /// When it was created, RFC 3339.
    pub created_at: String,
}

/// The Page's latest posts, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct RecentOutput {
    /// The posts, newest first.
    pub posts: Vec<Post>,
}

/// `facebook_page.create_post`.
#[derive(Debug, Clone)]
pub struct CreatePost {
    base: Arc<str>,
}

/// `facebook_page.recent_posts`.
#[derive(Debug, Clone)]
pub struct RecentPosts {
    base: Arc<str>,
}

/// A post's address: `https://www.facebook.com/<post id>`.
pub fn post_url(id: &str) -> String {
    format!("https://www.facebook.com/{id}")
}

fn page_id(raw: &str) -> Result<String, ConnectorError> {
    let id = raw.trim();
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ConnectorError::bad_input(
            "page_id",
            format!("`{raw}` is not a Page id: digits only (the Page's About section shows it)"),
        ));
    }
    Ok(id.to_string())
}

fn web_url(field: &str, raw: &str) -> Result<String, ConnectorError> {
    let ok = enlace_kit::Url::parse(raw.trim()).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some());
    if ok { Ok(raw.trim().to_string()) } else { Err(ConnectorError::bad_input(field, format!("`{raw}` is not an http or https address"))) }
}

/// The request of a post: `POST /{page}/feed` (`message`, `link`) or `POST /{page}/photos`
/// (`url`, `caption`), form-encoded as the Graph API documents it.
pub fn post_request(base: &str, input: &CreateInput) -> Result<HttpRequest, ConnectorError> {
    let page = page_id(&input.page_id)?;
    let message = input.message.trim();
    let n = message.chars().count();
    if n > MAX_MESSAGE {
        return Err(ConnectorError::bad_input(
            "message",
            format!("is {n} characters long; Facebook takes at most {MAX_MESSAGE}: cut {}", n - MAX_MESSAGE),
        ));
    }
    let mut form = form_urlencoded::Serializer::new(String::new());
    let edge = match (&input.link, &input.photo_url) {
        (Some(_), Some(_)) => return Err(ConnectorError::bad_input("link", "give `link` or `photo_url`, not both")),
        (_, Some(photo)) => {
            form.append_pair("url", &web_url("photo_url", photo)?);
            if !message.is_empty() {
                form.append_pair("caption", message);
            }
            "photos"
        }
        (link, None) => {
            if message.is_empty() && link.is_none() {
                return Err(ConnectorError::bad_input("message", "is empty: give the post's text"));
            }
            if !message.is_empty() {
                form.append_pair("message", message);
            }
            if let Some(l) = link {
                form.append_pair("link", &web_url("link", l)?);
            }
            "feed"
        }
    };
    let mut r = HttpRequest::new(Method::POST, format!("{base}/{page}/{edge}"));
    r.headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/x-www-form-urlencoded"));
    r.body = Bytes::from(form.finish());
    Ok(r)
}

fn graph_answer(resp: HttpResponse, field: Option<&str>) -> Result<Value, ConnectorError> {
    if resp.status.as_u16() >= 400 {
        return Err(enlace_kit::graph_error(resp, field));
    }
    let body = enlace_kit::json_body(&resp).unwrap_or(Value::Null);
    if body.get("error").is_some() {
        return Err(enlace_kit::graph_error(resp, field));
    }
    Ok(body)
}

impl Action for CreatePost {
    type Input = CreateInput;
    type Output = CreateOutput;

    const ID: &'static str = "create_post";
    const NAME: &'static str = "Publish a post";
    const DESCRIPTION: &'static str = "Publishes a post on a Facebook Page: a message, with a link or a photo.";
    // The Graph API takes no idempotency key: a request sent twice publishes twice.
    const IDEMPOTENCY: Idempotency = Idempotency::None;

    fn sample() -> CreateOutput {
        CreateOutput { id: "104857600000000_122100000000000001".into(), url: post_url("104857600000000_122100000000000001") }
    }

    async fn call(&self, ctx: &ActionContext, input: CreateInput) -> Result<CreateOutput, ConnectorError> {
        let mut r = post_request(&self.base, &input)?;
        enlace_kit::apply_credentials(&mut r, &ctx.credentials)?;
        if !ctx.timeout.is_zero() {
            r.timeout = Some(ctx.timeout);
        }
        let resp = ctx.http.send(r).await.map_err(|e| enlace_kit::transport_error(e, false))?;
        let status = resp.status.as_u16();
        let body = graph_answer(resp, None).map_err(|e| match e {
            // A 2xx that is not a post: it may exist.
            e @ ConnectorError::Transient { .. } if status < 300 => ConnectorError::MaybeDelivered { message: e.to_string() },
            e => e,
        })?;
        // A photo answers `{id: <photo>, post_id: <page>_<post>}`, a feed post `{id}`.
        let id = body.get("post_id").or_else(|| body.get("id")).and_then(Value::as_str).map(str::to_string);
        match id {
            Some(id) => Ok(CreateOutput { url: post_url(&id), id }),
            None => Err(ConnectorError::MaybeDelivered {
                message: format!(
                    "the Graph API answered HTTP {status} without the post's id; the post may be published: look at the Page's recent posts before publishing again"
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
        "Reads a Page's latest published posts, newest first (to check whether a post whose answer was lost was published).";
    const IDEMPOTENCY: Idempotency = Idempotency::Natural;

    fn sample() -> RecentOutput {
        RecentOutput {
            posts: vec![Post {
                id: "104857600000000_122100000000000001".into(),
                url: "https://www.facebook.com/104857600000000/posts/122100000000000001".into(),
                text: "Our spring webinar is open for registration".into(),
                created_at: "2026-04-14T09:30:00Z".into(),
            }],
        }
    }

    async fn call(&self, ctx: &ActionContext, input: RecentInput) -> Result<RecentOutput, ConnectorError> {
        let page = page_id(&input.page_id)?;
        let limit = input.limit.unwrap_or(10);
        if !(1..=MAX_RECENT).contains(&limit) {
            return Err(ConnectorError::bad_input("limit", format!("must be 1 to {MAX_RECENT}")));
        }
        let url = format!("{}/{page}/published_posts?fields=id,message,created_time,permalink_url&limit={limit}", self.base);
        let mut r = HttpRequest::new(Method::GET, url);
        enlace_kit::apply_credentials(&mut r, &ctx.credentials)?;
        if !ctx.timeout.is_zero() {
            r.timeout = Some(ctx.timeout);
        }
        let resp = ctx.http.send(r).await.map_err(|e| enlace_kit::transport_error(e, true))?;
        let body = graph_answer(resp, None)?;
        let mut posts: Vec<(String, Post)> = body["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| {
                let id = p["id"].as_str()?.to_string();
                // `2026-11-25T10:00:00+0000`
                let raw = p["created_time"].as_str().unwrap_or("");
                let at = chrono::DateTime::parse_from_str(raw, "%Y-%m-%dT%H:%M:%S%z")
                    .map(|t| t.with_timezone(&chrono::Utc).to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                    .unwrap_or_else(|_| raw.to_string());
                let url = p["permalink_url"].as_str().map(str::to_string).unwrap_or_else(|| post_url(&id));
                Some((at.clone(), Post { id, url, text: p["message"].as_str().unwrap_or("").to_string(), created_at: at }))
            })
            .collect();
        posts.sort_by(|a, b| b.0.cmp(&a.0)); // newest first
        Ok(RecentOutput { posts: posts.into_iter().map(|(_, p)| p).collect() })
    }
}

#[cfg(test)]
mod tests;
