-- PostgreSQL flavour of migrations/sqlite/0009_send_policy.sql (same tables; BIGINT times).
-- The send policy (issue 5, items 5 and 6): the send ledger and the installation's policy.
--
-- One ledger row per message and recipient. message_key is `ORIGINAL_RUN:STEP_KEY` (a
-- replay keeps the run id), so a retry, a restart or a replay finds the first attempt's row
-- and never sends twice. A reservation (status `reserved`, sent_at set) is written in the
-- same transaction that counts the recipient's earlier sends, so two runs cannot both pass
-- a full cap. Statuses: reserved sent deferred blocked held approved rejected released cancelled.
CREATE TABLE send_ledger (
    id            TEXT PRIMARY KEY,             -- UUIDv7
    message_key   TEXT NOT NULL,
    recipient     TEXT NOT NULL,                -- normalised: an email lowercased, a number in E.164
    contact_id    TEXT REFERENCES contacts(id) ON DELETE CASCADE,
    recipe_id     TEXT NOT NULL,
    run_id        TEXT NOT NULL,
    step_key      TEXT NOT NULL,
    channel       TEXT NOT NULL,
    purpose       TEXT NOT NULL,
    transactional BOOLEAN NOT NULL,
    status        TEXT NOT NULL,
    reason        TEXT,
    until         BIGINT,                      -- deferred until
    sent_at       BIGINT,                      -- let out: what the caps count
    decided_at    BIGINT NOT NULL,
    output        TEXT                          -- the action's output (JSON), once sent
);
CREATE UNIQUE INDEX send_ledger_message ON send_ledger(message_key, recipient);
-- The caps: a contact's (or an address's) sends in a window; a recipe's sends per hour and day.
CREATE INDEX send_ledger_contact ON send_ledger(contact_id, sent_at) WHERE sent_at IS NOT NULL;
CREATE INDEX send_ledger_recipient ON send_ledger(recipient, sent_at) WHERE sent_at IS NOT NULL;
CREATE INDEX send_ledger_recipe ON send_ledger(recipe_id, sent_at) WHERE sent_at IS NOT NULL;
CREATE INDEX send_ledger_held ON send_ledger(recipe_id, decided_at) WHERE status = 'held';

-- The installation's send policy (GET/PUT /api/v1/policy): one row, JSON; absent = defaults.
CREATE TABLE send_policy (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    settings    TEXT NOT NULL,
    updated_at  BIGINT NOT NULL
);
