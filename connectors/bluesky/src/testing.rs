//! For tests (the connector's, and tests/e2e with the `testing` feature): a fake PDS on
//! 127.0.0.1 that answers like a PDS, and the lexicon check of the requests it saw.
//!
//! [`FakePds`] keeps accounts, sessions (access tokens that can be made to expire, refresh
//! tokens that rotate and can be revoked), blobs with real CIDs, post records with TID
//! keys, and handles to resolve; it records every request. Faults are queued per method
//! (`fail_next`: a 429 with headers, a 5xx) and an answer can be held back after the work is
//! done (`delay_next`: the post is made, the answer comes too late). Its answers follow the
//! lexicons in `../shared/vendor-specs/bluesky` (checked by [`check_lexicon`], as outputs);
//! `resolveHandle` and `listRecords`, which are not among those lexicons, follow the AT
//! Protocol's documented shapes.
//!
//! [`check_lexicon`] runs `check_lexicon.mjs` (beside this crate) with node: npm
//! `@atproto/lexicon` 0.6.2 loads every lexicon and checks each input, output or record.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub use enlace_kit::testing::Seen;

/// An account on the fake PDS.
#[derive(Debug, Clone)]
pub struct Account {
    pub did: String,
    pub handle: String,
    pub email: String,
    pub password: String,
}

/// A queued answer for one method (an NSID).
#[derive(Debug, Clone)]
pub struct Fault {
    pub status: u16,
    pub body: Value,
    pub headers: Vec<(String, String)>,
}

#[derive(Default)]
struct State {
    accounts: Vec<Account>,
    /// access token -> (did, expired)
    access: HashMap<String, (String, bool)>,
    /// refresh token -> did
    refresh: HashMap<String, String>,
    /// did -> records (rkey, cid, value), oldest first
    records: HashMap<String, Vec<(String, String, Value)>>,
    /// other handles that resolve (handle -> did)
    handles: HashMap<String, String>,
    files: HashMap<String, (String, Vec<u8>)>,
    faults: HashMap<String, VecDeque<Fault>>,
    delays: HashMap<String, VecDeque<Duration>>,
    seen: Vec<Seen>,
    counter: u64,
}

