//! Keeping OAuth2 connections fresh: the token is refreshed ahead of its expiry and once
//! after a 401; one refresh at a time per connection (a task lock on this node, a lease in
//! the store across nodes), so a rotated refresh token is never sent twice; the new tokens
//! are stored (sealed) before they are used, so a refresh token is never lost; a refresh the
//! authorization server refuses marks the connection `needs_reconnect`, and the runs that
//! need it wait (held, not failed) until the user signs in again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use enlace_core::{ConnectorError, Credentials, ErrorClass, OAuth2Grant, Secret};

use crate::Inner;

/// A connection's status while it needs the user to sign in again.
pub const NEEDS_RECONNECT: &str = "needs_reconnect";

/// How long a node may hold a connection's refresh lease (a token request times out well
/// before this).
const LEASE_MS: i64 = 45_000;

/// The per-connection task locks of this node.
#[derive(Default)]
pub(crate) struct RefreshLocks(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl RefreshLocks {
    fn of(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).entry(id.to_string()).or_default().clone()
    }
}

/// What an action is given for a connection: a grant becomes a plain access token.
pub(crate) fn handed_out(creds: &Credentials) -> Credentials {
    match creds {
        Credentials::OAuth2Grant(g) => Credentials::OAuth2 { access_token: g.access_token.clone().unwrap_or_default() },
        other => other.clone(),
    }
}

fn token_of(g: &OAuth2Grant) -> &str {
    g.access_token.as_ref().map(Secret::expose).unwrap_or_default()
}

/// Whether `g` must be refreshed: its token is the one just refused, or (with nothing
/// refused) it expires soon.
fn stale(g: &OAuth2Grant, rejected: Option<&str>, now: i64) -> bool {
    match rejected {
        Some(bad) => token_of(g) == bad || !g.is_authorized(),
        None => g.needs_refresh(now),
    }
}

/// A grant whose access token can be used now. `rejected` is the access token a vendor
/// just refused (401): the grant is refreshed unless someone else already replaced that
/// token. Otherwise it is refreshed only when it expires soon. (Boxed so that the compiler
/// checks here, not in every step's future, that the refresh is `Send`.)
pub(crate) fn fresh_grant<'a>(
    inner: &'a Inner,
    id: &'a str,
    grant: OAuth2Grant,
    rejected: Option<&'a str>,
) -> enlace_core::BoxFuture<'a, Result<OAuth2Grant, ConnectorError>> {
    Box::pin(fresh_grant_inner(inner, id, grant, rejected))
}

async fn fresh_grant_inner(inner: &Inner, id: &str, mut grant: OAuth2Grant, rejected: Option<&str>) -> Result<OAuth2Grant, ConnectorError> {
    if !stale(&grant, rejected, inner.clock.now_ms()) {
        return Ok(grant);
    }
    let lock = inner.refresh_locks.of(id);
    let _local = lock.lock().await;
    // Whoever held the lock before us may have refreshed it already.
    grant = current_grant(inner, id).await?;
    if !stale(&grant, rejected, inner.clock.now_ms()) {
        return Ok(grant);
    }
    if !grant.is_authorized() && !grant.can_refresh() {
        return Err(ConnectorError::auth(format!(
            "the connection `{id}` has not been signed in yet: POST /api/v1/connections/{id}/authorize and open the address it gives"
        )));
    }
    let owner = format!("{}:{}", inner.config.node_id, uuid::Uuid::new_v4());
    let deadline = tokio::time::Instant::now() + Duration::from_millis(LEASE_MS as u64);
    loop {
        let now = inner.clock.now_ms();
        match inner.store.try_refresh_lease(id, &owner, now, now + LEASE_MS).await {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => return Err(ConnectorError::transient(format!("taking the refresh lease of `{id}` failed: {e}"))),
        }
        // Another node is refreshing: wait for its result.
        if tokio::time::Instant::now() > deadline {
            return Err(ConnectorError::transient(format!("another node has been refreshing the token of `{id}` for too long")));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        grant = current_grant(inner, id).await?;
        if !stale(&grant, rejected, inner.clock.now_ms()) {
            return Ok(grant);
        }
    }
    let result = refresh_holding_lease(inner, id, &owner).await;
    if let Err(e) = inner.store.end_refresh_lease(id, &owner).await {
        tracing::warn!(connection = %id, error = %e, "giving back the refresh lease failed; it ends by itself");
    }
    result
}

/// Refreshes with the lease held: the stored grant is read again (the lease is what makes
/// it current), refreshed, and stored before it is returned.
async fn refresh_holding_lease(inner: &Inner, id: &str, _owner: &str) -> Result<OAuth2Grant, ConnectorError> {
    let mut grant = current_grant(inner, id).await?;
    let started = inner.clock.now_ms();
    match enlace_kit::oauth::refresh(inner.transport.as_ref(), &grant).await {
        Ok(tokens) => {
            grant.absorb(tokens, started);
            let creds = Credentials::OAuth2Grant(Box::new(grant.clone()));
            // The new tokens are stored before anything uses them: a rotated refresh token
            // that was used but not stored would be lost with the old one revoked.
            let mut tries = 0;
            loop {
                match inner.store.save_connection_credentials(id, &creds, Some(("ok", "token refreshed")), inner.clock.now_ms()).await {
                    Ok(_) => break,
                    Err(e) if tries < 5 => {
                        tries += 1;
                        tracing::warn!(connection = %id, error = %e, "storing refreshed tokens failed; trying again");
                        tokio::time::sleep(Duration::from_millis(100 * tries)).await;
                    }
                    Err(e) => {
                        tracing::error!(connection = %id, error = %e, "storing refreshed tokens failed; the connection may need reconnecting");
                        return Err(ConnectorError::transient(format!("storing the refreshed tokens of `{id}` failed: {e}")));
                    }
                }
            }
            inner.metrics.oauth_refreshes.get_or_create(&vec![("outcome", "ok".to_string())]).inc();
            tracing::info!(connection = %id, "OAuth2 token refreshed");
            Ok(grant)
        }
        Err(e) => {
            inner.metrics.oauth_refreshes.get_or_create(&vec![("outcome", e.class().as_str().to_string())]).inc();
            if e.class() == ErrorClass::Auth {
                mark_needs_reconnect(inner, id, &e.to_string()).await;
            } else {
                tracing::warn!(connection = %id, error = %e, "OAuth2 token refresh failed; trying again later");
            }
            Err(e)
        }
    }
}

async fn current_grant(inner: &Inner, id: &str) -> Result<OAuth2Grant, ConnectorError> {
    match inner.store.connection(id).await {
        Ok(Some((_, Credentials::OAuth2Grant(g)))) => Ok(*g),
        Ok(Some(_)) => Err(ConnectorError::permanent(format!("the connection `{id}` is no longer an OAuth2 connection"))),
        Ok(None) => Err(ConnectorError::bad_input("connection", format!("the connection `{id}` was deleted"))),
        Err(e) => Err(ConnectorError::transient(format!("reading the connection `{id}` failed: {e}"))),
    }
}

/// Marks a connection as needing the user (its credentials were refused), keeping its
/// credentials: a later sign-in replaces them.
pub(crate) async fn mark_needs_reconnect(inner: &Inner, id: &str, message: &str) {
    tracing::warn!(connection = %id, reason = %message, "the connection needs reconnecting; runs that use it wait");
    if let Err(e) = inner.store.set_connection_status(id, NEEDS_RECONNECT, message, inner.clock.now_ms()).await {
        tracing::error!(connection = %id, error = %e, "marking the connection as needing reconnection failed");
    }
}
