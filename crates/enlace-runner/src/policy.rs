//! The send policy at the moment a message is about to leave (issue 5, items 5 and 6).
//!
//! For an action that declares it reaches a person (`ActionSpec::reaches`), the interpreter
//! asks [`gate`] right before the call. The gate reserves the message in the store's send
//! ledger in one transaction that reads the recipients' consent, suppressions and earlier
//! sends and the recipe's sends; the decision over those facts is
//! `enlace_core::policy::decide` (pure: the simulator uses the same), plus the recipe's
//! blast-radius limits. After the call, [`settle`] records it sent, or releases the slot
//! when nothing was delivered. The ledger is keyed by the message (`ORIGINAL_RUN:STEP_KEY`,
//! the recipient): a retry, a restart or a replay finds the first attempt's row.

use std::sync::{Arc, Mutex};

use enlace_core::policy::{self, Decision, Message, Subject};
use enlace_core::{ActionSpec, ConnectorError, ErrorClass};
use enlace_recipe::model::ActionStep;
use enlace_store::{LedgerWrite, RunRow, SendFacts, SendRequest, StepRecord, StepStatus, send_status};
use serde_json::{Value, json};

use crate::Inner;
use crate::clock::rfc3339;

/// What the interpreter does with a message.
pub(crate) enum Gate {
    /// Let out: call, then [`settle`] with this key.
    Go { message_key: String },
    /// Sent by an earlier attempt: its recorded output, and no call.
    AlreadySent { output: Value },
    /// Not now: wait until then and decide again. `output` says why.
    Deferred { until: i64, output: Value },
    /// Not at all: the step ends without calling, the run goes on. `output` says why.
    Blocked { output: Value },
    /// Above the recipe's limits: the run waits for a person's approval.
    Held { output: Value },
}

/// The message's key: the same for every attempt and every replay of the call.
pub(crate) fn message_key(run: &RunRow, step_key: &str) -> String {
    format!("{}:{step_key}", run.replay_of.as_deref().unwrap_or(&run.id))
}

/// The output of a sent message, when the ledger says an earlier attempt sent it (its
/// journal entry was lost to a crash after the call): the call is not made again.
pub(crate) async fn recorded(inner: &Inner, run: &RunRow, step_key: &str, spec: &ActionSpec) -> Option<Value> {
    spec.reaches.as_ref()?;
    let rows = inner.store.message_rows(&message_key(run, step_key)).await.ok()?;
    rows.iter().find(|r| r.status == send_status::SENT).map(|r| r.output.clone().unwrap_or(Value::Null))
}

/// What the verdict was, besides what the store wrote.
enum Verdict {
    Go,
    AlreadySent(Value),
    Deferred(i64, String),
    Blocked(String),
    Held(String),
}

