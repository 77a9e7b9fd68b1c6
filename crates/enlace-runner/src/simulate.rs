//! The simulator: runs recipes over contacts and events on a virtual clock, with every
//! outside call stubbed, and reports what would have happened.
//!
//! It is the real runner, not a model of it: a temporary store (SQLite), the recipes saved
//! in it, a [`ManualClock`], and the runner in `dry_run` + `simulate` mode (outside apps
//! return their sample output and nothing leaves; the embedded contact store runs for
//! real in the temporary store, so journeys, their triggers, waits, exits and re-entry
//! rules behave as they would in production). The driver feeds the inputs in time order
//! and moves the clock from one due time to the next, running whatever is due at each.
//!
//! Deterministic: inputs are applied in a fixed order, splits are chosen from the
//! contact's email, and the report is sorted and carries no generated ids. The seed drives
//! what is random on purpose: generated contacts and the `probability` of per-contact
//! events.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use enlace_core::Registry;
use enlace_core::contacts::{ConsentStatus, ContactKey, ContactOp, Evidence, NewConsent, WriteContext};
use enlace_recipe::Recipe;
use enlace_recipe::model::{StepKind, TriggerConfig};
use enlace_store::{NewEvent, RunFilter, Store};
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::clock::{ManualClock, rfc3339};
use crate::{Clock, Runner, RunnerConfig, RunnerError};

/// A contact to import.
#[derive(Debug, Clone, PartialEq)]
pub struct SimContact {
    pub email: String,
    /// When the contact is imported (signs up); the simulation's start when absent.
    pub at: Option<i64>,
    pub fields: Map<String, Value>,
    pub tags: Vec<String>,
    /// `(purpose, channel, status)`.
    pub consents: Vec<(String, String, ConsentStatus)>,
}

/// What happens at an event's time.
#[derive(Debug, Clone, PartialEq)]
pub enum SimAction {
    /// A webhook into this recipe (`webhook.catch`), with this body.
    Webhook {
        recipe: String,
        body: Value,
    },
    /// An internal event (`enlace.event` recipes with this name start).
    Emit {
        name: String,
        data: Value,
    },
    /// A change to a contact (by email): a tag, fields, a consent decision.
    Tag {
        email: String,
        tag: String,
    },
    Fields {
        email: String,
        fields: Map<String, Value>,
    },
    Consent {
        email: String,
        purpose: String,
        channel: String,
        status: ConsentStatus,
    },
    /// An activity on the contact's timeline (`form_submitted`, `purchase`, `page_viewed`...).
    Activity {
        email: String,
        kind: String,
        data: Value,
    },
}

/// An input event at a time.
#[derive(Debug, Clone, PartialEq)]
pub struct SimEvent {
    pub at: i64,
    pub action: SimAction,
}

/// An event repeated for every imported contact: `after` the contact's import, with this
/// probability (drawn from the seed and the contact's email).
#[derive(Debug, Clone, PartialEq)]
pub struct PerContact {
    pub after: Duration,
    pub probability: f64,
    /// The action, with `{{email}}`-free shape: the contact is filled in.
    pub action: PerContactAction,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PerContactAction {
    Tag(String),
    Fields(Map<String, Value>),
    Consent { purpose: String, channel: String, status: ConsentStatus },
    Activity { kind: String, data: Value },
}

/// The inputs of one simulation.
#[derive(Debug, Clone, Default)]
pub struct SimInput {
    pub contacts: Vec<SimContact>,
    pub events: Vec<SimEvent>,
    pub per_contact: Vec<PerContact>,
}

#[derive(Debug, Clone)]
pub struct SimOptions {
    /// The virtual clock's start (Unix ms).
    pub start: i64,
    /// Nothing due after this is run.
    pub until: i64,
    pub seed: u64,
    /// Runs executed at once.
    pub parallel: usize,
    /// The send policy to simulate with (the defaults when `None`): preview a flow under the
    /// caps and quiet hours it will meet, or try others.
    pub policy: Option<enlace_core::policy::PolicySettings>,
    /// The lead scoring rules to simulate with (none when `None`).
    pub scoring: Option<enlace_core::scoring::ScoringRules>,
    /// At most this many messages and calls are listed in the report (the earliest, in a
    /// fixed order); the counts are always complete. Bounds the report's memory.
    pub list_limit: usize,
}

/// One message (or other outside call) the recipes would have made.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimCall {
    /// When it would have left (RFC 3339, virtual time).
    pub at: String,
    pub recipe: String,
    pub step: String,
    /// The run's contact (its email), when the recipe is contact-scoped.
    pub contact: Option<String>,
    pub app: String,
    pub action: String,
    /// What would have been sent (the action's input, secrets masked).
    pub content: Value,
    /// What the call answered, for the embedded apps the simulation runs for real and
    /// reports (`web.show_message`: queued, or why not).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
}

