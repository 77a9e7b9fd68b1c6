//! Reading a manifest into a [`Declared`], collecting every problem with its path and line.

use std::collections::BTreeMap;
use std::sync::Arc;

use enlace_core::http::Method;
use enlace_core::{ActionSpec, AuthKind, ClientAuth, Connector, ErrorClass, Idempotency, OAuth2App, RateLimit, TriggerKind, TriggerSpec};
use enlace_kit::schema::{check_schema, validate};
use enlace_kit::{JsonPath, Strategy};
use enlace_recipe::model::Mapping;
use enlace_recipe::source::{self, SourceMap, join_index, join_key};
use enlace_recipe::template::{Engine, Template};
use enlace_recipe::validate::{closest, parse_rate};
use enlace_recipe::{Diagnostic, Diagnostics};
use serde_json::{Map, Value, json};

use crate::runtime::{Body, DeclAction, DeclTrigger, ErrorRule, Order, Request, Runtime, Trigger};

/// A checked declarative connector.
#[derive(Clone)]
pub struct Declared {
    id: String,
    name: String,
    description: String,
    version: String,
    base_url: String,
    auth: AuthKind,
    auth_query: Option<String>,
    oauth2: Option<OAuth2App>,
    rate_limit: Option<RateLimit>,
    errors: Vec<ErrorRule>,
    actions: Vec<(ActionSpec, Request, Option<JsonPath>, Vec<ErrorRule>)>,
    triggers: Vec<(TriggerSpec, Request, Trigger)>,
}

impl std::fmt::Debug for Declared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Declared").field("id", &self.id).finish_non_exhaustive()
    }
}

impl Declared {
    /// The app id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The connector, talking to the manifest's `base_url`.
    pub fn connector(&self) -> Connector {
        self.connector_at(&self.base_url)
    }

    /// The connector with another base URL, for tests only (a fake vendor, Prism).
    pub fn connector_at(&self, base_url: &str) -> Connector {
        let mut b = Connector::builder(&self.id, &self.name, &self.description).auth(self.auth).version(&self.version);
        if let Some(o) = &self.oauth2 {
            b = b.oauth2(o.clone());
        }
        if let Some(r) = self.rate_limit {
            b = b.rate_limit(r);
        }
        for (spec, request, output, own) in &self.actions {
            let mut errors = own.clone();
            errors.extend(self.errors.iter().cloned());
            let rt = Arc::new(Runtime { base: base_url.trim_end_matches('/').to_string(), auth_query: self.auth_query.clone(), errors });
            b = b.dyn_action(Arc::new(DeclAction { spec: spec.clone(), request: request.clone(), output: output.clone(), rt }));
        }
        for (spec, request, trigger) in &self.triggers {
            let rt = Arc::new(Runtime {
                base: base_url.trim_end_matches('/').to_string(),
                auth_query: self.auth_query.clone(),
                errors: self.errors.clone(),
            });
            b = b.dyn_polling_trigger(Arc::new(DeclTrigger { spec: spec.clone(), request: request.clone(), trigger: trigger.clone(), rt }));
        }
        b.build()
    }
}

const TOP: [&str; 11] = ["id", "name", "description", "version", "base_url", "auth", "rate_limit", "errors", "actions", "triggers", "docs"];
const ACTION: [&str; 8] = ["id", "name", "description", "idempotency", "input", "request", "output", "errors"];
const TRIGGER: [&str; 11] =
    ["id", "name", "description", "config", "request", "items", "dedupe_key", "order", "cursor", "pagination", "output"];
const REQUEST: [&str; 7] = ["method", "path", "query", "headers", "json", "form", "idempotency_header"];
const FIELD_KEYWORDS: [&str; 14] = [
    "type",
    "description",
    "required",
    "enum",
    "default",
    "items",
    "properties",
    "format",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "minItems",
    "maxItems",
];
const CLASSES: [&str; 6] = ["rate_limited", "transient", "auth", "permanent", "bad_input", "maybe_delivered"];

struct Checker {
    map: SourceMap,
    diags: Vec<Diagnostic>,
}

impl Checker {
    fn err(&mut self, path: &str, message: impl Into<String>) {
        let pos = self.map.find(path);
        self.diags.push(Diagnostic {
            path: path.into(),
            message: message.into(),
            line: pos.map(|p| p.line),
            column: pos.map(|p| p.column),
        });
    }

