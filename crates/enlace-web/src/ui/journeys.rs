//! Journeys: the recipes that start one another, drawn as a graph, with live counts per step.
//!
//! The graph is [`enlace_recipe::graph::build`] over the catalog's checked recipes (enabled
//! ones, or all with `?all=1`). It is drawn twice, both server-rendered: an SVG (recipes in
//! columns by how far down a chain they are, each with its steps listed, and a curve from a
//! step to each recipe listening to what it produces; every recipe and step is a link to the
//! editor, so the drawing is keyboard reachable), shown on wide screens, and a stacked list
//! ("emits → listened by"), shown on narrow ones. Counts come from
//! [`enlace_store::Store::flow_counts`] over a window (1 h, 24 h, 7 d, 30 d); the page's
//! script (`/ui/static/journeys.js`) reads `/ui/journeys/counts?window=...` every five seconds
//! and updates the numbers in place. Without the script the page shows the counts of its load.

use std::collections::BTreeMap;

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::routing::get;
use enlace_recipe::graph::{self, Graph, Signal};
use enlace_store::FlowCounts;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Session, UiResult, page};
use crate::AppState;

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/ui/journeys", get(journeys)).route("/ui/journeys/counts", get(counts))
}

/// The windows offered, in milliseconds.
pub const WINDOWS: &[(&str, &str, i64)] = &[
    ("1h", "last hour", 3_600_000),
    ("24h", "last 24 hours", 86_400_000),
    ("7d", "last 7 days", 7 * 86_400_000),
    ("30d", "last 30 days", 30 * 86_400_000),
];

#[derive(Debug, Default, Deserialize)]
pub struct JourneysQuery {
    pub window: Option<String>,
    pub all: Option<String>,
}

fn window(q: &JourneysQuery) -> (&'static str, &'static str, i64) {
    let w = q.window.as_deref().unwrap_or("24h");
    WINDOWS.iter().find(|(k, _, _)| *k == w).copied().unwrap_or(WINDOWS[1])
}

/// The count buckets of a step, from its journal statuses.
pub const BUCKETS: &[(&str, &str)] =
    &[("at", "at it now"), ("passed", "passed"), ("waiting", "waiting"), ("failed", "failed"), ("stopped", "stopped")];

fn bucket(status: &str) -> &'static str {
    match status {
        "running" | "retrying" | "queued" => "at",
        "succeeded" => "passed",
        "waiting" => "waiting",
        "failed" => "failed",
        // `filtered` (a filter stopped the run there), `cancelled`.
        _ => "stopped",
    }
}

/// `{"RECIPE/STEP": {"at": n, "passed": n, ...}, "RECIPE/": {runs by bucket}}`.
pub fn count_map(c: &FlowCounts) -> BTreeMap<String, BTreeMap<&'static str, i64>> {
    let mut out: BTreeMap<String, BTreeMap<&'static str, i64>> = BTreeMap::new();
    let zero = || BUCKETS.iter().map(|(b, _)| (*b, 0)).collect::<BTreeMap<_, _>>();
    for r in &c.runs {
        *out.entry(format!("{}/", r.recipe_id)).or_insert_with(zero).entry(bucket(&r.status)).or_default() += r.runs;
    }
    for s in &c.steps {
        *out.entry(format!("{}/{}", s.recipe_id, s.step_id)).or_insert_with(zero).entry(bucket(&s.status)).or_default() += s.runs;
    }
    out
}

async fn read_counts(s: &AppState, q: &JourneysQuery) -> UiResult<(Value, BTreeMap<String, BTreeMap<&'static str, i64>>)> {
    let (key, label, ms) = window(q);
    let now = s.runner.now_ms();
    let c = s.runner.store().flow_counts(now - ms).await?;
    Ok((json!({"window": key, "label": label, "since": enlace_runner::clock::rfc3339(now - ms)}), count_map(&c)))
}

/// The live counts, as JSON (read by the page's script).
async fn counts(State(s): State<AppState>, _sess: Session, Query(q): Query<JourneysQuery>) -> UiResult<Json<Value>> {
    let (w, map) = read_counts(&s, &q).await?;
    Ok(Json(json!({"window": w, "counts": map})))
}

