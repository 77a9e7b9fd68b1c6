//! Journeys in the interpreter: entering (the contact, the re-entry rule), exit rules checked
//! before every step, `wait_for`, `split`'s sticky choice, and the contact's time zone.
//!
//! Everything a journey decides is journaled, so a run that starts again (after a wait, a
//! restart or a crash) takes the same path: the entry (`$journey`), the split chosen, the
//! moment a wait began and what it matches. Events are read from the contact's timeline
//! (the store), never kept in memory: a wake-up lost in a crash costs a delay, not an event.

use enlace_core::contacts::ContactKey;
use enlace_recipe::model::{ExitWhen, Reentry, Step, WaitFor};
use enlace_store::{Entered, EntryRule, JourneyEntry, RunStatus, StepRecord, StepStatus};
use serde_json::{Map, Value, json};

use super::{Entry, Exec, Flow, Stop};
use crate::clock::rfc3339;

/// The journal key of a run's entry into its journey (step ids cannot start with `$`).
const ENTRY_KEY: &str = "$journey";
/// The journal key of the exit rule that ended a run.
const EXIT_KEY: &str = "$exit";
/// The most timeline events of one kind read for one check.
const EVENTS_READ: i64 = 200;

/// The path of a split for `seed` (recipe, step and contact): the same seed always gets the
/// same path, and seeds spread over the paths by weight. FNV-1a (64 bits), written out here
/// because the choice must not change with the standard library's hasher or the platform.
pub(super) fn pick_path<'w>(seed: &str, weights: &'w [(String, u32)]) -> &'w str {
    let total: u64 = weights.iter().map(|(_, w)| u64::from(*w)).sum();
    if total == 0 {
        return weights.first().map(|(n, _)| n.as_str()).unwrap_or_default();
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in seed.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut point = h % total;
    for (name, w) in weights {
        if point < u64::from(*w) {
            return name;
        }
        point -= u64::from(*w);
    }
    weights.last().map(|(n, _)| n.as_str()).unwrap_or_default()
}

/// Reads `a.b.c` in an event's data.
fn field<'v>(data: &'v Value, path: &str) -> Option<&'v Value> {
    path.split('.').try_fold(data, |v, k| v.get(k))
}

/// Values compare equal, or as text when one side is text (`"42"` matches `42`).
fn loosely_equal(a: &Value, b: &Value) -> bool {
    fn text(v: &Value) -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }
    a == b || matches!((text(a), text(b)), (Some(x), Some(y)) if x == y)
}

/// Whether an event's data has every wanted field.
pub(super) fn matches(data: &Value, want: &Map<String, Value>) -> bool {
    want.iter().all(|(k, v)| field(data, k).is_some_and(|x| loosely_equal(x, v)))
}

fn event_json(e: &enlace_core::contacts::TimelineEvent) -> Value {
    json!({"id": e.id, "kind": e.kind, "data": e.data, "at": rfc3339(e.at), "at_ms": e.at})
}

