//! The pages behind a session. Each handler checks the role it needs, calls what the API
//! calls, and renders a template.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect};
use axum::routing::{get, post};
use enlace_core::{AuthKind, Credentials, GrantType};
use enlace_store::{ContactFilter, ContactKey, RunFilter, RunStatus};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{Form, Role, Session, UiError, UiResult, auth, page, redirect_flash};
use crate::AppState;
use crate::api;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(home))
        .route("/ui", get(home))
        .route("/ui/runs", get(runs))
        .route("/ui/runs/{id}", get(run))
        .route("/ui/runs/{id}/replay", post(replay))
        .route("/ui/runs/{id}/cancel", post(cancel))
        .route("/ui/recipes/{id}/approvals", post(approvals))
        .route("/ui/apps", get(apps))
        .route("/ui/apps/{app}/connect", get(connect_page).post(connect_submit))
        .route("/ui/connections", get(connections))
        .route("/ui/connections/{id}", get(connection))
        .route("/ui/connections/{id}/test", post(connection_test))
        .route("/ui/connections/{id}/reconnect", post(connection_reconnect))
        .route("/ui/connections/{id}/credentials", post(connection_credentials))
        .route("/ui/recipes", get(recipes))
        .route("/ui/recipes/{id}/preview", post(recipe_preview))
        .route("/ui/recipes/{id}/enable", post(recipe_enable))
        .route("/ui/recipes/{id}/disable", post(recipe_disable))
        .route("/ui/recipes/{id}/rollback", post(recipe_rollback))
        .route("/ui/contacts", get(contacts))
        .route("/ui/contacts/{id}", get(contact))
        .route("/ui/contacts/{id}/export", get(contact_export))
        .route("/ui/contacts/{id}/erase", post(contact_erase))
        .route("/ui/tokens", get(tokens).post(token_create))
        .route("/ui/tokens/{name}/revoke", post(token_revoke))
        .route("/ui/users", get(users).post(user_create))
        .route("/ui/users/{id}/role", post(user_role))
        .route("/ui/users/{id}/password", post(user_password))
        .route("/ui/users/{id}/delete", post(user_delete))
}

/// A time for people: `2026-11-26 10:42:29 UTC`.
pub fn when(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map(|d| d.format("%Y-%m-%d %H:%M:%S UTC").to_string()).unwrap_or_default()
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

fn esc_path(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>().replace('+', "%20")
}

// ---------------------------------------------------------------- home

async fn home(State(s): State<AppState>, sess: Session) -> UiResult {
    let recipes = s.runner.catalog().all();
    let failed = s.runner.store().list_runs(&RunFilter { status: Some(RunStatus::Failed), limit: 10, ..Default::default() }).await?;
    let broken: Vec<Value> = s
        .runner
        .store()
        .list_connections()
        .await?
        .iter()
        .filter(|c| c.status == enlace_runner::oauth::NEEDS_RECONNECT || c.status == "error")
        .map(|c| json!({"id": c.id, "name": c.name, "status": c.status}))
        .collect();
    Ok(page(
        &sess,
        "Overview",
        "home",
        json!({
            "recipes": recipes.len(),
            "enabled": recipes.iter().filter(|c| c.row.enabled).count(),
            "failed": failed.iter().map(run_row).collect::<Vec<_>>(),
            "broken": broken,
        }),
    ))
}

// ---------------------------------------------------------------- runs

fn status_badge(status: &str) -> &'static str {
    match status {
        "succeeded" => "ok",
        "failed" => "bad",
        "cancelled" | "filtered" => "muted",
        _ => "warn",
    }
}

fn run_row(r: &enlace_store::RunRow) -> Value {
    json!({
        "id": r.id,
        "recipe": r.recipe_id,
        "version": r.recipe_version,
        "status": r.status.as_str(),
        "badge": status_badge(r.status.as_str()),
        "attempt": r.attempt,
        "created": when(r.created_at),
        "finished": r.finished_at.map(when),
    })
}

#[derive(Debug, Deserialize, Default)]
pub struct RunsQuery {
    recipe: Option<String>,
    status: Option<String>,
    since: Option<String>,
    until: Option<String>,
    before: Option<String>,
}

/// `2026-11-26T10:00` (a date-time field, read as UTC) or RFC 3339.
fn parse_when(field: &str, v: &Option<String>) -> Result<Option<i64>, UiError> {
    let Some(t) = v.as_deref().map(str::trim).filter(|t| !t.is_empty()) else { return Ok(None) };
    if let Ok(d) = chrono::DateTime::parse_from_rfc3339(t) {
        return Ok(Some(d.timestamp_millis()));
    }
    for f in ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"] {
        if let Ok(d) = chrono::NaiveDateTime::parse_from_str(t, f) {
            return Ok(Some(d.and_utc().timestamp_millis()));
        }
    }
    Err(UiError::new(
        StatusCode::BAD_REQUEST,
        "Please check the filter",
        &format!("`{t}` in “{field}” is not a date and time."),
        Some("Use the date picker, or write it like 2026-11-26T10:00 (UTC)."),
    ))
}