/// Decides about the message `input` describes, in the store's transaction.
pub(crate) async fn gate(
    inner: &Arc<Inner>,
    run: &RunRow,
    step_key: &str,
    spec: &ActionSpec,
    a: &ActionStep,
    input: &Value,
    prev: Option<&StepRecord>,
) -> Result<Option<Gate>, ConnectorError> {
    let Some(reach) = &spec.reaches else { return Ok(None) };
    let recipients = reach.recipients(input);
    if recipients.is_empty() {
        // The action refuses a message without recipients itself (bad input on the field).
        return Ok(None);
    }
    let settings = inner.store.policy_settings().await.map_err(|e| unavailable(&e.to_string()))?;
    let limits = inner.catalog.version(&inner.store, &run.recipe_id, run.recipe_version).await.map(|r| r.limits).unwrap_or_default();
    let now = inner.clock.now_ms();
    let message = Message { channel: reach.channel.clone(), purpose: a.send.purpose.clone(), transactional: a.send.transactional };
    // An earlier attempt's call may have left (a restart found it in flight, or it failed as
    // "maybe delivered"): then a reserved message is not sent again.
    let maybe_left = prev.is_some_and(|p| {
        p.status == StepStatus::Running
            || p.error.as_ref().and_then(|e| e.get("class")).and_then(Value::as_str) == Some(ErrorClass::MaybeDelivered.as_str())
    });
    // An idempotent action (an ad audience add) may be called again: repeating it has no
    // further effect, so an unknown outcome does not block it.
    let resendable = !maybe_left || matches!(spec.idempotency, enlace_core::Idempotency::Natural | enlace_core::Idempotency::Key);
    let req = SendRequest {
        message_key: message_key(run, step_key),
        recipe_id: run.recipe_id.clone(),
        run_id: run.id.clone(),
        step_key: step_key.to_string(),
        channel: reach.channel.clone(),
        purpose: message.purpose.clone(),
        transactional: message.transactional,
        kind: reach.kind,
        recipients,
        window_ms: settings.longest_window().as_millis() as i64,
        limits,
        now,
    };
    let slot: Arc<Mutex<Option<Verdict>>> = Arc::new(Mutex::new(None));
    let out = slot.clone();
    let decide = Box::new(move |facts: &SendFacts| {
        let (verdict, write) = verdict(facts, &message, &settings, limits, now, resendable);
        *out.lock().unwrap_or_else(|e| e.into_inner()) = Some(verdict);
        write
    });
    inner.store.reserve_send(req, decide).await.map_err(|e| unavailable(&e.to_string()))?;
    let verdict = slot.lock().unwrap_or_else(|e| e.into_inner()).take().unwrap_or(Verdict::Go);
    let channel = &reach.channel;
    let purpose = &a.send.purpose;
    let summary = |decision: &str, why: Option<&str>, until: Option<i64>| {
        let mut o = json!({"decision": decision, "channel": channel, "purpose": purpose, "transactional": a.send.transactional});
        if let Some(w) = why {
            o["reason"] = json!(w);
        }
        if let Some(u) = until {
            o["until"] = json!(rfc3339(u));
        }
        o["summary"] = json!(match (decision, why, until) {
            ("deferred", Some(w), Some(u)) => format!("deferred until {}: {w}", rfc3339(u)),
            (d, Some(w), _) => format!("{d}: {w}"),
            (d, None, _) => d.to_string(),
        });
        o
    };
    inner.metrics.policy_decisions(match &verdict {
        Verdict::Go | Verdict::AlreadySent(_) => "sent",
        Verdict::Deferred(..) => "deferred",
        Verdict::Blocked(_) => "blocked",
        Verdict::Held(_) => "held",
    });
    Ok(Some(match verdict {
        Verdict::Go => Gate::Go { message_key: message_key(run, step_key) },
        Verdict::AlreadySent(output) => Gate::AlreadySent { output },
        Verdict::Deferred(until, why) => {
            Gate::Deferred { until, output: json!({"sent": false, "policy": summary("deferred", Some(&why), Some(until))}) }
        }
        Verdict::Blocked(why) => Gate::Blocked { output: json!({"sent": false, "policy": summary("blocked", Some(&why), None)}) },
        Verdict::Held(why) => Gate::Held { output: json!({"sent": false, "policy": summary("held", Some(&why), None)}) },
    }))
}

fn unavailable(e: &str) -> ConnectorError {
    ConnectorError::transient(format!("the send policy could not be checked ({e}); nothing was sent, the step is retried"))
}

