//! A small JSON Schema checker for the subset connectors declare (what schemars writes and
//! what declarative manifests produce): `type` (one or a list), `properties`, `required`,
//! `additionalProperties` (false or a schema), `items`, `enum`, `const`, `$ref` into
//! `#/$defs/` (or `#/definitions/`), `anyOf`, `oneOf`, `allOf`, `minimum`/`maximum`,
//! `minLength`/`maxLength`, `minItems`/`maxItems`. Formats are not checked.
//!
//! Two uses: [`validate`] says where a value breaks a schema (recorded fixtures and samples
//! against output schemas, in the conformance test and when a declarative connector loads),
//! and [`check_schema`] says where a schema itself is malformed (an unknown type, a
//! `required` name that is no property, a `$ref` that goes nowhere).

use serde_json::{Map, Value};

const TYPES: [&str; 7] = ["string", "integer", "number", "boolean", "array", "object", "null"];

/// Every place `value` breaks `schema`, as `path: problem` lines (empty when it conforms).
/// Paths are written like recipe paths: `items[2].name`; the value itself is `$`.
pub fn validate(value: &Value, schema: &Value) -> Vec<String> {
    let mut out = vec![];
    check_value(value, schema, schema, "$", &mut out);
    out
}

fn join(path: &str, key: &str) -> String {
    if path == "$" { key.to_string() } else { format!("{path}.{key}") }
}

fn resolve<'v>(schema: &'v Value, root: &'v Value) -> Option<&'v Value> {
    let Some(r) = schema.get("$ref").and_then(Value::as_str) else { return Some(schema) };
    let name = r.strip_prefix("#/$defs/").or_else(|| r.strip_prefix("#/definitions/"))?;
    root.get("$defs").and_then(|d| d.get(name)).or_else(|| root.get("definitions").and_then(|d| d.get(name)))
}

fn type_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_matches(t: &str, v: &Value) -> bool {
    let actual = type_of(v);
    t == actual || (t == "number" && actual == "integer")
}

