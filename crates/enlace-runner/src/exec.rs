//! The interpreter: runs one run's steps against its journal, and the poller that claims
//! due runs.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use enlace_core::action::{ActionContext, DynAction};
use enlace_core::http::HttpTransport;
use enlace_core::{ConnectorError, Credentials, ErrorClass, RateLimit};
use enlace_kit::RecordingTransport;
use enlace_recipe::model::{ActionStep, Delay, Mapping, OnError, Recipe, Respond, Step, StepKind, TriggerConfig};
use enlace_recipe::template::Data;
use enlace_store::{ConnectionRow, NewEvent, RateSpec, RunDetail, RunRow, RunStatus, RunUpdate, StepRecord, StepStatus};
use rand::Rng;
use serde_json::{Map, Value, json};
use tokio::sync::OwnedSemaphorePermit;

use crate::clock::rfc3339;
use crate::mask::Masker;
use crate::{DryCall, Inner, RunOutcome};

mod journey;

/// Why the walk through the steps stopped before the end.
enum Stop {
    Filtered,
    /// A journey's goal was reached (an exit rule marked `goal`): the run has succeeded.
    Goal,
    Park {
        status: RunStatus,
        due_at: i64,
    },
    Failed {
        error: Value,
    },
    /// Waiting, with no due time, until the connection is repaired (its credentials were
    /// refused and a refresh could not fix them).
    Hold {
        connection: String,
    },
    /// The run is no longer ours (cancelled, handed back) or the store failed: leave it.
    Lost,
}

type Flow = Result<(), Stop>;
type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Apps that live inside Enlace (their actions change only its own store): a simulation
/// runs them for real.
pub(crate) const LOCAL_APPS: &[&str] = &["contacts", "enlace", "web"];

/// Waits shorter than this are slept through in the worker; longer ones park the run.
const SHORT_WAIT: Duration = Duration::from_millis(1000);

/// Runs a run this node holds. `fresh` is the run just accepted by this process (its event
/// in hand, no journal yet), which saves reading it back.
pub(crate) async fn execute(inner: Arc<Inner>, run_id: String, permit: OwnedSemaphorePermit, fresh: Option<RunDetail>) {
    let _permit = permit;
    let detail = match fresh {
        Some(d) => d,
        None => match inner.store.run_detail(&run_id).await {
            Ok(Some(d)) => d,
            Ok(None) => return,
            Err(e) => {
                tracing::error!(run_id = %run_id, error = %e, "loading a run failed; it stays leased and is retried when the lease ends");
                return;
            }
        },
    };
    let node = inner.config.node_id.clone();
    if detail.run.status != RunStatus::Running || detail.run.owner.as_deref() != Some(node.as_str()) {
        return;
    }
    let recipe = match inner.catalog.version(&inner.store, &detail.run.recipe_id, detail.run.recipe_version).await {
        Ok(r) => r,
        Err(e) => {
            let error = json!({"class": "permanent", "message": e.to_string(), "hint": "fix the recipe, then replay the run with the latest version"});
            finish(&inner, &detail.run, vec![], vec![], Err(Stop::Failed { error }), None).await;
            return;
        }
    };
    let secrets = match inner.store.secrets(&recipe.secrets.iter().cloned().collect::<Vec<_>>()).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(run_id = %run_id, error = %e, "reading secrets failed");
            return;
        }
    };
    if let Some(missing) = recipe.secrets.iter().find(|n| !secrets.contains_key(*n)) {
        let error = json!({"class": "permanent", "message": format!("the secret `{missing}` is not set"), "hint": format!("set it with `enlace secrets set {missing}` or PUT /api/v1/secrets/{missing}, then replay the run")});
        finish(&inner, &detail.run, vec![], vec![], Err(Stop::Failed { error }), None).await;
        return;
    }
    let now = inner.clock.now_ms();
    let data = json!({
        "trigger": detail.event.payload,
        "steps": {},
        "vars": Value::Object(recipe.vars.clone()),
        "secrets": secrets,
        "run": {
            "id": detail.run.id,
            "recipe": detail.run.recipe_id,
            "started_at": rfc3339(detail.run.started_at.unwrap_or(now)),
            "attempt": detail.run.attempt,
            "now": rfc3339(now),
        },
    });
    let next_seq = detail.steps.iter().map(|s| s.seq).max().unwrap_or(0) + 1;
    let masker = Masker::new(secrets.into_values());
    let mut ex = Exec {
        inner: inner.clone(),
        run: detail.run.clone(),
        data: Data::new(data),
        journal: detail.steps.into_iter().map(|s| (s.key.clone(), s)).collect(),
        next_seq,
        pending: vec![],
        emitted: vec![],
        masker,
        credentials: HashMap::new(),
        connection_status: HashMap::new(),
        connection_limits: HashMap::new(),
        recipe: recipe.clone(),
        contact_id: None,
    };
    let flow = match ex.enter_journey().await {
        Ok(()) => ex.steps(&recipe.steps, String::new()).await,
        Err(stop) => Err(stop),
    };
    let response = match (&flow, &recipe.trigger.config) {
        (Ok(()), TriggerConfig::Webhook(w)) => match &w.respond {
            Respond::AfterRun { template, .. } if has_waiter(&inner, &run_id) => Some(render_response(template, &ex.data)),
            _ => None,
        },
        _ => None,
    };
    let Exec { pending, emitted, .. } = ex;
    finish(&inner, &detail.run, pending, emitted, flow, response).await;
}

/// Follows a run that another node executes, for a caller waiting on it (a synchronous
/// webhook on an ingress-only node): reads the run until it ends or parks, then answers
/// like a local worker would. Gives up when the caller does.
pub(crate) async fn follow(inner: Arc<Inner>, run_id: String, mut tx: tokio::sync::oneshot::Sender<RunOutcome>) {
    let mut pause = Duration::from_millis(2);
    loop {
        tokio::select! {
            _ = tx.closed() => return,
            _ = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(Duration::from_millis(50));
        let detail = match inner.store.run_detail(&run_id).await {
            Ok(Some(d)) => d,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(run_id = %run_id, error = %e, "following a run failed; retrying");
                continue;
            }
        };
        let run = &detail.run;
        let parked = run.status == RunStatus::Waiting || (run.status == RunStatus::Queued && run.started_at.is_some());
        if !run.status.is_final() && !parked {
            continue;
        }
        let mut response = None;
        if run.status == RunStatus::Succeeded
            && let Ok(recipe) = inner.catalog.version(&inner.store, &run.recipe_id, run.recipe_version).await
            && let TriggerConfig::Webhook(w) = &recipe.trigger.config
            && let Respond::AfterRun { template, .. } = &w.respond
        {
            response = Some(render_response(template, &finished_data(&detail)));
        }
        let _ = tx.send(RunOutcome { run_id: run.id.clone(), status: run.status, response, error: run.error.clone() });
        return;
    }
}

