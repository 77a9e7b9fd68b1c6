use insta::assert_snapshot;
use serde_json::{Value, json};

use super::*;

/// The example data of `docs/templates.md`.
fn data() -> Value {
    json!({
      "trigger": {
        "body": {
          "first_name": "Ada",
          "email": "  Ada.Lovelace@Example.COM ",
          "phone": "020 7946 0018",
          "consent": true,
          "age": 36,
          "tags": ["vip", "beta"],
          "title": "Héllo, Wörld! Ünïcode & more",
          "note": "",
          "coupon": null,
          "plan": "pro",
          "signed_up_at": "2024-05-01T09:30:00Z",
          "cart": {
            "total": 42.5,
            "count": 3,
            "items": [
              {"sku": "A-1", "qty": 2, "price": 10},
              {"sku": "B-2", "qty": 1, "price": 22.5}
            ]
          }
        }
      },
      "steps": {
        "post": {"status": 201, "body": {"id": "gr_981"}}
      },
      "vars": {
        "prices": {"free": 0, "pro": 29}
      },
      "run": {
        "id": "run_01HX",
        "recipe": "greet-signups",
        "started_at": "2024-05-01T10:00:00Z",
        "attempt": 1,
        "now": "2024-05-01T10:00:00Z"
      }
    })
}

fn value(src: &str) -> Value {
    let t = Engine::global().compile(src).unwrap_or_else(|e| panic!("{src:?} does not compile: {e}"));
    t.render_value(&data()).unwrap_or_else(|e| panic!("{src:?} does not render: {e}"))
}

fn string(src: &str) -> String {
    Engine::global().compile(src).unwrap().render_string(&data()).unwrap()
}

fn compile_err(src: &str) -> String {
    match Engine::global().compile(src) {
        Ok(_) => panic!("{src:?} should not compile"),
        Err(e) => e.message,
    }
}

fn render_err(src: &str) -> String {
    render_err_with(src, &data())
}

fn render_err_with(src: &str, data: &Value) -> String {
    let t = Engine::global().compile(src).unwrap_or_else(|e| panic!("{src:?} does not compile: {e}"));
    match t.render_value(data) {
        Ok(v) => panic!("{src:?} should fail, gave {v}"),
        Err(e) => {
            // render_string fails the same way.
            assert_eq!(t.render_string(data).unwrap_err(), e, "{src:?}");
            e.message
        }
    }
}

// ---- the documentation's examples ----

/// Every `key: TEMPLATE   # → JSON` line of docs/templates.md renders as documented, against
/// the documented example data.
#[test]
fn docs_examples_hold() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/templates.md");
    let doc = std::fs::read_to_string(path).expect("docs/templates.md");
    let start = doc.find("## Example data").expect("an example data section");
    let json_start = doc[start..].find("```json\n").expect("a json block") + start + 8;
    let json_end = doc[json_start..].find("```").unwrap() + json_start;
    let documented: Value = serde_json::from_str(&doc[json_start..json_end]).expect("the example data is JSON");
    assert_eq!(documented, data(), "the docs' example data and the tests' differ");

    let mut checked = 0;
    let mut in_yaml = false;
    for line in doc.lines() {
        if line.starts_with("```") {
            in_yaml = line == "```yaml";
            continue;
        }
        if !in_yaml {
            continue;
        }
        let Some((lhs, expected)) = line.split_once("# →") else {
            continue;
        };
        let Some((_, quoted)) = lhs.split_once(": ") else { panic!("bad example line {line:?}") };
        let quoted = quoted.trim();
        let src = if let Some(inner) = quoted.strip_prefix('\'').and_then(|q| q.strip_suffix('\'')) {
            inner.replace("''", "'")
        } else {
            serde_json::from_str::<String>(quoted).unwrap_or_else(|_| panic!("bad quoting in {line:?}"))
        };
        let expected: Value = serde_json::from_str(expected.trim()).unwrap_or_else(|_| panic!("bad result in {line:?}"));
        let got = value(&src);
        assert_eq!(got, expected, "docs example {src:?}");
        // Also the same type, not only an equal value: 50.0 stays a float, 4 an integer.
        assert_eq!(got.to_string(), expected.to_string(), "docs example {src:?}");
        checked += 1;
    }
    assert!(checked > 80, "only {checked} examples found");
}

// ---- typed single expressions ----

#[test]
fn single_expression_keeps_json_type() {
    assert_eq!(value("{{trigger.body.cart.total}}"), json!(42.5));
    assert_eq!(value("{{trigger.body.cart.count}}"), json!(3));
    assert_eq!(value("{{trigger.body.consent}}"), json!(true));
    assert_eq!(value("{{eq trigger.body.consent true}}"), json!(true));
    assert_eq!(value("{{trigger.body.tags}}"), json!(["vip", "beta"]));
    assert_eq!(value("{{jsonpath trigger.body '$.cart.items[*].sku'}}"), json!(["A-1", "B-2"]));
    assert_eq!(value("{{trigger.body.cart.items.1}}"), json!({"sku": "B-2", "qty": 1, "price": 22.5}));
    assert_eq!(value("{{trigger.body.coupon}}"), Value::Null);
    assert_eq!(value("{{default trigger.body.nothing null}}"), Value::Null);
    assert_eq!(value("{{trigger.body.first_name}}"), json!("Ada"));
    assert_eq!(value("  {{ trigger.body.cart.total }}\n"), json!(42.5), "whitespace around is allowed");
    assert_eq!(value("{{{trigger.body.cart.total}}}"), json!(42.5));
    assert_eq!(value("{{~trigger.body.cart.count~}}"), json!(3));
    assert_eq!(value("{{now}}"), json!("2024-05-01T10:00:00Z"), "a helper without arguments");
    assert_eq!(value("{{(lowercase trigger.body.first_name)}}"), json!("ada"));
}

