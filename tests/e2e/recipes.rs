//! The recipe format: every shipped recipe validates, and what users read when one does
//! not (snapshots).

fn check(text: &str) -> String {
    match enlace_recipe::load(text, Some("recipe.yaml"), &enlace_connectors::registry()) {
        Ok(r) => format!("ok: {}", r.id),
        Err(d) => d.to_string(),
    }
}

#[test]
fn every_file_under_recipes_validates() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if !matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "json")) {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        if let Err(d) = enlace_recipe::load(&text, Some(&path.display().to_string()), &enlace_connectors::registry()) {
            panic!("{d}");
        }
        n += 1;
    }
    assert!(n >= 1, "recipes/ holds no recipe");
}

#[test]
fn every_problem_is_reported_at_once_with_line_and_path() {
    let text = r#"id: Greet Signups
nme: typo
trigger:
  app: webhook
  event: catch
  with:
    path: /signups
    dedupe_key: "{{trigger.bdy.id}}"
steps:
  - id: post
    app: htp
    action: request
  - id: send
    app: http
    action: reqest
  - id: second
    app: http
    action: request
    with:
      methd: POST
      method: FETCH
      json: "{{steps.later.body}}"
  - id: later
    delay: 3y
  - id: gate
    filter: "{{lowercse trigger.body.email}}"
  - id: post
    emit: Bad Name
"#;
    insta::assert_snapshot!("many_problems", check(text));
}

#[test]
fn json_recipes_get_lines_too() {
    let text = "{\n  \"id\": \"j\",\n  \"trigger\": {\"app\": \"webhook\", \"event\": \"catch\"},\n  \"steps\": [\n    {\"id\": \"a\", \"app\": \"http\", \"action\": \"request\", \"with\": {}}\n  ]\n}\n";
    insta::assert_snapshot!("json_missing_url", check(text));
}

#[test]
fn templates_cannot_read_later_steps_or_unknown_names() {
    let text = r#"
id: refs
vars: {greeting: hi}
trigger: {app: webhook, event: catch}
steps:
  - id: first
    filter: "{{steps.second.ok}}"
  - id: second
    app: http
    action: request
    with:
      url: "https://example.com/{{vars.greting}}"
      json: {i: "{{item.id}}", who: "{{contact.email}}", r: "{{run.nope}}", x: "{{whatever.y}}"}
"#;
    insta::assert_snapshot!("bad_references", check(text));
}

#[test]
fn journey_mistakes_are_explained() {
    let text = r#"
id: j
trigger: {app: webhook, event: catch}
contact: "{{steps.x.id}}"
reentry: twice
exit:
  - event: Purchase!
  - {}
  - if: "{{contact.fields.customer}}"
    match: {a: 1}
steps:
  - id: w
    wait_for: {event: form_submitted, match: {"a..b": 1}}
  - id: ab
    split: {a: 50, B: x}
    paths: {a: [], c: []}
"#;
    insta::assert_snapshot!("journey_mistakes", check(text));
    // Without `contact:` (or a contacts trigger), journey keys and steps are refused with the fix.
    let text = "id: k\ntrigger: {app: webhook, event: catch}\nreentry: once\nsteps:\n  - id: w\n    wait_for: {event: purchase, timeout: 1d}\n  - id: f\n    filter: \"{{contact.email}}\"\n";
    insta::assert_snapshot!("journey_keys_need_a_contact", check(text));
}

#[test]
fn wrong_shapes_are_explained() {
    insta::assert_snapshot!(
        "unquoted_template",
        check("id: a\ntrigger: {app: webhook, event: catch}\nsteps:\n  - id: f\n    filter: {{eq 1 1}}\n")
    );
    insta::assert_snapshot!("empty_file", check(""));
    insta::assert_snapshot!("not_a_map", check("- just\n- a list\n"));
    insta::assert_snapshot!(
        "cron_and_journey_steps",
        check(
            "id: c\ntrigger: {app: schedule, event: cron, with: {cron: '0 9 * *', timezone: Mars/Olympus}}\nsteps:\n  - id: w\n    wait_for: {event: x}\n  - id: two\n    delay: 1d\n    emit: x\n"
        )
    );
    insta::assert_snapshot!(
        "branch_and_retry",
        check(
            "id: b\ntrigger: {app: webhook, event: catch}\nsteps:\n  - id: br\n    branch:\n      - else: [{id: x, delay: 1s}]\n      - if: 'true'\n  - id: act\n    app: http\n    action: request\n    retry: {attempts: 0, backoff: linear}\n    on_error: ignore\n    with: {url: 'https://x.example'}\n"
        )
    );
}

#[test]
fn an_app_with_credentials_needs_a_connection() {
    let without = "id: x\ntrigger: {app: webhook, event: catch}\nsteps:\n  - id: mail\n    app: smtp\n    action: send_email\n    with: {from: a@example.com, to: [b@example.com], subject: Hi, text: Hello}\n";
    let out = check(without);
    assert!(out.contains("recipe.yaml:4:"), "{out}");
    assert!(out.contains("the app `smtp` needs a connection"), "{out}");
    assert!(out.contains("enlace connections create ID --app smtp"), "{out}");
    let with = without.replace("    app: smtp\n", "    app: smtp\n    connection: newsletter\n");
    assert_eq!(check(&with), "ok: x", "{with}");
    // `http` takes a connection only when the call needs credentials.
    let http = "id: y\ntrigger: {app: webhook, event: catch}\nsteps:\n  - id: get\n    app: http\n    action: request\n    with: {url: \"https://example.com\"}\n";
    assert_eq!(check(http), "ok: y");
}

#[test]
fn send_options_and_limits() {
    let mail = "  - id: mail\n    app: smtp\n    action: send_email\n    connection: m\n";
    let with = "    with: {from: a@example.com, to: b@example.com, subject: Hi, text: Hello}\n";
    let ok = format!(
        "id: x\nlimits: {{sends_per_hour: 10, sends_per_day: 100}}\ntrigger: {{app: webhook, event: catch}}\nsteps:\n{mail}    purpose: newsletter\n    transactional: true\n{with}"
    );
    assert_eq!(check(&ok), "ok: x");
    let r = enlace_recipe::load(&ok, Some("recipe.yaml"), &enlace_connectors::registry()).unwrap();
    assert_eq!(r.limits.sends_per_hour, Some(10));
    match &r.steps[0].kind {
        enlace_recipe::model::StepKind::Action(a) => assert_eq!((a.send.purpose.as_str(), a.send.transactional), ("newsletter", true)),
        _ => panic!("an action"),
    }
    let bad = format!(
        "id: x\nlimits: {{sends_per_hour: 0, per_week: 3}}\ntrigger: {{app: webhook, event: catch}}\nsteps:\n{mail}    purpose: News Letter\n    transactional: yes\n{with}  - id: post\n    app: http\n    action: request\n    purpose: marketing\n    with: {{url: 'https://x.example'}}\n"
    );
    let out = check(&bad);
    for expected in [
        "limits.per_week: unknown key",
        "limits.sends_per_hour: must be a whole number of messages, 1 or more",
        "steps[0].purpose: `News Letter` is not a consent purpose",
        "steps[0].transactional: must be true",
        "steps[1].purpose: `purpose` is for steps that send a message to a person",
    ] {
        assert!(out.contains(expected), "missing `{expected}` in:\n{out}");
    }
}
