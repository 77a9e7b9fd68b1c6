//! Triggers. Built-in apps produce events from the outside (webhook ingress, the clock,
//! `emit`): those are declared in the manifest with a [`crate::TriggerKind`] and carried out
//! by the runner and the web server. Connectors that poll an app implement
//! [`PollingTrigger`]: typed for authors, erased to [`DynPollingTrigger`] for the runner.
//!
//! The contract of a poll: return items newest first, each with a stable dedupe key; the
//! runner stores the cursor and the keys it has seen, seeds them when a recipe is enabled
//! (so old items do not fire) and keeps them across edits of the recipe.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::BoxFuture;
use crate::action::{ActionContext, decode_input};
use crate::error::ConnectorError;
use crate::manifest::{TriggerKind, TriggerSpec, schema_of};

/// One page of a poll.
#[derive(Debug, Clone, PartialEq)]
pub struct PollPage<T> {
    /// Newest first.
    pub items: Vec<T>,
    /// Where the next poll starts; `None` keeps the previous cursor.
    pub cursor: Option<String>,
}

/// A typed polling trigger.
pub trait PollingTrigger: Send + Sync + 'static {
    type Config: DeserializeOwned + schemars::JsonSchema + Send;
    type Item: Serialize + schemars::JsonSchema + Send;

    const ID: &'static str;
    const NAME: &'static str;
    const DESCRIPTION: &'static str;

    fn sample() -> Self::Item;

    /// The key that identifies an item across polls (usually the vendor's id).
    fn dedupe_key(item: &Self::Item) -> String;

    fn poll(
        &self,
        ctx: &ActionContext,
        config: Self::Config,
        cursor: Option<String>,
    ) -> impl Future<Output = Result<PollPage<Self::Item>, ConnectorError>> + Send;
}

/// A polled item with its dedupe key, as the runner sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct PolledItem {
    pub dedupe_key: String,
    pub event: Value,
}

/// A polling trigger over JSON values.
pub trait DynPollingTrigger: Send + Sync {
    fn spec(&self) -> &TriggerSpec;
    fn poll<'a>(
        &'a self,
        ctx: &'a ActionContext,
        config: Value,
        cursor: Option<String>,
    ) -> BoxFuture<'a, Result<PollPage<PolledItem>, ConnectorError>>;
}

/// The blanket adapter from [`PollingTrigger`] to [`DynPollingTrigger`].
pub struct ErasedPolling<T: PollingTrigger> {
    trigger: T,
    spec: TriggerSpec,
}

impl<T: PollingTrigger> ErasedPolling<T> {
    pub fn new(trigger: T) -> Self {
        let spec = TriggerSpec {
            id: T::ID.into(),
            name: T::NAME.into(),
            description: T::DESCRIPTION.into(),
            kind: TriggerKind::Polling,
            config_schema: schema_of::<T::Config>(),
            output_schema: schema_of::<T::Item>(),
            sample: serde_json::to_value(T::sample()).unwrap_or(Value::Null),
        };
        ErasedPolling { trigger, spec }
    }
}

impl<T: PollingTrigger> DynPollingTrigger for ErasedPolling<T> {
    fn spec(&self) -> &TriggerSpec {
        &self.spec
    }

    fn poll<'a>(
        &'a self,
        ctx: &'a ActionContext,
        config: Value,
        cursor: Option<String>,
    ) -> BoxFuture<'a, Result<PollPage<PolledItem>, ConnectorError>> {
        Box::pin(async move {
            let config: T::Config = decode_input(config)?;
            let page = self.trigger.poll(ctx, config, cursor).await?;
            let mut items = Vec::with_capacity(page.items.len());
            for item in page.items {
                let dedupe_key = T::dedupe_key(&item);
                let event = serde_json::to_value(item)
                    .map_err(|e| ConnectorError::permanent(format!("the trigger's item could not be encoded: {e}")))?;
                items.push(PolledItem { dedupe_key, event });
            }
            Ok(PollPage { items, cursor: page.cursor })
        })
    }
}

