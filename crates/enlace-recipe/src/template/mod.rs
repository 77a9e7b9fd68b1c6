//! Handlebars templates as recipes use them (see `docs/templates.md`).
//!
//! Every template is compiled once, when a recipe is validated: syntax, helper names,
//! helper arities and literal arguments (a JSONPath, a duration, a time zone) are checked
//! then, and the data paths the template reads are collected for the validator.
//!
//! Rendering is strict: reading a path that is not in the data is an error naming the path
//! (use `default` for optional values). A template that is exactly one `{{...}}`
//! expression keeps the JSON type of its value; anything else renders to a string.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, OnceLock};

use handlebars::template::{Parameter, Template as Ast};
use handlebars::{Context, Handlebars, RenderContext, RenderErrorReason, Renderable, StringOutput};
use serde_json::Value;

mod analyze;
mod helpers;
mod time;

#[cfg(test)]
mod tests;

/// A template that does not compile: bad syntax, an unknown helper, wrong arguments.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct TemplateError {
    pub message: String,
}

/// A template that compiled but failed on the data: a missing value, a helper error.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct RenderError {
    pub message: String,
}

struct Registries {
    /// No escaping at all.
    plain: Handlebars<'static>,
    /// HTML escaping, except in `{{{...}}}`.
    html: Handlebars<'static>,
}

/// Compiles templates. Build one with [`Engine::new`] or share [`Engine::global`].
pub struct Engine {
    regs: Arc<Registries>,
}

impl Default for Engine {
    fn default() -> Self {
        Engine::new()
    }
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
    }
}

impl Engine {
    pub fn new() -> Engine {
        let build = |escape: bool| {
            let mut reg = Handlebars::new();
            reg.set_strict_mode(true);
            if !escape {
                reg.register_escape_fn(handlebars::no_escape);
            }
            helpers::register(&mut reg);
            reg
        };
        Engine { regs: Arc::new(Registries { plain: build(false), html: build(true) }) }
    }

    /// A shared engine, built on first use.
    pub fn global() -> &'static Engine {
        static GLOBAL: OnceLock<Engine> = OnceLock::new();
        GLOBAL.get_or_init(Engine::new)
    }

    /// Compiles a template whose output is not escaped.
    pub fn compile(&self, source: &str) -> Result<Template, TemplateError> {
        self.compile_with(source, false)
    }

    /// Compiles a template whose values are HTML-escaped (for HTML fields such as an email's
    /// `html`); `{{{x}}}` writes `x` unescaped.
    pub fn compile_html(&self, source: &str) -> Result<Template, TemplateError> {
        self.compile_with(source, true)
    }

    /// Every helper usable in recipes, sorted.
    pub fn helper_names(&self) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = helpers::SPECS.iter().map(|s| s.name).collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    fn compile_with(&self, source: &str, html: bool) -> Result<Template, TemplateError> {
        let base = |body, analysis: Option<analyze::Analysis>| {
            let (references, rooted, param_paths) = match analysis {
                Some(a) => (a.references, a.rooted, a.param_paths),
                None => (vec![], HashMap::new(), vec![]),
            };
            Template {
                inner: Arc::new(Inner { source: source.to_string(), regs: self.regs.clone(), html, body, references, rooted, param_paths }),
            }
        };
        if !source.contains("{{") {
            return Ok(base(Body::Literal, None));
        }
        let ast = Ast::compile(source).map_err(|e| TemplateError { message: syntax_error(source, &e) })?;
        let mut analysis = analyze::analyze(ast).map_err(|message| TemplateError { message })?;
        let ast = std::mem::take(&mut analysis.ast);
        let body = match analysis.single.take() {
            Some((value, escaped)) => Body::Single { ast, value, escape: html && escaped },
            None => Body::Text(ast),
        };
        Ok(base(body, Some(analysis)))
    }
}

/// A compiled template. Cheap to clone.
#[derive(Clone)]
pub struct Template {
    inner: Arc<Inner>,
}

