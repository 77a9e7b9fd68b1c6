//! The `google_drive` connector against a local server on 127.0.0.1:0 that answers like
//! Google Drive (recorded answers), through the erased actions and trigger the runner calls.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{Value, json};

use enlace_core::http::HttpTransport;
use enlace_core::trigger::PollPage;
use enlace_core::{ActionContext, ConnectorError, Credentials, ErrorClass, Idempotency, Secret};
use enlace_kit::{ReqwestTransport, TransportConfig};

use crate::trigger::{CHANGE_FIELDS, MAX_ITEMS_PER_POLL, MAX_PAGES_PER_POLL};
use crate::upload::UPLOAD_FIELDS;
use crate::{connector_at, google};

const TOKEN: &str = "ya29.test-access-token-0123";
const FOLDER: &str = "1FolderAbCdEfGhIjKlMnOpQrStUv";

/// One request the server received.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path: String,
    query: Vec<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
}

impl Seen {
    fn q(&self, key: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
    fn query_keys(&self) -> Vec<&str> {
        let mut keys: Vec<&str> = self.query.iter().map(|(k, _)| k.as_str()).collect();
        keys.sort();
        keys
    }
}

type Answer = Arc<dyn Fn(&Seen) -> Response + Send + Sync>;

#[derive(Clone)]
struct Drive {
    answer: Answer,
    seen: Arc<Mutex<Vec<Seen>>>,
}

async fn record(State(d): State<Drive>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let query = uri.query().map(form_pairs).unwrap_or_default();
    let seen = Seen { method, path: uri.path().to_string(), query, headers, body };
    let resp = (d.answer)(&seen);
    d.seen.lock().unwrap().push(seen);
    resp
}

fn form_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |s: &str| percent_encoding::percent_decode_str(&s.replace('+', " ")).decode_utf8_lossy().into_owned();
            (decode(k), decode(v))
        })
        .collect()
}

async fn serve(answer: impl Fn(&Seen) -> Response + Send + Sync + 'static) -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    let state = Drive { answer: Arc::new(answer), seen: Arc::default() };
    let seen = state.seen.clone();
    let app = Router::new().fallback(record).with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, seen)
}

