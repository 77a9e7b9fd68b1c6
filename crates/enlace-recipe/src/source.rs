//! Reading a recipe file: YAML or JSON into a `serde_json::Value`, remembering the line and
//! column of every value so that diagnostics can point at them.
//!
//! Both formats go through yaml-rust2's event parser (JSON is YAML's flow style), so one
//! code path gives positions for both. Plain YAML scalars are typed the YAML 1.2 core way
//! (`true`, `3`, `1.5`, `null`); quoted scalars stay strings.

use std::collections::HashMap;

use serde_json::{Map, Value};
use yaml_rust2::Yaml;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// Where a value sits in its file (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub line: u32,
    pub column: u32,
}

/// The position of every value, by path (`steps[1].with.url`).
#[derive(Debug, Clone, Default)]
pub struct SourceMap {
    positions: HashMap<String, Position>,
}

impl SourceMap {
    /// The position of the value at `path`, or of its nearest parent that has one.
    pub fn find(&self, path: &str) -> Option<Position> {
        let mut p = path;
        loop {
            if let Some(pos) = self.positions.get(p) {
                return Some(*pos);
            }
            if p.is_empty() {
                return None;
            }
            p = parent_path(p);
        }
    }

    /// The position of the key itself (for unknown keys), falling back to `find`.
    pub fn key(&self, path: &str) -> Option<Position> {
        self.positions.get(&format!("{path}#key")).copied().or_else(|| self.find(path))
    }
}

fn parent_path(p: &str) -> &str {
    match p.rfind(['.', '[']) {
        Some(i) => &p[..i],
        None => "",
    }
}

/// Joins a path and an object key: `steps[1]` + `with` = `steps[1].with`.
pub fn join_key(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_string() } else { format!("{path}.{key}") }
}

/// Joins a path and a list index: `steps` + 1 = `steps[1]`.
pub fn join_index(path: &str, index: usize) -> String {
    format!("{path}[{index}]")
}

/// A file that could not be read as YAML or JSON at all.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntaxError {
    pub position: Option<Position>,
    pub message: String,
}

/// Parses YAML or JSON text into a value and its source map. Exactly one document.
pub fn parse(text: &str) -> Result<(Value, SourceMap), SyntaxError> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    parser.load(&mut builder, true).map_err(|e| SyntaxError {
        position: Some(Position { line: e.marker().line() as u32, column: e.marker().col() as u32 + 1 }),
        message: e.info().to_string(),
    })?;
    if let Some(err) = builder.error {
        return Err(err);
    }
    match builder.docs.len() {
        0 => Err(SyntaxError { position: None, message: "the file is empty; a recipe needs at least `id`, `trigger` and `steps`".into() }),
        1 => Ok((builder.docs.pop().unwrap_or(Value::Null), builder.map)),
        n => Err(SyntaxError { position: None, message: format!("the file holds {n} documents; keep one recipe per file") }),
    }
}

enum Frame {
    Seq { path: String, items: Vec<Value>, anchor: usize },
    Map { path: String, map: Map<String, Value>, key: Option<String>, anchor: usize },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    docs: Vec<Value>,
    map: SourceMap,
    anchors: HashMap<usize, Value>,
    error: Option<SyntaxError>,
}

impl Builder {
    /// The path the next value will take.
    fn next_path(&self) -> String {
        match self.stack.last() {
            None => String::new(),
            Some(Frame::Seq { path, items, .. }) => join_index(path, items.len()),
            Some(Frame::Map { path, key: Some(k), .. }) => join_key(path, k),
            Some(Frame::Map { path, .. }) => path.clone(),
        }
    }

    fn fail(&mut self, mark: Marker, message: String) {
        if self.error.is_none() {
            self.error = Some(SyntaxError { position: Some(pos(mark)), message });
        }
    }

    /// Places a finished value into its parent (or as a document).
    fn place(&mut self, value: Value, mark: Marker) {
        let mut problem = None;
        match self.stack.last_mut() {
            None => self.docs.push(value),
            Some(Frame::Seq { items, .. }) => items.push(value),
            Some(Frame::Map { map, key, path, .. }) => match key.take() {
                Some(k) => {
                    map.insert(k, value);
                }
                None => {
                    // This value is a key.
                    let k = match value {
                        Value::String(s) => s,
                        Value::Number(n) => n.to_string(),
                        Value::Bool(b) => b.to_string(),
                        Value::Null => "null".to_string(),
                        _ => {
                            let shown = if path.is_empty() { "(top level)".to_string() } else { path.clone() };
                            problem = Some(format!(
                                "{shown}: a key must be a plain word; if this is a template, put it in quotes: \"{{{{...}}}}\""
                            ));
                            String::new()
                        }
                    };
                    let key_path = join_key(path, &k);
                    if map.contains_key(&k) {
                        problem = Some(format!("{key_path}: the key `{k}` appears twice"));
                    }
                    self.map.positions.insert(format!("{key_path}#key"), pos(mark));
                    *key = Some(k);
                }
            },
        }
        if let Some(p) = problem {
            self.fail(mark, p);
        }
    }

    fn is_key_position(&self) -> bool {
        matches!(self.stack.last(), Some(Frame::Map { key: None, .. }))
    }
}

