//! The message builder, and the classification of every phase of the conversation against
//! a scripted SMTP server on 127.0.0.1:0 (plain text, so that each reply can be chosen).
//! The real server with STARTTLS and AUTH is in the end-to-end tests (tests/e2e/smtp.rs).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use enlace_core::http::{HttpRequest, HttpResponse, HttpTransport, TransportError};
use enlace_core::{ActionContext, BoxFuture, ConnectorError, Credentials, ErrorClass, Secret, SmtpCredentials, SmtpTls};

use crate::connector;
use crate::message::{build, message_id_for};
use crate::send::Input;

/// A transport that sends nothing and reports the installation's network policy.
struct Policy(bool);

impl HttpTransport for Policy {
    fn send(&self, _: HttpRequest) -> BoxFuture<'_, Result<HttpResponse, TransportError>> {
        Box::pin(async { Err(TransportError::DryRun) })
    }
    fn allows_private_networks(&self) -> bool {
        self.0
    }
}

fn smtp(port: u16) -> Credentials {
    Credentials::Smtp(SmtpCredentials {
        host: "127.0.0.1".into(),
        port: Some(port),
        username: Some("ana".into()),
        password: Some(Secret::new("pw-123")),
        tls: SmtpTls::None,
        ca_certificate: None,
    })
}

fn ctx(credentials: Credentials, allow_private: bool, timeout: Duration) -> ActionContext {
    ActionContext {
        run_id: "run1".into(),
        step_key: "mail".into(),
        attempt: 1,
        idempotency_key: "run1:mail".into(),
        credentials,
        http: Arc::new(Policy(allow_private)),
        timeout,
        extensions: Default::default(),
    }
}

fn input(v: Value) -> Input {
    serde_json::from_value(v).unwrap()
}

fn basic() -> Value {
    json!({"from": "Ana <ana@example.com>", "to": "bo@example.org", "subject": "Hi", "text": "Hello"})
}

async fn send(c: &ActionContext, with: Value) -> Result<Value, ConnectorError> {
    let conn = connector();
    conn.action("send_email").unwrap().call(c, with).await
}

fn bad_input_path(r: Result<crate::message::Built, ConnectorError>) -> (String, String) {
    match r {
        Err(ConnectorError::BadInput { path, message }) => (path, message),
        other => panic!("expected bad input, got {other:?}"),
    }
}

#[test]
fn the_message_carries_every_field() {
    let with = input(json!({
        "from": "Ana Lima <ana@example.com>",
        "to": ["bo@example.org", "Cy <cy@example.org>"],
        "cc": "dee@example.org, bo@example.org",
        "bcc": ["hidden@example.net"],
        "reply_to": "Support <support@example.com>",
        "subject": "Olá, mundo",
        "text": "plain words",
        "html": "<p>html words</p>",
        "headers": {"X-Campaign": "spring", "List-Unsubscribe": "<https://example.com/u/42>"},
        "attachments": [
            {"name": "notes.txt", "content_text": "line one"},
            {"name": "logo.bin", "content_type": "image/png", "content_base64": "iVBO\nRw0K"}
        ]
    }));
    let built = build(&with, "run1:mail").unwrap();
    let text = String::from_utf8(built.bytes.clone()).unwrap();
    assert!(text.contains("From: \"Ana Lima\" <ana@example.com>"), "{text}");
    assert!(
        text.contains("To: bo@example.org, \"Cy\" <cy@example.org>") || text.contains("To: bo@example.org, Cy <cy@example.org>"),
        "{text}"
    );
    assert!(
        text.contains("Reply-To: \"Support\" <support@example.com>") || text.contains("Reply-To: Support <support@example.com>"),
        "{text}"
    );
    assert!(text.contains("Subject: =?utf-8?"), "non-ASCII subjects are encoded: {text}");
    assert!(text.contains("X-Campaign: spring"), "{text}");
    assert!(text.contains("List-Unsubscribe: <https://example.com/u/42>"), "{text}");
    assert!(!text.to_ascii_lowercase().contains("bcc:"), "no Bcc header: {text}");
    assert!(!text.contains("hidden@example.net"), "{text}");
    assert!(text.contains("multipart/mixed"), "{text}");
    assert!(text.contains("multipart/alternative"), "{text}");
    assert!(text.contains("Content-Disposition: attachment; filename=\"notes.txt\""), "{text}");
    assert!(text.contains("Content-Type: image/png"), "{text}");
    assert!(text.contains(&format!("Message-ID: {}", built.message_id)), "{text}");
    let addrs: Vec<String> = built.recipients.iter().map(ToString::to_string).collect();
    assert_eq!(addrs, ["bo@example.org", "cy@example.org", "dee@example.org", "hidden@example.net"], "every recipient once, bcc included");
    assert_eq!(built.envelope_from.to_string(), "ana@example.com");
}

