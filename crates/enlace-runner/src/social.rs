//! Social post scheduling: channels, posts and their targets (one per post and channel),
//! and publishing them at their time.
//!
//! A target is a durable timer in the store (`social_targets.due_at`). A loop on every
//! worker node sleeps until the next due target (at most 250 ms, so a post goes within a
//! second of its time, also after a restart), claims due targets with a lease and publishes
//! each with the network's app (`enlace_core::social::Network::publisher`). Publishing never
//! posts twice:
//!
//! - the target's id is the call's idempotency key (Mastodon gets it as `Idempotency-Key`);
//! - `sent_at` is written, durably, before the request leaves; a call that times out after
//!   it left (`maybe_delivered`), or a target claimed again after its node died with
//!   `sent_at` set, "may have been published": the network's recent posts are read (where
//!   its API allows: Mastodon, Bluesky, X) and the post is published only if it is not there;
//!   where they cannot be read (LinkedIn, Facebook page) the target is `held` for a person
//!   to confirm or retry. Nothing is resent blindly.
//! - a 429 waits exactly the `Retry-After` the network gave (the connection's budget is held
//!   that long for every caller); other passing faults back off (2^attempt s, at most an hour,
//!   8 attempts);
//! - refused credentials pause the channel (its `paused_reason` says why; other channels go
//!   on) and mark an OAuth2 connection `needs_reconnect`; repairing the connection resumes
//!   its channels, and the waiting targets go at once.

use std::sync::Arc;
use std::time::Duration;

use enlace_core::social::{InstanceLimits, Media, Network, Problem, Slot, next_free_slot, validate};
use enlace_core::{ActionContext, ConnectorError, Credentials, ErrorClass};
use enlace_store::StoreError;
use enlace_store::social::{
    ChannelRow, ChannelWrite, NewPost, NewTarget, PostDetail, PostFilter, PostRow, TargetChange, TargetOutcome, TargetRow, status,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{Inner, RunnerError, clock::rfc3339};

/// Attempts of a target that meets passing faults before it fails.
pub const PUBLISH_ATTEMPTS: i64 = 8;
/// How far ahead "add to queue" looks for a free slot.
pub const QUEUE_HORIZON_DAYS: u32 = 400;
/// How long the instance limits a channel read stay fresh.
const LIMITS_TTL_MS: i64 = 24 * 3600 * 1000;
/// The longest the loop sleeps between looks at the store.
const TICK: Duration = Duration::from_millis(250);

/// A channel as the API and CLI give it.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ChannelInput {
    pub name: String,
    pub network: String,
    #[serde(default)]
    pub connection: Option<String>,
    #[serde(default)]
    pub params: serde_json::Map<String, Value>,
    #[serde(default = "utc")]
    pub timezone: String,
    #[serde(default)]
    pub slots: Vec<Slot>,
}

fn utc() -> String {
    "UTC".into()
}

/// Where a post goes, with this channel's own text if it differs.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct TargetInput {
    pub channel: String,
    #[serde(default)]
    pub text: Option<String>,
}

/// When a new post goes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum When {
    /// Not scheduled.
    Draft,
    /// At this time (ms since the epoch).
    At(i64),
    /// The next free slot of each channel's queue.
    Queue,
}

/// A post to create.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct PostInput {
    #[serde(default)]
    pub text: String,
    #[serde(default)]
    pub media: Vec<Media>,
    #[serde(default)]
    pub link: Option<String>,
    /// `visibility` (Mastodon: public, unlisted, private, direct; LinkedIn: PUBLIC,
    /// CONNECTIONS), `content_warning`, `language` (ISO 639-1).
    #[serde(default)]
    pub options: serde_json::Map<String, Value>,
    pub targets: Vec<TargetInput>,
}

pub use enlace_store::social::post_status;

/// The social scheduler's service, for the API, the CLI and the `social` app.
#[derive(Clone)]
pub struct Social {
    inner: Arc<Inner>,
}

fn store_err(e: StoreError) -> RunnerError {
    RunnerError::from(e)
}

impl Social {
    pub(crate) fn new(inner: Arc<Inner>) -> Self {
        Social { inner }
    }

