'use strict';
// Core compatibility: the real pusher-js client and the real Node `pusher` SDK against a real
// Herald process. One server for the file; every test uses its own channel names and its
// clients are disconnected after it.

const assert = require('node:assert/strict');
const { before, after, afterEach } = require('node:test');

const {
  PROTOCOL_QUERY,
  collectEvents,
  makeTest,
  parseData,
  pusherErrorCode,
  recordMessages,
  sleep,
  startHerald,
  subscribe,
  waitForEvent,
  waitForState,
  waitUntil,
} = require('./helpers');

let server;
const test = makeTest(() => server);

before(async () => {
  server = await startHerald({ name: 'core' });
});

afterEach(() => {
  if (server) server.closeClients();
});

after(async () => {
  if (server) await server.stop();
});

async function connected() {
  const pusher = server.client();
  await waitForState(pusher, 'connected');
  return pusher;
}

async function channelInfo(sdk, name, info = 'subscription_count') {
  const res = await sdk.get({ path: `/channels/${name}`, params: info ? { info } : {} });
  assert.equal(res.status, 200);
  return res.json();
}

/** Asserts that `promise` rejects with a RequestError of the given HTTP status. */
async function assertStatus(promise, status) {
  let result;
  try {
    result = await promise;
  } catch (err) {
    assert.equal(err.status, status, `expected HTTP ${status}, got ${err.status} (${err.message}; body ${JSON.stringify(err.body)})`);
    return err;
  }
  assert.fail(`expected HTTP ${status}, but the request succeeded with ${result && result.status}`);
}

test('1. connect: pusher-js reaches "connected" with a well-formed, unique socket_id', async () => {
  const a = await connected();
  const b = await connected();
  assert.match(a.connection.socket_id, /^\d+\.\d+$/);
  assert.match(b.connection.socket_id, /^\d+\.\d+$/);
  assert.notEqual(a.connection.socket_id, b.connection.socket_id);
});

test('2. subscribe to a public channel: pusher:subscription_succeeded fires', async () => {
  const pusher = await connected();
  const channel = pusher.subscribe('orders-subscribe');
  await waitForEvent(channel, 'pusher:subscription_succeeded');
  assert.equal(channel.subscribed, true);
});

test('3. trigger with the SDK: subscriber gets exactly the published data; status 200', async () => {
  const pusher = await connected();
  const channel = await subscribe(pusher, 'orders-trigger');
  const data = { id: 42, note: 'ünïcode "quoted"' };
  const received = waitForEvent(channel, 'order.shipped');
  const res = await server.sdk().trigger('orders-trigger', 'order.shipped', data);
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), {});
  assert.deepEqual(await received, data);
});

test('4. 50 sequential triggers arrive complete and in publish order', async () => {
  const pusher = await connected();
  const channel = await subscribe(pusher, 'orders-sequence');
  const got = collectEvents(channel, 'seq');
  const sdk = server.sdk();
  for (let i = 0; i < 50; i++) {
    const res = await sdk.trigger('orders-sequence', 'seq', { n: i });
    assert.equal(res.status, 200);
  }
  const events = await got.waitFor(50, 10000);
  await sleep(200); // nothing extra (no duplicates) should follow
  assert.deepEqual(events.map((e) => e.n), Array.from({ length: 50 }, (_, i) => i));
});

test('5. socket_id exclusion: the excluded subscriber does not get the event', async () => {
  const a = await connected();
  const b = await connected();
  await subscribe(a, 'orders-exclusion');
  const chB = await subscribe(b, 'orders-exclusion');
  const aMessages = recordMessages(a);
  const bGot = waitForEvent(chB, 'excluded');
  const res = await server.sdk().trigger('orders-exclusion', 'excluded', { x: 1 }, { socket_id: a.connection.socket_id });
  assert.equal(res.status, 200);
  assert.deepEqual(await bGot, { x: 1 });
  await sleep(500);
  const leaked = aMessages.filter((m) => m.event === 'excluded');
  assert.deepEqual(leaked, [], 'the excluded socket received the event');
});

test('6. multi-channel trigger reaches subscribers of every channel', async () => {
  const a = await connected();
  const b = await connected();
  const chA = await subscribe(a, 'multi-a');
  const chB = await subscribe(b, 'multi-b');
  const data = { both: true };
  const gotA = waitForEvent(chA, 'e');
  const gotB = waitForEvent(chB, 'e');
  const res = await server.sdk().trigger(['multi-a', 'multi-b'], 'e', data);
  assert.equal(res.status, 200);
  assert.deepEqual(await gotA, data);
  assert.deepEqual(await gotB, data);
});

test('7. triggerBatch: all events arrive; status 200', async () => {
  const pusher = await connected();
  const ch1 = await subscribe(pusher, 'batch-1');
  const ch2 = await subscribe(pusher, 'batch-2');
  const got1 = collectEvents(ch1, 'b');
  const got2 = collectEvents(ch2, 'b');
  const res = await server.sdk().triggerBatch([
    { channel: 'batch-1', name: 'b', data: { i: 1 } },
    { channel: 'batch-2', name: 'b', data: { i: 2 } },
    { channel: 'batch-1', name: 'b', data: { i: 3 } },
  ]);
  assert.equal(res.status, 200);
  await res.json(); // must be JSON
  assert.deepEqual(await got1.waitFor(2), [{ i: 1 }, { i: 3 }]);
  assert.deepEqual(await got2.waitFor(1), [{ i: 2 }]);
});

