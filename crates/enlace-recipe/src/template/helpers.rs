//! The helpers recipes can call, their signatures (checked when a template is compiled) and
//! their implementations.

use std::borrow::Cow;

use handlebars::{Context, Handlebars, Helper, HelperDef, PathAndJson, RenderContext, RenderErrorReason, ScopedJson};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Number, Value};
use sha2::{Digest, Sha256};

use super::time;

/// How a helper may be used with respect to blocks (`{{#name}}...{{/name}}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BlockUse {
    /// Only inline: `{{name ...}}` or `(name ...)`.
    Never,
    /// Inline or as a block that picks its body or its `{{else}}`.
    Allowed,
    /// Only as a block.
    Required,
}

/// The signature of a helper, checked at compile time.
#[derive(Debug)]
pub(crate) struct Spec {
    pub name: &'static str,
    pub min: usize,
    /// `None`: any number of arguments.
    pub max: Option<usize>,
    /// Named arguments (`name=value`) the helper accepts.
    pub hash: &'static [&'static str],
    pub block: BlockUse,
    pub usage: &'static str,
}

const fn spec(name: &'static str, min: usize, max: Option<usize>, usage: &'static str) -> Spec {
    Spec { name, min, max, hash: &[], block: BlockUse::Never, usage }
}

const fn boolean(name: &'static str, min: usize, max: Option<usize>, usage: &'static str) -> Spec {
    Spec { name, min, max, hash: &[], block: BlockUse::Allowed, usage }
}

const TIME_HASH: &[&str] = &["format", "add", "tz"];

/// Every helper usable in recipes: Handlebars' own and ours, sorted by name.
pub(crate) static SPECS: &[Spec] = &[
    spec("add", 2, None, "add NUMBER NUMBER..."),
    boolean("and", 1, None, "and VALUE VALUE..."),
    spec("concat", 1, None, "concat VALUE VALUE..."),
    spec("contains", 2, Some(2), "contains LIST_OR_TEXT_OR_OBJECT VALUE"),
    Spec {
        name: "date",
        min: 1,
        max: Some(2),
        hash: TIME_HASH,
        block: BlockUse::Never,
        usage: "date TIME [FORMAT] [format=FORMAT] [add=DURATION] [tz=ZONE]",
    },
    spec("default", 2, None, "default VALUE FALLBACK..."),
    spec("e164", 1, Some(2), "e164 PHONE [REGION]"),
    Spec { name: "each", min: 1, max: Some(1), hash: &[], block: BlockUse::Required, usage: "#each LIST" },
    boolean("eq", 2, Some(2), "eq A B"),
    spec("first", 1, Some(1), "first LIST"),
    boolean("gt", 2, Some(2), "gt A B"),
    boolean("gte", 2, Some(2), "gte A B"),
    Spec { name: "if", min: 1, max: Some(1), hash: &["includeZero"], block: BlockUse::Required, usage: "#if VALUE" },
    spec("join", 1, Some(2), "join LIST [SEPARATOR]"),
    spec("json", 1, Some(1), "json VALUE"),
    spec("jsonpath", 2, Some(2), "jsonpath VALUE PATH"),
    spec("len", 1, Some(1), "len LIST_OR_TEXT_OR_OBJECT"),
    spec("lookup", 2, Some(2), "lookup OBJECT_OR_LIST KEY_OR_INDEX"),
    spec("lowercase", 1, Some(1), "lowercase TEXT"),
    boolean("lt", 2, Some(2), "lt A B"),
    boolean("lte", 2, Some(2), "lte A B"),
    spec("mul", 2, None, "mul NUMBER NUMBER..."),
    boolean("ne", 2, Some(2), "ne A B"),
    spec("normalize_email", 1, Some(1), "normalize_email TEXT"),
    boolean("not", 1, Some(1), "not VALUE"),
    Spec {
        name: "now",
        min: 0,
        max: Some(1),
        hash: TIME_HASH,
        block: BlockUse::Never,
        usage: "now [FORMAT] [format=FORMAT] [add=DURATION] [tz=ZONE]",
    },
    boolean("or", 1, None, "or VALUE VALUE..."),
    Spec { name: "raw", min: 0, max: Some(0), hash: &[], block: BlockUse::Required, usage: "{{{{raw}}}}...{{{{/raw}}}}" },
    spec("round", 1, Some(2), "round NUMBER [DECIMALS]"),
    spec("sha256", 1, Some(1), "sha256 TEXT"),
    spec("slug", 1, Some(1), "slug TEXT"),
    spec("split", 1, Some(2), "split TEXT [SEPARATOR]"),
    spec("sub", 2, Some(2), "sub NUMBER NUMBER"),
    spec("trim", 1, Some(1), "trim TEXT"),
    spec("truncate", 2, Some(3), "truncate TEXT LENGTH [SUFFIX]"),
    Spec { name: "unless", min: 1, max: Some(1), hash: &["includeZero"], block: BlockUse::Required, usage: "#unless VALUE" },
    spec("uppercase", 1, Some(1), "uppercase TEXT"),
    spec("urlencode", 1, Some(1), "urlencode TEXT"),
    Spec { name: "with", min: 1, max: Some(1), hash: &[], block: BlockUse::Required, usage: "#with OBJECT" },
];

