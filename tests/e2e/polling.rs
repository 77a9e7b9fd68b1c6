//! Connectors' triggers end to end: `http.poll_json` against a real local feed whose items
//! change during the test, on a manual clock (the runner's own polling pass, called after
//! moving the clock), on both backends; and a subscribe trigger whose subscribe and
//! unsubscribe calls reach a local server.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use enlace_core::http::{HeaderValue, HttpRequest, Method};
use enlace_core::trigger::SubscribeTrigger;
use enlace_core::{ActionContext, Connector, ConnectorError, Registry, Subscription};
use enlace_runner::{Clock, ManualClock, Runner, RunnerConfig, RunnerError};
use enlace_store::{RunFilter, Store};
use serde_json::{Value, json};

use crate::support::*;

/// A JSON feed on 127.0.0.1:0: `GET /orders` lists the items newest first, only those with
/// `n` above `?since=` when given; it answers 429 while `rate_limited`, and holds the answer
/// while `hold` is set (a poll in flight).
#[derive(Clone, Default)]
struct Feed {
    items: Arc<Mutex<Vec<Value>>>,
    rate_limited: Arc<Mutex<bool>>,
    hold: Arc<Mutex<Option<Arc<tokio::sync::Notify>>>>,
    requests: Arc<Mutex<usize>>,
    addr: Arc<Mutex<String>>,
}

impl Feed {
    async fn start() -> Feed {
        let f = Feed::default();
        let app = Router::new().route("/orders", get(orders)).with_state(f.clone());
        *f.addr.lock().unwrap() = format!("http://{}", serve_local(app).await);
        f
    }

    fn url(&self) -> String {
        format!("{}/orders", self.addr.lock().unwrap())
    }

    /// Adds orders `from..=to` (newest first in the feed).
    fn add(&self, from: i64, to: i64) {
        let mut items = self.items.lock().unwrap();
        for n in from..=to {
            items.insert(0, json!({"id": format!("ord_{n}"), "n": n}));
        }
    }

    fn requests(&self) -> usize {
        *self.requests.lock().unwrap()
    }
}

async fn orders(State(f): State<Feed>, Query(q): Query<BTreeMap<String, String>>) -> Response {
    *f.requests.lock().unwrap() += 1;
    let hold = f.hold.lock().unwrap().clone();
    if let Some(n) = hold {
        n.notified().await;
    }
    if *f.rate_limited.lock().unwrap() {
        return (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "300")], "slow down").into_response();
    }
    let since: i64 = q.get("since").and_then(|s| s.parse().ok()).unwrap_or(0);
    let items: Vec<Value> = f.items.lock().unwrap().iter().filter(|i| i["n"].as_i64().unwrap_or(0) > since).cloned().collect();
    axum::Json(json!({"orders": items})).into_response()
}

/// A recipe polling the feed every minute, posting each order's id to the target.
fn feed_recipe(feed: &Feed, target: &Target, extra_trigger: &str, extra_with: &str, marker: &str) -> String {
    format!(
        r#"
id: orders
trigger:
  app: http
  event: poll_json
  every: 1m
  {extra_trigger}
  with:
    url: "{url}"
    items: "$.orders"
    id: id
    {extra_with}
steps:
  - id: post
    app: http
    action: request
    with:
      method: POST
      url: "{target}"
      json:
        id: "{{{{trigger.id}}}}"
        marker: "{marker}"
"#,
        url = feed.url(),
        target = target.url("/got")
    )
}

fn got_ids(target: &Target) -> Vec<String> {
    target.received_on("/got").iter().map(|r| r.body["id"].as_str().unwrap().to_string()).collect()
}

async fn runs_of(store: &Store, recipe: &str) -> Vec<enlace_store::RunRow> {
    store.list_runs(&RunFilter { recipe_id: Some(recipe.into()), limit: 1000, ..Default::default() }).await.unwrap()
}

const MINUTE: Duration = Duration::from_secs(60);

