'use strict';
// The live dashboard in headless Chromium against a real Herald: it shows connections, channels,
// presence members and events triggered with the `pusher` SDK; its form triggers an event that a
// pusher-js client receives; with a password it needs HTTP Basic auth; off, it is not there.

const assert = require('node:assert/strict');
const { describe, test, before, after } = require('node:test');

const {
  closeBrowser, connected, fetchBounded, launchBrowser, newContext, nextEvent, screenshot, startHerald, subscribed, waitUntil,
} = require('./helpers');

/** A pusher-js client that signs its own presence subscriptions with the SDK (test only). */
function presenceClient(herald, sdk, user) {
  return herald.client({
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, callback) => {
        callback(null, sdk.authorizeChannel(socketId, channelName, user));
      },
    },
  });
}

describe('dashboard (herald start --debug)', () => {
  let herald;
  let browser;
  let context;
  let page;

  before(async () => {
    herald = await startHerald({ debug: true, name: 'dashboard' });
    browser = await launchBrowser();
    context = await newContext(browser);
    page = await context.newPage();
  });

  after(async () => {
    await closeBrowser(browser);
    if (herald) await herald.stop();
  });

  test('shows live connections, channels, presence members and an event triggered from the SDK', async () => {
    const response = await page.goto(`${herald.url}/dashboard`);
    assert.equal(response.status(), 200);
    await waitUntil(async () => (await page.locator('#status').getAttribute('data-state')) === 'live',
      { timeout: 5000, message: 'dashboard live' });
    assert.equal((await page.locator('#stat-connections').textContent()).trim(), '0');

    const sdk = herald.sdk();
    const shop = herald.client();
    await connected(shop);
    const orders = await subscribed(shop, 'orders');
    const ada = presenceClient(herald, sdk, { user_id: '1', user_info: { name: 'Ada Lovelace' } });
    const alan = presenceClient(herald, sdk, { user_id: '2', user_info: { name: 'Alan Turing' } });
    await Promise.all([connected(ada), connected(alan)]);
    await subscribed(ada, 'presence-lobby');
    await subscribed(alan, 'presence-lobby');
    await subscribed(alan, 'orders');

    const received = nextEvent(orders, 'order.shipped');
    await sdk.trigger('orders', 'order.shipped', { id: 42, carrier: 'DHL' });
    assert.deepEqual(await received, { id: 42, carrier: 'DHL' });
    await sdk.trigger('presence-lobby', 'announcement', { text: 'Stand-up in 5 minutes' });

    // Connection count, channels (with counts) and presence members.
    await waitUntil(async () => (await page.locator('#stat-connections').textContent()).trim() === '3',
      { timeout: 5000, message: 'connection count 3 on the page' });
    const ordersRow = page.locator('#channels tr[data-channel="orders"]');
    await waitUntil(async () => (await ordersRow.count()) === 1
      && (await ordersRow.locator('td').nth(1).textContent()).trim() === '2',
    { timeout: 5000, message: 'channel orders with 2 subscriptions' });
    const lobbyRow = page.locator('#channels tr[data-channel="presence-lobby"]');
    await waitUntil(async () => (await lobbyRow.count()) === 1
      && (await lobbyRow.locator('td').nth(2).textContent()).trim() === '2',
    { timeout: 5000, message: 'presence-lobby with 2 users' });
    const members = await page.locator('#members li').allTextContents();
    assert.ok(members.some((m) => m.includes('Ada Lovelace')), `members: ${members}`);
    assert.ok(members.some((m) => m.includes('Alan Turing')), `members: ${members}`);

    // The event, with its name and data, newest first.
    const eventRow = page.locator('#events tr[data-kind="message"]', { hasText: 'order.shipped' });
    await waitUntil(async () => (await eventRow.count()) === 1, { timeout: 5000, message: 'order.shipped row' });
    assert.equal((await eventRow.locator('td.channel').textContent()).trim(), 'orders');
    const data = (await eventRow.locator('td.data').textContent()).trim();
    assert.deepEqual(JSON.parse(data), { id: 42, carrier: 'DHL' });
    const first = page.locator('#events tbody tr').first();
    await waitUntil(async () => (await first.locator('td.event').textContent()).includes('announcement'),
      { timeout: 5000, message: 'the newest event at the top' });
    const kinds = await page.locator('#events tbody tr').evaluateAll((rows) => rows.map((r) => r.dataset.kind));
    for (const kind of ['connection', 'subscribed', 'message']) assert.ok(kinds.includes(kind), `kinds: ${kinds}`);

    // A disconnection shows up too, and the count follows.
    shop.disconnect();
    await waitUntil(async () => (await page.locator('#stat-connections').textContent()).trim() === '2',
      { timeout: 5000, message: 'connection count back to 2' });
    await waitUntil(async () => (await page.locator('#events tr[data-kind="disconnection"]').count()) >= 1,
      { timeout: 5000, message: 'a disconnection row' });

    // Put the socket back for the picture, then take it.
    const again = herald.client();
    await connected(again);
    await subscribed(again, 'orders');
    await sdk.trigger('orders', 'order.created', { id: 43, total: '19.99' });
    await waitUntil(async () => (await page.locator('#events tr', { hasText: 'order.created' }).count()) === 1,
      { timeout: 5000, message: 'order.created row' });
    await page.waitForTimeout(1600); // let the row highlight fade
    await screenshot(page, 'dashboard');
  });

  test('the trigger form sends an event that a subscribed client receives', async () => {
    await page.goto(`${herald.url}/dashboard`);
    const client = herald.client();
    await connected(client);
    const channel = await subscribed(client, 'notifications');
    const received = nextEvent(channel, 'form-event');

    await page.fill('#trigger-channel', 'notifications');
    await page.fill('#trigger-event', 'form-event');
    await page.fill('#trigger-data', '{"hello": "from the dashboard", "n": 7}');
    await page.click('#trigger-send');
    assert.deepEqual(await received, { hello: 'from the dashboard', n: 7 });
    await waitUntil(async () => (await page.locator('#trigger-result').textContent()).includes('Sent form-event'),
      { timeout: 5000, message: 'the form says it sent' });
    await waitUntil(async () => (await page.locator('#events tr', { hasText: 'form-event' }).count()) === 1,
      { timeout: 5000, message: 'form-event in the stream' });

    // Bad input: the form shows the server's message; the API answers 400 JSON.
    await page.fill('#trigger-data', '{not json');
    await page.click('#trigger-send');
    await waitUntil(async () => (await page.locator('#trigger-result.error').textContent()).includes('JSON'),
      { timeout: 5000, message: 'the form shows the JSON error' });
    const cases = [
      { channel: 'bad channel!', event: 'e', data: '{}' },
      { channel: 'ok', event: '', data: '{}' },
      { channel: 'ok', event: 'x'.repeat(201), data: '{}' },
      { channel: 'ok', event: 'e', data: 'nope' },
      { app: 'nope', channel: 'ok', event: 'e', data: '{}' },
    ];
    for (const body of cases) {
      const res = await page.request.post(`${herald.url}/dashboard/api/trigger`, { data: body });
      assert.equal(res.status(), 400, JSON.stringify(body));
      assert.equal(typeof (await res.json()).error, 'string');
    }
    const notJson = await page.request.post(`${herald.url}/dashboard/api/trigger`, {
      headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
      data: 'channel=ok&event=e&data=%7B%7D',
    });
    assert.equal(notJson.status(), 400, 'a cross-site form post is refused');
  });
});