    fn now(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    async fn checked_channel(&self, c: ChannelInput) -> Result<ChannelWrite, RunnerError> {
        let network = Network::parse(&c.network).map_err(RunnerError::Invalid)?;
        if c.name.trim().is_empty() {
            return Err(RunnerError::Invalid("the channel needs a `name`".into()));
        }
        for (key, what) in network.required_params() {
            if c.params.get(*key).and_then(Value::as_str).is_none_or(|s| s.trim().is_empty()) {
                return Err(RunnerError::Invalid(format!("a {network} channel needs `params.{key}`: {what}")));
            }
        }
        if network == Network::Linkedin
            && let Some(a) = c.params.get("author").and_then(Value::as_str)
            && !(a.starts_with("urn:li:person:") || a.starts_with("urn:li:organization:"))
        {
            return Err(RunnerError::Invalid(format!(
                "`params.author` `{a}` is not a LinkedIn author URN; write urn:li:person:ID or urn:li:organization:ID"
            )));
        }
        let _: chrono_tz::Tz = c.timezone.parse().map_err(|_| {
            RunnerError::Invalid(format!("`{}` is not a time zone; use an IANA name like Europe/Madrid or America/New_York", c.timezone))
        })?;
        for (i, s) in c.slots.iter().enumerate() {
            s.parse().map_err(|e| RunnerError::Invalid(format!("slots[{i}]: {e}")))?;
        }
        if let Some(conn) = &c.connection {
            let app = network.publisher().app;
            match self.inner.store.connection(conn).await.map_err(store_err)? {
                None => {
                    return Err(RunnerError::Invalid(format!(
                        "no connection `{conn}`; create one for `{app}` with `enlace connections create` or POST /api/v1/connections"
                    )));
                }
                Some((row, _)) if row.app != app => {
                    return Err(RunnerError::Invalid(format!(
                        "the connection `{conn}` is for `{}`; a {network} channel needs one for `{app}`",
                        row.app
                    )));
                }
                Some(_) => {}
            }
        } else {
            return Err(RunnerError::Invalid(format!("the channel needs a `connection` to the `{}` app", network.publisher().app)));
        }
        Ok(ChannelWrite {
            name: c.name.trim().to_string(),
            network: network.as_str().into(),
            connection_id: c.connection,
            params: Value::Object(c.params),
            timezone: c.timezone,
            slots: serde_json::to_value(&c.slots).unwrap_or(Value::Null),
        })
    }

    pub async fn create_channel(&self, c: ChannelInput) -> Result<ChannelRow, RunnerError> {
        let w = self.checked_channel(c).await?;
        Ok(self.inner.store.create_channel(w, self.now()).await?)
    }

    pub async fn update_channel(&self, id: &str, c: ChannelInput) -> Result<ChannelRow, RunnerError> {
        let w = self.checked_channel(c).await?;
        self.inner.store.update_channel(id, w, self.now()).await?.ok_or_else(|| RunnerError::NotFound(format!("no channel `{id}`")))
    }

    pub async fn channel(&self, id: &str) -> Result<ChannelRow, RunnerError> {
        self.inner.store.channel(id).await?.ok_or_else(|| RunnerError::NotFound(format!("no channel `{id}`")))
    }

    pub async fn channels(&self) -> Result<Vec<ChannelRow>, RunnerError> {
        Ok(self.inner.store.list_channels().await?)
    }

    pub async fn delete_channel(&self, id: &str) -> Result<(), RunnerError> {
        if self.inner.store.delete_channel(id).await? { Ok(()) } else { Err(RunnerError::NotFound(format!("no channel `{id}`"))) }
    }

    /// Pauses a channel by hand (its posts wait).
    pub async fn pause_channel(&self, id: &str, reason: &str) -> Result<ChannelRow, RunnerError> {
        self.channel(id).await?;
        self.inner.store.pause_channel(id, reason, self.now()).await?;
        self.channel(id).await
    }

    /// Resumes a paused channel: its waiting posts go at once.
    pub async fn resume_channel(&self, id: &str) -> Result<ChannelRow, RunnerError> {
        self.channel(id).await?;
        self.inner.store.resume_channels(Some(id), None, self.now()).await?;
        self.inner.social_wake.notify_one();
        self.channel(id).await
    }

    /// Checks a post against every channel it targets; every problem, prefixed with its
    /// channel. Channels are read from the store (their networks and instance limits).
    pub async fn validate(
        &self,
        p: &PostInput,
    ) -> Result<Vec<(ChannelRow, Result<enlace_core::social::Measure, Vec<Problem>>)>, RunnerError> {
        if p.targets.is_empty() {
            return Err(RunnerError::Invalid("the post needs at least one target channel: `targets: [{channel: ID}]`".into()));
        }
        let mut out = vec![];
        let mut seen = std::collections::HashSet::new();
        for t in &p.targets {
            if !seen.insert(t.channel.clone()) {
                return Err(RunnerError::Invalid(format!("the channel `{}` is named twice in `targets`", t.channel)));
            }
            let ch =
                self.inner.store.channel(&t.channel).await?.ok_or_else(|| {
                    RunnerError::Invalid(format!("no channel `{}`; list them with GET /api/v1/social/channels", t.channel))
                })?;
            let result = check_post(&ch, t.text.as_deref().unwrap_or(&p.text), p.link.as_deref(), &p.media, &p.options);
            out.push((ch, result));
        }
        Ok(out)
    }

    async fn validated(&self, p: &PostInput) -> Result<Vec<ChannelRow>, RunnerError> {
        let checked = self.validate(p).await?;
        let mut msgs = vec![];
        for (ch, r) in &checked {
            if let Err(problems) = r {
                for pr in problems {
                    msgs.push(format!("channel `{}` ({}): {pr}", ch.name, ch.network));
                }
            }
        }
        if !msgs.is_empty() {
            return Err(RunnerError::Invalid(format!("the post does not fit: {}", msgs.join("; "))));
        }
        Ok(checked.into_iter().map(|(c, _)| c).collect())
    }

    /// Creates a post: a draft, at a time, or in the next free slot of each channel's queue.
    /// Validated per network unless it is a draft. With `dedupe_key` (a recipe step's
    /// idempotency key), a second call gives back the first post.
    pub async fn create_post(&self, p: PostInput, when: When, origin: &str, dedupe_key: Option<String>) -> Result<PostDetail, RunnerError> {
        let now = self.now();
        let channels =
            if when == When::Draft { self.validate(&p).await?.into_iter().map(|(c, _)| c).collect() } else { self.validated(&p).await? };
        if let When::At(t) = when
            && t < now - 60_000
        {
            return Err(RunnerError::Invalid(format!("the time {} is in the past; give a time from now on", rfc3339(t))));
        }
        let mut tries = 0;
        loop {
            let mut targets = vec![];
            for (t, ch) in p.targets.iter().zip(&channels) {
                let (st, at, queued) = match when {
                    When::Draft => (status::DRAFT, None, false),
                    When::At(at) => (status::SCHEDULED, Some(at), false),
                    When::Queue => (status::SCHEDULED, Some(self.next_slot(ch, now).await?), true),
                };
                targets.push(NewTarget { channel_id: ch.id.clone(), text: t.text.clone(), status: st, scheduled_at: at, queued });
            }
            let np = NewPost {
                text: p.text.clone(),
                media: serde_json::to_value(&p.media).unwrap_or(Value::Null),
                link: p.link.clone(),
                options: Value::Object(p.options.clone()),
                origin: origin.to_string(),
                dedupe_key: dedupe_key.clone(),
                targets,
            };
            match self.inner.store.create_post(np, now).await {
                Ok((d, _)) => {
                    self.inner.social_wake.notify_one();
                    return Ok(d);
                }
                // Another post took the slot meanwhile: take the next one.
                Err(StoreError::Conflict(_)) if when == When::Queue && tries < 5 => tries += 1,
                Err(e) => return Err(e.into()),
            }
        }
    }

    async fn next_slot(&self, ch: &ChannelRow, now: i64) -> Result<i64, RunnerError> {
        let slots: Vec<Slot> = serde_json::from_value(ch.slots.clone()).unwrap_or_default();
        let tz: chrono_tz::Tz = ch.timezone.parse().unwrap_or(chrono_tz::UTC);
        let horizon = now + QUEUE_HORIZON_DAYS as i64 * 86_400_000;
        let taken = self.inner.store.taken_slots(&ch.id, now, horizon).await?;
        match next_free_slot(&slots, tz, now, &taken, QUEUE_HORIZON_DAYS) {
            Ok(Some(t)) => Ok(t),
            Ok(None) => Err(RunnerError::Conflict(format!(
                "the queue of channel `{}` is full for the next {QUEUE_HORIZON_DAYS} days: add time slots or schedule at a time",
                ch.name
            ))),
            Err(e) => Err(RunnerError::Invalid(format!("channel `{}`: {e}", ch.name))),
        }
    }

    /// The next `count` free slots of a channel's queue.
    pub async fn free_slots(&self, id: &str, count: usize) -> Result<Vec<i64>, RunnerError> {
        let ch = self.channel(id).await?;
        let slots: Vec<Slot> = serde_json::from_value(ch.slots.clone()).unwrap_or_default();
        let tz: chrono_tz::Tz = ch.timezone.parse().unwrap_or(chrono_tz::UTC);
        let now = self.now();
        let mut taken = self.inner.store.taken_slots(&ch.id, now, now + QUEUE_HORIZON_DAYS as i64 * 86_400_000).await?;
        let mut out = vec![];
        let mut after = now;
        while out.len() < count {
            match next_free_slot(&slots, tz, after, &taken, QUEUE_HORIZON_DAYS)
                .map_err(|e| RunnerError::Invalid(format!("channel `{}`: {e}", ch.name)))?
            {
                Some(t) => {
                    out.push(t);
                    taken.push(t);
                    after = t;
                }
                None => break,
            }
        }
        Ok(out)
    }

    pub async fn post(&self, id: &str) -> Result<PostDetail, RunnerError> {
        self.inner.store.post(id).await?.ok_or_else(|| RunnerError::NotFound(format!("no post `{id}`")))
    }

    pub async fn posts(&self, f: &PostFilter) -> Result<Vec<PostDetail>, RunnerError> {
        Ok(self.inner.store.list_posts(f).await?)
    }

    /// Replaces a post's content (and per-channel texts) before it is published; checked
    /// again against its scheduled channels.
    pub async fn edit_post(&self, id: &str, p: PostInput) -> Result<PostDetail, RunnerError> {
        let current = self.post(id).await?;
        let scheduled = current.targets.iter().any(|t| t.status == status::SCHEDULED);
        // Targets not named keep their channel and text.
        let mut full = p.clone();
        if full.targets.is_empty() {
            full.targets = current.targets.iter().map(|t| TargetInput { channel: t.channel_id.clone(), text: t.text.clone() }).collect();
        }
        let named: Vec<&str> = full.targets.iter().map(|t| t.channel.as_str()).collect();
        if let Some(extra) = named.iter().find(|c| !current.targets.iter().any(|t| t.channel_id == **c)) {
            return Err(RunnerError::Invalid(format!(
                "the post has no target on channel `{extra}`; targets are set when the post is created"
            )));
        }
        if scheduled {
            self.validated(&full).await?;
        } else {
            self.validate(&full).await?;
        }
        let overrides = full.targets.iter().map(|t| (t.channel.clone(), t.text.clone())).collect();
        self.inner
            .store
            .edit_post(
                id,
                full.text,
                serde_json::to_value(&full.media).unwrap_or(Value::Null),
                full.link,
                Value::Object(full.options),
                overrides,
                self.now(),
            )
            .await?;
        self.post(id).await
    }

    fn input_of(d: &PostDetail) -> PostInput {
        PostInput {
            text: d.post.text.clone(),
            media: serde_json::from_value(d.post.media.clone()).unwrap_or_default(),
            link: d.post.link.clone(),
            options: d.post.options.as_object().cloned().unwrap_or_default(),
            targets: d.targets.iter().map(|t| TargetInput { channel: t.channel_id.clone(), text: t.text.clone() }).collect(),
        }
    }

    /// Schedules (or reschedules) a post's targets, or one of them, at a time; checked first.
    pub async fn schedule(&self, post_id: &str, target_id: Option<&str>, at: i64) -> Result<PostDetail, RunnerError> {
        if at < self.now() - 60_000 {
            return Err(RunnerError::Invalid(format!("the time {} is in the past; give a time from now on", rfc3339(at))));
        }
        let d = self.post(post_id).await?;
        self.validated(&Self::input_of(&d)).await?;
        self.inner.store.change_targets(post_id, target_id, TargetChange::Schedule { at: Some(at), queued: false }, self.now()).await?;
        self.inner.social_wake.notify_one();
        self.post(post_id).await
    }

    /// Puts a post's targets (or one) in the next free slot of their channel's queue.
    pub async fn add_to_queue(&self, post_id: &str, target_id: Option<&str>) -> Result<PostDetail, RunnerError> {
        let d = self.post(post_id).await?;
        self.validated(&Self::input_of(&d)).await?;
        let now = self.now();
        let mut changed = 0;
        for t in d.targets.iter().filter(|t| target_id.is_none_or(|id| id == t.id)) {
            if !(TargetChange::Schedule { at: None, queued: true }).from().contains(&t.status.as_str()) {
                continue;
            }
            let ch = self.channel(&t.channel_id).await?;
            let mut tries = 0;
            loop {
                let slot = self.next_slot(&ch, now).await?;
                match self
                    .inner
                    .store
                    .change_targets(post_id, Some(&t.id), TargetChange::Schedule { at: Some(slot), queued: true }, now)
                    .await
                {
                    Ok(_) => break,
                    Err(StoreError::Conflict(m)) if m.contains("slot") && tries < 5 => tries += 1,
                    Err(e) => return Err(e.into()),
                }
            }
            changed += 1;
        }
        if changed == 0 {
            return Err(RunnerError::Conflict("nothing to queue: every target is published, publishing, held or cancelled".into()));
        }
        self.inner.social_wake.notify_one();
        self.post(post_id).await
    }

    pub async fn unschedule(&self, post_id: &str, target_id: Option<&str>) -> Result<PostDetail, RunnerError> {
        self.inner.store.change_targets(post_id, target_id, TargetChange::Unschedule, self.now()).await?;
        self.post(post_id).await
    }

    pub async fn cancel(&self, post_id: &str, target_id: Option<&str>) -> Result<PostDetail, RunnerError> {
        self.inner.store.change_targets(post_id, target_id, TargetChange::Cancel, self.now()).await?;
        self.post(post_id).await
    }

    /// A person says a held target is on the network.
    pub async fn confirm(
        &self,
        post_id: &str,
        target_id: &str,
        remote_id: Option<String>,
        remote_url: Option<String>,
    ) -> Result<PostDetail, RunnerError> {
        self.inner.store.change_targets(post_id, Some(target_id), TargetChange::Confirm { remote_id, remote_url }, self.now()).await?;
        self.post(post_id).await
    }

    /// A person says a held (or failed) target is not on the network: publish it now.
    pub async fn retry(&self, post_id: &str, target_id: &str) -> Result<PostDetail, RunnerError> {
        self.inner.store.change_targets(post_id, Some(target_id), TargetChange::Retry, self.now()).await?;
        self.inner.social_wake.notify_one();
        self.post(post_id).await
    }

    /// Publishes the targets due now, waiting for them (tests on a manual clock; the loop
    /// does this by itself). Returns how many were handled.
    pub async fn process_due(&self) -> usize {
        process_due(&self.inner, true).await
    }
}

/// A post's text for a channel, checked against the channel's network.
pub fn check_post(
    ch: &ChannelRow,
    text: &str,
    link: Option<&str>,
    media: &[Media],
    options: &serde_json::Map<String, Value>,
) -> Result<enlace_core::social::Measure, Vec<Problem>> {
    let network = match Network::parse(&ch.network) {
        Ok(n) => n,
        Err(e) => return Err(vec![Problem { field: "channel".into(), message: e }]),
    };
    let limits: InstanceLimits = ch.limits.clone().and_then(|l| serde_json::from_value(l).ok()).unwrap_or_default();
    let full = network.text_with_link(text, link);
    let mut problems = vec![];
    if let Some(v) = options.get("visibility").and_then(Value::as_str) {
        let allowed: &[&str] = match network {
            Network::Mastodon => &["public", "unlisted", "private", "direct"],
            Network::Linkedin => &["PUBLIC", "CONNECTIONS"],
            _ => &[],
        };
        if !allowed.is_empty() && !allowed.contains(&v) {
            problems.push(Problem {
                field: "options.visibility".into(),
                message: format!("{network} takes {}, not `{v}`", allowed.join(", ")),
            });
        }
    }
    match validate(network, &full, media, &limits) {
        Ok(m) if problems.is_empty() => Ok(m),
        Ok(_) => Err(problems),
        Err(mut p) => {
            problems.append(&mut p);
            Err(problems)
        }
    }
}

/// The input of the network's publishing action.
fn action_input(network: Network, ch: &ChannelRow, post: &PostRow, text: &str) -> Value {
    let media: Vec<Media> = serde_json::from_value(post.media.clone()).unwrap_or_default();
    let opt = |k: &str| post.options.get(k).cloned().filter(|v| !v.is_null());
    let param = |k: &str| ch.params.get(k).cloned().unwrap_or(Value::Null);
    let full = network.text_with_link(text, post.link.as_deref());
    let mut v = match network {
        Network::Mastodon => json!({"status": full, "media": media}),
        Network::Bluesky => {
            json!({"text": full, "images": media.iter().map(|m| json!({"url": m.url, "alt": m.alt.clone().unwrap_or_default()})).collect::<Vec<_>>()})
        }
        Network::X => json!({"text": full, "media": media}),
        Network::Linkedin => json!({"author": param("author"), "text": full}),
        Network::FacebookPage => json!({"page_id": param("page_id"), "message": full}),
    };
    let o = v.as_object_mut().expect("an object");
    match network {
        Network::Mastodon => {
            for (from, to) in [("visibility", "visibility"), ("content_warning", "spoiler_text"), ("language", "language")] {
                if let Some(x) = opt(from) {
                    o.insert(to.into(), x);
                }
            }
        }
        Network::Bluesky => {
            if let Some(l) = opt("language") {
                o.insert("langs".into(), json!([l]));
            }
            // An account on another PDS than bsky.social: the channel's `service`.
            if let Some(s) = ch.params.get("service").filter(|s| s.as_str().is_some_and(|s| !s.trim().is_empty())) {
                o.insert("service".into(), s.clone());
            }
        }
        Network::Linkedin => {
            if let Some(l) = &post.link {
                o.insert("link".into(), json!(l));
            }
            if let Some(m) = media.first() {
                o.insert("image_url".into(), json!(m.url));
            }
            if let Some(x) = opt("visibility") {
                o.insert("visibility".into(), x);
            }
        }
        Network::FacebookPage => {
            if let Some(l) = &post.link {
                o.insert("link".into(), json!(l));
            }
            if let Some(m) = media.first() {
                o.insert("photo_url".into(), json!(m.url));
            }
        }
        Network::X => {}
    }
    v
}

/// The address of a published post when the app's output has none.
fn url_of(network: Network, ch: &ChannelRow, out: &Value, id: &str) -> Option<String> {
    if let Some(u) = out.get("url").and_then(Value::as_str) {
        return Some(u.to_string());
    }
    match network {
        Network::X => Some(format!("https://x.com/i/web/status/{id}")),
        Network::Bluesky => {
            let handle = ch.params.get("handle").and_then(Value::as_str)?;
            let rkey = id.rsplit('/').next()?;
            Some(format!("https://bsky.app/profile/{handle}/post/{rkey}"))
        }
        _ => None,
    }
}

/// The lease of a claimed target: the call's timeout, the check's, and a margin.
fn lease_ms(inner: &Inner) -> i64 {
    (inner.config.step_timeout * 2 + Duration::from_secs(30)).as_millis() as i64
}

/// Claims and publishes due targets. `wait`: until they are all done (else each goes in
/// its own task and the lease covers it).
pub(crate) async fn process_due(inner: &Arc<Inner>, wait: bool) -> usize {
    let now = inner.clock.now_ms();
    let claimed = match inner.store.claim_targets(&inner.config.node_id, now, 16, lease_ms(inner)).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "claiming due social posts failed");
            return 0;
        }
    };
    let n = claimed.len();
    let tasks: Vec<_> = claimed.into_iter().map(|t| tokio::spawn(publish(inner.clone(), t))).collect();
    if wait {
        for t in tasks {
            let _ = t.await;
        }
    }
    n
}

