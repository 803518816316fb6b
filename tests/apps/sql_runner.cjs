'use strict';
// Runs SQL statements through node-postgres, one by one on one connection, the way the seed documents'
// applications send them (unqualified names, the role's own search_path). Not document code: the harness
// of tests/test_apps_outside_in.py.
//
// STATEMENTS (env): JSON [{text, params?}, ...]. ROLLBACK=1 runs them in one transaction, each under a
// savepoint (a failing statement does not hide the next one), rolled back at the end, so a shared test
// database keeps its data. Prints JSON [{rowCount, rows} | {error: {message, code}}] on stdout.

async function run(queryable, statements, rollback) {
  const client = 'totalCount' in queryable ? await queryable.connect() : queryable; // a Pool: one of its clients
  const results = [];
  try {
    if (rollback) await client.query('BEGIN');
    for (const [i, st] of statements.entries()) {
      if (rollback) await client.query(`SAVEPOINT s${i}`);
      try {
        const res = await client.query(st.text, st.params || []);
        const all = Array.isArray(res) ? res : [res];
        const last = all[all.length - 1];
        results.push({ rowCount: last.rowCount, rows: last.rows, command: last.command });
        if (rollback) await client.query(`RELEASE SAVEPOINT s${i}`);
      } catch (e) {
        results.push({ error: { message: e.message, code: e.code, detail: e.detail || null } });
        if (rollback) await client.query(`ROLLBACK TO SAVEPOINT s${i}`);
      }
    }
    if (rollback) await client.query('ROLLBACK');
  } finally {
    if (client !== queryable) client.release();
  }
  return results;
}

async function main(queryable) {
  const { Client } = require('pg');
  let own = null;
  if (!queryable) {
    own = new Client({ connectionString: process.env.DATABASE_URL });
    await own.connect();
    queryable = own;
  }
  try {
    const results = await run(queryable, JSON.parse(process.env.STATEMENTS), process.env.ROLLBACK === '1');
    process.stdout.write(JSON.stringify(results));
  } finally {
    if (own) await own.end();
    else if (typeof queryable.end === 'function') await queryable.end();
  }
}

module.exports = { run, main };

if (require.main === module) {
  main().catch((e) => { process.stderr.write(`${e.code || ''} ${e.message}\n`); process.exit(1); });
}
