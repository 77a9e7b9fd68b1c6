//! Twilio calling Enlace, end to end on the real server (both backends): a signed inbound
//! SMS starts its recipe with Twilio's fields and is answered with empty TwiML; a forged
//! one is 401 and stores nothing; Twilio's retry of a message starts no second run; a STOP
//! withdraws the sender's SMS consent (seen through the contacts API) and a later
//! `twilio.send_sms` to the number fails for good without calling Twilio (a local server
//! counts the calls); a STOP from an unknown number suppresses it; a delivery status with
//! its ErrorCode starts its recipe. Requests are signed here with Twilio's scheme through
//! the connector's `signature`, itself checked against Twilio's published values in the
//! connector's unit tests.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use enlace_connector_twilio::inbound::signature;
use enlace_runner::Runner;
use enlace_store::{RunFilter, RunStatus, Store};
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::*;

const ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";
const AUTH_TOKEN: &str = "e2e-twilio-auth-token";
const PUBLIC: &str = "https://enlace.example.com";

/// A local "Twilio" REST API that counts the messages it is asked to send.
async fn counting_twilio() -> (String, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(vec![]));
    let s = seen.clone();
    let app = Router::new().route(
        "/2010-04-01/Accounts/{account}/Messages.json",
        post(move |body: String| {
            let s = s.clone();
            async move {
                s.lock().unwrap().push(body);
                let answer = json!({"sid": "SM9f0e8ae6ade43cb3c0ce4525424e4049", "status": "queued", "to": "+14155550199",
                                    "from": "+14155550100", "date_created": "Tue, 14 Apr 2026 09:30:00 +0000"});
                (StatusCode::CREATED, axum::Json(answer)).into_response()
            }
        }),
    );
    let addr = serve_local(app).await;
    (format!("http://{addr}"), seen)
}

struct Env {
    base: String,
    store: Store,
    runner: Runner,
    token: String,
    http: reqwest::Client,
    target: Target,
    twilio_calls: Arc<Mutex<Vec<String>>>,
}

