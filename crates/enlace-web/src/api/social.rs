//! `/api/v1/social`: channels (a network, a connection, account parameters, a time zone and
//! queue time slots) and posts (a text with per-channel overrides, scheduled at a time or in
//! the next free slot of each channel's queue, published by the runner). See
//! `docs/social.md`. Handlers stay thin: the runner's `Social` service does the work.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use enlace_core::social::{Media, Slot};
use enlace_runner::social::{ChannelInput, PostInput, TargetInput, When};
use enlace_store::social::{ChannelRow, PostDetail, PostFilter, TargetRow};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::recipes::ts;
use crate::AppState;
use crate::error::{ApiError, ApiResult, ErrorBody};

/// A channel: where posts go.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChannelView {
    pub id: String,
    pub name: String,
    /// `mastodon`, `bluesky`, `x`, `linkedin` or `facebook_page`.
    pub network: String,
    /// The connection the network's app uses.
    pub connection: Option<String>,
    /// The account's parameters: `handle` (Bluesky), `author` (LinkedIn URN), `page_id`
    /// (Facebook page).
    #[schema(value_type = Object)]
    pub params: Value,
    /// The IANA time zone of the queue's slots.
    pub timezone: String,
    #[schema(value_type = Vec<Object>)]
    pub slots: Vec<Slot>,
    /// `active`, or `paused` (posts wait) with `paused_reason`.
    pub status: &'static str,
    pub paused_reason: Option<String>,
    pub paused_at: Option<String>,
    /// What the network's instance said about its limits (Mastodon), and when.
    #[schema(value_type = Option<Object>)]
    pub limits: Option<Value>,
    pub limits_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

pub fn channel_view(c: ChannelRow) -> ChannelView {
    ChannelView {
        status: if c.paused_reason.is_some() { "paused" } else { "active" },
        id: c.id,
        name: c.name,
        network: c.network,
        connection: c.connection_id,
        params: c.params,
        timezone: c.timezone,
        slots: serde_json::from_value(c.slots).unwrap_or_default(),
        paused_reason: c.paused_reason,
        paused_at: c.paused_at.map(ts),
        limits: c.limits,
        limits_at: c.limits_at.map(ts),
        created_at: ts(c.created_at),
        updated_at: ts(c.updated_at),
    }
}

/// A post's life on one channel.
#[derive(Debug, Serialize, ToSchema)]
pub struct TargetView {
    pub id: String,
    pub channel: String,
    /// This channel's own text, when it differs from the post's.
    pub text: Option<String>,
    /// `draft`, `scheduled`, `publishing`, `published`, `failed`, `cancelled`, or `held`
    /// (it may have been published: confirm or retry).
    pub status: String,
    /// The time chosen (or the queue slot taken).
    pub scheduled_at: Option<String>,
    /// When the runner takes it next (later than `scheduled_at` after a rate limit).
    pub due_at: Option<String>,
    /// Whether `scheduled_at` is a slot of the channel's queue.
    pub queued: bool,
    pub attempts: i64,
    /// A request left at this time and its outcome is not known yet.
    pub sent_at: Option<String>,
    /// The network's id and address of the published post.
    pub remote_id: Option<String>,
    pub url: Option<String>,
    pub published_at: Option<String>,
    /// In plain words: why it failed, is held or waits.
    pub reason: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub error: Option<Value>,
}

fn target_view(t: TargetRow) -> TargetView {
    TargetView {
        id: t.id,
        channel: t.channel_id,
        text: t.text,
        status: t.status,
        scheduled_at: t.scheduled_at.map(ts),
        due_at: t.due_at.map(ts),
        queued: t.queued,
        attempts: t.attempts,
        sent_at: t.sent_at.map(ts),
        remote_id: t.remote_id,
        url: t.remote_url,
        published_at: t.published_at.map(ts),
        reason: t.reason,
        error: t.error,
    }
}

