//! The IMAP conversation: connect behind the SSRF guard, encrypt (implicit TLS or STARTTLS),
//! log in, open a folder read-only (EXAMINE), and classify every failure.
//!
//! Reading mail changes nothing at the server (EXAMINE, `BODY.PEEK`), so any failure can be
//! retried: a refused connection, a timeout or a lost connection is
//! [`ConnectorError::Transient`]. A login the server refuses is [`ConnectorError::Auth`]
//! with the server's own text; a certificate that cannot be trusted, or a server that wants
//! encryption the connection does not use, is [`ConnectorError::Permanent`] and says which
//! setting to change.

use std::fmt::Debug;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use async_imap::error::Error as ImapError;
use async_imap::imap_proto::{Response, Status};
use async_imap::types::{Mailbox, NameAttribute};
use futures::TryStreamExt;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;

use enlace_core::connection::{ConnectionContext, ConnectionTest};
use enlace_core::{ConnectorError, Credentials, ImapCredentials, ImapTls};
use enlace_kit::ssrf::{DnsFailure, Refused, resolve_checked};

use crate::utf7;

/// The longest a conversation may take, whatever the step's own limit.
pub const MAX_CONVERSATION: Duration = Duration::from_secs(120);
/// The longest a TCP connection (and the TLS handshake) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// A byte stream IMAP runs over: TCP, or TLS over TCP.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + Debug {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Debug> Io for T {}

type Stream = Box<dyn Io>;

/// The IMAP credentials of a poll or test, or a clear error when the connection is missing
/// or of another kind.
pub fn imap_credentials(creds: &Credentials) -> Result<&ImapCredentials, ConnectorError> {
    match creds {
        Credentials::Imap(c) => Ok(c),
        Credentials::None => Err(ConnectorError::bad_input(
            "connection",
            "reading email needs an IMAP connection: create one with `enlace connections create ID --app imap` and name it in the trigger's `connection:`",
        )),
        other => Err(ConnectorError::bad_input(
            "connection",
            format!(
                "the connection holds `{}` credentials; the imap app needs an IMAP connection (host, port, username, password, tls)",
                other.kind()
            ),
        )),
    }
}

/// The deadline for a conversation that may take `budget` (the caller's limit), a little
/// earlier than the caller's own so that a timeout is reported with what was being done.
pub fn deadline_for(budget: Duration) -> Instant {
    let budget = if budget.is_zero() { MAX_CONVERSATION } else { budget.min(MAX_CONVERSATION) };
    let margin = if budget > Duration::from_secs(2) { Duration::from_millis(500) } else { Duration::ZERO };
    Instant::now() + budget - margin
}

/// The text a server gave with a NO or BAD answer. async-imap formats them as
/// `code: Some(..), info: Some("text")`; the text is what users should read.
pub fn server_text(raw: &str) -> String {
    if let Some(start) = raw.find("info: Some(\"") {
        let rest = &raw[start + "info: Some(\"".len()..];
        let end = rest.rfind("\")").unwrap_or(rest.len());
        return rest[..end].replace("\\\"", "\"").replace("\\\\", "\\");
    }
    raw.to_string()
}

/// The response code of a NO or BAD answer (`AuthenticationFailed`, `PrivacyRequired`), as
/// async-imap names it, when there is one.
fn response_code(raw: &str) -> Option<&str> {
    let start = raw.find("code: Some(")? + "code: Some(".len();
    let rest = &raw[start..];
    let end = rest.find([')', '(', ','])?;
    Some(&rest[..end])
}

/// The rustls error behind an I/O error, if the TLS handshake is what failed.
fn tls_failure(e: &std::io::Error) -> Option<&rustls::Error> {
    e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>())
}

/// Turns a failure while `doing` something into an error class; see the module docs.
pub fn classify(e: ImapError, doing: &str, server: &str) -> ConnectorError {
    match e {
        ImapError::Io(io) => match tls_failure(&io) {
            Some(rustls::Error::InvalidCertificate(why)) => ConnectorError::permanent(format!(
                "the TLS certificate of {server} was refused ({why:?}); if it comes from a private authority or is self-signed, add that certificate to the connection as `ca_certificate`"
            )),
            Some(other) => ConnectorError::permanent(format!("the TLS handshake with {server} failed: {other}")),
            None => ConnectorError::transient(format!("the connection to {server} failed while {doing}: {io}")),
        },
        ImapError::ConnectionLost => ConnectorError::transient(format!("{server} closed the connection while {doing}")),
        ImapError::No(raw) | ImapError::Bad(raw) => ConnectorError::permanent(format!("{server} refused {doing}: {}", server_text(&raw))),
        ImapError::Parse(p) => ConnectorError::permanent(format!("the answer of {server} could not be read while {doing}: {p}")),
        ImapError::Validate(v) => ConnectorError::permanent(format!("{doing}: {v}")),
        other => ConnectorError::permanent(format!("{server}: {other} (while {doing})")),
    }
}

