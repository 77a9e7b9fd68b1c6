-- The outcome of the last connection test: status is 'untested' until one runs, then 'ok'
-- or 'error'; the message says what the app answered (never a credential).
ALTER TABLE connections ADD COLUMN status_message TEXT;
ALTER TABLE connections ADD COLUMN tested_at INTEGER;