fn json_answer(status: u16, headers: &[(&str, &str)], body: Value) -> Response {
    let mut r = (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response();
    for (k, v) in headers {
        r.headers_mut().insert(axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
    }
    r
}

/// Google's error body.
fn google_error(code: u16, message: &str, reason: &str) -> Value {
    json!({"error": {"code": code, "message": message, "errors": [{"message": message, "domain": "global", "reason": reason}]}})
}

fn transport(allow_private_networks: bool) -> Arc<dyn HttpTransport> {
    Arc::new(ReqwestTransport::new(TransportConfig { allow_private_networks, ..TransportConfig::default() }).unwrap())
}

fn ctx_with(http: Arc<dyn HttpTransport>) -> ActionContext {
    ActionContext {
        run_id: "run_1".into(),
        step_key: "save".into(),
        attempt: 1,
        idempotency_key: "run_1:save".into(),
        credentials: Credentials::OAuth2 { access_token: Secret::new(TOKEN) },
        http,
        timeout: Duration::from_secs(10),
        extensions: Default::default(),
    }
}

fn ctx() -> ActionContext {
    ctx_with(transport(true))
}

fn drive_at(addr: SocketAddr) -> enlace_core::Connector {
    connector_at(&format!("http://{addr}/drive/v3"), &format!("http://{addr}/upload/drive/v3"))
}

async fn call(addr: SocketAddr, action: &str, input: Value) -> Result<Value, ConnectorError> {
    drive_at(addr).action(action).expect("registered").call(&ctx(), input).await
}

/// A Drive `File` as the upload answers it.
fn uploaded(name: &str, mime: &str, size: usize, parents: &[&str]) -> Value {
    json!({
        "id": "1NewFileId", "name": name, "mimeType": mime, "parents": parents, "size": size.to_string(),
        "webViewLink": "https://drive.google.com/file/d/1NewFileId/view?usp=drivesdk"
    })
}

/// The parts of a multipart/related body: (headers text, content) each.
fn parts(seen: &Seen) -> (String, Vec<(String, Vec<u8>)>) {
    let ct = seen.headers["content-type"].to_str().unwrap().to_string();
    let boundary = ct.strip_prefix("multipart/related; boundary=").unwrap_or_else(|| panic!("content type {ct}")).to_string();
    let body = &seen.body[..];
    let delimiter = format!("--{boundary}");
    let text_positions: Vec<usize> =
        body.windows(delimiter.len()).enumerate().filter(|(_, w)| *w == delimiter.as_bytes()).map(|(i, _)| i).collect();
    assert!(body.starts_with(delimiter.as_bytes()), "the body starts with the first delimiter");
    assert!(body.ends_with(format!("\r\n--{boundary}--\r\n").as_bytes()), "the body ends with the close delimiter");
    let mut out = Vec::new();
    for pair in text_positions.windows(2) {
        let part = &body[pair[0] + delimiter.len() + 2..pair[1] - 2];
        let split = part.windows(4).position(|w| w == b"\r\n\r\n").expect("headers, blank line, content");
        out.push((String::from_utf8(part[..split].to_vec()).unwrap(), part[split + 4..].to_vec()));
    }
    (boundary, out)
}

#[tokio::test]
async fn uploads_text_as_multipart_related_with_metadata_then_bytes() {
    let (addr, seen) = serve(|_| json_answer(200, &[], uploaded("lead.csv", "text/csv", 8, &[FOLDER]))).await;
    let out = call(
        addr,
        "upload_file",
        json!({"name": "lead.csv", "folder_id": format!("https://drive.google.com/drive/folders/{FOLDER}?usp=sharing"),
               "content_type": "text/csv", "content_text": "a,b\n1,2\n"}),
    )
    .await
    .expect("uploaded");
    assert_eq!(
        out,
        json!({"id": "1NewFileId", "name": "lead.csv", "mime_type": "text/csv", "parents": [FOLDER], "size": 8,
               "web_view_link": "https://drive.google.com/file/d/1NewFileId/view?usp=drivesdk"})
    );
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert_eq!((&s.method, s.path.as_str()), (&Method::POST, "/upload/drive/v3/files"));
    assert_eq!(s.query_keys(), ["fields", "supportsAllDrives", "uploadType"]);
    assert_eq!(s.q("uploadType"), Some("multipart"));
    assert_eq!(s.q("fields"), Some(UPLOAD_FIELDS));
    assert_eq!(s.q("supportsAllDrives"), Some("true"));
    assert_eq!(s.headers["authorization"], format!("Bearer {TOKEN}"));
    let (boundary, parts) = parts(s);
    let metadata = r#"{"name":"lead.csv","mimeType":"text/csv","appProperties":{"enlace_idempotency_key":"run_1:save"},"parents":["1FolderAbCdEfGhIjKlMnOpQrStUv"]}"#;
    let want = format!(
        "--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{metadata}\r\n--{boundary}\r\nContent-Type: text/csv\r\n\r\na,b\n1,2\n\r\n--{boundary}--\r\n"
    );
    assert_eq!(String::from_utf8(s.body.to_vec()).unwrap(), want, "the exact multipart body");
    assert_eq!(parts.len(), 2);
    assert_eq!(s.headers["content-length"], want.len().to_string());
}

#[tokio::test]
async fn uploads_an_attachment_from_another_step_and_base64_bytes() {
    let pdf: Vec<u8> = b"%PDF-1.4\n\x00\xff\xfe binary \r\n--not-a-boundary\n%%EOF".to_vec();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&pdf);
    // Wrapped like MIME does it: line breaks are ignored.
    let wrapped: String = b64.as_bytes().chunks(20).map(|c| std::str::from_utf8(c).unwrap()).collect::<Vec<_>>().join("\r\n");
    let (addr, seen) = serve(|_| json_answer(200, &[], uploaded("invoice.pdf", "application/pdf", 45, &["root0"]))).await;
    // The shape an email trigger emits, with a field the action does not use.
    let attachment = json!({"name": "invoice.pdf", "content_type": "application/pdf", "content_base64": wrapped, "size": pdf.len()});
    let out = call(addr, "upload_file", json!({"attachment": attachment})).await.expect("uploaded");
    assert_eq!(out["name"], "invoice.pdf");
    assert_eq!(out["parents"], json!(["root0"]));
    {
        let seen = seen.lock().unwrap();
        let (_, parts) = parts(&seen[0]);
        assert_eq!(parts[0].0, "Content-Type: application/json; charset=UTF-8");
        let metadata: Value = serde_json::from_slice(&parts[0].1).unwrap();
        assert_eq!(
            metadata,
            json!({"name": "invoice.pdf", "mimeType": "application/pdf", "appProperties": {"enlace_idempotency_key": "run_1:save"}}),
            "no parents without a folder: Drive puts the file at the top of My Drive"
        );
        assert_eq!(parts[1], ("Content-Type: application/pdf".to_string(), pdf.clone()), "the bytes, untouched");
    }

    // content_base64 with a name of the step's own and the default media type.
    call(addr, "upload_file", json!({"name": "blob.bin", "content_base64": b64, "folder_id": FOLDER})).await.expect("uploaded");
    let seen = seen.lock().unwrap();
    let (_, parts) = parts(&seen[1]);
    assert_eq!(parts[1], ("Content-Type: application/octet-stream".to_string(), pdf));
    let metadata: Value = serde_json::from_slice(&parts[0].1).unwrap();
    assert_eq!((metadata["name"].as_str(), &metadata["parents"]), (Some("blob.bin"), &json!([FOLDER])));
}

#[tokio::test]
async fn uploads_a_file_fetched_from_a_url_without_sending_the_token_there() {
    let (addr, seen) = serve(|s| {
        if s.method == Method::GET {
            ([("content-type", "application/pdf")], "%PDF-1.7 report").into_response()
        } else {
            json_answer(200, &[], uploaded("report Q1.pdf", "application/pdf", 15, &[FOLDER]))
        }
    })
    .await;
    let out = call(addr, "upload_file", json!({"url": format!("http://{addr}/files/report%20Q1.pdf?sig=abc"), "folder_id": FOLDER}))
        .await
        .expect("uploaded");
    assert_eq!(out["name"], "report Q1.pdf");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    assert_eq!((&seen[0].method, seen[0].path.as_str(), seen[0].q("sig")), (&Method::GET, "/files/report%20Q1.pdf", Some("abc")));
    assert!(seen[0].headers.get("authorization").is_none(), "the Drive token never goes to the file's server");
    let (_, parts) = parts(&seen[1]);
    assert_eq!(parts[1], ("Content-Type: application/pdf".to_string(), b"%PDF-1.7 report".to_vec()));
    let metadata: Value = serde_json::from_slice(&parts[0].1).unwrap();
    assert_eq!(metadata["name"], "report Q1.pdf", "the name comes from the URL's path");
}

#[tokio::test]
async fn a_url_source_is_refused_by_the_ssrf_guard() {
    let (addr, seen) = serve(|_| json_answer(200, &[], uploaded("x", "text/plain", 1, &[]))).await;
    let guarded = drive_at(addr);
    let action = guarded.action("upload_file").unwrap();
    // The real guard (private networks not allowed): a private address, and loopback.
    for url in ["http://10.20.30.40/secret.pdf", "http://192.168.1.1/router.cfg", &format!("http://{addr}/files/a.pdf")] {
        let err = action.call(&ctx_with(transport(false)), json!({"url": url, "name": "a.pdf"})).await.unwrap_err();
        match &err {
            ConnectorError::BadInput { path, message } => {
                assert_eq!(path, "url", "{err}");
                assert!(message.contains("cannot be fetched"), "{err}");
            }
            other => panic!("{url}: expected bad input, got {other:?}"),
        }
    }
    assert!(seen.lock().unwrap().is_empty(), "nothing reached the server, neither the fetch nor an upload");

    // The file's server refusing is about `url`, not about the Drive connection.
    let (addr, seen) = serve(|_| (StatusCode::UNAUTHORIZED, "login required").into_response()).await;
    let err = call(addr, "upload_file", json!({"url": format!("http://{addr}/private.pdf")})).await.unwrap_err();
    assert!(matches!(&err, ConnectorError::BadInput { path, .. } if path == "url"), "{err:?}");
    assert!(err.message().contains("HTTP 401"), "{err}");
    assert_eq!(seen.lock().unwrap().len(), 1, "no upload after a failed fetch");
}

#[tokio::test]
async fn bad_input_names_the_field_and_sends_nothing() {
    let (addr, seen) = serve(|_| json_answer(200, &[], uploaded("x", "text/plain", 1, &[]))).await;
    let big = "x".repeat(crate::upload::MAX_FILE_BYTES + 1);
    let cases = [
        (json!({"name": "a.txt"}), "content_text", "give one of `content_text`, `content_base64`, `url` or `attachment`"),
        (json!({"name": "a.txt", "content_text": "hi", "url": "https://example.com/a"}), "url", "`content_text` and `url` are both given"),
        (json!({"content_text": "hi"}), "name", "is required with `content_text`"),
        (json!({"name": " ", "content_text": "hi"}), "name", "is empty"),
        (json!({"name": "a.bin", "content_base64": "not base64!!"}), "content_base64", "is not valid base64"),
        (json!({"name": "a.txt", "content_text": "hi", "content_type": "text"}), "content_type", "is not a media type"),
        (json!({"name": "a.txt", "content_text": "hi", "folder_id": "My Folder"}), "folder_id", "is not a Drive folder ID"),
        (json!({"name": "a.txt", "content_text": big}), "content_text", "10 MiB"),
        (json!({"url": "ftp://example.com/a.pdf"}), "url", "http or https"),
        (json!({"attachment": {"name": "a.pdf"}}), "attachment.content_base64", "no content"),
        (json!({"attachment": {"name": "", "content_text": "x"}}), "attachment.name", "is empty"),
        (json!({"name": "a.txt", "content_text": "hi", "parents": ["x"]}), "parents", "unknown field `parents`"),
    ];
    for (input, want_path, part) in cases {
        let err = call(addr, "upload_file", input.clone()).await.unwrap_err();
        match &err {
            ConnectorError::BadInput { path, message } => {
                assert_eq!(path, want_path, "{input}: {err}");
                assert!(message.contains(part), "{input}: `{message}` lacks `{part}`");
            }
            other => panic!("{input}: expected bad input, got {other:?}"),
        }
    }
    let err = call(addr, "create_folder", json!({"name": "", "parent_id": FOLDER})).await.unwrap_err();
    assert!(matches!(&err, ConnectorError::BadInput { path, .. } if path == "name"), "{err:?}");
    assert!(seen.lock().unwrap().is_empty(), "nothing was sent");
}

#[tokio::test]
async fn a_step_without_a_connection_is_an_auth_error_before_sending() {
    let (addr, seen) = serve(|_| json_answer(200, &[], json!({}))).await;
    let mut ctx = ctx();
    ctx.credentials = Credentials::None;
    let c = drive_at(addr);
    let err = c.action("upload_file").unwrap().call(&ctx, json!({"name": "a.txt", "content_text": "hi"})).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Auth, "{err}");
    let err = c.polling_trigger("new_file").unwrap().poll(&ctx, json!({"folder_id": FOLDER}), None).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Auth, "{err}");
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn creates_a_folder() {
    let (addr, seen) = serve(|_| {
        json_answer(
            200,
            &[],
            json!({"id": "1NewFolder", "name": "Leads", "webViewLink": "https://drive.google.com/drive/folders/1NewFolder"}),
        )
    })
    .await;
    let out = call(addr, "create_folder", json!({"name": " Leads ", "parent_id": FOLDER})).await.expect("created");
    assert_eq!(out, json!({"id": "1NewFolder", "name": "Leads", "web_view_link": "https://drive.google.com/drive/folders/1NewFolder"}));
    let seen = seen.lock().unwrap();
    let s = &seen[0];
    assert_eq!((&s.method, s.path.as_str()), (&Method::POST, "/drive/v3/files"));
    assert_eq!(s.query_keys(), ["fields", "supportsAllDrives"]);
    assert_eq!(s.q("fields"), Some("id,name,webViewLink"));
    assert_eq!(s.headers["content-type"], "application/json; charset=UTF-8");
    assert_eq!(s.headers["authorization"], format!("Bearer {TOKEN}"));
    assert_eq!(
        serde_json::from_slice::<Value>(&s.body).unwrap(),
        json!({"name": "Leads", "mimeType": "application/vnd.google-apps.folder", "parents": [FOLDER],
               "appProperties": {"enlace_idempotency_key": "run_1:save"}})
    );
}

