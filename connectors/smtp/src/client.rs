//! The SMTP conversation: connect behind the SSRF guard, encrypt (implicit TLS or
//! STARTTLS), log in, send one message, and classify every failure by the phase it
//! happened in.
//!
//! The phase decides what a failure means. Until the end of the message has been sent, the
//! server has nothing it could deliver, so a broken connection or a timeout is transient.
//! Once the final `.` has left, a lost answer may hide a delivery: that is
//! [`ConnectorError::MaybeDelivered`]. Server replies are classified by their code: 535,
//! 534 and 538 (and 530 "authentication required") refuse the login, 4xx are transient,
//! 5xx are permanent and carry the server's own text.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use lettre::Address;
use lettre::transport::smtp::authentication::{Credentials as LoginCredentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, TlsParameters, TlsParametersBuilder};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use tokio::time::Instant;

use enlace_core::connection::{ConnectionContext, ConnectionTest};
use enlace_core::{ConnectorError, Credentials, SmtpCredentials, SmtpTls};
use enlace_kit::ssrf::{DnsFailure, Refused, resolve_checked};

/// The longest a conversation may take, whatever the step's own limit.
pub const MAX_CONVERSATION: Duration = Duration::from_secs(120);
/// The longest a TCP connection (and the TLS handshake of implicit TLS) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a conversation is; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Connect,
    Starttls,
    Login,
    /// MAIL FROM, RCPT TO and DATA: the server has no message yet.
    Envelope,
    /// The message and its final `.` are being sent, or its answer awaited.
    Content,
}

impl Phase {
    fn doing(self) -> &'static str {
        match self {
            Phase::Connect => "connecting",
            Phase::Starttls => "starting TLS (STARTTLS)",
            Phase::Login => "logging in",
            Phase::Envelope => "giving the sender and recipients",
            Phase::Content => "sending the message",
        }
    }
}

/// The SMTP credentials of a step or test, or a clear error when the connection is missing
/// or of another kind.
pub fn smtp_credentials(creds: &Credentials) -> Result<&SmtpCredentials, ConnectorError> {
    match creds {
        Credentials::Smtp(s) => Ok(s),
        Credentials::None => Err(ConnectorError::bad_input(
            "connection",
            "sending email needs an SMTP connection: create one with `enlace connections create ID --app smtp` and name it in the step's `connection:`",
        )),
        other => Err(ConnectorError::bad_input(
            "connection",
            format!(
                "the connection holds `{}` credentials; the smtp app needs an SMTP connection (host, port, username, password, tls)",
                other.kind()
            ),
        )),
    }
}

/// An open, encrypted (unless `tls: none`) and logged-in SMTP conversation.
pub struct Session {
    conn: AsyncSmtpConnection,
    /// `host:port`, for messages.
    pub server: String,
    deadline: Instant,
    pub encrypted: bool,
    pub logged_in_as: Option<String>,
}

/// The deadline for a conversation that may take `budget` (the step's or the test's limit),
/// a little earlier than the caller's own so that a timeout is reported with its phase.
pub fn deadline_for(budget: Duration) -> Instant {
    let budget = if budget.is_zero() { MAX_CONVERSATION } else { budget.min(MAX_CONVERSATION) };
    let margin = if budget > Duration::from_secs(2) { Duration::from_millis(500) } else { Duration::ZERO };
    Instant::now() + budget - margin
}

/// Runs one phase of the conversation before the deadline.
async fn within<T>(
    deadline: Instant,
    server: &str,
    phase: Phase,
    fut: impl Future<Output = Result<T, lettre::transport::smtp::Error>>,
) -> Result<T, ConnectorError> {
    match tokio::time::timeout_at(deadline, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(classify(&e, phase, server)),
        Err(_) => Err(timed_out(phase, server)),
    }
}

fn timed_out(phase: Phase, server: &str) -> ConnectorError {
    if phase == Phase::Content {
        ConnectorError::MaybeDelivered {
            message: format!("{server} did not answer in time after the message was sent; it may have been delivered"),
        }
    } else {
        ConnectorError::transient(format!("{server} did not answer in time while {}; nothing was delivered", phase.doing()))
    }
}

/// The reply code and text of an SMTP error, when it is a server reply.
fn reply(e: &lettre::transport::smtp::Error) -> Option<(u16, String)> {
    let code = e.status()?;
    let code: u16 = code.to_string().parse().ok()?;
    let text = std::error::Error::source(e).map(|s| s.to_string()).unwrap_or_default();
    Some((code, text.trim().to_string()))
}

