//! The actions against the fake PDS (src/testing.rs), through the erased actions the runner
//! calls; every request body checked with the AT Protocol lexicons (npm @atproto/lexicon).

use std::time::Duration;

use enlace_core::connection::TestOutcome;
use enlace_core::{ConnectionContext, ConnectorError, Credentials, ErrorClass, Secret};
use enlace_kit::testing::{ctx, transport};
use serde_json::{Value, json};

use crate::connector_at;
use crate::testing::{Check, FakePds, assert_requests_valid, check_lexicon};

const CREATE: &str = "com.atproto.repo.createRecord";
const SESSION: &str = "com.atproto.server.createSession";
const REFRESH: &str = "com.atproto.server.refreshSession";

fn creds(user: &str, pw: &str) -> Credentials {
    Credentials::Basic { username: user.into(), password: Secret::new(pw) }
}

fn alice() -> Credentials {
    creds("alice.test", "app-pass-1234")
}

async fn call(c: &enlace_core::Connector, action: &str, creds: Credentials, input: Value) -> Result<Value, ConnectorError> {
    c.action(action).expect("registered").call(&ctx(creds), input).await
}

fn record_of(pds: &FakePds, n: usize) -> Value {
    pds.calls(CREATE)[n].json()["record"].clone()
}

#[tokio::test]
async fn posts_text_with_facets_at_byte_offsets() {
    let pds = FakePds::start().await;
    pds.add_handle("bob.example.com", "did:plc:bobbobbobbobbobbobbobbob");
    let c = connector_at(&pds.url());
    let text = "👩‍👩‍👧 ne\u{301}e 日本語 #春 with @bob.example.com and @nobody.example.org: https://blog.example/launch?x=1 — example.com/page";
    let out = call(&c, "post", alice(), json!({"text": text, "langs": ["es", "ja"]})).await.unwrap();
    let uri = out["uri"].as_str().unwrap();
    assert!(uri.starts_with("at://did:plc:ewvi7nxzyoun6zhxrhs64oiz/app.bsky.feed.post/"), "{out}");
    assert_eq!(out["id"], out["uri"], "the id is the at:// URI");
    let rkey = uri.rsplit('/').next().unwrap();
    assert_eq!(out["url"], format!("https://bsky.app/profile/alice.test/post/{rkey}"));
    assert!(out["cid"].as_str().unwrap().starts_with("baf"));

    let body = pds.calls(CREATE)[0].json();
    assert_eq!(body["repo"], "did:plc:ewvi7nxzyoun6zhxrhs64oiz");
    assert_eq!(body["collection"], "app.bsky.feed.post");
    let record = &body["record"];
    assert_eq!(record["text"], text);
    assert_eq!(record["langs"], json!(["es", "ja"]));
    assert!(chrono::DateTime::parse_from_rfc3339(record["createdAt"].as_str().unwrap()).is_ok());
    // Each facet's byte range cuts the UTF-8 text at what it annotates.
    let bytes = text.as_bytes();
    let cut = |f: &Value| {
        let (a, b) = (f["index"]["byteStart"].as_u64().unwrap() as usize, f["index"]["byteEnd"].as_u64().unwrap() as usize);
        std::str::from_utf8(&bytes[a..b]).unwrap().to_string()
    };
    let facets = record["facets"].as_array().unwrap();
    let got: Vec<(String, Value)> = facets.iter().map(|f| (cut(f), f["features"][0].clone())).collect();
    assert_eq!(
        got,
        vec![
            ("#春".to_string(), json!({"$type": "app.bsky.richtext.facet#tag", "tag": "春"})),
            (
                "@bob.example.com".to_string(),
                json!({"$type": "app.bsky.richtext.facet#mention", "did": "did:plc:bobbobbobbobbobbobbobbob"})
            ),
            (
                "https://blog.example/launch?x=1".to_string(),
                json!({"$type": "app.bsky.richtext.facet#link", "uri": "https://blog.example/launch?x=1"})
            ),
            ("example.com/page".to_string(), json!({"$type": "app.bsky.richtext.facet#link", "uri": "https://example.com/page"})),
        ],
        "an unresolvable handle stays plain text"
    );
    // Hand-counted offset of `#春`: 18 (family emoji) + 1 + 6 (`ne\u{301}e `) + 9 + 1.
    assert_eq!(facets[0]["index"], json!({"byteStart": 35, "byteEnd": 39}));
    // Both handles were looked up, without the session's token.
    let lookups = pds.calls("com.atproto.identity.resolveHandle");
    assert_eq!(lookups.iter().map(|s| s.query["handle"].clone()).collect::<Vec<_>>(), ["bob.example.com", "nobody.example.org"]);
    assert!(lookups.iter().all(|s| s.header("authorization").is_none()));
    assert_eq!(assert_requests_valid(&pds), 2, "the session and the post, valid against the lexicons");
}

