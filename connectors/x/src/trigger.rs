//! `x.new_mention`: each new post that mentions an account.

use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use enlace_core::http::Method;
use enlace_core::trigger::{PollPage, PollingTrigger};
use enlace_core::{ActionContext, ConnectorError};
use enlace_kit::{Pager, Strategy};

use crate::{id_field, request};

/// The most pages read in one poll (of 100 mentions each).
pub const MAX_PAGES: u32 = 5;

/// The `with` map of an `x.new_mention` trigger.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MentionConfig {
    /// The numeric id of the account whose mentions to watch, like `2244994945`.
    pub user_id: String,
}

/// A post that mentions the account.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
pub struct Mention {
    /// The post's id.
    pub id: String,
    /// The post's text.
    pub text: String,
    /// The ids of the post's versions.
    #[serde(default, alias = "edit_history_post_ids")]
    pub edit_history_tweet_ids: Vec<String>,
}

/// `x.new_mention`.
#[derive(Debug, Clone)]
pub struct NewMention {
    pub(crate) base: Arc<str>,
}

impl PollingTrigger for NewMention {
    type Config = MentionConfig;
    type Item = Mention;
    const ID: &'static str = "new_mention";
    const NAME: &'static str = "New mention";
    const DESCRIPTION: &'static str = "Starts a run for each new post that mentions the account.";

    fn sample() -> Mention {
        Mention {
            id: "1445880548472328193".into(),
            text: "@enlace when is the next webinar?".into(),
            edit_history_tweet_ids: vec!["1445880548472328193".into()],
        }
    }

    fn dedupe_key(item: &Mention) -> String {
        item.id.clone()
    }

    /// Every page (`meta.next_token`, at most [`MAX_PAGES`]) newer than the newest mention
    /// seen (`since_id`, the cursor); the cursor becomes the newest id read.
    async fn poll(&self, ctx: &ActionContext, config: MentionConfig, cursor: Option<String>) -> Result<PollPage<Mention>, ConnectorError> {
        let user = id_field("user_id", &config.user_id)?;
        let mut path = format!("/2/users/{user}/mentions?max_results=100");
        if let Some(c) = cursor.as_deref().filter(|c| !c.is_empty()) {
            path.push_str(&format!("&since_id={}", id_field("cursor", c)?));
        }
        let first = request(&self.base, ctx, Method::GET, &path, None)?;
        let paged = Pager::new(first, Strategy::cursor("/meta/next_token", "pagination_token")?, "/data")?
            .max_pages(MAX_PAGES)
            // X leaves `data` out of an empty listing.
            .missing_is_empty(true)
            .fetch(ctx.http.as_ref())
            .await?;
        let items = paged
            .items
            .into_iter()
            .map(|v| {
                serde_json::from_value::<Mention>(v)
                    .map_err(|e| ConnectorError::permanent(format!("X answered a mention that is not a post: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let cursor = items.first().map(|m| m.id.clone());
        Ok(PollPage { items, cursor })
    }
}