async fn runs(State(s): State<AppState>, sess: Session, Query(q): Query<RunsQuery>) -> UiResult {
    let empty = |v: &Option<String>| v.as_deref().map(str::trim).filter(|v| !v.is_empty()).map(str::to_string);
    let status = match empty(&q.status) {
        None => None,
        Some(st) => Some(RunStatus::parse(&st).ok_or_else(|| {
            UiError::new(StatusCode::BAD_REQUEST, "Please check the filter", &format!("`{st}` is not a run status."), None)
        })?),
    };
    let limit = 50;
    let filter = RunFilter {
        recipe_id: empty(&q.recipe),
        status,
        since: parse_when("from", &q.since)?,
        until: parse_when("until", &q.until)?,
        before: empty(&q.before),
        limit,
    };
    let rows = s.runner.store().list_runs(&filter).await?;
    let next = if rows.len() as i64 == limit { rows.last().map(|r| r.id.clone()) } else { None };
    let mut next_q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in [("recipe", &q.recipe), ("status", &q.status), ("since", &q.since), ("until", &q.until)] {
        if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
            next_q.append_pair(k, v);
        }
    }
    let recipes: Vec<Value> = s
        .runner
        .catalog()
        .all()
        .iter()
        .map(|c| json!({"id": c.row.id, "selected": q.recipe.as_deref() == Some(c.row.id.as_str())}))
        .collect();
    let statuses: Vec<Value> =
        RunStatus::ALL.iter().map(|st| json!({"value": st.as_str(), "selected": q.status.as_deref() == Some(st.as_str())})).collect();
    Ok(page(
        &sess,
        "Runs",
        "runs",
        json!({
            "runs": rows.iter().map(run_row).collect::<Vec<_>>(),
            "recipes": recipes,
            "statuses": statuses,
            "since": q.since, "until": q.until,
            "next": next.map(|n| { next_q.append_pair("before", &n); next_q.finish() }),
        }),
    ))
}

/// An error in plain words, with what to do, from its class.
pub fn explain(error: &Value) -> Value {
    let class = error.get("class").and_then(Value::as_str).unwrap_or("");
    let (what, todo) = match class {
        "auth" => (
            "The app refused the connection's credentials: the key or password is wrong, expired, or its access was withdrawn.",
            "Open the connection, give it new credentials (or sign in again), then replay the run.",
        ),
        "rate_limited" => ("The app said too many requests were sent, and the retries ran out.", "Wait a little, then replay the run."),
        "transient" => (
            "The app or the network failed for a moment (a timeout, a refused connection or a server error), and the retries ran out.",
            "Check that the app or server is up, then replay: the steps that worked are not run again.",
        ),
        "permanent" => (
            "The app refused the request, and would refuse it again if it were sent the same way.",
            "Read the app's message below; change the recipe or the data, then replay with the latest version.",
        ),
        "bad_input" => (
            "The step's input is not what the app accepts.",
            "Fix the field the message names in the recipe, save, then replay with the latest version.",
        ),
        "maybe_delivered" => (
            "The call may have reached the app, but no answer came back, so Enlace does not send it again by itself.",
            "Check in the app whether it happened; replay only if it did not.",
        ),
        _ => ("The run stopped with an error.", "Read the message below; fix the cause, then replay the run."),
    };
    json!({
        "what": what,
        "todo": todo,
        "class": class,
        "message": error.get("message").and_then(Value::as_str).map(str::to_string).unwrap_or_else(|| pretty(error)),
        "hint": error.get("hint").and_then(Value::as_str),
        "step": error.get("step").and_then(Value::as_str),
    })
}

async fn run(State(s): State<AppState>, sess: Session, Path(id): Path<String>) -> UiResult {
    let d = s.runner.store().run_detail(&id).await?.ok_or_else(|| UiError::not_found(&format!("There is no run `{id}`.")))?;
    let st = d.run.status;
    let steps: Vec<Value> = d
        .steps
        .iter()
        .map(|x| {
            json!({
                "key": x.key, "kind": x.kind, "status": x.status.as_str(), "badge": status_badge(x.status.as_str()),
                "attempts": x.attempts,
                "input": x.input.as_ref().map(pretty), "output": x.output.as_ref().map(pretty),
                "error": x.error.as_ref().map(explain),
                "reconnect": x.error.as_ref().and_then(|e| e.get("connection")).and_then(Value::as_str).filter(|_| x.status.as_str() == "waiting"),
                "duration_ms": x.finished_at.map(|f| f - x.started_at),
            })
        })
        .collect();
    let held: Vec<Value> = if st == RunStatus::Waiting {
        s.runner
            .store()
            .held_sends(Some(&d.run.recipe_id))
            .await?
            .into_iter()
            .filter(|h| h.run_id == d.run.id)
            .map(|h| json!({"message": h.message_key, "recipient": h.recipient, "channel": h.channel, "reason": h.reason}))
            .collect()
    } else {
        vec![]
    };
    let can_replay = matches!(st, RunStatus::Failed | RunStatus::Cancelled);
    let can_cancel = matches!(st, RunStatus::Queued | RunStatus::Running | RunStatus::Waiting);
    Ok(page(
        &sess,
        &format!("Run {}", d.run.id),
        "run",
        json!({
            "run": run_row(&d.run),
            "due": if matches!(st, RunStatus::Queued | RunStatus::Waiting) { d.run.due_at.map(when) } else { None },
            "error": d.run.error.as_ref().map(explain),
            "event": {"source": d.event.source, "received": when(d.event.received_at), "payload": pretty(&d.event.payload)},
            "steps": steps,
            "held": held,
            "can_replay": can_replay && sess.role.at_least(Role::Editor),
            "can_cancel": can_cancel && sess.role.at_least(Role::Editor),
        }),
    ))
}

