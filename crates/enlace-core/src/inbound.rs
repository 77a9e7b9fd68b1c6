//! Inbound triggers: a vendor calls Enlace (Twilio's inbound SMS and status callbacks) on
//! the same `/hooks/{path}` ingress as `webhook.catch`, but signs, shapes and expects its
//! answer its own way. The connector owns those rules: it checks the vendor's signature with
//! the trigger's connection, turns the request into the event the recipe sees, names the
//! event's dedupe key, and says how to answer. The web server does the rest as for any hook
//! (size cap, durable store before the answer, dedupe, the run).
//!
//! The recipe names the path (`with: {path}`) and the connection (`connection:`) of the
//! trigger; the manifest declares it as a [`TriggerKind::Webhook`](crate::TriggerKind).

use bytes::Bytes;
use http::HeaderMap;
use serde_json::Value;

use crate::BoxFuture;
use crate::contacts::Extensions;
use crate::error::ConnectorError;
use crate::manifest::TriggerSpec;
use crate::secret::Credentials;

/// The request as the vendor sent it.
#[derive(Debug, Clone)]
pub struct InboundRequest {
    /// The address the vendor called, as it called it: Enlace's public URL (or, when none is
    /// configured, `http://` and the request's `Host`) with the path and the raw query.
    pub url: String,
    pub headers: HeaderMap,
    /// The raw body (already capped in size).
    pub body: Bytes,
    /// When Enlace received it (Unix milliseconds).
    pub received_at: i64,
}

/// What a connector gets to handle one request.
#[derive(Debug, Clone)]
pub struct InboundContext {
    /// The credentials of the trigger's connection (the key the vendor signs with).
    pub credentials: Credentials,
    /// The installation's built-in services (the contact store), as actions get them.
    pub extensions: Extensions,
}

/// How to answer the vendor once the event is stored.
#[derive(Debug, Clone, PartialEq)]
pub struct InboundReply {
    pub status: u16,
    pub content_type: Option<&'static str>,
    pub body: Bytes,
}

/// A request the connector accepted.
#[derive(Debug, Clone)]
pub struct InboundEvent {
    /// What the recipe reads as `trigger`.
    pub event: Value,
    /// The same for every delivery of one vendor event (the vendor's retries): a key seen
    /// before starts no second run.
    pub dedupe_key: Option<String>,
    /// The answer, sent after the event is stored (also for a duplicate).
    pub reply: InboundReply,
}

/// An inbound trigger of a connector. `receive` classifies what it refuses: [`ConnectorError::Auth`]
/// for a missing or wrong signature (the server answers 401 and stores nothing),
/// [`ConnectorError::BadInput`] for a request it cannot read (400), `Transient` when a
/// service it needs failed (503: the vendor retries).
pub trait InboundTrigger: Send + Sync {
    fn spec(&self) -> &TriggerSpec;
    fn receive<'a>(&'a self, ctx: &'a InboundContext, req: &'a InboundRequest) -> BoxFuture<'a, Result<InboundEvent, ConnectorError>>;
}
