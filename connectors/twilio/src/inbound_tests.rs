//! Twilio's signature against the values Twilio publishes in its own request validator's
//! tests (twilio-python `tests/unit/test_request_validator.py`: token `12345`, the URL
//! `https://mycompany.com/myapp.php?foo=1&bar=2`), the keywords, the two inbound triggers
//! against a recording contact store, and `send_sms` refusing a number that opted out
//! without calling Twilio.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use bytes::Bytes;
use http::HeaderMap;
use serde_json::{Value, json};

use enlace_core::contacts::{
    ConsentStatus, ContactDetail, ContactKey, ContactOp, ContactOutcome, ContactsBackend, ContactsError, Evidence, NewConsent,
    PhoneConsentOutcome, PhoneDecision, WriteContext,
};
use enlace_core::http::HttpTransport;
use enlace_core::{ActionContext, BoxFuture, ConnectorError, Credentials, ErrorClass, Extensions, InboundContext, InboundRequest, Secret};
use enlace_kit::{ReqwestTransport, TransportConfig};

use crate::inbound::{EMPTY_TWIML, keyword_consent, signature, verify};
use crate::{connector, connector_at};

const DOC_URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";
const SID: &str = "AC0123456789abcdef0123456789abcdef";
const TOKEN: &str = "auth-token-5ecr3t";

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn doc_params() -> Vec<(String, String)> {
    pairs(&[
        ("CallSid", "CA1234567890ABCDE"),
        ("Digits", "1234"),
        ("From", "+14158675309"),
        ("To", "+18005551212"),
        ("Caller", "+14158675309"),
    ])
}

#[test]
fn the_signature_matches_twilios_published_values() {
    assert_eq!(signature("12345", DOC_URL, &doc_params()), "RSOYDt4T1cUTdK1PDd93/VVr8B8=");
    // A repeated name: its values sorted too.
    let dup = pairs(&[("Sid", "CA123"), ("SidAccount", "AC123"), ("Digits", "5678"), ("Digits", "1234")]);
    assert_eq!(signature("12345", DOC_URL, &dup), "IK+Dwps556ElfBT0I3Rgjkr1wJU=");
    assert!(verify("12345", DOC_URL, &doc_params(), "RSOYDt4T1cUTdK1PDd93/VVr8B8="));
    // The order Twilio sends the parameters in does not matter.
    let mut shuffled = doc_params();
    shuffled.reverse();
    assert!(verify("12345", DOC_URL, &shuffled, "RSOYDt4T1cUTdK1PDd93/VVr8B8="));
}

#[test]
fn the_signature_is_checked_with_and_without_the_port() {
    // Twilio signed the URL without the port Enlace sees.
    assert!(verify("12345", "https://mycompany.com:1234/myapp.php?foo=1&bar=2", &doc_params(), "RSOYDt4T1cUTdK1PDd93/VVr8B8="));
    // Twilio signed with the scheme's default port, Enlace's URL has none.
    assert!(verify("12345", DOC_URL, &doc_params(), "kvajT1Ptam85bY51eRf/AJRuM3w="));
    assert!(verify("12345", "http://mycompany.com/myapp.php?foo=1&bar=2", &doc_params(), "0ZXoZLH/DfblKGATFgpif+LLRf4="));
    // Signed with the port, seen with it.
    assert!(verify("12345", "http://mycompany.com:1234/myapp.php?foo=1&bar=2", &doc_params(), "Zmvh+3yNM1Phv2jhDCwEM3q5ebU="));
}

#[test]
fn a_wrong_signature_token_url_or_parameter_fails() {
    let good = "RSOYDt4T1cUTdK1PDd93/VVr8B8=";
    assert!(!verify("12346", DOC_URL, &doc_params(), good), "another token");
    assert!(!verify("12345", "https://mycompany.com/myapp.php?foo=1&bar=3", &doc_params(), good), "another query");
    let mut tampered = doc_params();
    tampered[1].1 = "1235".into();
    assert!(!verify("12345", DOC_URL, &tampered, good), "a changed parameter");
    let mut added = doc_params();
    added.push(("Body".into(), "STOP".into()));
    assert!(!verify("12345", DOC_URL, &added, good), "an added parameter");
    assert!(!verify("12345", DOC_URL, &doc_params(), "RSOYDt4T1cUTdK1PDd93/VVr8B8"), "truncated");
    assert!(!verify("12345", DOC_URL, &doc_params(), "not base64!"), "not base64");
    assert!(!verify("12345", DOC_URL, &doc_params(), ""), "empty");
}

