//! `google_ads_audiences` against a fake Google Ads API on 127.0.0.1. Every request body is
//! parsed strictly as Google's own proto request message (the protos of
//! `../shared/vendor-specs/google-ads/protos`), with the path's fields put in as Google's HTTP
//! transcoding does, by `check_proto.py` beside this crate: grpc_tools.protoc compiles the
//! protos, protobuf's `json_format.Parse` refuses unknown fields and bad enum values, and the
//! `REQUIRED` fields (the `google.api.field_behavior` annotation, which parsing does not
//! enforce) are checked separately, recursively. Python's grpcio-tools was chosen over
//! protox + prost-reflect: a prebuilt wheel installed in seconds by `.ci/run`, where the Rust
//! pair adds a protobuf compiler to every build on a 2-core CI.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use enlace_core::audience::{AudienceRemoval, sha256_hex};
use enlace_core::{ConnectorError, Credentials, ErrorClass, Secret};
use enlace_kit::testing::graph::vendor_specs_dir;
use enlace_kit::testing::{FakeVendor, Reply, Seen, ctx};

use crate::*;

const CID: &str = "1234567890";
const MANAGER: &str = "1112223333";
const DEV: &str = "dev-token-123";

fn creds() -> Credentials {
    Credentials::OAuth2 { access_token: Secret::new("ya29.token") }
}

/// Each body parsed as its message (a name in `google.ads.googleads.v25.services`), with
/// the path's fields put in: `Ok` or the parser's refusal.
/// A body to check: the message's name, the JSON body, the path's fields.
type Body<'a> = (&'a str, Value, Vec<(&'a str, String)>);

fn parse_all(requests: &[Body]) -> Vec<Result<(), String>> {
    let protos = vendor_specs_dir().join("google-ads/protos");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("check_proto.py");
    let mut child = Command::new("python3")
        .arg(&script)
        .arg(&protos)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs the proto check (check_proto.py)");
    let mut input = String::new();
    for (name, body, path) in requests {
        let mut body = body.clone();
        for (k, v) in path {
            body[*k] = json!(v);
        }
        input.push_str(&json!({"message": name, "body": body}).to_string());
        input.push('\n');
    }
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "check_proto.py failed; it needs `python3 -m pip install grpcio-tools==1.84.0` (.ci/run installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verdicts: Vec<Result<(), String>> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            if v["ok"] == true { Ok(()) } else { Err(v["error"].as_str().unwrap_or("").to_string()) }
        })
        .collect();
    assert_eq!(verdicts.len(), requests.len(), "one verdict per request");
    verdicts
}

fn parse(name: &str, body: &Value, path_fields: &[(&str, &str)]) -> Result<(), String> {
    parse_all(&[(name, body.clone(), path_fields.iter().map(|(k, v)| (*k, v.to_string())).collect())]).remove(0)
}

/// Requests to the API checked whole: route and headers here, each body as its proto
/// message by the parser.
fn check(requests: &[Seen]) -> Result<(), String> {
    let mut bodies = vec![];
    for r in requests {
        if r.header("authorization") != Some("Bearer ya29.token") {
            return Err("no OAuth2 token".into());
        }
        if r.header("developer-token") != Some(DEV) {
            return Err("no developer-token".into());
        }
        let create = format!("/v25/customers/{CID}/offlineUserDataJobs:create");
        let rest = r.path.strip_prefix("/v25/").ok_or("not a v25 path")?;
        if r.path == create {
            bodies.push(("CreateOfflineUserDataJobRequest", r.json(), vec![("customerId", CID.to_string())]));
        } else if let Some(job) = rest.strip_suffix(":addOperations") {
            bodies.push(("AddOfflineUserDataJobOperationsRequest", r.json(), vec![("resourceName", job.to_string())]));
        } else if let Some(job) = rest.strip_suffix(":run") {
            bodies.push(("RunOfflineUserDataJobRequest", r.json(), vec![("resourceName", job.to_string())]));
        } else {
            return Err(format!("no such route {}", r.path));
        }
    }
    for (r, v) in requests.iter().zip(parse_all(&bodies)) {
        v.map_err(|e| format!("{}: {e}", r.path))?;
    }
    Ok(())
}

fn job(n: u32) -> String {
    format!("customers/{CID}/offlineUserDataJobs/{n}")
}

async fn google() -> FakeVendor {
    let v = FakeVendor::start().await;
    let dir = env!("CARGO_MANIFEST_DIR");
    v.on(
        "POST",
        &format!("/v25/customers/{CID}/offlineUserDataJobs:create"),
        [Reply::recorded(dir, "job_created.json"), Reply::json(200, json!({"resourceName": job(556)}))],
    );
    for n in [555, 556] {
        v.on("POST", &format!("/v25/{}:addOperations", job(n)), [Reply::json(200, json!({}))]);
        v.on("POST", &format!("/v25/{}:run", job(n)), [Reply::recorded(dir, "job_running.json")]);
    }
    v
}