/// A message to a person (an action that reaches one: email, SMS...) and what the send
/// policy decided about it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimMessage {
    /// When the step wanted to send it (RFC 3339, virtual time).
    pub due: String,
    /// When it left, if it did (later than `due` when the policy deferred it).
    pub sent_at: Option<String>,
    pub recipe: String,
    pub step: String,
    pub contact: Option<String>,
    pub channel: String,
    pub purpose: String,
    /// The recipients, normalised.
    pub to: Vec<String>,
    /// `sent`, `blocked`, `deferred` (still waiting at the end), `held` (for approval)...
    pub decision: String,
    /// Why, in plain words, when not sent.
    pub reason: Option<String>,
    pub content: Value,
}

/// What a simulation found.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SimReport {
    pub seed: u64,
    pub start: String,
    pub until: String,
    /// Where the virtual clock stopped.
    pub ended_at: String,
    pub contacts: usize,
    /// Per recipe, runs by status.
    pub runs: BTreeMap<String, BTreeMap<String, u64>>,
    /// Per recipe and step (journal key), entries by status: how many got where.
    pub steps: BTreeMap<String, BTreeMap<String, BTreeMap<String, u64>>>,
    /// Messages to people by decision (`sent`, `blocked`, `deferred`, `held`).
    pub decisions: BTreeMap<String, u64>,
    /// Every message to a person, in the order they were due.
    pub messages: Vec<SimMessage>,
    /// Outside calls made (messages sent included) by `app.action`.
    pub call_counts: BTreeMap<String, u64>,
    /// Every outside call, in time order.
    pub calls: Vec<SimCall>,
}

/// Why a simulation could not run.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("{0}")]
    Input(String),
    #[error(transparent)]
    Runner(#[from] RunnerError),
    #[error(transparent)]
    Store(#[from] enlace_store::StoreError),
}

/// A number in [0, 1) from the seed and a text: the same every time.
pub fn draw(seed: u64, text: &str) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for b in text.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // splitmix64's finaliser spreads the low bits FNV leaves correlated.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    (h >> 11) as f64 / (1u64 << 53) as f64
}

enum Feed {
    Contact(SimContact),
    Event(SimAction),
}