/// A post and its targets.
#[derive(Debug, Serialize, ToSchema)]
pub struct PostView {
    pub id: String,
    pub text: String,
    #[schema(value_type = Vec<Object>)]
    pub media: Vec<Media>,
    pub link: Option<String>,
    #[schema(value_type = Object)]
    pub options: Value,
    /// From the targets: `draft`, `scheduled`, `publishing`, `held`, `published`, `failed`
    /// or `cancelled`.
    pub status: String,
    /// `api:<token>`, `cli` or `run:<run id>`.
    pub origin: String,
    pub targets: Vec<TargetView>,
    pub created_at: String,
    pub updated_at: String,
}

pub fn post_view(d: PostDetail) -> PostView {
    PostView {
        id: d.post.id,
        text: d.post.text,
        media: serde_json::from_value(d.post.media).unwrap_or_default(),
        link: d.post.link,
        options: d.post.options,
        status: d.status,
        origin: d.post.origin,
        targets: d.targets.into_iter().map(target_view).collect(),
        created_at: ts(d.post.created_at),
        updated_at: ts(d.post.updated_at),
    }
}

/// A channel to create or replace.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ChannelBody {
    pub name: String,
    /// `mastodon`, `bluesky`, `x`, `linkedin` or `facebook_page`.
    pub network: String,
    /// A connection to the network's app (`mastodon`, `bluesky`, `x`, `linkedin`, `facebook_page`).
    pub connection: String,
    /// `handle` for Bluesky, `author` (URN) for LinkedIn, `page_id` for a Facebook page.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub params: serde_json::Map<String, Value>,
    /// IANA time zone of the slots (default UTC).
    #[serde(default)]
    pub timezone: Option<String>,
    /// Queue time slots, like `[{"days": ["mon","tue","wed","thu","fri"], "time": "09:00"}]`.
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub slots: Vec<Slot>,
}

fn channel_input(b: ChannelBody) -> ChannelInput {
    ChannelInput {
        name: b.name,
        network: b.network,
        connection: Some(b.connection),
        params: b.params,
        timezone: b.timezone.unwrap_or_else(|| "UTC".into()),
        slots: b.slots,
    }
}

/// The channels.
#[utoipa::path(get, path = "/api/v1/social/channels", tag = "social", responses((status = 200, body = Vec<ChannelView>)))]
pub async fn list_channels(State(s): State<AppState>) -> ApiResult<Json<Vec<ChannelView>>> {
    Ok(Json(s.runner.social().channels().await?.into_iter().map(channel_view).collect()))
}

/// Creates a channel; its network's parameters, time zone, slots and connection are checked.
#[utoipa::path(post, path = "/api/v1/social/channels", tag = "social", request_body = ChannelBody,
    responses((status = 201, body = ChannelView), (status = 400, body = ErrorBody)))]
pub async fn create_channel(State(s): State<AppState>, Json(b): Json<ChannelBody>) -> ApiResult<(StatusCode, Json<ChannelView>)> {
    Ok((StatusCode::CREATED, Json(channel_view(s.runner.social().create_channel(channel_input(b)).await?))))
}

#[utoipa::path(get, path = "/api/v1/social/channels/{id}", tag = "social", params(("id" = String, Path)),
    responses((status = 200, body = ChannelView), (status = 404, body = ErrorBody)))]
pub async fn get_channel(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<ChannelView>> {
    Ok(Json(channel_view(s.runner.social().channel(&id).await?)))
}

/// Replaces a channel's settings (its queue slots among them); posts already in the queue
/// keep their times.
#[utoipa::path(put, path = "/api/v1/social/channels/{id}", tag = "social", params(("id" = String, Path)), request_body = ChannelBody,
    responses((status = 200, body = ChannelView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn update_channel(State(s): State<AppState>, Path(id): Path<String>, Json(b): Json<ChannelBody>) -> ApiResult<Json<ChannelView>> {
    Ok(Json(channel_view(s.runner.social().update_channel(&id, channel_input(b)).await?)))
}

/// Deletes a channel with nothing scheduled, publishing or held on it.
#[utoipa::path(delete, path = "/api/v1/social/channels/{id}", tag = "social", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn delete_channel(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    s.runner.social().delete_channel(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct PauseBody {
    /// Why (shown with the channel).
    pub reason: Option<String>,
}

/// Pauses a channel: its posts wait until it is resumed.
#[utoipa::path(post, path = "/api/v1/social/channels/{id}/pause", tag = "social", params(("id" = String, Path)), request_body = PauseBody,
    responses((status = 200, body = ChannelView), (status = 404, body = ErrorBody)))]
