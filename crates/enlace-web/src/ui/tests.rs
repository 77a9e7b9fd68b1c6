//! The templates rendered with realistic data: every template compiles, values are
//! escaped, every control has a label, and every form that changes something carries the
//! CSRF field.

use serde_json::{Value, json};

use super::auth::{Role, check_password, check_username, hash_password, verify_password};
use super::pages::{explain, line_diff};
use super::templates::TEMPLATES;
use super::{Flash, Form, Session, cookie, render, same_token};

const EVIL: &str = "<script>alert(1)</script>\"'&";

fn session(role: Role) -> Session {
    Session {
        user_id: "u1".into(),
        username: EVIL.into(),
        role,
        csrf: "csrf-token-123".into(),
        flash: Some(Flash { kind: "ok".into(), text: EVIL.into() }),
        path: "/ui/runs".into(),
        base: "http://127.0.0.1:8080".into(),
    }
}

/// The layout's context with the page's data, as `page` builds it.
fn ctx(role: Role, data: Value) -> Value {
    let mut c = session(role).layout();
    c["title"] = json!(EVIL);
    for (k, v) in data.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

/// Each template with data that exercises its branches (and carries hostile text).
fn samples() -> Vec<(&'static str, Value)> {
    let run = json!({"id": "r1", "recipe": EVIL, "version": 2, "status": "failed", "badge": "bad", "attempt": 1, "created": "2026-11-26 10:00:00 UTC", "finished": null});
    let err = json!({"what": "The app refused", "todo": "Reconnect", "class": "auth", "message": EVIL, "hint": EVIL, "step": "send"});
    vec![
        ("error", json!({"status": 404, "message": EVIL, "hint": EVIL, "request_id": "abc"})),
        ("setup", json!({"min_password": 12, "username": EVIL, "error": {"field": "password", "message": EVIL}, "user": null})),
        ("login", json!({"next": "/ui/runs", "username": EVIL, "error": {"message": EVIL}, "user": null})),
        ("home", json!({"recipes": 2, "enabled": 1, "failed": [run], "broken": [{"id": "c1", "name": EVIL, "status": "needs_reconnect"}]})),
        (
            "runs",
            json!({"runs": [run], "recipes": [{"id": EVIL, "selected": true}], "statuses": [{"value": "failed", "selected": true}], "since": EVIL, "until": null, "next": "before=x"}),
        ),
        (
            "run",
            json!({"run": run, "due": null, "error": err, "event": {"source": "webhook", "received": "t", "payload": EVIL},
                   "steps": [{"key": "send", "kind": "action", "status": "waiting", "badge": "warn", "attempts": 1, "input": EVIL, "output": EVIL, "error": err, "reconnect": "smtp-main", "duration_ms": 12}],
                   "held": [{"message": "m1", "recipient": EVIL, "channel": "email", "reason": EVIL}], "can_replay": true, "can_cancel": true}),
        ),
        (
            "apps",
            json!({"apps": [{"id": "mailchimp", "name": EVIL, "description": EVIL, "auth": "API key", "connectable": true, "actions": [EVIL], "triggers": []}], "q": EVIL, "count": 1}),
        ),
        (
            "connect",
            json!({"app": {"id": "mailchimp", "name": EVIL, "description": EVIL, "auth": "API key"}, "kind": "api_key", "oauth": false,
                   "fields": [{"name": "key", "label": "Key", "required": true, "secret": true, "help": EVIL, "error": EVIL}, {"name": "ca_certificate", "label": "Ca certificate", "required": false, "secret": false, "multiline": true, "help": "pem", "value": EVIL}],
                   "id": EVIL, "name": EVIL, "error": EVIL, "id_error": EVIL}),
        ),
        (
            "connections",
            json!({"connections": [{"id": "c1", "app": "smtp", "name": EVIL, "health": "Failing", "badge": "bad", "broken": true, "tested": "t"}]}),
        ),
        (
            "connection",
            json!({"c": {"id": "c1", "app": "smtp", "name": EVIL, "health": "Failing", "badge": "bad", "broken": true, "message": EVIL, "tested": "t"},
                   "app_name": EVIL, "testable": true, "oauth": false, "fields": [{"name": "password", "label": "Password", "required": false, "secret": true, "help": EVIL}]}),
        ),
        (
            "recipes",
            json!({"recipes": [{"id": "r", "name": EVIL, "enabled": true, "version": 1, "trigger": "webhook.request", "steps": 2, "updated": "t"}]}),
        ),
        (
            "recipe",
            json!({"id": "lead", "name": EVIL, "published": true, "enabled": false, "version": 3, "trigger": "webhook.catch", "hook": "http://x/hooks/lead",
                   "draft": {"by": EVIL, "at": "t"}, "listening": false, "sample": {"at": "t", "body": EVIL},
                   "steps": [{"id": "save", "kind": "action", "what": "contacts.upsert_contact", "connection": EVIL},
                             {"id": "vip", "kind": "branch", "what": "", "depth": 0},
                             {"slot": true, "label": EVIL, "into": "/steps/1/branch/0/steps", "count": 1, "depth": 1},
                             {"id": "thanks", "kind": "action", "what": "smtp.send_email", "inner": true, "depth": 1}],
                   "add_options": [{"value": "smtp.send_email", "label": EVIL}],
                   "form": {"index": 1, "step_id": "mail", "kind": "action", "new": true, "app": "smtp", "action": "send_email", "action_name": EVIL, "action_help": EVIL,
                            "takes_connection": true, "connections": [{"id": "smtp-main", "name": EVIL, "selected": true}], "connection_error": EVIL,
                            "reaches": true, "transactional": true, "retry_attempts": 1, "id_error": EVIL, "general": [{"path": "steps[1]", "message": EVIL}],
                            "pills": [{"path": "trigger.body.email", "insert": "{{trigger.body.email}}", "example": EVIL}],
                            "fields": [{"name": "to", "value": EVIL, "multiline": false, "help": EVIL, "required": true, "type": "string", "error": EVIL},
                                       {"name": "attachments", "value": EVIL, "multiline": true, "help": EVIL, "required": false, "type": "array"}]},
                   "test": {"step": "mail", "status": "succeeded", "input": EVIL, "output": EVIL, "requests": [EVIL], "error": {"what": EVIL, "message": EVIL}},
                   "source": EVIL,
                   "versions": [{"version": 3, "created": "t", "current": true}, {"version": 2, "created": "t", "current": false}],
                   "diff": {"from": 2, "to": 3, "lines": [{"op": "add", "text": EVIL}, {"op": "del", "text": "x"}, {"op": "same", "text": "y"}]},
                   "preview": {"sent": 7, "deferred": 1, "blocked": 2, "held": 0, "messages": [{"to": EVIL, "when": "t", "channel": "email", "step": "mail", "decision": "sent"}], "calls": [{"call": "smtp.send_email", "count": 7}], "runs": "{}"},
                   "preview_sample": EVIL, "events": EVIL,
                   "problem": EVIL, "diagnostics": [{"path": "steps[0].with.to", "line": 9, "message": EVIL}]}),
        ),
        (
            "recipe",
            json!({"id": "json-step", "published": false, "trigger": "webhook.catch", "steps": [], "add_options": [], "source": EVIL, "versions": [],
                   "form": {"index": 0, "step_id": "wait", "kind": "delay", "json": EVIL, "pills": [{"path": "trigger.body.x", "insert": "{{trigger.body.x}}", "example": "1"}]}}),
        ),
        (
            "recipe_new",
            json!({"triggers": [{"value": "webhook.catch", "label": EVIL, "selected": true}], "id": EVIL, "name": EVIL, "options": EVIL, "source": EVIL, "problem": EVIL, "diagnostics": [{"path": "id", "line": 1, "message": EVIL}]}),
        ),
        ("journeys", super::journeys::sample(EVIL)),
        (
            "recipe",
            json!({"id": "r", "published": true, "trigger": "webhook.catch", "steps": [{"id": "mail", "kind": "action", "what": "smtp.send_email", "callable": true}], "add_options": [], "source": "x", "versions": [],
                   "call_confirm": {"step": "mail", "sentence": EVIL, "input": EVIL, "key": "k1"},
                   "call": {"step": "mail", "status": "failed", "input": EVIL, "output": EVIL, "error": {"what": EVIL, "message": EVIL, "todo": EVIL}}}),
        ),
        (
            "contacts",
            json!({"contacts": [{"id": "c1", "email": EVIL, "name": EVIL, "tags": [EVIL], "score": 3.5, "updated": "t"}], "q": EVIL, "tag": EVIL}),
        ),
        (
            "contact",
            json!({"c": {"id": "c1", "email": EVIL, "tags": [EVIL], "score": 1.0, "created": "t", "version": 2}, "fields": [{"name": EVIL, "value": EVIL}],
                   "consents": [{"purpose": "marketing", "channel": "email", "status": "granted", "source": EVIL, "ip": "1.2.3.4", "text": EVIL, "recorded": "t"}],
                   "timeline": [{"kind": "created", "at": "t", "data": EVIL}]}),
        ),
        ("tokens", json!({"tokens": [{"name": "ci", "created": "t", "used": null}], "created": {"name": "ci", "token": "enl_secret"}})),
        (
            "users",
            json!({"users": [{"id": "u1", "name": EVIL, "role": "admin", "created": "t", "me": false, "roles": [{"value": "admin", "selected": true}]}], "min_password": 12, "roles": ["admin", "editor", "viewer"]}),
        ),
        ("social", super::social::tests::sample()),
    ]
}

fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let key = format!(" {name}=\"");
    let at = tag.find(&key)? + key.len();
    let end = tag[at..].find('"')?;
    Some(&tag[at..at + end])
}

