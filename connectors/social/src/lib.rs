//! The `social` app: recipes create and schedule social posts. The actions reach the
//! scheduler through the [`SocialBackend`] the runner lends each call in
//! `ActionContext::extensions` (they make no HTTP request: `HTTP_ONLY` is false); the post
//! is checked against every channel's network when it is scheduled, and published by the
//! runner at its time (see `docs/social.md`). The step's idempotency key makes a replayed
//! step give back the post it made, not a second one.

use enlace_core::social::{Media, SocialBackend};
use enlace_core::{Action, ActionContext, Connector, ConnectorError, Idempotency};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// The app id recipes use (`app: social`).
pub const APP_ID: &str = "social";

/// The `social` connector.
pub fn connector() -> Connector {
    Connector::builder(
        APP_ID,
        "Social posts",
        "Schedule posts on the installation's social channels (Mastodon, Bluesky, X, LinkedIn, Facebook pages).",
    )
    .action(SchedulePost)
    .action(AddToQueue)
    .build()
}

/// The channels a post goes to: `all`, or a list of channel ids, each with its own text if
/// it differs.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Channels {
    /// `all`: every channel of the installation.
    All(String),
    /// Channel ids (`["0193...", ...]`) or `[{channel: ID, text: "..."}]`.
    List(Vec<Value>),
}

/// The `with` map of `social.schedule_post`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleInput {
    /// The post's text.
    #[serde(default)]
    pub text: String,
    /// Where it goes: `all`, or channel ids (see `GET /api/v1/social/channels`).
    pub channels: Channels,
    /// A link (its own field on LinkedIn and Facebook pages, else written at the end of the text).
    #[serde(default)]
    pub link: Option<String>,
    /// Pictures or videos: `[{url, mime_type, alt}]`.
    #[serde(default)]
    pub media: Vec<Media>,
    /// `visibility`, `content_warning`, `language`.
    #[serde(default)]
    pub options: Map<String, Value>,
    /// When: a time (RFC 3339). Without it, the next free slot of each channel's queue.
    #[serde(default)]
    pub at: Option<String>,
}

/// The scheduled post.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ScheduleOutput {
    /// The post's id (`GET /api/v1/social/posts/{id}`).
    pub id: String,
    /// `scheduled`.
    pub status: String,
    /// One per channel: `{channel, scheduled_at}`.
    pub targets: Vec<Value>,
}

fn backend(ctx: &ActionContext) -> Result<&dyn SocialBackend, ConnectorError> {
    ctx.extensions
        .social
        .as_deref()
        .ok_or_else(|| ConnectorError::permanent("the social scheduler is not available here (it runs inside Enlace's runner)"))
}

async fn schedule(ctx: &ActionContext, mut input: Value, queue: bool) -> Result<ScheduleOutput, ConnectorError> {
    if queue {
        input["at"] = Value::Null;
    }
    let out = backend(ctx)?.schedule(input, ctx.idempotency_key.clone(), format!("run:{}", ctx.run_id)).await?;
    serde_json::from_value::<Value>(out.clone())
        .ok()
        .map(|v| ScheduleOutput {
            id: v["id"].as_str().unwrap_or_default().to_string(),
            status: v["status"].as_str().unwrap_or_default().to_string(),
            targets: v["targets"].as_array().cloned().unwrap_or_default(),
        })
        .ok_or_else(|| ConnectorError::permanent(format!("the scheduler answered something unexpected: {out}")))
}

fn sample() -> ScheduleOutput {
    ScheduleOutput {
        id: "0193a8e2-7d1c-7c3e-9f00-5b1c2d3e4f50".into(),
        status: "scheduled".into(),
        targets: vec![json!({"channel": "0193a8e2-0000-7000-8000-000000000001", "scheduled_at": "2026-11-27T08:00:00.000Z"})],
    }
}

/// `social.schedule_post`.
#[derive(Debug, Clone, Copy)]
pub struct SchedulePost;

impl Action for SchedulePost {
    type Input = ScheduleInput;
    type Output = ScheduleOutput;
    const ID: &'static str = "schedule_post";
    const NAME: &'static str = "Schedule a post";
    const DESCRIPTION: &'static str =
        "Schedules a post on social channels at a time (or in each channel's queue), checked against each network's rules first.";
    const IDEMPOTENCY: Idempotency = Idempotency::Key;
    const HTTP_ONLY: bool = false;

    fn sample() -> ScheduleOutput {
        sample()
    }

