'use strict';
// Three Herald nodes and one real redis-server act as one server, seen through the real pusher-js
// client and the real `pusher` SDK: events published on one node reach subscribers on the others,
// presence members are counted once across nodes, channel info is cluster-wide.

const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const net = require('node:net');
const { before, after, afterEach } = require('node:test');
const {
  APP, collectEvents, makeTest, startHerald, subscribe, waitForEvent, waitForState, waitUntil, withTimeout, sleep,
} = require('./helpers');

let redis;
let redisPort;
let nodes = [];
let scalingConfig; // the [scaling] table every node shares, for a node started later
const test = makeTest(() => nodes[0]);

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

async function redisReady(port) {
  const deadline = Date.now() + 10000;
  for (;;) {
    const ok = await new Promise((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => { s.end(); resolve(true); });
      s.on('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error('redis-server did not start');
    await sleep(50);
  }
}

before(async () => {
  redisPort = await freePort();
  redis = spawn('redis-server', ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
    stdio: 'ignore',
  });
  await redisReady(redisPort);
  const scaling = { enabled: true, redis_url: `redis://127.0.0.1:${redisPort}`, channel: `compat-${Date.now()}` };
  for (let i = 0; i < 3; i++) {
    nodes.push(await startHerald({
      name: `scaling-node-${i}`, config: { scaling }, appOptions: { subscription_count_events: true },
    }));
  }
  scalingConfig = scaling;
});

afterEach(() => {
  for (const node of nodes) node.closeClients();
});

after(async () => {
  for (const node of nodes) await node.stop();
  nodes = [];
  if (redis) redis.kill('SIGKILL');
});

/** A pusher-js client on `node` whose private/presence auth is signed by the SDK, as Laravel does. */
function authedClient(node, presence) {
  const sdk = node.sdk();
  return node.client(undefined, {
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, callback) => {
        callback(null, sdk.authorizeChannel(socketId, channelName, presence));
      },
    },
  });
}

test('an SDK trigger on node 1 reaches pusher-js subscribers on nodes 2 and 3, once each, in order', async () => {
  const received = { 1: [], 2: [] };
  for (const i of [1, 2]) {
    const pusher = nodes[i].client();
    await waitForState(pusher, 'connected');
    const channel = await subscribe(pusher, 'cluster-orders');
    channel.bind('seq', (data) => received[i].push(data.n));
  }
  const sdk = nodes[0].sdk();
  for (let n = 0; n < 10; n++) {
    const res = await sdk.trigger('cluster-orders', 'seq', { n });
    assert.equal(res.status, 200);
  }
  await waitUntil(() => received[1].length >= 10 && received[2].length >= 10, { timeout: 5000, message: 'all events' });
  await sleep(300);
  const expected = [...Array(10).keys()];
  assert.deepEqual(received[1], expected);
  assert.deepEqual(received[2], expected);

  const info = await nodes[2].sdk().get({ path: '/channels/cluster-orders', params: { info: 'subscription_count' } });
  assert.deepEqual(await info.json(), { occupied: true, subscription_count: 2 });
});

test('presence members are counted once across nodes and leave everywhere', async () => {
  const clients = [];
  const channels = [];
  const users = [
    { user_id: 'ann', user_info: { name: 'Ann' } },
    { user_id: 'bob', user_info: { name: 'Bob' } },
    { user_id: 'ann', user_info: { name: 'Ann' } }, // Ann again, on a third node
  ];
  for (let i = 0; i < 3; i++) {
    const pusher = authedClient(nodes[i], users[i]);
    await waitForState(pusher, 'connected');
    clients.push(pusher);
    channels.push(await subscribe(pusher, 'presence-cluster-room'));
  }
  await waitUntil(() => channels.every((c) => c.members.count === 2), { timeout: 5000, message: 'two members everywhere' });
  const names = [];
  channels[2].members.each((m) => names.push(m.info.name));
  assert.deepEqual(names.sort(), ['Ann', 'Bob']);

  const users1 = await nodes[1].sdk().get({ path: '/channels/presence-cluster-room/users' });
  assert.deepEqual(await users1.json(), { users: [{ id: 'ann' }, { id: 'bob' }] });

  // Bob leaves (on node 2): Ann's connections on nodes 1 and 3 are told.
  const removed = [waitForEvent(channels[0], 'pusher:member_removed'), waitForEvent(channels[2], 'pusher:member_removed')];
  clients[1].disconnect();
  for (const m of await Promise.all(removed)) assert.equal(m.id, 'bob');
  await waitUntil(() => channels[0].members.count === 1 && channels[2].members.count === 1, {
    timeout: 5000,
    message: 'one member left',
  });
});

/** A pusher-js client on `node` signed in as `user` (signed by the SDK); resolves once signed in. */
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