fn pos(mark: Marker) -> Position {
    Position { line: mark.line() as u32, column: mark.col() as u32 + 1 }
}

fn scalar(text: String, style: TScalarStyle, tag: Option<Tag>) -> Value {
    if style != TScalarStyle::Plain {
        return Value::String(text);
    }
    if let Some(tag) = tag
        && tag.handle == "!!"
        && tag.suffix == "str"
    {
        return Value::String(text);
    }
    match Yaml::from_str(&text) {
        Yaml::Integer(i) => Value::from(i),
        Yaml::Real(r) => match r.parse::<f64>() {
            Ok(f) if f.is_finite() => serde_json::Number::from_f64(f).map(Value::Number).unwrap_or(Value::String(text)),
            _ => Value::String(text),
        },
        Yaml::Boolean(b) => Value::Bool(b),
        Yaml::Null => Value::Null,
        _ => Value::String(text),
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        match ev {
            Event::Scalar(text, style, anchor, tag) => {
                let value = scalar(text, style, tag);
                if !self.is_key_position() {
                    let path = self.next_path();
                    self.map.positions.insert(path, pos(mark));
                }
                if anchor > 0 {
                    self.anchors.insert(anchor, value.clone());
                }
                self.place(value, mark);
            }
            Event::Alias(id) => match self.anchors.get(&id).cloned() {
                Some(v) => {
                    if !self.is_key_position() {
                        let path = self.next_path();
                        self.map.positions.insert(path, pos(mark));
                    }
                    self.place(v, mark)
                }
                None => self.fail(mark, "an alias refers to an unknown anchor".into()),
            },
            Event::SequenceStart(anchor, _) => {
                if self.is_key_position() {
                    self.fail(mark, "a key must be a plain word, not a list".into());
                    return;
                }
                let path = self.next_path();
                self.map.positions.insert(path.clone(), pos(mark));
                self.stack.push(Frame::Seq { path, items: vec![], anchor });
            }
            Event::MappingStart(anchor, _) => {
                if self.is_key_position() {
                    let p = self.next_path();
                    self.fail(
                        mark,
                        format!(
                            "{}: a key must be a plain word, not a map; a template written without quotes (`{{{{...}}}}`) reads as a map in YAML: put it in quotes",
                            if p.is_empty() { "(top level)" } else { &p }
                        ),
                    );
                    return;
                }
                let path = self.next_path();
                self.map.positions.insert(path.clone(), pos(mark));
                self.stack.push(Frame::Map { path, map: Map::new(), key: None, anchor });
            }
            Event::SequenceEnd => {
                if let Some(Frame::Seq { items, anchor, .. }) = self.stack.pop() {
                    let v = Value::Array(items);
                    if anchor > 0 {
                        self.anchors.insert(anchor, v.clone());
                    }
                    self.place(v, mark);
                }
            }
            Event::MappingEnd => {
                if let Some(Frame::Map { map, anchor, .. }) = self.stack.pop() {
                    let v = Value::Object(map);
                    if anchor > 0 {
                        self.anchors.insert(anchor, v.clone());
                    }
                    self.place(v, mark);
                }
            }
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentStart | Event::DocumentEnd => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn yaml_values_and_positions() {
        let text = "id: demo\nenabled: true\nsteps:\n  - id: a\n    delay: 2d\n  - id: b\n    n: 3\n    s: '3'\n";
        let (v, map) = parse(text).unwrap();
        assert_eq!(v, json!({"id": "demo", "enabled": true, "steps": [{"id": "a", "delay": "2d"}, {"id": "b", "n": 3, "s": "3"}]}));
        assert_eq!(map.find("steps[1].n").unwrap().line, 7);
        assert_eq!(map.find("steps[0].delay").unwrap().line, 5);
        assert_eq!(map.key("enabled").unwrap().line, 2);
        // A path with no value of its own falls back to its parent.
        assert_eq!(map.find("steps[1].missing").unwrap().line, 6);
    }

    #[test]
    fn json_with_tabs_and_positions() {
        let text = "{\n\t\"id\": \"demo\",\n\t\"steps\": [\n\t\t{\"id\": \"a\", \"n\": 1.5, \"ok\": false, \"x\": null}\n\t]\n}\n";
        let (v, map) = parse(text).unwrap();
        assert_eq!(v, json!({"id": "demo", "steps": [{"id": "a", "n": 1.5, "ok": false, "x": null}]}));
        assert_eq!(map.find("steps[0].n").unwrap().line, 4);
    }

    #[test]
    fn unquoted_template_is_explained() {
        let err = parse("filter: {{eq a b}}\n").unwrap_err();
        assert!(err.message.contains("put it in quotes"), "{}", err.message);
        assert_eq!(err.position.unwrap().line, 1);
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let err = parse("id: a\nid: b\n").unwrap_err();
        assert!(err.message.contains("appears twice"), "{}", err.message);
    }

    #[test]
    fn syntax_error_has_a_position() {
        let err = parse("id: [a\nname: b\n").unwrap_err();
        assert!(err.position.is_some());
    }

    #[test]
    fn anchors_and_aliases() {
        let (v, _) = parse("a: &x {k: 1}\nb: *x\n").unwrap();
        assert_eq!(v, json!({"a": {"k": 1}, "b": {"k": 1}}));
    }
}