/// The publishing loop: sleeps until the next due target (at most [`TICK`]), or until a
/// post is scheduled on this node.
pub(crate) async fn social_loop(inner: Arc<Inner>) {
    loop {
        // Claiming is a write (through SQLite's one writer, with its commit): claim only when
        // a target is due or a lease ran out; the look before it is a read. An idle node
        // then writes nothing.
        let mut next = inner.store.next_target_due().await.ok().flatten();
        if next.is_some_and(|t| t <= inner.clock.now_ms()) {
            process_due(&inner, false).await;
            next = inner.store.next_target_due().await.ok().flatten();
        }
        let now = inner.clock.now_ms();
        let wait = match next {
            // At least a few milliseconds: a due target this node cannot claim (another
            // node's, in flight) must not spin the loop.
            Some(t) if !inner.clock.is_manual() => Duration::from_millis((t - now).clamp(5, TICK.as_millis() as i64) as u64),
            _ => TICK,
        };
        tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            _ = inner.social_wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

fn err_json(e: &ConnectorError) -> Value {
    json!({"class": e.class().as_str(), "message": e.message()})
}

struct Ctx {
    network: Network,
    channel: ChannelRow,
    post: PostRow,
    text: String,
    connection: String,
    key: String,
}

async fn publish(inner: Arc<Inner>, t: TargetRow) {
    let outcome = publish_inner(&inner, &t).await;
    let Some(outcome) = outcome else { return };
    match &outcome {
        TargetOutcome::Published { remote_id, .. } => tracing::info!(target_id = %t.id, remote_id = %remote_id, "social post published"),
        TargetOutcome::Retry { reason, due_at, .. } => {
            tracing::info!(target_id = %t.id, reason = %reason, due_at = %rfc3339(*due_at), "social post waits")
        }
        TargetOutcome::Held { reason, .. } => tracing::warn!(target_id = %t.id, reason = %reason, "social post held for a person"),
        TargetOutcome::Failed { reason, .. } => tracing::warn!(target_id = %t.id, reason = %reason, "social post failed"),
        TargetOutcome::PauseChannel { reason, .. } => {
            tracing::warn!(target_id = %t.id, channel = %t.channel_id, reason = %reason, "social channel paused")
        }
    }
    let paused = matches!(outcome, TargetOutcome::PauseChannel { .. });
    match inner.store.finish_target(&t.id, &inner.config.node_id, outcome, inner.clock.now_ms()).await {
        Ok(true) => {
            if !paused {
                inner.social_wake.notify_one();
            }
        }
        Ok(false) => tracing::warn!(target_id = %t.id, "a social post's claim was lost before its outcome was written"),
        // The lease runs out; the target is claimed again with its `sent_at`, and checked.
        Err(e) => tracing::error!(target_id = %t.id, error = %e, "recording a social post's outcome failed"),
    }
}

fn failed(reason: impl Into<String>) -> Option<TargetOutcome> {
    Some(TargetOutcome::Failed { reason: reason.into(), error: None })
}

async fn publish_inner(inner: &Arc<Inner>, t: &TargetRow) -> Option<TargetOutcome> {
    let now = inner.clock.now_ms();
    let post = match inner.store.post(&t.post_id).await {
        Ok(Some(p)) => p.post,
        Ok(None) => return failed("the post was deleted"),
        Err(e) => {
            return Some(retry_later(t, now, &ConnectorError::transient(format!("reading the post failed: {e}")), t.sent_at.is_some()));
        }
    };
    let channel = match inner.store.channel(&t.channel_id).await {
        Ok(Some(c)) => c,
        Ok(None) => return failed("the channel was deleted"),
        Err(e) => {
            return Some(retry_later(t, now, &ConnectorError::transient(format!("reading the channel failed: {e}")), t.sent_at.is_some()));
        }
    };
    let network = match Network::parse(&channel.network) {
        Ok(n) => n,
        Err(e) => return failed(e),
    };
    let Some(connection) = channel.connection_id.clone() else { return failed("the channel has no connection: give it one") };
    let ctx = Ctx {
        network,
        text: t.text.clone().unwrap_or_else(|| post.text.clone()),
        post,
        key: format!("connection:{connection}"),
        connection,
        channel,
    };
    let p = network.publisher();
    let Some(connector) = inner.registry.get(p.app) else {
        return failed(format!("the app `{}` is not installed here, so {network} posts cannot be published", p.app));
    };
    let Some(action) = connector.action(p.action).cloned() else {
        return failed(format!("the app `{}` has no action `{}`", p.app, p.action));
    };
    // The credentials, fresh; refused ones pause the channel.
    let (row, creds) = match crate::exec::connection_credentials(inner, p.app, &ctx.connection).await {
        Ok(x) => x,
        Err(e) if e.class() == ErrorClass::BadInput => return failed(e.message().to_string()),
        Err(e) => return Some(retry_later(t, now, &e, t.sent_at.is_some())),
    };
    if row.status == crate::oauth::NEEDS_RECONNECT {
        return Some(pause(
            &ctx,
            &format!("the connection `{}` needs reconnecting: {}", ctx.connection, row.status_message.clone().unwrap_or_default()),
            None,
        ));
    }
    // Mastodon's instance: the connection's (its token endpoint's origin), or the channel's
    // `instance` parameter for a pasted access token.
    let instance = match &creds {
        Credentials::OAuth2Grant(g) => origin(&g.token_url),
        _ => None,
    }
    .or_else(|| ctx.channel.params.get("instance").and_then(Value::as_str).map(|s| s.trim_end_matches('/').to_string()));
    let creds = match creds {
        Credentials::OAuth2Grant(g) => match crate::oauth::fresh_grant(inner, &ctx.connection, *g, None).await {
            Ok(fresh) => crate::oauth::handed_out(&Credentials::OAuth2Grant(Box::new(fresh))),
            Err(e) if e.class() == ErrorClass::Auth => return Some(pause(&ctx, e.message(), Some(&e))),
            Err(e) => return Some(retry_later(t, now, &e, t.sent_at.is_some())),
        },
        c => c,
    };
    let call_ctx = |step: &str| ActionContext {
        run_id: format!("social:{}", t.post_id),
        step_key: step.to_string(),
        attempt: t.attempts.max(1) as u32,
        idempotency_key: t.id.clone(),
        credentials: creds.clone(),
        http: Arc::new(crate::limits::BudgetWatch { inner: inner.clone(), key: ctx.key.clone() }),
        timeout: inner.config.step_timeout,
        extensions: Default::default(),
    };

    // A request may have left before: look before publishing again.
    if let Some(sent_at) = t.sent_at {
        match check_published(inner, &ctx, connector, &call_ctx("recent_posts"), sent_at, instance.as_deref()).await {
            Check::Found(id, url) => return Some(TargetOutcome::Published { remote_id: id, remote_url: url }),
            Check::NotFound => {
                tracing::info!(target_id = %t.id, "a social post that may have been published is not on the network; publishing it");
            }
            Check::Unknown(reason) => return Some(TargetOutcome::Held { reason, error: None }),
            Check::Later(e) => return Some(retry_later(t, inner.clock.now_ms(), &e, true)),
        }
    }

    // The instance's own limits (Mastodon), read once a day, then the post checked again
    // (an instance may have lowered its limit since it was scheduled).
    if let Some(la) = p.limits_action
        && ctx.channel.limits_at.is_none_or(|at| now - at > LIMITS_TTL_MS)
        && let Some(a) = connector.action(la)
    {
        match a.call(&call_ctx("instance_limits"), json!({"instance": instance})).await {
            Ok(v) => {
                let _ = inner.store.set_channel_limits(&ctx.channel.id, &v, now).await;
            }
            Err(e) => {
                tracing::warn!(channel = %ctx.channel.id, error = %e, "reading the instance's limits failed; checking with the last known")
            }
        }
    }
    let channel = inner.store.channel(&ctx.channel.id).await.ok().flatten().unwrap_or_else(|| ctx.channel.clone());
    let media: Vec<Media> = serde_json::from_value(ctx.post.media.clone()).unwrap_or_default();
    let options = ctx.post.options.as_object().cloned().unwrap_or_default();
    if let Err(problems) = check_post(&channel, &ctx.text, ctx.post.link.as_deref(), &media, &options) {
        let list: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        return failed(format!("the post no longer fits {network}: {}", list.join("; ")));
    }

    // The connection's rate budget: wait for it rather than be refused.
    let wait = crate::exec::rate_wait(inner, &ctx.key, connector.manifest.rate_limit, now).await;
    if !wait.is_zero() {
        let due_at = now + wait.as_millis() as i64;
        return Some(TargetOutcome::Retry {
            due_at,
            reason: format!("waiting for the rate budget of the connection until {}", rfc3339(due_at)),
            error: None,
            sent: false,
        });
    }

    // Durable before the request leaves.
    match inner.store.mark_target_sent(&t.id, &inner.config.node_id, inner.clock.now_ms()).await {
        Ok(true) => {}
        Ok(false) => return None,
        Err(e) => return Some(retry_later(t, now, &ConnectorError::transient(format!("marking the post as sending failed: {e}")), false)),
    }
    let sent_at = inner.clock.now_ms();
    let mut input = action_input(network, &ctx.channel, &ctx.post, &ctx.text);
    if network == Network::Mastodon
        && let Some(i) = &instance
    {
        input["instance"] = json!(i);
    }
    let result = match tokio::time::timeout(inner.config.step_timeout, action.call(&call_ctx("publish"), input)).await {
        Ok(r) => r,
        Err(_) => Err(ConnectorError::MaybeDelivered { message: format!("no answer within {}s", inner.config.step_timeout.as_secs()) }),
    };
    let now = inner.clock.now_ms();
    match result {
        Ok(out) => {
            let id = out.get("id").map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())).unwrap_or_default();
            let url = url_of(network, &ctx.channel, &out, &id);
            Some(TargetOutcome::Published { remote_id: id, remote_url: url })
        }
        Err(e) => match e.class() {
            ErrorClass::RateLimited => {
                // Exactly as told: the connection is held for every caller until then.
                let wait = e.retry_after().unwrap_or(Duration::from_secs(60));
                let due_at = now + wait.as_millis() as i64;
                inner.limits.hold(&ctx.key, due_at);
                if inner.store.shared_rate_limits() {
                    let _ = inner.store.rate_hold(&ctx.key, due_at).await;
                }
                Some(TargetOutcome::Retry {
                    due_at,
                    reason: format!("{network} asked to wait until {} (rate limited)", rfc3339(due_at)),
                    error: Some(err_json(&e)),
                    sent: false,
                })
            }
            // A passing fault after the request left (a 5xx, a dropped connection): the
            // network may have made the post. Where the request carried an idempotency key,
            // sending it again is safe; elsewhere the next attempt looks at the account's
            // recent posts first (`sent`), never a blind second post.
            ErrorClass::Transient => Some(retry_later(t, now, &e, !p.idempotency_key)),
            ErrorClass::Auth => {
                crate::oauth::mark_needs_reconnect(inner, &ctx.connection, e.message()).await;
                Some(pause(&ctx, e.message(), Some(&e)))
            }
            ErrorClass::Permanent | ErrorClass::BadInput => {
                Some(TargetOutcome::Failed { reason: format!("{network} refused the post: {}", e.message()), error: Some(err_json(&e)) })
            }
            ErrorClass::MaybeDelivered => {
                match check_published(inner, &ctx, connector, &call_ctx("recent_posts"), sent_at, instance.as_deref()).await {
                    Check::Found(id, url) => Some(TargetOutcome::Published { remote_id: id, remote_url: url }),
                    Check::NotFound => Some(TargetOutcome::Retry {
                        due_at: now,
                        reason: format!("the request timed out ({}) and the post is not on {network}: publishing it again", e.message()),
                        error: Some(err_json(&e)),
                        sent: false,
                    }),
                    Check::Unknown(reason) => Some(TargetOutcome::Held { reason, error: Some(err_json(&e)) }),
                    Check::Later(ce) => Some(retry_later(t, now, &ce, true)),
                }
            }
        },
    }
}

