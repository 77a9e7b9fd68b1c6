-- Enlace store, SQLite flavour. Forward-only; embedded in the binary and applied at start.
-- Times are milliseconds since the Unix epoch (UTC). JSON is stored as text.

CREATE TABLE recipes (
    id          TEXT PRIMARY KEY,
    version     INTEGER NOT NULL,           -- the version that runs
    enabled     INTEGER NOT NULL,
    origin      TEXT NOT NULL,              -- 'file' or 'api'
    hook_path   TEXT,                       -- webhook.catch path
    event_name  TEXT,                       -- enlace.event name
    is_cron     INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
-- One enabled recipe per hook path.
CREATE UNIQUE INDEX recipes_hook_path ON recipes(hook_path) WHERE enabled = 1 AND hook_path IS NOT NULL;
CREATE INDEX recipes_event_name ON recipes(event_name) WHERE enabled = 1 AND event_name IS NOT NULL;

CREATE TABLE recipe_versions (
    recipe_id   TEXT NOT NULL REFERENCES recipes(id) ON DELETE CASCADE,
    version     INTEGER NOT NULL,
    body        TEXT NOT NULL,              -- the recipe as written, as JSON
    digest      TEXT NOT NULL,              -- sha256 of body: an unchanged upload adds no version
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (recipe_id, version)
);

-- The inbound inbox: every accepted trigger event, before any run starts.
CREATE TABLE events (
    id          TEXT PRIMARY KEY,
    recipe_id   TEXT NOT NULL,
    source      TEXT NOT NULL,              -- webhook, cron, emit, manual, replay
    dedupe_key  TEXT,
    payload     TEXT NOT NULL,
    received_at INTEGER NOT NULL
);
CREATE UNIQUE INDEX events_dedupe ON events(recipe_id, dedupe_key) WHERE dedupe_key IS NOT NULL;

-- Runs are the queue and the timers: a queued or waiting run with due_at <= now is due.
CREATE TABLE runs (
    id             TEXT PRIMARY KEY,
    recipe_id      TEXT NOT NULL,
    recipe_version INTEGER NOT NULL,
    event_id       TEXT NOT NULL REFERENCES events(id),
    status         TEXT NOT NULL,           -- queued running waiting succeeded filtered failed cancelled
    due_at         INTEGER,
    attempt        INTEGER NOT NULL DEFAULT 1,   -- 1, then +1 per replay
    owner          TEXT,                    -- the node running it
    lease_until    INTEGER,
    replay_of      TEXT,
    error          TEXT,
    created_at     INTEGER NOT NULL,
    started_at     INTEGER,
    finished_at    INTEGER,
    updated_at     INTEGER NOT NULL
);
-- Few indexes on purpose: every one is written on every accepted event. Run ids are UUIDv7,
-- so the primary key already orders runs by creation (history lists newest first by id).
CREATE INDEX runs_due ON runs(due_at) WHERE status IN ('queued', 'waiting');
CREATE INDEX runs_recipe ON runs(recipe_id, id);

-- The journal of a run: one row per step execution (key = step id, or loop[3].step_id).
CREATE TABLE steps (
    run_id          TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    key             TEXT NOT NULL,
    seq             INTEGER NOT NULL,
    step_id         TEXT NOT NULL,
    kind            TEXT NOT NULL,
    status          TEXT NOT NULL,          -- running succeeded failed retrying waiting filtered cancelled
    input           TEXT,
    output          TEXT,
    error           TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0,
    idempotency_key TEXT,
    started_at      INTEGER NOT NULL,
    finished_at     INTEGER,
    PRIMARY KEY (run_id, key)
);

CREATE TABLE schedules (
    recipe_id   TEXT PRIMARY KEY,
    next_at     INTEGER NOT NULL,
    expression  TEXT NOT NULL,
    timezone    TEXT NOT NULL
);

CREATE TABLE secrets (
    name        TEXT PRIMARY KEY,
    value       BLOB NOT NULL,              -- XChaCha20-Poly1305: version byte, nonce, ciphertext
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

CREATE TABLE connections (
    id          TEXT PRIMARY KEY,               -- a slug chosen by the user; recipes say `connection: <id>`
    app         TEXT NOT NULL,
    name        TEXT NOT NULL,                  -- a label, free to change
    credentials BLOB NOT NULL,              -- encrypted JSON
    status      TEXT NOT NULL DEFAULT 'ok',
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);


CREATE TABLE api_tokens (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    hash         TEXT NOT NULL UNIQUE,      -- sha256 of the token; the token itself is shown once
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER
);
