-- The web channel (issue 9): hosted forms and on-site messages.
--
-- A form is its definition as JSON (enlace_core::web::FormDef: fields, consent wording,
-- tags, whether it is public, how long its signed links live). Submissions are not kept
-- here: they go onto the contact (fields, tags, consent with its evidence) and its timeline
-- (`form_submitted`), through the contacts service.
CREATE TABLE web_forms (
    id          TEXT PRIMARY KEY,        -- the form's id, in its address (/f/<id>)
    definition  TEXT NOT NULL,           -- JSON FormDef
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

-- On-site messages a recipe queued for a contact (web.show_message): shown by /track.js
-- once the site's visitor consented. One row per contact and rule, ever: a rule is shown
-- once per contact. Deleted with the contact (erasure).
CREATE TABLE web_messages (
    id          TEXT PRIMARY KEY,        -- UUIDv7
    contact_id  TEXT NOT NULL REFERENCES contacts(id) ON DELETE CASCADE,
    rule        TEXT NOT NULL,
    message     TEXT NOT NULL,           -- JSON NewWebMessage (title, body, button, product...)
    status      TEXT NOT NULL,           -- pending, shown, clicked, dismissed, skipped, cancelled
    created_at  INTEGER NOT NULL,
    shown_at    INTEGER,
    closed_at   INTEGER,
    UNIQUE (contact_id, rule)
);
CREATE INDEX web_messages_pending ON web_messages(contact_id, created_at) WHERE status IN ('pending', 'shown');