test('8. channel info: subscription_count, channel list, unoccupied channel', async () => {
  const a = await connected();
  const b = await connected();
  await subscribe(a, 'orders');
  await subscribe(b, 'orders');
  const sdk = server.sdk();

  assert.deepEqual(await channelInfo(sdk, 'orders'), { occupied: true, subscription_count: 2 });

  const list = await sdk.get({ path: '/channels' });
  assert.equal(list.status, 200);
  const body = await list.json();
  assert.equal(typeof body.channels, 'object');
  assert.ok(body.channels !== null && !Array.isArray(body.channels), `channels must be an object, got ${JSON.stringify(body.channels)}`);
  assert.ok(Object.prototype.hasOwnProperty.call(body.channels, 'orders'), `orders missing from ${JSON.stringify(body)}`);

  const empty = await channelInfo(sdk, 'nobody-here', null);
  assert.equal(empty.occupied, false);
});

test('9. bad signature (wrong secret) -> HTTP 401', async () => {
  const bad = server.sdk({ secret: 'not-the-secret' });
  await assertStatus(bad.trigger('sig-check', 'e', { a: 1 }), 401);
  await assertStatus(bad.get({ path: '/channels' }), 401);
});

test('10. unknown app id in the path -> HTTP 404', async () => {
  const unknown = server.sdk({ appId: '999' });
  await assertStatus(unknown.trigger('app-check', 'e', { a: 1 }), 404);
});

test('11. unknown key -> pusher:error 4001, client does not connect', async () => {
  const pusher = server.client('nope');
  const states = [];
  pusher.connection.bind('state_change', ({ current }) => states.push(current));
  const errors = [];
  pusher.connection.bind('error', (err) => errors.push(err));
  await waitUntil(() => errors.some((e) => pusherErrorCode(e) === 4001), {
    timeout: 5000,
    message: 'a pusher-js connection error with code 4001',
  }).catch((err) => {
    err.message += `; errors: ${JSON.stringify(errors)}; states: ${states.join(' -> ')}`;
    throw err;
  });
  await waitForState(pusher, ['failed', 'disconnected']);
  await sleep(300);
  assert.ok(!states.includes('connected'), `client reached "connected": ${states.join(' -> ')}`);
  assert.ok(['failed', 'disconnected'].includes(pusher.connection.state), `final state ${pusher.connection.state}`);
  pusher.disconnect();
});

test('12. unsubscribe: events stop arriving and the subscription count drops', async () => {
  const a = await connected();
  const b = await connected();
  await subscribe(a, 'orders-unsub');
  const chB = await subscribe(b, 'orders-unsub');
  const sdk = server.sdk();
  assert.deepEqual(await channelInfo(sdk, 'orders-unsub'), { occupied: true, subscription_count: 2 });

  const aMessages = recordMessages(a);
  a.unsubscribe('orders-unsub');
  // The unsubscribe frame has no acknowledgement: wait until the server reflects it.
  await waitUntil(async () => (await channelInfo(sdk, 'orders-unsub')).subscription_count === 1, {
    timeout: 3000,
    message: 'subscription_count to drop to 1 after unsubscribe',
  });

  const bGot = waitForEvent(chB, 'after-unsub');
  const res = await sdk.trigger('orders-unsub', 'after-unsub', { late: true });
  assert.equal(res.status, 200);
  assert.deepEqual(await bGot, { late: true });
  await sleep(500);
  assert.deepEqual(aMessages.filter((m) => m.channel === 'orders-unsub'), [], 'unsubscribed socket still got channel messages');

  b.unsubscribe('orders-unsub');
  await waitUntil(async () => (await channelInfo(sdk, 'orders-unsub')).occupied === false, {
    timeout: 3000,
    message: 'channel to become unoccupied after the last unsubscribe',
  });
});

test('13. raw ping/pong; malformed JSON gets pusher:error and the socket stays open', async () => {
  const sock = server.raw(PROTOCOL_QUERY);
  const established = await sock.waitForEvent('pusher:connection_established');
  const info = parseData(established.msg.data);
  assert.equal(typeof established.msg.data, 'string', 'connection_established data must be a JSON string');
  assert.match(info.socket_id, /^\d+\.\d+$/);
  assert.equal(typeof info.activity_timeout, 'number');

  sock.send({ event: 'pusher:ping', data: {} });
  const pong1 = await sock.waitForEvent('pusher:pong', { from: established.index + 1 });

  sock.send('not json');
  const err = await sock.waitForEvent('pusher:error', { from: pong1.index + 1 });
  const errData = parseData(err.msg.data);
  assert.equal(typeof errData.code, 'number', `pusher:error without a numeric code: ${err.raw}`);

  sock.send({ event: 'pusher:ping', data: {} });
  await sock.waitForEvent('pusher:pong', { from: err.index + 1 });
  assert.equal(sock.closeInfo, null, 'socket closed after malformed JSON');
});

test('14. protocol version: 3 -> 4007 (error + close); missing -> 4008', async () => {
  for (const [query, code] of [['protocol=3&client=js&version=8.4.0', 4007], ['client=js&version=8.4.0', 4008]]) {
    const sock = server.raw(query);
    const err = await sock.waitForEvent('pusher:error');
    assert.equal(parseData(err.msg.data).code, code, `query "${query}": ${err.raw}`);
    const closed = await sock.waitForClose();
    assert.equal(closed.code, code, `query "${query}": close ${JSON.stringify(closed)}; frames ${sock.dump()}`);
    assert.ok(!sock.frames.some((f) => f.msg && f.msg.event === 'pusher:connection_established'),
      `query "${query}" got connection_established: ${sock.dump()}`);
  }
});