#[tokio::test]
async fn images_are_fetched_uploaded_and_embedded_with_alt_text() {
    let pds = FakePds::start().await;
    let c = connector_at(&pds.url());
    pds.serve_file("/img/cat.png", "image/png", b"\x89PNG\r\n\x1a\nCATDATA");
    pds.serve_file("/img/dog", "application/octet-stream", b"DOGDATA");
    pds.serve_file("/img/dog.jpg", "application/octet-stream", b"\xff\xd8\xffDOGDATA");
    let input = json!({"text": "", "images": [
        {"url": format!("{}/img/cat.png", pds.url()), "alt": "A cat on a mat"},
        {"url": format!("{}/img/dog.jpg", pds.url())}
    ]});
    call(&c, "post", alice(), input).await.unwrap();
    let uploads = pds.calls("com.atproto.repo.uploadBlob");
    assert_eq!(uploads.len(), 2);
    assert_eq!(uploads[0].header("content-type"), Some("image/png"));
    assert_eq!(&uploads[0].body[..], b"\x89PNG\r\n\x1a\nCATDATA");
    assert_eq!(uploads[1].header("content-type"), Some("image/jpeg"), "from the name when the server says octet-stream");
    assert!(uploads[0].header("authorization").unwrap().starts_with("Bearer acc-"));
    let embed = &record_of(&pds, 0)["embed"];
    assert_eq!(embed["$type"], "app.bsky.embed.images");
    let imgs = embed["images"].as_array().unwrap();
    assert_eq!(imgs[0]["alt"], "A cat on a mat");
    assert_eq!(imgs[1]["alt"], "");
    assert_eq!(imgs[0]["image"]["$type"], "blob");
    assert_eq!(imgs[0]["image"]["mimeType"], "image/png");
    assert_eq!(imgs[0]["image"]["size"], 15);
    assert_eq!(imgs[0]["image"]["ref"]["$link"], crate::testing::cid(0x55, b"\x89PNG\r\n\x1a\nCATDATA"));
    assert_eq!(assert_requests_valid(&pds), 2);

    // What cannot be posted is refused before anything is created, naming the image.
    let e = call(&c, "post", alice(), json!({"text": "x", "images": [{"url": format!("{}/img/dog", pds.url())}]})).await.unwrap_err();
    assert!(matches!(&e, ConnectorError::BadInput { path, .. } if path == "images[0].url"), "{e}");
    let e = call(&c, "post", alice(), json!({"text": "x", "images": [{"url": format!("{}/img/none.png", pds.url())}]})).await.unwrap_err();
    assert!(matches!(&e, ConnectorError::BadInput { path, message } if path == "images[0].url" && message.contains("404")), "{e}");
    pds.serve_file("/img/big.png", "image/png", &vec![0u8; 2_000_001]);
    let e = call(&c, "post", alice(), json!({"text": "x", "images": [{"url": format!("{}/img/big.png", pds.url())}]})).await.unwrap_err();
    assert!(matches!(&e, ConnectorError::BadInput { path, message } if path == "images[0].url" && message.contains("2000000")), "{e}");
    let five: Vec<Value> = (0..5).map(|_| json!({"url": format!("{}/img/cat.png", pds.url())})).collect();
    let e = call(&c, "post", alice(), json!({"text": "x", "images": five})).await.unwrap_err();
    assert!(matches!(&e, ConnectorError::BadInput { path, .. } if path == "images"), "{e}");
    assert_eq!(pds.calls(CREATE).len(), 1, "no refused post reached createRecord");
}

