'use strict';
// Shared helpers for the Herald compatibility suite: start/stop a real Herald process,
// build real clients (pusher-js, the Node `pusher` SDK, a raw `ws` socket) and wait for
// things with bounded timeouts. Every wait here has a timeout: a broken server makes a test
// fail, never hang.
//
// Not a test file: `npm test` runs test/*.test.js only.

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { test } = require('node:test');

const Pusher = require('pusher-js'); // resolves to dist/node/pusher.js in Node
const PusherServer = require('pusher');
const WebSocket = require('ws');

const COMPAT_DIR = path.resolve(__dirname, '..');
const HERALD_BIN = path.resolve(COMPAT_DIR, process.env.HERALD_BIN || '../../target/release/herald');
const ARTIFACTS_DIR = path.join(COMPAT_DIR, 'artifacts');

const APP = Object.freeze({ id: '123456', key: 'app-key', secret: 'app-secret' });
const PROTOCOL_QUERY = 'protocol=7&client=js&version=8.4.0';

// Generic bounded waiting, shared with the other Node suite.
const { sleep, withTimeout, waitUntil, freePort } = require('../../shared/bounded');

// ---------------------------------------------------------------------------------------------
// TOML config

function tomlValue(v) {
  if (typeof v === 'string') return JSON.stringify(v); // JSON string escapes are valid TOML basic strings
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  if (Array.isArray(v)) return `[${v.map(tomlValue).join(', ')}]`;
  throw new Error(`Unsupported TOML value: ${JSON.stringify(v)}`);
}

const isTable = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
const isTableArray = (v) => Array.isArray(v) && v.length > 0 && v.every(isTable);

function tomlKeys(obj) {
  return Object.entries(obj)
    .filter(([, v]) => v !== undefined && !isTable(v) && !isTableArray(v))
    .map(([k, v]) => `${k} = ${tomlValue(v)}\n`)
    .join('');
}

/** `[name]` / `[[name]]` section for obj, with nested tables (e.g. apps.webhooks, server.tls) after it. */
function tomlSection(name, obj, arrayItem = false) {
  let out = `${arrayItem ? `[[${name}]]` : `[${name}]`}\n${tomlKeys(obj)}`;
  for (const [k, v] of Object.entries(obj)) {
    if (isTable(v)) out += `\n${tomlSection(`${name}.${k}`, v)}`;
    else if (isTableArray(v)) for (const item of v) out += `\n${tomlSection(`${name}.${k}`, item, true)}`;
  }
  return out;
}

function renderConfig({ host, port, server = {}, apps, extra = {} }) {
  let out = tomlSection('server', { host, port, ...server });
  for (const app of apps) out += `\n${tomlSection('apps', app, true)}`;
  for (const [name, table] of Object.entries(extra)) out += `\n${tomlSection(name, table)}`;
  return out;
}

// ---------------------------------------------------------------------------------------------
// Herald process

const running = new Set();
process.on('exit', () => {
  for (const child of running) {
    try { child.kill('SIGKILL'); } catch { /* already gone */ }
  }
});

/**
 * Starts Herald with a fresh config on a free port and waits until GET /up answers 200.
 * options.apps: extra/override apps (default: the one APP); options.appOptions: extra keys for the
 * default app (e.g. { enable_client_messages: true }); options.server: extra [server] keys;
 * options.config: more top-level tables (e.g. { scaling: { enabled: false } }). Nested tables and
 * arrays of tables (apps[i].webhooks = [{ url, event_types }]) are rendered as TOML sections.
 */
