-- The web UI's accounts (issue 7): people who sign in to the UI, and their sessions.
--
-- Passwords are argon2id hashes (PHC strings, with their salt and parameters). A session's
-- id is random (32 bytes) and lives only in the browser's cookie; the store keeps its
-- SHA-256, so a copy of the database signs nobody in. Each session carries its own CSRF
-- token (synchronizer pattern: every form of the session sends it back). API tokens stay in
-- `api_tokens`.

CREATE TABLE ui_users (
    id            TEXT PRIMARY KEY,                 -- UUIDv7
    username      TEXT NOT NULL UNIQUE,             -- lowercased; an email or a short name
    password_hash TEXT NOT NULL,                    -- argon2id, PHC string
    role          TEXT NOT NULL CHECK (role IN ('admin', 'editor', 'viewer')),
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);

CREATE TABLE ui_sessions (
    id_hash    TEXT PRIMARY KEY,                    -- hex SHA-256 of the cookie's value
    user_id    TEXT NOT NULL REFERENCES ui_users(id) ON DELETE CASCADE,
    csrf       TEXT NOT NULL,                       -- the session's CSRF token
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL                     -- absolute: no sliding renewal
);
CREATE INDEX ui_sessions_user ON ui_sessions(user_id);
CREATE INDEX ui_sessions_expires ON ui_sessions(expires_at);

-- The recipe editor's drafts: a recipe being built (it may not validate yet, may have no
-- step). Publishing validates it and saves it as a new version of the recipe (through the
-- same code as the API), then drops the draft.
CREATE TABLE ui_drafts (
    recipe_id  TEXT PRIMARY KEY,
    source     TEXT NOT NULL,                       -- the recipe as JSON, as the editor left it
    updated_at BIGINT NOT NULL,
    updated_by TEXT NOT NULL                        -- the account's name
);

-- Sample requests for webhook recipes being built: while the editor listens on a path that no
-- enabled recipe takes, `/hooks/{path}` keeps the request here (not a run) and answers 202.
CREATE TABLE ui_samples (
    path            TEXT PRIMARY KEY,
    recipe_id       TEXT NOT NULL,
    listening_until BIGINT NOT NULL,
    payload         TEXT,                           -- the event as a run would see it: {body, headers, query, received_at}
    received_at     BIGINT
);