/// Runs one step of the conversation before the deadline.
async fn within<T>(
    deadline: Instant,
    server: &str,
    doing: &str,
    fut: impl Future<Output = Result<T, ImapError>>,
) -> Result<T, ConnectorError> {
    match tokio::time::timeout_at(deadline, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(classify(e, doing, server)),
        Err(_) => Err(ConnectorError::transient(format!("{server} did not answer in time while {doing}"))),
    }
}

fn bare_host(creds: &ImapCredentials) -> &str {
    creds.host.trim().trim_start_matches('[').trim_end_matches(']')
}

/// The TLS client settings: the system's roots, plus the connection's `ca_certificate`.
fn tls_connector(creds: &ImapCredentials) -> Result<tokio_rustls::TlsConnector, ConnectorError> {
    enlace_kit::transport::install_crypto_provider();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let extra: Vec<CertificateDer<'static>> = match &creds.ca_certificate {
        None => vec![],
        Some(pem) => CertificateDer::pem_slice_iter(pem.as_bytes()).collect::<Result<_, _>>().map_err(|e| {
            ConnectorError::bad_input(
                "connection",
                format!("the connection's ca_certificate could not be read: {e}; give a PEM certificate"),
            )
        })?,
    };
    if creds.ca_certificate.is_some() && extra.is_empty() {
        return Err(ConnectorError::bad_input("connection", "the connection's ca_certificate holds no PEM certificate"));
    }
    let verifier = rustls_platform_verifier::Verifier::new_with_extra_roots(extra, provider.clone())
        .map_err(|e| ConnectorError::permanent(format!("the TLS settings could not be prepared: {e}")))?;
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConnectorError::permanent(format!("the TLS settings could not be prepared: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

fn server_name(creds: &ImapCredentials) -> Result<ServerName<'static>, ConnectorError> {
    ServerName::try_from(bare_host(creds).to_string())
        .map_err(|_| ConnectorError::bad_input("connection", format!("`{}` is not a host name TLS can check", creds.host)))
}

/// Resolves the host and refuses loopback, private and link-local addresses unless the
/// installation allows them.
async fn resolve(creds: &ImapCredentials, allow_private: bool, server: &str) -> Result<Vec<SocketAddr>, ConnectorError> {
    let port = creds.effective_port();
    let addrs = resolve_checked(bare_host(creds), allow_private).await.map_err(|e| {
        if let Some(r) = e.downcast_ref::<Refused>() {
            ConnectorError::permanent(format!("{r}; the IMAP host is the connection's `host`"))
        } else if let Some(d) = e.downcast_ref::<DnsFailure>() {
            ConnectorError::transient(format!("{d}; check the connection's host ({server})"))
        } else {
            ConnectorError::transient(format!("could not resolve {server}: {e}"))
        }
    })?;
    Ok(addrs.into_iter().map(|a| SocketAddr::new(a.ip(), port)).collect())
}

/// Connects to the first address that answers.
async fn connect_tcp(addrs: &[SocketAddr], server: &str) -> Result<TcpStream, ConnectorError> {
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(ConnectorError::transient(format!(
        "could not connect to {server}: {}",
        last.map(|e| e.to_string()).unwrap_or_else(|| "no address".into())
    )))
}

/// An open, encrypted (unless `tls: none`) and logged-in IMAP conversation.
pub struct Session {
    session: async_imap::Session<Stream>,
    /// `host:port`, for messages.
    pub server: String,
    pub deadline: Instant,
    pub username: String,
}

/// What EXAMINE told about a folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Folder {
    pub uid_validity: u32,
    /// The UID the next message will get; every message in the folder has a lower one.
    pub uid_next: Option<u32>,
    pub exists: u32,
}