/// Runs a simulation of `recipes` over `input` (see the module's documentation).
pub async fn simulate(registry: Registry, recipes: &[Recipe], input: SimInput, opts: &SimOptions) -> Result<SimReport, SimError> {
    if opts.until < opts.start {
        return Err(SimError::Input("the simulation ends before it starts: `until` must be after `start`".into()));
    }
    for e in &input.events {
        if let SimAction::Webhook { recipe, .. } = &e.action
            && !recipes.iter().any(|r| &r.id == recipe && matches!(r.trigger.config, TriggerConfig::Webhook(_)))
        {
            let hooks: Vec<&str> =
                recipes.iter().filter(|r| matches!(r.trigger.config, TriggerConfig::Webhook(_))).map(|r| r.id.as_str()).collect();
            return Err(SimError::Input(format!(
                "an event is a webhook into `{recipe}`, which is not a simulated recipe started by `webhook.catch`; those are: {}",
                if hooks.is_empty() { "none".to_string() } else { hooks.join(", ") }
            )));
        }
    }
    let store = Store::temporary_with(enlace_store::Synchronous::Off).await?;
    let clock = ManualClock::new(opts.start);
    let config = RunnerConfig { dry_run: true, simulate: true, concurrency: opts.parallel.max(1), ..RunnerConfig::default() };
    let transport = Arc::new(enlace_kit::RecordingTransport::default());
    let runner = Runner::new(store.clone(), registry.clone(), config, transport, Arc::new(clock.clone()) as Arc<dyn Clock>);
    for r in recipes {
        let mut r = r.clone();
        r.enabled = true;
        runner.save_recipe(&r, "simulation").await?;
    }
    runner.load(false).await?;
    if let Some(p) = &opts.policy {
        store.set_policy_settings(p, opts.start).await.map_err(|e| SimError::Input(format!("the policy: {e}")))?;
    }
    if let Some(rules) = &opts.scoring {
        store.set_scoring_rules(rules, opts.start).await.map_err(|e| SimError::Input(format!("the scoring rules: {e}")))?;
    }

    // Everything that happens, in time order; at one time, contacts first, then the events
    // given, then the per-contact ones, each in the order given.
    let mut feeds: Vec<((i64, u8, usize), Feed)> = vec![];
    let mut seq = 0;
    for c in &input.contacts {
        let at = c.at.unwrap_or(opts.start);
        for p in &input.per_contact {
            if draw(opts.seed, &format!("{}:{seq}", c.email)) < p.probability {
                let email = c.email.clone();
                let action = match &p.action {
                    PerContactAction::Tag(t) => SimAction::Tag { email, tag: t.clone() },
                    PerContactAction::Fields(f) => SimAction::Fields { email, fields: f.clone() },
                    PerContactAction::Consent { purpose, channel, status } => {
                        SimAction::Consent { email, purpose: purpose.clone(), channel: channel.clone(), status: *status }
                    }
                    PerContactAction::Activity { kind, data } => SimAction::Activity { email, kind: kind.clone(), data: data.clone() },
                };
                feeds.push(((at + p.after.as_millis() as i64, 2, seq), Feed::Event(action)));
            }
            seq += 1;
        }
        feeds.push(((at, 0, seq), Feed::Contact(c.clone())));
        seq += 1;
    }
    for e in &input.events {
        feeds.push(((e.at, 1, seq), Feed::Event(e.action.clone())));
        seq += 1;
    }
    feeds.sort_by_key(|(key, _)| *key);
    let mut feeds = feeds.into_iter().peekable();

    loop {
        let next_feed = feeds.peek().map(|((at, _, _), _)| *at);
        let next_due = store.next_due_at().await?;
        let t = match (next_feed, next_due) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) => a,
            (None, Some(b)) => b,
            (None, None) => break,
        };
        if t > opts.until {
            break;
        }
        if t > clock.now_ms() {
            clock.set(t);
        }
        let now = clock.now_ms();
        // The inputs due now; contact imports go in parallel batches.
        let mut batch = vec![];
        while let Some((_, f)) = feeds.next_if(|((at, _, _), _)| *at <= now) {
            batch.push(f);
        }
        for chunk in batch.chunks(256) {
            let mut tasks = vec![];
            for f in chunk {
                let fut = apply_feed(&runner, f, now);
                tasks.push(fut);
            }
            for r in futures::future::join_all(tasks).await {
                r?;
            }
        }
        runner.drain_due_parallel(opts.parallel).await?;
    }
    let ended_at = clock.now_ms();
    let mut report = report(&store, &registry, &action_steps(recipes), opts, ended_at).await?;
    report.contacts = input.contacts.len();
    store.close().await;
    Ok(report)
}

