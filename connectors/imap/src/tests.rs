//! The trigger and the connection test against a real IMAP server: Debian's dovecot,
//! started here from a private configuration in a temporary folder, on a free port of
//! 127.0.0.1. Messages are put in place with IMAP APPEND (async-imap, the client the
//! connector uses) and their flags read back the same way.
//!
//! dovecot must be installed (`.ci/run` installs `dovecot-imapd`): a test that cannot find
//! it fails and says how to install it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use futures::TryStreamExt;
use serde_json::{Value, json};
use tokio::net::TcpStream;

use enlace_core::connection::ConnectionContext;
use enlace_core::http::{HttpRequest, HttpResponse, HttpTransport, TransportError};
use enlace_core::trigger::{PollPage, PolledItem};
use enlace_core::{ActionContext, BoxFuture, ConnectorError, Credentials, ErrorClass, ImapCredentials, ImapTls, Secret};

use crate::connector;
use crate::new_email::{MAX_PER_POLL, read_email};

const DOVECOT: &str = "/usr/sbin/dovecot";
const USER: &str = "ana@example.com";
const PASSWORD: &str = "s3cret-imap-Pa55";

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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn temp_dir(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "enlace-imap-{name}-{}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").current_dir(dir).args(args).output().unwrap_or_else(|e| {
        panic!("the IMAP TLS tests make their certificates with `openssl`, which could not run ({e}): install it with `apt-get install -y openssl`")
    });
    assert!(out.status.success(), "openssl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// A self-signed certificate for `localhost` (key.pem, cert.pem); returns the certificate.
fn self_signed(dir: &Path) -> String {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-addext",
            "extendedKeyUsage=serverAuth",
        ],
    );
    std::fs::read_to_string(dir.join("cert.pem")).unwrap()
}