/// Turns a failure of `phase` into an error class; see the module docs.
pub fn classify(e: &lettre::transport::smtp::Error, phase: Phase, server: &str) -> ConnectorError {
    if let Some((code, text)) = reply(e) {
        let answered = format!("{server} answered {code} {text}");
        let lower = text.to_ascii_lowercase();
        return match code {
            530 if lower.contains("starttls") || lower.contains("tls") => ConnectorError::permanent(format!(
                "{answered}: the server requires encryption; set the connection's tls to `starttls` (port 587) or `tls` (port 465)"
            )),
            530 | 534 | 535 | 538 => ConnectorError::auth(format!(
                "{answered}; check the connection's username and password (some providers want an app password)"
            )),
            400..=499 => ConnectorError::transient(format!("{answered} (a temporary refusal while {})", phase.doing())),
            _ => ConnectorError::Permanent { message: answered, status: None },
        };
    }
    let detail = error_text(e);
    match tls_failure(e) {
        Some(rustls::Error::InvalidCertificate(why)) => {
            return ConnectorError::permanent(format!(
                "the TLS certificate of {server} was refused ({why:?}); if it comes from a private authority or is self-signed, add that certificate to the connection as `ca_certificate`"
            ));
        }
        Some(other) => return ConnectorError::permanent(format!("the TLS handshake with {server} failed: {other}")),
        None if e.is_tls() => return ConnectorError::permanent(format!("the TLS handshake with {server} failed: {detail}")),
        None => {}
    }
    if e.is_client() {
        return ConnectorError::permanent(format!("{server}: {detail} (while {})", phase.doing()));
    }
    match phase {
        Phase::Connect => ConnectorError::transient(format!("could not connect to {server}: {detail}; nothing was sent")),
        Phase::Content => ConnectorError::MaybeDelivered {
            message: format!("the connection to {server} failed after the message was sent ({detail}); it may have been delivered"),
        },
        _ => ConnectorError::transient(format!(
            "the connection to {server} failed while {} ({detail}); nothing was delivered",
            phase.doing()
        )),
    }
}

/// The rustls error behind a failure, if the TLS handshake is what failed. tokio-rustls
/// reports it inside an `io::Error`, whose `source()` skips it, so each I/O error's inner
/// error is looked at too.
fn tls_failure(e: &lettre::transport::smtp::Error) -> Option<&rustls::Error> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(err) = current {
        if let Some(r) = err.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        if let Some(r) =
            err.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()).and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(r);
        }
        current = err.source();
    }
    None
}

/// The error and its causes in one line.
fn error_text(e: &lettre::transport::smtp::Error) -> String {
    let mut parts = vec![];
    let mut current: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(err) = current {
        let s = err.to_string();
        if !parts.iter().any(|p: &String| p.contains(&s)) {
            parts.push(s);
        }
        current = err.source();
    }
    if parts.is_empty() { e.to_string() } else { parts.join(": ") }
}

fn tls_parameters(creds: &SmtpCredentials) -> Result<TlsParameters, ConnectorError> {
    enlace_kit::transport::install_crypto_provider();
    let domain = creds.host.trim().trim_start_matches('[').trim_end_matches(']').to_string();
    let mut builder = TlsParametersBuilder::new(domain);
    if let Some(pem) = &creds.ca_certificate {
        let cert = Certificate::from_pem(pem.as_bytes()).map_err(|e| {
            ConnectorError::bad_input(
                "connection",
                format!("the connection's ca_certificate could not be read: {e}; give a PEM certificate"),
            )
        })?;
        builder = builder.add_root_certificate(cert);
    }
    builder.build().map_err(|e| ConnectorError::permanent(format!("the TLS settings could not be prepared: {}", error_text(&e))))
}

/// Resolves the host and refuses loopback, private and link-local addresses unless the
/// installation allows them.
async fn resolve(creds: &SmtpCredentials, allow_private: bool, server: &str) -> Result<Vec<SocketAddr>, ConnectorError> {
    let host = creds.host.trim().trim_start_matches('[').trim_end_matches(']');
    let port = creds.effective_port();
    let addrs = resolve_checked(host, allow_private).await.map_err(|e| {
        if let Some(r) = e.downcast_ref::<Refused>() {
            ConnectorError::permanent(format!("{r}; the SMTP host is the connection's `host`"))
        } else if let Some(d) = e.downcast_ref::<DnsFailure>() {
            ConnectorError::transient(format!("{d}; check the connection's host ({server})"))
        } else {
            ConnectorError::transient(format!("could not resolve {server}: {e}"))
        }
    })?;
    Ok(addrs.into_iter().map(|a| SocketAddr::new(a.ip(), port)).collect())
}

/// The name given in EHLO. Enlace has no public host name of its own to claim, so it says
/// `localhost`, as most mail libraries do; submission servers identify the client by its
/// login, not by this name.
fn hello_name() -> ClientId {
    ClientId::default()
}

