//! The compile-time walk over a parsed template: checks every helper call against the
//! helpers recipes may use (name, block use, arity, named arguments, literal arguments),
//! collects the data paths the template reads, and rewrites every output expression
//! `{{EXPR}}` into `{{__text EXPR}}` so that values are written the same way everywhere
//! (lists and objects as compact JSON, a missing value an error naming its path).

use std::collections::HashMap;

use handlebars::template::{HelperTemplate, Parameter, Subexpression, Template as Ast, TemplateElement};
use handlebars::{Path, PathSeg};
use serde_json::Value;

use super::helpers::{BlockUse, SPECS, Spec, TEXT_HELPER, find_spec, parse_region};
use super::time;

/// What the walk found.
pub(crate) struct Analysis {
    /// The template rewritten for rendering.
    pub ast: Ast,
    /// Every rooted data path read, in order of first appearance.
    pub references: Vec<Vec<String>>,
    /// The raw text of every rooted path (`trigger.body.email`, `@root.vars.x`) and its
    /// segments, to explain which part of a missing path is missing.
    pub rooted: HashMap<String, Vec<String>>,
    /// Paths given as helper arguments: (helper, argument index, raw path).
    pub param_paths: Vec<(String, usize, String)>,
    /// When the template is one expression: that expression as a parameter to evaluate,
    /// and whether its text is HTML-escaped (false for `{{{...}}}`).
    pub single: Option<(Parameter, bool)>,
}

pub(crate) fn analyze(mut ast: Ast) -> Result<Analysis, String> {
    let single_at = {
        let mut meaningful =
            ast.elements.iter().enumerate().filter(|(_, e)| !matches!(e, TemplateElement::RawString(s) if s.trim().is_empty()));
        match (meaningful.next(), meaningful.next()) {
            (Some((i, TemplateElement::Expression(_) | TemplateElement::HtmlExpression(_))), None) => Some(i),
            _ => None,
        }
    };
    let mut w = Walker { references: vec![], rooted: HashMap::new(), param_paths: vec![] };
    w.template(&mut ast, 0)?;
    let single = single_at.and_then(|i| match &ast.elements[i] {
        TemplateElement::Expression(ht) => Some((ht.params[0].clone(), true)),
        TemplateElement::HtmlExpression(ht) => Some((ht.params[0].clone(), false)),
        _ => None,
    });
    Ok(Analysis { ast, references: w.references, rooted: w.rooted, param_paths: w.param_paths, single })
}

struct Walker {
    references: Vec<Vec<String>>,
    rooted: HashMap<String, Vec<String>>,
    param_paths: Vec<(String, usize, String)>,
}

impl Walker {
    /// `depth` counts the enclosing `#each` / `#with` blocks: inside them a plain path is
    /// relative to the block's value, not to the data's root.
    fn template(&mut self, t: &mut Ast, depth: usize) -> Result<(), String> {
        for el in t.elements.iter_mut() {
            match el {
                TemplateElement::RawString(_) | TemplateElement::Comment(_) => {}
                TemplateElement::Expression(ht) | TemplateElement::HtmlExpression(ht) => {
                    let value = self.expression(ht, depth)?;
                    ht.name = Parameter::Name(TEXT_HELPER.to_string());
                    ht.params = vec![value];
                    ht.hash = HashMap::new();
                }
                TemplateElement::HelperBlock(ht) => self.block(ht, depth)?,
                TemplateElement::PartialExpression(_) | TemplateElement::PartialBlock(_) => {
                    return Err("partials (`{{> name}}`) are not supported in recipe templates".to_string());
                }
                TemplateElement::DecoratorExpression(_) | TemplateElement::DecoratorBlock(_) => {
                    return Err("decorators (`{{* name}}`) are not supported in recipe templates".to_string());
                }
                _ => {
                    return Err("this template construct is not supported in recipe templates".to_string());
                }
            }
        }
        Ok(())
    }

