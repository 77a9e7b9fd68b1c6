//! `meta_audiences` against a fake Graph API on 127.0.0.1: every request is checked against
//! Meta's own description of the CustomAudience node (`../shared/vendor-specs/meta/`,
//! through `enlace_kit::testing::graph`), and the `users` payload, which that description
//! only calls `Object`, against the shape written below from Meta's Custom Audiences guide.

use serde_json::{Map, Value, json};

use enlace_core::audience::{AudienceRemoval, sha256_hex};
use enlace_core::{ConnectorError, Credentials, ErrorClass, Secret};
use enlace_kit::testing::graph::GraphSpec;
use enlace_kit::testing::{FakeVendor, Reply, Seen, ctx};

use crate::*;

const AUD: &str = "23851234567890123";
const TOKEN: &str = "EAAB-system-user-token";

fn creds() -> Credentials {
    Credentials::Bearer { token: Secret::new(TOKEN) }
}

fn dir() -> &'static str {
    env!("CARGO_MANIFEST_DIR")
}

/// The multi-key identifiers of Meta's "Customer File Custom Audiences" guide (the `schema`
/// of a multi-key payload), and the single-key schemas it lists.
const MULTI_KEYS: [&str; 15] =
    ["EXTERN_ID", "EMAIL", "PHONE", "GEN", "DOBY", "DOBM", "DOBD", "LN", "FN", "FI", "CT", "ST", "ZIP", "MADID", "COUNTRY"];
const SINGLE_KEYS: [&str; 3] = ["EMAIL_SHA256", "PHONE_SHA256", "MOBILE_ADVERTISER_ID"];

/// The `payload` and `session` of `POST/DELETE /{custom-audience-id}/users`, as Meta's guide
/// documents them: `payload: {schema: KEY | [KEY...], data: [value...] | [[value...]...]}`,
/// at most 10,000 rows, every identifier but `EXTERN_ID`/`MADID` SHA-256 hex (or empty when
/// the person has none); `session: {session_id: int, batch_seq: int >= 1, last_batch_flag:
/// bool, estimated_num_total?: int}`. Nothing else.
fn check_users_payload(params: &Map<String, Value>) -> Result<(), String> {
    let payload = params.get("payload").and_then(Value::as_object).ok_or("`payload` is required and is an object")?;
    for k in payload.keys() {
        if !["schema", "data", "app_ids", "page_ids"].contains(&k.as_str()) {
            return Err(format!("`payload.{k}` is not documented"));
        }
    }
    let is_hash = |v: &Value| {
        v.as_str().is_some_and(|s| s.is_empty() || (s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())))
    };
    let data = payload.get("data").and_then(Value::as_array).ok_or("`payload.data` is required and is a list")?;
    if data.is_empty() || data.len() > 10_000 {
        return Err(format!("`payload.data` has {} rows; 1 to 10,000 are taken", data.len()));
    }
    match payload.get("schema") {
        Some(Value::String(k)) if SINGLE_KEYS.contains(&k.as_str()) => {
            if !data.iter().all(is_hash) {
                return Err("a single-key payload's data are SHA-256 hex strings".into());
            }
        }
        Some(Value::Array(keys)) => {
            if keys.is_empty() {
                return Err("`payload.schema` is empty".into());
            }
            for k in keys {
                if !k.as_str().is_some_and(|k| MULTI_KEYS.contains(&k)) {
                    return Err(format!("`payload.schema` has {k}, which is not a multi-key identifier"));
                }
            }
            for (i, row) in data.iter().enumerate() {
                let row = row.as_array().ok_or(format!("`payload.data[{i}]` is not a list"))?;
                if row.len() != keys.len() {
                    return Err(format!("`payload.data[{i}]` has {} values for {} keys", row.len(), keys.len()));
                }
                for (k, v) in keys.iter().zip(row) {
                    let hashed = !matches!(k.as_str(), Some("EXTERN_ID" | "MADID"));
                    if hashed && !is_hash(v) {
                        return Err(format!("`payload.data[{i}]` has {v} for {k}: not SHA-256 hex"));
                    }
                }
                if row.iter().all(|v| v.as_str() == Some("")) {
                    return Err(format!("`payload.data[{i}]` is empty"));
                }
            }
        }
        other => return Err(format!("`payload.schema` is {other:?}: a multi-key list or a single-key name")),
    }
    if let Some(s) = params.get("session") {
        let s = s.as_object().ok_or("`session` is an object")?;
        for k in s.keys() {
            if !["session_id", "batch_seq", "last_batch_flag", "estimated_num_total"].contains(&k.as_str()) {
                return Err(format!("`session.{k}` is not documented"));
            }
        }
        if s.get("session_id").and_then(Value::as_u64).filter(|n| *n > 0).is_none() {
            return Err("`session.session_id` is a positive integer".into());
        }
        if s.get("batch_seq").and_then(Value::as_u64).filter(|n| *n >= 1).is_none() {
            return Err("`session.batch_seq` is an integer from 1".into());
        }
        if !s.get("last_batch_flag").is_some_and(Value::is_boolean) {
            return Err("`session.last_batch_flag` is a boolean".into());
        }
        if s.get("estimated_num_total").is_some_and(|v| v.as_u64().is_none()) {
            return Err("`session.estimated_num_total` is an integer".into());
        }
    }
    Ok(())
}