/// The verdict over the facts, and what the ledger gets.
fn verdict(
    facts: &SendFacts,
    m: &Message,
    settings: &policy::PolicySettings,
    limits: policy::SendLimits,
    now: i64,
    resendable: bool,
) -> (Verdict, Option<LedgerWrite>) {
    let write = |status: &'static str, reason: Option<String>, until: Option<i64>, timeline: Option<&'static str>| {
        Some(LedgerWrite { status, reason, until, timeline })
    };
    let previous = facts.previous.first().map(|r| r.status.as_str());
    match previous {
        Some(send_status::SENT) => {
            let output = facts.previous.iter().find_map(|r| r.output.clone()).unwrap_or(Value::Null);
            return (Verdict::AlreadySent(output), None);
        }
        Some(send_status::RESERVED) if !resendable => {
            let why = "the message may have gone out already (its call was interrupted or its outcome is unknown); it is not sent again"
                .to_string();
            return (Verdict::Blocked(why.clone()), write(send_status::BLOCKED, Some(why), None, Some("message_blocked")));
        }
        // A reservation whose call never left (the process stopped before it): go on.
        Some(send_status::RESERVED) => return (Verdict::Go, None),
        Some(send_status::HELD) => {
            let why = facts.previous[0].reason.clone().unwrap_or_default();
            return (Verdict::Held(why), None);
        }
        Some(send_status::REJECTED) => {
            let why = "a person rejected it (held for approval, then rejected)".to_string();
            return (Verdict::Blocked(why.clone()), write(send_status::BLOCKED, Some(why), None, Some("message_blocked")));
        }
        Some(send_status::CANCELLED) => {
            let why = "the recipe was stopped by the kill switch while the message waited for approval".to_string();
            return (Verdict::Blocked(why), None);
        }
        _ => {}
    }
    let approved = previous == Some(send_status::APPROVED);
    let mut blocked = vec![];
    let mut until = None::<i64>;
    let mut deferred = vec![];
    for f in &facts.recipients {
        let subject = Subject {
            address: f.address.clone(),
            contact_id: f.contact.as_ref().map(|c| c.id.clone()),
            consent: f.consent.as_ref().map(|c| {
                let when = rfc3339(c.evidence.recorded_at.max(c.at));
                let how = match &c.evidence.text {
                    Some(t) => format!("recorded by `{}` at {when}, wording \"{t}\"", c.evidence.source),
                    None => format!("recorded by `{}` at {when}", c.evidence.source),
                };
                (c.status, how)
            }),
            suppressed: f.suppressed.clone(),
            timezone: f.contact.as_ref().and_then(|c| c.fields.get("timezone")).and_then(Value::as_str).map(str::to_string),
            sent: f.sent.clone(),
        };
        match policy::decide(&subject, m, settings, now) {
            Decision::Sent => {}
            Decision::Blocked { why } => blocked.push(why),
            Decision::Deferred { until: u, why } => {
                until = Some(until.map_or(u, |x| x.max(u)));
                deferred.push(why);
            }
        }
    }
    if !blocked.is_empty() {
        let why = blocked.join("; ");
        return (Verdict::Blocked(why.clone()), write(send_status::BLOCKED, Some(why), None, Some("message_blocked")));
    }
    if let Some(u) = until {
        let why = deferred.join("; ");
        // A deferral already recorded for the same time is not written again.
        let same = facts.previous.first().is_some_and(|r| r.status == send_status::DEFERRED && r.until == Some(u));
        let w = if same { None } else { write(send_status::DEFERRED, Some(why.clone()), Some(u), Some("message_deferred")) };
        return (Verdict::Deferred(u, why), w);
    }
    if !approved && let Some(why) = limits.exceeded(facts.recipe_last_hour, facts.recipe_last_day, facts.recipients.len() as i64) {
        let why = format!("held for approval: {why}");
        return (Verdict::Held(why.clone()), write(send_status::HELD, Some(why), None, Some("message_held")));
    }
    (Verdict::Go, write(send_status::RESERVED, None, None, None))
}

