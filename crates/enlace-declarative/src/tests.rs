//! The shipped declarative connectors against a fake vendor on 127.0.0.1:0 (the kit's test
//! kit), and the diagnostics of broken manifests.

use std::path::Path;
use std::time::Duration;

use enlace_core::{Connector, Credentials, ErrorClass, Secret};
use enlace_kit::testing::{FakeVendor, Reply, ctx};
use serde_json::{Value, json};

use crate::{Declared, parse};

fn shipped(app: &str) -> Declared {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../connectors/declarative").join(app).join("connector.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    parse(&text, Some(&format!("connectors/declarative/{app}/connector.yaml"))).unwrap_or_else(|d| panic!("{d}"))
}

/// The test manifest (testdata/microblog.yaml): OAuth2, an action, error rules, a paged
/// trigger.
fn microblog() -> Declared {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/microblog.yaml");
    parse(&std::fs::read_to_string(&path).unwrap(), Some("testdata/microblog.yaml")).unwrap_or_else(|d| panic!("{d}"))
}

fn x_at(vendor: &FakeVendor) -> Connector {
    microblog().connector_at(&vendor.url())
}

fn token() -> Credentials {
    Credentials::OAuth2 { access_token: Secret::new("x-token") }
}

#[test]
fn the_test_and_shipped_manifests_load_as_connectors() {
    let x = microblog().connector();
    assert_eq!(x.manifest.auth, enlace_core::AuthKind::OAuth2);
    assert_eq!(x.manifest.oauth2.as_ref().unwrap().token_url, "https://api.microblog.example/2/oauth2/token");
    assert_eq!(x.manifest.rate_limit.unwrap().per, Duration::from_secs(900));
    let post = &x.manifest.actions[0];
    assert_eq!(post.input_schema["required"], json!(["text"]));
    assert_eq!(post.input_schema["additionalProperties"], json!(false));
    let rss = shipped("rss2json").connector();
    assert!(rss.polling_trigger("new_item").is_some() && rss.action("read_feed").is_some());
}

#[tokio::test]
async fn post_sends_the_rendered_body_and_returns_the_data() {
    let v = FakeVendor::start().await;
    v.on("POST", "/2/tweets", [Reply::json(201, json!({"data": {"id": "1445880548472328192", "text": "Hello"}}))]);
    let out = x_at(&v).action("post").unwrap().call(&ctx(token()), json!({"text": "Hello"})).await.unwrap();
    assert_eq!(out, json!({"id": "1445880548472328192", "text": "Hello"}));
    let seen = &v.requests()[0];
    assert_eq!(seen.header("authorization"), Some("Bearer x-token"));
    assert_eq!(seen.json(), json!({"text": "Hello"}), "the reply left out, with its empty map");

    let out = x_at(&v).action("post").unwrap().call(&ctx(token()), json!({"text": "Yes", "reply_to": "123"})).await;
    assert!(out.is_ok());
    assert_eq!(v.requests()[1].json(), json!({"text": "Yes", "reply": {"in_reply_to_tweet_id": "123"}}));
}

#[tokio::test]
async fn input_is_checked_before_any_call() {
    let v = FakeVendor::start().await;
    let x = x_at(&v);
    let a = x.action("post").unwrap();
    let e = a.call(&ctx(token()), json!({})).await.unwrap_err();
    assert_eq!((e.class(), e.to_json()["path"].clone()), (ErrorClass::BadInput, json!("")));
    assert!(e.message().contains("the field `text` is required"), "{e}");
    let e = a.call(&ctx(token()), json!({"text": "a", "colour": "red"})).await.unwrap_err();
    assert_eq!(e.to_json()["path"], json!("colour"));
    let e = a.call(&ctx(token()), json!({"text": "x".repeat(281)})).await.unwrap_err();
    assert_eq!(e.to_json()["path"], json!("text"));
    assert!(v.requests().is_empty());
}

#[tokio::test]
async fn errors_follow_the_manifest_then_the_kit() {
    let v = FakeVendor::start().await;
    v.on(
        "POST",
        "/2/tweets",
        [
            Reply::json(403, json!({"title": "Forbidden", "detail": "You are not allowed to create a Tweet with duplicate content."})),
            Reply::json(429, json!({"title": "Too Many Requests"})).header("Retry-After", "60"),
            Reply::json(401, json!({"title": "Unauthorized"})),
            Reply::json(503, json!({"title": "Service Unavailable"})),
        ],
    );
    let x = x_at(&v);
    let a = x.action("post").unwrap();
    let c = ctx(token());
    let call = || a.call(&c, json!({"text": "Hello"}));
    let e = call().await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::Permanent, "the manifest maps 403 to permanent: {e}");
    assert_eq!(e.message(), "HTTP 403: You are not allowed to create a Tweet with duplicate content.");
    let e = call().await.unwrap_err();
    assert_eq!((e.class(), e.retry_after()), (ErrorClass::RateLimited, Some(Duration::from_secs(60))));
    assert_eq!(call().await.unwrap_err().class(), ErrorClass::Auth);
    assert_eq!(call().await.unwrap_err().class(), ErrorClass::Transient);
}