#[tokio::test]
async fn people_with_different_consent_go_in_different_jobs() {
    let v = google().await;
    let c = connector_at(&v.url(), Some(DEV));
    let input = json!({
        "audience": {"customer_id": "123-456-7890", "user_list_id": "987654321", "login_customer_id": "111-222-3333"},
        "users": [
            {"email": " Customer@Example.com ", "phone": "+1 212-565-0000"},
            {"email": "eu@example.com", "first_name": "John", "last_name": "Doe", "country_code": "us", "postal_code": "10011",
             "consent": {"ad_user_data": "GRANTED", "ad_personalization": "DENIED"}},
            {"email": "b@example.com"}
        ]
    });
    let out = c.action("add_users").unwrap().call(&ctx(creds()), input).await.unwrap();
    assert_eq!(out["user_list"], "customers/1234567890/userLists/987654321");
    assert_eq!(out["jobs"].as_array().unwrap().len(), 2, "{out}");
    let seen = v.requests();
    assert_eq!(seen.len(), 6, "create, add, run per job");
    check(&seen).unwrap();
    for r in &seen {
        assert_eq!(r.header("login-customer-id"), Some(MANAGER));
    }
    // Job 1: both granted (the step's default), two people; job 2: the EEA person.
    let first = seen[0].json();
    assert_eq!(first["job"]["type"], "CUSTOMER_MATCH_USER_LIST");
    assert_eq!(first["job"]["customerMatchUserListMetadata"]["userList"], "customers/1234567890/userLists/987654321");
    assert_eq!(first["job"]["customerMatchUserListMetadata"]["consent"], json!({"adUserData": "GRANTED", "adPersonalization": "GRANTED"}));
    let ops = seen[1].json()["operations"].clone();
    assert_eq!(ops.as_array().unwrap().len(), 2);
    assert_eq!(
        ops[0]["create"]["userIdentifiers"],
        json!([
            {"hashedEmail": sha256_hex("customer@example.com")},
            {"hashedPhoneNumber": sha256_hex("+12125650000")}
        ])
    );
    assert_eq!(seen[2].path, format!("/v25/{}:run", job(555)));
    let second = seen[3].json();
    assert_eq!(second["job"]["customerMatchUserListMetadata"]["consent"], json!({"adUserData": "GRANTED", "adPersonalization": "DENIED"}));
    let ops = seen[4].json()["operations"].clone();
    assert_eq!(
        ops[0]["create"]["userIdentifiers"][1],
        json!({"addressInfo": {"hashedFirstName": sha256_hex("john"), "hashedLastName": sha256_hex("doe"), "countryCode": "US", "postalCode": "10011"}})
    );
    assert_eq!(seen[5].path, format!("/v25/{}:run", job(556)));
}

#[tokio::test]
async fn removes_by_the_hashes_the_membership_kept() {
    let v = google().await;
    let c = connector_at(&v.url(), Some(DEV));
    let removal = AudienceRemoval {
        audience: json!({"customer_id": CID, "user_list_id": "987654321"}),
        email_sha256: Some(sha256_hex("ada@example.com")),
        phone_sha256: Some(sha256_hex("+14155552671")),
    };
    let out = c.action("remove_users").unwrap().call(&ctx(creds()), serde_json::to_value(&removal).unwrap()).await.unwrap();
    assert_eq!(out["jobs"][0]["resource_name"], job(555));
    let seen = v.requests();
    assert_eq!(seen.len(), 3);
    check(&seen).unwrap();
    for r in &seen {
        assert_eq!(r.header("login-customer-id"), None);
    }
    assert!(seen[0].json()["job"]["customerMatchUserListMetadata"].get("consent").is_none());
    assert_eq!(
        seen[1].json()["operations"],
        json!([{"remove": {"userIdentifiers": [{"hashedEmail": sha256_hex("ada@example.com")}, {"hashedPhoneNumber": sha256_hex("+14155552671")}]}}])
    );
}

