-- PostgreSQL flavour of migrations/sqlite/0010_timeline.sql (same tables; BIGINT times,
-- DOUBLE PRECISION points).
-- The contact timeline as an activity log (issue 5, items 2 to 4): recorded activity
-- (`ContactOp::RecordEvent`: page_viewed, email_opened, purchase, ...) is stored once per call
-- (op_key, the step's idempotency key or the API caller's key); the timeline is read per
-- contact and kind; lead scores are kept per contact in the same transaction as the entry
-- that changes them.

ALTER TABLE contact_events ADD COLUMN op_key TEXT;
CREATE UNIQUE INDEX contact_events_op ON contact_events(contact_id, op_key) WHERE op_key IS NOT NULL;
CREATE INDEX contact_events_contact_kind ON contact_events(contact_id, kind, at, id);

CREATE TABLE contact_scores (
    contact_id  TEXT PRIMARY KEY REFERENCES contacts(id) ON DELETE CASCADE,
    points      DOUBLE PRECISION NOT NULL,
    as_of       BIGINT NOT NULL,
    half_life   BIGINT,
    above       TEXT NOT NULL DEFAULT '[]',
    updated_at  BIGINT NOT NULL
);

CREATE TABLE scoring_rules (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    rules       TEXT NOT NULL,
    updated_at  BIGINT NOT NULL
);
