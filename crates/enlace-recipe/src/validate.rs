//! Validation: from the value a file or an API call gave to a checked [`Recipe`], reporting
//! every problem at once, each with its path (and its line when the text is known). No
//! network: names are resolved against the [`Registry`] the caller passes in.

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::time::Duration;

use enlace_core::duration::parse_duration;
use enlace_core::policy::SendLimits;
use enlace_core::{AuthKind, Registry, TriggerKind};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::model::*;
use crate::source::{self, SourceMap, join_index, join_key};
use crate::template::{Engine, Template};

/// One problem, pointing at the value that causes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// `steps[1].with.url`; empty for the whole file.
    pub path: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<u32>,
}

/// Every problem found in one recipe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostics {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            if let Some(file) = &self.file {
                write!(f, "{file}:")?;
            }
            if let Some(line) = d.line {
                write!(f, "{line}:{}: ", d.column.unwrap_or(1))?;
            } else if self.file.is_some() {
                write!(f, " ")?;
            }
            if d.path.is_empty() {
                write!(f, "{}", d.message)?;
            } else {
                write!(f, "{}: {}", d.path, d.message)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// Parses and validates recipe text (YAML or JSON). `file` names it in diagnostics.
pub fn load(text: &str, file: Option<&str>, registry: &Registry) -> Result<Recipe, Diagnostics> {
    let (value, map) = source::parse(text).map_err(|e| Diagnostics {
        file: file.map(str::to_string),
        diagnostics: vec![Diagnostic {
            path: String::new(),
            message: format!("not valid YAML or JSON: {}", e.message),
            line: e.position.map(|p| p.line),
            column: e.position.map(|p| p.column),
        }],
    })?;
    check(&value, Some(&map), file, registry)
}

/// Validates a recipe already parsed into a value (for example a stored version).
pub fn check(value: &Value, map: Option<&SourceMap>, file: Option<&str>, registry: &Registry) -> Result<Recipe, Diagnostics> {
    let mut v = Validator {
        map,
        registry,
        engine: Engine::global(),
        diags: vec![],
        step_ids: HashSet::new(),
        all_ids: HashSet::new(),
        secrets: BTreeSet::new(),
        vars: Map::new(),
        contact_scoped: false,
    };
    let recipe = v.recipe(value);
    if v.diags.is_empty()
        && let Some(r) = recipe
    {
        return Ok(r);
    }
    let mut diags = v.diags;
    diags.sort_by_key(|d| (d.line.unwrap_or(u32::MAX), d.column.unwrap_or(0)));
    Err(Diagnostics { file: file.map(str::to_string), diagnostics: diags })
}

/// Largest body a webhook accepts unless its recipe says otherwise: 1 MiB.
pub const DEFAULT_MAX_BODY: usize = 1 << 20;
/// The largest `max_body` a recipe may set: 16 MiB.
pub const MAX_MAX_BODY: usize = 16 << 20;

const TOP_KEYS: &[&str] = &["id", "name", "description", "enabled", "trigger", "steps", "vars", "contact", "reentry", "exit", "limits"];
const CONTACT_SCOPE_HINT: &str = "add `contact: \"{{trigger.body.email}}\"` (an email or a contact id) at the top of the recipe, or start it with a `contacts.*` trigger";
const TRIGGER_KEYS: &[&str] = &["app", "event", "connection", "with", "every", "hold_above"];
const WEBHOOK_KEYS: &[&str] = &["path", "secret", "signature_header", "dedupe_key", "respond", "max_body", "rate_limit"];
const STEP_KINDS: &[&str] = &["action", "filter", "branch", "foreach", "delay", "delay_until", "emit", "wait_for", "split"];
const WEBHOOK_EVENT_KEYS: &[&str] = &["body", "headers", "query", "received_at", "path"];
const RUN_KEYS: &[&str] = &["id", "recipe", "started_at", "attempt", "now"];

struct Scope<'s> {
    /// Steps whose output is visible here.
    visible: &'s [String],
    in_foreach: bool,
    trigger_keys: Option<&'static [&'static str]>,
}

struct Validator<'a> {
    map: Option<&'a SourceMap>,
    registry: &'a Registry,
    engine: &'static Engine,
    diags: Vec<Diagnostic>,
    step_ids: HashSet<String>,
    /// Every step id written anywhere in the recipe, valid or not.
    all_ids: HashSet<String>,
    secrets: BTreeSet<String>,
    vars: Map<String, Value>,
    /// The recipe is contact-scoped: `contact` is readable, `wait_for` allowed.
    contact_scoped: bool,
}

fn is_slug(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

fn is_step_id(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-')
}

/// Up to three valid names closest to `name`, for "did you mean".
pub fn closest<'n>(name: &str, choices: impl IntoIterator<Item = &'n str>) -> Vec<&'n str> {
    let mut scored: Vec<(usize, &str)> = choices.into_iter().map(|c| (levenshtein(name, c), c)).collect();
    scored.sort();
    let limit = (name.len() / 3).max(2);
    scored.into_iter().filter(|(d, _)| *d <= limit).take(3).map(|(_, c)| c).collect()
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = if ca == *cb { 0 } else { 1 };
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// "unknown X `name` PLACE; did you mean `a`? Valid choices: a, b, c".
fn unknown(what: &str, name: &str, choices: &[&str]) -> String {
    unknown_in(what, name, "", choices)
}

fn unknown_in(what: &str, name: &str, place: &str, choices: &[&str]) -> String {
    let near = closest(name, choices.iter().copied());
    let mut msg = format!("unknown {what} `{name}`");
    if !place.is_empty() {
        msg.push(' ');
        msg.push_str(place);
    }
    if let Some(n) = near.first() {
        msg.push_str(&format!("; did you mean `{n}`?"));
        if choices.is_empty() {
            return msg;
        }
        msg.push_str(&format!(" Valid choices: {}", choices.join(", ")));
    } else if choices.is_empty() {
        msg.push_str(" (there are none)");
    } else {
        msg.push_str(&format!("; valid choices: {}", choices.join(", ")));
    }
    msg
}