/// Records the call's outcome: sent with its (masked) output, or the slot released when
/// nothing was delivered. An unknown outcome keeps the reservation (never sent again).
pub(crate) async fn settle(inner: &Inner, message_key: &str, result: &Result<Value, ConnectorError>, masked_output: Option<Value>) {
    let sent = match result {
        Ok(_) => true,
        Err(e) if e.class() == ErrorClass::MaybeDelivered => return,
        Err(_) => false,
    };
    if let Err(e) = inner.store.settle_send(message_key, sent, masked_output, inner.clock.now_ms()).await {
        tracing::error!(message = %message_key, error = %e, "recording a message's outcome in the send ledger failed; a later attempt will not send it again");
    }
}

#[cfg(test)]
mod tests {
    use enlace_core::contacts::{Consent, ConsentStatus, Evidence};
    use enlace_core::policy::{PolicySettings, SendLimits};
    use enlace_store::{LedgerRow, RecipientFacts};

    use super::*;

    fn facts(consent: Option<ConsentStatus>, previous: Option<&str>) -> SendFacts {
        let consent = consent.map(|status| Consent {
            id: "x".into(),
            purpose: "marketing".into(),
            channel: "email".into(),
            status,
            evidence: Evidence { source: "form".into(), ip: None, text: None, recorded_at: 0, run_id: None, details: Default::default() },
            at: 0,
        });
        let previous = previous.map(|s| LedgerRow {
            id: "l".into(),
            message_key: "r:s".into(),
            recipient: "ana@example.com".into(),
            contact_id: None,
            recipe_id: "rc".into(),
            run_id: "r".into(),
            step_key: "s".into(),
            channel: "email".into(),
            purpose: "marketing".into(),
            transactional: false,
            status: s.into(),
            reason: Some("held for approval: limit".into()),
            until: None,
            sent_at: None,
            decided_at: 0,
            output: Some(json!({"message_id": "m1"})),
        });
        SendFacts {
            recipients: vec![RecipientFacts { address: "ana@example.com".into(), contact: None, consent, suppressed: None, sent: vec![] }],
            previous: previous.into_iter().collect(),
            recipe_last_hour: 5,
            recipe_last_day: 5,
        }
    }

    #[test]
    fn verdicts_follow_the_ledger_and_the_limits() {
        let m = Message { channel: "email".into(), purpose: "marketing".into(), transactional: false };
        let p = PolicySettings { quiet_hours: None, ..PolicySettings::default() };
        let none = SendLimits::default();
        let noon = 1_772_452_800_000;
        let (v, w) = verdict(&facts(Some(ConsentStatus::Granted), None), &m, &p, none, noon, true);
        assert!(matches!(v, Verdict::Go) && w.unwrap().status == send_status::RESERVED);
        let (v, _) = verdict(&facts(None, None), &m, &p, none, noon, true);
        assert!(matches!(v, Verdict::Blocked(w) if w.contains("no consent")));
        let (v, w) = verdict(&facts(Some(ConsentStatus::Granted), Some("sent")), &m, &p, none, noon, true);
        assert!(matches!(v, Verdict::AlreadySent(o) if o["message_id"] == "m1") && w.is_none());
        let (v, _) = verdict(&facts(Some(ConsentStatus::Granted), Some("reserved")), &m, &p, none, noon, false);
        assert!(matches!(v, Verdict::Blocked(w) if w.contains("may have gone out")));
        let five = SendLimits { sends_per_hour: Some(5), sends_per_day: None };
        let (v, w) = verdict(&facts(Some(ConsentStatus::Granted), None), &m, &p, five, noon, true);
        assert!(matches!(v, Verdict::Held(w) if w.contains("5 per hour")) && w.unwrap().status == send_status::HELD);
        let (v, _) = verdict(&facts(Some(ConsentStatus::Granted), Some("approved")), &m, &p, five, noon, true);
        assert!(matches!(v, Verdict::Go), "an approved message goes above the limits");
        let (v, _) = verdict(&facts(Some(ConsentStatus::Granted), Some("rejected")), &m, &p, five, noon, true);
        assert!(matches!(v, Verdict::Blocked(w) if w.contains("rejected")));
    }
}