pub(crate) fn find_spec(name: &str) -> Option<&'static Spec> {
    SPECS.iter().find(|s| s.name == name)
}

/// The name of the private helper every output expression is routed through (see
/// `analyze`): it turns a value into text (lists and objects as compact JSON) and makes a
/// missing value an error.
pub(crate) const TEXT_HELPER: &str = "__text";

type HelperFn = fn(&Args<'_, '_>) -> Result<Value, String>;

/// Our helpers and their implementations.
pub(super) static IMPLS: &[(&str, HelperFn)] = &[
    ("add", add),
    ("concat", concat),
    ("contains", contains),
    ("date", date),
    ("default", default),
    ("e164", e164),
    ("first", first),
    ("join", join),
    ("json", json),
    ("jsonpath", jsonpath),
    ("len", len),
    ("lowercase", lowercase),
    ("mul", mul),
    ("normalize_email", normalize_email),
    ("now", now),
    ("round", round),
    ("sha256", sha256),
    ("slug", slug),
    ("split", split),
    ("sub", sub),
    ("trim", trim),
    ("truncate", truncate),
    ("uppercase", uppercase),
    ("urlencode", urlencode),
];

/// Registers our helpers (replacing Handlebars' `len`) and removes `log`.
pub(crate) fn register(reg: &mut Handlebars<'static>) {
    reg.unregister_helper("log");
    for (name, f) in IMPLS {
        reg.register_helper(name, Box::new(FnHelper { name, f: *f }));
    }
    reg.register_helper("lookup", Box::new(LookupHelper));
    reg.register_helper(TEXT_HELPER, Box::new(TextHelper));
}

/// `lookup OBJECT KEY` / `lookup LIST INDEX`. Unlike Handlebars' own, a key that is not
/// there gives a missing value (an error in output, a fallback inside `default`).
struct LookupHelper;

impl HelperDef for LookupHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        ctx: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, handlebars::RenderError> {
        let args = Args { h, root: ctx.data() };
        let err = |m: String| -> handlebars::RenderError { RenderErrorReason::Other(format!("`lookup`: {m}")).into() };
        let container = args.get(0).map_err(err)?;
        let key = args.get(1).map_err(err)?;
        let found = match container {
            Value::Object(m) => m.get(text(key).map_err(|e| err(format!("the key: {e}")))?.as_ref()),
            Value::Array(items) => int_arg(key, "the index").ok().and_then(|i| usize::try_from(i).ok()).and_then(|i| items.get(i)),
            Value::Null => None,
            other => {
                return Err(err(format!("expected an object or a list, got {}", kind(other))));
            }
        };
        Ok(found.map(|v| ScopedJson::Derived(v.clone())).unwrap_or(ScopedJson::Missing))
    }
}

struct FnHelper {
    name: &'static str,
    f: HelperFn,
}

impl HelperDef for FnHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        ctx: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, handlebars::RenderError> {
        let args = Args { h, root: ctx.data() };
        (self.f)(&args).map(ScopedJson::Derived).map_err(|m| RenderErrorReason::Other(format!("`{}`: {m}", self.name)).into())
    }
}

struct TextHelper;