fn pause(ctx: &Ctx, reason: &str, e: Option<&ConnectorError>) -> TargetOutcome {
    TargetOutcome::PauseChannel {
        reason: format!(
            "{} refused the credentials of connection `{}` ({reason}); reconnect it, then the channel resumes",
            ctx.network, ctx.connection
        ),
        error: e.map(err_json),
    }
}

/// `https://host[:port]` of an address.
fn origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let host = rest.split(['/', '?', '#']).next()?;
    (!host.is_empty()).then(|| format!("{scheme}://{host}"))
}

/// Backoff for passing faults: 2^attempts s (at most an hour, or the network's
/// `Retry-After`), then failed after [`PUBLISH_ATTEMPTS`]. `sent`: a request may have left
/// (it is checked when taken again).
fn retry_later(t: &TargetRow, now: i64, e: &ConnectorError, sent: bool) -> TargetOutcome {
    if t.attempts >= PUBLISH_ATTEMPTS {
        let reason = format!("gave up after {} attempts: {}", t.attempts, e.message());
        return if sent {
            TargetOutcome::Held { reason, error: Some(err_json(e)) }
        } else {
            TargetOutcome::Failed { reason, error: Some(err_json(e)) }
        };
    }
    let backoff = Duration::from_secs(2u64.saturating_pow(t.attempts.clamp(1, 12) as u32)).min(Duration::from_secs(3600));
    let wait = e.retry_after().map_or(backoff, |ra| ra.max(backoff));
    let due_at = now + wait.as_millis() as i64;
    TargetOutcome::Retry { due_at, reason: format!("{}; trying again at {}", e.message(), rfc3339(due_at)), error: Some(err_json(e)), sent }
}

