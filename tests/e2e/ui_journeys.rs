//! The web UI's Journeys page, real test calls and held runs, in a real browser
//! (`tests/browser/journeys.mjs`: Debian's chromium driven by playwright-core) against the
//! real server on a fresh store and a real SMTP server (aiosmtpd):
//!
//! - two chained recipes (a webhook that `emit`s `lead.new`, a recipe listening to it that
//!   sends an email): the graph shows the edge, and the counts per step are not zero after a
//!   webhook run; another webhook while the page is open raises the counts in place (the
//!   page polls `/ui/journeys/counts`); each recipe and step is a link reached by keyboard;
//! - "Run mail for real…": the confirmation names the recipient and the connection; Cancel
//!   sends nothing; confirming delivers one email to the SMTP server; the same confirmation
//!   sent again calls nothing;
//! - a recipe capped at one send an hour: the second and third webhooks are held; Approve on
//!   one run's page sends its email, Reject on the other's does not.
//!
//! Every page is watched by `guard` (console errors, failed requests, unexpected HTTP errors)
//! and shot at 1280 and 390 px (nothing wider than 390 px).

use enlace_core::{AuthKind, parse_credentials};
use serde_json::{Value, json};

use crate::smtp::SmtpServer;
use crate::support::*;

const ADMIN: &str = "jo@example.com";
const ADMIN_PASSWORD: &str = "a long enough passphrase";

fn shots() -> String {
    std::env::var("ENLACE_UI_SHOTS").unwrap_or_else(|_| {
        let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| format!("{}/target", env!("CARGO_MANIFEST_DIR")));
        format!("{target}/ui-screenshots")
    })
}

async fn scenario(config: Value) -> Value {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        dir.join("node_modules/playwright-core").is_dir(),
        "the browser tests need playwright-core: run `.ci/run` once, or `npm install --prefix tests/browser` (and `apt-get install chromium`)"
    );
    let arg = config.to_string();
    let out =
        tokio::task::spawn_blocking(move || std::process::Command::new("node").current_dir(&dir).arg("journeys.mjs").arg(arg).output())
            .await
            .unwrap()
            .expect("node runs");
    assert!(
        out.status.success(),
        "journeys.mjs failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("journeys.mjs printed no JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// The recipients of the messages the SMTP server kept, in the order received.
fn delivered_to(smtp: &SmtpServer) -> Vec<String> {
    smtp.messages()
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).unwrap();
            text.lines().find_map(|l| l.strip_prefix("To: ")).unwrap_or("").trim().to_string()
        })
        .collect()
}

fn mail_step(to: &str, extra: &str) -> String {
    format!(
        "  - id: mail\n    app: smtp\n    action: send_email\n    connection: smtp-main\n    transactional: true\n{extra}    with:\n      from: news@example.com\n      to: \"{to}\"\n      subject: Hello\n      text: Hello from Enlace.\n"
    )
}