/// Every `<tag ...>` of the given name.
fn tags<'a>(html: &'a str, name: &str) -> Vec<&'a str> {
    let open = format!("<{name}");
    let mut out = vec![];
    let mut rest = html;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        if after.starts_with([' ', '>']) {
            let end = after.find('>').unwrap_or(after.len());
            out.push(&rest[i..i + open.len() + end + 1]);
        }
        rest = &rest[i + open.len()..];
    }
    out
}

#[test]
fn every_template_renders_escaped() {
    let names: Vec<&str> = samples().iter().map(|(n, _)| *n).collect();
    for (name, _) in TEMPLATES {
        if *name != "layout" {
            assert!(names.contains(name), "no sample for template {name}");
        }
    }
    for (name, data) in samples() {
        let html = render(name, &ctx(Role::Admin, data));
        assert!(html.starts_with("<!doctype html>"), "{name} did not render: {html}");
        assert!(!html.contains("<script>alert"), "{name} let a script through: {html}");
        assert!(!html.contains("This is a bug"), "{name}: {html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{name} shows the hostile text escaped");
        assert!(html.contains("<html lang=\"en\">") && html.contains("name=\"viewport\""), "{name}");
        // No outside host: every script and style sheet is the UI's own.
        for t in tags(&html, "script").into_iter().chain(tags(&html, "link")) {
            let src = attr(t, "src").or_else(|| attr(t, "href")).unwrap_or("");
            assert!(src.starts_with("/ui/static/"), "{name}: {t}");
            assert!(!t.contains("http"), "{name}: {t}");
        }
    }
}