/// A PDS on 127.0.0.1. See the module docs.
#[derive(Clone)]
pub struct FakePds {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

/// A CIDv1 (sha2-256) of some bytes, in base32: `codec` 0x55 (raw, blobs) or 0x71
/// (dag-cbor, records).
pub fn cid(codec: u8, data: &[u8]) -> String {
    let mut bytes = vec![0x01, codec, 0x12, 0x20];
    bytes.extend_from_slice(&Sha256::digest(data));
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut out = String::from("b");
    let (mut buf, mut bits) = (0u32, 0u32);
    for b in bytes {
        buf = (buf << 8) | b as u32;
        bits += 8;
        while bits >= 5 {
            out.push(ALPHABET[((buf >> (bits - 5)) & 31) as usize] as char);
            bits -= 5;
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buf << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// A TID (a record key): 13 base32-sortable characters of microseconds and a clock id.
pub fn tid(micros: u64, clock: u64) -> String {
    const S32: &[u8; 32] = b"234567abcdefghijklmnopqrstuvwxyz";
    let mut n = ((micros & ((1 << 53) - 1)) << 10) | (clock & 1023);
    let mut out = [0u8; 13];
    for c in out.iter_mut().rev() {
        *c = S32[(n & 31) as usize];
        n >>= 5;
    }
    String::from_utf8(out.to_vec()).expect("ascii")
}

fn xrpc_error(status: u16, name: &str, message: &str) -> Response {
    (StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST), axum::Json(json!({"error": name, "message": message})))
        .into_response()
}

fn ok(v: Value) -> Response {
    let mut r = (StatusCode::OK, axum::Json(v)).into_response();
    // A PDS's rate-limit headers, on every answer.
    let reset = (chrono::Utc::now().timestamp() + 300).to_string();
    for (k, v) in [("ratelimit-limit", "3000"), ("ratelimit-remaining", "2999"), ("ratelimit-policy", "3000;w=300")] {
        r.headers_mut().insert(k, v.parse().expect("header"));
    }
    r.headers_mut().insert("ratelimit-reset", reset.parse().expect("header"));
    r
}

impl FakePds {
    /// A PDS with one account, `alice.test` (`did:plc:...`), email `alice@mail.test`, app
    /// password `app-pass-1234`.
    pub async fn start() -> FakePds {
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
            let st = st.clone();
            async move { handle(st, req).await }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        tokio::spawn(async move { axum::serve(listener, app).await.expect("fake PDS") });
        let pds = FakePds { addr, state };
        pds.add_account(Account {
            did: "did:plc:ewvi7nxzyoun6zhxrhs64oiz".into(),
            handle: "alice.test".into(),
            email: "alice@mail.test".into(),
            password: "app-pass-1234".into(),
        });
        pds
    }

    fn st(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn add_account(&self, a: Account) {
        let mut s = self.st();
        s.handles.insert(a.handle.clone(), a.did.clone());
        s.accounts.push(a);
    }

    /// The first account.
    pub fn alice(&self) -> Account {
        self.st().accounts[0].clone()
    }

    /// A handle that resolves (another account, elsewhere).
    pub fn add_handle(&self, handle: &str, did: &str) {
        self.st().handles.insert(handle.into(), did.into());
    }

    /// A file served at `GET path` (images to fetch).
    pub fn serve_file(&self, path: &str, content_type: &str, data: &[u8]) {
        self.st().files.insert(path.into(), (content_type.into(), data.to_vec()));
    }

    /// The next call of `nsid` gets this answer instead (several calls queue).
    pub fn fail_next(&self, nsid: &str, status: u16, body: Value, headers: &[(&str, &str)]) {
        let f = Fault { status, body, headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect() };
        self.st().faults.entry(nsid.into()).or_default().push_back(f);
    }

    /// The next call of `nsid` is carried out, then answered after `d`.
    pub fn delay_next(&self, nsid: &str, d: Duration) {
        self.st().delays.entry(nsid.into()).or_default().push_back(d);
    }

    /// Every access token given so far is expired (answers `ExpiredToken`).
    pub fn expire_access_tokens(&self) {
        for v in self.st().access.values_mut() {
            v.1 = true;
        }
    }

    /// Every refresh token given so far is refused.
    pub fn revoke_refresh_tokens(&self) {
        self.st().refresh.clear();
    }

    /// Every request seen, in order.
    pub fn requests(&self) -> Vec<Seen> {
        self.st().seen.clone()
    }

    /// The requests to one method (`com.atproto.repo.createRecord`).
    pub fn calls(&self, nsid: &str) -> Vec<Seen> {
        let path = format!("/xrpc/{nsid}");
        self.requests().into_iter().filter(|s| s.path == path).collect()
    }

    /// The account's posts (rkey, cid, record), oldest first.
    pub fn posts(&self, did: &str) -> Vec<(String, String, Value)> {
        self.st().records.get(did).cloned().unwrap_or_default()
    }

    /// Adds a post made elsewhere (another client), with its `createdAt`.
    pub fn add_post(&self, did: &str, text: &str, created_at: &str) -> String {
        let mut s = self.st();
        s.counter += 1;
        let rkey = tid(chrono::Utc::now().timestamp_micros() as u64 + s.counter, s.counter);
        let value = json!({"$type": "app.bsky.feed.post", "text": text, "createdAt": created_at});
        let c = cid(0x71, value.to_string().as_bytes());
        s.records.entry(did.into()).or_default().push((rkey.clone(), c, value));
        rkey
    }
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    headers.get("authorization")?.to_str().ok()?.strip_prefix("Bearer ").map(str::to_string)
}

fn issue(s: &mut State, did: &str) -> Value {
    s.counter += 1;
    let n = s.counter;
    let access = format!("acc-{n}-{}", &cid(0x55, format!("a{n}").as_bytes())[10..30]);
    let refresh = format!("ref-{n}-{}", &cid(0x55, format!("r{n}").as_bytes())[10..30]);
    s.access.insert(access.clone(), (did.to_string(), false));
    s.refresh.insert(refresh.clone(), did.to_string());
    let a = s.accounts.iter().find(|a| a.did == did).cloned().expect("an account");
    json!({"accessJwt": access, "refreshJwt": refresh, "handle": a.handle, "did": a.did, "email": a.email, "emailConfirmed": true, "active": true})
}

async fn handle(state: Arc<Mutex<State>>, req: axum::extract::Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 16 * 1024 * 1024).await.unwrap_or_default();
    let path = parts.uri.path().to_string();
    let query: BTreeMap<String, String> = parts.uri.query().map(form_urlencoded_pairs).unwrap_or_default().into_iter().collect();
    let method = parts.method.as_str().to_string();
    let nsid = path.strip_prefix("/xrpc/").unwrap_or_default().to_string();
    let (resp, delay) = {
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        s.seen.push(Seen {
            method: method.clone(),
            path: path.clone(),
            query: query.clone(),
            headers: parts.headers.clone(),
            body: bytes::Bytes::copy_from_slice(&body),
        });
        let fault = s.faults.get_mut(&nsid).and_then(VecDeque::pop_front);
        let delay = s.delays.get_mut(&nsid).and_then(VecDeque::pop_front);
        let resp = match fault {
            Some(f) => {
                let mut r = (StatusCode::from_u16(f.status).unwrap_or(StatusCode::BAD_REQUEST), axum::Json(f.body)).into_response();
                for (k, v) in f.headers {
                    if let (Ok(k), Ok(v)) = (axum::http::HeaderName::try_from(k), axum::http::HeaderValue::try_from(v)) {
                        r.headers_mut().insert(k, v);
                    }
                }
                r
            }
            None => answer(&mut s, &method, &path, &nsid, &query, &parts.headers, &body),
        };
        (resp, delay)
    };
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    resp
}

fn form_urlencoded_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let dec = |s: &str| percent_encoding::percent_decode_str(&s.replace('+', " ")).decode_utf8_lossy().into_owned();
            (!k.is_empty()).then(|| (dec(k), dec(v)))
        })
        .collect()
}

