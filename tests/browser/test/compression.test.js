'use strict';
// permessage-deflate in headless Chromium: a pusher-js page (pusher-js served from node_modules)
// negotiates the extension with Herald, as the handshake response header seen through the Chrome
// DevTools Protocol shows, and receives events published through the HTTP API, a large one of them
// compressed (Herald's compression counters move by its size). With `compression = "off"` the
// same page connects without the extension and nothing is compressed.

const assert = require('node:assert/strict');
const http = require('node:http');
const { describe, test, before, after } = require('node:test');

const { APP, closeBrowser, fetchBounded, launchBrowser, newContext, startHerald, waitUntil } = require('./helpers');

const PAGE_PATH = '/compression-test.html';

/** A page that connects pusher-js to Herald, subscribes to `news` and records every `update`. */
function pageHtml(port) {
  return `<!doctype html>
<html><head><meta charset="utf-8"><title>compression</title>
<script src="https://js.pusher.com/8.4.0/pusher.min.js"></script></head>
<body><script>
  window.received = [];
  window.subscribed = false;
  const pusher = new Pusher(${JSON.stringify(APP.key)}, {
    wsHost: '127.0.0.1', wsPort: ${port}, forceTLS: false, enabledTransports: ['ws'], cluster: 'mt1',
  });
  const channel = pusher.subscribe('news');
  channel.bind('pusher:subscription_succeeded', () => { window.subscribed = true; });
  channel.bind('update', (data) => { window.received.push(data); });
</script></body></html>`;
}

/** Herald's compression counters (0 before anything was compressed). */
async function compressionCounters(herald) {
  const text = await (await fetchBounded(`${herald.url}/metrics`)).text();
  const read = (name) => {
    const line = text.split('\n').find((l) => l.startsWith(`${name} `));
    return line ? Number(line.split(' ')[1]) : 0;
  };
  return { in: read('herald_compression_bytes_in_total'), out: read('herald_compression_bytes_out_total') };
}

/** A header's value from a CDP header object, whatever the case of its name. */
function header(headers, name) {
  const key = Object.keys(headers || {}).find((k) => k.toLowerCase() === name);
  return key === undefined ? undefined : headers[key];
}

/** About 5 KB of catalogue JSON: well over the 256-byte compression threshold. */
function catalogue() {
  const items = [];
  for (let i = 0; i < 60; i++) {
    items.push({ sku: `SKU-${10400 + i * 7}`, name: `Desk lamp model ${i}`, price: 19.5 + i, in_stock: i % 3 !== 0 });
  }
  return { id: 'cat-2026-12', updated_at: '2026-12-02T10:15:31Z', items };
}

/**
 * Serves the test page from a loopback HTTP server: Chromium lets a page reach a loopback
 * WebSocket only when the page itself came from the local network (a page fulfilled by Playwright
 * from nowhere is refused with ERR_BLOCKED_BY_LOCAL_NETWORK_ACCESS_CHECKS).
 */
async function servePage(herald) {
  const server = http.createServer((req, res) => {
    if (req.url !== PAGE_PATH) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' }).end(pageHtml(herald.port));
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${server.address().port}${PAGE_PATH}`, close: () => server.close() };
}

/**
 * Opens the test page with a CDP session recording the WebSocket handshake; resolves once
 * pusher-js is subscribed.
 */
async function openPage(browser, herald, pageUrl) {
  const context = await newContext(browser);
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  const cdp = await context.newCDPSession(page);
  await cdp.send('Network.enable');
  const handshake = { request: null, response: null };
  cdp.on('Network.webSocketWillSendHandshakeRequest', (e) => { handshake.request = e.request; });
  cdp.on('Network.webSocketHandshakeResponseReceived', (e) => { handshake.response = e.response; });
  const response = await page.goto(pageUrl);
  assert.equal(response.status(), 200);
  await waitUntil(() => page.evaluate(() => window.subscribed), { timeout: 8000, message: 'pusher-js subscribed' });
  await waitUntil(() => handshake.response, { timeout: 5000, message: 'the handshake response over CDP' });
  return { context, page, handshake, errors };
}

/** Publishes `data` as `update` on `news` with the SDK and waits until the page has it. */
async function publishAndReceive(herald, page, data) {
  const before = await page.evaluate(() => window.received.length);
  const res = await herald.sdk().trigger('news', 'update', data);
  assert.equal(res.status, 200);
  await waitUntil(async () => (await page.evaluate(() => window.received.length)) > before,
    { timeout: 5000, message: 'the page received the event' });
  return page.evaluate((i) => window.received[i], before);
}

describe('permessage-deflate in Chromium', () => {
  let browser;

  before(async () => {
    browser = await launchBrowser();
  });

  after(async () => {
    await closeBrowser(browser);
  });

  test('a pusher-js page negotiates it and receives small and compressed events', async () => {
    const herald = await startHerald({ debug: false, name: 'compression-on' });
    const site = await servePage(herald);
    try {
      const { context, page, handshake, errors } = await openPage(browser, herald, site.url);
      const offered = header(handshake.request.headers, 'sec-websocket-extensions');
      assert.match(offered || '', /permessage-deflate/, 'Chromium offers the extension');
      assert.equal(handshake.response.status, 101);
      const agreed = header(handshake.response.headers, 'sec-websocket-extensions');
      assert.match(agreed || '', /^permessage-deflate; server_no_context_takeover; client_no_context_takeover/,
        `handshake response: ${JSON.stringify(handshake.response.headers)}`);

      // Under the threshold: delivered as it is, nothing counted as compressed.
      const start = await compressionCounters(herald);
      assert.deepEqual(await publishAndReceive(herald, page, { text: 'hello' }), { text: 'hello' });
      assert.deepEqual(await compressionCounters(herald), start, 'a small event is not compressed');

      // A large event: compressed on the wire, intact in the page.
      const big = catalogue();
      const bigText = JSON.stringify(big);
      assert.ok(bigText.length > 4000, `${bigText.length} bytes`);
      assert.deepEqual(await publishAndReceive(herald, page, big), big);
      const end = await compressionCounters(herald);
      const plain = end.in - start.in;
      const packed = end.out - start.out;
      assert.ok(plain > bigText.length, `compressed ${plain} bytes of text, the event alone is ${bigText.length}`);
      assert.ok(packed > 0 && packed < plain / 2, `${plain} bytes went out as ${packed}`);
      assert.deepEqual(errors, [], 'no page errors');
      await context.close();
    } finally {
      site.close();
      await herald.stop();
    }
  });

  test('with compression off the page connects without it and nothing is compressed', async () => {
    const herald = await startHerald({ debug: false, server: { compression: 'off' }, name: 'compression-off' });
    const site = await servePage(herald);
    try {
      const { context, page, handshake, errors } = await openPage(browser, herald, site.url);
      assert.match(header(handshake.request.headers, 'sec-websocket-extensions') || '', /permessage-deflate/);
      assert.equal(header(handshake.response.headers, 'sec-websocket-extensions'), undefined);
      const big = catalogue();
      assert.deepEqual(await publishAndReceive(herald, page, big), big);
      assert.deepEqual(await compressionCounters(herald), { in: 0, out: 0 });
      assert.deepEqual(errors, []);
      await context.close();
    } finally {
      site.close();
      await herald.stop();
    }
  });
});