#[tokio::test]
async fn rate_limits_are_rate_limited_with_the_wait() {
    // 429 with Retry-After.
    let (addr, _) =
        serve(|_| json_answer(429, &[("retry-after", "30")], google_error(429, "Rate Limit Exceeded", "rateLimitExceeded"))).await;
    let err = call(addr, "upload_file", json!({"name": "a.txt", "content_text": "hi"})).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::RateLimited, "{err}");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(30)));
    assert_eq!(err.message(), "Google Drive answered HTTP 429 Too Many Requests: Rate Limit Exceeded (rateLimitExceeded)");

    // Drive's 403 rate limits.
    for reason in ["userRateLimitExceeded", "rateLimitExceeded"] {
        let (addr, seen) = serve(move |_| json_answer(403, &[], google_error(403, "User rate limit exceeded.", reason))).await;
        let err = call(addr, "create_folder", json!({"name": "x"})).await.unwrap_err();
        assert_eq!(err.class(), ErrorClass::RateLimited, "{reason}: {err}");
        assert!(err.message().contains(reason) && err.message().contains("User rate limit exceeded."), "{err}");
        assert_eq!(err.retry_after(), None, "Google sent no wait: the runner backs off");
        assert_eq!(seen.lock().unwrap().len(), 1, "one call, no retry inside the connector");
    }
}