async fn apply_feed(runner: &Runner, f: &Feed, now: i64) -> Result<(), SimError> {
    let contacts = runner.contacts();
    let ctx = WriteContext::default();
    let evidence = |source: &str| Evidence {
        source: source.to_string(),
        ip: None,
        text: None,
        recorded_at: now,
        run_id: None,
        details: Default::default(),
    };
    let input_err = |e: RunnerError| SimError::Input(format!("the simulation's input was refused: {e}"));
    match f {
        Feed::Contact(c) => {
            let applied = contacts
                .apply(ctx.clone(), ContactOp::Upsert { email: c.email.clone(), fields: c.fields.clone() })
                .await
                .map_err(input_err)?;
            let key = ContactKey::Id(applied.outcome.contact.id.clone());
            for t in &c.tags {
                contacts.apply(ctx.clone(), ContactOp::AddTag { key: key.clone(), tag: t.clone() }).await.map_err(input_err)?;
            }
            for (purpose, channel, status) in &c.consents {
                let consent = NewConsent {
                    purpose: purpose.clone(),
                    channel: channel.clone(),
                    status: *status,
                    evidence: evidence("simulation: imported contact"),
                };
                contacts.apply(ctx.clone(), ContactOp::RecordConsent { key: key.clone(), consent }).await.map_err(input_err)?;
            }
        }
        Feed::Event(a) => match a {
            SimAction::Webhook { recipe, body } => {
                let version = runner.catalog().current(recipe).map(|c| c.row.version).unwrap_or(1);
                let payload = json!({"body": body, "headers": {}, "query": {}, "received_at": rfc3339(now), "path": recipe});
                runner
                    .store()
                    .accept_event(NewEvent {
                        recipe_id: recipe.clone(),
                        recipe_version: version,
                        source: "simulation".into(),
                        dedupe_key: None,
                        payload: payload.to_string(),
                        owner: None,
                        lease_ms: 0,
                        now,
                    })
                    .await?;
            }
            SimAction::Emit { name, data } => {
                for t in runner.catalog().by_event(name) {
                    runner
                        .store()
                        .accept_event(NewEvent {
                            recipe_id: t.row.id.clone(),
                            recipe_version: t.row.version,
                            source: "simulation".into(),
                            dedupe_key: None,
                            payload: data.to_string(),
                            owner: None,
                            lease_ms: 0,
                            now,
                        })
                        .await?;
                }
            }
            SimAction::Tag { email, tag } => {
                contacts
                    .apply(ctx, ContactOp::AddTag { key: ContactKey::Email(email.clone()), tag: tag.clone() })
                    .await
                    .map_err(input_err)?;
            }
            SimAction::Fields { email, fields } => {
                contacts
                    .apply(ctx, ContactOp::SetFields { key: ContactKey::Email(email.clone()), fields: fields.clone() })
                    .await
                    .map_err(input_err)?;
            }
            SimAction::Activity { email, kind, data } => {
                let op = ContactOp::RecordEvent { key: ContactKey::Email(email.clone()), kind: kind.clone(), data: data.clone(), at: None };
                contacts.apply(ctx, op).await.map_err(input_err)?;
            }
            SimAction::Consent { email, purpose, channel, status } => {
                let consent = NewConsent {
                    purpose: purpose.clone(),
                    channel: channel.clone(),
                    status: *status,
                    evidence: evidence("simulation: event"),
                };
                contacts
                    .apply(ctx, ContactOp::RecordConsent { key: ContactKey::Email(email.clone()), consent })
                    .await
                    .map_err(input_err)?;
            }
        },
    }
    Ok(())
}