async fn replay(State(s): State<AppState>, sess: Session, Path(id): Path<String>, body: Bytes) -> UiResult {
    sess.require(Role::Editor)?;
    let latest = Form::parse(&body).get("latest_version") == Some("true");
    match s.runner.replay(&id, latest).await {
        Ok(row) => Ok(redirect_flash(
            &format!("/ui/runs/{}", esc_path(&row.id)),
            "ok",
            "Replaying from the failed step: the steps that worked are not run again.",
        )),
        Err(e) => Ok(redirect_flash(&format!("/ui/runs/{}", esc_path(&id)), "error", &UiError::from(e).message)),
    }
}

async fn cancel(State(s): State<AppState>, sess: Session, Path(id): Path<String>) -> UiResult {
    sess.require(Role::Editor)?;
    match s.runner.cancel(&id).await {
        Ok(_) => Ok(redirect_flash(&format!("/ui/runs/{}", esc_path(&id)), "ok", "The run is cancelled.")),
        Err(e) => Ok(redirect_flash(&format!("/ui/runs/{}", esc_path(&id)), "error", &UiError::from(e).message)),
    }
}

async fn approvals(State(s): State<AppState>, sess: Session, Path(id): Path<String>, body: Bytes) -> UiResult {
    sess.require(Role::Editor)?;
    let form = Form::parse(&body);
    let approve = match form.get("decision") {
        Some("approve") => true,
        Some("reject") => false,
        _ => return Err(UiError::new(StatusCode::BAD_REQUEST, "Please check the input", "Choose approve or reject.", None)),
    };
    let messages: Vec<String> = form.0.iter().filter(|(k, _)| k == "message").map(|(_, v)| v.clone()).collect();
    let back = form.get("back").filter(|b| b.starts_with("/ui/")).unwrap_or("/ui/runs").to_string();
    let rows = s.runner.store().decide_held_sends(&id, (!messages.is_empty()).then_some(messages), approve, s.runner.now_ms()).await?;
    let verb = if approve { "approved: they are being sent" } else { "rejected: they will not be sent" };
    Ok(redirect_flash(&back, "ok", &format!("{} message(s) {verb}.", rows.len())))
}

// ---------------------------------------------------------------- apps and connections

fn auth_label(a: AuthKind) -> &'static str {
    match a {
        AuthKind::None => "no account needed",
        AuthKind::ApiKey => "API key",
        AuthKind::Bearer => "access token",
        AuthKind::Basic => "user name and password",
        AuthKind::OAuth2 => "sign in (OAuth)",
        AuthKind::Smtp => "SMTP server",
        AuthKind::Imap => "IMAP mailbox",
    }
}

#[derive(Debug, Deserialize, Default)]
pub struct SearchQuery {
    q: Option<String>,
    tag: Option<String>,
}

async fn apps(State(s): State<AppState>, sess: Session, Query(q): Query<SearchQuery>) -> UiResult {
    let needle = q.q.as_deref().unwrap_or("").trim().to_lowercase();
    let reg = s.runner.registry();
    let mut list: Vec<Value> = reg
        .app_ids()
        .into_iter()
        .filter_map(|id| reg.get(id))
        .filter(|c| {
            let m = &c.manifest;
            needle.is_empty()
                || m.id.contains(&needle)
                || m.name.to_lowercase().contains(&needle)
                || m.description.to_lowercase().contains(&needle)
                || m.actions.iter().any(|a| a.name.to_lowercase().contains(&needle))
        })
        .map(|c| {
            let m = &c.manifest;
            json!({
                "id": m.id, "name": m.name, "description": m.description, "auth": auth_label(m.auth),
                "connectable": api::connections::takes_connections(c),
                "actions": m.actions.iter().map(|a| a.name.clone()).collect::<Vec<_>>(),
                "triggers": m.triggers.iter().map(|t| t.name.clone()).collect::<Vec<_>>(),
            })
        })
        .collect();
    list.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    Ok(page(&sess, "Apps", "apps", json!({"apps": list, "q": q.q, "count": list.len()})))
}

/// The form fields of a connection to `connector`: its credential kind's fields, or, for an
/// app users sign in to, the OAuth client.
fn connect_fields(connector: &enlace_core::Connector) -> (String, Vec<Value>) {
    let m = &connector.manifest;
    if m.auth == AuthKind::OAuth2 && m.oauth2.is_some() {
        let env = format!("ENLACE_OAUTH_{}_CLIENT_ID", m.id.to_ascii_uppercase());
        let has_env = std::env::var(&env).is_ok_and(|v| !v.trim().is_empty());
        let fields = vec![
            json!({"name": "client_id", "label": "Client id", "required": !has_env, "secret": false,
                   "help": if has_env { format!("Optional: {env} is set on the server.") } else { "The client id of the OAuth app registered with the vendor.".to_string() }}),
            json!({"name": "client_secret", "label": "Client secret", "required": false, "secret": true,
                   "help": "The OAuth app's client secret (leave empty for a public client, or when the server sets it)."}),
        ];
        return ("oauth2".into(), fields);
    }
    let kind = enlace_core::accepted_kinds(m.auth).first().copied().unwrap_or("bearer");
    let fields = enlace_core::credential_fields(kind)
        .unwrap_or_default()
        .iter()
        .map(|f| {
            let secret = matches!(f.name, "key" | "token" | "password" | "access_token");
            let label = {
                let mut l = f.name.replace('_', " ");
                if let Some(first) = l.get_mut(0..1) {
                    first.make_ascii_uppercase();
                }
                l
            };
            json!({"name": f.name, "label": label, "required": f.required, "secret": secret, "help": f.what.replace('`', ""),
                   "multiline": f.name == "ca_certificate", "number": f.name == "port"})
        })
        .collect();
    (kind.to_string(), fields)
}

