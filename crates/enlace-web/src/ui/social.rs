//! The social calendar (`/ui/social`, docs/social.md): month and week views in the viewer's
//! time zone, a chip per post and time with its status and channels, compose and edit with
//! live per-network checks, queue slots per channel, and the changes a person makes
//! (reschedule by drag or by a date-time field, queue, unschedule, cancel, confirm or retry a
//! held target).
//!
//! Every change calls the runner's `Social` service, as the API does. Placing posts on days
//! and hours (`calendar`) is a pure function, tested on its own.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Timelike};
use chrono_tz::Tz;
use enlace_core::social::{Media, Network, Slot};
use enlace_runner::social::{ChannelInput, PostInput, TargetInput, When};
use enlace_store::social::{ChannelRow, PostDetail, PostFilter, TargetRow, status};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{Form, Role, Session, UiError, UiResult, page, redirect_flash};
use crate::AppState;

/// How many media rows the compose form has.
pub const MEDIA_ROWS: usize = 4;
/// The networks a channel can be on, in the order the form lists them.
const NETWORKS: [&str; 5] = ["mastodon", "bluesky", "x", "linkedin", "facebook_page"];
const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const MEDIA_TYPES: [&str; 6] = ["image/jpeg", "image/png", "image/gif", "image/webp", "video/mp4", "video/quicktime"];

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/ui/social", get(calendar_page))
        .route("/ui/social/posts", post(create))
        .route("/ui/social/validate", post(validate))
        .route("/ui/social/posts/{id}/edit", post(edit))
        .route("/ui/social/posts/{id}/schedule", post(schedule))
        .route("/ui/social/posts/{id}/queue", post(queue))
        .route("/ui/social/posts/{id}/unschedule", post(unschedule))
        .route("/ui/social/posts/{id}/cancel", post(cancel))
        .route("/ui/social/posts/{id}/targets/{target}/confirm", post(confirm))
        .route("/ui/social/posts/{id}/targets/{target}/retry", post(retry))
        .route("/ui/social/channels", post(create_channel))
        .route("/ui/social/channels/{id}/slots", post(slots))
}

// ---------------------------------------------------------------- time

/// `month` or `week`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewKind {
    Month,
    Week,
}

/// What the calendar shows: a month or a week around `anchor`, in `tz`.
#[derive(Debug, Clone, Copy)]
pub struct View {
    pub kind: ViewKind,
    pub anchor: NaiveDate,
    pub tz: Tz,
}

impl View {
    /// The first day shown and the day after the last (whole weeks, Monday first).
    pub fn days(&self) -> (NaiveDate, NaiveDate) {
        let monday = |d: NaiveDate| d - Duration::days(d.weekday().num_days_from_monday() as i64);
        match self.kind {
            ViewKind::Week => {
                let start = monday(self.anchor);
                (start, start + Duration::days(7))
            }
            ViewKind::Month => {
                let first = self.anchor.with_day(1).unwrap_or(self.anchor);
                let next = if first.month() == 12 {
                    NaiveDate::from_ymd_opt(first.year() + 1, 1, 1)
                } else {
                    NaiveDate::from_ymd_opt(first.year(), first.month() + 1, 1)
                }
                .unwrap_or(first);
                let last = next - Duration::days(1);
                (monday(first), monday(last) + Duration::days(7))
            }
        }
    }

    /// The range in ms since the epoch, `[from, to)`.
    pub fn range_ms(&self) -> (i64, i64) {
        let (a, b) = self.days();
        (day_start(self.tz, a), day_start(self.tz, b))
    }

    /// The anchor of the previous and next page.
    fn prev_next(&self) -> (NaiveDate, NaiveDate) {
        match self.kind {
            ViewKind::Week => (self.anchor - Duration::days(7), self.anchor + Duration::days(7)),
            ViewKind::Month => {
                let first = self.anchor.with_day(1).unwrap_or(self.anchor);
                let prev = (first - Duration::days(1)).with_day(1).unwrap_or(first);
                let next = (first + Duration::days(32)).with_day(1).unwrap_or(first);
                (prev, next)
            }
        }
    }
}

/// A local time in `tz` as ms since the epoch: an ambiguous time (clocks going back) is its
/// first occurrence; a time that does not exist (clocks going forward) is an error.
pub fn local_ms(tz: Tz, t: NaiveDateTime) -> Result<i64, String> {
    match tz.from_local_datetime(&t) {
        LocalResult::Single(d) => Ok(d.timestamp_millis()),
        LocalResult::Ambiguous(a, _) => Ok(a.timestamp_millis()),
        LocalResult::None => {
            Err(format!("{} does not exist in {tz} (the clocks go forward then); pick another time", t.format("%Y-%m-%d %H:%M")))
        }
    }
}

/// The first moment of a day in `tz` (midnight, or the first hour after it that exists).
fn day_start(tz: Tz, d: NaiveDate) -> i64 {
    (0..24).find_map(|h| local_ms(tz, d.and_hms_opt(h, 0, 0)?).ok()).unwrap_or(0)
}

