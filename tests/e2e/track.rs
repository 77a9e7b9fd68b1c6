//! Web activity end to end, on both stores: `/track.js` in a real browser (Debian's
//! chromium driven by playwright-core, `tests/browser/track.mjs`) on a page served from
//! another loopback origin sends nothing, sets no cookie and stores nothing before the page
//! calls `enlace.consent(true)`, then records one page view with its time on page when the
//! page is left; `POST /track` refuses other origins, bad tokens, pages of another origin and
//! large bodies, and stores a repeated beacon once.

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::response::Html;
use enlace_store::{ContactKey, TimelineQuery};
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::*;

/// The site: one page that loads Enlace's script.
async fn site(enlace: Arc<Mutex<String>>) -> std::net::SocketAddr {
    async fn page(State(enlace): State<Arc<Mutex<String>>>) -> Html<String> {
        let base = enlace.lock().unwrap().clone();
        Html(format!(
            "<!doctype html><html><head><title>Dog food, 2 kg</title><script src=\"{base}/track.js\"></script></head>\
             <body><h1>Dog food</h1></body></html>"
        ))
    }
    serve_local(axum::Router::new().route("/products/dog-food", axum::routing::get(page)).with_state(enlace)).await
}

async fn server_for(site: std::net::SocketAddr) -> TestServer {
    let web = enlace_web::WebConfig { track_origins: vec![format!("http://{site}")], ..Default::default() };
    TestServer::start_configured(enlace_connectors::registry(), web).await
}

async fn contact(s: &TestServer, email: &str) -> String {
    let c: Value = s.api(Method::POST, "/api/v1/contacts").json(&json!({"email": email})).send().await.unwrap().json().await.unwrap();
    c["contact"]["id"].as_str().unwrap().to_string()
}

async fn views(s: &TestServer, id: &str) -> Vec<enlace_store::TimelineEvent> {
    s.store.timeline_page(id, &TimelineQuery { kinds: vec!["page_viewed".into()], ..Default::default() }).await.unwrap()
}