async fn connect_page(State(s): State<AppState>, sess: Session, Path(app): Path<String>) -> UiResult {
    sess.require(Role::Editor)?;
    connect_form(&s, &sess, &app, None, &Form::default())
}

fn connect_form(s: &AppState, sess: &Session, app: &str, error: Option<(String, String)>, form: &Form) -> UiResult {
    let connector = s.runner.registry().get(app).ok_or_else(|| UiError::not_found(&format!("There is no app `{app}`.")))?;
    if !api::connections::takes_connections(connector) {
        return Err(UiError::new(
            StatusCode::BAD_REQUEST,
            "Nothing to connect",
            &format!("{} is built in: it needs no connection.", connector.manifest.name),
            None,
        ));
    }
    let (kind, mut fields) = connect_fields(connector);
    for f in &mut fields {
        let name = f["name"].as_str().unwrap_or("").to_string();
        if f["secret"] != json!(true) {
            f["value"] = json!(form.get(&name));
        }
        if let Some((field, msg)) = &error
            && *field == name
        {
            f["error"] = json!(msg);
        }
    }
    let m = &connector.manifest;
    let status = if error.is_some() { StatusCode::UNPROCESSABLE_ENTITY } else { StatusCode::OK };
    let field_names: Vec<&str> = fields.iter().filter_map(|f| f["name"].as_str()).collect();
    let general = error
        .as_ref()
        .filter(|(f, _)| !field_names.contains(&f.as_str()))
        .map(|(f, m)| if f.is_empty() { m.clone() } else { format!("{f}: {m}") });
    let mut r = page(
        sess,
        &format!("Connect {}", m.name),
        "connect",
        json!({
            "app": {"id": m.id, "name": m.name, "description": m.description, "auth": auth_label(m.auth)},
            "kind": kind, "oauth": kind == "oauth2", "fields": fields,
            "id": form.get("id").map(str::to_string).unwrap_or_else(|| m.id.replace('_', "-")),
            "name": form.get("name").map(str::to_string).unwrap_or_else(|| m.name.clone()),
            "error": general,
            "id_error": error.as_ref().filter(|(f, _)| f == "id").map(|(_, m)| m.clone()),
        }),
    );
    *r.status_mut() = status;
    Ok(r)
}

/// The credentials JSON from the connect form's fields.
fn credentials_from(kind: &str, fields: &[Value], form: &Form) -> Value {
    let mut map = Map::new();
    if kind == "oauth2" {
        map.insert("kind".into(), json!("oauth2"));
        map.insert("grant".into(), json!("authorization_code"));
    } else {
        map.insert("kind".into(), json!(kind));
    }
    for f in fields {
        let name = f["name"].as_str().unwrap_or("");
        let v = form.get(name).unwrap_or("");
        let v = if f["secret"] == json!(true) || f["multiline"] == json!(true) { v.to_string() } else { v.trim().to_string() };
        if v.is_empty() {
            continue;
        }
        if name == "port" {
            map.insert(name.into(), v.parse::<u64>().map(Value::from).unwrap_or(Value::String(v)));
        } else {
            map.insert(name.into(), Value::String(v));
        }
    }
    Value::Object(map)
}

async fn connect_submit(State(s): State<AppState>, sess: Session, headers: HeaderMap, Path(app): Path<String>, body: Bytes) -> UiResult {
    sess.require(Role::Editor)?;
    let form = Form::parse(&body);
    let connector = s.runner.registry().get(&app).ok_or_else(|| UiError::not_found(&format!("There is no app `{app}`.")))?;
    let (kind, fields) = connect_fields(connector);
    let new = api::connections::NewConnection {
        id: form.text("id"),
        app: app.clone(),
        name: Some(form.text("name")).filter(|n| !n.is_empty()),
        credentials: credentials_from(&kind, &fields, &form),
        rate_limit: None,
    };
    let (name, credentials, rate) = match api::connections::check_new(s.runner.registry(), &new) {
        Ok(x) => x,
        Err(e) => return connect_form(&s, &sess, &app, Some((e.path.clone().unwrap_or_default(), e.message.clone())), &form),
    };
    if let Err(e) = s.runner.store().create_connection(&new.id, &app, &name, &credentials, rate, s.runner.now_ms()).await {
        let e = crate::error::ApiError::from(e);
        return connect_form(&s, &sess, &app, Some(("id".into(), e.message)), &form);
    }
    api::connections::first_token(&s.runner, &new.id, &credentials).await?;
    if let Credentials::OAuth2Grant(g) = &credentials
        && g.grant == GrantType::AuthorizationCode
        && !g.can_refresh()
    {
        let base = api::connections::public_base(s.shared.config.public_url.as_deref(), &headers);
        let start = api::connections::start_authorization(&s.runner, &new.id, &base).await?;
        return Ok(Redirect::to(&start.authorize_url).into_response());
    }
    // Test it at once where the app can be tested: its health is visible from the start.
    let msg = match api::connections::run_test(&s.runner, &new.id, s.runner.now_ms()).await {
        Ok(t) if t.status == "ok" => format!("Connected, and the test passed: {}", t.message),
        Ok(t) if t.status == "untested" => "Connected. This app cannot be tested without running a recipe.".to_string(),
        Ok(t) => format!("Connected, but the test failed: {}", t.message),
        Err(e) => format!("Connected, but the test could not run: {}", UiError::from(e).message),
    };
    Ok(redirect_flash(&format!("/ui/connections/{}", esc_path(&new.id)), "ok", &msg))
}