pub async fn pause_channel(State(s): State<AppState>, Path(id): Path<String>, Json(b): Json<PauseBody>) -> ApiResult<Json<ChannelView>> {
    let reason = b.reason.unwrap_or_else(|| "paused by hand".into());
    Ok(Json(channel_view(s.runner.social().pause_channel(&id, &reason).await?)))
}

/// Resumes a paused channel (reconnecting its connection does it too); posts that waited go
/// at once.
#[utoipa::path(post, path = "/api/v1/social/channels/{id}/resume", tag = "social", params(("id" = String, Path)),
    responses((status = 200, body = ChannelView), (status = 404, body = ErrorBody)))]
pub async fn resume_channel(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<ChannelView>> {
    Ok(Json(channel_view(s.runner.social().resume_channel(&id).await?)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct QueueQuery {
    /// How many free slots to show (1 to 100, default 10).
    pub count: Option<usize>,
}

/// A channel's queue: the next free slots, in the channel's zone and UTC.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueView {
    pub channel: String,
    pub timezone: String,
    pub free_slots: Vec<String>,
}

#[utoipa::path(get, path = "/api/v1/social/channels/{id}/queue", tag = "social", params(("id" = String, Path), QueueQuery),
    responses((status = 200, body = QueueView), (status = 404, body = ErrorBody)))]
pub async fn queue(State(s): State<AppState>, Path(id): Path<String>, Query(q): Query<QueueQuery>) -> ApiResult<Json<QueueView>> {
    let count = q.count.unwrap_or(10);
    if !(1..=100).contains(&count) {
        return Err(ApiError::invalid("count", format!("must be between 1 and 100 (it is {count})")));
    }
    let social = s.runner.social();
    let ch = social.channel(&id).await?;
    let free = social.free_slots(&id, count).await?;
    Ok(Json(QueueView { channel: ch.id, timezone: ch.timezone, free_slots: free.into_iter().map(ts).collect() }))
}

/// A new post.
#[derive(Debug, Deserialize, ToSchema)]
pub struct PostBody {
    #[serde(default)]
    pub text: String,
    /// Pictures or videos: `[{"url": "https://...", "mime_type": "image/png", "alt": "..."}]`.
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub media: Vec<Media>,
    /// A link: its own field on LinkedIn and Facebook pages, added at the end of the text elsewhere.
    pub link: Option<String>,
    /// `visibility` (Mastodon: public, unlisted, private, direct; LinkedIn: PUBLIC, CONNECTIONS),
    /// `content_warning` (Mastodon), `language` (ISO 639-1).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub options: serde_json::Map<String, Value>,
    /// The channels, each with its own text if it differs: `[{"channel": "ID", "text": "..."}]`.
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub targets: Vec<TargetInput>,
    /// `draft` (default), `queue` (the next free slot of each channel), or a time (RFC 3339).
    pub when: Option<String>,
}

fn when_of(w: Option<&str>) -> Result<When, ApiError> {
    match w.map(str::trim) {
        None | Some("draft") => Ok(When::Draft),
        Some("queue") => Ok(When::Queue),
        Some(t) => enlace_runner::exec_parse_time(t)
            .map(When::At)
            .map_err(|e| ApiError::invalid("when", format!("{e}; write `draft`, `queue` or a time like 2026-12-01T09:00:00Z"))),
    }
}

fn post_input(b: &PostBody) -> PostInput {
    PostInput { text: b.text.clone(), media: b.media.clone(), link: b.link.clone(), options: b.options.clone(), targets: b.targets.clone() }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PostsQuery {
    /// Posts with a target planned or published at or after this time (RFC 3339).
    pub from: Option<String>,
    /// ... and before this time.
    pub to: Option<String>,
    /// Only posts with a target on this channel.
    pub channel: Option<String>,
    /// Only posts with a target in this status.
    pub status: Option<String>,
    /// At most this many (default 200, at most 1000).
    pub limit: Option<i64>,
}

fn time_param(name: &str, v: Option<&str>) -> Result<Option<i64>, ApiError> {
    v.map(|t| enlace_runner::exec_parse_time(t).map_err(|e| ApiError::invalid(name, e))).transpose()
}

/// Posts by time: those with a target planned or published in `[from, to)` (a calendar's
/// range), earliest first; without a range, every post.
#[utoipa::path(get, path = "/api/v1/social/posts", tag = "social", params(PostsQuery),
    responses((status = 200, body = Vec<PostView>), (status = 400, body = ErrorBody)))]
