// Changefeeds through the official JavaScript driver: the driver picks its
// Feed and AtomFeed cursor classes from the response notes, and changes
// arrive as {old_val, new_val} from writes on another connection.
const { test, before, after } = require('node:test');
const assert = require('node:assert');
const r = require('rethinkdb');
const { startServer, stopServer } = require('./server');

let server;
let port;

before(async () => {
  server = await startServer('photondb-js-feeds-');
  port = server.port;
});

after(async () => {
  await stopServer(server);
});

test('table and point changefeeds deliver every change', async () => {
  const reader = await r.connect({ host: '127.0.0.1', port });
  const writer = await r.connect({ host: '127.0.0.1', port });
  await r.tableCreate('scores').run(reader);

  const feed = await r.table('scores').changes().run(reader);
  assert.strictEqual(feed.constructor.name, 'Feed');
  const point = await r.table('scores').get('ada').changes({ includeInitial: true }).run(reader);
  assert.strictEqual(point.constructor.name, 'AtomFeed');
  assert.deepStrictEqual(await point.next(), { new_val: null });

  await r.table('scores').insert([{ id: 'ada', score: 1 }, { id: 'bob', score: 2 }]).run(writer);
  await r.table('scores').get('ada').update({ score: 3 }).run(writer);
  await r.table('scores').get('bob').delete().run(writer);

  const changes = [];
  for (let i = 0; i < 4; i += 1) changes.push(await feed.next());
  const inserts = changes.slice(0, 2).sort((a, b) => a.new_val.id.localeCompare(b.new_val.id));
  assert.deepStrictEqual(inserts, [
    { old_val: null, new_val: { id: 'ada', score: 1 } },
    { old_val: null, new_val: { id: 'bob', score: 2 } },
  ]);
  assert.deepStrictEqual(changes[2], { old_val: { id: 'ada', score: 1 }, new_val: { id: 'ada', score: 3 } });
  assert.deepStrictEqual(changes[3], { old_val: { id: 'bob', score: 2 }, new_val: null });

  assert.deepStrictEqual(await point.next(), { old_val: null, new_val: { id: 'ada', score: 1 } });
  assert.deepStrictEqual(await point.next(), { old_val: { id: 'ada', score: 1 }, new_val: { id: 'ada', score: 3 } });

  await feed.close();
  await point.close();
  // Feeds closed, the connection goes on.
  assert.strictEqual(await r.table('scores').count().run(reader), 1);
  await reader.close();
  await writer.close();
});