// ---------------------------------------------------------------- layout

/// Sizes of the drawing, in SVG units (pixels at 1:1).
const COL_W: i64 = 330;
const GAP_X: i64 = 110;
const HEAD_H: i64 = 58;
const ROW_H: i64 = 26;
const GAP_Y: i64 = 28;
const PAD: i64 = 12;

fn cut(s: &str, n: usize) -> String {
    if s.chars().count() <= n { s.to_string() } else { format!("{}…", s.chars().take(n.saturating_sub(1)).collect::<String>()) }
}

fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>().replace('+', "%20")
}

/// The column of each recipe: 0 for a recipe nothing in the graph starts, else one more than
/// the farthest recipe that starts it (cycles are cut after as many rounds as recipes).
pub fn columns(g: &Graph) -> Vec<usize> {
    let n = g.nodes.len();
    let idx = |id: &str| g.nodes.iter().position(|x| x.recipe == id);
    let mut col = vec![0usize; n];
    for _ in 0..n {
        let mut moved = false;
        for e in &g.edges {
            if let (Some(a), Some(b)) = (idx(&e.from_recipe), idx(&e.to_recipe))
                && a != b
                && col[b] < col[a] + 1
                && col[a] + 1 < n
            {
                col[b] = col[a] + 1;
                moved = true;
            }
        }
        if !moved {
            break;
        }
    }
    col
}

fn counts_of(map: &BTreeMap<String, BTreeMap<&'static str, i64>>, key: &str) -> Vec<Value> {
    BUCKETS
        .iter()
        .map(|(b, label)| {
            let n = map.get(key).and_then(|m| m.get(b)).copied().unwrap_or(0);
            json!({"bucket": b, "label": label, "n": n, "key": key})
        })
        .collect()
}