/// Reads the simulation's store into the report.
async fn report(
    store: &Store,
    registry: &Registry,
    actions: &BTreeMap<(String, String), (String, String)>,
    opts: &SimOptions,
    ended_at: i64,
) -> Result<SimReport, SimError> {
    let mut r = SimReport {
        seed: opts.seed,
        start: rfc3339(opts.start),
        until: rfc3339(opts.until),
        ended_at: rfc3339(ended_at),
        ..SimReport::default()
    };
    let mut before = None;
    loop {
        let page = store.list_runs(&RunFilter { before: before.clone(), limit: 500, ..Default::default() }).await?;
        let Some(last) = page.last() else { break };
        before = Some(last.id.clone());
        keep_earliest(&mut r, opts.list_limit, false);
        for run in page {
            *r.runs.entry(run.recipe_id.clone()).or_default().entry(run.status.as_str().to_string()).or_default() += 1;
            let Some(d) = store.run_detail(&run.id).await? else { continue };
            let entry = d.steps.iter().find(|s| s.key == "$journey").and_then(|s| s.output.as_ref());
            let contact = entry.and_then(|o| o.get("email")).and_then(Value::as_str).map(str::to_string);
            // Ids are made up by each simulation: the report names the contact by its email.
            let contact_id = entry.and_then(|o| o.get("contact_id")).and_then(Value::as_str).map(str::to_string);
            let stable = |v: Value| -> Value {
                match (&contact_id, &contact) {
                    (Some(id), Some(email)) => {
                        let text = v.to_string().replace(id.as_str(), &format!("<contact {email}>"));
                        serde_json::from_str(&text).unwrap_or(v)
                    }
                    _ => v,
                }
            };
            let steps = r.steps.entry(run.recipe_id.clone()).or_default();
            for s in &d.steps {
                *steps.entry(s.key.clone()).or_default().entry(s.status.as_str().to_string()).or_default() += 1;
                if s.kind != "action" {
                    continue;
                }
                let Some((app, action)) = actions.get(&(run.recipe_id.clone(), s.step_id.clone())).cloned() else { continue };
                // The embedded apps change only Enlace's own store, so they are not outside calls;
                // on-site messages are messages to a person, and are reported with their outcome.
                let onsite = app == "web" && action == "show_message";
                if crate::exec::LOCAL_APPS.contains(&app.as_str()) && !onsite {
                    continue;
                }
                let reaches = registry.get(&app).and_then(|c| c.action(&action)).and_then(|a| a.spec().reaches.clone());
                if let Some(reach) = reaches {
                    let rows = store.message_rows(&format!("{}:{}", run.id, s.key)).await?;
                    let policy = s.output.as_ref().and_then(|o| o.get("policy"));
                    let decision = if s.status == enlace_store::StepStatus::Succeeded && policy.is_none() {
                        "sent".to_string()
                    } else {
                        policy
                            .and_then(|p| p.get("decision"))
                            .and_then(Value::as_str)
                            .map(str::to_string)
                            .or_else(|| rows.first().map(|r| r.status.clone()))
                            .unwrap_or_else(|| s.status.as_str().to_string())
                    };
                    let reason = policy
                        .and_then(|p| p.get("reason").or_else(|| p.get("summary")))
                        .and_then(Value::as_str)
                        .map(str::to_string)
                        .or_else(|| rows.iter().find_map(|r| r.reason.clone()));
                    *r.decisions.entry(decision.clone()).or_default() += 1;
                    r.messages.push(SimMessage {
                        due: rfc3339(s.started_at),
                        sent_at: (decision == "sent").then(|| rfc3339(s.finished_at.unwrap_or(s.started_at))),
                        recipe: run.recipe_id.clone(),
                        step: s.key.clone(),
                        contact: contact.clone(),
                        channel: reach.channel.clone(),
                        purpose: rows.first().map(|r| r.purpose.clone()).unwrap_or_else(|| "marketing".into()),
                        to: rows.iter().map(|r| r.recipient.clone()).collect(),
                        decision: decision.clone(),
                        reason: if decision == "sent" {
                            None
                        } else {
                            reason.map(|r| stable(Value::String(r)).as_str().unwrap_or_default().to_string())
                        },
                        content: stable(s.input.clone().unwrap_or(Value::Null)),
                    });
                    if decision != "sent" {
                        continue;
                    }
                }
                if s.status != enlace_store::StepStatus::Succeeded {
                    continue;
                }
                *r.call_counts.entry(format!("{app}.{action}")).or_default() += 1;
                r.calls.push(SimCall {
                    at: rfc3339(s.finished_at.unwrap_or(s.started_at)),
                    recipe: run.recipe_id.clone(),
                    step: s.key.clone(),
                    contact: contact.clone(),
                    app,
                    action,
                    content: stable(s.input.clone().unwrap_or(Value::Null)),
                    output: if onsite { s.output.clone().map(&stable) } else { None },
                });
            }
        }
    }
    for (_, st) in r.runs.iter_mut() {
        st.retain(|_, n| *n > 0);
    }
    keep_earliest(&mut r, opts.list_limit, true);
    Ok(r)
}

/// Sorts the report's lists and keeps the `limit` earliest of each (with `slack`, only once
/// a list holds twice that, so that collecting stays cheap).
fn keep_earliest(r: &mut SimReport, limit: usize, exact: bool) {
    let limit = limit.max(1);
    if exact || r.calls.len() > 2 * limit {
        r.calls.sort_by(|a, b| (&a.at, &a.contact, &a.recipe, &a.step).cmp(&(&b.at, &b.contact, &b.recipe, &b.step)));
        r.calls.truncate(limit);
    }
    if exact || r.messages.len() > 2 * limit {
        r.messages.sort_by(|a, b| (&a.due, &a.contact, &a.recipe, &a.step).cmp(&(&b.due, &b.contact, &b.recipe, &b.step)));
        r.messages.truncate(limit);
    }
}

/// `(recipe, step id) -> (app, action)` for every action step of the simulated recipes.
fn action_steps(recipes: &[Recipe]) -> BTreeMap<(String, String), (String, String)> {
    let mut out = BTreeMap::new();
    for r in recipes {
        enlace_recipe::model::walk_steps(&r.steps, &mut |s| {
            if let StepKind::Action(a) = &s.kind {
                out.insert((r.id.clone(), s.id.clone()), (a.app.clone(), a.action.clone()));
            }
        });
    }
    out
}

