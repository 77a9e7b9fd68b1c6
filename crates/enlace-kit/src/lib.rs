//! The connector kit: what a connector author needs besides `enlace-core`'s vocabulary.
//!
//! - [`ReqwestTransport`]: the real [`enlace_core::http::HttpTransport`], one pooled client
//!   behind the SSRF guard ([`ssrf`]), a response size cap and timeouts, configured by
//!   [`TransportConfig`].
//! - [`RecordingTransport`]: what a dry run plugs in; it records requests and sends nothing.
//! - [`classify()`] and friends ([`classify`] module): vendors' answers and transport
//!   failures turned into `ConnectorError` classes, rate limit headers read, 200 bodies
//!   that are really errors caught.
//! - [`apply_credentials`]: a connection's credentials put on a request.
//!
//! Architecture invariant: the kit classifies, it never sleeps or retries; the runner owns
//! retries.

pub mod auth;
pub mod classify;
pub mod ssrf;
pub mod transport;

pub use auth::apply_credentials;
pub use classify::{
    RateInfo, check_ok_field, check_ok_response, classify, json_body, rate_info, retry_after, transport_error, vendor_message,
};
pub use transport::{BuildError, RecordingTransport, ReqwestTransport, TransportConfig};

/// The URL type the transport parses with (WHATWG URLs), for connectors that build URLs
/// with query strings.
pub use reqwest::Url;
