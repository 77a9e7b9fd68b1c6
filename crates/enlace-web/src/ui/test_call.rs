//! "Run this step for real" in the recipe editor: one real call of an action step, after a
//! confirmation that says what will happen.
//!
//! 1. `POST /ui/recipes/{id}/steps/{step}/call` without `confirm`: the draft runs up to the
//!    step as a dry run (as *Test step* does) to render the step's input with the sample;
//!    the page then names what the call will do ("This sends an email to ana@example.com
//!    through connection smtp-main"), shows the input (secrets masked) and asks. Nothing is
//!    called.
//! 2. The same with `confirm=yes` and the confirmation's one-time `call` key: the step alone
//!    runs once, for real, through the runner's normal path (its own idempotency key, the
//!    app's and the connection's rate limits, the send policy, retries off) on a throwaway
//!    store holding only the step's connection (its credentials as an action gets them; an
//!    OAuth2 token refreshed by the installation's runner) and the secrets the recipe reads.
//!    Inputs that read earlier steps get the values the dry run rendered (earlier steps are
//!    not called); inputs that read secrets keep their template, so the real value is used and
//!    the page shows it masked. The page shows the output or the error explained.
//!
//! Actions of Enlace's own store (contacts, web, social) are not offered: on a throwaway
//! store they would change nothing real. A confirmation's key is used once (a second submit
//! of the same confirmation calls nothing).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use enlace_core::ActionSpec;
use serde_json::{Map, Value, json};

use super::editor::{RecipeQuery, check, recipe_view, sample_event, steps_of, working};
use super::{Form, Role, Session, UiError, UiResult};
use crate::AppState;

/// Apps whose actions change Enlace's own store: a real call on a throwaway store would
/// change nothing, so only the dry run is offered.
pub const STORE_APPS: &[&str] = &["contacts", "web", "social", "enlace"];

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/ui/recipes/{id}/steps/{step}/call", post(call))
}

/// How long a confirmation may be answered.
const KEY_TTL_MS: i64 = 30 * 60 * 1000;

/// Confirmation keys handed out and not used yet, with when (this node's memory: a
/// confirmation is answered by the node that showed it within 30 minutes, or refused).
fn keys() -> &'static Mutex<HashMap<String, i64>> {
    static K: OnceLock<Mutex<HashMap<String, i64>>> = OnceLock::new();
    K.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Hands out a key, forgetting the expired ones.
fn remember(key: &str, now: i64) {
    let mut k = keys().lock().unwrap_or_else(|e| e.into_inner());
    k.retain(|_, at| now - *at < KEY_TTL_MS);
    k.insert(key.to_string(), now);
}

/// Takes a key back: true once, within its time.
fn redeem(key: &str, now: i64) -> bool {
    let mut k = keys().lock().unwrap_or_else(|e| e.into_inner());
    k.remove(key).is_some_and(|at| now - at < KEY_TTL_MS)
}