/// What a subscribe (REST hook) trigger's app answered when Enlace subscribed: the id to
/// unsubscribe with, when the subscription ends by itself (the runner subscribes again
/// before then), and a secret the app signs its calls with, if it gave one.
#[derive(Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Subscription {
    pub id: String,
    /// Milliseconds since the Unix epoch; `None` when the subscription does not expire.
    #[serde(default)]
    pub expires_at: Option<i64>,
    #[serde(default)]
    pub secret: Option<crate::Secret>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.id)
            .field("expires_at", &self.expires_at)
            .field("secret", &self.secret.as_ref().map(|_| "[secret]"))
            .finish()
    }
}

/// A typed subscribe (REST hook) trigger: the app calls Enlace's webhook ingress after
/// Enlace subscribes. The runner subscribes when a recipe is enabled (with the recipe's
/// ingress URL as `target_url`), unsubscribes when it is disabled, and subscribes again
/// before [`Subscription::expires_at`]. Incoming calls are ordinary webhook events
/// (`{body, headers, query, received_at, path}`).
pub trait SubscribeTrigger: Send + Sync + 'static {
    type Config: DeserializeOwned + schemars::JsonSchema + Send;
    /// What the app sends to the target URL (documentation and data pills only).
    type Item: Serialize + schemars::JsonSchema + Send;

    const ID: &'static str;
    const NAME: &'static str;
    const DESCRIPTION: &'static str;

    fn sample() -> Self::Item;

    fn subscribe(
        &self,
        ctx: &ActionContext,
        config: Self::Config,
        target_url: &str,
    ) -> impl Future<Output = Result<Subscription, ConnectorError>> + Send;

    fn unsubscribe(
        &self,
        ctx: &ActionContext,
        config: Self::Config,
        subscription: &Subscription,
    ) -> impl Future<Output = Result<(), ConnectorError>> + Send;
}

/// A subscribe trigger over JSON values, as the runner sees it.
pub trait DynSubscribeTrigger: Send + Sync {
    fn spec(&self) -> &TriggerSpec;
    fn subscribe<'a>(
        &'a self,
        ctx: &'a ActionContext,
        config: Value,
        target_url: &'a str,
    ) -> BoxFuture<'a, Result<Subscription, ConnectorError>>;
    fn unsubscribe<'a>(
        &'a self,
        ctx: &'a ActionContext,
        config: Value,
        subscription: &'a Subscription,
    ) -> BoxFuture<'a, Result<(), ConnectorError>>;
}

/// The blanket adapter from [`SubscribeTrigger`] to [`DynSubscribeTrigger`].
pub struct ErasedSubscribe<T: SubscribeTrigger> {
    trigger: T,
    spec: TriggerSpec,
}

impl<T: SubscribeTrigger> ErasedSubscribe<T> {
    pub fn new(trigger: T) -> Self {
        let spec = TriggerSpec {
            id: T::ID.into(),
            name: T::NAME.into(),
            description: T::DESCRIPTION.into(),
            kind: TriggerKind::Subscribe,
            config_schema: schema_of::<T::Config>(),
            output_schema: schema_of::<T::Item>(),
            sample: serde_json::to_value(T::sample()).unwrap_or(Value::Null),
        };
        ErasedSubscribe { trigger, spec }
    }
}

impl<T: SubscribeTrigger> DynSubscribeTrigger for ErasedSubscribe<T> {
    fn spec(&self) -> &TriggerSpec {
        &self.spec
    }

    fn subscribe<'a>(
        &'a self,
        ctx: &'a ActionContext,
        config: Value,
        target_url: &'a str,
    ) -> BoxFuture<'a, Result<Subscription, ConnectorError>> {
        Box::pin(async move {
            let config: T::Config = decode_input(config)?;
            self.trigger.subscribe(ctx, config, target_url).await
        })
    }

    fn unsubscribe<'a>(
        &'a self,
        ctx: &'a ActionContext,
        config: Value,
        subscription: &'a Subscription,
    ) -> BoxFuture<'a, Result<(), ConnectorError>> {
        Box::pin(async move {
            let config: T::Config = decode_input(config)?;
            self.trigger.unsubscribe(ctx, config, subscription).await
        })
    }
}
