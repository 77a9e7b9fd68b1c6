//! `linkedin` against a fake LinkedIn on 127.0.0.1. LinkedIn publishes no machine-readable
//! description of its API, so the request of `POST /rest/posts` is checked against the JSON
//! Schema below, written from the Posts API reference (learn.microsoft.com, "Posts API":
//! the request fields, which are required, their enums), and the answers are recorded ones.

use serde_json::{Value, json};

use enlace_core::{ConnectorError, Credentials, ErrorClass, Secret};
use enlace_kit::testing::{FakeVendor, Reply, Seen, ctx};

use crate::*;

fn creds() -> Credentials {
    Credentials::OAuth2 { access_token: Secret::new("AQX-token") }
}

fn dir() -> &'static str {
    env!("CARGO_MANIFEST_DIR")
}

/// `POST /rest/posts`, from the Posts API reference: `author`, `commentary`, `visibility`,
/// `distribution` and `lifecycleState` are required; `content` is one of `article` (`source`
/// and `title` required), `media` (`id`), `multiImage`, `poll`, `reference`.
fn posts_schema() -> Value {
    json!({
        "type": "object",
        "required": ["author", "commentary", "visibility", "distribution", "lifecycleState"],
        "additionalProperties": false,
        "properties": {
            "author": {"type": "string", "minLength": 10},
            "commentary": {"type": "string", "maxLength": 3000},
            "visibility": {"enum": ["CONNECTIONS", "PUBLIC", "LOGGED_IN", "CONTAINER"]},
            "distribution": {
                "type": "object",
                "required": ["feedDistribution"],
                "additionalProperties": false,
                "properties": {
                    "feedDistribution": {"enum": ["MAIN_FEED", "NONE"]},
                    "targetEntities": {"type": "array", "items": {"type": "object"}},
                    "thirdPartyDistributionChannels": {"type": "array", "items": {"type": "string"}}
                }
            },
            "lifecycleState": {"enum": ["DRAFT", "PUBLISHED", "PUBLISH_REQUESTED", "PUBLISH_FAILED"]},
            "isReshareDisabledByAuthor": {"type": "boolean"},
            "contentLandingPage": {"type": "string"},
            "contentCallToActionLabel": {"type": "string"},
            "reshareContext": {"type": "object"},
            "container": {"type": "string"},
            "adContext": {"type": "object"},
            "content": {
                "type": "object",
                "additionalProperties": false,
                "properties": {
                    "article": {
                        "type": "object",
                        "required": ["source", "title"],
                        "additionalProperties": false,
                        "properties": {
                            "source": {"type": "string"},
                            "title": {"type": "string"},
                            "description": {"type": "string"},
                            "thumbnail": {"type": "string"},
                            "thumbnailAltText": {"type": "string"}
                        }
                    },
                    "media": {
                        "type": "object",
                        "required": ["id"],
                        "additionalProperties": false,
                        "properties": {"id": {"type": "string"}, "title": {"type": "string"}, "altText": {"type": "string"}}
                    },
                    "multiImage": {"type": "object"},
                    "poll": {"type": "object"},
                    "reference": {"type": "object"}
                }
            }
        }
    })
}

/// A Posts API request checked whole: headers, then the body against the schema, and the
/// URNs' shapes (which JSON Schema's subset here cannot say).
fn check_post(r: &Seen) -> Result<(), String> {
    if r.header("authorization") != Some("Bearer AQX-token") {
        return Err("no OAuth2 token".into());
    }
    let version = r.header("linkedin-version").ok_or("no LinkedIn-Version header")?;
    if version.len() != 6 || !version.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("LinkedIn-Version `{version}` is not YYYYMM"));
    }
    if r.header("x-restli-protocol-version") != Some("2.0.0") {
        return Err("X-Restli-Protocol-Version is not 2.0.0".into());
    }
    let body = r.json();
    let errs = enlace_kit::schema::validate(&body, &posts_schema());
    if !errs.is_empty() {
        return Err(errs.join("; "));
    }
    let a = body["author"].as_str().unwrap_or("");
    if !(a.starts_with("urn:li:organization:") || a.starts_with("urn:li:person:")) {
        return Err(format!("author `{a}` is not a person or organization URN"));
    }
    if let Some(id) = body["content"]["media"]["id"].as_str()
        && !id.starts_with("urn:li:image:")
    {
        return Err(format!("media id `{id}` is not an image URN"));
    }
    Ok(())
}

