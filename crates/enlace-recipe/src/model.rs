//! The checked form of a recipe: what validation produces and the runner executes. Every
//! template is compiled, every name resolved, every duration parsed.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono_tz::Tz;
use serde_json::{Map, Value};

use crate::template::{Data, RenderError, Template};

/// A recipe ready to run.
#[derive(Debug, Clone)]
pub struct Recipe {
    pub id: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub enabled: bool,
    pub trigger: Trigger,
    pub steps: Vec<Step>,
    pub vars: Map<String, Value>,
    /// Names of the secrets the recipe's templates read (`{{secrets.NAME}}`).
    pub secrets: BTreeSet<String>,
    /// The recipe as written, normalised to JSON: what the store keeps as a version.
    pub source: Value,
}

impl Recipe {
    /// The webhook ingress, when the trigger is `webhook.catch`, a subscribe trigger, or a
    /// connector's inbound trigger (`twilio.inbound_sms`).
    pub fn hook(&self) -> Option<&WebhookConfig> {
        match &self.trigger.config {
            TriggerConfig::Webhook(w) => Some(w),
            TriggerConfig::Subscribe { hook, .. } => Some(hook),
            _ => None,
        }
    }

    /// Finds a step by id anywhere in the recipe.
    pub fn find_step(&self, id: &str) -> Option<&Step> {
        fn walk<'a>(steps: &'a [Step], id: &str) -> Option<&'a Step> {
            for s in steps {
                if s.id == id {
                    return Some(s);
                }
                let found = match &s.kind {
                    StepKind::Branch { arms, otherwise } => {
                        arms.iter().find_map(|a| walk(&a.steps, id)).or_else(|| otherwise.as_ref().and_then(|o| walk(o, id)))
                    }
                    StepKind::Foreach { steps, .. } => walk(steps, id),
                    _ => None,
                };
                if found.is_some() {
                    return found;
                }
            }
            None
        }
        walk(&self.steps, id)
    }

    /// The connections the recipe uses (the trigger's and every action's).
    pub fn connections(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        if let Some(c) = &self.trigger.connection {
            out.insert(c.clone());
        }
        fn walk(steps: &[Step], out: &mut BTreeSet<String>) {
            for s in steps {
                match &s.kind {
                    StepKind::Action(a) => {
                        if let Some(c) = &a.connection {
                            out.insert(c.clone());
                        }
                    }
                    StepKind::Branch { arms, otherwise } => {
                        for a in arms {
                            walk(&a.steps, out);
                        }
                        if let Some(o) = otherwise {
                            walk(o, out);
                        }
                    }
                    StepKind::Foreach { steps, .. } => walk(steps, out),
                    _ => {}
                }
            }
        }
        walk(&self.steps, &mut out);
        out
    }
}

#[derive(Debug, Clone)]
pub struct Trigger {
    pub app: String,
    pub event: String,
    pub connection: Option<String>,
    pub config: TriggerConfig,
}

#[derive(Debug, Clone)]
pub enum TriggerConfig {
    Webhook(WebhookConfig),
    Cron(CronConfig),
    Event {
        name: String,
    },
    /// A change in the contact store (`contacts.contact_created`, `contact_updated`,
    /// `tag_added`, `event`); `tag` narrows `tag_added` to one tag, `kind` narrows `event` to
    /// one timeline kind.
    Contact {
        trigger: enlace_core::contacts::ContactTrigger,
        tag: Option<String>,
        kind: Option<String>,
    },
    /// A connector's polling trigger: its `with`, checked against the trigger's schema, and
    /// how the runner polls it (the trigger's own `every` and `hold_above`).
    Polling {
        with: Value,
        /// How often the runner polls ([`DEFAULT_POLL_EVERY`], at least [`MIN_POLL_EVERY`]).
        every: Duration,
        /// The flood guard: a poll that finds more new items than this holds them all as
        /// one batch for approval instead of firing them ([`DEFAULT_HOLD_ABOVE`]).
        hold_above: u32,
    },
    /// A connector's subscribe (REST hook) trigger: its `with`, checked against the
    /// trigger's schema, and the webhook ingress the app calls (`POST
    /// /hooks/{path}`, the path being `subscriptions/<recipe id>`).
    Subscribe {
        with: Value,
        hook: WebhookConfig,
    },
}

/// How often a polling trigger polls unless its recipe says `every`.
pub const DEFAULT_POLL_EVERY: Duration = Duration::from_secs(300);
/// The shortest `every` a polling trigger may ask for.
pub const MIN_POLL_EVERY: Duration = Duration::from_secs(10);
/// The flood guard's threshold unless the recipe says `hold_above`.
pub const DEFAULT_HOLD_ABOVE: u32 = 100;

/// The webhook path a subscribe trigger's app calls for a recipe.
pub fn subscription_path(recipe_id: &str) -> String {
    format!("subscriptions/{recipe_id}")
}