/// A request to the users edge, checked whole: the route, the token, the parameters against
/// Meta's description, the payload against the guide.
fn check_users_request(spec: &GraphSpec, r: &Seen, method: &str) -> Result<(), String> {
    if r.path != format!("/{AUD}/users") {
        return Err(format!("unexpected path {}", r.path));
    }
    if r.header("authorization") != Some(format!("Bearer {TOKEN}").as_str()) {
        return Err("no bearer token".into());
    }
    let body = r.json();
    let params = body.as_object().ok_or("the body is not a JSON object")?;
    spec.check("CustomAudience", method, "users", params).map_err(|e| e.join("; "))?;
    check_users_payload(params)
}

#[tokio::test]
async fn adds_one_person_hashed_as_meta_documents() {
    let v = FakeVendor::start().await;
    v.on("POST", &format!("/{AUD}/users"), [Reply::recorded(dir(), "users_added.json")]);
    let c = connector_at(&v.url());
    let input = json!({"audience_id": AUD, "email": "  John_Smith@gmail.com ", "phone": "+1 (650) 555-1212", "first_name": "Mary", "country": "US"});
    let out = c.action("add_users").unwrap().call(&ctx(creds()), input).await.unwrap();
    assert_eq!(out["audience_id"], AUD);
    assert_eq!(out["num_received"], 1);
    assert_eq!(out["batches"], 1);
    let seen = v.requests();
    assert_eq!(seen.len(), 1);
    let spec = GraphSpec::load(&["CustomAudience"]);
    check_users_request(&spec, &seen[0], "POST").unwrap();
    let body = seen[0].json();
    // Meta's own vectors: John_Smith@gmail.com, (650)555-1212 in the US, Mary.
    assert_eq!(body["payload"]["schema"], json!(["EMAIL", "PHONE", "FN", "COUNTRY"]));
    assert_eq!(
        body["payload"]["data"],
        json!([[
            "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f",
            "e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176",
            "6915771be1c5aa0c886870b6951b03d7eafc121fea0e80a5ea83beb7c449f4ec",
            sha256_hex("us")
        ]])
    );
    assert_eq!(body["session"]["batch_seq"], 1);
    assert_eq!(body["session"]["last_batch_flag"], true);
    assert_eq!(body["session"]["session_id"], session_id("run_1:step"));
    // No clear identifier left the process.
    let text = String::from_utf8_lossy(&seen[0].body).to_lowercase();
    assert!(!text.contains("john_smith") && !text.contains("gmail") && !text.contains("mary"), "{text}");
}

#[tokio::test]
async fn a_long_list_is_one_session_of_batches_of_at_most_10000() {
    let v = FakeVendor::start().await;
    v.on("POST", &format!("/{AUD}/users"), [Reply::recorded(dir(), "users_added.json")]);
    let c = connector_at(&v.url());
    let users: Vec<Value> = (0..25_001)
        .map(|i| {
            if i % 2 == 0 {
                json!({"email": format!("p{i}@example.com")})
            } else {
                json!({"email": format!("p{i}@example.com"), "phone": format!("+1415555{:04}", i % 10_000)})
            }
        })
        .collect();
    let out = c.action("add_users").unwrap().call(&ctx(creds()), json!({"audience_id": AUD, "users": users})).await.unwrap();
    assert_eq!(out["batches"], 3);
    let seen = v.requests();
    assert_eq!(seen.len(), 3);
    let spec = GraphSpec::load(&["CustomAudience"]);
    let mut rows = 0;
    for (i, r) in seen.iter().enumerate() {
        check_users_request(&spec, r, "POST").unwrap();
        let b = r.json();
        assert_eq!(b["payload"]["schema"], json!(["EMAIL", "PHONE"]));
        assert_eq!(b["session"]["session_id"], seen[0].json()["session"]["session_id"]);
        assert_eq!(b["session"]["batch_seq"], i + 1);
        assert_eq!(b["session"]["last_batch_flag"], i == 2);
        assert_eq!(b["session"]["estimated_num_total"], 25_001);
        rows += b["payload"]["data"].as_array().unwrap().len();
    }
    assert_eq!(seen[0].json()["payload"]["data"].as_array().unwrap().len(), 10_000);
    assert_eq!(rows, 25_001);
    // A person without a phone has an empty value in that column.
    assert_eq!(seen[0].json()["payload"]["data"][0][1], "");
    assert_eq!(seen[0].json()["payload"]["data"][1][1], sha256_hex("14155550001"));
}

