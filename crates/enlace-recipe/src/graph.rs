//! Journeys as a graph: which recipe's step starts which recipe.
//!
//! Built from checked recipes only (no store, no network), so the web UI's Journeys page
//! and its tests share one pure function, [`build`]. A node is a recipe with its steps in
//! order (inner steps of branches, loops and splits indented under theirs); an edge goes
//! from a step to every recipe whose trigger listens to what that step produces:
//!
//! - an `emit` step produces the event of its name; recipes triggered by `enlace.event`
//!   with that `name` listen to it (exactly what the runner does);
//! - the contact store's actions produce contact changes, known from the action alone:
//!   `contacts.upsert_contact` (contact created or updated, timeline `created` or
//!   `fields_updated`), `set_fields` (updated, `fields_updated`), `add_tag` (tag added, with
//!   its tag when the step writes it as a literal; `tag_added`), `remove_tag` (`tag_removed`),
//!   `record_consent` (`consent_recorded`), `add_note` (`note_added`) and `record_event`
//!   (its `kind` when written as a literal). Recipes triggered by `contacts.*` listen to
//!   them, narrowed by their `tag` or `kind` as the store narrows them.
//!
//! What is not drawn, because the checked recipe does not say it: contact changes made from
//! outside a recipe (the API, `/track` page views, forms, email opens and clicks), events a
//! step produces only at run time (a templated tag or kind is drawn as "any tag" / "any
//! kind" and matched as a possibility, marked `maybe`), and the lead-scoring thresholds'
//! events (installation settings, not recipes). Those recipes are drawn with their trigger
//! as where they start.

use std::collections::BTreeSet;

use enlace_core::contacts::ContactTrigger;
use serde::Serialize;

use crate::model::{Mapping, Recipe, Step, StepKind, TriggerConfig};

/// What a step produces that a trigger may listen to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Signal {
    /// `emit: NAME` (heard by `enlace.event` with that name).
    Event { name: String },
    /// A contact change: `contact_created`, `contact_updated`, `tag_added` (with the tag if
    /// known) or a timeline entry (`event`, with its kind if known).
    Contact { trigger: String, detail: Option<String> },
}

impl Signal {
    fn contact(t: ContactTrigger, detail: Option<&str>) -> Signal {
        Signal::Contact { trigger: t.id().to_string(), detail: detail.map(str::to_string) }
    }

    /// How the page names it: `event lead.qualified`, `contact created`, `tag vip added`,
    /// `timeline purchase`.
    pub fn label(&self) -> String {
        match self {
            Signal::Event { name } => format!("event {name}"),
            Signal::Contact { trigger, detail } => match (trigger.as_str(), detail.as_deref()) {
                ("contact_created", _) => "contact created".into(),
                ("contact_updated", _) => "contact updated".into(),
                ("tag_added", Some(t)) => format!("tag {t} added"),
                ("tag_added", None) => "a tag added".into(),
                ("event", Some(k)) => format!("timeline {k}"),
                ("event", None) => "a timeline entry".into(),
                (other, _) => other.replace('_', " "),
            },
        }
    }
}

/// A recipe's trigger, as the graph needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Listen {
    /// `webhook.catch`, `enlace.event`, `contacts.tag_added`...
    pub trigger: String,
    /// What it listens to, when a recipe's step can produce it.
    pub signal: Option<Signal>,
    /// How the page names where runs start (`event lead.qualified`, `POST /hooks/welcome`,
    /// `cron 0 9 * * *`, `timeline page_viewed`...).
    pub label: String,
}

/// A step of a recipe node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepNode {
    pub id: String,
    /// `action`, `filter`, `emit`...
    pub kind: &'static str,
    /// What it does: `smtp.send_email`, `emit lead.qualified`, `delay`...
    pub what: String,
    /// 0 for a top-level step, 1 inside a branch, loop or split, and so on.
    pub depth: usize,
    /// What it produces that a trigger may listen to.
    pub produces: Vec<Signal>,
}

/// A recipe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Node {
    pub recipe: String,
    pub name: Option<String>,
    pub enabled: bool,
    pub listens: Listen,
    pub steps: Vec<StepNode>,
}