fn local(tz: Tz, ms: i64) -> NaiveDateTime {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default().with_timezone(&tz).naive_local()
}

/// `2026-12-01T09:30` (a `datetime-local` field) or RFC 3339, read in `tz`.
pub fn parse_local(v: &str, tz: Tz) -> Result<i64, String> {
    let v = v.trim();
    if let Ok(d) = chrono::DateTime::parse_from_rfc3339(v) {
        return Ok(d.timestamp_millis());
    }
    for f in ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(v, f) {
            return local_ms(tz, t);
        }
    }
    Err(format!("`{v}` is not a date and time; use the date picker, or write it like 2026-12-01T09:30 ({tz})"))
}

fn parse_tz(v: &str) -> Result<Tz, UiError> {
    v.trim().parse().map_err(|_| {
        UiError::new(
            StatusCode::BAD_REQUEST,
            "Please check the time zone",
            &format!("`{v}` is not a time zone."),
            Some("Use an IANA name like Europe/Madrid, America/New_York or UTC."),
        )
    })
}

// ---------------------------------------------------------------- the calendar, pure

fn excerpt(s: &str, n: usize) -> String {
    let line = s.lines().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
    let mut out: String = line.chars().take(n).collect();
    if line.chars().count() > n || s.trim().lines().count() > 1 {
        out.push('…');
    }
    out
}

fn status_badge(s: &str) -> &'static str {
    match s {
        status::PUBLISHED => "ok",
        status::FAILED => "bad",
        status::CANCELLED | status::DRAFT => "muted",
        _ => "warn",
    }
}

fn when_of(t: &TargetRow) -> Option<i64> {
    t.published_at.or(t.scheduled_at)
}

/// The chips of the posts: one per post and time (its targets at that time), with what
/// the page shows and what drag and drop sends.
pub fn chips(posts: &[PostDetail], channels: &[ChannelRow], tz: Tz, range: (i64, i64)) -> Vec<Value> {
    let mut out = vec![];
    for p in posts {
        let mut times: Vec<i64> = p.targets.iter().filter_map(when_of).collect();
        times.sort();
        times.dedup();
        for at in times.into_iter().filter(|t| *t >= range.0 && *t < range.1) {
            let group: Vec<&TargetRow> = p.targets.iter().filter(|t| when_of(t) == Some(at)).collect();
            let owned: Vec<TargetRow> = group.iter().map(|t| (*t).clone()).collect();
            let st = enlace_store::social::post_status(&owned);
            let movable: Vec<&str> =
                group.iter().filter(|t| t.status == status::SCHEDULED || t.status == status::FAILED).map(|t| t.id.as_str()).collect();
            let lt = local(tz, at);
            out.push(json!({
                "post": p.post.id,
                "at_ms": at,
                "date": lt.date().format("%Y-%m-%d").to_string(),
                "hour": lt.hour(),
                "time": lt.format("%H:%M").to_string(),
                "local": lt.format("%Y-%m-%dT%H:%M").to_string(),
                "status": st,
                "badge": status_badge(st),
                "text": excerpt(&p.post.text, 60),
                "movable": !movable.is_empty() && movable.len() == group.len(),
                "targets": movable.join(","),
                "channels": group.iter().map(|t| target_json(p, t, channels, tz)).collect::<Vec<_>>(),
            }));
        }
    }
    out
}

fn target_json(p: &PostDetail, t: &TargetRow, channels: &[ChannelRow], tz: Tz) -> Value {
    let ch = channels.iter().find(|c| c.id == t.channel_id);
    let ctz: Option<Tz> = ch.and_then(|c| c.timezone.parse().ok());
    // The channel's own clock, when it is not the viewer's.
    let channel_time = match (ctz, when_of(t)) {
        (Some(z), Some(at)) if z != tz => Some(format!("{} {z}", local(z, at).format("%a %H:%M"))),
        _ => None,
    };
    json!({
        "id": t.id,
        "post": p.post.id,
        "channel": t.channel_id,
        "name": ch.map_or(t.channel_id.as_str(), |c| c.name.as_str()),
        "network": ch.map_or("", |c| c.network.as_str()),
        "status": t.status,
        "badge": status_badge(&t.status),
        "when": when_of(t).map(|at| local(tz, at).format("%Y-%m-%d %H:%M").to_string()),
        "channel_time": channel_time,
        "url": t.remote_url.as_deref().filter(|u| u.starts_with("https://") || u.starts_with("http://")),
        "reason": t.reason,
        "held": t.status == status::HELD,
        "failed": t.status == status::FAILED,
        "published": t.status == status::PUBLISHED,
        "queued": t.queued,
    })
}

