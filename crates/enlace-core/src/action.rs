//! The action trait: typed for authors, erased to JSON for the runner.
//!
//! An author implements [`Action`] with a typed `Input` (serde + JSON schema, doc comments
//! on fields become the UI's help text) and a typed `Output`. [`crate::Connector`] wraps it
//! in [`Erased`], which implements [`DynAction`] over `serde_json::Value`: the runner only
//! ever sees that.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::BoxFuture;
use crate::contacts::Extensions;
use crate::error::ConnectorError;
use crate::http::HttpTransport;
use crate::manifest::{ActionSpec, Idempotency, schema_of};
use crate::secret::Credentials;

/// What the runner gives an action for one call.
#[derive(Clone)]
pub struct ActionContext {
    pub run_id: String,
    /// The step's key in the run (`post`, or `each_item[3].post` inside a loop).
    pub step_key: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// Run id + step key: the same for every attempt and every replay of this call. Pass it
    /// to any API that accepts one.
    pub idempotency_key: String,
    pub credentials: Credentials,
    pub http: Arc<dyn HttpTransport>,
    /// How long the call may take in all.
    pub timeout: Duration,
    /// The built-in services the runner lends this call (the contact store for the
    /// `contacts` app); empty (`Extensions::default()`) for every other connector.
    pub extensions: Extensions,
}

impl std::fmt::Debug for ActionContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActionContext")
            .field("run_id", &self.run_id)
            .field("step_key", &self.step_key)
            .field("attempt", &self.attempt)
            .field("idempotency_key", &self.idempotency_key)
            .field("credentials", &self.credentials)
            .field("extensions", &self.extensions)
            .finish_non_exhaustive()
    }
}

/// A typed action. See the module docs.
pub trait Action: Send + Sync + 'static {
    type Input: DeserializeOwned + schemars::JsonSchema + Send;
    type Output: Serialize + schemars::JsonSchema + Send;

    /// The action id within its app (`request` in `http.request`).
    const ID: &'static str;
    const NAME: &'static str;
    const DESCRIPTION: &'static str;
    const IDEMPOTENCY: Idempotency;
    /// All IO goes through `ctx.http` (see [`ActionSpec::http_only`]).
    const HTTP_ONLY: bool = true;
    /// What the action does to ad audiences (see [`crate::audience`]): an action that adds a
    /// person says which of its fields name the audience and the person, and which action
    /// removes them; the runner then records memberships and removes people on erasure.
    const AUDIENCE: Option<crate::audience::Audience> = None;

    /// A representative output, valid against the output schema.
    fn sample() -> Self::Output;

    /// For actions that send a message to a person: the channel and the input fields
    /// holding the recipients (see [`crate::policy::Reach`]). The send policy applies to them.
    fn reaches() -> Option<crate::policy::Reach> {
        None
    }

    /// For [`Idempotency::PerCall`] actions: whether this input is safe to repeat.
    fn idempotent_for(_input: &Self::Input) -> bool {
        matches!(Self::IDEMPOTENCY, Idempotency::Key | Idempotency::Natural)
    }

    fn call(&self, ctx: &ActionContext, input: Self::Input) -> impl Future<Output = Result<Self::Output, ConnectorError>> + Send;
}

/// An action over JSON values: what the runner calls.
pub trait DynAction: Send + Sync {
    fn spec(&self) -> &ActionSpec;
    /// Whether this input is safe to send again after an unknown outcome.
    fn idempotent_for(&self, input: &Value) -> bool;
    fn call<'a>(&'a self, ctx: &'a ActionContext, input: Value) -> BoxFuture<'a, Result<Value, ConnectorError>>;
}

/// The blanket adapter from [`Action`] to [`DynAction`].
pub struct Erased<A: Action> {
    action: A,
    spec: ActionSpec,
}

impl<A: Action> Erased<A> {
    pub fn new(action: A) -> Self {
        let sample = serde_json::to_value(A::sample()).unwrap_or(Value::Null);
        let spec = ActionSpec {
            id: A::ID.to_string(),
            name: A::NAME.to_string(),
            description: A::DESCRIPTION.to_string(),
            input_schema: schema_of::<A::Input>(),
            output_schema: schema_of::<A::Output>(),
            sample,
            idempotency: A::IDEMPOTENCY,
            http_only: A::HTTP_ONLY,
            audience: A::AUDIENCE.map(Into::into),
            reaches: A::reaches(),
        };
        Erased { action, spec }
    }
}

/// Decodes an action's input, naming the path of the first bad field.
pub fn decode_input<T: DeserializeOwned>(input: Value) -> Result<T, ConnectorError> {
    serde_path_to_error::deserialize::<_, T>(input).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        ConnectorError::bad_input(path, e.inner().to_string())
    })
}

impl<A: Action> DynAction for Erased<A> {
    fn spec(&self) -> &ActionSpec {
        &self.spec
    }

    fn idempotent_for(&self, input: &Value) -> bool {
        match self.spec.idempotency {
            Idempotency::Key | Idempotency::Natural => true,
            Idempotency::None => false,
            Idempotency::PerCall => match serde_json::from_value::<A::Input>(input.clone()) {
                Ok(typed) => A::idempotent_for(&typed),
                Err(_) => false,
            },
        }
    }

    fn call<'a>(&'a self, ctx: &'a ActionContext, input: Value) -> BoxFuture<'a, Result<Value, ConnectorError>> {
        Box::pin(async move {
            let typed: A::Input = decode_input(input)?;
            let out = self.action.call(ctx, typed).await?;
            serde_json::to_value(out).map_err(|e| ConnectorError::permanent(format!("the action's output could not be encoded: {e}")))
        })
    }
}