#[test]
fn the_message_id_follows_the_idempotency_key() {
    let a = build(&input(basic()), "run1:mail").unwrap();
    let again = build(&input(basic()), "run1:mail").unwrap();
    let other = build(&input(basic()), "run2:mail").unwrap();
    assert_eq!(a.message_id, again.message_id, "a retry sends the same Message-ID");
    assert_ne!(a.message_id, other.message_id);
    assert_eq!(a.message_id, message_id_for("run1:mail", &"ana@example.com".parse().unwrap()));
    assert!(a.message_id.starts_with("<enlace.") && a.message_id.ends_with("@example.com>"), "{}", a.message_id);
}

#[test]
fn one_body_is_not_multipart() {
    let built = build(&input(basic()), "k").unwrap();
    let text = String::from_utf8(built.bytes).unwrap();
    assert!(text.contains("Content-Type: text/plain; charset=utf-8"), "{text}");
    assert!(!text.contains("multipart"), "{text}");
}

#[test]
fn bad_input_names_the_field() {
    let cases = [
        (json!({"from": "ana", "to": "bo@example.org", "subject": "s", "text": "t"}), "from"),
        (json!({"from": "ana@example.com", "to": ["bo@example.org", "not an address"], "subject": "s", "text": "t"}), "to[1]"),
        (json!({"from": "ana@example.com", "to": "", "subject": "s", "text": "t"}), "to"),
        (json!({"from": "ana@example.com", "to": "bo@example.org", "subject": "", "text": "t"}), "subject"),
        (json!({"from": "ana@example.com", "to": "bo@example.org", "subject": "a\r\nBcc: x@example.net", "text": "t"}), "subject"),
        (json!({"from": "ana@example.com", "to": "bo@example.org", "subject": "s"}), "text"),
        (
            json!({"from": "ana@example.com", "to": "bo@example.org", "subject": "s", "text": "t", "headers": {"Subject": "x"}}),
            "headers.Subject",
        ),
        (
            json!({"from": "ana@example.com", "to": "bo@example.org", "subject": "s", "text": "t", "headers": {"X-A": "1\nBcc: x@example.net"}}),
            "headers.X-A",
        ),
        (
            json!({"from": "ana@example.com", "to": "bo@example.org", "subject": "s", "text": "t", "headers": {"Bad Name": "1"}}),
            "headers.Bad Name",
        ),
        (
            json!({"from": "ana@example.com", "to": "bo@example.org", "subject": "s", "text": "t", "attachments": [{"name": "a"}]}),
            "attachments[0]",
        ),
        (
            json!({"from": "ana@example.com", "to": "bo@example.org", "subject": "s", "text": "t", "attachments": [{"name": "a", "content_base64": "***"}]}),
            "attachments[0].content_base64",
        ),
        (
            json!({"from": "ana@example.com", "to": "bo@example.org", "subject": "s", "text": "t", "attachments": [{"name": "a", "content_text": "x", "content_type": "pdf"}]}),
            "attachments[0].content_type",
        ),
        (json!({"from": "ana@example.com", "to": "bo@example.org", "reply_to": "nope", "subject": "s", "text": "t"}), "reply_to"),
    ];
    for (with, want) in cases {
        let (path, message) = bad_input_path(build(&input(with.clone()), "k"));
        assert_eq!(path, want, "{with}: {message}");
    }
    let (_, message) = bad_input_path(build(
        &input(json!({"from": "ana@example.com", "to": "bo@example.org", "subject": "s", "text": "t", "headers": {"Message-ID": "<x@y>"}})),
        "k",
    ));
    assert!(message.contains("idempotency key"), "{message}");
    // An attachment an imap.new_email trigger left out (above its cap) says so.
    let (path, message) = bad_input_path(build(
        &input(json!({"from": "ana@example.com", "to": "bo@example.org", "subject": "s", "text": "t",
            "attachments": [{"name": "big.pdf", "content_type": "application/pdf", "size": 20000000, "content_base64": null, "skipped": "larger than 10485760 bytes"}]})),
        "k",
    ));
    assert_eq!(path, "attachments[0]");
    assert!(message.contains("the trigger left it out (larger than 10485760 bytes)"), "{message}");
}

