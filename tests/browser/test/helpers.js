'use strict';
// Shared helpers for the browser suite: start/stop a real Herald process, launch Debian's Chromium
// through playwright-core, build Node clients (pusher-js, the `pusher` SDK), and wait with bounds.
// Every wait here has a timeout: a broken server or page makes a test fail, never hang.
//
// Not a test file: `npm test` runs test/*.test.js only.

const { spawn, execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const { chromium } = require('playwright-core');
const Pusher = require('pusher-js'); // the Node build
const PusherServer = require('pusher');

const SUITE_DIR = path.resolve(__dirname, '..');
const HERALD_BIN = path.resolve(SUITE_DIR, process.env.HERALD_BIN || '../../target/release/herald');
const ARTIFACTS_DIR = path.join(SUITE_DIR, 'artifacts');
const DOCS_DIR = path.resolve(SUITE_DIR, '../../docs');
const PUSHER_JS_URL = 'https://js.pusher.com/8.4.0/pusher.min.js';
const PUSHER_JS_FILE = path.join(SUITE_DIR, 'node_modules/pusher-js/dist/web/pusher.min.js');

const APP = Object.freeze({ id: '123456', key: 'app-key', secret: 'app-secret' });

// Generic bounded waiting, shared with the other Node suite.
const { sleep, withTimeout, waitUntil, freePort } = require('../../shared/bounded');

const tomlString = (s) => JSON.stringify(s); // JSON string escapes are valid TOML basic strings

// ---------------------------------------------------------------------------------------------
// Herald

const running = new Set();
process.on('exit', () => {
  for (const child of running) {
    try { child.kill('SIGKILL'); } catch { /* already gone */ }
  }
});

/**
 * Starts Herald on a free port (`start [--debug] --config FILE`) and waits for GET /up.
 * options.debug (default true); options.server: extra `[server]` keys; options.port: a given port
 * (to start a server again where its clients will reconnect); options.extra: TOML text after the app table.
 */
async function startHerald({ debug = true, server = {}, name = 'herald', port: givenPort, extra = '' } = {}) {
  if (!fs.existsSync(HERALD_BIN)) {
    throw new Error(`Herald binary not found at ${HERALD_BIN} (build it, or set HERALD_BIN)`);
  }
  const host = '127.0.0.1';
  const port = givenPort || await freePort();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'herald-browser-'));
  const configPath = path.join(dir, 'herald.toml');
  let config = `[server]\nhost = ${tomlString(host)}\nport = ${port}\n`;
  for (const [k, v] of Object.entries(server)) config += `${k} = ${typeof v === 'string' ? tomlString(v) : v}\n`;
  config += `\n[[apps]]\nid = ${tomlString(APP.id)}\nkey = ${tomlString(APP.key)}\nsecret = ${tomlString(APP.secret)}\n`;
  // Tables that follow the app's (`[[apps.history]]` rules, then `[scaling]`), as TOML text.
  config += extra;
  fs.writeFileSync(configPath, config);

  // Herald reads Reverb's names from the environment, over the file: keep them out.
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^(REVERB_|REDIS_|HERALD_)/.test(k)));
  if (!env.RUST_LOG) env.RUST_LOG = 'info';
  const args = ['start', ...(debug ? ['--debug'] : []), '--config', configPath];
  const child = spawn(HERALD_BIN, args, { cwd: dir, env, stdio: ['ignore', 'pipe', 'pipe'] });
  running.add(child);

  const MAX_OUTPUT = 256 * 1024;
  let output = '';
  const record = (chunk) => {
    output += chunk.toString('utf8');
    if (output.length > MAX_OUTPUT) output = output.slice(output.length - MAX_OUTPUT);
  };
  child.stdout.on('data', record);
  child.stderr.on('data', record);
  let exitInfo = null;
  const exited = new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      exitInfo = { code, signal };
      running.delete(child);
      resolve(exitInfo);
    });
    child.on('error', (err) => {
      exitInfo = { error: err.message };
      running.delete(child);
      resolve(exitInfo);
    });
  });

  const clients = new Set();
  const herald = {
    host,
    port,
    url: `http://${host}:${port}`,
    output: () => output + (exitInfo ? `\n[exited: ${JSON.stringify(exitInfo)}]` : ''),

    /** A pusher-js client (Node build) connected to this server. */
    client(extra = {}) {
      const pusher = new Pusher(APP.key, {
        wsHost: host,
        wsPort: port,
        forceTLS: false,
        enabledTransports: ['ws'],
        cluster: 'mt1',
        ...extra,
      });
      clients.add(pusher);
      return pusher;
    },

    /** The official Node server SDK pointed at this server. */
    sdk() {
      return new PusherServer({
        appId: APP.id, key: APP.key, secret: APP.secret, host, port: String(port), useTLS: false, timeout: 5000,
      });
    },

    async stop() {
      for (const c of clients) {
        try { c.disconnect(); } catch { /* ignore */ }
      }
      clients.clear();
      if (!exitInfo) {
        child.kill('SIGTERM');
        if (!(await Promise.race([exited, sleep(3000).then(() => null)]))) {
          child.kill('SIGKILL');
          await Promise.race([exited, sleep(2000)]);
        }
      }
      try {
        fs.mkdirSync(ARTIFACTS_DIR, { recursive: true });
        fs.writeFileSync(path.join(ARTIFACTS_DIR, `${name}-${port}.log`), `# config\n${config}\n# output\n${output}\n`);
      } catch { /* best effort */ }
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };

  const deadline = Date.now() + 10000;
  for (;;) {
    if (exitInfo) throw new Error(`Herald exited before it was ready:\n${herald.output()}`);
    try {
      const res = await fetch(`${herald.url}/up`, { signal: AbortSignal.timeout(1000) });
      if (res.status === 200) break;
    } catch { /* not listening yet */ }
    if (Date.now() > deadline) {
      await herald.stop();
      throw new Error(`Herald was not ready within 10 s:\n${herald.output()}`);
    }
    await sleep(50);
  }
  return herald;
}