#[test]
fn keywords_are_whole_body_trimmed_and_any_case() {
    for k in ["STOP", "stop", " Stop \n", "STOPALL", "unsubscribe", "Cancel", "END", "quit", "OPTOUT", "revoke"] {
        assert_eq!(keyword_consent(k), Some(ConsentStatus::Withdrawn), "{k:?}");
    }
    for k in ["START", "unstop", " yes "] {
        assert_eq!(keyword_consent(k), Some(ConsentStatus::Granted), "{k:?}");
    }
    for k in ["STOP please", "please stop", "S T O P", "", "STOP!", "yes I will come"] {
        assert_eq!(keyword_consent(k), None, "{k:?}");
    }
}

/// A contact store that records phone decisions and answers consent lookups with `decision`.
#[derive(Default)]
struct Store {
    recorded: Mutex<Vec<(WriteContext, String, NewConsent)>>,
    asked: Mutex<Vec<String>>,
    decision: Mutex<Option<Result<Option<PhoneDecision>, ContactsError>>>,
}

impl ContactsBackend for Store {
    fn apply<'a>(&'a self, _w: WriteContext, _op: ContactOp) -> BoxFuture<'a, Result<ContactOutcome, ContactsError>> {
        Box::pin(async { panic!("no contact change expected") })
    }
    fn find<'a>(&'a self, _key: ContactKey) -> BoxFuture<'a, Result<Option<ContactDetail>, ContactsError>> {
        Box::pin(async { Ok(None) })
    }
    fn record_phone_consent<'a>(
        &'a self,
        w: WriteContext,
        phone: String,
        consent: NewConsent,
    ) -> BoxFuture<'a, Result<PhoneConsentOutcome, ContactsError>> {
        self.recorded.lock().unwrap().push((w, phone.clone(), consent));
        Box::pin(async move { Ok(PhoneConsentOutcome { phone, contacts: vec!["c-1".into()] }) })
    }
    fn phone_consent<'a>(
        &'a self,
        phone: String,
        _purpose: String,
        _channel: String,
    ) -> BoxFuture<'a, Result<Option<PhoneDecision>, ContactsError>> {
        self.asked.lock().unwrap().push(phone);
        let d = self.decision.lock().unwrap().clone().unwrap_or(Ok(None));
        Box::pin(async move { d })
    }
}

fn basic() -> Credentials {
    Credentials::Basic { username: SID.into(), password: Secret::new(TOKEN) }
}

const HOOK: &str = "https://enlace.example.com/hooks/sms?site=eu";

fn signed(url: &str, params: &[(&str, &str)], token: &str) -> InboundRequest {
    let p = pairs(params);
    let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(&p).finish();
    let mut headers = HeaderMap::new();
    headers.insert("content-type", "application/x-www-form-urlencoded".parse().unwrap());
    headers.insert("x-twilio-signature", signature(token, url, &p).parse().unwrap());
    InboundRequest { url: url.into(), headers, body: Bytes::from(body), received_at: 1_776_159_062_120 }
}

fn sms(body: &str) -> Vec<(&'static str, String)> {
    vec![
        ("MessageSid", "SM11111111111111111111111111111111".into()),
        ("AccountSid", SID.into()),
        ("From", "+14155552671".into()),
        ("To", "+14155550100".into()),
        ("Body", body.into()),
        ("NumMedia", "1".into()),
        ("MediaUrl0", "https://api.twilio.com/media/ME1".into()),
        ("MediaContentType0", "image/jpeg".into()),
    ]
}