    fn err_key(&mut self, path: &str, message: impl Into<String>) {
        let pos = self.map.key(path);
        self.diags.push(Diagnostic {
            path: path.into(),
            message: message.into(),
            line: pos.map(|p| p.line),
            column: pos.map(|p| p.column),
        });
    }

    fn keys(&mut self, obj: &Map<String, Value>, path: &str, allowed: &[&str]) {
        for k in obj.keys() {
            if !allowed.contains(&k.as_str()) {
                let near = closest(k, allowed.iter().copied());
                let hint = near.first().map(|n| format!("; did you mean `{n}`?")).unwrap_or_default();
                self.err_key(&join_key(path, k), format!("unknown key `{k}`{hint} Valid keys: {}", allowed.join(", ")));
            }
        }
    }

    fn string(&mut self, obj: &Map<String, Value>, path: &str, key: &str, required: bool) -> Option<String> {
        match obj.get(key) {
            Some(Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
            Some(Value::String(_)) => {
                self.err(&join_key(path, key), format!("`{key}` is empty"));
                None
            }
            Some(other) => {
                self.err(&join_key(path, key), format!("`{key}` must be text, found {}", kind(other)));
                None
            }
            None if required => {
                self.err(path, format!("the key `{key}` is required"));
                None
            }
            None => None,
        }
    }

    fn object<'v>(&mut self, v: &'v Value, path: &str, what: &str) -> Option<&'v Map<String, Value>> {
        match v {
            Value::Object(o) => Some(o),
            other => {
                self.err(path, format!("{what} must be a map, found {}", kind(other)));
                None
            }
        }
    }

    fn template(&mut self, s: &str, path: &str, scope: &Scope) -> Option<Template> {
        match Engine::global().compile(s) {
            Err(e) => {
                self.err(path, format!("the template does not compile: {}", e.message));
                None
            }
            Ok(t) => {
                for r in t.references().to_vec() {
                    self.reference(&r, path, scope);
                }
                Some(t)
            }
        }
    }

    fn reference(&mut self, r: &[String], path: &str, scope: &Scope) {
        let roots = if scope.trigger { vec!["input", "cursor", "idempotency_key"] } else { vec!["input", "idempotency_key"] };
        let Some(first) = r.first() else { return };
        if !roots.contains(&first.as_str()) {
            self.err(path, format!("`{}` is not known here; a request template reads {}", r.join("."), roots.join(", ")));
            return;
        }
        if first == "input"
            && let Some(field) = r.get(1)
            && !scope.fields.iter().any(|f| f == field)
        {
            let near = closest(field, scope.fields.iter().map(String::as_str));
            let hint = near.first().map(|n| format!("; did you mean `input.{n}`?")).unwrap_or_default();
            self.err(path, format!("`input.{field}` is not a declared field{hint} Declared: {}", scope.fields.join(", ")));
        }
    }

    fn mapping(&mut self, v: &Value, path: &str, scope: &Scope) -> Mapping {
        match v {
            Value::String(s) if s.contains("{{") => match self.template(s, path, scope) {
                Some(t) => Mapping::Template(t),
                None => Mapping::Literal(Value::Null),
            },
            Value::Object(o) => Mapping::Object(o.iter().map(|(k, v)| (k.clone(), self.mapping(v, &join_key(path, k), scope))).collect()),
            Value::Array(a) => Mapping::Array(a.iter().enumerate().map(|(i, v)| self.mapping(v, &join_index(path, i), scope)).collect()),
            other => Mapping::Literal(other.clone()),
        }
    }

    fn path(&mut self, obj: &Map<String, Value>, path: &str, key: &str, required: bool) -> Option<JsonPath> {
        let s = self.string(obj, path, key, required)?;
        match JsonPath::parse(&json_path(&s)) {
            Ok(p) => Some(p),
            Err(e) => {
                self.err(
                    &join_key(path, key),
                    format!("`{s}` is not a path: {}; write `items`, `data.items` or `$.data.items[0]`", e.message()),
                );
                None
            }
        }
    }
}

struct Scope {
    fields: Vec<String>,
    trigger: bool,
}