/// A field's description, on one line, first sentence only: for "the field X is required".
fn first_sentence(text: &str) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.find(". ") {
        Some(i) => one_line[..i].to_string(),
        None => one_line.trim_end_matches('.').to_string(),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

impl<'a> Validator<'a> {
    fn err(&mut self, path: &str, message: impl Into<String>) {
        let pos = self.map.and_then(|m| m.find(path));
        self.diags.push(Diagnostic {
            path: path.to_string(),
            message: message.into(),
            line: pos.map(|p| p.line),
            column: pos.map(|p| p.column),
        });
    }

    fn err_key(&mut self, path: &str, message: impl Into<String>) {
        let pos = self.map.and_then(|m| m.key(path));
        self.diags.push(Diagnostic {
            path: path.to_string(),
            message: message.into(),
            line: pos.map(|p| p.line),
            column: pos.map(|p| p.column),
        });
    }

    fn object<'v>(&mut self, v: &'v Value, path: &str, what: &str) -> Option<&'v Map<String, Value>> {
        match v {
            Value::Object(m) => Some(m),
            other => {
                self.err(path, format!("{what} must be a map, found {}", type_name(other)));
                None
            }
        }
    }

    fn known_keys(&mut self, m: &Map<String, Value>, path: &str, allowed: &[&str], what: &str) {
        for k in m.keys() {
            if !allowed.contains(&k.as_str()) {
                let p = join_key(path, k);
                self.err_key(&p, unknown_in("key", k, &format!("in {what}"), allowed));
            }
        }
    }

    fn string<'v>(&mut self, m: &'v Map<String, Value>, key: &str, path: &str, required: bool) -> Option<&'v str> {
        let p = join_key(path, key);
        match m.get(key) {
            None | Some(Value::Null) => {
                if required {
                    self.err(path, format!("`{key}` is required"));
                }
                None
            }
            Some(Value::String(s)) => Some(s),
            Some(other) => {
                self.err(&p, format!("must be a string, found {}", type_name(other)));
                None
            }
        }
    }

    fn duration(&mut self, v: &Value, path: &str) -> Option<Duration> {
        match v {
            Value::String(s) => match parse_duration(s) {
                Ok(d) => Some(d),
                Err(e) => {
                    self.err(path, e);
                    None
                }
            },
            other => {
                self.err(path, format!("must be a duration like `30s`, `15m`, `2h`, `3d` or `1w`, found {}", type_name(other)));
                None
            }
        }
    }

    fn recipe(&mut self, value: &Value) -> Option<Recipe> {
        let top = self.object(value, "", "a recipe")?;
        self.known_keys(top, "", TOP_KEYS, "a recipe");

        let id = self.string(top, "id", "", true).map(str::to_string);
        if let Some(id) = &id
            && !is_slug(id)
        {
            self.err("id", format!("`{id}` is not a valid id: use 1 to 63 lowercase letters, digits and dashes, starting with a letter or digit (for example `greet-signups`)"));
        }
        let name = self.string(top, "name", "", false).map(str::to_string);
        let description = self.string(top, "description", "", false).map(str::to_string);
        let enabled = match top.get("enabled") {
            None | Some(Value::Null) => true,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                self.err("enabled", format!("must be true or false, found {}", type_name(other)));
                true
            }
        };
        if let Some(vars) = top.get("vars")
            && let Some(m) = self.object(vars, "vars", "`vars`")
        {
            self.vars = m.clone();
        }

        if let Some(steps) = top.get("steps") {
            collect_raw_ids(steps, &mut self.all_ids);
        }
        let trigger = match top.get("trigger") {
            Some(t) => self.trigger(t, id.as_deref()),
            None => {
                self.err("", "`trigger` is required: say what starts the recipe, for example `trigger: {app: webhook, event: catch}`");
                None
            }
        };
        let trigger_keys = match trigger.as_ref().map(|t| &t.config) {
            Some(TriggerConfig::Webhook(w)) if !w.inbound => Some(WEBHOOK_EVENT_KEYS),
            Some(TriggerConfig::Subscribe { .. }) => Some(WEBHOOK_EVENT_KEYS),
            Some(TriggerConfig::Cron(_)) => Some(&["fired_at"][..]),
            _ => None,
        };
        let contact_trigger = matches!(trigger.as_ref().map(|t| &t.config), Some(TriggerConfig::Contact { .. }));
        let journey = self.journey(top, contact_trigger, trigger_keys);

        let steps = match top.get("steps") {
            Some(Value::Array(list)) if !list.is_empty() => {
                let mut visible = vec![];
                self.steps(list, "steps", &mut visible, false, trigger_keys)
            }
            Some(Value::Array(_)) => {
                self.err("steps", "`steps` is empty; add at least one step");
                None
            }
            Some(other) => {
                self.err("steps", format!("`steps` must be a list, found {}", type_name(other)));
                None
            }
            None => {
                self.err("", "`steps` is required: a list of at least one step");
                None
            }
        };

        // The synchronous answer of a webhook is rendered when the run ends: every step is visible.
        if let Some(Trigger { config: TriggerConfig::Webhook(WebhookConfig { respond: Respond::AfterRun { template, .. }, .. }), .. }) =
            &trigger
        {
            let all: Vec<String> = self.step_ids.iter().cloned().collect();
            let scope = Scope { visible: &all, in_foreach: false, trigger_keys };
            let templates: Vec<Template> = template.templates().into_iter().cloned().collect();
            for t in templates {
                self.check_refs(&t, "trigger.with.respond.after_run", &scope);
            }
        }

        let limits = match top.get("limits") {
            None | Some(Value::Null) => Default::default(),
            Some(l) => self.limits(l),
        };
        let (id, trigger, steps) = (id?, trigger?, steps?);
        Some(Recipe {
            limits,
            id,
            name,
            description,
            enabled,
            trigger,
            steps,
            vars: std::mem::take(&mut self.vars),
            secrets: std::mem::take(&mut self.secrets),
            source: value.clone(),
            journey,
        })
    }

    /// The journey keys (`contact`, `reentry`, `exit`); `Some` when the recipe is
    /// contact-scoped. Runs before the steps are checked, which may then read `contact`.
    fn journey(
        &mut self,
        top: &Map<String, Value>,
        contact_trigger: bool,
        trigger_keys: Option<&'static [&'static str]>,
    ) -> Option<Journey> {
        let none: Vec<String> = vec![];
        let scope = Scope { visible: &none, in_foreach: false, trigger_keys };
        let contact = match top.get("contact") {
            None | Some(Value::Null) => None,
            Some(_) if contact_trigger => {
                self.err("contact", "a recipe started by a `contacts.*` trigger is about the trigger's contact already; remove `contact`");
                None
            }
            Some(v) => {
                // Only what exists when the run starts: the trigger and the constants.
                let t = self.template_in_scope(v, "contact", &scope);
                if let Some(t) = &t
                    && t.references().iter().any(|r| r.first().is_some_and(|x| !matches!(x.as_str(), "trigger" | "vars")))
                {
                    self.err("contact", "`contact` is worked out when the run starts, so it can read only `trigger` and `vars`");
                }
                self.contact_scoped = true;
                t
            }
        };
        self.contact_scoped |= contact_trigger;
        let reentry = match top.get("reentry") {
            None | Some(Value::Null) => Reentry::Always,
            Some(Value::String(s)) if s == "always" => Reentry::Always,
            Some(Value::String(s)) if s == "once" => Reentry::Once,
            Some(Value::Object(m)) if m.len() == 1 && m.contains_key("cooldown") => {
                self.duration(&m["cooldown"], "reentry.cooldown").map(Reentry::Cooldown).unwrap_or(Reentry::Always)
            }
            Some(_) => {
                self.err(
                    "reentry",
                    "must be `always` (the default), `once`, or `{cooldown: \"30d\"}` (again only that long after the last entry)",
                );
                Reentry::Always
            }
        };
        let mut exit = vec![];
        match top.get("exit") {
            None | Some(Value::Null) => {}
            Some(Value::Array(rules)) => {
                // Exit rules are checked before every step: they see the contact, the trigger and the constants.
                self.exit_rules(&scope, rules, &mut exit);
            }
            Some(other) => {
                self.err("exit", format!("must be a list of rules (`- event: purchase` or `- if: TEMPLATE`), found {}", type_name(other)))
            }
        }
        if !self.contact_scoped {
            for k in ["reentry", "exit"] {
                if top.contains_key(k) {
                    self.err_key(k, format!("`{k}` applies to contact-scoped recipes (journeys); {CONTACT_SCOPE_HINT}"));
                }
            }
            return None;
        }
        Some(Journey { contact, reentry, exit })
    }

    fn exit_rules(&mut self, scope: &Scope<'_>, rules: &[Value], out: &mut Vec<ExitRule>) {
        for (i, rv) in rules.iter().enumerate() {
            let rp = join_index("exit", i);
            let Some(r) = self.object(rv, &rp, "an exit rule") else { continue };
            self.known_keys(r, &rp, &["event", "match", "if", "goal"], "an exit rule");
            let goal = match r.get("goal") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(other) => {
                    self.err(&join_key(&rp, "goal"), format!("must be true or false, found {}", type_name(other)));
                    false
                }
            };
            let when = match (r.get("event"), r.get("if")) {
                (Some(_), Some(_)) => {
                    self.err(&rp, "an exit rule has either `event` or `if`, not both; write two rules");
                    None
                }
                (Some(_), None) => {
                    let kind = self.event_kind(r, "event", &rp);
                    let matching = self.matching(r.get("match"), &join_key(&rp, "match"), scope);
                    kind.map(|kind| ExitWhen::Event { kind, matching })
                }
                (None, Some(c)) => {
                    if r.contains_key("match") {
                        self.err(&join_key(&rp, "match"), "`match` goes with `event`");
                    }
                    self.template_in_scope(c, &join_key(&rp, "if"), scope).map(ExitWhen::If)
                }
                (None, None) => {
                    self.err(&rp, "an exit rule needs `event: KIND` (an event on the contact's timeline) or `if: TEMPLATE`");
                    None
                }
            };
            if let Some(when) = when {
                out.push(ExitRule { when, goal });
            }
        }
    }

    /// A timeline kind: a slug like `purchase` or `form_submitted`.
    fn event_kind(&mut self, m: &Map<String, Value>, key: &str, path: &str) -> Option<String> {
        let k = self.string(m, key, path, true)?.to_string();
        if !is_event_name(&k) {
            self.err(
                &join_key(path, key),
                format!("`{k}` is not a valid event kind: use lowercase letters, digits, `_`, `-` and `.` (for example `form_submitted`)"),
            );
            return None;
        }
        Some(k)
    }

    /// `match: {field: TEMPLATE, ...}`: the fields an event's data must have.
    fn matching(&mut self, v: Option<&Value>, path: &str, scope: &Scope<'_>) -> Vec<(String, Template)> {
        let Some(v) = v.filter(|v| !v.is_null()) else { return vec![] };
        let Some(m) = self.object(v, path, "`match`") else { return vec![] };
        let mut out = vec![];
        for (k, x) in m {
            let p = join_key(path, k);
            if k.is_empty() || k.split('.').any(str::is_empty) {
                self.err_key(&p, format!("`{k}` is not a field name; use `name` or a dotted path like `form.id`"));
                continue;
            }
            let t = match x {
                Value::String(_) | Value::Bool(_) | Value::Number(_) => self.template_in_scope(x, &p, scope),
                other => {
                    self.err(
                        &p,
                        format!("must be a value to compare (text, number or boolean, or a template), found {}", type_name(other)),
                    );
                    None
                }
            };
            if let Some(t) = t {
                out.push((k.clone(), t));
            }
        }
        out
    }

    fn trigger(&mut self, v: &Value, recipe_id: Option<&str>) -> Option<Trigger> {
        let t = self.object(v, "trigger", "`trigger`")?;
        self.known_keys(t, "trigger", TRIGGER_KEYS, "`trigger`");
        let app = self.string(t, "app", "trigger", true)?.to_string();
        let event = self.string(t, "event", "trigger", true)?.to_string();
        let connection = self.string(t, "connection", "trigger", false).map(str::to_string);
        let empty = Value::Object(Map::new());
        let with_v = t.get("with").unwrap_or(&empty);
        let Some(connector) = self.registry.get(&app) else {
            let apps = self.registry.app_ids();
            self.err("trigger.app", unknown("app", &app, &apps));
            return None;
        };
        let Some(spec) = connector.manifest.trigger(&event) else {
            let events: Vec<&str> = connector.manifest.triggers.iter().map(|t| t.id.as_str()).collect();
            self.err("trigger.event", unknown_in("trigger", &event, &format!("in the app `{app}`"), &events));
            return None;
        };
        let with = self.object(with_v, "trigger.with", "`trigger.with`")?;
        let config = match spec.kind {
            TriggerKind::Webhook if connector.inbound_trigger(&event).is_some() => {
                if connection.is_none() && connector.manifest.auth != AuthKind::None {
                    self.err(
                        "trigger",
                        format!(
                            "`{app}.{event}` needs a connection: add `connection: ID` to the trigger; its credentials check the signature of every request {app} sends"
                        ),
                    );
                }
                let schema = spec.config_schema.clone();
                TriggerConfig::Webhook(self.inbound_hook(with_v, &schema, recipe_id)?)
            }
            TriggerKind::Webhook => TriggerConfig::Webhook(self.webhook(with, recipe_id)?),
            TriggerKind::Schedule => TriggerConfig::Cron(self.cron(with)?),
            TriggerKind::Event => {
                self.known_keys(with, "trigger.with", &["name"], "`enlace.event`");
                let name = self.string(with, "name", "trigger.with", true)?.to_string();
                if !is_event_name(&name) {
                    self.err("trigger.with.name", format!("`{name}` is not a valid event name: use lowercase letters, digits, `_`, `-` and `.` (for example `contact.created`)"));
                }
                TriggerConfig::Event { name }
            }
            TriggerKind::Contact => {
                if spec.config_schema.get("properties").is_some() {
                    let schema = spec.config_schema.clone();
                    self.check_against_schema(with_v, &schema, "trigger.with");
                } else {
                    // A trigger without settings: `with` must be empty.
                    self.known_keys(with, "trigger.with", &[], &format!("`{app}.{event}`"));
                }
                let Some(trigger) = enlace_core::contacts::ContactTrigger::from_id(&event) else {
                    self.err("trigger.event", format!("`{app}.{event}` is not a contact trigger this version of Enlace carries out"));
                    return None;
                };
                // The schema check above reported a tag that is not a string.
                let tag = match with.get("tag").and_then(Value::as_str) {
                    Some(t) if trigger == enlace_core::contacts::ContactTrigger::TagAdded => {
                        match enlace_core::contacts::normalize_tag(t) {
                            Ok(t) => Some(t),
                            Err(e) => {
                                self.err("trigger.with.tag", e);
                                None
                            }
                        }
                    }
                    _ => None,
                };
                let kind = match with.get("kind").and_then(Value::as_str) {
                    Some(k) if trigger == enlace_core::contacts::ContactTrigger::Event => match enlace_core::contacts::check_kind(k) {
                        Ok(()) => Some(k.to_string()),
                        Err(e) => {
                            self.err("trigger.with.kind", e);
                            None
                        }
                    },
                    _ => None,
                };
                TriggerConfig::Contact { trigger, tag, kind }
            }
            TriggerKind::Polling => {
                let schema = spec.config_schema.clone();
                self.check_against_schema(with_v, &schema, "trigger.with");
                let (every, hold_above) = self.polling_settings(t);
                TriggerConfig::Polling { with: with_v.clone(), every, hold_above }
            }
            TriggerKind::Subscribe => {
                let schema = spec.config_schema.clone();
                self.check_against_schema(with_v, &schema, "trigger.with");
                let path = crate::model::subscription_path(recipe_id.unwrap_or_default());
                let hook = WebhookConfig {
                    path,
                    secret: None,
                    signature_header: "x-enlace-signature".into(),
                    dedupe_key: None,
                    respond: Respond::Accepted,
                    max_body: DEFAULT_MAX_BODY,
                    rate_limit: None,
                    inbound: false,
                };
                TriggerConfig::Subscribe { with: with_v.clone(), hook }
            }
        };
        if !matches!(spec.kind, TriggerKind::Polling) {
            for k in ["every", "hold_above"] {
                if t.contains_key(k) {
                    self.err_key(
                        &join_key("trigger", k),
                        format!("`{k}` applies to polling triggers only; `{app}.{event}` is not one (remove `{k}`)"),
                    );
                }
            }
        }
        Some(Trigger { app, event, connection, config })
    }

    /// A polling trigger's `every` (default 5m, at least 10s) and `hold_above` (default 100).
    fn polling_settings(&mut self, t: &Map<String, Value>) -> (Duration, u32) {
        let every = match t.get("every") {
            None | Some(Value::Null) => DEFAULT_POLL_EVERY,
            Some(v) => match self.duration(v, "trigger.every") {
                Some(d) if d < MIN_POLL_EVERY => {
                    self.err(
                        "trigger.every",
                        format!(
                            "polls at most every {}: apps limit how often they may be asked (the default is {})",
                            enlace_core::duration::format_duration(MIN_POLL_EVERY),
                            enlace_core::duration::format_duration(DEFAULT_POLL_EVERY)
                        ),
                    );
                    MIN_POLL_EVERY
                }
                Some(d) => d,
                None => DEFAULT_POLL_EVERY,
            },
        };
        let hold_above = match t.get("hold_above") {
            None | Some(Value::Null) => DEFAULT_HOLD_ABOVE,
            Some(Value::Number(n)) if n.as_u64().is_some_and(|n| (1..=100_000).contains(&n)) => n.as_u64().unwrap_or(0) as u32,
            Some(other) => {
                self.err(
                    "trigger.hold_above",
                    format!("must be a whole number of items between 1 and 100000 (a poll that finds more new items than this holds them for approval), found {other}"),
                );
                DEFAULT_HOLD_ABOVE
            }
        };
        (every, hold_above)
    }

    fn trigger_template(&mut self, v: &Value, path: &str, trigger_keys: Option<&'static [&'static str]>) -> Option<Template> {
        let Value::String(s) = v else {
            self.err(path, format!("must be a string (a template), found {}", type_name(v)));
            return None;
        };
        let t = self.compile(s, path)?;
        let scope = Scope { visible: &[], in_foreach: false, trigger_keys };
        self.check_refs(&t, path, &scope);
        Some(t)
    }

    fn webhook(&mut self, w: &Map<String, Value>, recipe_id: Option<&str>) -> Option<WebhookConfig> {
        let base = "trigger.with";
        self.known_keys(w, base, WEBHOOK_KEYS, "`webhook.catch`");
        let path = match self.string(w, "path", base, false) {
            Some(p) => p.to_string(),
            None => recipe_id.unwrap_or_default().to_string(),
        };
        if !path.is_empty() && !is_hook_path(&path) {
            self.err("trigger.with.path", format!("`{path}` is not a valid hook path: use letters, digits, `-`, `_`, `.` and `/` (for example `signups` or `shop/orders`), with no leading `/`"));
        }
        let secret = w.get("secret").and_then(|v| self.trigger_template(v, "trigger.with.secret", None));
        let signature_header = self.string(w, "signature_header", base, false).unwrap_or("X-Enlace-Signature").to_ascii_lowercase();
        if http_header_name_ok(&signature_header).is_err() {
            self.err("trigger.with.signature_header", format!("`{signature_header}` is not a valid header name"));
        }
        let dedupe_key = w.get("dedupe_key").and_then(|v| self.trigger_template(v, "trigger.with.dedupe_key", Some(WEBHOOK_EVENT_KEYS)));
        let respond = match w.get("respond") {
            None | Some(Value::Null) => Respond::Accepted,
            Some(Value::String(s)) if s == "accepted" => Respond::Accepted,
            Some(Value::Object(r)) => {
                let rp = "trigger.with.respond";
                self.known_keys(r, rp, &["after_run", "timeout"], "`respond`");
                let timeout = match r.get("timeout") {
                    Some(v) => self.duration(v, "trigger.with.respond.timeout").unwrap_or(Duration::from_secs(10)),
                    None => Duration::from_secs(10),
                };
                if timeout > Duration::from_secs(120) {
                    self.err(
                        "trigger.with.respond.timeout",
                        "at most `120s`: callers rarely wait longer, and a held connection costs memory",
                    );
                }
                match r.get("after_run") {
                    Some(tv) => {
                        let template = self.mapping(tv, "trigger.with.respond.after_run", false);
                        Respond::AfterRun { template, timeout }
                    }
                    None => {
                        self.err(rp, "`after_run` is required: the template to answer with when the run ends, for example `after_run: \"{{json steps.post.body}}\"`");
                        Respond::Accepted
                    }
                }
            }
            Some(other) => {
                self.err(
                    "trigger.with.respond",
                    format!("must be `accepted` or a map `{{after_run: TEMPLATE, timeout: \"10s\"}}`, found {}", type_name(other)),
                );
                Respond::Accepted
            }
        };
        let max_body = match w.get("max_body") {
            None | Some(Value::Null) => DEFAULT_MAX_BODY,
            Some(Value::Number(n)) if n.as_u64().is_some_and(|n| n > 0 && n as usize <= MAX_MAX_BODY) => n.as_u64().unwrap_or(0) as usize,
            Some(other) => {
                self.err("trigger.with.max_body", format!("must be a number of bytes between 1 and {MAX_MAX_BODY}, found {other}"));
                DEFAULT_MAX_BODY
            }
        };
        let rate_limit = match w.get("rate_limit") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => match parse_rate(s) {
                Ok(r) => Some(r),
                Err(e) => {
                    self.err("trigger.with.rate_limit", e);
                    None
                }
            },
            Some(other) => {
                self.err("trigger.with.rate_limit", format!("must be a string like `100/s` or `600/m`, found {}", type_name(other)));
                None
            }
        };
        Some(WebhookConfig { path, secret, signature_header, dedupe_key, respond, max_body, rate_limit, inbound: false })
    }

    /// A connector's inbound trigger (`twilio.inbound_sms`): served on `/hooks/{path}` like
    /// `webhook.catch`; its `with` is checked against the trigger's schema, and it needs the
    /// connection whose credentials check the vendor's signature.
    fn inbound_hook(&mut self, with_v: &Value, schema: &Value, recipe_id: Option<&str>) -> Option<WebhookConfig> {
        self.check_against_schema(with_v, schema, "trigger.with");
        let path = match with_v.get("path").and_then(Value::as_str) {
            Some(p) => p.to_string(),
            None => recipe_id.unwrap_or_default().to_string(),
        };
        if !path.is_empty() && !is_hook_path(&path) {
            self.err("trigger.with.path", format!("`{path}` is not a valid hook path: use letters, digits, `-`, `_`, `.` and `/` (for example `sms/inbound`), with no leading `/`"));
        }
        Some(WebhookConfig {
            path,
            secret: None,
            signature_header: String::new(),
            dedupe_key: None,
            respond: Respond::Accepted,
            max_body: DEFAULT_MAX_BODY,
            rate_limit: None,
            inbound: true,
        })
    }

    fn cron(&mut self, w: &Map<String, Value>) -> Option<CronConfig> {
        let base = "trigger.with";
        self.known_keys(w, base, &["cron", "timezone"], "`schedule.cron`");
        let expression = self.string(w, "cron", base, true)?.trim().to_string();
        let fields = expression.split_whitespace().count();
        let cron = if expression.starts_with('@') || fields == 5 {
            match expression.parse::<croner::Cron>() {
                Ok(c) => Some(c),
                Err(e) => {
                    self.err("trigger.with.cron", format!("`{expression}` is not a valid cron expression: {e}"));
                    None
                }
            }
        } else {
            self.err("trigger.with.cron", format!("`{expression}` has {fields} fields; write 5: minute hour day-of-month month day-of-week (for example `0 9 * * MON-FRI`)"));
            None
        };
        let timezone = match self.string(w, "timezone", base, false) {
            None => chrono_tz::UTC,
            Some(name) => match name.parse::<chrono_tz::Tz>() {
                Ok(tz) => tz,
                Err(_) => {
                    self.err(
                        "trigger.with.timezone",
                        format!("unknown time zone `{name}`; use an IANA name like `Europe/Paris` or `America/New_York`"),
                    );
                    chrono_tz::UTC
                }
            },
        };
        Some(CronConfig { expression, cron: cron?, timezone })
    }

    fn compile(&mut self, source: &str, path: &str) -> Option<Template> {
        match self.engine.compile(source) {
            Ok(t) => Some(t),
            Err(e) => {
                self.err(path, e.message);
                None
            }
        }
    }

    fn compile_html(&mut self, source: &str, path: &str) -> Option<Template> {
        match self.engine.compile_html(source) {
            Ok(t) => Some(t),
            Err(e) => {
                self.err(path, e.message);
                None
            }
        }
    }

    /// Checks what a template reads against what exists at this point of the recipe.
    fn check_refs(&mut self, t: &Template, path: &str, scope: &Scope<'_>) {
        for r in t.references() {
            let Some(root) = r.first() else { continue };
            match root.as_str() {
                "steps" => match r.get(1) {
                    None => {}
                    Some(id) if scope.visible.iter().any(|v| v == id) => {}
                    Some(id) => {
                        let msg = if self.all_ids.contains(id) {
                            format!("`steps.{id}` is not available here: a template can only read steps that run before it")
                        } else {
                            let visible: Vec<&str> = scope.visible.iter().map(String::as_str).collect();
                            let mut m = unknown("step", id, &visible);
                            if visible.is_empty() {
                                m = format!("unknown step `{id}`: no step runs before this one");
                            }
                            m
                        };
                        self.err(path, msg);
                    }
                },
                "vars" => {
                    if let Some(name) = r.get(1)
                        && !self.vars.contains_key(name)
                    {
                        let names: Vec<&str> = self.vars.keys().map(String::as_str).collect();
                        let m = unknown("var", name, &names);
                        self.err(path, format!("{m}; declare it under `vars:`"));
                    }
                }
                "secrets" => {
                    if let Some(name) = r.get(1) {
                        self.secrets.insert(name.clone());
                    }
                }
                "trigger" => {
                    if let (Some(keys), Some(k)) = (scope.trigger_keys, r.get(1))
                        && !keys.contains(&k.as_str())
                    {
                        self.err(path, unknown_in("field", k, "in the trigger's event", keys));
                    }
                }
                "run" => {
                    if let Some(k) = r.get(1)
                        && !RUN_KEYS.contains(&k.as_str())
                    {
                        self.err(path, unknown_in("field", k, "in `run`", RUN_KEYS));
                    }
                }
                "item" | "index" => {
                    if !scope.in_foreach {
                        self.err(path, format!("`{root}` only exists inside a `foreach` step"));
                    }
                }
                "contact" => {
                    if !self.contact_scoped {
                        self.err(path, format!("`contact` exists only in contact-scoped recipes (journeys); {CONTACT_SCOPE_HINT}"));
                    }
                }
                other => {
                    let mut roots = vec!["trigger", "steps", "vars", "secrets", "run"];
                    if self.contact_scoped {
                        roots.push("contact");
                    }
                    if scope.in_foreach {
                        roots.extend(["item", "index"]);
                    }
                    self.err(path, unknown("name", other, &roots));
                }
            }
        }
    }

    fn template_in_scope(&mut self, v: &Value, path: &str, scope: &Scope<'_>) -> Option<Template> {
        let s = match v {
            Value::String(s) => s.clone(),
            Value::Bool(_) | Value::Number(_) => v.to_string(),
            other => {
                self.err(path, format!("must be a template string, found {}", type_name(other)));
                return None;
            }
        };
        let t = self.compile(&s, path)?;
        self.check_refs(&t, path, scope);
        Some(t)
    }

    /// Compiles a `with`-style value. Scope checks happen in `mapping_in_scope`.
    fn mapping(&mut self, v: &Value, path: &str, html: bool) -> Mapping {
        match v {
            Value::String(s) => {
                let t = if html { self.compile_html(s, path) } else { self.compile(s, path) };
                match t {
                    Some(t) if t.is_literal() => Mapping::Literal(Value::String(s.clone())),
                    Some(t) => Mapping::Template(t),
                    None => Mapping::Literal(Value::Null),
                }
            }
            Value::Array(items) => {
                Mapping::Array(items.iter().enumerate().map(|(i, x)| self.mapping(x, &join_index(path, i), html)).collect())
            }
            Value::Object(m) => Mapping::Object(m.iter().map(|(k, x)| (k.clone(), self.mapping(x, &join_key(path, k), html))).collect()),
            other => Mapping::Literal(other.clone()),
        }
    }

    fn mapping_in_scope(&mut self, v: &Value, path: &str, scope: &Scope<'_>, html_fields: &[String]) -> Mapping {
        let m = match v {
            Value::Object(obj) if !html_fields.is_empty() => Mapping::Object(
                obj.iter()
                    .map(|(k, x)| {
                        let html = html_fields.iter().any(|h| h == k);
                        (k.clone(), self.mapping(x, &join_key(path, k), html))
                    })
                    .collect(),
            ),
            _ => self.mapping(v, path, false),
        };
        self.check_mapping_refs(&m, path, scope);
        m
    }

    fn check_mapping_refs(&mut self, m: &Mapping, path: &str, scope: &Scope<'_>) {
        match m {
            Mapping::Template(t) => self.check_refs(t, path, scope),
            Mapping::Array(items) => {
                for (i, x) in items.iter().enumerate() {
                    self.check_mapping_refs(x, &join_index(path, i), scope);
                }
            }
            Mapping::Object(fields) => {
                for (k, x) in fields {
                    self.check_mapping_refs(x, &join_key(path, k), scope);
                }
            }
            Mapping::Literal(_) => {}
        }
    }

    fn steps(
        &mut self,
        list: &[Value],
        path: &str,
        visible: &mut Vec<String>,
        in_foreach: bool,
        trigger_keys: Option<&'static [&'static str]>,
    ) -> Option<Vec<Step>> {
        let mut out = Vec::with_capacity(list.len());
        let mut ok = true;
        for (i, sv) in list.iter().enumerate() {
            let sp = join_index(path, i);
            let step = self.step(sv, &sp, visible, in_foreach, trigger_keys);
            // A step that did not validate is still visible to the next ones: one mistake
            // gives one diagnostic, not one per step that reads it.
            let mut ids = HashSet::new();
            collect_raw_ids(&Value::Array(vec![sv.clone()]), &mut ids);
            visible.extend(ids);
            match step {
                Some(step) => out.push(step),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn step(
        &mut self,
        v: &Value,
        path: &str,
        visible: &mut Vec<String>,
        in_foreach: bool,
        trigger_keys: Option<&'static [&'static str]>,
    ) -> Option<Step> {
        let m = self.object(v, path, "a step")?;
        let id = self.string(m, "id", path, true).map(str::to_string);
        if let Some(id) = &id {
            if !is_step_id(id) {
                self.err(&join_key(path, "id"), format!("`{id}` is not a valid step id: use lowercase letters, digits, `_` and `-`, starting with a letter (for example `send_welcome`)"));
            } else if !self.step_ids.insert(id.clone()) {
                self.err(&join_key(path, "id"), format!("the step id `{id}` is used twice; step ids are unique in a recipe"));
            }
        }
        let name = self.string(m, "name", path, false).map(str::to_string);
        let kinds: Vec<&str> =
            STEP_KINDS.iter().copied().filter(|k| m.contains_key(*k) || (*k == "action" && m.contains_key("app"))).collect();
        let kinds: Vec<&str> = kinds.into_iter().filter(|k| *k != "action" || m.contains_key("app") || m.contains_key("action")).collect();
        let scope = Scope { visible, in_foreach, trigger_keys };
        let kind = match kinds.as_slice() {
            [] => {
                self.err(path, format!("the step does not say what it does: give it one of `app` + `action`, `filter`, `branch`, `foreach`, `delay`, `delay_until`, `emit`, `wait_for` or `split`; its keys are: {}", m.keys().cloned().collect::<Vec<_>>().join(", ")));
                None
            }
            ["action"] => self.action_step(m, path, &scope),
            ["filter"] => {
                self.known_keys(m, path, &["id", "name", "filter"], "a filter step");
                self.template_in_scope(&m["filter"], &join_key(path, "filter"), &scope).map(StepKind::Filter)
            }
            ["delay"] => {
                self.known_keys(m, path, &["id", "name", "delay"], "a delay step");
                self.duration(&m["delay"], &join_key(path, "delay")).map(|d| StepKind::Delay(Delay::For(d)))
            }
            ["delay_until"] => {
                self.known_keys(m, path, &["id", "name", "delay_until", "timezone"], "a delay step");
                let at = self.template_in_scope(&m["delay_until"], &join_key(path, "delay_until"), &scope);
                let timezone = match m.get("timezone") {
                    Some(Value::String(s)) if !s.contains("{{") => {
                        if s.parse::<chrono_tz::Tz>().is_err() {
                            self.err(&join_key(path, "timezone"), format!("unknown time zone `{s}`; use an IANA name like `Europe/Paris`"));
                        }
                        self.template_in_scope(&m["timezone"], &join_key(path, "timezone"), &scope)
                    }
                    Some(tz) => self.template_in_scope(tz, &join_key(path, "timezone"), &scope),
                    None => None,
                };
                at.map(|at| StepKind::Delay(Delay::Until { at, timezone }))
            }
            ["emit"] => {
                self.known_keys(m, path, &["id", "name", "emit", "data"], "an emit step");
                let name = self.string(m, "emit", path, true).map(str::to_string);
                if let Some(n) = &name
                    && !is_event_name(n)
                {
                    self.err(&join_key(path, "emit"), format!("`{n}` is not a valid event name: use lowercase letters, digits, `_`, `-` and `.` (for example `lead.qualified`)"));
                }
                let data = match m.get("data") {
                    Some(d) => self.mapping_in_scope(d, &join_key(path, "data"), &scope, &[]),
                    None => Mapping::Literal(Value::Object(Map::new())),
                };
                name.map(|name| StepKind::Emit { name, data })
            }
            ["foreach"] => {
                self.known_keys(m, path, &["id", "name", "foreach", "steps"], "a foreach step");
                let items = self.template_in_scope(&m["foreach"], &join_key(path, "foreach"), &scope);
                let inner = match m.get("steps") {
                    Some(Value::Array(list)) if !list.is_empty() => {
                        let mut vis = visible.clone();
                        self.steps(list, &join_key(path, "steps"), &mut vis, true, trigger_keys)
                    }
                    _ => {
                        self.err(path, "a foreach step needs `steps`: a non-empty list of the steps to run for each item");
                        None
                    }
                };
                match (items, inner) {
                    (Some(items), Some(steps)) => Some(StepKind::Foreach { items, steps }),
                    _ => None,
                }
            }
            ["branch"] => {
                self.known_keys(m, path, &["id", "name", "branch"], "a branch step");
                self.branch(&m["branch"], &join_key(path, "branch"), visible, in_foreach, trigger_keys)
            }
            ["wait_for"] => {
                self.known_keys(m, path, &["id", "name", "wait_for"], "a wait_for step");
                self.wait_for(&m["wait_for"], &join_key(path, "wait_for"), &scope)
            }
            ["split"] => {
                self.known_keys(m, path, &["id", "name", "split", "paths"], "a split step");
                self.split(m, path, visible, in_foreach, trigger_keys)
            }
            several => {
                self.err(
                    path,
                    format!(
                        "a step does one thing, but this one has {}; split it into several steps",
                        several.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(" and ")
                    ),
                );
                None
            }
        };
        Some(Step { id: id?, name, kind: kind? })
    }

    fn wait_for(&mut self, v: &Value, path: &str, scope: &Scope<'_>) -> Option<StepKind> {
        if !self.contact_scoped {
            self.err(
                path,
                format!("`wait_for` waits for an event of the run's contact, so it needs a contact-scoped recipe; {CONTACT_SCOPE_HINT}"),
            );
            return None;
        }
        let w = self.object(v, path, "`wait_for`")?;
        self.known_keys(w, path, &["event", "match", "timeout"], "`wait_for`");
        let event = self.event_kind(w, "event", path);
        let matching = self.matching(w.get("match"), &join_key(path, "match"), scope);
        let timeout = match w.get("timeout") {
            Some(t) => self.duration(t, &join_key(path, "timeout")),
            None => {
                self.err(path, "`wait_for` needs a `timeout` (like `3d`): how long to wait before going on without the event (the output's `received` is then false)");
                None
            }
        };
        Some(StepKind::WaitFor(WaitFor { event: event?, matching, timeout: timeout? }))
    }

    fn split(
        &mut self,
        m: &Map<String, Value>,
        path: &str,
        visible: &[String],
        in_foreach: bool,
        trigger_keys: Option<&'static [&'static str]>,
    ) -> Option<StepKind> {
        let sp = join_key(path, "split");
        let weights_v = self.object(&m["split"], &sp, "`split`")?;
        let mut weights = vec![];
        let mut ok = true;
        for (name, w) in weights_v {
            let p = join_key(&sp, name);
            if !is_step_id(name) {
                self.err_key(&p, format!("`{name}` is not a valid path name: use lowercase letters, digits, `_` and `-`, starting with a letter (for example `a`, `control`)"));
                ok = false;
            }
            match w.as_u64() {
                Some(n) if n <= 1_000_000 => weights.push((name.clone(), n as u32)),
                _ => {
                    self.err(&p, format!("a path's weight is a whole number from 0 (for example `50`), found {}", type_name(w)));
                    ok = false;
                }
            }
        }
        if weights.is_empty() && ok {
            self.err(&sp, "a split needs at least one path with its weight, like `{a: 50, b: 50}`");
            return None;
        }
        if ok && weights.iter().all(|(_, w)| *w == 0) {
            self.err(&sp, "every weight is 0: give at least one path a weight above 0");
            ok = false;
        }
        let pp = join_key(path, "paths");
        let paths_v = match m.get("paths") {
            Some(v) => self.object(v, &pp, "`paths`"),
            None => {
                self.err(path, "a split needs `paths`: the steps of each path by name (`paths: {a: [...], b: [...]}`; `[]` does nothing)");
                None
            }
        };
        let mut paths = vec![];
        if let Some(pv) = paths_v {
            for k in pv.keys() {
                if !weights.iter().any(|(n, _)| n == k) {
                    let names: Vec<&str> = weights.iter().map(|(n, _)| n.as_str()).collect();
                    self.err_key(&join_key(&pp, k), unknown_in("path", k, "in `split`", &names));
                    ok = false;
                }
            }
            for (name, _) in &weights {
                let p = join_key(&pp, name);
                match pv.get(name) {
                    Some(Value::Array(list)) if list.is_empty() => paths.push((name.clone(), vec![])),
                    Some(Value::Array(list)) => {
                        let mut vis = visible.to_vec();
                        match self.steps(list, &p, &mut vis, in_foreach, trigger_keys) {
                            Some(steps) => paths.push((name.clone(), steps)),
                            None => ok = false,
                        }
                    }
                    Some(other) => {
                        self.err(&p, format!("a path is a list of steps (`[]` for none), found {}", type_name(other)));
                        ok = false;
                    }
                    None => {
                        self.err(
                            &pp,
                            format!(
                                "the path `{name}` has a weight but no steps; add `{name}: [...]` (or `{name}: []` for a control group)"
                            ),
                        );
                        ok = false;
                    }
                }
            }
        } else {
            ok = false;
        }
        ok.then_some(StepKind::Split { weights, paths })
    }

    fn branch(
        &mut self,
        v: &Value,
        path: &str,
        visible: &[String],
        in_foreach: bool,
        trigger_keys: Option<&'static [&'static str]>,
    ) -> Option<StepKind> {
        let Value::Array(arms_v) = v else {
            self.err(
                path,
                format!(
                    "must be a list of paths: `- if: TEMPLATE` with `steps`, and optionally a last `- else: [...]`; found {}",
                    type_name(v)
                ),
            );
            return None;
        };
        if arms_v.is_empty() {
            self.err(path, "a branch needs at least one path");
            return None;
        }
        let mut arms = vec![];
        let mut otherwise = None;
        let mut ok = true;
        for (i, av) in arms_v.iter().enumerate() {
            let ap = join_index(path, i);
            let Some(a) = self.object(av, &ap, "a branch path") else {
                ok = false;
                continue;
            };
            let scope = Scope { visible, in_foreach, trigger_keys };
            if let Some(else_v) = a.get("else") {
                self.known_keys(a, &ap, &["else"], "an `else` path");
                if i != arms_v.len() - 1 {
                    self.err(&ap, "`else` must be the last path of a branch");
                    ok = false;
                }
                match else_v {
                    Value::Array(list) if !list.is_empty() => {
                        let mut vis = visible.to_vec();
                        otherwise = self.steps(list, &join_key(&ap, "else"), &mut vis, in_foreach, trigger_keys);
                        ok &= otherwise.is_some();
                    }
                    _ => {
                        self.err(&join_key(&ap, "else"), "`else` takes a non-empty list of steps");
                        ok = false;
                    }
                }
                continue;
            }
            self.known_keys(a, &ap, &["if", "steps"], "a branch path");
            let cond = match a.get("if") {
                Some(c) => self.template_in_scope(c, &join_key(&ap, "if"), &scope),
                None => {
                    self.err(&ap, "a branch path needs `if: TEMPLATE` (or is the last one, `else: [...]`)");
                    None
                }
            };
            let steps = match a.get("steps") {
                Some(Value::Array(list)) if !list.is_empty() => {
                    let mut vis = visible.to_vec();
                    self.steps(list, &join_key(&ap, "steps"), &mut vis, in_foreach, trigger_keys)
                }
                _ => {
                    self.err(&ap, "a branch path needs `steps`: a non-empty list");
                    None
                }
            };
            match (cond, steps) {
                (Some(condition), Some(steps)) => arms.push(BranchArm { condition, steps }),
                _ => ok = false,
            }
        }
        if arms.is_empty() && ok {
            self.err(path, "a branch needs at least one `if` path");
            return None;
        }
        ok.then_some(StepKind::Branch { arms, otherwise })
    }

    fn action_step(&mut self, m: &Map<String, Value>, path: &str, scope: &Scope<'_>) -> Option<StepKind> {
        self.known_keys(
            m,
            path,
            &["id", "name", "app", "action", "connection", "with", "retry", "on_error", "purpose", "transactional"],
            "an action step",
        );
        let app = self.string(m, "app", path, true)?.to_string();
        let action = self.string(m, "action", path, true)?.to_string();
        let connection = self.string(m, "connection", path, false).map(str::to_string);
        let Some(connector) = self.registry.get(&app) else {
            let apps: Vec<&str> = self.registry.apps().filter(|c| !c.manifest.actions.is_empty()).map(|c| c.id()).collect();
            self.err(&join_key(path, "app"), unknown("app", &app, &apps));
            return None;
        };
        let Some(spec) = connector.manifest.action(&action) else {
            let actions: Vec<&str> = connector.manifest.actions.iter().map(|a| a.id.as_str()).collect();
            self.err(&join_key(path, "action"), unknown_in("action", &action, &format!("in the app `{app}`"), &actions));
            return None;
        };
        if connection.is_none() && connector.manifest.auth != AuthKind::None {
            self.err(
                path,
                format!(
                    "the app `{app}` needs a connection (its credentials): add `connection: ID` to the step, and create the connection with `enlace connections create ID --app {app} ...` or POST /api/v1/connections"
                ),
            );
        }
        let schema = spec.input_schema.clone();
        let wp = join_key(path, "with");
        let empty = Value::Object(Map::new());
        let with_v = m.get("with").unwrap_or(&empty);
        if !with_v.is_object() {
            self.err(&wp, format!("`with` must be a map of the action's fields, found {}", type_name(with_v)));
            return None;
        }
        self.check_against_schema(with_v, &schema, &wp);
        let html_fields = html_fields(&schema);
        let with = self.mapping_in_scope(with_v, &wp, scope, &html_fields);
        let retry = match m.get("retry") {
            None | Some(Value::Null) => RetryPolicy::default(),
            Some(r) => self.retry(r, &join_key(path, "retry")),
        };
        let on_error = match m.get("on_error") {
            None | Some(Value::Null) => OnError::Fail,
            Some(Value::String(s)) if s == "fail" => OnError::Fail,
            Some(Value::String(s)) if s == "continue" => OnError::Continue,
            Some(other) => {
                self.err(&join_key(path, "on_error"), format!("must be `fail` (the default: the run stops as failed, kept for replay) or `continue` (the error becomes the step's output), found {other}"));
                OnError::Fail
            }
        };
        let send = self.send_options(m, path, &app, &action, spec.reaches.is_some());
        Some(StepKind::Action(ActionStep { app, action, connection, with, retry, on_error, send }))
    }

    /// `purpose` and `transactional`: only on actions that reach a person (the send policy
    /// reads them).
    fn send_options(&mut self, m: &Map<String, Value>, path: &str, app: &str, action: &str, reaches: bool) -> SendOptions {
        let mut o = SendOptions::default();
        for key in ["purpose", "transactional"] {
            if m.get(key).is_some_and(|v| !v.is_null()) && !reaches {
                self.err(
                    &join_key(path, key),
                    format!("`{key}` is for steps that send a message to a person (`smtp.send_email`, `sendgrid.send_email`, `twilio.send_sms`, ...); `{app}.{action}` sends none"),
                );
                return o;
            }
        }
        if let Some(p) = self.string(m, "purpose", path, false) {
            match enlace_core::contacts::check_purpose(p) {
                Ok(()) => o.purpose = p.to_string(),
                Err(e) => self.err(&join_key(path, "purpose"), e),
            }
        }
        match m.get("transactional") {
            None | Some(Value::Null) => {}
            Some(Value::Bool(b)) => o.transactional = *b,
            Some(other) => self.err(
                &join_key(path, "transactional"),
                format!("must be true (a receipt, a password reset: exempt from the frequency cap and quiet hours, never from a withdrawal of consent) or false, found {}", type_name(other)),
            ),
        }
        o
    }

    /// `limits: {sends_per_hour, sends_per_day}`: above them, sends wait for approval.
    fn limits(&mut self, v: &Value) -> SendLimits {
        let mut l = SendLimits::default();
        let Some(m) = self.object(v, "limits", "`limits`") else { return l };
        self.known_keys(m, "limits", &["sends_per_hour", "sends_per_day"], "`limits`");
        for (key, slot) in [("sends_per_hour", &mut l.sends_per_hour), ("sends_per_day", &mut l.sends_per_day)] {
            match m.get(key) {
                None | Some(Value::Null) => {}
                Some(Value::Number(n)) if n.as_u64().is_some_and(|n| (1..=u32::MAX as u64).contains(&n)) => {
                    *slot = n.as_u64().map(|n| n as u32)
                }
                Some(other) => self.err(
                    &join_key("limits", key),
                    format!("must be a whole number of messages, 1 or more (sends above it wait for approval), found {other}"),
                ),
            }
        }
        l
    }

    fn retry(&mut self, v: &Value, path: &str) -> RetryPolicy {
        let mut p = RetryPolicy::default();
        let Some(m) = self.object(v, path, "`retry`") else { return p };
        self.known_keys(m, path, &["attempts", "backoff", "initial", "max"], "`retry`");
        if let Some(a) = m.get("attempts") {
            match a.as_u64() {
                Some(n) if (1..=100).contains(&n) => p.attempts = n as u32,
                _ => self.err(&join_key(path, "attempts"), format!("must be a whole number from 1 (no retry) to 100, found {a}")),
            }
        }
        if let Some(b) = m.get("backoff") {
            match b.as_str() {
                Some("exponential") => p.backoff = Backoff::Exponential,
                Some("fixed") => p.backoff = Backoff::Fixed,
                _ => self.err(&join_key(path, "backoff"), format!("must be `exponential` or `fixed`, found {b}")),
            }
        }
        if let Some(d) = m.get("initial").and_then(|v| self.duration(v, &join_key(path, "initial"))) {
            p.initial = d;
        }
        if let Some(d) = m.get("max").and_then(|v| self.duration(v, &join_key(path, "max"))) {
            p.max = d;
        }
        if p.max < p.initial {
            self.err(path, "`max` is shorter than `initial`");
        }
        p
    }

    /// Checks a `with` map against the JSON schema an action or trigger declares: unknown
    /// fields (with the valid ones listed), required fields, and the type and allowed values
    /// of fields written as literals. Templates are checked when they run.
    fn check_against_schema(&mut self, v: &Value, schema: &Value, path: &str) {
        let props = schema.get("properties").and_then(Value::as_object);
        let Value::Object(obj) = v else { return };
        if let Some(props) = props {
            let names: Vec<&str> = props.keys().map(String::as_str).collect();
            let closed = schema.get("additionalProperties") == Some(&Value::Bool(false));
            for (k, fv) in obj {
                match props.get(k) {
                    Some(ps) => self.check_literal(fv, ps, schema, &join_key(path, k)),
                    None if closed => {
                        let p = join_key(path, k);
                        self.err_key(&p, unknown("field", k, &names));
                    }
                    None => {}
                }
            }
        }
        if let Some(req) = schema.get("required").and_then(Value::as_array) {
            for r in req.iter().filter_map(Value::as_str) {
                if !obj.contains_key(r) {
                    let help = props
                        .and_then(|p| p.get(r))
                        .and_then(|p| p.get("description"))
                        .and_then(Value::as_str)
                        .map(first_sentence)
                        .unwrap_or_default();
                    let help = if help.is_empty() { String::new() } else { format!(": {help}") };
                    self.err(path, format!("the field `{r}` is required{help}"));
                }
            }
        }
    }

    fn check_literal(&mut self, v: &Value, prop: &Value, root: &Value, path: &str) {
        if v.as_str().is_some_and(|s| s.contains("{{")) {
            return;
        }
        let prop = resolve_ref(prop, root);
        let allowed: Vec<Value> = enum_values(prop, root).into_iter().filter(|v| !v.is_null()).collect();
        if !allowed.is_empty() && !allowed.contains(v) {
            let list: Vec<String> = allowed.iter().map(|a| a.as_str().map(str::to_string).unwrap_or_else(|| a.to_string())).collect();
            let shown = v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string());
            let near = closest(&shown, list.iter().map(String::as_str));
            let mut m = format!("`{shown}` is not allowed here");
            if let Some(n) = near.first() {
                m.push_str(&format!("; did you mean `{n}`?"));
            }
            m.push_str(&format!(" Valid choices: {}", list.join(", ")));
            self.err(path, m);
            return;
        }
        let types = schema_types(prop);
        if types.is_empty() || v.is_null() {
            return;
        }
        let ok = types.iter().any(|t| match (t.as_str(), v) {
            ("string", Value::String(_)) => true,
            ("integer", Value::Number(n)) => n.is_i64() || n.is_u64(),
            ("number", Value::Number(_)) => true,
            ("boolean", Value::Bool(_)) => true,
            ("array", Value::Array(_)) => true,
            ("object", Value::Object(_)) => true,
            ("null", Value::Null) => true,
            _ => false,
        });
        if !ok {
            self.err(path, format!("must be {}, found {}", types.join(" or "), type_name(v)));
        }
    }
}