#[test]
fn every_control_has_a_label_and_every_post_form_a_csrf_field() {
    for (name, data) in samples() {
        let html = render(name, &ctx(Role::Admin, data));
        let labels: Vec<&str> = tags(&html, "label").into_iter().filter_map(|t| attr(t, "for")).collect();
        for kind in ["input", "select", "textarea"] {
            for t in tags(&html, kind) {
                if attr(t, "type") == Some("hidden") {
                    continue;
                }
                let labelled = attr(t, "aria-label").is_some() || attr(t, "id").is_some_and(|id| labels.contains(&id));
                // A checkbox may sit inside its label.
                let wrapped = attr(t, "type") == Some("checkbox") && html.contains(&format!("<label class=\"inline\">{t}"));
                assert!(labelled || wrapped, "{name}: a control without a label: {t}");
            }
        }
        let mut rest = html.as_str();
        while let Some(i) = rest.find("<form") {
            let end = rest[i..].find("</form>").map(|e| i + e).unwrap_or(rest.len());
            let form = &rest[i..end];
            let open = &form[..form.find('>').unwrap_or(form.len())];
            if open.contains("method=\"post\"") {
                // (The setup and sign-in forms get their pre-session token the same way.)
                let token = "value=\"csrf-token-123\"";
                assert!(form.contains("name=\"_csrf\"") && form.contains(token), "{name}: a POST form without the CSRF field: {open}");
            }
            rest = &rest[end..];
        }
    }
}