#[tokio::test]
async fn publishes_a_text_post_with_a_link_and_reads_its_urn_from_the_header() {
    let v = FakeVendor::start().await;
    v.on("POST", "/rest/posts", [Reply::recorded(dir(), "post_created.json")]);
    let c = connector_at(&v.url());
    let input =
        json!({"author": "urn:li:organization:123", "text": "Spring webinar (free) #marketing", "link": "https://example.com/webinar"});
    let out = c.action("create_post").unwrap().call(&ctx(creds()), input).await.unwrap();
    assert_eq!(
        out,
        json!({"id": "urn:li:share:7100000000000000000", "url": "https://www.linkedin.com/feed/update/urn:li:share:7100000000000000000/"})
    );
    let seen = v.requests();
    check_post(&seen[0]).unwrap();
    let body = seen[0].json();
    // Little text: reserved characters escaped, so they show as typed.
    assert_eq!(body["commentary"], "Spring webinar \\(free\\) \\#marketing");
    assert_eq!(body["visibility"], "PUBLIC");
    assert_eq!(body["content"]["article"]["source"], "https://example.com/webinar");
}

#[tokio::test]
async fn an_image_is_uploaded_before_the_post() {
    let v = FakeVendor::start().await;
    let upload = format!("{}/upload/abc", v.url());
    v.on(
        "POST",
        "/rest/images",
        [Reply::json(
            200,
            json!({"value": {"uploadUrlExpiresAt": 1_790_000_000_000i64, "uploadUrl": upload, "image": "urn:li:image:C4E10AQ"}}),
        )],
    );
    v.on("GET", "/pics/cat.png", [Reply::text(200, "image/png", "PNG-BYTES")]);
    v.on("PUT", "/upload/abc", [Reply::empty(201)]);
    v.on("POST", "/rest/posts", [Reply::recorded(dir(), "post_created.json")]);
    let c = connector_at(&v.url());
    let input = json!({"author": "urn:li:person:abc", "text": "A cat", "image_url": format!("{}/pics/cat.png", v.url()), "visibility": "CONNECTIONS"});
    c.action("create_post").unwrap().call(&ctx(creds()), input).await.unwrap();
    let seen = v.requests();
    assert_eq!(
        seen.iter().map(|r| format!("{} {}", r.method, r.path)).collect::<Vec<_>>(),
        ["POST /rest/images", "GET /pics/cat.png", "PUT /upload/abc", "POST /rest/posts"]
    );
    assert_eq!(seen[0].query.get("action").map(String::as_str), Some("initializeUpload"));
    assert_eq!(seen[0].json(), json!({"initializeUploadRequest": {"owner": "urn:li:person:abc"}}));
    assert_eq!(&seen[2].body[..], b"PNG-BYTES");
    check_post(&seen[3]).unwrap();
    assert_eq!(seen[3].json()["content"], json!({"media": {"id": "urn:li:image:C4E10AQ"}}));
    assert_eq!(seen[3].json()["visibility"], "CONNECTIONS");
}

#[test]
fn the_schema_rejects_a_wrong_request() {
    let good = post_body(
        &CreateInput { author: "urn:li:organization:1".into(), text: "hi".into(), link: None, image_url: None, visibility: None },
        None,
    )
    .unwrap();
    assert!(enlace_kit::schema::validate(&good, &posts_schema()).is_empty());
    for (bad, why) in [
        (
            json!({"author": "urn:li:organization:1", "text": "hi", "visibility": "PUBLIC", "distribution": {"feedDistribution": "MAIN_FEED"}, "lifecycleState": "PUBLISHED"}),
            "text",
        ),
        (
            json!({"author": "urn:li:organization:1", "commentary": "hi", "visibility": "EVERYONE", "distribution": {"feedDistribution": "MAIN_FEED"}, "lifecycleState": "PUBLISHED"}),
            "visibility",
        ),
        (
            json!({"author": "urn:li:organization:1", "commentary": "hi", "visibility": "PUBLIC", "lifecycleState": "PUBLISHED"}),
            "distribution",
        ),
        (
            json!({"author": "urn:li:organization:1", "commentary": "hi", "visibility": "PUBLIC", "distribution": {"feedDistribution": "MAIN_FEED"}, "lifecycleState": "PUBLISHED", "content": {"article": {"source": "x"}}}),
            "title",
        ),
    ] {
        let errs = enlace_kit::schema::validate(&bad, &posts_schema());
        assert!(errs.iter().any(|e| e.contains(why)), "{bad}: {errs:?}");
    }
}