#[tokio::test]
async fn other_errors_are_classified_with_googles_message() {
    // (status, reason, message, class)
    let table = [
        (401, "authError", "Request had invalid authentication credentials.", ErrorClass::Auth),
        (403, "insufficientPermissions", "Request had insufficient authentication scopes.", ErrorClass::Auth),
        (403, "insufficientFilePermissions", "The user does not have sufficient permissions for this file.", ErrorClass::Permanent),
        (403, "storageQuotaExceeded", "The user's Drive storage quota has been exceeded.", ErrorClass::Permanent),
        (400, "badRequest", "Bad Request", ErrorClass::Permanent),
        (500, "backendError", "Backend Error", ErrorClass::Transient),
        (503, "backendError", "Service unavailable", ErrorClass::Transient),
    ];
    for (status, reason, message, class) in table {
        let (addr, _) = serve(move |_| json_answer(status, &[], google_error(status, message, reason))).await;
        let err = call(addr, "upload_file", json!({"name": "a.txt", "content_text": "hi"})).await.unwrap_err();
        assert_eq!(err.class(), class, "{status} {reason}: {err}");
        assert!(err.message().contains(message), "{status} {reason}: Google's message is kept: {err}");
        assert!(!err.message().contains(TOKEN), "the token never shows in an error");
    }
}

