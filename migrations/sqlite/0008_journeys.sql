-- Journeys: contact-scoped runs. A run of a contact-scoped recipe records its contact
-- (`contact_id`) and the timeline kinds that should wake it while it waits (`wake_on`, like
-- `,form_submitted,purchase,`: what its `wait_for` steps wait for and its exit rules look for).
-- When a contact's timeline gets an event of such a kind, the contact's waiting runs that
-- listen for it become due at once, in the same transaction as the event.
ALTER TABLE runs ADD COLUMN contact_id TEXT;
ALTER TABLE runs ADD COLUMN wake_on TEXT;
CREATE INDEX runs_contact ON runs(contact_id) WHERE contact_id IS NOT NULL;

-- Who entered which journey when: the re-entry rules (`once`, `cooldown`) read it. One row per
-- run that entered; a replay is the same run, so it does not enter twice. Erasing the contact
-- removes its rows.
CREATE TABLE journey_entries (
    recipe_id   TEXT NOT NULL,
    contact_id  TEXT NOT NULL REFERENCES contacts(id) ON DELETE CASCADE,
    run_id      TEXT NOT NULL,
    entered_at  INTEGER NOT NULL,
    PRIMARY KEY (recipe_id, contact_id, run_id)
);
CREATE INDEX journey_entries_contact ON journey_entries(contact_id);
