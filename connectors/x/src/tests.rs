//! The actions and the trigger against a local server that answers like X (answers recorded
//! in X's shapes, `fixtures/recorded/`), through the erased actions the runner calls. The
//! requests themselves are checked against X's API description with Prism in
//! tests/e2e/contracts.rs.

use std::time::{Duration, Instant};

use base64::Engine;
use enlace_core::{ConnectorError, Credentials, ErrorClass, Secret};
use enlace_kit::testing::{FakeVendor, Reply, ctx};
use serde_json::{Value, json};

use crate::actions::{CHUNK_BYTES, written_text};
use crate::connector_at;

fn creds() -> Credentials {
    Credentials::OAuth2 { access_token: Secret::new("x-token") }
}

/// A recorded answer of X (fixtures/recorded/NAME.json).
fn recorded(name: &str) -> Value {
    enlace_kit::testing::fixture(env!("CARGO_MANIFEST_DIR"), &format!("recorded/{name}.json"))
}

async fn call(v: &FakeVendor, action: &str, input: Value) -> Result<Value, ConnectorError> {
    connector_at(&v.url()).action(action).expect("registered").call(&ctx(creds()), input).await
}

fn b64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(s).expect("base64")
}

#[tokio::test]
async fn a_text_post_and_a_reply() {
    let v = FakeVendor::start().await;
    v.on("POST", "/2/tweets", [Reply::json(201, recorded("create_post"))]);
    let out = call(&v, "post_tweet", json!({"text": "Hello"})).await.unwrap();
    assert_eq!(out, json!({"id": "1445880548472328192", "text": "Hello"}));
    call(&v, "post_tweet", json!({"text": "Yes", "reply_to": "1346889436626259968"})).await.unwrap();
    let seen = v.requests();
    assert_eq!(seen[0].header("authorization"), Some("Bearer x-token"));
    assert_eq!(seen[0].header("content-type"), Some("application/json"));
    assert_eq!(seen[0].json(), json!({"text": "Hello"}));
    assert_eq!(seen[1].json(), json!({"text": "Yes", "reply": {"in_reply_to_tweet_id": "1346889436626259968"}}));
}

#[tokio::test]
async fn pictures_are_uploaded_given_alt_text_then_attached() {
    let v = FakeVendor::start().await;
    v.on("GET", "/files/cat.png", [Reply::text(200, "image/png", "PNGDATA-cat")]);
    v.on("GET", "/files/dog.jpg", [Reply::text(200, "image/jpeg", "JPEGDATA-dog")]);
    v.on(
        "POST",
        "/2/media/upload",
        [
            Reply::json(200, recorded("upload_image")),
            Reply::json(200, json!({"data": {"id": "1880028106020515841", "media_key": "3_1880028106020515841", "size": 12}})),
        ],
    );
    v.on("POST", "/2/media/metadata", [Reply::json(200, recorded("metadata"))]);
    v.on("POST", "/2/tweets", [Reply::json(201, recorded("create_post"))]);
    let files = |p: &str| format!("{}/files/{p}", v.url());
    let out = call(
        &v,
        "post_tweet",
        json!({"text": "Two pets", "media": [{"url": files("cat.png"), "mime_type": "image/png", "alt": "A grey cat"}, {"url": files("dog.jpg"), "mime_type": "image/jpeg"}]}),
    )
    .await
    .unwrap();
    assert_eq!(out["id"], "1445880548472328192");
    let seen = v.requests();
    let paths: Vec<(&str, &str)> = seen.iter().map(|s| (s.method.as_str(), s.path.as_str())).collect();
    assert_eq!(
        paths,
        [
            ("GET", "/files/cat.png"),
            ("POST", "/2/media/upload"),
            ("POST", "/2/media/metadata"),
            ("GET", "/files/dog.jpg"),
            ("POST", "/2/media/upload"),
            ("POST", "/2/tweets")
        ]
    );
    // The files, base64 in JSON bodies, with X's category for pictures.
    let up = seen[1].json();
    assert_eq!(up["media_category"], "tweet_image");
    assert_eq!(b64(up["media"].as_str().unwrap()), b"PNGDATA-cat");
    assert_eq!(seen[1].header("authorization"), Some("Bearer x-token"));
    assert_eq!(b64(seen[4].json()["media"].as_str().unwrap()), b"JPEGDATA-dog");
    assert!(seen[0].header("authorization").is_none(), "the token never goes to the file's host");
    // Alt text for the first only (the second has none).
    assert_eq!(seen[2].json(), json!({"id": "1880028106020515840", "metadata": {"alt_text": {"text": "A grey cat"}}}));
    assert_eq!(
        seen[5].json(),
        json!({"text": "Two pets", "media": {"media_ids": ["1880028106020515840", "1880028106020515841"]}}),
        "the media ids in order"
    );
}