#[test]
fn the_layout_marks_the_current_page_and_hides_edit_controls_from_viewers() {
    let html = render("runs", &ctx(Role::Viewer, json!({"runs": [], "recipes": [], "statuses": []})));
    assert!(html.contains("<a href=\"/ui/runs\" aria-current=\"page\">Runs</a>"), "{html}");
    assert!(html.contains("<a class=\"skip\" href=\"#main\">"));
    assert!(html.contains("<main id=\"main\""));
    let html = render("recipes", &ctx(Role::Viewer, json!({"recipes": []})));
    assert!(!html.contains("/ui/recipes/new"), "a viewer is not offered a new recipe");
    let html = render(
        "recipe",
        &ctx(
            Role::Viewer,
            json!({"id": "r", "published": true, "steps": [{"id": "s", "kind": "action"}], "source": "x", "versions": [{"version": 2, "current": false}]}),
        ),
    );
    assert!(
        !html.contains("/steps/s/test") && !html.contains("/rollback") && !html.contains("/enable"),
        "a viewer gets no editing controls: {html}"
    );
    assert!(html.contains(" readonly"), "the source is read-only for a viewer");
    let html = render("recipes", &ctx(Role::Editor, json!({"recipes": []})));
    assert!(html.contains("/ui/recipes/new"));
    let html =
        render("contact", &ctx(Role::Editor, json!({"c": {"id": "c1", "email": "a@b"}, "fields": [], "consents": [], "timeline": []})));
    assert!(!html.contains("/erase"), "only admins see the erase form");
}

#[test]
fn the_error_page_says_what_and_what_to_do() {
    let html =
        render("error", &json!({"title": "This form has expired", "status": 403, "message": "no token", "hint": "Reload", "user": null}));
    assert!(html.contains("<h1 id=\"err-title\">This form has expired</h1>"));
    assert!(html.contains("Reload") && html.contains("Error 403"));
    assert!(!html.contains("<nav"), "no navigation without a session");
}

#[test]
fn roles_are_ordered() {
    assert!(Role::Admin.at_least(Role::Editor) && Role::Editor.at_least(Role::Viewer) && Role::Admin.at_least(Role::Admin));
    assert!(!Role::Viewer.at_least(Role::Editor) && !Role::Editor.at_least(Role::Admin));
    for r in Role::ALL {
        assert_eq!(Role::parse(r.as_str()), Some(r));
    }
    assert_eq!(Role::parse("root"), None);
    assert!(session(Role::Viewer).require(Role::Editor).is_err());
    assert!(session(Role::Editor).require(Role::Editor).is_ok());
}

#[test]
fn passwords_hash_with_argon2id_and_a_salt() {
    let a = hash_password("correct horse battery").unwrap();
    let b = hash_password("correct horse battery").unwrap();
    assert!(a.starts_with("$argon2id$"), "{a}");
    assert_ne!(a, b, "a fresh salt each time");
    assert!(verify_password("correct horse battery", &a));
    assert!(!verify_password("correct horse batterY", &a));
    assert!(!verify_password("x", "not a hash"));
    assert!(check_password("short", "short").is_err());
    assert!(check_password("long enough password", "long enough passwore").is_err());
    assert!(check_password("long enough password", "long enough password").is_ok());
    assert_eq!(check_username("  Ana@Example.com ").unwrap(), "ana@example.com");
    assert!(check_username("a b").is_err() && check_username("").is_err());
}

