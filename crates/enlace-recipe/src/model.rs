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
    /// Blast-radius limits (`limits: {sends_per_hour, sends_per_day}`): sends above them
    /// are held for approval.
    pub limits: enlace_core::policy::SendLimits,
    /// Names of the secrets the recipe's templates read (`{{secrets.NAME}}`).
    pub secrets: BTreeSet<String>,
    /// The recipe as written, normalised to JSON: what the store keeps as a version.
    pub source: Value,
    /// Set when the recipe is contact-scoped (a journey): its runs are about one contact.
    pub journey: Option<Journey>,
}

/// What makes a recipe contact-scoped: each run is about one contact, which templates read
/// as `contact`, `wait_for` waits for that contact's events, and `split` is sticky per contact.
#[derive(Debug, Clone)]
pub struct Journey {
    /// How a run finds its contact (an email or a contact id), rendered against the trigger
    /// when the run starts; `None` for the contact store's own triggers (the trigger's contact).
    pub contact: Option<Template>,
    /// Whether a contact may go through the recipe again.
    pub reentry: Reentry,
    /// Checked before every step: the first that holds ends the run.
    pub exit: Vec<ExitRule>,
}

impl Journey {
    /// The timeline kinds that should wake a waiting run of this recipe: what its
    /// `wait_for` steps wait for and what its exit rules look for.
    pub fn listens(&self, steps: &[Step]) -> Vec<String> {
        let mut out: Vec<String> = self
            .exit
            .iter()
            .filter_map(|r| match &r.when {
                ExitWhen::Event { kind, .. } => Some(kind.clone()),
                ExitWhen::If(_) => None,
            })
            .collect();
        walk_steps(steps, &mut |s| {
            if let StepKind::WaitFor(w) = &s.kind {
                out.push(w.event.clone());
            }
        });
        out.sort();
        out.dedup();
        out
    }
}

/// `reentry`: may a contact that went through the recipe go through it again?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reentry {
    /// Every trigger event starts a run (the default).
    Always,
    /// A contact goes through the recipe once, ever.
    Once,
    /// Again only when the last entry is at least this long ago.
    Cooldown(Duration),
}

/// One of a journey's `exit` rules.
#[derive(Debug, Clone)]
pub struct ExitRule {
    pub when: ExitWhen,
    /// The rule is the journey's goal: a run it ends has `succeeded` (otherwise `filtered`).
    pub goal: bool,
}

#[derive(Debug, Clone)]
pub enum ExitWhen {
    /// An event of this kind on the contact's timeline since the run started, whose data has
    /// these values (templates rendered when checked).
    Event { kind: String, matching: Vec<(String, Template)> },
    /// A condition over `contact`, `trigger`, `vars`.
    If(Template),
}

/// `wait_for`: pauses until an event of the contact's timeline matches, or the timeout.
#[derive(Debug, Clone)]
pub struct WaitFor {
    /// The timeline kind (`form_submitted`, `email_clicked`, `purchase`, ...).
    pub event: String,
    /// `data` fields the event must have, each compared to its template rendered when the
    /// wait starts (a dotted name reads nested fields: `form.id`).
    pub matching: Vec<(String, Template)>,
    pub timeout: Duration,
}

/// Calls `f` on every step, nested ones included.
pub fn walk_steps<'a>(steps: &'a [Step], f: &mut dyn FnMut(&'a Step)) {
    for s in steps {
        f(s);
        match &s.kind {
            StepKind::Branch { arms, otherwise } => {
                for a in arms {
                    walk_steps(&a.steps, f);
                }
                if let Some(o) = otherwise {
                    walk_steps(o, f);
                }
            }
            StepKind::Foreach { steps, .. } => walk_steps(steps, f),
            StepKind::Split { paths, .. } => {
                for (_, p) in paths {
                    walk_steps(p, f);
                }
            }
            _ => {}
        }
    }
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
        let mut found = None;
        walk_steps(&self.steps, &mut |s| {
            if found.is_none() && s.id == id {
                found = Some(s);
            }
        });
        found
    }

    /// The connections the recipe uses (the trigger's and every action's).
    pub fn connections(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        if let Some(c) = &self.trigger.connection {
            out.insert(c.clone());
        }
        walk_steps(&self.steps, &mut |s| {
            if let StepKind::Action(a) = &s.kind
                && let Some(c) = &a.connection
            {
                out.insert(c.clone());
            }
        });
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
    Branch {
        arms: Vec<BranchArm>,
        otherwise: Option<Vec<Step>>,
    },
    Foreach {
        items: Template,
        steps: Vec<Step>,
    },
    Delay(Delay),
    Emit {
        name: String,
        data: Mapping,
    },
    WaitFor(WaitFor),
    /// A/B paths: `weights` in the order written, each path's steps by name.
    Split {
        weights: Vec<(String, u32)>,
        paths: Vec<(String, Vec<Step>)>,
    },
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
            StepKind::WaitFor(_) => "wait_for",
            StepKind::Split { .. } => "split",
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
    /// The message's purpose and kind, for actions that reach a person (the send policy).
    pub send: SendOptions,
}

/// What a step that sends a message to a person says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendOptions {
    /// The consent purpose the message needs (`marketing` unless the step says `purpose:`).
    pub purpose: String,
    /// A transactional message (`transactional: true`) skips the frequency cap and quiet
    /// hours, never a withdrawal of consent or a suppression.
    pub transactional: bool,
}

impl Default for SendOptions {
    fn default() -> Self {
        SendOptions { purpose: enlace_core::policy::DEFAULT_PURPOSE.to_string(), transactional: false }
    }
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