#[tokio::test]
async fn journeys_show_the_chain_with_live_counts_a_real_test_call_confirms_and_held_runs_are_decided() {
    let s = TestServer::start().await;
    let smtp = SmtpServer::start().await;
    let creds = parse_credentials(&smtp.credentials(crate::smtp::PASSWORD), AuthKind::Smtp).unwrap();
    s.store.create_connection("smtp-main", "smtp", "Our mail server", &creds, None, 0).await.unwrap();
    install(
        &s.runner,
        "id: signup\nname: Sign-up\ntrigger: {app: webhook, event: catch, with: {path: signup}}\nsteps:\n  - id: check\n    filter: \"{{trigger.body.email}}\"\n  - id: announce\n    emit: lead.new\n    data: {email: \"{{trigger.body.email}}\"}\n",
    )
    .await;
    install(
        &s.runner,
        &format!(
            "id: greet\nname: Greet the lead\ntrigger: {{app: enlace, event: event, with: {{name: lead.new}}}}\nsteps:\n{}",
            mail_step("{{trigger.email}}", "")
        ),
    )
    .await;
    install(
        &s.runner,
        &format!(
            "id: hello\nname: Hello by hand\nenabled: false\ntrigger: {{app: webhook, event: catch, with: {{path: hello}}}}\nsteps:\n{}",
            mail_step("{{trigger.body.email}}", "")
        ),
    )
    .await;
    install(
        &s.runner,
        &format!(
            "id: blast\nname: Capped blast\nlimits: {{sends_per_hour: 1}}\ntrigger: {{app: webhook, event: catch, with: {{path: blast}}}}\nsteps:\n{}",
            mail_step("{{trigger.body.email}}", "")
        ),
    )
    .await;

    let seen = scenario(json!({"base": s.base, "shots": shots(), "user": ADMIN, "password": ADMIN_PASSWORD})).await;
    assert_eq!(seen["problems"], json!([]), "the pages misbehaved: {seen:#}");

    // The graph: one edge from signup's emit to greet, labelled, with counts after a run.
    assert_eq!(seen["edges"], 1, "{seen:#}");
    assert!(seen["edge_title"].as_str().unwrap().contains("announce event lead.new → greet"), "{seen:#}");
    assert!(seen["emits_line"].as_str().unwrap().contains("event lead.new → greet"), "{seen:#}");
    assert_eq!(seen["announce_passed"], "1", "{seen:#}");
    assert_eq!(seen["mail_passed"], "1", "{seen:#}");
    assert_eq!(seen["signup_runs"], "1", "{seen:#}");
    assert_eq!(seen["announce_passed_live"], "2", "the count rose without a reload: {seen:#}");
    assert_eq!(seen["focused_in_svg"], true, "the graph's links take the keyboard focus: {seen:#}");
    assert!(seen["after_enter"].as_str().unwrap().ends_with("/ui/recipes/signup"), "{seen:#}");
    assert_eq!(seen["disabled_hidden"], true, "a disabled recipe is left out unless asked: {seen:#}");
    assert_eq!(seen["disabled_shown"], true, "{seen:#}");

    // The real test call: the cancel path sent nothing, the confirmed call one email, the
    // repeated confirmation nothing more.
    let confirm = seen["confirm"].as_str().unwrap();
    assert!(confirm.contains("This sends an email to ana@example.com through connection 'smtp-main'"), "{confirm}");
    assert_eq!(seen["after_cancel_sent"], 0, "{seen:#}");
    assert_eq!(seen["call_status"], "succeeded", "{seen:#}");
    assert!(seen["call_output"].as_str().unwrap().contains("message_id"), "{seen:#}");
    assert_eq!(seen["resend_status"], 409, "{seen:#}");

    // Held runs: one approved and sent, one rejected.
    assert!(seen["approve_flash"].as_str().unwrap().contains("1 message(s) approved"), "{seen:#}");
    assert!(seen["reject_flash"].as_str().unwrap().contains("1 message(s) rejected"), "{seen:#}");
    assert_eq!(seen["approved_status"], "succeeded", "{seen:#}");

    let to = delivered_to(&smtp);
    let count = |who: &str| to.iter().filter(|t| t.contains(who)).count();
    assert_eq!(count("lead1@example.com"), 1, "greet's email for the first webhook: {to:?}");
    assert_eq!(count("lead2@example.com"), 1, "greet's email for the second webhook: {to:?}");
    assert_eq!(count("ana@example.com"), 1, "one email from the confirmed test call, none from the cancel: {to:?}");
    assert_eq!(count("b1@example.com"), 1, "the first blast, under the cap: {to:?}");
    assert_eq!(count("b2@example.com"), 1, "approved: {to:?}");
    assert_eq!(count("b3@example.com"), 0, "rejected: {to:?}");
    assert_eq!(to.len(), 5, "{to:?}");
    // The test call left no run in the installation's history.
    let runs = s.store.list_runs(&enlace_store::RunFilter { recipe_id: Some("hello".into()), ..Default::default() }).await.unwrap();
    assert!(runs.is_empty(), "{runs:?}");
}

