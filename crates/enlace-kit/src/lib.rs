//! The connector kit: what a connector author needs besides `enlace-core`'s vocabulary.
//!
//! - [`ReqwestTransport`]: the real [`enlace_core::http::HttpTransport`], one pooled client
//!   behind the SSRF guard ([`ssrf`]), a response size cap and timeouts, configured by
//!   [`TransportConfig`].
//! - [`RecordingTransport`]: what a dry run plugs in; it records requests and sends nothing.
//! - [`classify()`] and friends ([`classify`](mod@classify) module): vendors' answers and transport
//!   failures turned into `ConnectorError` classes, 200 bodies that are really errors
//!   caught.
//! - [`apply_credentials`]: a connection's credentials put on a request.
//! - [`Pager`] ([`paginate`] module): a listing read page after page (a cursor in the body,
//!   `Link` headers, offsets, page tokens), each page classified.
//! - [`rate_info`] ([`ratelimit`] module): `Retry-After`, `X-RateLimit-*`, the IETF
//!   `RateLimit` headers, HubSpot's `X-HubSpot-RateLimit-*` and Facebook's usage headers read into one [`RateInfo`].
//!
//! - [`schema`]: a JSON Schema checker for the subset connectors declare (samples and
//!   recorded fixtures against output schemas; schemas themselves).
//! - `testing` (feature `testing`, dev-dependencies only): the connector test kit, a fake
//!   vendor server, a canned transport, contexts, recorded fixtures.
//! - [`oauth`]: OAuth2 token requests (authorization URL with PKCE, code exchange,
//!   refresh, client credentials) through the same transport, failures classified.
//!
//! Architecture invariant: the kit classifies, it never sleeps or retries; the runner owns
//! retries.

pub mod auth;
pub mod classify;
pub mod oauth;
pub mod paginate;
pub mod ratelimit;
pub mod schema;
pub mod ssrf;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod transport;

pub use auth::apply_credentials;
pub use classify::{check_ok_field, check_ok_response, classify, graph_error, json_body, retry_after, transport_error, vendor_message};
pub use paginate::{JsonPath, Paged, Pager, Resume, Strategy};
pub use ratelimit::{RateInfo, rate_info};
pub use transport::{BuildError, RecordingTransport, ReqwestTransport, TransportConfig};

/// The URL type the transport parses with (WHATWG URLs), for connectors that build URLs
/// with query strings.
pub use reqwest::Url;