async fn seeding_fires_nothing_then_new_items_fire_once_oldest_first() {
    let (feed, target) = (Feed::start().await, Target::start().await);
    feed.add(1, 3);
    let (runner, clock, store) = manual_runner(None).await;
    install(&runner, &feed_recipe(&feed, &target, "", "", "v1")).await;

    let r = runner.poll_triggers().await.unwrap();
    assert_eq!((r.polled, r.seeded, r.fired), (1, 1, 0), "the first poll seeds");
    assert!(runs_of(&store, "orders").await.is_empty(), "3 old items start no run");
    let st = runner.trigger_status("orders").await.unwrap();
    assert!(st.state.as_ref().unwrap().seeded_at.is_some());

    feed.add(4, 5);
    assert_eq!(runner.poll_triggers().await.unwrap().polled, 0, "not due before `every`");
    clock.advance(MINUTE);
    let r = runner.poll_triggers().await.unwrap();
    assert_eq!(r.fired, 2);
    runner.drain_due().await.unwrap();
    assert_eq!(got_ids(&target), ["ord_4", "ord_5"], "new items fire oldest first");

    clock.advance(MINUTE);
    let r = runner.poll_triggers().await.unwrap();
    assert_eq!((r.polled, r.fired), (1, 0), "nothing new, nothing fired");
    runner.drain_due().await.unwrap();
    assert_eq!(got_ids(&target).len(), 2, "each item fired exactly once");
    let d = store.run_detail(&runs_of(&store, "orders").await[0].id).await.unwrap().unwrap();
    assert_eq!(d.event.source, "poll");
    assert_eq!(d.event.payload, json!({"id": "ord_5", "n": 5}), "the item is the run's trigger");
}

async fn the_cursor_survives_an_edit_and_a_disable_reseeds() {
    let (feed, target) = (Feed::start().await, Target::start().await);
    feed.add(1, 3);
    let (runner, clock, store) = manual_runner(None).await;
    let cursor = r#"sort_by: n
    cursor_param: since"#;
    install(&runner, &feed_recipe(&feed, &target, "", cursor, "v1")).await;
    runner.poll_triggers().await.unwrap();
    feed.add(4, 4);
    clock.advance(MINUTE);
    assert_eq!(runner.poll_triggers().await.unwrap().fired, 1);

    // An edit (a new version) while an item arrives: no re-fire, no miss.
    feed.add(5, 5);
    install(&runner, &feed_recipe(&feed, &target, "", cursor, "v2")).await;
    assert_eq!(runner.catalog().current("orders").unwrap().row.version, 2);
    clock.advance(MINUTE);
    let r = runner.poll_triggers().await.unwrap();
    assert_eq!(r.fired, 1, "only the item that arrived meanwhile");
    runner.drain_due().await.unwrap();
    assert_eq!(got_ids(&target), ["ord_4", "ord_5"]);
    let markers: Vec<String> = target.received_on("/got").iter().map(|r| r.body["marker"].as_str().unwrap().to_string()).collect();
    assert_eq!(markers, ["v1", "v2"], "the item after the edit runs the new version");
    assert_eq!(runner.trigger_status("orders").await.unwrap().state.unwrap().cursor.as_deref(), Some("5"));

    // Disabled: no polls. Enabled again: it seeds again, so what came meanwhile does not fire.
    runner.set_enabled("orders", false).await.unwrap();
    feed.add(6, 6);
    clock.advance(MINUTE);
    let before = feed.requests();
    assert_eq!(runner.poll_triggers().await.unwrap().polled, 0);
    assert_eq!(feed.requests(), before, "a disabled recipe is not polled");
    runner.set_enabled("orders", true).await.unwrap();
    let r = runner.poll_triggers().await.unwrap();
    assert_eq!((r.seeded, r.fired), (1, 0), "enabling again seeds");
    feed.add(7, 7);
    clock.advance(MINUTE);
    assert_eq!(runner.poll_triggers().await.unwrap().fired, 1);
    runner.drain_due().await.unwrap();
    assert_eq!(got_ids(&target), ["ord_4", "ord_5", "ord_7"]);
    assert_eq!(runs_of(&store, "orders").await.len(), 3);
}