impl HelperDef for TextHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, handlebars::RenderError> {
        let p = h.param(0).ok_or(RenderErrorReason::ParamNotFoundForIndex(TEXT_HELPER, 0))?;
        if p.is_value_missing() {
            return Err(RenderErrorReason::MissingVariable(p.relative_path().cloned()).into());
        }
        Ok(ScopedJson::Derived(Value::String(text_any(p.value()).into_owned())))
    }
}

/// The arguments of one helper call.
pub(crate) struct Args<'a, 'rc> {
    h: &'a Helper<'rc>,
    /// The whole rendering data (for `run.now`).
    root: &'a Value,
}

impl Args<'_, '_> {
    fn len(&self) -> usize {
        self.h.params().len()
    }

    /// A required argument; a path that is missing from the data is an error naming it.
    fn get(&self, i: usize) -> Result<&Value, String> {
        match self.h.param(i) {
            None => Err(format!("argument {} is required", i + 1)),
            Some(p) if p.is_value_missing() => Err(missing_arg(p)),
            Some(p) => Ok(p.value()),
        }
    }

    /// An optional argument: `None` when not given; given but missing is an error.
    fn opt(&self, i: usize) -> Result<Option<&Value>, String> {
        if i < self.len() { self.get(i).map(Some) } else { Ok(None) }
    }

    fn hash(&self, key: &str) -> Result<Option<&Value>, String> {
        match self.h.hash_get(key) {
            None => Ok(None),
            Some(p) if p.is_value_missing() => Err(missing_arg(p)),
            Some(p) => Ok(Some(p.value())),
        }
    }

    fn hash_text(&self, key: &str) -> Result<Option<String>, String> {
        match self.hash(key)? {
            None | Some(Value::Null) => Ok(None),
            Some(v) => text(v).map(|t| Some(t.into_owned())).map_err(|e| format!("{key}=: {e}")),
        }
    }
}

fn missing_arg(p: &PathAndJson<'_>) -> String {
    match p.relative_path() {
        Some(path) => format!("`{path}` is missing; write `(default {path} \"...\")` if it may be absent"),
        // Only `lookup` gives a missing value without a path.
        None => "`lookup` found no such key or index; write `(default (lookup ...) \"...\")` if it may be absent".to_string(),
    }
}

/// What kind of JSON value this is, for messages.
pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A scalar as text: strings as they are, numbers and booleans written out, null as "".
/// Lists and objects are an error.
pub(crate) fn text(v: &Value) -> Result<Cow<'_, str>, String> {
    match v {
        Value::String(s) => Ok(Cow::Borrowed(s)),
        Value::Number(n) => Ok(Cow::Owned(n.to_string())),
        Value::Bool(b) => Ok(Cow::Owned(b.to_string())),
        Value::Null => Ok(Cow::Borrowed("")),
        other => Err(format!("expected text, got {}", kind(other))),
    }
}

/// Any value as text: like [`text`], with lists and objects as compact JSON.
pub(crate) fn text_any(v: &Value) -> Cow<'_, str> {
    match v {
        Value::Array(_) | Value::Object(_) => Cow::Owned(v.to_string()),
        _ => text(v).unwrap_or_default(),
    }
}

// ---- numbers ----

#[derive(Debug, Clone, Copy)]
enum Num {
    Int(i128),
    Float(f64),
}

fn num(v: &Value) -> Result<Num, String> {
    match v {
        Value::Number(n) => Ok(number_to_num(n)),
        Value::String(s) => {
            let t = s.trim();
            if let Ok(i) = t.parse::<i64>() {
                Ok(Num::Int(i as i128))
            } else if let Ok(f) = t.parse::<f64>().map_err(|_| ()).and_then(|f| if f.is_finite() { Ok(f) } else { Err(()) }) {
                Ok(Num::Float(f))
            } else {
                Err(format!("{s:?} is not a number"))
            }
        }
        other => Err(format!("expected a number, got {}", kind(other))),
    }
}

fn number_to_num(n: &Number) -> Num {
    if let Some(i) = n.as_i64() {
        Num::Int(i as i128)
    } else if let Some(u) = n.as_u64() {
        Num::Int(u as i128)
    } else {
        Num::Float(n.as_f64().unwrap_or(f64::NAN))
    }
}

fn as_f64(n: Num) -> f64 {
    match n {
        Num::Int(i) => i as f64,
        Num::Float(f) => f,
    }
}

