'use strict';
// Apps from PostgreSQL, seen by real clients: an app inserted while Herald runs serves pusher-js
// and the `pusher` SDK without a restart; disabling it closes pusher-js with 4001 and the SDK's
// calls are refused.

const assert = require('node:assert/strict');
const { before, after, afterEach } = require('node:test');
const { makeTest, pusherErrorCode, startHerald, subscribe, waitForEvent, waitForState, waitUntil } = require('./helpers');
const { startPostgres } = require('./postgres');

let pg;
let server;
const test = makeTest(() => server, { timeout: 60000 });
const APP = { appId: '777', key: 'db-key', secret: 'db-secret' };

before(async () => {
  pg = await startPostgres();
  pg.sql('CREATE TABLE apps (id text PRIMARY KEY, key text NOT NULL UNIQUE, secret text NOT NULL, enabled boolean NOT NULL DEFAULT true)');
  server = await startHerald({
    name: 'app-store',
    apps: [],
    config: { apps_store: { driver: 'postgres', url: pg.url, refresh_interval_ms: 300 } },
  });
});

afterEach(() => server && server.closeClients());

after(async () => {
  if (server) await server.stop();
  if (pg) await pg.stop();
});

test('an app inserted into PostgreSQL serves pusher-js and the SDK; disabling it closes them with 4001', async () => {
  const sdk = server.sdk(APP);
  const status = async () => (await sdk.get({ path: '/channels' }).catch((e) => e)).status;
  assert.equal(await status(), 404, 'not in the table yet');

  pg.sql(`INSERT INTO apps (id, key, secret) VALUES ('${APP.appId}', '${APP.key}', '${APP.secret}')`);
  await waitUntil(async () => (await status()) === 200, { timeout: 10000, message: 'the SDK to be served' });

  const pusher = server.client(APP.key, {
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, callback) => callback(null, sdk.authorizeChannel(socketId, channelName)),
    },
  });
  await waitForState(pusher, 'connected');
  const channel = await subscribe(pusher, 'private-orders');
  const received = waitForEvent(channel, 'placed');
  await sdk.trigger('private-orders', 'placed', { n: 1 });
  assert.deepEqual(await received, { n: 1 });

  const errors = [];
  pusher.connection.bind('error', (err) => errors.push(err));
  pg.sql(`UPDATE apps SET enabled = false WHERE id = '${APP.appId}'`);
  await waitUntil(() => errors.some((e) => pusherErrorCode(e) === 4001) || pusher.connection.state !== 'connected', {
    timeout: 10000,
    message: 'pusher-js to be told the app is gone',
  });
  await waitForState(pusher, ['failed', 'disconnected', 'unavailable'], 10000);
  assert.notEqual(pusher.connection.state, 'connected');
  assert.equal(await status(), 404, 'the SDK is refused once the app is disabled');
  pusher.disconnect();
});