#[test]
fn mixed_text_and_literals_are_strings() {
    assert_eq!(value("Hi {{trigger.body.first_name}}!"), json!("Hi Ada!"));
    assert_eq!(value("{{trigger.body.cart.count}}{{trigger.body.cart.count}}"), json!("33"));
    assert_eq!(value("{{trigger.body.cart.total}} EUR"), json!("42.5 EUR"));
    assert_eq!(value("tags: {{trigger.body.tags}}"), json!(r#"tags: ["vip","beta"]"#));
    assert_eq!(value("obj: {{trigger.body.cart.items.0}}"), json!(r#"obj: {"sku":"A-1","qty":2,"price":10}"#));
    assert_eq!(value("[{{trigger.body.coupon}}]"), json!("[]"));
    assert_eq!(value("{{#if trigger.body.consent}}{{trigger.body.cart.count}}{{/if}}"), json!("3"), "a block is not a single expression");
    assert_eq!(value("no braces: 42"), json!("no braces: 42"));
    assert_eq!(value(""), json!(""));
    assert_eq!(value(r"\{{not a template}}"), json!("{{not a template}}"));
}

#[test]
fn render_string_of_single_expressions() {
    assert_eq!(string("{{trigger.body.tags}}"), r#"["vip","beta"]"#);
    assert_eq!(string("{{trigger.body.cart.items.0}}"), r#"{"sku":"A-1","qty":2,"price":10}"#);
    assert_eq!(string("{{trigger.body.cart.total}}"), "42.5");
    assert_eq!(string("{{trigger.body.consent}}"), "true");
    assert_eq!(string("{{trigger.body.coupon}}"), "");
    assert_eq!(string("{{trigger.body.first_name}}"), "Ada");
    assert_eq!(string("plain"), "plain");
}

#[test]
fn template_kinds() {
    let e = Engine::global();
    let lit = e.compile("just text").unwrap();
    assert!(lit.is_literal() && !lit.is_single_expression());
    assert_eq!(lit.source(), "just text");
    let single = e.compile(" {{add 1 2}} ").unwrap();
    assert!(!single.is_literal() && single.is_single_expression());
    let mixed = e.compile("a {{b}}").unwrap();
    assert!(!mixed.is_literal() && !mixed.is_single_expression());
    let two = e.compile("{{a}}{{b}}").unwrap();
    assert!(!two.is_single_expression());
    let block = e.compile("{{#if a}}x{{/if}}").unwrap();
    assert!(!block.is_single_expression());
    let escaped = e.compile(r"\{{a}}").unwrap();
    assert!(!escaped.is_literal() && !escaped.is_single_expression());
    assert_eq!(format!("{single:?}"), r#"Template { source: " {{add 1 2}} ", html: false }"#);
    assert_eq!(single.clone().source(), " {{add 1 2}} ");
}

// ---- strict mode ----

#[test]
fn missing_path_is_an_error() {
    assert_snapshot!(render_err("{{trigger.body.missing}}"), @r#"`trigger.body.missing` is missing (`trigger.body` has no `missing`); write `{{default trigger.body.missing "..."}}` if it is optional"#);
    assert_snapshot!(render_err("Hi {{steps.send.body.id}}"), @r#"`steps.send.body.id` is missing (`steps` has no `send`); write `{{default steps.send.body.id "..."}}` if it is optional"#);
    assert_snapshot!(render_err("{{trigger.body.first_name.x}}"), @r#"`trigger.body.first_name.x` is missing (`trigger.body.first_name` is text, not an object); write `{{default trigger.body.first_name.x "..."}}` if it is optional"#);
    assert_snapshot!(render_err("{{trigger.body.cart.items.5.sku}}"), @r#"`trigger.body.cart.items.5.sku` is missing (`trigger.body.cart.items` is a list of 2 items); write `{{default trigger.body.cart.items.5.sku "..."}}` if it is optional"#);
    assert_snapshot!(render_err("{{#each trigger.body.lines}}{{sku}}{{/each}}"), @r#"`trigger.body.lines` is missing (`trigger.body` has no `lines`); write `{{default trigger.body.lines "..."}}` if it is optional"#);
    assert_snapshot!(render_err("{{#each trigger.body.cart.items}}{{colour}}{{/each}}"), @r#"`colour` is missing; write `{{default colour "..."}}` if it is optional"#);
    assert_snapshot!(render_err("{{eq trigger.body.agreed true}}"), @r#"`eq`: `trigger.body.agreed` is missing (`trigger.body` has no `agreed`); write `(default trigger.body.agreed "...")` if it may be absent"#);
    assert_snapshot!(render_err("{{lowercase trigger.body.nickname}}"), @r#"`lowercase`: `trigger.body.nickname` is missing; write `(default trigger.body.nickname "...")` if it may be absent"#);
    assert_snapshot!(render_err("line one\n{{trigger.body.x}}"), @r#"`trigger.body.x` is missing (`trigger.body` has no `x`); write `{{default trigger.body.x "..."}}` if it is optional (line 2, column 1)"#);
    assert_snapshot!(render_err("{{#each trigger.body.coupon}}{{this}}{{/each}}"), @"`trigger.body.coupon` is null, which `#each` / `#with` cannot enter; add an `{{else}}` branch for that case");
    assert_snapshot!(render_err("{{#with trigger.body.note}}{{this}}{{/with}}"), @"`trigger.body.note` is text, which `#each` / `#with` cannot enter; add an `{{else}}` branch for that case");
    assert_eq!(value("{{#each trigger.body.coupon}}{{this}}{{else}}none{{/each}}"), json!("none"));
    // A null is present, not missing.
    assert_eq!(value("{{trigger.body.coupon}}"), Value::Null);
    // `if` treats missing as false.
    assert_eq!(value("{{#if trigger.body.nickname}}y{{else}}n{{/if}}"), json!("n"));
}

// ---- helpers: examples (as in the docs) and errors ----

#[test]
fn default_helper() {
    assert_eq!(value(r#"{{default trigger.body.nickname "friend"}}"#), json!("friend"));
    assert_eq!(value(r#"{{default trigger.body.note "n/a"}}"#), json!("n/a"));
    assert_eq!(value(r#"{{default trigger.body.coupon "none"}}"#), json!("none"));
    assert_eq!(value("{{default trigger.body.nickname trigger.body.first_name}}"), json!("Ada"));
    assert_eq!(value("{{default trigger.body.consent false}}"), json!(true));
    assert_eq!(value("{{default trigger.body.cart.count 9}}"), json!(3));
    assert_eq!(value(r#"{{default trigger.body.a trigger.body.b ""}}"#), json!(""));
    assert_eq!(value(r#"{{lowercase (default trigger.body.nickname "FRIEND")}}"#), json!("friend"));
    assert_snapshot!(render_err("{{default trigger.body.a trigger.body.b}}"), @r#"`default`: `trigger.body.b` is missing; write `(default trigger.body.b "...")` if it may be absent"#);
    assert_snapshot!(compile_err("{{default trigger.body.a}}"), @"`default` takes at least 2 arguments (default VALUE FALLBACK...), got 1");
}

#[test]
fn case_and_trim_helpers() {
    assert_eq!(value("{{lowercase trigger.body.first_name}}"), json!("ada"));
    assert_eq!(value("{{uppercase trigger.body.first_name}}"), json!("ADA"));
    assert_eq!(value("{{uppercase 'straße'}}"), json!("STRASSE"));
    assert_eq!(value("{{trim trigger.body.email}}"), json!("Ada.Lovelace@Example.COM"));
    assert_eq!(value("{{lowercase trigger.body.cart.count}}"), json!("3"), "numbers are used as text");
    assert_eq!(value("{{trim trigger.body.coupon}}"), json!(""), "null is empty text");
    assert_snapshot!(render_err("{{lowercase trigger.body.tags}}"), @"`lowercase`: expected text, got a list");
    assert_snapshot!(render_err("{{uppercase trigger.body.cart}}"), @"`uppercase`: expected text, got an object");
    assert_snapshot!(compile_err("{{trim}}"), @"`trim` takes 1 argument (trim TEXT), got 0");
}

#[test]
fn truncate_helper() {
    assert_eq!(value(r#"{{truncate trigger.body.title 10 "…"}}"#), json!("Héllo, Wö…"));
    assert_eq!(value("{{truncate trigger.body.title 5}}"), json!("Héllo"));
    assert_eq!(value("{{truncate trigger.body.first_name 10}}"), json!("Ada"));
    assert_eq!(value("{{truncate trigger.body.first_name 3 '...'}}"), json!("Ada"), "fits exactly");
    assert_eq!(value("{{truncate 'abcdef' 2 '...'}}"), json!(".."), "a suffix longer than the length is cut too");
    assert_eq!(value("{{truncate 'abcdef' '4'}}"), json!("abcd"));
    assert_snapshot!(compile_err("{{truncate trigger.body.title -1}}"), @"`truncate`: the length must be a whole number of characters, got -1");
    assert_snapshot!(render_err("{{truncate trigger.body.title trigger.body.plan}}"), @r#"`truncate`: the length must be a whole number, got "pro""#);
    assert_snapshot!(compile_err("{{truncate trigger.body.title}}"), @"`truncate` takes 2 or 3 arguments (truncate TEXT LENGTH [SUFFIX]), got 1");
}

#[test]
fn json_helper() {
    assert_eq!(value("{{json trigger.body.tags}}"), json!(r#"["vip","beta"]"#));
    assert_eq!(value("{{json trigger.body.cart.total}}"), json!("42.5"));
    assert_eq!(value("{{json trigger.body.first_name}}"), json!(r#""Ada""#));
    assert_eq!(value("{{json trigger.body.coupon}}"), json!("null"));
    assert_snapshot!(render_err("{{json trigger.body.nope}}"), @r#"`json`: `trigger.body.nope` is missing; write `(default trigger.body.nope "...")` if it may be absent"#);
}

#[test]
fn jsonpath_helper() {
    assert_eq!(value("{{jsonpath trigger.body '$.cart.items[*].sku'}}"), json!(["A-1", "B-2"]));
    assert_eq!(value("{{jsonpath trigger.body.cart '$.items[?@.price > 15].sku'}}"), json!(["B-2"]));
    assert_eq!(value("{{jsonpath trigger.body '$.nothing'}}"), json!([]));
    assert_eq!(value("{{first (jsonpath trigger.body '$..sku')}}"), json!("A-1"));
    assert_snapshot!(compile_err("{{jsonpath trigger.body 'cart.items'}}"), @r#"`jsonpath`: invalid JSONPath "cart.items": a JSONPath starts with `$`, such as '$.items[*].sku'"#);
    assert_snapshot!(compile_err("{{jsonpath trigger.body '$.cart[['}}"), @r#"`jsonpath`: invalid JSONPath "$.cart[[" at character 8: expected selector"#);
    assert_snapshot!(compile_err("{{jsonpath trigger.body 42}}"), @"`jsonpath`: the path must be text such as '$.items[*].sku', got 42");
    // A path coming from data is checked when rendering.
    let t = Engine::global().compile("{{jsonpath trigger.body vars.path}}").unwrap();
    let mut d = data();
    d["vars"]["path"] = json!("$.[");
    assert_snapshot!(t.render_value(&d).unwrap_err().message, @r#"`jsonpath`: invalid JSONPath "$.[" at character 3: expected wildcard selector or a name"#);
}

#[test]
fn jsonpath_function() {
    let v = json!({"a": [{"b": 1}, {"b": 2}, {"c": 3}]});
    assert_eq!(jsonpath(&v, "$.a[*].b").unwrap(), vec![json!(1), json!(2)]);
    assert_eq!(jsonpath(&v, "$.a[2]").unwrap(), vec![json!({"c": 3})]);
    assert_eq!(jsonpath(&v, "$.x").unwrap(), Vec::<Value>::new());
    assert!(jsonpath(&v, "a.b").unwrap_err().contains("starts with `$`"));
    assert!(jsonpath(&v, "$[").is_err());
}

#[test]
fn first_helper() {
    assert_eq!(value("{{first trigger.body.tags}}"), json!("vip"));
    assert_eq!(value("{{first (jsonpath trigger.body '$.nothing')}}"), Value::Null);
    assert_eq!(value("{{first trigger.body.coupon}}"), Value::Null);
    assert_snapshot!(render_err("{{first trigger.body.first_name}}"), @"`first`: expected a list, got text");
}

#[test]
fn len_helper() {
    assert_eq!(value("{{len trigger.body.cart.items}}"), json!(2));
    assert_eq!(value("{{len trigger.body.first_name}}"), json!(3));
    assert_eq!(value("{{len trigger.body.title}}"), json!(28), "characters, not bytes");
    assert_eq!(value("{{len trigger.body.cart}}"), json!(3));
    assert_eq!(value("{{len trigger.body.coupon}}"), json!(0));
    assert_snapshot!(render_err("{{len trigger.body.age}}"), @"`len`: expected a list, text or an object, got a number");
}

#[test]
fn contains_helper() {
    assert_eq!(value(r#"{{contains trigger.body.tags "vip"}}"#), json!(true));
    assert_eq!(value(r#"{{contains trigger.body.tags "gold"}}"#), json!(false));
    assert_eq!(value(r#"{{contains trigger.body.email "@gmail."}}"#), json!(false));
    assert_eq!(value(r#"{{contains trigger.body.email "Lovelace"}}"#), json!(true));
    assert_eq!(value(r#"{{contains trigger.body "cart"}}"#), json!(true));
    assert_eq!(value("{{contains (jsonpath trigger.body '$..price') 10.0}}"), json!(true), "numbers compare by value");
    assert_eq!(value("{{contains trigger.body.coupon 1}}"), json!(false));
    assert_eq!(value(r#"{{#if (contains trigger.body.tags "beta")}}beta{{/if}}"#), json!("beta"));
    assert_snapshot!(render_err("{{contains trigger.body.age 3}}"), @"`contains`: expected a list, text or an object, got a number");
}

#[test]
fn join_and_split_helpers() {
    assert_eq!(value(r#"{{join trigger.body.tags ", "}}"#), json!("vip, beta"));
    assert_eq!(value("{{join trigger.body.tags}}"), json!("vip,beta"));
    assert_eq!(value("{{join (jsonpath trigger.body '$..qty') '+'}}"), json!("2+1"));
    assert_eq!(value("{{join trigger.body.coupon}}"), json!(""));
    assert_snapshot!(render_err("{{join trigger.body.first_name}}"), @"`join`: expected a list, got text");
    assert_eq!(value(r#"{{split "red|green|blue" "|"}}"#), json!(["red", "green", "blue"]));
    assert_eq!(value(r#"{{len (split "a,b,c")}}"#), json!(3));
    assert_eq!(value(r#"{{split "" ","}}"#), json!([]));
    assert_eq!(value(r#"{{split "abc" ""}}"#), json!(["a", "b", "c"]));
    assert_eq!(value(r#"{{split "a, b" ","}}"#), json!(["a", " b"]));
    assert_snapshot!(render_err("{{split trigger.body.tags}}"), @"`split`: expected text, got a list");
}

#[test]
fn concat_helper() {
    assert_eq!(
        value(r#"{{concat trigger.body.first_name " <" (normalize_email trigger.body.email) ">"}}"#),
        json!("Ada <ada.lovelace@example.com>")
    );
    assert_eq!(value(r#"{{concat run.recipe ":" trigger.body.cart.count}}"#), json!("greet-signups:3"));
    assert_eq!(value(r#"{{concat "tags=" trigger.body.tags trigger.body.coupon}}"#), json!(r#"tags=["vip","beta"]"#));
    assert_snapshot!(render_err(r#"{{concat "a" trigger.body.b}}"#), @r#"`concat`: `trigger.body.b` is missing; write `(default trigger.body.b "...")` if it may be absent"#);
}

#[test]
fn arithmetic_helpers() {
    assert_eq!(value("{{add trigger.body.cart.count 1}}"), json!(4));
    assert_eq!(string("{{add trigger.body.cart.total 7.5}}"), "50.0");
    assert_eq!(value("{{sub trigger.body.cart.count 1}}"), json!(2));
    assert_eq!(string("{{mul trigger.body.cart.total 100}}"), "4250.0");
    assert_eq!(value(r#"{{add trigger.body.cart.count "2"}}"#), json!(5));
    assert_eq!(value("{{add 1 2 3 4}}"), json!(10));
    assert_eq!(value("{{mul 2 3 4}}"), json!(24));
    assert_eq!(value("{{sub 1 2.5}}"), json!(-1.5));
    assert_eq!(value("{{add 9223372036854775807 1}}"), json!(9223372036854775808u64), "beyond i64, still an integer");
    assert!(value("{{mul 9223372036854775807 9223372036854775807}}").is_f64(), "beyond u64: a float");
    assert!(value("{{add 1 2}}").is_i64());
    assert!(value("{{add 1.5 1.5}}").is_f64());
    assert_snapshot!(render_err(r#"{{add trigger.body.cart.count "two"}}"#), @r#"`add`: argument 2: "two" is not a number"#);
    assert_snapshot!(render_err("{{mul trigger.body.coupon 2}}"), @"`mul`: argument 1: expected a number, got null");
    assert_snapshot!(compile_err("{{sub 1 2 3}}"), @"`sub` takes 2 arguments (sub NUMBER NUMBER), got 3");
}

#[test]
fn round_helper() {
    assert_eq!(value("{{round trigger.body.cart.total}}"), json!(43));
    assert_eq!(value("{{round (mul trigger.body.cart.total 1.175) 2}}"), json!(49.94));
    assert_eq!(value("{{round 1234 -2}}"), json!(1200));
    assert_eq!(value("{{round -2.5}}"), json!(-3));
    assert_eq!(value("{{round 0.30000000000000004 2}}"), json!(0.3));
    assert_eq!(value("{{round 7 2}}"), json!(7), "integers stay integers");
    assert!(value("{{round 2.5}}").is_i64());
    assert_snapshot!(compile_err("{{round 2.5 1.5}}"), @"`round`: the number of decimals must be a whole number, got 1.5");
    assert_snapshot!(render_err("{{round trigger.body.plan}}"), @r#"`round`: "pro" is not a number"#);
}

#[test]
fn now_helper_uses_run_clock() {
    assert_eq!(value("{{now}}"), json!("2024-05-01T10:00:00Z"));
    assert_eq!(value(r#"{{now "%Y-%m-%d"}}"#), json!("2024-05-01"));
    assert_eq!(value(r#"{{now add="7d"}}"#), json!("2024-05-08T10:00:00Z"));
    assert_eq!(value(r#"{{now tz="America/New_York"}}"#), json!("2024-05-01T06:00:00-04:00"));
    assert_eq!(value(r#"{{now format="unix"}}"#), json!(1714557600));
    assert_eq!(value(r#"{{now format="unix_ms"}}"#), json!(1714557600000i64));

    let e = Engine::global();
    let t = e.compile("{{now}}").unwrap();
    let at = |now: &str| t.render_value(&json!({"run": {"now": now}})).unwrap();
    assert_eq!(at("2030-01-02T03:04:05.678Z"), json!("2030-01-02T03:04:05.678Z"));
    assert_eq!(at("2030-01-02T04:04:05+01:00"), json!("2030-01-02T04:04:05+01:00"));
    assert_snapshot!(t.render_value(&json!({"run": {"now": "soon"}})).unwrap_err().message, @r#"`now`: `run.now` is not an RFC 3339 time: "soon""#);

    // Without run.now: the system clock.
    let before = chrono::Utc::now() - chrono::TimeDelta::seconds(1);
    let got = t.render_value(&json!({})).unwrap();
    let got = chrono::DateTime::parse_from_rfc3339(got.as_str().unwrap()).unwrap();
    assert!(got >= before && got <= chrono::Utc::now() + chrono::TimeDelta::seconds(1));
}

#[test]
fn date_helper() {
    assert_eq!(value(r#"{{date trigger.body.signed_up_at format="%d/%m/%Y %H:%M" tz="Europe/London"}}"#), json!("01/05/2024 10:30"));
    assert_eq!(value(r#"{{date trigger.body.signed_up_at add="2d"}}"#), json!("2024-05-03T09:30:00Z"));
    assert_eq!(value(r#"{{date "now" add="-3h"}}"#), json!("2024-05-01T07:00:00Z"), "now is run.now");
    assert_eq!(value(r#"{{date trigger.body.signed_up_at "%A %-d %B"}}"#), json!("Wednesday 1 May"));
    assert_eq!(value("{{date 1714555800}}"), json!("2024-05-01T09:30:00Z"));
    assert_eq!(value(r#"{{date "1714555800"}}"#), json!("2024-05-01T09:30:00Z"));
    assert_eq!(value("{{date 1714555800.25}}"), json!("2024-05-01T09:30:00.250Z"));
    assert_eq!(value(r#"{{date trigger.body.signed_up_at format="unix"}}"#), json!(1714555800));
    assert_eq!(value(r#"{{date "2024-05-01T11:30:00+02:00" "%H:%M %z"}}"#), json!("11:30 +0200"), "keeps the offset");
    assert_eq!(value(r#"{{date "2024-05-01T11:30:00+02:00" tz="UTC"}}"#), json!("2024-05-01T09:30:00Z"));
    assert_eq!(value(r#"{{date "2024-05-01"}}"#), json!("2024-05-01T00:00:00Z"));
    assert_eq!(value(r#"{{date "2024-03-30T12:00:00Z" add="1d" tz="Europe/Paris"}}"#), json!("2024-03-31T14:00:00+02:00"), "DST");
    assert_eq!(value(r#"{{date trigger.body.signed_up_at add="1h30m" "%H:%M"}}"#), json!("11:00"));
    assert_snapshot!(compile_err(r#"{{date trigger.body.signed_up_at add="2 days"}}"#), @r#"`date`: "2 days" is not a duration; write a number and a unit (ms, s, m, h, d, w) such as "2d", "-3h" or "1h30m""#);
    assert_snapshot!(compile_err(r#"{{date trigger.body.signed_up_at tz="Europe/Londres"}}"#), @r#"`date`: unknown time zone "Europe/Londres"; use an IANA name such as "Europe/London" or "UTC""#);
    assert_snapshot!(compile_err(r#"{{date trigger.body.signed_up_at "%Q"}}"#), @r#"`date`: "%Q" is not a valid date format; use strftime fields such as "%Y-%m-%d %H:%M", or "unix""#);
    assert_snapshot!(compile_err(r#"{{date "last tuesday"}}"#), @r#"`date`: "last tuesday" is not a time; give an RFC 3339 time (2024-05-01T09:30:00Z), a date (2024-05-01), unix seconds or "now""#);
    assert_snapshot!(compile_err(r#"{{date trigger.body.signed_up_at fmt="%Y"}}"#), @"`date` does not take `fmt=`; it takes `format=`, `add=`, `tz=`");
    assert_snapshot!(render_err("{{date trigger.body.plan}}"), @r#"`date`: "pro" is not a time; give an RFC 3339 time (2024-05-01T09:30:00Z), a date (2024-05-01), unix seconds or "now""#);
    assert_snapshot!(render_err("{{date trigger.body.signed_up_at tz=trigger.body.plan}}"), @r#"`date`: unknown time zone "pro"; use an IANA name such as "Europe/London" or "UTC""#);
}

#[test]
fn sha256_and_email_helpers() {
    assert_eq!(value("{{normalize_email trigger.body.email}}"), json!("ada.lovelace@example.com"));
    assert_eq!(value("{{normalize_email 'A.B+news@GMail.com'}}"), json!("a.b+news@gmail.com"), "no provider rules");
    assert_eq!(value("{{sha256 ''}}"), json!("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
    assert_eq!(value("{{sha256 'abc'}}"), json!("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
    assert_eq!(value("{{sha256 (normalize_email trigger.body.email)}}"), value("{{sha256 'ada.lovelace@example.com'}}"));
    assert_eq!(value("{{sha256 trigger.body.tags}}"), value(r#"{{sha256 '["vip","beta"]'}}"#), "structures hash as JSON");
    assert_snapshot!(render_err("{{normalize_email trigger.body.tags}}"), @"`normalize_email`: expected text, got a list");
}

#[test]
fn e164_helper() {
    assert_eq!(value(r#"{{e164 trigger.body.phone "GB"}}"#), json!("+442079460018"));
    assert_eq!(value(r#"{{e164 trigger.body.phone "gb"}}"#), json!("+442079460018"));
    assert_eq!(value("{{e164 '+1 (650) 253-0000'}}"), json!("+16502530000"));
    assert_eq!(value("{{e164 '+1 650 253 0000' 'GB'}}"), json!("+16502530000"), "a +country prefix wins over the region");
    assert_eq!(value("{{e164 '(650) 253-0000' 'US'}}"), json!("+16502530000"));
    assert_snapshot!(render_err("{{e164 '12345'}}"), @r#"`e164`: "12345" is not a valid phone number; numbers without a +country code need a default region, e.g. `{{e164 trigger.body.phone "US"}}`"#);
    assert_snapshot!(render_err("{{e164 '12345' 'GB'}}"), @r#"`e164`: "12345" is not a valid phone number for region GB"#);
    assert_snapshot!(render_err("{{e164 trigger.body.phone}}"), @r#"`e164`: "020 7946 0018" is not a valid phone number; numbers without a +country code need a default region, e.g. `{{e164 trigger.body.phone "US"}}`"#);
    assert_snapshot!(compile_err("{{e164 trigger.body.phone 'XX'}}"), @r#"`e164`: unknown region "XX"; use a two-letter country code such as "GB" or "US""#);
}

#[test]
fn urlencode_and_slug_helpers() {
    assert_eq!(
        value("https://example.com/search?q={{urlencode trigger.body.title}}"),
        json!("https://example.com/search?q=H%C3%A9llo%2C%20W%C3%B6rld%21%20%C3%9Cn%C3%AFcode%20%26%20more")
    );
    assert_eq!(value("{{urlencode 'a-b_c.d~e f/g?h=i&j'}}"), json!("a-b_c.d~e%20f%2Fg%3Fh%3Di%26j"));
    assert_eq!(value("{{urlencode 42}}"), json!("42"));
    assert_eq!(value("{{slug trigger.body.title}}"), json!("hello-world-unicode-more"));
    assert_eq!(value("{{slug '  --Über Straße 12!! '}}"), json!("uber-strasse-12"));
    assert_eq!(value("{{slug '東京'}}"), json!("dong-jing"));
    assert_snapshot!(render_err("{{urlencode trigger.body.cart}}"), @"`urlencode`: expected text, got an object");
    assert_snapshot!(render_err("{{slug trigger.body.tags}}"), @"`slug`: expected text, got a list");
}

#[test]
fn builtin_helpers() {
    assert_eq!(value("{{eq trigger.body.consent true}}"), json!(true));
    assert_eq!(value(r#"{{ne trigger.body.plan "free"}}"#), json!(true));
    assert_eq!(value("{{gt trigger.body.cart.total 40}}"), json!(true));
    assert_eq!(value("{{gte trigger.body.age 18}}"), json!(true));
    assert_eq!(value("{{lt trigger.body.cart.count 3}}"), json!(false));
    assert_eq!(value("{{lte trigger.body.cart.count 3}}"), json!(true));
    assert_eq!(value("{{and trigger.body.consent (gt trigger.body.age 17)}}"), json!(true));
    assert_eq!(value("{{or trigger.body.coupon trigger.body.note}}"), json!(false));
    assert_eq!(value("{{not trigger.body.coupon}}"), json!(true));
    assert_eq!(value("{{#eq trigger.body.plan 'pro'}}P{{else}}F{{/eq}}"), json!("P"));
    assert_eq!(value("{{lookup vars.prices trigger.body.plan}}"), json!(29));
    assert_eq!(value(r#"{{default (lookup vars.prices "enterprise") "ask us"}}"#), json!("ask us"));
    assert_eq!(value("{{lookup trigger.body.tags 1}}"), json!("beta"));
    assert_snapshot!(render_err(r#"{{lookup vars.prices "enterprise"}}"#), @r#"`lookup` found no such key or index; write `{{default (lookup ...) "..."}}` if it is optional"#);
    assert_snapshot!(compile_err("{{eq trigger.body.plan}}"), @"`eq` takes 2 arguments (eq A B), got 1");
    assert_eq!(value("{{#each trigger.body.cart.items}}{{sku}}{{#unless @last}}, {{/unless}}{{/each}}"), json!("A-1, B-2"));
    assert_eq!(value("{{#each trigger.body.tags}}{{@index}}={{this}};{{/each}}"), json!("0=vip;1=beta;"));
    assert_eq!(
        value("{{#each trigger.body.cart.items}}{{@root.run.id}}/{{../trigger.body.plan}}/{{sku}} {{/each}}"),
        json!("run_01HX/pro/A-1 run_01HX/pro/B-2 ")
    );
    assert_eq!(value("{{#if (gte trigger.body.age 18)}}yes{{else}}no{{/if}}"), json!("yes"));
    assert_eq!(value("{{#with trigger.body}}{{first_name}} ({{plan}}){{/with}}"), json!("Ada (pro)"));
    assert_eq!(value("{{#if trigger.body.note}}a{{else if trigger.body.consent}}b{{else}}c{{/if}}"), json!("b"));
    assert_eq!(value("{{{{raw}}}}{{trigger.body.plan}}{{{{/raw}}}}"), json!("{{trigger.body.plan}}"));
}

// ---- escaping ----

#[test]
fn plain_templates_do_not_escape() {
    let d = json!({"v": "<b>Tom & \"Jerry\"</b>", "list": ["<a>"]});
    let e = Engine::global();
    assert_eq!(e.compile("{{v}}").unwrap().render_value(&d).unwrap(), json!("<b>Tom & \"Jerry\"</b>"));
    assert_eq!(e.compile("x {{v}}").unwrap().render_string(&d).unwrap(), "x <b>Tom & \"Jerry\"</b>");
    assert_eq!(e.compile("{{lowercase v}}!").unwrap().render_string(&d).unwrap(), "<b>tom & \"jerry\"</b>!");
    assert_eq!(e.compile("{{list}}").unwrap().render_string(&d).unwrap(), r#"["<a>"]"#);
}

#[test]
fn html_templates_escape_values() {
    let d = json!({"v": "<b>Tom & 'Jerry'</b>", "n": 3, "list": ["<a>"]});
    let e = Engine::global();
    let t = e.compile_html("<p>{{v}}</p>").unwrap();
    assert!(t.is_html());
    assert_eq!(t.render_string(&d).unwrap(), "<p>&lt;b&gt;Tom &amp; &#x27;Jerry&#x27;&lt;/b&gt;</p>");
    assert_eq!(e.compile_html("<p>{{{v}}}</p>").unwrap().render_string(&d).unwrap(), "<p><b>Tom & 'Jerry'</b></p>");
    assert_eq!(e.compile_html("{{v}}").unwrap().render_value(&d).unwrap(), json!("&lt;b&gt;Tom &amp; &#x27;Jerry&#x27;&lt;/b&gt;"));
    assert_eq!(e.compile_html("{{{v}}}").unwrap().render_value(&d).unwrap(), json!("<b>Tom & 'Jerry'</b>"));
    assert_eq!(e.compile_html("{{uppercase v}}").unwrap().render_string(&d).unwrap(), "&lt;B&gt;TOM &amp; &#x27;JERRY&#x27;&lt;/B&gt;");
    assert_eq!(e.compile_html("{{n}}").unwrap().render_value(&d).unwrap(), json!(3), "numbers keep their type");
    assert_eq!(e.compile_html("x{{list}}").unwrap().render_string(&d).unwrap(), "x[&quot;&lt;a&gt;&quot;]");
    assert_eq!(e.compile_html("<i>literal & text</i>").unwrap().render_string(&d).unwrap(), "<i>literal & text</i>");
    assert_eq!(e.compile_html("{{#each list}}<li>{{this}}</li>{{/each}}").unwrap().render_string(&d).unwrap(), "<li>&lt;a&gt;</li>");
}

// ---- compile errors ----

#[test]
fn unknown_helpers_are_compile_errors() {
    assert_snapshot!(compile_err("{{lowercse trigger.body.email}}"), @"unknown helper `lowercse`; did you mean `lowercase`?");
    assert_snapshot!(compile_err("{{upper trigger.body.email}}"), @"unknown helper `upper`; did you mean `uppercase`?");
    assert_snapshot!(compile_err("{{length trigger.body.tags}}"), @"unknown helper `length`; did you mean `len`?");
    assert_snapshot!(compile_err("Hi {{#iff trigger.body.ok}}x{{/iff}}"), @"unknown helper `iff`; did you mean `if`?");
    assert_snapshot!(compile_err("{{concat (lowrcase trigger.body.x) 'y'}}"), @"unknown helper `lowrcase`; did you mean `lowercase`?");
    assert_snapshot!(compile_err("{{frobnicate x}}"), @"unknown helper `frobnicate`; the helpers are: add, and, concat, contains, date, default, e164, each, eq, first, gt, gte, if, join, json, jsonpath, len, lookup, lowercase, lt, lte, mul, ne, normalize_email, not, now, or, raw, round, sha256, slug, split, sub, trim, truncate, unless, uppercase, urlencode, with");
    assert!(compile_err("{{log x}}").starts_with("unknown helper `log`; the helpers are: add, and,"));
    assert!(compile_err("{{__text x}}").starts_with("unknown helper `__text`; the helpers are:"), "private helpers are not usable");
}

#[test]
fn other_compile_errors() {
    assert_snapshot!(compile_err("Hi {{trigger.body.name"), @"template syntax error at line 1, column 23: a `{{` is not closed with `}}`");
    assert_snapshot!(compile_err("{{#if x}}yes"), @"template syntax error at line 1, column 13: a block `{{#name ...}}` is not closed with `{{/name}}`");
    assert_snapshot!(compile_err("{{#if x}}yes{{/each}}"), @"template syntax error at line 1, column 13: `{{#if}}` is closed by `{{/each}}`");
    assert_snapshot!(compile_err("{{> footer}}"), @"partials (`{{> name}}`) are not supported in recipe templates");
    assert_snapshot!(compile_err("{{#lowercase x}}y{{/lowercase}}"), @"`lowercase` cannot open a block; write `{{lowercase TEXT}}` instead of `{{#lowercase ...}}`");
    assert_snapshot!(compile_err("{{each trigger.body.tags}}"), @"`each` is a block helper: write `{{#each ...}}...{{/each}}`");
    assert_snapshot!(compile_err("{{lowercase x y=1}}"), @"`lowercase` takes no named arguments, got `y=`");
    assert_snapshot!(compile_err("{{concat (trigger.body.x) 'y'}}"), @"`(trigger.body.x)` is not a helper call: parentheses are for helpers with arguments, such as `(lowercase trigger.body.x)`; write `trigger.body.x` without them");
    assert_snapshot!(compile_err("{{now 'a' 'b'}}"), @"`now` takes 0 or 1 arguments (now [FORMAT] [format=FORMAT] [add=DURATION] [tz=ZONE]), got 2");
    // compile_html checks the same way.
    assert_eq!(
        Engine::global().compile_html("{{lowercse x}}").unwrap_err().message,
        "unknown helper `lowercse`; did you mean `lowercase`?"
    );
}

// ---- references ----

fn refs(src: &str) -> Vec<Vec<String>> {
    Engine::global().compile(src).unwrap().references().to_vec()
}

fn paths(list: &[&str]) -> Vec<Vec<String>> {
    list.iter().map(|p| p.split('.').map(String::from).collect()).collect()
}

#[test]
fn references_are_collected() {
    assert_eq!(refs("{{lowercase trigger.body.email}}"), paths(&["trigger.body.email"]));
    assert_eq!(refs("{{steps.post.body.id}}"), paths(&["steps.post.body.id"]));
    assert_eq!(refs("plain text"), paths(&[]));
    assert_eq!(refs("{{now}}"), paths(&[]));
    assert_eq!(
        refs("Hi {{trigger.body.name}}, {{concat (lowercase steps.a.x) vars.sep (default steps.b.y secrets.K)}} {{trigger.body.name}}"),
        paths(&["trigger.body.name", "steps.a.x", "vars.sep", "steps.b.y", "secrets.K"])
    );
    assert_eq!(refs("{{#if steps.a.ok}}yes {{steps.b.id}}{{else}}{{vars.no}}{{/if}}"), paths(&["steps.a.ok", "steps.b.id", "vars.no"]));
    assert_eq!(refs("{{#if (eq steps.a.status 200)}}x{{/if}}"), paths(&["steps.a.status"]));
    assert_eq!(refs("{{date trigger.body.at tz=vars.zone add=vars.delay}}"), paths(&["trigger.body.at", "vars.delay", "vars.zone"]));
    assert_eq!(
        refs("{{#each steps.list.items}}{{name}} {{this.id}} {{@index}} {{@root.vars.x}} {{../steps.up.y}}{{/each}}"),
        paths(&["steps.list.items", "vars.x", "steps.up.y"])
    );
    assert_eq!(
        refs("{{#with trigger.body}}{{email}}{{/with}}{{#each x}}{{else}}{{vars.empty}}{{/each}}"),
        paths(&["trigger.body", "x", "vars.empty"])
    );
    assert_eq!(refs("{{trigger.headers.[x-request-id]}}"), vec![vec!["trigger".to_string(), "headers".into(), "x-request-id".into()]]);
    assert_eq!(refs("{{{secrets.TOKEN}}}"), paths(&["secrets.TOKEN"]));
    assert_eq!(refs("{{@root.steps.a.b}}"), paths(&["steps.a.b"]));
}

// ---- the engine ----

#[test]
fn helper_names_are_complete_and_sorted() {
    let names = Engine::global().helper_names();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    for n in [
        "default",
        "lowercase",
        "uppercase",
        "trim",
        "truncate",
        "json",
        "jsonpath",
        "first",
        "len",
        "contains",
        "join",
        "split",
        "concat",
        "add",
        "sub",
        "mul",
        "round",
        "now",
        "date",
        "sha256",
        "normalize_email",
        "e164",
        "urlencode",
        "slug",
        "eq",
        "ne",
        "gt",
        "gte",
        "lt",
        "lte",
        "and",
        "or",
        "not",
        "if",
        "unless",
        "each",
        "with",
        "lookup",
    ] {
        assert!(names.contains(&n), "{n} missing from helper_names");
        // Every listed helper compiles (with the right arity) and is documented.
    }
    assert!(!names.contains(&"log"));
    assert!(!names.iter().any(|n| n.starts_with("__")));
    // Every listed helper has an implementation: ours, or Handlebars' own.
    let builtin = ["and", "each", "eq", "gt", "gte", "if", "lt", "lte", "ne", "not", "or", "raw", "unless", "with"];
    for n in &names {
        assert!(helpers::IMPLS.iter().any(|(i, _)| i == n) || *n == "lookup" || builtin.contains(n), "{n} is listed but not implemented");
    }
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/templates.md")).unwrap();
    for n in &names {
        assert!(doc.contains(&format!("`{n}")), "{n} is not documented");
    }
}

#[test]
fn engine_is_shareable() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Engine>();
    assert_send_sync::<Template>();
    assert!(std::ptr::eq(Engine::global(), Engine::global()));
    let t = Engine::new().compile("{{add x 1}}").unwrap();
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let t = t.clone();
            std::thread::spawn(move || t.render_value(&json!({"x": i})).unwrap())
        })
        .collect();
    let got: Vec<Value> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(got, vec![json!(1), json!(2), json!(3), json!(4)]);
}
