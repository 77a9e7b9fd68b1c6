//! Connectors and the registry the runner and the validator look names up in.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::action::{Action, DynAction, Erased};
use crate::connection::{ConnectionContext, ConnectionTest, DynConnectionTest, TestOutcome};
use crate::inbound::InboundTrigger;
use crate::manifest::{AuthKind, ConnectorManifest, RateLimit, TriggerKind, TriggerSpec};
use crate::trigger::{DynPollingTrigger, DynSubscribeTrigger, ErasedPolling, ErasedSubscribe, PollingTrigger, SubscribeTrigger};

/// A connector: its manifest and the code behind its actions and polling triggers.
#[derive(Clone)]
pub struct Connector {
    pub manifest: ConnectorManifest,
    actions: BTreeMap<String, Arc<dyn DynAction>>,
    polling: BTreeMap<String, Arc<dyn DynPollingTrigger>>,
    subscribe: BTreeMap<String, Arc<dyn DynSubscribeTrigger>>,
    inbound: BTreeMap<String, Arc<dyn InboundTrigger>>,
    tester: Option<Arc<dyn DynConnectionTest>>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector").field("id", &self.manifest.id).finish_non_exhaustive()
    }
}

impl Connector {
    /// Starts a connector: `id` is the app id recipes use.
    pub fn builder(id: &str, name: &str, description: &str) -> ConnectorBuilder {
        ConnectorBuilder {
            connector: Connector {
                manifest: ConnectorManifest {
                    id: id.into(),
                    name: name.into(),
                    description: description.into(),
                    auth: AuthKind::None,
                    rate_limit: None,
                    version: "1".into(),
                    connection_test: false,
                    oauth2: None,
                    triggers: vec![],
                    actions: vec![],
                },
                actions: BTreeMap::new(),
                polling: BTreeMap::new(),
                subscribe: BTreeMap::new(),
                inbound: BTreeMap::new(),
                tester: None,
            },
        }
    }

    pub fn id(&self) -> &str {
        &self.manifest.id
    }

    pub fn action(&self, id: &str) -> Option<&Arc<dyn DynAction>> {
        self.actions.get(id)
    }

    pub fn polling_trigger(&self, id: &str) -> Option<&Arc<dyn DynPollingTrigger>> {
        self.polling.get(id)
    }

    pub fn subscribe_trigger(&self, id: &str) -> Option<&Arc<dyn DynSubscribeTrigger>> {
        self.subscribe.get(id)
    }

    /// The inbound trigger (a vendor calls `/hooks/{path}`, see [`crate::inbound`]) with this id.
    pub fn inbound_trigger(&self, id: &str) -> Option<&Arc<dyn InboundTrigger>> {
        self.inbound.get(id)
    }

    /// Tests a connection with the connector's [`ConnectionTest`]; an app without one
    /// answers [`TestOutcome::Unavailable`], saying so.
    pub fn test_connection<'a>(&'a self, ctx: &'a ConnectionContext) -> crate::BoxFuture<'a, TestOutcome> {
        Box::pin(async move {
            match &self.tester {
                Some(t) => match t.test(ctx).await {
                    Ok(message) => TestOutcome::Ok(message),
                    Err(e) => TestOutcome::Failed(e),
                },
                None => TestOutcome::Unavailable(format!(
                    "the app `{}` has no connection test; its credentials are checked when a step first uses them",
                    self.manifest.id
                )),
            }
        })
    }
}

/// Builds a [`Connector`].
pub struct ConnectorBuilder {
    connector: Connector,
}

impl ConnectorBuilder {
    pub fn auth(mut self, auth: AuthKind) -> Self {
        self.connector.manifest.auth = auth;
        self
    }

    /// The app's OAuth2 authorization server: connections sign in there (and the app's
    /// auth kind becomes OAuth2).
    pub fn oauth2(mut self, app: crate::oauth::OAuth2App) -> Self {
        self.connector.manifest.auth = AuthKind::OAuth2;
        self.connector.manifest.oauth2 = Some(app);
        self
    }

    pub fn rate_limit(mut self, limit: RateLimit) -> Self {
        self.connector.manifest.rate_limit = Some(limit);
        self
    }

