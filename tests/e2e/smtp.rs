//! Email through a real SMTP server: aiosmtpd (Python), started here on 127.0.0.1 with
//! STARTTLS required (a certificate from a test authority made with `openssl` at test
//! time) and AUTH required. Messages land in a Maildir, and are read back with Python's
//! own MIME parser. Also: connections through the API and the CLI, end to end.
//!
//! aiosmtpd must be installed (`.ci/run` installs it): a test that cannot find it fails
//! and says how to install it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use base64::Engine as _;
use enlace_store::RunStatus;
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::*;

pub const USER: &str = "hub@example.com";
pub const PASSWORD: &str = "s3cret-Pa55word";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/fixtures").join(name)
}

/// A Python interpreter that has aiosmtpd: `ENLACE_TEST_PYTHON`, else `python3`, else
/// `/usr/bin/python3` (where Debian's python3-aiosmtpd lands).
fn python() -> String {
    let candidates: Vec<String> =
        std::env::var("ENLACE_TEST_PYTHON").into_iter().chain(["python3".to_string(), "/usr/bin/python3".to_string()]).collect();
    for py in &candidates {
        let ok = Command::new(py).args(["-c", "import aiosmtpd"]).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
        if ok {
            return py.clone();
        }
    }
    panic!(
        "the SMTP tests need aiosmtpd, a real SMTP server, and none of {candidates:?} has it: install it with \
         `python3 -m pip install aiosmtpd==1.4.6` or `apt-get install -y python3-aiosmtpd` (.ci/run does this), \
         or point ENLACE_TEST_PYTHON at a Python that has it"
    );
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").current_dir(dir).args(args).output().unwrap_or_else(|e| {
        panic!("the SMTP tests make their TLS certificates with `openssl`, which could not run ({e}): install it with `apt-get install -y openssl`")
    });
    assert!(out.status.success(), "openssl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// A test certificate authority and a server certificate it signed for `localhost` (not
/// for 127.0.0.1). Returns the authority's certificate (PEM).
fn make_certificates(dir: &Path) -> String {
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=DNS:localhost\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=Enlace Test CA"]);
    openssl(dir, &ca);
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend(["-keyout", "key.pem", "-out", "leaf.csr", "-subj", "/CN=localhost"]);
    openssl(dir, &csr);
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "cert.pem",
            "-days",
            "2",
            "-extfile",
            "leaf.ext",
        ],
    );
    std::fs::read_to_string(dir.join("ca.pem")).unwrap()
}