#[tokio::test]
async fn one_sign_in_then_refresh_on_expired_token_then_sign_in_again() {
    let pds = FakePds::start().await;
    let c = connector_at(&pds.url());
    call(&c, "post", alice(), json!({"text": "one"})).await.unwrap();
    call(&c, "post", alice(), json!({"text": "two"})).await.unwrap();
    assert_eq!(pds.calls(SESSION).len(), 1, "the session is kept between calls");
    let first_token = pds.calls(CREATE)[0].header("authorization").unwrap().to_string();
    assert_eq!(pds.calls(CREATE)[1].header("authorization").unwrap(), first_token);
    assert_eq!(pds.calls(SESSION)[0].json(), json!({"identifier": "alice.test", "password": "app-pass-1234"}));

    // The access token expires: the PDS answers 400 ExpiredToken; refreshed, sent again.
    pds.expire_access_tokens();
    call(&c, "post", alice(), json!({"text": "three"})).await.unwrap();
    let refresh = pds.calls(REFRESH);
    assert_eq!(refresh.len(), 1);
    assert!(refresh[0].header("authorization").unwrap().starts_with("Bearer ref-"), "refreshed with the refresh token");
    let creates = pds.calls(CREATE);
    assert_eq!(creates.len(), 4, "the refused call and its resend");
    assert_eq!(creates[2].header("authorization").unwrap(), first_token);
    assert_ne!(creates[3].header("authorization").unwrap(), first_token);
    assert_eq!(pds.posts(&pds.alice().did).len(), 3, "three posts, none twice");

    // Both tokens refused: signed in again with the app password.
    pds.expire_access_tokens();
    pds.revoke_refresh_tokens();
    let out = call(&c, "recent_posts", alice(), json!({})).await.unwrap();
    assert_eq!(out["posts"].as_array().unwrap().len(), 3);
    assert_eq!(pds.calls(REFRESH).len(), 2);
    assert_eq!(pds.calls(SESSION).len(), 2);

    // Another password is another account's session (a changed password signs in again).
    let e = call(&c, "post", creds("alice.test", "wrong-password"), json!({"text": "x"})).await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::Auth);
    assert!(e.message().contains("Bluesky refused to sign in as `alice.test`") && e.message().contains("App passwords"), "{e}");
    assert!(!e.message().contains("wrong-password"), "the password is never in a message");
    // The email works as the identifier too.
    call(&c, "post", creds("alice@mail.test", "app-pass-1234"), json!({"text": "four"})).await.unwrap();
    assert_eq!(assert_requests_valid(&pds), 9);
}

