//! The recipe editor: a vertical list of steps, like Zapier's.
//!
//! A recipe being built is a *draft* (`ui_drafts`): the recipe's JSON as the editor left it,
//! which may not validate yet (it may have no step). Each step is edited in a form built from
//! its action's input schema (one field per property, its description as help text); data
//! pills insert a reference to a field of the trigger's sample (a request caught on the
//! webhook's address while the editor listens) or of an earlier step's sample output.
//! Saving a step validates the whole draft and shows each problem beside its field.
//! *Publishing* saves the draft as the recipe's next version through the same code as
//! `PUT /api/v1/recipes/{id}` (`POST` for a new recipe), and drops the draft.
//! *Test step* runs the draft up to that step as a dry run on a throwaway store: outside
//! apps are not called (HTTP actions show the requests they would send, others their input).
//! *Run for real* (`test_call`) calls the step's action once, after a confirmation.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use enlace_store::{DraftRow, RunStatus};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::pages::{line_diff, when};
use super::{Form, Role, Session, UiError, UiResult, page, redirect_flash};
use crate::AppState;
use crate::api;
use crate::error::ApiError;

/// How long the editor listens for a sample request on a webhook's address.
pub const LISTEN_MS: i64 = 10 * 60 * 1000;

/// The step kinds other than actions, with the shape a new one starts from.
const OTHER_KINDS: &[(&str, &str)] = &[
    ("filter", r#"{"filter": "{{trigger.body.email}}"}"#),
    ("branch", r#"{"branch": [{"if": "{{trigger.body.vip}}", "steps": []}, {"else": []}]}"#),
    ("delay", r#"{"delay": "1h"}"#),
    ("wait_for", r#"{"wait_for": {"event": "form_submitted", "timeout": "3d"}}"#),
    ("split", r#"{"split": {"a": 50, "b": 50}, "paths": {"a": [], "b": []}}"#),
    ("emit", r#"{"emit": "lead.qualified", "data": {"email": "{{trigger.body.email}}"}}"#),
];

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/ui/recipes/new", get(new_page).post(new_submit))
        .route("/ui/recipes/{id}", get(recipe).post(save_source))
        .route("/ui/recipes/{id}/steps", post(save_step))
        .route("/ui/recipes/{id}/steps/{step}/delete", post(delete_step))
        .route("/ui/recipes/{id}/steps/{step}/test", post(test_step))
        .route("/ui/recipes/{id}/publish", post(publish))
        .route("/ui/recipes/{id}/discard", post(discard))
        .route("/ui/recipes/{id}/listen", post(listen))
}

fn esc_path(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>().replace('+', "%20")
}

pub(super) fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

fn invalid(msg: &str) -> UiError {
    UiError::new(StatusCode::BAD_REQUEST, "Please check the input", msg, None)
}

// ---------------------------------------------------------------- the working copy

/// The recipe as the editor works on it: its draft if it has one, else its current version.
pub(super) struct Working {
    pub(super) source: Value,
    draft: Option<DraftRow>,
    published: Option<enlace_runner::Current>,
}

pub(super) async fn working(s: &AppState, id: &str) -> Result<Working, UiError> {
    let draft = s.runner.store().ui_draft(id).await?;
    let published = match api::recipes::current(s, id).await {
        Ok(c) => Some(c),
        Err(e) if e.code == crate::error::Code::NotFound => None,
        Err(e) => return Err(e.into()),
    };
    let source = match (&draft, &published) {
        (Some(d), _) => d.source.clone(),
        (None, Some(p)) => p.recipe.source.clone(),
        (None, None) => return Err(UiError::not_found(&format!("There is no recipe `{id}`."))),
    };
    Ok(Working { source, draft, published })
}

async fn save_draft(s: &AppState, sess: &Session, id: &str, source: Value) -> Result<(), UiError> {
    Ok(s.runner
        .store()
        .ui_save_draft(&DraftRow { recipe_id: id.to_string(), source, updated_at: s.runner.now_ms(), updated_by: sess.username.clone() })
        .await?)
}

/// Validates a recipe's JSON: the recipe, or every problem with its path and line (lines of
/// the indented JSON the source box shows).
pub(super) fn check(s: &AppState, source: &Value) -> Result<enlace_recipe::Recipe, Vec<enlace_recipe::Diagnostic>> {
    enlace_recipe::load(&pretty(source), None, s.runner.registry()).map_err(|d| d.diagnostics)
}

pub(super) fn steps_of(source: &Value) -> Vec<Value> {
    source.get("steps").and_then(Value::as_array).cloned().unwrap_or_default()
}

/// A step where it sits: the JSON pointer of the list that holds it (`/steps`, or an inner
/// list such as `/steps/0/branch/1/else` or `/steps/2/paths/a`), its index there, and how
/// deep it is (0 for the recipe's own steps).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Placed {
    pub list: String,
    pub index: usize,
    pub depth: usize,
    pub step: Value,
}

/// One token of a JSON pointer, escaped (RFC 6901).
fn ptr_token(t: &str) -> String {
    t.replace('~', "~0").replace('/', "~1")
}

/// The inner step lists a step opens, with a label for each: a branch's paths (`if …`,
/// `else`), a split's paths, a foreach's steps. `at` is the step's own pointer.
pub(super) fn inner_lists(at: &str, step: &Value) -> Vec<(String, String)> {
    let mut out = vec![];
    if let Some(arms) = step.get("branch").and_then(Value::as_array) {
        for (i, arm) in arms.iter().enumerate() {
            if arm.get("steps").is_some() {
                let cond = arm.get("if").map(|c| c.as_str().map(str::to_string).unwrap_or_else(|| c.to_string())).unwrap_or_default();
                out.push((format!("if {cond}"), format!("{at}/branch/{i}/steps")));
            } else if arm.get("else").is_some() {
                out.push(("else".to_string(), format!("{at}/branch/{i}/else")));
            }
        }
    } else if let Some(paths) = step.get("paths").and_then(Value::as_object) {
        for name in paths.keys() {
            out.push((format!("path {name}"), format!("{at}/paths/{}", ptr_token(name))));
        }
    } else if step.get("foreach").is_some() {
        out.push(("each item".to_string(), format!("{at}/steps")));
    }
    out
}

/// Every step of a recipe, inner ones included, in reading order.
pub(super) fn placed_steps(source: &Value) -> Vec<Placed> {
    fn walk(source: &Value, list: &str, depth: usize, out: &mut Vec<Placed>) {
        let Some(steps) = source.pointer(list).and_then(Value::as_array) else { return };
        for (index, step) in steps.iter().enumerate() {
            out.push(Placed { list: list.to_string(), index, depth, step: step.clone() });
            if depth < 8 {
                for (_, inner) in inner_lists(&format!("{list}/{index}"), step) {
                    walk(source, &inner, depth + 1, out);
                }
            }
        }
    }
    let mut out = vec![];
    walk(source, "/steps", 0, &mut out);
    out
}

/// The checker's path of the step at `index` of the list `list` points at:
/// `/steps/0/branch/1/else` and 2 give `steps[0].branch[1].else[2]`; `/steps/3/paths/a` and 0
/// give `steps[3].paths.a[0]`.
pub(super) fn diag_path(list: &str, index: usize) -> String {
    let mut out = String::new();
    for t in list.trim_start_matches('/').split('/') {
        let t = t.replace("~1", "/").replace("~0", "~");
        if t.parse::<usize>().is_ok() {
            out.push_str(&format!("[{t}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&t);
        }
    }
    format!("{out}[{index}]")
}

/// The index, among the recipe's own steps, of the step a list is inside (for data pills:
/// the steps before it have run).
fn top_index(list: &str, index: usize) -> usize {
    match list.strip_prefix("/steps/") {
        Some(rest) => rest.split('/').next().and_then(|t| t.parse().ok()).unwrap_or(index),
        None => index,
    }
}

/// Whether a pointer names a step list the editor may write to: `/steps` or an inner list of
/// an existing branch, split or foreach step.
fn is_step_list(source: &Value, list: &str) -> bool {
    list == "/steps"
        || placed_steps(source).iter().any(|p| inner_lists(&format!("{}/{}", p.list, p.index), &p.step).iter().any(|(_, l)| l == list))
}

fn step_kind(st: &Value) -> &'static str {
    if st.get("app").is_some() && st.get("action").is_some() {
        return "action";
    }
    ["filter", "branch", "foreach", "delay", "delay_until", "wait_for", "split", "emit"]
        .into_iter()
        .find(|k| st.get(*k).is_some())
        .unwrap_or("step")
}

// ---------------------------------------------------------------- data pills

/// Leaf paths of a sample value (three levels deep, ten items per level at most).
fn leaves(prefix: &str, v: &Value, depth: usize, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(m) if depth < 4 => {
            for (k, x) in m.iter().take(25) {
                if k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    leaves(&format!("{prefix}.{k}"), x, depth + 1, out);
                }
            }
        }
        Value::Array(a) if depth < 4 && !a.is_empty() => leaves(&format!("{prefix}.[0]"), &a[0], depth + 1, out),
        Value::Object(_) | Value::Array(_) => {}
        x => {
            let shown = match x {
                Value::String(s) => s.chars().take(40).collect(),
                other => other.to_string(),
            };
            out.push((prefix.to_string(), shown));
        }
    }
}

/// The pills available to step number `index` (0-based): the trigger's sample, then each
/// earlier action step's sample output.
async fn pills(s: &AppState, id: &str, source: &Value, index: usize) -> Result<Vec<Value>, UiError> {
    let mut out = vec![];
    let trigger_app = source.pointer("/trigger/app").and_then(Value::as_str).unwrap_or("");
    let trigger_event = source.pointer("/trigger/event").and_then(Value::as_str).unwrap_or("");
    let sample = match s.runner.store().ui_sample(id).await?.and_then(|x| x.payload) {
        Some(p) => Some(p),
        None => s
            .runner
            .registry()
            .get(trigger_app)
            .and_then(|c| c.manifest.trigger(trigger_event))
            .map(|t| t.sample.clone())
            .filter(|v| !v.is_null()),
    };
    if let Some(v) = sample {
        let mut l = vec![];
        leaves("trigger", &v, 0, &mut l);
        out.extend(
            l.into_iter()
                .filter(|(p, _)| !p.starts_with("trigger.headers"))
                .map(|(p, ex)| json!({"path": p, "example": ex, "from": "trigger"})),
        );
    }
    for st in steps_of(source).iter().take(index) {
        let (Some(sid), Some(app), Some(action)) =
            (st.get("id").and_then(Value::as_str), st.get("app").and_then(Value::as_str), st.get("action").and_then(Value::as_str))
        else {
            continue;
        };
        if let Some(spec) = s.runner.registry().get(app).and_then(|c| c.manifest.action(action)) {
            let mut l = vec![];
            leaves(&format!("steps.{sid}"), &spec.sample, 0, &mut l);
            out.extend(l.into_iter().map(|(p, ex)| json!({"path": p, "example": ex, "from": sid})));
        }
    }
    for p in &mut out {
        p["insert"] = json!(format!("{{{{{}}}}}", p["path"].as_str().unwrap_or("")));
    }
    Ok(out)
}

// ---------------------------------------------------------------- the step form

/// The form of a step: an action's fields from its input schema, or another kind's JSON.
async fn step_form(
    s: &AppState,
    id: &str,
    source: &Value,
    (list, index): (&str, usize),
    step: &Value,
    errors: &[(String, String)],
) -> Result<Value, UiError> {
    let kind = step_kind(step);
    let err_at = |p: &str| -> Option<String> {
        let msgs: Vec<&str> = errors
            .iter()
            .filter(|(path, _)| path == p || path.starts_with(&format!("{p}.")) || path.starts_with(&format!("{p}[")))
            .map(|(_, m)| m.as_str())
            .collect();
        (!msgs.is_empty()).then(|| msgs.join("; "))
    };
    let base = diag_path(list, index);
    let pills = pills(s, id, source, top_index(list, index)).await?;
    let mut form = json!({
        "index": index,
        "list": list,
        "inner": list != "/steps",
        "step_id": step.get("id"),
        "kind": kind,
        "id_error": err_at(&format!("{base}.id")),
        "pills": pills,
        // What is not shown beside a field: a missing field (`{base}.with`, "the field `x` is
        // required") is shown beside that field.
        "general": errors.iter().filter(|(p, m)| {
            let beside_field = p.starts_with(&format!("{base}.with.")) || (*p == format!("{base}.with") && m.contains("the field `") && kind == "action");
            !beside_field && !p.starts_with(&format!("{base}.id")) && !p.starts_with(&format!("{base}.connection"))
        }).map(|(p, m)| json!({"path": p, "message": m})).collect::<Vec<_>>(),
    });
    if kind != "action" {
        let mut rest = step.clone();
        if let Some(o) = rest.as_object_mut() {
            o.remove("id");
        }
        form["json"] = json!(pretty(&rest));
        return Ok(form);
    }
    // A field's problems: its own, and "the field `x` is required" said of `with`.
    let field_err = |name: &str| -> Option<String> {
        let with = format!("{base}.with");
        let missing = errors.iter().filter(|(p, m)| *p == with && m.contains(&format!("the field `{name}`"))).map(|(_, m)| m.clone());
        let all: Vec<String> = err_at(&format!("{base}.with.{name}")).into_iter().chain(missing).collect();
        (!all.is_empty()).then(|| all.join("; "))
    };
    let app = step.get("app").and_then(Value::as_str).unwrap_or("");
    let action = step.get("action").and_then(Value::as_str).unwrap_or("");
    let connector = s.runner.registry().get(app).ok_or_else(|| invalid(&format!("There is no app `{app}`.")))?;
    let spec = connector.manifest.action(action).ok_or_else(|| invalid(&format!("The app `{app}` has no action `{action}`.")))?;
    let with = step.get("with").cloned().unwrap_or(json!({}));
    let required: Vec<&str> = spec
        .input_schema
        .get("required")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let fields: Vec<Value> = spec
        .input_schema
        .get("properties")
        .and_then(Value::as_object)
        .map(|props| {
            props
                .iter()
                .map(|(name, schema)| {
                    let ty = schema.get("type").and_then(Value::as_str).unwrap_or("");
                    let value = match with.get(name) {
                        None | Some(Value::Null) => String::new(),
                        Some(Value::String(t)) => t.clone(),
                        Some(other) => pretty(other),
                    };
                    let long = !matches!(ty, "string" | "integer" | "number" | "boolean")
                        || value.contains('\n')
                        || value.len() > 60
                        || matches!(name.as_str(), "text" | "html" | "body" | "json");
                    json!({
                        "name": name, "value": value, "multiline": long,
                        "help": schema.get("description").and_then(Value::as_str).unwrap_or(""),
                        "required": required.contains(&name.as_str()),
                        "type": if ty.is_empty() { "any".to_string() } else { ty.to_string() },
                        "error": field_err(name),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let conns: Vec<Value> = s
        .runner
        .store()
        .list_connections()
        .await?
        .into_iter()
        .filter(|c| c.app == app)
        .map(|c| json!({"id": c.id, "name": c.name, "selected": step.get("connection").and_then(Value::as_str) == Some(c.id.as_str())}))
        .collect();
    form["app"] = json!(app);
    form["action"] = json!(action);
    form["action_name"] = json!(format!("{} · {}", connector.manifest.name, spec.name));
    form["action_help"] = json!(spec.description);
    form["fields"] = json!(fields);
    form["takes_connection"] =
        json!(api::connections::takes_connections(connector) && connector.manifest.auth != enlace_core::AuthKind::None);
    form["connections"] = json!(conns);
    form["connection_error"] = json!(err_at(&format!("{base}.connection")));
    form["reaches"] = json!(spec.reaches.is_some());
    form["transactional"] = json!(step.get("transactional").and_then(Value::as_bool).unwrap_or(false));
    form["retry_attempts"] = json!(step.pointer("/retry/attempts"));
    Ok(form)
}

/// The step a form describes (its values typed by the action's schema).
fn step_from_form(s: &AppState, form: &Form, old: Option<&Value>) -> Result<Value, UiError> {
    let step_id = form.text("step_id");
    let mut step = Map::new();
    step.insert("id".into(), json!(step_id));
    if let Some(text) = form.get("json") {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| invalid(&format!("The step is not valid JSON: {e}. Write it like {{\"delay\": \"1h\"}}.")))?;
        let Value::Object(m) = v else { return Err(invalid("The step must be a JSON object, like {\"delay\": \"1h\"}.")) };
        step.extend(m.into_iter().filter(|(k, _)| k != "id"));
        return Ok(Value::Object(step));
    }
    let app = form.text("app");
    let action = form.text("action");
    let spec = s
        .runner
        .registry()
        .get(&app)
        .and_then(|c| c.manifest.action(&action).cloned())
        .ok_or_else(|| invalid(&format!("There is no action `{app}.{action}`.")))?;
    step.insert("app".into(), json!(app));
    step.insert("action".into(), json!(action));
    if let Some(c) = form.get("connection").map(str::trim).filter(|c| !c.is_empty()) {
        step.insert("connection".into(), json!(c));
    }
    if form.get("transactional") == Some("true") {
        step.insert("transactional".into(), json!(true));
    }
    // What the form does not show is kept (purpose, on_error, retry's other settings).
    if let Some(Value::Object(o)) = old {
        for k in ["purpose", "on_error", "foreach", "if"] {
            if let Some(v) = o.get(k) {
                step.insert(k.into(), v.clone());
            }
        }
    }
    let mut retry = old.and_then(|o| o.get("retry")).and_then(Value::as_object).cloned().unwrap_or_default();
    match form.text("retry_attempts").as_str() {
        "" => {
            retry.remove("attempts");
        }
        n => {
            let n: u64 = n.parse().map_err(|_| invalid("Retry attempts must be a whole number, like 3."))?;
            retry.insert("attempts".into(), json!(n));
        }
    }
    if !retry.is_empty() {
        step.insert("retry".into(), Value::Object(retry));
    }
    let props = spec.input_schema.get("properties").and_then(Value::as_object).cloned().unwrap_or_default();
    let mut with = Map::new();
    for (name, schema) in &props {
        let raw = form.get(&format!("with.{name}")).unwrap_or("");
        if raw.trim().is_empty() {
            continue;
        }
        let ty = schema.get("type").and_then(Value::as_str).unwrap_or("");
        let value = if ty == "string" {
            Value::String(raw.to_string())
        } else {
            // Numbers, booleans, lists and objects are written as JSON; a template stays text.
            serde_json::from_str(raw.trim()).unwrap_or_else(|_| Value::String(raw.to_string()))
        };
        with.insert(name.clone(), value);
    }
    step.insert("with".into(), Value::Object(with));
    Ok(Value::Object(step))
}

// ---------------------------------------------------------------- pages

async fn new_page(State(s): State<AppState>, sess: Session) -> UiResult {
    sess.require(Role::Editor)?;
    Ok(page(&sess, "New recipe", "recipe_new", json!({"triggers": triggers(&s, None), "source": ""})))
}

fn triggers(s: &AppState, selected: Option<&str>) -> Vec<Value> {
    let reg = s.runner.registry();
    let mut out: Vec<Value> = reg
        .app_ids()
        .into_iter()
        .filter_map(|a| reg.get(a))
        .flat_map(|c| {
            c.manifest.triggers.iter().map(move |t| {
                let v = format!("{}.{}", c.manifest.id, t.id);
                json!({"value": v, "label": format!("{}: {}", c.manifest.name, t.name), "selected": selected == Some(v.as_str())})
            })
        })
        .collect();
    out.sort_by(|a, b| a["label"].as_str().cmp(&b["label"].as_str()));
    out
}

async fn new_submit(State(s): State<AppState>, sess: Session, body: Bytes) -> UiResult {
    sess.require(Role::Editor)?;
    let form = Form::parse(&body);
    let source = form.get("source").unwrap_or("").to_string();
    if !source.trim().is_empty() {
        // A whole recipe written by hand: saved (and validated) as the API saves it.
        return match api::recipes::create(State(s.clone()), yaml_headers(), Bytes::from(source.clone())).await {
            Ok((_, axum::Json(saved))) => {
                let msg = if saved.recipe.enabled {
                    "The recipe is saved and enabled (its source does not say `enabled: false`)."
                } else {
                    "The recipe is saved, disabled. Preview it, then enable it."
                };
                Ok(redirect_flash(&format!("/ui/recipes/{}", esc_path(&saved.recipe.id)), "ok", msg))
            }
            Err(e) => {
                let mut r = page(
                    &sess,
                    "New recipe",
                    "recipe_new",
                    json!({"triggers": triggers(&s, None), "source": source, "problem": e.message, "diagnostics": diagnostics(&e)}),
                );
                *r.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
                Ok(r)
            }
        };
    }
    let id = form.text("id");
    let name = form.text("name");
    let trigger = form.text("trigger");
    let again = |problem: String| {
        let mut r = page(
            &sess,
            "New recipe",
            "recipe_new",
            json!({"triggers": triggers(&s, Some(&trigger)), "id": id, "name": name, "options": form.get("options"), "problem": problem}),
        );
        *r.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
        Ok(r)
    };
    let id_ok = !id.is_empty()
        && id.len() <= 63
        && id.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && id.as_bytes()[0].is_ascii_alphanumeric();
    if !id_ok {
        return again("The recipe id must be lowercase letters, digits and -, like welcome-email.".into());
    }
    if s.runner.store().get_recipe(&id).await?.is_some() || s.runner.store().ui_draft(&id).await?.is_some() {
        return again(format!("A recipe `{id}` exists already; choose another id."));
    }
    let Some((app, event)) = trigger.split_once('.') else { return again("Choose a trigger.".into()) };
    let mut with = match form.get("options").map(str::trim).filter(|o| !o.is_empty()) {
        None => json!({}),
        Some(o) => match serde_json::from_str::<Value>(o) {
            Ok(v @ Value::Object(_)) => v,
            _ => return again("The trigger's options must be a JSON object, like {\"cron\": \"0 9 * * *\"}.".into()),
        },
    };
    if app == "webhook" && with.get("path").is_none() {
        with["path"] = json!(id);
    }
    let mut source = json!({"id": id, "trigger": {"app": app, "event": event, "with": with}, "steps": []});
    if !name.is_empty() {
        source["name"] = json!(name);
    }
    save_draft(&s, &sess, &id, source).await?;
    Ok(redirect_flash(&format!("/ui/recipes/{}", esc_path(&id)), "ok", "The draft is saved. Add its steps, then publish it."))
}

#[derive(Debug, Deserialize, Default)]
pub struct RecipeQuery {
    diff: Option<i64>,
    /// `app.action` or a step kind: the form of a new step.
    add: Option<String>,
    /// A step id: its form.
    step: Option<String>,
    /// With `add`: the inner list (a JSON pointer, like `/steps/0/branch/0/steps`) the new
    /// step goes into; the recipe's own steps when absent.
    into: Option<String>,
}

fn yaml_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/yaml"));
    h
}

fn json_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h
}

/// Diagnostics for the page: `{path, line, message}`.
pub(super) fn diagnostics(e: &ApiError) -> Vec<Value> {
    match &e.diagnostics {
        Some(d) => d.iter().map(|x| json!({"path": x.path, "message": x.message, "line": x.line})).collect(),
        None => vec![json!({"path": e.path, "message": e.message, "line": Value::Null})],
    }
}

/// The options of "Add a step": every action, then the other kinds.
fn add_options(s: &AppState) -> Vec<Value> {
    let reg = s.runner.registry();
    let mut out: Vec<Value> =
        reg.app_ids()
            .into_iter()
            .filter_map(|a| reg.get(a))
            .flat_map(|c| {
                c.manifest.actions.iter().map(
                    move |a| json!({"value": format!("{}.{}", c.manifest.id, a.id), "label": format!("{}: {}", c.manifest.name, a.name)}),
                )
            })
            .collect();
    out.sort_by(|a, b| a["label"].as_str().cmp(&b["label"].as_str()));
    out.extend(OTHER_KINDS.iter().map(|(k, _)| json!({"value": k, "label": format!("Control: {}", k.replace('_', " "))})));
    out
}

/// The recipe page: the editor, preview, enable, source, versions. `extra` adds to the context.
pub(super) async fn recipe_view(s: &AppState, sess: &Session, id: &str, q: &RecipeQuery, mut extra: Value) -> UiResult {
    let w = working(s, id).await?;
    let source = extra.get("working").cloned().unwrap_or_else(|| w.source.clone());
    let placed = placed_steps(&source);
    let all: Vec<Value> = placed.iter().map(|p| p.step.clone()).collect();
    // The rows, in reading order: each step, and under a step that opens paths, each path's
    // header (with its own "add a step here") followed by its steps.
    fn rows(source: &Value, list_ptr: &str, depth: usize, out: &mut Vec<Value>) {
        let Some(steps) = source.pointer(list_ptr).and_then(Value::as_array) else { return };
        for (index, st) in steps.iter().enumerate() {
            let what = match (st.get("app").and_then(Value::as_str), st.get("action").and_then(Value::as_str)) {
                (Some(a), Some(b)) => format!("{a}.{b}"),
                _ => String::new(),
            };
            // Test and real calls take the recipe's own steps; inner ones are edited and removed.
            let inner = depth > 0;
            let callable = !inner && !what.is_empty() && !super::test_call::STORE_APPS.contains(&what.split('.').next().unwrap_or(""));
            out.push(json!({"id": st.get("id"), "kind": step_kind(st), "what": what, "connection": st.get("connection"), "callable": callable, "inner": inner, "depth": depth.min(4)}));
            if depth >= 8 {
                continue;
            }
            for (label, into) in inner_lists(&format!("{list_ptr}/{index}"), st) {
                let n = source.pointer(&into).and_then(Value::as_array).map_or(0, Vec::len);
                let label = format!("{} · {label}", st.get("id").and_then(Value::as_str).unwrap_or(""));
                out.push(json!({"slot": true, "label": label, "into": into, "count": n, "depth": (depth + 1).min(4)}));
                rows(source, &into, depth + 1, out);
            }
        }
    }
    let mut list: Vec<Value> = vec![];
    rows(&source, "/steps", 0, &mut list);
    // The step form: a new step (`add`), a step (`step`), or the one the caller gives.
    let mut form = extra.get("form").cloned().unwrap_or(Value::Null);
    if form.is_null() && sess.role.at_least(Role::Editor) {
        if let Some(add) = q.add.as_deref().filter(|a| !a.is_empty()) {
            let into = q.into.as_deref().filter(|i| !i.is_empty()).unwrap_or("/steps");
            if !is_step_list(&source, into) {
                return Err(invalid(&format!("`{into}` is not a list of steps of this recipe; reload the page.")));
            }
            let new = new_step(s, add, &all)?;
            let at = source.pointer(into).and_then(Value::as_array).map_or(0, Vec::len);
            form = step_form(s, id, &source, (into, at), &new, &[]).await?;
            form["new"] = json!(true);
        } else if let Some(sid) = q.step.as_deref() {
            let p = placed
                .iter()
                .find(|x| x.step.get("id").and_then(Value::as_str) == Some(sid))
                .ok_or_else(|| UiError::not_found(&format!("The recipe has no step `{sid}`.")))?;
            form = step_form(s, id, &source, (&p.list, p.index), &p.step, &[]).await?;
        }
    }
    let hook_path = source
        .pointer("/trigger/with/path")
        .and_then(Value::as_str)
        .filter(|_| source.pointer("/trigger/app").and_then(Value::as_str) == Some("webhook"));
    let base = sess.base.clone();
    let sample = s.runner.store().ui_sample(id).await?;
    let now = s.runner.now_ms();
    let versions = s.runner.store().recipe_versions(id).await?;
    let published = w.published.as_ref();
    let mut ctx = json!({
        "id": id,
        "name": source.get("name"),
        "draft": w.draft.as_ref().map(|d| json!({"by": d.updated_by, "at": when(d.updated_at)})),
        "published": published.is_some(),
        "enabled": published.is_some_and(|p| p.row.enabled),
        "version": published.map(|p| p.row.version),
        "trigger": format!("{}.{}", source.pointer("/trigger/app").and_then(Value::as_str).unwrap_or("?"), source.pointer("/trigger/event").and_then(Value::as_str).unwrap_or("?")),
        "hook": hook_path.map(|p| format!("{}/hooks/{p}", base.trim_end_matches('/'))),
        "listening": sample.as_ref().is_some_and(|x| x.listening_until > now && x.payload.is_none()),
        "sample": sample.as_ref().and_then(|x| x.payload.as_ref()).map(|p| json!({"at": sample.as_ref().and_then(|x| x.received_at).map(when), "body": pretty(p.get("body").unwrap_or(p))})),
        "steps": list,
        "add_options": add_options(s),
        "form": form,
        "source": pretty(&source),
        "versions": versions.iter().rev().map(|v| json!({"version": v.version, "created": when(v.created_at), "current": published.is_some_and(|p| p.row.version == v.version)})).collect::<Vec<_>>(),
    });
    if let Some(v) = q.diff
        && let Some(p) = published
    {
        let old = s
            .runner
            .store()
            .recipe_version(id, v)
            .await?
            .ok_or_else(|| UiError::not_found(&format!("Recipe `{id}` has no version {v}.")))?;
        ctx["diff"] = json!({"from": v, "to": p.row.version, "lines": line_diff(&pretty(&old.body), &pretty(&p.recipe.source))});
    }
    if let Some(o) = extra.as_object_mut() {
        o.remove("working");
        o.remove("form");
        if let Some(c) = ctx.as_object_mut() {
            c.extend(std::mem::take(o));
        }
    }
    Ok(page(sess, &format!("Recipe {id}"), "recipe", ctx))
}

fn new_step(s: &AppState, add: &str, steps: &[Value]) -> Result<Value, UiError> {
    let taken = |x: &str| steps.iter().any(|st| st.get("id").and_then(Value::as_str) == Some(x));
    let base = add.rsplit('.').next().unwrap_or("step").replace('_', "-");
    let mut sid = base.clone();
    let mut n = 2;
    while taken(&sid) {
        sid = format!("{base}-{n}");
        n += 1;
    }
    if let Some((_, shape)) = OTHER_KINDS.iter().find(|(k, _)| *k == add) {
        let mut v: Value = serde_json::from_str(shape).unwrap_or(json!({}));
        v["id"] = json!(sid);
        return Ok(v);
    }
    let (app, action) = add.split_once('.').ok_or_else(|| invalid(&format!("`{add}` is not a step to add.")))?;
    s.runner.registry().get(app).and_then(|c| c.manifest.action(action)).ok_or_else(|| invalid(&format!("There is no action `{add}`.")))?;
    Ok(json!({"id": sid, "app": app, "action": action, "with": {}}))
}

async fn recipe(State(s): State<AppState>, sess: Session, Path(id): Path<String>, Query(q): Query<RecipeQuery>) -> UiResult {
    recipe_view(&s, &sess, &id, &q, json!({})).await
}

/// Saves the source box: a new version, through the API's code (the draft, if any, is dropped).
async fn save_source(State(s): State<AppState>, sess: Session, Path(id): Path<String>, body: Bytes) -> UiResult {
    sess.require(Role::Editor)?;
    let form = Form::parse(&body);
    let source = form.get("source").unwrap_or("").to_string();
    let q = RecipeQuery::default();
    if form.get("validate_only") == Some("true") {
        return match api::recipes::validate(State(s.clone()), yaml_headers(), Bytes::from(source.clone())).await {
            Ok(axum::Json(v)) => {
                recipe_view(&s, &sess, &id, &q, json!({"source": source, "valid": format!("The recipe is valid: {} step(s).", v.steps)}))
                    .await
            }
            Err(e) => {
                let mut r =
                    recipe_view(&s, &sess, &id, &q, json!({"source": source, "diagnostics": diagnostics(&e), "problem": e.message}))
                        .await?;
                *r.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
                Ok(r)
            }
        };
    }
    let exists = s.runner.store().get_recipe(&id).await?.is_some();
    let saved = if exists {
        api::recipes::update(State(s.clone()), Path(id.clone()), yaml_headers(), Bytes::from(source.clone())).await.map(|j| j.0)
    } else {
        api::recipes::create(State(s.clone()), yaml_headers(), Bytes::from(source.clone())).await.map(|(_, j)| j.0)
    };
    match saved {
        Ok(saved) => {
            s.runner.store().ui_delete_draft(&id).await?;
            let msg = if saved.new_version {
                format!("Saved as version {}.", saved.recipe.version)
            } else {
                "Nothing changed: the recipe is the same as its current version.".to_string()
            };
            Ok(redirect_flash(&format!("/ui/recipes/{}", esc_path(&saved.recipe.id)), "ok", &msg))
        }
        Err(e) => {
            let mut r =
                recipe_view(&s, &sess, &id, &q, json!({"source": source, "diagnostics": diagnostics(&e), "problem": e.message})).await?;
            *r.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
            Ok(r)
        }
    }
}

async fn save_step(State(s): State<AppState>, sess: Session, Path(id): Path<String>, body: Bytes) -> UiResult {
    sess.require(Role::Editor)?;
    let form = Form::parse(&body);
    let w = working(&s, &id).await?;
    let mut source = w.source.clone();
    let list = Some(form.text("list")).filter(|l| !l.is_empty()).unwrap_or_else(|| "/steps".to_string());
    if source.get("steps").is_none() {
        source["steps"] = json!([]);
    }
    if !is_step_list(&source, &list) {
        return Err(invalid("The recipe changed meanwhile (the step's path is gone); reload the page."));
    }
    let index: usize = form.text("index").parse().map_err(|_| invalid("The form lost its step number; reload the page."))?;
    let old = source.pointer(&list).and_then(Value::as_array).and_then(|a| a.get(index)).cloned();
    let step = step_from_form(&s, &form, old.as_ref())?;
    let sid = step.get("id").and_then(Value::as_str).unwrap_or("").to_string();
    let Some(steps) = source.pointer_mut(&list).and_then(Value::as_array_mut) else {
        return Err(invalid("The recipe changed meanwhile; reload the page."));
    };
    if index > steps.len() {
        return Err(invalid("The recipe changed meanwhile; reload the page."));
    }
    if index == steps.len() {
        steps.push(step);
    } else {
        steps[index] = step;
    }
    save_draft(&s, &sess, &id, source.clone()).await?;
    match check(&s, &source) {
        Ok(_) => Ok(redirect_flash(
            &format!("/ui/recipes/{}#step-{}", esc_path(&id), esc_path(&sid)),
            "ok",
            &format!("The step {sid} is saved in the draft; the draft is valid."),
        )),
        Err(diags) => {
            let mine = diag_path(&list, index);
            let errors: Vec<(String, String)> =
                diags.iter().filter(|d| d.path.starts_with(&mine)).map(|d| (d.path.clone(), d.message.clone())).collect();
            if errors.is_empty() {
                // This step is fine; the draft has other problems (shown with the source).
                return Ok(redirect_flash(
                    &format!("/ui/recipes/{}", esc_path(&id)),
                    "ok",
                    &format!("The step {sid} is saved in the draft. The draft still has {} problem(s) elsewhere.", diags.len()),
                ));
            }
            let st = source.pointer(&list).and_then(Value::as_array).and_then(|a| a.get(index)).cloned().unwrap_or(Value::Null);
            let mut f = step_form(&s, &id, &source, (&list, index), &st, &errors).await?;
            f["new"] = json!(false);
            let mut r = recipe_view(
                &s,
                &sess,
                &id,
                &RecipeQuery::default(),
                json!({"form": f, "flash": {"kind": "error", "text": format!("The step {sid} is saved in the draft, with {} problem(s) shown beside their fields.", errors.len())}}),
            )
            .await?;
            *r.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
            Ok(r)
        }
    }
}

async fn delete_step(State(s): State<AppState>, sess: Session, Path((id, step)): Path<(String, String)>) -> UiResult {
    sess.require(Role::Editor)?;
    let w = working(&s, &id).await?;
    let mut source = w.source.clone();
    // The step, wherever it sits (inner steps of branches, splits and loops too).
    let Some(p) = placed_steps(&source).into_iter().find(|p| p.step.get("id").and_then(Value::as_str) == Some(step.as_str())) else {
        return Err(UiError::not_found(&format!("The recipe has no step `{step}`.")));
    };
    if let Some(list) = source.pointer_mut(&p.list).and_then(Value::as_array_mut)
        && p.index < list.len()
    {
        list.remove(p.index);
    }
    save_draft(&s, &sess, &id, source).await?;
    Ok(redirect_flash(&format!("/ui/recipes/{}", esc_path(&id)), "ok", &format!("The step {step} is removed from the draft.")))
}

async fn publish(State(s): State<AppState>, sess: Session, Path(id): Path<String>) -> UiResult {
    sess.require(Role::Editor)?;
    let w = working(&s, &id).await?;
    let mut source = w.source.clone();
    // Published for the first time: disabled, until a person previews and enables it.
    if w.published.is_none()
        && let Some(o) = source.as_object_mut()
    {
        o.entry("enabled").or_insert(Value::Bool(false));
    }
    let text = Bytes::from(pretty(&source));
    let saved = if w.published.is_some() {
        api::recipes::update(State(s.clone()), Path(id.clone()), json_headers(), text).await.map(|j| j.0)
    } else {
        api::recipes::create(State(s.clone()), json_headers(), text).await.map(|(_, j)| j.0)
    };
    match saved {
        Ok(saved) => {
            s.runner.store().ui_delete_draft(&id).await?;
            let msg = if saved.new_version {
                format!("Published as version {}.", saved.recipe.version)
            } else {
                "Nothing to publish: the draft is the current version.".to_string()
            };
            Ok(redirect_flash(&format!("/ui/recipes/{}", esc_path(&id)), "ok", &msg))
        }
        Err(e) => {
            let mut r = recipe_view(
                &s,
                &sess,
                &id,
                &RecipeQuery::default(),
                json!({"diagnostics": diagnostics(&e), "problem": format!("Not published: {}", e.message)}),
            )
            .await?;
            *r.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
            Ok(r)
        }
    }
}

async fn discard(State(s): State<AppState>, sess: Session, Path(id): Path<String>) -> UiResult {
    sess.require(Role::Editor)?;
    s.runner.store().ui_delete_draft(&id).await?;
    if s.runner.store().get_recipe(&id).await?.is_none() {
        return Ok(redirect_flash("/ui/recipes", "ok", &format!("The draft {id} is deleted.")));
    }
    Ok(redirect_flash(&format!("/ui/recipes/{}", esc_path(&id)), "ok", "The draft is discarded: the current version stays."))
}

async fn listen(State(s): State<AppState>, sess: Session, Path(id): Path<String>) -> UiResult {
    sess.require(Role::Editor)?;
    let w = working(&s, &id).await?;
    let Some(path) = w
        .source
        .pointer("/trigger/with/path")
        .and_then(Value::as_str)
        .filter(|_| w.source.pointer("/trigger/app").and_then(Value::as_str) == Some("webhook"))
    else {
        return Err(invalid("Only a webhook recipe listens for a sample request."));
    };
    if s.runner.hook(path).is_some() {
        return Ok(redirect_flash(
            &format!("/ui/recipes/{}", esc_path(&id)),
            "error",
            "An enabled recipe takes this address: its requests start runs. Disable it to catch a sample, or read a run's event.",
        ));
    }
    s.runner.store().ui_listen_sample(path, &id, s.runner.now_ms() + LISTEN_MS).await?;
    Ok(redirect_flash(
        &format!("/ui/recipes/{}", esc_path(&id)),
        "ok",
        "Listening for 10 minutes: send a request to the webhook's address, then reload this page.",
    ))
}

/// Keeps a request to `/hooks/{path}` as a sample when no enabled recipe takes the path and
/// the editor listens on it; `None` when nobody listens (the caller answers 404).
pub async fn capture_sample(
    s: &AppState,
    path: &str,
    query: &std::collections::BTreeMap<String, String>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Option<Response>, ApiError> {
    let raw = axum::body::to_bytes(body, 1024 * 1024)
        .await
        .map_err(|_| ApiError::new(crate::error::Code::PayloadTooLarge, "a sample request is at most 1 MiB"))?;
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase();
    let body: Value = if ct.contains("x-www-form-urlencoded") {
        Value::Object(form_urlencoded::parse(&raw).map(|(k, v)| (k.into_owned(), Value::String(v.into_owned()))).collect())
    } else {
        serde_json::from_slice(&raw).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&raw).into_owned()))
    };
    let now = s.runner.now_ms();
    let safe: Map<String, Value> = headers
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "authorization" | "cookie" | "proxy-authorization"))
        .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str().to_string(), Value::String(v.to_string()))))
        .collect();
    let payload = json!({"body": body, "headers": safe, "query": query, "received_at": enlace_runner::clock::rfc3339(now)});
    if !s.runner.store().ui_capture_sample(path, &payload, now).await? {
        return Ok(None);
    }
    Ok(Some(
        (
            StatusCode::ACCEPTED,
            axum::Json(json!({"sample": true, "message": "kept as the sample request of the recipe being built; no run was started"})),
        )
            .into_response(),
    ))
}

