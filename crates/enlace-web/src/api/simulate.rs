//! `POST /api/v1/simulate`: previews stored recipes over contacts and events on a virtual
//! clock, calling nothing outside (the simulator, as `enlace simulate` runs it), under the
//! installation's send policy unless another is given.

use axum::Json;
use axum::extract::State;
use enlace_core::duration::parse_duration;
use enlace_runner::simulate::{SimInput, SimOptions, generate_contacts, parse_contacts, parse_events, simulate};
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::AppState;
use crate::error::{ApiError, ApiResult, ErrorBody};

/// The most contacts one API call simulates (larger runs: `enlace simulate`).
pub const MAX_API_CONTACTS: usize = 20_000;

/// What to simulate.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SimulateRequest {
    /// The ids of stored recipes to run (their current versions, enabled or not).
    pub recipes: Vec<String>,
    /// Contacts: CSV with a header (`email`, `at`, `tags`, `consent.<purpose>.<channel>`, fields) or JSON lines.
    #[serde(default)]
    pub contacts: Option<String>,
    /// Make up this many contacts instead (the same for the same seed).
    #[serde(default)]
    pub generate_contacts: Option<usize>,
    /// Events, JSON lines (see the README's "Previewing a flow").
    #[serde(default)]
    pub events: Option<String>,
    #[serde(default = "one")]
    pub seed: u64,
    /// The virtual clock's start (RFC 3339); default: the earliest time in the inputs.
    #[serde(default)]
    pub start: Option<String>,
    /// How long to simulate (`30d`).
    #[serde(default = "thirty_days")]
    pub duration: String,
    /// The send policy to simulate with; the installation's when absent.
    #[serde(default)]
    pub policy: Option<Value>,
    /// The lead scoring rules to simulate with; the installation's when absent.
    #[serde(default)]
    pub scoring: Option<Value>,
    /// List at most this many messages and calls (the earliest); counts are complete.
    #[serde(default = "thousand")]
    pub list: usize,
}

fn one() -> u64 {
    1
}
fn thirty_days() -> String {
    "30d".into()
}
fn thousand() -> usize {
    1000
}

/// Runs the simulation and answers its report: runs per recipe by status, journal entries
/// per step by status, every message to a person with the send policy's decision, every other
/// outside call. Nothing is sent and the installation's data is not touched.
#[utoipa::path(post, path = "/api/v1/simulate", tag = "simulate", request_body = SimulateRequest,
    responses((status = 200, body = Object), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn run(State(s): State<AppState>, Json(req): Json<SimulateRequest>) -> ApiResult<Json<Value>> {
    if req.recipes.is_empty() {
        return Err(ApiError::invalid("recipes", "name at least one stored recipe to simulate"));
    }
    let mut recipes = vec![];
    for (i, id) in req.recipes.iter().enumerate() {
        match s.runner.catalog().current(id) {
            Some(c) => recipes.push((*c.recipe).clone()),
            None => return Err(ApiError::not_found(format!("recipes[{i}]: no recipe `{id}`; save it first (POST /api/v1/recipes)"))),
        }
    }
    let bad = |path: &str, e: enlace_runner::simulate::SimError| ApiError::invalid(path, e.to_string());
    let mut input = SimInput::default();
    if let Some(text) = &req.contacts {
        input.contacts = parse_contacts(text).map_err(|e| bad("contacts", e))?;
    }
    if let Some(text) = &req.events {
        let (events, per) = parse_events(text).map_err(|e| bad("events", e))?;
        input.events = events;
        input.per_contact = per;
    }
    let earliest = input.contacts.iter().filter_map(|c| c.at).chain(input.events.iter().map(|e| e.at)).min();
    let start = match (&req.start, earliest) {
        (Some(t), _) => enlace_runner::exec_parse_time(t).map_err(|e| ApiError::invalid("start", e))?,
        (None, Some(t)) => t,
        (None, None) => s.runner.now_ms(),
    };
    if let Some(n) = req.generate_contacts {
        input.contacts = generate_contacts(n, req.seed, start);
    }
    if input.contacts.len() > MAX_API_CONTACTS {
        return Err(ApiError::invalid(
            "contacts",
            format!(
                "{} contacts; the API simulates at most {MAX_API_CONTACTS} at once (use `enlace simulate` for more)",
                input.contacts.len()
            ),
        ));
    }
    let duration = parse_duration(&req.duration).map_err(|e| ApiError::invalid("duration", e))?;
    let policy = match req.policy {
        Some(v) => match enlace_core::action::decode_input::<enlace_core::policy::PolicySettings>(v) {
            Ok(p) => Some(p),
            Err(e) => return Err(ApiError::invalid("policy", e.to_string())),
        },
        None => Some(s.runner.store().policy_settings().await?),
    };
    let scoring = match req.scoring {
        Some(v) => match serde_json::from_value::<enlace_core::scoring::ScoringRules>(v) {
            Ok(r) => Some(r),
            Err(e) => return Err(ApiError::invalid("scoring", e.to_string())),
        },
        None => Some(s.runner.store().scoring_rules().await?),
    };
    let opts = SimOptions {
        start,
        until: start + duration.as_millis() as i64,
        seed: req.seed,
        parallel: 32,
        policy,
        scoring,
        list_limit: req.list.max(1),
    };
    let report = simulate(s.runner.registry().clone(), &recipes, input, &opts).await.map_err(|e| match e {
        enlace_runner::simulate::SimError::Input(m) => ApiError::invalid("", m),
        enlace_runner::simulate::SimError::Runner(e) => ApiError::from(e),
        enlace_runner::simulate::SimError::Store(e) => ApiError::from(e),
    })?;
    Ok(Json(serde_json::to_value(report).unwrap_or(Value::Null)))
}