#[tokio::test]
async fn unknown_fields_and_a_missing_connection_are_bad_input() {
    let c = ctx(Credentials::None, true, Duration::from_secs(5));
    let err = send(&c, basic()).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::BadInput);
    assert!(err.message().contains("enlace connections create"), "{err}");
    let mut with = basic();
    with["attachment"] = json!([]);
    let err = send(&ctx(smtp(9), true, Duration::from_secs(5)), with).await.unwrap_err();
    assert!(matches!(&err, ConnectorError::BadInput { message, .. } if message.contains("unknown field `attachment`")), "{err}");
    let bearer = Credentials::Bearer { token: Secret::new("t") };
    let err = send(&ctx(bearer, true, Duration::from_secs(5)), basic()).await.unwrap_err();
    assert!(err.message().contains("needs an SMTP connection"), "{err}");
}

#[tokio::test]
async fn private_addresses_are_refused_unless_allowed() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while listener.accept().await.is_ok() {
            count.fetch_add(1, Ordering::SeqCst);
        }
    });
    let err = send(&ctx(smtp(port), false, Duration::from_secs(5)), basic()).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Permanent, "{err}");
    assert!(err.message().contains("loopback") && err.message().contains("ENLACE_ALLOW_PRIVATE_NETWORKS=true"), "{err}");
    let mut named = SmtpCredentials { host: "localhost".into(), port: Some(port), ..SmtpCredentials::default() };
    named.tls = SmtpTls::None;
    let err = send(&ctx(Credentials::Smtp(named), false, Duration::from_secs(5)), basic()).await.unwrap_err();
    assert!(err.message().contains("`localhost`: it resolves to"), "{err}");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(accepted.load(Ordering::SeqCst), 0, "no connection was made");
}

#[tokio::test]
async fn a_closed_port_is_transient() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let err = send(&ctx(smtp(port), true, Duration::from_secs(5)), basic()).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Transient, "{err}");
    assert!(err.message().contains(&format!("could not connect to 127.0.0.1:{port}")), "{err}");
    assert!(err.message().contains("nothing was sent"), "{err}");
}

/// What the scripted server does at the end of the message.
#[derive(Clone, Copy)]
enum AfterData {
    Reply(&'static str),
    Close,
    Hang,
}

#[derive(Clone, Copy)]
struct Script {
    greeting: &'static str,
    auth: &'static str,
    rcpt: &'static str,
    after_data: AfterData,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            greeting: "220 fake ESMTP ready",
            auth: "235 2.7.0 Authentication successful",
            rcpt: "250 2.1.5 OK",
            after_data: AfterData::Reply("250 2.0.0 Ok: queued as FAKE42"),
        }
    }
}

/// A scripted SMTP server: one conversation per connection; records the commands and the
/// message it received.
async fn fake_server(script: Script) -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let log = Arc::new(Mutex::new(vec![]));
    let seen = log.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read);
                let say = |s: &str| format!("{s}\r\n");
                write.write_all(say(script.greeting).as_bytes()).await.unwrap();
                if !script.greeting.starts_with("220") {
                    return;
                }
                let mut line = String::new();
                loop {
                    line.clear();
                    if lines.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let cmd = line.trim_end().to_string();
                    seen.lock().unwrap().push(cmd.clone());
                    let upper = cmd.to_ascii_uppercase();
                    let answer = if upper.starts_with("EHLO") {
                        "250-fake\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME".to_string()
                    } else if upper.starts_with("AUTH") {
                        script.auth.to_string()
                    } else if upper.starts_with("MAIL") {
                        "250 2.1.0 OK".into()
                    } else if upper.starts_with("RCPT") {
                        script.rcpt.to_string()
                    } else if upper.starts_with("DATA") {
                        write.write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n").await.unwrap();
                        let mut data = String::new();
                        loop {
                            let mut l = String::new();
                            if lines.read_line(&mut l).await.unwrap_or(0) == 0 {
                                return;
                            }
                            if l == ".\r\n" {
                                break;
                            }
                            data.push_str(&l);
                        }
                        seen.lock().unwrap().push(format!("MESSAGE {data}"));
                        match script.after_data {
                            AfterData::Reply(r) => r.to_string(),
                            AfterData::Close => return,
                            AfterData::Hang => {
                                tokio::time::sleep(Duration::from_secs(30)).await;
                                return;
                            }
                        }
                    } else if upper.starts_with("QUIT") {
                        let _ = write.write_all(b"221 2.0.0 Bye\r\n").await;
                        return;
                    } else {
                        "250 OK".into()
                    };
                    write.write_all(say(&answer).as_bytes()).await.unwrap();
                }
            });
        }
    });
    (port, log)
}

