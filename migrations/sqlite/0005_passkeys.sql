-- Passkeys (WebAuthn credentials). `credential` is webauthn-rs's serialised
-- Passkey (public key, algorithm, counter, flags: nothing secret); the
-- counter and the backup flags are also kept in their own columns so that
-- the counter rule is one conditional UPDATE. Credential ids are unique
-- across all accounts.
CREATE TABLE passkeys (
    id              TEXT PRIMARY KEY,
    user_id         TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    credential_id   BLOB NOT NULL UNIQUE,
    name            TEXT NOT NULL,
    credential      TEXT NOT NULL,
    sign_count      INTEGER NOT NULL CHECK (sign_count >= 0),
    backup_eligible INTEGER NOT NULL,
    backup_state    INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    last_used_at    INTEGER,
    -- Set when the signature counter went backwards; the passkey is refused from then on.
    flagged_at      INTEGER
) STRICT;
CREATE INDEX passkeys_by_user ON passkeys (user_id, created_at);

-- Ceremony state between start and finish: single use (finish deletes the
-- row), bound to a session where there is one, and short-lived.
CREATE TABLE passkey_ceremonies (
    id         TEXT PRIMARY KEY,
    purpose    TEXT NOT NULL CHECK (purpose IN ('register', 'login', 'second_factor', 'reauthenticate')),
    session_id TEXT REFERENCES sessions (id) ON DELETE CASCADE,
    user_id    TEXT REFERENCES users (id) ON DELETE CASCADE,
    state      TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) STRICT;
CREATE INDEX passkey_ceremonies_by_session ON passkey_ceremonies (session_id, purpose);
CREATE INDEX passkey_ceremonies_by_expiry ON passkey_ceremonies (expires_at);