#[tokio::test]
async fn a_missing_folder_is_bad_input_on_the_field_and_not_retried() {
    let body = google_error(404, &format!("File not found: {FOLDER}."), "notFound");
    let (addr, seen) = serve(move |_| json_answer(404, &[], body.clone())).await;
    let err = call(addr, "upload_file", json!({"name": "a.txt", "content_text": "hi", "folder_id": FOLDER})).await.unwrap_err();
    match &err {
        ConnectorError::BadInput { path, message } => {
            assert_eq!(path, "folder_id");
            assert!(
                message.starts_with(&format!("Google Drive answered HTTP 404 Not Found: File not found: {FOLDER}. (notFound)")),
                "{err}"
            );
        }
        other => panic!("expected bad input, got {other:?}"),
    }
    let err = call(addr, "create_folder", json!({"name": "x", "parent_id": FOLDER})).await.unwrap_err();
    assert!(matches!(&err, ConnectorError::BadInput { path, .. } if path == "parent_id"), "{err:?}");
    assert_eq!(seen.lock().unwrap().len(), 2, "one request each: the runner does not retry bad input");
}

#[tokio::test]
async fn malformed_answers_give_clear_errors() {
    let (addr, _) = serve(|_| (StatusCode::OK, [("content-type", "text/html")], "<html>proxy login</html>").into_response()).await;
    let err = call(addr, "upload_file", json!({"name": "a.txt", "content_text": "hi"})).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::MaybeDelivered, "a 2xx after an upload: the file may exist: {err}");
    assert!(err.message().contains("a body that is not JSON (<html>proxy login</html>)"), "{err}");

    let (addr, _) = serve(|_| json_answer(200, &[], json!({"name": "a.txt"}))).await;
    let err = call(addr, "upload_file", json!({"name": "a.txt", "content_text": "hi"})).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Permanent, "{err}");
    assert!(err.message().contains("without the file's `id`"), "{err}");

    let (addr, _) = serve(|_| json_answer(200, &[], json!(["not", "an", "object"]))).await;
    let err = call(addr, "create_folder", json!({"name": "x"})).await.unwrap_err();
    assert!(err.message().contains("a list in JSON instead of an object"), "{err}");

    // The trigger: a page whose `changes` is not a list, and one without any token.
    let (addr, _) = serve(|_| json_answer(200, &[], json!({"changes": {"fileId": "x"}, "newStartPageToken": "9"}))).await;
    let err = poll(addr, Some("5")).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert_eq!(err.message(), "page 1 of Drive's changes: `changes` is an object instead of a list");
    let (addr, _) = serve(|_| json_answer(200, &[], json!({"changes": []}))).await;
    let err = poll(addr, Some("5")).await.unwrap_err();
    assert!(err.message().contains("without `nextPageToken` or `newStartPageToken`"), "{err}");
    let (addr, _) = serve(|_| json_answer(200, &[], json!({"kind": "drive#startPageToken"}))).await;
    let err = poll(addr, None).await.unwrap_err();
    assert!(err.message().contains("without `startPageToken`"), "{err}");
}

