'use strict';
// Webhooks verified the way an application does it: the `pusher` SDK's own webhook check
// (`pusher.webhook({ headers, rawBody }).isValid()`), on a real HTTP receiver.

const assert = require('node:assert/strict');
const http = require('node:http');
const { before, after, afterEach } = require('node:test');
const { makeTest, startHerald, subscribe, waitForState, waitUntil } = require('./helpers');

let server;
let receiver;
const received = []; // { headers, rawBody }
const test = makeTest(() => server);

before(async () => {
  receiver = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c) => { body += c; });
    req.on('end', () => {
      received.push({ headers: req.headers, rawBody: body });
      res.writeHead(200).end('ok');
    });
  });
  await new Promise((resolve) => receiver.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${receiver.address().port}/hooks`;
  server = await startHerald({
    name: 'webhooks',
    appOptions: { webhook_batch_ms: 50, webhook_delay_ms: 0, webhooks: [{ url }] },
  });
});

afterEach(() => server && server.closeClients());

after(async () => {
  if (server) await server.stop();
  if (receiver) await new Promise((resolve) => receiver.close(resolve));
});

test('webhooks pass the pusher SDK verification and carry the events', async () => {
  const pusher = server.client();
  await waitForState(pusher, 'connected');
  await subscribe(pusher, 'hooked-channel');
  await waitUntil(() => received.length > 0, { timeout: 5000, message: 'a webhook' });
  pusher.disconnect();
  await waitUntil(() => received.flatMap((r) => JSON.parse(r.rawBody).events).some((e) => e.name === 'channel_vacated'), {
    timeout: 5000,
    message: 'channel_vacated',
  });

  const sdk = server.sdk();
  const events = [];
  for (const request of received) {
    const webhook = sdk.webhook(request);
    assert.equal(webhook.isValid(), true, `signature of ${request.rawBody}`);
    events.push(...webhook.getEvents());
  }
  assert.deepEqual(
    events.map((e) => [e.name, e.channel]),
    [['channel_occupied', 'hooked-channel'], ['channel_vacated', 'hooked-channel']],
  );

  // A tampered body or a wrong secret fails the same check.
  const forged = { headers: received[0].headers, rawBody: received[0].rawBody.replace('hooked', 'forged') };
  assert.equal(sdk.webhook(forged).isValid(), false);
  assert.equal(server.sdk({ secret: 'not-the-secret' }).webhook(received[0]).isValid(), false);
});
