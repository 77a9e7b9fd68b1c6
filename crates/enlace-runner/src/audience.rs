//! Ad audiences that follow consent and erasure.
//!
//! When an action declared as adding a person to an ad audience
//! ([`enlace_core::audience::Audience::Adds`]) succeeds, the person is recorded as a member
//! (app, connection, audience, SHA-256 of the normalised email and of the E.164 phone): in
//! the step, before the run goes on, so an add whose record failed is retried like a failed
//! call. An erasure, or a withdrawn `ads` consent, queues one removal per membership in its
//! own transaction (the store does that); the loop here sends them: it claims due removals
//! with a lease, calls the app's remove action with an [`AudienceRemoval`], and marks each
//! done, to retry (transient errors, rate limits, refused credentials: with backoff, up to
//! [`REMOVAL_ATTEMPTS`] attempts) or failed (the app refused it for good). A node that dies
//! mid-call leaves its claim to expire and the removal is sent again: removing a person
//! twice is harmless, losing a removal is not.

use std::sync::Arc;
use std::time::Duration;

use enlace_core::audience::{AudienceRemoval, AudienceSpec};
use enlace_core::{ActionContext, ActionSpec, ConnectorError, Credentials, ErrorClass};
use enlace_store::gdpr::{AudienceRemovalRow, NewMembership, REMOVAL_ATTEMPTS, RemovalOutcome, membership_identifiers};
use serde_json::{Value, json};

use crate::Inner;

/// How long a claimed removal is leased to its node: the call's timeout and a margin.
fn lease_ms(inner: &Inner) -> i64 {
    (inner.config.step_timeout + Duration::from_secs(30)).as_millis() as i64
}

/// After a successful action: records the audience membership of every person its input
/// names (one at the top level, or each of a list), if the action adds to an audience. The
/// membership keeps the hashes the app matches (its `Hashing`). An error is the store's
/// (worth retrying the step: the add is called again, and audience adds are idempotent).
pub(crate) async fn after_success(
    inner: &Inner,
    run_id: &str,
    app: &str,
    connection: Option<&str>,
    spec: &ActionSpec,
    input: &Value,
) -> Result<(), ConnectorError> {
    let Some(AudienceSpec::Adds { audience_field, email_field, phone_field, remove_action, people_field, hashing }) = &spec.audience else {
        return Ok(());
    };
    if inner.config.dry_run {
        return Ok(());
    }
    let people: Vec<&Value> = match people_field.as_deref().and_then(|f| input.get(f)) {
        Some(Value::Array(list)) => list.iter().collect(),
        _ => vec![input],
    };
    let audience = input.get(audience_field.as_str()).cloned().unwrap_or(Value::Null);
    for person in people {
        let text = |f: &Option<String>| f.as_deref().and_then(|f| person.get(f)).and_then(Value::as_str).map(str::to_string);
        let (email, phone) = match membership_identifiers(text(email_field).as_deref(), text(phone_field).as_deref()) {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(run_id = %run_id, app = %app, error = %e, "an audience add's person could not be read; no membership recorded");
                continue;
            }
        };
        if email.is_none() && phone.is_none() {
            tracing::warn!(run_id = %run_id, app = %app, "an audience add named no email or phone; no membership recorded");
            continue;
        }
        let m = NewMembership {
            app: app.to_string(),
            connection_id: connection.map(str::to_string),
            remove_action: remove_action.clone(),
            audience: audience.clone(),
            email_sha256: email.as_deref().and_then(|e| hashing.email_sha256(e).ok()),
            phone_sha256: phone.as_deref().and_then(|p| hashing.phone_sha256(p).ok()),
            email,
            phone,
            run_id: Some(run_id.to_string()),
            now: inner.clock.now_ms(),
        };
        inner
            .store
            .record_audience_member(m)
            .await
            .map_err(|e| ConnectorError::transient(format!("recording the audience membership failed: {e}")))?;
    }
    Ok(())
}

/// Sends the removals that are due; how many it handled.
pub(crate) async fn process_due(inner: &Arc<Inner>) -> usize {
    let now = inner.clock.now_ms();
    let claimed = match inner.store.claim_audience_removals(&inner.config.node_id, now, 16, lease_ms(inner)).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "claiming audience removals failed");
            return 0;
        }
    };
    let n = claimed.len();
    for r in claimed {
        let outcome = send(inner, &r).await;
        match &outcome {
            RemovalOutcome::Done => tracing::info!(removal = %r.id, app = %r.app, "removed a person from an ad audience"),
            RemovalOutcome::Retry { error, .. } => {
                tracing::warn!(removal = %r.id, app = %r.app, error = %error, "an audience removal failed; retrying later")
            }
            RemovalOutcome::Failed { error } => {
                tracing::error!(removal = %r.id, app = %r.app, error = %error, "an audience removal failed for good")
            }
        }
        if let Err(e) = inner.store.finish_audience_removal(&r.id, &inner.config.node_id, outcome, inner.clock.now_ms()).await {
            // The lease runs out and the removal is sent again.
            tracing::warn!(removal = %r.id, error = %e, "recording an audience removal's outcome failed");
        }
    }
    n
}