fn new_key() -> String {
    let mut b = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn refuse(msg: &str) -> UiError {
    UiError::new(StatusCode::BAD_REQUEST, "Not possible", msg, Some("Use the dry run (Test) instead, or fix the step first."))
}

/// The one sentence the confirmation leads with.
pub fn describe(app_name: &str, spec: &ActionSpec, app: &str, input: &Value, connection: Option<&str>) -> String {
    let via = connection.map(|c| format!(" through connection '{c}'")).unwrap_or_default();
    if let Some(reach) = &spec.reaches {
        let to = reach.recipients(input);
        let who = if to.is_empty() { "nobody (no recipient in the input)".to_string() } else { to.join(", ") };
        let what = match reach.channel.as_str() {
            "email" => "an email".to_string(),
            "sms" => "an SMS".to_string(),
            "whatsapp" => "a WhatsApp message".to_string(),
            "push" => "a push notification".to_string(),
            other => format!("a {other} message"),
        };
        return format!("This sends {what} to {who}{via}.");
    }
    if app == "http" {
        let method = input.get("method").and_then(Value::as_str).unwrap_or("GET");
        let url = input.get("url").and_then(Value::as_str).unwrap_or("(no URL)");
        return format!("This sends {method} {url}{via}.");
    }
    format!("This calls {app_name} · {} once{via}.", spec.name)
}

/// The step with every input that reads earlier steps (or anything but the trigger, vars,
/// run and secrets) replaced by its value rendered by the dry run.
fn fixed_step(step: &Value, rendered: &Value) -> Result<Value, UiError> {
    let mut out = step.clone();
    let Some(with) = step.get("with").and_then(Value::as_object) else { return Ok(out) };
    let mut fixed = Map::new();
    for (k, v) in with {
        let text = v.to_string();
        let keep = text.contains("secrets.") || !text.contains("{{");
        if keep {
            fixed.insert(k.clone(), v.clone());
            continue;
        }
        let r = rendered.get(k).cloned().unwrap_or(Value::Null);
        if r.to_string().contains("{{") {
            return Err(refuse(&format!("The input `{k}` renders to text containing `{{{{`, which would be read as a template again.")));
        }
        fixed.insert(k.clone(), r);
    }
    out["with"] = Value::Object(fixed);
    // One attempt: a test call that fails shows its error at once.
    out["retry"] = json!({"attempts": 1});
    Ok(out)
}

async fn call(State(s): State<AppState>, sess: Session, Path((id, step)): Path<(String, String)>, body: Bytes) -> UiResult {
    sess.require(Role::Editor)?;
    let form = Form::parse(&body);
    let w = working(&s, &id).await?;
    let steps = steps_of(&w.source);
    let Some(i) = steps.iter().position(|st| st.get("id").and_then(Value::as_str) == Some(step.as_str())) else {
        return Err(UiError::not_found(&format!("The recipe has no step `{step}`.")));
    };
    let st = steps[i].clone();
    let (Some(app), Some(action)) = (st.get("app").and_then(Value::as_str), st.get("action").and_then(Value::as_str)) else {
        return Err(refuse(&format!("The step `{step}` is not an action: only actions call anything.")));
    };
    if STORE_APPS.contains(&app) {
        return Err(refuse(&format!("`{app}.{action}` changes Enlace's own store; a test call would change nothing real.")));
    }
    let connector = s.runner.registry().get(app).ok_or_else(|| refuse(&format!("There is no app `{app}`.")))?;
    let spec = connector.manifest.action(action).ok_or_else(|| refuse(&format!("The app `{app}` has no action `{action}`.")))?.clone();
    let connection = st.get("connection").and_then(Value::as_str).map(str::to_string);

    // The dry run up to the step renders its input with the sample.
    let mut cut = w.source.clone();
    cut["steps"] = Value::Array(steps[..=i].to_vec());
    let recipe = check(&s, &cut).map_err(|d| {
        refuse(&format!(
            "The steps up to this one do not validate yet: {}.",
            d.iter().map(|x| format!("{}: {}", x.path, x.message)).collect::<Vec<_>>().join("; ")
        ))
    })?;
    let event = sample_event(&s, &id, &recipe).await?;
    let dry = {
        let store = enlace_store::Store::temporary().await?;
        let clock = enlace_runner::ManualClock::new(s.runner.now_ms());
        let config = enlace_runner::RunnerConfig { dry_run: true, concurrency: 1, ..enlace_runner::RunnerConfig::default() };
        let runner =
            enlace_runner::Runner::new(store, s.runner.registry().clone(), config, s.runner.transport().clone(), Arc::new(clock.clone()));
        runner.run_once(&recipe, event.clone(), &clock).await?
    };
    let Some(rendered) = dry.steps.iter().rev().find(|x| x.step_id == step).and_then(|r| r.input.clone()) else {
        let why = dry.run.error.as_ref().map(|e| super::pages::explain(e)["what"].as_str().unwrap_or("").to_string()).unwrap_or_default();
        return Err(refuse(&format!("The dry run did not reach `{step}` with the sample ({}). {why}", dry.run.status)));
    };
    let q = RecipeQuery::default();

    if form.get("confirm") != Some("yes") {
        let key = new_key();
        remember(&key, s.runner.now_ms());
        let sentence = describe(&connector.manifest.name, &spec, app, &rendered, connection.as_deref());
        let confirm = json!({"step": step, "sentence": sentence, "input": super::editor::pretty(&rendered), "key": key});
        return recipe_view(&s, &sess, &id, &q, json!({"call_confirm": confirm})).await;
    }

    let key = form.text("call");
    if !redeem(&key, s.runner.now_ms()) {
        return Err(UiError::new(
            StatusCode::CONFLICT,
            "Already sent, or expired",
            "This confirmation was used already, is older than 30 minutes, or was shown by another node or before a restart: nothing was called.",
            Some("Ask again with \"Run for real\" to make another call."),
        ));
    }
    // The step alone, its inputs fixed, on a store with just what it needs.
    let mut single = w.source.clone();
    if let Some(o) = single.as_object_mut() {
        for k in ["contact", "reentry", "exit"] {
            o.remove(k);
        }
    }
    single["steps"] = json!([fixed_step(&st, &rendered)?]);
    let one = check(&s, &single).map_err(|d| {
        refuse(&format!(
            "The step alone does not validate: {}.",
            d.iter().map(|x| format!("{}: {}", x.path, x.message)).collect::<Vec<_>>().join("; ")
        ))
    })?;
    let now = s.runner.now_ms();
    let store = enlace_store::Store::temporary().await?;
    if let Some(cid) = &connection {
        let (row, _) = s.runner.store().connection(cid).await?.ok_or_else(|| refuse(&format!("There is no connection `{cid}`.")))?;
        let creds = s
            .runner
            .connection_credentials(cid)
            .await
            .map_err(|e| refuse(&format!("The connection `{cid}` cannot be used now: {}", e.message())))?;
        store.create_connection(&row.id, &row.app, &row.name, &creds, row.rate_limit, now).await?;
    }
    let names: Vec<String> = one.secrets.iter().cloned().collect();
    if !names.is_empty() {
        for (name, value) in s.runner.store().secrets(&names).await? {
            store.set_secret(&name, &value, now).await?;
        }
    }
    let clock = enlace_runner::ManualClock::new(now);
    let config = enlace_runner::RunnerConfig {
        concurrency: 1,
        public_url: s.runner.public_url(),
        node_id: format!("{}-test-call", s.runner.node_id()),
        ..enlace_runner::RunnerConfig::default()
    };
    let runner =
        enlace_runner::Runner::new(store, s.runner.registry().clone(), config, s.runner.transport().clone(), Arc::new(clock.clone()));
    tracing::info!(recipe = %id, step = %step, user = %sess.username, "a step is run for real from the editor");
    let detail = runner.run_once(&one, event, &clock).await?;
    let rec = detail.steps.iter().rev().find(|x| x.step_id == step);
    let result = json!({
        "step": step,
        "status": rec.map(|r| r.status.as_str()).unwrap_or(detail.run.status.as_str()),
        "input": rec.and_then(|r| r.input.as_ref()).map(super::editor::pretty),
        "output": rec.and_then(|r| r.output.as_ref()).map(super::editor::pretty),
        "error": rec.and_then(|r| r.error.as_ref()).map(super::pages::explain).or_else(|| detail.run.error.as_ref().map(super::pages::explain)),
    });
    recipe_view(&s, &sess, &id, &q, json!({"call": result})).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(app: enlace_core::Connector, action: &str) -> (String, ActionSpec) {
        (app.manifest.name.clone(), app.manifest.action(action).unwrap().clone())
    }

    #[test]
    fn the_confirmation_names_what_will_happen() {
        let mail = enlace_core::Connector::builder("smtp", "SMTP", "mail").build();
        // A spec that reaches people by email through `to`.
        let mut s = ActionSpec { name: "Send an email".into(), ..spec(enlace_connector_contacts::connector(), "find_contact").1 };
        s.reaches = Some(enlace_core::policy::Reach::new("email", enlace_core::policy::RecipientKind::Email, &["to", "cc"]));
        let input = json!({"to": "Ana <Ana@Example.com>", "cc": ["bo@example.com"], "subject": "hi"});
        assert_eq!(
            describe(&mail.manifest.name, &s, "smtp", &input, Some("smtp-main")),
            "This sends an email to ana@example.com, bo@example.com through connection 'smtp-main'."
        );
        assert_eq!(describe("SMTP", &s, "smtp", &json!({}), None), "This sends an email to nobody (no recipient in the input).");
        s.reaches = None;
        assert_eq!(
            describe("HTTP", &s, "http", &json!({"method": "POST", "url": "http://127.0.0.1:9/x"}), None),
            "This sends POST http://127.0.0.1:9/x."
        );
        assert_eq!(
            describe("Slack", &s, "slack", &json!({}), Some("team")),
            "This calls Slack · Send an email once through connection 'team'."
        );
    }

    #[test]
    fn inputs_reading_earlier_steps_take_the_rendered_value_and_secrets_keep_their_template() {
        let step = json!({"id": "mail", "app": "smtp", "action": "send_email", "retry": {"attempts": 5},
            "with": {"to": "{{steps.save.contact.email}}", "subject": "Hi {{trigger.body.name}}", "from": "news@example.com", "key": "{{secrets.KEY}}"}});
        let rendered = json!({"to": "ana@example.com", "subject": "Hi Ana", "from": "news@example.com", "key": "[secret]"});
        let fixed = fixed_step(&step, &rendered).unwrap();
        assert_eq!(fixed["with"]["to"], "ana@example.com");
        assert_eq!(fixed["with"]["subject"], "Hi Ana");
        assert_eq!(fixed["with"]["from"], "news@example.com");
        assert_eq!(fixed["with"]["key"], "{{secrets.KEY}}", "the real secret is read by the call, never the mask");
        assert_eq!(fixed["retry"], json!({"attempts": 1}));
        let bad = fixed_step(&step, &json!({"to": "{{x}}"})).unwrap_err();
        assert!(bad.message.contains("`to`"), "{}", bad.message);
    }

    #[test]
    fn a_confirmation_key_is_good_once_and_for_thirty_minutes() {
        remember("k-once", 1_000);
        assert!(redeem("k-once", 2_000));
        assert!(!redeem("k-once", 2_000), "used once");
        remember("k-late", 1_000);
        assert!(!redeem("k-late", 1_000 + KEY_TTL_MS), "expired");
        assert!(!redeem("never-given", 1_000));
    }

    #[test]
    fn the_confirmation_form_carries_its_key_and_the_session_token() {
        let html = crate::ui::render(
            "recipe",
            &json!({"id": "r", "csrf": "tok", "can_edit": true, "user": {"name": "u", "role": "editor"}, "nav": [], "published": true,
                    "steps": [{"id": "mail", "kind": "action", "what": "smtp.send_email", "callable": true}, {"id": "save", "kind": "action", "what": "contacts.upsert_contact", "callable": false}],
                    "source": "x", "versions": [], "call_confirm": {"step": "mail", "sentence": "This sends an email to a@b.c.", "input": "{}", "key": "k1"}}),
        );
        assert!(html.contains("Run mail for real…") && !html.contains("Run save for real"), "only callable steps: {html}");
        let at = html.find("id=\"call-confirm\"").unwrap();
        let card = &html[at..];
        assert!(card.contains("This sends an email to a@b.c."));
        assert!(
            card.contains("name=\"confirm\" value=\"yes\"")
                && card.contains("name=\"call\" value=\"k1\"")
                && card.contains("name=\"_csrf\" value=\"tok\"")
        );
        assert!(card.contains("<a class=\"button\" href=\"/ui/recipes/r#step-mail\">Cancel</a>"), "cancel is a link: it sends nothing");
    }
}