impl Exec {
    /// Enters a contact-scoped run into its journey: finds its contact, applies the re-entry
    /// rule (in the store, atomically) and puts the contact in the templates' data. Journaled
    /// as `$journey`; a run that starts again reads its contact from there.
    pub(super) async fn enter_journey(&mut self) -> Flow {
        let Some(j) = self.recipe.journey.clone() else { return Ok(()) };
        let prev = self.journal.get(ENTRY_KEY).cloned();
        let started = self.now();
        if let Some(id) = prev
            .as_ref()
            .filter(|p| p.status == StepStatus::Succeeded)
            .and_then(|p| p.output.as_ref())
            .and_then(|o| o.get("contact_id"))
            .and_then(Value::as_str)
        {
            self.contact_id = Some(id.to_string());
            return self.reload_contact().await;
        }
        let key = match &j.contact {
            None => match self.data.get().pointer("/trigger/contact/id").and_then(Value::as_str) {
                Some(id) => ContactKey::Id(id.to_string()),
                None => return self.journey_failure("the trigger's event has no `contact.id`".into(), started),
            },
            Some(t) => match t.eval(&self.data) {
                Ok(Value::String(s)) if !s.trim().is_empty() => {
                    let s = s.trim().to_string();
                    if s.contains('@') { ContactKey::Email(s) } else { ContactKey::Id(s) }
                }
                Ok(other) => {
                    let msg = format!("`contact` gave {other}, but it must give an email or a contact id");
                    return self.journey_failure(msg, started);
                }
                Err(e) => return self.journey_failure(format!("`contact`: {}", e.message), started),
            },
        };
        let contact = match self.inner.store.contact(key.clone()).await {
            Ok(Some(c)) => c,
            Ok(None) => {
                let who = match &key {
                    ContactKey::Id(i) => format!("with the id `{i}`"),
                    ContactKey::Email(e) => format!("with the email `{e}`"),
                };
                return self.journey_failure(
                    format!(
                        "there is no contact {who}; create it first (for example with `contacts.upsert` in the recipe that starts this one)"
                    ),
                    started,
                );
            }
            Err(enlace_store::StoreError::Invalid(m)) => return self.journey_failure(format!("`contact`: {m}"), started),
            Err(e) => {
                tracing::error!(run_id = %self.run.id, error = %e, "reading the run's contact failed; the run is retried when its lease ends");
                return Err(Stop::Lost);
            }
        };
        let rule = match j.reentry {
            Reentry::Always => EntryRule::Always,
            Reentry::Once => EntryRule::Once,
            Reentry::Cooldown(d) => EntryRule::Cooldown(d.as_millis() as i64),
        };
        let entry = JourneyEntry {
            run_id: self.run.id.clone(),
            owner: self.inner.config.node_id.clone(),
            recipe_id: self.run.recipe_id.clone(),
            contact_id: contact.id.clone(),
            rule,
            wake_on: j.listens(&self.recipe.steps),
            now: started,
        };
        match self.inner.store.enter_journey(entry).await {
            Ok(Entered::Yes) => {
                let out = json!({"contact_id": contact.id, "email": contact.email, "entered_at": rfc3339(started)});
                self.record_as(ENTRY_KEY, "journey", "journey", false, done(out, started));
                self.contact_id = Some(contact.id.clone());
                self.set_contact(serde_json::to_value(&contact).unwrap_or(Value::Null));
                Ok(())
            }
            Ok(Entered::Refused { last_entered_at }) => {
                let why = match j.reentry {
                    Reentry::Once => "this recipe runs once per contact (`reentry: once`)".to_string(),
                    _ => "the contact entered less than the `reentry` cooldown ago".to_string(),
                };
                let out = json!({"contact_id": contact.id, "entered": false, "reason": format!("{why}; it last entered at {}", rfc3339(last_entered_at)), "last_entered_at": rfc3339(last_entered_at)});
                let mut e = done(out, started);
                e.status = StepStatus::Filtered;
                self.record_as(ENTRY_KEY, "journey", "journey", false, e);
                Err(Stop::Filtered)
            }
            Ok(Entered::NotOwner) => Err(Stop::Lost),
            Err(e) => {
                tracing::error!(run_id = %self.run.id, error = %e, "entering the journey failed; the run is retried when its lease ends");
                Err(Stop::Lost)
            }
        }
    }

    fn journey_failure(&mut self, message: String, started: i64) -> Flow {
        let error = json!({"class": "bad_input", "path": "contact", "message": message, "hint": "a journey's run needs its contact; fix the recipe's `contact` or the event, then replay the run"});
        self.record_as(
            ENTRY_KEY,
            "journey",
            "journey",
            false,
            Entry { status: StepStatus::Failed, input: None, output: None, error: Some(error.clone()), attempts: 0, started_at: started },
        );
        Err(Stop::Failed { error })
    }

    fn set_contact(&mut self, contact: Value) {
        if let Some(obj) = self.data.get_mut().as_object_mut() {
            obj.insert("contact".into(), contact);
        }
    }