/// Runs a scenario of `tests/browser` (off the test's runtime, which serves the site and Enlace).
async fn browser_scenario(script: &'static str, args: Vec<String>) -> Value {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        dir.join("node_modules/playwright-core").is_dir(),
        "the browser tests need playwright-core: run `.ci/run` once, or `npm install --prefix tests/browser` (and `apt-get install chromium`)"
    );
    let out = tokio::task::spawn_blocking(move || std::process::Command::new("node").current_dir(&dir).arg(script).args(args).output())
        .await
        .unwrap()
        .expect("node runs");
    assert!(out.status.success(), "{script} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{script} printed no JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

async fn the_script_sends_nothing_before_consent_then_records_the_page_view() {
    let enlace = Arc::new(Mutex::new(String::new()));
    let site = site(enlace.clone()).await;
    let s = server_for(site).await;
    *enlace.lock().unwrap() = s.base.clone();
    let id = contact(&s, "visitor@example.com").await;
    let token = enlace_runner::links::contact_token(&s.store, &id);
    let page = format!("http://{site}/products/dog-food?enl={token}");

    let seen = browser_scenario("track.mjs", vec![page.clone(), s.base.clone()]).await;
    let without = &seen["without"];
    assert_eq!(without["before"], json!({"sent": 0, "cookies": 0, "storage": 0}), "{seen}");
    assert_eq!(without["after"], json!({"sent": 0, "stored": null, "cookies": 0}), "nothing sent or kept without consent: {seen}");
    let with = &seen["with"];
    assert_eq!(with["before"], json!({"sent": 0, "cookies": 0, "storage": 0}), "nothing before the consent: {seen}");
    // (The beacon leaves as the page unloads, where the browser's request events may miss
    // it: the server's own count below is the proof.)
    assert!(with["after"]["sent"].as_u64().unwrap() <= 1, "{seen}");
    assert_eq!(with["after"]["stored"], json!(token), "the token is kept after consent, first-party: {seen}");
    assert_eq!(with["after"]["cookies"], 0);

    let mut got = vec![];
    for _ in 0..100 {
        got = views(&s, &id).await;
        if !got.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(got.len(), 1, "one page view, from the visit with consent");
    let d = &got[0].data;
    assert_eq!((d["url"].as_str(), d["title"].as_str()), (Some(page.as_str()), Some("Dog food, 2 kg")));
    let ms = d["duration_ms"].as_u64().unwrap();
    assert!((300..60_000).contains(&ms), "time on page: {ms} ms");
    // The server saw one request to /track in all: the beacon of the visit with consent.
    let m = s.http.get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let track: Vec<&str> = m.lines().filter(|l| l.starts_with("enlace_http_requests_total") && l.contains("route=\"/track\"")).collect();
    assert_eq!(track, [r#"enlace_http_requests_total{route="/track",status="2xx"} 1"#], "{m}");
}

on_both_backends!(the_script_sends_nothing_before_consent_then_records_the_page_view);

#[tokio::test]
async fn track_checks_origin_token_page_and_size_and_stores_a_view_once() {
    let enlace = Arc::new(Mutex::new(String::new()));
    let site = site(enlace).await;
    let s = server_for(site).await;
    let origin = format!("http://{site}");
    let id = contact(&s, "ana@example.com").await;
    let token = enlace_runner::links::contact_token(&s.store, &id);
    let js = s.http.get(s.url("/track.js")).send().await.unwrap();
    assert_eq!(js.headers()["content-type"], "application/javascript; charset=utf-8");
    assert!(js.text().await.unwrap().contains("consent: function"));
    let view = |body: Value, from: Option<&str>| {
        let mut r = s.http.post(s.url("/track")).header("content-type", "text/plain;charset=UTF-8").body(body.to_string());
        if let Some(o) = from {
            r = r.header("origin", o);
        }
        r.send()
    };
    let ok = json!({"token": token, "view": "v-1", "url": format!("{origin}/products/dog-food"), "title": "Dog food", "referrer": "", "duration_ms": 1200});
    let r = view(ok.clone(), Some(&origin)).await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(r.headers()["access-control-allow-origin"], origin.as_str());
    // The same beacon again: stored once.
    assert_eq!(view(ok.clone(), Some(&origin)).await.unwrap().status(), 204);
    let got = views(&s, &id).await;
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].data,
        json!({"url": format!("{origin}/products/dog-food"), "title": "Dog food", "duration_ms": 1200, "referrer": ""})
    );

    let r = view(ok.clone(), Some("https://evil.example")).await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.headers().get("access-control-allow-origin").is_none());
    assert!(r.text().await.unwrap().contains("ENLACE_TRACK_ORIGINS"));
    assert_eq!(view(ok.clone(), None).await.unwrap().status(), 400);
    let mut other_page = ok.clone();
    other_page["url"] = json!("https://evil.example/x");
    let r = view(other_page, Some(&origin)).await.unwrap();
    assert_eq!((r.status().as_u16(), r.json::<Value>().await.unwrap()["path"].clone()), (400, json!("url")));
    let mut forged = ok.clone();
    forged["token"] = json!(format!("{}x", token));
    let r = view(forged, Some(&origin)).await.unwrap();
    assert_eq!((r.status().as_u16(), r.json::<Value>().await.unwrap()["path"].clone()), (400, json!("token")));
    let mut big = ok.clone();
    big["title"] = json!("x".repeat(10_000));
    assert_eq!(view(big, Some(&origin)).await.unwrap().status(), 413);
    let pre = s.http.request(Method::OPTIONS, s.url("/track")).header("origin", &origin).send().await.unwrap();
    assert_eq!(pre.status(), 204);
    assert_eq!(pre.headers()["access-control-allow-origin"], origin.as_str());
    assert_eq!(views(&s, &id).await.len(), 1, "nothing refused was stored");
    assert!(s.store.contact(ContactKey::Id(id)).await.unwrap().is_some());
}

/// Email opens and clicks: the pixel records `email_opened`; a click records `email_clicked`
/// and leads to the signed address only, with the contact's token for `/track.js`.
async fn opens_and_clicks_are_recorded_and_clicks_lead_only_where_signed() {
    let enlace = Arc::new(Mutex::new(String::new()));
    let site = site(enlace).await;
    let s = server_for(site).await;
    let id = contact(&s, "bo@example.com").await;
    let store = &s.store;
    let open = enlace_runner::links::open_token(store, "Bo@Example.com", "run-1:send");
    let r = s.http.get(s.url(&format!("/o/{open}"))).send().await.unwrap();
    assert_eq!((r.status().as_u16(), r.headers()["content-type"].to_str().unwrap()), (200, "image/gif"));
    let no_redirect = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let dest = format!("http://{site}/products/dog-food?src=mail#top");
    let click = enlace_runner::links::click_token(store, "bo@example.com", "run-1:send", &dest);
    let r = no_redirect.get(s.url(&format!("/c/{click}"))).send().await.unwrap();
    assert_eq!(r.status(), 302);
    let token = enlace_runner::links::contact_token(store, &id);
    assert_eq!(r.headers()["location"].to_str().unwrap(), format!("http://{site}/products/dog-food?src=mail&enl={token}#top"));
    // A token signed for another address: refused, no redirect anywhere.
    let (_, sig) = click.split_once('.').unwrap();
    use base64::Engine as _;
    let forged =
        format!("{}.{sig}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("bo@example.com\nrun-1:send\nhttps://evil.example/"));
    let r = no_redirect.get(s.url(&format!("/c/{forged}"))).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.headers().get("location").is_none());
    // An address that is not a contact: the redirect, nothing recorded, no token.
    let stranger = enlace_runner::links::click_token(store, "nobody@example.com", "m", &dest);
    let r = no_redirect.get(s.url(&format!("/c/{stranger}"))).send().await.unwrap();
    assert_eq!(r.headers()["location"].to_str().unwrap(), dest);

    let tl = s
        .store
        .timeline_page(&id, &TimelineQuery { kinds: vec!["email_opened".into(), "email_clicked".into()], ..Default::default() })
        .await
        .unwrap();
    let got: Vec<(&str, Value)> = tl.iter().map(|e| (e.kind.as_str(), e.data.clone())).collect();
    assert_eq!(
        got,
        [("email_clicked", json!({"message_id": "run-1:send", "url": dest})), ("email_opened", json!({"message_id": "run-1:send"}))]
    );
}

on_both_backends!(opens_and_clicks_are_recorded_and_clicks_lead_only_where_signed);
