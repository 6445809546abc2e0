// Starts and stops a real `photondb serve` for the driver tests: a fresh
// data directory, ports the server picks itself (read back from its log), and
// a clean shutdown checked at the end.
const assert = require('node:assert');
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const binary = process.env.PHOTONDB_BIN || path.resolve(__dirname, '../../../../target/debug/photondb');

async function startServer(prefix) {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  const logPath = path.join(dataDir, 'server.log');
  const log = fs.openSync(logPath, 'w');
  const child = spawn(binary, ['serve', '--data-dir', path.join(dataDir, 'data'), '--driver-port', '0',
    '--partitions', '4', '--wal-ring-size', '4MiB', '--http-port', '0'], { stdio: ['ignore', 'ignore', log] });
  const deadline = Date.now() + 60000;
  for (;;) {
    const listening = /listening for RethinkDB drivers driver_address=\S+:(\d+)/.exec(fs.readFileSync(logPath, 'utf8'));
    if (listening) return { child, port: Number(listening[1]), dataDir };
    if (child.exitCode !== null) throw new Error('server exited: ' + fs.readFileSync(logPath, 'utf8'));
    if (Date.now() > deadline) throw new Error('server did not start');
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

async function stopServer(server) {
  const exited = new Promise((resolve) => server.child.on('exit', resolve));
  server.child.kill('SIGTERM');
  assert.strictEqual(await exited, 0, 'clean shutdown exits 0');
  fs.rmSync(server.dataDir, { recursive: true, force: true });
}

module.exports = { startServer, stopServer };