impl Env {
    /// The real application with `ENLACE_PUBLIC_URL` set (Twilio signs that address), the
    /// twilio connector pointed at a counting local server, and a Twilio connection.
    async fn start() -> Env {
        let (twilio_base, twilio_calls) = counting_twilio().await;
        let mut connectors: Vec<_> = enlace_connectors::all().into_iter().filter(|c| c.id() != "twilio").collect();
        connectors.push(enlace_connector_twilio::connector_at(&twilio_base));
        let registry = enlace_core::Registry::new(connectors).unwrap();
        let config = enlace_web::WebConfig { public_url: Some(format!("{PUBLIC}/")), ..enlace_web::WebConfig::default() };
        let s = TestServer::start_configured(registry, config).await;
        let env = Env {
            base: s.base,
            store: s.store,
            runner: s.runner,
            token: s.token,
            http: s.http,
            target: Target::start().await,
            twilio_calls,
        };
        let r = env
            .api(Method::POST, "/api/v1/connections")
            .json(&json!({"id": "twilio-main", "app": "twilio", "name": "Twilio",
                          "credentials": {"kind": "basic", "username": ACCOUNT_SID, "password": AUTH_TOKEN}}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{:?}", r.text().await);
        env
    }

    fn api(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.token)
    }

    /// Posts a form as Twilio does, signed for `PUBLIC` + `path_and_query` with `token`.
    async fn twilio_post(&self, path_and_query: &str, params: &[(&str, &str)], token: &str) -> reqwest::Response {
        self.twilio_post_signed_for(path_and_query, path_and_query, params, token).await
    }

    /// The same, signed for another address than the one it is posted to.
    async fn twilio_post_signed_for(&self, path_and_query: &str, signed: &str, params: &[(&str, &str)], token: &str) -> reqwest::Response {
        let pairs: Vec<(String, String)> = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let sig = signature(token, &format!("{PUBLIC}{signed}"), &pairs);
        let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(&pairs).finish();
        self.http
            .post(format!("{}{path_and_query}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-twilio-signature", sig)
            .body(body)
            .send()
            .await
            .unwrap()
    }

    async fn runs(&self, recipe: &str) -> Vec<enlace_store::RunRow> {
        self.store.list_runs(&RunFilter { recipe_id: Some(recipe.into()), limit: 100, ..Default::default() }).await.unwrap()
    }

    async fn install(&self, yaml: &str) {
        install(&self.runner, yaml).await;
    }
}

fn sms(sid: &str, from: &str, body: &str) -> Vec<(&'static str, String)> {
    vec![
        ("ToCountry", "US".into()),
        ("SmsMessageSid", sid.into()),
        ("NumMedia", "1".into()),
        ("MediaUrl0", "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages/MM1/Media/ME1".into()),
        ("MediaContentType0", "image/jpeg".into()),
        ("SmsSid", sid.into()),
        ("SmsStatus", "received".into()),
        ("Body", body.into()),
        ("To", "+14155550100".into()),
        ("NumSegments", "1".into()),
        ("MessageSid", sid.into()),
        ("AccountSid", ACCOUNT_SID.into()),
        ("From", from.into()),
        ("ApiVersion", "2010-04-01".into()),
    ]
}

fn refs<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

fn inbound_recipe(target: &str) -> String {
    format!(
        r#"
id: inbound
trigger: {{app: twilio, event: inbound_sms, connection: twilio-main, with: {{path: sms/in}}}}
steps:
  - id: forward
    app: http
    action: request
    with:
      method: POST
      url: "{target}"
      json:
        from: "{{{{trigger.From}}}}"
        to: "{{{{trigger.To}}}}"
        body: "{{{{trigger.Body}}}}"
        sid: "{{{{trigger.MessageSid}}}}"
        media: "{{{{trigger.MediaUrl0}}}}"
        media_type: "{{{{trigger.MediaContentType0}}}}"
        received_at: "{{{{trigger.received_at}}}}"
"#
    )
}

const PROMO: &str = r#"
id: promo
trigger: {app: webhook, event: catch, with: {path: promo}}
steps:
  - id: sms
    app: twilio
    action: send_sms
    connection: twilio-main
    retry: {attempts: 1}
    # Sent to numbers that are no contacts: transactional, so no recorded consent is needed;
    # a STOP still blocks it (a suppression blocks every message on the channel).
    transactional: true
    with:
      to: "{{trigger.body.to}}"
      from: "+14155550100"
      body: "20% off today only. Reply STOP to opt out."
"#;

async fn assert_twiml(r: reqwest::Response) -> reqwest::header::HeaderMap {
    assert_eq!(r.status(), 200);
    let headers = r.headers().clone();
    assert_eq!(headers["content-type"], "text/xml");
    assert_eq!(r.text().await.unwrap(), "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response/>");
    headers
}

async fn a_signed_inbound_sms_starts_its_recipe_once_and_gets_twiml() {
    let env = Env::start().await;
    env.install(&inbound_recipe(&env.target.url("/got"))).await;
    let params = sms("SM11111111111111111111111111111111", "+14155552671", "See you Thursday!");

    let headers = assert_twiml(env.twilio_post("/hooks/sms/in?site=eu", &refs(&params), AUTH_TOKEN).await).await;
    assert!(headers.get("x-enlace-duplicate").is_none());
    let got = env.target.wait_for("/got", 1).await;
    let b = &got[0].body;
    assert_eq!(b["from"], "+14155552671");
    assert_eq!(b["to"], "+14155550100");
    assert_eq!(b["body"], "See you Thursday!");
    assert_eq!(b["sid"], "SM11111111111111111111111111111111");
    assert_eq!(b["media"], "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages/MM1/Media/ME1");
    assert_eq!(b["media_type"], "image/jpeg");
    assert!(b["received_at"].as_str().unwrap().ends_with('Z'), "{b}");
    let runs = env.runs("inbound").await;
    assert_eq!(runs.len(), 1);
    assert_eq!(status(&env.store, &runs[0].id, RunStatus::Succeeded).await.status, RunStatus::Succeeded);

    // Twilio retries the same message (it saw no answer in time): same TwiML, no second run.
    let headers = assert_twiml(env.twilio_post("/hooks/sms/in?site=eu", &refs(&params), AUTH_TOKEN).await).await;
    assert_eq!(headers["x-enlace-duplicate"], "true");
    assert_eq!(headers["x-enlace-run-id"].to_str().unwrap(), runs[0].id, "the answer names the first run");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(env.runs("inbound").await.len(), 1);
    assert_eq!(env.target.count_on("/got"), 1);

    // Forged: another token, another address signed, no signature, a body changed after signing.
    let forged = sms("SM22222222222222222222222222222222", "+14155552671", "Hi");
    let wrong_token = env.twilio_post("/hooks/sms/in?site=eu", &refs(&forged), "not-the-token").await;
    let other_query = env.twilio_post_signed_for("/hooks/sms/in?site=eu", "/hooks/sms/in?site=us", &refs(&forged), AUTH_TOKEN).await;
    for r in [wrong_token, other_query] {
        assert_eq!(r.status(), 401);
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["code"], "bad_signature");
        assert!(e["message"].as_str().unwrap().contains("does not match"), "{e}");
        assert!(!e.to_string().contains(AUTH_TOKEN));
    }
    let unsigned = env
        .http
        .post(format!("{}/hooks/sms/in?site=eu", env.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("MessageSid=SM3&From=%2B14155552671&Body=Hi")
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 401);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(env.runs("inbound").await.len(), 1, "nothing stored for a refused request");
    assert_eq!(env.target.count_on("/got"), 1);
}

async fn stop_from_a_known_contact_withdraws_sms_consent_and_blocks_send_sms() {
    let env = Env::start().await;
    env.install(&inbound_recipe(&env.target.url("/got"))).await;
    env.install(PROMO).await;
    let r = env
        .api(Method::POST, "/api/v1/contacts")
        .json(&json!({"email": "ana@example.com", "fields": {"first_name": "Ana", "phone": "+1 (415) 555-2671"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let contact: Value = r.json().await.unwrap();
    let id = contact["contact"]["id"].as_str().unwrap().to_string();

    // A forged STOP changes nothing.
    let stop = sms("SM33333333333333333333333333333333", "+14155552671", " stop ");
    let r = env.twilio_post("/hooks/sms/in", &refs(&stop), "forged").await;
    assert_eq!(r.status(), 401);
    let d: Value = env.api(Method::GET, &format!("/api/v1/contacts/{id}")).send().await.unwrap().json().await.unwrap();
    assert_eq!(d["consents"], json!([]));

    // Twilio's STOP: recorded before the answer.
    assert_twiml(env.twilio_post("/hooks/sms/in", &refs(&stop), AUTH_TOKEN).await).await;
    let d: Value = env.api(Method::GET, &format!("/api/v1/contacts/{id}")).send().await.unwrap().json().await.unwrap();
    let consents = d["consents"].as_array().unwrap();
    assert_eq!(consents.len(), 1, "{d}");
    let c = &consents[0];
    assert_eq!((&c["purpose"], &c["channel"], &c["status"]), (&json!("marketing"), &json!("sms"), &json!("withdrawn")));
    let ev = &c["evidence"];
    assert_eq!(ev["source"], "twilio_inbound_sms");
    assert_eq!(ev["message_sid"], "SM33333333333333333333333333333333");
    assert_eq!(ev["body"], " stop ");
    assert!(ev["at"].as_str().unwrap().ends_with('Z'), "{ev}");
    assert_eq!(d["timeline"][0]["kind"], "consent_recorded");
    // The recipe saw the keyword and what it did.
    let runs = env.runs("inbound").await;
    let run = env.store.run_detail(&runs[0].id).await.unwrap().unwrap();
    assert_eq!(run.event.payload["opt_out"], json!({"keyword": "STOP", "status": "withdrawn", "contacts": [id]}));

    // A later message to that number is blocked by the send policy, and Twilio is never called.
    let r = env.http.post(format!("{}/hooks/promo", env.base)).json(&json!({"to": "+14155552671"})).send().await.unwrap();
    assert_eq!(r.status(), 202);
    let run_id = r.json::<Value>().await.unwrap()["run_id"].as_str().unwrap().to_string();
    status(&env.store, &run_id, RunStatus::Succeeded).await;
    let step = env.store.run_detail(&run_id).await.unwrap().unwrap().steps.remove(0);
    let policy = &step.output.as_ref().unwrap()["policy"];
    assert_eq!(policy["decision"], "blocked", "{policy}");
    let reason = policy["reason"].as_str().unwrap();
    assert!(reason.contains("+14155552671 is suppressed on sms") && reason.contains("replied `stop`"), "{reason}");
    assert!(env.twilio_calls.lock().unwrap().is_empty(), "Twilio was not called");

    // The local Twilio does count: a number that never opted out gets its SMS.
    let r = env.http.post(format!("{}/hooks/promo", env.base)).json(&json!({"to": "+14155550199"})).send().await.unwrap();
    let run_id = r.json::<Value>().await.unwrap()["run_id"].as_str().unwrap().to_string();
    status(&env.store, &run_id, RunStatus::Succeeded).await;
    assert_eq!(env.twilio_calls.lock().unwrap().len(), 1);

    // START opts the number in again.
    let start = sms("SM44444444444444444444444444444444", "+14155552671", "START");
    assert_twiml(env.twilio_post("/hooks/sms/in", &refs(&start), AUTH_TOKEN).await).await;
    let r = env.http.post(format!("{}/hooks/promo", env.base)).json(&json!({"to": "+14155552671"})).send().await.unwrap();
    let run_id = r.json::<Value>().await.unwrap()["run_id"].as_str().unwrap().to_string();
    status(&env.store, &run_id, RunStatus::Succeeded).await;
    assert_eq!(env.twilio_calls.lock().unwrap().len(), 2);
}

async fn stop_from_an_unknown_number_suppresses_it() {
    let env = Env::start().await;
    env.install(&inbound_recipe(&env.target.url("/got"))).await;
    env.install(PROMO).await;
    let stop = sms("SM55555555555555555555555555555555", "+12025550143", "UNSUBSCRIBE");
    assert_twiml(env.twilio_post("/hooks/sms/in", &refs(&stop), AUTH_TOKEN).await).await;
    let list: Value = env.api(Method::GET, "/api/v1/contacts").send().await.unwrap().json().await.unwrap();
    assert_eq!(list["contacts"], json!([]), "no contact is created: {list}");

    let r = env.http.post(format!("{}/hooks/promo", env.base)).json(&json!({"to": "+1 202 555 0143"})).send().await.unwrap();
    let run_id = r.json::<Value>().await.unwrap()["run_id"].as_str().unwrap().to_string();
    status(&env.store, &run_id, RunStatus::Succeeded).await;
    let step = env.store.run_detail(&run_id).await.unwrap().unwrap().steps.remove(0);
    let reason = step.output.as_ref().unwrap()["policy"]["reason"].as_str().unwrap().to_string();
    assert!(reason.contains("+12025550143 is suppressed on sms") && reason.contains("replied `UNSUBSCRIBE`"), "{reason}");
    assert!(env.twilio_calls.lock().unwrap().is_empty(), "Twilio was not called");

    // A contact created later with the number starts with SMS consent withdrawn.
    let r = env
        .api(Method::POST, "/api/v1/contacts")
        .json(&json!({"email": "late@example.com", "fields": {"phone": "+12025550143"}}))
        .send()
        .await
        .unwrap();
    let id = r.json::<Value>().await.unwrap()["contact"]["id"].as_str().unwrap().to_string();
    let d: Value = env.api(Method::GET, &format!("/api/v1/contacts/{id}")).send().await.unwrap().json().await.unwrap();
    assert_eq!(d["consents"][0]["status"], "withdrawn", "{d}");
    assert_eq!(d["consents"][0]["channel"], "sms");
    assert_eq!(d["consents"][0]["evidence"]["message_sid"], "SM55555555555555555555555555555555");
}

async fn a_status_callback_with_an_error_code_starts_its_recipe() {
    let env = Env::start().await;
    env.install(&format!(
        r#"
id: delivery
trigger: {{app: twilio, event: status_callback, connection: twilio-main, with: {{path: sms/status}}}}
steps:
  - id: forward
    app: http
    action: request
    with:
      method: POST
      url: "{}"
      json:
        sid: "{{{{trigger.MessageSid}}}}"
        status: "{{{{trigger.MessageStatus}}}}"
        code: "{{{{trigger.ErrorCode}}}}"
"#,
        env.target.url("/status")
    ))
    .await;
    let cb = |status: &'static str| {
        vec![
            ("SmsSid", "SM66666666666666666666666666666666"),
            ("SmsStatus", status),
            ("MessageStatus", status),
            ("ErrorCode", "30003"),
            ("To", "+14155552671"),
            ("MessageSid", "SM66666666666666666666666666666666"),
            ("AccountSid", ACCOUNT_SID),
            ("From", "+14155550100"),
            ("ApiVersion", "2010-04-01"),
        ]
    };
    let r = env.twilio_post("/hooks/sms/status", &cb("undelivered"), AUTH_TOKEN).await;
    assert_eq!(r.status(), 204);
    let got = env.target.wait_for("/status", 1).await;
    assert_eq!(got[0].body, json!({"sid": "SM66666666666666666666666666666666", "status": "undelivered", "code": "30003"}));
    // The same status again starts nothing; the next status of the message does.
    assert_eq!(env.twilio_post("/hooks/sms/status", &cb("undelivered"), AUTH_TOKEN).await.status(), 204);
    assert_eq!(env.twilio_post("/hooks/sms/status", &cb("failed"), AUTH_TOKEN).await.status(), 204);
    let got = env.target.wait_for("/status", 2).await;
    assert_eq!(got[1].body["status"], "failed");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(env.runs("delivery").await.len(), 2);
    assert_eq!(env.twilio_post("/hooks/sms/status", &cb("failed"), "forged").await.status(), 401);
    assert_eq!(env.runs("delivery").await.len(), 2);
}

on_both_backends!(
    a_signed_inbound_sms_starts_its_recipe_once_and_gets_twiml,
    stop_from_a_known_contact_withdraws_sms_consent_and_blocks_send_sms,
    stop_from_an_unknown_number_suppresses_it,
    a_status_callback_with_an_error_code_starts_its_recipe,
);

#[test]
fn twilio_triggers_need_a_connection_and_take_only_a_path() {
    let registry = enlace_connectors::registry();
    let e = enlace_recipe::load(
        "id: x\ntrigger: {app: twilio, event: inbound_sms, with: {path: sms}}\nsteps:\n  - {id: f, filter: \"{{trigger.Body}}\"}\n",
        None,
        &registry,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("`twilio.inbound_sms` needs a connection"), "{e}");
    let e = enlace_recipe::load(
        "id: x\ntrigger: {app: twilio, event: status_callback, connection: t, with: {secret: x}}\nsteps:\n  - {id: f, filter: \"{{trigger.ErrorCode}}\"}\n",
        None,
        &registry,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("secret") && e.contains("path"), "{e}");
    let ok = enlace_recipe::load(
        "id: x\ntrigger: {app: twilio, event: inbound_sms, connection: t}\nsteps:\n  - {id: f, filter: \"{{trigger.From}}\"}\n",
        None,
        &registry,
    )
    .unwrap();
    assert_eq!(ok.hook().unwrap().path, "x", "the path defaults to the recipe's id");
}