struct Inner {
    source: String,
    regs: Arc<Registries>,
    html: bool,
    body: Body,
    references: Vec<Vec<String>>,
    rooted: HashMap<String, Vec<String>>,
    param_paths: Vec<(String, usize, String)>,
}

enum Body {
    /// No `{{` at all.
    Literal,
    /// Exactly one expression: `value` computes it, keeping its JSON type.
    Single {
        ast: Ast,
        value: Parameter,
        escape: bool,
    },
    Text(Ast),
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Template").field("source", &self.inner.source).field("html", &self.inner.html).finish()
    }
}

impl PartialEq for Template {
    fn eq(&self, other: &Self) -> bool {
        self.inner.source == other.inner.source && self.inner.html == other.inner.html
    }
}

/// The data templates read, wrapped once so that rendering many templates copies nothing.
/// (Handlebars renders against its own context type; building it from a borrowed value
/// means a deep copy per render, which dominated the cost of a run.)
pub struct Data(Context);

impl Data {
    pub fn new(value: Value) -> Data {
        Data(Context::from(value))
    }
    pub fn get(&self) -> &Value {
        self.0.data()
    }
    pub fn get_mut(&mut self) -> &mut Value {
        self.0.data_mut()
    }
}

impl fmt::Debug for Data {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Data(..)")
    }
}

impl Template {
    /// True when the source contains no `{{` at all (a plain literal string).
    pub fn is_literal(&self) -> bool {
        matches!(self.inner.body, Body::Literal)
    }

    /// True when the whole source is exactly one `{{ ... }}` expression (whitespace around
    /// allowed): then [`Template::render_value`] keeps the JSON type of the result.
    pub fn is_single_expression(&self) -> bool {
        matches!(self.inner.body, Body::Single { .. })
    }

    /// Renders to a JSON value: a single expression keeps its JSON type; a literal gives the
    /// string; anything else renders to a string. Copies `data` once; to render many
    /// templates against the same data, wrap it in a [`Data`] and use [`Template::eval`].
    pub fn render_value(&self, data: &Value) -> Result<Value, RenderError> {
        match &self.inner.body {
            Body::Literal => Ok(Value::String(self.inner.source.clone())),
            _ => self.eval(&Data::new(data.clone())),
        }
    }

    /// Renders to a string (see [`Template::render_value`] for the copy of `data`).
    pub fn render_string(&self, data: &Value) -> Result<String, RenderError> {
        match &self.inner.body {
            Body::Literal => Ok(self.inner.source.clone()),
            _ => self.eval_string(&Data::new(data.clone())),
        }
    }

    /// [`Template::render_value`] against data already wrapped: no copy.
    pub fn eval(&self, data: &Data) -> Result<Value, RenderError> {
        match &self.inner.body {
            Body::Literal => Ok(Value::String(self.inner.source.clone())),
            Body::Single { value, escape, .. } => {
                let reg = self.registry();
                let ctx = &data.0;
                let mut rc = RenderContext::new(None);
                let v = value.expand(reg, ctx, &mut rc).map_err(|e| self.render_error(e, ctx.data()))?;
                if v.is_value_missing() {
                    return Err(RenderError { message: self.missing(v.relative_path().map(String::as_str), ctx.data()) });
                }
                let v = v.value().clone();
                Ok(match v {
                    Value::String(s) if *escape => Value::String(handlebars::html_escape(&s)),
                    v => v,
                })
            }
            Body::Text(ast) => self.render_ast(ast, data).map(Value::String),
        }
    }

    /// [`Template::render_string`] against data already wrapped: no copy.
    pub fn eval_string(&self, data: &Data) -> Result<String, RenderError> {
        match &self.inner.body {
            Body::Literal => Ok(self.inner.source.clone()),
            Body::Single { ast, .. } | Body::Text(ast) => self.render_ast(ast, data),
        }
    }

    /// Every data path the template reads, as segments, in order of first appearance:
    /// `{{lowercase trigger.body.email}}` gives `[["trigger", "body", "email"]]`. Paths
    /// relative to the value of an `#each` or `#with` block are left out; `@root.x` paths
    /// are given from the root.
    pub fn references(&self) -> &[Vec<String>] {
        &self.inner.references
    }