enum Check {
    Found(String, Option<String>),
    NotFound,
    /// The network's posts cannot be read: a person decides (the reason says how).
    Unknown(String),
    /// Reading them failed for now: look again later.
    Later(ConnectorError),
}

/// Whether the post is among the account's recent posts (same text, made after the
/// request left, less a minute of clock skew).
async fn check_published(
    inner: &Arc<Inner>,
    ctx: &Ctx,
    connector: &enlace_core::Connector,
    call: &ActionContext,
    sent_at: i64,
    instance: Option<&str>,
) -> Check {
    let network = ctx.network;
    let when = rfc3339(sent_at);
    let hold = |why: &str| {
        Check::Unknown(format!(
            "the request to {network} left at {when} and no clear answer came back, so the post may be published; {why}: look at the account, then confirm it (`enlace posts confirm`) or publish it again (`enlace posts retry`)"
        ))
    };
    let Some(ra) = network.publisher().recent_action else { return hold(&format!("{network}'s API gives no way to check here")) };
    let Some(action) = connector.action(ra) else { return hold(&format!("the app `{}` has no action `{ra}`", connector.manifest.id)) };
    // Whose posts: each network's recent-posts action names the account its own way.
    let param = |name: &str| ctx.channel.params.get(name).cloned();
    let mut input = json!({"limit": 40});
    match network {
        Network::Mastodon => {
            if let Some(i) = instance {
                input["instance"] = json!(i);
            }
        }
        Network::Linkedin => input["author"] = param("author").unwrap_or(Value::Null),
        Network::FacebookPage => input["page_id"] = param("page_id").unwrap_or(Value::Null),
        Network::Bluesky => {
            if let Some(h) = param("handle") {
                input["actor"] = h;
            }
        }
        // The signed-in account's own posts.
        Network::X => {}
    }
    if network == Network::Bluesky
        && let Some(s) = ctx.channel.params.get("service").filter(|s| s.as_str().is_some_and(|s| !s.trim().is_empty()))
    {
        input["service"] = s.clone();
    }
    let out = match tokio::time::timeout(inner.config.step_timeout, action.call(call, input)).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) if matches!(e.class(), ErrorClass::Permanent | ErrorClass::BadInput | ErrorClass::Auth) => {
            return hold(&format!("reading the account's recent posts failed ({})", e.message()));
        }
        Ok(Err(e)) => return Check::Later(e),
        Err(_) => return Check::Later(ConnectorError::transient("reading the account's recent posts timed out")),
    };
    let want = enlace_core::social::comparable(&network.text_with_link(&ctx.text, ctx.post.link.as_deref()));
    let since = sent_at - 60_000;
    for p in out.get("posts").and_then(Value::as_array).into_iter().flatten() {
        let text = p.get("text").and_then(Value::as_str).unwrap_or_default();
        let made = p
            .get("created_at")
            .and_then(Value::as_str)
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
            .map(|d| d.timestamp_millis());
        if enlace_core::social::comparable(text) == want && made.is_none_or(|m| m >= since) {
            let id = p.get("id").and_then(Value::as_str).unwrap_or_default().to_string();
            let url = p.get("url").and_then(Value::as_str).map(str::to_string);
            return Check::Found(id, url);
        }
    }
    Check::NotFound
}

