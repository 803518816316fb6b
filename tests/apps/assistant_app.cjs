'use strict';
// Drives spec 002's DatabaseService (the document's TypeScript, transpiled by the test into APP_MODULE)
// the way the AI Assistant Platform calls it, with the token fields read and written through minnoctl's
// Node client (MINNO_FIELDS, minnoctl/clients/node/minno-fields.cjs). Not document code: the harness of
// tests/test_apps_outside_in.py. SCENARIO picks what to do; prints one JSON object on stdout. The master
// key comes from the environment (MINNO_MASTER_KEY), never from argv.

const { DatabaseService } = require(process.env.APP_MODULE);

function describe(e) {
  return { name: e.name, message: e.message, code: e.code || null, column: e.column || null,
           detail: e.detail || null, hint: e.hint || null };
}

async function keyring(db) {
  const fields = require(process.env.MINNO_FIELDS);
  return fields.loadKeyring(db.pool, fields.parseMasterKey(process.env.MINNO_MASTER_KEY));
}

function decryptAll(ring, t) {
  const userId = t.userId;
  const dec = (column, field) => (field == null ? null
    : ring.decrypt('assistant', 'user_tokens', column, userId, field));
  return {
    google_access_token: dec('google_access_token', t.googleTokens && t.googleTokens.access_token),
    google_refresh_token: dec('google_refresh_token', t.googleTokens && t.googleTokens.refresh_token),
    slack_access_token: dec('slack_access_token', t.slackTokens && t.slackTokens.accessToken),
    slack_refresh_token: dec('slack_refresh_token', t.slackTokens && t.slackTokens.refreshToken),
  };
}

function tokensFor(userId, plain, wrap) {
  const now = new Date();
  return {
    userId,
    googleTokens: { access_token: wrap('google_access_token', plain.google_access_token),
                    refresh_token: wrap('google_refresh_token', plain.google_refresh_token),
                    expires_at: new Date(now.getTime() + 3600e3), token_type: 'Bearer', scope: 'email profile' },
    slackTokens: { accessToken: wrap('slack_access_token', plain.slack_access_token),
                   refreshToken: wrap('slack_refresh_token', plain.slack_refresh_token),
                   expiresAt: now.getTime() + 7200e3, scope: 'chat:write', teamId: 'T0OUTSIDE', userId: 'U0OUTSIDE' },
    createdAt: now,
    updatedAt: now,
  };
}

const scenarios = {
  // createSession, updateSession, storeConfirmation, resolveConfirmation, getHealth
  async flow(db) {
    const sessionId = `sess-outside-in-${process.pid}-${Date.now()}`;
    const now = new Date();
    await db.createSession({
      sessionId, userId: 'U-outside-in', expiresAt: new Date(now.getTime() + 3600e3), lastActivity: now,
      conversationHistory: [{ role: 'user', content: 'hello' }], slackContext: { channel: 'C0OUTSIDE' },
    });
    const created = (await db.query('SELECT * FROM sessions WHERE session_id = $1', [sessionId])).rows[0];
    await db.updateSession(sessionId, {
      lastActivity: new Date(now.getTime() + 1000), toolCalls: [{ tool: 'search' }], toolResults: [{ ok: true }],
    });
    const updated = (await db.query('SELECT * FROM sessions WHERE session_id = $1', [sessionId])).rows[0];
    const confirmationId = await db.storeConfirmation({
      sessionId, userId: 'U-outside-in', confirmationType: 'send_email',
      confirmationData: { to: 'someone@example.com' }, expiresAt: new Date(now.getTime() + 600e3),
    });
    const pending = (await db.query('SELECT * FROM confirmations WHERE id = $1', [confirmationId])).rows[0];
    await db.resolveConfirmation(confirmationId, 'confirmed');
    const resolved = (await db.query('SELECT * FROM confirmations WHERE id = $1', [confirmationId])).rows[0];
    const health = await db.getHealth();
    return { sessionId, created, updated, confirmationId, pending, resolved, health };
  },

  // getUserTokens of a row someone else wrote (minnoctl), decrypted with minnoctl's Node client
  async read(db) {
    const tokens = await db.getUserTokens(process.env.USER_ID);
    return { tokens, plain: tokens && decryptAll(await keyring(db), tokens) };
  },

  // storeUserTokens with fields encrypted by minnoctl's Node client, read back through getUserTokens
  async storeEncrypted(db) {
    const ring = await keyring(db);
    const userId = process.env.USER_ID;
    const plain = JSON.parse(process.env.PLAINTEXT);
    await db.storeUserTokens(tokensFor(userId, plain,
      (column, text) => (text == null ? text : ring.encrypt('assistant', 'user_tokens', column, userId, text))));
    const back = await db.getUserTokens(userId);
    return { stored: back, plain: decryptAll(ring, back) };
  },

  // runMigrations, the document's own migration runner, over MIGRATION_FILES (its example migration)
  async migrate(db) {
    try {
      await db.runMigrations();
    } catch (e) {
      return { migrated: false, error: describe(e) };
    }
    const done = await db.query('SELECT filename FROM migrations ORDER BY id');
    return { migrated: true, filenames: done.rows.map((r) => r.filename) };
  },

  // storeUserTokens as the document writes it, with the tokens in plaintext: must be refused
  async storePlaintext(db) {
    const userId = process.env.USER_ID;
    try {
      await db.storeUserTokens(tokensFor(userId, JSON.parse(process.env.PLAINTEXT), (column, text) => text));
      return { stored: true };
    } catch (e) {
      return { stored: false, error: describe(e) };
    }
  },
};

async function main() {
  const db = new DatabaseService();
  await db.onInitialize();
  try {
    process.stdout.write(JSON.stringify(await scenarios[process.env.SCENARIO](db)));
  } finally {
    await db.pool.end();
  }
}

main().catch((e) => { process.stdout.write(JSON.stringify({ failed: describe(e) })); process.exit(1); });
