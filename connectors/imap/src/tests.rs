//! The trigger and the connection test against a real IMAP server: Debian's dovecot,
//! started by [`crate::testing::Dovecot`] from a private configuration in a temporary
//! folder, on a free port of 127.0.0.1. Messages are put in place with IMAP APPEND
//! (async-imap, the client the connector uses) and their flags read back the same way.
//!
//! dovecot must be installed (`.ci/run` installs `dovecot-imapd`): a test that cannot find
//! it fails and says how to install it.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use enlace_core::connection::ConnectionContext;
use enlace_core::http::{HttpRequest, HttpResponse, HttpTransport, TransportError};
use enlace_core::trigger::{PollPage, PolledItem};
use enlace_core::{ActionContext, BoxFuture, ConnectorError, Credentials, ErrorClass, ImapCredentials, ImapTls, Secret};

use crate::connector;
use crate::new_email::{MAX_PER_POLL, read_email};
use crate::testing::{Dovecot, PASSWORD, USER, free_port};

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

fn ctx(credentials: Credentials) -> ActionContext {
    ActionContext {
        run_id: "run1".into(),
        step_key: "trigger".into(),
        attempt: 1,
        idempotency_key: "run1:trigger".into(),
        credentials,
        http: Arc::new(Policy(true)),
        timeout: Duration::from_secs(30),
        extensions: Default::default(),
    }
}

fn conn_ctx(credentials: Credentials, allow_private: bool) -> ConnectionContext {
    ConnectionContext {
        connection_id: "mailbox".into(),
        credentials,
        http: Arc::new(Policy(allow_private)),
        timeout: Duration::from_secs(20),
    }
}

async fn poll(c: &ActionContext, config: Value, cursor: Option<&str>) -> Result<PollPage<PolledItem>, ConnectorError> {
    let conn = connector();
    conn.polling_trigger("new_email").expect("the trigger").poll(c, config, cursor.map(str::to_string)).await
}

async fn test_connection(c: &ConnectionContext) -> Result<String, ConnectorError> {
    match connector().test_connection(c).await {
        enlace_core::TestOutcome::Ok(m) => Ok(m),
        enlace_core::TestOutcome::Failed(e) => Err(e),
        other => panic!("the imap app has a connection test: {other:?}"),
    }
}

fn uids(page: &PollPage<PolledItem>) -> Vec<u64> {
    page.items.iter().map(|i| i.event["uid"].as_u64().unwrap()).collect()
}

const TEXT_MAIL: &str = "From: Bo Berg <bo@example.org>
To: Ana Lima <ana@example.com>
Subject: Plain hello
Date: Thu, 02 Apr 2026 09:14:05 +0200
Message-ID: <plain-1@example.org>
Content-Type: text/plain; charset=utf-8

Just text, no attachments.
";

/// The bytes of the two attachments of [`rich_mail`].
fn pdf_bytes() -> Vec<u8> {
    let mut b = b"%PDF-1.7\n".to_vec();
    b.extend((0u8..=255).cycle().take(3000));
    b
}
const CSV: &str = "sku;qty\nA-1;3\nB-2;5\n";

fn rich_mail() -> String {
    let pdf = STANDARD.encode(pdf_bytes());
    let pdf_lines: Vec<&str> = pdf.as_bytes().chunks(76).map(|c| std::str::from_utf8(c).unwrap()).collect();
    let csv = STANDARD.encode(CSV);
    format!(
        "From: \"Supplier Billing\" <Invoices@Supplier.example>
To: ana@example.com, Team <team@example.com>
Cc: Cy <cy@example.org>
Reply-To: billing-help@supplier.example
In-Reply-To: <order-77@example.com>
Subject: =?utf-8?q?Rechnung_f=C3=BCr_April?=
Date: Fri, 03 Apr 2026 10:00:00 +0000
Message-ID: <inv-2026-0412@supplier.example>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary=\"outer\"

--outer
Content-Type: multipart/alternative; boundary=\"inner\"

--inner
Content-Type: text/plain; charset=utf-8

Invoice attached.
--inner
Content-Type: text/html; charset=utf-8

<p>Invoice <b>attached</b>.</p>
--inner--
--outer
Content-Type: application/pdf; name=\"INV-0412.pdf\"
Content-Disposition: attachment; filename=\"INV-0412.pdf\"
Content-Transfer-Encoding: base64

{}
--outer
Content-Type: text/csv; charset=utf-8
Content-Disposition: attachment; filename=\"items.csv\"
Content-Transfer-Encoding: base64

{csv}
--outer--
",
        pdf_lines.join("\n")
    )
}

