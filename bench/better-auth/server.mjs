// better-auth with its SQLite adapter (better-sqlite3), one Node process:
// the comparison target of bench/run.sh. Email and password sign-in and the
// bearer plugin, rate limiting off (all load comes from 127.0.0.1, as for
// castellan, whose per-address login limit the benchmark lifts too).
//
// BA_DB (file), BA_PORT, BA_SEED (users and sessions to seed; 0 = keep the
// file), BA_TOKENS (signed session tokens out, one a line, sent as
// `Authorization: Bearer`), BA_PASSWORD (every seeded user's password).
import { randomBytes, randomUUID } from "node:crypto";
import { writeFileSync, rmSync } from "node:fs";
import { createServer } from "node:http";

import Database from "better-sqlite3";
import { betterAuth } from "better-auth";
import { getMigrations } from "better-auth/db/migration";
import { toNodeHandler } from "better-auth/node";
import { bearer } from "better-auth/plugins";
import { serializeSignedCookie } from "better-call";

const env = process.env;
const path = env.BA_DB ?? "/tmp/better-auth-bench.db";
const seed = Number(env.BA_SEED ?? "0");
const port = Number(env.BA_PORT ?? "3000");
const password = env.BA_PASSWORD ?? "ochre-lantern-quiet-harbor-7391";
const secret = randomBytes(32).toString("base64");

if (seed > 0) rmSync(path, { force: true });
const db = new Database(path);
db.pragma("journal_mode = WAL");

const auth = betterAuth({
  database: db,
  secret,
  baseURL: `http://127.0.0.1:${port}`,
  emailAndPassword: { enabled: true },
  rateLimit: { enabled: false },
  plugins: [bearer()],
  logger: { level: "error" },
});

if (seed > 0) {
  const { runMigrations } = await getMigrations(auth.options);
  await runMigrations();
  // One real sign-up gives the row formats and the password hash.
  await auth.api.signUpEmail({ body: { email: "seed@example.com", password, name: "seed" } });
  const user = db.prepare("SELECT * FROM user WHERE email = 'seed@example.com'").get();
  const account = db.prepare("SELECT * FROM account WHERE userId = ?").get(user.id);
  const session = db.prepare("SELECT * FROM session WHERE userId = ?").get(user.id);
  // A fresh 7-day session, so get-session has no reason to extend it (it
  // writes when less than expiresIn - updateAge is left), as castellan's
  // seeded sessions need no activity write during the benchmark.
  const expires = Date.now() + 7 * 86400e3 - 60e3;
  const far = typeof session.expiresAt === "number" ? expires : new Date(expires).toISOString();
  const insert = (table, row) => {
    const cols = Object.keys(row);
    return db.prepare(
      `INSERT INTO "${table}" (${cols.map((c) => `"${c}"`).join(",")}) VALUES (${cols.map(() => "?").join(",")})`,
    );
  };
  const insUser = insert("user", user);
  const insAccount = insert("account", account);
  const insSession = insert("session", session);
  const tokens = [];
  db.transaction(() => {
    for (let i = 0; i < seed; i++) {
      const uid = randomUUID();
      insUser.run(...Object.values({ ...user, id: uid, email: `bench${i}@example.com`, name: `bench${i}` }));
      insAccount.run(...Object.values({ ...account, id: randomUUID(), accountId: uid, userId: uid }));
      const token = randomBytes(24).toString("base64url");
      insSession.run(
        ...Object.values({ ...session, id: randomUUID(), token, userId: uid, expiresAt: far, userAgent: "bench" }),
      );
      tokens.push(token);
    }
  })();
  // Signed the way the bearer plugin signs an unsigned token, so each request
  // checks one signature (as a browser's session cookie would).
  const signed = [];
  for (const t of tokens) {
    signed.push(decodeURIComponent((await serializeSignedCookie("", t, secret)).replace("=", "")));
  }
  writeFileSync(env.BA_TOKENS ?? "/tmp/better-auth-bench.tokens", signed.join("\n") + "\n");
  db.exec("ANALYZE");
  console.log(`seeded ${seed} users and sessions`);
}

createServer(toNodeHandler(auth)).listen(port, "127.0.0.1", () => {
  console.log(`listening on 127.0.0.1:${port}`);
});