async function startHerald(options = {}) {
  if (!fs.existsSync(HERALD_BIN)) {
    throw new Error(`Herald binary not found at ${HERALD_BIN} (build it, or set HERALD_BIN)`);
  }
  const host = '127.0.0.1';
  const port = await freePort();
  const apps = options.apps || [{ ...APP, ...(options.appOptions || {}) }];
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'herald-compat-'));
  const configPath = path.join(dir, 'herald.toml');
  const config = renderConfig({ host, port, server: options.server, apps, extra: options.config });
  fs.writeFileSync(configPath, config);

  // Herald reads Reverb's env names (REVERB_*, REDIS_*) with precedence over the file: drop them
  // so that the environment the suite runs in cannot change the config under test.
  const env = Object.fromEntries(
    Object.entries(process.env).filter(([k]) => !/^(REVERB_|REDIS_|HERALD_)/.test(k)),
  );
  Object.assign(env, options.env || {});
  if (!env.RUST_LOG) env.RUST_LOG = 'info';
  const child = spawn(HERALD_BIN, ['start', '--config', configPath], {
    cwd: dir,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  running.add(child);

  // Keep the server's output (bounded) to show it when something fails.
  const MAX_OUTPUT = 256 * 1024;
  let output = '';
  const record = (label) => (chunk) => {
    const text = chunk.toString('utf8');
    if (process.env.HERALD_LOG) process.stderr.write(`[herald ${label}] ${text}`);
    output += text;
    if (output.length > MAX_OUTPUT) output = output.slice(output.length - MAX_OUTPUT);
  };
  child.stdout.on('data', record('out'));
  child.stderr.on('data', record('err'));

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

  const clients = new Set(); // pusher-js clients and raw sockets to close after each test

  const server = {
    host,
    port,
    child, // the Herald process (e.g. to send it SIGTERM)
    configPath,
    config,
    httpUrl: `http://${host}:${port}`,
    wsUrl: `ws://${host}:${port}`,
    get exitInfo() { return exitInfo; },
    output(limit = 8000) {
      const exit = exitInfo ? `\n[process exited: ${JSON.stringify(exitInfo)}]` : '';
      const text = output.length > limit ? `...${output.slice(-limit)}` : output;
      return `${text}${exit}`;
    },

    /** A pusher-js client (Node build) pointed at this server. */
    client(key = APP.key, extra = {}) {
      const pusher = new Pusher(key, {
        wsHost: host,
        wsPort: port,
        forceTLS: false,
        enabledTransports: ['ws'],
        cluster: 'mt1',
        disableStats: true,
        ...extra,
      });
      clients.add({ close: () => pusher.disconnect() });
      return pusher;
    },

    /** The official Node server SDK pointed at this server. */
    sdk(overrides = {}) {
      return new PusherServer({
        appId: APP.id,
        key: APP.key,
        secret: APP.secret,
        host,
        port: String(port),
        useTLS: false,
        timeout: 5000,
        ...overrides,
      });
    },

    /** A raw WebSocket to /app/{key}?{query}; see RawSocket. */
    raw(query = PROTOCOL_QUERY, key = APP.key) {
      const sock = new RawSocket(`${server.wsUrl}/app/${key}${query === '' ? '' : `?${query}`}`);
      clients.add({ close: () => sock.terminate() });
      return sock;
    },

    /** Disconnects every client made through this object (call after each test). */
    closeClients() {
      for (const c of clients) {
        try { c.close(); } catch { /* ignore */ }
      }
      clients.clear();
    },

    async stop() {
      server.closeClients();
      if (!exitInfo) {
        child.kill('SIGTERM');
        const res = await Promise.race([exited, sleep(3000).then(() => null)]);
        if (!res) {
          child.kill('SIGKILL');
          await Promise.race([exited, sleep(2000)]);
        }
      }
      try {
        fs.mkdirSync(ARTIFACTS_DIR, { recursive: true });
        const name = `${path.basename(options.name || 'herald')}-${port}.log`;
        fs.writeFileSync(path.join(ARTIFACTS_DIR, name), `# config\n${config}\n# output\n${output}\n`);
      } catch { /* artifacts are best effort */ }
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };

  // Readiness: GET /up == 200, bounded; fail fast if the process dies.
  const deadline = Date.now() + (options.readyTimeout || 10000);
  let lastProblem = 'no answer yet';
  for (;;) {
    if (exitInfo) {
      await server.stop();
      throw new Error(`Herald exited before becoming ready: ${JSON.stringify(exitInfo)}\n--- herald output ---\n${server.output()}`);
    }
    try {
      const res = await fetch(`${server.httpUrl}/up`, { signal: AbortSignal.timeout(1000) });
      await res.arrayBuffer();
      if (res.status === 200) break;
      lastProblem = `GET /up answered ${res.status}`;
    } catch (err) {
      lastProblem = err.cause ? `${err.message}: ${err.cause.code || err.cause.message}` : err.message;
    }
    if (Date.now() > deadline) {
      await server.stop();
      throw new Error(`Herald not ready within ${options.readyTimeout || 10000} ms (${lastProblem})\n--- herald output ---\n${server.output()}`);
    }
    await sleep(100);
  }
  return server;
}

/**
 * A `test` wrapper bound to a server getter: default timeout, and on failure the server's
 * output is appended to the error message.
 */
function makeTest(getServer, defaults = { timeout: 20000 }) {
  const wrap = (name, opts, fn) => {
    if (typeof opts === 'function') { fn = opts; opts = {}; }
    return test(name, { ...defaults, ...opts }, async (t) => {
      try {
        await fn(t);
      } catch (err) {
        const server = getServer();
        const out = server ? server.output() : '(server not started)';
        if (err && typeof err === 'object') {
          try { err.message = `${err.message}\n--- herald output (tail) ---\n${out}`; } catch { /* frozen */ }
        }
        throw err;
      }
    });
  };
  return wrap;
}

// ---------------------------------------------------------------------------------------------
// pusher-js helpers

/** Waits until the pusher-js connection reaches one of `states`. */
function waitForState(pusher, states, timeout = 5000) {
  const wanted = [].concat(states);
  const conn = pusher.connection;
  if (wanted.includes(conn.state)) return Promise.resolve(conn.state);
  const errors = [];
  return new Promise((resolve, reject) => {
    const onError = (err) => errors.push(describeError(err));
    const onChange = ({ current }) => {
      if (wanted.includes(current)) {
        done();
        resolve(current);
      } else if (current === 'failed' || (current === 'disconnected' && !wanted.includes('connecting'))) {
        done();
        reject(new Error(`connection went to "${current}" while waiting for ${wanted.join('/')}; errors: ${errors.join('; ') || 'none'}`));
      }
    };
    const timer = setTimeout(() => {
      done();
      reject(new Error(`Timed out after ${timeout} ms waiting for state ${wanted.join('/')} (state is "${conn.state}"); errors: ${errors.join('; ') || 'none'}`));
    }, timeout);
    function done() {
      clearTimeout(timer);
      conn.unbind('state_change', onChange);
      conn.unbind('error', onError);
    }
    conn.bind('state_change', onChange);
    conn.bind('error', onError);
  });
}

function describeError(err) {
  try { return JSON.stringify(err); } catch { return String(err); }
}

/**
 * The Pusher error code inside a pusher-js `error` event. pusher-js 8 emits a `pusher:error`
 * received after the handshake as {type:'PusherError', data:{code}} and one received during the
 * handshake as {type:'WebSocketError', error:{type:'PusherError', data:{code}}}.
 */
function pusherErrorCode(err) {
  if (!err) return undefined;
  if (err.data && err.data.code !== undefined) return err.data.code;
  if (err.error && err.error.data && err.error.data.code !== undefined) return err.error.data.code;
  return undefined;
}

/** Subscribes and waits for pusher:subscription_succeeded. Returns the channel. */
async function subscribe(pusher, name, timeout = 5000) {
  const channel = pusher.subscribe(name);
  await waitForEvent(channel, 'pusher:subscription_succeeded', { timeout });
  return channel;
}

/** Waits for `event` on a pusher-js channel (or a Pusher instance); resolves with its data. */
function waitForEvent(target, event, { timeout = 5000, filter = () => true } = {}) {
  return new Promise((resolve, reject) => {
    const handler = (data, meta) => {
      if (!filter(data, meta)) return;
      clearTimeout(timer);
      target.unbind(event, handler);
      resolve(data);
    };
    const timer = setTimeout(() => {
      target.unbind(event, handler);
      const where = target.name ? `channel "${target.name}"` : 'client';
      reject(new Error(`Timed out after ${timeout} ms waiting for event "${event}" on ${where}`));
    }, timeout);
    target.bind(event, handler);
  });
}

/** Collects every `event` on a channel; `.waitFor(n)` waits until n have arrived. */
function collectEvents(target, event) {
  const events = [];
  let waiter = null;
  const handler = (data) => {
    events.push(data);
    if (waiter && events.length >= waiter.n) waiter.resolve();
  };
  target.bind(event, handler);
  return {
    events,
    waitFor(n, timeout = 5000) {
      if (events.length >= n) return Promise.resolve(events);
      return withTimeout(
        new Promise((resolve) => { waiter = { n, resolve }; }),
        timeout,
        `${n} "${event}" events (got ${events.length})`,
      ).then(() => events, (err) => {
        err.message = `${err.message}; received so far: ${JSON.stringify(events)}`;
        throw err;
      });
    },
    stop() { target.unbind(event, handler); },
  };
}

/**
 * Records every message the pusher-js connection receives off the wire (after decoding),
 * whatever channel objects exist. Used to prove that something did NOT arrive.
 */
function recordMessages(pusher) {
  const messages = [];
  pusher.connection.bind('message', (msg) => messages.push(msg));
  return messages;
}

// ---------------------------------------------------------------------------------------------
// Raw WebSocket client (for protocol-level frames)

/** Parses `data` of pusher:/pusher_internal: frames, which may be a JSON string or an object. */
function parseData(data) {
  if (typeof data !== 'string') return data;
  try { return JSON.parse(data); } catch { return data; }
}

class RawSocket {
  constructor(url) {
    this.url = url;
    this.frames = []; // { raw, msg } in arrival order; msg is the parsed JSON or undefined
    this.waiters = [];
    this.closeInfo = null;
    this.ws = new WebSocket(url, { handshakeTimeout: 5000 });
    this.opened = new Promise((resolve, reject) => {
      this.ws.once('open', resolve);
      this.ws.once('error', reject);
      this.ws.once('close', (code) => reject(new Error(`closed (${code}) before open`)));
    });
    this.opened.catch(() => {}); // observed via waits
    this.closed = new Promise((resolve) => {
      this.ws.on('close', (code, reason) => {
        this.closeInfo = { code, reason: reason.toString() };
        resolve(this.closeInfo);
        this._check();
      });
    });
    this.ws.on('error', (err) => { this.error = err; });
    this.ws.on('message', (data, isBinary) => {
      const raw = isBinary ? data : data.toString('utf8');
      let msg;
      try { msg = JSON.parse(raw); } catch { msg = undefined; }
      this.frames.push({ raw, msg });
      this._check();
    });
  }

  _check() {
    for (const w of [...this.waiters]) w.check();
  }

  send(obj) {
    this.ws.send(typeof obj === 'string' ? obj : JSON.stringify(obj));
  }

  /**
   * Waits for the next frame (after index `from`, default: any not yet consumed by nextFrame)
   * whose parsed message satisfies `pred`. Resolves with { raw, msg, index }.
   */
  waitForFrame(pred, { timeout = 5000, from = 0, what = 'frame' } = {}) {
    return new Promise((resolve, reject) => {
      const waiter = {
        check: () => {
          for (let i = from; i < this.frames.length; i++) {
            const f = this.frames[i];
            if (f.msg !== undefined && pred(f.msg)) {
              finish();
              resolve({ ...f, index: i });
              return;
            }
          }
          if (this.closeInfo) {
            finish();
            reject(new Error(`socket closed (${JSON.stringify(this.closeInfo)}) while waiting for ${what}; frames: ${this.dump()}`));
          }
        },
      };
      const timer = setTimeout(() => {
        finish();
        reject(new Error(`Timed out after ${timeout} ms waiting for ${what}; frames: ${this.dump()}`));
      }, timeout);
      const finish = () => {
        clearTimeout(timer);
        this.waiters = this.waiters.filter((w) => w !== waiter);
      };
      this.waiters.push(waiter);
      waiter.check();
    });
  }

  waitForEvent(event, opts = {}) {
    return this.waitForFrame((m) => m && m.event === event, { what: `"${event}"`, ...opts });
  }

  waitForClose(timeout = 5000) {
    return withTimeout(this.closed, timeout, `socket close; frames: ${this.dump()}`);
  }

  dump() {
    return JSON.stringify(this.frames.map((f) => f.raw));
  }

  terminate() {
    try { this.ws.terminate(); } catch { /* ignore */ }
  }
}

module.exports = {
  APP,
  HERALD_BIN,
  PROTOCOL_QUERY,
  Pusher,
  PusherServer,
  RawSocket,
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
  withTimeout,
};