fn num_value(n: Num) -> Result<Value, String> {
    match n {
        Num::Int(i) => {
            if let Ok(v) = i64::try_from(i) {
                Ok(Value::from(v))
            } else if let Ok(v) = u64::try_from(i) {
                Ok(Value::from(v))
            } else {
                num_value(Num::Float(i as f64))
            }
        }
        Num::Float(f) => Number::from_f64(f).map(Value::Number).ok_or_else(|| "the result is not a finite number".to_string()),
    }
}

fn arith(a: Num, b: Num, int: fn(i128, i128) -> Option<i128>, float: fn(f64, f64) -> f64) -> Num {
    match (a, b) {
        (Num::Int(x), Num::Int(y)) => int(x, y).map(Num::Int).unwrap_or_else(|| Num::Float(float(x as f64, y as f64))),
        _ => Num::Float(float(as_f64(a), as_f64(b))),
    }
}

fn fold(args: &Args<'_, '_>, int: fn(i128, i128) -> Option<i128>, float: fn(f64, f64) -> f64) -> Result<Value, String> {
    let mut acc = num(args.get(0)?).map_err(|e| format!("argument 1: {e}"))?;
    for i in 1..args.len() {
        let n = num(args.get(i)?).map_err(|e| format!("argument {}: {e}", i + 1))?;
        acc = arith(acc, n, int, float);
    }
    num_value(acc)
}

fn add(a: &Args<'_, '_>) -> Result<Value, String> {
    fold(a, i128::checked_add, |x, y| x + y)
}

fn sub(a: &Args<'_, '_>) -> Result<Value, String> {
    fold(a, i128::checked_sub, |x, y| x - y)
}

fn mul(a: &Args<'_, '_>) -> Result<Value, String> {
    fold(a, i128::checked_mul, |x, y| x * y)
}

fn round(a: &Args<'_, '_>) -> Result<Value, String> {
    let n = num(a.get(0)?)?;
    let decimals = match a.opt(1)? {
        None => 0,
        Some(v) => int_arg(v, "decimals")?,
    };
    if decimals.abs() > 15 {
        return Err(format!("decimals must be between -15 and 15, got {decimals}"));
    }
    match n {
        Num::Int(i) if decimals >= 0 => num_value(Num::Int(i)),
        _ => {
            let x = as_f64(n);
            if decimals <= 0 {
                let scale = 10f64.powi((-decimals) as i32);
                let r = (x / scale).round() * scale;
                if r.abs() < 9.0e15 { num_value(Num::Int(r as i128)) } else { num_value(Num::Float(r)) }
            } else {
                let scale = 10f64.powi(decimals as i32);
                let r = (x * scale).round() / scale;
                // Clean binary noise: 0.30000000000000004 → 0.3.
                let cleaned: f64 = format!("{r:.prec$}", prec = decimals as usize).parse().unwrap_or(r);
                num_value(Num::Float(cleaned))
            }
        }
    }
}

/// An integer argument (a JSON integer, an integral float, or text holding one).
fn int_arg(v: &Value, what: &str) -> Result<i64, String> {
    match num(v) {
        Ok(Num::Int(i)) => i64::try_from(i).map_err(|_| format!("{what} is out of range")),
        Ok(Num::Float(f)) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(f as i64),
        _ => Err(format!("{what} must be a whole number, got {}", short(v))),
    }
}

/// A value shown in a message, shortened.
fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 60 { format!("{}...", s.chars().take(57).collect::<String>()) } else { s }
}

// ---- text ----

fn lowercase(a: &Args<'_, '_>) -> Result<Value, String> {
    Ok(Value::String(text(a.get(0)?)?.to_lowercase()))
}

fn uppercase(a: &Args<'_, '_>) -> Result<Value, String> {
    Ok(Value::String(text(a.get(0)?)?.to_uppercase()))
}

fn trim(a: &Args<'_, '_>) -> Result<Value, String> {
    Ok(Value::String(text(a.get(0)?)?.trim().to_string()))
}