/// From a step to a recipe whose trigger listens to what it produces.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Edge {
    pub from_recipe: String,
    pub from_step: String,
    pub to_recipe: String,
    pub signal: Signal,
    /// True when the match depends on a value known only at run time (a templated tag or
    /// kind), or the action produces it only sometimes (an upsert creates *or* updates).
    pub maybe: bool,
}

/// A step producing something no recipe in the graph listens to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Unheard {
    pub recipe: String,
    pub step: String,
    pub signal: Signal,
}

/// The whole picture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Graph {
    /// In the order given (the caller sorts).
    pub nodes: Vec<Node>,
    /// Sorted, without duplicates.
    pub edges: Vec<Edge>,
    /// `emit` events nobody listens to (contact changes nobody listens to are left out:
    /// every contacts action makes some).
    pub unheard: Vec<Unheard>,
    /// Recipes that start one another in a loop (each cycle once, as its recipe ids sorted).
    pub cycles: Vec<Vec<String>>,
}

/// A recipe's enabled state is its catalog row's, not its source's: the caller says it.
pub struct Input<'a> {
    pub recipe: &'a Recipe,
    pub enabled: bool,
}

fn literal(m: Option<&Mapping>) -> Option<String> {
    match m? {
        Mapping::Literal(serde_json::Value::String(s)) => Some(s.clone()),
        Mapping::Template(t) if t.is_literal() => Some(t.source().to_string()),
        _ => None,
    }
}

fn with_field<'a>(with: &'a Mapping, name: &str) -> Option<&'a Mapping> {
    match with {
        Mapping::Object(fields) => fields.iter().find(|(k, _)| k == name).map(|(_, m)| m),
        _ => None,
    }
}

/// What a step produces (see the module's documentation), and whether it is only maybe.
fn produces(step: &Step) -> (Vec<Signal>, bool) {
    use ContactTrigger::*;
    let timeline = |k: &str| Signal::contact(Event, Some(k));
    match &step.kind {
        StepKind::Emit { name, .. } => (vec![Signal::Event { name: name.clone() }], false),
        StepKind::Action(a) if a.app == "contacts" => match a.action.as_str() {
            "upsert_contact" => (
                vec![
                    Signal::contact(ContactCreated, None),
                    Signal::contact(ContactUpdated, None),
                    timeline("created"),
                    timeline("fields_updated"),
                ],
                true,
            ),
            "set_fields" => (vec![Signal::contact(ContactUpdated, None), timeline("fields_updated")], false),
            "add_tag" => {
                let tag = literal(with_field(&a.with, "tag")).and_then(|t| enlace_core::contacts::normalize_tag(&t).ok());
                (vec![Signal::contact(TagAdded, tag.as_deref()), timeline("tag_added")], false)
            }
            "remove_tag" => (vec![timeline("tag_removed")], false),
            "record_consent" => (vec![timeline("consent_recorded")], false),
            "add_note" => (vec![timeline("note_added")], false),
            "record_event" => (vec![Signal::contact(Event, literal(with_field(&a.with, "kind")).as_deref())], false),
            _ => (vec![], false),
        },
        _ => (vec![], false),
    }
}

fn what(step: &Step) -> String {
    match &step.kind {
        StepKind::Action(a) => format!("{}.{}", a.app, a.action),
        StepKind::Emit { name, .. } => format!("emit {name}"),
        StepKind::WaitFor(w) => format!("wait for {}", w.event),
        k => k.name().to_string(),
    }
}

fn flatten(steps: &[Step], depth: usize, out: &mut Vec<StepNode>, maybes: &mut Vec<bool>) {
    for s in steps {
        let (p, maybe) = produces(s);
        out.push(StepNode { id: s.id.clone(), kind: s.kind.name(), what: what(s), depth, produces: p });
        maybes.push(maybe);
        match &s.kind {
            StepKind::Branch { arms, otherwise } => {
                for a in arms {
                    flatten(&a.steps, depth + 1, out, maybes);
                }
                if let Some(o) = otherwise {
                    flatten(o, depth + 1, out, maybes);
                }
            }
            StepKind::Foreach { steps, .. } => flatten(steps, depth + 1, out, maybes),
            StepKind::Split { paths, .. } => {
                for (_, p) in paths {
                    flatten(p, depth + 1, out, maybes);
                }
            }
            _ => {}
        }
    }
}

