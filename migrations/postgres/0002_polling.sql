-- Polling triggers and subscribe (REST hook) triggers, PostgreSQL flavour. Everything is keyed by recipe id,
-- not by version, so that the cursor and the keys already seen survive edits of a recipe.

-- One row per polled recipe. No row: the next poll seeds (records what is there, fires
-- nothing). Disabling a recipe deletes its row, so enabling it again seeds again.
CREATE TABLE poll_states (
    recipe_id      TEXT PRIMARY KEY,
    cursor         TEXT,                    -- where the next poll starts (the trigger's own text)
    seeded_at      BIGINT,                 -- NULL until the seeding poll committed
    last_polled_at BIGINT,
    next_poll_at   BIGINT NOT NULL,
    last_error     TEXT,                    -- JSON: the classified error of the last poll
    paused         BOOLEAN NOT NULL DEFAULT FALSE,  -- true after an auth error, until the connection changes
    failures       BIGINT NOT NULL DEFAULT 0,  -- failed polls in a row (backoff)
    lease_owner    TEXT,                    -- the node polling it now; one at a time
    lease_until    BIGINT,
    updated_at     BIGINT NOT NULL
);

-- The dedupe keys seen per recipe. Bounded: a commit keeps the 10,000 most recently seen
-- keys of its recipe and drops keys not seen for 30 days (the inbox's dedupe key
-- `poll:<key>` still refuses a second run of an item fired before).
CREATE TABLE poll_seen (
    recipe_id     TEXT NOT NULL,
    key           TEXT NOT NULL,
    first_seen_at BIGINT NOT NULL,
    seen_at       BIGINT NOT NULL,         -- the last poll that returned it
    fired         BIGINT NOT NULL DEFAULT 0,  -- how many runs it started (0: seeded, held or discarded)
    fired_at      BIGINT,
    rearmed       BOOLEAN NOT NULL DEFAULT FALSE,  -- true: a rewind with refire asks to fire it again
    PRIMARY KEY (recipe_id, key)
);
CREATE INDEX poll_seen_age ON poll_seen(recipe_id, seen_at);

-- The cursor's history, for rewinds: a row each time it changes (the last 1,000 per recipe).
CREATE TABLE poll_cursors (
    id        BIGSERIAL PRIMARY KEY,
    recipe_id TEXT NOT NULL,
    cursor    TEXT,
    at        BIGINT NOT NULL,
    reason    TEXT NOT NULL                 -- seed, poll, rewind
);
CREATE INDEX poll_cursors_recipe ON poll_cursors(recipe_id, at);

-- The flood guard: a poll that found more new items than the recipe's `hold_above`.
CREATE TABLE poll_held (
    id         TEXT PRIMARY KEY,
    recipe_id  TEXT NOT NULL,
    items      TEXT NOT NULL,               -- JSON [{key, event}], oldest first
    count      BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    status     TEXT NOT NULL,               -- held, approved, discarded
    decided_at BIGINT
);
CREATE INDEX poll_held_recipe ON poll_held(recipe_id, created_at);

-- Subscribe triggers: the app's subscription for each enabled recipe.
CREATE TABLE trigger_subscriptions (
    recipe_id       TEXT PRIMARY KEY,
    app             TEXT NOT NULL,
    event           TEXT NOT NULL,
    subscription_id TEXT NOT NULL,
    target_url      TEXT NOT NULL,
    config          TEXT NOT NULL,          -- JSON: the trigger's `with` it was made with
    connection      TEXT,
    secret          BYTEA,                   -- sealed like connection credentials
    expires_at      BIGINT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
