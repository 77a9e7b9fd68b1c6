-- OAuth2 connections.
-- A sign-in in progress: the `state` sent to the authorization server (stored as its
-- SHA-256, like API tokens), the connection it is for, and the PKCE verifier (sealed).
-- Used once: the callback deletes the row it reads; rows past expires_at are ignored.
CREATE TABLE oauth_states (
    state_hash    TEXT PRIMARY KEY,
    connection_id TEXT NOT NULL,
    verifier      BLOB NOT NULL,
    redirect_uri  TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL
);
-- Who is refreshing a connection's token right now, until when: one refresh at a time
-- across every node, so a rotated refresh token is never used twice.
ALTER TABLE connections ADD COLUMN refresh_owner TEXT;
ALTER TABLE connections ADD COLUMN refresh_until INTEGER;
-- A run held because its connection needs reconnecting: status 'waiting', no due time,
-- released (queued, due now) when the connection is repaired.
ALTER TABLE runs ADD COLUMN held_connection TEXT;
CREATE INDEX runs_held ON runs(held_connection) WHERE held_connection IS NOT NULL;