fn mention(id: &str) -> Value {
    json!({"id": id, "text": format!("@enlace hello {id}"), "edit_history_tweet_ids": [id]})
}

#[tokio::test]
async fn new_mention_reads_every_page_and_keeps_the_newest_id_as_cursor() {
    let v = FakeVendor::start().await;
    v.on(
        "GET",
        "/2/users/2244994945/mentions",
        [
            Reply::json(200, json!({"data": [mention("30"), mention("29")], "meta": {"next_token": "p2"}})),
            Reply::json(200, json!({"data": [mention("28")], "meta": {}})),
            Reply::json(200, json!({"meta": {"result_count": 0}})),
        ],
    );
    let x = x_at(&v);
    let t = x.polling_trigger("new_mention").unwrap();
    let page = t.poll(&ctx(token()), json!({"user_id": "2244994945"}), None).await.unwrap();
    let keys: Vec<&str> = page.items.iter().map(|i| i.dedupe_key.as_str()).collect();
    assert_eq!(keys, ["30", "29", "28"]);
    assert_eq!(page.items[0].event, mention("30"));
    assert_eq!(page.cursor.as_deref(), Some("30"));
    let seen = v.requests();
    assert_eq!(seen[0].query.get("since_id"), None, "no cursor yet: no since_id");
    assert_eq!(seen[0].query["max_results"], "100");
    assert_eq!(seen[1].query["pagination_token"], "p2");
    let page = t.poll(&ctx(token()), json!({"user_id": "2244994945"}), Some("30".into())).await.unwrap();
    assert!(page.items.is_empty() && page.cursor.is_none(), "nothing new keeps the cursor");
    assert_eq!(v.requests()[2].query["since_id"], "30");
}

#[tokio::test]
async fn a_path_value_cannot_add_a_segment() {
    let v = FakeVendor::start().await;
    let x = x_at(&v);
    let _ = x.polling_trigger("new_mention").unwrap().poll(&ctx(token()), json!({"user_id": "1/../../admin"}), None).await;
    assert_eq!(v.requests()[0].path, "/2/users/1%2F..%2F..%2Fadmin/mentions");
}

#[tokio::test]
async fn rss2json_sends_the_key_as_a_query_parameter_and_maps_its_error_body() {
    let v = FakeVendor::start().await;
    let items = json!([
        {"title": "B", "link": "https://b.example/2", "guid": "g2", "pubDate": "2026-04-15 10:00:00"},
        {"title": "A", "link": "https://b.example/1", "guid": "g1", "pubDate": "2026-04-14 10:00:00"}
    ]);
    v.on(
        "GET",
        "/v1/api.json",
        [
            Reply::json(200, json!({"status": "ok", "feed": {"title": "B"}, "items": items})),
            Reply::json(422, json!({"status": "error", "message": "Cannot download this RSS feed, make sure the Rss URL is correct."})),
        ],
    );
    let c = shipped("rss2json").connector_at(&format!("{}/v1", v.url()));
    let key = Credentials::ApiKey { header: "x-unused".into(), key: Secret::new("rss-key") };
    let t = c.polling_trigger("new_item").unwrap();
    let page = t.poll(&ctx(key.clone()), json!({"rss_url": "https://b.example/feed.xml"}), None).await.unwrap();
    assert_eq!(page.items.iter().map(|i| i.dedupe_key.as_str()).collect::<Vec<_>>(), ["g2", "g1"]);
    let seen = &v.requests()[0];
    assert_eq!((seen.query["rss_url"].as_str(), seen.query["api_key"].as_str()), ("https://b.example/feed.xml", "rss-key"));
    assert_eq!(seen.header("x-unused"), None, "the key goes in the query only");
    let e = t.poll(&ctx(key), json!({"rss_url": "https://b.example/nope"}), None).await.unwrap_err();
    assert_eq!((e.class(), e.to_json()["path"].clone()), (ErrorClass::BadInput, json!("rss_url")));
    assert_eq!(e.message(), "HTTP 422: Cannot download this RSS feed, make sure the Rss URL is correct.");
}

#[test]
fn a_broken_manifest_gets_every_problem_with_its_line() {
    let text = r#"id: Acme
name: Acme
base_url: ftp://acme.example
auth: token
rate_limit: lots
actions:
  - id: create
    name: Create
    description: Creates.
    idempotency: key
    input:
      name:
        type: string
      size:
        type: text
        description: The size.
    request:
      method: POST
      path: items
      json:
        name: "{{input.nmae}}"
        who: "{{trigger.body}}"
    output:
      schema: {type: object, properties: {id: {type: string, description: The id.}}, required: [id]}
      sample: {id: 5}
triggers:
  - id: create
    name: New
    description: New items.
    request: {method: GET, path: /items}
    items: items
    output: {schema: {type: object}, sample: {}}
    sort: id
"#;
    let d = parse(text, Some("acme.yaml")).unwrap_err();
    insta::assert_snapshot!(d.to_string());
}

#[test]
fn a_file_that_is_not_yaml_says_where() {
    let d = parse("id: x\n  name: [", Some("x.yaml")).unwrap_err();
    assert!(d.to_string().starts_with("x.yaml:2:"), "{d}");
}