#[tokio::test]
async fn a_message_is_sent_and_its_output_names_the_recipients() {
    let (port, log) = fake_server(Script::default()).await;
    let out = send(
        &ctx(smtp(port), true, Duration::from_secs(10)),
        json!({"from": "ana@example.com", "to": ["bo@example.org"], "bcc": "cy@example.org", "subject": "s", "text": "t"}),
    )
    .await
    .unwrap();
    assert_eq!(out["accepted"], json!(["bo@example.org", "cy@example.org"]));
    assert_eq!(out["server_response"], "250 2.0.0 Ok: queued as FAKE42");
    assert_eq!(out["message_id"], json!(message_id_for("run1:mail", &"ana@example.com".parse().unwrap())));
    let log = log.lock().unwrap().clone();
    assert!(log.iter().any(|l| l.starts_with("AUTH PLAIN")), "{log:?}");
    assert!(log.iter().any(|l| l == "MAIL FROM:<ana@example.com>"), "{log:?}");
    assert!(log.iter().any(|l| l == "RCPT TO:<cy@example.org>"), "bcc is an envelope recipient: {log:?}");
    assert!(log.last().is_some_and(|l| l == "QUIT"), "{log:?}");
}

#[tokio::test]
async fn every_phase_is_classified() {
    let cases: Vec<(Script, ErrorClass, &str)> = vec![
        (
            Script { auth: "535 5.7.8 Authentication credentials invalid", ..Script::default() },
            ErrorClass::Auth,
            "535 5.7.8 Authentication credentials invalid",
        ),
        (Script { auth: "454 4.7.0 Temporary authentication failure", ..Script::default() }, ErrorClass::Transient, "454"),
        (
            Script { greeting: "421 4.3.2 Service not available", ..Script::default() },
            ErrorClass::Transient,
            "421 4.3.2 Service not available",
        ),
        (
            Script { greeting: "554 5.7.1 No SMTP service here", ..Script::default() },
            ErrorClass::Permanent,
            "554 5.7.1 No SMTP service here",
        ),
        (
            Script { rcpt: "550 5.1.1 User unknown", ..Script::default() },
            ErrorClass::Permanent,
            "the recipient `bo@example.org` was refused",
        ),
        (Script { rcpt: "452 4.2.2 Mailbox full", ..Script::default() }, ErrorClass::Transient, "452 4.2.2 Mailbox full"),
        (
            Script { after_data: AfterData::Reply("554 5.7.1 Message rejected as spam"), ..Script::default() },
            ErrorClass::Permanent,
            "554 5.7.1 Message rejected as spam",
        ),
        (
            Script { after_data: AfterData::Reply("451 4.3.0 Try again later"), ..Script::default() },
            ErrorClass::Transient,
            "451 4.3.0 Try again later",
        ),
        (Script { after_data: AfterData::Close, ..Script::default() }, ErrorClass::MaybeDelivered, "after the message was sent"),
    ];
    for (script, class, needle) in cases {
        let (port, _) = fake_server(script).await;
        let err = send(&ctx(smtp(port), true, Duration::from_secs(10)), basic()).await.unwrap_err();
        assert_eq!(err.class(), class, "{err}");
        assert!(err.message().contains(needle), "{err} should contain {needle}");
        assert!(!err.message().contains("pw-123"), "{err}");
    }
}

#[tokio::test]
async fn a_timeout_after_the_message_may_have_delivered_it() {
    let (port, log) = fake_server(Script { after_data: AfterData::Hang, ..Script::default() }).await;
    let started = std::time::Instant::now();
    let err = send(&ctx(smtp(port), true, Duration::from_millis(1500)), basic()).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::MaybeDelivered, "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(log.lock().unwrap().iter().any(|l| l.starts_with("MESSAGE ")), "the message was sent");
}

#[tokio::test]
async fn the_connection_test_logs_in_and_sends_nothing() {
    let (port, log) = fake_server(Script::default()).await;
    let conn = connector();
    assert!(conn.manifest.connection_test);
    let c = enlace_core::ConnectionContext {
        connection_id: "mail".into(),
        credentials: smtp(port),
        http: Arc::new(Policy(true)),
        timeout: Duration::from_secs(10),
    };
    match conn.test_connection(&c).await {
        enlace_core::TestOutcome::Ok(m) => assert_eq!(m, format!("connected to 127.0.0.1:{port} without encryption, logged in as ana")),
        other => panic!("{other:?}"),
    }
    let log = log.lock().unwrap().clone();
    assert!(!log.iter().any(|l| l.starts_with("MAIL")), "{log:?}");

    let (port, _) = fake_server(Script { auth: "535 5.7.8 Authentication credentials invalid", ..Script::default() }).await;
    let c = enlace_core::ConnectionContext { credentials: smtp(port), ..c };
    match conn.test_connection(&c).await {
        enlace_core::TestOutcome::Failed(e) => assert_eq!(e.class(), ErrorClass::Auth, "{e}"),
        other => panic!("{other:?}"),
    }
}
