//! The actions against a local server that answers like an instance (answers shaped as in
//! Mastodon's own API description), through the erased actions the runner calls.

use enlace_core::{ConnectorError, Credentials, ErrorClass, Secret};
use enlace_kit::testing::{FakeVendor, Reply, ctx};
use serde_json::{Value, json};

use crate::actions::html_to_text;
use crate::connector;

fn creds() -> Credentials {
    Credentials::OAuth2 { access_token: Secret::new("masto-token") }
}

async fn call(action: &str, input: Value) -> Result<Value, ConnectorError> {
    let mut c = ctx(creds());
    c.idempotency_key = "0193-target-key".into();
    connector().action(action).expect("registered").call(&c, input).await
}

#[tokio::test]
async fn posts_with_media_visibility_and_the_idempotency_key() {
    let v = FakeVendor::start().await;
    v.on("GET", "/files/cat.png", [Reply::text(200, "image/png", "PNGDATA")]);
    v.on("POST", "/api/v2/media", [Reply::json(200, json!({"id": "22348641", "type": "image", "url": null}))]);
    v.on(
        "POST",
        "/api/v1/statuses",
        [Reply::json(200, json!({"id": "103254962155278888", "url": "https://m.example/@a/103254962155278888", "created_at": "2026-11-26T09:00:00.000Z", "content": "<p>Hi</p>"}))],
    );
    let out = call(
        "post",
        json!({"instance": v.url(), "status": "Hi", "media": [{"url": format!("{}/files/cat.png", v.url()), "mime_type": "image/png", "alt": "A cat"}],
               "visibility": "unlisted", "spoiler_text": "cats", "language": "en"}),
    )
    .await
    .unwrap();
    assert_eq!(out["id"], "103254962155278888");
    assert_eq!(out["url"], "https://m.example/@a/103254962155278888");
    let seen = v.requests();
    let upload = seen.iter().find(|s| s.path == "/api/v2/media").unwrap();
    assert!(upload.header("content-type").unwrap().starts_with("multipart/form-data; boundary="));
    let body = String::from_utf8_lossy(&upload.body);
    assert!(body.contains("name=\"file\"; filename=\"cat.png\"") && body.contains("PNGDATA") && body.contains("A cat"), "{body}");
    assert_eq!(upload.header("authorization"), Some("Bearer masto-token"));
    let status = seen.iter().find(|s| s.path == "/api/v1/statuses").unwrap();
    assert_eq!(status.header("idempotency-key"), Some("0193-target-key"));
    assert_eq!(
        status.json(),
        json!({"status": "Hi", "media_ids": ["22348641"], "visibility": "unlisted", "spoiler_text": "cats", "language": "en"})
    );
}

#[tokio::test]
async fn refusals_are_classified() {
    let v = FakeVendor::start().await;
    v.on("POST", "/api/v1/statuses", [Reply::json(422, json!({"error": "Validation failed: Text character limit of 500 exceeded"}))]);
    let e = call("post", json!({"instance": v.url(), "status": "x"})).await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::BadInput);
    assert!(e.message().contains("character limit"), "{e}");
    let e = call("post", json!({"instance": "mastodon.social", "status": "x"})).await.unwrap_err();
    assert!(matches!(e, ConnectorError::BadInput { ref path, .. } if path == "instance"), "{e}");
    let e = call("post", json!({"instance": v.url(), "status": "x", "visibility": "friends"})).await.unwrap_err();
    assert!(matches!(e, ConnectorError::BadInput { ref path, .. } if path == "visibility"), "{e}");
    let v = FakeVendor::start().await;
    v.on("POST", "/api/v1/statuses", [Reply::json(429, json!({"error": "Too many requests"})).header("retry-after", "30")]);
    let e = call("post", json!({"instance": v.url(), "status": "x"})).await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::RateLimited);
    assert_eq!(e.retry_after(), Some(std::time::Duration::from_secs(30)));
}

#[tokio::test]
async fn recent_posts_as_plain_text() {
    let v = FakeVendor::start().await;
    v.on("GET", "/api/v1/accounts/verify_credentials", [Reply::json(200, json!({"id": "14715", "username": "enlace"}))]);
    v.on(
        "GET",
        "/api/v1/accounts/14715/statuses",
        [Reply::json(
            200,
            json!([{"id": "9", "url": "https://m.example/@enlace/9", "created_at": "2026-11-26T09:00:00.000Z",
                "content": "<p>Launch day! &amp; more</p><p><a href=\"https://blog.example/launch\" rel=\"nofollow noopener\"><span class=\"invisible\">https://</span><span class=\"\">blog.example/launch</span><span class=\"invisible\"></span></a></p>"}]),
        )],
    );
    let out = call("recent_posts", json!({"instance": v.url(), "limit": 10})).await.unwrap();
    assert_eq!(out["posts"][0]["text"], "Launch day! & more\n\nhttps://blog.example/launch");
    assert_eq!(out["posts"][0]["id"], "9");
    let q = &v.requests()[1].query;
    assert_eq!(q.get("limit").map(String::as_str), Some("10"));
    assert_eq!(q.get("exclude_reblogs").map(String::as_str), Some("true"));
    assert_eq!(html_to_text("a<br>b<br />c"), "a\nb\nc");
}

#[tokio::test]
async fn instance_limits() {
    let v = FakeVendor::start().await;
    v.on(
        "GET",
        "/api/v2/instance",
        [Reply::json(200, json!({"domain": "m.example", "configuration": {"statuses": {"max_characters": 5000, "max_media_attachments": 6, "characters_reserved_per_url": 23},
            "media_attachments": {"supported_mime_types": ["image/jpeg", "image/png"]}}}))],
    );
    let out = call("instance_limits", json!({"instance": v.url()})).await.unwrap();
    assert_eq!(
        out,
        json!({"max_characters": 5000, "max_media_attachments": 6, "characters_reserved_per_url": 23, "supported_mime_types": ["image/jpeg", "image/png"]})
    );
}