/// aiosmtpd on 127.0.0.1 with STARTTLS and AUTH required; killed when dropped.
pub struct SmtpServer {
    pub port: u16,
    pub maildir: PathBuf,
    pub ca_pem: String,
    dir: PathBuf,
    child: Child,
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl SmtpServer {
    /// STARTTLS required, then AUTH required.
    pub async fn start() -> SmtpServer {
        tokio::task::spawn_blocking(|| Self::start_blocking(false)).await.unwrap()
    }

    /// TLS from the first byte (port 465 style), then AUTH required.
    pub async fn start_implicit_tls() -> SmtpServer {
        tokio::task::spawn_blocking(|| Self::start_blocking(true)).await.unwrap()
    }

    fn start_blocking(implicit_tls: bool) -> SmtpServer {
        let py = python();
        let dir = temp_dir("smtp");
        let ca_pem = make_certificates(&dir);
        let maildir = dir.join("maildir");
        let port = free_port();
        let mut child = Command::new(py)
            .arg(fixture("smtp_server.py"))
            .args(["--port", &port.to_string(), "--maildir"])
            .arg(&maildir)
            .arg("--cert")
            .arg(dir.join("cert.pem"))
            .arg("--key")
            .arg(dir.join("key.pem"))
            .args(["--user", USER, "--password", PASSWORD])
            .args(implicit_tls.then_some("--implicit-tls"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the SMTP server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        if line.trim() != "ready" {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("the SMTP server did not start: {}", String::from_utf8_lossy(&out.stderr));
        }
        SmtpServer { port, maildir, ca_pem, dir, child }
    }

    /// SMTP credentials for this server (`password` as given).
    pub fn credentials(&self, password: &str) -> Value {
        json!({"kind": "smtp", "host": "localhost", "port": self.port, "username": USER, "password": password, "tls": "starttls", "ca_certificate": self.ca_pem})
    }

    pub fn messages(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> =
            std::fs::read_dir(self.maildir.join("new")).map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect()).unwrap_or_default();
        files.sort();
        files
    }
}

/// A received message as a mail program sees it: `{headers: {name: [values]}, parts: [...]}`.
fn read_mail(path: &Path) -> Value {
    let out = Command::new(python()).arg(fixture("read_mail.py")).arg(path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn header<'a>(mail: &'a Value, name: &str) -> Vec<&'a str> {
    mail["headers"][name].as_array().map(|v| v.iter().filter_map(Value::as_str).collect()).unwrap_or_default()
}

fn recipe(connection: &str) -> String {
    format!(
        r#"
id: welcome-{connection}
trigger:
  app: webhook
  event: catch
  with:
    path: welcome-{connection}
steps:
  - id: mail
    app: smtp
    action: send_email
    connection: {connection}
    # Not marketing: the send policy lets it go without a recorded consent.
    transactional: true
    with:
      from: "Example News <news@example.com>"
      to: "{{{{trigger.body.name}}}} <{{{{trigger.body.email}}}}>"
      cc: ["team@example.com"]
      bcc: "audit@example.com"
      reply_to: "Support <support@example.com>"
      subject: "Welcome, {{{{trigger.body.name}}}}"
      text: "Hi {{{{trigger.body.name}}}}, your plan is {{{{trigger.body.plan}}}}."
      html: "<p>Hi <b>{{{{trigger.body.name}}}}</b>, your plan is {{{{trigger.body.plan}}}}.</p>"
      headers:
        X-Campaign: spring-2026
      attachments:
        - name: report.bin
          content_type: application/octet-stream
          content_base64: "{{{{trigger.body.file}}}}"
        - name: notes.txt
          content_text: "line one"
"#
    )
}

async fn create_connection(s: &TestServer, id: &str, credentials: Value) -> reqwest::Response {
    s.api(Method::POST, "/api/v1/connections")
        .json(&json!({"id": id, "app": "smtp", "name": "Newsletter mailbox", "credentials": credentials}))
        .send()
        .await
        .unwrap()
}

async fn install_recipe(s: &TestServer, yaml: String) {
    let r = s.api(Method::POST, "/api/v1/recipes").header("content-type", "application/yaml").body(yaml).send().await.unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
}

async fn fire(s: &TestServer, path: &str, body: Value) -> String {
    let r: Value = s.http.post(s.url(&format!("/hooks/{path}"))).json(&body).send().await.unwrap().json().await.unwrap();
    r["run_id"].as_str().unwrap_or_else(|| panic!("no run id: {r}")).to_string()
}

#[tokio::test]
async fn a_recipe_sends_over_starttls_with_auth_and_the_message_arrives_whole() {
    let smtp = SmtpServer::start().await;
    let s = TestServer::start().await;
    assert_eq!(create_connection(&s, "newsletter", smtp.credentials(PASSWORD)).await.status(), 201);
    install_recipe(&s, recipe("newsletter")).await;
    let file: Vec<u8> = vec![0, 1, 2, 3, 0xff, 0xfe, b'\r', b'\n', 0x80];
    let b64 = base64::engine::general_purpose::STANDARD.encode(&file);
    let run_id = fire(&s, "welcome-newsletter", json!({"name": "Ada", "email": "ada@example.org", "plan": "pro", "file": b64})).await;
    status(&s.store, &run_id, RunStatus::Succeeded).await;

    let detail: Value = s.api(Method::GET, &format!("/api/v1/runs/{run_id}")).send().await.unwrap().json().await.unwrap();
    let out = &detail["steps"][0]["output"];
    assert_eq!(out["accepted"], json!(["ada@example.org", "team@example.com", "audit@example.com"]), "{detail}");
    assert!(out["server_response"].as_str().unwrap().starts_with("250"), "{out}");
    assert!(!detail.to_string().contains(PASSWORD), "the run history never holds the password");

    let files = smtp.messages();
    assert_eq!(files.len(), 1, "one message delivered: {files:?}");
    let mail = read_mail(&files[0]);
    assert_eq!(header(&mail, "from"), ["Example News <news@example.com>"], "{mail}");
    assert_eq!(header(&mail, "to"), ["Ada <ada@example.org>"]);
    assert_eq!(header(&mail, "cc"), ["team@example.com"]);
    assert!(header(&mail, "bcc").is_empty(), "no Bcc header reaches recipients: {mail}");
    assert_eq!(header(&mail, "reply-to"), ["Support <support@example.com>"]);
    assert_eq!(header(&mail, "subject"), ["Welcome, Ada"]);
    assert_eq!(header(&mail, "x-campaign"), ["spring-2026"]);
    assert_eq!(header(&mail, "message-id"), [out["message_id"].as_str().unwrap()]);
    assert!(out["message_id"].as_str().unwrap().ends_with("@example.com>"), "{out}");
    // aiosmtpd's Mailbox records the envelope: the bcc recipient was one.
    let rcpt = header(&mail, "x-rcptto").join(",");
    assert!(rcpt.contains("audit@example.com") && rcpt.contains("team@example.com"), "{rcpt}");
    assert_eq!(header(&mail, "x-mailfrom"), ["news@example.com"]);

    let parts = mail["parts"].as_array().unwrap();
    let kinds: Vec<&str> = parts.iter().map(|p| p["multipart"].as_str().or(p["content_type"].as_str()).unwrap()).collect();
    assert_eq!(
        kinds,
        ["multipart/mixed", "multipart/alternative", "text/plain", "text/html", "application/octet-stream", "text/plain"],
        "{mail}"
    );
    let decoded = |p: &Value| base64::engine::general_purpose::STANDARD.decode(p["base64"].as_str().unwrap()).unwrap();
    assert_eq!(String::from_utf8(decoded(&parts[2])).unwrap().trim_end(), "Hi Ada, your plan is pro.");
    assert_eq!(String::from_utf8(decoded(&parts[3])).unwrap().trim_end(), "<p>Hi <b>Ada</b>, your plan is pro.</p>");
    assert_eq!(parts[4]["filename"], "report.bin");
    assert_eq!(parts[4]["disposition"], "attachment");
    assert_eq!(decoded(&parts[4]), file, "the attachment's bytes arrive unchanged");
    assert_eq!(parts[5]["filename"], "notes.txt");
    assert_eq!(decoded(&parts[5]), b"line one");
}

#[tokio::test]
async fn a_wrong_password_holds_the_run_until_the_connection_is_repaired() {
    let smtp = SmtpServer::start().await;
    let s = TestServer::start().await;
    assert_eq!(create_connection(&s, "wrongpw", smtp.credentials("not-the-password")).await.status(), 201);
    install_recipe(&s, recipe("wrongpw")).await;
    let run_id = fire(&s, "welcome-wrongpw", json!({"name": "Bo", "email": "bo@example.org", "plan": "free", "file": "AA=="})).await;
    // Refused credentials: the run waits for the connection instead of failing.
    status(&s.store, &run_id, RunStatus::Waiting).await;
    let detail: Value = s.api(Method::GET, &format!("/api/v1/runs/{run_id}")).send().await.unwrap().json().await.unwrap();
    let step = &detail["steps"][0];
    assert_eq!(step["status"], "waiting", "{step}");
    assert_eq!(step["attempts"], 1, "an auth failure is not retried blindly: {step}");
    assert_eq!(step["error"]["class"], "auth");
    let message = step["error"]["message"].as_str().unwrap();
    assert!(message.contains("535"), "{message}");
    assert!(message.contains("check the connection's username and password"), "{message}");
    assert!(step["error"]["hint"].as_str().unwrap().contains("PUT /api/v1/connections/wrongpw/credentials"), "{step}");
    assert!(!detail.to_string().contains("not-the-password"), "{detail}");
    let conn: Value = s.api(Method::GET, "/api/v1/connections/wrongpw").send().await.unwrap().json().await.unwrap();
    assert_eq!(conn["status"], "needs_reconnect", "{conn}");
    assert!(smtp.messages().is_empty(), "nothing was delivered");

    // A second run with the same connection waits at once, without trying the server again.
    let second = fire(&s, "welcome-wrongpw", json!({"name": "Cy", "email": "cy@example.org", "plan": "free", "file": "AA=="})).await;
    status(&s.store, &second, RunStatus::Waiting).await;

    // Repaired: both runs resume from their step and the messages arrive, once each.
    let r = s
        .api(Method::PUT, "/api/v1/connections/wrongpw/credentials")
        .json(&json!({"credentials": smtp.credentials(PASSWORD)}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    status(&s.store, &run_id, RunStatus::Succeeded).await;
    status(&s.store, &second, RunStatus::Succeeded).await;
    assert_eq!(smtp.messages().len(), 2);
}

#[tokio::test]
async fn connections_through_the_api_create_list_rename_test_delete_and_never_show_a_secret() {
    let smtp = SmtpServer::start().await;
    let s = TestServer::start().await;
    let mut answers: Vec<String> = vec![];

    // Credentials are checked against the app's kind, naming the field.
    let r = create_connection(&s, "mail", json!({"kind": "smtp", "host": "localhost", "username": USER})).await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "invalid_request");
    assert_eq!(body["path"], "credentials.password", "{body}");
    let r = create_connection(&s, "mail", json!({"kind": "bearer", "token": PASSWORD})).await;
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["path"], "credentials.kind", "{body}");
    assert!(body["message"].as_str().unwrap().contains("this app takes `smtp` credentials, not `bearer`"), "{body}");
    answers.push(body.to_string());

    let r = create_connection(&s, "mail", smtp.credentials(PASSWORD)).await;
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    assert_eq!(created["status"], "untested");
    answers.push(created.to_string());
    assert_eq!(create_connection(&s, "mail", smtp.credentials(PASSWORD)).await.status(), 409);

    let closed = free_port();
    let r = create_connection(
        &s,
        "closed",
        json!({"kind": "smtp", "host": "127.0.0.1", "port": closed, "username": USER, "password": PASSWORD}),
    )
    .await;
    assert_eq!(r.status(), 201);
    let r = create_connection(
        &s,
        "plain",
        json!({"kind": "smtp", "host": "127.0.0.1", "port": smtp.port, "username": USER, "password": PASSWORD, "tls": "none"}),
    )
    .await;
    assert_eq!(r.status(), 201);

    // Test: ok against the real server, recorded on the connection.
    let r = s.api(Method::POST, "/api/v1/connections/mail/test").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let t: Value = r.json().await.unwrap();
    assert_eq!(t["status"], "ok", "{t}");
    assert_eq!(t["message"], format!("connected to localhost:{} over STARTTLS, logged in as {USER}", smtp.port));
    answers.push(t.to_string());
    // A closed port: an error, transient, recorded too.
    let t: Value = s.api(Method::POST, "/api/v1/connections/closed/test").send().await.unwrap().json().await.unwrap();
    assert_eq!(t["status"], "error", "{t}");
    assert_eq!(t["class"], "transient");
    assert!(t["message"].as_str().unwrap().contains(&format!("could not connect to 127.0.0.1:{closed}")), "{t}");
    answers.push(t.to_string());
    // No encryption against a server that wants it: the server offers no login, and the
    // message says what to change.
    let t: Value = s.api(Method::POST, "/api/v1/connections/plain/test").send().await.unwrap().json().await.unwrap();
    assert_eq!(t["status"], "error", "{t}");
    assert!(t["message"].as_str().unwrap().contains("set the connection's tls to `starttls` or `tls`"), "{t}");
    assert!(smtp.messages().is_empty(), "a test sends nothing");

    // Rename: the label changes, the id stays.
    let r = s.api(Method::PATCH, "/api/v1/connections/mail").json(&json!({"name": "Marketing mailbox"})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let renamed: Value = r.json().await.unwrap();
    assert_eq!((renamed["id"].as_str(), renamed["name"].as_str()), (Some("mail"), Some("Marketing mailbox")));
    answers.push(renamed.to_string());
    let r = s.api(Method::PATCH, "/api/v1/connections/mail").json(&json!({"name": " "})).send().await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["path"], "name");
    let r = s.api(Method::PATCH, "/api/v1/connections/nope").json(&json!({"name": "x"})).send().await.unwrap();
    assert_eq!(r.status(), 404);

    let listed = s.api(Method::GET, "/api/v1/connections").send().await.unwrap().text().await.unwrap();
    let list: Value = serde_json::from_str(&listed).unwrap();
    let by_id = |id: &str| list.as_array().unwrap().iter().find(|c| c["id"] == id).cloned().unwrap();
    assert_eq!(by_id("mail")["status"], "ok");
    assert_eq!(by_id("mail")["name"], "Marketing mailbox");
    assert!(by_id("mail")["tested_at"].is_string());
    assert_eq!(by_id("closed")["status"], "error");
    assert!(by_id("closed")["status_message"].as_str().unwrap().contains("could not connect"));
    answers.push(listed);
    let shown = s.api(Method::GET, "/api/v1/connections/mail").send().await.unwrap().text().await.unwrap();
    answers.push(shown);

    // The http app has no connection test: it says so and records nothing.
    s.api(Method::POST, "/api/v1/connections")
        .json(&json!({"id": "crm", "app": "http", "credentials": {"kind": "bearer", "token": PASSWORD}}))
        .send()
        .await
        .unwrap();
    let t: Value = s.api(Method::POST, "/api/v1/connections/crm/test").send().await.unwrap().json().await.unwrap();
    assert_eq!(t["status"], "untested");
    assert!(t["message"].as_str().unwrap().contains("the app `http` has no connection test"), "{t}");

    // Delete.
    assert_eq!(s.api(Method::DELETE, "/api/v1/connections/mail").send().await.unwrap().status(), 204);
    assert_eq!(s.api(Method::GET, "/api/v1/connections/mail").send().await.unwrap().status(), 404);
    assert_eq!(s.api(Method::POST, "/api/v1/connections/mail/test").send().await.unwrap().status(), 404);

    for a in &answers {
        assert!(!a.contains(PASSWORD), "an API answer shows the password: {a}");
        assert!(!a.contains("BEGIN CERTIFICATE"), "an API answer shows the credentials: {a}");
    }
    let doc: Value = s.http.get(s.url("/api/v1/openapi.json")).send().await.unwrap().json().await.unwrap();
    for p in ["/api/v1/connections", "/api/v1/connections/{id}", "/api/v1/connections/{id}/test"] {
        assert!(doc["paths"].get(p).is_some(), "{p} is not in the OpenAPI document");
    }
    assert!(doc["paths"]["/api/v1/connections/{id}"].get("patch").is_some());
}

#[tokio::test]
async fn implicit_tls_works_and_certificates_are_checked() {
    let smtp = SmtpServer::start_implicit_tls().await;
    let s = TestServer::start().await;
    let mut creds = smtp.credentials(PASSWORD);
    creds["tls"] = json!("tls");
    assert_eq!(create_connection(&s, "smtps", creds.clone()).await.status(), 201);
    let t: Value = s.api(Method::POST, "/api/v1/connections/smtps/test").send().await.unwrap().json().await.unwrap();
    assert_eq!(t["status"], "ok", "{t}");
    assert_eq!(t["message"], format!("connected to localhost:{} over TLS, logged in as {USER}", smtp.port));

    // The server's certificate comes from the test authority: without it, refused.
    creds.as_object_mut().unwrap().remove("ca_certificate");
    assert_eq!(create_connection(&s, "untrusted", creds.clone()).await.status(), 201);
    let t: Value = s.api(Method::POST, "/api/v1/connections/untrusted/test").send().await.unwrap().json().await.unwrap();
    assert_eq!((t["status"].as_str(), t["class"].as_str()), (Some("error"), Some("permanent")), "{t}");
    assert!(t["message"].as_str().unwrap().contains("UnknownIssuer"), "{t}");
    assert!(t["message"].as_str().unwrap().contains("add that certificate to the connection as `ca_certificate`"), "{t}");
    // The same server by another name than its certificate's: refused too, even though the
    // authority is trusted.
    creds["ca_certificate"] = json!(smtp.ca_pem);
    creds["host"] = json!("127.0.0.1");
    assert_eq!(create_connection(&s, "othername", creds).await.status(), 201);
    let t: Value = s.api(Method::POST, "/api/v1/connections/othername/test").send().await.unwrap().json().await.unwrap();
    assert_eq!((t["status"].as_str(), t["class"].as_str()), (Some("error"), Some("permanent")), "{t}");
    assert!(t["message"].as_str().unwrap().contains("NotValidForName"), "{t}");
    assert!(smtp.messages().is_empty());
}

/// Runs the CLI with `stdin` piped in; returns (success, stdout, stderr).

#[tokio::test]
async fn connections_through_the_cli_create_list_rename_test_delete_and_never_show_a_secret() {
    let smtp = SmtpServer::start().await;
    let data = temp_dir("cli-connections");
    let ca = data.join("ca.pem");
    std::fs::write(&ca, &smtp.ca_pem).unwrap();
    let port = smtp.port.to_string();
    let ca_arg = ca.to_str().unwrap().to_string();
    tokio::task::spawn_blocking(move || {
        let mut outputs: Vec<String> = vec![];
        for sub in ["create", "test", "list", "show", "rename", "delete"] {
            let (ok, out, err) = cli(&data, &["connections", sub, "--help"], "", false);
            assert!(ok && out.contains("Usage: enlace connections"), "{sub} --help: {out}{err}");
        }
        let (_, help, _) = cli(&data, &["connections", "create", "--help"], "", false);
        assert!(help.contains("standard input") && help.contains("--credentials-file"), "{help}");

        // The password on standard input; every other field a flag.
        let create = [
            "connections",
            "create",
            "mail",
            "--app",
            "smtp",
            "--name",
            "Newsletter",
            "--host",
            "localhost",
            "--port",
            &port,
            "--username",
            USER,
            "--tls",
            "starttls",
            "--ca-certificate",
            &ca_arg,
        ];
        let (ok, out, err) = cli(&data, &create, &format!("{PASSWORD}\n"), false);
        assert!(ok, "{out}{err}");
        assert!(out.contains("connection `mail` created for the app `smtp`"), "{out}");
        outputs.extend([out, err]);
        // No password given: refused, saying how to give it.
        let (ok, _, err) =
            cli(&data, &["connections", "create", "other", "--app", "smtp", "--host", "localhost", "--username", USER], "", false);
        assert!(!ok && err.contains("pipe it in on standard input"), "{err}");
        // A field missing: named.
        let (ok, _, err) = cli(&data, &["connections", "create", "other", "--app", "smtp", "--port", "25"], "", false);
        assert!(!ok && err.contains("credentials.host: is required"), "{err}");
        // A credentials file, here on standard input.
        let closed = free_port().to_string();
        let file =
            json!({"kind": "smtp", "host": "127.0.0.1", "port": closed.parse::<u16>().unwrap(), "username": USER, "password": PASSWORD})
                .to_string();
        let (ok, out, err) = cli(&data, &["connections", "create", "closed", "--app", "smtp", "--credentials-file", "-"], &file, false);
        assert!(ok, "{out}{err}");
        outputs.extend([out, err]);

        // Without ENLACE_ALLOW_PRIVATE_NETWORKS the guard refuses loopback.
        let (ok, out, err) = cli(&data, &["connections", "test", "mail"], "", false);
        assert!(!ok && err.contains("ENLACE_ALLOW_PRIVATE_NETWORKS=true"), "{out}{err}");
        outputs.extend([out, err]);
        let (ok, out, err) = cli(&data, &["connections", "test", "mail"], "", true);
        assert!(ok, "{out}{err}");
        assert_eq!(out.trim(), format!("ok: connected to localhost:{port} over STARTTLS, logged in as {USER}"));
        outputs.extend([out, err]);
        let (ok, out, err) = cli(&data, &["connections", "test", "closed"], "", true);
        assert!(!ok && err.starts_with("error (transient): ") && err.contains("could not connect"), "{out}{err}");
        outputs.extend([out, err]);

        let (ok, out, err) = cli(&data, &["connections", "rename", "mail", "Marketing mailbox"], "", false);
        assert!(ok && out.contains("connection `mail` is now named `Marketing mailbox`"), "{out}{err}");
        let (ok, out, err) = cli(&data, &["connections", "list"], "", false);
        assert!(ok, "{err}");
        let line = out.lines().find(|l| l.starts_with("mail ")).unwrap_or_else(|| panic!("{out}"));
        assert!(line.contains("smtp") && line.contains("ok") && line.contains("Marketing mailbox"), "{line}");
        outputs.extend([out, err]);
        let (ok, out, err) = cli(&data, &["connections", "list", "--json"], "", false);
        assert!(ok, "{err}");
        let list: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(list.as_array().unwrap().len(), 2);
        outputs.extend([out, err]);
        let (ok, out, err) = cli(&data, &["connections", "show", "mail"], "", false);
        assert!(ok, "{err}");
        let shown: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            (shown["id"].as_str(), shown["status"].as_str(), shown["name"].as_str()),
            (Some("mail"), Some("ok"), Some("Marketing mailbox"))
        );
        outputs.extend([out, err]);

        let (ok, out, _) = cli(&data, &["connections", "delete", "mail"], "", false);
        assert!(ok && out.contains("connection `mail` deleted"), "{out}");
        let (ok, _, err) = cli(&data, &["connections", "show", "mail"], "", false);
        assert!(!ok && err.contains("no connection `mail`"), "{err}");

        for o in &outputs {
            assert!(!o.contains(PASSWORD), "the CLI printed the password: {o}");
            assert!(!o.contains("BEGIN CERTIFICATE"), "the CLI printed the credentials: {o}");
        }
        // Encrypted at rest: the password is nowhere in the database file.
        for entry in std::fs::read_dir(&data).unwrap() {
            let path = entry.unwrap().path();
            if path.file_name().unwrap().to_string_lossy().starts_with("enlace.db") {
                let bytes = std::fs::read(&path).unwrap();
                assert!(!bytes.windows(PASSWORD.len()).any(|w| w == PASSWORD.as_bytes()), "{} holds the password in clear", path.display());
            }
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_marketing_email_carries_a_one_click_unsubscribe_that_withdraws_consent() {
    let smtp = SmtpServer::start().await;
    let s = TestServer::start().await;
    assert_eq!(create_connection(&s, "news", smtp.credentials(PASSWORD)).await.status(), 201);
    let yaml = r#"
id: promo
trigger: {app: webhook, event: catch, with: {path: promo}}
steps:
  - id: mail
    app: smtp
    action: send_email
    connection: news
    # The address is no contact yet (the unsubscribe makes it one): the send policy lets a
    # transactional message go without a recorded consent.
    transactional: true
    with:
      from: "Example News <news@example.com>"
      to: "{{trigger.body.email}}"
      subject: "Spring offers"
      text: "New toys for your dog. Unsubscribe: %unsubscribe_url%"
      html: "<p>New toys.</p><p><a href=\"%unsubscribe_url%\">Unsubscribe</a></p>"
      unsubscribe: marketing
"#;
    install_recipe(&s, yaml.to_string()).await;
    let run_id = fire(&s, "promo", json!({"email": "Ada@Example.org"})).await;
    status(&s.store, &run_id, RunStatus::Succeeded).await;
    let mail = read_mail(&smtp.messages()[0]);
    let header_value = header(&mail, "list-unsubscribe")[0].to_string();
    let url = header_value.trim_start_matches('<').trim_end_matches('>').to_string();
    assert!(url.starts_with(&s.url("/u/")), "{mail}");
    assert_eq!(header(&mail, "list-unsubscribe-post"), ["List-Unsubscribe=One-Click"]);
    let parts = mail["parts"].as_array().unwrap();
    let decoded = |p: &Value| {
        p["base64"]
            .as_str()
            .map(|b| String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b).unwrap()).unwrap())
            .unwrap_or_default()
    };
    assert!(parts.iter().any(|p| decoded(p).contains(&format!("Unsubscribe: {url}"))), "the text carries the same link: {mail}");
    assert!(!mail.to_string().contains("%unsubscribe_url%"), "{mail}");

    let consents = |s: &TestServer| {
        let s = s.api(Method::GET, "/api/v1/contacts?email=ada@example.org");
        async move {
            let page: Value = s.send().await.unwrap().json().await.unwrap();
            page["contacts"].as_array().cloned().unwrap_or_default()
        }
    };
    // Opening the link (a person, or a scanner) only shows the button.
    let page = s.http.get(&url).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("method=\"post\""));
    assert!(consents(&s).await.is_empty(), "a GET changes nothing");
    // A tampered link is refused and changes nothing.
    let bad = s.http.post(format!("{url}x")).body("List-Unsubscribe=One-Click").send().await.unwrap();
    assert_eq!(bad.status(), 400);
    assert!(consents(&s).await.is_empty());
    // The one-click POST a mail program sends (RFC 8058).
    let r = s
        .http
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let found = consents(&s).await;
    assert_eq!(found.len(), 1, "the address became a contact: {found:?}");
    let id = found[0]["id"].as_str().unwrap();
    let detail: Value = s.api(Method::GET, &format!("/api/v1/contacts/{id}")).send().await.unwrap().json().await.unwrap();
    let c = detail["consents"].as_array().unwrap().iter().find(|c| c["purpose"] == "marketing" && c["channel"] == "email").cloned();
    let c = c.unwrap_or_else(|| panic!("no marketing email consent: {detail}"));
    assert_eq!(c["status"], "withdrawn", "{detail}");
    assert!(c["evidence"]["source"].as_str().unwrap().contains("RFC 8058"), "{c}");

    // An unsubscribe link needs exactly one recipient.
    let yaml2 = yaml
        .replace("id: promo", "id: promo2")
        .replace("path: promo}", "path: promo2}")
        .replace("to: \"{{trigger.body.email}}\"", "to: [\"{{trigger.body.email}}\", \"bo@example.org\"]");
    install_recipe(&s, yaml2).await;
    // (Not to Ada: she withdrew, so the send policy would block the message before the
    // connector sees it.)
    let run_id = fire(&s, "promo2", json!({"email": "cy@example.org"})).await;
    status(&s.store, &run_id, RunStatus::Failed).await;
    let detail: Value = s.api(Method::GET, &format!("/api/v1/runs/{run_id}")).send().await.unwrap().json().await.unwrap();
    assert_eq!(detail["error"]["path"], "to", "{detail}");
}

#[tokio::test]
async fn a_tracked_email_records_its_open_and_click_on_the_contact() {
    let smtp = SmtpServer::start().await;
    let s = TestServer::start().await;
    assert_eq!(create_connection(&s, "news", smtp.credentials(PASSWORD)).await.status(), 201);
    let c: Value =
        s.api(Method::POST, "/api/v1/contacts").json(&json!({"email": "ada@example.org"})).send().await.unwrap().json().await.unwrap();
    let id = c["contact"]["id"].as_str().unwrap().to_string();
    // A marketing email needs the contact's consent (the send policy).
    let consent = enlace_core::contacts::NewConsent {
        purpose: "marketing".into(),
        channel: "email".into(),
        status: enlace_store::ConsentStatus::Granted,
        evidence: enlace_core::contacts::Evidence {
            source: "signup form".into(),
            ip: None,
            text: None,
            recorded_at: 0,
            run_id: None,
            details: Default::default(),
        },
    };
    let op = enlace_core::contacts::ContactOp::RecordConsent { key: enlace_store::ContactKey::Id(id.clone()), consent };
    s.runner.contacts().apply(Default::default(), op).await.unwrap();
    let yaml = r#"
id: promo
trigger: {app: webhook, event: catch, with: {path: promo}}
steps:
  - id: mail
    app: smtp
    action: send_email
    connection: news
    with:
      from: "Example News <news@example.com>"
      to: "{{trigger.body.email}}"
      subject: "Spring offers"
      html: "<html><body><p><a href=\"https://shop.example.com/toys?c=spring&amp;x=1\">New toys</a></p></body></html>"
      track: true
"#;
    install_recipe(&s, yaml.to_string()).await;
    let run_id = fire(&s, "promo", json!({"email": "ada@example.org"})).await;
    status(&s.store, &run_id, RunStatus::Succeeded).await;
    let mail = read_mail(&smtp.messages()[0]);
    let html = mail["parts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["base64"].as_str())
        .map(|b| String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b).unwrap()).unwrap())
        .find(|t| t.contains("New toys"))
        .unwrap_or_else(|| mail.to_string());
    let attr = |name: &str| {
        let start = html.find(&format!("{name}=\"")).unwrap_or_else(|| panic!("no {name} in {html}")) + name.len() + 2;
        html[start..start + html[start..].find('"').unwrap()].replace("&amp;", "&")
    };
    let (click, pixel) = (attr("href"), attr("src"));
    assert!(click.starts_with(&s.url("/c/")) && pixel.starts_with(&s.url("/o/")), "{html}");
    assert!(!html.contains("https://shop.example.com/toys"), "the address itself is only inside the signed link: {html}");
    assert_eq!(s.http.get(&pixel).send().await.unwrap().status(), 200);
    let no_redirect = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let r = no_redirect.get(&click).send().await.unwrap();
    assert_eq!(r.status(), 302);
    assert!(r.headers()["location"].to_str().unwrap().starts_with("https://shop.example.com/toys?c=spring&x=1&enl="), "{:?}", r.headers());
    let tl: Value = s
        .api(Method::GET, &format!("/api/v1/contacts/{id}/timeline?kind=email_opened,email_clicked"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kinds: Vec<&str> = tl["events"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["email_clicked", "email_opened"], "{tl}");
    assert_eq!(tl["events"][0]["data"]["url"], "https://shop.example.com/toys?c=spring&x=1");
}
