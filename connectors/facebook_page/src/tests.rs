//! `facebook_page` against a fake Graph API on 127.0.0.1: every request checked against
//! Meta's own description of the Page node (`../shared/vendor-specs/meta/Page.json`, and
//! `PagePost.json` for the fields read back) through `enlace_kit::testing::graph`.

use serde_json::{Map, Value, json};

use enlace_core::{ConnectorError, Credentials, ErrorClass, Secret};
use enlace_kit::testing::graph::GraphSpec;
use enlace_kit::testing::{FakeVendor, Reply, Seen, ctx};

use crate::*;

const PAGE: &str = "104857600000000";

fn creds() -> Credentials {
    Credentials::Bearer { token: Secret::new("EAAPage-token") }
}

fn dir() -> &'static str {
    env!("CARGO_MANIFEST_DIR")
}

/// A request checked against the Page node's description: the edge and method, the form's
/// parameters by name and type, and for reads the query's `fields` among PagePost's fields.
fn check(spec: &GraphSpec, r: &Seen) -> Result<(), String> {
    if r.header("authorization") != Some("Bearer EAAPage-token") {
        return Err("no page token".into());
    }
    let edge = r.path.strip_prefix(&format!("/{PAGE}/")).ok_or("not a Page edge")?;
    let params: Map<String, Value> = if r.method == "GET" {
        r.query.iter().map(|(k, v)| (k.clone(), json!(v))).collect()
    } else {
        if r.header("content-type") != Some("application/x-www-form-urlencoded") {
            return Err("not a form".into());
        }
        r.form().into_iter().map(|(k, v)| (k, json!(v))).collect()
    };
    spec.check("Page", &r.method, edge, &params).map_err(|e| e.join("; "))?;
    if let Some(fields) = params.get("fields").and_then(Value::as_str) {
        let known = spec.fields("PagePost");
        for f in fields.split(',') {
            if !known.iter().any(|k| k == f) {
                return Err(format!("`{f}` is not a field of PagePost"));
            }
        }
    }
    Ok(())
}

#[tokio::test]
async fn posts_a_message_with_a_link_on_the_feed() {
    let v = FakeVendor::start().await;
    v.on("POST", &format!("/{PAGE}/feed"), [Reply::recorded(dir(), "feed_post.json")]);
    let c = connector_at(&v.url());
    let out = c
        .action("create_post")
        .unwrap()
        .call(&ctx(creds()), json!({"page_id": PAGE, "message": "New blog post", "link": "https://example.com/blog/1"}))
        .await
        .unwrap();
    assert_eq!(
        out,
        json!({"id": "104857600000000_122100000000000001", "url": "https://www.facebook.com/104857600000000_122100000000000001"})
    );
    let seen = v.requests();
    let spec = GraphSpec::load(&["Page", "PagePost"]);
    check(&spec, &seen[0]).unwrap();
    assert_eq!(seen[0].form().get("message").map(String::as_str), Some("New blog post"));
    assert_eq!(seen[0].form().get("link").map(String::as_str), Some("https://example.com/blog/1"));
}

#[tokio::test]
async fn a_photo_goes_to_the_photos_edge_and_the_post_id_is_kept() {
    let v = FakeVendor::start().await;
    v.on("POST", &format!("/{PAGE}/photos"), [Reply::recorded(dir(), "photo_post.json")]);
    let c = connector_at(&v.url());
    let out = c
        .action("create_post")
        .unwrap()
        .call(&ctx(creds()), json!({"page_id": PAGE, "message": "Our team", "photo_url": "https://example.com/team.jpg"}))
        .await
        .unwrap();
    assert_eq!(out["id"], "104857600000000_122100000000000002");
    let seen = v.requests();
    check(&GraphSpec::load(&["Page", "PagePost"]), &seen[0]).unwrap();
    assert_eq!(seen[0].form().get("url").map(String::as_str), Some("https://example.com/team.jpg"));
    assert_eq!(seen[0].form().get("caption").map(String::as_str), Some("Our team"));
}

