//! The conformance test over every connector (the connector specification of CONTRIBUTING.md
//! made executable): ids, documented fields, valid schemas, samples and recorded fixtures
//! valid against the output schemas, a README and fixtures in every folder, error
//! classification exercised, and output schemas pinned to the connector's version
//! (`schemas.lock`). Every problem of every connector is collected, then the test fails
//! once with all of them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use enlace_core::{Connector, Credentials, ErrorClass, Secret};
use enlace_kit::schema::{check_schema, validate};
use enlace_kit::testing::{Canned, Reply, ctx_with};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Apps whose actions reach no vendor over HTTP: Enlace's own (the contact store, `emit`,
/// the clock, the webhook ingress). Their error classes come from the store, not a vendor.
const NO_VENDOR: [&str; 4] = ["contacts", "enlace", "schedule", "webhook"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn lock_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas.lock")
}

fn valid_id(id: &str) -> bool {
    let mut chars = id.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase()) && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Every property of a schema without a description, with its path (nested objects and
/// `$defs` included).
pub(crate) fn undocumented(schema: &Value) -> Vec<String> {
    let mut out = vec![];
    walk_props(schema, "", &mut out);
    if let Some(defs) = schema.get("$defs").and_then(Value::as_object) {
        for (name, d) in defs {
            walk_props(d, &format!("$defs.{name}"), &mut out);
        }
    }
    out
}

fn walk_props(schema: &Value, path: &str, out: &mut Vec<String>) {
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (k, p) in props {
            let here = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
            let doc = p.get("description").and_then(Value::as_str).map(str::trim).unwrap_or("");
            // A field that only points at a definition takes that definition's description.
            if doc.is_empty() && p.get("$ref").is_none() {
                out.push(here.clone());
            }
            walk_props(p, &here, out);
            if let Some(items) = p.get("items") {
                walk_props(items, &format!("{here}[]"), out);
            }
        }
    }
}

/// The fingerprint of a connector's output schemas: what recipes may read from it (their
/// shape: descriptions and titles are left out, rewording them changes nothing for recipes).
fn fingerprint(c: &Connector) -> String {
    let m = &c.manifest;
    let mut outputs = BTreeMap::new();
    for a in &m.actions {
        outputs.insert(format!("action.{}", a.id), shape(&a.output_schema));
    }
    for t in &m.triggers {
        outputs.insert(format!("trigger.{}", t.id), shape(&t.output_schema));
    }
    let text = serde_json::to_string(&outputs).expect("schemas are JSON");
    hex::encode(Sha256::digest(text.as_bytes()))
}