fn listen(r: &Recipe) -> Listen {
    let trigger = format!("{}.{}", r.trigger.app, r.trigger.event);
    let (signal, label) = match &r.trigger.config {
        TriggerConfig::Event { name } => (Some(Signal::Event { name: name.clone() }), format!("event {name}")),
        TriggerConfig::Contact { trigger: t, tag, kind } => {
            let detail = match t {
                ContactTrigger::TagAdded => tag.as_deref(),
                ContactTrigger::Event => kind.as_deref(),
                _ => None,
            };
            let s = Signal::contact(*t, detail);
            let label = s.label();
            (Some(s), label)
        }
        TriggerConfig::Webhook(w) => (None, format!("POST /hooks/{}", w.path)),
        TriggerConfig::Subscribe { hook, .. } => (None, format!("{trigger} (POST /hooks/{})", hook.path)),
        TriggerConfig::Cron(c) => (None, format!("cron {} ({})", c.expression, c.timezone)),
        TriggerConfig::Polling { .. } => (None, format!("{trigger}, polled")),
    };
    Listen { trigger, signal, label }
}

/// Whether a trigger listening to `want` hears `got`; `Some(true)` when only maybe (the
/// produced value is known only at run time).
fn hears(want: &Signal, got: &Signal) -> Option<bool> {
    match (want, got) {
        (Signal::Event { name: a }, Signal::Event { name: b }) => (a == b).then_some(false),
        (Signal::Contact { trigger: ta, detail: da }, Signal::Contact { trigger: tb, detail: db }) if ta == tb => match (da, db) {
            (None, _) => Some(false),
            (Some(a), Some(b)) => (a == b).then_some(false),
            (Some(_), None) => Some(true),
        },
        _ => None,
    }
}

