//! Lead scoring as data and arithmetic, free of IO: the rules (points per timeline kind,
//! optionally narrowed by the entry's data), the decay (a half-life), and the thresholds that
//! emit an event when a contact's score crosses them upward.
//!
//! The store keeps one score per contact as `(points, as_of)`: the score at `as_of`. Its
//! value at a later time `t` is `points * 0.5^((t - as_of) / half_life)`. An entry worth `p`
//! at time `at` adds `p` to the score decayed to `at` (or, for an entry older than `as_of`,
//! adds `p` decayed from `at` to `as_of`), so entries arriving out of order give the same
//! score as in order.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::duration::{format_duration, parse_duration};

/// Rules at most, thresholds at most.
pub const MAX_RULES: usize = 200;
pub const MAX_THRESHOLDS: usize = 20;

/// The scoring configuration of an installation, as `PUT /api/v1/scoring` takes it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoringRules {
    /// How long until a point counts half (`14d`); no decay when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub half_life: Option<String>,
    /// Every rule matching an entry adds its points.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// Crossing one upward emits its event once; it fires again only after the score fell
    /// below it.
    #[serde(default)]
    pub thresholds: Vec<Threshold>,
}

/// Points for the timeline entries of one kind, optionally only those whose data match.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// The timeline kind (`page_viewed`, `email_clicked`, `purchase`).
    pub kind: String,
    /// Points added (negative ones subtract).
    pub points: f64,
    /// Only entries whose data has these values: `{url: "https://shop.example.com/pricing*"}`.
    /// A string ending in `*` is a prefix; anything else must be equal.
    #[serde(default, rename = "match", skip_serializing_if = "Map::is_empty")]
    pub matches: Map<String, Value>,
}

/// A score that emits an event when crossed upward.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Threshold {
    /// The threshold's name (`qualified`), a slug.
    pub name: String,
    /// The score to reach.
    pub score: f64,
    /// The event emitted (`lead.qualified`): recipes with the trigger `enlace.event` and this
    /// name start, with `{contact, score, threshold}`.
    pub event: String,
}

/// One problem of a configuration: where, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

/// The checked form the store applies.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scoring {
    pub half_life_ms: Option<i64>,
    pub rules: Vec<Rule>,
    pub thresholds: Vec<Threshold>,
}

fn is_slug(s: &str, extra: &[char]) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || extra.contains(&c))
}

impl ScoringRules {
    /// Checks every rule and threshold, reporting every problem at once.
    pub fn check(&self) -> Result<Scoring, Vec<Problem>> {
        let mut problems = vec![];
        let mut bad = |path: String, message: String| problems.push(Problem { path, message });
        let half_life_ms = match &self.half_life {
            None => None,
            Some(h) => match parse_duration(h) {
                Ok(d) if d.as_millis() >= 60_000 => Some(d.as_millis() as i64),
                Ok(_) => {
                    bad("half_life".into(), format!("`{h}` is shorter than a minute; use something like `14d`"));
                    None
                }
                Err(e) => {
                    bad("half_life".into(), e);
                    None
                }
            },
        };
        if self.rules.len() > MAX_RULES {
            bad("rules".into(), format!("{} rules, more than the {MAX_RULES} allowed", self.rules.len()));
        }
        for (i, r) in self.rules.iter().enumerate() {
            if let Err(e) = crate::contacts::check_kind(&r.kind) {
                bad(format!("rules[{i}].kind"), e);
            }
            if !r.points.is_finite() || r.points.abs() > 1e6 {
                bad(format!("rules[{i}].points"), "must be a number between -1000000 and 1000000".into());
            }
            for (k, v) in &r.matches {
                if !matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_)) {
                    bad(format!("rules[{i}].match.{k}"), "must be a string (ending in `*` for a prefix), a number or a boolean".into());
                }
            }
        }
        if self.thresholds.len() > MAX_THRESHOLDS {
            bad("thresholds".into(), format!("{} thresholds, more than the {MAX_THRESHOLDS} allowed", self.thresholds.len()));
        }
        for (i, t) in self.thresholds.iter().enumerate() {
            if !is_slug(&t.name, &[]) {
                bad(
                    format!("thresholds[{i}].name"),
                    format!("`{}` is not a name: use lowercase letters, digits and `_` (for example `qualified`)", t.name),
                );
            } else if self.thresholds[..i].iter().any(|o| o.name == t.name) {
                bad(format!("thresholds[{i}].name"), format!("`{}` is used twice; threshold names are unique", t.name));
            }
            if !t.score.is_finite() || t.score <= 0.0 {
                bad(format!("thresholds[{i}].score"), "must be a positive number".into());
            }
            if !is_slug(&t.event, &['.', '-']) {
                bad(
                    format!("thresholds[{i}].event"),
                    format!(
                        "`{}` is not an event name: use lowercase letters, digits, `_`, `-` and `.` (for example `lead.qualified`)",
                        t.event
                    ),
                );
            }
        }
        if problems.is_empty() {
            Ok(Scoring { half_life_ms, rules: self.rules.clone(), thresholds: self.thresholds.clone() })
        } else {
            Err(problems)
        }
    }
}

impl Scoring {
    /// The rules as given (for reading them back).
    pub fn to_rules(&self) -> ScoringRules {
        ScoringRules {
            half_life: self.half_life_ms.map(|ms| format_duration(std::time::Duration::from_millis(ms as u64))),
            rules: self.rules.clone(),
            thresholds: self.thresholds.clone(),
        }
    }