    /// An output expression `{{...}}`: returns the parameter that computes its value.
    fn expression(&mut self, ht: &HelperTemplate, depth: usize) -> Result<Parameter, String> {
        if ht.params.is_empty() && ht.hash.is_empty() {
            match &ht.name {
                Parameter::Subexpression(s) => {
                    self.subexpression(s, depth)?;
                    Ok(ht.name.clone())
                }
                Parameter::Path(p) if find_spec(path_raw(p)).is_some() => {
                    let name = path_raw(p).to_string();
                    self.call(&name, &[], &HashMap::new(), false, depth)?;
                    Ok(Parameter::Subexpression(Subexpression::new(Parameter::Name(name), vec![], HashMap::new())))
                }
                Parameter::Path(p) => {
                    self.path(p, depth);
                    Ok(ht.name.clone())
                }
                Parameter::Name(n) => {
                    let name = n.clone();
                    self.call(&name, &[], &HashMap::new(), false, depth)?;
                    Ok(Parameter::Subexpression(Subexpression::new(Parameter::Name(name), vec![], HashMap::new())))
                }
                other => Ok(other.clone()),
            }
        } else {
            let name = helper_name(&ht.name)?;
            self.call(&name, &ht.params, &ht.hash, false, depth)?;
            Ok(Parameter::Subexpression(Subexpression::new(Parameter::Name(name), ht.params.clone(), ht.hash.clone())))
        }
    }

    fn block(&mut self, ht: &mut HelperTemplate, depth: usize) -> Result<(), String> {
        let name = helper_name(&ht.name)?;
        self.call(&name, &ht.params, &ht.hash, true, depth)?;
        let inner = if name == "each" || name == "with" { depth + 1 } else { depth };
        if let Some(t) = ht.template.as_mut() {
            self.template(t, inner)?;
        }
        if let Some(t) = ht.inverse.as_mut() {
            self.template(t, depth)?;
        }
        Ok(())
    }

    fn subexpression(&mut self, s: &Subexpression, depth: usize) -> Result<(), String> {
        match s.as_element() {
            TemplateElement::Expression(ht) => {
                if ht.params.is_empty() && ht.hash.is_empty() {
                    let name = helper_name(&ht.name)?;
                    if find_spec(&name).is_none() {
                        return Err(format!(
                            "`({name})` is not a helper call: parentheses are for helpers with arguments, such as `(lowercase {name})`; write `{name}` without them"
                        ));
                    }
                    self.call(&name, &[], &HashMap::new(), false, depth)
                } else {
                    let name = helper_name(&ht.name)?;
                    self.call(&name, &ht.params, &ht.hash, false, depth)
                }
            }
            _ => Err("unsupported subexpression".to_string()),
        }
    }

    fn call(
        &mut self,
        name: &str,
        params: &[Parameter],
        hash: &HashMap<String, Parameter>,
        block: bool,
        depth: usize,
    ) -> Result<(), String> {
        let spec = find_spec(name).ok_or_else(|| unknown_helper(name))?;
        check_call(spec, params, hash, block)?;
        check_literals(name, params, hash).map_err(|e| format!("`{name}`: {e}"))?;
        for (i, p) in params.iter().enumerate() {
            if let Parameter::Path(path) = p {
                self.param_paths.push((name.to_string(), i, path_raw(path).to_string()));
            }
            self.param(p, depth)?;
        }
        let mut keys: Vec<&String> = hash.keys().collect();
        keys.sort();
        for k in keys {
            self.param(&hash[k], depth)?;
        }
        Ok(())
    }

    fn param(&mut self, p: &Parameter, depth: usize) -> Result<(), String> {
        match p {
            Parameter::Path(path) => {
                self.path(path, depth);
                Ok(())
            }
            Parameter::Subexpression(s) => self.subexpression(s, depth),
            _ => Ok(()),
        }
    }

    fn path(&mut self, p: &Path, depth: usize) {
        let Path::Relative((segs, raw)) = p else {
            return; // @index, @key, ...: local to a block
        };
        let mut rooted = depth == 0;
        let mut ups = 0;
        let mut names = vec![];
        for seg in segs {
            match seg {
                PathSeg::Named(n) => names.push(n.clone()),
                PathSeg::Ruled(r) => match format!("{r:?}").as_str() {
                    "path_root" => rooted = true,
                    "path_up" => ups += 1,
                    _ => {}
                },
                _ => {}
            }
        }
        if ups >= depth {
            rooted = true;
        }
        if rooted && !names.is_empty() {
            if !self.references.contains(&names) {
                self.references.push(names.clone());
            }
            self.rooted.insert(raw.clone(), names);
        }
    }
}