fn shape(schema: &Value) -> Value {
    match schema {
        Value::Object(o) => Value::Object(
            o.iter()
                .filter(|(k, v)| !matches!(k.as_str(), "description" | "title" | "examples") || v.is_object())
                .map(|(k, v)| (k.clone(), shape(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(shape).collect()),
        other => other.clone(),
    }
}

fn read_lock() -> BTreeMap<String, Value> {
    std::fs::read_to_string(lock_path()).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default()
}

/// Checks the manifest of one connector (no files, no calls).
pub(crate) fn check_manifest(c: &Connector, problems: &mut Vec<String>) {
    let m = &c.manifest;
    let app = &m.id;
    let mut say = |what: String| problems.push(format!("{app}: {what}"));
    if !valid_id(app) {
        say(format!("the app id `{app}` must be lowercase letters, digits and `_`, starting with a letter"));
    }
    if m.name.trim().is_empty() || m.description.trim().is_empty() {
        say("the connector needs a name and a description".into());
    }
    let mut ids = BTreeSet::new();
    let items = m
        .actions
        .iter()
        .map(|a| ("action", &a.id, &a.name, &a.description, &a.input_schema, &a.output_schema, &a.sample))
        .chain(m.triggers.iter().map(|t| ("trigger", &t.id, &t.name, &t.description, &t.config_schema, &t.output_schema, &t.sample)));
    for (kind, id, name, description, input, output, sample) in items {
        if !valid_id(id) {
            say(format!("the {kind} id `{id}` must be lowercase letters, digits and `_`, starting with a letter"));
        }
        if !ids.insert(id.clone()) {
            say(format!("the id `{id}` is used twice (actions and triggers share `{app}.<id>`)"));
        }
        if name.trim().is_empty() || description.trim().is_empty() {
            say(format!("the {kind} `{id}` needs a name and a description"));
        }
        for p in check_schema(input) {
            say(format!("the input schema of {kind} `{id}` is malformed: {p}"));
        }
        for p in check_schema(output) {
            say(format!("the output schema of {kind} `{id}` is malformed: {p}"));
        }
        for f in undocumented(input) {
            say(format!("the input field `{f}` of {kind} `{id}` has no description (a doc comment): it is the help text users read"));
        }
        for f in undocumented(output) {
            say(format!(
                "the output field `{f}` of {kind} `{id}` has no description (a doc comment): the data pills of later steps show it"
            ));
        }
        for p in validate(sample, output) {
            say(format!("the sample of {kind} `{id}` does not match its output schema: {p}"));
        }
    }
}

/// Checks a connector's folder: README (naming every action and trigger), fixtures (one per
/// action and trigger, whose recorded `output` matches the output schema: output drift).
fn check_folder(c: &Connector, problems: &mut Vec<String>) -> BTreeMap<String, Value> {
    let m = &c.manifest;
    let app = &m.id;
    let rust_dir = root().join("connectors").join(app);
    let dir = if rust_dir.is_dir() { rust_dir } else { root().join("connectors/declarative").join(app) };
    let mut fixtures = BTreeMap::new();
    let mut say = |what: String| problems.push(format!("{app}: {what}"));
    if !dir.is_dir() {
        say(format!("no folder connectors/{app} (or connectors/declarative/{app}): the folder name is the app id"));
        return fixtures;
    }
    match std::fs::read_to_string(dir.join("README.md")) {
        Err(_) => say(format!("{app}/README.md is missing: what the app does, each action and trigger, how to get credentials")),
        Ok(readme) => {
            for id in m.actions.iter().map(|a| &a.id).chain(m.triggers.iter().map(|t| &t.id)) {
                if !readme.contains(id.as_str()) {
                    say(format!("README.md does not mention `{app}.{id}`"));
                }
            }
        }
    }
    let entries = m
        .actions
        .iter()
        .map(|a| ("action", &a.id, &a.output_schema))
        .chain(m.triggers.iter().map(|t| ("trigger", &t.id, &t.output_schema)));
    for (kind, id, output) in entries {
        let name = format!("{kind}.{id}.json");
        let path = dir.join("fixtures").join(&name);
        let Ok(text) = std::fs::read_to_string(&path) else {
            say(format!(
                "{app}/fixtures/{name} is missing: record an `input` the {kind} takes and the `output` it gave (see CONTRIBUTING.md)"
            ));
            continue;
        };
        let fixture: Value = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(e) => {
                say(format!("fixtures/{name} is not JSON: {e}"));
                continue;
            }
        };
        match fixture.get("output") {
            None => say(format!("fixtures/{name} has no `output`")),
            Some(out) => {
                for p in validate(out, output) {
                    say(format!(
                        "the recorded output in fixtures/{name} no longer matches the {kind}'s output schema (output drift): {p}; a change recipes may notice needs a version bump"
                    ));
                }
            }
        }
        fixtures.insert(format!("{kind}.{id}"), fixture);
    }
    fixtures
}

/// Output schemas pinned to versions: a changed schema without a bump fails.
fn check_versions(connectors: &[Connector], update: bool, problems: &mut Vec<String>) {
    let lock = read_lock();
    let mut next = BTreeMap::new();
    for c in connectors {
        let (app, version, print) = (&c.manifest.id, &c.manifest.version, fingerprint(c));
        let entry = json!({"version": version, "outputs": print});
        let fix = "then run `cargo test -p enlace-connectors conformance` (outside CI: it records the new version) and commit crates/enlace-connectors/schemas.lock";
        match lock.get(app) {
            Some(old) if old == &entry => {}
            Some(old) if old["version"] == json!(version) => {
                problems.push(format!(
                    "{app}: its output schemas changed but its version is still {version}: recipes reading its outputs may break; bump `.version(..)` (`version:` in a manifest), {fix}"
                ));
                next.insert(app.clone(), old.clone());
                continue;
            }
            _ if !update => problems.push(format!("{app}: version {version} with these output schemas is not in schemas.lock; {fix}")),
            _ if !lock.is_empty() => eprintln!("schemas.lock: recorded {app} version {version}; commit the lock"),
            _ => {}
        }
        next.insert(app.clone(), entry);
    }
    if update {
        let text = serde_json::to_string_pretty(&next).expect("JSON") + "\n";
        std::fs::write(lock_path(), text).expect("write schemas.lock");
    }
}

/// Calls every vendor action and polling trigger with its fixture's `input` through a
/// transport that answers 401, then 429 with `Retry-After: 7`, then 503, and checks each
/// is classified as the runner needs (auth, rate limited with the wait, transient).
async fn check_classification(c: &Connector, fixtures: &BTreeMap<String, Value>, problems: &mut Vec<String>) {
    let m = &c.manifest;
    if NO_VENDOR.contains(&m.id.as_str()) {
        return;
    }
    let cases = [
        (Reply::json(401, json!({"error": "invalid token"})), ErrorClass::Auth, None),
        (Reply::json(429, json!({"error": "slow down"})).header("Retry-After", "7"), ErrorClass::RateLimited, Some(Duration::from_secs(7))),
        (Reply::json(503, json!({"error": "down for maintenance"})), ErrorClass::Transient, None),
    ];
    let credentials = credentials_for(m.auth);
    // A polling trigger over another protocol (IMAP) has its own tests of its errors.
    let http_triggers = !matches!(m.auth, enlace_core::AuthKind::Imap | enlace_core::AuthKind::Smtp);
    for (kind, id) in m
        .actions
        .iter()
        .filter(|a| a.http_only)
        .map(|a| ("action", &a.id))
        .chain(m.triggers.iter().filter(|t| http_triggers && c.polling_trigger(&t.id).is_some()).map(|t| ("trigger", &t.id)))
    {
        let Some(fixture) = fixtures.get(&format!("{kind}.{id}")) else { continue };
        let Some(input) = fixture.get("input").cloned() else {
            problems.push(format!("{}: fixtures/{kind}.{id}.json has no `input` to call it with", m.id));
            continue;
        };
        for (reply, want, wait) in cases.iter().cloned() {
            let status = reply.status;
            let canned = Canned::new(reply);
            let ctx = ctx_with(canned.clone(), credentials.clone());
            let got = if kind == "action" {
                c.action(id).expect("declared").call(&ctx, input.clone()).await.map(|_| ())
            } else {
                c.polling_trigger(id).expect("declared").poll(&ctx, input.clone(), None).await.map(|_| ())
            };
            let who = format!("{}: {kind} `{id}` answered {status}", m.id);
            match got {
                _ if canned.requests().is_empty() => {
                    problems.push(format!("{who}: it sent no request with the fixture's input (is the input valid?)"));
                    break;
                }
                Ok(()) => problems.push(format!("{who} succeeded: a {status} must be an error of class {want}")),
                Err(e) if e.class() != want => problems.push(format!("{who}: classified {} ({}), must be {want}", e.class(), e.message())),
                Err(e) if wait.is_some() && e.retry_after() != wait => {
                    problems.push(format!("{who}: the server's Retry-After (7 s) was lost: {:?}", e.retry_after()))
                }
                Err(_) => {}
            }
        }
    }
}

fn credentials_for(auth: enlace_core::AuthKind) -> Credentials {
    use enlace_core::AuthKind::*;
    match auth {
        ApiKey => Credentials::ApiKey { header: "x-api-key".into(), key: Secret::new("key-us21") },
        Basic => Credentials::Basic { username: "AC00000000000000000000000000000000".into(), password: Secret::new("key-us21") },
        OAuth2 => Credentials::OAuth2 { access_token: Secret::new("token") },
        Bearer | None | Smtp | Imap => Credentials::Bearer { token: Secret::new("token") },
    }
}

/// Runs every check over these connectors; the problems, one a line.
pub(crate) async fn conformance(connectors: &[Connector]) -> Vec<String> {
    let mut problems = vec![];
    let mut apps = BTreeSet::new();
    for c in connectors {
        if !apps.insert(c.id().to_string()) {
            problems.push(format!("{}: two connectors use this app id", c.id()));
        }
        check_manifest(c, &mut problems);
        let fixtures = check_folder(c, &mut problems);
        check_classification(c, &fixtures, &mut problems).await;
    }
    // Like insta's snapshots: a new connector or a bumped version is recorded in the lock
    // locally (commit it) and refused in CI, where the lock must already be committed.
    let record = std::env::var("ENLACE_UPDATE_SCHEMA_LOCK").is_ok_and(|v| v == "1") || std::env::var_os("CI").is_none();
    check_versions(connectors, record, &mut problems);
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_connector_conforms() {
        let connectors: Vec<Connector> = crate::all();
        let problems = conformance(&connectors).await;
        assert!(problems.is_empty(), "{} problem(s) with the connector specification:\n{}", problems.len(), problems.join("\n"));
    }

    /// The checks themselves catch what they are for (a conformance test that cannot fail
    /// proves nothing).
    #[tokio::test]
    async fn the_checks_catch_a_broken_connector() {
        use enlace_core::{Action, ActionContext, ConnectorError, Idempotency};

        #[derive(serde::Deserialize, schemars::JsonSchema)]
        struct In {
            /// Documented.
            #[allow(dead_code)]
            a: String,
            #[allow(dead_code)]
            b: String,
        }
        #[derive(serde::Serialize, schemars::JsonSchema)]
        struct Out {
            id: u32,
        }
        struct Bad;
        impl Action for Bad {
            type Input = In;
            type Output = Out;
            const ID: &'static str = "Do-It";
            const NAME: &'static str = "Do it";
            const DESCRIPTION: &'static str = "";
            const IDEMPOTENCY: Idempotency = Idempotency::None;
            fn sample() -> Out {
                Out { id: 1 }
            }
            async fn call(&self, _: &ActionContext, _: In) -> Result<Out, ConnectorError> {
                Ok(Out { id: 1 })
            }
        }
        let c = Connector::builder("no_such_folder", "X", "x").action(Bad).build();
        let mut problems = vec![];
        check_manifest(&c, &mut problems);
        let fixtures = check_folder(&c, &mut problems);
        let input = json!({"a": "x", "b": "y"});
        check_classification(&c, &BTreeMap::from([("action.Do-It".to_string(), json!({"input": input}))]), &mut problems).await;
        assert!(fixtures.is_empty());
        assert_eq!(
            problems,
            [
                "no_such_folder: the action id `Do-It` must be lowercase letters, digits and `_`, starting with a letter",
                "no_such_folder: the action `Do-It` needs a name and a description",
                "no_such_folder: the input field `b` of action `Do-It` has no description (a doc comment): it is the help text users read",
                "no_such_folder: the output field `id` of action `Do-It` has no description (a doc comment): the data pills of later steps show it",
                "no_such_folder: no folder connectors/no_such_folder (or connectors/declarative/no_such_folder): the folder name is the app id",
                "no_such_folder: action `Do-It` answered 401: it sent no request with the fixture's input (is the input valid?)",
            ]
        );
    }

    #[test]
    fn a_changed_output_schema_changes_the_fingerprint() {
        let a = crate::all().into_iter().find(|c| c.id() == "slack").unwrap();
        let mut b = a.clone();
        assert_eq!(fingerprint(&a), fingerprint(&b));
        b.manifest.actions[0].output_schema["description"] = json!("Reworded.");
        assert_eq!(fingerprint(&a), fingerprint(&b), "a reworded description is no change of shape");
        b.manifest.actions[0].output_schema["properties"]["extra"] = json!({"type": "string"});
        assert_ne!(fingerprint(&a), fingerprint(&b));
        // And the version check reports it when the version stayed.
        let mut problems = vec![];
        check_versions(&[b], false, &mut problems);
        assert!(problems[0].contains("its output schemas changed but its version is still 1"), "{problems:?}");
    }
}