    pub fn version(mut self, version: &str) -> Self {
        self.connector.manifest.version = version.into();
        self
    }

    pub fn action<A: Action>(mut self, action: A) -> Self {
        let erased = Erased::new(action);
        self.connector.manifest.actions.push(erased.spec().clone());
        self.connector.actions.insert(A::ID.into(), Arc::new(erased));
        self
    }

    /// An action already erased to JSON (a declarative connector's, built from a manifest
    /// file rather than a Rust type).
    pub fn dyn_action(mut self, action: Arc<dyn DynAction>) -> Self {
        let spec = action.spec().clone();
        self.connector.manifest.actions.push(spec.clone());
        self.connector.actions.insert(spec.id, action);
        self
    }

    /// A polling trigger already erased to JSON (a declarative connector's).
    pub fn dyn_polling_trigger(mut self, trigger: Arc<dyn DynPollingTrigger>) -> Self {
        let spec = trigger.spec().clone();
        debug_assert!(spec.kind == TriggerKind::Polling, "polling triggers poll");
        self.connector.manifest.triggers.push(spec.clone());
        self.connector.polling.insert(spec.id, trigger);
        self
    }

    /// How connections to this app are tested (see [`ConnectionTest`]).
    pub fn connection_test<T: ConnectionTest>(mut self, test: T) -> Self {
        self.connector.manifest.connection_test = true;
        self.connector.tester = Some(Arc::new(test));
        self
    }

    pub fn polling_trigger<T: PollingTrigger>(mut self, trigger: T) -> Self {
        let erased = ErasedPolling::new(trigger);
        self.connector.manifest.triggers.push(erased.spec().clone());
        self.connector.polling.insert(T::ID.into(), Arc::new(erased));
        self
    }

    /// A subscribe (REST hook) trigger: the runner subscribes on enable, unsubscribes on
    /// disable and subscribes again before the subscription expires.
    pub fn subscribe_trigger<T: SubscribeTrigger>(mut self, trigger: T) -> Self {
        let erased = ErasedSubscribe::new(trigger);
        self.connector.manifest.triggers.push(erased.spec().clone());
        self.connector.subscribe.insert(T::ID.into(), Arc::new(erased));
        self
    }

    /// A trigger the vendor calls on `/hooks/{path}`: its spec's kind must be
    /// [`TriggerKind::Webhook`]; the connector checks, shapes and answers each request.
    pub fn inbound_trigger<T: InboundTrigger + 'static>(mut self, trigger: T) -> Self {
        let spec = trigger.spec().clone();
        debug_assert!(spec.kind == TriggerKind::Webhook, "inbound triggers are webhooks");
        self.connector.manifest.triggers.push(spec.clone());
        self.connector.inbound.insert(spec.id, Arc::new(trigger));
        self
    }

    /// A trigger carried out by Enlace itself (webhook ingress, the clock, `emit`).
    pub fn builtin_trigger(mut self, spec: TriggerSpec) -> Self {
        debug_assert!(
            !matches!(spec.kind, TriggerKind::Polling | TriggerKind::Subscribe),
            "polling and subscribe triggers need code: use polling_trigger or subscribe_trigger"
        );
        self.connector.manifest.triggers.push(spec);
        self
    }

    pub fn build(self) -> Connector {
        self.connector
    }
}

/// Every connector this installation knows, by app id.
#[derive(Clone, Default, Debug)]
pub struct Registry {
    connectors: BTreeMap<String, Connector>,
}

impl Registry {
    pub fn new(connectors: impl IntoIterator<Item = Connector>) -> Result<Self, String> {
        let mut map = BTreeMap::new();
        for c in connectors {
            let id = c.id().to_string();
            if map.insert(id.clone(), c).is_some() {
                return Err(format!("two connectors use the app id `{id}`"));
            }
        }
        Ok(Registry { connectors: map })
    }

    pub fn get(&self, app: &str) -> Option<&Connector> {
        self.connectors.get(app)
    }

    pub fn apps(&self) -> impl Iterator<Item = &Connector> {
        self.connectors.values()
    }

    pub fn app_ids(&self) -> Vec<&str> {
        self.connectors.keys().map(String::as_str).collect()
    }
}