fn borrowed<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

fn inbound_ctx(store: &Arc<Store>, credentials: Credentials) -> InboundContext {
    InboundContext {
        credentials,
        extensions: Extensions { contacts: Some(store.clone() as Arc<dyn ContactsBackend>), ..Default::default() },
    }
}

async fn receive(trigger: &str, ctx: &InboundContext, req: &InboundRequest) -> Result<enlace_core::InboundEvent, ConnectorError> {
    let c = connector();
    c.inbound_trigger(trigger).expect("registered").receive(ctx, req).await
}

#[tokio::test]
async fn a_signed_inbound_sms_becomes_the_event_with_an_empty_twiml_answer() {
    let store = Arc::new(Store::default());
    let params = sms("See you Thursday");
    let ev = receive("inbound_sms", &inbound_ctx(&store, basic()), &signed(HOOK, &borrowed(&params), TOKEN)).await.expect("accepted");
    assert_eq!(
        ev.event,
        json!({"From": "+14155552671", "To": "+14155550100", "Body": "See you Thursday", "MessageSid": "SM11111111111111111111111111111111",
               "AccountSid": SID, "NumMedia": "1", "MediaContentType0": "image/jpeg", "MediaUrl0": "https://api.twilio.com/media/ME1",
               "received_at": "2026-04-14T09:31:02.120Z"})
    );
    assert_eq!(ev.dedupe_key.as_deref(), Some("twilio:sms:SM11111111111111111111111111111111"));
    assert_eq!((ev.reply.status, ev.reply.content_type), (200, Some("text/xml")));
    assert_eq!(ev.reply.body, EMPTY_TWIML.as_bytes());
    assert!(store.recorded.lock().unwrap().is_empty(), "no keyword: no consent recorded");
}

#[tokio::test]
async fn a_stop_withdraws_sms_consent_with_its_evidence() {
    let store = Arc::new(Store::default());
    let params = sms("  Stop ");
    let ev = receive("inbound_sms", &inbound_ctx(&store, basic()), &signed(HOOK, &borrowed(&params), TOKEN)).await.expect("accepted");
    assert_eq!(ev.event["opt_out"], json!({"keyword": "STOP", "status": "withdrawn", "contacts": ["c-1"]}));
    {
        let recorded = store.recorded.lock().unwrap();
        assert_eq!(recorded.len(), 1);
        let (w, phone, consent) = &recorded[0];
        assert_eq!(w.op_key.as_deref(), Some("twilio:SM11111111111111111111111111111111"), "a retry records nothing twice");
        assert_eq!(phone, "+14155552671");
        assert_eq!((consent.purpose.as_str(), consent.channel.as_str(), consent.status), ("marketing", "sms", ConsentStatus::Withdrawn));
        assert_eq!(consent.evidence.source, "twilio_inbound_sms");
        assert_eq!(
            Value::Object(consent.evidence.details.clone()),
            json!({"message_sid": "SM11111111111111111111111111111111", "body": "  Stop ", "at": "2026-04-14T09:31:02.120Z"})
        );
    }

    // START grants it again; WhatsApp decisions are for the whatsapp channel.
    let mut params = sms("start");
    params[2].1 = "whatsapp:+14155552671".into();
    receive("inbound_sms", &inbound_ctx(&store, basic()), &signed(HOOK, &borrowed(&params), TOKEN)).await.expect("accepted");
    let recorded = store.recorded.lock().unwrap();
    let (_, phone, consent) = &recorded[1];
    assert_eq!((phone.as_str(), consent.channel.as_str(), consent.status), ("+14155552671", "whatsapp", ConsentStatus::Granted));
}

#[tokio::test]
async fn twilios_opt_out_type_counts_as_a_keyword() {
    let store = Arc::new(Store::default());
    let mut params = sms("arret");
    params.push(("OptOutType", "STOP".into()));
    let ev = receive("inbound_sms", &inbound_ctx(&store, basic()), &signed(HOOK, &borrowed(&params), TOKEN)).await.expect("accepted");
    assert_eq!(ev.event["opt_out"]["keyword"], "STOP");
    assert_eq!(store.recorded.lock().unwrap()[0].2.status, ConsentStatus::Withdrawn);
}