/// `webhook.catch`.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub path: String,
    /// HMAC-SHA256 key; a template so that it can read `{{secrets.NAME}}`.
    pub secret: Option<Template>,
    /// Header carrying `sha256=<hex>`; lowercase.
    pub signature_header: String,
    pub dedupe_key: Option<Template>,
    pub respond: Respond,
    /// Largest accepted body, in bytes.
    pub max_body: usize,
    /// Inbound limit for this hook: at most `calls` per `per`.
    pub rate_limit: Option<(u32, Duration)>,
    /// A connector's inbound trigger (`twilio.inbound_sms`): the connector checks the
    /// vendor's signature with the trigger's connection, shapes the event, names its dedupe
    /// key and the answer; `secret`, `signature_header`, `dedupe_key` and `respond` are unused.
    pub inbound: bool,
}

#[derive(Debug, Clone)]
pub enum Respond {
    /// 202 with the run id, as soon as the event is stored.
    Accepted,
    /// Wait for the run to end (up to `timeout`) and answer with `template` rendered.
    AfterRun { template: Mapping, timeout: Duration },
}

/// `schedule.cron`.
#[derive(Debug, Clone)]
pub struct CronConfig {
    pub expression: String,
    pub cron: croner::Cron,
    pub timezone: Tz,
}

#[derive(Debug, Clone)]
pub struct Step {
    pub id: String,
    pub name: Option<String>,
    pub kind: StepKind,
}

#[derive(Debug, Clone)]
pub enum StepKind {
    Action(ActionStep),
    Filter(Template),
    Branch { arms: Vec<BranchArm>, otherwise: Option<Vec<Step>> },
    Foreach { items: Template, steps: Vec<Step> },
    Delay(Delay),
    Emit { name: String, data: Mapping },
}

impl StepKind {
    pub fn name(&self) -> &'static str {
        match self {
            StepKind::Action(_) => "action",
            StepKind::Filter(_) => "filter",
            StepKind::Branch { .. } => "branch",
            StepKind::Foreach { .. } => "foreach",
            StepKind::Delay(_) => "delay",
            StepKind::Emit { .. } => "emit",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ActionStep {
    pub app: String,
    pub action: String,
    pub connection: Option<String>,
    pub with: Mapping,
    pub retry: RetryPolicy,
    pub on_error: OnError,
}

#[derive(Debug, Clone)]
pub struct BranchArm {
    pub condition: Template,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone)]
pub enum Delay {
    For(Duration),
    Until { at: Template, timezone: Option<Template> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    Fail,
    Continue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backoff {
    Exponential,
    Fixed,
}

/// How a failing action step is retried. The defaults: 5 attempts, exponential backoff with
/// full jitter from 1s, at most 1h between attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub backoff: Backoff,
    pub initial: Duration,
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { attempts: 5, backoff: Backoff::Exponential, initial: Duration::from_secs(1), max: Duration::from_secs(3600) }
    }
}

impl RetryPolicy {
    /// The ceiling of the wait before attempt `next_attempt` (2 for the first retry); the
    /// runner draws the actual wait uniformly below it (full jitter).
    pub fn ceiling(&self, next_attempt: u32) -> Duration {
        match self.backoff {
            Backoff::Fixed => self.initial,
            Backoff::Exponential => {
                let exp = next_attempt.saturating_sub(2).min(32);
                let ms = (self.initial.as_millis() as u64).saturating_mul(1u64 << exp);
                Duration::from_millis(ms).min(self.max)
            }
        }
    }
}

/// A `with` map compiled: strings are templates, other values stay as they are.
#[derive(Debug, Clone)]
pub enum Mapping {
    Template(Template),
    Object(Vec<(String, Mapping)>),
    Array(Vec<Mapping>),
    Literal(Value),
}

/// A render error with the path of the value that failed (`with.json.email`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct MappingError {
    pub path: String,
    pub message: String,
}

impl Mapping {
    /// Renders every template, keeping keys and structure (copies `data` once; see
    /// [`Mapping::eval`]).
    pub fn render(&self, data: &Value, path: &str) -> Result<Value, MappingError> {
        self.eval(&Data::new(data.clone()), path)
    }

    /// Renders every template against data already wrapped.
    pub fn eval(&self, data: &Data, path: &str) -> Result<Value, MappingError> {
        match self {
            Mapping::Literal(v) => Ok(v.clone()),
            Mapping::Template(t) => t.eval(data).map_err(|e: RenderError| MappingError { path: path.to_string(), message: e.message }),
            Mapping::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, m) in items.iter().enumerate() {
                    out.push(m.eval(data, &format!("{path}[{i}]"))?);
                }
                Ok(Value::Array(out))
            }
            Mapping::Object(fields) => {
                let mut out = Map::with_capacity(fields.len());
                for (k, m) in fields {
                    let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                    out.insert(k.clone(), m.eval(data, &p)?);
                }
                Ok(Value::Object(out))
            }
        }
    }

    /// Every template inside.
    pub fn templates(&self) -> Vec<&Template> {
        let mut out = vec![];
        fn walk<'a>(m: &'a Mapping, out: &mut Vec<&'a Template>) {
            match m {
                Mapping::Template(t) => out.push(t),
                Mapping::Array(items) => items.iter().for_each(|i| walk(i, out)),
                Mapping::Object(fields) => fields.iter().for_each(|(_, m)| walk(m, out)),
                Mapping::Literal(_) => {}
            }
        }
        walk(self, &mut out);
        out
    }
}