describe('dashboard with a password (no --debug)', () => {
  let herald;
  let browser;

  before(async () => {
    herald = await startHerald({
      debug: false,
      name: 'dashboard-password',
      server: { dashboard: true, dashboard_password: 's3cret pass phrase 42' },
    });
  });

  after(async () => {
    await closeBrowser(browser);
    if (herald) await herald.stop();
  });

  test('401 with a Basic challenge without credentials, 200 with them', async () => {
    const basic = (user, password) => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
    for (const route of ['/dashboard', '/dashboard/api/apps', '/dashboard/api/state', '/dashboard/assets/dashboard.js']) {
      const anonymous = await fetchBounded(`${herald.url}${route}`);
      assert.equal(anonymous.status, 401, route);
      assert.equal(anonymous.headers.get('www-authenticate'), 'Basic realm="Herald"');
      const wrong = await fetchBounded(`${herald.url}${route}`, { headers: { Authorization: basic('admin', 'nope') } });
      assert.equal(wrong.status, 401, route);
      const right = await fetchBounded(`${herald.url}${route}`, { headers: { Authorization: basic('anyone', 's3cret pass phrase 42') } });
      assert.equal(right.status, 200, route);
    }
    const trigger = await fetchBounded(`${herald.url}/dashboard/api/trigger`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ channel: 'c', event: 'e', data: '{}' }),
    });
    assert.equal(trigger.status, 401);
    // The demo is off without --debug or `demo = true`.
    assert.equal((await fetchBounded(`${herald.url}/demo`)).status, 404);

    browser = await launchBrowser();
    const context = await newContext(browser, { httpCredentials: { username: 'admin', password: 's3cret pass phrase 42' } });
    const page = await context.newPage();
    const response = await page.goto(`${herald.url}/dashboard`);
    assert.equal(response.status(), 200);
    await waitUntil(async () => (await page.locator('#status').getAttribute('data-state')) === 'live',
      { timeout: 5000, message: 'dashboard live with credentials' });
  });
});

describe('dashboard off', () => {
  test('no dashboard and no demo unless configured', async () => {
    const herald = await startHerald({ debug: false, name: 'dashboard-off' });
    try {
      for (const route of ['/dashboard', '/dashboard/api/apps', '/demo']) {
        const res = await fetchBounded(`${herald.url}${route}`);
        assert.equal(res.status, 404, route);
        assert.equal(typeof (await res.json()).error, 'string');
      }
      const auth = await fetchBounded(`${herald.url}/demo/auth`, { method: 'POST' });
      assert.equal(auth.status, 404);
    } finally {
      await herald.stop();
    }
  });
});