#[tokio::test]
async fn a_missing_or_wrong_signature_is_refused_and_records_nothing() {
    let store = Arc::new(Store::default());
    let params = sms("STOP");
    let ctx = inbound_ctx(&store, basic());

    let mut req = signed(HOOK, &borrowed(&params), TOKEN);
    req.headers.remove("x-twilio-signature");
    let e = receive("inbound_sms", &ctx, &req).await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::Auth);
    assert!(e.to_string().contains("X-Twilio-Signature header is missing"), "{e}");

    // Signed with another token; signed for another address than the one Enlace serves.
    let mut elsewhere = signed("https://enlace.example.com/hooks/other", &borrowed(&params), TOKEN);
    elsewhere.url = HOOK.into();
    for req in [signed(HOOK, &borrowed(&params), "another-token"), elsewhere] {
        let e = receive("inbound_sms", &ctx, &req).await.unwrap_err();
        assert_eq!(e.class(), ErrorClass::Auth);
        assert!(e.to_string().contains("does not match"), "{e}");
        assert!(!e.to_string().contains(TOKEN), "the token is never in an error");
    }
    // A body changed after signing.
    let mut req = signed(HOOK, &borrowed(&params), TOKEN);
    req.body = Bytes::from(String::from_utf8(req.body.to_vec()).unwrap().replace("STOP", "START"));
    assert_eq!(receive("inbound_sms", &ctx, &req).await.unwrap_err().class(), ErrorClass::Auth);
    assert!(store.recorded.lock().unwrap().is_empty(), "nothing recorded for a refused request");

    // A connection that is not a Twilio one.
    let e = receive("inbound_sms", &inbound_ctx(&store, Credentials::None), &signed(HOOK, &borrowed(&params), TOKEN)).await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::Auth);
    assert!(e.to_string().contains("Auth Token"), "{e}");
}

#[tokio::test]
async fn a_status_callback_keeps_the_error_code_and_answers_204() {
    let store = Arc::new(Store::default());
    let params = [
        ("MessageSid", "SM22222222222222222222222222222222"),
        ("MessageStatus", "undelivered"),
        ("SmsStatus", "undelivered"),
        ("ErrorCode", "30003"),
        ("AccountSid", SID),
        ("From", "+14155550100"),
        ("To", "+14155552671"),
    ];
    let ev = receive("status_callback", &inbound_ctx(&store, basic()), &signed(HOOK, &params, TOKEN)).await.expect("accepted");
    assert_eq!(
        ev.event,
        json!({"MessageSid": "SM22222222222222222222222222222222", "MessageStatus": "undelivered", "ErrorCode": "30003",
               "To": "+14155552671", "From": "+14155550100", "AccountSid": SID, "SmsStatus": "undelivered",
               "received_at": "2026-04-14T09:31:02.120Z"})
    );
    assert_eq!(ev.dedupe_key.as_deref(), Some("twilio:status:SM22222222222222222222222222222222:undelivered"));
    assert_eq!((ev.reply.status, ev.reply.body.len()), (204, 0));

    let e = receive("status_callback", &inbound_ctx(&store, basic()), &signed(HOOK, &params[..1], TOKEN)).await.unwrap_err();
    assert_eq!(e, ConnectorError::bad_input("MessageStatus", "Twilio's `MessageStatus` parameter is missing"));
}

#[test]
fn the_triggers_are_declared_as_webhooks_with_valid_samples() {
    let c = connector();
    for id in ["inbound_sms", "status_callback"] {
        let spec = c.manifest.trigger(id).expect("declared");
        assert_eq!(spec.kind, enlace_core::TriggerKind::Webhook);
        assert!(c.inbound_trigger(id).is_some());
        let props = spec.config_schema["properties"].as_object().unwrap();
        assert_eq!(props.keys().collect::<Vec<_>>(), ["path"]);
        assert!(props["path"]["description"].as_str().unwrap().contains("/hooks/{path}"));
        for key in ["MessageSid", "received_at"] {
            assert!(spec.sample.get(key).is_some(), "{id}: {key}");
            assert!(spec.output_schema["properties"][key]["description"].is_string(), "{id}: {key} is documented");
        }
    }
}