#[tokio::test]
async fn a_video_goes_in_chunks_and_waits_for_processing() {
    let v = FakeVendor::start().await;
    // Two and a half chunks, served raw by another host.
    let video: Vec<u8> = (0..CHUNK_BYTES * 5 / 2).map(|i| (i % 251) as u8).collect();
    let file_server = FakeVendor::start().await;
    file_server.on(
        "GET",
        "/clip.mp4",
        [Reply { status: 200, headers: vec![("content-type".into(), "video/mp4".into())], body: video.clone().into() }],
    );
    v.on("POST", "/2/media/upload/initialize", [Reply::json(200, recorded("initialize"))]);
    v.on("POST", "/2/media/upload/1880028106020515842/append", [Reply::json(200, recorded("append"))]);
    v.on("POST", "/2/media/upload/1880028106020515842/finalize", [Reply::json(200, recorded("finalize_pending"))]);
    v.on("GET", "/2/media/upload", [Reply::json(200, recorded("status_succeeded"))]);
    v.on("POST", "/2/media/metadata", [Reply::json(200, recorded("metadata"))]);
    v.on("POST", "/2/tweets", [Reply::json(201, recorded("create_post"))]);
    let started = Instant::now();
    let out = call(
        &v,
        "post_tweet",
        json!({"text": "Watch", "media": [{"url": format!("{}/clip.mp4", file_server.url()), "mime_type": "video/mp4", "alt": "A short clip"}]}),
    )
    .await
    .unwrap();
    assert_eq!(out["id"], "1445880548472328192");
    assert!(started.elapsed() >= Duration::from_secs(1), "finalize said check after 1 s");
    let seen = v.requests();
    let paths: Vec<&str> = seen.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/2/media/upload/initialize",
            "/2/media/upload/1880028106020515842/append",
            "/2/media/upload/1880028106020515842/append",
            "/2/media/upload/1880028106020515842/append",
            "/2/media/upload/1880028106020515842/finalize",
            "/2/media/upload",
            "/2/media/metadata",
            "/2/tweets"
        ]
    );
    assert_eq!(seen[0].json(), json!({"media_type": "video/mp4", "total_bytes": video.len(), "media_category": "tweet_video"}));
    let mut joined = vec![];
    for (i, s) in seen[1..4].iter().enumerate() {
        let body = s.json();
        assert_eq!(body["segment_index"], i);
        joined.extend(b64(body["media"].as_str().unwrap()));
    }
    assert_eq!(joined, video, "the chunks in order make the file");
    assert!(seen[4].body.is_empty() && seen[4].header("content-type").is_none(), "finalize has no body");
    assert_eq!(seen[5].query.get("media_id").map(String::as_str), Some("1880028106020515842"));
    assert_eq!(seen[5].query.get("command").map(String::as_str), Some("STATUS"));
    assert_eq!(seen[7].json(), json!({"text": "Watch", "media": {"media_ids": ["1880028106020515842"]}}));
}

