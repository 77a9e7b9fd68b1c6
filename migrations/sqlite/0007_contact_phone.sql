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
UPDATE contacts SET phone = '+' || replace(replace(replace(replace(replace(
        substr(trim(json_extract(fields, '$.phone')), 2), ' ', ''), '-', ''), '(', ''), ')', ''), '.', '')
WHERE json_type(fields, '$.phone') = 'text'
  AND trim(json_extract(fields, '$.phone')) GLOB '+[0-9]*'
  AND replace(replace(replace(replace(replace(
        substr(trim(json_extract(fields, '$.phone')), 2), ' ', ''), '-', ''), '(', ''), ')', ''), '.', '') NOT GLOB '*[^0-9]*'
  AND length(replace(replace(replace(replace(replace(
        substr(trim(json_extract(fields, '$.phone')), 2), ' ', ''), '-', ''), '(', ''), ')', ''), '.', '')) BETWEEN 7 AND 15;

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
    at          INTEGER NOT NULL,
    op_key      TEXT                            -- the call that wrote it (twilio:{MessageSid})
);
CREATE INDEX phone_suppressions_current ON phone_suppressions(phone, purpose, channel, at, id);
CREATE UNIQUE INDEX phone_suppressions_op ON phone_suppressions(phone, op_key) WHERE op_key IS NOT NULL;