impl Session {
    /// Connects, encrypts as the connection says, and logs in.
    pub async fn open(creds: &SmtpCredentials, allow_private: bool, deadline: Instant) -> Result<Session, ConnectorError> {
        let port = creds.effective_port();
        let host = creds.host.trim();
        let server =
            if host.parse::<IpAddr>().is_ok_and(|ip| ip.is_ipv6()) { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
        let addrs = resolve(creds, allow_private, &server).await?;
        let implicit = match creds.tls {
            SmtpTls::Tls => Some(tls_parameters(creds)?),
            _ => None,
        };
        let hello = hello_name();
        let connect_limit = (Instant::now() + CONNECT_TIMEOUT).min(deadline);
        let conn = within(
            connect_limit,
            &server,
            Phase::Connect,
            AsyncSmtpConnection::connect_tokio1(addrs.as_slice(), Some(CONNECT_TIMEOUT), &hello, implicit, None),
        )
        .await?;
        let mut session = Session { encrypted: conn.is_encrypted(), conn, server, deadline, logged_in_as: None };
        if creds.tls == SmtpTls::Starttls {
            if !session.conn.can_starttls() {
                session.quit().await;
                return Err(ConnectorError::permanent(format!(
                    "{} does not offer STARTTLS; set the connection's tls to `tls` if the port expects TLS from the start (465), or to `none` for a relay on a trusted network",
                    session.server
                )));
            }
            let params = tls_parameters(creds)?;
            within(deadline, &session.server.clone(), Phase::Starttls, session.conn.starttls(params, &hello)).await?;
            session.encrypted = session.conn.is_encrypted();
        }
        if let (Some(user), Some(password)) = (&creds.username, &creds.password) {
            let login = LoginCredentials::new(user.clone(), password.expose().to_string());
            let server = session.server.clone();
            let result = within(deadline, &server, Phase::Login, session.conn.auth(&[Mechanism::Plain, Mechanism::Login], &login)).await;
            if let Err(e) = result {
                session.quit().await;
                return Err(match e {
                    ConnectorError::Permanent { message, .. } if message.contains("No compatible authentication mechanism") => {
                        ConnectorError::permanent(format!(
                            "{server} offers no login method Enlace speaks (PLAIN or LOGIN){}",
                            if session.encrypted {
                                ""
                            } else {
                                "; many servers offer them only over an encrypted connection: set the connection's tls to `starttls` or `tls`"
                            }
                        ))
                    }
                    other => other,
                });
            }
            session.logged_in_as = Some(user.clone());
        }
        Ok(session)
    }

    /// Sends one message to `recipients`; the answer to its final `.` is returned.
    pub async fn send(&mut self, from: &Address, recipients: &[Address], message: &[u8]) -> Result<String, ConnectorError> {
        let server = self.server.clone();
        let mut params = vec![];
        let ascii = |a: &Address| AsRef::<str>::as_ref(a).is_ascii();
        let non_ascii = !ascii(from) || !recipients.iter().all(ascii);
        if non_ascii {
            if !self.conn.server_info().supports_feature(Extension::SmtpUtfEight) {
                return Err(ConnectorError::permanent(format!(
                    "{server} does not accept addresses with non-ASCII characters (no SMTPUTF8); write the addresses in ASCII (punycode for the domain)"
                )));
            }
            params.push(MailParameter::SmtpUtfEight);
        }
        if !message.is_ascii() && self.conn.server_info().supports_feature(Extension::EightBitMime) {
            params.push(MailParameter::Body(MailBodyParameter::EightBitMime));
        }
        let deadline = self.deadline;
        within(deadline, &server, Phase::Envelope, self.conn.command(Mail::new(Some(from.clone()), params))).await?;
        for to in recipients {
            within(deadline, &server, Phase::Envelope, self.conn.command(Rcpt::new(to.clone(), vec![]))).await.map_err(|e| match e {
                ConnectorError::Permanent { message, status } => {
                    ConnectorError::Permanent { message: format!("the recipient `{to}` was refused: {message}"), status }
                }
                ConnectorError::Transient { message, retry_after } => {
                    ConnectorError::Transient { message: format!("the recipient `{to}` was deferred: {message}"), retry_after }
                }
                other => other,
            })?;
        }
        within(deadline, &server, Phase::Envelope, self.conn.command(Data)).await?;
        let answer = within(deadline, &server, Phase::Content, self.conn.message(message)).await?;
        Ok(format!("{} {}", answer.code(), answer.message().collect::<Vec<_>>().join(" ")).trim().to_string())
    }

    /// Says goodbye; failures are ignored (the work is done, or already failed).
    pub async fn quit(&mut self) {
        let limit = (Instant::now() + Duration::from_secs(5)).min(self.deadline.max(Instant::now() + Duration::from_secs(1)));
        let _ = tokio::time::timeout_at(limit, self.conn.quit()).await;
    }

    /// Abandons the conversation after a failure.
    pub async fn abort(&mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.conn.abort()).await;
    }
}

/// The smtp app's connection test: connect, encrypt, log in, quit. Nothing is sent.
#[derive(Debug, Clone, Copy, Default)]
pub struct TestLogin;

impl ConnectionTest for TestLogin {
    async fn test(&self, ctx: &ConnectionContext) -> Result<String, ConnectorError> {
        let creds = smtp_credentials(&ctx.credentials)?;
        let mut session = Session::open(creds, ctx.http.allows_private_networks(), deadline_for(ctx.timeout)).await?;
        let how = match creds.tls {
            SmtpTls::Starttls => "over STARTTLS",
            SmtpTls::Tls => "over TLS",
            SmtpTls::None => "without encryption",
        };
        let login = match &session.logged_in_as {
            Some(user) => format!("logged in as {user}"),
            None => "no login configured".to_string(),
        };
        let message = format!("connected to {} {how}, {login}", session.server);
        session.quit().await;
        Ok(message)
    }
}