fn health(status: &str) -> (&'static str, &'static str) {
    match status {
        "ok" => ("Working", "ok"),
        "untested" => ("Not tested yet", "muted"),
        s if s == enlace_runner::oauth::NEEDS_RECONNECT => ("Needs reconnecting", "bad"),
        "error" => ("Failing", "bad"),
        _ => ("Unknown", "muted"),
    }
}

fn connection_row(c: &enlace_store::ConnectionRow) -> Value {
    let (label, badge) = health(&c.status);
    json!({
        "id": c.id, "app": c.app, "name": c.name, "status": c.status, "health": label, "badge": badge,
        "message": c.status_message, "tested": c.tested_at.map(when),
        "broken": badge == "bad",
    })
}

async fn connections(State(s): State<AppState>, sess: Session) -> UiResult {
    let rows = s.runner.store().list_connections().await?;
    Ok(page(&sess, "Connections", "connections", json!({"connections": rows.iter().map(connection_row).collect::<Vec<_>>()})))
}

async fn connection(State(s): State<AppState>, sess: Session, Path(id): Path<String>) -> UiResult {
    let (row, creds) =
        s.runner.store().connection(&id).await?.ok_or_else(|| UiError::not_found(&format!("There is no connection `{id}`.")))?;
    let connector = s.runner.registry().get(&row.app);
    let oauth = matches!(&creds, Credentials::OAuth2Grant(g) if g.grant == GrantType::AuthorizationCode);
    let fields = connector.map(|c| connect_fields(c).1).unwrap_or_default();
    let fields: Vec<Value> = if oauth { vec![] } else { fields };
    Ok(page(
        &sess,
        &format!("Connection {}", row.name),
        "connection",
        json!({
            "c": connection_row(&row),
            "app_name": connector.map(|c| c.manifest.name.clone()).unwrap_or_else(|| row.app.clone()),
            "testable": connector.is_some_and(|c| c.manifest.connection_test),
            "oauth": oauth,
            "fields": fields,
        }),
    ))
}

async fn connection_test(State(s): State<AppState>, sess: Session, Path(id): Path<String>) -> UiResult {
    sess.require(Role::Editor)?;
    let back = format!("/ui/connections/{}", esc_path(&id));
    match api::connections::run_test(&s.runner, &id, s.runner.now_ms()).await {
        Ok(t) if t.status == "ok" => Ok(redirect_flash(&back, "ok", &format!("The test passed: {}", t.message))),
        Ok(t) if t.status == "untested" => Ok(redirect_flash(&back, "ok", &t.message)),
        Ok(t) => Ok(redirect_flash(&back, "error", &format!("The test failed: {}", t.message))),
        Err(e) => Ok(redirect_flash(&back, "error", &UiError::from(e).message)),
    }
}

async fn connection_reconnect(State(s): State<AppState>, sess: Session, headers: HeaderMap, Path(id): Path<String>) -> UiResult {
    sess.require(Role::Editor)?;
    let base = api::connections::public_base(s.shared.config.public_url.as_deref(), &headers);
    let start = api::connections::start_authorization(&s.runner, &id, &base).await?;
    Ok(Redirect::to(&start.authorize_url).into_response())
}

async fn connection_credentials(State(s): State<AppState>, sess: Session, Path(id): Path<String>, body: Bytes) -> UiResult {
    sess.require(Role::Editor)?;
    let form = Form::parse(&body);
    let back = format!("/ui/connections/{}", esc_path(&id));
    let (row, _) = s.runner.store().connection(&id).await?.ok_or_else(|| UiError::not_found(&format!("There is no connection `{id}`.")))?;
    let connector =
        s.runner.registry().get(&row.app).ok_or_else(|| UiError::not_found(&format!("The app `{}` is not installed.", row.app)))?;
    let (kind, fields) = connect_fields(connector);
    let credentials = match api::connections::check_credentials(connector, &credentials_from(&kind, &fields, &form)) {
        Ok(c) => c,
        Err(e) => return Ok(redirect_flash(&back, "error", &UiError::from(e).message)),
    };
    let now = s.runner.now_ms();
    s.runner.store().save_connection_credentials(&id, &credentials, Some(("untested", "new credentials")), now).await?;
    api::connections::first_token(&s.runner, &id, &credentials).await?;
    s.runner.connection_repaired(&id).await?;
    let msg = match api::connections::run_test(&s.runner, &id, s.runner.now_ms()).await {
        Ok(t) if t.status == "ok" => "New credentials saved, and the test passed. Runs held for this connection resume.".to_string(),
        Ok(t) if t.status == "untested" => "New credentials saved. Runs held for this connection resume.".to_string(),
        Ok(t) => format!("New credentials saved, but the test failed: {}", t.message),
        Err(e) => UiError::from(e).message,
    };
    Ok(redirect_flash(&back, "ok", &msg))
}

// ---------------------------------------------------------------- recipes

