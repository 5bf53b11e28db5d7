-- Accounts, sessions and the security-event record.
CREATE TABLE users (
    id                  UUID PRIMARY KEY,
    email               TEXT NOT NULL,
    email_key           TEXT NOT NULL UNIQUE,
    password_hash       TEXT NOT NULL,
    email_verified      BOOLEAN NOT NULL DEFAULT FALSE,
    mfa_enabled         BOOLEAN NOT NULL DEFAULT FALSE,
    locked_at           TIMESTAMPTZ,
    created_at          TIMESTAMPTZ NOT NULL,
    password_changed_at TIMESTAMPTZ NOT NULL,
    last_login_at       TIMESTAMPTZ
);

-- token_hash is HMAC-SHA-256 of the token.
CREATE TABLE sessions (
    id               UUID PRIMARY KEY,
    token_hash       BYTEA NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    user_id          UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    aal              TEXT NOT NULL CHECK (aal IN ('aal1', 'aal2')),
    mfa_pending      BOOLEAN NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL,
    authenticated_at TIMESTAMPTZ NOT NULL,
    last_seen_at     TIMESTAMPTZ NOT NULL,
    expires_at       TIMESTAMPTZ NOT NULL,
    user_agent       TEXT NOT NULL,
    ip               TEXT NOT NULL
);
CREATE INDEX sessions_by_user ON sessions (user_id, created_at);
CREATE INDEX sessions_by_expiry ON sessions (expires_at);
CREATE INDEX sessions_by_last_seen ON sessions (last_seen_at);

-- Events outlive the users they name, so user_id has no foreign key.
CREATE TABLE security_events (
    seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id         UUID NOT NULL UNIQUE,
    at         TIMESTAMPTZ NOT NULL,
    kind       TEXT NOT NULL,
    user_id    UUID,
    ip         TEXT NOT NULL,
    user_agent TEXT NOT NULL,
    request_id TEXT NOT NULL,
    detail     JSONB NOT NULL
);
CREATE INDEX security_events_by_user ON security_events (user_id, seq);
