//! Enlace's vocabulary, free of IO.
//!
//! Everything the other crates agree on lives here: what a connector declares about itself
//! ([`manifest`]), the traits a connector implements ([`action`], [`trigger`]), the error
//! classes every connector returns ([`error`]), credentials checked against an app's auth
//! kind and the connection-test hook ([`connection`]), OAuth2 apps and grants ([`oauth`]), the shape of an outgoing HTTP exchange that
//! the connector kit carries out ([`http`]), credentials that never print themselves
//! ([`secret`]), durations as recipes write them ([`duration`]) and the registry of
//! connectors the runner looks names up in ([`registry`]), the inbound triggers vendors call
//! ([`inbound`]), and the embedded contact store's
//! vocabulary and the trait the runner implements for it ([`contacts`]), how actions declare
//! that they add people to or remove them from ad audiences ([`audience`]), and the send
//! policy: what reaches a person and the pure decision about each message ([`policy`]).
//!
//! Architecture invariant: this crate performs no IO and starts no task. It names the
//! [`http::HttpTransport`] trait but does not implement it; `enlace-kit` does.

pub mod action;
pub mod audience;
pub mod connection;
pub mod contacts;
pub mod duration;
pub mod error;
pub mod http;
pub mod inbound;
pub mod manifest;
pub mod oauth;
pub mod policy;
pub mod registry;
pub mod scoring;
pub mod secret;
pub mod social;
pub mod trigger;
pub mod web;

pub use action::{Action, ActionContext, DynAction};
pub use connection::Field as CredentialField;
pub use connection::{
    ConnectionContext, ConnectionTest, CredentialsError, TestOutcome, accepted_kinds, credential_fields, parse_credentials,
    parse_credentials_with,
};
pub use contacts::{ContactsBackend, Extensions, Links};
pub use error::{ConnectorError, ErrorClass};
pub use inbound::{InboundContext, InboundEvent, InboundReply, InboundRequest, InboundTrigger};
pub use manifest::{ActionSpec, AuthKind, ConnectorManifest, Idempotency, RateLimit, TriggerKind, TriggerSpec};
pub use oauth::{ClientAuth, GrantType, OAuth2App, OAuth2Grant, TokenSet};
pub use registry::{Connector, Registry};
pub use secret::{Credentials, ImapCredentials, ImapTls, Secret, SmtpCredentials, SmtpTls};
pub use trigger::{PolledItem, PollingTrigger, SubscribeTrigger, Subscription};

/// A boxed, sendable future: what erased traits return.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;