const NO_ATTACHMENT_MAIL: &str = "From: Cy <cy@example.org>
To: ana@example.com
Subject: Lunch?
Date: Sat, 04 Apr 2026 12:30:00 +0000
Message-ID: <lunch@example.org>
MIME-Version: 1.0
Content-Type: text/html; charset=utf-8

<p>Lunch at <i>noon</i>?</p>
";

fn numbered(n: usize) -> String {
    format!("From: bulk@example.net\nTo: ana@example.com\nSubject: Message {n}\nMessage-ID: <bulk-{n}@example.net>\n\nNumber {n}.\n")
}

#[tokio::test]
async fn new_mail_comes_newest_first_with_its_fields_and_only_once() {
    let server = Dovecot::start().await;
    server.append("INBOX", TEXT_MAIL).await;
    server.append("INBOX", &rich_mail()).await;
    server.append("INBOX", NO_ATTACHMENT_MAIL).await;
    let validity = server.uid_validity().await;
    let c = ctx(server.credentials(PASSWORD));

    let first = poll(&c, json!({}), None).await.unwrap();
    assert_eq!(uids(&first), [3, 2, 1], "newest first");
    let keys: Vec<&str> = first.items.iter().map(|i| i.dedupe_key.as_str()).collect();
    assert_eq!(keys, [format!("{validity}:3"), format!("{validity}:2"), format!("{validity}:1")]);
    assert_eq!(first.cursor.as_deref(), Some(format!("{validity}:3").as_str()));

    let lunch = &first.items[0].event;
    assert_eq!(lunch["subject"], "Lunch?");
    assert_eq!(lunch["html"], "<p>Lunch at <i>noon</i>?</p>\n");
    assert!(lunch["text"].as_str().unwrap().contains("Lunch at noon?"), "text is made from the HTML: {lunch}");
    assert_eq!(lunch["attachments"], json!([]));

    let rich = &first.items[1].event;
    assert_eq!(rich["uid"], 2);
    assert_eq!(rich["uid_validity"], validity);
    assert_eq!(rich["folder"], "INBOX");
    assert_eq!(rich["message_id"], "<inv-2026-0412@supplier.example>");
    assert_eq!(rich["from"], json!({"address": "Invoices@Supplier.example", "name": "Supplier Billing"}));
    assert_eq!(rich["to"], json!([{"address": "ana@example.com", "name": null}, {"address": "team@example.com", "name": "Team"}]));
    assert_eq!(rich["cc"], json!([{"address": "cy@example.org", "name": "Cy"}]));
    assert_eq!(rich["reply_to"], json!([{"address": "billing-help@supplier.example", "name": null}]));
    assert_eq!(rich["in_reply_to"], "<order-77@example.com>");
    assert_eq!(rich["subject"], "Rechnung für April", "RFC 2047 decoded");
    assert_eq!(rich["date"], "2026-04-03T10:00:00Z");
    assert_eq!(rich["text"].as_str().unwrap().trim(), "Invoice attached.");
    assert_eq!(rich["html"].as_str().unwrap().trim(), "<p>Invoice <b>attached</b>.</p>");
    assert!(rich["size"].as_u64().unwrap() > 4000, "{}", rich["size"]);
    let atts = rich["attachments"].as_array().unwrap();
    assert_eq!(atts.len(), 2, "{atts:?}");
    assert_eq!((atts[0]["name"].as_str(), atts[0]["content_type"].as_str()), (Some("INV-0412.pdf"), Some("application/pdf")));
    assert_eq!(atts[0]["size"], pdf_bytes().len());
    assert_eq!(STANDARD.decode(atts[0]["content_base64"].as_str().unwrap()).unwrap(), pdf_bytes(), "the PDF's bytes, as appended");
    assert_eq!((atts[1]["name"].as_str(), atts[1]["content_type"].as_str()), (Some("items.csv"), Some("text/csv")));
    assert_eq!(STANDARD.decode(atts[1]["content_base64"].as_str().unwrap()).unwrap(), CSV.as_bytes());
    assert!(atts[0].get("skipped").is_none(), "{atts:?}");

    // The attachments are what smtp.send_email takes, as they are.
    let forward: enlace_connector_smtp::send::Input = serde_json::from_value(json!({
        "from": "ana@example.com", "to": "archive@example.com", "subject": "Fwd", "text": "see attached",
        "attachments": rich["attachments"],
    }))
    .expect("smtp.send_email takes the attachments of imap.new_email");
    let built = enlace_connector_smtp::message::build(&forward, "run1:fwd").expect("and builds a message with them");
    assert!(String::from_utf8_lossy(&built.bytes).contains("INV-0412.pdf"));

    let plain = &first.items[2].event;
    assert_eq!(plain["from"], json!({"address": "bo@example.org", "name": "Bo Berg"}));
    assert_eq!(plain["text"].as_str().unwrap().trim(), "Just text, no attachments.");
    assert_eq!(plain["html"], Value::Null, "no HTML part: none is made up");
    assert_eq!(plain["date"], "2026-04-02T09:14:05+02:00");

    // Nothing new: nothing returned, the cursor stays.
    let again = poll(&c, json!({}), first.cursor.as_deref()).await.unwrap();
    assert!(again.items.is_empty(), "{:?}", again.items);
    assert_eq!(again.cursor, first.cursor);

    // One more: only that one.
    server.append("INBOX", &numbered(4)).await;
    let next = poll(&c, json!({}), again.cursor.as_deref()).await.unwrap();
    assert_eq!(uids(&next), [4]);
    assert_eq!(next.items[0].event["subject"], "Message 4");
    assert_eq!(next.cursor.as_deref(), Some(format!("{validity}:4").as_str()));

    // Polling marked nothing as read.
    let flags = server.flags().await;
    assert_eq!(flags.len(), 4);
    for (uid, f) in flags {
        assert!(!f.iter().any(|x| x.contains("Seen")), "message {uid} was marked as seen: {f:?}");
    }
}