// --- send_sms and consent ---

async fn counting_twilio() -> (String, Arc<Mutex<usize>>) {
    let calls = Arc::new(Mutex::new(0usize));
    let c = calls.clone();
    let app = Router::new().route(
        "/2010-04-01/Accounts/{account}/Messages.json",
        post(move || {
            let c = c.clone();
            async move {
                *c.lock().unwrap() += 1;
                (
                    StatusCode::CREATED,
                    axum::Json(json!({"sid": "SM1", "status": "queued", "to": "+14155552671", "from": "+14155550100",
                                      "date_created": "Tue, 14 Apr 2026 09:30:00 +0000"})),
                )
                    .into_response()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), calls)
}

fn action_ctx(store: &Arc<Store>) -> ActionContext {
    let http: Arc<dyn HttpTransport> =
        Arc::new(ReqwestTransport::new(TransportConfig { allow_private_networks: true, ..TransportConfig::default() }).unwrap());
    ActionContext {
        run_id: "run_1".into(),
        step_key: "sms".into(),
        attempt: 1,
        idempotency_key: "run_1:sms".into(),
        credentials: basic(),
        http,
        timeout: Duration::from_secs(10),
        extensions: Extensions { contacts: Some(store.clone() as Arc<dyn ContactsBackend>), ..Default::default() },
    }
}

fn decision(status: ConsentStatus, contact: Option<&str>) -> PhoneDecision {
    let mut details = serde_json::Map::new();
    details.insert("message_sid".into(), json!("SM11111111111111111111111111111111"));
    details.insert("body".into(), json!("STOP"));
    PhoneDecision {
        phone: "+14155552671".into(),
        status,
        evidence: Evidence { source: "twilio_inbound_sms".into(), ip: None, text: None, recorded_at: 1, run_id: None, details },
        at: 1_776_159_062_120,
        contact_id: contact.map(str::to_string),
    }
}

#[tokio::test]
async fn send_sms_refuses_a_number_that_opted_out_without_calling_twilio() {
    let (base, calls) = counting_twilio().await;
    let c = connector_at(&base);
    let send = c.action("send_sms").unwrap();
    let input = json!({"to": "+1 415 555 2671", "from": "+14155550100", "body": "20% off today"});

    let store = Arc::new(Store::default());
    *store.decision.lock().unwrap() = Some(Ok(Some(decision(ConsentStatus::Withdrawn, None))));
    let e = send.call(&action_ctx(&store), input.clone()).await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::Permanent);
    let m = e.to_string();
    assert!(m.contains("+14155552671 withdrew consent to SMS") && m.contains("`marketing`"), "{m}");
    assert!(m.contains("replied `STOP`") && m.contains("SM11111111111111111111111111111111") && m.contains("suppression list"), "{m}");
    assert_eq!(*calls.lock().unwrap(), 0, "Twilio was not called");
    assert_eq!(store.asked.lock().unwrap().as_slice(), ["+14155552671"], "asked with the number in E.164");

    // A store that cannot answer: nothing is sent, the step is retried.
    *store.decision.lock().unwrap() = Some(Err(ContactsError::Unavailable("down".into())));
    let e = send.call(&action_ctx(&store), input.clone()).await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::Transient);
    assert_eq!(*calls.lock().unwrap(), 0);

    // Granted again (START), or never decided: sent.
    *store.decision.lock().unwrap() = Some(Ok(Some(decision(ConsentStatus::Granted, Some("c-1")))));
    send.call(&action_ctx(&store), input.clone()).await.expect("sent");
    *store.decision.lock().unwrap() = Some(Ok(None));
    send.call(&action_ctx(&store), input).await.expect("sent");
    assert_eq!(*calls.lock().unwrap(), 2);
}