// ---- reading the inputs ----

fn parse_at(v: &Value, line: usize) -> Result<i64, SimError> {
    crate::exec::parse_time(v, None).map_err(|e| SimError::Input(format!("line {line}: `at`: {e}")))
}

fn status_of(s: &str, what: &str) -> Result<ConsentStatus, SimError> {
    ConsentStatus::parse(s).ok_or_else(|| SimError::Input(format!("{what}: `{s}` is not a consent status; use `granted` or `withdrawn`")))
}

/// Reads contacts from CSV (a header row; `email` required; `at` the import time; `tags`
/// separated by `;`; `consent.<purpose>.<channel>` = `granted` or `withdrawn`; every other
/// column a field) or JSON lines (`{"email", "at"?, "fields"?, "tags"?, "consents"?:
/// [{"purpose", "channel", "status"}]}`), told apart by the first character.
pub fn parse_contacts(text: &str) -> Result<Vec<SimContact>, SimError> {
    if text.trim_start().starts_with('{') {
        let mut out = vec![];
        for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let n = i + 1;
            let v: Value = serde_json::from_str(line).map_err(|e| SimError::Input(format!("contacts, line {n}: not JSON: {e}")))?;
            let email = v
                .get("email")
                .and_then(Value::as_str)
                .ok_or_else(|| SimError::Input(format!("contacts, line {n}: `email` is required")))?;
            let at = match v.get("at") {
                Some(a) if !a.is_null() => Some(parse_at(a, n)?),
                _ => None,
            };
            let fields = v.get("fields").and_then(Value::as_object).cloned().unwrap_or_default();
            let tags = v
                .get("tags")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(|t| t.as_str().map(str::to_string)).collect())
                .unwrap_or_default();
            let mut consents = vec![];
            for c in v.get("consents").and_then(Value::as_array).into_iter().flatten() {
                let get = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
                consents.push((get("purpose"), get("channel"), status_of(&get("status"), &format!("contacts, line {n}"))?));
            }
            out.push(SimContact { email: email.to_string(), at, fields, tags, consents });
        }
        return Ok(out);
    }
    let mut rd = csv::ReaderBuilder::new().trim(csv::Trim::All).from_reader(text.as_bytes());
    let headers = rd.headers().map_err(|e| SimError::Input(format!("contacts: the CSV header cannot be read: {e}")))?.clone();
    if !headers.iter().any(|h| h == "email") {
        return Err(SimError::Input(format!(
            "contacts: the CSV needs an `email` column; its columns are: {}",
            headers.iter().collect::<Vec<_>>().join(", ")
        )));
    }
    let mut out = vec![];
    for (i, row) in rd.records().enumerate() {
        let n = i + 2;
        let row = row.map_err(|e| SimError::Input(format!("contacts, line {n}: {e}")))?;
        let mut c = SimContact { email: String::new(), at: None, fields: Map::new(), tags: vec![], consents: vec![] };
        for (h, v) in headers.iter().zip(row.iter()) {
            match h {
                "email" => c.email = v.to_string(),
                "at" if !v.is_empty() => c.at = Some(parse_at(&json!(v), n)?),
                "tags" => c.tags = v.split(';').map(str::trim).filter(|t| !t.is_empty()).map(str::to_string).collect(),
                _ if h.starts_with("consent.") => {
                    let parts: Vec<&str> = h.splitn(3, '.').collect();
                    if parts.len() != 3 {
                        return Err(SimError::Input(format!(
                            "contacts: the column `{h}` must be `consent.<purpose>.<channel>`, like `consent.marketing.email`"
                        )));
                    }
                    if !v.is_empty() {
                        c.consents.push((parts[1].to_string(), parts[2].to_string(), status_of(v, &format!("contacts, line {n}, `{h}`"))?));
                    }
                }
                _ if !v.is_empty() => {
                    c.fields.insert(h.to_string(), json!(v));
                }
                _ => {}
            }
        }
        if c.email.is_empty() {
            return Err(SimError::Input(format!("contacts, line {n}: the email is empty")));
        }
        out.push(c);
    }
    Ok(out)
}