#[tokio::test]
async fn a_failed_processing_says_why_and_posts_nothing() {
    let v = FakeVendor::start().await;
    v.on("GET", "/f.gif", [Reply::text(200, "image/gif", "GIF89a....")]);
    v.on("POST", "/2/media/upload/initialize", [Reply::json(200, recorded("initialize"))]);
    v.on("POST", "/2/media/upload/1880028106020515842/append", [Reply::json(200, recorded("append"))]);
    v.on(
        "POST",
        "/2/media/upload/1880028106020515842/finalize",
        [Reply::json(200, json!({"data": {"id": "1880028106020515842", "processing_info": {"state": "failed", "error": {"code": 1, "name": "InvalidMedia", "message": "Unsupported video format"}}}}))],
    );
    let e = call(&v, "post_tweet", json!({"text": "", "media": [{"url": format!("{}/f.gif", v.url()), "mime_type": "image/gif"}]}))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ConnectorError::BadInput { path, message } if path == "media[0]" && message.contains("Unsupported video format")),
        "{e}"
    );
    assert!(v.requests().iter().all(|s| s.path != "/2/tweets"));
    assert_eq!(v.requests()[1].json()["media_category"], "tweet_gif");
}

#[tokio::test]
async fn input_is_checked_before_any_request() {
    let v = FakeVendor::start().await;
    let img =
        |n: usize| (0..n).map(|i| json!({"url": format!("https://cdn.example/{i}.png"), "mime_type": "image/png"})).collect::<Vec<_>>();
    let path_of = |e: ConnectorError| match e {
        ConnectorError::BadInput { path, message } => (path, message),
        e => panic!("{e}"),
    };
    let (p, m) = path_of(call(&v, "post_tweet", json!({"text": "a", "media": img(5)})).await.unwrap_err());
    assert_eq!((p.as_str(), m.as_str()), ("media", "5 of 4 attachments: remove 1"));
    let video = json!({"url": "https://cdn.example/v.mp4", "mime_type": "video/mp4"});
    let (p, m) = path_of(call(&v, "post_tweet", json!({"text": "a", "media": [video, img(1)[0]]})).await.unwrap_err());
    assert_eq!(p, "media");
    assert!(m.contains("one video or GIF alone"), "{m}");
    let (p, _) = path_of(
        call(&v, "post_tweet", json!({"text": "a", "media": [{"url": "https://cdn.example/a.bmp", "mime_type": "image/bmp"}]}))
            .await
            .unwrap_err(),
    );
    assert_eq!(p, "media[0].mime_type");
    // X's weighted length: 141 CJK characters weigh 282.
    let (p, m) = path_of(call(&v, "post_tweet", json!({"text": "日".repeat(141)})).await.unwrap_err());
    assert_eq!((p.as_str(), m.as_str()), ("text", "282 of 280 weighted characters: cut 2"));
    // A long URL counts 23: this text fits.
    let long_url = format!("Read https://blog.example/{}", "a".repeat(300));
    let (p, _) = path_of(call(&v, "post_tweet", json!({"text": long_url, "reply_to": "12ab"})).await.unwrap_err());
    assert_eq!(p, "reply_to", "the text passed; the reply id did not");
    let (p, m) = path_of(call(&v, "post_tweet", json!({"text": " "})).await.unwrap_err());
    assert_eq!((p.as_str(), m.as_str()), ("text", "the post is empty: write a text or attach media"));
    let mut alt = img(1);
    alt[0]["alt"] = json!("a".repeat(1001));
    let (p, m) = path_of(call(&v, "post_tweet", json!({"text": "a", "media": alt})).await.unwrap_err());
    assert_eq!((p.as_str(), m.as_str()), ("media[0].alt", "is 1001 characters long; X takes at most 1000: cut 1"));
    let e = call(&v, "post_tweet", json!({"text": "a", "colour": "red"})).await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::BadInput);
    assert!(v.requests().is_empty(), "nothing was sent: {:?}", v.requests());
}

