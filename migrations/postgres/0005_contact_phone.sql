-- PostgreSQL flavour of migrations/sqlite/0007_contact_phone.sql (same columns; BIGINT times).
-- Contacts found by phone number, and the SMS suppression list.
--
-- `contacts.phone` is the contact's `phone` field normalised to E.164 (`+14155552671`), kept
-- by the store on every write (NULL when the field is absent or is not an international
-- number); an inbound SMS is matched on it. Several contacts may share a number.
--
-- `phone_suppressions` holds the decisions a phone number sent itself (an SMS reply
-- STOP or START, through Twilio), per purpose and channel, whether or not a contact had
-- that number then: a contact created later with the number starts with it, and
-- `twilio.send_sms` refuses a number whose latest decision is `withdrawn`.

ALTER TABLE contacts ADD COLUMN phone TEXT;
CREATE INDEX contacts_phone ON contacts(phone) WHERE phone IS NOT NULL;

-- Contacts stored before: their phone when written in international form (+, digits and
-- the usual separators).
UPDATE contacts SET phone = '+' || regexp_replace(substr(btrim(fields::jsonb ->> 'phone'), 2), '[ ().-]', '', 'g')
WHERE jsonb_typeof(fields::jsonb -> 'phone') = 'string'
  AND btrim(fields::jsonb ->> 'phone') ~ '^\+[0-9][0-9 ().-]*$'
  AND length(regexp_replace(substr(btrim(fields::jsonb ->> 'phone'), 2), '[ ().-]', '', 'g')) BETWEEN 7 AND 15;

-- A history like contact_consents: the latest row per (phone, purpose, channel) stands; a
-- retried delivery of the same message (op_key) is stored once, so a late retry of an old
-- STOP cannot undo a newer START.
CREATE TABLE phone_suppressions (
    id          TEXT PRIMARY KEY,               -- UUIDv7: orders decisions made in the same ms
    phone       TEXT NOT NULL,                  -- E.164
    purpose     TEXT NOT NULL,                  -- marketing
    channel     TEXT NOT NULL,                  -- sms, whatsapp
    status      TEXT NOT NULL CHECK (status IN ('granted', 'withdrawn')),
    evidence    TEXT NOT NULL,                  -- JSON {source, text?, recorded_at, message_sid, body, at}
    at          BIGINT NOT NULL,
    op_key      TEXT                            -- the call that wrote it (twilio:{MessageSid})
);
CREATE INDEX phone_suppressions_current ON phone_suppressions(phone, purpose, channel, at, id);
CREATE UNIQUE INDEX phone_suppressions_op ON phone_suppressions(phone, op_key) WHERE op_key IS NOT NULL;