#[test]
fn forms_cookies_and_tokens() {
    let f = Form::parse(b"_csrf=abc&source=a%3A+1%0Ab&message=m1&message=m2");
    assert_eq!(f.get("source"), Some("a: 1\nb"));
    assert_eq!(f.0.iter().filter(|(k, _)| k == "message").count(), 2);
    let mut h = axum::http::HeaderMap::new();
    h.insert("cookie", "a=1; enlace_session=xyz; b=2".parse().unwrap());
    assert_eq!(cookie(&h, "enlace_session").as_deref(), Some("xyz"));
    assert_eq!(cookie(&h, "enlace"), None);
    assert!(same_token("abc", "abc") && !same_token("abc", "abd") && !same_token("abc", "ab"));
}

#[test]
fn errors_are_explained_by_class_and_versions_diff_by_line() {
    let e = explain(&json!({"class": "transient", "message": "connection refused", "step": "mail"}));
    assert!(e["what"].as_str().unwrap().contains("failed for a moment"));
    assert!(e["todo"].as_str().unwrap().contains("replay"));
    assert_eq!(e["message"], "connection refused");
    let d = line_diff("a\nb\nc", "a\nc\nd");
    let ops: Vec<(&str, &str)> = d.iter().map(|l| (l["op"].as_str().unwrap(), l["text"].as_str().unwrap())).collect();
    assert_eq!(ops, [("same", "a"), ("del", "b"), ("same", "c"), ("add", "d")]);
}

#[test]
fn inner_steps_are_placed_with_their_lists_and_checker_paths() {
    use super::editor::{diag_path, inner_lists, placed_steps};
    let source = json!({"steps": [
        {"id": "b", "branch": [{"if": "{{trigger.body.vip}}", "steps": [{"id": "s1", "app": "smtp", "action": "send_email"}]}, {"else": [{"id": "s2", "delay": "1h"}]}]},
        {"id": "sp", "split": {"a": 50, "b/c": 50}, "paths": {"a": [{"id": "s3", "emit": "x"}], "b/c": []}},
        {"id": "each", "foreach": "{{trigger.body.items}}", "steps": [{"id": "s4", "filter": "{{item.ok}}"}]}
    ]});
    let placed: Vec<(String, String, usize, usize)> =
        placed_steps(&source).into_iter().map(|p| (p.step["id"].as_str().unwrap().to_string(), p.list, p.index, p.depth)).collect();
    assert_eq!(
        placed,
        vec![
            ("b".into(), "/steps".into(), 0, 0),
            ("s1".into(), "/steps/0/branch/0/steps".into(), 0, 1),
            ("s2".into(), "/steps/0/branch/1/else".into(), 0, 1),
            ("sp".into(), "/steps".into(), 1, 0),
            ("s3".into(), "/steps/1/paths/a".into(), 0, 1),
            ("each".into(), "/steps".into(), 2, 0),
            ("s4".into(), "/steps/2/steps".into(), 0, 1),
        ]
    );
    // A path's name with a slash is escaped in the pointer, and read back in the checker's path.
    let lists = inner_lists("/steps/1", &source["steps"][1]);
    assert_eq!(lists[1], ("path b/c".to_string(), "/steps/1/paths/b~1c".to_string()));
    assert!(source.pointer("/steps/1/paths/b~1c").is_some());
    // The checker's paths, as `enlace validate` prints them.
    assert_eq!(diag_path("/steps", 2), "steps[2]");
    assert_eq!(diag_path("/steps/0/branch/0/steps", 0), "steps[0].branch[0].steps[0]");
    assert_eq!(diag_path("/steps/0/branch/1/else", 3), "steps[0].branch[1].else[3]");
    assert_eq!(diag_path("/steps/1/paths/a", 0), "steps[1].paths.a[0]");
    assert_eq!(diag_path("/steps/1/paths/b~1c", 0), "steps[1].paths.b/c[0]");
}