async fn recipes(State(s): State<AppState>, sess: Session) -> UiResult {
    let mut list: Vec<Value> = s
        .runner
        .catalog()
        .all()
        .iter()
        .map(|c| {
            json!({
                "id": c.row.id, "name": c.recipe.name, "enabled": c.row.enabled, "version": c.row.version,
                "trigger": format!("{}.{}", c.recipe.trigger.app, c.recipe.trigger.event),
                "steps": c.recipe.steps.len(), "updated": when(c.row.updated_at),
            })
        })
        .collect();
    list.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    Ok(page(&sess, "Recipes", "recipes", json!({"recipes": list})))
}

/// A line diff of two texts (longest common subsequence), for versions.
pub fn line_diff(old: &str, new: &str) -> Vec<Value> {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let (n, m) = (a.len(), b.len());
    if n * m > 4_000_000 {
        return vec![json!({"op": "note", "text": "(too long to compare line by line)"})];
    }
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] { lcs[i + 1][j + 1] + 1 } else { lcs[i + 1][j].max(lcs[i][j + 1]) };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, vec![]);
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            out.push(json!({"op": "same", "text": a[i]}));
            i += 1;
            j += 1;
        } else if j < m && (i == n || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out.push(json!({"op": "add", "text": b[j]}));
            j += 1;
        } else {
            out.push(json!({"op": "del", "text": a[i]}));
            i += 1;
        }
    }
    out
}

async fn recipe_rollback(State(s): State<AppState>, sess: Session, Path(id): Path<String>, body: Bytes) -> UiResult {
    sess.require(Role::Editor)?;
    let form = Form::parse(&body);
    let v: i64 = form
        .text("version")
        .parse()
        .map_err(|_| UiError::new(StatusCode::BAD_REQUEST, "Please check the input", "Choose a version to roll back to.", None))?;
    let old =
        s.runner.store().recipe_version(&id, v).await?.ok_or_else(|| UiError::not_found(&format!("Recipe `{id}` has no version {v}.")))?;
    let text = pretty(&old.body);
    let mut h = HeaderMap::new();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    match api::recipes::update(State(s.clone()), Path(id.clone()), h, Bytes::from(text)).await {
        Ok(axum::Json(saved)) => Ok(redirect_flash(
            &format!("/ui/recipes/{}", esc_path(&id)),
            "ok",
            &format!("Rolled back: version {v}'s content is now version {}.", saved.recipe.version),
        )),
        Err(e) => Ok(redirect_flash(
            &format!("/ui/recipes/{}", esc_path(&id)),
            "error",
            &format!("Version {v} no longer validates: {}", e.message),
        )),
    }
}

/// Runs the simulator on the recipe: sample events from the form (one JSON object a line, as
/// `enlace simulate` reads them), or, for a webhook recipe with none given, one request
/// with the trigger's sample.
async fn simulate_recipe(s: &AppState, id: &str, events: &str, contacts: usize) -> Result<Value, UiError> {
    let req = api::simulate::SimulateRequest {
        recipes: vec![id.to_string()],
        contacts: None,
        generate_contacts: (contacts > 0).then_some(contacts),
        events: Some(events.to_string()).filter(|e| !e.trim().is_empty()),
        seed: 1,
        start: None,
        duration: "30d".into(),
        policy: None,
        scoring: None,
        list: 200,
    };
    let axum::Json(report) = api::simulate::run(State(s.clone()), axum::Json(req)).await.map_err(UiError::from)?;
    Ok(report)
}

fn preview_summary(report: &Value) -> Value {
    let decisions = report.get("decisions").cloned().unwrap_or(json!({}));
    let n = |k: &str| decisions.get(k).and_then(Value::as_u64).unwrap_or(0);
    let messages: Vec<Value> = report
        .get("messages")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|m| {
                    json!({"to": m["to"].as_array().map(|t| t.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", ")),
                       "when": m["sent_at"].as_str().or(m["due"].as_str()), "channel": m["channel"], "step": m["step"],
                       "decision": m["decision"], "reason": m["reason"]})
                })
                .collect()
        })
        .unwrap_or_default();
    json!({
        "sent": n("sent"), "deferred": n("deferred"), "blocked": n("blocked"), "held": n("held"),
        "messages": messages,
        "runs": report.get("runs").map(pretty),
        "calls": report.get("call_counts").and_then(Value::as_object).map(|o| o.iter().map(|(k, v)| json!({"call": k, "count": v})).collect::<Vec<_>>()),
    })
}

async fn recipe_preview(State(s): State<AppState>, sess: Session, Path(id): Path<String>, body: Bytes) -> UiResult {
    let form = Form::parse(&body);
    let mut events = form.get("events").unwrap_or("").to_string();
    if events.trim().is_empty() {
        let cur = api::recipes::current(&s, &id).await.map_err(UiError::from)?;
        if cur.recipe.hook().is_some() {
            let sample =
                form.get("sample").filter(|t| !t.trim().is_empty()).unwrap_or("{\"email\": \"ana@example.com\", \"name\": \"Ana\"}");
            let body: Value = serde_json::from_str(sample).map_err(|e| {
                UiError::new(
                    StatusCode::BAD_REQUEST,
                    "Please check the sample",
                    &format!("The sample request is not JSON: {e}"),
                    Some("Write a JSON object, like {\"email\": \"ana@example.com\"}."),
                )
            })?;
            events = json!({"at": enlace_runner::clock::rfc3339(s.runner.now_ms()), "webhook": id, "body": body}).to_string();
        }
    }
    let contacts = form.text("contacts").parse::<usize>().unwrap_or(0).min(api::simulate::MAX_API_CONTACTS);
    let report = simulate_recipe(&s, &id, &events, contacts).await?;
    super::editor::recipe_view(
        &s,
        &sess,
        &id,
        &Default::default(),
        json!({"preview": preview_summary(&report), "events": events, "preview_sample": form.get("sample")}),
    )
    .await
}