/// The queue slots of each channel that fall in the view, in the viewer's zone: `(date,
/// hour, label)`.
pub fn slot_markers(channels: &[ChannelRow], view: &View) -> Vec<(NaiveDate, u32, String)> {
    let (from, to) = view.range_ms();
    let (d0, d1) = view.days();
    let mut out = vec![];
    for ch in channels {
        let Ok(ctz) = ch.timezone.parse::<Tz>() else { continue };
        let slots: Vec<Slot> = serde_json::from_value(ch.slots.clone()).unwrap_or_default();
        for s in &slots {
            let Ok((days, minutes)) = s.parse() else { continue };
            // The channel's days around the view (its zone may be a day apart).
            let mut d = d0 - Duration::days(1);
            while d <= d1 {
                if days.contains(&d.weekday().num_days_from_monday())
                    && let Some(t) = NaiveTime::from_hms_opt(minutes / 60, minutes % 60, 0)
                    && let Ok(at) = local_ms(ctz, d.and_time(t))
                    && at >= from
                    && at < to
                {
                    let lt = local(view.tz, at);
                    let label =
                        if ctz == view.tz { format!("{} slot {}", ch.name, s.time) } else { format!("{} slot {} {ctz}", ch.name, s.time) };
                    out.push((lt.date(), lt.hour(), label));
                }
                d += Duration::days(1);
            }
        }
    }
    out
}

/// The calendar grid: weeks of days (month) or days of hours (week), each with its chips.
pub fn calendar(view: &View, posts: &[PostDetail], channels: &[ChannelRow], today: NaiveDate) -> Value {
    let range = view.range_ms();
    let chips = chips(posts, channels, view.tz, range);
    let (d0, d1) = view.days();
    let month = view.anchor.month();
    let on = |d: NaiveDate| -> Vec<Value> { chips.iter().filter(|c| c["date"] == d.format("%Y-%m-%d").to_string()).cloned().collect() };
    let day_json = |d: NaiveDate| {
        json!({
            "date": d.format("%Y-%m-%d").to_string(),
            "label": d.format("%a %-d %b").to_string(),
            "day": d.day(),
            "weekday": d.format("%a").to_string(),
            "today": d == today,
            "outside": view.kind == ViewKind::Month && d.month() != month,
        })
    };
    match view.kind {
        ViewKind::Month => {
            let mut weeks = vec![];
            let mut d = d0;
            while d < d1 {
                let days: Vec<Value> = (0..7)
                    .map(|i| {
                        let day = d + Duration::days(i);
                        let mut j = day_json(day);
                        let c = on(day);
                        j["empty"] = json!(c.is_empty());
                        j["chips"] = Value::Array(c);
                        j
                    })
                    .collect();
                weeks.push(json!({"days": days}));
                d += Duration::days(7);
            }
            json!({"weeks": weeks, "count": chips.len()})
        }
        ViewKind::Week => {
            let markers = slot_markers(channels, view);
            let days: Vec<Value> = (0..7)
                .map(|i| {
                    let day = d0 + Duration::days(i);
                    let mut j = day_json(day);
                    let c = on(day);
                    let hours: Vec<Value> = (0..24u32)
                        .map(|h| {
                            let here: Vec<Value> = c.iter().filter(|x| x["hour"] == h).cloned().collect();
                            let slots: Vec<&String> = markers.iter().filter(|(md, mh, _)| *md == day && *mh == h).map(|(_, _, l)| l).collect();
                            json!({"hour": h, "col": i, "label": format!("{h:02}:00"), "time": format!("{h:02}:00"), "empty": here.is_empty() && slots.is_empty(), "chips": here, "slots": slots})
                        })
                        .collect();
                    j["empty"] = json!(c.is_empty());
                    j["col"] = json!(i);
                    j["hours"] = Value::Array(hours);
                    j
                })
                .collect();
            json!({"days": days, "count": chips.len()})
        }
    }
}

// ---------------------------------------------------------------- the page

#[derive(Debug, Deserialize, Default)]
pub struct CalQuery {
    view: Option<String>,
    date: Option<String>,
    tz: Option<String>,
    post: Option<String>,
}

/// What the compose form holds (a new post, or the post being edited), to draw it again
/// after a refusal.
#[derive(Debug, Default, Clone)]
struct Compose {
    text: String,
    link: String,
    media: Vec<(String, String, String)>,
    channels: Vec<(String, Option<String>)>,
    at: String,
    error: Option<String>,
}

impl Compose {
    fn from_form(f: &Form) -> Compose {
        let media = (0..MEDIA_ROWS)
            .map(|i| (f.text(&format!("media_url_{i}")), f.text(&format!("media_type_{i}")), f.text(&format!("media_alt_{i}"))))
            .collect();
        let channels = f
            .0
            .iter()
            .filter(|(k, _)| k == "channel")
            .map(|(_, id)| (id.clone(), Some(f.get(&format!("override_{id}")).unwrap_or("").to_string()).filter(|t| !t.trim().is_empty())))
            .collect();
        Compose { text: f.get("text").unwrap_or("").to_string(), link: f.text("link"), media, channels, at: f.text("at"), error: None }
    }

    fn from_post(d: &PostDetail) -> Compose {
        let media: Vec<Media> = serde_json::from_value(d.post.media.clone()).unwrap_or_default();
        Compose {
            text: d.post.text.clone(),
            link: d.post.link.clone().unwrap_or_default(),
            media: media.into_iter().map(|m| (m.url, m.mime_type, m.alt.unwrap_or_default())).collect(),
            channels: d.targets.iter().map(|t| (t.channel_id.clone(), t.text.clone())).collect(),
            at: String::new(),
            error: None,
        }
    }

