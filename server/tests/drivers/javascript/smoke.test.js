// The official JavaScript driver against a real `photondb serve`: connect,
// create a table, insert, get, iterate a cursor of 1,000 documents in small
// batches, and handle an error.
const { test, before, after } = require('node:test');
const assert = require('node:assert');
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const r = require('rethinkdb');

const binary = process.env.PHOTONDB_BIN || path.resolve(__dirname, '../../../../target/debug/photondb');
let server;
let dataDir;
let logPath;
const port = 20000 + Math.floor(Math.random() * 20000);

before(async () => {
  dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'photondb-js-'));
  logPath = path.join(dataDir, 'server.log');
  const log = fs.openSync(logPath, 'w');
  server = spawn(binary, ['serve', '--data-dir', path.join(dataDir, 'data'), '--driver-port', String(port),
    '--partitions', '4', '--wal-ring-mib', '4'], { stdio: ['ignore', 'ignore', log] });
  const deadline = Date.now() + 60000;
  while (!fs.readFileSync(logPath, 'utf8').includes('listening for RethinkDB drivers')) {
    if (server.exitCode !== null) throw new Error('server exited: ' + fs.readFileSync(logPath, 'utf8'));
    if (Date.now() > deadline) throw new Error('server did not start');
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
});

after(async () => {
  const exited = new Promise((resolve) => server.on('exit', resolve));
  server.kill('SIGTERM');
  assert.strictEqual(await exited, 0, 'clean shutdown exits 0');
  fs.rmSync(dataDir, { recursive: true, force: true });
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