#[tokio::test]
async fn filters_on_attachments_and_sender() {
    let server = Dovecot::start().await;
    server.append("INBOX", TEXT_MAIL).await;
    server.append("INBOX", &rich_mail()).await;
    server.append("INBOX", NO_ATTACHMENT_MAIL).await;
    let validity = server.uid_validity().await;
    let c = ctx(server.credentials(PASSWORD));

    let page = poll(&c, json!({"only_with_attachments": true}), None).await.unwrap();
    assert_eq!(uids(&page), [2]);
    assert_eq!(page.cursor.as_deref(), Some(format!("{validity}:3").as_str()), "the others were looked at, and passed over");

    let page = poll(&c, json!({"from": "Billing <invoices@supplier.EXAMPLE>"}), Some(&format!("{validity}:0"))).await.unwrap();
    assert_eq!(uids(&page), [2]);
    let page = poll(&c, json!({"from": "cy@example.org"}), Some(&format!("{validity}:0"))).await.unwrap();
    assert_eq!(uids(&page), [3], "Cy is in Cc of message 2, but it is not from Cy");
    assert_eq!(page.cursor.as_deref(), Some(format!("{validity}:3").as_str()));

    // An attachment above the cap is listed without its content.
    let page = poll(&c, json!({"max_attachment_bytes": 100}), Some(&format!("{validity}:1"))).await.unwrap();
    let atts = page.items.iter().find(|i| i.event["uid"] == 2).unwrap().event["attachments"].clone();
    assert_eq!(atts[0]["content_base64"], Value::Null);
    assert_eq!(atts[0]["skipped"], "larger than 100 bytes");
    assert_eq!(atts[0]["size"], pdf_bytes().len());
    assert_eq!(STANDARD.decode(atts[1]["content_base64"].as_str().unwrap()).unwrap(), CSV.as_bytes(), "the small one is kept");

    let e = poll(&c, json!({"from": "not an address"}), None).await.unwrap_err();
    assert!(matches!(&e, ConnectorError::BadInput { path, .. } if path == "from"), "{e:?}");
    let e = poll(&c, json!({"max_attachment_bytes": 1_000_000_000u64}), None).await.unwrap_err();
    assert!(matches!(&e, ConnectorError::BadInput { path, .. } if path == "max_attachment_bytes"), "{e:?}");
    let e = poll(&c, json!({"folders": "INBOX"}), None).await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::BadInput, "{e:?}");
}