async fn poll(addr: SocketAddr, cursor: Option<&str>) -> Result<PollPage<enlace_core::trigger::PolledItem>, ConnectorError> {
    drive_at(addr)
        .polling_trigger("new_file")
        .expect("registered")
        .poll(&ctx(), json!({"folder_id": FOLDER}), cursor.map(String::from))
        .await
}

fn file_change(id: &str, created: &str, parents: &[&str], mime: &str, trashed: bool) -> Value {
    json!({"fileId": id, "removed": false, "time": created, "file": {
        "id": id, "name": format!("{id}.pdf"), "mimeType": mime, "parents": parents, "createdTime": created,
        "modifiedTime": created, "webViewLink": format!("https://drive.google.com/file/d/{id}/view"), "size": "1024", "trashed": trashed
    }})
}

#[tokio::test]
async fn enabling_seeds_the_cursor_with_the_start_page_token_and_fires_nothing() {
    let (addr, seen) = serve(|_| json_answer(200, &[], json!({"kind": "drive#startPageToken", "startPageToken": "4242"}))).await;
    let page = poll(addr, None).await.unwrap();
    assert_eq!((page.items.len(), page.cursor.as_deref()), (0, Some("4242")));
    let seen = seen.lock().unwrap();
    assert_eq!((&seen[0].method, seen[0].path.as_str(), seen[0].query.len()), (&Method::GET, "/drive/v3/changes/startPageToken", 0));
    assert_eq!(seen[0].headers["authorization"], format!("Bearer {TOKEN}"));
}

#[tokio::test]
async fn polls_two_pages_of_changes_then_takes_the_new_start_page_token() {
    let (addr, seen) = serve(|s| match s.q("pageToken") {
        Some("100") => json_answer(
            200,
            &[],
            json!({"nextPageToken": "101", "changes": [
                file_change("older", "2026-11-25T08:00:00.000Z", &[FOLDER], "application/pdf", false),
                file_change("subfolder", "2026-11-25T08:01:00.000Z", &[FOLDER], "application/vnd.google-apps.folder", false),
                file_change("binned", "2026-11-25T08:02:00.000Z", &[FOLDER], "application/pdf", true),
                file_change("elsewhere", "2026-11-25T08:03:00.000Z", &["1OtherFolder"], "application/pdf", false),
                {"fileId": "gone", "removed": true, "time": "2026-11-25T08:04:00.000Z"},
            ]}),
        ),
        Some("101") => json_answer(
            200,
            &[],
            json!({"newStartPageToken": "102", "changes": [
                file_change("newest", "2026-11-25T09:30:00.000Z", &["1OtherFolder", FOLDER], "text/csv", false),
                file_change("middle", "2026-11-25T09:00:00.000Z", &[FOLDER], "application/pdf", false),
                file_change("older", "2026-11-25T08:00:00.000Z", &[FOLDER], "application/pdf", false),
            ]}),
        ),
        other => panic!("unexpected page token {other:?}"),
    })
    .await;
    let page = poll(addr, Some("100")).await.unwrap();
    assert_eq!(page.cursor.as_deref(), Some("102"), "the last page's newStartPageToken");
    let keys: Vec<&str> = page.items.iter().map(|i| i.dedupe_key.as_str()).collect();
    assert_eq!(keys, ["newest", "middle", "older"], "files of the folder only, newest first, each once");
    assert_eq!(
        page.items[0].event,
        json!({"id": "newest", "name": "newest.pdf", "mime_type": "text/csv", "parents": ["1OtherFolder", FOLDER],
               "created_time": "2026-11-25T09:30:00.000Z", "modified_time": "2026-11-25T09:30:00.000Z",
               "web_view_link": "https://drive.google.com/file/d/newest/view", "size": 1024, "change_time": "2026-11-25T09:30:00.000Z"})
    );
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    for (s, token) in seen.iter().zip(["100", "101"]) {
        assert_eq!((&s.method, s.path.as_str()), (&Method::GET, "/drive/v3/changes"));
        assert_eq!(s.query_keys(), ["fields", "includeRemoved", "pageToken", "spaces"]);
        assert_eq!(s.q("pageToken"), Some(token));
        assert_eq!(s.q("fields"), Some(CHANGE_FIELDS));
        assert_eq!((s.q("includeRemoved"), s.q("spaces")), (Some("false"), Some("drive")));
        assert_eq!(s.headers["authorization"], format!("Bearer {TOKEN}"));
    }
}