pub(crate) fn path_raw(p: &Path) -> &str {
    match p {
        Path::Relative((_, raw)) => raw,
        Path::Local((_, _, raw)) => raw,
    }
}

fn helper_name(p: &Parameter) -> Result<String, String> {
    match p {
        Parameter::Name(n) => Ok(n.clone()),
        Parameter::Path(p) => Ok(path_raw(p).to_string()),
        _ => Err("a helper name must be a plain word, such as `lowercase`".to_string()),
    }
}

fn check_call(spec: &Spec, params: &[Parameter], hash: &HashMap<String, Parameter>, block: bool) -> Result<(), String> {
    let name = spec.name;
    match (spec.block, block) {
        (BlockUse::Never, true) => {
            return Err(format!("`{name}` cannot open a block; write `{{{{{}}}}}` instead of `{{{{#{name} ...}}}}`", spec.usage));
        }
        (BlockUse::Required, false) if name == "raw" => {
            return Err("`raw` is only used as a raw block: `{{{{raw}}}}...{{{{/raw}}}}`".to_string());
        }
        (BlockUse::Required, false) => {
            return Err(format!("`{name}` is a block helper: write `{{{{#{name} ...}}}}...{{{{/{name}}}}}`"));
        }
        _ => {}
    }
    let n = params.len();
    let ok = n >= spec.min && spec.max.is_none_or(|m| n <= m);
    if !ok {
        let expected = match spec.max {
            None => format!("at least {}", plural(spec.min)),
            Some(m) if m == spec.min => plural(m),
            Some(m) if m == spec.min + 1 => format!("{} or {m} arguments", spec.min),
            Some(m) => format!("{} to {m} arguments", spec.min),
        };
        return Err(format!("`{name}` takes {expected} ({}), got {n}", spec.usage));
    }
    let mut keys: Vec<&String> = hash.keys().collect();
    keys.sort();
    for k in keys {
        if !spec.hash.contains(&k.as_str()) {
            return Err(if spec.hash.is_empty() {
                format!("`{name}` takes no named arguments, got `{k}=`")
            } else {
                let allowed: Vec<String> = spec.hash.iter().map(|h| format!("`{h}=`")).collect();
                format!("`{name}` does not take `{k}=`; it takes {}", allowed.join(", "))
            });
        }
    }
    Ok(())
}

fn plural(n: usize) -> String {
    if n == 1 { "1 argument".to_string() } else { format!("{n} arguments") }
}

