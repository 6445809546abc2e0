// The official JavaScript driver against a real `photondb serve`: connect,
// create a table, insert, get, iterate a cursor of 1,000 documents in small
// batches, and handle an error.
const { test, before, after } = require('node:test');
const assert = require('node:assert');
const r = require('rethinkdb');
const { startServer, stopServer } = require('./server');

let server;
let port;

before(async () => {
  server = await startServer('photondb-js-');
  port = server.port;
});

after(async () => {
  await stopServer(server);
});

test('connect, write, read, iterate and fail like RethinkDB', async () => {
  const connection = await r.connect({ host: '127.0.0.1', port });
  const created = await r.tableCreate('items').run(connection);
  assert.strictEqual(created.tables_created, 1);

  const documents = Array.from({ length: 1000 }, (_, id) => ({ id, square: id * id }));
  const inserted = await r.table('items').insert(documents).run(connection);
  assert.strictEqual(inserted.inserted, 1000);
  assert.deepStrictEqual(await r.table('items').get(12).run(connection), { id: 12, square: 144 });
  assert.strictEqual(await r.table('items').count().run(connection), 1000);

  const cursor = await r.table('items').run(connection, { maxBatchRows: 10 });
  const rows = await cursor.toArray();
  assert.strictEqual(rows.length, 1000);
  assert.deepStrictEqual(rows.map((row) => row.id), documents.map((document) => document.id));

  await assert.rejects(r.table('missing').run(connection), (error) => {
    assert.strictEqual(error.name, 'ReqlOpFailedError');
    assert.match(error.msg, /Table `test.missing` does not exist/);
    return true;
  });
  // The connection survives the error.
  assert.strictEqual(await r.expr('ok').run(connection), 'ok');
  await connection.close();
});