/// `data.items` -> `$.data.items`; JSON pointers and JSONPath stay as they are.
pub(crate) fn json_path(s: &str) -> String {
    if s.starts_with('$') || s.starts_with('/') { s.to_string() } else { format!("$.{s}") }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "true/false",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

fn valid_id(id: &str) -> bool {
    let mut chars = id.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase()) && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

pub(crate) fn parse(text: &str, file: Option<&str>) -> Result<Declared, Diagnostics> {
    let file_s = file.map(str::to_string);
    let (value, map) = source::parse(text).map_err(|e| Diagnostics {
        file: file_s.clone(),
        diagnostics: vec![Diagnostic {
            path: String::new(),
            message: e.message,
            line: e.position.map(|p| p.line),
            column: e.position.map(|p| p.column),
        }],
    })?;
    let mut c = Checker { map, diags: vec![] };
    let out = declared(&mut c, &value);
    match out {
        Some(d) if c.diags.is_empty() => Ok(d),
        _ => Err(Diagnostics { file: file_s, diagnostics: c.diags }),
    }
}

fn declared(c: &mut Checker, v: &Value) -> Option<Declared> {
    let top = c.object(v, "", "a connector manifest")?;
    c.keys(top, "", &TOP);
    let id = c.string(top, "", "id", true);
    if let Some(id) = &id
        && !valid_id(id)
    {
        c.err("id", format!("`{id}` cannot be an app id: use lowercase letters, digits and `_`, starting with a letter"));
    }
    let name = c.string(top, "", "name", true);
    let description = c.string(top, "", "description", true);
    let version = match top.get("version") {
        None => "1".to_string(),
        Some(Value::Number(n)) => n.to_string(),
        Some(_) => c.string(top, "", "version", false).unwrap_or_default(),
    };
    let base_url = c.string(top, "", "base_url", true);
    if let Some(b) = &base_url
        && !(b.starts_with("https://") || b.starts_with("http://"))
    {
        c.err("base_url", format!("`{b}` is not an http(s) address"));
    }
    let (auth, auth_query, oauth2) = auth(c, top.get("auth"));
    let rate_limit = match top.get("rate_limit") {
        None => None,
        Some(Value::String(s)) => match parse_rate(s) {
            Ok((calls, per)) => Some(RateLimit { calls, per }),
            Err(e) => {
                c.err("rate_limit", e);
                None
            }
        },
        Some(other) => {
            c.err("rate_limit", format!("write the vendor's limit as calls per period, like `100/15m`; found {}", kind(other)));
            None
        }
    };
    let errors = top.get("errors").map(|e| error_rules(c, e, "errors")).unwrap_or_default();
    let mut ids = BTreeMap::new();
    let mut actions = vec![];
    if let Some(list) = top.get("actions") {
        match list.as_array() {
            Some(list) => {
                for (i, a) in list.iter().enumerate() {
                    let path = join_index("actions", i);
                    if let Some(a) = action(c, a, &path) {
                        if ids.insert(a.0.id.clone(), path.clone()).is_some() {
                            c.err(&join_key(&path, "id"), format!("the id `{}` is used twice", a.0.id));
                        }
                        actions.push(a);
                    }
                }
            }
            None => c.err("actions", "`actions` must be a list"),
        }
    }
    let mut triggers = vec![];
    if let Some(list) = top.get("triggers") {
        match list.as_array() {
            Some(list) => {
                for (i, t) in list.iter().enumerate() {
                    let path = join_index("triggers", i);
                    if let Some(t) = trigger(c, t, &path) {
                        if ids.insert(t.0.id.clone(), path.clone()).is_some() {
                            c.err(
                                &join_key(&path, "id"),
                                format!("the id `{}` is used twice (actions and triggers share `app.id`)", t.0.id),
                            );
                        }
                        triggers.push(t);
                    }
                }
            }
            None => c.err("triggers", "`triggers` must be a list"),
        }
    }
    if actions.is_empty() && triggers.is_empty() && top.get("actions").is_none() && top.get("triggers").is_none() {
        c.err("", "a connector needs at least one action or trigger (`actions:` or `triggers:`)");
    }
    Some(Declared {
        id: id?,
        name: name?,
        description: description?,
        version,
        base_url: base_url?,
        auth,
        auth_query,
        oauth2,
        rate_limit,
        errors,
        actions,
        triggers,
    })
}

fn auth(c: &mut Checker, v: Option<&Value>) -> (AuthKind, Option<String>, Option<OAuth2App>) {
    let kinds = ["none", "api_key", "bearer", "basic", "oauth2"];
    let (kind_s, obj) = match v {
        None => return (AuthKind::None, None, None),
        Some(Value::String(s)) => (s.clone(), None),
        Some(Value::Object(o)) => {
            c.keys(o, "auth", &["kind", "query", "authorize_url", "token_url", "scopes", "authorize_params", "client_auth"]);
            (c.string(o, "auth", "kind", true).unwrap_or_default(), Some(o))
        }
        Some(other) => {
            c.err("auth", format!("`auth` is a kind ({}) or a map with `kind`; found {}", kinds.join(", "), kind(other)));
            return (AuthKind::None, None, None);
        }
    };
    let kind = match kind_s.as_str() {
        "none" => AuthKind::None,
        "api_key" => AuthKind::ApiKey,
        "bearer" => AuthKind::Bearer,
        "basic" => AuthKind::Basic,
        "oauth2" => AuthKind::OAuth2,
        "" => AuthKind::None,
        other => {
            let path = if obj.is_some() { "auth.kind" } else { "auth" };
            c.err(path, format!("`{other}` is not an auth kind; valid: {}", kinds.join(", ")));
            AuthKind::None
        }
    };
    let Some(o) = obj else {
        if kind == AuthKind::OAuth2 {
            c.err("auth", "an oauth2 app declares its authorization server: `authorize_url`, `token_url` and `scopes`");
        }
        return (kind, None, None);
    };
    let query = c.string(o, "auth", "query", false);
    if query.is_some() && kind != AuthKind::ApiKey {
        c.err("auth.query", "`query` names the query parameter of an API key: only with `kind: api_key`");
    }
    let oauth2 = if kind == AuthKind::OAuth2 {
        let authorize_url = c.string(o, "auth", "authorize_url", true);
        let token_url = c.string(o, "auth", "token_url", true);
        let scopes = match o.get("scopes") {
            None => vec![],
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(str::to_string).collect(),
            Some(_) => {
                c.err("auth.scopes", "`scopes` is a list of scope names");
                vec![]
            }
        };
        let authorize_params = o
            .get("authorize_params")
            .and_then(Value::as_object)
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()))).collect())
            .unwrap_or_default();
        let client_auth = match o.get("client_auth").and_then(Value::as_str) {
            Some("body") => ClientAuth::Body,
            _ => ClientAuth::Basic,
        };
        Some(OAuth2App {
            authorize_url: authorize_url.unwrap_or_default(),
            token_url: token_url.unwrap_or_default(),
            scopes,
            authorize_params,
            client_auth,
        })
    } else {
        for k in ["authorize_url", "token_url", "scopes"] {
            if o.contains_key(k) {
                c.err(&join_key("auth", k), format!("`{k}` belongs to `kind: oauth2`"));
            }
        }
        None
    };
    (kind, query, oauth2)
}