#[tokio::test]
async fn errors_are_classified() {
    let pds = FakePds::start().await;
    let c = connector_at(&pds.url());
    // 429 with the PDS's RateLimit-Reset (epoch seconds): wait until then.
    let reset = chrono::Utc::now().timestamp() + 120;
    pds.fail_next(
        CREATE,
        429,
        json!({"error": "RateLimitExceeded", "message": "Rate Limit Exceeded"}),
        &[
            ("ratelimit-limit", "5000"),
            ("ratelimit-remaining", "0"),
            ("ratelimit-reset", &reset.to_string()),
            ("ratelimit-policy", "5000;w=3600"),
        ],
    );
    let e = call(&c, "post", alice(), json!({"text": "x"})).await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::RateLimited, "{e}");
    let wait = e.retry_after().unwrap().as_secs();
    assert!((117..=120).contains(&wait), "waits until the reset: {wait} s");
    assert!(e.message().contains("RateLimitExceeded"), "{e}");
    // 429 with Retry-After: exactly that.
    pds.fail_next(CREATE, 429, json!({"error": "RateLimitExceeded"}), &[("retry-after", "30")]);
    let e = call(&c, "post", alice(), json!({"text": "x"})).await.unwrap_err();
    assert_eq!(e.retry_after(), Some(Duration::from_secs(30)));
    // A refused record: bad input on the field the PDS names.
    pds.fail_next(
        CREATE,
        400,
        json!({"error": "InvalidRequest", "message": "Invalid app.bsky.feed.post record: Record/embed/images/0/alt must be a string"}),
        &[],
    );
    let e = call(&c, "post", alice(), json!({"text": "x"})).await.unwrap_err();
    assert!(matches!(&e, ConnectorError::BadInput { path, .. } if path == "images[0].alt"), "{e}");
    pds.fail_next(CREATE, 400, json!({"error": "InvalidRequest", "message": "Invalid app.bsky.feed.post record: Record/text must not be longer than 300 graphemes"}), &[]);
    let e = call(&c, "post", alice(), json!({"text": "x"})).await.unwrap_err();
    assert!(matches!(&e, ConnectorError::BadInput { path, message } if path == "text" && message.contains("300 graphemes")), "{e}");
    // 5xx: transient. 401 on a call: auth.
    pds.fail_next(CREATE, 502, json!({"error": "UpstreamFailure", "message": "upstream"}), &[]);
    assert_eq!(call(&c, "post", alice(), json!({"text": "x"})).await.unwrap_err().class(), ErrorClass::Transient);
    pds.fail_next(CREATE, 401, json!({"error": "AuthenticationRequired", "message": "Authentication Required"}), &[]);
    assert_eq!(call(&c, "post", alice(), json!({"text": "x"})).await.unwrap_err().class(), ErrorClass::Auth);
    // A 429 at sign-in keeps its wait too.
    let c2 = connector_at(&pds.url());
    pds.fail_next(SESSION, 429, json!({"error": "RateLimitExceeded"}), &[("retry-after", "300")]);
    let e = call(&c2, "post", alice(), json!({"text": "x"})).await.unwrap_err();
    assert_eq!((e.class(), e.retry_after()), (ErrorClass::RateLimited, Some(Duration::from_secs(300))));
    // Input the PDS would refuse is refused before any call.
    for (input, field) in [
        (json!({"text": ""}), "text"),
        (json!({"text": "é".repeat(301)}), "text"),
        (json!({"text": "x", "langs": ["english language"]}), "langs[0]"),
        (json!({"text": "x", "langs": ["en", "es", "pt", "fr"]}), "langs"),
        (json!({"text": "x", "service": "bsky.social"}), "service"),
    ] {
        let e = call(&c, "post", alice(), input.clone()).await.unwrap_err();
        assert!(matches!(&e, ConnectorError::BadInput { path, .. } if path == field), "{input}: {e}");
    }
    let e = call(&c, "post", Credentials::Bearer { token: Secret::new("t") }, json!({"text": "x"})).await.unwrap_err();
    assert!(e.class() == ErrorClass::Auth && e.message().contains("`basic`"), "{e}");
    // Not one of these made a post.
    assert!(pds.posts(&pds.alice().did).is_empty());
}

#[tokio::test]
async fn a_timeout_after_create_record_left_is_maybe_delivered() {
    let pds = FakePds::start().await;
    let c = connector_at(&pds.url());
    call(&c, "recent_posts", alice(), json!({})).await.unwrap();
    pds.delay_next(CREATE, Duration::from_millis(1500));
    let mut cx = ctx(alice());
    cx.timeout = Duration::from_millis(300);
    let e = c.action("post").unwrap().call(&cx, json!({"text": "late"})).await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::MaybeDelivered, "{e}");
    // It was made: the recent posts show it, which is how the scheduler finds it.
    let out = call(&c, "recent_posts", alice(), json!({"actor": "alice.test", "limit": 40})).await.unwrap();
    assert_eq!(out["posts"][0]["text"], "late");
}

#[tokio::test]
async fn recent_posts_newest_first_with_their_addresses() {
    let pds = FakePds::start().await;
    let c = connector_at(&pds.url());
    let did = pds.alice().did;
    pds.add_post(&did, "older", "2026-11-25T09:00:00.000Z");
    let rkey = pds.add_post(&did, "Launch day!\n\nhttps://blog.example/launch", "2026-11-26T09:00:00.000Z");
    let out = call(&c, "recent_posts", alice(), json!({"actor": "alice.test", "limit": 10})).await.unwrap();
    assert_eq!(
        out["posts"][0],
        json!({"id": format!("at://{did}/app.bsky.feed.post/{rkey}"), "url": format!("https://bsky.app/profile/alice.test/post/{rkey}"),
               "text": "Launch day!\n\nhttps://blog.example/launch", "created_at": "2026-11-26T09:00:00.000Z"})
    );
    assert_eq!(out["posts"][1]["text"], "older");
    let list = pds.calls("com.atproto.repo.listRecords");
    assert_eq!(list[0].query["repo"], "alice.test");
    assert_eq!(list[0].query["collection"], "app.bsky.feed.post");
    assert_eq!(list[0].query["limit"], "10");
    assert!(list[0].header("authorization").is_some());
    // Without an actor: the connection's own account, by DID.
    call(&c, "recent_posts", alice(), json!({})).await.unwrap();
    assert_eq!(pds.calls("com.atproto.repo.listRecords")[1].query["repo"], did);
    // An unknown repo is bad input on `actor`.
    let e = call(&c, "recent_posts", alice(), json!({"actor": "ghost.test"})).await.unwrap_err();
    assert!(matches!(&e, ConnectorError::BadInput { path, .. } if path == "actor"), "{e}");
}