/// dovecot on 127.0.0.1, one user (`USER`, `PASSWORD`); stopped when dropped.
struct Dovecot {
    dir: PathBuf,
    /// The IMAP port (plain, STARTTLS when TLS is on).
    port: u16,
    /// The implicit TLS port, when TLS is on.
    tls_port: Option<u16>,
    /// With TLS on, the IMAP port also listens on 127.0.0.2: dovecot takes a client whose
    /// address is its own (127.0.0.1 to 127.0.0.1) for a secure one and lets it log in
    /// without encryption; from 127.0.0.1 to 127.0.0.2 it does not.
    other_address: Option<&'static str>,
    /// The server's certificate, when TLS is on.
    cert_pem: Option<String>,
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("run/master.pid")) {
            let pid = pid.trim().to_string();
            let _ = Command::new("kill").arg(&pid).status();
            for _ in 0..50 {
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Dovecot {
    /// Plain IMAP, plaintext login allowed.
    async fn start() -> Dovecot {
        tokio::task::spawn_blocking(|| Self::start_blocking(false)).await.unwrap()
    }

    /// `ssl = required`: STARTTLS on the IMAP port, implicit TLS on another; no login
    /// without encryption.
    async fn start_tls() -> Dovecot {
        tokio::task::spawn_blocking(|| Self::start_blocking(true)).await.unwrap()
    }

    fn start_blocking(tls: bool) -> Dovecot {
        assert!(
            Path::new(DOVECOT).exists(),
            "the IMAP tests need dovecot, a real IMAP server, at {DOVECOT}: install dovecot-imapd (.ci/run does: `apt-get install -y dovecot-imapd`)"
        );
        let dir = temp_dir("dovecot");
        for sub in ["run", "state", "mail"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        // The mail is written by the user the userdb names (nobody).
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join("mail"), std::fs::Permissions::from_mode(0o777)).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let port = free_port();
        let d = dir.display();
        let (ssl, tls_port, cert_pem) = if tls {
            let cert = self_signed(&dir);
            let tls_port = free_port();
            (
                format!(
                    "ssl = required\nssl_cert = <{d}/cert.pem\nssl_key = <{d}/key.pem\ndisable_plaintext_auth = yes\n\
                     service imap-login {{\n  inet_listener imap {{\n    address = 127.0.0.1 127.0.0.2\n    port = {port}\n  }}\n  \
                     inet_listener imaps {{\n    address = 127.0.0.1\n    port = {tls_port}\n    ssl = yes\n  }}\n}}\n"
                ),
                Some(tls_port),
                Some(cert),
            )
        } else {
            (
                format!(
                    "ssl = no\ndisable_plaintext_auth = no\n\
                     service imap-login {{\n  inet_listener imap {{\n    address = 127.0.0.1\n    port = {port}\n  }}\n  \
                     inet_listener imaps {{\n    port = 0\n  }}\n}}\n"
                ),
                None,
                None,
            )
        };
        let conf = format!(
            "protocols = imap\nlisten = 127.0.0.1\nbase_dir = {d}/run\nstate_dir = {d}/state\n\
             log_path = {d}/dovecot.log\nauth_mechanisms = plain login\nauth_failure_delay = 0\n\
             mail_location = maildir:{d}/mail/%u\nfirst_valid_uid = 1\n\
             passdb {{\n  driver = static\n  args = password={PASSWORD}\n}}\n\
             userdb {{\n  driver = static\n  args = uid=nobody gid=nogroup home={d}/mail/%u\n}}\n\
             service anvil {{\n  chroot =\n}}\nservice imap-login {{\n  chroot =\n}}\n{ssl}"
        );
        std::fs::write(dir.join("dovecot.conf"), conf).unwrap();
        // dovecot forks into the background: its output goes to a file, not to a pipe that
        // the daemon would keep open.
        let errors = std::fs::File::create(dir.join("start.err")).unwrap();
        let status = Command::new(DOVECOT)
            .arg("-c")
            .arg(dir.join("dovecot.conf"))
            .stdin(std::process::Stdio::null())
            .stdout(errors.try_clone().unwrap())
            .stderr(errors)
            .status()
            .expect("start dovecot");
        let log = || {
            std::fs::read_to_string(dir.join("start.err")).unwrap_or_default()
                + &std::fs::read_to_string(dir.join("dovecot.log")).unwrap_or_default()
        };
        assert!(status.success(), "dovecot did not start: {}", log());
        let other_address = tls.then_some("127.0.0.2");
        let server = Dovecot { dir, port, tls_port, other_address, cert_pem };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return server;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "dovecot did not listen on 127.0.0.1:{port}: {}",
            std::fs::read_to_string(server.dir.join("dovecot.log")).unwrap_or_default()
        );
    }

    /// Credentials for this server, without encryption (the plain server).
    fn credentials(&self, password: &str) -> Credentials {
        Credentials::Imap(ImapCredentials {
            host: "127.0.0.1".into(),
            port: Some(self.port),
            username: USER.into(),
            password: Secret::new(password),
            tls: ImapTls::None,
            ca_certificate: None,
        })
    }

    /// A logged-in client of the test's own, to put messages in place and read flags.
    async fn client(&self) -> async_imap::Session<TcpStream> {
        let tcp = TcpStream::connect(("127.0.0.1", self.port)).await.unwrap();
        let mut client = async_imap::Client::new(tcp);
        client.read_response().await.unwrap().expect("greeting");
        client.login(USER, PASSWORD).await.map_err(|(e, _)| e).expect("the test's own login")
    }

    async fn append(&self, folder: &str, message: &str) {
        let mut s = self.client().await;
        s.append(folder, None, None, message.replace('\n', "\r\n")).await.expect("append");
        s.logout().await.unwrap();
    }

    async fn create_folder(&self, name: &str) {
        let mut s = self.client().await;
        s.create(crate::utf7::encode(name)).await.expect("create folder");
        s.logout().await.unwrap();
    }

    /// The flags of every message of INBOX, by UID.
    async fn flags(&self) -> Vec<(u32, Vec<String>)> {
        let mut s = self.client().await;
        s.examine("INBOX").await.unwrap();
        let fetched: Vec<_> = s.uid_fetch("1:*", "(UID FLAGS)").await.unwrap().try_collect().await.unwrap();
        let mut out: Vec<(u32, Vec<String>)> =
            fetched.iter().map(|f| (f.uid.unwrap(), f.flags().map(|fl| format!("{fl:?}")).collect())).collect();
        out.sort();
        s.logout().await.unwrap();
        out
    }

    async fn uid_validity(&self) -> u32 {
        let mut s = self.client().await;
        let m = s.examine("INBOX").await.unwrap();
        s.logout().await.unwrap();
        m.uid_validity.unwrap()
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
