-- The contact timeline as an activity log (issue 5, items 2 to 4): recorded activity
-- (`ContactOp::RecordEvent`: page_viewed, email_opened, purchase, ...) is stored once per call
-- (op_key, the step's idempotency key or the API caller's key); the timeline is read per
-- contact and kind; lead scores are kept per contact in the same transaction as the entry
-- that changes them.

ALTER TABLE contact_events ADD COLUMN op_key TEXT;
CREATE UNIQUE INDEX contact_events_op ON contact_events(contact_id, op_key) WHERE op_key IS NOT NULL;
-- A contact's timeline of some kinds, newest first (the API's `kind=`, templates, journeys).
CREATE INDEX contact_events_contact_kind ON contact_events(contact_id, kind, at, id);

-- One score per contact: `points` as of `as_of` (decayed by the rules' half-life from then);
-- `above` lists the thresholds the score is at or above (a JSON array of names), so that a
-- threshold fires once per upward crossing.
CREATE TABLE contact_scores (
    contact_id  TEXT PRIMARY KEY REFERENCES contacts(id) ON DELETE CASCADE,
    points      REAL NOT NULL,
    as_of       INTEGER NOT NULL,
    half_life   INTEGER,                        -- ms, the rules' at the last update; NULL: no decay
    above       TEXT NOT NULL DEFAULT '[]',
    updated_at  INTEGER NOT NULL
);

-- The installation's scoring rules (one row; `PUT /api/v1/scoring`).
CREATE TABLE scoring_rules (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    rules       TEXT NOT NULL,                  -- JSON, enlace_core::scoring::ScoringRules
    updated_at  INTEGER NOT NULL
);