#[tokio::test]
async fn a_lost_answer_is_maybe_published_never_an_error_to_retry() {
    let v = FakeVendor::start().await;
    // 201 without the header: the post may exist.
    v.on("POST", "/rest/posts", [Reply::empty(201)]);
    let c = connector_at(&v.url());
    let e =
        c.action("create_post").unwrap().call(&ctx(creds()), json!({"author": "urn:li:organization:1", "text": "x"})).await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::MaybeDelivered, "{e}");
    assert_eq!(c.action("create_post").unwrap().spec().idempotency, enlace_core::Idempotency::None);
    // A request that left and timed out is maybe delivered too (not retried blindly).
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = vec![];
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let mut cx = ctx(creds());
    cx.timeout = std::time::Duration::from_millis(300);
    let e = connector_at(&format!("http://{addr}"))
        .action("create_post")
        .unwrap()
        .call(&cx, json!({"author": "urn:li:organization:1", "text": "x"}))
        .await
        .unwrap_err();
    assert_eq!(e.class(), ErrorClass::MaybeDelivered, "{e}");
}

#[tokio::test]
async fn recent_posts_newest_first() {
    let v = FakeVendor::start().await;
    v.on("GET", "/rest/posts", [Reply::recorded(dir(), "recent_posts.json")]);
    let c = connector_at(&v.url());
    let out =
        c.action("recent_posts").unwrap().call(&ctx(creds()), json!({"author": "urn:li:organization:123", "limit": 5})).await.unwrap();
    let seen = v.requests();
    assert_eq!(seen[0].query.get("author").map(String::as_str), Some("urn:li:organization:123"));
    assert_eq!(seen[0].query.get("q").map(String::as_str), Some("author"));
    assert_eq!(seen[0].query.get("count").map(String::as_str), Some("5"));
    assert_eq!(seen[0].header("x-restli-protocol-version"), Some("2.0.0"));
    assert_eq!(out["posts"][0]["id"], "urn:li:share:7100000000000000001");
    assert_eq!(out["posts"][0]["created_at"], "2026-11-25T10:00:00Z");
    // LinkedIn answers in "little text" (`\(`); the text comes back as typed.
    assert_eq!(out["posts"][1]["text"], "Spring webinar (free)");
}

#[tokio::test]
async fn bad_input_and_refusals_name_the_field() {
    let c = connector_at("http://127.0.0.1:9");
    let a = c.action("create_post").unwrap();
    for (input, path) in [
        (json!({"author": "123", "text": "x"}), "author"),
        (json!({"author": "urn:li:organization:1", "text": " "}), "text"),
        (json!({"author": "urn:li:organization:1", "text": "x".repeat(3001)}), "text"),
        (json!({"author": "urn:li:organization:1", "text": "x", "link": "https://a.b", "image_url": "https://a.b/c.png"}), "link"),
        (json!({"author": "urn:li:organization:1", "text": "x", "visibility": "CONNECTIONS"}), "visibility"),
    ] {
        match a.call(&ctx(creds()), input.clone()).await {
            Err(ConnectorError::BadInput { path: p, .. }) => assert_eq!(p, path, "{input}"),
            other => panic!("{input}: {other:?}"),
        }
    }
    let v = FakeVendor::start().await;
    v.on("POST", "/rest/posts", [Reply::recorded(dir(), "duplicate.json")]);
    let e = connector_at(&v.url())
        .action("create_post")
        .unwrap()
        .call(&ctx(creds()), json!({"author": "urn:li:organization:1", "text": "x"}))
        .await
        .unwrap_err();
    assert!(matches!(&e, ConnectorError::BadInput { path, .. } if path == "text"), "{e:?}");
}
