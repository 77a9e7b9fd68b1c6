//! Contract tests: the requests the `twilio`, `slack`, `sendgrid`, `google_drive`, `x` and `mastodon` connectors send are
//! checked against the vendors' own API descriptions (`../shared/vendor-specs/`, read in place) by Prism
//! (`@stoplight/prism-cli@5.14.2`), a mock server that validates each request against the
//! description and answers from its examples. A recipe runs through the real server and
//! runner with both connectors pointed at Prism (through a recording proxy that keeps what
//! Prism said of each request); and deliberately wrong requests, built the way the
//! connectors build theirs, are sent to show that Prism does refuse what breaks the
//! description.
//!
//! Prism must be installed (`.ci/run` installs it): the tests read its path from
//! `ENLACE_PRISM`, or look in `~/.cache/enlace-prism`; without it they fail and say how to
//! install it. Each description's Prism starts once per test binary (about 12 s) on
//! 127.0.0.1 and stops when the binary exits.

use std::io::Read as _;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method as AxumMethod, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use enlace_core::{Credentials, Secret};
use enlace_store::RunStatus;
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::*;

const ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";
const AUTH_TOKEN: &str = "twilio-auth-token-0123";
const SLACK_TOKEN: &str = "xoxb-1111-2222-contract";
const SENDGRID_KEY: &str = "SG.contract-key.0123456789";

/// A Prism mock server for one API description.
struct Prism {
    base: String,
    // Held for the life of the test binary: when the binary exits, the pipe closes and the
    // wrapper shell stops Prism.
    _stdin: Mutex<ChildStdin>,
    _child: Mutex<Child>,
}

fn prism_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("ENLACE_PRISM").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/root"));
    home.join(".cache/enlace-prism/node_modules/.bin/prism")
}

/// The vendors' API descriptions: `ENLACE_VENDOR_SPECS`, else `../shared/vendor-specs` next
/// to the repository, else the workplace's copy at `/work/shared/vendor-specs` (a checkout
/// elsewhere, such as CI's, still finds them). They are read in place, never copied.
fn spec(relative: &str) -> PathBuf {
    let candidates: Vec<PathBuf> = std::env::var_os("ENLACE_VENDOR_SPECS")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .into_iter()
        .chain([Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/vendor-specs"), PathBuf::from("/work/shared/vendor-specs")])
        .collect();
    let found = candidates.iter().map(|d| d.join(relative)).find(|p| p.exists());
    found.unwrap_or_else(|| {
        panic!(
            "the vendor API description {relative} is missing; the contract tests read it from ENLACE_VENDOR_SPECS or ../shared/vendor-specs/ next to the repository (looked in: {candidates:?})"
        )
    })
}

impl Prism {
    /// Starts Prism on 127.0.0.1 with the description and waits until it listens.
    fn start(spec_path: &Path) -> Prism {
        let bin = prism_bin();
        assert!(
            bin.exists(),
            "Prism is not installed at {}. Install it with `npm install --prefix \"$HOME/.cache/enlace-prism\" @stoplight/prism-cli@5.14.2` \
             (what .ci/run does), or set ENLACE_PRISM to the path of its `prism` executable",
            bin.display()
        );
        let port = free_port();
        let log = std::env::temp_dir().join(format!("enlace-prism-{port}.log"));
        // The shell runs Prism in the background and stops it when its stdin (held by this
        // process) closes, so no Prism outlives the test binary.
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(r#"log="$1"; shift; "$@" >"$log" 2>&1 </dev/null & p=$!; read _ignored; kill "$p" 2>/dev/null"#)
            .arg("sh")
            .arg(&log)
            .arg(&bin)
            .args(["mock", "--host", "127.0.0.1", "--port", &port.to_string()])
            .arg(spec_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("could not start Prism ({}): {e}", bin.display()));
        let stdin = child.stdin.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(90);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        loop {
            let read_log = || {
                let mut text = String::new();
                if let Ok(mut f) = std::fs::File::open(&log) {
                    let _ = f.read_to_string(&mut text);
                }
                text
            };
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() && read_log().contains("Prism is listening") {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("Prism exited ({status}) before listening:\n{}", read_log());
            }
            assert!(Instant::now() < deadline, "Prism did not listen on {addr} within 90 s:\n{}", read_log());
            std::thread::sleep(Duration::from_millis(250));
        }
        Prism { base: format!("http://{addr}"), _stdin: Mutex::new(stdin), _child: Mutex::new(child) }
    }
}

fn twilio_prism() -> &'static Prism {
    static P: OnceLock<Prism> = OnceLock::new();
    P.get_or_init(|| Prism::start(&spec("twilio/twilio_api_v2010.json")))
}

fn slack_prism() -> &'static Prism {
    static P: OnceLock<Prism> = OnceLock::new();
    // The copy without the `token` header parameters real clients do not send (see the
    // vendor-specs README). Prism matches Swagger 2.0 routes without the `/api` base path.
    P.get_or_init(|| Prism::start(&spec("slack/slack_web_openapi_v2.prism.json")))
}

fn sendgrid_prism() -> &'static Prism {
    static P: OnceLock<Prism> = OnceLock::new();
    P.get_or_init(|| Prism::start(&spec("sendgrid/tsg_mail_v3.json")))
}

/// What Prism answered to one request that went through the proxy.
#[derive(Debug, Clone)]
struct Exchange {
    method: String,
    path: String,
    status: u16,
    violations: Option<String>,
    body: String,
}

/// The violations Prism found in a request (not those it reports about its own example
/// answers, which concern the description's quality): from the `sl-violations` header and
/// from a problem+json body's `validation`.
fn request_violations(ex: &Exchange) -> Vec<Value> {
    let mut out: Vec<Value> = ex
        .violations
        .as_deref()
        .and_then(|h| serde_json::from_str::<Vec<Value>>(h).ok())
        .unwrap_or_default()
        .into_iter()
        .filter(|v| v["location"][0] == "request")
        .collect();
    if let Ok(body) = serde_json::from_str::<Value>(&ex.body)
        && let Some(list) = body.get("validation").and_then(Value::as_array)
    {
        out.extend(list.iter().cloned());
    }
    out
}

/// A proxy on 127.0.0.1:0 in front of one Prism that records each exchange.
#[derive(Clone)]
struct Proxy {
    upstream: String,
    seen: Arc<Mutex<Vec<Exchange>>>,
    client: reqwest::Client,
    /// Answers given instead of Prism's to requests Prism accepted, by method and path
    /// (recorded vendor answers, where the connector reads values Prism only makes up).
    recorded: Option<fn(&str, &str) -> Option<Value>>,
}

async fn forward(State(p): State<Proxy>, method: AxumMethod, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let url = format!("{}{}", p.upstream, uri.path_and_query().map(|x| x.as_str()).unwrap_or("/"));
    let mut req = p.client.request(Method::from_bytes(method.as_str().as_bytes()).unwrap(), url).body(body);
    for (k, v) in &headers {
        if k != "host" && k != "content-length" {
            req = req.header(k.as_str(), v.as_bytes());
        }
    }
    let resp = req.send().await.expect("Prism answers");
    let status = resp.status().as_u16();
    let violations = resp.headers().get("sl-violations").and_then(|v| v.to_str().ok()).map(str::to_string);
    let content_type = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("application/json").to_string();
    let text = resp.text().await.unwrap();
    p.seen.lock().unwrap().push(Exchange {
        method: method.to_string(),
        path: uri.path().to_string(),
        status,
        violations,
        body: text.clone(),
    });
    if status < 300
        && let Some(recorded) = p.recorded.and_then(|r| r(method.as_str(), uri.path()))
    {
        return (StatusCode::from_u16(status).unwrap(), axum::Json(recorded)).into_response();
    }
    (StatusCode::from_u16(status).unwrap(), [("content-type", content_type)], text).into_response()
}