    async fn call(&self, ctx: &ActionContext, input: ScheduleInput) -> Result<ScheduleOutput, ConnectorError> {
        schedule(ctx, to_value(&input), false).await
    }
}

/// The `with` map of `social.add_to_queue`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QueueInput {
    /// The post's text.
    #[serde(default)]
    pub text: String,
    /// Where it goes: `all`, or channel ids (see `GET /api/v1/social/channels`).
    pub channels: Channels,
    /// A link (its own field on LinkedIn and Facebook pages, else written at the end of the text).
    #[serde(default)]
    pub link: Option<String>,
    /// Pictures or videos: `[{url, mime_type, alt}]`.
    #[serde(default)]
    pub media: Vec<Media>,
    /// `visibility`, `content_warning`, `language`.
    #[serde(default)]
    pub options: Map<String, Value>,
}

/// `social.add_to_queue`.
#[derive(Debug, Clone, Copy)]
pub struct AddToQueue;

impl Action for AddToQueue {
    type Input = QueueInput;
    type Output = ScheduleOutput;
    const ID: &'static str = "add_to_queue";
    const NAME: &'static str = "Add a post to the queue";
    const DESCRIPTION: &'static str =
        "Puts a post in the next free time slot of each channel's queue, checked against each network's rules first.";
    const IDEMPOTENCY: Idempotency = Idempotency::Key;
    const HTTP_ONLY: bool = false;

    fn sample() -> ScheduleOutput {
        sample()
    }

    async fn call(&self, ctx: &ActionContext, input: QueueInput) -> Result<ScheduleOutput, ConnectorError> {
        let v = json!({"text": input.text, "channels": input.channels, "link": input.link, "media": input.media, "options": input.options});
        schedule(ctx, v, true).await
    }
}

fn to_value(i: &ScheduleInput) -> Value {
    json!({"text": i.text, "channels": i.channels, "link": i.link, "media": i.media, "options": i.options, "at": i.at})
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use enlace_core::{BoxFuture, Credentials, ErrorClass};

    use super::*;

    #[derive(Default)]
    struct Fake(Mutex<Vec<(Value, String, String)>>);

    impl SocialBackend for Fake {
        fn schedule(&self, request: Value, key: String, origin: String) -> BoxFuture<'_, Result<Value, ConnectorError>> {
            Box::pin(async move {
                if request["text"] == "too long" {
                    return Err(ConnectorError::bad_input("text", "312 of 300 graphemes: cut 12"));
                }
                self.0.lock().unwrap().push((request, key, origin));
                Ok(json!({"id": "p1", "status": "scheduled", "targets": [{"channel": "c1", "scheduled_at": "2026-11-27T08:00:00.000Z"}]}))
            })
        }
    }

    #[tokio::test]
    async fn actions_hand_the_post_to_the_scheduler_with_the_step_key() {
        let fake = Arc::new(Fake::default());
        let mut ctx = enlace_kit::testing::ctx(Credentials::None);
        ctx.extensions.social = Some(fake.clone());
        let c = connector();
        let out = c
            .action("add_to_queue")
            .unwrap()
            .call(&ctx, json!({"text": "New post", "channels": "all", "link": "https://b.example/1"}))
            .await
            .unwrap();
        assert_eq!(out["id"], "p1");
        let out = c
            .action("schedule_post")
            .unwrap()
            .call(&ctx, json!({"text": "Hi", "channels": ["c1"], "at": "2026-12-01T09:00:00Z"}))
            .await
            .unwrap();
        assert_eq!(out["status"], "scheduled");
        let seen = fake.0.lock().unwrap().clone();
        assert_eq!(seen[0].0["at"], Value::Null);
        assert_eq!(seen[0].0["channels"], "all");
        assert_eq!(seen[1].0["at"], "2026-12-01T09:00:00Z");
        assert_eq!(seen[1].1, ctx.idempotency_key);
        assert_eq!(seen[1].2, format!("run:{}", ctx.run_id));
        let e = c.action("schedule_post").unwrap().call(&ctx, json!({"text": "too long", "channels": "all"})).await.unwrap_err();
        assert_eq!(e.class(), ErrorClass::BadInput);
        // Without the runner: a clear refusal.
        let bare = enlace_kit::testing::ctx(Credentials::None);
        let e = c.action("schedule_post").unwrap().call(&bare, json!({"text": "x", "channels": "all"})).await.unwrap_err();
        assert!(e.message().contains("runner"), "{e}");
    }
}