#[tokio::test]
async fn a_poll_stops_at_a_page_boundary_and_the_next_one_goes_on_from_there() {
    // Every page holds 60 files of the folder and points to the next one.
    let (addr, seen) = serve(|s| {
        let n: u32 = s.q("pageToken").unwrap().parse().unwrap();
        let changes: Vec<Value> = (0..60)
            .map(|i| {
                file_change(&format!("f{n}-{i:02}"), &format!("2026-11-25T{:02}:{i:02}:00.000Z", n % 24), &[FOLDER], "text/plain", false)
            })
            .collect();
        json_answer(200, &[], json!({"nextPageToken": (n + 1).to_string(), "changes": changes}))
    })
    .await;
    let page = poll(addr, Some("1")).await.unwrap();
    assert_eq!(page.items.len(), 120, "two whole pages: the cap ({MAX_ITEMS_PER_POLL}) is checked at page ends");
    assert_eq!(page.cursor.as_deref(), Some("3"), "the next page's token: nothing is skipped");
    assert_eq!(page.items[0].dedupe_key, "f2-59", "newest first");
    assert_eq!(seen.lock().unwrap().len(), 2);
    let next = poll(addr, page.cursor.as_deref()).await.unwrap();
    assert_eq!(next.items.last().unwrap().dedupe_key, "f3-00", "the next poll starts at page 3");

    // Pages without any file of the folder: at most MAX_PAGES_PER_POLL pages per poll.
    let (addr, seen) = serve(|s| {
        let n: u32 = s.q("pageToken").unwrap().parse().unwrap();
        json_answer(200, &[], json!({"nextPageToken": (n + 1).to_string(), "changes": [file_change("x", "2026-11-25T08:00:00Z", &["1Other"], "text/plain", false)]}))
    })
    .await;
    let page = poll(addr, Some("1")).await.unwrap();
    assert_eq!((page.items.len(), page.cursor), (0, Some((MAX_PAGES_PER_POLL + 1).to_string())));
    assert_eq!(seen.lock().unwrap().len(), MAX_PAGES_PER_POLL as usize);
}

#[tokio::test]
async fn errors_while_polling_name_the_page_and_keep_their_class() {
    let (addr, _) = serve(|s| match s.q("pageToken") {
        Some("7") => json_answer(200, &[], json!({"nextPageToken": "8", "changes": []})),
        _ => json_answer(429, &[("retry-after", "12")], google_error(429, "Rate Limit Exceeded", "rateLimitExceeded")),
    })
    .await;
    let err = poll(addr, Some("7")).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::RateLimited);
    assert_eq!(err.retry_after(), Some(Duration::from_secs(12)));
    assert_eq!(
        err.message(),
        "page 2 of Drive's changes: Google Drive answered HTTP 429 Too Many Requests: Rate Limit Exceeded (rateLimitExceeded)"
    );

    let (addr, _) = serve(|_| json_answer(401, &[], google_error(401, "Invalid Credentials", "authError"))).await;
    let err = poll(addr, Some("7")).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Auth, "the runner refreshes the token once: {err}");
    assert!(err.message().contains("Invalid Credentials"), "{err}");

    let (addr, seen) = serve(|_| json_answer(200, &[], json!({"nextPageToken": "7", "changes": []}))).await;
    let err = poll(addr, Some("7")).await.unwrap_err();
    assert!(err.message().contains("the same page token twice (`7`)"), "{err}");
    assert_eq!(seen.lock().unwrap().len(), 1);

    let err = drive_at(addr).polling_trigger("new_file").unwrap().poll(&ctx(), json!({"folder_id": "a folder"}), None).await.unwrap_err();
    assert!(matches!(&err, ConnectorError::BadInput { path, .. } if path == "folder_id"), "{err:?}");
}