#[tokio::test]
async fn a_media_file_that_cannot_be_fetched_names_it() {
    let v = FakeVendor::start().await;
    v.on("GET", "/gone.png", [Reply::json(404, json!({"error": "not found"}))]);
    v.on("GET", "/busy.png", [Reply::json(503, json!({"error": "busy"}))]);
    let e = call(&v, "post_tweet", json!({"text": "a", "media": [{"url": format!("{}/gone.png", v.url()), "mime_type": "image/png"}]}))
        .await
        .unwrap_err();
    assert!(matches!(&e, ConnectorError::BadInput { path, message } if path == "media[0].url" && message.contains("404")), "{e}");
    let e = call(&v, "post_tweet", json!({"text": "a", "media": [{"url": format!("{}/busy.png", v.url()), "mime_type": "image/png"}]}))
        .await
        .unwrap_err();
    assert_eq!(e.class(), ErrorClass::Transient, "{e}");
    // The SSRF guard of the installation's transport: a private address is refused.
    let guarded = enlace_kit::ReqwestTransport::new(enlace_kit::TransportConfig::default()).unwrap();
    let mut c = enlace_kit::testing::ctx_with(std::sync::Arc::new(guarded), creds());
    c.timeout = Duration::from_secs(5);
    let e = crate::connector()
        .action("post_tweet")
        .unwrap()
        .call(&c, json!({"text": "a", "media": [{"url": "http://169.254.169.254/latest/meta-data", "mime_type": "image/png"}]}))
        .await
        .unwrap_err();
    assert!(matches!(&e, ConnectorError::BadInput { path, .. } if path == "media[0].url"), "{e}");
}

#[tokio::test]
async fn errors_are_classified_as_x_means_them() {
    let v = FakeVendor::start().await;
    let reset = (chrono_now_secs() + 90).to_string();
    v.on(
        "POST",
        "/2/tweets",
        [
            Reply::json(403, recorded("error_duplicate")),
            Reply::json(429, json!({"title": "Too Many Requests", "detail": "Too Many Requests", "type": "about:blank", "status": 429}))
                .header("x-rate-limit-limit", "100")
                .header("x-rate-limit-remaining", "0")
                .header("x-rate-limit-reset", &reset),
            Reply::json(429, json!({"title": "Too Many Requests"})).header("retry-after", "30").header("x-rate-limit-reset", &reset),
            Reply::json(401, json!({"title": "Unauthorized", "type": "about:blank", "status": 401, "detail": "Unauthorized"})),
            Reply::json(400, json!({"errors": [{"parameters": {"text": [""]}, "message": "Your Tweet text is too long."}], "title": "Invalid Request", "detail": "One or more parameters to your request was invalid.", "type": "https://api.x.com/2/problems/invalid-request"})),
            Reply::json(503, json!({"title": "Service Unavailable"})),
        ],
    );
    let post = || call(&v, "post_tweet", json!({"text": "Hello"}));
    let e = post().await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::Permanent, "a duplicate is a refusal of this post, not of the credentials: {e}");
    assert_eq!(e.message(), "X refused it (HTTP 403): You are not allowed to create a Tweet with duplicate content.");
    let e = post().await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::RateLimited);
    let wait = e.retry_after().unwrap();
    assert!((Duration::from_secs(88)..=Duration::from_secs(90)).contains(&wait), "until x-rate-limit-reset: {wait:?}");
    let e = post().await.unwrap_err();
    assert_eq!(e.retry_after(), Some(Duration::from_secs(30)), "Retry-After first");
    assert_eq!(post().await.unwrap_err().class(), ErrorClass::Auth);
    let e = post().await.unwrap_err();
    assert!(matches!(&e, ConnectorError::BadInput { path, message } if path == "text" && message.contains("too long")), "{e}");
    assert_eq!(post().await.unwrap_err().class(), ErrorClass::Transient);
}

/// A server on 127.0.0.1 that reads requests and never answers.
async fn silent_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = sock.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn a_timeout_after_the_post_left_is_maybe_delivered() {
    let silent = silent_server().await;
    let mut c = ctx(creds());
    c.timeout = Duration::from_millis(300);
    let e = connector_at(&silent).action("post_tweet").unwrap().call(&c, json!({"text": "Hello"})).await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::MaybeDelivered, "{e}");
    // An upload that timed out is only a passing fault: nothing was posted.
    let files = FakeVendor::start().await;
    files.on("GET", "/a.png", [Reply::text(200, "image/png", "PNG")]);
    let e = connector_at(&silent)
        .action("post_tweet")
        .unwrap()
        .call(&c, json!({"text": "a", "media": [{"url": format!("{}/a.png", files.url()), "mime_type": "image/png"}]}))
        .await
        .unwrap_err();
    assert_eq!(e.class(), ErrorClass::Transient, "{e}");
}