async fn proxy(prism: &Prism) -> (String, Arc<Mutex<Vec<Exchange>>>) {
    let p = Proxy { upstream: prism.base.clone(), seen: Arc::default(), client: client(), recorded: None };
    let seen = p.seen.clone();
    let app = Router::new().fallback(forward).with_state(p);
    let addr = serve_local(app).await;
    (format!("http://{addr}"), seen)
}

fn recipe() -> &'static str {
    r##"
id: signup-sms-and-slack
trigger:
  app: webhook
  event: catch
  with:
    path: signup
steps:
  - id: sms
    app: twilio
    action: send_sms
    connection: twilio-main
    transactional: true
    with:
      to: "{{trigger.body.phone}}"
      from: "+14155550100"
      body: "Hi {{trigger.body.name}}, welcome aboard! Reply STOP to opt out."
  - id: notify
    app: slack
    action: post_message
    connection: slack-main
    with:
      channel: "#marketing"
      text: "New signup {{trigger.body.name}}: SMS {{steps.sms.sid}} is {{steps.sms.status}}"
      blocks:
        - type: section
          text:
            type: mrkdwn
            text: "*New signup:* {{trigger.body.name}}"
      thread_ts: "1503435956.000247"
      unfurl_links: false
      unfurl_media: false
"##
}