/// What a finished run's templates see, rebuilt from its journal: the trigger, and each
/// top-level step's output under `steps.<id>`. (Secrets are not read back for this.)
fn finished_data(detail: &RunDetail) -> Data {
    let mut steps = Map::new();
    for s in &detail.steps {
        if !s.key.contains('[')
            && let Some(out) = &s.output
        {
            steps.insert(s.step_id.clone(), out.clone());
        }
    }
    Data::new(json!({
        "trigger": detail.event.payload,
        "steps": steps,
        "run": {"id": detail.run.id, "recipe": detail.run.recipe_id, "attempt": detail.run.attempt},
    }))
}

fn has_waiter(inner: &Inner, run_id: &str) -> bool {
    inner.waiters.lock().unwrap_or_else(|e| e.into_inner()).contains_key(run_id)
}

fn render_response(template: &Mapping, data: &Data) -> Value {
    template.eval(data, "respond.after_run").unwrap_or_else(|e| json!({"error": e.to_string()}))
}

async fn finish(inner: &Arc<Inner>, run: &RunRow, pending: Vec<StepRecord>, emitted: Vec<NewEvent>, flow: Flow, response: Option<Value>) {
    let now = inner.clock.now_ms();
    let (update, status, error) = match flow {
        Ok(()) => (RunUpdate::Finish { status: RunStatus::Succeeded, error: None }, RunStatus::Succeeded, None),
        Err(Stop::Filtered) => (RunUpdate::Finish { status: RunStatus::Filtered, error: None }, RunStatus::Filtered, None),
        Err(Stop::Goal) => (RunUpdate::Finish { status: RunStatus::Succeeded, error: None }, RunStatus::Succeeded, None),
        Err(Stop::Failed { error }) => {
            (RunUpdate::Finish { status: RunStatus::Failed, error: Some(error.clone()) }, RunStatus::Failed, Some(error))
        }
        Err(Stop::Park { status, due_at }) => (RunUpdate::Park { status, due_at }, status, None),
        Err(Stop::Hold { connection }) => (RunUpdate::Hold { connection }, RunStatus::Waiting, None),
        Err(Stop::Lost) => {
            notify(inner, &run.id, RunOutcome { run_id: run.id.clone(), status: RunStatus::Running, response: None, error: None });
            return;
        }
    };
    let held = match &update {
        RunUpdate::Hold { connection } => Some(connection.clone()),
        _ => None,
    };
    let any_emitted = !emitted.is_empty();
    match inner.store.update_run(&run.id, &inner.config.node_id, pending, update, emitted, now).await {
        Ok(true) => {
            inner.metrics.runs.get_or_create(&vec![("status", status.as_str().to_string())]).inc();
            match status {
                RunStatus::Failed => {
                    tracing::warn!(run_id = %run.id, recipe = %run.recipe_id, error = %error.as_ref().map(|e| e.to_string()).unwrap_or_default(), "run failed")
                }
                _ => tracing::debug!(run_id = %run.id, recipe = %run.recipe_id, status = %status, "run moved"),
            }
            if matches!(status, RunStatus::Queued | RunStatus::Waiting) || any_emitted {
                inner.wake.notify_one();
            }
            // The connection may have been repaired between the failed call and this hold:
            // then nobody would release the run, so release it now.
            if let Some(c) = held
                && matches!(inner.store.connection(&c).await, Ok(Some((row, _))) if row.status != crate::oauth::NEEDS_RECONNECT)
            {
                let _ = inner.store.release_held_runs(&c, inner.clock.now_ms()).await;
                inner.wake.notify_one();
            }
            notify(inner, &run.id, RunOutcome { run_id: run.id.clone(), status, response, error });
        }
        Ok(false) => tracing::info!(run_id = %run.id, "the run was cancelled or handed back while it ran; its last result is dropped"),
        Err(e) => tracing::error!(run_id = %run.id, error = %e, "recording the end of a run failed; it runs again when its lease ends"),
    }
}

fn notify(inner: &Inner, run_id: &str, outcome: RunOutcome) {
    if let Some(tx) = inner.waiters.lock().unwrap_or_else(|e| e.into_inner()).remove(run_id) {
        let _ = tx.send(outcome);
    }
}

/// One journal entry's content, before it gets its key and sequence number.
struct Entry {
    status: StepStatus,
    input: Option<Value>,
    output: Option<Value>,
    error: Option<Value>,
    attempts: i64,
    started_at: i64,
}

