'use strict';
// The chat demo in headless Chromium against a real Herald (--debug): two pages in two browser
// contexts join presence-demo-chat with different names, see each other, see each other type,
// exchange messages, and one leaving disappears from the other's member list.

const assert = require('node:assert/strict');
const { describe, test, before, after } = require('node:test');

const { closeBrowser, fetchBounded, launchBrowser, newContext, screenshot, startHerald, waitUntil } = require('./helpers');

const memberNames = (page) => page.locator('#members li .name').allTextContents();
const theirMessages = (page) => page.locator('#messages .msg.theirs .text').allTextContents();

async function join(page, url, name) {
  const response = await page.goto(`${url}/demo`);
  assert.equal(response.status(), 200);
  await page.fill('#name', name);
  await page.click('#join-button');
  await waitUntil(() => page.locator('#room').isVisible(), { timeout: 8000, message: `${name} in the room` });
  await waitUntil(async () => (await page.locator('#connection').textContent()) === 'connected',
    { timeout: 5000, message: `${name} connected` });
}

describe('chat demo (herald start --debug)', () => {
  let herald;
  let browser;

  before(async () => {
    herald = await startHerald({ debug: true, name: 'demo' });
    browser = await launchBrowser();
  });

  after(async () => {
    await closeBrowser(browser);
    if (herald) await herald.stop();
  });

  test('two pages see each other join, type, send and leave', async () => {
    const contextA = await newContext(browser, { viewport: { width: 1000, height: 680 } });
    const contextB = await newContext(browser, { viewport: { width: 1000, height: 680 } });
    const ada = await contextA.newPage();
    const grace = await contextB.newPage();
    const errors = [];
    for (const page of [ada, grace]) page.on('pageerror', (e) => errors.push(e.message));

    await join(ada, herald.url, 'Ada');
    await join(grace, herald.url, 'Grace');

    // Each sees the other in the member list.
    await waitUntil(async () => (await memberNames(ada)).includes('Grace'), { timeout: 5000, message: 'Ada sees Grace' });
    await waitUntil(async () => (await memberNames(grace)).includes('Ada'), { timeout: 5000, message: 'Grace sees Ada' });
    assert.deepEqual((await memberNames(ada)).sort(), ['Ada', 'Grace']);
    assert.equal((await ada.locator('#member-count').textContent()).trim(), '2');

    // Typing in one shows the indicator in the other (a whisper: client-typing).
    await ada.locator('#message').pressSequentially('Hello Gr', { delay: 20 });
    await waitUntil(async () => (await grace.locator('#typing').textContent()).includes('Ada is typing'),
      { timeout: 5000, message: 'Grace sees Ada typing' });
    assert.equal((await ada.locator('#typing').textContent()).trim(), '', 'no indicator for oneself');

    // A message sent from one appears in the other (and locally for the sender).
    await ada.fill('#message', 'Hello Grace! Is the build green?');
    await ada.click('#send');
    await waitUntil(async () => (await theirMessages(grace)).includes('Hello Grace! Is the build green?'),
      { timeout: 5000, message: 'Grace receives the message' });
    assert.deepEqual(await ada.locator('#messages .msg.mine .text').allTextContents(), ['Hello Grace! Is the build green?']);
    assert.equal(await grace.locator('#messages .msg.theirs .meta').last().textContent(), 'Ada');
    await waitUntil(async () => (await grace.locator('#typing').textContent()).trim() === '',
      { timeout: 5000, message: 'the indicator goes once the message is in' });

    await grace.fill('#message', 'All green: 312 tests passed.');
    await grace.press('#message', 'Enter');
    await waitUntil(async () => (await theirMessages(ada)).includes('All green: 312 tests passed.'),
      { timeout: 5000, message: 'Ada receives the reply' });
    await grace.locator('#message').pressSequentially('Shipping it', { delay: 20 });
    await waitUntil(async () => (await ada.locator('#typing').textContent()).includes('Grace is typing'),
      { timeout: 5000, message: 'Ada sees Grace typing' });
    await screenshot(ada, 'demo');

    // Closing one removes it from the other's member list.
    await contextB.close();
    await waitUntil(async () => !(await memberNames(ada)).includes('Grace'),
      { timeout: 8000, message: 'Grace gone from Ada\'s member list' });
    assert.deepEqual(await memberNames(ada), ['Ada']);
    await waitUntil(async () => (await ada.locator('#messages .msg.system').allTextContents()).includes('Grace left.'),
      { timeout: 5000, message: 'a "left" line' });
    assert.deepEqual(errors, [], 'no page errors');
    await contextA.close();
  });

  test('the auth endpoint signs only the demo channel', async () => {
    const post = (form) => fetchBounded(`${herald.url}/demo/auth`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams(form).toString(),
    });
    const ok = await post({ socket_id: '1.2', channel_name: 'presence-demo-chat', user_id: 'u1', user_name: 'Ann' });
    assert.equal(ok.status, 200);
    const body = await ok.json();
    assert.match(body.auth, /^app-key:[0-9a-f]{64}$/);
    assert.deepEqual(JSON.parse(body.channel_data), { user_id: 'u1', user_info: { name: 'Ann' } });
    const { createHmac } = require('node:crypto');
    const expected = createHmac('sha256', 'app-secret')
      .update(`1.2:presence-demo-chat:${body.channel_data}`).digest('hex');
    assert.equal(body.auth, `app-key:${expected}`);

    assert.equal((await post({ socket_id: '1.2', channel_name: 'private-admin', user_id: 'u1' })).status, 403);
    assert.equal((await post({ socket_id: 'x', channel_name: 'presence-demo-chat', user_id: 'u1' })).status, 400);
    assert.equal((await post({ socket_id: '1.2', channel_name: 'presence-demo-chat', user_id: '<b>' })).status, 400);
    assert.equal((await post({ socket_id: '1.2', channel_name: 'presence-demo-chat' })).status, 400);
  });
});