fn truncate(a: &Args<'_, '_>) -> Result<Value, String> {
    let s = text(a.get(0)?)?;
    let max = int_arg(a.get(1)?, "the length")?;
    if max < 0 {
        return Err(format!("the length must not be negative, got {max}"));
    }
    let max = max as usize;
    let suffix = match a.opt(2)? {
        None => Cow::Borrowed(""),
        Some(v) => text(v).map_err(|e| format!("the suffix: {e}"))?,
    };
    if s.chars().count() <= max {
        return Ok(Value::String(s.into_owned()));
    }
    let suffix_len = suffix.chars().count();
    if suffix_len >= max {
        return Ok(Value::String(suffix.chars().take(max).collect()));
    }
    let mut out: String = s.chars().take(max - suffix_len).collect();
    out.push_str(&suffix);
    Ok(Value::String(out))
}

fn normalize_email(a: &Args<'_, '_>) -> Result<Value, String> {
    Ok(Value::String(text(a.get(0)?)?.trim().to_lowercase()))
}

fn slug(a: &Args<'_, '_>) -> Result<Value, String> {
    let s = text(a.get(0)?)?;
    let ascii = deunicode::deunicode(&s).to_lowercase();
    let mut out = String::with_capacity(ascii.len());
    let mut pending_dash = false;
    for c in ascii.chars() {
        if c.is_ascii_alphanumeric() {
            if pending_dash && !out.is_empty() {
                out.push('-');
            }
            pending_dash = false;
            out.push(c);
        } else {
            pending_dash = true;
        }
    }
    Ok(Value::String(out))
}

/// RFC 3986 unreserved characters stay; everything else is percent-encoded.
const QUERY_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

fn urlencode(a: &Args<'_, '_>) -> Result<Value, String> {
    let s = text(a.get(0)?)?;
    Ok(Value::String(utf8_percent_encode(&s, QUERY_COMPONENT).to_string()))
}

fn sha256(a: &Args<'_, '_>) -> Result<Value, String> {
    let s = text_any(a.get(0)?);
    Ok(Value::String(hex::encode(Sha256::digest(s.as_bytes()))))
}

fn concat(a: &Args<'_, '_>) -> Result<Value, String> {
    let mut out = String::new();
    for i in 0..a.len() {
        out.push_str(&text_any(a.get(i)?));
    }
    Ok(Value::String(out))
}

fn split(a: &Args<'_, '_>) -> Result<Value, String> {
    let s = text(a.get(0)?)?;
    let sep = match a.opt(1)? {
        None => Cow::Borrowed(","),
        Some(v) => text(v).map_err(|e| format!("the separator: {e}"))?,
    };
    if s.is_empty() {
        return Ok(Value::Array(vec![]));
    }
    if sep.is_empty() {
        return Ok(Value::Array(s.chars().map(|c| Value::String(c.to_string())).collect()));
    }
    Ok(Value::Array(s.split(sep.as_ref()).map(|p| Value::String(p.to_string())).collect()))
}

fn join(a: &Args<'_, '_>) -> Result<Value, String> {
    let sep = match a.opt(1)? {
        None => Cow::Borrowed(","),
        Some(v) => text(v).map_err(|e| format!("the separator: {e}"))?,
    };
    match a.get(0)? {
        Value::Null => Ok(Value::String(String::new())),
        Value::Array(items) => Ok(Value::String(items.iter().map(text_any).collect::<Vec<_>>().join(&sep))),
        other => Err(format!("expected a list, got {}", kind(other))),
    }
}

// ---- values and lists ----

fn default(a: &Args<'_, '_>) -> Result<Value, String> {
    let n = a.len();
    for i in 0..n {
        let p = a.h.param(i).expect("arity checked at compile time");
        if p.is_value_missing() {
            continue;
        }
        match p.value() {
            Value::Null => continue,
            Value::String(s) if s.is_empty() => continue,
            v => return Ok(v.clone()),
        }
    }
    // Nothing usable: the last argument as it is (it may be null or "").
    a.get(n - 1).cloned()
}

fn json(a: &Args<'_, '_>) -> Result<Value, String> {
    Ok(Value::String(a.get(0)?.to_string()))
}

fn jsonpath(a: &Args<'_, '_>) -> Result<Value, String> {
    let v = a.get(0)?;
    let path = match a.get(1)? {
        Value::String(p) => p,
        other => {
            return Err(format!("the path must be text such as '$.items[*].sku', got {}", kind(other)));
        }
    };
    super::jsonpath(v, path).map(Value::Array)
}