impl Session {
    /// Connects, encrypts as the connection says, and logs in.
    pub async fn open(creds: &ImapCredentials, allow_private: bool, deadline: Instant) -> Result<Session, ConnectorError> {
        let port = creds.effective_port();
        let host = bare_host(creds);
        let server =
            if host.parse::<IpAddr>().is_ok_and(|ip| ip.is_ipv6()) { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
        let addrs = resolve(creds, allow_private, &server).await?;
        let connect_limit = (Instant::now() + CONNECT_TIMEOUT).min(deadline);
        let timed_out = || ConnectorError::transient(format!("{server} did not answer in time while connecting"));
        let tcp = tokio::time::timeout_at(connect_limit, connect_tcp(&addrs, &server)).await.map_err(|_| timed_out())??;
        let stream: Stream = match creds.tls {
            ImapTls::Tls => {
                let tls = tls_connector(creds)?;
                let name = server_name(creds)?;
                let s = tokio::time::timeout_at(connect_limit, tls.connect(name, tcp))
                    .await
                    .map_err(|_| timed_out())?
                    .map_err(|e| classify(ImapError::Io(e), "starting TLS", &server))?;
                Box::new(s)
            }
            ImapTls::Starttls | ImapTls::None => Box::new(tcp),
        };
        let mut client = async_imap::Client::new(stream);
        greeting(&mut client, deadline, &server).await?;
        if creds.tls == ImapTls::Starttls {
            let started = tokio::time::timeout_at(deadline, client.run_command_and_check_ok("STARTTLS", None)).await;
            match started {
                Err(_) => return Err(ConnectorError::transient(format!("{server} did not answer in time while starting TLS"))),
                Ok(Err(ImapError::No(_) | ImapError::Bad(_))) => {
                    return Err(ConnectorError::permanent(format!(
                        "{server} does not offer STARTTLS; set the connection's tls to `tls` if the port expects TLS from the start (993), or to `none` for a server on a trusted network"
                    )));
                }
                Ok(Err(e)) => return Err(classify(e, "starting TLS (STARTTLS)", &server)),
                Ok(Ok(())) => {}
            }
            let tls = tls_connector(creds)?;
            let name = server_name(creds)?;
            let inner = client.into_inner();
            let s = tokio::time::timeout_at(deadline, tls.connect(name, inner))
                .await
                .map_err(|_| ConnectorError::transient(format!("{server} did not answer in time while starting TLS")))?
                .map_err(|e| classify(ImapError::Io(e), "starting TLS (STARTTLS)", &server))?;
            client = async_imap::Client::new(Box::new(s) as Stream);
        }
        let login = tokio::time::timeout_at(deadline, client.login(&creds.username, creds.password.expose())).await;
        let session = match login {
            Err(_) => return Err(ConnectorError::transient(format!("{server} did not answer in time while logging in"))),
            Ok(Ok(s)) => s,
            Ok(Err((e, _client))) => return Err(login_error(e, &server, creds)),
        };
        Ok(Session { session, server, deadline, username: creds.username.clone() })
    }

    /// Opens `folder` read-only. A folder the server does not have is a
    /// [`ConnectorError::BadInput`] on `field`, listing the folders it has.
    pub async fn examine(&mut self, folder: &str, field: &str) -> Result<Folder, ConnectorError> {
        let encoded = utf7::encode(folder);
        let doing = format!("opening the folder `{folder}`");
        let result = tokio::time::timeout_at(self.deadline, self.session.examine(&encoded)).await;
        let mailbox: Mailbox = match result {
            Err(_) => return Err(ConnectorError::transient(format!("{} did not answer in time while {doing}", self.server))),
            Ok(Ok(m)) => m,
            Ok(Err(ImapError::No(raw))) => {
                let names = self.folders().await.unwrap_or_default();
                let listed = if names.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; the folders of {} are {}",
                        self.username,
                        names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
                    )
                };
                return Err(ConnectorError::bad_input(
                    field,
                    format!("{} has no folder `{folder}` ({}){listed}", self.server, server_text(&raw)),
                ));
            }
            Ok(Err(e)) => return Err(classify(e, &doing, &self.server)),
        };
        let uid_validity = mailbox.uid_validity.ok_or_else(|| {
            ConnectorError::permanent(format!("{} gave no UIDVALIDITY for `{folder}`: it cannot be polled reliably", self.server))
        })?;
        Ok(Folder { uid_validity, uid_next: mailbox.uid_next, exists: mailbox.exists })
    }

    /// The names of the folders that can be opened, decoded, sorted.
    pub async fn folders(&mut self) -> Result<Vec<String>, ConnectorError> {
        let server = self.server.clone();
        let doing = "listing the folders";
        let fut = async {
            let stream = self.session.list(Some(""), Some("*")).await?;
            let names: Vec<_> = stream.try_collect().await?;
            Ok(names)
        };
        let names = within(self.deadline, &server, doing, fut).await?;
        let mut out: Vec<String> = names
            .iter()
            .filter(|n| !n.attributes().iter().any(|a| matches!(a, NameAttribute::NoSelect)))
            .map(|n| utf7::decode(n.name()))
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// `UID SEARCH query`: the UIDs found, ascending.
    pub async fn uid_search(&mut self, query: &str) -> Result<Vec<u32>, ConnectorError> {
        let server = self.server.clone();
        let found = within(self.deadline, &server, "searching the folder", self.session.uid_search(query)).await?;
        let mut uids: Vec<u32> = found.into_iter().collect();
        uids.sort_unstable();
        Ok(uids)
    }

    /// `UID FETCH uids query`, with what each message gave.
    pub async fn uid_fetch(&mut self, uids: &[u32], query: &str) -> Result<Vec<async_imap::types::Fetch>, ConnectorError> {
        if uids.is_empty() {
            return Ok(vec![]);
        }
        let set = uids.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
        let server = self.server.clone();
        let fut = async {
            let stream = self.session.uid_fetch(&set, query).await?;
            let fetched: Vec<_> = stream.try_collect().await?;
            Ok(fetched)
        };
        within(self.deadline, &server, "reading messages", fut).await
    }

    /// Says goodbye; failures are ignored (the work is done, or already failed).
    pub async fn logout(mut self) {
        let limit = (Instant::now() + Duration::from_secs(5)).min(self.deadline.max(Instant::now() + Duration::from_secs(1)));
        let _ = tokio::time::timeout_at(limit, self.session.logout()).await;
    }
}