    pub fn source(&self) -> &str {
        &self.inner.source
    }

    /// Whether values are HTML-escaped (compiled with [`Engine::compile_html`]).
    pub fn is_html(&self) -> bool {
        self.inner.html
    }

    fn registry(&self) -> &Handlebars<'static> {
        if self.inner.html { &self.inner.regs.html } else { &self.inner.regs.plain }
    }

    fn render_ast(&self, ast: &Ast, data: &Data) -> Result<String, RenderError> {
        let reg = self.registry();
        let mut rc = RenderContext::new(None);
        let mut out = StringOutput::new();
        ast.render(reg, &data.0, &mut rc, &mut out).map_err(|e| self.render_error(e, data.0.data()))?;
        out.into_string().map_err(|e| RenderError { message: e.to_string() })
    }

    fn render_error(&self, e: handlebars::RenderError, data: &Value) -> RenderError {
        let mut message = match e.reason() {
            RenderErrorReason::MissingVariable(path) => self.missing(path.as_deref(), data),
            RenderErrorReason::Other(m) => m.clone(),
            RenderErrorReason::ParamNotFoundForIndex(helper, index) => self.missing_param(helper, *index, data),
            RenderErrorReason::InvalidParamType(expected) => format!("expected {expected}"),
            other => other.to_string(),
        };
        if self.inner.source.contains('\n')
            && let (Some(line), Some(col)) = (e.line_no, e.column_no)
        {
            message.push_str(&format!(" (line {line}, column {col})"));
        }
        RenderError { message }
    }

    /// "`trigger.body.email` is missing (...); write `{{default ...}}` ...".
    fn missing(&self, path: Option<&str>, data: &Value) -> String {
        let Some(path) = path else {
            // Only `lookup` gives a missing value without a path.
            return "`lookup` found no such key or index; write `{{default (lookup ...) \"...\"}}` if it is optional".to_string();
        };
        let (detail, present) = match self.inner.rooted.get(path) {
            Some(segs) => match explain_missing(data, segs) {
                Some(d) => (format!(" ({d})"), None),
                None => (String::new(), lookup(data, segs)),
            },
            None => (String::new(), None),
        };
        if let Some(v) = present {
            // Handlebars' `#each` and `#with` report a value they cannot enter this way.
            return format!(
                "`{path}` is {}, which `#each` / `#with` cannot enter; add an `{{{{else}}}}` branch for that case",
                helpers::kind(v)
            );
        }
        format!("`{path}` is missing{detail}; write `{{{{default {path} \"...\"}}}}` if it is optional")
    }

    /// A built-in helper (`eq`, `gt`, ...) found an argument missing: name the path.
    fn missing_param(&self, helper: &str, index: usize, data: &Value) -> String {
        let candidates: Vec<&String> =
            self.inner.param_paths.iter().filter(|(h, i, _)| h == helper && *i == index).map(|(_, _, raw)| raw).collect();
        let unresolved =
            candidates.iter().find(|raw| self.inner.rooted.get(raw.as_str()).is_some_and(|segs| explain_missing(data, segs).is_some()));
        match unresolved.or(candidates.first()) {
            Some(raw) => {
                let detail = self
                    .inner
                    .rooted
                    .get(raw.as_str())
                    .and_then(|segs| explain_missing(data, segs))
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default();
                format!("`{helper}`: `{raw}` is missing{detail}; write `(default {raw} \"...\")` if it may be absent")
            }
            None => format!("`{helper}`: argument {} is missing", index + 1),
        }
    }
}

/// The value at a rooted path.
fn lookup<'a>(data: &'a Value, segs: &[String]) -> Option<&'a Value> {
    segs.iter().try_fold(data, |cur, seg| match cur {
        Value::Object(m) => m.get(seg),
        Value::Array(items) => seg.parse::<usize>().ok().and_then(|n| items.get(n)),
        _ => None,
    })
}

