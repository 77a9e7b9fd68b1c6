//! Contract tests: the requests the `twilio`, `slack` and `sendgrid` connectors send are checked against
//! the vendors' own API descriptions (`../shared/vendor-specs/`, read in place) by Prism
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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
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
    (StatusCode::from_u16(status).unwrap(), [("content-type", content_type)], text).into_response()
}

async fn proxy(prism: &Prism) -> (String, Arc<Mutex<Vec<Exchange>>>) {
    let p = Proxy { upstream: prism.base.clone(), seen: Arc::default(), client: client() };
    let seen = p.seen.clone();
    let app = Router::new().fallback(forward).with_state(p);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
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
