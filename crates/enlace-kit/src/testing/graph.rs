//! A strict check of Graph API requests against Meta's own description of its nodes: the
//! SDK-codegen JSON in `../shared/vendor-specs/meta/` (`<Node>.json`: `apis[]` of `{method,
//! endpoint | name, params[{name, type, required}]}`; `enum_types.json`: the enums by name).
//! Meta publishes no OpenAPI document, so this is the "custom mock check" the vendor-specs
//! README describes: the `(node, method, endpoint)` is looked up, every parameter must be one
//! the description lists, required ones present, and each value of its type (`string`,
//! `bool`, `int`, `unsigned int`, `float`, `datetime`, `Object`, `map`, `list<T>`, or an enum
//! resolved through `enum_types.json`). Values may be JSON-typed (a JSON body) or text (a
//! form or a query string), as the Graph API takes both.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// The vendor descriptions' folder: `ENLACE_VENDOR_SPECS`, else `../shared/vendor-specs` next
/// to the repository, else the workplace's `/work/shared/vendor-specs`.
pub fn vendor_specs_dir() -> PathBuf {
    let candidates: Vec<PathBuf> = std::env::var_os("ENLACE_VENDOR_SPECS")
        .map(PathBuf::from)
        .into_iter()
        .chain([Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/vendor-specs"), PathBuf::from("/work/shared/vendor-specs")])
        .collect();
    candidates.iter().find(|p| p.join("meta").is_dir()).cloned().unwrap_or_else(|| {
        panic!("the vendor API descriptions are missing; set ENLACE_VENDOR_SPECS or put them in ../shared/vendor-specs/ next to the repository (looked in: {candidates:?})")
    })
}

/// Meta's description of some Graph API nodes, for checking requests.
pub struct GraphSpec {
    nodes: BTreeMap<String, Value>,
    enums: BTreeMap<String, Vec<String>>,
}

/// Parameters every Graph API call takes, beside the node's own.
const UNIVERSAL: [&str; 2] = ["fields", "access_token"];

impl GraphSpec {
    /// Reads `meta/<node>.json` for each node and `meta/enum_types.json`.
    pub fn load(nodes: &[&str]) -> GraphSpec {
        let dir = vendor_specs_dir().join("meta");
        let read = |f: &str| -> Value {
            let path = dir.join(f);
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
        };
        let nodes = nodes.iter().map(|n| (n.to_string(), read(&format!("{n}.json")))).collect();
        let mut enums = BTreeMap::new();
        for e in read("enum_types.json").as_array().cloned().unwrap_or_default() {
            if let (Some(name), Some(values)) = (e["name"].as_str(), e["values"].as_array()) {
                enums.insert(name.to_string(), values.iter().filter_map(|v| v.as_str().map(str::to_string)).collect());
            }
        }
        GraphSpec { nodes, enums }
    }

    /// The parameters the description lists for `method` on `node`'s `endpoint` (`""` for
    /// the node itself), or `None` when it lists no such call.
    pub fn params(&self, node: &str, method: &str, endpoint: &str) -> Option<Vec<Value>> {
        let apis = self.nodes.get(node)?["apis"].as_array()?;
        let api = apis.iter().find(|a| {
            a["method"].as_str() == Some(method)
                && match a["endpoint"].as_str() {
                    Some(e) => e == endpoint,
                    None => endpoint.is_empty(),
                }
        })?;
        Some(api["params"].as_array().cloned().unwrap_or_default())
    }

    /// The fields a node has (what `?fields=` may ask for).
    pub fn fields(&self, node: &str) -> Vec<String> {
        self.nodes
            .get(node)
            .and_then(|n| n["fields"].as_array())
            .into_iter()
            .flatten()
            .filter_map(|f| f["name"].as_str().map(str::to_string))
            .collect()
    }

    /// Checks one call: every problem found, or `Ok`.
    pub fn check(&self, node: &str, method: &str, endpoint: &str, params: &Map<String, Value>) -> Result<(), Vec<String>> {
        let Some(spec) = self.params(node, method, endpoint) else {
            return Err(vec![format!("Meta's description of {node} has no {method} /{endpoint}")]);
        };
        let mut errs = vec![];
        for p in &spec {
            if p["required"].as_bool() == Some(true)
                && let Some(name) = p["name"].as_str()
                && !params.contains_key(name)
            {
                errs.push(format!("`{name}` is required"));
            }
        }
        for (name, value) in params {
            if UNIVERSAL.contains(&name.as_str()) {
                continue;
            }
            let Some(p) = spec.iter().find(|p| p["name"].as_str() == Some(name.as_str())) else {
                errs.push(format!("`{name}` is not a parameter of {method} {node}/{endpoint}"));
                continue;
            };
            let ty = p["type"].as_str().unwrap_or("string");
            if let Err(e) = self.value_of(ty, value) {
                errs.push(format!("`{name}` ({ty}): {e}"));
            }
        }
        if errs.is_empty() { Ok(()) } else { Err(errs) }
    }

    fn value_of(&self, ty: &str, v: &Value) -> Result<(), String> {
        // Text (a form, a query) holding JSON for structured types.
        let parsed;
        let v = match v {
            Value::String(s) if ty.starts_with("list<") || ty == "Object" || ty == "map" || ty == "list" => {
                parsed = serde_json::from_str::<Value>(s).map_err(|_| format!("`{s}` is not JSON"))?;
                &parsed
            }
            other => other,
        };
        let text = |v: &Value| v.as_str().map(str::to_string);
        match ty {
            "string" => text(v).map(|_| ()).ok_or_else(|| format!("{v} is not a string")),
            "bool" => match v {
                Value::Bool(_) => Ok(()),
                Value::String(s) if s == "true" || s == "false" => Ok(()),
                _ => Err(format!("{v} is not a boolean")),
            },
            "int" | "unsigned int" => {
                let n = match v {
                    Value::Number(n) => n.as_i64().map(|n| n as i128).or_else(|| n.as_u64().map(|n| n as i128)),
                    Value::String(s) => s.parse::<i128>().ok(),
                    _ => None,
                };
                match n {
                    Some(n) if ty == "unsigned int" && n < 0 => Err(format!("{v} is negative")),
                    Some(_) => Ok(()),
                    None => Err(format!("{v} is not an integer")),
                }
            }
            "float" => match v {
                Value::Number(_) => Ok(()),
                Value::String(s) if s.parse::<f64>().is_ok() => Ok(()),
                _ => Err(format!("{v} is not a number")),
            },
            "datetime" => match v {
                Value::Number(_) | Value::String(_) => Ok(()),
                _ => Err(format!("{v} is not a time")),
            },
            "Object" | "map" => v.is_object().then_some(()).ok_or_else(|| format!("{v} is not an object")),
            "list" => v.is_array().then_some(()).ok_or_else(|| format!("{v} is not a list")),
            t if t.starts_with("list<") && t.ends_with('>') => {
                let inner = &t[5..t.len() - 1];
                let items = v.as_array().ok_or_else(|| format!("{v} is not a list"))?;
                items.iter().try_for_each(|x| self.value_of(inner, x))
            }
            t => match self.enums.get(t) {
                Some(values) => {
                    let s = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    values.contains(&s).then_some(()).ok_or_else(|| format!("`{s}` is not one of {values:?}"))
                }
                // Another node (`Page`, `Photo`...): referenced by its id.
                None => match v {
                    Value::String(_) | Value::Number(_) => Ok(()),
                    _ => Err(format!("{v} is not an id")),
                },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn checks_names_types_and_enums() {
        let g = GraphSpec::load(&["Page"]);
        let ok = json!({"message": "Hello", "link": "https://example.com", "published": "true"});
        assert_eq!(g.check("Page", "POST", "feed", ok.as_object().unwrap()), Ok(()));
        let bad = json!({"mesage": "typo", "published": "yes", "backdated_time_granularity": "week"});
        let errs = g.check("Page", "POST", "feed", bad.as_object().unwrap()).unwrap_err();
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert!(errs.iter().any(|e| e.contains("`mesage` is not a parameter")), "{errs:?}");
        assert!(errs.iter().any(|e| e.contains("not a boolean")), "{errs:?}");
        assert!(errs.iter().any(|e| e.contains("`week` is not one of")), "{errs:?}");
        assert!(g.check("Page", "PUT", "feed", &Map::new()).is_err());
    }
}