/// The marketing flows shipped under `recipes/`, as the Journeys page draws them.
#[test]
fn the_shipped_flows_as_a_graph() {
    let registry = enlace_connectors::registry();
    let mut recipes = vec![];
    for e in std::fs::read_dir(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes")).unwrap() {
        let path = e.unwrap().path();
        if path.extension().and_then(|x| x.to_str()) == Some("yaml") {
            let text = std::fs::read_to_string(&path).unwrap();
            recipes.push(enlace_recipe::load(&text, Some(&path.display().to_string()), &registry).unwrap_or_else(|d| panic!("{d}")));
        }
    }
    recipes.sort_by(|a, b| a.id.cmp(&b.id));
    let inputs: Vec<enlace_recipe::graph::Input> =
        recipes.iter().map(|r| enlace_recipe::graph::Input { recipe: r, enabled: true }).collect();
    let g = enlace_recipe::graph::build(&inputs);
    let edges: Vec<String> = g
        .edges
        .iter()
        .map(|e| {
            format!("{}/{} {} -> {}{}", e.from_recipe, e.from_step, e.signal.label(), e.to_recipe, if e.maybe { " (maybe)" } else { "" })
        })
        .collect();
    // The sign-up form's upsert starts the welcome series (when it creates the contact).
    assert_eq!(edges, vec!["welcome-signup/contact contact created -> welcome-series (maybe)"]);
    // The others start from outside a recipe, and say from where: a cart abandoned or a
    // purchase recorded through the API, page views from /track, the scoring threshold.
    let from: Vec<(&str, &str)> = g.nodes.iter().map(|n| (n.recipe.as_str(), n.listens.label.as_str())).collect();
    for want in [
        ("abandoned-cart", "timeline cart_abandoned"),
        ("abandoned-cart-thanks", "timeline purchase"),
        ("lead-handoff", "event lead.qualified"),
        ("web-activity", "timeline page_viewed"),
        ("welcome-series", "contact created"),
        ("blog-to-social", "http.poll_feed, polled"),
    ] {
        assert!(from.contains(&want), "{want:?} in {from:#?}");
    }
    assert!(g.cycles.is_empty());
}

/// A client that keeps its cookies by hand and never follows redirects (as in `ui.rs`).
struct Client {
    http: reqwest::Client,
    base: String,
    cookies: Vec<(String, String)>,
}

impl Client {
    fn new(base: &str) -> Client {
        Client {
            http: reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap(),
            base: base.into(),
            cookies: vec![],
        }
    }

    fn keep(&mut self, r: &reqwest::Response) {
        for c in r.headers().get_all(reqwest::header::SET_COOKIE) {
            let c = c.to_str().unwrap();
            let kv = c.split(';').next().unwrap();
            let (k, v) = kv.split_once('=').unwrap();
            self.cookies.retain(|(n, _)| n != k);
            if !v.is_empty() {
                self.cookies.push((k.into(), v.into()));
            }
        }
    }

    fn jar(&self) -> String {
        self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
    }

