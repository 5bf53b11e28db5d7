-- Second factors. The TOTP secret is sealed with AES-256-GCM (src/crypto.rs);
-- backup codes are stored as peppered Argon2id hashes, one row per slot.
CREATE TABLE totp_credentials (
    user_id        UUID PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    sealed_secret  BYTEA NOT NULL,
    enabled_at     TIMESTAMPTZ,
    last_used_step BIGINT,
    created_at     TIMESTAMPTZ NOT NULL
);

CREATE TABLE backup_codes (
    user_id   UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    slot      SMALLINT NOT NULL,
    code_hash TEXT NOT NULL,
    used_at   TIMESTAMPTZ,
    PRIMARY KEY (user_id, slot)
);

-- Wrong second-factor codes sent by a pending session.
ALTER TABLE sessions ADD COLUMN mfa_failures INTEGER NOT NULL DEFAULT 0;
