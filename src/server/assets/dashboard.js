// Herald's live dashboard: polls dashboard/api/* (relative to the page, so under [server] path too) once a second and renders the selected app's
// connections, channels, presence members and recent activity. Everything from the server is put
// in the page as text (never as HTML): event data comes from clients.
'use strict';

(() => {
  const POLL_MS = 1000;
  const MAX_ROWS = 300;

  const $ = (id) => document.getElementById(id);
  const view = {
    app: null,
    since: 0,
    paused: false,
    seen: 0,
    filter: '',
    timer: null,
    generation: 0,
  };

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    if (props) {
      for (const [k, v] of Object.entries(props)) {
        if (k === 'class') node.className = v;
        else if (k === 'text') node.textContent = v;
        else node.setAttribute(k, v);
      }
    }
    for (const child of children) {
      if (child !== null && child !== undefined) node.append(child);
    }
    return node;
  }

  async function api(path, options) {
    const response = await fetch(path, { cache: 'no-store', credentials: 'same-origin', ...options });
    let body = null;
    try {
      body = await response.json();
    } catch (_) {
      body = null;
    }
    if (!response.ok) {
      const message = (body && body.error) || `HTTP ${response.status}`;
      throw new Error(message);
    }
    return body;
  }

  function setStatus(state, text) {
    $('status').dataset.state = state;
    $('status-text').textContent = text;
  }

  function clock(ms) {
    const d = new Date(ms);
    const pad = (n, w = 2) => String(n).padStart(w, '0');
    return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
  }

  function prettyData(text) {
    if (!text) return '';
    try {
      return JSON.stringify(JSON.parse(text));
    } catch (_) {
      return text;
    }
  }

  // ---- live state --------------------------------------------------------------------------

  function renderState(state) {
    $('stat-connections').textContent = state.connections;
    $('stat-channels').textContent = state.channel_count;
    let members = 0;
    const tbody = $('channels').querySelector('tbody');
    const rows = state.channels.map((c) => {
      if (c.presence) members += c.users;
      const name = el('td', { class: 'mono' }, c.name);
      if (c.presence) name.append(el('span', { class: 'badge presence', text: 'presence' }));
      return el('tr', { 'data-channel': c.name }, name,
        el('td', { class: 'num', text: String(c.subscriptions) }),
        el('td', { class: 'num', text: c.presence ? String(c.users) : '–' }));
    });
    tbody.replaceChildren(...rows);
    $('channels-empty').hidden = rows.length > 0;
    $('stat-members').textContent = members;

    const groups = state.channels.filter((c) => c.presence && c.members).map((c) => {
      const items = c.members.map((m) => {
        const info = m.info && typeof m.info === 'object' ? m.info : {};
        const label = typeof info.name === 'string' && info.name ? info.name : m.id;
        return el('li', { 'data-user-id': m.id, title: m.info ? JSON.stringify(m.info) : m.id },
          label, el('span', { class: 'id', text: `#${m.id}` }));
      });
      return el('div', { class: 'member-group' },
        el('h3', { text: `${c.name} (${c.users})` }),
        el('ul', { class: 'member-list' }, ...items));
    });
    $('members').replaceChildren(...groups);
    $('members-empty').hidden = groups.length > 0;
  }

  // ---- event stream ------------------------------------------------------------------------

  function matchesFilter(row) {
    return !view.filter || row.dataset.search.includes(view.filter);
  }

  function eventRow(item) {
    const isEvent = item.kind === 'message' || item.kind === 'client_event';
    let kindLabel = { message: 'api message', client_event: 'client event' }[item.kind] || item.kind;
    let kindClass = item.kind;
    if (item.kind === 'message' && /^pusher_internal:member_(added|removed)$/.test(item.event || '')) {
      kindLabel = item.event.endsWith('added') ? 'member added' : 'member removed';
      kindClass = 'member';
    }
    const data = isEvent && item.event !== undefined ? prettyData(item.data) : item.detail;
    const row = el('tr', { class: 'fresh', 'data-kind': item.kind, 'data-seq': String(item.seq) },
      el('td', { class: 'time', text: clock(item.time_ms), title: new Date(item.time_ms).toISOString() }),
      el('td', null, el('span', { class: `badge ${kindClass}`, text: kindLabel })),
      el('td', { class: 'mono channel', text: item.channel || '' }),
      el('td', { class: 'mono event', text: item.event || '' }),
      el('td', { class: 'data', text: data || '' }),
      el('td', { class: 'socket', text: item.socket_id || '', title: isEvent ? 'excluded / sending socket' : 'socket' }));
    row.dataset.search = [item.kind, item.channel, item.event, item.socket_id, data].join(' ').toLowerCase();
    row.hidden = !matchesFilter(row);
    return row;
  }

  function renderEvents(items) {
    if (items.length === 0) return;
    const tbody = $('events').querySelector('tbody');
    const fragment = document.createDocumentFragment();
    // Newest at the top.
    for (let i = items.length - 1; i >= 0; i--) fragment.append(eventRow(items[i]));
    tbody.prepend(fragment);
    while (tbody.rows.length > MAX_ROWS) tbody.deleteRow(-1);
    view.seen += items.length;
    $('stat-events').textContent = view.seen;
    $('events-empty').hidden = tbody.rows.length > 0;
  }

  // ---- polling -----------------------------------------------------------------------------

  async function poll() {
    const generation = view.generation;
    const app = encodeURIComponent(view.app);
    try {
      const [state, events] = await Promise.all([
        api(`dashboard/api/state?app=${app}`),
        view.paused ? Promise.resolve(null) : api(`dashboard/api/events?app=${app}&since=${view.since}`),
      ]);
      if (generation !== view.generation) return; // the app changed meanwhile
      renderState(state);
      if (events) {
        const items = events.events;
        if (items.length > 0) view.since = items[items.length - 1].seq;
        renderEvents(items);
      }
      setStatus(view.paused ? 'paused' : 'live', view.paused ? 'events paused' : 'live');
    } catch (err) {
      setStatus('error', `cannot reach Herald: ${err.message}`);
    }
  }

  function schedule() {
    clearTimeout(view.timer);
    const tick = async () => {
      await poll();
      view.timer = setTimeout(tick, POLL_MS);
    };
    tick();
  }

  function selectApp(id) {
    view.app = id;
    view.since = 0;
    view.seen = 0;
    view.generation += 1;
    $('events').querySelector('tbody').replaceChildren();
    $('stat-events').textContent = '0';
    $('events-empty').hidden = false;
    schedule();
  }

  // ---- trigger form ------------------------------------------------------------------------

  async function trigger(event) {
    event.preventDefault();
    const result = $('trigger-result');
    result.className = 'result';
    result.textContent = 'sending…';
    const body = {
      app: view.app,
      channel: $('trigger-channel').value.trim(),
      event: $('trigger-event').value.trim(),
      data: $('trigger-data').value,
    };
    try {
      await api('dashboard/api/trigger', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify(body),
      });
      result.className = 'result ok';
      result.textContent = `Sent ${body.event} to ${body.channel}`;
    } catch (err) {
      result.className = 'result error';
      result.textContent = err.message;
    }
  }

  // ---- start -------------------------------------------------------------------------------

  async function start() {
    $('trigger').addEventListener('submit', trigger);
    $('events-pause').addEventListener('click', () => {
      view.paused = !view.paused;
      $('events-pause').textContent = view.paused ? 'Resume' : 'Pause';
      setStatus(view.paused ? 'paused' : 'live', view.paused ? 'events paused' : 'live');
    });
    $('events-clear').addEventListener('click', () => {
      $('events').querySelector('tbody').replaceChildren();
      $('events-empty').hidden = false;
    });
    $('events-filter').addEventListener('input', (e) => {
      view.filter = e.target.value.trim().toLowerCase();
      for (const row of $('events').querySelector('tbody').rows) row.hidden = !matchesFilter(row);
    });
    $('app').addEventListener('change', (e) => selectApp(e.target.value));

    let apps;
    for (;;) {
      try {
        apps = (await api('dashboard/api/apps')).apps;
        break;
      } catch (err) {
        setStatus('error', `cannot reach Herald: ${err.message}`);
        await new Promise((resolve) => setTimeout(resolve, 2000));
      }
    }
    $('app').replaceChildren(...apps.map((a) => el('option', { value: a.id, text: `${a.id} (${a.key})` })));
    if (apps.length > 0) selectApp(apps[0].id);
  }

  start();
})();