#[test]
fn the_strict_parse_rejects_wrong_bodies() {
    let ops = json!({"operations": [{"create": {"userIdentifiers": [{"hashedEmail": "ab"}]}}]});
    parse("AddOfflineUserDataJobOperationsRequest", &ops, &[("resourceName", &job(1))]).unwrap();
    // An unknown field (a typo), a wrong enum value, a missing REQUIRED field, a wrong type.
    let typo = json!({"operations": [{"create": {"userIdentifiers": [{"hashedMail": "ab"}]}}]});
    let e = parse("AddOfflineUserDataJobOperationsRequest", &typo, &[("resourceName", &job(1))]).unwrap_err();
    assert!(e.contains("hashedMail"), "{e}");
    let consent = json!({"job": {"type": "CUSTOMER_MATCH_USER_LIST", "customerMatchUserListMetadata": {"userList": "x", "consent": {"adUserData": "MAYBE"}}}});
    assert!(parse("CreateOfflineUserDataJobRequest", &consent, &[("customerId", CID)]).is_err());
    let no_ops = json!({"enablePartialFailure": true});
    let e = parse("AddOfflineUserDataJobOperationsRequest", &no_ops, &[("resourceName", &job(1))]).unwrap_err();
    assert!(e.contains("operations is REQUIRED"), "{e}");
    // The path's field is REQUIRED too: a body alone is not a request.
    let e = parse("RunOfflineUserDataJobRequest", &json!({}), &[]).unwrap_err();
    assert!(e.contains("resource_name is REQUIRED"), "{e}");
    let no_job = json!({});
    let e = parse("CreateOfflineUserDataJobRequest", &no_job, &[("customerId", CID)]).unwrap_err();
    assert!(e.contains("job is REQUIRED"), "{e}");
    let wrong_type = json!({"operations": [{"remove_all": "yes"}]});
    assert!(parse("AddOfflineUserDataJobOperationsRequest", &wrong_type, &[("resourceName", &job(1))]).is_err());
    // Our own bodies pass.
    let list = List { customer_id: CID.into(), user_list_id: "9".into(), login_customer_id: None };
    parse("CreateOfflineUserDataJobRequest", &create_body(&list, Some(Consent::default())), &[("customerId", CID)]).unwrap();
}

#[tokio::test]
async fn bad_input_names_the_field_before_any_call() {
    let c = connector_at("http://127.0.0.1:9", Some(DEV));
    let a = c.action("add_users").unwrap();
    let aud = json!({"customer_id": CID, "user_list_id": "9"});
    for (input, path) in [
        (json!({"audience": {"customer_id": "12345", "user_list_id": "9"}, "email": "a@b.c"}), "audience.customer_id"),
        (json!({"audience": {"customer_id": CID, "user_list_id": "list"}, "email": "a@b.c"}), "audience.user_list_id"),
        (json!({"audience": aud.clone(), "phone": "+14155552671"}), "email"),
        (json!({"audience": aud.clone(), "email": "a@b.c", "phone": "4155552671"}), "phone"),
        (json!({"audience": aud.clone(), "email": "a@b.c", "first_name": "Ana"}), "last_name"),
        (
            json!({"audience": aud, "users": [{"email": "a@b.c"}, {"email": "x", "consent": {"ad_user_data": "GRANTED", "ad_personalization": "GRANTED"}}]}),
            "users[1].email",
        ),
    ] {
        match a.call(&ctx(creds()), input.clone()).await {
            Err(ConnectorError::BadInput { path: p, message }) => assert_eq!(p, path, "{input}: {message}"),
            other => panic!("{input}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn errors_are_classified_and_a_missing_developer_token_says_how_to_fix_it() {
    let v = FakeVendor::start().await;
    let dir = env!("CARGO_MANIFEST_DIR");
    v.on("POST", &format!("/v25/customers/{CID}/offlineUserDataJobs:create"), [Reply::recorded(dir, "developer_token_missing.json")]);
    let input = json!({"audience": {"customer_id": CID, "user_list_id": "9"}, "email": "a@example.com"});
    let e = connector_at(&v.url(), None).action("add_users").unwrap().call(&ctx(creds()), input.clone()).await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::Auth, "{e}");
    assert!(e.to_string().contains(DEVELOPER_TOKEN_ENV), "{e}");
    assert!(v.requests()[0].header("developer-token").is_none());
    // With a token, Google's own refusal keeps its class and names Google's error code.
    let e = connector_at(&v.url(), Some(DEV)).action("add_users").unwrap().call(&ctx(creds()), input).await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::Permanent, "{e}");
    assert!(e.to_string().contains("DEVELOPER_TOKEN_PARAMETER_MISSING"), "{e}");
}

#[test]
fn the_manifest_declares_the_audience_and_the_ads_channel() {
    let c = connector_at(API_BASE, Some(DEV));
    let add = c.action("add_users").unwrap().spec();
    assert_eq!(add.reaches.as_ref().unwrap().channel, "ads");
    assert!(matches!(
        add.audience,
        Some(enlace_core::audience::AudienceSpec::Adds { hashing: enlace_core::audience::Hashing::Standard, .. })
    ));
    assert!(c.action("remove_users").unwrap().spec().reaches.is_none());
}