fn check_value(v: &Value, schema: &Value, root: &Value, path: &str, out: &mut Vec<String>) {
    let schema = match schema {
        Value::Bool(true) => return,
        Value::Bool(false) => return out.push(format!("{path}: no value is allowed here")),
        _ => match resolve(schema, root) {
            Some(s) => s,
            None => return out.push(format!("{path}: the schema's `$ref` points nowhere")),
        },
    };
    if let Some(t) = schema.get("type") {
        let types: Vec<&str> = match t {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        if !types.is_empty() && !types.iter().any(|t| type_matches(t, v)) {
            return out.push(format!("{path}: must be {}, found {}", types.join(" or "), type_of(v)));
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(v)
    {
        out.push(format!("{path}: {v} is not one of {}", Value::Array(allowed.clone())));
    }
    if let Some(c) = schema.get("const")
        && c != v
    {
        out.push(format!("{path}: must be {c}, found {v}"));
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(alts) = schema.get(key).and_then(Value::as_array) {
            let matching = alts.iter().filter(|a| validate_in(v, a, root).is_empty()).count();
            if matching == 0 || (key == "oneOf" && matching > 1) {
                let n = if matching == 0 { "none" } else { "more than one" };
                out.push(format!("{path}: {n} of the `{key}` alternatives matches"));
            }
        }
    }
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for s in all {
            check_value(v, s, root, path, out);
        }
    }
    match v {
        Value::Object(obj) => check_object(obj, schema, root, path, out),
        Value::Array(list) => {
            if let Some(items) = schema.get("items") {
                for (i, item) in list.iter().enumerate() {
                    check_value(item, items, root, &format!("{path}[{i}]"), out);
                }
            }
            bound(schema, "minItems", "maxItems", list.len() as f64, "items", path, out);
        }
        Value::String(s) => bound(schema, "minLength", "maxLength", s.chars().count() as f64, "characters", path, out),
        Value::Number(n) => bound(schema, "minimum", "maximum", n.as_f64().unwrap_or(0.0), "", path, out),
        _ => {}
    }
}

fn validate_in(v: &Value, schema: &Value, root: &Value) -> Vec<String> {
    let mut out = vec![];
    check_value(v, schema, root, "$", &mut out);
    out
}

fn bound(schema: &Value, min: &str, max: &str, n: f64, unit: &str, path: &str, out: &mut Vec<String>) {
    let unit = if unit.is_empty() { String::new() } else { format!(" {unit}") };
    if let Some(m) = schema.get(min).and_then(Value::as_f64)
        && n < m
    {
        out.push(format!("{path}: at least {m}{unit} expected, found {n}"));
    }
    if let Some(m) = schema.get(max).and_then(Value::as_f64)
        && n > m
    {
        out.push(format!("{path}: at most {m}{unit} expected, found {n}"));
    }
}

fn check_object(obj: &Map<String, Value>, schema: &Value, root: &Value, path: &str, out: &mut Vec<String>) {
    let props = schema.get("properties").and_then(Value::as_object);
    if let Some(req) = schema.get("required").and_then(Value::as_array) {
        for r in req.iter().filter_map(Value::as_str) {
            if !obj.contains_key(r) {
                out.push(format!("{path}: the field `{r}` is required"));
            }
        }
    }
    for (k, fv) in obj {
        let p = join(path, k);
        match (props.and_then(|p| p.get(k)), schema.get("additionalProperties")) {
            (Some(ps), _) => check_value(fv, ps, root, &p, out),
            (None, Some(Value::Bool(false))) => out.push(format!("{p}: not a field of this schema")),
            (None, Some(extra)) => check_value(fv, extra, root, &p, out),
            (None, None) => {}
        }
    }
}

/// Every problem of the schema itself, as `path: problem` lines (the path in the schema).
pub fn check_schema(schema: &Value) -> Vec<String> {
    let mut out = vec![];
    check_node(schema, schema, "$", &mut out);
    out
}

fn check_node(node: &Value, root: &Value, path: &str, out: &mut Vec<String>) {
    let obj = match node {
        Value::Bool(_) => return,
        Value::Object(o) => o,
        other => return out.push(format!("{path}: a schema must be an object or a boolean, found {}", type_of(other))),
    };
    if obj.contains_key("$ref") && resolve(node, root).is_none() {
        out.push(format!("{path}: `$ref` {} points nowhere", obj["$ref"]));
    }
    match obj.get("type") {
        None => {}
        Some(Value::String(t)) if TYPES.contains(&t.as_str()) => {}
        Some(Value::Array(ts)) if ts.iter().all(|t| t.as_str().is_some_and(|t| TYPES.contains(&t))) => {}
        Some(t) => out.push(format!("{path}.type: {t} is not a JSON Schema type ({})", TYPES.join(", "))),
    }
    let props = obj.get("properties");
    if let Some(p) = props {
        match p.as_object() {
            Some(p) => {
                for (k, s) in p {
                    check_node(s, root, &format!("{path}.properties.{k}"), out);
                }
            }
            None => out.push(format!("{path}.properties: must be an object")),
        }
    }
    if let Some(req) = obj.get("required") {
        match req.as_array() {
            Some(list) => {
                for r in list {
                    match r.as_str() {
                        Some(name) if props.and_then(|p| p.get(name)).is_some() => {}
                        Some(name) => out.push(format!("{path}.required: `{name}` is required but is not among the properties")),
                        None => out.push(format!("{path}.required: {r} is not a field name")),
                    }
                }
            }
            None => out.push(format!("{path}.required: must be a list of field names")),
        }
    }
    if let Some(e) = obj.get("enum")
        && e.as_array().is_none_or(|a| a.is_empty())
    {
        out.push(format!("{path}.enum: must be a non-empty list"));
    }
    for key in ["items", "additionalProperties"] {
        if let Some(s) = obj.get(key) {
            check_node(s, root, &format!("{path}.{key}"), out);
        }
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(list) = obj.get(key) {
            match list.as_array() {
                Some(list) => {
                    for (i, s) in list.iter().enumerate() {
                        check_node(s, root, &format!("{path}.{key}[{i}]"), out);
                    }
                }
                None => out.push(format!("{path}.{key}: must be a list of schemas")),
            }
        }
    }
    for key in ["$defs", "definitions"] {
        if let Some(defs) = obj.get(key).and_then(Value::as_object) {
            for (k, s) in defs {
                check_node(s, root, &format!("{path}.{key}.{k}"), out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "id": {"type": "string", "minLength": 1},
                "count": {"type": ["integer", "null"]},
                "status": {"$ref": "#/$defs/Status"},
                "tags": {"type": "array", "items": {"type": "string"}}
            },
            "required": ["id", "status"],
            "additionalProperties": false,
            "$defs": {"Status": {"oneOf": [{"const": "sent"}, {"const": "queued"}]}}
        })
    }

    #[test]
    fn a_conforming_value_passes() {
        assert_eq!(validate(&json!({"id": "m1", "count": null, "status": "sent", "tags": ["a"]}), &schema()), Vec::<String>::new());
        assert_eq!(check_schema(&schema()), Vec::<String>::new());
    }

    #[test]
    fn every_break_is_named_with_its_path() {
        let v = json!({"id": "", "count": 1.5, "status": "lost", "tags": ["a", 2], "extra": true});
        assert_eq!(
            validate(&v, &schema()),
            [
                "id: at least 1 characters expected, found 0",
                "count: must be integer or null, found number",
                "status: none of the `oneOf` alternatives matches",
                "tags[1]: must be string, found integer",
                "extra: not a field of this schema",
            ]
        );
        assert_eq!(validate(&json!({}), &schema()), ["$: the field `id` is required", "$: the field `status` is required"]);
    }

    #[test]
    fn a_malformed_schema_is_named() {
        let s = json!({"type": "object", "properties": {"a": {"type": "text"}, "b": {"$ref": "#/$defs/Gone"}}, "required": ["c"]});
        assert_eq!(
            check_schema(&s),
            [
                "$.properties.a.type: \"text\" is not a JSON Schema type (string, integer, number, boolean, array, object, null)",
                "$.properties.b: `$ref` \"#/$defs/Gone\" points nowhere",
                "$.required: `c` is required but is not among the properties",
            ]
        );
    }
}