/// Reads events, one JSON object a line: `at` (RFC 3339) and one of `webhook` (a recipe id,
/// with `body`), `emit` (an event name, with `data`), or `contact` (an email) with `tag`,
/// `fields`, `consent: {purpose, channel, status}` or `activity: KIND` (with `data`). A line with `each_contact: {after,
/// probability?}` instead of `at` and `contact` happens for every imported contact, `after`
/// its import, with that probability (default 1).
pub fn parse_events(text: &str) -> Result<(Vec<SimEvent>, Vec<PerContact>), SimError> {
    let mut events = vec![];
    let mut per = vec![];
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let n = i + 1;
        let err = |m: String| SimError::Input(format!("events, line {n}: {m}"));
        let v: Value = serde_json::from_str(line).map_err(|e| err(format!("not JSON: {e}")))?;
        let contact_action = |email: String| -> Result<Option<SimAction>, SimError> {
            if let Some(t) = v.get("tag").and_then(Value::as_str) {
                return Ok(Some(SimAction::Tag { email, tag: t.to_string() }));
            }
            if let Some(f) = v.get("fields").and_then(Value::as_object) {
                return Ok(Some(SimAction::Fields { email, fields: f.clone() }));
            }
            if let Some(k) = v.get("activity").and_then(Value::as_str) {
                return Ok(Some(SimAction::Activity { email, kind: k.to_string(), data: v.get("data").cloned().unwrap_or(json!({})) }));
            }
            if let Some(c) = v.get("consent") {
                let get = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
                let status = status_of(&get("status"), &format!("events, line {n}"))?;
                return Ok(Some(SimAction::Consent { email, purpose: get("purpose"), channel: get("channel"), status }));
            }
            Ok(None)
        };
        if let Some(each) = v.get("each_contact") {
            let after = each.get("after").and_then(Value::as_str).unwrap_or("0s");
            let after = enlace_core::duration::parse_duration(after).map_err(|e| err(format!("`each_contact.after`: {e}")))?;
            let probability = each.get("probability").and_then(Value::as_f64).unwrap_or(1.0);
            if !(0.0..=1.0).contains(&probability) {
                return Err(err(format!("`each_contact.probability` is {probability}; give a number from 0 to 1")));
            }
            let action = match contact_action(String::new())? {
                Some(SimAction::Tag { tag, .. }) => PerContactAction::Tag(tag),
                Some(SimAction::Fields { fields, .. }) => PerContactAction::Fields(fields),
                Some(SimAction::Consent { purpose, channel, status, .. }) => PerContactAction::Consent { purpose, channel, status },
                Some(SimAction::Activity { kind, data, .. }) => PerContactAction::Activity { kind, data },
                _ => return Err(err("`each_contact` needs what happens: `tag`, `fields`, `consent` or `activity`".into())),
            };
            per.push(PerContact { after, probability, action });
            continue;
        }
        let at = match v.get("at") {
            Some(a) => parse_at(a, n)?,
            None => return Err(err("`at` is required (RFC 3339, like `2026-12-01T09:00:00Z`)".into())),
        };
        let action = if let Some(r) = v.get("webhook").and_then(Value::as_str) {
            SimAction::Webhook { recipe: r.to_string(), body: v.get("body").cloned().unwrap_or(json!({})) }
        } else if let Some(name) = v.get("emit").and_then(Value::as_str) {
            SimAction::Emit { name: name.to_string(), data: v.get("data").cloned().unwrap_or(json!({})) }
        } else if let Some(email) = v.get("contact").and_then(Value::as_str) {
            contact_action(email.to_string())?
                .ok_or_else(|| err("a contact event needs `tag`, `fields`, `consent` or `activity` (with `data`)".into()))?
        } else {
            return Err(err(
                "say what happens: `webhook` (with `body`), `emit` (with `data`), or `contact` (with `tag`, `fields` or `consent`)".into(),
            ));
        };
        events.push(SimEvent { at, action });
    }
    Ok((events, per))
}