/// Which part of a rooted path is missing from the data, or `None` when it is all there.
fn explain_missing(data: &Value, segs: &[String]) -> Option<String> {
    let mut cur = data;
    for (i, seg) in segs.iter().enumerate() {
        let at = || {
            if i == 0 { "the data".to_string() } else { format!("`{}`", segs[..i].join(".")) }
        };
        cur = match cur {
            Value::Object(m) => match m.get(seg) {
                Some(v) => v,
                None => return Some(format!("{} has no `{seg}`", at())),
            },
            Value::Array(items) => match seg.parse::<usize>().ok().and_then(|n| items.get(n)) {
                Some(v) => v,
                None => return Some(format!("{} is a list of {} items", at(), items.len())),
            },
            other => {
                return Some(format!("{} is {}, not an object", at(), helpers::kind(other)));
            }
        };
    }
    None
}

/// A parse error made readable: what is wrong and where.
fn syntax_error(source: &str, e: &handlebars::TemplateError) -> String {
    use handlebars::TemplateErrorReason as R;
    let reason = match e.reason() {
        R::MismatchingClosedHelper(open, close) => {
            format!("`{{{{#{open}}}}}` is closed by `{{{{/{close}}}}}`")
        }
        R::InvalidSyntax(_) => hint(source).to_string(),
        R::InvalidParam(p) => format!("invalid argument `{p}`"),
        R::NestedSubexpression => "nested subexpressions are not supported".to_string(),
        other => other.to_string(),
    };
    match e.pos() {
        Some((line, col)) => {
            format!("template syntax error at line {line}, column {col}: {reason}")
        }
        None => format!("template syntax error: {reason}"),
    }
}

/// The likeliest mistake in a template that does not parse.
fn hint(source: &str) -> &'static str {
    let opens = source.matches("{{").count();
    let closes = source.matches("}}").count();
    if opens > closes {
        "a `{{` is not closed with `}}`"
    } else if closes > opens {
        "a `}}` has no matching `{{`"
    } else if source.contains("{{#") && !source.contains("{{/") {
        "a block `{{#name ...}}` is not closed with `{{/name}}`"
    } else if source.contains("{{/") && !source.contains("{{#") {
        "`{{/name}}` closes no block"
    } else {
        "expected `{{path}}`, `{{helper argument...}}` or a block `{{#helper ...}}...{{/helper}}`; strings in arguments are quoted"
    }
}

/// Evaluates a JSONPath (RFC 9535, via jsonpath-rust) against a value; returns the matches.
pub fn jsonpath(value: &Value, path: &str) -> Result<Vec<Value>, String> {
    use jsonpath_rust::JsonPath;
    parse_jsonpath(path)?;
    value.query(path).map(|found| found.into_iter().cloned().collect()).map_err(|e| jsonpath_error(path, &e.to_string()))
}

/// Checks a JSONPath without evaluating it.
pub(crate) fn parse_jsonpath(path: &str) -> Result<(), String> {
    jsonpath_rust::parser::parse_json_path(path).map(|_| ()).map_err(|e| jsonpath_error(path, &e.to_string()))
}

fn jsonpath_error(path: &str, raw: &str) -> String {
    if !path.trim_start().starts_with('$') {
        return format!("invalid JSONPath {path:?}: a JSONPath starts with `$`, such as '$.items[*].sku'");
    }
    // Pest's report spans several lines: keep the position and the expectation.
    let position = raw
        .lines()
        .find_map(|l| l.split_once("--> ").map(|(_, p)| p.trim()))
        .and_then(|p| p.split(':').nth(1))
        .map(|c| format!(" at character {c}"));
    let expected = raw.lines().find_map(|l| l.trim().strip_prefix("= ")).map(|s| s.replace("ALPHA", "a name").replace('_', " "));
    match (position, expected) {
        (Some(p), Some(x)) => format!("invalid JSONPath {path:?}{p}: {x}"),
        (Some(p), None) => format!("invalid JSONPath {path:?}{p}"),
        _ => format!("invalid JSONPath {path:?}: {}", raw.lines().next().unwrap_or(raw)),
    }
}
