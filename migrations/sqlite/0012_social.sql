-- Social post scheduling (issue 6): channels (a network, a connection, the account's
-- parameters, a time zone and queue time slots), posts, and one target per post and
-- channel, each with its own life. The targets are the durable timers of publishing: the
-- runner claims due ones with a lease, writes `sent_at` before a request leaves (a target
-- claimed again with `sent_at` set may have been published: it is checked, never resent
-- blindly), and records the network's id and URL.

CREATE TABLE social_channels (
    id             TEXT PRIMARY KEY,            -- UUIDv7
    name           TEXT NOT NULL,
    network        TEXT NOT NULL,               -- mastodon | bluesky | x | linkedin | facebook_page
    connection_id  TEXT,                        -- the connection the network's app uses
    params         TEXT NOT NULL DEFAULT '{}',  -- JSON: handle (bluesky), author (linkedin), page_id (facebook_page)
    timezone       TEXT NOT NULL,               -- IANA zone of the queue's slots
    slots          TEXT NOT NULL DEFAULT '[]',  -- JSON [{days: ["mon",...], time: "09:00"}]
    paused_reason  TEXT,                        -- NULL: active; else why publishing is paused (a refused token)
    paused_at      INTEGER,
    limits         TEXT,                        -- JSON: what the instance said (Mastodon's character limit...)
    limits_at      INTEGER,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL
);
CREATE INDEX social_channels_connection ON social_channels(connection_id);

CREATE TABLE social_posts (
    id          TEXT PRIMARY KEY,               -- UUIDv7
    text        TEXT NOT NULL,
    media       TEXT NOT NULL DEFAULT '[]',     -- JSON [{url, mime_type, alt}]
    link        TEXT,
    options     TEXT NOT NULL DEFAULT '{}',     -- JSON: visibility, content_warning, language
    origin      TEXT NOT NULL,                  -- api:<token> | cli | run:<run id>
    dedupe_key  TEXT UNIQUE,                    -- a recipe step's idempotency key: a replayed step makes no second post
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

CREATE TABLE social_targets (
    id            TEXT PRIMARY KEY,             -- UUIDv7; also the idempotency key sent to the network
    post_id       TEXT NOT NULL REFERENCES social_posts(id) ON DELETE CASCADE,
    channel_id    TEXT NOT NULL REFERENCES social_channels(id),
    text          TEXT,                         -- this channel's text, when it differs from the post's
    status        TEXT NOT NULL CHECK (status IN ('draft', 'scheduled', 'publishing', 'published', 'failed', 'cancelled', 'held')),
    scheduled_at  INTEGER,                      -- the time chosen (or the queue slot taken)
    due_at        INTEGER,                      -- when the runner takes it next (later than scheduled_at after a rate limit)
    queued        INTEGER NOT NULL DEFAULT 0,   -- 1: scheduled_at is a queue slot of the channel
    attempts      INTEGER NOT NULL DEFAULT 0,
    owner         TEXT,
    lease_until   INTEGER,
    sent_at       INTEGER,                      -- a request left at this time and its outcome is not known yet
    remote_id     TEXT,
    remote_url    TEXT,
    published_at  INTEGER,
    reason        TEXT,                         -- plain words: why it failed, is held or waits
    error         TEXT,                         -- JSON {class, message} of the last error
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);
CREATE INDEX social_targets_due ON social_targets(status, due_at);
CREATE INDEX social_targets_post ON social_targets(post_id);
CREATE INDEX social_targets_time ON social_targets(scheduled_at);
-- One post per queue slot of a channel ("add to queue" takes the next free one).
CREATE UNIQUE INDEX social_targets_slot ON social_targets(channel_id, scheduled_at)
    WHERE queued = 1 AND status NOT IN ('cancelled', 'failed');