/// Builds the graph of `recipes` (see the module's documentation).
pub fn build(recipes: &[Input<'_>]) -> Graph {
    let mut nodes = Vec::with_capacity(recipes.len());
    let mut maybes = Vec::with_capacity(recipes.len());
    for i in recipes {
        let mut steps = vec![];
        let mut m = vec![];
        flatten(&i.recipe.steps, 0, &mut steps, &mut m);
        nodes.push(Node { recipe: i.recipe.id.clone(), name: i.recipe.name.clone(), enabled: i.enabled, listens: listen(i.recipe), steps });
        maybes.push(m);
    }
    let mut edges = BTreeSet::new();
    let mut unheard = BTreeSet::new();
    for (n, from) in nodes.iter().enumerate() {
        for (k, step) in from.steps.iter().enumerate() {
            for sig in &step.produces {
                let mut heard = false;
                for to in &nodes {
                    let Some(want) = &to.listens.signal else { continue };
                    if let Some(maybe) = hears(want, sig) {
                        heard = true;
                        edges.insert(Edge {
                            from_recipe: from.recipe.clone(),
                            from_step: step.id.clone(),
                            to_recipe: to.recipe.clone(),
                            signal: sig.clone(),
                            maybe: maybe || maybes[n][k],
                        });
                    }
                }
                if !heard && matches!(sig, Signal::Event { .. }) {
                    unheard.insert(Unheard { recipe: from.recipe.clone(), step: step.id.clone(), signal: sig.clone() });
                }
            }
        }
    }
    let edges: Vec<Edge> = edges.into_iter().collect();
    let cycles = cycles(&nodes, &edges);
    Graph { nodes, edges, unheard: unheard.into_iter().collect(), cycles }
}

/// The strongly connected groups of recipes that start one another (Tarjan's algorithm), a
/// recipe starting itself included.
fn cycles(nodes: &[Node], edges: &[Edge]) -> Vec<Vec<String>> {
    let idx = |id: &str| nodes.iter().position(|n| n.recipe == id);
    let n = nodes.len();
    let mut adj = vec![BTreeSet::new(); n];
    for e in edges {
        if let (Some(a), Some(b)) = (idx(&e.from_recipe), idx(&e.to_recipe)) {
            adj[a].insert(b);
        }
    }
    struct T {
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        out: Vec<Vec<usize>>,
    }
    fn visit(v: usize, adj: &[BTreeSet<usize>], t: &mut T) {
        t.index[v] = Some(t.next);
        t.low[v] = t.next;
        t.next += 1;
        t.stack.push(v);
        t.on[v] = true;
        for &w in &adj[v] {
            match t.index[w] {
                None => {
                    visit(w, adj, t);
                    t.low[v] = t.low[v].min(t.low[w]);
                }
                Some(iw) if t.on[w] => t.low[v] = t.low[v].min(iw),
                _ => {}
            }
        }
        if Some(t.low[v]) == t.index[v] {
            let mut group = vec![];
            while let Some(w) = t.stack.pop() {
                t.on[w] = false;
                group.push(w);
                if w == v {
                    break;
                }
            }
            if group.len() > 1 || adj[v].contains(&v) {
                t.out.push(group);
            }
        }
    }
    let mut t = T { index: vec![None; n], low: vec![0; n], on: vec![false; n], stack: vec![], next: 0, out: vec![] };
    for v in 0..n {
        if t.index[v].is_none() {
            visit(v, &adj, &mut t);
        }
    }
    let mut out: Vec<Vec<String>> = t
        .out
        .into_iter()
        .map(|g| {
            let mut ids: Vec<String> = g.into_iter().map(|i| nodes[i].recipe.clone()).collect();
            ids.sort();
            ids
        })
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> enlace_core::Registry {
        enlace_core::Registry::new([
            enlace_connector_webhook::connector(),
            enlace_connector_enlace::connector(),
            enlace_connector_contacts::connector(),
        ])
        .unwrap()
    }

    fn load(yaml: &str) -> Recipe {
        crate::load(yaml, None, &registry()).unwrap_or_else(|d| panic!("{:?}", d.diagnostics))
    }

    fn graph(yamls: &[&str]) -> Graph {
        let rs: Vec<Recipe> = yamls.iter().map(|y| load(y)).collect();
        let inputs: Vec<Input> = rs.iter().map(|r| Input { recipe: r, enabled: true }).collect();
        build(&inputs)
    }

    fn pairs(g: &Graph) -> Vec<(String, String, String, bool)> {
        g.edges.iter().map(|e| (e.from_step.clone(), e.to_recipe.clone(), e.signal.label(), e.maybe)).collect()
    }

    const SIGNUP: &str = r#"
id: signup
trigger: {app: webhook, event: catch, with: {path: signup}}
steps:
  - id: check
    filter: "{{trigger.body.email}}"
  - id: announce
    emit: lead.new
    data: {email: "{{trigger.body.email}}"}
"#;

    const HANDLE: &str = r#"
id: handle
trigger: {app: enlace, event: event, with: {name: lead.new}}
steps:
  - id: tell
    emit: lead.told
    data: {email: "{{trigger.email}}"}
"#;

    #[test]
    fn an_emit_reaches_every_recipe_listening_to_its_name() {
        let also = HANDLE.replace("id: handle", "id: also").replace("lead.told", "nobody.listens");
        let g = graph(&[SIGNUP, HANDLE, &also]);
        assert_eq!(
            pairs(&g),
            vec![
                ("announce".to_string(), "also".to_string(), "event lead.new".to_string(), false),
                ("announce".to_string(), "handle".to_string(), "event lead.new".to_string(), false),
            ]
        );
        assert!(g.edges.iter().all(|e| e.from_recipe == "signup"));
        // The events nobody listens to are listed, each once.
        let unheard: Vec<String> = g.unheard.iter().map(|u| format!("{}/{} {}", u.recipe, u.step, u.signal.label())).collect();
        assert_eq!(unheard, vec!["also/tell event nobody.listens", "handle/tell event lead.told"]);
        assert!(g.cycles.is_empty());
        // The nodes: steps in order with what they do; triggers named.
        let signup = &g.nodes[0];
        assert_eq!(signup.listens.label, "POST /hooks/signup");
        assert_eq!(signup.listens.signal, None);
        let steps: Vec<(&str, &str, &str)> = signup.steps.iter().map(|s| (s.id.as_str(), s.kind, s.what.as_str())).collect();
        assert_eq!(steps, vec![("check", "filter", "filter"), ("announce", "emit", "emit lead.new")]);
        assert_eq!(g.nodes[1].listens.label, "event lead.new");
    }

    #[test]
    fn an_unknown_event_draws_no_edge() {
        let g = graph(&[SIGNUP, &HANDLE.replace("name: lead.new", "name: lead.other")]);
        assert!(g.edges.is_empty());
        assert_eq!(g.unheard.len(), 2);
        assert_eq!(g.unheard[1].signal, Signal::Event { name: "lead.new".into() });
    }

    #[test]
    fn cycles_are_found_self_loops_too() {
        let ping = "id: ping\ntrigger: {app: enlace, event: event, with: {name: a}}\nsteps:\n  - id: go\n    emit: b\n    data: {}\n";
        let pong = "id: pong\ntrigger: {app: enlace, event: event, with: {name: b}}\nsteps:\n  - id: back\n    emit: a\n    data: {}\n";
        let me = "id: me\ntrigger: {app: enlace, event: event, with: {name: c}}\nsteps:\n  - id: again\n    emit: c\n    data: {}\n";
        let g = graph(&[ping, pong, me, SIGNUP]);
        assert_eq!(g.cycles, vec![vec!["me".to_string()], vec!["ping".to_string(), "pong".to_string()]]);
        assert_eq!(g.edges.len(), 3);
    }

    #[test]
    fn contact_actions_reach_contact_triggers_narrowed_by_tag_and_kind() {
        let writer = r#"
id: writer
trigger: {app: webhook, event: catch, with: {path: w}}
steps:
  - id: save
    app: contacts
    action: upsert_contact
    with: {email: "{{trigger.body.email}}"}
  - id: choose
    branch:
      - if: "{{trigger.body.vip}}"
        steps:
          - id: vip
            app: contacts
            action: add_tag
            with: {email: "{{trigger.body.email}}", tag: " vip "}
          - id: shout
            app: contacts
            action: add_tag
            with: {email: "{{trigger.body.email}}", tag: VIP}
      - else:
          - id: some-tag
            app: contacts
            action: add_tag
            with: {email: "{{trigger.body.email}}", tag: "{{trigger.body.tag}}"}
  - id: bought
    app: contacts
    action: record_event
    with: {email: "{{trigger.body.email}}", kind: purchase}
"#;
        let created = "id: on-created\ntrigger: {app: contacts, event: contact_created}\nsteps:\n  - id: x\n    emit: done\n    data: {}\n";
        let vip =
            "id: on-vip\ntrigger: {app: contacts, event: tag_added, with: {tag: vip}}\nsteps:\n  - id: x\n    emit: done\n    data: {}\n";
        let purchase = "id: on-purchase\ntrigger: {app: contacts, event: event, with: {kind: purchase}}\nsteps:\n  - id: x\n    emit: done\n    data: {}\n";
        let cart = "id: on-cart\ntrigger: {app: contacts, event: event, with: {kind: cart_abandoned}}\nsteps:\n  - id: x\n    emit: done\n    data: {}\n";
        let g = graph(&[writer, created, vip, purchase, cart]);
        assert_eq!(
            pairs(&g),
            vec![
                ("bought".to_string(), "on-purchase".to_string(), "timeline purchase".to_string(), false),
                ("save".to_string(), "on-created".to_string(), "contact created".to_string(), true),
                ("some-tag".to_string(), "on-vip".to_string(), "a tag added".to_string(), true),
                ("vip".to_string(), "on-vip".to_string(), "tag vip added".to_string(), false),
            ]
        );
        // Inner steps are listed under their branch, one level in.
        let w = &g.nodes[0];
        let depths: Vec<(&str, usize)> = w.steps.iter().map(|s| (s.id.as_str(), s.depth)).collect();
        assert_eq!(depths, vec![("save", 0), ("choose", 0), ("vip", 1), ("shout", 1), ("some-tag", 1), ("bought", 0)]);
        // Tags are compared as the store compares them: trimmed, case kept (`VIP` is not `vip`).
        assert!(!g.edges.iter().any(|e| e.from_step == "shout"));
        assert_eq!(g.nodes[4].listens.label, "timeline cart_abandoned");
        // Contact changes nobody listens to are not "unheard": every contacts action makes some.
        assert_eq!(g.unheard.len(), 4, "only the four `done` emits: {:?}", g.unheard);
    }

    #[test]
    fn signals_are_labelled() {
        assert_eq!(Signal::Event { name: "a.b".into() }.label(), "event a.b");
        assert_eq!(Signal::contact(ContactTrigger::ContactUpdated, None).label(), "contact updated");
        assert_eq!(Signal::contact(ContactTrigger::Event, None).label(), "a timeline entry");
    }
}