    /// The points a timeline entry is worth: the sum of the matching rules.
    pub fn points(&self, kind: &str, data: &Value) -> f64 {
        self.rules.iter().filter(|r| r.kind == kind && data_matches(&r.matches, data)).map(|r| r.points).sum()
    }

    /// A score of `points` at `as_of`, seen at `at`.
    pub fn decayed(&self, points: f64, as_of: i64, at: i64) -> f64 {
        decay(points, at - as_of, self.half_life_ms)
    }
}

/// `points` after `elapsed_ms` with this half-life (unchanged without one). A negative
/// elapsed time grows the points back, which is what adding an older entry needs.
pub fn decay(points: f64, elapsed_ms: i64, half_life_ms: Option<i64>) -> f64 {
    match half_life_ms {
        Some(h) if h > 0 && elapsed_ms != 0 => points * 0.5f64.powf(elapsed_ms as f64 / h as f64),
        _ => points,
    }
}

/// A score `(points, as_of)` with `add` points earned at `at`: the new `(points, as_of)`,
/// `as_of` never moving back.
pub fn add(points: f64, as_of: i64, add: f64, at: i64, half_life_ms: Option<i64>) -> (f64, i64) {
    if at >= as_of { (decay(points, at - as_of, half_life_ms) + add, at) } else { (points + decay(add, as_of - at, half_life_ms), as_of) }
}

fn data_matches(want: &Map<String, Value>, data: &Value) -> bool {
    want.iter().all(|(k, v)| {
        let got = data.get(k);
        match (v, got) {
            (Value::String(p), Some(Value::String(g))) if p.ends_with('*') => g.starts_with(&p[..p.len() - 1]),
            (v, Some(g)) => v == g,
            (_, None) => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const DAY: i64 = 86_400_000;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn decay_halves_every_half_life() {
        let h = Some(7 * DAY);
        assert!(close(decay(40.0, 7 * DAY, h), 20.0));
        assert!(close(decay(40.0, 14 * DAY, h), 10.0));
        assert!(close(decay(40.0, 0, h), 40.0));
        assert!(close(decay(40.0, 365 * DAY, None), 40.0), "no half-life, no decay");
        // Half a half-life: a factor of 1/sqrt(2).
        assert!(close(decay(10.0, 7 * DAY / 2, h), 10.0 / 2f64.sqrt()));
    }

    #[test]
    fn adding_out_of_order_gives_the_same_score() {
        let h = Some(10 * DAY);
        // 10 points at day 0, then 10 at day 10: 5 + 10 = 15 at day 10.
        let (p, at) = add(0.0, 0, 10.0, 0, h);
        let (p, at) = add(p, at, 10.0, 10 * DAY, h);
        assert!(close(p, 15.0) && at == 10 * DAY, "{p} {at}");
        // The same entries the other way round.
        let (q, bt) = add(0.0, 0, 10.0, 10 * DAY, h);
        let (q, bt) = add(q, bt, 10.0, 0, h);
        assert!(close(q, 15.0) && bt == 10 * DAY, "{q} {bt}");
        // Seen 20 days later: a quarter.
        assert!(close(decay(p, 20 * DAY, h), 3.75));
    }

    #[test]
    fn rules_match_kind_and_data_and_add_up() {
        let rules: ScoringRules = serde_json::from_value(json!({
            "half_life": "14d",
            "rules": [
                {"kind": "page_viewed", "points": 5, "match": {"url": "https://shop.example.com/pricing*"}},
                {"kind": "page_viewed", "points": 1},
                {"kind": "purchase", "points": 50, "match": {"currency": "EUR"}},
                {"kind": "sms_stop", "points": -20}
            ],
            "thresholds": [{"name": "qualified", "score": 50, "event": "lead.qualified"}]
        }))
        .unwrap();
        let s = rules.check().unwrap();
        assert_eq!(s.half_life_ms, Some(14 * DAY));
        assert_eq!(s.points("page_viewed", &json!({"url": "https://shop.example.com/pricing/pro"})), 6.0);
        assert_eq!(s.points("page_viewed", &json!({"url": "https://shop.example.com/blog"})), 1.0);
        assert_eq!(s.points("purchase", &json!({"currency": "USD"})), 0.0);
        assert_eq!(s.points("purchase", &json!({"currency": "EUR"})), 50.0);
        assert_eq!(s.points("sms_stop", &json!({})), -20.0);
        assert_eq!(s.points("email_opened", &json!({})), 0.0);
        assert_eq!(s.to_rules().half_life.as_deref(), Some("2w"));
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let rules: ScoringRules = serde_json::from_value(json!({
            "half_life": "soon",
            "rules": [{"kind": "Page Viewed", "points": 1}, {"kind": "x", "points": 1, "match": {"url": ["a"]}}],
            "thresholds": [
                {"name": "q", "score": 0, "event": "Lead Qualified"},
                {"name": "q", "score": 5, "event": "lead.qualified"}
            ]
        }))
        .unwrap();
        let paths: Vec<String> = rules.check().unwrap_err().into_iter().map(|p| p.path).collect();
        assert_eq!(
            paths,
            ["half_life", "rules[0].kind", "rules[1].match.url", "thresholds[0].score", "thresholds[0].event", "thresholds[1].name"]
        );
        assert!(serde_json::from_value::<ScoringRules>(json!({"rule": []})).is_err(), "unknown keys are refused");
    }
}