/// Input fields (`input:` of an action, `config:` of a trigger) into a closed JSON schema.
fn fields(c: &mut Checker, v: Option<&Value>, path: &str) -> (Value, Vec<String>) {
    let mut props = Map::new();
    let mut required = vec![];
    let mut names = vec![];
    if let Some(v) = v
        && let Some(obj) = c.object(v, path, "the fields")
    {
        for (name, f) in obj {
            let fp = join_key(path, name);
            if !valid_id(name) {
                c.err_key(&fp, format!("`{name}` cannot be a field name: lowercase letters, digits and `_`"));
            }
            let Some(fo) = c.object(f, &fp, "a field") else { continue };
            c.keys(fo, &fp, &FIELD_KEYWORDS);
            if fo.get("description").and_then(Value::as_str).is_none_or(|d| d.trim().is_empty()) {
                c.err(&fp, format!("the field `{name}` needs a `description`: it is the help text users read"));
            }
            if fo.get("type").is_none() && fo.get("enum").is_none() {
                c.err(&fp, format!("the field `{name}` needs a `type` (string, integer, number, boolean, array, object)"));
            }
            match fo.get("required") {
                Some(Value::Bool(true)) => required.push(Value::String(name.clone())),
                Some(Value::Bool(false)) | None => {}
                Some(_) => c.err(&join_key(&fp, "required"), "`required` is true or false"),
            }
            let mut schema: Map<String, Value> =
                fo.iter().filter(|(k, _)| k.as_str() != "required").map(|(k, v)| (k.clone(), v.clone())).collect();
            if let Some(d) = schema.get("description").cloned() {
                schema.insert("description".into(), d);
            }
            props.insert(name.clone(), Value::Object(schema));
            names.push(name.clone());
        }
    }
    let schema = json!({"type": "object", "properties": props, "required": required, "additionalProperties": false});
    for p in check_schema(&schema) {
        c.err(path, format!("the fields do not make a valid schema: {p}"));
    }
    (schema, names)
}