async fn the_flood_guard_holds_150_items_then_approval_fires_them_once() {
    let (feed, target) = (Feed::start().await, Target::start().await);
    let (runner, clock, store) = manual_runner(None).await;
    install(&runner, &feed_recipe(&feed, &target, "", "", "v1")).await;
    runner.poll_triggers().await.unwrap();
    feed.add(1, 150);
    clock.advance(MINUTE);
    let r = runner.poll_triggers().await.unwrap();
    assert_eq!((r.fired, r.held), (0, 1), "150 new items are more than the default 100");
    assert!(runs_of(&store, "orders").await.is_empty());
    let st = runner.trigger_status("orders").await.unwrap();
    assert_eq!(st.hold_above, Some(100));
    assert_eq!((st.held.len(), st.held[0].count, st.held[0].status.as_str()), (1, 150, "held"));
    let batch = st.held[0].id.clone();

    // Held items stay held: the next poll does not hold or fire them again.
    clock.advance(MINUTE);
    let r = runner.poll_triggers().await.unwrap();
    assert_eq!((r.fired, r.held), (0, 0));

    let (b, runs) = runner.decide_held("orders", &batch, true).await.unwrap();
    assert_eq!((b.status.as_str(), runs.len()), ("approved", 150));
    let again = runner.decide_held("orders", &batch, true).await.unwrap_err();
    assert!(matches!(again, RunnerError::Conflict(_)), "{again}");
    assert_eq!(runs_of(&store, "orders").await.len(), 150, "approval fires each item once");
    runner.drain_due().await.unwrap();
    let ids = got_ids(&target);
    assert_eq!(ids.len(), 150);
    assert_eq!((ids[0].as_str(), ids[149].as_str()), ("ord_1", "ord_150"), "oldest first");
    clock.advance(MINUTE);
    assert_eq!(runner.poll_triggers().await.unwrap().fired, 0);

    // A recipe's own threshold; discarding fires nothing.
    install(&runner, &feed_recipe(&feed, &target, "hold_above: 2", "", "v2")).await;
    feed.add(151, 153);
    clock.advance(MINUTE);
    assert_eq!(runner.poll_triggers().await.unwrap().held, 1);
    let st = runner.trigger_status("orders").await.unwrap();
    let (b, runs) = runner.decide_held("orders", &st.held[0].id, false).await.unwrap();
    assert_eq!((b.status.as_str(), runs.len(), b.count), ("discarded", 0, 3));
    clock.advance(MINUTE);
    assert_eq!(runner.poll_triggers().await.unwrap().fired, 0, "discarded items stay seen");
}

async fn a_rewind_previews_without_firing_and_refires_on_request() {
    let (feed, target) = (Feed::start().await, Target::start().await);
    feed.add(1, 3);
    let (runner, clock, store) = manual_runner(None).await;
    install(&runner, &feed_recipe(&feed, &target, "", "sort_by: n\n    cursor_param: since", "v1")).await;
    runner.poll_triggers().await.unwrap();
    let seeded_at = runner.now_ms();
    clock.advance(MINUTE);
    feed.add(4, 5);
    assert_eq!(runner.poll_triggers().await.unwrap().fired, 2);
    runner.drain_due().await.unwrap();

    let rw = runner.rewind_trigger("orders", seeded_at + 1, true, false).await.unwrap();
    assert_eq!(rw.cursor.as_deref(), Some("3"), "the cursor as of then");
    let listed: Vec<(&str, bool, bool)> = rw.items.iter().map(|i| (i.key.as_str(), i.already_fired, i.would_fire)).collect();
    assert_eq!(listed, [("ord_4", true, false), ("ord_5", true, false)]);
    let rw = runner.rewind_trigger("orders", seeded_at + 1, true, true).await.unwrap();
    assert_eq!(rw.would_fire, 2, "with refire, what fired since then would fire again");
    assert_eq!(runs_of(&store, "orders").await.len(), 2, "a preview fires nothing");
    assert_eq!(runner.trigger_status("orders").await.unwrap().state.unwrap().cursor.as_deref(), Some("5"), "nor moves the cursor");
    assert!(matches!(runner.rewind_trigger("orders", seeded_at - 1, true, false).await, Err(RunnerError::NotFound(_))));

    // Applied without refire: the next poll goes from the old cursor and skips what fired.
    runner.rewind_trigger("orders", seeded_at + 1, false, false).await.unwrap();
    feed.add(6, 6);
    let r = runner.poll_triggers().await.unwrap();
    assert_eq!((r.polled, r.fired), (1, 1), "due at once; only the new item fires");
    runner.drain_due().await.unwrap();
    // Applied with refire: they fire again, once.
    runner.rewind_trigger("orders", seeded_at + 1, false, true).await.unwrap();
    let r = runner.poll_triggers().await.unwrap();
    assert_eq!(r.fired, 3);
    clock.advance(MINUTE);
    assert_eq!(runner.poll_triggers().await.unwrap().fired, 0);
    runner.drain_due().await.unwrap();
    assert_eq!(got_ids(&target), ["ord_4", "ord_5", "ord_6", "ord_4", "ord_5", "ord_6"]);
}

