'use strict';
// Server-Sent Events in headless Chromium against a real Herald: a page on another origin opens
// nothing but `new EventSource(url)`, receives events published through the HTTP API, and, when the
// server restarts on the same port, reconnects by itself and receives again. A second page opens a
// private channel with a single-use ticket its "backend" (this test, with the pusher SDK) asked for.

const assert = require('node:assert/strict');
const http = require('node:http');
const { describe, test, before, after } = require('node:test');

const { closeBrowser, launchBrowser, newContext, startHerald, waitUntil } = require('./helpers');

// The app's page lives on another origin than Herald (another port), as in production. It is served
// by a real loopback server: Chromium refuses a page it thinks is public access to loopback.
let appServer;
let appPageUrl;

async function startAppServer() {
  appServer = http.createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end('<!doctype html><title>app</title><h1>app</h1>');
  });
  await new Promise((resolve) => appServer.listen(0, '127.0.0.1', resolve));
  appPageUrl = `http://127.0.0.1:${appServer.address().port}/`;
}

async function appPage(browser) {
  const context = await newContext(browser);
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(appPageUrl);
  return { context, page, errors };
}

/** Opens an EventSource in the page; its opens, events and errors are kept on `window`. */
async function listen(page, url, eventName) {
  await page.evaluate(({ url, eventName }) => {
    window.opens = 0;
    window.events = [];
    window.serverErrors = [];
    const source = new EventSource(url);
    window.source = source;
    source.onopen = () => { window.opens += 1; };
    source.addEventListener(eventName, (e) => window.events.push({ data: JSON.parse(e.data), id: e.lastEventId }));
    source.addEventListener('pusher:error', (e) => window.serverErrors.push(JSON.parse(e.data)));
  }, { url, eventName });
}

const opens = (page) => page.evaluate(() => window.opens);
const events = (page) => page.evaluate(() => window.events);

describe('SSE with EventSource in Chromium', () => {
  let herald;
  let browser;

  before(async () => {
    herald = await startHerald({ debug: false, name: 'sse' });
    await startAppServer();
    browser = await launchBrowser();
  });

  after(async () => {
    await closeBrowser(browser);
    if (herald) await herald.stop();
    if (appServer) appServer.close();
  });

  test('a page receives published events and reconnects by itself after a restart', async () => {
    const { context, page, errors } = await appPage(browser);
    await listen(page, `${herald.url}/sse/app-key?channels=news`, 'headline');
    await waitUntil(async () => (await opens(page)) === 1, { timeout: 8000, message: 'the stream opened' });

    await herald.sdk().trigger('news', 'headline', { n: 1 });
    await waitUntil(async () => (await events(page)).length === 1, { timeout: 5000, message: 'the first event' });
    const [first] = await events(page);
    assert.deepEqual(first.data, { channel: 'news', data: { n: 1 } });
    assert.match(first.id, /^[0-9]+$/);

    // A restart on the same port: the stream ends with 4200, the browser comes back on its own.
    const { port } = herald;
    await herald.stop();
    herald = await startHerald({ debug: false, name: 'sse-restarted', port });
    await waitUntil(async () => (await opens(page)) === 2, { timeout: 15000, message: 'EventSource reconnected' });
    const serverErrors = await page.evaluate(() => window.serverErrors);
    assert.equal(serverErrors[0].data.code, 4200, JSON.stringify(serverErrors));

    await herald.sdk().trigger('news', 'headline', { n: 2 });
    await waitUntil(async () => (await events(page)).length === 2, { timeout: 5000, message: 'an event after the restart' });
    assert.deepEqual((await events(page))[1].data, { channel: 'news', data: { n: 2 } });
    assert.deepEqual(errors, [], 'no page errors');
    await context.close();
  });

  test('a private channel opens with a single-use ticket from the signed API', async () => {
    const sdk = herald.sdk();
    const answer = await sdk.post({ path: '/sse_tickets', body: { channels: ['private-orders'], user_id: '7' } });
    assert.equal(answer.status, 200);
    const { ticket, expires_in: expiresIn } = await answer.json();
    assert.equal(expiresIn, 60);

    const { context, page } = await appPage(browser);
    const url = `${herald.url}/sse/app-key?channels=private-orders&ticket=${encodeURIComponent(ticket)}`;
    await listen(page, url, 'order.paid');
    await waitUntil(async () => (await opens(page)) === 1, { timeout: 8000, message: 'the private stream opened' });
    await sdk.trigger('private-orders', 'order.paid', { id: 42 });
    await waitUntil(async () => (await events(page)).length === 1, { timeout: 5000, message: 'the private event' });
    assert.deepEqual((await events(page))[0].data, { channel: 'private-orders', data: { id: 42 } });

    // The same ticket again: refused, so the browser gives up (readyState CLOSED) instead of retrying.
    const second = await context.newPage();
    await second.goto(appPageUrl);
    const state = await second.evaluate((url) => new Promise((resolve) => {
      const source = new EventSource(url);
      source.onopen = () => resolve('open');
      source.onerror = () => resolve(source.readyState === EventSource.CLOSED ? 'closed' : 'retrying');
      setTimeout(() => resolve('no answer'), 8000);
    }), url);
    assert.equal(state, 'closed');
    await context.close();
  });
});
