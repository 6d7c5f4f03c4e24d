'use strict';
// A real PostgreSQL for the app store tests: initdb into a temporary directory, the server on a
// free loopback port, stopped by stop(). Missing binaries fail the test (scripts/test installs
// the postgresql package). As root, the server runs as the `postgres` user (it refuses root).
//
// Not a test file: `npm test` runs test/*.test.js only.

const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const { sleep, waitUntil, freePort } = require('../../shared/bounded');

function postgresBin() {
  if (process.env.HERALD_TEST_PG_BIN) return process.env.HERALD_TEST_PG_BIN;
  const root = '/usr/lib/postgresql';
  const versions = fs.existsSync(root)
    ? fs.readdirSync(root).filter((v) => fs.existsSync(path.join(root, v, 'bin', 'postgres'))).sort((a, b) => a - b)
    : [];
  if (versions.length === 0) throw new Error('PostgreSQL must be installed (scripts/test installs the postgresql package)');
  return path.join(root, versions[versions.length - 1], 'bin');
}

const isRoot = () => typeof process.getuid === 'function' && process.getuid() === 0;

/** [program, args] running `program` as `postgres` when root (setpriv execs in place). */
function asPostgres(program, args, dir) {
  if (!isRoot()) return [program, args];
  const chown = spawnSync('chown', ['-R', 'postgres:', dir], { timeout: 10000 });
  if (chown.status !== 0) throw new Error(`chown ${dir} failed: ${chown.stderr}`);
  return ['setpriv', ['--reuid', 'postgres', '--regid', 'postgres', '--init-groups', '--', program, ...args]];
}

async function startPostgres() {
  const bin = postgresBin();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'herald-compat-pg-'));
  fs.chmodSync(dir, 0o755);
  const data = path.join(dir, 'data');
  const [initdb, initArgs] = asPostgres(path.join(bin, 'initdb'),
    ['-U', 'herald', '--auth=trust', '-E', 'UTF8', '--no-sync', '-D', data], dir);
  const init = spawnSync(initdb, initArgs, { timeout: 60000, encoding: 'utf8' });
  if (init.status !== 0) throw new Error(`initdb failed: ${init.stdout}${init.stderr}`);
  const port = await freePort();
  const [pgProgram, pgArgs] = asPostgres(path.join(bin, 'postgres'),
    ['-D', data, '-p', String(port), '-c', 'listen_addresses=127.0.0.1', '-c', 'fsync=off', '-k', dir], dir);
  const child = spawn(pgProgram, pgArgs, { stdio: 'ignore' });
  let exited = false;
  child.on('exit', () => { exited = true; });

  const psql = (sql) => spawnSync(path.join(bin, 'psql'),
    ['-h', '127.0.0.1', '-p', String(port), '-U', 'herald', '-d', 'postgres', '-v', 'ON_ERROR_STOP=1', '-q', '-c', sql],
    { timeout: 10000, encoding: 'utf8' });
  await waitUntil(() => { if (exited) throw new Error('postgres exited'); return psql('SELECT 1').status === 0; },
    { timeout: 60000, interval: 100, message: 'postgres to accept queries' });

  return {
    url: `postgres://herald@127.0.0.1:${port}/postgres`,
    /** Runs SQL; throws with psql's message when it fails. */
    sql(text) {
      const res = psql(text);
      if (res.status !== 0) throw new Error(`psql ${JSON.stringify(text)} failed: ${res.stderr}`);
    },
    async stop() {
      if (!exited) {
        child.kill('SIGINT');
        for (let i = 0; i < 100 && !exited; i += 1) await sleep(50);
        if (!exited) child.kill('SIGKILL');
      }
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

module.exports = { startPostgres };
