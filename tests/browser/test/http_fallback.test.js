'use strict';
// pusher-js in headless Chromium on a page where WebSocket does not exist (as behind a proxy that
// breaks it): the unmodified web build of pusher-js falls back to its HTTP transports by itself,
// cross-origin from the app's page (CORS preflights answered by Herald), and receives events.

const assert = require('node:assert/strict');
const http = require('node:http');
const { describe, test, before, after } = require('node:test');

const { APP, closeBrowser, launchBrowser, newContext, startHerald, waitUntil } = require('./helpers');


/** The app's page: WebSocket removed before pusher-js loads; `options` extend pusher-js's. */
function page(herald, options = {}) {
  const config = {
    wsHost: herald.host, wsPort: herald.port, httpHost: herald.host, httpPort: herald.port,
    forceTLS: false, cluster: 'mt1', disableStats: true, ...options,
  };
  return `<!doctype html><meta charset="utf-8"><title>fallback</title>
<script>delete window.WebSocket; window.WebSocket = undefined; window.MozWebSocket = undefined;</script>
<script src="https://js.pusher.com/8.4.0/pusher.min.js"></script>
<script>
  window.received = [];
  const pusher = new Pusher(${JSON.stringify(APP.key)}, ${JSON.stringify(config)});
  pusher.connection.bind('connected', () => { window.transport = pusher.connection.connection.transport.name; });
  const channel = pusher.subscribe('news');
  channel.bind('pusher:subscription_succeeded', () => { window.subscribed = true; });
  channel.bind('tick', (data) => window.received.push(data));
</script>`;
}

describe('HTTP fallbacks in Chromium (no WebSocket)', () => {
  let herald;
  let browser;
  // The app's own web server: another origin than Herald's (another port), so every request
  // pusher-js makes is cross-origin, as from a real app's page.
  let site;
  let pageHtml = '';

  before(async () => {
    herald = await startHerald({ debug: false, name: 'http-fallback' });
    browser = await launchBrowser();
    site = http.createServer((req, res) => {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
      res.end(pageHtml);
    });
    await new Promise((resolve) => site.listen(0, '127.0.0.1', resolve));
  });

  after(async () => {
    await closeBrowser(browser);
    if (site) site.close();
    if (herald) await herald.stop();
  });

  for (const [name, options, expected] of [
    ['falls back by itself (default transports)', {}, ['xhr_streaming', 'xhr_polling']],
    ['xhr_polling only', { enabledTransports: ['xhr_polling'] }, ['xhr_polling']],
  ]) {
    test(name, async () => {
      const context = await newContext(browser);
      const tab = await context.newPage();
      pageHtml = page(herald, options);
      const pageUrl = `http://127.0.0.1:${site.address().port}/fallback.html`;
      assert.notEqual(new URL(pageUrl).origin, herald.url, 'the page is cross-origin to Herald');
      await tab.goto(pageUrl);
      assert.equal(await tab.evaluate(() => typeof window.WebSocket), 'undefined', 'the page has no WebSocket');
      await waitUntil(() => tab.evaluate(() => window.subscribed === true), { timeout: 20000, message: 'subscribed over HTTP' });
      const transport = await tab.evaluate(() => window.transport);
      assert.ok(expected.includes(transport), `connected with ${transport}`);

      const sdk = herald.sdk();
      for (let i = 0; i < 5; i++) await sdk.trigger('news', 'tick', { i, from: 'api' });
      await waitUntil(async () => (await tab.evaluate(() => window.received.length)) >= 5, { timeout: 10000, message: '5 events in the page' });
      assert.deepEqual(await tab.evaluate(() => window.received.map((d) => d.i)), [0, 1, 2, 3, 4]);
      // Cross-origin XHRs with a JSON body: Chromium preflighted them, and let the page read the
      // answers only because Herald's CORS headers allowed the page's origin.
      await context.close();
    });
  }
});