#[tokio::test]
async fn the_connection_test_reads_the_account_and_changes_nothing() {
    use enlace_core::{ConnectionContext, TestOutcome};
    let (addr, seen) = serve(|s| {
        if s.headers.get("authorization").is_some_and(|v| v == format!("Bearer {TOKEN}").as_str()) {
            json_answer(200, &[], json!({"user": {"kind": "drive#user", "displayName": "Ana", "emailAddress": "ana@example.com"}}))
        } else {
            json_answer(401, &[], google_error(401, "Request had invalid authentication credentials.", "authError"))
        }
    })
    .await;
    let c = drive_at(addr);
    assert!(c.manifest.connection_test);
    let with = |token: &str| ConnectionContext {
        connection_id: "drive".into(),
        credentials: Credentials::OAuth2 { access_token: Secret::new(token) },
        http: transport(true),
        timeout: Duration::from_secs(5),
    };
    match c.test_connection(&with(TOKEN)).await {
        TestOutcome::Ok(m) => assert_eq!(m, "Connected as ana@example.com"),
        other => panic!("{other:?}"),
    }
    match c.test_connection(&with("ya29.expired")).await {
        TestOutcome::Failed(e) => {
            assert_eq!(e.class(), ErrorClass::Auth, "{e}");
            assert!(e.message().contains("invalid authentication credentials") && !e.message().contains("ya29.expired"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    let seen = seen.lock().unwrap();
    assert_eq!((&seen[0].method, seen[0].path.as_str(), seen[0].q("fields")), (&Method::GET, "/drive/v3/about", Some("user")));
}

#[test]
fn manifest_declares_oauth2_the_quota_and_no_idempotency() {
    let c = crate::connector();
    let m = &c.manifest;
    assert_eq!(m.id, "google_drive");
    assert_eq!(m.auth, enlace_core::AuthKind::OAuth2);
    let o = m.oauth2.as_ref().expect("Drive users sign in with OAuth2");
    assert_eq!(o.token_url, "https://oauth2.googleapis.com/token");
    assert_eq!(o.authorize_params["access_type"], "offline", "without it Google sends no refresh token");
    assert_eq!(o.authorize_params["prompt"], "consent", "without it a second sign-in gets no refresh token");
    assert_eq!(m.rate_limit, Some(enlace_core::RateLimit { calls: 12_000, per: Duration::from_secs(60) }));
    for id in ["upload_file", "create_folder"] {
        let a = m.action(id).unwrap();
        assert_eq!(a.idempotency, Idempotency::None, "{id}: Drive takes no idempotency key");
        for (name, prop) in a.input_schema["properties"].as_object().unwrap() {
            assert!(prop["description"].as_str().is_some_and(|d| d.len() > 20), "{id}.{name} is documented");
        }
        for key in a.sample.as_object().unwrap().keys() {
            assert!(a.output_schema["properties"].get(key).is_some(), "{id}: the output schema has {key}");
        }
    }
    let attachment = &m.action("upload_file").unwrap().input_schema["$defs"]["Attachment"]["properties"];
    for name in ["name", "content_type", "content_base64", "content_text"] {
        assert!(attachment[name]["description"].as_str().is_some_and(|d| d.len() > 10), "attachment.{name} is documented");
    }
    let t = m.trigger("new_file").unwrap();
    assert_eq!(t.kind, enlace_core::TriggerKind::Polling);
    assert_eq!(t.config_schema["required"], json!(["folder_id"]));
    assert!(t.config_schema["properties"]["folder_id"]["description"].as_str().unwrap().contains("subfolders"));
    for key in t.sample.as_object().unwrap().keys() {
        assert!(t.output_schema["properties"].get(key).is_some(), "the item schema has {key}");
    }
}

#[test]
fn long_idempotency_keys_fit_drives_app_property_limit() {
    assert_eq!(google::idempotency_property("run_1:save"), "run_1:save");
    let long = format!("0195f3c2-7d1e-7b4a-9c1d-3e5f7a9b1c2d:{}", "each_attachment[12].save_to_drive".repeat(3));
    let stored = google::idempotency_property(&long);
    assert_eq!(stored.len(), 64, "a SHA-256 in hex");
    assert!(google::IDEMPOTENCY_PROPERTY.len() + stored.len() <= 124);
    assert_eq!(stored, google::idempotency_property(&long), "the same key gives the same value");
}