fn request(c: &mut Checker, v: Option<&Value>, path: &str, scope: &Scope) -> Option<Request> {
    let Some(v) = v else {
        c.err(path.rsplit_once('.').map_or("", |p| p.0), "the key `request` is required");
        return None;
    };
    let o = c.object(v, path, "`request`")?;
    c.keys(o, path, &REQUEST);
    let method = match c.string(o, path, "method", true)?.to_uppercase().as_str() {
        "GET" => Method::GET,
        "POST" => Method::POST,
        "PUT" => Method::PUT,
        "PATCH" => Method::PATCH,
        "DELETE" => Method::DELETE,
        other => {
            c.err(&join_key(path, "method"), format!("`{other}` is not a method: GET, POST, PUT, PATCH or DELETE"));
            return None;
        }
    };
    let p = c.string(o, path, "path", true)?;
    if !p.starts_with('/') {
        c.err(&join_key(path, "path"), format!("`{p}` must start with `/` (it is appended to `base_url`)"));
    }
    let path_t = c.template(&p, &join_key(path, "path"), scope)?;
    let pairs = |c: &mut Checker, key: &str| -> Vec<(String, Mapping)> {
        match o.get(key) {
            None => vec![],
            Some(Value::Object(m)) => m.iter().map(|(k, v)| (k.clone(), c.mapping(v, &join_key(&join_key(path, key), k), scope))).collect(),
            Some(other) => {
                c.err(&join_key(path, key), format!("`{key}` must be a map, found {}", kind(other)));
                vec![]
            }
        }
    };
    let query = pairs(c, "query");
    let headers = pairs(c, "headers");
    let body = match (o.get("json"), o.get("form")) {
        (Some(_), Some(_)) => {
            c.err(path, "give `json` or `form`, not both");
            Body::None
        }
        (Some(j), None) => Body::Json(c.mapping(j, &join_key(path, "json"), scope)),
        (None, Some(_)) => Body::Form(pairs(c, "form")),
        (None, None) => Body::None,
    };
    let idempotency_header = c.string(o, path, "idempotency_header", false);
    Some(Request { method, path: path_t, query, headers, body, idempotency_header })
}

/// `output: {path?, schema, sample}`: the schema and sample checked against each other.
fn output(c: &mut Checker, v: Option<&Value>, path: &str) -> Option<(Option<JsonPath>, Value, Value)> {
    let Some(v) = v else {
        c.err(path.rsplit_once('.').map_or("", |p| p.0), "the key `output` is required: its `schema` and a `sample`");
        return None;
    };
    let o = c.object(v, path, "`output`")?;
    c.keys(o, path, &["path", "schema", "sample"]);
    let at = c.path(o, path, "path", false);
    let schema = o.get("schema").cloned();
    let sample = o.get("sample").cloned();
    let (Some(schema), Some(sample)) = (schema, sample) else {
        c.err(path, "`output` needs a `schema` (JSON Schema of what later steps read) and a `sample` valid against it");
        return None;
    };
    let problems = check_schema(&schema);
    for p in &problems {
        c.err(&join_key(path, "schema"), format!("not a valid schema: {p}"));
    }
    if problems.is_empty() {
        for p in validate(&sample, &schema) {
            c.err(&join_key(path, "sample"), format!("the sample does not match the schema: {p}"));
        }
    }
    Some((at, schema, sample))
}