/// The DID of a valid, unexpired access token, or the PDS's refusal.
fn authed(s: &State, headers: &HeaderMap) -> Result<String, Box<Response>> {
    let Some(token) = bearer(headers) else { return Err(Box::new(xrpc_error(401, "AuthenticationRequired", "Authentication Required"))) };
    match s.access.get(&token) {
        Some((_, true)) => Err(Box::new(xrpc_error(400, "ExpiredToken", "Token has expired"))),
        Some((did, false)) => Ok(did.clone()),
        None => Err(Box::new(xrpc_error(400, "InvalidToken", "Token could not be verified"))),
    }
}

fn answer(
    s: &mut State,
    method: &str,
    path: &str,
    nsid: &str,
    query: &BTreeMap<String, String>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    match (method, nsid) {
        ("GET", _) if !path.starts_with("/xrpc/") => match s.files.get(path) {
            Some((ct, data)) => {
                let mut r = (StatusCode::OK, data.clone()).into_response();
                r.headers_mut().insert("content-type", ct.parse().expect("content type"));
                r
            }
            None => (StatusCode::NOT_FOUND, "no such file").into_response(),
        },
        ("POST", "com.atproto.server.createSession") => {
            let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            let (Some(id), Some(pw)) = (v["identifier"].as_str(), v["password"].as_str()) else {
                return xrpc_error(400, "InvalidRequest", "Input must have the property \"identifier\"");
            };
            let id = id.to_lowercase();
            let found = s.accounts.iter().find(|a| (a.handle == id || a.email == id || a.did == id) && a.password == pw).cloned();
            match found {
                Some(a) => ok(issue(s, &a.did)),
                None => xrpc_error(401, "AuthenticationRequired", "Invalid identifier or password"),
            }
        }
        ("POST", "com.atproto.server.refreshSession") => {
            let Some(token) = bearer(headers) else { return xrpc_error(401, "AuthenticationRequired", "Authentication Required") };
            match s.refresh.remove(&token) {
                // Rotated: the old refresh token is spent.
                Some(did) => ok(issue(s, &did)),
                None => xrpc_error(400, "ExpiredToken", "Token has been revoked"),
            }
        }
        ("POST", "com.atproto.repo.uploadBlob") => {
            if let Err(r) = authed(s, headers) {
                return *r;
            }
            let mime = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("application/octet-stream").to_string();
            ok(json!({"blob": {"$type": "blob", "ref": {"$link": cid(0x55, body)}, "mimeType": mime, "size": body.len()}}))
        }
        ("POST", "com.atproto.repo.createRecord") => {
            let did = match authed(s, headers) {
                Ok(d) => d,
                Err(r) => return *r,
            };
            let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            let handle = s.accounts.iter().find(|a| a.did == did).map(|a| a.handle.clone()).unwrap_or_default();
            let repo = v["repo"].as_str().unwrap_or_default();
            if repo != did && repo != handle {
                return xrpc_error(400, "InvalidRequest", "Input/repo must be the authenticated account");
            }
            if v["collection"] != "app.bsky.feed.post" || v["record"]["$type"] != "app.bsky.feed.post" {
                return xrpc_error(400, "InvalidRequest", "Invalid collection or record $type");
            }
            if v["record"]["text"].as_str().is_none() {
                return xrpc_error(400, "InvalidRequest", "Invalid app.bsky.feed.post record: Record must have the property \"text\"");
            }
            s.counter += 1;
            let rkey = tid(chrono::Utc::now().timestamp_micros() as u64, s.counter);
            let c = cid(0x71, v["record"].to_string().as_bytes());
            s.records.entry(did.clone()).or_default().push((rkey.clone(), c.clone(), v["record"].clone()));
            ok(json!({"uri": format!("at://{did}/app.bsky.feed.post/{rkey}"), "cid": c, "validationStatus": "valid"}))
        }
        ("GET", "com.atproto.repo.listRecords") => {
            // Public, but a token that is given must be good (an optional auth check).
            if bearer(headers).is_some()
                && let Err(r) = authed(s, headers)
            {
                return *r;
            }
            let repo = query.get("repo").cloned().unwrap_or_default();
            let did = s.accounts.iter().find(|a| a.did == repo || a.handle == repo).map(|a| a.did.clone());
            let Some(did) = did else { return xrpc_error(400, "InvalidRequest", &format!("Could not find repo: {repo}")) };
            let limit = query.get("limit").and_then(|l| l.parse::<usize>().ok()).unwrap_or(50);
            let records: Vec<Value> = s
                .records
                .get(&did)
                .into_iter()
                .flatten()
                .rev()
                .take(limit)
                .map(|(rkey, c, v)| json!({"uri": format!("at://{did}/app.bsky.feed.post/{rkey}"), "cid": c, "value": v}))
                .collect();
            ok(json!({"records": records}))
        }
        ("GET", "com.atproto.identity.resolveHandle") => {
            let h = query.get("handle").cloned().unwrap_or_default().to_lowercase();
            match s.handles.get(&h) {
                Some(did) => ok(json!({"did": did})),
                None => xrpc_error(400, "InvalidRequest", "Unable to resolve handle"),
            }
        }
        _ => xrpc_error(501, "MethodNotImplemented", &format!("the fake PDS has no {method} {path}")),
    }
}

