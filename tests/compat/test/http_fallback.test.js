'use strict';
// pusher-js's HTTP fallbacks against Herald: the real Node build of pusher-js with
// `enabledTransports: ['xhr_streaming']` and, separately, `['xhr_polling']` (its XMLHttpRequest
// transports, as a browser behind a proxy that breaks WebSocket uses them), and the real `pusher`
// SDK signing auth and publishing. Every scenario runs on both transports.

const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const { before, after, afterEach } = require('node:test');

const {
  APP,
  collectEvents,
  makeTest,
  pusherErrorCode,
  recordMessages,
  sleep,
  startHerald,
  subscribe,
  waitForEvent,
  waitForState,
  waitUntil,
  withTimeout,
} = require('./helpers');

const ENCRYPTION_MASTER_KEY = crypto.randomBytes(32).toString('base64');
// Short, so that an abandoned session's expiry is seen within a test.
const SESSION_TIMEOUT_MS = 1500;

let server;
let current;
const test = makeTest(() => current || server, { timeout: 30000 });
const cleanups = [];

before(async () => {
  server = await startHerald({
    name: 'http-fallback',
    appOptions: { enable_client_messages: true },
    server: { http_session_timeout_ms: SESSION_TIMEOUT_MS },
  });
});

afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) {
    try { await fn(); } catch { /* best effort */ }
  }
  if (server) server.closeClients();
  current = null;
});

after(async () => {
  if (server) await server.stop();
});

/** Channel authorisation signed by the SDK, as a Laravel `/broadcasting/auth` would answer. */
function sdkAuth(srv, presence) {
  const sdk = srv.sdk({ encryptionMasterKeyBase64: ENCRYPTION_MASTER_KEY });
  return {
    customHandler: ({ socketId, channelName }, callback) => {
      setImmediate(() => {
        try {
          const data = channelName.startsWith('presence-') ? presence : undefined;
          callback(null, data ? sdk.authorizeChannel(socketId, channelName, data) : sdk.authorizeChannel(socketId, channelName));
        } catch (err) {
          callback(err, null);
        }
      });
    },
  };
}

/** A pusher-js client that may only use `transport`, pointed at Herald's host and port. */
function httpClient(srv, transport, extra = {}) {
  return srv.client(APP.key, {
    enabledTransports: [transport],
    httpHost: srv.host,
    httpPort: srv.port,
    channelAuthorization: sdkAuth(srv, extra.presence),
    ...extra,
  });
}

async function connected(srv, transport, extra) {
  const pusher = httpClient(srv, transport, extra);
  await waitForState(pusher, 'connected', 8000);
  assert.equal(pusher.connection.connection.transport.name, transport, 'connected with the transport asked for');
  return pusher;
}

async function metric(srv, name) {
  const text = await (await fetch(`${srv.httpUrl}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`));
  return line ? Number(line.split(' ').pop()) : 0;
}