pub async fn list_posts(State(s): State<AppState>, Query(q): Query<PostsQuery>) -> ApiResult<Json<Vec<PostView>>> {
    let f = PostFilter {
        from: time_param("from", q.from.as_deref())?,
        to: time_param("to", q.to.as_deref())?,
        channel_id: q.channel,
        status: q.status,
        limit: q.limit.unwrap_or(200),
    };
    Ok(Json(s.runner.social().posts(&f).await?.into_iter().map(post_view).collect()))
}

/// Creates a post: a draft, at a time, or in each channel's next free queue slot. Anything
/// but a draft is checked against every channel's network first (length in the network's
/// unit, media count and type); a post that does not fit is refused with what to cut.
#[utoipa::path(post, path = "/api/v1/social/posts", tag = "social", request_body = PostBody,
    responses((status = 201, body = PostView), (status = 400, body = ErrorBody)))]
pub async fn create_post(
    State(s): State<AppState>,
    caller: Option<axum::Extension<super::auth::Caller>>,
    Json(b): Json<PostBody>,
) -> ApiResult<(StatusCode, Json<PostView>)> {
    let when = when_of(b.when.as_deref())?;
    let origin = format!("api:{}", caller.map_or_else(|| "unknown".to_string(), |axum::Extension(super::auth::Caller(n))| n));
    let d = s.runner.social().create_post(post_input(&b), when, &origin, None).await?;
    Ok((StatusCode::CREATED, Json(post_view(d))))
}

/// How a post measures on one channel.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChannelCheck {
    pub channel: String,
    pub network: String,
    /// `characters`, `graphemes` or `weighted characters`.
    pub unit: Option<&'static str>,
    pub length: Option<usize>,
    pub max: Option<usize>,
    /// What to change, per field; empty when it fits.
    #[schema(value_type = Vec<Object>)]
    pub problems: Vec<enlace_core::social::Problem>,
}

/// Checks a post against its channels without saving it.
#[utoipa::path(post, path = "/api/v1/social/validate", tag = "social", request_body = PostBody,
    responses((status = 200, body = Vec<ChannelCheck>), (status = 400, body = ErrorBody)))]
pub async fn validate(State(s): State<AppState>, Json(b): Json<PostBody>) -> ApiResult<Json<Vec<ChannelCheck>>> {
    let checked = s.runner.social().validate(&post_input(&b)).await?;
    Ok(Json(
        checked
            .into_iter()
            .map(|(ch, r)| match r {
                Ok(m) => ChannelCheck {
                    channel: ch.id,
                    network: ch.network,
                    unit: Some(m.unit),
                    length: Some(m.length),
                    max: Some(m.max),
                    problems: vec![],
                },
                Err(p) => ChannelCheck { channel: ch.id, network: ch.network, unit: None, length: None, max: None, problems: p },
            })
            .collect(),
    ))
}

#[utoipa::path(get, path = "/api/v1/social/posts/{id}", tag = "social", params(("id" = String, Path)),
    responses((status = 200, body = PostView), (status = 404, body = ErrorBody)))]