#[tokio::test]
async fn other_folders_and_a_missing_one() {
    let server = Dovecot::start().await;
    server.create_folder("Reçus").await;
    server.create_folder("Invoices").await;
    server.append(&crate::utf7::encode("Reçus"), TEXT_MAIL).await;
    let c = ctx(server.credentials(PASSWORD));

    let page = poll(&c, json!({"folder": "Reçus"}), None).await.unwrap();
    assert_eq!(uids(&page), [1]);
    assert_eq!(page.items[0].event["folder"], "Reçus");
    let page = poll(&c, json!({"folder": "Invoices"}), None).await.unwrap();
    assert!(page.items.is_empty());
    assert!(page.cursor.as_deref().unwrap().ends_with(":0"), "{:?}", page.cursor);

    let e = poll(&c, json!({"folder": "Invoces"}), None).await.unwrap_err();
    let ConnectorError::BadInput { path, message } = &e else { panic!("expected bad input, got {e:?}") };
    assert_eq!(path, "folder");
    assert!(message.contains("no folder `Invoces`"), "{message}");
    assert!(message.contains("`INBOX`, `Invoices`, `Reçus`"), "the folders it has: {message}");
}

#[tokio::test]
async fn logins_and_the_connection_test() {
    let server = Dovecot::start().await;
    server.append("INBOX", TEXT_MAIL).await;

    let ok = test_connection(&conn_ctx(server.credentials(PASSWORD), true)).await.unwrap();
    assert_eq!(ok, format!("connected to 127.0.0.1:{} without encryption, logged in as {USER}; INBOX holds 1 message", server.port));

    let e = test_connection(&conn_ctx(server.credentials("wrong-password"), true)).await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::Auth, "{e:?}");
    assert!(e.message().contains("Authentication failed"), "the server's text: {e:?}");
    assert!(!e.message().contains("wrong-password"), "{e:?}");

    let e = poll(&ctx(server.credentials("wrong-password")), json!({}), None).await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::Auth, "{e:?}");
    assert!(e.message().contains(USER) && e.message().contains("Authentication failed"), "{e:?}");

    // The SSRF guard: loopback is refused unless the installation allows it.
    let e = test_connection(&conn_ctx(server.credentials(PASSWORD), false)).await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::Permanent, "{e:?}");
    assert!(e.message().contains("the IMAP host is the connection's `host`"), "{e:?}");

    // Nobody listening: transient.
    let mut creds = server.credentials(PASSWORD);
    if let Credentials::Imap(i) = &mut creds {
        i.port = Some(free_port());
    }
    let e = poll(&ctx(creds), json!({}), None).await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::Transient, "{e:?}");
    assert!(e.message().contains("could not connect"), "{e:?}");

    // Another kind of connection.
    let e = poll(&ctx(Credentials::Bearer { token: Secret::new("t") }), json!({}), None).await.unwrap_err();
    assert!(matches!(&e, ConnectorError::BadInput { path, .. } if path == "connection"), "{e:?}");
}