/** `fetch` with a bound: 5 s unless `options.signal` says otherwise. */
function fetchBounded(url, options = {}) {
  return fetch(url, { signal: AbortSignal.timeout(5000), ...options });
}

/** Closes the browser, bounded (Playwright also kills it when Node exits). */
async function closeBrowser(browser) {
  if (!browser) return;
  await withTimeout(browser.close(), 10000, 'chromium closed').catch(() => {});
}

/** Resolves when a pusher-js client is connected, with its socket id. */
function connected(pusher, ms = 5000) {
  return withTimeout(new Promise((resolve) => {
    if (pusher.connection.state === 'connected') return resolve(pusher.connection.socket_id);
    pusher.connection.bind('connected', () => resolve(pusher.connection.socket_id));
  }), ms, 'pusher-js connected');
}

/** Subscribes and resolves with the channel once subscription_succeeded arrives. */
function subscribed(pusher, name, ms = 5000) {
  const channel = pusher.subscribe(name);
  return withTimeout(new Promise((resolve, reject) => {
    channel.bind('pusher:subscription_succeeded', () => resolve(channel));
    channel.bind('pusher:subscription_error', (e) => reject(new Error(`subscription_error: ${JSON.stringify(e)}`)));
  }), ms, `subscribed to ${name}`);
}

/** Resolves with the data of the next `event` on `channel`. */
function nextEvent(channel, event, ms = 5000) {
  return withTimeout(new Promise((resolve) => {
    const handler = (data) => {
      channel.unbind(event, handler);
      resolve(data);
    };
    channel.bind(event, handler);
  }), ms, `event ${event} on ${channel.name}`);
}

// ---------------------------------------------------------------------------------------------
// Chromium

/** Debian's Chromium, as `which chromium` finds it (CHROMIUM_BIN overrides). */
function chromiumPath() {
  if (process.env.CHROMIUM_BIN) return process.env.CHROMIUM_BIN;
  try {
    return execFileSync('which', ['chromium'], { encoding: 'utf8' }).trim();
  } catch {
    throw new Error('chromium not found: apt-get install -y chromium (or set CHROMIUM_BIN)');
  }
}

/**
 * Launches headless Chromium. Playwright gives every launch a fresh, temporary --user-data-dir of
 * its own (it refuses one in `args`) and deletes it on close.
 */
async function launchBrowser() {
  return withTimeout(chromium.launch({
    executablePath: chromiumPath(),
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
    timeout: 30000,
  }), 35000, 'chromium launched');
}

/**
 * A browser context whose pages get pusher-js from node_modules when they ask for js.pusher.com
 * (there is no internet here, and pusher-js's code is not part of Herald). Any other outside
 * request is refused, so a page can only talk to the Herald under test.
 */
async function newContext(browser, options = {}) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 }, ...options });
  context.setDefaultTimeout(10000);
  const pusherJs = fs.readFileSync(PUSHER_JS_FILE, 'utf8');
  await context.route('**/*', (route) => {
    const url = route.request().url();
    if (url === PUSHER_JS_URL) {
      return route.fulfill({ status: 200, contentType: 'text/javascript; charset=utf-8', body: pusherJs });
    }
    if (url.startsWith('http://127.0.0.1:') || url.startsWith('ws://127.0.0.1:')) return route.fallback();
    return route.abort();
  });
  return context;
}

/**
 * Saves a screenshot to artifacts/NAME.png. With UPDATE_SCREENSHOTS=1 it is also copied to
 * docs/NAME.png (the README's pictures), so an ordinary run leaves the work tree clean.
 */
async function screenshot(page, name) {
  fs.mkdirSync(ARTIFACTS_DIR, { recursive: true });
  const file = path.join(ARTIFACTS_DIR, `${name}.png`);
  await page.screenshot({ path: file, fullPage: false, timeout: 10000 });
  if (process.env.UPDATE_SCREENSHOTS === '1') {
    fs.mkdirSync(DOCS_DIR, { recursive: true });
    fs.copyFileSync(file, path.join(DOCS_DIR, `${name}.png`));
  }
  return file;
}

module.exports = {
  APP,
  ARTIFACTS_DIR,
  closeBrowser,
  connected,
  fetchBounded,
  launchBrowser,
  newContext,
  nextEvent,
  screenshot,
  sleep,
  startHerald,
  subscribed,
  waitUntil,
  withTimeout,
};
