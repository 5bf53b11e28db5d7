#!/usr/bin/env python3
"""Seeds castellan's database with N users and N sessions for bench/run.sh.

Every seeded user gets the same Argon2id PHC string (copied from one user
registered over HTTP), so they all share that user's password. Session i
belongs to user i. Tokens are made the way castellan makes them
(`cst_` + base64url, no padding, of 32 random bytes) and stored as
HMAC-SHA-256(key = HMAC-SHA-256(master, "castellan/v1/session-token-hash"),
token), master being the base64-decoded CASTELLAN_SECRET_KEY.

  seed.py sqlite   DB_PATH  --hash PHC --users N --tokens OUT
  seed.py postgres CSV_DIR  --hash PHC --users N --tokens OUT

The SQLite mode writes the rows directly (castellan must be stopped). The
PostgreSQL mode writes users.csv and sessions.csv into CSV_DIR for psql's
\\copy. The secret comes from the CASTELLAN_SECRET_KEY environment variable.
"""

import argparse
import base64
import csv
import datetime as dt
import hashlib
import hmac
import os
import secrets
import sqlite3
import sys
import time
import uuid

LIFETIME = dt.timedelta(hours=12)


def token_hash_key(secret_b64: str) -> bytes:
    master = base64.b64decode(secret_b64)
    if len(master) < 32:
        sys.exit("CASTELLAN_SECRET_KEY holds fewer than 32 bytes")
    return hmac.new(master, b"castellan/v1/session-token-hash", hashlib.sha256).digest()


def new_token() -> str:
    return "cst_" + base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()


def rows(n: int, key: bytes):
    """Yields (user_id, email, email_key, token, token_hash, session_id) per user."""
    for i in range(n):
        email = f"bench{i}@example.com"
        token = new_token()
        th = hmac.new(key, token.encode(), hashlib.sha256).digest()
        yield str(uuid.uuid4()), email, email.lower(), token, th, str(uuid.uuid4())


def seed_sqlite(path: str, phc: str, n: int, key: bytes, tokens_out) -> None:
    now = dt.datetime.now(dt.timezone.utc)
    now_ms = int(now.timestamp() * 1000)
    exp_ms = int((now + LIFETIME).timestamp() * 1000)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA foreign_keys = ON")
    users, sessions = [], []
    for uid, email, email_key, token, th, sid in rows(n, key):
        users.append((uid, email, email_key, phc, now_ms, now_ms))
        sessions.append((sid, th, uid, now_ms, now_ms, now_ms, exp_ms))
        tokens_out.write(token + "\n")
    with conn:
        conn.executemany(
            "INSERT INTO users (id, email, email_key, password_hash, email_verified, mfa_enabled,"
            " created_at, password_changed_at) VALUES (?, ?, ?, ?, 0, 0, ?, ?)",
            users,
        )
        conn.executemany(
            "INSERT INTO sessions (id, token_hash, user_id, aal, mfa_pending, created_at,"
            " authenticated_at, last_seen_at, expires_at, user_agent, ip)"
            " VALUES (?, ?, ?, 'aal1', 0, ?, ?, ?, ?, 'bench', '127.0.0.1')",
            sessions,
        )
    conn.execute("ANALYZE")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def seed_postgres_csv(out_dir: str, phc: str, n: int, key: bytes, tokens_out) -> None:
    now = dt.datetime.now(dt.timezone.utc)
    now_s = now.isoformat()
    exp_s = (now + LIFETIME).isoformat()
    with open(os.path.join(out_dir, "users.csv"), "w", newline="") as uf, open(
        os.path.join(out_dir, "sessions.csv"), "w", newline=""
    ) as sf:
        uw, sw = csv.writer(uf), csv.writer(sf)
        for uid, email, email_key, token, th, sid in rows(n, key):
            # users(id, email, email_key, password_hash, email_verified, mfa_enabled,
            #       created_at, password_changed_at)
            uw.writerow((uid, email, email_key, phc, "f", "f", now_s, now_s))
            # sessions(id, token_hash, user_id, aal, mfa_pending, created_at,
            #          authenticated_at, last_seen_at, expires_at, user_agent, ip)
            sw.writerow(
                (sid, "\\x" + th.hex(), uid, "aal1", "f", now_s, now_s, now_s, exp_s, "bench", "127.0.0.1")
            )
            tokens_out.write(token + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("backend", choices=["sqlite", "postgres"])
    p.add_argument("target", help="SQLite database file, or folder for the PostgreSQL CSV files")
    p.add_argument("--hash", required=True, help="Argon2id PHC string to give every user")
    p.add_argument("--users", type=int, default=100_000)
    p.add_argument("--tokens", required=True, help="file to write the session tokens to, one a line")
    a = p.parse_args()
    secret = os.environ.get("CASTELLAN_SECRET_KEY")
    if not secret:
        sys.exit("CASTELLAN_SECRET_KEY is not set")
    if not a.hash.startswith("$argon2id$"):
        sys.exit(f"--hash does not look like an Argon2id PHC string: {a.hash[:20]!r}")
    key = token_hash_key(secret)
    started = time.monotonic()
    with open(a.tokens, "w") as tokens_out:
        if a.backend == "sqlite":
            seed_sqlite(a.target, a.hash, a.users, key, tokens_out)
        else:
            seed_postgres_csv(a.target, a.hash, a.users, key, tokens_out)
    print(f"seeded {a.users} users and {a.users} sessions ({a.backend}) in {time.monotonic() - started:.1f}s")


if __name__ == "__main__":
    main()