for (const transport of ['xhr_streaming', 'xhr_polling']) {
  test(`${transport}: public, private and encrypted channels receive what the SDK publishes, in order`, async () => {
    const pusher = await connected(server, transport);
    const pub = await subscribe(pusher, `news-${transport}`);
    const priv = await subscribe(pusher, `private-${transport}`);
    const enc = await subscribe(pusher, `private-encrypted-${transport}`);
    const sdk = server.sdk({ encryptionMasterKeyBase64: ENCRYPTION_MASTER_KEY });

    const events = collectEvents(pub, 'tick');
    for (let i = 0; i < 20; i++) await sdk.trigger(`news-${transport}`, 'tick', { i });
    await events.waitFor(20, 8000);
    assert.deepEqual(events.events.map((e) => e.i), [...Array(20).keys()], 'every event, in order');

    const secret = waitForEvent(priv, 'secret');
    await sdk.trigger(`private-${transport}`, 'secret', { text: 'ünïcode "quoted" \n line' });
    assert.deepEqual(await secret, { text: 'ünïcode "quoted" \n line' });

    const sealed = waitForEvent(enc, 'sealed');
    await sdk.trigger(`private-encrypted-${transport}`, 'sealed', { code: 1234 });
    assert.deepEqual(await sealed, { code: 1234 }, 'pusher-js decrypts the payload');

    const big = waitForEvent(pub, 'big');
    const payload = 'x'.repeat(9000);
    await sdk.trigger(`news-${transport}`, 'big', { payload });
    assert.equal((await big).payload, payload);
  });

  test(`${transport}: client events reach a WebSocket client and come back from it`, async () => {
    const http = await connected(server, transport);
    const ws = server.client(APP.key, { channelAuthorization: sdkAuth(server) });
    await waitForState(ws, 'connected');
    const channel = `private-chat-${transport}`;
    const httpCh = await subscribe(http, channel);
    const wsCh = await subscribe(ws, channel);

    const atWs = waitForEvent(wsCh, 'client-typing');
    assert.ok(httpCh.trigger('client-typing', { from: 'http' }));
    assert.deepEqual(await atWs, { from: 'http' });

    const atHttp = waitForEvent(httpCh, 'client-typing');
    assert.ok(wsCh.trigger('client-typing', { from: 'ws' }));
    assert.deepEqual(await atHttp, { from: 'ws' });

    // The sender does not get its own client event back.
    const own = recordMessages(http);
    httpCh.trigger('client-typing', { from: 'http', again: true });
    await waitForEvent(wsCh, 'client-typing', { filter: (d) => d.again });
    await sleep(300);
    assert.deepEqual(own.filter((m) => m.event === 'client-typing'), []);
  });

  test(`${transport}: presence members, and an abandoned session expires and removes its member`, async () => {
    const channel = `presence-room-${transport}`;
    const watcher = server.client(APP.key, { channelAuthorization: sdkAuth(server, { user_id: 'w', user_info: {} }) });
    await waitForState(watcher, 'connected');
    const watch = await subscribe(watcher, channel);
    const removed = waitForEvent(watch, 'pusher:member_removed', { timeout: 10000 });
    const added = waitForEvent(watch, 'pusher:member_added');

    const http = await connected(server, transport, { presence: { user_id: 'h1', user_info: { name: 'Hal' } } });
    const ch = await subscribe(http, channel);
    assert.equal((await added).id, 'h1');
    assert.equal(ch.members.count, 2);
    assert.deepEqual(ch.members.me, { id: 'h1', info: { name: 'Hal' } });

    // pusher-js closing an HTTP socket only stops requesting: the server sees nothing until the
    // session's timeout has passed without a receive request.
    const before = await metric(server, 'herald_http_sessions');
    assert.ok(before >= 1, `herald_http_sessions is ${before}`);
    http.disconnect();
    const left = await removed;
    assert.equal(left.id, 'h1');
    await waitUntil(async () => (await metric(server, 'herald_http_sessions')) < before, {
      timeout: 5000, message: 'the expired session to leave the table',
    });
  });

  test(`${transport}: user sign-in, sendToUser, and terminateUserConnections ends the session with 4009`, async () => {
    const sdk = server.sdk();
    const user = { id: `u-${transport}`, user_info: { name: 'Una' } };
    const pusher = httpClient(server, transport, {
      userAuthentication: {
        customHandler: ({ socketId }, callback) => {
          setImmediate(() => {
            try { callback(null, sdk.authenticateUser(socketId, user)); } catch (err) { callback(err, null); }
          });
        },
      },
    });
    await waitForState(pusher, 'connected', 8000);
    pusher.signin();
    await waitUntil(() => pusher.user.user_data && pusher.user.user_data.id === user.id, { message: 'signed in' });

    const notice = waitForEvent(pusher.user, 'notice');
    assert.equal((await sdk.sendToUser(user.id, 'notice', { text: 'hi' })).status, 200);
    assert.deepEqual(await notice, { text: 'hi' });

    const errors = [];
    pusher.connection.bind('error', (e) => errors.push(pusherErrorCode(e)));
    assert.equal((await sdk.terminateUserConnections(user.id)).status, 200);
    await waitUntil(() => errors.includes(4009), { timeout: 5000, message: `4009 (got ${JSON.stringify(errors)})` });
    await waitUntil(() => pusher.connection.state !== 'connected', { timeout: 5000, message: 'to leave "connected"' });
  });

  test(`${transport}: an Origin outside allowed_origins is refused with 4009; an allowed one gets CORS headers`, async () => {
    const srv = await startHerald({
      name: `http-origin-${transport}`,
      appOptions: { allowed_origins: ['https://app.example.com'] },
    });
    current = srv;
    cleanups.push(() => srv.stop());
    const base = `${srv.httpUrl}/pusher/app/${APP.key}/123/abcdefgh/${transport === 'xhr_polling' ? 'xhr' : 'xhr_streaming'}?protocol=7`;
    const refused = await fetch(base, { method: 'POST', headers: { Origin: 'https://evil.example' } });
    const text = await refused.text();
    assert.equal(refused.status, 200);
    assert.equal(refused.headers.get('access-control-allow-origin'), null, 'no CORS for a refused Origin');
    assert.match(text, /^o\n/);
    assert.match(text, /4009/);
    assert.match(text, /\nc\[4009,/);

    const preflight = await fetch(base.replace('abcdefgh', 'zzzzzzzz'), {
      method: 'OPTIONS',
      headers: { Origin: 'https://app.example.com', 'Access-Control-Request-Method': 'POST', 'Access-Control-Request-Headers': 'content-type' },
    });
    assert.equal(preflight.status, 204);
    assert.equal(preflight.headers.get('access-control-allow-origin'), 'https://app.example.com');
    assert.match(preflight.headers.get('access-control-allow-headers'), /content-type/i);
    const badPreflight = await fetch(base, { method: 'OPTIONS', headers: { Origin: 'https://evil.example' } });
    assert.equal(badPreflight.status, 403);
    assert.equal(badPreflight.headers.get('access-control-allow-origin'), null);
  });

  test(`${transport}: a server shutting down ends the session with 4200`, async () => {
    const srv = await startHerald({ name: `http-shutdown-${transport}` });
    current = srv;
    cleanups.push(() => srv.stop());
    const pusher = await connected(srv, transport);
    await subscribe(pusher, 'news');
    const errors = [];
    pusher.connection.bind('error', (e) => errors.push(pusherErrorCode(e)));
    const left = new Promise((resolve) => pusher.connection.bind('state_change', ({ current: s }) => { if (s !== 'connected') resolve(s); }));
    srv.child.kill('SIGTERM');
    await withTimeout(left, 8000, 'the connection to leave "connected"');
    assert.ok(errors.includes(4200), `4200 expected, got ${JSON.stringify(errors)}`);
    pusher.disconnect();
  });
}