test('pusher.user.watchlist hears of users signing in and out on other nodes', async () => {
  const early = await signedIn(nodes[1], { id: 'c-early' });
  const watcher = await signedIn(nodes[0], { id: 'c-w', watchlist: ['c-early', 'c-late'] });
  assert.deepEqual(await watcher.online.waitFor(1), [{ name: 'online', user_ids: ['c-early'] }]);
  assert.deepEqual(await watcher.offline.waitFor(1), [{ name: 'offline', user_ids: ['c-late'] }]);

  const late = await signedIn(nodes[2], { id: 'c-late' });
  assert.deepEqual((await watcher.online.waitFor(2))[1], { name: 'online', user_ids: ['c-late'] });
  late.pusher.disconnect();
  assert.deepEqual((await watcher.offline.waitFor(2))[1], { name: 'offline', user_ids: ['c-late'] });
  early.pusher.disconnect();
  assert.deepEqual((await watcher.offline.waitFor(3))[2], { name: 'offline', user_ids: ['c-early'] });
});

test('a cache channel event published on one node is replayed by a node started after it', async () => {
  const res = await nodes[0].sdk().trigger('cache-cluster-quote', 'price', { p: 7 });
  assert.equal(res.status, 200);
  const late = await startHerald({ name: 'scaling-node-late', config: { scaling: scalingConfig } });
  try {
    const pusher = late.client();
    await waitForState(pusher, 'connected');
    const channel = pusher.subscribe('cache-cluster-quote');
    const misses = collectEvents(channel, 'pusher:cache_miss');
    assert.deepEqual(await waitForEvent(channel, 'price'), { p: 7 });
    assert.deepEqual(misses.events, []);
  } finally {
    late.closeClients();
    await late.stop();
  }
});

test('subscription counts pushed to pusher-js are the cluster\'s', async () => {
  const counts = [];
  const a = nodes[0].client();
  await waitForState(a, 'connected');
  const channel = await subscribe(a, 'cluster-counted');
  channel.bind('pusher:subscription_count', (data) => counts.push(data.subscription_count));
  const b = nodes[1].client();
  await waitForState(b, 'connected');
  await subscribe(b, 'cluster-counted');
  await waitUntil(() => counts.includes(2), { timeout: 8000, message: `a count of 2 on node 1 (heard ${JSON.stringify(counts)})` });
});

// =============================================================================================
// HTTP fallbacks behind a load balancer without sticky sessions

/**
 * A round-robin TCP balancer in front of `backends`: each new connection goes to the next one.
 * pusher-js's Node build opens a connection per HTTP request, so a session's requests alternate
 * between the nodes.
 */
async function roundRobin(backends) {
  let next = 0;
  const hits = backends.map(() => 0);
  const sockets = new Set();
  const balancer = net.createServer((client) => {
    const i = next++ % backends.length;
    hits[i]++;
    const upstream = net.connect(backends[i].port, '127.0.0.1');
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => { client.destroy(); upstream.destroy(); });
    }
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise((resolve) => balancer.listen(0, '127.0.0.1', resolve));
  return {
    port: balancer.address().port,
    hits,
    close() {
      for (const s of sockets) s.destroy();
      balancer.close();
    },
  };
}

async function httpSessionsOn(node) {
  const text = await (await fetch(`${node.httpUrl}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith('herald_http_sessions '));
  return line ? Number(line.split(' ')[1]) : 0;
}

for (const transport of ['xhr_polling', 'xhr_streaming']) {
  test(`${transport} through a balancer alternating between two nodes: one session, relayed, nothing lost`, async () => {
    const balancer = await roundRobin([nodes[0], nodes[1]]);
    // Sessions of earlier tests linger until their timeout: count this one by difference.
    const before = [await httpSessionsOn(nodes[0]), await httpSessionsOn(nodes[1])];
    try {
      const pusher = nodes[0].client(undefined, {
        enabledTransports: [transport],
        httpHost: '127.0.0.1',
        httpPort: balancer.port,
      });
      await waitForState(pusher, 'connected', 8000);
      const channel = await subscribe(pusher, `rr-${transport}`, 8000);
      const got = [];
      channel.bind('tick', (d) => got.push(d.i));
      const sdk = nodes[2].sdk();
      for (let i = 0; i < 20; i++) await sdk.trigger(`rr-${transport}`, 'tick', { i });
      await waitUntil(() => got.length >= 20, { timeout: 10000, message: `20 events (got ${JSON.stringify(got)})` });
      assert.deepEqual(got, [...Array(20).keys()], 'every event once, in order');
      assert.ok(balancer.hits[0] > 0 && balancer.hits[1] > 0, `requests reached both nodes: ${balancer.hits}`);
      const held = [(await httpSessionsOn(nodes[0])) - before[0], (await httpSessionsOn(nodes[1])) - before[1]];
      assert.deepEqual(held.slice().sort(), [0, 1], `one new session in the cluster, held by one node: ${held}`);
      pusher.disconnect();
    } finally {
      balancer.close();
    }
  });
}
