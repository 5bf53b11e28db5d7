-- Tamper evidence for the audit log (docs/operations.md, "Audit log").
-- Each event stores SHA-256 over its content and the previous event's hash,
-- and optionally an HMAC of that hash under a key the database never holds.
-- castellan assigns `seq` itself, consecutively, inside an IMMEDIATE
-- transaction (the database's write lock), so the chain has no gaps.
ALTER TABLE security_events ADD COLUMN prev_hash BLOB CHECK (prev_hash IS NULL OR length(prev_hash) = 32);
ALTER TABLE security_events ADD COLUMN hash BLOB CHECK (hash IS NULL OR length(hash) = 32);
ALTER TABLE security_events ADD COLUMN mac BLOB CHECK (mac IS NULL OR length(mac) = 32);
CREATE INDEX security_events_by_kind ON security_events (kind, seq);
CREATE INDEX security_events_by_time ON security_events (at);

-- One row: the newest event, and the checkpoint pruning leaves behind (the
-- hash of the last event it removed). Events already present when this
-- migration ran predate the chain and sit at or before the checkpoint.
CREATE TABLE audit_chain (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    last_seq        INTEGER NOT NULL,
    last_hash       BLOB NOT NULL CHECK (length(last_hash) = 32),
    checkpoint_seq  INTEGER NOT NULL,
    checkpoint_hash BLOB NOT NULL CHECK (length(checkpoint_hash) = 32)
) STRICT;
INSERT INTO audit_chain (id, last_seq, last_hash, checkpoint_seq, checkpoint_hash)
SELECT 1, COALESCE(MAX(seq), 0), zeroblob(32), COALESCE(MAX(seq), 0), zeroblob(32)
FROM security_events;