    /// Reads the run's contact again (after a change to it) into the templates' data. A
    /// contact erased meanwhile ends the run.
    pub(super) async fn reload_contact(&mut self) -> Flow {
        let Some(id) = self.contact_id.clone() else { return Ok(()) };
        match self.inner.store.contact(ContactKey::Id(id)).await {
            Ok(Some(c)) => {
                self.set_contact(serde_json::to_value(&c).unwrap_or(Value::Null));
                Ok(())
            }
            Ok(None) => {
                let out = json!({"reason": "the contact was erased"});
                self.record_as(EXIT_KEY, "exit", "exit", false, Entry { status: StepStatus::Filtered, ..done(out, self.now()) });
                Err(Stop::Filtered)
            }
            Err(e) => {
                tracing::error!(run_id = %self.run.id, error = %e, "reading the run's contact failed; the run is retried when its lease ends");
                Err(Stop::Lost)
            }
        }
    }

    /// The contact's time zone (its `timezone` field, an IANA name), for local times.
    pub(super) fn contact_timezone(&self) -> Option<chrono_tz::Tz> {
        self.data.get().pointer("/contact/fields/timezone").and_then(Value::as_str).and_then(|s| s.parse().ok())
    }

    /// Checks the journey's exit rules before the step `key`: the first that holds ends the run
    /// (`succeeded` for a goal, else `filtered`), journaled as `$exit`.
    pub(super) async fn check_exit(&mut self, key: &str) -> Flow {
        let Some(j) = self.recipe.journey.clone() else { return Ok(()) };
        let Some(contact_id) = self.contact_id.clone() else { return Ok(()) };
        let since = self.run.created_at;
        for (i, rule) in j.exit.iter().enumerate() {
            let hit = match &rule.when {
                ExitWhen::Event { kind, matching } => {
                    let want = match self.render_match(matching, &format!("exit[{i}].match")) {
                        Ok(w) => w,
                        Err((path, message)) => return self.exit_failure(path, message),
                    };
                    let events = match self.inner.store.contact_events(&contact_id, kind, since, EVENTS_READ).await {
                        Ok(ev) => ev,
                        Err(e) => {
                            tracing::error!(run_id = %self.run.id, error = %e, "reading the contact's timeline failed; the run is retried when its lease ends");
                            return Err(Stop::Lost);
                        }
                    };
                    events.iter().find(|e| matches(&e.data, &want)).map(|e| json!({"event": event_json(e)}))
                }
                ExitWhen::If(t) => match t.eval(&self.data) {
                    Ok(v) if super::truthy(&v) => Some(json!({"if": true})),
                    Ok(_) => None,
                    Err(e) => return self.exit_failure(format!("exit[{i}].if"), e.message),
                },
            };
            if let Some(mut out) = hit {
                out["rule"] = json!(i);
                out["goal"] = json!(rule.goal);
                out["before_step"] = json!(key);
                let mut e = done(out, self.now());
                e.status = if rule.goal { StepStatus::Succeeded } else { StepStatus::Filtered };
                self.record_as(EXIT_KEY, "exit", "exit", false, e);
                return Err(if rule.goal { Stop::Goal } else { Stop::Filtered });
            }
        }
        Ok(())
    }

    /// Renders a `match` map: the fields, or the failing template's path and message.
    fn render_match(
        &self,
        matching: &[(String, enlace_recipe::template::Template)],
        path: &str,
    ) -> Result<Map<String, Value>, (String, String)> {
        let mut want = Map::new();
        for (k, t) in matching {
            let v = t.eval(&self.data).map_err(|e| (format!("{path}.{k}"), e.message))?;
            want.insert(k.clone(), v);
        }
        Ok(want)
    }

    /// An exit rule whose template cannot be rendered fails the run, journaled as `$exit`.
    fn exit_failure(&mut self, path: String, message: String) -> Flow {
        let error = json!({"class": "bad_input", "path": path, "message": message, "hint": "fix the exit rule, then replay the run"});
        let started = self.now();
        self.record_as(
            EXIT_KEY,
            "exit",
            "exit",
            false,
            Entry { status: StepStatus::Failed, input: None, output: None, error: Some(error.clone()), attempts: 0, started_at: started },
        );
        Err(Stop::Failed { error })
    }

