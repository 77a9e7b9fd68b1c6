//! Social posts: channels, posts and their targets (one per post and channel), and the
//! targets as durable timers of publishing (claimed with a lease, `SKIP LOCKED` on
//! PostgreSQL). The statements differ between the backends only in placeholders, so one
//! macro (`social_statements!`) writes them for both `Tx` types. The runner decides what
//! happens to a target; the store writes it, fenced by the claim's owner.

use serde::Serialize;
use serde_json::Value;

use crate::{Millis, Result, Store, StoreError};

/// Target statuses.
pub mod status {
    pub const DRAFT: &str = "draft";
    pub const SCHEDULED: &str = "scheduled";
    pub const PUBLISHING: &str = "publishing";
    pub const PUBLISHED: &str = "published";
    pub const FAILED: &str = "failed";
    pub const CANCELLED: &str = "cancelled";
    pub const HELD: &str = "held";
    pub const ALL: [&str; 7] = [DRAFT, SCHEDULED, PUBLISHING, PUBLISHED, FAILED, CANCELLED, HELD];
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ChannelRow {
    pub id: String,
    pub name: String,
    pub network: String,
    pub connection_id: Option<String>,
    pub params: Value,
    pub timezone: String,
    pub slots: Value,
    /// Why publishing on the channel is paused (a refused token); `None`: active.
    pub paused_reason: Option<String>,
    pub paused_at: Option<Millis>,
    /// What the network's instance said about its limits (Mastodon), and when.
    pub limits: Option<Value>,
    pub limits_at: Option<Millis>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// A channel to create, or the new values of one.
#[derive(Debug, Clone)]
pub struct ChannelWrite {
    pub name: String,
    pub network: String,
    pub connection_id: Option<String>,
    pub params: Value,
    pub timezone: String,
    pub slots: Value,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PostRow {
    pub id: String,
    pub text: String,
    pub media: Value,
    pub link: Option<String>,
    pub options: Value,
    pub origin: String,
    pub dedupe_key: Option<String>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TargetRow {
    pub id: String,
    pub post_id: String,
    pub channel_id: String,
    /// This channel's own text, when it differs from the post's.
    pub text: Option<String>,
    pub status: String,
    pub scheduled_at: Option<Millis>,
    pub due_at: Option<Millis>,
    pub queued: bool,
    pub attempts: i64,
    #[serde(skip)]
    pub owner: Option<String>,
    #[serde(skip)]
    pub lease_until: Option<Millis>,
    /// A request left then, and its outcome is not known yet.
    pub sent_at: Option<Millis>,
    pub remote_id: Option<String>,
    pub remote_url: Option<String>,
    pub published_at: Option<Millis>,
    pub reason: Option<String>,
    pub error: Option<Value>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// A post with its targets.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PostDetail {
    #[serde(flatten)]
    pub post: PostRow,
    /// From the targets' statuses ([`post_status`]).
    pub status: String,
    pub targets: Vec<TargetRow>,
}

/// A target of a new post.
#[derive(Debug, Clone)]
pub struct NewTarget {
    pub channel_id: String,
    pub text: Option<String>,
    /// `draft` or `scheduled`.
    pub status: &'static str,
    pub scheduled_at: Option<Millis>,
    pub queued: bool,
}

#[derive(Debug, Clone)]
pub struct NewPost {
    pub text: String,
    pub media: Value,
    pub link: Option<String>,
    pub options: Value,
    pub origin: String,
    pub dedupe_key: Option<String>,
    pub targets: Vec<NewTarget>,
}

/// A change of targets a person (or a recipe) asks for.
#[derive(Debug, Clone)]
pub enum TargetChange {
    /// To `scheduled` at this time (`queued`: it is a queue slot), or at the time it had.
    Schedule {
        at: Option<Millis>,
        queued: bool,
    },
    /// Back to draft (unscheduled).
    Unschedule,
    Cancel,
    /// A person says a held target was published (the id and address when known).
    Confirm {
        remote_id: Option<String>,
        remote_url: Option<String>,
    },
    /// A person says: publish it again now (a held or failed target).
    Retry,
}

impl TargetChange {
    /// The statuses a target may have for the change.
    pub fn from(&self) -> &'static [&'static str] {
        use status::*;
        match self {
            TargetChange::Schedule { .. } | TargetChange::Unschedule => &[DRAFT, SCHEDULED, FAILED],
            TargetChange::Cancel => &[DRAFT, SCHEDULED, FAILED, HELD],
            TargetChange::Confirm { .. } => &[HELD],
            TargetChange::Retry => &[HELD, FAILED],
        }
    }
}

/// What came of a claimed target's publishing.
#[derive(Debug, Clone)]
pub enum TargetOutcome {
    Published {
        remote_id: String,
        remote_url: Option<String>,
    },
    /// Take it again at `due_at` (a rate limit, a passing fault). `sent` false: nothing left,
    /// or it was checked and is not on the network.
    Retry {
        due_at: Millis,
        reason: String,
        error: Option<Value>,
        sent: bool,
    },
    /// A person must decide (it may have been published).
    Held {
        reason: String,
        error: Option<Value>,
    },
    Failed {
        reason: String,
        error: Option<Value>,
    },
    /// The credentials were refused: the target waits (scheduled, due now) and its channel is
    /// paused with the reason until it is resumed (a reconnect).
    PauseChannel {
        reason: String,
        error: Option<Value>,
    },
}

/// Which posts to list: those with a target planned (or published) in `[from, to)`, of a
/// channel, of a status.
#[derive(Debug, Clone, Default)]
pub struct PostFilter {
    pub from: Option<Millis>,
    pub to: Option<Millis>,
    pub channel_id: Option<String>,
    pub status: Option<String>,
    pub limit: i64,
}

/// The post's status, from its targets: `draft`, `scheduled`, `publishing`, `held` (a
/// person must decide), `published`, `failed` (some target failed and none is pending) or
/// `cancelled`.
pub fn post_status(targets: &[TargetRow]) -> &'static str {
    let live: Vec<&str> = targets.iter().map(|t| t.status.as_str()).filter(|s| *s != status::CANCELLED).collect();
    if live.is_empty() {
        return status::CANCELLED;
    }
    for s in [status::PUBLISHING, status::HELD, status::SCHEDULED] {
        if live.contains(&s) {
            return s;
        }
    }
    if live.iter().all(|s| *s == status::DRAFT) {
        return status::DRAFT;
    }
    if live.contains(&status::FAILED) {
        return status::FAILED;
    }
    if live.contains(&status::DRAFT) { status::DRAFT } else { status::PUBLISHED }
}

/// Implements the statements for a backend's `Tx` (a wrapper of `&mut <Backend>Connection`).
macro_rules! social_statements {
    ($tx:ty, $pg:expr) => {
        const _: () = {
            use serde_json::Value;
            use sqlx::Row;

            use crate::gdpr::dialect;
            use crate::social::*;
            use crate::{Millis, Result, StoreError, new_id};

            fn q(sql: &str) -> sqlx::AssertSqlSafe<String> {
                sqlx::AssertSqlSafe(dialect($pg, sql))
            }
            fn json_of(s: Option<String>) -> Option<Value> {
                s.and_then(|t| serde_json::from_str(&t).ok())
            }
            fn unique(e: sqlx::Error, what: &str) -> StoreError {
                match &e {
                    sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Conflict(what.to_string()),
                    _ => e.into(),
                }
            }
            const CHANNEL_COLS: &str =
                "id, name, network, connection_id, params, timezone, slots, paused_reason, paused_at, limits, limits_at, created_at, updated_at";
            const POST_COLS: &str = "id, text, media, link, options, origin, dedupe_key, created_at, updated_at";
            const TARGET_COLS: &str = "id, post_id, channel_id, text, status, scheduled_at, due_at, queued, attempts, owner, lease_until, sent_at, remote_id, remote_url, published_at, reason, error, created_at, updated_at";
            macro_rules! channel_row {
                ($r:expr) => {
                    ChannelRow {
                        id: $r.get("id"),
                        name: $r.get("name"),
                        network: $r.get("network"),
                        connection_id: $r.get("connection_id"),
                        params: json_of($r.get("params")).unwrap_or(Value::Null),
                        timezone: $r.get("timezone"),
                        slots: json_of($r.get("slots")).unwrap_or(Value::Null),
                        paused_reason: $r.get("paused_reason"),
                        paused_at: $r.get("paused_at"),
                        limits: json_of($r.get("limits")),
                        limits_at: $r.get("limits_at"),
                        created_at: $r.get("created_at"),
                        updated_at: $r.get("updated_at"),
                    }
                };
            }
            macro_rules! post_row {
                ($r:expr) => {
                    PostRow {
                        id: $r.get("id"),
                        text: $r.get("text"),
                        media: json_of($r.get("media")).unwrap_or(Value::Null),
                        link: $r.get("link"),
                        options: json_of($r.get("options")).unwrap_or(Value::Null),
                        origin: $r.get("origin"),
                        dedupe_key: $r.get("dedupe_key"),
                        created_at: $r.get("created_at"),
                        updated_at: $r.get("updated_at"),
                    }
                };
            }
            macro_rules! target_row {
                ($r:expr) => {
                    TargetRow {
                        id: $r.get("id"),
                        post_id: $r.get("post_id"),
                        channel_id: $r.get("channel_id"),
                        text: $r.get("text"),
                        status: $r.get("status"),
                        scheduled_at: $r.get("scheduled_at"),
                        due_at: $r.get("due_at"),
                        queued: $r.get::<i64, _>("queued") != 0,
                        attempts: $r.get("attempts"),
                        owner: $r.get("owner"),
                        lease_until: $r.get("lease_until"),
                        sent_at: $r.get("sent_at"),
                        remote_id: $r.get("remote_id"),
                        remote_url: $r.get("remote_url"),
                        published_at: $r.get("published_at"),
                        reason: $r.get("reason"),
                        error: json_of($r.get("error")),
                        created_at: $r.get("created_at"),
                        updated_at: $r.get("updated_at"),
                    }
                };
            }

            impl $tx {
                pub(crate) async fn social_insert_channel(&mut self, c: &ChannelWrite, now: Millis) -> Result<ChannelRow> {
                    let id = new_id();
                    let sql = format!(
                        "INSERT INTO social_channels (id, name, network, connection_id, params, timezone, slots, created_at, updated_at)
                         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING {CHANNEL_COLS}"
                    );
                    let r = sqlx::query(q(&sql))
                        .bind(&id)
                        .bind(&c.name)
                        .bind(&c.network)
                        .bind(&c.connection_id)
                        .bind(c.params.to_string())
                        .bind(&c.timezone)
                        .bind(c.slots.to_string())
                        .bind(now)
                        .bind(now)
                        .fetch_one(&mut *self.0)
                        .await?;
                    Ok(channel_row!(r))
                }

                pub(crate) async fn social_update_channel(&mut self, id: &str, c: &ChannelWrite, now: Millis) -> Result<Option<ChannelRow>> {
                    let sql = format!(
                        "UPDATE social_channels SET name = ?, network = ?, connection_id = ?, params = ?, timezone = ?, slots = ?,
                           limits = CASE WHEN connection_id IS NOT DISTINCT FROM ? THEN limits ELSE NULL END, updated_at = ?
                         WHERE id = ? RETURNING {CHANNEL_COLS}"
                    );
                    let r = sqlx::query(q(&sql))
                        .bind(&c.name)
                        .bind(&c.network)
                        .bind(&c.connection_id)
                        .bind(c.params.to_string())
                        .bind(&c.timezone)
                        .bind(c.slots.to_string())
                        .bind(&c.connection_id)
                        .bind(now)
                        .bind(id)
                        .fetch_optional(&mut *self.0)
                        .await?;
                    Ok(r.map(|r| channel_row!(r)))
                }

                pub(crate) async fn social_channel(&mut self, id: &str) -> Result<Option<ChannelRow>> {
                    let sql = format!("SELECT {CHANNEL_COLS} FROM social_channels WHERE id = ?");
                    let r = sqlx::query(q(&sql)).bind(id).fetch_optional(&mut *self.0).await?;
                    Ok(r.map(|r| channel_row!(r)))
                }

                pub(crate) async fn social_channels(&mut self) -> Result<Vec<ChannelRow>> {
                    let sql = format!("SELECT {CHANNEL_COLS} FROM social_channels ORDER BY name, id");
                    let rows = sqlx::query(q(&sql)).fetch_all(&mut *self.0).await?;
                    Ok(rows.iter().map(|r| channel_row!(r)).collect())
                }

                pub(crate) async fn social_delete_channel(&mut self, id: &str) -> Result<bool> {
                    let pending: i64 = sqlx::query_scalar(q(
                        "SELECT COUNT(*) FROM social_targets WHERE channel_id = ? AND status IN ('scheduled', 'publishing', 'held')",
                    ))
                    .bind(id)
                    .fetch_one(&mut *self.0)
                    .await?;
                    if pending > 0 {
                        return Err(StoreError::Conflict(format!(
                            "the channel `{id}` has {pending} post(s) scheduled, publishing or held: cancel them first"
                        )));
                    }
                    sqlx::query(q("DELETE FROM social_targets WHERE channel_id = ?")).bind(id).execute(&mut *self.0).await?;
                    let r = sqlx::query(q("DELETE FROM social_channels WHERE id = ?")).bind(id).execute(&mut *self.0).await?;
                    Ok(r.rows_affected() > 0)
                }

                pub(crate) async fn social_set_limits(&mut self, id: &str, limits: &Value, now: Millis) -> Result<()> {
                    sqlx::query(q("UPDATE social_channels SET limits = ?, limits_at = ? WHERE id = ?"))
                        .bind(limits.to_string())
                        .bind(now)
                        .bind(id)
                        .execute(&mut *self.0)
                        .await?;
                    Ok(())
                }

                /// Pauses (`Some(reason)`) or resumes (`None`) channels: one by id, or every
                /// channel of a connection. Returns the ids changed.
                pub(crate) async fn social_pause(
                    &mut self,
                    id: Option<&str>,
                    connection: Option<&str>,
                    reason: Option<&str>,
                    now: Millis,
                ) -> Result<Vec<String>> {
                    let cond = if reason.is_some() { "paused_reason IS NULL" } else { "paused_reason IS NOT NULL" };
                    let sql = format!(
                        "UPDATE social_channels SET paused_reason = ?, paused_at = ?, updated_at = ?
                         WHERE {cond} AND (id = ? OR connection_id = ?) RETURNING id"
                    );
                    let ids: Vec<String> = sqlx::query_scalar(q(&sql))
                        .bind(reason)
                        .bind(reason.map(|_| now))
                        .bind(now)
                        .bind(id)
                        .bind(connection)
                        .fetch_all(&mut *self.0)
                        .await?;
                    Ok(ids)
                }

                pub(crate) async fn social_insert_post(&mut self, p: &NewPost, now: Millis) -> Result<(String, bool)> {
                    let id = new_id();
                    let got: Option<String> = sqlx::query_scalar(q(
                        "INSERT INTO social_posts (id, text, media, link, options, origin, dedupe_key, created_at, updated_at)
                         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (dedupe_key) DO NOTHING RETURNING id",
                    ))
                    .bind(&id)
                    .bind(&p.text)
                    .bind(p.media.to_string())
                    .bind(&p.link)
                    .bind(p.options.to_string())
                    .bind(&p.origin)
                    .bind(&p.dedupe_key)
                    .bind(now)
                    .bind(now)
                    .fetch_optional(&mut *self.0)
                    .await?;
                    let Some(id) = got else {
                        let existing: String = sqlx::query_scalar(q("SELECT id FROM social_posts WHERE dedupe_key = ?"))
                            .bind(&p.dedupe_key)
                            .fetch_one(&mut *self.0)
                            .await?;
                        return Ok((existing, false));
                    };
                    for t in &p.targets {
                        sqlx::query(q(
                            "INSERT INTO social_targets (id, post_id, channel_id, text, status, scheduled_at, due_at, queued, created_at, updated_at)
                             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        ))
                        .bind(new_id())
                        .bind(&id)
                        .bind(&t.channel_id)
                        .bind(&t.text)
                        .bind(t.status)
                        .bind(t.scheduled_at)
                        .bind(if t.status == status::SCHEDULED { t.scheduled_at } else { None })
                        .bind(t.queued as i64)
                        .bind(now)
                        .bind(now)
                        .execute(&mut *self.0)
                        .await
                        .map_err(|e| unique(e, &format!("the channel `{}` already has a post in that queue slot", t.channel_id)))?;
                    }
                    Ok((id, true))
                }

                pub(crate) async fn social_post(&mut self, id: &str) -> Result<Option<PostDetail>> {
                    let sql = format!("SELECT {POST_COLS} FROM social_posts WHERE id = ?");
                    let Some(r) = sqlx::query(q(&sql)).bind(id).fetch_optional(&mut *self.0).await? else { return Ok(None) };
                    let post = post_row!(r);
                    let sql = format!("SELECT {TARGET_COLS} FROM social_targets WHERE post_id = ? ORDER BY id");
                    let rows = sqlx::query(q(&sql)).bind(id).fetch_all(&mut *self.0).await?;
                    let targets: Vec<TargetRow> = rows.iter().map(|r| target_row!(r)).collect();
                    Ok(Some(PostDetail { post, status: post_status(&targets).to_string(), targets }))
                }

                pub(crate) async fn social_post_ids(&mut self, f: &PostFilter) -> Result<Vec<String>> {
                    // A post is in a time range when one of its targets is planned (or was
                    // published) in it; drafts without a time are listed when no range is given.
                    let sql = "SELECT p.id FROM social_posts p WHERE
                          (? IS NULL AND ? IS NULL AND ? IS NULL AND ? IS NULL)
                          OR EXISTS (SELECT 1 FROM social_targets t WHERE t.post_id = p.id
                            AND (? IS NULL OR t.channel_id = ?) AND (? IS NULL OR t.status = ?)
                            AND (? IS NULL OR COALESCE(t.published_at, t.scheduled_at) >= ?)
                            AND (? IS NULL OR COALESCE(t.published_at, t.scheduled_at) < ?))
                        ORDER BY (SELECT MIN(COALESCE(t.published_at, t.scheduled_at)) FROM social_targets t WHERE t.post_id = p.id), p.id
                        LIMIT ?";
                    let ids: Vec<String> = sqlx::query_scalar(q(sql))
                        .bind(f.from)
                        .bind(f.to)
                        .bind(&f.channel_id)
                        .bind(&f.status)
                        .bind(&f.channel_id)
                        .bind(&f.channel_id)
                        .bind(&f.status)
                        .bind(&f.status)
                        .bind(f.from)
                        .bind(f.from)
                        .bind(f.to)
                        .bind(f.to)
                        .bind(f.limit)
                        .fetch_all(&mut *self.0)
                        .await?;
                    Ok(ids)
                }

                /// Replaces a post's content and its targets' texts (by channel), if no
                /// target is publishing, published or held.
                #[allow(clippy::too_many_arguments)]
                pub(crate) async fn social_edit_post(
                    &mut self,
                    id: &str,
                    text: &str,
                    media: &Value,
                    link: Option<&str>,
                    options: &Value,
                    overrides: &[(String, Option<String>)],
                    now: Millis,
                ) -> Result<bool> {
                    let busy: Vec<String> = sqlx::query_scalar(q(
                        "SELECT status FROM social_targets WHERE post_id = ? AND status IN ('publishing', 'published', 'held')",
                    ))
                    .bind(id)
                    .fetch_all(&mut *self.0)
                    .await?;
                    if let Some(s) = busy.first() {
                        return Err(StoreError::Conflict(format!(
                            "the post `{id}` has a target that is {s}: it can no longer be edited (cancel the others and write a new post)"
                        )));
                    }
                    let r = sqlx::query(q("UPDATE social_posts SET text = ?, media = ?, link = ?, options = ?, updated_at = ? WHERE id = ?"))
                        .bind(text)
                        .bind(media.to_string())
                        .bind(link)
                        .bind(options.to_string())
                        .bind(now)
                        .bind(id)
                        .execute(&mut *self.0)
                        .await?;
                    for (channel, t) in overrides {
                        sqlx::query(q("UPDATE social_targets SET text = ?, updated_at = ? WHERE post_id = ? AND channel_id = ?"))
                            .bind(t)
                            .bind(now)
                            .bind(id)
                            .bind(channel)
                            .execute(&mut *self.0)
                            .await?;
                    }
                    Ok(r.rows_affected() > 0)
                }

                /// Changes the post's targets (all, or one by id) whose status allows it;
                /// returns how many changed.
                pub(crate) async fn social_change(
                    &mut self,
                    post_id: &str,
                    target_id: Option<&str>,
                    change: &TargetChange,
                    now: Millis,
                ) -> Result<u64> {
                    let from = change.from().iter().map(|s| format!("'{s}'")).collect::<Vec<_>>().join(", ");
                    let filter = format!("post_id = ? AND (? IS NULL OR id = ?) AND status IN ({from})");
                    let what = || "the slot is taken on that channel".to_string();
                    let r = match change {
                        TargetChange::Schedule { at, queued } => sqlx::query(q(&format!(
                            "UPDATE social_targets SET status = 'scheduled', scheduled_at = COALESCE(?, scheduled_at),
                               due_at = COALESCE(?, scheduled_at, ?), queued = ?, sent_at = NULL, reason = NULL, updated_at = ?
                             WHERE {filter} AND (? IS NOT NULL OR scheduled_at IS NOT NULL)"
                        )))
                        .bind(*at)
                        .bind(*at)
                        .bind(now)
                        .bind(*queued as i64)
                        .bind(now)
                        .bind(post_id)
                        .bind(target_id)
                        .bind(target_id)
                        .bind(*at)
                        .execute(&mut *self.0)
                        .await
                        .map_err(|e| unique(e, &what()))?,
                        TargetChange::Unschedule => sqlx::query(q(&format!(
                            "UPDATE social_targets SET status = 'draft', due_at = NULL, queued = 0, updated_at = ? WHERE {filter}"
                        )))
                        .bind(now)
                        .bind(post_id)
                        .bind(target_id)
                        .bind(target_id)
                        .execute(&mut *self.0)
                        .await?,
                        TargetChange::Cancel => sqlx::query(q(&format!(
                            "UPDATE social_targets SET status = 'cancelled', due_at = NULL, reason = 'cancelled', updated_at = ? WHERE {filter}"
                        )))
                        .bind(now)
                        .bind(post_id)
                        .bind(target_id)
                        .bind(target_id)
                        .execute(&mut *self.0)
                        .await?,
                        TargetChange::Confirm { remote_id, remote_url } => sqlx::query(q(&format!(
                            "UPDATE social_targets SET status = 'published', remote_id = ?, remote_url = ?, published_at = COALESCE(sent_at, ?),
                               due_at = NULL, reason = 'a person confirmed it was published', updated_at = ? WHERE {filter}"
                        )))
                        .bind(remote_id)
                        .bind(remote_url)
                        .bind(now)
                        .bind(now)
                        .bind(post_id)
                        .bind(target_id)
                        .bind(target_id)
                        .execute(&mut *self.0)
                        .await?,
                        TargetChange::Retry => sqlx::query(q(&format!(
                            "UPDATE social_targets SET status = 'scheduled', due_at = ?, sent_at = NULL,
                               reason = 'a person asked to publish it again', updated_at = ? WHERE {filter}"
                        )))
                        .bind(now)
                        .bind(now)
                        .bind(post_id)
                        .bind(target_id)
                        .bind(target_id)
                        .execute(&mut *self.0)
                        .await?,
                    };
                    Ok(r.rows_affected())
                }

                pub(crate) async fn social_taken_slots(&mut self, channel_id: &str, from: Millis, to: Millis) -> Result<Vec<Millis>> {
                    Ok(sqlx::query_scalar(q(
                        "SELECT scheduled_at FROM social_targets WHERE channel_id = ? AND scheduled_at >= ? AND scheduled_at < ?
                           AND status NOT IN ('cancelled', 'failed') ORDER BY scheduled_at",
                    ))
                    .bind(channel_id)
                    .bind(from)
                    .bind(to)
                    .fetch_all(&mut *self.0)
                    .await?)
                }

                pub(crate) async fn social_claim(&mut self, owner: &str, now: Millis, limit: i64, lease_ms: i64) -> Result<Vec<TargetRow>> {
                    // Scheduled and due, or publishing by a node whose lease ran out; never
                    // on a paused channel.
                    let lock = if $pg { " FOR UPDATE OF t SKIP LOCKED" } else { "" };
                    let sql = format!(
                        "UPDATE social_targets SET status = 'publishing', owner = ?, lease_until = ?, attempts = attempts + 1, updated_at = ?
                         WHERE id IN (SELECT t.id FROM social_targets t JOIN social_channels c ON c.id = t.channel_id
                           WHERE ((t.status = 'scheduled' AND t.due_at <= ?) OR (t.status = 'publishing' AND t.lease_until < ?))
                             AND c.paused_reason IS NULL
                           ORDER BY t.due_at, t.id LIMIT ?{lock})
                         RETURNING {TARGET_COLS}"
                    );
                    let rows = sqlx::query(q(&sql))
                        .bind(owner)
                        .bind(now + lease_ms)
                        .bind(now)
                        .bind(now)
                        .bind(now)
                        .bind(limit)
                        .fetch_all(&mut *self.0)
                        .await?;
                    Ok(rows.iter().map(|r| target_row!(r)).collect())
                }

                pub(crate) async fn social_next_due(&mut self) -> Result<Option<Millis>> {
                    Ok(sqlx::query_scalar(q(
                        "SELECT MIN(CASE WHEN t.status = 'scheduled' THEN t.due_at ELSE t.lease_until END) FROM social_targets t
                         JOIN social_channels c ON c.id = t.channel_id
                         WHERE t.status IN ('scheduled', 'publishing') AND c.paused_reason IS NULL",
                    ))
                    .fetch_one(&mut *self.0)
                    .await?)
                }

                pub(crate) async fn social_mark_sent(&mut self, id: &str, owner: &str, now: Millis) -> Result<bool> {
                    let r = sqlx::query(q(
                        "UPDATE social_targets SET sent_at = ?, updated_at = ? WHERE id = ? AND owner = ? AND status = 'publishing'",
                    ))
                    .bind(now)
                    .bind(now)
                    .bind(id)
                    .bind(owner)
                    .execute(&mut *self.0)
                    .await?;
                    Ok(r.rows_affected() > 0)
                }

                pub(crate) async fn social_finish(&mut self, id: &str, owner: &str, outcome: &TargetOutcome, now: Millis) -> Result<bool> {
                    let fence = "WHERE id = ? AND owner = ? AND status = 'publishing'";
                    let r = match outcome {
                        TargetOutcome::Published { remote_id, remote_url } => sqlx::query(q(&format!(
                            "UPDATE social_targets SET status = 'published', remote_id = ?, remote_url = ?, published_at = ?, due_at = NULL,
                               owner = NULL, lease_until = NULL, reason = NULL, updated_at = ? {fence}"
                        )))
                        .bind(remote_id)
                        .bind(remote_url)
                        .bind(now)
                        .bind(now)
                        .bind(id)
                        .bind(owner)
                        .execute(&mut *self.0)
                        .await?,
                        TargetOutcome::Retry { due_at, reason, error, sent } => sqlx::query(q(&format!(
                            "UPDATE social_targets SET status = 'scheduled', due_at = ?, reason = ?, error = COALESCE(?, error),
                               sent_at = CASE WHEN ? = 1 THEN sent_at ELSE NULL END, owner = NULL, lease_until = NULL, updated_at = ? {fence}"
                        )))
                        .bind(*due_at)
                        .bind(reason)
                        .bind(error.as_ref().map(Value::to_string))
                        .bind(*sent as i64)
                        .bind(now)
                        .bind(id)
                        .bind(owner)
                        .execute(&mut *self.0)
                        .await?,
                        TargetOutcome::Held { reason, error } | TargetOutcome::Failed { reason, error } => {
                            let st = if matches!(outcome, TargetOutcome::Held { .. }) { "held" } else { "failed" };
                            sqlx::query(q(&format!(
                                "UPDATE social_targets SET status = ?, due_at = NULL, reason = ?, error = COALESCE(?, error),
                                   owner = NULL, lease_until = NULL, updated_at = ? {fence}"
                            )))
                            .bind(st)
                            .bind(reason)
                            .bind(error.as_ref().map(Value::to_string))
                            .bind(now)
                            .bind(id)
                            .bind(owner)
                            .execute(&mut *self.0)
                            .await?
                        }
                        TargetOutcome::PauseChannel { reason, error } => {
                            let r = sqlx::query(q(&format!(
                                "UPDATE social_targets SET status = 'scheduled', due_at = ?, reason = ?, error = COALESCE(?, error),
                                   sent_at = NULL, owner = NULL, lease_until = NULL, updated_at = ? {fence}"
                            )))
                            .bind(now)
                            .bind(format!("waiting: the channel is paused ({reason})"))
                            .bind(error.as_ref().map(Value::to_string))
                            .bind(now)
                            .bind(id)
                            .bind(owner)
                            .execute(&mut *self.0)
                            .await?;
                            if r.rows_affected() > 0 {
                                sqlx::query(q(
                                    "UPDATE social_channels SET paused_reason = ?, paused_at = ?, updated_at = ?
                                     WHERE id = (SELECT channel_id FROM social_targets WHERE id = ?)",
                                ))
                                .bind(reason)
                                .bind(now)
                                .bind(now)
                                .bind(id)
                                .execute(&mut *self.0)
                                .await?;
                            }
                            r
                        }
                    };
                    Ok(r.rows_affected() > 0)
                }
            }
        };
    };
}
pub(crate) use social_statements;

/// A read of one backend: `$body` gets `t: &mut Tx`.
macro_rules! rd {
    ($self:ident, |$t:ident| $body:expr) => {
        match &$self.backend {
            crate::Backend::Sqlite(b) => {
                let mut c = b.read_conn().await?;
                let $t = &mut crate::sqlite::contacts_tx(&mut c);
                $body
            }
            crate::Backend::Postgres(b) => {
                let mut c = b.pool_conn().await?;
                let $t = &mut crate::pg::contacts_tx(&mut c);
                $body
            }
        }
    };
}

/// A write in one transaction: `$body` gets `t: &mut Tx`; captured values must be owned.
macro_rules! wr {
    ($self:ident, |$t:ident| $body:expr) => {
        match &$self.backend {
            crate::Backend::Sqlite(b) => {
                b.write_job(move |c| {
                    Box::pin(async move {
                        let $t = &mut crate::sqlite::contacts_tx(c);
                        $body
                    })
                })
                .await
            }
            crate::Backend::Postgres(b) => {
                let mut tx = b.begin().await?;
                let out = {
                    let $t = &mut crate::pg::contacts_tx(&mut tx);
                    $body
                }?;
                tx.commit().await?;
                Ok(out)
            }
        }
    };
}

impl Store {
    pub async fn create_channel(&self, c: ChannelWrite, now: Millis) -> Result<ChannelRow> {
        wr!(self, |t| t.social_insert_channel(&c, now).await)
    }

    pub async fn update_channel(&self, id: &str, c: ChannelWrite, now: Millis) -> Result<Option<ChannelRow>> {
        let id = id.to_string();
        wr!(self, |t| t.social_update_channel(&id, &c, now).await)
    }

    pub async fn channel(&self, id: &str) -> Result<Option<ChannelRow>> {
        rd!(self, |t| t.social_channel(id).await)
    }

    pub async fn list_channels(&self) -> Result<Vec<ChannelRow>> {
        rd!(self, |t| t.social_channels().await)
    }

    /// Deletes a channel with no post scheduled, publishing or held on it (`Conflict` else).
    pub async fn delete_channel(&self, id: &str) -> Result<bool> {
        let id = id.to_string();
        wr!(self, |t| t.social_delete_channel(&id).await)
    }

    /// Keeps what the network's instance said about its limits.
    pub async fn set_channel_limits(&self, id: &str, limits: &Value, now: Millis) -> Result<()> {
        let (id, limits) = (id.to_string(), limits.clone());
        wr!(self, |t| t.social_set_limits(&id, &limits, now).await)
    }

    /// Pauses one channel with a reason; returns whether it was active.
    pub async fn pause_channel(&self, id: &str, reason: &str, now: Millis) -> Result<bool> {
        let (id, reason) = (id.to_string(), reason.to_string());
        wr!(self, |t| t.social_pause(Some(&id), None, Some(&reason), now).await.map(|v| !v.is_empty()))
    }

    /// Resumes one channel (by id) or every channel of a connection; the ids resumed.
    pub async fn resume_channels(&self, id: Option<&str>, connection: Option<&str>, now: Millis) -> Result<Vec<String>> {
        let (id, connection) = (id.map(str::to_string), connection.map(str::to_string));
        wr!(self, |t| t.social_pause(id.as_deref(), connection.as_deref(), None, now).await)
    }

    /// Stores a post and its targets in one transaction. A post with a `dedupe_key` already
    /// stored is not stored again: the first one is returned, with `false`.
    pub async fn create_post(&self, p: NewPost, now: Millis) -> Result<(PostDetail, bool)> {
        let (id, created) = wr!(self, |t| t.social_insert_post(&p, now).await)?;
        let detail = self.post(&id).await?.ok_or_else(|| StoreError::NotFound(format!("the post `{id}` vanished")))?;
        Ok((detail, created))
    }

    pub async fn post(&self, id: &str) -> Result<Option<PostDetail>> {
        rd!(self, |t| t.social_post(id).await)
    }

    /// Posts with a target planned or published in the filter's time range (all posts
    /// without one), earliest first.
    pub async fn list_posts(&self, f: &PostFilter) -> Result<Vec<PostDetail>> {
        if let Some(s) = &f.status
            && !status::ALL.contains(&s.as_str())
        {
            return Err(StoreError::Invalid(format!("`{s}` is not a post status; use one of {}", status::ALL.join(", "))));
        }
        let mut f = f.clone();
        f.limit = if f.limit <= 0 { 200 } else { f.limit.min(1000) };
        let ids = rd!(self, |t| t.social_post_ids(&f).await)?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(p) = self.post(&id).await? {
                out.push(p);
            }
        }
        Ok(out)
    }

    /// Replaces a post's content and per-channel texts (`Conflict` once a target is
    /// publishing, published or held).
    #[allow(clippy::too_many_arguments)]
    pub async fn edit_post(
        &self,
        id: &str,
        text: String,
        media: Value,
        link: Option<String>,
        options: Value,
        overrides: Vec<(String, Option<String>)>,
        now: Millis,
    ) -> Result<bool> {
        let id = id.to_string();
        wr!(self, |t| t.social_edit_post(&id, &text, &media, link.as_deref(), &options, &overrides, now).await)
    }

    /// Changes a post's targets (all, or the one `target_id`) whose status allows it;
    /// `Conflict` naming the statuses when none does.
    pub async fn change_targets(&self, post_id: &str, target_id: Option<&str>, change: TargetChange, now: Millis) -> Result<u64> {
        let (pid, tid) = (post_id.to_string(), target_id.map(str::to_string));
        let ch = change.clone();
        let n = wr!(self, |t| t.social_change(&pid, tid.as_deref(), &ch, now).await)?;
        if n == 0 {
            let Some(p) = self.post(post_id).await? else { return Err(StoreError::NotFound(format!("no post `{post_id}`"))) };
            let shown: Vec<String> = p
                .targets
                .iter()
                .filter(|t| target_id.is_none_or(|id| id == t.id))
                .map(|t| format!("{} on {}", t.status, t.channel_id))
                .collect();
            if shown.is_empty() {
                return Err(StoreError::NotFound(format!("the post `{post_id}` has no target `{}`", target_id.unwrap_or_default())));
            }
            return Err(StoreError::Conflict(format!(
                "nothing to change: the target(s) are {} and this needs {}",
                shown.join(", "),
                change.from().join(" or ")
            )));
        }
        Ok(n)
    }

    /// The queue times already taken on a channel in `[from, to)`.
    pub async fn taken_slots(&self, channel_id: &str, from: Millis, to: Millis) -> Result<Vec<Millis>> {
        rd!(self, |t| t.social_taken_slots(channel_id, from, to).await)
    }

    /// Claims up to `limit` due targets for `owner` (a target whose lease ran out is claimed
    /// again: check its `sent_at`).
    pub async fn claim_targets(&self, owner: &str, now: Millis, limit: i64, lease_ms: i64) -> Result<Vec<TargetRow>> {
        let owner = owner.to_string();
        wr!(self, |t| t.social_claim(&owner, now, limit, lease_ms).await)
    }

    /// When the next target is due (or a publishing lease runs out), on an active channel.
    pub async fn next_target_due(&self) -> Result<Option<Millis>> {
        rd!(self, |t| t.social_next_due().await)
    }

    /// The durable mark written before a request leaves; `false` when `owner` lost the claim.
    pub async fn mark_target_sent(&self, id: &str, owner: &str, now: Millis) -> Result<bool> {
        let (id, owner) = (id.to_string(), owner.to_string());
        wr!(self, |t| t.social_mark_sent(&id, &owner, now).await)
    }

    /// Records a claimed target's outcome; `false` when `owner` no longer holds it.
    pub async fn finish_target(&self, id: &str, owner: &str, outcome: TargetOutcome, now: Millis) -> Result<bool> {
        let (id, owner) = (id.to_string(), owner.to_string());
        wr!(self, |t| t.social_finish(&id, &owner, &outcome, now).await)
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
    fn a_posts_status_follows_its_targets() {
        let s = |v: &[&str]| post_status(&v.iter().map(|s| target(s)).collect::<Vec<_>>());
        assert_eq!(s(&["draft", "draft"]), "draft");
        assert_eq!(s(&["scheduled", "published"]), "scheduled");
        assert_eq!(s(&["published", "cancelled"]), "published");
        assert_eq!(s(&["published", "failed"]), "failed");
        assert_eq!(s(&["held", "scheduled"]), "held");
        assert_eq!(s(&["cancelled"]), "cancelled");
        assert_eq!(s(&["publishing", "held"]), "publishing");
    }
}
