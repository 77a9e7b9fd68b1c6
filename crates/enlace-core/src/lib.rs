//! Enlace's vocabulary, free of IO.
//!
//! Everything the other crates agree on lives here: what a connector declares about itself
//! ([`manifest`]), the traits a connector implements ([`action`], [`trigger`]), the error
//! classes every connector returns ([`error`]), credentials checked against an app's auth
//! kind and the connection-test hook ([`connection`]), the shape of an outgoing HTTP exchange that
//! the connector kit carries out ([`http`]), credentials that never print themselves
//! ([`secret`]), durations as recipes write them ([`duration`]) and the registry of
//! connectors the runner looks names up in ([`registry`]).
//!
//! Architecture invariant: this crate performs no IO and starts no task. It names the
//! [`http::HttpTransport`] trait but does not implement it; `enlace-kit` does.

pub mod action;
pub mod connection;
pub mod duration;
pub mod error;
pub mod http;
pub mod manifest;
pub mod registry;
pub mod secret;
pub mod trigger;

pub use action::{Action, ActionContext, DynAction};
pub use connection::{ConnectionContext, ConnectionTest, CredentialsError, TestOutcome, accepted_kinds, parse_credentials};
pub use error::{ConnectorError, ErrorClass};
pub use manifest::{ActionSpec, AuthKind, ConnectorManifest, Idempotency, RateLimit, TriggerKind, TriggerSpec};
pub use registry::{Connector, Registry};
pub use secret::{Credentials, Secret, SmtpCredentials, SmtpTls};
pub use trigger::{PolledItem, PollingTrigger, SubscribeTrigger, Subscription};

/// A boxed, sendable future: what erased traits return.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;