async fn recipe_enable(State(s): State<AppState>, sess: Session, Path(id): Path<String>) -> UiResult {
    sess.require(Role::Editor)?;
    match s.runner.set_enabled(&id, true).await {
        Ok(_) => Ok(redirect_flash(&format!("/ui/recipes/{}", esc_path(&id)), "ok", "The recipe is enabled: it runs on every new event.")),
        Err(e) => Ok(redirect_flash(&format!("/ui/recipes/{}", esc_path(&id)), "error", &UiError::from(e).message)),
    }
}

async fn recipe_disable(State(s): State<AppState>, sess: Session, Path(id): Path<String>) -> UiResult {
    sess.require(Role::Editor)?;
    match s.runner.set_enabled(&id, false).await {
        Ok(_) => {
            Ok(redirect_flash(&format!("/ui/recipes/{}", esc_path(&id)), "ok", "The recipe is disabled: new events no longer start runs."))
        }
        Err(e) => Ok(redirect_flash(&format!("/ui/recipes/{}", esc_path(&id)), "error", &UiError::from(e).message)),
    }
}

// ---------------------------------------------------------------- contacts

async fn contacts(State(s): State<AppState>, sess: Session, Query(q): Query<SearchQuery>) -> UiResult {
    let email = q.q.as_deref().map(str::trim).filter(|e| !e.is_empty()).map(str::to_string);
    let tag = q.tag.as_deref().map(str::trim).filter(|e| !e.is_empty()).map(str::to_string);
    let rows = s.runner.store().list_contacts(&ContactFilter { email, tag, after: None, limit: 100 }).await?;
    let list: Vec<Value> = rows
        .iter()
        .map(|c| json!({"id": c.id, "email": c.email, "name": c.fields.get("name").and_then(Value::as_str), "tags": c.tags, "score": (c.score * 10.0).round() / 10.0, "updated": when(c.updated_at)}))
        .collect();
    Ok(page(&sess, "Contacts", "contacts", json!({"contacts": list, "q": q.q, "tag": q.tag})))
}

async fn contact(State(s): State<AppState>, sess: Session, Path(id): Path<String>) -> UiResult {
    let Some(d) = s.runner.store().contact_detail(ContactKey::Id(id.clone())).await? else {
        return Err(UiError::not_found(&format!("There is no contact `{id}` (it may have been erased).")));
    };
    let c = &d.contact;
    Ok(page(
        &sess,
        &c.email,
        "contact",
        json!({
            "c": {"id": c.id, "email": c.email, "tags": c.tags, "score": (c.score * 10.0).round() / 10.0, "created": when(c.created_at), "version": c.version},
            "fields": c.fields.iter().map(|(k, v)| json!({"name": k, "value": match v { Value::String(s) => s.clone(), v => v.to_string() }})).collect::<Vec<_>>(),
            "consents": d.consents.iter().map(|x| json!({
                "purpose": x.purpose, "channel": x.channel, "status": serde_json::to_value(x.status).unwrap_or(Value::Null),
                "source": x.evidence.source, "ip": x.evidence.ip, "text": x.evidence.text, "recorded": when(x.evidence.recorded_at), "at": when(x.at),
            })).collect::<Vec<_>>(),
            "timeline": d.timeline.iter().map(|t| json!({"kind": t.kind, "at": when(t.at), "data": pretty(&t.data)})).collect::<Vec<_>>(),
        }),
    ))
}

async fn contact_export(State(s): State<AppState>, sess: Session, Path(id): Path<String>) -> UiResult {
    sess.require(Role::Admin)?;
    let doc = s
        .runner
        .store()
        .export_contact(ContactKey::Id(id.clone()), None, 1000, s.runner.now_ms())
        .await?
        .ok_or_else(|| UiError::not_found(&format!("There is no contact `{id}`.")))?;
    let body = serde_json::to_string_pretty(&doc).unwrap_or_default();
    let mut r = body.into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"contact-{}.json\"",
        id.replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "")
    )) {
        r.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(r)
}

async fn contact_erase(State(s): State<AppState>, sess: Session, Path(id): Path<String>, body: Bytes) -> UiResult {
    sess.require(Role::Admin)?;
    let form = Form::parse(&body);
    let back = format!("/ui/contacts/{}", esc_path(&id));
    if form.get("confirm") != Some("yes") {
        return Ok(redirect_flash(&back, "error", "Nothing was erased: tick the box to confirm the erasure."));
    }
    let by = format!("ui:{}", sess.username);
    let e = s.runner.store().erase(ContactKey::Id(id.clone()), &by, s.runner.now_ms()).await?;
    tracing::info!(erasure = %e.id, contact = %e.contact_id, by = %by, "contact erased");
    Ok(redirect_flash(
        "/ui/contacts",
        "ok",
        &format!(
            "The contact is erased: {} run(s) redacted, {} cancelled, {} audience removal(s) queued.",
            e.runs_redacted, e.runs_cancelled, e.removals_queued
        ),
    ))
}

// ---------------------------------------------------------------- tokens and users

async fn tokens(State(s): State<AppState>, sess: Session) -> UiResult {
    sess.require(Role::Admin)?;
    tokens_page(&s, &sess, None).await
}