/// What to check with the lexicons: an XRPC input, an XRPC output, or a record.
#[derive(Debug, Clone)]
pub enum Check {
    /// A procedure's input body (for `com.atproto.repo.createRecord`, its record too).
    Input(&'static str, Value),
    /// A method's output.
    Output(&'static str, Value),
    /// A record of a collection.
    Record(&'static str, Value),
}

/// Where npm installed `@atproto/lexicon`: `ENLACE_BLUESKY_LEXICON_DIR` (the folder holding
/// its `node_modules`), or this crate's folder (`npm install --prefix connectors/bluesky`).
pub fn lexicon_dir() -> PathBuf {
    std::env::var_os("ENLACE_BLUESKY_LEXICON_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// Checks each item with npm `@atproto/lexicon` over the lexicons of
/// `../shared/vendor-specs/bluesky`: `Ok`, or the validator's refusal. Panics (saying how
/// to install it) when node or the package is missing.
pub fn check_lexicon(items: &[Check]) -> Vec<Result<(), String>> {
    let dir = lexicon_dir();
    let pkg = dir.join("node_modules/@atproto/lexicon/package.json");
    let version = std::fs::read_to_string(&pkg)
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .and_then(|v| v["version"].as_str().map(str::to_string));
    assert_eq!(
        version.as_deref(),
        Some("0.6.2"),
        "npm @atproto/lexicon 0.6.2 is not installed in {} (the Bluesky lexicon check needs it): run `npm install --prefix connectors/bluesky` (.ci/run does), or set ENLACE_BLUESKY_LEXICON_DIR to a folder whose node_modules holds it",
        dir.display()
    );
    let lexicons = enlace_kit::testing::graph::vendor_specs_dir().join("bluesky/lexicons");
    assert!(lexicons.is_dir(), "the Bluesky lexicons are not at {} (../shared/vendor-specs/bluesky/lexicons)", lexicons.display());
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("check_lexicon.mjs");
    let mut child = Command::new("node")
        .arg(&script)
        .arg(&lexicons)
        .arg(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node runs check_lexicon.mjs (install Node.js 18 or later)");
    let mut input = String::new();
    for c in items {
        let line = match c {
            Check::Input(nsid, body) => json!({"check": "input", "nsid": nsid, "value": body}),
            Check::Output(nsid, body) => json!({"check": "output", "nsid": nsid, "value": body}),
            Check::Record(nsid, body) => json!({"check": "record", "nsid": nsid, "value": body}),
        };
        input.push_str(&line.to_string());
        input.push('\n');
    }
    child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write to node");
    let out = child.wait_with_output().expect("node ends");
    assert!(out.status.success(), "check_lexicon.mjs failed: {}", String::from_utf8_lossy(&out.stderr));
    let verdicts: Vec<Result<(), String>> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("a verdict line");
            if v["ok"] == true { Ok(()) } else { Err(v["error"].as_str().unwrap_or_default().to_string()) }
        })
        .collect();
    assert_eq!(verdicts.len(), items.len(), "one verdict per item");
    verdicts
}

/// Every createRecord, createSession and uploadBlob request the PDS saw checked as the
/// procedure's input (a post's record as an `app.bsky.feed.post` too): panics naming the
/// first refused one. Returns how many were checked.
pub fn assert_requests_valid(pds: &FakePds) -> usize {
    let mut items = vec![];
    for s in pds.requests() {
        match s.path.as_str() {
            "/xrpc/com.atproto.repo.createRecord" => items.push(Check::Input("com.atproto.repo.createRecord", s.json())),
            "/xrpc/com.atproto.server.createSession" => items.push(Check::Input("com.atproto.server.createSession", s.json())),
            _ => {}
        }
    }
    for (i, v) in check_lexicon(&items).into_iter().enumerate() {
        if let Err(e) = v {
            panic!("the lexicon refuses request {i} ({:?}): {e}", items[i]);
        }
    }
    items.len()
}