/// The scheduler as the `social` app's actions reach it (`ActionContext::extensions`).
pub(crate) struct SocialExt(pub(crate) Social);

impl enlace_core::social::SocialBackend for SocialExt {
    fn schedule(&self, request: Value, key: String, origin: String) -> enlace_core::BoxFuture<'_, Result<Value, ConnectorError>> {
        Box::pin(async move {
            let field = |f: &str| request.get(f).cloned().unwrap_or(Value::Null);
            let targets = match field("channels") {
                Value::String(s) if s == "all" => {
                    self.0.channels().await.map_err(runner_err)?.into_iter().map(|c| TargetInput { channel: c.id, text: None }).collect()
                }
                Value::String(s) => {
                    return Err(ConnectorError::bad_input("channels", format!("`{s}` is not `all`; give `all` or a list of channel ids")));
                }
                Value::Array(list) => list
                    .iter()
                    .map(|v| match v {
                        Value::String(id) => Ok(TargetInput { channel: id.clone(), text: None }),
                        Value::Object(_) => serde_json::from_value(v.clone()).map_err(|e| {
                            ConnectorError::bad_input("channels", format!("each item is a channel id or {{channel, text}}: {e}"))
                        }),
                        _ => Err(ConnectorError::bad_input("channels", "each item is a channel id or {channel, text}")),
                    })
                    .collect::<Result<Vec<_>, _>>()?,
                _ => return Err(ConnectorError::bad_input("channels", "give `all` or a list of channel ids")),
            };
            if targets.is_empty() {
                return Err(ConnectorError::bad_input(
                    "channels",
                    "there is no channel to post to: create one with POST /api/v1/social/channels",
                ));
            }
            let when = match field("at") {
                Value::Null => When::Queue,
                Value::String(s) if s.trim().is_empty() => When::Queue,
                v => When::At(crate::exec::parse_time(&v, None).map_err(|e| ConnectorError::bad_input("at", e))?),
            };
            let post = PostInput {
                text: field("text").as_str().unwrap_or_default().to_string(),
                media: serde_json::from_value(field("media")).unwrap_or_default(),
                link: field("link").as_str().filter(|s| !s.is_empty()).map(str::to_string),
                options: field("options").as_object().cloned().unwrap_or_default(),
                targets,
            };
            let d = self.0.create_post(post, when, &origin, Some(key)).await.map_err(runner_err)?;
            Ok(json!({
                "id": d.post.id,
                "status": d.status,
                "targets": d.targets.iter().map(|t| json!({"channel": t.channel_id, "scheduled_at": t.scheduled_at.map(rfc3339)})).collect::<Vec<_>>(),
            }))
        })
    }
}