/// Arguments written as literals are checked now rather than at run time.
fn check_literals(name: &str, params: &[Parameter], hash: &HashMap<String, Parameter>) -> Result<(), String> {
    let lit = |i: usize| match params.get(i) {
        Some(Parameter::Literal(v)) => Some(v),
        _ => None,
    };
    let hlit = |k: &str| match hash.get(k) {
        Some(Parameter::Literal(v)) => Some(v),
        _ => None,
    };
    let text_lit = |v: &Value, what: &str| -> Result<String, String> {
        match v {
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) => Ok(n.to_string()),
            other => Err(format!("{what} must be text, got {other}")),
        }
    };
    match name {
        "jsonpath" => {
            if let Some(v) = lit(1) {
                match v {
                    Value::String(p) => super::parse_jsonpath(p)?,
                    other => {
                        return Err(format!("the path must be text such as '$.items[*].sku', got {other}"));
                    }
                }
            }
        }
        "date" | "now" => {
            let at = if name == "date" { 1 } else { 0 };
            if let Some(v) = lit(at).filter(|v| !v.is_null()) {
                time::parse_format(&text_lit(v, "the format")?)?;
            }
            if let Some(v) = hlit("format").filter(|v| !v.is_null()) {
                time::parse_format(&text_lit(v, "format=")?)?;
            }
            if let Some(v) = hlit("add").filter(|v| !v.is_null()) {
                time::parse_duration(&text_lit(v, "add=")?)?;
            }
            if let Some(v) = hlit("tz").filter(|v| !v.is_null()) {
                time::parse_tz(&text_lit(v, "tz=")?)?;
            }
            if name == "date"
                && let Some(Value::String(s)) = lit(0)
                && !s.eq_ignore_ascii_case("now")
            {
                time::parse_time(&Value::String(s.clone()), &Value::Null)?;
            }
        }
        "e164" => {
            if let Some(v) = lit(1).filter(|v| !v.is_null()) {
                let r = text_lit(v, "the region")?;
                if !r.trim().is_empty() {
                    parse_region(&r)?;
                }
            }
        }
        "truncate" => {
            let whole = |v: &Value| match v {
                Value::String(s) => s.trim().parse::<u32>().is_ok(),
                v => v.as_u64().is_some_and(|n| n <= u32::MAX as u64),
            };
            if let Some(v) = lit(1)
                && !whole(v)
            {
                return Err(format!("the length must be a whole number of characters, got {v}"));
            }
        }
        "round" => {
            let whole = |v: &Value| v.as_i64().is_some() || v.as_str().is_some_and(|s| s.trim().parse::<i64>().is_ok());
            if let Some(v) = lit(1)
                && !whole(v)
            {
                return Err(format!("the number of decimals must be a whole number, got {v}"));
            }
        }
        _ => {}
    }
    Ok(())
}

/// Other names people reach for, from Liquid, Zapier and JavaScript.
const ALIASES: &[(&str, &str)] = &[
    ("lower", "lowercase"),
    ("downcase", "lowercase"),
    ("tolowercase", "lowercase"),
    ("upper", "uppercase"),
    ("upcase", "uppercase"),
    ("touppercase", "uppercase"),
    ("strip", "trim"),
    ("length", "len"),
    ("size", "len"),
    ("count", "len"),
    ("url_encode", "urlencode"),
    ("uri_encode", "urlencode"),
    ("encodeuricomponent", "urlencode"),
    ("escape", "urlencode"),
    ("format_date", "date"),
    ("formatdate", "date"),
    ("date_format", "date"),
    ("dateformat", "date"),
    ("tojson", "json"),
    ("to_json", "json"),
    ("stringify", "json"),
    ("hash", "sha256"),
    ("plus", "add"),
    ("minus", "sub"),
    ("subtract", "sub"),
    ("times", "mul"),
    ("multiply", "mul"),
    ("slugify", "slug"),
    ("parameterize", "slug"),
    ("coalesce", "default"),
    ("fallback", "default"),
    ("includes", "contains"),
    ("phone", "e164"),
    ("email", "normalize_email"),
    ("lowercase_email", "normalize_email"),
    ("append", "concat"),
];

fn unknown_helper(name: &str) -> String {
    let lower = name.to_lowercase();
    let mut scored: Vec<(usize, &str)> = SPECS
        .iter()
        .filter_map(|s| {
            let d = levenshtein(&lower, s.name);
            let close = d <= (s.name.len().max(lower.len()) / 3).max(1);
            let affix = lower.len() >= 3 && (s.name.starts_with(&lower) || lower.starts_with(s.name) && s.name.len() >= 3);
            (close || affix).then_some((d, s.name))
        })
        .collect();
    for (alias, target) in ALIASES {
        if *alias == lower && !scored.iter().any(|(_, n)| n == target) {
            scored.push((0, target));
        }
    }
    scored.sort();
    scored.dedup_by(|a, b| a.1 == b.1);
    let names: Vec<String> = scored.iter().take(3).map(|(_, n)| format!("`{n}`")).collect();
    match names.len() {
        0 => {
            let all: Vec<&str> = SPECS.iter().map(|s| s.name).collect();
            format!("unknown helper `{name}`; the helpers are: {}", all.join(", "))
        }
        1 => format!("unknown helper `{name}`; did you mean {}?", names[0]),
        n => format!("unknown helper `{name}`; did you mean {} or {}?", names[..n - 1].join(", "), names[n - 1]),
    }
}

fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        cur[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}
