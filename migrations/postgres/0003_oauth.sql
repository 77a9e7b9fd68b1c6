-- OAuth2 connections (see migrations/sqlite/0005_oauth.sql for the meaning of each part).
CREATE TABLE oauth_states (
    state_hash    TEXT PRIMARY KEY,
    connection_id TEXT NOT NULL,
    verifier      BYTEA NOT NULL,
    redirect_uri  TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL
);
ALTER TABLE connections ADD COLUMN refresh_owner TEXT;
ALTER TABLE connections ADD COLUMN refresh_until BIGINT;
ALTER TABLE runs ADD COLUMN held_connection TEXT;
CREATE INDEX runs_held ON runs(held_connection) WHERE held_connection IS NOT NULL;
