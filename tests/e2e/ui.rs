//! The web UI end to end. In a real browser (Debian's chromium driven by playwright-core,
//! `tests/browser/ui.mjs`) against the real server on a fresh store, as a new user: first-run
//! setup; connect SendGrid (an API-key app, its API on a local stand-in) and a real SMTP
//! server (aiosmtpd); build webhook -> contacts upsert -> email with data pills in the step
//! editor; test a step; preview; enable; send a webhook; see the run succeed; stop the SMTP
//! server, see the run fail with a readable explanation; give the connection a repaired
//! server, replay; erase the contact. Screenshots at 1280 and 390 px go to
//! `target/ui-screenshots/` (or `$ENLACE_UI_SHOTS`). A phase fails on any console error,
//! failed request or unexpected HTTP error.
//!
//! Without a browser: sessions, CSRF, roles, the sign-in rate limit and the setup's
//! one-time nature, over plain HTTP.

use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use serde_json::{Value, json};

use crate::smtp::{PASSWORD as SMTP_PASSWORD, SmtpServer, USER as SMTP_USER};
use crate::support::*;

const ADMIN: &str = "marta@example.com";
const ADMIN_PASSWORD: &str = "a long enough passphrase";
const SENDGRID_KEY: &str = "SG.ui-test-key-0123456789";

fn shots() -> String {
    std::env::var("ENLACE_UI_SHOTS").unwrap_or_else(|_| {
        let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| format!("{}/target", env!("CARGO_MANIFEST_DIR")));
        format!("{target}/ui-screenshots")
    })
}

