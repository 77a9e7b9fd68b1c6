//! Test support, for this crate's tests and the workspace's end-to-end tests: a real IMAP
//! server (Debian's dovecot) started from a private configuration in a temporary folder, on
//! a free port of 127.0.0.1, with one user; messages put in place with IMAP APPEND through
//! async-imap (the client the connector uses). Nothing here is used by the connector: it
//! only starts a local server and writes test messages.
//!
//! dovecot must be installed (`.ci/run` installs `dovecot-imapd`): [`Dovecot::start`] fails
//! when it is missing and says how to install it. The server runs as the current user (root
//! in CI) and drops to `nobody` for the mail it writes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use futures::TryStreamExt;
use tokio::net::TcpStream;

use enlace_core::{Credentials, ImapCredentials, ImapTls, Secret};

/// Where Debian's `dovecot-imapd` installs the server.
pub const DOVECOT: &str = "/usr/sbin/dovecot";
/// The one user of a [`Dovecot`] server.
pub const USER: &str = "ana@example.com";
/// Its password.
pub const PASSWORD: &str = "s3cret-imap-Pa55";

/// A port of 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
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

/// dovecot on 127.0.0.1, one user ([`USER`], [`PASSWORD`]), its mail in a temporary
/// folder; stopped (and the folder removed) when dropped.
pub struct Dovecot {
    dir: PathBuf,
    /// The IMAP port (plain, STARTTLS when TLS is on).
    pub port: u16,
    /// The implicit TLS port, when TLS is on.
    pub tls_port: Option<u16>,
    /// With TLS on, the IMAP port also listens on 127.0.0.2: dovecot takes a client whose
    /// address is its own (127.0.0.1 to 127.0.0.1) for a secure one and lets it log in
    /// without encryption; from 127.0.0.1 to 127.0.0.2 it does not.
    pub other_address: Option<&'static str>,
    /// The server's certificate, when TLS is on.
    pub cert_pem: Option<String>,
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
    pub async fn start() -> Dovecot {
        tokio::task::spawn_blocking(|| Self::start_blocking(false)).await.unwrap()
    }

    /// `ssl = required`: STARTTLS on the IMAP port, implicit TLS on another; no login
    /// without encryption.
    pub async fn start_tls() -> Dovecot {
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
    pub fn credentials(&self, password: &str) -> Credentials {
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
    pub async fn client(&self) -> async_imap::Session<TcpStream> {
        let tcp = TcpStream::connect(("127.0.0.1", self.port)).await.unwrap();
        let mut client = async_imap::Client::new(tcp);
        client.read_response().await.unwrap().expect("greeting");
        client.login(USER, PASSWORD).await.map_err(|(e, _)| e).expect("the test's own login")
    }

    /// Puts a message in `folder` (IMAP APPEND); `\n` line ends become CRLF.
    pub async fn append(&self, folder: &str, message: &str) {
        let mut s = self.client().await;
        s.append(folder, None, None, message.replace('\n', "\r\n")).await.expect("append");
        s.logout().await.unwrap();
    }

    /// Creates a folder, its name as the user writes it (encoded in modified UTF-7).
    pub async fn create_folder(&self, name: &str) {
        let mut s = self.client().await;
        s.create(crate::utf7::encode(name)).await.expect("create folder");
        s.logout().await.unwrap();
    }

    /// The flags of every message of INBOX, by UID.
    pub async fn flags(&self) -> Vec<(u32, Vec<String>)> {
        let mut s = self.client().await;
        s.examine("INBOX").await.unwrap();
        let fetched: Vec<_> = s.uid_fetch("1:*", "(UID FLAGS)").await.unwrap().try_collect().await.unwrap();
        let mut out: Vec<(u32, Vec<String>)> =
            fetched.iter().map(|f| (f.uid.unwrap(), f.flags().map(|fl| format!("{fl:?}")).collect())).collect();
        out.sort();
        s.logout().await.unwrap();
        out
    }

    /// INBOX's UIDVALIDITY.
    pub async fn uid_validity(&self) -> u32 {
        let mut s = self.client().await;
        let m = s.examine("INBOX").await.unwrap();
        s.logout().await.unwrap();
        m.uid_validity.unwrap()
    }
}

/// A file attached to a message of [`mail_with_attachments`].
#[derive(Debug, Clone)]
pub struct TestAttachment<'a> {
    /// The file name, like `invoice.pdf`.
    pub name: &'a str,
    /// Its media type, like `application/pdf`.
    pub content_type: &'a str,
    /// Its bytes (any: they are sent base64-encoded).
    pub bytes: &'a [u8],
}

/// A MIME message (`multipart/mixed`) from `from` to [`USER`] with a text body and these
/// attachments, each base64-encoded in lines of 76 characters; a plain text message when
/// there are none. `\n` line ends, as [`Dovecot::append`] takes them.
pub fn mail_with_attachments(from: &str, subject: &str, message_id: &str, text: &str, attachments: &[TestAttachment<'_>]) -> String {
    let head = format!(
        "From: {from}\nTo: {USER}\nSubject: {subject}\nDate: Fri, 03 Apr 2026 10:00:00 +0000\nMessage-ID: {message_id}\nMIME-Version: 1.0\n"
    );
    if attachments.is_empty() {
        return format!("{head}Content-Type: text/plain; charset=utf-8\n\n{text}\n");
    }
    let mut out = format!("{head}Content-Type: multipart/mixed; boundary=\"enlace-test-boundary\"\n\n");
    out += &format!("--enlace-test-boundary\nContent-Type: text/plain; charset=utf-8\n\n{text}\n");
    for a in attachments {
        let encoded = STANDARD.encode(a.bytes);
        let lines: Vec<&str> = encoded.as_bytes().chunks(76).map(|c| std::str::from_utf8(c).expect("base64 is ASCII")).collect();
        out += &format!(
            "--enlace-test-boundary\nContent-Type: {}; name=\"{}\"\nContent-Disposition: attachment; filename=\"{}\"\nContent-Transfer-Encoding: base64\n\n{}\n",
            a.content_type,
            a.name,
            a.name,
            lines.join("\n")
        );
    }
    out + "--enlace-test-boundary--\n"
}