/// The removal loop: every second, and until shutdown.
pub(crate) async fn removal_loop(inner: Arc<Inner>) {
    loop {
        process_due(&inner).await;
        tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

fn error_value(e: &ConnectorError) -> Value {
    json!({"class": e.class().as_str(), "message": e.to_string()})
}

/// One removal: the app's remove action, with the removal's connection.
async fn send(inner: &Arc<Inner>, r: &AudienceRemovalRow) -> RemovalOutcome {
    let now = inner.clock.now_ms();
    let Some(connector) = inner.registry.get(&r.app) else {
        return RemovalOutcome::Failed {
            error: json!({"class": "permanent", "message": format!("the app `{}` is not installed here", r.app)}),
        };
    };
    let Some(action) = connector.action(&r.remove_action).cloned() else {
        return RemovalOutcome::Failed {
            error: json!({"class": "permanent", "message": format!("the app `{}` has no action `{}`", r.app, r.remove_action)}),
        };
    };
    let credentials = match &r.connection_id {
        Some(id) => match crate::exec::connection_credentials(inner, &r.app, id).await {
            Ok((_, Credentials::OAuth2Grant(g))) => match crate::oauth::fresh_grant(inner, id, *g, None).await {
                Ok(fresh) => crate::oauth::handed_out(&Credentials::OAuth2Grant(Box::new(fresh))),
                Err(e) => return retry_or_fail(r, &e, now),
            },
            Ok((_, c)) => c,
            Err(e) => return retry_or_fail(r, &e, now),
        },
        None => Credentials::None,
    };
    let key = r.connection_id.as_ref().map(|c| format!("connection:{c}")).unwrap_or_else(|| format!("app:{}", r.app));
    let wait = crate::exec::rate_wait(inner, &key, connector.manifest.rate_limit, now).await;
    if !wait.is_zero() {
        let error = json!({"class": "rate_limited", "message": format!("waiting for the rate budget of `{key}`")});
        return RemovalOutcome::Retry { due_at: now + wait.as_millis() as i64, error };
    }
    let ctx = ActionContext {
        run_id: format!("audience-removal:{}", r.id),
        step_key: "remove".into(),
        attempt: r.attempts.max(1) as u32,
        idempotency_key: format!("audience-removal:{}", r.id),
        credentials,
        http: Arc::new(crate::limits::BudgetWatch { inner: inner.clone(), key }),
        timeout: inner.config.step_timeout,
        extensions: Default::default(),
    };
    let input =
        AudienceRemoval { audience: r.audience.clone(), email_sha256: r.email_sha256.clone(), phone_sha256: r.phone_sha256.clone() };
    let input = serde_json::to_value(input).unwrap_or(Value::Null);
    let result = match tokio::time::timeout(inner.config.step_timeout, action.call(&ctx, input)).await {
        Ok(r) => r,
        Err(_) => Err(ConnectorError::transient("the remove action took longer than the step timeout")),
    };
    match result {
        Ok(_) => RemovalOutcome::Done,
        Err(e) => retry_or_fail(r, &e, now),
    }
}

/// Permanent refusals fail at once; the rest are retried with backoff (2^attempts seconds,
/// at most an hour, or the app's `Retry-After`) until [`REMOVAL_ATTEMPTS`].
fn retry_or_fail(r: &AudienceRemovalRow, e: &ConnectorError, now: i64) -> RemovalOutcome {
    let error = error_value(e);
    if matches!(e.class(), ErrorClass::Permanent | ErrorClass::BadInput) || r.attempts >= REMOVAL_ATTEMPTS {
        return RemovalOutcome::Failed { error };
    }
    let backoff = Duration::from_secs(2u64.saturating_pow(r.attempts.clamp(1, 12) as u32)).min(Duration::from_secs(3600));
    let wait = e.retry_after().map_or(backoff, |ra| ra.max(backoff));
    RemovalOutcome::Retry { due_at: now + wait.as_millis() as i64, error }
}