/// The template's data: the SVG's boxes and curves, and the list.
pub fn view(g: &Graph, map: &BTreeMap<String, BTreeMap<&'static str, i64>>) -> Value {
    let cols = columns(g);
    let mut y_at: Vec<i64> = vec![PAD; cols.iter().max().map(|m| m + 1).unwrap_or(0)];
    let mut boxes = vec![];
    // Where each recipe's box is, and each step's row (for the curves).
    let mut pos: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    let mut rows: BTreeMap<(&str, &str), i64> = BTreeMap::new();
    for (i, node) in g.nodes.iter().enumerate() {
        let x = PAD + cols[i] as i64 * (COL_W + GAP_X);
        let y = y_at[cols[i]];
        let h = HEAD_H + node.steps.len() as i64 * ROW_H + 8;
        y_at[cols[i]] = y + h + GAP_Y;
        pos.insert(&node.recipe, (x, y));
        let steps: Vec<Value> = node
            .steps
            .iter()
            .enumerate()
            .map(|(k, st)| {
                let ry = y + HEAD_H + k as i64 * ROW_H;
                rows.insert((&node.recipe, &st.id), ry + ROW_H / 2);
                let key = format!("{}/{}", node.recipe, st.id);
                let c = map.get(&key);
                let n = |b: &str| c.and_then(|m| m.get(b)).copied().unwrap_or(0);
                json!({
                    "id": st.id, "what": st.what, "kind": st.kind,
                    "label": cut(&format!("{}{} · {}", "  ".repeat(st.depth), st.id, st.what), 30),
                    "x": x + 10 + st.depth as i64 * 10, "y": ry + 17, "row_y": ry, "key": key,
                    "passed": n("passed"), "failed": n("failed"), "waiting": n("waiting"), "at": n("at"),
                    "href": format!("/ui/recipes/{}#step-{}", enc(&node.recipe), enc(&st.id)),
                })
            })
            .collect();
        let key = format!("{}/", node.recipe);
        let started: i64 = map.get(&key).map(|m| m.values().sum()).unwrap_or(0);
        boxes.push(json!({
            "recipe": node.recipe, "name": node.name.clone().unwrap_or_else(|| node.recipe.clone()),
            "title": cut(node.name.as_deref().unwrap_or(&node.recipe), 30),
            "enabled": node.enabled, "x": x, "y": y, "w": COL_W, "h": h,
            "text_x": x + 10, "title_y": y + 22, "trigger_y": y + 42, "counts_x": x + COL_W - 10,
            "trigger": cut(&format!("on {}", node.listens.label), 44), "runs_key": key, "started": started,
            "href": format!("/ui/recipes/{}", enc(&node.recipe)),
            "runs_href": format!("/ui/runs?recipe={}", enc(&node.recipe)),
            "steps": steps,
        }));
    }
    let curves: Vec<Value> = g
        .edges
        .iter()
        .filter_map(|e| {
            let y1 = *rows.get(&(e.from_recipe.as_str(), e.from_step.as_str()))?;
            let (fx, _) = *pos.get(e.from_recipe.as_str())?;
            let (tx, ty) = *pos.get(e.to_recipe.as_str())?;
            let x1 = fx + COL_W;
            let y2 = ty + 22;
            let d = if tx > fx {
                let mid = (x1 + tx) / 2;
                format!("M{x1},{y1} C{mid},{y1} {mid},{y2} {tx},{y2}")
            } else {
                // Back to the same or an earlier column (a cycle): round the right side.
                let out = x1 + GAP_X / 2;
                format!("M{x1},{y1} C{out},{y1} {out},{y2} {},{y2}", tx + COL_W)
            };
            Some(json!({"d": d, "maybe": e.maybe, "label": format!("{} {} → {}", e.from_step, e.signal.label(), e.to_recipe)}))
        })
        .collect();
    let width = (cols.iter().max().map(|m| *m as i64 + 1).unwrap_or(1)) * (COL_W + GAP_X) - GAP_X + 2 * PAD + GAP_X / 2;
    let height = y_at.iter().max().copied().unwrap_or(PAD) + PAD;

    // The list: each recipe with its steps, what each step produces and who listens.
    let list: Vec<Value> = g
        .nodes
        .iter()
        .map(|node| {
            let heard_by = |step: &str, sig: &Signal| -> Vec<Value> {
                g.edges
                    .iter()
                    .filter(|e| e.from_recipe == node.recipe && e.from_step == step && &e.signal == sig)
                    .map(|e| json!({"recipe": e.to_recipe, "href": format!("/ui/recipes/{}", enc(&e.to_recipe)), "maybe": e.maybe}))
                    .collect()
            };
            let started_by: Vec<Value> = g
                .edges
                .iter()
                .filter(|e| e.to_recipe == node.recipe)
                .map(|e| json!({"recipe": e.from_recipe, "step": e.from_step, "href": format!("/ui/recipes/{}", enc(&e.from_recipe))}))
                .collect();
            let key = format!("{}/", node.recipe);
            json!({
                "recipe": node.recipe, "name": node.name, "enabled": node.enabled,
                "trigger": node.listens.label,
                "href": format!("/ui/recipes/{}", enc(&node.recipe)),
                "runs_href": format!("/ui/runs?recipe={}", enc(&node.recipe)),
                "runs": counts_of(map, &key),
                "started_by": started_by,
                "steps": node.steps.iter().map(|st| {
                    let key = format!("{}/{}", node.recipe, st.id);
                    json!({
                        "id": st.id, "what": st.what, "indent": st.depth,
                        "href": format!("/ui/recipes/{}#step-{}", enc(&node.recipe), enc(&st.id)),
                        "counts": counts_of(map, &key),
                        "emits": st.produces.iter().filter_map(|sig| {
                            let to = heard_by(&st.id, sig);
                            // Contact changes nobody listens to are not worth a line.
                            (!to.is_empty() || matches!(sig, Signal::Event { .. })).then(|| json!({"label": sig.label(), "to": to}))
                        }).collect::<Vec<_>>(),
                    })
                }).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "svg": {"width": width, "height": height, "boxes": boxes, "curves": curves},
        "list": list,
        "cycles": g.cycles.iter().map(|c| c.join(" → ")).collect::<Vec<_>>(),
        "unheard": g.unheard.iter().map(|u| json!({"recipe": u.recipe, "step": u.step, "label": u.signal.label()})).collect::<Vec<_>>(),
        "edges": g.edges.len(),
    })
}

async fn journeys(State(s): State<AppState>, sess: Session, Query(q): Query<JourneysQuery>) -> UiResult {
    let all = q.all.as_deref().is_some_and(|a| a == "1" || a == "true");
    let mut current = s.runner.catalog().all();
    current.retain(|c| all || c.row.enabled);
    current.sort_by(|a, b| a.row.id.cmp(&b.row.id));
    let inputs: Vec<graph::Input> = current.iter().map(|c| graph::Input { recipe: &c.recipe, enabled: c.row.enabled }).collect();
    let g = graph::build(&inputs);
    let (w, map) = read_counts(&s, &q).await?;
    let mut data = view(&g, &map);
    data["window"] = w;
    data["all"] = json!(all);
    data["windows"] =
        json!(WINDOWS.iter().map(|(k, l, _)| json!({"key": k, "label": l, "selected": *k == window(&q).0})).collect::<Vec<_>>());
    data["empty"] = json!(g.nodes.is_empty());
    Ok(page(&sess, "Journeys", "journeys", data))
}

#[cfg(test)]
fn test_registry() -> enlace_core::Registry {
    enlace_core::Registry::new([
        enlace_connector_webhook::connector(),
        enlace_connector_enlace::connector(),
        enlace_connector_contacts::connector(),
    ])
    .unwrap()
}

/// Two chained recipes (a webhook that emits, a recipe listening), with hostile names and
/// counts: the template tests' sample.
#[cfg(test)]
pub(super) fn sample(evil: &str) -> Value {
    let reg = test_registry();
    let a = format!(
        "id: signup\nname: {evil:?}\ntrigger: {{app: webhook, event: catch, with: {{path: signup}}}}\nsteps:\n  - id: save\n    app: contacts\n    action: upsert_contact\n    with: {{email: \"{{{{trigger.body.email}}}}\"}}\n  - id: announce\n    emit: lead.new\n    data: {{email: \"{{{{trigger.body.email}}}}\"}}\n"
    );
    let b = "id: handle\ntrigger: {app: enlace, event: event, with: {name: lead.new}}\nsteps:\n  - id: wait\n    delay: 1h\n";
    let ra = enlace_recipe::load(&a, None, &reg).unwrap_or_else(|d| panic!("{:?}", d.diagnostics));
    let rb = enlace_recipe::load(b, None, &reg).unwrap_or_else(|d| panic!("{:?}", d.diagnostics));
    let g = graph::build(&[graph::Input { recipe: &ra, enabled: true }, graph::Input { recipe: &rb, enabled: false }]);
    let counts = FlowCounts {
        runs: vec![enlace_store::RunCount { recipe_id: "signup".into(), status: "succeeded".into(), runs: 4 }],
        steps: vec![
            enlace_store::StepCount { recipe_id: "signup".into(), step_id: "announce".into(), status: "succeeded".into(), runs: 3 },
            enlace_store::StepCount { recipe_id: "signup".into(), step_id: "announce".into(), status: "failed".into(), runs: 1 },
            enlace_store::StepCount { recipe_id: "handle".into(), step_id: "wait".into(), status: "waiting".into(), runs: 2 },
        ],
    };
    let mut v = view(&g, &count_map(&counts));
    v["window"] = json!({"window": "24h", "label": "last 24 hours", "since": evil});
    v["windows"] = json!([{"key": "24h", "label": "last 24 hours", "selected": true}]);
    v["all"] = json!(true);
    v["empty"] = json!(false);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVIL: &str = "<b>x</b>\"'&";

    #[test]
    fn counts_go_into_buckets_per_step_and_per_recipe() {
        let c = FlowCounts {
            runs: vec![
                enlace_store::RunCount { recipe_id: "r".into(), status: "succeeded".into(), runs: 2 },
                enlace_store::RunCount { recipe_id: "r".into(), status: "queued".into(), runs: 1 },
                enlace_store::RunCount { recipe_id: "r".into(), status: "filtered".into(), runs: 5 },
            ],
            steps: vec![
                enlace_store::StepCount { recipe_id: "r".into(), step_id: "s".into(), status: "retrying".into(), runs: 1 },
                enlace_store::StepCount { recipe_id: "r".into(), step_id: "s".into(), status: "running".into(), runs: 2 },
                enlace_store::StepCount { recipe_id: "r".into(), step_id: "s".into(), status: "cancelled".into(), runs: 1 },
            ],
        };
        let m = count_map(&c);
        assert_eq!(m["r/"]["passed"], 2);
        assert_eq!(m["r/"]["at"], 1);
        assert_eq!(m["r/"]["stopped"], 5);
        assert_eq!(m["r/s"]["at"], 3, "running and retrying are both at the step");
        assert_eq!(m["r/s"]["stopped"], 1);
        assert_eq!(m["r/s"]["failed"], 0);
    }

    #[test]
    fn the_graph_is_drawn_with_an_edge_labels_links_and_counts() {
        let v = sample(EVIL);
        // The listener is one column to the right of the emitter, and one curve joins them.
        let boxes = v["svg"]["boxes"].as_array().unwrap();
        assert_eq!(boxes[0]["recipe"], "signup");
        assert!(boxes[1]["x"].as_i64().unwrap() > boxes[0]["x"].as_i64().unwrap() + COL_W);
        let curves = v["svg"]["curves"].as_array().unwrap();
        assert_eq!(curves.len(), 1, "{curves:?}");
        assert_eq!(curves[0]["label"], "announce event lead.new → handle");
        let html = crate::ui::render(
            "journeys",
            &json!({"title": "Journeys", "user": {"name": "u", "role": "admin"}, "nav": [], "csrf": "t", "svg": v["svg"], "list": v["list"], "window": v["window"], "windows": v["windows"], "all": true, "edges": 1}),
        );
        assert!(!html.contains("<b>x</b>"), "escaped: {html}");
        assert!(html.contains("&lt;b&gt;x&lt;/b&gt;"), "the hostile name is shown escaped");
        assert!(html.contains("class=\"j-edge\""), "{html}");
        assert!(html.contains("href=\"/ui/recipes/signup#step-announce\""), "each step links to the editor");
        assert!(html.contains("href=\"/ui/runs?recipe&#x3D;signup\""), "each recipe links to its runs (`=` escaped, as Handlebars does)");
        assert!(html.contains("event lead.new → <a href=\"/ui/recipes/handle\">handle</a>"), "the list says who listens: {html}");
        assert!(html.contains("data-count=\"signup/announce\" data-bucket=\"passed\">3<"), "{html}");
        assert!(html.contains("data-count=\"signup/announce\" data-bucket=\"failed\">1<"));
        assert!(html.contains("data-count=\"handle/wait\" data-bucket=\"waiting\">2<"));
        assert!(html.contains("data-count=\"signup/\" data-sum=\"1\">4<"), "runs started in the window");
        assert!(
            html.contains(
                "Starts on <span class=\"mono\">event lead.new</span>, started by <a href=\"/ui/recipes/signup\">signup</a> (announce)"
            ),
            "{html}"
        );
        assert!(html.contains("j-disabled") && html.contains(">disabled</span>"), "a disabled recipe is marked");
        assert!(html.contains("src=\"/ui/static/journeys.js\""));
    }

    #[test]
    fn a_loop_goes_back_and_columns_stay_bounded() {
        let reg = test_registry();
        let ping = enlace_recipe::load(
            "id: ping\ntrigger: {app: enlace, event: event, with: {name: a}}\nsteps:\n  - id: go\n    emit: b\n    data: {}\n",
            None,
            &reg,
        )
        .unwrap();
        let pong = enlace_recipe::load(
            "id: pong\ntrigger: {app: enlace, event: event, with: {name: b}}\nsteps:\n  - id: back\n    emit: a\n    data: {}\n",
            None,
            &reg,
        )
        .unwrap();
        let g = graph::build(&[graph::Input { recipe: &ping, enabled: true }, graph::Input { recipe: &pong, enabled: true }]);
        let cols = columns(&g);
        assert!(cols.iter().all(|c| *c < 2), "{cols:?}");
        let v = view(&g, &BTreeMap::new());
        assert_eq!(v["cycles"], json!(["ping → pong"]));
        assert_eq!(v["svg"]["curves"].as_array().unwrap().len(), 2);
    }
}