fn action(c: &mut Checker, v: &Value, path: &str) -> Option<(ActionSpec, Request, Option<JsonPath>, Vec<ErrorRule>)> {
    let o = c.object(v, path, "an action")?;
    c.keys(o, path, &ACTION);
    let id = c.string(o, path, "id", true);
    if let Some(id) = &id
        && !valid_id(id)
    {
        c.err(&join_key(path, "id"), format!("`{id}` cannot be an action id: lowercase letters, digits and `_`"));
    }
    let name = c.string(o, path, "name", true);
    let description = c.string(o, path, "description", true);
    let idempotency = match o.get("idempotency").and_then(Value::as_str) {
        None => {
            c.err(path, "the key `idempotency` is required: `none` (a repeat repeats the effect), `key` (the vendor deduplicates on `idempotency_header`) or `natural` (reads, PUTs, upserts)");
            Idempotency::None
        }
        Some("none") => Idempotency::None,
        Some("key") => Idempotency::Key,
        Some("natural") => Idempotency::Natural,
        Some(other) => {
            c.err(&join_key(path, "idempotency"), format!("`{other}` is not `none`, `key` or `natural`"));
            Idempotency::None
        }
    };
    let (input_schema, names) = fields(c, o.get("input"), &join_key(path, "input"));
    let scope = Scope { fields: names, trigger: false };
    let req = request(c, o.get("request"), &join_key(path, "request"), &scope);
    if idempotency == Idempotency::Key && req.as_ref().is_some_and(|r| r.idempotency_header.is_none()) {
        c.err(&join_key(path, "request"), "`idempotency: key` needs `idempotency_header`: the header the vendor deduplicates on");
    }
    let out = output(c, o.get("output"), &join_key(path, "output"));
    let errors = o.get("errors").map(|e| error_rules(c, e, &join_key(path, "errors"))).unwrap_or_default();
    let (at, output_schema, sample) = out?;
    let spec = ActionSpec {
        id: id?,
        name: name?,
        description: description?,
        input_schema,
        output_schema,
        sample,
        idempotency,
        http_only: true,
        audience: None,
        reaches: None,
    };
    Some((spec, req?, at, errors))
}

fn trigger(c: &mut Checker, v: &Value, path: &str) -> Option<(TriggerSpec, Request, Trigger)> {
    let o = c.object(v, path, "a trigger")?;
    c.keys(o, path, &TRIGGER);
    let id = c.string(o, path, "id", true);
    if let Some(id) = &id
        && !valid_id(id)
    {
        c.err(&join_key(path, "id"), format!("`{id}` cannot be a trigger id: lowercase letters, digits and `_`"));
    }
    let name = c.string(o, path, "name", true);
    let description = c.string(o, path, "description", true);
    let (config_schema, names) = fields(c, o.get("config"), &join_key(path, "config"));
    let scope = Scope { fields: names, trigger: true };
    let req = request(c, o.get("request"), &join_key(path, "request"), &scope);
    let items = c.string(o, path, "items", true);
    if let Some(i) = &items
        && JsonPath::parse(&json_path(i)).is_err()
    {
        c.err(&join_key(path, "items"), format!("`{i}` is not a path; write `items` or `data.items`"));
    }
    let dedupe_key = c.path(o, path, "dedupe_key", true);
    let cursor = c.path(o, path, "cursor", false);
    let order = match o.get("order").and_then(Value::as_str) {
        None | Some("newest_first") => Order::NewestFirst,
        Some("oldest_first") => Order::OldestFirst,
        Some(other) => {
            c.err(&join_key(path, "order"), format!("`{other}` is not `newest_first` or `oldest_first`"));
            Order::NewestFirst
        }
    };
    let (pagination, max_pages) = match o.get("pagination") {
        None => (None, 1),
        Some(p) => pagination(c, p, &join_key(path, "pagination")),
    };
    let out = output(c, o.get("output"), &join_key(path, "output"));
    let (_, output_schema, sample) = out?;
    let spec =
        TriggerSpec { id: id?, name: name?, description: description?, kind: TriggerKind::Polling, config_schema, output_schema, sample };
    let items = json_path(&items?);
    Some((spec, req?, Trigger { items, dedupe_key: dedupe_key?, cursor, order, pagination, max_pages }))
}

