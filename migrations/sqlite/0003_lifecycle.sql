-- Single-use tokens mailed for password reset and email verification.
-- Only an HMAC-SHA-256 of each token is stored.
CREATE TABLE account_tokens (
    token_hash BLOB PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    purpose    TEXT NOT NULL CHECK (purpose IN ('password_reset', 'email_verification')),
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER
) STRICT;
CREATE INDEX account_tokens_by_user ON account_tokens (user_id, purpose);

-- Shared rate-limit and back-off state: a fixed-window counter per key and
-- an optional block. Every node sees the same rows.
CREATE TABLE throttles (
    key           TEXT PRIMARY KEY,
    count         INTEGER NOT NULL,
    window_start  INTEGER NOT NULL,
    blocked_until INTEGER
) STRICT;