async fn tokens_page(s: &AppState, sess: &Session, created: Option<(String, String)>) -> UiResult {
    let rows = s.runner.store().list_tokens().await?;
    Ok(page(
        sess,
        "API tokens",
        "tokens",
        json!({
            "tokens": rows.iter().map(|t| json!({"name": t.name, "created": when(t.created_at), "used": t.last_used_at.map(when)})).collect::<Vec<_>>(),
            "created": created.map(|(name, token)| json!({"name": name, "token": token})),
        }),
    ))
}

async fn token_create(State(s): State<AppState>, sess: Session, body: Bytes) -> UiResult {
    sess.require(Role::Admin)?;
    let name = Form::parse(&body).text("name");
    match api::admin::create_token(State(s.clone()), axum::Json(api::admin::NewToken { name })).await {
        Ok((_, axum::Json(t))) => {
            let mut r = tokens_page(&s, &sess, Some((t.name, t.token))).await?;
            r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            Ok(r)
        }
        Err(e) => Ok(redirect_flash("/ui/tokens", "error", &UiError::from(e).message)),
    }
}

async fn token_revoke(State(s): State<AppState>, sess: Session, Path(name): Path<String>) -> UiResult {
    sess.require(Role::Admin)?;
    if s.runner.store().revoke_token(&name).await? {
        Ok(redirect_flash("/ui/tokens", "ok", &format!("The token {name} is revoked: it no longer works.")))
    } else {
        Ok(redirect_flash("/ui/tokens", "error", &format!("There is no token {name}.")))
    }
}

async fn users(State(s): State<AppState>, sess: Session) -> UiResult {
    sess.require(Role::Admin)?;
    let rows = s.runner.store().ui_list_users().await?;
    let list: Vec<Value> = rows
        .iter()
        .map(|u| {
            json!({"id": u.id, "name": u.username, "role": u.role, "created": when(u.created_at), "me": u.id == sess.user_id,
                   "roles": Role::ALL.iter().map(|r| json!({"value": r.as_str(), "selected": r.as_str() == u.role})).collect::<Vec<_>>()})
        })
        .collect();
    Ok(page(
        &sess,
        "Users",
        "users",
        json!({"users": list, "min_password": auth::MIN_PASSWORD, "roles": Role::ALL.iter().map(|r| r.as_str()).collect::<Vec<_>>()}),
    ))
}

async fn user_create(State(s): State<AppState>, sess: Session, body: Bytes) -> UiResult {
    sess.require(Role::Admin)?;
    let form = Form::parse(&body);
    let name = match auth::check_username(&form.text("username")) {
        Ok(n) => n,
        Err(e) => return Ok(redirect_flash("/ui/users", "error", &e)),
    };
    let password = form.get("password").unwrap_or("");
    if let Err(e) = auth::check_password(password, form.get("confirm").unwrap_or("")) {
        return Ok(redirect_flash("/ui/users", "error", &e));
    }
    let role = Role::parse(form.get("role").unwrap_or("")).unwrap_or(Role::Viewer);
    match auth::create_account(&s, &name, password, role).await {
        Ok(u) => Ok(redirect_flash("/ui/users", "ok", &format!("The account {} ({}) is created.", u.username, u.role))),
        Err(e) => Ok(redirect_flash("/ui/users", "error", &e.message)),
    }
}

/// Whether removing `user_id`'s admin role (or account) would leave no admin.
async fn last_admin(s: &AppState, user_id: &str) -> Result<bool, UiError> {
    let users = s.runner.store().ui_list_users().await?;
    Ok(users.iter().filter(|u| u.role == "admin").all(|u| u.id == user_id))
}

async fn user_role(State(s): State<AppState>, sess: Session, Path(id): Path<String>, body: Bytes) -> UiResult {
    sess.require(Role::Admin)?;
    let role = Role::parse(Form::parse(&body).get("role").unwrap_or(""))
        .ok_or_else(|| UiError::new(StatusCode::BAD_REQUEST, "Please check the input", "Choose admin, editor or viewer.", None))?;
    if role != Role::Admin && last_admin(&s, &id).await? {
        return Ok(redirect_flash("/ui/users", "error", "This is the last admin: make another account admin first."));
    }
    s.runner.store().ui_set_role(&id, role.as_str(), s.runner.now_ms()).await?;
    Ok(redirect_flash("/ui/users", "ok", &format!("The role is now {}.", role.as_str())))
}

async fn user_password(State(s): State<AppState>, sess: Session, Path(id): Path<String>, body: Bytes) -> UiResult {
    sess.require(Role::Admin)?;
    let form = Form::parse(&body);
    let password = form.get("password").unwrap_or("");
    if let Err(e) = auth::check_password(password, form.get("confirm").unwrap_or("")) {
        return Ok(redirect_flash("/ui/users", "error", &e));
    }
    if auth::set_password(&s, &id, password).await? {
        Ok(redirect_flash(
            if id == sess.user_id { "/login" } else { "/ui/users" },
            "ok",
            "The password is changed; the account's sessions are signed out.",
        ))
    } else {
        Err(UiError::not_found("There is no such account."))
    }
}

async fn user_delete(State(s): State<AppState>, sess: Session, Path(id): Path<String>) -> UiResult {
    sess.require(Role::Admin)?;
    if last_admin(&s, &id).await? {
        return Ok(redirect_flash("/ui/users", "error", "This is the last admin: it cannot be deleted."));
    }
    s.runner.store().ui_delete_user(&id).await?;
    Ok(redirect_flash("/ui/users", "ok", "The account is deleted and signed out."))
}