#[tokio::test]
async fn a_cap_per_poll_keeps_the_rest_for_the_next() {
    let server = Dovecot::start().await;
    let c = ctx(server.credentials(PASSWORD));
    let empty = poll(&c, json!({}), None).await.unwrap();
    assert!(empty.items.is_empty());
    let validity = server.uid_validity().await;
    assert_eq!(empty.cursor.as_deref(), Some(format!("{validity}:0").as_str()));

    let total = MAX_PER_POLL + 3;
    {
        let mut s = server.client().await;
        for n in 1..=total {
            s.append("INBOX", None, None, numbered(n).replace('\n', "\r\n")).await.unwrap();
        }
        s.logout().await.unwrap();
    }
    let page = poll(&c, json!({}), empty.cursor.as_deref()).await.unwrap();
    let expected: Vec<u64> = (1..=MAX_PER_POLL as u64).rev().collect();
    assert_eq!(uids(&page), expected, "the oldest of the new ones, newest first");
    assert_eq!(page.cursor.as_deref(), Some(format!("{validity}:{MAX_PER_POLL}").as_str()), "the cursor stops at what was returned");
    let rest = poll(&c, json!({}), page.cursor.as_deref()).await.unwrap();
    let expected: Vec<u64> = (MAX_PER_POLL as u64 + 1..=total as u64).rev().collect();
    assert_eq!(uids(&rest), expected);
    assert_eq!(rest.cursor.as_deref(), Some(format!("{validity}:{total}").as_str()));

    // A first poll (no cursor) takes the newest ones and does not walk the history.
    let first = poll(&c, json!({}), None).await.unwrap();
    assert_eq!(first.items.len(), MAX_PER_POLL);
    assert_eq!(first.items[0].event["uid"], total);
    assert_eq!(first.cursor.as_deref(), Some(format!("{validity}:{total}").as_str()));
}

#[tokio::test]
async fn a_changed_uidvalidity_starts_again_from_the_end() {
    let server = Dovecot::start().await;
    server.append("INBOX", TEXT_MAIL).await;
    server.append("INBOX", NO_ATTACHMENT_MAIL).await;
    let validity = server.uid_validity().await;
    let c = ctx(server.credentials(PASSWORD));
    let other = validity.wrapping_add(1);
    let page = poll(&c, json!({}), Some(&format!("{other}:1"))).await.unwrap();
    assert!(page.items.is_empty(), "no flood of old mail: {:?}", page.items);
    assert_eq!(page.cursor.as_deref(), Some(format!("{validity}:2").as_str()));
    let page = poll(&c, json!({}), Some("not a cursor")).await.unwrap();
    assert!(page.items.is_empty());
    assert_eq!(page.cursor.as_deref(), Some(format!("{validity}:2").as_str()));
}

#[tokio::test]
async fn tls_checks_the_certificate() {
    let server = Dovecot::start_tls().await;
    let ca = server.cert_pem.clone().unwrap();
    let creds = |tls: ImapTls, port: u16, ca: Option<String>| {
        Credentials::Imap(ImapCredentials {
            host: "localhost".into(),
            port: Some(port),
            username: USER.into(),
            password: Secret::new(PASSWORD),
            tls,
            ca_certificate: ca,
        })
    };
    let tls_port = server.tls_port.unwrap();

    let ok = test_connection(&conn_ctx(creds(ImapTls::Tls, tls_port, Some(ca.clone())), true)).await.unwrap();
    assert!(ok.contains("over TLS, logged in as"), "{ok}");
    let page = poll(&ctx(creds(ImapTls::Tls, tls_port, Some(ca.clone()))), json!({}), None).await.unwrap();
    assert!(page.items.is_empty());
    let ok = test_connection(&conn_ctx(creds(ImapTls::Starttls, server.port, Some(ca.clone())), true)).await.unwrap();
    assert!(ok.contains("over STARTTLS, logged in as"), "{ok}");

    for (tls, port) in [(ImapTls::Tls, tls_port), (ImapTls::Starttls, server.port)] {
        let e = test_connection(&conn_ctx(creds(tls, port, None), true)).await.unwrap_err();
        assert_eq!(e.class(), ErrorClass::Permanent, "{tls:?}: {e:?}");
        assert!(e.message().contains("certificate") && e.message().contains("ca_certificate"), "{tls:?}: {e:?}");
    }

    let mut plain = creds(ImapTls::None, server.port, None);
    if let Credentials::Imap(i) = &mut plain {
        i.host = server.other_address.unwrap().into();
    }
    let e = test_connection(&conn_ctx(plain, true)).await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::Permanent, "{e:?}");
    assert!(e.message().contains("without encryption") && e.message().contains("set the connection's tls"), "{e:?}");
}