#[tokio::test]
async fn recent_posts_are_read_newest_first() {
    let v = FakeVendor::start().await;
    v.on("GET", &format!("/{PAGE}/published_posts"), [Reply::recorded(dir(), "published_posts.json")]);
    let c = connector_at(&v.url());
    let out = c.action("recent_posts").unwrap().call(&ctx(creds()), json!({"page_id": PAGE, "limit": 5})).await.unwrap();
    let seen = v.requests();
    check(&GraphSpec::load(&["Page", "PagePost"]), &seen[0]).unwrap();
    assert_eq!(out["posts"][0]["id"], "104857600000000_122100000000000002");
    assert_eq!(out["posts"][0]["created_at"], "2026-11-25T10:00:00Z");
    assert_eq!(out["posts"][1]["text"], "New blog post");
}

#[test]
fn the_check_rejects_a_wrong_request() {
    let spec = GraphSpec::load(&["Page", "PagePost"]);
    let good: Map<String, Value> = [("message".to_string(), json!("hi")), ("published".to_string(), json!("true"))].into_iter().collect();
    assert_eq!(spec.check("Page", "POST", "feed", &good), Ok(()));
    // `text` is no parameter of /feed (it is `message`), `published` is a boolean.
    let wrong: Map<String, Value> = [("text".to_string(), json!("hi")), ("published".to_string(), json!("soon"))].into_iter().collect();
    let errs = spec.check("Page", "POST", "feed", &wrong).unwrap_err();
    assert_eq!(errs.len(), 2, "{errs:?}");
    // `photo_url` is not how /photos takes a photo (`url`).
    let wrong: Map<String, Value> = [("photo_url".to_string(), json!("https://x"))].into_iter().collect();
    assert!(spec.check("Page", "POST", "photos", &wrong).is_err());
}

#[tokio::test]
async fn a_lost_answer_is_maybe_published() {
    let v = FakeVendor::start().await;
    v.on("POST", &format!("/{PAGE}/feed"), [Reply::text(200, "text/html", "<html>gateway</html>")]);
    let e = connector_at(&v.url())
        .action("create_post")
        .unwrap()
        .call(&ctx(creds()), json!({"page_id": PAGE, "message": "x"}))
        .await
        .unwrap_err();
    assert_eq!(e.class(), ErrorClass::MaybeDelivered, "{e}");
    assert_eq!(connector().action("create_post").unwrap().spec().idempotency, enlace_core::Idempotency::None);
}

#[tokio::test]
async fn errors_and_usage_headers() {
    let v = FakeVendor::start().await;
    v.on("POST", &format!("/{PAGE}/feed"), [Reply::recorded(dir(), "page_throttled.json"), Reply::recorded(dir(), "token_revoked.json")]);
    let c = connector_at(&v.url());
    let input = json!({"page_id": PAGE, "message": "x"});
    match c.action("create_post").unwrap().call(&ctx(creds()), input.clone()).await.unwrap_err() {
        // X-Page-Usage: estimated_time_to_regain_access 10 minutes.
        ConnectorError::RateLimited { retry_after, .. } => assert_eq!(retry_after, Some(std::time::Duration::from_secs(600))),
        other => panic!("{other:?}"),
    }
    let e = c.action("create_post").unwrap().call(&ctx(creds()), input).await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::Auth, "{e}");
    let bad = connector_at("http://127.0.0.1:9");
    for (input, path) in [
        (json!({"page_id": "my-page", "message": "x"}), "page_id"),
        (json!({"page_id": PAGE, "message": " "}), "message"),
        (json!({"page_id": PAGE, "message": "x", "link": "https://a", "photo_url": "https://b"}), "link"),
        (json!({"page_id": PAGE, "message": "x", "photo_url": "file:///etc/passwd"}), "photo_url"),
    ] {
        match bad.action("create_post").unwrap().call(&ctx(creds()), input.clone()).await {
            Err(ConnectorError::BadInput { path: p, .. }) => assert_eq!(p, path, "{input}"),
            other => panic!("{input}: {other:?}"),
        }
    }
}
