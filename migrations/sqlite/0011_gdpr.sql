-- GDPR (issue 5, item 8): the record of each erasure, the ad audiences a contact was added
-- to, and the durable queue of removals from those audiences.
--
-- Nothing here holds a contact's email or phone in clear. An erasure keeps a keyed hash
-- (HMAC-SHA256 with a key derived from the installation's secret key) of the normalised
-- email and of the E.164 phone: the API can answer "erased" for an id or an email, and the
-- record proves the erasure, but a table dump does not give the address back. Audience
-- memberships and removals keep the SHA-256 of the normalised email and of the E.164 phone
-- (what ad platforms match on), never the address.

CREATE TABLE contact_erasures (
    id              TEXT PRIMARY KEY,           -- UUIDv7
    contact_id      TEXT NOT NULL,              -- the erased contact's id (a random UUID)
    email_hash      TEXT NOT NULL,              -- hex HMAC-SHA256 of the normalised email
    phone_hash      TEXT,                       -- hex HMAC-SHA256 of the E.164 phone, if it had one
    phone_withdrawn TEXT NOT NULL DEFAULT '[]', -- JSON ["purpose:channel"]: the number's STOPs, still honoured
    erased_by       TEXT NOT NULL,              -- who asked: `api:<token name>`, `cli`
    erased_at       INTEGER NOT NULL,
    runs_redacted   INTEGER NOT NULL,           -- runs whose history had personal data replaced
    runs_cancelled  INTEGER NOT NULL,           -- pending runs about the contact, cancelled
    removals_queued INTEGER NOT NULL            -- audience removals queued
);
CREATE INDEX contact_erasures_contact ON contact_erasures(contact_id);
CREATE INDEX contact_erasures_email ON contact_erasures(email_hash);
CREATE INDEX contact_erasures_phone ON contact_erasures(phone_hash) WHERE phone_hash IS NOT NULL;

-- One row per person per audience, written when an action declared as adding to an ad
-- audience succeeds. member_key (a hash of app, connection, audience and identifiers) makes
-- a repeated add one row.
CREATE TABLE audience_members (
    id             TEXT PRIMARY KEY,
    member_key     TEXT NOT NULL UNIQUE,
    contact_id     TEXT,                        -- the contact with that email or phone, when there was one
    email_sha256   TEXT,
    phone_sha256   TEXT,
    app            TEXT NOT NULL,
    connection_id  TEXT,
    remove_action  TEXT NOT NULL,               -- the app's action that takes the person out
    audience       TEXT NOT NULL,               -- JSON: the audience as the add action named it
    run_id         TEXT,
    added_at       INTEGER NOT NULL
);
CREATE INDEX audience_members_contact ON audience_members(contact_id) WHERE contact_id IS NOT NULL;
CREATE INDEX audience_members_email ON audience_members(email_sha256) WHERE email_sha256 IS NOT NULL;
CREATE INDEX audience_members_phone ON audience_members(phone_sha256) WHERE phone_sha256 IS NOT NULL;

-- The removal queue: queued with the erasure (or the withdrawn `ads` consent) in one
-- transaction, sent by the runner with retries. `sending` is leased: a node that dies
-- mid-call leaves it to be claimed again once `lease_until` passes.
CREATE TABLE audience_removals (
    id             TEXT PRIMARY KEY,            -- UUIDv7
    app            TEXT NOT NULL,
    connection_id  TEXT,
    remove_action  TEXT NOT NULL,
    audience       TEXT NOT NULL,               -- JSON
    email_sha256   TEXT,
    phone_sha256   TEXT,
    reason         TEXT NOT NULL,               -- erased | consent_withdrawn
    status         TEXT NOT NULL CHECK (status IN ('pending', 'sending', 'done', 'failed')),
    attempts       INTEGER NOT NULL DEFAULT 0,
    due_at         INTEGER,
    owner          TEXT,
    lease_until    INTEGER,
    last_error     TEXT,                        -- JSON {class, message}
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    done_at        INTEGER
);
CREATE INDEX audience_removals_due ON audience_removals(status, due_at);