fn runner_err(e: RunnerError) -> ConnectorError {
    match e {
        RunnerError::Invalid(m) => ConnectorError::bad_input("text", m),
        RunnerError::NotFound(m) => ConnectorError::bad_input("channels", m),
        RunnerError::Conflict(m) => ConnectorError::permanent(m),
        RunnerError::Store(e) => ConnectorError::transient(format!("the store failed: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(status: &str) -> TargetRow {
        TargetRow {
            id: "t".into(),
            post_id: "p".into(),
            channel_id: "c".into(),
            text: None,
            status: status.into(),
            scheduled_at: None,
            due_at: None,
            queued: false,
            attempts: 1,
            owner: None,
            lease_until: None,
            sent_at: None,
            remote_id: None,
            remote_url: None,
            published_at: None,
            reason: None,
            error: None,
            created_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn backoff_then_give_up() {
        let mut t = target("publishing");
        let e = ConnectorError::transient("503");
        match retry_later(&t, 0, &e, false) {
            TargetOutcome::Retry { due_at, .. } => assert_eq!(due_at, 2_000),
            o => panic!("{o:?}"),
        }
        t.attempts = PUBLISH_ATTEMPTS;
        assert!(matches!(retry_later(&t, 0, &e, false), TargetOutcome::Failed { .. }));
        assert!(matches!(retry_later(&t, 0, &e, true), TargetOutcome::Held { .. }));
        assert_eq!(origin("https://mastodon.social/oauth/token").as_deref(), Some("https://mastodon.social"));
        assert_eq!(origin("http://127.0.0.1:9/x").as_deref(), Some("http://127.0.0.1:9"));
    }
}
