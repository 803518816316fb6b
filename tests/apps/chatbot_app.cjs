'use strict';
// Drives spec 001's Drizzle schema (src/db/schema.ts from the document, transpiled by the test into
// SCHEMA_MODULE) with drizzle-orm's node-postgres driver, as the Micro Chatbot Service does. Not document
// code: the harness of tests/test_apps_outside_in.py. Prints one JSON object on stdout.

const { drizzle } = require('drizzle-orm/node-postgres');
const { eq, asc } = require('drizzle-orm');
const { Pool } = require('pg');
const { conversations, messages } = require(process.env.SCHEMA_MODULE);

function describe(e) {
  const cause = e.cause || e;
  return { message: cause.message, code: cause.code || null, constraint: cause.constraint || null };
}

async function main() {
  const pool = new Pool({ connectionString: process.env.DATABASE_URL });
  const db = drizzle(pool);
  const userId = `user-drizzle-${process.pid}`;
  try {
    const [conversation] = await db.insert(conversations)
      .values({ userId, metadata: { source: 'web-app', department: 'support' } }).returning();
    const inserted = await db.insert(messages).values([
      { conversationId: conversation.id, role: 'user', content: 'Hello, I need help with my order' },
      { conversationId: conversation.id, role: 'assistant', content: 'Happy to help', metadata: { model: 'm' } },
      { conversationId: conversation.id, role: 'system', content: 'You are a helpful assistant' },
    ]).returning({ id: messages.id });
    const mine = await db.select().from(conversations).where(eq(conversations.userId, userId));
    const history = await db.select().from(messages).where(eq(messages.conversationId, conversation.id))
      .orderBy(asc(messages.content));
    await db.update(conversations).set({ updatedAt: new Date() }).where(eq(conversations.id, conversation.id));
    let badRole = null;
    try {
      await db.insert(messages).values({ conversationId: conversation.id, role: 'robot', content: 'beep' });
    } catch (e) {
      badRole = describe(e);
    }
    await db.delete(conversations).where(eq(conversations.id, conversation.id));
    const afterDelete = await db.select().from(messages).where(eq(messages.conversationId, conversation.id));
    process.stdout.write(JSON.stringify({ conversation, inserted: inserted.length, mine, history, badRole,
                                          afterDelete: afterDelete.length }));
  } finally {
    await pool.end();
  }
}

main().catch((e) => { process.stdout.write(JSON.stringify({ failed: describe(e) })); process.exit(1); });