fn resolve_ref<'v>(prop: &'v Value, root: &'v Value) -> &'v Value {
    if let Some(r) = prop.get("$ref").and_then(Value::as_str)
        && let Some(name) = r.strip_prefix("#/$defs/")
        && let Some(d) = root.get("$defs").and_then(|d| d.get(name))
    {
        return d;
    }
    prop
}

fn enum_values(prop: &Value, root: &Value) -> Vec<Value> {
    if let Some(e) = prop.get("enum").and_then(Value::as_array) {
        return e.clone();
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(list) = prop.get(key).and_then(Value::as_array) {
            let mut out = vec![];
            for alt in list {
                let alt = resolve_ref(alt, root);
                if let Some(c) = alt.get("const") {
                    out.push(c.clone());
                } else if let Some(e) = alt.get("enum").and_then(Value::as_array) {
                    out.extend(e.iter().cloned());
                } else if alt.get("type") == Some(&Value::String("null".into())) {
                    continue;
                } else {
                    return vec![];
                }
            }
            return out;
        }
    }
    vec![]
}

fn schema_types(prop: &Value) -> Vec<String> {
    match prop.get("type") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(str::to_string).collect(),
        _ => vec![],
    }
}

/// Fields whose values go into HTML (`format: html` or `contentMediaType: text/html`):
/// their templates escape what they insert.
fn html_fields(schema: &Value) -> Vec<String> {
    schema
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| {
            p.iter()
                .filter(|(_, s)| {
                    s.get("format").and_then(Value::as_str) == Some("html")
                        || s.get("contentMediaType").and_then(Value::as_str) == Some("text/html")
                })
                .map(|(k, _)| k.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// Step ids in a raw list of steps, nested ones included.
fn collect_raw_ids(v: &Value, out: &mut HashSet<String>) {
    let Value::Array(list) = v else { return };
    for s in list {
        let Value::Object(m) = s else { continue };
        if let Some(Value::String(id)) = m.get("id") {
            out.insert(id.clone());
        }
        if let Some(inner) = m.get("steps") {
            collect_raw_ids(inner, out);
        }
        if let Some(Value::Object(paths)) = m.get("paths") {
            for inner in paths.values() {
                collect_raw_ids(inner, out);
            }
        }
        if let Some(Value::Array(arms)) = m.get("branch") {
            for a in arms {
                for key in ["steps", "else"] {
                    if let Some(inner) = a.get(key) {
                        collect_raw_ids(inner, out);
                    }
                }
            }
        }
    }
}

fn is_event_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 100 && s.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'-' | b'.'))
}

fn is_hook_path(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 200
        && !s.starts_with('/')
        && !s.ends_with('/')
        && !s.contains("//")
        && s.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.' | b'/'))
}

fn http_header_name_ok(s: &str) -> Result<(), ()> {
    if !s.is_empty() && s.bytes().all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)) { Ok(()) } else { Err(()) }
}

/// Parses `100/s`, `600/m`, `10/1s`, `5000/h`.
pub fn parse_rate(s: &str) -> Result<(u32, Duration), String> {
    let bad = || format!("`{s}` is not a rate: write calls per period, like `100/s`, `600/m` or `5000/h`");
    let (n, per) = s.split_once('/').ok_or_else(bad)?;
    let n: u32 = n.trim().parse().map_err(|_| bad())?;
    if n == 0 {
        return Err(format!("`{s}`: the number of calls must be at least 1"));
    }
    let per = per.trim();
    let per = if per.chars().next().is_some_and(|c| c.is_ascii_digit()) { per.to_string() } else { format!("1{per}") };
    let d = parse_duration(&per).map_err(|_| bad())?;
    if d.is_zero() {
        return Err(bad());
    }
    Ok((n, d))
}
