// Herald's chat demo: pusher-js over one presence channel. Members are who is online, whispers
// (`client-typing`) drive the typing indicator and messages are client events (`client-message`),
// so no application server is needed: Herald relays them, and demo/auth (under the page's path prefix) signs the subscription.
'use strict';

(() => {
  const config = JSON.parse(document.getElementById('herald-config').textContent);
  const CHANNEL = config.channel;
  const TYPING_SEND_EVERY_MS = 1200; // well under the client-event rate limit
  const TYPING_SHOWN_FOR_MS = 3000;

  const $ = (id) => document.getElementById(id);
  let pusher = null;
  let channel = null;
  let me = null; // { id, name }
  let lastTypingSent = 0;
  const typing = new Map(); // user id -> { name, until }

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (k === 'class') node.className = v;
      else if (k === 'text') node.textContent = v;
      else node.setAttribute(k, v);
    }
    for (const child of children) node.append(child);
    return node;
  }

  function randomId() {
    const bytes = new Uint8Array(8);
    crypto.getRandomValues(bytes);
    return 'u' + Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
  }

  function nameOf(member) {
    const info = member && member.info;
    return info && typeof info.name === 'string' && info.name ? info.name : String(member && member.id);
  }

  // ---- rendering ---------------------------------------------------------------------------

  function renderMembers() {
    const items = [];
    channel.members.each((member) => {
      const mine = member.id === me.id;
      const li = el('li', { 'data-user-id': member.id, class: mine ? 'me-member' : '' },
        el('span', { class: 'name', text: nameOf(member) }));
      if (mine) li.append(el('span', { class: 'you', text: '(you)' }));
      items.push([mine ? '' : nameOf(member).toLowerCase(), li]);
    });
    items.sort((a, b) => a[0].localeCompare(b[0]));
    $('members').replaceChildren(...items.map((i) => i[1]));
    $('member-count').textContent = String(channel.members.count);
  }

  function addMessage(kind, name, text) {
    const messages = $('messages');
    const item = el('li', { class: `msg ${kind}` });
    if (kind !== 'system') item.append(el('span', { class: 'meta', text: kind === 'mine' ? 'you' : name }));
    item.append(el('span', { class: 'text', text }));
    messages.append(item);
    messages.scrollTop = messages.scrollHeight;
  }

  function renderTyping() {
    const now = Date.now();
    for (const [id, t] of typing) if (t.until <= now) typing.delete(id);
    const names = Array.from(typing.values(), (t) => t.name);
    let text = '';
    if (names.length === 1) text = `${names[0]} is typing…`;
    else if (names.length === 2) text = `${names[0]} and ${names[1]} are typing…`;
    else if (names.length > 2) text = 'Several people are typing…';
    $('typing').textContent = text;
  }

  // ---- connecting --------------------------------------------------------------------------

  function join(event) {
    event.preventDefault();
    const name = $('name').value.trim().slice(0, 32);
    if (!name) return;
    if (typeof window.Pusher !== 'function') {
      $('join-error').textContent = 'pusher-js could not be loaded (https://js.pusher.com/8.4.0/pusher.min.js).';
      return;
    }
    me = { id: randomId(), name };
    $('join-button').disabled = true;
    const tls = location.protocol === 'https:';
    const port = Number(location.port) || (tls ? 443 : 80);
    pusher = new window.Pusher(config.key, {
      cluster: 'mt1',
      wsHost: location.hostname,
      wsPort: port,
      wssPort: port,
      wsPath: config.path || '',
      forceTLS: tls,
      enabledTransports: ['ws', 'wss'],
      channelAuthorization: {
        endpoint: `${config.path || ''}/demo/auth`,
        transport: 'ajax',
        params: { user_id: me.id, user_name: name },
      },
    });
    pusher.connection.bind('state_change', ({ current }) => {
      $('connection').dataset.state = current;
      $('connection').textContent = current;
    });

    channel = pusher.subscribe(CHANNEL);
    channel.bind('pusher:subscription_succeeded', () => {
      $('join').hidden = true;
      $('room').hidden = false;
      $('me').textContent = name;
      renderMembers();
      addMessage('system', '', `You joined as ${name}.`);
      $('message').focus();
    });
    channel.bind('pusher:subscription_error', (error) => {
      $('join-button').disabled = false;
      $('join-error').textContent = `Could not join: ${(error && (error.error || error.status)) || 'refused'}`;
      pusher.disconnect();
    });
    channel.bind('pusher:member_added', (member) => {
      renderMembers();
      addMessage('system', '', `${nameOf(member)} joined.`);
    });
    channel.bind('pusher:member_removed', (member) => {
      typing.delete(member.id);
      renderTyping();
      renderMembers();
      addMessage('system', '', `${nameOf(member)} left.`);
    });
    channel.bind('client-typing', (data, metadata) => {
      const id = (metadata && metadata.user_id) || (data && data.id);
      if (!id || id === me.id) return;
      const member = channel.members.get(id);
      typing.set(id, { name: member ? nameOf(member) : String(data.name || id), until: Date.now() + TYPING_SHOWN_FOR_MS });
      renderTyping();
    });
    channel.bind('client-message', (data, metadata) => {
      const id = (metadata && metadata.user_id) || (data && data.id);
      const member = id ? channel.members.get(id) : null;
      typing.delete(id);
      renderTyping();
      addMessage('theirs', member ? nameOf(member) : String((data && data.name) || id), String((data && data.text) || ''));
    });
  }

  function send(event) {
    event.preventDefault();
    const input = $('message');
    const text = input.value.trim().slice(0, 500);
    if (!text || !channel || !channel.subscribed) return;
    channel.trigger('client-message', { name: me.name, text });
    addMessage('mine', me.name, text);
    input.value = '';
    lastTypingSent = 0;
  }

  function typed() {
    if (!channel || !channel.subscribed || !$('message').value) return;
    const now = Date.now();
    if (now - lastTypingSent < TYPING_SEND_EVERY_MS) return;
    lastTypingSent = now;
    channel.trigger('client-typing', { name: me.name });
  }

  $('join').addEventListener('submit', join);
  $('composer').addEventListener('submit', send);
  $('message').addEventListener('input', typed);
  setInterval(renderTyping, 500);
})();