#[tokio::test]
async fn the_connection_test_signs_in() {
    let pds = FakePds::start().await;
    let c = connector_at(&pds.url());
    let cx =
        |creds| ConnectionContext { connection_id: "bs".into(), credentials: creds, http: transport(), timeout: Duration::from_secs(5) };
    let ok = c.test_connection(&cx(alice())).await;
    assert_eq!(ok, TestOutcome::Ok(format!("Signed in to {} as @alice.test (did:plc:ewvi7nxzyoun6zhxrhs64oiz)", pds.url())));
    let TestOutcome::Failed(e) = c.test_connection(&cx(creds("alice.test", "nope"))).await else { panic!("refused") };
    assert_eq!(e.class(), ErrorClass::Auth);
}

/// The lexicon check itself: good requests pass; deliberately wrong ones are refused with
/// the validator's reason, so a wrong body from the connector could not pass.
#[test]
fn the_lexicon_check_refuses_wrong_bodies() {
    let did = "did:plc:ewvi7nxzyoun6zhxrhs64oiz";
    let good = crate::actions::create_record_body(
        did,
        "hi #x",
        &[crate::facets::facet_json(3, 5, json!({"$type": "app.bsky.richtext.facet#tag", "tag": "x"}))],
        &[(
            json!({"$type": "blob", "ref": {"$link": crate::testing::cid(0x55, b"img")}, "mimeType": "image/png", "size": 3}),
            "alt".into(),
        )],
        &["en".into()],
        "2026-11-26T09:00:00.000Z",
    );
    let mut no_text = good.clone();
    no_text["record"].as_object_mut().unwrap().remove("text");
    let mut string_offsets = good.clone();
    string_offsets["record"]["facets"][0]["index"]["byteStart"] = json!("3");
    let mut bad_did = good.clone();
    bad_did["record"]["facets"] =
        json!([{"index": {"byteStart": 0, "byteEnd": 2}, "features": [{"$type": "app.bsky.richtext.facet#mention", "did": "alice"}]}]);
    let mut five_images = good.clone();
    let img = good["record"]["embed"]["images"][0].clone();
    five_images["record"]["embed"]["images"] = json!([img, img, img, img, img]);
    let mut no_alt = good.clone();
    no_alt["record"]["embed"]["images"][0].as_object_mut().unwrap().remove("alt");
    let mut long = good.clone();
    long["record"]["text"] = json!("a".repeat(301));
    let verdicts = check_lexicon(&[
        Check::Input("com.atproto.repo.createRecord", good.clone()),
        Check::Input("com.atproto.repo.createRecord", no_text),
        Check::Input("com.atproto.repo.createRecord", string_offsets),
        Check::Input("com.atproto.repo.createRecord", bad_did),
        Check::Input("com.atproto.repo.createRecord", five_images),
        Check::Input("com.atproto.repo.createRecord", no_alt),
        Check::Input("com.atproto.repo.createRecord", long),
        Check::Input("com.atproto.repo.createRecord", json!({"collection": "app.bsky.feed.post", "record": good["record"]})),
        Check::Record("app.bsky.feed.post", good["record"].clone()),
    ]);
    assert_eq!(verdicts[0], Ok(()));
    let refused = |i: usize, want: &str| {
        let e = verdicts[i].clone().expect_err("refused");
        assert!(e.contains(want), "item {i}: {e}");
    };
    refused(1, "must have the property \"text\"");
    refused(2, "byteStart must be an integer");
    refused(3, "did");
    refused(4, "must not have more than 4 elements");
    refused(5, "must have the property \"alt\"");
    refused(6, "300 graphemes");
    refused(7, "must have the property \"repo\"");
    assert_eq!(verdicts[8], Ok(()));
}

