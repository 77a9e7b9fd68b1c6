//! The shape of one outgoing HTTP exchange. Connectors build an [`HttpRequest`] and hand it
//! to an [`HttpTransport`]; the connector kit's transport carries it out behind the SSRF
//! guard, the response size cap and the timeout. A dry run plugs in a transport that records
//! the request and calls nothing.

use std::time::Duration;

use bytes::Bytes;

use crate::BoxFuture;

pub use ::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};

/// A request ready to send.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    pub method: Method,
    pub url: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Per-request timeout; the transport's default when `None`.
    pub timeout: Option<Duration>,
}

impl HttpRequest {
    pub fn new(method: Method, url: impl Into<String>) -> Self {
        HttpRequest { method, url: url.into(), headers: HeaderMap::new(), body: Bytes::new(), timeout: None }
    }
}

/// A response, body read in full (up to the transport's cap).
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Why a request got no response.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TransportError {
    /// The URL is not one we may call (bad scheme, unparsable).
    #[error("invalid url: {0}")]
    InvalidUrl(String),
    /// The SSRF guard refused the destination.
    #[error("{0}")]
    Forbidden(String),
    /// No connection could be made: nothing was sent, so a retry is safe.
    #[error("could not connect: {0}")]
    Connect(String),
    /// The timeout struck. `sent` says whether the request may have left.
    #[error("timed out after {after:?}")]
    Timeout { after: Duration, sent: bool },
    /// The response was larger than the cap.
    #[error("response larger than {limit} bytes")]
    TooLarge { limit: usize },
    /// The transport is a dry run's recorder: it calls nothing.
    #[error("dry run: nothing was sent")]
    DryRun,
    /// Any other failure after the request may have left.
    #[error("{0}")]
    Other(String),
}

/// Carries out HTTP requests. Implemented by `enlace-kit`; swapped in tests and dry runs.
pub trait HttpTransport: Send + Sync {
    fn send(&self, request: HttpRequest) -> BoxFuture<'_, Result<HttpResponse, TransportError>>;

    /// Whether this installation lets connectors reach loopback, private and link-local
    /// addresses (`ENLACE_ALLOW_PRIVATE_NETWORKS=true`). Connectors that speak another
    /// protocol than HTTP (SMTP) apply the same SSRF guard and ask the transport for its
    /// policy, so that one setting governs every outgoing connection. Refused by default.
    fn allows_private_networks(&self) -> bool {
        false
    }
}