/// Reads the server's greeting: `* OK` (or `* PREAUTH`) goes on, `* BYE` is a refusal.
async fn greeting(client: &mut async_imap::Client<Stream>, deadline: Instant, server: &str) -> Result<(), ConnectorError> {
    let read = tokio::time::timeout_at(deadline, client.read_response())
        .await
        .map_err(|_| ConnectorError::transient(format!("{server} sent no greeting in time")))?;
    let response = match read {
        Ok(Some(r)) => r,
        Ok(None) => return Err(ConnectorError::transient(format!("{server} closed the connection before greeting"))),
        Err(e) => return Err(classify(ImapError::Io(e), "waiting for the greeting", server)),
    };
    if let Response::Data { status: Status::Bye, outcome, .. } = response.parsed() {
        return Err(ConnectorError::transient(format!(
            "{server} refused the connection: {}",
            outcome.information.as_deref().unwrap_or("BYE")
        )));
    }
    Ok(())
}

fn login_error(e: ImapError, server: &str, creds: &ImapCredentials) -> ConnectorError {
    let user = &creds.username;
    match e {
        ImapError::No(raw) | ImapError::Bad(raw) => {
            let text = server_text(&raw);
            let code = response_code(&raw).unwrap_or_default();
            if code == "PrivacyRequired" || (creds.tls == ImapTls::None && text.to_ascii_lowercase().contains("plaintext")) {
                ConnectorError::permanent(format!(
                    "{server} refused to log in without encryption: {text}; set the connection's tls to `tls` (port 993) or `starttls` (port 143)"
                ))
            } else if code == "Unavailable" {
                ConnectorError::transient(format!("{server} could not log in {user} just now: {text}"))
            } else {
                ConnectorError::auth(format!(
                    "{server} refused the login of {user}: {text}; check the connection's username and password (some providers want an app password)"
                ))
            }
        }
        ImapError::Validate(_) => ConnectorError::auth(
            "the username or password of the connection holds a line break, which IMAP cannot send; repair the connection",
        ),
        other => classify(other, "logging in", server),
    }
}

/// The imap app's connection test: connect, encrypt, log in, EXAMINE INBOX, log out.
/// Nothing is changed at the server.
#[derive(Debug, Clone, Copy, Default)]
pub struct TestLogin;

impl ConnectionTest for TestLogin {
    async fn test(&self, ctx: &ConnectionContext) -> Result<String, ConnectorError> {
        let creds = imap_credentials(&ctx.credentials)?;
        let mut session = Session::open(creds, ctx.http.allows_private_networks(), deadline_for(ctx.timeout)).await?;
        let inbox = match session.examine("INBOX", "connection").await {
            Ok(f) => f,
            Err(e) => {
                session.logout().await;
                return Err(e);
            }
        };
        let how = match creds.tls {
            ImapTls::Starttls => "over STARTTLS",
            ImapTls::Tls => "over TLS",
            ImapTls::None => "without encryption",
        };
        let message = format!(
            "connected to {} {how}, logged in as {}; INBOX holds {} message{}",
            session.server,
            session.username,
            inbox.exists,
            if inbox.exists == 1 { "" } else { "s" }
        );
        session.logout().await;
        Ok(message)
    }
}