fn first(a: &Args<'_, '_>) -> Result<Value, String> {
    match a.get(0)? {
        Value::Null => Ok(Value::Null),
        Value::Array(items) => Ok(items.first().cloned().unwrap_or(Value::Null)),
        other => Err(format!("expected a list, got {}", kind(other))),
    }
}

fn len(a: &Args<'_, '_>) -> Result<Value, String> {
    match a.get(0)? {
        Value::Null => Ok(Value::from(0)),
        Value::Array(items) => Ok(Value::from(items.len())),
        Value::Object(m) => Ok(Value::from(m.len())),
        Value::String(s) => Ok(Value::from(s.chars().count())),
        other => Err(format!("expected a list, text or an object, got {}", kind(other))),
    }
}

/// Equality where numbers compare by value (1 and 1.0 are equal).
fn loose_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (number_to_num(x), number_to_num(y)) {
            (Num::Int(i), Num::Int(j)) => i == j,
            (x, y) => as_f64(x) == as_f64(y),
        },
        _ => a == b,
    }
}

fn contains(a: &Args<'_, '_>) -> Result<Value, String> {
    let hay = a.get(0)?;
    let needle = a.get(1)?;
    let found = match hay {
        Value::Null => false,
        Value::Array(items) => items.iter().any(|i| loose_eq(i, needle)),
        Value::String(s) => s.contains(text(needle).map_err(|e| format!("the value to find: {e}"))?.as_ref()),
        Value::Object(m) => m.contains_key(text(needle).map_err(|e| format!("the key to find: {e}"))?.as_ref()),
        other => {
            return Err(format!("expected a list, text or an object, got {}", kind(other)));
        }
    };
    Ok(Value::Bool(found))
}

// ---- times ----

fn now(a: &Args<'_, '_>) -> Result<Value, String> {
    let t = time::now(a.root)?;
    time_out(a, t, 0)
}

fn date(a: &Args<'_, '_>) -> Result<Value, String> {
    let t = time::parse_time(a.get(0)?, a.root)?;
    time_out(a, t, 1)
}

fn time_out(a: &Args<'_, '_>, t: chrono::DateTime<chrono::FixedOffset>, format_at: usize) -> Result<Value, String> {
    let positional = match a.opt(format_at)? {
        None | Some(Value::Null) => None,
        Some(v) => Some(text(v).map_err(|e| format!("the format: {e}"))?.into_owned()),
    };
    let format = a.hash_text("format")?.or(positional);
    let add = a.hash_text("add")?;
    let tz = a.hash_text("tz")?;
    time::transform(t, add.as_deref(), tz.as_deref(), format.as_deref())
}

// ---- contact data ----

fn e164(a: &Args<'_, '_>) -> Result<Value, String> {
    let raw = a.get(0)?;
    let s = text(raw)?;
    let region = match a.opt(1)? {
        None | Some(Value::Null) => None,
        Some(v) => {
            let r = text(v).map_err(|e| format!("the region: {e}"))?;
            if r.trim().is_empty() { None } else { Some(parse_region(&r)?) }
        }
    };
    let invalid = || {
        let mut m = format!("{} is not a valid phone number", short(raw));
        match region {
            Some(r) => m.push_str(&format!(" for region {r:?}")),
            None if !s.trim_start().starts_with('+') => {
                m.push_str("; numbers without a +country code need a default region, e.g. `{{e164 trigger.body.phone \"US\"}}`")
            }
            None => {}
        }
        m
    };
    if s.trim().is_empty() {
        return Err(invalid());
    }
    let number = phonenumber::parse(region, s.trim()).map_err(|_| invalid())?;
    if !phonenumber::is_valid(&number) {
        return Err(invalid());
    }
    Ok(Value::String(number.format().mode(phonenumber::Mode::E164).to_string()))
}

/// A two-letter region code (`GB`, `us`).
pub(crate) fn parse_region(s: &str) -> Result<phonenumber::country::Id, String> {
    s.trim()
        .to_ascii_uppercase()
        .parse::<phonenumber::country::Id>()
        .map_err(|_| format!("unknown region {s:?}; use a two-letter country code such as \"GB\" or \"US\""))
}
