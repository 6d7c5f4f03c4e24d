'use strict';
// Three Herald nodes and one real redis-server act as one server, seen through the real pusher-js
// client and the real `pusher` SDK: events published on one node reach subscribers on the others,
// presence members are counted once across nodes, channel info is cluster-wide.

const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const net = require('node:net');
const { before, after, afterEach } = require('node:test');
const { makeTest, startHerald, subscribe, waitForEvent, waitForState, waitUntil, sleep } = require('./helpers');

let redis;
let redisPort;
let nodes = [];
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
    nodes.push(await startHerald({ name: `scaling-node-${i}`, config: { scaling } }));
  }
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