/// Runs a phase of `tests/browser/ui.mjs` (off the test's runtime, which serves Enlace).
async fn phase(config: Value) -> Value {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        dir.join("node_modules/playwright-core").is_dir(),
        "the browser tests need playwright-core: run `.ci/run` once, or `npm install --prefix tests/browser` (and `apt-get install chromium`)"
    );
    let arg = config.to_string();
    let out = tokio::task::spawn_blocking(move || std::process::Command::new("node").current_dir(&dir).arg("ui.mjs").arg(arg).output())
        .await
        .unwrap()
        .expect("node runs");
    assert!(
        out.status.success(),
        "ui.mjs {} failed:\n{}\n{}",
        config["phase"],
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    let seen: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("ui.mjs printed no JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(seen["problems"], json!([]), "console errors, failed requests or error answers in phase {}: {seen:#}", config["phase"]);
    seen
}

fn smtp_config(smtp: &SmtpServer) -> Value {
    json!({"port": smtp.port, "user": SMTP_USER, "password": SMTP_PASSWORD, "ca_pem": smtp.ca_pem})
}

#[tokio::test]
async fn a_new_user_sets_up_connects_builds_previews_enables_repairs_replays_and_erases() {
    let sendgrid = Target::start().await;
    sendgrid.script("/v3/scopes", vec![Answer::status(200, r#"{"scopes": ["mail.send", "alerts.read"]}"#)]);
    let mut connectors: Vec<_> = enlace_connectors::all().into_iter().filter(|c| c.id() != "sendgrid").collect();
    connectors.push(enlace_connector_sendgrid::connector_at(&sendgrid.url("")));
    let s = TestServer::start_with(enlace_core::Registry::new(connectors).unwrap()).await;
    let smtp = SmtpServer::start().await;
    let hook = "welcome";
    let base = json!({"base": s.base, "shots": shots(), "user": ADMIN, "password": ADMIN_PASSWORD, "hook": hook,
                      "sendgrid_key": SENDGRID_KEY, "smtp": smtp_config(&smtp)});

    // Phase 1: from an empty installation to a run that sent a real email.
    let mut cfg = base.clone();
    cfg["phase"] = json!("first");
    // The sample request is answered 202 (not a run); nothing else may answer an error.
    let seen = phase(cfg).await;
    assert_eq!(seen["first_url"], "/setup", "a fresh installation sends every page to the setup: {seen:#}");
    assert!(seen["welcome"].as_str().unwrap().contains("admin account is ready"), "{seen:#}");
    assert_eq!(seen["apps_visible"], 1, "the catalog search keeps SendGrid only: {seen:#}");
    assert_eq!(seen["sendgrid_health"], "Working", "{seen:#}");
    assert!(seen["sendgrid_flash"].as_str().unwrap().contains("may send mail"), "{seen:#}");
    let scopes = sendgrid.received_on("/v3/scopes");
    assert_eq!(scopes.len(), 1);
    assert_eq!(
        scopes[0].header("authorization").as_deref(),
        Some(&*format!("Bearer {SENDGRID_KEY}")),
        "the key went as SendGrid's bearer token"
    );
    assert_eq!(seen["smtp_health"], "Working", "the SMTP test logged in: {seen:#}");
    assert!(seen["hook_url"].as_str().unwrap().ends_with("/hooks/welcome"), "{seen:#}");
    assert_eq!(seen["sample_status"], 202, "the sample request is kept, not run: {seen:#}");
    assert!(seen["published"].as_str().unwrap().contains("Published as version 1"), "{seen:#}");
    let pills: Vec<&str> = seen["sample_pills"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(pills.contains(&"trigger.body.email") && pills.contains(&"trigger.body.name"), "pills from the caught sample: {seen:#}");
    assert_eq!(seen["pill_inserted"], "{{trigger.body.email}}", "{seen:#}");
    assert!(seen["help_text"].as_str().unwrap().to_lowercase().contains("subject"), "help text from the schema: {seen:#}");
    let steps: Vec<&str> = seen["steps"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert_eq!(steps.len(), 3, "{seen:#}");
    assert!(steps[1].contains("save") && steps[1].contains("contacts.upsert_contact"), "{seen:#}");
    assert!(steps[2].contains("mail") && steps[2].contains("smtp.send_email") && steps[2].contains("smtp-main"), "{seen:#}");
    let test = seen["test_step"].as_str().unwrap();
    assert!(
        test.contains("dry run") && test.contains("Welcome, Ana") && test.contains("news@example.com"),
        "the dry run shows the rendered email: {test}"
    );
    assert_eq!(seen["preview_sent"], "1", "{seen:#}");
    assert_eq!(seen["enable_label"], "Enable (1 message(s) in the preview)", "{seen:#}");
    assert_eq!(seen["state"], "enabled");
    assert_eq!(seen["run_status"], "succeeded", "{seen:#}");
    assert_eq!(seen["listed"], 1, "the runs list filtered by recipe and status: {seen:#}");
    assert_eq!(smtp.messages().len(), 1, "the email arrived");
    // The recipe the editor made is the recipe format, saved through the API's code.
    let r: Value = s.api(reqwest::Method::GET, "/api/v1/recipes/welcome").send().await.unwrap().json().await.unwrap();
    assert_eq!(r["source"]["steps"][0]["with"]["email"], "{{trigger.body.email}}", "{r:#}");
    assert_eq!(r["source"]["steps"][1]["with"]["to"], "{{steps.save.contact.email}}", "{r:#}");
    assert_eq!(r["source"]["steps"][1]["retry"], json!({"attempts": 1}), "{r:#}");
    assert_eq!(r["enabled"], true);

    // Phase 2: the SMTP server is down; the run fails, explained.
    drop(smtp);
    let mut cfg = base.clone();
    cfg["phase"] = json!("fail");
    let seen = phase(cfg).await;
    assert_eq!(seen["login_url"], "/login?next=%2Fui%2Fruns", "{seen:#}");
    assert_eq!(seen["run_status"], "failed", "{seen:#}");
    assert!(seen["what"].as_str().unwrap().contains("failed for a moment"), "{seen:#}");
    assert!(seen["todo"].as_str().unwrap().contains("then replay"), "{seen:#}");
    let failed = seen["run_id"].as_str().unwrap().to_string();

    // Phase 3: the connection gets a working server; the run is replayed and succeeds.
    let repaired = SmtpServer::start().await;
    let mut cfg = base.clone();
    cfg["phase"] = json!("repair");
    cfg["smtp"] = smtp_config(&repaired);
    cfg["failed_run"] = json!(failed);
    let seen = phase(cfg).await;
    assert!(seen["repair_flash"].as_str().unwrap().contains("test passed"), "{seen:#}");
    assert_eq!(seen["health"], "Working");
    assert!(seen["replay_flash"].as_str().unwrap().contains("Replaying"), "{seen:#}");
    assert_eq!(seen["run_status"], "succeeded", "{seen:#}");
    assert_eq!(repaired.messages().len(), 1, "the replayed email arrived");

    // Phase 4: erase the contact.
    let mut cfg = base.clone();
    cfg["phase"] = json!("erase");
    let seen = phase(cfg).await;
    assert!(seen["erased_flash"].as_str().unwrap().contains("erased"), "{seen:#}");
    assert_eq!(seen["after"], "No contacts match.", "{seen:#}");
    let found = s.store.contact_detail(enlace_store::ContactKey::Email("ana@example.com".into())).await.unwrap();
    assert!(found.is_none(), "the contact is gone from the store");
}

// ---------------------------------------------------------------- over plain HTTP

/// A client that keeps cookies by hand and never follows redirects.
struct Browser {
    http: reqwest::Client,
    base: String,
    cookies: Vec<(String, String)>,
}

impl Browser {
    fn new(base: &str) -> Browser {
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Browser { http, base: base.to_string(), cookies: vec![] }
    }

    fn keep(&mut self, r: &reqwest::Response) -> Vec<String> {
        let set: Vec<String> = r.headers().get_all(SET_COOKIE).iter().map(|v| v.to_str().unwrap().to_string()).collect();
        for c in &set {
            let (kv, _) = c.split_once(';').unwrap_or((c, ""));
            let (k, v) = kv.split_once('=').unwrap();
            self.cookies.retain(|(n, _)| n != k);
            if !v.is_empty() {
                self.cookies.push((k.to_string(), v.to_string()));
            }
        }
        set
    }

    fn cookie(&self, name: &str) -> Option<String> {
        self.cookies.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone())
    }

    fn header(&self) -> String {
        self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
    }

    async fn get(&mut self, path: &str) -> (u16, String, Option<String>) {
        let r = self.http.get(format!("{}{path}", self.base)).header(COOKIE, self.header()).send().await.unwrap();
        self.keep(&r);
        let loc = r.headers().get(LOCATION).map(|v| v.to_str().unwrap().to_string());
        (r.status().as_u16(), r.text().await.unwrap(), loc)
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> (u16, String, Option<String>, Vec<String>) {
        let r = self.http.post(format!("{}{path}", self.base)).header(COOKIE, self.header()).form(form).send().await.unwrap();
        let set = self.keep(&r);
        let loc = r.headers().get(LOCATION).map(|v| v.to_str().unwrap().to_string());
        (r.status().as_u16(), r.text().await.unwrap(), loc, set)
    }

    /// The `_csrf` value of the first form of a page.
    async fn csrf(&mut self, path: &str) -> String {
        let (_, html, _) = self.get(path).await;
        let at = html.find("name=\"_csrf\" value=\"").unwrap_or_else(|| panic!("no CSRF field on {path}: {html}")) + 20;
        html[at..at + html[at..].find('"').unwrap()].to_string()
    }

    async fn sign_in(&mut self, user: &str, password: &str) -> (u16, Option<String>, Vec<String>) {
        let token = self.csrf("/login").await;
        let (status, _, loc, set) =
            self.post("/login", &[("_csrf", &token), ("username", user), ("password", password), ("next", "/ui/runs")]).await;
        (status, loc, set)
    }
}

async fn set_up(s: &TestServer) -> Browser {
    let mut b = Browser::new(&s.base);
    let token = b.csrf("/setup").await;
    let (status, _, loc, _) =
        b.post("/setup", &[("_csrf", &token), ("username", ADMIN), ("password", ADMIN_PASSWORD), ("confirm", ADMIN_PASSWORD)]).await;
    assert_eq!((status, loc.as_deref()), (303, Some("/ui/apps")));
    b
}

async fn setup_is_first_and_once_sessions_are_hashed_and_end_at_sign_out() {
    let s = TestServer::start().await;
    let mut anon = Browser::new(&s.base);
    for path in ["/", "/ui/runs", "/login", "/ui/no-such-page"] {
        let (status, _, loc) = anon.get(path).await;
        assert_eq!((status, loc.as_deref()), (303, Some("/setup")), "{path}");
    }
    // The setup form refuses a short password and a form without its token.
    let token = anon.csrf("/setup").await;
    let (status, html, _, _) =
        anon.post("/setup", &[("_csrf", &token), ("username", ADMIN), ("password", "short"), ("confirm", "short")]).await;
    assert_eq!(status, 422);
    assert!(html.contains("at least 12 characters") && html.contains("aria-invalid=\"true\""), "{html}");
    let (status, html, _, _) = anon.post("/setup", &[("username", ADMIN), ("password", ADMIN_PASSWORD), ("confirm", ADMIN_PASSWORD)]).await;
    assert_eq!(status, 403);
    assert!(html.contains("This form has expired"), "{html}");
    assert_eq!(s.store.ui_user_count().await.unwrap(), 0);

    let (status, _, loc, set) =
        anon.post("/setup", &[("_csrf", &token), ("username", ADMIN), ("password", ADMIN_PASSWORD), ("confirm", ADMIN_PASSWORD)]).await;
    assert_eq!((status, loc.as_deref()), (303, Some("/ui/apps")));
    let session = set.iter().find(|c| c.starts_with("enlace_session=")).expect("a session cookie");
    assert!(session.contains("HttpOnly") && session.contains("SameSite=Lax") && !session.contains("Secure"), "{session}");
    // Only the hash of the cookie's value is stored.
    let id = anon.cookie("enlace_session").unwrap();
    assert_eq!(id.len(), 64);
    let now = chrono::Utc::now().timestamp_millis();
    assert!(s.store.ui_session(&enlace_store::token_hash(&id), now).await.unwrap().is_some());
    assert!(s.store.ui_session(&id, now).await.unwrap().is_none());
    let (_, account) = s.store.ui_user_by_name(ADMIN).await.unwrap().unwrap();
    assert!(account.starts_with("$argon2id$") && !account.contains(ADMIN_PASSWORD));

    // Set up once: the setup is closed, and a second admin cannot be made through it.
    let mut other = Browser::new(&s.base);
    let (status, _, loc) = other.get("/setup").await;
    assert_eq!((status, loc.as_deref()), (303, Some("/login")));
    let token = other.csrf("/login").await;
    let (status, _, loc, _) = other
        .post("/setup", &[("_csrf", &token), ("username", "mallory"), ("password", ADMIN_PASSWORD), ("confirm", ADMIN_PASSWORD)])
        .await;
    assert_eq!((status, loc.as_deref()), (303, Some("/login")));
    assert_eq!(s.store.ui_user_count().await.unwrap(), 1);

    // Signed in, pages render; an open redirect through `next` is refused.
    let (status, html, _) = anon.get("/ui/runs").await;
    assert_eq!(status, 200);
    assert!(html.contains(ADMIN));
    let token = other.csrf("/login").await;
    let (status, _, loc, _) = other
        .post("/login", &[("_csrf", &token), ("username", ADMIN), ("password", ADMIN_PASSWORD), ("next", "//evil.example.com/")])
        .await;
    assert_eq!((status, loc.as_deref()), (303, Some("/")));

    // Signing out ends the session in the store, not just in the browser.
    let token = anon.csrf("/ui/runs").await;
    let (status, _, loc, _) = anon.post("/logout", &[("_csrf", &token)]).await;
    assert_eq!((status, loc.as_deref()), (303, Some("/login")));
    assert!(s.store.ui_session(&enlace_store::token_hash(&id), now).await.unwrap().is_none());
    let mut stale = Browser::new(&s.base);
    stale.cookies.push(("enlace_session".into(), id));
    let (status, _, loc) = stale.get("/ui/runs").await;
    assert_eq!((status, loc.as_deref()), (303, Some("/login?next=%2Fui%2Fruns")));
}

async fn every_form_needs_the_session_token_and_roles_are_enforced_by_the_server() {
    let s = TestServer::start().await;
    let mut admin = set_up(&s).await;
    // A form without the token, or with another session's, changes nothing.
    let (status, html, _, _) = admin.post("/ui/tokens", &[("name", "ci")]).await;
    assert_eq!(status, 403);
    assert!(html.contains("This form has expired") && html.contains("reload the page"), "{html}");
    let (status, _, _, _) = admin.post("/ui/tokens", &[("_csrf", "0000"), ("name", "ci")]).await;
    assert_eq!(status, 403);
    assert!(s.store.list_tokens().await.unwrap().iter().all(|t| t.name != "ci"));
    // With it: the token is shown once, and works on the API.
    let token = admin.csrf("/ui/tokens").await;
    let (status, html, _, _) = admin.post("/ui/tokens", &[("_csrf", &token), ("name", "ci")]).await;
    assert_eq!(status, 200);
    let marker = "id=\"new-token\" type=\"text\" readonly value=\"";
    let at = html.find(marker).unwrap() + marker.len();
    let api_token = &html[at..at + html[at..].find('"').unwrap()];
    assert!(api_token.starts_with("enl_"), "{api_token}");
    let r = s.http.get(s.url("/api/v1/recipes")).bearer_auth(api_token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let (_, html, _) = admin.get("/ui/tokens").await;
    assert!(!html.contains(api_token), "shown once only");
    let (status, _, _, _) = admin.post("/ui/tokens/ci/revoke", &[("_csrf", &token)]).await;
    assert_eq!(status, 303);
    let r = s.http.get(s.url("/api/v1/recipes")).bearer_auth(api_token).send().await.unwrap();
    assert_eq!(r.status(), 401, "revoked");

    // A viewer reads but changes nothing; an editor edits but manages no accounts or tokens.
    for (name, role) in [("vera", "viewer"), ("eddie", "editor")] {
        let (status, _, _, _) = admin
            .post(
                "/ui/users",
                &[("_csrf", &token), ("username", name), ("role", role), ("password", ADMIN_PASSWORD), ("confirm", ADMIN_PASSWORD)],
            )
            .await;
        assert_eq!(status, 303);
    }
    install(
        &s.runner,
        "id: r1\nenabled: false\ntrigger: {app: webhook, event: catch, with: {path: r1}}\nsteps:\n  - id: f\n    filter: \"{{trigger.body.ok}}\"\n",
    )
    .await;
    let mut viewer = Browser::new(&s.base);
    assert_eq!(viewer.sign_in("vera", ADMIN_PASSWORD).await.0, 303);
    let (status, html, _) = viewer.get("/ui/recipes/r1").await;
    assert_eq!(status, 200);
    assert!(!html.contains("/ui/recipes/r1/enable"));
    let vt = viewer.csrf("/ui/runs").await;
    let (status, html, _, _) = viewer.post("/ui/recipes/r1/enable", &[("_csrf", &vt)]).await;
    assert_eq!(status, 403, "{html}");
    assert!(html.contains("This needs the editor role"), "{html}");
    assert!(!s.runner.catalog().current("r1").unwrap().row.enabled);
    assert_eq!(viewer.get("/ui/tokens").await.0, 403);
    let mut editor = Browser::new(&s.base);
    assert_eq!(editor.sign_in("eddie", ADMIN_PASSWORD).await.0, 303);
    let et = editor.csrf("/ui/runs").await;
    assert_eq!(editor.post("/ui/recipes/r1/enable", &[("_csrf", &et)]).await.0, 303);
    assert!(s.runner.catalog().current("r1").unwrap().row.enabled);
    assert_eq!(editor.get("/ui/users").await.0, 403);
    // The viewer's token is not the editor's: tokens are bound to their session.
    assert_eq!(editor.post("/ui/recipes/r1/disable", &[("_csrf", &vt)]).await.0, 403);
    // The last admin cannot be demoted.
    let me = s.store.ui_user_by_name(ADMIN).await.unwrap().unwrap().0.id;
    let (_, _, loc, _) = admin.post(&format!("/ui/users/{me}/role"), &[("_csrf", &token), ("role", "viewer")]).await;
    assert_eq!(loc.as_deref(), Some("/ui/users"));
    assert_eq!(s.store.ui_user_by_name(ADMIN).await.unwrap().unwrap().0.role, "admin");
}

on_both_backends!(
    setup_is_first_and_once_sessions_are_hashed_and_end_at_sign_out,
    every_form_needs_the_session_token_and_roles_are_enforced_by_the_server
);

#[tokio::test]
async fn sign_in_is_rate_limited_per_name_and_errors_are_pages() {
    let s = TestServer::start().await;
    let _admin = set_up(&s).await;
    let mut b = Browser::new(&s.base);
    for _ in 0..5 {
        let (status, _, _) = b.sign_in(ADMIN, "wrong password!!").await;
        assert_eq!(status, 401);
    }
    // Locked out, even with the right password, and told for how long.
    let token = b.csrf("/login").await;
    let (status, html, _, _) = b.post("/login", &[("_csrf", &token), ("username", ADMIN), ("password", ADMIN_PASSWORD)]).await;
    assert_eq!(status, 429);
    assert!(html.contains("Too many failed sign-ins. Wait 15 minutes"), "{html}");
    // The address is locked out as well: another name from it is refused too.
    let (status, _, _) = b.sign_in("someone-else", "whatever password").await;
    assert_eq!(status, 429, "the address is locked out too");

    // A page that does not exist is an HTML page, not JSON.
    let mut admin = Browser::new(&s.base);
    admin.cookies = _admin.cookies.clone();
    let (status, html, _) = admin.get("/ui/runs/no-such-run").await;
    assert_eq!(status, 404);
    assert!(html.contains("<h1 id=\"err-title\">Not found</h1>") && html.contains("There is no run"), "{html}");
    let (status, html, _) = admin.get("/ui/nothing-here").await;
    assert_eq!(status, 404);
    assert!(html.contains("There is no page at this address"), "{html}");
}

#[tokio::test]
async fn cookies_are_secure_behind_https() {
    let web = enlace_web::WebConfig { public_url: Some("https://enlace.example.com".into()), ..Default::default() };
    let s = TestServer::start_configured(enlace_connectors::registry(), web).await;
    let mut b = Browser::new(&s.base);
    let (_, _, _) = b.get("/setup").await;
    let token = b.cookie("enlace_pre").expect("a pre-session cookie");
    let (status, _, _, set) =
        b.post("/setup", &[("_csrf", &token), ("username", ADMIN), ("password", ADMIN_PASSWORD), ("confirm", ADMIN_PASSWORD)]).await;
    assert_eq!(status, 303);
    let session = set.iter().find(|c| c.starts_with("enlace_session=")).unwrap();
    assert!(session.contains("; Secure") && session.contains("HttpOnly"), "{session}");
}

// ---------------------------------------------------------------- the social calendar

/// Runs a browser scenario of `tests/browser/` with its config; its JSON observations.
async fn scenario(script: &'static str, config: Value) -> Value {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        dir.join("node_modules/playwright-core").is_dir(),
        "the browser tests need playwright-core: `npm install --prefix tests/browser`"
    );
    let arg = config.to_string();
    let out = tokio::task::spawn_blocking(move || std::process::Command::new("node").current_dir(&dir).arg(script).arg(arg).output())
        .await
        .unwrap()
        .expect("node runs");
    assert!(out.status.success(), "{script} failed:\n{}\n{}", String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout));
    let seen: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{script} printed no JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(seen["problems"], json!([]), "{script}: {seen:#}");
    seen
}

/// `day` of next month in `tz` at `time`, in ms since the epoch.
fn next_month_at(tz: chrono_tz::Tz, day: u32, h: u32, m: u32) -> (String, i64) {
    use chrono::{Datelike, TimeZone};
    let now = chrono::Utc::now().with_timezone(&tz);
    let (y, mo) = if now.month() == 12 { (now.year() + 1, 1) } else { (now.year(), now.month() + 1) };
    let at = tz.with_ymd_and_hms(y, mo, day, h, m, 0).single().unwrap();
    (format!("{y:04}-{mo:02}-{day:02}"), at.timestamp_millis())
}

fn api_ms(v: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("not a time: {v}"))).unwrap().timestamp_millis()
}

/// Schedule a social post on the calendar and reschedule it by drag, in chromium: the post
/// lands on its day in the viewer's zone, a real mouse drag moves it to another day at the
/// same time of day (checked through the API), a refused drag puts the chip back with the
/// error; a viewer sees the calendar and can change nothing.
#[tokio::test]
async fn schedule_a_social_post_on_the_calendar_and_reschedule_it_by_drag() {
    let s = TestServer::start().await;
    let mut admin = set_up(&s).await;
    // The channel's connection to the `mastodon` app. Nothing is published in this test
    // (every time is next month), so no instance is called.
    s.store
        .create_connection(
            "masto-main",
            "mastodon",
            "Mastodon (test)",
            &enlace_core::Credentials::Bearer { token: enlace_core::Secret::new("tok-masto".to_string()) },
            None,
            0,
        )
        .await
        .unwrap();
    let madrid: chrono_tz::Tz = "Europe/Madrid".parse().unwrap();
    let (day1, _) = next_month_at(madrid, 10, 10, 30);
    let (day2, moved_to) = next_month_at(madrid, 12, 10, 30);
    let (day3, _) = next_month_at(madrid, 14, 12, 45);
    let (_, second_at) = next_month_at(madrid, 10, 12, 45);
    let text = "Launch day: our new release is out";
    let text2 = "Second post, moved by keyboard";
    let cfg = json!({"base": s.base, "shots": shots(), "user": ADMIN, "password": ADMIN_PASSWORD, "tz": "Europe/Madrid",
                     "day1": day1, "day2": day2, "day3": day3, "time": "10:30", "channel": "Masto", "connection": "masto-main",
                     "text": text, "text2": text2, "api_token": s.token});
    let seen = scenario("calendar.mjs", cfg).await;
    assert_eq!(seen["nav"], "Social", "{seen:#}");
    assert!(seen["channel_flash"].as_str().unwrap().contains("The channel Masto is ready"), "{seen:#}");
    assert!(seen["slot_flash"].as_str().unwrap().contains("Added a 09:00 slot to Masto"), "{seen:#}");
    assert!(seen["slots"][0].as_str().unwrap().starts_with("mon, tue, wed, thu, fri at 09:00"), "{seen:#}");
    let too_long = seen["too_long"].as_str().unwrap();
    assert!(too_long.contains("Does not fit") && too_long.contains("text: 510 of 500 characters: cut 10"), "{too_long}");
    // The link goes at the end on Mastodon, and counts as 23.
    let fits_len = text.chars().count() + 2 + 23;
    assert_eq!(seen["fits"], format!("{fits_len}/500 characters"), "{seen:#}");
    assert_eq!(seen["preview_text"], format!("{text}\n\nhttps://example.com/launch"), "{seen:#}");
    assert_eq!(seen["scheduled_flash"], format!("Scheduled: {day1} 10:30 (Europe/Madrid)."), "{seen:#}");
    let chip = seen["chip_day1"].as_str().unwrap();
    assert!(chip.starts_with("10:30") && chip.contains("scheduled") && chip.contains("Masto"), "{chip}");
    assert!(chip.contains("America/New_York"), "the channel's own clock is shown: {chip}");
    assert!(seen["keyboard_flash"].as_str().unwrap().contains("12:45 (Europe/Madrid)"), "{seen:#}");
    assert!(seen["chip2"].as_str().unwrap().starts_with("12:45"), "{seen:#}");
    assert!(seen["drag_live"].as_str().unwrap().contains("10:30 (Europe/Madrid)"), "{seen:#}");
    assert_eq!((seen["after_drag_day2"].as_u64(), seen["after_reload_day1"].as_u64()), (Some(1), Some(0)), "{seen:#}");
    assert!(seen["after_reload_day2"].as_str().unwrap().starts_with("10:30"), "{seen:#}");
    // Through the API, right after the drag: that day, at the same time of day.
    assert_eq!(seen["after_drag_api"].as_array().unwrap().len(), 1, "{seen:#}");
    assert_eq!(api_ms(&seen["after_drag_api"][0]), moved_to, "{day2} 10:30 in Madrid: {seen:#}");
    assert!(seen["cancel_flash"].as_str().unwrap().contains("Cancelled"), "{seen:#}");
    let refused = seen["refused"].as_str().unwrap();
    assert!(refused.starts_with("The post was not moved:") && refused.contains("cancelled"), "{refused}");
    assert_eq!((seen["stale_back_day1"].as_u64(), seen["stale_day3"].as_u64()), (Some(1), Some(0)), "the chip went back: {seen:#}");
    assert_eq!(seen["week_chip_hour"], "10:00", "{seen:#}");
    assert_eq!(seen["week_slots"], 5, "a weekday slot on each weekday: {seen:#}");
    // 09:00 in New York is 15:00 in Madrid (both zones change their clocks on other days in
    // March and November, so allow 14:00 in the weeks between).
    assert!(["15:00", "14:00"].contains(&seen["week_slot_hour"].as_str().unwrap()), "{seen:#}");

    assert!(seen["week_drag_live"].as_str().unwrap().contains("16:00 (Europe/Madrid)"), "{seen:#}");
    assert!(seen["week_chip_16"].as_str().unwrap().starts_with("16:00"), "{seen:#}");
    let (_, week_moved_to) = next_month_at(madrid, 12, 16, 0);

    // Through the API: the post dragged in the month view, then to 16:00 in the week view.
    let posts: Value = s.api(reqwest::Method::GET, "/api/v1/social/posts").send().await.unwrap().json().await.unwrap();
    let find =
        |t: &str| posts.as_array().unwrap().iter().find(|p| p["text"] == t).unwrap_or_else(|| panic!("no post {t}: {posts:#}")).clone();
    let a = find(text);
    assert_eq!(a["status"], "scheduled", "{a:#}");
    assert_eq!(a["link"], "https://example.com/launch");
    assert_eq!(api_ms(&a["targets"][0]["scheduled_at"]), week_moved_to, "{day2} 16:00 in Madrid: {a:#}");
    assert!(a["origin"].as_str().unwrap().starts_with("ui:"), "{a:#}");
    let b = find(text2);
    assert_eq!(b["status"], "cancelled", "{b:#}");
    assert_eq!(api_ms(&b["targets"][0]["scheduled_at"]), second_at, "the refused drag changed nothing: {b:#}");

    // A viewer sees the calendar and changes nothing.
    let token = admin.csrf("/ui/users").await;
    let (status, _, _, _) = admin
        .post(
            "/ui/users",
            &[("_csrf", &token), ("username", "vera"), ("role", "viewer"), ("password", ADMIN_PASSWORD), ("confirm", ADMIN_PASSWORD)],
        )
        .await;
    assert_eq!(status, 303);
    let mut viewer = Browser::new(&s.base);
    assert_eq!(viewer.sign_in("vera", ADMIN_PASSWORD).await.0, 303);
    let (status, html, _) = viewer.get(&format!("/ui/social?view=month&date={day2}&tz=Europe%2FMadrid")).await;
    assert_eq!(status, 200);
    assert!(html.contains(&format!("data-post=\"{}\"", a["id"].as_str().unwrap())), "the viewer sees the post");
    assert!(!html.contains("draggable=\"true\"") && !html.contains("method=\"post\" action=\"/ui/social"), "nothing to change");
    let vt = viewer.csrf("/ui/social").await;
    let path = format!("/ui/social/posts/{}/schedule", a["id"].as_str().unwrap());
    let (status, html, _, _) = viewer.post(&path, &[("_csrf", &vt), ("at", &format!("{day3}T10:30")), ("tz", "Europe/Madrid")]).await;
    assert_eq!(status, 403, "{html}");
    assert!(html.contains("This needs the editor role"), "{html}");
    // Without the session's token, even the admin's drag changes nothing.
    let (status, _, _, _) = admin.post(&path, &[("at", &format!("{day3}T10:30")), ("tz", "Europe/Madrid")]).await;
    assert_eq!(status, 403);
    let a: Value = s
        .api(reqwest::Method::GET, &format!("/api/v1/social/posts/{}", a["id"].as_str().unwrap()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(api_ms(&a["targets"][0]["scheduled_at"]), week_moved_to, "unchanged: {a:#}");
}

/// The editor adds, edits and removes the steps inside a branch's paths with the same forms
/// as the recipe's own steps (an action's form from its schema), and shows the checker's
/// problems of an inner step with its path.
#[tokio::test]
async fn the_editor_builds_steps_inside_a_branch_with_forms() {
    let s = TestServer::start().await;
    let mut admin = set_up(&s).await;
    let source = "id: vip\nname: VIP\ntrigger: {app: webhook, event: catch, with: {path: vip}}\nsteps:\n  - id: b\n    branch:\n      - if: \"{{trigger.body.vip}}\"\n        steps: [{id: wait, delay: 1h}]\n      - else: [{id: later, delay: 2h}]\n";
    let token = admin.csrf("/ui/recipes/new").await;
    let (status, html, loc, _) = admin.post("/ui/recipes/new", &[("_csrf", &token), ("source", source)]).await;
    assert_eq!((status, loc.as_deref()), (303, Some("/ui/recipes/vip")), "{html}");
    // Each path of the branch has its own "add a step here".
    let (status, html, _) = admin.get("/ui/recipes/vip").await;
    assert_eq!(status, 200);
    assert!(
        html.contains(r#"name="into" value="/steps/0/branch/0/steps""#) && html.contains(r#"name="into" value="/steps/0/branch/1/else""#),
        "{html}"
    );
    assert!(html.contains("Add a step to b · if {{trigger.body.vip}}"), "{html}");
    // The action's form, for the branch's first path.
    let (status, html, _) = admin.get("/ui/recipes/vip?add=http.request&into=/steps/0/branch/0/steps").await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains(r#"name="list" value="/steps/0/branch/0/steps""#) && html.contains(r#"name="with.url""#), "{html}");
    let draft = |s: &TestServer| {
        let store = s.store.clone();
        async move { store.ui_draft("vip").await.unwrap().map(|d| d.source) }
    };
    // Saved without its required address: the problem is shown with the inner step's path.
    let token = admin.csrf("/ui/recipes/vip").await;
    let form = |url: &'static str| {
        vec![
            ("_csrf", token.clone()),
            ("index", "1".to_string()),
            ("list", "/steps/0/branch/0/steps".to_string()),
            ("step_id", "notify".to_string()),
            ("app", "http".to_string()),
            ("action", "request".to_string()),
            ("with.method", "POST".to_string()),
            ("with.url", url.to_string()),
        ]
    };
    let as_refs = |f: &[(&'static str, String)]| f.iter().map(|(k, v)| (*k, v.clone())).collect::<Vec<_>>();
    let bad = as_refs(&form(""));
    let bad: Vec<(&str, &str)> = bad.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, html, _, _) = admin.post("/ui/recipes/vip/steps", &bad).await;
    assert_eq!(status, 422, "{html}");
    let field = &html[html.find(r#"name="with.url""#).unwrap()..];
    let field = &field[..field.find("</p>").unwrap_or(field.len())];
    assert!(field.contains(r#"aria-invalid="true""#), "{field}");
    assert!(html.contains("the field &#x60;url&#x60; is required"), "the problem is shown beside the field: {html}");
    // Then with it: the step is in the branch's path of the draft, not among the recipe's own.
    let good = as_refs(&form("https://hooks.example.com/vip"));
    let good: Vec<(&str, &str)> = good.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, _, loc, _) = admin.post("/ui/recipes/vip/steps", &good).await;
    assert_eq!(status, 303);
    assert!(loc.unwrap().ends_with("#step-notify"));
    let d = draft(&s).await.expect("a draft");
    assert_eq!(d.pointer("/steps/0/branch/0/steps/1/id"), Some(&json!("notify")), "{d}");
    assert_eq!(d.pointer("/steps/0/branch/0/steps/1/with/url"), Some(&json!("https://hooks.example.com/vip")));
    assert_eq!(d["steps"].as_array().unwrap().len(), 1, "{d}");
    let (_, html, _) = admin.get("/ui/recipes/vip").await;
    assert!(html.contains(r#"class="step depth-1" id="step-notify""#), "{html}");
    // Its form opens by its id, in its place.
    let (_, html, _) = admin.get("/ui/recipes/vip?step=notify").await;
    assert!(html.contains(r#"name="list" value="/steps/0/branch/0/steps""#), "{html}");
    // A list that is not one of the recipe's is refused, and the draft is unchanged.
    let mut stray = good.clone();
    stray.retain(|(k, _)| *k != "list");
    stray.push(("list", "/steps/5/paths/x"));
    let (status, html, _, _) = admin.post("/ui/recipes/vip/steps", &stray).await;
    assert!((400..500).contains(&status) && html.contains("reload the page"), "{status} {html}");
    assert_eq!(draft(&s).await.unwrap(), d);
    // Removed from its path; the branch stays.
    let token = admin.csrf("/ui/recipes/vip").await;
    let (status, _, _, _) = admin.post("/ui/recipes/vip/steps/notify/delete", &[("_csrf", &token)]).await;
    assert_eq!(status, 303);
    let d = draft(&s).await.unwrap();
    assert_eq!(d.pointer("/steps/0/branch/0/steps"), Some(&json!([{"id": "wait", "delay": "1h"}])), "{d}");
    assert_eq!(d.pointer("/steps/0/id"), Some(&json!("b")));
}

/// The same in chromium (`tests/browser/branch.mjs`): an HTTP request added under a branch's
/// path with its form, refused without its address (shown beside the field), saved with it,
/// shown indented under the branch, removed.
#[tokio::test]
async fn an_editor_adds_a_step_inside_a_branch_in_the_browser() {
    let s = TestServer::start().await;
    let mut admin = set_up(&s).await;
    let source = "id: vip\nname: VIP\ntrigger: {app: webhook, event: catch, with: {path: vip}}\nsteps:\n  - id: b\n    branch:\n      - if: \"{{trigger.body.vip}}\"\n        steps: [{id: wait, delay: 1h}]\n      - else: [{id: later, delay: 2h}]\n";
    let token = admin.csrf("/ui/recipes/new").await;
    let (status, _, _, _) = admin.post("/ui/recipes/new", &[("_csrf", &token), ("source", source)]).await;
    assert_eq!(status, 303);
    let cfg = json!({"base": s.base, "shots": shots(), "user": ADMIN, "password": ADMIN_PASSWORD});
    let seen = scenario("branch.mjs", cfg).await;
    assert_eq!(seen["list"], "/steps/0/branch/0/steps", "{seen:#}");
    assert_eq!(seen["url_invalid"], "true", "{seen:#}");
    assert!(seen["url_error"].as_str().unwrap().contains("the field `url` is required"), "{seen:#}");
    assert!(seen["saved"].as_str().unwrap().contains("The step notify is saved in the draft"), "{seen:#}");
    assert!(seen["row_class"].as_str().unwrap().contains("depth-1"), "{seen:#}");
    assert_eq!(seen["inner_test_buttons"], 0, "{seen:#}");
    assert!(seen["removed"].as_str().unwrap().contains("The step notify is removed"), "{seen:#}");
    assert_eq!(seen["left"], 0, "{seen:#}");
    // What the browser did is in the draft: the branch as it was.
    let d = s.store.ui_draft("vip").await.unwrap().unwrap().source;
    assert_eq!(d.pointer("/steps/0/branch/0/steps"), Some(&json!([{"id": "wait", "delay": "1h"}])), "{d}");
}
