-- Enlace store, PostgreSQL flavour. Forward-only; embedded in the binary and applied at start.
-- sqlx's migrator holds a PostgreSQL advisory lock while it runs, so when several nodes start
-- at once the migrations are applied once: the other nodes wait for the lock, then find them
-- applied.
-- The same tables as SQLite's (migrations/sqlite), with what SQLite gained since its 0001.
-- Times are milliseconds since the Unix epoch (UTC), BIGINT. JSON is stored as text: the
-- caller's serialisation is kept as it was given, and both backends share its handling.

CREATE TABLE recipes (
    id          TEXT PRIMARY KEY,
    version     BIGINT NOT NULL,            -- the version that runs
    enabled     BOOLEAN NOT NULL,
    origin      TEXT NOT NULL,              -- 'file' or 'api'
    hook_path   TEXT,                       -- webhook.catch path
    event_name  TEXT,                       -- enlace.event name
    is_cron     BOOLEAN NOT NULL DEFAULT FALSE,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
-- One enabled recipe per hook path.
CREATE UNIQUE INDEX recipes_hook_path ON recipes(hook_path) WHERE enabled AND hook_path IS NOT NULL;
CREATE INDEX recipes_event_name ON recipes(event_name) WHERE enabled AND event_name IS NOT NULL;

CREATE TABLE recipe_versions (
    recipe_id   TEXT NOT NULL REFERENCES recipes(id) ON DELETE CASCADE,
    version     BIGINT NOT NULL,
    body        TEXT NOT NULL,              -- the recipe as written, as JSON
    digest      TEXT NOT NULL,              -- sha256 of body: an unchanged upload adds no version
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (recipe_id, version)
);

-- The inbound inbox: every accepted trigger event, before any run starts.
CREATE TABLE events (
    id          TEXT PRIMARY KEY,
    recipe_id   TEXT NOT NULL,
    source      TEXT NOT NULL,              -- webhook, cron, emit, manual, replay
    dedupe_key  TEXT,
    payload     TEXT NOT NULL,
    received_at BIGINT NOT NULL
);
-- Holds across nodes: a second insert of the same key waits for the first to commit, then
-- inserts nothing (ON CONFLICT DO NOTHING).
CREATE UNIQUE INDEX events_dedupe ON events(recipe_id, dedupe_key) WHERE dedupe_key IS NOT NULL;

-- Runs are the queue and the timers: a queued or waiting run with due_at <= now is due.
CREATE TABLE runs (
    id             TEXT PRIMARY KEY,
    recipe_id      TEXT NOT NULL,
    recipe_version BIGINT NOT NULL,
    event_id       TEXT NOT NULL REFERENCES events(id),
    status         TEXT NOT NULL,           -- queued running waiting succeeded filtered failed cancelled
    due_at         BIGINT,
    attempt        BIGINT NOT NULL DEFAULT 1,    -- 1, then +1 per replay
    owner          TEXT,                    -- the node running it
    lease_until    BIGINT,                  -- the owner's claim ends here unless it heartbeats
    replay_of      TEXT,
    error          TEXT,
    created_at     BIGINT NOT NULL,
    started_at     BIGINT,
    finished_at    BIGINT,
    updated_at     BIGINT NOT NULL
);
CREATE INDEX runs_due ON runs(due_at) WHERE status IN ('queued', 'waiting');
CREATE INDEX runs_recipe ON runs(recipe_id, id);
-- The running runs (few: at most the nodes' worker slots), by owner for heartbeats and
-- hand-backs; reaping expired leases scans this small index whole.
CREATE INDEX runs_running ON runs(owner, lease_until) WHERE status = 'running';

-- The journal of a run: one row per step execution (key = step id, or loop[3].step_id).
CREATE TABLE steps (
    run_id          TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    key             TEXT NOT NULL,
    seq             BIGINT NOT NULL,
    step_id         TEXT NOT NULL,
    kind            TEXT NOT NULL,
    status          TEXT NOT NULL,          -- running succeeded failed retrying waiting filtered cancelled
    input           TEXT,
    output          TEXT,
    error           TEXT,
    attempts        BIGINT NOT NULL DEFAULT 0,
    idempotency_key TEXT,
    started_at      BIGINT NOT NULL,
    finished_at     BIGINT,
    PRIMARY KEY (run_id, key)
);

CREATE TABLE schedules (
    recipe_id   TEXT PRIMARY KEY,
    next_at     BIGINT NOT NULL,
    expression  TEXT NOT NULL,
    timezone    TEXT NOT NULL
);

CREATE TABLE secrets (
    name        TEXT PRIMARY KEY,
    value       BYTEA NOT NULL,             -- XChaCha20-Poly1305: version byte, nonce, ciphertext
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE connections (
    id             TEXT PRIMARY KEY,        -- a slug chosen by the user; recipes say `connection: <id>`
    app            TEXT NOT NULL,
    name           TEXT NOT NULL,           -- a label, free to change
    credentials    BYTEA NOT NULL,          -- encrypted JSON
    status         TEXT NOT NULL DEFAULT 'untested',  -- untested, then ok or error after a test
    status_message TEXT,                    -- what the last test found (never a credential)
    tested_at      BIGINT,
    rate_calls     BIGINT,                  -- the user's limit: at most rate_calls calls
    rate_per_ms    BIGINT,                  --   in any window of rate_per_ms ms (both or neither)
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL
);

CREATE TABLE api_tokens (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    hash         TEXT NOT NULL UNIQUE,      -- sha256 of the token; the token itself is shown once
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT
);

-- Facts about the store itself. `secret_check` holds a fixed text sealed with the secret key
-- of the first node: a node started with another key is refused.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);

-- Rate limits shared by every node: a sliding window per key.
CREATE TABLE rate_windows (
    key        TEXT PRIMARY KEY,
    calls      BIGINT[] NOT NULL DEFAULT '{}',  -- when each call still in the window was let go
                                                -- (microseconds, the database's clock), oldest first
    held_until BIGINT                           -- Unix ms: no call before then (a vendor's Retry-After)
);

-- Lets one call go under the limit `p_key` (at most p_calls calls in any window of p_per_ms
-- ms, spaced at least p_per_ms / p_calls apart): returns 0 and counts the call, or the
-- milliseconds to wait and counts nothing. The key's row is locked for the rest of the
-- transaction, so concurrent callers take turns, and the time is the database's, read after
-- the lock: the nodes' clocks play no part.
CREATE FUNCTION enlace_rate_acquire(p_key TEXT, p_calls INTEGER, p_per_ms BIGINT) RETURNS BIGINT
LANGUAGE plpgsql AS $$
DECLARE
    v_calls BIGINT[];
    v_held  BIGINT;
    v_now   BIGINT;
    v_n     INTEGER;
    v_gap   BIGINT;
BEGIN
    SELECT calls, held_until INTO v_calls, v_held FROM rate_windows WHERE key = p_key FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO rate_windows (key) VALUES (p_key) ON CONFLICT (key) DO NOTHING;
        SELECT calls, held_until INTO v_calls, v_held FROM rate_windows WHERE key = p_key FOR UPDATE;
    END IF;
    v_now := (extract(epoch FROM clock_timestamp()) * 1000000)::BIGINT;
    IF v_held IS NOT NULL AND v_held * 1000 > v_now THEN
        RETURN GREATEST(1, ceil((v_held * 1000 - v_now) / 1000.0)::BIGINT);
    END IF;
    v_calls := ARRAY(SELECT c FROM unnest(v_calls) AS c WHERE c > v_now - p_per_ms * 1000 ORDER BY c);
    v_n := cardinality(v_calls);
    -- Calls are also spaced evenly (one per per_ms / calls): a burst of the whole budget at
    -- once, followed by the next burst a window later, would reach the app with the network's
    -- jitter and look like more than `calls` in one of its windows.
    v_gap := (p_per_ms * 1000) / p_calls;
    IF v_n > 0 AND v_calls[v_n] > v_now - v_gap THEN
        RETURN GREATEST(1, ceil((v_calls[v_n] + v_gap - v_now) / 1000.0)::BIGINT);
    END IF;
    IF v_n < p_calls THEN
        UPDATE rate_windows SET calls = v_calls || v_now, held_until = NULL WHERE key = p_key;
        RETURN 0;
    END IF;
    -- Room comes when the (n - calls + 1)-th oldest call leaves the window.
    RETURN GREATEST(1, ceil((v_calls[v_n - p_calls + 1] + p_per_ms * 1000 - v_now) / 1000.0)::BIGINT);
END
$$;