    async fn get(&mut self, path: &str) -> (u16, String, Option<String>) {
        let r = self.http.get(format!("{}{path}", self.base)).header(reqwest::header::COOKIE, self.jar()).send().await.unwrap();
        self.keep(&r);
        let loc = r.headers().get(reqwest::header::LOCATION).map(|v| v.to_str().unwrap().to_string());
        (r.status().as_u16(), r.text().await.unwrap(), loc)
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> (u16, String) {
        let r = self.http.post(format!("{}{path}", self.base)).header(reqwest::header::COOKIE, self.jar()).form(form).send().await.unwrap();
        self.keep(&r);
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn csrf(&mut self, path: &str) -> String {
        let (_, html, _) = self.get(path).await;
        let at = html.find("name=\"_csrf\" value=\"").unwrap_or_else(|| panic!("no CSRF field on {path}")) + 20;
        html[at..at + html[at..].find('"').unwrap()].to_string()
    }
}

/// Over plain HTTP: the counts need a session; a viewer reads the Journeys page but may not
/// make a real call; a call needs the session's token; store apps' steps are refused.
#[tokio::test]
async fn journeys_and_real_calls_are_guarded_by_session_role_and_csrf() {
    let s = TestServer::start().await;
    install(
        &s.runner,
        &format!(
            "id: hello\ntrigger: {{app: webhook, event: catch, with: {{path: hello}}}}\nsteps:\n  - id: save\n    app: contacts\n    action: upsert_contact\n    with: {{email: \"{{{{trigger.body.email}}}}\"}}\n{}",
            mail_step("{{trigger.body.email}}", "")
        ),
    )
    .await;
    let mut anon = Client::new(&s.base);
    let mut admin = Client::new(&s.base);
    let t = admin.csrf("/setup").await;
    let (status, _) =
        admin.post("/setup", &[("_csrf", &t), ("username", ADMIN), ("password", ADMIN_PASSWORD), ("confirm", ADMIN_PASSWORD)]).await;
    assert_eq!(status, 303);
    let (status, _, loc) = anon.get("/ui/journeys/counts").await;
    assert_eq!((status, loc.as_deref()), (303, Some("/login?next=%2Fui%2Fjourneys%2Fcounts")), "the counts need a session");

    let t = admin.csrf("/ui/users").await;
    let (status, _) = admin
        .post(
            "/ui/users",
            &[("_csrf", &t), ("username", "vera"), ("role", "viewer"), ("password", ADMIN_PASSWORD), ("confirm", ADMIN_PASSWORD)],
        )
        .await;
    assert_eq!(status, 303);
    let mut viewer = Client::new(&s.base);
    let t = viewer.csrf("/login").await;
    assert_eq!(viewer.post("/login", &[("_csrf", &t), ("username", "vera"), ("password", ADMIN_PASSWORD)]).await.0, 303);
    let (status, html, _) = viewer.get("/ui/journeys").await;
    assert_eq!(status, 200);
    assert!(html.contains("<h1>Journeys</h1>") && html.contains("aria-current=\"page\">Journeys</a>"), "{html}");
    let (status, json, _) = viewer.get("/ui/journeys/counts?window=7d").await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["window"]["window"], "7d", "{v}");
    let (_, html, _) = viewer.get("/ui/recipes/hello").await;
    assert!(!html.contains("for real"), "a viewer is not offered a real call");
    let vt = viewer.csrf("/ui/journeys").await;
    let (status, html) = viewer.post("/ui/recipes/hello/steps/mail/call", &[("_csrf", &vt), ("confirm", "yes"), ("call", "x")]).await;
    assert_eq!(status, 403);
    assert!(html.contains("This needs the editor role"), "{html}");

    // Without the session's token nothing is asked or called.
    let (status, html) = admin.post("/ui/recipes/hello/steps/mail/call", &[("confirm", "yes")]).await;
    assert_eq!(status, 403);
    assert!(html.contains("This form has expired"), "{html}");
    // A step of Enlace's own store is not called for real; a made-up key calls nothing.
    let at = admin.csrf("/ui/journeys").await;
    let (status, html) = admin.post("/ui/recipes/hello/steps/save/call", &[("_csrf", &at)]).await;
    assert_eq!(status, 400);
    assert!(html.contains("changes Enlace&#x27;s own store") || html.contains("changes Enlace's own store"), "{html}");
    let (status, html) = admin.post("/ui/recipes/hello/steps/mail/call", &[("_csrf", &at), ("confirm", "yes"), ("call", "made-up")]).await;
    assert_eq!(status, 409, "{html}");
    assert!(html.contains("nothing was called"), "{html}");
}