/// `n` made-up contacts, the same for the same seed: emails `contact-000001@example.com`...,
/// imported over the first day at whole minutes, a time zone, interests, a phone number,
/// and consent to marketing by email (90%) and SMS (60%).
pub fn generate_contacts(n: usize, seed: u64, start: i64) -> Vec<SimContact> {
    const ZONES: [&str; 6] = ["Europe/Paris", "Europe/London", "America/New_York", "America/Los_Angeles", "Asia/Tokyo", "Australia/Sydney"];
    const PETS: [&str; 3] = ["dogs", "cats", "birds"];
    (0..n)
        .map(|i| {
            let email = format!("contact-{:06}@example.com", i + 1);
            let d = |k: &str| draw(seed, &format!("{email}:{k}"));
            let minute = (d("at") * 1440.0) as i64;
            let mut fields = Map::new();
            fields.insert("first_name".into(), json!(format!("Contact {}", i + 1)));
            fields.insert("timezone".into(), json!(ZONES[(d("tz") * ZONES.len() as f64) as usize % ZONES.len()]));
            fields.insert("pet".into(), json!(PETS[(d("pet") * 3.0) as usize % 3]));
            fields.insert("phone".into(), json!(format!("+1415555{:04}", i % 10_000)));
            let mut consents = vec![];
            let email_ok = d("email") < 0.9;
            consents.push(("marketing".into(), "email".into(), if email_ok { ConsentStatus::Granted } else { ConsentStatus::Withdrawn }));
            if d("sms") < 0.6 {
                consents.push(("marketing".into(), "sms".into(), ConsentStatus::Granted));
            }
            SimContact { email, at: Some(start + minute * 60_000), fields, tags: vec![], consents }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_are_uniform_and_repeatable() {
        assert_eq!(draw(7, "a"), draw(7, "a"));
        assert_ne!(draw(7, "a"), draw(8, "a"));
        let below = (0..10_000).filter(|i| draw(42, &format!("c{i}")) < 0.3).count();
        assert!((2_800..=3_200).contains(&below), "{below}");
    }

    #[test]
    fn contacts_from_csv_and_json_lines() {
        let csv = "email,at,tags,consent.marketing.email,timezone\nada@example.com,2026-12-01T09:00:00Z,vip; new,granted,Europe/Paris\nbob@example.com,,,withdrawn,\n";
        let c = parse_contacts(csv).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].tags, ["vip", "new"]);
        assert_eq!(c[0].fields["timezone"], "Europe/Paris");
        assert_eq!(c[0].consents, [("marketing".to_string(), "email".to_string(), ConsentStatus::Granted)]);
        assert_eq!(c[1].at, None);
        assert!(c[1].fields.is_empty());
        let e = parse_contacts("name\nAda\n").unwrap_err().to_string();
        assert!(e.contains("needs an `email` column"), "{e}");
        let e = parse_contacts("email,consent.marketing.email\na@x.io,maybe\n").unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("granted"), "{e}");
        let j = parse_contacts(
            "{\"email\": \"a@x.io\", \"consents\": [{\"purpose\": \"marketing\", \"channel\": \"sms\", \"status\": \"granted\"}]}\n",
        )
        .unwrap();
        assert_eq!(j[0].consents[0].1, "sms");
    }

    #[test]
    fn events_and_per_contact_events() {
        let text = r#"{"at": "2026-12-01T09:00:00Z", "webhook": "signup", "body": {"email": "a@x.io"}}
{"at": "2026-12-02T09:00:00Z", "contact": "a@x.io", "tag": "answered"}
{"each_contact": {"after": "2d", "probability": 0.4}, "tag": "answered"}
"#;
        let (ev, per) = parse_events(text).unwrap();
        assert_eq!(ev.len(), 2);
        assert!(matches!(&ev[1].action, SimAction::Tag { tag, .. } if tag == "answered"));
        assert_eq!(per[0].after, Duration::from_secs(2 * 86_400));
        let e = parse_events("{\"at\": \"2026-12-01T09:00:00Z\"}\n").unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("say what happens"), "{e}");
        let e = parse_events("{\"each_contact\": {\"probability\": 2}, \"tag\": \"x\"}").unwrap_err().to_string();
        assert!(e.contains("from 0 to 1"), "{e}");
    }

    #[test]
    fn generated_contacts_depend_on_the_seed_only() {
        let a = generate_contacts(50, 1, 0);
        assert_eq!(a, generate_contacts(50, 1, 0));
        assert_ne!(a, generate_contacts(50, 2, 0));
        assert!(a.iter().all(|c| c.at.unwrap() < 86_400_000 && c.at.unwrap() % 60_000 == 0));
    }
}