#[tokio::test]
async fn a_recipe_sends_requests_that_twilio_and_slack_descriptions_accept() {
    let (twilio_base, twilio_seen) = proxy(twilio_prism()).await;
    let (slack_base, slack_seen) = proxy(slack_prism()).await;
    let mut connectors: Vec<_> = enlace_connectors::all().into_iter().filter(|c| !matches!(c.id(), "twilio" | "slack")).collect();
    connectors.push(enlace_connector_twilio::connector_at(&twilio_base));
    connectors.push(enlace_connector_slack::connector_at(&slack_base));
    let s = TestServer::start_with(enlace_core::Registry::new(connectors).unwrap()).await;

    for (id, app, credentials) in [
        ("twilio-main", "twilio", json!({"kind": "basic", "username": ACCOUNT_SID, "password": AUTH_TOKEN})),
        ("slack-main", "slack", json!({"kind": "bearer", "token": SLACK_TOKEN})),
    ] {
        let r = s
            .api(Method::POST, "/api/v1/connections")
            .json(&json!({"id": id, "app": app, "name": id, "credentials": credentials}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        // The connection test (auth.test; fetching the account) against the description too.
        let t: Value = s.api(Method::POST, &format!("/api/v1/connections/{id}/test")).send().await.unwrap().json().await.unwrap();
        assert_eq!(t["status"], "ok", "{t}");
        assert!(!t.to_string().contains(AUTH_TOKEN), "{t}");
    }
    let r = s.api(Method::POST, "/api/v1/recipes").header("content-type", "application/yaml").body(recipe()).send().await.unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());

    let fired: Value = s
        .http
        .post(s.url("/hooks/signup"))
        .json(&json!({"name": "Ana", "phone": "+1 415 555 2671"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let run_id = fired["run_id"].as_str().unwrap_or_else(|| panic!("no run id: {fired}")).to_string();
    let row = settled(&s.store, &run_id).await;
    let detail: Value = s.api(Method::GET, &format!("/api/v1/runs/{run_id}")).send().await.unwrap().json().await.unwrap();
    assert_eq!(
        row.status,
        RunStatus::Succeeded,
        "{detail:#}\ntwilio: {:#?}\nslack: {:#?}",
        twilio_seen.lock().unwrap(),
        slack_seen.lock().unwrap()
    );

    let twilio = twilio_seen.lock().unwrap().clone();
    let calls: Vec<(&str, &str, u16)> = twilio.iter().map(|e| (e.method.as_str(), e.path.as_str(), e.status)).collect();
    let account = format!("/2010-04-01/Accounts/{ACCOUNT_SID}.json");
    let messages = format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json");
    assert_eq!(calls, [("GET", account.as_str(), 200), ("POST", messages.as_str(), 201)], "{twilio:#?}");
    for ex in &twilio {
        assert_eq!(request_violations(ex), Vec::<Value>::new(), "Prism found nothing wrong in the Twilio request {ex:#?}");
    }

    let slack = slack_seen.lock().unwrap().clone();
    let calls: Vec<(&str, &str, u16)> = slack.iter().map(|e| (e.method.as_str(), e.path.as_str(), e.status)).collect();
    assert_eq!(calls, [("GET", "/auth.test", 200), ("POST", "/chat.postMessage", 200)], "{slack:#?}");
    for ex in &slack {
        assert_eq!(request_violations(ex), Vec::<Value>::new(), "Prism found nothing wrong in the Slack request {ex:#?}");
    }

    // The outputs come from the descriptions' own example answers.
    let sms = &detail["steps"][0]["output"];
    assert!(sms["sid"].as_str().unwrap().starts_with("SM"), "{sms}");
    assert_eq!(sms["date_created"], "2023-08-24T05:01:45+00:00", "{sms}");
    let notify = &detail["steps"][1]["output"];
    assert_eq!(notify["ts"], "1503435956.000247", "{notify}");
    let history = detail.to_string();
    assert!(!history.contains(AUTH_TOKEN) && !history.contains(SLACK_TOKEN), "no secret in run history");
}

/// Sends a request built by a connector to Prism, optionally dropping one field (of the
/// form, or at the top of a JSON body).
async fn send_to_prism(prism: &Prism, request: enlace_core::http::HttpRequest, api_base: &str, drop_field: Option<&str>) -> Exchange {
    let body = String::from_utf8(request.body.to_vec()).unwrap();
    let is_json = request.headers.get("content-type").is_some_and(|v| v == "application/json");
    let body: String = match drop_field {
        Some(name) if is_json => {
            let mut value: Value = serde_json::from_str(&body).unwrap();
            assert!(value.as_object_mut().unwrap().remove(name).is_some(), "the request has `{name}` to drop");
            value.to_string()
        }
        Some(name) => body.split('&').filter(|pair| !pair.starts_with(&format!("{name}="))).collect::<Vec<_>>().join("&"),
        None => body,
    };
    let path = request.url.strip_prefix(api_base).expect("the request goes to the API base").to_string();
    let mut req = client().request(request.method.clone(), format!("{}{path}", prism.base)).body(body);
    for (k, v) in &request.headers {
        req = req.header(k.as_str(), v.as_bytes());
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let violations = resp.headers().get("sl-violations").and_then(|v| v.to_str().ok()).map(str::to_string);
    Exchange { method: request.method.to_string(), path, status, violations, body: resp.text().await.unwrap() }
}

#[tokio::test]
async fn prism_refuses_a_twilio_request_without_to() {
    let prism = twilio_prism();
    const BASE: &str = "https://api.twilio.com";
    let input: enlace_connector_twilio::send_sms::Input =
        serde_json::from_value(json!({"to": "+14155552671", "from": "+14155550100", "body": "hello"})).unwrap();
    let creds = Credentials::Basic { username: ACCOUNT_SID.into(), password: Secret::new(AUTH_TOKEN) };
    let build = || enlace_connector_twilio::send_sms::build_request(BASE, &input, &creds).unwrap();

    let good = send_to_prism(prism, build(), BASE, None).await;
    assert_eq!(good.status, 201, "the request as built is accepted: {good:#?}");
    assert!(request_violations(&good).is_empty(), "{good:#?}");

    let wrong = send_to_prism(prism, build(), BASE, Some("To")).await;
    assert_eq!(wrong.status, 422, "{wrong:#?}");
    let violations = request_violations(&wrong);
    assert!(violations.iter().any(|v| v["message"].as_str().unwrap_or_default().contains("'To'")), "{wrong:#?}");

    let mut unauthenticated = build();
    unauthenticated.headers.remove("authorization");
    assert_eq!(send_to_prism(prism, unauthenticated, BASE, None).await.status, 401, "basic auth is required");
}

#[tokio::test]
async fn prism_refuses_a_slack_request_without_channel() {
    let prism = slack_prism();
    const BASE: &str = "https://slack.com/api";
    let input: enlace_connector_slack::post_message::Input = serde_json::from_value(json!({
        "channel": "C0123456789", "text": "hello", "blocks": [{"type": "divider"}], "unfurl_links": true
    }))
    .unwrap();
    let creds = Credentials::Bearer { token: Secret::new(SLACK_TOKEN) };
    let build = || enlace_connector_slack::post_message::build_request(BASE, &input, &creds).unwrap();

    let good = send_to_prism(prism, build(), BASE, None).await;
    assert_eq!(good.status, 200, "the request as built is accepted: {good:#?}");
    assert!(request_violations(&good).is_empty(), "{good:#?}");

    let wrong = send_to_prism(prism, build(), BASE, Some("channel")).await;
    assert_eq!(wrong.status, 422, "{wrong:#?}");
    let violations = request_violations(&wrong);
    assert!(violations.iter().any(|v| v["message"].as_str().unwrap_or_default().contains("'channel'")), "{wrong:#?}");

    let mut unauthenticated = build();
    unauthenticated.headers.remove("authorization");
    assert_eq!(send_to_prism(prism, unauthenticated, BASE, None).await.status, 401, "the bearer token is required");
}

fn sendgrid_recipe() -> &'static str {
    r##"
id: signup-email
trigger:
  app: webhook
  event: catch
  with:
    path: signup-email
steps:
  - id: email
    app: sendgrid
    action: send_email
    connection: sendgrid-main
    transactional: true
    with:
      from: "Acme News <news@example.com>"
      to:
        - "{{trigger.body.email}}"
        - email: "team@example.com"
          name: "Team"
      bcc: "audit@example.com"
      reply_to: "help@example.com"
      subject: "Welcome, {{trigger.body.name}}"
      text: "Hi {{trigger.body.name}}, welcome aboard!"
      html: "<p>Hi {{trigger.body.name}}, welcome aboard!</p>"
      asm:
        group_id: 12345
        groups_to_display: [12345, 67890]
      categories: [welcome, onboarding]
      send_at: "{{trigger.body.send_at}}"
      headers:
        X-Campaign: "welcome-2026"
"##
}

#[tokio::test]
async fn a_recipe_sends_an_email_that_the_sendgrid_description_accepts() {
    let (base, seen) = proxy(sendgrid_prism()).await;
    let mut connectors: Vec<_> = enlace_connectors::all().into_iter().filter(|c| c.id() != "sendgrid").collect();
    connectors.push(enlace_connector_sendgrid::connector_at(&base));
    let s = TestServer::start_with(enlace_core::Registry::new(connectors).unwrap()).await;
    // The description covers mail/send only, not GET /v3/scopes (the connection test, which
    // the unit tests check against recorded answers): the connection is created, not tested.
    let r = s
        .api(Method::POST, "/api/v1/connections")
        .json(&json!({"id": "sendgrid-main", "app": "sendgrid", "name": "SendGrid", "credentials": {"kind": "bearer", "token": SENDGRID_KEY}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let r = s.api(Method::POST, "/api/v1/recipes").header("content-type", "application/yaml").body(sendgrid_recipe()).send().await.unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());

    let send_at = (chrono::Utc::now() + chrono::Duration::hours(2)).to_rfc3339();
    let fired: Value = s
        .http
        .post(s.url("/hooks/signup-email"))
        .json(&json!({"name": "Ana", "email": "ana@example.com", "send_at": send_at}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let run_id = fired["run_id"].as_str().unwrap_or_else(|| panic!("no run id: {fired}")).to_string();
    let row = settled(&s.store, &run_id).await;
    let detail: Value = s.api(Method::GET, &format!("/api/v1/runs/{run_id}")).send().await.unwrap().json().await.unwrap();
    assert_eq!(row.status, RunStatus::Succeeded, "{detail:#}\nsendgrid: {:#?}", seen.lock().unwrap());

    let exchanges = seen.lock().unwrap().clone();
    let calls: Vec<(&str, &str, u16)> = exchanges.iter().map(|e| (e.method.as_str(), e.path.as_str(), e.status)).collect();
    assert_eq!(calls, [("POST", "/v3/mail/send", 202)], "{exchanges:#?}");
    assert_eq!(request_violations(&exchanges[0]), Vec::<Value>::new(), "Prism found nothing wrong in the SendGrid request {exchanges:#?}");
    // Prism's 202 carries no X-Message-Id (the description declares none): the output is empty.
    assert_eq!(detail["steps"][0]["output"], json!({}), "{detail:#}");
    assert!(!detail.to_string().contains(SENDGRID_KEY), "no secret in run history");
}

#[tokio::test]
async fn prism_refuses_a_sendgrid_request_without_from() {
    let prism = sendgrid_prism();
    const BASE: &str = "https://api.sendgrid.com";
    let input: enlace_connector_sendgrid::send_email::Input = serde_json::from_value(json!({
        "from": {"email": "news@example.com", "name": "Acme"}, "to": ["ana@example.com"], "subject": "hello",
        "text": "hello", "categories": ["welcome"], "asm": {"group_id": 1}
    }))
    .unwrap();
    let creds = Credentials::Bearer { token: Secret::new(SENDGRID_KEY) };
    let build = || enlace_connector_sendgrid::send_email::build_request(BASE, &input, &creds).unwrap();

    let good = send_to_prism(prism, build(), BASE, None).await;
    assert_eq!(good.status, 202, "the request as built is accepted: {good:#?}");
    assert!(request_violations(&good).is_empty(), "{good:#?}");

    let wrong = send_to_prism(prism, build(), BASE, Some("from")).await;
    assert!(matches!(wrong.status, 400 | 422), "{wrong:#?}");
    let said = format!("{:?} {}", wrong.violations, wrong.body);
    assert!(said.contains("'from'"), "Prism names the missing `from`: {wrong:#?}");

    let mut unauthenticated = build();
    unauthenticated.headers.remove("authorization");
    assert_eq!(send_to_prism(prism, unauthenticated, BASE, None).await.status, 401, "the API key is required");
}

// ---- Google Drive ----
//
// The metadata calls (`POST /files` for a folder, `GET /changes/startPageToken`, `GET
// /changes`, `GET /about`) go to Prism serving the Swagger 2.0 conversion of Google's own
// discovery document; Prism matches its routes without the `/drive/v3` base path, so the
// connector's API base is the proxy's root. The upload endpoint
// (`/upload/drive/v3/files?uploadType=multipart`) is not in the conversion: a hand-written
// route stands in for it, checks the multipart/related structure, and validates the
// metadata part against the `File` schema of the discovery document, read in place.

const DRIVE_TOKEN: &str = "ya29.contract-drive-token-0123";
const DRIVE_BASE: &str = "https://www.googleapis.com/drive/v3";

fn drive_prism() -> &'static Prism {
    static P: OnceLock<Prism> = OnceLock::new();
    P.get_or_init(|| Prism::start(&spec("google-drive/drive.v3.swagger2.prism.json")))
}

/// Drive's discovery document (`schemas.File` and friends).
fn drive_discovery() -> &'static Value {
    static D: OnceLock<Value> = OnceLock::new();
    D.get_or_init(|| {
        let path = spec("google-drive/drive.v3.discovery.json");
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    })
}

/// What is wrong with `value` as an instance of a discovery `schema`: unknown properties,
/// properties Google marks output-only, and JSON types that do not match.
fn discovery_problems(schema: &Value, value: &Value, path: &str, out: &mut Vec<String>) {
    let schemas = &drive_discovery()["schemas"];
    if let Some(name) = schema.get("$ref").and_then(Value::as_str) {
        return discovery_problems(&schemas[name], value, path, out);
    }
    let want = schema.get("type").and_then(Value::as_str).unwrap_or("any");
    let fits = match want {
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        _ => true,
    };
    if !fits {
        out.push(format!("{path}: expected {want}, found {value}"));
        return;
    }
    match value {
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    discovery_problems(item_schema, item, &format!("{path}[{i}]"), out);
                }
            }
        }
        Value::Object(map) => {
            for (key, v) in map {
                let at = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
                let prop = schema.get("properties").and_then(|p| p.get(key)).or_else(|| schema.get("additionalProperties"));
                match prop {
                    None => out.push(format!("{at}: not a property of the schema")),
                    Some(p) => {
                        let output_only = p.get("readOnly") == Some(&Value::Bool(true))
                            || p.get("description").and_then(Value::as_str).is_some_and(|d| d.starts_with("Output only."));
                        if output_only {
                            out.push(format!("{at}: output only; Drive sets it"));
                        }
                        discovery_problems(p, v, &at, out);
                    }
                }
            }
        }
        _ => {}
    }
}

fn file_problems(metadata: &Value) -> Vec<String> {
    let mut out = Vec::new();
    discovery_problems(&json!({"$ref": "File"}), metadata, "", &mut out);
    out
}

/// One request the upload route received.
#[derive(Debug, Clone)]
pub(crate) struct Upload {
    pub(crate) query: Vec<(String, String)>,
    /// The metadata part (JSON).
    pub(crate) metadata: Value,
    /// The media part's Content-Type.
    pub(crate) media_type: String,
    /// The media part's bytes.
    pub(crate) media: Vec<u8>,
    /// What the route found wrong (then it answered 400).
    pub(crate) problems: Vec<String>,
}

pub(crate) type Uploads = Arc<Mutex<Vec<Upload>>>;

fn google_error(status: StatusCode, message: String) -> Response {
    let body = json!({"error": {"code": status.as_u16(), "message": message, "errors": [{"reason": "badRequest", "message": message}]}});
    (status, axum::Json(body)).into_response()
}

/// Drive's upload endpoint, as its documentation and discovery document describe it.
async fn drive_upload(State(seen): State<Uploads>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let query: Vec<(String, String)> =
        reqwest::Url::parse(&format!("http://drive.test/?{}", uri.query().unwrap_or(""))).unwrap().query_pairs().into_owned().collect();
    let mut problems = Vec::new();
    if !headers.get("authorization").and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("Bearer ")) {
        return google_error(StatusCode::UNAUTHORIZED, "Request is missing required authentication credential.".into());
    }
    if !query.iter().any(|(k, v)| k == "uploadType" && v == "multipart") {
        problems.push("uploadType must be `multipart` for a body with metadata and media".to_string());
    }
    let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let Some(boundary) = content_type.strip_prefix("multipart/related; boundary=") else {
        return google_error(StatusCode::BAD_REQUEST, format!("expected multipart/related with a boundary, got `{content_type}`"));
    };
    // RFC 2046: --boundary CRLF part (CRLF --boundary CRLF part)* CRLF --boundary-- [CRLF]
    let text = body.to_vec();
    let open = format!("--{boundary}\r\n");
    let between = format!("\r\n--{boundary}\r\n");
    let close = format!("\r\n--{boundary}--\r\n");
    if !text.starts_with(open.as_bytes()) || !text.ends_with(close.as_bytes()) {
        return google_error(StatusCode::BAD_REQUEST, "the body does not open and close with the boundary".into());
    }
    let inner = &text[open.len()..text.len() - close.len()];
    let at = inner.windows(between.len()).position(|w| w == between.as_bytes());
    let Some(at) = at else {
        return google_error(StatusCode::BAD_REQUEST, "expected two parts: the metadata, then the media".into());
    };
    let (first, second) = (&inner[..at], &inner[at + between.len()..]);
    if second.windows(between.len()).any(|w| w == between.as_bytes()) {
        problems.push("more than two parts".to_string());
    }
    let split = |part: &[u8]| -> Option<(String, Vec<u8>)> {
        let i = part.windows(4).position(|w| w == b"\r\n\r\n")?;
        Some((String::from_utf8_lossy(&part[..i]).to_ascii_lowercase(), part[i + 4..].to_vec()))
    };
    let (Some((meta_headers, meta)), Some((media_headers, media))) = (split(first), split(second)) else {
        return google_error(StatusCode::BAD_REQUEST, "a part without headers".into());
    };
    if !meta_headers.contains("content-type: application/json") {
        problems.push(format!("the first part must be the JSON metadata, its headers are `{meta_headers}`"));
    }
    let media_type = media_headers.strip_prefix("content-type: ").map(|t| t.trim().to_string());
    if media_type.is_none() {
        problems.push("the media part has no Content-Type".to_string());
    }
    let metadata: Value = match serde_json::from_slice(&meta) {
        Ok(v) => v,
        Err(e) => return google_error(StatusCode::BAD_REQUEST, format!("the metadata part is not JSON: {e}")),
    };
    problems.extend(file_problems(&metadata));
    let media_type = media_type.unwrap_or_default();
    let n = {
        let mut seen = seen.lock().unwrap();
        seen.push(Upload {
            query,
            metadata: metadata.clone(),
            media_type: media_type.clone(),
            media: media.clone(),
            problems: problems.clone(),
        });
        seen.len()
    };
    if !problems.is_empty() {
        return google_error(StatusCode::BAD_REQUEST, problems.join("; "));
    }
    let id = format!("1UploadedFile{n}");
    axum::Json(json!({
        "id": id,
        "name": metadata["name"],
        "mimeType": metadata.get("mimeType").cloned().unwrap_or(json!(media_type)),
        "parents": metadata.get("parents").cloned().unwrap_or(json!(["0AMyDriveRoot"])),
        "size": media.len().to_string(),
        "webViewLink": format!("https://drive.google.com/file/d/{id}/view?usp=drivesdk"),
    }))
    .into_response()
}

/// Drive's upload endpoint on 127.0.0.1:0 (also used by `drive_recipe.rs`): the upload base
/// to give `connector_at`, and what it received. The files it creates are
/// `1UploadedFile<N>`, with a `webViewLink`.
pub(crate) async fn drive_upload_route() -> (String, Uploads) {
    let seen: Uploads = Arc::default();
    let app = Router::new().route("/upload/drive/v3/files", axum::routing::post(drive_upload)).with_state(seen.clone());
    let addr = serve_local(app).await;
    (format!("http://{addr}/upload/drive/v3"), seen)
}

fn drive_recipe() -> &'static str {
    r##"
id: lead-files-to-drive
trigger:
  app: webhook
  event: catch
  with:
    path: lead-files
steps:
  - id: folder
    app: google_drive
    action: create_folder
    connection: drive-main
    with:
      name: "Leads {{trigger.body.name}}"
      parent_id: "https://drive.google.com/drive/folders/1ParentFolderId?usp=sharing"
  - id: note
    app: google_drive
    action: upload_file
    connection: drive-main
    with:
      name: "lead.txt"
      folder_id: "{{steps.folder.id}}"
      content_text: "Lead: {{trigger.body.name}}"
  - id: each_attachment
    foreach: "{{trigger.body.attachments}}"
    steps:
      - id: save
        app: google_drive
        action: upload_file
        connection: drive-main
        with:
          folder_id: "{{steps.folder.id}}"
          attachment: "{{item}}"
"##
}

#[tokio::test]
async fn a_recipe_saves_files_to_drive_with_requests_the_drive_description_accepts() {
    let (api_base, seen) = proxy(drive_prism()).await;
    let (upload_base, uploads) = drive_upload_route().await;
    let mut connectors: Vec<_> = enlace_connectors::all().into_iter().filter(|c| c.id() != "google_drive").collect();
    connectors.push(enlace_connector_google_drive::connector_at(&api_base, &upload_base));
    let s = TestServer::start_with(enlace_core::Registry::new(connectors).unwrap()).await;
    let r = s
        .api(Method::POST, "/api/v1/connections")
        .json(&json!({"id": "drive-main", "app": "google_drive", "name": "Drive", "credentials": {"kind": "oauth2", "access_token": DRIVE_TOKEN}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    // The connection test: GET /about?fields=user, against the description.
    let t: Value = s.api(Method::POST, "/api/v1/connections/drive-main/test").send().await.unwrap().json().await.unwrap();
    assert_eq!(t["status"], "ok", "{t}");
    assert!(t.to_string().contains("Connected as string"), "the address from Prism's generated answer: {t}");
    let r = s.api(Method::POST, "/api/v1/recipes").header("content-type", "application/yaml").body(drive_recipe()).send().await.unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());

    let pdf: &[u8] = b"%PDF-1.4\n\x00\x01\xfe\xff\r\n%%EOF";
    let pdf_b64 = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(pdf)
    };
    let attachments = json!([
        {"name": "cv.pdf", "content_type": "application/pdf", "content_base64": pdf_b64, "size": pdf.len()},
        {"name": "notes.txt", "content_text": "call back on Monday"}
    ]);
    let fired: Value = s
        .http
        .post(s.url("/hooks/lead-files"))
        .json(&json!({"name": "Ana", "attachments": attachments}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let run_id = fired["run_id"].as_str().unwrap_or_else(|| panic!("no run id: {fired}")).to_string();
    let row = settled(&s.store, &run_id).await;
    let detail: Value = s.api(Method::GET, &format!("/api/v1/runs/{run_id}")).send().await.unwrap().json().await.unwrap();
    assert_eq!(row.status, RunStatus::Succeeded, "{detail:#}\nprism: {:#?}\nuploads: {:#?}", seen.lock().unwrap(), uploads.lock().unwrap());

    let exchanges = seen.lock().unwrap().clone();
    let calls: Vec<(&str, &str, u16)> = exchanges.iter().map(|e| (e.method.as_str(), e.path.as_str(), e.status)).collect();
    assert_eq!(calls, [("GET", "/about", 200), ("POST", "/files", 200)], "{exchanges:#?}");
    for ex in &exchanges {
        assert_eq!(request_violations(ex), Vec::<Value>::new(), "Prism found nothing wrong in the Drive request {ex:#?}");
    }

    // Prism's generated folder has the id "string": every upload goes into it.
    let uploads = uploads.lock().unwrap().clone();
    assert_eq!(uploads.len(), 3, "{uploads:#?}");
    for u in &uploads {
        assert_eq!(u.problems, Vec::<String>::new(), "the upload matches Drive's File schema: {u:#?}");
        assert!(u.query.contains(&("uploadType".into(), "multipart".into())), "{u:#?}");
        assert_eq!(u.metadata["parents"], json!(["string"]), "{u:#?}");
    }
    assert_eq!((uploads[0].metadata["name"].as_str(), uploads[0].media.as_slice()), (Some("lead.txt"), b"Lead: Ana".as_slice()));
    assert_eq!(uploads[0].media_type, "text/plain; charset=utf-8");
    assert_eq!((uploads[1].metadata["name"].as_str(), uploads[1].media.as_slice()), (Some("cv.pdf"), pdf));
    assert_eq!((uploads[1].media_type.as_str(), uploads[1].metadata["mimeType"].as_str()), ("application/pdf", Some("application/pdf")));
    assert_eq!((uploads[2].metadata["name"].as_str(), uploads[2].media.as_slice()), (Some("notes.txt"), b"call back on Monday".as_slice()));
    let key = uploads[1].metadata["appProperties"]["enlace_idempotency_key"].as_str().unwrap();
    assert!(key.starts_with(&run_id), "the step's idempotency key is stored with the file: {key}");

    let saved = &detail["steps"];
    let history = detail.to_string();
    assert!(history.contains("1UploadedFile2") && history.contains("https://drive.google.com/file/d/1UploadedFile3/view"), "{saved:#}");
    assert!(!history.contains(DRIVE_TOKEN), "no secret in run history");
}

/// A proxy in front of Drive's Prism that ends the changes listing: Prism's generated
/// answer always holds `nextPageToken: "string"`, so the page asked with that token is
/// answered without it (the last page, which carries `newStartPageToken`).
async fn drive_changes_proxy() -> (String, Arc<Mutex<Vec<Exchange>>>) {
    let p = Proxy { upstream: drive_prism().base.clone(), seen: Arc::default(), client: client(), recorded: None };
    let seen = p.seen.clone();
    let app = Router::new()
        .fallback(|state: State<Proxy>, method: AxumMethod, uri: Uri, headers: HeaderMap, body: Bytes| async move {
            let last_page = uri.path() == "/changes" && uri.query().is_some_and(|q| q.split('&').any(|kv| kv == "pageToken=string"));
            let resp = forward(state, method, uri, headers, body).await;
            if !last_page {
                return resp;
            }
            let (parts, body) = resp.into_parts();
            let mut page: Value = serde_json::from_slice(&axum::body::to_bytes(body, usize::MAX).await.unwrap()).unwrap();
            page.as_object_mut().unwrap().remove("nextPageToken");
            (parts.status, axum::Json(page)).into_response()
        })
        .with_state(p);
    let addr = serve_local(app).await;
    (format!("http://{addr}"), seen)
}

#[tokio::test]
async fn the_new_file_trigger_reads_changes_as_the_drive_description_says() {
    let (api_base, seen) = drive_changes_proxy().await;
    let drive = enlace_connector_google_drive::connector_at(&api_base, "http://127.0.0.1:9/upload/drive/v3");
    let trigger = drive.polling_trigger("new_file").unwrap();
    let ctx = enlace_core::ActionContext {
        run_id: "poll".into(),
        step_key: "trigger".into(),
        attempt: 1,
        idempotency_key: "poll:trigger".into(),
        credentials: Credentials::OAuth2 { access_token: Secret::new(DRIVE_TOKEN) },
        http: transport(),
        timeout: Duration::from_secs(30),
        extensions: Default::default(),
    };
    let config = json!({"folder_id": "string"});
    // Enabling: the start page token, no items.
    let seeded = trigger.poll(&ctx, config.clone(), None).await.expect("seeded");
    assert_eq!((seeded.items.len(), seeded.cursor.as_deref()), (0, Some("string")));
    // A poll: two pages (the generated token, then the last page), the new start token.
    let page = trigger.poll(&ctx, config, Some("1".into())).await.expect("polled");
    assert_eq!(page.cursor.as_deref(), Some("string"), "the last page's newStartPageToken");
    assert!(page.items.is_empty(), "Prism's generated file is in the bin (`trashed: true`): it does not fire");

    let exchanges = seen.lock().unwrap().clone();
    let calls: Vec<(&str, &str, u16)> = exchanges.iter().map(|e| (e.method.as_str(), e.path.as_str(), e.status)).collect();
    assert_eq!(calls, [("GET", "/changes/startPageToken", 200), ("GET", "/changes", 200), ("GET", "/changes", 200)], "{exchanges:#?}");
    for ex in &exchanges {
        assert_eq!(request_violations(ex), Vec::<Value>::new(), "Prism found nothing wrong in the Drive request {ex:#?}");
    }
}

#[tokio::test]
async fn prism_and_the_upload_route_refuse_wrong_drive_requests() {
    use enlace_connector_google_drive::{folder, trigger, upload};
    let prism = drive_prism();
    let creds = Credentials::OAuth2 { access_token: Secret::new(DRIVE_TOKEN) };

    // The changes listing: as built, then without its required pageToken.
    let good = send_to_prism(prism, trigger::changes_request(DRIVE_BASE, "1", &creds).unwrap(), DRIVE_BASE, None).await;
    assert_eq!(good.status, 200, "the request as built is accepted: {good:#?}");
    assert!(request_violations(&good).is_empty(), "{good:#?}");
    let mut no_token = trigger::changes_request(DRIVE_BASE, "1", &creds).unwrap();
    let mut url = reqwest::Url::parse(&no_token.url).unwrap();
    let kept: Vec<(String, String)> = url.query_pairs().filter(|(k, _)| k != "pageToken").map(|(k, v)| (k.into(), v.into())).collect();
    url.query_pairs_mut().clear().extend_pairs(kept);
    no_token.url = url.to_string();
    let wrong = send_to_prism(prism, no_token, DRIVE_BASE, None).await;
    assert_eq!(wrong.status, 422, "{wrong:#?}");
    let said = format!("{:?} {}", wrong.violations, wrong.body).to_ascii_lowercase();
    assert!(said.contains("'pagetoken'"), "Prism names the missing pageToken: {wrong:#?}");

    // A folder: as built, then with a name that is not a string, then without the token.
    let input: folder::Input = serde_json::from_value(json!({"name": "Leads", "parent_id": "1ParentFolderId"})).unwrap();
    let build = || folder::build_request(DRIVE_BASE, &input, &creds, "run:folder").unwrap();
    let good = send_to_prism(prism, build(), DRIVE_BASE, None).await;
    assert_eq!(good.status, 200, "the request as built is accepted: {good:#?}");
    assert!(request_violations(&good).is_empty(), "{good:#?}");
    let mut numeric = build();
    let mut body: Value = serde_json::from_slice(&numeric.body).unwrap();
    body["name"] = json!(5);
    numeric.body = body.to_string().into();
    let wrong = send_to_prism(prism, numeric, DRIVE_BASE, None).await;
    assert_eq!(wrong.status, 422, "{wrong:#?}");
    assert!(
        request_violations(&wrong).iter().any(|v| v["location"] == json!(["body", "name"]) && v["code"] == "type"),
        "Prism names the body's `name`: {wrong:#?}"
    );
    let mut unauthenticated = folder::about_request(DRIVE_BASE, &creds).unwrap();
    unauthenticated.headers.remove("authorization");
    assert_eq!(send_to_prism(prism, unauthenticated, DRIVE_BASE, None).await.status, 401, "OAuth2 is required");

    // The File schema check of the upload route: the connector's metadata passes, wrong
    // metadata does not.
    let media = upload::Media { name: "a.csv".into(), content_type: "text/csv".into(), bytes: "a,b".into() };
    assert_eq!(file_problems(&upload::metadata_of(&media, Some("1Folder"), "run:save")), Vec::<String>::new());
    for (bad, why) in [
        (json!({"name": 5}), "name: expected string"),
        (json!({"name": "a", "folder": "x"}), "folder: not a property"),
        (json!({"name": "a", "parents": "1Folder"}), "parents: expected array"),
        (json!({"name": "a", "appProperties": {"k": 1}}), "appProperties.k: expected string"),
        (json!({"name": "a", "webViewLink": "https://x"}), "webViewLink: output only"),
    ] {
        let problems = file_problems(&bad);
        assert!(problems.iter().any(|p| p.contains(why)), "{bad}: {problems:?}");
    }
    // The upload route itself refuses a body that is not multipart/related, or a wrong
    // uploadType.
    let (upload_base, uploads) = drive_upload_route().await;
    let built = upload::build_request(&upload_base, &media, None, &creds, "run:save").unwrap();
    let send = |req: enlace_core::http::HttpRequest| async move {
        let mut r = client().request(req.method.clone(), &req.url).body(req.body.clone());
        for (k, v) in &req.headers {
            r = r.header(k.as_str(), v.as_bytes());
        }
        r.send().await.unwrap()
    };
    assert_eq!(send(built.clone()).await.status(), 200, "the request as built is accepted");
    let mut media_only = built.clone();
    media_only.url = media_only.url.replace("uploadType=multipart", "uploadType=media");
    let r = send(media_only).await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("uploadType must be `multipart`"));
    let mut not_multipart = built.clone();
    not_multipart.headers.insert("content-type", "application/json".parse().unwrap());
    assert_eq!(send(not_multipart).await.status(), 400);
    let mut unauthenticated = built;
    unauthenticated.headers.remove("authorization");
    assert_eq!(send(unauthenticated).await.status(), 401);
    assert_eq!(uploads.lock().unwrap().len(), 2, "{:#?}", uploads.lock().unwrap());
}

fn x_prism() -> &'static Prism {
    static P: OnceLock<Prism> = OnceLock::new();
    P.get_or_init(|| Prism::start(&spec("x/openapi.json")))
}

/// X's recorded answers (connectors/x/fixtures/recorded/) to the requests whose answers the
/// connector reads ids from: Prism makes up `"string"` for an id, which is no X id (X's
/// description itself requires `^[0-9]{1,19}$` where the id goes next).
fn x_recorded(method: &str, path: &str) -> Option<Value> {
    let name = match (method, path) {
        ("POST", "/2/media/upload") => "upload_image",
        ("POST", "/2/media/upload/initialize") => "initialize",
        ("POST", p) if p.ends_with("/finalize") => "finalize_pending",
        ("GET", "/2/media/upload") => "status_succeeded",
        ("GET", "/2/users/me") => "users_me",
        ("GET", p) if p.starts_with("/2/users/") && p.ends_with("/tweets") => "users_tweets",
        _ => return None,
    };
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("connectors/x/fixtures/recorded").join(format!("{name}.json"));
    Some(serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap())
}

/// The `x` connector pointed at a proxy in front of Prism serving X's own API description;
/// every request is checked by Prism, and the answers the connector takes ids from are X's
/// recorded ones.
async fn x_connector() -> (enlace_core::Connector, Arc<Mutex<Vec<Exchange>>>) {
    let p = Proxy { upstream: x_prism().base.clone(), seen: Arc::default(), client: client(), recorded: Some(x_recorded) };
    let seen = p.seen.clone();
    let addr = serve_local(Router::new().fallback(forward).with_state(p)).await;
    (enlace_connector_x::connector_at(&format!("http://{addr}")), seen)
}

/// Every request of the `x` connector, checked by Prism against X's description: a post with
/// a picture and its alt text (one-request upload, metadata, the post with `media_ids`), one
/// with a video (chunked upload: initialize, append, finalize, the processing status), a
/// reply, the recent posts (`/2/users/me`, then the account's posts) and the mentions.
/// Prism checks the uploads' JSON (the base64 `media`, the category, the segment index),
/// not the file inside: the bytes are checked against recorded answers by the connector's
/// own tests (connectors/x/src/tests.rs).
#[tokio::test]
async fn the_x_connector_sends_requests_the_x_description_accepts() {
    let (x, seen) = x_connector().await;
    let files = enlace_kit::testing::FakeVendor::start().await;
    files.on("GET", "/cat.png", [enlace_kit::testing::Reply::text(200, "image/png", "\u{89}PNG-cat")]);
    files.on("GET", "/clip.mp4", [enlace_kit::testing::Reply::text(200, "video/mp4", "....ftypmp42-clip")]);
    let ctx = enlace_kit::testing::ctx(Credentials::OAuth2 { access_token: Secret::new("x-user-token") });
    let post = x.action("post_tweet").unwrap();
    let pic = post
        .call(
            &ctx,
            json!({"text": "Our spring webinar is open", "media": [{"url": format!("{}/cat.png", files.url()), "mime_type": "image/png", "alt": "A grey cat"}]}),
        )
        .await;
    let video = post
        .call(&ctx, json!({"text": "", "media": [{"url": format!("{}/clip.mp4", files.url()), "mime_type": "video/mp4", "alt": "A clip"}]}))
        .await;
    let reply = post.call(&ctx, json!({"text": "Thanks!", "reply_to": "1346889436626259968"})).await;
    let recent = x.action("recent_posts").unwrap().call(&ctx, json!({"limit": 40})).await;
    let exchanges = seen.lock().unwrap().clone();
    let paths: Vec<(&str, &str)> = exchanges.iter().map(|e| (e.method.as_str(), e.path.as_str())).collect();
    assert_eq!(
        paths,
        [
            ("POST", "/2/media/upload"),
            ("POST", "/2/media/metadata"),
            ("POST", "/2/tweets"),
            ("POST", "/2/media/upload/initialize"),
            ("POST", "/2/media/upload/1880028106020515842/append"),
            ("POST", "/2/media/upload/1880028106020515842/finalize"),
            ("GET", "/2/media/upload"),
            ("POST", "/2/media/metadata"),
            ("POST", "/2/tweets"),
            ("POST", "/2/tweets"),
            ("GET", "/2/users/me"),
            ("GET", "/2/users/2244994945/tweets"),
        ]
    );
    for ex in &exchanges {
        assert!(ex.status < 300, "{ex:#?}");
        assert!(request_violations(ex).is_empty(), "Prism found nothing wrong: {ex:#?}");
    }
    for out in [pic, video, reply] {
        let out = out.expect("Prism's answer is read");
        assert!(out["id"].is_string() && out["text"].is_string(), "the output is X's `data`: {out}");
    }
    let recent = recent.expect("the recorded posts are read");
    assert_eq!(recent["posts"][0]["text"], "Launch day! Fish & chips <3\n\nhttps://blog.example/launch");

    let page =
        x.polling_trigger("new_mention").unwrap().poll(&ctx, json!({"user_id": "2244994945"}), Some("1346889436626259968".into())).await;
    let exchanges = seen.lock().unwrap().clone();
    let polls: Vec<&Exchange> = exchanges.iter().filter(|e| e.path.ends_with("/mentions")).collect();
    assert!(!polls.is_empty());
    for ex in &polls {
        assert_eq!((ex.path.as_str(), ex.status), ("/2/users/2244994945/mentions", 200), "{ex:#?}");
        assert!(request_violations(ex).is_empty(), "since_id, max_results and pagination_token as X describes them: {ex:#?}");
    }
    // Prism answers every page with its example `next_token` ("string"), so the second
    // page repeats the first one's cursor: the kit's pager stops there instead of looping.
    assert!(polls.len() >= 2, "the next_token was followed: {polls:#?}");
    match page {
        Ok(_) => {}
        Err(e) => assert!(e.message().contains("the same next-page cursor twice"), "{e}"),
    }
}

/// A request to X built as the connector builds its own, with this JSON body.
fn x_request(method: enlace_core::http::Method, path: &str, body: Option<Value>) -> enlace_core::http::HttpRequest {
    let mut r = enlace_core::http::HttpRequest::new(method, format!("https://api.x.com{path}"));
    r.headers.insert("authorization", "Bearer x-user-token".parse().unwrap());
    if let Some(b) = body {
        r.headers.insert("content-type", "application/json".parse().unwrap());
        r.body = b.to_string().into();
    }
    r
}

#[tokio::test]
async fn prism_refuses_wrong_x_requests() {
    use enlace_connector_x::actions::{Kind, alt_text_body, append_body, simple_upload_body, tweet_body};
    use enlace_core::http::Method as M;
    let (x, seen) = x_connector().await;
    // Unauthenticated: X's description requires a user token.
    let none = enlace_kit::testing::ctx(Credentials::None);
    let e = x.action("post_tweet").unwrap().call(&none, json!({"text": "hello"})).await.unwrap_err();
    assert_eq!(e.class(), enlace_core::ErrorClass::Auth, "{e}");
    assert_eq!(seen.lock().unwrap()[0].status, 401);
    let prism = x_prism();
    let send = |r| send_to_prism(prism, r, "https://api.x.com", None);
    // Each body as the connector builds it is accepted; the same with one thing wrong is not.
    let ids: Vec<String> = (1..=5).map(|i| format!("188002810602051584{i}")).collect();
    let cases: Vec<(&str, enlace_core::http::HttpRequest, enlace_core::http::HttpRequest)> = vec![
        (
            "a text that is not a string",
            x_request(M::POST, "/2/tweets", Some(tweet_body("hello", &[], None))),
            x_request(M::POST, "/2/tweets", Some(json!({"text": 5}))),
        ),
        (
            "five media ids (X takes 4)",
            x_request(M::POST, "/2/tweets", Some(tweet_body("pets", &ids[..4], None))),
            x_request(M::POST, "/2/tweets", Some(tweet_body("pets", &ids, None))),
        ),
        (
            "a reply to an id that is not X's",
            x_request(M::POST, "/2/tweets", Some(tweet_body("yes", &[], Some("1346889436626259968")))),
            x_request(M::POST, "/2/tweets", Some(tweet_body("yes", &[], Some("12ab")))),
        ),
        (
            "a media category X does not have",
            x_request(M::POST, "/2/media/upload", Some(simple_upload_body(b"PNG", Kind::Image))),
            x_request(M::POST, "/2/media/upload", Some(json!({"media": "UE5H", "media_category": "tweet_picture"}))),
        ),
        (
            "a segment index past 999",
            x_request(M::POST, "/2/media/upload/1880028106020515842/append", Some(append_body(b"chunk", 999))),
            x_request(M::POST, "/2/media/upload/1880028106020515842/append", Some(append_body(b"chunk", 1000))),
        ),
        (
            "an alt text over 1000 characters",
            x_request(M::POST, "/2/media/metadata", Some(alt_text_body("1880028106020515840", &"a".repeat(1000)))),
            x_request(M::POST, "/2/media/metadata", Some(alt_text_body("1880028106020515840", &"a".repeat(1001)))),
        ),
        (
            "a status command X does not have",
            x_request(M::GET, "/2/media/upload?media_id=1880028106020515842&command=STATUS", None),
            x_request(M::GET, "/2/media/upload?media_id=1880028106020515842&command=STAT", None),
        ),
        (
            "more recent posts than X gives in a page",
            x_request(M::GET, "/2/users/2244994945/tweets?max_results=100&exclude=retweets&post.fields=created_at,entities", None),
            x_request(M::GET, "/2/users/2244994945/tweets?max_results=101&exclude=retweets&post.fields=created_at,entities", None),
        ),
    ];
    for (why, good, wrong) in cases {
        let ex = send(good).await;
        assert!(ex.status < 300 && request_violations(&ex).is_empty(), "as built ({why}): {ex:#?}");
        let ex = send(wrong).await;
        assert!(ex.status == 422 || ex.status == 400, "{why}: {ex:#?}");
        assert!(!request_violations(&ex).is_empty(), "{why}: Prism names what is wrong: {ex:#?}");
    }
}

fn mastodon_prism() -> &'static Prism {
    static P: OnceLock<Prism> = OnceLock::new();
    P.get_or_init(|| Prism::start(&spec("mastodon/schema.prism.json")))
}

/// The `mastodon` connector's requests (a status with its `Idempotency-Key`, the instance's
/// limits, the account's recent statuses) checked by Prism against Mastodon's own API
/// description, the instance being a proxy in front of Prism.
#[tokio::test]
async fn the_mastodon_connector_sends_requests_the_mastodon_description_accepts() {
    let (base, seen) = proxy(mastodon_prism()).await;
    let m = enlace_connector_mastodon::connector();
    let mut ctx = enlace_kit::testing::ctx_with(transport(), Credentials::OAuth2 { access_token: Secret::new("masto-token") });
    ctx.idempotency_key = "0193a8e2-social-target".into();
    let out = m
        .action("post")
        .unwrap()
        .call(&ctx, json!({"instance": base, "status": "Our spring webinar is open", "visibility": "unlisted", "spoiler_text": "news", "language": "en"}))
        .await;
    let limits = m.action("instance_limits").unwrap().call(&ctx, json!({"instance": base})).await;
    let recent = m.action("recent_posts").unwrap().call(&ctx, json!({"instance": base, "limit": 20})).await;
    let exchanges = seen.lock().unwrap().clone();
    let paths: Vec<(&str, &str)> = exchanges.iter().map(|e| (e.method.as_str(), e.path.as_str())).collect();
    assert_eq!(
        paths[..3],
        [("POST", "/api/v1/statuses"), ("GET", "/api/v2/instance"), ("GET", "/api/v1/accounts/verify_credentials")],
        "{paths:?}"
    );
    for ex in &exchanges {
        assert!(ex.status < 300, "{ex:#?}");
        assert!(request_violations(ex).is_empty(), "{ex:#?}");
    }
    assert!(out.expect("the status is read")["id"].is_string());
    assert!(limits.is_ok(), "{limits:?}");
    // Prism's example account id is then asked for its statuses.
    // Prism's example answer to verify_credentials has no account `id` (the description's
    // example, not a real account): the action says so rather than guessing.
    let e = recent.unwrap_err();
    assert!(e.message().contains("no account `id`"), "{e}");
    // The statuses request the action makes next, as it makes it.
    let mut list = enlace_core::http::HttpRequest::new(
        enlace_core::http::Method::GET,
        "https://mastodon.example/api/v1/accounts/14715/statuses?limit=20&exclude_reblogs=true",
    );
    list.headers.insert("authorization", "Bearer masto-token".parse().unwrap());
    let ex = send_to_prism(mastodon_prism(), list, "https://mastodon.example", None).await;
    assert_eq!(ex.status, 200, "{ex:#?}");
    assert!(request_violations(&ex).is_empty(), "{ex:#?}");
}

#[tokio::test]
async fn prism_refuses_a_wrong_mastodon_request() {
    let prism = mastodon_prism();
    let input: enlace_connector_mastodon::actions::PostInput =
        serde_json::from_value(json!({"instance": "https://mastodon.example", "status": "hello", "visibility": "public"})).unwrap();
    let build = || {
        let mut r = enlace_connector_mastodon::actions::status_request("https://mastodon.example", &input, &[], "key-1").unwrap();
        r.headers.insert("authorization", "Bearer masto-token".parse().unwrap());
        r
    };
    let good = send_to_prism(prism, build(), "https://mastodon.example", None).await;
    assert_eq!(good.status, 200, "the request as built is accepted: {good:#?}");
    assert!(request_violations(&good).is_empty(), "{good:#?}");
    // A visibility Mastodon does not have.
    let mut wrong = build();
    wrong.body = r#"{"status": "hello", "visibility": "friends"}"#.into();
    let ex = send_to_prism(prism, wrong, "https://mastodon.example", None).await;
    assert_eq!(ex.status, 422, "{ex:#?}");
    assert!(!request_violations(&ex).is_empty(), "{ex:#?}");
}