async fn a_restart_mid_poll_loses_and_doubles_nothing() {
    let (feed, target) = (Feed::start().await, Target::start().await);
    feed.add(1, 2);
    let (runner, clock, store) = manual_runner(None).await;
    install(&runner, &feed_recipe(&feed, &target, "", "", "v1")).await;
    runner.poll_triggers().await.unwrap();
    feed.add(3, 4);
    clock.advance(MINUTE);

    // The node dies while the feed's answer is on its way: the poll is leased, nothing stored.
    let gate = Arc::new(tokio::sync::Notify::new());
    *feed.hold.lock().unwrap() = Some(gate.clone());
    let before = feed.requests();
    let dying = runner.clone();
    let task = tokio::spawn(async move { dying.poll_triggers().await });
    for _ in 0..500 {
        if feed.requests() > before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(feed.requests() > before, "the poll reached the feed");
    task.abort();
    let _ = task.await;
    *feed.hold.lock().unwrap() = None;
    gate.notify_waiters();
    assert!(runs_of(&store, "orders").await.is_empty());

    // Another process on the same store: the lease keeps it off until it runs out.
    let (other, _) = another_runner(&store, &clock).await;
    assert_eq!(other.poll_triggers().await.unwrap().polled, 0, "the dead node's lease still holds");
    clock.advance(Duration::from_secs(331));
    let r = other.poll_triggers().await.unwrap();
    assert_eq!(r.fired, 2, "nothing lost");

    // A restart after the commit, before the runs ran: they run once, and nothing refires.
    let (third, _) = another_runner(&store, &clock).await;
    clock.advance(MINUTE);
    assert_eq!(third.poll_triggers().await.unwrap().fired, 0, "nothing doubled");
    third.drain_due().await.unwrap();
    other.drain_due().await.unwrap();
    assert_eq!(got_ids(&target), ["ord_3", "ord_4"]);
}

async fn another_runner(store: &Store, clock: &ManualClock) -> (Runner, ()) {
    let r = Runner::new(
        store.clone(),
        enlace_connectors::registry(),
        RunnerConfig::default(),
        transport(),
        Arc::new(clock.clone()) as Arc<dyn Clock>,
    );
    r.load(false).await.unwrap();
    (r, ())
}

async fn a_429_from_the_feed_delays_the_next_poll() {
    let (feed, target) = (Feed::start().await, Target::start().await);
    let (runner, clock, _store) = manual_runner(None).await;
    install(&runner, &feed_recipe(&feed, &target, "", "", "v1")).await;
    runner.poll_triggers().await.unwrap();
    *feed.rate_limited.lock().unwrap() = true;
    feed.add(1, 1);
    clock.advance(MINUTE);
    let r = runner.poll_triggers().await.unwrap();
    assert_eq!((r.polled, r.errors), (1, 1));
    let st = runner.trigger_status("orders").await.unwrap().state.unwrap();
    assert_eq!(st.last_error.as_ref().unwrap()["class"], "rate_limited");
    assert_eq!(st.next_poll_at, runner.now_ms() + 300_000, "the next poll waits for Retry-After");
    *feed.rate_limited.lock().unwrap() = false;
    clock.advance(Duration::from_secs(299));
    assert_eq!(runner.poll_triggers().await.unwrap().polled, 0, "not before the wait");
    clock.advance(Duration::from_secs(1));
    let r = runner.poll_triggers().await.unwrap();
    assert_eq!((r.polled, r.fired, r.errors), (1, 1, 0));
    assert!(runner.trigger_status("orders").await.unwrap().state.unwrap().last_error.is_none(), "a success clears the error");
}

async fn an_auth_error_pauses_until_the_connection_changes() {
    let (feed, target) = (Feed::start().await, Target::start().await);
    let auth = Target::start().await;
    auth.script("/orders", vec![Answer::status(401, r#"{"message":"token expired"}"#)]);
    let (runner, clock, store) = manual_runner(None).await;
    store
        .create_connection("feed-api", "http", "Feed", &enlace_core::Credentials::Bearer { token: enlace_core::Secret::new("t1") }, None, 0)
        .await
        .unwrap();
    let yaml = feed_recipe(&feed, &target, "connection: feed-api", "", "v1").replace(&feed.url(), &auth.url("/orders"));
    install(&runner, &yaml).await;
    let r = runner.poll_triggers().await.unwrap();
    assert_eq!(r.errors, 1);
    let st = runner.trigger_status("orders").await.unwrap().state.unwrap();
    assert!(st.paused, "an auth error pauses the trigger");
    assert_eq!(st.seeded_at, None, "nothing was seeded");
    let e = st.last_error.unwrap();
    assert_eq!(e["class"], "auth");
    assert!(e["message"].as_str().unwrap().contains("token expired"), "{e}");
    assert!(!e.to_string().contains("t1"), "no credential in the error");
    clock.advance(MINUTE);
    assert_eq!(runner.poll_triggers().await.unwrap().polled, 0, "paused: it waits (backoff) for the connection");
    // Repairing the connection (a test recorded after the failure) resumes at once.
    clock.advance(Duration::from_secs(1));
    store.set_connection_status("feed-api", "ok", "works", runner.now_ms()).await.unwrap();
    let r = runner.poll_triggers().await.unwrap();
    assert_eq!((r.polled, r.seeded), (1, 1));
    assert_eq!(auth.received_on("/orders")[1].header("authorization").as_deref(), Some("Bearer t1"));
    assert!(!runner.trigger_status("orders").await.unwrap().state.unwrap().paused);
}

on_both_backends!(
    seeding_fires_nothing_then_new_items_fire_once_oldest_first,
    the_cursor_survives_an_edit_and_a_disable_reseeds,
    the_flood_guard_holds_150_items_then_approval_fires_them_once,
    a_rewind_previews_without_firing_and_refires_on_request,
    a_restart_mid_poll_loses_and_doubles_nothing,
    a_429_from_the_feed_delays_the_next_poll,
    an_auth_error_pauses_until_the_connection_changes,
    subscribe_on_enable_renew_before_expiry_unsubscribe_on_disable,
    an_rss_feed_fires_each_new_entry_once,
);

/// `http.poll_feed` against a real local RSS feed whose entries change: seeding fires
/// nothing, a new entry fires once with its title, link and date, a later poll fires nothing.
async fn an_rss_feed_fires_each_new_entry_once() {
    let entries: Arc<Mutex<Vec<String>>> = Arc::default();
    let e = entries.clone();
    let app = Router::new().route(
        "/feed.xml",
        get(move || {
            let e = e.clone();
            async move {
                let items = e.lock().unwrap().join("");
                (
                    [("content-type", "application/rss+xml")],
                    format!(r#"<?xml version="1.0"?><rss version="2.0"><channel><title>Pets</title>{items}</channel></rss>"#),
                )
            }
        }),
    );
    let feed = format!("http://{}/feed.xml", serve_local(app).await);
    let entry = |n: u32, day: u32| {
        format!(
            "<item><title>Post {n} &amp; more</title><link>https://blog.example.com/{n}</link><guid>post-{n}</guid><pubDate>Tue, {day} Nov 2026 08:00:00 GMT</pubDate></item>"
        )
    };
    entries.lock().unwrap().push(entry(1, 24));
    let target = Target::start().await;
    let (runner, clock, store) = manual_runner(None).await;
    let recipe = format!(
        r#"
id: blog
trigger:
  app: http
  event: poll_feed
  every: 1m
  with:
    url: "{feed}"
steps:
  - id: post
    app: http
    action: request
    with:
      method: POST
      url: "{target}"
      json:
        id: "{{{{trigger.id}}}}"
        text: "{{{{trigger.title}}}} {{{{trigger.url}}}}"
        published: "{{{{trigger.published}}}}"
"#,
        target = target.url("/got")
    );
    install(&runner, &recipe).await;
    let r = runner.poll_triggers().await.unwrap();
    assert_eq!((r.polled, r.seeded, r.fired), (1, 1, 0), "the first poll seeds");
    // Newest first in the feed, as blogs write it.
    entries.lock().unwrap().insert(0, entry(2, 25));
    clock.advance(MINUTE);
    assert_eq!(runner.poll_triggers().await.unwrap().fired, 1);
    runner.drain_due().await.unwrap();
    clock.advance(MINUTE);
    assert_eq!(runner.poll_triggers().await.unwrap().fired, 0, "nothing new");
    runner.drain_due().await.unwrap();
    let got = target.received_on("/got");
    assert_eq!(got.len(), 1, "one new entry, one run");
    assert_eq!(got[0].body["id"], "post-2");
    assert_eq!(got[0].body["text"], "Post 2 & more https://blog.example.com/2");
    assert_eq!(got[0].body["published"], "2026-11-25T08:00:00+00:00");
    assert_eq!(runs_of(&store, "blog").await.len(), 1);
}

// ---- subscribe triggers ----

/// A REST-hook app on a local server: `POST /subscriptions` answers `{id, expires_in}`,
/// `DELETE /subscriptions/{id}` ends one.
struct Hooks {
    base: String,
}

impl SubscribeTrigger for Hooks {
    type Config = Value;
    type Item = Value;
    const ID: &'static str = "contact_created";
    const NAME: &'static str = "Contact created";
    const DESCRIPTION: &'static str = "The app calls back when a contact is created.";

    fn sample() -> Value {
        json!({"id": "c1"})
    }

    async fn subscribe(&self, ctx: &ActionContext, config: Value, target_url: &str) -> Result<Subscription, ConnectorError> {
        let mut req = HttpRequest::new(Method::POST, format!("{}/subscriptions", self.base));
        req.body = serde_json::to_vec(&json!({"target_url": target_url, "list": config["list"]})).unwrap().into();
        req.headers.insert("content-type", HeaderValue::from_static("application/json"));
        let resp = enlace_kit::classify(ctx.http.send(req).await.map_err(|e| enlace_kit::transport_error(e, false))?)?;
        let body: Value = serde_json::from_slice(&resp.body).map_err(|e| ConnectorError::permanent(e.to_string()))?;
        Ok(Subscription {
            id: body["id"].as_str().unwrap_or_default().to_string(),
            expires_at: body["expires_at"].as_i64(),
            secret: Some(enlace_core::Secret::new("whsec_1")),
        })
    }

    async fn unsubscribe(&self, ctx: &ActionContext, _config: Value, s: &Subscription) -> Result<(), ConnectorError> {
        let req = HttpRequest::new(Method::DELETE, format!("{}/subscriptions/{}", self.base, s.id));
        enlace_kit::classify(ctx.http.send(req).await.map_err(|e| enlace_kit::transport_error(e, true))?)?;
        Ok(())
    }
}

async fn subscribe_on_enable_renew_before_expiry_unsubscribe_on_disable() {
    let app = Target::start().await;
    let start = 1_790_000_000_000i64;
    let two_hours = 2 * 3_600_000;
    app.script(
        "/subscriptions",
        vec![
            Answer::status(201, &json!({"id": "sub-1", "expires_at": start + two_hours}).to_string()),
            Answer::status(201, &json!({"id": "sub-2", "expires_at": start + 2 * two_hours}).to_string()),
        ],
    );
    let mut all = enlace_connectors::all();
    all.push(
        Connector::builder("crmhooks", "CRM hooks", "A test app with REST hooks.").subscribe_trigger(Hooks { base: app.url("") }).build(),
    );
    let store = test_store().await;
    let clock = ManualClock::new(start);
    let runner = Runner::new(
        store.clone(),
        Registry::new(all).unwrap(),
        RunnerConfig { public_url: Some("https://enlace.example/".into()), ..RunnerConfig::default() },
        transport(),
        Arc::new(clock.clone()) as Arc<dyn Clock>,
    );
    runner.load(false).await.unwrap();
    let yaml = r#"
id: hooked
trigger: {app: crmhooks, event: contact_created, with: {list: newsletter}}
steps:
  - id: only
    filter: "{{trigger.body.id}}"
"#;
    install(&runner, yaml).await;
    let subs = app.received_on("/subscriptions");
    assert_eq!(subs.len(), 1, "enabling subscribes once");
    assert_eq!(subs[0].body, json!({"target_url": "https://enlace.example/hooks/subscriptions/hooked", "list": "newsletter"}));
    assert!(runner.hook("subscriptions/hooked").is_some(), "the webhook ingress takes the app's calls");
    let st = runner.trigger_status("hooked").await.unwrap();
    assert_eq!(st.kind, "subscribe");
    assert_eq!(st.subscription.as_ref().unwrap()["id"], "sub-1");
    assert_eq!(store.subscription("hooked").await.unwrap().unwrap().secret.unwrap().expose(), "whsec_1");

    runner.poll_triggers().await.unwrap();
    clock.advance(Duration::from_secs(3_540));
    runner.poll_triggers().await.unwrap();
    assert_eq!(app.count_on("/subscriptions"), 1, "nothing to do an hour before expiry");

    // An hour before it expires: a new subscription, then the old one goes.
    clock.advance(Duration::from_secs(60));
    let r = runner.poll_triggers().await.unwrap();
    assert_eq!(r.subscriptions, 1);
    assert_eq!(app.count_on("/subscriptions"), 2);
    assert_eq!(app.received_on("/subscriptions/sub-1").len(), 1, "the old subscription is dropped");
    assert_eq!(store.subscription("hooked").await.unwrap().unwrap().subscription_id, "sub-2");

    runner.set_enabled("hooked", false).await.unwrap();
    let gone = app.received_on("/subscriptions/sub-2");
    assert_eq!(gone.len(), 1, "disabling unsubscribes once");
    assert_eq!(gone[0].method, "DELETE");
    assert!(store.subscription("hooked").await.unwrap().is_none());
    assert!(runner.hook("subscriptions/hooked").is_none());
    runner.poll_triggers().await.unwrap();
    assert_eq!(app.count_on("/subscriptions"), 2, "a disabled recipe is not subscribed again");
}

// ---- the API ----

/// Polls `GET /api/v1/recipes/{id}/trigger` until `ok` holds (the server polls every second).
async fn trigger_until(s: &TestServer, id: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    for _ in 0..100 {
        let r = s.api(reqwest::Method::GET, &format!("/api/v1/recipes/{id}/trigger")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        last = r.json().await.unwrap();
        if ok(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the trigger never reached the expected state: {last}");
}

#[tokio::test]
async fn the_api_shows_the_state_previews_rewinds_and_approves_held_batches() {
    let (feed, target) = (Feed::start().await, Target::start().await);
    feed.add(1, 2);
    let s = TestServer::start().await;
    let yaml = feed_recipe(&feed, &target, "hold_above: 2", "", "v1").replace("every: 1m", "every: 10m");
    let r = s.api(reqwest::Method::POST, "/api/v1/recipes").header("content-type", "application/yaml").body(yaml).send().await.unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());

    let st = trigger_until(&s, "orders", |v| !v["seeded_at"].is_null()).await;
    assert_eq!((st["kind"].as_str(), st["every"].as_str(), st["hold_above"].as_u64()), (Some("polling"), Some("10m"), Some(2)));
    assert_eq!(st["held_items"], 0);
    let seeded_at = st["seeded_at"].as_str().unwrap().to_string();

    // A preview lists what a poll from that cursor would fire, and fires nothing.
    feed.add(3, 5);
    let r = s.api(reqwest::Method::POST, "/api/v1/recipes/orders/trigger/rewind").json(&json!({"to": seeded_at})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let rw: Value = r.json().await.unwrap();
    assert_eq!(rw["preview"], true, "a preview unless told otherwise");
    let keys: Vec<(&str, bool)> =
        rw["items"].as_array().unwrap().iter().map(|i| (i["key"].as_str().unwrap(), i["would_fire"].as_bool().unwrap())).collect();
    assert_eq!(keys, [("ord_1", false), ("ord_2", false), ("ord_3", true), ("ord_4", true), ("ord_5", true)]);
    assert_eq!(rw["would_fire"], 3);
    assert!(runs_of(&s.store, "orders").await.is_empty());

    let bad = s.api(reqwest::Method::POST, "/api/v1/recipes/orders/trigger/rewind").json(&json!({"to": "yesterday"})).send().await.unwrap();
    assert_eq!(bad.status(), 400);
    let body: Value = bad.json().await.unwrap();
    assert_eq!((body["code"].as_str(), body["path"].as_str()), (Some("invalid_request"), Some("to")));
    let early = s
        .api(reqwest::Method::POST, "/api/v1/recipes/orders/trigger/rewind")
        .json(&json!({"to": "2001-01-01T00:00:00Z"}))
        .send()
        .await
        .unwrap();
    assert_eq!(early.status(), 404);

    // Applied: the next poll comes at once; 3 new items are above `hold_above: 2`, so held.
    let r = s
        .api(reqwest::Method::POST, "/api/v1/recipes/orders/trigger/rewind")
        .json(&json!({"to": seeded_at, "preview": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let st = trigger_until(&s, "orders", |v| v["held_items"] == 3).await;
    let batch = st["held"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(st["held"][0]["status"], "held");

    let r = s.api(reqwest::Method::POST, &format!("/api/v1/recipes/orders/trigger/held/{batch}/approve")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let d: Value = r.json().await.unwrap();
    assert_eq!(d["run_ids"].as_array().unwrap().len(), 3);
    assert_eq!(d["batch"]["status"], "approved");
    let again = s.api(reqwest::Method::POST, &format!("/api/v1/recipes/orders/trigger/held/{batch}/discard")).send().await.unwrap();
    assert_eq!(again.status(), 409);
    target.wait_for("/got", 3).await;
    let mut ids = got_ids(&target);
    ids.sort();
    assert_eq!(ids, ["ord_3", "ord_4", "ord_5"], "each approved item ran once (in parallel: any order)");

    let nope = s.api(reqwest::Method::GET, "/api/v1/recipes/none/trigger").send().await.unwrap();
    assert_eq!(nope.status(), 404);
    let doc: Value = s.http.get(s.url("/api/v1/openapi.json")).send().await.unwrap().json().await.unwrap();
    for p in ["/api/v1/recipes/{id}/trigger", "/api/v1/recipes/{id}/trigger/rewind", "/api/v1/recipes/{id}/trigger/held/{batch}/approve"] {
        assert!(doc["paths"].get(p).is_some(), "{p} is documented");
    }
}

// ---- the CLI ----

// The CLI's rewind polls the feed, served by this test's runtime while the test waits for
// the process: two worker threads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_shows_previews_and_approves() {
    let (feed, target) = (Feed::start().await, Target::start().await);
    feed.add(1, 1);
    let data = temp_dir("trigger-cli");
    let store = Store::open(&enlace_store::StoreConfig {
        database_url: None,
        data_dir: data.clone(),
        secret_key: None,
        synchronous: enlace_store::Synchronous::Normal,
    })
    .await
    .unwrap();
    // The CLI's clock is the system's: start this runner's there too.
    let clock = ManualClock::new(enlace_runner::SystemClock.now_ms());
    let (runner, _) = another_runner(&store, &clock).await;
    install(&runner, &feed_recipe(&feed, &target, "hold_above: 1", "", "v1")).await;
    runner.poll_triggers().await.unwrap();
    let to = enlace_runner::clock::rfc3339(runner.now_ms());
    feed.add(2, 3);
    let cli = |args: &[&str]| {
        let out = bin().env("ENLACE_ALLOW_PRIVATE_NETWORKS", "true").args(args).arg("--data-dir").arg(&data).output().unwrap();
        assert!(out.status.success(), "enlace {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let shown = cli(&["trigger", "show", "orders"]);
    assert_eq!((shown["kind"].as_str(), shown["every"].as_str()), (Some("polling"), Some("1m")));
    let rw = cli(&["trigger", "rewind", "orders", "--to", &to]);
    assert_eq!((rw["preview"].as_bool(), rw["would_fire"].as_u64()), (Some(true), Some(2)), "{rw}");
    cli(&["trigger", "rewind", "orders", "--to", &to, "--apply"]);
    clock.set(enlace_runner::SystemClock.now_ms());
    assert_eq!(runner.poll_triggers().await.unwrap().held, 1, "the applied rewind makes the poll due; 2 > hold_above");
    let shown = cli(&["trigger", "show", "orders"]);
    let batch = shown["held"][0]["id"].as_str().unwrap().to_string();
    let d = cli(&["trigger", "approve", "orders", &batch]);
    assert_eq!(d["run_ids"].as_array().unwrap().len(), 2);
    let out = bin().args(["trigger", "discard", "orders", &batch, "--data-dir"]).arg(&data).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("approved already"));
    assert_eq!(runs_of(&store, "orders").await.len(), 2);
}

// ---- validation ----

#[test]
fn every_and_hold_above_are_checked() {
    let registry = enlace_connectors::registry();
    let check = |trigger: &str| {
        let yaml = format!("id: x\ntrigger: {trigger}\nsteps:\n  - id: f\n    filter: \"{{{{eq 1 1}}}}\"\n");
        enlace_recipe::load(&yaml, Some("x.yaml"), &registry).err().map(|d| d.to_string()).unwrap_or_default()
    };
    let ok = check(r#"{app: http, event: poll_json, every: 10s, hold_above: 5, with: {url: "https://x.example/feed", id: id}}"#);
    assert_eq!(ok, "");
    let fast = check(r#"{app: http, event: poll_json, every: 5s, with: {url: "https://x.example/feed", id: id}}"#);
    assert!(fast.contains("trigger.every") && fast.contains("at most every 10s"), "{fast}");
    let zero = check(r#"{app: http, event: poll_json, hold_above: 0, with: {url: "https://x.example/feed", id: id}}"#);
    assert!(zero.contains("trigger.hold_above") && zero.contains("between 1 and 100000"), "{zero}");
    let hook = check("{app: webhook, event: catch, every: 1m}");
    assert!(hook.contains("applies to polling triggers only"), "{hook}");
    let missing = check(r#"{app: http, event: poll_json, with: {url: "https://x.example/feed"}}"#);
    assert!(missing.contains("the field `id` is required"), "{missing}");
}
