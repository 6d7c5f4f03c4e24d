'use strict';
// Channel history in headless Chromium: a page with nothing but `new EventSource(url)` listens to a
// history channel on node A of a two-node cluster (a real redis-server), while a backend publishes
// 50 events through node B. Node A is restarted midway (a server-side cut: the stream ends with
// 4200); the browser reconnects by itself with `Last-Event-ID`, and the page's list ends complete
// and in order, each event once.

const assert = require('node:assert/strict');
const http = require('node:http');
const net = require('node:net');
const { spawn } = require('node:child_process');
const { describe, test, before, after } = require('node:test');

const { closeBrowser, launchBrowser, newContext, startHerald, waitUntil } = require('./helpers');

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

async function startRedis() {
  const port = await freePort();
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
  const deadline = Date.now() + 10000;
  for (;;) {
    const up = await new Promise((resolve) => {
      const socket = net.connect(port, '127.0.0.1', () => { socket.end(); resolve(true); });
      socket.on('error', () => resolve(false));
    });
    if (up) return { port, stop: () => child.kill('SIGKILL') };
    if (Date.now() > deadline) { child.kill('SIGKILL'); throw new Error('redis-server did not start'); }
    await sleep(50);
  }
}

describe('history with EventSource in Chromium', () => {
  let redis;
  let nodeA;
  let nodeB;
  let browser;
  let appServer;
  let extra;

  before(async () => {
    redis = await startRedis();
    extra = `[[apps.history]]\nchannels = "chat-*"\nsize = 100\n\n[scaling]\nenabled = true\nredis_url = "redis://127.0.0.1:${redis.port}"\nchannel = "herald-browser-history"\n`;
    nodeA = await startHerald({ debug: false, name: 'history-a', extra });
    nodeB = await startHerald({ debug: false, name: 'history-b', extra });
    appServer = http.createServer((req, res) => { res.writeHead(200, { 'content-type': 'text/html' }); res.end('<!doctype html><title>app</title>'); });
    await new Promise((resolve) => appServer.listen(0, '127.0.0.1', resolve));
    browser = await launchBrowser();
  });

  after(async () => {
    await closeBrowser(browser);
    for (const node of [nodeA, nodeB]) if (node) await node.stop();
    if (appServer) appServer.close();
    if (redis) redis.stop();
  });

  test('a page keeps a complete, ordered list across a server-side cut', async () => {
    const context = await newContext(browser);
    const page = await context.newPage();
    await page.goto(`http://127.0.0.1:${appServer.address().port}/`);
    await page.evaluate((url) => {
      window.opens = 0;
      window.list = [];
      window.resets = 0;
      const source = new EventSource(url);
      source.onopen = () => { window.opens += 1; };
      source.addEventListener('n', (e) => window.list.push(JSON.parse(e.data).data));
      source.addEventListener('herald:reset', () => { window.resets += 1; });
    }, `${nodeA.url}/sse/app-key?channels=chat-room`);
    await waitUntil(async () => (await page.evaluate(() => window.opens)) === 1, { timeout: 8000, message: 'the stream opened' });

    const sdk = nodeB.sdk();
    const { port } = nodeA;
    for (let n = 0; n < 50; n += 1) {
      await sdk.trigger('chat-room', 'n', n);
      if (n === 10) {
        await waitUntil(async () => (await page.evaluate(() => window.list.length)) === 11, { timeout: 5000, message: 'the first events' });
        await nodeA.stop();
      }
      if (n === 30) nodeA = await startHerald({ debug: false, name: 'history-a-again', port, extra });
    }
    await waitUntil(async () => (await page.evaluate(() => window.list.length)) >= 50, { timeout: 20000, message: 'all 50 events' });
    await sleep(300);
    const list = await page.evaluate(() => window.list);
    assert.deepEqual(list, Array.from({ length: 50 }, (_, n) => n), 'complete, in order, each once');
    assert.equal(await page.evaluate(() => window.opens), 2, 'EventSource reconnected by itself');
    assert.equal(await page.evaluate(() => window.resets), 0);
    await context.close();
  });
});