#[test]
fn a_message_that_is_not_mime_gives_a_note() {
    let e = read_email(7, 1, "INBOX", 0, b"", None, 100);
    assert_eq!((e.uid, e.subject.as_str(), e.attachments.len()), (7, "", 0));
    assert!(e.note.as_deref().is_some_and(|n| n.contains("could not be read as MIME")), "{e:?}");
}

#[test]
fn the_manifest_documents_every_field_and_its_sample_is_valid() {
    let conn = connector();
    let spec = &conn.manifest.triggers[0];
    assert_eq!((spec.id.as_str(), spec.kind), ("new_email", enlace_core::TriggerKind::Polling));
    for (name, prop) in spec.config_schema["properties"].as_object().unwrap() {
        assert!(prop.get("description").is_some_and(|d| !d.as_str().unwrap_or_default().is_empty()), "{name} has no help text");
    }
    let sample = &spec.sample;
    for key in ["uid", "from", "to", "subject", "date", "text", "html", "attachments"] {
        assert!(sample.get(key).is_some(), "the sample has no {key}: {sample}");
    }
    assert_eq!(
        STANDARD.decode(sample["attachments"][0]["content_base64"].as_str().unwrap()).unwrap().len() as u64,
        sample["attachments"][0]["size"].as_u64().unwrap()
    );
    assert_eq!(conn.manifest.auth, enlace_core::AuthKind::Imap);
    assert!(conn.manifest.connection_test);
}

#[test]
fn charsets_are_decoded() {
    let raw = b"From: =?ISO-2022-JP?B?GyRCQEE1YT1xGyhC?= <seikyu@example.jp>\r\nSubject: =?ISO-2022-JP?B?GyRCQEE1YT1xGyhC?=\r\nContent-Type: text/plain; charset=windows-1252\r\nContent-Disposition: inline\r\n\r\nGr\xfc\xdfe\r\n";
    let e = read_email(1, 1, "INBOX", raw.len() as u64, raw, None, 100);
    assert_eq!(e.subject, "請求書");
    assert_eq!(e.from, Some(crate::new_email::Person { address: "seikyu@example.jp".into(), name: Some("請求書".into()) }));
    assert_eq!(e.text.as_deref(), Some("Grüße\n"));
    assert_eq!(e.html, None);
    assert!(e.note.is_none());
}

#[test]
fn the_test_mails_read_back_as_written() {
    use crate::testing::{TestAttachment, mail_with_attachments};
    let pdf = pdf_bytes();
    let raw = mail_with_attachments(
        "Bo <bo@example.org>",
        "Two files",
        "<two@example.org>",
        "See attached.",
        &[
            TestAttachment { name: "a.pdf", content_type: "application/pdf", bytes: &pdf },
            TestAttachment { name: "b.csv", content_type: "text/csv", bytes: CSV.as_bytes() },
        ],
    )
    .replace('\n', "\r\n");
    let e = read_email(1, 1, "INBOX", raw.len() as u64, raw.as_bytes(), None, 1_000_000);
    assert_eq!((e.subject.as_str(), e.text.as_deref().map(str::trim)), ("Two files", Some("See attached.")));
    let got: Vec<(&str, &str, Vec<u8>)> = e
        .attachments
        .iter()
        .map(|a| (a.name.as_str(), a.content_type.as_str(), STANDARD.decode(a.content_base64.as_deref().unwrap()).unwrap()))
        .collect();
    assert_eq!(got, [("a.pdf", "application/pdf", pdf), ("b.csv", "text/csv", CSV.as_bytes().to_vec())]);
    let plain = mail_with_attachments("bo@example.org", "Hi", "<hi@example.org>", "No files.", &[]).replace('\n', "\r\n");
    let e = read_email(2, 1, "INBOX", plain.len() as u64, plain.as_bytes(), None, 1_000_000);
    assert!(e.attachments.is_empty(), "{e:?}");
}
