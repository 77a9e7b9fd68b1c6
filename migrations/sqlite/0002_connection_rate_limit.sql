-- A user-set rate limit per connection (at most rate_calls calls in any window of
-- rate_per_ms milliseconds); both NULL when the connection has none.
ALTER TABLE connections ADD COLUMN rate_calls INTEGER;
ALTER TABLE connections ADD COLUMN rate_per_ms INTEGER;

-- Facts about the store itself. `secret_check` holds a fixed text sealed with the secret key
-- the store's secrets are encrypted with: a process started with another key is refused
-- before it can write values nobody can read back.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