    /// The post as the runner takes it; media rows left empty are skipped.
    fn input(&self) -> Result<PostInput, String> {
        let mut media = vec![];
        for (i, (url, mime, alt)) in self.media.iter().enumerate() {
            if url.is_empty() && alt.is_empty() {
                continue;
            }
            if url.is_empty() {
                return Err(format!("media {}: give the address of the file (https://…) or clear its alt text", i + 1));
            }
            if mime.is_empty() {
                return Err(format!("media {}: choose its type", i + 1));
            }
            media.push(Media { url: url.clone(), mime_type: mime.clone(), alt: Some(alt.clone()).filter(|a| !a.is_empty()) });
        }
        Ok(PostInput {
            text: self.text.clone(),
            media,
            link: Some(self.link.clone()).filter(|l| !l.is_empty()),
            options: Map::new(),
            targets: self.channels.iter().map(|(c, t)| TargetInput { channel: c.clone(), text: t.clone() }).collect(),
        })
    }

    fn json(&self, channels: &[ChannelRow], editing: bool) -> Value {
        let media: Vec<Value> = (0..MEDIA_ROWS)
            .map(|i| {
                let (url, mime, alt) = self.media.get(i).cloned().unwrap_or_default();
                let types: Vec<Value> = MEDIA_TYPES.iter().map(|t| json!({"value": t, "selected": *t == mime})).collect();
                json!({"i": i, "n": i + 1, "url": url, "alt": alt, "types": types})
            })
            .collect();
        let chans: Vec<Value> = channels
            .iter()
            .filter(|c| !editing || self.channels.iter().any(|(id, _)| *id == c.id))
            .map(|c| {
                let mine = self.channels.iter().find(|(id, _)| *id == c.id);
                json!({"id": c.id, "name": c.name, "network": c.network, "timezone": c.timezone,
                       "checked": mine.is_some(), "override": mine.and_then(|(_, t)| t.clone()).unwrap_or_default()})
            })
            .collect();
        json!({"text": self.text, "link": self.link, "media": media, "channels": chans, "at": self.at, "error": self.error,
               "has_media": self.media.iter().any(|(u, _, _)| !u.is_empty())})
    }
}

fn view_of(q: &CalQuery, channels: &[ChannelRow], now: i64) -> Result<View, UiError> {
    let tz = match q.tz.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
        Some(t) => parse_tz(t)?,
        None => channels.first().and_then(|c| c.timezone.parse().ok()).unwrap_or(chrono_tz::UTC),
    };
    let kind = match q.view.as_deref() {
        Some("week") => ViewKind::Week,
        None | Some("") | Some("month") => ViewKind::Month,
        Some(v) => {
            return Err(UiError::new(
                StatusCode::BAD_REQUEST,
                "Please check the address",
                &format!("`{v}` is not a view."),
                Some("Use view=month or view=week."),
            ));
        }
    };
    let anchor = match q.date.as_deref().map(str::trim).filter(|d| !d.is_empty()) {
        Some(d) => NaiveDate::parse_from_str(d, "%Y-%m-%d").map_err(|_| {
            UiError::new(
                StatusCode::BAD_REQUEST,
                "Please check the address",
                &format!("`{d}` is not a date."),
                Some("Write it like 2026-12-01."),
            )
        })?,
        None => local(tz, now).date(),
    };
    Ok(View { kind, anchor, tz })
}

fn href(view: ViewKind, date: NaiveDate, tz: Tz, post: Option<&str>) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    s.append_pair("view", if view == ViewKind::Week { "week" } else { "month" });
    s.append_pair("date", &date.format("%Y-%m-%d").to_string());
    s.append_pair("tz", tz.name());
    if let Some(p) = post {
        s.append_pair("post", p);
    }
    format!("/ui/social?{}", s.finish())
}

fn channel_json(c: &ChannelRow) -> Value {
    let slots: Vec<Slot> = serde_json::from_value(c.slots.clone()).unwrap_or_default();
    json!({
        "id": c.id, "name": c.name, "network": c.network, "timezone": c.timezone, "connection": c.connection_id,
        "paused": c.paused_reason.is_some(), "paused_reason": c.paused_reason,
        "slots": slots.iter().enumerate().map(|(i, s)| json!({
            "i": i,
            "days": if s.days.is_empty() { "every day".to_string() } else { s.days.join(", ") },
            "time": s.time,
        })).collect::<Vec<_>>(),
    })
}