struct Exec {
    inner: Arc<Inner>,
    run: RunRow,
    data: Data,
    journal: HashMap<String, StepRecord>,
    next_seq: i64,
    /// Journal entries not yet written: flushed before any outside call, and with the end.
    pending: Vec<StepRecord>,
    emitted: Vec<NewEvent>,
    masker: Masker,
    credentials: HashMap<String, Credentials>,
    /// The status of each connection read so far (`needs_reconnect` holds the run at once).
    connection_status: HashMap<String, String>,
    /// The user's rate limit of each connection read so far (on top of the app's own).
    connection_limits: HashMap<String, Option<RateSpec>>,
    recipe: Arc<Recipe>,
    /// The run's contact (contact-scoped recipes), once the journey is entered.
    contact_id: Option<String>,
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !(s.is_empty() || s == "false" || s == "0"),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

impl Exec {
    fn now(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    fn set_output(&mut self, id: &str, output: Value) {
        if let Some(steps) = self.data.get_mut().get_mut("steps").and_then(Value::as_object_mut) {
            steps.insert(id.to_string(), output);
        }
    }

    fn record(&mut self, key: &str, step: &Step, e: Entry) {
        self.record_as(key, &step.id, step.kind.name(), matches!(step.kind, StepKind::Action(_)), e)
    }

    /// Records a journal entry; `action` entries carry the call's idempotency key.
    fn record_as(&mut self, key: &str, step_id: &str, kind: &str, action: bool, e: Entry) {
        let Entry { status, input, output, error, attempts, started_at } = e;
        let seq = match self.journal.get(key) {
            Some(prev) => prev.seq,
            None => {
                let s = self.next_seq;
                self.next_seq += 1;
                s
            }
        };
        let finished =
            if matches!(status, StepStatus::Running | StepStatus::Waiting | StepStatus::Retrying) { None } else { Some(self.now()) };
        let rec = StepRecord {
            key: key.to_string(),
            seq,
            step_id: step_id.to_string(),
            kind: kind.to_string(),
            status,
            input,
            output,
            error,
            attempts,
            idempotency_key: action.then(|| format!("{}:{}", self.run.id, key)),
            started_at,
            finished_at: finished,
        };
        self.journal.insert(key.to_string(), rec.clone());
        self.pending.retain(|p| p.key != key);
        self.pending.push(rec);
    }

    /// Writes what is pending; `Lost` when the run is no longer ours.
    async fn flush(&mut self) -> Flow {
        if self.pending.is_empty() && self.emitted.is_empty() {
            return Ok(());
        }
        let steps = std::mem::take(&mut self.pending);
        let emitted = std::mem::take(&mut self.emitted);
        let any_emitted = !emitted.is_empty();
        match self.inner.store.record_steps(&self.run.id, &self.inner.config.node_id, steps, emitted, self.now()).await {
            Ok(true) => {
                if any_emitted {
                    self.inner.wake.notify_one();
                }
                Ok(())
            }
            Ok(false) => Err(Stop::Lost),
            Err(e) => {
                tracing::error!(run_id = %self.run.id, error = %e, "writing the journal failed");
                Err(Stop::Lost)
            }
        }
    }

    fn steps<'a>(&'a mut self, steps: &'a [Step], prefix: String) -> BoxFuture<'a, Flow> {
        Box::pin(async move {
            for step in steps {
                let key = format!("{prefix}{}", step.id);
                self.step(step, key, &prefix).await?;
            }
            Ok(())
        })
    }

    async fn step(&mut self, step: &Step, key: String, prefix: &str) -> Flow {
        let prev = self.journal.get(&key).cloned();
        let started = self.now();
        if prev.as_ref().is_none_or(|p| p.status != StepStatus::Succeeded) {
            self.check_exit(&key).await?;
        }
        match &step.kind {
            StepKind::Action(a) => self.action(step, a, key, prev).await,
            StepKind::Filter(t) => {
                let passed = match &prev {
                    Some(p) if matches!(p.status, StepStatus::Succeeded | StepStatus::Filtered) => {
                        p.output.as_ref().and_then(|o| o.get("passed")).and_then(Value::as_bool).unwrap_or(false)
                    }
                    _ => match t.eval(&self.data) {
                        Ok(v) => truthy(&v),
                        Err(e) => return self.template_failure(step, &key, "filter", e.message, started),
                    },
                };
                let status = if passed { StepStatus::Succeeded } else { StepStatus::Filtered };
                if prev.is_none() {
                    self.record(
                        &key,
                        step,
                        Entry {
                            status,
                            input: None,
                            output: Some(json!({"passed": passed})),
                            error: None,
                            attempts: 0,
                            started_at: started,
                        },
                    );
                }
                self.set_output(&step.id, json!({"passed": passed}));
                if passed { Ok(()) } else { Err(Stop::Filtered) }
            }
            StepKind::Branch { arms, otherwise } => {
                let chosen: Value = match prev.as_ref().and_then(|p| p.output.as_ref()).and_then(|o| o.get("path")) {
                    Some(p) if prev.as_ref().is_some_and(|p| p.status == StepStatus::Succeeded) => p.clone(),
                    _ => {
                        let mut chosen = if otherwise.is_some() { json!("else") } else { Value::Null };
                        for (i, arm) in arms.iter().enumerate() {
                            match arm.condition.eval(&self.data) {
                                Ok(v) if truthy(&v) => {
                                    chosen = json!(i);
                                    break;
                                }
                                Ok(_) => {}
                                Err(e) => return self.template_failure(step, &key, &format!("branch[{i}].if"), e.message, started),
                            }
                        }
                        self.record(
                            &key,
                            step,
                            Entry {
                                status: StepStatus::Succeeded,
                                input: None,
                                output: Some(json!({"path": chosen})),
                                error: None,
                                attempts: 0,
                                started_at: started,
                            },
                        );
                        chosen
                    }
                };
                self.set_output(&step.id, json!({"path": chosen}));
                let inner_steps: Option<&[Step]> = match &chosen {
                    Value::Number(n) => n.as_u64().and_then(|i| arms.get(i as usize)).map(|a| a.steps.as_slice()),
                    Value::String(s) if s == "else" => otherwise.as_deref(),
                    _ => None,
                };
                match inner_steps {
                    Some(s) => self.steps(s, prefix.to_string()).await,
                    None => Ok(()),
                }
            }
            StepKind::Foreach { items, steps } => {
                let list = match items.eval(&self.data) {
                    Ok(Value::Array(a)) => a,
                    Ok(Value::Null) => vec![],
                    Ok(other) => {
                        let msg = format!("`foreach` needs a list, but the template gave {}", short(&other));
                        return self.template_failure(step, &key, "foreach", msg, started);
                    }
                    Err(e) => return self.template_failure(step, &key, "foreach", e.message, started),
                };
                let saved_item = self.data.get().get("item").cloned();
                let saved_index = self.data.get().get("index").cloned();
                let inner_ids = direct_and_nested_ids(steps);
                let mut per_item = Vec::with_capacity(list.len());
                let mut per_step: HashMap<String, Vec<Value>> = HashMap::new();
                for (i, item) in list.iter().enumerate() {
                    if let Some(obj) = self.data.get_mut().as_object_mut() {
                        obj.insert("item".into(), item.clone());
                        obj.insert("index".into(), json!(i));
                    }
                    for id in &inner_ids {
                        if let Some(s) = self.data.get_mut().get_mut("steps").and_then(Value::as_object_mut) {
                            s.remove(id);
                        }
                    }
                    self.steps(steps, format!("{prefix}{}[{i}].", step.id)).await?;
                    let mut outs = Map::new();
                    for id in &inner_ids {
                        let v = self.data.get().get("steps").and_then(|s| s.get(id)).cloned().unwrap_or(Value::Null);
                        per_step.entry(id.clone()).or_default().push(v.clone());
                        outs.insert(id.clone(), v);
                    }
                    per_item.push(Value::Object(outs));
                }
                if let Some(obj) = self.data.get_mut().as_object_mut() {
                    match saved_item {
                        Some(v) => obj.insert("item".into(), v),
                        None => obj.remove("item"),
                    };
                    match saved_index {
                        Some(v) => obj.insert("index".into(), v),
                        None => obj.remove("index"),
                    };
                }
                for (id, outs) in per_step {
                    self.set_output(&id, Value::Array(outs));
                }
                if prev.is_none_or(|p| p.status != StepStatus::Succeeded) {
                    self.record(
                        &key,
                        step,
                        Entry {
                            status: StepStatus::Succeeded,
                            input: None,
                            output: Some(json!({"count": list.len()})),
                            error: None,
                            attempts: 0,
                            started_at: started,
                        },
                    );
                }
                self.set_output(&step.id, Value::Array(per_item));
                Ok(())
            }
            StepKind::Delay(d) => {
                let until = match prev
                    .as_ref()
                    .filter(|p| matches!(p.status, StepStatus::Waiting | StepStatus::Succeeded))
                    .and_then(|p| p.output.as_ref())
                    .and_then(|o| o.get("until_ms"))
                    .and_then(Value::as_i64)
                {
                    Some(u) => u,
                    None => match self.due_time(d) {
                        Ok(u) => u,
                        Err(msg) => return self.template_failure(step, &key, "delay_until", msg, started),
                    },
                };
                let out = json!({"until": rfc3339(until), "until_ms": until});
                self.set_output(&step.id, out.clone());
                if prev.as_ref().is_some_and(|p| p.status == StepStatus::Succeeded) {
                    return Ok(());
                }
                let started = prev.as_ref().map(|p| p.started_at).unwrap_or(started);
                if until <= self.now() {
                    self.record(
                        &key,
                        step,
                        Entry {
                            status: StepStatus::Succeeded,
                            input: None,
                            output: Some(out),
                            error: None,
                            attempts: 0,
                            started_at: started,
                        },
                    );
                    Ok(())
                } else {
                    self.record(
                        &key,
                        step,
                        Entry {
                            status: StepStatus::Waiting,
                            input: None,
                            output: Some(out),
                            error: None,
                            attempts: 0,
                            started_at: started,
                        },
                    );
                    Err(Stop::Park { status: RunStatus::Waiting, due_at: until })
                }
            }
            StepKind::WaitFor(w) => self.wait_for(step, w, &key, prev, started).await,
            StepKind::Split { weights, paths } => {
                let chosen = match prev.as_ref().filter(|p| p.status == StepStatus::Succeeded).and_then(|p| p.output.as_ref()) {
                    Some(out) => out.get("path").and_then(Value::as_str).unwrap_or_default().to_string(),
                    None => {
                        // Per contact by its email (stable, and the same in a simulation as
                        // in production); outside a journey, per run.
                        let unit = match self.data.get().pointer("/contact/email").and_then(Value::as_str) {
                            Some(e) => e.to_string(),
                            None => self.run.id.clone(),
                        };
                        let chosen = journey::pick_path(&format!("{}:{}:{unit}", self.run.recipe_id, key), weights).to_string();
                        self.record(
                            &key,
                            step,
                            Entry {
                                status: StepStatus::Succeeded,
                                input: None,
                                output: Some(json!({"path": chosen})),
                                error: None,
                                attempts: 0,
                                started_at: started,
                            },
                        );
                        chosen
                    }
                };
                self.set_output(&step.id, json!({"path": chosen}));
                match paths.iter().find(|(n, _)| *n == chosen) {
                    Some((_, steps)) => self.steps(steps, prefix.to_string()).await,
                    None => Ok(()),
                }
            }
            StepKind::Emit { name, data } => {
                if let Some(p) = prev.as_ref().filter(|p| p.status == StepStatus::Succeeded) {
                    let out = p.output.clone().unwrap_or(Value::Null);
                    self.set_output(&step.id, out);
                    return Ok(());
                }
                let payload = match data.eval(&self.data, "data") {
                    Ok(v) => v,
                    Err(e) => return self.template_failure(step, &key, &e.path, e.message, started),
                };
                let targets = self.inner.catalog.by_event(name);
                let now = self.now();
                for t in &targets {
                    self.emitted.push(NewEvent {
                        recipe_id: t.row.id.clone(),
                        recipe_version: t.row.version,
                        source: "emit".into(),
                        dedupe_key: Some(format!("emit:{}:{}", self.run.id, key)),
                        payload: payload.to_string(),
                        owner: None,
                        lease_ms: 0,
                        now,
                    });
                }
                let out = json!({"event": name, "recipes": targets.iter().map(|t| t.row.id.clone()).collect::<Vec<_>>()});
                let masked = self.masker.mask(&payload);
                self.record(
                    &key,
                    step,
                    Entry {
                        status: StepStatus::Succeeded,
                        input: Some(masked),
                        output: Some(out.clone()),
                        error: None,
                        attempts: 0,
                        started_at: started,
                    },
                );
                self.set_output(&step.id, out);
                Ok(())
            }
        }
    }

    /// A template that cannot be rendered fails the run now: retrying will not fix it.
    fn template_failure(&mut self, step: &Step, key: &str, field: &str, message: String, started: i64) -> Flow {
        let error = json!({
            "class": ErrorClass::BadInput.as_str(),
            "path": field,
            "message": message,
            "hint": ErrorClass::BadInput.hint(),
            "step": key,
        });
        self.record(
            key,
            step,
            Entry { status: StepStatus::Failed, input: None, output: None, error: Some(error.clone()), attempts: 0, started_at: started },
        );
        Err(Stop::Failed { error })
    }

    fn due_time(&self, d: &Delay) -> Result<i64, String> {
        match d {
            Delay::For(dur) => Ok(self.now() + dur.as_millis() as i64),
            Delay::Until { at, timezone } => {
                let v = at.eval(&self.data).map_err(|e| e.message)?;
                let tz = match timezone {
                    Some(t) => {
                        let name = t.eval_string(&self.data).map_err(|e| e.message)?;
                        Some(
                            name.parse::<chrono_tz::Tz>()
                                .map_err(|_| format!("unknown time zone `{name}`; use an IANA name like `Europe/Paris`"))?,
                        )
                    }
                    // A journey's local times are the contact's own.
                    None => self.contact_timezone(),
                };
                parse_time(&v, tz)
            }
        }
    }

    /// How long before a call on `key` may go out (zero: it goes now, and is counted). A
    /// hold from a vendor's `Retry-After` seen here comes first; then the limit, kept in the
    /// store when the store is shared by several nodes, else in this process (governor).
    async fn rate_wait(&self, key: &str, limit: Option<RateLimit>) -> Duration {
        rate_wait(&self.inner, key, limit, self.now()).await
    }

    async fn credentials(&mut self, a: &ActionStep) -> Result<Credentials, ConnectorError> {
        let Some(id) = &a.connection else { return Ok(Credentials::None) };
        if let Some(c) = self.credentials.get(id) {
            return Ok(c.clone());
        }
        let (row, creds) = match connection_credentials(&self.inner, &a.app, id).await {
            Ok(found) => found,
            // A dry run or a simulation on a store without the connection calls nothing
            // outside: it needs no credentials.
            Err(_) if self.inner.config.dry_run => return Ok(Credentials::None),
            Err(e) => return Err(e),
        };
        self.masker = Masker::new(self.masker_values().into_iter().chain(creds.secret_values().into_iter().map(str::to_string)));
        self.credentials.insert(id.clone(), creds.clone());
        self.connection_status.insert(id.clone(), row.status.clone());
        self.connection_limits.insert(id.clone(), row.rate_limit);
        Ok(creds)
    }

    fn masker_values(&self) -> Vec<String> {
        self.data
            .get()
            .get("secrets")
            .and_then(Value::as_object)
            .map(|m| m.values().filter_map(|v| v.as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    }

    async fn action(&mut self, step: &Step, a: &ActionStep, key: String, prev: Option<StepRecord>) -> Flow {
        if let Some(p) = &prev {
            match p.status {
                StepStatus::Succeeded => {
                    self.set_output(&step.id, p.output.clone().unwrap_or(Value::Null));
                    return Ok(());
                }
                // on_error: continue recorded the error as the output, and the run went on.
                StepStatus::Failed if a.on_error == OnError::Continue => {
                    self.set_output(&step.id, p.output.clone().unwrap_or(Value::Null));
                    return Ok(());
                }
                _ => {}
            }
        }
        let started = self.now();
        let inner = self.inner.clone();
        let Some(connector) = inner.registry.get(&a.app) else {
            return self.fail_action(
                step,
                a,
                &key,
                ConnectorError::permanent(format!("the app `{}` is not installed here", a.app)),
                None,
                prev.as_ref().map_or(1, |p| p.attempts.max(1)),
                started,
                false,
            );
        };
        let Some(action) = connector.action(&a.action).cloned() else {
            return self.fail_action(
                step,
                a,
                &key,
                ConnectorError::permanent(format!("the app `{}` has no action `{}`", a.app, a.action)),
                None,
                1,
                started,
                false,
            );
        };
        let input = match a.with.eval(&self.data, "with") {
            Ok(v) => v,
            Err(e) => return self.template_failure(step, &key, &e.path, e.message, started),
        };
        let idempotent = action.idempotent_for(&input);
        let attempts_before = prev.as_ref().map_or(0, |p| p.attempts);
        // The send ledger says an earlier attempt sent this message: it is not sent again.
        if prev.is_some()
            && let Some(output) = crate::policy::recorded(&inner, &self.run, &key, action.spec()).await
        {
            return self.policy_stop(step, &key, &input, crate::policy::Gate::AlreadySent { output }, attempts_before, started);
        }
        if let Some(p) = &prev
            && p.status == StepStatus::Running
            && !idempotent
            && !inner.config.dry_run
        {
            let err = ConnectorError::MaybeDelivered {
                message: "the call was in flight when the run was interrupted (a restart or a crash), so it may have been delivered; it is not sent again blindly".into(),
            };
            let masked = self.masker.mask(&input);
            return self.fail_action(step, a, &key, err, Some(masked), attempts_before.max(1), p.started_at, idempotent);
        }
        let mut credentials = match self.credentials(a).await {
            Ok(c) => c,
            Err(e) => return self.fail_action(step, a, &key, e, None, attempts_before.max(1), started, idempotent),
        };
        let holdable = !inner.config.dry_run && a.on_error != OnError::Continue;
        if let Some(id) = a.connection.clone() {
            if holdable && self.connection_status.get(&id).is_some_and(|s| s == crate::oauth::NEEDS_RECONNECT) {
                let masked = self.masker.mask(&input);
                let err = ConnectorError::auth(format!("the connection `{id}` needs reconnecting; the run waits for it"));
                return self.hold(step, &key, &id, err, masked, attempts_before, started);
            }
            if let Credentials::OAuth2Grant(g) = &credentials
                && !inner.config.dry_run
            {
                match crate::oauth::fresh_grant(&inner, &id, (**g).clone(), None).await {
                    Ok(fresh) => credentials = self.renewed(&id, fresh),
                    Err(e) if e.class() == ErrorClass::Auth && holdable => {
                        let masked = self.masker.mask(&input);
                        return self.hold(step, &key, &id, e, masked, attempts_before, started);
                    }
                    Err(e) => return self.fail_action(step, a, &key, e, None, attempts_before.max(1), started, idempotent),
                }
            }
        }
        // The connection's rate budget, shared by every recipe using it.
        let limit_key = a.connection.clone().map(|c| format!("connection:{c}")).unwrap_or_else(|| format!("app:{}", a.app));
        let limit = a
            .connection
            .as_ref()
            .and_then(|c| self.connection_limits.get(c).copied().flatten())
            .map(|l| RateLimit { calls: l.calls, per: Duration::from_millis(l.per_ms.max(1) as u64) })
            .or(connector.manifest.rate_limit);
        // Nothing leaves in a dry run or a simulation: no budget to spend.
        loop {
            let wait = if inner.config.dry_run { Duration::ZERO } else { self.rate_wait(&limit_key, limit).await };
            if wait.is_zero() {
                break;
            }
            if wait > SHORT_WAIT {
                let masked = self.masker.mask(&input);
                let error = json!({"class": "rate_limited", "message": format!("waiting for the rate budget of `{limit_key}`"), "hint": ErrorClass::RateLimited.hint()});
                self.record(
                    &key,
                    step,
                    Entry {
                        status: StepStatus::Retrying,
                        input: Some(masked),
                        output: None,
                        error: Some(error),
                        attempts: attempts_before,
                        started_at: started,
                    },
                );
                return Err(Stop::Park { status: RunStatus::Queued, due_at: self.now() + wait.as_millis() as i64 });
            }
            tokio::time::sleep(wait).await;
        }
        // The send policy, for a message to a person: decided and reserved in the store.
        let message_key = match crate::policy::gate(&inner, &self.run, &key, action.spec(), a, &input, prev.as_ref()).await {
            Ok(None) => None,
            Ok(Some(crate::policy::Gate::Go { message_key })) => Some(message_key),
            Ok(Some(gate)) => return self.policy_stop(step, &key, &input, gate, attempts_before, started),
            Err(e) => return self.fail_action(step, a, &key, e, None, attempts_before.max(1), started, idempotent),
        };
        let attempt = attempts_before + 1;
        let masked = self.masker.mask(&input);
        let idempotency_key = format!("{}:{}", self.run.id, key);
        if !idempotent && !inner.config.dry_run {
            // The marker that tells a restart this call may have left.
            self.record(
                &key,
                step,
                Entry {
                    status: StepStatus::Running,
                    input: Some(masked.clone()),
                    output: None,
                    error: None,
                    attempts: attempt,
                    started_at: started,
                },
            );
            self.flush().await?;
        } else if self.pending.iter().any(|p| p.kind == "action") {
            // An earlier call's result must be durable before another call leaves: after a
            // crash it must not look unfinished. (Filters, branches and emits replay
            // deterministically, so they can wait for the next write.)
            self.flush().await?;
        }
        let recorder = inner.config.dry_run.then(|| Arc::new(RecordingTransport::default()));
        let transport: Arc<dyn HttpTransport> = match &recorder {
            Some(r) => r.clone(),
            // The app's rate-limit headers feed the connection's budget.
            None => Arc::new(crate::limits::BudgetWatch { inner: inner.clone(), key: limit_key.clone() }),
        };
        let mut ctx = ActionContext {
            run_id: self.run.id.clone(),
            step_key: key.clone(),
            attempt: attempt as u32,
            idempotency_key,
            credentials: crate::oauth::handed_out(&credentials),
            http: transport,
            timeout: inner.config.step_timeout,
            extensions: enlace_core::Extensions {
                contacts: Some(Arc::new(crate::contacts::Contacts::new(inner.clone()))),
                links: Some(inner.links.clone()),
                social: Some(Arc::new(crate::social::SocialExt(crate::social::Social::new(inner.clone())))),
                web: Some(Arc::new(crate::web::Web::new(inner.clone()))),
            },
        };
        let t0 = Instant::now();
        // A simulation runs the embedded apps (the contact store, in the simulation's own
        // store) for real, and stubs every outside call like a dry run.
        let local = inner.config.simulate && LOCAL_APPS.contains(&a.app.as_str());
        let result = if inner.config.dry_run && !local {
            let spec = action.spec();
            if spec.http_only {
                let _ = tokio::time::timeout(inner.config.step_timeout, action.call(&ctx, input.clone())).await;
            }
            let requests = recorder.as_ref().map(|r| r.take()).unwrap_or_default();
            if !inner.config.simulate {
                inner.dry_log.lock().unwrap_or_else(|e| e.into_inner()).push(DryCall {
                    run_id: self.run.id.clone(),
                    step_key: key.clone(),
                    requests,
                    called: spec.http_only,
                });
            }
            Ok(spec.sample.clone())
        } else {
            let timeout = inner.config.step_timeout;
            let mut result = call_action(action.as_ref(), &ctx, input.clone(), timeout).await;
            // A refused OAuth2 token: refresh once (unless someone already did) and call again.
            // A 401 means the call was not carried out, so sending it again is safe.
            if let (Err(e), Some(id), Credentials::OAuth2Grant(g)) = (&result, &a.connection, &credentials)
                && e.class() == ErrorClass::Auth
                && g.can_refresh()
            {
                let rejected = g.access_token.as_ref().map(|t| t.expose().to_string()).unwrap_or_default();
                match crate::oauth::fresh_grant(&inner, id, (**g).clone(), Some(&rejected)).await {
                    Ok(fresh) => {
                        credentials = self.renewed(id, fresh);
                        ctx.credentials = crate::oauth::handed_out(&credentials);
                        result = call_action(action.as_ref(), &ctx, input.clone(), timeout).await;
                    }
                    Err(refresh_err) => result = Err(refresh_err),
                }
            }
            result
        };
        let elapsed = t0.elapsed();
        if let Some(k) = &message_key {
            let out = result.as_ref().ok().map(|o| self.masker.mask(o));
            crate::policy::settle(&inner, k, &result, out).await;
        }
        inner
            .metrics
            .step_seconds
            .get_or_create(&vec![("app", a.app.clone()), ("action", a.action.clone())])
            .observe(elapsed.as_secs_f64());
        match result {
            Ok(output) => {
                // An ad audience add: its membership is recorded before the run goes on.
                if let Err(e) =
                    crate::audience::after_success(&inner, &self.run.id, &a.app, a.connection.as_deref(), action.spec(), &input).await
                {
                    return self.fail_action(step, a, &key, e, Some(masked), attempt, started, idempotent);
                }
                let masked_out = self.masker.mask(&output);
                self.record(
                    &key,
                    step,
                    Entry {
                        status: StepStatus::Succeeded,
                        input: Some(masked),
                        output: Some(masked_out),
                        error: None,
                        attempts: attempt,
                        started_at: started,
                    },
                );
                self.set_output(&step.id, output);
                if a.app == "contacts" && self.contact_id.is_some() {
                    self.reload_contact().await?;
                }
                Ok(())
            }
            Err(e) if e.class() == ErrorClass::Auth && holdable && a.connection.is_some() => {
                let id = a.connection.clone().unwrap_or_default();
                crate::oauth::mark_needs_reconnect(&inner, &id, &e.to_string()).await;
                self.hold(step, &key, &id, e, masked, attempt, started)
            }
            Err(e) => self.fail_action(step, a, &key, e, Some(masked), attempt, started, idempotent),
        }
    }

    /// The send policy's answer other than "go", in the journal in plain words: sent
    /// before (its output), blocked (the run goes on, the output says why), deferred (the
    /// run waits until then and decides again) or held for approval.
    fn policy_stop(&mut self, step: &Step, key: &str, input: &Value, gate: crate::policy::Gate, attempts: i64, started: i64) -> Flow {
        use crate::policy::Gate;
        let masked = self.masker.mask(input);
        let (status, output, stop) = match gate {
            Gate::Go { .. } => return Ok(()),
            Gate::AlreadySent { output } | Gate::Blocked { output } => (StepStatus::Succeeded, output, None),
            Gate::Deferred { until, output } => {
                (StepStatus::Waiting, output, Some(Stop::Park { status: RunStatus::Waiting, due_at: until }))
            }
            Gate::Held { output } => {
                (StepStatus::Waiting, output, Some(Stop::Hold { connection: enlace_store::approval_hold(&self.run.recipe_id) }))
            }
        };
        let entry = Entry { status, input: Some(masked), output: Some(output.clone()), error: None, attempts, started_at: started };
        self.record(key, step, entry);
        match stop {
            Some(s) => Err(s),
            None => {
                self.set_output(&step.id, output);
                Ok(())
            }
        }
    }

    /// Keeps a refreshed grant for the rest of the run, and masks its new token.
    fn renewed(&mut self, id: &str, grant: enlace_core::OAuth2Grant) -> Credentials {
        let creds = Credentials::OAuth2Grant(Box::new(grant));
        self.masker = Masker::new(
            self.masker_values()
                .into_iter()
                .chain(self.credentials.values().chain(std::iter::once(&creds)).flat_map(|c| c.secret_values()).map(str::to_string)),
        );
        self.credentials.insert(id.to_string(), creds.clone());
        creds
    }

    /// Holds the run until the connection is repaired: the step is recorded as waiting with
    /// the refusal and what to do, and the run waits with no due time.
    #[allow(clippy::too_many_arguments)]
    fn hold(&mut self, step: &Step, key: &str, connection: &str, err: ConnectorError, input: Value, attempt: i64, started: i64) -> Flow {
        let mut error = err.to_json();
        error["step"] = json!(key);
        error["connection"] = json!(connection);
        error["hint"] = json!(format!(
            "the connection `{connection}` was refused; reconnect it (POST /api/v1/connections/{connection}/authorize for OAuth2, or PUT /api/v1/connections/{connection}/credentials) and this run resumes from this step"
        ));
        self.record(
            key,
            step,
            Entry {
                status: StepStatus::Waiting,
                input: Some(input),
                output: None,
                error: Some(error),
                attempts: attempt,
                started_at: started,
            },
        );
        Err(Stop::Hold { connection: connection.to_string() })
    }

    /// Decides what an action's error means: retry later, continue, or fail the run.
    #[allow(clippy::too_many_arguments)]
    fn fail_action(
        &mut self,
        step: &Step,
        a: &ActionStep,
        key: &str,
        err: ConnectorError,
        input: Option<Value>,
        attempt: i64,
        started: i64,
        idempotent: bool,
    ) -> Flow {
        let class = err.class();
        let now = self.now();
        if class == ErrorClass::RateLimited {
            let hold = err.retry_after().unwrap_or(Duration::from_secs(1));
            let limit_key = a.connection.clone().map(|c| format!("connection:{c}")).unwrap_or_else(|| format!("app:{}", a.app));
            let until = now + hold.as_millis() as i64;
            self.inner.limits.hold(&limit_key, until);
            if self.inner.store.shared_rate_limits() {
                // Every node holds the connection, not just this one.
                let store = self.inner.store.clone();
                tokio::spawn(async move {
                    if let Err(e) = store.rate_hold(&limit_key, until).await {
                        tracing::warn!(key = %limit_key, error = %e, "sharing a vendor's Retry-After with the other nodes failed");
                    }
                });
            }
        }
        let retryable = match class {
            ErrorClass::RateLimited | ErrorClass::Transient => true,
            ErrorClass::MaybeDelivered => idempotent,
            ErrorClass::Auth | ErrorClass::Permanent | ErrorClass::BadInput => false,
        };
        let mut error = err.to_json();
        error["step"] = json!(key);
        error["attempts"] = json!(attempt);
        if retryable && (attempt as u32) < a.retry.attempts {
            let ceiling = a.retry.ceiling(attempt as u32 + 1);
            let jitter = if ceiling.is_zero() { 0 } else { rand::rng().random_range(0..=ceiling.as_millis() as u64) };
            let wait = Duration::from_millis(jitter).max(err.retry_after().unwrap_or(Duration::ZERO));
            let due_at = now + wait.as_millis() as i64;
            error["next_attempt_at"] = json!(rfc3339(due_at));
            self.inner.metrics.retries.get_or_create(&vec![("class", class.as_str().to_string())]).inc();
            tracing::info!(run_id = %self.run.id, step = %key, error_kind = class.as_str(), attempt, wait_ms = wait.as_millis() as u64, "step failed; retrying");
            self.record(
                key,
                step,
                Entry { status: StepStatus::Retrying, input, output: None, error: Some(error), attempts: attempt, started_at: started },
            );
            return Err(Stop::Park { status: RunStatus::Queued, due_at });
        }
        if retryable {
            error["hint"] = json!(format!("gave up after {attempt} attempts; replay the run when the target is back"));
        }
        if a.on_error == OnError::Continue {
            let out = json!({"error": error});
            self.record(
                key,
                step,
                Entry {
                    status: StepStatus::Failed,
                    input,
                    output: Some(out.clone()),
                    error: Some(error),
                    attempts: attempt,
                    started_at: started,
                },
            );
            self.set_output(&step.id, out);
            return Ok(());
        }
        self.record(
            key,
            step,
            Entry { status: StepStatus::Failed, input, output: None, error: Some(error.clone()), attempts: attempt, started_at: started },
        );
        Err(Stop::Failed { error })
    }
}

/// One call of an action, bounded by the step timeout (a call that times out may have been
/// delivered).
async fn call_action(action: &dyn DynAction, ctx: &ActionContext, input: Value, timeout: Duration) -> Result<Value, ConnectorError> {
    match tokio::time::timeout(timeout, action.call(ctx, input)).await {
        Ok(r) => r,
        Err(_) => Err(ConnectorError::MaybeDelivered { message: format!("no answer within {}s", timeout.as_secs()) }),
    }
}

/// How long before a call on `key` may go out (zero: it goes now, and is counted). A hold
/// from a vendor's `Retry-After` seen here comes first; then the limit, kept in the store
/// when the store is shared by several nodes, else in this process (governor). Steps and
/// polling triggers share it.
pub(crate) async fn rate_wait(inner: &Inner, key: &str, limit: Option<RateLimit>, now: i64) -> Duration {
    if !inner.store.shared_rate_limits() {
        return inner.limits.check(key, limit, now);
    }
    let held = inner.limits.check(key, None, now);
    if !held.is_zero() {
        return held;
    }
    let Some(l) = limit else { return Duration::ZERO };
    match inner.store.rate_acquire(key, l.calls.max(1), (l.per.as_millis() as i64).max(1)).await {
        Ok(ms) => Duration::from_millis(ms.max(0) as u64),
        Err(e) => {
            tracing::warn!(key = %key, error = %e, "reading the shared rate budget failed; waiting before trying again");
            Duration::from_millis(500)
        }
    }
}

/// A connection's row and credentials, checked against the app that uses them: the one
/// place where steps and triggers get credentials.
pub(crate) async fn connection_credentials(inner: &Inner, app: &str, id: &str) -> Result<(ConnectionRow, Credentials), ConnectorError> {
    match inner.store.connection(id).await {
        Ok(Some((row, creds))) => {
            if row.app != app && app != "http" {
                return Err(ConnectorError::bad_input("connection", format!("the connection `{id}` is for `{}`, not `{app}`", row.app)));
            }
            Ok((row, creds))
        }
        Ok(None) => Err(ConnectorError::bad_input(
            "connection",
            format!("no connection `{id}`; create it with `enlace connections create` or POST /api/v1/connections"),
        )),
        Err(e) => Err(ConnectorError::transient(format!("reading the connection `{id}` failed: {e}"))),
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 80 { format!("{}…", &s[..s.char_indices().nth(80).map_or(s.len(), |(i, _)| i)]) } else { s }
}

fn direct_and_nested_ids(steps: &[Step]) -> Vec<String> {
    let mut out = vec![];
    enlace_recipe::model::walk_steps(steps, &mut |s| out.push(s.id.clone()));
    out
}

/// A time from a template: RFC 3339, a local date-time (`2026-12-01T09:00`, read in `tz`,
/// UTC if none), a date (midnight), or Unix seconds.
pub(crate) fn parse_time(v: &Value, tz: Option<chrono_tz::Tz>) -> Result<i64, String> {
    use chrono::{NaiveDate, NaiveDateTime, TimeZone};
    match v {
        Value::Number(n) => n.as_f64().map(|s| (s * 1000.0) as i64).ok_or_else(|| "not a time".to_string()),
        Value::String(s) => {
            let s = s.trim();
            if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
                return Ok(t.timestamp_millis());
            }
            let naive = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S")
                .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M"))
                .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S"))
                .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M"))
                .or_else(|_| NaiveDate::parse_from_str(s, "%Y-%m-%d").map(|d| d.and_hms_opt(0, 0, 0).unwrap_or_default()))
                .map_err(|_| {
                    format!(
                        "`{s}` is not a time: use RFC 3339 (`2026-12-01T09:00:00Z`) or a local time (`2026-12-01T09:00`) with `timezone`"
                    )
                })?;
            let tz = tz.unwrap_or(chrono_tz::UTC);
            // In a daylight-saving gap the local time does not exist: take the first instant after it.
            let t = tz
                .from_local_datetime(&naive)
                .earliest()
                .or_else(|| tz.from_local_datetime(&(naive + chrono::Duration::hours(1))).earliest())
                .ok_or_else(|| format!("`{s}` does not exist in {tz}"))?;
            Ok(t.timestamp_millis())
        }
        other => Err(format!("`delay_until` needs a time, found {}", short(other))),
    }
}

/// Claims due runs while worker slots are free; sleeps until the next due time (at most a
/// second, so runs queued by other processes are seen too) or until woken.
pub(crate) async fn poll_loop(inner: Arc<Inner>) {
    let lease = inner.config.lease.as_millis() as i64;
    // Other nodes' work (PostgreSQL NOTIFY): without it, a poller would learn of a run
    // queued elsewhere only at its next idle tick.
    let store_wake = inner.store.wakeups().unwrap_or_else(|| Arc::new(tokio::sync::Notify::new()));
    loop {
        if inner.shutdown.is_cancelled() {
            return;
        }
        // Take as many slots as are free (at least one: wait for it).
        let first = tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            p = inner.slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
        };
        let mut permits = vec![first];
        while permits.len() < 64 {
            match inner.slots.clone().try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) => break,
            }
        }
        let now = inner.clock.now_ms();
        let claimed = match inner.store.claim_due(&inner.config.node_id, now, permits.len() as i64, lease).await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "claiming runs failed");
                drop(permits);
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let got = claimed.len();
        for c in claimed {
            let Some(p) = permits.pop() else { break };
            let me = inner.clone();
            tokio::spawn(async move { execute(me, c.run_id, p, None).await });
        }
        drop(permits);
        if got > 0 {
            continue;
        }
        let wait = match inner.store.next_due_at().await {
            Ok(Some(due)) if !inner.clock.is_manual() => Duration::from_millis((due - inner.clock.now_ms()).clamp(0, 1000) as u64),
            _ => Duration::from_millis(1000),
        };
        if wait.is_zero() {
            tokio::task::yield_now().await;
            continue;
        }
        tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            _ = inner.wake.notified() => {}
            _ = store_wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_in_zones() {
        assert_eq!(parse_time(&json!("2026-12-01T09:00:00Z"), None).unwrap(), 1_796_115_600_000);
        // 09:00 in Paris in December is 08:00 UTC.
        assert_eq!(parse_time(&json!("2026-12-01T09:00"), Some(chrono_tz::Europe::Paris)).unwrap(), 1_796_112_000_000);
        assert!(parse_time(&json!("next tuesday"), None).unwrap_err().contains("not a time"));
        assert!(truthy(&json!("yes")) && !truthy(&json!("false")) && !truthy(&json!(0)) && !truthy(&Value::Null));
    }
}