    /// `wait_for`: the first event of the kind on the contact's timeline since the wait began
    /// that matches, or `received: false` at the timeout. Parks the run meanwhile; an event of
    /// the kind makes it due at once (`wake_on`).
    pub(super) async fn wait_for(&mut self, step: &Step, w: &WaitFor, key: &str, prev: Option<StepRecord>, started: i64) -> Flow {
        if let Some(p) = prev.as_ref().filter(|p| p.status == StepStatus::Succeeded) {
            self.set_output(&step.id, p.output.clone().unwrap_or(Value::Null));
            return Ok(());
        }
        let Some(contact_id) = self.contact_id.clone() else {
            return self.template_failure(step, key, "wait_for", "the run has no contact to wait for".into(), started);
        };
        let waiting = prev.as_ref().filter(|p| p.status == StepStatus::Waiting).and_then(|p| p.output.clone());
        let (since, until, want, started) = match waiting {
            Some(o) => (
                o.get("since_ms").and_then(Value::as_i64).unwrap_or(started),
                o.get("until_ms").and_then(Value::as_i64).unwrap_or(started),
                o.get("match").and_then(Value::as_object).cloned().unwrap_or_default(),
                prev.as_ref().map_or(started, |p| p.started_at),
            ),
            None => {
                let want = match self.render_match(&w.matching, "wait_for.match") {
                    Ok(m) => m,
                    Err((path, message)) => return self.template_failure(step, key, &path, message, started),
                };
                (started, started + w.timeout.as_millis() as i64, want, started)
            }
        };
        let events = match self.inner.store.contact_events(&contact_id, &w.event, since, EVENTS_READ).await {
            Ok(ev) => ev,
            Err(e) => {
                tracing::error!(run_id = %self.run.id, error = %e, "reading the contact's timeline failed; the run is retried when its lease ends");
                return Err(Stop::Lost);
            }
        };
        let now = self.now();
        let found = events.iter().find(|e| matches(&e.data, &want));
        let output = match found {
            Some(e) => Some(json!({"received": true, "event": event_json(e)})),
            None if now >= until => Some(json!({"received": false, "event": null})),
            None => None,
        };
        match output {
            Some(out) => {
                self.record(key, step, Entry { status: StepStatus::Succeeded, ..done(out.clone(), started) });
                self.set_output(&step.id, out);
                Ok(())
            }
            None => {
                let out = json!({"waiting_for": w.event, "match": want, "since_ms": since, "until_ms": until, "until": rfc3339(until)});
                self.record(key, step, Entry { status: StepStatus::Waiting, ..done(out, started) });
                Err(Stop::Park { status: RunStatus::Waiting, due_at: until })
            }
        }
    }
}

/// A succeeded entry with this output and no input.
fn done(output: Value, started_at: i64) -> Entry {
    Entry { status: StepStatus::Succeeded, input: None, output: Some(output), error: None, attempts: 0, started_at }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_are_sticky_and_follow_weights() {
        let w = vec![("a".to_string(), 50), ("b".to_string(), 50)];
        assert_eq!(pick_path("r:s:c1", &w), pick_path("r:s:c1", &w));
        let a = (0..10_000).filter(|i| pick_path(&format!("r:s:{i}"), &w) == "a").count();
        assert!((4_700..=5_300).contains(&a), "{a} of 10000 took a");
        let w = vec![("a".to_string(), 90), ("b".to_string(), 10)];
        let b = (0..10_000).filter(|i| pick_path(&format!("r:s:{i}"), &w) == "b").count();
        assert!((800..=1_200).contains(&b), "{b} of 10000 took b");
        let w = vec![("a".to_string(), 0), ("b".to_string(), 1)];
        assert!((0..100).all(|i| pick_path(&format!("{i}"), &w) == "b"));
    }

    #[test]
    fn matching_reads_nested_fields_and_compares_loosely() {
        let data = json!({"form": {"id": "interests"}, "cart": 42, "ok": true});
        let want = |v: Value| v.as_object().unwrap().clone();
        assert!(matches(&data, &want(json!({"form.id": "interests"}))));
        assert!(matches(&data, &want(json!({"cart": "42", "ok": "true"}))));
        assert!(!matches(&data, &want(json!({"cart": 43}))));
        assert!(!matches(&data, &want(json!({"missing": null}))));
        assert!(matches(&data, &want(json!({}))));
    }
}