fn pagination(c: &mut Checker, v: &Value, path: &str) -> (Option<Strategy>, u32) {
    let Some(o) = c.object(v, path, "`pagination`") else { return (None, 1) };
    c.keys(o, path, &["next", "param", "link", "offset", "limit", "page_size", "max_pages"]);
    let max_pages = match o.get("max_pages") {
        None => 5,
        Some(Value::Number(n)) if n.as_u64().is_some_and(|n| (1..=100).contains(&n)) => n.as_u64().unwrap_or(5) as u32,
        Some(_) => {
            c.err(&join_key(path, "max_pages"), "`max_pages` is a number from 1 to 100");
            5
        }
    };
    let strategy = if o.get("link") == Some(&Value::Bool(true)) {
        Some(Strategy::LinkHeader)
    } else if let Some(next) = c.string(o, path, "next", false) {
        let param = c.string(o, path, "param", true);
        param
            .and_then(|p| Strategy::cursor(&json_path(&next), &p).map_err(|e| c.err(&join_key(path, "next"), e.message().to_string())).ok())
    } else if let Some(offset) = c.string(o, path, "offset", false) {
        let limit = c.string(o, path, "limit", true);
        let size = o.get("page_size").and_then(Value::as_u64);
        if size.is_none() {
            c.err(path, "offset pagination needs `page_size` (the items per page)");
        }
        match (limit, size) {
            (Some(l), Some(s)) => Strategy::offset(&offset, &l, s, None).map_err(|e| c.err(path, e.message().to_string())).ok(),
            _ => None,
        }
    } else {
        c.err(path, "say how the vendor pages: `next` (the cursor's path in the body) with `param`, `link: true`, or `offset` with `limit` and `page_size`");
        None
    };
    (strategy, max_pages)
}

fn error_rules(c: &mut Checker, v: &Value, path: &str) -> Vec<ErrorRule> {
    let Some(list) = v.as_array() else {
        c.err(path, "`errors` is a list of rules, each `{status, when, class, message, field}`");
        return vec![];
    };
    let mut out = vec![];
    for (i, r) in list.iter().enumerate() {
        let rp = join_index(path, i);
        let Some(o) = c.object(r, &rp, "an error rule") else { continue };
        c.keys(o, &rp, &["status", "when", "class", "message", "field"]);
        let status: Vec<u16> = match o.get("status") {
            None => vec![],
            Some(Value::Number(n)) => n.as_u64().map(|n| vec![n as u16]).unwrap_or_default(),
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_u64).map(|n| n as u16).collect(),
            Some(_) => {
                c.err(&join_key(&rp, "status"), "`status` is an HTTP status or a list of them");
                vec![]
            }
        };
        let when = match o.get("when") {
            None => None,
            Some(Value::Object(w)) if w.len() == 1 => {
                let (p, want) = w.iter().next().expect("one entry");
                match JsonPath::parse(&json_path(p)) {
                    Ok(jp) => Some((jp, want.clone())),
                    Err(e) => {
                        c.err(&join_key(&rp, "when"), format!("`{p}` is not a path: {}", e.message()));
                        None
                    }
                }
            }
            Some(_) => {
                c.err(&join_key(&rp, "when"), "`when` is one `path: value` pair the body must hold, like `status: error`");
                None
            }
        };
        if status.is_empty() && when.is_none() {
            c.err(&rp, "a rule needs a `status`, a `when`, or both");
        }
        let class = match o.get("class").and_then(Value::as_str) {
            Some("rate_limited") => ErrorClass::RateLimited,
            Some("transient") => ErrorClass::Transient,
            Some("auth") => ErrorClass::Auth,
            Some("permanent") => ErrorClass::Permanent,
            Some("bad_input") => ErrorClass::BadInput,
            Some("maybe_delivered") => ErrorClass::MaybeDelivered,
            other => {
                c.err(
                    &join_key(&rp, "class"),
                    format!("`class` must be one of {}; found {}", CLASSES.join(", "), other.unwrap_or("nothing")),
                );
                continue;
            }
        };
        let message = c.path(o, &rp, "message", false);
        let field = c.string(o, &rp, "field", false);
        out.push(ErrorRule { status, when, class, message, field });
    }
    out
}