/// The event a test of a step starts from: the caught sample request, else a request with
/// an email and a name for a webhook, else the trigger's declared sample.
pub(super) async fn sample_event(s: &AppState, id: &str, recipe: &enlace_recipe::Recipe) -> Result<Value, UiError> {
    Ok(match s.runner.store().ui_sample(id).await?.and_then(|x| x.payload) {
        Some(p) => p,
        None => match recipe.hook() {
            Some(_) => {
                json!({"body": {"email": "ana@example.com", "name": "Ana"}, "headers": {}, "query": {}, "received_at": enlace_runner::clock::rfc3339(s.runner.now_ms())})
            }
            None => s
                .runner
                .registry()
                .get(&recipe.trigger.app)
                .and_then(|c| c.manifest.trigger(&recipe.trigger.event))
                .map(|t| t.sample.clone())
                .unwrap_or(json!({})),
        },
    })
}

/// Runs the working recipe up to `step` as a dry run on a throwaway store.
async fn test_step(State(s): State<AppState>, sess: Session, Path((id, step)): Path<(String, String)>) -> UiResult {
    sess.require(Role::Editor)?;
    let w = working(&s, &id).await?;
    let steps = steps_of(&w.source);
    let Some(i) = steps.iter().position(|st| st.get("id").and_then(Value::as_str) == Some(step.as_str())) else {
        return Err(UiError::not_found(&format!("The recipe has no step `{step}`.")));
    };
    let mut cut = w.source.clone();
    cut["steps"] = Value::Array(steps[..=i].to_vec());
    let q = RecipeQuery::default();
    let recipe = match check(&s, &cut) {
        Ok(r) => r,
        Err(d) => {
            let list: Vec<Value> = d.iter().map(|x| json!({"path": x.path, "message": x.message, "line": Value::Null})).collect();
            return recipe_view(&s, &sess, &id, &q, json!({"test": {"step": step, "problem": "The steps up to this one do not validate yet; fix them first.", "diagnostics": list}})).await;
        }
    };
    let event = sample_event(&s, &id, &recipe).await?;
    let store = enlace_store::Store::temporary().await?;
    let clock = enlace_runner::ManualClock::new(s.runner.now_ms());
    let config = enlace_runner::RunnerConfig { dry_run: true, concurrency: 1, ..enlace_runner::RunnerConfig::default() };
    let runner =
        enlace_runner::Runner::new(store, s.runner.registry().clone(), config, s.runner.transport().clone(), Arc::new(clock.clone()));
    let detail = runner.run_once(&recipe, event, &clock).await?;
    let calls = runner.take_dry_calls();
    let rec = detail.steps.iter().rev().find(|x| x.step_id == step);
    let requests: Vec<Value> = calls
        .iter()
        .filter(|c| c.step_key.ends_with(&step))
        .flat_map(|c| c.requests.iter().map(|r| json!(format!("{} {}", r.method, r.url))))
        .collect();
    let result = json!({
        "step": step,
        "status": rec.map(|r| r.status.as_str()).unwrap_or(if detail.run.status == RunStatus::Filtered { "filtered before this step" } else { "not reached" }),
        "input": rec.and_then(|r| r.input.as_ref()).map(pretty),
        "output": rec.and_then(|r| r.output.as_ref()).map(pretty),
        "error": rec.and_then(|r| r.error.as_ref()).map(super::pages::explain).or_else(|| detail.run.error.as_ref().map(super::pages::explain)),
        "requests": requests,
    });
    recipe_view(&s, &sess, &id, &q, json!({"test": result})).await
}