pub async fn get_post(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<PostView>> {
    Ok(Json(post_view(s.runner.social().post(&id).await?)))
}

/// Edits a post before it is published (text, media, link, options, per-channel texts;
/// `targets` may name some of its channels, and `when` is ignored); a scheduled post is
/// checked again.
#[utoipa::path(put, path = "/api/v1/social/posts/{id}", tag = "social", params(("id" = String, Path)), request_body = PostBody,
    responses((status = 200, body = PostView), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn edit_post(State(s): State<AppState>, Path(id): Path<String>, Json(b): Json<PostBody>) -> ApiResult<Json<PostView>> {
    Ok(Json(post_view(s.runner.social().edit_post(&id, post_input(&b)).await?)))
}

/// Which target (all when absent), and when.
#[derive(Debug, Deserialize, ToSchema)]
pub struct TargetBody {
    /// One target's id; all the post's targets when absent.
    pub target: Option<String>,
    /// For `schedule`: the time (RFC 3339).
    pub at: Option<String>,
}

/// Schedules or reschedules a post (or one target) at a time; checked first.
#[utoipa::path(post, path = "/api/v1/social/posts/{id}/schedule", tag = "social", params(("id" = String, Path)), request_body = TargetBody,
    responses((status = 200, body = PostView), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn schedule(State(s): State<AppState>, Path(id): Path<String>, Json(b): Json<TargetBody>) -> ApiResult<Json<PostView>> {
    let Some(at) = time_param("at", b.at.as_deref())? else {
        return Err(ApiError::invalid("at", "give the time, like 2026-12-01T09:00:00Z"));
    };
    Ok(Json(post_view(s.runner.social().schedule(&id, b.target.as_deref(), at).await?)))
}

/// Puts a post (or one target) in the next free slot of its channel's queue.
#[utoipa::path(post, path = "/api/v1/social/posts/{id}/queue", tag = "social", params(("id" = String, Path)), request_body = TargetBody,
    responses((status = 200, body = PostView), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn add_to_queue(State(s): State<AppState>, Path(id): Path<String>, Json(b): Json<TargetBody>) -> ApiResult<Json<PostView>> {
    Ok(Json(post_view(s.runner.social().add_to_queue(&id, b.target.as_deref()).await?)))
}

/// Takes a post (or one target) back to draft.
#[utoipa::path(post, path = "/api/v1/social/posts/{id}/unschedule", tag = "social", params(("id" = String, Path)), request_body = TargetBody,
    responses((status = 200, body = PostView), (status = 409, body = ErrorBody)))]
pub async fn unschedule(State(s): State<AppState>, Path(id): Path<String>, Json(b): Json<TargetBody>) -> ApiResult<Json<PostView>> {
    Ok(Json(post_view(s.runner.social().unschedule(&id, b.target.as_deref()).await?)))
}

/// Cancels a post (or one target) that is not published or publishing.
#[utoipa::path(post, path = "/api/v1/social/posts/{id}/cancel", tag = "social", params(("id" = String, Path)), request_body = TargetBody,
    responses((status = 200, body = PostView), (status = 409, body = ErrorBody)))]
pub async fn cancel(State(s): State<AppState>, Path(id): Path<String>, Json(b): Json<TargetBody>) -> ApiResult<Json<PostView>> {
    Ok(Json(post_view(s.runner.social().cancel(&id, b.target.as_deref()).await?)))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ConfirmBody {
    /// The network's id of the post, when known.
    pub remote_id: Option<String>,
    /// Its address, when known.
    pub url: Option<String>,
}

/// A person says a held target is on the network: it becomes `published`.
#[utoipa::path(post, path = "/api/v1/social/posts/{id}/targets/{target}/confirm", tag = "social",
    params(("id" = String, Path), ("target" = String, Path)), request_body = ConfirmBody,
    responses((status = 200, body = PostView), (status = 409, body = ErrorBody)))]
pub async fn confirm(
    State(s): State<AppState>,
    Path((id, target)): Path<(String, String)>,
    Json(b): Json<ConfirmBody>,
) -> ApiResult<Json<PostView>> {
    Ok(Json(post_view(s.runner.social().confirm(&id, &target, b.remote_id, b.url).await?)))
}

/// A person says a held (or failed) target is not on the network: it is published now.
#[utoipa::path(post, path = "/api/v1/social/posts/{id}/targets/{target}/retry", tag = "social",
    params(("id" = String, Path), ("target" = String, Path)),
    responses((status = 200, body = PostView), (status = 409, body = ErrorBody)))]
pub async fn retry(State(s): State<AppState>, Path((id, target)): Path<(String, String)>) -> ApiResult<Json<PostView>> {
    Ok(Json(post_view(s.runner.social().retry(&id, &target).await?)))
}