/// The whole page: the calendar, the selected post, the compose form, drafts and channels.
async fn render_page(s: &AppState, sess: &Session, q: &CalQuery, compose: Option<Compose>, status_code: StatusCode) -> UiResult {
    let social = s.runner.social();
    let channels = social.channels().await?;
    let now = s.runner.now_ms();
    let view = view_of(q, &channels, now)?;
    let (from, to) = view.range_ms();
    let posts = social.posts(&PostFilter { from: Some(from), to: Some(to), limit: 1000, ..Default::default() }).await?;
    let drafts = social.posts(&PostFilter { status: Some(status::DRAFT.into()), limit: 200, ..Default::default() }).await?;
    let today = local(view.tz, now).date();
    let grid = calendar(&view, &posts, &channels, today);
    let (prev, next) = view.prev_next();
    let selected = match q.post.as_deref().filter(|p| !p.is_empty()) {
        Some(id) => Some(social.post(id).await?),
        None => None,
    };
    let here = href(view.kind, view.anchor, view.tz, selected.as_ref().map(|d| d.post.id.as_str()));
    let editable =
        |d: &PostDetail| !d.targets.iter().any(|t| [status::PUBLISHING, status::PUBLISHED, status::HELD].contains(&t.status.as_str()));
    let selected_json = selected.as_ref().map(|d| {
        let first = d.targets.iter().filter_map(|t| t.scheduled_at).min();
        json!({
            "id": d.post.id,
            "text": d.post.text,
            "link": d.post.link,
            "status": d.status,
            "badge": status_badge(&d.status),
            "origin": d.post.origin,
            "targets": d.targets.iter().map(|t| target_json(d, t, &channels, view.tz)).collect::<Vec<_>>(),
            "at": first.map(|t| local(view.tz, t).format("%Y-%m-%dT%H:%M").to_string()),
            "can_schedule": d.targets.iter().any(|t| [status::DRAFT, status::SCHEDULED, status::FAILED].contains(&t.status.as_str())),
            "can_unschedule": d.targets.iter().any(|t| [status::SCHEDULED, status::FAILED].contains(&t.status.as_str())),
            "can_cancel": d.targets.iter().any(|t| [status::DRAFT, status::SCHEDULED, status::FAILED, status::HELD].contains(&t.status.as_str())),
            "editable": editable(d),
            "close": href(view.kind, view.anchor, view.tz, None),
        })
    });
    let editing = compose.is_none() && selected.as_ref().is_some_and(editable);
    let compose = match (compose, &selected) {
        (Some(c), _) => c,
        (None, Some(d)) if editing => Compose::from_post(d),
        _ => Compose::default(),
    };
    let editing = editing || (q.post.is_some() && compose.error.is_some() && selected.is_some());
    let mut zones: Vec<String> = vec!["UTC".into(), view.tz.name().into()];
    for c in &channels {
        zones.push(c.timezone.clone());
    }
    zones.sort();
    zones.dedup();
    let networks: Vec<Value> = NETWORKS
        .iter()
        .map(|n| {
            let net = Network::parse(n).ok();
            let param = net.and_then(|x| x.required_params().first().copied());
            json!({"value": n, "param": param.map(|p| p.0), "param_help": param.map(|p| p.1)})
        })
        .collect();
    let apps: Vec<&str> = NETWORKS.iter().filter_map(|n| Network::parse(n).ok()).map(|n| n.publisher().app).collect();
    let connections: Vec<Value> = s
        .runner
        .store()
        .list_connections()
        .await?
        .iter()
        .filter(|c| apps.contains(&c.app.as_str()))
        .map(|c| json!({"id": c.id, "app": c.app, "name": c.name}))
        .collect();
    let title = match view.kind {
        ViewKind::Month => view.anchor.format("%B %Y").to_string(),
        ViewKind::Week => {
            let (a, b) = view.days();
            format!("Week of {} – {}", a.format("%-d %b"), (b - Duration::days(1)).format("%-d %b %Y"))
        }
    };
    let mut resp = page(
        sess,
        "Social calendar",
        "social",
        json!({
            "view": if view.kind == ViewKind::Week { "week" } else { "month" },
            "is_week": view.kind == ViewKind::Week,
            "period": title,
            "tz": view.tz.name(),
            "date": view.anchor.format("%Y-%m-%d").to_string(),
            "zones": zones,
            "here": here,
            "select_base": format!("{}&post=", href(view.kind, view.anchor, view.tz, None)),
            "links": {
                "prev": href(view.kind, prev, view.tz, None),
                "next": href(view.kind, next, view.tz, None),
                "today": href(view.kind, today, view.tz, None),
                "month": href(ViewKind::Month, view.anchor, view.tz, None),
                "week": href(ViewKind::Week, view.anchor, view.tz, None),
            },
            "weekdays": ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"],
            "grid": grid,
            "selected": selected_json,
            "compose": compose.json(&channels, editing),
            "editing": editing,
            "drafts": drafts.iter().map(|d| json!({
                "id": d.post.id, "text": excerpt(&d.post.text, 80),
                "href": href(view.kind, view.anchor, view.tz, Some(&d.post.id)),
                "channels": d.targets.iter().map(|t| channels.iter().find(|c| c.id == t.channel_id).map_or(t.channel_id.clone(), |c| c.name.clone())).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "channels": channels.iter().map(channel_json).collect::<Vec<_>>(),
            "networks": networks,
            "connections": connections,
            "days": DAYS,
        }),
    );
    *resp.status_mut() = status_code;
    Ok(resp)
}

async fn calendar_page(State(s): State<AppState>, sess: Session, Query(q): Query<CalQuery>) -> UiResult {
    render_page(&s, &sess, &q, None, StatusCode::OK).await
}

/// Where to go back to: a calendar address from the form, else the calendar.
fn back(f: &Form) -> String {
    match f.get("back") {
        Some(b) if b.starts_with("/ui/social") && !b.contains("//") && !b.contains('\\') => b.to_string(),
        _ => "/ui/social".into(),
    }
}

fn query_of(back: &str) -> CalQuery {
    let mut q = CalQuery::default();
    if let Some((_, qs)) = back.split_once('?') {
        for (k, v) in form_urlencoded::parse(qs.as_bytes()) {
            let v = Some(v.into_owned());
            match &*k {
                "view" => q.view = v,
                "date" => q.date = v,
                "tz" => q.tz = v,
                "post" => q.post = v,
                _ => {}
            }
        }
    }
    q
}

fn form_tz(f: &Form) -> Result<Tz, UiError> {
    match f.get("tz").map(str::trim).filter(|t| !t.is_empty()) {
        Some(t) => parse_tz(t),
        None => Ok(chrono_tz::UTC),
    }
}

/// Creates a post: saved as a draft, added to each channel's queue, or scheduled at a time.
async fn create(State(s): State<AppState>, sess: Session, body: Bytes) -> UiResult {
    sess.require(Role::Editor)?;
    let f = Form::parse(&body);
    let to = back(&f);
    let mut compose = Compose::from_form(&f);
    let result: Result<PostDetail, String> = async {
        let input = compose.input()?;
        let when = match f.get("when") {
            Some("queue") => When::Queue,
            Some("at") => {
                let tz = form_tz(&f).map_err(|e| e.message)?;
                if compose.at.is_empty() {
                    return Err("give the date and time to schedule at (or add it to the queue, or save a draft)".to_string());
                }
                When::At(parse_local(&compose.at, tz)?)
            }
            _ => When::Draft,
        };
        s.runner.social().create_post(input, when, &format!("ui:{}", sess.username), None).await.map_err(|e| UiError::from(e).message)
    }
    .await;
    match result {
        Ok(d) => {
            let mut q = query_of(&to);
            q.post = Some(d.post.id.clone());
            let tz = q.tz.as_deref().and_then(|t| t.parse().ok()).unwrap_or(chrono_tz::UTC);
            let first = d.targets.iter().filter_map(|t| t.scheduled_at).min();
            let msg = match first {
                None => "Saved as a draft.".to_string(),
                Some(t) => format!("Scheduled: {} ({tz}).", local(tz, t).format("%Y-%m-%d %H:%M")),
            };
            // Show the month of the post's first time.
            let date = d.targets.iter().filter_map(|t| t.scheduled_at).min().map(|t| local(tz, t).date());
            let kind = if q.view.as_deref() == Some("week") { ViewKind::Week } else { ViewKind::Month };
            let anchor = date
                .or_else(|| q.date.as_deref().and_then(|x| NaiveDate::parse_from_str(x, "%Y-%m-%d").ok()))
                .unwrap_or_else(|| local(tz, s.runner.now_ms()).date());
            Ok(redirect_flash(&href(kind, anchor, tz, Some(&d.post.id)), "ok", &msg))
        }
        Err(e) => {
            compose.error = Some(e);
            let q = query_of(&to);
            render_page(&s, &sess, &q, Some(compose), StatusCode::UNPROCESSABLE_ENTITY).await
        }
    }
}

/// Edits a post's text, link, media and per-channel texts.
async fn edit(State(s): State<AppState>, sess: Session, Path(id): Path<String>, body: Bytes) -> UiResult {
    sess.require(Role::Editor)?;
    let f = Form::parse(&body);
    let to = back(&f);
    let mut compose = Compose::from_form(&f);
    let result = match compose.input() {
        Ok(input) => s.runner.social().edit_post(&id, input).await.map_err(|e| UiError::from(e).message),
        Err(e) => Err(e),
    };
    match result {
        Ok(_) => Ok(redirect_flash(&to, "ok", "The post is saved.")),
        Err(e) => {
            compose.error = Some(e);
            let mut q = query_of(&to);
            q.post = Some(id);
            render_page(&s, &sess, &q, Some(compose), StatusCode::UNPROCESSABLE_ENTITY).await
        }
    }
}

/// The live check of the compose form: each chosen channel's network, its count in the
/// network's unit, the text it would post, and what to change. JSON for `calendar.js`.
async fn validate(State(s): State<AppState>, sess: Session, body: Bytes) -> UiResult<Response> {
    sess.require(Role::Editor)?;
    let f = Form::parse(&body);
    let compose = Compose::from_form(&f);
    if compose.channels.is_empty() {
        return Ok(axum::Json(json!({"checks": [], "message": "Choose at least one channel to see its preview."})).into_response());
    }
    let input = match compose.input() {
        Ok(i) => i,
        Err(e) => return Ok(axum::Json(json!({"checks": [], "message": e})).into_response()),
    };
    let checked = match s.runner.social().validate(&input).await {
        Ok(c) => c,
        Err(e) => return Ok(axum::Json(json!({"checks": [], "message": UiError::from(e).message})).into_response()),
    };
    let checks: Vec<Value> = checked
        .into_iter()
        .map(|(ch, r)| {
            let own = input.targets.iter().find(|t| t.channel == ch.id).and_then(|t| t.text.clone());
            let text = own.as_deref().unwrap_or(&input.text);
            let preview = Network::parse(&ch.network).map(|n| n.text_with_link(text, input.link.as_deref())).unwrap_or_default();
            match r {
                Ok(m) => json!({"channel": ch.id, "name": ch.name, "network": ch.network, "ok": true, "preview": preview,
                                "count": format!("{}/{} {}", m.length, m.max, m.unit), "problems": []}),
                Err(p) => json!({"channel": ch.id, "name": ch.name, "network": ch.network, "ok": false, "preview": preview,
                                 "count": Value::Null,
                                 "problems": p.iter().map(|x| format!("{}: {}", x.field, x.message)).collect::<Vec<_>>()}),
            }
        })
        .collect();
    Ok(axum::Json(json!({"checks": checks})).into_response())
}

fn wants_json(h: &HeaderMap) -> bool {
    h.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("application/json"))
}

/// The answer of a change: a redirect with a message, or JSON for the drag and drop.
fn answer(h: &HeaderMap, to: &str, r: Result<String, UiError>, extra: Value) -> Response {
    match (wants_json(h), r) {
        (true, Ok(msg)) => {
            let mut v = json!({"ok": true, "message": msg});
            if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
                o.extend(e.clone());
            }
            axum::Json(v).into_response()
        }
        (true, Err(e)) => (e.status, axum::Json(json!({"ok": false, "error": e.message}))).into_response(),
        (false, Ok(msg)) => redirect_flash(to, "ok", &msg),
        (false, Err(e)) => redirect_flash(to, "error", &e.message),
    }
}

/// The answer refusing a person below the editor role (JSON for the drag and drop), if so.
fn refused(sess: &Session, h: &HeaderMap) -> Option<Response> {
    let e = sess.require(Role::Editor).err()?;
    Some(if wants_json(h) { (e.status, axum::Json(json!({"ok": false, "error": e.message}))).into_response() } else { e.into_response() })
}

/// Reschedules a post (its targets named in `targets`, else all that can move) at `at`, a
/// local time in `tz`: the drag and drop and the keyboard's date-time field both come here.
async fn schedule(State(s): State<AppState>, sess: Session, headers: HeaderMap, Path(id): Path<String>, body: Bytes) -> Response {
    if let Some(r) = refused(&sess, &headers) {
        return r;
    }
    let f = Form::parse(&body);
    let to = back(&f);
    let r: Result<(String, i64), UiError> = async {
        let tz = form_tz(&f)?;
        let at = parse_local(&f.text("at"), tz).map_err(|e| UiError::new(StatusCode::BAD_REQUEST, "Please check the time", &e, None))?;
        let social = s.runner.social();
        let targets: Vec<String> = f.text("targets").split(',').map(str::trim).filter(|t| !t.is_empty()).map(str::to_string).collect();
        if targets.is_empty() {
            let d = social.post(&id).await?;
            let movable: Vec<&TargetRow> =
                d.targets.iter().filter(|t| [status::DRAFT, status::SCHEDULED, status::FAILED].contains(&t.status.as_str())).collect();
            if movable.len() == d.targets.len() {
                social.schedule(&id, None, at).await?;
            } else {
                for t in movable {
                    social.schedule(&id, Some(&t.id), at).await?;
                }
            }
        } else {
            for t in &targets {
                social.schedule(&id, Some(t), at).await?;
            }
        }
        let lt = local(tz, at);
        Ok((format!("Rescheduled to {} ({tz}).", lt.format("%a %-d %b %Y %H:%M")), at))
    }
    .await;
    let extra = match &r {
        Ok((_, at)) => {
            let tz = form_tz(&f).unwrap_or(chrono_tz::UTC);
            let lt = local(tz, *at);
            json!({"date": lt.format("%Y-%m-%d").to_string(), "time": lt.format("%H:%M").to_string(), "local": lt.format("%Y-%m-%dT%H:%M").to_string(), "hour": lt.hour()})
        }
        Err(_) => json!({}),
    };
    answer(&headers, &to, r.map(|(m, _)| m), extra)
}

fn target_field(f: &Form) -> Option<String> {
    Some(f.text("target")).filter(|t| !t.is_empty())
}

async fn queue(State(s): State<AppState>, sess: Session, headers: HeaderMap, Path(id): Path<String>, body: Bytes) -> Response {
    if let Some(r) = refused(&sess, &headers) {
        return r;
    }
    let f = Form::parse(&body);
    let r = s.runner.social().add_to_queue(&id, target_field(&f).as_deref()).await.map_err(UiError::from).map(|d| {
        format!(
            "Added to the queue: {}.",
            d.targets.iter().filter_map(|t| t.scheduled_at).min().map(super::pages::when).unwrap_or_default()
        )
    });
    answer(&headers, &back(&f), r, json!({}))
}

async fn unschedule(State(s): State<AppState>, sess: Session, headers: HeaderMap, Path(id): Path<String>, body: Bytes) -> Response {
    if let Some(r) = refused(&sess, &headers) {
        return r;
    }
    let f = Form::parse(&body);
    let r = s
        .runner
        .social()
        .unschedule(&id, target_field(&f).as_deref())
        .await
        .map_err(UiError::from)
        .map(|_| "Back to draft: it will not be published until it is scheduled again.".to_string());
    answer(&headers, &back(&f), r, json!({}))
}

async fn cancel(State(s): State<AppState>, sess: Session, headers: HeaderMap, Path(id): Path<String>, body: Bytes) -> Response {
    if let Some(r) = refused(&sess, &headers) {
        return r;
    }
    let f = Form::parse(&body);
    let r = s.runner.social().cancel(&id, target_field(&f).as_deref()).await.map_err(UiError::from).map(|_| "Cancelled.".to_string());
    answer(&headers, &back(&f), r, json!({}))
}

async fn confirm(
    State(s): State<AppState>,
    sess: Session,
    headers: HeaderMap,
    Path((id, target)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    if let Some(r) = refused(&sess, &headers) {
        return r;
    }
    let f = Form::parse(&body);
    let url = Some(f.text("url")).filter(|u| !u.is_empty());
    let r = s.runner.social().confirm(&id, &target, None, url).await.map_err(UiError::from).map(|_| "Marked as published.".to_string());
    answer(&headers, &back(&f), r, json!({}))
}

async fn retry(
    State(s): State<AppState>,
    sess: Session,
    headers: HeaderMap,
    Path((id, target)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    if let Some(r) = refused(&sess, &headers) {
        return r;
    }
    let f = Form::parse(&body);
    let r = s.runner.social().retry(&id, &target).await.map_err(UiError::from).map(|_| "Publishing it again now.".to_string());
    answer(&headers, &back(&f), r, json!({}))
}

/// Adds a channel: a network, a connection to its app, the account parameter it needs, a
/// time zone.
async fn create_channel(State(s): State<AppState>, sess: Session, body: Bytes) -> UiResult {
    sess.require(Role::Editor)?;
    let f = Form::parse(&body);
    let to = back(&f);
    let network = f.text("network");
    let mut params = Map::new();
    if let Ok(n) = Network::parse(&network)
        && let Some((key, _)) = n.required_params().first()
    {
        params.insert((*key).to_string(), Value::String(f.text("account")));
    }
    let input = ChannelInput {
        name: f.text("name"),
        network,
        connection: Some(f.text("connection")).filter(|c| !c.is_empty()),
        params,
        timezone: Some(f.text("timezone")).filter(|t| !t.is_empty()).unwrap_or_else(|| "UTC".into()),
        slots: vec![],
    };
    Ok(match s.runner.social().create_channel(input).await {
        Ok(c) => redirect_flash(&to, "ok", &format!("The channel {} is ready. Add its queue time slots below.", c.name)),
        Err(e) => redirect_flash(&to, "error", &UiError::from(e).message),
    })
}

/// Adds a queue slot to a channel (`add`: days and a time) or removes one (`remove`: its
/// index), through the channel's update.
async fn slots(State(s): State<AppState>, sess: Session, Path(id): Path<String>, body: Bytes) -> UiResult {
    sess.require(Role::Editor)?;
    let f = Form::parse(&body);
    let to = back(&f);
    let social = s.runner.social();
    let ch = social.channel(&id).await?;
    let mut slots: Vec<Slot> = serde_json::from_value(ch.slots.clone()).unwrap_or_default();
    let msg = match f.get("remove") {
        Some(i) => {
            let i: usize = i.parse().map_err(|_| UiError::new(StatusCode::BAD_REQUEST, "Please check the form", "No such slot.", None))?;
            if i >= slots.len() {
                return Ok(redirect_flash(&to, "error", "That slot is gone already; reload the page."));
            }
            let gone = slots.remove(i);
            format!("Removed the {} slot of {}.", gone.time, ch.name)
        }
        None => {
            let days: Vec<String> = f.0.iter().filter(|(k, _)| k == "day").map(|(_, v)| v.clone()).collect();
            let slot = Slot { days, time: f.text("time") };
            if let Err(e) = slot.parse() {
                return Ok(redirect_flash(&to, "error", &format!("The slot was not added: {e}")));
            }
            let msg = format!("Added a {} slot to {}.", slot.time, ch.name);
            slots.push(slot);
            msg
        }
    };
    let input = ChannelInput {
        name: ch.name.clone(),
        network: ch.network.clone(),
        connection: ch.connection_id.clone(),
        params: ch.params.as_object().cloned().unwrap_or_default(),
        timezone: ch.timezone.clone(),
        slots,
    };
    Ok(match social.update_channel(&id, input).await {
        Ok(_) => redirect_flash(&to, "ok", &msg),
        Err(e) => redirect_flash(&to, "error", &UiError::from(e).message),
    })
}

#[cfg(test)]
pub(super) mod tests;