#[tokio::test]
async fn recent_posts_with_links_written_back() {
    let v = FakeVendor::start().await;
    v.on("GET", "/2/users/me", [Reply::json(200, recorded("users_me"))]);
    v.on("GET", "/2/users/2244994945/tweets", [Reply::json(200, recorded("users_tweets"))]);
    let out = call(&v, "recent_posts", json!({"limit": 40})).await.unwrap();
    let posts = out["posts"].as_array().unwrap();
    assert_eq!(posts.len(), 2);
    assert_eq!(
        posts[0],
        json!({"id": "1880028106020515850", "url": "https://x.com/enlace/status/1880028106020515850",
               "text": "Launch day! Fish & chips <3\n\nhttps://blog.example/launch", "created_at": "2026-11-26T09:00:01.000Z"})
    );
    assert_eq!(posts[1]["text"], "Our pets", "the picture's link is left out");
    let q = &v.requests()[1].query;
    assert_eq!(q.get("max_results").map(String::as_str), Some("40"));
    assert_eq!(q.get("exclude").map(String::as_str), Some("retweets"));
    assert_eq!(q.get("post.fields").map(String::as_str), Some("created_at,entities"));
    // X's limits: 5 to 100.
    call(&v, "recent_posts", json!({"limit": 1})).await.unwrap();
    assert_eq!(v.requests()[3].query.get("max_results").map(String::as_str), Some("5"));
    assert_eq!(written_text(&json!({"text": "a &amp;lt; b"})), "a &lt; b", "one level of escapes");
}

#[tokio::test]
async fn new_mention_reads_every_page_and_keeps_the_newest_id_as_cursor() {
    let v = FakeVendor::start().await;
    let mention = |id: &str| json!({"id": id, "text": format!("@enlace hello {id}"), "edit_history_tweet_ids": [id]});
    v.on(
        "GET",
        "/2/users/2244994945/mentions",
        [
            Reply::json(200, json!({"data": [mention("30"), mention("29")], "meta": {"next_token": "p2", "result_count": 2}})),
            Reply::json(200, json!({"data": [mention("28")], "meta": {"result_count": 1}})),
            Reply::json(200, json!({"meta": {"result_count": 0}})),
        ],
    );
    let x = connector_at(&v.url());
    let t = x.polling_trigger("new_mention").unwrap();
    let page = t.poll(&ctx(creds()), json!({"user_id": "2244994945"}), None).await.unwrap();
    let keys: Vec<&str> = page.items.iter().map(|i| i.dedupe_key.as_str()).collect();
    assert_eq!(keys, ["30", "29", "28"]);
    assert_eq!(page.items[0].event, mention("30"));
    assert_eq!(page.cursor.as_deref(), Some("30"));
    let seen = v.requests();
    assert_eq!(seen[0].query.get("since_id"), None, "no cursor yet: no since_id");
    assert_eq!(seen[0].query["max_results"], "100");
    assert_eq!(seen[1].query["pagination_token"], "p2");
    let page = t.poll(&ctx(creds()), json!({"user_id": "2244994945"}), Some("30".into())).await.unwrap();
    assert!(page.items.is_empty() && page.cursor.is_none(), "nothing new keeps the cursor");
    assert_eq!(v.requests()[2].query["since_id"], "30");
    // A user id that is not X's cannot reach another path.
    let e = t.poll(&ctx(creds()), json!({"user_id": "1/../../admin"}), None).await.unwrap_err();
    assert!(matches!(&e, ConnectorError::BadInput { path, .. } if path == "user_id"), "{e}");
    assert_eq!(v.requests().len(), 3);
}

fn chrono_now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}