/// The fake PDS answers as the lexicons say a PDS answers.
#[tokio::test]
async fn the_fake_pds_answers_like_the_lexicons() {
    let pds = FakePds::start().await;
    let c = connector_at(&pds.url());
    let http = transport();
    let post = |nsid: &str, body: Value| {
        let mut r = enlace_core::http::HttpRequest::new(enlace_core::http::Method::POST, format!("{}/xrpc/{nsid}", pds.url()));
        r.headers.insert("content-type", "application/json".parse().unwrap());
        r.body = body.to_string().into();
        r
    };
    let session: Value = serde_json::from_slice(
        &http.send(post(SESSION, json!({"identifier": "alice.test", "password": "app-pass-1234"}))).await.unwrap().body,
    )
    .unwrap();
    let mut refresh = post(REFRESH, Value::Null);
    refresh.body = Default::default();
    refresh.headers.insert("authorization", format!("Bearer {}", session["refreshJwt"].as_str().unwrap()).parse().unwrap());
    let refreshed: Value = serde_json::from_slice(&http.send(refresh).await.unwrap().body).unwrap();
    pds.serve_file("/img/a.png", "image/png", b"PNG");
    call(&c, "post", alice(), json!({"text": "hi", "images": [{"url": format!("{}/img/a.png", pds.url()), "alt": "a"}]})).await.unwrap();
    let created = pds.posts(&pds.alice().did);
    let verdicts = check_lexicon(&[
        Check::Output(SESSION, session),
        Check::Output(REFRESH, refreshed),
        Check::Output(CREATE, json!({"uri": format!("at://{}/app.bsky.feed.post/{}", pds.alice().did, created[0].0), "cid": created[0].1})),
        Check::Output("com.atproto.repo.uploadBlob", json!({"blob": record_of(&pds, 0)["embed"]["images"][0]["image"]})),
        Check::Record("app.bsky.feed.post", created[0].2.clone()),
    ]);
    assert!(verdicts.iter().all(Result::is_ok), "{verdicts:?}");
}

/// Images are fetched through the step's guarded transport: an image at a private address
/// is refused (here the PDS is reached through a transport that allows loopback, and every
/// other address through Enlace's default, guarded one).
#[tokio::test]
async fn an_image_at_a_private_address_is_refused_by_the_ssrf_guard() {
    use enlace_core::BoxFuture;
    use enlace_core::http::{HttpRequest, HttpResponse, HttpTransport, TransportError};
    struct Split {
        pds: String,
        loopback: std::sync::Arc<dyn HttpTransport>,
        guarded: enlace_kit::ReqwestTransport,
    }
    impl HttpTransport for Split {
        fn send(&self, request: HttpRequest) -> BoxFuture<'_, Result<HttpResponse, TransportError>> {
            if request.url.starts_with(&self.pds) { self.loopback.send(request) } else { self.guarded.send(request) }
        }
        fn allows_private_networks(&self) -> bool {
            false
        }
    }
    let pds = FakePds::start().await;
    let c = connector_at(&pds.url());
    let mut cx = ctx(alice());
    cx.http = std::sync::Arc::new(Split {
        pds: pds.url(),
        loopback: transport(),
        guarded: enlace_kit::ReqwestTransport::new(enlace_kit::TransportConfig::default()).unwrap(),
    });
    for url in ["http://169.254.169.254/latest/meta-data/cat.png", "http://10.0.0.1/cat.png", "http://localhost:1/cat.png"] {
        let e = c.action("post").unwrap().call(&cx, json!({"text": "x", "images": [{"url": url, "alt": "a"}]})).await.unwrap_err();
        assert!(matches!(&e, ConnectorError::BadInput { path, .. } if path == "images[0].url"), "{url}: {e}");
    }
    assert!(pds.calls(CREATE).is_empty() && pds.calls("com.atproto.repo.uploadBlob").is_empty());
    // A PDS at a private address is refused the same way, naming `service`.
    let e = c.action("post").unwrap().call(&cx, json!({"text": "x", "service": "http://10.0.0.1"})).await.unwrap_err();
    assert!(matches!(&e, ConnectorError::BadInput { path, .. } if path == "service"), "{e}");
}
