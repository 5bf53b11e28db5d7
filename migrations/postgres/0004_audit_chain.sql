-- Tamper evidence for the audit log (docs/operations.md, "Audit log").
-- Each event stores SHA-256 over its content and the previous event's hash,
-- and optionally an HMAC of that hash under a key the database never holds.
-- castellan assigns `seq` itself, consecutively, while holding the row lock
-- on `audit_chain`, so the chain has no gaps and one writer at a time.
ALTER TABLE security_events ALTER COLUMN seq DROP IDENTITY;
ALTER TABLE security_events
    ADD COLUMN prev_hash BYTEA CHECK (length(prev_hash) = 32),
    ADD COLUMN hash      BYTEA CHECK (length(hash) = 32),
    ADD COLUMN mac       BYTEA CHECK (length(mac) = 32);
CREATE INDEX security_events_by_kind ON security_events (kind, seq);
CREATE INDEX security_events_by_time ON security_events (at);

-- One row: the newest event, and the checkpoint pruning leaves behind (the
-- hash of the last event it removed). Events already present when this
-- migration ran predate the chain and sit at or before the checkpoint.
CREATE TABLE audit_chain (
    id              SMALLINT PRIMARY KEY CHECK (id = 1),
    last_seq        BIGINT NOT NULL,
    last_hash       BYTEA NOT NULL CHECK (length(last_hash) = 32),
    checkpoint_seq  BIGINT NOT NULL,
    checkpoint_hash BYTEA NOT NULL CHECK (length(checkpoint_hash) = 32)
);
INSERT INTO audit_chain (id, last_seq, last_hash, checkpoint_seq, checkpoint_hash)
SELECT 1, COALESCE(MAX(seq), 0), decode(repeat('00', 32), 'hex'),
       COALESCE(MAX(seq), 0), decode(repeat('00', 32), 'hex')
FROM security_events;
