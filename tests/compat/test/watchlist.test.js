'use strict';
// Watchlist events with pusher-js itself: `pusher.user.watchlist.bind('online' | 'offline')` for
// the users named in the signed `user_data.watchlist` (signed by the real `pusher` SDK's
// authenticateUser), on one node. The two-node case is in scaling.test.js.

const assert = require('node:assert/strict');
const { before, after, afterEach } = require('node:test');
const { APP, collectEvents, makeTest, startHerald, waitUntil, withTimeout } = require('./helpers');

let server;
const test = makeTest(() => server);

before(async () => {
  server = await startHerald({ name: 'watchlist' });
});

afterEach(() => server.closeClients());

after(async () => {
  if (server) await server.stop();
});

/** A pusher-js client signed in as `user` (its user_data signed by the SDK); resolves once signed in. */
async function signedIn(node, user) {
  const sdk = node.sdk();
  const pusher = node.client(APP.key, {
    userAuthentication: {
      customHandler: ({ socketId }, callback) => {
        setImmediate(() => {
          try { callback(null, sdk.authenticateUser(socketId, user)); } catch (err) { callback(err, null); }
        });
      },
    },
  });
  const online = collectEvents(pusher.user.watchlist, 'online');
  const offline = collectEvents(pusher.user.watchlist, 'offline');
  pusher.signin();
  await withTimeout(pusher.user.signinDonePromise, 5000, `sign-in of user ${user.id}`);
  await waitUntil(() => pusher.user.user_data && pusher.user.user_data.id === user.id, { message: `user ${user.id} signed in` });
  return { pusher, online, offline };
}

test('pusher.user.watchlist hears the state after sign-in, then online and offline', async () => {
  const three = await signedIn(server, { id: 'w3' });
  const watcher = await signedIn(server, { id: 'w1', watchlist: ['w2', 'w3'] });
  assert.deepEqual(await watcher.online.waitFor(1), [{ name: 'online', user_ids: ['w3'] }]);
  assert.deepEqual(await watcher.offline.waitFor(1), [{ name: 'offline', user_ids: ['w2'] }]);

  const two = await signedIn(server, { id: 'w2', user_info: { name: 'Two' } });
  const second = await signedIn(server, { id: 'w2' }); // a second tab: no second "online"
  assert.deepEqual((await watcher.online.waitFor(2))[1], { name: 'online', user_ids: ['w2'] });

  two.pusher.disconnect();
  three.pusher.disconnect();
  assert.deepEqual((await watcher.offline.waitFor(2))[1], { name: 'offline', user_ids: ['w3'] }, 'w2 still has a tab');
  second.pusher.disconnect();
  assert.deepEqual((await watcher.offline.waitFor(3))[2], { name: 'offline', user_ids: ['w2'] });
  assert.equal(watcher.online.events.length, 2, JSON.stringify(watcher.online.events));
});

test('a watchlist over max_watchlist_size refuses the sign-in with 4009', async () => {
  const sdk = server.sdk();
  const pusher = server.client(APP.key, {
    userAuthentication: {
      customHandler: ({ socketId }, callback) => {
        const watchlist = Array.from({ length: 101 }, (_, i) => `u${i}`);
        callback(null, sdk.authenticateUser(socketId, { id: 'big', watchlist }));
      },
    },
  });
  const errors = [];
  pusher.connection.bind('error', (e) => errors.push(e));
  pusher.signin();
  await waitUntil(() => errors.length > 0, { timeout: 5000, message: 'a pusher:error for the oversized watchlist' });
  assert.equal(errors[0].data.code, 4009, JSON.stringify(errors));
  assert.equal(pusher.user.user_data, null, 'not signed in');
});