#[tokio::test]
async fn removes_by_the_hashes_the_membership_kept() {
    let v = FakeVendor::start().await;
    v.on("DELETE", &format!("/{AUD}/users"), [Reply::recorded(dir(), "users_added.json")]);
    let c = connector_at(&v.url());
    let removal = AudienceRemoval {
        audience: json!(AUD),
        email_sha256: Some(sha256_hex("john_smith@gmail.com")),
        phone_sha256: Some(sha256_hex("16505551212")),
    };
    let out = c.action("remove_users").unwrap().call(&ctx(creds()), serde_json::to_value(&removal).unwrap()).await.unwrap();
    assert_eq!(out["audience_id"], AUD);
    let seen = v.requests();
    let spec = GraphSpec::load(&["CustomAudience"]);
    check_users_request(&spec, &seen[0], "DELETE").unwrap();
    assert_eq!(
        seen[0].json()["payload"],
        json!({"schema": ["EMAIL", "PHONE"], "data": [[sha256_hex("john_smith@gmail.com"), sha256_hex("16505551212")]]})
    );
}

#[test]
fn the_check_rejects_a_wrong_request() {
    let spec = GraphSpec::load(&["CustomAudience"]);
    let good = json!({"payload": {"schema": ["EMAIL"], "data": [[sha256_hex("a@b.c")]]}});
    assert_eq!(spec.check("CustomAudience", "POST", "users", good.as_object().unwrap()), Ok(()));
    assert_eq!(check_users_payload(good.as_object().unwrap()), Ok(()));
    // A parameter Meta does not list, and a scalar of the wrong type.
    let wrong = json!({"payload": {"schema": ["EMAIL"], "data": [["x"]]}, "users": [], "namespace": 5});
    let errs = spec.check("CustomAudience", "POST", "users", wrong.as_object().unwrap()).unwrap_err();
    assert_eq!(errs.len(), 2, "{errs:?}");
    // Clear values, an unknown key, a short row: the payload check refuses each.
    for bad in [
        json!({"payload": {"schema": ["EMAIL"], "data": [["john@example.com"]]}}),
        json!({"payload": {"schema": ["EMAIL_HASH"], "data": [[sha256_hex("a@b.c")]]}}),
        json!({"payload": {"schema": ["EMAIL", "PHONE"], "data": [[sha256_hex("a@b.c")]]}}),
        json!({"payload": {"schema": ["EMAIL"], "data": [[sha256_hex("a@b.c")]]}, "session": {"session_id": 1, "batch_seq": 0, "last_batch_flag": true}}),
    ] {
        assert!(check_users_payload(bad.as_object().unwrap()).is_err(), "{bad}");
    }
    // No such call in Meta's description.
    assert!(spec.check("CustomAudience", "PUT", "users", &Map::new()).is_err());
}

#[tokio::test]
async fn bad_input_names_the_field_before_any_call() {
    let c = connector_at("http://127.0.0.1:9");
    let a = c.action("add_users").unwrap();
    for (input, path) in [
        (json!({"audience_id": "act_123", "email": "a@b.c"}), "audience_id"),
        (json!({"audience_id": AUD, "phone": "+14155552671"}), "email"),
        (json!({"audience_id": AUD, "email": "a@b.c", "phone": "(650) 555-1212"}), "phone"),
        (json!({"audience_id": AUD, "email": "a@b.c", "users": [{"email": "c@d.e"}]}), "users"),
        (json!({"audience_id": AUD, "users": [{"email": "c@d.e"}, {"email": "not an email"}]}), "users[1].email"),
        (json!({"audience_id": AUD, "users": []}), "users"),
    ] {
        match a.call(&ctx(creds()), input.clone()).await {
            Err(ConnectorError::BadInput { path: p, message }) => assert_eq!(p, path, "{input}: {message}"),
            other => panic!("{input}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn graph_errors_are_classified() {
    let v = FakeVendor::start().await;
    let path = format!("/{AUD}/users");
    v.on("POST", &path, [Reply::recorded(dir(), "token_expired.json"), Reply::recorded(dir(), "throttled.json")]);
    let c = connector_at(&v.url());
    let input = json!({"audience_id": AUD, "email": "a@example.com"});
    let e = c.action("add_users").unwrap().call(&ctx(creds()), input.clone()).await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::Auth, "{e}");
    assert!(e.to_string().contains("190"), "{e}");
    let e = c.action("add_users").unwrap().call(&ctx(creds()), input).await.unwrap_err();
    match e {
        // `estimated_time_to_regain_access` is 5 minutes.
        ConnectorError::RateLimited { retry_after, .. } => assert_eq!(retry_after, Some(std::time::Duration::from_secs(300))),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_manifest_declares_the_audience_and_the_ads_channel() {
    let c = connector();
    let add = c.action("add_users").unwrap().spec();
    let reach = add.reaches.as_ref().unwrap();
    assert_eq!(reach.channel, "ads");
    assert_eq!(reach.recipients(&json!({"users": [{"email": "A@x.org"}, {"email": "b@x.org"}]})), vec!["a@x.org", "b@x.org"]);
    assert!(matches!(add.audience, Some(enlace_core::audience::AudienceSpec::Adds { hashing: enlace_core::audience::Hashing::Meta, .. })));
    assert!(c.action("remove_users").unwrap().spec().reaches.is_none(), "a removal is never held back by the send policy");
}
