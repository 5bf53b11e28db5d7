-- Second factors. The TOTP secret is sealed with AES-256-GCM (src/crypto.rs);
-- backup codes are stored as peppered Argon2id hashes, one row per slot.
CREATE TABLE totp_credentials (
    user_id        TEXT PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    sealed_secret  BLOB NOT NULL,
    enabled_at     INTEGER,
    last_used_step INTEGER,
    created_at     INTEGER NOT NULL
) STRICT;

CREATE TABLE backup_codes (
    user_id   TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    slot      INTEGER NOT NULL,
    code_hash TEXT NOT NULL,
    used_at   INTEGER,
    PRIMARY KEY (user_id, slot)
) STRICT;

-- Wrong second-factor codes sent by a pending session.
ALTER TABLE sessions ADD COLUMN mfa_failures INTEGER NOT NULL DEFAULT 0;
