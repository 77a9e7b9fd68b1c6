-- PostgreSQL flavour of migrations/sqlite/0006_contacts.sql (same tables; BIGINT times).
-- The embedded contact store (the `contacts` app): contacts, their tags, consent decisions
-- with their evidence, notes, and the timeline. Every change to a contact writes a timeline
-- row in the same transaction. Erasing a contact (GDPR) deletes its rows in every table
-- (ON DELETE CASCADE). The marketing flows add their own timeline kinds and read consent
-- at send time: `contact_consents_current` answers "the latest decision for this contact,
-- purpose and channel" from the index alone.

CREATE TABLE contacts (
    id             TEXT PRIMARY KEY,            -- UUIDv7
    email          TEXT NOT NULL UNIQUE,        -- normalised: trimmed, lowercase (the lookup key)
    email_original TEXT NOT NULL,               -- as first given
    fields         TEXT NOT NULL DEFAULT '{}',  -- a JSON object
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL,
    version        BIGINT NOT NULL DEFAULT 1   -- +1 per change
);

CREATE TABLE contact_tags (
    contact_id  TEXT NOT NULL REFERENCES contacts(id) ON DELETE CASCADE,
    tag         TEXT NOT NULL,
    added_at    BIGINT NOT NULL,
    PRIMARY KEY (contact_id, tag)
);
CREATE INDEX contact_tags_tag ON contact_tags(tag, contact_id);

-- The history of consent decisions; the latest row per (contact, purpose, channel) is the
-- current state. op_key (the step's idempotency key) stores a retried call once.
CREATE TABLE contact_consents (
    id          TEXT PRIMARY KEY,               -- UUIDv7: orders decisions made in the same ms
    contact_id  TEXT NOT NULL REFERENCES contacts(id) ON DELETE CASCADE,
    purpose     TEXT NOT NULL,                  -- marketing, newsletter, tracking, ...
    channel     TEXT NOT NULL,                  -- email sms whatsapp push voice mail social ads web
    status      TEXT NOT NULL CHECK (status IN ('granted', 'withdrawn')),
    evidence    TEXT NOT NULL,                  -- JSON {source, ip?, text?, recorded_at, run_id?}
    at          BIGINT NOT NULL,
    op_key      TEXT
);
CREATE INDEX contact_consents_current ON contact_consents(contact_id, purpose, channel, at, id);
CREATE UNIQUE INDEX contact_consents_op ON contact_consents(contact_id, op_key) WHERE op_key IS NOT NULL;

CREATE TABLE contact_notes (
    id          TEXT PRIMARY KEY,
    contact_id  TEXT NOT NULL REFERENCES contacts(id) ON DELETE CASCADE,
    body        TEXT NOT NULL,
    author      TEXT,
    at          BIGINT NOT NULL,
    op_key      TEXT
);
CREATE INDEX contact_notes_contact ON contact_notes(contact_id, at);
CREATE UNIQUE INDEX contact_notes_op ON contact_notes(contact_id, op_key) WHERE op_key IS NOT NULL;

-- The timeline: one row per change or activity (created, fields_updated, tag_added,
-- tag_removed, consent_recorded, note_added; the marketing flows add email_sent,
-- page_viewed, ...).
CREATE TABLE contact_events (
    id          TEXT PRIMARY KEY,               -- UUIDv7
    contact_id  TEXT NOT NULL REFERENCES contacts(id) ON DELETE CASCADE,
    kind        TEXT NOT NULL,
    data        TEXT NOT NULL,                  -- JSON
    run_id      TEXT,                           -- the run that made the change, if any
    at          BIGINT NOT NULL
);
CREATE INDEX contact_events_contact ON contact_events(contact_id, at, id);
-- Per kind over time (frequency caps, scoring rules).
CREATE INDEX contact_events_kind ON contact_events(kind, at);
